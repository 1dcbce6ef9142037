"""Bad input never crashes the server, gets the right status and an
{"error": ...} body that names the problem, and after each case the server
still answers a normal request exactly."""
import json
import socket
import struct

import pytest

from esclient import (HOST, binary_request, infer_path, raw_exchange, status_of, tensor)

LIMIT = 1 << 20  # --max_request_bytes of this module's server
X8 = [1, 2, 3, 4, 5, 6, 7, 8]
GOOD = {"inputs": [tensor("x", "FP32", [1, 8], X8)]}


@pytest.fixture(scope="module")
def srv(session_factory, repo):
    # (a short exit timeout: some tests leave aborted connections behind;
    # test_shutdown checks that those do not hold a shutdown)
    return session_factory(["--model_repository_path", repo, "--max_request_bytes", str(LIMIT),
                            "--exit_timeout_seconds", "5"], name="robustness-server")


def check_error(r, status, *words):
    assert r.status == status, f"expected {status}, got {r}"
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    err = body["error"]
    for w in words:
        assert w.lower() in err.lower(), f"error does not name {w!r}: {err!r}"
    # no internal addresses or paths outside the repository
    assert "0x" not in err and "/home/" not in err and "/usr/" not in err and ".c:" not in err, err
    return err


def post(srv, body, model="scaler", headers=None, path=None):
    return srv.post(path or infer_path(model), body, headers=headers)


# ---- JSON syntax ---------------------------------------------------------------

def _x(rest):
    """An FP32 [1,8] input "x" for the scaler with the rest of its JSON."""
    return b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], ' + rest


MALFORMED = {
    "empty": b"", "open-brace": b"{", "close-brace": b"}", "open-bracket": b"[",
    "null": b"null", "array": b"[]", "number": b"1", "string": b'"inputs"',
    "unquoted-key": b"{inputs: []}", "bad-array": b'{"inputs": [}',
    "trailing-comma": b'{"inputs": [1, 2,]}', "NaN-literal": b'{"inputs": NaN}',
    "NaN-in-data": _x(b'"data": [1,2,3,4,5,6,7,NaN]}]}'),
    "1e999-in-FP32-data": _x(b'"data": [1,2,3,4,5,6,7,1e999]}]}'),
    "1e39-in-FP32-data": _x(b'"data": [1,2,3,4,5,6,7,1e39]}]}'),
    "binary-junk": b"\xff\xfe\x00{",
    "invalid-utf8-name": b'{"inputs": [{"name": "\xc3\x28", "datatype": "FP32", "shape": [1, 8], '
                         b'"data": [1,2,3,4,5,6,7,8]}]}',
    "inputs-string": b'{"inputs": "x"}', "inputs-object": b'{"inputs": {}}',
    "inputs-empty": b'{"inputs": []}', "inputs-null-item": b'{"inputs": [null]}',
    "input-empty-object": b'{"inputs": [{}]}', "input-name-only": b'{"inputs": [{"name": "x"}]}',
    "no-data": _x(b'"x": 1}]}'),
    "name-number": b'{"inputs": [{"name": 5, "datatype": "FP32", "shape": [1, 8], '
                   b'"data": [1,2,3,4,5,6,7,8]}]}',
    "shape-string": b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": "1,8", '
                    b'"data": [1,2,3,4,5,6,7,8]}]}',
    "data-string": _x(b'"data": "12345678"}]}'),
    "data-jagged": _x(b'"data": [[1,2,3,4],[5,6,7]]}]}'),
    "data-object-item": _x(b'"data": [1,2,3,4,5,6,7,{}]}]}'),
    "trailing-garbage": _x(b'"data": [1,2,3,4,5,6,7,8]}]} trailing'),
    "outputs-number": _x(b'"data": [1,2,3,4,5,6,7,8]}], "outputs": 7}'),
    "nul-bytes": b"\x00" * 64,
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_json(srv, case):
    r = post(srv, MALFORMED[case])
    check_error(r, 400)
    srv.check_serves()


def test_truncated_json_every_cut(srv):
    full = json.dumps({"id": "t", "inputs": [tensor("x", "FP32", [1, 8], X8)],
                       "outputs": [{"name": "y"}]}).encode()
    for cut in range(0, len(full) - 1, 3):
        r = post(srv, full[:cut])
        assert r.status == 400, (cut, full[:cut], r)
        assert "error" in r.json(), r
    srv.check_serves()


@pytest.mark.parametrize("depth", [65, 1000, 100000])
def test_deep_nesting(srv, depth):
    data = "[" * depth + "1" + "]" * depth
    body = '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": %s}]}' % data
    check_error(post(srv, body.encode()), 400)
    body2 = ('{"inputs": [' + '{"a":' * depth + "1" + "}" * depth + "]}").encode()
    check_error(post(srv, body2), 400)
    srv.check_serves()


def test_deep_nesting_tfs(srv):
    depth = 1000
    body = '{"instances": %s}' % ("[" * depth + "1" + "]" * depth)
    r = srv.post("/v1/models/scaler:predict", body.encode())
    check_error(r, 400)
    srv.check_serves()


# ---- shapes, counts, datatypes ----------------------------------------------

@pytest.mark.parametrize("shape", [
    [2**62, 4], [4294967296, 4294967296, 4294967296], [2**63 - 1, 2**63 - 1],
    [2**31, 2**31, 2**31, 2**31], [9223372036854775807], [1, 9223372036854775808],
    [-1, 8], [1, -8], [-9223372036854775808, 8], [1.5, 8], ["1", 8], [None, 8],
    [1] * 100, [], [1e30, 8], [0, 8, -1],
])
def test_bad_shapes(srv, shape):
    r = post(srv, {"inputs": [tensor("x", "FP32", shape, X8)]})
    check_error(r, 400)
    srv.check_serves()


@pytest.mark.parametrize("n", [0, 7, 9, 16])
def test_data_length_mismatch(srv, n):
    data = list(range(n))
    r = post(srv, {"inputs": [tensor("x", "FP32", [1, 8], data)]})
    err = check_error(r, 400, "x")
    assert "8" in err and str(n) in err, err
    srv.check_serves()


@pytest.mark.parametrize("dt", ["FP8", "float32", "fp32", "", "STRING", "BF16X", "INT128"])
def test_unknown_datatype(srv, dt):
    r = post(srv, {"inputs": [tensor("x", dt, [1, 8], X8)]})
    err = check_error(r, 400)
    if dt:
        assert dt in err, err
    srv.check_serves()


def test_wrong_datatype_for_model(srv):
    r = post(srv, {"inputs": [tensor("x", "INT32", [1, 8], X8)]})
    check_error(r, 400, "x", "FP32", "INT32")
    srv.check_serves()


def test_wrong_shape_for_model(srv):
    r = post(srv, {"inputs": [tensor("x", "FP32", [2, 4], X8)]})
    check_error(r, 400, "x", "8", "4")
    r = post(srv, {"inputs": [tensor("x", "FP32", [8], X8)]})
    check_error(r, 400, "x")
    r = post(srv, {"inputs": [tensor("x", "FP32", [1, 1, 8], X8)]})
    check_error(r, 400, "x")
    srv.check_serves()


def test_wrong_input_names(srv):
    check_error(post(srv, {"inputs": [tensor("nope", "FP32", [1, 8], X8)]}), 400, "nope")
    check_error(post(srv, {"inputs": [tensor("x", "FP32", [1, 8], X8),
                                      tensor("x", "FP32", [1, 8], X8)]}), 400, "x")
    check_error(post(srv, {"inputs": [tensor("x", "FP32", [1, 8], X8),
                                      tensor("z", "FP32", [1, 8], X8)]}), 400, "z")
    check_error(post(srv, {"inputs": [tensor("a", "FP32", [1, 3], [1, 2, 3])]},
                     model="twoinput"), 400, "b")
    srv.check_serves()


def test_symbolic_dim_must_agree_between_inputs(srv):
    """twoinput declares a: [n, 3] and b: [n, 3]; n is one dimension, so
    a [1, 3] with b [2, 3] is a bad request (not a broadcast)."""
    r = post(srv, {"inputs": [tensor("a", "FP32", [1, 3], [1, 2, 3]),
                              tensor("b", "FP32", [2, 3], [1, 2, 3, 4, 5, 6])]}, model="twoinput")
    check_error(r, 400, "b")
    srv.check_serves()


# ---- BYTES and binary lengths -----------------------------------------------

@pytest.mark.parametrize("blob", [
    struct.pack("<I", 1000) + b"abcd",           # element length past the buffer
    struct.pack("<I", 0xFFFFFFFF) + b"abcd",     # huge length
    struct.pack("<I", 2) + b"ab" + b"\x01\x00",  # truncated length prefix
    b"\x01",                                     # shorter than a prefix
])
def test_bytes_lengths_past_buffer(srv, blob):
    header = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1, 1],
                          "parameters": {"binary_data_size": len(blob)}}]}
    body, hdrs = binary_request(header, [blob])
    check_error(srv.post(infer_path("identity_uint8"), body, headers=hdrs), 400)
    check_error(srv.post(infer_path("scaler"), body, headers=hdrs), 400)
    srv.check_serves()


def test_bytes_json_to_numeric_model(srv):
    r = post(srv, {"inputs": [tensor("x", "BYTES", [1, 2], ["ab", "cd"])]})
    check_error(r, 400, "x")
    srv.check_serves()


@pytest.mark.parametrize("hlen", ["100000", "99999999999999999999", "-5", "abc", "0", "", "1e3",
                                  "18446744073709551615"])
def test_header_length_bad(srv, hlen):
    body = json.dumps(GOOD).encode()
    r = srv.post(infer_path("scaler"), body,
                 headers={"Inference-Header-Content-Length": hlen})
    assert r.status in (400, 413), r
    assert "error" in r.json(), r
    srv.check_serves()


def test_header_length_inside_json(srv):
    body = json.dumps(GOOD).encode()
    r = srv.post(infer_path("scaler"), body,
                 headers={"Inference-Header-Content-Length": str(len(body) // 2)})
    check_error(r, 400)
    srv.check_serves()


def test_binary_size_overflow(srv):
    for size in (2**64 - 1, 2**63, -1, 1.5, "32"):
        header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8],
                              "parameters": {"binary_data_size": size}}]}
        body, hdrs = binary_request(header, [b"\0" * 32])
        check_error(srv.post(infer_path("scaler"), body, headers=hdrs), 400)
    srv.check_serves()


# ---- sizes -----------------------------------------------------------------

def test_oversized_body_413(srv):
    body = json.dumps(GOOD).encode() + b" " * (LIMIT + 1)
    req = (f"POST /v2/models/scaler/infer HTTP/1.1\r\nHost: {HOST}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    got = raw_exchange(srv.port, req + body, timeout=10, half_close=False, until_headers=True)
    assert status_of(got) == 413, got[:300]
    srv.check_serves()


def test_body_just_under_limit_ok(srv):
    body = json.dumps(GOOD).encode()
    body += b" " * (LIMIT - len(body) - 16)
    r = srv.post(infer_path("scaler"), body)
    assert r.status == 200, r
    srv.check_serves()


def test_huge_content_length_413_before_body(srv):
    """413 comes from the headers alone: the server must not wait for (or
    buffer) a terabyte."""
    req = (f"POST /v2/models/scaler/infer HTTP/1.1\r\nHost: {HOST}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {10**12}\r\n\r\n").encode()
    got = raw_exchange(srv.port, req + b'{"inputs": [', timeout=10, half_close=False,
                       until_headers=True)
    assert status_of(got) == 413, got[:300]
    srv.check_serves()


def test_chunked_oversized_413(srv):
    s = socket.create_connection((HOST, srv.port), timeout=10)
    try:
        s.sendall(f"POST /v2/models/scaler/infer HTTP/1.1\r\nHost: {HOST}\r\n"
                  "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b" " * 65536
        got = b""
        sent = 0
        try:
            while sent <= LIMIT + 65536 * 2:
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                got += c
                if b"\r\n\r\n" in got:
                    break
        except (socket.timeout, ConnectionResetError):
            pass
    finally:
        s.close()
    assert status_of(got) == 413, got[:300]
    srv.check_serves()


# ---- names and routes ----------------------------------------------------------

@pytest.mark.parametrize("path,statuses", [
    ("/v2/models/nosuch/infer", (404,)),
    ("/v2/models/scaler/versions/99/infer", (404,)),
    ("/v2/models/scaler/versions/0/infer", (400, 404)),
    ("/v2/models/scaler/versions/-1/infer", (400, 404)),
    ("/v2/models/scaler/versions/abc/infer", (400, 404)),
    ("/v2/models/scaler/versions/99999999999999999999999/infer", (400, 404)),
    ("/v2/models/../../etc/passwd/infer", (400, 404)),
    ("/v2/models/..%2F..%2Fetc%2Fpasswd/infer", (400, 404)),
    # microhttpd unescapes %00 and the path ends there: /v2/models/scaler (405 for POST)
    ("/v2/models/scaler%00/infer", (400, 404, 405)),
    ("/v2/models/%2e%2e/infer", (400, 404)),
    ("/v2/models//infer", (400, 404)),
    ("/v2/models/" + "a" * 5000 + "/infer", (400, 404, 414)),
    ("/v1/models/../scaler:predict", (400, 404)),
    ("/v1/models/nosuch:predict", (404,)),
])
def test_unknown_models_and_paths(srv, path, statuses):
    r = srv.post(path, GOOD)
    assert r.status in statuses, (path, r)
    if r.status != 414:
        assert "error" in r.json(), r
    if path.startswith("/v2/models/nosuch") or path.startswith("/v1/models/nosuch"):
        assert "nosuch" in r.json()["error"], r
    if "versions/99/" in path:
        assert "99" in r.json()["error"] and "scaler" in r.json()["error"], r
    srv.check_serves()


@pytest.mark.parametrize("path", ["/v2/models/../../../../etc/passwd",
                                  "/v2/models/..%2f..%2fetc%2fpasswd/ready",
                                  "/v1/models/..%2f..%2fetc/metadata",
                                  "/v2/models/scaler/versions/1/../../../x"])
def test_dotdot_get(srv, path):
    r = srv.get(path)
    assert r.status in (400, 404), (path, r)
    assert "root:" not in r.text(), r
    srv.check_serves()


@pytest.mark.parametrize("method,path", [
    ("GET", "/v2/models/scaler/infer"), ("PUT", "/v2/models/scaler/infer"),
    ("DELETE", "/v2/models/scaler"), ("POST", "/v2/health/live"),
    ("POST", "/v2/models/scaler/ready"), ("GET", "/v1/models/scaler:predict"),
    ("PATCH", "/v2"), ("POST", "/metrics"),
])
def test_method_not_allowed(srv, method, path):
    r = srv.request(method, path, body=b"{}" if method in ("POST", "PUT", "PATCH") else None)
    check_error(r, 405)
    srv.check_serves()


# ---- raw bytes on the socket ------------------------------------------------

GARBAGE = [
    b"\x00\x01\x02\x03" * 100,
    bytes(range(256)) * 8,
    b"\r\n\r\n\r\n",
    b"GARBAGE / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /v2/models/scaler/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
    b"Content-Length: 20\r\n\r\n0123456789",
    b"POST /v2/models/scaler/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zzzz\r\nabc\r\n",
    b"POST /v2/models/scaler/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"ffffffffffffffffff\r\nabc\r\n",
    b"GET /" + b"A" * 200000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2/health/live HTTP/1.1\r\n" + b"X-Long: " + b"b" * 200000 + b"\r\n\r\n",
    b"GET /v2/health/live HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n",
    b"POST /v2/models/scaler/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"in",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100,  # a TLS ClientHello
]


@pytest.mark.parametrize("payload", GARBAGE, ids=lambda b: repr(b[:24]))
def test_raw_garbage(srv, payload):
    # the server may keep the connection open (keep-alive, or waiting for
    # the rest of a body); the first response's headers are enough
    got = raw_exchange(srv.port, payload, timeout=2, until_headers=True)
    st = status_of(got)
    assert st is None or 400 <= st < 500 or st == 505, got[:300]
    srv.check_serves()


def test_pipelined_requests(srv):
    body = json.dumps(GOOD).encode()
    one = (f"POST /v2/models/scaler/infer HTTP/1.1\r\nHost: {HOST}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    live = f"GET /v2/health/live HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    last = f"GET /v2/health/ready HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    got = raw_exchange(srv.port, one + live + one + last, timeout=10, half_close=False)
    assert got.count(b"HTTP/1.1 200") == 4, got[:2000]
    srv.check_serves()


def test_half_sent_request_then_close(srv):
    for cut in (10, 40, 100):
        req = (f"POST /v2/models/scaler/infer HTTP/1.1\r\nHost: {HOST}\r\n"
               f"Content-Length: 500\r\n\r\n" + "{" * 200).encode()
        s = socket.create_connection((HOST, srv.port), timeout=5)
        s.sendall(req[:cut])
        s.close()
    srv.check_serves()


def test_many_idle_connections(srv):
    socks = []
    try:
        for _ in range(200):
            socks.append(socket.create_connection((HOST, srv.port), timeout=5))
        srv.check_serves()
    finally:
        for s in socks:
            s.close()
    srv.check_serves()


def test_large_id_and_parameters(srv):
    body = dict(GOOD, id="i" * 100000, parameters={"k" * 1000: "v" * 100000})
    r = post(srv, body)
    assert r.status in (200, 400), r
    if r.status == 200:
        assert r.json()["id"] == "i" * 100000
    srv.check_serves()


def test_many_inputs(srv):
    body = {"inputs": [tensor(f"x{i}", "FP32", [1, 1], [1]) for i in range(5000)]}
    check_error(post(srv, body), 400)
    srv.check_serves()


def test_outputs_bad(srv):
    for outs in ([{"name": "nope"}], [{}], [{"name": 5}], "y", [7]):
        r = post(srv, dict(GOOD, outputs=outs))
        assert r.status in (400,), (outs, r)
        assert "error" in r.json()
    srv.check_serves()


def test_bad_timeout_parameter(srv):
    for t in (-1, "soon", 1.5e300, [1]):
        r = post(srv, dict(GOOD, parameters={"timeout": t}))
        assert r.status in (200, 400), (t, r)
        if r.status == 400:
            assert "timeout" in r.json()["error"], r
    srv.check_serves()


# ---- seeded mutations ------------------------------------------------------------

def _mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip a byte
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:  # insert JSON-ish bytes
            data[pos:pos] = rng.choice([b"[", b"]", b"{", b"}", b",", b":", b'"', b"-", b"1e308",
                                        b"99999999999999999999", b"null", b"\\u0000", b"\x00"])
        elif op == 2:  # delete a range
            del data[pos:pos + rng.randrange(1, 8)]
        elif op == 3:  # truncate
            del data[pos:]
        else:  # duplicate a range
            data[pos:pos] = data[max(0, pos - 16):pos]
    return bytes(data)


def test_seeded_mutations_json(srv):
    import random
    rng = random.Random(20261124)
    seeds = [
        json.dumps({"id": "m", "inputs": [tensor("x", "FP32", [2, 8], X8 + X8)],
                    "outputs": [{"name": "y", "parameters": {"binary_data": False}}],
                    "parameters": {"timeout": 1000000}}).encode(),
        json.dumps({"inputs": [tensor("a", "FP32", [1, 3], [1, 2, 3]),
                               tensor("b", "FP32", [1, 3], [[4, 5, 6]])]}).encode(),
    ]
    paths = [infer_path("scaler"), infer_path("twoinput")]
    statuses = {}
    for i in range(400):
        k = i % 2
        body = _mutate(rng, seeds[k])
        r = srv.post(paths[k], body)
        statuses[r.status] = statuses.get(r.status, 0) + 1
        assert r.status in (200, 400, 404, 504), (body, r)  # 504: a mutated timeout
        if r.status != 200:
            assert "error" in r.json(), (body, r)
    srv.check_serves()
    assert statuses.get(400, 0) > 100, statuses


def test_seeded_mutations_binary(srv):
    import random
    rng = random.Random(7)
    x = struct.pack("<16f", *range(16))
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 8],
                          "parameters": {"binary_data_size": 64}}],
              "parameters": {"binary_data_output": True}}
    hjson = json.dumps(header).encode()
    for i in range(300):
        h = _mutate(rng, hjson) if i % 3 else hjson
        blob = _mutate(rng, x) if i % 2 else x
        hlen = len(h) + rng.choice([0, 0, 0, -1, 1, -len(h) // 2, 64, 10**6])
        body = h + blob
        r = srv.post(infer_path("scaler"), body,
                     headers={"Inference-Header-Content-Length": str(hlen)})
        assert r.status in (200, 400, 404), (hlen, body, r)
    srv.check_serves()
