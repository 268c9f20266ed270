/*
 * test_buf.c - chunk pools and the output queue: recycling without
 * allocating, oversize chunks, max_free, reserve/commit/append across chunk
 * boundaries, and outq_write() into a socketpair that fills up.
 */
#include <errno.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"

#define CHUNK 256

/* The number of chunks in q, and checks q->bytes against them. */
static unsigned
count_chunks(const struct outq *q)
{
    unsigned n = 0;
    uint64_t bytes = 0;
    const struct chunk *c, *last = NULL;

    for (c = q->head; c; c = c->next) {
        assert_true(c->start <= c->end);
        assert_true(c->end <= c->cap);
        bytes += c->end - c->start;
        last = c;
        n++;
    }
    assert_ptr_equal(last, q->tail);
    assert_int_equal(bytes, q->bytes);
    return n;
}

/* Byte i of the test stream: not periodic in CHUNK, so a misplaced
 * chunk or offset shows. */
static char
pattern(size_t i)
{
    return (char)('a' + (i * 7 + i / 251) % 26);
}

static void
fill(char *p, size_t from, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pattern(from + i);
}

/* ---- the pool ---- */

static void
test_pool_recycles(void **state)
{
    struct bufpool p;
    struct chunk *c[4];
    uint64_t allocs;

    (void)state;
    bufpool_init(&p, CHUNK, 8);
    allocs = buf_allocs;
    for (int i = 0; i < 4; i++) {
        c[i] = bufpool_get(&p, i == 0 ? 0 : CHUNK);
        assert_non_null(c[i]);
        assert_int_equal(c[i]->cap, CHUNK);
        assert_int_equal(c[i]->start, 0);
        assert_int_equal(c[i]->end, 0);
        assert_null(c[i]->next);
    }
    assert_int_equal(buf_allocs, allocs + 4);
    for (int i = 0; i < 4; i++) {
        c[i]->start = 3;
        c[i]->end = 10;
        bufpool_put(&p, &c[i]);
        assert_null(c[i]);
    }
    assert_int_equal(p.nfree, 4);
    /* steady state: get and put many times, allocate nothing */
    for (int round = 0; round < 1000; round++) {
        for (int i = 0; i < 4; i++) {
            c[i] = bufpool_get(&p, 100);
            assert_non_null(c[i]);
            assert_int_equal(c[i]->start, 0); /* reset on reuse */
            assert_int_equal(c[i]->end, 0);
        }
        for (int i = 0; i < 4; i++)
            bufpool_put(&p, &c[i]);
    }
    assert_int_equal(buf_allocs, allocs + 4);
    assert_int_equal(p.nfree, 4);
    bufpool_put(&p, &c[0]); /* NULL: a no-op */
    assert_int_equal(p.nfree, 4);
    bufpool_fini(&p);
    assert_int_equal(p.nfree, 0);
    assert_null(p.free_list);
}

static void
test_pool_oversize(void **state)
{
    struct bufpool p;
    struct chunk *c, *big;
    uint64_t allocs;

    (void)state;
    bufpool_init(&p, CHUNK, 8);
    c = bufpool_get(&p, CHUNK);
    bufpool_put(&p, &c);
    allocs = buf_allocs;
    /* larger than the standard size: fresh, exact, never pooled */
    big = bufpool_get(&p, CHUNK + 1);
    assert_non_null(big);
    assert_int_equal(big->cap, CHUNK + 1);
    assert_int_equal(buf_allocs, allocs + 1);
    assert_int_equal(p.nfree, 1); /* the pooled one was not taken */
    memset(big->data, 'x', CHUNK + 1);
    bufpool_put(&p, &big);
    assert_null(big);
    assert_int_equal(p.nfree, 1);
    /* beyond what a chunk header can describe */
    assert_null(bufpool_get(&p, (size_t)UINT32_MAX));
    assert_int_equal(buf_allocs, allocs + 1);
    bufpool_fini(&p);
}

static void
test_pool_max_free(void **state)
{
    struct bufpool p;
    struct chunk *c[5];
    uint64_t allocs;

    (void)state;
    bufpool_init(&p, CHUNK, 2);
    for (int i = 0; i < 5; i++)
        c[i] = bufpool_get(&p, CHUNK);
    for (int i = 0; i < 5; i++)
        bufpool_put(&p, &c[i]); /* three are freed (valgrind checks) */
    assert_int_equal(p.nfree, 2);
    allocs = buf_allocs;
    for (int i = 0; i < 3; i++)
        c[i] = bufpool_get(&p, CHUNK);
    assert_int_equal(buf_allocs, allocs + 1);
    assert_int_equal(p.nfree, 0);
    for (int i = 0; i < 3; i++)
        bufpool_put(&p, &c[i]);
    assert_int_equal(p.nfree, 2);
    bufpool_fini(&p);

    bufpool_init(&p, CHUNK, 0); /* a pool that keeps nothing */
    c[0] = bufpool_get(&p, 1);
    bufpool_put(&p, &c[0]);
    assert_int_equal(p.nfree, 0);
    assert_null(p.free_list);
    bufpool_fini(&p);
}

/* ---- filling the queue ---- */

static void
test_reserve_commit(void **state)
{
    struct bufpool p;
    struct outq q;
    char *w;

    (void)state;
    bufpool_init(&p, CHUNK, 8);
    outq_init(&q);
    assert_int_equal(count_chunks(&q), 0);

    w = outq_reserve(&q, &p, 100);
    assert_non_null(w);
    memset(w, 'a', 60);
    outq_commit(&q, 60); /* less than reserved */
    assert_int_equal(q.bytes, 60);
    assert_int_equal(count_chunks(&q), 1);

    w = outq_reserve(&q, &p, CHUNK - 60); /* exactly the room left */
    assert_ptr_equal(w, q.head->data + 60);
    memset(w, 'b', CHUNK - 60);
    outq_commit(&q, CHUNK - 60);
    assert_int_equal(count_chunks(&q), 1);
    assert_int_equal(q.head->end, CHUNK);

    w = outq_reserve(&q, &p, 1); /* full: a new chunk */
    assert_int_equal(count_chunks(&q), 2);
    assert_ptr_equal(w, q.tail->data);
    *w = 'c';
    outq_commit(&q, 1);

    /* 200 fit in the 255 bytes left: the same chunk */
    w = outq_reserve(&q, &p, 200);
    assert_ptr_equal(w, q.tail->data + 1);
    outq_commit(&q, 0);
    /* CHUNK do not: a new chunk, the rest of the tail stays unused */
    w = outq_reserve(&q, &p, CHUNK);
    assert_int_equal(count_chunks(&q), 3);
    assert_ptr_equal(w, q.tail->data);
    memset(w, 'd', CHUNK);
    outq_commit(&q, CHUNK);
    assert_int_equal(q.bytes, CHUNK + 1 + CHUNK);
    assert_int_equal(count_chunks(&q), 3);

    outq_clear(&q, &p);
    assert_int_equal(p.nfree, 3);
    bufpool_fini(&p);
}

static void
test_append_spans_chunks(void **state)
{
    struct bufpool p;
    struct outq q;
    char src[CHUNK * 3 + 17];
    size_t at = 0;
    const struct chunk *c;
    uint64_t allocs;

    (void)state;
    bufpool_init(&p, CHUNK, 8);
    outq_init(&q);
    fill(src, 0, sizeof(src));
    assert_int_equal(outq_append(&q, &p, src, 0), 0); /* nothing: no chunk */
    assert_null(q.head);
    assert_int_equal(outq_append(&q, &p, src, 10), 0);
    assert_int_equal(outq_append(&q, &p, src + 10, sizeof(src) - 10), 0);
    assert_int_equal(q.bytes, sizeof(src));
    assert_int_equal(count_chunks(&q), 4);
    for (c = q.head; c; c = c->next) {
        if (c->next)
            assert_int_equal(c->end, CHUNK); /* every chunk but the last full */
        assert_memory_equal(c->data + c->start, src + at, c->end - c->start);
        at += c->end - c->start;
    }
    assert_int_equal(at, sizeof(src));
    outq_clear(&q, &p);
    assert_null(q.head);
    assert_null(q.tail);
    assert_int_equal(q.bytes, 0);
    assert_int_equal(p.nfree, 4);
    /* refilled from the pool */
    allocs = buf_allocs;
    assert_int_equal(outq_append(&q, &p, src, sizeof(src)), 0);
    assert_int_equal(buf_allocs, allocs);
    outq_clear(&q, &p);
    outq_clear(&q, &p); /* twice: harmless */
    bufpool_fini(&p);
}

/* ---- writing ---- */

static void
socket_pair(int sv[2], int sndbuf_bytes)
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv),
                     0);
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf_bytes,
                                sizeof(sndbuf_bytes)),
                     0);
}

/* Reads what is there, checking it continues the pattern at *at. */
static size_t
drain(int fd, size_t *at)
{
    char b[4096];
    size_t total = 0;
    ssize_t r;

    while ((r = read(fd, b, sizeof(b))) > 0) {
        for (ssize_t i = 0; i < r; i++)
            assert_int_equal(b[i], pattern(*at + (size_t)i));
        *at += (size_t)r;
        total += (size_t)r;
    }
    assert_int_equal(r, -1);
    assert_int_equal(errno, EAGAIN);
    return total;
}

static void
test_write_empty(void **state)
{
    struct bufpool p;
    struct outq q;
    int sv[2];

    (void)state;
    bufpool_init(&p, CHUNK, 8);
    outq_init(&q);
    socket_pair(sv, 4096);
    assert_int_equal(outq_write(&q, sv[0], &p), 0);
    /* a reservation never committed leaves an empty chunk: dropped */
    assert_non_null(outq_reserve(&q, &p, 10));
    assert_int_equal(outq_write(&q, sv[0], &p), 0);
    assert_null(q.head);
    assert_null(q.tail);
    assert_int_equal(p.nfree, 1);
    assert_int_equal(close(sv[0]), 0);
    assert_int_equal(close(sv[1]), 0);
    bufpool_fini(&p);
}

/*
 * More than the socket takes and more chunks than one writev() carries:
 * partial writes, EAGAIN with nothing written, every chunk back in the
 * pool once sent, and the reader sees the exact stream.
 */
static void
test_write_full_socket(void **state)
{
    enum { TOTAL = 300 * 1000 };
    struct bufpool p;
    struct outq q;
    char *src = malloc(TOTAL);
    size_t sent = 0, received = 0;
    unsigned nchunks, eagains = 0, partial = 0;
    uint64_t allocs;
    ssize_t w;
    int sv[2];

    (void)state;
    assert_non_null(src);
    fill(src, 0, TOTAL);
    bufpool_init(&p, CHUNK, 100000);
    outq_init(&q);
    socket_pair(sv, 4096);
    allocs = buf_allocs;
    assert_int_equal(outq_append(&q, &p, src, TOTAL), 0);
    nchunks = count_chunks(&q);
    assert_int_equal(nchunks, (TOTAL + CHUNK - 1) / CHUNK);
    assert_true(nchunks > 64);
    assert_int_equal(buf_allocs, allocs + nchunks);

    while (q.bytes > 0) {
        w = outq_write(&q, sv[0], &p);
        if (w < 0) {
            assert_int_equal(errno, EAGAIN);
            eagains++;
        } else {
            assert_true(w > 0);
            sent += (size_t)w;
            if (q.head && q.head->start > 0)
                partial++; /* stopped inside a chunk */
        }
        assert_int_equal(q.bytes, TOTAL - sent);
        /* chunks fully sent are back in the pool, none lost */
        assert_int_equal(count_chunks(&q) + p.nfree, nchunks);
        /* the socket is full now: another write takes nothing */
        if (q.bytes > 0 && w > 0) {
            assert_int_equal(outq_write(&q, sv[0], &p), -1);
            assert_int_equal(errno, EAGAIN);
        }
        drain(sv[1], &received);
        assert_int_equal(received, sent);
    }
    assert_int_equal(sent, TOTAL);
    assert_true(eagains == 0); /* drained before every call after the first */
    assert_true(partial > 0);
    assert_null(q.head);
    assert_null(q.tail);
    assert_int_equal(p.nfree, nchunks);
    assert_int_equal(buf_allocs, allocs + nchunks);
    assert_int_equal(outq_write(&q, sv[0], &p), 0);

    assert_int_equal(close(sv[0]), 0);
    assert_int_equal(close(sv[1]), 0);
    bufpool_fini(&p);
    free(src);
}

/* Output left unsent (the client went away) goes back with outq_clear. */
static void
test_clear_unsent(void **state)
{
    struct bufpool p;
    struct outq q;
    char src[CHUNK * 40];
    ssize_t w;
    int sv[2];

    (void)state;
    fill(src, 0, sizeof(src));
    bufpool_init(&p, CHUNK, 100);
    outq_init(&q);
    socket_pair(sv, 4096);
    assert_int_equal(outq_append(&q, &p, src, sizeof(src)), 0);
    w = outq_write(&q, sv[0], &p);
    assert_true(w > 0 && (size_t)w < sizeof(src));
    assert_int_equal(q.bytes, sizeof(src) - (size_t)w);
    outq_clear(&q, &p);
    assert_int_equal(q.bytes, 0);
    assert_null(q.head);
    assert_int_equal(p.nfree, 40);
    assert_int_equal(close(sv[0]), 0);
    assert_int_equal(close(sv[1]), 0);
    bufpool_fini(&p);
}

/* The peer is gone: the error comes back, nothing is consumed. */
static void
test_write_error_keeps_queue(void **state)
{
    struct bufpool p;
    struct outq q;
    char src[CHUNK * 2];
    int sv[2];

    (void)state;
    /* as in the worker: EPIPE, not a signal */
    assert_true(signal(SIGPIPE, SIG_IGN) != SIG_ERR);
    fill(src, 0, sizeof(src));
    bufpool_init(&p, CHUNK, 8);
    outq_init(&q);
    socket_pair(sv, 4096);
    assert_int_equal(close(sv[1]), 0);
    assert_int_equal(outq_append(&q, &p, src, sizeof(src)), 0);
    errno = 0;
    assert_int_equal(outq_write(&q, sv[0], &p), -1);
    assert_int_equal(errno, EPIPE);
    assert_int_equal(q.bytes, sizeof(src));
    assert_int_equal(count_chunks(&q), 2);
    outq_clear(&q, &p);
    assert_int_equal(close(sv[0]), 0);
    bufpool_fini(&p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_recycles),
        cmocka_unit_test(test_pool_oversize),
        cmocka_unit_test(test_pool_max_free),
        cmocka_unit_test(test_reserve_commit),
        cmocka_unit_test(test_append_spans_chunks),
        cmocka_unit_test(test_write_empty),
        cmocka_unit_test(test_write_full_socket),
        cmocka_unit_test(test_clear_unsent),
        cmocka_unit_test(test_write_error_keeps_queue),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
