/*
 * fuzz_json.c - request bodies and the response writer.
 *
 * The input is parsed as a request body the way api_body() does (jansson,
 * duplicates rejected); every string found is run through the validators
 * the handlers use, and written back with the JSON writer, which must
 * produce JSON that jansson reads back to the same bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api_priv.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_string(const char *s, size_t n)
{
    struct jbuf b = {0};
    json_t *back;

    (void)api_valid_email(s, n);
    if (api_utf8_len(s, n) > n)
        abort();
    json_reset(&b);
    json_str(&b, s, n);
    if (json_failed(&b))
        abort();
    back = json_loadb(b.p, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    /* jansson refuses invalid UTF-8, which PostgreSQL never sends us */
    if (back) {
        if (json_string_length(back) != n ||
            memcmp(json_string_value(back), s, n) != 0)
            abort();
        json_decref(back);
    }
    json_fini(&b);
}

static void
walk(json_t *v, int depth)
{
    const char *key;
    json_t *item;
    size_t i;

    if (depth > 64)
        return;
    if (json_is_string(v)) {
        check_string(json_string_value(v), json_string_length(v));
    } else if (json_is_object(v)) {
        json_object_foreach(v, key, item)
        {
            check_string(key, strlen(key));
            walk(item, depth + 1);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, item) walk(item, depth + 1);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t err;
    json_t *root =
        json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &err);

    check_string((const char *)data, size);
    if (root) {
        walk(root, 0);
        json_decref(root);
    }
    return 0;
}
