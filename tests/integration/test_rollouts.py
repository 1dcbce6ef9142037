"""Rollouts inside the server (docs/rollouts.md) against the real binaries:
labels, the canary arm by user hash, the kill switch, shadow runs and their
divergence, device fallback and spill, and the guard rail that trips the
kill switch by itself.

Models are generated into each test's temporary directory: version v of
model "m" is models/make_models.versioned(v), "x" FP32 [n, 1] -> "y" = x + v,
so an answer tells which version ran even where the wire format does not
say (TF-Serving). Faults (device errors, latency, output drift) come from
the test-only "faulty" backend of the edgeserve_faulty binary (env
ES_FAULTY_BIN); the edgeserve binary refuses that backend.

Every wait is on something the server shows (a metric, the rollout report,
a log line, an answer), bounded by a deadline; nothing asserts on timing
except the guard rail's own window, which is the acceptance criterion.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from esclient import (Server, concurrently, http_request, metric_sum, parse_metrics,
                      poll_until, send_on, tensor)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "models"))
import lifecycle_models as lm  # noqa: E402

ARM_HEADER = "X-Edgeserve-Arm"


# ---- helpers --------------------------------------------------------------

def make_versions(base, versions, same_as=None):
    """Publishes versions of "m" under base. same_as maps a version to the
    version whose bytes it gets (identical outputs)."""
    os.makedirs(base, exist_ok=True)
    for v in versions:
        src = (same_as or {}).get(v, v)
        lm.publish(base, v, lm.model_files(lm.versioned_bytes(src)))
    return base


def config(tmp_path, model, devices=None):
    cfg = {"model_config_list": [{"config": model}]}
    if devices is not None:
        cfg["devices"] = devices
    return cfg


def model_cfg(base, **extra):
    m = {"name": "m", "base_path": base, "model_version_policy": {"all": {}}}
    m.update(extra)
    return m


def x_input(value=1.0, n=1):
    return [tensor("x", "FP32", [n, 1], [float(value)] * n)]


def infer_kv(conn, key=None, parameters=None, version=None, header="X-User-Id"):
    """One KServe infer on a keep-alive connection; returns (status, arm,
    version, body)."""
    path = f"/v2/models/m/versions/{version}/infer" if version else "/v2/models/m/infer"
    body = {"inputs": x_input()}
    if parameters is not None:
        body["parameters"] = parameters
    headers = {header: key} if key is not None else {}
    r = send_on(conn, "POST", path, body, headers)
    if r.status != 200:
        return r.status, r.header(ARM_HEADER), None, r
    js = r.json()
    return r.status, r.header(ARM_HEADER), int(js["model_version"]), js


def metrics_of(srv):
    return parse_metrics(srv.metrics())


def report(srv, model="m"):
    r = srv.get(f"/v1/admin/models/{model}/rollout")
    assert r.status == 200, r
    return r.json()


def faulty_binary():
    path = os.environ.get("ES_FAULTY_BIN")
    if not path:
        guess = os.path.join(os.path.dirname(os.environ.get("EDGESERVE_BIN", "")), "tests",
                             "edgeserve_faulty")
        path = guess if os.access(guess, os.X_OK) else None
    if not path or not os.access(path, os.X_OK):
        pytest.fail("edgeserve_faulty not found (set ES_FAULTY_BIN to the test binary)")
    return path


def write_rules(path, rules):
    """The faulty backend's control file, replaced atomically."""
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"rules": rules}, f)
    os.rename(tmp, str(path))


def start_faulty(tmp_path, cfg, *extra, name="edgeserve_faulty"):
    """edgeserve_faulty serve with cfg; stopped by the caller (finally)."""
    path = str(tmp_path / "config.json")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    argv = [faulty_binary(), "serve", "--config_path", path, "--rest_port", "0",
            "--rest_bind_address", "127.0.0.1", "--log_level", "INFO",
            "--file_system_poll_wait_seconds", "0"] + list(extra)
    srv = Server(argv, name=name)
    try:
        srv.wait_ready(60)
    except BaseException:
        srv.stop(timeout=30)
        raise
    return srv


def stop_clean(srv):
    rc = srv.stop(timeout=60)
    assert rc == 0, f"{srv.name} exited with rc={rc}; stderr tail:\n{srv.tail()}"


@pytest.fixture
def canary_server(server_factory, tmp_path):
    """m: v1 stable (label), v2 canary at 20 %, keyless -> stable."""
    base = make_versions(str(tmp_path / "m"), [1, 2, 3])
    cfg = config(tmp_path, model_cfg(
        base, version_labels={"stable": 1},
        canary={"version": 2, "fraction_bp": 2000}))
    return server_factory(["--file_system_poll_wait_seconds", "0"], config=cfg)


# ---- labels, arms, canary share ----------------------------------------------

def test_same_key_same_arm_header_and_parameter(canary_server):
    srv = canary_server
    conn = srv.connection()
    try:
        seen = {}
        for i in range(60):
            key = f"user-{i}"
            st, arm, ver, js = infer_kv(conn, key)
            assert st == 200, js
            assert arm in ("stable", "canary"), arm
            assert js["parameters"]["arm"] == arm, js
            assert ver == (2 if arm == "canary" else 1), (arm, ver)
            seen[key] = arm
        assert set(seen.values()) == {"stable", "canary"}, seen
        # the same key, again, by header (any case) and by request parameter
        for key, arm in seen.items():
            assert infer_kv(conn, key, header="x-user-id")[1] == arm, key
            st, parm, ver, js = infer_kv(conn, parameters={"user_id": key, "tag": 7})
            assert (st, parm) == (200, arm), (key, js)
            assert js["parameters"] == {"user_id": key, "tag": 7, "arm": arm}, js
        # an integer parameter is the same user as its decimal string
        assert infer_kv(conn, parameters={"user_id": 4242})[1] == \
            infer_kv(conn, parameters={"user_id": "4242"})[1]
        # the header wins over the parameter
        a_key = next(k for k, a in seen.items() if a == "canary")
        b_key = next(k for k, a in seen.items() if a == "stable")
        assert infer_kv(conn, a_key, parameters={"user_id": b_key})[1] == "canary"
        # no key: stable; a pinned version always wins; a label by parameter
        assert infer_kv(conn)[1:3] == ("stable", 1)
        assert infer_kv(conn, a_key, version=3)[1:3] == ("pinned", 3)
        assert infer_kv(conn, a_key, parameters={"version_label": "stable"})[1:3] == ("label", 1)
    finally:
        conn.close()
    s = metrics_of(srv)
    for arm in ("stable", "canary", "pinned", "label"):
        assert metric_sum(s, "edgeserve_requests_total", model="m", arm=arm,
                          status_class="2xx") > 0, arm
        assert metric_sum(s, "edgeserve_request_duration_seconds_count", model="m",
                          api="kserve", arm=arm) > 0, arm


def test_canary_share_of_distinct_keys(canary_server):
    """10,000 distinct keys over keep-alive connections: the canary's share
    is within 1 percentage point of 20 %."""
    srv = canary_server
    n_keys, n_conns = 10000, 4
    counts = [0] * n_conns
    errors = []

    def worker(i):
        conn = srv.connection()
        try:
            for k in range(i, n_keys, n_conns):
                st, arm, _, r = infer_kv(conn, f"k{k:05d}")
                if st != 200:
                    errors.append(r)
                    return
                counts[i] += arm == "canary"
        finally:
            conn.close()

    t0 = time.monotonic()
    concurrently([lambda i=i: worker(i) for i in range(n_conns)], timeout=300)
    elapsed = time.monotonic() - t0
    assert not errors, errors[:3]
    share = sum(counts) / n_keys
    print(f"10,000 keys in {elapsed:.1f} s: canary share {share:.4f}")
    assert abs(share - 0.20) <= 0.01, share
    rep = report(srv)
    assert rep["arms"]["canary"]["requests"] + rep["arms"]["stable"]["requests"] >= n_keys


def test_kill_switch_on_the_next_request(canary_server):
    srv = canary_server
    conn = srv.connection()
    try:
        key = next(k for k in (f"u{i}" for i in range(500)) if infer_kv(conn, k)[1] == "canary")
        r = srv.post("/v1/admin/models/m/kill")
        assert r.status == 200, r
        assert r.json()["canary"]["killed"] is True, r.json()
        assert infer_kv(conn, key)[1:3] == ("stable", 1)
        assert metric_sum(metrics_of(srv), "edgeserve_canary_killed", model="m") == 1
        srv.wait_event(lambda e: e.get("event") == "admin" and e.get("action") == "kill"
                       and e.get("status") == 200 and e.get("remote", "").startswith("127.0.0.1"),
                       10, "the admin line of the kill")
        r = srv.post("/v1/admin/models/m/unkill")
        assert r.status == 200 and r.json()["canary"]["killed"] is False, r
        assert infer_kv(conn, key)[1:3] == ("canary", 2)
        # the canary endpoint: the same switch, the fraction, the version
        r = srv.post("/v1/admin/models/m/canary", {"killed": True})
        assert r.status == 200 and r.json()["canary"]["killed"] is True, r
        assert infer_kv(conn, key)[1] == "stable"
        r = srv.post("/v1/admin/models/m/canary", {"killed": False, "fraction_bp": 0})
        assert r.status == 200, r
        assert r.json()["canary"]["fraction_bp"] == 0, r.json()
        assert infer_kv(conn, key)[1] == "stable"
        r = srv.post("/v1/admin/models/m/canary", {"fraction_bp": 10000, "version": 3})
        assert r.status == 200, r
        assert r.json()["canary"]["version"] == 3, r.json()
        assert infer_kv(conn, key)[1:3] == ("canary", 3)
    finally:
        conn.close()


def test_label_move_under_load(server_factory, binary, tmp_path):
    """edgeserve bench runs while "stable" moves 1 -> 2: zero errors, and
    the request after the move's 200 is answered by version 2. (A canary at
    0 %: every request is on the stable arm, which follows the label.)"""
    base = make_versions(str(tmp_path / "m"), [1, 2, 3])
    cfg = config(tmp_path, model_cfg(base, version_labels={"stable": 1},
                                     canary={"version": 3, "fraction_bp": 0}))
    srv = server_factory(["--file_system_poll_wait_seconds", "0"], config=cfg)
    bench = subprocess.Popen(
        [binary, "bench", f"http://127.0.0.1:{srv.port}", "--model", "m", "--random",
         "--concurrency", "2", "--duration", "30m", "--timeout-ms", "60000", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        poll_until(lambda: bench.poll() is not None or
                   metric_sum(metrics_of(srv), "edgeserve_requests_total", model="m",
                              version="1") >= 200, 60, "bench's first requests", interval=0.05)
        assert bench.poll() is None, f"bench exited: {bench.communicate()}"
        conn = srv.connection()
        try:
            assert infer_kv(conn)[1:3] == ("stable", 1)
            r = srv.post("/v1/admin/models/m/labels", {"label": "stable", "version": 2})
            assert r.status == 200, r
            assert r.json() == {"model": "m", "label": "stable", "version": 2}, r.json()
            assert infer_kv(conn)[1:3] == ("stable", 2)
        finally:
            conn.close()
        poll_until(lambda: metric_sum(metrics_of(srv), "edgeserve_requests_total", model="m",
                                      version="2") >= 200, 60, "bench on version 2",
                   interval=0.05)
    finally:
        if bench.poll() is None:
            os.kill(bench.pid, signal.SIGINT)
        try:
            out, err = bench.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            bench.kill()
            out, err = bench.communicate()
    assert bench.returncode == 130, f"bench rc={bench.returncode}: {err.decode()}"
    lvl = json.loads(out)["levels"][0]
    assert lvl["errors"] == {} and lvl["failed"] == 0, f"bench saw errors: {lvl}"
    assert lvl["versions"].get("1", 0) > 0 and lvl["versions"].get("2", 0) > 0, lvl["versions"]


def test_labels_tfs_and_admin_errors(canary_server):
    srv = canary_server
    # TF-Serving: predict and status through a label
    r = srv.post("/v1/models/m/labels/stable:predict", {"instances": [[1.0]]})
    assert r.status == 200, r
    assert r.json() == {"predictions": [[2.0]]}, r.json()
    assert r.header(ARM_HEADER) == "label"
    r = srv.get("/v1/models/m/labels/stable")
    assert r.status == 200, r
    assert [s["version"] for s in r.json()["model_version_status"]] == ["1"], r.json()
    # a new label, then moved and removed
    r = srv.post("/v1/admin/models/m/labels", {"label": "beta", "version": 3})
    assert r.status == 200, r
    assert srv.post("/v1/models/m/labels/beta:predict",
                    {"instances": [[1.0]]}).json() == {"predictions": [[4.0]]}
    assert report(srv)["labels"] == {"stable": 1, "beta": 3}
    r = srv.post("/v1/admin/models/m/labels", {"label": "beta", "version": None})
    assert r.status == 200 and r.json()["version"] is None, r
    assert "beta" not in report(srv)["labels"]

    def err(r, status, *words):
        assert r.status == status, r
        msg = r.json()["error"]
        for w in words:
            assert w in msg, msg

    err(srv.post("/v1/models/m/labels/beta:predict", {"instances": [[1.0]]}), 404, "beta")
    err(srv.post("/v1/models/m/labels/no-pe:predict", {"instances": [[1.0]]}), 400, "no-pe")
    err(srv.infer("m", x_input(), parameters={"version_label": "a b"}), 400, "a b",
        "version_label")
    err(srv.infer("m", x_input(), parameters={"version_label": 3}), 400, "version_label")
    err(srv.infer("m", x_input(), parameters={"version_label": "nope"}), 404, "nope")
    err(srv.infer("m", x_input(), parameters={"user_id": 1.5}), 400, "user_id")
    err(srv.infer("m", x_input(), parameters={"user_id": [1]}), 400, "user_id")
    err(srv.infer("m", x_input(), headers={"X-User-Id": "k" * 300}), 400, "X-User-Id")
    err(srv.post("/v1/admin/models/m/labels", {"label": "x", "version": 9}), 404, "9")
    err(srv.post("/v1/admin/models/m/labels", {"label": "x"}), 400, "version")
    err(srv.post("/v1/admin/models/m/labels", {"version": 1}), 400, "label")
    err(srv.post("/v1/admin/models/m/labels", {"label": "x y", "version": 1}), 400, "label")
    err(srv.post("/v1/admin/models/m/labels", {"label": "x", "version": 1, "v": 2}), 400, '"v"')
    err(srv.post("/v1/admin/models/m/labels", {"label": "x", "version": "1"}), 400, "version")
    err(srv.post("/v1/admin/models/m/labels", "[1]"), 400, "object")
    err(srv.post("/v1/admin/models/m/labels", "{"), 400)
    err(srv.post("/v1/admin/models/m/canary", {}), 400, "fraction_bp")
    err(srv.post("/v1/admin/models/m/canary", {"fraction_bp": 10001}), 400, "fraction_bp")
    err(srv.post("/v1/admin/models/m/canary", {"killed": "yes"}), 400, "killed")
    err(srv.post("/v1/admin/models/m/canary", {"version": 9}), 404, "9")
    err(srv.post("/v1/admin/models/nosuch/kill"), 404, "nosuch")
    r = srv.get("/v1/admin/models/m/kill")
    assert r.status == 405 and r.header("Allow") == "POST", r
    r = srv.post("/v1/admin/models/m/rollout")
    assert r.status == 405 and r.header("Allow") == "GET, HEAD", r
    r = srv.post("/v1/admin/models/m/labels", b"{" + b" " * (70 * 1024) + b"}")
    assert r.status == 413, r
    # the report's shape
    rep = report(srv)
    assert rep["model"] == "m" and rep["window_seconds"] > 0, rep
    assert set(rep["canary"]) == {"version", "fraction_bp", "killed", "kill_reason"}, rep
    for arm in ("stable", "canary"):
        assert set(rep["arms"][arm]) >= {"version", "requests", "errors", "error_rate",
                                         "p50_ms", "p95_ms", "p99_ms"}, rep["arms"][arm]


def test_no_canary_model(server_factory, tmp_path):
    """Without a canary: arm "default", no key is read, /canary is 400."""
    base = make_versions(str(tmp_path / "m"), [1, 2])
    srv = server_factory(["--file_system_poll_wait_seconds", "0"],
                         config=config(tmp_path, model_cfg(base)))
    conn = srv.connection()
    try:
        assert infer_kv(conn, "someone", parameters={"user_id": 1.5})[1:3] == ("default", 2)
    finally:
        conn.close()
    for path in ("/v1/admin/models/m/kill", "/v1/admin/models/m/unkill"):
        r = srv.post(path)
        assert r.status == 400 and "canary" in r.json()["error"], r
    r = srv.post("/v1/admin/models/m/canary", {"fraction_bp": 5})
    assert r.status == 400 and "canary" in r.json()["error"], r
    rep = report(srv)
    assert rep["canary"] is None and rep["shadow"] is None, rep


# ---- shadow ---------------------------------------------------------------------

def wait_compared(srv, n, timeout=60):
    return poll_until(lambda: (lambda rep: rep if rep["shadow"]["compared"] +
                               rep["shadow"]["dropped"] >= n else None)(report(srv)),
                      timeout, f"{n} shadow runs", interval=0.05)


def test_shadow_identical_versions_never_diverge(server_factory, tmp_path):
    """Version 1 (the shadow) is a copy of version 2 (the default)."""
    base = make_versions(str(tmp_path / "m"), [1, 2], same_as={1: 2})
    cfg = config(tmp_path, model_cfg(base, shadow={"version": 1, "fraction_bp": 10000}))
    log = tmp_path / "divergence.jsonl"
    srv = server_factory(["--file_system_poll_wait_seconds", "0", "--divergence_log",
                          str(log)], config=cfg)
    conn = srv.connection()
    try:
        for i in range(40):
            st, arm, ver, js = infer_kv(conn, f"u{i}")
            assert (st, ver) == (200, 2), js
    finally:
        conn.close()
    rep = wait_compared(srv, 40)
    assert rep["shadow"]["version"] == 1 and rep["shadow"]["sampled"] >= 40, rep
    assert rep["shadow"]["divergent"] == 0, rep
    assert rep["shadow"]["compared"] > 0, rep
    s = metrics_of(srv)
    assert metric_sum(s, "edgeserve_shadow_requests_total", model="m", result="diverged") == 0
    assert metric_sum(s, "edgeserve_shadow_requests_total", model="m", result="compared") > 0
    assert not log.exists() or log.read_text() == "", log.read_text()[:500]


def test_shadow_output_drift_is_recorded(tmp_path):
    """Version 1 (the shadow) is a copy of version 2 (the default), but the
    faulty backend adds 0.5 to its outputs: every pair diverges, the metric
    and the divergence log say so."""
    base = make_versions(str(tmp_path / "m"), [1, 2], same_as={1: 2})
    rules = tmp_path / "faults.json"
    write_rules(rules, [{"model": "m", "version": 1, "output_bias": 0.5}])
    cfg = config(tmp_path, model_cfg(base, shadow={"version": 1, "fraction_bp": 10000}),
                 devices=[{"name": "CPU", "backend": "faulty", "fault_control": str(rules)}])
    log = tmp_path / "divergence.jsonl"
    srv = start_faulty(tmp_path, cfg, "--divergence_log", str(log))
    try:
        conn = srv.connection()
        try:
            for i in range(20):
                st, _, ver, js = infer_kv(conn, f"u{i}")
                assert (st, ver) == (200, 2), js
                assert js["outputs"][0]["data"] == [3.0], js  # the primary is untouched
        finally:
            conn.close()
        rep = wait_compared(srv, 20)
        assert rep["shadow"]["divergent"] > 0, rep
        s = metrics_of(srv)
        assert metric_sum(s, "edgeserve_shadow_requests_total", model="m",
                          result="diverged") > 0
        assert metric_sum(s, "edgeserve_shadow_divergent_outputs_total", model="m") > 0
        lines = poll_until(lambda: [json.loads(ln) for ln in
                                    (log.read_text().splitlines() if log.exists() else [])],
                           30, "a divergence log line", interval=0.05)
        rec = lines[0]
        assert rec["model"] == "m" and rec["output"] == "y", rec
        assert rec["primary_version"] == 2 and rec["shadow_version"] == 1, rec
        assert rec.get("request_id"), rec
        assert abs(rec["shadow_value"] - rec["primary_value"] - 0.5) < 1e-6, rec
        assert len(lines) <= 20, len(lines)
    finally:
        stop_clean(srv)


# ---- device fallback and spill ------------------------------------------------------

def fallback_devices(rules, **primary):
    npu = {"name": "NPU0", "backend": "faulty", "fault_control": str(rules), "fallback": "CPU"}
    npu.update(primary)
    return [npu, {"name": "CPU", "backend": "cpu"}]


def test_device_errors_fall_back_with_no_client_error(tmp_path):
    base = make_versions(str(tmp_path / "m"), [1])
    rules = tmp_path / "faults.json"
    write_rules(rules, [])
    cfg = config(tmp_path, model_cfg(base, target_device="NPU0"),
                 devices=fallback_devices(rules))
    srv = start_faulty(tmp_path, cfg)
    try:
        conn = srv.connection()
        try:
            assert infer_kv(conn)[0] == 200
            write_rules(rules, [{"model": "m", "error_every": 1}])
            for i in range(30):
                st, _, ver, js = infer_kv(conn)
                assert (st, ver) == (200, 1), js
                assert js["outputs"][0]["data"] == [2.0], js
        finally:
            conn.close()
        s = metrics_of(srv)
        assert metric_sum(s, "edgeserve_fallback_total", reason="error") >= 30, \
            {k: v for k, v in s.items() if "fallback" in k[0]}
        assert metric_sum(s, "edgeserve_requests_total", model="m", status_class="5xx") == 0
        ev = srv.wait_event(lambda e: e.get("event") == "request" and
                            e.get("fallback") == "error", 10, "a request line with a fallback")
        assert ev.get("device") == "CPU", ev
    finally:
        stop_clean(srv)


def test_saturated_sequential_device_spills(tmp_path):
    base = make_versions(str(tmp_path / "m"), [1])
    rules = tmp_path / "faults.json"
    write_rules(rules, [{"model": "m", "latency_ms": 200}])
    cfg = config(tmp_path, model_cfg(base, target_device="NPU0", warmup=0),
                 devices=fallback_devices(rules, streams=1, spill_queue_depth=1))
    srv = start_faulty(tmp_path, cfg)
    try:
        def one():
            return http_request(srv.port, "POST", "/v2/models/m/infer",
                                {"inputs": x_input()}, timeout=60)
        results = concurrently([one] * 6, timeout=120)
        assert all(getattr(r, "status", None) == 200 for r in results), results
        s = metrics_of(srv)
        assert metric_sum(s, "edgeserve_fallback_total", reason="spill_queue") >= 1, \
            {k: v for k, v in s.items() if "fallback" in k[0]}
    finally:
        stop_clean(srv)


# ---- guard rails ------------------------------------------------------------------

def test_guard_rail_trips_kill_switch_on_error_burst(tmp_path):
    window = 5
    base = make_versions(str(tmp_path / "m"), [1, 2])
    rules = tmp_path / "faults.json"
    write_rules(rules, [])
    cfg = config(tmp_path, model_cfg(
        base, version_labels={"stable": 1},
        canary={"version": 2, "fraction_bp": 5000,
                "guard": {"window_seconds": window, "min_samples": 10,
                          "max_error_rate": 0.5}}),
        devices=[{"name": "CPU", "backend": "faulty", "fault_control": str(rules)}])
    srv = start_faulty(tmp_path, cfg)
    try:
        conn = srv.connection()
        try:
            key = next(k for k in (f"u{i}" for i in range(500))
                       if infer_kv(conn, k)[1] == "canary")
            write_rules(rules, [{"model": "m", "version": 2, "error_every": 1}])
            t_burst = time.monotonic()
            tripped = None
            while time.monotonic() - t_burst < window + 10:
                st, arm, _, _ = infer_kv(conn, key)
                if arm == "stable":
                    tripped = time.monotonic()
                    break
                assert arm == "canary" and st == 500, (st, arm)
            assert tripped is not None, "the guard rail never tripped"
            # at most one window plus one evaluation period after the burst began
            assert tripped - t_burst <= window + 2.5, tripped - t_burst
            st, arm, ver, _ = infer_kv(conn, key)
            assert (st, arm, ver) == (200, "stable", 1)
        finally:
            conn.close()
        ev = srv.wait_event(lambda e: e.get("event") == "guard_tripped", 10,
                            "the guard_tripped line")
        assert ev.get("model") == "m", ev
        rep = report(srv)
        assert rep["canary"]["killed"] is True and "error" in rep["canary"]["kill_reason"], rep
        s = metrics_of(srv)
        assert metric_sum(s, "edgeserve_canary_killed", model="m") == 1
        assert metric_sum(s, "edgeserve_canary_guard_trips_total", model="m") == 1
        # left loaded for inspection
        st, arm, ver, _ = infer_kv(srv.connection(), version=2)
        assert arm == "pinned" and st == 500, (st, arm)
    finally:
        stop_clean(srv)


# ---- the edgeserve binary, metrics -------------------------------------------------

def test_unregistered_backend_is_refused(binary, tmp_path):
    base = make_versions(str(tmp_path / "m"), [1])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config(tmp_path, model_cfg(base), devices=[
        {"name": "CPU", "backend": "faulty", "fault_control": str(tmp_path / "f.json")}])))
    p = subprocess.run([binary, "serve", "--config_path", str(path), "--rest_port", "0"],
                       capture_output=True, timeout=60)
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    err = p.stderr.decode()
    assert "backend" in err and "faulty" in err, err[-2000:]


def test_divergence_log_flag_needs_a_value(binary):
    p = subprocess.run([binary, "serve", "--divergence_log="], capture_output=True, timeout=30)
    assert p.returncode == 2 and b"--divergence_log" in p.stderr, p.stderr
    p = subprocess.run([binary, "serve", "--help"], capture_output=True, timeout=30)
    assert b"--divergence_log FILE" in p.stdout, p.stdout


def test_promtool_clean_with_rollouts(canary_server):
    import shutil
    srv = canary_server
    conn = srv.connection()
    try:
        for i in range(20):
            infer_kv(conn, f"u{i}")
        infer_kv(conn, parameters={"version_label": "nope"})
    finally:
        conn.close()
    srv.post("/v1/admin/models/m/kill")
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not installed (Debian package prometheus)")
    p = subprocess.run([promtool, "check", "metrics"], input=srv.get("/metrics").body,
                       capture_output=True, timeout=60)
    assert p.returncode == 0, (p.stdout + p.stderr).decode()
