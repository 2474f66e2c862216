/* test_body.c: the body decoder gives the same result however its input is split, and rejects
 * every framing error a smuggler could use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/body.h"

/* Feeds |in| split at |split| (0: whole); returns the last result; |out| gets the output. */
static int feed_split(struct body *b, const char *in, size_t len, size_t split, struct buf *out,
                      size_t *left)
{
    struct buf q = {0};
    uint64_t count = 0;
    int r = 0;
    size_t first = split ? split : len;
    buf_append(&q, in, first);
    r = body_feed(b, &q, out, &count);
    if (r == 0 && first < len) {
        buf_append(&q, in + first, len - first);
        r = body_feed(b, &q, out, &count);
        *left = buf_used(&q);
    } else {
        *left = buf_used(&q) + (len - first); /* the body ended in the first part */
    }
    buf_free(&q);
    return r;
}

static void check_chunked(const char *in, int want, const char *want_out, size_t want_left)
{
    size_t len = strlen(in);
    for (size_t split = 0; split < len; split++) {
        struct body b;
        body_init(&b, BODY_CHUNKED, 0, false, 1024);
        struct buf out = {0};
        size_t left = 0;
        int r = feed_split(&b, in, len, split, &out, &left);
        assert_int_equal(r, want);
        if (want == 1) {
            assert_int_equal(buf_used(&out), strlen(want_out));
            assert_memory_equal(buf_data(&out), want_out, strlen(want_out));
            assert_int_equal(left, want_left);
        }
        buf_free(&out);
    }
}

static void test_chunked_ok(void **state)
{
    check_chunked("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 1, "hello world", 0);
    check_chunked("5;name=value\r\nhello\r\n0\r\nTrailer: x\r\n\r\nGET", 1, "hello", 3);
    check_chunked("A\r\n0123456789\r\n0\r\n\r\n", 1, "0123456789", 0);
}

static void test_chunked_bad(void **state)
{
    check_chunked("5\r\nhelloXX0\r\n\r\n", -1, NULL, 0);     /* missing CRLF after data */
    check_chunked("zz\r\nhello\r\n0\r\n\r\n", -1, NULL, 0);  /* bad size */
    check_chunked("10000000000000001\r\nx\r\n", -1, NULL, 0); /* 17 hex digits */
    check_chunked("5\nhello\n0\n\n", -1, NULL, 0);           /* bare LF */
    check_chunked(" 5\r\nhello\r\n0\r\n\r\n", -1, NULL, 0);  /* leading space */
    check_chunked("\r\nhello\r\n0\r\n\r\n", -1, NULL, 0);    /* no digits */
    check_chunked("0\r\nX: a\nb\r\n\r\n", -1, NULL, 0);      /* bare LF in a trailer */
}

static void test_chunk_extension_bounded(void **state)
{
    char big[BODY_MAX_CHUNK_EXT + 64];
    memset(big, 'e', sizeof(big));
    memcpy(big, "5;", 2);
    memcpy(big + sizeof(big) - 12, "\r\nhello\r\n0\r", 11);
    big[sizeof(big) - 1] = '\0';
    struct body b;
    body_init(&b, BODY_CHUNKED, 0, false, 1024);
    struct buf in = {0}, out = {0};
    uint64_t count = 0;
    buf_append(&in, big, strlen(big));
    assert_int_equal(body_feed(&b, &in, &out, &count), -1);
    buf_free(&in);
    buf_free(&out);
}

static void test_rechunk(void **state)
{
    struct body b;
    body_init(&b, BODY_CHUNKED, 0, true, 1024);
    struct buf in = {0}, out = {0};
    uint64_t count = 0;
    const char *msg = "3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n";
    buf_append(&in, msg, strlen(msg));
    assert_int_equal(body_feed(&b, &in, &out, &count), 1);
    const char *want = "3\r\nabc\r\n0\r\n\r\n"; /* extensions and trailers dropped */
    assert_int_equal(buf_used(&out), strlen(want));
    assert_memory_equal(buf_data(&out), want, strlen(want));
    assert_int_equal(count, 3);
    buf_free(&out);
}

static void test_length(void **state)
{
    struct body b;
    body_init(&b, BODY_LENGTH, 5, false, 0);
    struct buf in = {0}, out = {0};
    uint64_t count = 0;
    buf_append(&in, "hel", 3);
    assert_int_equal(body_feed(&b, &in, &out, &count), 0);
    buf_append(&in, "loGET /", 7);
    assert_int_equal(body_feed(&b, &in, &out, &count), 1);
    assert_int_equal(buf_used(&in), 5); /* the next request stays */
    assert_memory_equal(buf_data(&out), "hello", 5);
    buf_free(&in);
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked_ok),
        cmocka_unit_test(test_chunked_bad),
        cmocka_unit_test(test_chunk_extension_bounded),
        cmocka_unit_test(test_rechunk),
        cmocka_unit_test(test_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
