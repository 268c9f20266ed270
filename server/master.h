/*
 * master.h - the master process: binds, forks, supervises, reloads,
 * upgrades, shuts down.
 *
 * After master_run() has bound the sockets and forked the workers, the
 * master only waits for signals, children and its workers' hand-over
 * channels (SPEC 1: it never handles a request; it relays the descriptors
 * of idle connections during a reload, handover.h).  It sleeps in ppoll()
 * with every signal it cares about blocked outside the sleep, so a signal
 * can never be lost between a check and the sleep.
 *
 * Signals (SPEC 4, nginx's meanings):
 *   TERM, INT  fast shutdown;
 *   QUIT       graceful shutdown; during a binary upgrade whose new master
 *              serves: finish the upgrade (our workers hand their
 *              connections to the new master's workers, then we exit);
 *   HUP        reload: a new generation with the re-read configuration,
 *              then the old one retires handing its idle connections
 *              over; an invalid file or a generation that cannot start
 *              leaves the running one serving (logged); during a binary
 *              upgrade: roll back (the new master hands everything back
 *              and exits; our pidfile is restored);
 *   USR1       reopen the log files (and tell the workers to);
 *   USR2       binary upgrade: rename the pidfile to PIDFILE.oldbin and
 *              start opts->exe, which inherits the listening sockets
 *              (APIARY_LISTEN_FDS) and a channel to us (APIARY_UPGRADE_FD)
 *              and writes its own pidfile; if it exits, we take the
 *              pidfile back.
 */
#ifndef APIARY_MASTER_H
#define APIARY_MASTER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/*
 * Fills *out with the configuration as at start-up (defaults, file,
 * environment, flags), validated and finished.  0, or -1 with diag naming
 * file, line and key.  Used by reload (HUP).
 */
typedef int (*master_load_fn)(struct config *out, char *diag, size_t diag_len);

struct master_opts {
    bool daemonize;      /* -d: detach, report start-up (daemon.h) */
    master_load_fn load; /* NULL: reload is refused */
    const char *exe;     /* absolute path of this binary, for USR2 */
    char *const *argv;   /* the command line to start it with */
};

/*
 * Runs the server with cfg (already validated; copied).  Returns the
 * process exit status: 0 after an orderly shutdown (or a finished
 * upgrade), 1 when it could not start (message already logged, and
 * reported to the foreground process under -d).
 */
int master_run(const struct config *cfg, const struct master_opts *opts);

#endif
