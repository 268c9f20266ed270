"""The users API (SPEC 2) as a client sees it, checked in the database."""
import json

from conftest import RawClient, get, wait_for

from .conftest import (
    TABLES,
    assert_error,
    create_order,
    create_user,
    parse_timestamp,
    unique_email,
    wait_db_ready,
)

USER_KEYS = {"id", "name", "email", "created_at"}


def test_health_ready_and_debug_worker(api, client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.json() == {"status": "ready"}
    assert r.headers["Content-Type"].startswith("application/json")
    docs = wait_db_ready(api)
    assert set(docs) == set(api.workers())
    for wid, doc in docs.items():
        assert {"worker", "pid", "db_ready", "db_queries", "db_errors", "db_reconnects",
                "db_in_flight", "db_queued", "db_max_in_flight"} <= set(doc), doc
        assert doc["worker"] == wid and doc["pid"] == api.workers()[wid], doc
        assert doc["db_ready"] is True and doc["db_in_flight"] == 0, doc


def test_create_user(api, client):
    db = api.db
    email = unique_email()
    r = client.post("/users", json={"name": "  Ann Smith \t", "email": email})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    user = r.json()
    assert set(user) == USER_KEYS
    assert isinstance(user["id"], int) and user["id"] > 0
    assert user["name"] == "Ann Smith"  # trimmed
    assert user["email"] == email
    assert r.headers["Location"] == "/users/%d" % user["id"]
    created = parse_timestamp(user["created_at"])

    rows = db.query("SELECT name, email, created_at FROM users WHERE id = %s", (user["id"],))
    assert rows == [("Ann Smith", email, created)]
    audit = db.query(
        "SELECT action, entity, entity_id, detail FROM audit_log WHERE user_id = %s",
        (user["id"],),
    )
    assert audit == [("created", "user", user["id"], {"name": "Ann Smith", "email": email})]

    r = client.get("/users/%d" % user["id"])
    assert r.status_code == 200 and r.json() == user


def test_create_user_name_limits(client, api):
    r = client.post("/users", json={"name": "x" * 100, "email": unique_email()})
    assert r.status_code == 201, r.text
    # 100 characters, 200 bytes: the limit counts characters
    r = client.post("/users", json={"name": "\u00e9" * 100, "email": unique_email()})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "\u00e9" * 100
    before = api.db.counts()
    assert_error(client.post("/users", json={"name": "x" * 101, "email": unique_email()}),
                 400, "name")
    assert_error(client.post("/users", json={"name": "\u00e9" * 101, "email": unique_email()}),
                 400, "name")
    assert_error(client.post("/users", json={"name": " \t ", "email": unique_email()}),
                 400, "name")
    assert api.db.counts() == before


def test_create_user_email_limits(client, api):
    local = "a" * 64
    domain = ".".join(["b" * 63, "c" * 63, "d" * 61])  # 189 bytes
    email = local + "@" + domain
    assert len(email) == 254
    r = client.post("/users", json={"name": "Long", "email": email})
    assert r.status_code == 201, r.text
    before = api.db.counts()
    too_long = local + "@" + "e" + domain
    assert len(too_long) == 255
    assert_error(client.post("/users", json={"name": "Long", "email": too_long}), 400, "email")
    assert api.db.counts() == before


BAD_USER_BODIES = [
    ({"name": "Ann"}, "Missing field: email"),
    ({"email": "ann@example.org"}, "Missing field: name"),
    ({}, "Missing field: name"),
    ({"name": "Ann", "email": "ann@example.org", "age": 3}, "Unknown field: age"),
    ({"name": 1, "email": "ann@example.org"}, "name"),
    ({"name": None, "email": "ann@example.org"}, "name"),
    ({"name": ["Ann"], "email": "ann@example.org"}, "name"),
    ({"name": "Ann", "email": 7}, "email"),
    ({"name": "Ann", "email": {"a": "b"}}, "email"),
    ({"name": "", "email": "ann@example.org"}, "name"),
    ({"name": "Ann", "email": ""}, "email"),
    ({"name": "Ann", "email": "not-an-address"}, "email"),
    ({"name": "Ann", "email": "a@b@example.org"}, "email"),
    ({"name": "Ann", "email": "@example.org"}, "email"),
    ({"name": "Ann", "email": "ann@"}, "email"),
]


def test_create_user_bad_fields_400(client, api):
    """400 per bad field, the field named in the message; nothing written."""
    for body, fragment in BAD_USER_BODIES:
        assert_error(client.post("/users", json=body), 400, fragment)
    assert api.db.counts() == {t: 0 for t in TABLES}


def test_create_user_bad_bodies_400(client, api):
    ctype = {"Content-Type": "application/json"}
    malformed = [
        b'{"name":"Ann","email":"ann@example.org"',
        b'{"name":"Ann",}',
        b"{name: 'Ann'}",
        b'{"name":"Ann","email":"ann@example.org"} trailing',
        b'{"name":"\xff","email":"ann@example.org"}',
    ]
    for data in malformed:
        assert_error(client.post("/users", data=data, headers=ctype), 400, "Malformed JSON")
    # valid JSON, but not an object
    for data in (b"[]", b'["name","email"]', b"null", b"42", b'"s"'):
        assert_error(client.post("/users", data=data, headers=ctype), 400)
    assert_error(client.post("/users", data=b"", headers=ctype), 400)
    assert api.db.counts() == {t: 0 for t in TABLES}


def test_create_user_needs_json_content_type_415(client, api):
    body = json.dumps({"name": "Ann", "email": "ann@example.org"}).encode()
    for headers in ({}, {"Content-Type": "text/plain"},
                    {"Content-Type": "application/x-www-form-urlencoded"}):
        assert_error(client.post("/users", data=body, headers=headers), 415)
    assert api.db.counts() == {t: 0 for t in TABLES}
    r = client.post("/users", data=body,
                    headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 201, r.text


def test_create_user_duplicate_email_case_insensitive(client, api):
    user = create_user(client, email="Dup.Address@Example.org")
    before = api.db.counts()
    for email in ("Dup.Address@Example.org", "dup.address@example.org", "DUP.ADDRESS@EXAMPLE.ORG"):
        assert_error(client.post("/users", json={"name": "Other", "email": email}), 409)
    assert api.db.counts() == before
    assert api.db.query("SELECT id FROM users") == [(user["id"],)]


def test_body_too_large_413(start_api):
    srv = start_api(max_body_bytes=1024)
    ctype = {"Content-Type": "application/json"}
    body = json.dumps({"name": "x" * 2000, "email": unique_email()})
    assert_error(srv.client.post("/users", data=body, headers=ctype), 413)
    # the limit itself: 1025 bytes (JSON padded with spaces) are refused,
    # 1024 accepted
    body = json.dumps({"name": "y" * 50, "email": unique_email()}).encode()
    assert_error(srv.client.post("/users", data=body.ljust(1025), headers=ctype), 413)
    assert srv.db.counts() == {t: 0 for t in TABLES}
    r = srv.client.post("/users", data=body.ljust(1024), headers=ctype)
    assert r.status_code == 201, r.text


def test_get_user_404_and_bad_ids_400(client):
    assert assert_error(client.get("/users/42"), 404) == "User not found: 42"
    assert_error(client.get("/users/9223372036854775807"), 404,
                 "User not found: 9223372036854775807")
    # not a positive int64, whatever the method
    for uid in ("0", "-1", "abc", "1.5", "9223372036854775808", "1e3", "%20"):
        for method in ("GET", "PATCH", "DELETE"):
            kw = {"json": {"name": "B"}} if method == "PATCH" else {}
            assert_error(client.request(method, "/users/" + uid, **kw), 400)
        for sub in ("orders", "audit"):
            assert_error(client.get("/users/%s/%s" % (uid, sub)), 400)


def test_list_users(client, api):
    assert client.get("/users").json() == []
    # 105 users straight into the database
    api.db.execute(
        "INSERT INTO users (name, email) SELECT 'User ' || g, 'u' || g || '@example.org'"
        " FROM generate_series(1, 105) g"
    )
    ids = [r[0] for r in api.db.query("SELECT id FROM users ORDER BY id")]
    r = client.get("/users")
    assert r.status_code == 200
    page = r.json()
    assert [u["id"] for u in page] == ids[:20]  # default per_page 20
    assert all(set(u) == USER_KEYS for u in page)
    assert page[0]["name"] == "User 1" and page[0]["email"] == "u1@example.org"
    parse_timestamp(page[0]["created_at"])
    assert [u["id"] for u in client.get("/users?page=2").json()] == ids[20:40]
    assert [u["id"] for u in client.get("/users?page=3&per_page=7").json()] == ids[14:21]
    assert [u["id"] for u in client.get("/users?per_page=100").json()] == ids[:100]
    # over 100: capped at 100
    assert [u["id"] for u in client.get("/users?per_page=101").json()] == ids[:100]
    assert [u["id"] for u in client.get("/users?per_page=100000").json()] == ids[:100]
    assert [u["id"] for u in client.get("/users?page=2&per_page=100").json()] == ids[100:]
    assert client.get("/users?page=99").json() == []


def test_list_bad_paging_400(client):
    create_user(client)
    for path in ("/users", "/users/1/orders", "/users/1/audit"):
        for param in ("page", "per_page"):
            for value in ("0", "-1", "abc", "", "1.5", "99999999999999999999"):
                r = client.get("%s?%s=%s" % (path, param, value))
                assert_error(r, 400, param)


def test_patch_user(client, api):
    user = create_user(client, name="Ann", email="ann@example.org")
    uid = user["id"]
    r = client.patch("/users/%d" % uid, json={"name": "  Annie "})
    assert r.status_code == 200, r.text
    assert r.json() == dict(user, name="Annie")
    r = client.patch("/users/%d" % uid, json={"email": "annie@example.org"})
    assert r.status_code == 200, r.text
    assert r.json() == dict(user, name="Annie", email="annie@example.org")
    r = client.patch("/users/%d" % uid, json={"name": "A", "email": "a@example.org"})
    assert r.status_code == 200, r.text
    assert r.json() == dict(user, name="A", email="a@example.org")
    assert client.get("/users/%d" % uid).json() == r.json()
    assert api.db.query("SELECT name, email FROM users WHERE id = %s", (uid,)) == [
        ("A", "a@example.org")
    ]
    audit = api.db.query(
        "SELECT action, entity, entity_id, detail FROM audit_log"
        " WHERE user_id = %s AND action = 'updated' ORDER BY id", (uid,))
    assert audit == [
        ("updated", "user", uid, {"before": {"name": "Ann", "email": "ann@example.org"},
                                  "after": {"name": "Annie", "email": "ann@example.org"}}),
        ("updated", "user", uid, {"before": {"name": "Annie", "email": "ann@example.org"},
                                  "after": {"name": "Annie", "email": "annie@example.org"}}),
        ("updated", "user", uid, {"before": {"name": "Annie", "email": "annie@example.org"},
                                  "after": {"name": "A", "email": "a@example.org"}}),
    ]


def test_patch_user_own_email_other_case(client):
    user = create_user(client, email="case@example.org")
    r = client.patch("/users/%d" % user["id"], json={"email": "CASE@example.org"})
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "CASE@example.org"


def test_patch_user_bad_fields_400(client, api):
    user = create_user(client)
    before = api.db.counts()
    for body, fragment in [
        ({}, ""),
        ({"nickname": "x"}, "Unknown field: nickname"),
        ({"name": "B", "id": 5}, "Unknown field: id"),
        ({"name": 5}, "name"),
        ({"name": None}, "name"),
        ({"email": False}, "email"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"email": "nope"}, "email"),
    ]:
        assert_error(client.patch("/users/%d" % user["id"], json=body), 400, fragment)
    assert api.db.counts() == before
    assert client.get("/users/%d" % user["id"]).json() == user


def test_patch_user_malformed_and_content_type(client):
    user = create_user(client)
    path = "/users/%d" % user["id"]
    json_type = {"Content-Type": "application/json"}
    assert_error(client.patch(path, data=b'{"name":', headers=json_type), 400, "Malformed JSON")
    assert_error(client.patch(path, data=b'["name"]', headers=json_type), 400)
    assert_error(client.patch(path, data=b'{"name":"B"}', headers={"Content-Type": "text/plain"}),
                 415)
    assert client.get(path).json() == user


def test_patch_user_404_and_409(client, api):
    assert_error(client.patch("/users/999", json={"name": "B"}), 404, "User not found: 999")
    a = create_user(client, email="a@example.org")
    b = create_user(client, email="b@example.org")
    before = api.db.counts()
    assert_error(client.patch("/users/%d" % b["id"], json={"email": "A@EXAMPLE.ORG"}), 409)
    assert api.db.counts() == before
    assert client.get("/users/%d" % b["id"]).json() == b
    assert client.get("/users/%d" % a["id"]).json() == a


def test_email_races_answer_409(start_api):
    """SPEC 2, 6: a duplicate email is 409 even when the other row is not
    yet committed while the statement runs.  The test holds an uncommitted
    user with the address: a POST's ON CONFLICT waits for it and then
    inserts nothing (409, no error); a PATCH's existence check cannot see
    it, so its UPDATE raises 23505 once the test commits (409 all the
    same).  Nothing of either request is written."""
    srv = start_api(workers=1)
    other = create_user(srv.client, name="Other")
    for method, path, field in (("POST", "/users", {"name": "P"}),
                                ("PATCH", "/users/%d" % other["id"], {})):
        taken = unique_email("race")
        body = json.dumps(dict(field, email=taken.upper())).encode()
        holder = srv.db.connect(autocommit=False)
        try:
            holder.execute("INSERT INTO users (name, email) VALUES ('Holder', %s)",
                           (taken,))
            before = srv.db.counts()
            with srv.connect() as c:
                c.send(b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                       b"\r\nContent-Length: %d\r\n\r\n%s"
                       % (method.encode(), path.encode(), len(body), body))
                wait_for(lambda: srv.db.count(
                    "pg_stat_activity", "application_name LIKE 'apiaryd worker%'"
                    " AND wait_event_type = 'Lock' AND datname = current_database()"),
                    5, "the %s to wait for the uncommitted row" % method)
                holder.commit()
                r = c.read_final_response()
        finally:
            holder.close()
        assert r.status == 409, (method, r)
        assert r.json()["error"]["message"] == "Email already in use", (method, r)
        after = srv.db.counts()
        assert after["users"] == before["users"] + 1, method  # the holder's
        assert after["audit_log"] == before["audit_log"], method
    assert srv.client.get("/users/%d" % other["id"]).json() == other


def test_delete_user(client, api):
    user = create_user(client, name="Gone", email="gone@example.org")
    uid = user["id"]
    r = client.delete("/users/%d" % uid)
    assert r.status_code == 204 and r.content == b""
    assert_error(client.get("/users/%d" % uid), 404, "User not found: %d" % uid)
    assert_error(client.delete("/users/%d" % uid), 404, "User not found: %d" % uid)
    assert api.db.count("users") == 0
    # the audit trail outlives the user
    r = client.get("/users/%d/audit" % uid)
    assert r.status_code == 200, r.text
    trail = r.json()
    assert [(e["action"], e["entity"], e["entity_id"]) for e in trail] == [
        ("deleted", "user", uid), ("created", "user", uid)]
    assert trail[0]["detail"] == {"name": "Gone", "email": "gone@example.org"}
    assert api.db.count("audit_log", "user_id = %s AND action = 'deleted'", (uid,)) == 1
    # the address is free again
    create_user(client, email="gone@example.org")


def test_delete_user_with_orders_409(client, api):
    user = create_user(client)
    order = create_order(client, user["id"])
    before = api.db.counts()
    assert_error(client.delete("/users/%d" % user["id"]), 409)
    assert api.db.counts() == before
    assert client.get("/users/%d" % user["id"]).json() == user
    assert client.get("/orders/%d" % order["id"]).json() == order


def test_user_orders_list(client, api):
    user = create_user(client)
    other = create_user(client)
    assert client.get("/users/%d/orders" % user["id"]).json() == []
    orders = [create_order(client, user["id"], amount_cents=i + 1) for i in range(5)]
    create_order(client, other["id"])
    r = client.get("/users/%d/orders" % user["id"])
    assert r.status_code == 200
    assert r.json() == orders
    r = client.get("/users/%d/orders?page=2&per_page=2" % user["id"])
    assert r.json() == orders[2:4]
    assert client.get("/users/%d/orders?page=4&per_page=2" % user["id"]).json() == []
    assert_error(client.get("/users/999/orders"), 404, "999")


def test_user_audit_list(client, api):
    user = create_user(client, name="Ann", email="ann@example.org")
    uid = user["id"]
    client.patch("/users/%d" % uid, json={"name": "Bea"})
    order = create_order(client, uid, amount_cents=500, currency="USD")
    assert client.patch("/orders/%d" % order["id"], json={"status": "paid"}).status_code == 200
    r = client.get("/users/%d/audit" % uid)
    assert r.status_code == 200
    trail = r.json()
    for e in trail:
        assert set(e) == {"id", "action", "entity", "entity_id", "detail", "created_at"}, e
        parse_timestamp(e["created_at"])
    assert [(e["action"], e["entity"], e["entity_id"]) for e in trail] == [
        ("order_status", "order", order["id"]),
        ("order_created", "order", order["id"]),
        ("updated", "user", uid),
        ("created", "user", uid),
    ]
    ids = [e["id"] for e in trail]
    assert ids == sorted(ids, reverse=True)  # newest first
    assert trail[0]["detail"] == {"from": "pending", "to": "paid"}
    r = client.get("/users/%d/audit?page=2&per_page=3" % uid)
    assert [e["id"] for e in r.json()] == ids[3:]
    assert client.get("/users/%d/audit?page=3&per_page=3" % uid).json() == []
    assert_error(client.get("/users/999/audit"), 404, "999")


WRONG_METHODS = [
    ("PUT", "/users", {"GET", "HEAD", "POST"}),
    ("DELETE", "/users", {"GET", "HEAD", "POST"}),
    ("PATCH", "/users", {"GET", "HEAD", "POST"}),
    ("PUT", "/users/1", {"GET", "HEAD", "PATCH", "DELETE"}),
    ("POST", "/users/1", {"GET", "HEAD", "PATCH", "DELETE"}),
    ("GET", "/orders", {"POST"}),
    ("DELETE", "/orders", {"POST"}),
    ("PUT", "/orders/1", {"GET", "HEAD", "PATCH"}),
    ("DELETE", "/orders/1", {"GET", "HEAD", "PATCH"}),
    ("POST", "/users/1/orders", {"GET", "HEAD"}),
    ("DELETE", "/users/1/audit", {"GET", "HEAD"}),
    ("POST", "/ready", {"GET", "HEAD"}),
    ("POST", "/health", {"GET", "HEAD"}),
]


def test_wrong_method_405_with_allow(client):
    for method, path, allow in WRONG_METHODS:
        r = client.request(method, path, json={})
        assert_error(r, 405)
        got = {m.strip() for m in r.headers.get("Allow", "").split(",")}
        assert got == allow, (method, path, r.headers.get("Allow"))


def test_unknown_route_404(client):
    for path in ("/nope", "/users/1/nope", "/orders/1/x", "/userz", "/users/1/"):
        assert_error(client.get(path), 404)


def test_head_on_get_routes(api, client):
    user = create_user(client)
    order = create_order(client, user["id"])
    paths = ["/health", "/ready", "/users", "/users/%d" % user["id"],
             "/users/%d/orders" % user["id"], "/users/%d/audit" % user["id"],
             "/orders/%d" % order["id"], "/users/999"]
    with RawClient(api.port) as c:
        for path in paths:
            g = c.request(get(path))
            h = c.request(get(path, method=b"HEAD"), head=True)
            assert h.status == g.status, (path, h, g)
            assert h.header("Content-Type") == g.header("Content-Type"), path
            assert h.header("Content-Length") == g.header("Content-Length"), path
        # no body followed any HEAD answer: the connection is still in step
        r = c.request(get("/health"))
        assert r.status == 200 and r.json() == {"status": "ok"}


def test_pipelined_db_and_plain_routes_in_order(api, client):
    """Pipelined requests, some answered by the database and some not, come
    back in request order with the right bodies (SPEC 3)."""
    u1 = create_user(client, name="One")
    u2 = create_user(client, name="Two")
    reqs = [
        ("/users/%d" % u1["id"], 200, u1),
        ("/health", 200, {"status": "ok"}),
        ("/users/%d" % u2["id"], 200, u2),
        ("/nope", 404, None),
        ("/users/424242", 404, None),
        ("/ready", 200, {"status": "ready"}),
        ("/users?per_page=1", 200, [u1]),
        ("/users/0", 400, None),
        ("/users/%d" % u1["id"], 200, u1),
    ]
    for _ in range(3):
        with RawClient(api.port) as c:
            c.send(b"".join(get(p) for p, _, _ in reqs))
            for path, status, body in reqs:
                r = c.read_final_response()
                assert r.status == status, (path, r)
                if body is not None:
                    assert r.json() == body, (path, r)
                else:
                    assert r.json()["error"]["code"] == status, (path, r)
