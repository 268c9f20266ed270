/*
 * config.h - apiaryd settings: defaults, file, APIARY_* environment, flags.
 *
 * Precedence (SPEC 7): built-in defaults < config file < environment <
 * command-line flags.  Every key is listed once, in config.c's table, with
 * its type, range and default; the file parser, the environment reader, the
 * -o flag and `apiaryd -t` all go through that table, so they cannot
 * disagree.
 *
 * Errors never abort: each function fills a diagnostic buffer that names the
 * origin ("apiary.conf:12", "APIARY_WORKERS", "-o"), the key and the problem,
 * and returns -1.  The master prints it and exits 1.
 */
#ifndef APIARY_CONFIG_H
#define APIARY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_PATH_MAX 1024
#define CONFIG_DIAG_MAX 512

struct config {
    char listen[512]; /* "8080" or "127.0.0.1:8080, [::1]:8080" */
    uint32_t backlog;
    uint32_t workers;         /* 0 before config_finish(): CPU count */
    uint32_t max_connections; /* per worker */
    char pidfile[CONFIG_PATH_MAX];
    char error_log[CONFIG_PATH_MAX];
    char access_log[CONFIG_PATH_MAX];
    uint32_t log_level; /* enum log_level */
    uint32_t header_timeout_ms;
    uint32_t body_timeout_ms;
    uint32_t keepalive_timeout_ms;
    uint32_t send_timeout_ms;
    uint32_t request_timeout_ms;
    uint32_t shutdown_timeout_ms; /* QUIT drain limit */
    uint32_t start_timeout_ms;    /* accept without a database after */
    uint32_t max_request_line;
    uint32_t max_header_bytes;
    uint32_t max_headers;
    uint64_t max_body_bytes;
    uint64_t output_buffer_limit;
    char database_url[CONFIG_PATH_MAX];
    uint32_t statement_timeout_ms;
    uint32_t db_lock_wait_ms;      /* lock_timeout, then retry; 0: off */
    uint32_t db_pipeline_depth;    /* queries in flight per worker */
    uint32_t db_queue_limit;       /* queries waiting per worker (then 503) */
    char sql_dir[CONFIG_PATH_MAX]; /* migrations, for apiaryd migrate */
    bool debug_endpoints;
    /* metrics segment and status page (issue 8) */
    char name[32];    /* instance: shm segment /apiary-<name>-metrics */
    bool metrics;     /* create the segment and record requests */
    bool status_page; /* GET /status and /status.json */
    /* shared cache (issue 7) */
    uint64_t cache_size;   /* bytes; 0: no cache */
    uint32_t cache_ttl_ms; /* 0: entries live until invalidated */
    /* edge: auth, rate limit, CORS, gzip (issue 10) */
    bool request_id;       /* X-Request-Id echoed and generated */
    bool auth;             /* writes need a bearer token */
    bool auth_reads;       /* reads need one too */
    char auth_secret[256]; /* HS256 key; never printed */
    char auth_secret_file[CONFIG_PATH_MAX]; /* or read from this file */
    uint32_t auth_leeway_s;                 /* exp/nbf clock skew allowed */
    uint32_t ratelimit_rate;                /* requests/s per client, 0: off */
    uint32_t ratelimit_burst;               /* bucket size */
    uint32_t ratelimit_slots;               /* shared table entries */
    char cors_origins[1024];                /* comma-separated; empty: none */
    bool cors_credentials;
    uint32_t cors_max_age_s;
    uint32_t gzip_level; /* 0: off, 1..9 */
    uint32_t gzip_min_bytes;
    /* daemon operations (issue 9) */
    char user[64];  /* started as root: drop to this user ("" = stay) */
    char group[64]; /* and this group ("" = the user's primary group) */
};

/* Fills c with the built-in defaults. */
void config_defaults(struct config *c);

/*
 * Sets one key from text.  origin names where the text came from, for the
 * diagnostic.  Returns 0, or -1 with diag filled ("unknown key", "expected
 * ...").
 */
int config_set(struct config *c, const char *key, const char *value,
               const char *origin, char *diag, size_t diag_len);

/*
 * Parses config-file text (key = value lines, '#' comments, blank lines).
 * name is used in diagnostics as "name:line".  text need not be
 * NUL-terminated.  Returns 0 or -1 (first error only).
 */
int config_parse(struct config *c, const char *text, size_t len,
                 const char *name, char *diag, size_t diag_len);

/* Reads and parses a file.  0 or -1 (unreadable files included). */
int config_load_file(struct config *c, const char *path, char *diag,
                     size_t diag_len);

/*
 * Applies APIARY_<KEY> variables from envp (APIARY_LOG is an alias of
 * APIARY_LOG_LEVEL).  Other APIARY_* names are ignored: the scripts and
 * tests use that prefix for their own settings (APIARY_PG_DIR, ...).
 * 0 or -1.
 */
int config_load_env(struct config *c, char *const envp[], char *diag,
                    size_t diag_len);

/* Resolves derived values (workers = CPU count when 0). */
void config_finish(struct config *c);

/* Prints every key with its effective value, config-file syntax. */
void config_print(const struct config *c, FILE *out);

/*
 * Prints an example file: every key of the table, commented out with its
 * built-in default, after its help text and its range (apiaryd -e; make
 * install ships it, so the documented list cannot go stale).
 */
void config_print_example(FILE *out);

#endif
