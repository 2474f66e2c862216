/* tls.c: server TLS with BoringSSL: credentials, per-listener contexts, client verification
 * with reasons an operator can act on, and the socket-level read/write pump. */
#include <openssl/is_boringssl.h>
#include <openssl/base.h>
#if !defined(OPENSSL_IS_BORINGSSL)
#error "certgate must be built against BoringSSL (android-libboringssl-dev)"
#endif

#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs8.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/hmac.h>
#include <openssl/cipher.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "base.h"
#include "ca_store.h"
#include "log.h"
#include "metrics.h"
#include "tenancy.h"
#include "xfcc.h"

#define MAX_CHAIN_DEPTH 8
#define MIN_RSA_BITS 2048

/* What one listener needs at handshake time; the SSL_CTX's app data. */
struct tls_listener {
    struct tls_gen *gen;
    size_t index;
    const struct listener_config *lc;
    SSL_CTX *ctx;
    regex_t cn_re;
    bool has_cn_re;
    uint8_t sid_ctx[SHA256_DIGEST_LENGTH]; /* listener + trust + policy */
};

/* What a handshake decided about its tenant; the SSL's ex data. */
struct tls_peer {
    const struct ca_tenant *tenant; /* NULL: the common bundle */
    char id[TENANCY_MAX_ID + 1];    /* the tenant the SNI named ("" when none) */
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } addr; /* the client, kept from accept: it may be gone when a refusal is logged */
};

struct tls_gen {
    atomic_int refs;
    uint64_t id; /* increases with every generation built */
    const struct config *cfg;
    X509 *leaf;
    STACK_OF(X509) *chain; /* intermediates after the leaf */
    EVP_PKEY *key;
    char **by_uris; /* URI SANs of our own certificate, for XFCC By= */
    size_t num_by_uris;
    CRYPTO_BUFFER **cert_bufs; /* leaf + chain as DER, for SSL_CTX_set_chain_and_key */
    size_t num_cert_bufs;
    struct ca_store *store; /* NULL when no ca_store is configured */
    struct tls_listener *listeners;
    size_t num_listeners;
};


const char *tls_library(void)
{
    return OPENSSL_VERSION_TEXT;
}

/* --- credentials ------------------------------------------------------------------------- */

static char *join_path(const char *dir, const char *file)
{
    if (file[0] == '/' || dir == NULL)
        return xstrdup(file);
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, file);
    return p;
}

static void ssl_error_string(char *out, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(out, len, "unknown error");
    else
        ERR_error_string_n(e, out, len);
    ERR_clear_error();
}

static int load_pem_credentials(struct tls_gen *gen, const struct config *cfg, char *err,
                                size_t err_len)
{
    char *cert_path = join_path(cfg->credentials_dir, cfg->credentials_cert);
    char *key_path = join_path(cfg->credentials_dir, cfg->credentials_key);
    uint8_t *cert_pem = NULL, *key_pem = NULL;
    size_t cert_len = 0, key_len = 0;
    BIO *bio = NULL;
    int r = ca_store_read_file(cert_path, &cert_pem, &cert_len, err, err_len);
    if (r < 0)
        goto fail;
    r = ca_store_read_file(key_path, &key_pem, &key_len, err, err_len);
    if (r < 0)
        goto fail;
    r = -EINVAL;
    bio = BIO_new_mem_buf(cert_pem, (int)cert_len);
    gen->leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (gen->leaf == NULL) {
        snprintf(err, err_len, "%s: no PEM certificate found", cert_path);
        goto fail;
    }
    gen->chain = sk_X509_new_null();
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
        sk_X509_push(gen->chain, x);
    /* The loop ends at the end of the file, or at a block that does not parse: a file caught
     * half-written must not be served as a shorter chain. */
    unsigned long e = ERR_peek_last_error();
    ERR_clear_error();
    if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
        snprintf(err, err_len, "%s: certificate %zu of the chain does not parse", cert_path,
                 sk_X509_num(gen->chain) + 2);
        goto fail;
    }
    BIO_free(bio);
    bio = BIO_new_mem_buf(key_pem, (int)key_len);
    gen->key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    if (gen->key == NULL) {
        ERR_clear_error();
        snprintf(err, err_len, "%s: no PEM private key found", key_path);
        goto fail;
    }
    if (!X509_check_private_key(gen->leaf, gen->key)) {
        ERR_clear_error();
        snprintf(err, err_len, "%s: the private key does not match the certificate in %s",
                 key_path, cert_path);
        goto fail;
    }
    r = 0;
fail:
    BIO_free(bio);
    if (key_pem != NULL)
        OPENSSL_cleanse(key_pem, key_len);
    free(cert_pem);
    free(key_pem);
    free(cert_path);
    free(key_path);
    return r;
}

static int load_pkcs12_credentials(struct tls_gen *gen, const struct config *cfg, char *err,
                                   size_t err_len)
{
    char *p12_path = join_path(cfg->credentials_dir, cfg->credentials_pkcs12);
    char *pass_path = NULL;
    uint8_t *p12 = NULL, *pass = NULL;
    size_t p12_len = 0, pass_len = 0;
    char *password = NULL;
    STACK_OF(X509) *certs = sk_X509_new_null();
    int r = ca_store_read_file(p12_path, &p12, &p12_len, err, err_len);
    if (r < 0)
        goto fail;
    if (cfg->credentials_pkcs12_password_file != NULL) {
        pass_path = join_path(cfg->credentials_dir, cfg->credentials_pkcs12_password_file);
        r = ca_store_read_file(pass_path, &pass, &pass_len, err, err_len);
        if (r < 0)
            goto fail;
        while (pass_len > 0 && (pass[pass_len - 1] == '\n' || pass[pass_len - 1] == '\r'))
            pass_len--;
    }
    password = xstrndup((const char *)(pass ? pass : (uint8_t *)""), pass_len);
    r = -EINVAL;
    CBS cbs;
    CBS_init(&cbs, p12, p12_len);
    if (!PKCS12_get_key_and_certs(&gen->key, certs, &cbs, password)) {
        char e[256];
        ssl_error_string(e, sizeof(e));
        snprintf(err, err_len, "%s: cannot read PKCS#12 (%s)", p12_path, e);
        goto fail;
    }
    /* The leaf is the certificate that matches the key; the rest is the chain. */
    gen->chain = sk_X509_new_null();
    for (size_t i = 0; i < sk_X509_num(certs); i++) {
        X509 *x = sk_X509_value(certs, i);
        if (gen->leaf == NULL && X509_check_private_key(x, gen->key))
            gen->leaf = X509_up_ref(x) ? x : NULL;
        else if (X509_up_ref(x))
            sk_X509_push(gen->chain, x);
    }
    ERR_clear_error();
    if (gen->leaf == NULL) {
        snprintf(err, err_len, "%s: no certificate matches the private key", p12_path);
        goto fail;
    }
    r = 0;
fail:
    sk_X509_pop_free(certs, X509_free);
    if (password != NULL)
        OPENSSL_cleanse(password, strlen(password));
    free(password);
    free(p12);
    free(pass);
    free(p12_path);
    free(pass_path);
    return r;
}

/* --- verification -------------------------------------------------------------------------- */

static int tls_listener_index = -1;
static int tls_peer_index = -1;

static void peer_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                      void *argp)
{
    free(ptr);
}

/* Certificates are kept as DER in one pool shared by every connection (the BoringSSL
 * "buffers" mode): an intermediate that a thousand gateways send is stored once, and no
 * connection keeps a parsed X509 of its peer. That halves the memory of an idle connection. */
static CRYPTO_BUFFER_POOL *tls_pool;

/* peer_chain parses the peer's certificates (leaf first, as sent); NULL when it sent none.
 * The caller frees it with sk_X509_pop_free(chain, X509_free). */
static STACK_OF(X509) *peer_chain(const SSL *ssl)
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

static struct tls_peer *peer_of(const SSL *ssl)
{
    return SSL_get_ex_data(ssl, tls_peer_index);
}

static char *name_rfc2253(X509_NAME *name)
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

static void time_string(const ASN1_TIME *t, char *out, size_t len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    ASN1_TIME_print(bio, t);
    const uint8_t *data = NULL;
    size_t n = 0;
    BIO_mem_contents(bio, &data, &n);
    snprintf(out, len, "%.*s", (int)n, (const char *)data);
    BIO_free(bio);
}

static void peer_address(SSL *ssl, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    struct tls_peer *pe = peer_of(ssl);
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

/* Logs a refused client with everything an operator needs to act on it. */
static enum metrics_handshake result_metric(const char *result)
{
    static const char *const names[] = {"ok", "resumed", "no_cert", "untrusted",
                                        "expired", "revoked", "policy", "error"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (strcmp(result, names[i]) == 0)
            return (enum metrics_handshake)i;
    return METRICS_HS_ERROR;
}

static void log_refusal(SSL *ssl, const char *result, const char *reason, X509 *leaf)
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
    char *subject = leaf ? name_rfc2253(X509_get_subject_name(leaf)) : NULL;
    char *issuer = leaf ? name_rfc2253(X509_get_issuer_name(leaf)) : NULL;
    log_str(&b, "subject", subject);
    log_str(&b, "issuer", issuer);
    log_end(&b);
    free(subject);
    free(issuer);
}

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

static bool weak_key(X509 *x)
{
    EVP_PKEY *pk = X509_get_pubkey(x);
    if (pk == NULL)
        return true;
    bool weak = EVP_PKEY_id(pk) == EVP_PKEY_RSA && EVP_PKEY_bits(pk) < MIN_RSA_BITS;
    EVP_PKEY_free(pk);
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

static enum ssl_verify_result_t verify_chain(SSL *ssl, struct tls_listener *tl,
                                             const struct ca_tenant *tenant,
                                             STACK_OF(X509) *peer, uint8_t *out_alert);

/* Verified chains are remembered per worker thread, keyed by the chain's bytes, the tenant,
 * the listener and the generation (which fixes the trust set, the CRLs and the policy), until
 * the first notAfter of the chain: a gateway that reconnects costs a hash, not a verification.
 * Only successes are cached. */
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

static int64_t asn1_unix(const ASN1_TIME *t);

void tls_thread_cleanup(void)
{
    free(verify_cache);
    verify_cache = NULL;
}

static enum ssl_verify_result_t verify_peer(SSL *ssl, uint8_t *out_alert)
{
    struct tls_listener *tl = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_listener_index);
    struct tls_peer *pe = peer_of(ssl);
    const struct ca_tenant *tenant = pe ? pe->tenant : NULL;
    const STACK_OF(CRYPTO_BUFFER) *bufs = SSL_get0_peer_certificates(ssl);
    bool cacheable = tl->lc->verify && bufs != NULL && sk_CRYPTO_BUFFER_num(bufs) > 0;
    uint8_t key[SHA256_DIGEST_LENGTH];
    if (cacheable) {
        chain_key(ssl, tl, tenant ? ca_store_tenant_id(tenant) : "", key);
        struct verify_entry *e = verify_slot(key);
        if (e->gen_id == tl->gen->id && memcmp(e->key, key, sizeof(key)) == 0 &&
            (int64_t)time(NULL) < e->expires)
            return ssl_verify_ok;
    }
    if (SSL_get0_peer_certificates(ssl) != NULL && peer_chain_unparsable(ssl)) {
        log_refusal(ssl, "error", "the client's certificate does not parse", NULL);
        *out_alert = SSL_AD_BAD_CERTIFICATE;
        return ssl_verify_invalid;
    }
    STACK_OF(X509) *peer = peer_chain(ssl);
    enum ssl_verify_result_t ret = verify_chain(ssl, tl, tenant, peer, out_alert);
    if (ret == ssl_verify_ok && cacheable) {
        /* Valid until a certificate expires or a CRL is due (a stale CRL: not cached, so that
         * every verification says so). */
        int64_t expires = INT64_MAX;
        if (tl->gen->store != NULL && tl->gen->cfg->revocation_crl)
            expires = ca_store_crl_next_update(tl->gen->store, tenant);
        for (size_t i = 0; i < sk_X509_num(peer); i++) {
            int64_t t = asn1_unix(X509_get0_notAfter(sk_X509_value(peer, i)));
            expires = MIN(expires, t);
        }
        struct verify_entry *e = verify_slot(key);
        memcpy(e->key, key, sizeof(key));
        e->gen_id = tl->gen->id;
        e->expires = expires;
    }
    sk_X509_pop_free(peer, X509_free);
    return ret;
}

static enum ssl_verify_result_t verify_chain(SSL *ssl, struct tls_listener *tl,
                                             const struct ca_tenant *tenant,
                                             STACK_OF(X509) *peer, uint8_t *out_alert)
{
    X509 *leaf = peer && sk_X509_num(peer) > 0 ? sk_X509_value(peer, 0) : NULL;
    char reason[512];
    const char *result = "untrusted";
    if (leaf == NULL) {
        if (tl->lc->client_auth == CLIENT_AUTH_REQUIRE) {
            log_refusal(ssl, "no_cert", "the client sent no certificate", NULL);
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
        log_refusal(ssl, "untrusted", "no CA store is loaded", leaf);
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
        int e = X509_STORE_CTX_get_error(ctx);
        X509 *bad = X509_STORE_CTX_get_current_cert(ctx);
        if (bad == NULL)
            bad = leaf;
        char when[64];
        switch (e) {
        case X509_V_ERR_CERT_HAS_EXPIRED:
            time_string(X509_get0_notAfter(bad), when, sizeof(when));
            snprintf(reason, sizeof(reason), "certificate expired at %s", when);
            result = "expired";
            *out_alert = SSL_AD_CERTIFICATE_EXPIRED;
            break;
        case X509_V_ERR_CERT_NOT_YET_VALID:
            time_string(X509_get0_notBefore(bad), when, sizeof(when));
            snprintf(reason, sizeof(reason), "certificate not yet valid (from %s)", when);
            result = "expired";
            *out_alert = SSL_AD_CERTIFICATE_EXPIRED;
            break;
        case X509_V_ERR_INVALID_PURPOSE:
            snprintf(reason, sizeof(reason),
                     "certificate not allowed for client authentication (extended key usage)");
            result = "policy";
            *out_alert = SSL_AD_UNSUPPORTED_CERTIFICATE;
            break;
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE: {
            char *issuer = name_rfc2253(X509_get_issuer_name(bad));
            snprintf(reason, sizeof(reason),
                     "unknown issuer \"%s\" (not in the trust set of tenant %s)", issuer,
                     tenant_name);
            free(issuer);
            result = "untrusted";
            *out_alert = SSL_AD_UNKNOWN_CA;
            break;
        }
        default:
            snprintf(reason, sizeof(reason), "certificate rejected: %s",
                     X509_verify_cert_error_string(e));
            result = "untrusted";
            *out_alert = SSL_AD_BAD_CERTIFICATE;
            break;
        }
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
        if (weak_key(x)) {
            snprintf(reason, sizeof(reason), "certificate %zu of the chain has a key under %d bits",
                     i, MIN_RSA_BITS);
            result = "policy";
            *out_alert = SSL_AD_BAD_CERTIFICATE;
            goto refuse;
        }
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
            char *subject = name_rfc2253(X509_get_subject_name(sk_X509_value(verified, idx)));
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
    goto done;
refuse:
    log_refusal(ssl, result, reason, leaf);
done:
    X509_STORE_CTX_free(ctx);
    ERR_clear_error();
    return ret;
}

/* --- tenancy ------------------------------------------------------------------------------- */

/* The first host_name of the server_name extension, or false when there is none. */
static bool client_hello_sni(const SSL_CLIENT_HELLO *hello, char *out, size_t out_len)
{
    const uint8_t *data = NULL;
    size_t len = 0;
    if (!SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_server_name, &data, &len))
        return false;
    CBS ext, list, name;
    uint8_t type;
    CBS_init(&ext, data, len);
    if (!CBS_get_u16_length_prefixed(&ext, &list) || CBS_len(&ext) != 0)
        return false;
    while (CBS_len(&list) > 0) {
        if (!CBS_get_u8(&list, &type) || !CBS_get_u16_length_prefixed(&list, &name))
            return false;
        if (type != TLSEXT_NAMETYPE_host_name)
            continue;
        if (CBS_len(&name) == 0 || CBS_len(&name) >= out_len ||
            memchr(CBS_data(&name), 0, CBS_len(&name)) != NULL)
            return false;
        memcpy(out, CBS_data(&name), CBS_len(&name));
        out[CBS_len(&name)] = '\0';
        return true;
    }
    return false;
}

/* Picks the connection's tenant from its SNI before anything else happens, and scopes session
 * resumption to that tenant's trust set (SECURITY 1-3). */
static enum ssl_select_cert_result_t select_tenant(const SSL_CLIENT_HELLO *hello)
{
    SSL *ssl = hello->ssl;
    struct tls_listener *tl = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_listener_index);
    const struct config *cfg = tl->gen->cfg;
    struct tls_peer *pe = peer_of(ssl);
    if (pe == NULL) {
        pe = xcalloc(1, sizeof(*pe));
        SSL_set_ex_data(ssl, tls_peer_index, pe);
    }
    char raw[TENANCY_MAX_NAME + 1], name[TENANCY_MAX_NAME + 1];
    bool has_sni = client_hello_sni(hello, raw, sizeof(raw)) &&
                   tenancy_normalize(name, raw, strlen(raw), false) && !tenancy_is_ip_literal(name);
    char reason[400];
    if (!has_sni) {
        if (cfg->tenancy_no_sni == TENANCY_REJECT) {
            log_refusal(ssl, "policy", "the client sent no SNI (tenancy.no_sni: reject)", NULL);
            return ssl_select_cert_error;
        }
    } else if (tenancy_match(cfg->tenancy_sni, name, pe->id)) {
        pe->tenant = tl->gen->store ? ca_store_tenant(tl->gen->store, pe->id, strlen(pe->id))
                                    : NULL;
    }
    if (has_sni && pe->tenant == NULL && cfg->tenancy_unknown == TENANCY_REJECT) {
        snprintf(reason, sizeof(reason), "SNI %s names no known tenant (tenancy.unknown: reject)",
                 name);
        log_refusal(ssl, "policy", reason, NULL);
        return ssl_select_cert_error;
    }
    /* Sessions resume only into the same tenant and trust set. */
    uint8_t trust[32] = {0}, sid[SHA256_DIGEST_LENGTH];
    if (tl->gen->store != NULL)
        ca_store_trust_hash(tl->gen->store, pe->tenant, trust);
    SHA256_CTX sha;
    SHA256_Init(&sha);
    SHA256_Update(&sha, tl->sid_ctx, sizeof(tl->sid_ctx));
    SHA256_Update(&sha, trust, sizeof(trust));
    SHA256_Update(&sha, pe->id, strlen(pe->id) + 1);
    SHA256_Final(sid, &sha);
    SSL_set_session_id_context(ssl, sid, SSL_MAX_SID_CTX_LENGTH);
    return ssl_select_cert_success;
}

bool tls_host_allowed(struct tls_gen *gen, size_t index, struct ssl_st *ssl, const char *host,
                      size_t host_len)
{
    const struct config *cfg = gen->cfg;
    const struct listener_config *lc = gen->listeners[index].lc;
    char name[TENANCY_MAX_NAME + 1];
    bool has_host = host != NULL && tenancy_normalize(name, host, host_len, true);
    if (cfg->tenancy_sni != NULL) {
        struct tls_peer *pe = peer_of(ssl);
        char id[TENANCY_MAX_ID + 1] = "";
        if (has_host && !tenancy_match(cfg->tenancy_sni, name, id))
            id[0] = '\0';
        return strcmp(id, pe ? pe->id : "") == 0;
    }
    /* Without tenancy, a Host that differs from a present SNI is refused where client
     * certificates are verified (CONTRACT 6). */
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (sni == NULL || lc->client_auth == CLIENT_AUTH_NONE || !lc->verify)
        return true;
    char sni_name[TENANCY_MAX_NAME + 1];
    if (!tenancy_normalize(sni_name, sni, strlen(sni), false) || tenancy_is_ip_literal(sni_name))
        return true;
    return has_host && strcmp(name, sni_name) == 0;
}

bool tls_reverify(struct tls_gen *gen, size_t index, struct ssl_st *ssl)
{
    struct tls_listener *tl = &gen->listeners[index];
    if (tl->ctx == NULL || tl->lc->client_auth == CLIENT_AUTH_NONE)
        return true;
    struct tls_peer *pe = peer_of(ssl);
    const struct ca_tenant *tenant = NULL;
    if (pe != NULL && pe->id[0] != '\0') {
        tenant = gen->store ? ca_store_tenant(gen->store, pe->id, strlen(pe->id)) : NULL;
        if (tenant == NULL && gen->cfg->tenancy_unknown == TENANCY_REJECT) {
            log_refusal(ssl, "policy", "the connection's tenant is gone from the CA store", NULL);
            return false;
        }
    }
    STACK_OF(X509) *peer = peer_chain(ssl);
    uint8_t alert = 0;
    bool ok = verify_chain(ssl, tl, tenant, peer, &alert) == ssl_verify_ok;
    sk_X509_pop_free(peer, X509_free);
    return ok;
}

uint64_t tls_gen_id(const struct tls_gen *gen)
{
    return gen->id;
}

size_t tls_gen_store_errors(const struct tls_gen *gen)
{
    return gen->store ? ca_store_num_errors(gen->store) : 0;
}

const char *tls_tenant(struct ssl_st *ssl)
{
    struct tls_peer *pe = peer_of(ssl);
    return pe != NULL && pe->id[0] != '\0' ? pe->id : NULL;
}

/* --- session tickets ------------------------------------------------------------------------ */

/* One ticket key ring for the whole process, so that a session resumes on any worker and
 * across reloads (the session id context, not the key, decides whether a session may resume
 * into a tenant and trust set). Keys rotate every 12 hours; the previous key still decrypts,
 * so a ticket lives at most a day. */
#define TICKET_ROTATE_SECONDS (12 * 3600)

struct ticket_key {
    uint8_t name[SSL_TICKET_KEY_NAME_LEN];
    uint8_t aes[16];
    uint8_t hmac[32];
    int64_t created;
};

static struct ticket_key ticket_keys[2]; /* current, previous */
static pthread_mutex_t ticket_lock = PTHREAD_MUTEX_INITIALIZER;

static int ticket_cb(SSL *ssl, uint8_t *key_name, uint8_t *iv, EVP_CIPHER_CTX *cctx,
                     HMAC_CTX *hctx, int encrypt)
{
    struct ticket_key k;
    bool previous = false;
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&ticket_lock);
    if (ticket_keys[0].created == 0 || now - ticket_keys[0].created >= TICKET_ROTATE_SECONDS) {
        ticket_keys[1] = ticket_keys[0];
        RAND_bytes(ticket_keys[0].name, sizeof(ticket_keys[0].name));
        RAND_bytes(ticket_keys[0].aes, sizeof(ticket_keys[0].aes));
        RAND_bytes(ticket_keys[0].hmac, sizeof(ticket_keys[0].hmac));
        ticket_keys[0].created = now;
    }
    if (encrypt) {
        k = ticket_keys[0];
    } else if (memcmp(key_name, ticket_keys[0].name, SSL_TICKET_KEY_NAME_LEN) == 0) {
        k = ticket_keys[0];
    } else if (ticket_keys[1].created != 0 &&
               memcmp(key_name, ticket_keys[1].name, SSL_TICKET_KEY_NAME_LEN) == 0) {
        k = ticket_keys[1];
        previous = true;
    } else {
        pthread_mutex_unlock(&ticket_lock);
        return 0; /* unknown key: a full handshake */
    }
    pthread_mutex_unlock(&ticket_lock);
    if (encrypt) {
        memcpy(key_name, k.name, SSL_TICKET_KEY_NAME_LEN);
        RAND_bytes(iv, 16);
        if (!EVP_EncryptInit_ex(cctx, EVP_aes_128_cbc(), NULL, k.aes, iv))
            return -1;
    } else if (!EVP_DecryptInit_ex(cctx, EVP_aes_128_cbc(), NULL, k.aes, iv)) {
        return -1;
    }
    if (!HMAC_Init_ex(hctx, k.hmac, sizeof(k.hmac), EVP_sha256(), NULL))
        return -1;
    OPENSSL_cleanse(&k, sizeof(k));
    return previous ? 2 : 1; /* 2: renew a ticket made with the previous key */
}

/* --- contexts ------------------------------------------------------------------------------ */

static int build_listener(struct tls_gen *gen, struct tls_listener *tl,
                          const struct listener_config *lc, char *err, size_t err_len)
{
    tl->gen = gen;
    tl->lc = lc;
    tl->index = (size_t)(tl - gen->listeners);
    if (lc->mode == LISTENER_TCP)
        return 0;
    if (lc->subject_cn_pattern != NULL) {
        if (regcomp(&tl->cn_re, lc->subject_cn_pattern, REG_EXTENDED | REG_NOSUB) != 0) {
            snprintf(err, err_len, "%s:%u: listener %s: subject_cn_pattern does not compile",
                     gen->cfg->path, lc->line, lc->name);
            return -EINVAL;
        }
        tl->has_cn_re = true;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_with_buffers_method());
    SSL_CTX_set0_buffer_pool(ctx, tls_pool);
    tl->ctx = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_strict_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256:"
                                        "ECDHE-RSA-AES128-GCM-SHA256:"
                                        "ECDHE-ECDSA-AES256-GCM-SHA384:"
                                        "ECDHE-RSA-AES256-GCM-SHA384:"
                                        "ECDHE-ECDSA-CHACHA20-POLY1305:"
                                        "ECDHE-RSA-CHACHA20-POLY1305");
    SSL_CTX_set1_curves_list(ctx, "X25519:P-256:P-384");
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Tickets only: a server-side cache would keep every session's peer chain in memory. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_tlsext_ticket_key_cb(ctx, ticket_cb);
    SSL_CTX_set_num_tickets(ctx, 1); /* one resumption per handshake is what clients use */
    if (!SSL_CTX_set_chain_and_key(ctx, gen->cert_bufs, gen->num_cert_bufs, gen->key, NULL)) {
        char e[256];
        ssl_error_string(e, sizeof(e));
        snprintf(err, err_len, "listener %s: cannot use the credentials: %s", lc->name, e);
        return -EINVAL;
    }
    /* Sessions resume only into the same listener and the same trust state. */
    uint8_t sid[SHA256_DIGEST_LENGTH];
    SHA256_CTX sha;
    SHA256_Init(&sha);
    SHA256_Update(&sha, lc->name, strlen(lc->name) + 1);
    if (gen->store != NULL) {
        uint8_t trust[32];
        ca_store_trust_hash(gen->store, NULL, trust);
        SHA256_Update(&sha, trust, sizeof(trust));
    }
    uint8_t policy[4] = {(uint8_t)lc->client_auth, (uint8_t)lc->verify,
                         (uint8_t)gen->cfg->revocation_crl, 0};
    SHA256_Update(&sha, policy, sizeof(policy));
    if (lc->subject_cn_pattern != NULL)
        SHA256_Update(&sha, lc->subject_cn_pattern, strlen(lc->subject_cn_pattern));
    SHA256_Final(sid, &sha);
    memcpy(tl->sid_ctx, sid, sizeof(sid));
    SSL_CTX_set_session_id_context(ctx, sid, SSL_MAX_SID_CTX_LENGTH);
    if (gen->cfg->tenancy_sni != NULL)
        SSL_CTX_set_select_certificate_cb(ctx, select_tenant);

    int mode = SSL_VERIFY_NONE;
    if (lc->client_auth == CLIENT_AUTH_REQUIRE)
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    else if (lc->client_auth == CLIENT_AUTH_OPTIONAL)
        mode = SSL_VERIFY_PEER;
    if (mode != SSL_VERIFY_NONE)
        SSL_CTX_set_custom_verify(ctx, mode, verify_peer);
    SSL_CTX_set_ex_data(ctx, tls_listener_index, tl);
    return 0;
}

/* A chain file caught between its leaf and its intermediates (a writer that is not atomic)
 * parses as a shorter chain. When the serving chain carries the leaf's issuer and the new one
 * does not, take it for a half-written file and keep the old state (SECURITY 19). */
static int check_chain_complete(const struct tls_gen *gen, const struct tls_gen *prev, char *err,
                                size_t err_len)
{
    if (prev == NULL || prev->leaf == NULL || sk_X509_num(prev->chain) == 0)
        return 0;
    X509_NAME *issuer = X509_get_issuer_name(gen->leaf);
    if (X509_NAME_cmp(issuer, X509_get_subject_name(gen->leaf)) == 0)
        return 0; /* self-issued */
    for (size_t i = 0; i < sk_X509_num(gen->chain); i++)
        if (X509_NAME_cmp(issuer, X509_get_subject_name(sk_X509_value(gen->chain, i))) == 0)
            return 0;
    snprintf(err, err_len,
             "%s: the new certificate comes without its issuer while the serving one has its "
             "chain: not loaded (a file still being written?); restart to serve a leaf alone",
             gen->cfg->credentials_cert ? gen->cfg->credentials_cert : "credentials");
    return -EINVAL;
}

int tls_gen_new(struct tls_gen **out, const struct config *cfg, const struct tls_gen *prev,
                char *err, size_t err_len)
{
    if (tls_listener_index < 0) {
        tls_listener_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        tls_peer_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, peer_free);
        tls_pool = CRYPTO_BUFFER_POOL_new();
    }
    static atomic_uint_fast64_t next_id = 1;
    struct tls_gen *gen = xcalloc(1, sizeof(*gen));
    atomic_init(&gen->refs, 1);
    gen->id = atomic_fetch_add(&next_id, 1);
    gen->cfg = cfg;
    int r = 0;
    bool needs_tls = false;
    for (size_t i = 0; i < cfg->num_listeners; i++)
        needs_tls |= cfg->listeners[i].mode != LISTENER_TCP;
    if (needs_tls) {
        if (cfg->credentials_pkcs12 != NULL)
            r = load_pkcs12_credentials(gen, cfg, err, err_len);
        else
            r = load_pem_credentials(gen, cfg, err, err_len);
        if (r < 0)
            goto fail;
        r = check_chain_complete(gen, prev, err, err_len);
        if (r < 0)
            goto fail;
        gen->by_uris = xfcc_uri_sans(gen->leaf, &gen->num_by_uris);
        gen->num_cert_bufs = 1 + sk_X509_num(gen->chain);
        gen->cert_bufs = xcalloc(gen->num_cert_bufs, sizeof(*gen->cert_bufs));
        for (size_t i = 0; i < gen->num_cert_bufs; i++) {
            X509 *x = i == 0 ? gen->leaf : sk_X509_value(gen->chain, i - 1);
            uint8_t *der = NULL;
            int len = i2d_X509(x, &der);
            if (len > 0)
                gen->cert_bufs[i] = CRYPTO_BUFFER_new(der, (size_t)len, tls_pool);
            OPENSSL_free(der);
            if (gen->cert_bufs[i] == NULL) {
                snprintf(err, err_len, "cannot encode the server certificate chain");
                r = -EINVAL;
                goto fail;
            }
        }
    }
    if (cfg->ca_store_dir != NULL) {
        r = ca_store_load(&gen->store, cfg->ca_store_dir, prev ? prev->store : NULL, err, err_len);
        if (r < 0)
            goto fail;
    }
    gen->num_listeners = cfg->num_listeners;
    gen->listeners = xcalloc(cfg->num_listeners, sizeof(*gen->listeners));
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        r = build_listener(gen, &gen->listeners[i], &cfg->listeners[i], err, err_len);
        if (r < 0)
            goto fail;
    }
    *out = gen;
    return 0;
fail:
    tls_gen_unref(gen);
    return r;
}

void tls_gen_ref(struct tls_gen *gen)
{
    atomic_fetch_add_explicit(&gen->refs, 1, memory_order_relaxed);
}

void tls_gen_unref(struct tls_gen *gen)
{
    if (gen == NULL || atomic_fetch_sub_explicit(&gen->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < gen->num_listeners; i++) {
        SSL_CTX_free(gen->listeners[i].ctx);
        if (gen->listeners[i].has_cn_re)
            regfree(&gen->listeners[i].cn_re);
    }
    free(gen->listeners);
    for (size_t i = 0; i < gen->num_by_uris; i++)
        free(gen->by_uris[i]);
    free(gen->by_uris);
    for (size_t i = 0; i < gen->num_cert_bufs; i++)
        CRYPTO_BUFFER_free(gen->cert_bufs[i]);
    free(gen->cert_bufs);
    X509_free(gen->leaf);
    sk_X509_pop_free(gen->chain, X509_free);
    EVP_PKEY_free(gen->key);
    ca_store_unref(gen->store);
    free(gen);
}

void tls_gen_describe(const struct tls_gen *gen, const struct config *cfg)
{
    if (gen->leaf != NULL) {
        char *subject = name_rfc2253(X509_get_subject_name(gen->leaf));
        char until[64];
        time_string(X509_get0_notAfter(gen->leaf), until, sizeof(until));
        printf("credentials: %s (+%zu intermediate%s), valid until %s\n", subject,
               sk_X509_num(gen->chain), sk_X509_num(gen->chain) == 1 ? "" : "s", until);
        free(subject);
    }
    if (gen->store != NULL)
        ca_store_describe(gen->store, stdout);
}

/* --- connections ------------------------------------------------------------------------- */

struct ssl_st *tls_new_ssl(struct tls_gen *gen, size_t index, int fd, void *app,
                           const struct sockaddr *peer, socklen_t peer_len)
{
    SSL_CTX *ctx = gen->listeners[index].ctx;
    if (ctx == NULL)
        return NULL;
    SSL *ssl = SSL_new(ctx);
    struct tls_peer *pe = xcalloc(1, sizeof(*pe));
    if (peer != NULL && peer_len <= sizeof(pe->addr))
        memcpy(&pe->addr, peer, peer_len);
    SSL_set_ex_data(ssl, tls_peer_index, pe);
    SSL_set_fd(ssl, fd);
    SSL_set_accept_state(ssl);
    SSL_set_app_data(ssl, app);
    return ssl;
}

void tls_free(struct ssl_st *ssl)
{
    SSL_free(ssl);
}

static int map_error(SSL *ssl, int rv)
{
    switch (SSL_get_error(ssl, rv)) {
    case SSL_ERROR_WANT_READ:
        return TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_EOF;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        return rv == 0 ? TLS_EOF : TLS_ERROR;
    default:
        return TLS_ERROR;
    }
}

int tls_handshake(struct ssl_st *ssl)
{
    int rv = SSL_do_handshake(ssl);
    if (rv == 1)
        return 1;
    int r = map_error(ssl, rv);
    if (r == TLS_WANT_READ || r == TLS_WANT_WRITE)
        return r;
    /* Verification failures were logged by verify_peer; log the rest here. */
    unsigned long e = ERR_peek_error();
    int reason = ERR_GET_REASON(e);
    /* Refusals by verify_peer and select_tenant were logged and counted there. */
    if (e != 0 && reason != SSL_R_CERTIFICATE_VERIFY_FAILED && reason != SSL_R_CONNECTION_REJECTED) {
        char text[256];
        const char *why = NULL;
        if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
            why = "the client sent no certificate";
        else if (reason == SSL_R_UNSUPPORTED_PROTOCOL)
            why = "the client offered only TLS versions older than 1.2";
        else if (reason == SSL_R_NO_SHARED_CIPHER)
            why = "no cipher in common with the client";
        if (why == NULL) {
            ERR_error_string_n(e, text, sizeof(text));
            why = text;
        }
        log_refusal(ssl, reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ? "no_cert" : "error",
                    why, NULL);
    } else if (e == 0) {
        struct tls_listener *tl = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_listener_index);
        if (tl != NULL)
            metrics_handshake(tl->index, METRICS_HS_ERROR); /* the client went away */
    }
    ERR_clear_error();
    return TLS_ERROR;
}

int tls_read(struct ssl_st *ssl, char *out, size_t len)
{
    int rv = SSL_read(ssl, out, (int)MIN(len, (size_t)INT32_MAX));
    if (rv > 0)
        return rv;
    int r = map_error(ssl, rv);
    ERR_clear_error();
    return r;
}

bool tls_pending(struct ssl_st *ssl)
{
    /* Also records read from the socket but not yet decrypted: epoll will not report them. */
    return SSL_has_pending(ssl);
}

int tls_write(struct ssl_st *ssl, const char *data, size_t len)
{
    int rv = SSL_write(ssl, data, (int)MIN(len, (size_t)INT32_MAX));
    if (rv > 0)
        return rv;
    int r = map_error(ssl, rv);
    ERR_clear_error();
    return r == TLS_EOF ? TLS_ERROR : r;
}

int tls_flush(struct ssl_st *ssl)
{
    /* A zero-length write sends what BoringSSL queued without data: after a TLS 1.3 handshake
     * with client authentication, that is the session tickets. */
    int rv = SSL_write(ssl, "", 0);
    if (rv >= 0)
        return 0;
    int r = map_error(ssl, rv);
    ERR_clear_error();
    return r == TLS_WANT_WRITE || r == TLS_WANT_READ ? r : TLS_ERROR;
}

void tls_shutdown(struct ssl_st *ssl)
{
    SSL_shutdown(ssl);
    ERR_clear_error();
}

const char *tls_version(struct ssl_st *ssl)
{
    return SSL_get_version(ssl);
}

const char *tls_sni(struct ssl_st *ssl)
{
    return SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
}

bool tls_resumed(struct ssl_st *ssl)
{
    return SSL_session_reused(ssl);
}

char *tls_peer_subject(struct ssl_st *ssl)
{
    STACK_OF(X509) *peer = peer_chain(ssl);
    if (peer == NULL)
        return NULL;
    char *subject = name_rfc2253(X509_get_subject_name(sk_X509_value(peer, 0)));
    sk_X509_pop_free(peer, X509_free);
    return subject;
}

bool tls_client_cert_headers(struct tls_gen *gen, size_t index, struct ssl_st *ssl,
                             struct buf *out, struct buf *element)
{
    STACK_OF(X509) *peer = peer_chain(ssl);
    if (peer == NULL)
        return false;
    const struct listener_config *lc = gen->listeners[index].lc;
    switch (lc->client_cert_header) {
    case CC_HEADER_XFCC:
        xfcc_element(element, peer, lc->client_cert_details, (const char *const *)gen->by_uris,
                     gen->num_by_uris);
        buf_appends(out, "x-forwarded-client-cert: ");
        buf_append(out, buf_data(element), buf_used(element));
        buf_appends(out, "\r\n");
        break;
    case CC_HEADER_RFC9440: {
        struct buf cert = {0}, chain = {0};
        xfcc_rfc9440(&cert, &chain, peer);
        buf_appends(out, "Client-Cert: ");
        buf_append(out, buf_data(&cert), buf_used(&cert));
        buf_appends(out, "\r\n");
        if (buf_used(&chain) > 0) {
            buf_appends(out, "Client-Cert-Chain: ");
            buf_append(out, buf_data(&chain), buf_used(&chain));
            buf_appends(out, "\r\n");
        }
        buf_free(&cert);
        buf_free(&chain);
        break;
    }
    case CC_HEADER_PEM: {
        struct buf pem = {0};
        xfcc_pem(&pem, sk_X509_value(peer, 0));
        buf_appends(out, "X-SSL-Client-Cert: ");
        buf_append(out, buf_data(&pem), buf_used(&pem));
        buf_appends(out, "\r\n");
        buf_free(&pem);
        break;
    }
    }
    sk_X509_pop_free(peer, X509_free);
    return true;
}

/* --- status and metrics ------------------------------------------------------------------- */

static void json_str(struct buf *out, const char *s)
{
    buf_append(out, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_appendf(out, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            buf_appendf(out, "\\u%04x", *p);
        else
            buf_append(out, p, 1);
    }
    buf_append(out, "\"", 1);
}

static int64_t asn1_unix(const ASN1_TIME *t)
{
    /* This BoringSSL has no ASN1_TIME_to_posix: measure from the epoch instead. */
    int days = 0, secs = 0;
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    int ok = epoch != NULL && ASN1_TIME_diff(&days, &secs, epoch, t);
    ASN1_TIME_free(epoch);
    return ok ? (int64_t)days * 86400 + secs : 0;
}

int64_t tls_gen_server_not_after(const struct tls_gen *gen)
{
    return gen->leaf ? asn1_unix(X509_get0_notAfter(gen->leaf)) : 0;
}

void tls_gen_status_json(const struct tls_gen *gen, struct buf *out)
{
    buf_appends(out, "\"credentials\":");
    if (gen->leaf == NULL) {
        buf_appends(out, "null");
    } else {
        char *subject = name_rfc2253(X509_get_subject_name(gen->leaf));
        buf_appends(out, "{\"subject\":");
        json_str(out, subject);
        free(subject);
        buf_appends(out, ",\"sans\":[");
        GENERAL_NAMES *names = X509_get_ext_d2i(gen->leaf, NID_subject_alt_name, NULL, NULL);
        bool first = true;
        for (size_t i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
            GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
            char text[300] = "";
            if (gn->type == GEN_DNS || gn->type == GEN_URI) {
                const ASN1_STRING *a = gn->d.ia5;
                snprintf(text, sizeof(text), "%s:%.*s", gn->type == GEN_DNS ? "DNS" : "URI",
                         (int)MIN(ASN1_STRING_length(a), 250), ASN1_STRING_get0_data(a));
            } else if (gn->type == GEN_IPADD) {
                char ip[INET6_ADDRSTRLEN] = "?";
                const ASN1_OCTET_STRING *a = gn->d.ip;
                int len = ASN1_STRING_length(a);
                inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(a), ip, sizeof(ip));
                snprintf(text, sizeof(text), "IP:%s", ip);
            } else {
                continue;
            }
            if (!first)
                buf_append(out, ",", 1);
            first = false;
            json_str(out, text);
        }
        GENERAL_NAMES_free(names);
        uint8_t *der = NULL;
        int der_len = i2d_X509(gen->leaf, &der);
        uint8_t md[SHA256_DIGEST_LENGTH];
        SHA256(der, (size_t)MAX(der_len, 0), md);
        OPENSSL_free(der);
        buf_appendf(out, "],\"not_after\":%lld,\"sha256\":\"", (long long)tls_gen_server_not_after(gen));
        for (size_t i = 0; i < sizeof(md); i++)
            buf_appendf(out, "%02x", md[i]);
        buf_appends(out, "\"}");
    }
    buf_appends(out, ",\"tenants\":{");
    if (gen->store != NULL) {
        size_t n = ca_store_num_tenants(gen->store);
        for (size_t i = 0; i <= n; i++) {
            const struct ca_tenant *t = i == 0 ? NULL : ca_store_tenant_at(gen->store, i - 1);
            const char *id = t ? ca_store_tenant_id(t) : "";
            if (i > 0)
                buf_append(out, ",", 1);
            json_str(out, id);
            buf_appends(out, ":{\"cas\":[");
            const STACK_OF(X509) *cas = ca_store_cas(gen->store, t);
            for (size_t j = 0; j < sk_X509_num(cas); j++) {
                X509 *x = sk_X509_value(cas, j);
                char *subject = name_rfc2253(X509_get_subject_name(x));
                buf_appends(out, j ? ",{\"subject\":" : "{\"subject\":");
                json_str(out, subject);
                free(subject);
                buf_appendf(out, ",\"not_after\":%lld}",
                            (long long)asn1_unix(X509_get0_notAfter(x)));
            }
            buf_appends(out, "],\"error\":");
            const char *error = NULL;
            for (size_t k = 0; k < ca_store_num_errors(gen->store); k++) {
                const char *tid = NULL;
                const char *msg = ca_store_error(gen->store, k, &tid);
                if (tid != NULL && strcmp(tid, id) == 0)
                    error = msg;
            }
            if (error != NULL)
                json_str(out, error);
            else
                buf_appends(out, "null");
            buf_append(out, "}", 1);
        }
        /* Tenants that failed to load and have no previous bundle still get their error. */
        for (size_t k = 0; k < ca_store_num_errors(gen->store); k++) {
            const char *tid = NULL;
            const char *msg = ca_store_error(gen->store, k, &tid);
            if (tid == NULL || ca_store_tenant(gen->store, tid, strlen(tid)) != NULL)
                continue;
            buf_append(out, ",", 1);
            json_str(out, tid);
            buf_appends(out, ":{\"cas\":[],\"error\":");
            json_str(out, msg);
            buf_append(out, "}", 1);
        }
    }
    buf_append(out, "}", 1);
}

void tls_gen_metrics(const struct tls_gen *gen, struct buf *out)
{
    buf_appends(out, "# HELP certgate_certificate_not_after_seconds notAfter of loaded certificates.\n"
                     "# TYPE certgate_certificate_not_after_seconds gauge\n");
    if (gen->leaf != NULL)
        buf_appendf(out, "certgate_certificate_not_after_seconds{kind=\"server\",tenant=\"\"} %lld\n",
                    (long long)tls_gen_server_not_after(gen));
    if (gen->store != NULL) {
        size_t n = ca_store_num_tenants(gen->store);
        for (size_t i = 0; i <= n; i++) {
            const struct ca_tenant *t = i == 0 ? NULL : ca_store_tenant_at(gen->store, i - 1);
            const STACK_OF(X509) *cas = ca_store_cas(gen->store, t);
            int64_t first = INT64_MAX;
            for (size_t j = 0; j < sk_X509_num(cas); j++)
                first = MIN(first, asn1_unix(X509_get0_notAfter(sk_X509_value(cas, j))));
            if (first != INT64_MAX)
                buf_appendf(out,
                            "certgate_certificate_not_after_seconds{kind=\"ca\",tenant=\"%s\"} %lld\n",
                            t ? ca_store_tenant_id(t) : "", (long long)first);
        }
    }
    buf_appends(out, "# HELP certgate_tenant_load_errors Tenants whose CA bundle failed to load.\n"
                     "# TYPE certgate_tenant_load_errors gauge\n");
    for (size_t k = 0; gen->store != NULL && k < ca_store_num_errors(gen->store); k++) {
        const char *tid = NULL;
        ca_store_error(gen->store, k, &tid);
        tid = tid ? tid : "";
        bool seen = false;
        for (size_t j = 0; j < k && !seen; j++) {
            const char *other = NULL;
            ca_store_error(gen->store, j, &other);
            seen = other != NULL && strcmp(other, tid) == 0;
        }
        if (seen)
            continue;
        /* A broken index may name a tenant anything: escape it as a label value. */
        buf_appends(out, "certgate_tenant_load_errors{tenant=");
        metrics_label(out, tid);
        buf_appends(out, "} 1\n");
    }
}
