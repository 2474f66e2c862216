/* buf.c: the byte queue every connection direction uses. */
#include "core/buf.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base.h"

/* A buffer starts at BUF_FIRST_CAP bytes; socket reads reserve 16 KiB. Glibc's per-thread cache
 * stops at about 1 KiB, so every such block was an arena malloc and free, several per request
 * (an h2 request's header lists, its upstream's request head, each read): about 5 % of the CPU
 * of an h2 request (docs/benchmarks.md). Emptied blocks of these two sizes are kept per thread,
 * at most 32 and 8 of them (256 KiB), for the next buffer; an idle connection still holds none.
 * Not under AddressSanitizer, which is to see every free. */
#define BUF_FIRST_CAP 4096
#if defined(__SANITIZE_ADDRESS__)
#define BUF_SPARES 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BUF_SPARES 0
#endif
#endif
#ifndef BUF_SPARES
#define BUF_SPARES 1
#endif

#if BUF_SPARES
#define SPARE_SMALL 32 /* of BUF_FIRST_CAP */
#define SPARE_READ 8   /* of 4 * BUF_FIRST_CAP */
struct spares {
    unsigned small, read;
    bool registered;
    char *s[SPARE_SMALL], *r[SPARE_READ];
};
static _Thread_local struct spares spare;
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;

static void spare_drop(void *p)
{
    struct spares *sp = p;
    while (sp->small > 0)
        free(sp->s[--sp->small]);
    while (sp->read > 0)
        free(sp->r[--sp->read]);
}

static void spare_key_make(void)
{
    (void)pthread_key_create(&spare_key, spare_drop);
}

static char *block_take(size_t cap)
{
    if (cap == BUF_FIRST_CAP && spare.small > 0)
        return spare.s[--spare.small];
    if (cap == 4 * BUF_FIRST_CAP && spare.read > 0)
        return spare.r[--spare.read];
    return xmalloc(cap);
}

static void block_give(char *base, size_t cap)
{
    if (base == NULL)
        return;
    if (!spare.registered) { /* the thread's spares go when it exits */
        spare.registered = true;
        pthread_once(&spare_once, spare_key_make);
        (void)pthread_setspecific(spare_key, &spare);
    }
    if (cap == BUF_FIRST_CAP && spare.small < SPARE_SMALL)
        spare.s[spare.small++] = base;
    else if (cap == 4 * BUF_FIRST_CAP && spare.read < SPARE_READ)
        spare.r[spare.read++] = base;
    else
        free(base);
}
#else
static char *block_take(size_t cap)
{
    return xmalloc(cap);
}

static void block_give(char *base, size_t cap)
{
    (void)cap;
    free(base);
}
#endif

char *buf_reserve(struct buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return b->base + b->len;
    size_t used = b->len - b->off;
    if (b->off > 0 && b->cap - used >= extra) {
        /* Moving the unread bytes down is cheaper than growing. */
        memmove(b->base, b->base + b->off, used);
    } else {
        size_t cap = b->cap ? b->cap : BUF_FIRST_CAP;
        while (cap - used < extra)
            cap *= 2;
        char *base = block_take(cap);
        if (used > 0)
            memcpy(base, b->base + b->off, used);
        block_give(b->base, b->cap);
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
    char tmp[21];
    buf_append(b, tmp, base_utoa(v, tmp));
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
    block_give(b->base, b->cap);
    b->base = NULL;
    b->off = b->len = b->cap = 0;
}
