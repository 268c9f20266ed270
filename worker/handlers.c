/*
 * handlers.c - GET /health and the optional GET /debug/worker.
 *
 * /ready is 200 while this worker's database connection is up, 503
 * otherwise (a load balancer's readiness probe).
 *
 * /debug/worker also reports the worker's database pipeline: queries,
 * errors, reconnects, in flight now and the highest depth reached; and
 * "allocs", the worker's calls to malloc for buffers and request state
 * (STYLE 6: a test checks that /health adds none once warm).
 *
 * /health answers from a constant: it allocates nothing and touches no
 * database (SPEC 2: liveness only).  /debug/worker reports which worker
 * served the connection and its counters; it exists for tests and
 * operators checking connection spreading, and is off unless
 * debug_endpoints = on.
 */
#include "handlers.h"

#include <stdio.h>
#include <unistd.h>

#include "edge.h"
#include "log.h"
#include "metrics_http.h"
#include "pg.h"
#include "request.h"
#include "worker.h"

static void
health(struct request *r, void *arg)
{
    static const char body[] = "{\"status\":\"ok\"}";

    (void)arg;
    request_reply(r, 200, body, sizeof(body) - 1, NULL, 0);
}

static void
ready(struct request *r, void *arg)
{
    static const char body[] = "{\"status\":\"ready\"}";
    const struct worker *wk = arg;

    if (!pg_is_ready(wk->pg)) {
        request_error(r, 503, "Database unavailable");
        return;
    }
    request_reply(r, 200, body, sizeof(body) - 1, NULL, 0);
}

static void
debug_worker(struct request *r, void *arg)
{
    const struct worker *wk = arg;
    const struct pg_stats *ps = wk->pg ? pg_get_stats(wk->pg) : NULL;
    const struct cache_stats *cs = &wk->api.cache_stats;
    char body[2048], edge_json[512] = "";
    int n;

    if (wk->edge)
        (void)edge_debug_json(wk->edge, edge_json, sizeof(edge_json));

    n = snprintf(
        body, sizeof(body),
        "{\"worker\":%u,\"pid\":%d,\"accepted\":%llu,"
        "\"active\":%u,\"requests\":%llu,\"yields\":%llu,"
        "\"db_ready\":%s,\"db_queries\":%llu,\"db_errors\":%llu,"
        "\"db_reconnects\":%llu,\"db_in_flight\":%u,"
        "\"db_queued\":%u,\"db_batched\":%u,\"db_max_in_flight\":%u,"
        "\"db_batches\":%llu,"
        "\"db_batch_retries\":%llu,\"db_resent\":%llu,"
        "\"db_lock_retries\":%llu,"
        "\"db_dropped\":%llu,\"allocs\":%llu,"
        "\"generation\":%u,\"log_dropped\":%llu,"
        "\"db_notifies\":%llu,\"cache\":%s,\"cache_hits\":%llu,"
        "\"cache_misses\":%llu,\"cache_inserts\":%llu,"
        "\"cache_evictions\":%llu,\"cache_invalidations\":%llu,"
        "\"cache_retries\":%llu,\"cache_reclaimed\":%llu,"
        "\"cache_stale_fills_refused\":%llu,\"cache_flushes\":%llu,"
        "\"cache_not_stored\":%llu%s}",
        wk->id, (int)getpid(), (unsigned long long)wk->accepted,
        wk->conns.nconns, (unsigned long long)wk->conns.nrequests,
        (unsigned long long)wk->yields, pg_is_ready(wk->pg) ? "true" : "false",
        ps ? (unsigned long long)ps->queries : 0ULL,
        ps ? (unsigned long long)ps->errors : 0ULL,
        ps ? (unsigned long long)ps->reconnects : 0ULL, ps ? ps->in_flight : 0u,
        ps ? ps->queued : 0u, ps ? ps->batched : 0u,
        ps ? ps->max_in_flight : 0u,
        ps ? (unsigned long long)ps->batches : 0ULL,
        ps ? (unsigned long long)ps->batch_retries : 0ULL,
        ps ? (unsigned long long)ps->resent : 0ULL,
        ps ? (unsigned long long)ps->lock_retries : 0ULL,
        ps ? (unsigned long long)ps->dropped : 0ULL,
        (unsigned long long)buf_allocs, wk->generation,
        (unsigned long long)log_dropped_lines(),
        ps ? (unsigned long long)ps->notifies : 0ULL,
        wk->api.cache ? "true" : "false", (unsigned long long)cs->hits,
        (unsigned long long)cs->misses, (unsigned long long)cs->inserts,
        (unsigned long long)cs->evictions,
        (unsigned long long)cs->invalidations, (unsigned long long)cs->retries,
        (unsigned long long)cs->reclaimed,
        (unsigned long long)cs->stale_fills_refused,
        (unsigned long long)cs->flushes, (unsigned long long)cs->not_stored,
        edge_json);
    request_reply(r, 200, body, (size_t)n, NULL, 0);
}

int
handlers_register(struct router *r, const struct config *cfg, struct worker *wk)
{
    if (router_add(r, HTTP_GET, "/health", (router_handler_fn)health, NULL) < 0)
        return -1;
    if (router_add(r, HTTP_GET, "/ready", (router_handler_fn)ready, wk) < 0)
        return -1;
    /* metrics views (issue 8); wk is NULL when the master lists routes */
    if (router_add(r, HTTP_GET, "/metrics",
                   (router_handler_fn)metrics_http_metrics,
                   wk ? &wk->metrics : NULL) < 0)
        return -1;
    if (cfg->status_page &&
        (router_add(r, HTTP_GET, "/status",
                    (router_handler_fn)metrics_http_status, NULL) < 0 ||
         router_add(r, HTTP_GET, "/status.json",
                    (router_handler_fn)metrics_http_status_json,
                    wk ? &wk->metrics : NULL) < 0))
        return -1;
    if (cfg->debug_endpoints &&
        router_add(r, HTTP_GET, "/debug/worker",
                   (router_handler_fn)debug_worker, wk) < 0)
        return -1;
    return 0;
}
