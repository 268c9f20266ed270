"""Issue 6: a statement of the worker waiting for a row lock that another
session holds, and what that does to the other queries on the worker's one
database connection.

The lock is held by the test with SELECT ... FOR UPDATE in a psycopg
transaction of its own (RowLock).  Waiting is by polling with deadlines;
no test asserts a duration."""
import json
import os
import signal

from conftest import get, scaled, server_rx_queue, wait_for

from .conftest import create_user


def ms(seconds):
    return int(scaled(seconds) * 1000)


def patch_request(uid, name):
    body = json.dumps({"name": name}).encode()
    return (b"PATCH /users/%d HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (uid, len(body), body))


class RowLock:
    """SELECT ... FOR UPDATE on one user row in a transaction of our own,
    held until release()."""

    def __init__(self, db, uid):
        self.conn = db.connect(autocommit=False)
        self.conn.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (uid,))

    def release(self):
        if self.conn is not None:
            try:
                self.conn.rollback()
            finally:
                self.conn.close()
                self.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def test_read_after_a_write_rolled_back_with_its_batch_sees_it(start_api):
    """A PATCH of a locked row fails its batch by statement timeout, so a
    batch-mate's write from another client is rolled back and sent again.
    That client's GET of the row it wrote, pipelined behind its PATCH, is
    sent while the failing batch is still on the wire (it then runs before
    the write is sent again), or waits for the resend: either way it
    answers the new row, after the PATCH's 200 (RFC 9112 9.3.2).  The
    worker is stopped while both PATCHes arrive, so that they travel in
    one batch.  (Before, the GET could answer the old row.)"""
    srv = start_api(workers=1, statement_timeout_ms=ms(0.3), request_timeout_ms=ms(60))
    locked = create_user(srv.client, name="Locked")
    a = create_user(srv.client, name="Name 0")
    worker = srv.worker_pids()[0]
    for i in range(1, 6):
        name = "Name %d" % i
        lock = RowLock(srv.db, locked["id"])
        writer, other = srv.connect(timeout=60), srv.connect(timeout=60)
        try:
            for c in (writer, other):  # accepted and registered before the stop
                assert c.request(get("/health")).status == 200
            os.kill(worker, signal.SIGSTOP)
            try:
                other.send(patch_request(locked["id"], "Locked %d" % i))
                writer.send(patch_request(a["id"], name))
                wait_for(lambda: all(server_rx_queue(srv.port, c.sock)
                                     for c in (writer, other)),
                         5, "both PATCHes to reach the stopped worker")
            finally:
                os.kill(worker, signal.SIGCONT)
            writer.send(get("/users/%d" % a["id"]))
            p = writer.read_final_response(timeout=10)
            g = writer.read_final_response(timeout=10)
            lock.release()
            o = other.read_final_response(timeout=10)
        finally:
            lock.release()
            writer.close()
            other.close()
        assert p.status == 200 and p.json()["name"] == name, p
        assert g.status == 200 and g.json()["name"] == name, (
            "round %d: the GET pipelined after the PATCH read %r" % (i, g.json()))
        assert o.status == 504, o
