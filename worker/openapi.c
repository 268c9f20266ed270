/*
 * openapi.c - see openapi.h.  The Makefile makes this object depend on
 * worker/openapi.json; the path in .incbin is relative to the top of the
 * tree, where make runs the compiler.
 */
#include "openapi.h"

#include <stdint.h>

#include "request.h"

/* the assembler measures the document: no pointer arithmetic across
 * two symbols in C */
__asm__(".section .rodata\n"
        ".balign 8\n"
        "apiary_openapi_len:\n"
        ".quad 2f - 1f\n"
        "apiary_openapi_start:\n"
        "1:\n"
        ".incbin \"worker/openapi.json\"\n"
        "2:\n"
        ".byte 0\n"
        ".previous\n");

extern const char apiary_openapi_start[];
extern const uint64_t apiary_openapi_len;

const char *
openapi_document(size_t *len)
{
    *len = (size_t)apiary_openapi_len;
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
