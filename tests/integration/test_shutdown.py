"""Graceful shutdown: on SIGTERM/SIGINT readiness turns false at once, no
new connections, in-flight and queued requests finish, exit code 0; the
wait is bounded by --exit_timeout_seconds."""
import signal
import socket
import time

from esclient import (HOST, Inflight, device_load, http_request, metric_sum, parse_metrics,
                      poll_until, slow_config, tensor)

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
    n = 8
    flight = Inflight()
    for i in range(n):
        flight.start(i, lambda i=i: srv.post("/v2/models/slow/infer", dict(SLOW, id=f"sd-{i}"),
                                             timeout=60))
    # all n are inside the server: running or queued on NPU0
    poll_until(lambda: len(flight.results) + device_load(srv, "NPU0") >= n, 15,
               f"{n} requests accepted by NPU0")
    port = srv.port
    t0 = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    done_before = len(flight.results)
    assert done_before < n - 1, "too few requests left in flight to test the drain"
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
    # every request reached the server: done, or running/queued on NPU0
    poll_until(lambda: len(flight.results) + device_load(srv, "NPU0") >= n, 20,
               f"{n} requests accepted by NPU0")
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


def inflight_gauge(srv):
    return metric_sum(parse_metrics(srv.metrics()), "edgeserve_http_inflight_requests")


def test_client_abort_does_not_block_shutdown(server_factory, repo):
    """A client that sends the headers and part of a body and then closes
    its socket leaves nothing in flight: the in-flight gauge returns to its
    idle value and SIGTERM exits at once, not after --exit_timeout_seconds."""
    srv = server_factory(["--model_repository_path", repo, "--exit_timeout_seconds", "10"],
                         name="client-abort-server")
    idle = inflight_gauge(srv)  # counts the /metrics request itself, if at all
    req = (f"POST /v2/models/scaler/infer HTTP/1.1\r\nHost: {HOST}\r\n"
           "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"inputs\"").encode()
    for _ in range(5):
        for cut in (len(req), req.index(b"{")):
            s = socket.create_connection((HOST, srv.port), timeout=5)
            s.sendall(req[:cut])
            s.close()
    srv.check_serves()
    poll_until(lambda: inflight_gauge(srv) == idle, 5,
               "edgeserve_http_inflight_requests back to its idle value after client aborts")
    t0 = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    rc = srv.wait_exit(60)
    took = time.monotonic() - t0
    assert rc == 0, srv.tail()
    assert took < 3, f"SIGTERM took {took:.1f}s: aborted requests held the shutdown; " \
                     f"log tail:\n{srv.tail(4)}"


def test_queued_requests_hold_no_network_thread(server_factory, repo):
    """With one network thread, requests waiting in a device queue do not
    block it: health and metrics answer while slow work is queued."""
    srv = server_factory(["--rest_workers", "1"],
                         config=slow_config(repo, streams=1, max_queue_size=64),
                         name="one-worker-server")
    n = 8
    flight = Inflight()
    for i in range(n):
        flight.start(i, lambda i=i: srv.post("/v2/models/slow/infer", dict(SLOW, id=f"nw-{i}"),
                                             timeout=60))
    poll_until(lambda: len(flight.results) + device_load(srv, "NPU0") >= n, 15,
               f"{n} requests accepted by NPU0")
    r = srv.get("/v2/health/live")
    assert r.status == 200, r
    r = srv.infer("scaler", [tensor("x", "FP32", [1, 8], [1, 2, 3, 4, 5, 6, 7, 8])])
    assert r.status == 200, r
    done_when_answered = len(flight.results)
    assert done_when_answered < n, "the slow requests finished before the network thread answered"
    for k, v in flight.join(60).items():
        assert not isinstance(v, BaseException), (k, v)
        assert v.status == 200, (k, v)
