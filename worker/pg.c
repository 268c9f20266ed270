/*
 * pg.c - see pg.h for the states and the contract.
 *
 * Result matching in pipeline mode: for every query we send
 * Query + Sync, so the server answers with the query's result, then libpq
 * returns NULL (end of that query), then a PGRES_PIPELINE_SYNC result.
 * The head of the in-flight FIFO is popped and completed by its result;
 * the SYNC that follows only clears awaiting_sync.
 *
 * Descriptors: libpq may replace its socket while connecting (and closes the
 * old one itself), so after every PQconnectPoll() the socket is compared
 * with the registered one; a closed descriptor has already left epoll, so
 * we only ever unregister a socket that libpq still holds open.
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

/* internal queries sent while PREPARING */
enum { INTERNAL_SCHEMA = 0, INTERNAL_PREPARE = 1 };

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

    struct pg_query *fl_head, *fl_tail; /* sent, result not yet in */
    bool awaiting_sync; /* the last completed query's SYNC is due */
    struct pg_query *wait_head, *wait_tail;

    struct pg_query *internal; /* nstmts + 1, used while PREPARING */
    unsigned internal_left;

    struct alarm reconnect, connect_timeout;
    uint32_t backoff_ms;
    bool ever_ready;
    bool outage_logged;
    struct pg_stats stats;
};

static void pg_event(struct loop *loop, struct loop_watch *w, uint32_t events);
static void start_connect(struct loop *loop, void *arg);

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
push(struct pg_query **head, struct pg_query **tail, struct pg_query *q)
{
    q->next = NULL;
    if (*tail)
        (*tail)->next = q;
    else
        *head = q;
    *tail = q;
}

static struct pg_query *
pop(struct pg_query **head, struct pg_query **tail)
{
    struct pg_query *q = *head;
    if (q) {
        *head = q->next;
        if (*head == NULL)
            *tail = NULL;
        q->next = NULL;
    }
    return q;
}

static int
send_query(struct pg *pg, struct pg_query *q)
{
    const struct pg_stmt_def *s = &pg->stmts[q->stmt];

    if (!PQsendQueryPrepared(pg->conn, s->name, q->nparams, q->values, NULL,
                             NULL, 0) ||
        !PQpipelineSync(pg->conn))
        return -1;
    push(&pg->fl_head, &pg->fl_tail, q);
    pg->stats.in_flight++;
    if (pg->stats.in_flight > pg->stats.max_in_flight)
        pg->stats.max_in_flight = pg->stats.in_flight;
    return 0;
}

/* After results arrived: move waiting queries into the pipeline. */
static int
refill(struct pg *pg)
{
    while (pg->wait_head && pg->stats.in_flight < pg->depth) {
        struct pg_query *q = pop(&pg->wait_head, &pg->wait_tail);
        pg->stats.queued--;
        if (send_query(pg, q) < 0) {
            /* put it back: the connection is failing, lost() answers it */
            q->next = pg->wait_head;
            pg->wait_head = q;
            if (pg->wait_tail == NULL)
                pg->wait_tail = q;
            pg->stats.queued++;
            return -1;
        }
    }
    return 0;
}

/* ---- connection life ---- */

static void
fail_all(struct pg *pg, const char *why)
{
    struct pg_query *q;

    /* detach the lists first: callbacks may call pg_submit() */
    struct pg_query *fl = pg->fl_head, *wt = pg->wait_head;
    pg->fl_head = pg->fl_tail = NULL;
    pg->wait_head = pg->wait_tail = NULL;
    pg->stats.in_flight = 0;
    pg->stats.queued = 0;
    pg->awaiting_sync = false;
    while ((q = fl) != NULL) {
        fl = q->next;
        if (q->done) {
            pg->stats.errors++;
            q->done(q, NULL, why);
        }
    }
    while ((q = wt) != NULL) {
        wt = q->next;
        pg->stats.errors++;
        q->done(q, NULL, why);
    }
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
}

/* Completion of the internal queries sent while PREPARING. */
static void
internal_done(struct pg_query *q, const PGresult *res, const char *err)
{
    struct pg *pg = q->arg;
    char diag[256];

    if (res == NULL) /* connection failed meanwhile: lost() handles it */
        return;
    (void)err;
    if (q->stmt == INTERNAL_SCHEMA) {
        ExecStatusType st = PQresultStatus(res);
        const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (st == PGRES_FATAL_ERROR && code && strcmp(code, "42P01") == 0)
            res = NULL; /* no schema_migrations: nothing applied */
        else if (st != PGRES_TUPLES_OK) {
            log_error("reading schema_migrations failed: %s",
                      PQresultErrorMessage(res));
            exit(2);
        }
        if (schema_check(res, diag, sizeof(diag)) < 0) {
            log_error("%s; this worker refuses to serve", diag);
            exit(2);
        }
    } else if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        log_error("preparing statement %s failed: %s",
                  pg->stmts[q->stmt - INTERNAL_PREPARE].name,
                  PQresultErrorMessage(res));
        exit(2);
    }
    if (--pg->internal_left == 0)
        became_ready(pg);
}

static void
connected(struct pg *pg)
{
    struct pg_query *q;

    if (PQsetnonblocking(pg->conn, 1) < 0 || !PQenterPipelineMode(pg->conn)) {
        lost(pg, PQerrorMessage(pg->conn));
        return;
    }
    pg->state = PG_PREPARING;
    pg->internal_left = pg->nstmts + 1;

    /* the schema check goes first: statements need the tables */
    q = &pg->internal[0];
    q->stmt = INTERNAL_SCHEMA;
    if (!PQsendQueryParams(pg->conn, SCHEMA_QUERY, 0, NULL, NULL, NULL, NULL,
                           0) ||
        !PQpipelineSync(pg->conn)) {
        lost(pg, PQerrorMessage(pg->conn));
        return;
    }
    push(&pg->fl_head, &pg->fl_tail, q);
    for (unsigned i = 0; i < pg->nstmts; i++) {
        q = &pg->internal[i + 1];
        q->stmt = INTERNAL_PREPARE + i;
        if (!PQsendPrepare(pg->conn, pg->stmts[i].name, pg->stmts[i].sql,
                           pg->stmts[i].nparams, NULL) ||
            !PQpipelineSync(pg->conn)) {
            lost(pg, PQerrorMessage(pg->conn));
            return;
        }
        push(&pg->fl_head, &pg->fl_tail, q);
    }
    watch(pg, EPOLLIN | EPOLLOUT);
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
        watch(pg, EPOLLIN);
        break;
    case PGRES_POLLING_WRITING:
        watch(pg, EPOLLOUT);
        break;
    case PGRES_POLLING_OK:
        watch(pg, EPOLLIN);
        connected(pg);
        break;
    default:
        lost(pg, PQerrorMessage(pg->conn));
        break;
    }
}

/* ---- results ---- */

/*
 * Takes the head query off the in-flight list and completes it.  It leaves
 * the list before its callback runs: the callback may free the query's
 * memory and reuse it for a new query at once (found by bench-db: a reused
 * query pushed while still at the head cut the list short).  Its SYNC is
 * then expected next (pg->awaiting_sync).
 */
static void
complete_head(struct pg *pg, const PGresult *res, const char *err)
{
    struct pg_query *q = pop(&pg->fl_head, &pg->fl_tail);
    bool internal = q->done == internal_done;

    pg->awaiting_sync = true;
    if (!internal) {
        pg->stats.in_flight--;
        pg->stats.queries++;
        if (res == NULL || PQresultStatus(res) == PGRES_FATAL_ERROR)
            pg->stats.errors++;
    }
    if (q->done)
        q->done(q, res, err);
}

static int
drain(struct pg *pg)
{
    int nulls = 0;

    while (pg->conn && !PQisBusy(pg->conn)) {
        PGresult *res = PQgetResult(pg->conn);

        if (res == NULL) {
            /* end of one query's results; its SYNC follows.  Two NULLs in
             * a row mean libpq has nothing more for now. */
            if ((pg->fl_head == NULL && !pg->awaiting_sync) || ++nulls > 1)
                break;
            continue;
        }
        nulls = 0;
        if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            if (pg->awaiting_sync) {
                pg->awaiting_sync = false;
                continue;
            }
            /* a query that produced no result at all */
            if (pg->fl_head == NULL) {
                log_error("database sent a sync nobody waits for");
                return -1;
            }
            complete_head(pg, NULL, "no result from the database");
            pg->awaiting_sync = false;
            continue;
        }
        if (pg->awaiting_sync || pg->fl_head == NULL) {
            PQclear(res);
            log_error("database sent a result nobody waits for");
            return -1;
        }
        complete_head(pg, res, NULL);
        PQclear(res);
    }
    return 0;
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
        if (PQstatus(pg->conn) == CONNECTION_BAD) {
            lost(pg, PQerrorMessage(pg->conn));
            return;
        }
        if (pg->state == PG_READY && refill(pg) < 0) {
            lost(pg, PQerrorMessage(pg->conn));
            return;
        }
        if (PQflush(pg->conn) == 1)
            watch(pg, EPOLLIN | EPOLLOUT);
    }
}

/* ---- public ---- */

struct pg *
pg_new(struct loop *loop, const char *conninfo, const struct pg_stmt_def *stmts,
       unsigned nstmts, uint32_t statement_timeout_ms, uint32_t depth,
       uint32_t queue_max, const char *app_name)
{
    struct pg *pg = calloc(1, sizeof(*pg));

    if (pg == NULL)
        return NULL;
    pg->internal = calloc(nstmts + 1, sizeof(*pg->internal));
    pg->conninfo = strdup(conninfo);
    if (pg->internal == NULL || pg->conninfo == NULL) {
        free(pg->internal);
        free(pg->conninfo);
        free(pg);
        return NULL;
    }
    for (unsigned i = 0; i < nstmts + 1; i++) {
        pg->internal[i].done = internal_done;
        pg->internal[i].arg = pg;
    }
    pg->loop = loop;
    pg->fd = -1;
    pg->stmts = stmts;
    pg->nstmts = nstmts;
    pg->depth = depth ? depth : 1;
    pg->queue_max = queue_max;
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
    unwatch(pg);
    if (pg->conn)
        PQfinish(pg->conn);
    pg->conn = NULL;
    fail_all(pg, "worker exiting");
    free(pg->internal);
    free(pg->conninfo);
    free(pg);
    *pgp = NULL;
}

enum pg_submit_result
pg_submit(struct pg *pg, struct pg_query *q)
{
    if (pg == NULL || pg->state != PG_READY)
        return PG_E_DOWN;
    if (pg->stats.in_flight < pg->depth && pg->wait_head == NULL) {
        if (send_query(pg, q) < 0) {
            /* the socket is failing; answer this one now as "down" and
             * let the next event tear the connection down */
            log_error("sending a query failed: %s", PQerrorMessage(pg->conn));
            return PG_E_DOWN;
        }
        if (PQflush(pg->conn) == 1)
            watch(pg, EPOLLIN | EPOLLOUT);
        return PG_OK;
    }
    if (pg->stats.queued >= pg->queue_max)
        return PG_E_FULL;
    push(&pg->wait_head, &pg->wait_tail, q);
    pg->stats.queued++;
    return PG_OK;
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
