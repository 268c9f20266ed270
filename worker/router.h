/*
 * router.h - method + path pattern matching.
 *
 * Patterns are literal segments and "{name}" parameters:
 * "/users/{id}/orders".  A parameter matches one non-empty segment; the
 * handler validates it (the router does not know that ids are integers).
 * Matching is a linear scan over at most ROUTER_MAX_ROUTES patterns, each
 * compared segment by segment against the decoded path: a dozen routes cost
 * less than a hash of the path would.
 *
 * HEAD matches every GET route (RFC 9110 section 9.3.2).  When the path
 * matches some pattern but not for this method the result is
 * ROUTER_METHOD_NOT_ALLOWED and m->allow holds the methods that would match,
 * for the Allow header; when no pattern matches the path, ROUTER_NOT_FOUND.
 */
#ifndef APIARY_ROUTER_H
#define APIARY_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "http_parse.h"

#define ROUTER_MAX_ROUTES 32
#define ROUTER_MAX_SEGMENTS 8
#define ROUTER_MAX_PARAMS 4

enum { ROUTER_NOT_FOUND = -1, ROUTER_METHOD_NOT_ALLOWED = -2 };

/* Handlers are stored type-erased; void (*)(void) converts to any. */
typedef void (*router_handler_fn)(void);

struct route {
    enum http_method method;
    const char *pattern;
    router_handler_fn handler; /* opaque to the router */
    void *arg;                 /* the handler's context, opaque too */
    uint8_t nsegs;
    uint8_t param_mask; /* bit i: segment i is a parameter */
    struct {
        const char *ptr;
        uint8_t len;
    } segs[ROUTER_MAX_SEGMENTS];
};

struct router {
    struct route routes[ROUTER_MAX_ROUTES];
    unsigned nroutes;
};

struct route_match {
    const struct route *route;
    struct http_slice params[ROUTER_MAX_PARAMS];
    unsigned nparams;
    uint32_t allow; /* bit per enum http_method, for 405 */
};

void router_init(struct router *r);

/*
 * Adds a route.  pattern must stay valid (a string literal); arg is
 * handed to the handler with each request.  Returns 0,
 * or -1 if the table is full or the pattern is malformed (not starting
 * with '/', too many segments or parameters).
 */
int router_add(struct router *r, enum http_method method, const char *pattern,
               router_handler_fn handler, void *arg);

/*
 * Matches method and decoded path.  Returns the index of the route (>= 0)
 * with m->route and m->params filled (slices into path), or
 * ROUTER_NOT_FOUND, or ROUTER_METHOD_NOT_ALLOWED with m->allow set.
 */
int router_match(const struct router *r, enum http_method method,
                 const char *path, size_t len, struct route_match *m);

/*
 * Writes the Allow header value for a mask ("GET, HEAD, POST") into buf.
 * Returns its length (truncated to cap - 1).
 */
size_t router_allow_string(uint32_t allow, char *buf, size_t cap);

/* Every method some route answers (HEAD with GET), as allow bits. */
uint32_t router_methods(const struct router *r);

#endif
