/*
 * request.h - one HTTP request, from its first byte until its answer is
 * queued on the connection (or its client is gone), and the hook points
 * where cross-cutting features plug in (SPEC 3, STYLE 7).
 *
 * Life cycle of a struct request:
 *
 *   RECEIVING --header section--> [after-routing hooks] --body--> HANDLING
 *       |                               |                            |
 *       | parser error, limit, 408      | a hook answers             | handler
 *       v                               v                            v
 *   ANSWERED <------------------------------------------------ answer given
 *       |
 *       | its turn in the connection's answer order (SPEC 3: pipelined
 *       | answers leave in request order)
 *       v
 *   [serialise hooks ran when the answer was given] -> queued -> [done hooks]
 *
 * A handler either answers at once (request_reply / request_error) or
 * defers (request_defer) and answers later from a callback with the same
 * functions.  Whatever produced the answer (the parser, a limit, a
 * timeout, a hook, a handler, the database), it passes the done hooks
 * exactly once; a request whose client left before its answer was queued
 * passes them too, with status 499 and end REQUEST_END_CLIENT_GONE.
 *
 * Hook points (request_hooks_add_*; called in the order added):
 *
 *   after routing  int fn(struct request *r, void *arg)
 *       Runs once the header section is parsed and routed, before the
 *       body is read and before "100 Continue" is sent; r->req and
 *       r->match are valid, r->body is not.  It may answer (401, 429, a
 *       CORS preflight ...) and return 1: the body is then never read (the
 *       connection closes after the answer when a body was announced) and
 *       the handler does not run.  0 lets the request go on.  Also runs
 *       for requests the router rejects (404, 405), so that, e.g., a
 *       preflight OPTIONS can be answered.
 *
 *   serialise      void fn(struct request *r, struct response *resp,
 *                          struct hdrbuf *h, void *arg)
 *       Runs when an answer is given, before it is serialised: may append
 *       header lines to h (hdrbuf_add()) and may point resp->body at other
 *       bytes (gzip), which must stay valid until the hook's caller has
 *       serialised the answer, i.e. until the next hook call of the same
 *       worker (a per-worker buffer is enough).  Not run for "100
 *       Continue".
 *
 *   done           void fn(const struct request *r, void *arg)
 *       Runs exactly once per request when its answer is queued on the
 *       connection or the request ends without one (client gone).  r's
 *       status, bytes and end are final.  Access log, metrics.
 *
 * Memory: requests come from a per-worker free list (request_pool); the
 * steady state allocates nothing.  Slices in r->req point into the
 * connection's input and are valid only until the handler returns; what a
 * deferred answer or the access log needs later (method, path, request id)
 * is copied into the request when it defers (request_defer()).
 *
 * Single-threaded: one worker's loop.
 */
#ifndef APIARY_REQUEST_H
#define APIARY_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "http_parse.h"
#include "loop.h"
#include "response.h"
#include "router.h"

#define REQUEST_MAGIC 0x52455131u
#define REQUEST_PATH_MAX 160
#define REQUEST_ID_MAX 64
#define REQUEST_HOOKS_MAX 8

struct conn;
struct conn_ctx;
struct request;

/* How a request ended, for the access log and the metrics. */
enum request_end {
    REQUEST_END_OK = 0,      /* answered (any status) */
    REQUEST_END_CLIENT_GONE, /* client left before the answer was queued */
    REQUEST_END_TIMEOUT,     /* 408 or 504 from a timeout */
    REQUEST_END_REJECTED,    /* parser error or limit: answered, closed */
};

/* Called when a deferred request is answered by the core (504) or its
 * client leaves: the owner must forget r and never answer it. */
typedef void (*request_abort_fn)(struct request *r, void *arg);

struct request {
    uint32_t magic;
    uint8_t end;          /* enum request_end */
    bool head;            /* HEAD: no body in the answer */
    bool keep_alive;      /* the client allows keep-alive */
    bool continue_sent;   /* "100 Continue" queued */
    bool continue_wanted; /* owed, waiting for earlier answers */
    bool answered;        /* request_reply() ran (or it is aborted) */
    bool close_after;     /* its answer says "Connection: close" */
    bool queued;          /* in the connection's answer queue */
    bool in_handler;      /* its handler is running: do not free */
    bool copied;          /* path and id copied for the log */
    struct conn *c;       /* NULL once the client is gone */
    struct request *next; /* the connection's answer queue, free list */

    /* what arrived (slices valid until the handler returns) */
    struct http_parser parser;
    struct http_request req;
    struct http_chunked chunked;
    struct route_match match;
    int route;              /* router result (< 0: 404 / 405) */
    uint32_t header_len;    /* bytes of the header section */
    uint64_t body_mark;     /* body bytes seen at the last timer restart */
    struct http_slice body; /* valid during the handler call */

    /* the answer */
    int status;
    uint64_t bytes_in, bytes_out;
    uint64_t start_us;  /* first byte, CLOCK_MONOTONIC */
    struct outq out;    /* serialised answer waiting for its turn */
    struct timer timer; /* request timeout (504) while owed */
    request_abort_fn abort_fn;
    void *abort_arg;
    /* set by the after-routing hooks for the serialise hooks (issue 10),
     * since the request's header slices are gone by then */
    uint8_t gzip_ok;     /* Accept-Encoding allows gzip */
    uint8_t cors_origin; /* 1 + index of the allowed Origin, 0: none */

    /* copies for the access log once the input is gone */
    enum http_method method;
    uint16_t path_len;
    uint8_t rid_len;
    char path[REQUEST_PATH_MAX];
    char rid[REQUEST_ID_MAX]; /* X-Request-Id (issue 10 fills it) */
};

typedef void (*handler_fn)(struct request *r, void *arg);

typedef int (*request_route_hook_fn)(struct request *r, void *arg);
typedef void (*request_serialise_hook_fn)(struct request *r,
                                          struct response *resp,
                                          struct hdrbuf *h, void *arg);
typedef void (*request_done_hook_fn)(const struct request *r, void *arg);

struct request_hooks {
    struct {
        request_route_hook_fn fn;
        void *arg;
    } route[REQUEST_HOOKS_MAX];
    struct {
        request_serialise_hook_fn fn;
        void *arg;
    } serialise[REQUEST_HOOKS_MAX];
    struct {
        request_done_hook_fn fn;
        void *arg;
    } done[REQUEST_HOOKS_MAX];
    unsigned nroute, nserialise, ndone;
};

/* Registration: 0, or -1 when REQUEST_HOOKS_MAX are already there. */
int request_hooks_add_route(struct request_hooks *h, request_route_hook_fn fn,
                            void *arg);
int request_hooks_add_serialise(struct request_hooks *h,
                                request_serialise_hook_fn fn, void *arg);
int request_hooks_add_done(struct request_hooks *h, request_done_hook_fn fn,
                           void *arg);

/* Per-worker free list of requests. */
struct request_pool {
    struct request *free_list;
    unsigned nfree, max_free;
};

void request_pool_init(struct request_pool *p, unsigned max_free);
/* Frees every pooled request (at exit, for valgrind). */
void request_pool_fini(struct request_pool *p);
/*
 * A fresh request being received on connection c, start time now_us;
 * NULL when out of memory.  Freed with request_put() by the core only.
 */
struct request *request_get(struct request_pool *p, struct conn *c,
                            uint64_t now_us);
void request_put(struct request_pool *p, struct request **rp);

/*
 * Answers r: status, JSON body (NULL/0 for none), extra header lines each
 * ending in CRLF (NULL/0 for none).  Exactly once per request, from the
 * handler or later for a deferred request.  Keep-alive, HEAD, 204 and the
 * serialise hooks are handled here.  After it returns r must not be used
 * by the caller (it may already be freed).
 */
void request_reply(struct request *r, int status, const char *body,
                   size_t body_len, const char *extra, size_t extra_len);

/*
 * request_reply() with a Content-Type other than application/json
 * (content_type: a static string such as "text/html; charset=utf-8").
 */
void request_reply_type(struct request *r, int status, const char *content_type,
                        const char *body, size_t body_len, const char *extra,
                        size_t extra_len);

/*
 * request_reply() for a handler answering at once (not deferred, nothing
 * earlier owed on the connection) with a body read from memory that
 * another process may be writing (the shared cache): the body is copied
 * straight into the connection's output, and valid(arg) is asked after
 * that copy (and after the serialise hooks read it) and before the
 * answer is committed.  Returns 0 when answered; -1 when valid() said no
 * or the request does not qualify: then nothing was sent or changed, and
 * the caller answers some other way.
 */
int request_reply_validated(struct request *r, int status, const char *body,
                            size_t body_len, bool (*valid)(void *arg),
                            void *arg);

/* The same with the JSON error body {"error":{"message":..,"code":..}}. */
void request_error(struct request *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Defers the answer: the handler returns and answers later with
 * request_reply() or request_error().  abort_fn(r, arg) is called instead
 * if the core answers first (request timeout: 504) or the client leaves;
 * after that the owner must not touch r.  Copies what the access log needs
 * out of the input buffer.  Always succeeds.
 */
void request_defer(struct request *r, request_abort_fn abort_fn, void *arg);

/*
 * True when an earlier request of r's connection is still unanswered (a
 * pipelined request): an answer that does not go through the database
 * (the shared cache) must not overtake that client's own earlier write.
 */
bool request_owes_earlier(const struct request *r);

/* The connection core's context of r (its loop, pools, settings). */
struct conn_ctx *request_ctx(const struct request *r);

/* "127.0.0.1:5000" / "[::1]:5000" of r's client ("-" if gone). */
void request_peer(const struct request *r, char *buf, size_t cap);

#endif
