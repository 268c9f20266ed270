/*
 * master.c - see master.h.
 *
 * Supervision rules (SPEC 4):
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
 * Workers are (generation, slot): the generation is fixed per master start
 * for now (reload will bump it) and travels to the worker and into the
 * shared balance slots.
 * Shutdown: TERM/INT forward TERM and SIGKILL whatever is left after
 * FAST_KILL_MS (under the 1.5 s SPEC limit); QUIT forwards QUIT and waits
 * up to shutdown_timeout_ms plus a second before SIGKILL.
 */
#include "master.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bsd/libutil.h>
#include <bsd/unistd.h>

#include "balance.h"
#include "cache.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "metrics_hook.h"
#include "ratelimit.h"
#include "worker.h"

#define MAX_WORKERS 256
#define CRASH_WINDOW_MS 1000
#define RESPAWN_MAX_DELAY_MS 10000
#define FAST_KILL_MS 1200

struct slot {
    pid_t pid;   /* 0: not running */
    unsigned id; /* 1-based, shown in titles and logs */
    uint64_t started_ms;
    uint64_t respawn_at_ms; /* when pid == 0 and not fatal */
    unsigned quick_deaths;
    bool fatal;
    int block; /* metrics block of the running worker, -1: none */
};

static volatile sig_atomic_t got_chld, got_term, got_quit, got_hup, got_usr1,
    got_usr2;

static struct slot slots[MAX_WORKERS];
static unsigned nslots;
static uint32_t generation = 1;
static bool ever_served; /* some worker of this master accepted */
static int lfds[LISTEN_MAX];
static unsigned nlfds;
static struct pidfh *pfh;
static struct config *config;
static struct metrics metrics_seg;
static struct metrics *metrics; /* NULL: metrics off or unavailable */

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
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

static void
spawn(struct slot *s)
{
    pid_t pid;

    s->block = metrics_worker_assign(metrics, s->id, generation);
    pid = fork();
    if (pid < 0) {
        metrics_worker_gone(metrics, 0, s->id, generation, s->block);
        log_error("fork() for worker %u failed: %s; retrying in 1 s", s->id,
                  strerror(errno));
        s->respawn_at_ms = now_ms() + 1000;
        return;
    }
    if (pid == 0) {
        /* the pidfile lock stays with the master */
        if (pfh)
            pidfile_close(pfh);
        worker_run(generation, s->id, config, lfds, nlfds);
    }
    s->pid = pid;
    metrics_worker_pid(metrics, s->block, pid);
    s->started_ms = now_ms();
    log_info("worker %u started, pid %d", s->id, (int)pid);
}

static struct slot *
slot_of(pid_t pid)
{
    for (unsigned i = 0; i < nslots; i++)
        if (slots[i].pid == pid)
            return &slots[i];
    return NULL;
}

static unsigned
live_workers(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < nslots; i++)
        n += slots[i].pid != 0;
    return n;
}

static void
reap(bool shutting_down)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct slot *s = slot_of(pid);
        uint64_t now = now_ms();

        if (s == NULL) {
            log_warn("reaped unknown child %d", (int)pid);
            continue;
        }
        s->pid = 0;
        metrics_worker_gone(metrics, pid, s->id, generation, s->block);
        (void)cache_worker_gone(cache_shared(), pid); /* its claims */
        if (balance_served(s->id))
            ever_served = true;
        balance_reset(s->id);
        if (WIFSIGNALED(status)) {
            log_error("worker %u (pid %d) killed by signal %d (%s)", s->id,
                      (int)pid, WTERMSIG(status), strsignal(WTERMSIG(status)));
        } else if (WEXITSTATUS(status) == 0) {
            log_at(shutting_down ? LOG_INFO : LOG_ERROR,
                   "worker %u (pid %d) exited with status 0", s->id, (int)pid);
        } else {
            log_error("worker %u (pid %d) exited with status %d", s->id,
                      (int)pid, WEXITSTATUS(status));
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

static void
signal_workers(int signo)
{
    for (unsigned i = 0; i < nslots; i++)
        if (slots[i].pid > 0 && kill(slots[i].pid, signo) < 0 && errno != ESRCH)
            log_error("kill(%d, %d) failed: %s", (int)slots[i].pid, signo,
                      strerror(errno));
}

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

int
master_run(struct config *cfg, int daemonize)
{
    struct listen_addr addrs[LISTEN_MAX];
    char diag[CONFIG_DIAG_MAX];
    sigset_t blocked, empty;
    pid_t other = 0;
    enum { RUNNING, FAST, GRACEFUL } mode = RUNNING;
    uint64_t deadline = 0;
    int n, rc = 0;

    config = cfg;
    n = listen_parse(cfg->listen, addrs, LISTEN_MAX, diag, sizeof(diag));
    if (n < 0) {
        log_error("%s", diag);
        return 1;
    }
    if (ensure_parent_dir(cfg->pidfile) < 0)
        log_warn("cannot create the directory of %s: %s", cfg->pidfile,
                 strerror(errno));
    pfh = pidfile_open(cfg->pidfile, 0644, &other);
    if (pfh == NULL) {
        if (errno == EEXIST)
            log_error("another apiaryd is already running (pid %d, "
                      "pidfile %s); not starting",
                      (int)other, cfg->pidfile);
        else
            log_error("cannot open pidfile %s: %s", cfg->pidfile,
                      strerror(errno));
        return 1;
    }
    n = listen_open(addrs, n, (int)cfg->backlog, lfds, diag, sizeof(diag));
    if (n < 0) {
        log_error("%s", diag);
        pidfile_remove(pfh);
        return 1;
    }
    nlfds = (unsigned)n;
    if (daemonize && daemon(1, 0) < 0) {
        log_error("daemon() failed: %s", strerror(errno));
        pidfile_remove(pfh);
        return 1;
    }
    if (pidfile_write(pfh) < 0)
        log_error("cannot write pidfile %s: %s", cfg->pidfile, strerror(errno));

    log_set_proc("master");
    setproctitle("-apiaryd: master");
    install_signals(&blocked);
    sigemptyset(&empty);

    nslots = cfg->workers < MAX_WORKERS ? cfg->workers : MAX_WORKERS;
    if (balance_open(nslots) < 0)
        log_warn("mmap() for the balance counters failed: %s; connections "
                 "may spread unevenly",
                 strerror(errno));
    if (cfg->cache_size && cache_open(cfg->cache_size) == NULL) {
        log_error("cannot map the shared cache (cache_size = %llu bytes, "
                  "at least 64k): %s; not starting",
                  (unsigned long long)cfg->cache_size, strerror(errno));
        pidfile_remove(pfh);
        return 1;
    }
    if (cfg->metrics) {
        if (metrics_create(&metrics_seg, cfg->name, nslots, APIARY_VERSION) <
            0) {
            log_warn("shm_open() of the metrics segment /dev/shm/apiary-%s-"
                     "metrics failed: %s; running without metrics",
                     cfg->name, strerror(errno));
        } else {
            metrics = &metrics_seg;
            metrics_publish_routes(metrics, cfg);
        }
    }
    if (ratelimit_open(cfg->ratelimit_slots) < 0)
        log_error("mmap() for the rate-limit table failed: %s; requests are "
                  "not rate limited",
                  strerror(errno));
    for (unsigned i = 0; i < nslots; i++) {
        slots[i].id = i + 1;
        spawn(&slots[i]);
    }
    log_info("apiaryd started: %u workers, pid %d", nslots, (int)getpid());

    for (;;) {
        uint64_t now = now_ms(), wake = UINT64_MAX;
        struct timespec ts, *tsp = NULL;
        unsigned fatal = 0;

        if (mode == RUNNING) {
            for (unsigned i = 0; i < nslots && !ever_served; i++)
                if (slots[i].pid && balance_served(slots[i].id))
                    ever_served = true;
            for (unsigned i = 0; i < nslots; i++) {
                struct slot *s = &slots[i];
                if (s->fatal && ever_served) {
                    /* another worker serves: this one's failure was not
                     * "could never start"; try again, with backoff */
                    s->fatal = false;
                    s->respawn_at_ms = now + RESPAWN_MAX_DELAY_MS / 10;
                }
                fatal += s->fatal;
                if (s->pid || s->fatal)
                    continue;
                if (s->respawn_at_ms <= now)
                    spawn(s);
                if (s->pid == 0 && s->respawn_at_ms < wake)
                    wake = s->respawn_at_ms;
            }
            if (fatal == nslots) {
                log_error("no worker could start; exiting");
                rc = 1;
                break;
            }
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
                    struct slot *s;
                    if (p < 0 && errno != EINTR)
                        break;
                    if (p > 0 && (s = slot_of(p)) != NULL)
                        s->pid = 0;
                }
                break;
            }
            wake = deadline;
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
        if (ppoll(NULL, 0, tsp, &empty) < 0 && errno != EINTR)
            log_error("ppoll() failed: %s", strerror(errno));

        if (got_chld) {
            got_chld = 0;
            reap(mode != RUNNING);
        }
        if (got_term && mode != FAST) {
            got_term = 0;
            log_info("fast shutdown requested");
            mode = FAST;
            deadline = now_ms() + FAST_KILL_MS;
            signal_workers(SIGTERM);
        }
        if (got_quit && mode == RUNNING) {
            got_quit = 0;
            log_info("graceful shutdown requested");
            mode = GRACEFUL;
            deadline = now_ms() + cfg->shutdown_timeout_ms + 1000;
            signal_workers(SIGQUIT);
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
            log_warn("SIGHUP: configuration reload is not implemented yet; "
                     "ignoring");
        }
        if (got_usr2) {
            got_usr2 = 0;
            log_warn("SIGUSR2: binary upgrade is not implemented yet; "
                     "ignoring");
        }
    }

    for (unsigned i = 0; i < nlfds; i++)
        if (close(lfds[i]) < 0)
            log_error("close() of listener failed: %s", strerror(errno));
    pidfile_remove(pfh);
    if (metrics)
        metrics_destroy(metrics);
    log_info("apiaryd stopped");
    log_flush();
    return rc;
}
