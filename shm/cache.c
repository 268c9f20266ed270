/*
 * cache.c - the shared response cache; the interface is in cache.h.
 *
 * The mapping, who makes it, how it crosses a binary upgrade.  The cache
 * is one memfd ("apiary-cache", close-on-exec, sealed against shrinking
 * and growing, so no holder can truncate it under a mapping: no SIGBUS),
 * mapped MAP_SHARED.  The master makes it before its first fork
 * (cache_open()) and keeps the descriptor; every worker of every
 * generation inherits the mapping by fork.  On USR2 the old master
 * clears close-on-exec on that descriptor only in the child it execs and
 * names it in APIARY_CACHE_FD, as it does for the listening sockets
 * (server/master.c); the new master checks the header against what its
 * own binary and its own cache_size would make (cache_adopt(): magic,
 * layout version, slot size, ways, sets, size, the file's size and
 * seal) and maps the same pages, so while old and new workers overlap a
 * write's invalidation by either is seen by both (SPEC 5), and entries
 * survive the upgrade.  If anything differs (another layout, another
 * cache_size, no descriptor: an old binary) the new master makes a fresh
 * cache and holds it (cache_hold(): every lookup misses, every fill is
 * skipped) until the old master is gone, i.e. its channel to the new
 * master closes after its workers are reaped; then cache_release()
 * flushes and serves.  That costs a cold cache for the overlap, never a
 * stale hit: an old worker's invalidation reaches only the old cache.
 * A rollback (HUP to the old master) changes nothing for the old master:
 * it never unmapped its cache.  The layout version changes whenever the
 * layout or the meaning of a field does (2: memfd, the hold word).
 *
 * Layout (the memfd, offsets from its start, no pointers inside):
 *
 *   0      struct cache_hdr (8192 bytes): magic, layout version, geometry,
 *          the flush epoch, the hold word, the count of slots reclaimed
 *          by the master, then the claim records: {writer pid, slot
 *          index + 1}, one per writing process (at most one claim each)
 *   8192   set 0: struct cache_meta (64 bytes)  | slot 0 | ... | slot 7 |
 *          set 1: ...                              (512 bytes per slot)
 *          ... nsets sets of 64 + 8 x 512 = 4160 bytes
 *
 *   struct cache_meta  epoch[8]: invalidation epochs of the set's 8 key
 *                      stripes; tag[8]: a hash fragment per way, a hint
 *                      that lets a lookup touch one slot, not eight
 *   struct cache_slot  ctl: the slot's control word (below); the key
 *                      (kind, id); status, len, expiry; the stamps (the
 *                      stripe epoch and flush epoch of the fill's ticket);
 *                      a CLOCK reference bit; then the body (448 bytes)
 *
 * A key hashes to one set (set-associative, like a CPU cache) and to one
 * of the set's 8 stripes.  Bodies larger than 448 bytes are not cached.
 *
 * The control word, 64 bits:  seq (31) | VALID (1) | owner pid (32)
 *   owner pid != 0   claimed: a writer is filling the slot (BUSY)
 *   owner 0, VALID   holds an entry that readers may serve (subject to
 *                    its stamps, below)
 *   owner 0, !VALID  empty
 * Every change of ctl adds one to seq, so a reader that sees the same ctl
 * before and after its copy knows nothing was written in between.
 *
 * Readers never wait, never see a torn value (cache_get): load ctl
 * (acquire); skip the slot if it is BUSY or not VALID (a miss, never a
 * spin: a writer that died there cannot hold a reader); compare the key;
 * check the stamps and the expiry; copy the body; acquire fence; load ctl
 * again.  Equal: no writer claimed the slot during the copy, so the copy
 * is exactly what the last writer published.  Different: try again, at
 * most twice, then call it a miss.  The key, lengths and stamps are
 * relaxed atomics; the body is copied with memcpy, which can race with a
 * writer's memcpy: that copy is thrown away by the check (the seqlock
 * pattern; the length is clamped first, so even a torn length cannot read
 * outside the slot).
 *
 * Writers claim and publish with CAS (cache_put): pick a way (the key's
 * own entry, else an empty or outdated one, else a CLOCK victim: a way
 * whose reference bit is set gets it cleared and a second chance); claim
 * it with one CAS of ctl from the value seen to (seq+1, owner = own pid);
 * release fence; write key, stamps, status, length and body; publish with
 * one CAS to (seq+1, VALID, owner 0), release.  The value is complete
 * before the CAS that makes it visible, so no reader can see half of it.
 * A claim CAS that fails (another writer took the way) gives up: a fill
 * is only an optimisation.
 *
 * The stale-fill race, and why a per-key invalidation epoch: a GET that
 * missed reads the row, a PATCH commits and invalidates, then the GET's
 * fill arrives with the old row.  The miss takes a ticket (the key's
 * stripe epoch and the flush epoch) before it sends its query, and the
 * fill stamps the entry with the ticket's epochs, not the current ones.
 * cache_invalidate() adds one to the stripe epoch; cache_get() serves an
 * entry only if both stamps equal the current epochs.  A write's
 * invalidation runs after its commit, so an old row was read by a
 * statement that began before the invalidation, whose ticket is older
 * still: its entry is stamped with an outdated epoch and is never served,
 * whenever it is published; cache_put() also checks the ticket up front,
 * only to save the copy (stale_fills_refused).  Epochs are per stripe
 * (1/8 of a set, about one entry), not per key, so invalidation is one
 * atomic add with nothing to find or lock, and an invalidation of a key
 * that is not cached still defeats its fills in flight; the price is that
 * it also retires the few entries sharing its stripe.  Epochs are 32-bit;
 * a stamp could only come back to life after 2^32 invalidations of one
 * stripe while its entry stays untouched.
 *
 * Memory orders.  Readers: ctl acquire (pairs with the publish CAS's
 * release: the entry's fields are visible), fields relaxed, acquire fence
 * before the second ctl load (orders the copy before the check; pairs
 * with the writer's release fence after its claim: a reader that saw any
 * of the new writer's stores sees its claim in the second load).  The
 * epochs read by cache_get() are acquire loads; invalidate and flush are
 * seq_cst adds, and cache_ticket()/the put's pre-check are seq_cst loads,
 * so that a ticket taken after an invalidation returned sees it.  The
 * reference bit and the tags are relaxed hints: a stale value costs a
 * miss or a poorer victim, never a wrong answer.  The hold word: a lookup
 * loads it with acquire first; cache_release() adds one to the flush
 * epoch (seq_cst) before it stores 0 (release), so a reader that sees 0
 * sees the new flush epoch and serves nothing filled during the hold.
 *
 * Crash recovery (SIGKILL at any instruction): a reader holds nothing.  An
 * invalidation or flush is one atomic add: done or not.  A writer killed
 * after its claim leaves its slot BUSY with its pid: readers treat it as
 * a miss, writers pass it over; the master, when it reaps the worker,
 * calls cache_worker_gone(pid), which finds pid's claim record and CASes
 * the slot it names back to empty if pid still owns it (contracts.md 2:
 * claims are keyed by pid, which works across generations during a
 * reload, and across the two masters of a binary upgrade: pids are
 * unique among live processes, and each master reaps only its own).  A writer
 * stores the slot in its record before its claim CAS, so a record names every
 * slot its writer can own; one naming a slot the writer never got, or already
 * published, fails the owner check and is ignored.  The records make the
 * master's work O(records), a few kilobytes in the header page: it never walks,
 * nor faults in, the mapping.  A writer that finds a slot BUSY with an owner
 * that kill(pid, 0) says is gone takes it over the same way, and a writer that
 * finds no free record takes over a dead process's one, so the cache
 * heals even without a master (the stress test has none), and when a
 * master of an upgrade is killed with its workers (PDEATHSIG) the other
 * one's writers take the dead workers' slots and records over.  Nothing
 * a writer holds is ever waited for, and a half-written value is never
 * VALID, so there is nothing to repair: the seqlock whose dead writer
 * leaves readers spinning and the rwlock a dead reader holds forever
 * (SPEC 5) cannot happen here.  The master never writes entries, so its
 * death takes nothing down with it (its workers follow it, PDEATHSIG).
 *
 * Honest limits: an entry lives in one set of 8 ways, so 9 hot keys of one
 * set evict each other; eviction is CLOCK within the set, not global.  A
 * worker's fill and another worker's fill of the same key may both land
 * (two ways, the same fresh value); invalidation retires both.
 */
#include "cache.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CTL_PID_MASK 0xffffffffull
#define CTL_VALID (1ull << 32)
#define CTL_SEQ_ONE (1ull << 33)
#define CTL_SEQ_MASK (~((1ull << 33) - 1))
#define STRIPES 8u
#define HDR_BYTES 8192u
#define CLAIM_RECORDS ((HDR_BYTES - 64u) / 8u) /* 1016 writers */
#define READ_TRIES 3

struct cache_hdr {
    uint32_t magic;
    uint32_t layout;
    uint32_t slot_bytes;
    uint32_t ways;
    uint64_t nsets;
    uint64_t sets_off; /* offset of set 0 */
    uint64_t size;
    _Atomic uint32_t flush; /* flush epoch */
    _Atomic uint32_t hold;  /* != 0: serve nothing (cache_hold()) */
    _Atomic uint64_t reclaimed;
    char pad[8];
    struct cache_claim {
        _Atomic uint32_t pid;  /* 0: free */
        _Atomic uint32_t slot; /* index + 1 of the slot it may own; 0 */
    } claims[CLAIM_RECORDS];
};

struct cache_meta {
    _Atomic uint32_t epoch[STRIPES];
    _Atomic uint32_t tag[CACHE_WAYS];
};

struct cache_slot {
    _Atomic uint64_t ctl;
    _Atomic uint64_t id;
    _Atomic uint64_t expires_ms; /* 0: none */
    _Atomic uint32_t kind;
    _Atomic uint32_t len;
    _Atomic uint32_t status;
    _Atomic uint32_t epoch; /* stamps: the ticket's epochs */
    _Atomic uint32_t flush;
    _Atomic uint32_t ref; /* CLOCK reference bit */
    uint32_t pad[4];
    char body[CACHE_BODY_MAX];
};

struct cache_set {
    struct cache_meta meta;
    struct cache_slot slot[CACHE_WAYS];
};

_Static_assert(sizeof(struct cache_hdr) == HDR_BYTES, "header is 2 pages");
_Static_assert(offsetof(struct cache_hdr, claims) == 64, "header layout");
_Static_assert(offsetof(struct cache_hdr, flush) == 40, "header layout");
_Static_assert(offsetof(struct cache_hdr, hold) == 44, "header layout");
_Static_assert(offsetof(struct cache_hdr, reclaimed) == 48, "header layout");
_Static_assert(sizeof(struct cache_meta) == 64, "meta is one cache line");
_Static_assert(offsetof(struct cache_slot, body) == CACHE_SLOT_HEAD,
               "slot head");
_Static_assert(sizeof(struct cache_slot) == CACHE_SLOT_BYTES, "slot size");
_Static_assert(sizeof(struct cache_set) == 64 + CACHE_WAYS * CACHE_SLOT_BYTES,
               "set size");
_Static_assert(sizeof(_Atomic uint64_t) == 8 && sizeof(_Atomic uint32_t) == 4,
               "lock-free fixed-width atomics");

struct cache {
    struct cache_hdr hdr;
};

static struct cache *shared;

/* ---- helpers ---- */

static inline uint64_t
mix(uint32_t kind, uint64_t id)
{
    uint64_t z = id ^ ((uint64_t)kind * 0x9E3779B97F4A7C15ull);
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/*
 * This process's claim record (index + 1; 0: none yet) and its pid (0:
 * not known yet).  Both are forgotten in a forked child (forked(),
 * registered by cache_open()), so a worker never writes under its
 * master's pid, and the put path needs no getpid() system call.
 */
static unsigned my_claim;
static pid_t my_pid;

static void
forked(void)
{
    my_claim = 0;
    my_pid = 0;
}

static int claim_record(struct cache *c, uint32_t pid);

static inline struct cache_set *
set_at(struct cache *c, uint64_t i)
{
    return (struct cache_set *)((char *)c + c->hdr.sets_off +
                                i * sizeof(struct cache_set));
}

static inline void
locate(const struct cache *c, uint32_t kind, uint64_t id, uint32_t *set,
       uint32_t *stripe, uint32_t *tag)
{
    uint64_t h = mix(kind, id);
    *set = (uint32_t)(((h & 0xffffffffull) * c->hdr.nsets) >> 32);
    *stripe = (uint32_t)(h >> 32) & (STRIPES - 1);
    *tag = (uint32_t)(h >> 35) | 1u;
}

static inline bool
is_busy(uint64_t ctl)
{
    return (ctl & CTL_PID_MASK) != 0;
}

static inline bool
is_valid(uint64_t ctl)
{
    return !is_busy(ctl) && (ctl & CTL_VALID);
}

static inline uint64_t
next_ctl(uint64_t ctl, bool valid, uint32_t pid)
{
    return ((ctl & CTL_SEQ_MASK) + CTL_SEQ_ONE) | (valid ? CTL_VALID : 0) | pid;
}

/* ---- life ---- */

/*
 * The descriptor of the shared cache's memfd (-1: none), kept open by the
 * master so that a binary upgrade can hand it to the new binary.
 */
static int shared_fd = -1;

/* Sets per size, clamped so that slot indexes fit 32 bits; 0: too small. */
static uint64_t
sets_for(uint64_t size_bytes)
{
    uint64_t nsets;

    if (size_bytes < CACHE_MIN_BYTES)
        return 0;
    nsets = (size_bytes - HDR_BYTES) / sizeof(struct cache_set);
    if (nsets > UINT32_MAX / CACHE_WAYS - 1)
        nsets = UINT32_MAX / CACHE_WAYS - 1;
    return nsets;
}

/* Maps fd (bytes long) and makes it the shared cache.  NULL, errno set. */
static struct cache *
map_shared(int fd, uint64_t bytes)
{
    static bool atfork_done;
    void *p;

    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (!atfork_done) {
        if (pthread_atfork(NULL, NULL, forked) != 0) {
            (void)munmap(p, bytes);
            errno = ENOMEM;
            return NULL;
        }
        atfork_done = true;
    }
    if (shared_fd >= 0)
        (void)close(shared_fd); /* an earlier cache: no longer handed on */
    shared_fd = fd;
    shared = p;
    return p;
}

struct cache *
cache_open(uint64_t size_bytes)
{
    struct cache *c;
    uint64_t nsets = sets_for(size_bytes);
    int fd, e;

    if (nsets == 0) {
        errno = EINVAL;
        return NULL;
    }
    size_bytes = HDR_BYTES + nsets * sizeof(struct cache_set);
    fd = memfd_create("apiary-cache", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return NULL;
    if (ftruncate(fd, (off_t)size_bytes) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        goto fail;
    c = map_shared(fd, size_bytes);
    if (c == NULL)
        goto fail;
    /* fresh memfd pages are zero: every slot empty, no hold */
    c->hdr.magic = CACHE_MAGIC;
    c->hdr.layout = CACHE_LAYOUT_VERSION;
    c->hdr.slot_bytes = CACHE_SLOT_BYTES;
    c->hdr.ways = CACHE_WAYS;
    c->hdr.nsets = nsets;
    c->hdr.sets_off = HDR_BYTES;
    c->hdr.size = size_bytes;
    return c;
fail:
    e = errno;
    (void)close(fd);
    errno = e;
    return NULL;
}

struct cache *
cache_adopt(int fd, uint64_t size_bytes, char *why, size_t cap)
{
    const struct cache_hdr *h;
    uint64_t nsets = sets_for(size_bytes), want;
    struct cache *c;
    struct stat sb;
    void *p;
    int seals;

    want = HDR_BYTES + nsets * sizeof(struct cache_set);
    seals = fcntl(fd, F_GET_SEALS);
    if (nsets == 0 || fstat(fd, &sb) < 0 || seals < 0 ||
        !(seals & F_SEAL_SHRINK) || sb.st_size < (off_t)HDR_BYTES) {
        snprintf(why, cap, "descriptor %d is not a sealed cache memfd", fd);
        goto refuse;
    }
    /* the header alone first: the rest may be another size */
    p = mmap(NULL, HDR_BYTES, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(why, cap, "mmap(): %s", strerror(errno));
        goto refuse;
    }
    h = p;
    if (h->magic != CACHE_MAGIC || h->layout != CACHE_LAYOUT_VERSION ||
        h->slot_bytes != CACHE_SLOT_BYTES || h->ways != CACHE_WAYS ||
        h->sets_off != HDR_BYTES) {
        snprintf(why, cap,
                 "its layout differs (magic %#x, layout %u; this binary "
                 "has %#x, %u)",
                 h->magic, h->layout, CACHE_MAGIC, CACHE_LAYOUT_VERSION);
        (void)munmap(p, HDR_BYTES);
        goto refuse;
    }
    if (h->nsets != nsets || h->size != want || sb.st_size != (off_t)want) {
        snprintf(why, cap,
                 "its size differs (%llu bytes; cache_size here gives "
                 "%llu)",
                 (unsigned long long)h->size, (unsigned long long)want);
        (void)munmap(p, HDR_BYTES);
        goto refuse;
    }
    (void)munmap(p, HDR_BYTES);
    c = map_shared(fd, want);
    if (c == NULL) {
        snprintf(why, cap, "mmap(): %s", strerror(errno));
        goto refuse;
    }
    return c;
refuse:
    (void)close(fd);
    return NULL;
}

int
cache_fd(void)
{
    return shared_fd;
}

void
cache_hold(struct cache *c)
{
    atomic_store(&c->hdr.hold, 1);
}

void
cache_release(struct cache *c)
{
    if (c == NULL || atomic_load(&c->hdr.hold) == 0)
        return;
    atomic_fetch_add(&c->hdr.flush, 1); /* every fill of the hold retires */
    atomic_store_explicit(&c->hdr.hold, 0, memory_order_release);
}

bool
cache_held(const struct cache *c)
{
    return atomic_load_explicit(&c->hdr.hold, memory_order_acquire) != 0;
}

void
cache_close(struct cache **cp)
{
    struct cache *c = *cp;

    if (c == NULL)
        return;
    if (shared == c) {
        shared = NULL;
        if (shared_fd >= 0)
            (void)close(shared_fd);
        shared_fd = -1;
    }
    (void)munmap(c, c->hdr.size);
    *cp = NULL;
}

struct cache *
cache_shared(void)
{
    return shared;
}

uint64_t
cache_capacity(const struct cache *c)
{
    return c->hdr.nsets * CACHE_WAYS;
}

/* ---- readers ---- */

/*
 * The first half of a read: finds (kind, id) in a stable, valid, current
 * slot and fills v (the slot's ctl as seen, its status, length and body
 * address).  The caller copies v->body and then asks view_valid().
 * false: a miss.
 */
static bool
view_begin(struct cache *c, uint32_t kind, uint64_t id, uint64_t now_ms,
           struct cache_view *v)
{
    uint32_t set, stripe, tag;
    struct cache_set *s;

    if (atomic_load_explicit(&c->hdr.hold, memory_order_acquire))
        return false; /* a fresh cache while an old master's workers run */
    locate(c, kind, id, &set, &stripe, &tag);
    s = set_at(c, set);
    for (unsigned w = 0; w < CACHE_WAYS; w++) {
        struct cache_slot *sl = &s->slot[w];
        uint64_t c1, exp;
        uint32_t len;

        if (atomic_load_explicit(&s->meta.tag[w], memory_order_relaxed) != tag)
            continue;
        c1 = atomic_load_explicit(&sl->ctl, memory_order_acquire);
        if (!is_valid(c1) ||
            atomic_load_explicit(&sl->id, memory_order_relaxed) != id ||
            atomic_load_explicit(&sl->kind, memory_order_relaxed) != kind)
            continue;
        if (atomic_load_explicit(&sl->epoch, memory_order_relaxed) !=
                atomic_load_explicit(&s->meta.epoch[stripe],
                                     memory_order_acquire) ||
            atomic_load_explicit(&sl->flush, memory_order_relaxed) !=
                atomic_load_explicit(&c->hdr.flush, memory_order_acquire))
            continue; /* invalidated after its ticket */
        exp = atomic_load_explicit(&sl->expires_ms, memory_order_relaxed);
        len = atomic_load_explicit(&sl->len, memory_order_relaxed);
        if ((exp && now_ms >= exp) || len > CACHE_BODY_MAX)
            continue;
        if (!atomic_load_explicit(&sl->ref, memory_order_relaxed))
            atomic_store_explicit(&sl->ref, 1, memory_order_relaxed);
        v->body = sl->body;
        v->len = len;
        v->status =
            (int)atomic_load_explicit(&sl->status, memory_order_relaxed);
        v->ctl = &sl->ctl;
        v->seen = c1;
        return true;
    }
    return false;
}

bool
cache_view_valid(void *view)
{
    const struct cache_view *v = view;

    /* orders the caller's copy before the second load (see the top) */
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit((const _Atomic uint64_t *)v->ctl,
                                memory_order_relaxed) == v->seen;
}

bool
cache_view(struct cache *c, uint32_t kind, uint64_t id, uint64_t now_ms,
           struct cache_view *v, struct cache_stats *st)
{
    if (view_begin(c, kind, id, now_ms, v))
        return true;
    if (st)
        st->misses++;
    return false;
}

long
cache_get(struct cache *c, uint32_t kind, uint64_t id, uint64_t now_ms,
          char *dst, size_t cap, int *status, struct cache_stats *st)
{
    struct cache_view v;

    for (int attempt = 0; attempt < READ_TRIES; attempt++) {
        if (!view_begin(c, kind, id, now_ms, &v) || v.len > cap)
            break;
        memcpy(dst, v.body, v.len);
        if (!cache_view_valid(&v)) {
            if (st)
                st->retries++; /* changed under the copy: look again */
            continue;
        }
        *status = v.status;
        if (st)
            st->hits++;
        return (long)v.len;
    }
    if (st)
        st->misses++;
    return -1;
}

/* ---- writers ---- */

void
cache_ticket(struct cache *c, uint32_t kind, uint64_t id,
             struct cache_ticket *t)
{
    locate(c, kind, id, &t->set, &t->stripe, &t->tag);
    t->kind = kind;
    t->id = id;
    t->flush = atomic_load(&c->hdr.flush);
    t->epoch = atomic_load(&set_at(c, t->set)->meta.epoch[t->stripe]);
}

/* True when the entry in a stable, valid slot may no longer be served. */
static bool
outdated(struct cache *c, struct cache_set *s, struct cache_slot *sl)
{
    uint32_t set, stripe, tag;

    locate(c, atomic_load_explicit(&sl->kind, memory_order_relaxed),
           atomic_load_explicit(&sl->id, memory_order_relaxed), &set, &stripe,
           &tag);
    return atomic_load_explicit(&sl->epoch, memory_order_relaxed) !=
               atomic_load_explicit(&s->meta.epoch[stripe],
                                    memory_order_relaxed) ||
           atomic_load_explicit(&sl->flush, memory_order_relaxed) !=
               atomic_load_explicit(&c->hdr.flush, memory_order_relaxed);
}

/* A BUSY slot whose owner is gone (not even a zombie). */
static bool
owner_dead(uint64_t ctl)
{
    pid_t pid = (pid_t)(ctl & CTL_PID_MASK);
    return kill(pid, 0) < 0 && errno == ESRCH;
}

/*
 * Picks the way to write for t: the key's own valid entry, else an empty
 * or outdated way (or one whose dead writer we take over), else a CLOCK
 * victim.  Returns the way and its ctl in *seen, or -1 if all are busy.
 */
static int
pick_way(struct cache *c, struct cache_set *s, const struct cache_ticket *t,
         uint64_t *seen, bool *evicts, bool *steals)
{
    static unsigned hand; /* per process: CLOCK needs no shared hand */
    int free_way = -1;
    uint64_t free_ctl = 0;

    *evicts = false;
    *steals = false;
    for (unsigned w = 0; w < CACHE_WAYS; w++) {
        struct cache_slot *sl = &s->slot[w];
        uint64_t ctl = atomic_load(&sl->ctl);

        if (is_busy(ctl)) {
            if (free_way < 0 && owner_dead(ctl)) {
                free_way = (int)w;
                free_ctl = ctl;
                *steals = true;
            }
            continue;
        }
        if (!(ctl & CTL_VALID)) {
            if (free_way < 0 || *steals) {
                free_way = (int)w;
                free_ctl = ctl;
                *steals = false;
            }
            continue;
        }
        if (atomic_load_explicit(&sl->id, memory_order_relaxed) == t->id &&
            atomic_load_explicit(&sl->kind, memory_order_relaxed) == t->kind) {
            *seen = ctl;
            *steals = false;
            return (int)w; /* replace the key's own entry */
        }
        if (free_way < 0 && outdated(c, s, sl)) {
            free_way = (int)w;
            free_ctl = ctl;
        }
    }
    if (free_way >= 0) {
        *seen = free_ctl;
        return free_way;
    }
    for (unsigned i = 0; i < 2 * CACHE_WAYS; i++) {
        unsigned w = hand++ % CACHE_WAYS;
        struct cache_slot *sl = &s->slot[w];
        uint64_t ctl = atomic_load(&sl->ctl);

        if (is_busy(ctl))
            continue;
        if (atomic_load_explicit(&sl->ref, memory_order_relaxed)) {
            atomic_store_explicit(&sl->ref, 0, memory_order_relaxed);
            continue;
        }
        *seen = ctl;
        *evicts = (ctl & CTL_VALID) != 0;
        return (int)w;
    }
    return -1;
}

int
cache_put(struct cache *c, const struct cache_ticket *t, int status,
          const char *body, size_t len, uint32_t ttl_ms, uint64_t now_ms,
          struct cache_stats *st)
{
    struct cache_set *s;
    struct cache_slot *sl;
    uint64_t seen = 0, mine, pub;
    bool evicts, steals;
    uint32_t pid;
    int w, rec;

    if (len > CACHE_BODY_MAX || t->set >= c->hdr.nsets ||
        atomic_load_explicit(&c->hdr.hold, memory_order_relaxed)) {
        if (st)
            st->not_stored++;
        return -1;
    }
    s = set_at(c, t->set);
    if (atomic_load(&c->hdr.flush) != t->flush ||
        atomic_load(&s->meta.epoch[t->stripe]) != t->epoch) {
        if (st)
            st->stale_fills_refused++;
        return -1;
    }
    w = pick_way(c, s, t, &seen, &evicts, &steals);
    if (w < 0) {
        if (st)
            st->not_stored++;
        return -1;
    }
    sl = &s->slot[w];
    if (my_pid == 0)
        my_pid = getpid();
    pid = (uint32_t)my_pid;
    rec = claim_record(c, pid);
    if (rec < 0) {
        if (st)
            st->not_stored++; /* over CLAIM_RECORDS writers alive */
        return -1;
    }
    /* the record names the slot before the claim can exist (see the top) */
    atomic_store(&c->hdr.claims[rec].slot,
                 (uint32_t)(t->set * CACHE_WAYS + (unsigned)w + 1));
    mine = next_ctl(seen, false, pid);
    if (!atomic_compare_exchange_strong(&sl->ctl, &seen, mine)) {
        if (st)
            st->retries++; /* another writer took the way: skip this fill */
        return -1;
    }
    /* the claim is visible before any of the stores below (see the top) */
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&s->meta.tag[w], t->tag, memory_order_relaxed);
    atomic_store_explicit(&sl->kind, t->kind, memory_order_relaxed);
    atomic_store_explicit(&sl->id, t->id, memory_order_relaxed);
    atomic_store_explicit(&sl->epoch, t->epoch, memory_order_relaxed);
    atomic_store_explicit(&sl->flush, t->flush, memory_order_relaxed);
    atomic_store_explicit(&sl->expires_ms, ttl_ms ? now_ms + ttl_ms : 0,
                          memory_order_relaxed);
    atomic_store_explicit(&sl->status, (uint32_t)status, memory_order_relaxed);
    atomic_store_explicit(&sl->len, (uint32_t)len, memory_order_relaxed);
    atomic_store_explicit(&sl->ref, 1, memory_order_relaxed);
    memcpy(sl->body, body, len);
    pub = next_ctl(mine, true, 0);
    if (!atomic_compare_exchange_strong_explicit(
            &sl->ctl, &mine, pub, memory_order_release, memory_order_relaxed)) {
        /* only the master's reclaim of a dead pid can get here: we are not
         * dead, so it is a pid reused after a reclaim; leave it be */
        if (st)
            st->not_stored++;
        return -1;
    }
    if (st) {
        st->inserts++;
        if (evicts)
            st->evictions++;
        if (steals)
            st->reclaimed++;
    }
    return 0;
}

void
cache_invalidate(struct cache *c, uint32_t kind, uint64_t id,
                 struct cache_stats *st)
{
    uint32_t set, stripe, tag;

    locate(c, kind, id, &set, &stripe, &tag);
    atomic_fetch_add(&set_at(c, set)->meta.epoch[stripe], 1);
    if (st)
        st->invalidations++;
}

void
cache_flush(struct cache *c, struct cache_stats *st)
{
    atomic_fetch_add(&c->hdr.flush, 1);
    if (st)
        st->flushes++;
}

/* Releases slot index+1 `slot` if pid still owns it; 1 if it did. */
static unsigned
release_claim(struct cache *c, uint32_t slot, uint32_t pid)
{
    struct cache_slot *sl;
    uint64_t ctl;

    if (slot == 0 || slot > c->hdr.nsets * CACHE_WAYS)
        return 0;
    sl = &set_at(c, (slot - 1) / CACHE_WAYS)->slot[(slot - 1) % CACHE_WAYS];
    ctl = atomic_load(&sl->ctl);
    if ((ctl & CTL_PID_MASK) != pid)
        return 0;
    /* a half-written value is dropped, never published */
    return atomic_compare_exchange_strong(&sl->ctl, &ctl,
                                          next_ctl(ctl, false, 0))
               ? 1
               : 0;
}

/*
 * This process's claim record: the one it has, else a free one, else one
 * of a process that is gone (its claim released first).  -1 if none.
 */
static int
claim_record(struct cache *c, uint32_t pid)
{
    if (my_claim)
        return (int)my_claim - 1;
    for (int pass = 0; pass < 2; pass++) {
        for (unsigned i = 0; i < CLAIM_RECORDS; i++) {
            struct cache_claim *r = &c->hdr.claims[i];
            uint32_t cur = atomic_load(&r->pid);
            if (pass == 0
                    ? cur != 0
                    : cur == 0 || kill((pid_t)cur, 0) == 0 || errno != ESRCH)
                continue;
            if (pass == 1)
                (void)release_claim(c, atomic_load(&r->slot), cur);
            if (atomic_compare_exchange_strong(&r->pid, &cur, pid)) {
                atomic_store(&r->slot, 0);
                my_claim = i + 1;
                return (int)i;
            }
        }
    }
    return -1;
}

unsigned
cache_worker_gone(struct cache *c, pid_t pid)
{
    unsigned n = 0;

    if (c == NULL || pid <= 0)
        return 0;
    for (unsigned i = 0; i < CLAIM_RECORDS; i++) {
        struct cache_claim *r = &c->hdr.claims[i];
        uint32_t cur = (uint32_t)pid;
        if (atomic_load_explicit(&r->pid, memory_order_relaxed) != cur)
            continue;
        n += release_claim(c, atomic_load(&r->slot), cur);
        /* only pid is given back, by CAS: a writer that took this record
         * over meanwhile (claim records full, pid found dead) has set its
         * own slot, which a store here would wipe; the next owner of a
         * freed record sets slot itself */
        (void)atomic_compare_exchange_strong(&r->pid, &cur, 0);
    }
    if (n)
        atomic_fetch_add(&c->hdr.reclaimed, n);
    return n;
}

uint64_t
cache_reclaimed_total(const struct cache *c)
{
    return atomic_load_explicit(&c->hdr.reclaimed, memory_order_relaxed);
}

uint64_t
cache_busy_slots(const struct cache *c, pid_t pid)
{
    uint64_t n = 0;

    for (uint64_t i = 0; i < c->hdr.nsets; i++) {
        const struct cache_set *s =
            (const struct cache_set *)((const char *)c + c->hdr.sets_off +
                                       i * sizeof(struct cache_set));
        for (unsigned w = 0; w < CACHE_WAYS; w++) {
            uint64_t ctl =
                atomic_load_explicit(&s->slot[w].ctl, memory_order_relaxed);
            n += is_busy(ctl) &&
                 (pid == 0 || (ctl & CTL_PID_MASK) == (uint32_t)pid);
        }
    }
    return n;
}
