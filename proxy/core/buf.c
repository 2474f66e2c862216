/* buf.c: the byte queue every connection direction uses. */
#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base.h"

char *buf_reserve(struct buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return b->base + b->len;
    size_t used = b->len - b->off;
    if (b->off > 0 && b->cap - used >= extra) {
        /* Moving the unread bytes down is cheaper than growing. */
        memmove(b->base, b->base + b->off, used);
    } else {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - used < extra)
            cap *= 2;
        char *base = xmalloc(cap);
        if (used > 0)
            memcpy(base, b->base + b->off, used);
        free(b->base);
        b->base = base;
        b->cap = cap;
    }
    b->off = 0;
    b->len = used;
    return b->base + b->len;
}

void buf_commit(struct buf *b, size_t n)
{
    b->len += n;
}

void buf_append(struct buf *b, const void *data, size_t len)
{
    if (len == 0)
        return;
    memcpy(buf_reserve(b, len), data, len);
    b->len += len;
}

void buf_appends(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_appendu(struct buf *b, unsigned long long v)
{
    char tmp[20];
    size_t n = sizeof(tmp);
    do {
        tmp[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    buf_append(b, tmp + n, sizeof(tmp) - n);
}

void buf_appendf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        buf_append(b, small, (size_t)n);
        return;
    }
    char *dst = buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(dst, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        buf_free(b);
}

void buf_free(struct buf *b)
{
    free(b->base);
    b->base = NULL;
    b->off = b->len = b->cap = 0;
}
