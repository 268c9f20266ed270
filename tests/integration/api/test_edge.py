"""Issue 10 end to end: bearer auth on writes, the shared rate limit, CORS,
gzip, request ids in answers and the access log, and 504 with its id."""
import gzip
import json
import os
import signal
import subprocess
import time

from conftest import (
    APIARY_BIN,
    TEST_SECRET,
    RawClient,
    assert_json_error,
    auth_line,
    clean_env,
    get,
    mint_token,
    scaled,
    wait_for,
)

from .conftest import (
    RowLock,
    all_workers_status,
    assert_error,
    create_user,
    worker_status,
)


def post_bytes(path, doc, extra=b""):
    body = json.dumps(doc).encode()
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


# ---- auth ----


def forged_tokens():
    t = int(time.time())
    good = {"sub": "x", "exp": t + 600}
    valid = mint_token(good)
    head, payload, sig = valid.split(".")
    return {
        "alg none": mint_token(good, header={"alg": "none"}).rsplit(".", 1)[0] + ".",
        "alg none signed": mint_token(good, header={"alg": "none"}),
        "HS512": mint_token(good, header={"alg": "HS512"}),
        "RS256": mint_token(good, header={"alg": "RS256"}),
        "wrong key": mint_token(good, key="another-secret-0123456789abcdef-0123"),
        "expired": mint_token({"exp": t - 3600}),
        "not yet valid": mint_token({"exp": t + 7200, "nbf": t + 3600}),
        "no exp": mint_token({"sub": "x"}),
        "malformed base64": head + "." + payload + "=." + sig,
        "missing part": head + "." + payload,
        "extra part": valid + ".e30",
        "oversized": mint_token({"exp": t + 600, "pad": "x" * 5000}),
        "empty": "",
    }


def test_writes_need_a_valid_token(api):
    client = api.client
    before = api.db.counts()
    for what, tok in forged_tokens().items():
        r = client.post("/users", json={"name": "Eve", "email": "eve@example.org"},
                        token=tok)
        msg = assert_error(r, 401)
        assert TEST_SECRET not in msg and (not tok or tok not in msg), (what, msg)
        www = r.headers.get("WWW-Authenticate", "")
        assert www.startswith("Bearer"), (what, r.headers)
        if tok:
            assert 'error="invalid_token"' in www, (what, www)
    r = client.post("/users", json={"name": "Eve", "email": "eve@example.org"}, token=None)
    assert_error(r, 401, "Bearer")
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="apiary"'
    r = client.patch("/users/1", json={"name": "E"}, token=None)
    assert_error(r, 401)
    r = client.delete("/users/1", token="nope")
    assert_error(r, 401, "not header.payload.signature")
    r = client.post("/orders", json={}, token=forged_tokens()["expired"])
    assert_error(r, 401, "expired")
    # a token in the query string is refused even when valid
    r = client.post("/users?access_token=" + mint_token(), token=None,
                    json={"name": "Q", "email": "q@example.org"})
    assert_error(r, 401, "query string")
    assert api.db.counts() == before
    # the secret never reaches the logs
    logs = api.error_log.read_text() + api.access_log.read_text()
    assert TEST_SECRET not in logs
    # counted per worker
    docs = all_workers_status(api)
    assert sum(d["auth_rejected"] for d in docs.values()) >= len(forged_tokens()) + 4
    # and a valid one works; reads need none
    user = create_user(client)
    assert client.get("/users/%d" % user["id"], token=None).status_code == 200


def test_rejected_write_body_never_read(api):
    """The check is before the body: a 401 comes back at once for a write
    announcing 1 MiB it never sends, and the connection closes."""
    with api.connect() as c:
        c.send(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 1048576\r\n\r\n", auth=False)
        r = c.read_final_response()
        assert_json_error(r, 401)
        assert r.header("Connection") == "close"
        c.assert_closed()
    # Expect: 100-continue gets the 401 instead of 100 Continue
    with api.connect() as c:
        c.send(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Expect: 100-continue\r\nContent-Length: 50\r\n\r\n", auth=False)
        r = c.read_response()
        assert r.status == 401, r


def test_no_secret_means_writes_503(start_api):
    srv = start_api(auth_secret="")
    r = srv.client.post("/users", json={"name": "A", "email": "a@example.org"})
    assert_error(r, 503, "auth secret")
    assert srv.client.get("/users").status_code == 200
    assert any("auth is on but" in ln.get("msg", "") for ln in srv.error_log_lines())


def test_auth_off(start_api):
    srv = start_api(auth="off")
    r = srv.client.post("/users", json={"name": "A", "email": "a@example.org"},
                        token=None)
    assert r.status_code == 201, r.text


def test_apiaryd_t_hides_the_secret(api):
    out = subprocess.run([APIARY_BIN, "-c", str(api.conf_path), "-t"],
                         capture_output=True, text=True, env=clean_env(),
                         timeout=scaled(30))
    assert out.returncode == 0, out
    assert TEST_SECRET not in out.stdout + out.stderr
    assert "auth_secret" in out.stdout and "***" in out.stdout


# ---- rate limit ----


# The rate-limit tests speak from another address (the limit is per
# address), so the fixture's own checks from 127.0.0.1 are not limited.
ME = "127.0.0.2"


def connect(srv):
    return RawClient(srv.port, source=ME)


def conns_on_every_worker(srv, n_workers):
    """{worker id: RawClient} with one open connection on each worker."""
    conns, spare = {}, []

    def more():
        c = connect(srv)
        c.send(get("/debug/worker"))
        doc = c.read_final_response().json()
        if doc["worker"] in conns:
            spare.append(c)
        else:
            conns[doc["worker"]] = c
        return len(conns) == n_workers

    wait_for(more, 10, "a connection on every worker")
    for c in spare:
        c.close()
    return conns


def test_rate_limit_shared_by_workers_and_survives_sigkill(start_api):
    burst = 40
    srv = start_api(workers=2, ratelimit_rate=1, ratelimit_burst=burst)
    conns = conns_on_every_worker(srv, 2)  # 2 requests taken already
    t0 = time.monotonic()
    statuses = {w: [] for w in conns}
    for i in range(3 * burst):
        w = sorted(conns)[i % 2]
        r = conns[w].request(get("/health"))
        statuses[w].append(r.status)
        if r.status == 429:
            assert_json_error(r, 429)
            assert int(r.header("Retry-After")) >= 1
            assert r.header("RateLimit-Limit") == str(burst)
            assert r.header("RateLimit-Remaining") == "0"
    elapsed = time.monotonic() - t0
    allowed = sum(s.count(200) for s in statuses.values())
    # one budget: at most the burst (minus the 2 probes) plus what refilled
    assert allowed <= burst - 2 + int(elapsed) + 1, (statuses, elapsed)
    assert all(429 in s for s in statuses.values()), statuses
    for c in conns.values():
        c.close()
    # counted per worker (from 127.0.0.1, which has a budget of its own)
    docs = all_workers_status(srv)
    for w, doc in docs.items():
        assert doc["ratelimit_limited"] >= statuses[w].count(429), (w, doc)
        assert doc["ratelimit_allowed"] >= statuses[w].count(200), (w, doc)

    # SIGKILL a worker: its replacement shares the same table, nothing is
    # left held, and the limit still applies
    victim = srv.workers()[1]
    srv.expected_deaths += 1
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in srv.worker_pids() and len(srv.worker_pids()) == 2,
             10, "the killed worker to be replaced")
    srv.wait_workers(2)

    def allowed_again():
        with connect(srv) as c:
            return c.request(get("/health")).status == 200
    wait_for(allowed_again, 5, "a request to be allowed after the refill")
    with connect(srv) as c:
        seen = [c.request(get("/health")).status for _ in range(burst + 3)]
    assert 429 in seen, seen
    # another address has a budget of its own
    assert srv.health().status == 200


def test_rate_limit_off_by_default(api):
    with api.connect() as c:
        for _ in range(300):
            assert c.request(get("/health")).status == 200


# ---- CORS ----


def test_cors(start_api):
    srv = start_api(cors_origins="https://app.example, https://b.example",
                    cors_max_age_s=120)
    with srv.connect() as c:
        r = c.request(get("/users", extra=b"Origin: https://app.example\r\n"
                          b"Access-Control-Request-Method: POST\r\n",
                          method=b"OPTIONS"))
        assert r.status == 204, r
        assert r.header("Access-Control-Allow-Origin") == "https://app.example"
        assert "POST" in r.header("Access-Control-Allow-Methods")
        assert "Authorization" in r.header("Access-Control-Allow-Headers")
        assert "Idempotency-Key" in r.header("Access-Control-Allow-Headers")
        assert r.header("Access-Control-Max-Age") == "120"
        assert r.header("Access-Control-Allow-Credentials") is None
        assert "Origin" in r.header_all("Vary")
        # a simple request from an allowed origin
        r = c.request(get("/health", extra=b"Origin: https://b.example\r\n"))
        assert r.status == 200
        assert r.header("Access-Control-Allow-Origin") == "https://b.example"
        assert "X-Request-Id" in r.header("Access-Control-Expose-Headers")
        # another origin: no CORS grant, still Vary
        r = c.request(get("/health", extra=b"Origin: https://evil.example\r\n"))
        assert r.header("Access-Control-Allow-Origin") is None
        assert "Origin" in r.header_all("Vary")
        r = c.request(get("/users", extra=b"Origin: https://evil.example\r\n",
                          method=b"OPTIONS"))
        assert r.header("Access-Control-Allow-Origin") is None
        # a 401 is readable by the allowed origin
        r = c.request(post_bytes("/users", {"name": "x"},
                                 b"Origin: https://app.example\r\n"
                                 + auth_line("bad")))
        assert r.status == 401
        assert r.header("Access-Control-Allow-Origin") == "https://app.example"


def test_cors_off_by_default(api):
    with api.connect() as c:
        r = c.request(get("/health", extra=b"Origin: https://app.example\r\n"))
        assert r.header("Access-Control-Allow-Origin") is None
        assert "Origin" not in ",".join(r.header_all("Vary"))
        r = c.request(get("/users", extra=b"Origin: https://app.example\r\n",
                          method=b"OPTIONS"))
        assert r.status == 405


def test_cors_credentials(start_api):
    srv = start_api(cors_origins="https://app.example", cors_credentials="on")
    with srv.connect() as c:
        r = c.request(get("/health", extra=b"Origin: https://app.example\r\n"))
        assert r.header("Access-Control-Allow-Credentials") == "true"


# ---- gzip ----


def test_gzip(api):
    client = api.client
    for i in range(30):
        create_user(client, name="User number %d with a long name" % i)
    plain = client.get("/users?per_page=100", headers={"Accept-Encoding": "identity"})
    assert plain.headers.get("Content-Encoding") is None
    assert "Accept-Encoding" in plain.headers.get("Vary", "")
    assert len(plain.content) >= 1024
    with api.connect() as c:
        for ae in (b"gzip", b"deflate, gzip;q=0.5", b"*", b"GZIP;q=1.0"):
            r = c.request(get("/users?per_page=100", extra=b"Accept-Encoding: " + ae + b"\r\n"))
            assert r.header("Content-Encoding") == "gzip", (ae, r)
            assert "Accept-Encoding" in ",".join(r.header_all("Vary"))
            assert len(r.body) < len(plain.content)
            assert json.loads(gzip.decompress(r.body)) == plain.json()
        for ae in (b"gzip;q=0", b"gzip;q=0.000", b"deflate", b"*;q=0", b"identity",
                   b"gzip;q=0, *"):
            r = c.request(get("/users?per_page=100", extra=b"Accept-Encoding: " + ae + b"\r\n"))
            assert r.header("Content-Encoding") is None, (ae, r)
            assert r.body == plain.content
        # small bodies are never compressed and carry no Vary
        r = c.request(get("/health", extra=b"Accept-Encoding: gzip\r\n"))
        assert r.header("Content-Encoding") is None
        assert "Accept-Encoding" not in ",".join(r.header_all("Vary"))
        # a cached/quick answer (the document) too; HEAD agrees on length
        r = c.request(get("/openapi.json", extra=b"Accept-Encoding: gzip\r\n"))
        assert r.header("Content-Encoding") == "gzip"
        doc = json.loads(gzip.decompress(r.body))
        assert doc["openapi"].startswith("3.1")


def test_gzip_off(start_api):
    srv = start_api(gzip_level=0)
    with srv.connect() as c:
        r = c.request(get("/openapi.json", extra=b"Accept-Encoding: gzip\r\n"))
        assert r.header("Content-Encoding") is None
        assert r.header("Vary") is None


# ---- request ids ----


def test_request_ids_in_answers_and_access_log(api):
    ids = []
    with api.connect() as c:
        r = c.request(get("/health", extra=b"X-Request-Id: my-id-1\r\n"))
        assert r.header("X-Request-Id") == "my-id-1"
        ids.append(("my-id-1", 200))
        for bad in (b"x" * 65, b"has space", b'quo"te'):
            r = c.request(get("/health", extra=b"X-Request-Id: " + bad + b"\r\n"))
            assert r.header("X-Request-Id") not in (None, bad.decode())
            ids.append((r.header("X-Request-Id"), 200))
        r = c.request(get("/users/0"))
        ids.append((r.header("X-Request-Id"), 400))
        r = c.request(get("/nowhere"))
        ids.append((r.header("X-Request-Id"), 404))
        user = create_user(api.client)
        r = c.request(get("/users/%d" % user["id"], extra=b"X-Request-Id: db-read\r\n"))
        assert r.status == 200 and r.header("X-Request-Id") == "db-read"
        ids.append(("db-read", 200))
    # a request the parser rejects gets an id too
    with api.connect() as c:
        r = c.request(b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
        assert r.status == 400 and r.header("X-Request-Id")
        ids.append((r.header("X-Request-Id"), 400))
    generated = [i for i, _ in ids if i not in ("my-id-1", "db-read")]
    assert len(set(generated)) == len(generated)

    def logged():
        lines = api.access_log_lines()
        have = {}
        for ln in lines:
            have.setdefault(ln["request_id"], []).append(ln["status"])
        return all(rid in have for rid, _ in ids) and have
    have = wait_for(logged, 5, "the access log lines")
    for rid, status in ids:
        assert have[rid] == [status], (rid, have[rid])


def test_request_ids_unique_across_workers_and_restarts(start_api, tmp_path):
    seen = set()
    for _ in range(2):
        srv = start_api(workers=2)
        for _ in range(20):
            with srv.connect() as c:
                seen.add(c.request(get("/health")).header("X-Request-Id"))
        srv.check_and_stop()
        srv.stopped = True
        srv.proc = None
    assert len(seen) == 40


# ---- deadline ----


def test_504_carries_its_request_id(start_api):
    srv = start_api(workers=1, request_timeout_ms=300)
    user = create_user(srv.client)
    with RowLock(srv.db, user["id"]):
        r = srv.client.patch("/users/%d" % user["id"], json={"name": "Late"},
                             headers={"X-Request-Id": "slow-one"}, timeout=scaled(10))
        assert_error(r, 504)
        assert r.headers["X-Request-Id"] == "slow-one"
        doc, _ = worker_status(srv)

    def logged():
        return [ln for ln in srv.access_log_lines() if ln["request_id"] == "slow-one"]
    lines = wait_for(logged, 5, "the 504's access-log line")
    assert len(lines) == 1 and lines[0]["status"] == 504, lines
    assert lines[0].get("end") == "timeout", lines


def test_auth_reads(start_api):
    """auth_reads = on: reads need a token too, but for the probes and the
    API's description."""
    srv = start_api(auth_reads="on")
    client = srv.client
    assert_error(client.get("/users"), 401, "Bearer")
    assert_error(client.get("/users/1", headers={"Authorization": "Bearer x.y.z"}), 401)
    r = client.get("/users", headers={"Authorization": "Bearer " + mint_token()})
    assert r.status_code == 200, r.text
    for path in ("/health", "/ready", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_apiaryd_t_checks_the_edge_keys(tmp_path):
    """-t warns when writes would answer 503 for want of a key, and a
    malformed cors_origins stops the start (it would stop every worker)."""
    def run(*opts):
        args = [APIARY_BIN, "-c", "/dev/null"]
        for o in opts:
            args += ["-o", o]
        return subprocess.run(args + ["-t"], capture_output=True, text=True,
                              env=clean_env(), timeout=scaled(30))
    r = run()
    assert r.returncode == 0 and "warning: auth is on but" in r.stderr, r
    r = run("auth_secret=short-secret")
    assert r.returncode == 0 and "12 bytes" in r.stderr, r
    assert "short-secret" not in r.stderr + r.stdout
    r = run("auth=off")
    assert r.returncode == 0 and "warning" not in r.stderr, r
    r = run("cors_origins=https://a.example,,https://b.example")
    assert r.returncode == 1 and "cors_origins" in r.stderr, r
    r = subprocess.run([APIARY_BIN, "-c", "/dev/null", "-o", "cors_origins=*",
                        "-o", "cors_credentials=on", "-o",
                        "pidfile=%s" % (tmp_path / "pid")],
                       capture_output=True, text=True, env=clean_env(),
                       timeout=scaled(30))
    assert r.returncode == 1 and "credentials" in r.stderr, r
