"""The orders API (SPEC 2) as a client sees it, checked in the database:
creation, validation, status changes and Idempotency-Key."""
import collections
import json
import threading

from conftest import RawClient, get, scaled, wait_for

from .conftest import (
    AuthSession,
    all_workers_status,
    assert_error,
    create_order,
    create_user,
    parse_timestamp,
)

ORDER_KEYS = {"id", "user_id", "amount_cents", "currency", "status", "created_at"}
MAX_AMOUNT = 2**53 - 1


def test_create_order(api, client):
    user = create_user(client)
    r = client.post("/orders", json={"user_id": user["id"], "amount_cents": 1999,
                                     "currency": "EUR"})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    order = r.json()
    assert set(order) == ORDER_KEYS
    assert order["user_id"] == user["id"]
    assert order["amount_cents"] == 1999 and order["currency"] == "EUR"
    assert order["status"] == "pending"
    assert r.headers.get("Idempotent-Replayed") is None
    created = parse_timestamp(order["created_at"])
    assert api.db.query(
        "SELECT user_id, amount_cents, currency, status, created_at FROM orders WHERE id = %s",
        (order["id"],)) == [(user["id"], 1999, "EUR", "pending", created)]
    assert api.db.query(
        "SELECT user_id, action, entity, entity_id, detail FROM audit_log"
        " WHERE action = 'order_created'") == [
        (user["id"], "order_created", "order", order["id"],
         {"amount_cents": 1999, "currency": "EUR"})]
    r = client.get("/orders/%d" % order["id"])
    assert r.status_code == 200 and r.json() == order
    # the largest amount a JSON client can hold exactly (2^53 - 1)
    big = create_order(client, user["id"], amount_cents=MAX_AMOUNT, currency="JPY")
    assert big["amount_cents"] == MAX_AMOUNT
    assert api.db.scalar("SELECT amount_cents FROM orders WHERE id = %s",
                         (big["id"],)) == MAX_AMOUNT


def test_create_order_unknown_user_422(api, client):
    before = api.db.counts()
    r = client.post("/orders", json={"user_id": 4242, "amount_cents": 5, "currency": "EUR"})
    assert_error(r, 422, "4242")
    assert api.db.counts() == before
    # a deleted user is unknown too
    user = create_user(client)
    assert client.delete("/users/%d" % user["id"]).status_code == 204
    before = api.db.counts()
    r = client.post("/orders", json={"user_id": user["id"], "amount_cents": 5,
                                     "currency": "EUR"})
    assert_error(r, 422)
    assert api.db.counts() == before


def test_create_order_bad_fields_400(api, client):
    user = create_user(client)
    uid = user["id"]
    good = {"user_id": uid, "amount_cents": 100, "currency": "EUR"}
    cases = []
    for amount in (0, -1, 1.5, 100.0, "10", MAX_AMOUNT + 1, 2**63 - 1, None, True, [1]):
        cases.append((dict(good, amount_cents=amount), "amount_cents"))
    for currency in ("eur", "EURO", "EU", "E1R", "", "\u20acUR", 978, None):
        cases.append((dict(good, currency=currency), "currency"))
    for user_id in (0, -1, "1", 1.5, None, True):
        cases.append((dict(good, user_id=user_id), "user_id"))
    for field in good:
        body = dict(good)
        del body[field]
        cases.append((body, "Missing field: %s" % field))
    cases.append((dict(good, status="paid"), "Unknown field: status"))
    cases.append((dict(good, id=7), "Unknown field: id"))
    before = api.db.counts()
    for body, fragment in cases:
        assert_error(client.post("/orders", json=body), 400, fragment)
    # beyond int64 the JSON parser itself gives up: still a 400
    for field in ("amount_cents", "user_id"):
        assert_error(client.post("/orders", json=dict(good, **{field: 2**63})), 400)
    assert api.db.counts() == before


def test_create_order_bad_bodies(api, client):
    user = create_user(client)
    body = json.dumps({"user_id": user["id"], "amount_cents": 5, "currency": "EUR"})
    before = api.db.counts()
    assert_error(client.post("/orders", data=body, headers={"Content-Type": "text/plain"}), 415)
    assert_error(client.post("/orders", data=body), 415)
    ctype = {"Content-Type": "application/json"}
    assert_error(client.post("/orders", data=body[:-1], headers=ctype), 400, "Malformed JSON")
    assert_error(client.post("/orders", data="[1, 2]", headers=ctype), 400)
    assert_error(client.post("/orders", data="", headers=ctype), 400)
    assert api.db.counts() == before


def test_get_order_404_400(client):
    assert assert_error(client.get("/orders/77"), 404) == "Order not found: 77"
    for oid in ("0", "-3", "x", "9223372036854775808"):
        assert_error(client.get("/orders/" + oid), 400)
        assert_error(client.patch("/orders/" + oid, json={"status": "paid"}), 400)


def test_order_status_transitions(api, client):
    user = create_user(client)
    paid = create_order(client, user["id"])
    cancelled = create_order(client, user["id"])
    r = client.patch("/orders/%d" % paid["id"], json={"status": "paid"})
    assert r.status_code == 200, r.text
    assert r.json() == dict(paid, status="paid")
    r = client.patch("/orders/%d" % cancelled["id"], json={"status": "cancelled"})
    assert r.status_code == 200, r.text
    assert r.json() == dict(cancelled, status="cancelled")
    assert client.get("/orders/%d" % paid["id"]).json()["status"] == "paid"
    assert api.db.query("SELECT id, status FROM orders ORDER BY id") == [
        (paid["id"], "paid"), (cancelled["id"], "cancelled")]
    assert api.db.query(
        "SELECT user_id, entity, entity_id, detail FROM audit_log"
        " WHERE action = 'order_status' ORDER BY id") == [
        (user["id"], "order", paid["id"], {"from": "pending", "to": "paid"}),
        (user["id"], "order", cancelled["id"], {"from": "pending", "to": "cancelled"}),
    ]
    # only from pending: every other transition is 409, nothing changes
    before = api.db.counts()
    for order, status in ((paid, "paid"), (paid, "cancelled"),
                          (cancelled, "paid"), (cancelled, "cancelled")):
        assert_error(client.patch("/orders/%d" % order["id"], json={"status": status}), 409)
    assert api.db.counts() == before
    assert api.db.query("SELECT id, status FROM orders ORDER BY id") == [
        (paid["id"], "paid"), (cancelled["id"], "cancelled")]


def test_order_status_bad_values_400_and_404(api, client):
    user = create_user(client)
    order = create_order(client, user["id"])
    path = "/orders/%d" % order["id"]
    before = api.db.counts()
    for body, fragment in [
        ({"status": "shipped"}, "status"),
        ({"status": "pending"}, "status"),
        ({"status": "PAID"}, "status"),
        ({"status": 1}, "status"),
        ({"status": None}, "status"),
        ({}, "status"),
        ({"status": "paid", "note": "x"}, "Unknown field: note"),
    ]:
        assert_error(client.patch(path, json=body), 400, fragment)
    json_type = {"Content-Type": "application/json"}
    assert_error(client.patch(path, data='{"status":', headers=json_type), 400, "Malformed JSON")
    assert_error(client.patch(path, data='{"status":"paid"}',
                              headers={"Content-Type": "text/plain"}), 415)
    assert api.db.counts() == before
    assert client.get(path).json() == order
    assert_error(client.patch("/orders/9999", json={"status": "paid"}), 404,
                 "Order not found: 9999")


def test_idempotency_key_replay_and_conflict(api, client):
    user = create_user(client)
    body = {"user_id": user["id"], "amount_cents": 700, "currency": "EUR"}
    key = {"Idempotency-Key": "order-7f3a"}
    r1 = client.post("/orders", json=body, headers=key)
    assert r1.status_code == 201, r1.text
    assert r1.headers.get("Idempotent-Replayed") is None
    order = r1.json()
    counts = api.db.counts()
    assert counts["orders"] == 1 and counts["idempotency_keys"] == 1
    # a retry: the original order, flagged, no new row
    r2 = client.post("/orders", json=body, headers=key)
    assert r2.status_code == 201, r2.text
    assert r2.headers.get("Idempotent-Replayed") == "true"
    assert r2.json() == order
    assert r2.headers.get("Location") == r1.headers.get("Location") == (
        "/orders/%d" % order["id"])
    # the same fields in another order and spacing are the same request
    data = '{ "currency":"EUR", "amount_cents": 700,\n"user_id": %d }' % user["id"]
    r3 = client.post("/orders", data=data,
                     headers=dict(key, **{"Content-Type": "application/json"}))
    assert r3.status_code == 201 and r3.json() == order
    assert r3.headers.get("Idempotent-Replayed") == "true"
    assert api.db.counts() == counts
    # the same key with other fields: 409, nothing written
    for other in (dict(body, amount_cents=701), dict(body, currency="USD")):
        assert_error(client.post("/orders", json=other, headers=key), 409)
    other_user = create_user(client)
    counts = api.db.counts()
    assert_error(client.post("/orders", json=dict(body, user_id=other_user["id"]), headers=key),
                 409)
    assert api.db.counts() == counts
    assert api.db.query("SELECT key, order_id FROM idempotency_keys") == [
        ("order-7f3a", order["id"])]
    # another key is another order
    r4 = client.post("/orders", json=body, headers={"Idempotency-Key": "order-7f3b"})
    assert r4.status_code == 201 and r4.json()["id"] != order["id"]
    assert r4.headers.get("Idempotent-Replayed") is None


def test_idempotency_key_validation(api, client):
    user = create_user(client)
    body = {"user_id": user["id"], "amount_cents": 5, "currency": "EUR"}
    before = api.db.counts()
    for key in ("", "k" * 256, "with space", "caf\u00e9".encode("utf-8")):
        assert_error(client.post("/orders", json=body, headers={"Idempotency-Key": key}),
                     400, "Idempotency-Key")
    assert api.db.counts() == before
    # 255 visible ASCII characters: accepted
    key = "".join(chr(33 + i % 94) for i in range(255))
    r = client.post("/orders", json=body, headers={"Idempotency-Key": key})
    assert r.status_code == 201, r.text
    assert api.db.query("SELECT key FROM idempotency_keys") == [(key,)]
    # a key with a failed request (unknown user) is not burnt
    key2 = {"Idempotency-Key": "after-422"}
    assert_error(client.post("/orders", json=dict(body, user_id=999), headers=key2), 422)
    r = client.post("/orders", json=body, headers=key2)
    assert r.status_code == 201 and r.headers.get("Idempotent-Replayed") is None


def test_concurrent_posts_with_one_key_make_one_order(api):
    """20 clients at once per key, 4 keys, 3 rounds: exactly one order per
    key, and every answer is 201 with that order (SPEC 2 Idempotency-Key)."""
    client = api.client
    users = [create_user(client) for _ in range(2)]
    before = all_workers_status(api)
    rounds, nkeys, per_key = 3, 4, 20
    keys = ["conc-%d-%d" % (r, i) for r in range(rounds) for i in range(nkeys)]
    bodies = {k: {"user_id": users[i % 2]["id"], "amount_cents": 100 + i, "currency": "EUR"}
              for i, k in enumerate(keys)}
    results = {k: [] for k in keys}
    lock = threading.Lock()

    def post(key, barrier):
        s = AuthSession()  # a connection of its own (writes with a token)
        try:
            # connect first, so that the POSTs leave together
            s.get(api.url("/health"), timeout=scaled(10))
            barrier.wait(timeout=scaled(20))
            r = s.post(api.url("/orders"), json=bodies[key],
                       headers={"Idempotency-Key": key}, timeout=scaled(10))
            out = (r.status_code, r.headers.get("Idempotent-Replayed"), r.text)
        except Exception as e:  # reported by the checks below
            out = ("exception", None, repr(e))
        finally:
            s.close()
        with lock:
            results[key].append(out)

    for r in range(rounds):
        round_keys = keys[r * nkeys:(r + 1) * nkeys]
        barrier = threading.Barrier(nkeys * per_key)
        threads = [threading.Thread(target=post, args=(k, barrier))
                   for k in round_keys for _ in range(per_key)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=scaled(60))
            assert not t.is_alive()

    problems = []
    for key in keys:
        got = results[key]
        statuses = sorted(str(st) for st, _, _ in got)
        if statuses != ["201"] * per_key:
            kinds = collections.Counter(st for st, _, _ in got)
            samples = {st: text[:100] for st, _, text in got if st != 201}
            problems.append("%s: %s; e.g. %r" % (key, dict(kinds), samples))
            continue
        orders = [json.loads(text) for _, _, text in got]
        if any(o != orders[0] for o in orders):
            problems.append("%s: different orders %r" % (key, {o["id"] for o in orders}))
        fresh = [rep for _, rep, _ in got if rep is None]
        if len(fresh) != 1:
            problems.append("%s: %d answers without Idempotent-Replayed" % (key, len(fresh)))
    # in the database: one order, one key row, one audit row per key
    rows = api.db.query("SELECT key, order_id FROM idempotency_keys ORDER BY key")
    assert [k for k, _ in rows] == sorted(keys), rows
    assert api.db.count("orders") == len(keys)
    assert api.db.count("audit_log", "action = 'order_created'") == len(keys)
    for key, order_id in rows:
        assert api.db.query("SELECT user_id, amount_cents FROM orders WHERE id = %s",
                            (order_id,)) == [(bodies[key]["user_id"],
                                              bodies[key]["amount_cents"])]
        for st, _, text in results[key]:
            if st == 201:
                assert json.loads(text)["id"] == order_id, (key, text)
    assert not problems, "\n".join(problems)
    # the races were settled without a database error (SPEC 6: a reused
    # key is an outcome, not an error that fails a batch).  Two workers
    # inserting one key do wait on each other's uncommitted row; a wait
    # longer than db_lock_wait_ms is a lock retry (pg.h "Lock waits"),
    # which resends its batch: every batch retry must be one of those.
    after = all_workers_status(api)
    for w in after:
        assert after[w]["db_errors"] == before[w]["db_errors"], (before, after)
        retries = after[w]["db_batch_retries"] - before[w]["db_batch_retries"]
        lock = after[w]["db_lock_retries"] - before[w]["db_lock_retries"]
        assert retries <= lock, (w, before[w], after[w])


def test_idempotency_race_loser_with_queries_behind_it(start_api):
    """The race for one Idempotency-Key made certain: the test holds an
    uncommitted row for the key, so the server's INSERT waits for it; more
    queries queue up behind it on the same database connection; then the
    test commits.  The server's request lost the race: it must answer from
    the stored row (409 here: the test stored another request's digest) and
    every query behind it must still get its own answer.  (Lock retries are
    off, so that the INSERT waits in PostgreSQL with the queries behind it;
    test_lock_wait.py has the race with them on.)"""
    srv = start_api(workers=1, db_lock_wait_ms=0,
                    request_timeout_ms=int(scaled(3) * 1000))
    user = create_user(srv.client)
    holder = srv.db.connect(autocommit=False)
    clients = []
    try:
        oid = holder.execute("INSERT INTO orders (user_id, amount_cents, currency)"
                             " VALUES (%s, 1, 'USD') RETURNING id", (user["id"],)).fetchone()[0]
        holder.execute("INSERT INTO idempotency_keys (key, request_hash, order_id)"
                       " VALUES ('race', 'stored by the test', %s)", (oid,))
        body = json.dumps({"user_id": user["id"], "amount_cents": 5, "currency": "EUR"})
        poster = srv.connect()
        clients.append(poster)
        poster.send(b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Idempotency-Key: race\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body.encode()))
        wait_for(lambda: srv.db.count(
            "pg_stat_activity", "application_name LIKE 'apiaryd worker%'"
            " AND wait_event_type = 'Lock' AND datname = current_database()"),
            5, "the server's INSERT to wait for the test's key")
        for _ in range(3):
            c = srv.connect()
            clients.append(c)
            c.send(get("/users/%d" % user["id"]))

        def behind():
            # sent (in flight) or held for the next batch while two
            # batches are out: either way queued behind the POST
            with RawClient(srv.port) as c:
                doc = c.request(get("/debug/worker")).json()
                return doc["db_in_flight"] + doc["db_batched"]
        wait_for(lambda: behind() == 4, 5, "three GETs queued behind the POST")
        before = all_workers_status(srv)
        holder.commit()
        answers = [c.read_final_response() for c in clients]
        seen = [(r.status, r.body[:90]) for r in answers]
        assert answers[0].status == 409 and answers[0].json()["error"]["code"] == 409, (
            "the POST that lost the race", seen)
        for r in answers[1:]:
            assert r.status == 200 and r.json() == user, ("a GET behind it", seen)
    finally:
        holder.close()
        for c in clients:
            c.close()
    assert srv.db.query("SELECT key, order_id FROM idempotency_keys") == [("race", oid)]
    assert srv.db.query("SELECT id FROM orders") == [(oid,)]
    assert srv.db.count("audit_log", "action = 'order_created'") == 0
    # lost without an error: nothing failed, nothing was resent
    after = all_workers_status(srv)
    assert after[1]["db_errors"] == before[1]["db_errors"], (before, after)
    assert after[1]["db_resent"] == before[1]["db_resent"], (before, after)
