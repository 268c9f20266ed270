/*
 * conn.c - the connection state machine; see conn.h for the states, the
 * buffers and the timers, answer.c for answers and their order.
 *
 * Flow of one readable event:
 *   conn_read()      one read(2) into the connection's buffer (or scratch)
 *   process_input()  parse, route, run the after-routing hooks, read the
 *                    body, dispatch: every complete request in order
 *   keep_leftover()  move an unfinished request into a buffer of its own
 *   conn_arm_timer() put the connection in the timer queue of its state
 * Responses are appended to c->out and written by conn_ctx_flush() just
 * before the loop sleeps, so pipelined responses leave in one writev.
 */
#include "conn.h"
#include "conn_priv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "response.h"

#define REQUEST_FREE_MAX 1024

static void conn_event(struct loop *loop, struct loop_watch *w,
                       uint32_t events);
static void header_timeout(struct loop *loop, struct timer *t);
static void body_timeout(struct loop *loop, struct timer *t);
static void keepalive_timeout(struct loop *loop, struct timer *t);
static void send_timeout(struct loop *loop, struct timer *t);
static void linger_timeout(struct loop *loop, struct timer *t);

uint64_t
conn_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void
conn_peer_str(const struct conn *c, char *buf, size_t cap)
{
    char addr[INET6_ADDRSTRLEN];

    if (c->peer_family == AF_INET) {
        inet_ntop(AF_INET, c->peer, addr, sizeof(addr));
        snprintf(buf, cap, "%s:%u", addr, c->peer_port);
    } else if (c->peer_family == AF_INET6) {
        inet_ntop(AF_INET6, c->peer, addr, sizeof(addr));
        snprintf(buf, cap, "[%s]:%u", addr, c->peer_port);
    } else {
        snprintf(buf, cap, "unix");
    }
}

/* ---- context ---- */

int
conn_ctx_init(struct conn_ctx *ctx, struct loop *loop,
              const struct router *router, const struct conn_settings *s)
{
    const struct http_limits *lim = &s->limits;
    uint32_t hdr;

    memset(ctx, 0, sizeof(*ctx));
    ctx->magic = CONN_CTX_MAGIC;
    ctx->loop = loop;
    ctx->router = router;
    ctx->set = *s;
    /* leading empty lines + request line + CRLF + fields + one more byte */
    ctx->header_cap =
        16 + (size_t)lim->max_request_line + 2 + lim->max_header_bytes + 2;
    hdr = (uint32_t)((ctx->header_cap + 4095) & ~(size_t)4095);
    if (hdr < 16384)
        hdr = 16384;
    /* calloc of a large table is fresh zero pages: untouched fds cost
     * nothing */
    ctx->conns = calloc(s->max_fds, sizeof(struct conn));
    if (ctx->conns == NULL)
        return -1;
    bufpool_init(&ctx->in_pool, hdr, 64);
    bufpool_init(&ctx->out_pool, s->out_chunk_bytes, 256);
    request_pool_init(&ctx->requests, REQUEST_FREE_MAX);
    ctx->scratch = bufpool_get(&ctx->in_pool, hdr);
    if (ctx->scratch == NULL) {
        free(ctx->conns);
        ctx->conns = NULL;
        errno = ENOMEM;
        return -1;
    }
    timer_queue_init(&ctx->header_q, s->header_timeout_ms, header_timeout);
    timer_queue_init(&ctx->body_q, s->body_timeout_ms, body_timeout);
    timer_queue_init(&ctx->keepalive_q, s->keepalive_timeout_ms,
                     keepalive_timeout);
    timer_queue_init(&ctx->send_q, s->send_timeout_ms, send_timeout);
    timer_queue_init(&ctx->linger_q, s->linger_ms, linger_timeout);
    timer_queue_init(&ctx->request_q, s->request_timeout_ms,
                     answer_request_timeout);
    if (loop_add_queue(loop, &ctx->header_q) < 0 ||
        loop_add_queue(loop, &ctx->body_q) < 0 ||
        loop_add_queue(loop, &ctx->keepalive_q) < 0 ||
        loop_add_queue(loop, &ctx->send_q) < 0 ||
        loop_add_queue(loop, &ctx->linger_q) < 0 ||
        loop_add_queue(loop, &ctx->request_q) < 0) {
        conn_ctx_fini(ctx);
        errno = ENOSPC;
        return -1;
    }
    return 0;
}

void
conn_ctx_fini(struct conn_ctx *ctx)
{
    if (ctx->magic != CONN_CTX_MAGIC)
        return;
    if (ctx->conns) {
        for (unsigned fd = 0; fd < ctx->set.max_fds; fd++)
            if (ctx->conns[fd].state != CONN_FREE)
                conn_close(&ctx->conns[fd], "worker exiting");
        conn_ctx_reap(ctx);
        free(ctx->conns);
        ctx->conns = NULL;
    }
    bufpool_put(&ctx->in_pool, &ctx->scratch);
    bufpool_fini(&ctx->in_pool);
    bufpool_fini(&ctx->out_pool);
    request_pool_fini(&ctx->requests);
    ctx->magic = 0;
}

/* ---- interest and timers ---- */

void
conn_update_mask(struct conn *c)
{
    uint32_t mask = 0;

    switch (c->state) {
    case CONN_IDLE:
    case CONN_HEADERS:
    case CONN_BODY:
        if (!c->in_paused)
            mask |= EPOLLIN;
        break;
    case CONN_LINGER:
        mask |= EPOLLIN;
        break;
    default:
        break;
    }
    if (c->out_blocked)
        mask |= EPOLLOUT;
    if (loop_mod(c->ctx->loop, &c->w, mask) < 0)
        log_error("epoll_ctl(MOD) failed for fd %d: %s", c->w.fd,
                  strerror(errno));
}

void
conn_queue_output(struct conn *c)
{
    struct conn_ctx *ctx = c->ctx;

    if (c->in_pending)
        return;
    c->in_pending = true;
    c->next_pending = ctx->pending_out;
    ctx->pending_out = c;
}

void
conn_arm_timer(struct conn *c)
{
    struct conn_ctx *ctx = c->ctx;
    struct timer_queue *q;

    if (c->out_blocked) {
        if (c->timer.queue != &ctx->send_q)
            timer_start(ctx->loop, &ctx->send_q, &c->timer);
        return;
    }
    switch (c->state) {
    case CONN_HEADERS:
        q = &ctx->header_q; /* not extended by progress: slowloris */
        if (c->timer.queue == q)
            return;
        break;
    case CONN_BODY:
        q = &ctx->body_q; /* restarted by real progress only (conn_read) */
        if (c->timer.queue == q)
            return;
        break;
    case CONN_IDLE:
        if (c->owed_head) {
            /* an answer is owed: the request timeout runs, not ours */
            timer_stop(&c->timer);
            return;
        }
        q = &ctx->keepalive_q;
        if (c->timer.queue == q)
            return;
        break;
    case CONN_CLOSING:
        timer_stop(&c->timer); /* owed answers: their request timeout */
        return;
    case CONN_LINGER:
        q = &ctx->linger_q;
        if (c->timer.queue == q)
            return;
        break;
    default:
        return;
    }
    timer_start(ctx->loop, q, &c->timer);
}

/* ---- open and close ---- */

struct conn *
conn_open(struct conn_ctx *ctx, int fd, const struct sockaddr *sa)
{
    struct conn *c;

    if (fd < 0 || (unsigned)fd >= ctx->set.max_fds) {
        log_error("accepted fd %d beyond the connection table (%u)", fd,
                  ctx->set.max_fds);
        (void)close(fd);
        return NULL;
    }
    c = &ctx->conns[fd];
    memset(c, 0, sizeof(*c));
    c->magic = CONN_MAGIC;
    c->state = CONN_IDLE;
    c->ctx = ctx;
    timer_init(&c->timer);
    outq_init(&c->out);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        memcpy(c->peer, &sin->sin_addr, 4);
        c->peer_port = ntohs(sin->sin_port);
        c->peer_family = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        memcpy(c->peer, &sin6->sin6_addr, 16);
        c->peer_port = ntohs(sin6->sin6_port);
        c->peer_family = AF_INET6;
    }
    if (loop_add(ctx->loop, &c->w, fd, EPOLLIN, conn_event) < 0) {
        log_error("epoll_ctl(ADD) failed for fd %d: %s", fd, strerror(errno));
        c->state = CONN_FREE;
        c->magic = 0;
        (void)close(fd);
        return NULL;
    }
    ctx->nconns++;
    /* the first request gets the header timeout, like nginx */
    timer_start(ctx->loop, &ctx->header_q, &c->timer);
    return c;
}

void
conn_close(struct conn *c, const char *why)
{
    struct conn_ctx *ctx = c->ctx;

    if (c->state == CONN_FREE)
        return;
    log_debug("closing connection fd %d: %s", c->w.fd, why);
    if (loop_del(ctx->loop, &c->w) < 0)
        log_error("epoll_ctl(DEL) failed for fd %d: %s", c->w.fd,
                  strerror(errno));
    timer_stop(&c->timer);
    /* requests still held end here: abort, done hooks (before the input
     * their slices point into goes back to the pool) */
    answer_client_gone(c);
    outq_clear(&c->out, &ctx->out_pool);
    /* a handler may still hold slices of the input: process_input()
     * returns it once the handler is back */
    if (!c->in_input)
        bufpool_put(&ctx->in_pool, &c->in);
    c->state = CONN_FREE;
    c->next_closed = ctx->closing;
    ctx->closing = c;
    ctx->nconns--;
    if (ctx->on_closed)
        ctx->on_closed(ctx, ctx->owner);
}

void
conn_ctx_reap(struct conn_ctx *ctx)
{
    while (ctx->closing) {
        struct conn *c = ctx->closing;
        ctx->closing = c->next_closed;
        c->magic = 0;
        if (close(c->w.fd) < 0)
            log_error("close() failed for fd %d: %s", c->w.fd, strerror(errno));
    }
}

/* Output is flushed on a CLOSING connection: close, gently if needed. */
static void
finish_close(struct conn *c)
{
    if (!c->linger) {
        conn_close(c, "response sent, connection: close");
        return;
    }
    if (shutdown(c->w.fd, SHUT_WR) < 0) {
        conn_close(c, "shutdown() failed");
        return;
    }
    c->state = CONN_LINGER;
    conn_update_mask(c);
    conn_arm_timer(c);
}

/*
 * Nothing more to do for c in a drain: hand it over (retiring, see
 * conn_ctx_hand_over(); the one addition this file has for reload and
 * upgrade, the state machine is unchanged) or close it.
 */
static bool
drain_idle(struct conn *c)
{
    struct conn_ctx *ctx = c->ctx;

    if ((!ctx->draining && !ctx->handover) || c->state != CONN_IDLE || c->rs ||
        c->owed_head || c->out.bytes > 0 ||
        (c->in && c->in->start < c->in->end))
        return false;
    if (ctx->handover && ctx->handover(ctx, c, ctx->owner) == 0) {
        conn_close(c, "handed over to the new generation");
        return true;
    }
    if (!ctx->draining)
        return false; /* offered again later */
    conn_close(c, "shutting down");
    return true;
}

static void
conn_write(struct conn *c)
{
    struct conn_ctx *ctx = c->ctx;
    ssize_t n;

    if (c->state == CONN_FREE || c->state == CONN_LINGER)
        return;
    n = outq_write(&c->out, c->w.fd, &ctx->out_pool);
    if (n < 0 && errno != EAGAIN) {
        conn_close(c, errno == EPIPE || errno == ECONNRESET
                          ? "client reset the connection"
                          : "write() failed");
        return;
    }
    if (c->out.bytes == 0) {
        if (c->out_blocked) {
            c->out_blocked = false;
            conn_update_mask(c);
        }
        if (c->owed_head) {
            conn_arm_timer(c);
            return; /* answers still to come */
        }
        if (c->state == CONN_CLOSING) {
            finish_close(c);
            return;
        }
        if (drain_idle(c))
            return;
        if (c->state == CONN_IDLE && n > 0) {
            /* keep-alive counts from the last answer written (SPEC 3) */
            timer_start(ctx->loop, &ctx->keepalive_q, &c->timer);
            return;
        }
        conn_arm_timer(c);
        return;
    }
    if (!c->out_blocked) {
        c->out_blocked = true;
        conn_update_mask(c);
        timer_start(ctx->loop, &ctx->send_q, &c->timer);
    } else if (n > 0) {
        timer_start(ctx->loop, &ctx->send_q, &c->timer); /* progress */
    }
}

void
conn_ctx_flush(struct conn_ctx *ctx)
{
    while (ctx->pending_out) {
        struct conn *c = ctx->pending_out;
        ctx->pending_out = c->next_pending;
        c->in_pending = false;
        if (c->state != CONN_FREE)
            conn_write(c);
    }
}

void
conn_ctx_drain(struct conn_ctx *ctx)
{
    ctx->draining = true;
    for (unsigned fd = 0; fd < ctx->set.max_fds; fd++) {
        struct conn *c = &ctx->conns[fd];
        if (c->state != CONN_FREE && c->magic == CONN_MAGIC)
            (void)drain_idle(c);
    }
}

void
conn_ctx_hand_over(struct conn_ctx *ctx, conn_handover_fn fn)
{
    ctx->handover = fn;
    for (unsigned fd = 0; fd < ctx->set.max_fds; fd++) {
        struct conn *c = &ctx->conns[fd];
        if (c->state != CONN_FREE && c->magic == CONN_MAGIC)
            (void)drain_idle(c);
    }
}

struct conn *
conn_adopt(struct conn_ctx *ctx, int fd)
{
    struct sockaddr_storage ss = {0};
    socklen_t sl = sizeof(ss);
    struct conn *c;

    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
        ss.ss_family = AF_UNSPEC; /* logged as "unix"; still served */
    c = conn_open(ctx, fd, (struct sockaddr *)&ss);
    if (c)
        timer_start(ctx->loop, &ctx->keepalive_q, &c->timer);
    return c;
}

/* ---- input ---- */

static void process_input(struct conn *c, struct chunk *b);
static int keep_leftover(struct conn *c, struct chunk *b);

void
conn_answers_moved(struct conn *c)
{
    struct conn_ctx *ctx = c->ctx;

    if (c->state == CONN_FREE)
        return;
    conn_queue_output(c);
    if (c->out.bytes > ctx->set.output_buffer_limit) {
        char peer[64];
        conn_peer_str(c, peer, sizeof(peer));
        log_info("client %s is not reading its responses: %llu bytes "
                 "unsent, over output_buffer_limit; closing",
                 peer, (unsigned long long)c->out.bytes);
        conn_close(c, "output buffer limit");
        return;
    }
    if (c->owed_head == NULL && c->rs && c->rs->continue_wanted)
        answer_continue(c);
    if (c->in_paused && c->nowed < CONN_MAX_PENDING) {
        /* answers went out: serve the requests already buffered */
        c->in_paused = false;
        if (c->in && c->in->start < c->in->end && c->state != CONN_CLOSING &&
            !c->in_input) {
            process_input(c, c->in);
            if (c->state == CONN_FREE)
                return;
            if (c->state != CONN_CLOSING && keep_leftover(c, c->in) < 0)
                return;
        }
        conn_update_mask(c);
    }
    if (!c->in_input)
        conn_arm_timer(c);
}

static void
route_error(struct request *r)
{
    const struct http_request *req = &r->req;
    char allow[128], extra[160], msg[600], body[1024];
    size_t len;
    int n;

    if (req->method == HTTP_OPTIONS && req->path.len == 1 &&
        req->path.ptr[0] == '*') {
        /* RFC 9110 9.3.7: OPTIONS * asks about the server as a whole */
        router_allow_string(router_methods(r->c->ctx->router) |
                                1u << HTTP_OPTIONS,
                            allow, sizeof(allow));
        n = snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
        request_reply(r, 200, NULL, 0, extra, (size_t)n);
        return;
    }
    if (r->route == ROUTER_NOT_FOUND) {
        request_error(r, 404, "Not found: %.*s", (int)req->path.len,
                      req->path.ptr);
        return;
    }
    router_allow_string(r->match.allow, allow, sizeof(allow));
    n = snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
    snprintf(msg, sizeof(msg), "Method %s not allowed on %.*s",
             http_method_name(req->method), (int)req->path.len, req->path.ptr);
    len = response_error_body(body, sizeof(body), 405, msg);
    request_reply(r, 405, body, len, extra, (size_t)n);
}

/*
 * Hands the complete request c->rs to its handler; its bytes (consumed,
 * from b->start) are then consumed.
 */
static void
dispatch(struct conn *c, struct chunk *b, size_t consumed,
         struct http_slice body)
{
    struct request *r = c->rs;
    struct conn_ctx *ctx = c->ctx;
    bool stop;

    c->rs = NULL;
    c->state = CONN_IDLE;
    /* consumed before the handler runs (its slices stay valid: nothing
     * reuses the buffer until process_input() returns), so that the
     * answer can tell whether more input follows */
    b->start += (uint32_t)consumed;
    r->body = body;
    r->bytes_in = consumed;
    r->in_handler = true;
    if (r->route >= 0) {
        const struct route *rt = r->match.route;
        ((handler_fn)rt->handler)(r, rt->arg);
    } else {
        route_error(r);
    }
    r->in_handler = false;
    r->body = (struct http_slice){NULL, 0};
    if (!r->answered && !r->queued) {
        log_error("handler for %.*s neither answered nor deferred: a bug",
                  (int)r->req.path.len, r->req.path.ptr);
        request_error(r, 500, "Internal error");
    }
    stop = !r->keep_alive || r->close_after;
    if (r->c == NULL) /* answered and done (or the client is gone) */
        request_put(&ctx->requests, &r);
    if (c->state == CONN_FREE)
        return;
    if (stop)
        c->state = CONN_CLOSING; /* no request after this one is read */
    if (c->state == CONN_CLOSING)
        c->linger = b->start < b->end;
}

/*
 * The core answers the request being received itself (a parser error, a
 * limit, a timeout, a route that wants no body): it becomes the
 * connection's last request.  take_last() detaches it, the caller answers
 * it, close_after() frees it once done and marks the connection closing.
 */
static struct request *
take_last(struct conn *c, enum request_end end, bool linger)
{
    struct request *r = c->rs;

    c->rs = NULL;
    c->linger = linger;
    r->end = (uint8_t)end;
    r->keep_alive = false;
    r->method = r->req.method;
    r->in_handler = true; /* ours until close_after() */
    return r;
}

static void
close_after(struct conn *c, struct request *r)
{
    r->in_handler = false;
    if (r->c == NULL)
        request_put(&c->ctx->requests, &r);
    if (c->state != CONN_FREE)
        c->state = CONN_CLOSING;
}

/* Answers a framing or limit error; the connection closes after it. */
static void
reject(struct conn *c, ssize_t code, const char *what)
{
    struct request *r;
    char peer[64];
    int status = http_parse_status(code);

    conn_peer_str(c, peer, sizeof(peer));
    log_info("client %s sent %s: %s; answering %d and closing", peer, what,
             http_parse_message(code), status);
    r = take_last(c, REQUEST_END_REJECTED, true);
    request_error(r, status, "%s", http_parse_message(code));
    close_after(c, r);
}

/*
 * Runs the after-routing hooks; true when one of them answered.  An answer
 * given before an announced body is read ends the connection (the body is
 * never read), so it must say "Connection: close".
 */
static bool
route_hooks_answered(struct conn *c, struct request *r)
{
    const struct request_hooks *h = &c->ctx->hooks;
    bool ka = r->keep_alive;

    if (r->req.has_body)
        r->keep_alive = false;
    for (unsigned i = 0; i < h->nroute; i++) {
        int answered;
        r->in_handler = true;
        answered = h->route[i].fn(r, h->route[i].arg);
        r->in_handler = false;
        if (answered || r->answered)
            return true;
    }
    r->keep_alive = ka;
    return false;
}

static void
process_input(struct conn *c, struct chunk *b)
{
    struct conn_ctx *ctx = c->ctx;

    c->in_input = true;
    c->cur_in = b;
    while (c->state != CONN_CLOSING && c->state != CONN_FREE &&
           b->start < b->end) {
        struct request *r = c->rs;
        char *base = b->data + b->start;
        size_t avail = b->end - b->start;
        ssize_t n;

        if (r == NULL) {
            if (c->nowed >= CONN_MAX_PENDING) {
                /* enough answers owed: stop reading until some are sent */
                c->in_paused = true;
                conn_update_mask(c);
                break;
            }
            r = c->rs = request_get(&ctx->requests, c, conn_now_us());
            if (r == NULL) {
                log_error("out of memory for a request on fd %d", c->w.fd);
                conn_close(c, "out of memory");
                break;
            }
            c->state = CONN_HEADERS;
        }

        if (c->state == CONN_HEADERS) {
            n = http_parse_request(&r->parser, &r->req, base, avail,
                                   &ctx->set.limits);
            if (n == HTTP_PARSE_AGAIN)
                break;
            if (n < 0) {
                reject(c, n, "an invalid request");
                break;
            }
            r->header_len = (uint32_t)n;
            r->method = r->req.method;
            r->head = r->req.method == HTTP_HEAD;
            r->keep_alive = r->req.keep_alive;
            r->route = router_match(ctx->router, r->req.method, r->req.path.ptr,
                                    r->req.path.len, &r->match);
            if (ctx->hooks.nroute && route_hooks_answered(c, r)) {
                /* answered before the body: never read it */
                bool body = r->req.has_body;
                if (c->rs == r)
                    c->rs = NULL;
                if (r->c == NULL)
                    request_put(&ctx->requests, &r);
                if (c->state == CONN_FREE)
                    break;
                if (body) {
                    c->state = CONN_CLOSING;
                    c->linger = true;
                    break;
                }
                b->start += (uint32_t)n;
                if (c->state != CONN_CLOSING)
                    c->state = CONN_IDLE;
                else
                    c->linger = b->start < b->end;
                continue;
            }
            if (!r->req.has_body) {
                dispatch(c, b, (size_t)n, (struct http_slice){NULL, 0});
                continue;
            }
            if (r->route < 0) {
                /* no handler wants the body: answer now, do not read it */
                r = take_last(c, REQUEST_END_OK, true);
                route_error(r);
                close_after(c, r);
                break;
            }
            c->state = CONN_BODY;
            timer_start(ctx->loop, &ctx->body_q, &c->timer);
            if (r->req.expect_continue && avail == (size_t)n)
                answer_continue(c);
        }

        /* CONN_BODY */
        if (r->req.chunked) {
            char *body = base + r->header_len;
            size_t in_body = avail - r->header_len;
            n = http_chunked_decode(&r->chunked, body, in_body,
                                    ctx->set.limits.max_body_bytes);
            if (n == HTTP_PARSE_AGAIN) {
                /* reclaim the framing already decoded away */
                size_t gap = (size_t)(r->chunked.in - r->chunked.out);
                if (gap > 0) {
                    memmove(body + r->chunked.out, body + r->chunked.in,
                            in_body - (size_t)r->chunked.in);
                    b->end -= (uint32_t)gap;
                    r->chunked.in = r->chunked.out;
                }
                break;
            }
            if (n < 0) {
                reject(c, n, "an invalid chunked body");
                break;
            }
            dispatch(c, b, r->header_len + (size_t)n,
                     (struct http_slice){body, (uint32_t)r->chunked.out});
        } else {
            uint64_t need = r->header_len + r->req.content_length;
            if (avail < need)
                break;
            dispatch(c, b, (size_t)need,
                     (struct http_slice){base + r->header_len,
                                         (uint32_t)r->req.content_length});
        }
    }
    c->in_input = false;
    c->cur_in = NULL;
    if (c->state == CONN_FREE)
        bufpool_put(&ctx->in_pool, &c->in); /* closed meanwhile */
}

/*
 * Bytes from the request's first byte that its buffer must be able to
 * hold now.  A body grows its buffer by doubling as it arrives, never to
 * the declared length at once (conn.h).
 */
static size_t
capacity_needed(const struct conn *c, const struct chunk *b)
{
    const struct conn_ctx *ctx = c->ctx;
    const struct request *r = c->rs;
    size_t live = b->end - b->start, max;

    if (r == NULL)
        return live;
    if (c->state == CONN_HEADERS)
        return live > ctx->header_cap ? live : ctx->header_cap;
    if (r->req.chunked)
        max = r->header_len + (size_t)ctx->set.limits.max_body_bytes + 32768;
    else
        max = r->header_len + (size_t)r->req.content_length;
    if (b->start + live < b->cap || live >= max)
        return live; /* room left, or all of it is here */
    /* full: double, up to what the request can need */
    size_t want = 2 * (size_t)b->cap;
    return want < max ? want : max;
}

/*
 * After processing: keep unconsumed bytes in a buffer the connection owns,
 * large enough for what the request still needs.  Returns -1 when out of
 * memory (the connection is closed).
 */
static int
keep_leftover(struct conn *c, struct chunk *b)
{
    struct conn_ctx *ctx = c->ctx;
    size_t live = b->end - b->start, need;
    struct chunk *nb;

    if (c->state == CONN_FREE)
        return -1;
    if (live == 0) {
        b->start = b->end = 0; /* before the put: it may free b */
        if (b == c->in)
            bufpool_put(&ctx->in_pool, &c->in);
        return 0;
    }
    need = capacity_needed(c, b);
    if (b == c->in && b->cap - b->start >= need && b->end < b->cap)
        return 0; /* room enough where it is */
    if (b == c->in && b->cap >= need && b->start > 0) {
        nb = b; /* compact in place */
    } else {
        nb = bufpool_get(&ctx->in_pool, need);
        if (nb == NULL) {
            log_error("out of memory for %zu bytes of input on fd %d", need,
                      c->w.fd);
            conn_close(c, "out of memory");
            return -1;
        }
    }
    memmove(nb->data, b->data + b->start, live);
    if (c->rs)
        http_request_rebase(&c->rs->req, b->data + b->start, nb->data);
    if (nb != b) {
        b->start = b->end = 0;
        if (b == c->in)
            bufpool_put(&ctx->in_pool, &c->in);
    }
    nb->start = 0;
    nb->end = (uint32_t)live;
    c->in = nb;
    return 0;
}

static void
linger_read(struct conn *c)
{
    struct chunk *s = c->ctx->scratch;
    ssize_t r = read(c->w.fd, s->data, s->cap);

    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
        conn_close(c, "lingering close done");
}

/* Body bytes received so far by c->rs (decoded or raw). */
static uint64_t
body_seen(const struct conn *c)
{
    const struct request *r = c->rs;
    const struct chunk *b = c->in;

    if (r == NULL || b == NULL)
        return 0;
    return b->end - b->start - r->header_len;
}

static void
conn_read(struct conn *c)
{
    struct conn_ctx *ctx = c->ctx;
    struct chunk *b = c->in ? c->in : ctx->scratch;
    ssize_t n;

    if (!c->in)
        b->start = b->end = 0;
    if (b->end == b->cap) {
        /* keep_leftover() makes room; reaching this is our bug */
        log_error("input buffer full on fd %d", c->w.fd);
        conn_close(c, "input buffer full");
        return;
    }
    n = read(c->w.fd, b->data + b->end, b->cap - b->end);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (c->rs || b->end > b->start) {
            char peer[64];
            conn_peer_str(c, peer, sizeof(peer));
            log_info("client %s closed the connection in the middle of a "
                     "request",
                     peer);
        }
        conn_close(c, n == 0 ? "client closed" : "read() failed");
        return;
    }
    b->end += (uint32_t)n;
    process_input(c, b);
    if (c->state == CONN_FREE)
        return;
    if (c->state == CONN_CLOSING) {
        /* input after the last answer is ignored; stop reading it */
        if (b == c->in && !c->linger)
            bufpool_put(&ctx->in_pool, &c->in);
        conn_update_mask(c);
        conn_arm_timer(c);
        return;
    }
    if (keep_leftover(c, b) < 0)
        return;
    if (c->state == CONN_BODY) {
        /* the body timeout restarts on real progress only */
        uint64_t seen = body_seen(c);
        if (seen >= c->rs->body_mark + CONN_BODY_PROGRESS_BYTES) {
            c->rs->body_mark = seen;
            timer_start(ctx->loop, &ctx->body_q, &c->timer);
        }
    }
    if (drain_idle(c))
        return;
    conn_arm_timer(c);
}

static void
conn_event(struct loop *loop, struct loop_watch *w, uint32_t events)
{
    struct conn *c = container_of(w, struct conn, w);

    (void)loop;
    if (c->magic != CONN_MAGIC || c->state == CONN_FREE)
        return;
    if (c->state == CONN_LINGER) {
        linger_read(c);
        return;
    }
    if (events & EPOLLOUT) {
        conn_write(c);
        if (c->state == CONN_FREE)
            return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (c->state == CONN_CLOSING) {
            if (events & (EPOLLHUP | EPOLLERR))
                conn_close(c, "client went away");
            return;
        }
        conn_read(c);
    }
}

/* ---- timeouts ---- */

static void
timeout_reply(struct conn *c, const char *what)
{
    struct request *r;
    char peer[64];

    conn_peer_str(c, peer, sizeof(peer));
    log_info("client %s timed out %s; answering 408 and closing", peer, what);
    r = take_last(c, REQUEST_END_TIMEOUT, false);
    request_error(r, 408, "timed out %s", what);
    close_after(c, r);
    if (c->state != CONN_FREE) {
        conn_update_mask(c);
        conn_arm_timer(c);
    }
}

static void
header_timeout(struct loop *loop, struct timer *t)
{
    struct conn *c = container_of(t, struct conn, timer);

    (void)loop;
    if (c->state == CONN_HEADERS && c->rs)
        timeout_reply(c, "sending the request header");
    else if (c->state == CONN_IDLE && c->owed_head == NULL)
        conn_close(c, "no request within the header timeout");
}

static void
body_timeout(struct loop *loop, struct timer *t)
{
    struct conn *c = container_of(t, struct conn, timer);

    (void)loop;
    if (c->state == CONN_BODY && c->rs)
        timeout_reply(c, "sending the request body");
}

static void
keepalive_timeout(struct loop *loop, struct timer *t)
{
    struct conn *c = container_of(t, struct conn, timer);

    (void)loop;
    if (c->owed_head || c->rs || c->out.bytes > 0)
        return; /* not idle after all; its state re-arms what it needs */
    conn_close(c, "keep-alive timeout");
}

static void
send_timeout(struct loop *loop, struct timer *t)
{
    struct conn *c = container_of(t, struct conn, timer);
    char peer[64];

    (void)loop;
    conn_peer_str(c, peer, sizeof(peer));
    log_info("client %s did not read its response within send_timeout_ms; "
             "closing",
             peer);
    conn_close(c, "send timeout");
}

static void
linger_timeout(struct loop *loop, struct timer *t)
{
    struct conn *c = container_of(t, struct conn, timer);

    (void)loop;
    conn_close(c, "lingering close timeout");
}
