/*
 * log.h - JSON-lines error log and buffered access log.
 *
 * One logger per process.  The error log gets one JSON object per line:
 *   {"time":"2026-11-23T18:00:00.123456Z","level":"info","pid":1234,
 *    "proc":"worker 1","msg":"..."}
 * written with a single write(2) on an O_APPEND descriptor, so lines from the
 * master and the workers never interleave.  The level test happens in the
 * macro, before any formatting (as redis's serverLog does).
 *
 * The access log is buffered per process and written out by log_flush(),
 * which the worker calls once per event-loop iteration and whenever the
 * buffer passes a threshold: a slow disk costs one write per loop turn, not
 * one per request.
 *
 * Paths: "-" means stderr (error log) or stdout (access log); "off" disables
 * the access log.  Files are opened by log_open() in the master before it
 * forks, inherited by workers, and reopened by log_reopen() (SIGUSR1).
 */
#ifndef APIARY_LOG_H
#define APIARY_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* The current threshold; messages below it are not formatted. */
extern enum log_level log_min_level;

/*
 * Opens (or reopens) the error and access logs.  Returns 0, or -1 with errno
 * set and the failing path copied into diag.  On failure the previous
 * descriptors stay in use.
 */
int log_open(const char *error_path, const char *access_path, char *diag,
             size_t diag_len);

/* Reopens the files given to the last log_open(); 0 or -1 (errno set). */
int log_reopen(void);

/* Sets the "proc" field: "master" or "worker N".  Copied. */
void log_set_proc(const char *proc);

/* Parses "debug" / "info" / "warn" / "error"; -1 if unknown. */
int log_level_parse(const char *s);
const char *log_level_name(enum log_level l);

void log_write(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_at(level, ...)                                                     \
    do {                                                                       \
        if ((level) >= log_min_level)                                          \
            log_write((level), __VA_ARGS__);                                   \
    } while (0)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)

/* True when an access log is open (callers skip formatting otherwise). */
int log_access_enabled(void);

/*
 * Appends one complete access-log line (caller formats it, newline
 * included) to the buffer; flushes first if it would not fit.
 */
void log_access(const char *line, size_t len);

/* Writes out buffered access-log lines.  Safe to call often. */
void log_flush(void);

/*
 * JSON-escapes s[0..n) into dst (cap bytes, always NUL-terminated), adding
 * no quotes.  Control bytes and bytes >= 0x80 become \u00XX, so the line
 * is valid JSON whatever the client sent.  Truncates at cap with
 * "..." so a hostile 8 KiB path stays a short log line.  Returns the length.
 */
size_t log_json_escape(char *dst, size_t cap, const char *s, size_t n);

/* The error log descriptor, for the async-signal-safe crash report. */
int log_error_fd(void);

#endif
