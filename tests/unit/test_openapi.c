/*
 * test_openapi.c - the embedded OpenAPI document (worker/openapi.json)
 * against the router's table: every route the worker registers is in the
 * document with its method, and every operation in the document is a
 * route; writes declare the bearer scheme and 401; every operation
 * declares 429; every path parameter is declared.  Fails when a route is
 * added, removed or renamed without the document following.
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "api.h"
#include "config.h"
#include "handlers.h"
#include "openapi.h"
#include "router.h"

static struct router rt;
static json_t *doc;

static int
setup(void **state)
{
    static struct api api;
    struct config cfg;
    size_t len;
    const char *text = openapi_document(&len);
    json_error_t err;

    (void)state;
    config_defaults(&cfg);
    cfg.debug_endpoints = true; /* every route that can exist */
    cfg.status_page = true;
    router_init(&rt);
    if (handlers_register(&rt, &cfg, NULL) < 0 || api_register(&rt, &api) < 0 ||
        openapi_register(&rt) < 0)
        return -1;
    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (doc == NULL) {
        fprintf(stderr, "openapi.json: line %d: %s\n", err.line, err.text);
        return -1;
    }
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    json_decref(doc);
    return 0;
}

static void
lower(const char *in, char *out, size_t cap)
{
    size_t i = 0;

    for (; in[i] && i + 1 < cap; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[i] = '\0';
}

static void
test_header(void **state)
{
    const json_t *sec;

    (void)state;
    assert_string_equal(json_string_value(json_object_get(doc, "openapi")),
                        "3.1.0");
    sec = json_object_get(
        json_object_get(json_object_get(doc, "components"), "securitySchemes"),
        "bearer");
    assert_non_null(sec);
    assert_string_equal(json_string_value(json_object_get(sec, "scheme")),
                        "bearer");
}

static void
test_routes_in_document(void **state)
{
    const json_t *paths = json_object_get(doc, "paths");

    (void)state;
    assert_non_null(paths);
    for (unsigned i = 0; i < rt.nroutes; i++) {
        const struct route *r = &rt.routes[i];
        const json_t *op, *resp;
        char m[16];

        lower(http_method_name(r->method), m, sizeof(m));
        op = json_object_get(json_object_get(paths, r->pattern), m);
        if (op == NULL)
            fail_msg("route %s %s is not in worker/openapi.json",
                     http_method_name(r->method), r->pattern);
        resp = json_object_get(op, "responses");
        assert_non_null(resp);
        if (r->method == HTTP_POST || r->method == HTTP_PATCH ||
            r->method == HTTP_DELETE) {
            if (json_object_get(op, "security") == NULL ||
                json_object_get(resp, "401") == NULL)
                fail_msg("%s %s: a write without bearer security or 401", m,
                         r->pattern);
        }
        if (strcmp(r->pattern, "/debug/worker") != 0 &&
            json_object_get(resp, "429") == NULL)
            fail_msg("%s %s: no 429 answer", m, r->pattern);
        /* each {param} of the pattern is declared (by $ref or inline) */
        for (const char *p = strchr(r->pattern, '{'); p;
             p = strchr(p + 1, '{')) {
            const json_t *params = json_object_get(op, "parameters");
            size_t k;
            const json_t *pv;
            int found = 0;
            json_array_foreach(params, k, pv)
            {
                const char *ref =
                    json_string_value(json_object_get(pv, "$ref"));
                const char *name =
                    json_string_value(json_object_get(pv, "name"));
                if ((ref && strstr(ref, "/Id")) ||
                    (name && strncmp(name, p + 1, strlen(name)) == 0))
                    found = 1;
            }
            if (!found)
                fail_msg("%s %s: path parameter not declared", m, r->pattern);
        }
    }
}

static void
test_document_in_routes(void **state)
{
    const json_t *paths = json_object_get(doc, "paths"), *ops;
    const char *path;

    (void)state;
    json_object_foreach((json_t *)(uintptr_t)paths, path, ops)
    {
        const char *method;
        const json_t *op;
        json_object_foreach((json_t *)(uintptr_t)ops, method, op)
        {
            int found = 0;
            for (unsigned i = 0; i < rt.nroutes; i++) {
                char m[16];
                lower(http_method_name(rt.routes[i].method), m, sizeof(m));
                if (strcmp(rt.routes[i].pattern, path) == 0 &&
                    strcmp(m, method) == 0)
                    found = 1;
            }
            if (!found)
                fail_msg("worker/openapi.json has %s %s, the router does not",
                         method, path);
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_routes_in_document),
        cmocka_unit_test(test_document_in_routes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
