/*
 * api.h - the users / orders / audit API of SPEC 2, served from
 * PostgreSQL through the worker's pipelined connection (pg.h).
 *
 * api_register() adds the routes; api_statements() is the table of
 * prepared statements pg prepares on every connection.
 */
#ifndef APIARY_API_H
#define APIARY_API_H

#include "pg.h"
#include "router.h"

/* Adds every API route to r.  0, or -1 if the table is full. */
int api_register(struct router *r);

/* The prepared statements; *n receives their count. */
const struct pg_stmt_def *api_statements(unsigned *n);

/* Timer callback for the request timeout (504), armed per request. */
void api_request_timeout(struct loop *loop, struct timer *t);

/* Frees the per-worker request pool (at exit, for valgrind). */
void api_fini(void);

#endif
