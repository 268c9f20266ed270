/*
 * master.c - see master.h.
 *
 * Generations (SPEC 4).  Workers are (generation, slot).  The master keeps
 * up to MAX_GENS generations, each with its own configuration and slots:
 *   CURRENT   the one serving; supervised (respawn rules below);
 *   STARTING  a reload's new generation, not yet ready; if one of its
 *             workers exits, or it is not ready within start_timeout_ms
 *             plus a margin, the reload fails: it is stopped and the
 *             current generation keeps serving;
 *   RETIRING  the previous one (or a failed start): never respawned;
 *             SIGKILLed at its deadline; freed when its last worker is
 *             reaped.
 * A generation is ready when every worker of it has passed its start gate
 * (balance "served").  Then the current one retires: each of its workers
 * gets HANDOVER_RETIRE on its channel, stops accepting, answers what is in
 * flight and sends each idle keep-alive connection (and each one as it goes
 * idle) back here; the master relays every descriptor to a ready worker of
 * the current generation, round robin (handover.h).  During a binary
 * upgrade (USR2) the relay target is the new master instead (master.h).
 *
 * Each worker gets a block: a number unique among the live workers of
 * every generation (1..BALANCE_MAX_WORKERS), assigned when its generation
 * is made and freed with it, so that per-worker shared state (balance
 * counters; the metrics and cache modules' blocks) is never shared by two
 * generations.
 *
 * Supervision rules of the current generation:
 *   - a worker that exits is logged with its status or signal and
 *     respawned at once;
 *   - a worker that dies within CRASH_WINDOW_MS of its start counts as a
 *     quick death; consecutive quick deaths delay the next respawn by
 *     100 ms, 200 ms, ... up to RESPAWN_MAX_DELAY_MS (crash-loop backoff);
 *   - exit status 2 means "this worker could not start" (STYLE 5): before
 *     any worker of this master has served, such a slot is not respawned,
 *     and when every slot is in that state the master gives up and exits
 *     1 (a bad configuration or schema on first start); once a worker has
 *     served, a slot exiting 2 is respawned with the crash-loop backoff
 *     and logged, and the master keeps running (SPEC 4: a worker that
 *     cannot start never takes the running service down).
 * Shutdown: TERM/INT forward TERM and SIGKILL whatever is left after
 * FAST_KILL_MS (under the 1.5 s SPEC limit); QUIT forwards QUIT and waits
 * up to shutdown_timeout_ms plus a second before SIGKILL.
 */
#include "master.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bsd/libutil.h>
#include <bsd/string.h>
#include <bsd/unistd.h>

#include "balance.h"
#include "cache.h"
#include "daemon.h"
#include "handover.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "metrics_hook.h"
#include "ratelimit.h"
#include "worker.h"

#define MAX_WORKERS 256
#define MAX_GENS 4
#define CRASH_WINDOW_MS 1000
#define RESPAWN_MAX_DELAY_MS 10000
#define FAST_KILL_MS 1200
#define START_MARGIN_MS 5000  /* a new generation: start_timeout_ms + this */
#define RETIRE_MARGIN_MS 2000 /* retiring: shutdown_timeout_ms + this */
#define RELAY_MAX 4096        /* descriptors waiting for a worker */
#define MAX_POLL (MAX_GENS * MAX_WORKERS + 2)

#define ENV_LISTEN_FDS "APIARY_LISTEN_FDS"
#define ENV_UPGRADE_FD "APIARY_UPGRADE_FD"
#define ENV_CACHE_FD "APIARY_CACHE_FD"         /* shm/cache.c */
#define ENV_RATELIMIT_FD "APIARY_RATELIMIT_FD" /* shm/ratelimit.c */

struct slot {
    pid_t pid;      /* 0: not running */
    unsigned id;    /* 1-based, shown in titles and logs */
    unsigned block; /* per-worker shm index, 0: none */
    int ch;         /* master's end of the hand-over channel, -1: none */
    uint64_t started_ms;
    uint64_t respawn_at_ms; /* when pid == 0 and not fatal */
    unsigned quick_deaths;
    bool fatal;
    int mblock; /* metrics block of the running worker, -1: none */
};

enum gen_state { GEN_FREE = 0, GEN_STARTING, GEN_CURRENT, GEN_RETIRING };

struct gen {
    struct config *cfg;   /* owned */
    uint64_t deadline_ms; /* STARTING: ready by; RETIRING: killed at */
    struct slot slots[MAX_WORKERS];
    enum gen_state state;
    uint32_t number;
    unsigned nslots;
    bool ready_reported;
    char reason[HANDOVER_TEXT_MAX]; /* a worker's last "could not start" */
};

static volatile sig_atomic_t got_chld, got_term, got_quit, got_hup, got_usr1,
    got_usr2;

static struct gen gens[MAX_GENS];
static struct gen *cur;
static uint32_t last_generation;
static bool blocks_used[BALANCE_MAX_WORKERS + 1];
static bool ever_served; /* some worker of this master accepted */
static int lfds[LISTEN_MAX];
static unsigned nlfds;
static struct pidfh *pfh;
static const struct master_opts *opts;
static char startup_reason[512];

/* descriptors waiting to be relayed, and the round-robin position */
static int relay_q[RELAY_MAX];
static unsigned relay_head, relay_len, relay_rr;
static uint64_t relayed, relay_dropped;

/* binary upgrade: the new master (our child), or our parent (old master) */
static pid_t upgrade_pid;
static int upgrade_ch = -1;   /* to the new master */
static bool upgrade_ready;    /* the new master serves */
static bool upgrade_finish;   /* QUIT: our connections go to the new master */
static bool upgrade_rollback; /* HUP: the new master was told to go */
static int parent_ch = -1;    /* to the old master (we are the new one) */
static bool rolling_back;     /* the old master took everything back */
static int old_cache_fd = -1; /* the old master's segments, to adopt */
static int old_rl_fd = -1;
static char oldbin[CONFIG_PATH_MAX + 8];
static struct metrics metrics_seg;
static struct metrics *metrics; /* NULL: metrics off or unavailable */

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A start-up error: logged, and kept for the -d report. */
static void startup_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void
startup_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(startup_reason, sizeof(startup_reason), fmt, ap);
    va_end(ap);
    log_error("%s", startup_reason);
}

static void
on_signal(int signo)
{
    int saved = errno;
    switch (signo) {
    case SIGCHLD:
        got_chld = 1;
        break;
    case SIGTERM:
    case SIGINT:
        got_term = 1;
        break;
    case SIGQUIT:
        got_quit = 1;
        break;
    case SIGHUP:
        got_hup = 1;
        break;
    case SIGUSR1:
        got_usr1 = 1;
        break;
    case SIGUSR2:
        got_usr2 = 1;
        break;
    default:
        break;
    }
    errno = saved;
}

static const int master_signals[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT,
                                     SIGHUP,  SIGUSR1, SIGUSR2};

static void
install_signals(sigset_t *blocked)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigemptyset(blocked);
    for (size_t i = 0; i < sizeof(master_signals) / sizeof(int); i++) {
        sigaction(master_signals[i], &sa, NULL);
        sigaddset(blocked, master_signals[i]);
    }
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigprocmask(SIG_BLOCK, blocked, NULL);
}

/* ---- generations and blocks ---- */

/* Tells the balance module the highest block in use (it scans to it). */
static void
blocks_changed(void)
{
    unsigned hi = 0;
    for (unsigned b = 1; b <= BALANCE_MAX_WORKERS; b++)
        if (blocks_used[b])
            hi = b;
    balance_set_span(hi);
}

static unsigned
block_alloc(void)
{
    for (unsigned b = 1; b <= BALANCE_MAX_WORKERS; b++)
        if (!blocks_used[b]) {
            blocks_used[b] = true;
            return b;
        }
    return 0;
}

/* The worker count of a generation with configuration cfg. */
static unsigned
nslots_of(const struct config *cfg)
{
    return cfg->workers < MAX_WORKERS ? cfg->workers : MAX_WORKERS;
}

static struct gen *
gen_new(struct config *cfg)
{
    struct gen *g = NULL;

    for (unsigned i = 0; i < MAX_GENS && g == NULL; i++)
        if (gens[i].state == GEN_FREE)
            g = &gens[i];
    if (g == NULL)
        return NULL;
    memset(g, 0, sizeof(*g));
    g->number = ++last_generation;
    g->cfg = cfg;
    g->nslots = nslots_of(cfg);
    for (unsigned i = 0; i < g->nslots; i++) {
        g->slots[i].id = i + 1;
        g->slots[i].ch = -1;
        g->slots[i].block = block_alloc();
        if (g->slots[i].block == 0)
            log_warn("generation %u worker %u: no free balance block; it "
                     "is left out of connection spreading",
                     g->number, i + 1);
    }
    blocks_changed();
    return g;
}

static void
gen_free(struct gen *g)
{
    for (unsigned i = 0; i < g->nslots; i++)
        if (g->slots[i].block)
            blocks_used[g->slots[i].block] = false;
    blocks_changed();
    free(g->cfg);
    g->cfg = NULL;
    g->state = GEN_FREE;
}

static unsigned
gen_live(const struct gen *g)
{
    unsigned n = 0;
    for (unsigned i = 0; i < g->nslots; i++)
        n += g->slots[i].pid != 0;
    return n;
}

static unsigned
live_workers(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < MAX_GENS; i++)
        if (gens[i].state != GEN_FREE)
            n += gen_live(&gens[i]);
    return n;
}

/* Every worker of g has passed its start gate. */
static bool
gen_ready(const struct gen *g)
{
    for (unsigned i = 0; i < g->nslots; i++)
        if (g->slots[i].pid == 0 || !balance_served(g->slots[i].block))
            return false;
    return true;
}

/* ---- workers ---- */

/* In a new child: close every master-side descriptor it must not hold. */
static void
close_master_fds(void)
{
    for (unsigned i = 0; i < MAX_GENS; i++)
        for (unsigned j = 0; j < gens[i].nslots; j++)
            if (gens[i].state != GEN_FREE && gens[i].slots[j].ch >= 0)
                (void)close(gens[i].slots[j].ch);
    if (upgrade_ch >= 0)
        (void)close(upgrade_ch);
    if (parent_ch >= 0)
        (void)close(parent_ch);
    for (unsigned i = 0; i < relay_len; i++)
        (void)close(relay_q[(relay_head + i) % RELAY_MAX]);
}

static void
spawn(struct gen *g, struct slot *s)
{
    int sv[2];
    pid_t pid;

    if (handover_pair(sv) < 0) {
        log_error("socketpair() for worker %u failed: %s; retrying in 1 s",
                  s->id, strerror(errno));
        s->respawn_at_ms = now_ms() + 1000;
        return;
    }
    s->mblock = metrics_worker_assign(metrics, s->id, g->number);
    pid = fork();
    if (pid < 0) {
        metrics_worker_gone(metrics, 0, s->id, g->number, s->mblock);
        log_error("fork() for worker %u failed: %s; retrying in 1 s", s->id,
                  strerror(errno));
        (void)close(sv[0]);
        (void)close(sv[1]);
        s->respawn_at_ms = now_ms() + 1000;
        return;
    }
    if (pid == 0) {
        struct worker_start ws = {
            .generation = g->number,
            .id = s->id,
            .block = s->block,
            .cfg = g->cfg,
            .listen_fds = lfds,
            .nlisten = nlfds,
            .channel = sv[1],
        };
        /* the pidfile lock and the other channels stay with the master */
        if (pfh)
            pidfile_close(pfh);
        close_master_fds();
        (void)close(sv[0]);
        daemon_child_stdio();
        worker_run(&ws);
    }
    (void)close(sv[1]);
    s->ch = sv[0];
    s->pid = pid;
    s->started_ms = now_ms();
    /* per-module "worker started" calls (pid, slot, generation, block):
     * one line each, here */
    metrics_worker_pid(metrics, s->mblock, pid);
    log_info("worker %u started, pid %d, generation %u", s->id, (int)pid,
             g->number);
}

static bool
slot_of(pid_t pid, struct gen **gp, struct slot **sp)
{
    for (unsigned i = 0; i < MAX_GENS; i++) {
        if (gens[i].state == GEN_FREE)
            continue;
        for (unsigned j = 0; j < gens[i].nslots; j++)
            if (gens[i].slots[j].pid == pid) {
                *gp = &gens[i];
                *sp = &gens[i].slots[j];
                return true;
            }
    }
    return false;
}

static void
signal_gen(struct gen *g, int signo)
{
    for (unsigned i = 0; i < g->nslots; i++)
        if (g->slots[i].pid > 0 && kill(g->slots[i].pid, signo) < 0 &&
            errno != ESRCH)
            log_error("kill(%d, %d) failed: %s", (int)g->slots[i].pid, signo,
                      strerror(errno));
}

static void
signal_workers(int signo)
{
    for (unsigned i = 0; i < MAX_GENS; i++)
        if (gens[i].state != GEN_FREE)
            signal_gen(&gens[i], signo);
}

/* ---- the relay of handed-over connections ---- */

static void
relay_push(int fd)
{
    if (relay_len == RELAY_MAX) {
        /* not reached: channels are read only while there is room */
        relay_dropped++;
        (void)close(fd);
        return;
    }
    relay_q[(relay_head + relay_len) % RELAY_MAX] = fd;
    relay_len++;
}

/*
 * Sends queued descriptors on: to the new master while finishing an
 * upgrade, to the old one while rolling back, else to a ready worker of
 * the current generation.  Returns true when some are left because every
 * target was full (poll for POLLOUT).
 */
static bool
relay_flush(bool shutting_down)
{
    while (relay_len > 0) {
        int fd = relay_q[relay_head], target = -1;

        if (upgrade_finish && upgrade_ch >= 0) {
            if (handover_send(upgrade_ch, HANDOVER_CONN, NULL, fd) == 0)
                target = upgrade_ch;
            else if (errno == EAGAIN)
                return true;
        } else if (rolling_back && parent_ch >= 0) {
            if (handover_send(parent_ch, HANDOVER_CONN, NULL, fd) == 0)
                target = parent_ch;
            else if (errno == EAGAIN)
                return true;
        } else if (!shutting_down && cur && cur->state == GEN_CURRENT) {
            bool full = false;
            for (unsigned k = 0; k < cur->nslots && target < 0; k++) {
                struct slot *s = &cur->slots[(relay_rr + k) % cur->nslots];
                if (s->pid == 0 || s->ch < 0 || !balance_served(s->block))
                    continue;
                if (handover_send(s->ch, HANDOVER_CONN, NULL, fd) == 0) {
                    target = s->ch;
                    relay_rr = (relay_rr + k + 1) % cur->nslots;
                } else if (errno == EAGAIN) {
                    full = true;
                }
            }
            if (target < 0 && full)
                return true;
        }
        if (target < 0)
            relay_dropped++; /* nobody can take it: the client sees EOF */
        else
            relayed++;
        (void)close(fd);
        relay_head = (relay_head + 1) % RELAY_MAX;
        relay_len--;
    }
    return false;
}

static void retire(struct gen *g);
static void abandon_start(struct gen *g, uint64_t now);
static void retire_all(void);
static void finish_upgrade(void);

/*
 * Reads what ch has queued.  from: the slot it belongs to (NULL: the
 * upgrade or parent channel).  Returns false at end of file.
 */
static bool
channel_read(int ch, struct gen *g, struct slot *from)
{
    for (;;) {
        struct handover_msg m;
        int fd, rc;

        if (relay_len == RELAY_MAX)
            return true;
        rc = handover_recv(ch, &m, &fd);
        if (rc == 0)
            return false;
        if (rc < 0) {
            if (errno == EAGAIN)
                return true;
            if (errno == EPROTO) {
                log_error("malformed message on a hand-over channel; "
                          "dropped");
                continue;
            }
            if (errno == ECONNRESET)
                return false;
            log_error("recvmsg() on a hand-over channel failed: %s",
                      strerror(errno));
            return false;
        }
        switch (m.type) {
        case HANDOVER_CONN:
            relay_push(fd);
            break;
        case HANDOVER_FATAL:
            if (g) {
                strlcpy(g->reason, m.text, sizeof(g->reason));
                log_debug("worker %u of generation %u could not start: %s",
                          from ? from->id : 0, g->number, m.text);
            }
            break;
        case HANDOVER_READY:
            /* from a worker: it passed its start gate (balance "served"
             * says so too); this message only wakes us up */
            if (ch == upgrade_ch && !upgrade_ready) {
                upgrade_ready = true;
                log_info("binary upgrade: the new master (pid %d) serves; "
                         "send QUIT to this master (pid %d) to finish, HUP "
                         "to roll back",
                         (int)upgrade_pid, (int)getpid());
            }
            break;
        case HANDOVER_ROLLBACK:
            if (ch == parent_ch && !rolling_back) {
                log_info("binary upgrade rolled back by the old master: "
                         "handing every connection back and exiting");
                rolling_back = true;
                retire_all();
            }
            break;
        default:
            log_error("unexpected hand-over message type %u; dropped", m.type);
            break;
        }
    }
}

/* ---- reaping ---- */

static void
reap(bool shutting_down)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct gen *g;
        struct slot *s;
        uint64_t now = now_ms();
        bool served;

        if (pid == upgrade_pid) {
            finish_upgrade();
            upgrade_pid = 0;
            if (!upgrade_finish)
                log_at(upgrade_rollback && WIFEXITED(status) &&
                               WEXITSTATUS(status) == 0
                           ? LOG_INFO
                           : LOG_ERROR,
                       "binary upgrade: the new master (pid %d) exited "
                       "with %s %d; this master keeps serving",
                       (int)pid, WIFSIGNALED(status) ? "signal" : "status",
                       WIFSIGNALED(status) ? WTERMSIG(status)
                                           : WEXITSTATUS(status));
            upgrade_rollback = false;
            continue;
        }
        if (!slot_of(pid, &g, &s)) {
            log_warn("reaped unknown child %d", (int)pid);
            continue;
        }
        s->pid = 0;
        if (s->ch >= 0) {
            /* what it sent before exiting is still queued: relay it */
            (void)channel_read(s->ch, g, s);
            (void)close(s->ch);
            s->ch = -1;
        }
        /* per-module "worker gone" calls (pid, slot, generation, block):
         * one line each, here */
        metrics_worker_gone(metrics, pid, s->id, g->number, s->mblock);
        (void)cache_worker_gone(cache_shared(), pid); /* its claims */
        served = balance_served(s->block);
        if (served)
            ever_served = true;
        balance_reset(s->block);
        if (WIFSIGNALED(status)) {
            log_at(g->state == GEN_RETIRING && WTERMSIG(status) == SIGTERM
                       ? LOG_INFO
                       : LOG_ERROR,
                   "worker %u (pid %d) killed by signal %d (%s), "
                   "generation %u",
                   s->id, (int)pid, WTERMSIG(status),
                   strsignal(WTERMSIG(status)), g->number);
        } else if (WEXITSTATUS(status) == 0) {
            log_at(shutting_down || g->state == GEN_RETIRING ? LOG_INFO
                                                             : LOG_ERROR,
                   "worker %u (pid %d) exited with status 0, generation %u",
                   s->id, (int)pid, g->number);
        } else {
            log_error("worker %u (pid %d) exited with status %d, generation "
                      "%u",
                      s->id, (int)pid, WEXITSTATUS(status), g->number);
        }
        if (g->state == GEN_STARTING) {
            /* SPEC 4: a new generation that cannot start fails the
             * reload, never the running service */
            log_error("reload failed: worker %u of generation %u exited "
                      "before it was ready%s%s; generation %u keeps "
                      "serving",
                      s->id, g->number, g->reason[0] ? ": " : "", g->reason,
                      cur ? cur->number : 0);
            abandon_start(g, now);
        }
        if (g->state == GEN_RETIRING) {
            if (gen_live(g) == 0) {
                log_info("generation %u is gone", g->number);
                gen_free(g);
            }
            continue;
        }
        if (shutting_down)
            continue;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 2 && !ever_served) {
            log_error("worker %u could not start; not respawning it", s->id);
            s->fatal = true;
            continue;
        }
        metrics_count_restart(metrics);
        if (now - s->started_ms < CRASH_WINDOW_MS)
            s->quick_deaths++;
        else
            s->quick_deaths = 0;
        if (s->quick_deaths <= 1) {
            s->respawn_at_ms = now;
        } else {
            uint64_t delay =
                100ull << (s->quick_deaths - 2 < 7 ? s->quick_deaths - 2 : 7);
            if (delay > RESPAWN_MAX_DELAY_MS)
                delay = RESPAWN_MAX_DELAY_MS;
            log_warn("worker %u died %u times in a row within %d ms of "
                     "starting; respawning in %llu ms",
                     s->id, s->quick_deaths, CRASH_WINDOW_MS,
                     (unsigned long long)delay);
            s->respawn_at_ms = now + delay;
        }
    }
}

/* ---- reload ---- */

/* g stops serving: its workers hand their connections over, then exit. */
/*
 * A starting generation that failed (a worker exited before it was
 * ready, or it ran out of time): its workers go, the current generation
 * keeps serving, and systemd hears that the reload is over.
 */
static void
abandon_start(struct gen *g, uint64_t now)
{
    g->state = GEN_RETIRING;
    g->deadline_ms = now + FAST_KILL_MS;
    signal_gen(g, SIGTERM);
    (void)daemon_notify("READY=1\nSTATUS=reload failed; serving generation %u",
                        cur ? cur->number : 0);
}

static void
retire(struct gen *g)
{
    g->state = GEN_RETIRING;
    g->deadline_ms = now_ms() + g->cfg->shutdown_timeout_ms + RETIRE_MARGIN_MS;
    for (unsigned i = 0; i < g->nslots; i++) {
        struct slot *s = &g->slots[i];
        if (s->pid == 0)
            continue;
        if (s->ch < 0 || handover_send(s->ch, HANDOVER_RETIRE, NULL, -1) < 0) {
            log_warn("worker %u of generation %u cannot be told to hand "
                     "over (%s); it shuts down gracefully instead",
                     s->id, g->number, strerror(errno));
            (void)kill(s->pid, SIGQUIT);
        }
    }
}

/* Every serving or starting generation retires (an upgrade hands all our
 * connections to the other master); no generation is current after. */
static void
retire_all(void)
{
    for (unsigned i = 0; i < MAX_GENS; i++)
        if (gens[i].state == GEN_CURRENT || gens[i].state == GEN_STARTING)
            retire(&gens[i]);
    cur = NULL;
}

/* Settings a reload cannot change: warn and keep the running value. */
static void
keep_fixed(const struct config *run, struct config *nc)
{
    static const struct {
        const char *name;
        size_t off, len;
    } fixed[] = {
#define FIXED(f)                                                               \
    {#f, offsetof(struct config, f), sizeof(((struct config *)0)->f)}
        /* the shared segments are created once, at start: name (the
         * metrics segment), cache_size, ratelimit_slots are kept below */
        FIXED(listen),
        FIXED(pidfile),
        FIXED(user),
        FIXED(group),
#undef FIXED
    };

    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        const char *a = (const char *)run + fixed[i].off;
        char *b = (char *)nc + fixed[i].off;
        if (strcmp(a, b) != 0) {
            log_warn("reload: %s cannot change without a restart (running "
                     "\"%s\", the configuration now says \"%s\"); keeping "
                     "\"%s\"",
                     fixed[i].name, a, b, a);
            memcpy(b, a, fixed[i].len);
        }
    }
    if (strcmp(run->name, nc->name) != 0) {
        log_warn("reload: name cannot change without a restart (running "
                 "\"%s\", the configuration now says \"%s\"); keeping "
                 "\"%s\"",
                 run->name, nc->name, run->name);
        memcpy(nc->name, run->name, sizeof(nc->name));
    }
    if (run->metrics != nc->metrics) {
        log_warn("reload: metrics cannot change without a restart; keeping "
                 "%s",
                 run->metrics ? "on" : "off");
        nc->metrics = run->metrics;
    }
    if (run->cache_size != nc->cache_size) {
        log_warn("reload: cache_size cannot change without a restart "
                 "(running %llu, the configuration now says %llu); keeping "
                 "%llu",
                 (unsigned long long)run->cache_size,
                 (unsigned long long)nc->cache_size,
                 (unsigned long long)run->cache_size);
        nc->cache_size = run->cache_size;
    }
    if (run->ratelimit_slots != nc->ratelimit_slots) {
        log_warn("reload: ratelimit_slots cannot change without a restart "
                 "(running %u, the configuration now says %u); keeping %u",
                 run->ratelimit_slots, nc->ratelimit_slots,
                 run->ratelimit_slots);
        nc->ratelimit_slots = run->ratelimit_slots;
    }
    if (run->backlog != nc->backlog) {
        log_warn("reload: backlog cannot change without a restart "
                 "(running %u, the configuration now says %u); keeping %u",
                 run->backlog, nc->backlog, run->backlog);
        nc->backlog = run->backlog;
    }
}

static void
reload(void)
{
    struct config *nc;
    char diag[CONFIG_DIAG_MAX];
    struct gen *g;

    for (unsigned i = 0; i < MAX_GENS; i++)
        if (gens[i].state == GEN_STARTING) {
            log_warn("reload: generation %u is still starting; ignoring "
                     "this SIGHUP",
                     gens[i].number);
            return;
        }
    if (cur == NULL || opts->load == NULL)
        return;
    nc = malloc(sizeof(*nc));
    if (nc == NULL) {
        log_error("reload failed: out of memory; keeping generation %u",
                  cur->number);
        return;
    }
    if (opts->load(nc, diag, sizeof(diag)) < 0) {
        log_error("reload failed: %s; generation %u keeps serving with the "
                  "running configuration",
                  diag, cur->number);
        free(nc);
        return;
    }
    keep_fixed(cur->cfg, nc);
    if (strcmp(nc->error_log, cur->cfg->error_log) != 0 ||
        strcmp(nc->access_log, cur->cfg->access_log) != 0) {
        char why[256];
        if (log_open(nc->error_log, nc->access_log, why, sizeof(why)) < 0) {
            log_error("reload failed: cannot open log %s: %s; generation "
                      "%u keeps serving",
                      why, strerror(errno), cur->number);
            free(nc);
            return;
        }
    }
    log_min_level = (enum log_level)nc->log_level;
    if (daemon_raise_nofile(nc->max_connections, diag, sizeof(diag)) < 0)
        log_warn("%s", diag);
    g = gen_new(nc);
    if (g == NULL) {
        log_error("reload failed: %d generations are still retiring; try "
                  "again once they are gone",
                  MAX_GENS - 1);
        free(nc);
        return;
    }
    g->state = GEN_STARTING;
    g->deadline_ms = now_ms() + nc->start_timeout_ms + START_MARGIN_MS;
    (void)daemon_notify("RELOADING=1\nSTATUS=reloading: generation %u "
                        "starting",
                        g->number);
    log_info("reload: configuration read; generation %u starting with %u "
             "workers",
             g->number, g->nslots);
    /* route names are looked up by the new workers: same table, new
     * names appended (existing indexes stay) */
    metrics_publish_routes(metrics, nc);
    for (unsigned i = 0; i < g->nslots; i++)
        spawn(g, &g->slots[i]);
}

/* A starting generation is ready, or out of time. */
static void
check_starting(uint64_t now)
{
    for (unsigned i = 0; i < MAX_GENS; i++) {
        struct gen *g = &gens[i];
        if (g->state != GEN_STARTING)
            continue;
        if (gen_ready(g)) {
            struct gen *old = cur;
            g->state = GEN_CURRENT;
            cur = g;
            metrics_count_reload(metrics);
            (void)daemon_notify("READY=1\nSTATUS=serving, generation %u",
                                g->number);
            if (old) {
                retire(old);
                log_info("reload done: generation %u serves; generation %u "
                         "retires, handing its idle connections over",
                         g->number, old->number);
            }
        } else if (now >= g->deadline_ms) {
            log_error("reload failed: generation %u not ready within %u "
                      "ms%s%s; generation %u keeps serving",
                      g->number, g->cfg->start_timeout_ms + START_MARGIN_MS,
                      g->reason[0] ? ": " : "", g->reason,
                      cur ? cur->number : 0);
            abandon_start(g, now);
        }
    }
}

/* ---- binary upgrade ---- */

/*
 * In the child about to exec the new binary: let it inherit shared
 * segment fd (-1: none) and name it in the environment as name.
 */
static void
pass_segment(const char *name, int fd)
{
    char num[16];

    if (fd < 0 || fcntl(fd, F_SETFD, 0) < 0) {
        unsetenv(name);
        return;
    }
    snprintf(num, sizeof(num), "%d", fd);
    setenv(name, num, 1);
}

/*
 * USR2: start the binary at opts->exe as a new master that inherits the
 * listening sockets (ENV_LISTEN_FDS), a hand-over channel
 * (ENV_UPGRADE_FD) and the cache and rate-limit memfds (ENV_CACHE_FD,
 * ENV_RATELIMIT_FD: one cache and one budget for both masters' workers);
 * our pidfile becomes PIDFILE.oldbin meanwhile.
 */
static void
start_upgrade(void)
{
    const char *pidpath = cur ? cur->cfg->pidfile : NULL;
    char fds[LISTEN_MAX * 12 + 1], num[16];
    int sv[2];
    pid_t pid;

    if (upgrade_pid || parent_ch >= 0 || opts->exe == NULL || cur == NULL) {
        log_warn("SIGUSR2: %s; ignoring",
                 upgrade_pid      ? "a binary upgrade is already under way"
                 : parent_ch >= 0 ? "this master is itself a new binary "
                                    "whose upgrade is not finished"
                                  : "no binary path known");
        return;
    }
    snprintf(oldbin, sizeof(oldbin), "%s.oldbin", pidpath);
    if (rename(pidpath, oldbin) < 0) {
        log_error("binary upgrade failed: rename(%s, %s): %s", pidpath, oldbin,
                  strerror(errno));
        return;
    }
    if (handover_pair(sv) < 0) {
        log_error("binary upgrade failed: socketpair(): %s", strerror(errno));
        goto undo;
    }
    fds[0] = '\0';
    for (unsigned i = 0; i < nlfds; i++) {
        snprintf(num, sizeof(num), "%s%d", i ? "," : "", lfds[i]);
        strlcat(fds, num, sizeof(fds));
    }
    pid = fork();
    if (pid < 0) {
        log_error("binary upgrade failed: fork(): %s", strerror(errno));
        (void)close(sv[0]);
        (void)close(sv[1]);
        goto undo;
    }
    if (pid == 0) {
        sigset_t none;
        if (pfh)
            pidfile_close(pfh);
        close_master_fds();
        (void)close(sv[0]);
        for (unsigned i = 0; i < nlfds; i++)
            (void)fcntl(lfds[i], F_SETFD, 0);
        (void)fcntl(sv[1], F_SETFD, 0);
        snprintf(num, sizeof(num), "%d", sv[1]);
        setenv(ENV_LISTEN_FDS, fds, 1);
        setenv(ENV_UPGRADE_FD, num, 1);
        pass_segment(ENV_CACHE_FD, cache_fd());
        pass_segment(ENV_RATELIMIT_FD, ratelimit_fd());
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(opts->exe, opts->argv);
        log_error("binary upgrade failed: execv(%s): %s", opts->exe,
                  strerror(errno));
        log_flush();
        _exit(2);
    }
    (void)close(sv[1]);
    upgrade_ch = sv[0];
    upgrade_pid = pid;
    upgrade_ready = false;
    log_info("binary upgrade: started %s as pid %d; pidfile renamed to %s",
             opts->exe, (int)pid, oldbin);
    return;
undo:
    if (rename(oldbin, pidpath) < 0)
        log_error("rename(%s, %s) failed: %s", oldbin, pidpath,
                  strerror(errno));
}

/* The new master is gone: take the pidfile back unless we are leaving. */
static void
finish_upgrade(void)
{
    if (upgrade_ch >= 0) {
        (void)channel_read(upgrade_ch, NULL, NULL);
        (void)close(upgrade_ch);
        upgrade_ch = -1;
    }
    if (!upgrade_finish && oldbin[0] && cur) {
        if (rename(oldbin, cur->cfg->pidfile) < 0)
            log_error("rename(%s, %s) failed: %s", oldbin, cur->cfg->pidfile,
                      strerror(errno));
        else
            log_info("binary upgrade over: pidfile %s is this master's "
                     "again",
                     cur->cfg->pidfile);
        (void)daemon_notify("MAINPID=%d\nREADY=1\nSTATUS=serving, "
                            "generation %u (upgrade rolled back)",
                            (int)getpid(), cur->number);
        oldbin[0] = '\0';
    }
    upgrade_ready = false;
}

/* A descriptor named by environment variable name, close-on-exec; -1. */
static int
inherited_fd(const char *name)
{
    const char *v = getenv(name);
    char *end;
    long fd;

    if (v == NULL)
        return -1;
    fd = strtol(v, &end, 10);
    unsetenv(name);
    if (end == v || *end || fd < 0 || fd > 65535 ||
        fcntl((int)fd, F_SETFD, FD_CLOEXEC) < 0)
        return -1;
    return (int)fd;
}

/*
 * The cache and rate-limit segments, before the first fork: in a binary
 * upgrade the old master's (old_cache_fd, old_rl_fd) when they fit this
 * binary and configuration, else fresh ones.  A fresh cache while the old
 * master's workers may still run is held (no hits, shm/cache.c) until the
 * old master is gone.  0, or -1 with startup_reason set.
 */
static int
open_shared_segments(const struct config *cfg)
{
    char why[200];
    struct cache *c = NULL;
    bool tried = cfg->cache_size && old_cache_fd >= 0;

    if (tried) {
        c = cache_adopt(old_cache_fd, cfg->cache_size, why, sizeof(why));
        if (c)
            log_info("binary upgrade: this new master shares the old "
                     "one's cache");
        else
            log_warn("binary upgrade: the old master's cache cannot be "
                     "shared: %s; a fresh cache, serving no hits until the "
                     "old master is gone",
                     why);
    } else if (old_cache_fd >= 0) {
        (void)close(old_cache_fd);
    }
    old_cache_fd = -1;
    if (cfg->cache_size && c == NULL) {
        c = cache_open(cfg->cache_size);
        if (c == NULL) {
            startup_error("cannot map the shared cache (cache_size = %llu "
                          "bytes, at least 64k): %s; not starting",
                          (unsigned long long)cfg->cache_size, strerror(errno));
            return -1;
        }
        if (parent_ch >= 0) {
            cache_hold(c);
            if (!tried)
                log_warn("binary upgrade: the old master passed no cache "
                         "(an older binary, or its cache is off); a fresh "
                         "cache, serving no hits until the old master is "
                         "gone");
        }
    }
    if (old_rl_fd >= 0) {
        if (ratelimit_adopt(old_rl_fd, cfg->ratelimit_slots, why,
                            sizeof(why)) == 0)
            log_info("binary upgrade: this new master shares the old "
                     "one's rate-limit table");
        else
            log_warn("binary upgrade: the old master's rate-limit table "
                     "cannot be shared: %s; a fresh one (budgets start "
                     "full)",
                     why);
        old_rl_fd = -1;
    }
    if (ratelimit_open(cfg->ratelimit_slots) < 0) /* no-op once adopted */
        log_error("cannot make the rate-limit table (memfd, mmap): %s; "
                  "requests are not rate limited",
                  strerror(errno));
    return 0;
}

/*
 * In a new master started by USR2: take the inherited listening sockets
 * and the channel to the old master from the environment.  Returns the
 * number of sockets (0: not an upgrade), or -1 with startup_reason set.
 */
static int
inherit_from_old_master(void)
{
    const char *fds = getenv(ENV_LISTEN_FDS), *ch = getenv(ENV_UPGRADE_FD);
    char *end;
    int n = 0;

    if (fds == NULL) {
        unsetenv(ENV_CACHE_FD);
        unsetenv(ENV_RATELIMIT_FD);
        return 0;
    }
    old_cache_fd = inherited_fd(ENV_CACHE_FD);
    old_rl_fd = inherited_fd(ENV_RATELIMIT_FD);
    while (*fds && n < LISTEN_MAX) {
        long fd = strtol(fds, &end, 10);
        int type;
        socklen_t tl = sizeof(type);
        if (end == fds || fd < 0 || fd > 65535 ||
            getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) {
            startup_error("%s: \"%s\" is not a list of inherited sockets",
                          ENV_LISTEN_FDS, getenv(ENV_LISTEN_FDS));
            return -1;
        }
        (void)fcntl((int)fd, F_SETFD, FD_CLOEXEC);
        lfds[n++] = (int)fd;
        fds = *end == ',' ? end + 1 : end;
    }
    if (ch) {
        long fd = strtol(ch, &end, 10);
        if (end != ch && fd >= 0 && fd <= 65535) {
            parent_ch = (int)fd;
            (void)fcntl(parent_ch, F_SETFD, FD_CLOEXEC);
            (void)fcntl(parent_ch, F_SETFL, O_NONBLOCK);
        }
    }
    unsetenv(ENV_LISTEN_FDS);
    unsetenv(ENV_UPGRADE_FD);
    return n;
}

/* ---- start-up ---- */

static int
ensure_parent_dir(const char *path)
{
    char dir[CONFIG_PATH_MAX];
    char *slash;

    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        return 0;
    *slash = '\0';
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Binds (or inherits) the sockets and takes the pidfile.  0 or -1. */
static int
start_up(struct config *cfg)
{
    struct listen_addr addrs[LISTEN_MAX];
    char diag[CONFIG_DIAG_MAX];
    pid_t other = 0;
    int n;

    n = listen_parse(cfg->listen, addrs, LISTEN_MAX, diag, sizeof(diag));
    if (n < 0) {
        startup_error("%s", diag);
        return -1;
    }
    if (ensure_parent_dir(cfg->pidfile) < 0)
        log_warn("cannot create the directory of %s: %s", cfg->pidfile,
                 strerror(errno));
    pfh = pidfile_open(cfg->pidfile, 0644, &other);
    if (pfh == NULL) {
        if (errno == EEXIST)
            startup_error("another apiaryd is already running (pid %d, "
                          "pidfile %s); not starting",
                          (int)other, cfg->pidfile);
        else
            startup_error("cannot open pidfile %s: %s", cfg->pidfile,
                          strerror(errno));
        return -1;
    }
    int inherited = inherit_from_old_master();
    if (inherited < 0)
        return -1;
    if (inherited > 0) {
        nlfds = (unsigned)inherited;
        log_info("binary upgrade: this new master took %u listening "
                 "socket(s) from the old one",
                 nlfds);
    } else {
        n = listen_open(addrs, n, (int)cfg->backlog, lfds, diag, sizeof(diag));
        if (n < 0) {
            startup_error("%s", diag);
            return -1;
        }
        nlfds = (unsigned)n;
    }
    if (pidfile_write(pfh) < 0)
        log_error("cannot write pidfile %s: %s", cfg->pidfile, strerror(errno));
    return 0;
}

int
master_run(const struct config *cfg, const struct master_opts *o)
{
    static struct pollfd pfds[MAX_POLL];
    static struct slot *pslot[MAX_POLL];
    static struct gen *pgen[MAX_POLL];
    char diag[CONFIG_DIAG_MAX];
    sigset_t blocked, empty;
    enum { RUNNING, FAST, GRACEFUL } mode = RUNNING;
    uint64_t deadline = 0;
    struct config *owned;
    struct gen *first;
    int rc = 0;

    opts = o;
    /* a new master started by USR2 is already detached (our parent is) */
    if (o->daemonize && getenv(ENV_LISTEN_FDS) == NULL && daemon_detach() < 0) {
        log_error("fork() to daemonize failed: %s", strerror(errno));
        return 1;
    }
    log_set_proc("master");
    owned = malloc(sizeof(*owned));
    if (owned == NULL) {
        startup_error("out of memory");
        daemon_failed(startup_reason);
        return 1;
    }
    *owned = *cfg;
    if (start_up(owned) < 0) {
        daemon_failed(startup_reason);
        if (pfh)
            pidfile_remove(pfh);
        free(owned);
        return 1;
    }

    /* segments shared by every generation: created here, before the
     * first fork (per-module "open" calls, one line each, go here) */
    if (balance_open(BALANCE_MAX_WORKERS) < 0)
        log_warn("mmap() for the balance counters failed: %s; connections "
                 "may spread unevenly",
                 strerror(errno));
    if (open_shared_segments(owned) < 0) {
        daemon_failed(startup_reason);
        pidfile_remove(pfh);
        free(owned);
        return 1;
    }
    if (owned->metrics) {
        if (metrics_create(&metrics_seg, owned->name, nslots_of(owned),
                           APIARY_VERSION) < 0) {
            log_warn("shm_open() of the metrics segment /dev/shm/apiary-%s-"
                     "metrics failed: %s; running without metrics",
                     owned->name, strerror(errno));
        } else {
            metrics = &metrics_seg;
            metrics_publish_routes(metrics, owned);
        }
    }

    if (daemon_raise_nofile(owned->max_connections, diag, sizeof(diag)) < 0)
        log_warn("%s", diag);
    {
        /* the metrics segment too: owned by the service user, 0640, so
         * ops in its group can read it (SPEC 5) */
        char seg[CONFIG_PATH_MAX] = "";
        char shm_name[128];
        if (metrics &&
            metrics_shm_name(owned->name, shm_name, sizeof(shm_name)) == 0)
            snprintf(seg, sizeof(seg), "/dev/shm%s", shm_name);
        const char *paths[] = {owned->pidfile, owned->error_log,
                               owned->access_log, seg, NULL};
        if (daemon_drop_privileges(owned->user, owned->group, paths, diag,
                                   sizeof(diag)) < 0) {
            startup_error("cannot drop privileges: %s", diag);
            daemon_failed(startup_reason);
            pidfile_remove(pfh);
            free(owned);
            return 1;
        }
        if (geteuid() == 0)
            log_warn("running as root: set user (and group) so that "
                     "workers do not");
    }

    setproctitle("-apiaryd: master");
    install_signals(&blocked);
    sigemptyset(&empty);

    first = gen_new(owned);
    first->state = GEN_CURRENT;
    cur = first;
    for (unsigned i = 0; i < first->nslots; i++)
        spawn(first, &first->slots[i]);
    log_info("apiaryd started: %u workers, pid %d", first->nslots,
             (int)getpid());

    for (;;) {
        uint64_t now = now_ms(), wake = UINT64_MAX;
        struct timespec ts, *tsp = NULL;
        unsigned npfd = 0, fatal = 0;
        bool want_out;

        if (mode == RUNNING) {
            if (cur) {
                for (unsigned i = 0; i < cur->nslots && !ever_served; i++)
                    if (cur->slots[i].pid &&
                        balance_served(cur->slots[i].block))
                        ever_served = true;
                for (unsigned i = 0; i < cur->nslots; i++) {
                    struct slot *s = &cur->slots[i];
                    if (s->fatal && ever_served) {
                        /* another worker serves: this one's failure was
                         * not "could never start"; try again, backoff */
                        s->fatal = false;
                        s->respawn_at_ms = now + RESPAWN_MAX_DELAY_MS / 10;
                    }
                    fatal += s->fatal;
                    if (s->pid || s->fatal)
                        continue;
                    if (s->respawn_at_ms <= now)
                        spawn(cur, s);
                    if (s->pid == 0 && s->respawn_at_ms < wake)
                        wake = s->respawn_at_ms;
                }
                if (fatal == cur->nslots) {
                    startup_error("no worker could start%s%s; exiting",
                                  cur->reason[0] ? ": " : "", cur->reason);
                    rc = 1;
                    break;
                }
                if (!cur->ready_reported && gen_ready(cur)) {
                    cur->ready_reported = true;
                    daemon_ready();
                    /* stdout and stderr are /dev/null now: the logger
                     * drops its own handles on the caller's (a "-" log
                     * kept them open, and a caller reading our output
                     * would wait for ever) */
                    if (opts->daemonize && log_reopen() < 0)
                        log_warn("reopening logs after detaching failed: "
                                 "%s",
                                 strerror(errno));
                    (void)daemon_notify("READY=1\nMAINPID=%d\nSTATUS=serving, "
                                        "generation %u",
                                        (int)getpid(), cur->number);
                    if (parent_ch >= 0 &&
                        handover_send(parent_ch, HANDOVER_READY, NULL, -1) < 0)
                        log_warn("cannot tell the old master we serve: %s",
                                 strerror(errno));
                }
            }
            check_starting(now);
        } else {
            if (live_workers() == 0)
                break;
            if (now >= deadline) {
                log_warn("%u worker(s) still running at the shutdown "
                         "deadline; killing them",
                         live_workers());
                signal_workers(SIGKILL);
                while (live_workers() > 0) {
                    int st;
                    pid_t p = waitpid(-1, &st, 0);
                    struct gen *g;
                    struct slot *s;
                    if (p < 0 && errno != EINTR)
                        break;
                    if (p > 0 && slot_of(p, &g, &s))
                        s->pid = 0;
                }
                break;
            }
            wake = deadline;
        }
        for (unsigned i = 0; i < MAX_GENS; i++) {
            struct gen *g = &gens[i];
            if (g->state == GEN_FREE)
                continue;
            if (g->state == GEN_RETIRING || g->state == GEN_STARTING) {
                if (now >= g->deadline_ms && gen_live(g) > 0 &&
                    g->state == GEN_RETIRING) {
                    log_warn("generation %u: %u worker(s) still running "
                             "at the retirement deadline; killing them",
                             g->number, gen_live(g));
                    signal_gen(g, SIGKILL);
                    g->deadline_ms = now + 1000;
                }
                if (g->deadline_ms < wake)
                    wake = g->deadline_ms;
            }
        }

        want_out = relay_flush(mode != RUNNING);
        /* everything handed to the other master (after the relay: a dead
         * worker's last descriptors may just have been queued) */
        if (mode == RUNNING && (rolling_back || upgrade_finish) &&
            live_workers() == 0 && relay_len == 0)
            break;
        if (want_out && wake > now + 10)
            wake = now + 10; /* targets full: look again soon */
        /* every channel, read while the relay has room */
        for (unsigned i = 0; i < MAX_GENS; i++) {
            if (gens[i].state == GEN_FREE)
                continue;
            for (unsigned j = 0; j < gens[i].nslots; j++) {
                struct slot *s = &gens[i].slots[j];
                if (s->ch < 0)
                    continue;
                pfds[npfd] = (struct pollfd){
                    s->ch, relay_len < RELAY_MAX ? POLLIN : 0, 0};
                pslot[npfd] = s;
                pgen[npfd] = &gens[i];
                npfd++;
            }
        }
        if (upgrade_ch >= 0) {
            pfds[npfd] = (struct pollfd){upgrade_ch, POLLIN, 0};
            pslot[npfd] = NULL;
            pgen[npfd] = NULL;
            npfd++;
        }
        if (parent_ch >= 0) {
            pfds[npfd] = (struct pollfd){parent_ch, POLLIN, 0};
            pslot[npfd] = NULL;
            pgen[npfd] = NULL;
            npfd++;
        }

        /* the master has no loop to wake it when a blocked log pipe
         * drains: write what it can and look again in 100 ms */
        log_flush();
        metrics_master_log_dropped(metrics, log_dropped_lines());
        if (log_pending() && wake > now + 100)
            wake = now + 100;
        if (wake != UINT64_MAX) {
            uint64_t d = wake > now ? wake - now : 0;
            ts.tv_sec = (time_t)(d / 1000);
            ts.tv_nsec = (long)(d % 1000) * 1000000;
            tsp = &ts;
        }
        int ready = ppoll(pfds, npfd, tsp, &empty);
        if (ready < 0 && errno != EINTR)
            log_error("ppoll() failed: %s", strerror(errno));
        if (ready > 0) {
            /* a ppoll() that returns events leaves signals that arrived
             * meanwhile pending; let them in now so that a busy channel
             * cannot starve them */
            sigset_t pend;
            if (sigpending(&pend) == 0)
                for (size_t i = 0; i < sizeof(master_signals) / sizeof(int);
                     i++)
                    if (sigismember(&pend, master_signals[i])) {
                        sigprocmask(SIG_SETMASK, &empty, NULL);
                        sigprocmask(SIG_SETMASK, &blocked, NULL);
                        break;
                    }
        }

        for (unsigned i = 0; i < npfd; i++) {
            int fd = pfds[i].fd;
            if (!(pfds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (pslot[i]) {
                /* end of file: the worker closed it (it is exiting) and
                 * nothing is left queued; stop polling it */
                if (!channel_read(fd, pgen[i], pslot[i])) {
                    (void)close(fd);
                    pslot[i]->ch = -1;
                }
            } else if (!channel_read(fd, NULL, NULL)) {
                if (fd == parent_ch) {
                    (void)close(parent_ch);
                    parent_ch = -1;
                    log_info("the old master is gone: the binary upgrade "
                             "is complete");
                    if (cache_shared() && cache_held(cache_shared())) {
                        cache_release(cache_shared());
                        log_info("the fresh cache serves from now on");
                    }
                } else if (fd == upgrade_ch) {
                    (void)close(upgrade_ch);
                    upgrade_ch = -1;
                }
            }
        }

        if (got_chld) {
            got_chld = 0;
            reap(mode != RUNNING);
        }
        if (got_term && mode != FAST) {
            got_term = 0;
            log_info("fast shutdown requested");
            (void)daemon_notify("STOPPING=1");
            mode = FAST;
            deadline = now_ms() + FAST_KILL_MS;
            signal_workers(SIGTERM);
        }
        if (got_quit && mode == RUNNING) {
            got_quit = 0;
            if (upgrade_pid && upgrade_ready && !upgrade_finish) {
                log_info("binary upgrade: finishing; this master's workers "
                         "hand their connections to the new master");
                upgrade_finish = true;
                retire_all();
            } else if (!upgrade_finish) {
                uint32_t grace = cur ? cur->cfg->shutdown_timeout_ms : 30000;
                log_info("graceful shutdown requested");
                (void)daemon_notify("STOPPING=1");
                mode = GRACEFUL;
                deadline = now_ms() + grace + 1000;
                signal_workers(SIGQUIT);
            }
        }
        if (got_usr1) {
            got_usr1 = 0;
            if (log_reopen() < 0)
                log_error("reopening logs failed: %s", strerror(errno));
            else
                log_info("log files reopened");
            signal_workers(SIGUSR1);
        }
        if (got_hup) {
            got_hup = 0;
            if (mode != RUNNING || rolling_back || upgrade_finish) {
                log_warn("SIGHUP while shutting down; ignoring");
            } else if (upgrade_pid) {
                log_info("binary upgrade: rolling back; the new master "
                         "(pid %d) hands its connections back and exits",
                         (int)upgrade_pid);
                upgrade_rollback = true;
                if (upgrade_ch < 0 ||
                    handover_send(upgrade_ch, HANDOVER_ROLLBACK, NULL, -1) < 0)
                    (void)kill(upgrade_pid, SIGQUIT);
            } else {
                log_info("SIGHUP: reloading the configuration");
                reload();
            }
        }
        if (got_usr2) {
            got_usr2 = 0;
            if (mode == RUNNING && !upgrade_finish && !rolling_back)
                start_upgrade();
        }
    }

    if (rc != 0)
        daemon_failed(startup_reason);
    relay_flush(true);
    for (unsigned i = 0; i < nlfds; i++)
        if (close(lfds[i]) < 0)
            log_error("close() of listener failed: %s", strerror(errno));
    /* during an upgrade our pidfile is PIDFILE.oldbin; PIDFILE is the new
     * master's (pidfile_remove() would unlink it by name) */
    if (oldbin[0]) {
        if (unlink(oldbin) < 0)
            log_error("unlink(%s) failed: %s", oldbin, strerror(errno));
        pidfile_close(pfh);
    } else {
        pidfile_remove(pfh);
    }
    if (relay_dropped)
        log_warn("%llu handed-over connection(s) found no worker and were "
                 "closed",
                 (unsigned long long)relay_dropped);
    log_info("apiaryd stopped (%llu connection(s) relayed to new workers)",
             (unsigned long long)relayed);
    if (metrics)
        metrics_destroy(metrics);
    log_flush();
    for (unsigned i = 0; i < MAX_GENS; i++)
        if (gens[i].state != GEN_FREE)
            gen_free(&gens[i]);
    return rc;
}
