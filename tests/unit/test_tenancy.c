/* test_tenancy.c: SNI and Host names map to tenants the same way, whatever their case, port or
 * trailing dot (SECURITY 1: CVE-2022-23632 trailing dot, CVE-2026-53622 case). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/tenancy.h"

static const char *id_of(const char *name, bool is_host)
{
    static char id[TENANCY_MAX_ID + 1];
    char norm[TENANCY_MAX_NAME + 1];
    if (!tenancy_normalize(norm, name, strlen(name), is_host))
        return "<invalid>";
    if (!tenancy_match("{tenant}.example.com", norm, id))
        return "<none>";
    return id;
}

static void test_sni_forms(void **state)
{
    assert_string_equal(id_of("acme.example.com", false), "acme");
    assert_string_equal(id_of("ACME.Example.COM", false), "acme");
    assert_string_equal(id_of("acme.example.com.", false), "acme");
    assert_string_equal(id_of("a.b.example.com", false), "<none>"); /* not a single label */
    assert_string_equal(id_of(".example.com", false), "<none>");
    assert_string_equal(id_of("example.com", false), "<none>");
    assert_string_equal(id_of("acme.example.com..", false), "<none>");
    assert_string_equal(id_of("-x.example.com", false), "<none>");
    assert_string_equal(id_of("acme.example.org", false), "<none>");
    assert_string_equal(id_of("acme.example.com:443", false), "<none>");
}

static void test_host_forms(void **state)
{
    assert_string_equal(id_of("acme.example.com:8443", true), "acme");
    assert_string_equal(id_of("Acme.Example.Com.:8443", true), "acme");
    assert_string_equal(id_of("acme.example.com:", true), "acme");
    assert_string_equal(id_of("acme.example.com:84x", true), "<invalid>");
    assert_string_equal(id_of("[::1]:8443", true), "<none>");
    assert_string_equal(id_of("acme.example.com@evil", true), "<invalid>");
    assert_string_equal(id_of("", true), "<invalid>");
    assert_string_equal(id_of("acme.example.com:", true), "acme"); /* RFC 3986: empty port */
    assert_string_equal(id_of("acme.example.com:8x", true), "<invalid>");
    assert_string_equal(id_of("[::1]:x", true), "<invalid>");
    assert_string_equal(id_of("[::1]x", true), "<invalid>");
    assert_string_equal(id_of("[::1", true), "<invalid>");
}

static void test_ip_literals(void **state)
{
    assert_true(tenancy_is_ip_literal("127.0.0.1"));
    assert_true(tenancy_is_ip_literal("::1"));
    assert_false(tenancy_is_ip_literal("acme.example.com"));
}

static void test_prefix_pattern(void **state)
{
    char id[TENANCY_MAX_ID + 1];
    assert_true(tenancy_match("gw-{tenant}.lns.example.net", "gw-eu1.lns.example.net", id));
    assert_string_equal(id, "eu1");
    assert_false(tenancy_match("gw-{tenant}.lns.example.net", "eu1.lns.example.net", id));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sni_forms),
        cmocka_unit_test(test_host_forms),
        cmocka_unit_test(test_ip_literals),
        cmocka_unit_test(test_prefix_pattern),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
