/*
 * config.c - the settings table and its three readers (file, environment,
 * flags).  See config.h.
 *
 * Values are checked when they are set, against the key's type and range:
 *   int     decimal integer within [min, max]
 *   size    integer with an optional k/m/g suffix (powers of 1024)
 *   bool    on/off, yes/no, true/false, 1/0
 *   string  copied, must fit the field
 *   level   debug/info/warn/error
 *   name    1..31 of [A-Za-z0-9_.-], not starting with '.' (goes into a
 *           shm segment name)
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bsd/string.h>

#include "listen.h"
#include "log.h"

enum key_type { K_INT, K_SIZE, K_BOOL, K_STRING, K_LEVEL, K_LISTEN, K_NAME };

struct key {
    const char *name;
    enum key_type type;
    size_t offset;
    size_t size; /* string field size, or integer width */
    uint64_t min, max;
    const char *help;
};

#define F(field)                                                               \
    offsetof(struct config, field), sizeof(((struct config *)0)->field)

static const struct key keys[] = {
    {"listen", K_LISTEN, F(listen), 0, 0,
     "port, or comma-separated [addr]:port list"},
    {"backlog", K_INT, F(backlog), 1, 65535, "listen(2) backlog"},
    {"workers", K_INT, F(workers), 0, 256, "worker processes, 0 = CPUs"},
    {"max_connections", K_INT, F(max_connections), 1, 1000000,
     "client connections per worker"},
    {"pidfile", K_STRING, F(pidfile), 0, 0, "pidfile path"},
    {"error_log", K_STRING, F(error_log), 0, 0, "path, - for stderr"},
    {"access_log", K_STRING, F(access_log), 0, 0, "path, - for stdout, off"},
    {"log_level", K_LEVEL, F(log_level), 0, 3, "debug|info|warn|error"},
    {"header_timeout_ms", K_INT, F(header_timeout_ms), 1, 3600000,
     "time to receive a header section"},
    {"body_timeout_ms", K_INT, F(body_timeout_ms), 1, 3600000,
     "time between body reads"},
    {"keepalive_timeout_ms", K_INT, F(keepalive_timeout_ms), 1, 3600000,
     "idle keep-alive connection lifetime"},
    {"send_timeout_ms", K_INT, F(send_timeout_ms), 1, 3600000,
     "time a client may leave output unread"},
    {"request_timeout_ms", K_INT, F(request_timeout_ms), 1, 3600000,
     "time to answer a request (504)"},
    {"shutdown_timeout_ms", K_INT, F(shutdown_timeout_ms), 1, 3600000,
     "graceful shutdown (QUIT) drain limit"},
    {"start_timeout_ms", K_INT, F(start_timeout_ms), 1, 3600000,
     "a new worker accepts after this even without its database"},
    {"max_request_line", K_SIZE, F(max_request_line), 64, 1048576,
     "request line limit (414)"},
    {"max_header_bytes", K_SIZE, F(max_header_bytes), 64, 1048576,
     "header section limit (431)"},
    {"max_headers", K_INT, F(max_headers), 1, 10000,
     "header field count limit (431)"},
    {"max_body_bytes", K_SIZE, F(max_body_bytes), 0, 1073741824,
     "request body limit (413)"},
    {"output_buffer_limit", K_SIZE, F(output_buffer_limit), 4096, 1073741824,
     "unsent output per connection before it is closed"},
    {"database_url", K_STRING, F(database_url), 0, 0, "libpq URL"},
    {"statement_timeout_ms", K_INT, F(statement_timeout_ms), 1, 3600000,
     "PostgreSQL statement_timeout of each worker connection"},
    {"db_lock_wait_ms", K_INT, F(db_lock_wait_ms), 0, 3600000,
     "lock_timeout of each worker connection; a statement that waited "
     "that long is retried later (0: off)"},
    {"db_pipeline_depth", K_INT, F(db_pipeline_depth), 1, 65536,
     "queries in flight on a worker's connection"},
    {"db_queue_limit", K_INT, F(db_queue_limit), 0, 1000000,
     "queries waiting for pipeline room per worker (then 503)"},
    {"sql_dir", K_STRING, F(sql_dir), 0, 0,
     "directory of NNNN_*.sql migrations"},
    {"debug_endpoints", K_BOOL, F(debug_endpoints), 0, 1,
     "serve GET /debug/worker"},
    /* metrics segment and status page (issue 8) */
    {"name", K_NAME, F(name), 0, 0,
     "instance name: metrics segment /dev/shm/apiary-<name>-metrics"},
    {"metrics", K_BOOL, F(metrics), 0, 1,
     "create the metrics segment and record every request"},
    {"status_page", K_BOOL, F(status_page), 0, 1,
     "serve the live status page GET /status and its GET /status.json"},
    /* shared cache (issue 7, shm/cache.h) */
    {"cache_size", K_SIZE, F(cache_size), 0, 68719476736ULL,
     "shared response cache size, at least 64k (0: no cache)"},
    {"cache_ttl_ms", K_INT, F(cache_ttl_ms), 0, 86400000,
     "cached bodies expire after this (0: only writes invalidate)"},
    /* edge: auth, rate limit, CORS, gzip (issue 10) */
    {"request_id", K_BOOL, F(request_id), 0, 1,
     "X-Request-Id in answers and the access log"},
    {"auth", K_BOOL, F(auth), 0, 1, "POST/PATCH/DELETE need a bearer JWT"},
    {"auth_reads", K_BOOL, F(auth_reads), 0, 1,
     "GET/HEAD need one too (not the probes, openapi.json)"},
    {"auth_secret", K_STRING, F(auth_secret), 0, 0,
     "HS256 key (32+ bytes); never printed"},
    {"auth_secret_file", K_STRING, F(auth_secret_file), 0, 0,
     "file holding the HS256 key"},
    {"auth_leeway_s", K_INT, F(auth_leeway_s), 0, 3600,
     "clock skew allowed on exp/nbf"},
    {"ratelimit_rate", K_INT, F(ratelimit_rate), 0, 1000000,
     "requests/s per client address (IPv6: /64), 0 = off"},
    {"ratelimit_burst", K_INT, F(ratelimit_burst), 1, 1000000,
     "requests a client may send at once"},
    {"ratelimit_slots", K_INT, F(ratelimit_slots), 64, 16777216,
     "clients tracked (rounded up to a power of 2)"},
    {"cors_origins", K_STRING, F(cors_origins), 0, 0,
     "allowed Origins, comma-separated; empty = CORS off"},
    {"cors_credentials", K_BOOL, F(cors_credentials), 0, 1,
     "Access-Control-Allow-Credentials"},
    {"cors_max_age_s", K_INT, F(cors_max_age_s), 0, 86400,
     "Access-Control-Max-Age of preflights"},
    {"gzip_level", K_INT, F(gzip_level), 0, 9, "0 = no compression"},
    {"gzip_min_bytes", K_SIZE, F(gzip_min_bytes), 0, 1048576,
     "smallest body compressed"},
    /* daemon operations (issue 9) */
    {"user", K_STRING, F(user), 0, 0,
     "started as root, the master drops to this user after binding "
     "(empty: stay)"},
    {"group", K_STRING, F(group), 0, 0,
     "group to drop to (empty: the user's primary group)"},
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

void
config_defaults(struct config *c)
{
    memset(c, 0, sizeof(*c));
    strlcpy(c->listen, "8080", sizeof(c->listen));
    c->backlog = 511;
    c->workers = 0;
    c->max_connections = 4096;
    strlcpy(c->pidfile, "var/apiaryd.pid", sizeof(c->pidfile));
    strlcpy(c->error_log, "-", sizeof(c->error_log));
    strlcpy(c->access_log, "-", sizeof(c->access_log));
    c->log_level = LOG_INFO;
    c->header_timeout_ms = 10000;
    c->body_timeout_ms = 30000;
    c->keepalive_timeout_ms = 75000;
    c->send_timeout_ms = 30000;
    c->request_timeout_ms = 30000;
    c->shutdown_timeout_ms = 30000;
    c->start_timeout_ms = 5000;
    c->max_request_line = 8192;
    c->max_header_bytes = 16384;
    c->max_headers = 100;
    c->max_body_bytes = 1048576;
    c->output_buffer_limit = 1048576;
    c->debug_endpoints = false;
    c->statement_timeout_ms = 10000;
    c->db_lock_wait_ms = 20;
    c->db_pipeline_depth = 256;
    c->db_queue_limit = 4096;
    strlcpy(c->sql_dir, "sql", sizeof(c->sql_dir));
    strlcpy(c->name, "apiary", sizeof(c->name));
    c->metrics = true;
    c->status_page = false;
    c->cache_size = 64ull << 20;
    c->cache_ttl_ms = 0;
    /* edge (issue 10) */
    c->request_id = true;
    c->auth = true;
    c->auth_leeway_s = 30;
    c->ratelimit_rate = 0;
    c->ratelimit_burst = 100;
    c->ratelimit_slots = 65536;
    c->cors_max_age_s = 600;
    c->gzip_level = 6;
    c->gzip_min_bytes = 1024;
}

static const struct key *
find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static int
parse_uint(const char *v, bool suffix, uint64_t *out)
{
    uint64_t x = 0, mul = 1;
    const char *p = v;

    if (!isdigit((unsigned char)*p))
        return -1;
    while (isdigit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
        p++;
    }
    if (suffix && *p != '\0' && p[1] == '\0') {
        switch (*p | 0x20) {
        case 'k':
            mul = 1024;
            break;
        case 'm':
            mul = 1024ULL * 1024;
            break;
        case 'g':
            mul = 1024ULL * 1024 * 1024;
            break;
        default:
            return -1;
        }
        p++;
        if (x > UINT64_MAX / mul)
            return -1;
        x *= mul;
    }
    if (*p != '\0')
        return -1;
    *out = x;
    return 0;
}

int
config_set(struct config *c, const char *name, const char *value,
           const char *origin, char *diag, size_t diag_len)
{
    const struct key *k = find_key(name);
    char *field;
    uint64_t x;
    int lv;

    if (k == NULL) {
        snprintf(diag, diag_len, "%s: unknown key \"%s\"", origin, name);
        return -1;
    }
    field = (char *)c + k->offset;
    switch (k->type) {
    case K_NAME:
        if (value[0] == '\0' || value[0] == '.' ||
            strspn(value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                          "0123456789_.-") != strlen(value)) {
            snprintf(diag, diag_len,
                     "%s: %s: expected letters, digits, '_', '.' or '-' "
                     "(not starting with '.'), got \"%s\"",
                     origin, name, value);
            return -1;
        }
        /* fall through */
    case K_LISTEN:
    case K_STRING:
        if (k->type == K_LISTEN) {
            /* checked now (file:line in the message, -t catches it);
             * stored as text and parsed again when binding */
            struct listen_addr addrs[LISTEN_MAX];
            char why[CONFIG_DIAG_MAX];
            if (listen_parse(value, addrs, LISTEN_MAX, why, sizeof(why)) < 0) {
                snprintf(diag, diag_len, "%s: %s", origin, why);
                return -1;
            }
        }
        if (strlen(value) >= k->size) {
            snprintf(diag, diag_len, "%s: %s: value longer than %zu bytes",
                     origin, name, k->size - 1);
            return -1;
        }
        memcpy(field, value, strlen(value) + 1);
        return 0;
    case K_BOOL:
        if (!strcmp(value, "on") || !strcmp(value, "yes") ||
            !strcmp(value, "true") || !strcmp(value, "1")) {
            *(bool *)field = true;
        } else if (!strcmp(value, "off") || !strcmp(value, "no") ||
                   !strcmp(value, "false") || !strcmp(value, "0")) {
            *(bool *)field = false;
        } else {
            snprintf(diag, diag_len, "%s: %s: expected on or off, got \"%s\"",
                     origin, name, value);
            return -1;
        }
        return 0;
    case K_LEVEL:
        lv = log_level_parse(value);
        if (lv < 0) {
            snprintf(diag, diag_len,
                     "%s: %s: expected debug, info, warn or error, got "
                     "\"%s\"",
                     origin, name, value);
            return -1;
        }
        *(uint32_t *)field = (uint32_t)lv;
        return 0;
    case K_INT:
    case K_SIZE:
        if (parse_uint(value, k->type == K_SIZE, &x) < 0 || x < k->min ||
            x > k->max) {
            snprintf(diag, diag_len,
                     "%s: %s: expected an integer%s from %llu to %llu, got "
                     "\"%s\"",
                     origin, name, k->type == K_SIZE ? " (k/m/g allowed)" : "",
                     (unsigned long long)k->min, (unsigned long long)k->max,
                     value);
            return -1;
        }
        if (k->size == sizeof(uint32_t))
            *(uint32_t *)field = (uint32_t)x;
        else
            *(uint64_t *)field = x;
        return 0;
    }
    return -1;
}

static int
is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r';
}

int
config_parse(struct config *c, const char *text, size_t len, const char *name,
             char *diag, size_t diag_len)
{
    size_t pos = 0;
    unsigned lineno = 0;

    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        size_t a = 0, b, eq;
        char key[64], value[CONFIG_PATH_MAX], origin[CONFIG_PATH_MAX + 32];

        pos += n + (nl ? 1 : 0);
        lineno++;
        snprintf(origin, sizeof(origin), "%s:%u", name, lineno);

        /* a '#' starts a comment anywhere: values never contain one */
        const char *hash = memchr(line, '#', n);
        if (hash)
            n = (size_t)(hash - line);
        while (a < n && is_space(line[a]))
            a++;
        b = n;
        while (b > a && is_space(line[b - 1]))
            b--;
        if (a == b)
            continue;
        if (memchr(line + a, '\0', b - a)) {
            snprintf(diag, diag_len, "%s: NUL byte in line", origin);
            return -1;
        }
        const char *eqp = memchr(line + a, '=', b - a);
        if (eqp == NULL) {
            snprintf(diag, diag_len, "%s: expected \"key = value\"", origin);
            return -1;
        }
        eq = (size_t)(eqp - line);
        size_t ke = eq;
        while (ke > a && is_space(line[ke - 1]))
            ke--;
        size_t vs = eq + 1;
        while (vs < b && is_space(line[vs]))
            vs++;
        if (ke == a) {
            snprintf(diag, diag_len, "%s: missing key before \"=\"", origin);
            return -1;
        }
        if (ke - a >= sizeof(key)) {
            snprintf(diag, diag_len, "%s: key too long", origin);
            return -1;
        }
        if (b - vs >= sizeof(value)) {
            snprintf(diag, diag_len, "%s: value too long", origin);
            return -1;
        }
        memcpy(key, line + a, ke - a);
        key[ke - a] = '\0';
        memcpy(value, line + vs, b - vs);
        value[b - vs] = '\0';
        /* optional double quotes around the value */
        size_t vl = b - vs;
        if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
            memmove(value, value + 1, vl - 2);
            value[vl - 2] = '\0';
        }
        if (config_set(c, key, value, origin, diag, diag_len) < 0)
            return -1;
    }
    return 0;
}

int
config_load_file(struct config *c, const char *path, char *diag,
                 size_t diag_len)
{
    char *text = NULL;
    size_t len = 0, cap = 0;
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(diag, diag_len, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    for (;;) {
        ssize_t r;
        if (len == cap) {
            char *t;
            cap = cap ? cap * 2 : 4096;
            if (cap > (size_t)16 * 1024 * 1024) {
                snprintf(diag, diag_len, "%s: file too large", path);
                goto fail;
            }
            t = realloc(text, cap);
            if (t == NULL) {
                snprintf(diag, diag_len, "%s: out of memory", path);
                goto fail;
            }
            text = t;
        }
        r = read(fd, text + len, cap - len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            snprintf(diag, diag_len, "%s: read() failed: %s", path,
                     strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    (void)close(fd);
    rc = config_parse(c, text, len, path, diag, diag_len);
    free(text);
    return rc;
fail:
    (void)close(fd);
    free(text);
    return -1;
}

int
config_load_env(struct config *c, char *const envp[], char *diag,
                size_t diag_len)
{
    for (size_t i = 0; envp && envp[i]; i++) {
        const char *e = envp[i], *eq;
        char key[64];
        size_t n;

        if (strncmp(e, "APIARY_", 7) != 0)
            continue;
        eq = strchr(e, '=');
        if (eq == NULL)
            continue;
        n = (size_t)(eq - e) - 7;
        if (n == 0 || n >= sizeof(key))
            continue;
        for (size_t k = 0; k < n; k++)
            key[k] = (char)tolower((unsigned char)e[7 + k]);
        key[n] = '\0';
        if (strcmp(key, "log") == 0)
            strlcpy(key, "log_level", sizeof(key));
        if (find_key(key) == NULL)
            continue;
        char origin[80];
        snprintf(origin, sizeof(origin), "%.*s", (int)(eq - e), e);
        if (config_set(c, key, eq + 1, origin, diag, diag_len) < 0)
            return -1;
    }
    return 0;
}

void
config_finish(struct config *c)
{
    if (c->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = n > 0 && n <= 256 ? (uint32_t)n : 1;
    }
}

/* Prints a libpq URL with the password of "scheme://user:pass@" hidden. */
static void
print_url(FILE *out, const char *url)
{
    const char *auth = strstr(url, "://"), *at, *colon;

    if (auth == NULL || (at = strchr(auth + 3, '@')) == NULL ||
        (colon = memchr(auth + 3, ':', (size_t)(at - auth - 3))) == NULL) {
        fprintf(out, "%s", url);
        return;
    }
    fprintf(out, "%.*s:***%s", (int)(colon - url), url, at);
}

/*
 * A key's value as the file would take it; the secrets (a password in the
 * database URL, auth_secret) are masked.
 */
static void
print_value(FILE *out, const struct key *k, const char *field)
{
    switch (k->type) {
    case K_NAME:
    case K_LISTEN:
    case K_STRING:
        if (strcmp(k->name, "database_url") == 0)
            print_url(out, field);
        else if (strcmp(k->name, "auth_secret") == 0)
            fprintf(out, "%s", field[0] ? "***" : "");
        else
            fprintf(out, "%s", field);
        break;
    case K_BOOL:
        fprintf(out, "%s", *(const bool *)field ? "on" : "off");
        break;
    case K_LEVEL:
        fprintf(out, "%s",
                log_level_name((enum log_level) * (const uint32_t *)field));
        break;
    case K_INT:
    case K_SIZE:
        if (k->size == sizeof(uint32_t))
            fprintf(out, "%u", *(const uint32_t *)field);
        else
            fprintf(out, "%llu", (unsigned long long)*(const uint64_t *)field);
        break;
    }
}

void
config_print(const struct config *c, FILE *out)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];

        fprintf(out, "%-22s = ", k->name);
        print_value(out, k, (const char *)c + k->offset);
        fprintf(out, "\t# %s\n", k->help);
    }
}

void
config_print_example(FILE *out)
{
    struct config d;

    config_defaults(&d);
    fprintf(out, "# apiaryd configuration: every key, with its built-in "
                 "default.\n"
                 "# Syntax: key = value; '#' starts a comment.  APIARY_<KEY> "
                 "environment\n"
                 "# variables override this file, and -o KEY=VALUE flags "
                 "override both.\n"
                 "# Sizes take k, m or g.  See apiaryd(8).\n");
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        const char *field = (const char *)&d + k->offset;

        fprintf(out, "\n# %s", k->help);
        if (k->type == K_INT || k->type == K_SIZE)
            fprintf(out, " [%llu..%llu]", (unsigned long long)k->min,
                    (unsigned long long)k->max);
        fprintf(out, "\n#%s = ", k->name);
        print_value(out, k, field);
        fprintf(out, "\n");
    }
}
