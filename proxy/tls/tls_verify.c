/* tls_verify.c: client-certificate verification: the chain against the tenant's trust set, CRLs
 * and the listener's policy (weak signatures and keys, subject_cn_pattern), refusals logged with
 * reasons an operator can act on, and a per-thread cache of verified chains. */
#include <openssl/is_boringssl.h>

#include "tls/tls_verify.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/pool.h>
#include <openssl/x509v3.h>

#include "core/base.h"
#include "core/log.h"
#include "core/metrics.h"
#include "tls/allowlist.h"
#include "tls/tls_anchor.h"
#include "tls/tls_chain.h"
#include "tls/tls_revocation.h"

#define MAX_CHAIN_DEPTH 8
#define MIN_RSA_BITS 2048

void tls_verify_init(void)
{
    tls_peer_init();
    tls_revocation_init();
}

/* --- policy and the verified-chain cache -------------------------------------------------- */

static bool weak_signature(const X509 *x)
{
    switch (X509_get_signature_nid(x)) {
    case NID_md5WithRSAEncryption:
    case NID_md5WithRSA:
    case NID_sha1WithRSAEncryption:
    case NID_sha1WithRSA:
    case NID_ecdsa_with_SHA1:
    case NID_dsaWithSHA1:
        return true;
    default:
        return false;
    }
}

/* Why the key of |x| is refused (written to |out|), or false when it is usable. */
static bool key_problem(X509 *x, size_t i, char *out, size_t len)
{
    EVP_PKEY *pk = X509_get_pubkey(x);
    ERR_clear_error();
    if (pk == NULL) {
        snprintf(out, len, "certificate %zu of the chain has a key type certgate does not support",
                 i);
        return true;
    }
    bool weak = EVP_PKEY_id(pk) == EVP_PKEY_RSA && EVP_PKEY_bits(pk) < MIN_RSA_BITS;
    EVP_PKEY_free(pk);
    if (weak)
        snprintf(out, len, "certificate %zu of the chain has a key under %d bits", i, MIN_RSA_BITS);
    return weak;
}

/* Common-name check against the listener's subject_cn_pattern. */
static bool cn_matches(struct tls_listener *tl, X509 *leaf)
{
    if (!tl->has_cn_re)
        return true;
    X509_NAME *name = X509_get_subject_name(leaf);
    int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (idx < 0)
        return false;
    ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, s);
    if (n < 0)
        return false;
    bool ok = memchr(utf8, '\0', (size_t)n) == NULL &&
              regexec(&tl->cn_re, (const char *)utf8, 0, NULL, 0) == 0;
    OPENSSL_free(utf8);
    return ok;
}

static bool peer_chain_unparsable(const SSL *ssl)
{
    const STACK_OF(CRYPTO_BUFFER) *bufs = SSL_get0_peer_certificates(ssl);
    for (size_t i = 0; i < sk_CRYPTO_BUFFER_num(bufs); i++) {
        CBS cbs;
        CRYPTO_BUFFER_init_CBS(sk_CRYPTO_BUFFER_value(bufs, i), &cbs);
        const uint8_t *p = CBS_data(&cbs);
        X509 *x = d2i_X509(NULL, &p, (long)CBS_len(&cbs));
        if (x == NULL) {
            ERR_clear_error();
            return true;
        }
        X509_free(x);
    }
    return false;
}

/* Verified chains are remembered per worker thread, keyed by the chain's bytes, the tenant,
 * the listener and the generation (which fixes the trust set, the CRLs and the policy), until
 * the first notAfter of the *verified* chain (the anchors and intermediates the store supplied
 * count: an expired CA must not be served from here, SECURITY 22) or the first CRL nextUpdate:
 * a gateway that reconnects costs a hash, not a verification. Only successes are cached. */
#define VERIFY_CACHE_SIZE 1024

struct verify_entry {
    uint8_t key[SHA256_DIGEST_LENGTH];
    uint64_t gen_id;
    int64_t expires; /* Unix time */
};

static _Thread_local struct verify_entry *verify_cache;

static void chain_key(const SSL *ssl, const struct tls_listener *tl, const char *tenant_id,
                      uint8_t out[SHA256_DIGEST_LENGTH])
{
    const STACK_OF(CRYPTO_BUFFER) *bufs = SSL_get0_peer_certificates(ssl);
    SHA256_CTX sha;
    SHA256_Init(&sha);
    uint64_t index = tl->index;
    SHA256_Update(&sha, &index, sizeof(index));
    SHA256_Update(&sha, tenant_id, strlen(tenant_id) + 1);
    for (size_t i = 0; i < sk_CRYPTO_BUFFER_num(bufs); i++) {
        const CRYPTO_BUFFER *b = sk_CRYPTO_BUFFER_value(bufs, i);
        uint64_t len = CRYPTO_BUFFER_len(b);
        SHA256_Update(&sha, &len, sizeof(len));
        SHA256_Update(&sha, CRYPTO_BUFFER_data(b), CRYPTO_BUFFER_len(b));
    }
    SHA256_Final(out, &sha);
}

static struct verify_entry *verify_slot(const uint8_t key[SHA256_DIGEST_LENGTH])
{
    if (verify_cache == NULL)
        verify_cache = xcalloc(VERIFY_CACHE_SIZE, sizeof(*verify_cache));
    uint32_t h;
    memcpy(&h, key, sizeof(h));
    return &verify_cache[h % VERIFY_CACHE_SIZE];
}

void tls_verify_thread_cleanup(void)
{
    free(verify_cache);
    verify_cache = NULL;
}

/* Whether the calling thread verified this chain under |tl|'s generation and it is still in
 * its validity window. */
static bool cache_fresh(const struct tls_listener *tl, const uint8_t key[SHA256_DIGEST_LENGTH])
{
    const struct verify_entry *e = verify_slot(key);
    return e->gen_id == tl->gen->id && memcmp(e->key, key, SHA256_DIGEST_LENGTH) == 0 &&
           (int64_t)time(NULL) < e->expires;
}

static void cache_put(const struct tls_listener *tl, const uint8_t key[SHA256_DIGEST_LENGTH],
                      int64_t expires)
{
    struct verify_entry *e = verify_slot(key);
    memcpy(e->key, key, SHA256_DIGEST_LENGTH);
    e->gen_id = tl->gen->id;
    e->expires = expires;
}

/* --- verification ------------------------------------------------------------------------- */

bool tls_verify_allowed(X509 *leaf)
{
    if (leaf == NULL)
        return false;
    char *subject = tls_peer_name_rfc2253(X509_get_subject_name(leaf));
    char *canon = NULL;
    bool ok = allowlist_canon(subject, &canon) == 0 && allowlist_contains(canon);
    free(canon);
    free(subject);
    return ok;
}

/* The allowlist changes at any time: it is checked after the verified-chain cache, on every
 * full handshake (resumed ones and requests are checked by conn.c). */
static enum ssl_verify_result_t check_allowed(SSL *ssl, const struct tls_listener *tl,
                                              uint8_t *out_alert)
{
    if (!tl->lc->require_allowed_subject || !tl->lc->verify)
        return ssl_verify_ok;
    STACK_OF(X509) *peer = tls_peer_chain(ssl);
    X509 *leaf = peer && sk_X509_num(peer) > 0 ? sk_X509_value(peer, 0) : NULL;
    enum ssl_verify_result_t ret = ssl_verify_ok;
    if (leaf != NULL && !tls_verify_allowed(leaf)) {
        tls_peer_log_refusal(ssl, "policy",
                               "the certificate's subject is not in the allowlist "
                               "(access.allowed_subjects_file)",
                               leaf);
        *out_alert = SSL_AD_ACCESS_DENIED;
        ret = ssl_verify_invalid;
    }
    sk_X509_pop_free(peer, X509_free);
    return ret;
}

/* tls_verify_chain, remembering a success under |key| (NULL: not cacheable) until the first
 * notAfter of the verified chain or a CRL is due (a stale CRL: not cached, so that every
 * verification says so). */
static enum ssl_verify_result_t verify_remember(SSL *ssl, struct tls_listener *tl,
                                                const struct ca_tenant *tenant,
                                                STACK_OF(X509) *peer, const uint8_t *key,
                                                uint8_t *out_alert, X509 **out_issuer)
{
    int64_t expires = INT64_MAX;
    enum ssl_verify_result_t ret =
        tls_verify_chain(ssl, tl, tenant, peer, out_alert, out_issuer, &expires);
    if (ret != ssl_verify_ok || key == NULL)
        return ret;
    if (tl->gen->store != NULL && tl->gen->cfg->revocation_crl)
        expires = MIN(expires, ca_store_crl_next_update(tl->gen->store, tenant));
    cache_put(tl, key, expires);
    return ret;
}

enum ssl_verify_result_t tls_verify_handshake(SSL *ssl, uint8_t *out_alert)
{
    struct tls_listener *tl = tls_peer_listener_of(ssl);
    struct tls_peer *pe = tls_peer_of(ssl);
    const struct ca_tenant *tenant = pe ? pe->tenant : NULL;
    const STACK_OF(CRYPTO_BUFFER) *bufs = SSL_get0_peer_certificates(ssl);
    bool cacheable = tl->lc->verify && bufs != NULL && sk_CRYPTO_BUFFER_num(bufs) > 0;
    /* Called again once an OCSP query of this handshake finished: the chain was verified. */
    int pending = tls_revocation_resume(ssl, tl, out_alert);
    if (pending >= 0)
        return (enum ssl_verify_result_t)pending;
    uint8_t key[SHA256_DIGEST_LENGTH];
    if (cacheable) {
        chain_key(ssl, tl, tenant ? ca_store_tenant_id(tenant) : "", key);
        if (cache_fresh(tl, key)) {
            /* A cached chain still needs the allowlist and the leaf's OCSP answer; when the
             * answer cache does not have it, verify again to learn the issuer the query needs. */
            if (check_allowed(ssl, tl, out_alert) != ssl_verify_ok)
                return ssl_verify_invalid;
            int cached = tls_revocation_cached(ssl, tl, out_alert);
            if (cached >= 0)
                return (enum ssl_verify_result_t)cached;
        }
    }
    if (SSL_get0_peer_certificates(ssl) != NULL && peer_chain_unparsable(ssl)) {
        tls_peer_log_refusal(ssl, "error", "the client's certificate does not parse", NULL);
        *out_alert = SSL_AD_BAD_CERTIFICATE;
        return ssl_verify_invalid;
    }
    STACK_OF(X509) *peer = tls_peer_chain(ssl);
    X509 *issuer = NULL;
    enum ssl_verify_result_t ret =
        verify_remember(ssl, tl, tenant, peer, cacheable ? key : NULL, out_alert, &issuer);
    /* The allowlist first: a client it refuses costs no OCSP query. */
    if (ret == ssl_verify_ok)
        ret = check_allowed(ssl, tl, out_alert);
    if (ret == ssl_verify_ok && peer != NULL && sk_X509_num(peer) > 0)
        ret = tls_revocation_check(ssl, tl, sk_X509_value(peer, 0), issuer, out_alert);
    X509_free(issuer);
    sk_X509_pop_free(peer, X509_free);
    return ret;
}

int tls_verify_resumed(SSL *ssl)
{
    struct tls_listener *tl = tls_peer_listener_of(ssl);
    uint8_t alert = 0;
    if (tl == NULL || !tl->lc->verify)
        return ssl_verify_ok;
    bool ocsp = tl->gen->cfg->revocation_ocsp != OCSP_OFF;
    int r = ocsp ? tls_revocation_resume(ssl, tl, &alert) : -1;
    if (r >= 0)
        return r;
    /* The session skipped the verify callback, and its chain was verified when the ticket was
     * made: the leaf or a CA may have expired since (SECURITY 22). The session id context
     * already ties it to this trust set and these CRLs; time is checked here, from the cache of
     * verified chains (whose entries end at the first notAfter) or by verifying again. */
    struct tls_peer *pe = tls_peer_of(ssl);
    const struct ca_tenant *tenant = pe ? pe->tenant : NULL;
    const STACK_OF(CRYPTO_BUFFER) *bufs = SSL_get0_peer_certificates(ssl);
    bool cacheable = bufs != NULL && sk_CRYPTO_BUFFER_num(bufs) > 0;
    uint8_t key[SHA256_DIGEST_LENGTH];
    if (cacheable) {
        chain_key(ssl, tl, tenant ? ca_store_tenant_id(tenant) : "", key);
        if (cache_fresh(tl, key)) {
            r = ocsp ? tls_revocation_cached(ssl, tl, &alert) : ssl_verify_ok;
            if (r >= 0)
                return r;
        }
    }
    /* Not cached, or no OCSP answer cached for the session's leaf: verify its chain again,
     * which also gives the issuer the query needs. */
    STACK_OF(X509) *peer = tls_peer_chain(ssl);
    X509 *issuer = NULL;
    r = verify_remember(ssl, tl, tenant, peer, cacheable ? key : NULL, &alert, &issuer);
    if (r == ssl_verify_ok && ocsp && peer != NULL && sk_X509_num(peer) > 0)
        r = tls_revocation_check(ssl, tl, sk_X509_value(peer, 0), issuer, &alert);
    X509_free(issuer);
    sk_X509_pop_free(peer, X509_free);
    return r;
}

/* --- the chain ----------------------------------------------------------------------------- */

enum ssl_verify_result_t tls_verify_chain(SSL *ssl, struct tls_listener *tl,
                                          const struct ca_tenant *tenant, STACK_OF(X509) *peer,
                                          uint8_t *out_alert, X509 **out_issuer,
                                          int64_t *out_not_after)
{
    if (out_issuer != NULL)
        *out_issuer = NULL;
    X509 *leaf = peer && sk_X509_num(peer) > 0 ? sk_X509_value(peer, 0) : NULL;
    char reason[512];
    const char *result = "untrusted";
    if (leaf == NULL) {
        if (tl->lc->client_auth == CLIENT_AUTH_REQUIRE) {
            tls_peer_log_refusal(ssl, "no_cert", "the client sent no certificate", NULL);
            *out_alert = SSL_AD_CERTIFICATE_REQUIRED;
            return ssl_verify_invalid;
        }
        return ssl_verify_ok;
    }
    if (!tl->lc->verify)
        return ssl_verify_ok;

    const char *tenant_name = tenant ? ca_store_tenant_id(tenant) : "common";
    X509_STORE *store = tl->gen->store ? ca_store_trust(tl->gen->store, tenant) : NULL;
    if (store == NULL) {
        tls_peer_log_refusal(ssl, "untrusted", "no CA store is loaded", leaf);
        *out_alert = SSL_AD_UNKNOWN_CA;
        return ssl_verify_invalid;
    }
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    enum ssl_verify_result_t ret = ssl_verify_invalid;
    if (ctx == NULL || !X509_STORE_CTX_init(ctx, store, leaf, peer)) {
        snprintf(reason, sizeof(reason), "internal error setting up verification");
        result = "error";
        *out_alert = SSL_AD_INTERNAL_ERROR;
        goto refuse;
    }
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
    X509_VERIFY_PARAM_set_depth(X509_STORE_CTX_get0_param(ctx), MAX_CHAIN_DEPTH);
    if (X509_verify_cert(ctx) != 1) {
        tls_chain_error_reason(ctx, tl, tenant, peer, leaf, reason, sizeof(reason), &result,
                            out_alert);
        goto refuse;
    }
    STACK_OF(X509) *verified = X509_STORE_CTX_get0_chain(ctx);
    if (sk_X509_num(verified) > MAX_CHAIN_DEPTH) {
        snprintf(reason, sizeof(reason), "the chain has %zu certificates, more than %d",
                 sk_X509_num(verified), MAX_CHAIN_DEPTH);
        result = "policy";
        *out_alert = SSL_AD_BAD_CERTIFICATE;
        goto refuse;
    }
    for (size_t i = 0; i < sk_X509_num(verified); i++) {
        X509 *x = sk_X509_value(verified, i);
        bool anchor = i + 1 == sk_X509_num(verified);
        if (!anchor && weak_signature(x)) {
            snprintf(reason, sizeof(reason), "certificate %zu of the chain is signed with %s", i,
                     OBJ_nid2sn(X509_get_signature_nid(x)));
            result = "policy";
            *out_alert = SSL_AD_BAD_CERTIFICATE;
            goto refuse;
        }
        if (key_problem(x, i, reason, sizeof(reason))) {
            result = "policy";
            *out_alert = SSL_AD_BAD_CERTIFICATE;
            goto refuse;
        }
    }
    if (tls_chain_unusable_anchor(verified, tenant_name, reason, sizeof(reason))) {
        result = "untrusted";
        *out_alert = SSL_AD_UNKNOWN_CA;
        goto refuse;
    }
    if (tls_chain_name_constraints_problem(verified, reason, sizeof(reason))) {
        result = "policy";
        *out_alert = SSL_AD_BAD_CERTIFICATE;
        goto refuse;
    }
    if (tl->gen->cfg->revocation_crl) {
        size_t idx = 0;
        bool stale = false;
        int crl = ca_store_check_crl(tl->gen->store, tenant, verified, &idx, &stale);
        if (stale) {
            /* Loud on purpose: revocations published after nextUpdate are being missed. */
            metrics_crl_stale();
            log_msg(LOG_LEVEL_WARN, "crl_stale",
                    "listener %s: a CRL of the trust set of tenant %s is past its nextUpdate",
                    tl->lc->name, tenant_name);
        }
        if (crl < 0) {
            char *subject =
                tls_peer_name_rfc2253(X509_get_subject_name(sk_X509_value(verified, idx)));
            snprintf(reason, sizeof(reason), "certificate \"%s\" is revoked", subject);
            free(subject);
            result = "revoked";
            *out_alert = SSL_AD_CERTIFICATE_REVOKED;
            goto refuse;
        }
    }
    if (!cn_matches(tl, leaf)) {
        snprintf(reason, sizeof(reason), "certificate CN does not match subject_cn_pattern %s",
                 tl->lc->subject_cn_pattern);
        result = "policy";
        *out_alert = SSL_AD_ACCESS_DENIED;
        goto refuse;
    }
    ret = ssl_verify_ok;
    if (out_not_after != NULL)
        *out_not_after = tls_chain_not_after(verified);
    if (out_issuer != NULL && sk_X509_num(verified) > 1) {
        *out_issuer = sk_X509_value(verified, 1);
        X509_up_ref(*out_issuer);
    }
    goto done;
refuse:
    tls_peer_log_refusal(ssl, result, reason, leaf);
done:
    X509_STORE_CTX_free(ctx);
    ERR_clear_error();
    return ret;
}
