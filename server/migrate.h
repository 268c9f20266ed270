/*
 * migrate.h - "apiaryd migrate": apply pending sql/NNNN_*.sql migrations.
 *
 * Runs in the command-line process (never in the master or a worker) with a
 * plain blocking libpq connection.  Holds a PostgreSQL advisory lock for the
 * whole run, so two hosts starting together apply each migration once.
 * Each migration runs in its own transaction together with its row in
 * schema_migrations: it is applied entirely or not at all.
 */
#ifndef APIARY_MIGRATE_H
#define APIARY_MIGRATE_H

#include "config.h"

/* Returns the exit status: 0 (up to date), 1 (error, printed). */
int migrate_run(const struct config *cfg);

#endif
