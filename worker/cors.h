/*
 * cors.h - Cross-Origin Resource Sharing (SPEC 2, issue 10; the Fetch
 * standard's CORS protocol).
 *
 * Off unless cors_origins lists origins ("https://a.example,
 * https://b.example"; "*" allows any origin and is never combined with
 * credentials).  After routing, a request's Origin is matched against the
 * list (exact, case-sensitive, as browsers send it) and the match is kept
 * in r->cors_origin.  A preflight (OPTIONS with an allowed Origin on a
 * path some route serves; the parser does not keep
 * Access-Control-Request-Method, and the answer lists every method
 * anyway) is answered there with 204, the allowed methods and headers and
 * Access-Control-Max-Age.  At serialisation every answer to an allowed
 * origin gets Access-Control-Allow-Origin (and -Credentials when
 * configured) and Access-Control-Expose-Headers; every answer gets
 * "Vary: Origin" while CORS is on, since it depends on Origin.
 */
#ifndef APIARY_CORS_H
#define APIARY_CORS_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "request.h"

#define CORS_MAX_ORIGINS 16
/* Longest origin accepted: "https://" + a 253-byte host + ":65535". */
#define CORS_ORIGIN_MAX 267

struct cors {
    bool on;
    bool any; /* "*" */
    bool credentials;
    uint32_t max_age_s;
    unsigned norigins;
    struct {
        const char *ptr; /* into the config's cors_origins */
        uint32_t len;
    } origins[CORS_MAX_ORIGINS];
};

/* Parses cfg->cors_origins (cfg must outlive co).  0, or -1 with why
 * filled (too many origins, an empty or too long entry, "*" with
 * credentials). */
int cors_init(struct cors *co, const struct config *cfg, char *why,
              size_t why_len);

/* After-routing hook (arg: struct cors *): sets r->cors_origin.  Runs
 * early, so that a 429 or 401 still carries the CORS headers a browser
 * needs to read it.  Returns 0. */
int cors_match(struct request *r, void *arg);

/* After-routing hook (arg: struct cors *), after cors_match(): answers a
 * preflight; 1 when it did. */
int cors_preflight(struct request *r, void *arg);

/* Serialise hook (arg: struct cors *). */
void cors_serialise(struct request *r, struct response *resp, struct hdrbuf *h,
                    void *arg);

#endif
