"""Graceful shutdown: on SIGTERM/SIGINT readiness turns false at once, no
new connections, in-flight and queued requests finish, exit code 0; the
wait is bounded by --exit_timeout_seconds."""
import signal
import socket
import time

from esclient import HOST, Inflight, device_load, http_request, poll_until, slow_config, tensor

SLOW = {"inputs": [tensor("x", "FP32", [1, 1], [0.5])]}


def not_ready_or_refused(port):
    try:
        r = http_request(port, "GET", "/v2/health/ready", timeout=5)
    except (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError):
        return "refused"
    except OSError as e:  # RemoteDisconnected, timeouts
        return f"closed: {e!r}"
    return "503" if r.status == 503 else None


def connect_refused(port):
    try:
        s = socket.create_connection((HOST, port), timeout=5)
    except ConnectionRefusedError:
        return True
    s.close()
    return False


def test_sigterm_inflight_complete(server_factory, repo):
    srv = server_factory(config=slow_config(repo, streams=1, max_queue_size=64),
                         name="shutdown-server")
    n = 6
    flight = Inflight()
    for i in range(n):
        flight.start(i, lambda i=i: srv.post("/v2/models/slow/infer", dict(SLOW, id=f"sd-{i}"),
                                             timeout=60))
    # all n are inside the server: running or queued on NPU0
    poll_until(lambda: device_load(srv, "NPU0") >= n, 15, f"{n} requests on NPU0")
    port = srv.port
    t0 = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    # readiness false / no new connections, while the queue still drains
    seen = poll_until(lambda: not_ready_or_refused(port), 10, "readiness false after SIGTERM")
    results = flight.join(60)
    for k, r in results.items():
        assert not isinstance(r, BaseException), (k, r, srv.tail())
        assert r.status == 200, (k, r)
        assert r.json()["id"] == f"sd-{k}"
    rc = srv.wait_exit(60)
    assert rc == 0, f"exit code {rc}; stderr tail:\n{srv.tail()}"
    assert connect_refused(port), "port still accepts connections after exit"
    assert time.monotonic() - t0 < 30
    assert seen


def test_sigint_idle_exits_zero(server_factory, repo):
    srv = server_factory(["--model_repository_path", repo], name="sigint-server")
    assert srv.get("/v2/health/ready").status == 200
    srv.send_signal(signal.SIGINT)
    rc = srv.wait_exit(30)
    assert rc == 0, srv.tail()
    assert connect_refused(srv.port)


def test_exit_timeout_bounds_drain(server_factory, repo):
    """More queued work than --exit_timeout_seconds allows: the server still
    exits 0 in time; requests that could not run get an error status, not a
    hang or a dropped connection."""
    srv = server_factory(["--exit_timeout_seconds", "1"],
                         config=slow_config(repo, streams=1, max_queue_size=128),
                         name="exit-timeout-server")
    n = 60  # ~40 ms each: ~2.4 s of work
    flight = Inflight()
    for i in range(n):
        flight.start(i, lambda i=i: srv.post("/v2/models/slow/infer", dict(SLOW, id=f"et-{i}"),
                                             timeout=60))
    poll_until(lambda: device_load(srv, "NPU0") >= n, 20, f"{n} requests on NPU0")
    t0 = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    rc = srv.wait_exit(30)
    took = time.monotonic() - t0
    assert rc == 0, srv.tail()
    assert took < 10, f"exit took {took:.1f}s with --exit_timeout_seconds 1"
    results = flight.join(30)
    statuses = []
    for k, r in results.items():
        assert not isinstance(r, BaseException), (k, r)
        statuses.append(r.status)
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses, statuses
