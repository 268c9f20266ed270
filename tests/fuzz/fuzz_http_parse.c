/*
 * fuzz_http_parse.c - libFuzzer target for worker/http_parse.c.
 *
 * The input is treated as what one connection received.  It is copied to a
 * malloc'd buffer of exactly its size (so ASan sees any over-read) and
 * handled the way the worker does: parse a request, skip its Content-Length
 * body or decode its chunked body, then parse the next pipelined request,
 * until an error, AGAIN or the end.  Each step is done twice, on two copies
 * of the input: whole, and incrementally (two cut points taken from the
 * input's own bytes, and byte by byte for short inputs).  Both must give the
 * same result and, on success, the same request (slices compared as
 * offsets).  Everything is repeated with tight limits so the 414/431/413
 * paths get exercised by short inputs.
 *
 * Invariants (abort() when violated): results are AGAIN, a known error code
 * or a length <= len; CONNECT never parses (it is a 501); slices lie inside
 * the header section; the path starts
 * with '/' (or is "*" for OPTIONS), holds no NUL and as many '/' as the
 * raw path (%2F is never decoded into one); a Host holds none of
 * the bytes that make it more than one authority (SP, '@', '/', ','); framing
 * fields agree with each other; the chunked decoder's out <= in <= len.
 *
 * http_percent_decode() is checked against a plain reference decoder, and
 * http_query_next() is run over the whole input as a query string.
 *
 * Built by "make fuzz" with clang -fsanitize=fuzzer, and by the replay rule
 * with gcc and tests/fuzz/replay.c, which runs the corpus and regressions.
 */
#include "http_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr,                                                    \
                    "fuzz_http_parse: invariant failed: %s (line %d)\n",       \
                    #cond, __LINE__);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

#define MAX_REQUESTS 16
#define BYTEWISE_MAX 256

static const struct http_limits dflt = {
    .max_request_line = 8192,
    .max_header_bytes = 16384,
    .max_headers = 100,
    .max_body_bytes = 1024 * 1024,
};

static const struct http_limits tight = {
    .max_request_line = 48,
    .max_header_bytes = 128,
    .max_headers = 4,
    .max_body_bytes = 16,
};

static void
check_code(ssize_t r, size_t len)
{
    if (r >= 0) {
        CHECK((size_t)r <= len);
        return;
    }
    CHECK(r >= HTTP_PARSE_E_LAST);
    if (r != HTTP_PARSE_AGAIN) {
        int st = http_parse_status(r);
        const char *msg = http_parse_message(r);

        CHECK(st == 400 || st == 413 || st == 414 || st == 417 || st == 431 ||
              st == 501 || st == 505);
        CHECK(msg != NULL && msg[0] != '\0');
    }
}

/* Two cut points in [0, n], taken from input bytes near off. */
static void
cuts(const uint8_t *data, size_t size, size_t off, size_t n, size_t *k1,
     size_t *k2)
{
    size_t b1 = data[off % size], b2 = data[(off + 1) % size];

    *k1 = n * b1 / 256;
    *k2 = *k1 + (n - *k1) * b2 / 256;
}

/* ---- requests ------------------------------------------------------------ */

static void
check_slice(const struct http_slice *s, const char *buf, ssize_t r)
{
    if (s->len == 0) {
        return;
    }
    CHECK(s->ptr != NULL);
    CHECK(s->ptr >= buf && s->ptr + s->len <= buf + r);
}

static void
check_request(const struct http_request *req, const char *buf, ssize_t r,
              const struct http_limits *lim)
{
    const char *name;

    CHECK(r > 0);
    CHECK(req->header_bytes == (uint32_t)r);
    CHECK(req->method > HTTP_METHOD_NONE && req->method < HTTP_METHOD_COUNT);
    CHECK(req->method != HTTP_CONNECT);
    name = http_method_name(req->method);
    CHECK(req->method_name.len == strlen(name) &&
          memcmp(req->method_name.ptr, name, req->method_name.len) == 0);
    CHECK(req->version_minor <= 1);
    CHECK(req->has_body == (req->chunked || req->content_length > 0));
    CHECK(!(req->chunked && req->content_length > 0));
    CHECK(!req->chunked || req->version_minor == 1);
    CHECK(!req->expect_continue || req->version_minor == 1);
    CHECK(req->content_length <= lim->max_body_bytes);
    CHECK(req->nfields <= lim->max_headers);
    check_slice(&req->method_name, buf, r);
    check_slice(&req->target, buf, r);
    check_slice(&req->path, buf, r);
    check_slice(&req->query, buf, r);
    check_slice(&req->host, buf, r);
    check_slice(&req->content_type, buf, r);
    check_slice(&req->accept_encoding, buf, r);
    check_slice(&req->authorization, buf, r);
    check_slice(&req->request_id, buf, r);
    check_slice(&req->origin, buf, r);
    check_slice(&req->idempotency_key, buf, r);
    CHECK(req->target.len > 0 && req->target.len < (uint32_t)r);
    CHECK(req->target.len <= lim->max_request_line);
    CHECK(req->path.len > 0);
    CHECK(req->path.ptr[0] == '/' ||
          (req->method == HTTP_OPTIONS && req->path.len == 1 &&
           req->path.ptr[0] == '*'));
    CHECK(memchr(req->path.ptr, '\0', req->path.len) == NULL);
    CHECK(req->path.len <= req->target.len);
    CHECK(req->query.len < req->target.len);
    for (uint32_t i = 0; i < req->host.len; i++) {
        CHECK(req->host.ptr[i] != ' ' && req->host.ptr[i] != '@' &&
              req->host.ptr[i] != '/' && req->host.ptr[i] != ',');
    }
}

/* %2F stays encoded: the decoded path has as many '/' as the raw one. */
static void
check_path_slashes(const struct http_request *req, const char *buf,
                   const uint8_t *raw)
{
    size_t i = (size_t)(req->path.ptr - buf);
    size_t end = (size_t)(req->target.ptr - buf) + req->target.len;
    size_t nraw = 0, ndecoded = 0;

    for (; i < end && raw[i] != '?'; i++) {
        nraw += raw[i] == '/';
    }
    for (i = 0; i < req->path.len; i++) {
        ndecoded += req->path.ptr[i] == '/';
    }
    CHECK(nraw == ndecoded);
}

static void
same_slice(const struct http_slice *a, const char *abuf,
           const struct http_slice *b, const char *bbuf)
{
    CHECK(a->len == b->len);
    if (a->len > 0) {
        CHECK(a->ptr - abuf == b->ptr - bbuf);
        CHECK(memcmp(a->ptr, b->ptr, a->len) == 0);
    }
}

static void
same_request(const struct http_request *a, const char *abuf,
             const struct http_request *b, const char *bbuf)
{
    CHECK(a->method == b->method);
    CHECK(a->version_minor == b->version_minor);
    CHECK(a->keep_alive == b->keep_alive);
    CHECK(a->expect_continue == b->expect_continue);
    CHECK(a->chunked == b->chunked);
    CHECK(a->has_body == b->has_body);
    CHECK(a->content_length == b->content_length);
    CHECK(a->header_bytes == b->header_bytes);
    CHECK(a->nfields == b->nfields);
    same_slice(&a->method_name, abuf, &b->method_name, bbuf);
    same_slice(&a->target, abuf, &b->target, bbuf);
    same_slice(&a->path, abuf, &b->path, bbuf);
    same_slice(&a->query, abuf, &b->query, bbuf);
    same_slice(&a->host, abuf, &b->host, bbuf);
    same_slice(&a->content_type, abuf, &b->content_type, bbuf);
    same_slice(&a->accept_encoding, abuf, &b->accept_encoding, bbuf);
    same_slice(&a->authorization, abuf, &b->authorization, bbuf);
    same_slice(&a->request_id, abuf, &b->request_id, bbuf);
    same_slice(&a->origin, abuf, &b->origin, bbuf);
    same_slice(&a->idempotency_key, abuf, &b->idempotency_key, bbuf);
}

/* Feeds buf[0..n) at lengths k1, k2, n; returns the first non-AGAIN. */
static ssize_t
parse_in_steps(struct http_request *req, char *buf, size_t n, size_t k1,
               size_t k2, const struct http_limits *lim, size_t *at)
{
    const size_t steps[3] = {k1, k2, n};
    struct http_parser p;
    ssize_t r = HTTP_PARSE_AGAIN;
    size_t i;

    http_parser_init(&p, req);
    for (i = 0; i < 3; i++) {
        if (i > 0 && steps[i] == steps[i - 1]) {
            continue;
        }
        *at = steps[i];
        r = http_parse_request(&p, req, buf, steps[i], lim);
        check_code(r, steps[i]);
        if (r != HTTP_PARSE_AGAIN) {
            break;
        }
    }
    return r;
}

static ssize_t
parse_bytewise(struct http_request *req, char *buf, size_t n,
               const struct http_limits *lim, size_t *at)
{
    struct http_parser p;
    ssize_t r = HTTP_PARSE_AGAIN;
    size_t k;

    http_parser_init(&p, req);
    for (k = 1; k <= n; k++) {
        *at = k;
        r = http_parse_request(&p, req, buf, k, lim);
        check_code(r, k);
        if (r != HTTP_PARSE_AGAIN) {
            break;
        }
    }
    return r;
}

/* ---- chunked bodies ------------------------------------------------------ */

static ssize_t
decode_in_steps(struct http_chunked *c, char *buf, size_t n, size_t k1,
                size_t k2, uint64_t max)
{
    const size_t steps[3] = {k1, k2, n};
    ssize_t r = HTTP_PARSE_AGAIN;
    size_t i;

    http_chunked_init(c);
    for (i = 0; i < 3; i++) {
        r = http_chunked_decode(c, buf, steps[i], max);
        check_code(r, steps[i]);
        CHECK(r < HTTP_PARSE_AGAIN || (c->out <= c->in && c->in <= steps[i]));
        if (r != HTTP_PARSE_AGAIN) {
            CHECK(r < 0 || (size_t)r <= steps[i]);
            break;
        }
    }
    return r;
}

static ssize_t
decode_bytewise(struct http_chunked *c, char *buf, size_t n, uint64_t max)
{
    ssize_t r = HTTP_PARSE_AGAIN;
    size_t k;

    http_chunked_init(c);
    for (k = 1; k <= n; k++) {
        r = http_chunked_decode(c, buf, k, max);
        check_code(r, k);
        if (r != HTTP_PARSE_AGAIN) {
            break;
        }
    }
    return r;
}

/* The body at off in all three copies; returns its length or -1 to stop. */
static ssize_t
chunked_body(const uint8_t *data, size_t size, size_t off, char *w, char *s,
             char *b, uint64_t max)
{
    struct http_chunked cw, cs, cb;
    size_t n = size - off, k1, k2;
    ssize_t r, rs, rb = 0;

    http_chunked_init(&cw);
    r = http_chunked_decode(&cw, w + off, n, max);
    check_code(r, n);
    CHECK(r >= HTTP_PARSE_AGAIN || r == HTTP_PARSE_E_CHUNK ||
          r == HTTP_PARSE_E_BODY_TOO_LARGE);
    /* after an error the state is undefined: the caller closes */
    CHECK(r < HTTP_PARSE_AGAIN || (cw.out <= cw.in && cw.in <= n));

    cuts(data, size, off + 2, n, &k1, &k2);
    rs = decode_in_steps(&cs, s + off, n, k1, k2, max);
    CHECK(rs == r);
    if (b != NULL) {
        rb = decode_bytewise(&cb, b + off, n, max);
        CHECK(rb == r);
    }
    if (r < 0) {
        return -1;
    }
    CHECK(cw.in == (uint64_t)r && cw.out <= max);
    CHECK(cs.out == cw.out && memcmp(s + off, w + off, cw.out) == 0);
    if (b != NULL) {
        CHECK(cb.out == cw.out && memcmp(b + off, w + off, cw.out) == 0);
    }
    return r;
}

/* ---- one connection's worth of pipelined requests ------------------------ */

static void
run_connection(const uint8_t *data, size_t size, const struct http_limits *lim)
{
    char *w = malloc(size), *s = malloc(size), *b = NULL;
    size_t off = 0, nreq;

    CHECK(w != NULL && s != NULL);
    memcpy(w, data, size);
    memcpy(s, data, size);
    if (size <= BYTEWISE_MAX) {
        b = malloc(size);
        CHECK(b != NULL);
        memcpy(b, data, size);
    }
    for (nreq = 0; nreq < MAX_REQUESTS && off < size; nreq++) {
        struct http_request rw, rs, rb;
        struct http_parser p;
        size_t n = size - off, k1, k2, at = 0, bat = 0;
        ssize_t r, r2, body;

        http_parser_init(&p, &rw);
        r = http_parse_request(&p, &rw, w + off, n, lim);
        check_code(r, n);

        cuts(data, size, off, n, &k1, &k2);
        r2 = parse_in_steps(&rs, s + off, n, k1, k2, lim, &at);
        CHECK(r2 == r);
        if (b != NULL) {
            r2 = parse_bytewise(&rb, b + off, n, lim, &bat);
            CHECK(r2 == r);
        }
        if (r < 0) {
            break;
        }
        /* complete exactly when the empty line arrives, not earlier */
        CHECK(at >= (size_t)r);
        CHECK(b == NULL || bat == (size_t)r);
        check_request(&rw, w + off, r, lim);
        check_path_slashes(&rw, w + off, data + off);
        same_request(&rw, w + off, &rs, s + off);
        if (b != NULL) {
            same_request(&rw, w + off, &rb, b + off);
        }
        off += (size_t)r;

        if (rw.chunked) {
            body = chunked_body(data, size, off, w, s, b, lim->max_body_bytes);
            if (body < 0) {
                break;
            }
            off += (size_t)body;
        } else if (rw.content_length > 0) {
            if (rw.content_length > size - off) {
                break;
            }
            off += (size_t)rw.content_length;
        }
    }
    free(b);
    free(s);
    free(w);
}

/* ---- percent-decoding and query strings --------------------------------- */

static int
hex(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* The obvious decoder, for comparison: out gets at most len bytes. */
static ssize_t
ref_percent_decode(const uint8_t *in, size_t len, bool plus_space, char *out)
{
    size_t i, o = 0;

    for (i = 0; i < len; i++) {
        if (in[i] == '%') {
            int hi, lo;

            if (len - i < 3) {
                return HTTP_PARSE_E_PERCENT;
            }
            hi = hex(in[i + 1]);
            lo = hex(in[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                return HTTP_PARSE_E_PERCENT;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (in[i] == '+' && plus_space) {
            out[o++] = ' ';
        } else {
            out[o++] = (char)in[i];
        }
    }
    return (ssize_t)o;
}

static void
run_percent(const uint8_t *data, size_t size, bool plus_space)
{
    char *buf = malloc(size), *ref = malloc(size);
    ssize_t r, want;

    CHECK(buf != NULL && ref != NULL);
    memcpy(buf, data, size);
    r = http_percent_decode(buf, size, plus_space);
    want = ref_percent_decode(data, size, plus_space, ref);
    CHECK(r == want);
    if (r >= 0) {
        CHECK(memcmp(buf, ref, (size_t)r) == 0);
    }
    free(ref);
    free(buf);
}

static void
run_query(const uint8_t *data, size_t size)
{
    char *buf = malloc(size);
    struct http_slice q, key, value;
    size_t iter;

    CHECK(buf != NULL);
    memcpy(buf, data, size);
    q.ptr = buf;
    q.len = (uint32_t)size;
    for (iter = 0; iter <= size; iter++) {
        uint32_t before = q.len;
        int r = http_query_next(&q, &key, &value);

        CHECK(r == 1 || r == 0 || r == HTTP_PARSE_E_PERCENT);
        CHECK(q.len <= before);
        CHECK(q.len == 0 || (q.ptr >= buf && q.ptr + q.len == buf + size));
        if (r != 1) {
            break;
        }
        CHECK(q.len < before);
        CHECK(key.len == 0 ||
              (key.ptr >= buf && key.ptr + key.len <= buf + size));
        CHECK(value.len == 0 ||
              (value.ptr >= buf && value.ptr + value.len <= buf + size));
    }
    CHECK(iter <= size);
    free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > (size_t)UINT32_MAX) {
        return 0;
    }
    run_connection(data, size, &dflt);
    run_connection(data, size, &tight);
    run_percent(data, size, false);
    run_percent(data, size, true);
    run_query(data, size);
    return 0;
}
