"""
Every counter of the metrics segment matches after exactly 1,000 requests
of a known mix of routes and statuses, database included (issue 8).

Counts are taken as differences between two `apiarystat -j` readings, so
the fixture's own readiness probes (before the first reading) do not
count; nothing else talks to the server in between.  Reads go over raw
sockets, so the bytes sent and received are known exactly; writes go
through the conftest helper (create_user), which a later branch extends
with an Authorization header.  bytes_out is then checked against the sum
of the access log's "bytes" for the same 1,000 requests.
"""
import json
import os
import subprocess

from conftest import APIARY_BIN, get, scaled, wait_for

from .conftest import create_user

STAT_BIN = os.path.join(os.path.dirname(APIARY_BIN), "apiarystat")


def stat_json(name):
    r = subprocess.run([STAT_BIN, "-n", name, "-j"], capture_output=True,
                       text=True, timeout=scaled(20), stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def by_route(doc):
    return {(r["method"], r["route"]): r for r in doc["routes"]}


def test_every_counter_exact_after_1000_requests(start_api):
    srv = start_api()
    name = "test-%d" % srv.port
    log_before = len(srv.access_log_lines())
    before = stat_json(name)

    # 50 writes through the helper: 201 each, one statement each
    users = [create_user(srv.client, name="M%d" % i) for i in range(50)]
    sent = 0
    plan = (
        [("/health", 200)] * 400
        + [("/users/%d" % users[i % 50]["id"], 200) for i in range(150)]
        + [("/users/987654321", 404)] * 100
        + [("/no/such/path", 404)] * 100
        + [("/users?page=1&per_page=5", 200)] * 100
        + [("/users/abc", 400)] * 50
    )
    assert len(plan) == 900
    conns = [srv.connect() for _ in range(4)]
    try:
        for i, (path, status) in enumerate(plan):
            c = conns[i % 4]
            req = get(path)
            sent += len(req)
            r = c.request(req)
            assert r.status == status, (path, r)
        # 50 x 405 on the last connection, pipelined
        c = conns[0]
        req = get("/health", method=b"POST", extra=b"Content-Length: 0\r\n")
        c.send(req * 50)
        sent += 50 * len(req)
        for _ in range(50):
            assert c.read_final_response().status == 405
    finally:
        for c in conns:
            c.close()

    def settled():
        doc = stat_json(name)
        # database counters are copied before the worker sleeps
        return doc if doc["requests"] - before["requests"] == 1000 else None

    after = wait_for(settled, 5, "1000 requests in the segment")
    b, a = by_route(before), by_route(after)

    def delta(method, route, cls):
        return a[(method, route)][cls] - b[(method, route)][cls]

    expected = {
        ("GET", "/health", "2xx"): 400,
        ("GET", "/users/{id}", "2xx"): 150,
        ("GET", "/users/{id}", "4xx"): 150,  # 100 x 404 + 50 x 400
        ("GET", "/users", "2xx"): 100,
        ("POST", "/users", "2xx"): 50,
        ("-", "(not found)", "4xx"): 100,
        ("-", "(method not allowed)", "4xx"): 50,
    }
    for (method, route) in a:
        for cls in ("1xx", "2xx", "3xx", "4xx", "5xx"):
            want = expected.get((method, route, cls), 0)
            assert delta(method, route, cls) == want, (method, route, cls)
    assert after["requests"] - before["requests"] == 1000
    rs = {k: after["requests_by_status"][k] - before["requests_by_status"][k]
          for k in after["requests_by_status"]}
    assert rs == {"1xx": 0, "2xx": 700, "3xx": 0, "4xx": 300, "5xx": 0}
    assert after["latency"]["count"] - before["latency"]["count"] == 1000

    ca, cb = after["counters"], before["counters"]
    dc = {k: ca[k] - cb[k] for k in ca}
    # The shared cache (issue 7): the first GET of each of the 50 users
    # misses and fills (the requests are sequential, so the fill is
    # published before the next GET of that user), the other 100 hit;
    # the 100 GETs of a missing user miss every time (404s are not
    # cached).  One statement per database request: 50 fills + 100 not
    # found + 100 lists + 50 inserts; /users/abc is refused before the
    # cache and the database.
    def queries():
        return stat_json(name)["counters"]["db_queries"] - cb["db_queries"]
    wait_for(lambda: queries() >= 300, 5,
             "the database queries copied into the segment")
    final = stat_json(name)["counters"]
    dc = {k: final[k] - cb[k] for k in final}
    assert dc["db_queries"] == 300
    assert (dc["cache_hits"], dc["cache_misses"], dc["cache_inserts"]) == (100, 150, 50)
    for k in ("db_errors", "db_reconnects", "requests_client_gone",
              "requests_timeout", "requests_rejected", "log_dropped",
              "cache_evictions", "cache_invalidations", "cache_retries",
              "cache_reclaimed", "cache_stale_fills", "cache_flushes",
              "ratelimit_limited", "ratelimit_allowed", "auth_rejected"):
        assert dc[k] == 0, (k, dc[k])
    assert dc["bytes_in"] > sent  # plus the helper's 50 writes
    # 4 raw connections and the helper's keep-alive session (1 or more)
    assert dc["conn_accepted"] >= 5
    assert after["worker_restarts"] == before["worker_restarts"] == 0

    # bytes_out: the access log's bytes of the same 1,000 requests
    def logged():
        lines = srv.access_log_lines()[log_before:]
        return lines if len(lines) >= 1000 else None

    lines = wait_for(logged, 5, "1000 access log lines")
    assert len(lines) == 1000
    assert dc["bytes_out"] == sum(ln["bytes"] for ln in lines)
    assert after["gauges"]["db_up"] == 2
