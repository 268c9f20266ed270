/*
 * access_log.h - the access log, as a done hook (request.h): one JSON line
 * per request, whatever ended it (SPEC 3, 7):
 *
 *   {"time":"2026-11-29T22:00:00.123Z","request_id":"..","worker":1,
 *    "client":"127.0.0.1:5000","method":"GET","path":"/users/1",
 *    "status":200,"bytes":123,"us":250}
 *
 * plus "end":"client_gone" (status 499: the client left before its answer
 * was queued, nginx's convention), "end":"timeout" (408, 504) or
 * "end":"rejected" (a parser error or limit; the connection closed).
 * "bytes" counts the answer's bytes queued, "us" the time from the
 * request's first byte to its done point.
 */
#ifndef APIARY_ACCESS_LOG_H
#define APIARY_ACCESS_LOG_H

#include "request.h"

/* The done hook; arg points at the worker id (const unsigned *). */
void access_log_done(const struct request *r, void *arg);

#endif
