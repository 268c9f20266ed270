/*
 * metrics_http.h - the HTTP views of the metrics segment:
 *
 *   GET /metrics      Prometheus text exposition format 0.0.4, aggregated
 *                     over the workers (always registered; 503 when the
 *                     segment is off)
 *   GET /status       the live status page (status_page = on)
 *   GET /status.json  the JSON view the page polls (status_page = on)
 *
 * Each handler's arg is the worker's struct metrics_hook.  They read the
 * segment only; what they show is what apiarystat shows.
 */
#ifndef APIARY_METRICS_HTTP_H
#define APIARY_METRICS_HTTP_H

#include "metrics_hook.h"
#include "request.h"

void metrics_http_metrics(struct request *r, void *arg);
void metrics_http_status(struct request *r, void *arg);
void metrics_http_status_json(struct request *r, void *arg);

#endif
