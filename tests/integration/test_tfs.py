"""TF-Serving REST: :predict in row and columnar formats for one and two
inputs, model status and metadata."""
import json

import numpy as np

from esclient import scaler_expected

X1 = [1, 2, 3, 4, 5, 6, 7, 8]
X2 = [-1, 0, 0.5, 2, 4, 8, 16, 32]


def close32(got, want):
    return np.array_equal(np.array(got, np.float32), np.asarray(want, np.float32))


def test_predict_row_one_input(server):
    r = server.post("/v1/models/scaler:predict", {"instances": [X1, X2]})
    assert r.status == 200, r
    preds = r.json()["predictions"]
    assert len(preds) == 2, preds
    assert close32(preds, scaler_expected([X1, X2])), preds


def test_predict_row_named_one_input(server):
    r = server.post("/v1/models/scaler:predict", {"instances": [{"x": X1}]})
    assert r.status == 200, r
    preds = r.json()["predictions"]
    assert len(preds) == 1, preds
    row = preds[0]["y"] if isinstance(preds[0], dict) else preds[0]
    assert close32(row, scaler_expected(X1)), preds


def test_predict_columnar_one_input(server):
    r = server.post("/v1/models/scaler:predict", {"inputs": [X1, X2]})
    assert r.status == 200, r
    outs = r.json()["outputs"]
    assert close32(outs, scaler_expected([X1, X2])), outs


def test_predict_columnar_named_one_input(server):
    r = server.post("/v1/models/scaler:predict", {"inputs": {"x": [X1]}})
    assert r.status == 200, r
    outs = r.json()["outputs"]
    if isinstance(outs, dict):
        outs = outs["y"]
    assert close32(outs, scaler_expected([X1])), outs


def test_predict_row_two_inputs(server):
    body = {"instances": [{"a": [1, 2, 3], "b": [4, 5, 6]},
                          {"a": [0.5, 1, 1.5], "b": [2, 2, 2]}]}
    r = server.post("/v1/models/twoinput:predict", body)
    assert r.status == 200, r
    preds = r.json()["predictions"]
    assert preds == [{"sum": [5, 7, 9], "prod": [4, 10, 18]},
                     {"sum": [2.5, 3, 3.5], "prod": [1, 2, 3]}], preds


def test_predict_columnar_two_inputs(server):
    body = {"inputs": {"a": [[1, 2, 3], [0.5, 1, 1.5]], "b": [[4, 5, 6], [2, 2, 2]]}}
    r = server.post("/v1/models/twoinput:predict", body)
    assert r.status == 200, r
    outs = r.json()["outputs"]
    assert outs == {"sum": [[5, 7, 9], [2.5, 3, 3.5]], "prod": [[4, 10, 18], [1, 2, 3]]}, outs


def test_predict_signature_name(server):
    r = server.post("/v1/models/scaler:predict",
                    {"signature_name": "serving_default", "instances": [X1]})
    assert r.status == 200, r
    r = server.post("/v1/models/scaler:predict", {"signature_name": "other", "instances": [X1]})
    assert r.status == 400, r
    assert "other" in r.json()["error"], r


def test_predict_with_version(server):
    r = server.post("/v1/models/scaler/versions/1:predict", {"instances": [X1]})
    assert r.status == 200, r
    assert close32(r.json()["predictions"], scaler_expected([X1]))
    r = server.post("/v1/models/scaler/versions/9:predict", {"instances": [X1]})
    assert r.status == 404, r
    assert "error" in r.json()


def test_predict_integer_model(server):
    r = server.post("/v1/models/identity_int64:predict",
                    {"instances": [[-(2**63), 2**63 - 1], [0, 1]]})
    assert r.status == 200, r
    assert r.json()["predictions"] == [[-(2**63), 2**63 - 1], [0, 1]], r


def test_predict_errors(server):
    r = server.post("/v1/models/nosuch:predict", {"instances": [X1]})
    assert r.status == 404, r
    assert "nosuch" in r.json()["error"], r
    r = server.post("/v1/models/scaler:predict", {"instances": [[1, 2, 3]]})
    assert r.status == 400, r
    assert "error" in r.json(), r
    r = server.post("/v1/models/scaler:predict", {"neither": 1})
    assert r.status == 400, r
    r = server.post("/v1/models/scaler:predict", b"{\"instances\": [[1,2")
    assert r.status == 400, r
    r = server.post("/v1/models/scaler:predict", {"instances": [X1], "inputs": [X1]})
    assert r.status == 400, r
    r = server.post("/v1/models/twoinput:predict", {"instances": [{"a": [1, 2, 3]}]})
    assert r.status == 400, r
    assert "b" in r.json()["error"], r
    r = server.post("/v1/models/scaler:predict", {"instances": [X1, X1[:7]]})
    assert r.status == 400, r
    server.check_serves()


def test_model_status(server):
    r = server.get("/v1/models/scaler")
    assert r.status == 200, r
    st = r.json()
    assert st == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}]}, st
    r = server.get("/v1/models/scaler/versions/1")
    assert r.status == 200, r
    assert r.json()["model_version_status"][0]["version"] == "1"


def test_model_status_unknown(server):
    r = server.get("/v1/models/nosuch")
    assert r.status == 404, r
    assert "nosuch" in r.json()["error"]
    r = server.get("/v1/models/scaler/versions/5")
    assert r.status == 404, r


def test_model_metadata(server):
    r = server.get("/v1/models/scaler/metadata")
    assert r.status == 200, r
    md = r.json()
    assert md["model_spec"]["name"] == "scaler", md
    assert str(md["model_spec"].get("version")) == "1", md
    sig = md["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(sig["inputs"]) == {"x"}, sig
    assert set(sig["outputs"]) == {"y"}, sig
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT", sig
    text = json.dumps(sig["inputs"]["x"])
    assert "8" in text, sig
    r = server.get("/v1/models/scaler/versions/1/metadata")
    assert r.status == 200, r
    r = server.get("/v1/models/nosuch/metadata")
    assert r.status == 404, r
