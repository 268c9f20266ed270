/*
 * test_loop.c - the event loop, driven by a test clock one iteration at a
 * time: timer queues, alarms, the tick, hooks, and descriptor events on
 * socketpairs.  Nothing here sleeps; loop_run_once(loop, 0) only polls.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"

#define T0_MS ((uint64_t)1 << 40) /* far from any real uptime */

static uint64_t fake_now_ms;

static uint64_t
fake_clock(void *arg)
{
    (void)arg;
    return fake_now_ms;
}

/* what the callbacks saw, in order */
#define LOG_MAX 32
static int fired[LOG_MAX];
static uint64_t fired_at_ms[LOG_MAX];
static unsigned nfired;

static void
record(int id, uint64_t now_ms)
{
    assert_true(nfired < LOG_MAX);
    fired[nfired] = id;
    fired_at_ms[nfired] = now_ms;
    nfired++;
}

static struct loop *
new_loop(void)
{
    struct loop *loop = loop_new();

    assert_non_null(loop);
    fake_now_ms = T0_MS;
    loop_set_clock(loop, fake_clock, NULL);
    assert_int_equal(loop_now_ms(loop), T0_MS);
    nfired = 0;
    return loop;
}

/* Advances the test clock and runs one polling iteration. */
static int
advance(struct loop *loop, uint64_t ms)
{
    fake_now_ms += ms;
    return loop_run_once(loop, 0);
}

/* ---- timer queues ---- */

struct item {
    struct timer timer;
    int id;
};

static void
item_expired(struct loop *loop, struct timer *t)
{
    struct item *it = container_of(t, struct item, timer);

    assert_null(t->queue); /* stopped before its callback */
    record(it->id, loop_now_ms(loop));
}

static void
test_clock_replaces_monotonic(void **state)
{
    struct loop *loop = new_loop();

    (void)state;
    fake_now_ms = T0_MS + 5;
    assert_int_equal(loop_update_time(loop), T0_MS + 5);
    assert_int_equal(loop_now_ms(loop), T0_MS + 5);
    /* the real clock is back, and read at once */
    loop_set_clock(loop, NULL, NULL);
    assert_true(loop_now_ms(loop) != T0_MS + 5);
    loop_free(&loop);
    assert_null(loop);
}

static void
test_timers_fire_in_order_after_deadline(void **state)
{
    struct loop *loop = new_loop();
    struct timer_queue q;
    struct item it[3];

    (void)state;
    timer_queue_init(&q, 100, item_expired);
    assert_int_equal(loop_add_queue(loop, &q), 0);
    for (int i = 0; i < 3; i++) {
        timer_init(&it[i].timer);
        it[i].id = i;
        timer_start(loop, &q, &it[i].timer);
        fake_now_ms += 10; /* deadlines 100, 110, 120 from T0 */
        loop_update_time(loop);
    }
    fake_now_ms = T0_MS;
    assert_int_equal(advance(loop, 99), 0);
    assert_int_equal(nfired, 0);
    assert_int_equal(advance(loop, 1), 0); /* exactly the deadline */
    assert_int_equal(nfired, 1);
    assert_int_equal(fired[0], 0);
    assert_int_equal(fired_at_ms[0], T0_MS + 100);
    assert_int_equal(advance(loop, 100), 0); /* both others, in order */
    assert_int_equal(nfired, 3);
    assert_int_equal(fired[1], 1);
    assert_int_equal(fired[2], 2);
    assert_null(it[2].timer.queue);
    assert_int_equal(advance(loop, 1000), 0); /* one-shot */
    assert_int_equal(nfired, 3);
    loop_free(&loop);
}

static void
test_timer_restart_moves_it(void **state)
{
    struct loop *loop = new_loop();
    struct timer_queue q;
    struct item a = {.id = 1}, b = {.id = 2};

    (void)state;
    timer_queue_init(&q, 100, item_expired);
    assert_int_equal(loop_add_queue(loop, &q), 0);
    timer_init(&a.timer);
    timer_init(&b.timer);
    timer_start(loop, &q, &a.timer);
    timer_start(loop, &q, &b.timer);
    assert_int_equal(advance(loop, 50), 0);
    timer_start(loop, &q, &a.timer); /* now due at T0 + 150, after b */
    assert_int_equal(a.timer.deadline_ms, T0_MS + 150);
    assert_int_equal(advance(loop, 50), 0);
    assert_int_equal(nfired, 1);
    assert_int_equal(fired[0], 2);
    assert_int_equal(advance(loop, 49), 0);
    assert_int_equal(nfired, 1);
    assert_int_equal(advance(loop, 1), 0);
    assert_int_equal(nfired, 2);
    assert_int_equal(fired[1], 1);
    loop_free(&loop);
}

static void
test_timer_stop_cancels(void **state)
{
    struct loop *loop = new_loop();
    struct timer_queue q1, q2;
    struct item a = {.id = 1}, b = {.id = 2}, c = {.id = 3};

    (void)state;
    timer_queue_init(&q1, 100, item_expired);
    timer_queue_init(&q2, 30, item_expired);
    assert_int_equal(loop_add_queue(loop, &q1), 0);
    assert_int_equal(loop_add_queue(loop, &q2), 0);
    timer_init(&a.timer);
    timer_init(&b.timer);
    timer_init(&c.timer);
    timer_stop(&a.timer); /* not running: a no-op */
    timer_start(loop, &q1, &a.timer);
    timer_start(loop, &q1, &b.timer);
    timer_start(loop, &q1, &c.timer);
    timer_stop(&b.timer); /* from the middle */
    assert_null(b.timer.queue);
    timer_stop(&b.timer);             /* twice */
    timer_start(loop, &q2, &c.timer); /* moves c to the other queue */
    assert_ptr_equal(c.timer.queue, &q2);
    assert_int_equal(advance(loop, 30), 0);
    assert_int_equal(nfired, 1);
    assert_int_equal(fired[0], 3);
    timer_stop(&a.timer); /* the last one */
    assert_ptr_equal(q1.head.next, &q1.head);
    assert_ptr_equal(q1.head.prev, &q1.head);
    assert_int_equal(advance(loop, 1000), 0);
    assert_int_equal(nfired, 1);
    loop_free(&loop);
}

static struct timer_queue *self_q;

/* Restarts itself: the walk over its queue must still end. */
static void
restart_self(struct loop *loop, struct timer *t)
{
    item_expired(loop, t);
    timer_start(loop, self_q, t);
}

static void
test_timer_restarted_from_its_callback(void **state)
{
    struct loop *loop = new_loop();
    struct timer_queue q;
    struct item a = {.id = 7};

    (void)state;
    timer_queue_init(&q, 10, restart_self);
    self_q = &q;
    assert_int_equal(loop_add_queue(loop, &q), 0);
    timer_init(&a.timer);
    timer_start(loop, &q, &a.timer);
    assert_int_equal(advance(loop, 25), 0); /* late: fires once, not twice */
    assert_int_equal(nfired, 1);
    assert_int_equal(a.timer.deadline_ms, T0_MS + 35);
    assert_int_equal(advance(loop, 10), 0);
    assert_int_equal(nfired, 2);
    timer_stop(&a.timer);
    loop_free(&loop);
}

static void
test_queue_limit(void **state)
{
    struct loop *loop = new_loop();
    struct timer_queue q[17];

    (void)state;
    for (int i = 0; i < 16; i++) {
        timer_queue_init(&q[i], 10, item_expired);
        assert_int_equal(loop_add_queue(loop, &q[i]), 0);
    }
    timer_queue_init(&q[16], 10, item_expired);
    errno = 0;
    assert_int_equal(loop_add_queue(loop, &q[16]), -1);
    assert_int_equal(errno, ENOSPC);
    loop_free(&loop);
}

/* ---- alarms and the tick ---- */

static void
alarm_fired(struct loop *loop, void *arg)
{
    record(*(int *)arg, loop_now_ms(loop));
}

static void
test_alarms_sorted(void **state)
{
    struct loop *loop = new_loop();
    struct alarm a[5];
    static int ids[5] = {0, 1, 2, 3, 4};

    (void)state;
    memset(a, 0, sizeof(a));
    loop_alarm_cancel(loop, &a[0]); /* never armed: a no-op */
    loop_alarm_set(loop, &a[0], 300, alarm_fired, &ids[0]);
    loop_alarm_set(loop, &a[1], 100, alarm_fired, &ids[1]);
    loop_alarm_set(loop, &a[2], 200, alarm_fired, &ids[2]);
    loop_alarm_set(loop, &a[3], 100, alarm_fired, &ids[3]);
    loop_alarm_set(loop, &a[4], 250, alarm_fired, &ids[4]);
    assert_true(a[2].armed);
    loop_alarm_cancel(loop, &a[2]);
    assert_false(a[2].armed);
    loop_alarm_set(loop, &a[0], 50, alarm_fired, &ids[0]); /* moves */
    assert_int_equal(advance(loop, 49), 0);
    assert_int_equal(nfired, 0);
    assert_int_equal(advance(loop, 1), 0);
    assert_int_equal(nfired, 1);
    assert_int_equal(fired[0], 0);
    assert_false(a[0].armed);
    assert_int_equal(advance(loop, 1000), 0); /* equal deadlines: set order */
    assert_int_equal(nfired, 4);
    assert_int_equal(fired[1], 1);
    assert_int_equal(fired[2], 3);
    assert_int_equal(fired[3], 4);
    assert_int_equal(advance(loop, 1000), 0); /* one-shot; 2 stays cancelled */
    assert_int_equal(nfired, 4);
    loop_free(&loop);
}

static struct alarm rearming;

static void
alarm_rearm(struct loop *loop, void *arg)
{
    alarm_fired(loop, arg);
    loop_alarm_set(loop, &rearming, 10, alarm_rearm, arg);
}

static void
test_alarm_rearmed_from_its_callback(void **state)
{
    struct loop *loop = new_loop();
    static int id = 9;

    (void)state;
    memset(&rearming, 0, sizeof(rearming));
    loop_alarm_set(loop, &rearming, 10, alarm_rearm, &id);
    assert_int_equal(advance(loop, 10), 0);
    assert_int_equal(nfired, 1);
    assert_true(rearming.armed);
    assert_int_equal(rearming.deadline_ms, T0_MS + 20);
    assert_int_equal(advance(loop, 10), 0);
    assert_int_equal(nfired, 2);
    loop_alarm_cancel(loop, &rearming);
    assert_int_equal(advance(loop, 100), 0);
    assert_int_equal(nfired, 2);
    loop_free(&loop);
}

static void
test_tick(void **state)
{
    struct loop *loop = new_loop();
    static int id = 5;

    (void)state;
    loop_set_tick(loop, 100, alarm_fired, &id);
    assert_int_equal(advance(loop, 99), 0);
    assert_int_equal(nfired, 0);
    assert_int_equal(advance(loop, 1), 0);
    assert_int_equal(nfired, 1);
    assert_int_equal(fired_at_ms[0], T0_MS + 100);
    assert_int_equal(advance(loop, 250), 0); /* late: once, not twice */
    assert_int_equal(nfired, 2);
    assert_int_equal(advance(loop, 99), 0); /* next one 100 after the last */
    assert_int_equal(nfired, 2);
    assert_int_equal(advance(loop, 1), 0);
    assert_int_equal(nfired, 3);
    assert_int_equal(fired_at_ms[2], T0_MS + 450);
    loop_free(&loop);
}

/* ---- descriptors ---- */

struct end {
    struct loop_watch w;
    int fd, peer;
    unsigned calls;
    uint32_t events;
    struct end *other; /* for the callbacks that act on another watch */
};

static void
open_pair(struct end *e)
{
    int sv[2];

    memset(e, 0, sizeof(*e));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv),
                     0);
    e->fd = sv[0];
    e->peer = sv[1];
}

static void
close_pair(struct end *e)
{
    if (e->fd >= 0)
        assert_int_equal(close(e->fd), 0);
    if (e->peer >= 0)
        assert_int_equal(close(e->peer), 0);
    e->fd = e->peer = -1;
}

static void
poke(const struct end *e)
{
    assert_int_equal(write(e->peer, "x", 1), 1);
}

static void
on_io(struct loop *loop, struct loop_watch *w, uint32_t events)
{
    struct end *e = container_of(w, struct end, w);

    (void)loop;
    assert_int_equal(w->fd, e->fd);
    e->calls++;
    e->events = events;
}

static void
test_add_mod_del_masks(void **state)
{
    struct loop *loop = new_loop();
    struct end e;
    char c;

    (void)state;
    open_pair(&e);
    assert_int_equal(loop_add(loop, &e.w, e.fd, EPOLLIN, on_io), 0);
    assert_int_equal(e.w.mask, EPOLLIN);
    assert_int_equal(loop_run_once(loop, 0), 0); /* nothing to read */
    assert_int_equal(e.calls, 0);

    poke(&e);
    assert_int_equal(loop_run_once(loop, 0), 1);
    assert_int_equal(e.calls, 1);
    assert_int_equal(e.events, EPOLLIN);
    /* level-triggered: unread data is reported again */
    assert_int_equal(loop_run_once(loop, 0), 1);
    assert_int_equal(e.calls, 2);

    assert_int_equal(loop_mod(loop, &e.w, EPOLLIN | EPOLLOUT), 0);
    assert_int_equal(e.w.mask, EPOLLIN | EPOLLOUT);
    assert_int_equal(loop_run_once(loop, 0), 1);
    assert_int_equal(e.events, EPOLLIN | EPOLLOUT);
    assert_int_equal(read(e.fd, &c, 1), 1);
    assert_int_equal(loop_run_once(loop, 0), 1);
    assert_int_equal(e.events, EPOLLOUT);
    assert_int_equal(loop_mod(loop, &e.w, EPOLLIN), 0);
    assert_int_equal(loop_run_once(loop, 0), 0);

    /* the peer goes away: readable (EOF) and hung up */
    assert_int_equal(close(e.peer), 0);
    e.peer = -1;
    assert_int_equal(loop_run_once(loop, 0), 1);
    assert_true(e.events & EPOLLIN);
    assert_true(e.events & EPOLLHUP);

    assert_int_equal(loop_del(loop, &e.w), 0);
    assert_null(e.w.fn);
    assert_int_equal(e.calls, 5);
    assert_int_equal(loop_run_once(loop, 0), 0);
    assert_int_equal(e.calls, 5);
    close_pair(&e);
    loop_free(&loop);
}

/*
 * loop.h: a descriptor closed and reopened with the same number is not
 * registered; loop_mod() with an unchanged mask does not notice, a real
 * change fails with ENOENT, and loop_del() + loop_add() is the way back.
 */
static void
test_reopened_descriptor_needs_add(void **state)
{
    struct loop *loop = new_loop();
    struct end e, e2;
    int old_fd;

    (void)state;
    open_pair(&e);
    assert_int_equal(loop_add(loop, &e.w, e.fd, EPOLLIN, on_io), 0);
    old_fd = e.fd;
    close_pair(&e);
    open_pair(&e2); /* the lowest free numbers: the same ones */
    assert_int_equal(e2.fd, old_fd);
    e.fd = e2.fd;
    e.peer = e2.peer;
    poke(&e);
    assert_int_equal(loop_mod(loop, &e.w, EPOLLIN), 0); /* no-op */
    assert_int_equal(loop_run_once(loop, 0), 0);        /* unwatched */
    assert_int_equal(e.calls, 0);
    errno = 0;
    assert_int_equal(loop_mod(loop, &e.w, EPOLLIN | EPOLLOUT), -1);
    assert_int_equal(errno, ENOENT);
    errno = 0;
    assert_int_equal(loop_del(loop, &e.w), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(loop_add(loop, &e.w, e.fd, EPOLLIN, on_io), 0);
    assert_int_equal(loop_run_once(loop, 0), 1);
    assert_int_equal(e.calls, 1);
    assert_int_equal(loop_del(loop, &e.w), 0);
    close_pair(&e);
    loop_free(&loop);
}

/* Whichever of two ready watches runs first unregisters the other. */
static void
on_io_del_other(struct loop *loop, struct loop_watch *w, uint32_t events)
{
    struct end *e = container_of(w, struct end, w);

    on_io(loop, w, events);
    if (e->other->w.fn != NULL)
        assert_int_equal(loop_del(loop, &e->other->w), 0);
}

static void
test_stale_event_dropped(void **state)
{
    struct loop *loop = new_loop();
    struct end a, b;

    (void)state;
    open_pair(&a);
    open_pair(&b);
    a.other = &b;
    b.other = &a;
    assert_int_equal(loop_add(loop, &a.w, a.fd, EPOLLIN, on_io_del_other), 0);
    assert_int_equal(loop_add(loop, &b.w, b.fd, EPOLLIN, on_io_del_other), 0);
    poke(&a);
    poke(&b);
    assert_int_equal(loop_run_once(loop, 0), 1);
    assert_int_equal(a.calls + b.calls, 1);
    assert_int_equal(loop_run_once(loop, 0), 1); /* the survivor, again */
    assert_int_equal(a.calls + b.calls, 2);
    assert_true(a.calls == 0 || b.calls == 0);
    assert_int_equal(loop_del(loop, a.calls ? &a.w : &b.w), 0);
    close_pair(&a);
    close_pair(&b);
    loop_free(&loop);
}

/*
 * As above, but the first re-adds the other at once (a reconnect reusing
 * its watch): the event fetched for the old registration is still stale.
 */
static void
on_io_readd_other(struct loop *loop, struct loop_watch *w, uint32_t events)
{
    struct end *e = container_of(w, struct end, w);

    on_io(loop, w, events);
    if (e->calls + e->other->calls == 1) {
        assert_int_equal(loop_del(loop, &e->other->w), 0);
        assert_int_equal(loop_add(loop, &e->other->w, e->other->fd, EPOLLIN,
                                  on_io_readd_other),
                         0);
    }
}

static void
test_stale_event_dropped_when_readded(void **state)
{
    struct loop *loop = new_loop();
    struct end a, b;

    (void)state;
    open_pair(&a);
    open_pair(&b);
    a.other = &b;
    b.other = &a;
    assert_int_equal(loop_add(loop, &a.w, a.fd, EPOLLIN, on_io_readd_other), 0);
    assert_int_equal(loop_add(loop, &b.w, b.fd, EPOLLIN, on_io_readd_other), 0);
    poke(&a);
    poke(&b);
    assert_int_equal(loop_run_once(loop, 0), 1);
    assert_int_equal(a.calls + b.calls, 1);
    /* the new registration reports the unread byte on the next wake-up */
    assert_int_equal(loop_run_once(loop, 0), 2);
    assert_int_equal(a.calls + b.calls, 3);
    assert_int_equal(loop_del(loop, &a.w), 0);
    assert_int_equal(loop_del(loop, &b.w), 0);
    close_pair(&a);
    close_pair(&b);
    loop_free(&loop);
}

/* ---- hooks, one iteration, loop_run and loop_stop ---- */

enum {
    EV_BEFORE_SLEEP = 1,
    EV_IO,
    EV_AFTER_EVENTS,
    EV_TIMER,
    EV_ALARM,
    EV_TICK
};

static unsigned stop_after; /* loop_stop() at this many records; 0: never */

static void
hook(struct loop *loop, void *arg)
{
    record(*(int *)arg, loop_now_ms(loop));
    if (nfired == stop_after)
        loop_stop(loop);
}

static void
on_io_record(struct loop *loop, struct loop_watch *w, uint32_t events)
{
    static int id = EV_IO;

    on_io(loop, w, events);
    hook(loop, &id);
}

static void
timer_record(struct loop *loop, struct timer *t)
{
    static int id = EV_TIMER;

    (void)t;
    hook(loop, &id);
}

static void
test_iteration_order(void **state)
{
    struct loop *loop = new_loop();
    static int ids[] = {EV_BEFORE_SLEEP, EV_AFTER_EVENTS, EV_ALARM, EV_TICK};
    static const int want[] = {EV_BEFORE_SLEEP, EV_IO,    EV_AFTER_EVENTS,
                               EV_TIMER,        EV_ALARM, EV_TICK,
                               EV_AFTER_EVENTS};
    struct timer_queue q;
    struct timer t;
    struct alarm a;
    struct end e;

    (void)state;
    stop_after = 0;
    memset(&a, 0, sizeof(a));
    loop_set_before_sleep(loop, hook, &ids[0]);
    loop_set_after_events(loop, hook, &ids[1]);
    timer_queue_init(&q, 100, timer_record);
    assert_int_equal(loop_add_queue(loop, &q), 0);
    timer_init(&t);
    timer_start(loop, &q, &t);
    loop_alarm_set(loop, &a, 100, hook, &ids[2]);
    loop_set_tick(loop, 100, hook, &ids[3]);
    open_pair(&e);
    assert_int_equal(loop_add(loop, &e.w, e.fd, EPOLLIN, on_io_record), 0);
    poke(&e);
    assert_int_equal(advance(loop, 100), 1);
    assert_int_equal(nfired, 7);
    for (unsigned i = 0; i < 7; i++)
        assert_int_equal(fired[i], want[i]);
    /* the events and the timers saw the time of the wake-up */
    assert_int_equal(fired_at_ms[1], T0_MS + 100);
    assert_int_equal(fired_at_ms[3], T0_MS + 100);
    assert_int_equal(loop_del(loop, &e.w), 0);
    close_pair(&e);
    loop_free(&loop);
}

static void
test_stop_in_before_sleep_skips_the_sleep(void **state)
{
    struct loop *loop = new_loop();
    static int id = EV_BEFORE_SLEEP;

    (void)state;
    /* nothing registered: a sleep would never end */
    stop_after = 1;
    loop_set_before_sleep(loop, hook, &id);
    assert_int_equal(loop_run(loop, NULL), 0);
    assert_int_equal(nfired, 1);
    nfired = 0;
    assert_int_equal(loop_run_once(loop, -1), 0);
    assert_int_equal(nfired, 1);
    loop_free(&loop);
}

static void
test_stop_ends_loop_run(void **state)
{
    struct loop *loop = new_loop();
    struct end e;

    (void)state;
    open_pair(&e);
    assert_int_equal(loop_add(loop, &e.w, e.fd, EPOLLIN, on_io_record), 0);
    poke(&e); /* never read: every iteration has an event */
    stop_after = 3;
    assert_int_equal(loop_run(loop, NULL), 0);
    assert_int_equal(e.calls, 3);
    /* a stop left over from loop_run() does not stop the next iteration */
    stop_after = 0;
    assert_int_equal(loop_run_once(loop, 0), 1);
    assert_int_equal(e.calls, 4);
    /* and loop_run() runs again until the next loop_stop() */
    stop_after = 6;
    assert_int_equal(loop_run(loop, NULL), 0);
    assert_int_equal(e.calls, 6);
    assert_int_equal(loop_del(loop, &e.w), 0);
    close_pair(&e);
    loop_free(&loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clock_replaces_monotonic),
        cmocka_unit_test(test_timers_fire_in_order_after_deadline),
        cmocka_unit_test(test_timer_restart_moves_it),
        cmocka_unit_test(test_timer_stop_cancels),
        cmocka_unit_test(test_timer_restarted_from_its_callback),
        cmocka_unit_test(test_queue_limit),
        cmocka_unit_test(test_alarms_sorted),
        cmocka_unit_test(test_alarm_rearmed_from_its_callback),
        cmocka_unit_test(test_tick),
        cmocka_unit_test(test_add_mod_del_masks),
        cmocka_unit_test(test_reopened_descriptor_needs_add),
        cmocka_unit_test(test_stale_event_dropped),
        cmocka_unit_test(test_stale_event_dropped_when_readded),
        cmocka_unit_test(test_iteration_order),
        cmocka_unit_test(test_stop_in_before_sleep_skips_the_sleep),
        cmocka_unit_test(test_stop_ends_loop_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
