/*
 * test_edge.c - the small parsers of issue 10's request handling:
 * Accept-Encoding with q-values (gzip.c), the cors_origins list
 * (cors.c), and request ids (request_id.c: which client ids are taken,
 * and that generated ones are distinct and well formed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "cors.h"
#include "gzip.h"
#include "request_id.h"

static int
accepts(const char *v)
{
    return gzip_accepted(v, strlen(v));
}

static void
test_accept_encoding(void **state)
{
    (void)state;
    assert_true(accepts("gzip"));
    assert_true(accepts("GZip"));
    assert_true(accepts("x-gzip"));
    assert_true(accepts("deflate, gzip;q=0.5"));
    assert_true(accepts("br;q=1.0, gzip; q=0.001"));
    assert_true(accepts("*"));
    assert_true(accepts("gzip;q=1"));
    assert_true(accepts("gzip;level=1;q=0.5"));
    assert_false(accepts(""));
    assert_false(accepts("identity"));
    assert_false(accepts("deflate, br"));
    assert_false(accepts("gzip;q=0"));
    assert_false(accepts("gzip;q=0.000"));
    assert_false(accepts("gzip; Q=0"));
    assert_false(accepts("*;q=0"));
    /* gzip named with q=0 wins over "*" */
    assert_false(accepts("gzip;q=0, *"));
    assert_false(accepts("*, gzip;q=0"));
    /* a malformed q-value is not an acceptance */
    assert_false(accepts("gzip;q=abc"));
    assert_false(accepts("gzip;q="));
    assert_false(accepts(",,,"));
    assert_false(accepts("gzipx"));
}

static void
test_cors_origins(void **state)
{
    struct config cfg;
    struct cors co;
    char why[128];

    (void)state;
    config_defaults(&cfg);
    assert_int_equal(cors_init(&co, &cfg, why, sizeof(why)), 0);
    assert_false(co.on);

    strcpy(cfg.cors_origins, " https://a.example ,https://b.example:8443");
    assert_int_equal(cors_init(&co, &cfg, why, sizeof(why)), 0);
    assert_true(co.on);
    assert_int_equal(co.norigins, 2);
    assert_int_equal(co.origins[0].len, strlen("https://a.example"));
    assert_memory_equal(co.origins[1].ptr, "https://b.example:8443", 22);

    strcpy(cfg.cors_origins, "https://a.example,,https://b.example");
    assert_int_equal(cors_init(&co, &cfg, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "empty"));

    /* review finding: an origin whose Allow-Origin line did not fit the
     * serialise hook's buffer was accepted and then never allowed */
    {
        char origin[CORS_ORIGIN_MAX + 2];
        struct request r;
        struct response resp;
        struct hdrbuf h;

        memset(origin, 'a', sizeof(origin) - 1);
        memcpy(origin, "https://", 8);
        origin[CORS_ORIGIN_MAX] = '\0';
        strcpy(cfg.cors_origins, origin);
        cfg.cors_credentials = true;
        assert_int_equal(cors_init(&co, &cfg, why, sizeof(why)), 0);
        memset(&r, 0, sizeof(r));
        memset(&resp, 0, sizeof(resp));
        memset(&h, 0, sizeof(h));
        r.cors_origin = 1;
        cors_serialise(&r, &resp, &h, &co);
        assert_non_null(memmem(h.buf, h.len, origin, CORS_ORIGIN_MAX));
        assert_non_null(
            memmem(h.buf, h.len, "Access-Control-Allow-Credentials: true", 38));
        cfg.cors_credentials = false;
        origin[CORS_ORIGIN_MAX] = 'a';
        origin[CORS_ORIGIN_MAX + 1] = '\0';
        strcpy(cfg.cors_origins, origin);
        assert_int_equal(cors_init(&co, &cfg, why, sizeof(why)), -1);
        assert_non_null(strstr(why, "longer"));
    }

    strcpy(cfg.cors_origins, "*");
    assert_int_equal(cors_init(&co, &cfg, why, sizeof(why)), 0);
    assert_true(co.any);
    cfg.cors_credentials = true;
    assert_int_equal(cors_init(&co, &cfg, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "credentials"));
}

static void
test_request_ids(void **state)
{
    struct request_id ri;
    struct request *r = calloc(1, sizeof(*r));
    struct response resp = {0};
    struct hdrbuf h = {0};
    char first[REQUEST_ID_MAX + 1];

    (void)state;
    assert_non_null(r);
    assert_true(request_id_valid("abc-123", 7));
    assert_true(request_id_valid("0123456789012345678901234567890123456789"
                                 "012345678901234567890123",
                                 64));
    assert_false(request_id_valid("", 0));
    assert_false(request_id_valid("0123456789012345678901234567890123456789"
                                  "0123456789012345678901234",
                                  65));
    assert_false(request_id_valid("a b", 3));
    assert_false(request_id_valid("a\"b", 3));
    assert_false(request_id_valid("a\\b", 3));
    assert_false(request_id_valid("a\x7f", 2));
    assert_false(request_id_valid("\xc3\xa9", 2));

    assert_int_equal(request_id_init(&ri), 0);
    /* a client's sane id is taken as it is */
    r->req.request_id.ptr = (char *)(uintptr_t) "client-7";
    r->req.request_id.len = 8;
    assert_int_equal(request_id_route(r, &ri), 0);
    assert_int_equal(r->rid_len, 8);
    assert_memory_equal(r->rid, "client-7", 8);
    /* none: generated, 16 hex digits, '-', a counter */
    r->req.request_id.len = 0;
    r->rid_len = 0;
    request_id_route(r, &ri);
    assert_int_equal(r->rid_len, 18);
    assert_int_equal(r->rid[16], '-');
    assert_int_equal(strspn(r->rid, "0123456789abcdef"), 16);
    memcpy(first, r->rid, r->rid_len);
    first[r->rid_len] = '\0';
    assert_string_equal(first + 16, "-1");
    /* the next one differs; the counter runs past one hex digit */
    for (int i = 0; i < 20; i++) {
        r->rid_len = 0;
        request_id_route(r, &ri);
    }
    assert_int_equal(r->rid_len, 19);
    assert_memory_equal(r->rid + 17, "15", 2); /* 21 */
    assert_memory_equal(r->rid, first, 16);    /* same worker, same prefix */
    /* the header line */
    request_id_serialise(r, &resp, &h, &ri);
    assert_int_equal(h.len, strlen("X-Request-Id: \r\n") + 19);
    assert_memory_equal(h.buf, "X-Request-Id: ", 14);
    assert_memory_equal(h.buf + h.len - 2, "\r\n", 2);
    /* another worker draws another prefix */
    {
        struct request_id other;
        assert_int_equal(request_id_init(&other), 0);
        assert_memory_not_equal(other.prefix, ri.prefix, 16);
    }
    free(r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_encoding),
        cmocka_unit_test(test_cors_origins),
        cmocka_unit_test(test_request_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
