/*
 * conn.h - a client connection: reading, framing, dispatch, writing.
 *
 * State machine (the handler for EPOLLIN depends on it):
 *
 *   IDLE ---first byte---> HEADERS ---header section---> BODY --body--+
 *     ^                       |                             |         |
 *     |                       +------- no body -------------+---------+
 *     |                                                     dispatch
 *     +---- response queued, keep-alive --------------------------+
 *
 * Any framing error, a timeout, or "Connection: close" moves it to
 * CLOSING: the final response is flushed, then the socket is closed.  When
 * unread input may remain (an error answered before the body was read,
 * pipelined requests after "Connection: close"), closing at once would make
 * the kernel send RST and the client could lose the response; such a
 * connection goes to LINGER instead: write side shut down, input read and
 * discarded until EOF or a short timeout (nginx's lingering close).
 *
 * Input: an IDLE connection owns no buffer.  Its bytes are read into the
 * worker's scratch chunk; complete requests are served from there and only
 * an unfinished request is copied into a chunk of its own (the redis
 * "shared query buffer" idea), so idle and fast connections cost no memory.
 *
 * Each state has its timer queue: HEADERS the header timeout (started at
 * the request's first byte and not extended: slowloris), BODY the body
 * timeout (extended on progress), IDLE the keep-alive timeout, and a
 * connection whose output is blocked the send timeout.
 *
 * Connections live in the worker's table indexed by fd and are never
 * freed; a closed one is unregistered at once and its fd closed after the
 * current batch of events, so a stale event can never reach a new
 * connection that reused the fd.
 */
#ifndef APIARY_CONN_H
#define APIARY_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "http_parse.h"
#include "loop.h"
#include "router.h"

struct worker;

enum conn_state {
    CONN_FREE = 0,
    CONN_IDLE,
    CONN_HEADERS,
    CONN_BODY,
    CONN_CLOSING, /* output flushing, then close; input ignored */
    CONN_LINGER   /* output sent, write side shut, draining input */
};

#define CONN_MAGIC 0x434f4e4eu

/* A request being received: parser state and the parsed header section. */
struct reqstate {
    struct http_parser parser;
    struct http_request req;
    struct http_chunked chunked;
    struct route_match match;
    int route;           /* router result */
    uint32_t header_len; /* bytes of the header section */
    uint64_t start_us;   /* first byte seen, for the access log */
    bool continue_sent;
    struct reqstate *next_free;
};

struct conn {
    struct loop_watch w; /* w.fd is the socket */
    uint32_t magic;
    uint8_t state;
    bool out_blocked; /* socket full: EPOLLOUT wanted */
    bool in_pending;  /* on worker->pending_out */
    bool ka_after;    /* keep-alive after the current response */
    bool linger;      /* unread input may remain: close gently */
    bool in_paused;   /* too many answers outstanding: not reading */
    uint16_t npending;
    struct pending *pend_head, *pend_tail; /* answers owed, in order */
    struct timer timer;
    struct chunk *in;    /* owned input (NULL: none); data [start,end) */
    struct reqstate *rs; /* request in progress, or NULL */
    struct outq out;
    struct conn *next_pending; /* worker->pending_out link */
    struct conn *next_closed;  /* worker->closing link */
    uint8_t peer[16];          /* IPv4-mapped or IPv6 address, for logs */
    uint16_t peer_port;
    uint8_t peer_family;
};

/*
 * What a route handler sees.  The request and body slices are valid only
 * during the handler call.  A handler answers exactly once, with
 * conn_reply() or conn_reply_error().
 */
struct req_ctx {
    struct worker *wk;
    struct conn *c;
    struct http_request *req;
    const struct route_match *match;
    struct http_slice body;
    int status; /* set by the reply */
    long bytes_out;
    struct pending *deferred; /* set by conn_defer() */
};

typedef void (*handler_fn)(struct req_ctx *ctx);

/*
 * Queues a JSON response.  extra holds additional header lines, each ending
 * in CRLF (may be NULL).  Keep-alive and HEAD are handled here.
 */
void conn_reply(struct req_ctx *ctx, int status, const char *body,
                size_t body_len, const char *extra, size_t extra_len);

/* Queues the JSON error body {"error":{"message":...,"code":status}}. */
void conn_reply_error(struct req_ctx *ctx, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Asynchronous answers.  A handler that must wait (for the database) calls
 * conn_defer() and returns; the connection goes on reading and answering
 * later pipelined requests, but their responses are held back so that
 * every response leaves in request order (SPEC 3), however the answers
 * arrive.  Whoever holds the slot must complete it exactly once with
 * conn_complete(); if the client has gone by then, that only frees it.
 * A connection owes at most CONN_MAX_PENDING answers; beyond that it stops
 * reading until some are sent.
 */
#define CONN_MAX_PENDING 32

struct pending;

/* Returns the slot for ctx's answer, or NULL when out of memory (the
 * handler must then reply at once, e.g. 503). */
struct pending *conn_defer(struct req_ctx *ctx);

/* Delivers the answer for slot p (and frees p). */
void conn_complete(struct pending *p, int status, const char *body,
                   size_t body_len, const char *extra, size_t extra_len);
void conn_complete_error(struct pending *p, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* False once the client of slot p has disconnected. */
int conn_pending_alive(const struct pending *p);

/* Sets up the connection for a freshly accepted socket. */
void conn_open(struct worker *wk, int fd, const struct sockaddr *sa);

/* The loop callback for a connection's socket. */
void conn_event(struct loop *loop, struct loop_watch *w, uint32_t events);

/* Unregisters and schedules the fd close; idempotent. */
void conn_close(struct worker *wk, struct conn *c, const char *why);

/* Writes pending output of every connection that has some (before sleep). */
void conn_flush_pending(struct worker *wk);

/* Closes the fds of connections closed during the last batch. */
void conn_reap_closed(struct worker *wk);

/* Timer queue callbacks. */
void conn_header_timeout(struct loop *loop, struct timer *t);
void conn_body_timeout(struct loop *loop, struct timer *t);
void conn_keepalive_timeout(struct loop *loop, struct timer *t);
void conn_send_timeout(struct loop *loop, struct timer *t);
void conn_linger_timeout(struct loop *loop, struct timer *t);

/* Graceful drain: closes this connection now if it is idle.  1 if closed. */
int conn_close_if_idle(struct worker *wk, struct conn *c);

/* Frees per-worker request-state pools (at exit, for valgrind). */
void conn_fini(void);

#endif
