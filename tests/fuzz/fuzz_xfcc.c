/* fuzz_xfcc.c: libFuzzer target for the client-certificate header builder. The input is one DER
 * certificate, or else a chain of certificates each preceded by a 2-byte big-endian length; every
 * value built from what parses must stay one element of visible ASCII that a quote-aware parser
 * reads back with exactly the expected keys, that a naive parser splitting on ';' (The Things
 * Stack's) cuts into exactly the keys certgate wrote, in which no ',' lies outside the Subject,
 * and whose values are exactly CONTRACT section 5's (checked against a slow definition here).
 * Without -DFUZZING, main() replays a corpus. */
#include <openssl/is_boringssl.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/buf.h"
#include "core/config.h"
#include "http/xfcc.h"
#include "xfcc_reparse.h"

#include "fuzz_check.h"

#define ALL_DETAILS                                                                                \
    (CC_DETAIL_CERT | CC_DETAIL_CHAIN | CC_DETAIL_SUBJECT | CC_DETAIL_URI | CC_DETAIL_DNS)

static STACK_OF(X509) *fuzz_parse_chain(const uint8_t *data, size_t size)
{
    STACK_OF(X509) *chain = sk_X509_new_null();
    CHECK(chain != NULL);
    const uint8_t *p = data;
    X509 *cert = d2i_X509(NULL, &p, (long)size);
    if (cert != NULL && p == data + size) {
        CHECK(sk_X509_push(chain, cert));
        return chain;
    }
    X509_free(cert);
    for (size_t off = 0; size - off >= 2;) {
        size_t len = (size_t)data[off] << 8 | data[off + 1];
        off += 2;
        if (len > size - off)
            len = size - off;
        p = data + off;
        cert = d2i_X509(NULL, &p, (long)len);
        if (cert != NULL)
            CHECK(sk_X509_push(chain, cert));
        off += len;
    }
    return chain;
}

/* The output is visible ASCII only: no CR, LF, NUL, no other control byte, nothing >= 0x80. */
static void fuzz_check_visible(const struct buf *b)
{
    for (size_t i = 0; i < buf_used(b); i++) {
        unsigned char c = (unsigned char)buf_data(b)[i];
        CHECK(c >= 0x20 && c < 0x7f);
    }
}

static bool fuzz_is_key(const struct reparse_pair *p, const char *key)
{
    return strcmp(p->key, key) == 0;
}

static void fuzz_check_element(const struct buf *out, const char *const *by, size_t num_by)
{
    struct reparse_header h = {0};
    fuzz_check_visible(out);
    CHECK(reparse_header(&h, buf_data(out), buf_used(out)) == 0);
    CHECK(h.num_elements == 1);
    const struct reparse_element *el = &h.elements[0];
    size_t i = 0;

    /* By{num_by} Hash Cert Chain Subject URI{1,} DNS* */
    for (size_t b = 0; b < num_by; b++, i++) {
        CHECK(i < el->num_pairs && fuzz_is_key(&el->pairs[i], "By"));
        if (strchr(by[b], '%') == NULL) {
            size_t len = reparse_pct_decode(el->pairs[i].value, el->pairs[i].value_len);
            CHECK(len == strlen(by[b]) && memcmp(el->pairs[i].value, by[b], len) == 0);
        }
    }
    CHECK(i < el->num_pairs && fuzz_is_key(&el->pairs[i], "Hash"));
    CHECK(el->pairs[i].value_len == 64 || el->pairs[i].value_len == 0);
    CHECK(strspn(el->pairs[i].value, "0123456789abcdef") == el->pairs[i].value_len);
    i++;
    static const char *const fixed[] = {"Cert", "Chain", "Subject"};
    for (size_t k = 0; k < 3; k++, i++) {
        CHECK(i < el->num_pairs && fuzz_is_key(&el->pairs[i], fixed[k]));
        CHECK(el->pairs[i].quoted);
    }
    size_t num_uri = 0;
    for (; i < el->num_pairs && fuzz_is_key(&el->pairs[i], "URI"); i++)
        num_uri++;
    CHECK(num_uri >= 1);
    for (; i < el->num_pairs; i++)
        CHECK(fuzz_is_key(&el->pairs[i], "DNS"));
    reparse_free(&h);
}

/* Tells whether a Subject holds "\\," (an escaped comma, not an escaped backslash before a
 * comma), then optional spaces or tabs, letters and '=': "CN=x\\,By=..." would give a naive ','
 * splitter an element "By=...". */
static bool fuzz_subject_forges_key(const char *v, size_t len)
{
    size_t i = 0;
    while (i + 1 < len) {
        if (v[i] != '\\') {
            i++;
            continue;
        }
        if (v[i + 1] == ',') {
            size_t j = i + 2;
            while (j < len && (v[j] == ' ' || v[j] == '\t'))
                j++;
            size_t k = j;
            while (k < len && ((v[k] >= 'a' && v[k] <= 'z') || (v[k] >= 'A' && v[k] <= 'Z')))
                k++;
            if (k > j && k < len && v[k] == '=')
                return true;
        }
        i += 2;
    }
    return false;
}

/* The slow definition of a written value (CONTRACT section 5): Envoy's form unless the value
 * holds '"', ';', a control byte, a byte >= 0x80, (Subject) an escaped ',' before a key, or
 * (bare values: By, URI, DNS) ',' or ' '; then quoted, with those bytes, '%' and '\\' (a
 * Subject keeps its spaces) as %XX. */
static void fuzz_expected_value(struct buf *out, const char *v, size_t len, bool subject)
{
    bool encode = subject && fuzz_subject_forges_key(v, len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        encode |=
            c == '"' || c == ';' || c < 0x20 || c >= 0x7f || (!subject && (c == ',' || c == ' '));
    }
    if (subject || encode)
        buf_append(out, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if (encode && (c == '%' || c == '"' || c == ';' || c == '\\' || c == ',' || c < 0x20 ||
                       c >= 0x7f || (!subject && c == ' ')))
            buf_appendf(out, "%%%02X", c);
        else
            buf_append(out, (const char *)&c, 1);
    }
    if (subject || encode)
        buf_append(out, "\"", 1);
}

/* One piece of the element as a naive parser cuts it: "key=" and, when known, the exact rest. */
struct fuzz_piece {
    const char *key;
    struct buf value; /* empty: not compared (Hash, Cert, Chain: their bytes are fixed sets) */
    bool compare;
};

static void fuzz_piece_add(struct fuzz_piece *pieces, size_t *num, size_t cap, const char *key,
                           const char *v, size_t len, int kind /* 0 none, 1 bare, 2 subject */)
{
    CHECK(*num < cap);
    struct fuzz_piece *p = &pieces[(*num)++];
    memset(p, 0, sizeof(*p));
    p->key = key;
    p->compare = kind != 0;
    if (kind != 0)
        fuzz_expected_value(&p->value, v, len, kind == 2);
}

static void fuzz_add_sans(struct fuzz_piece *pieces, size_t *num, size_t cap, X509 *leaf, int type,
                          const char *key)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    size_t before = *num;
    for (size_t i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *n = sk_GENERAL_NAME_value(names, i);
        if (n->type != type)
            continue;
        const ASN1_STRING *str = type == GEN_URI ? n->d.uniformResourceIdentifier : n->d.dNSName;
        fuzz_piece_add(pieces, num, cap, key, (const char *)ASN1_STRING_get0_data(str),
                       (size_t)ASN1_STRING_length(str), 1);
    }
    GENERAL_NAMES_free(names);
    if (type == GEN_URI && *num == before)
        fuzz_piece_add(pieces, num, cap, key, "", 0, 1);
}

/* fuzz_check_naive splits |out| on ';' as The Things Stack does and checks every piece against
 * what certgate means to write for |details|; then that every ',' is inside the Subject. */
static void fuzz_check_naive(const struct buf *out, X509 *leaf, unsigned details,
                             const char *const *by, size_t num_by)
{
    enum { CAP = 8192 }; /* -max_len bytes cannot hold more SANs */
    static struct fuzz_piece pieces[CAP];
    size_t num = 0;
    for (size_t b = 0; b < num_by; b++)
        fuzz_piece_add(pieces, &num, CAP, "By", by[b], strlen(by[b]), 1);
    fuzz_piece_add(pieces, &num, CAP, "Hash", NULL, 0, 0);
    if (details & CC_DETAIL_CERT)
        fuzz_piece_add(pieces, &num, CAP, "Cert", NULL, 0, 0);
    if (details & CC_DETAIL_CHAIN)
        fuzz_piece_add(pieces, &num, CAP, "Chain", NULL, 0, 0);
    if (details & CC_DETAIL_SUBJECT) {
        BIO *bio = BIO_new(BIO_s_mem());
        const uint8_t *text = NULL;
        size_t len = 0;
        CHECK(bio != NULL);
        if (X509_NAME_print_ex(bio, X509_get_subject_name(leaf), 0, XN_FLAG_RFC2253) < 0 ||
            !BIO_mem_contents(bio, &text, &len))
            len = 0;
        fuzz_piece_add(pieces, &num, CAP, "Subject", (const char *)text, len, 2);
        BIO_free(bio);
    }
    if (details & CC_DETAIL_URI)
        fuzz_add_sans(pieces, &num, CAP, leaf, GEN_URI, "URI");
    if (details & CC_DETAIL_DNS)
        fuzz_add_sans(pieces, &num, CAP, leaf, GEN_DNS, "DNS");

    const char *s = buf_data(out), *end = s + buf_used(out);
    size_t k = 0;
    for (const char *p = s; p <= end; k++) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *stop = semi != NULL ? semi : end;
        CHECK(k < num);
        size_t klen = strlen(pieces[k].key);
        CHECK((size_t)(stop - p) > klen && memcmp(p, pieces[k].key, klen) == 0 && p[klen] == '=');
        const char *v = p + klen + 1;
        size_t vlen = (size_t)(stop - v);
        if (pieces[k].compare)
            CHECK(vlen == buf_used(&pieces[k].value) &&
                  memcmp(v, buf_data(&pieces[k].value), vlen) == 0);
        bool in_subject = strcmp(pieces[k].key, "Subject") == 0;
        CHECK(in_subject || memchr(v, ',', vlen) == NULL);
        p = stop + 1;
    }
    CHECK(k == num);
    for (size_t i = 0; i < num; i++)
        buf_free(&pieces[i].value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The name predicate, against the obvious slow definition. */
    if (size <= 32) {
        char name[33];
        bool us = false, want_us = false;
        for (size_t i = 0; i < size; i++) {
            char c = (char)data[i];
            want_us |= c == '_';
            name[i] = c == '_' ? '-' : (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        name[size] = '\0';
        bool match =
            strlen(name) == size &&
            (strcmp(name, "x-forwarded-client-cert") == 0 || strcmp(name, "client-cert") == 0 ||
             strcmp(name, "client-cert-chain") == 0 || strcmp(name, "x-ssl-client-cert") == 0);
        enum xfcc_name kind = xfcc_classify((const char *)data, size, &us);
        CHECK((kind != XFCC_NAME_NONE) == match);
        CHECK(us == (match && want_us));
    }

    STACK_OF(X509) *chain = fuzz_parse_chain(data, size);
    if (sk_X509_num(chain) == 0) {
        sk_X509_free(chain);
        return 0;
    }
    X509 *leaf = sk_X509_value(chain, 0);
    size_t num_by = 0;
    char **by = xfcc_uri_sans(leaf, &num_by);
    CHECK(by[num_by] == NULL);

    struct buf out = {0};
    xfcc_element(&out, chain, ALL_DETAILS, (const char *const *)by, num_by);
    fuzz_check_element(&out, (const char *const *)by, num_by);
    fuzz_check_naive(&out, leaf, ALL_DETAILS, (const char *const *)by, num_by);
    buf_free(&out);
    /* Without chain among the details a smuggled "Chain=" would be the first one. */
    unsigned details = (unsigned)(size * 2654435761u >> 7) & ALL_DETAILS;
    xfcc_element(&out, chain, details, (const char *const *)by, num_by);
    fuzz_check_visible(&out);
    fuzz_check_naive(&out, leaf, details, (const char *const *)by, num_by);
    buf_free(&out);

    struct buf cert = {0}, rest = {0};
    xfcc_rfc9440(&cert, &rest, chain);
    fuzz_check_visible(&cert);
    fuzz_check_visible(&rest);
    CHECK(buf_used(&cert) >= 2 && buf_data(&cert)[0] == ':' &&
          buf_data(&cert)[buf_used(&cert) - 1] == ':');
    CHECK((sk_X509_num(chain) > 1) == (buf_used(&rest) > 0));
    for (size_t i = 0; i < buf_used(&cert); i++)
        CHECK(strchr(":+/=ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                     buf_data(&cert)[i]) != NULL);
    for (size_t i = 0; i < buf_used(&rest); i++)
        CHECK(strchr(":, +/=ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                     buf_data(&rest)[i]) != NULL);
    buf_free(&cert);
    buf_free(&rest);

    xfcc_pem(&out, leaf);
    fuzz_check_visible(&out);
    for (size_t i = 0; i < buf_used(&out); i++)
        CHECK(strchr("%-._~ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                     buf_data(&out)[i]) != NULL);
    buf_free(&out);

    for (size_t i = 0; i < num_by; i++)
        free(by[i]);
    free(by);
    sk_X509_pop_free(chain, X509_free);
    return 0;
}
