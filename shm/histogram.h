/*
 * histogram.h - a log-linear latency histogram over integer microseconds,
 * 1 us .. 60 s, every bucket at most 1/64 (1.6%) wide relative to its
 * lower bound.
 *
 * Buckets: values 0..63 us get one bucket each (exact); from 64 us up,
 * each power of two [2^k, 2^(k+1)) is cut into 64 equal buckets, so a
 * bucket's width is 2^(k-6) and its relative width at most 1/64.  The
 * last octave ends at 2^26 us (67.1 s); larger values are clamped into the
 * last bucket (they are counted, their value is lost).  That is
 * HISTOGRAM_BUCKETS = 64 + 20 * 64 = 1344 counters (10.5 KiB of uint64_t).
 *
 * A percentile is estimated as the middle of the bucket holding it, so
 * its error is at most half a bucket: 0.8% of the value from 64 us on,
 * and 0.5 us below (HDR Histogram's idea with a fixed precision and no
 * allocation).
 *
 * Self-contained on purpose (no other apiary header), so the metrics
 * segment, apiarystat and a load generator share one definition: the
 * counters are the caller's array of HISTOGRAM_BUCKETS uint64_t (plain or
 * in shared memory); histogram_bucket() is inline for the hot path.
 */
#ifndef APIARY_HISTOGRAM_H
#define APIARY_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>

#define HISTOGRAM_SUB_BITS 6
#define HISTOGRAM_SUB (1u << HISTOGRAM_SUB_BITS) /* buckets per octave */
#define HISTOGRAM_TOP_BITS 26                    /* 2^26 us = 67.1 s */
#define HISTOGRAM_BUCKETS                                                      \
    (HISTOGRAM_SUB + (HISTOGRAM_TOP_BITS - HISTOGRAM_SUB_BITS) * HISTOGRAM_SUB)
#define HISTOGRAM_MAX_US ((1ull << HISTOGRAM_TOP_BITS) - 1)

/* The bucket of a value in microseconds (clamped to the last bucket). */
static inline unsigned
histogram_bucket(uint64_t us)
{
    unsigned k, shift;

    if (us < HISTOGRAM_SUB)
        return (unsigned)us;
    if (us > HISTOGRAM_MAX_US)
        return HISTOGRAM_BUCKETS - 1;
    k = 63u - (unsigned)__builtin_clzll(us); /* 2^k <= us < 2^(k+1) */
    shift = k - HISTOGRAM_SUB_BITS;
    return (k - HISTOGRAM_SUB_BITS + 1) * HISTOGRAM_SUB +
           (unsigned)(us >> shift) - HISTOGRAM_SUB;
}

/* Lowest value (us) of bucket i (< HISTOGRAM_BUCKETS). */
uint64_t histogram_bucket_low(unsigned i);

/* One past the highest value (us) of bucket i. */
uint64_t histogram_bucket_high(unsigned i);

/* Total of n counters. */
uint64_t histogram_total(const uint64_t *counts, unsigned n);

/*
 * The q-quantile (0 <= q <= 1) of the HISTOGRAM_BUCKETS counters in
 * counts, in microseconds: the middle of the bucket holding the
 * ceil(q * total)-th value (the first value for q = 0).  0 when empty.
 */
double histogram_quantile(const uint64_t *counts, double q);

/*
 * Counts of values <= le_us: the sum of the buckets whose every value is
 * <= le_us (a bucket straddling le_us is left out, so the figure is low
 * by at most one bucket: 1.6% of le_us).  For Prometheus "le" buckets.
 */
uint64_t histogram_count_le(const uint64_t *counts, uint64_t le_us);

#endif
