/*
 * loop.c - see loop.h.
 *
 * Level-triggered epoll: a handler that leaves data unread is simply called
 * again, which keeps fairness between connections simple (each gets at most
 * one read per wake-up) and needs no extra read() returning EAGAIN per
 * request, the cost an edge-triggered design pays.
 */
#include "loop.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256
#define LOOP_MAX_QUEUES 16

struct loop {
    int epfd;
    bool stop;
    uint64_t now_ms;
    loop_clock_fn clock_fn; /* NULL: CLOCK_MONOTONIC */
    void *clock_arg;
    /* the batch being dispatched, for loop_del(); nevents is 0 outside */
    int nevents, cur_event;
    struct timer_queue *queues[LOOP_MAX_QUEUES];
    struct alarm *alarms; /* sorted by deadline */
    unsigned nqueues;
    uint32_t tick_ms;
    uint64_t next_tick_ms;
    loop_hook_fn tick_fn, before_sleep_fn, after_events_fn;
    void *tick_arg, *before_sleep_arg, *after_events_arg;
    struct epoll_event events[LOOP_MAX_EVENTS];
};

uint64_t
loop_update_time(struct loop *loop)
{
    struct timespec ts;

    /* the only cost of the test clock on the real path: this branch */
    if (loop->clock_fn != NULL) {
        loop->now_ms = loop->clock_fn(loop->clock_arg);
        return loop->now_ms;
    }
    /* cannot fail: CLOCK_MONOTONIC exists and ts is valid */
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    loop->now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    return loop->now_ms;
}

void
loop_set_clock(struct loop *loop, loop_clock_fn now_ms_fn, void *arg)
{
    loop->clock_fn = now_ms_fn;
    loop->clock_arg = arg;
    loop_update_time(loop);
}

uint64_t
loop_now_ms(const struct loop *loop)
{
    return loop->now_ms;
}

struct loop *
loop_new(void)
{
    struct loop *loop = calloc(1, sizeof(*loop));
    if (loop == NULL)
        return NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        int saved = errno;
        free(loop);
        errno = saved;
        return NULL;
    }
    loop_update_time(loop);
    return loop;
}

void
loop_free(struct loop **lp)
{
    if (*lp == NULL)
        return;
    (void)close((*lp)->epfd);
    free(*lp);
    *lp = NULL;
}

int
loop_add(struct loop *loop, struct loop_watch *w, int fd, uint32_t mask,
         loop_io_fn fn)
{
    struct epoll_event ev = {.events = mask, .data.ptr = w};

    w->fn = fn;
    w->fd = fd;
    w->mask = mask;
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int
loop_mod(struct loop *loop, struct loop_watch *w, uint32_t mask)
{
    struct epoll_event ev = {.events = mask, .data.ptr = w};

    if (w->mask == mask)
        return 0;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0)
        return -1;
    w->mask = mask;
    return 0;
}

int
loop_del(struct loop *loop, struct loop_watch *w)
{
    /*
     * The "stale event" problem (nginx's instance bit, libuv's
     * uv__platform_invalidate_fd): events for w may sit later in the batch
     * being dispatched.  Clearing w->fn is not enough, since the owner may
     * loop_add() w again (same object, possibly the same fd number) before
     * the batch ends, and would then get the old descriptor's events.  So
     * forget them here; the batch holds at most LOOP_MAX_EVENTS entries.
     */
    for (int i = loop->cur_event + 1; i < loop->nevents; i++) {
        if (loop->events[i].data.ptr == w)
            loop->events[i].data.ptr = NULL;
    }
    w->mask = 0;
    w->fn = NULL;
    return epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
}

void
timer_queue_init(struct timer_queue *q, uint32_t duration_ms, timer_fn fn)
{
    q->head.prev = q->head.next = &q->head;
    q->head.queue = q;
    q->duration_ms = duration_ms;
    q->ntimers = 0;
    q->fn = fn;
}

void
timer_init(struct timer *t)
{
    t->prev = t->next = NULL;
    t->queue = NULL;
    t->deadline_ms = 0;
}

void
timer_stop(struct timer *t)
{
    if (t->queue == NULL)
        return;
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->prev = t->next = NULL;
    t->queue->ntimers--;
    t->queue = NULL;
}

void
timer_start(struct loop *loop, struct timer_queue *q, struct timer *t)
{
    timer_stop(t);
    t->deadline_ms = loop->now_ms + q->duration_ms;
    t->queue = q;
    q->ntimers++;
    t->prev = q->head.prev;
    t->next = &q->head;
    q->head.prev->next = t;
    q->head.prev = t;
}

int
loop_add_queue(struct loop *loop, struct timer_queue *q)
{
    if (loop->nqueues == LOOP_MAX_QUEUES) {
        errno = ENOSPC;
        return -1;
    }
    loop->queues[loop->nqueues++] = q;
    return 0;
}

void
loop_set_tick(struct loop *loop, uint32_t interval_ms, loop_hook_fn fn,
              void *arg)
{
    loop->tick_ms = interval_ms;
    loop->tick_fn = fn;
    loop->tick_arg = arg;
    loop->next_tick_ms = loop->now_ms + interval_ms;
}

void
loop_set_before_sleep(struct loop *loop, loop_hook_fn fn, void *arg)
{
    loop->before_sleep_fn = fn;
    loop->before_sleep_arg = arg;
}

void
loop_set_after_events(struct loop *loop, loop_hook_fn fn, void *arg)
{
    loop->after_events_fn = fn;
    loop->after_events_arg = arg;
}

void
loop_stop(struct loop *loop)
{
    loop->stop = true;
}

void
loop_alarm_cancel(struct loop *loop, struct alarm *a)
{
    struct alarm **pp;

    if (!a->armed)
        return;
    for (pp = &loop->alarms; *pp; pp = &(*pp)->next) {
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    }
    a->armed = false;
    a->next = NULL;
}

void
loop_alarm_set(struct loop *loop, struct alarm *a, uint32_t delay_ms,
               loop_hook_fn fn, void *arg)
{
    struct alarm **pp;

    loop_alarm_cancel(loop, a);
    a->deadline_ms = loop->now_ms + delay_ms;
    a->fn = fn;
    a->arg = arg;
    a->armed = true;
    for (pp = &loop->alarms; *pp && (*pp)->deadline_ms <= a->deadline_ms;
         pp = &(*pp)->next)
        ;
    a->next = *pp;
    *pp = a;
}

/* Milliseconds until the earliest timer or tick; -1 for none. */
static int
next_timeout(const struct loop *loop)
{
    uint64_t earliest = UINT64_MAX;

    if (loop->tick_fn)
        earliest = loop->next_tick_ms;
    if (loop->alarms && loop->alarms->deadline_ms < earliest)
        earliest = loop->alarms->deadline_ms;
    for (unsigned i = 0; i < loop->nqueues; i++) {
        const struct timer *first = loop->queues[i]->head.next;
        if (first != &loop->queues[i]->head && first->deadline_ms < earliest)
            earliest = first->deadline_ms;
    }
    if (earliest == UINT64_MAX)
        return -1;
    if (earliest <= loop->now_ms)
        return 0;
    if (earliest - loop->now_ms > 60000)
        return 60000;
    return (int)(earliest - loop->now_ms);
}

static void
fire_timers(struct loop *loop)
{
    for (unsigned i = 0; i < loop->nqueues; i++) {
        struct timer_queue *q = loop->queues[i];
        /* callbacks may restart other timers of q: they go to the tail,
         * with a later deadline, so this walk ends */
        while (q->head.next != &q->head &&
               q->head.next->deadline_ms <= loop->now_ms) {
            struct timer *t = q->head.next;
            timer_stop(t);
            q->fn(loop, t);
        }
    }
    while (loop->alarms && loop->alarms->deadline_ms <= loop->now_ms) {
        struct alarm *a = loop->alarms;
        loop->alarms = a->next;
        a->next = NULL;
        a->armed = false;
        a->fn(loop, a->arg);
    }
    if (loop->tick_fn && loop->next_tick_ms <= loop->now_ms) {
        loop->next_tick_ms = loop->now_ms + loop->tick_ms;
        loop->tick_fn(loop, loop->tick_arg);
    }
}

/*
 * One iteration, shared by loop_run() and loop_run_once().  cap_ms < 0
 * means no cap beyond the next timer.  Returns the events dispatched, or -1
 * when epoll_pwait() fails with anything but EINTR.
 */
static int
iterate(struct loop *loop, int cap_ms, const sigset_t *sigmask)
{
    int n, timeout, saved, handled = 0;

    if (loop->before_sleep_fn)
        loop->before_sleep_fn(loop, loop->before_sleep_arg);
    if (loop->stop)
        return 0;
    timeout = next_timeout(loop);
    if (cap_ms >= 0 && (timeout < 0 || timeout > cap_ms))
        timeout = cap_ms;
    n = epoll_pwait(loop->epfd, loop->events, LOOP_MAX_EVENTS, timeout,
                    sigmask);
    saved = errno; /* a test clock may clobber it */
    loop_update_time(loop);
    if (n < 0) {
        if (saved != EINTR) {
            errno = saved;
            return -1;
        }
        n = 0;
    }
    loop->nevents = n;
    for (loop->cur_event = 0; loop->cur_event < n; loop->cur_event++) {
        struct loop_watch *w = loop->events[loop->cur_event].data.ptr;
        /* NULL: loop_del() earlier in this batch.  fn NULL: the owner
         * cleared it without loop_del(), its descriptor being closed */
        if (w == NULL || w->fn == NULL)
            continue;
        w->fn(loop, w, loop->events[loop->cur_event].events);
        handled++;
    }
    loop->nevents = 0;
    loop->cur_event = 0;
    if (loop->after_events_fn)
        loop->after_events_fn(loop, loop->after_events_arg);
    fire_timers(loop);
    /* again: timer callbacks close connections too */
    if (loop->after_events_fn)
        loop->after_events_fn(loop, loop->after_events_arg);
    return handled;
}

int
loop_run(struct loop *loop, const sigset_t *sigmask)
{
    loop->stop = false;
    while (!loop->stop) {
        if (iterate(loop, -1, sigmask) < 0)
            return -1;
    }
    return 0;
}

int
loop_run_once(struct loop *loop, int timeout_ms)
{
    loop->stop = false;
    return iterate(loop, timeout_ms, NULL);
}
