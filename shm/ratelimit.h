/*
 * ratelimit.h - a per-client-address rate limit shared by every worker
 * (SPEC 2, issue 10).  The design, memory ordering and crash story are at
 * the top of ratelimit.c.
 *
 * The master maps the table before it forks (ratelimit_open(), or
 * ratelimit_adopt() of the old master's in a binary upgrade); every
 * worker it forks, of every generation, shares it.  A worker asks
 * ratelimit_take() for one request of a client; the after-routing hook
 * ratelimit_route() does that and answers 429 when the answer is no.
 */
#ifndef APIARY_RATELIMIT_H
#define APIARY_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_MAGIC 0x524c494du /* "RLIM" */
#define RATELIMIT_VERSION 1u
#define RATELIMIT_PROBE 8 /* slots searched per client */

struct request;

/* Per-worker counters (contracts.md 3), shown in /debug/worker. */
struct ratelimit_stats {
    uint64_t allowed;
    uint64_t limited;
    uint64_t table_full; /* allowed because no slot was free */
};

/* A worker's view: its settings and counters (the table is shared). */
struct ratelimit {
    uint32_t rate;  /* requests per second; 0: off */
    uint32_t burst; /* bucket size */
    struct ratelimit_stats stats;
};

/*
 * Master, before forking: makes a memfd "apiary-ratelimit" (close-on-exec,
 * sealed against shrinking and growing) holding a table of nslots
 * (rounded up to a power of two, at least 64) entries and maps it.  0, or
 * -1 with errno from memfd_create(), ftruncate(), fcntl() or mmap().
 * Calling it again while mapped does nothing (a reload keeps the budget).
 */
int ratelimit_open(uint32_t nslots);

/*
 * A new master of a binary upgrade, before forking: maps the old master's
 * table from fd (its ratelimit_fd(), inherited across exec) when it is a
 * sealed memfd whose magic, version and slot count are what
 * ratelimit_open(nslots) would make in this binary; the budgets drawn so
 * far stay drawn.  0; or -1 with a sentence in why (cap bytes) and fd
 * closed, and the caller makes a fresh table with ratelimit_open().
 */
int ratelimit_adopt(int fd, uint32_t nslots, char *why, size_t cap);

/* The descriptor of the mapped table's memfd (close-on-exec), or -1. */
int ratelimit_fd(void);

/* Unmaps the table and closes its memfd (master at exit, tests).  Safe
 * when not open. */
void ratelimit_close(void);

/*
 * The 8-byte key of a client: an IPv4 address (family 4), or the first
 * 64 bits of an IPv6 address (its /64; an IPv4-mapped IPv6 address counts
 * as IPv4).  addr holds 4 or 16 bytes.
 */
uint64_t ratelimit_key(int family, const uint8_t *addr);

/*
 * Takes one request from key's bucket at time now_us (CLOCK_MONOTONIC).
 * Returns 0 when allowed, or the microseconds until the next request of
 * that client would be allowed (> 0) when limited.  Any process may call
 * it; lock-free.  Allowed (0) when the table is not open, rate is 0, or no
 * slot could be had (counted in stats->table_full).
 */
uint64_t ratelimit_take(struct ratelimit *rl, uint64_t key, uint64_t now_us);

/* After-routing hook (arg: struct ratelimit *): 429 with Retry-After and
 * RateLimit-* headers when the client is over its rate.  1 when it
 * answered. */
int ratelimit_route(struct request *r, void *arg);

#endif
