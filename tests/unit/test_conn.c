/*
 * test_conn.c - the connection core (conn.c, answer.c, request.c) driven
 * alone: a struct conn_ctx on a loop with a fake clock, client sockets
 * from socketpair(2), test handlers that answer at once or defer, and a
 * done hook that records every request.  Nothing sleeps: time moves when
 * a test says so.
 *
 * Regression tests for issue 6: keep-alive extended by activity, no
 * timeout while an answer is owed, answers in request order with deferred
 * answers, "100 Continue" in its place, every answer of a drain saying
 * close, the request timeout (504 + abort), clients that leave (499), and
 * the done hook running exactly once per request (parser errors and 408
 * included).  Issue 9: retiring hands idle connections over (and busy ones
 * as they go idle, keep-alive kept), keeps those the taker refuses, and an
 * adopted connection is served as an idle keep-alive one.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "conn.h"
#include "loop.h"
#include "request.h"
#include "response.h"
#include "router.h"

/* ---- the harness ---- */

#define MAX_DONE 64

struct done_rec {
    int status;
    int end;
    char path[64];
};

static struct harness {
    uint64_t now_ms;
    struct loop *loop;
    struct router router;
    struct conn_ctx ctx;
    struct request *deferred[8];
    unsigned ndeferred;
    unsigned aborts;
    struct done_rec done[MAX_DONE];
    unsigned ndone;
    int srv_fd; /* server end of the last client_connect() */
} h;

static uint64_t
fake_clock(void *arg)
{
    (void)arg;
    return h.now_ms;
}

static void
before_sleep(struct loop *loop, void *arg)
{
    (void)loop;
    conn_ctx_flush(arg);
    conn_ctx_reap(arg);
}

static void
after_events(struct loop *loop, void *arg)
{
    (void)loop;
    conn_ctx_reap(arg);
}

static void
on_done(const struct request *r, void *arg)
{
    struct done_rec *d;
    const char *p = r->copied ? r->path : r->req.path.ptr;
    size_t n = r->copied ? r->path_len : r->req.path.len;

    (void)arg;
    assert_true(h.ndone < MAX_DONE);
    d = &h.done[h.ndone++];
    d->status = r->status;
    d->end = r->end;
    if (n >= sizeof(d->path))
        n = sizeof(d->path) - 1;
    if (p)
        memcpy(d->path, p, n);
    d->path[n] = '\0';
}

static void
on_abort(struct request *r, void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < h.ndeferred; i++)
        if (h.deferred[i] == r)
            h.deferred[i] = NULL;
    h.aborts++;
}

static void
handle_now(struct request *r, void *arg)
{
    static const char body[] = "{\"now\":true}";
    (void)arg;
    request_reply(r, 200, body, sizeof(body) - 1, NULL, 0);
}

static void
handle_defer(struct request *r, void *arg)
{
    (void)arg;
    request_defer(r, on_abort, NULL);
    h.deferred[h.ndeferred++] = r;
}

/* Issue 7: request_reply_validated() with a validator saying no, then
 * yes; the plain answer if it does not qualify (something owed). */
static unsigned validations;

static bool
say_no(void *arg)
{
    (void)arg;
    validations++;
    return false;
}

static bool
say_yes(void *arg)
{
    (void)arg;
    validations++;
    return true;
}

static void
handle_validated(struct request *r, void *arg)
{
    static const char torn[] = "{\"torn\":1}", good[] = "{\"good\":1}";

    (void)arg;
    assert_int_equal(
        request_reply_validated(r, 200, torn, sizeof(torn) - 1, say_no, NULL),
        -1);
    if (request_reply_validated(r, 200, good, sizeof(good) - 1, say_yes, NULL) <
        0)
        request_reply(r, 203, "{\"plain\":1}", 11, NULL, 0);
}

/* A torn copy, then the database path (deferred): as api.c's cache miss
 * after a refused hit. */
static void
handle_torn_then_defer(struct request *r, void *arg)
{
    static const char torn[] = "{\"torn\":1}";

    assert_int_equal(
        request_reply_validated(r, 200, torn, sizeof(torn) - 1, say_no, NULL),
        -1);
    handle_defer(r, arg);
}

/* Completes the i-th deferred request with 201 "{}". */
static void
complete(unsigned i)
{
    assert_non_null(h.deferred[i]);
    request_reply(h.deferred[i], 201, "{}", 2, NULL, 0);
    h.deferred[i] = NULL;
}

static void
setup_ctx(uint32_t keepalive_ms, uint32_t request_timeout_ms)
{
    struct conn_settings s = {
        .worker_id = 1,
        .limits = {.max_request_line = 8192,
                   .max_header_bytes = 16384,
                   .max_headers = 100,
                   .max_body_bytes = 1 << 20},
        .header_timeout_ms = 1000,
        .body_timeout_ms = 1000,
        .keepalive_timeout_ms = keepalive_ms,
        .send_timeout_ms = 1000,
        .linger_ms = 500,
        .request_timeout_ms = request_timeout_ms,
        .output_buffer_limit = 1 << 20,
        .out_chunk_bytes = 16384,
        .max_fds = 1024,
    };

    memset(&h, 0, sizeof(h));
    h.now_ms = 1000000;
    h.loop = loop_new();
    assert_non_null(h.loop);
    loop_set_clock(h.loop, fake_clock, NULL);
    router_init(&h.router);
    assert_int_equal(router_add(&h.router, HTTP_GET, "/now",
                                (router_handler_fn)handle_now, NULL),
                     0);
    assert_int_equal(router_add(&h.router, HTTP_POST, "/now",
                                (router_handler_fn)handle_now, NULL),
                     0);
    assert_int_equal(router_add(&h.router, HTTP_GET, "/defer",
                                (router_handler_fn)handle_defer, NULL),
                     0);
    assert_int_equal(router_add(&h.router, HTTP_GET, "/torn-defer",
                                (router_handler_fn)handle_torn_then_defer,
                                NULL),
                     0);
    assert_int_equal(router_add(&h.router, HTTP_GET, "/validated",
                                (router_handler_fn)handle_validated, NULL),
                     0);
    validations = 0;
    assert_int_equal(conn_ctx_init(&h.ctx, h.loop, &h.router, &s), 0);
    assert_int_equal(request_hooks_add_done(&h.ctx.hooks, on_done, NULL), 0);
    loop_set_before_sleep(h.loop, before_sleep, &h.ctx);
    loop_set_after_events(h.loop, after_events, &h.ctx);
    response_date_update(time(NULL));
}

static int
teardown(void **state)
{
    (void)state;
    conn_ctx_fini(&h.ctx);
    loop_free(&h.loop);
    return 0;
}

/* A connected pair: the server end goes to the core; returns the client. */
static int
client_connect(void)
{
    struct sockaddr sa = {.sa_family = AF_UNIX};
    int sv[2];

    assert_int_equal(
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv),
        0);
    assert_non_null(conn_open(&h.ctx, sv[0], &sa));
    h.srv_fd = sv[0];
    return sv[1];
}

static void
pump(void)
{
    for (int i = 0; i < 4; i++)
        assert_true(loop_run_once(h.loop, 0) >= 0);
}

static void
advance(uint64_t ms)
{
    h.now_ms += ms;
    pump();
}

static void
send_str(int fd, const char *s)
{
    size_t n = strlen(s);
    assert_int_equal(send(fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
    pump();
}

/* Everything the client can read now; "" when nothing.  Sets *eof. */
static const char *
recv_all(int fd, bool *eof)
{
    static char buf[65536];
    size_t len = 0;

    *eof = false;
    for (;;) {
        ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, MSG_DONTWAIT);
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (n == 0)
            *eof = true;
        break;
    }
    buf[len] = '\0';
    return buf;
}

static unsigned
count(const char *hay, const char *needle)
{
    unsigned n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* ---- tests ---- */

/* Issue 6 defect 1: activity keeps a keep-alive connection open. */
static void
test_keepalive_extended_by_activity(void **state)
{
    bool eof;
    int fd;

    (void)state;
    setup_ctx(1000, 30000);
    fd = client_connect();
    for (int i = 0; i < 8; i++) {
        send_str(fd, "GET /now HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_non_null(strstr(recv_all(fd, &eof), "200 OK"));
        assert_false(eof);
        advance(600); /* 8 x 600 ms: far past one keep-alive timeout */
    }
    recv_all(fd, &eof);
    assert_false(eof);
    advance(500); /* 1100 ms since the last answer */
    recv_all(fd, &eof);
    assert_true(eof);
    close(fd);
}

/* Issue 6 defect 2: no timeout closes a connection that is owed an
 * answer; the request timeout answers instead. */
static void
test_no_timeout_while_answer_owed(void **state)
{
    const char *got;
    bool eof;
    int fd;

    (void)state;
    setup_ctx(100, 30000);
    fd = client_connect();
    send_str(fd, "GET /defer HTTP/1.1\r\nHost: a\r\n\r\n");
    for (int i = 0; i < 20; i++)
        advance(500); /* 10 s: 100 keep-alive timeouts */
    got = recv_all(fd, &eof);
    assert_string_equal(got, "");
    assert_false(eof);
    complete(0);
    pump();
    got = recv_all(fd, &eof);
    assert_non_null(strstr(got, "HTTP/1.1 201 Created"));
    assert_false(eof);
    close(fd);
}

/* Pipelined answers leave in request order, whatever order they come in. */
static void
test_pipelined_order_with_deferred(void **state)
{
    const char *got, *a, *b, *c;
    bool eof;
    int fd;

    (void)state;
    setup_ctx(5000, 30000);
    fd = client_connect();
    send_str(fd, "GET /defer HTTP/1.1\r\nHost: a\r\n\r\n"
                 "GET /now HTTP/1.1\r\nHost: a\r\n\r\n"
                 "GET /defer HTTP/1.1\r\nHost: a\r\n\r\n"
                 "GET /now HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(h.ndeferred, 2);
    assert_string_equal(recv_all(fd, &eof), ""); /* the first is owed */
    complete(1);
    pump();
    assert_string_equal(recv_all(fd, &eof), "");
    complete(0);
    pump();
    got = recv_all(fd, &eof);
    assert_int_equal(count(got, "HTTP/1.1 "), 4);
    a = strstr(got, "201 Created");
    b = strstr(got, "200 OK");
    c = strstr(a + 1, "201 Created");
    assert_true(a && b && c && a < b && b < c);
    assert_non_null(strstr(c, "200 OK"));
    /* the done point follows the same order */
    assert_int_equal(h.ndone, 4);
    assert_int_equal(h.done[0].status, 201);
    assert_int_equal(h.done[1].status, 200);
    assert_int_equal(h.done[2].status, 201);
    assert_int_equal(h.done[3].status, 200);
    close(fd);
}

/* Issue 6 defect 5: "100 Continue" never jumps ahead of an earlier
 * request's answer. */
static void
test_continue_keeps_its_place(void **state)
{
    const char *got;
    bool eof;
    int fd;

    (void)state;
    setup_ctx(5000, 30000);
    fd = client_connect();
    send_str(fd, "GET /defer HTTP/1.1\r\nHost: a\r\n\r\n"
                 "POST /now HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
                 "Expect: 100-continue\r\n\r\n");
    assert_string_equal(recv_all(fd, &eof), "");
    complete(0);
    pump();
    got = recv_all(fd, &eof);
    assert_true(strncmp(got, "HTTP/1.1 201", 12) == 0);
    assert_non_null(strstr(got, "HTTP/1.1 100 Continue\r\n\r\n"));
    assert_true(strstr(got, "100 Continue") > strstr(got, "201 Created"));
    send_str(fd, "{}");
    got = recv_all(fd, &eof);
    assert_true(strncmp(got, "HTTP/1.1 200 OK", 15) == 0);
    close(fd);
}

/* With nothing owed, "100 Continue" goes out at once. */
static void
test_continue_at_once(void **state)
{
    bool eof;
    int fd;

    (void)state;
    setup_ctx(5000, 30000);
    fd = client_connect();
    send_str(fd, "POST /now HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
                 "Expect: 100-continue\r\n\r\n");
    assert_string_equal(recv_all(fd, &eof), "HTTP/1.1 100 Continue\r\n\r\n");
    send_str(fd, "{}");
    assert_non_null(strstr(recv_all(fd, &eof), "200 OK"));
    close(fd);
}

/* Issue 6 defect 6: an answer given during a drain says close, and the
 * connection closes after it; idle connections close at once. */
static void
test_drain_answers_say_close(void **state)
{
    const char *got;
    bool eof;
    int busy, idle;

    (void)state;
    setup_ctx(5000, 30000);
    busy = client_connect();
    idle = client_connect();
    send_str(idle, "GET /now HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_non_null(strstr(recv_all(idle, &eof), "keep-alive"));
    send_str(busy, "GET /defer HTTP/1.1\r\nHost: a\r\n\r\n");
    conn_ctx_drain(&h.ctx);
    pump();
    recv_all(idle, &eof);
    assert_true(eof); /* idle: closed by the drain */
    complete(0);
    pump();
    got = recv_all(busy, &eof);
    assert_non_null(strstr(got, "201 Created"));
    assert_non_null(strstr(got, "Connection: close\r\n"));
    assert_null(strstr(got, "keep-alive"));
    pump();
    recv_all(busy, &eof);
    assert_true(eof);
    close(busy);
    close(idle);
}

/* The request timeout answers 504 and tells the owner (abort). */
static void
test_request_timeout_504(void **state)
{
    bool eof;
    int fd;

    (void)state;
    setup_ctx(100, 2000);
    fd = client_connect();
    send_str(fd, "GET /defer HTTP/1.1\r\nHost: a\r\n\r\n");
    advance(1900);
    assert_string_equal(recv_all(fd, &eof), "");
    advance(200);
    assert_non_null(strstr(recv_all(fd, &eof), "504 Gateway Timeout"));
    assert_int_equal(h.aborts, 1);
    assert_null(h.deferred[0]);
    assert_int_equal(h.ndone, 1);
    assert_int_equal(h.done[0].status, 504);
    assert_int_equal(h.done[0].end, REQUEST_END_TIMEOUT);
    /* keep-alive goes on after a 504 */
    send_str(fd, "GET /now HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_non_null(strstr(recv_all(fd, &eof), "200 OK"));
    close(fd);
}

/* A client that leaves with answers owed: abort, and a 499 done record. */
static void
test_client_gone(void **state)
{
    int fd;

    (void)state;
    setup_ctx(5000, 30000);
    fd = client_connect();
    send_str(fd, "GET /defer HTTP/1.1\r\nHost: a\r\n\r\n"
                 "GET /now HTTP/1.1\r\nHost: a\r\n\r\n");
    close(fd);
    pump();
    assert_int_equal(h.aborts, 1);
    assert_int_equal(h.ndone, 2);
    assert_int_equal(h.done[0].status, 499);
    assert_int_equal(h.done[0].end, REQUEST_END_CLIENT_GONE);
    assert_string_equal(h.done[0].path, "/defer");
    assert_int_equal(h.done[1].end, REQUEST_END_CLIENT_GONE);
    assert_string_equal(h.done[1].path, "/now");
    assert_int_equal(h.ctx.nconns, 0);
}

/* The done point runs once per request, parser errors and 408 included,
 * and a parser error is answered after the answers owed before it. */
static void
test_done_once_per_request(void **state)
{
    const char *got;
    bool eof;
    int a, b;

    (void)state;
    setup_ctx(5000, 30000);
    a = client_connect();
    send_str(a, "GET /defer HTTP/1.1\r\nHost: a\r\n\r\n"
                "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
                "GET /now HTTP/1.1\r\nBad Header: x\r\n\r\n");
    assert_string_equal(recv_all(a, &eof), "");
    complete(0);
    pump();
    got = recv_all(a, &eof);
    assert_true(strncmp(got, "HTTP/1.1 201", 12) == 0);
    assert_true(strstr(got, "404 Not Found") < strstr(got, "400 Bad Request"));
    b = client_connect();
    send_str(b, "GET /now HT");
    advance(1100); /* header timeout */
    assert_non_null(strstr(recv_all(b, &eof), "408 Request Timeout"));
    assert_int_equal(h.ndone, 4);
    assert_int_equal(h.done[0].status, 201);
    assert_int_equal(h.done[1].status, 404);
    assert_int_equal(h.done[2].status, 400);
    assert_int_equal(h.done[2].end, REQUEST_END_REJECTED);
    assert_int_equal(h.done[3].status, 408);
    assert_int_equal(h.done[3].end, REQUEST_END_TIMEOUT);
    assert_int_equal(h.ctx.nrequests, 4);
    close(a);
    close(b);
}

/* Issue 6 defect 8: a trickling body does not restart the body timeout. */
static void
test_body_trickle_times_out(void **state)
{
    bool eof;
    int fd;

    (void)state;
    setup_ctx(5000, 30000);
    fd = client_connect();
    send_str(fd, "POST /now HTTP/1.1\r\nHost: a\r\n"
                 "Content-Length: 100000\r\n\r\n");
    /* a byte every 200 ms: under CONN_BODY_PROGRESS_BYTES per timeout */
    for (int i = 0; i < 4; i++) {
        send_str(fd, "x");
        advance(200);
        assert_string_equal(recv_all(fd, &eof), "");
    }
    send_str(fd, "x");
    advance(250); /* 1050 ms after the headers, 5 bytes in */
    assert_non_null(strstr(recv_all(fd, &eof), "408 Request Timeout"));
    close(fd);
}

/* ...while real progress keeps it going, and the buffer grows with the
 * body instead of to Content-Length at once. */
static void
test_body_progress_and_growth(void **state)
{
    static char chunk[8192];
    bool eof;
    int fd;

    (void)state;
    setup_ctx(5000, 30000);
    memset(chunk, 'x', sizeof(chunk));
    fd = client_connect();
    send_str(fd, "POST /now HTTP/1.1\r\nHost: a\r\n"
                 "Content-Length: 500000\r\n\r\n");
    /* the declared 500 kB are not allocated up front */
    assert_non_null(h.ctx.conns[h.srv_fd].in);
    assert_true(h.ctx.conns[h.srv_fd].in->cap < 100000);
    for (size_t sent = 0; sent < 500000;) {
        size_t n =
            500000 - sent < sizeof(chunk) ? 500000 - sent : sizeof(chunk);
        ssize_t w = send(fd, chunk, n, MSG_NOSIGNAL);
        if (w > 0)
            sent += (size_t)w;
        advance(300); /* 300 ms per 8 KiB: slow, but progressing */
        if (sent < 500000) {
            assert_string_equal(recv_all(fd, &eof), "");
            assert_false(eof);
        }
    }
    pump();
    assert_non_null(strstr(recv_all(fd, &eof), "200 OK"));
    assert_false(eof);
    close(fd);
}

/* After routing: a hook answers before the body is read and before
 * "100 Continue"; the handler never runs, the connection closes. */
static int
deny_posts(struct request *r, void *arg)
{
    (void)arg;
    if (r->req.method != HTTP_POST)
        return 0;
    request_error(r, 401, "no");
    return 1;
}

static void
test_route_hook_answers_before_body(void **state)
{
    const char *got;
    bool eof;
    int fd;

    (void)state;
    setup_ctx(5000, 30000);
    assert_int_equal(request_hooks_add_route(&h.ctx.hooks, deny_posts, NULL),
                     0);
    fd = client_connect();
    send_str(fd, "GET /now HTTP/1.1\r\nHost: a\r\n\r\n"
                 "POST /now HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n"
                 "Expect: 100-continue\r\n\r\n");
    got = recv_all(fd, &eof);
    assert_non_null(strstr(got, "200 OK"));
    assert_non_null(strstr(got, "401 Unauthorized"));
    assert_null(strstr(got, "100 Continue"));
    assert_non_null(strstr(strstr(got, "401"), "Connection: close\r\n"));
    pump();
    recv_all(fd, &eof);
    assert_true(eof);
    assert_int_equal(h.ndone, 2);
    assert_int_equal(h.done[1].status, 401);
    close(fd);
}

/* At serialisation: a hook adds a header to every answer, deferred and
 * error answers included. */
static void
add_header(struct request *r, struct response *resp, struct hdrbuf *hb,
           void *arg)
{
    (void)r;
    (void)resp;
    (void)arg;
    (void)hdrbuf_add(hb, "X-Hooked: yes\r\n", 15);
}

static void
test_serialise_hook_adds_header(void **state)
{
    const char *got;
    bool eof;
    int fd;

    (void)state;
    setup_ctx(5000, 30000);
    assert_int_equal(
        request_hooks_add_serialise(&h.ctx.hooks, add_header, NULL), 0);
    fd = client_connect();
    send_str(fd, "GET /defer HTTP/1.1\r\nHost: a\r\n\r\n"
                 "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
                 "GET /now HTTP/1.1\r\nHost: a\r\n\r\n");
    complete(0);
    pump();
    got = recv_all(fd, &eof);
    assert_int_equal(count(got, "HTTP/1.1 "), 3);
    assert_int_equal(count(got, "X-Hooked: yes\r\n"), 3);
    close(fd);
}

/* Issue 7: a refused (torn) validated answer leaves no trace; the next
 * answer is the only one sent; with an answer owed it is not tried. */
static void
test_validated_reply(void **state)
{
    const char *got, *a, *b;
    bool eof;
    int fd;

    (void)state;
    setup_ctx(5000, 30000);
    fd = client_connect();
    send_str(fd, "GET /validated HTTP/1.1\r\nHost: a\r\n\r\n");
    got = recv_all(fd, &eof);
    assert_int_equal(count(got, "HTTP/1.1 "), 1);
    assert_non_null(strstr(got, "200 OK"));
    assert_non_null(strstr(got, "Content-Length: 10\r\n"));
    assert_non_null(strstr(got, "{\"good\":1}"));
    assert_null(strstr(got, "torn"));
    assert_int_equal(validations, 2);
    assert_int_equal(h.ndone, 1);
    assert_int_equal(h.done[0].status, 200);

    /* behind a deferred request: refused before any copy, plain answer */
    send_str(fd, "GET /defer HTTP/1.1\r\nHost: a\r\n\r\n"
                 "GET /validated HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(validations, 2);
    assert_string_equal(recv_all(fd, &eof), "");
    complete(0);
    pump();
    got = recv_all(fd, &eof);
    assert_int_equal(count(got, "HTTP/1.1 "), 2);
    a = strstr(got, "201 Created");
    b = strstr(got, "203 ");
    assert_true(a && b && a < b);
    assert_null(strstr(got, "torn"));
    assert_int_equal(h.ndone, 3);
    close(fd);
}

/* A refused (torn) validated copy followed by the database path, as
 * api.c does after a torn cache hit: nothing of the torn copy reaches the
 * client, and the deferred request still gets its 504 (request_defer()
 * arms the request timer). */
static void
test_torn_copy_keeps_request_timeout(void **state)
{
    bool eof;
    int fd;

    (void)state;
    setup_ctx(100, 2000);
    fd = client_connect();
    send_str(fd, "GET /torn-defer HTTP/1.1\r\nHost: a\r\n\r\n");
    advance(1900);
    assert_string_equal(recv_all(fd, &eof), "");
    advance(200);
    assert_non_null(strstr(recv_all(fd, &eof), "504 Gateway Timeout"));
    assert_null(strstr(recv_all(fd, &eof), "torn"));
    assert_int_equal(validations, 1);
    assert_int_equal(h.aborts, 1);
    assert_int_equal(h.ndone, 1);
    assert_int_equal(h.done[0].status, 504);
    close(fd);
}

/* ---- issue 9: hand-over ---- */

static int handover_fds[8];
static unsigned nhandover;
static bool handover_refuse;

/* conn_handover_fn: takes a dup of the descriptor, as SCM_RIGHTS would. */
static int
take_conn(struct conn_ctx *ctx, struct conn *c, void *arg)
{
    (void)ctx;
    (void)arg;
    if (handover_refuse)
        return -1;
    assert_true(nhandover < 8);
    handover_fds[nhandover] = dup(c->w.fd);
    assert_true(handover_fds[nhandover] >= 0);
    nhandover++;
    return 0;
}

static void
test_hand_over_idle_then_busy(void **state)
{
    const char *got;
    bool eof;
    int busy, idle, spare;
    unsigned before;

    (void)state;
    nhandover = 0;
    handover_refuse = false;
    setup_ctx(5000, 30000);
    busy = client_connect();
    idle = client_connect();
    send_str(idle, "GET /now HTTP/1.1\r\nHost: a\r\n\r\n");
    recv_all(idle, &eof);
    send_str(busy, "GET /defer HTTP/1.1\r\nHost: a\r\n\r\n");
    before = h.ctx.nconns;
    conn_ctx_hand_over(&h.ctx, take_conn);
    pump();
    assert_int_equal(nhandover, 1); /* the idle one, at once */
    assert_int_equal(h.ctx.nconns, before - 1);
    recv_all(idle, &eof);
    assert_false(eof); /* handed over, not closed: the taker holds it */
    complete(0);
    pump();
    got = recv_all(busy, &eof);
    assert_non_null(strstr(got, "201 Created"));
    assert_non_null(strstr(got, "keep-alive")); /* no close while handing */
    assert_false(eof);
    assert_int_equal(nhandover, 2); /* the busy one once idle */
    assert_int_equal(h.ctx.nconns, before - 2);

    /* a refused offer keeps the connection; a later drain closes it */
    handover_refuse = true;
    spare = client_connect();
    send_str(spare, "GET /now HTTP/1.1\r\nHost: a\r\n\r\n");
    recv_all(spare, &eof);
    conn_ctx_hand_over(&h.ctx, take_conn);
    pump();
    assert_int_equal(nhandover, 2);
    recv_all(spare, &eof);
    assert_false(eof);
    conn_ctx_drain(&h.ctx);
    pump();
    recv_all(spare, &eof);
    assert_true(eof);
    for (unsigned i = 0; i < nhandover; i++)
        close(handover_fds[i]);
    close(busy);
    close(idle);
    close(spare);
}

static void
test_adopted_connection_is_served(void **state)
{
    const char *got;
    bool eof;
    int sv[2];

    (void)state;
    setup_ctx(5000, 30000);
    assert_int_equal(
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv),
        0);
    /* a request sent while the connection was in flight waits in it */
    assert_int_equal(
        send(sv[1], "GET /now HTTP/1.1\r\nHost: a\r\n\r\n", 30, MSG_NOSIGNAL),
        30);
    assert_non_null(conn_adopt(&h.ctx, sv[0]));
    pump();
    got = recv_all(sv[1], &eof);
    assert_non_null(strstr(got, "200 OK"));
    assert_non_null(strstr(got, "keep-alive"));
    /* idle afterwards: the keep-alive timeout, not the header timeout */
    advance(2000);
    recv_all(sv[1], &eof);
    assert_false(eof);
    advance(4000);
    recv_all(sv[1], &eof);
    assert_true(eof);
    close(sv[1]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_keepalive_extended_by_activity,
                                  teardown),
        cmocka_unit_test_teardown(test_no_timeout_while_answer_owed, teardown),
        cmocka_unit_test_teardown(test_pipelined_order_with_deferred, teardown),
        cmocka_unit_test_teardown(test_continue_keeps_its_place, teardown),
        cmocka_unit_test_teardown(test_continue_at_once, teardown),
        cmocka_unit_test_teardown(test_drain_answers_say_close, teardown),
        cmocka_unit_test_teardown(test_request_timeout_504, teardown),
        cmocka_unit_test_teardown(test_client_gone, teardown),
        cmocka_unit_test_teardown(test_done_once_per_request, teardown),
        cmocka_unit_test_teardown(test_body_trickle_times_out, teardown),
        cmocka_unit_test_teardown(test_body_progress_and_growth, teardown),
        cmocka_unit_test_teardown(test_route_hook_answers_before_body,
                                  teardown),
        cmocka_unit_test_teardown(test_serialise_hook_adds_header, teardown),
        cmocka_unit_test_teardown(test_validated_reply, teardown),
        cmocka_unit_test_teardown(test_torn_copy_keeps_request_timeout,
                                  teardown),
        cmocka_unit_test_teardown(test_hand_over_idle_then_busy, teardown),
        cmocka_unit_test_teardown(test_adopted_connection_is_served, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
