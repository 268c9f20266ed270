"""Configuration (SPEC 7): `-t` prints the effective settings; file <
APIARY_* environment < flags; bad values and unknown keys exit 1 with a
message naming file, line and key."""
import re
import subprocess

import pytest

from conftest import APIARY_BIN, clean_env, scaled


def run(args, env=None):
    return subprocess.run([APIARY_BIN] + args, env=clean_env(env),
                          capture_output=True, text=True, timeout=scaled(10))


def settings(stdout):
    """{key: value} from `apiaryd -t` ("key   = value\\t# help")."""
    out = {}
    for line in stdout.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r"^(\w+)\s*=\s*(.*?)\s*(?:\t#.*)?$", line)
        assert m, "unexpected -t line %r" % line
        out[m.group(1)] = m.group(2)
    return out


@pytest.fixture
def conf(tmp_path):
    def write(text, name="apiary.conf"):
        p = tmp_path / name
        p.write_text(text)
        return p
    return write


def test_t_prints_effective_settings(conf, tmp_path):
    p = conf("# a comment\nworkers = 3\n\nmax_headers = 50   # trailing comment\n"
             "listen = 127.0.0.1:18080\n")
    r = run(["-t", "-c", str(p)])
    assert r.returncode == 0, r.stderr
    s = settings(r.stdout)
    assert s["workers"] == "3"
    assert s["max_headers"] == "50"
    assert s["listen"] == "127.0.0.1:18080"
    assert s["max_body_bytes"] == "1048576"  # a default
    for key in ("backlog", "max_connections", "header_timeout_ms",
                "keepalive_timeout_ms", "max_request_line", "debug_endpoints"):
        assert key in s, key
    # -t does not start anything
    assert not (tmp_path / "var").exists()


def test_env_overrides_file_and_flag_overrides_env(conf):
    p = conf("workers = 3\nmax_headers = 50\n")
    r = run(["-t", "-c", str(p)], env={"APIARY_WORKERS": "5"})
    assert r.returncode == 0, r.stderr
    assert settings(r.stdout)["workers"] == "5"
    assert settings(r.stdout)["max_headers"] == "50"
    r = run(["-t", "-c", str(p), "-o", "workers=7"], env={"APIARY_WORKERS": "5"})
    assert r.returncode == 0, r.stderr
    assert settings(r.stdout)["workers"] == "7"
    r = run(["-t", "-c", str(p), "-p", "/tmp/x.pid"], env={"APIARY_PIDFILE": "/tmp/y.pid"})
    assert settings(r.stdout)["pidfile"] == "/tmp/x.pid"


def test_apiary_log_sets_log_level(conf):
    r = run(["-t"], env={"APIARY_LOG": "debug"})
    assert r.returncode == 0, r.stderr
    assert settings(r.stdout)["log_level"] == "debug"


@pytest.mark.parametrize("line,key", [
    ("workers = many", "workers"),
    ("max_body_bytes = -1", "max_body_bytes"),
    ("header_timeout_ms = 10s", "header_timeout_ms"),
    ("debug_endpoints = maybe", "debug_endpoints"),
    ("log_level = loud", "log_level"),
    # issue 2 regression: -t used to accept any listen value
    ("listen = 127.0.0.1:99999", "listen"),
    ("listen = foo", "listen"),
])
def test_bad_value_names_file_line_and_key(conf, line, key):
    p = conf("# header\nworkers = 2\n%s\n" % line)
    r = run(["-t", "-c", str(p)])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "%s:3" % p.name in r.stderr, r.stderr
    assert key in r.stderr, r.stderr
    assert r.stdout == "" or "configuration OK" not in r.stderr


def test_unknown_key_names_file_line_and_key(conf):
    p = conf("workers = 2\n\nbogus_key = 1\n")
    r = run(["-t", "-c", str(p)])
    assert r.returncode == 1
    assert "%s:3" % p.name in r.stderr and "bogus_key" in r.stderr, r.stderr


def test_bad_value_in_env_and_flag_is_named(conf):
    r = run(["-t"], env={"APIARY_WORKERS": "x"})
    assert r.returncode == 1 and "APIARY_WORKERS" in r.stderr, r.stderr
    r = run(["-t", "-o", "max_headers=lots"])
    assert r.returncode == 1 and "max_headers" in r.stderr, r.stderr
    r = run(["-t", "-o", "nokey=1"])
    assert r.returncode == 1 and "nokey" in r.stderr, r.stderr


def test_missing_config_file(tmp_path):
    r = run(["-t", "-c", str(tmp_path / "nope.conf")])
    assert r.returncode == 1
    assert "nope.conf" in r.stderr, r.stderr


def test_bad_config_does_not_start(conf, tmp_path):
    """Without -t, a bad config also exits 1 at once, before binding."""
    pid = tmp_path / "p.pid"
    p = conf("workers = many\npidfile = %s\n" % pid)
    r = run(["-c", str(p)])
    assert r.returncode == 1 and "workers" in r.stderr
    assert not pid.exists()
