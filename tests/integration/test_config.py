"""Configuration: /v1/config, version policies (latest N, specific, all),
versions served and refused, a model that fails to load, and config
errors."""
import json
import os

import pytest

from esclient import device_entry, model_entry, tensor

AVAILABLE = {"version": None, "state": "AVAILABLE",
             "status": {"error_code": "OK", "error_message": ""}}


def available(v):
    return dict(AVAILABLE, version=str(v))


@pytest.fixture(scope="module")
def policy_server(session_factory, repo):
    cfg = {"model_config_list": [
        model_entry(repo, "v_latest2", base="versioned", policy={"latest": {"num_versions": 2}}),
        model_entry(repo, "v_specific", base="versioned", policy={"specific": {"versions": [1, 3]}}),
        model_entry(repo, "v_all", base="versioned", policy={"all": {}}),
        model_entry(repo, "v_default", base="versioned"),
        {"config": {"name": "scaler", "base_path": os.path.join(repo, "scaler"), "nireq": 4}},
    ]}
    return session_factory(config=cfg, name="policy-server")


def infer_version(srv, model, version=None):
    r = srv.infer(model, [tensor("x", "FP32", [1, 1], [10])], version=version)
    if r.status != 200:
        return r.status, r
    body = r.json()
    return r.status, (body["model_version"], body["outputs"][0]["data"])


@pytest.mark.parametrize("model,served,refused,default", [
    ("v_latest2", [2, 3], [1, 4], 3),
    ("v_specific", [1, 3], [2, 4], 3),
    ("v_all", [1, 2, 3], [4], 3),
    ("v_default", [3], [1, 2, 4], 3),
])
def test_version_policy(policy_server, model, served, refused, default):
    srv = policy_server
    for v in served:
        st, got = infer_version(srv, model, v)
        assert st == 200, (model, v, got)
        assert got == (str(v), [10 + v]), (model, v, got)
        assert srv.get(f"/v2/models/{model}/versions/{v}/ready").status == 200
        assert srv.get(f"/v2/models/{model}/versions/{v}").status == 200
    for v in refused:
        st, r = infer_version(srv, model, v)
        assert st == 404, (model, v, r)
        err = r.json()["error"]
        assert model in err and str(v) in err, err
        assert srv.get(f"/v2/models/{model}/versions/{v}/ready").status == 404, (model, v)
        assert srv.get(f"/v2/models/{model}/versions/{v}").status == 404, (model, v)
        assert srv.post(f"/v1/models/{model}/versions/{v}:predict",
                        {"instances": [[1]]}).status == 404, (model, v)
    st, got = infer_version(srv, model)
    assert st == 200 and got == (str(default), [10 + default]), (model, got)
    md = srv.get(f"/v2/models/{model}").json()
    assert sorted(md["versions"], key=int) == [str(v) for v in served], md


def test_tfs_status_lists_versions(policy_server):
    st = policy_server.get("/v1/models/v_all").json()["model_version_status"]
    assert sorted(st, key=lambda s: int(s["version"])) == [available(v) for v in (1, 2, 3)], st
    st = policy_server.get("/v1/models/v_latest2").json()["model_version_status"]
    avail = sorted(s["version"] for s in st if s["state"] == "AVAILABLE")
    assert avail == ["2", "3"], st


def test_v1_config(policy_server):
    r = policy_server.get("/v1/config")
    assert r.status == 200, r
    cfg = r.json()
    assert set(cfg) == {"v_latest2", "v_specific", "v_all", "v_default", "scaler"}, cfg
    for name, entry in cfg.items():
        assert set(entry) == {"model_version_status"}, entry
        for vs in entry["model_version_status"]:
            assert set(vs) == {"version", "state", "status"}, vs
            assert isinstance(vs["version"], str) and vs["version"].isdigit(), vs
            assert set(vs["status"]) == {"error_code", "error_message"}, vs
    def avail(name):
        return sorted(int(v["version"]) for v in cfg[name]["model_version_status"]
                      if v["state"] == "AVAILABLE")
    assert avail("v_latest2") == [2, 3]
    assert avail("v_specific") == [1, 3]
    assert avail("v_all") == [1, 2, 3]
    assert avail("v_default") == [3]
    assert cfg["scaler"]["model_version_status"] == [available(1)]


def test_v1_config_repository_server(server):
    cfg = server.get("/v1/config").json()
    expect = {"classifier", "scaler", "twoinput", "versioned", "slow"} | \
        {f"identity_{t}" for t in ("bool", "uint8", "uint16", "uint32", "uint64", "int8",
                                   "int16", "int32", "int64", "fp16", "fp32", "fp64")}
    assert set(cfg) == expect, sorted(cfg)
    assert cfg["classifier"]["model_version_status"] == [available(2)], cfg["classifier"]


def test_failed_model_not_ready(server_factory, repo, tmp_path):
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"this is not an onnx model")
    cfg = {"model_config_list": [model_entry(repo, "scaler"),
                                 {"config": {"name": "broken", "base_path": str(tmp_path / "broken")}}]}
    srv = server_factory(config=cfg, name="broken-model-server")
    assert srv.get("/v2/health/live").status == 200
    r = srv.get("/v2/health/ready")
    assert r.status == 503, r
    r = srv.get("/v2/models/broken/ready")
    assert r.status == 503, r
    r = srv.infer("broken", [tensor("x", "FP32", [1, 1], [1])])
    assert r.status == 503, r
    assert "broken" in r.json()["error"], r
    st = srv.get("/v1/models/broken").json()["model_version_status"]
    # TF-Serving's state enum has no FAILED: END with an error status (OVMS does the same)
    assert st[0]["version"] == "1" and st[0]["state"] in ("END", "FAILED"), st
    assert st[0]["status"]["error_code"] != "OK" and st[0]["status"]["error_message"], st
    cfg_all = srv.get("/v1/config").json()
    assert cfg_all["broken"]["model_version_status"][0]["state"] in ("END", "FAILED"), cfg_all
    assert cfg_all["broken"]["model_version_status"][0]["status"]["error_code"] != "OK", cfg_all
    from esclient import metric_sum, parse_metrics
    m = parse_metrics(srv.metrics())
    assert metric_sum(m, "edgeserve_model_load_failures_total", model="broken") >= 1
    assert metric_sum(m, "edgeserve_model_version_state", model="broken", version="1",
                      state="FAILED") == 1
    assert metric_sum(m, "edgeserve_model_version_state", model="broken", version="1",
                      state="AVAILABLE") == 0
    # the healthy model still serves
    srv.check_serves()


@pytest.mark.parametrize("where", ["model", "top", "device", "policy"])
def test_config_unknown_key_rejected(server_factory, repo, where):
    model = {"name": "scaler", "base_path": os.path.join(repo, "scaler")}
    cfg = {"model_config_list": [{"config": model}], "devices": [device_entry("CPU")]}
    if where == "model":
        model["bogus_key"] = 1
    elif where == "top":
        cfg["bogus_key"] = 1
    elif where == "device":
        cfg["devices"][0]["bogus_key"] = 1
    else:
        model["model_version_policy"] = {"latest": {"num_versions": 1, "bogus_key": 1}}
    srv = server_factory(config=cfg, wait_ready=False, name=f"bad-config-{where}")
    rc = srv.wait_exit(30)
    srv.expect_exit = True
    assert rc != 0, srv.tail()
    assert "bogus_key" in srv.tail(), srv.tail()


def test_config_relative_base_path(server_factory, repo, tmp_path):
    """Relative base_paths are relative to the config file's directory."""
    import shutil
    shutil.copytree(os.path.join(repo, "scaler"), tmp_path / "models" / "scaler")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_config_list": [
        {"config": {"name": "scaler", "base_path": "models/scaler"}}]}))
    srv = server_factory(["--config_path", str(path)], name="relative-path-server")
    srv.check_serves()


def test_config_unknown_device_rejected(server_factory, repo):
    cfg = {"model_config_list": [model_entry(repo, "scaler", device="NOPE")],
           "devices": [device_entry("CPU")]}
    srv = server_factory(config=cfg, wait_ready=False, name="bad-device-server")
    rc = srv.wait_exit(30)
    srv.expect_exit = True
    assert rc != 0, srv.tail()
    assert "NOPE" in srv.tail(), srv.tail()


def test_single_model_flags(server_factory, repo):
    srv = server_factory(["--model_name", "myscaler", "--model_path", os.path.join(repo, "scaler")],
                         name="single-model-server")
    r = srv.infer("myscaler", [tensor("x", "FP32", [1, 8], [1, 2, 3, 4, 5, 6, 7, 8])])
    assert r.status == 200, r
    assert srv.get("/v2/models/scaler").status == 404
    assert set(srv.get("/v1/config").json()) == {"myscaler"}
