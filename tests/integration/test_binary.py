"""The KServe binary tensor data extension, both directions."""
import json

import numpy as np

from esclient import binary_request, infer_path, scaler_expected, split_binary_response, tensor

X = np.arange(16, dtype=np.float32).reshape(2, 8) * np.float32(0.5) - 3


def test_binary_input_json_output(server):
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 8],
                          "parameters": {"binary_data_size": X.nbytes}}]}
    body, hdrs = binary_request(header, [X.tobytes()])
    r = server.post(infer_path("scaler"), body, headers=hdrs)
    assert r.status == 200, r
    # no binary output asked for: a plain JSON response
    assert r.header("Inference-Header-Content-Length") is None, r.headers
    out = r.json()["outputs"][0]
    assert out["shape"] == [2, 8]
    assert np.array_equal(np.array(out["data"], np.float32), scaler_expected(X).reshape(-1))


def test_binary_input_without_size_header_is_rejected(server):
    """binary_data_size given but no Inference-Header-Content-Length: the
    body is not JSON, so this is a 400, not a crash."""
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 8],
                          "parameters": {"binary_data_size": X.nbytes}}]}
    body, _ = binary_request(header, [X.tobytes()])
    r = server.post(infer_path("scaler"), body, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 400, r
    server.check_serves()


def test_json_input_binary_data_output(server):
    r = server.infer("scaler", [tensor("x", "FP32", [2, 8], X.reshape(-1).tolist())],
                     parameters={"binary_data_output": True})
    assert r.status == 200, r
    assert r.header("Inference-Header-Content-Length") is not None, r.headers
    head, blobs = split_binary_response(r)
    out = head["outputs"][0]
    assert out["name"] == "y" and out["datatype"] == "FP32" and out["shape"] == [2, 8], head
    assert out["parameters"]["binary_data_size"] == 64, head
    assert "data" not in out, head
    got = np.frombuffer(blobs["y"], dtype="<f4").reshape(2, 8)
    assert np.array_equal(got, scaler_expected(X))


def test_binary_both_ways(server):
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 8],
                          "parameters": {"binary_data_size": X.nbytes}}],
              "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
              "id": "bin-1"}
    body, hdrs = binary_request(header, [X.tobytes()])
    r = server.post(infer_path("scaler"), body, headers=hdrs)
    assert r.status == 200, r
    head, blobs = split_binary_response(r)
    assert head["id"] == "bin-1", head
    assert np.array_equal(np.frombuffer(blobs["y"], "<f4").reshape(2, 8), scaler_expected(X))


def test_per_output_binary_data_mixed(server):
    a = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    b = np.array([[0.5, 0.25, 2], [-1, 10, 0]], np.float32)
    r = server.infer("twoinput", [tensor("a", "FP32", [2, 3], a.reshape(-1).tolist()),
                                  tensor("b", "FP32", [2, 3], b.reshape(-1).tolist())],
                     outputs=[{"name": "sum", "parameters": {"binary_data": False}},
                              {"name": "prod", "parameters": {"binary_data": True}}])
    assert r.status == 200, r
    head, blobs = split_binary_response(r)
    outs = {o["name"]: o for o in head["outputs"]}
    assert set(outs) == {"sum", "prod"}, head
    assert outs["sum"]["data"] == (a + b).reshape(-1).tolist(), outs["sum"]
    assert "binary_data_size" not in (outs["sum"].get("parameters") or {}), outs["sum"]
    assert outs["prod"]["parameters"]["binary_data_size"] == 24, outs["prod"]
    assert set(blobs) == {"prod"}
    assert np.array_equal(np.frombuffer(blobs["prod"], "<f4").reshape(2, 3), a * b)


def test_binary_data_output_overridden_per_output(server):
    """binary_data_output true for all, but one output asks for JSON."""
    a = np.ones((1, 3), np.float32)
    b = np.full((1, 3), 2, np.float32)
    r = server.infer("twoinput", [tensor("a", "FP32", [1, 3], a.reshape(-1).tolist()),
                                  tensor("b", "FP32", [1, 3], b.reshape(-1).tolist())],
                     outputs=[{"name": "sum", "parameters": {"binary_data": False}},
                              {"name": "prod"}],
                     parameters={"binary_data_output": True})
    assert r.status == 200, r
    head, blobs = split_binary_response(r)
    outs = {o["name"]: o for o in head["outputs"]}
    assert outs["sum"]["data"] == [3, 3, 3], head
    assert set(blobs) == {"prod"}, head
    assert np.frombuffer(blobs["prod"], "<f4").tolist() == [2, 2, 2]


def test_two_binary_inputs(server):
    a = np.array([[1, 2, 3]], np.float32)
    b = np.array([[4, 5, 6]], np.float32)
    header = {"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}},
        {"name": "b", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}}],
        "parameters": {"binary_data_output": True}}
    body, hdrs = binary_request(header, [a.tobytes(), b.tobytes()])
    r = server.post(infer_path("twoinput"), body, headers=hdrs)
    assert r.status == 200, r
    head, blobs = split_binary_response(r)
    assert np.frombuffer(blobs["sum"], "<f4").tolist() == [5, 7, 9], head
    assert np.frombuffer(blobs["prod"], "<f4").tolist() == [4, 10, 18], head


def test_mixed_binary_and_json_inputs(server):
    b = np.array([[4, 5, 6]], np.float32)
    header = {"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
        {"name": "b", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}}]}
    body, hdrs = binary_request(header, [b.tobytes()])
    r = server.post(infer_path("twoinput"), body, headers=hdrs)
    assert r.status == 200, r
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs == {"sum": [5, 7, 9], "prod": [4, 10, 18]}, outs


def test_binary_size_mismatch_rejected(server):
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 8],
                          "parameters": {"binary_data_size": 60}}]}
    body, hdrs = binary_request(header, [X.tobytes()[:60]])
    r = server.post(infer_path("scaler"), body, headers=hdrs)
    assert r.status == 400, r
    err = r.json()["error"]
    assert "x" in err and ("64" in err or "60" in err), err
    server.check_serves()


def test_binary_size_past_body_rejected(server):
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 8],
                          "parameters": {"binary_data_size": 64}}]}
    body, hdrs = binary_request(header, [X.tobytes()[:32]])
    r = server.post(infer_path("scaler"), body, headers=hdrs)
    assert r.status == 400, r
    server.check_serves()


def test_trailing_bytes_after_binary_rejected(server):
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 8],
                          "parameters": {"binary_data_size": 64}}]}
    body, hdrs = binary_request(header, [X.tobytes() + b"\0" * 8])
    r = server.post(infer_path("scaler"), body, headers=hdrs)
    assert r.status in (200, 400), r
    server.check_serves()


def test_binary_response_header_value_is_json_length(server):
    r = server.infer("identity_int64", [tensor("x", "INT64", [1, 2], [-(2**63), 2**63 - 1])],
                     parameters={"binary_data_output": True})
    assert r.status == 200, r
    n = int(r.header("Inference-Header-Content-Length"))
    head = json.loads(r.body[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 16
    assert np.frombuffer(r.body[n:], "<i8").tolist() == [-(2**63), 2**63 - 1]
