/*
 * conn.h - the connection core: client connections of one worker, their
 * state machine, timeouts and output, driven by a struct conn_ctx that the
 * owner (the worker, or a unit test with socketpairs and a fake clock)
 * sets up and passes in.  Nothing here reaches for a global.
 *
 * State machine (the handler for EPOLLIN depends on it):
 *
 *   IDLE ---first byte---> HEADERS ---header section---> BODY --body--+
 *     ^                       |                             |         |
 *     |                       +------- no body -------------+---------+
 *     |                                                     dispatch
 *     +---- request handed to its handler, keep-alive ------------+
 *
 * The request being received is c->rs (struct request, request.h); once
 * dispatched it leaves c->rs, and if its answer is not immediate it joins
 * the connection's answer queue (c->owed_head..), where answers wait for
 * their turn so that pipelined answers leave in request order (answer.c).
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
 * context's scratch chunk; complete requests are served from there and
 * only an unfinished request is copied into a chunk of its own (the redis
 * "shared query buffer" idea), so idle and fast connections cost no
 * memory.  A body grows its buffer as it arrives (doubling, up to what the
 * request needs), never to the declared Content-Length up front: a client
 * trickling a large body pins one standard chunk, not max_body_bytes.
 *
 * Timeouts, one timer per connection, in the queue its state calls for:
 *   HEADERS   header_timeout from the request's first byte, not extended
 *             (slowloris);
 *   BODY      body_timeout, restarted only by progress of at least
 *             CONN_BODY_PROGRESS_BYTES (or the end of the body), so a
 *             trickle of a few bytes per interval does not keep it alive;
 *   idle      keepalive_timeout from the last answer written: a connection
 *             that keeps sending requests is never closed by it;
 *   owed      none: while an answer is owed and no new request is
 *             arriving, only the request timeout runs (504, answer.c);
 *   blocked   send_timeout while the socket does not take our output;
 *   LINGER    a short fixed time.
 *
 * Connections live in the context's table indexed by fd and are never
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
#include "request.h"
#include "router.h"

#define CONN_MAGIC 0x434f4e4eu
#define CONN_CTX_MAGIC 0x43435458u

/* A connection owes at most this many answers; beyond, it stops reading. */
#define CONN_MAX_PENDING 32
/* Body progress that restarts the body timeout. */
#define CONN_BODY_PROGRESS_BYTES 1024

enum conn_state {
    CONN_FREE = 0,
    CONN_IDLE,
    CONN_HEADERS,
    CONN_BODY,
    CONN_CLOSING, /* output flushing, then close; input ignored */
    CONN_LINGER   /* output sent, write side shut, draining input */
};

struct conn_ctx;

struct conn {
    struct loop_watch w; /* w.fd is the socket */
    uint32_t magic;
    uint8_t state;
    bool out_blocked; /* socket full: EPOLLOUT wanted */
    bool in_pending;  /* on ctx->pending_out */
    bool linger;      /* unread input may remain: close gently */
    bool in_paused;   /* too many answers outstanding: not reading */
    bool in_input;    /* process_input() is running */
    uint8_t peer_family;
    uint16_t peer_port;
    uint16_t nowed;                        /* answers owed or waiting */
    struct request *owed_head, *owed_tail; /* in request order */
    struct conn_ctx *ctx;
    struct timer timer;
    struct chunk *in;     /* owned input (NULL: none); data [start,end) */
    struct chunk *cur_in; /* buffer process_input() is reading */
    struct request *rs;   /* request being received, or NULL */
    struct outq out;
    struct conn *next_pending; /* ctx->pending_out link */
    struct conn *next_closed;  /* ctx->closing link */
    uint8_t peer[16];          /* IPv4 or IPv6 address, for logs */
};

/* What the core needs to know, fixed for the life of the context. */
struct conn_settings {
    unsigned worker_id; /* for logs */
    struct http_limits limits;
    uint32_t header_timeout_ms;
    uint32_t body_timeout_ms;
    uint32_t keepalive_timeout_ms;
    uint32_t send_timeout_ms;
    uint32_t linger_ms;
    uint32_t request_timeout_ms; /* owed answer: 504 after this */
    uint64_t output_buffer_limit;
    uint32_t out_chunk_bytes;
    unsigned max_fds; /* size of the connection table */
};

typedef void (*conn_closed_fn)(struct conn_ctx *ctx, void *arg);
/*
 * Hand-over of idle connections (reload, upgrade: SPEC 4): offered an
 * idle connection (nothing read, owed or unsent); returns 0 once its
 * descriptor is on its way to the new owner (the core then closes its own
 * copy and forgets the connection), or -1 to keep it for now.
 */
typedef int (*conn_handover_fn)(struct conn_ctx *ctx, struct conn *c,
                                void *arg);

struct conn_ctx {
    uint32_t magic;
    struct loop *loop;
    const struct router *router;
    struct conn_settings set;
    size_t header_cap; /* input bytes a header section may need */

    struct conn *conns; /* indexed by fd */
    unsigned nconns;

    struct bufpool in_pool;  /* request input, sized for a header section */
    struct bufpool out_pool; /* response output */
    struct chunk *scratch;   /* shared read buffer for idle connections */
    struct request_pool requests;
    struct request_hooks hooks;

    struct timer_queue header_q, body_q, keepalive_q, send_q, linger_q;
    struct timer_queue request_q; /* request timeout (504) */
    struct conn *pending_out;     /* connections with output to write */
    struct conn *closing;         /* closed this batch, fds not yet closed */

    bool draining; /* graceful shutdown: answers close their connection */
    conn_handover_fn handover; /* set: idle connections are handed over */

    conn_closed_fn on_closed; /* after every close (accept resume ...) */
    void *owner;

    uint64_t nrequests; /* requests that reached their done point */
};

/*
 * Sets ctx up on loop: buffers, the connection table, the timer queues
 * (registered with the loop).  The router and the hooks (ctx->hooks, fill
 * them after init) are the owner's.  0, or -1 with errno set (out of
 * memory, too many timer queues).
 */
int conn_ctx_init(struct conn_ctx *ctx, struct loop *loop,
                  const struct router *router, const struct conn_settings *s);

/* Closes every connection (their fds at once) and frees what ctx owns. */
void conn_ctx_fini(struct conn_ctx *ctx);

/*
 * Takes a freshly accepted non-blocking socket.  Returns the connection,
 * or NULL after closing fd (fd beyond the table, epoll failure).
 */
struct conn *conn_open(struct conn_ctx *ctx, int fd, const struct sockaddr *sa);

/* Unregisters c and schedules its fd close; idempotent. */
void conn_close(struct conn *c, const char *why);

/* Before the loop sleeps: writes the output of every connection with some. */
void conn_ctx_flush(struct conn_ctx *ctx);

/* After a batch of events: closes the fds of connections closed in it. */
void conn_ctx_reap(struct conn_ctx *ctx);

/*
 * Graceful drain: closes idle connections now; from here on every answer
 * that ends a connection's work says "Connection: close" and the
 * connection closes once it has nothing more to send.
 */
void conn_ctx_drain(struct conn_ctx *ctx);

/*
 * Retiring (reload, upgrade): from now on every connection that is idle,
 * or goes idle, is offered to fn (see conn_handover_fn) instead of being
 * kept; answers keep their keep-alive.  Offers the idle ones now; call it
 * again (same fn) to offer those fn refused before.  A later
 * conn_ctx_drain() closes what could not be handed over.
 */
void conn_ctx_hand_over(struct conn_ctx *ctx, conn_handover_fn fn);

/*
 * Adopts a connection handed over by a retiring worker: fd is a connected
 * non-blocking socket that was idle (no request started).  It starts in
 * the keep-alive state.  Returns it, or NULL after closing fd.
 */
struct conn *conn_adopt(struct conn_ctx *ctx, int fd);

/* "127.0.0.1:5000" or "[::1]:5000". */
void conn_peer_str(const struct conn *c, char *buf, size_t cap);

#endif
