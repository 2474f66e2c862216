/* test_xfcc.c: the forwarded client-certificate values against certificates made by the openssl
 * CLI at test time: Envoy's exact bytes for an ordinary certificate, hostile subjects and SANs
 * that must not add keys or elements, RFC 9440 and nginx's escaped PEM, and the name predicate. */
#include <openssl/is_boringssl.h>

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/base64.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "../fuzz/xfcc_reparse.h"
#include "core/buf.h"
#include "core/config.h"
#include "http/xfcc.h"

#define ALL_DETAILS                                                                                \
    (CC_DETAIL_CERT | CC_DETAIL_CHAIN | CC_DETAIL_SUBJECT | CC_DETAIL_URI | CC_DETAIL_DNS)

static char tmpdir[] = "/tmp/certgate-xfcc-XXXXXX";

/* The certificates: openssl CLI only, no keys kept beyond the temporary directory. */
static const char gen_script[] =
    "set -e\n"
    "cd \"$1\"\n"
    "ec='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'\n"
    "openssl req -x509 $ec -keyout ord.key -days 2 -out ord.pem \\\n"
    "  -subj '/C=NL/O=Acme/CN=0102030405060708' \\\n"
    "  -addext 'subjectAltName=URI:spiffe://acme.test/ns/default/sa/client,"
    "DNS:client.acme.test,DNS:alt.acme.test'\n"
    "openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa.key -days 2 -out rsa.pem \\\n"
    "  -subj '/CN=plain rsa/O=Example Org'\n"
    "openssl req -x509 $ec -keyout multi.key -days 2 -out multi.pem -multivalue-rdn \\\n"
    "  -subj '/CN=a+serialNumber=1/O=x\\, y/OU=#hash'\n"
    "openssl req -x509 $ec -keyout acme.key -days 2 -out acme.pem -utf8 \\\n"
    "  -subj '/O=Acme\\, Inc./CN=M\xc3\xbcller \xe2\x82\xac' \\\n"
    "  -addext 'subjectAltName=URI:spiffe://acme.test/q?a=b&c=d,DNS:*.acme.test'\n"
    "cat > nasty.cnf <<'EOF'\n"
    "[req]\n"
    "distinguished_name = dn\n"
    "prompt = no\n"
    "string_mask = utf8only\n"
    "utf8 = yes\n"
    "x509_extensions = ext\n"
    "[dn]\n"
    "CN = evil;Cert=\\\"x\\\",By=y\\\\z\\r\\nInjected: 1 \xc3\xa9\n"
    "O = \\#lead ,O+<>\n"
    "1.OU = \" spaced \"\n"
    "2.OU = tab\\there\n"
    "[ext]\n"
    "subjectAltName = @alt\n"
    "[alt]\n"
    "URI.1 = spiffe://acme.test/a;Hash=0,URI=b\n"
    "URI.2 = urn:x\\\"y\\\\z\\r\\nX: \xc3\xa9\n"
    "DNS.1 = a.example;DNS=b.example\n"
    "DNS.2 = c.example,Subject=\\\"x\\\"\n"
    "DNS.3 = plain.example\n"
    "DNS.4 = crlf\\r\\nX-Evil: 1\n"
    "EOF\n"
    "openssl req -x509 $ec -keyout nasty.key -days 2 -out nasty.pem -config nasty.cnf\n"
    "for i in 0 1 2 3 4; do\n"
    "  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096 -out c$i.key 2>/dev/null &\n"
    "done\n"
    "wait\n"
    "printf 'basicConstraints=critical,CA:true\\n' > ca.ext\n"
    "printf 'subjectAltName=URI:spiffe://acme.test/leaf,DNS:leaf.acme.test\\n' > leaf.ext\n"
    "openssl req -x509 -key c0.key -subj '/CN=Root CA' -days 2 -out c0.pem\n"
    "for i in 1 2 3 4; do\n"
    "  ext=ca.ext; [ $i = 4 ] && ext=leaf.ext\n"
    "  openssl req -new -key c$i.key -subj \"/CN=Level $i\" -out c$i.csr\n"
    "  openssl x509 -req -in c$i.csr -CA c$((i - 1)).pem -CAkey c$((i - 1)).key \\\n"
    "    -set_serial $((i + 100)) -days 2 -extfile $ext -out c$i.pem 2>/dev/null\n"
    "done\n"
    "cat c4.pem c3.pem c2.pem c1.pem c0.pem > chain.pem\n"
    "for f in ord rsa multi acme nasty c0 c1 c2 c3 c4; do\n"
    "  openssl x509 -in $f.pem -outform DER -out $f.der\n"
    "  openssl x509 -in $f.pem -outform DER | sha256sum | cut -c1-64 | tr -d '\\n' > $f.hash\n"
    "  openssl x509 -in $f.pem -noout -subject -nameopt RFC2253 | sed 's/^subject=//' \\\n"
    "    | tr -d '\\n' > $f.subj\n"
    "done\n"
    "rm -f *.key *.csr\n";

static char *path_of(const char *name)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    return path;
}

/* slurp returns the file's bytes, NUL-terminated (free with free). */
static char *slurp(const char *name, size_t *out_len)
{
    FILE *f = fopen(path_of(name), "rb");
    assert_non_null(f);
    size_t cap = 4096, len = 0;
    char *data = malloc(cap);
    size_t n;
    while ((n = fread(data + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2)
            data = realloc(data, cap *= 2);
    }
    fclose(f);
    data[len] = '\0';
    if (out_len != NULL)
        *out_len = len;
    return data;
}

static STACK_OF(X509) *load_chain(const char *name)
{
    FILE *f = fopen(path_of(name), "r");
    assert_non_null(f);
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
        sk_X509_push(sk, x);
    fclose(f);
    assert_true(sk_X509_num(sk) > 0);
    return sk;
}

static void free_chain(STACK_OF(X509) *sk)
{
    sk_X509_pop_free(sk, X509_free);
}

/* buf_str returns the queued bytes as a NUL-terminated string (free with free). */
static char *buf_str(struct buf *b)
{
    char *s = malloc(buf_used(b) + 1);
    memcpy(s, buf_data(b), buf_used(b));
    s[buf_used(b)] = '\0';
    return s;
}

/* envoy_encode is the test's own copy of Envoy's PEM url-encoding. */
static void envoy_encode(struct buf *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '\n':
            buf_appends(out, "%0A");
            break;
        case ' ':
            buf_appends(out, "%20");
            break;
        case '+':
            buf_appends(out, "%2B");
            break;
        case '/':
            buf_appends(out, "%2F");
            break;
        case '=':
            buf_appends(out, "%3D");
            break;
        default:
            buf_append(out, s, 1);
        }
    }
}

static int count_char(const char *s, char c)
{
    int n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

static void assert_header_safe(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f)
            fail_msg("byte 0x%02x at %zu of %.*s", c, i, (int)len, s);
    }
}

static int group_setup(void **state)
{
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    char script_path[600];
    snprintf(script_path, sizeof(script_path), "%s/gen.sh", tmpdir);
    FILE *f = fopen(script_path, "w");
    if (f == NULL)
        return -1;
    fputs(gen_script, f);
    fclose(f);
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "sh %s %s >%s/gen.log 2>&1 || { cat %s/gen.log; exit 1; }",
             script_path, tmpdir, tmpdir, tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_classify(void **state)
{
    static const struct {
        const char *name;
        enum xfcc_name want;
        bool underscore;
    } cases[] = {
        {"x-forwarded-client-cert", XFCC_NAME_XFCC, false},
        {"X-Forwarded-Client-Cert", XFCC_NAME_XFCC, false},
        {"X-FORWARDED-CLIENT-CERT", XFCC_NAME_XFCC, false},
        {"x_forwarded_client_cert", XFCC_NAME_XFCC, true},
        {"X-Forwarded_Client-Cert", XFCC_NAME_XFCC, true},
        {"client-cert", XFCC_NAME_CLIENT_CERT, false},
        {"Client-Cert", XFCC_NAME_CLIENT_CERT, false},
        {"CLIENT_CERT", XFCC_NAME_CLIENT_CERT, true},
        {"client-cert-chain", XFCC_NAME_CLIENT_CERT_CHAIN, false},
        {"Client-Cert-Chain", XFCC_NAME_CLIENT_CERT_CHAIN, false},
        {"client_cert-chain", XFCC_NAME_CLIENT_CERT_CHAIN, true},
        {"client-cert_chain", XFCC_NAME_CLIENT_CERT_CHAIN, true},
        {"x-ssl-client-cert", XFCC_NAME_X_SSL_CLIENT_CERT, false},
        {"X-SSL-Client-Cert", XFCC_NAME_X_SSL_CLIENT_CERT, false},
        {"x_ssl_client_cert", XFCC_NAME_X_SSL_CLIENT_CERT, true},
        /* near misses */
        {"", XFCC_NAME_NONE, false},
        {"x", XFCC_NAME_NONE, false},
        {"client-certs", XFCC_NAME_NONE, false},
        {"client-cer", XFCC_NAME_NONE, false},
        {"client cert", XFCC_NAME_NONE, false},
        {"client.cert", XFCC_NAME_NONE, false},
        {"clientXcert", XFCC_NAME_NONE, false},
        {"client--cert", XFCC_NAME_NONE, false},
        {"client-cert-chai", XFCC_NAME_NONE, false},
        {"client-cert-chainn", XFCC_NAME_NONE, false},
        {"client-cert-chian", XFCC_NAME_NONE, false},
        {"x-ssl-client-cer", XFCC_NAME_NONE, false},
        {"x-ssl-client-cerT ", XFCC_NAME_NONE, false},
        {"y-ssl-client-cert", XFCC_NAME_NONE, false},
        {"x-forwarded-client-cer", XFCC_NAME_NONE, false},
        {"x-forwarded-client-certs", XFCC_NAME_NONE, false},
        {"x-forwarded-client-cert:", XFCC_NAME_NONE, false},
        {"x-forwarded-client-cerT", XFCC_NAME_XFCC, false},
        {"x-forwarded-client_cert", XFCC_NAME_XFCC, true},
        {"x-forwarded-for", XFCC_NAME_NONE, false},
        {"xxforwarded-client-cert", XFCC_NAME_NONE, false},
        {"x_forwarded_client_cer_", XFCC_NAME_NONE, false},
        {"client-\xc3\xa9\x65rt", XFCC_NAME_NONE, false},
        {"content-type", XFCC_NAME_NONE, false},
        {"host", XFCC_NAME_NONE, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool us = !cases[i].underscore; /* must be overwritten */
        enum xfcc_name got = xfcc_classify(cases[i].name, strlen(cases[i].name), &us);
        if (got != cases[i].want || us != cases[i].underscore)
            fail_msg("%s: got %d/%d want %d/%d", cases[i].name, got, us, cases[i].want,
                     cases[i].underscore);
    }
    /* The length is the header's, not the string's: a NUL inside is just another byte. */
    assert_int_equal(xfcc_classify("client-cert\0", 12, NULL), XFCC_NAME_NONE);
    assert_int_equal(xfcc_classify("client\0cert", 11, NULL), XFCC_NAME_NONE);
    assert_int_equal(xfcc_classify("client-certificate", 11, NULL), XFCC_NAME_CLIENT_CERT);
}

/* expected_element builds, from the CLI's outputs, the element Envoy would write. */
static char *expected_ordinary(const char *base, const char *by, const char *sans)
{
    struct buf b = {0};
    char name[64];
    if (by != NULL)
        buf_appendf(&b, "By=%s;", by);
    snprintf(name, sizeof(name), "%s.hash", base);
    char *hash = slurp(name, NULL);
    snprintf(name, sizeof(name), "%s.pem", base);
    char *pem = slurp(name, NULL);
    snprintf(name, sizeof(name), "%s.subj", base);
    char *subj = slurp(name, NULL);
    buf_appendf(&b, "Hash=%s;Cert=\"", hash);
    envoy_encode(&b, pem);
    buf_appends(&b, "\";Chain=\"");
    envoy_encode(&b, pem);
    buf_appendf(&b, "\";Subject=\"%s\";%s", subj, sans);
    free(hash);
    free(pem);
    free(subj);
    char *s = buf_str(&b);
    buf_free(&b);
    return s;
}

static void test_envoy_format_ordinary(void **state)
{
    STACK_OF(X509) *sk = load_chain("ord.pem");
    const char *by[] = {"spiffe://certgate.test/ns/prod/sa/proxy"};
    struct buf out = {0};
    xfcc_element(&out, sk, ALL_DETAILS, by, 1);
    char *got = buf_str(&out);
    char *want = expected_ordinary("ord", by[0],
                                   "URI=spiffe://acme.test/ns/default/sa/client;"
                                   "DNS=client.acme.test;DNS=alt.acme.test");
    assert_string_equal(got, want);
    /* And the literal subject, so that a wrong CLI would not hide a wrong xfcc.c. */
    assert_non_null(strstr(got, ";Subject=\"CN=0102030405060708,O=Acme,C=NL\";"));
    free(got);
    free(want);

    /* It appends, and details select keys. */
    buf_free(&out);
    buf_appends(&out, "prior,");
    xfcc_element(&out, sk, 0, NULL, 0);
    char *hash = slurp("ord.hash", NULL);
    got = buf_str(&out);
    assert_int_equal(strlen(got), strlen("prior,Hash=") + 64);
    assert_memory_equal(got, "prior,Hash=", 11);
    assert_string_equal(got + 11, hash);
    free(got);
    free(hash);
    buf_free(&out);
    free_chain(sk);
}

static void test_rsa_without_sans(void **state)
{
    STACK_OF(X509) *sk = load_chain("rsa.pem");
    struct buf out = {0};
    xfcc_element(&out, sk, ALL_DETAILS, NULL, 0);
    char *got = buf_str(&out);
    char *want = expected_ordinary("rsa", NULL, "URI=");
    assert_string_equal(got, want);
    assert_non_null(strstr(got, ";Subject=\"O=Example Org,CN=plain rsa\";URI="));
    free(got);
    free(want);
    buf_free(&out);

    xfcc_element(&out, sk, CC_DETAIL_DNS, NULL, 0);
    assert_int_equal(buf_used(&out), 5 + 64);
    buf_free(&out);
    size_t num = 99;
    char **uris = xfcc_uri_sans(sk_X509_value(sk, 0), &num);
    assert_int_equal(num, 0);
    assert_null(uris[0]);
    free(uris);
    free_chain(sk);
}

static void test_multivalued_rdn_subject(void **state)
{
    STACK_OF(X509) *sk = load_chain("multi.pem");
    struct buf out = {0};
    xfcc_element(&out, sk, CC_DETAIL_SUBJECT, NULL, 0);
    char *got = buf_str(&out);
    char *subj = slurp("multi.subj", NULL);
    char *hash = slurp("multi.hash", NULL);
    struct reparse_header h = {0};
    assert_int_equal(reparse_header(&h, got, strlen(got)), 0);
    assert_int_equal(h.num_elements, 1);
    assert_int_equal(h.elements[0].num_pairs, 2);
    assert_string_equal(h.elements[0].pairs[1].key, "Subject");
    /* Envoy's bytes: the RFC 2253 string between quotes, its backslashes as they are. */
    assert_string_equal(subj, "OU=\\#hash,O=x\\, y,serialNumber=1+CN=a");
    char want[256];
    snprintf(want, sizeof(want), "Hash=%s;Subject=\"%s\"", hash, subj);
    assert_string_equal(got, want);
    reparse_free(&h);
    free(hash);
    free(subj);
    free(got);
    buf_free(&out);
    free_chain(sk);
}

/* "O=Acme\, Inc." and a UTF-8 CN: Envoy writes X509_NAME_print_ex's string untouched (its
 * backslashes included), and so must certgate; the SANs hold '=', '?', '&' and '*', which Envoy
 * writes raw too. */
static void test_envoy_escapes_verbatim(void **state)
{
    STACK_OF(X509) *sk = load_chain("acme.pem");
    struct buf out = {0};
    xfcc_element(&out, sk, ALL_DETAILS, NULL, 0);
    char *got = buf_str(&out);
    char *want = expected_ordinary("acme", NULL,
                                   "URI=spiffe://acme.test/q?a=b&c=d;DNS=*.acme.test");
    assert_string_equal(got, want);
    assert_non_null(strstr(got, ";Subject=\"CN=M\\C3\\BCller \\E2\\82\\AC,O=Acme\\, Inc.\";"));
    free(got);
    free(want);
    buf_free(&out);
    free_chain(sk);
}

static void assert_pair(const struct reparse_pair *p, const char *key, const char *value)
{
    assert_string_equal(p->key, key);
    if (value == NULL)
        return;
    char *v = strdup(p->value);
    size_t len = reparse_pct_decode(v, strlen(v));
    assert_true(len != (size_t)-1);
    v[len] = '\0';
    assert_int_equal(len, strlen(value));
    assert_string_equal(v, value);
    free(v);
}

static void test_nasty_strings_stay_in_their_values(void **state)
{
    STACK_OF(X509) *sk = load_chain("nasty.pem");
    const char *by[] = {"spiffe://by.test/a;b=c,d", "spiffe://by.test/plain"};
    struct buf out = {0};
    xfcc_element(&out, sk, ALL_DETAILS, by, 2);
    assert_header_safe(buf_data(&out), buf_used(&out));

    struct reparse_header h = {0};
    assert_int_equal(reparse_header(&h, buf_data(&out), buf_used(&out)), 0);
    assert_int_equal(h.num_elements, 1);
    const struct reparse_element *el = &h.elements[0];
    assert_int_equal(el->num_pairs, 2 + 1 + 1 + 1 + 1 + 2 + 4);

    char *hash = slurp("nasty.hash", NULL);
    char *pem = slurp("nasty.pem", NULL);
    char *subj = slurp("nasty.subj", NULL);
    assert_pair(&el->pairs[0], "By", by[0]);
    assert_true(el->pairs[0].quoted);
    assert_pair(&el->pairs[1], "By", by[1]);
    assert_false(el->pairs[1].quoted);
    assert_pair(&el->pairs[2], "Hash", hash);
    assert_pair(&el->pairs[3], "Cert", pem);
    assert_pair(&el->pairs[4], "Chain", pem);
    assert_pair(&el->pairs[5], "Subject", subj);
    assert_true(el->pairs[5].quoted);
    assert_string_equal(subj, "OU=tab\\09here,OU=\\ spaced\\ ,O=\\#lead \\,O\\+\\<\\>,"
                              "CN=evil\\;Cert=\\\"x\\\"\\,By=y\\\\z\\0D\\0AInjected: 1 \\C3\\A9");
    assert_pair(&el->pairs[6], "URI", "spiffe://acme.test/a;Hash=0,URI=b");
    assert_pair(&el->pairs[7], "URI", "urn:x\"y\\z\r\nX: \xc3\xa9");
    assert_pair(&el->pairs[8], "DNS", "a.example;DNS=b.example");
    assert_pair(&el->pairs[9], "DNS", "c.example,Subject=\"x\"");
    assert_pair(&el->pairs[10], "DNS", "plain.example");
    assert_false(el->pairs[10].quoted);
    assert_pair(&el->pairs[11], "DNS", "crlf\r\nX-Evil: 1");
    assert_true(el->pairs[11].quoted);
    /* The encodings themselves, not only what they decode to. */
    char *text = buf_str(&out);
    assert_non_null(strstr(text, ";DNS=\"crlf%0D%0AX-Evil:%201\""));
    assert_non_null(strstr(text, "By=\"spiffe://by.test/a%3Bb=c%2Cd\";By=spiffe://by.test/plain;"));
    assert_non_null(strstr(text, ";URI=\"urn:x%22y%5Cz%0D%0AX:%20%C3%A9\";"));
    assert_non_null(strstr(text, ";URI=\"spiffe://acme.test/a%3BHash=0%2CURI=b\";"));
    assert_non_null(strstr(text, ";Subject=\"OU=tab%5C09here%2COU=%5C spaced%5C %2CO=%5C#lead "
                                 "%5C%2CO%5C+%5C<%5C>%2CCN=evil%5C%3BCert=%5C%22x%5C%22%5C%2C"
                                 "By=y%5C%5Cz%5C0D%5C0AInjected: 1 %5CC3%5CA9\";"));
    /* A parser that splits on ';' sees exactly the keys certgate wrote, and one that splits
     * on ',' finds none. */
    assert_int_equal(count_char(text, ';'), (int)el->num_pairs - 1);
    assert_null(strchr(text, ','));
    free(text);
    free(hash);
    free(pem);
    free(subj);
    reparse_free(&h);

    size_t num = 0;
    char **uris = xfcc_uri_sans(sk_X509_value(sk, 0), &num);
    assert_int_equal(num, 2);
    assert_string_equal(uris[0], "spiffe://acme.test/a;Hash=0,URI=b");
    assert_string_equal(uris[1], "urn:x\"y\\z\r\nX: \xc3\xa9");
    assert_null(uris[2]);
    for (size_t i = 0; i < num; i++)
        free(uris[i]);
    free(uris);
    buf_free(&out);
    free_chain(sk);
}

/* naive_chain_leaf reads the header as The Things Stack does: split on ';', the first "Chain="
 * part, trim quotes and backslashes, url.PathUnescape, the first PEM block. */
static char *naive_chain_leaf(const char *header)
{
    char *copy = strdup(header);
    char *result = NULL;
    for (char *part = strtok(copy, ";"); part != NULL; part = strtok(NULL, ";")) {
        if (strncmp(part, "Chain=", 6) != 0)
            continue;
        char *v = part + 6;
        size_t len = strlen(v);
        while (len > 0 && (*v == '"' || *v == '\\'))
            v++, len--;
        while (len > 0 && (v[len - 1] == '"' || v[len - 1] == '\\'))
            len--;
        len = reparse_pct_decode(v, len);
        if (len == (size_t)-1)
            break;
        v[len] = '\0';
        char *begin = strstr(v, "-----BEGIN CERTIFICATE-----\n");
        char *end = begin != NULL ? strstr(begin, "-----END CERTIFICATE-----\n") : NULL;
        if (end != NULL)
            result = strndup(begin, (size_t)(end - begin) + strlen("-----END CERTIFICATE-----\n"));
        break;
    }
    free(copy);
    return result;
}

static void test_naive_parser_gets_the_leaf(void **state)
{
    static const char *const files[] = {"nasty.pem", "multi.pem", "chain.pem", "ord.pem"};
    static const char *const leaves[] = {"nasty.pem", "multi.pem", "c4.pem", "ord.pem"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        STACK_OF(X509) *sk = load_chain(files[i]);
        const char *by[] = {"spiffe://by.test/plain"};
        struct buf out = {0};
        xfcc_element(&out, sk, ALL_DETAILS, by, 1);
        char *header = buf_str(&out);
        char *leaf = naive_chain_leaf(header);
        char *want = slurp(leaves[i], NULL);
        assert_non_null(leaf);
        assert_string_equal(leaf, want);
        free(leaf);
        free(want);
        free(header);
        buf_free(&out);
        free_chain(sk);
    }
}

static void test_chain_of_five(void **state)
{
    STACK_OF(X509) *sk = load_chain("chain.pem");
    assert_int_equal(sk_X509_num(sk), 5);
    struct buf out = {0};
    xfcc_element(&out, sk, ALL_DETAILS, NULL, 0);
    assert_header_safe(buf_data(&out), buf_used(&out));
    struct reparse_header h = {0};
    assert_int_equal(reparse_header(&h, buf_data(&out), buf_used(&out)), 0);
    assert_int_equal(h.num_elements, 1);
    const struct reparse_element *el = &h.elements[0];
    assert_int_equal(el->num_pairs, 6);
    char *chain_pem = slurp("chain.pem", NULL);
    char *leaf_pem = slurp("c4.pem", NULL);
    char *hash = slurp("c4.hash", NULL);
    char *subj = slurp("c4.subj", NULL);
    assert_pair(&el->pairs[0], "Hash", hash);
    assert_pair(&el->pairs[1], "Cert", leaf_pem);
    assert_pair(&el->pairs[2], "Chain", chain_pem);
    assert_pair(&el->pairs[3], "Subject", subj);
    assert_string_equal(subj, "CN=Level 4");
    assert_pair(&el->pairs[4], "URI", "spiffe://acme.test/leaf");
    assert_pair(&el->pairs[5], "DNS", "leaf.acme.test");
    free(chain_pem);
    free(leaf_pem);
    free(hash);
    free(subj);
    reparse_free(&h);
    buf_free(&out);
    free_chain(sk);
}

/* decode_sf_binary checks ":<b64>:" and returns the decoded bytes. */
static uint8_t *decode_sf_binary(const char *s, size_t len, size_t *out_len)
{
    assert_true(len >= 2);
    assert_int_equal(s[0], ':');
    assert_int_equal(s[len - 1], ':');
    size_t max = 0;
    assert_true(EVP_DecodedLength(&max, len - 2));
    uint8_t *der = malloc(max + 1);
    assert_true(EVP_DecodeBase64(der, out_len, max, (const uint8_t *)s + 1, len - 2));
    return der;
}

static void assert_der_file(const uint8_t *der, size_t len, const char *name)
{
    size_t want_len = 0;
    char *want = slurp(name, &want_len);
    assert_int_equal(len, want_len);
    assert_memory_equal(der, want, len);
    free(want);
}

static void test_rfc9440(void **state)
{
    static const char *const ders[] = {"c4.der", "c3.der", "c2.der", "c1.der", "c0.der"};
    STACK_OF(X509) *sk = load_chain("chain.pem");
    struct buf cert = {0}, chain = {0};
    xfcc_rfc9440(&cert, &chain, sk);
    assert_header_safe(buf_data(&cert), buf_used(&cert));
    assert_header_safe(buf_data(&chain), buf_used(&chain));
    size_t len = 0;
    uint8_t *der = decode_sf_binary(buf_data(&cert), buf_used(&cert), &len);
    assert_der_file(der, len, ders[0]);
    free(der);

    /* ":<b64>:, :<b64>:, ..." */
    char *s = buf_str(&chain);
    size_t n = 0;
    for (char *item = s; item != NULL; n++) {
        char *next = strstr(item, ", ");
        size_t item_len = next != NULL ? (size_t)(next - item) : strlen(item);
        assert_true(n + 1 < 5);
        der = decode_sf_binary(item, item_len, &len);
        assert_der_file(der, len, ders[n + 1]);
        free(der);
        item = next != NULL ? next + 2 : NULL;
    }
    assert_int_equal(n, 4);
    free(s);
    buf_free(&cert);
    buf_free(&chain);
    free_chain(sk);

    /* A lone leaf: no chain value. */
    sk = load_chain("ord.pem");
    xfcc_rfc9440(&cert, &chain, sk);
    assert_int_equal(buf_used(&chain), 0);
    der = decode_sf_binary(buf_data(&cert), buf_used(&cert), &len);
    assert_der_file(der, len, "ord.der");
    free(der);
    buf_free(&cert);
    free_chain(sk);
}

static void test_pem_like_nginx(void **state)
{
    static const char *const files[] = {"ord.pem", "rsa.pem", "c4.pem"};
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        STACK_OF(X509) *sk = load_chain(files[f]);
        struct buf out = {0};
        xfcc_pem(&out, sk_X509_value(sk, 0));
        char *pem = slurp(files[f], NULL);
        /* Expected: nginx's ngx_escape_uri(NGX_ESCAPE_URI_COMPONENT), written from RFC 3986's
         * unreserved set rather than from the table in xfcc.c. */
        struct buf want = {0};
        for (const char *p = pem; *p; p++) {
            if (isalnum((unsigned char)*p) || strchr("-._~", *p) != NULL)
                buf_append(&want, p, 1);
            else
                buf_appendf(&want, "%%%02X", (unsigned char)*p);
        }
        assert_int_equal(buf_used(&out), buf_used(&want));
        assert_memory_equal(buf_data(&out), buf_data(&want), buf_used(&want));
        assert_memory_equal(buf_data(&out), "-----BEGIN%20CERTIFICATE-----%0A", 32);
        buf_free(&want);
        free(pem);
        buf_free(&out);
        free_chain(sk);
    }
}

/* add_ia5_san adds a GEN_DNS or GEN_URI name of |len| bytes to |names|. */
static void add_ia5_san(GENERAL_NAMES *names, int type, const char *data, size_t len)
{
    GENERAL_NAME *name = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    assert_true(ASN1_STRING_set(s, data, (int)len));
    GENERAL_NAME_set0_value(name, type, s);
    assert_true(sk_GENERAL_NAME_push(names, name));
}

/* The CLI cannot put NUL into a certificate string; build one in memory instead. */
static void test_nul_bytes(void **state)
{
    static const char cn[] = "nul\0;Cert=x\r\n";
    static const char uri[] = "spiffe://x\0y";
    static const char dns[] = "d\0;DNS=e";
    X509 *x = X509_new();
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EVP_PKEY *key = EVP_PKEY_new();
    assert_true(EC_KEY_generate_key(ec));
    assert_true(EVP_PKEY_assign_EC_KEY(key, ec));
    assert_true(X509_set_version(x, X509_VERSION_3));
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_NAME *subject = X509_get_subject_name(x);
    assert_true(X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8,
                                           (const uint8_t *)cn, sizeof(cn) - 1, -1, 0));
    assert_true(X509_set_issuer_name(x, subject));
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    assert_true(X509_set_pubkey(x, key));
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    add_ia5_san(names, GEN_URI, uri, sizeof(uri) - 1);
    add_ia5_san(names, GEN_DNS, dns, sizeof(dns) - 1);
    assert_true(X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, 0));
    GENERAL_NAMES_free(names);
    assert_true(X509_sign(x, key, EVP_sha256()));

    STACK_OF(X509) *sk = sk_X509_new_null();
    assert_true(sk_X509_push(sk, x));
    struct buf out = {0};
    xfcc_element(&out, sk, ALL_DETAILS, NULL, 0);
    assert_header_safe(buf_data(&out), buf_used(&out));
    char *text = buf_str(&out);
    assert_non_null(strstr(text, ";Subject=\"CN=nul%5C00%5C%3BCert=x%5C0D%5C0A\";"));
    assert_non_null(strstr(text, ";URI=\"spiffe://x%00y\";DNS=\"d%00%3BDNS=e\""));
    struct reparse_header h = {0};
    assert_int_equal(reparse_header(&h, buf_data(&out), buf_used(&out)), 0);
    assert_int_equal(h.num_elements, 1);
    assert_int_equal(h.elements[0].num_pairs, 6);
    reparse_free(&h);
    free(text);
    buf_free(&out);

    /* A C string cannot carry the NUL: xfcc_uri_sans leaves that URI out. */
    size_t num = 9;
    char **uris = xfcc_uri_sans(x, &num);
    assert_int_equal(num, 0);
    assert_null(uris[0]);
    free(uris);
    sk_X509_pop_free(sk, X509_free);
    EVP_PKEY_free(key);
}

/* smuggler_new makes a self-signed certificate whose subject (a description attribute, which
 * has no length bound) and URI SAN hold |payload|; the caller frees it. */
static X509 *smuggler_new(const char *payload)
{
    X509 *x = X509_new();
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EVP_PKEY *key = EVP_PKEY_new();
    assert_true(EC_KEY_generate_key(ec));
    assert_true(EVP_PKEY_assign_EC_KEY(key, ec));
    assert_true(X509_set_version(x, X509_VERSION_3));
    ASN1_INTEGER_set(X509_get_serialNumber(x), 8);
    X509_NAME *subject = X509_get_subject_name(x);
    assert_true(X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8,
                                           (const uint8_t *)"gw", 2, -1, 0));
    assert_true(X509_NAME_add_entry_by_NID(subject, NID_description, MBSTRING_UTF8,
                                           (const uint8_t *)payload, (int)strlen(payload),
                                           -1, 0));
    assert_true(X509_set_issuer_name(x, subject));
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    assert_true(X509_set_pubkey(x, key));
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    add_ia5_san(names, GEN_URI, payload, strlen(payload));
    add_ia5_san(names, GEN_DNS, "a\"b.example", strlen("a\"b.example"));
    assert_true(X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, 0));
    GENERAL_NAMES_free(names);
    assert_true(X509_sign(x, key, EVP_sha256()));
    EVP_PKEY_free(key);
    return x;
}

/* A subject and a URI SAN holding ";Chain=<another certificate's PEM>": The Things Stack's
 * parser (split on ';', the first "Chain=") must get this client's own leaf when chain is among
 * the details, and nothing at all when it is not; never the smuggled one. */
static void test_smuggled_chain_key(void **state)
{
    char *victim = slurp("ord.pem", NULL);
    struct buf payload = {0};
    buf_appends(&payload, "x\";Chain=");
    envoy_encode(&payload, victim);
    char *p = buf_str(&payload);
    X509 *x = smuggler_new(p);
    STACK_OF(X509) *sk = sk_X509_new_null();
    assert_true(sk_X509_push(sk, x));
    BIO *bio = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_X509(bio, x));
    const uint8_t *own = NULL;
    size_t own_len = 0;
    assert_true(BIO_mem_contents(bio, &own, &own_len));

    static const unsigned detail_sets[] = {
        ALL_DETAILS, CC_DETAIL_SUBJECT | CC_DETAIL_URI | CC_DETAIL_DNS, CC_DETAIL_SUBJECT,
        CC_DETAIL_URI, CC_DETAIL_CERT | CC_DETAIL_URI};
    static const int num_semicolons[] = {6, 4, 2, 2, 3}; /* pairs - 1, By included */
    for (size_t i = 0; i < sizeof(detail_sets) / sizeof(detail_sets[0]); i++) {
        struct buf out = {0};
        const char *by[] = {p};
        xfcc_element(&out, sk, detail_sets[i], by, 1);
        char *text = buf_str(&out);
        assert_header_safe(text, strlen(text));
        assert_int_equal(count_char(text, ';'), num_semicolons[i]);
        assert_null(strchr(text, ','));
        char *leaf = naive_chain_leaf(text);
        if (detail_sets[i] & CC_DETAIL_CHAIN) {
            assert_non_null(leaf);
            assert_int_equal(strlen(leaf), own_len);
            assert_memory_equal(leaf, own, own_len);
        } else {
            assert_null(leaf);
            assert_null(strstr(text, ";Chain="));
        }
        free(leaf);
        free(text);
        buf_free(&out);
    }
    BIO_free(bio);
    sk_X509_pop_free(sk, X509_free);
    free(p);
    buf_free(&payload);
    free(victim);
}

static void test_no_certificate(void **state)
{
    struct buf out = {0};
    STACK_OF(X509) *empty = sk_X509_new_null();
    xfcc_element(&out, empty, ALL_DETAILS, NULL, 0);
    xfcc_element(&out, NULL, ALL_DETAILS, NULL, 0);
    xfcc_rfc9440(&out, &out, empty);
    xfcc_rfc9440(&out, &out, NULL);
    xfcc_pem(&out, NULL);
    assert_int_equal(buf_used(&out), 0);
    size_t num = 7;
    char **uris = xfcc_uri_sans(NULL, &num);
    assert_int_equal(num, 0);
    assert_null(uris[0]);
    free(uris);
    sk_X509_free(empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_envoy_format_ordinary),
        cmocka_unit_test(test_rsa_without_sans),
        cmocka_unit_test(test_multivalued_rdn_subject),
        cmocka_unit_test(test_envoy_escapes_verbatim),
        cmocka_unit_test(test_nasty_strings_stay_in_their_values),
        cmocka_unit_test(test_naive_parser_gets_the_leaf),
        cmocka_unit_test(test_chain_of_five),
        cmocka_unit_test(test_rfc9440),
        cmocka_unit_test(test_pem_like_nginx),
        cmocka_unit_test(test_nul_bytes),
        cmocka_unit_test(test_smuggled_chain_key),
        cmocka_unit_test(test_no_certificate),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
