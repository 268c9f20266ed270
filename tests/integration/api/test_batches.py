"""
The worker's pipelined database connection under pipelining and load.

Requests read in one loop iteration go to PostgreSQL as one batch (one
implicit transaction, one commit).  These tests pin down what a client
must see regardless: each request gets its own outcome even when a
batch-mate fails, and results never get matched to the wrong request.
"""
import json
import os
import signal
import threading

from conftest import RawClient, get, server_rx_queue, wait_for

from .conftest import all_workers_status, create_user, unique_email


def post(path, doc, extra=b""):
    body = json.dumps(doc).encode()
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            + extra + b"\r\n" + body)


def retries(srv):
    """db_batch_retries summed over the workers."""
    return sum(d["db_batch_retries"] for d in all_workers_status(srv).values())


def delete(path):
    return get(path, method=b"DELETE")


def test_duplicate_emails_do_not_fail_their_batch(api):
    """Defect 4 of issue 6 (SPEC 6): a duplicate email is answered from the
    statement's result (ON CONFLICT DO NOTHING), not from an error, so the
    batch it travels in is neither rolled back nor resent: the good POSTs
    commit with it and db_batch_retries does not move.  Duplicates of an
    existing user and of a batch-mate (the later statement sees the
    earlier one's row) both answer 409."""
    taken = unique_email("taken")
    r = api.client.post("/users", json={"name": "First", "email": taken})
    assert r.status_code == 201, r.text
    a, c, d = unique_email("a"), unique_email("c"), unique_email("d")
    users_before = api.db.count("users")
    audit_before = api.db.count("audit_log")
    retries_before = retries(api)
    # one write: the requests are read, dispatched and sent to PostgreSQL
    # in the same loop iteration, as one batch
    with RawClient(api.port) as conn:
        conn.send(post("/users", {"name": "A", "email": a})
                  + post("/users", {"name": "Dup", "email": taken.upper()})
                  + post("/users", {"name": "C", "email": c})
                  + post("/users", {"name": "D", "email": d})
                  + post("/users", {"name": "D again", "email": d.upper()}))
        answers = [conn.read_final_response() for _ in range(5)]
    seen = [(r.status, r.body[:80]) for r in answers]
    assert [r.status for r in answers] == [201, 409, 201, 201, 409], seen
    for r in (answers[1], answers[4]):
        assert r.json() == {"error": {"message": "Email already in use",
                                      "code": 409}}, r
    assert [answers[i].json()["email"] for i in (0, 2, 3)] == [a, c, d]
    # exactly the three good users and their audit rows were committed
    assert api.db.count("users") == users_before + 3
    assert api.db.count("audit_log") == audit_before + 3
    assert api.db.count("users", "lower(email) = lower(%s)", (d,)) == 1
    assert retries(api) == retries_before


def test_pipelined_lists_under_load_stay_in_step(api):
    for i in range(30):
        api.client.post("/users", json={"name": "U%d" % i,
                                        "email": unique_email("l")})
    errors = []

    def hammer(seed):
        with RawClient(api.port, timeout=20) as conn:
            for round_ in range(20):
                pages = [(seed + round_ + k) % 3 + 1 for k in range(8)]
                conn.send(b"".join(
                    get("/users?page=%d&per_page=10" % p) for p in pages))
                for p in pages:
                    r = conn.read_final_response()
                    if r.status != 200:
                        errors.append((p, r.status, r.body[:100]))
                        continue
                    ids = [u["id"] for u in r.json()]
                    want = list(range((p - 1) * 10 + 1, p * 10 + 1))
                    if ids != want:
                        errors.append((p, ids[:3], want[:3]))

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    docs = all_workers_status(api)
    for doc in docs.values():
        assert doc["db_reconnects"] == 0, doc
        assert doc["db_ready"] is True, doc
    assert "nobody waits" not in api.logs_text()


def patch(path, doc):
    return post(path, doc).replace(b"POST ", b"PATCH ", 1)


def test_issue6_failed_batch_resends_the_others_together(start_api):
    """Defect 4 of issue 6 (SPEC 6): when a query of a batch fails, it alone
    fails; its batch-mates are sent again together, as one batch, and again
    if that one fails.  Two PATCHes of rows the test holds locked fail by
    statement_timeout, the second in the first resent batch; the three
    POSTs pipelined around them must all be created, by one transaction:
    created_at is now(), the transaction's start time, so the three share
    it.  (Resent one by one, each would have had its own transaction.)"""
    srv = start_api(workers=1, statement_timeout_ms=300)
    locked = [create_user(srv.client, name="Locked %d" % i)["id"] for i in range(2)]
    emails = [unique_email("together") for _ in range(3)]
    before = all_workers_status(srv)[1]
    locker = srv.db.connect(autocommit=False)
    try:
        locker.execute("SELECT id FROM users WHERE id = ANY(%s) FOR UPDATE", (locked,))
        with RawClient(srv.port, timeout=20) as conn:
            conn.send(post("/users", {"name": "A", "email": emails[0]})
                      + patch("/users/%d" % locked[0], {"name": "Nope"})
                      + post("/users", {"name": "B", "email": emails[1]})
                      + patch("/users/%d" % locked[1], {"name": "Nope"})
                      + post("/users", {"name": "C", "email": emails[2]}))
            answers = [conn.read_final_response() for _ in range(5)]
    finally:
        locker.rollback()
        locker.close()
    seen = [(r.status, r.body[:80]) for r in answers]
    assert [r.status for r in answers] == [201, 504, 201, 504, 201], seen
    users = [answers[i].json() for i in (0, 2, 4)]
    assert [u["email"] for u in users] == emails, seen
    assert len({u["created_at"] for u in users}) == 1, users
    assert srv.db.count("users", "email = ANY(%s)", (emails,)) == 3
    assert srv.db.count("audit_log", "action = 'created' AND entity_id = ANY(%s)",
                        ([u["id"] for u in users],)) == 3
    assert srv.db.count("users", "name = 'Nope'") == 0
    after = all_workers_status(srv)[1]
    # the first batch and two resends of it, one sync each
    assert after["db_batch_retries"] - before["db_batch_retries"] == 2, (before, after)
    assert after["db_resent"] - before["db_resent"] == 4 + 3, (before, after)
    assert after["db_batches"] - before["db_batches"] == 3, (before, after)


def test_issue6_read_does_not_wait_for_its_batch_write(start_api):
    """SPEC 6: reads never wait for another request's commit.  A PATCH
    stuck on a row lock and a GET from another client travel in one batch
    (the worker is stopped while both arrive, so it reads them in one loop
    iteration); the GET was sent ahead of the write and is answered while
    the PATCH still waits.  (Sent after the PATCH, in its transaction, it
    used to wait for the lock too.)"""
    srv = start_api(workers=1)
    locked = create_user(srv.client, name="Locked")
    other = create_user(srv.client, name="Other")
    worker = srv.worker_pids()[0]
    locker = srv.db.connect(autocommit=False)
    writer, reader = srv.connect(), srv.connect()
    try:
        for c in (writer, reader):  # accepted and registered before the stop
            assert c.request(get("/health")).status == 200
        locker.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (locked["id"],))
        os.kill(worker, signal.SIGSTOP)
        try:
            writer.send(patch("/users/%d" % locked["id"], {"name": "Later"}))
            reader.send(get("/users/%d" % other["id"]))
            wait_for(lambda: all(server_rx_queue(srv.port, c.sock)
                                 for c in (writer, reader)),
                     5, "both requests to reach the stopped worker")
        finally:
            os.kill(worker, signal.SIGCONT)
        r = reader.read_final_response(timeout=5)
        assert r.status == 200 and r.json() == other, r
        # the PATCH is still waiting for the lock, in the same batch
        doc = all_workers_status(srv)[1]
        assert doc["db_in_flight"] == 1, doc
        wait_for(lambda: srv.db.count(
            "pg_stat_activity", "application_name LIKE 'apiaryd worker%'"
            " AND wait_event_type = 'Lock' AND datname = current_database()") == 1,
            5, "the PATCH to wait for the lock")
    finally:
        locker.rollback()
        locker.close()
    try:
        r = writer.read_final_response()
        assert r.status == 200 and r.json()["name"] == "Later", r
    finally:
        writer.close()
        reader.close()


def test_issue6_expected_outcomes_do_not_fail_their_batch(api):
    """SPEC 6: every outcome a client can cause on purpose is answered from
    what the statement returns: an unknown user for an order (422), the
    delete of a user who has orders (409), a PATCH to a taken email (409),
    a reused Idempotency-Key (replay, or 409 with another body), a missing
    user (404).  Pipelined with good writes in one batch, none of them
    rolls it back: db_batch_retries and db_errors do not move."""
    c = api.client
    owner = create_user(c, name="Owner")
    other = create_user(c, name="Other")
    body = {"user_id": owner["id"], "amount_cents": 700, "currency": "EUR"}
    keyed = c.post("/orders", json=body, headers={"Idempotency-Key": "k-issue6"})
    assert keyed.status_code == 201, keyed.text
    keyed = keyed.json()
    fresh = unique_email("fresh")
    key = b"Idempotency-Key: k-issue6\r\n"
    reqs = [
        (post("/users", {"name": "New", "email": fresh}), 201),
        (post("/orders", dict(body, user_id=987654)), 422),
        (delete("/users/%d" % owner["id"]), 409),
        (patch("/users/%d" % other["id"], {"email": owner["email"].upper()}), 409),
        (post("/orders", body, key), 201),
        (post("/orders", dict(body, amount_cents=701), key), 409),
        (patch("/users/%d" % other["id"], {"name": "Renamed"}), 200),
        (delete("/users/987654"), 404),
        (patch("/users/987654", {"name": "Nobody"}), 404),
        (post("/orders", dict(body, user_id=other["id"])), 201),
    ]
    counts = api.db.counts()
    before = all_workers_status(api)
    with RawClient(api.port) as conn:
        conn.send(b"".join(r for r, _ in reqs))
        answers = [conn.read_final_response() for _ in reqs]
    seen = [(r.status, r.body[:70]) for r in answers]
    assert [r.status for r in answers] == [st for _, st in reqs], seen
    assert "Unknown user: 987654" in answers[1].json()["error"]["message"]
    assert "has orders" in answers[2].json()["error"]["message"]
    assert answers[3].json()["error"]["message"] == "Email already in use"
    assert answers[4].json() == keyed and answers[4].header("Idempotent-Replayed") == "true"
    assert answers[6].json()["name"] == "Renamed"
    after = all_workers_status(api)
    for w in after:
        assert after[w]["db_batch_retries"] == before[w]["db_batch_retries"], (before, after)
        assert after[w]["db_errors"] == before[w]["db_errors"], (before, after)
    # written: the new user, the rename, the second order, and their audits
    now = api.db.counts()
    assert now["users"] == counts["users"] + 1
    assert now["orders"] == counts["orders"] + 1
    assert now["idempotency_keys"] == counts["idempotency_keys"]
    assert now["audit_log"] == counts["audit_log"] + 3
    assert api.db.scalar("SELECT email FROM users WHERE id = %s", (other["id"],)) == other["email"]
