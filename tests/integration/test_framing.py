"""Ambiguous or unsupported framing (SPEC 3, RFC 9110/9112): each case gets
its own status, the JSON error shape, `Connection: close`, and the
connection closed after the response; the worker survives it (same pids),
keeps answering, and holds no more descriptors than before."""
import pytest

from conftest import assert_json_error

H = b"Host: x\r\n"


def req(head, body=b"", method=b"GET", version=b"HTTP/1.1", host=True):
    """GET /health (a route that reads and ignores a body) with the given
    header lines."""
    return (method + b" /health " + version + b"\r\n" + (H if host else b"")
            + head + b"\r\n" + body)


CASES = [
    # (id, request bytes, expected status)
    ("cl-and-te",
     req(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
    ("te-and-cl",
     req(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"), 400),
    ("cl-differing-duplicates",
     req(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), 400),
    ("cl-plus", req(b"Content-Length: +5\r\n", b"hello"), 400),
    ("cl-hex", req(b"Content-Length: 0x5\r\n", b"hello"), 400),
    ("cl-two-numbers", req(b"Content-Length: 5 5\r\n", b"hello"), 400),
    ("cl-negative", req(b"Content-Length: -1\r\n"), 400),
    ("cl-empty", req(b"Content-Length: \r\n"), 400),
    ("cl-overflow", req(b"Content-Length: " + b"9" * 30 + b"\r\n"), 400),
    ("cl-overflow-2^64", req(b"Content-Length: 18446744073709551621\r\n", b"hello"), 400),
    ("obs-fold", req(b"X-A: a\r\n b\r\n"), 400),
    ("obs-fold-tab", req(b"X-A: a\r\n\tb\r\n"), 400),
    ("space-before-colon", req(b"X-A : b\r\n"), 400),
    ("tab-before-colon", req(b"X-A\t: b\r\n"), 400),
    ("space-before-colon-cl", req(b"Content-Length : 5\r\n", b"hello"), 400),
    ("bare-cr-in-value", req(b"X-A: a\rb\r\n"), 400),
    ("te-chunked-not-final",
     req(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"), 400),
    ("te-chunked-twice",
     req(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
         b"0\r\n\r\n"), 400),
    ("te-gzip-chunked",
     req(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501),
    ("te-unknown", req(b"Transfer-Encoding: foo\r\n", b"0\r\n\r\n"), 501),
    ("te-in-http10",
     req(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", version=b"HTTP/1.0",
         host=False), 400),
    ("unknown-method", req(b"", method=b"FOO"), 501),
    ("unknown-expectation", req(b"Expect: something\r\n"), 417),
    ("missing-host", req(b"", host=False), 400),
    ("duplicate-host", req(b"Host: y\r\n"), 400),
    ("http-2.0", req(b"", version=b"HTTP/2.0"), 505),
    ("http-version-garbage", req(b"", version=b"HTTP/1.x"), 400),
    ("chunk-size-bad-hex",
     req(b"Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-missing-crlf",
     req(b"Transfer-Encoding: chunked\r\n", b"3\r\nabcXY0\r\n\r\n"), 400),
    ("bad-percent-nul", b"GET /%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("bad-percent-zz", b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
]


@pytest.mark.parametrize("data,status", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_framing_answered_and_closed(server, data, status):
    pids = server.workers()
    with server.connect() as c:
        c.send(data)
        r = c.read_final_response()
        assert_json_error(r, status)
        assert r.header("Connection") == "close", r
        c.assert_closed()
    assert server.workers() == pids, "a worker died or was replaced"
    server.assert_answers()
    server.assert_no_fd_leak()


def test_chunk_size_overflow(server):
    """A chunk size of 20 hex digits must not wrap around: 400 or 413."""
    with server.connect() as c:
        c.send(req(b"Transfer-Encoding: chunked\r\n",
                   b"1" + b"0" * 19 + b"\r\nabc\r\n0\r\n\r\n"))
        r = c.read_final_response()
        assert r.status in (400, 413), r
        assert_json_error(r, r.status)
        c.assert_closed()
    server.assert_answers()


def test_bad_request_after_good_ones_on_same_connection(server):
    """Earlier pipelined responses are delivered, then the error, then
    the close; a request after the bad one is not answered."""
    with server.connect() as c:
        c.send(req(b"") + req(b"") + req(b"Content-Length: +5\r\n", b"hello")
               + req(b""))
        assert c.read_response().status == 200
        assert c.read_response().status == 200
        r = c.read_response()
        assert_json_error(r, 400)
        assert r.header("Connection") == "close"
        c.assert_closed()
    server.assert_no_fd_leak()


def test_good_chunked_body_is_read_and_connection_kept(server):
    """The contrast: a well-formed chunked body (with an extension and a
    trailer) on GET /health is consumed, and the next request works."""
    with server.connect() as c:
        c.send(req(b"Transfer-Encoding: chunked\r\n",
                   b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"))
        r = c.read_response()
        assert r.status == 200 and r.header("Connection") == "keep-alive"
        r = c.request(req(b"Content-Length: 3\r\n", b"abc"))
        assert r.status == 200
        assert c.request(req(b"")).status == 200
