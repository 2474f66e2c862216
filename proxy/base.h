/* base.h: the few helpers every module uses: checked allocation, array sizes, time. */
#ifndef CERTGATE_BASE_H
#define CERTGATE_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CERTGATE_VERSION "0.1.0"
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* xmalloc, xcalloc, xrealloc and xstrdup abort on allocation failure: memory is bounded by
 * limits, not by error paths. xstrndup copies at most |len| bytes and terminates. */
void *xmalloc(size_t len);
void *xcalloc(size_t num, size_t len);
void *xrealloc(void *ptr, size_t len);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t len);

/* base_now_ms returns a monotonic clock in milliseconds. */
uint64_t base_now_ms(void);

#endif
