/*
 * fuzz_notify.c - payloads of the cache invalidation channel (api.c,
 * "Shared cache"): what another host's statement sent with pg_notify().
 *
 * The input is one payload (cut at its first NUL, as libpq delivers a C
 * string).  api_cache_notify() must invalidate or flush, never crash; a
 * well-formed "user:ID" / "order:ID" must hide a cached body of that key.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "api_priv.h"
#include "cache.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct api api;
    static struct cache *c;
    char payload[512], buf[CACHE_BODY_MAX];
    struct cache_ticket t;
    int64_t id = 0;
    int status;
    size_t n = size < sizeof(payload) - 1 ? size : sizeof(payload) - 1;

    if (c == NULL) {
        c = cache_open(CACHE_MIN_BYTES);
        if (c == NULL)
            abort();
        api_init(&api, NULL);
        api_set_cache(&api, c, 0);
        log_min_level = LOG_ERROR; /* the flush warning is expected */
    }
    memcpy(payload, data, n);
    payload[n] = '\0';
    if (strncmp(payload, "user:", 5) == 0 &&
        api_parse_id(payload + 5, strlen(payload + 5), &id)) {
        cache_ticket(c, CACHE_USER, (uint64_t)id, &t);
        if (cache_put(c, &t, 200, "{}", 2, 0, 0, NULL) < 0)
            abort();
    }
    api_cache_notify(&api, payload);
    if (id > 0 && cache_get(c, CACHE_USER, (uint64_t)id, 0, buf, sizeof(buf),
                            &status, NULL) >= 0)
        abort();
    return 0;
}
