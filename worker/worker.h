/*
 * worker.h - a worker process: its loop, listeners, connection table,
 * pools, timers and shutdown state.
 *
 * The master forks each worker with the listening sockets already bound;
 * worker_run() never returns.  Exit status: 0 after a requested shutdown,
 * 2 when the worker cannot start (the master must not respawn it in a
 * tight loop), anything else is a crash.
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

#include "buf.h"
#include "config.h"
#include "http_parse.h"
#include "loop.h"
#include "router.h"

#define WORKER_MAX_LISTENERS 8
#define WORKER_MAGIC 0x574b5231u

struct conn;
struct pg;

struct listener {
    struct loop_watch w;
    int fd;
    bool registered;
};

struct worker {
    uint32_t magic;
    unsigned id; /* 1..N, stable across respawns of the slot */
    const struct config *cfg;
    struct loop *loop;
    struct router router;
    struct pg *pg; /* NULL when no database_url is configured */
    struct http_limits limits;

    struct listener listeners[WORKER_MAX_LISTENERS];
    unsigned nlisteners;
    bool accept_paused;  /* listeners unregistered */
    bool accept_stopped; /* shutting down: never again */
    uint64_t accept_resume_ms;
    uint32_t accept_wakeups;
    bool must_accept; /* after a yield: take one before yielding again */

    struct conn *conns; /* indexed by fd */
    unsigned conns_cap;
    unsigned nconns;

    struct bufpool in_pool;  /* request input, sized for a header section */
    struct bufpool out_pool; /* response output */
    struct chunk *scratch;   /* shared read buffer for idle connections */

    size_t header_cap; /* input bytes a header section may need */

    struct timer_queue header_q, body_q, keepalive_q, send_q, linger_q;
    struct timer_queue accept_q, yield_q, drain_q;
    struct timer_queue request_q; /* request timeout (504) */
    struct timer accept_timer, drain_timer;
    struct conn *pending_out; /* connections with output to write */
    struct conn *closing;     /* closed this batch, fds not yet closed */

    int draining; /* 0, or a DRAIN_* mode of worker.c */
    bool drain_q_added;

    /* counters, for /debug/worker and the coming metrics segment */
    uint64_t accepted;
    uint64_t requests;
    uint64_t yields; /* accept yields to less loaded workers */
};

/* Runs worker number id (1-based) on the given listening sockets. */
_Noreturn void worker_run(unsigned id, const struct config *cfg,
                          const int *listen_fds, unsigned nlisten);

/* The worker of this process (NULL in the master). */
struct worker *worker_self(void);

/* Called by conn_close(): resumes accepting, ends a drain. */
void worker_conn_closed(struct worker *wk);

#endif
