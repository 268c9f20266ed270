/*
 * daemon.h - what turns the master into a system daemon: detaching with a
 * start-up report (-d), the file-descriptor limit, and dropping root.
 *
 * Detaching (SPEC 4, issue 9): `apiaryd -d` must exit 0 only once the
 * daemon serves, and non-zero with the reason on stderr when start-up
 * fails, whatever error_log says (its default, stderr, becomes /dev/null
 * in a daemon).  So the foreground process forks, the daemon keeps a pipe
 * to it, and the foreground waits on that pipe: daemon_ready() writes
 * "ready", daemon_failed() writes the reason, and a daemon that dies
 * without a word is reported as such.  Until it is ready the daemon keeps
 * the caller's stderr, so early log lines still reach the terminal.
 *
 * Called by the master only, in this order: daemon_detach() first thing,
 * daemon_raise_nofile() and daemon_drop_privileges() after binding and
 * creating the segments and before the first fork, daemon_ready() or
 * daemon_failed() once.
 */
#ifndef APIARY_DAEMON_H
#define APIARY_DAEMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Forks into the background (a new session, stdin on /dev/null).  Returns
 * only in the daemon: 0, or -1 with errno set when it could not fork (the
 * caller reports and exits).  The foreground process never returns: it
 * exits with the daemon's report (0 ready, 1 failed).
 */
int daemon_detach(void);

/* The daemon serves: the foreground exits 0; stdout and stderr now go to
 * /dev/null.  A no-op when not detached or already reported. */
void daemon_ready(void);

/*
 * In a child the daemon forks (a worker): points stdout and stderr at
 * /dev/null, so that the foreground's pipes close once the master reports
 * (a caller capturing `apiaryd -d` output waits for that).  Start-up
 * errors of a worker reach the master over its channel.  A no-op when
 * not detached.
 */
void daemon_child_stdio(void);

/* Start-up failed for reason: the foreground prints it and exits 1.  A
 * no-op when not detached or already reported. */
void daemon_failed(const char *reason);

/*
 * systemd's readiness protocol (Type=notify), without libsystemd: when
 * NOTIFY_SOCKET is set, sends the formatted state ("READY=1",
 * "RELOADING=1", "STOPPING=1", "MAINPID=N", "STATUS=...", one per line)
 * as one datagram to it.  Best effort: returns 0, or -1 with errno set
 * (nothing to do, or the send failed); callers ignore it.
 */
int daemon_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Raises RLIMIT_NOFILE (soft, and hard when privileged) to what
 * max_connections per worker needs.  Returns 0, or -1 with why[] saying
 * what the limit is and what to set (the caller logs it as a warning).
 */
int daemon_raise_nofile(uint32_t max_connections, char *why, size_t why_len);

/*
 * Started as root with user set: switches to user and group (empty: the
 * user's primary group), supplementary groups included, after chowning
 * the given paths (pidfile, log files; NULL-terminated list, empty or "-"
 * entries skipped) so the unprivileged master can still remove and reopen
 * them.  Not root: nothing to do.  Returns 0, or -1 with diag filled.
 */
int daemon_drop_privileges(const char *user, const char *group,
                           const char *const *paths, char *diag,
                           size_t diag_len);

#endif
