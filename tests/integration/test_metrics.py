"""
The metrics segment seen from outside (SPEC 5, issue 8): apiarystat and
GET /metrics against a running apiaryd without a database.

- GET /metrics and `apiarystat -p` pass Debian's `promtool check metrics`;
- counts, gauges and the histogram agree with the requests sent;
- a worker killed with SIGKILL loses none of its counts (folded at reap);
- `apiarystat` notices a restarted master and attaches to the new one;
- the segment is mode 0640: a user of its group reads it, others are told
  why they cannot;
- no server: a clear message and exit status 1.

The exact count of a known mix of 1,000 requests, database included, is in
api/test_metrics_db.py.
"""
import json
import os
import pwd
import grp
import re
import shutil
import signal
import subprocess

import pytest

from conftest import APIARY_BIN, RawClient, get, scaled, wait_for

STAT_BIN = os.path.join(os.path.dirname(APIARY_BIN), "apiarystat")


def stat(name, *args, check=True, user=None):
    """Runs apiarystat -n NAME ARGS; returns the CompletedProcess."""
    cmd = [STAT_BIN, "-n", name] + list(args)
    if user:
        cmd = ["setpriv", "--reuid=%s" % user[0], "--regid=%s" % user[1],
               "--clear-groups"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(20),
                       stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r


def stat_json(name):
    return json.loads(stat(name, "-j").stdout)


def route_count(doc, method, route, cls):
    for r in doc["routes"]:
        if r["method"] == method and r["route"] == route:
            return r[cls]
    raise AssertionError("route %s %s not in %r" % (method, route, doc["routes"]))


def promtool_check(text):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: scripts/deps.sh test installs prometheus")
    r = subprocess.run([promtool, "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=scaled(30))
    assert r.returncode == 0, "promtool: %s %s\n%s" % (r.stdout, r.stderr, text[:3000])
    # promtool prints lint problems (naming, units) even when it exits 0
    assert r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


def name_of(srv):
    return "test-%d" % srv.port


def test_no_server_is_a_clear_error():
    r = stat("nobody-runs-this", "-1", check=False)
    assert r.returncode == 1
    assert 'no apiaryd named "nobody-runs-this" is running' in r.stderr
    r = stat("bad/name", "-j", check=False)
    assert r.returncode == 1 and "bad instance name" in r.stderr


def test_metrics_endpoint_and_apiarystat_pass_promtool(server):
    with server.connect() as c:
        for path in ("/health", "/health", "/nope"):
            c.request(get(path))
        resp = c.request(get("/metrics"))
    assert resp.status == 200
    assert resp.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    text = resp.body.decode()
    promtool_check(text)
    assert re.search(r'^apiary_build_info\{version="[^"]+",layout="1",instance="%s"\} 1$'
                     % name_of(server), text, re.M)
    assert re.search(r'^apiary_http_requests_total\{method="GET",route="/health",'
                     r'status="2xx"\} [1-9]', text, re.M)
    assert 'le="+Inf"' in text and "apiary_http_request_duration_seconds_sum" in text
    for field in ("cache_hits", "cache_misses", "cache_inserts", "cache_evictions",
                  "cache_invalidations", "cache_retries", "cache_reclaimed",
                  "cache_stale_fills_refused", "cache_flushes",
                  "ratelimit_limited", "ratelimit_allowed", "auth_rejected"):
        assert "\n%s_total " % ("apiary_" + field) in text, field
    promtool_check(stat(name_of(server), "-p").stdout)
    # -f keeps the matching families only, and what remains still lints
    only = stat(name_of(server), "-p", "-f", "apiary_http_request_duration*").stdout
    assert "apiary_http_requests_total" not in only
    assert "apiary_http_request_duration_seconds_bucket" in only
    promtool_check(only)


def test_counts_gauges_and_histogram(server):
    name = name_of(server)
    before = stat_json(name)
    sent = b""
    got = 0
    with server.connect() as c:
        for i in range(30):
            req = get("/health")
            sent += req
            r = c.request(req)
            got += len(r.raw) + 4 + len(r.body)
        for i in range(7):
            req = get("/missing/%d" % i)
            sent += req
            r = c.request(req)
            got += len(r.raw) + 4 + len(r.body)
        # a write method: bytes counted exactly as sent, so no token
        req = get("/health", method=b"DELETE")
        sent += req
        c.send(req, auth=False)
        r = c.read_final_response()
        got += len(r.raw) + 4 + len(r.body)
    after = stat_json(name)
    assert after["requests"] - before["requests"] == 38
    assert route_count(after, "GET", "/health", "2xx") - \
        route_count(before, "GET", "/health", "2xx") == 30
    assert route_count(after, "-", "(not found)", "4xx") - \
        route_count(before, "-", "(not found)", "4xx") == 7
    assert route_count(after, "-", "(method not allowed)", "4xx") - \
        route_count(before, "-", "(method not allowed)", "4xx") == 1
    assert after["counters"]["bytes_out"] - before["counters"]["bytes_out"] == got
    assert after["counters"]["bytes_in"] - before["counters"]["bytes_in"] == len(sent)
    assert after["latency"]["count"] - before["latency"]["count"] == 38
    assert after["generation"] == before["generation"]

    # gauges: three idle keep-alive connections, then none
    conns = [server.connect() for _ in range(3)]
    try:
        for c in conns:
            assert c.request(get("/health")).status == 200
        wait_for(lambda: stat_json(name)["gauges"]["conn_idle"] == 3, 5,
                 "3 idle connections in the segment")
        assert stat_json(name)["gauges"]["conn_active"] == 3
    finally:
        for c in conns:
            c.close()
    wait_for(lambda: stat_json(name)["gauges"]["conn_active"] == 0, 5,
             "no open connection in the segment")
    one = stat(name, "-1").stdout
    assert re.search(r"^route:GET /health:2xx\s+\d+$", one, re.M), one
    assert re.search(r"^\s+1\s+1\s+\d+\s", one, re.M), one  # worker table


def test_counters_survive_worker_sigkill(server):
    name = name_of(server)
    before = stat_json(name)
    with server.connect() as c:
        for _ in range(50):
            assert c.request(get("/health")).status == 200
    victims = server.workers()
    server.expected_deaths += 1
    os.kill(victims[1], signal.SIGKILL)
    server.wait_workers(2)
    wait_for(lambda: stat_json(name)["worker_restarts"] == 1, 5,
             "the restart counted")
    after = stat_json(name)
    assert after["requests"] - before["requests"] == 50
    assert route_count(after, "GET", "/health", "2xx") - \
        route_count(before, "GET", "/health", "2xx") == 50
    assert after["latency"]["count"] - before["latency"]["count"] == 50
    assert after["workers_folded"] >= 1
    assert after["workers_running"] == 2
    assert {w["pid"] for w in after["worker_table"]} == set(server.workers().values())
    # and they keep counting on top
    assert server.health().status == 200
    assert stat_json(name)["requests"] == after["requests"] + 1


def test_counters_survive_reloads(server):
    """Issue 8 item 2 with issue 9's reload: the retiring generation's
    counts are folded into the totals, the reload is counted, and the
    segment (its generation) stays the same across a HUP."""
    name = name_of(server)
    before = stat_json(name)
    with server.connect() as c:
        for _ in range(40):
            assert c.request(get("/health")).status == 200
    old = set(server.workers().values())
    for n in (1, 2):
        server.signal(signal.SIGHUP)
        wait_for(lambda: stat_json(name)["reloads"] - before["reloads"] == n,
                 20, "reload %d counted" % n)
        # the retiring workers are gone and folded
        wait_for(lambda: not old & set(server.workers().values()) and
                 len(server.workers()) == 2 or None, 20, "old generation gone")
        old = set(server.workers().values())
    after = stat_json(name)
    assert after["generation"] == before["generation"]
    assert after["requests"] - before["requests"] == 40
    assert route_count(after, "GET", "/health", "2xx") - \
        route_count(before, "GET", "/health", "2xx") == 40
    assert after["latency"]["count"] - before["latency"]["count"] == 40
    assert after["workers_folded"] - before["workers_folded"] == 4
    assert after["worker_restarts"] == before["worker_restarts"]
    assert {w["pid"] for w in after["worker_table"]} == old
    assert server.health().status == 200
    assert stat_json(name)["requests"] == after["requests"] + 1


def test_openapi_route_is_counted_as_itself(server):
    """Review finding: /openapi.json (a route edge_init() adds) was neither
    published by the master nor mapped by the worker's metrics hook, so
    its requests counted as "(no route)"."""
    name = name_of(server)
    before = stat_json(name)
    with server.connect() as c:
        for _ in range(3):
            assert c.request(get("/openapi.json")).status == 200
    after = stat_json(name)
    assert route_count(after, "GET", "/openapi.json", "2xx") - \
        route_count(before, "GET", "/openapi.json", "2xx") == 3
    assert route_count(after, "-", "(no route)", "2xx") == \
        route_count(before, "-", "(no route)", "2xx")


def test_edge_counters_reach_the_segment(apiary):
    """Review finding: the rate-limit and auth counters of the segment
    (apiary_ratelimit_*_total, apiary_auth_rejected_total) stayed 0: the
    edge module counted only for /debug/worker."""
    srv = apiary(workers=1, ratelimit_rate=1, ratelimit_burst=4)
    name = name_of(srv)
    before = stat_json(name)["counters"]
    body = b'{"name":"x","email":"x@example.com"}'
    with srv.connect() as c:
        c.send(b"POST /users HTTP/1.1\r\nHost: x\r\n"
               b"Content-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body, auth=False)
        assert c.read_final_response().status == 401
    statuses = []
    with srv.connect() as c:
        for _ in range(8):
            statuses.append(c.request(get("/health")).status)
    limited = statuses.count(429)
    assert limited >= 1, statuses

    def delta():
        now = stat_json(name)["counters"]
        return {k: now[k] - before[k] for k in
                ("ratelimit_limited", "ratelimit_allowed", "auth_rejected")}

    wait_for(lambda: delta()["ratelimit_limited"] == limited, 5,
             "the rate limiter's refusals in the segment")
    d = delta()
    assert d["auth_rejected"] == 1, d
    assert d["ratelimit_allowed"] >= 1 + statuses.count(200), d
    # still answering once the bucket refills (1/s); then stopped here, as
    # the teardown's own checks would meet the limit again
    wait_for(lambda: srv.health().status == 200, 10, "the bucket to refill")
    srv.signal(signal.SIGTERM)
    srv.wait_gone(10)
    srv.stopped = True


def test_apiarystat_reattaches_after_restart(apiary, tmp_path):
    srv = apiary(name="reattach-%d" % os.getpid())
    name = srv.config["name"]
    g1 = stat_json(name)["generation"]
    out_path = tmp_path / "live.out"
    with open(out_path, "wb") as out:
        live = subprocess.Popen([STAT_BIN, "-n", name], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def shown(text):
            return lambda: text in out_path.read_text(errors="replace")

        wait_for(shown("generation " + g1), 10, "the live view of the first server")
        srv.signal(signal.SIGTERM)
        srv.wait_gone(10)
        srv.stopped = True
        wait_for(shown("stopped or restarted"), 10, "the live view to notice the stop")
        r = stat(name, "-j", check=False)
        assert r.returncode == 1 and "is running" in r.stderr
        srv2 = apiary(name=name)
        g2 = stat_json(name)["generation"]
        assert g2 != g1
        wait_for(shown("generation " + g2), 10, "the live view of the new server")
        assert srv2.health().status == 200
    finally:
        live.send_signal(signal.SIGINT)
        try:
            live.wait(timeout=scaled(5))
        except subprocess.TimeoutExpired:
            live.kill()
            live.wait()
    assert live.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_segment_mode_and_group_reader(server):
    name = name_of(server)
    path = "/dev/shm/apiary-%s-metrics" % name
    st = os.stat(path)
    assert st.st_mode & 0o777 == 0o640
    nobody = pwd.getpwnam("nobody").pw_uid
    nogroup = grp.getgrgid(65534).gr_gid
    # what an installed service does: its group is the ops group
    os.chown(path, -1, nogroup)
    r = stat(name, "-j", user=(nobody, nogroup))
    doc = json.loads(r.stdout)
    assert doc["name"] == name and doc["workers_running"] == 2
    # another user of another group: refused, with the reason
    daemon_gid = grp.getgrnam("daemon").gr_gid
    r = stat(name, "-1", check=False, user=(nobody, daemon_gid))
    assert r.returncode == 1
    assert "permission denied" in r.stderr and "0640" in r.stderr
    r = stat(name, check=False, user=(nobody, daemon_gid))  # live view too
    assert r.returncode == 1 and "permission denied" in r.stderr


def test_metrics_off(apiary):
    srv = apiary(metrics="off")
    with srv.connect() as c:
        r = c.request(get("/metrics"))
    assert r.status == 503
    assert not os.path.exists("/dev/shm/apiary-%s-metrics" % name_of(srv))
