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
#include "tls/tls_revocation.h"

#define MAX_CHAIN_DEPTH 8
#define MIN_RSA_BITS 2048

/* --- ex data: the listener of a context, the peer of a connection ------------------------- */

static int tls_listener_index = -1;
static int tls_peer_index = -1;

static void peer_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                      void *argp)
{
    free(ptr);
}

void tls_verify_init(void)
{
    tls_listener_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    tls_peer_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, peer_free);
    tls_revocation_init();
}

void tls_verify_set_listener(SSL_CTX *ctx, struct tls_listener *tl)
{
    SSL_CTX_set_ex_data(ctx, tls_listener_index, tl);
}

struct tls_listener *tls_verify_listener_of(const SSL *ssl)
{
    return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_listener_index);
}

void tls_verify_set_peer(SSL *ssl, struct tls_peer *pe)
{
    SSL_set_ex_data(ssl, tls_peer_index, pe);
}

struct tls_peer *tls_verify_peer_of(const SSL *ssl)
{
    return SSL_get_ex_data(ssl, tls_peer_index);
}

STACK_OF(X509) *tls_verify_peer_chain(const SSL *ssl)
{
    const STACK_OF(CRYPTO_BUFFER) *bufs = SSL_get0_peer_certificates(ssl);
    if (bufs == NULL || sk_CRYPTO_BUFFER_num(bufs) == 0)
        return NULL;
    STACK_OF(X509) *chain = sk_X509_new_null();
    for (size_t i = 0; i < sk_CRYPTO_BUFFER_num(bufs); i++) {
        X509 *x = X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(bufs, i));
        if (x == NULL) {
            sk_X509_pop_free(chain, X509_free);
            ERR_clear_error();
            return NULL;
        }
        sk_X509_push(chain, x);
    }
    return chain;
}

/* --- certificate text --------------------------------------------------------------------- */

char *tls_verify_name_rfc2253(X509_NAME *name)
{
    BIO *bio = BIO_new(BIO_s_mem());
    X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
    const uint8_t *data = NULL;
    size_t len = 0;
    BIO_mem_contents(bio, &data, &len);
    char *s = xstrndup((const char *)data, len);
    BIO_free(bio);
    return s;
}

void tls_verify_time_string(const ASN1_TIME *t, char *out, size_t len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    ASN1_TIME_print(bio, t);
    const uint8_t *data = NULL;
    size_t n = 0;
    BIO_mem_contents(bio, &data, &n);
    snprintf(out, len, "%.*s", (int)n, (const char *)data);
    BIO_free(bio);
}

int64_t tls_verify_asn1_unix(const ASN1_TIME *t)
{
    /* This BoringSSL has no ASN1_TIME_to_posix: measure from the epoch instead. */
    int days = 0, secs = 0;
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    int ok = epoch != NULL && ASN1_TIME_diff(&days, &secs, epoch, t);
    ASN1_TIME_free(epoch);
    return ok ? (int64_t)days * 86400 + secs : 0;
}

/* --- refusals ----------------------------------------------------------------------------- */

static void peer_address(SSL *ssl, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    struct tls_peer *pe = tls_verify_peer_of(ssl);
    bool known = pe != NULL && pe->addr.sa.sa_family != AF_UNSPEC;
    if (known)
        memcpy(&ss, &pe->addr, sizeof(pe->addr));
    if (known || getpeername(SSL_get_fd(ssl), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
            port = ntohs(in->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
            port = ntohs(in6->sin6_port);
        }
    }
    snprintf(out, len, "%s:%d", host, port);
}

static enum metrics_handshake result_metric(const char *result)
{
    static const char *const names[] = {"ok", "resumed", "no_cert", "untrusted",
                                        "expired", "revoked", "policy", "error"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (strcmp(result, names[i]) == 0)
            return (enum metrics_handshake)i;
    return METRICS_HS_ERROR;
}

void tls_verify_log_refusal(SSL *ssl, const char *result, const char *reason, X509 *leaf)
{
    struct tls_listener *tl = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_listener_index);
    if (tl != NULL)
        metrics_handshake(tl->index, result_metric(result));
    struct buf b = {0};
    char peer[80];
    peer_address(ssl, peer, sizeof(peer));
    log_begin(&b, LOG_LEVEL_WARN, "handshake_refused");
    log_str(&b, "listener", tl ? tl->lc->name : NULL);
    log_str(&b, "result", result);
    log_str(&b, "reason", reason);
    log_str(&b, "peer", peer);
    log_str(&b, "sni", SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    char *subject = leaf ? tls_verify_name_rfc2253(X509_get_subject_name(leaf)) : NULL;
    char *issuer = leaf ? tls_verify_name_rfc2253(X509_get_issuer_name(leaf)) : NULL;
    log_str(&b, "subject", subject);
    log_str(&b, "issuer", issuer);
    log_end(&b);
    free(subject);
    free(issuer);
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
    char *subject = tls_verify_name_rfc2253(X509_get_subject_name(leaf));
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
    STACK_OF(X509) *peer = tls_verify_peer_chain(ssl);
    X509 *leaf = peer && sk_X509_num(peer) > 0 ? sk_X509_value(peer, 0) : NULL;
    enum ssl_verify_result_t ret = ssl_verify_ok;
    if (leaf != NULL && !tls_verify_allowed(leaf)) {
        tls_verify_log_refusal(ssl, "policy",
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
    struct tls_listener *tl = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_listener_index);
    struct tls_peer *pe = tls_verify_peer_of(ssl);
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
        tls_verify_log_refusal(ssl, "error", "the client's certificate does not parse", NULL);
        *out_alert = SSL_AD_BAD_CERTIFICATE;
        return ssl_verify_invalid;
    }
    STACK_OF(X509) *peer = tls_verify_peer_chain(ssl);
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
    struct tls_listener *tl = tls_verify_listener_of(ssl);
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
    struct tls_peer *pe = tls_verify_peer_of(ssl);
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
    STACK_OF(X509) *peer = tls_verify_peer_chain(ssl);
    X509 *issuer = NULL;
    r = verify_remember(ssl, tl, tenant, peer, cacheable ? key : NULL, &alert, &issuer);
    if (r == ssl_verify_ok && ocsp && peer != NULL && sk_X509_num(peer) > 0)
        r = tls_revocation_check(ssl, tl, sk_X509_value(peer, 0), issuer, &alert);
    X509_free(issuer);
    sk_X509_pop_free(peer, X509_free);
    return r;
}

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
    char *subject = tls_verify_name_rfc2253(X509_get_subject_name(x));
    snprintf(out, len, "CA certificate \"%s\" of the chain may not issue client certificates (%s)",
             subject, why);
    free(subject);
}

static void verify_error_reason(X509_STORE_CTX *ctx, const struct tls_listener *tl,
                                const struct ca_tenant *tenant, STACK_OF(X509) *peer,
                                X509 *leaf, char *reason, size_t len, const char **result,
                                uint8_t *out_alert)
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
        tls_verify_time_string(X509_get0_notAfter(bad), when, sizeof(when));
        snprintf(reason, len, "certificate expired at %s", when);
        if (bad != leaf) {
            char *subject = tls_verify_name_rfc2253(X509_get_subject_name(bad));
            snprintf(reason, len, "CA certificate \"%s\" of the chain expired at %s", subject,
                     when);
            free(subject);
        }
        *result = "expired";
        *out_alert = SSL_AD_CERTIFICATE_EXPIRED;
        return;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        tls_verify_time_string(X509_get0_notBefore(bad), when, sizeof(when));
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
        char *issuer = tls_verify_name_rfc2253(X509_get_issuer_name(bad));
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
        char *subject = tls_verify_name_rfc2253(X509_get_subject_name(bad));
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
        char *issuer = tls_verify_name_rfc2253(X509_get_issuer_name(bad));
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
static bool name_constraints_problem(STACK_OF(X509) *verified, char *out, size_t len)
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
            char *subject = tls_verify_name_rfc2253(X509_get_subject_name(ca));
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
static bool unusable_anchor(STACK_OF(X509) *verified, const char *tenant_name, char *out,
                            size_t len)
{
    size_t n = sk_X509_num(verified);
    char why[256];
    if (n < 2 || !tls_anchor_problem(sk_X509_value(verified, n - 1), false, why, sizeof(why)))
        return false;
    char *issuer = tls_verify_name_rfc2253(X509_get_subject_name(sk_X509_value(verified, n - 1)));
    snprintf(out, len,
             "issuer \"%s\" is in the trust set of tenant %s but cannot issue certificates: %s",
             issuer, tenant_name, why);
    free(issuer);
    return true;
}

/* The earliest notAfter of the verified chain, anchors from the store included. */
static int64_t chain_not_after(STACK_OF(X509) *verified)
{
    int64_t first = INT64_MAX;
    for (size_t i = 0; i < sk_X509_num(verified); i++)
        first = MIN(first, tls_verify_asn1_unix(X509_get0_notAfter(sk_X509_value(verified, i))));
    return first;
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
            tls_verify_log_refusal(ssl, "no_cert", "the client sent no certificate", NULL);
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
        tls_verify_log_refusal(ssl, "untrusted", "no CA store is loaded", leaf);
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
        verify_error_reason(ctx, tl, tenant, peer, leaf, reason, sizeof(reason), &result,
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
    if (unusable_anchor(verified, tenant_name, reason, sizeof(reason))) {
        result = "untrusted";
        *out_alert = SSL_AD_UNKNOWN_CA;
        goto refuse;
    }
    if (name_constraints_problem(verified, reason, sizeof(reason))) {
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
                tls_verify_name_rfc2253(X509_get_subject_name(sk_X509_value(verified, idx)));
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
        *out_not_after = chain_not_after(verified);
    if (out_issuer != NULL && sk_X509_num(verified) > 1) {
        *out_issuer = sk_X509_value(verified, 1);
        X509_up_ref(*out_issuer);
    }
    goto done;
refuse:
    tls_verify_log_refusal(ssl, result, reason, leaf);
done:
    X509_STORE_CTX_free(ctx);
    ERR_clear_error();
    return ret;
}
