/*
 * api.c - statements, the request life cycle, and validation shared by
 * the users and orders handlers (see api_priv.h).
 *
 * SQL: every statement is prepared once per connection (SPEC 6).  Writes
 * and their audit rows are one statement with data-modifying CTEs, so they
 * commit together or not at all.
 *
 * Outcomes a client can cause on purpose are answered from what the
 * statement returns, never from an error it raises: a raised error fails
 * the pipeline batch it travels in, and the batch-mates are sent again
 * (pg.h), so one client sending duplicates would slow everybody down
 * (SPEC 6).  Hence ON CONFLICT DO NOTHING for a taken email (no row: 409),
 * and existence checks inside the statements: the email of a PATCH, the
 * user of an order (422), the orders of a deleted user (409).  The checks
 * see the statement's snapshot, so a true race can still raise (23505 on
 * a PATCH, 23503 on a delete or an order); the callbacks keep mapping
 * those to the same answers.
 *
 * Idempotency-Key, first attempts racing: order_create inserts the key
 * row first, with ON CONFLICT (key) DO NOTHING, under an order id taken
 * from the sequence, and inserts the order only if the key row went in.
 * A loser's INSERT waits for the winner's transaction and then inserts
 * nothing, without an error: one order, ever.  Its statement cannot see
 * the winner's rows (its snapshot predates them), so it returns outcome
 * 'r' and the callback reads the key in a new statement (order_by_key).
 *
 * Results come back in binary format (pg_stmt_def.binary): PostgreSQL
 * formats nothing, and the callbacks decode int8, bool and timestamptz
 * with pg_get_*() and format them here (json_i64, json_ts_us), which is
 * independent of the session time zone.  In text format the timestamp
 * alone cost the server more than the rest of a list query: to_char(),
 * or extract(epoch) * 1000000, which is numeric arithmetic per row and,
 * below a LIMIT ... OFFSET, per skipped row as well.
 *
 * Shared cache (shm/cache.h, SPEC 5 and 12).  GET /users/{id} and GET
 * /orders/{id} look in the cache first; a hit is answered at once: the
 * stored body is copied straight from the mapping into the connection's
 * output, and the copy is validated before it is committed (a torn copy
 * is dropped and the database asked); no database, no allocation.  A miss
 * takes a ticket before its query is sent and fills the cache with its
 * 200 answer; a write that committed meanwhile invalidated the key after
 * the ticket was taken, so that fill is refused or never served (cache.c
 * explains the epochs).  Writes (PATCH and DELETE of a user, an order's
 * status) invalidate their key when their result arrives, i.e. after the
 * commit (pg.h: a write's result waits for its batch's sync) and before
 * the answer is sent; also when the result is lost (503), as the write
 * may have committed.  Each of these statements also calls pg_notify() on
 * API_CACHE_CHANNEL in its transaction (in the RETURNING list of its
 * data-modifying CTE, so it runs once per row changed, and only if the
 * transaction commits is it delivered); every worker LISTENs on its own
 * connection (pg.h) and invalidates what any host changed
 * (api_cache_notify).  Hits are served only while this worker's
 * connection is READY, i.e. listening.  After a reconnect, notifications
 * may have been missed, so the worker flushes the cache (one atomic add
 * of the flush epoch; api_cache_ready): everything filled or ticketed
 * before is dropped.  The LISTEN is in place before the flush, so a
 * commit is either before the flush (dropped) or notified.  A worker's
 * first connection flushes too: during a respawn no worker of this host
 * may have been listening.  A read pipelined behind an unanswered
 * request of the same connection skips the cache: it must not overtake
 * that client's own earlier write (pg.h, origin).
 */
#include "api.h"
#include "api_priv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define USER_COLS "id, name, email, created_at"
#define ORDER_COLS "id, user_id, amount_cents, currency, status, created_at"

/* Flags: every statement returns binary results (see the top). */
#define READ .read_only = true, .binary = true
#define WRITE .read_only = false, .binary = true

static const struct pg_stmt_def stmts[S_COUNT] = {
    [S_USER_GET] = {"user_get", "SELECT " USER_COLS " FROM users WHERE id = $1",
                    1, READ},
    [S_USER_LIST] = {"user_list",
                     "SELECT " USER_COLS " FROM users ORDER BY id "
                     "LIMIT $1 OFFSET $2",
                     2, READ},
    [S_USER_CREATE] =
        {"user_create",
         "WITH u AS (INSERT INTO users (name, email) VALUES ($1, $2) "
         "ON CONFLICT ((lower(email))) DO NOTHING "
         "RETURNING id, name, email, created_at), "
         "a AS (INSERT INTO audit_log (user_id, action, entity, entity_id, "
         "detail) SELECT id, 'created', 'user', id, "
         "jsonb_build_object('name', name, 'email', email) FROM u) "
         "SELECT " USER_COLS " FROM u",
         2, WRITE},
    [S_USER_PATCH] =
        {"user_patch",
         "WITH old AS (SELECT id, name, email FROM users WHERE id = $1 "
         "FOR UPDATE), "
         "t AS (SELECT EXISTS (SELECT 1 FROM users WHERE "
         "lower(email) = lower($3) AND id <> $1) AS taken), "
         "u AS (UPDATE users SET name = coalesce($2, users.name), "
         "email = coalesce($3, users.email), updated_at = now() FROM old, t "
         "WHERE users.id = old.id AND NOT t.taken "
         "RETURNING users.id, users.name, users.email, users.created_at, "
         "pg_notify('" API_CACHE_CHANNEL "', 'user:' || users.id) AS n), "
         "a AS (INSERT INTO audit_log (user_id, action, entity, entity_id, "
         "detail) SELECT u.id, 'updated', 'user', u.id, jsonb_build_object("
         "'before', jsonb_build_object('name', old.name, 'email', old.email), "
         "'after', jsonb_build_object('name', u.name, 'email', u.email)) "
         "FROM u, old) "
         "SELECT t.taken, u.id, u.name, u.email, u.created_at "
         "FROM old CROSS JOIN t LEFT JOIN u ON true",
         3, WRITE},
    [S_USER_DELETE] =
        {"user_delete",
         "WITH b AS (SELECT EXISTS (SELECT 1 FROM orders WHERE user_id = $1) "
         "AS busy), "
         "d AS (DELETE FROM users WHERE id = $1 AND NOT (SELECT busy FROM b) "
         "RETURNING id, name, email, "
         "pg_notify('" API_CACHE_CHANNEL "', 'user:' || id) AS n), "
         "a AS (INSERT INTO audit_log (user_id, action, entity, entity_id, "
         "detail) SELECT id, 'deleted', 'user', id, "
         "jsonb_build_object('name', name, 'email', email) FROM d) "
         "SELECT b.busy, d.id FROM b LEFT JOIN d ON true "
         "WHERE b.busy OR d.id IS NOT NULL",
         1, WRITE},
    [S_USER_ORDERS] =
        {"user_orders",
         "SELECT u.id, o.id, o.user_id, o.amount_cents, o.currency, "
         "o.status, o.created_at FROM users u "
         "LEFT JOIN LATERAL (SELECT * FROM orders WHERE user_id = u.id "
         "ORDER BY id LIMIT $2 OFFSET $3) o ON true "
         "WHERE u.id = $1 ORDER BY o.id",
         3, READ},
    [S_USER_AUDIT] =
        {"user_audit",
         "SELECT k.known, a.id, a.action, a.entity, a.entity_id, "
         "a.detail::text, a.created_at FROM (SELECT "
         "EXISTS (SELECT 1 FROM users WHERE id = $1) OR "
         "EXISTS (SELECT 1 FROM audit_log WHERE user_id = $1) AS known) k "
         "LEFT JOIN LATERAL (SELECT * FROM audit_log WHERE user_id = $1 "
         "ORDER BY id DESC LIMIT $2 OFFSET $3) a ON true "
         "ORDER BY a.id DESC",
         3, READ},
    [S_ORDER_CREATE] =
        {"order_create",
         "WITH prev AS (SELECT k.request_hash, o.* FROM idempotency_keys k "
         "JOIN orders o ON o.id = k.order_id WHERE k.key = $4), "
         "usr AS (SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS known), "
         "n AS (SELECT nextval(pg_get_serial_sequence('orders', 'id')) AS id "
         "FROM usr WHERE usr.known AND NOT EXISTS (SELECT 1 FROM prev)), "
         "k AS (INSERT INTO idempotency_keys (key, request_hash, order_id) "
         "SELECT $4, $5, id FROM n WHERE $4::text IS NOT NULL "
         "ON CONFLICT (key) DO NOTHING RETURNING order_id), "
         "o AS (INSERT INTO orders (id, user_id, amount_cents, currency) "
         "OVERRIDING SYSTEM VALUE SELECT id, $1, $2, $3 FROM n "
         "WHERE $4::text IS NULL OR id IN (SELECT order_id FROM k) "
         "RETURNING *), "
         "a AS (INSERT INTO audit_log (user_id, action, entity, entity_id, "
         "detail) SELECT user_id, 'order_created', 'order', id, "
         "jsonb_build_object('amount_cents', amount_cents, 'currency', "
         "currency) FROM o) "
         "SELECT 'c', NULL::text, " ORDER_COLS " FROM o "
         "UNION ALL SELECT 'k', request_hash, " ORDER_COLS " FROM prev "
         "UNION ALL SELECT CASE WHEN known THEN 'r' ELSE 'u' END, NULL, "
         "NULL, NULL, NULL, NULL, NULL, NULL FROM usr "
         "WHERE NOT EXISTS (SELECT 1 FROM o) "
         "AND NOT EXISTS (SELECT 1 FROM prev)",
         5, WRITE},
    [S_ORDER_BY_KEY] =
        {"order_by_key",
         "SELECT k.request_hash, o.id, o.user_id, o.amount_cents, "
         "o.currency, o.status, o.created_at "
         "FROM idempotency_keys k JOIN orders o ON o.id = k.order_id "
         "WHERE k.key = $1",
         1, READ},
    [S_ORDER_GET] = {"order_get",
                     "SELECT " ORDER_COLS " FROM orders WHERE id = $1", 1,
                     READ},
    [S_ORDER_STATUS] =
        {"order_status",
         "WITH cur AS (SELECT id, status FROM orders WHERE id = $1 "
         "FOR UPDATE), "
         "upd AS (UPDATE orders o SET status = $2, updated_at = now() "
         "FROM cur WHERE o.id = cur.id AND cur.status = 'pending' "
         "RETURNING o.*, "
         "pg_notify('" API_CACHE_CHANNEL "', 'order:' || o.id) AS n), "
         "a AS (INSERT INTO audit_log (user_id, action, entity, entity_id, "
         "detail) SELECT user_id, 'order_status', 'order', id, "
         "jsonb_build_object('from', 'pending', 'to', status) FROM upd) "
         "SELECT cur.status, upd.id, upd.user_id, upd.amount_cents, "
         "upd.currency, upd.status, upd.created_at FROM cur "
         "LEFT JOIN upd ON true",
         2, WRITE},
};

#undef READ
#undef WRITE

const struct pg_stmt_def *
api_statements(unsigned *n)
{
    *n = S_COUNT;
    return stmts;
}

int
api_register(struct router *r, struct api *api)
{
    static const struct {
        enum http_method m;
        const char *pattern;
        handler_fn fn;
    } routes[] = {
        {HTTP_GET, "/users", api_users_list},
        {HTTP_POST, "/users", api_users_create},
        {HTTP_GET, "/users/{id}", api_users_get},
        {HTTP_PATCH, "/users/{id}", api_users_patch},
        {HTTP_DELETE, "/users/{id}", api_users_delete},
        {HTTP_GET, "/users/{id}/orders", api_users_orders},
        {HTTP_GET, "/users/{id}/audit", api_users_audit},
        {HTTP_POST, "/orders", api_orders_create},
        {HTTP_GET, "/orders/{id}", api_orders_get},
        {HTTP_PATCH, "/orders/{id}", api_orders_patch},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (router_add(r, routes[i].m, routes[i].pattern,
                       (router_handler_fn)routes[i].fn, api) < 0)
            return -1;
    return 0;
}

/* ---- request pool and life cycle ---- */

#define APIREQ_FREE_MAX 1024

struct jbuf *
api_jbuf(struct apireq *a)
{
    return &a->api->jb;
}

void
api_set_cache(struct api *api, struct cache *cache, uint32_t ttl_ms)
{
    api->cache = cache;
    api->cache_ttl_ms = ttl_ms;
}

void
api_cache_notify(struct api *api, const char *payload)
{
    static const struct {
        const char *prefix;
        size_t len;
        enum cache_kind kind;
    } kinds[] = {{"user:", 5, CACHE_USER}, {"order:", 6, CACHE_ORDER}};
    int64_t id;

    if (api->cache == NULL)
        return;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (strncmp(payload, kinds[i].prefix, kinds[i].len) != 0)
            continue;
        if (!api_parse_id(payload + kinds[i].len,
                          strlen(payload + kinds[i].len), &id))
            break;
        cache_invalidate(api->cache, kinds[i].kind, (uint64_t)id,
                         &api->cache_stats);
        return;
    }
    log_warn("unexpected notification on " API_CACHE_CHANNEL
             ": \"%.64s\"; flushing the cache",
             payload);
    cache_flush(api->cache, &api->cache_stats);
}

void
api_cache_ready(struct api *api)
{
    if (api->cache)
        cache_flush(api->cache, &api->cache_stats);
}

void
api_init(struct api *api, struct pg *pg)
{
    api->magic = API_MAGIC;
    api->pg = pg;
    api->free_list = NULL;
    api->nfree = 0;
    memset(&api->jb, 0, sizeof(api->jb));
    api->cache = NULL;
    api->cache_ttl_ms = 0;
    memset(&api->cache_stats, 0, sizeof(api->cache_stats));
}

void
api_fini(struct api *api)
{
    while (api->free_list) {
        struct apireq *a = api->free_list;
        api->free_list = a->next_free;
        free(a);
    }
    api->nfree = 0;
    json_fini(&api->jb);
}

static struct apireq *
apireq_get(struct api *api)
{
    struct apireq *a = api->free_list;

    if (a) {
        api->free_list = a->next_free;
        api->nfree--;
    } else {
        a = malloc(sizeof(*a));
        if (a == NULL)
            return NULL;
        buf_allocs++;
    }
    memset(a, 0, offsetof(struct apireq, canon));
    a->api = api;
    return a;
}

static void
apireq_release(struct apireq *a)
{
    struct api *api = a->api;

    if (a->in_pg || !a->answered)
        return;
    if (api->nfree >= APIREQ_FREE_MAX) {
        free(a);
        return;
    }
    a->next_free = api->free_list;
    api->free_list = a;
    api->nfree++;
}

static void
api_done(struct pg_query *q, const PGresult *res, const char *err)
{
    struct apireq *a = container_of(q, struct apireq, q);

    a->in_pg = false;
    /* a write: after its commit (or its loss), before its answer */
    if (a->inval_kind && a->api->cache)
        cache_invalidate(a->api->cache, a->inval_kind, (uint64_t)a->id,
                         &a->api->cache_stats);
    if (!a->answered) {
        if (res == NULL)
            api_error(a, 503, "Database unavailable: %s", err);
        else
            a->on_result(a, res);
    }
    apireq_release(a);
}

/* The core answered r (504) or its client left: forget it. */
static void
api_abort(struct request *r, void *arg)
{
    struct apireq *a = arg;

    (void)r;
    a->r = NULL;
    a->answered = true;
    a->q.cancelled = true; /* answered now: not worth sending (SPEC 6) */
    apireq_release(a);
}

struct apireq *
api_begin(struct request *r, enum api_stmt stmt, api_result_fn on_result)
{
    struct api *api = r->match.route->arg;
    struct apireq *a;

    if (!pg_is_ready(api->pg)) {
        request_error(r, 503, "Database unavailable");
        return NULL;
    }
    a = apireq_get(api);
    if (a == NULL) {
        request_error(r, 503, "Out of memory");
        return NULL;
    }
    a->q.stmt = stmt;
    a->q.done = api_done;
    a->on_result = on_result;
    return a;
}

bool
api_param(struct apireq *a, const char *s, size_t n)
{
    if (a->q.nparams == PG_MAX_PARAMS)
        return false;
    if (s == NULL) {
        a->q.values[a->q.nparams++] = NULL;
        return true;
    }
    if (a->used + n + 1 > sizeof(a->storage))
        return false;
    memcpy(a->storage + a->used, s, n);
    a->storage[a->used + n] = '\0';
    a->q.values[a->q.nparams++] = a->storage + a->used;
    a->used += n + 1;
    return true;
}

bool
api_param_i64(struct apireq *a, int64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%lld", (long long)v);
    return api_param(a, tmp, (size_t)n);
}

void
api_send(struct request *r, struct apireq *a)
{
    enum pg_submit_result rc;

    a->r = r;
    /* a client's pipelined read must not overtake its earlier write */
    a->q.origin = r->c;
    request_defer(r, api_abort, a);
    rc = pg_submit(a->api->pg, &a->q);
    if (rc != PG_OK) {
        api_error(a, 503, "%s",
                  rc == PG_E_FULL ? "Database queue full, try again"
                                  : "Database unavailable");
        apireq_release(a);
        return;
    }
    a->in_pg = true;
}

void
api_send_by_id(struct request *r, const char *what, enum api_stmt stmt,
               api_result_fn on_result, bool paged)
{
    struct apireq *a;
    int64_t id, limit = 0, offset = 0;

    if (!api_path_id(r, 0, what, &id) ||
        (paged && !api_paging(r, &limit, &offset)))
        return;
    a = api_begin(r, stmt, on_result);
    if (a == NULL)
        return;
    a->id = id;
    api_param_i64(a, id);
    if (paged) {
        api_param_i64(a, limit);
        api_param_i64(a, offset);
    }
    api_send(r, a);
}

/* CLOCK_MONOTONIC ms for the TTL, 0 when no TTL is set (none needed). */
static uint64_t
cache_now_ms(const struct api *api)
{
    struct timespec ts;

    if (api->cache_ttl_ms == 0)
        return 0;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void
api_send_cached(struct request *r, const char *what, enum cache_kind kind,
                enum api_stmt stmt, api_result_fn on_result)
{
    struct api *api = r->match.route->arg;
    struct cache_ticket t;
    bool ticketed = false;
    struct apireq *a;
    int64_t id;

    if (!api_path_id(r, 0, what, &id))
        return;
    if (api->cache && pg_is_ready(api->pg) && !request_owes_earlier(r)) {
        struct cache_view v;
        /* a hit: one copy, from the mapping into the connection's
         * output, validated before it is committed (request.h) */
        if (cache_view(api->cache, kind, (uint64_t)id, cache_now_ms(api), &v,
                       &api->cache_stats)) {
            if (request_reply_validated(r, v.status, v.body, v.len,
                                        cache_view_valid, &v) == 0) {
                api->cache_stats.hits++;
                return;
            }
            api->cache_stats.retries++; /* torn: ask the database */
            api->cache_stats.misses++;
        }
        cache_ticket(api->cache, kind, (uint64_t)id, &t);
        ticketed = true;
    }
    a = api_begin(r, stmt, on_result);
    if (a == NULL)
        return;
    a->id = id;
    if (ticketed) {
        a->fill_kind = (uint8_t)kind;
        a->ticket = t;
    }
    api_param_i64(a, id);
    api_send(r, a);
}

void
api_invalidates(struct apireq *a, enum cache_kind kind)
{
    a->inval_kind = (uint8_t)kind;
}

void
api_resubmit(struct apireq *a, enum api_stmt stmt, api_result_fn on_result)
{
    enum pg_submit_result rc;

    a->q.stmt = stmt;
    a->on_result = on_result;
    rc = pg_submit(a->api->pg, &a->q);
    if (rc != PG_OK) {
        api_error(a, 503, "Database unavailable");
        return;
    }
    a->in_pg = true;
}

void
api_reply(struct apireq *a, int status, const char *extra, size_t extra_len)
{
    struct request *r = a->r;
    const struct jbuf *jb = &a->api->jb;

    if (a->answered || r == NULL)
        return;
    a->answered = true;
    a->r = NULL;
    if (json_failed(jb)) {
        request_error(r, 503, "Out of memory");
        return;
    }
    if (a->fill_kind && status == 200 && a->api->cache)
        (void)cache_put(a->api->cache, &a->ticket, status, jb->p, jb->len,
                        a->api->cache_ttl_ms, cache_now_ms(a->api),
                        &a->api->cache_stats);
    request_reply(r, status, jb->p, jb->len, extra, extra_len);
}

void
api_error(struct apireq *a, int status, const char *fmt, ...)
{
    char msg[600];
    va_list ap;

    struct request *r = a->r;

    if (a->answered || r == NULL)
        return;
    a->answered = true;
    a->r = NULL;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    request_error(r, status, "%s", msg);
}

void
api_db_error(struct apireq *a, const PGresult *res)
{
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    /* 55P03: a statement's lock waits took statement_timeout in all
     * (pg.h, "Lock waits"): the same answer as the statement timeout */
    if (code && (strcmp(code, "57014") == 0 || strcmp(code, "55P03") == 0)) {
        api_error(a, 504, "Database statement timed out");
        return;
    }
    if (code && (strcmp(code, "40001") == 0 || strcmp(code, "40P01") == 0)) {
        api_error(a, 503, "Database conflict, try again");
        return;
    }
    /* 57P01..57P05: the server is shutting down or restarting; class 08:
     * the connection failed.  Both mean "unavailable", not our error. */
    if (code && (strncmp(code, "57P", 3) == 0 || strncmp(code, "08", 2) == 0)) {
        api_error(a, 503, "Database unavailable");
        return;
    }
    log_error("database error %s: %s", code ? code : "?",
              PQresultErrorMessage(res));
    api_error(a, 500, "Database error");
}

bool
api_sqlstate_is(const PGresult *res, const char *code)
{
    const char *c = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return c && strcmp(c, code) == 0;
}

bool
api_found(struct apireq *a, const PGresult *res, const char *what)
{
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api_db_error(a, res);
        return false;
    }
    if (PQntuples(res) == 0) {
        api_error(a, 404, "%s not found: %lld", what, (long long)a->id);
        return false;
    }
    return true;
}

/* ---- validation ---- */

/* Positive int64 from decimal digits only. */
static bool parse_pos_i64(const char *s, size_t n, int64_t *out);

bool
api_parse_id(const char *s, size_t n, int64_t *out)
{
    return parse_pos_i64(s, n, out);
}

static bool
parse_pos_i64(const char *s, size_t n, int64_t *out)
{
    int64_t v = 0;

    if (n == 0 || n > 19)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9 || v > (INT64_MAX - (int64_t)d) / 10)
            return false;
        v = v * 10 + (int64_t)d;
    }
    if (v <= 0)
        return false;
    *out = v;
    return true;
}

bool
api_path_id(struct request *r, unsigned idx, const char *what, int64_t *out)
{
    const struct http_slice *s = &r->match.params[idx];

    if (parse_pos_i64(s->ptr, s->len, out))
        return true;
    request_error(r, 400, "Invalid %s id: %.*s (want a positive integer)", what,
                  (int)(s->len > 64 ? 64 : s->len), s->ptr);
    return false;
}

#define PAGE_MAX 1000000000LL
#define PER_PAGE_DEFAULT 20
#define PER_PAGE_MAX 100

bool
api_paging(struct request *r, int64_t *limit, int64_t *offset)
{
    struct http_slice q = r->req.query, k, v;
    int64_t page = 1, per_page = PER_PAGE_DEFAULT;
    int rc;

    while ((rc = http_query_next(&q, &k, &v)) == 1) {
        int64_t *dst;
        const char *name;
        if (k.len == 4 && memcmp(k.ptr, "page", 4) == 0) {
            dst = &page;
            name = "page";
        } else if (k.len == 8 && memcmp(k.ptr, "per_page", 8) == 0) {
            dst = &per_page;
            name = "per_page";
        } else {
            continue; /* other parameters are not ours to judge */
        }
        if (!parse_pos_i64(v.ptr, v.len, dst) ||
            (dst == &page && page > PAGE_MAX)) {
            request_error(r, 400, "Invalid %s: \"%.*s\" (want an integer >= 1)",
                          name, (int)(v.len > 32 ? 32 : v.len), v.ptr);
            return false;
        }
    }
    if (rc < 0) {
        request_error(r, 400, "Malformed query string");
        return false;
    }
    if (per_page > PER_PAGE_MAX)
        per_page = PER_PAGE_MAX; /* SPEC 2: capped, not refused */
    *limit = per_page;
    *offset = (page - 1) * per_page;
    return true;
}

json_t *
api_body(struct request *r)
{
    const struct http_slice *ct = &r->req.content_type;
    json_error_t err;
    json_t *root;

    if (ct->len < 16 || strncasecmp(ct->ptr, "application/json", 16) != 0 ||
        (ct->len > 16 && ct->ptr[16] != ';' && ct->ptr[16] != ' ')) {
        request_error(r, 415, "Content-Type must be application/json");
        return NULL;
    }
    if (r->body.len == 0) {
        request_error(r, 400, "Request body required");
        return NULL;
    }
    root = json_loadb(r->body.ptr, r->body.len, JSON_REJECT_DUPLICATES, &err);
    if (root == NULL) {
        request_error(r, 400, "Malformed JSON at line %d column %d: %s",
                      err.line, err.column, err.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        request_error(r, 400, "Request body must be a JSON object");
        return NULL;
    }
    return root;
}

bool
api_only_fields(struct request *r, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *val;

    json_object_foreach(obj, key, val)
    {
        bool ok = false;
        (void)val;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(key, *a) == 0;
        if (!ok) {
            request_error(r, 400, "Unknown field: %.64s", key);
            return false;
        }
    }
    return true;
}

size_t
api_utf8_len(const char *s, size_t n)
{
    size_t count = 0;

    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            count++;
    return count;
}

static bool
label_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-';
}

/*
 * A deliberately plain check (not all of RFC 5322): local@domain, one '@',
 * local part 1..64 printable ASCII without specials or empty dot-atoms,
 * domain of 2+ dot-separated labels of letters, digits and inner hyphens,
 * 1..63 each, ending in a top-level label of 2+ letters; 254 bytes at most.
 */
bool
api_valid_email(const char *s, size_t n)
{
    const char *at = n ? memchr(s, '@', n) : NULL;
    size_t local, i, label = 0, labels = 0;
    bool tld_letters = true;

    if (n < 3 || n > 254 || at == NULL)
        return false;
    local = (size_t)(at - s);
    if (local == 0 || local > 64 || s[0] == '.' || s[local - 1] == '.')
        return false;
    for (i = 0; i < local; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || strchr("\"(),:;<>@[\\]", c) ||
            (c == '.' && s[i + 1] == '.'))
            return false;
    }
    for (i = local + 1; i <= n; i++) {
        unsigned char c = i < n ? (unsigned char)s[i] : '.';
        if (c == '.') {
            if (label == 0 || label > 63 || s[i - 1] == '-' ||
                s[i - label] == '-')
                return false;
            labels++;
            if (i < n) {
                label = 0;
                tld_letters = true;
            }
            continue;
        }
        if (!label_char(c))
            return false;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
            tld_letters = false;
        label++;
    }
    return labels >= 2 && label >= 2 && tld_letters;
}
