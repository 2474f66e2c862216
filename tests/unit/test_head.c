/* test_head.c: the head scanner accepts what it should however the head is split, refuses
 * every line a smuggler could use, and stays linear when a head arrives a byte at a time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/head.h"

#define MAX_HEAD (64 * 1024)
#define MAX_FIELDS 100

/* Scans |p| as it grows |step| bytes at a time; returns the first non-zero result. */
static long scan_fields(const char *p, size_t len, size_t step, struct head_scan *hs,
                        unsigned max_fields)
{
    memset(hs, 0, sizeof(*hs));
    for (size_t have = step < len ? step : len;; have = have + step < len ? have + step : len) {
        long r = head_scan(hs, p, have, MAX_HEAD, max_fields);
        if (r != 0 || have == len)
            return r;
    }
}

static long scan_by(const char *p, size_t len, size_t step, struct head_scan *hs)
{
    return scan_fields(p, len, step, hs, MAX_FIELDS);
}

static void test_complete_head_every_step(void **state)
{
    (void)state;
    const char h[] = "GET /x HTTP/1.1\r\nHost: a\r\nX-A: b c\r\n\r\nBODY";
    size_t head_len = strlen(h) - 4;
    for (size_t step = 1; step <= strlen(h); step++) {
        struct head_scan hs;
        assert_int_equal(scan_by(h, strlen(h), step, &hs), (long)head_len);
    }
}

static void test_refused_lines(void **state)
{
    (void)state;
    static const char *bad[] = {
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", /* obs-fold */
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", /* bare CR */
        "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",      /* bare LF */
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",           /* "Name :" */
        "GET / HTTP/1.1\r\n: a\r\n\r\n",                /* empty name */
        "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (size_t step = 1; step <= strlen(bad[i]); step++) {
            struct head_scan hs;
            assert_int_equal(scan_by(bad[i], strlen(bad[i]), step, &hs), HEAD_BAD);
        }
    }
    const char nul[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
    struct head_scan hs;
    assert_int_equal(scan_by(nul, sizeof(nul) - 1, 1, &hs), HEAD_BAD);
}

static void test_limits(void **state)
{
    (void)state;
    size_t n = MAX_HEAD + 10;
    char *p = malloc(n);
    memset(p, 'a', n);
    memcpy(p, "GET /", 5);
    struct head_scan hs = {0};
    assert_int_equal(head_scan(&hs, p, n, MAX_HEAD, MAX_FIELDS), HEAD_LONG_LINE);
    free(p);

    char many[8192] = "GET / HTTP/1.1\r\n";
    for (int i = 0; i <= MAX_FIELDS + 1; i++)
        strcat(many, "X-A: b\r\n");
    strcat(many, "\r\n");
    memset(&hs, 0, sizeof(hs));
    assert_int_equal(head_scan(&hs, many, strlen(many), MAX_HEAD, MAX_FIELDS), HEAD_TOO_BIG);
}

/* A 60 KiB head a byte at a time: every byte searched once, every line checked once. The
 * scanner used to search the incomplete line again on every read (quadratic). */
static void test_linear_byte_at_a_time(void **state)
{
    (void)state;
    size_t value = 60 * 1024;
    const char *start = "GET / HTTP/1.1\r\nHost: a\r\nX-Long: ";
    size_t len = strlen(start) + value + 4;
    char *p = malloc(len);
    memcpy(p, start, strlen(start));
    memset(p + strlen(start), 'v', value);
    memcpy(p + len - 4, "\r\n\r\n", 4);
    struct head_scan hs;
    assert_int_equal(scan_by(p, len, 1, &hs), (long)len);
    assert_true(hs.scanned <= 2 * (uint64_t)len);

    /* Many short lines too. */
    char *q = malloc(len);
    size_t off = strlen("GET / HTTP/1.1\r\n");
    memcpy(q, "GET / HTTP/1.1\r\n", off);
    while (off + 8 + 2 <= len)
        off += (size_t)(memcpy(q + off, "X-A: bb\r\n", 9), 9);
    memcpy(q + off, "\r\n", 2);
    struct head_scan hs2;
    assert_int_equal(scan_fields(q, off + 2, 1, &hs2, 100000), (long)(off + 2));
    assert_true(hs2.scanned <= 2 * (uint64_t)(off + 2));
    free(p);
    free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_complete_head_every_step),
        cmocka_unit_test(test_refused_lines),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_linear_byte_at_a_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
