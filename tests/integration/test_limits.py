"""Configured size limits and their statuses (SPEC 3): request line 414,
header section 431, header count 431, body 413 (by Content-Length and by
chunked).  Small limits keep the tests fast; each over-limit request is
answered with the JSON error and `Connection: close`, the connection is
closed, and the server is unharmed; a request under the limit works."""
import pytest

from conftest import assert_json_error

LIMITS = dict(max_request_line=256, max_header_bytes=1024, max_headers=10,
              max_body_bytes=64, workers=1)


@pytest.fixture
def limited(apiary):
    return apiary(**LIMITS)


def assert_rejected(srv, data, status):
    pids = srv.workers()
    with srv.connect() as c:
        c.send(data)
        r = c.read_final_response()
        assert_json_error(r, status)
        assert r.header("Connection") == "close", r
        c.assert_closed()
    assert srv.workers() == pids
    srv.assert_answers()
    srv.assert_no_fd_leak()


def assert_accepted(srv, data, status=200):
    with srv.connect() as c:
        c.send(data)
        r = c.read_final_response()
        assert r.status == status, r
        assert r.header("Connection") == "keep-alive", r


def test_request_line_limit(limited):
    # "GET /aaa... HTTP/1.1": well under and well over 256 bytes
    assert_accepted(limited, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 404)
    assert_rejected(limited, b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)


def test_request_line_limit_before_the_line_ends(limited):
    """The limit holds even if the line never ends (no buffering forever)."""
    assert_rejected(limited, b"GET /" + b"a" * 2000, 414)


def test_header_section_limit(limited):
    assert_accepted(limited, b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: "
                    + b"a" * 700 + b"\r\n\r\n")
    assert_rejected(limited, b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: "
                    + b"a" * 1100 + b"\r\n\r\n", 431)


def test_header_section_limit_many_mid_sized_fields(limited):
    """Fewer fields than max_headers, but more bytes than max_header_bytes."""
    fields = b"".join(b"X-%d: %s\r\n" % (i, b"b" * 150) for i in range(8))
    assert_rejected(limited, b"GET /health HTTP/1.1\r\nHost: x\r\n" + fields
                    + b"\r\n", 431)


def test_header_section_limit_unterminated(limited):
    assert_rejected(limited, b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: "
                    + b"a" * 3000, 431)


def test_header_count_limit(limited):
    few = b"".join(b"X-%d: a\r\n" % i for i in range(7))
    many = b"".join(b"X-%d: a\r\n" % i for i in range(12))
    assert_accepted(limited, b"GET /health HTTP/1.1\r\nHost: x\r\n" + few + b"\r\n")
    assert_rejected(limited, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n", 431)


def test_body_limit_by_content_length(limited):
    assert_accepted(limited, b"GET /health HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 32\r\n\r\n" + b"a" * 32)
    # refused from the header alone: the client need not send the body
    assert_rejected(limited, b"GET /health HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 100\r\n\r\n", 413)
    assert_rejected(limited, b"POST /health HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 100000\r\n\r\n" + b"a" * 100, 413)


def test_body_limit_by_chunked(limited):
    assert_accepted(limited, b"GET /health HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n20\r\n" + b"a" * 32
                    + b"\r\n0\r\n\r\n")
    # one chunk over the limit
    assert_rejected(limited, b"GET /health HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n50\r\n" + b"a" * 80
                    + b"\r\n0\r\n\r\n", 413)
    # many small chunks adding up to more than the limit
    chunks = b"".join(b"10\r\n" + b"c" * 16 + b"\r\n" for _ in range(6))
    assert_rejected(limited, b"GET /health HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n" + chunks
                    + b"0\r\n\r\n", 413)
