"""
Packaging (issue 9, SPEC 8): `make install PREFIX=... ` into a temporary
prefix, then the installed pieces are used the way an operator would: the
LSB init script through start, status, reload, reopen, stop; the logrotate
file rotating the live logs; `systemd-analyze verify` on the unit; the man
pages through man -l, mandoc -T lint and lexgrog; the example config
listing every key `apiaryd -t` knows.
"""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import (APIARY_BIN, ROOT, RawClient, free_port, get, pid_alive,
                      scaled, wait_for)


def sh(args, **kw):
    kw.setdefault("timeout", scaled(120))
    return subprocess.run(args, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("install")
    prefix, run, log = base / "prefix", base / "run", base / "log"
    build = os.path.relpath(os.path.dirname(APIARY_BIN), ROOT)
    # BUILD must match the binary under test; -o .flags: never rebuild it
    # with other flags than it was built with (make sanitize's)
    r = sh(["make", "-s", "-C", str(ROOT), "install", "BUILD=" + build,
            "-o", build + "/.flags",
            "PREFIX=" + str(prefix), "RUNDIR=" + str(run),
            "LOGDIR=" + str(log)])
    assert r.returncode == 0, r.stdout + r.stderr
    log.mkdir()
    return prefix, run, log


def test_install_layout(installed):
    prefix, run, log = installed
    for rel in ("sbin/apiaryd", "etc/apiary/apiary.conf",
                "etc/apiary/apiary.conf.example", "etc/init.d/apiary",
                "etc/logrotate.d/apiary", "lib/systemd/system/apiary.service",
                "share/man/man8/apiaryd.8", "share/man/man1/apiarystat.1",
                "share/apiary/sql/0001_schema.sql"):
        assert (prefix / rel).is_file(), rel
    assert os.access(prefix / "etc/init.d/apiary", os.X_OK)
    for rel in ("etc/init.d/apiary", "lib/systemd/system/apiary.service",
                "etc/logrotate.d/apiary"):
        assert "@" not in re.sub(r"adm|@system-service", "",
                                 (prefix / rel).read_text()), rel


def test_example_config_documents_every_key(installed):
    prefix, _, _ = installed
    example = (prefix / "etc/apiary/apiary.conf.example").read_text()
    keys = re.findall(r"(?m)^(\w+) *=", sh([APIARY_BIN, "-t"]).stdout)
    assert len(keys) > 20
    for k in keys:
        m = re.search(r"(?m)^# (.+)\n#%s = " % k, example)
        assert m and m.group(1).strip(), "key %s undocumented" % k
    # the installed config is valid as it is
    r = sh([str(prefix / "sbin/apiaryd"), "-c",
            str(prefix / "etc/apiary/apiary.conf"), "-t"])
    assert r.returncode == 0, r.stderr


def test_man_pages(installed):
    prefix, _, _ = installed
    for page, name in (("man8/apiaryd.8", "apiaryd"),
                       ("man1/apiarystat.1", "apiarystat")):
        path = prefix / "share/man" / page
        r = sh(["mandoc", "-T", "lint", "-W", "warning", str(path)])
        assert r.returncode == 0, r.stdout + r.stderr
        r = sh(["man", "-l", str(path)], env=dict(os.environ, MANWIDTH="80"))
        text = re.sub(r".\x08", "", r.stdout)  # overstrike bold
        assert r.returncode == 0 and "NAME" in text and name in text, r.stderr
        r = sh(["lexgrog", str(path)])
        assert r.returncode == 0 and name in r.stdout, r.stdout + r.stderr
    # each page documents exactly the options its program takes: the
    # letters of the usage line (`-h`) against the page's .Fl entries
    for prog, page in (("apiarystat", "man1/apiarystat.1"),
                       ("apiaryd", "man8/apiaryd.8")):
        binary = prefix / ("bin" if prog == "apiarystat" else "sbin") / prog
        usage = sh([str(binary), "-h"])
        said = set(re.findall(r"(?:^|[\s\[|])-([A-Za-z0-9])\b",
                               usage.stdout + usage.stderr))
        src = (prefix / "share/man" / page).read_text()
        documented = set(re.findall(r"(?m)^\.It Fl ([A-Za-z0-9])\b", src))
        assert said and said == documented, (prog, sorted(said), sorted(documented))
    # `man apiaryd` finds it once the prefix is in MANPATH
    r = sh(["man", "-w", "apiaryd"],
           env=dict(os.environ, MANPATH=str(prefix / "share/man")))
    assert r.returncode == 0 and r.stdout.strip().endswith("apiaryd.8"), r


def test_systemd_unit_verifies(installed):
    prefix, _, _ = installed
    unit = prefix / "lib/systemd/system/apiary.service"
    text = unit.read_text()
    assert "Type=notify" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text
    r = sh(["systemd-analyze", "verify", str(unit)],
           env=dict(os.environ, MANPATH=str(prefix / "share/man")))
    assert r.returncode == 0, r.stdout + r.stderr


def test_init_script_start_status_reload_reopen_stop(installed):
    prefix, run, log = installed
    conf = prefix / "etc/apiary/apiary.conf"
    port = free_port()
    base = conf.read_text()
    conf.write_text(base + "\nlisten = 127.0.0.1:%d\nworkers = 2\n" % port)
    init = str(prefix / "etc/init.d/apiary")
    pidfile = run / "apiaryd.pid"
    error_log = log / "error.log"

    def msgs():
        try:
            return [json.loads(l)["msg"] for l in
                    error_log.read_text().splitlines() if l.strip()]
        except FileNotFoundError:
            return []

    try:
        r = sh([init, "start"])
        assert r.returncode == 0, r.stdout + r.stderr
        # the script returns once the daemon serves
        with RawClient(port) as c:
            assert c.request(get("/health")).status == 200
        pid = int(pidfile.read_text())
        r = sh([init, "status"])
        assert r.returncode == 0 and "running" in r.stdout, r
        r = sh([init, "start"])  # already running: still success
        assert r.returncode == 0, r

        r = sh([init, "reload"])
        assert r.returncode == 0, r
        wait_for(lambda: any(m.startswith("reload done") for m in msgs()),
                 20, "the reload")
        assert int(pidfile.read_text()) == pid

        # logrotate's create mode with the installed file (as root: the
        # apiary user need not exist here)
        lr = log / "lr.conf"
        lr.write_text((prefix / "etc/logrotate.d/apiary").read_text()
                      .replace("apiary adm", "root root"))
        r = sh(["logrotate", "-f", "-s", str(log / "lr.state"), str(lr)])
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for(lambda: any(m == "log files reopened" for m in msgs()), 10,
                 "the daemon to reopen its logs into a new file")
        assert (log / "error.log.1").exists()

        r = sh([init, "reopen"])
        assert r.returncode == 0, r
        wait_for(lambda: sum(m == "log files reopened" for m in msgs()) >= 2,
                 10, "the second reopen")

        # a broken file: reload refuses it before signalling (LSB 6)
        conf.write_text(conf.read_text() + "workers = lots\n")
        r = sh([init, "reload"])
        assert r.returncode == 6, r
        conf.write_text(base + "\nlisten = 127.0.0.1:%d\nworkers = 2\n" % port)

        r = sh([init, "stop"])
        assert r.returncode == 0, r
        assert not pid_alive(pid)
        assert not pidfile.exists()
        r = sh([init, "status"])
        assert r.returncode == 3, r
        r = sh([init, "stop"])  # not running: still success
        assert r.returncode == 0, r
        r = sh([init, "bogus"])
        assert r.returncode == 2, r
    finally:
        if pidfile.exists():
            sh([init, "stop"])
        conf.write_text(base)


def test_init_script_start_reports_failure(installed):
    prefix, run, log = installed
    conf = prefix / "etc/apiary/apiary.conf"
    base = conf.read_text()
    init = str(prefix / "etc/init.d/apiary")
    port = free_port()
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen(1)
        conf.write_text(base + "\nlisten = 127.0.0.1:%d\nworkers = 1\n" % port)
        try:
            r = sh([init, "start"])
        finally:
            conf.write_text(base)
    assert r.returncode == 1, r
    assert "Address already in use" in r.stdout + r.stderr, r
    assert not (run / "apiaryd.pid").exists()


def test_destdir_stages_without_touching_prefix(tmp_path):
    build = os.path.relpath(os.path.dirname(APIARY_BIN), ROOT)
    r = sh(["make", "-s", "-C", str(ROOT), "install", "BUILD=" + build,
            "-o", build + "/.flags", "PREFIX=/usr", "SYSCONFDIR=/etc", "DESTDIR=" + str(tmp_path)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "usr/sbin/apiaryd").is_file()
    init = (tmp_path / "etc/init.d/apiary").read_text()
    assert "DAEMON=/usr/sbin/apiaryd" in init
    assert "CONF=/etc/apiary/apiary.conf" in init
    assert str(tmp_path) not in init
    unit = (tmp_path / "usr/lib/systemd/system/apiary.service").read_text()
    assert "ExecStart=/usr/sbin/apiaryd -c /etc/apiary/apiary.conf" in unit
