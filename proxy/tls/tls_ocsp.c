/* tls_ocsp.c: RFC 6960 OCSP for BoringSSL, which has no OCSP API: the AIA responder URL, the
 * DER request built with CBB, and the response parsed with CBS, its signer authorised and its
 * signature checked over the exact tbsResponseData bytes. Input is from the network: every
 * length comes from the bounded DER and nothing here trusts an offset it did not check. */
#include <openssl/is_boringssl.h>

#include <openssl/base.h>
#if !defined(OPENSSL_IS_BORINGSSL)
#error "certgate must be built against BoringSSL (android-libboringssl-dev)"
#endif

#include "tls/tls_ocsp.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bytestring.h>
#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/obj.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/base.h"

#define OCSP_MAX_RESPONSE (128 * 1024)
#define OCSP_MAX_CERTS 8
#define OCSP_MAX_URL 2048
#define OCSP_SKEW 300 /* seconds of clock skew tolerated on thisUpdate / nextUpdate */

#define SEQ CBS_ASN1_SEQUENCE
#define CTX_CONS(n) (CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | (n))
#define CTX_PRIM(n) (CBS_ASN1_CONTEXT_SPECIFIC | (n))

static const uint8_t oid_sha1[] = {0x2b, 0x0e, 0x03, 0x02, 0x1a};
static const uint8_t oid_sha256[] = {0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01};
static const uint8_t oid_ocsp_basic[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01};

/* The signature algorithms a responder may use, bound to the key type they need so that an
 * RSA OID can never be verified against an EC key or the reverse. */
static const struct sigalg {
    uint8_t oid[9];
    uint8_t oid_len;
    const EVP_MD *(*md)(void);
    int key_type;
} sigalgs[] = {
    {{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b}, 9, EVP_sha256, EVP_PKEY_RSA},
    {{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c}, 9, EVP_sha384, EVP_PKEY_RSA},
    {{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d}, 9, EVP_sha512, EVP_PKEY_RSA},
    {{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05}, 9, EVP_sha1, EVP_PKEY_RSA},
    {{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}, 8, EVP_sha256, EVP_PKEY_EC},
    {{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03}, 8, EVP_sha384, EVP_PKEY_EC},
    {{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04}, 8, EVP_sha512, EVP_PKEY_EC},
    {{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01}, 7, EVP_sha1, EVP_PKEY_EC},
};

/* The parts of a certificate's DER that OCSP identifies it by; the CBS point into |der| (owned,
 * from i2d_X509) or into the response. */
struct cert_ids {
    uint8_t *der;
    CBS serial;  /* INTEGER contents */
    CBS subject; /* the whole Name element */
    CBS key;     /* subjectPublicKey BIT STRING contents after the unused-bits byte */
};

/* The leaf's CertID in both hashes a responder may use. */
struct certid_want {
    CBS serial;
    uint8_t name1[20], key1[20], name256[32], key256[32];
};

static int ids_parse(struct cert_ids *ids, const uint8_t *der, size_t der_len)
{
    CBS in, cert, tbs, spki, bits, skip;
    int has_version;
    uint8_t unused;

    CBS_init(&in, der, der_len);
    if (!CBS_get_asn1(&in, &cert, SEQ) || CBS_len(&in) != 0 || !CBS_get_asn1(&cert, &tbs, SEQ) ||
        !CBS_get_optional_asn1(&tbs, &skip, &has_version, CTX_CONS(0)) ||
        !CBS_get_asn1(&tbs, &ids->serial, CBS_ASN1_INTEGER) || !CBS_get_asn1(&tbs, &skip, SEQ) ||
        !CBS_get_asn1(&tbs, &skip, SEQ) || !CBS_get_asn1(&tbs, &skip, SEQ) ||
        !CBS_get_asn1_element(&tbs, &ids->subject, SEQ) || !CBS_get_asn1(&tbs, &spki, SEQ) ||
        !CBS_get_asn1(&spki, &skip, SEQ) || !CBS_get_asn1(&spki, &bits, CBS_ASN1_BITSTRING) ||
        !CBS_get_u8(&bits, &unused) || unused != 0)
        return -EINVAL;
    ids->key = bits;
    return 0;
}

static int ids_init(struct cert_ids *ids, X509 *x)
{
    int len;

    memset(ids, 0, sizeof(*ids));
    if (x == NULL)
        return -EINVAL;
    len = i2d_X509(x, &ids->der);
    if (len <= 0)
        return -EINVAL;
    return ids_parse(ids, ids->der, (size_t)len);
}

static void ids_cleanup(struct cert_ids *ids)
{
    OPENSSL_free(ids->der);
    ids->der = NULL;
}

static bool hash(const EVP_MD *md, const CBS *in, uint8_t *out)
{
    return EVP_Digest(CBS_data(in), CBS_len(in), out, NULL, md, NULL) == 1;
}

char *tls_ocsp_url(X509 *leaf)
{
    AUTHORITY_INFO_ACCESS *aia = NULL;
    char *url = NULL;

    if (leaf == NULL)
        return NULL;
    aia = X509_get_ext_d2i(leaf, NID_info_access, NULL, NULL);
    if (aia == NULL)
        return NULL;
    for (size_t i = 0; i < sk_ACCESS_DESCRIPTION_num(aia) && url == NULL; i++) {
        const ACCESS_DESCRIPTION *ad = sk_ACCESS_DESCRIPTION_value(aia, i);
        const unsigned char *p;
        int len;
        bool clean = true;

        if (OBJ_obj2nid(ad->method) != NID_ad_OCSP || ad->location->type != GEN_URI)
            continue;
        p = ASN1_STRING_get0_data(ad->location->d.uniformResourceIdentifier);
        len = ASN1_STRING_length(ad->location->d.uniformResourceIdentifier);
        if (len <= 7 || len > OCSP_MAX_URL || strncasecmp((const char *)p, "http://", 7) != 0)
            continue;
        /* The URL goes into a request line: no byte may split or end it. */
        for (int j = 0; j < len; j++)
            clean = clean && p[j] > 0x20 && p[j] < 0x7f;
        if (clean)
            url = xstrndup((const char *)p, (size_t)len);
    }
    AUTHORITY_INFO_ACCESS_free(aia);
    return url;
}

static bool add_certid(CBB *parent, const uint8_t name_hash[20], const uint8_t key_hash[20],
                       const CBS *serial)
{
    CBB certid, alg, oid, null, name, key, ser;

    return CBB_add_asn1(parent, &certid, SEQ) && CBB_add_asn1(&certid, &alg, SEQ) &&
           CBB_add_asn1(&alg, &oid, CBS_ASN1_OBJECT) &&
           CBB_add_bytes(&oid, oid_sha1, sizeof(oid_sha1)) &&
           CBB_add_asn1(&alg, &null, CBS_ASN1_NULL) &&
           CBB_add_asn1(&certid, &name, CBS_ASN1_OCTETSTRING) &&
           CBB_add_bytes(&name, name_hash, 20) &&
           CBB_add_asn1(&certid, &key, CBS_ASN1_OCTETSTRING) && CBB_add_bytes(&key, key_hash, 20) &&
           CBB_add_asn1(&certid, &ser, CBS_ASN1_INTEGER) &&
           CBB_add_bytes(&ser, CBS_data(serial), CBS_len(serial)) && CBB_flush(parent);
}

int tls_ocsp_request(X509 *leaf, X509 *issuer, uint8_t **out, size_t *out_len)
{
    struct cert_ids leaf_ids = {0}, issuer_ids = {0};
    uint8_t name_hash[20], key_hash[20];
    CBB cbb, req, tbs, list, one;
    int rc = -EINVAL;

    CBB_zero(&cbb);
    *out = NULL;
    *out_len = 0;
    if (ids_init(&leaf_ids, leaf) < 0 || ids_init(&issuer_ids, issuer) < 0 ||
        !hash(EVP_sha1(), &issuer_ids.subject, name_hash) ||
        !hash(EVP_sha1(), &issuer_ids.key, key_hash))
        goto fail;
    rc = -ENOMEM;
    if (!CBB_init(&cbb, 128) || !CBB_add_asn1(&cbb, &req, SEQ) || !CBB_add_asn1(&req, &tbs, SEQ) ||
        !CBB_add_asn1(&tbs, &list, SEQ) || !CBB_add_asn1(&list, &one, SEQ) ||
        !add_certid(&one, name_hash, key_hash, &leaf_ids.serial) || !CBB_finish(&cbb, out, out_len))
        goto fail;
    rc = 0;
fail:
    CBB_cleanup(&cbb);
    ids_cleanup(&leaf_ids);
    ids_cleanup(&issuer_ids);
    return rc;
}

static int report(char *err, size_t err_len, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int report(char *err, size_t err_len, int rc, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && err_len > 0) {
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* days_from_civil is Howard Hinnant's proleptic Gregorian day count since 1970-01-01. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* parse_time reads a GeneralizedTime "YYYYMMDDHHMMSS[.f]Z" (fractions are ignored: RFC 5280
 * forbids them, some responders send them anyway). */
static bool parse_time(CBS *cbs, int64_t *out)
{
    static const uint8_t mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    CBS t;
    const uint8_t *p;
    size_t n, i;
    unsigned v[7];

    if (!CBS_get_asn1(cbs, &t, CBS_ASN1_GENERALIZEDTIME))
        return false;
    p = CBS_data(&t);
    n = CBS_len(&t);
    if (n < 15 || n > 25 || p[n - 1] != 'Z')
        return false;
    for (i = 0; i < 14; i++)
        if (p[i] < '0' || p[i] > '9')
            return false;
    if (n > 15) {
        if (p[14] != '.' || n == 16)
            return false;
        for (i = 15; i < n - 1; i++)
            if (p[i] < '0' || p[i] > '9')
                return false;
    }
    v[0] = (p[0] - '0') * 1000u + (p[1] - '0') * 100u + (p[2] - '0') * 10u + (p[3] - '0');
    for (i = 1; i < 6; i++)
        v[i] = (p[2 * i + 2] - '0') * 10u + (p[2 * i + 3] - '0');
    if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > mdays[v[1] - 1] || v[3] > 23 || v[4] > 59 ||
        v[5] > 59)
        return false;
    if (v[1] == 2 && v[2] == 29 && !(v[0] % 4 == 0 && (v[0] % 100 != 0 || v[0] % 400 == 0)))
        return false;
    *out = days_from_civil(v[0], v[1], v[2]) * 86400 + v[3] * 3600 + v[4] * 60 + v[5];
    return true;
}

static const char *fmt_time(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, 32, "@%lld", (long long)t);
    return buf;
}

static const char *status_name(uint8_t status)
{
    switch (status) {
    case 1:
        return "malformedRequest";
    case 2:
        return "internalError";
    case 3:
        return "tryLater";
    case 5:
        return "sigRequired";
    case 6:
        return "unauthorized";
    default:
        return "unassigned";
    }
}

/* algorithm_is reads an AlgorithmIdentifier whose parameters are absent or NULL. */
static bool algorithm_is(CBS alg, const uint8_t *oid, size_t oid_len)
{
    CBS got;

    if (!CBS_get_asn1(&alg, &got, CBS_ASN1_OBJECT))
        return false;
    if (CBS_len(&alg) != 0 &&
        !(CBS_len(&alg) == 2 && CBS_data(&alg)[0] == CBS_ASN1_NULL && CBS_data(&alg)[1] == 0))
        return false;
    return CBS_mem_equal(&got, oid, oid_len);
}

static bool verify_sig(CBS alg, CBS sig, const CBS *tbs, EVP_PKEY *key, const char **why)
{
    const struct sigalg *sa = NULL;
    EVP_MD_CTX *ctx = NULL;
    uint8_t unused;
    bool ok = false;

    for (size_t i = 0; i < ARRAY_SIZE(sigalgs) && sa == NULL; i++)
        if (algorithm_is(alg, sigalgs[i].oid, sigalgs[i].oid_len))
            sa = &sigalgs[i];
    *why = "OCSP signature algorithm is not supported";
    if (sa == NULL)
        return false;
    *why = "OCSP signature algorithm does not match the signer's key type";
    if (EVP_PKEY_id(key) != sa->key_type)
        return false;
    *why = "OCSP response signature does not verify";
    if (!CBS_get_u8(&sig, &unused) || unused != 0)
        return false;
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        return false;
    ok = EVP_DigestVerifyInit(ctx, NULL, sa->md(), NULL, key) == 1 &&
         EVP_DigestVerify(ctx, CBS_data(&sig), CBS_len(&sig), CBS_data(tbs), CBS_len(tbs)) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

/* The ResponderID: by name (the whole Name element) or by SHA-1 of the responder's key. */
struct responder_id {
    bool by_name;
    CBS value;
};

static bool responder_is(const struct responder_id *rid, const struct cert_ids *ids, X509 *cert)
{
    uint8_t digest[20];
    X509_NAME *name;
    const uint8_t *p;
    bool same;

    if (!rid->by_name)
        return hash(EVP_sha1(), &ids->key, digest) && CBS_mem_equal(&rid->value, digest, 20);
    if (CBS_mem_equal(&rid->value, CBS_data(&ids->subject), CBS_len(&ids->subject)))
        return true;
    /* Same name, other encoding (e.g. PrintableString vs UTF8String): compare canonically. */
    p = CBS_data(&rid->value);
    name = d2i_X509_NAME(NULL, &p, (long)CBS_len(&rid->value));
    same = name != NULL && X509_NAME_cmp(name, X509_get_subject_name(cert)) == 0;
    X509_NAME_free(name);
    ERR_clear_error();
    return same;
}

/* delegate_refusal says why |cand| may not answer for |issuer|'s certificates, or NULL. */
static const char *delegate_refusal(X509 *cand, X509 *issuer, EVP_PKEY *issuer_key, int64_t now)
{
    time_t t = (time_t)now;
    uint32_t flags;

    if (X509_check_issued(issuer, cand) != X509_V_OK || X509_verify(cand, issuer_key) != 1) {
        ERR_clear_error();
        return "OCSP responder certificate is not issued by the certificate's issuer";
    }
    flags = X509_get_extension_flags(cand);
    if ((flags & EXFLAG_INVALID) || !(flags & EXFLAG_XKUSAGE) ||
        !(X509_get_extended_key_usage(cand) & XKU_OCSP_SIGN))
        return "OCSP responder certificate lacks EKU OCSPSigning";
    if (X509_cmp_time(X509_get0_notBefore(cand), &t) >= 0 ||
        X509_cmp_time(X509_get0_notAfter(cand), &t) <= 0)
        return "OCSP responder certificate is outside its validity period";
    return NULL;
}

static int severity(enum tls_ocsp_status s)
{
    return s == TLS_OCSP_REVOKED ? 2 : s == TLS_OCSP_UNKNOWN ? 1 : 0;
}

/* single_parse reads one SingleResponse; |*match| says whether it is for |want|. */
static bool single_parse(CBS *responses, const struct certid_want *want,
                         struct tls_ocsp_result *res, bool *match)
{
    CBS single, certid, alg, name, key, serial, st, next, ext, reason;
    int has_next, has_ext, has_reason;
    size_t hlen = 0;
    const uint8_t *want_name = NULL, *want_key = NULL;

    memset(res, 0, sizeof(*res));
    if (!CBS_get_asn1(responses, &single, SEQ) || !CBS_get_asn1(&single, &certid, SEQ) ||
        !CBS_get_asn1(&certid, &alg, SEQ) || !CBS_get_asn1(&certid, &name, CBS_ASN1_OCTETSTRING) ||
        !CBS_get_asn1(&certid, &key, CBS_ASN1_OCTETSTRING) ||
        !CBS_get_asn1(&certid, &serial, CBS_ASN1_INTEGER) || CBS_len(&certid) != 0)
        return false;
    if (CBS_peek_asn1_tag(&single, CTX_PRIM(0))) {
        if (!CBS_get_asn1(&single, &st, CTX_PRIM(0)) || CBS_len(&st) != 0)
            return false;
        res->status = TLS_OCSP_GOOD;
    } else if (CBS_peek_asn1_tag(&single, CTX_CONS(1))) {
        if (!CBS_get_asn1(&single, &st, CTX_CONS(1)) || !parse_time(&st, &res->revoked_at) ||
            !CBS_get_optional_asn1(&st, &reason, &has_reason, CTX_CONS(0)) || CBS_len(&st) != 0)
            return false;
        res->status = TLS_OCSP_REVOKED;
    } else if (CBS_peek_asn1_tag(&single, CTX_PRIM(2))) {
        if (!CBS_get_asn1(&single, &st, CTX_PRIM(2)) || CBS_len(&st) != 0)
            return false;
        res->status = TLS_OCSP_UNKNOWN;
    } else {
        return false;
    }
    if (!parse_time(&single, &res->this_update) ||
        !CBS_get_optional_asn1(&single, &next, &has_next, CTX_CONS(0)) ||
        (has_next &&
         (!parse_time(&next, &res->next_update) || CBS_len(&next) != 0 || res->next_update <= 0)) ||
        !CBS_get_optional_asn1(&single, &ext, &has_ext, CTX_CONS(1)) || CBS_len(&single) != 0)
        return false;
    if (algorithm_is(alg, oid_sha1, sizeof(oid_sha1))) {
        hlen = 20;
        want_name = want->name1;
        want_key = want->key1;
    } else if (algorithm_is(alg, oid_sha256, sizeof(oid_sha256))) {
        hlen = 32;
        want_name = want->name256;
        want_key = want->key256;
    }
    *match = hlen != 0 && CBS_mem_equal(&name, want_name, hlen) &&
             CBS_mem_equal(&key, want_key, hlen) &&
             CBS_mem_equal(&serial, CBS_data(&want->serial), CBS_len(&want->serial));
    return true;
}

#define FAIL(code, ...)                                                                            \
    do {                                                                                           \
        rc = report(err, err_len, (code), __VA_ARGS__);                                            \
        goto done;                                                                                 \
    } while (0)

int tls_ocsp_check(const uint8_t *der, size_t der_len, X509 *leaf, X509 *issuer, int64_t now,
                   struct tls_ocsp_result *out, char *err, size_t err_len)
{
    struct cert_ids leaf_ids = {0}, issuer_ids = {0}, cert_ids[OCSP_MAX_CERTS];
    X509 *certs[OCSP_MAX_CERTS] = {0};
    size_t num_certs = 0;
    EVP_PKEY *issuer_key = NULL;
    struct certid_want want;
    struct responder_id rid;
    struct tls_ocsp_result best = {0}, cur;
    CBS in, resp, st, outer, bytes, type, octets, basic, tbs_elem, tbs, sigalg, sig, certs_outer;
    CBS list, ver, rid_outer, responses, ext, cert_der;
    int has_certs, has_ver, has_ext;
    uint64_t version;
    int64_t produced_at;
    bool found = false, match, signed_ok = false;
    const char *why = NULL;
    char tbuf[32];
    int rc = -EBADMSG;

    memset(out, 0, sizeof(*out));
    if (err != NULL && err_len > 0)
        err[0] = '\0';
    if (ids_init(&leaf_ids, leaf) < 0 || ids_init(&issuer_ids, issuer) < 0 ||
        (issuer_key = X509_get_pubkey(issuer)) == NULL)
        FAIL(-EINVAL, "OCSP check given an unusable certificate");
    want.serial = leaf_ids.serial;
    if (!hash(EVP_sha1(), &issuer_ids.subject, want.name1) ||
        !hash(EVP_sha1(), &issuer_ids.key, want.key1) ||
        !hash(EVP_sha256(), &issuer_ids.subject, want.name256) ||
        !hash(EVP_sha256(), &issuer_ids.key, want.key256))
        FAIL(-ENOMEM, "OCSP CertID hash failed");

    if (der == NULL)
        FAIL(-EBADMSG, "OCSP response is empty");
    if (der_len > OCSP_MAX_RESPONSE)
        FAIL(-EBADMSG, "OCSP response is larger than %d bytes", OCSP_MAX_RESPONSE);
    CBS_init(&in, der, der_len);
    if (!CBS_get_asn1(&in, &resp, SEQ) || CBS_len(&in) != 0 ||
        !CBS_get_asn1(&resp, &st, CBS_ASN1_ENUMERATED) || CBS_len(&st) != 1)
        FAIL(-EBADMSG, "OCSP response is not a DER OCSPResponse");
    if (CBS_data(&st)[0] != 0)
        FAIL(-EBADMSG, "OCSP responder status %u (%s)", CBS_data(&st)[0],
             status_name(CBS_data(&st)[0]));
    if (!CBS_get_asn1(&resp, &outer, CTX_CONS(0)) || CBS_len(&resp) != 0 ||
        !CBS_get_asn1(&outer, &bytes, SEQ) || CBS_len(&outer) != 0 ||
        !CBS_get_asn1(&bytes, &type, CBS_ASN1_OBJECT) ||
        !CBS_get_asn1(&bytes, &octets, CBS_ASN1_OCTETSTRING) || CBS_len(&bytes) != 0)
        FAIL(-EBADMSG, "OCSP response has malformed responseBytes");
    if (!CBS_mem_equal(&type, oid_ocsp_basic, sizeof(oid_ocsp_basic)))
        FAIL(-EBADMSG, "OCSP response type is not id-pkix-ocsp-basic");
    if (!CBS_get_asn1(&octets, &basic, SEQ) || CBS_len(&octets) != 0 ||
        !CBS_get_asn1_element(&basic, &tbs_elem, SEQ) || !CBS_get_asn1(&basic, &sigalg, SEQ) ||
        !CBS_get_asn1(&basic, &sig, CBS_ASN1_BITSTRING) ||
        !CBS_get_optional_asn1(&basic, &certs_outer, &has_certs, CTX_CONS(0)) ||
        CBS_len(&basic) != 0)
        FAIL(-EBADMSG, "OCSP response has a malformed BasicOCSPResponse");
    if (has_certs) {
        if (!CBS_get_asn1(&certs_outer, &list, SEQ) || CBS_len(&certs_outer) != 0)
            FAIL(-EBADMSG, "OCSP response has a malformed certificate list");
        while (CBS_len(&list) > 0) {
            const uint8_t *p;

            if (num_certs == OCSP_MAX_CERTS)
                FAIL(-EBADMSG, "OCSP response holds more than %d certificates", OCSP_MAX_CERTS);
            if (!CBS_get_asn1_element(&list, &cert_der, SEQ))
                FAIL(-EBADMSG, "OCSP response has a malformed certificate list");
            p = CBS_data(&cert_der);
            certs[num_certs] = d2i_X509(NULL, &p, (long)CBS_len(&cert_der));
            memset(&cert_ids[num_certs], 0, sizeof(cert_ids[num_certs]));
            if (certs[num_certs] == NULL || p != CBS_data(&cert_der) + CBS_len(&cert_der) ||
                ids_parse(&cert_ids[num_certs], CBS_data(&cert_der), CBS_len(&cert_der)) < 0) {
                num_certs += certs[num_certs] != NULL;
                FAIL(-EBADMSG, "OCSP response holds an unparsable certificate");
            }
            num_certs++;
        }
    }

    /* tbsResponseData */
    CBS_init(&list, CBS_data(&tbs_elem), CBS_len(&tbs_elem));
    if (!CBS_get_asn1(&list, &tbs, SEQ) ||
        !CBS_get_optional_asn1(&tbs, &ver, &has_ver, CTX_CONS(0)) ||
        (has_ver && (!CBS_get_asn1_uint64(&ver, &version) || version != 0 || CBS_len(&ver))))
        FAIL(-EBADMSG, "OCSP response has a malformed or unknown version");
    rid.by_name = CBS_peek_asn1_tag(&tbs, CTX_CONS(1));
    if (!CBS_get_asn1(&tbs, &rid_outer, rid.by_name ? CTX_CONS(1) : CTX_CONS(2)) ||
        !(rid.by_name ? CBS_get_asn1_element(&rid_outer, &rid.value, SEQ)
                      : CBS_get_asn1(&rid_outer, &rid.value, CBS_ASN1_OCTETSTRING)) ||
        CBS_len(&rid_outer) != 0 || (!rid.by_name && CBS_len(&rid.value) != 20))
        FAIL(-EBADMSG, "OCSP response has a malformed ResponderID");
    if (!parse_time(&tbs, &produced_at) || !CBS_get_asn1(&tbs, &responses, SEQ) ||
        !CBS_get_optional_asn1(&tbs, &ext, &has_ext, CTX_CONS(1)) || CBS_len(&tbs) != 0)
        FAIL(-EBADMSG, "OCSP response has malformed ResponseData");

    /* The signer: the issuer itself, or an included certificate it delegated to. Every
     * candidate the ResponderID names is tried, so a delegate that shares the CA's name still
     * works; the first refusal is the one reported. */
    for (size_t i = 0; i <= num_certs && !signed_ok; i++) {
        X509 *cand = i == 0 ? issuer : certs[i - 1];
        const char *refusal = NULL;

        if (!responder_is(&rid, i == 0 ? &issuer_ids : &cert_ids[i - 1], cand))
            continue;
        if (i > 0)
            refusal = delegate_refusal(cand, issuer, issuer_key, now);
        if (refusal == NULL) {
            EVP_PKEY *key = i == 0 ? issuer_key : X509_get_pubkey(cand);

            if (key == NULL)
                refusal = "OCSP responder certificate has an unusable key";
            else
                signed_ok = verify_sig(sigalg, sig, &tbs_elem, key, &refusal);
            if (key != issuer_key)
                EVP_PKEY_free(key);
        }
        if (!signed_ok && why == NULL)
            why = refusal;
    }
    if (!signed_ok)
        FAIL(-EBADMSG, "%s",
             why != NULL ? why
                         : "OCSP ResponderID matches neither the issuer nor a "
                           "certificate in the response");

    while (CBS_len(&responses) > 0) {
        if (!single_parse(&responses, &want, &cur, &match))
            FAIL(-EBADMSG, "OCSP response has a malformed SingleResponse");
        if (match && (!found || severity(cur.status) > severity(best.status)))
            best = cur;
        found = found || match;
    }
    if (!found)
        FAIL(-EBADMSG, "OCSP response does not cover the certificate");
    if (best.this_update > now + OCSP_SKEW)
        FAIL(-EBADMSG, "OCSP response is not yet valid: thisUpdate %s",
             fmt_time(best.this_update, tbuf));
    if (best.next_update != 0 && best.next_update < best.this_update)
        FAIL(-EBADMSG, "OCSP response has nextUpdate before thisUpdate");
    if (best.next_update != 0 && best.next_update < now - OCSP_SKEW)
        FAIL(-EBADMSG, "OCSP response is stale: nextUpdate %s", fmt_time(best.next_update, tbuf));
    *out = best;
    rc = 0;
done:
    EVP_PKEY_free(issuer_key);
    for (size_t i = 0; i < num_certs; i++)
        X509_free(certs[i]);
    ids_cleanup(&leaf_ids);
    ids_cleanup(&issuer_ids);
    ERR_clear_error();
    return rc;
}
