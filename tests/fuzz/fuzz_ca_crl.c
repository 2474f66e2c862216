/* fuzz_ca_crl.c: libFuzzer target for the CRL checks of the CA store (ca_crl_check on any DER
 * that BoringSSL parses as a CRL, and ca_crl_signer_ok on any DER certificate). ca_pem.c reaches
 * ca_crl_check only through a PEM block; this target feeds it DER directly. BoringSSL is not
 * instrumented, so the fuzzer cannot see its way through a CRL's DER: an input that does not
 * start with a SEQUENCE (0x30) is instead a list of extensions that build a CRL (see build_crl),
 * whose verdict is checked against what was put in it. A CRL is judged the same twice, a refusal
 * names what is wrong, and an accepted CRL re-encodes to DER that is judged the same. Without
 * -DFUZZING, replay.c replays a corpus. */
#include <openssl/is_boringssl.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <openssl/mem.h>
#include <openssl/x509.h>

#include <openssl/asn1.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/nid.h>
#include <openssl/x509v3.h>

#include "ca_crl.h"
#include "fuzz_check.h"

/* The extensions a record may add; the last is an OID no one knows (1.2.3.4). */
static const int ext_nids[] = {
    NID_authority_key_identifier, NID_crl_number,      NID_issuer_alt_name,
    NID_issuing_distribution_point, NID_delta_crl,     NID_certificate_issuer,
    NID_crl_reason,               NID_invalidity_date, NID_freshest_crl,
    NID_key_usage,                NID_undef,
};

struct expect {
    bool refuse; /* something in it must be refused */
    bool idp;    /* an IDP was added (its content decides) */
};

static bool known_critical(int nid, bool entry)
{
    if (entry)
        return nid == NID_crl_reason || nid == NID_invalidity_date;
    return nid == NID_authority_key_identifier || nid == NID_crl_number ||
           nid == NID_issuer_alt_name || nid == NID_issuing_distribution_point;
}

/* build_crl reads records "FLAGS NID-INDEX LEN VALUE[LEN]" (FLAGS bit 0: on a new revoked entry
 * rather than the CRL, bit 1: critical) and returns a CRL with those extensions, values as given,
 * after a DER round trip as the store would load it; NULL when BoringSSL refuses it. */
static X509_CRL *build_crl(const uint8_t *data, size_t size, struct expect *ex)
{
    X509_CRL *crl = X509_CRL_new();
    X509_NAME *name = X509_NAME_new();
    ASN1_TIME *t = ASN1_TIME_set(NULL, 1700000000);
    CHECK(crl != NULL && name != NULL && t != NULL);
    CHECK(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)"ca", -1, -1, 0));
    CHECK(X509_CRL_set_version(crl, X509_CRL_VERSION_2) && X509_CRL_set_issuer_name(crl, name) &&
          X509_CRL_set1_lastUpdate(crl, t));
    size_t idp_count = 0;
    long serial = 1;
    CBS in;
    CBS_init(&in, data, size);
    uint8_t flags, index;
    CBS value;
    /* A few dozen extensions say all there is to say; thousands of entries only slow it down. */
    for (int n = 0; n < 64 && CBS_get_u8(&in, &flags) && CBS_get_u8(&in, &index) &&
           CBS_get_u8_length_prefixed(&in, &value); n++) {
        int nid = ext_nids[index % (sizeof(ext_nids) / sizeof(ext_nids[0]))];
        bool entry = flags & 1, critical = flags & 2;
        ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
        CHECK(os != NULL && ASN1_OCTET_STRING_set(os, CBS_data(&value), (int)CBS_len(&value)));
        ASN1_OBJECT *obj = nid != NID_undef ? OBJ_nid2obj(nid) : OBJ_txt2obj("1.2.3.4", 1);
        X509_EXTENSION *ext = X509_EXTENSION_create_by_OBJ(NULL, obj, critical, os);
        CHECK(ext != NULL);
        if (nid == NID_undef)
            ASN1_OBJECT_free(obj);
        if (nid == NID_delta_crl || nid == NID_certificate_issuer ||
            (critical && !known_critical(nid, entry)))
            ex->refuse = true;
        if (!entry && nid == NID_issuing_distribution_point) {
            ex->idp = true;
            idp_count++;
        }
        if (entry) {
            X509_REVOKED *r = X509_REVOKED_new();
            ASN1_INTEGER *sn = ASN1_INTEGER_new();
            CHECK(r != NULL && sn != NULL && ASN1_INTEGER_set(sn, serial++));
            CHECK(X509_REVOKED_set_serialNumber(r, sn) && X509_REVOKED_set_revocationDate(r, t));
            CHECK(X509_REVOKED_add_ext(r, ext, -1) && X509_CRL_add0_revoked(crl, r));
            ASN1_INTEGER_free(sn);
        } else {
            CHECK(X509_CRL_add_ext(crl, ext, -1));
        }
        X509_EXTENSION_free(ext);
        ASN1_OCTET_STRING_free(os);
    }
    if (idp_count > 1)
        ex->refuse = true;
    ASN1_TIME_free(t);
    X509_NAME_free(name);
    uint8_t *der = NULL;
    int len = i2d_X509_CRL(crl, &der);
    X509_CRL_free(crl);
    if (len <= 0)
        return NULL;
    const uint8_t *p = der;
    crl = d2i_X509_CRL(NULL, &p, len);
    OPENSSL_free(der);
    return crl;
}

/* judge runs ca_crl_check twice and checks the verdict is stable and explained. */
static int judge(X509_CRL *crl)
{
    char what[256] = "", what2[256] = "";
    int rc = ca_crl_check(crl, what, sizeof(what));
    CHECK(rc == 0 || rc == -EINVAL);
    CHECK(rc == 0 || what[0] != '\0');
    CHECK(ca_crl_check(crl, what2, sizeof(what2)) == rc);
    CHECK(strcmp(what, what2) == 0);
    uint8_t *der = NULL;
    int len = i2d_X509_CRL(crl, &der);
    if (rc == 0 && len > 0) {
        const uint8_t *q = der;
        X509_CRL *back = d2i_X509_CRL(NULL, &q, len);
        CHECK(back != NULL);
        CHECK(ca_crl_check(back, what2, sizeof(what2)) == 0);
        X509_CRL_free(back);
    }
    OPENSSL_free(der);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 262144)
        return 0;
    if (size > 0 && data[0] != 0x30) {
        struct expect ex = {false, false};
        X509_CRL *crl = build_crl(data, size, &ex);
        if (crl != NULL) {
            int rc = judge(crl);
            if (ex.refuse)
                CHECK(rc != 0);
            else if (!ex.idp)
                CHECK(rc == 0);
            int crit = 0;
            ISSUING_DIST_POINT *idp =
                X509_CRL_get_ext_d2i(crl, NID_issuing_distribution_point, &crit, NULL);
            if (idp != NULL && (idp->onlysomereasons != NULL || idp->indirectCRL ||
                                idp->onlyuser || idp->onlyCA || idp->onlyattr))
                CHECK(rc != 0);
            if (ex.idp && !ex.refuse && idp == NULL)
                CHECK(rc != 0); /* an IDP that does not parse */
            ISSUING_DIST_POINT_free(idp);
            X509_CRL_free(crl);
        }
        ERR_clear_error(); /* else the queue's memory looks like a leak to libFuzzer */
        return 0;
    }
    const uint8_t *p = data;
    X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)size);
    if (crl != NULL) {
        judge(crl);
        X509_CRL_free(crl);
    }
    p = data;
    X509 *cert = d2i_X509(NULL, &p, (long)size);
    if (cert != NULL) {
        bool ok = ca_crl_signer_ok(cert);
        CHECK(ca_crl_signer_ok(cert) == ok);
        X509_free(cert);
    }
    ERR_clear_error();
    return 0;
}
