/*
 * auth.h - bearer-token auth on writes (SPEC 2, issue 10).
 *
 * POST, PATCH and DELETE on a route that exists need
 * "Authorization: Bearer <JWT>", an HS256 token signed with the
 * configured secret (jwt.h checks it).  The check runs at the
 * after-routing hook, so a refused request never has its body read and
 * never reaches its handler.  Reads are public unless auth_reads is on
 * (then every route but /health, /ready, /openapi.json and /debug/worker
 * needs a token too); 404 and 405 are left alone.
 *
 * Answers: 401 with "WWW-Authenticate: Bearer realm="apiary"" when no
 * token came (RFC 6750 3.1: no error code then), with
 * error="invalid_token" and an error_description when the token is bad;
 * 401 for a token in the query string (access_token=...: it would end up
 * in logs and proxies); 503 for every write when auth is on but no usable
 * secret is configured (the worker logs why at start).  The JSON body
 * says what was wrong; neither the token nor the secret is ever logged or
 * echoed.
 */
#ifndef APIARY_AUTH_H
#define APIARY_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "jwt.h"
#include "request.h"

#define AUTH_KEY_MAX 256
#define AUTH_KEY_MIN 32 /* bytes: RFC 7518 3.2, a key as long as the hash */
#define AUTH_CACHE_SLOTS 8
#define AUTH_CACHE_TOKEN_MAX 512

/*
 * Tokens this worker verified lately, with their exp/nbf: a client sends
 * the same token with every write, and checking the signature again
 * (HMAC, two JSON parses: about 7 us) is what the cache saves.  A token
 * is a hit only when it is byte for byte one that verified (so it carries
 * the same valid signature); its time claims are checked again on every
 * use.  Compared with CRYPTO_memcmp: the cached tokens are other
 * clients' credentials, and memcmp's early exit would time them.
 */
struct auth_cache_entry {
    uint16_t len; /* 0: empty */
    char token[AUTH_CACHE_TOKEN_MAX];
    struct jwt_times times;
};

struct auth {
    bool on;
    bool reads; /* auth_reads: GET/HEAD too, but for the probes */
    bool have_key;
    uint32_t leeway_s;
    size_t key_len;
    uint8_t key[AUTH_KEY_MAX];
    uint64_t rejected; /* 401s and 503s given */
    uint64_t verified, cache_hits;
    unsigned cache_next; /* round-robin replacement */
    struct auth_cache_entry cache[AUTH_CACHE_SLOTS];
};

/*
 * Sets a up from cfg: the key comes from auth_secret or, when that is
 * empty, from the file auth_secret_file (one line; a final newline is
 * ignored).  Returns 0, or -1 with why filled when auth is on and no
 * usable key was found (too short, unreadable file, none set): the worker
 * then logs why and answers writes 503.  Never puts key bytes into why.
 */
int auth_init(struct auth *a, const struct config *cfg, char *why,
              size_t why_len);

/*
 * Verifies a bearer token with a's key at now_s, through the cache.
 * Returns JWT_OK or a negative enum jwt_result (jwt.h).
 */
int auth_check_token(struct auth *a, const char *tok, size_t len,
                     int64_t now_s);

/* Clears the key and the cached tokens from memory. */
void auth_fini(struct auth *a);

/* After-routing hook (arg: struct auth *).  1 when it answered. */
int auth_route(struct request *r, void *arg);

/* Reads a secret file the way auth_init() does: key[0..*len).  0 or -1
 * with why filled.  For apiaryd -t and the tests. */
int auth_read_secret_file(const char *path, uint8_t *key, size_t *len,
                          char *why, size_t why_len);

#endif
