/*
 * fuzz_metrics_header.c - the metrics segment as apiarystat reads it
 * (shm/metrics.h): the input is the whole mapping, as another process
 * wrote it.  metrics_snapshot() must check the header against the size
 * and either refuse with a NUL-terminated reason or copy a view that both
 * formatters render, never reading outside the input or crashing.
 *
 * The input is copied into a 64-byte aligned buffer of exactly its size
 * (a mapping is page-aligned), so ASan sees any read past the end.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct metrics_snap snap;
    struct metrics_out o = {0};
    char diag[256];
    size_t cap = (size + 63) & ~(size_t)63;
    void *buf;
    int rc;

    buf = aligned_alloc(64, cap ? cap : 64);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    diag[0] = '\0';
    rc = metrics_snapshot(buf, size, &snap, diag, sizeof(diag));
    if (rc != 0 && rc != -1)
        abort();
    if (memchr(diag, '\0', sizeof(diag)) == NULL)
        abort();
    if (rc == 0) {
        if (snap.nroutes > METRICS_MAX_ROUTES ||
            snap.nrows > METRICS_MAX_BLOCKS ||
            memchr(snap.name, '\0', sizeof(snap.name)) == NULL)
            abort();
        metrics_format_prometheus(&snap, &o);
        metrics_out_reset(&o);
        metrics_format_json(&snap, true, &o);
        metrics_out_free(&o);
    }
    free(buf);
    return 0;
}
