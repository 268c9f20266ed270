"""Issue 6, lock waits (worker/pg.h "Lock waits"): a statement blocked on a
row lock that another session holds must not block the worker's one
database connection, and every query pipelined behind it, until the lock
goes or statement_timeout cancels it.  The worker's session has a short
lock_timeout (db_lock_wait_ms); a statement that waited that long fails
with 55P03, and the worker sends it again after a pause, until it
succeeds, its request is answered without it (dropped), or its lock waits
have taken statement_timeout (504, as a statement timeout is answered).

The lock is held by the test with SELECT ... FOR UPDATE in a psycopg
transaction of its own (RowLock).  Waiting is by polling with deadlines;
no test asserts a duration."""
import json
import os
import select
import signal

import pytest

from conftest import get, scaled, server_rx_queue, wait_for

from .conftest import (RowLock, all_workers_status, create_user, ms, patch_request,
                       worker_status)


def unanswered(c):
    """True when nothing has arrived on the RawClient c (not even a close)."""
    if c.buf:
        return False
    readable, _, _ = select.select([c.sock], [], [], 0)
    return not readable


def waited_for_lock(srv):
    """True once a worker's statement has waited for a lock in PostgreSQL:
    seen waiting in pg_stat_activity, or (where the statement now waits
    only briefly at a time) counted as retried.  Works against builds
    without db_lock_retries too."""
    if srv.db.count("pg_stat_activity", "application_name LIKE 'apiaryd worker%'"
                    " AND wait_event_type = 'Lock' AND datname = current_database()"):
        return True
    doc, _ = worker_status(srv)
    return doc.get("db_lock_retries", 0) > 0


def lock_retries(srv):
    """db_lock_retries of the one worker (KeyError on builds without it)."""
    return all_workers_status(srv)[1]["db_lock_retries"]


def test_reads_of_other_rows_are_answered_while_a_write_waits_for_a_lock(start_api):
    """The issue 6 benchmark, as a test: one worker; a PATCH of user A
    waits for A's row lock; meanwhile 50 GET /users/B on another
    connection are answered, while the lock is still held and the PATCH
    still unanswered.  Once the lock is released, the PATCH answers 200
    with the new name.  (Before, each GET waited behind the PATCH on the
    worker's one database connection until the lock went or
    statement_timeout cancelled the PATCH.)"""
    srv = start_api(workers=1, statement_timeout_ms=ms(30), request_timeout_ms=ms(60))
    a = create_user(srv.client, name="A before")
    b = create_user(srv.client, name="B")
    lock = RowLock(srv.db, a["id"])
    try:
        with srv.connect(timeout=60) as writer, srv.connect(timeout=5) as reader:
            writer.send(patch_request(a["id"], "A after"))
            wait_for(lambda: waited_for_lock(srv), 10, "the PATCH to wait for the row lock")
            for i in range(50):
                try:
                    r = reader.request(get("/users/%d" % b["id"]))
                except AssertionError as e:
                    raise AssertionError(
                        "GET %d of another row, while the PATCH waits for its lock:"
                        " %s" % (i + 1, e)) from None
                assert r.status == 200 and r.json() == b, (i, r)
            assert lock.held(), "the row lock went away during the GETs"
            assert unanswered(writer), (
                "the PATCH was answered while its row was locked: %r" % writer.buf[:300])
            # not applied either: readers see the old row
            assert srv.db.query("SELECT name FROM users WHERE id = %s",
                                (a["id"],)) == [("A before",)]
            lock.release()
            r = writer.read_final_response(timeout=10)
            assert r.status == 200, r
            assert r.json()["id"] == a["id"] and r.json()["name"] == "A after", r
    finally:
        lock.release()
    assert srv.client.get("/users/%d" % a["id"]).json()["name"] == "A after"
    assert srv.db.count("audit_log", "action = 'updated' AND entity_id = %s",
                        (a["id"],)) == 1


def test_lock_held_past_statement_timeout_answers_504(start_api):
    """A lock held longer than statement_timeout_ms: the PATCH's lock waits
    are limited to statement_timeout in all, so it is answered 504
    "Database statement timed out", as a statement cancelled by
    statement_timeout is, and nothing of it is applied: no new name, no
    audit row, not even once the lock is gone."""
    srv = start_api(workers=1, statement_timeout_ms=ms(0.5), request_timeout_ms=ms(60))
    a = create_user(srv.client, name="Before")
    with RowLock(srv.db, a["id"]) as lock:
        r = srv.client.patch("/users/%d" % a["id"], json={"name": "After"},
                             timeout=scaled(30))
        assert lock.held()
    assert r.status_code == 504, (r.status_code, r.text)
    assert r.json() == {"error": {"message": "Database statement timed out",
                                  "code": 504}}, r.text
    # the worker serves on, and the row is as it was
    assert srv.client.get("/users/%d" % a["id"]).json() == a
    assert srv.db.query("SELECT name FROM users WHERE id = %s", (a["id"],)) == [("Before",)]
    assert srv.db.count("audit_log", "action = 'updated'") == 0
    r = srv.client.patch("/users/%d" % a["id"], json={"name": "After"})
    assert r.status_code == 200 and r.json()["name"] == "After", r.text


def test_lock_retries_are_counted(start_api):
    """/debug/worker counts the statements sent again after a lock wait
    (db_lock_retries): a PATCH waiting for a lock is retried more than
    once, by itself (no other query of its batches is resent), and
    db_lock_retries stops moving once it has committed."""
    srv = start_api(workers=1, statement_timeout_ms=ms(30), request_timeout_ms=ms(60))
    a = create_user(srv.client, name="Before")
    before = all_workers_status(srv)[1]
    assert before["db_lock_retries"] == 0, before
    lock = RowLock(srv.db, a["id"])
    try:
        with srv.connect(timeout=60) as writer:
            writer.send(patch_request(a["id"], "After"))
            wait_for(lambda: lock_retries(srv) >= 3, 10, "the PATCH to be retried 3 times")
            assert unanswered(writer), writer.buf[:300]
            lock.release()
            r = writer.read_final_response(timeout=10)
            assert r.status == 200 and r.json()["name"] == "After", r
    finally:
        lock.release()
    after = all_workers_status(srv)[1]
    assert after["db_batch_retries"] == before["db_batch_retries"], (before, after)
    assert after["db_resent"] == before["db_resent"], (before, after)
    assert after["db_in_flight"] == 0, after
    assert after["db_lock_retries"] >= 3, after


def test_write_answered_504_while_waiting_for_a_lock_is_never_applied(start_api):
    """SPEC 6: a query whose request was answered (504 by the request
    timeout) is not sent if it has not been sent yet.  A PATCH waiting to
    be retried after a lock wait has not been: once its request has timed
    out, it is dropped, and releasing the lock later does not apply it.
    (Before, the PATCH stayed blocked in PostgreSQL after its 504 and
    committed as soon as the lock went.)"""
    srv = start_api(workers=1, statement_timeout_ms=ms(30), request_timeout_ms=ms(0.5))
    a = create_user(srv.client, name="Before")
    before = all_workers_status(srv)[1]
    lock = RowLock(srv.db, a["id"])
    try:
        r = srv.client.patch("/users/%d" % a["id"], json={"name": "After"},
                             timeout=scaled(30))
        assert r.status_code == 504, (r.status_code, r.text)
        wait_for(lambda: all_workers_status(srv)[1].get("db_dropped", 0)
                 > before.get("db_dropped", 0),
                 10, "the timed-out PATCH to be dropped")
        assert lock.held()
    finally:
        lock.release()
    # a request after the release: the PATCH, had it been sent again, would
    # have run before it on the worker's connection
    assert srv.client.get("/users/%d" % a["id"]).json() == a
    assert srv.db.query("SELECT name FROM users WHERE id = %s", (a["id"],)) == [("Before",)]
    assert srv.db.count("audit_log", "action = 'updated'") == 0
    assert all_workers_status(srv)[1]["db_in_flight"] == 0


def test_pipelined_read_after_a_lock_waiting_write_sees_it(start_api):
    """RFC 9112 9.3.2 and pg_query.origin: a client's read pipelined after
    its own write answers as if run after it.  The write waits for a lock
    and is retried later, alone; the read, pipelined behind it on the same
    connection, must not run ahead of it (answering the old row after the
    PATCH's 200).  Also a read sent once the write is known to wait."""
    srv = start_api(workers=1, statement_timeout_ms=ms(30), request_timeout_ms=ms(60))
    a = create_user(srv.client, name="Name 0")
    for i in range(1, 4):
        name = "Name %d" % i
        base = lock_retries(srv)
        lock = RowLock(srv.db, a["id"])
        try:
            with srv.connect(timeout=60) as c:
                # the GET in the PATCH's batch ...
                c.send(patch_request(a["id"], name) + get("/users/%d" % a["id"]))
                wait_for(lambda: waited_for_lock(srv), 10,
                         "the PATCH to wait for the row lock")
                # ... and one in a later batch
                c.send(get("/users/%d" % a["id"]))
                wait_for(lambda: lock_retries(srv) >= base + 2, 10,
                         "the PATCH to be retried after its lock waits")
                assert unanswered(c), c.buf[:300]
                lock.release()
                p = c.read_final_response(timeout=10)
                g1 = c.read_final_response(timeout=10)
                g2 = c.read_final_response(timeout=10)
        finally:
            lock.release()
        assert p.status == 200 and p.json()["name"] == name, p
        for g in (g1, g2):
            assert g.status == 200, g
            assert g.json()["name"] == name, (
                "round %d: a GET pipelined after the PATCH read %r" % (i, g.json()))


@pytest.mark.parametrize("failure", ["lock_wait", "statement_timeout"])
def test_read_after_a_write_rolled_back_with_its_batch_sees_it(start_api, failure):
    """A PATCH of a locked row fails its batch (a lock wait, to be retried;
    or, with lock retries off, a statement timeout), so a batch-mate's
    write from another client is rolled back and sent again.  That
    client's GET of the row it wrote, pipelined behind its PATCH, is sent
    while the failing batch is still on the wire (it then runs before the
    write is sent again), or waits for the resend: either way it answers
    the new row, after the PATCH's 200 (RFC 9112 9.3.2).  The worker is
    stopped while both PATCHes arrive, so that they travel in one batch.
    (Before, the GET could answer the old row.)"""
    if failure == "lock_wait":
        srv = start_api(workers=1, statement_timeout_ms=ms(30), request_timeout_ms=ms(60))
    else:
        srv = start_api(workers=1, db_lock_wait_ms=0, statement_timeout_ms=ms(0.3),
                        request_timeout_ms=ms(60))
    locked = create_user(srv.client, name="Locked")
    a = create_user(srv.client, name="Name 0")
    worker = srv.worker_pids()[0]
    for i in range(1, 6):
        name = "Name %d" % i
        lock = RowLock(srv.db, locked["id"])
        writer, other = srv.connect(timeout=60), srv.connect(timeout=60)
        try:
            for c in (writer, other):  # accepted and registered before the stop
                assert c.request(get("/health")).status == 200
            os.kill(worker, signal.SIGSTOP)
            try:
                other.send(patch_request(locked["id"], "Locked %d" % i))
                writer.send(patch_request(a["id"], name))
                wait_for(lambda: all(server_rx_queue(srv.port, c.sock)
                                     for c in (writer, other)),
                         5, "both PATCHes to reach the stopped worker")
            finally:
                os.kill(worker, signal.SIGCONT)
            writer.send(get("/users/%d" % a["id"]))
            p = writer.read_final_response(timeout=10)
            g = writer.read_final_response(timeout=10)
            if failure == "lock_wait":
                assert unanswered(other), other.buf[:300]
            lock.release()
            o = other.read_final_response(timeout=10)
        finally:
            lock.release()
            writer.close()
            other.close()
        assert p.status == 200 and p.json()["name"] == name, p
        assert g.status == 200 and g.json()["name"] == name, (
            "round %d: the GET pipelined after the PATCH read %r" % (i, g.json()))
        if failure == "lock_wait":
            assert o.status == 200 and o.json()["name"] == "Locked %d" % i, o
        else:
            assert o.status == 504, o


def test_idempotency_race_loser_is_retried_after_its_lock_waits(start_api):
    """The loser of an Idempotency-Key race waits for the winner's
    transaction, a lock wait like any other: its INSERT is retried while
    reads on other connections are answered, and once the winner (the
    test) commits, the retry inserts nothing and the POST is answered from
    the stored row (409: the test stored another request's digest), with
    no second order."""
    srv = start_api(workers=1, statement_timeout_ms=ms(30), request_timeout_ms=ms(60))
    user = create_user(srv.client)
    holder = srv.db.connect(autocommit=False)
    try:
        oid = holder.execute("INSERT INTO orders (user_id, amount_cents, currency)"
                             " VALUES (%s, 1, 'USD') RETURNING id",
                             (user["id"],)).fetchone()[0]
        holder.execute("INSERT INTO idempotency_keys (key, request_hash, order_id)"
                       " VALUES ('race', 'stored by the test', %s)", (oid,))
        body = json.dumps({"user_id": user["id"], "amount_cents": 5, "currency": "EUR"})
        with srv.connect(timeout=60) as poster, srv.connect(timeout=5) as reader:
            poster.send(b"POST /orders HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nIdempotency-Key: race\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode()))
            wait_for(lambda: lock_retries(srv) >= 2, 10,
                     "the POST's INSERT to be retried after waiting for the key")
            for _ in range(3):
                r = reader.request(get("/users/%d" % user["id"]))
                assert r.status == 200 and r.json() == user, r
            assert unanswered(poster), poster.buf[:300]
            holder.commit()
            r = poster.read_final_response(timeout=10)
        assert r.status == 409 and r.json()["error"]["code"] == 409, r
    finally:
        holder.close()
    assert srv.db.query("SELECT key, order_id FROM idempotency_keys") == [("race", oid)]
    assert srv.db.query("SELECT id FROM orders") == [(oid,)]


def test_lock_wait_off_keeps_waiting_in_postgres(start_api):
    """db_lock_wait_ms = 0 turns lock retries off: the PATCH waits for the
    lock in PostgreSQL, as before, and commits once it is released."""
    srv = start_api(workers=1, db_lock_wait_ms=0, statement_timeout_ms=ms(30),
                    request_timeout_ms=ms(60))
    a = create_user(srv.client, name="Before")
    lock = RowLock(srv.db, a["id"])
    try:
        with srv.connect(timeout=60) as writer:
            writer.send(patch_request(a["id"], "After"))
            wait_for(lambda: srv.db.count(
                "pg_stat_activity", "application_name LIKE 'apiaryd worker%'"
                " AND wait_event_type = 'Lock' AND datname = current_database()"),
                10, "the PATCH to wait for the row lock")
            lock.release()
            r = writer.read_final_response(timeout=10)
            assert r.status == 200 and r.json()["name"] == "After", r
    finally:
        lock.release()
    assert all_workers_status(srv)[1]["db_lock_retries"] == 0


# A deferred check that takes an advisory lock at commit: a stand-in for
# the locks a commit itself waits for (NOTIFY's queue lock, which every
# PATCH takes through pg_notify(); a deferred foreign key check).
COMMIT_GATE = """
CREATE FUNCTION commit_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(4242);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER commit_gate AFTER UPDATE ON users
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION commit_gate();
"""


def commit_waits(srv):
    """True while a worker's commit waits for the advisory lock."""
    return srv.db.count(
        "pg_stat_activity", "application_name LIKE 'apiaryd worker%'"
        " AND wait_event = 'advisory' AND datname = current_database()") > 0


def test_commit_that_waits_for_a_lock_keeps_results_in_step(start_api, fresh_db):
    """A batch whose queries all ran but whose commit waited too long for a
    lock: PostgreSQL answers the batch's sync with a 55P03 error, a result
    that belongs to no query.  The PATCH whose commit waits must be retried
    (and answer 200 once the lock goes), and a GET of another row sent in
    the next batch meanwhile must get its own row.  (Before, the sync's
    error was taken for the next query's result, and from then on every
    result went to the query after its own: GETs answered with another
    statement's row, PATCHes 503, until the connection was reset.)"""
    fresh_db.execute(COMMIT_GATE)
    srv = start_api(database=fresh_db, workers=1, db_lock_wait_ms=ms(0.5),
                    statement_timeout_ms=ms(30), request_timeout_ms=ms(60))
    a = create_user(srv.client, name="A 0")
    b = create_user(srv.client, name="B")
    for i in range(1, 4):
        name = "A %d" % i
        gate = fresh_db.connect()
        try:
            gate.execute("SELECT pg_advisory_lock(4242)")
            with srv.connect(timeout=60) as writer, srv.connect(timeout=10) as reader:
                writer.send(patch_request(a["id"], name))
                wait_for(lambda: commit_waits(srv), 10,
                         "the PATCH's commit to wait for the lock")
                for _ in range(3):
                    g = reader.request(get("/users/%d" % b["id"]))
                    assert g.status == 200 and g.json() == b, (
                        "round %d: GET of another row while a commit waits: %r"
                        % (i, g.body[:300]))
                assert unanswered(writer), writer.buf[:300]
                gate.execute("SELECT pg_advisory_unlock(4242)")
                p = writer.read_final_response(timeout=10)
                assert p.status == 200 and p.json()["name"] == name, (
                    "round %d: %r" % (i, p.body[:300]))
        finally:
            gate.close()
        r = srv.client.get("/users/%d" % a["id"])
        assert r.status_code == 200 and r.json()["name"] == name, r.text
        r = srv.client.get("/users/%d" % b["id"])
        assert r.status_code == 200 and r.json() == b, r.text
    assert fresh_db.query("SELECT name FROM users WHERE id = %s",
                          (a["id"],)) == [(name,)]
