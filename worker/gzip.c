/*
 * gzip.c - see gzip.h.
 */
#include "gzip.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

#include "log.h"

int
gzip_init(struct gzip *g, const struct config *cfg)
{
    z_stream *zs;

    memset(g, 0, sizeof(*g));
    g->level = (int)cfg->gzip_level;
    g->min_bytes = cfg->gzip_min_bytes;
    if (g->level == 0)
        return 0;
    zs = calloc(1, sizeof(*zs));
    if (zs == NULL)
        goto fail;
    /* 15 + 16: a gzip wrapper, not zlib's */
    if (deflateInit2(zs, g->level, Z_DEFLATED, 15 + 16, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        free(zs);
        goto fail;
    }
    g->zs = zs;
    return 0;
fail:
    g->level = 0;
    return -1;
}

void
gzip_fini(struct gzip *g)
{
    if (g->zs) {
        (void)deflateEnd(g->zs);
        free(g->zs);
        g->zs = NULL;
    }
    free(g->out);
    g->out = NULL;
    g->cap = 0;
}

static int
is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* The q-value of one list member's parameters p[0..n); 1000 = q=1. */
static int
qvalue(const char *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        while (i < n && (is_ows(p[i]) || p[i] == ';'))
            i++;
        if (i + 1 < n && (p[i] | 0x20) == 'q' && p[i + 1] == '=') {
            int q = 0, scale = 1000;
            i += 2;
            if (i < n && p[i] == '1')
                return 1000;
            if (i >= n || p[i] != '0')
                return 0; /* malformed: not acceptable */
            i++;
            if (i < n && p[i] == '.') {
                i++;
                for (int d = 0; d < 3 && i < n && p[i] >= '0' && p[i] <= '9';
                     d++, i++) {
                    scale /= 10;
                    q += (p[i] - '0') * scale;
                }
            }
            return q;
        }
        while (i < n && p[i] != ';')
            i++;
    }
    return 1000;
}

int
gzip_accepted(const char *v, size_t len)
{
    int gz = -1, star = -1;
    size_t i = 0;

    while (i < len) {
        size_t s, e, te;
        while (i < len && (is_ows(v[i]) || v[i] == ','))
            i++;
        s = i;
        while (i < len && v[i] != ',')
            i++;
        e = i;
        te = s;
        while (te < e && v[te] != ';' && !is_ows(v[te]))
            te++;
        if (te == s)
            continue;
        int q = qvalue(v + te, e - te);
        if ((te - s == 4 && strncasecmp(v + s, "gzip", 4) == 0) ||
            (te - s == 6 && strncasecmp(v + s, "x-gzip", 6) == 0))
            gz = gz < q ? q : gz;
        else if (te - s == 1 && v[s] == '*')
            star = q;
    }
    if (gz >= 0)
        return gz > 0;
    return star > 0;
}

int
gzip_route(struct request *r, void *arg)
{
    const struct gzip *g = arg;

    if (g->level > 0)
        r->gzip_ok = (uint8_t)gzip_accepted(r->req.accept_encoding.ptr,
                                            r->req.accept_encoding.len);
    return 0;
}

void
gzip_serialise(struct request *r, struct response *resp, struct hdrbuf *h,
               void *arg)
{
    static const char vary[] = "Vary: Accept-Encoding\r\n";
    static const char ce[] = "Content-Encoding: gzip\r\n";
    struct gzip *g = arg;
    z_stream *zs = g->zs;
    size_t bound;

    if (g->level == 0 || resp->body == NULL || resp->body_len < g->min_bytes ||
        resp->no_body_headers)
        return;
    (void)hdrbuf_add(h, vary, sizeof(vary) - 1);
    if (!r->gzip_ok || resp->body_len > UINT32_MAX)
        return;
    bound = deflateBound(zs, (uLong)resp->body_len);
    if (bound > g->cap) {
        unsigned char *n = realloc(g->out, bound);
        if (n == NULL) {
            log_warn("out of memory for a gzip buffer of %zu bytes: sent "
                     "uncompressed",
                     bound);
            return;
        }
        g->out = n;
        g->cap = bound;
    }
    if (deflateReset(zs) != Z_OK)
        return;
    zs->next_in = (Bytef *)(uintptr_t)resp->body;
    zs->avail_in = (uInt)resp->body_len;
    zs->next_out = g->out;
    zs->avail_out = (uInt)g->cap;
    if (deflate(zs, Z_FINISH) != Z_STREAM_END)
        return;
    /* never larger: the header line costs bytes too */
    if (zs->total_out + sizeof(ce) - 1 >= resp->body_len)
        return;
    if (hdrbuf_add(h, ce, sizeof(ce) - 1) < 0)
        return;
    g->compressed++;
    g->bytes_in += resp->body_len;
    g->bytes_out += zs->total_out;
    resp->body = (const char *)g->out;
    resp->body_len = zs->total_out;
}
