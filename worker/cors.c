/*
 * cors.c - see cors.h.
 */
#include "cors.h"

#include <stdio.h>
#include <string.h>

#define CORS_METHODS "GET, HEAD, POST, PATCH, DELETE, OPTIONS"
#define CORS_HEADERS                                                           \
    "Authorization, Content-Type, Idempotency-Key, X-Request-Id"
#define CORS_EXPOSE                                                            \
    "Location, X-Request-Id, Retry-After, RateLimit-Limit, "                   \
    "RateLimit-Remaining, RateLimit-Reset"

int
cors_init(struct cors *co, const struct config *cfg, char *why, size_t why_len)
{
    const char *p = cfg->cors_origins;

    memset(co, 0, sizeof(*co));
    co->credentials = cfg->cors_credentials;
    co->max_age_s = cfg->cors_max_age_s;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0')
        return 0;
    for (;;) {
        const char *s, *e;
        while (*p == ' ' || *p == '\t')
            p++;
        s = p;
        while (*p && *p != ',')
            p++;
        e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e == s) {
            snprintf(why, why_len, "cors_origins: empty entry");
            return -1;
        }
        if (e - s > CORS_ORIGIN_MAX) {
            /* its Access-Control-Allow-Origin line would not fit */
            snprintf(why, why_len,
                     "cors_origins: an origin longer than %d bytes",
                     CORS_ORIGIN_MAX);
            return -1;
        }
        if (e - s == 1 && *s == '*') {
            co->any = true;
        } else {
            if (co->norigins == CORS_MAX_ORIGINS) {
                snprintf(why, why_len, "cors_origins: more than %d origins",
                         CORS_MAX_ORIGINS);
                return -1;
            }
            co->origins[co->norigins].ptr = s;
            co->origins[co->norigins].len = (uint32_t)(e - s);
            co->norigins++;
        }
        if (*p == '\0')
            break;
        p++;
    }
    if (co->any && co->credentials) {
        snprintf(why, why_len,
                 "cors_origins \"*\" cannot be used with cors_credentials");
        return -1;
    }
    co->on = true;
    return 0;
}

/* 1 + index of the matching origin, CORS_MAX_ORIGINS + 1 for "*", 0. */
static uint8_t
match(const struct cors *co, const struct http_slice *o)
{
    if (o->len == 0)
        return 0;
    for (unsigned i = 0; i < co->norigins; i++)
        if (co->origins[i].len == o->len &&
            memcmp(co->origins[i].ptr, o->ptr, o->len) == 0)
            return (uint8_t)(i + 1);
    return co->any ? CORS_MAX_ORIGINS + 1 : 0;
}

/* Access-Control-Allow-Origin (+ -Credentials) for r's match. */
static int
allow_lines(const struct cors *co, const struct request *r, char *buf,
            size_t cap)
{
    int n;

    if (r->cors_origin == CORS_MAX_ORIGINS + 1)
        n = snprintf(buf, cap, "Access-Control-Allow-Origin: *\r\n");
    else
        n = snprintf(buf, cap, "Access-Control-Allow-Origin: %.*s\r\n%s",
                     (int)co->origins[r->cors_origin - 1].len,
                     co->origins[r->cors_origin - 1].ptr,
                     co->credentials
                         ? "Access-Control-Allow-Credentials: true\r\n"
                         : "");
    return n > 0 && (size_t)n < cap ? n : 0;
}

int
cors_match(struct request *r, void *arg)
{
    const struct cors *co = arg;

    if (co->on)
        r->cors_origin = match(co, &r->req.origin);
    return 0;
}

int
cors_preflight(struct request *r, void *arg)
{
    const struct cors *co = arg;
    char extra[768];
    int n, m;

    if (!co->on)
        return 0;
    /* a preflight: OPTIONS to a path that exists (405: no OPTIONS route) */
    if (r->req.method != HTTP_OPTIONS ||
        r->route != ROUTER_METHOD_NOT_ALLOWED || r->req.origin.len == 0)
        return 0;
    if (r->cors_origin == 0) {
        /* not an allowed origin: no CORS headers, the browser refuses */
        request_reply(r, 204, NULL, 0, NULL, 0);
        return 1;
    }
    n = allow_lines(co, r, extra, sizeof(extra));
    m = snprintf(extra + n, sizeof(extra) - (size_t)n,
                 "Access-Control-Allow-Methods: " CORS_METHODS "\r\n"
                 "Access-Control-Allow-Headers: " CORS_HEADERS "\r\n"
                 "Access-Control-Max-Age: %u\r\n",
                 co->max_age_s);
    if (m > 0 && (size_t)m < sizeof(extra) - (size_t)n)
        n += m;
    /* the serialise hook adds Allow-Origin again unless told: clear it */
    r->cors_origin = 0;
    request_reply(r, 204, NULL, 0, extra, (size_t)n);
    return 1;
}

void
cors_serialise(struct request *r, struct response *resp, struct hdrbuf *h,
               void *arg)
{
    static const char vary[] = "Vary: Origin\r\n";
    static const char expose[] =
        "Access-Control-Expose-Headers: " CORS_EXPOSE "\r\n";
    const struct cors *co = arg;
    char buf[CORS_ORIGIN_MAX + 128]; /* allow_lines() of any origin */
    int n;

    (void)resp;
    if (!co->on)
        return;
    (void)hdrbuf_add(h, vary, sizeof(vary) - 1);
    if (r->cors_origin == 0)
        return;
    n = allow_lines(co, r, buf, sizeof(buf));
    if (n)
        (void)hdrbuf_add(h, buf, (size_t)n);
    (void)hdrbuf_add(h, expose, sizeof(expose) - 1);
}
