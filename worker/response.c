/*
 * response.c - see response.h.
 */
#include "response.h"

#include <stdio.h>
#include <string.h>

static char date_line[64] = "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
static size_t date_len = 37;

static const char *const wdays[] = {"Sun", "Mon", "Tue", "Wed",
                                    "Thu", "Fri", "Sat"};
static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void
response_date_update(time_t now)
{
    struct tm tm;
    int n;

    gmtime_r(&now, &tm);
    /* IMF-fixdate, RFC 9110 section 5.6.7 */
    n = snprintf(date_line, sizeof(date_line),
                 "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
                 wdays[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
                 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (n > 0 && (size_t)n < sizeof(date_line))
        date_len = (size_t)n;
}

const char *
response_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/* Appends decimal v to p; returns the new end. */
static char *
put_u64(char *p, unsigned long long v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

#define PUT(p, lit)                                                            \
    do {                                                                       \
        memcpy((p), (lit), sizeof(lit) - 1);                                   \
        (p) += sizeof(lit) - 1;                                                \
    } while (0)

/* Longest fixed part: status line + fixed headers, without Date/extra. */
#define HEAD_FIXED_MAX 256

long
response_write(struct outq *q, struct bufpool *p, const struct response *r)
{
    const char *reason = response_reason(r->status);
    size_t reason_len = strlen(reason);
    size_t body = r->head ? 0 : r->body_len;
    size_t need = HEAD_FIXED_MAX + reason_len + date_len + r->extra_len +
                  (r->content_type ? strlen(r->content_type) : 0);
    size_t head_len;
    char *start, *o;

    if (need + body <= p->chunk_bytes)
        need += body;
    if (need > p->chunk_bytes)
        return -1; /* extra headers that large are a bug of ours */
    start = o = outq_reserve(q, p, need);
    if (start == NULL)
        return -1;

    PUT(o, "HTTP/1.1 ");
    o = put_u64(o, (unsigned)r->status);
    *o++ = ' ';
    memcpy(o, reason, reason_len);
    o += reason_len;
    PUT(o, "\r\nServer: apiary\r\n");
    memcpy(o, date_line, date_len);
    o += date_len;
    if (!r->no_body_headers) {
        if (r->content_type) {
            size_t ct = strlen(r->content_type);
            PUT(o, "Content-Type: ");
            memcpy(o, r->content_type, ct);
            o += ct;
            PUT(o, "\r\nContent-Length: ");
        } else {
            PUT(o, "Content-Type: application/json\r\nContent-Length: ");
        }
        o = put_u64(o, r->body_len);
        PUT(o, "\r\n");
    }
    if (r->keep_alive)
        PUT(o, "Connection: keep-alive\r\n");
    else
        PUT(o, "Connection: close\r\n");
    if (r->extra_len) {
        memcpy(o, r->extra, r->extra_len);
        o += r->extra_len;
    }
    PUT(o, "\r\n");
    head_len = (size_t)(o - start);
    if (body && need >= head_len + body) {
        memcpy(o, r->body, body);
        o += body;
        body = 0;
    }
    if (r->valid && (body || !r->valid(r->valid_arg)))
        return -2; /* the copy may be torn: commit nothing */
    outq_commit(q, (size_t)(o - start));
    if (body && outq_append(q, p, r->body, body) < 0)
        return -1;
    return (long)(head_len + (r->head ? 0 : r->body_len));
}

/* Length of the valid UTF-8 sequence at s (RFC 3629), or 0. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;

    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0; /* overlong */
    else if (c == 0xED)
        hi = 0x9F; /* surrogates */
    else if (c == 0xF0)
        lo = 0x90; /* overlong */
    else if (c == 0xF4)
        hi = 0x8F; /* beyond U+10FFFF */
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/*
 * JSON-escapes a message for a response body: valid UTF-8 is kept (a
 * client's "/café" comes back as such), invalid bytes become U+FFFD, and
 * control characters, quotes and backslashes are escaped.  Truncates with
 * "..." rather than cutting a sequence.
 */
static size_t
escape_message(char *dst, size_t cap, const char *src, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0;

    for (size_t i = 0; i < n;) {
        char tmp[8];
        size_t k = 0, adv = 1;
        unsigned char c = s[i];

        if (c == '"' || c == '\\') {
            tmp[k++] = '\\';
            tmp[k++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            tmp[k++] = '\\';
            tmp[k++] = 'u';
            tmp[k++] = '0';
            tmp[k++] = '0';
            tmp[k++] = hex[c >> 4];
            tmp[k++] = hex[c & 15];
        } else if (c < 0x80) {
            tmp[k++] = (char)c;
        } else if ((adv = utf8_seq(s + i, n - i)) > 0) {
            memcpy(tmp, s + i, adv);
            k = adv;
        } else {
            memcpy(tmp, "\\ufffd", 6);
            k = 6;
            adv = 1;
        }
        if (o + k + 4 > cap) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(dst + o, tmp, k);
        o += k;
        i += adv;
    }
    dst[o] = '\0';
    return o;
}

size_t
response_error_body(char *buf, size_t cap, int status, const char *message)
{
    char esc[512];
    int n;

    escape_message(esc, sizeof(esc), message, strlen(message));
    n = snprintf(buf, cap, "{\"error\":{\"message\":\"%s\",\"code\":%d}}", esc,
                 status);
    if (n < 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

size_t
response_error_vbody(char *buf, size_t cap, int status, const char *fmt,
                     va_list ap)
{
    char msg[600];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    return response_error_body(buf, cap, status, msg);
}

int
hdrbuf_add(struct hdrbuf *h, const char *lines, size_t n)
{
    if (n > sizeof(h->buf) - h->len) {
        h->overflow = true;
        return -1;
    }
    memcpy(h->buf + h->len, lines, n);
    h->len += n;
    return 0;
}
