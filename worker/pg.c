/*
 * pg.c - see pg.h for the states and the contract.
 *
 * Result matching in pipeline mode: a batch is sent as Query... Sync, so
 * the server answers with each query's result (libpq adds a NULL after
 * each), then a PGRES_PIPELINE_SYNC.  A result moves the head of the
 * in-flight list (fl) to the held list (grp) until the sync ends the
 * batch (end_batch()).  Batches are answered in the order they were sent,
 * so fl and grp only ever hold the oldest unfinished batch at their heads.
 * A sync has a result of its own besides PGRES_PIPELINE_SYNC when the
 * commit fails (a lock wait at commit: commit_failed()), so a result is
 * a query's only if that query was sent in the oldest unfinished batch:
 * each query carries its batch's number (pg_query.batch), and a result
 * that no query of that batch is waiting for is the sync's.  Taking it
 * for the next batch's first query put every later result one query off
 * (a GET answered from a PATCH's row).  As a last guard, a result whose
 * column count is not its statement's (learnt with Describe when
 * preparing) closes the connection as out of step, like a result nobody
 * waits for.
 *
 * A failed batch (SPEC 6: only the failing query fails): the server
 * stops at the first error, rolls the implicit transaction back at the
 * sync and answers PGRES_PIPELINE_ABORTED for the queries after it.  The
 * failing query completes at once with its error: nothing of its batch
 * will commit, so its outcome is final.  The queries before it (rolled
 * back) and after it (never run) go to the retry list in their order, and
 * when the sync arrives they are sent again together, as one new batch
 * with one sync, ahead of anything not yet sent.  If that batch fails too,
 * the same happens again, one query fewer each time, so it ends.
 * Resending one by one, a sync each, as this file once did, made one
 * duplicate email cost every batch-mate a commit of its own.
 *
 * Reads first, and why a read's result need not wait for the sync: the
 * server runs one connection's messages in order, and ends a batch
 * (commit and WAL flush, or rollback) when it reads the batch's sync,
 * before it runs the next batch's first query.  send_batch() puts a
 * batch's reads ahead of its writes, so each read sees every earlier
 * batch in its final state and nothing of its own batch: whether its
 * batch then commits or fails cannot change what the read returned, and
 * the read completes when its result arrives (q->early).  A Flush message
 * after the reads makes the server send their results at once (it
 * buffers output until a sync otherwise, so a write stuck on a lock would
 * hold them).  Writes are held for the sync as before.  Causality between
 * clients holds: a client that reads after being told "created" submits its
 * read after that batch's sync arrived, so the read goes in a later batch and
 * sees the write.  Within one client, pg_query.origin keeps a pipelined read
 * behind its own earlier write of the same batch (that read then waits
 * for the sync like a write, having possibly seen uncommitted rows), and
 * behind its own earlier write that is to run again (below).
 * What remains: a read still runs after the commit of the batch ahead of
 * it on this connection (at most one WAL flush, never its own batch's);
 * only a second connection for reads would remove that.
 *
 * Honest limit: batches already sent behind the failed one (at most
 * PG_BATCHES_IN_FLIGHT - 1) run before the resent queries, so a write
 * that was in the failed batch can land after one submitted later.
 * Client-caused outcomes do not raise errors (api.c's statements answer
 * them from their results), so a failed batch means a lock wait (below),
 * a timeout, a deadlock or a true race.
 *
 * Undone writes and the reads behind them: a write rolled back with its
 * batch, or parked after a lock wait, is marked redo until it completes.
 * A read with the same origin submitted after it must not show the state
 * before it (its answer would follow the write's in the client's
 * pipeline), yet it may have run already, in a batch sent behind the
 * failed one, or be about to be sent ahead of the write's next attempt.
 * So while redo writes exist (redo_writes, else all of this is one
 * test), a read's result from a batch that ran before such a write of
 * its origin ran again is thrown away, and a read about to be sent is
 * held: either joins the write's resend (the retry list, behind it), its
 * lock wait (lockq, below), or the next batch if the write is on the wire
 * already.  The read then runs after the write, as it would have.
 *
 * Lock waits (pg.h): with lock_wait_ms set, a statement blocked on a lock
 * fails after that long with 55P03 and its batch rolls back.  That query
 * is parked on lockq (the others are resent as above) and sent again
 * alone, with one sync of its own, so another failure rolls back nobody
 * else; the reads of its origin held behind it go in the same batch,
 * after it.  The pause before an attempt is as long as the query has
 * waited so far (PG_LOCK_RETRY_MIN_MS..PG_LOCK_RETRY_MAX_MS), so the
 * pauses double and an attempt blocks the connection at most
 * lock_wait_ms out of every lock_wait_ms + pause.  The lock waits of a
 * statement are limited to statement_timeout in all, counted from its
 * first one: the last attempt is made when that time is up, and if it
 * fails too, the query completes with that 55P03 result, at most about
 * lock_wait_ms late.  One alarm serves lockq: it fires at the earliest
 * attempt due, drops the cancelled queries (they were never committed),
 * and sends the rest that are due.  The session's lock_timeout is set
 * once the connection is prepared: the schema check and the Prepares wait
 * for locks until statement_timeout, as before (a migration in progress
 * holds schema_migrations).
 *
 * Honest limits of lock waits: each attempt holds the connection for up
 * to lock_wait_ms (the queries behind it wait that long), so k requests
 * waiting for locks cost k attempts per pause; a hot row locked for long
 * while many clients write it still slows the worker down, though far
 * less than waiting out the lock did.  Choosing what is due is
 * O(parked^2) per alarm (parked queries are few).  The loser of an
 * Idempotency-Key race (api.c) waits for the winner's transaction as a
 * lock, and is retried the same way.
 *
 * Descriptors: libpq may replace its socket while connecting (the next
 * host of a list, sslmode=prefer retrying without SSL) and closes the old
 * one itself; the new socket usually gets the same number.  A closed
 * descriptor has already left epoll, so comparing numbers cannot tell a
 * new socket from the old one (a mask change on it is a no-op or fails,
 * and the new socket is never watched: issue 6, defect 9).  So after every
 * PQconnectPoll() step the socket is registered from scratch (rewatch()):
 * a few epoll_ctl() calls per connection.  Once connected the socket stays
 * the same, and only its mask changes.
 */
#include "pg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bsd/string.h>

#include "log.h"
#include "schema.h"

enum pg_state { PG_DOWN = 0, PG_CONNECTING, PG_PREPARING, PG_READY };

/* A FIFO of queries, linked through pg_query.next. */
struct qlist {
    struct pg_query *head, *tail;
    uint32_t n;
};

/*
 * Batches sent and not yet answered before the next one waits.  Two keep
 * the backend busy (the next batch is queued behind the running one)
 * while letting a batch grow during the commit of the one before.
 */
#define PG_BATCHES_IN_FLIGHT 2

struct pg {
    struct loop *loop;
    struct loop_watch w;
    int fd; /* registered socket, -1 if none */
    PGconn *conn;
    enum pg_state state;
    char *conninfo;
    char app_name[64];
    char options[64];
    const struct pg_stmt_def *stmts;
    unsigned nstmts;
    uint32_t depth, queue_max;
    uint32_t lock_wait_ms;   /* the session's lock_timeout; 0: none */
    uint32_t lock_budget_ms; /* a statement's lock waits in all */

    /*
     * A query is on exactly one list while pg holds it.  Counted in
     * stats.in_flight: fl, grp, retry and lockq (sent at least once, or
     * held behind a query that was).
     */
    struct qlist wait;  /* accepted, no pipeline room yet */
    struct qlist batch; /* the next batch, not yet sent */
    struct qlist fl;    /* sent, result not yet in */
    struct qlist grp;   /* result in, held for the sync */
    struct qlist retry; /* to send again when the failed batch's sync arrives */
    struct qlist lockq; /* parked after a lock wait, or held behind such a
                           write; in seq order */
    struct qlist drop;  /* cancelled before being sent: to complete */
    bool wait_swept;    /* wait swept for cancelled queries this iteration */
    bool failed;        /* the oldest unfinished batch had a query fail */
    uint32_t syncs_out; /* syncs sent, not yet answered */
    uint32_t batch_sent;  /* pg_query.batch of the next batch sent (wraps) */
    uint32_t batch_done;  /* pg_query.batch of the oldest unfinished batch */
    int *nfields;         /* per statement: the columns it returns */
    uint32_t next_seq;    /* pg_query.seq of the next submission */
    uint32_t redo_writes; /* queries redo, writing, with an origin */

    unsigned prep_seen;    /* PREPARING: results read (schema, statements) */
    unsigned prep_results; /* PREPARING: results before the sync */
    struct pg_events ev;

    struct alarm reconnect, connect_timeout, lock_alarm;
    uint32_t backoff_ms;
    bool ever_ready;
    bool outage_logged;
    struct pg_stats stats;
};

static void pg_event(struct loop *loop, struct loop_watch *w, uint32_t events);
static void start_connect(struct loop *loop, void *arg);
static void lock_retry(struct loop *loop, void *arg);

/* ---- socket registration ---- */

static void
watch(struct pg *pg, uint32_t mask)
{
    int fd = PQsocket(pg->conn);

    if (fd < 0)
        return;
    if (fd == pg->fd) {
        if (loop_mod(pg->loop, &pg->w, mask) == 0)
            return;
        if (errno != ENOENT) {
            log_error("epoll_ctl(MOD) for the database socket failed: %s",
                      strerror(errno));
            return;
        }
    }
    /* a new socket (the old one, if any, was closed by libpq) */
    if (loop_add(pg->loop, &pg->w, fd, mask, pg_event) < 0) {
        log_error("epoll_ctl(ADD) for the database socket failed: %s",
                  strerror(errno));
        pg->fd = -1;
        return;
    }
    pg->fd = fd;
}

/* After a PQconnectPoll() step: the socket may be a new one (see above). */
static void
rewatch(struct pg *pg, uint32_t mask)
{
    if (pg->fd >= 0) /* EBADF (closed) or ENOENT (number reused): fine */
        (void)loop_del(pg->loop, &pg->w);
    pg->fd = -1;
    watch(pg, mask);
}

static void
unwatch(struct pg *pg)
{
    if (pg->fd >= 0 && pg->conn && PQsocket(pg->conn) == pg->fd)
        (void)loop_del(pg->loop, &pg->w);
    pg->w.fn = NULL;
    pg->fd = -1;
}

/* ---- queues ---- */

static void
push(struct qlist *l, struct pg_query *q)
{
    q->next = NULL;
    if (l->tail)
        l->tail->next = q;
    else
        l->head = q;
    l->tail = q;
    l->n++;
}

static struct pg_query *
pop(struct qlist *l)
{
    struct pg_query *q = l->head;
    if (q) {
        l->head = q->next;
        if (l->head == NULL)
            l->tail = NULL;
        q->next = NULL;
        l->n--;
    }
    return q;
}

/* Moves every query of from to the end of to. */
static void
append(struct qlist *to, struct qlist *from)
{
    if (from->head == NULL)
        return;
    if (to->tail)
        to->tail->next = from->head;
    else
        to->head = from->head;
    to->tail = from->tail;
    to->n += from->n;
    *from = (struct qlist){0};
}

/* Moves every query of from to the front of to, in their order. */
static void
prepend(struct qlist *to, struct qlist *from)
{
    if (from->head == NULL)
        return;
    append(from, to);
    *to = *from;
    *from = (struct qlist){0};
}

static void
note_sizes(struct pg *pg)
{
    pg->stats.batched = pg->batch.n;
    pg->stats.queued = pg->wait.n;
    pg->stats.in_flight = pg->fl.n + pg->grp.n + pg->retry.n + pg->lockq.n;
    if (pg->stats.in_flight > pg->stats.max_in_flight)
        pg->stats.max_in_flight = pg->stats.in_flight;
}

static bool
is_read(const struct pg *pg, const struct pg_query *q)
{
    return pg->stmts[q->stmt].read_only;
}

/* a was submitted before b (seq wraps: they are never 2^31 apart) */
static bool
seq_before(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) < 0;
}

/* q was rolled back and is to run again (see the top). */
static void
mark_redo(struct pg *pg, struct pg_query *q)
{
    if (q->redo)
        return;
    q->redo = true;
    if (q->origin && !is_read(pg, q))
        pg->redo_writes++;
}

/* q leaves pg's hands: it no longer holds anybody's reads back. */
static void
settle(struct pg *pg, struct pg_query *q)
{
    if (!q->redo)
        return;
    q->redo = false;
    if (q->origin && !is_read(pg, q))
        pg->redo_writes--;
}

/* Sends q without a sync; it joins the batch's implicit transaction. */
static int
send_query(struct pg *pg, struct pg_query *q)
{
    const struct pg_stmt_def *s = &pg->stmts[q->stmt];

    if (!PQsendQueryPrepared(pg->conn, s->name, q->nparams, q->values, NULL,
                             NULL, s->binary ? 1 : 0))
        return -1;
    q->res = NULL;
    q->batch = pg->batch_sent;
    push(&pg->fl, q);
    return 0;
}

/*
 * True when the read q of batch l must wait for l's commit: a write with
 * the same origin was submitted before it.  O(position of q), and only
 * for reads that have an origin.
 */
static bool
behind_own_write(const struct pg *pg, const struct qlist *l,
                 const struct pg_query *q)
{
    if (q->origin == NULL)
        return false;
    for (const struct pg_query *p = l->head; p != q; p = p->next)
        if (p->origin == q->origin && !pg->stmts[p->stmt].read_only)
            return true;
    return false;
}

/*
 * Sends the queries of *l (emptied) as one batch: the reads first (see
 * pg.h), then the rest in submission order, then one sync.  -1 if libpq
 * refused; the queries not sent then wait on the retry list, which lost()
 * fails with the rest.  The caller counts the batch in its statistic.
 */
static int
send_batch(struct pg *pg, struct qlist *l)
{
    struct qlist order = {0}, rest = {0};
    struct pg_query *q, *flush_at;

    if (l->head == NULL)
        return 0;
    for (q = l->head; q; q = q->next)
        q->early = pg->stmts[q->stmt].read_only && !behind_own_write(pg, l, q);
    while ((q = pop(l)) != NULL)
        push(q->early ? &order : &rest, q);
    /*
     * The server buffers its output until a sync, or until a Flush
     * message: without one, the reads' results would wait behind the
     * writes (a write stuck on a lock would hold them all).
     */
    flush_at = order.head && rest.head ? order.tail : NULL;
    append(&order, &rest);
    while ((q = pop(&order)) != NULL) {
        if (send_query(pg, q) < 0) {
            push(&pg->retry, q);
            goto refused;
        }
        if (q == flush_at && !PQsendFlushRequest(pg->conn))
            goto refused;
    }
    note_sizes(pg);
    if (!PQpipelineSync(pg->conn))
        return -1;
    pg->syncs_out++;
    pg->batch_sent++;
    return 0;
refused:
    append(&pg->retry, &order);
    note_sizes(pg);
    return -1;
}

/*
 * Moves the cancelled queries of *l to the drop list, keeping the order
 * of the others.  O(length of l).
 */
static void
sweep(struct pg *pg, struct qlist *l)
{
    struct qlist keep = {0};
    struct pg_query *q;

    while ((q = pop(l)) != NULL)
        push(q->cancelled ? &pg->drop : &keep, q);
    *l = keep;
    note_sizes(pg);
}

/*
 * Completes the dropped queries, from the loop (pg_flush(), drain()),
 * never from pg_submit() or from whoever set cancelled.  A callback may
 * submit again; anything it cancels on the way is dropped too.
 */
static void
complete_dropped(struct pg *pg)
{
    struct pg_query *q;

    while ((q = pop(&pg->drop)) != NULL) {
        pg->stats.dropped++;
        settle(pg, q);
        q->done(q, NULL, "cancelled");
    }
}

/* After results arrived: move waiting queries into the next batch. */
static void
refill(struct pg *pg)
{
    while (pg->wait.head && pg->stats.in_flight + pg->batch.n < pg->depth) {
        struct pg_query *q = pop(&pg->wait);
        push(q->cancelled ? &pg->drop : &pg->batch, q);
        note_sizes(pg);
    }
}

/* ---- connection life ---- */

/*
 * Completes every query of *l (emptied first: callbacks may call
 * pg_submit()) with no result and the reason why.
 */
static void
fail_list(struct pg *pg, struct qlist *l, const char *why)
{
    struct pg_query *q = l->head;

    *l = (struct qlist){0};
    while (q) {
        struct pg_query *next = q->next;
        q->next = NULL;
        if (q->res) {
            PQclear(q->res);
            q->res = NULL;
        }
        settle(pg, q);
        pg->stats.errors++;
        q->done(q, NULL, why);
        q = next;
    }
}

static void
fail_all(struct pg *pg, const char *why)
{
    struct qlist grp = pg->grp, fl = pg->fl, retry = pg->retry;
    struct qlist lockq = pg->lockq, batch = pg->batch, wait = pg->wait;

    /* detach every list before the first callback; the dropped ones keep
     * their list: callbacks may drop more */
    pg->grp = pg->fl = pg->retry = pg->lockq = (struct qlist){0};
    pg->batch = pg->wait = (struct qlist){0};
    pg->failed = false;
    pg->syncs_out = 0;
    loop_alarm_cancel(pg->loop, &pg->lock_alarm);
    note_sizes(pg);
    complete_dropped(pg);
    fail_list(pg, &grp, why);
    fail_list(pg, &fl, why);
    fail_list(pg, &retry, why);
    fail_list(pg, &lockq, why);
    fail_list(pg, &batch, why);
    fail_list(pg, &wait, why);
}

static void
lost(struct pg *pg, const char *why)
{
    char msg[256];

    strlcpy(msg, why, sizeof(msg));
    msg[strcspn(msg, "\n")] = '\0';
    if (!pg->outage_logged) {
        log_error("database connection %s: %s",
                  pg->state == PG_READY ? "lost" : "failed", msg);
        pg->outage_logged = true;
    } else {
        log_debug("database connection attempt failed: %s", msg);
    }
    loop_alarm_cancel(pg->loop, &pg->connect_timeout);
    unwatch(pg);
    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
    pg->state = PG_DOWN;
    fail_all(pg, "database unavailable");
    loop_alarm_set(pg->loop, &pg->reconnect, pg->backoff_ms, start_connect, pg);
    pg->backoff_ms = pg->backoff_ms * 2 > PG_BACKOFF_MAX_MS
                         ? PG_BACKOFF_MAX_MS
                         : pg->backoff_ms * 2;
}

static void
connect_timed_out(struct loop *loop, void *arg)
{
    (void)loop;
    lost(arg, "timed out connecting");
}

static void
became_ready(struct pg *pg)
{
    loop_alarm_cancel(pg->loop, &pg->connect_timeout);
    pg->state = PG_READY;
    pg->backoff_ms = PG_BACKOFF_MIN_MS;
    if (pg->ever_ready) {
        pg->stats.reconnects++;
        log_info("database connection re-established");
    } else {
        log_info("database connection ready (pipeline depth %u)", pg->depth);
    }
    pg->ever_ready = true;
    pg->outage_logged = false;
    if (pg->ev.ready)
        pg->ev.ready(pg->ev.arg);
}

/*
 * The schema is older than this build needs: not a transient failure, so
 * the next attempt waits the longest backoff; the owner decides whether
 * to give up (pg never exits the process).
 */
static void
schema_too_old(struct pg *pg, const char *diag)
{
    pg->backoff_ms = PG_BACKOFF_MAX_MS;
    lost(pg, diag);
    if (pg->ev.schema_old)
        pg->ev.schema_old(pg->ev.arg, diag);
}

/*
 * One result of PREPARING: first the schema check, then two per
 * statement (Prepare, Describe), then that of LISTEN if listen is set,
 * then that of SET lock_timeout if lock_wait_ms is set, then the sync.  Any
 * failure closes the connection through lost() (backoff, retry): a worker that
 * is serving must not exit because schema_migrations was locked or its backend
 * terminated while it reconnected.  Returns 0, or -1 once the connection is
 * closed.
 */
static int
prep_result(struct pg *pg, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    unsigned i = pg->prep_seen++;
    char msg[320];
    int rc;

    if (st == PGRES_PIPELINE_SYNC) {
        PQclear(res);
        if (i != pg->prep_results) {
            lost(pg, "protocol out of step while preparing");
            return -1;
        }
        became_ready(pg);
        return 0;
    }
    if (i == 0) {
        const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (st == PGRES_TUPLES_OK) {
            rc = schema_check(res, msg, sizeof(msg));
        } else if (st == PGRES_FATAL_ERROR && code &&
                   strcmp(code, "42P01") == 0) {
            rc = schema_check(NULL, msg, sizeof(msg)); /* nothing applied */
        } else {
            snprintf(msg, sizeof(msg), "reading schema_migrations failed: %s",
                     PQresultErrorMessage(res));
            PQclear(res);
            lost(pg, msg);
            return -1;
        }
        PQclear(res);
        if (rc < 0) {
            schema_too_old(pg, msg);
            return -1;
        }
        return 0;
    }
    if (i >= pg->prep_results || st != PGRES_COMMAND_OK) {
        if (i == 2 * pg->nstmts + 1 && pg->ev.listen)
            snprintf(msg, sizeof(msg), "LISTEN %s failed: %s", pg->ev.listen,
                     PQresultErrorMessage(res));
        else if (i > 2 * pg->nstmts)
            snprintf(msg, sizeof(msg), "setting lock_timeout failed: %s",
                     PQresultErrorMessage(res));
        else
            snprintf(msg, sizeof(msg), "%s statement %s failed: %s",
                     i % 2 ? "preparing" : "describing",
                     pg->stmts[(i - 1) / 2].name, PQresultErrorMessage(res));
        PQclear(res);
        lost(pg, msg);
        return -1;
    }
    if (i <= 2 * pg->nstmts && i % 2 == 0)
        pg->nfields[(i - 1) / 2] = PQnfields(res); /* a Describe's */
    PQclear(res);
    return 0;
}

/*
 * Connected: the schema check, a Prepare and a Describe per statement
 * (how many columns it returns: drain() checks every result against it),
 * LISTEN, the session's lock_timeout and one sync, in one write.  A statement
 * that does not prepare (a table missing) fails after the schema check has
 * already said why.  lock_timeout comes last so that the schema check and the
 * Prepares wait for locks until statement_timeout (see the top); the SET
 * commits with the rest at the sync, or the connection is closed.
 */
static void
connected(struct pg *pg)
{
    char set[64], listen[96];

    if (PQsetnonblocking(pg->conn, 1) < 0 || !PQenterPipelineMode(pg->conn))
        goto fail;
    pg->state = PG_PREPARING;
    pg->prep_seen = 0;
    pg->prep_results = 2 * pg->nstmts + 1 + (pg->lock_wait_ms ? 1 : 0) +
                       (pg->ev.listen ? 1 : 0);
    pg->batch_sent = pg->batch_done = 0;
    if (!PQsendQueryParams(pg->conn, SCHEMA_QUERY, 0, NULL, NULL, NULL, NULL,
                           0))
        goto fail;
    for (unsigned i = 0; i < pg->nstmts; i++)
        if (!PQsendPrepare(pg->conn, pg->stmts[i].name, pg->stmts[i].sql,
                           pg->stmts[i].nparams, NULL) ||
            !PQsendDescribePrepared(pg->conn, pg->stmts[i].name))
            goto fail;
    if (pg->ev.listen) {
        /* heard from the sync on, before ready (pg.h, pg_events) */
        snprintf(listen, sizeof(listen), "LISTEN %s", pg->ev.listen);
        if (!PQsendQueryParams(pg->conn, listen, 0, NULL, NULL, NULL, NULL, 0))
            goto fail;
    }
    if (pg->lock_wait_ms) {
        snprintf(set, sizeof(set), "SET lock_timeout = %u", pg->lock_wait_ms);
        if (!PQsendQueryParams(pg->conn, set, 0, NULL, NULL, NULL, NULL, 0))
            goto fail;
    }
    if (!PQpipelineSync(pg->conn))
        goto fail;
    watch(pg, EPOLLIN | EPOLLOUT);
    return;
fail:
    lost(pg, PQerrorMessage(pg->conn));
}

/* Server notices and the FATAL before a disconnect go to our log, not to
 * libpq's default of stderr. */
static void
notice(void *arg, const PGresult *res)
{
    char msg[512];

    (void)arg;
    strlcpy(msg, PQresultErrorMessage(res), sizeof(msg));
    msg[strcspn(msg, "\n")] = '\0';
    log_info("database says: %s", msg);
}

static void
start_connect(struct loop *loop, void *arg)
{
    struct pg *pg = arg;
    const char *keys[] = {"dbname", "application_name", "options", NULL};
    const char *vals[] = {pg->conninfo, pg->app_name, pg->options, NULL};

    (void)loop;
    pg->conn = PQconnectStartParams(keys, vals, 1);
    if (pg->conn == NULL) {
        lost(pg, "out of memory");
        return;
    }
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        lost(pg, PQerrorMessage(pg->conn));
        return;
    }
    PQsetNoticeReceiver(pg->conn, notice, NULL);
    pg->state = PG_CONNECTING;
    loop_alarm_set(pg->loop, &pg->connect_timeout, PG_CONNECT_TIMEOUT_MS,
                   connect_timed_out, pg);
    watch(pg, EPOLLOUT); /* libpq: after PQconnectStart, wait to write */
}

static void
connect_step(struct pg *pg)
{
    switch (PQconnectPoll(pg->conn)) {
    case PGRES_POLLING_READING:
        rewatch(pg, EPOLLIN);
        break;
    case PGRES_POLLING_WRITING:
        rewatch(pg, EPOLLOUT);
        break;
    case PGRES_POLLING_OK:
        rewatch(pg, EPOLLIN);
        connected(pg);
        break;
    default:
        lost(pg, PQerrorMessage(pg->conn));
        break;
    }
}

/* ---- undone writes and lock waits (see the top) ---- */

/* True when l holds a redo write of q's origin submitted before q. */
static bool
holds_back(const struct pg *pg, const struct qlist *l, const struct pg_query *q)
{
    for (const struct pg_query *p = l->head; p; p = p->next)
        if (p->redo && p->origin == q->origin && !is_read(pg, p) &&
            seq_before(p->seq, q->seq))
            return true;
    return false;
}

enum held_by { HELD_NOT = 0, HELD_LOCKQ, HELD_RETRY, HELD_SENT };

/*
 * Where the write is that the read q must run after, if any: parked
 * (lockq), waiting for its failed batch's sync (retry), or, when q's
 * result has just arrived (arrived), sent again behind q (fl, all of which
 * left after q).  A query not yet sent goes out after everything in fl, so
 * fl does not hold it back.  O(1) while no redo write exists.
 */
static enum held_by
held_by(const struct pg *pg, const struct pg_query *q, bool arrived)
{
    if (pg->redo_writes == 0 || q->origin == NULL || !is_read(pg, q))
        return HELD_NOT;
    if (holds_back(pg, &pg->lockq, q))
        return HELD_LOCKQ;
    if (holds_back(pg, &pg->retry, q))
        return HELD_RETRY;
    if (arrived && holds_back(pg, &pg->fl, q))
        return HELD_SENT;
    return HELD_NOT;
}

/* Inserts q into lockq in seq order.  O(length of lockq). */
static void
park(struct pg *pg, struct pg_query *q)
{
    struct pg_query **pp = &pg->lockq.head;

    while (*pp && seq_before((*pp)->seq, q->seq))
        pp = &(*pp)->next;
    q->next = *pp;
    *pp = q;
    if (q->next == NULL)
        pg->lockq.tail = q;
    pg->lockq.n++;
}

/*
 * Arms the lock alarm for the earliest attempt due in lockq, or disarms
 * it when lockq is empty.  A query held back by an earlier write of its
 * origin leaves with that write and is not counted; the head of lockq
 * never is held back, so the alarm is armed whenever lockq is not empty.
 * O(length of lockq^2).
 */
static void
arm_lock_alarm(struct pg *pg)
{
    uint64_t now = loop_now_ms(pg->loop), first = UINT64_MAX;

    if (pg->lockq.head == NULL) {
        loop_alarm_cancel(pg->loop, &pg->lock_alarm);
        return;
    }
    for (const struct pg_query *q = pg->lockq.head; q; q = q->next) {
        /* due already, or a read whose write left: at the next pass (a
         * delay of 0 could fire forever from the alarm's own callback) */
        uint64_t at = q->retry_at_ms > now ? q->retry_at_ms : now + 1;
        if (at < first && !holds_back(pg, &pg->lockq, q))
            first = at;
    }
    loop_alarm_set(pg->loop, &pg->lock_alarm,
                   first - now > PG_LOCK_RETRY_MAX_MS ? PG_LOCK_RETRY_MAX_MS
                                                      : (uint32_t)(first - now),
                   lock_retry, pg);
}

/*
 * Holds the read q back behind the write held_by() found (q's result, if
 * any, is freed: the read runs again).  HELD_SENT: q goes to the front of
 * the next batch, which leaves after that write.
 */
static void
hold_back(struct pg *pg, struct pg_query *q, enum held_by by)
{
    struct qlist one = {0};

    if (q->res) {
        PQclear(q->res);
        q->res = NULL;
    }
    switch (by) {
    case HELD_LOCKQ:
        q->retry_at_ms = 0; /* it goes with its write */
        park(pg, q);
        break;
    case HELD_RETRY:
        push(&pg->retry, q);
        break;
    case HELD_SENT:
    default:
        push(&one, q);
        prepend(&pg->batch, &one);
        break;
    }
    note_sizes(pg);
}

/*
 * Holds back every read of *l (not yet sent) that must run after a redo
 * write of its origin; keeps the order of the others.
 */
static void
hold_back_reads(struct pg *pg, struct qlist *l)
{
    struct qlist keep = {0};
    struct pg_query *q;

    if (pg->redo_writes == 0)
        return;
    while ((q = pop(l)) != NULL) {
        enum held_by by = held_by(pg, q, false);
        if (by == HELD_NOT)
            push(&keep, q);
        else
            hold_back(pg, q, by);
    }
    *l = keep;
    note_sizes(pg);
}

/*
 * q failed with res, the first failure of its batch.  If it only waited
 * too long for a lock and its lock waits have not used statement_timeout
 * up: parks it for another attempt, or drops it if it was cancelled (it
 * will not be sent again), and returns true (res stays the caller's).
 * Else false: q completes with res.
 */
static bool
lock_park(struct pg *pg, struct pg_query *q, const PGresult *res)
{
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    uint64_t now = loop_now_ms(pg->loop), waited, pause, end;

    if (pg->lock_wait_ms == 0 || code == NULL || strcmp(code, "55P03") != 0)
        return false;
    if (q->cancelled) {
        push(&pg->drop, q); /* completed at the sync (end_batch()) */
        return true;
    }
    if (!q->lock_waited) {
        /* it has been waiting since about lock_wait_ms ago */
        q->lock_waited = true;
        q->lock_since_ms = now > pg->lock_wait_ms ? now - pg->lock_wait_ms : 0;
    }
    waited = now - q->lock_since_ms;
    if (waited >= pg->lock_budget_ms)
        return false;
    pause = waited < PG_LOCK_RETRY_MIN_MS   ? PG_LOCK_RETRY_MIN_MS
            : waited > PG_LOCK_RETRY_MAX_MS ? PG_LOCK_RETRY_MAX_MS
                                            : waited;
    /* the last attempt when the budget is up, not a pause later */
    end = q->lock_since_ms + pg->lock_budget_ms;
    q->retry_at_ms = now + pause < end ? now + pause : end;
    mark_redo(pg, q);
    park(pg, q);
    note_sizes(pg);
    arm_lock_alarm(pg);
    return true;
}

/*
 * The lock alarm: drops the cancelled queries of lockq, then sends every
 * query due (a parked query whose pause is over, a read whose writes have
 * left lockq), each parked query as a batch of its own with the reads
 * held back behind it (those of its origin up to its origin's next parked
 * query).  A query of an origin whose earlier write stays parked stays
 * too.  O(length of lockq^2).
 */
static void
lock_retry(struct loop *loop, void *arg)
{
    struct pg *pg = arg;
    struct qlist due = {0}, keep = {0};
    uint64_t now = loop_now_ms(loop);
    struct pg_query *q;

    if (pg->state != PG_READY)
        return; /* lost() emptied lockq */
    sweep(pg, &pg->lockq);
    while ((q = pop(&pg->lockq)) != NULL) {
        bool ready = q->retry_at_ms <= now && !holds_back(pg, &keep, q);
        push(ready ? &due : &keep, q);
    }
    pg->lockq = keep;
    while ((q = pop(&due)) != NULL) {
        struct qlist one = {0}, rest = {0};
        struct pg_query *p;

        push(&one, q);
        while (q->origin && (p = pop(&due)) != NULL) {
            if (p->origin == q->origin && p->retry_at_ms != 0) {
                push(&rest, p);      /* the next parked query of the origin: */
                append(&rest, &due); /* its own batch, after this one */
                break;
            }
            push(p->origin == q->origin ? &one : &rest, p);
        }
        if (q->origin)
            due = rest;
        for (p = one.head; p; p = p->next)
            if (p->retry_at_ms)
                pg->stats.lock_retries++;
        if (send_batch(pg, &one) < 0) {
            append(&pg->retry, &due); /* lost() fails them */
            lost(pg, PQerrorMessage(pg->conn));
            return;
        }
    }
    note_sizes(pg);
    complete_dropped(pg);
    if (pg->state != PG_READY)
        return; /* a callback's failure path closed it */
    refill(pg); /* room freed by the dropped: sent by pg_flush() */
    arm_lock_alarm(pg);
    if (PQflush(pg->conn) == 1)
        watch(pg, EPOLLIN | EPOLLOUT);
}

/* ---- results ---- */

static bool
result_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

/*
 * Completes q, which left every list, with res (pg frees it after the
 * call).  The callback may free q and reuse its memory at once.
 */
static void
complete(struct pg *pg, struct pg_query *q, PGresult *res)
{
    q->res = NULL;
    q->next = NULL;
    settle(pg, q);
    pg->stats.queries++;
    if (!result_ok(res))
        pg->stats.errors++;
    note_sizes(pg);
    q->done(q, res, NULL);
    PQclear(res);
}

/*
 * One query's result (q has left fl).  In a batch without a failure so
 * far, a read sent ahead of the writes completes at once (unless an undone
 * write holds it back: it runs again), and any other success is held for
 * the sync (nobody is told "created" before the commit); a failure
 * completes q at once, or parks it after a lock wait, and sends
 * everything held to the retry list; after a failure every result is
 * PGRES_PIPELINE_ABORTED and its query joins the retry list too.
 */
static void
one_result(struct pg *pg, struct pg_query *q, PGresult *res)
{
    if (!pg->failed && result_ok(res)) {
        if (q->early) {
            enum held_by by = held_by(pg, q, true);
            if (by != HELD_NOT) {
                PQclear(res); /* ran before its origin's write ran again */
                hold_back(pg, q, by);
                return;
            }
            complete(pg, q, res);
            return;
        }
        q->res = res;
        push(&pg->grp, q);
        return;
    }
    if (!pg->failed) {
        /* the first failure: everything held before it was rolled back */
        pg->failed = true;
        for (struct pg_query *h = pg->grp.head; h; h = h->next) {
            PQclear(h->res);
            h->res = NULL;
            mark_redo(pg, h);
        }
        append(&pg->retry, &pg->grp);
        if (PQresultStatus(res) != PGRES_PIPELINE_ABORTED) {
            if (lock_park(pg, q, res)) {
                PQclear(res);
                return;
            }
            complete(pg, q, res); /* the failing query: its outcome is final */
            return;
        }
    }
    PQclear(res); /* PGRES_PIPELINE_ABORTED: it never ran */
    mark_redo(pg, q);
    push(&pg->retry, q);
}

/*
 * The oldest batch's sync was answered with an error (res) before
 * PGRES_PIPELINE_SYNC: all its queries ran, and then its commit failed,
 * so everything it wrote rolled back.  Commit takes locks too: NOTIFY's
 * (pg_notify() in a write) serialises the commits of every session that
 * notifies, and a deferred check may wait for a row; with lock_timeout set
 * such a wait fails with 55P03 here, after the last query's result.  The
 * reads sent ahead of the writes completed already (their results do
 * not depend on the commit).  As for a query that fails, one query alone
 * takes the failure: the first held, which is parked after a lock wait
 * (it then commits alone, as often as needed) or completes with res; the
 * others are rolled back and resent at the sync.  So a commit that keeps
 * failing costs a query each time, and ends.
 */
static void
commit_failed(struct pg *pg, PGresult *res)
{
    struct pg_query *first;

    if (pg->failed) { /* rolled back already; not expected from a server */
        PQclear(res);
        return;
    }
    pg->failed = true;
    first = pop(&pg->grp);
    for (struct pg_query *h = pg->grp.head; h; h = h->next) {
        PQclear(h->res);
        h->res = NULL;
        mark_redo(pg, h);
    }
    append(&pg->retry, &pg->grp);
    note_sizes(pg);
    if (first == NULL) { /* reads only, answered */
        PQclear(res);
        return;
    }
    PQclear(first->res);
    first->res = NULL;
    if (lock_park(pg, first, res)) {
        PQclear(res);
        return;
    }
    complete(pg, first, res);
}

/*
 * A sync arrived: the oldest batch is over.  Committed: every held query
 * completes with its result, in order.  Failed: the retry list goes out
 * again as one batch.  Returns -1 if libpq refused to send (lost).
 */
static int
end_batch(struct pg *pg)
{
    struct qlist held = pg->grp;

    if (pg->failed) {
        struct qlist again = pg->retry;
        int rc = 0;
        pg->failed = false;
        pg->retry = (struct qlist){0};
        sweep(pg, &again); /* answered meanwhile (504): not worth resending */
        hold_back_reads(pg, &again); /* behind a write parked meanwhile */
        if (again.head) {
            pg->stats.batch_retries++;
            pg->stats.resent += again.n;
            rc = send_batch(pg, &again);
            if (rc == 0)
                pg->stats.batches++;
        }
        if (rc == 0)
            complete_dropped(pg);
        return rc;
    }
    pg->grp = (struct qlist){0};
    while (held.head) {
        struct pg_query *q = pop(&held);
        enum held_by by = held_by(pg, q, true);
        if (by != HELD_NOT) {
            hold_back(pg, q, by); /* its origin's earlier write is undone */
            continue;
        }
        complete(pg, q, q->res);
    }
    return 0;
}

/* Reads every result libpq has; -1 when the protocol is out of step. */
static int
drain(struct pg *pg)
{
    int nulls = 0;

    while (pg->conn && !PQisBusy(pg->conn)) {
        PGresult *res = PQgetResult(pg->conn);
        struct pg_query *q;

        if (res == NULL) {
            /* the end of one query's results.  Two NULLs in a row mean
             * libpq has nothing more for now. */
            if (++nulls > 1)
                break;
            continue;
        }
        nulls = 0;
        if (pg->state == PG_PREPARING) {
            if (prep_result(pg, res) < 0)
                return 0; /* closed, and already handled */
            continue;
        }
        if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            if (pg->syncs_out == 0 ||
                (pg->fl.head && pg->fl.head->batch == pg->batch_done)) {
                log_error("database sent a sync out of step");
                return -1;
            }
            pg->syncs_out--;
            pg->batch_done++;
            if (end_batch(pg) < 0)
                return -1;
            continue;
        }
        q = pg->fl.head;
        if (q == NULL || q->batch != pg->batch_done) {
            /* every query of the oldest batch has its result: this one
             * is its sync's, an error of its commit */
            if (pg->syncs_out == 0 ||
                PQresultStatus(res) != PGRES_FATAL_ERROR) {
                PQclear(res);
                log_error("database sent a result nobody waits for");
                return -1;
            }
            commit_failed(pg, res);
            continue;
        }
        if (result_ok(res) && PQnfields(res) != pg->nfields[q->stmt]) {
            /* another statement's result: the stream is out of step */
            log_error("database sent a result of %d columns for statement "
                      "%s, which returns %d",
                      PQnfields(res), pg->stmts[q->stmt].name,
                      pg->nfields[q->stmt]);
            PQclear(res);
            return -1;
        }
        (void)pop(&pg->fl);
        one_result(pg, q, res);
    }
    return 0;
}

/* Hands every notification libpq has parsed to the owner (pg.h). */
static void
notifications(struct pg *pg)
{
    PGnotify *n;

    while (pg->conn && (n = PQnotifies(pg->conn)) != NULL) {
        pg->stats.notifies++;
        if (pg->ev.notify)
            pg->ev.notify(pg->ev.arg, n->extra);
        PQfreemem(n);
    }
}

static void
pg_event(struct loop *loop, struct loop_watch *w, uint32_t events)
{
    struct pg *pg = container_of(w, struct pg, w);

    (void)loop;
    if (pg->state == PG_CONNECTING) {
        connect_step(pg);
        return;
    }
    if (pg->conn == NULL)
        return;
    if (events & EPOLLOUT) {
        int r = PQflush(pg->conn);
        if (r < 0) {
            lost(pg, PQerrorMessage(pg->conn));
            return;
        }
        if (r == 0)
            watch(pg, EPOLLIN);
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (!PQconsumeInput(pg->conn)) {
            lost(pg, PQerrorMessage(pg->conn));
            return;
        }
        if (drain(pg) < 0) {
            lost(pg, "protocol out of step");
            return;
        }
        if (pg->conn == NULL)
            return; /* a callback's failure path closed it */
        notifications(pg);
        if (PQstatus(pg->conn) == CONNECTION_BAD) {
            lost(pg, PQerrorMessage(pg->conn));
            return;
        }
        if (pg->state == PG_READY)
            refill(pg); /* sent by pg_flush() before the loop sleeps */
        if (PQflush(pg->conn) == 1)
            watch(pg, EPOLLIN | EPOLLOUT);
    }
}

/* ---- public ---- */

struct pg *
pg_new(struct loop *loop, const char *conninfo, const struct pg_stmt_def *stmts,
       unsigned nstmts, uint32_t statement_timeout_ms, uint32_t lock_wait_ms,
       uint32_t depth, uint32_t queue_max, const char *app_name,
       const struct pg_events *ev)
{
    struct pg *pg = calloc(1, sizeof(*pg));

    if (pg == NULL)
        return NULL;
    pg->conninfo = strdup(conninfo);
    pg->nfields = calloc(nstmts ? nstmts : 1, sizeof(*pg->nfields));
    if (pg->conninfo == NULL || pg->nfields == NULL) {
        free(pg->conninfo);
        free(pg->nfields);
        free(pg);
        return NULL;
    }
    if (ev)
        pg->ev = *ev;
    pg->loop = loop;
    pg->fd = -1;
    pg->stmts = stmts;
    pg->nstmts = nstmts;
    pg->depth = depth ? depth : 1;
    pg->queue_max = queue_max;
    pg->lock_wait_ms = lock_wait_ms;
    pg->lock_budget_ms = statement_timeout_ms;
    pg->backoff_ms = PG_BACKOFF_MIN_MS;
    strlcpy(pg->app_name, app_name, sizeof(pg->app_name));
    snprintf(pg->options, sizeof(pg->options),
             "-c statement_timeout=%u -c TimeZone=UTC", statement_timeout_ms);
    start_connect(loop, pg);
    return pg;
}

void
pg_free(struct pg **pgp)
{
    struct pg *pg = *pgp;

    if (pg == NULL)
        return;
    loop_alarm_cancel(pg->loop, &pg->reconnect);
    loop_alarm_cancel(pg->loop, &pg->connect_timeout);
    loop_alarm_cancel(pg->loop, &pg->lock_alarm);
    unwatch(pg);
    if (pg->conn)
        PQfinish(pg->conn);
    pg->conn = NULL;
    fail_all(pg, "worker exiting");
    free(pg->conninfo);
    free(pg->nfields);
    free(pg);
    *pgp = NULL;
}

enum pg_submit_result
pg_submit(struct pg *pg, struct pg_query *q)
{
    if (pg == NULL || pg->state != PG_READY)
        return PG_E_DOWN;
    q->res = NULL;
    q->redo = false;
    q->lock_waited = false;
    q->retry_at_ms = 0;
    q->seq = pg->next_seq++;
    if (pg->stats.in_flight + pg->batch.n < pg->depth &&
        pg->wait.head == NULL) {
        push(&pg->batch, q);
        note_sizes(pg);
        return PG_OK;
    }
    if (pg->wait.n >= pg->queue_max && !pg->wait_swept) {
        /* answered requests (504) may hold the places: once per loop
         * iteration at most, since under overload the sweep finds none */
        pg->wait_swept = true;
        sweep(pg, &pg->wait);
    }
    if (pg->wait.n >= pg->queue_max)
        return PG_E_FULL;
    push(&pg->wait, q);
    note_sizes(pg);
    return PG_OK;
}

void
pg_flush(struct pg *pg)
{
    if (pg == NULL)
        return;
    pg->wait_swept = false;
    complete_dropped(pg);
    if (pg->state != PG_READY || pg->batch.head == NULL)
        return;
    /* while earlier batches are out, let this one grow: the queries that
     * arrive during a commit share the next one (adaptive group commit) */
    if (pg->syncs_out >= PG_BATCHES_IN_FLIGHT)
        return;
    /* cancelled queries are not sent; their callbacks run first, so
     * that whatever they submit goes out with this batch */
    sweep(pg, &pg->batch);
    while (pg->drop.head) {
        complete_dropped(pg);
        sweep(pg, &pg->batch);
    }
    /* a read must not run before its origin's undone write runs again */
    hold_back_reads(pg, &pg->batch);
    if (pg->batch.head == NULL)
        return;
    if (send_batch(pg, &pg->batch) < 0) {
        lost(pg, PQerrorMessage(pg->conn));
        return;
    }
    pg->stats.batches++;
    if (PQflush(pg->conn) == 1)
        watch(pg, EPOLLIN | EPOLLOUT);
}

bool
pg_is_ready(const struct pg *pg)
{
    return pg && pg->state == PG_READY;
}

const struct pg_stats *
pg_get_stats(const struct pg *pg)
{
    return &pg->stats;
}

/* ---- binary values ---- */

/* Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch. */
#define PG_EPOCH_UNIX_US INT64_C(946684800000000)

/* The 8 big-endian bytes of row r, column c: true, or false if not 8. */
static bool
get_be64(const PGresult *res, int r, int c, int64_t *out)
{
    const unsigned char *p;
    uint64_t v = 0;

    if (PQgetisnull(res, r, c) || PQgetlength(res, r, c) != 8)
        return false;
    p = (const unsigned char *)PQgetvalue(res, r, c);
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    *out = (int64_t)v;
    return true;
}

int64_t
pg_get_int8(const PGresult *res, int r, int c)
{
    int64_t v;

    return get_be64(res, r, c, &v) ? v : 0;
}

int64_t
pg_get_ts_us(const PGresult *res, int r, int c)
{
    int64_t v;

    if (!get_be64(res, r, c, &v))
        return 0;
    if (v > INT64_MAX - PG_EPOCH_UNIX_US)
        return INT64_MAX;
    if (v == INT64_MIN)
        return INT64_MIN;
    return v + PG_EPOCH_UNIX_US;
}

bool
pg_get_bool(const PGresult *res, int r, int c)
{
    return !PQgetisnull(res, r, c) && PQgetlength(res, r, c) == 1 &&
           PQgetvalue(res, r, c)[0] != 0;
}
