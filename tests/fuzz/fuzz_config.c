/*
 * fuzz_config.c - the config file parser on arbitrary text: it must
 * return 0 or -1 with a NUL-terminated diagnostic, never crash, and leave
 * every string setting NUL-terminated.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config c;
    char diag[CONFIG_DIAG_MAX];
    char *copy = malloc(size ? size : 1);
    int rc;

    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    config_defaults(&c);
    diag[0] = '\0';
    rc = config_parse(&c, copy, size, "fuzz.conf", diag, sizeof(diag));
    if (rc != 0 && rc != -1)
        abort();
    if (memchr(diag, '\0', sizeof(diag)) == NULL)
        abort();
    if (memchr(c.listen, '\0', sizeof(c.listen)) == NULL ||
        memchr(c.pidfile, '\0', sizeof(c.pidfile)) == NULL ||
        memchr(c.database_url, '\0', sizeof(c.database_url)) == NULL)
        abort();
    free(copy);
    return 0;
}
