/*
 * fuzz_jwt.c - the JWT verifier and its base64url decoder (jwt.c).
 *
 * The input is a token verified against a fixed key at a fixed time: it
 * must never crash or read out of bounds, and only a token whose
 * signature really is HMAC-SHA256 of its first two parts under that key
 * may be accepted (checked here independently with OpenSSL).  Each
 * base64url part must also round-trip: decode then encode gives the same
 * characters (the decoder accepts one spelling only).
 *
 * Random bytes almost never carry a valid signature, which would leave
 * the claims parser unexplored; so the input up to its second '.' is also
 * signed here and verified again: header and claims parsing then see
 * every mutation.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char KEY[] = "fuzz-key-0123456789abcdef-0123456789abcdef";

static void
round_trip(const char *s, size_t n)
{
    uint8_t dec[JWT_MAX_BYTES];
    char enc[JWT_MAX_BYTES + 8];
    long d = jwt_b64url_decode(s, n, dec, sizeof(dec)), e;

    if (d < 0)
        return;
    e = jwt_b64url_encode(dec, (size_t)d, enc, sizeof(enc));
    if (e != (long)n || memcmp(enc, s, n) != 0)
        abort();
}

/* Verifies data[0..n) + "." + its own signature. */
static void
signed_pass(const uint8_t *data, size_t n)
{
    static char tok[JWT_MAX_BYTES + 128];
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    struct jwt_times t;
    long e;

    if (n > JWT_MAX_BYTES || HMAC(EVP_sha256(), KEY, (int)sizeof(KEY) - 1, data,
                                  n, mac, &mac_len) == NULL)
        return;
    memcpy(tok, data, n);
    tok[n] = '.';
    e = jwt_b64url_encode(mac, mac_len, tok + n + 1, sizeof(tok) - n - 1);
    if (e < 0)
        abort();
    if (jwt_verify_hs256(tok, n + 1 + (size_t)e, (const uint8_t *)KEY,
                         sizeof(KEY) - 1, 1800000000LL, 30, &t) == JWT_OK &&
        jwt_times_check(&t, 1800000000LL, 30) != JWT_OK)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *tok = (const char *)data;
    const char *dot1, *dot2;
    int rc;

    rc = jwt_verify_hs256(tok, size, (const uint8_t *)KEY, sizeof(KEY) - 1,
                          1800000000LL, 30, NULL);
    if (jwt_message(rc) == NULL)
        abort();
    round_trip(tok, size < JWT_MAX_BYTES ? size : JWT_MAX_BYTES);
    dot1 = memchr(tok, '.', size);
    dot2 = dot1 ? memchr(dot1 + 1, '.', size - (size_t)(dot1 + 1 - tok)) : NULL;
    signed_pass(data, dot2 ? (size_t)(dot2 - tok) : size);
    if (rc != JWT_OK)
        return 0;
    /* accepted: the signature must really be ours */
    dot1 = memchr(tok, '.', size);
    dot2 = dot1 ? memchr(dot1 + 1, '.', size - (size_t)(dot1 + 1 - tok)) : NULL;
    if (dot2 == NULL)
        abort();
    {
        uint8_t mac[EVP_MAX_MD_SIZE], sig[64];
        unsigned mac_len = 0;
        long n = jwt_b64url_decode(dot2 + 1, size - (size_t)(dot2 + 1 - tok),
                                   sig, sizeof(sig));
        if (HMAC(EVP_sha256(), KEY, (int)sizeof(KEY) - 1, data,
                 (size_t)(dot2 - tok), mac, &mac_len) == NULL ||
            n != (long)mac_len || CRYPTO_memcmp(mac, sig, mac_len) != 0)
            abort();
    }
    return 0;
}
