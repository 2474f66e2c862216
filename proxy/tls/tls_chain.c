/* tls_chain.c: what a chain that failed or passed verification says, for tls_verify.c: reasons
 * an operator can act on (SECURITY 28: an issuer that cannot issue, a wrong purpose, a name
 * constraint BoringSSL does not enforce), anchors that must not be used, the earliest notAfter. */
#include <openssl/is_boringssl.h>

#include "tls/tls_chain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "core/base.h"
#include "tls/tls_anchor.h"

/* --- reasons an operator can act on (SECURITY 28) ---------------------------------------- */

/* A certificate named |name| in the trust set of |tenant| or among the client's certificates
 * that cannot issue certificates: BoringSSL skipped it while building the chain and reports the
 * issuer as unknown. Writes what is wrong with it to |why|. */
static bool unusable_issuer(const struct tls_listener *tl, const struct ca_tenant *tenant,
                            STACK_OF(X509) *peer, X509_NAME *name, char *why, size_t len)
{
    const STACK_OF(X509) *sets[3] = {peer, NULL, NULL};
    if (tl->gen->store != NULL) {
        sets[1] = ca_store_cas(tl->gen->store, NULL);
        sets[2] = tenant ? ca_store_cas(tl->gen->store, tenant) : NULL;
    }
    for (size_t s = 0; s < ARRAY_SIZE(sets); s++)
        for (size_t i = 0; sets[s] != NULL && i < sk_X509_num(sets[s]); i++) {
            X509 *x = sk_X509_value(sets[s], i);
            if (X509_NAME_cmp(X509_get_subject_name(x), name) == 0 &&
                tls_anchor_problem(x, true, why, len))
                return true;
        }
    return false;
}

/* Why |x| may not serve for client authentication: X509_V_ERR_INVALID_PURPOSE says only
 * "unsupported certificate purpose" for the EKU, the keyUsage and a CA's usages alike. */
static void purpose_reason(X509 *x, bool is_leaf, char *out, size_t len)
{
    uint32_t flags = X509_get_extension_flags(x);
    char why[256];
    if ((flags & EXFLAG_XKUSAGE) && !(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT))
        snprintf(why, sizeof(why), "extended key usage without clientAuth");
    else if (is_leaf && (flags & EXFLAG_KUSAGE) &&
             !(X509_get_key_usage(x) & (KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT)))
        snprintf(why, sizeof(why), "key usage without digitalSignature or keyAgreement");
    else if (is_leaf || !tls_anchor_problem(x, true, why, sizeof(why)))
        snprintf(why, sizeof(why), "key usage or Netscape certificate type");
    if (is_leaf) {
        snprintf(out, len, "certificate not allowed for client authentication (%s)", why);
        return;
    }
    char *subject = tls_peer_name_rfc2253(X509_get_subject_name(x));
    snprintf(out, len, "CA certificate \"%s\" of the chain may not issue client certificates (%s)",
             subject, why);
    free(subject);
}

void tls_chain_error_reason(X509_STORE_CTX *ctx, const struct tls_listener *tl,
                            const struct ca_tenant *tenant, STACK_OF(X509) *peer, X509 *leaf,
                            char *reason, size_t len, const char **result, uint8_t *out_alert)
{
    const char *tenant_name = tenant ? ca_store_tenant_id(tenant) : "common";
    int e = X509_STORE_CTX_get_error(ctx);
    X509 *bad = X509_STORE_CTX_get_current_cert(ctx);
    if (bad == NULL)
        bad = leaf;
    char when[64], why[256];
    *result = "untrusted";
    *out_alert = SSL_AD_BAD_CERTIFICATE;
    switch (e) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        tls_peer_time_string(X509_get0_notAfter(bad), when, sizeof(when));
        snprintf(reason, len, "certificate expired at %s", when);
        if (bad != leaf) {
            char *subject = tls_peer_name_rfc2253(X509_get_subject_name(bad));
            snprintf(reason, len, "CA certificate \"%s\" of the chain expired at %s", subject,
                     when);
            free(subject);
        }
        *result = "expired";
        *out_alert = SSL_AD_CERTIFICATE_EXPIRED;
        return;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        tls_peer_time_string(X509_get0_notBefore(bad), when, sizeof(when));
        snprintf(reason, len, "certificate not yet valid (from %s)", when);
        *result = "expired";
        *out_alert = SSL_AD_CERTIFICATE_EXPIRED;
        return;
    case X509_V_ERR_INVALID_PURPOSE:
        purpose_reason(bad, bad == leaf, reason, len);
        *result = "policy";
        *out_alert = SSL_AD_UNSUPPORTED_CERTIFICATE;
        return;
    case X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY: {
        char *issuer = tls_peer_name_rfc2253(X509_get_issuer_name(bad));
        snprintf(reason, len, "issuer \"%s\" cannot be used: its key type is not supported",
                 issuer);
        free(issuer);
        return;
    }
    case X509_V_ERR_INVALID_CA:
    case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
    case X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION:
    case X509_V_ERR_INVALID_EXTENSION: {
        if (!tls_anchor_problem(bad, true, why, sizeof(why)))
            snprintf(why, sizeof(why), "%s", X509_verify_cert_error_string(e));
        char *subject = tls_peer_name_rfc2253(X509_get_subject_name(bad));
        snprintf(reason, len, "certificate \"%s\" of the chain cannot be used%s: %s", subject,
                 bad == leaf ? "" : " as a CA", why);
        free(subject);
        return;
    }
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE: {
        char *issuer = tls_peer_name_rfc2253(X509_get_issuer_name(bad));
        if (unusable_issuer(tl, tenant, peer, X509_get_issuer_name(bad), why, sizeof(why)))
            snprintf(reason, len,
                     "issuer \"%s\" is in the trust set of tenant %s or the client's chain but "
                     "cannot issue certificates: %s",
                     issuer, tenant_name, why);
        else
            snprintf(reason, len, "unknown issuer \"%s\" (not in the trust set of tenant %s)",
                     issuer, tenant_name);
        free(issuer);
        *out_alert = SSL_AD_UNKNOWN_CA;
        return;
    }
    default:
        snprintf(reason, len, "certificate rejected: %s", X509_verify_cert_error_string(e));
        return;
    }
}

/* --- name constraints (SECURITY 28) ------------------------------------------------------ */

static bool dns_name_ok(const ASN1_STRING *a, bool constraint)
{
    return tls_anchor_dns_name_ok(ASN1_STRING_get0_data(a), (size_t)ASN1_STRING_length(a),
                                  constraint);
}

static bool subtrees_ok(const STACK_OF(GENERAL_SUBTREE) *trees)
{
    for (size_t i = 0; i < sk_GENERAL_SUBTREE_num(trees); i++) {
        const GENERAL_SUBTREE *t = sk_GENERAL_SUBTREE_value(trees, i);
        /* RFC 5280 4.2.1.10: minimum is 0 and maximum absent. */
        if (t->minimum != NULL || t->maximum != NULL)
            return false;
        if (t->base->type == GEN_DNS && !dns_name_ok(t->base->d.dNSName, true))
            return false;
    }
    return true;
}

/* BoringSSL (2022) lets "*.example.com" pass an excluded "bar.example.com", accepts malformed
 * constraints and constraints in a leaf: refuse what it cannot judge. */
bool tls_chain_name_constraints_problem(STACK_OF(X509) *verified, char *out, size_t len)
{
    X509 *leaf = sk_X509_value(verified, 0);
    if (X509_get_ext_by_NID(leaf, NID_name_constraints, -1) >= 0) {
        snprintf(out, len, "the client certificate carries name constraints (only a CA may)");
        return true;
    }
    bool constrained = false;
    for (size_t i = 1; i < sk_X509_num(verified); i++) {
        X509 *ca = sk_X509_value(verified, i);
        if (X509_get_ext_by_NID(ca, NID_name_constraints, -1) < 0)
            continue;
        constrained = true;
        NAME_CONSTRAINTS *nc = X509_get_ext_d2i(ca, NID_name_constraints, NULL, NULL);
        bool ok = nc != NULL && subtrees_ok(nc->permittedSubtrees) &&
                  subtrees_ok(nc->excludedSubtrees);
        NAME_CONSTRAINTS_free(nc);
        ERR_clear_error();
        if (!ok) {
            char *subject = tls_peer_name_rfc2253(X509_get_subject_name(ca));
            snprintf(out, len, "the name constraints of CA \"%s\" are malformed", subject);
            free(subject);
            return true;
        }
    }
    if (!constrained)
        return false;
    int crit = -1;
    GENERAL_NAMES *sans = X509_get_ext_d2i(leaf, NID_subject_alt_name, &crit, NULL);
    ERR_clear_error();
    if (sans == NULL && crit != -1) {
        snprintf(out, len, "the client certificate's subjectAltName does not parse (its chain "
                           "has name constraints)");
        return true;
    }
    bool bad = false;
    for (size_t i = 0; !bad && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        if (gn->type != GEN_DNS)
            continue;
        const ASN1_STRING *a = gn->d.dNSName;
        bool wildcard = memchr(ASN1_STRING_get0_data(a), '*', (size_t)ASN1_STRING_length(a));
        if (wildcard || !dns_name_ok(a, false)) {
            snprintf(out, len,
                     "the client certificate has a %s DNS name \"%.*s\" and its chain has name "
                     "constraints, which cannot judge it",
                     wildcard ? "wildcard" : "malformed", (int)MIN(ASN1_STRING_length(a), 100),
                     ASN1_STRING_get0_data(a));
            bad = true;
        }
    }
    GENERAL_NAMES_free(sans);
    return bad;
}

/* BoringSSL (2022) checks the extensions of the certificates the client sent, not of the
 * anchor: a store certificate that is not a CA, lacks keyCertSign or has a critical extension
 * nobody processes would issue clients. It is an anchor for itself only (a pinned leaf). */
bool tls_chain_unusable_anchor(STACK_OF(X509) *verified, const char *tenant_name, char *out,
                               size_t len)
{
    size_t n = sk_X509_num(verified);
    char why[256];
    if (n < 2 || !tls_anchor_problem(sk_X509_value(verified, n - 1), false, why, sizeof(why)))
        return false;
    char *issuer = tls_peer_name_rfc2253(X509_get_subject_name(sk_X509_value(verified, n - 1)));
    snprintf(out, len,
             "issuer \"%s\" is in the trust set of tenant %s but cannot issue certificates: %s",
             issuer, tenant_name, why);
    free(issuer);
    return true;
}

/* The earliest notAfter of the verified chain, anchors from the store included. */
int64_t tls_chain_not_after(STACK_OF(X509) *verified)
{
    int64_t first = INT64_MAX;
    for (size_t i = 0; i < sk_X509_num(verified); i++)
        first = MIN(first, tls_peer_asn1_unix(X509_get0_notAfter(sk_X509_value(verified, i))));
    return first;
}
