/*
 * test_ratelimit.c - the shared GCRA table (shm/ratelimit.c): keys, the
 * bucket's arithmetic, one budget shared by forked processes taking at
 * once, a full table, a process SIGKILLed while hammering the table
 * leaving nothing held, and a binary upgrade's adoption of the memfd.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ratelimit.h"

static uint64_t
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int
setup(void **state)
{
    (void)state;
    return ratelimit_open(4096);
}

static int
teardown(void **state)
{
    (void)state;
    ratelimit_close();
    return 0;
}

static void
test_keys(void **state)
{
    const uint8_t v4[4] = {192, 0, 2, 1}, v4b[4] = {192, 0, 2, 2};
    const uint8_t mapped[16] = {0, 0, 0,    0,    0,   0, 0, 0,
                                0, 0, 0xff, 0xff, 192, 0, 2, 1};
    uint8_t a[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2,
                     9,    9,    9,    9,    9, 9, 9, 9};
    uint8_t b[16];

    (void)state;
    assert_true(ratelimit_key(4, v4) != ratelimit_key(4, v4b));
    assert_true(ratelimit_key(4, v4) == ratelimit_key(6, mapped));
    memcpy(b, a, 16);
    b[15] = 1; /* same /64 */
    assert_true(ratelimit_key(6, a) == ratelimit_key(6, b));
    b[7] = 3; /* another /64 */
    assert_true(ratelimit_key(6, a) != ratelimit_key(6, b));
}

static void
test_bucket(void **state)
{
    struct ratelimit rl = {.rate = 10, .burst = 3};
    uint64_t t = now_us(), key = 0x1234, w;

    (void)state;
    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_take(&rl, key, t), 0);
    w = ratelimit_take(&rl, key, t);
    assert_true(w > 0 && w <= 100000);
    assert_int_equal(rl.stats.allowed, 3);
    assert_int_equal(rl.stats.limited, 1);
    /* one emission interval later: exactly one more */
    assert_int_equal(ratelimit_take(&rl, key, t + 100000), 0);
    assert_true(ratelimit_take(&rl, key, t + 100000) > 0);
    /* another client is not affected */
    assert_int_equal(ratelimit_take(&rl, key + 1, t), 0);
    /* long idle: a full bucket again, not more */
    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_take(&rl, key, t + 10000000), 0);
    assert_true(ratelimit_take(&rl, key, t + 10000000) > 0);
    /* rate 0: off */
    rl.rate = 0;
    assert_int_equal(ratelimit_take(&rl, key, t + 10000000), 0);
}

/* Children take from one key at once; the sum allowed is the burst. */
static void
test_shared_budget(void **state)
{
    enum { KIDS = 4, TRIES = 2000, BURST = 500 };
    int fds[2], total = 0;
    pid_t kids[KIDS];
    uint64_t key = 0xfeedULL;

    (void)state;
    assert_int_equal(pipe(fds), 0);
    for (int k = 0; k < KIDS; k++) {
        kids[k] = fork();
        assert_true(kids[k] >= 0);
        if (kids[k] == 0) {
            /* 1 per hour: nothing refills during the test */
            struct ratelimit rl = {.rate = 1, .burst = BURST};
            uint64_t t = now_us();
            int allowed = 0;
            for (int i = 0; i < TRIES; i++)
                allowed += ratelimit_take(&rl, key, t) == 0;
            if (write(fds[1], &allowed, sizeof(allowed)) != sizeof(allowed))
                _exit(1);
            _exit(0);
        }
    }
    for (int k = 0; k < KIDS; k++) {
        int n = 0, st;
        assert_int_equal(read(fds[0], &n, sizeof(n)), sizeof(n));
        total += n;
        assert_int_equal(waitpid(kids[k], &st, 0), kids[k]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(total, BURST);
}

/* A process killed while taking leaves no slot unusable. */
static void
test_killed_taker(void **state)
{
    struct ratelimit rl = {.rate = 1000, .burst = 5};
    uint64_t key = 0xdeadULL;
    int st, go[2];
    pid_t kid;

    (void)state;
    assert_int_equal(pipe(go), 0);
    kid = fork();
    assert_true(kid >= 0);
    if (kid == 0) {
        struct ratelimit krl = {.rate = 1000, .burst = 5};
        char ch = 1;
        if (write(go[1], &ch, 1) != 1)
            _exit(1);
        for (;;)
            (void)ratelimit_take(&krl, key + (now_us() & 7), now_us());
    }
    {
        char ch;
        assert_int_equal(read(go[0], &ch, 1), 1);
    }
    usleep(20000);
    assert_int_equal(kill(kid, SIGKILL), 0);
    assert_int_equal(waitpid(kid, &st, 0), kid);
    assert_true(WIFSIGNALED(st));
    close(go[0]);
    close(go[1]);
    /* the keys it used still work: a bucket refills within 5 ms */
    for (uint64_t k = 0; k < 8; k++) {
        uint64_t t = now_us() + 10000;
        assert_int_equal(ratelimit_take(&rl, key + k, t), 0);
    }
}

static void
test_table_full(void **state)
{
    struct ratelimit rl = {.rate = 1, .burst = 1};
    uint64_t t;

    (void)state;
    ratelimit_close();
    assert_int_equal(ratelimit_open(64), 0);
    t = now_us();
    /* 64 slots, each client's bucket empty for a second: the 65th and
     * later find no slot and are let through, counted */
    for (uint64_t k = 1; k <= 200; k++)
        assert_int_equal(ratelimit_take(&rl, k, t), 0);
    assert_true(rl.stats.table_full >= 200 - 64);
    assert_int_equal(rl.stats.limited, 0);
    /* a second later every bucket is full again: slots are reusable */
    rl.stats.table_full = 0;
    for (uint64_t k = 1000; k < 1064; k++)
        (void)ratelimit_take(&rl, k, t + 2000000);
    assert_true(rl.stats.table_full < 64);
}

/* The new binary maps the old one's table: a spent budget stays spent;
 * another ratelimit_slots gets a refusal (and a fresh table). */
static void
test_adopt_keeps_budget(void **state)
{
    struct ratelimit rl = {.rate = 1, .burst = 3};
    char why[200] = "";
    uint64_t t = now_us();
    int fd;

    (void)state;
    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_take(&rl, 77, t), 0);
    assert_true(ratelimit_take(&rl, 77, t) > 0);
    fd = dup(ratelimit_fd()); /* what the exec'd binary inherits */
    assert_true(fd >= 0);
    ratelimit_close(); /* the old mapping goes with the exec */
    assert_int_equal(ratelimit_adopt(fd, 4096, why, sizeof(why)), 0);
    assert_int_equal(ratelimit_fd(), fd);
    assert_true(ratelimit_take(&rl, 77, t) > 0);
    assert_int_equal(ratelimit_take(&rl, 78, t), 0); /* others unaffected */
    /* the adopted descriptor with another size: refused, closed */
    fd = dup(ratelimit_fd());
    ratelimit_close();
    assert_int_equal(ratelimit_adopt(fd, 64, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "size differs"));
    assert_int_equal(fcntl(fd, F_GETFD), -1);
    assert_int_equal(ratelimit_open(4096), 0); /* fresh: full buckets */
    assert_int_equal(ratelimit_take(&rl, 77, t), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test_setup_teardown(test_bucket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_taker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_table_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopt_keeps_budget, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
