/*
 * test_cache.c - the shared cache's rules in one process: hit and miss,
 * validated copies, invalidation, the stale-fill race (a ticket older than
 * an invalidation or a flush), TTL, eviction in a full set, too-large
 * bodies, the master's reclaim of a writer killed mid-claim, and a binary
 * upgrade's adoption of the memfd (or refusal, and the hold of a fresh
 * cache).  The
 * multi-process stress and SIGKILL runs are tests/cache_torture.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "cache.h"
#include "response.h"

static void
fill(struct cache *c, uint32_t kind, uint64_t id, const char *body,
     struct cache_stats *st)
{
    struct cache_ticket t;
    cache_ticket(c, kind, id, &t);
    assert_int_equal(cache_put(c, &t, 200, body, strlen(body), 0, 0, st), 0);
}

static long
get(struct cache *c, uint32_t kind, uint64_t id, char *buf, size_t cap,
    struct cache_stats *st)
{
    int status = 0;
    long n = cache_get(c, kind, id, 0, buf, cap, &status, st);
    if (n >= 0)
        assert_int_equal(status, 200);
    return n;
}

static void
test_open_refuses_tiny(void **state)
{
    (void)state;
    assert_null(cache_open(1024));
}

static void
test_hit_miss_invalidate(void **state)
{
    struct cache *c = cache_open(1 << 20);
    struct cache_stats st;
    char buf[CACHE_BODY_MAX];
    long n;

    (void)state;
    memset(&st, 0, sizeof(st));
    assert_non_null(c);
    assert_ptr_equal(cache_shared(), c);
    assert_int_equal(get(c, CACHE_USER, 1, buf, sizeof(buf), &st), -1);
    fill(c, CACHE_USER, 1, "{\"id\":1}", &st);
    n = get(c, CACHE_USER, 1, buf, sizeof(buf), &st);
    assert_int_equal(n, 8);
    assert_memory_equal(buf, "{\"id\":1}", 8);
    /* the same id of another kind is another key */
    assert_int_equal(get(c, CACHE_ORDER, 1, buf, sizeof(buf), &st), -1);
    /* a buffer too small is a miss, never a partial copy */
    assert_int_equal(get(c, CACHE_USER, 1, buf, 4, &st), -1);
    cache_invalidate(c, CACHE_USER, 1, &st);
    assert_int_equal(get(c, CACHE_USER, 1, buf, sizeof(buf), &st), -1);
    fill(c, CACHE_USER, 1, "{\"id\":1,\"v\":2}", &st);
    assert_int_equal(get(c, CACHE_USER, 1, buf, sizeof(buf), &st), 14);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 4);
    assert_int_equal(st.inserts, 2);
    assert_int_equal(st.invalidations, 1);
    cache_close(&c);
    assert_null(c);
}

static void
test_stale_fill_refused(void **state)
{
    struct cache *c = cache_open(1 << 20);
    struct cache_stats st;
    struct cache_ticket t;
    char buf[CACHE_BODY_MAX];

    (void)state;
    memset(&st, 0, sizeof(st));
    /* a miss takes its ticket, a write invalidates, the old row arrives */
    cache_ticket(c, CACHE_ORDER, 7, &t);
    cache_invalidate(c, CACHE_ORDER, 7, &st);
    assert_int_equal(cache_put(c, &t, 200, "old", 3, 0, 0, &st), -1);
    assert_int_equal(st.stale_fills_refused, 1);
    assert_int_equal(get(c, CACHE_ORDER, 7, buf, sizeof(buf), &st), -1);
    /* the same after a flush (a reconnect) */
    cache_ticket(c, CACHE_ORDER, 7, &t);
    cache_flush(c, &st);
    assert_int_equal(cache_put(c, &t, 200, "old", 3, 0, 0, &st), -1);
    assert_int_equal(st.stale_fills_refused, 2);
    /* a fresh ticket fills */
    fill(c, CACHE_ORDER, 7, "new", &st);
    assert_int_equal(get(c, CACHE_ORDER, 7, buf, sizeof(buf), &st), 3);
    cache_close(&c);
}

static void
test_flush_hides_everything(void **state)
{
    struct cache *c = cache_open(1 << 20);
    char buf[CACHE_BODY_MAX];

    (void)state;
    for (uint64_t id = 1; id <= 100; id++)
        fill(c, CACHE_USER, id, "{}", NULL);
    cache_flush(c, NULL);
    for (uint64_t id = 1; id <= 100; id++)
        assert_int_equal(get(c, CACHE_USER, id, buf, sizeof(buf), NULL), -1);
    cache_close(&c);
}

static void
test_ttl(void **state)
{
    struct cache *c = cache_open(1 << 20);
    struct cache_ticket t;
    char buf[CACHE_BODY_MAX];
    int status;

    (void)state;
    cache_ticket(c, CACHE_USER, 5, &t);
    assert_int_equal(cache_put(c, &t, 200, "x", 1, 100, 1000, NULL), 0);
    assert_int_equal(
        cache_get(c, CACHE_USER, 5, 1099, buf, sizeof(buf), &status, NULL), 1);
    assert_int_equal(
        cache_get(c, CACHE_USER, 5, 1100, buf, sizeof(buf), &status, NULL), -1);
    cache_close(&c);
}

static void
test_eviction_and_size(void **state)
{
    struct cache *c = cache_open(CACHE_MIN_BYTES);
    struct cache_stats st;
    char big[CACHE_BODY_MAX + 1];
    char buf[CACHE_BODY_MAX];
    struct cache_ticket t;
    uint64_t cap = cache_capacity(c), hits = 0;

    (void)state;
    memset(&st, 0, sizeof(st));
    memset(big, 'x', sizeof(big));
    cache_ticket(c, CACHE_USER, 1, &t);
    assert_int_equal(cache_put(c, &t, 200, big, sizeof(big), 0, 0, &st), -1);
    assert_int_equal(st.not_stored, 1);
    /* four times the capacity: every put lands, the oldest are evicted */
    for (uint64_t id = 1; id <= 4 * cap; id++)
        fill(c, CACHE_USER, id, "{\"x\":1}", &st);
    assert_true(st.evictions >= 3 * cap - CACHE_WAYS);
    for (uint64_t id = 1; id <= 4 * cap; id++)
        hits += get(c, CACHE_USER, id, buf, sizeof(buf), NULL) >= 0;
    assert_true(hits <= cap);
    assert_true(hits >= cap / 2);
    assert_int_equal(cache_busy_slots(c, 0), 0);
    cache_close(&c);
}

/*
 * The hit path's one copy: cache_view() then response_write() straight
 * into an output queue, validated before the commit.  A writer that
 * claims the slot in between makes the write commit nothing.
 */
static void
test_view_copy_validated_before_commit(void **state)
{
    struct cache *c = cache_open(1 << 20);
    struct bufpool pool;
    struct outq q;
    struct cache_view v;
    struct response resp;
    long n;

    (void)state;
    bufpool_init(&pool, 16384, 4);
    outq_init(&q);
    fill(c, CACHE_USER, 3, "{\"id\":3}", NULL);
    assert_true(cache_view(c, CACHE_USER, 3, 0, &v, NULL));
    assert_int_equal(v.len, 8);
    assert_int_equal(v.status, 200);
    resp = (struct response){.status = v.status,
                             .body = v.body,
                             .body_len = v.len,
                             .keep_alive = true,
                             .valid = cache_view_valid,
                             .valid_arg = &v};
    /* another writer replaces the entry after the view was taken */
    fill(c, CACHE_USER, 3, "{\"id\":3,\"x\":1}", NULL);
    assert_int_equal(response_write(&q, &pool, &resp), -2);
    assert_int_equal(q.bytes, 0);
    /* a fresh view commits, body included */
    assert_true(cache_view(c, CACHE_USER, 3, 0, &v, NULL));
    resp.body = v.body;
    resp.body_len = v.len;
    n = response_write(&q, &pool, &resp);
    assert_true(n > (long)v.len);
    assert_int_equal(q.bytes, (uint64_t)n);
    assert_memory_equal(q.tail->data + q.tail->end - v.len,
                        "{\"id\":3,\"x\":1}", v.len);
    /* a miss counts as one */
    {
        struct cache_stats st = {0};
        assert_false(cache_view(c, CACHE_USER, 4, 0, &v, &st));
        assert_int_equal(st.misses, 1);
    }
    outq_clear(&q, &pool);
    bufpool_fini(&pool);
    cache_close(&c);
}

/* A writer stopped mid-write (between claim and publish) and killed. */
static void
test_killed_writer_reclaimed(void **state)
{
    struct cache *c = cache_open(CACHE_MIN_BYTES);
    char buf[CACHE_BODY_MAX];
    uint64_t cap = cache_capacity(c);
    int status;
    pid_t pid;

    (void)state;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* keeps filling; SIGSTOP then SIGKILL catches it wherever */
        for (uint64_t id = 1;; id++) {
            struct cache_ticket t;
            cache_ticket(c, CACHE_USER, id % (2 * cap) + 1, &t);
            (void)cache_put(c, &t, 200, "{\"a\":1}", 7, 0, 0, NULL);
        }
    }
    /* stop it until it is caught holding a claim (bounded tries) */
    for (int i = 0; i < 2000 && cache_busy_slots(c, 0) == 0; i++) {
        kill(pid, SIGCONT);
        usleep(100);
        kill(pid, SIGSTOP);
        usleep(1000);
    }
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    /* caught mid-write: readers pass the slot by, the master reclaims it */
    assert_int_equal(cache_busy_slots(c, 0), 1);
    assert_int_equal(cache_worker_gone(c, pid + 1), 0);
    assert_int_equal(cache_worker_gone(c, pid), 1);
    assert_int_equal(cache_reclaimed_total(c), 1);
    assert_int_equal(cache_busy_slots(c, 0), 0);
    /* every way usable again */
    for (uint64_t id = 1; id <= 4 * cap; id++)
        fill(c, CACHE_ORDER, id, "{\"b\":2}", NULL);
    assert_int_equal(cache_busy_slots(c, 0), 0);
    assert_int_equal(
        cache_get(c, CACHE_ORDER, 4 * cap, 0, buf, sizeof(buf), &status, NULL),
        7);
    cache_close(&c);
}

/* The new master's view of the old one's cache: the same entries, and an
 * invalidation through either mapping is seen through the other. */
static void
test_adopt_shares_entries(void **state)
{
    struct cache *old = cache_open(1 << 20), *neu;
    char buf[CACHE_BODY_MAX], why[200] = "";
    int fd;

    (void)state;
    fill(old, CACHE_USER, 9, "{\"id\":9}", NULL);
    fd = dup(cache_fd()); /* what the exec'd binary inherits */
    assert_true(fd >= 0);
    neu = cache_adopt(fd, 1 << 20, why, sizeof(why));
    assert_non_null(neu);
    assert_true(neu != old);
    assert_int_equal(cache_fd(), fd);
    assert_ptr_equal(cache_shared(), neu);
    assert_int_equal(get(neu, CACHE_USER, 9, buf, sizeof(buf), NULL), 8);
    cache_invalidate(neu, CACHE_USER, 9, NULL);
    assert_int_equal(get(old, CACHE_USER, 9, buf, sizeof(buf), NULL), -1);
    fill(old, CACHE_ORDER, 3, "x", NULL);
    assert_int_equal(get(neu, CACHE_ORDER, 3, buf, sizeof(buf), NULL), 1);
    cache_close(&neu);
    assert_int_equal(fcntl(fd, F_GETFD), -1); /* closed with it */
    cache_close(&old);
}

static void
test_adopt_refuses_other_geometry(void **state)
{
    struct cache *c = cache_open(1 << 20);
    char why[200] = "";
    int fd, bad;
    uint32_t junk[4] = {0x12345678u, 1, 0, 0};

    (void)state;
    /* another cache_size */
    fd = dup(cache_fd());
    assert_null(cache_adopt(fd, 2 << 20, why, sizeof(why)));
    assert_non_null(strstr(why, "size differs"));
    assert_int_equal(fcntl(fd, F_GETFD), -1);
    assert_int_equal(errno, EBADF);
    /* another layout (magic) in a sealed memfd of the right size */
    bad = memfd_create("apiary-cache", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_true(bad >= 0);
    assert_int_equal(ftruncate(bad, 1 << 20), 0);
    assert_int_equal(fcntl(bad, F_ADD_SEALS, F_SEAL_SHRINK), 0);
    assert_int_equal(pwrite(bad, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
    assert_null(cache_adopt(bad, 1 << 20, why, sizeof(why)));
    assert_non_null(strstr(why, "layout differs"));
    /* not a sealed memfd */
    bad = memfd_create("x", MFD_CLOEXEC);
    assert_true(bad >= 0);
    assert_int_equal(ftruncate(bad, 1 << 20), 0);
    assert_null(cache_adopt(bad, 1 << 20, why, sizeof(why)));
    assert_non_null(strstr(why, "not a sealed"));
    /* the failed adoptions left the shared cache alone */
    assert_ptr_equal(cache_shared(), c);
    cache_close(&c);
}

/* A fresh cache held during an upgrade serves nothing, fills nothing,
 * and after the release no fill ticketed during the hold is served. */
static void
test_hold_then_release(void **state)
{
    struct cache *c = cache_open(1 << 20);
    struct cache_stats st;
    struct cache_ticket t;
    char buf[CACHE_BODY_MAX];

    (void)state;
    memset(&st, 0, sizeof(st));
    fill(c, CACHE_USER, 1, "held", &st);
    cache_hold(c);
    assert_true(cache_held(c));
    assert_int_equal(get(c, CACHE_USER, 1, buf, sizeof(buf), &st), -1);
    cache_ticket(c, CACHE_USER, 2, &t); /* a miss during the hold */
    assert_int_equal(cache_put(c, &t, 200, "old", 3, 0, 0, &st), -1);
    assert_int_equal(st.not_stored, 1);
    cache_release(c);
    assert_false(cache_held(c));
    /* both the entry from before the hold and the hold's ticket are
     * outdated by the release's flush */
    assert_int_equal(get(c, CACHE_USER, 1, buf, sizeof(buf), &st), -1);
    assert_int_equal(cache_put(c, &t, 200, "old", 3, 0, 0, &st), -1);
    fill(c, CACHE_USER, 2, "new", &st);
    assert_int_equal(get(c, CACHE_USER, 2, buf, sizeof(buf), &st), 3);
    cache_release(c); /* not held: nothing flushed */
    assert_int_equal(get(c, CACHE_USER, 2, buf, sizeof(buf), &st), 3);
    cache_close(&c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_refuses_tiny),
        cmocka_unit_test(test_hit_miss_invalidate),
        cmocka_unit_test(test_stale_fill_refused),
        cmocka_unit_test(test_flush_hides_everything),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_eviction_and_size),
        cmocka_unit_test(test_view_copy_validated_before_commit),
        cmocka_unit_test(test_killed_writer_reclaimed),
        cmocka_unit_test(test_adopt_shares_entries),
        cmocka_unit_test(test_adopt_refuses_other_geometry),
        cmocka_unit_test(test_hold_then_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
