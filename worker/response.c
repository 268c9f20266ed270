/*
 * response.c - see response.h.
 */
#include "response.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

static char date_line[64] = "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
static size_t date_len = 37;

static const char *const wdays[] = {"Sun", "Mon", "Tue", "Wed",
                                    "Thu", "Fri", "Sat"};
static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
                                     "May", "Jun", "Jul", "Aug",
                                     "Sep", "Oct", "Nov", "Dec"};

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
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
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
    size_t need = HEAD_FIXED_MAX + reason_len + date_len + r->extra_len;
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
        PUT(o, "Content-Type: application/json\r\nContent-Length: ");
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
    if (body && need >= (size_t)(o - start) + body) {
        memcpy(o, r->body, body);
        o += body;
        body = 0;
    }
    outq_commit(q, (size_t)(o - start));
    if (body && outq_append(q, p, r->body, body) < 0)
        return -1;
    return (long)((size_t)(o - start) + (r->head ? 0 : r->body_len));
}

size_t
response_error_body(char *buf, size_t cap, int status, const char *message)
{
    char esc[512];
    int n;

    log_json_escape(esc, sizeof(esc), message, strlen(message));
    n = snprintf(buf, cap, "{\"error\":{\"message\":\"%s\",\"code\":%d}}",
                 esc, status);
    if (n < 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}
