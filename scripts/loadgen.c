/*
 * loadgen - constant-rate HTTP/1.1 load generator of scripts/loadtest,
 * free of coordinated omission.
 *
 * A closed-loop client (wrk, ab) sends a request only when the previous one
 * on its connection is answered, so when the server stalls, the client
 * stops asking and the stall is one slow sample per connection: the p99
 * never sees it (Gil Tene's "coordinated omission"). loadgen instead fixes
 * the send schedule before the run: request n is due at start + n / RATE,
 * on connection n % CONNS. A connection sends its next request as soon as
 * it is due and the connection is free; if the server is late, the
 * connection falls behind and catches up back to back. Latency is counted
 * from the request's due time (its intended send time), so a 100 ms stall
 * shows as the hundred milliseconds every request due during it waited,
 * which is what the users of a real service would see (wrk2's scheme). The
 * time from the actual send is kept too ("service"), as closed-loop tools
 * report it, and loadgen's own lateness ("send_lag": from when a request
 * was due and its connection free to when it was sent), which tells a
 * generator starved of CPU from a slow server. With -R 0 loadgen is closed-loop
 * itself (for comparison).
 *
 * One thread, one epoll loop, non-blocking keep-alive connections, one
 * request in flight per connection, responses framed by Content-Length (no
 * chunked, no pipelining: apiary never needs them). A connection the server
 * closes, or one that fails, is reopened; its failure is counted by kind.
 * Requests due before the end are all sent and waited for, up to the
 * request timeout after the end; the unanswered are counted "unfinished".
 *
 * Idle mode (-I N) is for scripts/loadtest's connections mode: open N
 * connections from source address -B (so that several 127.0.0.x addresses
 * give more than one address's ~28,000 ports), send one GET on each so
 * the server has served it and holds it as an idle keep-alive connection,
 * print one JSON line {"ready":...} when all are open (or failed), then
 * hold them without a byte more until -d seconds pass or SIGTERM/SIGINT,
 * and print the final JSON (how many the server closed meanwhile).
 *
 * Output: one JSON object on stdout (see usage()); a progress line on
 * stderr every second with -P.
 *
 * Usage: see usage() below.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "histogram.h"

#define LG_MAX_SPECS 16
#define LG_MAX_HEADERS 16
#define LG_IN_MAX (1u << 20) /* largest response accepted */
#define LG_OUT_MAX 8192      /* largest request */
#define LG_EVENTS 512
#define LG_CONNECTS_IN_FLIGHT 512 /* idle mode: pacing of connect() */
#define LG_NS 1000000000ll
#define LG_MAX_JOBS 16

enum lg_err {
    E_CONNECT,
    E_READ,
    E_WRITE,
    E_TIMEOUT,
    E_CLOSED,
    E_PARSE,
    E_UNFINISHED,
    E_COUNT
};
static const char *const err_name[E_COUNT] = {
    "connect", "read", "write", "timeout", "closed", "parse", "unfinished"};

/* One request kind of the mix: "WEIGHT METHOD PATH [BODY]". */
struct spec {
    unsigned weight;
    char method[16];
    char path[1024];
    char body[2048];
    int has_body;
};

enum cstate { C_DOWN, C_CONNECTING, C_READY, C_BUSY, C_IDLE_HELD, C_DEAD };

struct conn {
    int fd;
    enum cstate state;
    uint64_t next_k;  /* rate mode: its next request is c + next_k * C */
    int64_t due_ns;   /* the request in flight: due time */
    int64_t sent_ns;  /* and actual send time */
    int64_t retry_ns; /* down: not reopened before this */
    int64_t ready_ns; /* when it last became free to send */
    int opened;       /* opened at least once (a reopen is a reconnect) */
    int want_out;     /* EPOLLOUT registered */
    char out[LG_OUT_MAX];
    size_t out_len, out_off;
    char *in;
    size_t in_len, in_cap;
};

static struct {
    const char *addr;
    int port;
    const char *bind_addr;
    unsigned conns;
    double rate;
    double duration_s;
    double timeout_s;
    unsigned idle;
    unsigned jobs;
    int progress;
    const char *tag;
    const char *auth;
    const char *headers[LG_MAX_HEADERS];
    unsigned nheaders;
    struct spec specs[LG_MAX_SPECS];
    unsigned nspecs, wsum;
    uint64_t seed;
} opt = {.addr = "127.0.0.1",
         .port = 8080,
         .conns = 16,
         .rate = 1000.0,
         .duration_s = 5.0,
         .timeout_s = 10.0,
         .jobs = 1,
         .tag = "lg"};

/*
 * A latency histogram: the server's (shm/histogram.h, the same log-linear
 * buckets as its metrics segment: microseconds, exact below 64 us, then 64
 * buckets per power of two, so a percentile is within 0.8% from 64 us on),
 * with the count, sum, min and max kept exactly in nanoseconds beside it.
 * loadgen measures in nanoseconds and records the value rounded to the
 * nearest microsecond: sub-microsecond resolution is not needed (loopback
 * round trips are tens of microseconds or more; below 64 us the bucket
 * error is at most 0.5 us). Plain data, no pointer: -j's jobs send it to
 * the parent through a pipe as bytes.
 */
struct lg_hist {
    uint64_t count;
    uint64_t sum_ns;
    uint64_t min_ns;
    uint64_t max_ns;
    uint64_t bucket[HISTOGRAM_BUCKETS];
};

static void
lg_hist_init(struct lg_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min_ns = UINT64_MAX;
}

static void
lg_hist_record(struct lg_hist *h, uint64_t ns)
{
    h->bucket[histogram_bucket((ns + 500) / 1000)]++;
    h->count++;
    h->sum_ns += ns;
    if (ns < h->min_ns)
        h->min_ns = ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

static void
lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src)
{
    for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++)
        dst->bucket[i] += src->bucket[i];
    dst->count += src->count;
    dst->sum_ns += src->sum_ns;
    if (src->min_ns < dst->min_ns)
        dst->min_ns = src->min_ns;
    if (src->max_ns > dst->max_ns)
        dst->max_ns = src->max_ns;
}

/* The q-quantile in microseconds: histogram_quantile() (the middle of the
 * bucket of the ceil(q * count)-th value), kept within [min, max]; q >= 1
 * gives max exactly. 0 when empty. */
static double
lg_hist_quantile_us(const struct lg_hist *h, double q)
{
    if (h->count == 0)
        return 0.0;
    if (q >= 1.0)
        return (double)h->max_ns / 1e3;
    double us = histogram_quantile(h->bucket, q);
    if (us * 1e3 > (double)h->max_ns)
        us = (double)h->max_ns / 1e3;
    if (us * 1e3 < (double)h->min_ns)
        us = (double)h->min_ns / 1e3;
    return us;
}

static double
lg_hist_mean_us(const struct lg_hist *h)
{
    return h->count ? (double)h->sum_ns / (double)h->count / 1e3 : 0.0;
}

static struct {
    struct lg_hist latency; /* from the due time */
    struct lg_hist service; /* from the actual send */
    struct lg_hist lag;     /* our own: send time - max(due, conn free) */
    uint64_t sent, done, status[6], errors[E_COUNT], reconnects;
    uint64_t codes[600];
    uint64_t behind_max; /* most requests a connection was behind */
    uint64_t idle_open, idle_failed, idle_closed;
} st;

static struct conn *conns;
static int ep = -1;
static int64_t t0, t_end;
static uint64_t total_due; /* requests due in the run (rate mode) */
static uint64_t seq;
static unsigned idle_pending; /* idle mode: opened, not yet held or dead */
static uint64_t rng_state;
static volatile sig_atomic_t stop_flag;

static void
on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * LG_NS + ts.tv_nsec;
}

static uint64_t
rng(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static void
usage(FILE *f)
{
    fprintf(
        f,
        "usage: loadgen [options]\n"
        "  -a ADDR     server address (127.0.0.1; loopback only)\n"
        "  -p PORT     server port (8080)\n"
        "  -c N        connections (16)\n"
        "  -R RATE     requests/s over all connections, constant (1000);\n"
        "              0: closed loop, each connection as fast as answered\n"
        "  -d SECONDS  duration (5; idle mode: hold time, 0 = until "
        "SIGTERM)\n"
        "  -T SECONDS  request timeout (10)\n"
        "  -q SPEC     request kind 'WEIGHT METHOD PATH [BODY]' "
        "(repeatable;\n"
        "              default '1 GET /health'). PATH and BODY may hold\n"
        "              {rand:LO:HI} (uniform integer), {seq} (counter),\n"
        "              {tag} (-t)\n"
        "  -t TAG      text for {tag} (lg)\n"
        "  -A TOKEN    'Authorization: Bearer TOKEN' on non-GET requests\n"
        "  -H LINE     extra header line on every request (repeatable)\n"
        "  -s SEED     random seed (from the clock)\n"
        "  -I N        idle mode: open and hold N idle keep-alive "
        "connections\n"
        "  -B ADDR     source address to bind (idle mode: 127.0.0.x)\n"
        "  -j N        N processes (up to %d), each with 1/N of the\n"
        "              connections and of the rate, schedules interleaved\n"
        "  -P          progress line on stderr every second\n"
        "Output: JSON on stdout: requests, rps, latency_us {p50 p90 p99\n"
        "p999 max mean} from the due time, service_us (from the send),\n"
        "percentiles [[q, us]...], status, codes, errors by kind.\n",
        LG_MAX_JOBS);
}

static int
parse_spec(const char *s, struct spec *sp)
{
    char *end;
    unsigned long w = strtoul(s, &end, 10);
    if (end == s || *end != ' ' || w == 0 || w > 1000000)
        return -1;
    s = end + 1;
    const char *sp1 = strchr(s, ' ');
    if (!sp1 || (size_t)(sp1 - s) >= sizeof sp->method)
        return -1;
    memcpy(sp->method, s, (size_t)(sp1 - s));
    sp->method[sp1 - s] = '\0';
    s = sp1 + 1;
    const char *sp2 = strchr(s, ' ');
    size_t plen = sp2 ? (size_t)(sp2 - s) : strlen(s);
    if (plen == 0 || plen >= sizeof sp->path || s[0] != '/')
        return -1;
    memcpy(sp->path, s, plen);
    sp->path[plen] = '\0';
    if (sp2) {
        size_t blen = strlen(sp2 + 1);
        if (blen >= sizeof sp->body)
            return -1;
        memcpy(sp->body, sp2 + 1, blen + 1);
        sp->has_body = 1;
    }
    sp->weight = (unsigned)w;
    return 0;
}

/* Expands the placeholders of tpl into dst (size cap); -1 if too long. */
static int
expand(const char *tpl, char *dst, size_t cap)
{
    size_t n = 0;
    while (*tpl) {
        char tmp[64];
        const char *add = NULL;
        size_t alen = 0;
        unsigned long long lo, hi;
        int used = 0;
        if (strncmp(tpl, "{seq}", 5) == 0) {
            alen = (size_t)snprintf(tmp, sizeof tmp, "%llu",
                                    (unsigned long long)++seq);
            add = tmp;
            tpl += 5;
        } else if (strncmp(tpl, "{tag}", 5) == 0) {
            add = opt.tag;
            alen = strlen(add);
            tpl += 5;
        } else if (sscanf(tpl, "{rand:%llu:%llu}%n", &lo, &hi, &used) == 2 &&
                   used > 0 && tpl[used - 1] == '}' && hi >= lo) {
            unsigned long long v = lo + rng() % (hi - lo + 1);
            alen = (size_t)snprintf(tmp, sizeof tmp, "%llu", v);
            add = tmp;
            tpl += used;
        } else {
            tmp[0] = *tpl++;
            add = tmp;
            alen = 1;
        }
        if (n + alen + 1 > cap)
            return -1;
        memcpy(dst + n, add, alen);
        n += alen;
    }
    dst[n] = '\0';
    return (int)n;
}

/* Builds the next request of the mix into c->out. */
static int
build_request(struct conn *c)
{
    unsigned pick = (unsigned)(rng() % opt.wsum);
    const struct spec *sp = opt.specs;
    for (unsigned i = 0; i < opt.nspecs; i++) {
        if (pick < opt.specs[i].weight) {
            sp = &opt.specs[i];
            break;
        }
        pick -= opt.specs[i].weight;
    }
    char path[1100], body[2100];
    if (expand(sp->path, path, sizeof path) < 0)
        return -1;
    int blen = 0;
    if (sp->has_body && (blen = expand(sp->body, body, sizeof body)) < 0)
        return -1;
    int n = snprintf(c->out, sizeof c->out, "%s %s HTTP/1.1\r\nHost: %s:%d\r\n",
                     sp->method, path, opt.addr, opt.port);
    for (unsigned i = 0; i < opt.nheaders && n > 0; i++)
        n += snprintf(c->out + n, sizeof c->out - (size_t)n, "%s\r\n",
                      opt.headers[i]);
    if (opt.auth && strcmp(sp->method, "GET") != 0 && n > 0)
        n += snprintf(c->out + n, sizeof c->out - (size_t)n,
                      "Authorization: Bearer %s\r\n", opt.auth);
    if (sp->has_body && n > 0)
        n += snprintf(c->out + n, sizeof c->out - (size_t)n,
                      "Content-Type: application/json\r\n"
                      "Content-Length: %d\r\n",
                      blen);
    if (n <= 0 || (size_t)n + 2 + (size_t)blen >= sizeof c->out)
        return -1;
    memcpy(c->out + n, "\r\n", 2);
    n += 2;
    if (blen)
        memcpy(c->out + n, body, (size_t)blen);
    c->out_len = (size_t)n + (size_t)blen;
    c->out_off = 0;
    return 0;
}

static void
conn_close(struct conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->state = C_DOWN;
    c->in_len = 0;
}

static int
conn_open(struct conn *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)opt.port)};
    inet_pton(AF_INET, opt.addr, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (opt.bind_addr) {
        struct sockaddr_in b = {.sin_family = AF_INET};
        inet_pton(AF_INET, opt.bind_addr, &b.sin_addr);
        /* Let connect() pick the port per (source, destination) pair. */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&b, sizeof b) < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 &&
        errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP,
                             .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    c->fd = fd;
    c->state = C_CONNECTING;
    c->sent_ns = now_ns(); /* connect timeout from here */
    c->in_len = 0;
    return 0;
}

/* Counts a failure of kind and closes c. Idle mode never reopens: a held
 * connection lost is "closed by peer", one not yet held "failed". */
static void
fail(struct conn *c, enum lg_err kind)
{
    st.errors[kind]++;
    if (opt.idle) {
        if (c->state == C_IDLE_HELD) {
            st.idle_closed++;
        } else {
            st.idle_failed++;
            idle_pending--;
        }
        conn_close(c);
        c->state = C_DEAD;
        return;
    }
    conn_close(c);
    c->retry_ns = now_ns() + LG_NS / 100;
}

static void
want_out(struct conn *c, int on)
{
    if (c->want_out == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP |
                                       (on ? (uint32_t)EPOLLOUT : 0u),
                             .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

static void
try_write(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) {
                want_out(c, 1);
                return;
            }
            if (errno == EINTR)
                continue;
            fail(c, E_WRITE);
            return;
        }
        c->out_off += (size_t)w;
    }
    want_out(c, 0);
}

/* Sends the next request on a ready connection, due at due_ns. */
static void
send_request(struct conn *c, int64_t due_ns)
{
    if (build_request(c) < 0) {
        fprintf(stderr, "loadgen: request longer than %d bytes\n", LG_OUT_MAX);
        exit(2);
    }
    c->sent_ns = now_ns();
    c->due_ns = due_ns ? due_ns : c->sent_ns;
    c->state = C_BUSY;
    st.sent++;
    try_write(c);
}

static int64_t
due_of(uint64_t n)
{
    return t0 + (int64_t)((double)n * 1e9 / opt.rate);
}

/* Rate mode: the request this connection owes next, if due; sends it. */
static void
rate_kick(struct conn *c, int64_t now)
{
    uint64_t idx = (uint64_t)(c - conns);
    uint64_t n = idx + c->next_k * opt.conns;
    if (c->state != C_READY || n >= total_due)
        return;
    int64_t due = due_of(n);
    if (due > now)
        return;
    /* How far behind is this connection? */
    uint64_t behind =
        (uint64_t)((double)(now - due) * opt.rate / 1e9) / opt.conns;
    if (behind > st.behind_max)
        st.behind_max = behind;
    c->next_k++;
    /* The part of the wait that is ours: after the request was due and
     * the connection free. A loaded generator shows here, not the
     * server. */
    int64_t from = due > c->ready_ns ? due : c->ready_ns;
    lg_hist_record(&st.lag, (uint64_t)(now > from ? now - from : 0));
    send_request(c, due);
}

static void
next_request(struct conn *c, int64_t now)
{
    if (opt.idle) {
        c->state = C_IDLE_HELD;
        return;
    }
    if (opt.rate > 0)
        rate_kick(c, now);
    else if (now < t_end && !stop_flag)
        send_request(c, 0);
}

/* Parses a complete response in c->in; 1 done, 0 need more, -1 bad. */
static int
parse_response(struct conn *c, int *status, int *close_after)
{
    char *hend = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!hend)
        return c->in_len > 65536 ? -1 : 0;
    size_t hlen = (size_t)(hend - c->in) + 4;
    if (c->in_len < 12 || memcmp(c->in, "HTTP/1.", 7) != 0)
        return -1;
    int code = atoi(c->in + 9);
    if (code < 100 || code > 599)
        return -1;
    long long clen = -1;
    *close_after = 0;
    for (char *p = memchr(c->in, '\n', hlen); p && p < hend;
         p = memchr(p, '\n', (size_t)(hend - p))) {
        p++;
        if (strncasecmp(p, "content-length:", 15) == 0)
            clen = atoll(p + 15);
        else if (strncasecmp(p, "transfer-encoding:", 18) == 0)
            return -1;
        else if (strncasecmp(p, "connection:", 11) == 0) {
            const char *v = p + 11;
            while (*v == ' ')
                v++;
            if (strncasecmp(v, "close", 5) == 0)
                *close_after = 1;
        }
    }
    if (clen < 0)
        clen = (code == 204 || code == 304 || code < 200) ? 0 : -1;
    if (clen < 0)
        return -1; /* no framing we accept */
    if (c->in_len < hlen + (size_t)clen)
        return 0;
    if (c->in_len > hlen + (size_t)clen)
        return -1; /* bytes nobody asked for */
    *status = code;
    return 1;
}

static void
on_readable(struct conn *c, int64_t now)
{
    for (;;) {
        if (c->in_cap - c->in_len < 4096) {
            size_t cap = c->in_cap ? 2 * c->in_cap : 16384;
            if (cap > LG_IN_MAX) {
                fail(c, E_PARSE);
                return;
            }
            char *p = realloc(c->in, cap);
            if (!p) {
                fail(c, E_PARSE);
                return;
            }
            c->in = p;
            c->in_cap = cap;
        }
        ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (r < 0) {
            if (errno == EAGAIN)
                break;
            if (errno == EINTR)
                continue;
            fail(c, E_READ);
            return;
        }
        if (r == 0) {
            if (c->state == C_IDLE_HELD) {
                st.idle_closed++;
                conn_close(c);
                c->state = C_DEAD;
                return;
            }
            /* Closed while a request was out: an error; between requests
             * (keep-alive timeout): just reopen. */
            if (c->state == C_BUSY)
                fail(c, E_CLOSED);
            else
                conn_close(c);
            return;
        }
        c->in_len += (size_t)r;
    }
    if (c->state != C_BUSY) {
        if (c->in_len)
            fail(c, E_PARSE); /* bytes while nothing was asked */
        return;
    }
    int status = 0, close_after = 0;
    int rc = parse_response(c, &status, &close_after);
    if (rc < 0) {
        fail(c, E_PARSE);
        return;
    }
    if (rc == 0)
        return;
    st.done++;
    st.status[status / 100]++;
    st.codes[status]++;
    lg_hist_record(&st.latency, (uint64_t)(now - c->due_ns));
    lg_hist_record(&st.service, (uint64_t)(now - c->sent_ns));
    c->in_len = 0;
    if (close_after) {
        conn_close(c);
        return;
    }
    c->state = C_READY;
    c->ready_ns = now;
    if (opt.idle) {
        st.idle_open++;
        idle_pending--;
    }
    next_request(c, now);
}

static void
on_event(struct conn *c, uint32_t events, int64_t now)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            fail(c, E_CONNECT);
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = 0;
        c->state = C_READY;
        c->ready_ns = now;
        if (opt.idle)
            send_request(c, 0); /* the one request of an idle connection */
        else
            next_request(c, now);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        on_readable(c, now);
    else if ((events & EPOLLOUT) && c->state == C_BUSY)
        try_write(c);
}

static void
check_timeouts(int64_t now)
{
    int64_t limit = (int64_t)(opt.timeout_s * 1e9);
    for (unsigned i = 0; i < opt.conns; i++) {
        struct conn *c = &conns[i];
        if (c->state == C_BUSY && now - c->sent_ns > limit)
            fail(c, E_TIMEOUT);
        else if (c->state == C_CONNECTING && now - c->sent_ns > limit)
            fail(c, E_CONNECT); /* SYNs dropped: a full backlog */
    }
}

static void
json_hist(const char *name, const struct lg_hist *h)
{
    printf("\"%s\":{\"count\":%llu,\"mean\":%.1f,\"min\":%.1f,\"p50\":%.1f,"
           "\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"p9999\":%.1f,"
           "\"max\":%.1f}",
           name, (unsigned long long)h->count, lg_hist_mean_us(h),
           h->count ? (double)h->min_ns / 1e3 : 0.0,
           lg_hist_quantile_us(h, 0.5), lg_hist_quantile_us(h, 0.9),
           lg_hist_quantile_us(h, 0.99), lg_hist_quantile_us(h, 0.999),
           lg_hist_quantile_us(h, 0.9999), (double)h->max_ns / 1e3);
}

static void
json_errors(void)
{
    uint64_t total = 0;
    printf("\"errors\":{");
    for (int k = 0; k < E_COUNT; k++) {
        printf("\"%s\":%llu,", err_name[k], (unsigned long long)st.errors[k]);
        total += st.errors[k];
    }
    printf("\"total\":%llu}", (unsigned long long)total);
}

static void
report(int64_t end)
{
    double el = (double)(end - t0) / 1e9;
    if (opt.idle) {
        printf("{\"tool\":\"loadgen\",\"mode\":\"idle\",\"bind\":\"%s\","
               "\"wanted\":%u,\"open\":%llu,\"failed\":%llu,"
               "\"closed_by_peer\":%llu,\"held_s\":%.3f,",
               opt.bind_addr ? opt.bind_addr : "", opt.idle,
               (unsigned long long)st.idle_open,
               (unsigned long long)st.idle_failed,
               (unsigned long long)st.idle_closed, el);
        json_errors();
        printf("}\n");
        return;
    }
    printf(
        "{\"tool\":\"loadgen\",\"mode\":\"%s\",\"rate\":%.1f,"
        "\"connections\":%u,\"duration_s\":%.3f,\"elapsed_s\":%.3f,"
        "\"due\":%llu,\"sent\":%llu,\"requests\":%llu,\"rps\":%.1f,"
        "\"behind_max\":%llu,\"reconnects\":%llu,",
        opt.rate > 0 ? "rate" : "closed", opt.rate, opt.conns, opt.duration_s,
        el, (unsigned long long)(opt.rate > 0 ? total_due : st.sent),
        (unsigned long long)st.sent, (unsigned long long)st.done,
        el > 0 ? (double)st.done / el : 0.0, (unsigned long long)st.behind_max,
        (unsigned long long)st.reconnects);
    json_hist("latency_us", &st.latency);
    printf(",");
    json_hist("service_us", &st.service);
    printf(",");
    json_hist("send_lag_us", &st.lag);
    /* The percentile curve for the plot: q = 1 - 10^(-k/4), then max. */
    printf(",\"percentiles\":[");
    for (int k = 0; k <= 20; k++) {
        double q = 1.0 - pow(10.0, -(double)k / 4.0);
        printf("[%.6f,%.1f,%.1f],", q, lg_hist_quantile_us(&st.latency, q),
               lg_hist_quantile_us(&st.service, q));
    }
    printf("[1,%.1f,%.1f]]", (double)st.latency.max_ns / 1e3,
           (double)st.service.max_ns / 1e3);
    printf(",\"status\":{\"1xx\":%llu,\"2xx\":%llu,\"3xx\":%llu,\"4xx\":%llu,"
           "\"5xx\":%llu},\"codes\":{",
           (unsigned long long)st.status[1], (unsigned long long)st.status[2],
           (unsigned long long)st.status[3], (unsigned long long)st.status[4],
           (unsigned long long)st.status[5]);
    const char *sep = "";
    for (int k = 100; k < 600; k++)
        if (st.codes[k]) {
            printf("%s\"%d\":%llu", sep, k, (unsigned long long)st.codes[k]);
            sep = ",";
        }
    printf("},");
    json_errors();
    printf("}\n");
}

static void
progress(int64_t now)
{
    double el = (double)(now - t0) / 1e9;
    uint64_t errs = 0;
    for (int k = 0; k < E_COUNT; k++)
        errs += st.errors[k];
    if (opt.idle)
        fprintf(stderr,
                "\rloadgen %s: %llu/%u open, %llu failed, %llu closed   ",
                opt.bind_addr ? opt.bind_addr : "",
                (unsigned long long)st.idle_open, opt.idle,
                (unsigned long long)st.idle_failed,
                (unsigned long long)st.idle_closed);
    else
        fprintf(stderr,
                "\rloadgen %5.1f/%.0f s  %llu done  %.0f req/s  p99 %.0f us  "
                "errors %llu   ",
                el, opt.duration_s, (unsigned long long)st.done,
                el > 0 ? (double)st.done / el : 0.0,
                lg_hist_quantile_us(&st.latency, 0.99),
                (unsigned long long)errs);
}

/* epoll_wait for up to wait_ns: with nanosecond resolution where the
 * kernel has epoll_pwait2 (5.11), else rounded up to milliseconds (which
 * delays sends by up to 1 ms and shows in the latency from the due time). */
static int
lg_wait(struct epoll_event *evs, int64_t wait_ns)
{
    static int no_pwait2;
    if (wait_ns < 0)
        wait_ns = 0;
    if (!no_pwait2) {
        struct timespec ts = {.tv_sec = wait_ns / LG_NS,
                              .tv_nsec = wait_ns % LG_NS};
        int n = epoll_pwait2(ep, evs, LG_EVENTS, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        no_pwait2 = 1;
    }
    return epoll_wait(ep, evs, LG_EVENTS, (int)((wait_ns + 999999) / 1000000));
}

static int
is_loopback(const char *a)
{
    struct in_addr in;
    return inet_pton(AF_INET, a, &in) == 1 && (ntohl(in.s_addr) >> 24) == 127;
}

static void
parse_args(int argc, char **argv)
{
    int ch;
    while ((ch = getopt(argc, argv, "a:p:c:R:d:T:q:t:A:H:s:I:B:j:Ph")) != -1) {
        switch (ch) {
        case 'a':
            opt.addr = optarg;
            break;
        case 'p':
            opt.port = atoi(optarg);
            break;
        case 'c':
            opt.conns = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'R':
            opt.rate = strtod(optarg, NULL);
            break;
        case 'd':
            opt.duration_s = strtod(optarg, NULL);
            break;
        case 'T':
            opt.timeout_s = strtod(optarg, NULL);
            break;
        case 'q':
            if (opt.nspecs == LG_MAX_SPECS ||
                parse_spec(optarg, &opt.specs[opt.nspecs]) < 0) {
                fprintf(stderr,
                        "loadgen: bad -q '%s' (want 'WEIGHT METHOD "
                        "/PATH [BODY]', at most %d)\n",
                        optarg, LG_MAX_SPECS);
                exit(2);
            }
            opt.wsum += opt.specs[opt.nspecs++].weight;
            break;
        case 't':
            opt.tag = optarg;
            break;
        case 'A':
            opt.auth = optarg;
            break;
        case 'H':
            if (opt.nheaders == LG_MAX_HEADERS || !strchr(optarg, ':')) {
                fprintf(stderr, "loadgen: bad -H '%s'\n", optarg);
                exit(2);
            }
            opt.headers[opt.nheaders++] = optarg;
            break;
        case 's':
            opt.seed = strtoull(optarg, NULL, 10);
            break;
        case 'I':
            opt.idle = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'B':
            opt.bind_addr = optarg;
            break;
        case 'j':
            opt.jobs = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'P':
            opt.progress = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind != argc) {
        usage(stderr);
        exit(2);
    }
    if (!is_loopback(opt.addr) ||
        (opt.bind_addr && !is_loopback(opt.bind_addr))) {
        fprintf(stderr, "loadgen: loopback addresses only (127.x.y.z)\n");
        exit(2);
    }
    if (opt.port < 1 || opt.port > 65535 || opt.rate < 0 ||
        opt.duration_s < 0 || opt.timeout_s <= 0 ||
        (!opt.idle && (opt.conns < 1 || opt.duration_s <= 0))) {
        fprintf(stderr, "loadgen: bad port, rate, duration, timeout or -c\n");
        exit(2);
    }
    if (opt.jobs < 1 || opt.jobs > LG_MAX_JOBS ||
        (opt.jobs > 1 && (opt.idle || opt.conns < opt.jobs))) {
        fprintf(stderr, "loadgen: -j 1..%d, not with -I, at most -c\n",
                LG_MAX_JOBS);
        exit(2);
    }
    if (opt.idle)
        opt.conns = opt.idle;
    if (opt.conns == 0) {
        fprintf(stderr, "loadgen: no connections\n");
        exit(2);
    }
    if (opt.nspecs == 0) {
        parse_spec("1 GET /health", &opt.specs[0]);
        opt.nspecs = 1;
        opt.wsum = 1;
    }
}

/* Adds a job's counters to st. */
static void
merge_stats(const void *buf)
{
    const __typeof__(st) *o = buf;
    lg_hist_merge(&st.latency, &o->latency);
    lg_hist_merge(&st.service, &o->service);
    lg_hist_merge(&st.lag, &o->lag);
    st.sent += o->sent;
    st.done += o->done;
    st.reconnects += o->reconnects;
    for (int k = 0; k < 6; k++)
        st.status[k] += o->status[k];
    for (int k = 0; k < E_COUNT; k++)
        st.errors[k] += o->errors[k];
    for (int k = 0; k < 600; k++)
        st.codes[k] += o->codes[k];
    if (o->behind_max > st.behind_max)
        st.behind_max = o->behind_max;
}

/*
 * -j N: forks N jobs. Job j gets 1/N of the connections and of the rate,
 * and its schedule starts j / RATE after the common start, so together
 * they keep the one schedule (request k * N + j is job j's k-th). Each job
 * writes its counters (st) to a pipe when done; the parent merges and
 * reports them. Returns -1 in a job (which then runs the load), else the
 * parent's exit status once it has reported. *start: the common start.
 */
static int
run_jobs(int64_t *start, int *out_fd)
{
    int fds[LG_MAX_JOBS];
    pid_t pids[LG_MAX_JOBS];
    unsigned all_conns = opt.conns, n = opt.jobs;
    double all_rate = opt.rate;
    uint64_t all_due = (uint64_t)(opt.duration_s * all_rate);
    for (unsigned j = 0; j < n; j++) {
        int p[2];
        if (pipe(p) < 0) {
            perror("loadgen: pipe");
            exit(2);
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("loadgen: fork");
            exit(2);
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            for (unsigned i = 0; i < j; i++)
                close(fds[i]);
            close(p[0]);
            *out_fd = p[1];
            opt.conns = all_conns / n + (j < all_conns % n);
            opt.progress = opt.progress && j == 0;
            rng_state ^= (uint64_t)(j + 1) * 0x9e3779b97f4a7c15ull;
            if (all_rate > 0) {
                opt.rate = all_rate / n;
                *start += (int64_t)((double)j * 1e9 / all_rate);
                total_due = all_due > j ? (all_due - j + n - 1) / n : 0;
            }
            return -1;
        }
        close(p[1]);
        fds[j] = p[0];
        pids[j] = pid;
    }
    int failed = 0;
    for (unsigned j = 0; j < n; j++) {
        static __typeof__(st) buf;
        size_t got = 0;
        while (got < sizeof buf) {
            ssize_t r = read(fds[j], (char *)&buf + got, sizeof buf - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        close(fds[j]);
        int status = 0;
        while (waitpid(pids[j], &status, 0) < 0 && errno == EINTR)
            ;
        if (got != sizeof buf || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0) {
            fprintf(stderr, "loadgen: job %u failed\n", j);
            failed = 1;
            continue;
        }
        merge_stats(&buf);
    }
    if (failed)
        return 2;
    opt.conns = all_conns;
    total_due = all_due;
    t0 = *start;
    t_end = t0 + (int64_t)(opt.duration_s * 1e9);
    int64_t end = now_ns();
    report(end < t_end ? end : t_end);
    return 0;
}

int
main(int argc, char **argv)
{
    parse_args(argc, argv);
    rng_state = opt.seed ? opt.seed : (uint64_t)now_ns() | 1;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
        (rlim_t)opt.conns + 16 > rl.rlim_cur) {
        fprintf(stderr,
                "loadgen: %u connections need more descriptors than "
                "RLIMIT_NOFILE %llu allows: spread them over processes\n",
                opt.conns, (unsigned long long)rl.rlim_cur);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* 10 ms ahead, so that -j's jobs are all forked when it comes. */
    int64_t start = now_ns() + (opt.jobs > 1 ? LG_NS / 100 : 0);
    lg_hist_init(&st.latency);
    lg_hist_init(&st.service);
    lg_hist_init(&st.lag);
    int out_fd = -1;
    if (opt.jobs > 1) {
        int rc = run_jobs(&start, &out_fd);
        if (rc >= 0)
            return rc;
    }
    prctl(PR_SET_TIMERSLACK, 1UL); /* wake up on the schedule, not 50 us late */

    const unsigned nconn = opt.conns;
    if (nconn == 0) /* parse_args refused it; for the analyzer */
        return 2;
    conns = calloc(opt.conns, sizeof *conns);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || ep < 0) {
        perror("loadgen: setup");
        return 2;
    }
    for (unsigned i = 0; i < opt.conns; i++)
        conns[i].fd = -1;

    t0 = start;
    t_end = t0 + (int64_t)(opt.duration_s * 1e9);
    if (opt.rate > 0 && opt.jobs == 1)
        total_due = (uint64_t)(opt.duration_s * opt.rate);
    int64_t drain_end = t_end + (int64_t)(opt.timeout_s * 1e9);
    int64_t next_progress = t0 + LG_NS, next_timeouts = t0 + LG_NS / 10;
    uint64_t scan = 0; /* rate mode: requests before this one were kicked */
    unsigned next_open = 0;
    int ready_printed = 0;
    struct epoll_event evs[LG_EVENTS];

    for (;;) {
        int64_t now = now_ns();
        if (opt.idle) {
            /* Open at most LG_CONNECTS_IN_FLIGHT at a time. */
            while (next_open < opt.idle &&
                   idle_pending < LG_CONNECTS_IN_FLIGHT) {
                int rc = conn_open(&conns[next_open]);
                if (rc < 0) {
                    st.idle_failed++;
                    st.errors[E_CONNECT]++;
                    conns[next_open].state = C_DEAD;
                    if (st.idle_failed == 1)
                        fprintf(stderr, "loadgen: connect from %s: %s\n",
                                opt.bind_addr ? opt.bind_addr : "-",
                                strerror(-rc));
                } else {
                    idle_pending++;
                }
                next_open++;
            }
            if (!ready_printed && next_open == opt.idle &&
                st.idle_open + st.idle_failed >= opt.idle) {
                printf("{\"ready\":true,\"open\":%llu,\"failed\":%llu}\n",
                       (unsigned long long)st.idle_open,
                       (unsigned long long)st.idle_failed);
                fflush(stdout);
                ready_printed = 1;
                t0 = now; /* the hold starts now */
                t_end = t0 + (int64_t)(opt.duration_s * 1e9);
            }
            if (stop_flag ||
                (ready_printed && opt.duration_s > 0 && now >= t_end))
                break;
        } else {
            /* (Re)open connections that are down while the run lasts, and
             * in rate mode while requests due before the end are owed. */
            if ((now < t_end || opt.rate > 0) && !stop_flag)
                for (unsigned i = 0; i < opt.conns; i++) {
                    struct conn *c = &conns[i];
                    if (c->state != C_DOWN || now < c->retry_ns)
                        continue;
                    st.reconnects += (uint64_t)c->opened;
                    c->opened = 1;
                    if (conn_open(c) < 0) {
                        st.errors[E_CONNECT]++;
                        c->retry_ns = now + LG_NS / 100;
                    }
                }
            if (opt.rate > 0) {
                while (scan < total_due && due_of(scan) <= now) {
                    rate_kick(&conns[scan % nconn], now);
                    scan++;
                }
            }
            int outstanding = 0;
            for (unsigned i = 0; i < opt.conns; i++)
                if (conns[i].state == C_BUSY || conns[i].state == C_CONNECTING)
                    outstanding = 1;
            int owed = 0;
            if (opt.rate > 0)
                for (unsigned i = 0; i < opt.conns && !owed; i++)
                    owed = i + conns[i].next_k * opt.conns < total_due;
            if ((now >= t_end || stop_flag) &&
                ((!outstanding && !owed) || now >= drain_end || stop_flag))
                break;
        }
        int64_t wake = now + LG_NS / 10;
        if (!opt.idle && opt.rate > 0 && scan < total_due &&
            due_of(scan) < wake)
            wake = due_of(scan);
        int n = lg_wait(evs, wake - now);
        if (n < 0 && errno != EINTR) {
            perror("loadgen: epoll_wait");
            return 2;
        }
        now = now_ns();
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events, now);
        if (now >= next_timeouts) {
            check_timeouts(now);
            next_timeouts = now + LG_NS / 10;
        }
        if (opt.progress && now >= next_progress) {
            progress(now);
            next_progress += LG_NS;
        }
    }
    int64_t end = now_ns();
    if (opt.progress)
        fprintf(stderr, "\n");
    if (!opt.idle) {
        /* Due requests not answered in time. */
        for (unsigned i = 0; i < opt.conns; i++) {
            if (conns[i].state == C_BUSY)
                st.errors[E_UNFINISHED]++;
            if (opt.rate > 0) {
                uint64_t n0 = i + conns[i].next_k * opt.conns;
                if (n0 < total_due)
                    st.errors[E_UNFINISHED] +=
                        (total_due - n0 + opt.conns - 1) / opt.conns;
            }
        }
        if (end > t_end)
            end = t_end; /* rates are per second of the schedule */
    }
    if (out_fd >= 0) { /* a job of -j: the parent reports */
        size_t off = 0;
        while (off < sizeof st) {
            ssize_t w = write(out_fd, (const char *)&st + off, sizeof st - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return 2;
            off += (size_t)w;
        }
        return 0;
    }
    report(end);
    for (unsigned i = 0; i < opt.conns; i++) {
        conn_close(&conns[i]);
        free(conns[i].in);
    }
    free(conns);
    close(ep);
    return 0;
}
