/*
 * listen.h - parsing the listen setting and binding the sockets.
 *
 * The master binds every listening socket before it forks (SPEC 4), so the
 * workers share one accept queue per address and a replaced worker loses
 * no queued connection.
 */
#ifndef APIARY_LISTEN_H
#define APIARY_LISTEN_H

#include <stddef.h>
#include <sys/socket.h>

#define LISTEN_MAX 8

struct listen_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[64]; /* "127.0.0.1:8080" / "[::1]:8080" for logs */
    int optional;  /* from a bare port: IPv6 may be unavailable */
};

/*
 * Parses "8080", "*:8080", "127.0.0.1:8080", "[::1]:8080", or a comma list
 * of those.  A bare port (or "*:port") means both 0.0.0.0 and [::] (IPv6
 * only on the v6 socket).  Returns the number of addresses, or -1 with diag
 * filled.
 */
int listen_parse(const char *spec, struct listen_addr *out, size_t max,
                 char *diag, size_t diag_len);

/*
 * Creates, binds and listens on each address with SO_REUSEADDR and the
 * given backlog; fills fds.  An optional IPv6 address that the kernel does
 * not support is skipped with a warning.  Returns the number of sockets,
 * or -1 with diag filled (sockets already opened are closed).
 */
int listen_open(const struct listen_addr *addrs, int n, int backlog, int *fds,
                char *diag, size_t diag_len);

#endif
