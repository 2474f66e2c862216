/* test_reqhead.c: the forwarding policy on request heads: every spelling of the client-cert
 * family, '_' names (SECURITY 24, 25), forwarded_headers, strip_headers, and the request-target
 * forms of RFC 9112 3.2 (SECURITY 23). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/reqhead.h"

static enum reqhead_verdict classify(const struct listener_config *lc, const char *name)
{
    return reqhead_classify(lc, name, strlen(name));
}

static void test_family(void **state)
{
    static const char *const members[] = {
        "x-forwarded-client-cert",
        "X-Forwarded-Client-Cert",
        "client-cert",
        "Client-Cert-Chain",
        "x-ssl-client-cert",
        "ssl-client-cert",
        "x-ssl-cert",
        "X-Client-Verify",
        "x-client-dn",
        "X-ARR-ClientCert",
        "x-amzn-mtls-clientcert",
        "X-Amzn-Mtls-Clientcert-Leaf",
        "X-Forwarded-Tls-Client-Cert",
        "X-Forwarded-Tls-Client-Cert-Info",
        "X-SSL-Client-S-DN",
        "X-SSL-Client-Verify",
        "Cf-Client-Cert-Sha256",
        "x-client-tls-info",
        "Tls-Client-Id",
        "X_Forwarded_Tls_Client_Cert",
        "x-amzn-mtls-",
        "CLIENTCERT",
    };
    static const char *const others[] = {
        "x-client", "x-ssl",           "x-amzn-mtls", "x-amzn-trace-id", "client",
        "cert",     "x-client-ip",     "x-ssl-certs", "x-client-dnx",    "x-tls",
        "host",     "x-forwarded-for", "client-",
    };
    for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++)
        if (!reqhead_is_cc_family(members[i], strlen(members[i])))
            fail_msg("%s is a client-cert header", members[i]);
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
        if (reqhead_is_cc_family(others[i], strlen(others[i])))
            fail_msg("%s is not a client-cert header", others[i]);
    /* A NUL is not part of a name that matches. */
    assert_false(reqhead_is_cc_family("client\0cert", 11));
}

static void test_classify_defaults(void **state)
{
    struct listener_config lc = {0}; /* set, drop, no strip_headers: the defaults */
    assert_int_equal(classify(&lc, "X-Custom"), REQHEAD_FORWARD);
    assert_int_equal(classify(&lc, "X_Custom"), REQHEAD_DROP);
    assert_int_equal(classify(&lc, "Transfer_Encoding"), REQHEAD_REFUSE);
    assert_int_equal(classify(&lc, "content_length"), REQHEAD_REFUSE);
    assert_int_equal(classify(&lc, "CONTENT_length"), REQHEAD_REFUSE);
    assert_int_equal(classify(&lc, "Content-Length"), REQHEAD_FORWARD); /* http.c frames it */
    assert_int_equal(classify(&lc, "X_Forwarded_Client_Cert"), REQHEAD_REFUSE);
    assert_int_equal(classify(&lc, "x_amzn_mtls_clientcert"), REQHEAD_REFUSE);
    assert_int_equal(classify(&lc, "X-Forwarded-Client-Cert"), REQHEAD_CC);
    assert_int_equal(classify(&lc, "X-Forwarded-For"), REQHEAD_DROP);
    assert_int_equal(classify(&lc, "x-forwarded-proto"), REQHEAD_DROP);
    assert_int_equal(classify(&lc, "Forwarded"), REQHEAD_DROP);
    assert_int_equal(classify(&lc, "X_Forwarded_For"), REQHEAD_DROP);
    assert_int_equal(classify(&lc, "X-Forwarded-Host"), REQHEAD_FORWARD);
}

static void test_classify_modes(void **state)
{
    struct listener_config lc = {0};
    lc.headers_with_underscores = UNDERSCORES_FORWARD;
    assert_int_equal(classify(&lc, "X_Custom"), REQHEAD_FORWARD);
    assert_int_equal(classify(&lc, "Transfer_Encoding"), REQHEAD_REFUSE);
    assert_int_equal(classify(&lc, "Client_Cert"), REQHEAD_REFUSE);
    assert_int_equal(classify(&lc, "X_Forwarded_For"), REQHEAD_DROP); /* set writes its own */

    lc.forwarded_headers = FORWARDED_APPEND;
    assert_int_equal(classify(&lc, "x-forwarded-for"), REQHEAD_XFF_APPEND);
    assert_int_equal(classify(&lc, "X_Forwarded_For"), REQHEAD_DROP);
    assert_int_equal(classify(&lc, "X-Forwarded-Proto"), REQHEAD_DROP);
    assert_int_equal(classify(&lc, "Forwarded"), REQHEAD_FORWARD);

    lc.forwarded_headers = FORWARDED_OFF;
    assert_int_equal(classify(&lc, "X-Forwarded-For"), REQHEAD_FORWARD);
    assert_int_equal(classify(&lc, "X-Forwarded-Proto"), REQHEAD_FORWARD);
    assert_int_equal(classify(&lc, "X_Forwarded_For"), REQHEAD_FORWARD);
    lc.headers_with_underscores = UNDERSCORES_DROP;
    assert_int_equal(classify(&lc, "X_Forwarded_For"), REQHEAD_DROP);
}

static void test_strip_headers(void **state)
{
    char *names[] = {"x-site-identity", "x-internal-user"};
    struct listener_config lc = {0};
    lc.strip_headers.names = names;
    lc.strip_headers.num = 2;
    assert_int_equal(classify(&lc, "X-SITE-IDENTITY"), REQHEAD_DROP);
    assert_int_equal(classify(&lc, "x_internal_user"), REQHEAD_DROP);
    assert_int_equal(classify(&lc, "x-internal-users"), REQHEAD_FORWARD);
    assert_true(reqhead_is_stripped(&lc, "X-Internal-User", 15));
    assert_false(reqhead_is_stripped(&lc, "X-Internal-Use", 14));
}

/* Parses |url|: returns the forwarded request-target ("<authority>|<target>") or "400". */
static const char *target(const char *url, bool is_options)
{
    static char out[256];
    struct reqhead_target t;
    if (reqhead_target_parse(&t, url, strlen(url), is_options) != 0)
        return "400";
    snprintf(out, sizeof(out), "%.*s|%s%.*s", (int)t.authority_len, t.authority ? t.authority : "",
             t.add_slash ? "/" : "", (int)t.rest_len, t.rest);
    return out;
}

static void test_targets(void **state)
{
    assert_string_equal(target("/x?y=1", false), "|/x?y=1");
    assert_string_equal(target("*", true), "|*");
    assert_string_equal(target("*", false), "400");
    assert_string_equal(target("http://a.example.com/x?y", false), "a.example.com|/x?y");
    assert_string_equal(target("HTTPS://A.example.com:8443", false), "A.example.com:8443|/");
    assert_string_equal(target("http://a.example.com?q", false), "a.example.com|/?q");
    assert_string_equal(target("http://a.example.com", true), "a.example.com|*");
    assert_string_equal(target("http://a.example.com/", true), "a.example.com|/");
    assert_string_equal(target("http://[::1]:8443/x", false), "[::1]:8443|/x");
    assert_string_equal(target("http://a.example.com//x", false), "a.example.com|//x");
    static const char *const bad[] = {
        "",
        "/x#f",
        "http://a/x#f",
        "#",
        "http://u@a/x",
        "http://a@b/x",
        "http://u:p@a/",
        "ftp://a/x",
        "ws://a/",
        "httpx://a/",
        "http:/a/x",
        "http:a",
        "http:///x",
        "http://:80/",
        "http://a:8x/",
        "http://[::1]:x/",
        "http://[::1/",
        "a.example.com:443",
        "x",
        "http",
        "http://a b/",
        "http://a%2eb/",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (strcmp(target(bad[i], false), "400") != 0)
            fail_msg("\"%s\" is accepted as %s", bad[i], target(bad[i], false));
}

/* Every prefix of a target parses or fails without reading past its end (ASan build). */
static void test_prefixes(void **state)
{
    static const char url[] = "https://user@[::1]:8443/p/q?x=1#frag";
    for (size_t n = 0; n <= sizeof(url) - 1; n++) {
        char *copy = malloc(n ? n : 1);
        memcpy(copy, url, n);
        struct reqhead_target t;
        (void)reqhead_target_parse(&t, copy, n, false);
        (void)reqhead_target_parse(&t, copy, n, true);
        free(copy);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family),         cmocka_unit_test(test_classify_defaults),
        cmocka_unit_test(test_classify_modes), cmocka_unit_test(test_strip_headers),
        cmocka_unit_test(test_targets),        cmocka_unit_test(test_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
