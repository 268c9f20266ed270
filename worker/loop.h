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
 * wake-up; handlers must not expect it to advance during a callback.  A
 * unit test may replace the clock (loop_set_clock) and drive the loop one
 * iteration at a time (loop_run_once) to fire timers without sleeping.
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
    uint32_t ntimers; /* timers in the queue now (idle connections ...) */
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
 * w stays the caller's; it must outlive the registration.
 */
int loop_add(struct loop *loop, struct loop_watch *w, int fd, uint32_t mask,
             loop_io_fn fn);
/*
 * Changes the mask of w, which must be registered for the descriptor it
 * was added with.  Returns 0 without any system call when the mask is
 * unchanged; else 0, or -1 with errno from epoll_ctl (ENOENT: not
 * registered).
 *
 * Not for a new descriptor: close(2) drops the epoll registration, and a
 * descriptor opened afterwards may get the same number.  Re-register it with
 * loop_del() (its error ignored) then loop_add(): loop_mod() with an
 * unchanged mask would return 0 and leave the new descriptor unwatched.
 */
int loop_mod(struct loop *loop, struct loop_watch *w, uint32_t mask);
/*
 * Unregisters w; call it before closing the descriptor.  Events for w
 * already fetched in the current batch are dropped, even if w is added
 * again before the batch ends (the "stale event" guarantee): after
 * loop_del() returns, w's callback runs only for events fetched later.
 * 0, or -1 with errno from epoll_ctl (the events are dropped either way).
 */
int loop_del(struct loop *loop, struct loop_watch *w);

/*
 * duration_ms > 0: a timer restarted from its own callback in a queue of
 * duration 0 would expire again at once and fire forever in one pass.
 */
void timer_queue_init(struct timer_queue *q, uint32_t duration_ms, timer_fn fn);
void timer_init(struct timer *t);
/* (Re)starts t in q: it fires duration_ms from now.  O(1). */
void timer_start(struct loop *loop, struct timer_queue *q, struct timer *t);
/* Stops t if running.  O(1). */
void timer_stop(struct timer *t);
/* Registers q so the loop fires its timers.  At most 16 queues. */
int loop_add_queue(struct loop *loop, struct timer_queue *q);

/*
 * Arms a (fires fn(loop, arg) once, delay_ms from loop_now_ms()); re-arming
 * moves it.  Alarms with equal deadlines fire in the order they were set.
 * An alarm re-armed with delay 0 from its own callback fires again in the
 * same pass, forever: use a delay > 0 there.
 */
void loop_alarm_set(struct loop *loop, struct alarm *a, uint32_t delay_ms,
                    loop_hook_fn fn, void *arg);
/* Disarms a; a no-op if it is not armed.  O(number of armed alarms). */
void loop_alarm_cancel(struct loop *loop, struct alarm *a);

/*
 * fn(loop, arg) every interval_ms (the Date refresh, shutdown checks); the
 * first call interval_ms after this one, each next one interval_ms after
 * the previous call ran (late wake-ups delay it, they never repeat it).
 */
void loop_set_tick(struct loop *loop, uint32_t interval_ms, loop_hook_fn fn,
                   void *arg);
/* fn(loop, arg) before each sleep: output flushing, log flushing. */
void loop_set_before_sleep(struct loop *loop, loop_hook_fn fn, void *arg);
/* fn(loop, arg) after each batch of events: deferred closes. */
void loop_set_after_events(struct loop *loop, loop_hook_fn fn, void *arg);

/*
 * Runs iterations until loop_stop().  Each iteration: the before-sleep hook
 * (if it calls loop_stop(), loop_run returns without sleeping), one
 * epoll_pwait() until the earliest timer, alarm or tick (at most 60 s) with
 * sigmask as the signal mask during the sleep, the clock update, the
 * callbacks of the events fetched, the after-events hook, expired timers
 * (queue by queue, in registration order), expired alarms and the tick, and
 * the after-events hook again (timer callbacks close connections too).
 * EINTR counts as a wake-up with no events.  Returns 0 after loop_stop(),
 * or -1 with errno from epoll_pwait().  Not reentrant.
 */
int loop_run(struct loop *loop, const sigset_t *sigmask);
/*
 * Runs exactly one iteration of loop_run() (same code), sleeping at most
 * timeout_ms: 0 polls, a negative value waits for the next timer or event.
 * The signal mask is left alone.  Clears a previous loop_stop(); one made
 * by the before-sleep hook ends the iteration right after the hook.
 * Returns the number of events whose callback ran (stale events dropped by
 * loop_del() do not count; EINTR gives 0), or -1 with errno from
 * epoll_pwait().  For tests: with a test clock, advance it and call
 * loop_run_once(loop, 0) to fire what expired.  Not reentrant.
 */
int loop_run_once(struct loop *loop, int timeout_ms);
/* Makes loop_run() return after the current iteration (or the hook). */
void loop_stop(struct loop *loop);

/* Milliseconds on the loop's clock as of the last wake-up. */
uint64_t loop_now_ms(const struct loop *loop);
/* Reads the clock now and updates the cached value. */
uint64_t loop_update_time(struct loop *loop);

typedef uint64_t (*loop_clock_fn)(void *arg);
/*
 * For tests: makes loop_update_time() (so every wake-up) read
 * now_ms_fn(arg) instead of CLOCK_MONOTONIC; NULL restores the real clock.
 * Reads the new clock at once.  Timers, alarms and the tick already armed
 * keep deadlines taken on the old clock, so set the clock first.  The
 * function must never go backwards and must not call into the loop.  The
 * real clock pays one branch per read.
 */
void loop_set_clock(struct loop *loop, loop_clock_fn now_ms_fn, void *arg);

#endif
