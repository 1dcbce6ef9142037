"""KServe v2 REST endpoints: health, server and model metadata, readiness,
inference (flat and nested data, outputs selection, id, parameters), the
access log, and the README's curl line."""
import json
import re
import shlex
import socket
import subprocess

import numpy as np

from esclient import poll_until, run_interval, scaler_expected, tensor

X8 = [1, 2, 3, 4, 5, 6, 7, 8]


def test_health_live(server):
    r = server.get("/v2/health/live")
    assert r.status == 200, r


def test_health_ready(server):
    r = server.get("/v2/health/ready")
    assert r.status == 200, r


def test_server_metadata(server):
    r = server.get("/v2")
    assert r.status == 200, r
    md = r.json()
    assert isinstance(md.get("name"), str) and md["name"], md
    assert isinstance(md.get("version"), str) and md["version"], md
    assert isinstance(md.get("extensions"), list), md
    assert "binary_tensor_data" in md["extensions"], md
    assert r.header("Content-Type", "").startswith("application/json"), r.headers


def test_model_metadata(server):
    r = server.get("/v2/models/scaler")
    assert r.status == 200, r
    md = r.json()
    assert md["name"] == "scaler", md
    assert md["versions"] == ["1"], md
    assert isinstance(md.get("platform"), str), md
    assert md["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}], md
    assert md["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 8]}], md


def test_model_metadata_two_inputs(server):
    md = server.get("/v2/models/twoinput").json()
    assert [i["name"] for i in md["inputs"]] == ["a", "b"], md
    assert [o["name"] for o in md["outputs"]] == ["sum", "prod"], md
    for t in md["inputs"] + md["outputs"]:
        assert t["datatype"] == "FP32" and t["shape"] == [-1, 3], md


def test_model_metadata_with_version(server):
    r = server.get("/v2/models/classifier/versions/2")
    assert r.status == 200, r
    md = r.json()
    assert md["name"] == "classifier", md
    assert "2" in md["versions"], md
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}], md
    assert md["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}], md


def test_model_metadata_datatypes(server):
    for dt in ("BOOL", "UINT8", "UINT64", "INT64", "FP16", "FP64"):
        md = server.get(f"/v2/models/identity_{dt.lower()}").json()
        assert md["inputs"] == [{"name": "x", "datatype": dt, "shape": [-1, -1]}], md


def test_model_metadata_unknown(server):
    r = server.get("/v2/models/nosuchmodel")
    assert r.status == 404, r
    assert "nosuchmodel" in r.json()["error"], r
    r = server.get("/v2/models/scaler/versions/42")
    assert r.status == 404, r
    err = r.json()["error"]
    assert "scaler" in err and "42" in err, err
    # classifier v1 exists on disk but the repository policy (latest 1) did not load it
    r = server.get("/v2/models/classifier/versions/1")
    assert r.status == 404, r


def test_model_ready(server):
    assert server.get("/v2/models/scaler/ready").status == 200
    assert server.get("/v2/models/scaler/versions/1/ready").status == 200
    assert server.get("/v2/models/classifier/versions/2/ready").status == 200


def test_model_ready_unknown(server):
    r = server.get("/v2/models/nosuchmodel/ready")
    assert r.status == 404, r
    r = server.get("/v2/models/scaler/versions/7/ready")
    assert r.status == 404, r


def test_infer_scaler(server):
    r = server.infer("scaler", [tensor("x", "FP32", [1, 8], X8)])
    assert r.status == 200, r
    assert r.header("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert body["model_name"] == "scaler", body
    assert body["model_version"] == "1", body
    assert len(body["outputs"]) == 1, body
    out = body["outputs"][0]
    assert out["name"] == "y" and out["datatype"] == "FP32" and out["shape"] == [1, 8], out
    assert np.array_equal(np.array(out["data"], np.float32), scaler_expected(X8)), out


def test_infer_with_version(server):
    r = server.infer("scaler", [tensor("x", "FP32", [1, 8], X8)], version=1)
    assert r.status == 200, r
    assert r.json()["model_version"] == "1"


def test_infer_classifier_batch(server):
    rows = [[0.1, 0.2, 0.3, 0.4], [1, -1, 0.5, 2], [0, 0, 0, 0]]
    r = server.infer("classifier", [tensor("input", "FP32", [3, 4], sum(rows, []))])
    assert r.status == 200, r
    body = r.json()
    assert body["model_version"] == "2", body
    out = body["outputs"][0]
    assert out["name"] == "probabilities" and out["shape"] == [3, 3], out
    p = np.array(out["data"]).reshape(3, 3)
    assert np.all(p > 0) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5), p


def test_infer_nested_data(server):
    rows = [X8, [-1, -2, -3, -4, -5, -6, -7, -8]]
    flat = server.infer("scaler", [tensor("x", "FP32", [2, 8], sum(rows, []))])
    nested = server.infer("scaler", [tensor("x", "FP32", [2, 8], rows)])
    assert flat.status == 200, flat
    assert nested.status == 200, nested
    a = flat.json()["outputs"][0]
    b = nested.json()["outputs"][0]
    assert a["shape"] == b["shape"] == [2, 8]
    assert np.array_equal(np.array(a["data"], np.float32).reshape(-1),
                          np.array(b["data"], np.float32).reshape(-1))
    assert np.array_equal(np.array(b["data"], np.float32).reshape(2, 8), scaler_expected(rows))


def test_infer_two_inputs(server):
    a = [1, 2, 3, 4, 5, 6]
    b = [0.5, 0.25, 2, -1, 10, 0]
    r = server.infer("twoinput", [tensor("a", "FP32", [2, 3], a), tensor("b", "FP32", [2, 3], b)])
    assert r.status == 200, r
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert set(outs) == {"sum", "prod"}, outs
    assert outs["sum"]["data"] == [x + y for x, y in zip(a, b)]
    assert outs["prod"]["data"] == [x * y for x, y in zip(a, b)]
    assert outs["sum"]["shape"] == outs["prod"]["shape"] == [2, 3]


def test_infer_inputs_any_order(server):
    r = server.infer("twoinput", [tensor("b", "FP32", [1, 3], [1, 1, 1]),
                                  tensor("a", "FP32", [1, 3], [1, 2, 3])])
    assert r.status == 200, r
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs["sum"] == [2, 3, 4] and outs["prod"] == [1, 2, 3], outs


def test_outputs_selection(server):
    ins = [tensor("a", "FP32", [1, 3], [1, 2, 3]), tensor("b", "FP32", [1, 3], [4, 5, 6])]
    r = server.infer("twoinput", ins, outputs=[{"name": "prod"}])
    assert r.status == 200, r
    outs = r.json()["outputs"]
    assert [o["name"] for o in outs] == ["prod"], outs
    assert outs[0]["data"] == [4, 10, 18]
    r = server.infer("twoinput", ins, outputs=[{"name": "sum"}])
    assert [o["name"] for o in r.json()["outputs"]] == ["sum"]


def test_outputs_selection_unknown_output(server):
    ins = [tensor("a", "FP32", [1, 3], [1, 2, 3]), tensor("b", "FP32", [1, 3], [4, 5, 6])]
    r = server.infer("twoinput", ins, outputs=[{"name": "nope"}])
    assert r.status == 400, r
    assert "nope" in r.json()["error"], r


def test_request_id_echoed(server):
    r = server.infer("scaler", [tensor("x", "FP32", [1, 8], X8)], id="req-42/\u00e9\"q")
    assert r.status == 200, r
    assert r.json()["id"] == "req-42/\u00e9\"q"


def test_parameters_passed_through(server):
    params = {"custom_key": "custom value", "n": 3, "flag": True}
    ins = [tensor("x", "FP32", [1, 8], X8, parameters={"note": "tensor-level"})]
    r = server.infer("scaler", ins, parameters=params)
    assert r.status == 200, r
    body = r.json()
    got = body.get("parameters") or {}
    for k, v in params.items():
        assert got.get(k) == v, f"request parameter {k!r} not passed through: {body}"


def test_keepalive_many_requests(server):
    conn = server.connection()
    try:
        for i in range(50):
            conn.request("POST", "/v2/models/scaler/infer",
                         body=json.dumps({"id": str(i), "inputs": [tensor("x", "FP32", [1, 8], X8)]}),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            assert r.status == 200, data
            assert json.loads(data)["id"] == str(i)
    finally:
        conn.close()


def test_access_log_request_event(server):
    rid = "log-check-7781"
    r = server.infer("scaler", [tensor("x", "FP32", [1, 8], X8)], id=rid)
    assert r.status == 200, r
    ev = server.wait_event(lambda e: e.get("event") == "request" and e.get("id") == rid,
                           10, "the access log line of the request")
    assert ev["model"] == "scaler", ev
    assert str(ev["version"]) == "1", ev
    assert ev["device"] == "CPU", ev
    assert ev["status"] == 200, ev
    assert isinstance(ev.get("stream"), int), ev
    t_start, t_end = run_interval(ev)
    assert isinstance(t_start, int) and isinstance(t_end, int), ev
    assert 0 < t_start <= t_end, ev
    assert "ts" in ev and "level" in ev, ev
    keys = " ".join(k for k, v in ev.items() if isinstance(v, (int, float)))
    for stage in ("parse", "queue", "infer", "encode", "total"):
        assert stage in keys, f"no {stage} timing in access log: {ev}"


def test_log_lines_are_json(server):
    server.get("/v2/health/live")
    lines = [ln for ln in server.lines if not ln.startswith("[stdout]")]
    assert lines, "no log lines at all"
    for ln in lines:
        try:
            ev = json.loads(ln)
        except ValueError:
            raise AssertionError(f"stderr line is not JSON: {ln!r}") from None
        assert isinstance(ev, dict) and "ts" in ev and "level" in ev and "event" in ev, ln


def test_unknown_path_404(server):
    r = server.get("/v2/nothing/here")
    assert r.status == 404, r
    assert "error" in r.json(), r


def test_default_repository_and_readme_curl(server_factory, root):
    """The README's first command serves examples/models with no flags
    (here on a free port), and its curl line for the scaler answers."""
    srv = server_factory([], name="no-flags-server")
    md = srv.get("/v2/models/classifier")
    assert md.status == 200, md
    assert srv.get("/v2/models/scaler/ready").status == 200
    with open(f"{root}/README.md") as f:
        readme = f.read()
    curl = None
    lines = readme.splitlines()
    for i, ln in enumerate(lines):
        if "curl" in ln and "/v2/models/scaler/infer" in ln:
            curl = ln.strip()
            j = i
            while curl.endswith("\\") and j + 1 < len(lines):
                j += 1
                curl = curl[:-1] + " " + lines[j].strip()
            break
    assert curl, "README.md has no curl line for POST /v2/models/scaler/infer"
    curl = curl[curl.index("curl"):]
    curl = re.sub(r"(localhost|127\.0\.0\.1):8000", f"127.0.0.1:{srv.port}", curl)
    assert f":{srv.port}" in curl, f"README curl line does not target port 8000: {curl}"
    argv = shlex.split(curl)
    if "-s" not in argv and "--silent" not in argv:
        argv.insert(1, "-s")
    p = subprocess.run(argv, capture_output=True, timeout=30)
    assert p.returncode == 0, (curl, p.stderr)
    body = json.loads(p.stdout)
    out = body["outputs"][0]
    assert out["name"] == "y", body
    assert np.array_equal(np.array(out["data"], np.float32), scaler_expected(X8)), body


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_log_level_warning_has_no_access_log(server_factory, repo):
    # server_ready is an INFO line: at WARNING the port must be known up front
    port = free_port()
    srv = server_factory(["--model_repository_path", repo, "--rest_port", str(port),
                          "--rest_bind_address", "127.0.0.1"], port0=False,
                         log_level="WARNING", wait_ready=False, name="warning-log-server")
    srv.port = port

    def up():
        srv.assert_alive()
        try:
            return srv.get("/v2/health/ready", timeout=5).status == 200
        except OSError:
            return False
    poll_until(up, 30, "the server to answer on its port", interval=0.01)
    r = srv.infer("scaler", [tensor("x", "FP32", [1, 8], X8)], id="quiet-1")
    assert r.status == 200, r
    r = srv.infer("nosuch", [tensor("x", "FP32", [1, 8], X8)], id="quiet-2")
    assert r.status == 404, r
    srv.stop()
    assert srv.returncode == 0, srv.tail()
    levels = {e.get("level") for e in srv.events}
    assert levels <= {"WARNING", "ERROR"}, [e for e in srv.events if e.get("level") not in
                                           ("WARNING", "ERROR")][:3]
    assert not srv.request_events(), srv.request_events()[:2]
