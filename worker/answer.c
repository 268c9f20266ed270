/*
 * answer.c - answering requests: serialisation (with the serialise
 * hooks), the connection's answer queue that keeps pipelined answers in
 * request order, deferred answers and their request timeout (504), and
 * "100 Continue" in its place in that order.
 *
 * The queue (c->owed_head .. c->owed_tail) holds, in request order, the
 * requests dispatched whose answers have not reached c->out yet: HANDLING
 * ones (answer owed) and ANSWERED ones (serialised into r->out, waiting
 * for an earlier one).  An answer given while the queue is empty, or by
 * the request at its head, is written straight into c->out: the common
 * case (one request at a time, or pipelined requests answered at once)
 * never touches the queue.  When the head is answered, it and every
 * ANSWERED request after it move to c->out by splicing their chunks (no
 * copy).  A request reaches its done point when its answer is on c->out.
 *
 * Keep-alive is decided when the answer is serialised: the client's wish,
 * unless the worker is draining and this answer is the connection's last
 * (no later request owed or arriving): then "Connection: close", and the
 * connection closes once it is written (SPEC 4 graceful shutdown).
 */
#include "conn_priv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "response.h"

static void
enqueue(struct conn *c, struct request *r)
{
    r->next = NULL;
    if (c->owed_tail)
        c->owed_tail->next = r;
    else
        c->owed_head = r;
    c->owed_tail = r;
    c->nowed++;
}

static struct request *
dequeue(struct conn *c)
{
    struct request *r = c->owed_head;

    c->owed_head = r->next;
    if (c->owed_head == NULL)
        c->owed_tail = NULL;
    r->next = NULL;
    c->nowed--;
    return r;
}

/*
 * r's answer is on c->out: its done point.  An answer that says close ends
 * the connection's requests.  Frees r unless its handler is still running
 * (dispatch frees it then).
 */
static void
finished(struct conn *c, struct request *r)
{
    if (r->close_after)
        c->state = CONN_CLOSING;
    request_run_done(r);
    r->c = NULL;
    if (!r->in_handler)
        request_put(&c->ctx->requests, &r);
}

/* Moves the answers ready at the head of the queue to c->out. */
static void
flush_ready(struct conn *c)
{
    while (c->owed_head && c->owed_head->answered) {
        struct request *r = dequeue(c);
        if (r->out.head) {
            if (c->out.tail)
                c->out.tail->next = r->out.head;
            else
                c->out.head = r->out.head;
            c->out.tail = r->out.tail;
            c->out.bytes += r->out.bytes;
            outq_init(&r->out);
        }
        finished(c, r);
    }
}

/* True when r's answer is the last this connection will send for now. */
static bool
last_answer(const struct conn *c, const struct request *r)
{
    if (c->rs != NULL)
        return false;
    if (c->owed_tail != NULL && c->owed_tail != r)
        return false;
    if (c->cur_in)
        return c->cur_in->start == c->cur_in->end;
    return c->in == NULL || c->in->start == c->in->end;
}

/* Copies what the done hooks need once the input buffer is reused. */
static void
copy_for_log(struct request *r)
{
    const struct http_request *req = &r->req;

    if (r->copied)
        return;
    r->copied = true;
    r->method = req->method;
    r->path_len =
        (uint16_t)(req->path.len < REQUEST_PATH_MAX ? req->path.len
                                                    : REQUEST_PATH_MAX);
    if (r->path_len)
        memcpy(r->path, req->path.ptr, r->path_len);
    if (r->rid_len == 0 && req->request_id.len) {
        r->rid_len =
            (uint8_t)(req->request_id.len < REQUEST_ID_MAX ? req->request_id.len
                                                           : REQUEST_ID_MAX);
        memcpy(r->rid, req->request_id.ptr, r->rid_len);
    }
}

/*
 * The one way an answer is given: request_reply(), request_reply_type()
 * and request_reply_validated() (valid set) all come here.  Returns -1
 * (r untouched, its request timer still running) when valid() refuses the
 * copied body; 0 otherwise.
 */
static int
reply(struct request *r, int status, const char *content_type, const char *body,
      size_t body_len, const char *extra, size_t extra_len,
      bool (*valid)(void *arg), void *valid_arg)
{
    struct conn *c = r->c;
    struct conn_ctx *ctx;
    struct response resp;
    struct outq *q;
    bool direct;
    long n;

    if (r->magic != REQUEST_MAGIC || r->answered || c == NULL) {
        log_error("request answered twice or after its client left "
                  "(status %d): a bug",
                  status);
        return 0;
    }
    ctx = c->ctx;
    r->answered = true;
    r->status = status;
    if (!r->keep_alive || (ctx->draining && last_answer(c, r)))
        r->close_after = true;

    resp = (struct response){
        .status = status,
        .body = body,
        .body_len = body_len,
        .extra = extra,
        .extra_len = extra_len,
        .head = r->head,
        .keep_alive = !r->close_after,
        .no_body_headers = status == 204 || status == 304 || status < 200,
        .content_type = content_type,
        .valid = valid,
        .valid_arg = valid_arg,
    };
    if (ctx->hooks.nserialise) {
        static struct hdrbuf h;
        h.len = 0;
        h.overflow = false;
        if (extra_len)
            (void)hdrbuf_add(&h, extra, extra_len);
        for (unsigned i = 0; i < ctx->hooks.nserialise; i++)
            ctx->hooks.serialise[i].fn(r, &resp, &h,
                                       ctx->hooks.serialise[i].arg);
        if (h.overflow)
            log_error("response headers over %d bytes: some dropped",
                      HDRBUF_BYTES);
        resp.extra = h.buf;
        resp.extra_len = h.len;
    }

    /* written straight to the connection when nothing earlier is owed */
    direct = c->owed_head == NULL || c->owed_head == r;
    q = direct ? &c->out : &r->out;
    n = response_write(q, &ctx->out_pool, &resp);
    if (n == -2) {
        /* torn copy (request_reply_validated): as if never answered */
        r->answered = false;
        r->status = 0;
        r->close_after = false;
        return -1;
    }
    timer_stop(&r->timer); /* committed: the request timeout is over */
    if (n < 0) {
        log_error("out of memory queueing a response on fd %d", c->w.fd);
        r->status = 503;
        if (c->owed_head != r && !r->queued) {
            /* not in the queue: conn_close cannot end it for us */
            r->end = REQUEST_END_REJECTED;
            finished(c, r);
        }
        conn_close(c, "out of memory");
        return 0;
    }
    r->bytes_out = (uint64_t)n;
    if (!direct) {
        copy_for_log(r);
        if (!r->queued) {
            r->queued = true;
            enqueue(c, r);
        }
        return 0; /* waits for the answers before it */
    }
    if (r->queued)
        (void)dequeue(c); /* it was the head */
    finished(c, r);
    flush_ready(c);
    conn_answers_moved(c);
    return 0;
}

void
request_reply(struct request *r, int status, const char *body, size_t body_len,
              const char *extra, size_t extra_len)
{
    (void)reply(r, status, NULL, body, body_len, extra, extra_len, NULL, NULL);
}

void
request_reply_type(struct request *r, int status, const char *content_type,
                   const char *body, size_t body_len, const char *extra,
                   size_t extra_len)
{
    (void)reply(r, status, content_type, body, body_len, extra, extra_len, NULL,
                NULL);
}

int
request_reply_validated(struct request *r, int status, const char *body,
                        size_t body_len, bool (*valid)(void *arg), void *arg)
{
    /* only an answer given at once, written straight to the connection:
     * nothing to undo but the fields reply() sets */
    if (r->magic != REQUEST_MAGIC || r->answered || r->c == NULL || r->queued ||
        request_owes_earlier(r))
        return -1;
    return reply(r, status, NULL, body, body_len, NULL, 0, valid, arg);
}

void
request_error(struct request *r, int status, const char *fmt, ...)
{
    char body[1024];
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    n = response_error_vbody(body, sizeof(body), status, fmt, ap);
    va_end(ap);
    request_reply(r, status, body, n, NULL, 0);
}

void
request_defer(struct request *r, request_abort_fn abort_fn, void *arg)
{
    struct conn *c = r->c;

    r->abort_fn = abort_fn;
    r->abort_arg = arg;
    copy_for_log(r);
    if (!r->queued) {
        r->queued = true;
        enqueue(c, r);
    }
    timer_start(c->ctx->loop, &c->ctx->request_q, &r->timer);
}

void
answer_request_timeout(struct loop *loop, struct timer *t)
{
    struct request *r = container_of(t, struct request, timer);
    struct conn_ctx *ctx;

    (void)loop;
    if (r->magic != REQUEST_MAGIC || r->answered || r->c == NULL)
        return;
    ctx = r->c->ctx;
    if (r->abort_fn)
        r->abort_fn(r, r->abort_arg);
    r->abort_fn = NULL;
    r->end = REQUEST_END_TIMEOUT;
    request_error(r, 504, "Request not answered within %u ms",
                  ctx->set.request_timeout_ms);
}

void
answer_client_gone(struct conn *c)
{
    struct request *r;

    /* a request half received: it ends here, unanswered */
    if (c->rs) {
        r = c->rs;
        c->rs = NULL;
        if (r->req.method != HTTP_METHOD_NONE || r->parser.pos > 0) {
            r->status = 499;
            r->end = REQUEST_END_CLIENT_GONE;
            request_run_done(r);
        }
        r->c = NULL;
        request_put(&c->ctx->requests, &r);
    }
    while (c->owed_head) {
        r = dequeue(c);
        if (!r->answered) {
            if (r->abort_fn)
                r->abort_fn(r, r->abort_arg);
            r->abort_fn = NULL;
            r->status = 499;
        }
        r->end = REQUEST_END_CLIENT_GONE;
        outq_clear(&r->out, &c->ctx->out_pool);
        request_run_done(r);
        r->c = NULL;
        r->answered = true; /* nobody may answer it any more */
        if (!r->in_handler)
            request_put(&c->ctx->requests, &r);
    }
}

void
answer_continue(struct conn *c)
{
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct request *r = c->rs;

    if (r == NULL || r->continue_sent)
        return;
    if (c->owed_head != NULL) {
        r->continue_wanted = true; /* after the answers owed before it */
        return;
    }
    r->continue_wanted = false;
    r->continue_sent = true;
    if (outq_append(&c->out, &c->ctx->out_pool, msg, sizeof(msg) - 1) < 0) {
        conn_close(c, "out of memory");
        return;
    }
    conn_queue_output(c);
}

bool
request_owes_earlier(const struct request *r)
{
    const struct conn *c = r->c;

    return c && c->owed_head != NULL && c->owed_head != r;
}
