/*
 * conn_priv.h - shared by conn.c (the state machine), answer.c (answers
 * and their order) and request.c; not a public interface.
 */
#ifndef APIARY_CONN_PRIV_H
#define APIARY_CONN_PRIV_H

#include <stdint.h>

#include "conn.h"
#include "request.h"

/* conn.c */
/* Puts c on the list written before the loop sleeps. */
void conn_queue_output(struct conn *c);
/* Registers the interest c's state calls for. */
void conn_update_mask(struct conn *c);
/* Puts c in the timer queue its state calls for (see conn.h). */
void conn_arm_timer(struct conn *c);
/* Answers were queued on c->out: resume reading, timers, limits. */
void conn_answers_moved(struct conn *c);
/* CLOCK_MONOTONIC in microseconds. */
uint64_t conn_now_us(void);

/* answer.c */
/* c is closing: ends every request it still holds (abort, done hooks). */
void answer_client_gone(struct conn *c);
/* Queues "100 Continue" for c->rs now, or once earlier answers are out. */
void answer_continue(struct conn *c);
/* Timer callback of the request timeout (504). */
void answer_request_timeout(struct loop *loop, struct timer *t);

/* request.c */
/* Runs the done hooks of r once and counts it. */
void request_run_done(struct request *r);

#endif
