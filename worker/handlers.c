/*
 * handlers.c - GET /health and the optional GET /debug/worker.
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

#include "conn.h"
#include "worker.h"

static void
health(struct req_ctx *ctx)
{
    static const char body[] = "{\"status\":\"ok\"}";
    conn_reply(ctx, 200, body, sizeof(body) - 1, NULL, 0);
}

static void
debug_worker(struct req_ctx *ctx)
{
    const struct worker *wk = ctx->wk;
    char body[256];
    int n;

    n = snprintf(body, sizeof(body),
                 "{\"worker\":%u,\"pid\":%d,\"accepted\":%llu,"
                 "\"active\":%u,\"requests\":%llu,\"yields\":%llu}",
                 wk->id, (int)getpid(), (unsigned long long)wk->accepted,
                 wk->nconns, (unsigned long long)wk->requests,
                 (unsigned long long)wk->yields);
    conn_reply(ctx, 200, body, (size_t)n, NULL, 0);
}

int
handlers_register(struct router *r, const struct config *cfg)
{
    if (router_add(r, HTTP_GET, "/health", (router_handler_fn)health) < 0)
        return -1;
    if (cfg->debug_endpoints &&
        router_add(r, HTTP_GET, "/debug/worker", (router_handler_fn)debug_worker) < 0)
        return -1;
    return 0;
}
