/*
 * daemon.c - see daemon.h.
 */
#include "daemon.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* descriptors a worker needs besides its connections: listeners, epoll,
 * logs, the database, the hand-over channel, headroom */
#define NOFILE_OVERHEAD 64

static int report_fd = -1;
static int detached;

int
daemon_detach(void)
{
    int p[2], devnull;
    pid_t pid;

    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    pid = fork();
    if (pid < 0) {
        (void)close(p[0]);
        (void)close(p[1]);
        return -1;
    }
    if (pid > 0) {
        /* the foreground: wait for the daemon's word */
        char buf[1024];
        size_t len = 0;
        ssize_t n;
        int st;

        (void)close(p[1]);
        (void)waitpid(pid, &st, 0); /* the intermediate child */
        while (len < sizeof(buf) - 1 &&
               ((n = read(p[0], buf + len, sizeof(buf) - 1 - len)) > 0 ||
                (n < 0 && errno == EINTR)))
            if (n > 0)
                len += (size_t)n;
        buf[len] = '\0';
        if (strncmp(buf, "ready", 5) == 0)
            _exit(0);
        if (len > 0)
            fprintf(stderr, "apiaryd: start-up failed: %s\n", buf);
        else
            fprintf(stderr, "apiaryd: the daemon exited during start-up "
                            "without a report (see the error log)\n");
        _exit(1);
    }
    /* the intermediate child: new session, then fork again so the daemon
     * is no session leader and can never get a controlling terminal */
    (void)close(p[0]);
    if (setsid() < 0)
        _exit(1);
    pid = fork();
    if (pid < 0)
        _exit(1);
    if (pid > 0)
        _exit(0);
    report_fd = p[1];
    detached = 1;
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
        (void)dup2(devnull, STDIN_FILENO);
        (void)close(devnull);
    }
    return 0;
}

static void
report(const char *text)
{
    size_t len = strlen(text);
    ssize_t n;

    if (report_fd < 0)
        return;
    while (len > 0 &&
           ((n = write(report_fd, text, len)) > 0 || (n < 0 && errno == EINTR)))
        if (n > 0) {
            text += n;
            len -= (size_t)n;
        }
    (void)close(report_fd);
    report_fd = -1;
}

void
daemon_ready(void)
{
    if (report_fd < 0)
        return;
    report("ready");
    daemon_child_stdio();
}

void
daemon_child_stdio(void)
{
    int devnull;

    if (!detached)
        return;
    if (report_fd >= 0) {
        /* the foreground reads the report to end of file */
        (void)close(report_fd);
        report_fd = -1;
    }
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
        (void)dup2(devnull, STDOUT_FILENO);
        (void)dup2(devnull, STDERR_FILENO);
        (void)close(devnull);
    }
}

void
daemon_failed(const char *reason)
{
    report(reason && reason[0] ? reason : "unknown reason");
}

int
daemon_notify(const char *fmt, ...)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char msg[512];
    size_t plen;
    socklen_t slen;
    va_list ap;
    int fd, rc;

    if (path == NULL || (path[0] != '/' && path[0] != '@') ||
        (plen = strlen(path)) >= sizeof(sa.sun_path)) {
        errno = ENOENT;
        return -1;
    }
    memcpy(sa.sun_path, path, plen);
    if (path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    slen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    rc = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
                slen) < 0
             ? -1
             : 0;
    (void)close(fd);
    return rc;
}

int
daemon_raise_nofile(uint32_t max_connections, char *why, size_t why_len)
{
    rlim_t need = (rlim_t)max_connections + NOFILE_OVERHEAD;
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        snprintf(why, why_len, "getrlimit(RLIMIT_NOFILE) failed: %s",
                 strerror(errno));
        return -1;
    }
    if (rl.rlim_cur >= need)
        return 0;
    if (rl.rlim_max < need) {
        struct rlimit up = {need, need};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            return 0; /* privileged: hard limit raised too */
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        snprintf(why, why_len,
                 "RLIMIT_NOFILE is %llu (hard limit) but max_connections "
                 "%u needs %llu per worker; raise it (ulimit -n %llu, "
                 "LimitNOFILE=%llu in the systemd unit) or lower "
                 "max_connections",
                 (unsigned long long)rl.rlim_max, max_connections,
                 (unsigned long long)need, (unsigned long long)need,
                 (unsigned long long)need);
        return -1;
    }
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        snprintf(why, why_len, "setrlimit(RLIMIT_NOFILE, %llu) failed: %s",
                 (unsigned long long)need, strerror(errno));
        return -1;
    }
    return 0;
}

int
daemon_drop_privileges(const char *user, const char *group,
                       const char *const *paths, char *diag, size_t diag_len)
{
    struct passwd *pw;
    gid_t gid;

    if (geteuid() != 0 || user == NULL || user[0] == '\0')
        return 0;
    errno = 0;
    pw = getpwnam(user);
    if (pw == NULL) {
        snprintf(diag, diag_len, "user \"%s\": %s", user,
                 errno ? strerror(errno) : "no such user");
        return -1;
    }
    gid = pw->pw_gid;
    if (group && group[0]) {
        struct group *gr;
        errno = 0;
        gr = getgrnam(group);
        if (gr == NULL) {
            snprintf(diag, diag_len, "group \"%s\": %s", group,
                     errno ? strerror(errno) : "no such group");
            return -1;
        }
        gid = gr->gr_gid;
    }
    for (size_t i = 0; paths && paths[i]; i++) {
        if (paths[i][0] == '\0' || strcmp(paths[i], "-") == 0 ||
            strcmp(paths[i], "off") == 0)
            continue;
        if (chown(paths[i], pw->pw_uid, gid) < 0 && errno != ENOENT) {
            snprintf(diag, diag_len, "chown(%s, %s) failed: %s", paths[i], user,
                     strerror(errno));
            return -1;
        }
    }
    if (setgid(gid) < 0 || initgroups(user, gid) < 0 ||
        setuid(pw->pw_uid) < 0) {
        snprintf(diag, diag_len, "switching to user \"%s\" failed: %s", user,
                 strerror(errno));
        return -1;
    }
    if (setuid(0) == 0) {
        snprintf(diag, diag_len,
                 "still able to regain root after dropping "
                 "to \"%s\"; refusing to run",
                 user);
        return -1;
    }
    return 0;
}
