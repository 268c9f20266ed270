/*
 * conn.c - see conn.h for the state machine and buffer ownership.
 *
 * Flow of one readable event:
 *   conn_read()      one read(2) into the connection's buffer (or scratch)
 *   process_input()  parse and dispatch every complete request in order
 *   keep_leftover()  move an unfinished request into a buffer of its own
 *   arm_timer()      put the connection in the timer queue of its state
 * Responses are appended to c->out and written by conn_flush_pending()
 * just before the loop sleeps, so pipelined responses leave in one writev.
 */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "response.h"
#include "worker.h"

#define RS_FREE_MAX 1024

static struct reqstate *rs_free;
static unsigned rs_nfree;

static struct reqstate *
rs_get(void)
{
    struct reqstate *rs = rs_free;

    if (rs) {
        rs_free = rs->next_free;
        rs_nfree--;
        return rs;
    }
    rs = malloc(sizeof(*rs));
    if (rs)
        buf_allocs++;
    return rs;
}

static void
rs_put(struct reqstate **rsp)
{
    struct reqstate *rs = *rsp;

    *rsp = NULL;
    if (rs == NULL)
        return;
    if (rs_nfree >= RS_FREE_MAX) {
        free(rs);
        return;
    }
    rs->next_free = rs_free;
    rs_free = rs;
    rs_nfree++;
}

/* ---- answers owed (see conn.h) ---- */

#define PENDING_FREE_MAX 1024
#define PENDING_PATH_MAX 160
#define PENDING_RID_MAX 64

struct pending {
    struct pending *next;
    struct conn *c; /* NULL once the client is gone */
    struct outq out;
    bool ready;
    bool head; /* HEAD request: no body */
    bool ka_after;
    enum http_method method;
    int status;
    long bytes;
    uint64_t start_us;
    uint16_t path_len;
    uint8_t rid_len;
    char path[PENDING_PATH_MAX];
    char rid[PENDING_RID_MAX];
};

static struct pending *pend_free;
static unsigned pend_nfree;

static struct pending *
pending_get(void)
{
    struct pending *p = pend_free;

    if (p) {
        pend_free = p->next;
        pend_nfree--;
    } else {
        p = malloc(sizeof(*p));
        if (p == NULL)
            return NULL;
        buf_allocs++;
    }
    memset(p, 0, offsetof(struct pending, path));
    outq_init(&p->out);
    return p;
}

static void
pending_put(struct pending *p)
{
    if (pend_nfree >= PENDING_FREE_MAX) {
        free(p);
        return;
    }
    p->next = pend_free;
    pend_free = p;
    pend_nfree++;
}

void
conn_fini(void)
{
    while (pend_free) {
        struct pending *p = pend_free;
        pend_free = p->next;
        free(p);
    }
    pend_nfree = 0;
    while (rs_free) {
        struct reqstate *rs = rs_free;
        rs_free = rs->next_free;
        free(rs);
    }
    rs_nfree = 0;
}

static uint64_t
now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* "127.0.0.1:5000" or "[::1]:5000" */
static void
peer_str(const struct conn *c, char *buf, size_t cap)
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

/* Registers the interest the connection's state calls for. */
static void
update_mask(struct worker *wk, struct conn *c)
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
    if (loop_mod(wk->loop, &c->w, mask) < 0)
        log_error("epoll_ctl(MOD) failed for fd %d: %s", c->w.fd,
                  strerror(errno));
}

static void
queue_output(struct worker *wk, struct conn *c)
{
    if (c->in_pending)
        return;
    c->in_pending = true;
    c->next_pending = wk->pending_out;
    wk->pending_out = c;
}

/* Puts the connection in the timer queue its state calls for. */
static void
arm_timer(struct worker *wk, struct conn *c)
{
    struct timer_queue *q;

    if (c->out_blocked) {
        if (c->timer.queue != &wk->send_q)
            timer_start(wk->loop, &wk->send_q, &c->timer);
        return;
    }
    switch (c->state) {
    case CONN_HEADERS:
        q = &wk->header_q; /* not extended by progress: slowloris */
        if (c->timer.queue == q)
            return;
        break;
    case CONN_BODY:
        q = &wk->body_q; /* extended on every read */
        break;
    case CONN_IDLE:
        q = &wk->keepalive_q;
        if (c->timer.queue == q)
            return;
        break;
    case CONN_LINGER:
        q = &wk->linger_q;
        if (c->timer.queue == q)
            return;
        break;
    default:
        return;
    }
    timer_start(wk->loop, q, &c->timer);
}

void
conn_open(struct worker *wk, int fd, const struct sockaddr *sa)
{
    struct conn *c = &wk->conns[fd];

    memset(c, 0, sizeof(*c));
    c->magic = CONN_MAGIC;
    c->state = CONN_IDLE;
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
    if (loop_add(wk->loop, &c->w, fd, EPOLLIN, conn_event) < 0) {
        log_error("epoll_ctl(ADD) failed for fd %d: %s", fd, strerror(errno));
        c->state = CONN_FREE;
        (void)close(fd);
        return;
    }
    wk->nconns++;
    /* the first request gets the header timeout, like nginx */
    timer_start(wk->loop, &wk->header_q, &c->timer);
}

void
conn_close(struct worker *wk, struct conn *c, const char *why)
{
    if (c->state == CONN_FREE)
        return;
    log_debug("closing connection fd %d: %s", c->w.fd, why);
    if (loop_del(wk->loop, &c->w) < 0)
        log_error("epoll_ctl(DEL) failed for fd %d: %s", c->w.fd,
                  strerror(errno));
    timer_stop(&c->timer);
    outq_clear(&c->out, &wk->out_pool);
    bufpool_put(&wk->in_pool, &c->in);
    rs_put(&c->rs);
    /* answers still owed: their holders find c == NULL and just free */
    while (c->pend_head) {
        struct pending *p = c->pend_head;
        c->pend_head = p->next;
        p->c = NULL;
        if (p->ready) {
            outq_clear(&p->out, &wk->out_pool);
            pending_put(p);
        }
    }
    c->pend_tail = NULL;
    c->npending = 0;
    c->state = CONN_FREE;
    c->next_closed = wk->closing;
    wk->closing = c;
    wk->nconns--;
    worker_conn_closed(wk);
}

void
conn_reap_closed(struct worker *wk)
{
    while (wk->closing) {
        struct conn *c = wk->closing;
        wk->closing = c->next_closed;
        c->magic = 0;
        if (close(c->w.fd) < 0)
            log_error("close() failed for fd %d: %s", c->w.fd, strerror(errno));
    }
}

/* Output is flushed on a CLOSING connection: close, gently if needed. */
static void
finish_close(struct worker *wk, struct conn *c)
{
    if (!c->linger) {
        conn_close(wk, c, "response sent, connection: close");
        return;
    }
    if (shutdown(c->w.fd, SHUT_WR) < 0) {
        conn_close(wk, c, "shutdown() failed");
        return;
    }
    c->state = CONN_LINGER;
    update_mask(wk, c);
    arm_timer(wk, c);
}

static void
conn_write(struct worker *wk, struct conn *c)
{
    ssize_t n;

    if (c->state == CONN_FREE || c->state == CONN_LINGER)
        return;
    n = outq_write(&c->out, c->w.fd, &wk->out_pool);
    if (n < 0 && errno != EAGAIN) {
        conn_close(wk, c,
                   errno == EPIPE || errno == ECONNRESET
                       ? "client reset the connection"
                       : "write() failed");
        return;
    }
    if (c->out.bytes == 0) {
        if (c->out_blocked) {
            c->out_blocked = false;
            update_mask(wk, c);
        }
        if (c->pend_head) {
            arm_timer(wk, c);
            return; /* answers still to come */
        }
        if (c->state == CONN_CLOSING) {
            finish_close(wk, c);
            return;
        }
        if (wk->draining && c->state == CONN_IDLE) {
            conn_close(wk, c, "shutting down");
            return;
        }
        arm_timer(wk, c);
        return;
    }
    if (!c->out_blocked) {
        c->out_blocked = true;
        update_mask(wk, c);
        timer_start(wk->loop, &wk->send_q, &c->timer);
    } else if (n > 0) {
        timer_start(wk->loop, &wk->send_q, &c->timer); /* progress */
    }
}

void
conn_flush_pending(struct worker *wk)
{
    while (wk->pending_out) {
        struct conn *c = wk->pending_out;
        wk->pending_out = c->next_pending;
        c->in_pending = false;
        if (c->state != CONN_FREE)
            conn_write(wk, c);
    }
}

/* ---- replies ---- */

void
conn_reply(struct req_ctx *ctx, int status, const char *body, size_t body_len,
           const char *extra, size_t extra_len)
{
    struct worker *wk = ctx->wk;
    struct conn *c = ctx->c;
    struct response r = {
        .status = status,
        .body = body,
        .body_len = body_len,
        .extra = extra,
        .extra_len = extra_len,
        .head = ctx->req && ctx->req->method == HTTP_HEAD,
        .keep_alive = c->ka_after,
        .no_body_headers = status == 204 || status == 304,
    };
    struct outq *q = &c->out;
    struct pending *p = NULL;
    long n;

    ctx->status = status;
    if (c->pend_head) {
        /* earlier answers are still owed: this one waits its turn */
        p = conn_defer(ctx);
        if (p == NULL) {
            conn_close(wk, c, "out of memory");
            return;
        }
        ctx->deferred = NULL; /* answered, as far as the handler knows */
        p->ready = true;
        p->status = status;
        q = &p->out;
    }
    n = response_write(q, &wk->out_pool, &r);
    if (n < 0) {
        log_error("out of memory queueing a response on fd %d", c->w.fd);
        conn_close(wk, c, "out of memory");
        return;
    }
    ctx->bytes_out = n;
    if (p) {
        p->bytes = n;
        return;
    }
    if (c->out.bytes > wk->cfg->output_buffer_limit) {
        char peer[64];
        peer_str(c, peer, sizeof(peer));
        log_info("client %s is not reading its responses: %llu bytes "
                 "unsent, over output_buffer_limit; closing",
                 peer, (unsigned long long)c->out.bytes);
        conn_close(wk, c, "output buffer limit");
        return;
    }
    queue_output(wk, c);
}

void
conn_reply_error(struct req_ctx *ctx, int status, const char *fmt, ...)
{
    char body[1024];
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    n = response_error_vbody(body, sizeof(body), status, fmt, ap);
    va_end(ap);
    conn_reply(ctx, status, body, n, NULL, 0);
}

struct pending *
conn_defer(struct req_ctx *ctx)
{
    struct conn *c = ctx->c;
    struct pending *p = pending_get();
    const struct http_request *req = ctx->req;

    if (p == NULL)
        return NULL;
    p->c = c;
    p->ka_after = c->ka_after;
    p->head = req && req->method == HTTP_HEAD;
    if (req) {
        p->method = req->method;
        p->path_len =
            (uint16_t)(req->path.len < PENDING_PATH_MAX ? req->path.len
                                                        : PENDING_PATH_MAX);
        memcpy(p->path, req->path.ptr, p->path_len);
        p->rid_len = (uint8_t)(req->request_id.len < PENDING_RID_MAX
                                   ? req->request_id.len
                                   : PENDING_RID_MAX);
        if (p->rid_len)
            memcpy(p->rid, req->request_id.ptr, p->rid_len);
    }
    if (c->rs)
        p->start_us = c->rs->start_us;
    if (c->pend_tail)
        c->pend_tail->next = p;
    else
        c->pend_head = p;
    c->pend_tail = p;
    c->npending++;
    ctx->deferred = p;
    return p;
}

static void access_log_line(struct worker *wk, struct conn *c,
                            enum http_method m, const char *path,
                            size_t path_len, const char *rid, size_t rid_len,
                            int status, long bytes, uint64_t start_us);
static void resume_input(struct worker *wk, struct conn *c);

/* Moves every answer that is ready, in order, to the output queue. */
static void
pend_flush(struct worker *wk, struct conn *c)
{
    while (c->pend_head && c->pend_head->ready) {
        struct pending *p = c->pend_head;
        c->pend_head = p->next;
        if (c->pend_head == NULL)
            c->pend_tail = NULL;
        c->npending--;
        if (p->out.head) {
            if (c->out.tail)
                c->out.tail->next = p->out.head;
            else
                c->out.head = p->out.head;
            c->out.tail = p->out.tail;
            c->out.bytes += p->out.bytes;
        }
        pending_put(p);
    }
    queue_output(wk, c);
    if (c->out.bytes > wk->cfg->output_buffer_limit) {
        conn_close(wk, c, "output buffer limit");
        return;
    }
    if (c->in_paused && c->npending < CONN_MAX_PENDING)
        resume_input(wk, c);
}

void
conn_complete(struct pending *p, int status, const char *body, size_t body_len,
              const char *extra, size_t extra_len)
{
    struct worker *wk = worker_self();
    struct conn *c = p->c;
    struct response r = {
        .status = status,
        .body = body,
        .body_len = body_len,
        .extra = extra,
        .extra_len = extra_len,
        .head = p->head,
        .keep_alive = p->ka_after,
        .no_body_headers = status == 204 || status == 304,
    };
    long n;

    if (c == NULL) {
        pending_put(p); /* the client left */
        return;
    }
    n = response_write(&p->out, &wk->out_pool, &r);
    if (n < 0) {
        log_error("out of memory queueing a response on fd %d", c->w.fd);
        conn_close(wk, c, "out of memory");
        return;
    }
    p->ready = true;
    p->status = status;
    p->bytes = n;
    if (log_access_enabled())
        access_log_line(wk, c, p->method, p->path, p->path_len, p->rid,
                        p->rid_len, status, n, p->start_us);
    pend_flush(wk, c);
}

void
conn_complete_error(struct pending *p, int status, const char *fmt, ...)
{
    char body[1024];
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    n = response_error_vbody(body, sizeof(body), status, fmt, ap);
    va_end(ap);
    conn_complete(p, status, body, n, NULL, 0);
}

int
conn_pending_alive(const struct pending *p)
{
    return p->c != NULL;
}

/* ---- input ---- */

static void
access_log_line(struct worker *wk, struct conn *c, enum http_method m,
                const char *path, size_t path_len, const char *rid,
                size_t rid_len, int status, long bytes, uint64_t start_us)
{
    char line[2048], epath[600], erid[160], peer[64], ts[32];
    struct timespec now;
    struct tm tm;
    int n;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    peer_str(c, peer, sizeof(peer));
    log_json_escape(epath, sizeof(epath), path ? path : "", path_len);
    log_json_escape(erid, sizeof(erid), rid ? rid : "", rid_len);
    n = snprintf(line, sizeof(line),
                 "{\"time\":\"%s.%03ldZ\",\"request_id\":\"%s\",\"worker\":%u,"
                 "\"client\":\"%s\",\"method\":\"%s\",\"path\":\"%s\","
                 "\"status\":%d,\"bytes\":%ld,\"us\":%llu}\n",
                 ts, now.tv_nsec / 1000000, erid, wk->id, peer,
                 http_method_name(m), epath, status, bytes,
                 (unsigned long long)(now_us() - start_us));
    if (n > 0)
        log_access(line,
                   (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void
access_log(struct worker *wk, struct conn *c, const struct req_ctx *ctx)
{
    const struct http_request *req = ctx->req;

    access_log_line(wk, c, req->method, req->path.ptr, req->path.len,
                    req->request_id.ptr, req->request_id.len, ctx->status,
                    ctx->bytes_out, c->rs->start_us);
}

static void
route_error(struct req_ctx *ctx, int route)
{
    const struct http_request *req = ctx->req;
    char allow[128], extra[160];
    int n;

    if (route == ROUTER_NOT_FOUND) {
        conn_reply_error(ctx, 404, "Not found: %.*s", (int)req->path.len,
                         req->path.ptr);
        return;
    }
    router_allow_string(ctx->match->allow, allow, sizeof(allow));
    n = snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
    {
        char msg[600], body[1024];
        size_t len;
        snprintf(msg, sizeof(msg), "Method %s not allowed on %.*s",
                 http_method_name(req->method), (int)req->path.len,
                 req->path.ptr);
        len = response_error_body(body, sizeof(body), 405, msg);
        conn_reply(ctx, 405, body, len, extra, (size_t)n);
    }
}

/* Runs the handler of a complete request and consumes its bytes. */
static void
dispatch(struct worker *wk, struct conn *c, struct chunk *b, size_t consumed,
         struct http_slice body)
{
    struct reqstate *rs = c->rs;
    struct req_ctx ctx = {
        .wk = wk,
        .c = c,
        .req = &rs->req,
        .match = &rs->match,
        .body = body,
    };

    c->ka_after = rs->req.keep_alive && !wk->draining;
    if (rs->route >= 0)
        ((handler_fn)rs->match.route->handler)(&ctx);
    else
        route_error(&ctx, rs->route);
    if (c->state == CONN_FREE)
        return; /* the reply closed it */
    wk->requests++;
    if (ctx.deferred == NULL && log_access_enabled())
        access_log(wk, c, &ctx);
    b->start += (uint32_t)consumed;
    rs_put(&c->rs);
    if (c->ka_after) {
        c->state = CONN_IDLE;
    } else {
        c->state = CONN_CLOSING;
        c->linger = b->start < b->end;
    }
}

/* Answers a framing or limit error and closes after the response. */
static void
fail(struct worker *wk, struct conn *c, ssize_t code, const char *what)
{
    struct req_ctx ctx = {.wk = wk, .c = c};
    char peer[64];
    int status = http_parse_status(code);

    peer_str(c, peer, sizeof(peer));
    log_info("client %s sent %s: %s; answering %d and closing", peer, what,
             http_parse_message(code), status);
    c->ka_after = false;
    c->linger = true;
    conn_reply_error(&ctx, status, "%s", http_parse_message(code));
    if (c->state != CONN_FREE)
        c->state = CONN_CLOSING;
}

static void
send_continue(struct worker *wk, struct conn *c)
{
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";

    if (outq_append(&c->out, &wk->out_pool, msg, sizeof(msg) - 1) < 0) {
        conn_close(wk, c, "out of memory");
        return;
    }
    queue_output(wk, c);
}

static void
process_input(struct worker *wk, struct conn *c, struct chunk *b)
{
    while (c->state != CONN_CLOSING && c->state != CONN_FREE &&
           b->start < b->end) {
        if (c->npending >= CONN_MAX_PENDING && c->rs == NULL) {
            /* enough answers owed: stop reading until some are sent */
            c->in_paused = true;
            update_mask(wk, c);
            return;
        }
        struct reqstate *rs = c->rs;
        char *base = b->data + b->start;
        size_t avail = b->end - b->start;
        ssize_t n;

        if (rs == NULL) {
            rs = c->rs = rs_get();
            if (rs == NULL) {
                struct req_ctx ctx = {.wk = wk, .c = c};
                log_error("out of memory for a request on fd %d", c->w.fd);
                c->ka_after = false;
                conn_reply_error(&ctx, 503, "out of memory");
                if (c->state != CONN_FREE)
                    c->state = CONN_CLOSING;
                return;
            }
            http_parser_init(&rs->parser, &rs->req);
            http_chunked_init(&rs->chunked);
            rs->header_len = 0;
            rs->continue_sent = false;
            rs->start_us = log_access_enabled() ? now_us() : 0;
            c->state = CONN_HEADERS;
        }

        if (c->state == CONN_HEADERS) {
            n = http_parse_request(&rs->parser, &rs->req, base, avail,
                                   &wk->limits);
            if (n == HTTP_PARSE_AGAIN)
                return;
            if (n < 0) {
                fail(wk, c, n, "an invalid request");
                return;
            }
            rs->header_len = (uint32_t)n;
            rs->route =
                router_match(&wk->router, rs->req.method, rs->req.path.ptr,
                             rs->req.path.len, &rs->match);
            if (!rs->req.has_body) {
                dispatch(wk, c, b, (size_t)n, (struct http_slice){NULL, 0});
                continue;
            }
            if (rs->route < 0) {
                /* no handler wants the body: answer now, do not read it */
                struct req_ctx ctx = {
                    .wk = wk, .c = c, .req = &rs->req, .match = &rs->match};
                c->ka_after = false;
                c->linger = true;
                route_error(&ctx, rs->route);
                if (c->state != CONN_FREE)
                    c->state = CONN_CLOSING;
                return;
            }
            c->state = CONN_BODY;
            if (rs->req.expect_continue && avail == (size_t)n) {
                rs->continue_sent = true;
                send_continue(wk, c);
            }
        }

        /* CONN_BODY */
        if (rs->req.chunked) {
            char *body = base + rs->header_len;
            size_t in_body = avail - rs->header_len;
            n = http_chunked_decode(&rs->chunked, body, in_body,
                                    wk->limits.max_body_bytes);
            if (n == HTTP_PARSE_AGAIN) {
                /* reclaim the framing already decoded away */
                size_t gap = (size_t)(rs->chunked.in - rs->chunked.out);
                if (gap > 0) {
                    memmove(body + rs->chunked.out, body + rs->chunked.in,
                            in_body - (size_t)rs->chunked.in);
                    b->end -= (uint32_t)gap;
                    rs->chunked.in = rs->chunked.out;
                }
                return;
            }
            if (n < 0) {
                fail(wk, c, n, "an invalid chunked body");
                return;
            }
            dispatch(wk, c, b, rs->header_len + (size_t)n,
                     (struct http_slice){body, (uint32_t)rs->chunked.out});
        } else {
            uint64_t need = rs->header_len + rs->req.content_length;
            if (avail < need)
                return;
            dispatch(wk, c, b, (size_t)need,
                     (struct http_slice){base + rs->header_len,
                                         (uint32_t)rs->req.content_length});
        }
    }
}

/* Bytes from the request's first byte that its buffer must be able to hold. */
static size_t
capacity_needed(const struct worker *wk, const struct conn *c,
                const struct chunk *b)
{
    const struct reqstate *rs = c->rs;
    size_t live = b->end - b->start;

    if (rs == NULL)
        return live;
    if (c->state == CONN_HEADERS)
        return live > wk->header_cap ? live : wk->header_cap;
    if (!rs->req.chunked) {
        size_t need = rs->header_len + (size_t)rs->req.content_length;
        return need > live ? need : live;
    }
    if (b->end < b->cap)
        return live;
    /* a full buffer in a chunked body: double, up to the body limit */
    size_t max = rs->header_len + (size_t)wk->limits.max_body_bytes + 32768;
    size_t want = 2 * (size_t)b->cap;
    return want < max ? want : max;
}

/*
 * After processing: keep unconsumed bytes in a buffer the connection owns,
 * large enough for what the request still needs.  Returns -1 when out of
 * memory (the connection is closed).
 */
static int
keep_leftover(struct worker *wk, struct conn *c, struct chunk *b)
{
    size_t live = b->end - b->start, need;
    struct chunk *nb;

    if (c->state == CONN_FREE)
        return -1;
    if (live == 0) {
        if (b == c->in)
            bufpool_put(&wk->in_pool, &c->in);
        b->start = b->end = 0;
        return 0;
    }
    need = capacity_needed(wk, c, b);
    if (b == c->in && b->cap - b->start >= need && b->end < b->cap)
        return 0; /* room enough where it is */
    if (b == c->in && b->cap >= need && b->start > 0) {
        nb = b; /* compact in place */
    } else {
        nb = bufpool_get(&wk->in_pool, need);
        if (nb == NULL) {
            log_error("out of memory for %zu bytes of input on fd %d", need,
                      c->w.fd);
            conn_close(wk, c, "out of memory");
            return -1;
        }
    }
    memmove(nb->data, b->data + b->start, live);
    if (c->rs)
        http_request_rebase(&c->rs->req, b->data + b->start, nb->data);
    if (nb != b) {
        b->start = b->end = 0;
        if (b == c->in)
            bufpool_put(&wk->in_pool, &c->in);
    }
    nb->start = 0;
    nb->end = (uint32_t)live;
    c->in = nb;
    return 0;
}

/* Answers were sent: serve the requests already buffered, read again. */
static void
resume_input(struct worker *wk, struct conn *c)
{
    c->in_paused = false;
    if (c->in && c->in->start < c->in->end && c->state != CONN_CLOSING) {
        process_input(wk, c, c->in);
        if (c->state == CONN_FREE)
            return;
        if (c->state != CONN_CLOSING && keep_leftover(wk, c, c->in) < 0)
            return;
    }
    update_mask(wk, c);
    arm_timer(wk, c);
}

static void
linger_read(struct worker *wk, struct conn *c)
{
    struct chunk *s = wk->scratch;
    ssize_t r = read(c->w.fd, s->data, s->cap);

    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
        conn_close(wk, c, "lingering close done");
}

static void
conn_read(struct worker *wk, struct conn *c)
{
    struct chunk *b = c->in ? c->in : wk->scratch;
    ssize_t r;

    if (!c->in)
        b->start = b->end = 0;
    if (b->end == b->cap) {
        /* keep_leftover() makes room; reaching this is our bug */
        log_error("input buffer full on fd %d", c->w.fd);
        conn_close(wk, c, "input buffer full");
        return;
    }
    r = read(c->w.fd, b->data + b->end, b->cap - b->end);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (c->rs || b->end > b->start) {
            char peer[64];
            peer_str(c, peer, sizeof(peer));
            log_info("client %s closed the connection in the middle of a "
                     "request",
                     peer);
        }
        conn_close(wk, c, r == 0 ? "client closed" : "read() failed");
        return;
    }
    b->end += (uint32_t)r;
    process_input(wk, c, b);
    if (c->state == CONN_FREE)
        return;
    if (c->state == CONN_CLOSING) {
        /* input after the last answer is ignored; stop reading it */
        if (b == c->in && !c->linger)
            bufpool_put(&wk->in_pool, &c->in);
        update_mask(wk, c);
        return;
    }
    if (keep_leftover(wk, c, b) < 0)
        return;
    if (wk->draining && c->state == CONN_IDLE && c->out.bytes == 0 &&
        !c->in_pending && c->pend_head == NULL) {
        conn_close(wk, c, "shutting down");
        return;
    }
    arm_timer(wk, c);
}

void
conn_event(struct loop *loop, struct loop_watch *w, uint32_t events)
{
    struct conn *c = container_of(w, struct conn, w);
    struct worker *wk = worker_self();

    (void)loop;
    if (c->magic != CONN_MAGIC || c->state == CONN_FREE)
        return;
    if (c->state == CONN_LINGER) {
        linger_read(wk, c);
        return;
    }
    if (events & EPOLLOUT) {
        conn_write(wk, c);
        if (c->state == CONN_FREE)
            return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (c->state == CONN_CLOSING) {
            if (events & (EPOLLHUP | EPOLLERR))
                conn_close(wk, c, "client went away");
            return;
        }
        conn_read(wk, c);
    }
}

int
conn_close_if_idle(struct worker *wk, struct conn *c)
{
    if (c->state != CONN_IDLE || c->out.bytes > 0 || c->in_pending ||
        c->pend_head)
        return 0;
    conn_close(wk, c, "shutting down");
    return 1;
}

/* ---- timeouts ---- */

static void
timeout_reply(struct worker *wk, struct conn *c, const char *what)
{
    struct req_ctx ctx = {.wk = wk, .c = c, .req = c->rs ? &c->rs->req : NULL};
    char peer[64];

    peer_str(c, peer, sizeof(peer));
    log_info("client %s timed out %s; answering 408 and closing", peer, what);
    c->ka_after = false;
    c->linger = false;
    if (ctx.req && ctx.req->method == HTTP_METHOD_NONE)
        ctx.req = NULL;
    conn_reply_error(&ctx, 408, "timed out %s", what);
    if (c->state != CONN_FREE) {
        c->state = CONN_CLOSING;
        update_mask(wk, c);
    }
}

void
conn_header_timeout(struct loop *loop, struct timer *t)
{
    struct conn *c = container_of(t, struct conn, timer);
    struct worker *wk = worker_self();

    (void)loop;
    if (c->state == CONN_IDLE && c->rs == NULL)
        conn_close(wk, c, "no request within the header timeout");
    else if (c->state == CONN_HEADERS)
        timeout_reply(wk, c, "sending the request header");
}

void
conn_body_timeout(struct loop *loop, struct timer *t)
{
    struct conn *c = container_of(t, struct conn, timer);

    (void)loop;
    if (c->state == CONN_BODY)
        timeout_reply(worker_self(), c, "sending the request body");
}

void
conn_keepalive_timeout(struct loop *loop, struct timer *t)
{
    struct conn *c = container_of(t, struct conn, timer);

    (void)loop;
    conn_close(worker_self(), c, "keep-alive timeout");
}

void
conn_send_timeout(struct loop *loop, struct timer *t)
{
    struct conn *c = container_of(t, struct conn, timer);
    char peer[64];

    (void)loop;
    peer_str(c, peer, sizeof(peer));
    log_info("client %s did not read its response within send_timeout_ms; "
             "closing",
             peer);
    conn_close(worker_self(), c, "send timeout");
}

void
conn_linger_timeout(struct loop *loop, struct timer *t)
{
    struct conn *c = container_of(t, struct conn, timer);

    (void)loop;
    conn_close(worker_self(), c, "lingering close timeout");
}
