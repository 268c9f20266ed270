/*
 * auth.c - see auth.h.
 */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "jwt.h"
#include "log.h"

int
auth_read_secret_file(const char *path, uint8_t *key, size_t *len, char *why,
                      size_t why_len)
{
    uint8_t buf[AUTH_KEY_MAX + 2];
    size_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        snprintf(why, why_len, "auth_secret_file %s: cannot open: %s", path,
                 strerror(errno));
        return -1;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(why, why_len, "auth_secret_file %s: read() failed: %s",
                     path, strerror(errno));
            (void)close(fd);
            return -1;
        }
        if (r == 0 || (n += (size_t)r) == sizeof(buf))
            break;
    }
    (void)close(fd);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n > AUTH_KEY_MAX) {
        snprintf(why, why_len, "auth_secret_file %s: longer than %d bytes",
                 path, AUTH_KEY_MAX);
        OPENSSL_cleanse(buf, sizeof(buf));
        return -1;
    }
    memcpy(key, buf, n);
    *len = n;
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

int
auth_init(struct auth *a, const struct config *cfg, char *why, size_t why_len)
{
    memset(a, 0, sizeof(*a));
    a->on = cfg->auth;
    a->reads = cfg->auth_reads;
    a->leeway_s = cfg->auth_leeway_s;
    if (!a->on)
        return 0;
    if (cfg->auth_secret[0]) {
        a->key_len = strlen(cfg->auth_secret);
        memcpy(a->key, cfg->auth_secret, a->key_len);
    } else if (cfg->auth_secret_file[0]) {
        if (auth_read_secret_file(cfg->auth_secret_file, a->key, &a->key_len,
                                  why, why_len) < 0)
            return -1;
    } else {
        snprintf(why, why_len,
                 "auth is on but neither auth_secret (APIARY_AUTH_SECRET) "
                 "nor auth_secret_file is set");
        return -1;
    }
    if (a->key_len < AUTH_KEY_MIN) {
        snprintf(why, why_len,
                 "the auth secret is %zu bytes; at least %d "
                 "are needed for HS256",
                 a->key_len, AUTH_KEY_MIN);
        auth_fini(a);
        a->on = true;
        return -1;
    }
    a->have_key = true;
    return 0;
}

int
auth_check_token(struct auth *a, const char *tok, size_t len, int64_t now_s)
{
    struct jwt_times t;
    int rc;

    for (unsigned i = 0; i < AUTH_CACHE_SLOTS; i++) {
        const struct auth_cache_entry *e = &a->cache[i];
        if (e->len == len && len > 0 &&
            CRYPTO_memcmp(e->token, tok, len) == 0) {
            a->cache_hits++;
            return jwt_times_check(&e->times, now_s, a->leeway_s);
        }
    }
    rc = jwt_verify_hs256(tok, len, a->key, a->key_len, now_s, a->leeway_s, &t);
    a->verified++;
    if (rc == JWT_OK && len <= AUTH_CACHE_TOKEN_MAX) {
        struct auth_cache_entry *e = &a->cache[a->cache_next];
        a->cache_next = (a->cache_next + 1) % AUTH_CACHE_SLOTS;
        memcpy(e->token, tok, len);
        e->len = (uint16_t)len;
        e->times = t;
    }
    return rc;
}

void
auth_fini(struct auth *a)
{
    OPENSSL_cleanse(a->cache, sizeof(a->cache));
    OPENSSL_cleanse(a->key, sizeof(a->key));
    a->key_len = 0;
    a->have_key = false;
}

/* True when the query string carries an access_token parameter. */
static bool
token_in_query(const struct http_slice *q)
{
    static const char name[] = "access_token";
    const char *p = q->ptr, *end = q->ptr + q->len;

    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        size_t n = (size_t)(stop - p);
        if (n >= sizeof(name) - 1 && memcmp(p, name, sizeof(name) - 1) == 0 &&
            (n == sizeof(name) - 1 || p[sizeof(name) - 1] == '='))
            return true;
        p = amp ? amp + 1 : NULL;
    }
    return false;
}

/* Routes that stay open with auth_reads: probes, the API's own
 * description, and /debug/worker (only there with debug_endpoints). */
static bool
public_read(const char *pattern)
{
    return strcmp(pattern, "/health") == 0 || strcmp(pattern, "/ready") == 0 ||
           strcmp(pattern, "/openapi.json") == 0 ||
           strcmp(pattern, "/debug/worker") == 0;
}

static int
refuse(struct auth *a, struct request *r, const char *error, const char *what)
{
    char extra[256], body[512], peer[64];
    size_t n;
    int e;

    a->rejected++;
    request_peer(r, peer, sizeof(peer));
    if (error)
        e = snprintf(extra, sizeof(extra),
                     "WWW-Authenticate: Bearer realm=\"apiary\", "
                     "error=\"%s\", error_description=\"%s\"\r\n",
                     error, what);
    else
        e = snprintf(extra, sizeof(extra),
                     "WWW-Authenticate: Bearer realm=\"apiary\"\r\n");
    log_info("client %s sent a write without a valid token: %s", peer, what);
    n = response_error_body(body, sizeof(body), 401, what);
    request_reply(r, 401, body, n, extra,
                  e > 0 && (size_t)e < sizeof(extra) ? (size_t)e : 0);
    return 1;
}

int
auth_route(struct request *r, void *arg)
{
    struct auth *a = arg;
    const struct http_slice *h = &r->req.authorization;
    enum http_method m = r->req.method;
    const char *tok;
    size_t len;
    int rc;

    if (!a->on || r->route < 0)
        return 0;
    if (m != HTTP_POST && m != HTTP_PATCH && m != HTTP_DELETE &&
        (!a->reads || public_read(r->match.route->pattern)))
        return 0;
    if (token_in_query(&r->req.query))
        return refuse(a, r, "invalid_request",
                      "a token in the query string is refused; send "
                      "Authorization: Bearer");
    if (!a->have_key) {
        a->rejected++;
        request_error(r, 503, "%s are unavailable: no auth secret configured",
                      m == HTTP_GET || m == HTTP_HEAD ? "Reads" : "Writes");
        return 1;
    }
    if (h->len == 0)
        return refuse(a, r, NULL, "Authorization: Bearer token required");
    if (h->len < 7 || strncasecmp(h->ptr, "Bearer ", 7) != 0)
        return refuse(a, r, "invalid_request",
                      "Authorization scheme must be Bearer");
    tok = h->ptr + 7;
    len = h->len - 7;
    while (len && *tok == ' ') {
        tok++;
        len--;
    }
    rc = auth_check_token(a, tok, len, (int64_t)time(NULL));
    if (rc != JWT_OK) {
        char what[96];
        snprintf(what, sizeof(what), "Invalid token: %s", jwt_message(rc));
        return refuse(a, r, "invalid_token", what);
    }
    return 0;
}
