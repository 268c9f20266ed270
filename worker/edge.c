/*
 * edge.c - see edge.h.
 */
#include "edge.h"

#include <stdio.h>
#include <string.h>

#include "log.h"
#include "openapi.h"

int
edge_init(struct edge *e, const struct config *cfg, struct request_hooks *hooks,
          struct router *rt, char *why, size_t why_len)
{
    char diag[CONFIG_DIAG_MAX];
    int bad = 0;

    if (request_id_init(&e->rid) < 0)
        log_warn("getrandom() failed: request ids use time and pid");
    if (cors_init(&e->cors, cfg, why, why_len) < 0)
        return -1;
    if (gzip_init(&e->gzip, cfg) < 0)
        log_error("zlib deflateInit2() failed: answers are not compressed");
    e->rl.rate = cfg->ratelimit_rate;
    e->rl.burst = cfg->ratelimit_burst;
    if (auth_init(&e->auth, cfg, diag, sizeof(diag)) < 0)
        log_error("%s: every POST, PATCH and DELETE answers 503", diag);

    if (cfg->request_id)
        bad |= request_hooks_add_route(hooks, request_id_route, &e->rid);
    bad |= request_hooks_add_route(hooks, cors_match, &e->cors);
    bad |= request_hooks_add_route(hooks, gzip_route, &e->gzip);
    bad |= request_hooks_add_route(hooks, ratelimit_route, &e->rl);
    bad |= request_hooks_add_route(hooks, cors_preflight, &e->cors);
    bad |= request_hooks_add_route(hooks, auth_route, &e->auth);
    if (cfg->request_id)
        bad |=
            request_hooks_add_serialise(hooks, request_id_serialise, &e->rid);
    bad |= request_hooks_add_serialise(hooks, cors_serialise, &e->cors);
    bad |= request_hooks_add_serialise(hooks, gzip_serialise, &e->gzip);
    bad |= openapi_register(rt);
    if (bad) {
        snprintf(why, why_len, "request hook or route table full");
        return -1;
    }
    return 0;
}

int
edge_config_check(const struct config *cfg, char *err, size_t err_len,
                  char *warn, size_t warn_len)
{
    struct cors co;
    struct auth a;

    if (warn_len)
        warn[0] = '\0';
    if (cors_init(&co, cfg, err, err_len) < 0)
        return -1;
    if (auth_init(&a, cfg, warn, warn_len) < 0) {
        size_t n = strlen(warn);
        snprintf(warn + n, warn_len - n, ": writes will answer 503");
    }
    auth_fini(&a);
    return 0;
}

size_t
edge_debug_json(const struct edge *e, char *buf, size_t cap)
{
    int n = snprintf(buf, cap,
                     ",\"ratelimit_allowed\":%llu,\"ratelimit_limited\":%llu,"
                     "\"ratelimit_table_full\":%llu,\"auth_rejected\":%llu,"
                     "\"auth_verified\":%llu,\"auth_cache_hits\":%llu,"
                     "\"gzip_compressed\":%llu,\"gzip_bytes_in\":%llu,"
                     "\"gzip_bytes_out\":%llu",
                     (unsigned long long)e->rl.stats.allowed,
                     (unsigned long long)e->rl.stats.limited,
                     (unsigned long long)e->rl.stats.table_full,
                     (unsigned long long)e->auth.rejected,
                     (unsigned long long)e->auth.verified,
                     (unsigned long long)e->auth.cache_hits,
                     (unsigned long long)e->gzip.compressed,
                     (unsigned long long)e->gzip.bytes_in,
                     (unsigned long long)e->gzip.bytes_out);

    if (n < 0 || (size_t)n >= cap) {
        if (cap)
            buf[0] = '\0';
        return 0;
    }
    return (size_t)n;
}

void
edge_fini(struct edge *e)
{
    auth_fini(&e->auth);
    gzip_fini(&e->gzip);
}
