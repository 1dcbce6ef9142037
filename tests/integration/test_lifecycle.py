"""The model lifecycle of docs/lifecycle.md against the real binary: versions
published and removed while `edgeserve bench` keeps the model busy, a
rollback, files still being written, configuration reloads, pre-flight
validation, warmup, the compiled-model cache (corrupt, truncated,
unwritable, a server killed while loading and while writing it), and the
runtime library check.

Every wait is on something the server shows (a /v1/config state, a log
line, a metric, an answer), bounded by a generous deadline; nothing asserts
on timing. Models are generated into the test's temporary directory
(models/lifecycle_models.py).
"""
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from esclient import (Server, http_request, metric_sum, parse_metrics, poll_until,
                      send_on, tensor)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "models"))
import lifecycle_models as lm  # noqa: E402

POLL = ["--file_system_poll_wait_seconds", "1"]
LOAD_TIMEOUT = 90.0  # a version appearing on disk -> AVAILABLE, on a busy 2-core box
HEX64 = re.compile(r"^[0-9a-f]{64}")  # a cache blob's final name starts with its key
# (src/serving/model_cache.c: "<key>.escm"; temporary files ".tmp-<pid>-<n>.escm")


# ---- helpers --------------------------------------------------------------

def write_config(path, models, devices=None):
    """models: list of config dicts ({"name", "base_path", ...})."""
    cfg = {"model_config_list": [{"config": m} for m in models]}
    if devices is not None:
        cfg["devices"] = devices
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=1)
    os.rename(tmp, path)  # a reload never reads half a file
    return path


def start(factory, config_path, *extra, **kw):
    return factory(["--config_path", config_path] + POLL + list(extra), **kw)


def versions_of(srv, model):
    """{version: (state, error_message)} of one model from GET /v1/config."""
    r = srv.get("/v1/config")
    assert r.status == 200, r
    body = r.json()
    if model not in body:
        return {}
    return {int(s["version"]): (s["state"], (s.get("status") or {}).get("error_message", ""))
            for s in body[model]["model_version_status"]}


def wait_state(srv, model, version, state, timeout=LOAD_TIMEOUT):
    """Waits until /v1/config shows model/version in state; returns its
    error message. A version reaching FAILED while we wait for another state
    ends the wait at once, with its reason."""
    def check():
        srv.assert_alive()
        st = versions_of(srv, model).get(version)
        if st and st[0] == "FAILED" and state != "FAILED":
            raise AssertionError(f"{model} v{version} FAILED while waiting for {state}: {st[1]}")
        return st if st and st[0] == state else None
    return poll_until(check, timeout, f"{model} v{version} {state}", interval=0.05)[1]


X = 0.5  # the probe input; "versioned" models answer y = x + version


def infer_v(port, model, version=None, conn=None):
    """One request to a "versioned" model: (status, model_version or None).
    A 200 whose output is not x + model_version is an assertion error."""
    path = f"/v2/models/{model}/infer" if version is None else \
        f"/v2/models/{model}/versions/{version}/infer"
    body = {"inputs": [tensor("x", "FP32", [1, 1], [X])]}
    if conn is None:
        r = http_request(port, "POST", path, body)
    else:
        r = send_on(conn, "POST", path, body)
    if r.status != 200:
        return r.status, None
    js = r.json()
    v = int(js["model_version"])
    y = js["outputs"][0]["data"][0]
    assert y == pytest.approx(X + v), f"version {v} answered {y}, expected {X + v}"
    return 200, v


def metric(srv, name, **labels):
    return metric_sum(parse_metrics(srv.metrics()), name, **labels)


def wait_metric(srv, name, value, timeout=30.0, **labels):
    """Until the metric's sum reaches value (a state in /v1/config and the
    counter that goes with it are not updated in one step)."""
    poll_until(lambda: metric(srv, name, **labels) >= value, timeout,
               f"{name}{labels} >= {value}", interval=0.02)
    got = metric(srv, name, **labels)
    assert got == value, f"{name}{labels} = {got}, expected {value}"


def runs(seq):
    """[1,1,2,2,1] -> [1,2,1]"""
    out = []
    for v in seq:
        if not out or out[-1] != v:
            out.append(v)
    return out


def events(srv, pred):
    with srv.cond:
        return [e for e in srv.events if pred(e)]


class Prober:
    """Sequential requests from one thread on one keep-alive connection;
    records (t_sent, t_answered, status, version) of each."""

    def __init__(self, srv, model):
        self.srv, self.model = srv, model
        self.records = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        conn = self.srv.connection(timeout=60)
        try:
            while not self.stop_flag.is_set():
                t0 = time.monotonic()
                try:
                    st, v = infer_v(self.srv.port, self.model, conn=conn)
                except (OSError, AssertionError, ValueError) as e:
                    self.error = e
                    return
                with self.lock:
                    self.records.append((t0, time.monotonic(), st, v))
        finally:
            conn.close()

    def count(self):
        with self.lock:
            return len(self.records)

    def sent_after(self, t):
        with self.lock:
            return [r for r in self.records if r[0] > t]

    def wait_answer(self, version, after, timeout=60.0):
        """Until a request sent after `after` answers `version`; returns the
        time it was sent."""
        def check():
            if self.error:
                raise AssertionError(f"probe failed: {self.error!r}")
            with self.lock:
                for r in reversed(self.records):
                    if r[0] <= after:
                        return None
                    if r[3] == version:
                        return r
            return None
        return poll_until(check, timeout, f"a probe answered by version {version}",
                          interval=0.01)[0]

    def wait_more(self, n, timeout=60.0):
        """Until n more requests have been answered."""
        target = self.count() + n
        poll_until(lambda: self.error or self.count() >= target, timeout,
                   f"{n} more probes", interval=0.01)
        if self.error:
            raise AssertionError(f"probe failed: {self.error!r}")

    def finish(self):
        self.stop_flag.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the probe thread did not stop"
        if self.error:
            raise AssertionError(f"probe failed: {self.error!r}")
        return list(self.records)


# ---- the acceptance scenario ---------------------------------------------

def test_publish_remove_rollback_under_load(server_factory, binary, tmp_path):
    """keep_previous, latest 1, poll 1 s: v1; +v2; -v2; +v3; +corrupt v4;
    rollback. bench runs the whole time with no error of any kind; a probe
    sees exactly 1..1 2..2 1..1 3..3 1..1; version 4 never answers."""
    base = str(tmp_path / "m")
    os.makedirs(base)
    lm.publish(base, 1, lm.model_files(lm.versioned_bytes(1)))
    cfg = write_config(str(tmp_path / "config.json"), [
        {"name": "m", "base_path": base, "keep_previous": True,
         "model_version_policy": {"latest": {"num_versions": 1}}}])
    srv = start(server_factory, cfg)
    wait_state(srv, "m", 1, "AVAILABLE")

    bench = subprocess.Popen(
        [binary, "bench", f"http://127.0.0.1:{srv.port}", "--model", "m", "--random",
         "--concurrency", "4", "--duration", "30m", "--timeout-ms", "60000", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    prober = None
    marks = {}  # monotonic times of what the test did and saw
    try:
        # the load is on before anything changes
        poll_until(lambda: bench.poll() is not None or
                   metric(srv, "edgeserve_requests_total", model="m") >= 200,
                   60, "bench's first requests", interval=0.05)
        assert bench.poll() is None, f"bench exited: {bench.communicate()}"
        prober = Prober(srv, "m").start()
        prober.wait_more(20)

        # publish v2: it takes over; v1 stays loaded (keep_previous)
        marks["publish2"] = time.monotonic()
        lm.publish(base, 2, lm.model_files(lm.versioned_bytes(2)))
        wait_state(srv, "m", 2, "AVAILABLE")
        marks["v2_available"] = time.monotonic()
        prober.wait_answer(2, after=marks["v2_available"])
        st = versions_of(srv, "m")
        assert st.get(1, ("?",))[0] == "AVAILABLE", f"keep_previous: v1 not kept: {st}"
        prober.wait_more(20)

        # remove v2: back on v1
        marks["remove2"] = time.monotonic()
        lm.remove(base, 2)
        wait_state(srv, "m", 2, "END")
        marks["v2_end"] = time.monotonic()
        prober.wait_answer(1, after=marks["v2_end"])
        prober.wait_more(20)

        # publish v3
        marks["publish3"] = time.monotonic()
        lm.publish(base, 3, lm.model_files(lm.versioned_bytes(3)))
        wait_state(srv, "m", 3, "AVAILABLE")
        marks["v3_available"] = time.monotonic()
        prober.wait_answer(3, after=marks["v3_available"])
        st = versions_of(srv, "m")
        assert st.get(1, ("?",))[0] == "AVAILABLE", f"keep_previous: v1 not kept: {st}"
        prober.wait_more(20)

        # a corrupt v4: FAILED with a reason, v3 keeps serving
        failures0 = metric(srv, "edgeserve_model_load_failures_total", model="m")
        lm.publish(base, 4, lm.corrupt_files())
        reason = wait_state(srv, "m", 4, "FAILED")
        assert reason.strip(), "FAILED v4 has no error_message"
        assert str(tmp_path) not in reason, f"reason leaks a host path: {reason}"
        wait_metric(srv, "edgeserve_model_load_failures_total", failures0 + 1, model="m")
        srv.wait_event(lambda e: e.get("event") == "model_load" and e.get("level") == "ERROR"
                       and e.get("version") == 4, 30, "the model_load ERROR line of v4")
        assert infer_v(srv.port, "m", version=4)[0] == 503, "the failed v4 answered"
        prober.wait_more(20)

        # rollback: 3 -> 1 at once
        marks["rollback_sent"] = time.monotonic()
        r = srv.post("/v1/admin/models/m/rollback")
        marks["rollback_done"] = time.monotonic()
        assert r.status == 200, r
        assert r.json() == {"model": "m", "from": 3, "to": 1}, r.json()
        prober.wait_more(50)
        records = prober.finish()
        prober = None
    finally:
        if prober is not None:
            prober.stop_flag.set()
        if bench.poll() is None:
            os.kill(bench.pid, signal.SIGINT)
        try:
            out, err = bench.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            bench.kill()
            out, err = bench.communicate()

    # bench: no error of any kind, and version 4 never answered it
    assert bench.returncode == 130, f"bench rc={bench.returncode}: {err.decode()}"
    res = json.loads(out)
    assert res["interrupted"] is True, res
    assert len(res["levels"]) == 1, res
    lvl = res["levels"][0]
    assert lvl["errors"] == {} and lvl["failed"] == 0, f"bench saw errors: {lvl}"
    assert lvl["ok"] == lvl["requests"] > 0, lvl
    assert set(lvl["versions"]) <= {"1", "2", "3"}, f"bench answered by {lvl['versions']}"
    assert all(lvl["versions"].get(v, 0) > 0 for v in ("1", "2", "3")), lvl["versions"]

    # the probes: every answer 200, the switches exactly 1 2 1 3 1, in order
    assert all(st == 200 for _, _, st, _ in records), \
        collections.Counter(st for _, _, st, _ in records)
    seq = [v for _, _, _, v in records]
    assert 4 not in seq, "version 4 answered a probe"
    assert runs(seq) == [1, 2, 1, 3, 1], f"version runs {runs(seq)}"
    # Each request sent after a change was observed (the state in /v1/config,
    # the rollback's 200) and answered before the next file operation began
    # must come from the version the spec names: the default is the highest
    # AVAILABLE version, a version leaving service is out of the table at
    # once, a failed version never serves, a rollback is immediate.
    inf = float("inf")
    windows = [(-inf, marks["publish2"], {1}),
               (marks["v2_available"], marks["remove2"], {2}),
               (marks["v2_end"], marks["publish3"], {1}),
               (marks["v3_available"], marks["rollback_sent"], {3}),
               (marks["rollback_done"], inf, {1})]
    for t_from, t_to, want in windows:
        got = collections.Counter(v for t0, t1, _, v in records if t0 > t_from and t1 < t_to)
        assert got and set(got) <= want, \
            f"probes sent in [{t_from}, {t_to}) were answered by {dict(got)}, expected {want}"

    # the log says when the default changed and why; the counter agrees
    srv.wait_event(lambda e: e.get("event") == "default_version_changed" and
                   e.get("from") == 3 and e.get("to") == 1, 30, "the rollback's log line")
    changes = events(srv, lambda e: e.get("event") == "default_version_changed"
                     and e.get("model") == "m")
    pairs = [(int(e["from"]), int(e["to"])) for e in changes if e.get("from") not in (None, 0, "0")]
    assert pairs == [(1, 2), (2, 1), (1, 3), (3, 1)], changes
    wait_metric(srv, "edgeserve_model_default_changes_total", len(changes), model="m")
    # the retired v3 goes away; v1 stays the default
    wait_state(srv, "m", 3, "END")
    assert infer_v(srv.port, "m") == (200, 1)


# ---- files still being written ----------------------------------------------

def test_version_written_slowly(server_factory, tmp_path):
    """A numbered directory whose model.onnx grows in pieces over ~2.5 s
    (a slow copy): never FAILED, AVAILABLE once complete."""
    base = str(tmp_path / "slowcopy")
    os.makedirs(base)
    lm.publish(base, 1, lm.model_files(lm.versioned_bytes(1)))
    cfg = write_config(str(tmp_path / "config.json"), [{"name": "slowcopy", "base_path": base}])
    srv = start(server_factory, cfg)
    data = lm.versioned_bytes(2, pad=256 * 1024)
    vdir = os.path.join(base, "2")
    os.makedirs(vdir)
    pieces = 10
    step = (len(data) + pieces - 1) // pieces
    seen = []
    with open(os.path.join(vdir, "model.onnx"), "wb") as f:
        for i in range(pieces):
            f.write(data[i * step:(i + 1) * step])
            f.flush()
            seen.append(versions_of(srv, "slowcopy").get(2))
            # the pace of a slow writer (the thing under test), not a wait
            time.sleep(0.25)
    wait_state(srv, "slowcopy", 2, "AVAILABLE")
    assert all(s is None or s[0] != "FAILED" for s in seen), seen
    # log lines come in order: once the load's end line is read, a failed
    # attempt before it would have been read too
    srv.wait_event(lambda e: e.get("event") == "model_load" and e.get("version") == 2 and
                   e.get("phase") == "end", 30, "the model_load end line of v2")
    assert not events(srv, lambda e: e.get("event") == "model_load" and
                      e.get("version") == 2 and e.get("level") == "ERROR"), "a load of v2 failed"
    assert metric(srv, "edgeserve_model_load_failures_total", model="slowcopy") == 0
    assert infer_v(srv.port, "slowcopy") == (200, 2)


# ---- configuration reload ---------------------------------------------------------

def test_config_reload(server_factory, tmp_path):
    base_a, base_b = str(tmp_path / "a"), str(tmp_path / "b")
    for base, v in ((base_a, 1), (base_b, 2)):
        os.makedirs(base)
        lm.publish(base, v, lm.model_files(lm.versioned_bytes(v)))
    cfg_path = str(tmp_path / "config.json")
    model_a = {"name": "a", "base_path": base_a}
    model_b = {"name": "b", "base_path": base_b}
    write_config(cfg_path, [model_a])
    srv = start(server_factory, cfg_path)

    # nothing changed
    r = srv.post("/v1/config/reload")
    assert r.status == 200, r
    assert set(r.json()) == {"a"}, r.json()

    # a model added: it serves when the answer comes
    write_config(cfg_path, [model_a, model_b])
    r = srv.post("/v1/config/reload")
    assert r.status == 201, r
    body = r.json()
    assert set(body) == {"a", "b"}, body
    assert [s["state"] for s in body["b"]["model_version_status"]] == ["AVAILABLE"], body
    assert infer_v(srv.port, "b") == (200, 2)

    # invalid files: 400 naming the problem, no host path, nothing applied
    for bad, needle in (
            ('{"model_config_list": [{"config": {"name": "a", "base_path": "%s", '
             '"bogus_key": 1}}]}' % base_a, "bogus_key"),
            ('{"model_config_list": [', None),
            (json.dumps({"model_config_list": [{"config": model_a}, {"config": model_a}]}), None)):
        with open(cfg_path, "w") as f:
            f.write(bad)
        r = srv.post("/v1/config/reload")
        assert r.status == 400, (bad, r)
        msg = r.json()["error"]
        assert msg.strip(), r
        if needle:
            assert needle in msg, (bad, msg)
        assert str(tmp_path) not in msg and not re.search(r"(^|[\s'\"(])/(tmp|home|root|work)/", msg), \
            f"the error names a host path: {msg}"
        assert infer_v(srv.port, "a") == (200, 1)
        assert infer_v(srv.port, "b") == (200, 2)
    assert set(versions_of(srv, "a")) == {1} and versions_of(srv, "b")[2][0] == "AVAILABLE"

    # devices cannot change without a restart
    write_config(cfg_path, [model_a, model_b],
                 devices=[{"name": "CPU", "backend": "cpu", "streams": 2}])
    r = srv.post("/v1/config/reload")
    assert r.status == 400, r
    assert "device" in r.json()["error"].lower(), r.json()

    # a model removed: 404 after the answer, the other one untouched
    write_config(cfg_path, [model_a])
    r = srv.post("/v1/config/reload")
    assert r.status == 201, r
    assert set(r.json()) == {"a"}, r.json()
    assert infer_v(srv.port, "b")[0] == 404
    assert srv.get("/v2/models/b").status == 404
    assert infer_v(srv.port, "a") == (200, 1)
    r = srv.post("/v1/config/reload")
    assert r.status == 200, r


# ---- rollback refused ---------------------------------------------------------------------

def test_rollback_refused(server_factory, tmp_path):
    """409 with a message: keep_previous off (after a swap), and before any
    swap; 404 for an unknown model."""
    bases = {}
    for name in ("keep", "nokeep"):
        bases[name] = str(tmp_path / name)
        os.makedirs(bases[name])
        lm.publish(bases[name], 1, lm.model_files(lm.versioned_bytes(1)))
    cfg = write_config(str(tmp_path / "config.json"), [
        {"name": "keep", "base_path": bases["keep"], "keep_previous": True},
        {"name": "nokeep", "base_path": bases["nokeep"]}])
    srv = start(server_factory, cfg)

    r = srv.post("/v1/admin/models/keep/rollback")
    assert r.status == 409, r
    msg = r.json()["error"]
    assert "keep" in msg and "previous" in msg.lower(), msg

    lm.publish(bases["nokeep"], 2, lm.model_files(lm.versioned_bytes(2)))
    wait_state(srv, "nokeep", 2, "AVAILABLE")
    wait_state(srv, "nokeep", 1, "END")
    r = srv.post("/v1/admin/models/nokeep/rollback")
    assert r.status == 409, r
    msg = r.json()["error"]
    assert "nokeep" in msg and "previous" in msg.lower(), msg
    assert infer_v(srv.port, "nokeep") == (200, 2)

    r = srv.post("/v1/admin/models/nosuch/rollback")
    assert r.status == 404, r

    # after a rollback, a second one has nothing to go back to
    lm.publish(bases["keep"], 2, lm.model_files(lm.versioned_bytes(2)))
    wait_state(srv, "keep", 2, "AVAILABLE")
    r = srv.post("/v1/admin/models/keep/rollback")
    assert r.status == 200 and r.json() == {"model": "keep", "from": 2, "to": 1}, r
    r = srv.post("/v1/admin/models/keep/rollback")
    assert r.status == 409, r
    assert infer_v(srv.port, "keep") == (200, 1)


# ---- pre-flight validation ----------------------------------------------------------

def test_validation(server_factory, tmp_path):
    base = str(tmp_path / "val")
    os.makedirs(base)
    lm.publish(base, 1, lm.model_files(lm.versioned_bytes(1)))
    cfg = write_config(str(tmp_path / "config.json"), [{"name": "val", "base_path": base}])
    srv = start(server_factory, cfg)
    x = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)

    # one case, flat layout, outputs that match
    lm.publish(base, 2, {"model.onnx": lm.versioned_bytes(2),
                         "validation/input_0.pb": lm.tensor_pb(x, "x"),
                         "validation/output_0.pb": lm.tensor_pb(x + 2, "y")})
    wait_state(srv, "val", 2, "AVAILABLE")
    assert infer_v(srv.port, "val") == (200, 2)

    # element 1 off by 0.5 (the default tolerance is far tighter), in the
    # ONNX test-data layout, the input bound by position: FAILED
    bad = x + 3
    bad[1, 0] += 0.5
    lm.publish(base, 3, {"model.onnx": lm.versioned_bytes(3),
                         "validation/test_data_set_0/input_0.pb": lm.tensor_pb(x),
                         "validation/test_data_set_0/output_0.pb": lm.tensor_pb(bad, "y")})
    reason = wait_state(srv, "val", 3, "FAILED")
    # the case, the output, the worst element and its error
    assert "test_data_set_0" in reason, reason
    assert re.search(r"\by\b", reason) and re.search(r"element\D{0,3}1\b", reason), \
        f"the reason should name output 'y' and element 1: {reason}"
    assert "0.5" in reason, f"the reason should give the error (0.5): {reason}"
    assert str(tmp_path) not in reason, reason
    wait_metric(srv, "edgeserve_model_load_failures_total", 1, model="val")
    # the previous version keeps serving; the failed one never does
    assert infer_v(srv.port, "val") == (200, 2)
    assert infer_v(srv.port, "val", version=3)[0] == 503
    assert srv.get("/v2/models/val/versions/3/ready").status == 503

    # the flat layout again, off by 5e-3 but inside a tolerance.json that allows it
    near = x + 4
    near[2, 0] += 5e-3
    lm.publish(base, 4, {"model.onnx": lm.versioned_bytes(4),
                         "validation/input_0.pb": lm.tensor_pb(x, "x"),
                         "validation/output_0.pb": lm.tensor_pb(near, "y"),
                         "validation/tolerance.json": b'{"atol": 1e-2, "rtol": 0}'})
    wait_state(srv, "val", 4, "AVAILABLE")
    assert infer_v(srv.port, "val") == (200, 4)
    assert versions_of(srv, "val")[3][0] == "FAILED"
    assert metric(srv, "edgeserve_model_load_failures_total", model="val") == 1


# ---- warmup -------------------------------------------------------------------------

def test_warmup(server_factory, tmp_path):
    """warmup N runs N inferences on every stream before AVAILABLE (and the
    default, --warmup_inferences 1, one per stream). docs/lifecycle.md: they
    are counted in edgeserve_model_warmup_inferences_total, not in the
    inference latency histograms."""
    bases = {}
    for name in ("wu", "plain"):
        bases[name] = str(tmp_path / name)
        os.makedirs(bases[name])
        lm.publish(bases[name], 1, lm.model_files(lm.versioned_bytes(1)))
    streams = 2
    cfg = write_config(str(tmp_path / "config.json"), [
        {"name": "wu", "base_path": bases["wu"], "warmup": 3},
        {"name": "plain", "base_path": bases["plain"]}],
        devices=[{"name": "CPU", "backend": "cpu", "streams": streams,
                  "threads_per_stream": 1, "max_queue_size": 64}])
    srv = start(server_factory, cfg)
    # before any client request
    s = parse_metrics(srv.metrics())
    warm = "edgeserve_model_warmup_inferences_total"
    assert metric_sum(s, warm, model="wu", version="1") == 3 * streams
    assert metric_sum(s, warm, model="plain", version="1") == 1 * streams
    count = "edgeserve_inference_duration_seconds_count"
    assert metric_sum(s, count, model="wu") == 0, "warmup runs counted as inferences"
    assert metric_sum(s, "edgeserve_requests_total", model="wu") == 0
    # a client request is counted where warmups are not
    assert infer_v(srv.port, "wu") == (200, 1)
    s = parse_metrics(srv.metrics())
    assert metric_sum(s, count, model="wu", version="1") == 1
    assert metric_sum(s, warm, model="wu", version="1") == 3 * streams


# ---- compiled-model cache ----------------------------------------------------------

def cache_files(cache_dir):
    return sorted(os.listdir(cache_dir))


def blobs(cache_dir):
    return [f for f in cache_files(cache_dir) if HEX64.match(f)]


def mlp_outputs(srv, version=None):
    x = (np.arange(32, dtype=np.float32).reshape(2, 16) / 7.0 - 2.0)
    r = srv.infer("c", [tensor("x", "FP32", [2, 16], x.reshape(-1).tolist())], version=version)
    assert r.status == 200, r
    return np.array(r.json()["outputs"][0]["data"], dtype=np.float32)


def cache_counts(srv, model="c"):
    """The cache counters, and the compile-duration observations by source
    (where the compiled form came from: "onnx" or "cache")."""
    s = parse_metrics(srv.metrics())
    counts = {k: metric_sum(s, f"edgeserve_model_cache_{k}_total", model=model)
              for k in ("hits", "misses", "invalid", "write_failures")}
    for source in ("onnx", "cache"):
        counts[f"compiled_from_{source}"] = metric_sum(
            s, "edgeserve_model_compile_duration_seconds_count", model=model, source=source)
    return counts


def test_cache(server_factory, tmp_path):
    base = str(tmp_path / "c")
    os.makedirs(base)
    lm.publish(base, 1, lm.model_files(lm.mlp_bytes()))
    cfg = write_config(str(tmp_path / "config.json"), [{"name": "c", "base_path": base}])
    cache = str(tmp_path / "cache")

    def run(expect):
        srv = start(server_factory, cfg, "--cache_dir", cache)
        got = cache_counts(srv)
        out = mlp_outputs(srv)
        srv.stop()
        want = dict(expect)
        assert {k: got[k] for k in want} == want, f"cache counts {got}, expected {want}"
        return out

    # fresh: a miss and one blob
    ref = run({"hits": 0, "misses": 1, "invalid": 0,
               "compiled_from_onnx": 1, "compiled_from_cache": 0})
    assert len(blobs(cache)) == 1 and cache_files(cache) == blobs(cache), cache_files(cache)
    # restart: a hit, the same outputs
    assert np.array_equal(run({"hits": 1, "misses": 0, "invalid": 0,
                               "compiled_from_onnx": 0, "compiled_from_cache": 1}), ref)

    for damage in ("flip", "truncate"):
        (blob,) = blobs(cache)
        path = os.path.join(cache, blob)
        data = bytearray(open(path, "rb").read())
        if damage == "flip":
            mid = len(data) // 2
            for i in range(mid, min(mid + 16, len(data))):
                data[i] ^= 0xFF
        else:
            data = data[:len(data) // 2]
        with open(path, "wb") as f:
            f.write(bytes(data))
        # invalid: ignored, rebuilt, the model serves the same
        assert np.array_equal(run({"hits": 0, "invalid": 1}), ref), damage
        assert len(blobs(cache)) == 1 and cache_files(cache) == blobs(cache), cache_files(cache)
        rebuilt = open(os.path.join(cache, blobs(cache)[0]), "rb").read()
        assert rebuilt != bytes(data), f"{damage}: the blob was not rewritten"
        # and the rebuilt blob is good
        assert np.array_equal(run({"hits": 1, "misses": 0, "invalid": 0}), ref), damage


def is_cache_warning(e):
    return e.get("level") in ("WARNING", "WARN") and "cache" in json.dumps(e).lower()


def test_cache_dir_unusable(server_factory, tmp_path):
    """A cache directory that cannot be created: a warning, the model serves."""
    base = str(tmp_path / "c")
    os.makedirs(base)
    lm.publish(base, 1, lm.model_files(lm.mlp_bytes()))
    cfg = write_config(str(tmp_path / "config.json"), [{"name": "c", "base_path": base}])
    afile = tmp_path / "a_file"
    afile.write_bytes(b"not a directory")
    srv = start(server_factory, cfg, "--cache_dir", str(afile / "cache"))
    srv.wait_event(is_cache_warning, 30, "a warning about the cache")
    mlp_outputs(srv)


def test_cache_dir_unwritable(server_factory, tmp_path):
    """A cache directory the server cannot write into (chmod 500; as root,
    which ignores the mode, the immutable attribute): a warning, the model
    serves, nothing is left in the directory."""
    base = str(tmp_path / "c")
    os.makedirs(base)
    lm.publish(base, 1, lm.model_files(lm.mlp_bytes()))
    cfg = write_config(str(tmp_path / "config.json"), [{"name": "c", "base_path": base}])
    cache = tmp_path / "ro"
    cache.mkdir()
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        if not chattr or subprocess.run([chattr, "+i", str(cache)],
                                        capture_output=True).returncode != 0:
            pytest.skip("running as root, and this file system has no immutable "
                        "attribute: cannot make a directory root cannot write")
        undo = [chattr, "-i", str(cache)]
    else:
        cache.chmod(0o500)
        undo = None
    try:
        srv = start(server_factory, cfg, "--cache_dir", str(cache))
        srv.wait_event(is_cache_warning, 30, "a warning about the cache")
        assert mlp_outputs(srv).shape == (8,)
        assert cache_files(str(cache)) == []
    finally:
        if undo:
            subprocess.run(undo, check=True)
        else:
            cache.chmod(0o700)


# ---- SIGKILL while loading and while writing the cache -----------------------------

LARGE_VERSION = 5


@pytest.fixture(scope="module")
def large_repo(tmp_path_factory):
    """A ~300 MB model (version 5), generated once for the kill tests."""
    base = tmp_path_factory.mktemp("large")
    lm.large_model_file(str(base / "big" / str(LARGE_VERSION) / "model.onnx"),
                        version=float(LARGE_VERSION))
    return str(base)


def is_load_start(e):
    return e.get("event") == "model_load" and e.get("phase") == "start"


def is_cache_write_start(e):
    # docs/lifecycle.md names no event for it; src/serving/model_cache.c logs
    # {"event":"cache_write","phase":"start"} before it creates the temporary file
    return e.get("event") == "cache_write" and e.get("phase") == "start"


def large_answers(srv):
    """The version that answers; its output must be that version's
    (x = 0: every tanh is 0, y = 0 + version)."""
    r = srv.infer("big", [tensor("x", "FP32", [1, 2048], [0.0] * 2048)], timeout=120)
    assert r.status == 200, r
    js = r.json()
    y = np.array(js["outputs"][0]["data"], dtype=np.float32)
    assert np.all(y == np.float32(js["model_version"])), y[:8]
    return js["model_version"]


def killed_at(binary, repo, cache, pred, what):
    """Starts a server, SIGKILLs it as soon as a log line matches pred;
    returns the cache directory's listing right after its death."""
    argv = [binary, "serve", "--model_repository_path", repo, "--rest_port", "0",
            "--cache_dir", cache, "--log_level", "DEBUG"] + POLL
    srv = Server(argv, name=f"edgeserve-kill-{what}")
    try:
        srv.wait_event(pred, 120, what)
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(60)
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
        srv.expect_exit = True
        srv.stop()
    return cache_files(cache) if os.path.isdir(cache) else []


@pytest.mark.parametrize("moment", ["load", "cache_write"])
def test_sigkill_during_load_and_cache_write(server_factory, binary, large_repo, tmp_path,
                                             moment):
    pred = is_load_start if moment == "load" else is_cache_write_start
    for attempt in range(3):
        cache = str(tmp_path / f"cache{attempt}")
        listing = killed_at(binary, large_repo, cache, pred, f"the {moment} start line")
        # the kill must have landed before the blob was complete
        if not any(HEX64.match(f) and "tmp" not in f for f in listing):
            break
    else:
        pytest.fail(f"three kills after the {moment} start line all came after the blob "
                    f"was complete ({listing}); the window is too short to test")

    def restart():
        srv = server_factory(["--model_repository_path", large_repo, "--cache_dir", cache] +
                             POLL)
        assert large_answers(srv) == str(LARGE_VERSION)
        counts = cache_counts(srv, "big")
        srv.stop()
        files = cache_files(cache)
        assert files == blobs(cache) and len(files) == 1, \
            f"after a restart the cache holds {files} (temporary files must be gone)"
        return counts

    counts = restart()
    if counts["hits"] == 1:
        assert counts["misses"] == 0, counts
    else:
        # rebuilt: a miss and a write, then the next start hits
        assert counts["misses"] == 1 and counts["hits"] == 0, counts
        again = restart()
        assert again["hits"] == 1 and again["misses"] == 0 and again["invalid"] == 0, again


# ---- runtime libraries -------------------------------------------------------------------

VERSION_RE = re.compile(r"^\d+\.\d+(\.\d+)?")


def test_v2_runtime_and_metrics(server_factory, tmp_path):
    """GET /v2 names the runtime versions; /metrics with the lifecycle
    families (a cache, a failed version) passes promtool."""
    base = str(tmp_path / "m")
    os.makedirs(base)
    lm.publish(base, 1, lm.model_files(lm.versioned_bytes(1)))
    lm.publish(base, 2, lm.model_files(lm.versioned_bytes(2)))
    lm.publish(base, 3, lm.corrupt_files())
    cfg = write_config(str(tmp_path / "config.json"), [
        {"name": "m", "base_path": base, "keep_previous": True,
         "model_version_policy": {"specific": {"versions": [1, 2, 3]}}}])
    srv = start(server_factory, cfg, "--cache_dir", str(tmp_path / "cache"))
    body = srv.get("/v2").json()
    rt = body.get("runtime")
    assert isinstance(rt, dict), body
    for lib in ("onednn", "openblas"):
        assert isinstance(rt.get(lib), str) and VERSION_RE.match(rt[lib]), rt
    infer_v(srv.port, "m")
    text = srv.metrics()
    s = parse_metrics(text)
    build = [dict(lab) for (n, lab), _ in s.items() if n == "edgeserve_build_info"]
    assert build and build[0].get("onednn") == rt["onednn"] and \
        build[0].get("openblas") == rt["openblas"], build
    types = {ln.split()[2]: ln.split()[3] for ln in text.splitlines() if ln.startswith("# TYPE ")}
    for fam in ("edgeserve_model_cache_hits_total", "edgeserve_model_cache_misses_total",
                "edgeserve_model_cache_invalid_total",
                "edgeserve_model_cache_write_failures_total",
                "edgeserve_model_default_changes_total",
                "edgeserve_model_load_failures_total"):
        assert types.get(fam) == "counter", f"{fam}: TYPE {types.get(fam)}"
    assert "edgeserve_model_compile_duration_seconds" in types, sorted(types)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not installed (Debian package prometheus)")
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), \
        f"promtool findings:\n{p.stdout.decode()}{p.stderr.decode()}"


def shim_path():
    path = os.environ.get("ES_SHIM_OLD_ONEDNN")
    if not path:
        pytest.skip("ES_SHIM_OLD_ONEDNN is not set (ctest sets it to the "
                    "es_shim_old_onednn library)")
    assert os.path.exists(path), f"ES_SHIM_OLD_ONEDNN={path} does not exist"
    return path


def test_old_runtime_refused(server_factory, binary, tmp_path):
    shim = shim_path()
    base = str(tmp_path / "m")
    os.makedirs(base)
    lm.publish(base, 1, lm.model_files(lm.versioned_bytes(1)))
    # (an ASan build of edgeserve also needs the link-order check off)
    env = dict(os.environ, LD_PRELOAD=shim, ASAN_OPTIONS=os.environ.get(
        "ASAN_OPTIONS", "") + ":verify_asan_link_order=0")
    argv = [binary, "serve", "--model_path", base, "--model_name", "m",
            "--rest_port", "0"]
    p = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 1, f"rc={p.returncode}; stderr:\n{err}"
    assert "oneDNN" in err, err
    found = re.findall(r"\d+\.\d+\.\d+", err)
    assert "2.6.0" in found, f"the message should name the minimum 2.6.0: {err}"
    old = [v for v in found if v != "2.6.0"]
    assert old, f"the message should name the version found: {err}"
    assert "--allow_old_runtime" in err, err

    srv = Server(argv + ["--allow_old_runtime"], env=env, name="edgeserve-old-runtime")
    server_factory.servers.append(srv)
    srv.wait_ready(60)
    srv.wait_event(lambda e: e.get("level") in ("WARNING", "WARN") and
                   "onednn" in json.dumps(e).lower(), 10, "the old-runtime warning")
    rt = srv.get("/v2").json()["runtime"]
    assert rt["onednn"] in old and rt["onednn"] == "2.0.0", (rt, old)  # what the shim says
    assert infer_v(srv.port, "m") == (200, 1)
