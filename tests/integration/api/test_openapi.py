"""GET /openapi.json (SPEC 2): real answers of a running server, success and
error, validated against the document's own schemas (JSON Schema 2020-12,
as OpenAPI 3.1 uses), headers included."""
import json

import jsonschema
import requests

from conftest import RawClient, get, mint_token

from .conftest import create_order, create_user


def resolve(doc, node):
    while "$ref" in node:
        parts = node["$ref"].lstrip("#/").split("/")
        node = doc
        for p in parts:
            node = node[p]
    return node


def check(doc, method, path, resp):
    """resp (a requests response) matches the operation's declared answer
    for its status: declared, its JSON body valid, its headers present."""
    op = doc["paths"][path][method.lower()]
    declared = op["responses"].get(str(resp.status_code))
    assert declared is not None, "%s %s: %d not declared" % (method, path, resp.status_code)
    declared = resolve(doc, declared)
    for name, h in declared.get("headers", {}).items():
        if resolve(doc, h).get("required"):
            assert name in resp.headers, (method, path, name, resp.headers)
    content = declared.get("content", {}).get("application/json")
    if content is None:
        assert not resp.content, (method, path, resp.content)
        return
    schema = dict(content["schema"])
    schema["components"] = doc["components"]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator(schema).validate(resp.json())


def test_document_is_served(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    jsonschema.Draft202012Validator.check_schema(doc["components"]["schemas"]["User"])


def test_answers_match_the_document(api, client):
    doc = client.get("/openapi.json").json()
    user = create_user(client)
    uid = user["id"]
    order = create_order(client, uid, key="oa-1")
    samples = [
        ("GET", "/health", "/health", {}),
        ("GET", "/ready", "/ready", {}),
        ("GET", "/users", "/users", {}),
        ("GET", "/users", "/users?page=0", {}),
        ("GET", "/users/{id}", "/users/%d" % uid, {}),
        ("GET", "/users/{id}", "/users/999999", {}),
        ("GET", "/users/{id}", "/users/abc", {}),
        ("GET", "/users/{id}/orders", "/users/%d/orders" % uid, {}),
        ("GET", "/users/{id}/audit", "/users/%d/audit" % uid, {}),
        ("GET", "/orders/{id}", "/orders/%d" % order["id"], {}),
        ("POST", "/users", "/users", {"json": {"name": "B", "email": user["email"]}}),
        ("POST", "/users", "/users", {"json": {"name": "B"}}),
        ("POST", "/users", "/users", {"data": "x", "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/users", "/users", {"json": {"name": "B", "email": "b@example.org"},
                                     "token": "forged"}),
        ("POST", "/users", "/users", {"json": {"name": "C", "email": "c@example.org"}}),
        ("PATCH", "/users/{id}", "/users/%d" % uid, {"json": {"name": "Renamed"}}),
        ("PATCH", "/users/{id}", "/users/%d" % uid, {"json": {}, "token": None}),
        ("POST", "/orders", "/orders", {"json": {"user_id": 999999, "amount_cents": 5,
                                                "currency": "EUR"}}),
        ("POST", "/orders", "/orders", {"json": {"user_id": uid, "amount_cents": 6,
                                                "currency": "EUR"},
                                       "headers": {"Idempotency-Key": "oa-1"}}),
        ("PATCH", "/orders/{id}", "/orders/%d" % order["id"], {"json": {"status": "paid"}}),
        ("PATCH", "/orders/{id}", "/orders/%d" % order["id"], {"json": {"status": "paid"}}),
        ("DELETE", "/users/{id}", "/users/%d" % uid, {}),
        ("DELETE", "/users/{id}", "/users/999999", {}),
    ]
    statuses = set()
    for method, pattern, path, kw in samples:
        r = client.request(method, path, **kw)
        check(doc, method, pattern, r)
        statuses.add(r.status_code)
    assert {200, 201, 400, 401, 404, 409, 415, 422} <= statuses, statuses
    # a 413 from the limit, on a raw connection
    with api.connect() as c:
        big = b"x" * 2000
        r = c.request(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + mint_token().encode() + b"\r\n"
                      b"Content-Length: %d\r\n\r\n" % (2 * 1048576) + big)
        assert r.status == 413
        assert "413" in doc["paths"]["/users"]["post"]["responses"]


class Raw:
    """A RawClient answer seen through the few requests.Response fields
    check() reads."""

    def __init__(self, resp):
        self.status_code = resp.status
        self.headers = requests.structures.CaseInsensitiveDict(resp.headers)
        self.content = resp.body

    def json(self):
        return json.loads(self.content)


def test_429_matches_the_document(start_api):
    srv = start_api(ratelimit_rate=1, ratelimit_burst=30)
    doc = srv.client.get("/openapi.json").json()
    # from 127.0.0.2: the fixture's checks from 127.0.0.1 keep their budget
    with RawClient(srv.port, source="127.0.0.2") as c:
        for _ in range(100):
            r = c.request(get("/users"))
            if r.status == 429:
                break
    assert r.status == 429, r
    check(doc, "GET", "/users", Raw(r))


def test_503_matches_the_document(start_api):
    srv = start_api(auth_secret="")
    doc = srv.client.get("/openapi.json").json()
    r = srv.client.post("/users", json={"name": "A", "email": "a@example.org"})
    assert r.status_code == 503
    check(doc, "POST", "/users", r)
