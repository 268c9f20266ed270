/*
 * cache.h - the shared response cache (SPEC 5): ready-to-send JSON bodies
 * of GET /users/{id} and GET /orders/{id}, keyed by (kind, id), in one
 * shared memfd mapping that the master creates before it forks (or, in a
 * binary upgrade, inherits from the old master) and every worker of every
 * generation, of both masters during an upgrade, reads and writes without
 * locks.  cache.c explains the layout, the memory ordering and why a
 * process killed at any instruction leaves nothing wedged or torn.
 *
 * Callers (worker/api.c):
 *
 *   miss path   cache_ticket() before the database query is sent, then
 *               cache_put() with that ticket once the row is formatted:
 *               the put is refused, or stamped so that it is never served,
 *               if the key was invalidated (or the cache flushed) after
 *               the ticket was taken (the stale-fill race);
 *   hit path    cache_get() copies a validated body into the caller's
 *               buffer;
 *   writes      cache_invalidate() after the write's result is known and
 *               before its answer is sent; on a NOTIFY from another host
 *               too;
 *   reconnect   cache_flush() when notifications may have been missed.
 *
 * Every function may be called by any process mapping the cache; none
 * blocks, none allocates, none makes a system call except cache_open(),
 * cache_adopt(), cache_close() and, on the put path, getpid() and (for a
 * slot whose owner looks dead) kill(pid, 0).
 */
#ifndef APIARY_CACHE_H
#define APIARY_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CACHE_MAGIC 0x41504341u /* "APCA" */
#define CACHE_LAYOUT_VERSION 2u /* 2: memfd-backed, the hold word */
#define CACHE_WAYS 8u
#define CACHE_SLOT_BYTES 512u
#define CACHE_SLOT_HEAD 64u
#define CACHE_BODY_MAX (CACHE_SLOT_BYTES - CACHE_SLOT_HEAD) /* 448 */
#define CACHE_MIN_BYTES 65536u

/* What a key names. */
enum cache_kind { CACHE_USER = 1, CACHE_ORDER = 2 };

struct cache;

/*
 * Per-process counters, owned by the caller (a worker keeps one in its
 * struct api and shows it in /debug/worker; contracts.md 3).  Plain
 * fields: only the owning process writes them.
 */
struct cache_stats {
    uint64_t hits;
    uint64_t misses;
    uint64_t inserts;
    uint64_t evictions;           /* a valid entry replaced to make room */
    uint64_t invalidations;       /* cache_invalidate() calls */
    uint64_t retries;             /* a read that changed under the copy, tried
                                     again; a claim lost to another writer */
    uint64_t reclaimed;           /* slots of dead writers taken over */
    uint64_t stale_fills_refused; /* puts whose ticket was outdated */
    uint64_t flushes;
    uint64_t not_stored; /* puts skipped: too big, every way busy */
};

/*
 * The ticket a miss takes before it asks the database (see the top).
 * Plain data, kept by the caller until its cache_put().
 */
struct cache_ticket {
    uint64_t id;
    uint32_t kind;
    uint32_t set;
    uint32_t stripe;
    uint32_t tag;
    uint32_t epoch; /* the key's stripe epoch when taken */
    uint32_t flush; /* the flush epoch when taken */
};

/*
 * Master, before forking: makes a memfd named "apiary-cache" (close-on-
 * exec, sealed against shrinking and growing) of size_bytes rounded down
 * to whole sets, maps it shared and initialises it; it becomes
 * cache_shared() and its descriptor cache_fd().  Returns the cache, or
 * NULL with errno set: EINVAL when size_bytes < CACHE_MIN_BYTES, else
 * memfd_create's, ftruncate's, fcntl's or mmap's.  Children inherit the
 * mapping.
 */
struct cache *cache_open(uint64_t size_bytes);

/*
 * A new master of a binary upgrade, before forking: maps the old master's
 * cache from fd (its cache_fd(), inherited across exec) when it is what
 * cache_open(size_bytes) would make in this binary: a memfd sealed
 * against shrinking whose header has this magic, layout version, slot
 * size, ways, sets and size, and whose file has that size.  Returns the
 * cache (as cache_open() does; entries, epochs and claims kept), or NULL
 * with a sentence saying why in why (cap bytes) and fd closed; the
 * caller then makes a fresh one with cache_open().
 */
struct cache *cache_adopt(int fd, uint64_t size_bytes, char *why, size_t cap);

/* The descriptor of cache_shared()'s memfd (close-on-exec), or -1. */
int cache_fd(void);

/*
 * The hold (a fresh cache of a new master whose old master's workers
 * still run, and still write to another cache): while held, every
 * cache_get()/cache_view() misses and every cache_put() is skipped
 * (not_stored).  cache_release() ends it: flushes (so no fill ticketed
 * during the hold is ever served), then lets readers serve again; a
 * reader that sees the hold gone sees the flush.  Master only.
 */
void cache_hold(struct cache *c);
void cache_release(struct cache *c); /* c may be NULL; no-op if not held */

/* Whether c is held (tests, /debug). */
bool cache_held(const struct cache *c);

/* Unmaps, and closes the memfd if c is cache_shared() (tests; the
 * master's mapping goes away with the process). */
void cache_close(struct cache **cp);

/* Entries the cache can hold (sets x ways). */
uint64_t cache_capacity(const struct cache *c);

/*
 * Looks (kind, id) up.  On a hit copies the body into dst (cap bytes),
 * stores the HTTP status in *status and returns the body length; the copy
 * was validated after it was taken, so it is never torn.  Returns -1 on a
 * miss: absent, being written, invalidated, expired (now_ms >= its expiry;
 * now_ms is CLOCK_MONOTONIC milliseconds, or 0 when no TTL is used),
 * larger than cap, or changed under the copy more than twice.  Never
 * waits.  st may be NULL.
 */
long cache_get(struct cache *c, uint32_t kind, uint64_t id, uint64_t now_ms,
               char *dst, size_t cap, int *status, struct cache_stats *st);

/*
 * A body found in the cache, to be copied by the caller straight where it
 * is needed (the connection's output) and then checked with
 * cache_view_valid(): the copy is good only if that says true.
 */
struct cache_view {
    const char *body; /* in the mapping: may change under a copy */
    size_t len;       /* <= CACHE_BODY_MAX */
    int status;
    const void *ctl; /* the slot's control word ... */
    uint64_t seen;   /* ... as it was when found */
};

/*
 * Finds (kind, id) like cache_get() without copying: fills v and returns
 * true, or false on a miss (counted in st, which may be NULL).  The
 * caller copies v->body (v->len bytes), then calls cache_view_valid(v):
 * true means the copy (and v's status and length) is exactly what one
 * writer published; false means it may be torn (count it as a retry and
 * a miss).  Never waits.
 */
bool cache_view(struct cache *c, uint32_t kind, uint64_t id, uint64_t now_ms,
                struct cache_view *v, struct cache_stats *st);

/* See cache_view(); takes a struct cache_view * (a void * to fit
 * request_reply_validated()'s callback). */
bool cache_view_valid(void *view);

/* Fills t for (kind, id): call before the database is asked. */
void cache_ticket(struct cache *c, uint32_t kind, uint64_t id,
                  struct cache_ticket *t);

/*
 * Stores body (len bytes, answer status) for t's key, expiring ttl_ms
 * after now_ms (ttl_ms 0: never).  The entry is stamped with t's epochs,
 * so it is never served if the key was invalidated or the cache flushed
 * after t was taken.  Returns 0 when stored; -1 when refused (t
 * outdated), too big (> CACHE_BODY_MAX), or every way of its set was
 * busy or lost to another writer.  st may be NULL.
 */
int cache_put(struct cache *c, const struct cache_ticket *t, int status,
              const char *body, size_t len, uint32_t ttl_ms, uint64_t now_ms,
              struct cache_stats *st);

/*
 * Invalidates (kind, id): once it returns, no process serves a value of
 * that key stored, or ticketed, before the call.  st may be NULL.
 */
void cache_invalidate(struct cache *c, uint32_t kind, uint64_t id,
                      struct cache_stats *st);

/* Invalidates everything (after a reconnect).  st may be NULL. */
void cache_flush(struct cache *c, struct cache_stats *st);

/*
 * Master, when it reaps process pid (contracts.md 2): releases every slot
 * pid was writing.  Returns how many; also counted in the segment.
 */
unsigned cache_worker_gone(struct cache *c, pid_t pid);

/* Slots released by cache_worker_gone() since the cache was opened. */
uint64_t cache_reclaimed_total(const struct cache *c);

/*
 * Slots claimed by writer pid right now, or by any writer when pid is 0
 * (tests: 0 once writers are gone).  Walks the whole mapping.
 */
uint64_t cache_busy_slots(const struct cache *c, pid_t pid);

/*
 * The cache the master opened with cache_open() (inherited by its
 * workers), or NULL: the worker's wiring asks once and passes it on.
 */
struct cache *cache_shared(void);

#endif
