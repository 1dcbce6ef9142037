"""Devices and scheduling: a streams=1 device runs one request at a time
(proven from the server's own per-request timestamps), streams=2 runs two,
a full queue rejects at once with 503 + Retry-After, and a request whose
deadline passes in the queue gets 504 without ever running."""

from esclient import (concurrently, device_load, metric_sum, parse_metrics, poll_until,
                      run_interval, send_on, slow_config, tensor, Inflight)

SLOW_BODY = {"inputs": [tensor("x", "FP32", [1, 1], [0.5])]}


def slow_request(srv, rid, parameters=None, conn=None):
    body = dict(SLOW_BODY, id=rid)
    if parameters:
        body["parameters"] = parameters
    if conn is None:
        return srv.post("/v2/models/slow/infer", body, timeout=60)
    return send_on(conn, "POST", "/v2/models/slow/infer", body)


def burst(srv, ids, parameters=None):
    """Connects first, then fires all requests together."""
    conns = [srv.connection(timeout=60) for _ in ids]
    for c in conns:
        c.connect()
    try:
        return concurrently([lambda c=c, i=i: slow_request(srv, i, parameters, c)
                             for c, i in zip(conns, ids)])
    finally:
        for c in conns:
            c.close()


def intervals(srv, ids):
    evs = srv.wait_events(lambda e: e.get("event") == "request" and e.get("id") in ids,
                          len(ids), 30, "access log lines of the burst")
    byid = {e["id"]: e for e in evs}
    out = []
    for i in ids:
        s, e = run_interval(byid[i])
        assert s and e, f"no device run timestamps in the access log: {byid[i]}"
        out.append((s, e, byid[i].get("stream"), i))
    return out


def overlapping_pairs(iv):
    iv = sorted(iv)
    pairs = []
    for a in range(len(iv)):
        for b in range(a + 1, len(iv)):
            if iv[b][0] < iv[a][1]:
                pairs.append((iv[a], iv[b]))
    return pairs


def test_sequential_device_never_overlaps(server_factory, repo):
    srv = server_factory(config=slow_config(repo, streams=1, max_queue_size=64),
                         name="streams1-server")
    ids = [f"seq-{i}" for i in range(6)]
    res = burst(srv, ids)
    for r in res:
        assert not isinstance(r, BaseException), r
        assert r.status == 200, r
    iv = intervals(srv, ids)
    for s, e, stream, i in iv:
        assert 0 < s < e, (i, s, e)
        assert stream in (0, None), iv
    assert not overlapping_pairs(iv), f"overlapping runs on a streams=1 device: {sorted(iv)}"
    evs = srv.request_events(model="slow")
    assert all(e["device"] == "NPU0" for e in evs), evs


def test_two_streams_overlap(server_factory, repo):
    srv = server_factory(config=slow_config(repo, streams=2, max_queue_size=64),
                         name="streams2-server")
    ids = [f"par-{i}" for i in range(6)]
    res = burst(srv, ids)
    for r in res:
        assert not isinstance(r, BaseException), r
        assert r.status == 200, r
    iv = intervals(srv, ids)
    assert overlapping_pairs(iv), f"no two runs overlapped on a streams=2 device: {sorted(iv)}"
    assert {x[2] for x in iv} == {0, 1}, iv
    # never more than two at once
    points = sorted([(s, 1) for s, _, _, _ in iv] + [(e, -1) for _, e, _, _ in iv],
                    key=lambda p: (p[0], p[1]))
    level = peak = 0
    for _, d in points:
        level += d
        peak = max(peak, level)
    assert peak <= 2, iv


def test_queue_full_503(server_factory, repo):
    srv = server_factory(config=slow_config(repo, streams=1, max_queue_size=1),
                         name="queue1-server")
    ids = [f"qf-{i}" for i in range(12)]
    res = burst(srv, ids)
    statuses = []
    for r in res:
        assert not isinstance(r, BaseException), r
        statuses.append(r.status)
        assert r.status in (200, 503), r
        if r.status == 503:
            ra = r.header("Retry-After")
            assert ra is not None and ra.strip().isdigit(), r.headers
            err = r.json()["error"]
            assert "queue" in err.lower(), err
    assert statuses.count(503) >= 1, statuses
    assert statuses.count(200) >= 1, statuses
    # rejected requests never ran
    rejected = [i for i, r in zip(ids, res) if r.status == 503]
    s = parse_metrics(srv.metrics())
    assert metric_sum(s, "edgeserve_queue_rejections_total", device="NPU0") == len(rejected)
    assert metric_sum(s, "edgeserve_requests_total", model="slow", status_class="5xx",
                      reason="queue_full") == len(rejected)
    assert metric_sum(s, "edgeserve_queue_capacity", device="NPU0") == 1
    for i in rejected:
        for e in srv.request_events(id=i):
            assert e["status"] == 503 and run_interval(e) == (None, None), e
    srv.check_serves()


def test_deadline_timeout_parameter_504(server_factory, repo):
    srv = server_factory(config=slow_config(repo, streams=1, max_queue_size=16),
                         name="deadline-server")
    ahead = Inflight()
    for i in range(3):
        ahead.start(f"ahead-{i}", lambda i=i: slow_request(srv, f"ahead-{i}"))
    # one running and at least one queued: >= one full slow run ahead
    poll_until(lambda: device_load(srv, "NPU0") >= 3, 15, "3 slow requests on NPU0")
    # KServe "timeout" parameter, in microseconds: 2 ms
    r = slow_request(srv, "late-1", parameters={"timeout": 2000})
    assert r.status == 504, r
    err = r.json()["error"]
    assert "deadline" in err.lower() or "timeout" in err.lower() or "timed out" in err.lower(), err
    for k, v in ahead.join().items():
        assert not isinstance(v, BaseException), v
        assert v.status == 200, (k, v)
    ev = srv.wait_event(lambda e: e.get("event") == "request" and e.get("id") == "late-1", 10,
                        "access log of the late request")
    assert ev["status"] == 504 and run_interval(ev) == (None, None), ev
    s = parse_metrics(srv.metrics())
    assert metric_sum(s, "edgeserve_deadline_exceeded_total", model="slow", device="NPU0") >= 1
    assert metric_sum(s, "edgeserve_requests_total", model="slow", status_class="5xx",
                      reason="deadline_exceeded") >= 1
    # a generous timeout is fine
    r = slow_request(srv, "ok-1", parameters={"timeout": 30_000_000})
    assert r.status == 200, r


def test_deadline_default_timeout_504(server_factory, repo):
    srv = server_factory(["--default_timeout_ms", "5"],
                         config=slow_config(repo, streams=1, max_queue_size=16),
                         name="default-timeout-server")
    ids = [f"dt-{i}" for i in range(5)]
    res = burst(srv, ids)
    statuses = [r.status if not isinstance(r, BaseException) else repr(r) for r in res]
    assert set(statuses) <= {200, 504}, statuses
    # each run takes longer than 5 ms, so at most the first can make it
    assert statuses.count(504) >= len(ids) - 1, statuses
    for r in res:
        if r.status == 504:
            assert "error" in r.json(), r
    iv = srv.wait_events(lambda e: e.get("event") == "request" and e.get("id") in ids,
                         len(ids), 30, "access log lines")
    ran = [e for e in iv if run_interval(e)[0]]
    assert len(ran) == statuses.count(200), (iv, statuses)


def test_timeout_parameter_only_lowers(server_factory, repo):
    """A request may ask for less time than --default_timeout_ms, not more."""
    srv = server_factory(["--default_timeout_ms", "5"],
                         config=slow_config(repo, streams=1, max_queue_size=16),
                         name="only-lower-server")
    ids = ["lower-a", "lower-b", "lower-c"]
    res = burst(srv, ids, parameters={"timeout": 60_000_000})
    statuses = [r.status if not isinstance(r, BaseException) else repr(r) for r in res]
    assert set(statuses) <= {200, 504}, statuses
    # three 40 ms runs cannot all start within 5 ms of arriving
    assert statuses.count(504) >= 2, (statuses, [r.text() for r in res])


def test_sequential_device_fifo(server_factory, repo):
    """A streams=1 device runs requests in arrival order: each is sent only
    once the previous one is inside the server, and they start in that order."""
    srv = server_factory(config=slow_config(repo, streams=1, max_queue_size=64),
                         name="fifo-server")
    ids = [f"fifo-{i}" for i in range(5)]
    flight = Inflight()
    for k, rid in enumerate(ids):
        flight.start(rid, lambda rid=rid: slow_request(srv, rid))
        poll_until(lambda k=k: len(flight.results) + device_load(srv, "NPU0") >= k + 1, 15,
                   f"request {rid} inside the server")
    for rid, r in flight.join(60).items():
        assert not isinstance(r, BaseException) and r.status == 200, (rid, r)
    iv = intervals(srv, ids)
    starts = [s for s, _, _, _ in iv]
    assert starts == sorted(starts), f"not run in arrival order: {iv}"
    assert not overlapping_pairs(iv), iv
