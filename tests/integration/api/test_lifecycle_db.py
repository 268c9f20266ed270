"""Regression tests for issue 6, the request life cycle (SPEC 3, 4, 7),
with a request that waits in PostgreSQL: a PATCH /users/{id} blocked on a
row lock that the test holds with SELECT ... FOR UPDATE, released when the
test says so.  While it waits: no keep-alive timeout, 100 Continue for a
pipelined request keeps its place, a graceful shutdown answers it with
Connection: close, and a client that leaves gets its 499 access-log line.
Plus the worker start gate: a respawned worker accepts only once its
database connection is ready."""
import json
import os
import signal
import threading

from conftest import RawClient, get, scaled, settled_fd_counts, wait_for

from .conftest import RowLock, create_user, ms, patch_request, unique_email


def wait_blocked_in_postgres(srv, n=1):
    """Waits until n statements of apiaryd's workers wait for a lock."""
    wait_for(lambda: srv.db.count(
        "pg_stat_activity", "application_name LIKE 'apiaryd worker%'"
        " AND wait_event_type = 'Lock' AND datname = current_database()") >= n,
        10, "the PATCH to wait for the row lock in PostgreSQL")


def client_lines(srv, port):
    return [l for l in srv.access_log_lines()
            if l.get("client") == "127.0.0.1:%d" % port]


def log_barrier(srv):
    """A request on a fresh connection, then waits for its line: with one
    worker, every line written before it is in the file by then."""
    with srv.connect() as c:
        port = c.sock.getsockname()[1]
        assert c.request(get("/health?barrier")).status == 200
    wait_for(lambda: client_lines(srv, port), 10, "the barrier request's access-log line")


# ---- 2. no keep-alive timeout while an answer is owed ----


def test_keepalive_timer_does_not_run_while_answer_is_owed(start_api):
    """SPEC 3: no timeout closes a connection while an answer is still owed
    to it.  A PATCH waits in PostgreSQL for three keep-alive timeouts: the
    connection stays open and gets its 200 once the lock is released.
    (Before issue 6 it was closed, EOF, one keep-alive timeout after the
    request.)  Afterwards the keep-alive timeout closes the idle connection."""
    srv = start_api(workers=1, keepalive_timeout_ms=ms(0.5),
                    request_timeout_ms=ms(20))
    uid = create_user(srv.client, name="Before")["id"]
    lock = RowLock(srv.db, uid)
    try:
        with srv.connect(timeout=20) as c:
            c.send(patch_request(uid, "After"))
            wait_blocked_in_postgres(srv)
            # three keep-alive timeouts with the answer still owed
            quiet = c.nothing_received(scaled(1.5))
            assert quiet, ("the connection got %r (b'' is EOF) while its PATCH was"
                           " waiting in PostgreSQL" % c.buf[:300])
            lock.release()
            r = c.read_final_response(timeout=10)
            assert r.status == 200, r
            assert r.json()["id"] == uid and r.json()["name"] == "After", r
            assert r.header("Connection") != "close", r
            # idle now: the keep-alive timeout applies again
            c.assert_closed(timeout=0.5 + 5)
    finally:
        lock.release()


# ---- 3. 100 Continue keeps its place ----


def test_100_continue_waits_for_earlier_answers(start_api):
    """SPEC 3: pipelined answers leave in request order, and an interim
    100 Continue is part of its request's answer.  A PATCH waiting in
    PostgreSQL, then a POST /users with Expect: 100-continue and no body
    yet: nothing is sent until the PATCH is answered, then 100 Continue,
    then (body sent) the 201.  (Before issue 6 the 100 Continue came first,
    ahead of the PATCH's answer.)"""
    srv = start_api(workers=1, request_timeout_ms=ms(20))
    uid = create_user(srv.client, name="Before")["id"]
    body = json.dumps({"name": "Continued", "email": unique_email("cont")}).encode()
    post_head = (b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    lock = RowLock(srv.db, uid)
    try:
        with srv.connect(timeout=20) as c:
            c.send(patch_request(uid, "After") + post_head)
            wait_blocked_in_postgres(srv)
            quiet = c.nothing_received(scaled(0.5))
            assert quiet, ("received %r while the PATCH (the first request) was still"
                           " waiting in PostgreSQL" % c.buf[:300])
            lock.release()
            first = c.read_response(timeout=10)
            assert first.status == 200, (
                "the first answer on the connection is %r, want the PATCH's 200" % first)
            assert first.json()["id"] == uid and first.json()["name"] == "After", first
            cont = c.read_response(timeout=10)
            assert cont.status == 100, ("after the PATCH's answer: %r, want"
                                        " 100 Continue" % cont)
            assert cont.raw.startswith(b"HTTP/1.1 100 Continue"), cont.raw
            c.send(body)
            created = c.read_response(timeout=10)
            assert created.status == 201, created
            user = created.json()
            assert user["name"] == "Continued", user
            assert created.header("Location") == "/users/%d" % user["id"], created
    finally:
        lock.release()


# ---- 4. graceful shutdown with a request in flight ----


def test_quit_answers_in_flight_request_with_connection_close(start_api):
    """SPEC 4: QUIT finishes the requests in flight.  The answer to a PATCH
    waiting in PostgreSQL when QUIT arrived carries Connection: close (the
    worker is going away) and then the connection is closed; the processes
    exit.  (Before issue 6 the answer said keep-alive.)"""
    srv = start_api(workers=1, request_timeout_ms=ms(20))
    uid = create_user(srv.client, name="Before")["id"]
    lock = RowLock(srv.db, uid)
    try:
        with srv.connect(timeout=20) as c:
            c.send(patch_request(uid, "After"))
            wait_blocked_in_postgres(srv)
            srv.stopped = True  # the test stops it (teardown: no /health check)
            srv.signal(signal.SIGQUIT)
            # the worker has begun its graceful shutdown with our request owed
            wait_for(lambda: [l for l in srv.error_log_lines()
                              if str(l.get("proc", "")).startswith("worker")
                              and "graceful shutdown" in l.get("msg", "")],
                     10, "the worker to log its graceful shutdown")
            assert srv.proc.poll() is None, "the master exited with a request in flight"
            lock.release()
            r = c.read_final_response(timeout=10)
            assert r.status == 200, r
            assert r.json()["id"] == uid and r.json()["name"] == "After", r
            assert r.header("Connection") == "close", (
                "the answer to the request in flight at QUIT: %r" % r.raw)
            c.assert_closed(timeout=5)
    finally:
        lock.release()
    srv.wait_gone(10)
    assert srv.proc.returncode == 0, (srv.proc.returncode, srv.logs_text()[-3000:])
    assert srv.db.query("SELECT name FROM users WHERE id = %s", (uid,)) == [("After",)]


# ---- 5. the access-log line of a client that left ----


def test_client_gone_gets_499_access_log_line(start_api):
    """SPEC 3: a request whose client left before its answer still passes
    the done point once: one access-log line, status 499, "end":
    "client_gone".  (Before issue 6 there was no line.)"""
    srv = start_api(workers=1, request_timeout_ms=ms(20))
    uid = create_user(srv.client, name="Before")["id"]
    lock = RowLock(srv.db, uid)
    try:
        c = srv.connect()
        port = c.sock.getsockname()[1]
        c.send(patch_request(uid, "After"))
        wait_blocked_in_postgres(srv)
        c.close()  # gone before the answer
        try:
            wait_for(lambda: client_lines(srv, port), 10,
                     "an access-log line for the client that left")
        except AssertionError:
            raise AssertionError(
                "no access-log line for the client (port %d) that left while its"
                " PATCH waited in PostgreSQL; log:\n%s"
                % (port, srv.access_log.read_text(errors="replace")[-3000:])) from None
    finally:
        lock.release()
    log_barrier(srv)  # the PATCH finishes in PostgreSQL: still one line
    lines = client_lines(srv, port)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["status"] == 499 and line.get("end") == "client_gone", line
    assert line["method"] == "PATCH" and line["path"] == "/users/%d" % uid, line
    for key in ("bytes", "us"):
        assert isinstance(line[key], int) and line[key] >= 0, line


# ---- 7. the worker start gate ----


class ConnectionPerRequest:
    """A client thread: a new connection for each GET /users/{id} (plus
    GET /debug/worker on it, to know which worker process answered), in a
    tight loop until stopped."""

    def __init__(self, srv, uid):
        self.srv = srv
        self.path = "/users/%d" % uid
        self.lock = threading.Lock()
        self.answers = []  # (status, worker pid or None, body)
        self.errors = []  # connections that failed without an answer
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_flag.is_set():
            try:
                c = RawClient(self.srv.port, timeout=5)
            except OSError as e:
                with self.lock:
                    self.errors.append("connect: %r" % e)
                continue
            try:
                c.send(get(self.path) + get("/debug/worker"))
                r = c.read_final_response()
            except (OSError, AssertionError) as e:
                with self.lock:
                    self.errors.append(repr(e))
                c.close()
                continue
            pid = None
            try:
                d = c.read_final_response()
                if d.status == 200:
                    pid = d.json()["pid"]
            except (OSError, AssertionError, ValueError, KeyError):
                pass
            c.close()
            with self.lock:
                self.answers.append((r.status, pid, r.body))

    def served_by(self, pid):
        with self.lock:
            return sum(1 for _, p, _ in self.answers if p == pid)

    def stop(self):
        self.stop_flag.set()
        self.thread.join(timeout=scaled(15))
        assert not self.thread.is_alive(), "the client thread is stuck"


def test_respawned_worker_accepts_only_when_database_ready(start_api):
    """SPEC 4: a worker accepts connections once its database connection is
    ready (the start gate), so a respawn is invisible to clients: with a
    new connection per GET /users/{id} in a tight loop and a worker
    SIGKILLed 5 times (each time once its replacement is up and answering),
    no answer is 503.  Connections the killed worker held may fail: they
    are counted, not failed.  (Before issue 6 a replacement accepted
    before its database connection was ready and answered 503.)

    A worker whose database is not ready within start_timeout_ms (2 s by
    default) accepts anyway and answers 503, by design; on a loaded machine
    a PostgreSQL connection can take that long, so the test moves that
    limit out of the way.  It is set through the environment, which builds
    that predate the key ignore, so that the test also runs against them."""
    srv = start_api(workers=2, env={"APIARY_START_TIMEOUT_MS": str(ms(20))})
    user = create_user(srv.client, name="Gate")
    load = ConnectionPerRequest(srv, user["id"])
    victims = []
    load.thread.start()
    try:
        wait_for(lambda: len(load.answers) >= 20, 10, "the client to get answers")
        for i in range(5):
            slot = 1 + i % 2
            victim = srv.workers()[slot]
            victims.append(victim)
            srv.expected_deaths += 1
            os.kill(victim, signal.SIGKILL)

            def replaced():
                p = srv.workers().get(slot)
                return p if p not in (None, victim) else None

            new = wait_for(replaced, 10, "worker %d (pid %d) to be replaced" % (slot, victim))
            # the replacement takes its share of the new connections
            wait_for(lambda: load.served_by(new) >= 20, 20,
                     "the replacement worker %d (pid %d) to answer" % (slot, new))
    finally:
        load.stop()

    statuses = {}
    for status, _, _ in load.answers:
        statuses[status] = statuses.get(status, 0) + 1
    print("\nstart gate: %d answers %r, %d connection errors, %d kills"
          % (len(load.answers), statuses, len(load.errors), len(victims)))
    unavailable = [(s, p, b) for s, p, b in load.answers if s == 503]
    if unavailable:
        pids = sorted({p for _, p, _ in unavailable if p is not None})
        log = [l for l in srv.error_log_lines()
               if any(str(p) in json.dumps(l) for p in pids + victims)
               or "accepting" in l.get("msg", "")]
        raise AssertionError(
            "%d answers were 503 (of %d: %r), from worker pids %r; first: %r;"
            " error log of those workers:\n%s"
            % (len(unavailable), len(load.answers), statuses, pids, unavailable[:3],
               "\n".join(json.dumps(l) for l in log)))
    wrong = [(s, p, b) for s, p, b in load.answers
             if s != 200 or json.loads(b) != user]
    assert not wrong, wrong[:5]
    # one client connection at a time: a kill can break at most one
    assert len(load.errors) <= len(victims), load.errors

    # the teardown's crash check: the kills are this test's doing
    crashes = srv.crash_lines()
    ours = [l for l in crashes
            if "killed by signal 9" in l and any(str(v) in l for v in victims)]
    assert len(ours) == len(victims), crashes
    srv.expected_deaths = len(ours)
    srv.wait_workers(2)
    srv.fd_baseline.update(settled_fd_counts(srv.worker_pids()))


# ---- a client's pipelined read does not overtake its own write ----


def test_pipelined_read_sees_the_same_clients_earlier_write(start_api):
    """RFC 9112 9.3.2: pipelined requests are answered as if one after the
    other.  The database client sends a batch's reads before its writes,
    so a PATCH followed by a GET of the same row on one connection, landing
    in one batch, could read the old row; the request's origin (its
    connection) keeps such a read behind the write."""
    srv = start_api(workers=1)
    uid = create_user(srv.client, name="Name 0")["id"]
    with srv.connect(timeout=20) as c:
        for i in range(1, 31):
            c.send(patch_request(uid, "Name %d" % i)
                   + get("/users/%d" % uid))
            p = c.read_final_response(timeout=10)
            g = c.read_final_response(timeout=10)
            assert p.status == 200 and p.json()["name"] == "Name %d" % i, p
            assert g.status == 200, g
            assert g.json()["name"] == "Name %d" % i, (
                "round %d: the GET pipelined after the PATCH read %r" % (i, g.json()))
