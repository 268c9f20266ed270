/*
 * buf.c - see buf.h.
 */
#include "buf.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

uint64_t buf_allocs;

#define OUTQ_IOV_MAX 64

void
bufpool_init(struct bufpool *p, uint32_t chunk_bytes, uint32_t max_free)
{
    p->free_list = NULL;
    p->chunk_bytes = chunk_bytes;
    p->nfree = 0;
    p->max_free = max_free;
}

void
bufpool_fini(struct bufpool *p)
{
    while (p->free_list) {
        struct chunk *c = p->free_list;
        p->free_list = c->next;
        free(c);
    }
    p->nfree = 0;
}

struct chunk *
bufpool_get(struct bufpool *p, size_t min_bytes)
{
    struct chunk *c;
    size_t cap = p->chunk_bytes;

    if (min_bytes <= cap && p->free_list) {
        c = p->free_list;
        p->free_list = c->next;
        p->nfree--;
    } else {
        if (min_bytes > cap)
            cap = min_bytes;
        if (cap > UINT32_MAX - sizeof(*c))
            return NULL;
        c = malloc(sizeof(*c) + cap);
        if (c == NULL)
            return NULL;
        buf_allocs++;
        c->cap = (uint32_t)cap;
    }
    c->next = NULL;
    c->start = c->end = 0;
    return c;
}

void
bufpool_put(struct bufpool *p, struct chunk **cp)
{
    struct chunk *c = *cp;

    if (c == NULL)
        return;
    *cp = NULL;
    if (c->cap != p->chunk_bytes || p->nfree >= p->max_free) {
        free(c);
        return;
    }
    c->next = p->free_list;
    p->free_list = c;
    p->nfree++;
}

void
outq_init(struct outq *q)
{
    q->head = q->tail = NULL;
    q->bytes = 0;
}

void
outq_clear(struct outq *q, struct bufpool *p)
{
    while (q->head) {
        struct chunk *c = q->head;
        q->head = c->next;
        bufpool_put(p, &c);
    }
    q->tail = NULL;
    q->bytes = 0;
}

char *
outq_reserve(struct outq *q, struct bufpool *p, size_t n)
{
    struct chunk *t = q->tail;

    if (t == NULL || t->cap - t->end < n) {
        struct chunk *c = bufpool_get(p, n);
        if (c == NULL)
            return NULL;
        if (t)
            t->next = c;
        else
            q->head = c;
        q->tail = t = c;
    }
    return t->data + t->end;
}

void
outq_commit(struct outq *q, size_t n)
{
    q->tail->end += (uint32_t)n;
    q->bytes += n;
}

int
outq_append(struct outq *q, struct bufpool *p, const void *data, size_t n)
{
    const char *s = data;

    while (n > 0) {
        struct chunk *t = q->tail;
        size_t room = t ? t->cap - t->end : 0, k;
        if (room == 0) {
            if (outq_reserve(q, p, p->chunk_bytes) == NULL)
                return -1;
            t = q->tail;
            room = t->cap - t->end;
        }
        k = n < room ? n : room;
        memcpy(t->data + t->end, s, k);
        t->end += (uint32_t)k;
        q->bytes += k;
        s += k;
        n -= k;
    }
    return 0;
}

ssize_t
outq_write(struct outq *q, int fd, struct bufpool *p)
{
    struct iovec iov[OUTQ_IOV_MAX];
    ssize_t total = 0;

    for (;;) {
        struct chunk *c;
        size_t offered = 0;
        int n = 0;
        ssize_t w;

        /* drop emptied chunks at the head */
        while (q->head && q->head->start == q->head->end) {
            struct chunk *h = q->head;
            q->head = h->next;
            if (q->head == NULL)
                q->tail = NULL;
            bufpool_put(p, &h);
        }
        if (q->head == NULL)
            return total;
        for (c = q->head; c && n < OUTQ_IOV_MAX; c = c->next) {
            if (c->end == c->start)
                continue;
            iov[n].iov_base = c->data + c->start;
            iov[n].iov_len = c->end - c->start;
            offered += iov[n].iov_len;
            n++;
        }
        w = n == 1 ? write(fd, iov[0].iov_base, iov[0].iov_len)
                   : writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (total > 0 && errno == EAGAIN)
                return total;
            return -1;
        }
        total += w;
        q->bytes -= (uint64_t)w;
        for (size_t left = (size_t)w; left > 0 && q->head;) {
            struct chunk *h = q->head;
            size_t avail = h->end - h->start;
            if (left < avail) {
                h->start += (uint32_t)left;
                break;
            }
            left -= avail;
            h->start = h->end;
            q->head = h->next;
            if (q->head == NULL)
                q->tail = NULL;
            bufpool_put(p, &h);
        }
        if ((size_t)w < offered)
            return total; /* the socket is full; q->bytes says what is left */
    }
}
