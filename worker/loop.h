/*
 * loop.h - the worker's event loop: epoll, timer queues, a periodic tick.
 *
 * The loop knows descriptors, interest masks, timers and callbacks, never
 * HTTP (redis's ae.c split).  Everything else asks it for interest changes.
 *
 * Descriptors: a struct loop_watch is embedded in the owning object (a
 * connection, a listener, the PostgreSQL client); epoll's data pointer is
 * the watch, and the callback recovers its owner with container_of.
 *
 * Timers: every timeout in a worker has one of a few fixed durations (header
 * read, body read, keep-alive, send, ...).  Timers with one duration expire
 * in the order they were started, so each duration is a FIFO list and start,
 * restart and stop are O(1): no heap, no per-connection sorting.  The loop
 * sleeps until the earliest list head or the next tick.
 *
 * Time: loop_now_ms() is CLOCK_MONOTONIC in milliseconds, read once per
 * wake-up; handlers must not expect it to advance during a callback.
 *
 * Signals: loop_run() sleeps in epoll_pwait() with the given mask, so a
 * signal blocked outside the sleep interrupts it without a race; the
 * before-sleep hook then sees the flag the handler set.
 *
 * Not thread-safe: one loop per worker process.
 */
#ifndef APIARY_LOOP_H
#define APIARY_LOOP_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

#define container_of(ptr, type, member)                                        \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

struct loop;
struct loop_watch;

typedef void (*loop_io_fn)(struct loop *loop, struct loop_watch *w,
                           uint32_t events);

struct loop_watch {
    loop_io_fn fn;
    int fd;
    uint32_t mask; /* EPOLLIN | EPOLLOUT ... as registered */
};

struct timer {
    struct timer *prev, *next;
    uint64_t deadline_ms;
    struct timer_queue *queue; /* NULL when not running */
};

typedef void (*timer_fn)(struct loop *loop, struct timer *t);

struct timer_queue {
    struct timer head; /* sentinel of a circular list */
    uint32_t duration_ms;
    timer_fn fn;
};

typedef void (*loop_hook_fn)(struct loop *loop, void *arg);

/*
 * A one-shot timer with any deadline, for the rare timers whose duration
 * varies (reconnect backoff).  Kept in a short sorted list: O(n) to set,
 * fine for a handful per worker; per-connection timers use timer queues.
 */
struct alarm {
    struct alarm *next;
    uint64_t deadline_ms;
    bool armed;
    loop_hook_fn fn;
    void *arg;
};

/* Creates a loop.  NULL with errno set on failure. */
struct loop *loop_new(void);
/* Closes the epoll descriptor and frees *lp; sets *lp to NULL. */
void loop_free(struct loop **lp);

/*
 * Registers fd with the given epoll mask (EPOLLEXCLUSIVE allowed).  fn is
 * called with w when events arrive.  0 or -1 (errno from epoll_ctl).
 */
int loop_add(struct loop *loop, struct loop_watch *w, int fd, uint32_t mask,
             loop_io_fn fn);
/* Changes the mask; a no-op if unchanged.  0 or -1. */
int loop_mod(struct loop *loop, struct loop_watch *w, uint32_t mask);
/*
 * Unregisters w (before the fd is closed).  Events for w already fetched
 * in the current batch are dropped.  0 or -1.
 */
int loop_del(struct loop *loop, struct loop_watch *w);

void timer_queue_init(struct timer_queue *q, uint32_t duration_ms, timer_fn fn);
void timer_init(struct timer *t);
/* (Re)starts t in q: it fires duration_ms from now.  O(1). */
void timer_start(struct loop *loop, struct timer_queue *q, struct timer *t);
/* Stops t if running.  O(1). */
void timer_stop(struct timer *t);
/* Registers q so the loop fires its timers.  At most 16 queues. */
int loop_add_queue(struct loop *loop, struct timer_queue *q);

/* Arms a (fires fn(loop, arg) in delay_ms); re-arming moves it. */
void loop_alarm_set(struct loop *loop, struct alarm *a, uint32_t delay_ms,
                    loop_hook_fn fn, void *arg);
void loop_alarm_cancel(struct loop *loop, struct alarm *a);

/* fn(loop, arg) every interval_ms (the Date refresh, shutdown checks). */
void loop_set_tick(struct loop *loop, uint32_t interval_ms, loop_hook_fn fn,
                   void *arg);
/* fn(loop, arg) before each sleep: output flushing, log flushing. */
void loop_set_before_sleep(struct loop *loop, loop_hook_fn fn, void *arg);
/* fn(loop, arg) after each batch of events: deferred closes. */
void loop_set_after_events(struct loop *loop, loop_hook_fn fn, void *arg);

/* Runs until loop_stop().  sigmask is the mask during the sleep. 0 or -1. */
int loop_run(struct loop *loop, const sigset_t *sigmask);
void loop_stop(struct loop *loop);

/* Milliseconds on CLOCK_MONOTONIC as of the last wake-up. */
uint64_t loop_now_ms(const struct loop *loop);
/* Reads the clock now and updates the cached value. */
uint64_t loop_update_time(struct loop *loop);

#endif
