/*
 * jwt.h - verification of HS256 JSON Web Tokens (RFC 7519, RFC 7515
 * compact serialisation) for the auth module (issue 10).
 *
 * Only what apiary needs: exactly three base64url parts, a header whose
 * "alg" is "HS256" (anything else, "none" included, is refused before the
 * signature is looked at, so an attacker cannot choose the algorithm), no
 * "crit" header, an HMAC-SHA256 signature compared in constant time
 * (CRYPTO_memcmp) before any claim is read, and a payload that is a JSON
 * object with a numeric "exp" (required) and optional numeric "nbf", both
 * checked against the caller's clock with a leeway.
 *
 * base64url is decoded here, strictly (RFC 4648 section 5 without
 * padding, RFC 7515 section 2): no '=', no whitespace, no '+' or '/', and
 * unused trailing bits must be zero, so a token has exactly one spelling.
 * OpenSSL's EVP_DecodeBlock speaks standard base64 with padding and skips
 * whitespace, so it would need a translated copy and still be lenient.
 *
 * Pure function of its inputs (no clock, no globals): unit-tested with
 * forged tokens and fuzzed (tests/fuzz/fuzz_jwt.c).  JSON is parsed with
 * jansson (it allocates; verification is on the write path only, which
 * goes to the database anyway).
 */
#ifndef APIARY_JWT_H
#define APIARY_JWT_H

#include <stddef.h>
#include <stdint.h>

/* Longest token accepted, in bytes. */
#define JWT_MAX_BYTES 4096

enum jwt_result {
    JWT_OK = 0,
    JWT_E_EMPTY = -1,     /* no token */
    JWT_E_TOO_LONG = -2,  /* over JWT_MAX_BYTES */
    JWT_E_PARTS = -3,     /* not header.payload.signature */
    JWT_E_BASE64 = -4,    /* a part is not strict base64url */
    JWT_E_HEADER = -5,    /* header is not a JSON object */
    JWT_E_ALG = -6,       /* alg is not HS256 (none, HS512, RS256 ...) */
    JWT_E_CRIT = -7,      /* crit header: extensions we do not know */
    JWT_E_SIGNATURE = -8, /* signature does not match */
    JWT_E_PAYLOAD = -9,   /* payload is not a JSON object */
    JWT_E_NO_EXP = -10,   /* exp missing or not a number */
    JWT_E_EXPIRED = -11,  /* now > exp + leeway */
    JWT_E_NBF = -12,      /* nbf not a number */
    JWT_E_NOT_YET = -13,  /* now + leeway < nbf */
    JWT_E_INTERNAL = -14, /* HMAC failed or out of memory */
};

/*
 * Decodes strict unpadded base64url src[0..len) into dst (cap bytes).
 * Returns the decoded length, or -1 for a bad byte, an impossible length,
 * non-zero trailing bits, or a result longer than cap.
 */
long jwt_b64url_decode(const char *src, size_t len, uint8_t *dst, size_t cap);

/* Encodes src[0..len) as unpadded base64url into dst (cap bytes, NUL
 * added).  Returns the length, or -1 if it does not fit. */
long jwt_b64url_encode(const uint8_t *src, size_t len, char *dst, size_t cap);

/* The time claims of a token whose signature was verified. */
struct jwt_times {
    double exp;
    double nbf; /* -infinity when absent */
};

/*
 * Verifies token[0..len) against key[0..key_len) at time now_s (Unix
 * seconds) with leeway_s of clock skew allowed on exp and nbf.  Returns
 * JWT_OK or a negative enum jwt_result.  When times is not NULL and the
 * signature and claims were read (JWT_OK, JWT_E_EXPIRED, JWT_E_NOT_YET),
 * it receives exp and nbf, so a caller that caches verified tokens can
 * check their time again (jwt_times_check()).  Thread-safe; allocates
 * only inside jansson, freed before it returns.
 */
int jwt_verify_hs256(const char *token, size_t len, const uint8_t *key,
                     size_t key_len, int64_t now_s, uint32_t leeway_s,
                     struct jwt_times *times);

/* JWT_OK, JWT_E_EXPIRED or JWT_E_NOT_YET for t at now_s with leeway_s. */
int jwt_times_check(const struct jwt_times *t, int64_t now_s,
                    uint32_t leeway_s);

/* What a result means, for the 401 body ("token expired"); never holds
 * token or key bytes. */
const char *jwt_message(int result);

#endif
