/*
 * metrics_http.c - GET /metrics (Prometheus text), GET /status (the live
 * status page) and GET /status.json (the JSON view it polls); see
 * metrics_http.h.
 *
 * The status page is one self-contained document: inline CSS and
 * JavaScript, no external asset, no framework.  Every second it fetches
 * status.json (metrics_format_json() with the histogram), computes
 * per-second rates and p50 / p99 / p99.9 from the difference with the
 * previous answer (so the percentiles are those of the last second, as
 * apiarystat's live view), draws the latency histogram as inline SVG, and
 * fills the per-worker table.  The elements a test reads have ids (rps,
 * requests, p50, p99, p999, active, idle, hit-ratio, db, workers).
 *
 * The handlers snapshot the segment into a per-worker buffer allocated on
 * first use (about 100 KiB) and render into a growing buffer kept for the
 * next call: an operator's page, not a hot path, but it does not allocate
 * once warm either.
 */
#include "metrics_http.h"

#include <stdlib.h>

#include "log.h"

/* one literal (C99 promises 4095 bytes; gcc and clang take any length) */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverlength-strings"
static const char status_html[] =
    "<!DOCTYPE html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>apiary status</title>\n"
    "<style>\n"
    "body{font:14px/1.4 "
    "system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}\n"
    "header{background:#1d2330;color:#fff;padding:10px "
    "18px;display:flex;gap:18px;align-items:baseline;flex-wrap:wrap}\n"
    "header h1{font-size:18px;margin:0}header span{opacity:.8}\n"
    "main{padding:14px "
    "18px;display:grid;gap:14px;grid-template-columns:repeat(auto-fit,minmax("
    "330px,1fr))}\n"
    "section{background:#fff;border:1px solid "
    "#dde1e7;border-radius:6px;padding:10px 14px}\n"
    "section.wide{grid-column:1/-1}\n"
    "h2{font-size:13px;text-transform:uppercase;letter-spacing:.05em;color:#"
    "5b6475;margin:0 0 8px}\n"
    ".kv{display:grid;grid-template-columns:auto 1fr;gap:2px 14px}\n"
    ".kv b{font-variant-numeric:tabular-nums;text-align:right}\n"
    ".big{font-size:26px;font-weight:600;font-variant-numeric:tabular-nums}\n"
    "table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-"
    "nums}\n"
    "th,td{padding:3px 8px;border-bottom:1px solid #eef0f3;text-align:right}\n"
    "th:first-child,td:first-child{text-align:left}\n"
    ".ok{color:#17803d}.bad{color:#c0262d}.muted{color:#8a93a3}\n"
    "svg text{font-size:10px;fill:#5b6475}\n"
    "#err{color:#c0262d}\n"
    "</style></head><body>\n"
    "<header><h1>apiary <span id=\"name\">-</span></h1><span>version <span "
    "id=\"version\">-</span></span>\n"
    "<span>master pid <span id=\"pid\">-</span></span><span>up <span "
    "id=\"uptime\">-</span></span>\n"
    "<span>updated <span id=\"updated\">never</span></span><span "
    "id=\"err\"></span></header>\n"
    "<main>\n"
    "<section><h2>Traffic</h2>\n"
    "<div class=\"big\"><span id=\"rps\">0</span> req/s</div>\n"
    "<div class=\"kv\">\n"
    "<span>requests</span><b id=\"requests\">0</b>\n"
    "<span>2xx / 3xx /s</span><b id=\"rate-ok\">0</b>\n"
    "<span>4xx /s</span><b id=\"rate-4xx\">0</b>\n"
    "<span>5xx /s</span><b id=\"rate-5xx\">0</b>\n"
    "<span>sent</span><b id=\"bytes-out\">0</b>\n"
    "<span>received</span><b id=\"bytes-in\">0</b>\n"
    "</div></section>\n"
    "<section><h2>Latency (last second)</h2>\n"
    "<div class=\"kv\">\n"
    "<span>p50</span><b id=\"p50\">-</b>\n"
    "<span>p99</span><b id=\"p99\">-</b>\n"
    "<span>p99.9</span><b id=\"p999\">-</b>\n"
    "<span>mean</span><b id=\"mean\">-</b>\n"
    "<span>since start p99</span><b id=\"p99-all\">-</b>\n"
    "</div></section>\n"
    "<section><h2>Connections</h2>\n"
    "<div class=\"kv\">\n"
    "<span>open</span><b id=\"active\">0</b>\n"
    "<span>idle keep-alive</span><b id=\"idle\">0</b>\n"
    "<span>accepted /s</span><b id=\"accept-rate\">0</b>\n"
    "<span>accepted</span><b id=\"accepted\">0</b>\n"
    "</div></section>\n"
    "<section><h2>Cache and limits</h2>\n"
    "<div class=\"kv\">\n"
    "<span>hit ratio</span><b id=\"hit-ratio\">-</b>\n"
    "<span>hits / misses</span><b id=\"cache-hm\">0 / 0</b>\n"
    "<span>rate limited</span><b id=\"limited\">0</b>\n"
    "<span>auth rejected</span><b id=\"auth\">0</b>\n"
    "</div></section>\n"
    "<section><h2>Database</h2>\n"
    "<div class=\"kv\">\n"
    "<span>connections up</span><b id=\"db\">-</b>\n"
    "<span>queries /s</span><b id=\"db-rate\">0</b>\n"
    "<span>errors</span><b id=\"db-errors\">0</b>\n"
    "<span>reconnects</span><b id=\"db-reconnects\">0</b>\n"
    "<span>pipeline depth</span><b id=\"db-depth\">0</b>\n"
    "<span>queue length</span><b id=\"db-queue\">0</b>\n"
    "</div></section>\n"
    "<section><h2>Processes</h2>\n"
    "<div class=\"kv\">\n"
    "<span>workers running</span><b id=\"workers-running\">0</b>\n"
    "<span>worker restarts</span><b id=\"restarts\">0</b>\n"
    "<span>reloads</span><b id=\"reloads\">0</b>\n"
    "<span>log lines dropped</span><b id=\"log-dropped\">0</b>\n"
    "</div></section>\n"
    "<section class=\"wide\"><h2>Latency histogram (<span "
    "id=\"hist-scope\">last second</span>)</h2>\n"
    "<svg id=\"hist\" width=\"100%\" height=\"180\" viewBox=\"0 0 900 180\" "
    "preserveAspectRatio=\"none\"></svg>\n"
    "</section>\n"
    "<section class=\"wide\"><h2>Workers</h2>\n"
    "<table><thead><tr><th>slot</th><th>gen</th><th>pid</th><th>req/s</"
    "th><th>requests</th><th>5xx</th><th>open</th><th>idle</th><th>db</"
    "th><th>db q/s</th><th>up</th></tr></thead>\n"
    "<tbody id=\"workers\"></tbody></table></section>\n"
    "</main>\n"
    "<script>\n"
    "\"use strict\";\n"
    "var prev = null, prevW = {};\n"
    "function $(id) { return document.getElementById(id); }\n"
    "function set(id, v) { var e = $(id); if (e) e.textContent = v; }\n"
    "function num(n) { return Math.round(n).toLocaleString(\"en-US\"); }\n"
    "function rate(n) { return n >= 100 ? num(n) : n.toFixed(1); }\n"
    "function us(v) {\n"
    "  if (v === null || isNaN(v)) return \"-\";\n"
    "  if (v < 1000) return v.toFixed(v < 10 ? 1 : 0) + \" \\u00b5s\";\n"
    "  if (v < 1e6) return (v / 1000).toFixed(v < 1e4 ? 2 : 1) + \" ms\";\n"
    "  return (v / 1e6).toFixed(2) + \" s\";\n"
    "}\n"
    "function bytes(n) {\n"
    "  var u = [\"B\", \"KiB\", \"MiB\", \"GiB\", \"TiB\"], i = 0;\n"
    "  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }\n"
    "  return (i ? n.toFixed(1) : n) + \" \" + u[i];\n"
    "}\n"
    "function dur(s) {\n"
    "  s = Math.max(0, Math.floor(s));\n"
    "  var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = "
    "Math.floor(s % 3600 / 60);\n"
    "  return (d ? d + \"d \" : \"\") + (d || h ? h + \"h \" : \"\") + m + \"m "
    "\" + (s % 60) + \"s\";\n"
    "}\n"
    "function histDelta(cur, old) {\n"
    "  var m = {}, out = [];\n"
    "  if (old) old.forEach(function (b) { m[b[0]] = b[2]; });\n"
    "  cur.forEach(function (b) {\n"
    "    var c = b[2] - (m[b[0]] || 0);\n"
    "    if (c > 0) out.push([b[0], b[1], c]);\n"
    "  });\n"
    "  return out;\n"
    "}\n"
    "function quantile(h, q) {\n"
    "  var total = 0, seen = 0, rank, i;\n"
    "  h.forEach(function (b) { total += b[2]; });\n"
    "  if (!total) return null;\n"
    "  rank = Math.max(1, Math.ceil(q * total));\n"
    "  for (i = 0; i < h.length; i++) {\n"
    "    seen += h[i][2];\n"
    "    if (seen >= rank) return h[i][1] - h[i][0] === 1 ? h[i][0] : (h[i][0] "
    "+ h[i][1] - 1) / 2;\n"
    "  }\n"
    "  return null;\n"
    "}\n"
    "function drawHist(h) {\n"
    "  var svg = $(\"hist\"), W = 900, H = 180, top = 8, bot = 20, lo = 0, hi "
    "= 27 * 2;\n"
    "  var bins = [], i, max = 0, s = \"\";\n"
    "  for (i = 0; i < hi; i++) bins.push(0);\n"
    "  h.forEach(function (b) {\n"
    "    var mid = Math.max(1, (b[0] + b[1]) / 2), k = "
    "Math.floor(Math.log2(mid) * 2);\n"
    "    if (k < lo) k = lo; if (k >= hi) k = hi - 1;\n"
    "    bins[k] += b[2];\n"
    "  });\n"
    "  bins.forEach(function (c) { if (c > max) max = c; });\n"
    "  var bw = W / hi;\n"
    "  for (i = 0; i < hi; i++) {\n"
    "    if (!bins[i]) continue;\n"
    "    var bh = (H - top - bot) * bins[i] / max;\n"
    "    s += '<rect x=\"' + (i * bw + 1).toFixed(1) + '\" y=\"' + (H - bot - "
    "bh).toFixed(1) +\n"
    "         '\" width=\"' + (bw - 2).toFixed(1) + '\" height=\"' + "
    "bh.toFixed(1) +\n"
    "         '\" fill=\"#3b6fd8\"><title>' + us(Math.pow(2, i / 2)) + \" .. "
    "\" + us(Math.pow(2, (i + 1) / 2)) +\n"
    "         \": \" + num(bins[i]) + \"</title></rect>\";\n"
    "  }\n"
    "  [\"1 \\u00b5s\", \"10 \\u00b5s\", \"100 \\u00b5s\", \"1 ms\", \"10 "
    "ms\", \"100 ms\", \"1 s\",\n"
    "   \"10 s\"].forEach(function (label, k) {\n"
    "    var v = Math.pow(10, k);\n"
    "    var x = Math.log2(v) * 2 * bw;\n"
    "    s += '<line x1=\"' + x + '\" x2=\"' + x + '\" y1=\"' + top + '\" "
    "y2=\"' + (H - bot) + '\" stroke=\"#dde1e7\"/>';\n"
    "    s += '<text x=\"' + (x + 2) + '\" y=\"' + (H - 6) + '\">' + "
    "label + \"</text>\";\n"
    "  });\n"
    "  s += '<line x1=\"0\" x2=\"' + W + '\" y1=\"' + (H - bot) + '\" y2=\"' + "
    "(H - bot) + '\" stroke=\"#8a93a3\"/>';\n"
    "  svg.innerHTML = s;\n"
    "}\n"
    "function render(d) {\n"
    "  var now = d.time, dt = prev ? Math.max(0.001, now - prev.time) : 0;\n"
    "  var c = d.counters, g = d.gauges, pc = prev ? prev.counters : null;\n"
    "  function per(v, o) { return dt ? (v - o) / dt : 0; }\n"
    "  set(\"name\", d.name); set(\"version\", d.version); set(\"pid\", "
    "d.master_pid);\n"
    "  set(\"uptime\", dur(now - d.start_time));\n"
    "  set(\"updated\", new Date(now * 1000).toLocaleTimeString());\n"
    "  set(\"requests\", num(d.requests));\n"
    "  if (prev && prev.generation !== d.generation) { prev = null; prevW = "
    "{}; dt = 0; }\n"
    "  var rs = prev ? prev.requests_by_status : d.requests_by_status, s = "
    "d.requests_by_status;\n"
    "  set(\"rps\", rate(prev ? per(d.requests, prev.requests) : 0));\n"
    "  set(\"rate-ok\", rate(per(s[\"2xx\"] + s[\"3xx\"], rs[\"2xx\"] + "
    "rs[\"3xx\"])));\n"
    "  set(\"rate-4xx\", rate(per(s[\"4xx\"], rs[\"4xx\"])));\n"
    "  set(\"rate-5xx\", rate(per(s[\"5xx\"], rs[\"5xx\"])));\n"
    "  set(\"bytes-out\", bytes(c.bytes_out)); set(\"bytes-in\", "
    "bytes(c.bytes_in));\n"
    "  var h = histDelta(d.histogram, prev ? prev.histogram : null), scope = "
    "\"last second\";\n"
    "  if (!prev || !h.length) { h = d.histogram; scope = \"since start\"; }\n"
    "  set(\"hist-scope\", scope);\n"
    "  set(\"p50\", us(quantile(h, 0.5))); set(\"p99\", us(quantile(h, "
    "0.99)));\n"
    "  set(\"p999\", us(quantile(h, 0.999)));\n"
    "  var dn = prev ? d.latency.count - prev.latency.count : "
    "d.latency.count;\n"
    "  var ds = prev ? d.latency.sum_us - prev.latency.sum_us : "
    "d.latency.sum_us;\n"
    "  set(\"mean\", dn > 0 ? us(ds / dn) : \"-\");\n"
    "  set(\"p99-all\", us(d.latency.p99_us));\n"
    "  drawHist(h);\n"
    "  set(\"active\", num(g.conn_active)); set(\"idle\", num(g.conn_idle));\n"
    "  set(\"accepted\", num(c.conn_accepted));\n"
    "  set(\"accept-rate\", rate(pc ? per(c.conn_accepted, pc.conn_accepted) : "
    "0));\n"
    "  set(\"hit-ratio\", d.cache_hit_ratio === null ? \"no lookups\" : (100 * "
    "d.cache_hit_ratio).toFixed(1) + \" %\");\n"
    "  set(\"cache-hm\", num(c.cache_hits) + \" / \" + num(c.cache_misses));\n"
    "  set(\"limited\", num(c.ratelimit_limited)); set(\"auth\", "
    "num(c.auth_rejected));\n"
    "  var dbEl = $(\"db\");\n"
    "  dbEl.textContent = g.db_up + \" of \" + d.workers_running;\n"
    "  dbEl.className = g.db_up === d.workers_running && g.db_up > 0 ? \"ok\" "
    ": \"bad\";\n"
    "  set(\"db-rate\", rate(pc ? per(c.db_queries, pc.db_queries) : 0));\n"
    "  set(\"db-errors\", num(c.db_errors)); set(\"db-reconnects\", "
    "num(c.db_reconnects));\n"
    "  set(\"db-depth\", num(g.db_in_flight)); set(\"db-queue\", "
    "num(g.db_queued));\n"
    "  set(\"workers-running\", d.workers_running + \" of \" + d.workers);\n"
    "  set(\"restarts\", num(d.worker_restarts)); set(\"reloads\", "
    "num(d.reloads));\n"
    "  set(\"log-dropped\", num(c.log_dropped));\n"
    "  var rows = \"\", nw = {};\n"
    "  d.worker_table.forEach(function (w) {\n"
    "    var k = w.block + \":\" + w.pid, o = prevW[k];\n"
    "    nw[k] = w;\n"
    "    rows += \"<tr><td>\" + w.slot + \"</td><td>\" + w.generation + "
    "\"</td><td>\" + w.pid + \"</td><td>\" +\n"
    "      rate(o ? per(w.requests, o.requests) : 0) + \"</td><td>\" + "
    "num(w.requests) + \"</td><td>\" +\n"
    "      num(w.errors_5xx) + \"</td><td>\" + num(w.conn_active) + "
    "\"</td><td>\" + num(w.conn_idle) +\n"
    "      '</td><td class=\"' + (w.db_up ? \"ok\" : \"bad\") + '\">' + "
    "(w.db_up ? \"up\" : \"down\") + \"</td><td>\" +\n"
    "      rate(o ? per(w.db_queries, o.db_queries) : 0) + \"</td><td>\" + "
    "dur(now - w.started) + \"</td></tr>\";\n"
    "  });\n"
    "  $(\"workers\").innerHTML = rows;\n"
    "  prev = d; prevW = nw;\n"
    "}\n"
    "function poll() {\n"
    "  var x = new XMLHttpRequest();\n"
    "  x.open(\"GET\", \"status.json?t=\" + Date.now());\n"
    "  x.timeout = 5000;\n"
    "  x.onload = function () {\n"
    "    if (x.status === 200) {\n"
    "      try { render(JSON.parse(x.responseText)); set(\"err\", \"\"); }\n"
    "      catch (e) { set(\"err\", \"bad answer: \" + e); }\n"
    "    } else set(\"err\", \"server answered \" + x.status);\n"
    "  };\n"
    "  x.onerror = x.ontimeout = function () { set(\"err\", \"server "
    "unreachable\"); };\n"
    "  x.send();\n"
    "}\n"
    "poll();\n"
    "setInterval(poll, 1000);\n"
    "</script></body></html>\n";
#pragma GCC diagnostic pop

/* Takes a fresh snapshot into h->snap; false (answered 503) if none. */
static bool
snapshot(struct request *r, struct metrics_hook *h)
{
    char diag[128];

    if (h->seg == NULL) {
        request_error(r, 503, "Metrics are off (metrics = off)");
        return false;
    }
    if (h->snap == NULL) {
        h->snap = malloc(sizeof(*h->snap));
        if (h->snap == NULL) {
            request_error(r, 503, "Out of memory");
            return false;
        }
    }
    if (metrics_snapshot(h->seg->base, h->seg->size, h->snap, diag,
                         sizeof(diag)) < 0) {
        log_error("metrics: own segment unreadable: %s", diag);
        request_error(r, 500, "Metrics segment unreadable");
        return false;
    }
    metrics_out_reset(&h->out);
    return true;
}

static void
send_out(struct request *r, struct metrics_hook *h, const char *type)
{
    if (h->out.failed || h->out.buf == NULL) {
        request_error(r, 503, "Out of memory");
        return;
    }
    request_reply_type(r, 200, type, h->out.buf, h->out.len, NULL, 0);
}

void
metrics_http_metrics(struct request *r, void *arg)
{
    struct metrics_hook *h = arg;

    if (!snapshot(r, h))
        return;
    metrics_format_prometheus(h->snap, &h->out);
    send_out(r, h, "text/plain; version=0.0.4; charset=utf-8");
}

void
metrics_http_status_json(struct request *r, void *arg)
{
    struct metrics_hook *h = arg;

    if (!snapshot(r, h))
        return;
    metrics_format_json(h->snap, true, &h->out);
    send_out(r, h, NULL);
}

void
metrics_http_status(struct request *r, void *arg)
{
    (void)arg;
    request_reply_type(r, 200, "text/html; charset=utf-8", status_html,
                       sizeof(status_html) - 1, "Cache-Control: no-store\r\n",
                       sizeof("Cache-Control: no-store\r\n") - 1);
}
