"""The process model (SPEC 4): titles, supervision, spreading connections,
max_connections, signals, the pidfile."""
import collections
import json
import os
import signal
import subprocess

from conftest import (APIARY_BIN, RawClient, clean_env, free_port, get,
                      pid_alive, proc_cmdline, scaled, server_rx_queue,
                      settled_fd_counts, wait_for)


def test_process_titles_and_pidfile(apiary):
    srv = apiary(workers=3)
    assert proc_cmdline(srv.proc.pid).startswith("apiaryd: master")
    workers = srv.workers()
    assert sorted(workers) == [1, 2, 3], workers
    for wid, pid in workers.items():
        assert proc_cmdline(pid).startswith("apiaryd: worker %d" % wid)
    assert int(srv.pidfile.read_text().split()[0]) == srv.proc.pid


def test_error_log_is_json_lines(server):
    lines = server.error_log_lines()
    assert lines, "empty error log"
    for line in lines:
        assert "raw" not in line, line
        assert {"time", "level", "pid", "proc", "msg"} <= set(line), line
        assert line["level"] in ("debug", "info", "warn", "error"), line
    assert any(l["proc"] == "master" for l in lines)


def test_access_log_fields(server):
    with server.connect() as c:
        c.request(get("/nope?x=1"))
    line = wait_for(lambda: [l for l in server.access_log_lines()
                             if l["path"].startswith("/nope")],
                    10, "the request in the access log")[0]
    for key in ("time", "request_id", "worker", "client", "method", "path",
                "status", "bytes", "us"):
        assert key in line, line
    assert line["method"] == "GET" and line["status"] == 404
    assert line["client"].startswith("127.0.0.1:")
    assert line["worker"] in (1, 2) and line["bytes"] > 0 and line["us"] >= 0


def test_sigkill_worker_is_logged_and_respawned(apiary):
    srv = apiary(workers=2)
    before = srv.workers()
    victim_id, victim = sorted(before.items())[0]
    srv.expected_deaths = 1
    os.kill(victim, signal.SIGKILL)

    def respawned():
        now = srv.workers()
        return now if (len(now) == 2 and now.get(victim_id) not in (None, victim)
                       and now[victim_id] != victim) else None

    after = wait_for(respawned, 10, "worker %d to be respawned" % victim_id)
    assert not pid_alive(victim)
    assert after[victim_id] != victim
    other = [w for w in before if w != victim_id][0]
    assert after[other] == before[other], "the other worker was replaced too"
    srv.wait_workers(2)
    for _ in range(10):
        srv.assert_answers()
    msgs = wait_for(
        lambda: [l["msg"] for l in srv.error_log_lines()
                 if "killed by signal" in l.get("msg", "")],
        10, "the kill in the error log")
    assert len(msgs) == 1, msgs
    assert str(victim) in msgs[0] and "signal 9" in msgs[0], msgs
    # baseline the new worker's descriptors too, for the teardown check
    srv.fd_baseline.update(settled_fd_counts([after[victim_id]]))


def test_fatal_signal_writes_backtrace_then_respawns(apiary):
    """SPEC 4 and 7: the backtrace is in the error log, one JSON line per
    frame, between a line naming the signal and an end line."""
    srv = apiary(workers=1)
    (wid, victim), = srv.workers().items()
    srv.expected_deaths = 1
    os.kill(victim, signal.SIGSEGV)
    wait_for(lambda: srv.workers().get(wid) not in (None, victim),
             10, "worker %d to be respawned" % wid)
    text = wait_for(
        lambda: (lambda t: t if "end of backtrace" in t else None)(
            srv.error_log.read_text(errors="replace")),
        10, "the backtrace in the error log")
    lines = []
    for raw in text.splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            raise AssertionError("not a JSON line: %r" % raw) from None
    start = next(i for i, l in enumerate(lines)
                 if l["msg"].startswith("crashed on signal 11"))
    end = next(i for i, l in enumerate(lines) if l["msg"] == "end of backtrace")
    assert lines[start]["signal"] == 11 and lines[start]["level"] == "error"
    frames = lines[start + 1:end]
    assert frames and lines[end]["frames"] == len(frames), lines[end]
    for n, f in enumerate(frames):
        assert f["msg"] == "backtrace" and f["frame"] == n, f
        assert f["pid"] == victim and f["proc"] == "worker %d" % wid, f
        assert {"time", "level", "symbol"} <= set(f), f
    assert any("loop_run" in f["symbol"] or "worker_run" in f["symbol"]
               for f in frames), frames
    assert any("killed by signal 11" in l["msg"] for l in lines[end:]), lines[end:]
    srv.wait_workers(1)
    srv.assert_answers()
    # the crash line, its backtrace's end and the master's line all match
    # the teardown's crash patterns: they are this test's doing
    srv.expected_deaths = len(srv.crash_lines())
    srv.fd_baseline.update(settled_fd_counts(list(srv.workers().values())))


def test_connections_spread_over_workers(apiary):
    """SPEC 4: with 200 connections opened at once, each worker's share
    stays within 15% of the mean."""
    srv = apiary(workers=2, debug_endpoints="on")
    n = 200
    conns = []
    try:
        for _ in range(n):
            conns.append(RawClient(srv.port))
        for c in conns:
            c.send(get("/debug/worker"))
        tally = collections.Counter()
        for c in conns:
            r = c.read_response()
            assert r.status == 200, r
            doc = r.json()
            tally[doc["worker"]] += 1
    finally:
        for c in conns:
            c.close()
    mean = n / 2
    shares = dict(sorted(tally.items()))
    print("spread:", shares)
    assert sorted(shares) == [1, 2], shares
    for wid, count in shares.items():
        assert abs(count - mean) <= 0.15 * mean, (
            "uneven spread of %d connections over 2 workers: %r" % (n, shares))


def test_max_connections_pauses_accepting(apiary):
    srv = apiary(workers=1, max_connections=5)
    held = [RawClient(srv.port) for _ in range(5)]
    extra = None
    try:
        for c in held:
            assert c.request(get("/health")).status == 200
        # the 6th is accepted by the kernel (listen queue), not by the worker
        extra = RawClient(srv.port)
        extra.send(get("/health"))
        assert extra.nothing_received(scaled(1.0)), \
            "a 6th connection was served beyond max_connections=5"
        # the five are still served meanwhile
        for c in held:
            r = c.request(get("/debug/worker"))
            assert r.status == 200 and r.json()["active"] == 5, r
        assert extra.nothing_received(0.2), "6th served beyond the limit"
        # a slot frees up: the waiting connection gets its answer
        held.pop().close()
        r = extra.read_response(timeout=10)
        assert r.status == 200 and r.json() == {"status": "ok"}
        assert extra.request(get("/debug/worker")).json()["active"] == 5
    finally:
        for c in held:
            c.close()
        if extra:
            extra.close()


def test_quit_is_graceful(apiary):
    srv = apiary(workers=1, shutdown_timeout_ms=int(scaled(10) * 1000))
    pids = srv.all_pids()
    idle = srv.connect()
    assert idle.request(get("/health")).status == 200
    partial = srv.connect()
    partial.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no final CRLF yet
    # the request is "in flight" once the worker has read those bytes: its
    # socket's receive queue is empty again
    wait_for(lambda: server_rx_queue(srv.port, partial.sock) == 0, 5,
             "the worker to read the partial request")
    srv.signal(signal.SIGQUIT)
    srv.stopped = True
    # an idle keep-alive connection is closed by the server
    idle.assert_closed(timeout=5)
    idle.close()
    # the request in flight is finished, with Connection: close
    partial.send(b"\r\n")
    r = partial.read_response(timeout=5)
    assert r.status == 200 and r.json() == {"status": "ok"}
    assert r.header("Connection") == "close"
    partial.assert_closed()
    partial.close()
    srv.wait_gone(10)
    assert srv.proc.returncode == 0
    assert not any(pid_alive(p) for p in pids)
    msgs = [l.get("msg", "") for l in srv.error_log_lines()]
    assert any("graceful" in m for m in msgs), msgs


def test_term_stops_everything_within_1500ms(apiary):
    srv = apiary(workers=2)
    pids = srv.all_pids()
    assert len(pids) == 3
    # some work in progress: an idle keep-alive connection, a partial request
    idle = srv.connect()
    assert idle.request(get("/health")).status == 200
    partial = srv.connect()
    partial.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    wait_for(lambda: server_rx_queue(srv.port, partial.sock) == 0, 5,
             "the worker to read the partial request")
    srv.signal(signal.SIGTERM)
    srv.stopped = True
    srv.wait_gone(1.5)  # fails unless every process is gone by then
    idle.close()
    partial.close()
    assert not any(pid_alive(p) for p in pids)
    assert srv.proc.returncode == 0, srv.proc.returncode
    assert not srv.pidfile.exists(), "pidfile left behind"


def test_dash_s_stop_signals_the_master(apiary):
    srv = apiary(workers=1)
    r = subprocess.run([APIARY_BIN, "-c", str(srv.conf_path), "-s", "stop"],
                       env=clean_env(), capture_output=True, timeout=scaled(10))
    assert r.returncode == 0, r.stderr
    srv.stopped = True
    srv.wait_gone(5)
    assert srv.proc.returncode == 0


def test_second_instance_refuses_same_pidfile(apiary, tmp_path):
    srv = apiary(workers=1)
    other_log = tmp_path / "second-error.log"
    r = subprocess.run(
        [APIARY_BIN, "-c", str(srv.conf_path), "-o", "listen=127.0.0.1:%d" % free_port(),
         "-o", "error_log=%s" % other_log],
        env=clean_env(), capture_output=True, timeout=scaled(10))
    text = r.stderr.decode(errors="replace")
    if other_log.exists():
        text += other_log.read_text(errors="replace")
    assert r.returncode == 1, (r.returncode, text)
    assert "already running" in text, text
    assert str(srv.proc.pid) in text, text
    # the first one is untouched
    assert int(srv.pidfile.read_text().split()[0]) == srv.proc.pid
    srv.assert_answers()
