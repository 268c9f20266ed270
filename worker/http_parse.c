/*
 * http_parse.c - incremental HTTP/1.1 request parser and chunked decoder.
 *
 * The request parser works line by line.  memchr() (vectorised in glibc)
 * finds the next LF; the line before it is checked and interpreted at once,
 * so every byte is looked at a small, fixed number of times however the
 * input is split.  p->pos remembers how far we scanned, p->line_start where
 * the unfinished line begins.
 *
 * Strictness, with the rule each check implements:
 *   - lines end in CRLF; a bare LF or a CR not followed by LF is an error
 *     (RFC 9112 section 2.2 allows leniency; we choose rejection because a
 *     proxy in front of us may frame differently: request smuggling);
 *   - request-line = method SP request-target SP HTTP-version, single SPs
 *     (RFC 9112 section 3);
 *   - HTTP/1.x with x > 1 is served as HTTP/1.1, other majors get 505
 *     (RFC 9110 section 2.5);
 *   - an unknown method, and CONNECT whatever its target, is 501 (RFC 9110
 *     section 9.1);
 *   - field-name is a token and the colon follows it directly (RFC 9112
 *     section 5.1: whitespace before the colon is a 400);
 *   - a line starting with SP or HTAB is obs-fold: 400 (section 5.2);
 *   - Transfer-Encoding: if chunked is present it must be the last coding
 *     and appear once, else 400 (section 6.3); any coding other than
 *     chunked is one we do not implement: 501 (section 6.1); present in an
 *     HTTP/1.0 request, or together with Content-Length: 400 (section 6.1,
 *     6.3);
 *   - Content-Length is 1 to 18 plain digits; duplicates must be equal
 *     (RFC 9110 section 8.6; a comma list is "not plain digits");
 *   - the path is percent-decoded, but %2F stays encoded (see finish());
 *   - HTTP/1.1 needs exactly one Host (RFC 9112 section 3.2), and a Host
 *     value must be one authority, host [":" port] (RFC 3986 section 3.2;
 *     see authority_ok() for what that admits and why);
 *   - a chunk-size line is hex digits, then extensions or CRLF, with no
 *     whitespace and no empty extension (see ext_byte()); a trailer line
 *     is name ":" value;
 *   - Authorization, Content-Type, Idempotency-Key and X-Request-Id may
 *     occur once (RFC 9110 section 5.3: not lists); a second one is a 400
 *     with its own code (see set_once()).
 *
 * Only the fields the server acts on are kept (as slices); the others are
 * validated and skipped, so there is no header array to size or fill.
 */
#include "http_parse.h"

#include <arpa/inet.h>
#include <string.h>

enum parser_state { ST_REQUEST_LINE = 0, ST_FIELDS };

enum {
    SEEN_HOST = 1 << 0,
    SEEN_CL = 1 << 1,
    SEEN_TE = 1 << 2,
    SEEN_TE_CHUNKED_LAST = 1 << 3,
    SEEN_TE_CHUNKED_TWICE = 1 << 4, /* also: chunked followed by more */
    SEEN_TE_OTHER = 1 << 5,
    SEEN_EXPECT_BAD = 1 << 6,
    SEEN_TE_CHUNKED = 1 << 7
};

enum { CONN_CLOSE = 1 << 0, CONN_KEEP_ALIVE = 1 << 1 };

/* Empty lines tolerated before a request line (RFC 9112 section 2.2). */
#define HTTP_LEADING_EMPTY_MAX 8

/* Content-Length beyond 18 digits is refused before it can overflow. */
#define CL_MAX_DIGITS 18

/* 1 for tchar (RFC 9110 section 5.6.2). */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
    ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
    ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1,
    ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,
    ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1,
    ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1,
    ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,
    ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1,
    ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

/*
 * 1 for the bytes of a reg-name (RFC 3986 section 3.2.2) that a Host may
 * hold: unreserved and sub-delims, except ',' (a list is not one
 * authority).  '%' (pct-encoded) is checked apart.
 */
static const unsigned char regname[256] = {
    ['-'] = 1, ['.'] = 1,  ['_'] = 1, ['~'] = 1, ['!'] = 1, ['$'] = 1,
    ['&'] = 1, ['\''] = 1, ['('] = 1, [')'] = 1, ['*'] = 1, ['+'] = 1,
    [';'] = 1, ['='] = 1,  ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1,
    ['4'] = 1, ['5'] = 1,  ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1,  ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    ['G'] = 1, ['H'] = 1,  ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
    ['M'] = 1, ['N'] = 1,  ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1,  ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,  ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1,
    ['e'] = 1, ['f'] = 1,  ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1,
    ['k'] = 1, ['l'] = 1,  ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1,  ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1,
    ['w'] = 1, ['x'] = 1,  ['y'] = 1, ['z'] = 1,
};

static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)(c | 0x20);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* ASCII case-insensitive compare of s[0..n) with lower-case lit. */
static int
eq_lower(const char *s, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c | 0x20);
        if (c != (unsigned char)lit[i])
            return 0;
    }
    return 1;
}

#define EQ_LIT(s, n, lit) ((n) == sizeof(lit) - 1 && eq_lower(s, lit, n))

/*
 * Checks field-value bytes: VCHAR, obs-text, SP, HTAB.  Eight bytes at a
 * time while no byte is below 0x20 or equal to 0x7f (the classic
 * "has less than" and "has zero" word tricks), byte by byte otherwise.
 */
static ssize_t
check_value(const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101ULL;
    const uint64_t highs = 0x8080808080808080ULL;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t w, del;
        memcpy(&w, s + i, 8);
        del = w ^ (ones * 0x7f);
        if ((((w - ones * 0x20) & ~w) | ((del - ones) & ~del)) & highs)
            break;
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != 0x7f)
            continue;
        if (c == '\t')
            continue;
        return c == '\r' ? HTTP_PARSE_E_BARE_CR : HTTP_PARSE_E_HEADER_VALUE;
    }
    return 0;
}

static enum http_method
lookup_method(const char *s, size_t n)
{
    switch (n) {
    case 3:
        if (memcmp(s, "GET", 3) == 0)
            return HTTP_GET;
        if (memcmp(s, "PUT", 3) == 0)
            return HTTP_PUT;
        break;
    case 4:
        if (memcmp(s, "POST", 4) == 0)
            return HTTP_POST;
        if (memcmp(s, "HEAD", 4) == 0)
            return HTTP_HEAD;
        break;
    case 5:
        if (memcmp(s, "PATCH", 5) == 0)
            return HTTP_PATCH;
        if (memcmp(s, "TRACE", 5) == 0)
            return HTTP_TRACE;
        break;
    case 6:
        if (memcmp(s, "DELETE", 6) == 0)
            return HTTP_DELETE;
        break;
    case 7:
        if (memcmp(s, "OPTIONS", 7) == 0)
            return HTTP_OPTIONS;
        if (memcmp(s, "CONNECT", 7) == 0)
            return HTTP_CONNECT;
        break;
    default:
        break;
    }
    return HTTP_METHOD_NONE;
}

/*
 * IP-literal between its brackets (RFC 3986 section 3.2.2).  An IPv6
 * address is checked by inet_pton() on a NUL-terminated stack copy (the
 * longest text form fits in INET6_ADDRSTRLEN), after a byte filter so that
 * nothing but hex digits, ':' and '.' reaches it.  A zone id (RFC 6874,
 * "%25eth0") is refused: it names an interface of the client, not us.
 */
static int
ip_literal_ok(const char *s, size_t n)
{
    char tmp[INET6_ADDRSTRLEN];
    struct in6_addr addr;
    size_t i;

    if (n > 0 && (s[0] == 'v' || s[0] == 'V')) {
        /* IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ),
         * without ',' as in a reg-name */
        for (i = 1; i < n && hexval((unsigned char)s[i]) >= 0; i++)
            ;
        if (i == 1 || i + 1 >= n || s[i] != '.')
            return 0;
        for (i++; i < n; i++)
            if (!regname[(unsigned char)s[i]] && s[i] != ':')
                return 0;
        return 1;
    }
    if (n < 2 || n >= sizeof(tmp))
        return 0;
    for (i = 0; i < n; i++)
        if (hexval((unsigned char)s[i]) < 0 && s[i] != ':' && s[i] != '.')
            return 0;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(AF_INET6, tmp, &addr) == 1;
}

/*
 * 1 if s[0..n) is one authority = host [ ":" port ] (RFC 3986 section 3.2),
 * the form RFC 9112 section 3.2 requires of Host and of the authority of an
 * absolute-form target; 0 otherwise.  Deliberately refused, although some
 * of it is RFC 3986 syntax:
 *   - userinfo ("u@h"): RFC 9110 section 4.2.4 says to treat it as an
 *     error, and "a@b" is how a host is smuggled past a naive check;
 *   - an empty host, also before a port (":80"): RFC 9110 section 4.2.1
 *     says a recipient MUST reject an http URI with an empty host (the
 *     empty Host field value is a separate case, left to the caller);
 *   - ',' even though it is a sub-delim: "a, b" is a list of hosts;
 *   - %00, as in the path; other pct-encoded octets pass undecoded;
 *   - a port that is not digits, or above 65535.
 * An empty port ("h:") is accepted: RFC 3986 section 3.2.3 allows it and
 * RFC 9110 section 4.2.3 makes "http://h:/" equal to "http://h/".
 * Leading zeros in a port are accepted; the value is what is bounded.
 */
static int
authority_ok(const char *s, size_t n)
{
    uint32_t port = 0;
    size_t i = 0;

    if (n > 0 && s[0] == '[') {
        const char *end = memchr(s, ']', n);

        if (end == NULL || !ip_literal_ok(s + 1, (size_t)(end - s) - 1))
            return 0;
        i = (size_t)(end - s) + 1;
    } else {
        while (i < n) {
            int hi, lo;

            if (regname[(unsigned char)s[i]]) {
                i++;
                continue;
            }
            if (s[i] != '%' || n - i < 3)
                break;
            hi = hexval((unsigned char)s[i + 1]);
            lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0 || (hi | lo) == 0)
                break;
            i += 3;
        }
        if (i == 0)
            return 0;
    }
    if (i == n)
        return 1;
    if (s[i] != ':')
        return 0;
    for (i++; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9)
            return 0;
        port = port * 10 + d;
        if (port > 65535)
            return 0;
    }
    return 1;
}

/* request-target bytes: visible ASCII except '#' (no fragment on the wire) */
static int
target_byte_ok(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '#';
}

static ssize_t
parse_request_line(struct http_request *req, char *s, size_t n)
{
    size_t i = 0, m, t0, t1;
    char *target;

    while (i < n && tchar[(unsigned char)s[i]])
        i++;
    if (i == n || s[i] != ' ')
        return i < n && s[i] == '\r' ? HTTP_PARSE_E_BARE_CR
               : i == 0 || i == n    ? HTTP_PARSE_E_REQUEST_LINE
                                     : HTTP_PARSE_E_METHOD;
    if (i == 0)
        return HTTP_PARSE_E_REQUEST_LINE;
    m = i;
    req->method_name.ptr = s;
    req->method_name.len = (uint32_t)m;

    t0 = ++i;
    while (i < n && target_byte_ok((unsigned char)s[i]))
        i++;
    t1 = i;
    if (i == n || s[i] != ' ')
        return i < n && s[i] == '\r' ? HTTP_PARSE_E_BARE_CR
                                     : HTTP_PARSE_E_TARGET;
    if (t1 == t0)
        return HTTP_PARSE_E_REQUEST_LINE;
    i++;

    /* HTTP-version = "HTTP/" DIGIT "." DIGIT, then end of line */
    if (n - i != 8 || memcmp(s + i, "HTTP/", 5) != 0 ||
        (unsigned)(s[i + 5] - '0') > 9 || s[i + 6] != '.' ||
        (unsigned)(s[i + 7] - '0') > 9) {
        for (size_t k = i; k < n; k++)
            if (s[k] == '\r')
                return HTTP_PARSE_E_BARE_CR;
        return HTTP_PARSE_E_VERSION;
    }
    if (s[i + 5] != '1')
        return HTTP_PARSE_E_VERSION_UNSUPP;
    req->version_minor = s[i + 7] == '0' ? 0 : 1;

    req->method = lookup_method(s, m);
    if (req->method == HTTP_METHOD_NONE)
        return HTTP_PARSE_E_UNKNOWN_METHOD;
    /* CONNECT asks for a tunnel (RFC 9110 section 9.3.6), which we never
     * open: 501 like any method we do not implement (SPEC 3), decided
     * before the target so that its authority-form does not make it 400 */
    if (req->method == HTTP_CONNECT)
        return HTTP_PARSE_E_UNKNOWN_METHOD;

    target = s + t0;
    req->target.ptr = target;
    req->target.len = (uint32_t)(t1 - t0);

    /* absolute-form (RFC 9112 section 3.2.2): check the authority, then
     * keep only path and query */
    if (target[0] != '/') {
        size_t k = 0, a0, tn = t1 - t0;
        if (tn == 1 && target[0] == '*' && req->method == HTTP_OPTIONS) {
            req->path.ptr = target;
            req->path.len = 1;
            return 0;
        }
        if (tn > 7 && eq_lower(target, "http://", 7))
            k = 7;
        else if (tn > 8 && eq_lower(target, "https://", 8))
            k = 8;
        else
            return HTTP_PARSE_E_TARGET;
        a0 = k;
        while (k < tn && target[k] != '/' && target[k] != '?')
            k++;
        if (k == tn || target[k] != '/' || !authority_ok(target + a0, k - a0))
            return HTTP_PARSE_E_TARGET;
        target += k;
        t0 += k;
    }
    {
        char *q = memchr(target, '?', t1 - t0);
        size_t plen = q ? (size_t)(q - target) : t1 - t0;
        req->path.ptr = target;
        req->path.len = (uint32_t)plen;
        if (q) {
            req->query.ptr = q + 1;
            req->query.len = (uint32_t)(t1 - t0 - plen - 1);
        }
    }
    return 0;
}

/* Content-Length value: plain digits only. */
static ssize_t
parse_content_length(struct http_parser *p, struct http_request *req,
                     const char *v, size_t n)
{
    uint64_t x = 0;

    if (n == 0 || n > CL_MAX_DIGITS)
        return HTTP_PARSE_E_CONTENT_LENGTH;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)v[i] - '0';
        if (d > 9)
            return HTTP_PARSE_E_CONTENT_LENGTH;
        x = x * 10 + d;
    }
    if ((p->seen & SEEN_CL) && x != req->content_length)
        return HTTP_PARSE_E_DUP_CONTENT_LENGTH;
    p->seen |= SEEN_CL;
    req->content_length = x;
    return 0;
}

/* Calls fn on each element of a comma-separated list, OWS trimmed. */
static void
each_list_item(const char *v, size_t n,
               void (*fn)(void *, const char *, size_t), void *arg)
{
    size_t i = 0;
    while (i < n) {
        size_t a, b;
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        a = i;
        while (i < n && v[i] != ',')
            i++;
        b = i;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
            b--;
        if (b > a)
            fn(arg, v + a, b - a);
    }
}

static void
te_item(void *arg, const char *s, size_t n)
{
    struct http_parser *p = arg;

    p->seen |= SEEN_TE;
    if (p->seen & SEEN_TE_CHUNKED)
        p->seen |= SEEN_TE_CHUNKED_TWICE; /* anything after chunked */
    if (EQ_LIT(s, n, "chunked")) {
        p->seen |= SEEN_TE_CHUNKED | SEEN_TE_CHUNKED_LAST;
    } else {
        p->seen = (uint8_t)(p->seen & ~SEEN_TE_CHUNKED_LAST);
        p->seen |= SEEN_TE_OTHER;
    }
}

static void
conn_item(void *arg, const char *s, size_t n)
{
    struct http_parser *p = arg;

    if (EQ_LIT(s, n, "close"))
        p->conn_tokens |= CONN_CLOSE;
    else if (EQ_LIT(s, n, "keep-alive"))
        p->conn_tokens |= CONN_KEEP_ALIVE;
}

/*
 * Keeps a field that may occur once.  SPEC 3 (issue 6): a second one gets
 * the error code dup, never "last one wins": a proxy that keeps the first
 * and a server that keeps the last would act on different credentials.
 * A slice that was set has a non-NULL ptr, even for an empty value (it
 * points into the buffer), and http_parser_init() cleared them all.
 */
static ssize_t
set_once(struct http_slice *dst, struct http_slice val, ssize_t dup)
{
    if (dst->ptr != NULL)
        return dup;
    *dst = val;
    return 0;
}

static ssize_t
parse_field(struct http_parser *p, struct http_request *req, char *s, size_t n)
{
    size_t i = 0, a, b;
    char *v;
    ssize_t rc;

    if (s[0] == ' ' || s[0] == '\t')
        return HTTP_PARSE_E_OBS_FOLD;
    while (i < n && tchar[(unsigned char)s[i]])
        i++;
    if (i == n)
        return HTTP_PARSE_E_HEADER_NAME;
    if (s[i] != ':') {
        if (s[i] == '\r')
            return HTTP_PARSE_E_BARE_CR;
        if (i > 0 && (s[i] == ' ' || s[i] == '\t')) {
            size_t k = i;
            while (k < n && (s[k] == ' ' || s[k] == '\t'))
                k++;
            if (k < n && s[k] == ':')
                return HTTP_PARSE_E_SPACE_BEFORE_COLON;
        }
        return HTTP_PARSE_E_HEADER_NAME;
    }
    if (i == 0)
        return HTTP_PARSE_E_HEADER_NAME;

    a = i + 1;
    b = n;
    while (a < b && (s[a] == ' ' || s[a] == '\t'))
        a++;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
        b--;
    v = s + a;
    rc = check_value(v, b - a);
    if (rc < 0)
        return rc;

    struct http_slice val = {v, (uint32_t)(b - a)};
    switch (i) {
    case 4:
        if (eq_lower(s, "host", 4)) {
            if (p->seen & SEEN_HOST)
                return HTTP_PARSE_E_DUP_HOST;
            /* RFC 9112 section 3.2 allows an empty Host when the target
             * has no authority; RFC 9112 section 3.3 then has the server
             * use its own name, which is what we do: accepted. */
            if (b > a && !authority_ok(v, b - a))
                return HTTP_PARSE_E_HOST;
            p->seen |= SEEN_HOST;
            req->host = val;
        }
        break;
    case 6:
        if (eq_lower(s, "expect", 6)) {
            if (EQ_LIT(v, b - a, "100-continue"))
                req->expect_continue = true;
            else
                p->seen |= SEEN_EXPECT_BAD;
        } else if (eq_lower(s, "origin", 6)) {
            req->origin = val;
        }
        break;
    case 10:
        if (eq_lower(s, "connection", 10))
            each_list_item(v, b - a, conn_item, p);
        break;
    case 12:
        if (eq_lower(s, "content-type", 12))
            return set_once(&req->content_type, val,
                            HTTP_PARSE_E_DUP_CONTENT_TYPE);
        if (eq_lower(s, "x-request-id", 12))
            return set_once(&req->request_id, val, HTTP_PARSE_E_DUP_REQUEST_ID);
        break;
    case 13:
        if (eq_lower(s, "authorization", 13))
            return set_once(&req->authorization, val,
                            HTTP_PARSE_E_DUP_AUTHORIZATION);
        break;
    case 14:
        if (eq_lower(s, "content-length", 14))
            return parse_content_length(p, req, v, b - a);
        break;
    case 15:
        if (eq_lower(s, "accept-encoding", 15))
            req->accept_encoding = val;
        else if (eq_lower(s, "idempotency-key", 15))
            return set_once(&req->idempotency_key, val,
                            HTTP_PARSE_E_DUP_IDEMPOTENCY_KEY);
        break;
    case 17:
        if (eq_lower(s, "transfer-encoding", 17)) {
            p->seen |= SEEN_TE;
            each_list_item(v, b - a, te_item, p);
        }
        break;
    default:
        break;
    }
    return 0;
}

/*
 * Percent-decodes s[0..len) in place (the output never outruns the input).
 * With keep_slash, %2F and %2f are copied as they are instead of becoming
 * '/': see finish() for why the path needs that.  Without plus_space the
 * bytes before the first '%' are left alone, found by memchr().
 */
static ssize_t
decode(char *s, size_t len, bool plus_space, bool keep_slash)
{
    size_t i = 0, o;

    if (len == 0)
        return 0; /* s may be NULL then, which memchr() must not see */
    if (!plus_space) {
        const char *pct = memchr(s, '%', len);
        if (pct == NULL)
            return (ssize_t)len;
        i = (size_t)(pct - s);
    }
    for (o = i; i < len; i++) {
        char ch = s[i];
        if (ch == '%') {
            int hi, lo;
            if (len - i < 3)
                return HTTP_PARSE_E_PERCENT;
            hi = hexval((unsigned char)s[i + 1]);
            lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0 || (hi | lo) == 0)
                return HTTP_PARSE_E_PERCENT;
            ch = (char)(hi << 4 | lo);
            if (ch == '/' && keep_slash) {
                /* o <= i: each byte is read before it can be overwritten */
                s[o++] = '%';
                s[o++] = s[i + 1];
                ch = s[i + 2];
            }
            i += 2;
        } else if (ch == '+' && plus_space) {
            ch = ' ';
        }
        s[o++] = ch;
    }
    return (ssize_t)o;
}

/* Whole header section seen: apply the rules that need all fields. */
static ssize_t
finish(struct http_parser *p, struct http_request *req,
       const struct http_limits *lim)
{
    ssize_t n;

    if (req->version_minor == 1 && !(p->seen & SEEN_HOST))
        return HTTP_PARSE_E_NO_HOST;
    if (p->seen & SEEN_TE) {
        if (req->version_minor == 0)
            return HTTP_PARSE_E_TE_HTTP10;
        if (p->seen & SEEN_CL)
            return HTTP_PARSE_E_CL_AND_TE;
        if ((p->seen & SEEN_TE_CHUNKED) && ((p->seen & SEEN_TE_CHUNKED_TWICE) ||
                                            !(p->seen & SEEN_TE_CHUNKED_LAST)))
            return HTTP_PARSE_E_TE_NOT_CHUNKED;
        if (p->seen & SEEN_TE_OTHER)
            return HTTP_PARSE_E_TE_UNKNOWN;
        if (!(p->seen & SEEN_TE_CHUNKED))
            return HTTP_PARSE_E_TE_NOT_CHUNKED; /* empty list */
        req->chunked = true;
    }
    if (p->seen & SEEN_EXPECT_BAD)
        return HTTP_PARSE_E_EXPECT;
    if (req->version_minor == 0)
        req->expect_continue = false; /* RFC 9110 section 10.1.1 */
    if (!req->chunked && req->content_length > lim->max_body_bytes)
        return HTTP_PARSE_E_BODY_TOO_LARGE;
    req->has_body = req->chunked || req->content_length > 0;

    if (req->version_minor == 1)
        req->keep_alive = !(p->conn_tokens & CONN_CLOSE);
    else
        req->keep_alive = (p->conn_tokens & CONN_KEEP_ALIVE) &&
                          !(p->conn_tokens & CONN_CLOSE);

    /*
     * SPEC 3, issue 6: %2F never becomes a path separator before routing.
     * RFC 3986 section 2.2: an encoded reserved character is data, not a
     * delimiter, so "/users%2F1" has one segment, "users/1", and must not
     * reach the route /users/{id}.  The three bytes stay encoded in the
     * decoded path rather than the request being refused: it is well
     * formed, so 400 would be wrong, and no route has a segment that can
     * hold a '/', so the router answers 404 (Apache httpd's default,
     * AllowEncodedSlashes Off, also answers 404).  The price: the decoded
     * path reads "%2F" for both "%2F" and "%252F"; no route tells them
     * apart either.
     */
    if (req->path.len > 1 || req->path.ptr[0] != '*') {
        n = decode(req->path.ptr, req->path.len, false, true);
        if (n < 0)
            return n;
        req->path.len = (uint32_t)n;
    }
    req->nfields = p->nfields;
    return 0;
}

void
http_request_rebase(struct http_request *req, const char *old_base,
                    char *new_base)
{
    struct http_slice *s[] = {
        &req->method_name,
        &req->target,
        &req->path,
        &req->query,
        &req->host,
        &req->content_type,
        &req->accept_encoding,
        &req->authorization,
        &req->request_id,
        &req->origin,
        &req->idempotency_key,
    };
    for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++)
        if (s[i]->ptr)
            s[i]->ptr = new_base + (s[i]->ptr - old_base);
}

void
http_parser_init(struct http_parser *p, struct http_request *req)
{
    memset(p, 0, sizeof(*p));
    memset(req, 0, sizeof(*req));
}

ssize_t
http_parse_request(struct http_parser *p, struct http_request *req, char *buf,
                   size_t len, const struct http_limits *lim)
{
    size_t pos = p->pos;
    ssize_t rc;

    for (;;) {
        char *nl = pos < len ? memchr(buf + pos, '\n', len - pos) : NULL;
        size_t lf, start = p->line_start, end;

        if (nl == NULL) {
            p->pos = (uint32_t)len;
            if (p->state == ST_REQUEST_LINE) {
                if (len - start > (size_t)lim->max_request_line + 1)
                    return HTTP_PARSE_E_URI_TOO_LONG;
            } else if (len - p->fields_start > lim->max_header_bytes) {
                return HTTP_PARSE_E_HEADERS_TOO_LARGE;
            }
            return HTTP_PARSE_AGAIN;
        }
        lf = (size_t)(nl - buf);
        /* limits first, so the answer does not depend on how the bytes
         * were split across reads (found by fuzz_http_parse) */
        if (p->state == ST_REQUEST_LINE) {
            if (lf - start > (size_t)lim->max_request_line + 1)
                return HTTP_PARSE_E_URI_TOO_LONG;
        } else if (lf - p->fields_start > lim->max_header_bytes) {
            return HTTP_PARSE_E_HEADERS_TOO_LARGE;
        }
        if (lf == start || buf[lf - 1] != '\r')
            return HTTP_PARSE_E_BARE_LF;
        end = lf - 1;
        pos = lf + 1;
        p->pos = (uint32_t)pos;
        p->line_start = (uint32_t)pos;

        if (p->state == ST_REQUEST_LINE) {
            if (end == start) {
                /* leading empty line: skip a few, not forever */
                if (pos > (size_t)2 * HTTP_LEADING_EMPTY_MAX)
                    return HTTP_PARSE_E_REQUEST_LINE;
                continue;
            }
            if (end - start > lim->max_request_line)
                return HTTP_PARSE_E_URI_TOO_LONG;
            rc = parse_request_line(req, buf + start, end - start);
            if (rc < 0)
                return rc;
            p->state = ST_FIELDS;
            p->fields_start = (uint32_t)pos;
            continue;
        }

        if (pos - p->fields_start > lim->max_header_bytes)
            return HTTP_PARSE_E_HEADERS_TOO_LARGE;
        if (end == start) {
            rc = finish(p, req, lim);
            if (rc < 0)
                return rc;
            req->header_bytes = (uint32_t)pos;
            return (ssize_t)pos;
        }
        if (++p->nfields > lim->max_headers)
            return HTTP_PARSE_E_TOO_MANY_HEADERS;
        rc = parse_field(p, req, buf + start, end - start);
        if (rc < 0)
            return rc;
    }
}

/* ---- chunked bodies (RFC 9112 section 7.1) ---- */

enum chunk_state {
    CH_SIZE = 0,      /* hex digits */
    CH_EXT_NAME,      /* after ';': the first byte of a name */
    CH_EXT_NAME_MORE, /* more of the name, '=', ';' or CR */
    CH_EXT_VALUE,     /* after '=': a token or a quoted-string */
    CH_EXT_TOKEN,     /* more of a token value, ';' or CR */
    CH_EXT_QUOTED,    /* inside a quoted-string */
    CH_EXT_QPAIR,     /* after a backslash in it */
    CH_EXT_QEND,      /* after the closing quote: ';' or CR */
    CH_SIZE_LF,       /* CR seen, LF expected */
    CH_DATA,          /* chunk_left data bytes */
    CH_DATA_CR,       /* CRLF after data */
    CH_DATA_LF,
    CH_TRAILER, /* start of a trailer line or the final CRLF */
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_END_LF, /* final CR seen */
    CH_DONE
};

#define CHUNK_LINE_MAX 4096
#define CHUNK_TRAILER_MAX 16384

/*
 * One byte of the chunk extensions, c->state being one of CH_EXT_*:
 *   chunk-ext = *( ";" token [ "=" ( token / quoted-string ) ] )
 * which is RFC 9112 section 7.1.1 without its BWS.  Returns 0, with the CR
 * that ends the line moving to CH_SIZE_LF, or -1 for a byte the grammar
 * does not allow there: whitespace, an empty name or value ("5;", "5;;a",
 * "5;=v", "5;a="), a control byte.  SPEC 3 rejects what RFC 9112 lets a
 * recipient tolerate here, because parsers that skip such bytes and parsers
 * that stop at them disagree on where the chunk data starts (smuggling).
 */
static int
ext_byte(struct http_chunked *c, unsigned char ch)
{
    switch (c->state) {
    case CH_EXT_NAME:
        if (!tchar[ch])
            return -1;
        c->state = CH_EXT_NAME_MORE;
        return 0;
    case CH_EXT_VALUE:
        if (tchar[ch])
            c->state = CH_EXT_TOKEN;
        else if (ch == '"')
            c->state = CH_EXT_QUOTED;
        else
            return -1;
        return 0;
    case CH_EXT_NAME_MORE:
        if (tchar[ch])
            return 0;
        if (ch == '=') {
            c->state = CH_EXT_VALUE;
            return 0;
        }
        break;
    case CH_EXT_TOKEN:
        if (tchar[ch])
            return 0;
        break;
    case CH_EXT_QUOTED:
    case CH_EXT_QPAIR:
        /* qdtext and quoted-pair: HTAB, SP, VCHAR, obs-text */
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return -1;
        if (c->state == CH_EXT_QPAIR)
            c->state = CH_EXT_QUOTED;
        else if (ch == '"')
            c->state = CH_EXT_QEND;
        else if (ch == '\\')
            c->state = CH_EXT_QPAIR;
        return 0;
    default: /* CH_EXT_QEND */
        break;
    }
    if (ch == ';')
        c->state = CH_EXT_NAME;
    else if (ch == '\r')
        c->state = CH_SIZE_LF;
    else
        return -1;
    return 0;
}

void
http_chunked_init(struct http_chunked *c)
{
    memset(c, 0, sizeof(*c));
}

ssize_t
http_chunked_decode(struct http_chunked *c, char *buf, size_t len,
                    uint64_t max_body_bytes)
{
    size_t in = (size_t)c->in;

    while (in < len) {
        unsigned char ch = (unsigned char)buf[in];
        int h;

        switch (c->state) {
        case CH_SIZE:
            h = hexval(ch);
            if (h >= 0) {
                if (++c->digits > 15)
                    return HTTP_PARSE_E_CHUNK;
                c->chunk_left = (c->chunk_left << 4) | (uint64_t)h;
                in++;
                break;
            }
            /* the digits end at ';' or CR: whitespace after them (BWS in
             * RFC 9112 section 7.1.1) is refused, see ext_byte() */
            if (c->digits == 0)
                return HTTP_PARSE_E_CHUNK;
            if (ch == ';')
                c->state = CH_EXT_NAME;
            else if (ch == '\r')
                c->state = CH_SIZE_LF;
            else
                return HTTP_PARSE_E_CHUNK;
            in++;
            break;
        case CH_EXT_NAME:
        case CH_EXT_NAME_MORE:
        case CH_EXT_VALUE:
        case CH_EXT_TOKEN:
        case CH_EXT_QUOTED:
        case CH_EXT_QPAIR:
        case CH_EXT_QEND:
            if (++c->line_bytes > CHUNK_LINE_MAX || ext_byte(c, ch) < 0)
                return HTTP_PARSE_E_CHUNK;
            in++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                return HTTP_PARSE_E_CHUNK;
            in++;
            c->digits = 0;
            c->line_bytes = 0;
            if (c->chunk_left == 0) {
                c->state = CH_TRAILER;
                break;
            }
            if (c->chunk_left > max_body_bytes - c->out)
                return HTTP_PARSE_E_BODY_TOO_LARGE;
            c->state = CH_DATA;
            break;
        case CH_DATA: {
            size_t n = len - in;
            if (n > c->chunk_left)
                n = (size_t)c->chunk_left;
            if (c->out != in)
                memmove(buf + c->out, buf + in, n);
            c->out += n;
            in += n;
            c->chunk_left -= n;
            if (c->chunk_left == 0)
                c->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (ch != '\r')
                return HTTP_PARSE_E_CHUNK;
            c->state = CH_DATA_LF;
            in++;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                return HTTP_PARSE_E_CHUNK;
            c->state = CH_SIZE;
            in++;
            break;
        case CH_TRAILER:
            if (ch == '\r') {
                c->state = CH_END_LF;
                in++;
                break;
            }
            /* a trailer line is a field line, name ":" value (RFC 9112
             * sections 7.1.2 and 5): a line that starts with whitespace
             * (obs-fold), with an empty name, or without a colon is
             * refused (SPEC 3) rather than skipped */
            if (!tchar[ch])
                return HTTP_PARSE_E_CHUNK;
            c->state = CH_TRAILER_NAME;
            /* fall through */
        case CH_TRAILER_NAME:
            if (++c->trailer_bytes > CHUNK_TRAILER_MAX)
                return HTTP_PARSE_E_CHUNK;
            if (ch == ':')
                c->state = CH_TRAILER_VALUE;
            else if (!tchar[ch])
                return HTTP_PARSE_E_CHUNK; /* also whitespace before ':' */
            in++;
            break;
        case CH_TRAILER_VALUE:
            if (++c->trailer_bytes > CHUNK_TRAILER_MAX)
                return HTTP_PARSE_E_CHUNK;
            if (ch == '\r')
                c->state = CH_TRAILER_LF;
            else if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                return HTTP_PARSE_E_CHUNK;
            in++;
            break;
        case CH_TRAILER_LF:
            if (ch != '\n')
                return HTTP_PARSE_E_CHUNK;
            c->state = CH_TRAILER;
            in++;
            break;
        case CH_END_LF:
            if (ch != '\n')
                return HTTP_PARSE_E_CHUNK;
            in++;
            c->state = CH_DONE;
            c->in = in;
            return (ssize_t)in;
        default:
            return HTTP_PARSE_E_CHUNK;
        }
    }
    c->in = in;
    return c->state == CH_DONE ? (ssize_t)in : HTTP_PARSE_AGAIN;
}

/* ---- percent-decoding and query strings ---- */

ssize_t
http_percent_decode(char *s, size_t len, bool plus_space)
{
    return decode(s, len, plus_space, false);
}

int
http_query_next(struct http_slice *q, struct http_slice *key,
                struct http_slice *value)
{
    while (q->len > 0) {
        char *amp = memchr(q->ptr, '&', q->len);
        size_t plen = amp ? (size_t)(amp - q->ptr) : q->len;
        char *pair = q->ptr, *eq;
        ssize_t kl, vl;

        q->ptr += plen + (amp ? 1 : 0);
        q->len -= (uint32_t)(plen + (amp ? 1 : 0));
        if (plen == 0)
            continue;
        eq = memchr(pair, '=', plen);
        kl = http_percent_decode(pair, eq ? (size_t)(eq - pair) : plen, true);
        if (kl < 0)
            return HTTP_PARSE_E_PERCENT;
        key->ptr = pair;
        key->len = (uint32_t)kl;
        if (eq) {
            vl = http_percent_decode(eq + 1, plen - (size_t)(eq - pair) - 1,
                                     true);
            if (vl < 0)
                return HTTP_PARSE_E_PERCENT;
            value->ptr = eq + 1;
            value->len = (uint32_t)vl;
        } else {
            value->ptr = pair + plen;
            value->len = 0;
        }
        return 1;
    }
    return 0;
}

/* ---- error table ---- */

static const struct {
    int status;
    const char *message;
} errors[] = {
    [-HTTP_PARSE_E_REQUEST_LINE] = {400, "malformed request line"},
    [-HTTP_PARSE_E_METHOD] = {400, "malformed method"},
    [-HTTP_PARSE_E_UNKNOWN_METHOD] = {501, "method not implemented"},
    [-HTTP_PARSE_E_TARGET] = {400, "malformed request target"},
    [-HTTP_PARSE_E_VERSION] = {400, "malformed HTTP version"},
    [-HTTP_PARSE_E_VERSION_UNSUPP] = {505, "HTTP version not supported"},
    [-HTTP_PARSE_E_URI_TOO_LONG] = {414, "request line too long"},
    [-HTTP_PARSE_E_HEADERS_TOO_LARGE] = {431, "header section too large"},
    [-HTTP_PARSE_E_TOO_MANY_HEADERS] = {431, "too many header fields"},
    [-HTTP_PARSE_E_BARE_CR] = {400, "bare CR in request"},
    [-HTTP_PARSE_E_BARE_LF] = {400, "bare LF in request"},
    [-HTTP_PARSE_E_OBS_FOLD] = {400, "obsolete line folding"},
    [-HTTP_PARSE_E_SPACE_BEFORE_COLON] = {400,
                                          "whitespace before header colon"},
    [-HTTP_PARSE_E_HEADER_NAME] = {400, "malformed header field name"},
    [-HTTP_PARSE_E_HEADER_VALUE] = {400, "invalid byte in header value"},
    [-HTTP_PARSE_E_NO_HOST] = {400, "missing Host header"},
    [-HTTP_PARSE_E_DUP_HOST] = {400, "duplicate Host header"},
    [-HTTP_PARSE_E_CONTENT_LENGTH] = {400, "invalid Content-Length"},
    [-HTTP_PARSE_E_DUP_CONTENT_LENGTH] = {400,
                                          "conflicting Content-Length headers"},
    [-HTTP_PARSE_E_CL_AND_TE] = {400, "both Content-Length and "
                                      "Transfer-Encoding"},
    [-HTTP_PARSE_E_TE_NOT_CHUNKED] = {400, "chunked is not the final transfer "
                                           "coding"},
    [-HTTP_PARSE_E_TE_UNKNOWN] = {501, "transfer coding not implemented"},
    [-HTTP_PARSE_E_TE_HTTP10] = {400, "Transfer-Encoding in HTTP/1.0"},
    [-HTTP_PARSE_E_EXPECT] = {417, "unsupported expectation"},
    [-HTTP_PARSE_E_BODY_TOO_LARGE] = {413, "request body too large"},
    [-HTTP_PARSE_E_CHUNK] = {400, "malformed chunked body"},
    [-HTTP_PARSE_E_PERCENT] = {400, "malformed percent-encoding"},
    [-HTTP_PARSE_E_HOST] = {400, "invalid Host header"},
    [-HTTP_PARSE_E_DUP_AUTHORIZATION] = {400, "duplicate Authorization header"},
    [-HTTP_PARSE_E_DUP_CONTENT_TYPE] = {400, "duplicate Content-Type header"},
    [-HTTP_PARSE_E_DUP_IDEMPOTENCY_KEY] = {400,
                                           "duplicate Idempotency-Key header"},
    [-HTTP_PARSE_E_DUP_REQUEST_ID] = {400, "duplicate X-Request-Id header"},
};

int
http_parse_status(ssize_t code)
{
    if (code > HTTP_PARSE_AGAIN || code < HTTP_PARSE_E_LAST)
        return 400;
    if (code == HTTP_PARSE_AGAIN)
        return 400;
    return errors[-code].status;
}

const char *
http_parse_message(ssize_t code)
{
    if (code >= HTTP_PARSE_AGAIN || code < HTTP_PARSE_E_LAST)
        return "bad request";
    return errors[-code].message;
}

static const char *const method_names[HTTP_METHOD_COUNT] = {
    [HTTP_METHOD_NONE] = "",    [HTTP_GET] = "GET",
    [HTTP_HEAD] = "HEAD",       [HTTP_POST] = "POST",
    [HTTP_PUT] = "PUT",         [HTTP_DELETE] = "DELETE",
    [HTTP_PATCH] = "PATCH",     [HTTP_OPTIONS] = "OPTIONS",
    [HTTP_CONNECT] = "CONNECT", [HTTP_TRACE] = "TRACE",
};

const char *
http_method_name(enum http_method m)
{
    if ((unsigned)m >= HTTP_METHOD_COUNT)
        return "";
    return method_names[m];
}
