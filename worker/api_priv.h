/*
 * api_priv.h - shared between api.c, api_users.c and api_orders.c; not a
 * public interface.
 *
 * A database request's life: a handler validates the request (answering
 * 400/404/415 at once when it is wrong), takes a struct apireq with
 * api_begin(), adds parameters, and api_send()s it.  The request is
 * deferred from then on (request_defer()); its answer comes from the
 * result callback or from a failure to reach the database (503).  If the
 * core answers first (request timeout: 504) or the client leaves, the
 * abort callback marks the apireq answered and its query cancelled, so a
 * query not yet sent is dropped (SPEC 6).  The apireq is freed once it is
 * answered and the database no longer holds it.
 */
#ifndef APIARY_API_PRIV_H
#define APIARY_API_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "api.h"
#include "json.h"
#include "loop.h"
#include "pg.h"
#include "request.h"

enum api_stmt {
    S_USER_GET = 0,
    S_USER_LIST,
    S_USER_CREATE,
    S_USER_PATCH,
    S_USER_DELETE,
    S_USER_ORDERS,
    S_USER_AUDIT,
    S_ORDER_CREATE,
    S_ORDER_BY_KEY,
    S_ORDER_GET,
    S_ORDER_STATUS,
    S_COUNT
};

struct apireq;
typedef void (*api_result_fn)(struct apireq *a, const PGresult *res);

#define APIREQ_STORAGE 1536

struct apireq {
    struct pg_query q;
    struct api *api;
    struct request *r; /* NULL once answered or aborted */
    api_result_fn on_result;
    int64_t id;      /* the resource id, for messages */
    int64_t user_id; /* POST /orders */
    bool in_pg;
    bool answered;
    bool retried;       /* POST /orders: the idempotency lookup ran */
    uint8_t fill_kind;  /* a cache miss: fill with ticket once answered */
    uint8_t inval_kind; /* a write: invalidate (kind, id) on completion */
    struct cache_ticket ticket;
    size_t used;
    struct apireq *next_free;
    char canon[64]; /* POST /orders: canonical request, for the key */
    char storage[APIREQ_STORAGE];
};

/* The JSON buffer a result callback writes a's answer into. */
struct jbuf *api_jbuf(struct apireq *a);

/*
 * Starts a database request for stmt on behalf of r (whose route's arg is
 * the struct api): replies 503 itself and returns NULL when the database
 * is down or memory is short.
 */
struct apireq *api_begin(struct request *r, enum api_stmt stmt,
                         api_result_fn on_result);
/* Adds a text parameter (copied); NULL for SQL NULL.  false if too long. */
bool api_param(struct apireq *a, const char *s, size_t n);
bool api_param_i64(struct apireq *a, int64_t v);
/* Defers r's answer and submits a; on failure answers 503 itself. */
void api_send(struct request *r, struct apireq *a);
/*
 * The whole handler for routes whose only input is the {id} of the path
 * (what names it in the 400 message), plus page/per_page when paged: the
 * statement gets $1 = id (and $2 = limit, $3 = offset).
 */
void api_send_by_id(struct request *r, const char *what, enum api_stmt stmt,
                    api_result_fn on_result, bool paged);
/*
 * GET /users/{id} and GET /orders/{id}: answers from the shared cache when
 * it can (a hit: no database, no allocation), else like api_send_by_id()
 * and fills the cache with a 200 answer (api.c, "Shared cache").
 */
void api_send_cached(struct request *r, const char *what, enum cache_kind kind,
                     enum api_stmt stmt, api_result_fn on_result);
/* A write of (kind, a->id): invalidated when its result (or failure)
 * arrives, before it is answered. */
void api_invalidates(struct apireq *a, enum cache_kind kind);
/* From a result callback: submit again with another statement. */
void api_resubmit(struct apireq *a, enum api_stmt stmt,
                  api_result_fn on_result);

/* Answers (exactly once) and marks the request answered. */
void api_reply(struct apireq *a, int status, const char *extra,
               size_t extra_len); /* body: api_jbuf(a) */
void api_error(struct apireq *a, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The generic mapping of a failed result (SQLSTATE) to a status. */
void api_db_error(struct apireq *a, const PGresult *res);
/* True when res failed with this SQLSTATE. */
bool api_sqlstate_is(const PGresult *res, const char *code);
/*
 * For results that must hold a row: true when they do; otherwise answers
 * (api_db_error() for a failure, 404 "<what> not found: <id>" for no row)
 * and returns false.
 */
bool api_found(struct apireq *a, const PGresult *res, const char *what);

/* Validation helpers: on failure they answer 400 themselves, return false. */
bool api_path_id(struct request *r, unsigned idx, const char *what,
                 int64_t *out);
bool api_paging(struct request *r, int64_t *limit, int64_t *offset);
/* Parses the body as a JSON object; answers 400/415 itself on failure. */
json_t *api_body(struct request *r);
/* Fails (400) on a key not in allowed (NULL-terminated). */
bool api_only_fields(struct request *r, json_t *obj,
                     const char *const *allowed);

/* A positive decimal int64, digits only (path ids, notification ids). */
bool api_parse_id(const char *s, size_t n, int64_t *out);

/* Validators shared with the unit tests. */
bool api_valid_email(const char *s, size_t n);
/* Trims ASCII whitespace; counts UTF-8 code points; false if not UTF-8. */
size_t api_utf8_len(const char *s, size_t n);

/* Handlers */
void api_users_list(struct request *r, void *arg);
void api_users_get(struct request *r, void *arg);
void api_users_create(struct request *r, void *arg);
void api_users_patch(struct request *r, void *arg);
void api_users_delete(struct request *r, void *arg);
void api_users_orders(struct request *r, void *arg);
void api_users_audit(struct request *r, void *arg);
void api_orders_create(struct request *r, void *arg);
void api_orders_get(struct request *r, void *arg);
void api_orders_patch(struct request *r, void *arg);

/* Writes one order object from row r of res starting at column col. */
void api_order_json(struct jbuf *b, const PGresult *res, int r, int col);

#endif
