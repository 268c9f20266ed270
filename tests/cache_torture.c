/*
 * cache_torture.c - multi-process stress, SIGKILL and speed runs of the
 * shared cache (shm/cache.c), without a server around it.
 *
 *   cache-torture stress PROCS SECONDS
 *       PROCS processes hammer a small cache (few sets: constant eviction
 *       and contention) with random get / put / invalidate of checksummed
 *       values.  A "database" in shared memory holds each key's version;
 *       a write bumps it, then invalidates, then publishes "invalidated up
 *       to v"; a fill takes its ticket, then reads the version (the
 *       database read), then puts.  Every get checks the body's checksum
 *       (torn reads) and that its version is not older than the key's
 *       completed invalidations (lost invalidations, stale fills).
 *   cache-torture kill KILLS
 *       writer processes are SIGKILLed at random moments, KILLS times in
 *       all, most of them in the middle of a write (the writer is stopped
 *       until it is caught holding a claim, at most 50 tries); the parent
 *       reaps each one and calls cache_worker_gone() as the master does
 *       (it reclaims the claims caught, unless the other writer, finding
 *       the owner gone, took the slot over first), and starts a new
 *       one.  A checker process reads all
 *       the time under a watchdog (a hang fails).  At the end no slot may
 *       be left claimed, every read validates, and every set takes a put.
 *   cache-torture bench PROCS SECONDS [none|mutex [KEYS]]
 *       raw operations per second, 95% gets on a warm 64 MiB cache of KEYS
 *       keys (default 50,000, 200-byte bodies); "mutex" wraps every
 *       operation in one process-shared mutex (the comparison).
 *
 * Prints one line of key=value figures; exits 1 on any failure.  Used by
 * `make unit` (short runs) and scripts/bench-cache (long ones).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"

#define NKEYS 4096u
#define MAX_PROCS 64

struct shared {
    _Atomic uint64_t version[NKEYS];     /* the "database" */
    _Atomic uint64_t invalidated[NKEYS]; /* invalidations completed up to */
    _Atomic uint64_t torn, stale, gets, hits, puts, ops, hangs;
    _Atomic int stop;
    pthread_mutex_t mu;
};

static struct shared *sh;

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint32_t
fnv(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

/* "key version filler... checksum": length varies with the version. */
static size_t
make_body(char *b, uint64_t key, uint64_t v)
{
    int n = snprintf(b, 64, "%llu %llu ", (unsigned long long)key,
                     (unsigned long long)v);
    size_t len = (size_t)n + 16 + (size_t)((key * 31 + v * 7) % 300);
    for (size_t i = (size_t)n; i < len; i++)
        b[i] = (char)('a' + (key + v + i) % 26);
    n = snprintf(b + len, 16, "#%08x", fnv(b, len));
    return len + (size_t)n;
}

/* 0 good; 1 torn; sets *v. */
static int
check_body(const char *b, long n, uint64_t key, uint64_t *v)
{
    unsigned long long k, ver;
    unsigned sum;

    if (n < 10 || b[n - 9] != '#')
        return 1;
    if (sscanf(b + n - 8, "%8x", &sum) != 1 || sum != fnv(b, (size_t)n - 9) ||
        sscanf(b, "%llu %llu ", &k, &ver) != 2 || k != key)
        return 1;
    *v = ver;
    return 0;
}

static void
do_get(struct cache *c, uint64_t key, struct cache_stats *st)
{
    char buf[CACHE_BODY_MAX];
    uint64_t floor = atomic_load(&sh->invalidated[key]), v;
    int status = 0;
    long n =
        cache_get(c, CACHE_USER, key + 1, 0, buf, sizeof(buf), &status, st);

    atomic_fetch_add_explicit(&sh->gets, 1, memory_order_relaxed);
    if (n < 0)
        return;
    atomic_fetch_add_explicit(&sh->hits, 1, memory_order_relaxed);
    if (status != 200 || check_body(buf, n, key, &v)) {
        atomic_fetch_add(&sh->torn, 1);
        return;
    }
    if (v < floor)
        atomic_fetch_add(&sh->stale, 1);
}

static void
do_fill(struct cache *c, uint64_t key, struct cache_stats *st)
{
    struct cache_ticket t;
    char body[CACHE_BODY_MAX];
    uint64_t v;
    size_t n;

    cache_ticket(c, CACHE_USER, key + 1, &t);
    v = atomic_load(&sh->version[key]); /* the database read */
    n = make_body(body, key, v);
    (void)cache_put(c, &t, 200, body, n, 0, 0, st);
    atomic_fetch_add_explicit(&sh->puts, 1, memory_order_relaxed);
}

static void
do_write(struct cache *c, uint64_t key, struct cache_stats *st)
{
    uint64_t v = atomic_fetch_add(&sh->version[key], 1) + 1;
    uint64_t cur;

    cache_invalidate(c, CACHE_USER, key + 1, st);
    cur = atomic_load(&sh->invalidated[key]);
    while (cur < v &&
           !atomic_compare_exchange_weak(&sh->invalidated[key], &cur, v))
        ;
}

static void
stress_child(struct cache *c, unsigned seed, unsigned nkeys)
{
    struct cache_stats st;
    uint64_t s = seed * 2654435761u + 1;

    memset(&st, 0, sizeof(st));
    while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
        uint64_t r = rnd(&s), key = (r >> 8) % nkeys;
        unsigned op = (unsigned)(r & 0xff);
        if (op < 200)
            do_get(c, key, &st);
        else if (op < 245)
            do_fill(c, key, &st);
        else
            do_write(c, key, &st);
    }
    _exit(0);
}

static int
stress(unsigned procs, double seconds)
{
    struct cache *c = cache_open(CACHE_MIN_BYTES); /* ~15 sets: contention */
    pid_t pids[MAX_PROCS];
    int rc = 0;

    if (c == NULL) {
        perror("cache_open");
        return 1;
    }
    for (unsigned i = 0; i < procs; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            stress_child(c, i + 1, 512);
    }
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&sh->stop, 1);
    for (unsigned i = 0; i < procs; i++) {
        int status;
        waitpid(pids[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            rc = 1;
    }
    printf("stress procs=%u gets=%llu hits=%llu puts=%llu torn=%llu "
           "stale=%llu busy_after=%llu\n",
           procs, (unsigned long long)sh->gets, (unsigned long long)sh->hits,
           (unsigned long long)sh->puts, (unsigned long long)sh->torn,
           (unsigned long long)sh->stale,
           (unsigned long long)cache_busy_slots(c, 0));
    if (sh->torn || sh->stale || sh->hits == 0 || cache_busy_slots(c, 0))
        rc = 1;
    cache_close(&c);
    return rc;
}

/* ---- kill ---- */

static void
writer_child(struct cache *c, unsigned seed)
{
    uint64_t s = seed * 2654435761u + 7;
    for (;;) {
        uint64_t r = rnd(&s), key = (r >> 8) % 256;
        if ((r & 0xff) < 230)
            do_fill(c, key, NULL);
        else
            do_write(c, key, NULL);
    }
}

static void
watchdog(int sig)
{
    (void)sig;
    atomic_fetch_add(&sh->hangs, 1);
    _exit(3);
}

static void
checker_child(struct cache *c)
{
    struct sigaction sa;
    uint64_t s = 99;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = watchdog;
    sigaction(SIGALRM, &sa, NULL);
    while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
        alarm(2); /* one get taking 2 s is a hang */
        for (int i = 0; i < 1000; i++)
            do_get(c, rnd(&s) % 256, NULL);
    }
    _exit(0);
}

static int
kill_run(unsigned kills)
{
    struct cache *c = cache_open(CACHE_MIN_BYTES);
    pid_t w[2], checker;
    uint64_t s = 12345, t0 = now_ns();
    unsigned reclaimed = 0, n = 0, mid_write = 0;
    int status, rc = 0;

    if (c == NULL) {
        perror("cache_open");
        return 1;
    }
    checker = fork();
    if (checker == 0)
        checker_child(c);
    for (unsigned i = 0; i < 2; i++) {
        w[i] = fork();
        if (w[i] == 0)
            writer_child(c, i + 1);
    }
    while (n < kills) {
        unsigned i = n % 2;
        usleep((useconds_t)(rnd(&s) % 3000));
        /* aim at the middle of a write: stop the writer until it is
         * caught holding a claim (bounded), then kill it there */
        for (int a = 0; a < 50; a++) {
            kill(w[i], SIGSTOP);
            waitpid(w[i], &status, WUNTRACED);
            if (cache_busy_slots(c, w[i]) > 0) {
                mid_write++;
                break;
            }
            kill(w[i], SIGCONT);
            usleep((useconds_t)(rnd(&s) % 200));
        }
        kill(w[i], SIGKILL);
        waitpid(w[i], &status, 0);
        reclaimed += cache_worker_gone(c, w[i]); /* as the master does */
        n++;
        w[i] = fork();
        if (w[i] == 0)
            writer_child(c, n + 3);
    }
    for (unsigned i = 0; i < 2; i++) {
        kill(w[i], SIGKILL);
        waitpid(w[i], &status, 0);
        reclaimed += cache_worker_gone(c, w[i]);
    }
    atomic_store(&sh->stop, 1);
    waitpid(checker, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        rc = 1;
    /* afterwards: nothing claimed, and every set takes a fresh value */
    {
        uint64_t busy = cache_busy_slots(c, 0), unusable = 0;
        for (uint64_t k = 0; k < 256; k++) {
            char b[CACHE_BODY_MAX];
            int st;
            do_write(c, k, NULL);
            do_fill(c, k, NULL);
            if (cache_get(c, CACHE_USER, k + 1, 0, b, sizeof(b), &st, NULL) < 0)
                unusable++;
        }
        printf("kill kills=%u mid_write=%u seconds=%.1f reclaimed=%u gets=%llu "
               "hits=%llu torn=%llu stale=%llu hangs=%llu busy_after=%llu "
               "unfillable_keys=%llu\n",
               kills, mid_write, (double)(now_ns() - t0) / 1e9, reclaimed,
               (unsigned long long)sh->gets, (unsigned long long)sh->hits,
               (unsigned long long)sh->torn, (unsigned long long)sh->stale,
               (unsigned long long)sh->hangs, (unsigned long long)busy,
               (unsigned long long)unusable);
        /* a key may share its set with 8 fresher keys: allow a few */
        if (sh->torn || sh->stale || sh->hangs || busy || unusable > 16 ||
            reclaimed > mid_write || (kills >= 20 && mid_write == 0))
            rc = 1;
    }
    cache_close(&c);
    return rc;
}

/* ---- bench ---- */

static void
bench_child(struct cache *c, unsigned seed, bool mutex, unsigned nkeys)
{
    struct cache_stats st;
    char buf[CACHE_BODY_MAX], body[CACHE_BODY_MAX];
    uint64_t s = seed * 2654435761u + 3, ops = 0;
    size_t blen = make_body(body, 0, 0);

    memset(&st, 0, sizeof(st));
    while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
        for (int i = 0; i < 256; i++) {
            uint64_t r = rnd(&s), key = (r >> 8) % nkeys + 1;
            int status;
            if (mutex)
                pthread_mutex_lock(&sh->mu);
            if ((r & 0xff) < 243) { /* 95% */
                (void)cache_get(c, CACHE_USER, key, 0, buf, sizeof(buf),
                                &status, &st);
            } else {
                struct cache_ticket t;
                cache_ticket(c, CACHE_USER, key, &t);
                (void)cache_put(c, &t, 200, body, blen, 0, 0, &st);
            }
            if (mutex)
                pthread_mutex_unlock(&sh->mu);
        }
        ops += 256;
    }
    atomic_fetch_add(&sh->ops, ops);
    atomic_fetch_add(&sh->hits, st.hits);
    atomic_fetch_add(&sh->gets, st.hits + st.misses);
    _exit(0);
}

static int
bench(unsigned procs, double seconds, bool mutex, unsigned nkeys)
{
    struct cache *c = cache_open(64ull << 20);
    pthread_mutexattr_t ma;
    pid_t pids[MAX_PROCS];
    char body[CACHE_BODY_MAX];
    size_t blen = make_body(body, 0, 0);
    uint64_t t0;

    if (c == NULL) {
        perror("cache_open");
        return 1;
    }
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&sh->mu, &ma);
    for (uint64_t k = 1; k <= nkeys; k++) { /* warm */
        struct cache_ticket t;
        cache_ticket(c, CACHE_USER, k, &t);
        (void)cache_put(c, &t, 200, body, blen, 0, 0, NULL);
    }
    t0 = now_ns();
    for (unsigned i = 0; i < procs; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            bench_child(c, i + 1, mutex, nkeys);
    }
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&sh->stop, 1);
    for (unsigned i = 0; i < procs; i++)
        waitpid(pids[i], NULL, 0);
    printf("bench procs=%u lock=%s keys=%u ops_per_s=%.0f hit_ratio=%.3f\n",
           procs, mutex ? "mutex" : "none", nkeys,
           (double)sh->ops / ((double)(now_ns() - t0) / 1e9),
           sh->gets ? (double)sh->hits / (double)sh->gets : 0.0);
    cache_close(&c);
    return 0;
}

int
main(int argc, char **argv)
{
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(sh, 0, sizeof(*sh));
    if (argc >= 4 && strcmp(argv[1], "stress") == 0) {
        unsigned p = (unsigned)atoi(argv[2]);
        return stress(p < 1 ? 1 : p > MAX_PROCS ? MAX_PROCS : p, atof(argv[3]));
    }
    if (argc >= 3 && strcmp(argv[1], "kill") == 0)
        return kill_run((unsigned)atoi(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "bench") == 0) {
        unsigned p = (unsigned)atoi(argv[2]);
        int k = argc >= 6 ? atoi(argv[5]) : 50000;
        if (p < 1 || p > MAX_PROCS)
            p = p < 1 ? 1 : MAX_PROCS;
        if (k < 1 || k > 100000)
            k = k < 1 ? 1 : 100000;
        return bench(p, atof(argv[3]),
                     argc >= 5 && strcmp(argv[4], "mutex") == 0, (unsigned)k);
    }
    fprintf(stderr, "usage: cache-torture stress PROCS SECONDS | kill KILLS | "
                    "bench PROCS SECONDS [none|mutex [KEYS]]\n");
    return 2;
}
