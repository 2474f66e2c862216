/* xfcc.c: the values of the forwarded client-certificate headers (Envoy's XFCC element, RFC 9440,
 * nginx's escaped PEM) and the name predicate the sanitiser uses. Certificate strings are hostile:
 * every value is escaped so that it cannot end the header, add a key or add an element. */
#include <openssl/is_boringssl.h>

#include "http/xfcc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/base64.h>
#include <openssl/bio.h>
#include <openssl/mem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "core/base.h"
#include "core/config.h"

static const char xfcc_hex_upper[] = "0123456789ABCDEF";

/* Byte sets as 256-bit maps, one bit per byte value: set = percent-encode. */
#define XFCC_IN_SET(set, c) (((set)[(c) >> 5] >> ((c)&0x1f)) & 1u)

/* clang-format off */
/* Envoy's PEM url-encoding: exactly '\n', ' ', '+', '/' and '='. */
static const uint32_t xfcc_envoy_pem_set[8] = {
    0x00000400, /* '\n' */
    0x20008801, /* ' ' '+' '/' '=' */
    0, 0, 0, 0, 0, 0,
};

/* nginx's ngx_escape_uri(NGX_ESCAPE_URI_COMPONENT): everything but ALPHA DIGIT - . _ ~ */
static const uint32_t xfcc_nginx_component_set[8] = {
    0xffffffff, 0xfc009fff, 0x78000001, 0xb8000001,
    0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
};
/* clang-format on */

static const struct {
    const char *name;
    enum xfcc_name kind;
} xfcc_names_17[] = {
    {"client-cert-chain", XFCC_NAME_CLIENT_CERT_CHAIN},
    {"x-ssl-client-cert", XFCC_NAME_X_SSL_CLIENT_CERT},
};

/* xfcc_name_eq compares |len| bytes of |name| with the lowercase, dashed |want|, taking '_' for
 * '-'. */
static bool xfcc_name_eq(const char *name, size_t len, const char *want, bool *underscore)
{
    bool us = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '_') {
            c = '-';
            us = true;
        } else if (c >= 'A' && c <= 'Z') {
            c = (unsigned char)(c + ('a' - 'A'));
        }
        if (c != (unsigned char)want[i])
            return false;
    }
    *underscore = us;
    return true;
}

enum xfcc_name xfcc_classify(const char *name, size_t len, bool *out_underscore)
{
    bool us = false;
    enum xfcc_name kind = XFCC_NAME_NONE;

    /* Called for every request header: the length rules out almost every name at once. */
    switch (len) {
    case 11:
        if (xfcc_name_eq(name, len, "client-cert", &us))
            kind = XFCC_NAME_CLIENT_CERT;
        break;
    case 17:
        for (size_t i = 0; i < ARRAY_SIZE(xfcc_names_17); i++) {
            if (xfcc_name_eq(name, len, xfcc_names_17[i].name, &us)) {
                kind = xfcc_names_17[i].kind;
                break;
            }
        }
        break;
    case 23:
        if (xfcc_name_eq(name, len, "x-forwarded-client-cert", &us))
            kind = XFCC_NAME_XFCC;
        break;
    default:
        break;
    }
    if (out_underscore != NULL)
        *out_underscore = kind != XFCC_NAME_NONE && us;
    return kind;
}

/* xfcc_der returns the DER of |cert| (free with OPENSSL_free), or NULL. */
static uint8_t *xfcc_der(X509 *cert, size_t *out_len)
{
    uint8_t *der = NULL;
    int n = i2d_X509(cert, &der);
    if (n <= 0) {
        OPENSSL_free(der);
        return NULL;
    }
    *out_len = (size_t)n;
    return der;
}

static void xfcc_append_base64(struct buf *out, const uint8_t *data, size_t len)
{
    size_t b64_len;
    if (!EVP_EncodedLength(&b64_len, len))
        abort();
    char *dst = buf_reserve(out, b64_len);
    buf_commit(out, EVP_EncodeBlock((uint8_t *)dst, data, len));
}

/* xfcc_append_pem writes |der| as PEM_write_bio_X509 does: 64 columns, a final newline. */
static void xfcc_append_pem(struct buf *out, const uint8_t *der, size_t len)
{
    buf_appends(out, "-----BEGIN CERTIFICATE-----\n");
    for (size_t off = 0; off < len; off += 48) {
        xfcc_append_base64(out, der + off, MIN(48, len - off));
        buf_append(out, "\n", 1);
    }
    buf_appends(out, "-----END CERTIFICATE-----\n");
}

/* xfcc_append_encoded percent-encodes the bytes of |set| (uppercase hex). */
static void xfcc_append_encoded(struct buf *out, const char *data, size_t len, const uint32_t *set)
{
    char *dst = buf_reserve(out, 3 * len);
    char *p = dst;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        if (XFCC_IN_SET(set, c)) {
            *p++ = '%';
            *p++ = xfcc_hex_upper[c >> 4];
            *p++ = xfcc_hex_upper[c & 0xf];
        } else {
            *p++ = (char)c;
        }
    }
    buf_commit(out, (size_t)(p - dst));
}

/* xfcc_append_pem_encoded appends the PEM of |der| percent-encoded with |set|. */
static void xfcc_append_pem_encoded(struct buf *out, const uint8_t *der, size_t len,
                                    const uint32_t *set)
{
    struct buf pem = {0};
    xfcc_append_pem(&pem, der, len);
    xfcc_append_encoded(out, buf_data(&pem), buf_used(&pem), set);
    buf_free(&pem);
}

/* xfcc_append_cert_encoded is xfcc_append_pem_encoded for |cert|; nothing when it has no DER. */
static void xfcc_append_cert_encoded(struct buf *out, X509 *cert, const uint32_t *set)
{
    size_t len = 0;
    uint8_t *der = xfcc_der(cert, &len);
    if (der != NULL)
        xfcc_append_pem_encoded(out, der, len, set);
    OPENSSL_free(der);
}

/* The kinds of value xfcc_append_value writes (CONTRACT section 5). */
enum xfcc_value {
    XFCC_VALUE_SUBJECT, /* Subject: always quoted, as Envoy writes it */
    XFCC_VALUE_BARE,    /* By, URI, DNS: unquoted, as Envoy writes them */
};

/* clang-format off */
/* The bytes that make a Subject leave Envoy's form: '"', ';', controls, and bytes >= 0x80 (which
 * XN_FLAG_RFC2253 never prints raw). */
static const uint32_t xfcc_subject_trigger[8] = {
    0xffffffff, 0x08000004, 0, 0x80000000, /* controls, '"' ';', DEL */
    0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
};
/* ... and, for a bare value, also ',' and ' ': a consumer that splits elements on ',' or trims
 * at whitespace would cut it. Bytes >= 0x80 are C1 controls or NBSP to a Latin-1 reader. */
static const uint32_t xfcc_bare_trigger[8] = {
    0xffffffff, 0x08001005, 0, 0x80000000, /* controls, ' ' '"' ',' ';', DEL */
    0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
};
/* What the encoded form percent-encodes: the trigger bytes plus '%' (so that the encoding can
 * be undone) and '\' (so that no parser reads an escape); a Subject keeps its spaces. */
static const uint32_t xfcc_subject_encode[8] = {
    0xffffffff, 0x08001024, 0x10000000, 0x80000000, /* controls, '"' '%' ',' ';', '\', DEL */
    0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
};
static const uint32_t xfcc_bare_encode[8] = {
    0xffffffff, 0x08001025, 0x10000000, 0x80000000, /* the same and ' ' */
    0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
};
/* clang-format on */

/* xfcc_append_value writes a By, Subject, URI or DNS value. Envoy writes these raw (Subject
 * between quotes), so a certificate string holding ';' adds a key for a parser that splits on
 * ';' (The Things Stack takes the first "Chain=" it finds), and one holding ',' adds an element
 * (Envoy issue 32945). A value is written exactly as Envoy writes it unless it holds a trigger
 * byte; then it is quoted and percent-encoded, so that after the encoding no ';', ',', '"', '\'
 * or control byte is left for any parser, quote-aware or naive, to misread. */
/* Tells whether an RFC 2253 Subject holds an escaped ',' followed by what reads as a key
 * ("CN=x\,By=spiffe://..."): a consumer splitting elements on ',' without reading quotes would
 * take "By=..." for an element of certgate's. "O=Acme\, Inc." stays in Envoy's form. */
static bool xfcc_subject_forges_key(const char *d, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (d[i] != '\\')
            continue;
        if (d[++i] != ',') /* the escaped byte, or the first digit of \XX: not a separator */
            continue;
        size_t j = i + 1;
        while (j < len && (d[j] == ' ' || d[j] == '\t'))
            j++;
        size_t k = j;
        while (k < len && ((d[k] | 0x20) >= 'a' && (d[k] | 0x20) <= 'z'))
            k++;
        if (k > j && k < len && d[k] == '=')
            return true;
    }
    return false;
}

static void xfcc_append_value(struct buf *out, const char *data, size_t len, enum xfcc_value kind)
{
    const uint32_t *trigger = kind == XFCC_VALUE_SUBJECT ? xfcc_subject_trigger : xfcc_bare_trigger;
    bool encode = kind == XFCC_VALUE_SUBJECT && xfcc_subject_forges_key(data, len);
    for (size_t i = 0; i < len && !encode; i++)
        encode = XFCC_IN_SET(trigger, (unsigned char)data[i]);
    bool quote = encode || kind == XFCC_VALUE_SUBJECT;
    if (quote)
        buf_append(out, "\"", 1);
    if (encode)
        xfcc_append_encoded(out, data, len,
                            kind == XFCC_VALUE_SUBJECT ? xfcc_subject_encode : xfcc_bare_encode);
    else
        buf_append(out, data, len);
    if (quote)
        buf_append(out, "\"", 1);
}

static void xfcc_append_hash(struct buf *out, const uint8_t *der, size_t len)
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256(der, len, md);
    char *dst = buf_reserve(out, 2 * sizeof(md));
    for (size_t i = 0; i < sizeof(md); i++) {
        dst[2 * i] = "0123456789abcdef"[md[i] >> 4];
        dst[2 * i + 1] = "0123456789abcdef"[md[i] & 0xf];
    }
    buf_commit(out, 2 * sizeof(md));
}

static void xfcc_append_subject(struct buf *out, X509 *leaf)
{
    BIO *bio = BIO_new(BIO_s_mem());
    const uint8_t *text = NULL;
    size_t len = 0;
    if (bio == NULL)
        abort();
    /* BoringSSL's XN_FLAG_RFC2253 is OpenSSL's: reversed RDNs, RFC 2253 escapes, control
     * characters and bytes >= 0x80 (of the UTF-8 form) as \XX. */
    if (X509_NAME_print_ex(bio, X509_get_subject_name(leaf), 0, XN_FLAG_RFC2253) < 0 ||
        !BIO_mem_contents(bio, &text, &len))
        len = 0;
    xfcc_append_value(out, (const char *)text, len, XFCC_VALUE_SUBJECT);
    BIO_free(bio);
}

/* xfcc_append_sans writes ";<key><value>" for each SAN of |type|; returns how many. */
static size_t xfcc_append_sans(struct buf *out, X509 *leaf, int type, const char *key)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    size_t num = 0;
    for (size_t i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
        if (name->type != type)
            continue;
        /* GEN_DNS and GEN_URI are both IA5Strings in the same union slot. */
        const ASN1_STRING *s =
            type == GEN_URI ? name->d.uniformResourceIdentifier : name->d.dNSName;
        buf_appends(out, key);
        xfcc_append_value(out, (const char *)ASN1_STRING_get0_data(s),
                          (size_t)ASN1_STRING_length(s), XFCC_VALUE_BARE);
        num++;
    }
    GENERAL_NAMES_free(names);
    return num;
}

void xfcc_element(struct buf *out, STACK_OF(X509) *chain, unsigned details,
                  const char *const *by_uris, size_t num_by_uris)
{
    X509 *leaf = chain != NULL && sk_X509_num(chain) > 0 ? sk_X509_value(chain, 0) : NULL;
    if (leaf == NULL)
        return;

    for (size_t i = 0; i < num_by_uris; i++) {
        buf_appends(out, "By=");
        xfcc_append_value(out, by_uris[i], strlen(by_uris[i]), XFCC_VALUE_BARE);
        buf_append(out, ";", 1);
    }
    /* The leaf's DER serves Hash, Cert and the head of Chain. A certificate that parsed but
     * cannot be re-encoded gets an empty Hash and Cert rather than no element. */
    size_t leaf_len = 0;
    uint8_t *leaf_der = xfcc_der(leaf, &leaf_len);
    buf_appends(out, "Hash=");
    if (leaf_der != NULL)
        xfcc_append_hash(out, leaf_der, leaf_len);
    if (details & CC_DETAIL_CERT) {
        buf_appends(out, ";Cert=\"");
        if (leaf_der != NULL)
            xfcc_append_pem_encoded(out, leaf_der, leaf_len, xfcc_envoy_pem_set);
        buf_append(out, "\"", 1);
    }
    if (details & CC_DETAIL_CHAIN) {
        buf_appends(out, ";Chain=\"");
        if (leaf_der != NULL)
            xfcc_append_pem_encoded(out, leaf_der, leaf_len, xfcc_envoy_pem_set);
        for (size_t i = 1; i < sk_X509_num(chain); i++)
            xfcc_append_cert_encoded(out, sk_X509_value(chain, i), xfcc_envoy_pem_set);
        buf_append(out, "\"", 1);
    }
    OPENSSL_free(leaf_der);
    if (details & CC_DETAIL_SUBJECT) {
        buf_appends(out, ";Subject=");
        xfcc_append_subject(out, leaf);
    }
    if ((details & CC_DETAIL_URI) && xfcc_append_sans(out, leaf, GEN_URI, ";URI=") == 0)
        buf_appends(out, ";URI=");
    if (details & CC_DETAIL_DNS)
        xfcc_append_sans(out, leaf, GEN_DNS, ";DNS=");
}

void xfcc_rfc9440(struct buf *cert_out, struct buf *chain_out, STACK_OF(X509) *chain)
{
    size_t num = chain != NULL ? sk_X509_num(chain) : 0;
    size_t written = 0;
    for (size_t i = 0; i < num; i++) {
        struct buf *out = i == 0 ? cert_out : chain_out;
        if (out == NULL)
            break;
        size_t len = 0;
        uint8_t *der = xfcc_der(sk_X509_value(chain, i), &len);
        if (der == NULL)
            continue;
        if (i > 0 && written++ > 0)
            buf_appends(out, ", ");
        buf_append(out, ":", 1);
        xfcc_append_base64(out, der, len);
        buf_append(out, ":", 1);
        OPENSSL_free(der);
    }
}

void xfcc_pem(struct buf *out, X509 *leaf)
{
    if (leaf != NULL)
        xfcc_append_cert_encoded(out, leaf, xfcc_nginx_component_set);
}

char **xfcc_uri_sans(X509 *cert, size_t *out_num)
{
    GENERAL_NAMES *names =
        cert != NULL ? X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL) : NULL;
    char **uris = xcalloc(sk_GENERAL_NAME_num(names) + 1, sizeof(*uris));
    size_t num = 0;
    for (size_t i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
        if (name->type != GEN_URI)
            continue;
        const ASN1_STRING *s = name->d.uniformResourceIdentifier;
        const char *data = (const char *)ASN1_STRING_get0_data(s);
        size_t len = (size_t)ASN1_STRING_length(s);
        /* A C string cannot hold an embedded NUL; such a URI is skipped, not truncated into a
         * different one. */
        if (memchr(data, '\0', len) != NULL)
            continue;
        uris[num++] = xstrndup(data, len);
    }
    GENERAL_NAMES_free(names);
    uris[num] = NULL;
    if (out_num != NULL)
        *out_num = num;
    return uris;
}
