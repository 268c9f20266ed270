/*
 * test_loop.c - the event loop, driven by a test clock one iteration at a
 * time: timer queues, alarms, the tick, hooks, and descriptor events on
 * socketpairs.  Nothing here sleeps; loop_run_once(loop, 0) only polls.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clock_replaces_monotonic),
        cmocka_unit_test(test_timers_fire_in_order_after_deadline),
        cmocka_unit_test(test_timer_restart_moves_it),
        cmocka_unit_test(test_timer_stop_cancels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
