/*
 * edge.h - the cross-cutting request handling of issue 10, wired into a
 * worker's request hooks in one place: request id, CORS, gzip, rate
 * limit, auth, and the GET /openapi.json route.
 *
 * Hook order after routing: request id (every later answer carries it),
 * CORS origin match (so a 429/401 is readable by a browser), gzip's
 * Accept-Encoding verdict, rate limit (before anything else answers, so
 * preflights and bad tokens count too), CORS preflight, auth.  At
 * serialisation: request id, CORS, gzip (last: it may swap the body).
 */
#ifndef APIARY_EDGE_H
#define APIARY_EDGE_H

#include "auth.h"
#include "config.h"
#include "cors.h"
#include "gzip.h"
#include "ratelimit.h"
#include "request.h"
#include "request_id.h"
#include "router.h"

struct edge {
    struct request_id rid;
    struct cors cors;
    struct gzip gzip;
    struct ratelimit rl;
    struct auth auth;
};

/*
 * Sets up e from cfg (which must outlive e), adds its hooks to hooks and
 * its route to rt.  Problems that leave a feature off or degraded (no
 * auth secret: writes answer 503) are logged, once per worker, and are
 * not errors.  Returns 0, or -1 when hooks or routes do not fit (a bug)
 * or cors_origins is malformed, with why filled.
 */
int edge_init(struct edge *e, const struct config *cfg,
              struct request_hooks *hooks, struct router *rt, char *why,
              size_t why_len);

/*
 * Checks cfg's edge keys before any worker starts (apiaryd -t, and the
 * master's start): returns -1 with err filled for what would stop every
 * worker (a malformed cors_origins), else 0, with warn filled (else "")
 * for what only degrades (no usable auth secret: writes answer 503).
 * Never puts key bytes into either.
 */
int edge_config_check(const struct config *cfg, char *err, size_t err_len,
                      char *warn, size_t warn_len);

/*
 * Appends its per-worker counters to a JSON object being written, as
 * ',"ratelimit_allowed":N,...' (contracts.md 3 names), into buf (cap
 * bytes, NUL-terminated).  Returns the length (0 if it did not fit).
 */
size_t edge_debug_json(const struct edge *e, char *buf, size_t cap);

/* Frees what edge_init() allocated and clears the secret. */
void edge_fini(struct edge *e);

#endif
