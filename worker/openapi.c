/*
 * openapi.c - see openapi.h.  The Makefile makes this object depend on
 * worker/openapi.json; the path in .incbin is relative to the top of the
 * tree, where make runs the compiler.
 */
#include "openapi.h"

#include "request.h"

__asm__(".section .rodata\n"
        ".global apiary_openapi_start\n"
        ".global apiary_openapi_end\n"
        "apiary_openapi_start:\n"
        ".incbin \"worker/openapi.json\"\n"
        "apiary_openapi_end:\n"
        ".previous\n");

extern const char apiary_openapi_start[], apiary_openapi_end[];

const char *
openapi_document(size_t *len)
{
    *len = (size_t)(apiary_openapi_end - apiary_openapi_start);
    return apiary_openapi_start;
}

static void
serve(struct request *r, void *arg)
{
    size_t len;
    const char *doc = openapi_document(&len);

    (void)arg;
    request_reply(r, 200, doc, len, NULL, 0);
}

int
openapi_register(struct router *rt)
{
    return router_add(rt, HTTP_GET, "/openapi.json", (router_handler_fn)serve,
                      NULL);
}
