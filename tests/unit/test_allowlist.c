/* test_allowlist.c: subjects compare as sets of attribute=value pairs (CONTRACT section 6), the
 * state file is parsed strictly with FILE:LINE:COL errors, and every change is written to it
 * before it takes effect. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tls/allowlist.h"

static char dir[] = "/tmp/test_allowlist.XXXXXX";

static char *canon(const char *subject)
{
    static char out[4096];
    char *c = NULL;
    if (allowlist_canon(subject, &c) != 0)
        return "<invalid>";
    snprintf(out, sizeof(out), "%s", c);
    free(c);
    return out;
}

static void same(const char *a, const char *b)
{
    char ca[4096];
    snprintf(ca, sizeof(ca), "%s", canon(a));
    assert_string_not_equal(ca, "<invalid>");
    assert_string_equal(ca, canon(b));
}

static void differ(const char *a, const char *b)
{
    char ca[4096];
    snprintf(ca, sizeof(ca), "%s", canon(a));
    assert_string_not_equal(ca, "<invalid>");
    assert_string_not_equal(canon(b), "<invalid>");
    assert_string_not_equal(ca, canon(b));
}

static void test_contract_example(void **state)
{
    same("CN=CordaOperator,C=GB,L=London,O=Org", "O=Org,L=London,C=GB,CN=CordaOperator");
    same("CN=CordaOperator,C=GB,L=London,O=Org", "cn=CordaOperator, c=GB, l=London, o=Org");
    same("CN=CordaOperator,C=GB,L=London,O=Org", "CN = CordaOperator, C = GB, L = London, O = Org");
}

static void test_forms(void **state)
{
    same("CN=a+O=b", "O=b,CN=a");                    /* multi-valued RDN */
    same("CN=a;O=b", "O=b,CN=a");                    /* RFC 2253's other separator */
    same("E=x@y.z,CN=a", "emailAddress=x@y.z,CN=a"); /* aliases */
    same("email=x@y.z,CN=a", "EMAILADDRESS=x@y.z,CN=a");
    same("S=Berlin,CN=a", "ST=Berlin,CN=a");
    same("2.5.4.3=a,2.5.4.10=b", "CN=a,O=b"); /* dotted OIDs */
    same("CN=a\\,b,O=c", "O=c,CN=\"a,b\"");   /* escaped and quoted comma */
    same("CN=caf\\C3\\A9", "CN=café");        /* \XX is a byte: UTF-8 either way */
    same("CN=a\\+b", "CN=\"a+b\"");
    same("CN=a,CN=a", "CN=a");    /* a repeated pair adds nothing */
    same("CN=a\\ ", "CN=\"a \""); /* an escaped trailing space stays */
    same("CN=a ", "CN=a");
    differ("CN=a", "CN=A"); /* values keep their case */
    differ("CN=a ,O=b", "CN=a\\ ,O=b");
    differ("CN=a,O=b", "CN=a");
    differ("CN=a,O=b", "CN=a+O=c");
    differ("CN=a\\,O=b", "CN=a,O=b"); /* an escaped comma is not a separator */
    differ("OU=x,CN=a", "O=x,CN=a");
}

static void test_no_injection(void **state)
{
    /* Whatever a value holds, it cannot turn into another pair of the canonical form. */
    differ("CN=a\\,o\\=b", "CN=a,O=b");
    differ("CN=a\\2Co\\3Db", "CN=a,O=b");
    differ("CN=\"a,o=b\"", "CN=a,O=b");
    char *c = NULL;
    assert_int_equal(allowlist_canon("CN=a\\0Ab", &c), 0);
    assert_null(strchr(c, '\n'));
    free(c);
}

/* A canonical form is a subject that canonicalises to itself (found by fuzz_allowlist: escaped
 * spaces at either end of a value, ';' and a leading '"' used to come out bare). */
static void test_canon_idempotent(void **state)
{
    const char *subjects[] = {"CN=a\\,b,O=x\\20,OU= y ,C=NL",
                              "CN=\\ a\\ ",
                              "CN=a\\;b",
                              "CN=\\\"q\\\"",
                              "CN=\" a b \"",
                              "CN=a\\2Bb=c"};
    for (size_t i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
        char once[4096];
        snprintf(once, sizeof(once), "%s", canon(subjects[i]));
        assert_string_not_equal(once, "<invalid>");
        assert_string_equal(canon(once), once);
    }
}

static void test_invalid(void **state)
{
    const char *bad[] = {"",       "   ",       "CN",    "=a",     "CN=a,",    "CN=a,,O=b",
                         "CN=\"a", "CN=\"a\"b", "C N=a", "CN=a\\", "/CN=a/O=b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *c = (char *)1;
        assert_int_equal(allowlist_canon(bad[i], &c), -EINVAL);
        assert_null(c);
    }
    char big[5000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "CN=", 3);
    char *c = NULL;
    assert_int_equal(allowlist_canon(big, &c), -EINVAL);
    /* Short enough as given, but its canonical form ("\\3D" for each '=') is not: refused,
     * since a canonical form must canonicalise again (found by fuzz_allowlist). */
    char eq[1600];
    memset(eq, '=', sizeof(eq) - 1);
    eq[sizeof(eq) - 1] = '\0';
    memcpy(eq, "CN=", 3);
    assert_int_equal(allowlist_canon(eq, &c), -EINVAL);
    assert_null(c);
    eq[1200] = '\0'; /* 3 + 1197 * 3 bytes canonical: allowed */
    assert_int_equal(allowlist_canon(eq, &c), 0);
    assert_int_equal(strlen(c), 3 + 1197 * 3);
    free(c);
}

static char *write_tmp(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static char *read_all(const char *path)
{
    static char data[8192];
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    size_t n = fread(data, 1, sizeof(data) - 1, f);
    data[n] = '\0';
    fclose(f);
    return data;
}

static bool allowed(const char *subject)
{
    char *c = NULL;
    assert_int_equal(allowlist_canon(subject, &c), 0);
    bool r = allowlist_contains(c);
    free(c);
    return r;
}

static void test_load(void **state)
{
    char err[512] = "";
    char *p = write_tmp("ok.json", " [\"CN=a,O=b\",\n  \"CN=caf\\u00e9\", \"O=b,CN=a\",\n"
                                   "\"CN=\\ud83d\\ude00\"]\n");
    assert_int_equal(allowlist_init(p, err, sizeof(err)), 0);
    assert_true(allowed("O=b,CN=a"));
    assert_true(allowed("CN=café"));
    assert_true(allowed("CN=\xf0\x9f\x98\x80"));
    assert_false(allowed("CN=a"));
    struct buf out = {0};
    allowlist_json(&out);
    buf_append(&out, "", 1);
    /* the duplicate spelling is dropped, the others kept as written */
    assert_string_equal(buf_data(&out), "[\"CN=a,O=b\",\"CN=café\",\"CN=\xf0\x9f\x98\x80\"]");
    buf_free(&out);
    /* missing file: empty */
    snprintf(err, sizeof(err), "x");
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/missing.json", dir);
    assert_int_equal(allowlist_init(missing, err, sizeof(err)), 0);
    assert_false(allowed("CN=a,O=b"));
}

static void load_error(const char *text, const char *want)
{
    char err[512] = "";
    char *p = write_tmp("bad.json", text);
    assert_int_equal(allowlist_init(p, err, sizeof(err)), -EINVAL);
    char full[600];
    snprintf(full, sizeof(full), "%s/bad.json:%s", dir, want);
    if (strncmp(err, full, strlen(full)) != 0)
        fail_msg("for %s: got \"%s\", want \"%s...\"", text, err, full);
}

static void test_load_errors(void **state)
{
    load_error("", "1:1: expected a JSON array");
    load_error("{}", "1:1: expected a JSON array");
    load_error("[\"CN=a\",\n 7]", "2:2: expected a subject string");
    load_error("[\"CN=a\"\n\"CN=b\"]", "2:1: expected ',' or ']'");
    load_error("[\n  \"not a dn\"]", "2:3: not a distinguished name");
    load_error("[\"CN=a", "1:2: unterminated string");
    load_error("[\"CN=\\x\"]", "1:6: bad escape");
    load_error("[\"CN=\\ud800\"]", "1:");
    load_error("[\"CN=a\"] x", "1:10: unexpected content");
    load_error("[\"CN=a\tb\"]", "1:7: control character");
}

static void test_add_remove_persist(void **state)
{
    char err[512] = "";
    char path[300];
    snprintf(path, sizeof(path), "%s/state.json", dir);
    unlink(path);
    assert_int_equal(allowlist_init(path, err, sizeof(err)), 0);
    uint64_t v0 = allowlist_version();
    assert_int_equal(allowlist_add("CN=CordaOperator,C=GB,L=London,O=Org", err, sizeof(err)), 0);
    assert_true(allowlist_version() != v0);
    assert_true(allowed("O=Org,L=London,C=GB,CN=CordaOperator"));
    assert_int_equal(allowlist_add("O=Org,L=London,C=GB,CN=CordaOperator", err, sizeof(err)), 1);
    assert_int_equal(allowlist_add("CN=\"quote\\\"d\",O=x", err, sizeof(err)), 0);
    assert_int_equal(allowlist_add("CN=not a dn,", err, sizeof(err)), -EINVAL);
    assert_int_equal(allowlist_add("CN=bad\x01", err, sizeof(err)), -EINVAL);
    assert_int_equal(allowlist_add("CN=bad\xff", err, sizeof(err)), -EINVAL);
    assert_string_equal(read_all(path), "[\n  \"CN=CordaOperator,C=GB,L=London,O=Org\",\n"
                                        "  \"CN=\\\"quote\\\\\\\"d\\\",O=x\"\n]\n");
    /* survives a restart */
    assert_int_equal(allowlist_init(path, err, sizeof(err)), 0);
    assert_true(allowed("CN=CordaOperator,O=Org,L=London,C=GB"));
    assert_true(allowed("O=x,CN=quote\\\"d"));
    assert_int_equal(allowlist_remove("cn=CordaOperator, o=Org, l=London, c=GB", err, sizeof(err)),
                     0);
    assert_false(allowed("CN=CordaOperator,C=GB,L=London,O=Org"));
    assert_int_equal(allowlist_remove("CN=CordaOperator,C=GB,L=London,O=Org", err, sizeof(err)),
                     -ENOENT);
    assert_string_equal(read_all(path), "[\n  \"CN=\\\"quote\\\\\\\"d\\\",O=x\"\n]\n");
    /* a failed write changes nothing */
    char gone[300];
    snprintf(gone, sizeof(gone), "%s/no-such-dir/state.json", dir);
    assert_int_equal(allowlist_init(gone, err, sizeof(err)), 0);
    assert_int_equal(allowlist_add("CN=x", err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "cannot write"));
    assert_false(allowed("CN=x"));
    /* no file configured */
    assert_int_equal(allowlist_init(NULL, err, sizeof(err)), 0);
    assert_int_equal(allowlist_add("CN=x", err, sizeof(err)), -ENOTSUP);
    allowlist_cleanup();
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contract_example), cmocka_unit_test(test_forms),
        cmocka_unit_test(test_no_injection),     cmocka_unit_test(test_canon_idempotent),
        cmocka_unit_test(test_invalid),          cmocka_unit_test(test_load),
        cmocka_unit_test(test_load_errors),      cmocka_unit_test(test_add_remove_persist),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        r = 1;
    return r;
}
