/*
 * floor - the reference "floor" server of scripts/bench-health.
 *
 * It answers every read on a client socket with one fixed HTTP/1.1 response,
 * the bytes apiaryd sends for GET /health (with a frozen Date), and parses
 * nothing: no request line, no headers, no framing. It is as fast as a
 * one-epoll-loop-per-worker server can be on this kernel, so apiaryd's
 * /health throughput is measured against it (SPEC 11: >= 0.97x the floor).
 *
 * Shape, as apiaryd's: the parent binds 127.0.0.1:PORT and forks WORKERS
 * processes sharing the listener (edge-triggered, EPOLLEXCLUSIVE); then it
 * only waits for signals. Connections are spread evenly, as apiaryd must
 * spread them (SPEC 4): wrk opens its connections in one burst, and with
 * plain EPOLLEXCLUSIVE one worker got anything from half to all of them,
 * the floor's req/s swinging between 92k and 139k with it. So each worker
 * publishes its connection count in a shared page, accepts only while it
 * holds the fewest, and otherwise wakes the one that does via its eventfd.
 * SIGTERM or SIGINT to the parent is forwarded to the workers, which die by
 * the default action; the parent exits once all are reaped. A worker dying
 * on its own stops the lot.
 *
 * Deliberately not handled: pipelining (one response per read, however many
 * requests it held), partial writes (the connection is closed), requests
 * larger than the read buffer, accept() failing on EMFILE (the queue waits
 * for the next connection). A benchmark fixture, not a server.
 *
 * Usage: floor PORT WORKERS
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define FLOOR_MAX_WORKERS 64
#define FLOOR_EVENTS 256

static const char response[] = "HTTP/1.1 200 OK\r\n"
                               "Server: apiary\r\n"
                               "Date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
                               "Content-Type: application/json\r\n"
                               "Content-Length: 15\r\n"
                               "Connection: keep-alive\r\n"
                               "\r\n"
                               "{\"status\":\"ok\"}";

static void
die(const char *what)
{
    perror(what);
    exit(1);
}

static _Atomic int *nconn; /* per worker, shared; written by its owner */
static int efd[FLOOR_MAX_WORKERS]; /* per worker: "try to accept" */
static int nworkers;

static void
stop_all(const pid_t *pids, int n)
{
    for (int i = 0; i < n; i++)
        if (pids[i] > 0)
            (void)kill(pids[i], SIGTERM);
}

static void
watch(int ep, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};

    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == -1)
        die("epoll_ctl() failed");
}

/*
 * Accept while this worker holds the fewest connections; otherwise hand the
 * queue to the worker that does. The listener is edge-triggered, so each
 * call ends with the queue empty (EAGAIN) or with another worker told.
 */
static void
accept_some(int ep, int lfd, int self)
{
    for (;;) {
        int min = self, low = atomic_load(&nconn[self]);
        for (int i = 0; i < nworkers; i++) {
            int n = atomic_load(&nconn[i]);
            if (n < low) {
                min = i;
                low = n;
            }
        }
        if (min != self) {
            uint64_t one = 1;
            if (write(efd[min], &one, sizeof(one)) == -1)
                perror("write(eventfd) failed");
            return;
        }
        int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
        if (c == -1)
            return; /* EAGAIN: empty; EMFILE and co: until the next one */
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) == -1)
            (void)close(c);
        else
            atomic_fetch_add(&nconn[self], 1);
    }
}

static void
worker_run(int lfd, int self)
{
    struct epoll_event evs[FLOOR_EVENTS];
    char buf[16384];
    uint64_t v;
    int ep = epoll_create1(EPOLL_CLOEXEC);

    if (ep == -1)
        die("epoll_create1() failed");
    watch(ep, lfd, EPOLLIN | EPOLLET | EPOLLEXCLUSIVE);
    watch(ep, efd[self], EPOLLIN);
    for (;;) {
        int n = epoll_wait(ep, evs, FLOOR_EVENTS, -1);
        if (n == -1 && errno != EINTR)
            die("epoll_wait() failed");
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd || fd == efd[self]) {
                if (fd == efd[self] && read(fd, &v, sizeof(v)) == -1)
                    continue;
                accept_some(ep, lfd, self);
                continue;
            }
            ssize_t r = read(fd, buf, sizeof(buf));
            if (r == -1 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r > 0 && write(fd, response, sizeof(response) - 1) ==
                             (ssize_t)(sizeof(response) - 1))
                continue;
            (void)close(fd); /* close() also leaves the epoll set */
            atomic_fetch_sub(&nconn[self], 1);
        }
    }
}

int
main(int argc, char **argv)
{
    pid_t pids[FLOOR_MAX_WORKERS];
    sigset_t set, old;
    long port = argc == 3 ? strtol(argv[1], NULL, 10) : 0;
    long workers = argc == 3 ? strtol(argv[2], NULL, 10) : 0;
    int live = 0, stopping = 0, status = 0, one = 1;

    if (port < 1 || port > 65535 || workers < 1 ||
        workers > FLOOR_MAX_WORKERS) {
        fprintf(stderr, "usage: floor PORT WORKERS (1..%d)\n",
                FLOOR_MAX_WORKERS);
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd == -1)
        die("socket() failed");
    if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1)
        die("setsockopt(SO_REUSEADDR) failed");
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == -1)
        die("bind() failed");
    if (listen(lfd, 4096) == -1)
        die("listen() failed");
    nworkers = (int)workers;
    nconn = mmap(NULL, sizeof(*nconn) * FLOOR_MAX_WORKERS,
                 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (nconn == MAP_FAILED)
        die("mmap() failed");
    for (int i = 0; i < nworkers; i++)
        if ((efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
            die("eventfd() failed");

    /* Blocked before fork, so no signal is lost; sigwaitinfo() takes them. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, &old) == -1)
        die("sigprocmask() failed");
    for (; live < nworkers; live++) {
        pids[live] = fork();
        if (pids[live] == -1) {
            perror("fork() failed");
            stopping = status = 1;
            break;
        }
        if (pids[live] == 0) {
            /* A parent killed by SIGKILL must not leave workers behind. */
            if (prctl(PR_SET_PDEATHSIG, SIGTERM) == -1 || getppid() == 1 ||
                sigprocmask(SIG_SETMASK, &old, NULL) == -1)
                _exit(1);
            worker_run(lfd, live);
        }
    }
    int forked = live;
    if (stopping)
        stop_all(pids, forked);
    while (live > 0) {
        int sig = sigwaitinfo(&set, NULL), died = 0;
        pid_t pid;
        while (sig == SIGCHLD && (pid = waitpid(-1, NULL, WNOHANG)) > 0) {
            live--;
            died = 1;
            for (int i = 0; i < forked; i++)
                if (pids[i] == pid)
                    pids[i] = 0; /* reaped: its pid may be reused */
        }
        if (died && !stopping) {
            fprintf(stderr, "floor: a worker exited, stopping\n");
            status = 1;
        }
        if (!stopping && (died || sig == SIGTERM || sig == SIGINT)) {
            stopping = 1;
            stop_all(pids, forked);
        }
    }
    return status;
}
