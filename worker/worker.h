/*
 * worker.h - a worker process: its loop, listeners, connection core, API
 * and database client, and its shutdown state.
 *
 * A worker is identified by (generation, slot) (SPEC 4): the slot is its
 * place in the master's table (1..N, stable across respawns), the
 * generation the master's configuration generation, so two generations can
 * run side by side during a reload without sharing per-worker state.
 *
 * The master forks each worker with the listening sockets already bound;
 * worker_run() never returns.  Exit status: 0 after a requested shutdown,
 * 2 when the worker could never start (bad settings, out of memory at
 * start, a database schema older than required found before it first
 * served): the master must not respawn it in a tight loop; anything else
 * is a crash.  A worker that has served never exits on a database error:
 * it answers 503 and its client reconnects with backoff (SPEC 6).
 *
 * Reload and upgrade (SPEC 4): told to retire (HANDOVER_RETIRE on its
 * channel), a worker stops accepting, answers what is in flight with
 * keep-alive, and sends each idle connection (and each one as it goes
 * idle) to the master, which relays it to the new generation; half of
 * shutdown_timeout_ms later it falls back to a graceful drain (answers
 * say "Connection: close") for the rest.  A connection it receives is
 * adopted as a fresh idle connection (or sent straight back when it is
 * retiring itself).
 *
 * Start: a worker accepts connections only once its database connection
 * is ready, or start_timeout_ms after it started, whichever is first
 * (after which database routes answer 503 until it is): a respawned
 * worker does not take connections it cannot serve; the others take them
 * meanwhile.
 *
 * Connection spreading (SPEC 4): all workers put the same listening socket
 * in their epoll set with EPOLLEXCLUSIVE, so one connection wakes one
 * worker.  The kernel prefers the waiter that registered first; to spread
 * connections, a worker re-registers the listener (moving itself to the back
 * of the wait queue) after each wake-up in which it accepted, and a worker
 * holding clearly more connections than the least-loaded one yields for a
 * couple of milliseconds (shm/balance.h).  A worker at its connection
 * limit, or out of descriptors, unregisters the listener until it has room
 * (or for ACCEPT_RETRY_MS) and the others take the load.
 */
#ifndef APIARY_WORKER_H
#define APIARY_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "config.h"
#include "conn.h"
#include "loop.h"
#include "metrics_hook.h"
#include "router.h"

#define WORKER_MAX_LISTENERS 8
#define WORKER_MAGIC 0x574b5231u

struct pg;

struct listener {
    struct loop_watch w;
    struct worker *wk;
    int fd;
    bool registered;
};

struct edge;

struct worker {
    uint32_t magic;
    uint32_t generation;
    unsigned id;    /* the slot: 1..N, stable across respawns */
    unsigned block; /* unique among live workers of all generations */
    const struct config *cfg;
    struct loop *loop;
    struct router router;
    struct conn_ctx conns;
    struct api api;
    struct pg *pg;               /* NULL when no database_url is configured */
    struct metrics_hook metrics; /* this worker's metrics block */
    struct edge *edge;           /* auth, rate limit, ... (issue 10; edge.h) */

    struct listener listeners[WORKER_MAX_LISTENERS];
    unsigned nlisteners;
    bool serving;        /* has started accepting (start gate passed) */
    bool accept_paused;  /* listeners unregistered */
    bool accept_stopped; /* shutting down: never again */
    uint32_t accept_wakeups;
    bool must_accept; /* after a yield: take one before yielding again */

    struct timer_queue accept_q, yield_q, drain_q;
    struct timer accept_timer, drain_timer;
    struct alarm start_alarm;

    int draining; /* 0, or a DRAIN_* mode of worker.c */
    int channel;  /* to the master (handover.h), -1: none */
    struct loop_watch channel_w;
    bool channel_out; /* EPOLLOUT wanted: a hand-over found it full */
    bool channel_broken;
    int exit_status; /* of the process once the loop ends */
    bool drain_q_added;

    /* counters, for /debug/worker and the coming metrics segment */
    uint64_t accepted;
    uint64_t yields;      /* accept yields to less loaded workers */
    uint64_t handed_over; /* idle connections sent to the new generation */
    uint64_t adopted;     /* idle connections received from a retiring one */
};

/* What the master gives a worker it forks. */
struct worker_start {
    uint32_t generation;
    unsigned id;    /* the slot, 1..N */
    unsigned block; /* per-worker shm index (master.c), 0: none */
    const struct config *cfg;
    const int *listen_fds;
    unsigned nlisten;
    int channel; /* hand-over channel to the master (handover.h), or -1 */
};

/* Runs the worker described by ws; never returns. */
_Noreturn void worker_run(const struct worker_start *ws);

#endif
