/*
 * test_auth.c - HS256 JWT verification (jwt.c) against forged tokens, the
 * strict base64url decoder, and auth_init()'s secret handling (auth.c).
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
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"
#include "config.h"
#include "jwt.h"

static const char KEY[] = "unit-test-key-0123456789abcdef-0123456789";
#define NOW 1800000000LL

/* header.payload.signature, signed with md under key (NULL md: no
 * signature part content, as alg none sends). */
static char *
make(const char *header, const char *payload, const EVP_MD *md, const char *key)
{
    static char tok[16384];
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    long n, m;

    n = jwt_b64url_encode((const uint8_t *)header, strlen(header), tok,
                          sizeof(tok));
    assert_true(n > 0);
    tok[n++] = '.';
    m = jwt_b64url_encode((const uint8_t *)payload, strlen(payload), tok + n,
                          sizeof(tok) - (size_t)n);
    assert_true(m >= 0);
    n += m;
    if (md == NULL) {
        tok[n++] = '.';
        tok[n] = '\0';
        return tok;
    }
    assert_non_null(HMAC(md, key, (int)strlen(key), (const uint8_t *)tok,
                         (size_t)n, mac, &mac_len));
    tok[n++] = '.';
    m = jwt_b64url_encode(mac, mac_len, tok + n, sizeof(tok) - (size_t)n);
    assert_true(m > 0);
    return tok;
}

static int
verify(const char *tok)
{
    return jwt_verify_hs256(tok, strlen(tok), (const uint8_t *)KEY, strlen(KEY),
                            NOW, 30, NULL);
}

#define HS256 "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define CLAIMS "{\"sub\":\"a\",\"exp\":1800000100}"

static void
test_valid(void **state)
{
    (void)state;
    assert_int_equal(verify(make(HS256, CLAIMS, EVP_sha256(), KEY)), JWT_OK);
    /* typ is optional, exp may be a real number, nbf in the past is fine */
    assert_int_equal(verify(make("{\"alg\":\"HS256\"}",
                                 "{\"exp\":1800000100.5,\"nbf\":1700000000}",
                                 EVP_sha256(), KEY)),
                     JWT_OK);
}

static void
test_alg_none(void **state)
{
    (void)state;
    assert_int_equal(verify(make("{\"alg\":\"none\"}", CLAIMS, NULL, KEY)),
                     JWT_E_PARTS);
    /* none with a real HS256 signature: still the token's alg is refused */
    assert_int_equal(
        verify(make("{\"alg\":\"none\"}", CLAIMS, EVP_sha256(), KEY)),
        JWT_E_ALG);
    assert_int_equal(
        verify(make("{\"alg\":\"None\"}", CLAIMS, EVP_sha256(), KEY)),
        JWT_E_ALG);
    assert_int_equal(
        verify(make("{\"typ\":\"JWT\"}", CLAIMS, EVP_sha256(), KEY)),
        JWT_E_ALG);
    assert_int_equal(verify(make("{\"alg\":256}", CLAIMS, EVP_sha256(), KEY)),
                     JWT_E_ALG);
}

static void
test_other_algs(void **state)
{
    (void)state;
    assert_int_equal(
        verify(make("{\"alg\":\"HS512\"}", CLAIMS, EVP_sha512(), KEY)),
        JWT_E_ALG);
    assert_int_equal(
        verify(make("{\"alg\":\"HS384\"}", CLAIMS, EVP_sha384(), KEY)),
        JWT_E_ALG);
    /* RS256 with the HMAC key as "public key": the classic confusion */
    assert_int_equal(
        verify(make("{\"alg\":\"RS256\"}", CLAIMS, EVP_sha256(), KEY)),
        JWT_E_ALG);
    /* an HS256 header over an HS512 signature: wrong length */
    assert_int_equal(verify(make(HS256, CLAIMS, EVP_sha512(), KEY)),
                     JWT_E_SIGNATURE);
    assert_int_equal(verify(make("{\"alg\":\"HS256\",\"crit\":[\"x\"]}", CLAIMS,
                                 EVP_sha256(), KEY)),
                     JWT_E_CRIT);
}

static void
test_wrong_key(void **state)
{
    char *tok;
    size_t n;

    (void)state;
    assert_int_equal(verify(make(HS256, CLAIMS, EVP_sha256(),
                                 "unit-test-key-0123456789abcdef-012345678X")),
                     JWT_E_SIGNATURE);
    /* one flipped signature character */
    tok = make(HS256, CLAIMS, EVP_sha256(), KEY);
    n = strlen(tok);
    tok[n - 2] = tok[n - 2] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(tok), JWT_E_SIGNATURE);
    /* a payload changed after signing */
    tok = make(HS256, CLAIMS, EVP_sha256(), KEY);
    {
        char other[8192];
        char *dot1 = strchr(tok, '.'), *dot2 = strchr(dot1 + 1, '.');
        long m;
        size_t hl = (size_t)(dot1 - tok) + 1;
        memcpy(other, tok, hl);
        m = jwt_b64url_encode((const uint8_t *)"{\"exp\":1900000000}", 18,
                              other + hl, sizeof(other) - hl);
        assert_true(m > 0);
        strcpy(other + hl + (size_t)m, dot2);
        assert_int_equal(verify(other), JWT_E_SIGNATURE);
    }
}

static void
test_time_claims(void **state)
{
    (void)state;
    /* expired: beyond the 30 s leeway, and within it */
    assert_int_equal(
        verify(make(HS256, "{\"exp\":1799999960}", EVP_sha256(), KEY)),
        JWT_E_EXPIRED);
    assert_int_equal(
        verify(make(HS256, "{\"exp\":1799999980}", EVP_sha256(), KEY)), JWT_OK);
    /* not yet valid, and within the leeway */
    assert_int_equal(
        verify(make(HS256, "{\"exp\":1800000100,\"nbf\":1800000040}",
                    EVP_sha256(), KEY)),
        JWT_E_NOT_YET);
    assert_int_equal(
        verify(make(HS256, "{\"exp\":1800000100,\"nbf\":1800000020}",
                    EVP_sha256(), KEY)),
        JWT_OK);
    /* exp is required and must be a number */
    assert_int_equal(verify(make(HS256, "{\"sub\":\"a\"}", EVP_sha256(), KEY)),
                     JWT_E_NO_EXP);
    assert_int_equal(
        verify(make(HS256, "{\"exp\":\"1800000100\"}", EVP_sha256(), KEY)),
        JWT_E_NO_EXP);
    assert_int_equal(verify(make(HS256, "{\"exp\":1800000100,\"nbf\":null}",
                                 EVP_sha256(), KEY)),
                     JWT_E_NBF);
    assert_int_equal(verify(make(HS256, "[1800000100]", EVP_sha256(), KEY)),
                     JWT_E_PAYLOAD);
    assert_int_equal(verify(make(HS256, "{\"exp\":1,\"exp\":1800000100}",
                                 EVP_sha256(), KEY)),
                     JWT_E_PAYLOAD);
}

static void
test_malformed(void **state)
{
    char buf[JWT_MAX_BYTES + 64];
    char *tok;

    (void)state;
    assert_int_equal(verify(""), JWT_E_EMPTY);
    assert_int_equal(verify("abc"), JWT_E_PARTS);
    assert_int_equal(verify("abc.def"), JWT_E_PARTS);
    assert_int_equal(verify(".."), JWT_E_PARTS);
    assert_int_equal(verify("a..b"), JWT_E_PARTS);
    /* extra parts (a JWE has five) */
    tok = make(HS256, CLAIMS, EVP_sha256(), KEY);
    snprintf(buf, sizeof(buf), "%s.abc", tok);
    assert_int_equal(verify(buf), JWT_E_PARTS);
    snprintf(buf, sizeof(buf), "%s.", tok);
    assert_int_equal(verify(buf), JWT_E_PARTS);
    /* malformed base64: padding, standard alphabet, space, bad length */
    tok = make(HS256, CLAIMS, EVP_sha256(), KEY);
    snprintf(buf, sizeof(buf), "%s=", tok);
    assert_int_equal(verify(buf), JWT_E_BASE64);
    snprintf(buf, sizeof(buf), "%s", tok);
    buf[3] = '+';
    assert_int_equal(verify(buf), JWT_E_BASE64);
    buf[3] = ' ';
    assert_int_equal(verify(buf), JWT_E_BASE64);
    assert_int_equal(verify("eyJhbGciOiJIUzI1NiJ9x.e30.AAAA"), JWT_E_BASE64);
    /* a header that is not JSON */
    assert_int_equal(verify(make("not json", CLAIMS, EVP_sha256(), KEY)),
                     JWT_E_HEADER);
    /* oversized */
    memset(buf, 'A', sizeof(buf));
    buf[100] = '.';
    buf[200] = '.';
    buf[JWT_MAX_BYTES + 1] = '\0';
    assert_int_equal(verify(buf), JWT_E_TOO_LONG);
    assert_string_equal(jwt_message(JWT_E_EXPIRED), "token expired");
}

static void
test_base64url(void **state)
{
    uint8_t out[16];
    char enc[32];

    (void)state;
    assert_int_equal(jwt_b64url_decode("", 0, out, sizeof(out)), 0);
    assert_int_equal(jwt_b64url_decode("Zg", 2, out, sizeof(out)), 1);
    assert_int_equal(out[0], 'f');
    assert_int_equal(jwt_b64url_decode("Zm8", 3, out, sizeof(out)), 2);
    assert_int_equal(jwt_b64url_decode("Zm9v", 4, out, sizeof(out)), 3);
    /* non-zero unused bits: "Zh" would also decode to 'f' */
    assert_int_equal(jwt_b64url_decode("Zh", 2, out, sizeof(out)), -1);
    assert_int_equal(jwt_b64url_decode("Z", 1, out, sizeof(out)), -1);
    assert_int_equal(jwt_b64url_decode("Zg==", 4, out, sizeof(out)), -1);
    assert_int_equal(jwt_b64url_decode("_-8", 3, out, sizeof(out)), 2);
    assert_int_equal(out[0], 0xff);
    assert_int_equal(out[1], 0xef);
    assert_int_equal(jwt_b64url_decode("Zm9v", 4, out, 2), -1);
    assert_int_equal(
        jwt_b64url_encode((const uint8_t *)"\xff\xef", 2, enc, sizeof(enc)), 3);
    assert_string_equal(enc, "_-8");
    assert_int_equal(jwt_b64url_encode((const uint8_t *)"foo", 3, enc, 4), -1);
}

static void
test_auth_init(void **state)
{
    struct config cfg;
    struct auth a;
    char why[256], path[] = "/tmp/apiary-test-secret-XXXXXX";
    int fd;

    (void)state;
    config_defaults(&cfg);
    assert_int_equal(auth_init(&a, &cfg, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "auth_secret"));
    assert_false(a.have_key);

    strcpy(cfg.auth_secret, "short");
    assert_int_equal(auth_init(&a, &cfg, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "5 bytes"));
    assert_null(strstr(why, "short")); /* never the secret itself */

    strcpy(cfg.auth_secret, KEY);
    assert_int_equal(auth_init(&a, &cfg, why, sizeof(why)), 0);
    assert_true(a.have_key);
    assert_int_equal(a.key_len, strlen(KEY));
    auth_fini(&a);
    assert_int_equal(a.key_len, 0);

    /* a file, its final newline ignored */
    cfg.auth_secret[0] = '\0';
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, KEY, strlen(KEY)), (ssize_t)strlen(KEY));
    assert_int_equal(write(fd, "\n", 1), 1);
    assert_int_equal(close(fd), 0);
    strcpy(cfg.auth_secret_file, path);
    assert_int_equal(auth_init(&a, &cfg, why, sizeof(why)), 0);
    assert_int_equal(a.key_len, strlen(KEY));
    assert_memory_equal(a.key, KEY, strlen(KEY));
    auth_fini(&a);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(auth_init(&a, &cfg, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "cannot open"));

    cfg.auth = false;
    assert_int_equal(auth_init(&a, &cfg, why, sizeof(why)), 0);
    assert_false(a.on);
}

/* The verified-token cache: hits only for the same bytes, time checked
 * again on every hit. */
static void
test_cache(void **state)
{
    struct config cfg;
    struct auth a;
    char why[256], tok[1024], *t;
    size_t n;

    (void)state;
    config_defaults(&cfg);
    strcpy(cfg.auth_secret, KEY);
    assert_int_equal(auth_init(&a, &cfg, why, sizeof(why)), 0);
    t = make(HS256, CLAIMS, EVP_sha256(), KEY);
    strcpy(tok, t);
    n = strlen(tok);
    assert_int_equal(auth_check_token(&a, tok, n, NOW), JWT_OK);
    assert_int_equal(a.verified, 1);
    assert_int_equal(auth_check_token(&a, tok, n, NOW), JWT_OK);
    assert_int_equal(a.cache_hits, 1);
    /* the same token once it has expired: refused from the cache */
    assert_int_equal(auth_check_token(&a, tok, n, NOW + 1000), JWT_E_EXPIRED);
    assert_int_equal(a.cache_hits, 2);
    /* one byte changed: not a hit, and refused */
    tok[n - 1] = tok[n - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(auth_check_token(&a, tok, n, NOW), JWT_E_SIGNATURE);
    assert_int_equal(a.verified, 2);
    /* a prefix of a cached token is not a hit either */
    t = make(HS256, CLAIMS, EVP_sha256(), KEY);
    assert_int_not_equal(auth_check_token(&a, t, strlen(t) - 1, NOW), JWT_OK);
    auth_fini(&a);
    assert_int_equal(a.cache[0].len, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),       cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_other_algs),  cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_time_claims), cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_base64url),   cmocka_unit_test(test_auth_init),
        cmocka_unit_test(test_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
