/*
 * pg.h - the worker's one asynchronous PostgreSQL connection.
 *
 * One libpq connection per worker, owned by the worker's event loop
 * (SPEC 1, 6): non-blocking, its socket in the same epoll set, in pipeline
 * mode, so many client requests are in flight on it at once and their
 * results come back in the order they were sent.
 *
 * Batches (group commit): the queries submitted while earlier batches are
 * running (at most PG_BATCHES_IN_FLIGHT of them; none waiting: at once)
 * are sent back to back with a single sync after them, so PostgreSQL runs
 * them as one implicit transaction: one commit (one WAL flush) and one
 * write(2) for the lot, where a sync per query would cost a commit each.
 * Results of writes are held until the batch's sync confirms the commit,
 * so nobody is told "created" before it is durable.  If a query of a batch
 * fails, the batch rolls back as a whole; the failing query alone completes
 * with its error, and all the others are sent again together as one new batch
 * (one sync), which may fail and shrink again (pg.c has the details).
 * A commit that fails (it waited too long for a lock: NOTIFY's, a
 * deferred check's) is taken as a failure of the batch's first held
 * query, the same way.
 *
 * Reads first (SPEC 6: reads never wait for another request's commit):
 * each batch sends its read-only statements (pg_stmt_def.read_only) before
 * its writes, and a read completes as soon as its result arrives.  It ran
 * before any write of its batch, so it cannot have seen them, and its
 * result does not depend on whether the batch commits; earlier batches
 * had finished before it ran (the server ends a batch, commit and WAL
 * flush or rollback, before it reads the next).  pg_query.origin keeps a
 * client's own read behind its own earlier write.
 *
 * States:  DOWN --connect--> CONNECTING --ok--> PREPARING --ok--> READY
 *            ^                    |                  |              |
 *            +------ failure / connection lost (backoff) -----------+
 * Only READY accepts queries; in any other state pg_submit() fails at once
 * (the caller answers 503).  On connection loss every query in flight and
 * waiting is completed with an error straight away, the socket leaves the
 * loop, and a reconnect is scheduled with capped exponential backoff
 * (PG_BACKOFF_MIN_MS doubling to PG_BACKOFF_MAX_MS).
 *
 * PREPARING checks the schema version (schema.h) and prepares every
 * statement of the table given to pg_new().  Any error on the way (the
 * server gone, a statement timeout, a lock held on schema_migrations, a
 * statement that does not prepare) is a failed connection like any other:
 * logged once per outage and retried with backoff; pg never exits the
 * process.  One outcome is reported separately: a schema confirmed older
 * than this build needs goes to the schema_old event, and pg retries at the
 * maximum backoff; whether the worker gives up is the worker's decision
 * (SPEC 4: exit 2 only for a worker that never served).
 *
 * Lock waits: a statement blocked on a lock that another session holds
 * (a row locked FOR UPDATE) would block the connection, and with it every
 * query pipelined behind it, other clients' reads of other rows included,
 * for up to statement_timeout.  So the session runs with a short
 * lock_timeout (pg_new()'s lock_wait_ms): such a statement fails with
 * 55P03 (lock_not_available) instead, its batch rolls back (its other
 * queries are sent again, as for any failed batch), and pg sends it again
 * by itself after a pause, alone, as often as needed, without telling the
 * submitter.  It completes when an attempt succeeds; is dropped if it is
 * cancelled meanwhile (its attempts were all rolled back); or, once it
 * has waited statement_timeout in all, completes with its last 55P03
 * result, which callers answer as they answer a statement timeout
 * (57014).  A read of the same origin submitted after such a write waits
 * for it (pg.c has the details).
 *
 * Flow control: at most depth queries in flight; up to queue_max more wait
 * in a FIFO; beyond that pg_submit() fails with PG_E_FULL (503).  Queries
 * whose answer nobody wants any more (pg_query.cancelled) are dropped
 * before they are sent (SPEC 6), and give their place in the FIFO back.
 */
#ifndef APIARY_PG_H
#define APIARY_PG_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "loop.h"

#define PG_MAX_PARAMS 8
#define PG_BACKOFF_MIN_MS 50
#define PG_BACKOFF_MAX_MS 500
#define PG_CONNECT_TIMEOUT_MS 5000
/* The pause before a lock-waiting statement is sent again (see above). */
#define PG_LOCK_RETRY_MIN_MS 10
#define PG_LOCK_RETRY_MAX_MS 200

struct pg;
struct pg_query;

/*
 * Completion: res is the query's result (PGRES_TUPLES_OK, PGRES_COMMAND_OK
 * or PGRES_FATAL_ERROR with the server's SQLSTATE), owned by pg and freed
 * after the call; or res is NULL and err says why the query never ran or
 * its result was lost ("database unavailable", "worker exiting",
 * "cancelled": see pg_query.cancelled).
 * Called exactly once per accepted query, from the loop, never from inside
 * pg_submit().
 */
typedef void (*pg_done_fn)(struct pg_query *q, const PGresult *res,
                           const char *err);

struct pg_stmt_def {
    const char *name;
    const char *sql;
    int nparams;
    /*
     * The statement only reads: it is sent ahead of its batch's writes and
     * completes as soon as its result arrives, without waiting for the
     * batch's commit (see "Reads first" above).  A statement that writes
     * anything must leave it false.
     */
    bool read_only;
    /*
     * Results in binary format, every column: int8 and timestamptz arrive
     * as 8 bytes that pg_get_int8() and pg_get_ts_us() decode, text as its
     * bytes (NUL-terminated by libpq as always), bool as one byte
     * (pg_get_bool()).  PostgreSQL then formats nothing, which is most of a
     * list query's cost in text format (timestamps above all).
     */
    bool binary;
};

struct pg_query {
    struct pg_query *next;
    unsigned stmt; /* index into the statement table */
    int nparams;
    const char *values[PG_MAX_PARAMS]; /* must live until done runs */
    pg_done_fn done;
    void *arg; /* the submitter's */
    /*
     * The submitter's ordering key, or NULL: a read never moves ahead of a
     * write with the same origin submitted before it (a client's pipelined
     * POST then GET: RFC 9112 9.3.2 lets a server run pipelined requests
     * in parallel only when all are safe).  The client connection is the
     * natural key.
     */
    const void *origin;
    /*
     * Set by the submitter, at any time, when nobody wants the answer any
     * more (the request was answered 504, its client left).  A query not
     * yet sent, or waiting to be sent again after a failed batch or a
     * lock wait, is then never sent: pg completes it with done(q, NULL,
     * "cancelled"), from the loop (after a lock wait: within one retry
     * pause).  One already sent completes normally.  pg never clears it.
     */
    bool cancelled;
    /* pg's own, while the query is in its hands: */
    PGresult *res;          /* result held until its batch's sync */
    bool early;             /* sent ahead of the batch's writes: at once */
    bool redo;              /* rolled back once: to run again */
    bool lock_waited;       /* lock_since_ms is set */
    uint32_t seq;           /* submission order (wraps) */
    uint32_t batch;         /* the batch it was last sent in (wraps) */
    uint64_t lock_since_ms; /* loop time its first lock wait began */
    uint64_t retry_at_ms;   /* parked after a lock wait: when to resend */
};

enum pg_submit_result { PG_OK = 0, PG_E_DOWN = -1, PG_E_FULL = -2 };

/*
 * What pg tells its owner, from the loop (never from inside a pg_*()
 * call).  Either callback may be NULL; neither may call pg_free().
 *   ready       the connection became READY: the first time and after
 *               every reconnect;
 *   schema_old  the schema lacks a migration this build needs; diag names
 *               it ("the database schema lacks migration 0002_x.sql: ...").
 *               The connection is already closed and a new attempt
 *               scheduled at PG_BACKOFF_MAX_MS; the callback may exit.
 *   notify      a notification arrived on channel `listen` (payload as
 *               sent; pg frees it after the call).  With listen set, pg
 *               sends LISTEN with the statements it prepares, so the
 *               channel is heard before `ready` is told (SPEC 12: nothing
 *               committed after ready is missed; what was committed while
 *               the connection was down is the owner's to recover).
 */
struct pg_events {
    void (*ready)(void *arg);
    void (*schema_old)(void *arg, const char *diag);
    void *arg;
    void (*notify)(void *arg, const char *payload);
    const char *listen; /* a plain identifier; NULL: no LISTEN */
};

struct pg_stats {
    uint64_t queries;       /* completed */
    uint64_t errors;        /* completed with an error */
    uint64_t reconnects;    /* successful connections after the first */
    uint64_t batches;       /* syncs sent for API queries, resends included,
                               lock retries not */
    uint64_t batch_retries; /* failed batches whose other queries were resent */
    uint64_t resent;        /* queries sent again after a failed batch */
    uint64_t lock_retries;  /* statements sent again after a lock wait */
    uint64_t dropped;       /* cancelled before being sent (again); not in
                               queries */
    uint64_t notifies;      /* notifications received (pg_events.notify) */
    uint32_t in_flight;     /* now */
    uint32_t queued;        /* now, waiting for pipeline room */
    uint32_t batched;       /* now, waiting for the next batch */
    uint32_t max_in_flight; /* high-water mark */
};

/*
 * Creates the client and starts connecting.  conninfo is a libpq URL or
 * key=value string; stmts (nstmts entries) stay owned by the caller and
 * must outlive pg.  statement_timeout_ms (> 0) is the session's
 * statement_timeout and the limit of a statement's lock waits in all;
 * lock_wait_ms is its lock_timeout once connected ("Lock waits" above;
 * 0: none set, and no lock retries).  app_name appears in
 * pg_stat_activity.  ev (NULL: no events) is copied.  Returns NULL when
 * out of memory.
 */
struct pg *pg_new(struct loop *loop, const char *conninfo,
                  const struct pg_stmt_def *stmts, unsigned nstmts,
                  uint32_t statement_timeout_ms, uint32_t lock_wait_ms,
                  uint32_t depth, uint32_t queue_max, const char *app_name,
                  const struct pg_events *ev);

/* Closes the connection (in-flight queries complete with an error). */
void pg_free(struct pg **pgp);

/*
 * Queues q for the next batch.  PG_OK, or PG_E_DOWN / PG_E_FULL (done is
 * not called).
 */
enum pg_submit_result pg_submit(struct pg *pg, struct pg_query *q);

/*
 * Sends the batch queued since the last call as one implicit transaction
 * (the queries back to back, then one sync).  The worker calls it just
 * before its loop sleeps.
 */
void pg_flush(struct pg *pg);

/* True when queries are accepted (GET /ready). */
bool pg_is_ready(const struct pg *pg);

const struct pg_stats *pg_get_stats(const struct pg *pg);

/*
 * Values of a binary-format result (pg_stmt_def.binary), row r, column c.
 * Database rows are outside input: a NULL or a value of another size gives
 * 0 (false), never a read past the value.
 *   pg_get_int8   an int8 (bigint)
 *   pg_get_ts_us  a timestamptz, as microseconds since 1970-01-01 UTC
 *                 (PostgreSQL counts from 2000-01-01); -infinity and
 *                 infinity saturate to INT64_MIN and INT64_MAX
 *   pg_get_bool   a bool
 */
int64_t pg_get_int8(const PGresult *res, int r, int c);
int64_t pg_get_ts_us(const PGresult *res, int r, int c);
bool pg_get_bool(const PGresult *res, int r, int c);

#endif
