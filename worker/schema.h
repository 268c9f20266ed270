/*
 * schema.h - the migrations this build of apiaryd needs.
 *
 * The list mirrors sql/NNNN_*.sql (a unit test keeps them in step).  A
 * worker checks it against schema_migrations on every new database
 * connection and refuses to serve an older schema (SPEC 6).
 */
#ifndef APIARY_SCHEMA_H
#define APIARY_SCHEMA_H

#include <stddef.h>

#include <libpq-fe.h>

struct schema_migration {
    int version;
    const char *file; /* "0001_schema.sql" */
};

extern const struct schema_migration schema_required[];
extern const size_t schema_required_count;

/* The query whose result schema_check() reads. */
#define SCHEMA_QUERY "SELECT version FROM schema_migrations ORDER BY version"

/*
 * Checks a result of SCHEMA_QUERY.  Returns 0 when every required
 * migration is applied, else -1 with diag naming the first missing file.
 * A NULL res means the table does not exist (nothing was ever applied).
 */
int schema_check(const PGresult *res, char *diag, size_t diag_len);

#endif
