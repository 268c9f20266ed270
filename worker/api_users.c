/*
 * api_users.c - /users, /users/{id}, /users/{id}/orders, /users/{id}/audit.
 *
 * Each handler validates what it can without the database (ids, paging,
 * the JSON body) and answers 400/415 itself; the database answers the rest
 * from what its statement returns (404 when no row; 409 for an email in
 * use or a user who still has orders, see api.c on why these are results,
 * not errors).
 */
#include "api_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* A text column of a result, binary or not: its bytes. */
#define TEXT(res, r, c)                                                        \
    PQgetvalue((res), (r), (c)), (size_t)PQgetlength((res), (r), (c))

/*
 * {"id":..,"name":..,"email":..,"created_at":..} from the binary columns
 * col.. (id int8, name text, email text, created_at timestamptz).
 */
static void
user_json(struct jbuf *b, const PGresult *res, int r, int col)
{
    json_lit(b, "{\"id\":");
    json_i64(b, pg_get_int8(res, r, col));
    json_lit(b, ",\"name\":");
    json_str(b, TEXT(res, r, col + 1));
    json_lit(b, ",\"email\":");
    json_str(b, TEXT(res, r, col + 2));
    json_lit(b, ",\"created_at\":");
    json_ts_us(b, pg_get_ts_us(res, r, col + 3));
    json_lit(b, "}");
}

void
api_order_json(struct jbuf *b, const PGresult *res, int r, int col)
{
    json_lit(b, "{\"id\":");
    json_i64(b, pg_get_int8(res, r, col));
    json_lit(b, ",\"user_id\":");
    json_i64(b, pg_get_int8(res, r, col + 1));
    json_lit(b, ",\"amount_cents\":");
    json_i64(b, pg_get_int8(res, r, col + 2));
    json_lit(b, ",\"currency\":");
    json_str(b, TEXT(res, r, col + 3));
    json_lit(b, ",\"status\":");
    json_str(b, TEXT(res, r, col + 4));
    json_lit(b, ",\"created_at\":");
    json_ts_us(b, pg_get_ts_us(res, r, col + 5));
    json_lit(b, "}");
}

/* ---- GET /users/{id} ---- */

static void
got_user(struct apireq *a, const PGresult *res)
{
    struct jbuf *b = api_jbuf(a);

    if (!api_found(a, res, "User"))
        return;
    json_reset(b);
    user_json(b, res, 0, 0);
    api_reply(a, 200, NULL, 0);
}

void
api_users_get(struct request *r, void *arg)
{
    (void)arg;
    api_send_cached(r, "user", CACHE_USER, S_USER_GET, got_user);
}

/* ---- GET /users ---- */

static void
got_user_list(struct apireq *a, const PGresult *res)
{
    struct jbuf *b = api_jbuf(a);
    int n;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api_db_error(a, res);
        return;
    }
    n = PQntuples(res);
    json_reset(b);
    json_lit(b, "[");
    for (int r = 0; r < n; r++) {
        if (r)
            json_lit(b, ",");
        user_json(b, res, r, 0);
    }
    json_lit(b, "]");
    api_reply(a, 200, NULL, 0);
}

void
api_users_list(struct request *r, void *arg)
{
    struct apireq *a;
    int64_t limit, offset;

    (void)arg;
    if (!api_paging(r, &limit, &offset))
        return;
    a = api_begin(r, S_USER_LIST, got_user_list);
    if (a == NULL)
        return;
    api_param_i64(a, limit);
    api_param_i64(a, offset);
    api_send(r, a);
}

/* ---- body fields shared by POST and PATCH ---- */

/*
 * Reads optional string field key into *out (trimmed), checking it.
 * Returns 1 when present and valid, 0 when absent, -1 after answering 400.
 */
static int
string_field(struct request *r, json_t *obj, const char *key, const char **out,
             size_t *len)
{
    json_t *v = json_object_get(obj, key);
    const char *s;
    size_t n;

    if (v == NULL)
        return 0;
    if (!json_is_string(v)) {
        request_error(r, 400, "Field %s must be a string", key);
        return -1;
    }
    s = json_string_value(v);
    n = json_string_length(v);
    if (memchr(s, '\0', n)) {
        request_error(r, 400, "Field %s must not contain NUL", key);
        return -1;
    }
    while (n > 0 && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' ||
                     s[n - 1] == '\r'))
        n--;
    if (strcmp(key, "name") == 0) {
        size_t chars = api_utf8_len(s, n);
        if (chars < 1 || chars > 100) {
            request_error(r, 400,
                          "Field name must be 1 to 100 characters "
                          "after trimming, got %zu",
                          chars);
            return -1;
        }
    } else if (!api_valid_email(s, n)) {
        request_error(r, 400,
                      "Field email must be a valid address of at most "
                      "254 bytes");
        return -1;
    }
    *out = s;
    *len = n;
    return 1;
}

/* A write that raised: 23505 only when two requests raced for an email. */
static void
user_write_error(struct apireq *a, const PGresult *res)
{
    if (api_sqlstate_is(res, "23505")) {
        api_error(a, 409, "Email already in use");
        return;
    }
    if (api_sqlstate_is(res, "23514")) {
        api_error(a, 400, "Invalid user fields: %s",
                  PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME));
        return;
    }
    api_db_error(a, res);
}

/* ---- POST /users ---- */

static void
created_user(struct apireq *a, const PGresult *res)
{
    struct jbuf *b = api_jbuf(a);
    char loc[64];
    int n;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        user_write_error(a, res);
        return;
    }
    if (PQntuples(res) != 1) {
        /* ON CONFLICT DO NOTHING: the address is taken */
        api_error(a, 409, "Email already in use");
        return;
    }
    json_reset(b);
    user_json(b, res, 0, 0);
    n = snprintf(loc, sizeof(loc), "Location: /users/%lld\r\n",
                 (long long)pg_get_int8(res, 0, 0));
    api_reply(a, 201, loc, (size_t)n);
}

void
api_users_create(struct request *r, void *arg)
{
    static const char *const allowed[] = {"name", "email", NULL};
    const char *name = NULL, *email = NULL;
    size_t name_len = 0, email_len = 0;
    struct apireq *a;
    json_t *body = api_body(r);
    int rc;

    (void)arg;
    if (body == NULL)
        return;
    if (!api_only_fields(r, body, allowed))
        goto out;
    rc = string_field(r, body, "name", &name, &name_len);
    if (rc < 0)
        goto out;
    if (rc == 0) {
        request_error(r, 400, "Missing field: name");
        goto out;
    }
    rc = string_field(r, body, "email", &email, &email_len);
    if (rc < 0)
        goto out;
    if (rc == 0) {
        request_error(r, 400, "Missing field: email");
        goto out;
    }
    a = api_begin(r, S_USER_CREATE, created_user);
    if (a == NULL)
        goto out;
    api_param(a, name, name_len);
    api_param(a, email, email_len);
    api_send(r, a);
out:
    json_decref(body);
}

/* ---- PATCH /users/{id} ---- */

/* No row: no such user; else "taken, user columns" (NULL when taken). */
static void
patched_user(struct apireq *a, const PGresult *res)
{
    struct jbuf *b = api_jbuf(a);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        user_write_error(a, res);
        return;
    }
    if (!api_found(a, res, "User"))
        return;
    if (PQgetisnull(res, 0, 1)) {
        api_error(a, 409, "Email already in use");
        return;
    }
    json_reset(b);
    user_json(b, res, 0, 1);
    api_reply(a, 200, NULL, 0);
}

void
api_users_patch(struct request *r, void *arg)
{
    static const char *const allowed[] = {"name", "email", NULL};
    const char *name = NULL, *email = NULL;
    size_t name_len = 0, email_len = 0;
    struct apireq *a;
    json_t *body;
    int64_t id;
    int rn, re;

    (void)arg;
    if (!api_path_id(r, 0, "user", &id))
        return;
    body = api_body(r);
    if (body == NULL)
        return;
    if (!api_only_fields(r, body, allowed))
        goto out;
    rn = string_field(r, body, "name", &name, &name_len);
    if (rn < 0)
        goto out;
    re = string_field(r, body, "email", &email, &email_len);
    if (re < 0)
        goto out;
    if (rn == 0 && re == 0) {
        request_error(r, 400, "Nothing to update: give name or email");
        goto out;
    }
    a = api_begin(r, S_USER_PATCH, patched_user);
    if (a == NULL)
        goto out;
    a->id = id;
    api_invalidates(a, CACHE_USER);
    api_param_i64(a, id);
    api_param(a, name, name_len);
    api_param(a, email, email_len);
    api_send(r, a);
out:
    json_decref(body);
}

/* ---- DELETE /users/{id} ---- */

/* No row: no such user; else "busy (has orders), deleted id". */
static void
deleted_user(struct apireq *a, const PGresult *res)
{
    struct jbuf *b = api_jbuf(a);

    /* 23503: an order was created for the user meanwhile (a race) */
    if ((PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 &&
         PQgetisnull(res, 0, 1)) ||
        api_sqlstate_is(res, "23503")) {
        api_error(a, 409, "User %lld has orders and cannot be deleted",
                  (long long)a->id);
        return;
    }
    if (!api_found(a, res, "User"))
        return;
    json_reset(b);
    api_reply(a, 204, NULL, 0);
}

void
api_users_delete(struct request *r, void *arg)
{
    struct apireq *a;
    int64_t id;

    (void)arg;
    if (!api_path_id(r, 0, "user", &id))
        return;
    a = api_begin(r, S_USER_DELETE, deleted_user);
    if (a == NULL)
        return;
    a->id = id;
    api_invalidates(a, CACHE_USER);
    api_param_i64(a, id);
    api_send(r, a);
}

/* ---- GET /users/{id}/orders ---- */

static void
got_user_orders(struct apireq *a, const PGresult *res)
{
    struct jbuf *b = api_jbuf(a);
    int n;

    if (!api_found(a, res, "User"))
        return; /* no row at all: no such user (the join keeps one) */
    n = PQntuples(res);
    json_reset(b);
    json_lit(b, "[");
    for (int r = 0, first = 1; r < n; r++) {
        if (PQgetisnull(res, r, 1))
            continue; /* the user has no orders on this page */
        if (!first)
            json_lit(b, ",");
        first = 0;
        api_order_json(b, res, r, 1);
    }
    json_lit(b, "]");
    api_reply(a, 200, NULL, 0);
}

void
api_users_orders(struct request *r, void *arg)
{
    (void)arg;
    api_send_by_id(r, "user", S_USER_ORDERS, got_user_orders, true);
}

/* ---- GET /users/{id}/audit ---- */

static void
got_user_audit(struct apireq *a, const PGresult *res)
{
    struct jbuf *b = api_jbuf(a);
    int n;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api_db_error(a, res);
        return;
    }
    n = PQntuples(res);
    if (n == 0 || !pg_get_bool(res, 0, 0)) {
        api_error(a, 404, "User not found: %lld", (long long)a->id);
        return;
    }
    json_reset(b);
    json_lit(b, "[");
    for (int r = 0, first = 1; r < n; r++) {
        if (PQgetisnull(res, r, 1))
            continue;
        if (!first)
            json_lit(b, ",");
        first = 0;
        json_lit(b, "{\"id\":");
        json_i64(b, pg_get_int8(res, r, 1));
        json_lit(b, ",\"action\":");
        json_str(b, TEXT(res, r, 2));
        json_lit(b, ",\"entity\":");
        json_str(b, TEXT(res, r, 3));
        json_lit(b, ",\"entity_id\":");
        json_i64(b, pg_get_int8(res, r, 4));
        /* jsonb::text is JSON already */
        json_lit(b, ",\"detail\":");
        json_raw(b, TEXT(res, r, 5));
        json_lit(b, ",\"created_at\":");
        json_ts_us(b, pg_get_ts_us(res, r, 6));
        json_lit(b, "}");
    }
    json_lit(b, "]");
    api_reply(a, 200, NULL, 0);
}

void
api_users_audit(struct request *r, void *arg)
{
    (void)arg;
    api_send_by_id(r, "user", S_USER_AUDIT, got_user_audit, true);
}
