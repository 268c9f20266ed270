/*
 * test_loadgen_hist.c - the latency histogram of scripts/loadgen: every
 * quantile within 1% of the exact one (SPEC 5 allows 2%) on values from
 * 1 us to 60 s, exact counts, max and min, merge, clamping above 60 s.
 * scripts/loadgen_hist.c is not part of libapiary: it is compiled in here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>

#include "../../scripts/loadgen_hist.c"

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The exact value of rank ceil(q * n) in sorted v. */
static uint64_t
exact(const uint64_t *v, size_t n, double q)
{
    size_t rank = (size_t)(q * (double)n);
    if ((double)rank < q * (double)n || rank == 0)
        rank++;
    return v[rank - 1];
}

static void
test_quantiles_within_error(void **state)
{
    (void)state;
    enum { N = 100000 };
    static uint64_t v[N];
    static struct lg_hist h;
    lg_hist_init(&h);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* log-uniform from 1 us to 60 s */
        double e = (double)(x % 1000000) / 1e6;
        v[i] = (uint64_t)(1000.0 * pow(60e6, e));
        lg_hist_record(&h, v[i]);
    }
    qsort(v, N, sizeof v[0], cmp_u64);
    assert_int_equal(h.count, N);
    assert_int_equal(h.min_ns, v[0]);
    assert_int_equal(h.max_ns, v[N - 1]);
    static const double qs[] = {0.0, 0.01, 0.1,   0.25,   0.5,    0.75,
                                0.9, 0.99, 0.999, 0.9999, 0.99999};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        double want = (double)exact(v, N, qs[i]);
        double got = (double)lg_hist_quantile(&h, qs[i]);
        double err = fabs(got - want) / want;
        if (err > 0.01)
            fail_msg("q %g: %g, exact %g (%.2f%%)", qs[i], got, want,
                     100 * err);
    }
    assert_int_equal(lg_hist_quantile(&h, 1.0), v[N - 1]);
}

static void
test_small_values_exact_and_merge(void **state)
{
    (void)state;
    struct lg_hist *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    lg_hist_init(a);
    lg_hist_init(b);
    assert_int_equal(lg_hist_quantile(a, 0.5), 0);
    for (uint64_t i = 1; i <= 100; i++)
        lg_hist_record(i <= 50 ? a : b, i);
    lg_hist_merge(a, b);
    assert_int_equal(a->count, 100);
    assert_int_equal(lg_hist_quantile(a, 0.5), 50);
    assert_int_equal(lg_hist_quantile(a, 0.0), 1);
    assert_int_equal(a->min_ns, 1);
    assert_int_equal(a->max_ns, 100);
    assert_true(lg_hist_mean(a) == 50.5);
    /* Above 60 s: counted as 60 s. */
    lg_hist_record(a, 3600ull * 1000000000ull);
    assert_int_equal(a->max_ns, LG_HIST_MAX_NS);
    assert_int_equal(lg_hist_quantile(a, 1.0), LG_HIST_MAX_NS);
    free(a);
    free(b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantiles_within_error),
        cmocka_unit_test(test_small_values_exact_and_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
