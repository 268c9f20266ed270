/*
 * log.c - see log.h.  Formatting uses a stack buffer; a message longer than
 * it is cut, never allocated for.  Error lines are written straight away (they
 * are rare and must not be lost in a crash); access lines are buffered.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <bsd/string.h>

enum log_level log_min_level = LOG_INFO;

#define LOG_LINE_MAX 2048
#define ACCESS_BUF_BYTES (64 * 1024)
#define LOG_PATH_MAX 4096

static int error_fd = 2;
static int access_fd = -1;
static char error_path[LOG_PATH_MAX] = "-";
static char access_path[LOG_PATH_MAX] = "off";
static char proc_name[32] = "master";
static char access_buf[ACCESS_BUF_BYTES];
static size_t access_len;

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

static int
open_one(const char *path, int std_fd)
{
    if (strcmp(path, "-") == 0)
        return std_fd;
    if (strcmp(path, "off") == 0)
        return -1;
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

static void
swap_fd(int *slot, int fd)
{
    int old = *slot;
    *slot = fd;
    if (old > 2 && old != fd)
        (void)close(old);
}

int
log_open(const char *err_path, const char *acc_path, char *diag,
         size_t diag_len)
{
    int efd, afd;

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
    log_flush();
    swap_fd(&error_fd, efd);
    swap_fd(&access_fd, afd);
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
    strlcpy(proc_name, proc, sizeof(proc_name));
}

int
log_error_fd(void)
{
    return error_fd;
}

int
log_access_enabled(void)
{
    return access_fd >= 0;
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

static void
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a logging failure */
        }
        p += w;
        n -= (size_t)w;
    }
}

void
log_write(enum log_level level, const char *fmt, ...)
{
    char msg[LOG_LINE_MAX], line[LOG_LINE_MAX * 2], esc[LOG_LINE_MAX * 2];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n;

    if (error_fd < 0)
        return;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    log_json_escape(esc, sizeof(esc), msg, strlen(msg));
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line),
                 "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\","
                 "\"level\":\"%s\",\"pid\":%d,\"proc\":\"%s\","
                 "\"msg\":\"%s\"}\n",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000, log_level_name(level),
                 (int)getpid(), proc_name, esc);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line)) {
        n = (int)sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    write_all(error_fd, line, (size_t)n);
}

void
log_access(const char *line, size_t len)
{
    if (access_fd < 0)
        return;
    if (access_len + len > sizeof(access_buf))
        log_flush();
    if (len > sizeof(access_buf)) {
        write_all(access_fd, line, len);
        return;
    }
    memcpy(access_buf + access_len, line, len);
    access_len += len;
}

void
log_flush(void)
{
    if (access_len == 0)
        return;
    if (access_fd >= 0)
        write_all(access_fd, access_buf, access_len);
    access_len = 0;
}
