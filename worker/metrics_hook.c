/*
 * metrics_hook.c - see metrics_hook.h.
 *
 * Route of a request, for requests_total{route}: the route the router
 * matched (HEAD counts under its GET route), "(not found)" for a 404 and
 * "(method not allowed)" for a 405 from the router, "(no route)" for a
 * request that ended before it was routed (parser error, limit, 408,
 * client gone mid-header).  Status class: status / 100, with 499 (client
 * gone) in 4xx; anything outside 100..599 counts as 5xx.
 */
#include "metrics_hook.h"

#include "cache.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "conn.h"
#include "conn_priv.h"
#include "edge.h"
#include "handlers.h"
#include "log.h"
#include "openapi.h"
#include "pg.h"

void
metrics_publish_routes(struct metrics *m, const struct config *cfg)
{
    static struct router rt; /* 5 KiB: not on the master's stack */

    if (m == NULL)
        return;
    router_init(&rt);
    /* the handlers' context pointers are stored, never used here; the
     * same routes as worker_run() registers, edge_init()'s included */
    if (handlers_register(&rt, cfg, NULL) < 0 || api_register(&rt, NULL) < 0 ||
        openapi_register(&rt) < 0)
        log_warn("metrics: route table incomplete; some routes count as "
                 "(no route)");
    for (unsigned i = 0; i < rt.nroutes; i++)
        if (metrics_route_add(m, http_method_name(rt.routes[i].method),
                              rt.routes[i].pattern) == METRICS_ROUTE_NONE)
            log_warn("metrics: no room for route %s %s",
                     http_method_name(rt.routes[i].method),
                     rt.routes[i].pattern);
}

#ifndef APIARY_NO_METRICS
static void
record(const struct request *r, void *arg)
{
    struct metrics_hook *h = arg;
    struct metrics_block *b = h->block;
    uint64_t now = conn_now_us();
    uint64_t us = now > r->start_us ? now - r->start_us : 0;
    unsigned route, cls;

    if (r->match.route != NULL) {
        size_t i = (size_t)(r->match.route - h->router->routes);
        route = i < ROUTER_MAX_ROUTES ? h->map[i] : METRICS_ROUTE_NONE;
    } else if (r->route == ROUTER_NOT_FOUND) {
        route = METRICS_ROUTE_NOT_FOUND;
    } else if (r->route == ROUTER_METHOD_NOT_ALLOWED) {
        route = METRICS_ROUTE_NOT_ALLOWED;
    } else {
        route = METRICS_ROUTE_NONE;
    }
    cls = r->status >= 100 && r->status <= 599 ? (unsigned)r->status / 100 : 5;
    METRICS_INC(b->c.requests[route][cls - 1]);
    METRICS_ADD(b->c.bytes_in, r->bytes_in);
    METRICS_ADD(b->c.bytes_out, r->bytes_out);
    switch (r->end) {
    case REQUEST_END_CLIENT_GONE:
        METRICS_INC(b->c.requests_client_gone);
        break;
    case REQUEST_END_TIMEOUT:
        METRICS_INC(b->c.requests_timeout);
        break;
    case REQUEST_END_REJECTED:
        METRICS_INC(b->c.requests_rejected);
        break;
    default:
        break;
    }
    METRICS_INC(b->c.latency[histogram_bucket(us)]);
    METRICS_INC(b->c.latency_count);
    METRICS_ADD(b->c.latency_sum_us, us);
}
#endif

int
metrics_hook_attach(struct metrics_hook *h, struct request_hooks *hooks,
                    const struct router *router, const struct config *cfg)
{
    memset(h, 0, sizeof(*h));
    h->router = router;
    h->cfg = cfg;
    h->seg = metrics_worker_segment();
    h->block = metrics_worker_block();
    if (h->seg == NULL || h->block == NULL)
        return 0;
    for (unsigned i = 0; i < router->nroutes && i < ROUTER_MAX_ROUTES; i++)
        h->map[i] = (uint16_t)metrics_route_find(
            h->seg, http_method_name(router->routes[i].method),
            router->routes[i].pattern);
    h->log_base = log_dropped_lines();
    atomic_store_explicit(&h->block->pid, (int32_t)getpid(),
                          memory_order_relaxed);
#ifdef APIARY_NO_METRICS
    (void)hooks;
    h->block = NULL;
    return 0;
#else
    return request_hooks_add_done(hooks, record, h);
#endif
}

void
metrics_hook_sync(struct metrics_hook *h, const struct conn_ctx *conns,
                  const struct pg *pg, const struct cache_stats *cache,
                  const struct edge *edge, uint64_t accepted, uint64_t now_us)
{
#ifdef APIARY_NO_METRICS
    (void)h;
    (void)conns;
    (void)pg;
    (void)cache;
    (void)edge;
    (void)accepted;
    (void)now_us;
#else
    struct metrics_block *b = h->block;
    const struct pg_stats *ps;

    if (b == NULL)
        return;
    METRICS_SET(b->g.conn_active, conns->nconns);
    METRICS_SET(b->g.conn_idle, conns->keepalive_q.ntimers);
    METRICS_SET(b->c.conn_accepted, accepted);
    METRICS_SET(b->c.log_dropped, log_dropped_lines() - h->log_base);
    if (pg) {
        ps = pg_get_stats(pg);
        METRICS_SET(b->g.db_up, pg_is_ready(pg) ? 1 : 0);
        METRICS_SET(b->g.db_in_flight, ps->in_flight);
        METRICS_SET(b->g.db_queued, ps->queued);
        METRICS_SET(b->c.db_queries, ps->queries);
        METRICS_SET(b->c.db_errors, ps->errors);
        METRICS_SET(b->c.db_reconnects, ps->reconnects);
    }
    if (cache) {
        METRICS_SET(b->c.cache_hits, cache->hits);
        METRICS_SET(b->c.cache_misses, cache->misses);
        METRICS_SET(b->c.cache_inserts, cache->inserts);
        METRICS_SET(b->c.cache_evictions, cache->evictions);
        METRICS_SET(b->c.cache_invalidations, cache->invalidations);
        METRICS_SET(b->c.cache_retries, cache->retries);
        METRICS_SET(b->c.cache_reclaimed, cache->reclaimed);
        METRICS_SET(b->c.cache_stale_fills, cache->stale_fills_refused);
        METRICS_SET(b->c.cache_flushes, cache->flushes);
    }
    if (edge) {
        METRICS_SET(b->c.ratelimit_limited, edge->rl.stats.limited);
        METRICS_SET(b->c.ratelimit_allowed, edge->rl.stats.allowed);
        METRICS_SET(b->c.auth_rejected, edge->auth.rejected);
    }
    if (now_us)
        METRICS_SET(b->heartbeat_us, now_us);
#endif
}

void
metrics_hook_fini(struct metrics_hook *h)
{
    free(h->snap);
    h->snap = NULL;
    metrics_out_free(&h->out);
}
