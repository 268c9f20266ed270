/*
 * request.c - the request object's pool, the hook registry, and the done
 * point.  See request.h for the life cycle and the hook contracts; the
 * answering side is answer.c, the receiving side conn.c.
 */
#include "request.h"

#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "conn_priv.h"

int
request_hooks_add_route(struct request_hooks *h, request_route_hook_fn fn,
                        void *arg)
{
    if (h->nroute >= REQUEST_HOOKS_MAX)
        return -1;
    h->route[h->nroute].fn = fn;
    h->route[h->nroute].arg = arg;
    h->nroute++;
    return 0;
}

int
request_hooks_add_serialise(struct request_hooks *h,
                            request_serialise_hook_fn fn, void *arg)
{
    if (h->nserialise >= REQUEST_HOOKS_MAX)
        return -1;
    h->serialise[h->nserialise].fn = fn;
    h->serialise[h->nserialise].arg = arg;
    h->nserialise++;
    return 0;
}

int
request_hooks_add_done(struct request_hooks *h, request_done_hook_fn fn,
                       void *arg)
{
    if (h->ndone >= REQUEST_HOOKS_MAX)
        return -1;
    h->done[h->ndone].fn = fn;
    h->done[h->ndone].arg = arg;
    h->ndone++;
    return 0;
}

void
request_pool_init(struct request_pool *p, unsigned max_free)
{
    p->free_list = NULL;
    p->nfree = 0;
    p->max_free = max_free;
}

void
request_pool_fini(struct request_pool *p)
{
    while (p->free_list) {
        struct request *r = p->free_list;
        p->free_list = r->next;
        free(r);
    }
    p->nfree = 0;
}

struct request *
request_get(struct request_pool *p, struct conn *c, uint64_t now_us)
{
    struct request *r = p->free_list;

    if (r) {
        p->free_list = r->next;
        p->nfree--;
    } else {
        r = malloc(sizeof(*r));
        if (r == NULL)
            return NULL;
        buf_allocs++;
    }
    /*
     * Everything up to the log copies (those are filled with lengths).
     * All zero is also the initial state of the parser, the request, the
     * chunked decoder, the output queue and the timer (their _init
     * functions are that memset), so they are not initialised twice on
     * every request.
     */
    memset(r, 0, offsetof(struct request, path));
    r->magic = REQUEST_MAGIC;
    r->c = c;
    r->start_us = now_us;
    return r;
}

void
request_put(struct request_pool *p, struct request **rp)
{
    struct request *r = *rp;

    *rp = NULL;
    if (r == NULL)
        return;
    timer_stop(&r->timer);
    r->magic = 0;
    if (p->nfree >= p->max_free) {
        free(r);
        return;
    }
    r->next = p->free_list;
    p->free_list = r;
    p->nfree++;
}

void
request_run_done(struct request *r)
{
    struct conn_ctx *ctx = r->c ? r->c->ctx : NULL;

    if (ctx == NULL)
        return;
    for (unsigned i = 0; i < ctx->hooks.ndone; i++)
        ctx->hooks.done[i].fn(r, ctx->hooks.done[i].arg);
    ctx->nrequests++;
}

struct conn_ctx *
request_ctx(const struct request *r)
{
    return r->c ? r->c->ctx : NULL;
}

void
request_peer(const struct request *r, char *buf, size_t cap)
{
    if (r->c == NULL) {
        if (cap > 1) {
            buf[0] = '-';
            buf[1] = '\0';
        }
        return;
    }
    conn_peer_str(r->c, buf, cap);
}
