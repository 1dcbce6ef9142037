"""Every KServe v2 datatype the engine has, through the identity models:
JSON in and out (values exact, INT64/UINT64 over their whole range, FP16
as its float value), binary in and out, and out-of-range values."""
import json

import numpy as np
import pytest

from esclient import NP_DTYPES, binary_request, infer_path, split_binary_response, tensor

I64_MIN, I64_MAX, U64_MAX = -2**63, 2**63 - 1, 2**64 - 1

# datatype -> values sent (shape [2, 3]); all exactly representable.
VALUES = {
    "BOOL": [True, False, True, True, False, False],
    "UINT8": [0, 1, 2, 127, 128, 255],
    "UINT16": [0, 1, 255, 256, 32768, 65535],
    "UINT32": [0, 1, 65535, 65536, 2**31, 2**32 - 1],
    "UINT64": [0, 1, 2**53, 2**53 + 1, 2**63, U64_MAX],
    "INT8": [-128, -1, 0, 1, 100, 127],
    "INT16": [-32768, -1, 0, 1, 1000, 32767],
    "INT32": [-2**31, -1, 0, 1, 2**24 + 1, 2**31 - 1],
    "INT64": [I64_MIN, -2**53 - 1, -1, 0, 2**53 + 1, I64_MAX],
    "FP16": [0.0, 1.0, -2.5, 65504.0, 0.5, -0.000060975551605224609375],
    "FP32": [0.0, 1.5, -2.25, 3.4028234663852886e38, 1.401298464324817e-45, 16777216.0],
    "FP64": [0.0, 0.1, -1e300, 5e-324, 1.7976931348623157e308, 2.0 ** 60 + 1],
}

# Values that are not exactly representable come back as the nearest value
# of the datatype (FP16 0.1 -> 0.0999755859375; FP32 0.1 -> the float32 0.1,
# printed shortest as 0.1).
ROUNDED = {
    "FP16": [0.1, 1 / 3, 1000.1, -0.7, 2.0 ** -24, 3.14159],
    "FP32": [0.1, 1 / 3, 1.1, -0.7, 1e-10, 3.14159],
}

ALL = list(VALUES)


def model(dt):
    return f"identity_{dt.lower()}"


def check_values(dt, got, want):
    """FP16/FP32: each printed value reads back (as float32) to exactly the
    fp16/fp32 value sent, so "0.1" for the fp16 0.0999755859375 is wrong.
    FP64: exact doubles. Integers: exact, as JSON integers. BOOL: true/false."""
    assert len(got) == len(want), (dt, got, want)
    if dt in ("FP16", "FP32"):
        npdt = NP_DTYPES[dt]
        w = [np.float32(np.array(v, dtype=npdt)) for v in want]
        g = [np.float32(v) for v in got]
        assert g == w, (dt, got, want)
    elif dt == "FP64":
        assert [float(v) for v in got] == [float(v) for v in want], (dt, got, want)
    elif dt == "BOOL":
        assert got == want and all(type(v) is bool for v in got), (dt, got, want)
    else:
        assert got == want and all(type(v) is int for v in got), (dt, got, want)


@pytest.mark.parametrize("dt", ALL)
def test_json_roundtrip(server, dt):
    vals = VALUES[dt]
    r = server.infer(model(dt), [tensor("x", dt, [2, 3], vals)])
    assert r.status == 200, r
    out = r.json()["outputs"][0]
    assert out["name"] == "y" and out["datatype"] == dt and out["shape"] == [2, 3], out
    check_values(dt, out["data"], vals)


@pytest.mark.parametrize("dt", ALL)
def test_json_nested_roundtrip(server, dt):
    vals = VALUES[dt]
    nested = [vals[:3], vals[3:]]
    r = server.infer(model(dt), [tensor("x", dt, [2, 3], nested)])
    assert r.status == 200, r
    out = r.json()["outputs"][0]
    flat = np.array(out["data"], dtype=object).reshape(-1).tolist() if out["data"] and \
        isinstance(out["data"][0], list) else out["data"]
    check_values(dt, flat, vals)


def test_int64_extremes_exact(server):
    vals = [I64_MIN, I64_MAX, I64_MIN + 1, I64_MAX - 1, 9007199254740993, -9007199254740993]
    r = server.infer("identity_int64", [tensor("x", "INT64", [1, 6], vals)])
    assert r.status == 200, r
    # parse the raw text ourselves: the digits must be exact
    text = r.text()
    for v in vals:
        assert str(v) in text, f"{v} not printed exactly: {text}"
    assert r.json()["outputs"][0]["data"] == vals


def test_uint64_max_exact(server):
    vals = [U64_MAX, U64_MAX - 1, 2**63, 18446744073709551557]
    r = server.infer("identity_uint64", [tensor("x", "UINT64", [1, 4], vals)])
    assert r.status == 200, r
    assert "18446744073709551615" in r.text(), r
    assert r.json()["outputs"][0]["data"] == vals


@pytest.mark.parametrize("dt", sorted(ROUNDED))
def test_float_rounding(server, dt):
    vals = ROUNDED[dt]
    r = server.infer(model(dt), [tensor("x", dt, [1, 6], vals)])
    assert r.status == 200, r
    check_values(dt, r.json()["outputs"][0]["data"], vals)


def test_fp16_point_one(server):
    r = server.infer("identity_fp16", [tensor("x", "FP16", [1, 1], [0.1])])
    assert r.status == 200, r
    got = r.json()["outputs"][0]["data"]
    # the fp16 value (0.0999755859375, or its float32 spelling 0.099975586), not 0.1
    assert len(got) == 1 and np.float32(got[0]) == np.float32(0.0999755859375), r


def test_fp32_prints_shortest(server):
    r = server.infer("identity_fp32", [tensor("x", "FP32", [1, 2], [1.1, 0.1])])
    assert r.status == 200, r
    assert "1.1000000238418579" not in r.text(), r
    # shortest round-trip form of the float32 values
    assert r.json()["outputs"][0]["data"] == [1.1, 0.1], r


@pytest.mark.parametrize("dt", ALL)
def test_binary_roundtrip(server, dt):
    arr = np.array(VALUES[dt], dtype=NP_DTYPES[dt]).reshape(2, 3)
    header = {"inputs": [{"name": "x", "datatype": dt, "shape": [2, 3],
                          "parameters": {"binary_data_size": arr.nbytes}}],
              "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    body, hdrs = binary_request(header, [arr.tobytes()])
    r = server.post(infer_path(model(dt)), body, headers=hdrs)
    assert r.status == 200, r
    head, blobs = split_binary_response(r)
    out = head["outputs"][0]
    assert out["datatype"] == dt and out["shape"] == [2, 3], head
    assert out["parameters"]["binary_data_size"] == arr.nbytes, head
    assert "data" not in out, head
    got = np.frombuffer(blobs["y"], dtype=NP_DTYPES[dt]).reshape(2, 3)
    assert got.tobytes() == arr.tobytes(), (dt, got, arr)


@pytest.mark.parametrize("dt,bad", [
    ("UINT8", 256), ("UINT8", -1), ("INT8", 128), ("INT8", -129),
    ("UINT16", 65536), ("INT16", 32768), ("UINT32", 2**32), ("INT32", 2**31),
    ("UINT64", 2**64), ("UINT64", -1), ("INT64", 2**63), ("INT64", -2**63 - 1),
    ("INT32", 1.5), ("BOOL", "yes"), ("FP32", "1.0"), ("FP32", None),
])
def test_out_of_range_values_rejected(server, dt, bad):
    r = server.infer(model(dt), [tensor("x", dt, [1, 1], [bad])])
    assert r.status == 400, (dt, bad, r)
    assert "x" in r.json()["error"], r
    server.check_serves()


def test_empty_tensor(server):
    r = server.infer("identity_fp32", [tensor("x", "FP32", [0, 3], [])])
    assert r.status in (200, 400), r
    if r.status == 200:
        out = r.json()["outputs"][0]
        assert out["shape"] == [0, 3] and out["data"] == [], out
    server.check_serves()


def test_large_tensor_json_and_binary(server):
    n = 256 * 1024
    x = (np.arange(n, dtype=np.float32) * np.float32(0.5) - 1000).reshape(512, 512)
    r = server.infer("identity_fp32", [tensor("x", "FP32", [512, 512], x.reshape(-1).tolist())])
    assert r.status == 200, r
    got = np.array(r.json()["outputs"][0]["data"], dtype=np.float32)
    assert np.array_equal(got, x.reshape(-1))
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [512, 512],
                          "parameters": {"binary_data_size": x.nbytes}}],
              "parameters": {"binary_data_output": True}}
    body, hdrs = binary_request(header, [x.tobytes()])
    r = server.post(infer_path("identity_fp32"), body, headers=hdrs)
    assert r.status == 200, r
    _, blobs = split_binary_response(r)
    assert blobs["y"] == x.tobytes()
    assert json.loads(r.body[:int(r.header("Inference-Header-Content-Length"))])


@pytest.mark.parametrize("dt", ["FP16", "FP32", "FP64"])
def test_non_finite_roundtrip(server, dt):
    """JSON has no NaN/Infinity literals; the server takes the strings
    "NaN", "Infinity", "-Infinity" (and says so in its error for the bare
    literals). The same spelling must come back: null would lose which of
    the three it was."""
    r = server.infer(model(dt), [tensor("x", dt, [1, 4], ["NaN", "Infinity", "-Infinity", 1.5])])
    assert r.status == 200, r
    got = r.json()["outputs"][0]["data"]
    assert got == ["NaN", "Infinity", "-Infinity", 1.5], got
    lit = server.post(f"/v2/models/{model(dt)}/infer",
                      b'{"inputs": [{"name": "x", "datatype": "%s", "shape": [1, 1], "data": [NaN]}]}'
                      % dt.encode())
    assert lit.status == 400, lit
