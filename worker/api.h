/*
 * api.h - the users / orders / audit API of SPEC 2, served from
 * PostgreSQL through the worker's pipelined connection (pg.h).
 *
 * The API's context is a struct api: the database client it submits to,
 * its pool of in-flight database requests and the JSON buffer its result
 * callbacks write answers into.  The worker owns one and
 * passes it in (api_init, api_register); nothing here looks up the worker.
 * api_statements() is the table of prepared statements pg prepares on
 * every connection.
 */
#ifndef APIARY_API_H
#define APIARY_API_H

#include <stdint.h>

#include "cache.h"
#include "json.h"
#include "pg.h"
#include "router.h"

#define API_MAGIC 0x41504931u
/* The LISTEN/NOTIFY channel of cache invalidations (SPEC 12). */
#define API_CACHE_CHANNEL "apiary_cache"

struct apireq;

struct api {
    uint32_t magic;
    struct pg *pg; /* NULL: no database configured (503) */
    struct apireq *free_list;
    unsigned nfree;
    struct jbuf jb; /* result callbacks' JSON scratch (they never nest) */
    /* the shared cache (NULL: none), see "Shared cache" in api.c */
    struct cache *cache;
    uint32_t cache_ttl_ms;
    struct cache_stats cache_stats; /* this worker's (/debug/worker) */
};

/* Sets api up to submit to pg (may be NULL). */
void api_init(struct api *api, struct pg *pg);
/*
 * Serves GET /users/{id} and GET /orders/{id} through cache (NULL: no
 * cache), entries expiring after ttl_ms (0: never).  Call after api_init.
 */
void api_set_cache(struct api *api, struct cache *cache, uint32_t ttl_ms);

/*
 * The worker's pg events: a notification on API_CACHE_CHANNEL ("user:ID"
 * or "order:ID", from a write on any host) invalidates that key; anything
 * else on the channel is logged and flushes the cache.
 */
void api_cache_notify(struct api *api, const char *payload);

/*
 * The worker's connection became ready (at start and after every
 * reconnect): notifications may have been missed meanwhile, so nothing
 * cached before can be proved fresh; the whole cache is flushed.
 */
void api_cache_ready(struct api *api);

/* Frees the request pool (at exit, for valgrind). */
void api_fini(struct api *api);

/* Adds every API route to r, with api as their context.  0, or -1 if the
 * table is full. */
int api_register(struct router *r, struct api *api);

/* The prepared statements; *n receives their count. */
const struct pg_stmt_def *api_statements(unsigned *n);

#endif
