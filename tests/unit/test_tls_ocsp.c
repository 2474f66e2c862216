/* test_tls_ocsp.c: the OCSP codec against a PKI and responses made by the openssl CLI at test
 * time (openssl ocsp -index answers the requests tls_ocsp_request builds): statuses, issuer and
 * delegated signers, every refusal, the AIA URL, and every truncation and byte flip of a real
 * response, which must give an error or a result and never a crash. */
#include <openssl/is_boringssl.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tls/tls_ocsp.h"

static char tmpdir[] = "/tmp/certgate-ocsp-XXXXXX";

/* The PKI: an EC root, an EC and an RSA intermediate, leaves, and three would-be responders
 * (a proper delegate, one without the OCSPSigning EKU, one issued by the root instead). */
static const char gen_script[] =
    "set -e\n"
    "cd \"$1\"\n"
    "ec='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'\n"
    "rsa='-newkey rsa:2048 -nodes'\n"
    "cat > ext.cnf <<'EOF'\n"
    "[ca]\n"
    "basicConstraints=critical,CA:TRUE\n"
    "keyUsage=critical,keyCertSign,cRLSign\n"
    "[leaf]\n"
    "basicConstraints=CA:FALSE\n"
    "extendedKeyUsage=clientAuth\n"
    "authorityInfoAccess=caIssuers;URI:http://127.0.0.1:8888/ca.crt,"
    "OCSP;URI:http://127.0.0.1:8888/ocsp\n"
    "[leaf_https]\n"
    "basicConstraints=CA:FALSE\n"
    "authorityInfoAccess=OCSP;URI:https://127.0.0.1:8443/ocsp,caIssuers;URI:http://x/ca.crt\n"
    "[leaf_plain]\n"
    "basicConstraints=CA:FALSE\n"
    "[resp]\n"
    "basicConstraints=CA:FALSE\n"
    "keyUsage=critical,digitalSignature\n"
    "extendedKeyUsage=OCSPSigning\n"
    "[noeku]\n"
    "basicConstraints=CA:FALSE\n"
    "keyUsage=critical,digitalSignature\n"
    "extendedKeyUsage=clientAuth\n"
    "EOF\n"
    "openssl req -x509 $ec -keyout root.key -out root.crt -days 30 -subj '/CN=Test Root' \\\n"
    "  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign "
    "2>/dev/null\n"
    "sign() {\n"
    "  openssl req -new $2 -keyout $1.key -out $1.csr -subj \"$6\" 2>/dev/null\n"
    "  openssl x509 -req -in $1.csr -CA $3.crt -CAkey $3.key -set_serial $5 -days $7 \\\n"
    "    -extfile ext.cnf -extensions $4 -out $1.crt 2>/dev/null\n"
    "}\n"
    "sign int \"$ec\" root ca 0x10 '/CN=Test EC Intermediate' 30\n"
    "sign rint \"$rsa\" root ca 0x11 '/CN=Test RSA Intermediate' 30\n"
    "sign good \"$ec\" int leaf 0x1001 '/CN=good' 30\n"
    "sign revoked \"$ec\" int leaf 0x1002 '/CN=revoked' 30\n"
    "sign unlisted \"$ec\" int leaf 0x1003 '/CN=unlisted' 30\n"
    "sign https \"$ec\" int leaf_https 0x1004 '/CN=https' 30\n"
    "sign plain \"$ec\" int leaf_plain 0x1005 '/CN=plain' 30\n"
    "sign rgood \"$ec\" rint leaf 0x2001 '/CN=rsa good' 30\n"
    "sign resp \"$ec\" int resp 0x3001 '/CN=Test OCSP Responder' 2\n"
    "sign noeku \"$ec\" int noeku 0x3002 '/CN=No EKU Responder' 30\n"
    "sign rogue \"$ec\" root resp 0x3003 '/CN=Rogue Responder' 30\n"
    "printf 'V\\t301231235959Z\\t\\t1001\\tunknown\\t/CN=good\\n"
    "R\\t301231235959Z\\t240101000000Z,keyCompromise\\t1002\\tunknown\\t/CN=revoked\\n'"
    " > index.txt\n"
    "printf 'V\\t301231235959Z\\t\\t2001\\tunknown\\t/CN=rsa good\\n' > rindex.txt\n";

static X509 *load(const char *name)
{
    char path[256];
    FILE *f;
    X509 *x;

    snprintf(path, sizeof(path), "%s/%s.crt", tmpdir, name);
    f = fopen(path, "r");
    assert_non_null(f);
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
    char cmd[2048];
    int n;
    va_list ap;

    n = snprintf(cmd, sizeof(cmd), "cd %s && ", tmpdir);
    va_start(ap, fmt);
    vsnprintf(cmd + n, sizeof(cmd) - (size_t)n, fmt, ap);
    va_end(ap);
    return system(cmd);
}

static uint8_t *slurp(const char *name, size_t *len)
{
    char path[256];
    uint8_t *buf = malloc(1 << 20);
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_non_null(buf);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static void spit(const char *name, const uint8_t *buf, size_t len)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
}

/* request writes tls_ocsp_request's DER for |leaf| to |out| and checks openssl parses it. */
static void request(const char *leaf, const char *issuer, const char *out)
{
    X509 *l = load(leaf), *i = load(issuer);
    uint8_t *der = NULL;
    size_t len = 0;

    assert_int_equal(tls_ocsp_request(l, i, &der, &len), 0);
    assert_true(len > 0);
    spit(out, der, len);
    assert_int_equal(sh("openssl ocsp -reqin %s -req_text -noverify > %s.txt 2>&1", out, out), 0);
    OPENSSL_free(der);
    X509_free(l);
    X509_free(i);
}

/* respond runs openssl's responder over the request |req| with index |index|. */
static void respond(const char *req, const char *index, const char *ca, const char *signer,
                    const char *extra, const char *out)
{
    assert_int_equal(sh("openssl ocsp -index %s -CA %s.crt -rsigner %s.crt -rkey %s.key "
                        "-reqin %s -respout %s -ndays 1 %s >/dev/null 2>&1",
                        index, ca, signer, signer, req, out, extra),
                     0);
}

/* check runs tls_ocsp_check on the file |resp| for |leaf| under |issuer| at now + |skew|. */
static int check(const char *resp, const char *leaf, const char *issuer, int64_t skew,
                 struct tls_ocsp_result *res, char *err, size_t err_len)
{
    X509 *l = load(leaf), *i = load(issuer);
    size_t len;
    uint8_t *der = slurp(resp, &len);
    int rc = tls_ocsp_check(der, len, l, i, (int64_t)time(NULL) + skew, res, err, err_len);

    free(der);
    X509_free(l);
    X509_free(i);
    return rc;
}

static void expect_error(const char *resp, const char *leaf, const char *issuer, int64_t skew,
                         const char *needle)
{
    struct tls_ocsp_result res;
    char err[256] = "";

    assert_int_equal(check(resp, leaf, issuer, skew, &res, err, sizeof(err)), -EBADMSG);
    if (strstr(err, needle) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, needle);
}

static int group_setup(void **state)
{
    char cmd[512], path[256];
    FILE *f;

    if (mkdtemp(tmpdir) == NULL)
        return -1;
    /* The script goes through a file: it holds quotes that a command line would mangle. */
    snprintf(path, sizeof(path), "%s/gen.sh", tmpdir);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs(gen_script, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "sh %s %s", path, tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_request_parsed_by_openssl(void **state)
{
    size_t len;
    uint8_t *txt;

    request("good", "int", "req-good.der");
    txt = slurp("req-good.der.txt", &len);
    txt[len] = '\0';
    assert_non_null(strstr((char *)txt, "Hash Algorithm: sha1"));
    assert_non_null(strstr((char *)txt, "Serial Number: 1001"));
    free(txt);
}

static void test_good_issuer_signed(void **state)
{
    struct tls_ocsp_result res;
    char err[256] = "";
    int64_t now = time(NULL);

    request("good", "int", "req-good.der");
    respond("req-good.der", "index.txt", "int", "int", "", "good-int.der");
    assert_int_equal(check("good-int.der", "good", "int", 0, &res, err, sizeof(err)), 0);
    assert_int_equal(res.status, TLS_OCSP_GOOD);
    assert_true(res.this_update > now - 60 && res.this_update <= now + 1);
    assert_int_equal(res.next_update - res.this_update, 86400);
    /* By key instead of by name, and without the certificate list. */
    respond("req-good.der", "index.txt", "int", "int", "-resp_key_id -resp_no_certs",
            "good-int-keyid.der");
    assert_int_equal(check("good-int-keyid.der", "good", "int", 0, &res, err, sizeof(err)), 0);
    assert_int_equal(res.status, TLS_OCSP_GOOD);
}

static void test_revoked(void **state)
{
    struct tls_ocsp_result res;
    char err[256] = "";

    request("revoked", "int", "req-revoked.der");
    respond("req-revoked.der", "index.txt", "int", "resp", "", "revoked-resp.der");
    assert_int_equal(check("revoked-resp.der", "revoked", "int", 0, &res, err, sizeof(err)), 0);
    assert_int_equal(res.status, TLS_OCSP_REVOKED);
    assert_int_equal(res.revoked_at, 1704067200); /* 2024-01-01T00:00:00Z */
}

static void test_unknown_serial(void **state)
{
    struct tls_ocsp_result res;
    char err[256] = "";

    request("unlisted", "int", "req-unlisted.der");
    respond("req-unlisted.der", "index.txt", "int", "int", "", "unlisted.der");
    assert_int_equal(check("unlisted.der", "unlisted", "int", 0, &res, err, sizeof(err)), 0);
    assert_int_equal(res.status, TLS_OCSP_UNKNOWN);
}

static void test_delegated_responder(void **state)
{
    struct tls_ocsp_result res;
    char err[256] = "";

    request("good", "int", "req-good.der");
    respond("req-good.der", "index.txt", "int", "resp", "", "good-resp.der");
    assert_int_equal(check("good-resp.der", "good", "int", 0, &res, err, sizeof(err)), 0);
    assert_int_equal(res.status, TLS_OCSP_GOOD);
    respond("req-good.der", "index.txt", "int", "resp", "-resp_key_id", "good-resp-keyid.der");
    assert_int_equal(check("good-resp-keyid.der", "good", "int", 0, &res, err, sizeof(err)), 0);
    /* The delegate's own certificate (2 days) must cover |now|; the response must not be
     * stale either, but the responder is judged first. */
    expect_error("good-resp.der", "good", "int", 5 * 86400, "outside its validity period");
    /* Without its certificate in the response, the delegate cannot be identified. */
    respond("req-good.der", "index.txt", "int", "resp", "-resp_no_certs", "good-resp-nocert.der");
    expect_error("good-resp-nocert.der", "good", "int", 0, "ResponderID matches neither");
}

static void test_rogue_responders(void **state)
{
    request("good", "int", "req-good.der");
    respond("req-good.der", "index.txt", "int", "rogue", "", "good-rogue.der");
    expect_error("good-rogue.der", "good", "int", 0, "not issued by the certificate's issuer");
    respond("req-good.der", "index.txt", "int", "noeku", "", "good-noeku.der");
    expect_error("good-noeku.der", "good", "int", 0, "lacks EKU OCSPSigning");
    /* The root signing for the intermediate's leaf: not the issuer, not delegated. */
    respond("req-good.der", "index.txt", "int", "root", "", "good-root.der");
    expect_error("good-root.der", "good", "int", 0, "not issued by the certificate's issuer");
}

static void test_other_certificate(void **state)
{
    request("good", "int", "req-good.der");
    respond("req-good.der", "index.txt", "int", "int", "", "good-int.der");
    expect_error("good-int.der", "revoked", "int", 0, "does not cover the certificate");
    /* Under the wrong issuer: the included intermediate is no delegate of rint. */
    expect_error("good-int.der", "good", "rint", 0, "not issued by the certificate's issuer");
}

static void test_tampered(void **state)
{
    size_t len;
    uint8_t *der;
    struct tls_ocsp_result res;
    X509 *leaf = load("good"), *issuer = load("int");
    char err[256] = "";

    request("good", "int", "req-good.der");
    respond("req-good.der", "index.txt", "int", "int", "-resp_no_certs", "good-int-nocert.der");
    der = slurp("good-int-nocert.der", &len);
    der[len - 1] ^= 0x01; /* the last byte of the signature's s */
    assert_int_equal(tls_ocsp_check(der, len, leaf, issuer, time(NULL), &res, err, sizeof(err)),
                     -EBADMSG);
    assert_string_equal(err, "OCSP response signature does not verify");
    free(der);
    /* A delegated response, one byte of tbsResponseData changed (inside producedAt). */
    respond("req-good.der", "index.txt", "int", "resp", "", "good-resp.der");
    der = slurp("good-resp.der", &len);
    uint8_t *t = memmem(der, len, "\x18\x0f", 2);
    assert_non_null(t);
    t[5] ^= 0x01;
    assert_int_equal(tls_ocsp_check(der, len, leaf, issuer, time(NULL), &res, err, sizeof(err)),
                     -EBADMSG);
    assert_string_equal(err, "OCSP response signature does not verify");
    free(der);
    X509_free(leaf);
    X509_free(issuer);
}

static void test_times(void **state)
{
    request("good", "int", "req-good.der");
    respond("req-good.der", "index.txt", "int", "int", "", "good-int.der");
    expect_error("good-int.der", "good", "int", 3 * 86400, "OCSP response is stale: nextUpdate 20");
    expect_error("good-int.der", "good", "int", -3600, "not yet valid: thisUpdate 20");
}

static void test_responder_status(void **state)
{
    static const uint8_t unauthorized[] = {0x30, 0x03, 0x0a, 0x01, 0x06};
    static const uint8_t try_later[] = {0x30, 0x03, 0x0a, 0x01, 0x03};
    struct tls_ocsp_result res;
    X509 *leaf = load("good"), *issuer = load("int");
    char err[256] = "";

    assert_int_equal(tls_ocsp_check(unauthorized, sizeof(unauthorized), leaf, issuer, time(NULL),
                                    &res, err, sizeof(err)),
                     -EBADMSG);
    assert_string_equal(err, "OCSP responder status 6 (unauthorized)");
    assert_int_equal(
        tls_ocsp_check(try_later, sizeof(try_later), leaf, issuer, time(NULL), &res, NULL, 0),
        -EBADMSG);
    assert_int_equal(tls_ocsp_check(NULL, 0, leaf, issuer, time(NULL), &res, err, sizeof(err)),
                     -EBADMSG);
    X509_free(leaf);
    X509_free(issuer);
}

static void test_rsa_issuer(void **state)
{
    struct tls_ocsp_result res;
    char err[256] = "";

    request("rgood", "rint", "req-rgood.der");
    respond("req-rgood.der", "rindex.txt", "rint", "rint", "", "rgood.der");
    assert_int_equal(check("rgood.der", "rgood", "rint", 0, &res, err, sizeof(err)), 0);
    assert_int_equal(res.status, TLS_OCSP_GOOD);
    respond("req-rgood.der", "rindex.txt", "rint", "rint", "-rmd sha1", "rgood-sha1.der");
    assert_int_equal(check("rgood-sha1.der", "rgood", "rint", 0, &res, err, sizeof(err)), 0);
}

static void test_sha256_and_several_responses(void **state)
{
    struct tls_ocsp_result res;
    char err[256] = "";

    assert_int_equal(sh("openssl ocsp -sha256 -issuer int.crt -cert good.crt -cert revoked.crt "
                        "-cert unlisted.crt -no_nonce -reqout req-3.der"),
                     0);
    respond("req-3.der", "index.txt", "int", "resp", "", "three.der");
    assert_int_equal(check("three.der", "good", "int", 0, &res, err, sizeof(err)), 0);
    assert_int_equal(res.status, TLS_OCSP_GOOD);
    assert_int_equal(check("three.der", "revoked", "int", 0, &res, err, sizeof(err)), 0);
    assert_int_equal(res.status, TLS_OCSP_REVOKED);
    assert_int_equal(check("three.der", "unlisted", "int", 0, &res, err, sizeof(err)), 0);
    assert_int_equal(res.status, TLS_OCSP_UNKNOWN);
    expect_error("three.der", "plain", "int", 0, "does not cover the certificate");
}

static void test_url(void **state)
{
    X509 *good = load("good"), *https = load("https"), *plain = load("plain");
    char *url = tls_ocsp_url(good);

    assert_non_null(url);
    assert_string_equal(url, "http://127.0.0.1:8888/ocsp");
    free(url);
    assert_null(tls_ocsp_url(https));
    assert_null(tls_ocsp_url(plain));
    assert_null(tls_ocsp_url(NULL));
    X509_free(good);
    X509_free(https);
    X509_free(plain);
}

/* Every truncation must fail; every single-byte change and a run of random multi-byte changes
 * must give an error or a well-formed result, never a crash (ASan build runs this too). */
static void mutate_all(const char *resp, const char *leaf_name, const char *issuer_name)
{
    size_t len;
    uint8_t *orig = slurp(resp, &len), *buf = malloc(len);
    X509 *leaf = load(leaf_name), *issuer = load(issuer_name);
    struct tls_ocsp_result res;
    int64_t now = time(NULL);
    char err[256];
    static const uint8_t flips[] = {0x01, 0x80, 0xff};
    unsigned seed = 12345;
    int accepted = 0;

    assert_non_null(buf);
    assert_int_equal(tls_ocsp_check(orig, len, leaf, issuer, now, &res, err, sizeof(err)), 0);
    for (size_t cut = 0; cut < len; cut++) {
        memcpy(buf, orig, cut);
        assert_int_equal(tls_ocsp_check(buf, cut, leaf, issuer, now, &res, err, sizeof(err)),
                         -EBADMSG);
    }
    for (size_t i = 0; i < len; i++) {
        for (size_t f = 0; f < sizeof(flips); f++) {
            int rc;

            memcpy(buf, orig, len);
            buf[i] ^= flips[f];
            rc = tls_ocsp_check(buf, len, leaf, issuer, now, &res, err, sizeof(err));
            assert_true(rc == 0 || rc == -EBADMSG);
            if (rc == 0) {
                assert_true(res.status == TLS_OCSP_GOOD);
                accepted++;
            } else {
                assert_true(strlen(err) > 0);
            }
        }
    }
    for (int n = 0; n < 3000; n++) {
        memcpy(buf, orig, len);
        for (int k = 0; k < 4; k++)
            buf[rand_r(&seed) % len] = (uint8_t)rand_r(&seed);
        int rc = tls_ocsp_check(buf, len, leaf, issuer, now, &res, err, sizeof(err));
        assert_true(rc == 0 || rc == -EBADMSG);
    }
    print_message("%s: %zu bytes, %d single-byte mutations still accepted\n", resp, len, accepted);
    free(orig);
    free(buf);
    X509_free(leaf);
    X509_free(issuer);
}

static void test_mutations(void **state)
{
    request("good", "int", "req-good.der");
    respond("req-good.der", "index.txt", "int", "resp", "", "good-resp.der");
    mutate_all("good-resp.der", "good", "int");
    request("rgood", "rint", "req-rgood.der");
    respond("req-rgood.der", "rindex.txt", "rint", "rint", "-resp_no_certs", "rgood-nocert.der");
    mutate_all("rgood-nocert.der", "rgood", "rint");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_parsed_by_openssl),
        cmocka_unit_test(test_good_issuer_signed),
        cmocka_unit_test(test_revoked),
        cmocka_unit_test(test_unknown_serial),
        cmocka_unit_test(test_delegated_responder),
        cmocka_unit_test(test_rogue_responders),
        cmocka_unit_test(test_other_certificate),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_responder_status),
        cmocka_unit_test(test_rsa_issuer),
        cmocka_unit_test(test_sha256_and_several_responses),
        cmocka_unit_test(test_url),
        cmocka_unit_test(test_mutations),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
