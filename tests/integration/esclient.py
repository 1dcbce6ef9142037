"""Helpers for the integration tests: a handle on a running edgeserve
process, a small HTTP client on the standard library, the binary tensor
extension, and a Prometheus text parser.

Everything talks to 127.0.0.1 only. Nothing here sleeps to hide a race:
waits are on observable events (a log line, a metric value, a response),
each bounded by a timeout.
"""
import collections
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import numpy as np

HOST = "127.0.0.1"

# KServe v2 datatype -> numpy dtype (little-endian, as the wire format says).
NP_DTYPES = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

# The example scaler: y = x * linspace(0.5, 2, 8) + arange(8) * 0.25 (float32).
SCALER_SCALE = np.linspace(0.5, 2.0, 8, dtype=np.float32)
SCALER_BIAS = np.arange(8, dtype=np.float32) * np.float32(0.25)


def scaler_expected(x):
    x = np.asarray(x, dtype=np.float32)
    return x * SCALER_SCALE + SCALER_BIAS


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value)
        self.body = body

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(
                f"response is not JSON ({e}): status {self.status}, "
                f"body {self.body[:300]!r}") from None

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return f"<HTTP {self.status} {self.body[:400]!r}>"


def http_request(port, method, path, body=None, headers=None, timeout=30.0):
    """One request on a fresh connection; returns a Response."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        return send_on(conn, method, path, body, headers)
    finally:
        conn.close()


def send_on(conn, method, path, body=None, headers=None):
    """One request on an existing (keep-alive) connection."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    hdrs = {}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    conn.request(method, path, body=body, headers=hdrs)
    r = conn.getresponse()
    data = r.read()
    return Response(r.status, r.reason, r.getheaders(), data)


def infer_body(inputs, outputs=None, id=None, parameters=None):
    body = {"inputs": inputs}
    if outputs is not None:
        body["outputs"] = outputs
    if id is not None:
        body["id"] = id
    if parameters is not None:
        body["parameters"] = parameters
    return body


def tensor(name, datatype, shape, data, parameters=None):
    t = {"name": name, "datatype": datatype, "shape": list(shape), "data": data}
    if parameters is not None:
        t["parameters"] = parameters
    return t


def infer_path(model, version=None):
    if version is None:
        return f"/v2/models/{model}/infer"
    return f"/v2/models/{model}/versions/{version}/infer"


def binary_request(header, blobs):
    """JSON header + raw blobs -> (body, headers) for the binary extension."""
    js = json.dumps(header).encode()
    body = js + b"".join(blobs)
    return body, {"Inference-Header-Content-Length": str(len(js)),
                  "Content-Type": "application/octet-stream"}


def split_binary_response(resp):
    """Returns (header_json, {output_name: raw bytes}) of a response that
    may carry binary outputs (Inference-Header-Content-Length)."""
    hl = resp.header("Inference-Header-Content-Length")
    if hl is None:
        return resp.json(), {}
    n = int(hl)
    assert 0 < n <= len(resp.body), f"Inference-Header-Content-Length {n} vs body {len(resp.body)}"
    header = json.loads(resp.body[:n])
    blobs = {}
    off = n
    for out in header.get("outputs", []):
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            continue
        assert off + size <= len(resp.body), f"binary output {out['name']} runs past the body"
        blobs[out["name"]] = resp.body[off:off + size]
        off += size
    assert off == len(resp.body), f"{len(resp.body) - off} trailing bytes after binary outputs"
    return header, blobs


# ---- Prometheus text -----------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text):
    """{(name, frozenset(labels)): value} plus the set of families with HELP."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"unparsable metrics line: {line!r}"
        name, _, labels, value = m.group(1), m.group(2), m.group(3), m.group(4)
        lab = {}
        if labels:
            pos = 0
            while pos < len(labels):
                lm = _LABEL.match(labels, pos)
                assert lm, f"bad labels in {line!r}"
                lab[lm.group(1)] = lm.group(2)
                pos = lm.end()
        samples[(name, frozenset(lab.items()))] = float(value)
    return samples


def metric_sum(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


# ---- the server process -----------------------------------------------------

class ServerDied(AssertionError):
    pass


class Server:
    """A running `edgeserve serve`. stderr is read by a thread into
    `lines` (raw) and `events` (the lines that parse as JSON objects)."""

    def __init__(self, argv, cwd=None, env=None, name="edgeserve"):
        self.argv = list(argv)
        self.name = name
        self.lines = []
        self.events = []
        self.cond = threading.Condition()
        self.eof = False
        self.port = None
        self.returncode = None
        self.stopped = False
        self.proc = subprocess.Popen(
            self.argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self._threads = [
            threading.Thread(target=self._reader, args=(self.proc.stderr, True), daemon=True),
            threading.Thread(target=self._reader, args=(self.proc.stdout, False), daemon=True),
        ]
        self._open = 2
        for t in self._threads:
            t.start()

    def _reader(self, stream, is_stderr):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            ev = None
            if is_stderr:
                try:
                    ev = json.loads(line)
                except ValueError:
                    ev = None
            with self.cond:
                self.lines.append(line if is_stderr else "[stdout] " + line)
                if isinstance(ev, dict):
                    self.events.append(ev)
                self.cond.notify_all()
        with self.cond:
            self._open -= 1
            if self._open == 0:
                self.eof = True
            self.cond.notify_all()

    # -- log access

    def tail(self, n=40):
        with self.cond:
            return "\n".join(self.lines[-n:])

    def wait_event(self, pred, timeout=30.0, what="log event"):
        """Waits for a JSON log event matching pred; returns it."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                while seen < len(self.events):
                    ev = self.events[seen]
                    seen += 1
                    if pred(ev):
                        return ev
                if self.eof:
                    raise ServerDied(f"{self.name} exited (rc={self.proc.poll()}) before {what}; "
                                     f"stderr tail:\n{self.tail_locked()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                         f"stderr tail:\n{self.tail_locked()}")
                self.cond.wait(left)

    def tail_locked(self, n=40):
        return "\n".join(self.lines[-n:])

    def wait_events(self, pred, count, timeout=30.0, what="log events"):
        """Waits until `count` events match pred; returns them."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [e for e in self.events if pred(e)]
                if len(got) >= count:
                    return got
                if self.eof:
                    raise ServerDied(f"{self.name} exited before {what} ({len(got)}/{count}); "
                                     f"stderr tail:\n{self.tail_locked()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what} ({len(got)}/{count}); "
                                         f"stderr tail:\n{self.tail_locked()}")
                self.cond.wait(left)

    def request_events(self, **match):
        with self.cond:
            return [e for e in self.events if e.get("event") == "request"
                    and all(e.get(k) == v for k, v in match.items())]

    def wait_ready(self, timeout=60.0):
        ev = self.wait_event(lambda e: e.get("event") == "server_ready" and "port" in e,
                             timeout, "the server_ready log line")
        self.port = int(ev["port"])
        assert 0 < self.port < 65536, ev
        return ev

    # -- process

    def alive(self):
        return self.proc.poll() is None

    def assert_alive(self):
        if self.proc.poll() is not None:
            raise ServerDied(f"{self.name} died with rc={self.proc.returncode}; stderr tail:\n"
                             f"{self.tail()}")

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=60.0):
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
            raise AssertionError(f"{self.name} did not exit within {timeout}s; killed. "
                                 f"stderr tail:\n{self.tail()}") from None
        for t in self._threads:
            t.join(10)
        self.stopped = True
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=60.0):
        if self.stopped:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    # -- HTTP

    def request(self, method, path, body=None, headers=None, timeout=30.0):
        assert self.port, "server not ready"
        return http_request(self.port, method, path, body, headers, timeout)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def infer(self, model, inputs, version=None, outputs=None, id=None, parameters=None,
              headers=None, timeout=30.0):
        return self.post(infer_path(model, version),
                         infer_body(inputs, outputs, id, parameters), headers=headers,
                         timeout=timeout)

    def connection(self, timeout=30.0):
        return http.client.HTTPConnection(HOST, self.port, timeout=timeout)

    def metrics(self):
        r = self.get("/metrics")
        assert r.status == 200, r
        return r.text()

    def check_serves(self):
        """The server is alive and answers a normal inference exactly."""
        self.assert_alive()
        x = [1, 2, 3, 4, 5, 6, 7, 8]
        try:
            r = self.infer("scaler", [tensor("x", "FP32", [1, 8], x)])
        except OSError as e:
            self.assert_alive()
            raise AssertionError(f"normal request failed after bad input: {e!r}; stderr tail:\n"
                                 f"{self.tail()}") from None
        assert r.status == 200, f"normal request after bad input: {r}"
        out = r.json()["outputs"][0]
        got = np.array(out["data"], dtype=np.float32)
        assert np.array_equal(got, scaler_expected(x).reshape(-1)), out


def raw_exchange(port, payload, timeout=5.0, half_close=True, until_headers=False):
    """Sends raw bytes on a fresh socket and returns what comes back before
    the server closes (or the timeout passes; or, with until_headers, once
    a response's header block is complete). Send errors (the server closed
    early) are not errors here."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    got = b""
    try:
        try:
            if payload:
                s.sendall(payload)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:  # EPIPE, ECONNRESET, ENOTCONN: the server closed first
            pass
        while not (until_headers and b"\r\n\r\n" in got):
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not chunk:
                break
            got += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        s.close()
    return got


def status_of(raw):
    """HTTP status code of the first response in raw bytes, or None."""
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else None


def concurrently(fns, timeout=120.0):
    """Runs callables in threads started together (a barrier); returns their
    results in order (an exception is returned as the result)."""
    n = len(fns)
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        try:
            barrier.wait(timeout)
            results[i] = fns[i]()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a concurrent request did not finish"
    return results


class Inflight:
    """Requests sent from threads, started now, collected later."""

    def __init__(self):
        self.threads = []
        self.results = collections.OrderedDict()

    def start(self, key, fn):
        def run():
            try:
                self.results[key] = fn()
            except BaseException as e:  # noqa: BLE001
                self.results[key] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self, timeout=120.0):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
            assert not t.is_alive(), "an in-flight request did not finish"
        return self.results


def poll_until(fn, timeout=15.0, what="condition", interval=0.002):
    """Calls fn until it returns a true value (bounded); returns that value.
    The short pause only paces the polling of an observable state."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def run_interval(ev):
    """(t_start, t_end) of the device run in an access log event, or
    (None, None) when the request never ran. The server logs them as
    t_start_ns/t_end_ns (monotonic ns); t_start/t_end are accepted too."""
    s = ev.get("t_start_ns", ev.get("t_start"))
    e = ev.get("t_end_ns", ev.get("t_end"))
    return (s or None), (e or None)


def device_load(server, device):
    """queue size + active requests of a device, from /metrics."""
    s = parse_metrics(server.metrics())
    return (metric_sum(s, "edgeserve_queue_size", device=device) +
            metric_sum(s, "edgeserve_device_active_requests", device=device))


def env_with(**kv):
    env = dict(os.environ)
    env.update(kv)
    return env


# ---- config files -----------------------------------------------------------

def model_entry(repo, name, base=None, policy=None, device=None):
    cfg = {"name": name, "base_path": os.path.join(repo, base or name)}
    if policy is not None:
        cfg["model_version_policy"] = policy
    if device is not None:
        cfg["target_device"] = device
    return {"config": cfg}


def device_entry(name, streams=1, max_queue_size=64, threads_per_stream=1):
    return {"name": name, "backend": "cpu", "streams": streams,
            "threads_per_stream": threads_per_stream, "max_queue_size": max_queue_size}


def slow_config(repo, streams=1, max_queue_size=64):
    """scaler on CPU, slow on NPU0 (a device with `streams` streams)."""
    return {
        "model_config_list": [
            model_entry(repo, "scaler", device="CPU"),
            model_entry(repo, "slow", device="NPU0"),
        ],
        "devices": [
            device_entry("CPU", streams=1, max_queue_size=64),
            device_entry("NPU0", streams=streams, max_queue_size=max_queue_size),
        ],
    }
