/*
 * ratelimit.c - the shared rate-limit table (see ratelimit.h).
 *
 * Algorithm: GCRA, the generic cell rate algorithm, which is a token
 * bucket written as one number per client: the "theoretical arrival time"
 * TAT.  With T = 1 s / rate and tolerance tau = (burst - 1) * T, a
 * request at time now is allowed when max(TAT, now) - now <= tau, and
 * then TAT becomes max(TAT, now) + T; otherwise the client waits
 * max(TAT, now) - now - tau.  One number means one compare-and-swap.
 *
 * The mapping, who makes it, how it crosses a binary upgrade: a memfd
 * ("apiary-ratelimit", close-on-exec, sealed against shrinking and
 * growing) mapped MAP_SHARED, made by the master before its first fork
 * (ratelimit_open()), so all workers of all its generations share it by
 * fork.  On USR2 the old master hands the descriptor to the binary it
 * execs (APIARY_RATELIMIT_FD, close-on-exec cleared in that child only,
 * like the listening sockets; server/master.c), and the new master maps
 * the same table (ratelimit_adopt()) when its magic, version and size
 * are what its own binary and ratelimit_slots would make: old and new
 * workers then draw on one budget, and a client's spent budget stays
 * spent across the upgrade.  base_us is CLOCK_MONOTONIC, one clock for
 * every process of the machine, so the old TATs mean the same in the new
 * binary.  Otherwise (another layout or ratelimit_slots, an old binary
 * that passes nothing) the new master makes a fresh table: every
 * client's bucket is full again, so a client may get up to one extra
 * burst across that upgrade (a budget, not a correctness property: no
 * hold as the cache has).  A rollback leaves the old master on its own
 * mapping, which it never unmapped.
 *
 * Layout (offsets from the start of the memfd):
 *
 *   offset 0   struct rl_head (64 bytes): magic, version, nslots,
 *              base_us (CLOCK_MONOTONIC when made)
 *   offset 64  uint64_t slot[nslots]
 *
 * Each slot is one 64-bit word: the client's 16-bit fingerprint (bits
 * 48..63, never 0) and its TAT in microseconds since base_us (bits 0..47,
 * 8.9 years).  0 is an empty slot.  A client's key (ratelimit_key()) is
 * hashed; the low bits pick its first slot, the high 16 bits are the
 * fingerprint, and it may live in any of RATELIMIT_PROBE slots from the
 * first.  A slot whose TAT is in the past is a full bucket: it means the
 * same as an empty slot, so any client may take it over.  Two clients
 * with the same first slots and fingerprint share one bucket (about one
 * pair in 65536 for clients that are active together): they are limited
 * together, never let through.  When all probed slots belong to active
 * clients the request is allowed and counted (table_full): the table is
 * sized for the clients expected at once (ratelimit_slots).
 *
 * Concurrency: every change is one __atomic_compare_exchange_n on one
 * slot; a failed CAS re-reads and decides again (bounded retries, then
 * allowed).  Two workers finding no slot for a new client both try the
 * first usable slot in probe order, so one of them wins and the other
 * finds it on its retry.  Memory ordering: relaxed loads and relaxed
 * CAS are enough, since the slot word is the only datum (no other memory
 * is published through it) and the CAS itself is atomic; the header is
 * written before fork and only read after.
 *
 * Crash story: nothing is ever held.  A worker killed between its load
 * and its CAS changed nothing; a CAS is the whole update; so a SIGKILL at
 * any instruction leaves every slot old or new, never locked or torn, and
 * the master has nothing to clean up at reap.  The budget a killed worker
 * spent stays spent (its replacement sees the same slots), which
 * tests/integration/test_edge.py checks with SIGKILL.
 */
#include "ratelimit.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "request.h"

#define TAT_BITS 48
#define TAT_MASK ((1ULL << TAT_BITS) - 1)
#define CAS_TRIES 8

struct rl_head {
    uint32_t magic;
    uint32_t version;
    uint32_t nslots; /* power of two */
    uint32_t pad0;
    uint64_t base_us;
    uint8_t pad[40];
};

_Static_assert(sizeof(struct rl_head) == 64, "rl_head is one cache line");
_Static_assert(offsetof(struct rl_head, base_us) == 16, "rl_head layout");

static struct rl_head *head;
static size_t map_bytes;
static int map_fd = -1; /* the memfd, kept for a binary upgrade */

static uint64_t *
slots(void)
{
    return (uint64_t *)(void *)((char *)head + sizeof(struct rl_head));
}

static uint64_t
mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The table's size for nslots (a power of two, at least 64). */
static uint32_t
slots_for(uint32_t nslots)
{
    uint32_t n = 64;

    while (n < nslots && n < (1u << 30))
        n <<= 1;
    return n;
}

int
ratelimit_open(uint32_t nslots)
{
    uint32_t n = slots_for(nslots);
    size_t bytes = sizeof(struct rl_head) + (size_t)n * sizeof(uint64_t);
    void *p;
    int fd, e;

    if (head != NULL)
        return 0;
    fd = memfd_create("apiary-ratelimit", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    if (ftruncate(fd, (off_t)bytes) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        goto fail;
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        goto fail;
    head = p;
    map_bytes = bytes;
    map_fd = fd;
    head->magic = RATELIMIT_MAGIC;
    head->version = RATELIMIT_VERSION;
    head->nslots = n;
    /* base slightly in the past so that a TAT of "now" is never 0 */
    head->base_us = mono_us() - 1;
    return 0;
fail:
    e = errno;
    (void)close(fd);
    errno = e;
    return -1;
}

int
ratelimit_adopt(int fd, uint32_t nslots, char *why, size_t cap)
{
    uint32_t n = slots_for(nslots);
    size_t bytes = sizeof(struct rl_head) + (size_t)n * sizeof(uint64_t);
    struct rl_head h;
    struct stat sb;
    int seals;
    void *p;

    if (head != NULL) {
        snprintf(why, cap, "a table is already mapped");
        goto refuse;
    }
    seals = fcntl(fd, F_GET_SEALS);
    if (fstat(fd, &sb) < 0 || seals < 0 || !(seals & F_SEAL_SHRINK) ||
        pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        snprintf(why, cap, "descriptor %d is not a sealed rate-limit memfd",
                 fd);
        goto refuse;
    }
    if (h.magic != RATELIMIT_MAGIC || h.version != RATELIMIT_VERSION) {
        snprintf(why, cap,
                 "its layout differs (magic %#x, version %u; this binary "
                 "has %#x, %u)",
                 h.magic, h.version, RATELIMIT_MAGIC, RATELIMIT_VERSION);
        goto refuse;
    }
    if (h.nslots != n || sb.st_size != (off_t)bytes) {
        snprintf(why, cap,
                 "its size differs (%u slots; ratelimit_slots here gives %u)",
                 h.nslots, n);
        goto refuse;
    }
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(why, cap, "mmap(): %s", strerror(errno));
        goto refuse;
    }
    head = p;
    map_bytes = bytes;
    map_fd = fd;
    return 0;
refuse:
    (void)close(fd);
    return -1;
}

int
ratelimit_fd(void)
{
    return map_fd;
}

void
ratelimit_close(void)
{
    if (head == NULL)
        return;
    if (munmap(head, map_bytes) < 0)
        log_error("munmap() of the rate-limit table failed: %s",
                  strerror(errno));
    head = NULL;
    if (map_fd >= 0)
        (void)close(map_fd);
    map_fd = -1;
}

uint64_t
ratelimit_key(int family, const uint8_t *addr)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
                                       0, 0, 0, 0, 0xff, 0xff};
    uint64_t k = 0;

    if (family == 6 && memcmp(addr, mapped, sizeof(mapped)) == 0) {
        addr += 12;
        family = 4;
    }
    if (family == 4) {
        for (int i = 0; i < 4; i++)
            k = (k << 8) | addr[i];
        return k | (4ULL << 56);
    }
    for (int i = 0; i < 8; i++) /* the /64 */
        k = (k << 8) | addr[i];
    return k;
}

/* splitmix64's finaliser: every key bit moves every hash bit. */
static uint64_t
mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t
ratelimit_take(struct ratelimit *rl, uint64_t key, uint64_t now_us)
{
    uint64_t h, fp, now, t_us, tau_us, *tab;
    uint32_t mask;

    if (head == NULL || rl->rate == 0)
        return 0;
    tab = slots();
    mask = head->nslots - 1;
    h = mix(key);
    fp = (h >> 48) ? (h >> 48) : 1;
    /* a clock read before the table was made counts as its birth */
    now = now_us > head->base_us ? (now_us - head->base_us) & TAT_MASK : 0;
    t_us = 1000000u / rl->rate ? 1000000u / rl->rate : 1;
    tau_us = (uint64_t)(rl->burst ? rl->burst - 1 : 0) * t_us;

    for (int attempt = 0; attempt < CAS_TRIES; attempt++) {
        uint64_t *mine = NULL, *usable = NULL, w = 0, uw = 0;

        for (uint32_t i = 0; i < RATELIMIT_PROBE; i++) {
            uint64_t *s = &tab[(h + i) & mask];
            uint64_t v = __atomic_load_n(s, __ATOMIC_RELAXED);
            if (v != 0 && (v >> TAT_BITS) == fp) {
                mine = s;
                w = v;
                break;
            }
            if (usable == NULL && (v == 0 || (v & TAT_MASK) <= now)) {
                usable = s;
                uw = v;
            }
        }
        if (mine == NULL) {
            /* a new client: a full bucket, minus this request */
            if (usable == NULL) {
                rl->stats.table_full++;
                rl->stats.allowed++;
                return 0;
            }
            if (__atomic_compare_exchange_n(
                    usable, &uw, (fp << TAT_BITS) | (now + t_us), false,
                    __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
                rl->stats.allowed++;
                return 0;
            }
            continue; /* someone took it: look again */
        }
        uint64_t tat = w & TAT_MASK;
        if (tat < now)
            tat = now;
        if (tat - now > tau_us) {
            rl->stats.limited++;
            return tat - now - tau_us;
        }
        if (__atomic_compare_exchange_n(
                mine, &w, (fp << TAT_BITS) | ((tat + t_us) & TAT_MASK), false,
                __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            rl->stats.allowed++;
            return 0;
        }
    }
    rl->stats.allowed++; /* contention beyond reason: let it through */
    return 0;
}

int
ratelimit_route(struct request *r, void *arg)
{
    struct ratelimit *rl = arg;
    const struct conn *c = r->c;
    uint64_t wait_us, key;
    unsigned long long retry_s;
    char extra[160], body[256];
    size_t n;
    int e;

    if (rl->rate == 0 || c == NULL ||
        (c->peer_family != AF_INET && c->peer_family != AF_INET6))
        return 0;
    key = ratelimit_key(c->peer_family == AF_INET ? 4 : 6, c->peer);
    wait_us = ratelimit_take(rl, key, mono_us());
    if (wait_us == 0)
        return 0;
    retry_s = (unsigned long long)((wait_us + 999999u) / 1000000u);
    /* draft-ietf-httpapi-ratelimit-headers-07: RateLimit-Limit/-Remaining
     * /-Reset (the separate-fields form) */
    e = snprintf(extra, sizeof(extra),
                 "Retry-After: %llu\r\nRateLimit-Limit: %u\r\n"
                 "RateLimit-Remaining: 0\r\nRateLimit-Reset: %llu\r\n",
                 retry_s, rl->burst, retry_s);
    n = response_error_body(body, sizeof(body), 429,
                            "Too many requests: over the rate limit");
    request_reply(r, 429, body, n, extra,
                  e > 0 && (size_t)e < sizeof(extra) ? (size_t)e : 0);
    return 1;
}
