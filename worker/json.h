/*
 * json.h - a small JSON writer for response bodies.
 *
 * Responses are built field by field into one per-worker buffer that
 * grows when needed and is reused for every response, so steady state
 * allocates nothing.  Strings are escaped per RFC 8259: '"', '\' and
 * control characters; everything else (PostgreSQL sends valid UTF-8) is
 * copied as is, which is what makes this faster than building a jansson
 * tree and dumping it.
 *
 * Errors are sticky: after a failed allocation every call is a no-op and
 * json_failed() is true; the caller answers 503.
 */
#ifndef APIARY_JSON_H
#define APIARY_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct jbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

void json_reset(struct jbuf *b);
void json_fini(struct jbuf *b);
bool json_failed(const struct jbuf *b);

/* Raw bytes (punctuation, keys the caller knows are clean). */
void json_raw(struct jbuf *b, const char *s, size_t n);
#define json_lit(b, lit) json_raw((b), (lit), sizeof(lit) - 1)

/* A quoted, escaped string. */
void json_str(struct jbuf *b, const char *s, size_t n);

/* A decimal integer. */
void json_i64(struct jbuf *b, int64_t v);

/*
 * A quoted RFC 3339 UTC timestamp from microseconds since the epoch:
 * "2026-11-23T18:00:00.123456Z".
 */
void json_ts_us(struct jbuf *b, int64_t us);

#endif
