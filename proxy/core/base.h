/* base.h: the few helpers every module uses: checked allocation, array sizes, time. */
#ifndef CERTGATE_BASE_H
#define CERTGATE_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CERTGATE_VERSION "0.1.0"
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef MAX
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif

/* ASSERT_TRANSITION aborts on a state change the design does not allow: a bug, not input. */
#define ASSERT_TRANSITION(cond)                                                                    \
    do {                                                                                           \
        if (!(cond))                                                                               \
            base_bad_transition(__FILE__, __LINE__, #cond);                                        \
    } while (0)

/* base_bad_transition reports a broken state machine invariant and aborts. */
void base_bad_transition(const char *file, int line, const char *cond) __attribute__((noreturn));

/* xmalloc, xcalloc, xrealloc and xstrdup abort on allocation failure: memory is bounded by
 * limits, not by error paths. xstrndup copies at most |len| bytes and terminates. */
void *xmalloc(size_t len);
void *xcalloc(size_t num, size_t len);
void *xrealloc(void *ptr, size_t len);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t len);

/* base_join_path returns a new "dir/name", or a copy of |name| when it is absolute or |dir| is
 * NULL; the caller frees it. */
char *base_join_path(const char *dir, const char *name);

/* base_hex_digit returns the value of the hex digit |c| (either case), or -1. */
static inline int base_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* base_utoa writes |v| in decimal and a NUL into |out| (at least 21 bytes), as "%llu" would,
 * and returns the number of digits: per-request headers without snprintf. */
static inline size_t base_utoa(unsigned long long v, char *out)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return n;
}

/* base_now_ms returns a monotonic clock in milliseconds. */
uint64_t base_now_ms(void);

/* base_now_us returns the same monotonic clock in microseconds, for durations that are
 * measured rather than used as timeouts (a local request takes well under a millisecond). */
uint64_t base_now_us(void);

#endif
