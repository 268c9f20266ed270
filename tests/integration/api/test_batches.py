"""
The worker's pipelined database connection under pipelining and load.

Requests read in one loop iteration go to PostgreSQL as one batch (one
implicit transaction, one commit).  These tests pin down what a client
must see regardless: each request gets its own outcome even when a
batch-mate fails, and results never get matched to the wrong request.
"""
import json
import threading

from conftest import RawClient, get

from .conftest import unique_email, all_workers_status


def post(path, doc, extra=b""):
    body = json.dumps(doc).encode()
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            + extra + b"\r\n" + body)


def test_one_failing_write_does_not_fail_its_batch(api):
    taken = unique_email("taken")
    r = api.client.post("/users", json={"name": "First", "email": taken})
    assert r.status_code == 201, r.text
    a, c = unique_email("a"), unique_email("c")
    users_before = api.db.count("users")
    audit_before = api.db.count("audit_log")
    # one write: the three requests are read, dispatched and sent to
    # PostgreSQL in the same loop iteration
    with RawClient(api.port) as conn:
        conn.send(post("/users", {"name": "A", "email": a})
                  + post("/users", {"name": "Dup", "email": taken.upper()})
                  + post("/users", {"name": "C", "email": c}))
        ra = conn.read_final_response()
        rdup = conn.read_final_response()
        rc = conn.read_final_response()
    assert ra.status == 201, ra
    assert rdup.status == 409, rdup
    assert rc.status == 201, rc
    assert ra.json()["email"] == a and rc.json()["email"] == c
    # exactly the two good users and their audit rows were committed
    assert api.db.count("users") == users_before + 2
    assert api.db.count("audit_log") == audit_before + 2
    assert api.db.count("users", "email = %s", (a,)) == 1
    assert api.db.count("users", "email = %s", (c,)) == 1
    # and it did go as one batch that was resent request by request
    docs = all_workers_status(api)
    assert sum(d["db_batch_retries"] for d in docs.values()) >= 1, docs


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
