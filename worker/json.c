/*
 * json.c - see json.h.
 */
#include "json.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"

static bool
reserve(struct jbuf *b, size_t n)
{
    size_t cap;
    char *p;

    if (b->failed)
        return false;
    if (b->len + n <= b->cap)
        return true;
    cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
        cap *= 2;
    p = realloc(b->p, cap);
    if (p == NULL) {
        b->failed = true;
        return false;
    }
    buf_allocs++;
    b->p = p;
    b->cap = cap;
    return true;
}

void
json_reset(struct jbuf *b)
{
    b->len = 0;
    b->failed = false;
}

void
json_fini(struct jbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

bool
json_failed(const struct jbuf *b)
{
    return b->failed;
}

void
json_raw(struct jbuf *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

void
json_str(struct jbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *o;

    /* worst case: every byte becomes \u00XX */
    if (!reserve(b, n * 6 + 2))
        return;
    o = b->p + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"':
        case '\\':
            *o++ = (char)c;
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
}

void
json_i64(struct jbuf *b, int64_t v)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (!reserve(b, (size_t)n + 1))
        return;
    if (v < 0)
        b->p[b->len++] = '-';
    while (n)
        b->p[b->len++] = tmp[--n];
}

static char *
put2(char *o, int v)
{
    *o++ = (char)('0' + v / 10);
    *o++ = (char)('0' + v % 10);
    return o;
}

void
json_ts_us(struct jbuf *b, int64_t us)
{
    int64_t secs = us / 1000000, frac = us % 1000000;
    struct tm tm;
    time_t t;
    char *o;

    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    t = (time_t)secs;
    gmtime_r(&t, &tm);
    if (!reserve(b, 32))
        return;
    o = b->p + b->len;
    *o++ = '"';
    o = put2(o, (tm.tm_year + 1900) / 100);
    o = put2(o, (tm.tm_year + 1900) % 100);
    *o++ = '-';
    o = put2(o, tm.tm_mon + 1);
    *o++ = '-';
    o = put2(o, tm.tm_mday);
    *o++ = 'T';
    o = put2(o, tm.tm_hour);
    *o++ = ':';
    o = put2(o, tm.tm_min);
    *o++ = ':';
    o = put2(o, tm.tm_sec);
    *o++ = '.';
    for (int d = 100000; d >= 1; d /= 10)
        *o++ = (char)('0' + (frac / d) % 10);
    *o++ = 'Z';
    *o++ = '"';
    b->len = (size_t)(o - b->p);
}
