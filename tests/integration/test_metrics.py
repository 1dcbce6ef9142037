"""/metrics: valid Prometheus text (promtool), the fixed families, and
counts that move with traffic."""
import shutil
import subprocess

import pytest

from esclient import metric_sum, parse_metrics, tensor

X8 = [1, 2, 3, 4, 5, 6, 7, 8]

FAMILIES = {
    # name: type
    "edgeserve_requests_total": "counter",
    "edgeserve_request_duration_seconds": "histogram",
    "edgeserve_request_parse_duration_seconds": "histogram",
    "edgeserve_request_encode_duration_seconds": "histogram",
    "edgeserve_http_inflight_requests": "gauge",
    "edgeserve_build_info": "gauge",
    "edgeserve_queue_wait_seconds": "histogram",
    "edgeserve_inference_duration_seconds": "histogram",
    "edgeserve_queue_size": "gauge",
    "edgeserve_queue_capacity": "gauge",
    "edgeserve_device_active_requests": "gauge",
    "edgeserve_device_streams": "gauge",
    "edgeserve_queue_rejections_total": "counter",
    "edgeserve_deadline_exceeded_total": "counter",
    "edgeserve_model_load_seconds": "gauge",
    "edgeserve_model_version_state": "gauge",
    "edgeserve_model_load_failures_total": "counter",
}


def type_lines(text):
    types = {}
    helps = set()
    for ln in text.splitlines():
        if ln.startswith("# TYPE "):
            _, _, name, typ = ln.split(None, 3)
            types[name] = typ.strip()
        elif ln.startswith("# HELP "):
            helps.add(ln.split(None, 3)[2])
    return types, helps


def test_promtool_check_metrics(server):
    # some traffic first so that labelled children exist
    server.infer("scaler", [tensor("x", "FP32", [1, 8], X8)])
    server.post("/v1/models/scaler:predict", {"instances": [X8]})
    server.infer("nosuch", [tensor("x", "FP32", [1, 8], X8)])
    r = server.get("/metrics")
    assert r.status == 200, r
    ctype = r.header("Content-Type", "")
    assert ctype.startswith("text/plain"), ctype
    assert "version=0.0.4" in ctype, ctype
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not installed (Debian package prometheus)")
    p = subprocess.run([promtool, "check", "metrics"], input=r.body, capture_output=True,
                       timeout=60)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), \
        f"promtool findings:\n{p.stdout.decode()}{p.stderr.decode()}"


def test_families_present_with_help(server):
    text = server.metrics()
    types, helps = type_lines(text)
    for name, typ in FAMILIES.items():
        assert types.get(name) == typ, f"{name}: TYPE {types.get(name)}, expected {typ}"
        assert name in helps, f"{name} has no HELP"
    for name in types:
        assert name in helps, f"{name} has no HELP"
    s = parse_metrics(text)
    assert any(n == "edgeserve_build_info" and v == 1 for (n, _), v in s.items()), "build_info != 1"
    assert metric_sum(s, "edgeserve_device_streams", device="CPU") >= 1
    assert metric_sum(s, "edgeserve_queue_capacity", device="CPU") >= 1


def test_histogram_buckets(server):
    server.infer("scaler", [tensor("x", "FP32", [1, 8], X8)])
    text = server.metrics()
    les = set()
    for ln in text.splitlines():
        if ln.startswith("edgeserve_queue_wait_seconds_bucket{"):
            les.add(ln.split('le="')[1].split('"')[0])
    assert "+Inf" in les, les
    vals = sorted(float(v) for v in les if v != "+Inf")
    assert vals and vals[0] <= 1e-5 * 1.0001 and vals[-1] >= 60, vals


def test_counts_move(server):
    before = parse_metrics(server.metrics())
    n = 3
    for i in range(n):
        r = server.infer("scaler", [tensor("x", "FP32", [1, 8], X8)])
        assert r.status == 200, r
    r = server.post("/v1/models/scaler:predict", {"instances": [X8]})
    assert r.status == 200, r
    r = server.infer("scaler", [tensor("x", "FP32", [1, 7], X8[:7])])
    assert r.status == 400, r
    r = server.infer("nosuchmodel", [tensor("x", "FP32", [1, 8], X8)])
    assert r.status == 404, r
    after = parse_metrics(server.metrics())

    def moved(name, **labels):
        return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

    assert moved("edgeserve_requests_total", model="scaler", version="1", api="kserve",
                 status_class="2xx", reason="ok") == n
    assert moved("edgeserve_requests_total", model="scaler", api="tfs",
                 status_class="2xx", reason="ok") == 1
    assert moved("edgeserve_requests_total", model="scaler", api="kserve",
                 status_class="4xx", reason="bad_request") == 1
    assert moved("edgeserve_requests_total", api="kserve", status_class="4xx",
                 reason="not_found") >= 1
    # every successful inference went through the queue and the device
    assert moved("edgeserve_queue_wait_seconds_count", model="scaler", version="1",
                 device="CPU") == n + 1
    assert moved("edgeserve_inference_duration_seconds_count", model="scaler", version="1",
                 device="CPU") == n + 1
    assert moved("edgeserve_inference_duration_seconds_sum", model="scaler", device="CPU") > 0
    assert moved("edgeserve_request_duration_seconds_count", model="scaler", api="kserve") >= n
    assert moved("edgeserve_request_parse_duration_seconds_count", model="scaler",
                 api="kserve") >= n
    assert moved("edgeserve_request_encode_duration_seconds_count", model="scaler",
                 api="kserve") >= n
    assert moved("edgeserve_request_duration_seconds_count", model="scaler", api="tfs") >= 1


def test_model_state_metrics(server):
    s = parse_metrics(server.metrics())
    assert metric_sum(s, "edgeserve_model_version_state", model="scaler", version="1",
                      state="AVAILABLE") == 1
    assert metric_sum(s, "edgeserve_model_version_state", model="scaler", version="1",
                      state="LOADING") == 0
    assert metric_sum(s, "edgeserve_model_load_seconds", model="scaler", version="1") > 0
    assert metric_sum(s, "edgeserve_model_version_state", model="classifier", version="2",
                      state="AVAILABLE") == 1


def test_metrics_disabled(server_factory, repo):
    srv = server_factory(["--model_repository_path", repo, "--metrics_enable", "false"],
                         name="no-metrics-server")
    r = srv.get("/metrics")
    assert r.status == 404, r
    assert "error" in r.json(), r
    srv.check_serves()
