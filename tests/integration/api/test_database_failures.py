"""What a client sees when PostgreSQL fails under apiaryd (SPEC 1, 2, 4):
a restarted cluster, a killed connection, a slow statement, a full queue.
The workers ride through all of it without being restarted."""
import collections
import itertools
import json
import threading
import time

import requests

from conftest import HOST, RawClient, free_port, get, scaled, wait_for

from .conftest import (
    AuthSession,
    all_workers_status,
    assert_error,
    create_user,
    wait_db_ready,
    worker_status,
)


def is_json_error(text, code):
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    return (set(doc) == {"error"} and doc["error"].get("code") == code
            and isinstance(doc["error"].get("message"), str))


class Load:
    """Client threads doing POST /users (unique emails) and GET /users/{id}
    of their own users, each request with a client timeout, until stopped."""

    def __init__(self, srv, nthreads=4, timeout=3):
        self.srv = srv
        self.timeout = scaled(timeout)
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.records = []  # (t_start, t_end, kind, status, text or payload)
        self.seq = itertools.count(1)
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True)
                        for n in range(nthreads)]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=self.timeout + scaled(10))
            assert not t.is_alive(), "a client thread is stuck"

    def record(self, *rec):
        with self.lock:
            self.records.append(rec)

    def count(self, kind=None, status=None, since=0.0):
        with self.lock:
            return sum(1 for t0, _, k, st, _ in self.records
                       if (kind is None or k == kind) and (status is None or st == status)
                       and t0 >= since)

    def run(self, n):
        s = AuthSession()  # writes carry a token
        mine = []
        try:
            while not self.stop_flag.is_set():
                email = "load-%d-%d@example.org" % (n, next(self.seq))
                self.one(s, "post", "POST", "/users",
                         json={"name": "Load %d" % n, "email": email}, mine=mine)
                if mine:
                    self.one(s, "get", "GET", "/users/%d" % mine[-1]["id"], expect=mine[-1])
        finally:
            s.close()

    def one(self, s, kind, method, path, mine=None, expect=None, **kw):
        t0 = time.monotonic()
        try:
            r = s.request(method, self.srv.url(path), timeout=self.timeout, **kw)
        except requests.RequestException as e:
            self.record(t0, time.monotonic(), kind, "exception", repr(e))
            return
        t1 = time.monotonic()
        status = r.status_code
        payload = r.text
        if status == 201 and kind == "post":
            user = r.json()
            if user.get("email") != kw["json"]["email"]:
                status, payload = "wrong body", r.text
            else:
                mine.append(user)
                payload = user
        elif status == 200 and kind == "get" and r.json() != expect:
            status = "wrong body"
        self.record(t0, t1, kind, status, payload)


def test_postgres_restart_under_load(start_api, pg_cluster):
    """Client threads keep creating and reading users while the cluster is
    stopped and started again.  One more request is sure to be in flight
    at the stop: a PATCH waiting for a row lock the test holds.  Every 201
    and 200 a client saw must be in the database afterwards."""
    srv = start_api(workers=2)
    master = srv.proc.pid
    workers = srv.workers()
    assert len(workers) == 2
    victim = create_user(srv.client, name="Victim")
    locker = srv.db.connect(autocommit=False)
    stuck = srv.connect(timeout=5)
    load = Load(srv, nthreads=4)
    load.start()
    try:
        wait_for(lambda: load.count("post", 201) >= 20 and load.count("get", 200) >= 20,
                 10, "requests to succeed before the outage")
        locker.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (victim["id"],))
        body = b'{"name":"Patched"}'
        stuck.send(b"PATCH /users/%d HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                   b"\r\nContent-Length: %d\r\n\r\n%s" % (victim["id"], len(body), body))
        wait_for(lambda: srv.db.count(
            "pg_stat_activity", "application_name LIKE 'apiaryd worker%'"
            " AND wait_event_type = 'Lock' AND datname = current_database()"),
            5, "the PATCH to wait for the row lock")
        t_stop = time.monotonic()
        pg_cluster.stop()
        t_down = time.monotonic()  # from here on, PostgreSQL is gone
        locker.close()
        # the request in flight at the stop is answered (checked below)
        stuck_resp = stuck.read_final_response()

        # during the outage: every worker says so on /ready (503 JSON), and
        # the clients get 503 answers, not hangs; keep going about 1 s
        down = all_workers_status(
            srv, 5, lambda doc, ready: not doc["db_ready"] and ready.status == 503)
        for _ in range(2):
            _, ready = worker_status(srv)
            assert ready.status == 503 and is_json_error(ready.body, 503), ready
        wait_for(lambda: (time.monotonic() - t_down >= 1.0
                          and load.count("post", 503, since=t_down) >= 10
                          and load.count("get", 503, since=t_down) >= 10),
                 10, "clients to get 503 answers during the outage")

        t_restart = time.monotonic()
        pg_cluster.start()
        t_up = time.monotonic()
        # both workers reconnect on their own, quickly (backoff capped)
        wait_db_ready(srv, timeout=1.0)
        t_ready = time.monotonic()
        wait_for(lambda: load.count("post", 201, since=t_ready) >= 20
                 and load.count("get", 200, since=t_ready) >= 20,
                 10, "requests to succeed again after the restart")
    finally:
        load.stop()
        stuck.close()
        locker.close()
        pg_cluster.ensure_running()

    # the same processes throughout: no worker was restarted
    assert srv.proc.poll() is None and srv.proc.pid == master
    assert srv.workers() == workers, (workers, srv.workers())
    assert set(down) == set(workers)

    recs = load.records
    by_status = collections.Counter(str(st) for _, _, _, st, _ in recs)
    print("\nPostgreSQL restart under load: %d requests: %s; outage %.2f s"
          " (stop took %.2f s), workers ready %.2f s after the cluster was up"
          % (len(recs), dict(by_status), t_up - t_down, t_down - t_stop, t_ready - t_up))
    problems = []
    # the PATCH in flight at the stop: the shutdown may have let it finish
    # (the lock holder was terminated first) or cut it short
    victim_row = srv.db.query("SELECT name FROM users WHERE id = %s", (victim["id"],))
    victim_audit = srv.db.count("audit_log", "action = 'updated'")
    if stuck_resp.status == 200:
        if victim_row != [("Patched",)] or victim_audit != 1:
            problems.append("the PATCH in flight at the stop was answered 200 but not"
                            " committed: %r, %d audit rows" % (victim_row, victim_audit))
    elif stuck_resp.status == 503 and is_json_error(stuck_resp.body, 503):
        if victim_row != [("Victim",)] or victim_audit != 0:
            problems.append("the PATCH in flight at the stop was answered 503 but"
                            " committed: %r, %d audit rows" % (victim_row, victim_audit))
    else:
        problems.append("the PATCH in flight at the stop: %s %s (want 503, or 200)"
                        % (stuck_resp.status, stuck_resp.body))
    for t0, t1, kind, status, payload in recs:
        if status == "exception":
            problems.append("%s at %+.2f s: no answer: %s" % (kind, t0 - t_stop, payload))
        elif status not in (200, 201, 503):
            problems.append("%s at %+.2f s: %s %s" % (kind, t0 - t_stop, status, payload))
        elif status == 503:
            if not is_json_error(payload, 503):
                problems.append("%s: 503 that is not a JSON error: %r" % (kind, payload))
            if t1 < t_stop or t0 > t_ready:
                problems.append("%s: 503 outside the outage (at %+.2f s): %s"
                                % (kind, t0 - t_stop, payload))
        elif t0 >= t_down and t1 <= t_restart:
            problems.append("%s: %s while PostgreSQL was stopped" % (kind, status))
    assert not problems, "\n".join(problems[:20])

    # every 201 the clients saw is in the database
    created = {p["id"]: p["email"] for _, _, k, st, p in recs if k == "post" and st == 201}
    assert len(created) == by_status["201"]
    rows = srv.db.query("SELECT id, email FROM users WHERE id = ANY(%s)", (list(created),))
    assert dict(rows) == created, "answered 201 but missing: %r" % sorted(
        set(created) - {i for i, _ in rows})
    assert srv.db.count("audit_log", "action = 'created' AND entity_id = ANY(%s)",
                        (list(created),)) == len(created)


def test_killed_db_connection_reconnects(api):
    before = wait_db_ready(api)
    workers = api.workers()
    user = create_user(api.client)
    with api.db.connect() as conn:
        old = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'apiaryd worker%'"
            " AND datname = current_database()").fetchall()
        assert len(old) == 2, old
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE 'apiaryd worker%' AND datname = current_database()"
        ).fetchall()
        assert killed == [(True,), (True,)], killed

    after = all_workers_status(
        api, 5, lambda doc, ready: (doc["db_ready"] and ready.status == 200 and
                                    doc["db_reconnects"] > before[doc["worker"]]["db_reconnects"]))
    assert set(after) == set(workers)
    # requests succeed again, on both workers (fresh connections are spread)
    seen = set()
    for _ in range(8):
        with RawClient(api.port) as c:
            c.send(get("/users/%d" % user["id"]) + get("/debug/worker"))
            r = c.read_final_response()
            seen.add(c.read_final_response().json()["worker"])
        assert r.status == 200 and r.json() == user, r
    assert seen == set(workers)
    # new server-side connections, same worker processes
    with api.db.connect() as conn:
        new = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'apiaryd worker%'"
            " AND datname = current_database()").fetchall()
    assert len(new) == 2 and not set(new) & set(old), (old, new)
    assert api.workers() == workers


def test_request_timeout_504_on_locked_row(start_api):
    """A statement stuck behind a row lock: the client gets 504 JSON after
    request_timeout_ms; once the lock is gone the server works again and the
    user row and its audit trail still agree."""
    srv = start_api(workers=1, request_timeout_ms=300)
    client = srv.client
    user = create_user(client, name="Before")
    uid = user["id"]
    locker = srv.db.connect(autocommit=False)
    try:
        locker.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (uid,))
        r = client.patch("/users/%d" % uid, json={"name": "After"}, timeout=scaled(5))
        assert_error(r, 504)
        # not answered, but not forgotten: the worker is still in its loop
        doc, ready = worker_status(srv)
        assert ready.status in (200, 503)
    finally:
        locker.rollback()
        locker.close()

    def works():
        r = client.get("/users/%d" % uid, timeout=scaled(5))
        return r.status_code == 200 and r
    wait_for(works, 10, "GET /users/%d to work again after the lock is released" % uid)
    r = client.patch("/users/%d" % uid, json={"name": "Later"})
    assert r.status_code == 200 and r.json()["name"] == "Later", r.text
    assert client.get("/users/%d" % uid).json()["name"] == "Later"
    # whether or not the timed-out PATCH ran after all, row and audit agree
    trail = srv.db.query("SELECT detail FROM audit_log WHERE user_id = %s"
                         " AND action = 'updated' ORDER BY id", (uid,))
    names = ["Before"] + [d["after"]["name"] for (d,) in trail]
    assert [d["before"]["name"] for (d,) in trail] == names[:-1], trail
    assert names[-1] == "Later" and names in (["Before", "Later"],
                                              ["Before", "After", "Later"]), names


def test_statement_timeout_504_rolls_back(start_api):
    """statement_timeout cancels the stuck statement: 504 JSON, and nothing
    of the PATCH is left (no new name, no audit row)."""
    srv = start_api(workers=1, statement_timeout_ms=200)
    client = srv.client
    user = create_user(client, name="Before")
    uid = user["id"]
    locker = srv.db.connect(autocommit=False)
    try:
        locker.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (uid,))
        r = client.patch("/users/%d" % uid, json={"name": "After"}, timeout=scaled(5))
        assert_error(r, 504)
        locker.execute("SELECT 1")  # our transaction is intact
    finally:
        locker.rollback()
        locker.close()
    assert srv.db.query("SELECT name FROM users WHERE id = %s", (uid,)) == [("Before",)]
    assert srv.db.count("audit_log", "action = 'updated'") == 0
    assert client.get("/users/%d" % uid).json() == user
    r = client.patch("/users/%d" % uid, json={"name": "After"})
    assert r.status_code == 200 and r.json()["name"] == "After", r.text


def test_db_queue_limit_503(start_api):
    """With one query in flight (stuck on a lock) and the wait queue full,
    the next database request is refused at once with 503; the queued ones
    are answered once the lock is gone."""
    srv = start_api(workers=1, db_pipeline_depth=1, db_queue_limit=2,
                    request_timeout_ms=int(scaled(20) * 1000))
    user = create_user(srv.client, name="Before")
    uid = user["id"]

    def stats():
        doc, _ = worker_status(srv)
        return doc

    locker = srv.db.connect(autocommit=False)
    clients = []
    try:
        locker.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (uid,))
        stuck = srv.connect()
        clients.append(stuck)
        body = b'{"name":"After"}'
        stuck.send(b"PATCH /users/%d HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (uid, len(body), body))
        wait_for(lambda: stats()["db_in_flight"] == 1, 5, "the PATCH to be in flight")
        for _ in range(2):
            c = srv.connect()
            clients.append(c)
            c.send(get("/users/%d" % uid))
        wait_for(lambda: stats()["db_queued"] == 2, 5, "two GETs to wait in the queue")
        r = srv.client.get("/users/%d" % uid, timeout=scaled(5))
        assert_error(r, 503)
        # routes without the database are still served
        assert srv.client.get("/health").status_code == 200
    finally:
        locker.rollback()
        locker.close()
    try:
        r = clients[0].read_final_response()
        assert r.status == 200 and r.json()["name"] == "After", r
        for c in clients[1:]:
            r = c.read_final_response()
            assert r.status == 200 and r.json()["id"] == uid, r
    finally:
        for c in clients:
            c.close()
    doc = stats()
    assert doc["db_in_flight"] == 0 and doc["db_queued"] == 0, doc


WORKER_BACKENDS = ("application_name LIKE 'apiaryd worker%' AND datname = current_database()")


def terminate_worker_backends(conn):
    """pg_terminate_backend() on every apiaryd worker connection to this
    database; returns how many were terminated."""
    rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                        + WORKER_BACKENDS).fetchall()
    return sum(1 for (ok,) in rows if ok)


def test_issue6_schema_check_failure_reconnects(start_api):
    """Defect 3 of issue 6: a worker whose schema check fails while it
    reconnects must retry with backoff, never exit 2.  The test holds
    schema_migrations locked and terminates the workers' backends; their new
    connections' schema checks wait for the lock until statement_timeout
    cancels them (an error result, which used to exit(2)).  Once both
    workers have failed that way and connected again, the lock is released:
    the same processes serve again."""
    srv = start_api(statement_timeout_ms=300)
    master = srv.proc.pid
    workers = srv.workers()
    user = create_user(srv.client)
    waiting = WORKER_BACKENDS + " AND wait_event_type = 'Lock'"

    def waiters():
        return {pid for (pid,) in srv.db.query(
            "SELECT pid FROM pg_stat_activity WHERE " + waiting)}

    locker = srv.db.connect(autocommit=False)
    try:
        locker.execute("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
        with srv.db.connect() as killer:
            assert terminate_worker_backends(killer) == 2
        first = wait_for(lambda: len(waiters()) == 2 and waiters(), 10,
                         "both workers' schema checks to wait for the lock")
        # each check is cancelled by statement_timeout; each worker connects
        # again on a new backend, whose check waits again
        wait_for(lambda: len(waiters() - first) == 2, 10,
                 "both workers to fail their schema check and try again")
        down = all_workers_status(srv, 5, lambda doc, ready: ready.status == 503)
        assert set(down) == set(workers)
    finally:
        locker.rollback()
        locker.close()
    wait_db_ready(srv, timeout=10)
    seen = set()
    for _ in range(8):
        with RawClient(srv.port) as c:
            c.send(get("/users/%d" % user["id"]) + get("/debug/worker"))
            r = c.read_final_response()
            seen.add(c.read_final_response().json()["worker"])
        assert r.status == 200 and r.json() == user, r
    assert seen == set(workers)
    assert srv.proc.poll() is None and srv.proc.pid == master
    assert srv.workers() == workers, (workers, srv.workers())
    text = srv.logs_text()
    assert "exited with status" not in text and "refuses to serve" not in text, text


def test_issue6_host_list_with_a_dead_first_host(start_api, db):
    """Defect 9 of issue 6: libpq tries the hosts of a list in turn, each on
    a new socket, which usually gets the descriptor number of the one it
    replaces; the worker must watch the new socket (it used to keep
    waiting on the closed one until the connect timeout, forever)."""
    dead = free_port()  # nothing listens there: connection refused at once
    url = "postgresql://apiary@%s:%d,%s:%d/%s" % (
        HOST, dead, HOST, db.cluster.port, db.name)
    srv = start_api(database_url=url)  # waits for every worker's /ready 200
    user = create_user(srv.client)
    assert srv.client.get("/users/%d" % user["id"]).json() == user
    assert "timed out connecting" not in srv.logs_text(), srv.logs_text()


def test_issue6_query_of_a_timed_out_request_is_not_sent(start_api):
    """SPEC 6: a query whose request was already answered (504) is not sent
    if it has not been sent yet, and gives its place in the queue back.
    One PATCH is stuck on a row lock (pipeline depth 1), one GET waits
    behind it (queue limit 1); both time out.  A new GET then finds the
    queue full of a dead request: it must be accepted (not 503), the dead
    GET never reaches PostgreSQL, and the new one is answered once the lock
    is gone.  (Lock retries are off: with them, the PATCH would wait
    unsent between its attempts, and be dropped at its 504 too; see
    test_lock_wait.py.)"""
    srv = start_api(workers=1, db_pipeline_depth=1, db_queue_limit=1,
                    db_lock_wait_ms=0, request_timeout_ms=int(scaled(1) * 1000))
    user = create_user(srv.client, name="Before")
    uid = user["id"]

    def stats():
        doc, _ = worker_status(srv)
        return doc

    locker = srv.db.connect(autocommit=False)
    clients = []
    try:
        locker.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (uid,))
        for req in (b"PATCH /users/%d HTTP/1.1\r\nHost: x\r\nContent-Type: "
                    b"application/json\r\nContent-Length: 16\r\n\r\n"
                    b'{"name":"After"}' % uid, get("/users/%d" % uid)):
            c = srv.connect()
            clients.append(c)
            c.send(req)
        wait_for(lambda: stats()["db_queued"] == 1, 5, "the GET to wait behind the PATCH")
        before = stats()
        for c in clients:
            assert_error_raw(c.read_final_response(), 504)
        late = srv.connect()
        clients.append(late)
        late.send(get("/users/%d" % uid))
        wait_for(lambda: stats().get("db_dropped", 0) == before.get("db_dropped", 0) + 1,
                 5, "the timed-out GET to be dropped")
        assert stats()["db_queued"] == 1  # the new GET took its place
    finally:
        locker.rollback()
        locker.close()
    r = late.read_final_response()
    assert r.status == 200 and r.json()["id"] == uid, r
    after = stats()
    for c in clients:
        c.close()
    # the PATCH and the new GET ran; the dropped GET never did
    assert after["db_queries"] - before["db_queries"] == 2, (before, after)
    assert after["db_in_flight"] == 0 and after["db_queued"] == 0, after


def assert_error_raw(resp, code):
    assert resp.status == code and is_json_error(resp.body, code), resp
