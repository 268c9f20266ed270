/*
 * jwt.c - see jwt.h.
 */
#include "jwt.h"

#include <math.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SHA256_BYTES 32

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int
b64val(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '-')
        return 62;
    if (ch == '_')
        return 63;
    return -1;
}

long
jwt_b64url_decode(const char *src, size_t len, uint8_t *dst, size_t cap)
{
    size_t out = 0, i = 0;
    uint32_t acc = 0;
    unsigned bits = 0;

    /* 4n+1 characters can never come from whole bytes */
    if (len % 4 == 1)
        return -1;
    if (len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0) > cap)
        return -1;
    for (i = 0; i < len; i++) {
        int v = b64val((unsigned char)src[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            dst[out++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* RFC 4648 3.5: the pad bits of the last character must be zero */
    if (acc != 0)
        return -1;
    return (long)out;
}

long
jwt_b64url_encode(const uint8_t *src, size_t len, char *dst, size_t cap)
{
    size_t need = len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0), o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;

    if (need + 1 > cap)
        return -1;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | src[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            dst[o++] = b64url[(acc >> bits) & 63];
        }
        acc &= (1u << bits) - 1;
    }
    if (bits)
        dst[o++] = b64url[(acc << (6 - bits)) & 63];
    dst[o] = '\0';
    return (long)o;
}

/* Decodes a base64url part holding a JSON object. */
static json_t *
decode_object(const char *s, size_t len, int bad_base64, int *err)
{
    uint8_t buf[JWT_MAX_BYTES];
    json_t *doc;
    long n = jwt_b64url_decode(s, len, buf, sizeof(buf));

    if (n < 0) {
        *err = bad_base64;
        return NULL;
    }
    doc =
        json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (doc == NULL || !json_is_object(doc)) {
        json_decref(doc);
        *err = -1;
        return NULL;
    }
    return doc;
}

/* A NumericDate (RFC 7519 2): 1 and 0 with *v set, -1 when not a number. */
static int
numeric_date(const json_t *doc, const char *name, double *v)
{
    const json_t *x = json_object_get(doc, name);

    if (x == NULL)
        return 0;
    if (!json_is_number(x))
        return -1;
    *v = json_number_value(x);
    if (!isfinite(*v))
        return -1;
    return 1;
}

int
jwt_times_check(const struct jwt_times *t, int64_t now_s, uint32_t leeway_s)
{
    if ((double)now_s > t->exp + (double)leeway_s)
        return JWT_E_EXPIRED;
    if ((double)now_s + (double)leeway_s < t->nbf)
        return JWT_E_NOT_YET;
    return JWT_OK;
}

int
jwt_verify_hs256(const char *token, size_t len, const uint8_t *key,
                 size_t key_len, int64_t now_s, uint32_t leeway_s,
                 struct jwt_times *times)
{
    const char *dot1, *dot2, *sig;
    uint8_t mac[EVP_MAX_MD_SIZE], given[EVP_MAX_MD_SIZE + 3];
    unsigned mac_len = 0;
    json_t *hdr = NULL, *body = NULL;
    const json_t *alg;
    struct jwt_times t;
    long n;
    int rc, err = 0;

    if (token == NULL || len == 0)
        return JWT_E_EMPTY;
    if (len > JWT_MAX_BYTES)
        return JWT_E_TOO_LONG;
    dot1 = memchr(token, '.', len);
    if (dot1 == NULL)
        return JWT_E_PARTS;
    dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (dot2 == NULL)
        return JWT_E_PARTS;
    sig = dot2 + 1;
    if (memchr(sig, '.', len - (size_t)(sig - token)) != NULL ||
        dot1 == token || dot2 == dot1 + 1 || sig == token + len)
        return JWT_E_PARTS;

    /* header first: the algorithm is ours to decide, not the token's */
    hdr = decode_object(token, (size_t)(dot1 - token), JWT_E_BASE64, &err);
    if (hdr == NULL) {
        rc = err == JWT_E_BASE64 ? JWT_E_BASE64 : JWT_E_HEADER;
        goto done;
    }
    alg = json_object_get(hdr, "alg");
    if (!json_is_string(alg) || strcmp(json_string_value(alg), "HS256") != 0) {
        rc = JWT_E_ALG;
        goto done;
    }
    if (json_object_get(hdr, "crit") != NULL) {
        rc = JWT_E_CRIT;
        goto done;
    }

    n = jwt_b64url_decode(sig, len - (size_t)(sig - token), given,
                          sizeof(given));
    if (n < 0) {
        rc = JWT_E_BASE64;
        goto done;
    }
    if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)token,
             (size_t)(dot2 - token), mac, &mac_len) == NULL ||
        mac_len != SHA256_BYTES) {
        rc = JWT_E_INTERNAL;
        goto done;
    }
    /* constant time; a wrong length is no secret */
    if (n != SHA256_BYTES || CRYPTO_memcmp(mac, given, SHA256_BYTES) != 0) {
        rc = JWT_E_SIGNATURE;
        goto done;
    }

    body =
        decode_object(dot1 + 1, (size_t)(dot2 - dot1 - 1), JWT_E_BASE64, &err);
    if (body == NULL) {
        rc = err == JWT_E_BASE64 ? JWT_E_BASE64 : JWT_E_PAYLOAD;
        goto done;
    }
    if (numeric_date(body, "exp", &t.exp) != 1) {
        rc = JWT_E_NO_EXP;
        goto done;
    }
    switch (numeric_date(body, "nbf", &t.nbf)) {
    case -1:
        rc = JWT_E_NBF;
        goto done;
    case 0:
        t.nbf = -INFINITY;
        break;
    default:
        break;
    }
    if (times)
        *times = t;
    rc = jwt_times_check(&t, now_s, leeway_s);
done:
    json_decref(hdr);
    json_decref(body);
    OPENSSL_cleanse(mac, sizeof(mac));
    return rc;
}

const char *
jwt_message(int result)
{
    switch (result) {
    case JWT_OK:
        return "valid token";
    case JWT_E_EMPTY:
        return "empty bearer token";
    case JWT_E_TOO_LONG:
        return "token too long";
    case JWT_E_PARTS:
        return "token is not header.payload.signature";
    case JWT_E_BASE64:
        return "token part is not base64url";
    case JWT_E_HEADER:
        return "token header is not a JSON object";
    case JWT_E_ALG:
        return "token algorithm is not HS256";
    case JWT_E_CRIT:
        return "token has critical extensions";
    case JWT_E_SIGNATURE:
        return "token signature does not match";
    case JWT_E_PAYLOAD:
        return "token payload is not a JSON object";
    case JWT_E_NO_EXP:
        return "token has no numeric exp claim";
    case JWT_E_EXPIRED:
        return "token expired";
    case JWT_E_NBF:
        return "token nbf claim is not a number";
    case JWT_E_NOT_YET:
        return "token not valid yet (nbf)";
    default:
        return "token could not be checked";
    }
}
