/*
 * request_id.c - see request_id.h.
 */
#include "request_id.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

int
request_id_init(struct request_id *ri)
{
    uint64_t seed;
    int rc = 0;

    if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^
               ((uint64_t)getpid() << 16);
        rc = -1;
    }
    snprintf(ri->prefix, sizeof(ri->prefix), "%016llx",
             (unsigned long long)seed);
    ri->counter = 0;
    return rc;
}

int
request_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > REQUEST_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        /* visible ASCII; no quote or backslash, so logs need no escapes */
        if (ch < 0x21 || ch > 0x7e || ch == '"' || ch == '\\')
            return 0;
    }
    return 1;
}

/* "<prefix>-<counter in hex>" without printf: this runs per request. */
static void
generate(struct request_id *ri, struct request *r)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t c = ++ri->counter;
    char tmp[16];
    size_t n = 0;

    memcpy(r->rid, ri->prefix, 16);
    r->rid[16] = '-';
    do {
        tmp[n++] = hex[c & 15];
        c >>= 4;
    } while (c);
    for (size_t i = 0; i < n; i++)
        r->rid[17 + i] = tmp[n - 1 - i];
    r->rid_len = (uint8_t)(17 + n);
}

int
request_id_route(struct request *r, void *arg)
{
    const struct http_slice *s = &r->req.request_id;

    if (request_id_valid(s->ptr, s->len)) {
        memcpy(r->rid, s->ptr, s->len);
        r->rid_len = (uint8_t)s->len;
    } else {
        generate(arg, r);
    }
    return 0;
}

void
request_id_serialise(struct request *r, struct response *resp, struct hdrbuf *h,
                     void *arg)
{
    static const char name[] = "X-Request-Id: ";
    char line[sizeof(name) + REQUEST_ID_MAX + 2];
    size_t n = sizeof(name) - 1;

    (void)resp;
    if (r->rid_len == 0)
        generate(arg, r);
    memcpy(line, name, n);
    memcpy(line + n, r->rid, r->rid_len);
    n += r->rid_len;
    line[n++] = '\r';
    line[n++] = '\n';
    (void)hdrbuf_add(h, line, n);
}
