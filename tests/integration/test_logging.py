"""Logging never blocks the event loop (SPEC 7; issue 6, defect 7).

The access log goes to stdout ("-"), and stdout is a pipe that nobody reads
until the test says so: the pipe fills after a few hundred lines, and the
worker must go on answering; lines it cannot write are dropped and counted
(the error log says how many), and once the pipe is read again the lines
that come out are whole JSON lines and new ones follow.
"""
import fcntl
import json
import os
import stat

import pytest

from conftest import get, wait_for

REQUESTS = 20000
CONNECTIONS = 4
BATCH = 100  # pipelined requests per write


@pytest.fixture
def stdout_pipe(apiary, tmp_path):
    """A FIFO where the first server's stdout file would be, with a
    non-blocking read end held open and never read by itself.  Set up after
    `apiary`, so it is torn down first: the FIFO is replaced by a plain file
    (the teardown may read the stdout file) and the reader is closed."""
    d = tmp_path / "srv0"  # the directory apiary() gives its first server
    d.mkdir()
    path = d / "stdout"
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield path, fd
    os.unlink(path)
    path.write_bytes(b"")
    os.close(fd)


class PipeReader:
    """Reads whatever the pipe holds now, as complete lines."""

    def __init__(self, fd):
        self.fd = fd
        self.tail = b""
        self.nbytes = 0

    def lines(self):
        out = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                break
            self.nbytes += len(data)
            self.tail += data
        *done, self.tail = self.tail.split(b"\n")
        for raw in done:
            try:
                out.append(json.loads(raw))
            except ValueError:
                raise AssertionError("not a JSON line: %r" % raw[:300]) from None
        return out


def test_full_stdout_pipe_never_stalls_the_worker(apiary, stdout_pipe):
    path, rfd = stdout_pipe
    srv = apiary(workers=1, access_log="-")
    assert srv.stdout_path == path and stat.S_ISFIFO(os.stat(path).st_mode)
    capacity = fcntl.fcntl(rfd, fcntl.F_GETPIPE_SZ)

    # 20,000 requests, about 3 MB of access log: 40 times what the pipe
    # and the worker's buffer hold.  Each batch must be answered within
    # the client's timeout, so a worker blocked in write(2) fails here.
    conns = [srv.connect() for _ in range(CONNECTIONS)]
    answered = 0
    try:
        per_conn = REQUESTS // CONNECTIONS
        for _ in range(per_conn // BATCH):
            for c in conns:
                c.send(get("/health") * BATCH)
            for c in conns:
                for _ in range(BATCH):
                    r = c.read_response()
                    assert r.status == 200, r
                    answered += 1
    finally:
        for c in conns:
            c.close()
    assert answered == REQUESTS

    # the lines that did not fit were counted, and the error log says so
    def reported():
        return [l for l in srv.error_log_lines()
                if "could not keep up" in l.get("msg", "")]

    report = wait_for(reported, 10, "the dropped-lines report in the error log")
    assert report[0]["level"] == "warn", report

    # what the pipe holds is whole JSON lines; it was full
    reader = PipeReader(rfd)
    first = reader.lines()
    assert reader.nbytes >= capacity // 2, (reader.nbytes, capacity)
    assert first and all(l["path"] == "/health" and l["status"] == 200
                         for l in first), first[:3]
    assert len(first) < REQUESTS

    # read on: the worker writes what it queued (woken by EPOLLOUT) and the
    # lines of new requests follow
    with srv.connect() as c:
        assert c.request(get("/after-drain")).status == 404
    seen = []

    def marker():
        seen.extend(reader.lines())
        return any(l["path"] == "/after-drain" for l in seen)

    wait_for(marker, 10, "the access line of a request made after the drain")
    assert all(l["path"] in ("/health", "/after-drain") for l in seen)
    assert len(first) + len(seen) < REQUESTS + 1
