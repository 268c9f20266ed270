"""Timeouts (SPEC 3): header read (slowloris), body read, idle keep-alive.
None of them stalls other connections of the same worker.  Timeouts in the
config are scaled like every deadline, so a slow machine only runs longer."""
import socket
import time

from conftest import assert_json_error, get, scaled


def ms(seconds):
    return int(scaled(seconds) * 1000)


def read_until_close(c, timeout):
    """All bytes until EOF/reset, or until the deadline (then closed=False)."""
    deadline = time.monotonic() + timeout
    data = c.buf
    c.buf = b""
    while time.monotonic() < deadline:
        c.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = c.sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def test_slowloris_gets_408_and_does_not_stall_the_worker(apiary):
    timeout = scaled(1.0)
    srv = apiary(workers=1, header_timeout_ms=ms(1.0))
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200
    slow = srv.connect()
    slow.sock.setblocking(False)
    start = time.monotonic()
    served_during = 0
    got = b""
    closed = False
    deadline = start + timeout + scaled(5)
    i = 0
    # one byte every 200 ms, as a slowloris does; the pace is the attack,
    # not a wait for the server
    while time.monotonic() < deadline and not closed:
        try:
            slow.sock.send(request[i:i + 1])
            i += 1
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        try:
            chunk = slow.sock.recv(65536)
            if chunk:
                got += chunk
            else:
                closed = True
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed = True
        if not got and not closed and i in (2, 4):
            # a normal client on the same (only) worker is served while the
            # slowloris is connected and not yet cut off
            with srv.connect() as c:
                r = c.request(get("/health"))
                assert r.status == 200 and r.json() == {"status": "ok"}
            try:
                assert slow.sock.recv(1, socket.MSG_PEEK) == b"x", \
                    "slowloris cut before the normal client was served"
            except BlockingIOError:
                served_during += 1
        time.sleep(0.2)
    if not closed:
        more, closed = read_until_close(slow, max(0.1, deadline - time.monotonic()))
        got += more
    elapsed = time.monotonic() - start
    slow.close()
    assert closed, "the slowloris was not cut off within %.1f s" % elapsed
    assert served_during == 2, "normal requests were not served during the slowloris"
    # the header timeout counts from the first byte, not from the last one
    assert i < len(request), "the whole header trickled in without a timeout"
    if got:
        c = srv.connect()
        c.buf = got
        r = c.read_response()
        c.close()
        assert_json_error(r, 408)
        assert r.header("Connection") == "close"
    srv.assert_answers()
    srv.assert_no_fd_leak()


def test_silent_connection_closed_after_header_timeout(apiary):
    srv = apiary(workers=1, header_timeout_ms=ms(0.5))
    with srv.connect() as c:
        # nothing sent at all: closed without a response (like nginx)
        data, closed = read_until_close(c, scaled(0.5) + scaled(5))
        assert closed, "not closed after the header timeout"
        assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data
    srv.assert_no_fd_leak()


def test_body_timeout_gets_408(apiary):
    """GET /health reads (and ignores) a body, so the body timeout can be
    seen there: 3 of 10 announced bytes, then silence."""
    srv = apiary(workers=1, body_timeout_ms=ms(1.0))
    with srv.connect() as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        r = c.read_response(timeout=1.0 + 5)
        assert_json_error(r, 408)
        assert r.header("Connection") == "close"
        c.assert_closed()
    srv.assert_answers()
    srv.assert_no_fd_leak()


def test_body_timeout_while_another_client_is_served(apiary):
    srv = apiary(workers=1, body_timeout_ms=ms(1.0))
    with srv.connect() as stalled:
        stalled.send(b"GET /health HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nab")
        with srv.connect() as c:
            assert c.request(get("/health")).status == 200
        assert_json_error(stalled.read_response(timeout=1.0 + 5), 408)
        stalled.assert_closed()


def test_post_with_body_to_get_only_route_is_405_and_closed(apiary):
    """No route takes a POST body yet: a POST /health with a body that never
    fully arrives is answered 405 at once (the body is not awaited) and the
    connection is closed, since the unread body cannot be skipped."""
    srv = apiary(workers=1, body_timeout_ms=ms(30))
    with srv.connect() as c:
        c.send(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        r = c.read_response(timeout=5)
        assert_json_error(r, 405)
        assert r.header("Allow") == "GET, HEAD"
        assert r.header("Connection") == "close"
        c.assert_closed()
    srv.assert_no_fd_leak()


def test_idle_keepalive_connection_closed_silently(apiary):
    srv = apiary(workers=1, keepalive_timeout_ms=ms(0.5))
    with srv.connect() as c:
        assert c.request(get("/health")).status == 200
        data, closed = read_until_close(c, scaled(0.5) + scaled(5))
        assert closed and data == b"", data
    srv.assert_no_fd_leak()
