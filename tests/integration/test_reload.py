"""
Daemon operations (issue 9, SPEC 4): reload (HUP) and binary upgrade
(USR2) under load lose nothing, log reopen (USR1), -d, -s, privileges.

The load client never retries and counts every failure by kind:
  connect   the connection could not be made;
  reset     ECONNRESET / EPIPE while sending or reading;
  eof       the server closed before a complete answer;
  status    an answer that is not 2xx;
  timeout   no answer within the deadline;
  closed    an answer that says "Connection: close" (the server ended a
            keep-alive connection that could have been handed over).
Besides the busy connections it holds idle keep-alive connections that sit
through the reloads; each must still be open afterwards (no EOF waiting on
it) and answer on the same connection: "zero idle connections closed".
"""
import errno
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (APIARY_BIN, HOST, RawClient, clean_env, children_of,
                      get, pid_alive, proc_cmdline, scaled, wait_for)

REQ = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def read_answer(sock, deadline):
    """(status, headers-lowercase-text) of one answer, or raises
    LoadFailure(kind)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += _recv(sock, deadline)
    head, rest = buf.split(b"\r\n\r\n", 1)
    text = head.decode("latin-1").lower()
    m = re.match(r"http/1\.1 (\d{3})", text)
    if not m:
        raise LoadFailure("status", "bad status line %r" % head[:80])
    cl = re.search(r"\r\ncontent-length: *(\d+)", text)
    n = int(cl.group(1)) if cl else 0
    while len(rest) < n:
        rest += _recv(sock, deadline)
    if len(rest) > n:
        raise LoadFailure("status", "bytes after the answer: %r" % rest[n:][:80])
    return int(m.group(1)), text


def _recv(sock, deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise LoadFailure("timeout", "no complete answer")
    sock.settimeout(left)
    try:
        data = sock.recv(65536)
    except socket.timeout:
        raise LoadFailure("timeout", "no complete answer") from None
    except (ConnectionResetError, BrokenPipeError) as e:
        raise LoadFailure("reset", str(e)) from None
    if not data:
        raise LoadFailure("eof", "server closed before a complete answer")
    return data


class LoadFailure(Exception):
    def __init__(self, kind, detail):
        super().__init__("%s: %s" % (kind, detail))
        self.kind = kind


class Load:
    """Busy keep-alive clients (threads) plus idle keep-alive connections."""

    def __init__(self, port, busy=6, idle=20, request=REQ, ok=(200,)):
        self.port = port
        self.req = request
        self.ok = ok  # statuses that count as answered
        self.nbusy = busy
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures = {}
        self.examples = []
        self.answers = 0
        self.connections = 0
        self.threads = []
        self.idle = [self._connect() for _ in range(idle)]
        # each idle connection answers once first, so it is a keep-alive
        # connection a worker holds as idle, not a fresh one
        for s in self.idle:
            s.sendall(self.req)
            status, _ = read_answer(s, time.monotonic() + scaled(10))
            assert status in self.ok, status

    def _connect(self):
        s = socket.create_connection((HOST, self.port), timeout=scaled(10))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def _fail(self, kind, detail):
        with self.lock:
            self.failures[kind] = self.failures.get(kind, 0) + 1
            if len(self.examples) < 10:
                self.examples.append("%s: %s" % (kind, detail))

    def _busy(self, seed):
        rnd = random.Random(seed)
        sock = None
        while not self.stop.is_set():
            try:
                if sock is None:
                    sock = self._connect()
                    with self.lock:
                        self.connections += 1
                sock.sendall(self.req)
                status, head = read_answer(sock, time.monotonic() + scaled(10))
                if status not in self.ok:
                    raise LoadFailure("status", "status %d" % status)
                with self.lock:
                    self.answers += 1
                if "\r\nconnection: close" in head:
                    self._fail("closed", "answer said Connection: close")
                    sock.close()
                    sock = None
                    continue
                # sometimes pause, so the connection is idle when a
                # reload comes (the case nginx races)
                if rnd.random() < 0.3:
                    time.sleep(rnd.random() * 0.02)
            except LoadFailure as e:
                self._fail(e.kind, str(e))
                sock.close()
                sock = None
            except (ConnectionResetError, BrokenPipeError) as e:
                self._fail("reset", str(e))
                if sock:
                    sock.close()
                sock = None
            except OSError as e:
                self._fail("connect" if sock is None else "reset", str(e))
                if sock:
                    sock.close()
                sock = None
        if sock:
            sock.close()

    def start(self):
        for i in range(self.nbusy):
            t = threading.Thread(target=self._busy, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def finish(self):
        """Stops the busy clients, then checks every idle connection: still
        open, and it answers on the same connection."""
        self.stop.set()
        for t in self.threads:
            t.join(scaled(15))
        idle_closed = 0
        for s in self.idle:
            # an EOF or reset already waiting means the server closed it
            r, _, _ = select.select([s], [], [], 0)
            if r:
                try:
                    data = s.recv(1, socket.MSG_PEEK)
                except OSError:
                    data = b""
                if not data:
                    idle_closed += 1
                    s.close()
                    continue
            try:
                s.sendall(self.req)
                status, head = read_answer(s, time.monotonic() + scaled(10))
                if status not in self.ok or "\r\nconnection: close" in head:
                    idle_closed += 1
            except (LoadFailure, OSError):
                idle_closed += 1
            s.close()
        return idle_closed

    def report(self):
        return "answers %d, connections %d, failures %r, e.g. %r" % (
            self.answers, self.connections, self.failures, self.examples)


def log_msgs(srv):
    return [l.get("msg", "") for l in srv.error_log_lines()]


def wait_log(srv, pattern, timeout=20, count=1):
    rx = re.compile(pattern)

    def found():
        hits = [m for m in log_msgs(srv) if rx.search(m)]
        return hits if len(hits) >= count else None

    return wait_for(found, timeout, "log line /%s/ x%d" % (pattern, count))


def reload_once(srv, n):
    """HUP, then wait for the n-th "reload done" and for the retiring
    generation to be gone."""
    srv.signal(signal.SIGHUP)
    wait_log(srv, r"^reload done: generation", count=n)
    wait_log(srv, r"^generation \d+ is gone", count=n)


def test_ten_reloads_under_load_lose_nothing(apiary):
    srv = apiary(workers=2, shutdown_timeout_ms=4000)
    load = Load(srv.port).start()
    first = set(srv.worker_pids())
    t0 = time.monotonic()
    for i in range(1, 11):
        reload_once(srv, i)
        # spread the ten reloads over about ten seconds of load
        pause = t0 + i - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    idle_closed = load.finish()
    assert load.failures == {}, load.report()
    assert idle_closed == 0, "%d idle connections closed; %s" % (
        idle_closed, load.report())
    assert load.answers > 100, load.report()
    # every reload really replaced the workers, and handed connections over
    assert not (set(srv.worker_pids()) & first)
    msgs = log_msgs(srv)
    handed = sum(int(m.group(1)) for m in
                 (re.search(r"\): (\d+) connection\(s\) handed over", x)
                  for x in msgs) if m)
    assert handed >= 20, "only %d connections handed over" % handed
    assert not [m for m in msgs if "retirement deadline" in m], msgs
    # the busy clients never had to open a second connection
    assert load.connections == load.nbusy, load.report()


def test_connection_mid_request_at_deadline_gets_connection_close(apiary):
    """A request still unfinished when the hand-over time ends cannot be
    handed over: once it completes, its answer says Connection: close."""
    srv = apiary(workers=1, shutdown_timeout_ms=2000)
    c = srv.connect()
    # the header section is not finished when the hand-over time ends
    c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    srv.signal(signal.SIGHUP)
    wait_log(srv, r"hand-over time over with 1 busy")
    c.send(b"\r\n")
    r = c.read_final_response()
    assert r.header("Connection") == "close", r
    c.assert_closed()


def test_invalid_config_on_reload_keeps_old_workers(apiary):
    srv = apiary(workers=2)
    before = sorted(srv.worker_pids())
    text = srv.conf_path.read_text()
    srv.conf_path.write_text(text + "max_headers = many\n")
    lineno = len(text.splitlines()) + 1
    srv.signal(signal.SIGHUP)
    hits = wait_log(srv, r"^reload failed: ")
    assert "%s:%d: max_headers" % (srv.conf_path, lineno) in hits[0], hits
    srv.assert_answers()
    assert sorted(srv.worker_pids()) == before
    assert not [m for m in log_msgs(srv) if m.startswith("reload: config")]
    # a good file again: the next reload works
    srv.conf_path.write_text(text)
    reload_once(srv, 1)
    srv.assert_answers()
    assert not set(srv.worker_pids()) & set(before)


def test_reload_names_settings_that_need_a_restart(apiary):
    srv = apiary(workers=1)
    text = srv.conf_path.read_text()
    srv.conf_path.write_text(re.sub(r"(?m)^listen = .*$",
                                    "listen = 127.0.0.1:1", text)
                             + "max_headers = 50\n")
    reload_once(srv, 1)
    hits = wait_log(srv, r"^reload: listen cannot change without a restart")
    assert "127.0.0.1:%d" % srv.port in hits[0]
    srv.assert_answers()


def test_usr1_reopens_logs_after_logrotate_style_move(apiary):
    srv = apiary(workers=2)
    srv.assert_answers()
    wait_for(lambda: srv.access_log.exists() and srv.access_log.stat().st_size,
             10, "the access log")
    rotated_err = srv.error_log.with_suffix(".log.1")
    rotated_acc = srv.access_log.with_suffix(".log.1")
    os.rename(srv.error_log, rotated_err)
    os.rename(srv.access_log, rotated_acc)
    srv.signal(signal.SIGUSR1)
    wait_for(srv.error_log.exists, 10, "a new error log")
    wait_log(srv, r"^log files reopened")
    # the workers reopened theirs too: a new request lands in the new file
    n_old = len(rotated_acc.read_text().splitlines())

    def landed():
        srv.assert_answers()
        return srv.access_log.exists() and srv.access_log.read_text().strip()

    wait_for(landed, 10, "an access line in the new file")
    assert len(rotated_acc.read_text().splitlines()) == n_old
    srv.error_log = rotated_err  # for the teardown's crash scan: both
    text = rotated_err.read_text()
    assert "apiaryd started" in text


# ---- -d and -s ----


def write_conf(path, port, **extra):
    d = Path(path)
    cfg = {
        "listen": "%s:%d" % (HOST, port),
        "workers": 1,
        "pidfile": str(d / "apiaryd.pid"),
        "error_log": str(d / "error.log"),
        "access_log": "off",
    }
    cfg.update(extra)
    conf = d / "apiary.conf"
    conf.write_text("".join("%s = %s\n" % kv for kv in cfg.items()))
    return conf


def run(args, **kw):
    return subprocess.run([APIARY_BIN] + args, capture_output=True, text=True,
                          env=clean_env(), timeout=scaled(30), **kw)


def pid_of(pidfile):
    return int(Path(pidfile).read_text().split()[0])


def stop_by_pidfile(pidfile, timeout=10):
    pid = pid_of(pidfile)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pid_alive(pid), timeout, "the daemon to exit")


def test_dash_d_exits_zero_once_serving_and_dash_s_signals(tmp_path):
    from conftest import free_port, RawClient, get
    port = free_port()
    conf = write_conf(tmp_path, port, workers=2)
    r = run(["-c", str(conf), "-d"])
    assert r.returncode == 0, r
    pidfile = tmp_path / "apiaryd.pid"
    try:
        pid = pid_of(pidfile)
        # serving already: no polling needed
        with RawClient(port) as c:
            assert c.request(get("/health")).status == 200
        assert proc_cmdline(pid).startswith("apiaryd: master")
        assert os.getsid(pid) == pid or os.getsid(pid) != os.getsid(0)
        # -s reload goes through the pidfile
        assert run(["-c", str(conf), "-s", "reload"]).returncode == 0
        wait_for(lambda: "reload done" in (tmp_path / "error.log").read_text(),
                 20, "the reload")
        assert run(["-c", str(conf), "-s", "reopen"]).returncode == 0
        wait_for(lambda: "log files reopened" in
                 (tmp_path / "error.log").read_text(), 10, "the reopen")
        assert run(["-c", str(conf), "-s", "quit"]).returncode == 0
        wait_for(lambda: not pid_alive(pid), 20, "the daemon to quit")
        assert not pidfile.exists()
    finally:
        if pidfile.exists():
            stop_by_pidfile(pidfile)


def test_dash_d_reports_startup_failure(tmp_path):
    from conftest import free_port
    port = free_port()
    with socket.socket() as busy:
        busy.bind((HOST, port))
        busy.listen(1)
        conf = write_conf(tmp_path, port)
        r = run(["-c", str(conf), "-d"])
    assert r.returncode != 0, r
    assert "start-up failed" in r.stderr and "Address already in use" in r.stderr, r
    assert not (tmp_path / "apiaryd.pid").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")
def test_dash_d_reports_privilege_failure(tmp_path):
    from conftest import free_port
    conf = write_conf(tmp_path, free_port(), user="no-such-user-apiary")
    r = run(["-c", str(conf), "-d"])
    assert r.returncode == 1, r
    assert "no-such-user-apiary" in r.stderr, r


def test_dash_s_without_a_running_master_fails_clearly(tmp_path):
    from conftest import free_port
    conf = write_conf(tmp_path, free_port())
    r = run(["-c", str(conf), "-s", "reload"])
    assert r.returncode == 1 and "pidfile" in r.stderr, r
    r = run(["-c", str(conf), "-s", "bogus"])
    assert r.returncode == 1 and "upgrade" in r.stderr, r


# ---- identity and limits ----


def ps_users(pids):
    out = subprocess.run(["ps", "-o", "pid=,user=,args=", "-p",
                          ",".join(str(p) for p in pids)],
                         capture_output=True, text=True, check=True).stdout
    return {int(l.split()[0]): l.split()[1] for l in out.splitlines()}


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")
def test_privilege_drop_workers_never_root(tmp_path):
    from conftest import free_port, RawClient, get
    import tempfile
    # pytest's tmp_path is private to root; the unprivileged master must
    # still read its configuration (reload) and reach its pidfile
    d = Path(tempfile.mkdtemp(prefix="apiary-privs-"))
    os.chmod(d, 0o777)
    port = free_port()
    conf = write_conf(d, port, user="nobody", workers=2)
    os.chmod(conf, 0o644)
    r = run(["-c", str(conf), "-d"])
    assert r.returncode == 0, r
    pidfile = d / "apiaryd.pid"
    try:
        master = pid_of(pidfile)
        workers = children_of(master)
        assert len(workers) == 2
        users = ps_users([master] + workers)
        assert all(u == "nobody" for u in users.values()), users
        with RawClient(port) as c:
            assert c.request(get("/health")).status == 200
        # after a reload too
        os.kill(master, signal.SIGHUP)
        wait_for(lambda: "reload done" in (d / "error.log").read_text(), 20,
                 "the reload")
        new = children_of(master)
        users = ps_users(new)
        assert users and all(u == "nobody" for u in users.values()), users
        stop_by_pidfile(pidfile)
        assert not pidfile.exists()  # removed by the unprivileged master
    finally:
        if pidfile.exists():
            stop_by_pidfile(pidfile)
        shutil.rmtree(d, ignore_errors=True)


def _nofile_run(tmp_path, soft, hard, max_connections):
    """Starts apiaryd -d with RLIMIT_NOFILE (soft, hard) and without
    CAP_SYS_RESOURCE (as an unprivileged start would be); returns
    (worker's soft limit, error log text); the daemon is stopped."""
    import resource
    from conftest import free_port
    conf = write_conf(tmp_path, free_port(), max_connections=max_connections)

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    argv = [APIARY_BIN, "-c", str(conf), "-d"]
    if os.geteuid() == 0:
        argv = ["setpriv", "--bounding-set", "-sys_resource", "--"] + argv
    r = subprocess.run(argv, capture_output=True, text=True, env=clean_env(),
                       timeout=scaled(30), preexec_fn=limit)
    assert r.returncode == 0, r
    pidfile = tmp_path / "apiaryd.pid"
    try:
        worker = children_of(pid_of(pidfile))[0]
        with open("/proc/%d/limits" % worker) as f:
            line = [l for l in f if l.startswith("Max open files")][0]
        return int(line.split()[3]), (tmp_path / "error.log").read_text()
    finally:
        stop_by_pidfile(pidfile)


def test_nofile_soft_limit_raised_to_what_connections_need(tmp_path):
    soft, log = _nofile_run(tmp_path, 256, 8192, 2000)
    assert soft == 2064, log
    assert "RLIMIT_NOFILE" not in log


def test_nofile_hard_limit_too_low_is_explained(tmp_path):
    soft, log = _nofile_run(tmp_path, 256, 512, 2000)
    assert soft == 512
    assert ("RLIMIT_NOFILE is 512 (hard limit) but max_connections 2000 "
            "needs 2064 per worker; raise it (ulimit -n 2064" in log), log


# ---- binary upgrade (USR2) ----


@pytest.fixture
def own_binary(tmp_path, monkeypatch):
    """apiaryd copied to a file of its own, so a test can replace it the way
    an upgrade does (a new file at the same path) or break it."""
    import conftest
    path = tmp_path / "bin" / "apiaryd"
    path.parent.mkdir()
    shutil.copy2(APIARY_BIN, path)
    monkeypatch.setattr(conftest, "APIARY_BIN", str(path))
    return path


def replace_binary(path, content=None):
    """Installs a new file at path (new inode, as make install does)."""
    tmp = path.with_suffix(".new")
    if content is None:
        shutil.copy2(APIARY_BIN, tmp)
    else:
        tmp.write_text(content)
        os.chmod(tmp, 0o755)
    os.rename(tmp, path)


def master_msgs(srv, pid):
    return [l.get("msg", "") for l in srv.error_log_lines() if l.get("pid") == pid]


def upgrade(srv, old):
    """USR2 to master old, wait until the new master serves, QUIT old, wait
    until it is gone; returns the new master's pid."""
    oldbin = Path(str(srv.pidfile) + ".oldbin")
    os.kill(old, signal.SIGUSR2)

    def new_serves():
        for m in master_msgs(srv, old):
            g = re.search(r"the new master \(pid (\d+)\) serves", m)
            if g:
                return int(g.group(1))
        return None

    new = wait_for(new_serves, 20, "the new master to serve")
    assert oldbin.exists() and pid_of(oldbin) == old
    assert pid_of(srv.pidfile) == new
    os.kill(old, signal.SIGQUIT)
    wait_for(lambda: not pid_alive(old), 20, "the old master to finish")
    assert not oldbin.exists()
    assert pid_of(srv.pidfile) == new
    srv.seen_pids.update(children_of(new))
    return new


def stop_master(srv, pid):
    kids = children_of(pid)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pid_alive(pid) and not any(pid_alive(k) for k in kids),
             10, "master %d and its workers to exit" % pid)


def test_two_binary_upgrades_under_load_lose_nothing(apiary, own_binary):
    srv = apiary(workers=2, shutdown_timeout_ms=4000)
    srv.stopped = True  # its master leaves on purpose; we stop the last one
    load = Load(srv.port).start()
    master = srv.proc.pid
    try:
        for _ in range(2):
            time.sleep(1)  # some load on each master
            replace_binary(own_binary)
            master = upgrade(srv, master)
        time.sleep(1)
        idle_closed = load.finish()
        assert load.failures == {}, load.report()
        assert idle_closed == 0, "%d idle connections closed; %s" % (
            idle_closed, load.report())
        assert load.connections == load.nbusy, load.report()
        assert proc_cmdline(master).startswith("apiaryd: master")
        assert srv.proc.poll() == 0  # the first master finished cleanly
    finally:
        if pid_alive(master):
            stop_master(srv, master)


def shm_segments(pid):
    """{name: (device, inode)} of the apiary memfd segments pid maps, from
    /proc/PID/maps ("... 00:01 1234 /memfd:apiary-cache (deleted)")."""
    out = {}
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith("/memfd:apiary-"):
                out[parts[5][len("/memfd:"):]] = (parts[3], parts[4])
    return out


def test_upgrade_shares_cache_and_rate_limit_segments(apiary, own_binary):
    """The new master maps the old one's cache and rate-limit memfds (one
    cache: an old worker's invalidation reaches new workers; SPEC 5), and a
    client's spent budget stays spent across the upgrade."""
    burst = 60  # > the seconds an upgrade takes: a fresh table would show
    srv = apiary(workers=2, ratelimit_rate=1, ratelimit_burst=burst)
    srv.stopped = True  # its master leaves on purpose; we stop the new one
    old = srv.proc.pid
    old_workers = srv.worker_pids()
    segs = shm_segments(old_workers[0])
    assert set(segs) == {"apiary-cache", "apiary-ratelimit"}, segs
    assert all(shm_segments(p) == segs for p in old_workers + [old])
    # spend a client's whole budget (the limit is per address)
    with RawClient(srv.port, source="127.0.0.2") as c:
        seen = [c.request(get("/health")).status for _ in range(burst + 5)]
    spent_at = time.monotonic()
    assert seen.count(200) <= burst and 429 in seen, seen
    replace_binary(own_binary)
    new = upgrade(srv, old)
    try:
        new_workers = [p for p in children_of(new)
                       if proc_cmdline(p).startswith("apiaryd: worker")]
        assert new_workers
        for p in new_workers + [new]:
            assert shm_segments(p) == segs, (p, shm_segments(p), segs)
        assert any("shares the old one's cache" in m
                   for m in master_msgs(srv, new)), master_msgs(srv, new)
        # the new generation draws on the same bucket: empty but for what
        # refilled (1/s) since it was spent
        with RawClient(srv.port, source="127.0.0.2") as c:
            seen = [c.request(get("/health")).status for _ in range(burst)]
        elapsed = time.monotonic() - spent_at
        assert seen.count(200) <= int(elapsed) + 1, (seen, elapsed)
        assert 429 in seen, (seen, elapsed)
        assert srv.health().status == 200  # another address: its own budget
    finally:
        stop_master(srv, new)


def test_upgrade_with_another_cache_size_gets_a_fresh_held_cache(
        apiary, own_binary):
    """A new master whose cache_size differs cannot share the old cache: it
    makes its own, serves no hits while the old master runs (its workers
    invalidate only theirs), and says so; the rate-limit table, whose size
    did not change, is still shared."""
    srv = apiary(workers=1)
    srv.stopped = True
    old = srv.proc.pid
    segs = shm_segments(srv.worker_pids()[0])
    text = srv.conf_path.read_text()
    srv.conf_path.write_text(text + "cache_size = 32m\n")
    new = upgrade(srv, old)
    try:
        msgs = master_msgs(srv, new)
        assert any("cache cannot be shared: its size differs" in m
                   for m in msgs), msgs
        wait_for(lambda: any("the fresh cache serves from now on" in m
                             for m in master_msgs(srv, new)),
                 10, "the new master to release its fresh cache")
        worker = [p for p in children_of(new)
                  if proc_cmdline(p).startswith("apiaryd: worker")][0]
        now = shm_segments(worker)
        assert now["apiary-ratelimit"] == segs["apiary-ratelimit"]
        assert now["apiary-cache"] != segs["apiary-cache"]
    finally:
        stop_master(srv, new)


def test_upgrade_rollback_with_hup(apiary, own_binary):
    srv = apiary(workers=2)
    load = Load(srv.port, busy=2, idle=10).start()
    old = srv.proc.pid
    oldbin = Path(str(srv.pidfile) + ".oldbin")
    os.kill(old, signal.SIGUSR2)
    wait_log(srv, r"the new master \(pid \d+\) serves")
    new = pid_of(srv.pidfile)
    assert new != old
    srv.signal(signal.SIGHUP)  # roll back
    wait_for(lambda: not pid_alive(new), 20, "the new master to leave")
    wait_for(lambda: not oldbin.exists() and pid_of(srv.pidfile) == old, 10,
             "the pidfile to be the old master's again")
    idle_closed = load.finish()
    assert load.failures == {} and idle_closed == 0, load.report()
    srv.assert_answers()


def test_upgrade_to_a_binary_that_cannot_start_keeps_the_old_one(apiary,
                                                                  own_binary):
    srv = apiary(workers=2)
    before = sorted(srv.worker_pids())
    replace_binary(own_binary, "#!/bin/sh\necho 'broken build' >&2\nexit 3\n")
    srv.signal(signal.SIGUSR2)
    hits = wait_log(srv, r"binary upgrade: the new master \(pid \d+\) exited "
                         r"with status 3; this master keeps serving")
    assert hits
    srv.expected_deaths = 1  # that line, for the teardown's crash scan
    wait_for(lambda: srv.pidfile.exists() and pid_of(srv.pidfile) == srv.proc.pid,
             10, "the pidfile back")
    assert not Path(str(srv.pidfile) + ".oldbin").exists()
    assert sorted(srv.worker_pids()) == before
    srv.assert_answers()


def test_old_master_stopped_mid_upgrade_leaves_the_new_pidfile(apiary,
                                                               own_binary):
    """TERM to the old master before QUIT: it stops with its workers, and
    removes its own .oldbin, never the new master's pidfile."""
    srv = apiary(workers=1)
    srv.stopped = True
    old = srv.proc.pid
    os.kill(old, signal.SIGUSR2)
    wait_log(srv, r"the new master \(pid \d+\) serves")
    new = pid_of(srv.pidfile)
    try:
        os.kill(old, signal.SIGTERM)
        wait_for(lambda: not pid_alive(old), 10, "the old master to stop")
        assert not Path(str(srv.pidfile) + ".oldbin").exists()
        assert pid_of(srv.pidfile) == new
        srv.assert_answers()
    finally:
        stop_master(srv, new)
    assert not srv.pidfile.exists()


def test_systemd_notify_protocol(apiary, tmp_path):
    """Type=notify: READY=1 once serving, RELOADING=1 then READY=1 around a
    reload, STOPPING=1 on shutdown, over $NOTIFY_SOCKET."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(scaled(10))
    try:
        srv = apiary(workers=2, env={"NOTIFY_SOCKET": path})

        def expect(word):
            while True:
                msg = sock.recv(4096).decode()
                if word in msg.split("\n"):
                    return msg

        msg = expect("READY=1")
        assert "MAINPID=%d" % srv.proc.pid in msg, msg
        srv.signal(signal.SIGHUP)
        expect("RELOADING=1")
        assert "serving, generation 2" in expect("READY=1")
        srv.signal(signal.SIGTERM)
        srv.stopped = True
        expect("STOPPING=1")
        srv.wait_gone(10)
    finally:
        sock.close()


def test_retiring_workers_say_so_in_ps(apiary):
    srv = apiary(workers=1, shutdown_timeout_ms=10000)
    c = srv.connect()
    c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # busy: keeps it retiring
    old = srv.worker_pids()
    srv.signal(signal.SIGHUP)
    wait_for(lambda: "(retiring, generation 1)" in (proc_cmdline(old[0]) or ""),
             10, "the old worker's title")
    c.send(b"\r\n")
    r = c.read_final_response()
    assert r.status == 200
    c.close()
    wait_log(srv, r"^generation 1 is gone")


def test_dash_d_with_stderr_logs_releases_the_callers_pipes(tmp_path):
    """error_log and access_log "-": the daemon must not keep the caller's
    stdout and stderr open once it serves, or a caller that reads them to
    the end (an init system, a test) waits for ever."""
    from conftest import free_port
    conf = write_conf(tmp_path, free_port(), error_log="-", access_log="-")
    r = run(["-c", str(conf), "-d"])  # run() has a timeout
    pidfile = tmp_path / "apiaryd.pid"
    try:
        assert r.returncode == 0, r
        assert "error_log is stderr" in r.stderr, r.stderr
        assert "apiaryd started" in r.stderr, r.stderr
    finally:
        if pidfile.exists():
            stop_by_pidfile(pidfile)


def test_new_master_killed_mid_upgrade_old_one_takes_pidfile_back(apiary,
                                                                  own_binary):
    srv = apiary(workers=2)
    before = sorted(srv.worker_pids())
    srv.signal(signal.SIGUSR2)
    wait_log(srv, r"the new master \(pid \d+\) serves")
    new = pid_of(srv.pidfile)
    new_workers = children_of(new)
    os.kill(new, signal.SIGKILL)
    wait_log(srv, r"the new master \(pid %d\) exited with signal 9" % new)
    wait_for(lambda: pid_of(srv.pidfile) == srv.proc.pid, 10,
             "the pidfile back")
    # its workers follow it (PR_SET_PDEATHSIG)
    wait_for(lambda: not any(pid_alive(p) for p in new_workers), 10,
             "the new master's workers to exit")
    assert sorted(srv.worker_pids()) == before
    srv.assert_answers()
