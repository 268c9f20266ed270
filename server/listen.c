/*
 * listen.c - see listen.h.
 */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static int
parse_port(const char *s, size_t n, unsigned *port)
{
    unsigned v = 0;

    if (n == 0 || n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *port = v;
    return 0;
}

static void
set_v4(struct listen_addr *a, const struct in_addr *ip, unsigned port)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
    char ipt[INET_ADDRSTRLEN];

    memset(a, 0, sizeof(*a));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    sin->sin_addr = *ip;
    a->len = sizeof(*sin);
    inet_ntop(AF_INET, ip, ipt, sizeof(ipt));
    snprintf(a->text, sizeof(a->text), "%s:%u", ipt, port);
}

static void
set_v6(struct listen_addr *a, const struct in6_addr *ip, unsigned port)
{
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
    char ipt[INET6_ADDRSTRLEN];

    memset(a, 0, sizeof(*a));
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    sin6->sin6_addr = *ip;
    a->len = sizeof(*sin6);
    inet_ntop(AF_INET6, ip, ipt, sizeof(ipt));
    snprintf(a->text, sizeof(a->text), "[%s]:%u", ipt, port);
}

int
listen_parse(const char *spec, struct listen_addr *out, size_t max, char *diag,
             size_t diag_len)
{
    size_t n = 0;
    const char *p = spec;

    while (*p) {
        const char *item, *end, *colon;
        char host[64];
        size_t len;
        unsigned port;

        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        item = p;
        while (*p && *p != ',')
            p++;
        end = p;
        while (end > item && end[-1] == ' ')
            end--;
        len = (size_t)(end - item);

        colon = NULL;
        for (const char *q = item; q < end; q++)
            if (*q == ':')
                colon = q;
        if (item[0] != '[' && colon &&
            memchr(item, ':', (size_t)(colon - item)))
            colon = NULL; /* bare IPv6 without brackets */
        if (colon == NULL) {
            if (parse_port(item, len, &port) < 0)
                goto bad;
            host[0] = '*';
            host[1] = '\0';
        } else {
            const char *h = item, *he = colon;
            if (parse_port(colon + 1, (size_t)(end - colon - 1), &port) < 0)
                goto bad;
            if (*h == '[') {
                if (he[-1] != ']')
                    goto bad;
                h++;
                he--;
            }
            if ((size_t)(he - h) >= sizeof(host) || he == h)
                goto bad;
            memcpy(host, h, (size_t)(he - h));
            host[he - h] = '\0';
        }

        if (strcmp(host, "*") == 0) {
            struct in_addr any4 = {.s_addr = htonl(INADDR_ANY)};
            if (n + 2 > max)
                goto toomany;
            set_v4(&out[n++], &any4, port);
            set_v6(&out[n], &in6addr_any, port);
            out[n++].optional = 1;
        } else {
            struct in_addr a4;
            struct in6_addr a6;
            if (n + 1 > max)
                goto toomany;
            if (inet_pton(AF_INET, host, &a4) == 1)
                set_v4(&out[n++], &a4, port);
            else if (inet_pton(AF_INET6, host, &a6) == 1)
                set_v6(&out[n++], &a6, port);
            else
                goto bad;
        }
        continue;
    bad:
        snprintf(diag, diag_len,
                 "listen: cannot parse \"%.*s\" (want PORT, ADDR:PORT or "
                 "[ADDR6]:PORT)",
                 (int)len, item);
        return -1;
    toomany:
        snprintf(diag, diag_len, "listen: more than %zu addresses", max);
        return -1;
    }
    if (n == 0) {
        snprintf(diag, diag_len, "listen: no address given");
        return -1;
    }
    return (int)n;
}

int
listen_open(const struct listen_addr *addrs, int n, int backlog, int *fds,
            char *diag, size_t diag_len)
{
    int nfd = 0;

    for (int i = 0; i < n; i++) {
        const struct listen_addr *a = &addrs[i];
        int fd, one = 1;

        fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
        if (fd < 0) {
            if (a->optional && errno == EAFNOSUPPORT) {
                log_warn("IPv6 is not available; not listening on %s", a->text);
                continue;
            }
            snprintf(diag, diag_len, "socket() for %s failed: %s", a->text,
                     strerror(errno));
            goto fail;
        }
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            (a->ss.ss_family == AF_INET6 &&
             setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) <
                 0)) {
            snprintf(diag, diag_len, "setsockopt() for %s failed: %s", a->text,
                     strerror(errno));
            (void)close(fd);
            goto fail;
        }
        if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0) {
            int saved = errno;
            (void)close(fd);
            if (a->optional &&
                (saved == EADDRNOTAVAIL || saved == EAFNOSUPPORT)) {
                log_warn("IPv6 is not available; not listening on %s", a->text);
                continue;
            }
            snprintf(diag, diag_len, "bind() to %s failed: %s", a->text,
                     strerror(saved));
            goto fail;
        }
        if (listen(fd, backlog) < 0) {
            snprintf(diag, diag_len, "listen() on %s failed: %s", a->text,
                     strerror(errno));
            (void)close(fd);
            goto fail;
        }
        log_info("listening on %s", a->text);
        fds[nfd++] = fd;
    }
    if (nfd == 0) {
        snprintf(diag, diag_len, "no listening socket could be opened");
        return -1;
    }
    return nfd;
fail:
    while (nfd > 0)
        (void)close(fds[--nfd]);
    return -1;
}
