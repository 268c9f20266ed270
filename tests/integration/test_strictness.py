"""HTTP strictness of issue 6 (SPEC 3; RFC 9110, RFC 9112, RFC 3986),
black-box against a real apiaryd, over raw sockets.

A rejected request gets its status, the JSON error shape, `Connection:
close` and a closed connection, and the workers survive it (same pids).  An
accepted one is answered on a keep-alive connection that then serves the
next request, which shows the parser did not stop at it.  The fixtures
check after each test that the server still answers and leaks no
descriptor."""
import pytest

from conftest import assert_json_error, get


def assert_rejected(server, data, status, words=None):
    """data gets `status` and the connection is closed; returns the
    response.  words, when given, must appear in the error message."""
    pids = server.workers()
    with server.connect() as c:
        c.send(data)
        r = c.read_final_response()
        assert_json_error(r, status)
        assert r.header("Connection") == "close", r
        if words is not None:
            assert words in r.json()["error"]["message"], r
        c.assert_closed()
    assert server.workers() == pids, "a worker died or was replaced"
    return r


def assert_health_after(c):
    """The connection still serves GET /health."""
    r = c.request(get("/health"))
    assert r.status == 200 and r.json() == {"status": "ok"}, r


# ---- Host is one authority (RFC 9112 3.2, RFC 3986 3.2) ----

BAD_HOSTS = [
    ("issue-example", b"a b/c@d"),
    ("userinfo", b"user@a"),
    ("userinfo-password", b"u:p@a:80"),
    ("path", b"a/b"),
    ("space", b"a b"),
    ("list", b"a, b"),
    ("list-no-space", b"a,b"),
    ("port-letters", b"a:http"),
    ("port-65536", b"a:65536"),
    ("port-huge", b"a:" + b"9" * 30),
    ("two-ports", b"a:1:2"),
    ("empty-host-with-port", b":8080"),
    ("ipv6-unbracketed", b"::1"),
    ("ipv6-unclosed", b"[::1"),
    ("ipv6-bad", b"[::g]"),
    ("ipv6-zone-id", b"[fe80::1%25eth0]"),
    ("bad-pct", b"a%zz"),
    ("query", b"a?b"),
    ("non-ascii", "caf\u00e9".encode()),
]


@pytest.mark.parametrize("host", [h for _, h in BAD_HOSTS],
                         ids=[i for i, _ in BAD_HOSTS])
def test_invalid_host_is_400(server, host):
    assert_rejected(server, b"GET /health HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
                    400, "Host")


def test_invalid_absolute_form_authority_is_400(server):
    assert_rejected(server, b"GET http://u@x/health HTTP/1.1\r\nHost: x\r\n\r\n",
                    400)


GOOD_HOSTS = [b"x", b"x:8080", b"127.0.0.1:80", b"[::1]", b"[::1]:8080",
              b"[::ffff:192.0.2.1]:443", b"api.example.", b"xn--caf-dma.example",
              b"a:", b"a:65535", b""]


def test_valid_hosts_are_served(server):
    """Every form of authority, and the empty Host (accepted: RFC 9112 3.2
    and 3.3), on one keep-alive connection."""
    with server.connect() as c:
        for host in GOOD_HOSTS:
            r = c.request(b"GET /health HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            assert r.status == 200, (host, r)
        assert_health_after(c)


# ---- %2F is never a path separator (SPEC 3; RFC 3986 2.2) ----


@pytest.mark.parametrize("path", ["/users%2F1", "/users%2f1", "/health%2F",
                                  "/%2Fhealth", "/users%2F1%2Forders"])
def test_encoded_slash_is_not_a_separator(server, path):
    """The path stays encoded where %2F was, so no route matches it: 404
    (not the /users/{id} route), on a connection that stays open."""
    with server.connect() as c:
        r = c.request(get(path))
        assert_json_error(r, 404)
        assert "%2" in r.json()["error"]["message"], r
        assert r.header("Connection") != "close", r
        assert_health_after(c)


def test_other_escapes_are_still_decoded(server):
    with server.connect() as c:
        r = c.request(get("/%68ealth"))
        assert r.status == 200 and r.json() == {"status": "ok"}, r


# ---- CONNECT is 501 whatever its target (SPEC 3) ----


@pytest.mark.parametrize("target", [b"x:443", b"[::1]:443", b"/health",
                                    b"http://x/health", b"*"],
                         ids=["authority", "ipv6-authority", "origin",
                              "absolute", "asterisk"])
def test_connect_is_501(server, target):
    assert_rejected(server, b"CONNECT " + target + b" HTTP/1.1\r\nHost: x:443\r\n\r\n",
                    501)


# ---- OPTIONS * parses (RFC 9112 3.2.4) ----


def test_options_asterisk_is_not_a_parse_error(server):
    """The parser accepts OPTIONS * (path "*"); what answers it is the
    router's business (SPEC 3 wants 200 with Allow), so this test only
    requires an answer that is no parse error on a connection that stays
    open and serves the next request."""
    with server.connect() as c:
        r = c.request(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
        assert r.status not in (400, 501) and r.status < 500, r
        assert r.header("Connection") != "close", r
        assert_health_after(c)


# ---- fields that may occur once: never "last one wins" (SPEC 3) ----

ONCE_FIELDS = [
    (b"Authorization", b"Bearer a", b"Bearer b"),
    (b"Content-Type", b"application/json", b"text/plain"),
    (b"Idempotency-Key", b"k1", b"k2"),
    (b"X-Request-Id", b"r1", b"r2"),
]


@pytest.mark.parametrize("name,v1,v2", ONCE_FIELDS,
                         ids=[f[0].decode() for f in ONCE_FIELDS])
def test_field_sent_twice_is_400(server, name, v1, v2):
    assert_rejected(server, get("/health", extra=name + b": " + v1 + b"\r\n"
                                + name + b": " + v2 + b"\r\n"),
                    400, "duplicate " + name.decode())


@pytest.mark.parametrize("name,v1,v2", ONCE_FIELDS,
                         ids=[f[0].decode() for f in ONCE_FIELDS])
def test_field_sent_twice_with_same_value_is_400(server, name, v1, v2):
    assert_rejected(server, get("/health", extra=name + b": " + v1 + b"\r\n"
                                + name.lower() + b": " + v1 + b"\r\n"),
                    400, "duplicate " + name.decode())


def test_fields_sent_once_are_served(server):
    with server.connect() as c:
        extra = b"".join(n + b": " + v + b"\r\n" for n, v, _ in ONCE_FIELDS)
        r = c.request(get("/health", extra=extra))
        assert r.status == 200, r
        assert r.header("X-Request-Id") in (None, "r1"), r
        assert_health_after(c)


# ---- chunked framing: what RFC 9112 lets a recipient tolerate (SPEC 3) ----


def chunked(body):
    """GET /health (a route that reads and ignores a body) with a chunked
    body."""
    return get("/health", extra=b"Transfer-Encoding: chunked\r\n") + body


BAD_CHUNK_LINES = [
    ("space-after-size", b"5 \r\nhello\r\n0\r\n\r\n"),
    ("tab-after-size", b"5\t\r\nhello\r\n0\r\n\r\n"),
    ("space-before-ext", b"5 ;a=b\r\nhello\r\n0\r\n\r\n"),
    ("tab-before-ext", b"5\t;a=b\r\nhello\r\n0\r\n\r\n"),
    ("space-after-last-chunk-size", b"5\r\nhello\r\n0 \r\n\r\n"),
    ("bare-semicolon", b"5;\r\nhello\r\n0\r\n\r\n"),
    ("bare-semicolon-last-chunk", b"0;\r\n\r\n"),
    ("empty-ext-name", b"5;=v\r\nhello\r\n0\r\n\r\n"),
    ("empty-ext-between", b"5;a;;b\r\nhello\r\n0\r\n\r\n"),
    ("empty-ext-value", b"5;a=\r\nhello\r\n0\r\n\r\n"),
    ("space-in-ext", b"5; a=b\r\nhello\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("body", [b for _, b in BAD_CHUNK_LINES],
                         ids=[i for i, _ in BAD_CHUNK_LINES])
def test_lenient_chunk_line_is_400(server, body):
    assert_rejected(server, chunked(body), 400)


def test_strict_chunk_extensions_are_served(server):
    with server.connect() as c:
        r = c.request(chunked(b'5;a=b;c;d="x \\"y\\""\r\nhello\r\n0;e=f\r\n\r\n'))
        assert r.status == 200, r
        assert_health_after(c)


BAD_TRAILERS = [
    ("no-colon", b"X-T\r\n"),
    ("no-colon-after-good-one", b"A: 1\r\nB\r\n"),
    ("space-before-colon", b"X-T : 1\r\n"),
    ("empty-name", b": 1\r\n"),
    ("obs-fold", b"A: 1\r\n b\r\n"),
]


@pytest.mark.parametrize("trailer", [t for _, t in BAD_TRAILERS],
                         ids=[i for i, _ in BAD_TRAILERS])
def test_malformed_trailer_line_is_400(server, trailer):
    assert_rejected(server, chunked(b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n"), 400)


def test_trailer_fields_are_served(server):
    with server.connect() as c:
        r = c.request(chunked(b"5\r\nhello\r\n0\r\nA: 1\r\nB:\r\n\r\n"))
        assert r.status == 200, r
        assert_health_after(c)
