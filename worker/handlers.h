/*
 * handlers.h - the route table and the handlers that need no database.
 *
 * handlers_register() is the one place that lists every route the server
 * answers; the router, the 405 Allow header and (later) the OpenAPI
 * document all follow from it.
 */
#ifndef APIARY_HANDLERS_H
#define APIARY_HANDLERS_H

#include "config.h"
#include "router.h"

struct worker;

/* Adds the worker's own routes (/health, /ready, /debug/worker), with wk
 * as their context.  0, or -1 if the router table is too small (a bug). */
int handlers_register(struct router *r, const struct config *cfg,
                      struct worker *wk);

#endif
