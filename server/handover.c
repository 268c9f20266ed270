/*
 * handover.c - see handover.h.
 */
#include "handover.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bsd/string.h>

int
handover_pair(int sv[2])
{
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                      sv);
}

int
handover_send(int ch, enum handover_type type, const char *text, int fd)
{
    struct handover_msg m;
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = &m, .iov_len = sizeof(m)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

    memset(&m, 0, sizeof(m));
    m.magic = HANDOVER_MAGIC;
    m.type = (uint32_t)type;
    if (text)
        strlcpy(m.text, text, sizeof(m.text));
    if (fd >= 0) {
        struct cmsghdr *cm;
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof(ctl.buf);
        cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    }
    for (;;) {
        ssize_t n = sendmsg(ch, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n == (ssize_t)sizeof(m))
            return 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n >= 0)
            errno = EMSGSIZE; /* SEQPACKET: cannot be partial */
        return -1;
    }
}

int
handover_recv(int ch, struct handover_msg *m, int *fd)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = m, .iov_len = sizeof(*m)};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = ctl.buf,
                        .msg_controllen = sizeof(ctl.buf)};
    struct cmsghdr *cm;
    ssize_t n;

    *fd = -1;
    do
        n = recvmsg(ch, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return (int)n;
    /* take every descriptor that came, whatever else is wrong */
    for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        size_t nfd;
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfd; i++) {
            int got;
            memcpy(&got, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (*fd < 0)
                *fd = got;
            else
                (void)close(got);
        }
    }
    if ((size_t)n != sizeof(*m) || m->magic != HANDOVER_MAGIC ||
        (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
        (m->type == HANDOVER_CONN) != (*fd >= 0)) {
        if (*fd >= 0)
            (void)close(*fd);
        *fd = -1;
        errno = EPROTO;
        return -1;
    }
    m->text[sizeof(m->text) - 1] = '\0';
    return 1;
}
