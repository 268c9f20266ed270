/*
 * log.c - see log.h.  Logging that never blocks its caller (SPEC 7).
 *
 * Buffers.  Each log (error, access) is a struct log_stream with a static
 * buffer: 16 KiB for the error log (its lines are rare, at most 4 KiB each),
 * 64 KiB for the access log (about 300 lines, a few loop turns of a busy
 * worker).  Queued bytes are buf[head..len); writing advances head, and an
 * append that does not fit at the end first moves the queue to the front.
 * A line that still does not fit is dropped and counted, never waited for.
 * A message longer than the stack buffer is cut, never allocated for.
 *
 * Writing without blocking.  The descriptors are inherited by the master and
 * every worker and may be the user's terminal, so setting O_NONBLOCK on them
 * (a flag of the shared open file description) would change them for the
 * shell too.  log_open() looks at each descriptor once (fstat) instead:
 *   - regular file (or block device): plain write(2).  The kernel never
 *     returns EAGAIN for them; a stalled disk still stalls the writer, as it
 *     does nginx's;
 *   - socket (systemd's journal stdout is a unix stream socket):
 *     send(MSG_DONTWAIT | MSG_NOSIGNAL), a per-call non-blocking flag;
 *   - pipe, FIFO, tty, other character device: open("/proc/self/fd/N",
 *     O_WRONLY | O_NONBLOCK | O_APPEND | O_NOCTTY) makes a new open file
 *     description of the same pipe or terminal, ours alone, and we write to
 *     that "alias";
 *   - if that open fails (no /proc, or EACCES: a pipe created by root seen
 *     after dropping privileges): poll() for POLLOUT with a zero timeout,
 *     then write at most PIPE_BUF bytes.  A pipe that polls writable has a
 *     free page, so this does not block unless another process fills the
 *     pipe between the poll and the write; a terminal may take less than
 *     PIPE_BUF and then waits.  Weaknesses we accept for a fallback that
 *     normal start-up never takes (the master, which may still be root,
 *     makes the aliases before forking and the workers inherit them).
 *
 * Whole lines.  The master and the workers share one pipe or socket, so a
 * pipe or socket is written in chunks of whole lines of at most PIPE_BUF
 * bytes: a pipe writes such a chunk atomically (all of it, or EAGAIN), and a
 * unix stream socket in practice queues it whole, as one buffer, so lines of
 * different processes do not interleave.  Our lines stay under PIPE_BUF (error
 * lines are cut to 4 KiB, access lines to 2 KiB); a longer one would be written
 * in pieces.  A regular file gets the whole queue in one O_APPEND write, which
 * is atomic there.  The price is one write per 4 KiB on pipes and sockets.
 *
 * Waking up.  With a loop attached (the worker), a log whose descriptor
 * answered EAGAIN is registered for EPOLLOUT; log_flush() then skips it (no
 * write per loop turn just to hear EAGAIN again) and the callback writes
 * when the kernel says there is room, unregistering once the queue is empty.
 * A descriptor that fails for good (EPIPE, ENOSPC, EBADF) has its queue
 * dropped and counted, so nothing spins on EPOLLERR.  The master has no
 * loop: each log_write() first tries what is queued, and log_flush() does.
 *
 * fork.  pthread_atfork() handlers: before fork, one non-blocking flush; in
 * the child the buffers are emptied (those lines are the parent's, which
 * still writes them), the counters zeroed and the loop forgotten, and each
 * descriptor is checked again (one fstat) by log_set_proc() or its next
 * write: kept, alias included, when it is still the same file; examined
 * afresh when daemon() has pointed it at /dev/null (and the alias of the old
 * stdout closed, so a pipe reader still sees EOF).
 *
 * Reopen (USR1, log_open() again).  A path is opened anew; "-" keeps the
 * standard descriptor and its alias.  Queued lines go to the new descriptor:
 * after a rotation they land at the top of the new file.
 *
 * Exit.  An atexit() handler waits up to LOG_EXIT_WAIT_MS for a full pipe,
 * then drops (and counts) what is left: lines are not lost at an orderly
 * exit, and a pipe nobody reads cannot hold a shutdown up.
 *
 * The crash report (log_crash_backtrace) runs in a signal handler and uses
 * only async-signal-safe calls: write, send, poll, open, fstat, read,
 * clock_gettime, memfd_create, backtrace (libgcc loaded beforehand by the
 * worker) and backtrace_symbols_fd, with the time and numbers formatted by
 * hand.
 */
#include "log.h"

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bsd/string.h>

#include "loop.h"

enum log_level log_min_level = LOG_INFO;

#define LOG_LINE_MAX 2048
#define ERROR_BUF_BYTES (16 * 1024)
#define ACCESS_BUF_BYTES (64 * 1024)
#define LOG_PATH_MAX 4096
#define LOG_EXIT_WAIT_MS 200
#define LOG_CRASH_WAIT_MS 250
#define LOG_CRASH_FRAMES 64
#define LOG_REPORT_EVERY_MS 1000
#define PROC_ESC_BYTES 96

enum out_kind {
    OUT_UNKNOWN = 0, /* not examined yet */
    OUT_FILE,        /* plain write() */
    OUT_SOCKET,      /* send(MSG_DONTWAIT) */
    OUT_ALIAS,       /* write() to our O_NONBLOCK reopening of fd */
    OUT_POLL,        /* poll(0), then write() at most PIPE_BUF */
};

enum { PUSH_DONE = 0, PUSH_BLOCKED };

struct log_stream {
    int fd;  /* as opened or inherited; -1 when off */
    int wfd; /* what is written to: fd, or the alias */
    enum out_kind kind;
    bool recheck;  /* after fork: fstat fd before trusting kind */
    bool watching; /* registered with the loop for EPOLLOUT */
    dev_t dev;     /* identity of fd when it was examined */
    ino_t ino;
    char *buf;
    size_t cap, head, len; /* queued: buf[head..len); empty: both 0 */
    uint64_t dropped;      /* lines */
    struct loop_watch watch;
};

static char error_buf[ERROR_BUF_BYTES];
static char access_buf[ACCESS_BUF_BYTES];
static struct log_stream err_log = {
    .fd = 2, .wfd = 2, .buf = error_buf, .cap = sizeof(error_buf)};
static struct log_stream acc_log = {
    .fd = -1, .wfd = -1, .buf = access_buf, .cap = sizeof(access_buf)};

static char error_path[LOG_PATH_MAX] = "-";
static char access_path[LOG_PATH_MAX] = "off";
static char proc_esc[PROC_ESC_BYTES] = "master";
static struct loop *attached;
static bool hooks_done;
static uint64_t dropped_reported;
static int64_t last_report_ms = -LOG_REPORT_EVERY_MS;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int
log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

const char *
log_level_name(enum log_level l)
{
    return (unsigned)l < 4 ? level_names[l] : "?";
}

/* ---- formatting by hand (async-signal-safe) ---- */

static int64_t
mono_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes v in decimal, zero-padded to width digits; returns the length. */
static size_t
put_dec(char *dst, uint64_t v, int width)
{
    char tmp[20];
    size_t k = 0;

    do {
        tmp[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 && k < sizeof(tmp));
    while ((int)k < width && k < sizeof(tmp))
        tmp[k++] = '0';
    for (size_t i = 0; i < k; i++)
        dst[i] = tmp[k - 1 - i];
    return k;
}

/*
 * "2026-11-23T18:00:00.123456Z" (27 bytes, NUL added) from a CLOCK_REALTIME
 * value.  gmtime_r takes glibc's timezone lock, so the civil date is
 * computed here: days are counted in 400-year eras that start on 1 March,
 * which puts the leap day at the end of each year.
 */
static size_t
fmt_time(char *dst, const struct timespec *ts)
{
    int64_t days = ts->tv_sec / 86400, secs = ts->tv_sec % 86400;
    int64_t z, era, doe, yoe, doy, mp, day, month, year;
    size_t o = 0;

    if (secs < 0) {
        secs += 86400;
        days--;
    }
    z = days + 719468; /* days from 0000-03-01 to 1970-01-01 */
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;                                      /* 0..146096 */
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* 0..399 */
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* 0..365 */
    mp = (5 * doy + 2) / 153;                                    /* Mar = 0 */
    day = doy - (153 * mp + 2) / 5 + 1;
    month = mp < 10 ? mp + 3 : mp - 9;
    year = yoe + era * 400 + (month <= 2);
    if (year < 0 || year > 9999)
        year = 0;
    o += put_dec(dst + o, (uint64_t)year, 4);
    dst[o++] = '-';
    o += put_dec(dst + o, (uint64_t)month, 2);
    dst[o++] = '-';
    o += put_dec(dst + o, (uint64_t)day, 2);
    dst[o++] = 'T';
    o += put_dec(dst + o, (uint64_t)(secs / 3600), 2);
    dst[o++] = ':';
    o += put_dec(dst + o, (uint64_t)(secs / 60 % 60), 2);
    dst[o++] = ':';
    o += put_dec(dst + o, (uint64_t)(secs % 60), 2);
    dst[o++] = '.';
    o += put_dec(dst + o, (uint64_t)(ts->tv_nsec / 1000), 6);
    dst[o++] = 'Z';
    dst[o] = '\0';
    return o;
}

size_t
log_json_escape(char *dst, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (cap == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[6];
        size_t k = 0;

        if (c == '"' || c == '\\') {
            tmp[k++] = '\\';
            tmp[k++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            tmp[k++] = '\\';
            tmp[k++] = 'u';
            tmp[k++] = '0';
            tmp[k++] = '0';
            tmp[k++] = hex[c >> 4];
            tmp[k++] = hex[c & 15];
        } else {
            tmp[k++] = (char)c;
        }
        if (o + k + 4 > cap) {
            size_t d = 0;
            while (o + 1 < cap && d < 3) {
                dst[o++] = '.';
                d++;
            }
            break;
        }
        memcpy(dst + o, tmp, k);
        o += k;
    }
    dst[o] = '\0';
    return o;
}

/* ---- one log's descriptor (async-signal-safe) ---- */

static void
drop_alias(struct log_stream *s)
{
    if (s->wfd >= 0 && s->wfd != s->fd)
        (void)close(s->wfd);
    s->wfd = s->fd;
}

/* Decides how s->fd is written; see the opening comment. */
static void
classify(struct log_stream *s)
{
    static const char prefix[] = "/proc/self/fd/";
    char path[sizeof(prefix) + 20];
    struct stat st;
    size_t o;
    int fd;

    drop_alias(s);
    s->kind = OUT_FILE;
    s->recheck = false;
    if (s->fd < 0 || fstat(s->fd, &st) < 0)
        return; /* writes fail and their lines are counted */
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))
        return;
    if (S_ISSOCK(st.st_mode)) {
        s->kind = OUT_SOCKET;
        return;
    }
    memcpy(path, prefix, sizeof(prefix) - 1);
    o = sizeof(prefix) - 1;
    o += put_dec(path + o, (uint64_t)s->fd, 1);
    path[o] = '\0';
    fd = open(path, O_WRONLY | O_NONBLOCK | O_APPEND | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        s->kind = OUT_POLL;
        return;
    }
    s->wfd = fd;
    s->kind = OUT_ALIAS;
}

/* Makes sure s->kind describes s->fd (after log_open() or fork). */
static void
stream_ready(struct log_stream *s)
{
    struct stat st;

    if (s->kind != OUT_UNKNOWN && !s->recheck)
        return;
    if (s->kind != OUT_UNKNOWN && s->fd >= 0 && fstat(s->fd, &st) == 0 &&
        st.st_dev == s->dev && st.st_ino == s->ino) {
        s->recheck = false;
        return;
    }
    classify(s);
}

/* One write without blocking: bytes written, or -1 with errno set. */
static ssize_t
write_some(const struct log_stream *s, const char *p, size_t n)
{
    for (;;) {
        ssize_t w;

        if (s->kind == OUT_SOCKET) {
            w = send(s->wfd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else if (s->kind == OUT_POLL) {
            struct pollfd pfd = {.fd = s->wfd, .events = POLLOUT};
            int r = poll(&pfd, 1, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r == 0) {
                errno = EAGAIN;
                return -1;
            }
            /* POLLERR / POLLHUP: the write reports the error */
            w = write(s->wfd, p, n < PIPE_BUF ? n : PIPE_BUF);
        } else {
            w = write(s->wfd, p, n);
        }
        if (w >= 0 || errno != EINTR)
            return w;
    }
}

/*
 * How much of p[0..n) to hand to one write: everything for a file; for a
 * pipe or socket the longest run of whole lines within PIPE_BUF (atomic),
 * or one line if it alone is longer.
 */
static size_t
chunk_len(const struct log_stream *s, const char *p, size_t n)
{
    const char *nl;

    if (s->kind == OUT_FILE || n <= PIPE_BUF)
        return n;
    nl = memrchr(p, '\n', PIPE_BUF);
    if (nl != NULL)
        return (size_t)(nl - p) + 1;
    nl = memchr(p + PIPE_BUF, '\n', n - PIPE_BUF);
    return nl != NULL ? (size_t)(nl - p) + 1 : n;
}

static bool
stream_sane(const struct log_stream *s)
{
    return s->head <= s->len && s->len <= s->cap;
}

static uint64_t
count_lines(const char *p, size_t n)
{
    uint64_t lines = 0;
    const char *end = p + n, *nl;

    while (p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        lines++;
        p = nl + 1;
    }
    return lines + (p < end);
}

/* Drops every queued line, counting it. */
static void
discard(struct log_stream *s)
{
    s->dropped += count_lines(s->buf + s->head, s->len - s->head);
    s->head = s->len = 0;
}

/*
 * Writes queued bytes until the queue is empty (PUSH_DONE) or the
 * descriptor is full (PUSH_BLOCKED).  A hard error drops the queue.
 */
static int
stream_push(struct log_stream *s)
{
    while (s->head < s->len) {
        const char *p = s->buf + s->head;
        ssize_t w = write_some(s, p, chunk_len(s, p, s->len - s->head));

        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            discard(s);
            return PUSH_DONE;
        }
        if (w <= 0)
            return PUSH_BLOCKED;
        s->head += (size_t)w;
    }
    s->head = s->len = 0;
    return PUSH_DONE;
}

/* Queues one line (or the unwritten rest of one); drops it if no room. */
static void
stream_append(struct log_stream *s, const char *p, size_t n)
{
    if (s->len + n > s->cap && s->head > 0) {
        memmove(s->buf, s->buf + s->head, s->len - s->head);
        s->len -= s->head;
        s->head = 0;
    }
    if (n > s->cap - s->len) {
        s->dropped++;
        return;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

/*
 * Pushes s for up to deadline_ms (CLOCK_MONOTONIC), sleeping in poll() while
 * the descriptor is full; drops what is left then.  For exit and crash.
 */
static void
stream_drain(struct log_stream *s, int64_t deadline_ms)
{
    if (s->fd < 0 || !stream_sane(s))
        return;
    stream_ready(s);
    while (stream_push(s) == PUSH_BLOCKED) {
        struct pollfd pfd = {.fd = s->wfd, .events = POLLOUT};
        int64_t left = deadline_ms - mono_ms();

        if (left <= 0) {
            discard(s);
            return;
        }
        (void)poll(&pfd, 1, (int)left);
    }
}

/* ---- the loop ---- */

static void
unwatch(struct log_stream *s)
{
    if (!s->watching)
        return;
    s->watching = false;
    if (attached != NULL)
        (void)loop_del(attached, &s->watch);
}

static void
on_writable(struct loop *loop, struct loop_watch *w, uint32_t events)
{
    struct log_stream *s = container_of(w, struct log_stream, watch);

    (void)loop;
    (void)events; /* EPOLLERR / EPOLLHUP: the write reports it */
    if (stream_push(s) == PUSH_DONE)
        unwatch(s);
}

/*
 * Asks the loop for EPOLLOUT on a full pipe, tty or socket.  If epoll
 * refuses the descriptor, log_flush() simply keeps trying it.
 */
static void
watch(struct log_stream *s)
{
    if (attached == NULL || s->watching || s->kind == OUT_FILE)
        return;
    if (loop_add(attached, &s->watch, s->wfd, EPOLLOUT, on_writable) == 0)
        s->watching = true;
}

int
log_attach_loop(struct loop *loop)
{
    if (loop == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (attached != loop)
        log_detach_loop();
    attached = loop;
    return 0;
}

void
log_detach_loop(void)
{
    unwatch(&err_log);
    unwatch(&acc_log);
    attached = NULL;
}

/* ---- process hooks ---- */

/* One non-blocking try at both queues, touching no loop. */
static void
push_both(void)
{
    if (err_log.fd >= 0 && stream_sane(&err_log)) {
        stream_ready(&err_log);
        (void)stream_push(&err_log);
    }
    if (acc_log.fd >= 0 && stream_sane(&acc_log)) {
        stream_ready(&acc_log);
        (void)stream_push(&acc_log);
    }
}

static void
in_child(void)
{
    struct log_stream *all[] = {&err_log, &acc_log};

    for (size_t i = 0; i < 2; i++) {
        all[i]->head = all[i]->len = 0;
        all[i]->dropped = 0;
        all[i]->watching = false; /* the epoll set is the parent's */
        all[i]->recheck = true;
    }
    attached = NULL;
    dropped_reported = 0;
}

static void
at_exit(void)
{
    int64_t deadline = mono_ms() + LOG_EXIT_WAIT_MS;

    stream_drain(&err_log, deadline);
    stream_drain(&acc_log, deadline);
}

/* Registers the fork and exit hooks once; 0 or -1 (errno set). */
static int
ensure_hooks(void)
{
    int rc;

    if (hooks_done)
        return 0;
    rc = pthread_atfork(push_both, NULL, in_child);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    if (atexit(at_exit) != 0) {
        errno = ENOMEM;
        return -1;
    }
    hooks_done = true;
    return 0;
}

/* ---- opening ---- */

static int
open_one(const char *path, int std_fd)
{
    if (strcmp(path, "-") == 0)
        return std_fd;
    if (strcmp(path, "off") == 0)
        return -1;
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOCTTY | O_CLOEXEC,
                0640);
}

/* Points s at fd (from open_one), keeping its queue; see "Reopen". */
static void
stream_switch(struct log_stream *s, int fd)
{
    unwatch(s);
    if (fd >= 0 && fd == s->fd && s->kind != OUT_UNKNOWN) {
        /* "-" again: keep the alias if still the same; look now, so that
         * an alias of a stderr since replaced (a daemon's) is dropped
         * even if nothing is written for a while */
        s->recheck = true;
        stream_ready(s);
        return;
    }
    drop_alias(s);
    if (s->fd > 2 && s->fd != fd)
        (void)close(s->fd);
    s->fd = s->wfd = fd;
    s->kind = OUT_UNKNOWN;
    if (fd < 0) {
        discard(s);
        return;
    }
    classify(s);
}

int
log_open(const char *err_path, const char *acc_path, char *diag,
         size_t diag_len)
{
    int efd, afd;

    if (ensure_hooks() < 0) {
        snprintf(diag, diag_len, "cannot register the log's fork hooks: %s",
                 strerror(errno));
        return -1;
    }
    efd = open_one(err_path, 2);
    if (efd == -1 && strcmp(err_path, "off") != 0) {
        snprintf(diag, diag_len, "cannot open error log %s: %s", err_path,
                 strerror(errno));
        return -1;
    }
    afd = open_one(acc_path, 1);
    if (afd == -1 && strcmp(acc_path, "off") != 0) {
        int saved = errno;
        snprintf(diag, diag_len, "cannot open access log %s: %s", acc_path,
                 strerror(errno));
        if (efd > 2)
            (void)close(efd);
        errno = saved;
        return -1;
    }
    push_both(); /* what the old descriptors take now goes there */
    stream_switch(&err_log, efd);
    stream_switch(&acc_log, afd);
    if (err_path != error_path)
        strlcpy(error_path, err_path, sizeof(error_path));
    if (acc_path != access_path)
        strlcpy(access_path, acc_path, sizeof(access_path));
    return 0;
}

int
log_reopen(void)
{
    char diag[256];
    return log_open(error_path, access_path, diag, sizeof(diag));
}

void
log_set_proc(const char *proc)
{
    log_json_escape(proc_esc, sizeof(proc_esc), proc, strlen(proc));
    /* a new process: drop an alias of a stdout that daemon() replaced */
    stream_ready(&err_log);
    stream_ready(&acc_log);
}

int
log_error_fd(void)
{
    return err_log.fd;
}

int
log_access_enabled(void)
{
    return acc_log.fd >= 0;
}

int
log_pending(void)
{
    return err_log.len > err_log.head || acc_log.len > acc_log.head;
}

uint64_t
log_dropped_lines(void)
{
    return err_log.dropped + acc_log.dropped;
}

/* ---- writing ---- */

/*
 * An error line: written now if nothing is queued before it and the
 * descriptor takes it, else queued (or dropped when the queue is full).
 */
static void
emit_error_line(const char *p, size_t n)
{
    struct log_stream *s = &err_log;

    stream_ready(s);
    if (s->head < s->len && !s->watching)
        (void)stream_push(s);
    while (s->head == s->len && n > 0) {
        ssize_t w = write_some(s, p, chunk_len(s, p, n));

        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            s->dropped++;
            return;
        }
        if (w <= 0)
            break;
        p += w;
        n -= (size_t)w;
    }
    if (n > 0)
        stream_append(s, p, n);
}

void
log_write(enum log_level level, const char *fmt, ...)
{
    char msg[LOG_LINE_MAX], line[LOG_LINE_MAX * 2], ts[32];
    struct timespec now;
    va_list ap;
    size_t len, room;
    int n;

    if (err_log.fd < 0)
        return;
    (void)ensure_hooks();
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    (void)clock_gettime(CLOCK_REALTIME, &now);
    fmt_time(ts, &now);
    n = snprintf(line, sizeof(line),
                 "{\"time\":\"%s\",\"level\":\"%s\",\"pid\":%d,"
                 "\"proc\":\"%s\",\"msg\":\"",
                 ts, log_level_name(level), (int)getpid(), proc_esc);
    if (n < 0 || (size_t)n >= sizeof(line))
        return;
    len = (size_t)n;
    /* the escaped message is cut to fit, so the line stays valid JSON */
    room = sizeof(line) - len - 3;
    len += log_json_escape(line + len, room, msg, strlen(msg));
    memcpy(line + len, "\"}\n", 3);
    emit_error_line(line, len + 3);
}

void
log_access(const char *line, size_t len)
{
    struct log_stream *s = &acc_log;

    if (s->fd < 0)
        return;
    if (s->len - s->head + len > s->cap && !s->watching) {
        stream_ready(s);
        (void)stream_push(s);
    }
    stream_append(s, line, len);
}

static void
flush_one(struct log_stream *s)
{
    if (s->head == s->len) {
        unwatch(s);
        return;
    }
    if (s->watching)
        return;
    stream_ready(s);
    if (stream_push(s) == PUSH_BLOCKED)
        watch(s);
}

/*
 * At most once a second, and only when the error log has nothing queued (a
 * report stuck behind the lines it counts helps nobody), says in the error
 * log how many lines were dropped since the last report.
 */
static void
report_drops(void)
{
    uint64_t total = err_log.dropped + acc_log.dropped, since;
    int64_t now;

    if (total == dropped_reported || err_log.fd < 0 ||
        err_log.head != err_log.len)
        return;
    if (LOG_WARN < log_min_level) {
        dropped_reported = total;
        return;
    }
    now = mono_ms();
    if (now - last_report_ms < LOG_REPORT_EVERY_MS)
        return;
    last_report_ms = now;
    since = total - dropped_reported;
    dropped_reported = total;
    log_write(LOG_WARN,
              "log output could not keep up: %llu lines dropped (error log "
              "%llu, access log %llu in all)",
              (unsigned long long)since, (unsigned long long)err_log.dropped,
              (unsigned long long)acc_log.dropped);
}

void
log_flush(void)
{
    (void)ensure_hooks();
    flush_one(&err_log);
    flush_one(&acc_log);
    report_drops();
}

/* ---- the crash report ---- */

struct crash {
    char head[256]; /* {"time":...,"msg":" up to the message */
    size_t head_len;
    int64_t deadline_ms;
};

static size_t
put_str(char *dst, const char *s)
{
    size_t n = strlen(s);
    memcpy(dst, s, n);
    return n;
}

/* Writes one crash line, waiting for a full pipe until the deadline. */
static void
crash_put(struct crash *cr, const char *p, size_t n)
{
    struct log_stream *s = &err_log;

    while (n > 0) {
        ssize_t w = write_some(s, p, chunk_len(s, p, n));
        struct pollfd pfd = {.fd = s->wfd, .events = POLLOUT};
        int64_t left;

        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        left = cr->deadline_ms - mono_ms();
        if ((w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) || left <= 0) {
            s->dropped++;
            return;
        }
        (void)poll(&pfd, 1, (int)left);
    }
}

static void
crash_frame(struct crash *cr, unsigned frame, const char *sym, size_t n)
{
    char line[LOG_LINE_MAX];
    size_t o = 0;

    memcpy(line, cr->head, cr->head_len);
    o += cr->head_len;
    o += put_str(line + o, "backtrace\",\"frame\":");
    o += put_dec(line + o, frame, 1);
    o += put_str(line + o, ",\"symbol\":\"");
    o += log_json_escape(line + o, sizeof(line) - o - 3, sym, n);
    memcpy(line + o, "\"}\n", 3);
    crash_put(cr, line, o + 3);
}

/*
 * Reads backtrace_symbols_fd()'s text back from fd (one symbol per line)
 * and writes a frame line for each; returns the number of frames.  A line
 * longer than the read buffer is cut.
 */
static unsigned
crash_frames_from(struct crash *cr, int fd)
{
    char rbuf[4096];
    size_t have = 0;
    unsigned frame = 0;
    bool skipping = false; /* inside a long line whose head was written */

    for (;;) {
        ssize_t r = read(fd, rbuf + have, sizeof(rbuf) - have);
        size_t start = 0;
        char *nl;

        if (r < 0 && errno == EINTR)
            continue;
        if (r > 0)
            have += (size_t)r;
        while ((nl = memchr(rbuf + start, '\n', have - start)) != NULL) {
            size_t n = (size_t)(nl - (rbuf + start));
            if (!skipping)
                crash_frame(cr, frame++, rbuf + start, n);
            skipping = false;
            start += n + 1;
        }
        if (start == 0 && have == sizeof(rbuf)) {
            if (!skipping)
                crash_frame(cr, frame++, rbuf, have);
            skipping = true;
            have = 0;
        } else {
            memmove(rbuf, rbuf + start, have - start);
            have -= start;
        }
        if (r <= 0) {
            if (have > 0 && !skipping)
                crash_frame(cr, frame++, rbuf, have);
            return frame;
        }
    }
}

/* The symbols of frames[0..n), by the best means available. */
static unsigned
crash_frames(struct crash *cr, void *const *frames, int n)
{
    unsigned written;
    int fd, p[2];

    fd = memfd_create("apiary-backtrace", MFD_CLOEXEC);
    if (fd >= 0) {
        backtrace_symbols_fd(frames, n, fd);
        if (lseek(fd, 0, SEEK_SET) == 0) {
            written = crash_frames_from(cr, fd);
            (void)close(fd);
            return written;
        }
        (void)close(fd);
    } else if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0) {
        /* 64 frames of text fit a pipe; more would be cut, not wait */
        backtrace_symbols_fd(frames, n, p[1]);
        (void)close(p[1]);
        written = crash_frames_from(cr, p[0]);
        (void)close(p[0]);
        return written;
    }
    /* no descriptor to spare: the raw addresses */
    for (written = 0; written < (unsigned)n; written++) {
        static const char hex[] = "0123456789abcdef";
        char sym[2 + 2 * sizeof(uintptr_t)];
        uintptr_t a = (uintptr_t)frames[written];
        size_t k = sizeof(sym);

        do {
            sym[--k] = hex[a & 15];
            a >>= 4;
        } while (a != 0 && k > 2);
        sym[--k] = 'x';
        sym[--k] = '0';
        crash_frame(cr, written, sym + k, sizeof(sym) - k);
    }
    return written;
}

static const char *
signal_name(int signo)
{
    switch (signo) {
    case SIGSEGV:
        return "SIGSEGV";
    case SIGBUS:
        return "SIGBUS";
    case SIGILL:
        return "SIGILL";
    case SIGFPE:
        return "SIGFPE";
    case SIGABRT:
        return "SIGABRT";
    default:
        return "signal";
    }
}

void
log_crash_backtrace(int signo)
{
    int saved = errno;
    struct log_stream *s = &err_log;
    struct crash cr;
    struct timespec now;
    void *frames[LOG_CRASH_FRAMES];
    char line[384];
    unsigned nframes;
    size_t o;
    int n;

    if (s->fd < 0)
        goto out;
    cr.deadline_ms = mono_ms() + LOG_CRASH_WAIT_MS;
    if (!stream_sane(s))
        s->head = s->len = 0; /* the crash hit log.c mid-update */
    stream_drain(s, cr.deadline_ms);

    (void)clock_gettime(CLOCK_REALTIME, &now);
    o = put_str(cr.head, "{\"time\":\"");
    o += fmt_time(cr.head + o, &now);
    o += put_str(cr.head + o, "\",\"level\":\"error\",\"pid\":");
    o += put_dec(cr.head + o, (uint64_t)getpid(), 1);
    o += put_str(cr.head + o, ",\"proc\":\"");
    o += put_str(cr.head + o, proc_esc);
    o += put_str(cr.head + o, "\",\"msg\":\"");
    cr.head_len = o;

    memcpy(line, cr.head, o);
    o += put_str(line + o, "crashed on signal ");
    o += put_dec(line + o, (uint64_t)(signo > 0 ? signo : 0), 1);
    o += put_str(line + o, " (");
    o += put_str(line + o, signal_name(signo));
    o += put_str(line + o, ")\",\"signal\":");
    o += put_dec(line + o, (uint64_t)(signo > 0 ? signo : 0), 1);
    o += put_str(line + o, "}\n");
    crash_put(&cr, line, o);

    n = backtrace(frames, LOG_CRASH_FRAMES);
    nframes = n > 0 ? crash_frames(&cr, frames, n) : 0;

    o = cr.head_len;
    memcpy(line, cr.head, o);
    o += put_str(line + o, "end of backtrace\",\"frames\":");
    o += put_dec(line + o, nframes, 1);
    o += put_str(line + o, "}\n");
    crash_put(&cr, line, o);

    push_both(); /* queued access lines, if the descriptor takes them */
out:
    errno = saved;
}
