"""
Reload with a database (issue 9, SPEC 4): requests that wait on
PostgreSQL while a reload happens are answered, and a new generation whose
workers cannot start (a database without the schema) fails the reload
while the running generation keeps serving.
"""
import re
import signal

from test_reload import Load, reload_once, wait_log


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
