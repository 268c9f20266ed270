/*
 * master.h - the master process: binds, forks, supervises, shuts down.
 *
 * After master_run() has bound the sockets and forked the workers, the
 * master only waits for signals and children (SPEC 1: it never handles a
 * request).  It sleeps in ppoll() with every signal it cares about blocked
 * outside the sleep, so a signal can never be lost between a check and the
 * sleep.
 *
 * Designed to grow: reload (HUP) and binary upgrade (USR2) will add worker
 * generations; slots already carry the fields they need (a generation is
 * just a second slot array whose workers get QUIT).
 */
#ifndef APIARY_MASTER_H
#define APIARY_MASTER_H

#include "config.h"

/*
 * Runs the server with cfg (already validated).  daemonize detaches from
 * the terminal after binding.  Returns the process exit status: 0 after an
 * orderly shutdown, 1 when it could not start (message already printed).
 */
int master_run(struct config *cfg, int daemonize);

#endif
