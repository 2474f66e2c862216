/* test_buf.c: the byte queue grows, compacts and frees itself when empty. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"

static void test_append_consume_frees(void **state)
{
    struct buf b = {0};
    buf_append(&b, "hello ", 6);
    buf_appendf(&b, "%s %d", "world", 42);
    assert_int_equal(buf_used(&b), 14);
    assert_memory_equal(buf_data(&b), "hello world 42", 14);
    buf_consume(&b, 6);
    assert_memory_equal(buf_data(&b), "world 42", 8);
    buf_consume(&b, 8);
    assert_null(b.base);
    assert_int_equal(buf_used(&b), 0);
}

static void test_large_appendf_and_growth(void **state)
{
    struct buf b = {0};
    char big[1000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    for (int i = 0; i < 100; i++)
        buf_appendf(&b, "%s", big);
    assert_int_equal(buf_used(&b), 99900);
    for (size_t i = 0; i < buf_used(&b); i++)
        assert_int_equal(buf_data(&b)[i], 'x');
    buf_free(&b);
}

static void test_compacts_instead_of_growing(void **state)
{
    struct buf b = {0};
    char block[3000] = {0};
    buf_append(&b, block, sizeof(block));
    size_t cap = b.cap;
    buf_consume(&b, 2000);
    buf_append(&b, block, 2000);
    assert_int_equal(b.cap, cap);
    assert_int_equal(buf_used(&b), 3000);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_consume_frees),
        cmocka_unit_test(test_large_appendf_and_growth),
        cmocka_unit_test(test_compacts_instead_of_growing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
