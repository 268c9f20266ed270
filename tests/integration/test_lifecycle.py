"""Regression tests for issue 6, the request life cycle (SPEC 3, 7), that
need no database: the keep-alive timer of a busy connection, one access-log
line per request whatever produced the answer, and a trickling body.  The
tests that need a request waiting in PostgreSQL are in
api/test_lifecycle_db.py.

Timeouts in the config are scaled like every deadline (APIARY_TEST_TIMEOUT_
MULTIPLIER), so a slow machine only runs longer."""
import json
import time

from conftest import assert_json_error, get, scaled, wait_for


def ms(seconds):
    return int(scaled(seconds) * 1000)


# ---- 1. a busy keep-alive connection is never closed as idle ----


def test_busy_keepalive_connection_is_not_closed_by_keepalive_timeout(apiary):
    """SPEC 3: the idle keep-alive timeout counts from the last answer sent.
    One connection sends GET /health every 50 ms for 3.5 keep-alive
    timeouts: every request is answered on that same connection.  (Before
    issue 6 the connection was closed one keep-alive timeout after it
    opened, busy or not.)  Once it falls silent, the timeout closes it."""
    srv = apiary(workers=1, keepalive_timeout_ms=ms(1.0))
    duration = scaled(3.5)
    answered = 0
    with srv.connect() as c:
        start = time.monotonic()
        while time.monotonic() - start < duration:
            c.send(get("/health"))
            try:
                r = c.read_response(timeout=5)
            except AssertionError as e:
                raise AssertionError(
                    "request %d, %.2f s into a connection sending every 50 ms"
                    " (keepalive_timeout %.1f s): %s"
                    % (answered + 1, time.monotonic() - start, scaled(1.0), e)
                ) from None
            assert r.status == 200 and r.json() == {"status": "ok"}, r
            assert r.header("Connection") != "close", (answered + 1, r)
            answered += 1
            time.sleep(0.05)  # the client's pace, not a wait for the server
        assert answered >= 20, answered
        # the timer still exists: silent now, the connection is closed
        c.assert_closed(timeout=1.0 + 5)


# ---- 5. one access-log line per request ----


def client_lines(srv, port):
    """The access-log lines of the client connection from local port."""
    return [l for l in srv.access_log_lines()
            if l.get("client") == "127.0.0.1:%d" % port]


def log_barrier(srv):
    """A request on a fresh connection, then waits for its line: with one
    worker, every line written before it is in the file by then."""
    with srv.connect() as c:
        port = c.sock.getsockname()[1]
        assert c.request(get("/health?barrier")).status == 200
    wait_for(lambda: client_lines(srv, port), 10, "the barrier request's access-log line")


def test_access_log_one_line_per_request(apiary):
    """SPEC 3, 7: every answer passes the done point exactly once, so the
    access log has exactly one JSON line per request, including 4xx from
    the parser and 408.  (Before issue 6 the 400 and 408 had no line.)"""
    srv = apiary(workers=1, header_timeout_ms=ms(1.0))
    a = srv.connect()
    b = srv.connect()
    try:
        a_port = a.sock.getsockname()[1]
        b_port = b.sock.getsockname()[1]
        # connection b: half a request line, then silence: 408
        b.send(b"GET /hea")
        # connection a: 200, 404, then a header with whitespace before the
        # colon (SPEC 3: 400 and close), pipelined
        a.send(get("/health") + get("/nope")
               + get("/health", extra=b"X-Bad : x\r\n"))
        r1 = a.read_response()
        r2 = a.read_response()
        r3 = a.read_response()
        assert r1.status == 200, r1
        assert_json_error(r2, 404)
        assert_json_error(r3, 400)
        assert r3.header("Connection") == "close", r3
        a.assert_closed()
        r4 = b.read_response(timeout=1.0 + 5)
        assert_json_error(r4, 408)
        b.assert_closed()
    finally:
        a.close()
        b.close()

    # the lines of both connections, once all four are there
    def four():
        lines = client_lines(srv, a_port) + client_lines(srv, b_port)
        return len(lines) >= 4

    try:
        wait_for(four, 10, "4 access-log lines for the two connections")
    except AssertionError:
        raise AssertionError(
            "access log lines: a (port %d): %r; b (port %d): %r; whole log:\n%s"
            % (a_port, client_lines(srv, a_port), b_port, client_lines(srv, b_port),
               srv.access_log.read_text(errors="replace")[-4000:])
        ) from None
    log_barrier(srv)  # nothing more is on its way for a or b
    # every line is a JSON object (access_log_lines parses each one)
    raw = [ln for ln in srv.access_log.read_text().splitlines() if ln.strip()]
    for ln in raw:
        assert isinstance(json.loads(ln), dict), ln
    a_lines = client_lines(srv, a_port)
    b_lines = client_lines(srv, b_port)
    assert [l["status"] for l in a_lines] == [200, 404, 400], a_lines
    assert [l["status"] for l in b_lines] == [408], b_lines
    for line in a_lines + b_lines:
        for key in ("method", "path", "status", "bytes", "us"):
            assert key in line, line
        assert isinstance(line["bytes"], int) and line["bytes"] > 0, line
        assert isinstance(line["us"], int) and line["us"] >= 0, line
    ok, notfound, bad = a_lines
    assert ok["method"] == "GET" and ok["path"] == "/health", ok
    assert notfound["method"] == "GET" and notfound["path"] == "/nope", notfound
    assert "end" not in ok and "end" not in notfound, (ok, notfound)
    assert bad.get("end") == "rejected", bad
    assert b_lines[0].get("end") == "timeout", b_lines


# ---- 6. a trickling body ----


def test_trickling_body_gets_408(apiary):
    """SPEC 3: the body timeout is not restarted by every byte.  POST /users
    announces 100000 bytes and sends one every 200 ms: the server answers
    408 and closes.  (Before issue 6 each byte restarted the body timeout
    and the connection was kept forever.)"""
    srv = apiary(workers=1, body_timeout_ms=ms(1.0))
    deadline_s = scaled(10)
    with srv.connect() as c:
        c.send(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100000\r\n\r\n")
        c.sock.setblocking(False)
        start = time.monotonic()
        got = b""
        sent = 0
        closed = False
        while time.monotonic() - start < deadline_s and not closed:
            try:
                c.sock.send(b" ")
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            try:
                chunk = c.sock.recv(65536)
                if chunk:
                    got += chunk
                else:
                    closed = True
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed = True
            if b"\r\n\r\n" in got:
                break
            time.sleep(0.2)  # the trickle's pace is the attack, not a wait
        elapsed = time.monotonic() - start
        assert got, ("no answer within %.1f s while the body trickled in one byte"
                     " every 200 ms (%d bytes sent, closed=%s)"
                     % (elapsed, sent, closed))
        c.sock.setblocking(True)
        c.buf = got
        r = c.read_response(timeout=5)
        assert_json_error(r, 408)
        assert r.header("Connection") == "close", r
        c.assert_closed()
    srv.assert_answers()
