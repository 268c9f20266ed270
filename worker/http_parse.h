/*
 * http_parse.h - incremental HTTP/1.1 request parser (RFC 9110, RFC 9112).
 *
 * The parser never allocates and never copies header bytes: every string it
 * reports is a slice into the caller's buffer.  It is incremental: the caller
 * appends bytes to one buffer and calls http_parse_request() again with the
 * longer length; each call scans only the bytes it has not seen, so feeding a
 * request byte by byte costs the same as feeding it whole.
 *
 * Contract for the buffer: between http_parser_init() and the call that
 * completes the request, the caller may only append bytes.  The buffer must
 * not move and the bytes already passed in must not change, because the
 * request holds pointers into them.  The slices stay valid until the caller
 * reuses that part of the buffer.  On completion the path is percent-decoded
 * in place (it can only shrink), so the buffer must be writable; %2F (either
 * case) is left encoded there, so that it can never split a segment.
 *
 * Everything SPEC section 3 calls ambiguous framing is an error here, never a
 * guess: Content-Length together with Transfer-Encoding, differing duplicate
 * Content-Length, non-digit or overflowing lengths, obs-fold, whitespace
 * before the colon, bare CR, bare LF, chunked not final.  So is a second
 * Host, Authorization, Content-Type, Idempotency-Key or X-Request-Id: no
 * "last one wins".  Each error has its own code; http_parse_status() and
 * http_parse_message() map it to the response status and a short
 * human-readable reason.
 *
 * Chunked bodies are decoded by a separate incremental decoder,
 * http_chunked_decode(), that works in place on the body region.
 */
#ifndef APIARY_HTTP_PARSE_H
#define APIARY_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* HTTP_CONNECT is named (for logs) but never parsed: it is a 501. */
enum http_method {
    HTTP_METHOD_NONE = 0,
    HTTP_GET,
    HTTP_HEAD,
    HTTP_POST,
    HTTP_PUT,
    HTTP_DELETE,
    HTTP_PATCH,
    HTTP_OPTIONS,
    HTTP_CONNECT,
    HTTP_TRACE,
    HTTP_METHOD_COUNT
};

/*
 * Results of http_parse_request() and http_chunked_decode().  Positive
 * values are byte counts; HTTP_PARSE_AGAIN means "need more bytes"; every
 * other negative value is an error listed in http_parse.c's table.
 */
enum {
    HTTP_PARSE_AGAIN = -1,
    HTTP_PARSE_E_REQUEST_LINE = -2,        /* 400 malformed request line */
    HTTP_PARSE_E_METHOD = -3,              /* 400 method is not a token */
    HTTP_PARSE_E_UNKNOWN_METHOD = -4,      /* 501 not a method we serve */
    HTTP_PARSE_E_TARGET = -5,              /* 400 bad request-target */
    HTTP_PARSE_E_VERSION = -6,             /* 400 malformed HTTP-version */
    HTTP_PARSE_E_VERSION_UNSUPP = -7,      /* 505 HTTP/0.9, HTTP/2.0 ... */
    HTTP_PARSE_E_URI_TOO_LONG = -8,        /* 414 request line over limit */
    HTTP_PARSE_E_HEADERS_TOO_LARGE = -9,   /* 431 header bytes over limit */
    HTTP_PARSE_E_TOO_MANY_HEADERS = -10,   /* 431 field count over limit */
    HTTP_PARSE_E_BARE_CR = -11,            /* 400 CR not followed by LF */
    HTTP_PARSE_E_BARE_LF = -12,            /* 400 LF not preceded by CR */
    HTTP_PARSE_E_OBS_FOLD = -13,           /* 400 line folding */
    HTTP_PARSE_E_SPACE_BEFORE_COLON = -14, /* 400 "Name : value" */
    HTTP_PARSE_E_HEADER_NAME = -15,        /* 400 empty or non-token name */
    HTTP_PARSE_E_HEADER_VALUE = -16,       /* 400 control byte in value */
    HTTP_PARSE_E_NO_HOST = -17,            /* 400 HTTP/1.1 without Host */
    HTTP_PARSE_E_DUP_HOST = -18,           /* 400 two Host fields */
    HTTP_PARSE_E_CONTENT_LENGTH = -19,     /* 400 not plain digits/overflow */
    HTTP_PARSE_E_DUP_CONTENT_LENGTH = -20, /* 400 differing duplicates */
    HTTP_PARSE_E_CL_AND_TE = -21,          /* 400 both framings present */
    HTTP_PARSE_E_TE_NOT_CHUNKED = -22,     /* 400 chunked missing or not last */
    HTTP_PARSE_E_TE_UNKNOWN = -23,         /* 501 coding other than chunked */
    HTTP_PARSE_E_TE_HTTP10 = -24,          /* 400 Transfer-Encoding in 1.0 */
    HTTP_PARSE_E_EXPECT = -25,         /* 417 expectation not 100-continue */
    HTTP_PARSE_E_BODY_TOO_LARGE = -26, /* 413 body over limit */
    HTTP_PARSE_E_CHUNK = -27,          /* 400 malformed chunked body */
    HTTP_PARSE_E_PERCENT = -28,        /* 400 bad %XX or %00 in path */
    HTTP_PARSE_E_HOST = -29,           /* 400 Host is not one authority */

    /* 400: a second field line of a field that may occur once */
    HTTP_PARSE_E_DUP_AUTHORIZATION = -30,
    HTTP_PARSE_E_DUP_CONTENT_TYPE = -31,
    HTTP_PARSE_E_DUP_IDEMPOTENCY_KEY = -32,
    HTTP_PARSE_E_DUP_REQUEST_ID = -33, /* X-Request-Id */
    HTTP_PARSE_E_LAST = -33
};

struct http_slice {
    char *ptr;
    uint32_t len;
};

struct http_limits {
    uint32_t max_request_line; /* bytes, CRLF excluded (414) */
    uint32_t max_header_bytes; /* bytes after the request line (431) */
    uint32_t max_headers;      /* number of fields (431) */
    uint64_t max_body_bytes;   /* decoded body bytes (413) */
};

/* What a complete request header section says.  Slices point into buf. */
struct http_request {
    enum http_method method;
    uint8_t version_minor; /* 0 or 1: HTTP/1.0 or HTTP/1.1 */
    bool keep_alive;       /* after Connection and version defaults */
    bool expect_continue;  /* Expect: 100-continue */
    bool chunked;          /* Transfer-Encoding: chunked */
    bool has_body;         /* chunked or content_length > 0 */
    uint64_t content_length;
    uint32_t header_bytes; /* request line + fields + final CRLF */
    uint32_t nfields;
    struct http_slice method_name; /* as sent, for logs */
    struct http_slice target;      /* request-target; its bytes overlap
                                      the decoded path once complete */
    struct http_slice path;        /* percent-decoded but for %2F;
                                      starts with '/', or is "*" for
                                      OPTIONS */
    struct http_slice query;       /* raw, without '?'; len 0 if none */
    struct http_slice host;        /* empty, or one valid authority */
    struct http_slice content_type;
    struct http_slice accept_encoding;
    struct http_slice authorization;
    struct http_slice request_id; /* X-Request-Id */
    struct http_slice origin;
    struct http_slice idempotency_key;
};

/* Incremental state; opaque to callers, sized so it lives on a conn. */
struct http_parser {
    uint32_t pos;        /* bytes already scanned */
    uint32_t line_start; /* offset of the line being scanned */
    uint32_t nfields;
    uint32_t fields_start; /* offset just after the request line */
    uint8_t state;
    uint8_t seen; /* HTTP_SEEN_* bits from http_parse.c */
    uint8_t conn_tokens;
    uint8_t pad;
};

/* Prepares p and req for a new request.  Call before the first byte. */
void http_parser_init(struct http_parser *p, struct http_request *req);

/*
 * Parses the request line and header fields in buf[0..len).  Returns the
 * length of the header section (request line through the empty line) once
 * it is complete and valid, HTTP_PARSE_AGAIN if more bytes are needed, or a
 * negative HTTP_PARSE_E_* code.  After an error the parser must be
 * re-initialised before use; the caller answers with http_parse_status()
 * and closes the connection.  Leading empty lines (RFC 9112 section 2.2) are
 * skipped (at most 8) and counted in the returned length.
 */
ssize_t http_parse_request(struct http_parser *p, struct http_request *req,
                           char *buf, size_t len,
                           const struct http_limits *lim);

/*
 * Moves every slice of req by (new_base - old_base): for a caller that
 * copied the request's bytes, starting at old_base, to new_base.
 */
void http_request_rebase(struct http_request *req, const char *old_base,
                         char *new_base);

/* Incremental in-place chunked decoder state. */
struct http_chunked {
    uint64_t in;         /* input bytes consumed */
    uint64_t out;        /* decoded bytes, stored at buf[0..out) */
    uint64_t chunk_left; /* data bytes left in the current chunk */
    uint32_t line_bytes; /* bytes of the current size/trailer line */
    uint32_t trailer_bytes;
    uint8_t state;
    uint8_t digits;
    uint8_t pad[6];
};

void http_chunked_init(struct http_chunked *c);

/*
 * Decodes the chunked body that starts at buf[0]; buf[0..len) is what has
 * arrived so far (it may include the next pipelined request).  Decoded data
 * is moved down to buf[0..c->out), overwriting the framing; the bytes at
 * buf[c->out..c->in) are garbage afterwards.  Returns the number of input
 * bytes the whole chunked body occupied (so the next request starts at
 * buf + result) once the last chunk and trailer section are in,
 * HTTP_PARSE_AGAIN if more bytes are needed, or HTTP_PARSE_E_CHUNK /
 * HTTP_PARSE_E_BODY_TOO_LARGE.  len must not shrink between calls.
 * HTTP_PARSE_E_CHUNK also covers what RFC 9112 lets a recipient tolerate
 * and SPEC 3 refuses: whitespace after a chunk size, an empty extension,
 * a trailer line without a colon.
 */
ssize_t http_chunked_decode(struct http_chunked *c, char *buf, size_t len,
                            uint64_t max_body_bytes);

/*
 * Percent-decodes s[0..len) in place.  With plus_space, '+' becomes ' '
 * (query strings).  Returns the new length, or HTTP_PARSE_E_PERCENT for a
 * truncated or non-hex escape or an escaped NUL.  Every escape is decoded,
 * %2F included: this is for data such as query values; the request path
 * is decoded by http_parse_request(), which keeps %2F.
 */
ssize_t http_percent_decode(char *s, size_t len, bool plus_space);

/*
 * Iterates over "a=1&b=2" in *q: stores the next key and value (both
 * percent-decoded in place, '+' as space) and advances *q.  Returns 1 when
 * a pair was stored, 0 at the end, HTTP_PARSE_E_PERCENT on a bad escape.
 * A key without '=' gets an empty value.
 */
int http_query_next(struct http_slice *q, struct http_slice *key,
                    struct http_slice *value);

/* Response status for an error code (400 for unknown codes). */
int http_parse_status(ssize_t code);

/* Short reason for an error code, e.g. "both Content-Length and ...". */
const char *http_parse_message(ssize_t code);

/* "GET", "POST" ... for a method; "" for HTTP_METHOD_NONE. */
const char *http_method_name(enum http_method m);

#endif
