/* base.c: allocation that aborts on failure, and the clock. */
#include "core/base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void oom(void)
{
    fputs("certgate: out of memory\n", stderr);
    abort();
}

void *xmalloc(size_t len)
{
    void *p = malloc(len ? len : 1);
    if (p == NULL)
        oom();
    return p;
}

void *xcalloc(size_t num, size_t len)
{
    /* Glibc's calloc never takes from the per-thread cache that malloc uses for blocks up to
     * about 1 KiB, and certgate callocs a few of those per request (an h2 stream, its upstream
     * side, nghttp2's header arrays): malloc and memset for them. */
    size_t total;
    if (num != 0 && len != 0 && !__builtin_mul_overflow(num, len, &total) && total <= 1024) {
        void *small = malloc(total);
        if (small == NULL)
            oom();
        return memset(small, 0, total);
    }
    void *p = calloc(num ? num : 1, len ? len : 1);
    if (p == NULL)
        oom();
    return p;
}

void *xrealloc(void *ptr, size_t len)
{
    void *p = realloc(ptr, len ? len : 1);
    if (p == NULL)
        oom();
    return p;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t len)
{
    char *p = xmalloc(len + 1);
    if (len > 0)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *base_join_path(const char *dir, const char *name)
{
    if (name[0] == '/' || dir == NULL)
        return xstrdup(name);
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

uint64_t base_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t base_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void base_bad_transition(const char *file, int line, const char *cond)
{
    fprintf(stderr, "certgate: %s:%d: state transition not allowed: %s\n", file, line, cond);
    abort();
}
