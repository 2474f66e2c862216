/* test_tls_anchor.c: the DNS-name rule applied under name constraints, and the inspection of
 * CA-store certificates that cannot issue client certificates, against certificates made by the
 * openssl CLI at test time; `certgate check`'s FILE:LINE warnings for a bundle. */
#include <openssl/is_boringssl.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tls/tls_anchor.h"

static char tmpdir[] = "/tmp/certgate-anchor-XXXXXX";

/* good: a CA; nocs: keyUsage without keyCertSign; nobc: no basicConstraints; leaf: CA:FALSE;
 * cski: a critical subjectKeyIdentifier. */
static const char gen_script[] =
    "set -e\n"
    "cd \"$1\"\n"
    "cat >x.cnf <<'EOF'\n"
    "[ req ]\n"
    "distinguished_name = dn\n"
    "[ dn ]\n"
    "[ good ]\n"
    "basicConstraints = critical,CA:true\n"
    "keyUsage = critical,keyCertSign\n"
    "[ nocs ]\n"
    "basicConstraints = critical,CA:true\n"
    "keyUsage = critical,cRLSign\n"
    "[ nobc ]\n"
    "keyUsage = critical,keyCertSign\n"
    "[ leaf ]\n"
    "basicConstraints = critical,CA:false\n"
    "[ cski ]\n"
    "basicConstraints = critical,CA:true\n"
    "keyUsage = critical,keyCertSign\n"
    "subjectKeyIdentifier = critical,hash\n"
    "EOF\n"
    "for n in good nocs nobc leaf cski; do\n"
    "  openssl req -x509 -config x.cnf -extensions $n -newkey ec "
    "-pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -keyout $n.key -out $n.pem -subj /CN=$n\n"
    "done\n"
    "mkdir -p store/common\n"
    "printf 'common:\\n- b.pem\\n' >store/index.yml\n"
    "{ echo '# two good, then three that cannot issue'; cat good.pem; cat good.pem; "
    "cat nocs.pem; cat nobc.pem; cat cski.pem; } >store/common/b.pem\n";

static int setup(void **state)
{
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    char script[sizeof(tmpdir) + 32];
    snprintf(script, sizeof(script), "%s/gen.sh", tmpdir);
    FILE *f = fopen(script, "w");
    if (f == NULL)
        return -1;
    fputs(gen_script, f);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "sh %s %s >/dev/null 2>&1", script, tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static X509 *load(const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s.pem", tmpdir, name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

static bool name_ok(const char *s, bool constraint)
{
    return tls_anchor_dns_name_ok((const uint8_t *)s, strlen(s), constraint);
}

static void test_dns_names(void **state)
{
    char label63[64], label64[65], long_name[300];
    memset(label63, 'a', 63);
    label63[63] = '\0';
    memset(label64, 'a', 64);
    label64[64] = '\0';
    assert_true(name_ok("foo.example.com", false));
    assert_true(name_ok("a-b.EXAMPLE.com", false));
    assert_true(name_ok("localhost", false));
    assert_true(name_ok(label63, false));
    assert_false(name_ok(label64, false));
    assert_false(name_ok("", false));
    assert_false(name_ok("*.example.com", false));
    assert_false(name_ok("foo.*.example.com", false));
    assert_false(name_ok("foo..example.com", false));
    assert_false(name_ok("foo.example.com.", false));
    assert_false(name_ok(".example.com", false));
    assert_false(name_ok("-foo.example.com", false));
    assert_false(name_ok("foo-.example.com", false));
    assert_false(name_ok("foo_x.example.com", false));
    assert_false(name_ok("foo example.com", false));
    assert_false(tls_anchor_dns_name_ok((const uint8_t *)"a\0b.com", 7, false));
    /* 253 bytes is the longest name, 254 is too long. */
    size_t n = 0;
    while (n + 64 <= 253) {
        memcpy(long_name + n, label63, 63);
        long_name[n + 63] = '.';
        n += 64;
    }
    memset(long_name + n, 'b', 253 - n);
    long_name[253] = '\0';
    assert_true(name_ok(long_name, false));
    long_name[253] = 'b';
    long_name[254] = '\0';
    assert_false(name_ok(long_name, false));
    /* Constraints may start with one dot. */
    assert_true(name_ok(".example.com", true));
    assert_true(name_ok("example.com", true));
    assert_false(name_ok("..example.com", true));
    assert_false(name_ok(".", true));
    assert_false(name_ok("*.example.com", true));
}

static void expect_problem(const char *name, const char *words)
{
    X509 *x = load(name);
    char why[256] = "";
    bool bad = tls_anchor_problem(x, true, why, sizeof(why));
    X509_free(x);
    if (words == NULL) {
        if (bad)
            fail_msg("%s: flagged: %s", name, why);
        return;
    }
    assert_true(bad);
    if (strstr(why, words) == NULL)
        fail_msg("%s: %s lacks %s", name, why, words);
}

static void test_anchor_problem(void **state)
{
    expect_problem("good", NULL);
    expect_problem("nocs", "keyCertSign");
    expect_problem("nobc", "basicConstraints");
    expect_problem("leaf", "CA:FALSE");
    expect_problem("cski", "critical");
}

static void test_check_store(void **state)
{
    char dir[128], out_path[128];
    snprintf(dir, sizeof(dir), "%s/store", tmpdir);
    snprintf(out_path, sizeof(out_path), "%s/out.txt", tmpdir);
    FILE *out = fopen(out_path, "w+");
    assert_non_null(out);
    assert_int_equal(tls_anchor_check_store(dir, out), 3);
    rewind(out);
    char text[4096] = "";
    size_t len = fread(text, 1, sizeof(text) - 1, out);
    text[len] = '\0';
    fclose(out);
    /* The warnings name the BEGIN line of each flagged block: find them in the file. */
    char bundle[160], line[256];
    snprintf(bundle, sizeof(bundle), "%s/common/b.pem", dir);
    FILE *b = fopen(bundle, "r");
    assert_non_null(b);
    size_t no = 0, begins[8], nb = 0;
    while (fgets(line, sizeof(line), b) != NULL) {
        no++;
        if (strncmp(line, "-----BEGIN CERTIFICATE-----", 27) == 0 && nb < 8)
            begins[nb++] = no;
    }
    fclose(b);
    assert_int_equal(nb, 5);
    for (size_t i = 2; i < 5; i++) {
        char want[200];
        snprintf(want, sizeof(want), "warning: %s:%zu: certificate \"CN=", bundle, begins[i]);
        if (strstr(text, want) == NULL)
            fail_msg("no \"%s\" in:\n%s", want, text);
    }
    assert_null(strstr(text, "CN=good"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dns_names),
        cmocka_unit_test(test_anchor_problem),
        cmocka_unit_test(test_check_store),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
