/* test_request_id.c: which client X-Request-Id values are kept, and the ids certgate makes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/message.h"

static void test_valid_ids(void **state)
{
    static const char *const good[] = {"a", "req-42.a_b:c", "0f8fad5b-d9cb-469f-a165-70867728950e",
                                       "AZaz09._:-"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(http_request_id_valid(good[i], strlen(good[i])));
    char longest[HTTP_REQUEST_ID_MAX + 1];
    memset(longest, 'x', sizeof(longest));
    assert_true(http_request_id_valid(longest, HTTP_REQUEST_ID_MAX));
    assert_false(http_request_id_valid(longest, HTTP_REQUEST_ID_MAX + 1));
}

static void test_invalid_ids(void **state)
{
    static const char *const bad[] = {"",    "a b", "a\"b",     "a\\b", "a,b",   "a;b",
                                      "a/b", "a=b", "\xc3\xa9", "a\tb", "a\x7f", "{\"x\":1}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(http_request_id_valid(bad[i], strlen(bad[i])));
    assert_false(http_request_id_valid("a\0b", 3));
    assert_false(http_request_id_valid("a\r\nb", 4));
}

static void test_new_ids(void **state)
{
    char a[HTTP_REQUEST_ID_NEW_LEN + 1], b[HTTP_REQUEST_ID_NEW_LEN + 1];
    assert_ptr_equal(http_new_request_id(a), a);
    http_new_request_id(b);
    assert_int_equal(strlen(a), HTTP_REQUEST_ID_NEW_LEN);
    assert_true(strspn(a, "0123456789abcdef") == HTTP_REQUEST_ID_NEW_LEN);
    assert_string_not_equal(a, b);
    assert_true(http_request_id_valid(a, strlen(a)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_ids),
        cmocka_unit_test(test_invalid_ids),
        cmocka_unit_test(test_new_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
