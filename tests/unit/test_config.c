/*
 * test_config.c - the settings table, the file parser, the environment
 * reader, and their diagnostics (SPEC 7: errors name file, line and key).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"

static struct config c;
static char diag[CONFIG_DIAG_MAX];

static int
setup(void **state)
{
    (void)state;
    config_defaults(&c);
    diag[0] = '\0';
    return 0;
}

static int
parse(const char *text)
{
    return config_parse(&c, text, strlen(text), "t.conf", diag, sizeof(diag));
}

static void
test_defaults(void **state)
{
    (void)state;
    assert_string_equal(c.listen, "8080");
    assert_int_equal(c.workers, 0);
    assert_int_equal(c.max_request_line, 8192);
    assert_int_equal(c.max_header_bytes, 16384);
    assert_int_equal(c.max_headers, 100);
    assert_int_equal(c.max_body_bytes, 1048576);
    assert_int_equal(c.log_level, LOG_INFO);
    assert_false(c.debug_endpoints);
    config_finish(&c);
    assert_true(c.workers >= 1);
}

static void
test_file_values(void **state)
{
    (void)state;
    assert_int_equal(parse("# comment\n"
                           "\n"
                           "workers = 3\n"
                           "  listen=127.0.0.1:9000, [::1]:9000   # both\n"
                           "max_body_bytes = 2m\r\n"
                           "max_header_bytes = 8k\n"
                           "debug_endpoints = yes\n"
                           "log_level = \"debug\"\n"
                           "access_log = off"),
                     0);
    assert_int_equal(c.workers, 3);
    assert_string_equal(c.listen, "127.0.0.1:9000, [::1]:9000");
    assert_int_equal(c.max_body_bytes, 2 * 1024 * 1024);
    assert_int_equal(c.max_header_bytes, 8192);
    assert_true(c.debug_endpoints);
    assert_int_equal(c.log_level, LOG_DEBUG);
    assert_string_equal(c.access_log, "off");
}

struct bad_case {
    const char *text;
    const char *want; /* substring of the diagnostic */
};

static void
test_file_errors(void **state)
{
    static const struct bad_case cases[] = {
        {"workers = many\n", "t.conf:1: workers: expected an integer"},
        {"\n\nnope = 1\n", "t.conf:3: unknown key \"nope\""},
        {"workers\n", "t.conf:1: expected \"key = value\""},
        {"= 4\n", "t.conf:1: missing key"},
        {"workers = 257\n", "from 0 to 256"},
        {"workers = -1\n", "t.conf:1: workers"},
        {"max_body_bytes = 1t\n", "max_body_bytes: expected an integer"},
        {"max_body_bytes = 99999999999999999999999\n", "max_body_bytes"},
        {"debug_endpoints = maybe\n", "expected on or off"},
        {"log_level = loud\n", "log_level: expected debug"},
        {"backlog = 0\n", "backlog"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        config_defaults(&c);
        assert_int_equal(parse(cases[i].text), -1);
        if (strstr(diag, cases[i].want) == NULL)
            fail_msg("case %zu: diag \"%s\" lacks \"%s\"", i, diag,
                     cases[i].want);
    }
}

static void
test_value_too_long(void **state)
{
    char text[2200];
    (void)state;
    memset(text, 'a', sizeof(text));
    memcpy(text, "pidfile = ", 10);
    text[sizeof(text) - 1] = '\0';
    assert_int_equal(parse(text), -1);
    assert_non_null(strstr(diag, "t.conf:1"));
}

static void
test_nul_byte(void **state)
{
    static const char text[] = "workers = 2\0junk\n";
    (void)state;
    assert_int_equal(
        config_parse(&c, text, sizeof(text) - 1, "t.conf", diag, sizeof(diag)),
        -1);
    assert_non_null(strstr(diag, "NUL"));
}

static void
test_env(void **state)
{
    char e0[] = "PATH=/bin", e1[] = "APIARY_WORKERS=5",
         e2[] = "APIARY_LOG=warn",
         e3[] = "APIARY_PG_DIR=/tmp/x", /* not a key: ignored */
        e4[] = "APIARY_MAX_HEADERS=7", b0[] = "APIARY_WORKERS=lots";
    char *env[] = {e0, e1, e2, e3, e4, NULL};
    char *bad[] = {b0, NULL};
    (void)state;
    assert_int_equal(config_load_env(&c, env, diag, sizeof(diag)), 0);
    assert_int_equal(c.workers, 5);
    assert_int_equal(c.log_level, LOG_WARN);
    assert_int_equal(c.max_headers, 7);
    assert_int_equal(config_load_env(&c, bad, diag, sizeof(diag)), -1);
    assert_non_null(strstr(diag, "APIARY_WORKERS: workers"));
}

static void
test_precedence_file_then_set(void **state)
{
    (void)state;
    assert_int_equal(parse("workers = 2\n"), 0);
    assert_int_equal(config_set(&c, "workers", "4", "-o", diag, sizeof(diag)),
                     0);
    assert_int_equal(c.workers, 4);
    assert_int_equal(config_set(&c, "workers", "x", "-o", diag, sizeof(diag)),
                     -1);
    assert_non_null(strstr(diag, "-o: workers"));
}

static void
test_load_file(void **state)
{
    char path[] = "/tmp/apiary-test-XXXXXX";
    int fd = mkstemp(path);
    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "workers = 6\nbogus = 1\n", 22), 22);
    close(fd);
    assert_int_equal(config_load_file(&c, path, diag, sizeof(diag)), -1);
    assert_non_null(strstr(diag, ":2: unknown key \"bogus\""));
    assert_int_equal(c.workers, 6);
    unlink(path);
    assert_int_equal(config_load_file(&c, path, diag, sizeof(diag)), -1);
    assert_non_null(strstr(diag, "cannot open"));
}

static void
test_print_hides_password(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    (void)state;
    assert_int_equal(config_set(&c, "database_url",
                                "postgresql://app:s3cret@db:5432/apiary", "-o",
                                diag, sizeof(diag)),
                     0);
    config_print(&c, f);
    fclose(f);
    assert_null(strstr(buf, "s3cret"));
    assert_non_null(strstr(buf, "postgresql://app:***@db:5432/apiary"));
    assert_non_null(strstr(buf, "workers"));
    free(buf);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, setup),
        cmocka_unit_test_setup(test_file_values, setup),
        cmocka_unit_test_setup(test_file_errors, setup),
        cmocka_unit_test_setup(test_value_too_long, setup),
        cmocka_unit_test_setup(test_nul_byte, setup),
        cmocka_unit_test_setup(test_env, setup),
        cmocka_unit_test_setup(test_precedence_file_then_set, setup),
        cmocka_unit_test_setup(test_load_file, setup),
        cmocka_unit_test_setup(test_print_hides_password, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
