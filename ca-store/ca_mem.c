/* ca_mem.c: checked allocation for the CA store library. */
#include "ca_mem.h"

#include <stdlib.h>
#include <string.h>

void *ca_mem_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        abort();
    return q;
}

void *ca_mem_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        abort();
    return p;
}

char *ca_mem_strndup(const char *s, size_t n)
{
    char *d = ca_mem_realloc(NULL, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *ca_mem_strdup(const char *s)
{
    return ca_mem_strndup(s, strlen(s));
}
