/*
 * test_pg.c - the decoders of binary-format results (pg_get_int8,
 * pg_get_ts_us, pg_get_bool), on results built with libpq's own
 * PQsetvalue(), so no server is needed.  Database rows are outside input:
 * NULLs and values of the wrong size must decode to 0, never be read past.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pg.h"

/* A one-column result whose rows are the given values (NULL: SQL NULL). */
static PGresult *
result_of(const char *const *vals, const int *lens, int n)
{
    static char name[] = "c";
    PGresAttDesc col = {.name = name, .format = 1};
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);

    assert_non_null(res);
    assert_int_equal(PQsetResultAttrs(res, 1, &col), 1);
    for (int r = 0; r < n; r++) {
        char buf[16];
        assert_true(lens[r] <= (int)sizeof(buf));
        if (vals[r])
            memcpy(buf, vals[r], lens[r] > 0 ? (size_t)lens[r] : 0);
        assert_int_equal(
            PQsetvalue(res, r, 0, vals[r] ? buf : NULL, vals[r] ? lens[r] : -1),
            1);
    }
    return res;
}

static void
test_int8(void **state)
{
    const char *const vals[] = {
        "\0\0\0\0\0\0\0\x01",
        "\xff\xff\xff\xff\xff\xff\xff\xff",
        "\x7f\xff\xff\xff\xff\xff\xff\xff",
        "\0\0\0\0\0\0\x30\x39",
        "\0\0\0\x01",
        NULL,
        "\0\0\0\0\0\0\0\0\x01",
    };
    const int lens[] = {8, 8, 8, 8, 4, 0, 9};
    PGresult *res = result_of(vals, lens, 7);

    (void)state;
    assert_true(pg_get_int8(res, 0, 0) == 1);
    assert_true(pg_get_int8(res, 1, 0) == -1);
    assert_true(pg_get_int8(res, 2, 0) == INT64_MAX);
    assert_true(pg_get_int8(res, 3, 0) == 12345);
    assert_true(pg_get_int8(res, 4, 0) == 0); /* an int4: wrong size */
    assert_true(pg_get_int8(res, 5, 0) == 0); /* NULL */
    assert_true(pg_get_int8(res, 6, 0) == 0); /* too long */
    PQclear(res);
}

static void
test_timestamptz(void **state)
{
    /* 2026-11-23T19:14:09.459039Z: 848775609459039 us after 2000-01-01 */
    const char *const vals[] = {
        "\0\0\0\0\0\0\0\0",
        "\0\x03\x03\xf4\xf8\xb2\x21\x5f",
        "\x7f\xff\xff\xff\xff\xff\xff\xff", /* infinity */
        "\x80\0\0\0\0\0\0\0",               /* -infinity */
        "\xff\xff\xff\xff\xff\xff\xff\xff", /* 1999-12-31T23:59:59.999999 */
        NULL,
    };
    const int lens[] = {8, 8, 8, 8, 8, 0};
    PGresult *res = result_of(vals, lens, 6);

    (void)state;
    assert_true(pg_get_ts_us(res, 0, 0) == INT64_C(946684800000000));
    assert_true(pg_get_ts_us(res, 1, 0) == INT64_C(1795460409459039));
    assert_true(pg_get_ts_us(res, 2, 0) == INT64_MAX);
    assert_true(pg_get_ts_us(res, 3, 0) == INT64_MIN);
    assert_true(pg_get_ts_us(res, 4, 0) == INT64_C(946684799999999));
    assert_true(pg_get_ts_us(res, 5, 0) == 0);
    PQclear(res);
}

static void
test_bool(void **state)
{
    const char *const vals[] = {"\x01", "\0", "\x01\x01", NULL};
    const int lens[] = {1, 1, 2, 0};
    PGresult *res = result_of(vals, lens, 4);

    (void)state;
    assert_true(pg_get_bool(res, 0, 0));
    assert_false(pg_get_bool(res, 1, 0));
    assert_false(pg_get_bool(res, 2, 0));
    assert_false(pg_get_bool(res, 3, 0));
    PQclear(res);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int8),
        cmocka_unit_test(test_timestamptz),
        cmocka_unit_test(test_bool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
