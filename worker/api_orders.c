/*
 * api_orders.c - POST /orders (with Idempotency-Key), GET and PATCH
 * /orders/{id}.
 *
 * Idempotency: the key's row, the order and the audit row are written by
 * one statement, which first looks the key up.  A retry with the same key
 * and the same request gets the original order back (201 again, with
 * "Idempotent-Replayed: true"); the same key with another request is 409.
 * Two first attempts racing with one key both miss the lookup; the key
 * row goes in first with ON CONFLICT DO NOTHING, so exactly one inserts
 * it and its order, and the loser, without any error, gets outcome 'r',
 * looks the key up again in a new statement and answers like a retry
 * (api.c explains the statement).  "Same request" compares the parsed
 * fields (user_id:amount_cents:currency), not the JSON bytes.
 */
#include "api_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/*
 * Answers from a row found by key: its request hash in column col, the
 * order's columns after it.
 */
static void
answer_existing(struct apireq *a, const PGresult *res, int r, int col)
{
    struct jbuf *b = api_jbuf(a);
    char extra[96];
    int n;

    if (strcmp(PQgetvalue(res, r, col), a->canon) != 0) {
        api_error(a, 409,
                  "Idempotency-Key was already used with a different "
                  "request");
        return;
    }
    json_reset(b);
    api_order_json(b, res, r, col + 1);
    /* the same answer as the first time, marked as a replay */
    n = snprintf(extra, sizeof(extra),
                 "Location: /orders/%lld\r\nIdempotent-Replayed: true\r\n",
                 (long long)pg_get_int8(res, r, col + 1));
    api_reply(a, 201, extra, (size_t)n);
}

static void
got_by_key(struct apireq *a, const PGresult *res)
{
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api_db_error(a, res);
        return;
    }
    if (PQntuples(res) == 0) {
        /* the winner's row vanished (its order deleted): rare; retry */
        api_error(a, 503,
                  "Concurrent request with this Idempotency-Key, "
                  "try again");
        return;
    }
    answer_existing(a, res, 0, 0);
}

/*
 * One row "outcome, request hash, order columns...": 'c' created, 'k' the
 * key was known (a retry), 'u' no such user, 'r' the key was taken by a
 * request that committed meanwhile (read it in a new statement).
 */
static void
created_order(struct apireq *a, const PGresult *res)
{
    struct jbuf *b = api_jbuf(a);
    char loc[64];
    int n;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        /* 23503: the user was deleted meanwhile (a race) */
        if (api_sqlstate_is(res, "23503")) {
            api_error(a, 422, "Unknown user: %lld", (long long)a->user_id);
            return;
        }
        api_db_error(a, res);
        return;
    }
    if (PQntuples(res) != 1) {
        api_error(a, 500, "Database returned %d rows", PQntuples(res));
        return;
    }
    switch (PQgetvalue(res, 0, 0)[0]) {
    case 'c':
        break;
    case 'k':
        answer_existing(a, res, 0, 1);
        return;
    case 'u':
        api_error(a, 422, "Unknown user: %lld", (long long)a->user_id);
        return;
    case 'r':
        if (a->retried || a->q.values[3] == NULL) {
            api_error(a, 503,
                      "Concurrent request with this Idempotency-Key, "
                      "try again");
            return;
        }
        a->retried = true;
        a->q.nparams = 1;
        a->q.values[0] = a->q.values[3];
        api_resubmit(a, S_ORDER_BY_KEY, got_by_key);
        return;
    default:
        api_error(a, 500, "Database returned an unknown outcome");
        return;
    }
    json_reset(b);
    api_order_json(b, res, 0, 2);
    n = snprintf(loc, sizeof(loc), "Location: /orders/%lld\r\n",
                 (long long)pg_get_int8(res, 0, 2));
    api_reply(a, 201, loc, (size_t)n);
}

/* Reads a positive integer field; 1 ok, -1 after answering 400. */
static int
int_field(struct request *r, json_t *obj, const char *key, int64_t max,
          int64_t *out)
{
    json_t *v = json_object_get(obj, key);

    if (v == NULL) {
        request_error(r, 400, "Missing field: %s", key);
        return -1;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
        json_integer_value(v) > max) {
        request_error(r, 400, "Field %s must be an integer from 1 to %lld", key,
                      (long long)max);
        return -1;
    }
    *out = json_integer_value(v);
    return 1;
}

static bool
valid_key(const struct http_slice *k)
{
    if (k->len == 0 || k->len > 255)
        return false;
    for (uint32_t i = 0; i < k->len; i++)
        if ((unsigned char)k->ptr[i] <= 0x20 ||
            (unsigned char)k->ptr[i] >= 0x7f)
            return false;
    return true;
}

void
api_orders_create(struct request *r, void *arg)
{
    static const char *const allowed[] = {"user_id", "amount_cents", "currency",
                                          NULL};
    const struct http_slice *key = &r->req.idempotency_key;
    json_t *body, *cur;
    const char *currency;
    int64_t user_id, amount;
    struct apireq *a;
    int n;

    (void)arg;
    if (key->ptr && !valid_key(key)) {
        request_error(r, 400,
                      "Idempotency-Key must be 1 to 255 visible ASCII "
                      "characters");
        return;
    }
    body = api_body(r);
    if (body == NULL)
        return;
    if (!api_only_fields(r, body, allowed) ||
        int_field(r, body, "user_id", INT64_MAX, &user_id) < 0 ||
        int_field(r, body, "amount_cents", 9007199254740991LL, &amount) < 0)
        goto out;
    cur = json_object_get(body, "currency");
    if (cur == NULL) {
        request_error(r, 400, "Missing field: currency");
        goto out;
    }
    currency = json_string_value(cur);
    if (currency == NULL || json_string_length(cur) != 3 || currency[0] < 'A' ||
        currency[0] > 'Z' || currency[1] < 'A' || currency[1] > 'Z' ||
        currency[2] < 'A' || currency[2] > 'Z') {
        request_error(r, 400,
                      "Field currency must be three upper-case letters "
                      "(ISO 4217), e.g. \"EUR\"");
        goto out;
    }
    a = api_begin(r, S_ORDER_CREATE, created_order);
    if (a == NULL)
        goto out;
    a->user_id = user_id;
    n = snprintf(a->canon, sizeof(a->canon), "%lld:%lld:%s", (long long)user_id,
                 (long long)amount, currency);
    api_param_i64(a, user_id);
    api_param_i64(a, amount);
    api_param(a, currency, 3);
    api_param(a, key->ptr, key->len);
    api_param(a, a->canon, (size_t)n);
    api_send(r, a);
out:
    json_decref(body);
}

/* ---- GET /orders/{id} ---- */

static void
got_order(struct apireq *a, const PGresult *res)
{
    struct jbuf *b = api_jbuf(a);

    if (!api_found(a, res, "Order"))
        return;
    json_reset(b);
    api_order_json(b, res, 0, 0);
    api_reply(a, 200, NULL, 0);
}

void
api_orders_get(struct request *r, void *arg)
{
    (void)arg;
    api_send_cached(r, "order", CACHE_ORDER, S_ORDER_GET, got_order);
}

/* ---- PATCH /orders/{id} ---- */

static void
patched_order(struct apireq *a, const PGresult *res)
{
    struct jbuf *b = api_jbuf(a);

    if (!api_found(a, res, "Order"))
        return;
    if (PQgetisnull(res, 0, 1)) {
        api_error(a, 409, "Order %lld is %s; only pending orders change status",
                  (long long)a->id, PQgetvalue(res, 0, 0));
        return;
    }
    json_reset(b);
    api_order_json(b, res, 0, 1);
    api_reply(a, 200, NULL, 0);
}

void
api_orders_patch(struct request *r, void *arg)
{
    static const char *const allowed[] = {"status", NULL};
    struct apireq *a;
    const char *status;
    json_t *body;
    int64_t id;

    (void)arg;
    if (!api_path_id(r, 0, "order", &id))
        return;
    body = api_body(r);
    if (body == NULL)
        return;
    if (!api_only_fields(r, body, allowed))
        goto out;
    status = json_string_value(json_object_get(body, "status"));
    if (status == NULL ||
        (strcmp(status, "paid") != 0 && strcmp(status, "cancelled") != 0)) {
        request_error(r, 400, "Field status must be \"paid\" or \"cancelled\"");
        goto out;
    }
    a = api_begin(r, S_ORDER_STATUS, patched_order);
    if (a == NULL)
        goto out;
    a->id = id;
    api_invalidates(a, CACHE_ORDER);
    api_param_i64(a, id);
    api_param(a, status, strlen(status));
    api_send(r, a);
out:
    json_decref(body);
}
