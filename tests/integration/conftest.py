"""
Black-box integration tests for apiaryd (STYLE 9).

Every test runs its own apiaryd: a master and its workers on a free
127.0.0.1 port, with the pidfile, the logs and the config file in a
temporary directory.  Start one with the ``apiary`` fixture (a factory
taking config keys) or use ``server`` (the defaults below).

The rules the helpers enforce:
  - never sleep a fixed time to wait for something: poll a condition up to a
    deadline (``wait_for``), like redis's wait_for_condition;
  - every deadline is multiplied by APIARY_TEST_TIMEOUT_MULTIPLIER (default
    1), like libuv's UV_TEST_TIMEOUT_MULTIPLIER, for slow or loaded machines;
  - after each test the server must still answer, its workers must hold no
    more descriptors than after start-up, and its error log must show no
    crash (unless the test said it expects one); then it is stopped with
    SIGTERM by pid and every one of its processes must be gone.

Writes need a bearer token (issue 10): every server started here gets
``auth_secret = TEST_SECRET``, and the request helpers add a valid token to
POST, PATCH and DELETE by default: ``RawClient.send`` inserts an
Authorization line after each write's request line that has none
(``RawClient(..., auth=False)`` or ``send(data, auth=False)`` to send bytes
as they are), and ``api.conftest.ApiClient`` does the same for requests
(``token=None`` for none, ``token="..."`` for a forged one).  ``mint_token``
is scripts/mint-token's own function.

Environment: APIARY_BIN (default <root>/build/apiaryd),
APIARY_TEST_TIMEOUT_MULTIPLIER.
"""
import json
import os
import re
import signal
import socket
import subprocess
import time
import importlib.util
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APIARY_BIN = os.environ.get("APIARY_BIN") or str(ROOT / "build" / "apiaryd")
MULTIPLIER = float(os.environ.get("APIARY_TEST_TIMEOUT_MULTIPLIER") or "1")

HOST = "127.0.0.1"

# The HS256 key of every server the fixtures start (issue 10), and the
# token minting of scripts/mint-token (so the script is tested too).
TEST_SECRET = "apiary-test-secret-0123456789abcdef-0123456789"
_loader = SourceFileLoader("mint_token", str(ROOT / "scripts" / "mint-token"))
_mint = importlib.util.module_from_spec(importlib.util.spec_from_loader("mint_token", _loader))
_loader.exec_module(_mint)
WRITE_METHODS = (b"POST", b"PATCH", b"DELETE")


def mint_token(claims=None, key=TEST_SECRET, header=None, ttl=3600):
    """An HS256 token: claims (default sub + exp = now + ttl) signed with key;
    header overrides the JOSE header (forged algorithms)."""
    if claims is None:
        claims = {"sub": "test", "exp": int(time.time()) + ttl}
    if isinstance(key, str):
        key = key.encode()
    return _mint.mint(key, claims, header)


def auth_line(token=None):
    """b"Authorization: Bearer <token>\r\n" (a fresh valid one by default)."""
    return b"Authorization: Bearer " + (token or mint_token()).encode() + b"\r\n"


_WRITE_LINE = re.compile(rb"(?:POST|PATCH|DELETE) [^ \r\n]+ HTTP/1\.[01]\r\n")


def add_auth(data):
    """data with an Authorization line after the request line of every write
    request in it, unless data already holds an Authorization field."""
    if b"authorization:" in data.lower():
        return data
    line = auth_line()
    return _WRITE_LINE.sub(lambda m: m.group(0) + line, data)


# Log lines that mean a process died in a way nobody asked for (or had to
# be killed because it did not honour a shutdown signal).
CRASH_PATTERNS = re.compile(
    r"killed by signal|backtrace|crash|AddressSanitizer|LeakSanitizer|"
    r"runtime error:|Segmentation fault|core dumped|"
    r"exited with status [1-9]|still running at the shutdown deadline",
    re.IGNORECASE,
)


def scaled(seconds):
    """A deadline in seconds, scaled for slow machines."""
    return seconds * MULTIPLIER


def wait_for(cond, timeout, what, interval=0.02):
    """Polls cond() until it returns something true; returns that value.

    Fails the test when scaled(timeout) seconds pass first."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                "timed out after %.1f s waiting for %s" % (scaled(timeout), what)
            )
        time.sleep(interval)


# ---- processes and descriptors (Linux /proc) ----


def proc_stat(pid):
    """(state, ppid) of a process, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name is in parentheses and may hold spaces or ')'
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def proc_cmdline(pid):
    """The process title (setproctitle rewrites argv), NULs as spaces."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def children_of(ppid):
    """Live child pids of ppid (scans /proc, like ps --ppid)."""
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st and st[1] == ppid and st[0] not in ("Z", "X"):
            kids.append(int(name))
    return sorted(kids)


def fd_count(pid):
    """Number of open descriptors of pid, or None when it is gone."""
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except (FileNotFoundError, ProcessLookupError):
        return None


def settled_fd_counts(pids, timeout=5):
    """{pid: fd count} once the counts have stopped moving: the same values
    three readings in a row, 50 ms apart (the descriptor of a connection
    may be released a moment after the client saw the close)."""
    readings = []

    def stable():
        readings.append({p: fd_count(p) for p in pids})
        return len(readings) >= 3 and readings[-1] == readings[-2] == readings[-3]

    wait_for(stable, timeout, "the fd counts of %r to settle" % (pids,), 0.05)
    return readings[-1]


def server_rx_queue(port, client_sock):
    """Bytes the server has not yet read from its end of client_sock's
    connection (rx_queue in /proc/net/tcp[6]), or None if not found."""
    lport = client_sock.getsockname()[1]
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            local, remote, queues = f[1], f[2], f[4]
            if (int(local.rsplit(":", 1)[1], 16) == port
                    and int(remote.rsplit(":", 1)[1], 16) == lport):
                return int(queues.split(":")[1], 16)
    return None


def in_event_loop(pid):
    """True when pid sleeps in epoll_wait (its loop is running), or when the
    kernel hides wchan (then we cannot tell and say yes)."""
    try:
        with open("/proc/%d/wchan" % pid) as f:
            wchan = f.read().strip()
    except OSError:
        return False
    return wchan in ("0", "") or "epoll" in wchan or wchan == "ep_poll"


# ---- raw HTTP client ----


class Response:
    def __init__(self, version, status, reason, headers, body, raw):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value), as received
        self.body = body
        self.raw = raw  # the head bytes, for error messages

    def header(self, name, default=None):
        """The value of a header (case-insensitive); fails if repeated."""
        vals = self.header_all(name)
        assert len(vals) <= 1, "header %s repeated: %r" % (name, self.raw)
        return vals[0] if vals else default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %r body=%r>" % (self.status, self.raw, self.body[:200])


class RawClient:
    """One TCP connection speaking bytes; parses responses itself so that
    malformed requests, pipelining and closes can be observed exactly."""

    def __init__(self, port, host=HOST, timeout=10, family=socket.AF_INET,
                 auth=True, source=None):
        self.timeout = scaled(timeout)
        self.auth = auth  # add a valid token to writes (add_auth)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        try:
            if source:  # another client address, e.g. 127.0.0.2
                self.sock.bind((source, 0))
            self.sock.connect((host, port))
        except OSError:
            self.sock.close()
            raise
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, data, auth=None):
        if self.auth if auth is None else auth:
            data = add_auth(data)
        self.sock.sendall(data)

    def _recv_more(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no complete response; have %r" % self.buf[:500])
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError(
                "no complete response within %.1f s; have %r"
                % (self.timeout, self.buf[:500])
            ) from None
        if not data:
            raise AssertionError(
                "connection closed before a complete response; have %r"
                % self.buf[:500]
            )
        self.buf += data

    def read_response(self, head=False, timeout=None):
        """Reads one response (an interim 1xx counts as one).  head=True for
        the answer to a HEAD request (no body whatever the headers say)."""
        deadline = time.monotonic() + (scaled(timeout) if timeout else self.timeout)
        while b"\r\n\r\n" not in self.buf:
            self._recv_more(deadline)
        head_bytes, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head_bytes.decode("latin-1").split("\r\n")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3}) ?(.*)$", lines[0])
        assert m, "bad status line %r" % lines[0]
        version, status, reason = m.group(1), int(m.group(2)), m.group(3)
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip(), "bad header line %r" % line
            headers.append((name, value.strip()))
        resp = Response(version, status, reason, headers, b"", head_bytes)
        if head or status < 200 or status in (204, 304):
            return resp
        cl = resp.header("Content-Length")
        assert cl is not None, "response without Content-Length: %r" % head_bytes
        n = int(cl)
        while len(self.buf) < n:
            self._recv_more(deadline)
        resp.body, self.buf = self.buf[:n], self.buf[n:]
        return resp

    def read_final_response(self, head=False, timeout=None):
        """Reads responses until a final (non-1xx) one."""
        while True:
            resp = self.read_response(head=head, timeout=timeout)
            if resp.status >= 200:
                return resp

    def request(self, data, head=False):
        self.send(data)
        return self.read_final_response(head=head)

    def peer_closed(self, timeout=5):
        """Waits for the server to close: True on EOF or reset, False when
        the deadline passes first.  Any byte received instead fails."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            assert not self.buf, "unexpected bytes before close: %r" % self.buf[:300]
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not data:
                return True
            self.buf += data

    def assert_closed(self, timeout=5):
        assert self.peer_closed(timeout), (
            "the server did not close the connection within %.1f s" % scaled(timeout)
        )

    def nothing_received(self, window):
        """True when nothing arrives (and no close) for `window` seconds;
        for the few tests that must show that something does NOT happen."""
        self.sock.settimeout(window)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        self.buf += data
        return False


def get(path="/health", host="x", extra=b"", version=b"HTTP/1.1", method=b"GET"):
    """Bytes of a simple request."""
    if isinstance(path, str):
        path = path.encode()
    return (
        method + b" " + path + b" " + version + b"\r\n"
        + (b"Host: " + host.encode() + b"\r\n" if host is not None else b"")
        + extra + b"\r\n"
    )


def assert_json_error(resp, code):
    """SPEC 2: every error is {"error":{"message":"...","code":N}}."""
    assert resp.status == code, resp
    assert resp.header("Content-Type", "").startswith("application/json"), resp
    doc = json.loads(resp.body)
    assert set(doc) == {"error"}, doc
    assert set(doc["error"]) == {"message", "code"}, doc
    assert doc["error"]["code"] == code, doc
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"], doc


# ---- the server under test ----


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def clean_env(extra=None):
    """The environment without any APIARY_* (a developer's APIARY_LOG must not
    change what the tests see), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    env.update(extra or {})
    return env


class Apiary:
    """One apiaryd under test; see the module comment."""

    DEFAULTS = {
        "workers": 2,
        "log_level": "info",
        "debug_endpoints": "on",
        "shutdown_timeout_ms": 10000,
        "auth_secret": TEST_SECRET,
    }

    def __init__(self, tmpdir, config, env=None, args=()):
        self.dir = Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = dict(self.DEFAULTS)
        self.config.update(config)
        self.env = env or {}
        self.args = list(args)
        self.pidfile = self.dir / "apiaryd.pid"
        self.error_log = self.dir / "error.log"
        self.access_log = self.dir / "access.log"
        self.stdout_path = self.dir / "stdout"
        self.stderr_path = self.dir / "stderr"
        self.conf_path = self.dir / "apiary.conf"
        self.proc = None
        self.port = None
        self.expected_deaths = 0  # worker deaths the test causes on purpose
        self.stopped = False  # the test stopped the server itself
        self.fd_baseline = {}
        self.seen_pids = set()

    # -- start and stop --

    def _write_config(self):
        cfg = {
            "listen": "%s:%d" % (HOST, self.port),
            "pidfile": str(self.pidfile),
            "error_log": str(self.error_log),
            "access_log": str(self.access_log),
            # its own metrics segment, never a developer's `make run` one
            "name": "test-%d" % self.port,
        }
        cfg.update(self.config)
        cfg["listen"] = str(cfg["listen"]).replace("{port}", str(self.port))
        with open(self.conf_path, "w") as f:
            f.write("# written by tests/integration/conftest.py\n")
            for k, v in cfg.items():
                f.write("%s = %s\n" % (k, v))

    def start(self):
        for _ in range(5):  # another process may grab the free port first
            self.port = free_port()
            self._write_config()
            for p in (self.error_log, self.access_log):
                if p.exists():
                    p.unlink()
            with open(self.stdout_path, "wb") as out, \
                    open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    [APIARY_BIN, "-c", str(self.conf_path)] + self.args,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    env=clean_env(self.env), close_fds=True,
                )
            self.seen_pids.add(self.proc.pid)
            if self._wait_ready():
                return self
            if "Address already in use" not in self.logs_text():
                raise AssertionError(
                    "apiaryd exited at start-up with %s:\n%s"
                    % (self.proc.returncode, self.logs_text())
                )
        raise AssertionError("could not find a free port")

    def _wait_ready(self):
        """Polls until /health answers and every worker sits in its loop;
        False when the master exited instead."""

        def answering():
            if self.proc.poll() is not None:
                return "exited"
            try:
                r = self.health(timeout=2)
            except (OSError, AssertionError):
                return None
            return "ok" if r.status == 200 else None

        state = wait_for(answering, 15, "apiaryd to answer /health", 0.02)
        if state == "exited":
            return False
        nworkers = int(self.config["workers"])
        self.wait_workers(nworkers)
        self.fd_baseline = settled_fd_counts(self.worker_pids())
        return True

    def wait_workers(self, n, timeout=10):
        """Waits until n workers run their event loops; returns their pids."""

        def ready():
            pids = self.worker_pids()
            if len(pids) == n and all(in_event_loop(p) for p in pids):
                return pids
            return None

        pids = wait_for(ready, timeout, "%d workers in their event loops" % n)
        self.seen_pids.update(pids)
        return pids

    def signal(self, signo):
        os.kill(self.proc.pid, signo)

    def all_pids(self):
        """Master and workers that are still alive (and any we saw before)."""
        pids = set(self.seen_pids)
        if self.proc is not None:
            pids.update(children_of(self.proc.pid))
        return sorted(p for p in pids if p == self.proc.pid or pid_alive(p))

    def wait_gone(self, timeout):
        """Waits until the master (reaped) and every worker are gone;
        returns the seconds it took."""
        t0 = time.monotonic()
        known = set(self.seen_pids) | set(children_of(self.proc.pid))
        self.seen_pids = known

        def gone():
            if self.proc.poll() is None:
                return False
            return not any(pid_alive(p) for p in known if p != self.proc.pid)

        wait_for(gone, timeout, "all apiaryd processes %s to exit" % sorted(known), 0.01)
        return time.monotonic() - t0

    def kill_everything(self):
        """Last resort, by pid: SIGKILL whatever is left and reap it."""
        for pid in self.all_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            pass

    # -- observing it --

    def url(self, path="/health"):
        return "http://%s:%d%s" % (HOST, self.port, path)

    def connect(self, timeout=10):
        return RawClient(self.port, timeout=timeout)

    def health(self, timeout=10):
        """GET /health on a fresh keep-alive connection, then the client
        closes (so the worker frees the connection at once)."""
        with RawClient(self.port, timeout=timeout) as c:
            return c.request(get("/health"))

    def assert_answers(self):
        r = self.health()
        assert r.status == 200 and r.json() == {"status": "ok"}, r

    def worker_pids(self):
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [
            p
            for p in children_of(self.proc.pid)
            if (proc_cmdline(p) or "").startswith("apiaryd: worker")
        ]

    def workers(self):
        """{worker id: pid} from the process titles."""
        out = {}
        for p in self.worker_pids():
            m = re.match(r"apiaryd: worker (\d+)", proc_cmdline(p) or "")
            if m:
                out[int(m.group(1))] = p
        return out

    def fd_counts(self):
        return {p: fd_count(p) for p in self.worker_pids()}

    def assert_no_fd_leak(self, timeout=5):
        """Every worker that was there at start-up is back to (at most) its
        start-up descriptor count.  Polls: a closed connection's descriptor
        may be released a moment after the client saw the close."""
        base = {p: n for p, n in self.fd_baseline.items() if pid_alive(p)}

        def back():
            now = {p: fd_count(p) for p in base}
            return all(now[p] is None or now[p] <= base[p] for p in base)

        try:
            wait_for(back, timeout, "worker fd counts to return to the baseline")
        except AssertionError:
            raise AssertionError(
                "descriptor leak: baseline %r, now %r; fds: %r"
                % (base, {p: fd_count(p) for p in base},
                   {p: self._fd_targets(p) for p in base})
            ) from None

    @staticmethod
    def _fd_targets(pid):
        out = []
        try:
            for fd in sorted(os.listdir("/proc/%d/fd" % pid), key=int):
                try:
                    out.append("%s->%s" % (fd, os.readlink("/proc/%d/fd/%s" % (pid, fd))))
                except OSError:
                    pass
        except OSError:
            pass
        return out

    def error_log_lines(self):
        """The error log as a list of dicts (non-JSON lines as {"raw": ...})."""
        out = []
        try:
            text = self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line, "msg": line})
        return out

    def access_log_lines(self):
        try:
            text = self.access_log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def logs_text(self):
        parts = []
        for p in (self.error_log, self.stderr_path, self.stdout_path):
            try:
                parts.append("--- %s\n%s" % (p.name, p.read_text(errors="replace")))
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    def crash_lines(self):
        lines = []
        for p in (self.error_log, self.stderr_path):
            try:
                text = p.read_text(errors="replace")
            except FileNotFoundError:
                continue
            lines += [ln for ln in text.splitlines() if CRASH_PATTERNS.search(ln)]
        return lines

    def check_and_stop(self):
        """Teardown: still answering, no fd leak, no crash in the logs, then
        SIGTERM by pid and every process gone.  Always stops the server,
        then reports every problem found."""
        problems = []
        if self.proc is None:  # it never started (Popen failed)
            return
        if not self.stopped and self.proc.poll() is not None:
            problems.append("apiaryd exited during the test (status %s)"
                            % self.proc.returncode)
        if not self.stopped and self.proc.poll() is None:
            try:
                self.assert_answers()
            except (OSError, AssertionError) as e:
                problems.append("server no longer answers /health: %s" % e)
            try:
                self.assert_no_fd_leak()
            except AssertionError as e:
                problems.append(str(e))
        if self.proc.poll() is None:
            self.seen_pids.update(children_of(self.proc.pid))
            self.signal(signal.SIGTERM)
            try:
                self.wait_gone(10)
            except AssertionError as e:
                problems.append(str(e))
                self.kill_everything()
            if self.proc.returncode != 0:
                problems.append("master exited with status %s after SIGTERM"
                                % self.proc.returncode)
        else:
            try:
                self.wait_gone(10)
            except AssertionError as e:
                problems.append(str(e))
                self.kill_everything()
        crashes = self.crash_lines()
        if len(crashes) > self.expected_deaths:
            problems.append("unexpected crash/kill in the logs:\n" + "\n".join(crashes))
        if problems:
            raise AssertionError(
                "\n".join(problems) + "\n\nlogs:\n" + self.logs_text()[-6000:]
            )


@pytest.fixture
def apiary(tmp_path):
    """Factory: apiary(workers=1, max_headers=10, ...) starts an apiaryd with
    those config keys (plus env={...}, args=[...]) and returns an Apiary.
    Every server started is checked and stopped at teardown."""
    started = []

    def start(env=None, args=(), **config):
        srv = Apiary(tmp_path / ("srv%d" % len(started)), config, env, args)
        started.append(srv)
        return srv.start()

    yield start
    errors = []
    for srv in started:
        try:
            srv.check_and_stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def server(apiary):
    """An apiaryd with the default test configuration (2 workers)."""
    return apiary()
