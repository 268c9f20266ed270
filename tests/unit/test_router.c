/*
 * test_router.c - method + pattern matching, 404 vs 405, Allow strings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "router.h"

static void
h_a(void)
{
}
static void
h_b(void)
{
}

static struct router r;

static int
setup(void **state)
{
    (void)state;
    router_init(&r);
    assert_int_equal(router_add(&r, HTTP_GET, "/health", h_a, NULL), 0);
    assert_int_equal(router_add(&r, HTTP_GET, "/users", h_a, NULL), 0);
    assert_int_equal(router_add(&r, HTTP_POST, "/users", h_b, NULL), 0);
    assert_int_equal(router_add(&r, HTTP_GET, "/users/{id}", h_a, NULL), 0);
    assert_int_equal(router_add(&r, HTTP_PATCH, "/users/{id}", h_b, NULL), 0);
    assert_int_equal(router_add(&r, HTTP_DELETE, "/users/{id}", h_b, NULL), 0);
    assert_int_equal(router_add(&r, HTTP_GET, "/users/{id}/orders", h_a, NULL),
                     0);
    assert_int_equal(router_add(&r, HTTP_GET, "/", h_b, NULL), 0);
    return 0;
}

static int
match(enum http_method m, const char *path, struct route_match *rm)
{
    return router_match(&r, m, path, strlen(path), rm);
}

static void
test_literal(void **state)
{
    struct route_match m;
    (void)state;
    assert_int_equal(match(HTTP_GET, "/health", &m), 0);
    assert_ptr_equal(m.route->handler, h_a);
    assert_int_equal(m.nparams, 0);
    assert_int_equal(match(HTTP_GET, "/", &m), 7);
}

static void
test_params(void **state)
{
    struct route_match m;
    (void)state;
    assert_int_equal(match(HTTP_GET, "/users/42", &m), 3);
    assert_int_equal(m.nparams, 1);
    assert_int_equal(m.params[0].len, 2);
    assert_memory_equal(m.params[0].ptr, "42", 2);
    assert_int_equal(match(HTTP_GET, "/users/7/orders", &m), 6);
    assert_int_equal(m.nparams, 1);
    assert_memory_equal(m.params[0].ptr, "7", 1);
    assert_int_equal(match(HTTP_DELETE, "/users/x", &m), 5);
}

static void
test_not_found(void **state)
{
    struct route_match m;
    (void)state;
    assert_int_equal(match(HTTP_GET, "/nope", &m), ROUTER_NOT_FOUND);
    assert_int_equal(match(HTTP_GET, "/health/", &m), ROUTER_NOT_FOUND);
    assert_int_equal(match(HTTP_GET, "/users//orders", &m), ROUTER_NOT_FOUND);
    assert_int_equal(match(HTTP_GET, "/users/1/orders/2", &m),
                     ROUTER_NOT_FOUND);
    assert_int_equal(match(HTTP_GET, "", &m), ROUTER_NOT_FOUND);
    assert_int_equal(match(HTTP_GET, "health", &m), ROUTER_NOT_FOUND);
    assert_int_equal(match(HTTP_GET, "/a/b/c/d/e/f/g/h/i/j", &m),
                     ROUTER_NOT_FOUND);
}

static void
test_method_not_allowed(void **state)
{
    struct route_match m;
    char allow[64];
    (void)state;
    assert_int_equal(match(HTTP_POST, "/health", &m),
                     ROUTER_METHOD_NOT_ALLOWED);
    router_allow_string(m.allow, allow, sizeof(allow));
    assert_string_equal(allow, "GET, HEAD");
    assert_int_equal(match(HTTP_PUT, "/users/9", &m),
                     ROUTER_METHOD_NOT_ALLOWED);
    router_allow_string(m.allow, allow, sizeof(allow));
    assert_string_equal(allow, "GET, HEAD, DELETE, PATCH");
}

static void
test_head_matches_get(void **state)
{
    struct route_match m;
    (void)state;
    assert_int_equal(match(HTTP_HEAD, "/users", &m), 1);
    assert_ptr_equal(m.route->handler, h_a);
}

static void
test_bad_patterns(void **state)
{
    struct router r2;
    (void)state;
    router_init(&r2);
    assert_int_equal(router_add(&r2, HTTP_GET, "nope", h_a, NULL), -1);
    assert_int_equal(router_add(&r2, HTTP_GET, "/a//b", h_a, NULL), -1);
    assert_int_equal(router_add(&r2, HTTP_GET, "/a/", h_a, NULL), -1);
    assert_int_equal(
        router_add(&r2, HTTP_GET, "/{a}/{b}/{c}/{d}/{e}", h_a, NULL), -1);
    for (int i = 0; i < ROUTER_MAX_ROUTES; i++)
        assert_int_equal(router_add(&r2, HTTP_GET, "/x", h_a, NULL), 0);
    assert_int_equal(router_add(&r2, HTTP_GET, "/x", h_a, NULL), -1);
}

static void
test_allow_truncates(void **state)
{
    char small[8];
    (void)state;
    router_allow_string((1u << HTTP_GET) | (1u << HTTP_DELETE), small,
                        sizeof(small));
    assert_string_equal(small, "GET");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_literal, setup),
        cmocka_unit_test_setup(test_params, setup),
        cmocka_unit_test_setup(test_not_found, setup),
        cmocka_unit_test_setup(test_method_not_allowed, setup),
        cmocka_unit_test_setup(test_head_matches_get, setup),
        cmocka_unit_test(test_bad_patterns),
        cmocka_unit_test(test_allow_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
