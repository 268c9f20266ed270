/*
 * migrate.c - see migrate.h.
 */
#include "migrate.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

/* pg_advisory_lock key: "apiary" in ASCII, so it is recognisable */
#define MIGRATE_LOCK_KEY "107135432225401" /* 0x617069617279 */
#define MIGRATIONS_MAX 1000

struct migration {
    int version;
    char file[256];
};

static int
cmp_migration(const void *a, const void *b)
{
    const struct migration *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

/* NNNN_name.sql -> version, or -1 */
static int
file_version(const char *name)
{
    size_t n = strlen(name);
    int v = 0;

    if (n < 10 || strcmp(name + n - 4, ".sql") != 0 || name[4] != '_')
        return -1;
    for (int i = 0; i < 4; i++) {
        if (!isdigit((unsigned char)name[i]))
            return -1;
        v = v * 10 + (name[i] - '0');
    }
    return v > 0 ? v : -1;
}

static char *
read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    long n;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
        }
    }
    fclose(f);
    return buf;
}

static int
exec_ok(PGconn *conn, const char *sql, const char *what)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

    if (!ok)
        fprintf(stderr, "apiaryd migrate: %s failed: %s", what,
                PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

int
migrate_run(const struct config *cfg)
{
    struct migration *list = NULL;
    size_t n = 0, applied = 0;
    DIR *d = NULL;
    struct dirent *e;
    PGconn *conn = NULL;
    PGresult *r = NULL;
    int rc = 1;

    if (cfg->database_url[0] == '\0') {
        fprintf(stderr, "apiaryd migrate: database_url is not set\n");
        return 1;
    }
    d = opendir(cfg->sql_dir);
    if (d == NULL) {
        fprintf(stderr, "apiaryd migrate: cannot open sql_dir %s: %s\n",
                cfg->sql_dir, strerror(errno));
        return 1;
    }
    list = calloc(MIGRATIONS_MAX, sizeof(*list));
    if (list == NULL)
        goto out;
    while ((e = readdir(d)) != NULL) {
        int v = file_version(e->d_name);
        if (v < 0)
            continue;
        if (n == MIGRATIONS_MAX || strlen(e->d_name) >= sizeof(list[0].file)) {
            fprintf(stderr, "apiaryd migrate: too many migrations\n");
            goto out;
        }
        list[n].version = v;
        snprintf(list[n].file, sizeof(list[n].file), "%s", e->d_name);
        n++;
    }
    qsort(list, n, sizeof(*list), cmp_migration);
    for (size_t i = 1; i < n; i++) {
        if (list[i].version == list[i - 1].version) {
            fprintf(stderr, "apiaryd migrate: %s and %s have the same number\n",
                    list[i - 1].file, list[i].file);
            goto out;
        }
    }

    conn = PQconnectdb(cfg->database_url);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "apiaryd migrate: cannot connect: %s",
                PQerrorMessage(conn));
        goto out;
    }
    if (exec_ok(conn, "SET client_min_messages = warning", "setup") < 0 ||
        exec_ok(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")",
                "taking the migration lock") < 0 ||
        exec_ok(conn,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version integer PRIMARY KEY, "
                "name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())",
                "creating schema_migrations") < 0)
        goto out;

    for (size_t i = 0; i < n; i++) {
        char vbuf[16];
        const char *params[2] = {vbuf, list[i].file};
        char path[2048], *sql;
        int done;

        snprintf(vbuf, sizeof(vbuf), "%d", list[i].version);
        r = PQexecParams(conn,
                         "SELECT 1 FROM schema_migrations WHERE version = $1",
                         1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            fprintf(stderr, "apiaryd migrate: reading schema_migrations: %s",
                    PQresultErrorMessage(r));
            goto out;
        }
        done = PQntuples(r) > 0;
        PQclear(r);
        r = NULL;
        if (done)
            continue;

        snprintf(path, sizeof(path), "%s/%s", cfg->sql_dir, list[i].file);
        sql = read_file(path);
        if (sql == NULL) {
            fprintf(stderr, "apiaryd migrate: cannot read %s: %s\n", path,
                    strerror(errno));
            goto out;
        }
        if (exec_ok(conn, "BEGIN", "BEGIN") < 0) {
            free(sql);
            goto out;
        }
        if (exec_ok(conn, sql, list[i].file) < 0) {
            free(sql);
            (void)exec_ok(conn, "ROLLBACK", "ROLLBACK");
            fprintf(stderr,
                    "apiaryd migrate: %s rolled back; nothing of it "
                    "was applied\n",
                    list[i].file);
            goto out;
        }
        free(sql);
        r = PQexecParams(conn,
                         "INSERT INTO schema_migrations (version, name) "
                         "VALUES ($1, $2)",
                         2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            fprintf(stderr, "apiaryd migrate: recording %s: %s", list[i].file,
                    PQresultErrorMessage(r));
            (void)exec_ok(conn, "ROLLBACK", "ROLLBACK");
            goto out;
        }
        PQclear(r);
        r = NULL;
        if (exec_ok(conn, "COMMIT", "COMMIT") < 0)
            goto out;
        printf("apiaryd migrate: applied %s\n", list[i].file);
        applied++;
    }
    printf("apiaryd migrate: schema up to date (%zu migration%s applied "
           "now, %zu known)\n",
           applied, applied == 1 ? "" : "s", n);
    rc = 0;
out:
    if (r)
        PQclear(r);
    if (conn)
        PQfinish(conn); /* also releases the advisory lock */
    if (d)
        closedir(d);
    free(list);
    return rc;
}
