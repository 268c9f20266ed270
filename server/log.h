/*
 * log.h - JSON-lines error log and access log that never block the caller.
 *
 * One logger per process.  The error log gets one JSON object per line:
 *   {"time":"2026-11-23T18:00:00.123456Z","level":"info","pid":1234,
 *    "proc":"worker 1","msg":"..."}
 * The level test happens in the macro, before any formatting (as redis's
 * serverLog does).  The access log takes lines its caller formatted.
 *
 * SPEC 7: logging never blocks the event loop.  Each log has a fixed
 * per-process buffer (error 16 KiB, access 64 KiB, static: no malloc per
 * line).  An error line is written at once when nothing is queued before it
 * and the descriptor takes it (it must not sit in a buffer when a crash
 * follows); otherwise it is queued.  Access lines are queued and written by
 * log_flush(), which the worker calls before every epoll sleep.  A line that
 * finds its buffer full is dropped and counted (log_dropped_lines()), never
 * waited for; so is every queued line when the descriptor fails for good
 * (EPIPE: the reader is gone).  How each kind of descriptor is written
 * without blocking, and what fork and reopen do, is in log.c's opening
 * comment.
 *
 * Paths: "-" means stderr (error log) or stdout (access log); "off" disables
 * a log.  Files are opened by log_open() in the master before it forks,
 * inherited by workers, and reopened by log_reopen() (SIGUSR1).
 */
#ifndef APIARY_LOG_H
#define APIARY_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct loop;

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* The current threshold; messages below it are not formatted. */
extern enum log_level log_min_level;

/*
 * Opens (or reopens) the error and access logs.  Returns 0, or -1 with errno
 * set and the failing path copied into diag.  On failure the previous
 * descriptors stay in use.  Lines still queued for the old descriptors go to
 * the new ones (after a rotation they land in the new file); a log switched
 * to "off" drops (and counts) its queued lines.  Any process.
 */
int log_open(const char *error_path, const char *access_path, char *diag,
             size_t diag_len);

/* Reopens the files given to the last log_open(); 0 or -1 (errno set). */
int log_reopen(void);

/*
 * Sets the "proc" field: "master" or "worker N".  Copied (and JSON-escaped
 * once, here, for the crash report).  Call it first thing in each process
 * (after fork, after daemon()): it also re-examines the log descriptors,
 * which daemon() may have pointed at /dev/null.
 */
void log_set_proc(const char *proc);

/* Parses "debug" / "info" / "warn" / "error"; -1 if unknown. */
int log_level_parse(const char *s);
const char *log_level_name(enum log_level l);

/*
 * Formats and writes (or queues) one error-log line.  Never blocks; a
 * message longer than 2 KiB is cut.  Not async-signal-safe.
 */
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
 * Queues one complete access-log line (caller formats it, newline
 * included).  When the buffer is full it first tries one non-blocking write
 * of what is queued; if the line still does not fit it is dropped and
 * counted.  Never blocks.
 */
void log_access(const char *line, size_t len);

/*
 * Writes as much of both buffers as the descriptors take without blocking.
 * Safe to call often: with a loop attached, a log waiting for EPOLLOUT is
 * not even tried (the loop's callback writes it).  Also writes, at most once
 * a second, a warn line counting the lines dropped since the last one.
 */
void log_flush(void);

/* True while lines wait in either buffer (the master may poll sooner). */
int log_pending(void);

/*
 * Lines this process dropped since it started (or forked): access and
 * error log together, whether the buffer was full or the descriptor failed.
 * A counter for the metrics segment; never reset.
 */
uint64_t log_dropped_lines(void);

/*
 * Lets the worker's loop wake the logger: when log_flush() leaves bytes
 * queued for a pipe, tty or socket that is full, that descriptor is
 * registered for EPOLLOUT and the loop's callback writes the rest, then
 * unregisters it.  Returns 0 (-1 only if loop is NULL, errno EINVAL).
 * The loop must outlive the attachment: call log_detach_loop() before
 * loop_free().  Worker only; the master has no loop and calls log_flush().
 */
int log_attach_loop(struct loop *loop);

/* Unregisters any EPOLLOUT interest and forgets the loop. */
void log_detach_loop(void);

/*
 * The crash report, for a fatal-signal handler: async-signal-safe (no
 * malloc, stdio or snprintf; the time is formatted by hand).  Writes queued
 * error lines first, then one JSON line naming the signal, one line per
 * frame of backtrace() ({"msg":"backtrace","frame":N,"symbol":"..."} plus
 * the usual time/level/pid/proc) and an "end of backtrace" line carrying
 * "frames":N.  A full pipe is waited for at most 250 ms in all: the process
 * is dying, but a never-read pipe must not keep it from dying.  Does not
 * re-raise; the handler does that.  Call log_set_proc() at start-up so the
 * "proc" field is ready.
 */
void log_crash_backtrace(int signo);

/*
 * JSON-escapes s[0..n) into dst (cap bytes, always NUL-terminated), adding
 * no quotes.  Control bytes and bytes >= 0x80 become \u00XX, so the line
 * is valid JSON whatever the client sent.  Truncates at cap with
 * "..." so a hostile 8 KiB path stays a short log line.  Returns the length.
 * Async-signal-safe.
 */
size_t log_json_escape(char *dst, size_t cap, const char *s, size_t n);

/* The error log descriptor as opened (-1 when off). */
int log_error_fd(void);

#endif
