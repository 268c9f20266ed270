"""HTTP/1.1 behaviour a client sees (SPEC 2 and 3): routes, errors,
persistent connections, pipelining, Expect, percent-decoding, Date."""
import datetime
import email.utils
import socket

import pytest
import requests

from conftest import RawClient, assert_json_error, get, scaled, wait_for


def test_health(server):
    r = requests.get(server.url("/health"), timeout=scaled(10))
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["Server"] == "apiary"
    assert r.headers["Connection"] == "keep-alive"
    assert "Date" in r.headers


def test_head_has_get_headers_and_no_body(server):
    with server.connect() as c:
        g = c.request(get("/health"))
        h = c.request(get("/health", method=b"HEAD"), head=True)
        # the next response must start right after HEAD's header section
        g2 = c.request(get("/health"))
    assert h.status == 200 and h.body == b""
    assert h.header("Content-Length") == g.header("Content-Length") == "15"
    assert h.header("Content-Type") == g.header("Content-Type")
    assert g2.status == 200 and g2.json() == {"status": "ok"}


def test_unknown_path_is_json_404_and_keeps_connection(server):
    with server.connect() as c:
        r = c.request(get("/nope"))
        assert_json_error(r, 404)
        assert r.header("Connection") == "keep-alive"
        h = c.request(get("/nope", method=b"HEAD"), head=True)
        assert h.status == 404 and h.body == b""
        assert c.request(get("/health")).status == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405_with_allow(server, method):
    r = requests.request(method, server.url("/health"), timeout=scaled(10))
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, HEAD"
    doc = r.json()
    assert doc["error"]["code"] == 405 and doc["error"]["message"]


# ---- persistent connections ----


def test_session_reuses_one_connection(server):
    with requests.Session() as s:
        for _ in range(5):
            r = s.get(server.url("/health"), timeout=scaled(10))
            assert r.status_code == 200 and r.json() == {"status": "ok"}
    # the access log names the client address:port of each request
    lines = wait_for(
        lambda: [l for l in server.access_log_lines() if l["path"] == "/health"][-5:]
        if len(server.access_log_lines()) >= 6 else None,
        10, "5 session requests in the access log")
    assert len({l["client"] for l in lines}) == 1, lines
    for l in lines:
        assert l["method"] == "GET" and l["status"] == 200 and l["bytes"] > 0


def test_raw_keepalive_many_requests(server):
    with server.connect() as c:
        for i in range(10):
            r = c.request(get("/health" if i % 2 == 0 else "/nope"))
            assert r.status == (200 if i % 2 == 0 else 404)
            assert r.header("Connection") == "keep-alive"


def test_http10_without_keepalive_closes(server):
    with server.connect() as c:
        r = c.request(b"GET /health HTTP/1.0\r\n\r\n")
        assert r.status == 200 and r.json() == {"status": "ok"}
        assert r.header("Connection") == "close"
        c.assert_closed()


def test_http10_with_keepalive_stays_open(server):
    with server.connect() as c:
        for _ in range(3):
            r = c.request(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert r.status == 200
            assert r.header("Connection").lower() == "keep-alive"
        # HTTP/1.0 ends with a plain request: answered, then closed
        r = c.request(b"GET /health HTTP/1.0\r\n\r\n")
        assert r.status == 200 and r.header("Connection") == "close"
        c.assert_closed()


def test_http11_connection_close_closes(server):
    with server.connect() as c:
        assert c.request(get("/health")).status == 200
        r = c.request(get("/health", extra=b"Connection: close\r\n"))
        assert r.status == 200 and r.json() == {"status": "ok"}
        assert r.header("Connection") == "close"
        c.assert_closed()


def test_connection_header_tokens_are_case_insensitive(server):
    with server.connect() as c:
        r = c.request(get("/health", extra=b"Connection: Close\r\n"))
        assert r.status == 200 and r.header("Connection") == "close"
        c.assert_closed()


def test_pipelined_100_requests_answered_in_order(server):
    kinds = [("GET", "/health", 200), ("GET", "/nope", 404), ("HEAD", "/health", 200)]
    plan = [kinds[i % 3] for i in range(100)]
    data = b"".join(get(p, method=m.encode()) for m, p, _ in plan)
    with server.connect() as c:
        c.send(data)  # one sendall(): the server sees them all at once
        got = []
        for m, p, status in plan:
            r = c.read_response(head=(m == "HEAD"))
            got.append(r.status)
            if m == "HEAD":
                assert r.body == b"" and r.header("Content-Length") == "15"
            elif status == 200:
                assert r.json() == {"status": "ok"}
            else:
                assert_json_error(r, 404)
        assert got == [s for _, _, s in plan]
        # nothing extra was sent, and the connection still works
        r = c.request(get("/health"))
        assert r.status == 200 and r.json() == {"status": "ok"}
        assert c.buf == b""


def test_pipelined_requests_split_at_every_byte(server):
    """Two requests sent in small pieces that cut through both."""
    data = get("/health") + get("/nope")
    with server.connect() as c:
        for i in range(0, len(data), 7):
            c.send(data[i:i + 7])
        assert c.read_response().status == 200
        assert c.read_response().status == 404


# ---- Expect ----


def test_expect_100_continue_without_body(server):
    with server.connect() as c:
        c.send(get("/health", extra=b"Expect: 100-continue\r\n"))
        r = c.read_final_response()  # a 100 would be allowed, not required
        assert r.status == 200 and r.json() == {"status": "ok"}
        assert c.request(get("/health")).status == 200


def test_expect_100_continue_with_body(server):
    """GET /health reads (and ignores) a body, so the 100-continue flow can be
    seen: the interim 100 comes before the client sends the body."""
    with server.connect() as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.read_response()
        assert r.status == 100, r
        c.send(b"hello")
        r = c.read_final_response()
        assert r.status == 200 and r.json() == {"status": "ok"}
        assert c.request(get("/health")).status == 200


def test_expect_100_continue_with_too_large_body_gets_413_not_100(apiary):
    srv = apiary(max_body_bytes=64)
    with srv.connect() as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.read_response()
        assert_json_error(r, 413)
        assert r.header("Connection") == "close"
        c.assert_closed()


def test_unknown_expectation_is_417(server):
    with server.connect() as c:
        r = c.request(get("/health", extra=b"Expect: something\r\n"))
        assert_json_error(r, 417)
        assert r.header("Connection") == "close"
        c.assert_closed()


# ---- percent-decoding ----


@pytest.mark.parametrize("path", ["/heal%74h", "/%68%65%61%6C%74%68", "/health%3F"])
def test_percent_decoded_paths(server, path):
    with server.connect() as c:
        r = c.request(get(path))
    if path.endswith("%3F"):
        # an encoded "?" is part of the path, not a query separator
        assert_json_error(r, 404)
    else:
        assert r.status == 200 and r.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/%00", "/%zz", "/health%", "/health%7", "/%2"])
def test_bad_percent_encoding_is_400(server, path):
    pids = server.worker_pids()
    with server.connect() as c:
        r = c.request(get(path))
        assert_json_error(r, 400)
    assert server.worker_pids() == pids
    server.assert_answers()
    server.assert_no_fd_leak()


def test_error_message_escapes_decoded_path(server):
    """The 404 message quotes the decoded path; quotes, backslashes and
    control characters in it must still give valid JSON."""
    with server.connect() as c:
        r = c.request(get("/a%22b%5Cc%0Ad"))
    assert_json_error(r, 404)
    assert 'a"b\\c\nd' in r.json()["error"]["message"], r.body


def test_error_message_keeps_utf8_path(server):
    # issue 2 regression: each byte used to come back as \u00XX
    with server.connect() as c:
        r = c.request(get("/caf%C3%A9"))
    assert_json_error(r, 404)
    assert "/caf\u00e9" in r.json()["error"]["message"], r.body


# ---- Date ----


def _date(resp):
    value = resp.header("Date")
    assert value and value.endswith(" GMT"), resp
    return value, email.utils.parsedate_to_datetime(value)


def test_date_header_is_imf_fixdate_near_now(server):
    with server.connect() as c:
        value, when = _date(c.request(get("/health")))
    assert when.tzinfo is not None
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - when).total_seconds()) <= 5 + scaled(2), (value, now)
    # IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
    assert len(value) == 29, value
    assert email.utils.format_datetime(when, usegmt=True) == value


def test_date_header_moves_forward(server):
    with server.connect() as c:
        first_value, first = _date(c.request(get("/health")))

        def later():
            value, when = _date(c.request(get("/health")))
            return when if when > first else None

        second = wait_for(later, 5, "the Date header to advance", interval=0.1)
    assert 0 < (second - first).total_seconds() <= 5 + scaled(2)


# ---- addresses ----


def test_listens_on_ipv4_and_ipv6_loopback(apiary):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    srv = apiary(listen="127.0.0.1:{port},[::1]:{port}")
    with RawClient(srv.port, host="::1", family=socket.AF_INET6) as c:
        r = c.request(get("/health"))
        assert r.status == 200 and r.json() == {"status": "ok"}
    srv.assert_answers()
    lines = wait_for(lambda: [l for l in srv.access_log_lines()
                              if l["client"].startswith("[::1]")],
                     10, "the IPv6 request in the access log")
    assert lines[0]["status"] == 200


def test_health_allocates_nothing_once_warm(apiary):
    # STYLE 6: no malloc on the hot path.  "allocs" counts the worker's
    # calls to malloc for buffers and request state.
    srv = apiary(workers=1, debug_endpoints="on")
    with srv.connect() as c:
        def allocs():
            return c.request(get("/debug/worker")).json()["allocs"]

        for _ in range(3):  # warm: the free lists fill up
            c.send(get() * 50)
            for _ in range(50):
                assert c.read_final_response().status == 200
        before = allocs()
        for _ in range(20):
            c.send(get() * 50 + get("/health", method=b"HEAD"))
            for _ in range(50):
                assert c.read_final_response().status == 200
            assert c.read_final_response(head=True).status == 200
        assert allocs() == before


def test_options_asterisk_answers_for_the_server(server):
    # SPEC 3, RFC 9110 9.3.7: OPTIONS * is about the server as a whole
    with server.connect() as c:
        r = c.request(get("*", method=b"OPTIONS"))
        assert r.status == 200
        allow = {m.strip() for m in r.header("Allow").split(",")}
        assert {"GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"} <= allow
        assert r.header("Connection") == "keep-alive"
        assert c.request(get("/health")).status == 200
