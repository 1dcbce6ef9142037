"""HTTP behaviour clients rely on: chunked bodies, Expect: 100-continue
(curl sends it for larger bodies), content types, HEAD, query strings,
pipelining order, many concurrent keep-alive clients without cross-talk,
clients that leave while their request is queued."""
import json
import re
import socket
import threading

import numpy as np

from esclient import (HOST, Inflight, device_load, metric_sum, parse_metrics, poll_until,
                      scaler_expected, slow_config, status_of, tensor)

X8 = [1, 2, 3, 4, 5, 6, 7, 8]
GOOD = json.dumps({"inputs": [tensor("x", "FP32", [1, 8], X8)]}).encode()


def read_responses(sock, count, timeout=30):
    """Reads `count` HTTP/1.1 responses with Content-Length bodies."""
    sock.settimeout(timeout)
    buf = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses: {buf[:300]!r}"
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = status_of(head)
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        n = int(m.group(1)) if m else 0
        if status == 100:
            out.append((100, head, b""))
            buf = rest
            continue
        while len(rest) < n:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside a body"
            rest += chunk
        out.append((status, head, rest[:n]))
        buf = rest[n:]
    return out


def post_head(path, length=None, extra=""):
    h = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
    if length is not None:
        h += f"Content-Length: {length}\r\n"
    return (h + extra + "\r\n").encode()


def check_scaler_body(body, x=X8):
    out = json.loads(body)["outputs"][0]
    assert np.array_equal(np.array(out["data"], np.float32), scaler_expected(x).reshape(-1)), out


def test_chunked_request_body(server):
    s = socket.create_connection((HOST, server.port), timeout=30)
    try:
        s.sendall(post_head("/v2/models/scaler/infer", extra="Transfer-Encoding: chunked\r\n"))
        for i in range(0, len(GOOD), 7):
            part = GOOD[i:i + 7]
            s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        (st, head, body), = read_responses(s, 1)
        assert st == 200, (head, body)
        check_scaler_body(body)
    finally:
        s.close()


def test_expect_100_continue(server):
    s = socket.create_connection((HOST, server.port), timeout=30)
    try:
        s.sendall(post_head("/v2/models/scaler/infer", len(GOOD), "Expect: 100-continue\r\n"))
        (st, head, _), = read_responses(s, 1)
        assert st == 100, head
        s.sendall(GOOD)
        (st, head, body), = read_responses(s, 1)
        assert st == 200, (head, body)
        check_scaler_body(body)
    finally:
        s.close()


def test_expect_100_continue_too_large(session_factory, repo):
    srv = session_factory(["--model_repository_path", repo, "--max_request_bytes", "4096"],
                          name="small-limit-server")
    s = socket.create_connection((HOST, srv.port), timeout=30)
    try:
        s.sendall(post_head("/v2/models/scaler/infer", 100000, "Expect: 100-continue\r\n"))
        (st, head, body), = read_responses(s, 1)
        assert st == 413, (head, body)
        assert "error" in json.loads(body)
    finally:
        s.close()
    srv.check_serves()


def test_form_content_type_accepted(server):
    """curl -d sends application/x-www-form-urlencoded unless told."""
    for ctype in ("application/x-www-form-urlencoded", "text/plain", None):
        hdrs = {"Content-Type": ctype} if ctype else {}
        conn = server.connection()
        try:
            conn.putrequest("POST", "/v2/models/scaler/infer", skip_accept_encoding=True)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(GOOD)))
            conn.endheaders(GOOD)
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, (ctype, r.status, body)
            check_scaler_body(body)
        finally:
            conn.close()


def test_query_string_ignored(server):
    assert server.get("/v2/health/ready?verbose=1").status == 200
    r = server.post("/v2/models/scaler/infer?x=1", GOOD)
    assert r.status == 200, r


def test_head_request(server):
    s = socket.create_connection((HOST, server.port), timeout=10)
    try:
        s.sendall(f"HEAD /v2/health/live HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
                  .encode())
        got = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            got += c
    finally:
        s.close()
    assert status_of(got) == 200, got
    assert got.endswith(b"\r\n\r\n"), got  # no body after the headers


def test_concurrent_clients_no_crosstalk(server):
    """16 keep-alive clients x 20 requests, each with its own values: every
    response carries the caller's id and the caller's result."""
    errors = []

    def client(c):
        conn = server.connection()
        try:
            for i in range(20):
                x = [c * 100 + i + k for k in range(8)]
                rid = f"c{c}-r{i}"
                conn.request("POST", "/v2/models/scaler/infer",
                             body=json.dumps({"id": rid, "inputs": [tensor("x", "FP32", [1, 8], x)]}),
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                body = json.loads(r.read())
                if r.status != 200 or body.get("id") != rid:
                    errors.append((rid, r.status, body))
                    continue
                got = np.array(body["outputs"][0]["data"], np.float32)
                if not np.array_equal(got, scaler_expected(x)):
                    errors.append((rid, "wrong values", body))
        except Exception as e:  # noqa: BLE001
            errors.append((c, repr(e)))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]


def test_pipelined_slow_then_fast_in_order(server_factory, repo):
    """On one connection the replies come back in request order, even when
    the first request waits on a slow device and the second is fast."""
    srv = server_factory(config=slow_config(repo, streams=1), name="pipeline-server")
    slow = json.dumps({"id": "first", "inputs": [tensor("x", "FP32", [1, 1], [0.5])]}).encode()
    fast = json.dumps({"id": "second", "inputs": [tensor("x", "FP32", [1, 8], X8)]}).encode()
    s = socket.create_connection((HOST, srv.port), timeout=30)
    try:
        s.sendall(post_head("/v2/models/slow/infer", len(slow)) + slow +
                  post_head("/v2/models/scaler/infer", len(fast)) + fast)
        (st1, _, b1), (st2, _, b2) = read_responses(s, 2)
    finally:
        s.close()
    assert st1 == 200 and json.loads(b1)["id"] == "first", b1
    assert st2 == 200 and json.loads(b2)["id"] == "second", b2
    check_scaler_body(b2)


def test_client_gone_while_queued(server_factory, repo):
    """Clients that close their socket while their request waits in a
    device queue: the server survives, the device finishes, the in-flight
    count returns to idle and new requests are served."""
    srv = server_factory(config=slow_config(repo, streams=1), name="client-gone-server")
    slow = json.dumps({"inputs": [tensor("x", "FP32", [1, 1], [0.5])]}).encode()
    n = 5
    socks = []
    for _ in range(n):
        s = socket.create_connection((HOST, srv.port), timeout=10)
        s.sendall(post_head("/v2/models/slow/infer", len(slow)) + slow)
        socks.append(s)
    poll_until(lambda: device_load(srv, "NPU0") >= 2, 15, "slow requests queued")
    for s in socks:
        s.close()
    # a request behind them still completes
    flight = Inflight()
    flight.start("after", lambda: srv.post("/v2/models/slow/infer", slow, timeout=60))
    r = flight.join(60)["after"]
    assert not isinstance(r, BaseException) and r.status == 200, r
    srv.check_serves()

    def idle():
        s = parse_metrics(srv.metrics())
        return (metric_sum(s, "edgeserve_http_inflight_requests") <= 1 and
                metric_sum(s, "edgeserve_queue_size", device="NPU0") == 0)
    poll_until(idle, 10, "in-flight requests back to idle")


def test_http10_request(server):
    s = socket.create_connection((HOST, server.port), timeout=10)
    try:
        s.sendall(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        got = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            got += c
    finally:
        s.close()
    assert status_of(got) == 200, got


def test_large_binary_tensor(server):
    """32 MiB in, 32 MiB out through the binary extension, exact."""
    x = np.arange(8 * 1024 * 1024, dtype=np.float32).reshape(2048, 4096)
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2048, 4096],
                          "parameters": {"binary_data_size": x.nbytes}}],
              "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    from esclient import binary_request, split_binary_response
    body, hdrs = binary_request(header, [x.tobytes()])
    r = server.post("/v2/models/identity_fp32/infer", body, headers=hdrs, timeout=60)
    assert r.status == 200, r
    head, blobs = split_binary_response(r)
    assert head["outputs"][0]["shape"] == [2048, 4096], head
    assert blobs["y"] == x.tobytes()


def test_connection_cap(server_factory, repo):
    """At --max_connections a further client is either turned away or waits
    (microhttpd stops accepting); once the held connections close it is
    served or closed, never left hanging, and the server keeps serving."""
    srv = server_factory(["--model_repository_path", repo, "--max_connections", "4"],
                         name="conn-cap-server")
    held = [socket.create_connection((HOST, srv.port), timeout=5) for _ in range(4)]
    # make sure the four are accepted and counted: each answers a request
    for s in held:
        s.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        (st, _, _), = read_responses(s, 1, timeout=10)
        assert st == 200
    extra = socket.create_connection((HOST, srv.port), timeout=10)
    got = b""
    try:
        try:
            extra.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: {HOST}\r\n"
                          "Connection: close\r\n\r\n".encode())
        except OSError:
            pass
        for s in held:
            s.close()
        try:
            while True:
                c = extra.recv(65536)
                if not c:
                    break
                got += c
        except socket.timeout:
            raise AssertionError("connection past the cap left hanging after slots freed") from None
        except OSError:
            pass
    finally:
        extra.close()
    assert got == b"" or status_of(got) in (200, 503), got[:200]

    def serves():
        try:
            return srv.get("/v2/health/live", timeout=5).status == 200
        except OSError:
            return False
    poll_until(serves, 15, "the server to serve after the held connections closed", 0.02)
    srv.check_serves()
