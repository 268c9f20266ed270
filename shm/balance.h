/*
 * balance.h - per-worker connection counts shared by all workers, used to
 * spread accepted connections evenly (SPEC 4).
 *
 * Why: with EPOLLEXCLUSIVE the kernel wakes the first idle waiter on the
 * listening socket, and a burst of connections tends to land on one worker
 * (measured here: 194 of 200 at once on a fresh 2-worker server, with
 * listener re-registration alone).  So each worker publishes how many
 * connections it holds; a worker that is ahead of the least-loaded accepting
 * worker by more than a small slack yields: it stops accepting for
 * BALANCE_YIELD_MS and the next connections wake the others.
 *
 * Layout: an anonymous MAP_SHARED mapping made by the master before it
 * forks: one 64-byte line holding the span (the highest id in use, written
 * by the master only, so the scan on each accept stays short), then one
 * 64-byte slot per worker id (no false sharing).  Each worker
 * writes only its own slot; anyone reads any slot.  Values are advisory, so
 * relaxed atomics are enough: a stale read costs one connection of
 * imbalance, never correctness.  The master zeroes a slot when its worker
 * dies, so a dead worker's count does not linger.
 *
 * Each slot also records (SPEC 4) the generation of the worker holding it
 * and whether that worker has started serving.  The master reads "served"
 * when it reaps the worker, before it zeroes the slot, to tell "could not
 * start" from "stopped after serving" (master.c).  Crash safety: every
 * field is one aligned 32-bit atomic store, nothing is held across stores,
 * so a worker killed at any instruction leaves each field either old or
 * new; nothing can be left locked, and the master resets the slot at reap.
 * The SIGKILL tests (test_lifecycle_db.py's start-gate test,
 * test_migrations.py's old-schema slot test) kill workers that have
 * served and check what the master then decides from these fields.
 */
#ifndef APIARY_BALANCE_H
#define APIARY_BALANCE_H

#include <stdbool.h>
#include <stdint.h>

#define BALANCE_MAX_WORKERS 256
#define BALANCE_YIELD_MS 2

/*
 * Master, before forking: maps the slots (ids 1..nworkers; with reloads,
 * ids are the master's per-worker blocks, unique across the generations
 * running side by side).  0 or -1 (errno from mmap).
 */
int balance_open(unsigned nworkers);

/*
 * Master: ids above span are unused now, so balance_should_yield() need
 * not look at them (it runs on every accept).  Any time; relaxed.
 */
void balance_set_span(unsigned span);

/* Worker id (1-based): its current connection count. */
void balance_set_active(unsigned id, uint32_t active);

/*
 * Worker id: whether it is accepting (false at its connection limit, out
 * of descriptors, or draining; a short yield still counts as accepting).
 */
void balance_set_accepting(unsigned id, bool accepting);

/*
 * Worker in slot id, at start: records its generation (SPEC 4: workers are
 * (generation, slot)) and clears the served flag.
 */
void balance_claim(unsigned id, uint32_t generation);

/* Worker id: it has started serving (accepting connections). */
void balance_set_served(unsigned id);

/* Master, before balance_reset() at reap: had that worker served? */
bool balance_served(unsigned id);

/* Master: the worker in slot id is gone. */
void balance_reset(unsigned id);

/*
 * True when worker id holds more than the least-loaded other accepting
 * worker plus a slack (2 connections + 1/16 of that worker's count), so it
 * should let the others accept.  False when balancing is off (one worker,
 * or balance_open() not called).
 */
bool balance_should_yield(unsigned id);

#endif
