/*
 * loadgen_hist - log-linear latency histogram of scripts/loadgen; see
 * loadgen_hist.h for the bucket layout and the merge seam.
 *
 * Index of value v: v itself below 2 * LG_HIST_SUB; above, with m the
 * position of v's highest set bit and s = m - LG_HIST_SUB_BITS, the bucket
 * (s + 1) * LG_HIST_SUB + (v >> s) - LG_HIST_SUB, whose values share v's
 * top LG_HIST_SUB_BITS + 1 bits.
 */
#include "loadgen_hist.h"

#include <string.h>

_Static_assert(LG_HIST_MAX_NS < (1ull << 36), "60 s fits in 36 bits");

static unsigned
lg_index(uint64_t v)
{
    if (v < (uint64_t)2 * LG_HIST_SUB)
        return (unsigned)v;
    unsigned m = 63u - (unsigned)__builtin_clzll(v);
    unsigned s = m - LG_HIST_SUB_BITS;
    return (s + 1) * LG_HIST_SUB + (unsigned)(v >> s) - LG_HIST_SUB;
}

/* Lowest value of bucket i and its width. */
static void
lg_bounds(unsigned i, uint64_t *lo, uint64_t *width)
{
    if (i < 2 * LG_HIST_SUB) {
        *lo = i;
        *width = 1;
        return;
    }
    unsigned s = i / LG_HIST_SUB - 1;
    uint64_t top = (uint64_t)(i % LG_HIST_SUB + LG_HIST_SUB);
    *lo = top << s;
    *width = 1ull << s;
}

void
lg_hist_init(struct lg_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min_ns = UINT64_MAX;
}

void
lg_hist_record(struct lg_hist *h, uint64_t ns)
{
    if (ns > LG_HIST_MAX_NS)
        ns = LG_HIST_MAX_NS;
    h->bucket[lg_index(ns)]++;
    h->count++;
    h->sum_ns += ns;
    if (ns < h->min_ns)
        h->min_ns = ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

void
lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src)
{
    for (unsigned i = 0; i < LG_HIST_BUCKETS; i++)
        dst->bucket[i] += src->bucket[i];
    dst->count += src->count;
    dst->sum_ns += src->sum_ns;
    if (src->min_ns < dst->min_ns)
        dst->min_ns = src->min_ns;
    if (src->max_ns > dst->max_ns)
        dst->max_ns = src->max_ns;
}

uint64_t
lg_hist_quantile(const struct lg_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q >= 1.0)
        return h->max_ns;
    if (q < 0.0)
        q = 0.0;
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count || rank == 0)
        rank++;
    uint64_t seen = 0;
    for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            uint64_t lo, width;
            lg_bounds(i, &lo, &width);
            uint64_t v = lo + width / 2;
            if (v > h->max_ns)
                v = h->max_ns;
            if (v < h->min_ns)
                v = h->min_ns;
            return v;
        }
    }
    return h->max_ns;
}

double
lg_hist_mean(const struct lg_hist *h)
{
    return h->count ? (double)h->sum_ns / (double)h->count : 0.0;
}
