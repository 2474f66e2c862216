/* buf.h: a byte queue. Data lives in base[off, len); the memory is released as soon as the
 * queue is empty, so an idle connection holds no buffer at all. */
#ifndef CERTGATE_BUF_H
#define CERTGATE_BUF_H

#include <stddef.h>

struct buf {
    char *base;
    size_t off; /* first unread byte */
    size_t len; /* one past the last byte */
    size_t cap;
};

/* buf_used returns the number of queued bytes. */
static inline size_t buf_used(const struct buf *b)
{
    return b->len - b->off;
}

/* buf_data returns the first queued byte; for a buffer never written, an empty array rather than
 * NULL + 0 (undefined in C; clang's UBSan reports it) or NULL (which memcpy/memcmp may not get
 * even for 0 bytes). */
static inline char *buf_data(const struct buf *b)
{
    static char empty[1];
    return b->base != NULL ? b->base + b->off : empty;
}

/* buf_reserve makes room for |extra| more bytes and returns where they go. */
char *buf_reserve(struct buf *b, size_t extra);

/* buf_commit marks |n| bytes written after buf_reserve as queued. */
void buf_commit(struct buf *b, size_t n);

/* buf_append queues a copy of |len| bytes. */
void buf_append(struct buf *b, const void *data, size_t len);

/* buf_appends queues a NUL-terminated string (without the NUL). */
void buf_appends(struct buf *b, const char *s);

/* buf_appendu queues |v| in decimal (as "%llu", without printf's cost). */
void buf_appendu(struct buf *b, unsigned long long v);

/* buf_appendf queues printf-formatted text. */
void buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* buf_consume drops |n| queued bytes from the front; an emptied queue frees its memory. */
void buf_consume(struct buf *b, size_t n);

/* buf_free releases the memory; the queue is empty and reusable afterwards. */
void buf_free(struct buf *b);

#endif
