/*
 * schema.c - see schema.h.
 */
#include "schema.h"

#include <stdio.h>
#include <stdlib.h>

const struct schema_migration schema_required[] = {
    {1, "0001_schema.sql"},
};
const size_t schema_required_count =
    sizeof(schema_required) / sizeof(schema_required[0]);

int
schema_check(const PGresult *res, char *diag, size_t diag_len)
{
    int n = res ? PQntuples(res) : 0;

    for (size_t i = 0; i < schema_required_count; i++) {
        int found = 0;
        for (int r = 0; r < n && !found; r++)
            found = atoi(PQgetvalue(res, r, 0)) == schema_required[i].version;
        if (!found) {
            snprintf(diag, diag_len,
                     "the database schema lacks migration %s: run "
                     "\"apiaryd migrate\" first",
                     schema_required[i].file);
            return -1;
        }
    }
    return 0;
}
