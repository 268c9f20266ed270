/*
 * metrics_hook.h - the worker's side of the metrics segment (shm/metrics.h):
 * the done hook that records every request into this worker's block, the
 * per-iteration sync of gauges and of counters other modules keep
 * (connections, database client, logger), and the snapshot buffer the
 * GET /metrics and /status.json handlers render from (metrics_http.c).
 *
 * Recording costs one clock read and a dozen plain adds per request
 * (METRICS_ADD: no locked instruction).  Built with -DAPIARY_NO_METRICS,
 * attach registers nothing and sync does nothing: scripts/bench-metrics
 * compares the two builds.
 *
 * Single-threaded: one worker's loop.
 */
#ifndef APIARY_METRICS_HOOK_H
#define APIARY_METRICS_HOOK_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"
#include "request.h"
#include "router.h"

struct conn_ctx;
struct pg;
struct cache_stats;
struct edge;

struct metrics_hook {
    struct metrics *seg;         /* the inherited segment, NULL: none */
    struct metrics_block *block; /* this worker's, NULL: not recording */
    const struct router *router;
    uint16_t map[ROUTER_MAX_ROUTES]; /* router index -> segment route */
    uint64_t log_base; /* log_dropped_lines() at attach (inherited part) */
    const struct config *cfg;
    struct metrics_snap *snap; /* for the handlers; allocated on first use */
    struct metrics_out out;
};

/*
 * Master, before forking: publishes the names of every route the workers
 * of cfg register (the same table handlers_register() and api_register()
 * build), so that workers of any generation map them to the same index.
 */
void metrics_publish_routes(struct metrics *m, const struct config *cfg);

/*
 * Worker, once its router is complete: takes the block assigned to it
 * before the fork (metrics_worker_block()), maps the router's routes, and
 * adds the done hook to hooks.  Without a segment (metrics = off, or no
 * block free) it records nothing and returns 0; -1 only when the hook
 * table is full.
 */
int metrics_hook_attach(struct metrics_hook *h, struct request_hooks *hooks,
                        const struct router *router, const struct config *cfg);

/*
 * Worker, before the loop sleeps: copies the gauges (open and idle
 * connections, database pipeline depth and queue) and the counters kept
 * elsewhere (accepted, database queries, errors, reconnects, dropped log
 * lines, this worker's cache counters, its rate-limit and auth counters)
 * into the block.  pg, cache and edge may be NULL.  now_us
 * (CLOCK_REALTIME, 0 to skip) refreshes the heartbeat.
 */
void metrics_hook_sync(struct metrics_hook *h, const struct conn_ctx *conns,
                       const struct pg *pg, const struct cache_stats *cache,
                       const struct edge *edge, uint64_t accepted,
                       uint64_t now_us);

/* Frees the snapshot buffers. */
void metrics_hook_fini(struct metrics_hook *h);

#endif
