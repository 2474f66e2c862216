/* ca_store_check.c: what a loaded snapshot answers: whether a verified chain is revoked by the
 * CRLs of its trust set (only CRLs signed by a certificate of that set count), the earliest
 * nextUpdate of its CRLs, and a description for `certgate check`. */
#include <openssl/is_boringssl.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "ca_crl.h"
#include "ca_store_internal.h"

bool ca_store_crl_verifies(X509_CRL *crl, X509 *signer)
{
    EVP_PKEY *key = X509_get_pubkey(signer);
    bool ok = key != NULL && X509_CRL_verify(crl, key) == 1;
    EVP_PKEY_free(key);
    ERR_clear_error();
    return ok;
}

/* cs_signed_by_scope: CRL_SIGNED when a certificate of |scope| with |crl|'s issuer name that may
 * sign CRLs verifies it, else CRL_UNUSABLE when one that may not does, else CRL_UNSIGNED. */
static enum crl_state cs_signed_by_scope(X509_CRL *crl, const struct ca_scope *scope)
{
    X509_NAME *issuer = X509_CRL_get_issuer(crl);
    enum crl_state state = CRL_UNSIGNED;
    for (size_t i = 0; i < sk_X509_num(scope->certs); i++) {
        X509 *x = sk_X509_value(scope->certs, i);
        if (X509_NAME_cmp(X509_get_subject_name(x), issuer) != 0 || !ca_store_crl_verifies(crl, x))
            continue;
        if (ca_crl_signer_ok(x))
            return CRL_SIGNED;
        state = CRL_UNUSABLE;
    }
    return state;
}

/* cs_crl_state tells whether CRL |k| of |owner| is signed by a certificate of the trust set it
 * belongs to (common for common's CRLs, common + tenant for a tenant's). The load refuses a CRL
 * whose signer there lacks cRLSign, but a tenant's bundle taken unchanged from the previous
 * snapshot is not checked again against a new common: hence CRL_UNUSABLE here too. The answer is
 * memoised; racing threads compute the same value. */
static enum crl_state cs_crl_state(const struct ca_store *store, const struct ca_scope *owner,
                                   size_t k)
{
    unsigned char state = atomic_load_explicit(&owner->crl_state[k], memory_order_relaxed);
    if (state == CRL_UNKNOWN) {
        X509_CRL *crl = sk_X509_CRL_value(owner->crls, k);
        enum crl_state in_common = cs_signed_by_scope(crl, &store->common.scope);
        enum crl_state in_owner =
            owner != &store->common.scope ? cs_signed_by_scope(crl, owner) : CRL_UNSIGNED;
        state = in_common == CRL_SIGNED || in_owner == CRL_SIGNED       ? CRL_SIGNED
                : in_common == CRL_UNUSABLE || in_owner == CRL_UNUSABLE ? CRL_UNUSABLE
                                                                        : CRL_UNSIGNED;
        atomic_store_explicit(&owner->crl_state[k], state, memory_order_relaxed);
    }
    return (enum crl_state)state;
}

/* cs_check_scope checks chain[i] against the CRLs of |scope|: 1 revoked, 2 a CRL for its issuer
 * cannot be used (signed by a CA whose keyUsage lacks cRLSign), 0 neither. */
static int cs_check_scope(const struct ca_store *store, const struct ca_scope *scope,
                          STACK_OF(X509) *chain, size_t i, bool *stale)
{
    X509 *cert = sk_X509_value(chain, i);
    X509 *up = i + 1 < sk_X509_num(chain) ? sk_X509_value(chain, i + 1) : NULL;
    X509_NAME *issuer = X509_get_issuer_name(cert);
    for (size_t k = 0; k < sk_X509_CRL_num(scope->crls); k++) {
        X509_CRL *crl = sk_X509_CRL_value(scope->crls, k);
        if (X509_NAME_cmp(X509_CRL_get_issuer(crl), issuer) != 0)
            continue;
        /* The CRL counts when a CA of the trust set, or the chain's verified issuer, signed it;
         * an unverifiable CRL is ignored rather than trusted. One signed by a CA that may not
         * sign CRLs is not evidence either way: the chain is refused, never "not revoked". */
        enum crl_state state = cs_crl_state(store, scope, k);
        if (state == CRL_UNUSABLE)
            return 2;
        if (state == CRL_UNSIGNED) {
            if (!(up != NULL && X509_NAME_cmp(X509_get_subject_name(up), issuer) == 0 &&
                  ca_store_crl_verifies(crl, up)))
                continue;
            if (!ca_crl_signer_ok(up))
                return 2;
        }
        const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
        if (next != NULL && X509_cmp_current_time(next) < 0)
            *stale = true;
        X509_REVOKED *rev = NULL;
        if (X509_CRL_get0_by_serial(crl, &rev, X509_get_serialNumber(cert)) == 1)
            return 1;
    }
    return 0;
}

int ca_store_check_crl(const struct ca_store *store, const struct ca_tenant *tenant,
                       STACK_OF(X509) *chain, size_t *out_index, bool *out_stale)
{
    bool stale = false;
    int rc = 0;
    for (size_t i = 0; i < sk_X509_num(chain) && rc == 0; i++) {
        int r = cs_check_scope(store, &store->common.scope, chain, i, &stale);
        if (r == 0 && tenant != NULL)
            r = cs_check_scope(store, &tenant->scope, chain, i, &stale);
        if (r != 0) {
            *out_index = i;
            rc = r == 1 ? -EACCES : -EPROTO;
        }
    }
    if (out_stale != NULL)
        *out_stale = stale;
    return rc;
}


static void cs_describe_scope(const struct ca_store *store, const struct ca_scope *scope, BIO *bio)
{
    for (size_t i = 0; i < sk_X509_num(scope->certs); i++) {
        X509 *x = sk_X509_value(scope->certs, i);
        BIO_puts(bio, "  CA ");
        X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
        BIO_puts(bio, " (notAfter ");
        ASN1_TIME_print(bio, X509_get0_notAfter(x));
        BIO_puts(bio, X509_cmp_current_time(X509_get0_notAfter(x)) < 0 ? ", EXPIRED)\n" : ")\n");
    }
    for (size_t i = 0; i < sk_X509_CRL_num(scope->crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(scope->crls, i);
        const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
        BIO_puts(bio, "  CRL ");
        X509_NAME_print_ex(bio, X509_CRL_get_issuer(crl), 0, XN_FLAG_RFC2253);
        BIO_puts(bio, " (nextUpdate ");
        if (next != NULL)
            ASN1_TIME_print(bio, next);
        else
            BIO_puts(bio, "none");
        if (next != NULL && X509_cmp_current_time(next) < 0)
            BIO_puts(bio, ", STALE");
        enum crl_state state = cs_crl_state(store, scope, i);
        if (state == CRL_UNSIGNED)
            BIO_puts(bio, ", issuer not in the trust set: used only when a chain holds it");
        else if (state == CRL_UNUSABLE)
            BIO_puts(bio, ", signed by a CA without cRLSign: the chains it covers are refused");
        BIO_puts(bio, ")\n");
    }
    ERR_clear_error();
}

static void cs_describe_counts(BIO *bio, const struct ca_scope *scope)
{
    size_t nc = sk_X509_num(scope->certs), nr = sk_X509_CRL_num(scope->crls);
    BIO_printf(bio, "%zu certificate%s, %zu CRL%s", nc, nc == 1 ? "" : "s", nr, nr == 1 ? "" : "s");
}

void ca_store_describe(const struct ca_store *store, FILE *out)
{
    BIO *bio = BIO_new_fp(out, BIO_NOCLOSE);
    if (bio == NULL)
        abort();
    BIO_printf(bio, "CA store %s: %zu tenant%s, %zu load error%s\n", store->dir, store->num_tenants,
               store->num_tenants == 1 ? "" : "s", store->num_errors,
               store->num_errors == 1 ? "" : "s");
    BIO_puts(bio, "common: ");
    cs_describe_counts(bio, &store->common.scope);
    BIO_puts(bio, "\n");
    cs_describe_scope(store, &store->common.scope, bio);
    for (size_t i = 0; i < store->num_tenants; i++) {
        const struct ca_tenant *t = &store->tenants[i];
        BIO_printf(bio, "tenant %s: ", t->id);
        cs_describe_counts(bio, &t->scope);
        BIO_puts(bio, t->from_previous ? " (kept from the previous load)\n" : "\n");
        cs_describe_scope(store, &t->scope, bio);
    }
    for (size_t i = 0; i < store->num_errors; i++)
        BIO_printf(bio, "error: tenant %s: %s\n", store->errors[i].tenant_id,
                   store->errors[i].message);
    BIO_free(bio);
}


static int64_t cs_unix_time(const ASN1_TIME *t)
{
    int days = 0, secs = 0;
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    int ok = epoch != NULL && ASN1_TIME_diff(&days, &secs, epoch, t);
    ASN1_TIME_free(epoch);
    return ok ? (int64_t)days * 86400 + secs : 0;
}

static void cs_scope_next_update(const struct ca_scope *scope, int64_t *earliest)
{
    for (size_t i = 0; i < sk_X509_CRL_num(scope->crls); i++) {
        const ASN1_TIME *next = X509_CRL_get0_nextUpdate(sk_X509_CRL_value(scope->crls, i));
        if (next == NULL)
            continue;
        int64_t t = cs_unix_time(next);
        if (t < *earliest)
            *earliest = t;
    }
}

int64_t ca_store_crl_next_update(const struct ca_store *store, const struct ca_tenant *tenant)
{
    int64_t earliest = INT64_MAX;
    cs_scope_next_update(&store->common.scope, &earliest);
    if (tenant != NULL)
        cs_scope_next_update(&tenant->scope, &earliest);
    return earliest;
}
