/*
 * response.h - HTTP/1.1 response serialisation.
 *
 * A response is written straight into a connection's output queue: status
 * line, the fixed headers (Server, Date, Content-Type, Content-Length,
 * Connection), optional extra header lines, then the body, in one reserve of
 * the tail chunk when it fits (the usual case), so a small response is one
 * memcpy-like pass and no allocation.
 *
 * The Date header is formatted once per second by response_date_update()
 * (called from the worker's 1 s tick), never per request.
 */
#ifndef APIARY_RESPONSE_H
#define APIARY_RESPONSE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "buf.h"

struct response {
    int status;
    const char *body; /* NULL for none */
    size_t body_len;
    const char *extra; /* extra header lines, each ending in CRLF */
    size_t extra_len;
    bool head; /* HEAD: headers only, Content-Length kept */
    bool keep_alive;
    bool no_body_headers;     /* 204 / 304: no Content-Type/-Length */
    const char *content_type; /* NULL: application/json */
    /*
     * Optional: body is read from memory another process may be changing
     * (the shared cache); valid(valid_arg) is asked after the body is
     * copied and before anything is committed, and false leaves q as it
     * was (response_write returns -2).  Only for a body that fits one
     * chunk with the head (else -2 too).
     */
    bool (*valid)(void *valid_arg);
    void *valid_arg;
};

/*
 * Extra header lines gathered for one response (the handler's, then the
 * serialise hooks').  A line that does not fit is dropped and overflow
 * set; the caller logs it.
 */
#define HDRBUF_BYTES 1024

struct hdrbuf {
    size_t len;
    bool overflow;
    char buf[HDRBUF_BYTES];
};

/* Appends n bytes (one or more complete "Name: value\r\n" lines).
 * 0, or -1 (and overflow set) when they do not fit. */
int hdrbuf_add(struct hdrbuf *h, const char *lines, size_t n);

/* Reformats the cached Date header for time now (seconds). */
void response_date_update(time_t now);

/* The reason phrase for a status ("Not Found"); "Unknown" if not listed. */
const char *response_reason(int status);

/*
 * Appends the serialised response to q.  Returns the number of bytes
 * appended, -1 when out of memory (q may then hold a partial response:
 * the caller must close the connection), or -2 when r->valid said no
 * (nothing appended).
 */
long response_write(struct outq *q, struct bufpool *p,
                    const struct response *r);

/*
 * Formats the JSON error body {"error":{"message":"...","code":N}} into
 * buf (cap bytes), escaping the message.  Returns the length.
 */
size_t response_error_body(char *buf, size_t cap, int status,
                           const char *message);

/* The same with a printf-style message. */
size_t response_error_vbody(char *buf, size_t cap, int status, const char *fmt,
                            va_list ap) __attribute__((format(printf, 4, 0)));

#endif
