"""
GET /status in a real browser (SPEC 5, issue 8): Debian's chromium, headless,
loads the page of a server under load, and the test reads the numbers the
page's JavaScript rendered into the DOM.

How chromium is driven: `chromium --headless --dump-dom` with a virtual
time budget.  The page polls /status.json every second of (virtual) time;
chromium lets that time run while nothing is pending and waits for the
real network, so within one call the page fetches a few snapshots of the
live server, computes its rates from them and renders; --dump-dom then
prints the resulting DOM.  Two such loads some requests apart must show
the request counter moving.  A third call saves a screenshot under var/
(var/status-page.png), which is what the README shows.

The server has a database, so the page's database health is a real one
(both workers up); the load mixes /health with cached-or-not user reads.
"""
import html
import re
import shutil
import subprocess
import threading

import pytest

from conftest import ROOT, RawClient, get, scaled, wait_for

from .conftest import create_user

CHROMIUM = shutil.which("chromium")


def browser(*args):
    if CHROMIUM is None:
        pytest.fail("chromium missing: scripts/deps.sh test installs it")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--no-first-run", "--disable-extensions", "--mute-audio",
           "--virtual-time-budget=4000"] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(90),
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    return r.stdout


def text_of(dom, ident):
    m = re.search(r'id="%s"[^>]*>([^<]*)<' % re.escape(ident), dom)
    assert m, "no element #%s in the page" % ident
    return html.unescape(m.group(1)).strip()


def number(s):
    return float(s.replace(",", "").split()[0])


class Load(threading.Thread):
    """GET requests on one keep-alive connection until stopped."""

    def __init__(self, port, paths):
        super().__init__(daemon=True)
        self.port, self.paths = port, paths
        self.stop = threading.Event()
        self.count = 0
        self.error = None

    def run(self):
        try:
            with RawClient(self.port) as c:
                while not self.stop.is_set():
                    r = c.request(get(self.paths[self.count % len(self.paths)]))
                    assert r.status == 200, r
                    self.count += 1
        except Exception as e:  # reported by the test
            self.error = e


def test_status_page_renders_live_numbers(start_api):
    srv = start_api(status_page="on")
    uid = create_user(srv.client)["id"]
    load = Load(srv.port, ["/health", "/health", "/users/%d" % uid])
    load.start()
    try:
        wait_for(lambda: load.count > 200 or load.error, 10, "load to start")
        url = srv.url("/status")
        first = browser("--dump-dom", url)
        assert text_of(first, "err") == "", text_of(first, "err")
        assert text_of(first, "name") == "test-%d" % srv.port
        req1 = number(text_of(first, "requests"))
        assert req1 > 200
        assert number(text_of(first, "rps")) > 0
        for ident in ("p50", "p99", "p999"):
            assert re.match(r"^\d+(\.\d+)? (µs|ms|s)$", text_of(first, ident)), \
                (ident, text_of(first, ident))
        assert text_of(first, "db") == "2 of 2"
        assert re.search(r'id="db" class="ok"', first)
        assert number(text_of(first, "db-rate")) >= 0
        assert text_of(first, "workers-running") == "2 of 2"
        # one user read again and again: one miss, then hits (issue 7)
        hit = text_of(first, "hit-ratio")
        assert re.match(r"^\d+\.\d %$", hit) and number(hit) >= 90, hit
        rows = re.findall(r"<tr><td>\d+</td>", first.split('id="workers"', 1)[1])
        assert len(rows) == 2, first
        assert "<rect" in first.split('id="hist"', 1)[1]  # bars drawn

        seen = load.count
        wait_for(lambda: load.count > seen + 300 or load.error, 10, "more load")
        second = browser("--dump-dom", url)
        assert number(text_of(second, "requests")) > req1
        assert number(text_of(second, "rps")) > 0

        out = ROOT / "var" / "status-page.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.unlink()
        browser("--screenshot=%s" % out, "--window-size=1280,1000",
                "--hide-scrollbars", url)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert out.stat().st_size > 10000
    finally:
        load.stop.set()
        load.join(scaled(10))
    assert load.error is None, load.error


def test_status_page_is_off_by_default(api):
    for path in ("/status", "/status.json"):
        with api.connect() as c:
            assert c.request(get(path)).status == 404


def test_status_views(start_api):
    srv = start_api(status_page="on")
    with srv.connect() as c:
        page = c.request(get("/status"))
        doc = c.request(get("/status.json"))
    assert page.status == 200
    assert page.header("Content-Type") == "text/html; charset=utf-8"
    body = page.body.decode()
    # self-contained: no external script, style sheet, image or font
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", body)
    assert "http://" not in body and "https://" not in body
    assert doc.status == 200
    d = doc.json()
    assert d["workers"] == 2 and d["gauges"]["db_up"] == 2
    assert isinstance(d["histogram"], list) and d["histogram"]
    low, high, count = d["histogram"][0]
    assert low < high and count > 0
