/*
 * buf.h - byte chunks, per-worker free lists, and the output queue.
 *
 * A chunk is a header plus its bytes in one allocation.  Chunks of the
 * pool's standard size are recycled through a free list, so a worker in
 * steady state allocates nothing per request: an idle keep-alive connection
 * holds no chunk at all, a busy one borrows one for input while a request
 * is incomplete and one or more for output until the socket takes it.
 * Larger chunks (a big request body) are allocated for the occasion and
 * freed on return.
 *
 * The output queue (struct outq) is a list of chunks written with one
 * writev(2); responses are appended to its tail chunk.
 *
 * All of this is single-process, single-threaded: each worker has its own
 * pools.  buf_allocs counts calls to the underlying allocator, so a test can
 * check that a hot path allocates nothing.
 */
#ifndef APIARY_BUF_H
#define APIARY_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct chunk {
    struct chunk *next;
    uint32_t start; /* first unsent / unconsumed byte */
    uint32_t end;   /* one past the last valid byte */
    uint32_t cap;
    uint32_t pad;
    char data[];
};

struct bufpool {
    struct chunk *free_list;
    uint32_t chunk_bytes; /* standard capacity */
    uint32_t nfree;
    uint32_t max_free; /* beyond this, returned chunks are freed */
};

/* Calls made to malloc() by this module since start. */
extern uint64_t buf_allocs;

void bufpool_init(struct bufpool *p, uint32_t chunk_bytes, uint32_t max_free);
/* Frees every pooled chunk. */
void bufpool_fini(struct bufpool *p);

/*
 * Returns an empty chunk with cap >= min_bytes: a pooled one when min_bytes
 * fits the standard size, else a fresh allocation.  NULL when out of
 * memory.  The caller owns it until bufpool_put().
 */
struct chunk *bufpool_get(struct bufpool *p, size_t min_bytes);
/* Returns c to the pool (or frees it); sets *c to NULL. */
void bufpool_put(struct bufpool *p, struct chunk **c);

struct outq {
    struct chunk *head, *tail;
    uint64_t bytes; /* unsent bytes */
};

void outq_init(struct outq *q);
/* Returns every chunk to p. */
void outq_clear(struct outq *q, struct bufpool *p);

/*
 * Returns a pointer to n contiguous writable bytes at the tail, taking a
 * new chunk when the tail has less room.  n must be <= p->chunk_bytes.
 * NULL when out of memory.  Bytes count only after outq_commit().
 */
char *outq_reserve(struct outq *q, struct bufpool *p, size_t n);
void outq_commit(struct outq *q, size_t n);

/* Appends n bytes (any size, spanning chunks).  0, or -1 when out of memory. */
int outq_append(struct outq *q, struct bufpool *p, const void *data, size_t n);

/*
 * Writes as much as the socket takes with writev(2).  Fully written chunks
 * go back to p.  Returns the bytes written (0 if the queue was empty), or
 * -1 with errno set (EAGAIN when nothing could be written).
 */
ssize_t outq_write(struct outq *q, int fd, struct bufpool *p);

#endif
