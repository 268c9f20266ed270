/*
 * gzip.h - gzip content coding of answers (SPEC 2, issue 10; RFC 9110
 * 8.4.1.3 and 12.5.3).
 *
 * After routing, the request's Accept-Encoding is read (q-values
 * honoured: "gzip;q=0" refuses gzip, "*" counts when gzip is not named,
 * "identity" is always acceptable) and the verdict kept in r->gzip_ok,
 * because a deferred (database) answer is serialised after the request's
 * header bytes are gone.  At serialisation, a body of at
 * least gzip_min_bytes is compressed with zlib at gzip_level into a
 * per-worker buffer (request.h: valid until the next serialise call) and
 * used only if it came out smaller; such answers, compressed or not, get
 * "Vary: Accept-Encoding" (the answer depends on that header).
 */
#ifndef APIARY_GZIP_H
#define APIARY_GZIP_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "request.h"

struct gzip {
    int level; /* 0: off */
    uint32_t min_bytes;
    unsigned char *out; /* the compressed body of the last answer */
    size_t cap;
    void *zs; /* z_stream, reused (deflateReset) */
    uint64_t compressed, bytes_in, bytes_out;
};

/* 0, or -1 when zlib could not be set up (compression is then off). */
int gzip_init(struct gzip *g, const struct config *cfg);
void gzip_fini(struct gzip *g);

/*
 * 1 when an Accept-Encoding value v[0..len) accepts gzip (q > 0 for
 * "gzip", "x-gzip" or, with neither named, "*"), else 0.  An empty or
 * absent header accepts nothing but identity here (RFC 9110 12.5.3 lets
 * us choose; we choose not to compress).
 */
int gzip_accepted(const char *v, size_t len);

/* After-routing hook (arg: struct gzip *): sets r->gzip_ok.  Returns 0. */
int gzip_route(struct request *r, void *arg);

/* Serialise hook (arg: struct gzip *). */
void gzip_serialise(struct request *r, struct response *resp, struct hdrbuf *h,
                    void *arg);

#endif
