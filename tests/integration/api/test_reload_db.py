"""
Reload with a database (issue 9, SPEC 4): requests that wait on
PostgreSQL while a reload happens are answered, and a new generation whose
workers cannot start (a database without the schema) fails the reload
while the running generation keeps serving.  A binary upgrade's two
masters share one cache (SPEC 5).
"""
import os
import re
import signal

from conftest import RawClient, children_of, get, pid_alive, proc_cmdline, wait_for
from test_reload import Load, master_msgs, reload_once, stop_master, wait_log

from .conftest import create_user, patch_request


def test_failing_new_generation_keeps_the_old_one(start_api, empty_db):
    srv = start_api(workers=2)
    before = sorted(srv.worker_pids())
    text = srv.conf_path.read_text()
    srv.conf_path.write_text(
        re.sub(r"(?m)^database_url = .*$", "database_url = " + empty_db.url,
               text))
    srv.signal(signal.SIGHUP)
    hits = wait_log(srv, r"^reload failed: worker \d+ of generation 2 exited "
                         r"before it was ready")
    assert "schema" in hits[0], hits
    wait_log(srv, r"^generation 2 is gone")
    # the running generation was never touched, and still reaches its db
    assert sorted(srv.worker_pids()) == before
    r = srv.client.get("/users/1")
    assert r.status_code in (200, 404), r.text
    # the failed generation's workers exited 2 or were stopped: expected
    srv.expected_deaths = len(srv.crash_lines())
    # with the file fixed, the next reload works
    srv.conf_path.write_text(text)
    srv.signal(signal.SIGHUP)
    wait_log(srv, r"^reload done: generation 3 serves")
    wait_log(srv, r"^generation 1 is gone")
    assert not set(srv.worker_pids()) & set(before)


def test_reloads_with_database_requests_in_flight(start_api):
    srv = start_api(workers=2, shutdown_timeout_ms=4000)
    # GET /users/1 waits on PostgreSQL; on this empty table it is a 404
    load = Load(srv.port, busy=4, idle=10,
                request=b"GET /users/1 HTTP/1.1\r\nHost: x\r\n\r\n",
                ok=(200, 404)).start()
    for i in range(1, 4):
        reload_once(srv, i)
    idle_closed = load.finish()
    assert load.failures == {}, load.report()
    assert idle_closed == 0, load.report()
    assert load.answers > 20, load.report()


def test_dash_d_with_an_unmigrated_database_fails_with_the_reason(empty_db,
                                                                  tmp_path):
    """The issue's case: `apiaryd -d` whose workers can never start (the
    schema is missing) used to exit 0 and log nothing anywhere.  Now it
    exits 1 and says why on stderr."""
    from conftest import free_port
    from test_reload import run, write_conf
    conf = write_conf(tmp_path, free_port(), workers=2,
                      database_url=empty_db.url)
    r = run(["-c", str(conf), "-d"])
    assert r.returncode == 1, r
    assert "start-up failed" in r.stderr and "schema" in r.stderr, r.stderr
    assert not (tmp_path / "apiaryd.pid").exists()


def debug(c):
    r = c.request(get("/debug/worker"))
    assert r.status == 200, r
    return r.json()


def connect_to_pid(srv, pid):
    """A RawClient whose connection worker process pid serves."""
    found = []

    def cond():
        c = RawClient(srv.port)
        if debug(c)["pid"] == pid:
            found.append(c)
            return True
        c.close()
        return False

    wait_for(cond, 10, "a connection served by pid %d" % pid, 0.01)
    return found[0]


def start_upgrade(srv, old):
    """USR2 to master old; the new master's pid once it serves (both
    masters' workers serve then, until old is told QUIT)."""
    os.kill(old, signal.SIGUSR2)

    def new_serves():
        for m in master_msgs(srv, old):
            g = re.search(r"the new master \(pid (\d+)\) serves", m)
            if g:
                return int(g.group(1))
        return None

    return wait_for(new_serves, 20, "the new master to serve")


def new_worker_of(master):
    return [p for p in children_of(master)
            if proc_cmdline(p).startswith("apiaryd: worker")][0]


def test_upgrade_masters_share_one_cache(start_api):
    """While both masters' workers serve, an entry one fills is a hit for
    the other, and a PATCH through an old worker is seen at once by a new
    one (no NOTIFY needed); after the old master leaves, the new one still
    hits the entries of the overlap."""
    srv = start_api(workers=1)
    srv.stopped = True  # its master leaves on purpose; we stop the new one
    old = srv.proc.pid
    old_worker = srv.worker_pids()[0]
    uid = create_user(srv.client, name="Before")["id"]
    new = start_upgrade(srv, old)
    try:
        new_worker = new_worker_of(new)
        oldc = connect_to_pid(srv, old_worker)
        newc = connect_to_pid(srv, new_worker)
        user = get("/users/%d" % uid)
        first = oldc.request(user)  # filled by the old master's worker
        assert first.status == 200 and first.json()["name"] == "Before"
        d0 = debug(newc)
        r = newc.request(user)
        d1 = debug(newc)
        assert r.status == 200 and r.body == first.body, r
        assert d1["cache_hits"] - d0["cache_hits"] == 1, (d0, d1)
        assert d1["cache_misses"] == d0["cache_misses"], (d0, d1)
        # a write through the old worker invalidates the new one's view
        w = oldc.request(patch_request(uid, "After"))
        assert w.status == 200, w
        r = newc.request(user)
        assert r.status == 200 and r.json()["name"] == "After", r
        assert oldc.request(user).json()["name"] == "After"
        oldc.close()
        # the old master leaves; the entry of the overlap is still a hit
        os.kill(old, signal.SIGQUIT)
        wait_for(lambda: not pid_alive(old), 20, "the old master to finish")
        d2 = debug(newc)
        r = newc.request(user)
        d3 = debug(newc)
        assert r.status == 200 and r.json()["name"] == "After", r
        assert d3["cache_hits"] - d2["cache_hits"] == 1, (d2, d3)
        newc.close()
    finally:
        stop_master(srv, new)


def test_upgrade_with_another_cache_size_holds_its_fresh_cache(start_api):
    """The new master cannot share a cache of another size: its fresh cache
    serves no hit while old workers (which invalidate only their own cache)
    may still write, and serves again once the old master is gone."""
    srv = start_api(workers=1)
    srv.stopped = True
    old = srv.proc.pid
    uid = create_user(srv.client, name="Cold")["id"]
    srv.conf_path.write_text(srv.conf_path.read_text() + "cache_size = 32m\n")
    new = start_upgrade(srv, old)
    try:
        new_worker = new_worker_of(new)
        newc = connect_to_pid(srv, new_worker)
        user = get("/users/%d" % uid)
        d0 = debug(newc)
        for _ in range(3):
            r = newc.request(user)
            assert r.status == 200 and r.json()["name"] == "Cold", r
        d1 = debug(newc)
        assert d1["cache_hits"] == d0["cache_hits"], (d0, d1)
        assert d1["cache_misses"] - d0["cache_misses"] == 3, (d0, d1)
        os.kill(old, signal.SIGQUIT)
        wait_for(lambda: not pid_alive(old), 20, "the old master to finish")
        wait_for(lambda: any("the fresh cache serves from now on" in m
                             for m in master_msgs(srv, new)),
                 10, "the new master to release its cache")
        for _ in range(2):
            r = newc.request(user)
            assert r.status == 200 and r.json()["name"] == "Cold", r
        d2 = debug(newc)
        assert d2["cache_hits"] - d1["cache_hits"] == 1, (d1, d2)
        newc.close()
    finally:
        stop_master(srv, new)
