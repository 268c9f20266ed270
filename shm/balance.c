/*
 * balance.c - see balance.h.
 */
#include "balance.h"

#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>

struct balance_slot {
    _Atomic uint32_t active;
    _Atomic uint32_t accepting;
    _Atomic uint32_t generation; /* of the worker holding the slot */
    _Atomic uint32_t served;     /* that worker started serving */
    char pad[48];
};

_Static_assert(sizeof(struct balance_slot) == 64, "one cache line per slot");

static struct balance_slot *slots;
static unsigned nslots;
/* highest id in use (balance_set_span); in the mapping's first line */
static _Atomic uint32_t *span;

int
balance_open(unsigned nworkers)
{
    void *p;

    if (nworkers > BALANCE_MAX_WORKERS)
        nworkers = BALANCE_MAX_WORKERS;
    /* one extra line first: the span */
    p = mmap(NULL, sizeof(struct balance_slot) * (nworkers + 1),
             PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    span = p;
    atomic_store_explicit(span, nworkers, memory_order_relaxed);
    slots = (struct balance_slot *)p + 1;
    nslots = nworkers;
    return 0;
}

void
balance_set_span(unsigned n)
{
    if (span)
        atomic_store_explicit(span, n < nslots ? n : nslots,
                              memory_order_relaxed);
}

void
balance_set_active(unsigned id, uint32_t active)
{
    if (slots && id >= 1 && id <= nslots)
        atomic_store_explicit(&slots[id - 1].active, active,
                              memory_order_relaxed);
}

void
balance_set_accepting(unsigned id, bool accepting)
{
    if (slots && id >= 1 && id <= nslots)
        atomic_store_explicit(&slots[id - 1].accepting, accepting ? 1u : 0u,
                              memory_order_relaxed);
}

void
balance_claim(unsigned id, uint32_t generation)
{
    if (slots && id >= 1 && id <= nslots) {
        atomic_store_explicit(&slots[id - 1].generation, generation,
                              memory_order_relaxed);
        atomic_store_explicit(&slots[id - 1].served, 0, memory_order_relaxed);
    }
}

void
balance_set_served(unsigned id)
{
    if (slots && id >= 1 && id <= nslots)
        atomic_store_explicit(&slots[id - 1].served, 1, memory_order_relaxed);
}

bool
balance_served(unsigned id)
{
    if (slots == NULL || id < 1 || id > nslots)
        return false;
    return atomic_load_explicit(&slots[id - 1].served, memory_order_relaxed);
}

void
balance_reset(unsigned id)
{
    balance_set_active(id, 0);
    balance_set_accepting(id, false);
    if (slots && id >= 1 && id <= nslots)
        atomic_store_explicit(&slots[id - 1].served, 0, memory_order_relaxed);
}

bool
balance_should_yield(unsigned id)
{
    uint32_t mine, least = UINT32_MAX, n;

    if (slots == NULL || nslots < 2 || id < 1 || id > nslots)
        return false;
    n = atomic_load_explicit(span, memory_order_relaxed);
    if (n > nslots)
        n = nslots;
    mine = atomic_load_explicit(&slots[id - 1].active, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++) {
        uint32_t a;
        if (i == id - 1 ||
            !atomic_load_explicit(&slots[i].accepting, memory_order_relaxed))
            continue;
        a = atomic_load_explicit(&slots[i].active, memory_order_relaxed);
        if (a < least)
            least = a;
    }
    if (least == UINT32_MAX)
        return false; /* nobody else accepts: keep going */
    return mine > least + 2 + least / 16;
}
