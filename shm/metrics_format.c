/*
 * metrics_format.c - a metrics snapshot as Prometheus text and as JSON,
 * shared by apiarystat (-p, -j) and the worker's GET /metrics and the
 * status page's JSON view, so both show the same numbers the same way.
 *
 * Prometheus: text exposition format 0.0.4; counters end in _total, times
 * are in seconds and sizes in bytes (base units); the latency histogram
 * is exported with a fixed, readable set of le bounds summed from the
 * fine log-linear buckets (histogram_count_le(): each bound is exact to
 * within one fine bucket, 1.6%).  Label values are escaped (\\, \", \n);
 * route names were already reduced to printable ASCII by the reader.
 */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const class_names[METRICS_CLASSES] = {"1xx", "2xx", "3xx",
                                                         "4xx", "5xx"};

/* Prometheus le bounds of apiary_http_request_duration_seconds, in us. */
static const uint64_t le_us[] = {
    10,     25,      50,      100,     250,      500,      1000,
    2500,   5000,    10000,   25000,   50000,    100000,   250000,
    500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000,
};

void
metrics_out_reset(struct metrics_out *o)
{
    o->len = 0;
    o->failed = false;
    if (o->buf)
        o->buf[0] = '\0';
}

void
metrics_out_free(struct metrics_out *o)
{
    free(o->buf);
    o->buf = NULL;
    o->len = o->cap = 0;
}

void
metrics_out_printf(struct metrics_out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (o->failed)
        return;
    for (;;) {
        size_t room = o->cap - o->len;
        va_start(ap, fmt);
        n = vsnprintf(o->buf ? o->buf + o->len : NULL, o->buf ? room : 0, fmt,
                      ap);
        va_end(ap);
        if (n < 0) {
            o->failed = true;
            return;
        }
        if (o->buf && (size_t)n < room) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap ? o->cap : 16384;
        while (cap - o->len <= (size_t)n)
            cap *= 2;
        char *b = realloc(o->buf, cap);
        if (b == NULL) {
            o->failed = true;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
}

/* A label value with \, " and newline escaped (Prometheus and JSON agree
 * on these three for printable ASCII input). */
static void
put_escaped(struct metrics_out *o, const char *s)
{
    char tmp[2 * METRICS_ROUTE_PATTERN_MAX + 2];
    size_t n = 0;

    for (; *s && n + 3 < sizeof(tmp); s++) {
        if (*s == '\\' || *s == '"') {
            tmp[n++] = '\\';
            tmp[n++] = *s;
        } else if (*s == '\n') {
            tmp[n++] = '\\';
            tmp[n++] = 'n';
        } else {
            tmp[n++] = *s;
        }
    }
    tmp[n] = '\0';
    metrics_out_printf(o, "%s", tmp);
}

static void
head(struct metrics_out *o, const char *name, const char *type,
     const char *help)
{
    metrics_out_printf(o, "# HELP %s %s.\n# TYPE %s %s\n", name, help, name,
                       type);
}

static void
one(struct metrics_out *o, const char *name, const char *type, const char *help,
    uint64_t v)
{
    head(o, name, type, help);
    metrics_out_printf(o, "%s %llu\n", name, (unsigned long long)v);
}

void
metrics_format_prometheus(const struct metrics_snap *s, struct metrics_out *o)
{
    const struct metrics_totals *t = &s->t;
    uint64_t total;

    head(o, "apiary_build_info", "gauge",
         "Build of the running apiaryd and metrics layout; always 1");
    metrics_out_printf(o, "apiary_build_info{version=\"");
    put_escaped(o, s->version);
    metrics_out_printf(o, "\",layout=\"%d\",instance=\"",
                       METRICS_LAYOUT_VERSION);
    put_escaped(o, s->name);
    metrics_out_printf(o, "\"} 1\n");
    head(o, "apiary_start_time_seconds", "gauge",
         "Start time of the master, seconds since the epoch");
    metrics_out_printf(o, "apiary_start_time_seconds %.6f\n",
                       (double)s->start_time_us / 1e6);
    one(o, "apiary_workers", "gauge", "Configured worker processes",
        s->workers);
    one(o, "apiary_workers_running", "gauge",
        "Worker processes holding a metrics block now", s->nrows);
    one(o, "apiary_worker_restarts_total", "counter",
        "Workers respawned after they died", s->worker_restarts);
    one(o, "apiary_reloads_total", "counter", "Configuration reloads",
        s->reloads);

    head(o, "apiary_http_requests_total", "counter",
         "Requests answered (or ended), by route and status class");
    for (unsigned r = 0; r < s->nroutes; r++)
        for (unsigned k = 0; k < METRICS_CLASSES; k++) {
            metrics_out_printf(o, "apiary_http_requests_total{method=\"");
            put_escaped(o, s->routes[r].method);
            metrics_out_printf(o, "\",route=\"");
            put_escaped(o, s->routes[r].pattern);
            metrics_out_printf(o, "\",status=\"%s\"} %llu\n", class_names[k],
                               (unsigned long long)t->requests[r][k]);
        }

#define METRICS_FIELD(f, p, h) one(o, p, "counter", h, t->f);
    METRICS_COUNTERS(METRICS_FIELD)
#undef METRICS_FIELD
#define METRICS_FIELD(f, p, h) one(o, p, "gauge", h, t->f);
    METRICS_GAUGES(METRICS_FIELD)
#undef METRICS_FIELD

    total = histogram_total(t->latency, HISTOGRAM_BUCKETS);
    head(o, "apiary_http_request_duration_seconds", "histogram",
         "Time from a request's first byte to its answer being queued");
    for (size_t i = 0; i < sizeof(le_us) / sizeof(le_us[0]); i++)
        metrics_out_printf(
            o, "apiary_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
            (double)le_us[i] / 1e6,
            (unsigned long long)histogram_count_le(t->latency, le_us[i]));
    metrics_out_printf(
        o,
        "apiary_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
        "apiary_http_request_duration_seconds_sum %.6f\n"
        "apiary_http_request_duration_seconds_count %llu\n",
        (unsigned long long)total, (double)t->latency_sum_us / 1e6,
        (unsigned long long)total);
}

void
metrics_format_json(const struct metrics_snap *s, bool hist,
                    struct metrics_out *o)
{
    const struct metrics_totals *t = &s->t;
    uint64_t by_class[METRICS_CLASSES] = {0}, requests = 0;
    double ratio = metrics_hit_ratio(t->cache_hits, t->cache_misses);

    for (unsigned r = 0; r < s->nroutes; r++)
        for (unsigned k = 0; k < METRICS_CLASSES; k++) {
            by_class[k] += t->requests[r][k];
            requests += t->requests[r][k];
        }
    metrics_out_printf(o, "{\"name\":\"");
    put_escaped(o, s->name);
    metrics_out_printf(o, "\",\"version\":\"");
    put_escaped(o, s->version);
    metrics_out_printf(
        o,
        "\",\"layout\":%d,\"generation\":\"%016llx\",\"master_pid\":%d,"
        "\"start_time\":%.6f,\"time\":%.6f,\"consistent\":%s,"
        "\"workers\":%u,\"workers_running\":%u,\"blocks\":%u,"
        "\"worker_restarts\":%llu,\"reloads\":%llu,\"workers_folded\":%llu,"
        "\"requests\":%llu,\"requests_by_status\":{",
        METRICS_LAYOUT_VERSION, (unsigned long long)s->generation,
        (int)s->master_pid, (double)s->start_time_us / 1e6,
        (double)s->taken_us / 1e6, s->consistent ? "true" : "false", s->workers,
        s->nrows, s->nblocks, (unsigned long long)s->worker_restarts,
        (unsigned long long)s->reloads, (unsigned long long)s->workers_folded,
        (unsigned long long)requests);
    for (unsigned k = 0; k < METRICS_CLASSES; k++)
        metrics_out_printf(o, "%s\"%s\":%llu", k ? "," : "", class_names[k],
                           (unsigned long long)by_class[k]);
    metrics_out_printf(o, "},\"routes\":[");
    for (unsigned r = 0; r < s->nroutes; r++) {
        uint64_t sum = 0;
        metrics_out_printf(o, "%s{\"method\":\"", r ? "," : "");
        put_escaped(o, s->routes[r].method);
        metrics_out_printf(o, "\",\"route\":\"");
        put_escaped(o, s->routes[r].pattern);
        metrics_out_printf(o, "\"");
        for (unsigned k = 0; k < METRICS_CLASSES; k++) {
            sum += t->requests[r][k];
            metrics_out_printf(o, ",\"%s\":%llu", class_names[k],
                               (unsigned long long)t->requests[r][k]);
        }
        metrics_out_printf(o, ",\"total\":%llu}", (unsigned long long)sum);
    }
    metrics_out_printf(o, "],\"counters\":{");
#define METRICS_FIELD(f, p, h)                                                 \
    metrics_out_printf(o, "\"" #f "\":%llu,", (unsigned long long)t->f);
    METRICS_COUNTERS(METRICS_FIELD)
#undef METRICS_FIELD
    metrics_out_printf(o, "\"master_log_dropped\":%llu},\"gauges\":{",
                       (unsigned long long)s->master_log_dropped);
    {
        const char *sep = "";
#define METRICS_FIELD(f, p, h)                                                 \
    metrics_out_printf(o, "%s\"" #f "\":%llu", sep, (unsigned long long)t->f); \
    sep = ",";
        METRICS_GAUGES(METRICS_FIELD)
#undef METRICS_FIELD
    }
    metrics_out_printf(o, "},\"cache_hit_ratio\":");
    if (ratio < 0)
        metrics_out_printf(o, "null");
    else
        metrics_out_printf(o, "%.6f", ratio);
    metrics_out_printf(
        o,
        ",\"latency\":{\"count\":%llu,\"sum_us\":%llu,\"p50_us\":%.1f,"
        "\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f}",
        (unsigned long long)histogram_total(t->latency, HISTOGRAM_BUCKETS),
        (unsigned long long)t->latency_sum_us,
        histogram_quantile(t->latency, 0.5),
        histogram_quantile(t->latency, 0.9),
        histogram_quantile(t->latency, 0.99),
        histogram_quantile(t->latency, 0.999));
    if (hist) {
        const char *sep = "";
        metrics_out_printf(o, ",\"histogram\":[");
        for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++) {
            if (t->latency[i] == 0)
                continue;
            metrics_out_printf(o, "%s[%llu,%llu,%llu]", sep,
                               (unsigned long long)histogram_bucket_low(i),
                               (unsigned long long)histogram_bucket_high(i),
                               (unsigned long long)t->latency[i]);
            sep = ",";
        }
        metrics_out_printf(o, "]");
    }
    metrics_out_printf(o, ",\"worker_table\":[");
    for (unsigned i = 0; i < s->nrows; i++) {
        const struct metrics_row *w = &s->rows[i];
        metrics_out_printf(
            o,
            "%s{\"block\":%u,\"slot\":%u,\"generation\":%u,\"pid\":%d,"
            "\"started\":%.3f,\"heartbeat\":%.3f,\"requests\":%llu,"
            "\"errors_5xx\":%llu,\"bytes_out\":%llu,\"latency_sum_us\":%llu,"
            "\"accepted\":%llu,\"db_queries\":%llu,\"db_errors\":%llu,"
            "\"db_reconnects\":%llu,\"cache_hits\":%llu,\"cache_misses\":%llu",
            i ? "," : "", w->block, w->slot, w->generation, (int)w->pid,
            (double)w->started_us / 1e6, (double)w->heartbeat_us / 1e6,
            (unsigned long long)w->requests, (unsigned long long)w->errors_5xx,
            (unsigned long long)w->bytes_out,
            (unsigned long long)w->latency_sum_us,
            (unsigned long long)w->conn_accepted,
            (unsigned long long)w->db_queries, (unsigned long long)w->db_errors,
            (unsigned long long)w->db_reconnects,
            (unsigned long long)w->cache_hits,
            (unsigned long long)w->cache_misses);
#define METRICS_FIELD(f, p, h)                                                 \
    metrics_out_printf(o, ",\"" #f "\":%llu", (unsigned long long)w->f);
        METRICS_GAUGES(METRICS_FIELD)
#undef METRICS_FIELD
        metrics_out_printf(o, "}");
    }
    metrics_out_printf(o, "]}\n");
}
