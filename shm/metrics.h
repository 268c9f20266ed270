/*
 * metrics.h - the shared-memory metrics segment (SPEC 5): its layout, the
 * master's and the workers' writer calls, and the read-only reader used
 * by apiarystat and by GET /metrics and /status.
 *
 * The segment is a POSIX shm object named "/apiary-<name>-metrics"
 * (/dev/shm/apiary-<name>-metrics), mode 0640, created by the master
 * before it forks and unlinked when it exits.  Layout (offsets in the
 * header, every part 64-byte aligned):
 *
 *   +---------------------------+ 0
 *   | struct metrics_header     |  magic, layout version, generation,
 *   |                           |  start time, worker count, sizes, offsets
 *   +---------------------------+ routes_offset
 *   | route names [MAX_ROUTES]  |  "GET" "/users/{id}": written by the
 *   |                           |  master only, before any worker uses them
 *   +---------------------------+ master_offset
 *   | struct metrics_master     |  restarts, reloads, fold sequence and
 *   |                           |  the counters of workers already reaped
 *   +---------------------------+ blocks_offset
 *   | struct metrics_block [n]  |  one per running worker, written only by
 *   | ...                       |  that worker; n = 2 x workers + spare, so
 *   +---------------------------+  two generations fit during a reload
 *
 * Counters are monotonic for the life of the master: a reaped worker's
 * counters are folded into the master block (metrics_worker_gone()), and
 * a reader adds the live blocks to the folded ones.  Ordering and crash
 * behaviour are explained at the top of metrics.c.
 *
 * Readers (metrics_reader_open(), metrics_snapshot()) map the segment
 * read-only, validate the header against the mapping's size before they
 * trust an offset (metrics_check()), and copy what they show.
 */
#ifndef APIARY_METRICS_H
#define APIARY_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "histogram.h"

#ifndef APIARY_VERSION
#define APIARY_VERSION "0.8"
#endif

#define METRICS_MAGIC 0x314d595241495041ull /* "APIARYM1" little-endian */
#define METRICS_LAYOUT_VERSION 1
#define METRICS_NAME_MAX 32 /* instance name (config key "name") */
#define METRICS_SHM_NAME_MAX (METRICS_NAME_MAX + 24)
#define METRICS_MAX_ROUTES 40
#define METRICS_ROUTE_METHOD_MAX 8
#define METRICS_ROUTE_PATTERN_MAX 56
#define METRICS_CLASSES 5 /* 1xx .. 5xx */
#define METRICS_MAX_BLOCKS 520
#define METRICS_SPARE_BLOCKS 4

/* Fixed routes, before the router's (metrics_route_add()). */
enum {
    METRICS_ROUTE_NONE = 0,   /* never routed: parser errors, 408 ... */
    METRICS_ROUTE_NOT_FOUND,  /* 404 from the router */
    METRICS_ROUTE_NOT_ALLOWED /* 405 from the router */
};
#define METRICS_ROUTE_FIRST 3

/*
 * Every scalar counter a worker keeps, with its Prometheus name and help:
 * X(field, prometheus name, help).  All are counters (monotonic).  The
 * cache_*, ratelimit_* and auth_* fields are filled by those modules
 * through metrics_worker_block() (see README "Operations: metrics").
 */
#define METRICS_COUNTERS(X)                                                    \
    X(bytes_in, "apiary_http_received_bytes_total",                            \
      "Request bytes received (header section and body)")                      \
    X(bytes_out, "apiary_http_sent_bytes_total",                               \
      "Response bytes queued for sending")                                     \
    X(requests_client_gone, "apiary_http_requests_client_gone_total",          \
      "Requests whose client left before the answer was queued")               \
    X(requests_timeout, "apiary_http_requests_timed_out_total",                \
      "Requests ended by a timeout (408 or 504)")                              \
    X(requests_rejected, "apiary_http_requests_rejected_total",                \
      "Requests rejected by the parser or a limit (connection closed)")        \
    X(conn_accepted, "apiary_connections_accepted_total",                      \
      "Client connections accepted")                                           \
    X(db_queries, "apiary_db_queries_total", "Database queries completed")     \
    X(db_errors, "apiary_db_errors_total",                                     \
      "Database queries completed with an error")                              \
    X(db_reconnects, "apiary_db_reconnects_total",                             \
      "Database connections made again after the first")                       \
    X(log_dropped, "apiary_log_dropped_lines_total",                           \
      "Log lines dropped because a log buffer was full (all processes)")       \
    X(cache_hits, "apiary_cache_hits_total", "Cache lookups that hit")         \
    X(cache_misses, "apiary_cache_misses_total", "Cache lookups that missed")  \
    X(cache_inserts, "apiary_cache_inserts_total", "Cache entries inserted")   \
    X(cache_evictions, "apiary_cache_evictions_total",                         \
      "Cache entries evicted for room")                                        \
    X(cache_invalidations, "apiary_cache_invalidations_total",                 \
      "Cache entries invalidated by writes")                                   \
    X(cache_retries, "apiary_cache_retries_total",                             \
      "Cache reads retried after a concurrent write")                          \
    X(cache_reclaimed, "apiary_cache_reclaimed_total",                         \
      "Cache slots reclaimed from dead writers")                               \
    X(cache_stale_fills, "apiary_cache_stale_fills_refused_total",             \
      "Cache fills refused because the key was written meanwhile")             \
    X(cache_flushes, "apiary_cache_flushes_total",                             \
      "Whole-cache invalidations (database reconnects)")                       \
    X(ratelimit_limited, "apiary_ratelimit_limited_total",                     \
      "Requests refused by the rate limiter (429)")                            \
    X(ratelimit_allowed, "apiary_ratelimit_allowed_total",                     \
      "Requests let through by the rate limiter")                              \
    X(auth_rejected, "apiary_auth_rejected_total",                             \
      "Requests refused by authentication (401)")

/*
 * Per-worker gauges (current values, summed over workers by readers):
 * X(field, prometheus name, help).
 */
#define METRICS_GAUGES(X)                                                      \
    X(conn_active, "apiary_connections_active", "Open client connections")     \
    X(conn_idle, "apiary_connections_idle",                                    \
      "Keep-alive connections waiting for a request")                          \
    X(db_up, "apiary_db_connections_up",                                       \
      "Workers whose database connection is ready")                            \
    X(db_in_flight, "apiary_db_pipeline_depth",                                \
      "Database queries sent and not yet answered")                            \
    X(db_queued, "apiary_db_queue_length",                                     \
      "Database queries waiting for pipeline room")

/* ---- shared layout (every field fixed width; see _Static_asserts) ---- */

/* The counters of one worker; also the master's folded totals. */
struct metrics_counters {
#define METRICS_FIELD(f, p, h) _Atomic uint64_t f;
    METRICS_COUNTERS(METRICS_FIELD)
#undef METRICS_FIELD
    _Atomic uint64_t reserved[12];
    _Atomic uint64_t requests[METRICS_MAX_ROUTES][METRICS_CLASSES];
    _Atomic uint64_t latency_count;
    _Atomic uint64_t latency_sum_us;
    _Atomic uint64_t latency[HISTOGRAM_BUCKETS];
};

struct metrics_gauges {
#define METRICS_FIELD(f, p, h) _Atomic uint64_t f;
    METRICS_GAUGES(METRICS_FIELD)
#undef METRICS_FIELD
    _Atomic uint64_t reserved[3];
};

enum { METRICS_BLOCK_FREE = 0, METRICS_BLOCK_LIVE = 1 };

struct metrics_block {
    _Atomic uint32_t state;        /* METRICS_BLOCK_* (master writes) */
    uint32_t slot;                 /* worker id 1..N */
    uint32_t generation;           /* the worker's configuration generation */
    _Atomic int32_t pid;           /* 0 until the worker attached */
    _Atomic uint64_t started_us;   /* CLOCK_REALTIME */
    _Atomic uint64_t heartbeat_us; /* worker's last sync, CLOCK_REALTIME */
    uint8_t pad0[32];
    struct metrics_gauges g;
    struct metrics_counters c;
} __attribute__((aligned(64)));

struct metrics_route_name {
    char method[METRICS_ROUTE_METHOD_MAX];
    char pattern[METRICS_ROUTE_PATTERN_MAX];
};

struct metrics_master {
    _Atomic uint64_t fold_seq; /* odd while a fold is under way */
    _Atomic uint64_t worker_restarts;
    _Atomic uint64_t reloads;
    _Atomic uint64_t workers_folded;
    _Atomic uint64_t log_dropped; /* the master's own */
    uint8_t pad0[24];
    struct metrics_counters folded;
} __attribute__((aligned(64)));

struct metrics_header {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t header_size;
    uint64_t generation;    /* random, new at every master start */
    uint64_t start_time_us; /* CLOCK_REALTIME of the master's start */
    uint64_t total_size;
    uint64_t routes_offset;
    uint64_t master_offset;
    uint64_t blocks_offset;
    uint32_t nroutes_max; /* METRICS_MAX_ROUTES */
    uint32_t route_size;  /* sizeof(struct metrics_route_name) */
    uint32_t nblocks;
    uint32_t block_size;
    uint32_t master_size;
    uint32_t hist_buckets;
    uint32_t workers;           /* configured worker count */
    _Atomic int32_t master_pid; /* 0 once the master has stopped */
    _Atomic uint32_t nroutes;   /* route names published so far */
    uint32_t pad0;
    char name[METRICS_NAME_MAX];
    char version[32];
    uint8_t pad1[88];
};

_Static_assert(sizeof(struct metrics_header) == 256, "header size");
_Static_assert(sizeof(struct metrics_route_name) == 64, "route name size");
_Static_assert(sizeof(struct metrics_block) % 64 == 0, "block alignment");
_Static_assert(offsetof(struct metrics_block, g) == 64, "gauges offset");
_Static_assert(offsetof(struct metrics_block, c) == 128, "counters offset");
_Static_assert(sizeof(struct metrics_master) % 64 == 0, "master alignment");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "atomic u64 is plain");

/* ---- writer side ---- */

struct metrics {
    int fd;
    void *base;
    size_t size;
    struct metrics_header *hdr;
    struct metrics_master *master;
    struct metrics_block *blocks;
    char shm_name[METRICS_SHM_NAME_MAX];
    dev_t dev;
    ino_t ino;
};

/* "/apiary-<name>-metrics" into buf; -1 unless name is 1..31 characters
 * of [A-Za-z0-9_.-] not starting with '.' (what config key name takes). */
int metrics_shm_name(const char *name, char *buf, size_t cap);

/*
 * Master, before forking: creates (replacing any stale one) and maps the
 * segment of instance name for `workers` workers, mode 0640, with a new
 * random generation.  Returns 0, or -1 with errno set (the caller logs
 * "shm_open() failed" and runs without metrics).
 */
int metrics_create(struct metrics *m, const char *name, unsigned workers,
                   const char *version);

/*
 * Lays a fresh segment out in caller memory (size from metrics_size()):
 * what metrics_create() does after mapping; for tests and the fuzz corpus.
 */
size_t metrics_size(unsigned nblocks);
void metrics_layout(void *base, size_t size, const char *name, unsigned workers,
                    unsigned nblocks, uint64_t generation, const char *version);

/*
 * Master: publishes a route name (once each; a name already there keeps
 * its index).  Returns its index, or METRICS_ROUTE_NONE when the table
 * is full.  Must run before the workers that use it are forked.
 */
unsigned metrics_route_add(struct metrics *m, const char *method,
                           const char *pattern);

/*
 * Worker: the index of a published route name, METRICS_ROUTE_NONE if
 * absent.  Reads only.
 */
unsigned metrics_route_find(const struct metrics *m, const char *method,
                            const char *pattern);

/*
 * Master, at spawn: takes a free block for the worker (slot, generation)
 * and makes it the one the next forked child attaches to.  Returns the
 * block index, or -1 when none is free (the worker then records nothing).
 */
int metrics_worker_assign(struct metrics *m, unsigned slot,
                          uint32_t generation);

/* Master, after fork: the pid of the worker in block. */
void metrics_worker_pid(struct metrics *m, int block, pid_t pid);

/*
 * Master, when it reaps a worker: folds that worker's block into the
 * master's totals and frees the block.  Every counter it had survives.
 */
void metrics_worker_gone(struct metrics *m, pid_t pid, unsigned slot,
                         uint32_t generation, int block);

/*
 * Master: one more worker respawned after dying (reap) / one more
 * successful reload (for the reload work: call it once the new
 * generation is serving).
 */
void metrics_count_restart(struct metrics *m);
void metrics_count_reload(struct metrics *m);

/* Master: its own dropped log lines (cumulative). */
void metrics_master_log_dropped(struct metrics *m, uint64_t n);

/*
 * Master, at exit: marks the segment stopped and unlinks its name if it is
 * still ours (a newer master of the same name may have replaced it).
 */
void metrics_destroy(struct metrics *m);

/*
 * Worker: its block, as assigned before it was forked (NULL when metrics
 * are off or no block was free).  The cache, rate limiter and auth modules
 * bump their fields with METRICS_INC / METRICS_ADD on it.
 */
struct metrics_block *metrics_worker_block(void);
/* The segment the worker inherited (NULL when off). */
struct metrics *metrics_worker_segment(void);

/*
 * Hot-path update of a field written by one process only: a relaxed load
 * and a relaxed store, i.e. a plain add, no locked instruction.
 */
#define METRICS_ADD(field, n)                                                  \
    atomic_store_explicit(                                                     \
        &(field),                                                              \
        atomic_load_explicit(&(field), memory_order_relaxed) + (uint64_t)(n),  \
        memory_order_relaxed)
#define METRICS_INC(field) METRICS_ADD(field, 1)
#define METRICS_SET(field, v)                                                  \
    atomic_store_explicit(&(field), (uint64_t)(v), memory_order_relaxed)

/* ---- reader side ---- */

/* Plain copies of the counters, summed over workers. */
struct metrics_totals {
#define METRICS_FIELD(f, p, h) uint64_t f;
    METRICS_COUNTERS(METRICS_FIELD)
    METRICS_GAUGES(METRICS_FIELD)
#undef METRICS_FIELD
    uint64_t requests[METRICS_MAX_ROUTES][METRICS_CLASSES];
    uint64_t latency_count;
    uint64_t latency_sum_us;
    uint64_t latency[HISTOGRAM_BUCKETS];
};

/* One live worker block. */
struct metrics_row {
    unsigned block, slot;
    uint32_t generation;
    int32_t pid;
    uint64_t started_us, heartbeat_us;
    uint64_t requests, errors_5xx, bytes_out, latency_count, latency_sum_us;
    uint64_t conn_accepted, db_queries, db_errors, db_reconnects;
    uint64_t cache_hits, cache_misses;
#define METRICS_FIELD(f, p, h) uint64_t f;
    METRICS_GAUGES(METRICS_FIELD)
#undef METRICS_FIELD
};

struct metrics_snap {
    uint64_t generation, start_time_us, taken_us;
    int32_t master_pid;
    unsigned workers, nblocks, nroutes, nrows;
    bool consistent; /* false: a fold kept moving, figures may be off */
    char name[METRICS_NAME_MAX + 1];
    char version[33];
    uint64_t worker_restarts, reloads, workers_folded, master_log_dropped;
    struct metrics_route_name routes[METRICS_MAX_ROUTES];
    struct metrics_totals t;
    struct metrics_row rows[METRICS_MAX_BLOCKS];
};

struct metrics_reader {
    const void *base;
    size_t size;
    char shm_name[METRICS_SHM_NAME_MAX];
    dev_t dev;
    ino_t ino;
    uint64_t generation;
};

/*
 * Checks that the len bytes at base hold a segment this reader can read:
 * magic, layout version, sizes, offsets and counts within len.  Returns 0,
 * or -1 with a reason in diag.  Reads nothing beyond len.
 */
int metrics_check(const void *base, size_t len, char *diag, size_t cap);

/*
 * Opens and maps the segment of instance name read-only and checks it.
 * Returns 0, or -1 with diag filled and errno set: ENOENT (no server of
 * that name is running), EACCES (no permission), EPROTO (not a segment
 * this apiarystat understands).
 */
int metrics_reader_open(struct metrics_reader *r, const char *name, char *diag,
                        size_t cap);

/*
 * True when the name now refers to another segment (a restarted master)
 * or none, or the master has stopped: the reader should re-open.
 */
bool metrics_reader_stale(const struct metrics_reader *r);

void metrics_reader_close(struct metrics_reader *r);

/*
 * Copies a consistent view of a checked segment (base, len) into s: the
 * totals (live workers plus folded ones) and one row per live block.
 * Returns 0, or -1 with diag filled when the segment fails metrics_check().
 */
int metrics_snapshot(const void *base, size_t len, struct metrics_snap *s,
                     char *diag, size_t cap);

/* A growing output buffer for the formatters. */
struct metrics_out {
    char *buf;
    size_t len, cap;
    bool failed; /* out of memory: output truncated */
};

/* Empties o, keeping its memory for the next use. */
void metrics_out_reset(struct metrics_out *o);
/* Frees o's memory; o is empty and reusable afterwards. */
void metrics_out_free(struct metrics_out *o);
/*
 * Appends formatted text, growing the buffer (malloc'd, owned by o).  On
 * out of memory it sets o->failed and appends nothing more until reset.
 */
void metrics_out_printf(struct metrics_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Prometheus text exposition format 0.0.4 of s (HELP, TYPE, _total
 * counters, the latency histogram in seconds with le buckets, +Inf, _sum,
 * _count, apiary_build_info).  Appends to o.
 */
void metrics_format_prometheus(const struct metrics_snap *s,
                               struct metrics_out *o);

/*
 * JSON of s: totals, routes, latency percentiles and a compact histogram,
 * per-worker rows.  With hist, the non-empty histogram buckets too.
 */
void metrics_format_json(const struct metrics_snap *s, bool hist,
                         struct metrics_out *o);

/* Cache hit ratio in [0, 1], or -1 when there were no lookups. */
double metrics_hit_ratio(uint64_t hits, uint64_t misses);

#endif
