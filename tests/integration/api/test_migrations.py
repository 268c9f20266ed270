"""`apiaryd migrate` and the schema check at start-up (SPEC 6)."""
import os
import re
import signal
import subprocess

import requests

from conftest import APIARY_BIN, clean_env, pid_alive, scaled, wait_for

from .conftest import MIGRATIONS, SQL_DIR, migrate, migrate_args, spawn_unchecked

# "apiary" in ASCII: the advisory lock key `apiaryd migrate` holds
MIGRATE_LOCK_KEY = int.from_bytes(b"apiary", "big")


def applied_versions(db):
    return db.query("SELECT version, name FROM schema_migrations ORDER BY version")


def expected_versions():
    return [(int(m[:4]), m) for m in MIGRATIONS]


def test_server_refuses_a_database_without_migrations(empty_db, tmp_path):
    """Its workers name the missing migration and exit with status 2 (do not
    respawn); the master then gives up with a non-zero status."""
    srv = spawn_unchecked(tmp_path / "srv", workers=2, database_url=empty_db.url,
                          sql_dir=str(SQL_DIR), log_level="info")
    try:
        srv.proc.wait(timeout=scaled(10))
    except subprocess.TimeoutExpired:
        srv.kill_everything()
        raise AssertionError("apiaryd kept running against an empty database:\n"
                             + srv.logs_text())
    logs = srv.logs_text()
    assert srv.proc.returncode != 0, logs
    lines = srv.error_log_lines()
    msgs = [l.get("msg", "") for l in lines]
    assert any("lacks migration 0001_schema.sql" in m for m in msgs), logs
    assert any("no worker could start" in m for m in msgs), logs
    # the only "crashes" are the two workers refusing with status 2
    crashes = srv.crash_lines()
    assert len(crashes) == 2, crashes
    assert all(re.search(r"worker \d+ \(pid \d+\) exited with status 2", c)
               for c in crashes), crashes
    srv.stopped = True
    srv.expected_deaths = len(crashes)
    srv.check_and_stop()  # everything gone, nothing else in the logs
    assert not any(pid_alive(p) for p in srv.seen_pids if p != srv.proc.pid)
    # nothing was created in the database
    assert empty_db.scalar("SELECT to_regclass('users') IS NULL")


def test_migrate_is_idempotent(empty_db):
    r = migrate(empty_db.url)
    assert r.returncode == 0, r.output
    for m in MIGRATIONS:
        assert "applied %s" % m in r.output, r.output
    assert re.search(r"\b%d migrations? applied now" % len(MIGRATIONS), r.output), r.output
    assert applied_versions(empty_db) == expected_versions()
    tables = empty_db.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                            " ORDER BY tablename")
    for again in range(2):
        r = migrate(empty_db.url)
        assert r.returncode == 0, r.output
        assert "0 migrations applied now" in r.output, r.output
        assert "applied 0" not in r.output, r.output
        assert applied_versions(empty_db) == expected_versions()
    assert empty_db.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                          " ORDER BY tablename") == tables


def start_migrates(db, n):
    return [
        subprocess.Popen([APIARY_BIN] + migrate_args(db.url), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=clean_env())
        for _ in range(n)
    ]


def finish(procs):
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=scaled(60))
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            raise AssertionError("apiaryd migrate did not finish:\n" + out)
        outs.append((p.returncode, out))
    return outs


def check_one_applied(db, outs):
    for rc, out in outs:
        assert rc == 0, out
    for m in MIGRATIONS:
        appliers = [out for _, out in outs if "applied %s" % m in out]
        assert len(appliers) == 1, outs
    assert applied_versions(db) == expected_versions()


def test_concurrent_migrates_apply_once(empty_db):
    """Two `migrate` runs started at the same time on a fresh database: both
    succeed, the migration is applied exactly once."""
    outs = finish(start_migrates(empty_db, 2))
    check_one_applied(empty_db, outs)


def test_concurrent_migrates_wait_for_the_lock(empty_db):
    """The same race made certain: the test holds the migration lock while
    two runs start, so both are waiting when it is released."""
    with empty_db.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        procs = start_migrates(empty_db, 2)
        try:
            wait_for(lambda: empty_db.count(
                "pg_locks", "locktype = 'advisory' AND NOT granted AND database ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())") == 2,
                10, "both migrate runs to wait for the advisory lock")
            assert all(p.poll() is None for p in procs)
            assert empty_db.scalar("SELECT to_regclass('schema_migrations') IS NULL")
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_KEY,))
            outs = finish(procs)
    check_one_applied(empty_db, outs)


def test_master_keeps_a_slot_alive_when_its_replacement_finds_an_old_schema(start_api):
    """Issue 6 / SPEC 4: exit status 2 ("could not start") stops the master
    from respawning a slot only while no worker of it has ever served.  Here
    a worker that served is killed while schema_migrations lacks its last
    row: each replacement refuses to serve and exits 2, and the master keeps
    running and respawns the slot with backoff (it used to give up on the
    slot, and exit once no slot was left).  Once the row is back the slot
    serves again, under the same master."""
    srv = start_api(workers=2)
    master = srv.proc.pid
    workers = srv.workers()
    version, name = srv.db.query(
        "SELECT version, name FROM schema_migrations ORDER BY version DESC LIMIT 1")[0]
    srv.db.execute("DELETE FROM schema_migrations WHERE version = %s", (version,))

    def refusals():
        return [l for l in srv.crash_lines()
                if re.search(r"worker 1 \(pid \d+\) exited with status 2", l)]

    try:
        os.kill(workers[1], signal.SIGKILL)
        wait_for(lambda: len(refusals()) >= 2, 20,
                 "worker 1's replacements to refuse the old schema twice")
        assert srv.proc.poll() is None and srv.proc.pid == master
        # the other worker serves meanwhile
        for _ in range(4):
            r = requests.get(srv.url("/health"), timeout=scaled(10))
            assert r.status_code == 200
    finally:
        srv.db.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)"
                       " ON CONFLICT DO NOTHING", (version, name))
    wait_for(lambda: 1 in srv.workers() and srv.workers()[1] != workers[1], 20,
             "slot 1 to be running again")
    wait_for(lambda: requests.get(srv.url("/ready"), timeout=scaled(10)).status_code == 200
             and srv.proc.poll() is None, 20, "the service to be ready")
    text = srv.logs_text()
    assert "not respawning" not in text, text
    assert "no worker could start" not in text, text
    srv.expected_deaths = len(srv.crash_lines())
