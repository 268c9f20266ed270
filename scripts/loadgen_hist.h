/*
 * loadgen_hist - the latency histogram of scripts/loadgen, behind the
 * smallest interface loadgen needs.
 *
 * Log-linear, as SPEC 5 asks of the server's: values in nanoseconds, exact
 * below 64 ns, then every power of two split into 64 equal buckets, so a
 * bucket is at most 1/64 (1.6%) of its lower bound wide and the value
 * reported for it (its midpoint) is within 0.8% of every value it holds.
 * Values above LG_HIST_MAX_NS (60 s) are counted in the top bucket; max and
 * min are kept exactly beside the buckets.
 *
 * The metrics branch (issue 8) writes shm/histogram.{c,h} with the same
 * resolution for the server. At merge, these five functions are the whole
 * seam: reimplement them on top of shm/histogram.h (or replace the calls in
 * loadgen.c) and delete loadgen_hist.c. Not thread-safe; one per process.
 */
#ifndef LOADGEN_HIST_H
#define LOADGEN_HIST_H

#include <stdint.h>

#define LG_HIST_SUB_BITS 6
#define LG_HIST_SUB (1u << LG_HIST_SUB_BITS) /* buckets per power of two */
#define LG_HIST_MAX_NS 60000000000ull        /* 60 s */
#define LG_HIST_BUCKETS ((36u - LG_HIST_SUB_BITS + 1u) * LG_HIST_SUB)

struct lg_hist {
    uint64_t count;
    uint64_t sum_ns;
    uint64_t min_ns;
    uint64_t max_ns;
    uint64_t bucket[LG_HIST_BUCKETS];
};

/* Empties h. */
void lg_hist_init(struct lg_hist *h);

/* Counts one value of ns nanoseconds (clamped to LG_HIST_MAX_NS). */
void lg_hist_record(struct lg_hist *h, uint64_t ns);

/* Adds every count of src to dst. */
void lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src);

/* The value at quantile q (0..1) in ns: the midpoint of the bucket holding
 * the ceil(q * count)-th smallest value, never above max nor below min;
 * q >= 1 gives max exactly. 0 when h is empty. */
uint64_t lg_hist_quantile(const struct lg_hist *h, double q);

/* Mean in ns, 0 when h is empty. */
double lg_hist_mean(const struct lg_hist *h);

#endif
