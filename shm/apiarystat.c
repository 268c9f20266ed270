/*
 * apiarystat.c - reads a running apiaryd's metrics segment (shm/metrics.h)
 * without touching its sockets, as varnishstat reads varnishd's.
 *
 *   apiarystat [-n NAME] [-f PATTERN]        live view, refreshed every
 *                                            second (default)
 *   apiarystat [-n NAME] [-f PATTERN] -1     one table, then exit
 *   apiarystat [-n NAME] [-f PATTERN] -j     JSON, then exit
 *   apiarystat [-n NAME] [-f PATTERN] -p     Prometheus text, then exit
 *
 * It maps the segment read-only (mode 0640: the service user or its group
 * can read it) and checks its header before trusting any offset.  The live
 * view shows per-second rates and p50 / p99 / p99.9 computed from the
 * difference of two histogram snapshots one second apart (the latency of
 * that second, not since start), then every field with its value and
 * rate, then one line per worker.  When the master restarts (the segment
 * is replaced: new inode and generation) or stops, the live view says so
 * and attaches to the new one as soon as it appears.
 *
 * -j prints the document GET /status.json serves (metrics_format_json()
 * with the histogram: [low_us, high_us, count] per non-empty bucket), so a
 * reader such as scripts/loadtest takes percentiles of any interval from
 * the difference of two readings.
 *
 * -f PATTERN keeps the fields whose name matches the shell pattern
 * (fnmatch; e.g. 'cache_*', '*db*', 'route:GET /users*').  With -p it keeps
 * the series whose metric name matches; with -j it prints a flat object of
 * the matching fields instead of the full document.
 *
 * The screen is drawn with plain ANSI escapes (home, clear to end): no
 * terminal library, since a one-second full redraw needs nothing more.
 * Exit status: 0, 1 when no server is running or the segment cannot be
 * read (the reason on stderr), 2 on bad usage.
 */
#include <errno.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "histogram.h"
#include "metrics.h"

static const char *const class_names[METRICS_CLASSES] = {"1xx", "2xx", "3xx",
                                                         "4xx", "5xx"};

static volatile sig_atomic_t stop;

static void
on_signal(int signo)
{
    (void)signo;
    stop = 1;
}

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: apiarystat [-n NAME] [-f PATTERN] [-1 | -j | -p]\n"
            "\n"
            "  (default)   live view, refreshed every second (Ctrl-C quits)\n"
            "  -1          print one table and exit\n"
            "  -j          print JSON and exit\n"
            "  -p          print Prometheus text format and exit\n"
            "  -n NAME     instance name (config key name; default apiary)\n"
            "  -f PATTERN  only fields matching this shell pattern\n"
            "  -h          this help\n");
}

/* ---- flat fields: name, value, counter or gauge ---- */

struct field {
    char name[METRICS_ROUTE_PATTERN_MAX + 24];
    uint64_t value;
    int counter; /* 1: rate makes sense */
};

#define MAX_FIELDS (64 + METRICS_CLASSES + METRICS_MAX_ROUTES * METRICS_CLASSES)

static unsigned
fields_of(const struct metrics_snap *s, struct field *f)
{
    const struct metrics_totals *t = &s->t;
    uint64_t by_class[METRICS_CLASSES] = {0}, total = 0;
    unsigned n = 0;

#define ADD(nm, v, c)                                                          \
    do {                                                                       \
        snprintf(f[n].name, sizeof(f[n].name), "%s", nm);                      \
        f[n].value = (v);                                                      \
        f[n].counter = (c);                                                    \
        n++;                                                                   \
    } while (0)

    for (unsigned r = 0; r < s->nroutes; r++)
        for (unsigned k = 0; k < METRICS_CLASSES; k++) {
            by_class[k] += t->requests[r][k];
            total += t->requests[r][k];
        }
    ADD("requests", total, 1);
    for (unsigned k = 0; k < METRICS_CLASSES; k++) {
        char nm[32];
        snprintf(nm, sizeof(nm), "requests_%s", class_names[k]);
        ADD(nm, by_class[k], 1);
    }
#define METRICS_FIELD(fl, p, h) ADD(#fl, t->fl, 1);
    METRICS_COUNTERS(METRICS_FIELD)
#undef METRICS_FIELD
#define METRICS_FIELD(fl, p, h) ADD(#fl, t->fl, 0);
    METRICS_GAUGES(METRICS_FIELD)
#undef METRICS_FIELD
    ADD("master_log_dropped", s->master_log_dropped, 1);
    ADD("worker_restarts", s->worker_restarts, 1);
    ADD("reloads", s->reloads, 1);
    ADD("workers_running", s->nrows, 0);
    for (unsigned r = 0; r < s->nroutes; r++)
        for (unsigned k = 0; k < METRICS_CLASSES; k++) {
            if (t->requests[r][k] == 0)
                continue;
            snprintf(f[n].name, sizeof(f[n].name), "route:%s %s:%s",
                     s->routes[r].method, s->routes[r].pattern, class_names[k]);
            f[n].value = t->requests[r][k];
            f[n].counter = 1;
            n++;
        }
#undef ADD
    return n;
}

static int
wanted(const char *pattern, const char *name)
{
    return pattern == NULL || fnmatch(pattern, name, 0) == 0;
}

static uint64_t
find_value(const struct field *f, unsigned n, const char *name, int *found)
{
    for (unsigned i = 0; i < n; i++)
        if (strcmp(f[i].name, name) == 0) {
            *found = 1;
            return f[i].value;
        }
    *found = 0;
    return 0;
}

/* ---- output modes ---- */

static void
fmt_us(char *buf, size_t cap, double us)
{
    if (us < 1000)
        snprintf(buf, cap, "%.0fus", us);
    else if (us < 1e6)
        snprintf(buf, cap, "%.2fms", us / 1000);
    else
        snprintf(buf, cap, "%.2fs", us / 1e6);
}

static void
print_workers(const struct metrics_snap *s, const struct metrics_snap *old,
              double dt)
{
    printf("\n%5s %4s %8s %10s %12s %8s %7s %7s %4s %10s\n", "slot", "gen",
           "pid", "req/s", "requests", "5xx", "open", "idle", "db", "db q/s");
    for (unsigned i = 0; i < s->nrows; i++) {
        const struct metrics_row *w = &s->rows[i];
        double rate = 0, qrate = 0;
        for (unsigned j = 0; old && j < old->nrows && dt > 0; j++)
            if (old->rows[j].block == w->block && old->rows[j].pid == w->pid) {
                rate = (double)(w->requests - old->rows[j].requests) / dt;
                qrate = (double)(w->db_queries - old->rows[j].db_queries) / dt;
            }
        printf(
            "%5u %4u %8d %10.1f %12llu %8llu %7llu %7llu %4s %10.1f\n", w->slot,
            w->generation, (int)w->pid, rate, (unsigned long long)w->requests,
            (unsigned long long)w->errors_5xx,
            (unsigned long long)w->conn_active,
            (unsigned long long)w->conn_idle, w->db_up ? "up" : "down", qrate);
    }
}

static void
print_header(const struct metrics_snap *s)
{
    uint64_t up = s->taken_us > s->start_time_us
                      ? (s->taken_us - s->start_time_us) / 1000000
                      : 0;
    printf("apiary \"%s\" version %s  master pid %d  up %llud %02llu:%02llu:"
           "%02llu  generation %016llx%s\n",
           s->name, s->version, (int)s->master_pid,
           (unsigned long long)(up / 86400),
           (unsigned long long)(up % 86400 / 3600),
           (unsigned long long)(up % 3600 / 60), (unsigned long long)(up % 60),
           (unsigned long long)s->generation,
           s->consistent ? "" : "  (inconsistent read)");
}

static void
print_table(const struct metrics_snap *s, const char *pattern)
{
    static struct field f[MAX_FIELDS];
    unsigned n = fields_of(s, f);
    char p50[16], p99[16], p999[16];
    double ratio = metrics_hit_ratio(s->t.cache_hits, s->t.cache_misses);

    print_header(s);
    fmt_us(p50, sizeof(p50), histogram_quantile(s->t.latency, 0.5));
    fmt_us(p99, sizeof(p99), histogram_quantile(s->t.latency, 0.99));
    fmt_us(p999, sizeof(p999), histogram_quantile(s->t.latency, 0.999));
    printf("since start: latency p50 %s  p99 %s  p99.9 %s  cache hit ratio ",
           p50, p99, p999);
    if (ratio < 0)
        printf("-\n\n");
    else
        printf("%.1f%%\n\n", ratio * 100);
    printf("%-44s %16s\n", "field", "value");
    for (unsigned i = 0; i < n; i++)
        if (wanted(pattern, f[i].name))
            printf("%-44s %16llu\n", f[i].name, (unsigned long long)f[i].value);
    print_workers(s, NULL, 0);
}

static void
print_json_filtered(const struct metrics_snap *s, const char *pattern)
{
    static struct field f[MAX_FIELDS];
    unsigned n = fields_of(s, f);
    const char *sep = "";

    printf("{");
    for (unsigned i = 0; i < n; i++) {
        if (!wanted(pattern, f[i].name))
            continue;
        printf("%s\"", sep);
        for (const char *c = f[i].name; *c; c++)
            printf(*c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
        printf("\":%llu", (unsigned long long)f[i].value);
        sep = ",";
    }
    printf("}\n");
}

/* The metric family of a series name (a histogram's _bucket, _sum and
 * _count series belong to it), in a static buffer. */
static const char *
family(const char *name)
{
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    static char fam[128];
    size_t n = strlen(name);

    snprintf(fam, sizeof(fam), "%s", name);
    for (size_t i = 0; i < 3; i++) {
        size_t k = strlen(sfx[i]);
        if (n > k && n < sizeof(fam) && strcmp(name + n - k, sfx[i]) == 0) {
            fam[n - k] = '\0';
            break;
        }
    }
    return fam;
}

/* Prometheus text, keeping HELP/TYPE/series of matching metric names. */
static void
print_prometheus(const struct metrics_snap *s, const char *pattern)
{
    struct metrics_out o = {0};
    char *line, *save = NULL;

    metrics_format_prometheus(s, &o);
    if (o.failed || o.buf == NULL) {
        fprintf(stderr, "apiarystat: out of memory\n");
        metrics_out_free(&o);
        return;
    }
    if (pattern == NULL) {
        fwrite(o.buf, 1, o.len, stdout);
        metrics_out_free(&o);
        return;
    }
    for (line = strtok_r(o.buf, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char name[128];
        const char *p = line;
        size_t k = 0;
        if (strncmp(p, "# HELP ", 7) == 0 || strncmp(p, "# TYPE ", 7) == 0)
            p += 7;
        while (p[k] && p[k] != ' ' && p[k] != '{' && k + 1 < sizeof(name)) {
            name[k] = p[k];
            k++;
        }
        name[k] = '\0';
        if (wanted(pattern, name) || wanted(pattern, family(name)))
            printf("%s\n", line);
    }
    metrics_out_free(&o);
}

/* ---- live view ---- */

static void
live_frame(const struct metrics_snap *s, const struct metrics_snap *old,
           const char *pattern)
{
    static struct field f[MAX_FIELDS], g[MAX_FIELDS];
    static uint64_t delta[HISTOGRAM_BUCKETS];
    unsigned n = fields_of(s, f), m = old ? fields_of(old, g) : 0;
    double dt = old ? (double)(s->taken_us - old->taken_us) / 1e6 : 0;
    char p50[16], p99[16], p999[16];
    double ratio = metrics_hit_ratio(s->t.cache_hits, s->t.cache_misses);
    uint64_t req = 0, oreq = 0;
    int found;

    for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++)
        delta[i] = old && s->t.latency[i] >= old->t.latency[i]
                       ? s->t.latency[i] - old->t.latency[i]
                       : 0;
    req = find_value(f, n, "requests", &found);
    oreq = old ? find_value(g, m, "requests", &found) : req;
    fmt_us(p50, sizeof(p50), histogram_quantile(delta, 0.5));
    fmt_us(p99, sizeof(p99), histogram_quantile(delta, 0.99));
    fmt_us(p999, sizeof(p999), histogram_quantile(delta, 0.999));

    printf("\033[H\033[2J");
    print_header(s);
    printf("req/s %-10.1f p50 %-8s p99 %-8s p99.9 %-8s open %llu  idle %llu"
           "  cache hit ",
           dt > 0 ? (double)(req - oreq) / dt : 0.0, p50, p99, p999,
           (unsigned long long)s->t.conn_active,
           (unsigned long long)s->t.conn_idle);
    if (ratio < 0)
        printf("-");
    else
        printf("%.1f%%", ratio * 100);
    printf("  db up %llu/%u\n\n", (unsigned long long)s->t.db_up, s->nrows);
    printf("%-44s %16s %12s\n", "field", "value", "per second");
    for (unsigned i = 0; i < n; i++) {
        uint64_t o;
        if (!wanted(pattern, f[i].name))
            continue;
        if (pattern == NULL && f[i].value == 0)
            continue; /* the full list is long: show what moves */
        o = old ? find_value(g, m, f[i].name, &found) : 0;
        if (f[i].counter && old && found && dt > 0 && f[i].value >= o)
            printf("%-44s %16llu %12.1f\n", f[i].name,
                   (unsigned long long)f[i].value,
                   (double)(f[i].value - o) / dt);
        else
            printf("%-44s %16llu\n", f[i].name, (unsigned long long)f[i].value);
    }
    print_workers(s, old, dt);
    fflush(stdout);
}

static int
live(const char *name, const char *pattern)
{
    struct metrics_snap *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    struct metrics_reader r = {0};
    bool have_old = false, attached = false;
    char diag[256];

    if (a == NULL || b == NULL) {
        fprintf(stderr, "apiarystat: out of memory\n");
        free(a);
        free(b);
        return 1;
    }
    while (!stop) {
        if (attached && metrics_reader_stale(&r)) {
            metrics_reader_close(&r);
            attached = false;
            have_old = false;
            printf("\033[H\033[2Japiary \"%s\": the server stopped or "
                   "restarted; waiting for it\n",
                   name);
            fflush(stdout);
        }
        if (!attached) {
            if (metrics_reader_open(&r, name, diag, sizeof(diag)) < 0) {
                if (errno == EACCES || errno == EINVAL) {
                    fprintf(stderr, "apiarystat: %s\n", diag);
                    free(a);
                    free(b);
                    return 1;
                }
                printf("\033[H\033[2J%s; waiting\n", diag);
                fflush(stdout);
                sleep(1);
                continue;
            }
            attached = true;
        }
        if (metrics_snapshot(r.base, r.size, a, diag, sizeof(diag)) < 0) {
            printf("\033[H\033[2Jcannot read the segment: %s\n", diag);
            metrics_reader_close(&r);
            attached = false;
            sleep(1);
            continue;
        }
        live_frame(a, have_old ? b : NULL, pattern);
        {
            struct metrics_snap *t = a;
            a = b;
            b = t;
        }
        have_old = true;
        sleep(1);
    }
    metrics_reader_close(&r);
    free(a);
    free(b);
    return 0;
}

int
main(int argc, char *argv[])
{
    const char *name = "apiary", *pattern = NULL;
    struct metrics_reader r;
    struct metrics_snap *s;
    char diag[256];
    int opt, mode = 0, rc = 0;
    struct sigaction sa;

    while ((opt = getopt(argc, argv, "1jpn:f:h")) != -1) {
        switch (opt) {
        case '1':
        case 'j':
        case 'p':
            if (mode && mode != opt) {
                fprintf(stderr, "apiarystat: -1, -j and -p exclude each "
                                "other\n");
                return 2;
            }
            mode = opt;
            break;
        case 'n':
            name = optarg;
            break;
        case 'f':
            pattern = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "apiarystat: unexpected argument \"%s\"\n",
                argv[optind]);
        usage(stderr);
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (mode == 0)
        return live(name, pattern);

    if (metrics_reader_open(&r, name, diag, sizeof(diag)) < 0) {
        fprintf(stderr, "apiarystat: %s\n", diag);
        return 1;
    }
    s = malloc(sizeof(*s));
    if (s == NULL) {
        fprintf(stderr, "apiarystat: out of memory\n");
        metrics_reader_close(&r);
        return 1;
    }
    if (metrics_snapshot(r.base, r.size, s, diag, sizeof(diag)) < 0) {
        fprintf(stderr, "apiarystat: %s\n", diag);
        rc = 1;
    } else if (mode == '1') {
        print_table(s, pattern);
    } else if (mode == 'p') {
        print_prometheus(s, pattern);
    } else if (pattern) {
        print_json_filtered(s, pattern);
    } else {
        struct metrics_out o = {0};
        metrics_format_json(s, true, &o);
        if (o.failed || o.buf == NULL) {
            fprintf(stderr, "apiarystat: out of memory\n");
            rc = 1;
        } else {
            fwrite(o.buf, 1, o.len, stdout);
        }
        metrics_out_free(&o);
    }
    free(s);
    metrics_reader_close(&r);
    return rc;
}
