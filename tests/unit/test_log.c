/*
 * test_log.c - the logger never blocks (SPEC 7, issue 6): lines reach a
 * pipe, a socket, a tty and a file; with a reader that stops reading, the
 * calls return at once and lines are dropped and counted, never lost
 * silently or repeated; once the reader drains, lines flow again, woken by
 * the loop's EPOLLOUT; the crash report is one valid JSON line per frame.
 *
 * A watchdog alarm turns a blocking call into a failure instead of a hang.
 * Descriptors are given to log_open() as "/proc/self/fd/N" (a new open
 * file description of the same pipe) or, for the socket, as "-" with the
 * socket moved onto stdout for the duration of the test.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "log.h"
#include "loop.h"

#define WATCHDOG_S 60
#define SINK_BYTES (4 * 1024 * 1024)

/* Everything read back from a log descriptor. */
struct sink {
    char *data;
    size_t len;
};

/* "/proc/self/fd/N" in one of two rotating buffers (two paths per call). */
static const char *
path_of(int fd)
{
    static char paths[2][64];
    static unsigned next;
    char *p = paths[next++ % 2];

    snprintf(p, sizeof(paths[0]), "/proc/self/fd/%d", fd);
    return p;
}

static void
open_logs(const char *err, const char *acc)
{
    char diag[256];
    assert_int_equal(log_open(err, acc, diag, sizeof(diag)), 0);
}

static int
teardown_logs(void **state)
{
    (void)state;
    log_detach_loop();
    open_logs("off", "off");
    return 0;
}

/* A pipe whose read end is non-blocking (the test's own description). */
static void
make_pipe(int p[2])
{
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
}

static void
sink_init(struct sink *k)
{
    k->data = malloc(SINK_BYTES);
    assert_non_null(k->data);
    k->len = 0;
}

/* Reads what fd has now; returns the number of bytes read. */
static size_t
sink_read(struct sink *k, int fd)
{
    size_t got = 0;

    for (;;) {
        ssize_t r;
        assert_true(k->len < SINK_BYTES);
        r = read(fd, k->data + k->len, SINK_BYTES - k->len);
        if (r <= 0) {
            assert_true(r == 0 || errno == EAGAIN || errno == EINTR);
            return got;
        }
        k->len += (size_t)r;
        got += (size_t)r;
    }
}

/*
 * The reader wakes up: alternates reading (fd, and efd for the error log
 * unless -1) and log_flush() until nothing is queued.
 */
static void
sink_drain(struct sink *k, int fd, struct sink *ek, int efd)
{
    for (int i = 0; i < 100000 && log_pending(); i++) {
        sink_read(k, fd);
        if (efd >= 0)
            sink_read(ek, efd);
        log_flush();
    }
    assert_false(log_pending());
    sink_read(k, fd);
    if (efd >= 0)
        sink_read(ek, efd);
}

/* Calls fn on every line of k as a JSON object; returns the line count. */
static size_t
sink_lines(const struct sink *k, void (*fn)(json_t *, void *), void *arg)
{
    size_t n = 0, start = 0;

    while (start < k->len) {
        const char *nl = memchr(k->data + start, '\n', k->len - start);
        json_error_t err;
        json_t *doc;

        assert_non_null(nl); /* every line complete */
        doc = json_loadb(k->data + start, (size_t)(nl - k->data) - start, 0,
                         &err);
        if (doc == NULL)
            fail_msg("not JSON (%s): %.*s", err.text,
                     (int)((size_t)(nl - k->data) - start), k->data + start);
        assert_true(json_is_object(doc));
        if (fn)
            fn(doc, arg);
        json_decref(doc);
        n++;
        start = (size_t)(nl - k->data) + 1;
    }
    return n;
}

static void
sink_fini(struct sink *k)
{
    free(k->data);
    k->data = NULL;
}

/* Access lines carry a sequence number: each must arrive once, in order. */
static size_t
access_line(char *buf, size_t cap, unsigned seq)
{
    int n =
        snprintf(buf, cap, "{\"seq\":%u,\"path\":\"/health\",\"pad\":\"%s\"}\n",
                 seq, "0123456789012345678901234567890123456789012345678901");
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static void
check_seq(json_t *doc, void *arg)
{
    long long *last = arg;
    json_t *seq = json_object_get(doc, "seq");

    assert_true(json_is_integer(seq));
    assert_true(json_integer_value(seq) > *last);
    *last = json_integer_value(seq);
}

/* ---- JSON escaping ---- */

static void
test_escape(void **state)
{
    char out[64];
    (void)state;

    assert_int_equal(log_json_escape(out, sizeof(out), "a\"b\\c", 5), 7);
    assert_string_equal(out, "a\\\"b\\\\c");
    log_json_escape(out, sizeof(out), "\n\t\x01\x7f\x80\xff", 6);
    assert_string_equal(out, "\\u000a\\u0009\\u0001\\u007f\\u0080\\u00ff");
    log_json_escape(out, sizeof(out), "nul\0byte", 8);
    assert_string_equal(out, "nul\\u0000byte");
    /* cut with "..." and still NUL-terminated within cap */
    assert_int_equal(log_json_escape(out, 10, "abcdefghijklmnop", 16), 9);
    assert_string_equal(out, "abcdef...");
    log_json_escape(out, 8, "\x01\x02", 2);
    assert_string_equal(out, "...");
    assert_int_equal(log_json_escape(out, 0, "x", 1), 0);
    assert_int_equal(log_json_escape(out, 1, "x", 1), 0);
    assert_string_equal(out, "");
}

/* ---- lines reach the descriptor ---- */

static void
test_error_line_written_at_once(void **state)
{
    int p[2];
    struct sink k;
    json_t *doc;
    json_error_t err;
    struct timespec now;
    struct tm tm;
    time_t t;
    (void)state;

    make_pipe(p);
    sink_init(&k);
    open_logs(path_of(p[1]), "off");
    log_set_proc("worker \"7\"");
    log_write(LOG_WARN, "hello %s\n\x01", "\"you\"");
    /* no log_flush(): an error line is written straight away */
    assert_true(sink_read(&k, p[0]) > 0);
    assert_false(log_pending());
    assert_int_equal(sink_lines(&k, NULL, NULL), 1);
    doc = json_loadb(k.data, k.len - 1, 0, &err);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "level")),
                        "warn");
    assert_int_equal(json_integer_value(json_object_get(doc, "pid")), getpid());
    assert_string_equal(json_string_value(json_object_get(doc, "proc")),
                        "worker \"7\"");
    assert_string_equal(json_string_value(json_object_get(doc, "msg")),
                        "hello \"you\"\n\x01");
    /* the hand-made UTC time agrees with the clock */
    memset(&tm, 0, sizeof(tm));
    assert_non_null(strptime(json_string_value(json_object_get(doc, "time")),
                             "%Y-%m-%dT%H:%M:%S", &tm));
    t = timegm(&tm);
    clock_gettime(CLOCK_REALTIME, &now);
    assert_true(t <= now.tv_sec && t >= now.tv_sec - 5);
    assert_int_equal(strlen(json_string_value(json_object_get(doc, "time"))),
                     27);
    json_decref(doc);
    log_set_proc("master");
    sink_fini(&k);
    open_logs("off", "off");
    close(p[0]);
    close(p[1]);
}

static void
test_long_message_stays_json(void **state)
{
    char big[5000];
    int p[2];
    struct sink k;
    (void)state;

    memset(big, '"', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    make_pipe(p);
    sink_init(&k);
    open_logs(path_of(p[1]), "off");
    log_write(LOG_ERROR, "%s", big);
    sink_read(&k, p[0]);
    assert_int_equal(sink_lines(&k, NULL, NULL), 1);
    assert_true(k.len <= 4096); /* PIPE_BUF: one atomic write */
    sink_fini(&k);
    open_logs("off", "off");
    close(p[0]);
    close(p[1]);
}

static void
test_access_lines_buffered_until_flush(void **state)
{
    char line[256];
    int p[2];
    long long last = -1;
    struct sink k;
    (void)state;

    make_pipe(p);
    sink_init(&k);
    open_logs("off", path_of(p[1]));
    assert_true(log_access_enabled());
    for (unsigned i = 0; i < 100; i++)
        log_access(line, access_line(line, sizeof(line), i));
    assert_int_equal(sink_read(&k, p[0]), 0);
    assert_true(log_pending());
    log_flush();
    assert_false(log_pending());
    sink_read(&k, p[0]);
    assert_int_equal(sink_lines(&k, check_seq, &last), 100);
    assert_int_equal(last, 99);
    sink_fini(&k);
    open_logs("off", "off");
    assert_false(log_access_enabled());
    close(p[0]);
    close(p[1]);
}

static void
test_regular_file(void **state)
{
    char path[] = "/tmp/apiary-test-log-XXXXXX", line[256];
    int fd;
    long long last = -1;
    struct sink k;
    (void)state;

    fd = mkstemp(path);
    assert_true(fd >= 0);
    sink_init(&k);
    open_logs(path, path);
    for (unsigned i = 0; i < 3000; i++) /* more than the buffer holds */
        log_access(line, access_line(line, sizeof(line), i));
    log_flush();
    assert_false(log_pending());
    sink_read(&k, fd);
    assert_int_equal(sink_lines(&k, check_seq, &last), 3000);
    sink_fini(&k);
    open_logs("off", "off");
    close(fd);
    unlink(path);
}

/* ---- a reader that stops reading ---- */

/*
 * Writes n access lines and n/10 error lines into logs nobody reads,
 * flushing as the worker does; every call must return.  Then drains and
 * checks that each line arrived once, in order, or was counted as dropped.
 */
static void
stall_and_drain(int acc_read_fd, int err_read_fd, unsigned n)
{
    char line[256];
    uint64_t dropped0 = log_dropped_lines(), dropped;
    long long last = -1;
    struct sink acc, err;
    size_t got, want = n + 1 + (err_read_fd >= 0 ? n / 10 : 0);

    /* no drop report (a warn line): each line below is one we wrote */
    log_min_level = LOG_ERROR;
    sink_init(&acc);
    sink_init(&err);
    for (unsigned i = 0; i < n; i++) {
        log_access(line, access_line(line, sizeof(line), i));
        if (i % 10 == 0) {
            log_write(LOG_ERROR, "error line %u", i);
            log_flush();
        }
    }
    dropped = log_dropped_lines() - dropped0;
    assert_true(dropped > 0);
    assert_true(log_pending());

    sink_drain(&acc, acc_read_fd, &err, err_read_fd);
    /* after the drain: new lines flow again */
    log_access(line, access_line(line, sizeof(line), n));
    log_flush();
    sink_read(&acc, acc_read_fd);
    got = sink_lines(&acc, check_seq, &last);
    assert_int_equal(last, n);
    if (err_read_fd >= 0)
        got += sink_lines(&err, NULL, NULL);
    dropped = log_dropped_lines() - dropped0;
    assert_int_equal(got + dropped, want);
    sink_fini(&acc);
    sink_fini(&err);
    log_min_level = LOG_INFO;
}

static void
test_stalled_pipe_drops_and_counts(void **state)
{
    int pa[2], pe[2];
    (void)state;

    make_pipe(pa);
    make_pipe(pe);
    open_logs(path_of(pe[1]), path_of(pa[1]));
    stall_and_drain(pa[0], pe[0], 20000);
    open_logs("off", "off");
    close(pa[0]);
    close(pa[1]);
    close(pe[0]);
    close(pe[1]);
}

static void
test_stalled_socket_drops_and_counts(void **state)
{
    int sv[2], saved;
    (void)state;

    /* systemd's journal: stdout is a unix stream socket */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    fflush(stdout);
    saved = dup(1);
    assert_true(saved >= 0);
    assert_int_equal(dup2(sv[0], 1), 1);
    open_logs("off", "-");
    stall_and_drain(sv[1], -1, 40000);
    open_logs("off", "off");
    assert_int_equal(dup2(saved, 1), 1);
    close(saved);
    close(sv[0]);
    close(sv[1]);
}

static void
test_stalled_tty_drops_and_counts(void **state)
{
    struct termios tio;
    int master, slave;
    (void)state;

    master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    assert_true(master >= 0);
    assert_int_equal(grantpt(master), 0);
    assert_int_equal(unlockpt(master), 0);
    slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    assert_true(slave >= 0);
    /* raw: no "\n" -> "\r\n", so what is read back is what was written */
    assert_int_equal(tcgetattr(slave, &tio), 0);
    cfmakeraw(&tio);
    assert_int_equal(tcsetattr(slave, TCSANOW, &tio), 0);
    assert_int_equal(fcntl(master, F_SETFL, O_NONBLOCK), 0);
    open_logs("off", path_of(slave));
    stall_and_drain(master, -1, 20000);
    open_logs("off", "off");
    close(slave);
    close(master);
}

static void
find_report(json_t *doc, void *arg)
{
    const char *msg = json_string_value(json_object_get(doc, "msg"));
    int *found = arg;

    if (msg != NULL && strstr(msg, "could not keep up") != NULL) {
        assert_string_equal(json_string_value(json_object_get(doc, "level")),
                            "warn");
        (*found)++;
    }
}

static void
test_drops_are_reported_in_error_log(void **state)
{
    char line[256];
    int pa[2], pe[2], found = 0;
    uint64_t dropped0 = log_dropped_lines();
    struct sink err;
    (void)state;

    make_pipe(pa);
    make_pipe(pe);
    sink_init(&err);
    open_logs(path_of(pe[1]), path_of(pa[1]));
    for (unsigned i = 0; log_dropped_lines() == dropped0; i++) {
        log_access(line, access_line(line, sizeof(line), i));
        log_flush();
        assert_true(i < 100000);
    }
    log_flush();
    sink_read(&err, pe[0]);
    sink_lines(&err, find_report, &found);
    assert_int_equal(found, 1); /* at most one a second */
    sink_fini(&err);
    open_logs("off", "off");
    close(pa[0]);
    close(pa[1]);
    close(pe[0]);
    close(pe[1]);
}

/* ---- the loop wakes the logger ---- */

struct wake {
    int fd;
    struct sink *k;
    bool timed_out;
};

static void
wake_before_sleep(struct loop *loop, void *arg)
{
    struct wake *w = arg;

    /* the reader; no log_flush() here: only the EPOLLOUT callback writes */
    sink_read(w->k, w->fd);
    if (!log_pending())
        loop_stop(loop);
}

static void
wake_deadline(struct loop *loop, void *arg)
{
    struct wake *w = arg;
    w->timed_out = true;
    loop_stop(loop);
}

static void
test_loop_wakes_when_writable(void **state)
{
    char line[256];
    struct loop *loop = loop_new();
    struct alarm deadline = {0};
    struct sink k;
    struct wake w = {0};
    long long last = -1;
    sigset_t none;
    unsigned i = 0;
    uint64_t dropped0 = log_dropped_lines();
    (void)state;

    assert_non_null(loop);
    assert_int_equal(log_attach_loop(loop), 0);
    {
        int p[2];
        make_pipe(p);
        w.fd = p[0];
        open_logs("off", path_of(p[1]));
        close(p[1]); /* the logger holds its own descriptors */
    }
    sink_init(&k);
    w.k = &k;
    /* fill the pipe; flush as the worker does before it sleeps */
    while (!log_pending() || i < 2000) {
        log_access(line, access_line(line, sizeof(line), i++));
        log_flush();
        assert_true(i < 100000);
    }
    loop_set_before_sleep(loop, wake_before_sleep, &w);
    loop_alarm_set(loop, &deadline, 10000, wake_deadline, &w);
    sigemptyset(&none);
    assert_int_equal(loop_run(loop, &none), 0);
    assert_false(w.timed_out);
    assert_false(log_pending());
    sink_read(&k, w.fd);
    assert_int_equal(
        sink_lines(&k, check_seq, &last) + log_dropped_lines() - dropped0, i);
    log_detach_loop();
    loop_alarm_cancel(loop, &deadline);
    loop_free(&loop);
    sink_fini(&k);
    open_logs("off", "off");
    close(w.fd);
}

/* ---- fork ---- */

static void
test_child_does_not_repeat_parent_lines(void **state)
{
    char line[256];
    int p[2], status;
    unsigned i = 0;
    pid_t pid;
    (void)state;

    make_pipe(p);
    open_logs("off", path_of(p[1]));
    while (!log_pending()) {
        log_access(line, access_line(line, sizeof(line), i++));
        log_flush();
    }
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(log_pending() || log_dropped_lines() != 0 ? 1 : 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(log_pending()); /* still the parent's to write */
    open_logs("off", "off");
    close(p[0]);
    close(p[1]);
}

/* ---- the crash report ---- */

struct crash_check {
    int signo;
    size_t lines;
    long long frames;
    bool saw_start, saw_end, saw_symbol;
    const char *want_symbol;
};

static void
check_crash_line(json_t *doc, void *arg)
{
    struct crash_check *c = arg;
    const char *msg = json_string_value(json_object_get(doc, "msg"));
    char want[64];

    assert_non_null(msg);
    assert_string_equal(json_string_value(json_object_get(doc, "level")),
                        "error");
    assert_string_equal(json_string_value(json_object_get(doc, "proc")),
                        "worker 3");
    assert_true(json_integer_value(json_object_get(doc, "pid")) > 0);
    assert_int_equal(strlen(json_string_value(json_object_get(doc, "time"))),
                     27);
    c->lines++;
    if (c->lines == 1) {
        snprintf(want, sizeof(want), "crashed on signal %d", c->signo);
        assert_non_null(strstr(msg, want));
        assert_int_equal(json_integer_value(json_object_get(doc, "signal")),
                         c->signo);
        c->saw_start = true;
    } else if (strcmp(msg, "backtrace") == 0) {
        const char *sym = json_string_value(json_object_get(doc, "symbol"));
        assert_false(c->saw_end);
        assert_int_equal(json_integer_value(json_object_get(doc, "frame")),
                         c->frames);
        assert_non_null(sym);
        if (strstr(sym, c->want_symbol) != NULL)
            c->saw_symbol = true;
        c->frames++;
    } else {
        assert_string_equal(msg, "end of backtrace");
        assert_int_equal(json_integer_value(json_object_get(doc, "frames")),
                         c->frames);
        c->saw_end = true;
    }
}

static void
check_crash_report(int fd, int signo, const char *want_symbol)
{
    struct crash_check c = {.signo = signo, .want_symbol = want_symbol};
    struct sink k;

    sink_init(&k);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    sink_read(&k, fd);
    sink_lines(&k, check_crash_line, &c);
    assert_true(c.saw_start && c.saw_end);
    assert_true(c.frames >= 2);
    assert_true(c.saw_symbol);
    sink_fini(&k);
}

static int
temp_log(char *path)
{
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    open_logs(path, "off");
    log_set_proc("worker 3");
    return fd;
}

static void
test_crash_report_is_json_lines(void **state)
{
    char path[] = "/tmp/apiary-test-crash-XXXXXX";
    int fd;
    (void)state;

    fd = temp_log(path);
    log_crash_backtrace(SIGSEGV);
    check_crash_report(fd, SIGSEGV, "log_crash_backtrace");
    log_set_proc("master");
    open_logs("off", "off");
    close(fd);
    unlink(path);
}

static void
on_test_crash(int signo)
{
    log_crash_backtrace(signo);
    signal(signo, SIG_DFL);
    raise(signo);
}

/* Not static: -rdynamic exports it, so its name shows in the backtrace. */
__attribute__((noinline)) void
test_log_crash_victim(void)
{
    raise(SIGBUS);
    __asm__ volatile("" ::: "memory"); /* no tail call: keep this frame */
}

static void
test_crash_report_from_signal_handler(void **state)
{
    char path[] = "/tmp/apiary-test-crash-XXXXXX";
    int fd, status;
    pid_t pid;
    (void)state;

    fd = temp_log(path);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_test_crash;
        sa.sa_flags = (int)SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGBUS, &sa, NULL);
        test_log_crash_victim();
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS);
    check_crash_report(fd, SIGBUS, "test_log_crash_victim");
    log_set_proc("master");
    open_logs("off", "off");
    close(fd);
    unlink(path);
}

static void
test_levels(void **state)
{
    (void)state;
    assert_int_equal(log_level_parse("debug"), LOG_DEBUG);
    assert_int_equal(log_level_parse("error"), LOG_ERROR);
    assert_int_equal(log_level_parse("loud"), -1);
    assert_string_equal(log_level_name(LOG_WARN), "warn");
    assert_string_equal(log_level_name((enum log_level)9), "?");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_levels),
        cmocka_unit_test_teardown(test_error_line_written_at_once,
                                  teardown_logs),
        cmocka_unit_test_teardown(test_long_message_stays_json, teardown_logs),
        cmocka_unit_test_teardown(test_access_lines_buffered_until_flush,
                                  teardown_logs),
        cmocka_unit_test_teardown(test_regular_file, teardown_logs),
        cmocka_unit_test_teardown(test_stalled_pipe_drops_and_counts,
                                  teardown_logs),
        cmocka_unit_test_teardown(test_stalled_socket_drops_and_counts,
                                  teardown_logs),
        cmocka_unit_test_teardown(test_stalled_tty_drops_and_counts,
                                  teardown_logs),
        cmocka_unit_test_teardown(test_drops_are_reported_in_error_log,
                                  teardown_logs),
        cmocka_unit_test_teardown(test_loop_wakes_when_writable, teardown_logs),
        cmocka_unit_test_teardown(test_child_does_not_repeat_parent_lines,
                                  teardown_logs),
        cmocka_unit_test_teardown(test_crash_report_is_json_lines,
                                  teardown_logs),
        cmocka_unit_test_teardown(test_crash_report_from_signal_handler,
                                  teardown_logs),
    };

    alarm(WATCHDOG_S); /* a call that blocks fails the run, not hangs it */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
