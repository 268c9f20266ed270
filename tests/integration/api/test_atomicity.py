"""Multi-statement writes are atomic (SPEC 6): after a request that failed
(validation in the database, a conflict, or an error forced inside the
statement), the database holds none of its rows."""
from .conftest import assert_error, create_order, create_user


def snapshot(db):
    """Everything a write could touch."""
    return {
        "users": db.query("SELECT id, name, email FROM users ORDER BY id"),
        "orders": db.query("SELECT id, user_id, amount_cents, currency, status"
                           " FROM orders ORDER BY id"),
        "audit": db.query("SELECT id, user_id, action, entity_id, detail"
                          " FROM audit_log ORDER BY id"),
        "keys": db.query("SELECT key, request_hash, order_id FROM idempotency_keys"
                         " ORDER BY key"),
    }


def test_failed_user_writes_leave_no_rows(api, client):
    a = create_user(client, email="a@example.org")
    b = create_user(client, email="b@example.org")
    before = snapshot(api.db)
    # duplicate email on create and on update: 409, no user, no audit row
    assert_error(client.post("/users", json={"name": "A2", "email": "A@example.org"}), 409)
    assert_error(client.patch("/users/%d" % b["id"], json={"name": "New B",
                                                           "email": "a@EXAMPLE.org"}), 409)
    assert snapshot(api.db) == before
    # the name was not half-applied either
    assert client.get("/users/%d" % b["id"]).json() == b
    assert client.get("/users/%d" % a["id"]).json() == a


def test_failed_order_writes_leave_no_rows(api, client):
    user = create_user(client)
    order = create_order(client, user["id"], key="known")
    assert client.patch("/orders/%d" % order["id"], json={"status": "paid"}).status_code == 200
    before = snapshot(api.db)
    # unknown user: 422, no order, no audit row, the key not stored
    r = client.post("/orders", json={"user_id": 999, "amount_cents": 5, "currency": "EUR"},
                    headers={"Idempotency-Key": "unknown-user"})
    assert_error(r, 422)
    # key reused with another request: 409, nothing written
    r = client.post("/orders", json={"user_id": user["id"], "amount_cents": 6,
                                     "currency": "EUR"}, headers={"Idempotency-Key": "known"})
    assert_error(r, 409)
    # illegal transition: 409, status and audit unchanged
    assert_error(client.patch("/orders/%d" % order["id"], json={"status": "cancelled"}), 409)
    # a user with orders cannot be deleted: 409, user, orders and audit kept
    assert_error(client.delete("/users/%d" % user["id"]), 409)
    assert snapshot(api.db) == before


AUDIT_TRIGGER = """
CREATE FUNCTION apiary_test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log refuses rows (test trigger)';
END $$;
CREATE TRIGGER apiary_test_refuse_audit BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION apiary_test_refuse_audit();
"""


def test_audit_failure_rolls_back_every_write(start_api, fresh_db):
    """A trigger makes every INSERT into audit_log fail: each write must then
    fail as a whole (500) and leave no trace, which shows that the row and
    its audit entry commit together."""
    srv = start_api(database=fresh_db)
    client = srv.client
    user = create_user(client, name="Kept", email="kept@example.org")
    order = create_order(client, user["id"], key="before-trigger")
    bare = create_user(client, name="Bare", email="bare@example.org")
    fresh_db.execute(AUDIT_TRIGGER)
    before = snapshot(fresh_db)

    r = client.post("/users", json={"name": "New", "email": "new@example.org"})
    assert_error(r, 500)
    assert fresh_db.count("users", "email = 'new@example.org'") == 0
    assert_error(client.patch("/users/%d" % user["id"], json={"name": "Changed"}), 500)
    assert_error(client.delete("/users/%d" % bare["id"]), 500)
    r = client.post("/orders", json={"user_id": user["id"], "amount_cents": 42,
                                     "currency": "USD"}, headers={"Idempotency-Key": "k-500"})
    assert_error(r, 500)
    assert_error(client.patch("/orders/%d" % order["id"], json={"status": "paid"}), 500)
    assert snapshot(fresh_db) == before
    # the answers do not leak the database's message
    assert "trigger" not in r.text and "audit_log" not in r.text, r.text

    # the failures left the workers' connections usable
    fresh_db.execute("DROP TRIGGER apiary_test_refuse_audit ON audit_log")
    r = client.post("/users", json={"name": "New", "email": "new@example.org"})
    assert r.status_code == 201, r.text
    r = client.post("/orders", json={"user_id": user["id"], "amount_cents": 42,
                                     "currency": "USD"}, headers={"Idempotency-Key": "k-500"})
    assert r.status_code == 201 and r.headers.get("Idempotent-Replayed") is None, r.text
    assert client.patch("/orders/%d" % order["id"], json={"status": "paid"}).status_code == 200
    assert client.delete("/users/%d" % bare["id"]).status_code == 204
    assert fresh_db.count("audit_log") == len(before["audit"]) + 4


def test_check_constraint_failure_rolls_back(start_api, fresh_db):
    """A CHECK the server's validation does not know about (added by the
    test) fails the write of the user: 400 naming the constraint, and no
    row at all (no user, no audit entry)."""
    srv = start_api(database=fresh_db)
    fresh_db.execute("ALTER TABLE users ADD CONSTRAINT apiary_test_no_zed"
                     " CHECK (name NOT LIKE 'Zed%')")
    before = snapshot(fresh_db)
    r = srv.client.post("/users", json={"name": "Zed", "email": "zed@example.org"})
    assert_error(r, 400, "apiary_test_no_zed")
    assert snapshot(fresh_db) == before
    user = create_user(srv.client, name="Ann")
    before = snapshot(fresh_db)
    r = srv.client.patch("/users/%d" % user["id"], json={"name": "Zed"})
    assert_error(r, 400, "apiary_test_no_zed")
    assert snapshot(fresh_db) == before
