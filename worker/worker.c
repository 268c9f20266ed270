/*
 * worker.c - a worker process: set-up, accepting, signals, shutdown, and
 * its side of reload and upgrade (retiring with hand-over, adopting).
 *
 * Signals (nginx's meanings, SPEC 4), acted on in the loop, never in the
 * handler: TERM/INT stop accepting, close idle connections and give the
 * rest a short grace (WORKER_FAST_GRACE_MS) before exiting; QUIT stops
 * accepting, closes idle keep-alive connections, lets requests in flight
 * finish (each then closes) and exits when none is left or after
 * shutdown_timeout_ms; USR1 reopens the log files.
 *
 * A fatal signal (SEGV, BUS, ILL, FPE, ABRT) first writes a backtrace to
 * the error log, one JSON line per frame (log_crash_backtrace(), built on
 * backtrace_symbols_fd(): async-signal-safe once libgcc is loaded, which
 * install_signals() forces), then re-raises so the master sees the signal.
 *
 * Accepting: see worker.h for the start gate and the spreading rules, and
 * balance.h for why re-registering the listener alone is not enough.
 *
 * The worker owns its modules' contexts and passes them in: the
 * connection core (struct conn_ctx, conn.h), the API (struct api, api.h)
 * and the database client; the only process-wide state here is what the
 * signal handlers need.
 */
#include "worker.h"

#include <errno.h>
#include <execinfo.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bsd/unistd.h>

#include "access_log.h"
#include "api.h"
#include "balance.h"
#include "cache.h"
#include "conn.h"
#include "edge.h"
#include "handover.h"
#include "handlers.h"
#include "log.h"
#include "pg.h"
#include "response.h"

/* Accepts per wake-up: bounded so one busy listener cannot starve clients. */
#define ACCEPT_BATCH 16
/* Re-register the listener every this many accepting wake-ups. */
#define ACCEPT_REBALANCE_EVERY 1
#define ACCEPT_RETRY_MS 100
#define WORKER_FAST_GRACE_MS 500
#define LINGER_MS 2000
#define OUT_CHUNK_BYTES 16384

enum { DRAIN_NONE = 0, DRAIN_HANDOVER, DRAIN_GRACEFUL, DRAIN_FAST };

static struct worker self;
static struct edge edge; /* issue 10: auth, rate limit, CORS, gzip, ids */
static volatile sig_atomic_t got_term, got_quit, got_reopen;

static void
on_signal(int signo)
{
    int saved = errno;
    switch (signo) {
    case SIGTERM:
    case SIGINT:
        got_term = 1;
        break;
    case SIGQUIT:
        got_quit = 1;
        break;
    case SIGUSR1:
        got_reopen = 1;
        break;
    default:
        break;
    }
    errno = saved;
}

static void
on_crash(int signo)
{
    log_crash_backtrace(signo);
    signal(signo, SIG_DFL);
    raise(signo);
}

static void
install_signals(void)
{
    static const int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    static char altstack[64 * 1024];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack)};
    struct sigaction sa;
    void *warm[2];

    (void)backtrace(warm, 2); /* loads libgcc now, not in the handler */
    if (sigaltstack(&ss, NULL) < 0)
        log_warn("sigaltstack() failed: %s", strerror(errno));

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_crash;
    sa.sa_flags = (int)(SA_RESETHAND | SA_ONSTACK);
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
        sigaction(fatal[i], &sa, NULL);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
}

/* ---- accepting ---- */

static void on_accept(struct loop *loop, struct loop_watch *w, uint32_t events);

static void
listener_register(struct worker *wk, struct listener *l)
{
    if (l->registered || wk->accept_stopped)
        return;
    if (loop_add(wk->loop, &l->w, l->fd, EPOLLIN | EPOLLEXCLUSIVE, on_accept) <
        0) {
        log_error("epoll_ctl(ADD) failed for listener %d: %s", l->fd,
                  strerror(errno));
        return;
    }
    l->registered = true;
}

static void
listener_unregister(struct worker *wk, struct listener *l)
{
    if (!l->registered)
        return;
    if (loop_del(wk->loop, &l->w) < 0)
        log_error("epoll_ctl(DEL) failed for listener %d: %s", l->fd,
                  strerror(errno));
    l->registered = false;
}

/*
 * Stops accepting; retry (if not NULL) is the queue of the resume timer.
 * A yield keeps this worker counted as accepting, so the others do not
 * run ahead of it while it steps aside for a moment.
 */
static void
pause_accept(struct worker *wk, struct timer_queue *retry)
{
    for (unsigned i = 0; i < wk->nlisteners; i++)
        listener_unregister(wk, &wk->listeners[i]);
    wk->accept_paused = true;
    if (retry != &wk->yield_q)
        balance_set_accepting(wk->block, false);
    if (retry)
        timer_start(wk->loop, retry, &wk->accept_timer);
}

static void
resume_accept(struct worker *wk)
{
    if (!wk->accept_paused || wk->accept_stopped)
        return;
    if (wk->conns.nconns >= wk->cfg->max_connections)
        return;
    wk->accept_paused = false;
    timer_stop(&wk->accept_timer);
    for (unsigned i = 0; i < wk->nlisteners; i++)
        listener_register(wk, &wk->listeners[i]);
    balance_set_accepting(wk->block, true);
}

static void
accept_retry(struct loop *loop, struct timer *t)
{
    struct worker *wk = container_of(t, struct worker, accept_timer);

    (void)loop;
    resume_accept(wk);
}

static void
yield_over(struct loop *loop, struct timer *t)
{
    struct worker *wk = container_of(t, struct worker, accept_timer);

    (void)loop;
    /* take at least one connection before yielding again, so a queued
     * connection that woke nobody else is not left waiting */
    wk->must_accept = true;
    resume_accept(wk);
}

static void
on_accept(struct loop *loop, struct loop_watch *w, uint32_t events)
{
    struct listener *l = container_of(w, struct listener, w);
    struct worker *wk = l->wk;
    int accepted = 0;

    (void)loop;
    (void)events;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss = {0};
        socklen_t sl = sizeof(ss);
        int fd, one = 1;

        if (wk->conns.nconns >= wk->cfg->max_connections) {
            log_warn("worker %u at max_connections (%u): pausing accept",
                     wk->id, wk->cfg->max_connections);
            pause_accept(wk, NULL);
            return;
        }
        if (!wk->must_accept && balance_should_yield(wk->block)) {
            wk->yields++;
            pause_accept(wk, &wk->yield_q);
            return;
        }
        fd = accept4(l->fd, (struct sockaddr *)&ss, &sl,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                log_warn("accept4() failed: %s; pausing accept for %d ms",
                         strerror(errno), ACCEPT_RETRY_MS);
                pause_accept(wk, &wk->accept_q);
                return;
            }
            log_error("accept4() failed: %s", strerror(errno));
            break;
        }
        if (ss.ss_family != AF_UNIX &&
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
            log_debug("setsockopt(TCP_NODELAY) failed: %s", strerror(errno));
        if (conn_open(&wk->conns, fd, (struct sockaddr *)&ss) == NULL)
            continue;
        balance_set_active(wk->block, wk->conns.nconns);
        wk->must_accept = false;
        wk->accepted++;
        accepted++;
    }
    /*
     * EPOLLEXCLUSIVE wakes the first registered waiter; re-adding the
     * listener moves this worker to the back of the queue so the next
     * connection wakes another one (nginx does this every 16 wake-ups).
     */
    if (accepted && ++wk->accept_wakeups % ACCEPT_REBALANCE_EVERY == 0 &&
        l->registered) {
        listener_unregister(wk, l);
        listener_register(wk, l);
    }
}

/* ---- shutdown ---- */

static void begin_shutdown(struct worker *wk, int mode);

static void
drain_expired(struct loop *loop, struct timer *t)
{
    struct worker *wk = container_of(t, struct worker, drain_timer);

    if (wk->draining == DRAIN_HANDOVER) {
        /* what is still busy cannot be handed over: answer it with
         * "Connection: close" in the second half of the grace */
        log_info("worker %u: hand-over time over with %u busy "
                 "connection(s); they close after their answers",
                 wk->id, wk->conns.nconns);
        begin_shutdown(wk, DRAIN_GRACEFUL);
        return;
    }
    if (wk->conns.nconns > 0)
        log_warn("worker %u: shutdown grace over with %u connection(s) "
                 "open; exiting",
                 wk->id, wk->conns.nconns);
    loop_stop(loop);
}

/* conn_handover_fn: sends an idle connection to the master. */
static int
offer_connection(struct conn_ctx *ctx, struct conn *c, void *arg)
{
    struct worker *wk = arg;

    (void)ctx;
    if (wk->channel < 0 || wk->channel_broken)
        return -1;
    if (handover_send(wk->channel, HANDOVER_CONN, NULL, c->w.fd) == 0) {
        wk->handed_over++;
        return 0;
    }
    if (errno == EAGAIN) {
        /* full: offered again when it is writable (on_channel) */
        if (!wk->channel_out) {
            wk->channel_out = true;
            (void)loop_mod(wk->loop, &wk->channel_w, EPOLLIN | EPOLLOUT);
        }
        return -1;
    }
    log_error("worker %u: sending a connection to the master failed: %s; "
              "closing idle connections instead",
              wk->id, strerror(errno));
    wk->channel_broken = true; /* before_sleep switches to a plain drain */
    return -1;
}

static void
begin_shutdown(struct worker *wk, int mode)
{
    uint32_t grace;
    int from = wk->draining;

    if (wk->draining == DRAIN_FAST || wk->draining == mode)
        return;
    if (mode == DRAIN_HANDOVER && wk->draining != DRAIN_NONE)
        return; /* already leaving without hand-over */
    for (unsigned i = 0; i < wk->nlisteners; i++) {
        listener_unregister(wk, &wk->listeners[i]);
        if (close(wk->listeners[i].fd) < 0)
            log_error("close() of listener failed: %s", strerror(errno));
        wk->listeners[i].fd = -1;
    }
    wk->nlisteners = 0;
    wk->accept_stopped = true;
    balance_set_accepting(wk->block, false);
    timer_stop(&wk->accept_timer);
    wk->draining = mode;
    if (mode == DRAIN_FAST)
        grace = WORKER_FAST_GRACE_MS;
    else if (mode == DRAIN_HANDOVER || from == DRAIN_HANDOVER)
        grace = wk->cfg->shutdown_timeout_ms / 2 + 1; /* two halves */
    else
        grace = wk->cfg->shutdown_timeout_ms;
    log_info("worker %u: %s, %u connection(s) open", wk->id,
             mode == DRAIN_FAST       ? "fast shutdown"
             : mode == DRAIN_HANDOVER ? "retiring, handing connections over"
                                      : "graceful shutdown",
             wk->conns.nconns);
    timer_stop(&wk->drain_timer);
    timer_queue_init(&wk->drain_q, grace, drain_expired);
    if (!wk->drain_q_added) {
        if (loop_add_queue(wk->loop, &wk->drain_q) < 0)
            log_error("cannot add the drain timer");
        wk->drain_q_added = true;
    }
    timer_start(wk->loop, &wk->drain_q, &wk->drain_timer);
    if (mode != DRAIN_FAST) /* ps shows who is on the way out */
        setproctitle("-apiaryd: worker %u (retiring, generation %u)", wk->id,
                     wk->generation);
    if (mode == DRAIN_HANDOVER)
        conn_ctx_hand_over(&wk->conns, offer_connection);
    else
        conn_ctx_drain(&wk->conns);
    if (wk->conns.nconns == 0)
        loop_stop(wk->loop);
}

/* The master's channel: connections to adopt, the order to retire. */
static void
on_channel(struct loop *loop, struct loop_watch *w, uint32_t events)
{
    struct worker *wk = container_of(w, struct worker, channel_w);

    (void)loop;
    if ((events & EPOLLOUT) && wk->channel_out) {
        wk->channel_out = false;
        (void)loop_mod(wk->loop, &wk->channel_w, EPOLLIN);
        if (wk->draining == DRAIN_HANDOVER)
            conn_ctx_hand_over(&wk->conns, offer_connection);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    for (int i = 0; i < ACCEPT_BATCH * 4; i++) {
        struct handover_msg m;
        int fd, rc = handover_recv(wk->channel, &m, &fd);

        if (rc < 0 && errno == EPROTO) {
            log_error("worker %u: malformed message from the master; "
                      "dropped",
                      wk->id);
            continue;
        }
        if (rc <= 0) {
            if (rc == 0 || errno != EAGAIN) {
                /* the master is gone: PR_SET_PDEATHSIG ends us too */
                (void)loop_del(wk->loop, &wk->channel_w);
                wk->channel_broken = true;
            }
            return;
        }
        if (m.type == HANDOVER_RETIRE) {
            begin_shutdown(wk, DRAIN_HANDOVER);
        } else if (m.type == HANDOVER_CONN) {
            if (wk->draining == DRAIN_HANDOVER && !wk->channel_broken &&
                handover_send(wk->channel, HANDOVER_CONN, NULL, fd) == 0) {
                (void)close(fd); /* retiring too: straight back */
                continue;
            }
            if (conn_adopt(&wk->conns, fd) != NULL) {
                wk->adopted++;
                balance_set_active(wk->block, wk->conns.nconns);
            }
        }
    }
}

/* The connection core closed a connection: resume accepting, end a drain. */
static void
conn_closed(struct conn_ctx *ctx, void *arg)
{
    struct worker *wk = arg;

    balance_set_active(wk->block, ctx->nconns);
    if (wk->accept_paused && !wk->accept_timer.queue && wk->serving)
        resume_accept(wk);
    if (wk->draining && ctx->nconns == 0)
        loop_stop(wk->loop);
}

/*
 * The start gate (worker.h): registers the listeners once the database is
 * ready or start_timeout_ms have passed.
 */
static void
start_serving(struct worker *wk, const char *why)
{
    if (wk->serving || wk->accept_stopped)
        return;
    wk->serving = true;
    loop_alarm_cancel(wk->loop, &wk->start_alarm);
    for (unsigned i = 0; i < wk->nlisteners; i++) {
        listener_register(wk, &wk->listeners[i]);
        if (!wk->listeners[i].registered)
            log_error("worker %u cannot accept on listener %u", wk->id, i);
    }
    balance_set_active(wk->block, wk->conns.nconns);
    balance_set_accepting(wk->block, true);
    balance_set_served(wk->block);
    /* wakes the master, which waits for a new generation to be ready */
    if (wk->channel >= 0 &&
        handover_send(wk->channel, HANDOVER_READY, NULL, -1) < 0)
        log_debug("telling the master we serve failed: %s", strerror(errno));
    log_at(wk->pg && !pg_is_ready(wk->pg) ? LOG_WARN : LOG_DEBUG,
           "worker %u accepting connections (%s)", wk->id, why);
}

static void
start_timed_out(struct loop *loop, void *arg)
{
    (void)loop;
    start_serving(arg, "database not ready within start_timeout_ms");
}

/* ---- loop hooks ---- */

static void
before_sleep(struct loop *loop, void *arg)
{
    struct worker *wk = arg;

    (void)loop;
    if (got_reopen) {
        got_reopen = 0;
        if (log_reopen() < 0)
            log_error("reopening logs failed: %s", strerror(errno));
    }
    if (got_term) {
        got_term = 0;
        begin_shutdown(wk, DRAIN_FAST);
    }
    if (got_quit) {
        got_quit = 0;
        begin_shutdown(wk, DRAIN_GRACEFUL);
    }
    metrics_hook_sync(&wk->metrics, &wk->conns, wk->pg, &wk->api.cache_stats,
                      wk->edge, wk->accepted, 0);
    if (wk->channel_broken && wk->draining == DRAIN_HANDOVER)
        begin_shutdown(wk, DRAIN_GRACEFUL);
    pg_flush(wk->pg); /* this iteration's queries, as one batch */
    conn_ctx_flush(&wk->conns);
    /* connections closed by the flush: close their fds before sleeping,
     * not at the next wake-up (a client reading to EOF would wait) */
    conn_ctx_reap(&wk->conns);
    log_flush();
}

static void
after_events(struct loop *loop, void *arg)
{
    struct worker *wk = arg;

    (void)loop;
    conn_ctx_reap(&wk->conns);
}

static void
tick(struct loop *loop, void *arg)
{
    struct worker *wk = arg;
    struct timespec now;

    (void)loop;
    clock_gettime(CLOCK_REALTIME, &now);
    response_date_update(now.tv_sec);
    metrics_hook_sync(&wk->metrics, &wk->conns, wk->pg, &wk->api.cache_stats,
                      wk->edge, wk->accepted,
                      (uint64_t)now.tv_sec * 1000000 +
                          (uint64_t)now.tv_nsec / 1000);
}

/* ---- set-up ---- */

static void report_fatal(const char *text);

/*
 * The database client's events (pg.h).  Ready: the start gate opens (a
 * respawned worker serves only once it can).  An old schema: a worker
 * that has never served exits 2 (SPEC 4, 6: refuse to serve; the master
 * decides whether to respawn); one that has served keeps answering 503
 * while pg retries, since someone may be migrating right now.
 */
static void
db_ready(void *arg)
{
    struct worker *wk = arg;

    api_cache_ready(&wk->api); /* missed notifications: flush (api.c) */
    start_serving(arg, "database ready");
}

/* A write on some host changed a cached key (api.c, "Shared cache"). */
static void
db_notify(void *arg, const char *payload)
{
    struct worker *wk = arg;

    api_cache_notify(&wk->api, payload);
}

static void
db_schema_old(void *arg, const char *diag)
{
    struct worker *wk = arg;

    if (wk->serving) {
        log_error("%s; answering 503 until it is migrated", diag);
        return;
    }
    {
        char text[HANDOVER_TEXT_MAX];
        snprintf(text, sizeof(text), "%s; this worker refuses to serve", diag);
        report_fatal(text);
    }
    /* not exit() from inside the database client: leave the loop, clean
     * up, then exit 2 (worker_run) */
    wk->exit_status = 2;
    loop_stop(wk->loop);
}

/* Tells the master why this worker could not start (its -d report and
 * its "reload failed" line name it), then logs it. */
static void
report_fatal(const char *text)
{
    if (self.channel >= 0)
        (void)handover_send(self.channel, HANDOVER_FATAL, text, -1);
    log_error("%s", text);
}

static void
worker_fail(const char *what)
{
    char text[HANDOVER_TEXT_MAX];

    snprintf(text, sizeof(text), "worker start failed: %s: %s", what,
             strerror(errno));
    report_fatal(text);
    exit(2);
}

_Noreturn void
worker_run(const struct worker_start *ws)
{
    uint32_t generation = ws->generation;
    unsigned id = ws->id, nlisten = ws->nlisten;
    const struct config *cfg = ws->cfg;
    const int *listen_fds = ws->listen_fds;
    struct worker *wk = &self;
    struct conn_settings cs;
    struct rlimit rl;
    char proc[32];
    sigset_t block, sleep_mask;

    memset(wk, 0, sizeof(*wk));
    wk->magic = WORKER_MAGIC;
    wk->generation = generation;
    wk->id = id;
    wk->block = ws->block;
    wk->channel = ws->channel;
    wk->cfg = cfg;
    snprintf(proc, sizeof(proc), "worker %u", id);
    log_set_proc(proc);
    setproctitle("-apiaryd: worker %u", id);
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
        log_warn("prctl(PR_SET_PDEATHSIG) failed: %s", strerror(errno));
    balance_claim(wk->block, generation);

    install_signals();
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGQUIT);
    sigaddset(&block, SIGUSR1);
    /* blocked except while sleeping; the master's other signals open */
    sigprocmask(SIG_SETMASK, &block, NULL);
    sigemptyset(&sleep_mask);

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        worker_fail("getrlimit(RLIMIT_NOFILE)");
    memset(&cs, 0, sizeof(cs));
    cs.worker_id = id;
    cs.limits.max_request_line = cfg->max_request_line;
    cs.limits.max_header_bytes = cfg->max_header_bytes;
    cs.limits.max_headers = cfg->max_headers;
    cs.limits.max_body_bytes = cfg->max_body_bytes;
    cs.header_timeout_ms = cfg->header_timeout_ms;
    cs.body_timeout_ms = cfg->body_timeout_ms;
    cs.keepalive_timeout_ms = cfg->keepalive_timeout_ms;
    cs.send_timeout_ms = cfg->send_timeout_ms;
    cs.linger_ms = LINGER_MS;
    cs.request_timeout_ms = cfg->request_timeout_ms;
    cs.output_buffer_limit = cfg->output_buffer_limit;
    cs.out_chunk_bytes = OUT_CHUNK_BYTES;
    cs.max_fds = rl.rlim_cur > 4194304 ? 4194304 : (unsigned)rl.rlim_cur;

    wk->loop = loop_new();
    if (wk->loop == NULL)
        worker_fail("epoll_create1()");
    (void)log_attach_loop(wk->loop);
    if (conn_ctx_init(&wk->conns, wk->loop, &wk->router, &cs) < 0)
        worker_fail("setting up the connection table");
    wk->conns.on_closed = conn_closed;
    wk->conns.owner = wk;
    if (request_hooks_add_done(&wk->conns.hooks, access_log_done, &wk->id) < 0)
        worker_fail("adding the access log hook");

    timer_queue_init(&wk->accept_q, ACCEPT_RETRY_MS, accept_retry);
    timer_queue_init(&wk->yield_q, BALANCE_YIELD_MS, yield_over);
    timer_init(&wk->accept_timer);
    timer_init(&wk->drain_timer);
    loop_add_queue(wk->loop, &wk->accept_q);
    loop_add_queue(wk->loop, &wk->yield_q);
    loop_set_tick(wk->loop, 1000, tick, wk);
    loop_set_before_sleep(wk->loop, before_sleep, wk);
    loop_set_after_events(wk->loop, after_events, wk);
    response_date_update(time(NULL));

    if (cfg->database_url[0]) {
        const struct pg_stmt_def *stmts;
        unsigned nstmts;
        char app[64];
        stmts = api_statements(&nstmts);
        snprintf(app, sizeof(app), "apiaryd worker %u", id);
        const struct pg_events ev = {db_ready, db_schema_old, wk, db_notify,
                                     API_CACHE_CHANNEL};
        wk->pg = pg_new(wk->loop, cfg->database_url, stmts, nstmts,
                        cfg->statement_timeout_ms, cfg->db_lock_wait_ms,
                        cfg->db_pipeline_depth, cfg->db_queue_limit, app, &ev);
        if (wk->pg == NULL)
            worker_fail("pg_new()");
    } else {
        log_warn("no database_url configured: database routes answer 503");
    }
    api_init(&wk->api, wk->pg);
    api_set_cache(&wk->api, cache_shared(), cfg->cache_ttl_ms);

    router_init(&wk->router);
    if (handlers_register(&wk->router, cfg, wk) < 0 ||
        api_register(&wk->router, &wk->api) < 0) {
        report_fatal("worker start failed: route table too small");
        exit(2);
    }
    char edge_why[CONFIG_DIAG_MAX];
    if (edge_init(&edge, cfg, &wk->conns.hooks, &wk->router, edge_why,
                  sizeof(edge_why)) < 0) {
        log_error("worker start failed: %s", edge_why);
        exit(2);
    }
    wk->edge = &edge;
    /* after edge_init(): its route (/openapi.json) is in the router too */
    if (metrics_hook_attach(&wk->metrics, &wk->conns.hooks, &wk->router, cfg) <
        0)
        worker_fail("adding the metrics hook");

    if (nlisten > WORKER_MAX_LISTENERS)
        nlisten = WORKER_MAX_LISTENERS;
    for (unsigned i = 0; i < nlisten; i++) {
        wk->listeners[i].fd = listen_fds[i];
        wk->listeners[i].wk = wk;
    }
    wk->nlisteners = nlisten;
    if (wk->channel >= 0 && loop_add(wk->loop, &wk->channel_w, wk->channel,
                                     EPOLLIN, on_channel) < 0)
        worker_fail("adding the hand-over channel to epoll");
    balance_set_active(wk->block, 0);
    /* the start gate: accept once the database is ready (before_sleep),
     * or after start_timeout_ms */
    if (wk->pg == NULL)
        start_serving(wk, "no database configured");
    else
        loop_alarm_set(wk->loop, &wk->start_alarm, cfg->start_timeout_ms,
                       start_timed_out, wk);

    log_debug("worker %u (generation %u) started", id, generation);
    if (loop_run(wk->loop, &sleep_mask) < 0)
        log_error("epoll_pwait() failed: %s", strerror(errno));

    /* orderly exit: close what is left, free what we own (valgrind) */
    conn_ctx_fini(&wk->conns);
    if (wk->handed_over || wk->adopted)
        log_info("worker %u (generation %u): %llu connection(s) handed "
                 "over, %llu adopted",
                 id, generation, (unsigned long long)wk->handed_over,
                 (unsigned long long)wk->adopted);
    if (wk->channel >= 0)
        (void)close(wk->channel);
    pg_free(&wk->pg);
    api_fini(&wk->api);
    metrics_hook_fini(&wk->metrics);
    edge_fini(&edge);
    log_flush();
    log_detach_loop();
    loop_free(&wk->loop);
    log_debug("worker %u exiting", id);
    exit(wk->exit_status);
}
