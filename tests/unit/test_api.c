/*
 * test_api.c - the pieces of the API that need no database: the JSON
 * writer, the email and length validators, and the migration list that
 * must match sql/.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "api_priv.h"
#include "json.h"
#include "schema.h"

static void
test_json_writer(void **state)
{
    struct jbuf b = {0};
    (void)state;
    json_reset(&b);
    json_lit(&b, "{\"s\":");
    json_str(&b, "a\"b\\c\n\t\x01\xc3\xa9", 10);
    json_lit(&b, ",\"n\":");
    json_i64(&b, -9223372036854775807LL - 1);
    json_lit(&b, ",\"z\":");
    json_i64(&b, 0);
    json_lit(&b, ",\"t\":");
    json_ts_us(&b, 1795460409459039LL);
    json_lit(&b, ",\"e\":");
    json_ts_us(&b, -1); /* one microsecond before the epoch */
    json_lit(&b, "}");
    assert_false(json_failed(&b));
    json_raw(&b, "", 1);
    assert_string_equal(b.p, "{\"s\":\"a\\\"b\\\\c\\n\\t\\u0001\xc3\xa9\","
                             "\"n\":-9223372036854775808,\"z\":0,"
                             "\"t\":\"2026-11-23T19:00:09.459039Z\","
                             "\"e\":\"1969-12-31T23:59:59.999999Z\"}");
    json_fini(&b);
}

static void
test_json_roundtrip(void **state)
{
    /* whatever the bytes, jansson reads back exactly what we wrote */
    struct jbuf b = {0};
    char in[256];
    (void)state;
    for (int i = 0; i < 256; i++)
        in[i] = (char)(i < 128 ? i + 1 : 'x');
    json_reset(&b);
    json_str(&b, in, 127);
    json_t *v = json_loadb(b.p, b.len, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    assert_int_equal(json_string_length(v), 127);
    assert_memory_equal(json_string_value(v), in, 127);
    json_decref(v);
    json_fini(&b);
}

static void
test_email(void **state)
{
    static const char *const good[] = {
        "a@b.co",
        "ada@example.com",
        "first.last+tag@sub.example.org",
        "x_y-z@a-b.io",
    };
    static const char *const bad[] = {
        "",        "a",         "@b.co",     "a@",       "a@b",
        "a@b.c",   "a@@b.co",   "a b@c.de",  "a@b c.de", ".a@b.co",
        "a.@b.co", "a..b@c.de", "a@-b.co",   "a@b-.co",  "a@.b.co",
        "a@b..co", "a@b.c0m",   "a\"b@c.de", "a@b.co.",  "a@b_c.de",
    };
    char big[300];
    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!api_valid_email(good[i], strlen(good[i])))
            fail_msg("rejected %s", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (api_valid_email(bad[i], strlen(bad[i])))
            fail_msg("accepted %s", bad[i]);
    /* 254 bytes is the limit, 64 the local part's */
    memset(big, 'a', sizeof(big));
    memcpy(big + 64, "@", 1);
    memcpy(big + 250, ".com", 4);
    big[65 + 60] = '.';
    big[65 + 120] = '.';
    big[65 + 180] = '.';
    assert_true(api_valid_email(big, 254));
    assert_false(api_valid_email(big, 255));
    big[64] = 'a';
    big[65] = '@';
    assert_false(api_valid_email(big, 254)); /* local part of 65 */
}

static void
test_utf8_len(void **state)
{
    (void)state;
    assert_int_equal(api_utf8_len("abc", 3), 3);
    assert_int_equal(api_utf8_len("\xc3\xa9t\xc3\xa9", 5), 3);
    assert_int_equal(api_utf8_len("\xf0\x9f\x90\x9d", 4), 1); /* a bee */
}

/* The compiled-in list must name exactly the files in sql/. */
static void
test_schema_matches_sql_dir(void **state)
{
    DIR *d = opendir(APIARY_SQL_DIR);
    struct dirent *e;
    size_t files = 0;
    (void)state;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        int found = 0;
        if (strlen(e->d_name) < 10 ||
            strcmp(e->d_name + strlen(e->d_name) - 4, ".sql") != 0)
            continue;
        files++;
        for (size_t i = 0; i < schema_required_count; i++)
            found |= strcmp(schema_required[i].file, e->d_name) == 0 &&
                     atoi(e->d_name) == schema_required[i].version;
        if (!found)
            fail_msg("sql/%s is not in worker/schema.c", e->d_name);
    }
    closedir(d);
    assert_int_equal(files, schema_required_count);
}

static void
test_schema_check(void **state)
{
    char diag[256];
    (void)state;
    /* no schema_migrations table at all */
    assert_int_equal(schema_check(NULL, diag, sizeof(diag)), -1);
    assert_non_null(strstr(diag, "0001_schema.sql"));
    assert_non_null(strstr(diag, "apiaryd migrate"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_writer),
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_email),
        cmocka_unit_test(test_utf8_len),
        cmocka_unit_test(test_schema_matches_sql_dir),
        cmocka_unit_test(test_schema_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
