/* h2_mem.c: nghttp2's allocations, with the big ones on pages of their own (h2_mem.h). */
#include "h2/h2_mem.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/base.h"

#define H2_BIG_MIN 4096
#define H2_FRAMEBUF_LEN (9 + 1 + 16384) /* nghttp2's NGHTTP2_FRAMEBUF_CHUNKLEN */

static void *big_alloc(struct h2_mem *m, size_t n, bool scratch)
{
    if (n < H2_BIG_MIN)
        return malloc(n);
    for (size_t i = 0; i < H2_MEM_SLOTS; i++) {
        if (m->big[i].p != NULL)
            continue;
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t len = (n + page - 1) / page * page;
        void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        m->big[i].p = p;
        m->big[i].len = len;
        m->big[i].scratch = scratch;
        return p;
    }
    return malloc(n);
}

static int big_of(const struct h2_mem *m, const void *p)
{
    for (int i = 0; p != NULL && i < H2_MEM_SLOTS; i++)
        if (m->big[i].p == p)
            return i;
    return -1;
}

static void *mem_malloc(size_t n, void *user)
{
    return big_alloc(user, n, false);
}

static void mem_free(void *p, void *user)
{
    struct h2_mem *m = user;
    int i = big_of(m, p);
    if (i < 0) {
        free(p);
        return;
    }
    munmap(m->big[i].p, m->big[i].len);
    m->big[i].p = NULL;
    m->big[i].len = 0;
}

static void *mem_calloc(size_t num, size_t size, void *user)
{
    if (num * size < H2_BIG_MIN)
        return calloc(num, size);
    void *p = big_alloc(user, num * size, false); /* fresh pages are zero */
    if (p != NULL && big_of(user, p) < 0)
        memset(p, 0, num * size);
    return p;
}

static void *mem_realloc(void *p, size_t n, void *user)
{
    struct h2_mem *m = user;
    int i = big_of(m, p);
    if (i < 0 && n < H2_BIG_MIN)
        return realloc(p, n);
    /* nghttp2 allocates its frame buffer with realloc(NULL, H2_FRAMEBUF_LEN). */
    void *q = big_alloc(m, n, p == NULL && n == H2_FRAMEBUF_LEN);
    if (q != NULL && p != NULL) {
        size_t old = i >= 0 ? m->big[i].len : malloc_usable_size(p);
        memcpy(q, p, MIN(old, n));
        mem_free(p, user);
    }
    return q;
}

void h2_mem_init(struct h2_mem *m)
{
    memset(m, 0, sizeof(*m));
    m->mem = (nghttp2_mem){m, mem_malloc, mem_free, mem_calloc, mem_realloc};
}

void h2_mem_busy(struct h2_mem *m)
{
    m->trimmed = false;
}

void h2_mem_trim(struct h2_mem *m)
{
    if (m->trimmed)
        return;
    m->trimmed = true;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    static const char zero[64];
    for (size_t i = 0; i < H2_MEM_SLOTS; i++) {
        if (m->big[i].p == NULL)
            continue;
        if (m->big[i].scratch) {
            madvise(m->big[i].p, m->big[i].len, MADV_DONTNEED);
            continue;
        }
        for (size_t off = 0; off < m->big[i].len; off += page) {
            const char *pg = (const char *)m->big[i].p + off;
            size_t k = 0;
            while (k < page && memcmp(pg + k, zero, sizeof(zero)) == 0)
                k += sizeof(zero);
            if (k == page)
                madvise((void *)pg, page, MADV_DONTNEED);
        }
    }
}
