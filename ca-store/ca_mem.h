/* ca_mem.h: checked allocation for the CA store library, which cannot use proxy/'s base.h. Like
 * the proxy's, it aborts on failure: memory is bounded by the store's size limits. */
#ifndef CERTGATE_CA_MEM_H
#define CERTGATE_CA_MEM_H

#include <stddef.h>

/* ca_mem_realloc and ca_mem_calloc are realloc and calloc that never return NULL (a size of 0
 * still gets a unique pointer). */
void *ca_mem_realloc(void *p, size_t n);
void *ca_mem_calloc(size_t n, size_t size);

/* ca_mem_strdup copies |s|; ca_mem_strndup copies |n| bytes of |s| and terminates them. */
char *ca_mem_strdup(const char *s);
char *ca_mem_strndup(const char *s, size_t n);

#endif
