/*
 * openapi.h - GET /openapi.json (SPEC 2, issue 10): the OpenAPI 3.1
 * document of every route, parameter, body, header and error.
 *
 * The document is worker/openapi.json, embedded into the binary at build
 * time (.incbin) and served as it is: no allocation, no formatting per
 * request.  tests/unit/test_openapi.c walks the router's table and the
 * document and fails when they differ; tests/integration/test_openapi.py
 * validates real answers against its schemas.
 */
#ifndef APIARY_OPENAPI_H
#define APIARY_OPENAPI_H

#include <stddef.h>

#include "router.h"

/* The embedded document: its bytes and length (not NUL-terminated). */
const char *openapi_document(size_t *len);

/* Adds GET /openapi.json to rt.  0, or -1 when the table is full. */
int openapi_register(struct router *rt);

#endif
