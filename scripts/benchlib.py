"""benchlib - what the benchmark scripts in scripts/ share (stdlib only).

Used by scripts/bench-health and scripts/bench-db, which import it from
their own directory:

- CPU accounting from /proc: utime + stime of a process tree (a server's
  master and workers, or a PostgreSQL postmaster and its backends), the
  busy ticks of the whole machine, and the CPU of this script's reaped
  children (the load generator);
- Server: start a server in its own session, wait for GET /health, stop it
  by pid (SIGTERM, then SIGKILL of whatever of its tree is left);
- run_wrk / run_child: run the load generator as the one tracked child, so
  that an interrupted run can kill it (kill_child);
- Report: lines printed and appended to a results file as they come;
- for scripts/loadtest: a running server found by its port (find_server),
  its PSS from /proc/PID/smaps_rollup (pss_kb), the kernel's socket memory
  (sockstat), wrk's latency distribution (parse_wrk_latency), a child run
  with a progress callback (run_child_progress), and another script of
  scripts/ loaded as a module (load_script: loadtest reuses bench-db's
  PostgreSQL cluster and pgbench helpers that way).

Nothing here knows a particular benchmark's servers, workloads or targets.
"""

import importlib.machinery
import importlib.util
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")  # what `getconf CLK_TCK` prints
BODY = b'{"status":"ok"}'  # GET /health, from every server we start
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class BenchError(Exception):
    """A setup or run failure: reported, servers stopped, exit 2."""


class Interrupted(Exception):
    """SIGTERM or SIGHUP: handled like Ctrl-C."""


def on_signal(signum, frame):
    """Handler for SIGTERM and SIGHUP: unwinds like Ctrl-C does."""
    raise Interrupted(signal.Signals(signum).name)


# --- /proc ------------------------------------------------------------------


def proc_stat(pid):
    """Fields 3.. of /proc/PID/stat as a list (index 0 is field 3), or None.

    comm (field 2) may hold spaces and parentheses, hence the split at the
    last ')'."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def field(st, n):
    """Field n (1-based, as in proc(5)) of a proc_stat() list, as int."""
    return int(st[n - 3])


def process_tree(root):
    """root and all its descendants: {pid: starttime}, found by ppid."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(name)
            if st is not None:
                children.setdefault(field(st, 4), []).append(int(name))
    tree, stack = {}, [root]
    while stack:
        pid = stack.pop()
        st = proc_stat(pid)
        if st is None:
            continue
        tree[pid] = field(st, 22)
        stack.extend(children.get(pid, ()))
    return tree


def tree_cpu_ticks(root):
    """utime + stime of every process in root's tree, plus root's cutime +
    cstime (children it reaped, e.g. a respawned worker or a PostgreSQL
    backend whose client disconnected, keep counting). Returns (ticks, tree).

    The cutime of a reaped child includes that of the grandchildren it
    reaped itself; a child that exits unreaped (a zombie) still shows its
    own utime + stime here."""
    tree = process_tree(root)
    ticks = 0
    for pid in tree:
        st = proc_stat(pid)
        if st is not None:
            ticks += field(st, 14) + field(st, 15)
            if pid == root:
                ticks += field(st, 16) + field(st, 17)
    return ticks, tree


def machine_busy_ticks():
    """Busy ticks of all CPUs from /proc/stat: everything but idle and
    iowait; steal (taken by the hypervisor) counts as busy."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return user + nice + system + irq + softirq + steal


def machine_steal_ticks():
    """Ticks the hypervisor took from all CPUs (steal, in /proc/stat): part
    of machine_busy_ticks(), time our processes wanted and did not get."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[8])


def children_cpu_s():
    """CPU seconds of this script's reaped children (wrk, once it exits)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --- servers ----------------------------------------------------------------


def free_ports(n):
    """n distinct free loopback ports (held open together while picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def read_response(s):
    """Reads one HTTP/1.1 response framed by Content-Length from socket s.

    Returns the raw bytes (possibly short if the peer closed early). The
    floor never closes the connection, so reading to EOF would hang."""
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", data[:end])
            if m and len(data) >= end + 4 + int(m.group(1)):
                break
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def probe(port, path="/health", timeout_s=1.0):
    """One GET of path; returns (status line, full response bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = read_response(s)
    return data.split(b"\r\n", 1)[0].decode("latin-1"), data


class Server:
    """A server started by argv in its own session, answering GET /health
    with BODY on 127.0.0.1:port; tmpdir holds its NAME.out and NAME*.err."""

    def __init__(self, name, port, argv, tmpdir):
        self.name, self.port, self.argv, self.tmpdir = name, port, argv, tmpdir
        self.out = os.path.join(tmpdir, f"{name}.out")
        self.proc = None
        self.seen = {}  # every process of its tree seen: pid -> starttime
        self.response_bytes = 0
        self.headers = ""

    def start(self):
        with open(self.out, "wb") as out:
            # Own session: Ctrl-C reaches the bench, which stops the servers.
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with status {self.proc.returncode} "
                    f"at start\n{self.logs()}"
                )
            try:
                status, data = probe(self.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{self.name} does not answer on port {self.port} "
                        f"after {START_TIMEOUT_S:.0f} s\n{self.logs()}"
                    )
                time.sleep(0.05)
        head, _, body = data.partition(b"\r\n\r\n")
        if not status.startswith("HTTP/1.1 200") or body != BODY:
            raise BenchError(
                f"{self.name}: GET /health answered {data[:300]!r}, "
                f"want 200 and {BODY.decode()}"
            )
        self.response_bytes = len(data)
        self.headers = ", ".join(
            h.split(b":", 1)[0].decode("latin-1") for h in head.split(b"\r\n")[1:]
        )

    def cpu_ticks(self):
        ticks, tree = tree_cpu_ticks(self.proc.pid)
        self.seen.update(tree)
        return ticks

    def nprocs(self):
        return len(process_tree(self.proc.pid))

    def children(self):
        """{pid: starttime} of the processes under the master right now."""
        tree = process_tree(self.proc.pid)
        tree.pop(self.proc.pid, None)
        return tree

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM to the master, SIGKILL after STOP_TIMEOUT_S; then SIGKILL
        any process of its tree still there (same pid and start time).
        Returns the pids that had to be killed that way."""
        if self.proc is None:
            return []
        if self.proc.poll() is None:
            self.seen.update(process_tree(self.proc.pid))
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        left = []
        for pid, start in self.seen.items():
            if pid == self.proc.pid:
                continue
            while True:
                st = proc_stat(pid)
                if st is None or field(st, 22) != start or st[0] == "Z":
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    left.append(pid)
                    break
                time.sleep(0.05)
        return left

    def logs(self, lines=20):
        text = []
        for path in sorted(os.listdir(self.tmpdir)):
            if path.startswith(self.name) and path.endswith((".out", ".err")):
                with open(os.path.join(self.tmpdir, path), errors="replace") as f:
                    tail = f.read().splitlines()[-lines:]
                if tail:
                    text.append(f"--- {path}")
                    text.extend(tail)
        return "\n".join(text)


# --- load generators ----------------------------------------------------------

UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
CHILD = None  # the running load generator, killed on interruption


def run_child(cmd, timeout_s, what):
    """Runs cmd (stdout and stderr together) as the tracked child; returns
    (exit status, output). Raises BenchError if it outlives timeout_s."""
    global CHILD
    CHILD = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out, _ = CHILD.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_child()
        raise BenchError(f"{what} did not finish within {timeout_s:.0f} s")
    rc, CHILD = CHILD.returncode, None
    return rc, out


def kill_child():
    """Kills and reaps the load generator if one is running."""
    global CHILD
    if CHILD is not None:
        if CHILD.poll() is None:
            CHILD.kill()
        CHILD.wait()
        CHILD = None


def run_wrk(wrk, url, duration_s, threads, connections, script=None, script_args=()):
    """Runs wrk --latency on url, with a Lua script and its arguments if
    given. Returns (dict of results, raw output): requests, rps, p99_us and
    errors (non-2xx/3xx responses plus socket errors, also broken down as
    status_errors and socket_errors)."""
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency"]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    if script_args:
        cmd += ["--"] + list(script_args)
    rc, out = run_child(cmd, duration_s + 30, "wrk")
    if rc != 0:
        raise BenchError(f"wrk failed (status {rc}):\n{out}")
    return parse_wrk(out), out


def parse_wrk(out):
    def grab(pattern, what):
        m = re.search(pattern, out, re.M)
        if not m:
            raise BenchError(f"cannot find {what} in wrk's output:\n{out}")
        return m

    m = grab(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", what="request count")
    requests = int(m.group(1))
    m = grab(r"^Requests/sec:\s*([\d.]+)", what="Requests/sec")
    rps = float(m.group(1))
    m = grab(r"^\s*99(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)", what="the 99% latency")
    p99_us = float(m.group(1)) * UNIT_US[m.group(2)]
    status_errors = socket_errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if m:
        status_errors = int(m.group(1))
    m = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if m:
        socket_errors = sum(int(g) for g in m.groups())
    return {
        "requests": requests,
        "rps": rps,
        "p99_us": p99_us,
        "errors": status_errors + socket_errors,
        "status_errors": status_errors,
        "socket_errors": socket_errors,
    }


def parse_wrk_latency(out):
    """wrk --latency's distribution in us: {avg, max, p50, p75, p90, p99}
    (keys missing from the output are left out)."""
    lat = {}
    m = re.search(
        r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)\s+[\d.]+\w+\s+([\d.]+)(us|ms|s|m|h)",
        out,
        re.M,
    )
    if m:
        lat["avg"] = float(m.group(1)) * UNIT_US[m.group(2)]
        lat["max"] = float(m.group(3)) * UNIT_US[m.group(4)]
    for pct, key in (("50", "p50"), ("75", "p75"), ("90", "p90"), ("99", "p99")):
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)", out, re.M)
        if m:
            lat[key] = float(m.group(1)) * UNIT_US[m.group(2)]
    return lat


def run_child_progress(cmd, timeout_s, what, tick=None, env=None, stderr=True):
    """run_child with tick(elapsed seconds) called about every second while
    cmd runs (for a progress line). stderr=False leaves the child's stderr
    on ours (loadgen -P draws its own progress line there). Returns (exit
    status, stdout [+ stderr])."""
    global CHILD
    CHILD = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if stderr else None,
        text=True,
        env=env,
    )
    t0 = time.monotonic()
    while True:
        try:
            out, _ = CHILD.communicate(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            elapsed = time.monotonic() - t0
            if elapsed > timeout_s:
                kill_child()
                raise BenchError(f"{what} did not finish within {timeout_s:.0f} s")
            if tick:
                tick(elapsed)
    rc, CHILD = CHILD.returncode, None
    return rc, out


# --- a running server, memory -------------------------------------------------


def listening_inodes(port):
    """Inodes of the TCP sockets listening on port (any address)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            v = line.split()
            if v[3] == "0A" and int(v[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(v[9])
    return inodes


def find_server(port):
    """The pid of the process that listens on port and whose parent does
    not (apiaryd's master, nginx's master, the floor's parent), or None
    when no process we may inspect holds such a socket."""
    inodes = listening_inodes(port)
    if not inodes:
        return None
    holders = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{name}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                holders.add(int(name))
                break
    for pid in sorted(holders):
        st = proc_stat(pid)
        if st is not None and field(st, 4) not in holders:
            return pid
    return None


PSS_FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")


def pss_kb(pids):
    """Sums of /proc/PID/smaps_rollup over pids, in kB: Rss, Pss and its
    Anon / File / Shmem parts, plus "Pss_no_shmem" (Pss without shared
    memory segments: SPEC 11 excludes them). Processes gone are skipped;
    "procs" counts those read."""
    tot = {k: 0 for k in PSS_FIELDS}
    tot["procs"] = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                text = f.read()
        except OSError:
            continue
        tot["procs"] += 1
        for line in text.splitlines():
            k, _, rest = line.partition(":")
            if k in tot and k != "procs":
                tot[k] += int(rest.split()[0])
    tot["Pss_no_shmem"] = tot["Pss"] - tot["Pss_Shmem"]
    return tot


def sockstat():
    """/proc/net/sockstat as {"TCP": {"inuse": n, "mem": pages, ...}, ...}
    plus "page_size" (TCP mem counts pages)."""
    out = {"page_size": os.sysconf("SC_PAGE_SIZE")}
    with open("/proc/net/sockstat") as f:
        for line in f:
            proto, _, rest = line.partition(":")
            v = rest.split()
            out[proto] = {v[i]: int(v[i + 1]) for i in range(0, len(v) - 1, 2)}
    return out


SOCKET_SLABS = ("TCP", "sock_inode_cache", "tcp_bind_bucket")


def socket_slab_bytes():
    """Bytes of the kernel slab caches a TCP socket lives in (the socket,
    its inode, its bind bucket), active objects x object size, from
    /proc/slabinfo; None when it cannot be read. sockstat's "mem" counts
    only queued buffers: an idle socket has none."""
    try:
        with open("/proc/slabinfo") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return None
    total = 0
    for line in lines:
        v = line.split()
        if v and v[0] in SOCKET_SLABS:
            total += int(v[1]) * int(v[3])
    return total


def fd_limit(pid):
    """The soft "Max open files" of pid, or None."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    v = line.split()[3]
                    return None if v == "unlimited" else int(v)
    except OSError:
        pass
    return None


def load_script(name):
    """scripts/NAME (a Python script without .py) imported as a module."""
    path = os.path.join(ROOT, "scripts", name)
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


# --- report -----------------------------------------------------------------


class Report:
    """Prints lines and appends them to the results file as they come."""

    def __init__(self, path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.file = open(path, "w")

    def __call__(self, line=""):
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


def version(cmd):
    """First line a program prints about itself, or "?"."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    lines = (p.stdout + p.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def git_rev():
    rev = version(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    if rev != "?" and not rev.startswith("fatal"):
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    return "no commit"


def spread(rs, key):
    """(max - min) / median of one figure over the rounds, in percent."""
    vals = [r[key] for r in rs]
    med = statistics.median(vals)
    if med == 0:
        return "-"
    return f"{100 * (max(vals) - min(vals)) / med:.0f}%"


def verdict(value, target, errors, at_most=False):
    """PASS or MISS of value against target (>= target, or <= if at_most);
    any error makes it a MISS."""
    if errors:
        return "MISS (errors)"
    ok = value <= target if at_most else value >= target
    return "PASS" if ok else "MISS"


# --- bearer tokens for writes (issue 10) --------------------------------------

# The HS256 key of the apiaryds the benchmarks start, and a token signed
# with it (valid a day; minted by scripts/mint-token's own function).
BENCH_SECRET = "apiary-bench-secret-0123456789abcdef-0123456789"


def bench_token(key=BENCH_SECRET, ttl_s=86400):
    import importlib.util
    from importlib.machinery import SourceFileLoader

    loader = SourceFileLoader("mint_token", os.path.join(ROOT, "scripts", "mint-token"))
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader("mint_token", loader))
    loader.exec_module(mod)
    now = int(time.time())
    return mod.mint(key.encode(), {"sub": "bench", "iat": now, "exp": now + ttl_s})


_knows = {}


def auth_config_lines(binary):
    """The config lines that give binary the bench key, or none when it is
    an apiaryd from before issue 10 (it would refuse the unknown key)."""
    if binary not in _knows:
        r = subprocess.run(
            [binary, "-c", "/dev/null", "-o", "auth_secret=" + BENCH_SECRET, "-t"],
            capture_output=True, text=True, timeout=30,
        )
        _knows[binary] = r.returncode == 0
    return [f"auth_secret = {BENCH_SECRET}"] if _knows[binary] else []
