/*
 * access_log.c - formats one access-log line per request (access_log.h)
 * and hands it to the logger's buffer (log_access(), never blocking).
 * Client bytes (path, request id) are JSON-escaped and cut short, so a
 * hostile 8 KiB path stays a short, valid line.
 */
#include "access_log.h"

#include <stdio.h>
#include <time.h>

#include "conn_priv.h"
#include "log.h"

static const char *const end_names[] = {
    [REQUEST_END_OK] = NULL,
    [REQUEST_END_CLIENT_GONE] = "client_gone",
    [REQUEST_END_TIMEOUT] = "timeout",
    [REQUEST_END_REJECTED] = "rejected",
};

void
access_log_done(const struct request *r, void *arg)
{
    const unsigned *worker_id = arg;
    char line[2048], epath[600], erid[160], peer[64], ts[32], end[32];
    const char *path, *rid;
    size_t path_len, rid_len;
    struct timespec now;
    struct tm tm;
    int n;

    if (!log_access_enabled())
        return;
    if (r->copied) {
        path = r->path;
        path_len = r->path_len;
    } else {
        path = r->req.path.ptr;
        path_len = r->req.path.len;
    }
    rid = r->rid_len ? r->rid : r->req.request_id.ptr;
    rid_len = r->rid_len ? r->rid_len : r->req.request_id.len;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    request_peer(r, peer, sizeof(peer));
    log_json_escape(epath, sizeof(epath), path ? path : "",
                    path ? path_len : 0);
    log_json_escape(erid, sizeof(erid), rid ? rid : "", rid ? rid_len : 0);
    end[0] = '\0';
    if (r->end < sizeof(end_names) / sizeof(end_names[0]) && end_names[r->end])
        snprintf(end, sizeof(end), ",\"end\":\"%s\"", end_names[r->end]);
    n = snprintf(line, sizeof(line),
                 "{\"time\":\"%s.%03ldZ\",\"request_id\":\"%s\",\"worker\":%u,"
                 "\"client\":\"%s\",\"method\":\"%s\",\"path\":\"%s\","
                 "\"status\":%d,\"bytes\":%llu,\"us\":%llu%s}\n",
                 ts, now.tv_nsec / 1000000, erid, worker_id ? *worker_id : 0,
                 peer, http_method_name(r->method), epath, r->status,
                 (unsigned long long)r->bytes_out,
                 (unsigned long long)(conn_now_us() - r->start_us), end);
    if (n > 0)
        log_access(line,
                   (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}
