/*
 * request_id.h - the request id of SPEC 2 (issue 10).
 *
 * After routing, a client's X-Request-Id is taken when it is short
 * (1..REQUEST_ID_MAX bytes) and printable (visible ASCII, no quote or
 * backslash); otherwise, and for requests rejected before routing (parser
 * errors, limits), one is generated at serialisation.  Either way it is
 * stored in r->rid (so the access log prints it) and echoed as an
 * X-Request-Id response header.
 *
 * Generated ids are "<16 hex>-<counter hex>": 64 random bits drawn with
 * getrandom() when the worker starts, then a per-worker counter, so they
 * are unique across workers and restarts (a collision needs two processes
 * drawing the same 64 random bits).
 */
#ifndef APIARY_REQUEST_ID_H
#define APIARY_REQUEST_ID_H

#include <stdint.h>

#include "request.h"

struct request_id {
    char prefix[17]; /* 16 hex digits + NUL */
    uint64_t counter;
};

/* Draws the random prefix.  0, or -1 if getrandom() failed (a prefix from
 * time and pid is used then, and the caller may log it). */
int request_id_init(struct request_id *ri);

/* After-routing hook (arg: struct request_id *): fills r->rid; never
 * answers (returns 0). */
int request_id_route(struct request *r, void *arg);

/* Serialise hook (arg: struct request_id *): fills r->rid if still empty
 * and adds the X-Request-Id header. */
void request_id_serialise(struct request *r, struct response *resp,
                          struct hdrbuf *h, void *arg);

/* True when s[0..len) may be used as a request id as it is. */
int request_id_valid(const char *s, size_t len);

#endif
