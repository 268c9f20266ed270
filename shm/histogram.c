/*
 * histogram.c - see histogram.h.
 */
#include "histogram.h"

_Static_assert(HISTOGRAM_BUCKETS == 1344, "histogram layout changed");

uint64_t
histogram_bucket_low(unsigned i)
{
    unsigned octave, k;

    if (i < HISTOGRAM_SUB)
        return i;
    if (i >= HISTOGRAM_BUCKETS)
        i = HISTOGRAM_BUCKETS - 1;
    octave = i / HISTOGRAM_SUB; /* 1.. */
    k = octave - 1 + HISTOGRAM_SUB_BITS;
    return (uint64_t)(HISTOGRAM_SUB + i % HISTOGRAM_SUB)
           << (k - HISTOGRAM_SUB_BITS);
}

uint64_t
histogram_bucket_high(unsigned i)
{
    if (i + 1 >= HISTOGRAM_BUCKETS)
        return HISTOGRAM_MAX_US + 1;
    return histogram_bucket_low(i + 1);
}

uint64_t
histogram_total(const uint64_t *counts, unsigned n)
{
    uint64_t t = 0;

    for (unsigned i = 0; i < n; i++)
        t += counts[i];
    return t;
}

double
histogram_quantile(const uint64_t *counts, double q)
{
    uint64_t total = histogram_total(counts, HISTOGRAM_BUCKETS), rank, seen = 0;

    if (total == 0)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    rank = (uint64_t)(q * (double)total);
    if ((double)rank < q * (double)total)
        rank++; /* ceil */
    if (rank == 0)
        rank = 1;
    for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++) {
        seen += counts[i];
        if (seen >= rank) {
            uint64_t lo = histogram_bucket_low(i);
            uint64_t hi = histogram_bucket_high(i);
            if (hi - lo == 1)
                return (double)lo; /* exact below 64 us */
            return ((double)lo + (double)(hi - 1)) / 2.0;
        }
    }
    return (double)HISTOGRAM_MAX_US;
}

uint64_t
histogram_count_le(const uint64_t *counts, uint64_t le_us)
{
    uint64_t n = 0;

    for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++) {
        if (histogram_bucket_high(i) - 1 > le_us)
            break;
        n += counts[i];
    }
    return n;
}
