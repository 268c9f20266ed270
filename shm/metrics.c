/*
 * metrics.c - the metrics segment: creation, worker blocks, folding, and
 * the read-only reader.  Layout in metrics.h.
 *
 * Who writes what:
 *   header, route names   the master, before forking the workers that
 *                         use them (a route name is published before the
 *                         nroutes store that makes it visible: release);
 *   a worker block        its worker, every counter and gauge; the master
 *                         only when the block is free (assign, fold);
 *   the master block      the master.
 *
 * Memory ordering.  Every counter has exactly one writer at a time, so an
 * update is a relaxed load plus a relaxed store of an aligned 64-bit word
 * (METRICS_ADD): a plain "add to memory" on x86-64, no lock prefix, and
 * no reader ever sees half a value (aligned 64-bit stores are single-copy
 * atomic; the _Atomic type makes that a language guarantee too).  Readers
 * load each field relaxed: the fields of one snapshot are not one instant
 * (a request may be in requests_total before it is in the histogram); the
 * next snapshot catches up.  The one multi-field step that must look
 * atomic is the fold of a reaped worker into the master block, since the
 * reader adds both: the master makes fold_seq odd, adds the block to
 * "folded", zeroes and frees the block, then makes fold_seq even (seqlock,
 * release stores with fences); a reader that sees fold_seq odd or changed
 * across its copy takes the copy again (bounded: the master is the only
 * folder and a fold is a few microseconds).  The master cannot leave it
 * odd except by dying, and then the segment is stale anyway: a reader
 * gives up retrying after METRICS_READ_TRIES and marks its view
 * inconsistent, never spins forever.
 *
 * Crash story.  A worker killed at any instruction leaves its block with
 * every counter whole (each store is one word) and lacking at most the
 * request it was recording.  The block stays LIVE and readable until the
 * master reaps the worker and folds it (metrics_worker_gone()), so the
 * totals never go down.  Nothing in the segment is a lock, so no reader
 * or writer waits on a dead process.  A master killed with SIGKILL leaves
 * the name behind: the next master replaces it (new inode, new
 * generation), which readers notice (metrics_reader_stale()).
 *
 * Reader safety: the segment is input from another process.  Readers map
 * it read-only, check every size, count and offset against the mapping
 * (metrics_check(), fuzzed by tests/fuzz/fuzz_metrics_header.c) on a
 * private copy of the header that is all a snapshot then uses (the live
 * header may change after the check), and copy route names with bounds
 * and without trusting a NUL.
 */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bsd/stdlib.h>
#include <bsd/string.h>

#define METRICS_READ_TRIES 1000
#define ALIGN64(x) (((x) + 63) & ~(size_t)63)

/* The block the next forked worker attaches to (set by assign). */
static struct metrics *cur_seg;
static int cur_block = -1;

static uint64_t
realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

int
metrics_shm_name(const char *name, char *buf, size_t cap)
{
    int n;

    if (name == NULL || name[0] == '\0' || name[0] == '.' ||
        strlen(name) >= METRICS_NAME_MAX ||
        strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789_.-") != strlen(name))
        return -1;
    n = snprintf(buf, cap, "/apiary-%s-metrics", name);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static size_t
layout_offsets(unsigned nblocks, size_t *routes, size_t *master, size_t *blocks)
{
    size_t o = ALIGN64(sizeof(struct metrics_header));

    *routes = o;
    o = ALIGN64(o + sizeof(struct metrics_route_name) * METRICS_MAX_ROUTES);
    *master = o;
    o = ALIGN64(o + sizeof(struct metrics_master));
    *blocks = o;
    return o + sizeof(struct metrics_block) * nblocks;
}

size_t
metrics_size(unsigned nblocks)
{
    size_t r, m, b;
    return layout_offsets(nblocks, &r, &m, &b);
}

static void
set_route(struct metrics_route_name *rn, const char *method,
          const char *pattern)
{
    memset(rn, 0, sizeof(*rn));
    strlcpy(rn->method, method, sizeof(rn->method));
    strlcpy(rn->pattern, pattern, sizeof(rn->pattern));
}

void
metrics_layout(void *base, size_t size, const char *name, unsigned workers,
               unsigned nblocks, uint64_t generation, const char *version)
{
    struct metrics_header *h = base;
    struct metrics_route_name *rn;
    size_t routes, master, blocks;

    memset(base, 0, size);
    layout_offsets(nblocks, &routes, &master, &blocks);
    h->magic = METRICS_MAGIC;
    h->layout_version = METRICS_LAYOUT_VERSION;
    h->header_size = sizeof(*h);
    h->generation = generation;
    h->start_time_us = realtime_us();
    h->total_size = size;
    h->routes_offset = routes;
    h->master_offset = master;
    h->blocks_offset = blocks;
    h->nroutes_max = METRICS_MAX_ROUTES;
    h->route_size = sizeof(struct metrics_route_name);
    h->nblocks = nblocks;
    h->block_size = sizeof(struct metrics_block);
    h->master_size = sizeof(struct metrics_master);
    h->hist_buckets = HISTOGRAM_BUCKETS;
    h->workers = workers;
    strlcpy(h->name, name, sizeof(h->name));
    strlcpy(h->version, version, sizeof(h->version));
    rn = (struct metrics_route_name *)((char *)base + routes);
    set_route(&rn[METRICS_ROUTE_NONE], "-", "(no route)");
    set_route(&rn[METRICS_ROUTE_NOT_FOUND], "-", "(not found)");
    set_route(&rn[METRICS_ROUTE_NOT_ALLOWED], "-", "(method not allowed)");
    atomic_store_explicit(&h->master_pid, (int32_t)getpid(),
                          memory_order_relaxed);
    atomic_store_explicit(&h->nroutes, METRICS_ROUTE_FIRST,
                          memory_order_release);
}

static void
bind_parts(struct metrics *m)
{
    m->hdr = m->base;
    m->master =
        (struct metrics_master *)((char *)m->base + m->hdr->master_offset);
    m->blocks =
        (struct metrics_block *)((char *)m->base + m->hdr->blocks_offset);
}

int
metrics_create(struct metrics *m, const char *name, unsigned workers,
               const char *version)
{
    unsigned nblocks = 2 * workers + METRICS_SPARE_BLOCKS;
    uint64_t generation = 0;
    struct stat st;
    size_t size;
    int saved;

    memset(m, 0, sizeof(*m));
    m->fd = -1;
    if (metrics_shm_name(name, m->shm_name, sizeof(m->shm_name)) < 0) {
        errno = EINVAL;
        return -1;
    }
    if (nblocks > METRICS_MAX_BLOCKS)
        nblocks = METRICS_MAX_BLOCKS;
    size = metrics_size(nblocks);
    /*
     * A stale segment (a master killed with SIGKILL) or one of another
     * master of this name (a binary upgrade) is replaced, not reused:
     * readers of the old one keep their mapping and notice the new inode
     * and generation.
     */
    (void)shm_unlink(m->shm_name);
    m->fd = shm_open(m->shm_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (m->fd < 0)
        return -1;
    /* umask may have narrowed it; group read is the point */
    if (fchmod(m->fd, 0640) < 0 || ftruncate(m->fd, (off_t)size) < 0 ||
        fstat(m->fd, &st) < 0)
        goto fail;
    m->base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
    if (m->base == MAP_FAILED) {
        m->base = NULL;
        goto fail;
    }
    m->size = size;
    m->dev = st.st_dev;
    m->ino = st.st_ino;
    while (generation == 0)
        arc4random_buf(&generation, sizeof(generation));
    metrics_layout(m->base, size, name, workers, nblocks, generation, version);
    bind_parts(m);
    return 0;
fail:
    saved = errno;
    (void)close(m->fd);
    m->fd = -1;
    (void)shm_unlink(m->shm_name);
    errno = saved;
    return -1;
}

unsigned
metrics_route_add(struct metrics *m, const char *method, const char *pattern)
{
    struct metrics_route_name *rn;
    uint32_t n;

    if (m == NULL || m->hdr == NULL)
        return METRICS_ROUTE_NONE;
    rn = (struct metrics_route_name *)((char *)m->base + m->hdr->routes_offset);
    n = atomic_load_explicit(&m->hdr->nroutes, memory_order_relaxed);
    for (uint32_t i = METRICS_ROUTE_FIRST; i < n; i++)
        if (strncmp(rn[i].method, method, sizeof(rn[i].method)) == 0 &&
            strncmp(rn[i].pattern, pattern, sizeof(rn[i].pattern)) == 0)
            return i;
    if (n >= METRICS_MAX_ROUTES)
        return METRICS_ROUTE_NONE;
    set_route(&rn[n], method, pattern);
    atomic_store_explicit(&m->hdr->nroutes, n + 1, memory_order_release);
    return n;
}

unsigned
metrics_route_find(const struct metrics *m, const char *method,
                   const char *pattern)
{
    const struct metrics_route_name *rn;
    uint32_t n;

    if (m == NULL || m->hdr == NULL)
        return METRICS_ROUTE_NONE;
    rn = (const struct metrics_route_name *)((const char *)m->base +
                                             m->hdr->routes_offset);
    n = atomic_load_explicit(&m->hdr->nroutes, memory_order_acquire);
    for (uint32_t i = METRICS_ROUTE_FIRST; i < n && i < METRICS_MAX_ROUTES; i++)
        if (strncmp(rn[i].method, method, sizeof(rn[i].method)) == 0 &&
            strncmp(rn[i].pattern, pattern, sizeof(rn[i].pattern)) == 0)
            return i;
    return METRICS_ROUTE_NONE;
}

int
metrics_worker_assign(struct metrics *m, unsigned slot, uint32_t generation)
{
    cur_seg = m;
    cur_block = -1;
    if (m == NULL || m->hdr == NULL)
        return -1;
    for (uint32_t i = 0; i < m->hdr->nblocks; i++) {
        struct metrics_block *b = &m->blocks[i];
        if (atomic_load_explicit(&b->state, memory_order_relaxed) !=
            METRICS_BLOCK_FREE)
            continue;
        /* free blocks are all zero (layout, or zeroed by the fold) */
        b->slot = slot;
        b->generation = generation;
        atomic_store_explicit(&b->pid, 0, memory_order_relaxed);
        atomic_store_explicit(&b->started_us, realtime_us(),
                              memory_order_relaxed);
        atomic_store_explicit(&b->state, METRICS_BLOCK_LIVE,
                              memory_order_release);
        cur_block = (int)i;
        return (int)i;
    }
    return -1;
}

void
metrics_worker_pid(struct metrics *m, int block, pid_t pid)
{
    if (m == NULL || m->hdr == NULL || block < 0 ||
        (uint32_t)block >= m->hdr->nblocks)
        return;
    atomic_store_explicit(&m->blocks[block].pid, (int32_t)pid,
                          memory_order_relaxed);
}

/* dst += src, field by field; src is zeroed.  Master only. */
static void
fold_counters(struct metrics_counters *dst, struct metrics_counters *src)
{
    _Atomic uint64_t *d = (_Atomic uint64_t *)dst;
    _Atomic uint64_t *s = (_Atomic uint64_t *)src;
    size_t n = sizeof(*dst) / sizeof(uint64_t);

    for (size_t i = 0; i < n; i++) {
        uint64_t v = atomic_load_explicit(&s[i], memory_order_relaxed);
        if (v == 0)
            continue;
        METRICS_ADD(d[i], v);
        atomic_store_explicit(&s[i], 0, memory_order_relaxed);
    }
}

void
metrics_worker_gone(struct metrics *m, pid_t pid, unsigned slot,
                    uint32_t generation, int block)
{
    struct metrics_block *b;
    uint64_t seq;

    (void)pid;
    (void)slot;
    (void)generation;
    if (m == NULL || m->hdr == NULL || block < 0 ||
        (uint32_t)block >= m->hdr->nblocks)
        return;
    b = &m->blocks[block];
    if (atomic_load_explicit(&b->state, memory_order_relaxed) !=
        METRICS_BLOCK_LIVE)
        return;
    seq = atomic_load_explicit(&m->master->fold_seq, memory_order_relaxed);
    atomic_store_explicit(&m->master->fold_seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst); /* odd before the moves */
    fold_counters(&m->master->folded, &b->c);
    memset((void *)&b->g, 0, sizeof(b->g));
    atomic_store_explicit(&b->pid, 0, memory_order_relaxed);
    atomic_store_explicit(&b->started_us, 0, memory_order_relaxed);
    atomic_store_explicit(&b->heartbeat_us, 0, memory_order_relaxed);
    b->slot = 0;
    b->generation = 0;
    atomic_store_explicit(&b->state, METRICS_BLOCK_FREE, memory_order_relaxed);
    METRICS_INC(m->master->workers_folded);
    atomic_store_explicit(&m->master->fold_seq, seq + 2, memory_order_release);
}

void
metrics_count_restart(struct metrics *m)
{
    if (m && m->master)
        METRICS_INC(m->master->worker_restarts);
}

void
metrics_count_reload(struct metrics *m)
{
    if (m && m->master)
        METRICS_INC(m->master->reloads);
}

void
metrics_master_log_dropped(struct metrics *m, uint64_t n)
{
    if (m && m->master)
        METRICS_SET(m->master->log_dropped, n);
}

void
metrics_destroy(struct metrics *m)
{
    struct stat st;
    int fd;

    if (m->base == NULL)
        return;
    atomic_store_explicit(&m->hdr->master_pid, 0, memory_order_release);
    /* unlink only our own: a newer master may have taken the name */
    fd = shm_open(m->shm_name, O_RDONLY | O_CLOEXEC, 0);
    if (fd >= 0) {
        if (fstat(fd, &st) == 0 && st.st_dev == m->dev && st.st_ino == m->ino)
            (void)shm_unlink(m->shm_name);
        (void)close(fd);
    }
    (void)munmap(m->base, m->size);
    if (m->fd >= 0)
        (void)close(m->fd);
    m->base = NULL;
    m->hdr = NULL;
    m->master = NULL;
    m->blocks = NULL;
    m->fd = -1;
}

struct metrics_block *
metrics_worker_block(void)
{
    if (cur_seg == NULL || cur_seg->hdr == NULL || cur_block < 0)
        return NULL;
    return &cur_seg->blocks[cur_block];
}

struct metrics *
metrics_worker_segment(void)
{
    return cur_seg && cur_seg->hdr ? cur_seg : NULL;
}

/* ---- reader ---- */

static int diagf(char *diag, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
diagf(char *diag, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (cap) {
        va_start(ap, fmt);
        vsnprintf(diag, cap, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* [off, off + n * size) lies within len, 64-byte aligned, no overflow. */
static bool
fits(uint64_t off, uint64_t n, uint64_t size, size_t len)
{
    if (off % 64 != 0 || off > len)
        return false;
    if (size != 0 && n > (UINT64_MAX - off) / size)
        return false;
    return off + n * size <= len;
}

/* The checks of metrics_check() on a header h (a private copy). */
static int
check_header(const struct metrics_header *h, size_t len, char *diag, size_t cap)
{
    if (h->magic != METRICS_MAGIC)
        return diagf(diag, cap, "not an apiary metrics segment (bad magic)");
    if (h->layout_version != METRICS_LAYOUT_VERSION)
        return diagf(diag, cap,
                     "layout version %u, this reader understands %u: use "
                     "the apiarystat of the running apiaryd",
                     h->layout_version, METRICS_LAYOUT_VERSION);
    if (h->header_size != sizeof(*h) ||
        h->route_size != sizeof(struct metrics_route_name) ||
        h->block_size != sizeof(struct metrics_block) ||
        h->master_size != sizeof(struct metrics_master) ||
        h->hist_buckets != HISTOGRAM_BUCKETS ||
        h->nroutes_max != METRICS_MAX_ROUTES)
        return diagf(diag, cap, "segment layout sizes do not match");
    if (h->nblocks == 0 || h->nblocks > METRICS_MAX_BLOCKS)
        return diagf(diag, cap, "bad block count %u", h->nblocks);
    if (h->total_size > len)
        return diagf(diag, cap, "segment truncated (%zu of %llu bytes)", len,
                     (unsigned long long)h->total_size);
    if (h->routes_offset < sizeof(*h) ||
        !fits(h->routes_offset, METRICS_MAX_ROUTES,
              sizeof(struct metrics_route_name), len) ||
        !fits(h->master_offset, 1, sizeof(struct metrics_master), len) ||
        !fits(h->blocks_offset, h->nblocks, sizeof(struct metrics_block),
              len) ||
        h->master_offset <
            h->routes_offset +
                sizeof(struct metrics_route_name) * METRICS_MAX_ROUTES ||
        h->blocks_offset < h->master_offset + sizeof(struct metrics_master))
        return diagf(diag, cap, "segment offsets out of range");
    return 0;
}

/*
 * Copies the header at base into *copy and checks the copy: the writer
 * (or anyone with write access to the segment) may change the header
 * after a check, so what is used is what was checked, never the live
 * header read again.
 */
static int
header_copy(const void *base, size_t len, struct metrics_header *copy,
            char *diag, size_t cap)
{
    memset(copy, 0, sizeof(*copy));
    if (base == NULL || len < sizeof(*copy))
        return diagf(diag, cap, "segment too small (%zu bytes)", len);
    if ((uintptr_t)base % 64 != 0)
        return diagf(diag, cap, "segment not aligned");
    memcpy(copy, base, sizeof(*copy));
    return check_header(copy, len, diag, cap);
}

int
metrics_check(const void *base, size_t len, char *diag, size_t cap)
{
    struct metrics_header copy;

    return header_copy(base, len, &copy, diag, cap);
}

int
metrics_reader_open(struct metrics_reader *r, const char *name, char *diag,
                    size_t cap)
{
    struct stat st;
    void *p;
    int fd, saved;

    memset(r, 0, sizeof(*r));
    if (metrics_shm_name(name, r->shm_name, sizeof(r->shm_name)) < 0) {
        errno = EINVAL;
        return diagf(diag, cap, "bad instance name \"%s\"", name);
    }
    fd = shm_open(r->shm_name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) {
        saved = errno;
        if (saved == ENOENT)
            diagf(diag, cap,
                  "no apiaryd named \"%s\" is running (no /dev/shm%s)", name,
                  r->shm_name);
        else if (saved == EACCES)
            diagf(diag, cap,
                  "permission denied reading /dev/shm%s: it is readable by "
                  "its owner and group only (mode 0640); run as the "
                  "service user or a member of its group",
                  r->shm_name);
        else
            diagf(diag, cap, "shm_open(%s) failed: %s", r->shm_name,
                  strerror(saved));
        errno = saved;
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        saved = errno;
        (void)close(fd);
        errno = saved;
        return diagf(diag, cap, "fstat(%s) failed: %s", r->shm_name,
                     strerror(saved));
    }
    if (st.st_size < (off_t)sizeof(struct metrics_header)) {
        (void)close(fd);
        errno = EPROTO;
        return diagf(diag, cap, "%s is being created or is not a segment",
                     r->shm_name);
    }
    p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    saved = errno;
    (void)close(fd);
    if (p == MAP_FAILED) {
        errno = saved;
        return diagf(diag, cap, "mmap(%s) failed: %s", r->shm_name,
                     strerror(saved));
    }
    r->base = p;
    r->size = (size_t)st.st_size;
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    if (metrics_check(p, r->size, diag, cap) < 0) {
        metrics_reader_close(r);
        errno = EPROTO;
        return -1;
    }
    r->generation = ((const struct metrics_header *)p)->generation;
    return 0;
}

bool
metrics_reader_stale(const struct metrics_reader *r)
{
    const struct metrics_header *h = r->base;
    struct stat st;
    int fd, rc;

    if (h == NULL)
        return true;
    if (atomic_load_explicit(
            &((struct metrics_header *)(uintptr_t)h)->master_pid,
            memory_order_relaxed) == 0)
        return true;
    if (h->generation != r->generation)
        return true;
    fd = shm_open(r->shm_name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ENOENT; /* EACCES: the same segment, re-chmodded */
    rc = fstat(fd, &st);
    (void)close(fd);
    if (rc < 0)
        return false;
    return st.st_dev != r->dev || st.st_ino != r->ino;
}

void
metrics_reader_close(struct metrics_reader *r)
{
    if (r->base)
        (void)munmap((void *)(uintptr_t)r->base, r->size);
    r->base = NULL;
    r->size = 0;
}

static uint64_t
ld(const _Atomic uint64_t *p)
{
    return atomic_load_explicit((_Atomic uint64_t *)(uintptr_t)p,
                                memory_order_relaxed);
}

/* t += the counters of c (a worker block or the folded totals). */
static void
add_counters(struct metrics_totals *t, const struct metrics_counters *c)
{
#define METRICS_FIELD(f, p, h) t->f += ld(&c->f);
    METRICS_COUNTERS(METRICS_FIELD)
#undef METRICS_FIELD
    for (unsigned r = 0; r < METRICS_MAX_ROUTES; r++)
        for (unsigned k = 0; k < METRICS_CLASSES; k++)
            t->requests[r][k] += ld(&c->requests[r][k]);
    t->latency_count += ld(&c->latency_count);
    t->latency_sum_us += ld(&c->latency_sum_us);
    for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++)
        t->latency[i] += ld(&c->latency[i]);
}

static void
copy_name(char *dst, size_t cap, const char *src, size_t src_cap)
{
    size_t n = strnlen(src, src_cap);

    if (n >= cap)
        n = cap - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = src[i];
        if (ch < 0x20 || ch >= 0x7f)
            dst[i] = '?'; /* printable ASCII only: it ends up in labels */
    }
    dst[n] = '\0';
}

/*
 * One pass over the segment at base; h is the checked copy of its header
 * (geometry), live its header in the mapping (the atomics).
 */
static void
take(const char *base, const struct metrics_header *h,
     const struct metrics_header *live, struct metrics_snap *s)
{
    const struct metrics_master *mb =
        (const struct metrics_master *)(base + h->master_offset);
    const struct metrics_block *blocks =
        (const struct metrics_block *)(base + h->blocks_offset);
    const struct metrics_route_name *rn =
        (const struct metrics_route_name *)(base + h->routes_offset);
    uint32_t nroutes;

    memset(&s->t, 0, sizeof(s->t));
    s->nrows = 0;
    s->master_pid = atomic_load_explicit(
        &((struct metrics_header *)(uintptr_t)live)->master_pid,
        memory_order_relaxed);
    nroutes = atomic_load_explicit(
        &((struct metrics_header *)(uintptr_t)live)->nroutes,
        memory_order_acquire);
    s->nroutes = nroutes > METRICS_MAX_ROUTES ? METRICS_MAX_ROUTES : nroutes;
    for (unsigned i = 0; i < s->nroutes; i++) {
        copy_name(s->routes[i].method, sizeof(s->routes[i].method),
                  rn[i].method, sizeof(rn[i].method));
        copy_name(s->routes[i].pattern, sizeof(s->routes[i].pattern),
                  rn[i].pattern, sizeof(rn[i].pattern));
    }
    s->worker_restarts = ld(&mb->worker_restarts);
    s->reloads = ld(&mb->reloads);
    s->workers_folded = ld(&mb->workers_folded);
    s->master_log_dropped = ld(&mb->log_dropped);
    add_counters(&s->t, &mb->folded);
    s->t.log_dropped += s->master_log_dropped; /* the master's too */
    for (unsigned i = 0; i < h->nblocks && s->nrows < METRICS_MAX_BLOCKS; i++) {
        const struct metrics_block *b = &blocks[i];
        struct metrics_row *row;
        uint64_t req = 0;

        if (atomic_load_explicit(&((struct metrics_block *)(uintptr_t)b)->state,
                                 memory_order_acquire) != METRICS_BLOCK_LIVE)
            continue;
        add_counters(&s->t, &b->c);
#define METRICS_FIELD(f, p, hh) s->t.f += ld(&b->g.f);
        METRICS_GAUGES(METRICS_FIELD)
#undef METRICS_FIELD
        row = &s->rows[s->nrows++];
        memset(row, 0, sizeof(*row));
        row->block = i;
        row->slot = b->slot;
        row->generation = b->generation;
        row->pid = atomic_load_explicit(
            &((struct metrics_block *)(uintptr_t)b)->pid, memory_order_relaxed);
        row->started_us = ld(&b->started_us);
        row->heartbeat_us = ld(&b->heartbeat_us);
        for (unsigned r = 0; r < METRICS_MAX_ROUTES; r++)
            for (unsigned k = 0; k < METRICS_CLASSES; k++)
                req += ld(&b->c.requests[r][k]);
        row->requests = req;
        for (unsigned r = 0; r < METRICS_MAX_ROUTES; r++)
            row->errors_5xx += ld(&b->c.requests[r][4]);
        row->bytes_out = ld(&b->c.bytes_out);
        row->latency_count = ld(&b->c.latency_count);
        row->latency_sum_us = ld(&b->c.latency_sum_us);
        row->conn_accepted = ld(&b->c.conn_accepted);
        row->db_queries = ld(&b->c.db_queries);
        row->db_errors = ld(&b->c.db_errors);
        row->db_reconnects = ld(&b->c.db_reconnects);
        row->cache_hits = ld(&b->c.cache_hits);
        row->cache_misses = ld(&b->c.cache_misses);
#define METRICS_FIELD(f, p, hh) row->f = ld(&b->g.f);
        METRICS_GAUGES(METRICS_FIELD)
#undef METRICS_FIELD
    }
}

int
metrics_snapshot(const void *base, size_t len, struct metrics_snap *s,
                 char *diag, size_t cap)
{
    const struct metrics_header *live = base;
    const struct metrics_master *mb;
    struct metrics_header h;
    unsigned tries;

    if (header_copy(base, len, &h, diag, cap) < 0)
        return -1;
    mb = (const struct metrics_master *)((const char *)base + h.master_offset);
    s->generation = h.generation;
    s->start_time_us = h.start_time_us;
    s->workers = h.workers;
    s->nblocks = h.nblocks;
    copy_name(s->name, sizeof(s->name), h.name, sizeof(h.name));
    copy_name(s->version, sizeof(s->version), h.version, sizeof(h.version));
    s->consistent = false;
    for (tries = 0; tries < METRICS_READ_TRIES; tries++) {
        _Atomic uint64_t *seqp = (_Atomic uint64_t *)(uintptr_t)&mb->fold_seq;
        uint64_t s1 = atomic_load_explicit(seqp, memory_order_acquire), s2;
        if (s1 & 1)
            continue;
        take(base, &h, live, s);
        atomic_thread_fence(memory_order_acquire);
        s2 = atomic_load_explicit(seqp, memory_order_relaxed);
        if (s1 == s2) {
            s->consistent = true;
            break;
        }
    }
    if (!s->consistent)
        take(base, &h, live, s);
    s->taken_us = realtime_us();
    return 0;
}

double
metrics_hit_ratio(uint64_t hits, uint64_t misses)
{
    if (hits + misses == 0)
        return -1;
    return (double)hits / (double)(hits + misses);
}
