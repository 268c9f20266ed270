/*
 * handover.h - the channel between a master and each of its workers (and
 * between an old master and the new one during a binary upgrade): small
 * typed messages, one of which carries a client connection's descriptor
 * (SCM_RIGHTS).
 *
 * Why (SPEC 4, "reload and upgrade lose nothing"): a retiring worker does
 * not close its idle keep-alive connections, it sends them here; the
 * master relays each one to a worker of the current generation (round
 * robin, so they spread), which adopts it as a fresh idle connection.
 * During a binary upgrade the old master relays them once more, over the
 * channel it made when it started the new binary, to the new master,
 * which relays them to its own workers.  Routing through the master keeps
 * every worker's view simple (one channel, inherited at fork) and lets the
 * master, the only process that knows which generation is current, choose
 * the target.
 *
 * Transport: a SOCK_SEQPACKET socketpair per worker, both ends
 * non-blocking and close-on-exec, so each message arrives whole and in
 * order.  A message sent before the sender exits stays queued at the
 * receiver: a worker may send its last connections and exit at once; the
 * master drains a dead worker's channel before closing it (master.c).
 * A connection's bytes that arrived but were never read stay in its
 * socket, so a request racing the hand-over is read by the new owner.
 *
 * Not here: deciding which connection is idle (worker/conn.c) or where a
 * descriptor goes (server/master.c).
 */
#ifndef APIARY_HANDOVER_H
#define APIARY_HANDOVER_H

#include <stddef.h>
#include <stdint.h>

#define HANDOVER_MAGIC 0x41484f31u /* "AHO1" */
#define HANDOVER_TEXT_MAX 240

enum handover_type {
    HANDOVER_CONN = 1, /* carries one idle client connection (an fd) */
    HANDOVER_RETIRE,   /* master -> worker: stop accepting, hand over */
    HANDOVER_FATAL,    /* worker -> master: why it could not start */
    HANDOVER_READY,    /* serving: worker -> master, new -> old master */
    HANDOVER_ROLLBACK, /* old master -> new master: give everything back */
};

struct handover_msg {
    uint32_t magic;
    uint32_t type; /* enum handover_type */
    char text[HANDOVER_TEXT_MAX];
};

_Static_assert(sizeof(struct handover_msg) == 248, "handover message size");

/*
 * Creates a channel: sv[0] for the master, sv[1] for the worker (or the new
 * master).  Both non-blocking and close-on-exec.  0, or -1 with errno set.
 */
int handover_pair(int sv[2]);

/*
 * Sends one message of type with optional text (NULL: none) and, when
 * fd >= 0, that descriptor (the kernel holds a reference while it is in
 * flight; the caller still owns and must close its own).  Never blocks.
 * 0, or -1 with errno set: EAGAIN when the channel is full (try again
 * when it is writable), EPIPE/ECONNREFUSED when the peer is gone.
 */
int handover_send(int ch, enum handover_type type, const char *text, int fd);

/*
 * Receives one message into *m; *fd gets the descriptor it carried
 * (close-on-exec) or -1.  Returns 1 for a message, 0 at end of file (the
 * peer closed and nothing is queued), -1 with errno set (EAGAIN: nothing
 * queued now; EPROTO: a malformed message, dropped, any descriptor in it
 * closed).  Never blocks.
 */
int handover_recv(int ch, struct handover_msg *m, int *fd);

#endif
