/*
 * router.c - see router.h.
 */
#include "router.h"

#include <string.h>

void
router_init(struct router *r)
{
    memset(r, 0, sizeof(*r));
}

int
router_add(struct router *r, enum http_method method, const char *pattern,
           router_handler_fn handler, void *arg)
{
    struct route *rt;
    const char *p = pattern;
    unsigned nparams = 0;

    if (r->nroutes == ROUTER_MAX_ROUTES || pattern[0] != '/')
        return -1;
    rt = &r->routes[r->nroutes];
    memset(rt, 0, sizeof(*rt));
    rt->method = method;
    rt->pattern = pattern;
    rt->handler = handler;
    rt->arg = arg;
    if (strcmp(pattern, "/") != 0) {
        while (*p == '/') {
            const char *s = ++p;
            size_t n;
            while (*p && *p != '/')
                p++;
            n = (size_t)(p - s);
            if (n == 0 || n > 255 || rt->nsegs == ROUTER_MAX_SEGMENTS)
                return -1;
            if (s[0] == '{' && s[n - 1] == '}') {
                if (++nparams > ROUTER_MAX_PARAMS)
                    return -1;
                rt->param_mask |= (uint8_t)(1u << rt->nsegs);
            }
            rt->segs[rt->nsegs].ptr = s;
            rt->segs[rt->nsegs].len = (uint8_t)n;
            rt->nsegs++;
        }
        if (*p != '\0')
            return -1;
    }
    r->nroutes++;
    return 0;
}

/* Splits path into segments; -1 if empty segments or too many. */
static int
split(const char *path, size_t len, struct http_slice *segs)
{
    size_t i = 0;
    int n = 0;

    if (len == 0 || path[0] != '/')
        return -1;
    if (len == 1)
        return 0;
    while (i < len) {
        size_t s = ++i;
        while (i < len && path[i] != '/')
            i++;
        if (i == s || n == ROUTER_MAX_SEGMENTS)
            return -1;
        segs[n].ptr = (char *)(uintptr_t)(path + s);
        segs[n].len = (uint32_t)(i - s);
        n++;
    }
    return n;
}

static int
path_matches(const struct route *rt, const struct http_slice *segs, int nsegs,
             struct route_match *m)
{
    if (rt->nsegs != nsegs)
        return 0;
    m->nparams = 0;
    for (int i = 0; i < nsegs; i++) {
        if (rt->param_mask & (1u << i)) {
            m->params[m->nparams++] = segs[i];
            continue;
        }
        if (rt->segs[i].len != segs[i].len ||
            memcmp(rt->segs[i].ptr, segs[i].ptr, segs[i].len) != 0)
            return 0;
    }
    return 1;
}

int
router_match(const struct router *r, enum http_method method, const char *path,
             size_t len, struct route_match *m)
{
    struct http_slice segs[ROUTER_MAX_SEGMENTS];
    int nsegs = split(path, len, segs);
    int found_path = 0;

    m->route = NULL;
    m->allow = 0;
    m->nparams = 0;
    if (nsegs < 0)
        return ROUTER_NOT_FOUND;
    for (unsigned i = 0; i < r->nroutes; i++) {
        const struct route *rt = &r->routes[i];
        if (!path_matches(rt, segs, nsegs, m))
            continue;
        if (rt->method == method ||
            (method == HTTP_HEAD && rt->method == HTTP_GET)) {
            m->route = rt;
            return (int)i;
        }
        found_path = 1;
        m->allow |= 1u << rt->method;
        if (rt->method == HTTP_GET)
            m->allow |= 1u << HTTP_HEAD;
    }
    m->nparams = 0;
    return found_path ? ROUTER_METHOD_NOT_ALLOWED : ROUTER_NOT_FOUND;
}

size_t
router_allow_string(uint32_t allow, char *buf, size_t cap)
{
    size_t o = 0;

    if (cap == 0)
        return 0;
    buf[0] = '\0';
    for (int m = 1; m < HTTP_METHOD_COUNT; m++) {
        const char *name;
        size_t n;
        if (!(allow & (1u << m)))
            continue;
        name = http_method_name((enum http_method)m);
        n = strlen(name);
        if (o + n + 3 > cap)
            break;
        if (o) {
            buf[o++] = ',';
            buf[o++] = ' ';
        }
        memcpy(buf + o, name, n);
        o += n;
        buf[o] = '\0';
    }
    return o;
}

uint32_t
router_methods(const struct router *r)
{
    uint32_t all = 0;

    for (unsigned i = 0; i < r->nroutes; i++) {
        all |= 1u << r->routes[i].method;
        if (r->routes[i].method == HTTP_GET)
            all |= 1u << HTTP_HEAD;
    }
    return all;
}
