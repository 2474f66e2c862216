/* ca_crl.c: the checks that make a parsed CRL evidence or a load error. A CRL that certgate cannot
 * read in full would answer "not revoked" for certificates it was never meant to clear (a delta,
 * a partition, an indirect CRL) or hide a rule the issuer marked critical; so such a CRL fails its
 * bundle instead of being half-used. */
#include <openssl/is_boringssl.h>

#include "ca_crl.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/nid.h>
#include <openssl/obj.h>
#include <openssl/x509v3.h>

/* Extensions of the CRL itself that may be critical: understood (or, for the authority key
 * identifier and the issuer's alternative name, informational only). The Issuing Distribution
 * Point is understood in that its narrowing fields are refused below. */
static const int crl_known_critical[] = {
    NID_authority_key_identifier,
    NID_crl_number,
    NID_issuer_alt_name,
    NID_issuing_distribution_point,
};

/* Entry extensions that may be critical: the reason and the invalidity date only qualify the
 * revocation, which certgate honours whatever they say. */
static const int crl_entry_known_critical[] = {
    NID_crl_reason,
    NID_invalidity_date,
};

static bool crl_nid_in(int nid, const int *set, size_t num)
{
    for (size_t i = 0; i < num; i++)
        if (set[i] == nid)
            return true;
    return false;
}

static int crl_fail(char *what, size_t what_len, const char *text, const ASN1_OBJECT *obj)
{
    char oid[80] = "";
    if (obj != NULL && OBJ_obj2txt(oid, sizeof(oid), obj, 1) < 0)
        oid[0] = '\0';
    if (what_len > 0)
        snprintf(what, what_len, "%s%s%s", text, obj != NULL ? " " : "", oid);
    return -EINVAL;
}

/* crl_check_exts checks one list of extensions, of the CRL or of an entry. */
static int crl_check_exts(const STACK_OF(X509_EXTENSION) *exts, const int *known, size_t num_known,
                          const char *where, char *what, size_t what_len)
{
    char text[96];
    for (size_t i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, i);
        const ASN1_OBJECT *obj = X509_EXTENSION_get_object(ext);
        int nid = OBJ_obj2nid(obj);
        if (nid == NID_delta_crl)
            return crl_fail(what, what_len,
                            "is a delta CRL (deltaCRLIndicator): certgate reads "
                            "complete CRLs only",
                            NULL);
        if (nid == NID_certificate_issuer)
            return crl_fail(what, what_len,
                            "has an entry for another issuer (certificateIssuer): "
                            "indirect CRLs are not supported",
                            NULL);
        if (X509_EXTENSION_get_critical(ext) && !crl_nid_in(nid, known, num_known)) {
            snprintf(text, sizeof(text), "has an unknown critical %sextension", where);
            return crl_fail(what, what_len, text, obj);
        }
    }
    return 0;
}

static int crl_check_idp(X509_CRL *crl, char *what, size_t what_len)
{
    int crit = -1;
    ISSUING_DIST_POINT *idp =
        X509_CRL_get_ext_d2i(crl, NID_issuing_distribution_point, &crit, NULL);
    if (idp == NULL) {
        ERR_clear_error();
        if (crit == -1)
            return 0; /* none */
        return crl_fail(what, what_len,
                        crit == -2 ? "has more than one Issuing Distribution Point"
                                   : "has an Issuing Distribution Point that does not parse",
                        NULL);
    }
    const char *narrow = idp->onlysomereasons != NULL ? "onlySomeReasons"
                         : idp->indirectCRL           ? "indirectCRL"
                         : idp->onlyuser              ? "onlyContainsUserCerts"
                         : idp->onlyCA                ? "onlyContainsCACerts"
                         : idp->onlyattr              ? "onlyContainsAttributeCerts"
                                                      : NULL;
    ISSUING_DIST_POINT_free(idp);
    if (narrow == NULL)
        return 0;
    char text[96];
    snprintf(text, sizeof(text), "has an Issuing Distribution Point that narrows its scope (%s)",
             narrow);
    return crl_fail(what, what_len, text, NULL);
}

int ca_crl_check(X509_CRL *crl, char *what, size_t what_len)
{
    int rc = crl_check_exts(X509_CRL_get0_extensions(crl), crl_known_critical,
                            sizeof(crl_known_critical) / sizeof(crl_known_critical[0]), "", what,
                            what_len);
    if (rc == 0)
        rc = crl_check_idp(crl, what, what_len);
    STACK_OF(X509_REVOKED) *revoked = X509_CRL_get_REVOKED(crl);
    for (size_t i = 0; rc == 0 && i < sk_X509_REVOKED_num(revoked); i++)
        rc = crl_check_exts(X509_REVOKED_get0_extensions(sk_X509_REVOKED_value(revoked, i)),
                            crl_entry_known_critical,
                            sizeof(crl_entry_known_critical) / sizeof(crl_entry_known_critical[0]),
                            "entry ", what, what_len);
    return rc;
}

bool ca_crl_signer_ok(X509 *signer)
{
    uint32_t ku = X509_get_key_usage(signer);
    return ku == UINT32_MAX || (ku & KU_CRL_SIGN) != 0;
}
