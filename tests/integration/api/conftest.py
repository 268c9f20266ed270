"""
Fixtures for the API tests (SPEC 2, 6): a real apiaryd on a real PostgreSQL.

One throwaway PostgreSQL 15 cluster per test session (scripts/pg.sh with
APIARY_PG_DIR / APIARY_PG_PORT pointing at a new directory under /tmp and a
free port), never the developer's cluster in ./var/pg; its `apiary` database
is migrated with ``apiaryd migrate`` at session start.  Tests never see each
other's rows: ``db`` is that database with every table emptied (TRUNCATE ...
RESTART IDENTITY) before the test; ``fresh_db`` is a database of the test's
own (created, migrated, dropped afterwards) for tests that change the schema;
``empty_db`` one without any migration.

``start_api(**config)`` starts an apiaryd through the parent ``apiary``
factory (so the parent's teardown checks apply: still answering, no fd leak,
no crash in the logs) against that database, and returns once every worker
reports its database connection ready; ``api`` is one with the defaults.
Each server started that way carries ``.db`` (the Database) and ``.client``
(a requests-based ApiClient, closed before the server is checked).

This directory is a package (``__init__.py``) so that this module is
``api.conftest`` and does not shadow tests/integration/conftest.py, which
every test module imports as ``conftest``.
"""
import json
import datetime
import itertools
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile

import psycopg
import pytest
import requests

from conftest import (
    APIARY_BIN,
    HOST,
    ROOT,
    Apiary,
    RawClient,
    add_auth,
    clean_env,
    free_port,
    get,
    mint_token,
    scaled,
    settled_fd_counts,
    wait_for,
)

PG_SH = ROOT / "scripts" / "pg.sh"
SQL_DIR = ROOT / "sql"
TABLES = ("users", "orders", "audit_log", "idempotency_keys")
MIGRATIONS = sorted(p.name for p in SQL_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))

# RFC 3339, UTC, microseconds: 2026-11-23T19:14:09.459039Z
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def parse_timestamp(text):
    assert TIMESTAMP_RE.match(text), "not an RFC 3339 UTC timestamp: %r" % text
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc
    )


def apiary_cmd(*args):
    """Runs `apiaryd ARGS...` to completion; returns the CompletedProcess with
    .output = stdout + stderr as text."""
    r = subprocess.run(
        [APIARY_BIN] + list(args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=scaled(60),
    )
    r.output = r.stdout + r.stderr
    return r


def migrate_args(url):
    return ["-o", "database_url=" + url, "-o", "sql_dir=%s" % SQL_DIR, "migrate"]


def migrate(url):
    return apiary_cmd(*migrate_args(url))


# ---- the PostgreSQL cluster ----


def _pg_port():
    """A free TCP port on 127.0.0.1 below the ephemeral range, so that no
    outgoing connection takes it while the cluster is stopped (restart test)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph_lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        eph_lo = 32768
    lo, hi = 20000, max(20001, min(eph_lo, 32768) - 1)
    for _ in range(200):
        port = random.randint(lo, hi)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    return free_port()


class Cluster:
    """A private PostgreSQL cluster run by scripts/pg.sh."""

    def __init__(self):
        # not pytest's tmp_path: it sits under a 0700 directory the postgres
        # user cannot enter, and the socket path must stay short
        self.dir = tempfile.mkdtemp(prefix="apiary-pg-", dir="/tmp")
        self.port = _pg_port()
        self.dbnames = itertools.count(1)
        self.up = False

    def env(self):
        keep = {k: v for k, v in os.environ.items() if k == "APIARY_PG_BIN"}
        keep.update({"APIARY_PG_DIR": self.dir, "APIARY_PG_PORT": str(self.port)})
        return clean_env(keep)

    def pg_sh(self, cmd, check=True):
        r = subprocess.run(
            [str(PG_SH), cmd],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=scaled(180),
        )
        if check and r.returncode != 0:
            raise AssertionError(
                "pg.sh %s failed (%d):\n%s%s" % (cmd, r.returncode, r.stdout, r.stderr)
            )
        return r

    def start(self):
        for _ in range(3):
            r = self.pg_sh("start", check=False)
            if r.returncode == 0:
                self.up = True
                return
            if "Address already in use" not in r.stdout + r.stderr + self.log_tail():
                break
            self.port = _pg_port()  # someone took the port: try another
        raise AssertionError("pg.sh start failed:\n%s%s" % (r.stdout, r.stderr))

    def stop(self):
        self.up = False
        self.pg_sh("stop")

    def ensure_running(self):
        """Starts the cluster again if a test stopped it (and failed before
        starting it again)."""
        if not self.up:
            self.start()

    def log_tail(self, n=30):
        try:
            with open(os.path.join(self.dir, "log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def url(self, dbname="apiary"):
        return "postgresql://apiary@%s:%d/%s" % (HOST, self.port, dbname)

    def connect(self, dbname="postgres", autocommit=True):
        return psycopg.connect(
            self.url(dbname), autocommit=autocommit, connect_timeout=int(scaled(10))
        )

    def create_database(self, migrated=True):
        name = "t_%d" % next(self.dbnames)
        with self.connect() as conn:
            conn.execute('CREATE DATABASE "%s"' % name)
        d = Database(self, name)
        if migrated:
            r = migrate(d.url)
            assert r.returncode == 0, r.output
            for m in MIGRATIONS:
                assert "applied %s" % m in r.output, r.output
        return d

    def destroy(self):
        try:
            if os.path.exists(os.path.join(self.dir, "data")):
                self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class Database:
    """One database of the cluster, with psycopg helpers for the checks."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.url = cluster.url(name)
        self._conn = None

    def connect(self, autocommit=True):
        """A new connection of its own (close it, or use `with`)."""
        return self.cluster.connect(self.name, autocommit=autocommit)

    def _shared(self):
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = self.connect()
        return self._conn

    def query(self, sql, params=None):
        """All rows of one statement (autocommit).  A connection that the
        server dropped (restart tests) is replaced once."""
        try:
            cur = self._shared().execute(sql, params)
        except psycopg.OperationalError:
            if not self._conn.broken:
                raise
            cur = self._shared().execute(sql, params)
        return cur.fetchall() if cur.description else []

    def scalar(self, sql, params=None):
        rows = self.query(sql, params)
        assert len(rows) == 1 and len(rows[0]) == 1, rows
        return rows[0][0]

    def execute(self, sql, params=None):
        self.query(sql, params)

    def count(self, table, where="true", params=None):
        return self.scalar("SELECT count(*) FROM %s WHERE %s" % (table, where), params)

    def counts(self):
        """Row counts of every table, to show that a failed request wrote
        nothing anywhere."""
        return {t: self.count(t) for t in TABLES}

    def empty(self):
        """Deletes every row and restarts the identities at 1.  (DELETE, not
        TRUNCATE: a TRUNCATE makes new files and costs ~50 ms.)"""
        with self.connect() as conn:
            conn.execute("SET lock_timeout = '%dms'" % int(scaled(10) * 1000))
            conn.execute("SET synchronous_commit = off")
            with conn.transaction():
                # children first: idempotency_keys -> orders -> users
                for table in ("idempotency_keys", "orders", "users", "audit_log"):
                    conn.execute("DELETE FROM %s" % table)
                for table in ("orders", "users", "audit_log"):
                    conn.execute(
                        "SELECT setval(pg_get_serial_sequence(%s, 'id'), 1, false)",
                        (table,),
                    )

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def drop(self):
        self.close()
        self.cluster.ensure_running()
        with self.cluster.connect() as conn:
            conn.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % self.name)


@pytest.fixture(scope="session")
def pg_cluster():
    """The session's PostgreSQL cluster, its `apiary` database migrated."""
    cluster = Cluster()
    try:
        cluster.start()
        r = migrate(cluster.url("apiary"))
        assert r.returncode == 0, r.output
        assert "applied 0001_schema.sql" in r.output, r.output
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def shared_db(pg_cluster):
    """The session's migrated `apiary` database, shared by the tests that
    use `db` (emptied before each of them)."""
    d = Database(pg_cluster, "apiary")
    yield d
    d.close()


@pytest.fixture
def db(pg_cluster, shared_db):
    """A migrated database with empty tables and identities restarted at 1.

    Creating, migrating and dropping a database costs about half a second;
    emptying the shared one a few milliseconds.  Tests that change the
    schema (triggers) or need a database of their own use `fresh_db`."""
    pg_cluster.ensure_running()  # in case an earlier test left it stopped
    shared_db.empty()
    yield shared_db


@pytest.fixture
def fresh_db(pg_cluster):
    """A migrated database of this test's own, dropped afterwards."""
    pg_cluster.ensure_running()
    d = pg_cluster.create_database(migrated=True)
    yield d
    d.drop()


@pytest.fixture
def empty_db(pg_cluster):
    """A database without any migration, dropped afterwards."""
    pg_cluster.ensure_running()
    d = pg_cluster.create_database(migrated=False)
    yield d
    d.drop()


# ---- HTTP helpers ----


_VALID = object()


class AuthSession(requests.Session):
    """A requests.Session whose writes carry a valid bearer token unless
    token=None (none) or token="..." (that one) is given (issue 10).  Use
    it wherever a test makes its own session."""

    def request(self, method, url, *args, token=_VALID, **kw):
        if method.upper() in ("POST", "PATCH", "DELETE"):
            if token is _VALID:
                token = mint_token()
            if token is not None:
                headers = dict(kw.get("headers") or {})
                headers.setdefault("Authorization", "Bearer " + token)
                kw["headers"] = headers
        return super().request(method, url, *args, **kw)


class ApiClient:
    """requests against one server, keep-alive, with a client timeout.
    Writes carry a valid token by default (AuthSession: token=...)."""

    def __init__(self, srv, timeout=10):
        self.base = srv.url("")
        self.timeout = scaled(timeout)
        self.session = AuthSession()

    def request(self, method, path, **kw):
        kw.setdefault("timeout", self.timeout)
        kw.setdefault("allow_redirects", False)
        return self.session.request(method, self.base + path, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def head(self, path, **kw):
        return self.request("HEAD", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def patch(self, path, **kw):
        return self.request("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def empty(self):
        """Deletes every row and restarts the identities at 1.  (DELETE, not
        TRUNCATE: a TRUNCATE makes new files and costs ~50 ms.)"""
        with self.connect() as conn:
            conn.execute("SET lock_timeout = '%dms'" % int(scaled(10) * 1000))
            conn.execute("SET synchronous_commit = off")
            with conn.transaction():
                # children first: idempotency_keys -> orders -> users
                for table in ("idempotency_keys", "orders", "users", "audit_log"):
                    conn.execute("DELETE FROM %s" % table)
                for table in ("orders", "users", "audit_log"):
                    conn.execute(
                        "SELECT setval(pg_get_serial_sequence(%s, 'id'), 1, false)",
                        (table,),
                    )

    def close(self):
        self.session.close()


def assert_error(resp, code, *fragments):
    """A requests response is the JSON error of SPEC 2 with this status and
    a message holding every fragment; returns the message."""
    assert resp.status_code == code, (resp.status_code, resp.text)
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    doc = resp.json()
    assert set(doc) == {"error"}, doc
    assert set(doc["error"]) == {"message", "code"}, doc
    assert doc["error"]["code"] == code, doc
    msg = doc["error"]["message"]
    assert isinstance(msg, str) and msg, doc
    for frag in fragments:
        assert frag in msg, "%r not in the message %r" % (frag, msg)
    return msg


_emails = itertools.count(1)


def unique_email(prefix="user"):
    return "%s%d@example.org" % (prefix, next(_emails))


def create_user(client, name="Ann", email=None):
    r = client.post("/users", json={"name": name, "email": email or unique_email()})
    assert r.status_code == 201, (r.status_code, r.text)
    return r.json()


def create_order(client, user_id, amount_cents=1999, currency="EUR", key=None):
    headers = {"Idempotency-Key": key} if key is not None else {}
    r = client.post(
        "/orders",
        json={"user_id": user_id, "amount_cents": amount_cents, "currency": currency},
        headers=headers,
    )
    assert r.status_code == 201, (r.status_code, r.text)
    return r.json()


# ---- worker state ----


def worker_status(srv, timeout=5):
    """(GET /debug/worker document, GET /ready response) from one fresh
    connection, so both come from the same worker."""
    with RawClient(srv.port, timeout=timeout) as c:
        c.send(get("/debug/worker") + get("/ready"))
        dbg = c.read_final_response()
        ready = c.read_final_response()
    assert dbg.status == 200, dbg
    return dbg.json(), ready


def all_workers_status(srv, timeout=5, accept=lambda doc, ready: True):
    """{worker id: /debug/worker document} for every worker of srv, with
    accept(doc, ready_response) true for each: fresh connections until every
    worker has answered one (accepted connections are spread over workers)."""
    want = set(srv.workers())
    seen = {}

    def cond():
        try:
            doc, ready = worker_status(srv, timeout=2)
        except (OSError, AssertionError, ValueError):
            return None
        if accept(doc, ready):
            seen[doc["worker"]] = doc
        else:
            seen.pop(doc["worker"], None)
        return want and set(seen) >= want

    wait_for(cond, timeout, "every worker of %r to answer as wanted" % sorted(want), 0.01)
    return {w: seen[w] for w in want}


def db_ready(doc, ready):
    return doc["db_ready"] is True and ready.status == 200 and ready.json() == {
        "status": "ready"
    }


def wait_db_ready(srv, timeout=10):
    """Waits until every worker says its database connection is ready (GET
    /ready 200 and db_ready in /debug/worker); returns their documents."""
    return all_workers_status(srv, timeout, db_ready)


@pytest.fixture
def start_api(db, apiary):
    """Factory: start_api(**config) -> an apiaryd on this test's database
    (or on database=...), every worker's database connection ready.

    `db` comes first in the arguments so that it is set up before and torn
    down after the servers (the database is dropped once they are stopped)."""
    clients = []

    def start(database=None, **config):
        database = database or db
        cfg = {
            "database_url": database.url,
            "debug_endpoints": "on",
            "sql_dir": str(SQL_DIR),
        }
        cfg.update(config)
        srv = apiary(**cfg)
        wait_db_ready(srv)
        # the worker's database socket may have opened after the parent took
        # its descriptor baseline: take it again with the connection up
        if srv.fd_counts() != srv.fd_baseline:
            srv.fd_baseline = settled_fd_counts(srv.worker_pids())
        srv.db = database
        srv.client = ApiClient(srv)
        clients.append(srv.client)
        return srv

    yield start
    for c in clients:
        c.close()


@pytest.fixture
def api(start_api):
    """An apiaryd (2 workers) on this test's database."""
    return start_api()


@pytest.fixture
def client(api):
    return api.client


def spawn_unchecked(tmpdir, **config):
    """Starts an apiaryd that is expected NOT to come up (no waiting for
    /health); returns the parent's Apiary object for its logs and checks."""
    srv = Apiary(tmpdir, config)
    srv.port = free_port()
    srv._write_config()
    with open(srv.stdout_path, "wb") as out, open(srv.stderr_path, "wb") as err:
        srv.proc = subprocess.Popen(
            [APIARY_BIN, "-c", str(srv.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=clean_env(),
            close_fds=True,
        )
    srv.seen_pids.add(srv.proc.pid)
    return srv


# ---- a request that waits in PostgreSQL (issue 6 tests) ----


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

    def held(self):
        """True while our transaction (and so the row lock) is open."""
        return (self.conn is not None and not self.conn.closed
                and self.conn.info.transaction_status
                == psycopg.pq.TransactionStatus.INTRANS)

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
