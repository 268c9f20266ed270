"""The shared cache (issue 7, SPEC 5 and 12) as clients see it: hits served
without PostgreSQL and without allocation, invalidation by PATCH / DELETE /
order status seen by every worker, the stale-fill race, the counters of
/debug/worker, and two apiaryd instances on one database kept coherent by
LISTEN/NOTIFY, also across a lost database connection."""
import json
import os
import select
import signal
import socket
import threading

from conftest import HOST, RawClient, free_port, get, scaled, wait_for

from .conftest import (
    create_order,
    create_user,
    patch_request,
    wait_db_ready,
    worker_status,
)


def debug(c):
    """/debug/worker on the open RawClient c (its worker's counters)."""
    r = c.request(get("/debug/worker"))
    assert r.status == 200, r
    return r.json()


def connect_to_worker(srv, wid):
    """A RawClient whose connection worker wid serves (fresh connections
    until the kernel hands one to it)."""
    found = []

    def cond():
        c = RawClient(srv.port)
        if debug(c)["worker"] == wid:
            found.append(c)
            return True
        c.close()
        return False

    wait_for(cond, scaled(10), "a connection served by worker %d" % wid, 0.01)
    return found[0]


def test_hit_skips_the_database_and_allocates_nothing(start_api):
    srv = start_api(workers=1)
    user = create_user(srv.client, name="Hit Me")
    with RawClient(srv.port) as c:
        first = c.request(get("/users/%d" % user["id"]))
        assert first.status == 200 and first.json() == user
        before = debug(c)
        assert before["cache"] is True and before["cache_inserts"] >= 1, before
        for _ in range(50):
            r = c.request(get("/users/%d" % user["id"]))
            assert r.status == 200 and r.body == first.body, r
            assert r.header("Content-Type").startswith("application/json")
        after = debug(c)
    # every one a hit: no statement sent, nothing allocated (STYLE 6)
    assert after["cache_hits"] - before["cache_hits"] == 50, (before, after)
    assert after["db_queries"] == before["db_queries"], (before, after)
    assert after["allocs"] == before["allocs"], (before, after)


def test_miss_then_hit_for_orders_and_counters(start_api):
    srv = start_api(workers=1)
    user = create_user(srv.client)
    order = create_order(srv.client, user["id"])
    with RawClient(srv.port) as c:
        s0 = debug(c)
        r1 = c.request(get("/orders/%d" % order["id"]))
        r2 = c.request(get("/orders/%d" % order["id"]))
        s1 = debug(c)
        missing = c.request(get("/orders/%d" % (order["id"] + 1000)))
        again = c.request(get("/orders/%d" % (order["id"] + 1000)))
    assert r1.json() == order and r2.json() == order
    assert s1["cache_misses"] - s0["cache_misses"] == 1, (s0, s1)
    assert s1["cache_hits"] - s0["cache_hits"] == 1, (s0, s1)
    assert s1["cache_inserts"] - s0["cache_inserts"] == 1, (s0, s1)
    # a 404 is not cached: it answers from the database each time
    assert missing.status == 404 and again.status == 404


def test_invalid_id_is_still_400(api, client):
    r = client.get("/users/abc")
    assert r.status_code == 400


def test_writes_invalidate_for_every_worker(start_api):
    srv = start_api(workers=2)
    user = create_user(srv.client, name="Before")
    other = create_user(srv.client, name="Victim")
    order = create_order(srv.client, other["id"])
    conns = {w: connect_to_worker(srv, w) for w in srv.workers()}
    try:
        for c in conns.values():  # both workers have it cached
            for _ in range(2):
                assert c.request(get("/users/%d" % user["id"])).json()["name"] == "Before"
                assert c.request(get("/orders/%d" % order["id"])).json()["status"] == "pending"
        for c in conns.values():
            assert debug(c)["cache_hits"] >= 2

        r = srv.client.patch("/users/%d" % user["id"], json={"name": "After"})
        assert r.status_code == 200, r.text
        r = srv.client.patch("/orders/%d" % order["id"], json={"status": "paid"})
        assert r.status_code == 200, r.text
        # once the write is answered, no worker serves the old value
        for c in conns.values():
            assert c.request(get("/users/%d" % user["id"])).json()["name"] == "After"
            assert c.request(get("/orders/%d" % order["id"])).json()["status"] == "paid"

        victim = create_user(srv.client, name="Gone")
        for c in conns.values():
            assert c.request(get("/users/%d" % victim["id"])).status == 200
        assert srv.client.delete("/users/%d" % victim["id"]).status_code == 204
        for c in conns.values():
            assert c.request(get("/users/%d" % victim["id"])).status == 404
            assert debug(c)["cache_invalidations"] >= 3
    finally:
        for c in conns.values():
            c.close()


def test_pipelined_read_after_write_sees_the_write(start_api):
    """A GET pipelined behind the same client's PATCH is not answered from
    the cache ahead of it (pg.h, origin)."""
    srv = start_api(workers=1)
    user = create_user(srv.client, name="Old")
    with RawClient(srv.port) as c:
        assert c.request(get("/users/%d" % user["id"])).json()["name"] == "Old"
        assert c.request(get("/users/%d" % user["id"])).json()["name"] == "Old"
        # write: needs auth token after issue 10
        c.send(patch_request(user["id"], "New") + get("/users/%d" % user["id"]))
        assert c.read_final_response().status == 200
        assert c.read_final_response().json()["name"] == "New"


def backend_state(db, app):
    rows = db.query(
        "SELECT state, wait_event_type, query FROM pg_stat_activity "
        "WHERE application_name = %s", (app,))
    return rows


def test_slow_fill_racing_a_patch_is_not_served(start_api):
    """Worker A misses and reads the old row; worker B's PATCH commits and
    invalidates; only then does A get its result and try to fill.  The fill
    carries A's ticket, older than B's invalidation: it must not be
    served."""
    srv = start_api(workers=2, db_lock_wait_ms=0)
    db = srv.db
    user = create_user(srv.client, name="Old")
    a = connect_to_worker(srv, 1)
    b = connect_to_worker(srv, 2)
    pid_a = srv.workers()[1]
    app_a = "apiaryd worker 1"
    lock = db.connect(autocommit=False)
    try:
        # A's read waits behind a lock on the table, with its ticket taken
        lock.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        a.send(get("/users/%d" % user["id"]))
        wait_for(lambda: any(w == "Lock" for _, w, _ in backend_state(db, app_a)),
                 scaled(10), "worker 1's read waiting for the lock")
        os.kill(pid_a, signal.SIGSTOP)
        try:
            lock.rollback()  # A's read runs now and sees "Old"
            wait_for(lambda: all(s == "idle" for s, _, _ in backend_state(db, app_a)),
                     scaled(10), "worker 1's read to finish in PostgreSQL")
            # write: needs auth token after issue 10
            r = b.request(patch_request(user["id"], "New"))
            assert r.status == 200 and r.json()["name"] == "New", r
        finally:
            os.kill(pid_a, signal.SIGCONT)
        old = a.read_final_response()
        assert old.status == 200 and old.json()["name"] == "Old", old
        # the old row's fill was refused: every later read is fresh
        for c in (a, b, a):
            assert c.request(get("/users/%d" % user["id"])).json()["name"] == "New"
        assert debug(a)["cache_stale_fills_refused"] >= 1
    finally:
        lock.close()
        a.close()
        b.close()


def test_killed_worker_is_replaced_and_cache_still_serves(start_api):
    srv = start_api(workers=1)
    user = create_user(srv.client, name="Kept")
    pid = srv.workers()[1]
    assert srv.client.get("/users/%d" % user["id"]).json()["name"] == "Kept"
    srv.expected_deaths = 1
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: srv.workers().get(1) not in (None, pid), scaled(10),
             "a replacement worker")
    wait_db_ready(srv)
    for _ in range(3):
        r = srv.client.get("/users/%d" % user["id"])
        assert r.status_code == 200 and r.json()["name"] == "Kept"
    r = srv.client.patch("/users/%d" % user["id"], json={"name": "Changed"})
    assert r.status_code == 200
    assert srv.client.get("/users/%d" % user["id"]).json()["name"] == "Changed"


def test_cache_size_that_cannot_be_mapped_refuses_to_start(tmp_path):
    from conftest import APIARY_BIN, clean_env
    import subprocess

    conf = tmp_path / "apiary.conf"
    conf.write_text("listen = %d\npidfile = %s\ncache_size = 1k\n"
                    % (free_port(), tmp_path / "p.pid"))
    r = subprocess.run([APIARY_BIN, "-c", str(conf)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, env=clean_env(), timeout=scaled(20))
    assert r.returncode != 0
    assert "cannot map the shared cache" in r.stdout + r.stderr, r


# ---- two hosts on one database (SPEC 12) ----


class Gate:
    """A TCP forwarder to PostgreSQL that the test can cut: cut() closes
    every forwarded connection and refuses new ones until reopen()."""

    def __init__(self, target_port):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.open = True
        self.pairs = []
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            if not self.open:
                s.close()
                continue
            try:
                t = socket.create_connection((HOST, self.target))
            except OSError:
                s.close()
                continue
            with self.lock:
                self.pairs.append((s, t))
            threading.Thread(target=self._pump, args=(s, t), daemon=True).start()

    def _pump(self, s, t):
        socks = [s, t]
        try:
            while True:
                r, _, _ = select.select(socks, [], [], 0.5)
                if self.stopped:
                    break
                for x in r:
                    data = x.recv(65536)
                    if not data:
                        raise OSError
                    (t if x is s else s).sendall(data)
        except OSError:
            pass
        for x in socks:
            try:
                x.close()
            except OSError:
                pass

    def cut(self):
        self.open = False
        with self.lock:
            for s, t in self.pairs:
                for x in (s, t):
                    try:
                        x.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self.pairs = []

    def reopen(self):
        self.open = True

    def close(self):
        self.stopped = True
        self.cut()
        self.sock.close()


def test_two_hosts_stay_coherent(start_api):
    one = start_api(workers=2)
    two = start_api(workers=2)
    user = create_user(one.client, name="v0")
    for _ in range(4):  # cached on the second host's workers
        assert two.client.get("/users/%d" % user["id"]).json()["name"] == "v0"
    for i in range(1, 6):
        r = one.client.patch("/users/%d" % user["id"], json={"name": "v%d" % i})
        assert r.status_code == 200
        # the NOTIFY reaches the other host (scripts/bench-cache times it)
        wait_for(lambda: two.client.get("/users/%d" % user["id"]).json()["name"]
                 == "v%d" % i, scaled(5), "host two to see v%d" % i, 0.005)
    docs = wait_db_ready(two)
    assert sum(d["db_notifies"] for d in docs.values()) >= 5
    assert sum(d["cache_invalidations"] for d in docs.values()) >= 5


def test_write_while_other_host_was_disconnected_is_not_served_stale(start_api, db):
    gate = Gate(db.cluster.port)
    try:
        one = start_api(workers=1)
        url = db.url.replace(":%d/" % db.cluster.port, ":%d/" % gate.port)
        two = start_api(workers=1, database_url=url)
        user = create_user(one.client, name="before")
        for _ in range(3):
            assert two.client.get("/users/%d" % user["id"]).json()["name"] == "before"
        assert worker_status(two)[0]["cache_hits"] >= 2

        gate.cut()  # host two loses its database (and its LISTEN)
        wait_for(lambda: worker_status(two)[0]["db_ready"] is False, scaled(10),
                 "host two to notice its database is gone")
        r = one.client.patch("/users/%d" % user["id"], json={"name": "after"})
        assert r.status_code == 200
        # while down it does not serve what it cannot know is fresh
        r = two.client.get("/users/%d" % user["id"])
        assert r.status_code == 503, r.text
        gate.reopen()
        wait_db_ready(two)
        r = two.client.get("/users/%d" % user["id"])
        assert r.status_code == 200 and r.json()["name"] == "after", r.text
        assert worker_status(two)[0]["db_reconnects"] >= 1
    finally:
        gate.close()
