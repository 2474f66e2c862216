/* tls.c: server TLS with BoringSSL: credentials, per-listener contexts, session tickets, the
 * tenant chosen from the SNI, the socket-level read/write pump and the status report. Client
 * verification is in tls_verify.c. */
#include <openssl/is_boringssl.h>
#include <openssl/base.h>
#if !defined(OPENSSL_IS_BORINGSSL)
#error "certgate must be built against BoringSSL (android-libboringssl-dev)"
#endif

#include "tls/tls.h"

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

#include "ca_store.h"
#include "core/base.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/tenancy.h"
#include "http/xfcc.h"
#include "tls/tls_anchor.h"
#include "tls/tls_report.h"
#include "tls/tls_revocation.h"
#include "tls/tls_verify.h"

/* struct tls_gen, tls_listener and tls_peer are in tls_verify.h, which tls_verify.c shares. */

/* Certificates are kept as DER in one pool shared by every connection (the BoringSSL
 * "buffers" mode): an intermediate that a thousand gateways send is stored once, and no
 * connection keeps a parsed X509 of its peer. That halves the memory of an idle connection. */
static CRYPTO_BUFFER_POOL *tls_pool;

const char *tls_library(void)
{
    return OPENSSL_VERSION_TEXT;
}

/* --- credentials ------------------------------------------------------------------------- */

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
    char *cert_path = base_join_path(cfg->credentials_dir, cfg->credentials_cert);
    char *key_path = base_join_path(cfg->credentials_dir, cfg->credentials_key);
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
        tls_report_explain_credentials(err, err_len, cert_path, cert_pem, cert_len, key_path,
                                       key_pem, key_len, false);
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
        tls_report_explain_credentials(err, err_len, cert_path, cert_pem, cert_len, key_path,
                                       key_pem, key_len, true);
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
    char *p12_path = base_join_path(cfg->credentials_dir, cfg->credentials_pkcs12);
    char *pass_path = NULL;
    uint8_t *p12 = NULL, *pass = NULL;
    size_t p12_len = 0, pass_len = 0;
    char *password = NULL;
    STACK_OF(X509) *certs = sk_X509_new_null();
    int r = ca_store_read_file(p12_path, &p12, &p12_len, err, err_len);
    if (r < 0)
        goto fail;
    if (cfg->credentials_pkcs12_password_file != NULL) {
        pass_path = base_join_path(cfg->credentials_dir, cfg->credentials_pkcs12_password_file);
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
    struct tls_listener *tl = tls_verify_listener_of(ssl);
    const struct config *cfg = tl->gen->cfg;
    struct tls_peer *pe = tls_verify_peer_of(ssl);
    if (pe == NULL) {
        pe = xcalloc(1, sizeof(*pe));
        tls_verify_set_peer(ssl, pe);
    }
    char raw[TENANCY_MAX_NAME + 1], name[TENANCY_MAX_NAME + 1];
    bool has_sni = client_hello_sni(hello, raw, sizeof(raw)) &&
                   tenancy_normalize(name, raw, strlen(raw), false) && !tenancy_is_ip_literal(name);
    char reason[400];
    if (!has_sni) {
        if (cfg->tenancy_no_sni == TENANCY_REJECT) {
            tls_verify_log_refusal(ssl, "policy", "the client sent no SNI (tenancy.no_sni: reject)",
                                   NULL);
            return ssl_select_cert_error;
        }
    } else if (tenancy_match(cfg->tenancy_sni, name, pe->id)) {
        pe->tenant = tl->gen->store ? ca_store_tenant(tl->gen->store, pe->id, strlen(pe->id))
                                    : NULL;
    }
    if (has_sni && pe->tenant == NULL && cfg->tenancy_unknown == TENANCY_REJECT) {
        snprintf(reason, sizeof(reason), "SNI %s names no known tenant (tenancy.unknown: reject)",
                 name);
        tls_verify_log_refusal(ssl, "policy", reason, NULL);
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
        struct tls_peer *pe = tls_verify_peer_of(ssl);
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
    struct tls_peer *pe = tls_verify_peer_of(ssl);
    const struct ca_tenant *tenant = NULL;
    if (pe != NULL && pe->id[0] != '\0') {
        tenant = gen->store ? ca_store_tenant(gen->store, pe->id, strlen(pe->id)) : NULL;
        if (tenant == NULL && gen->cfg->tenancy_unknown == TENANCY_REJECT) {
            tls_verify_log_refusal(ssl, "policy",
                                   "the connection's tenant is gone from the CA store", NULL);
            return false;
        }
    }
    STACK_OF(X509) *peer = tls_verify_peer_chain(ssl);
    uint8_t alert = 0;
    bool ok = tls_verify_chain(ssl, tl, tenant, peer, &alert, NULL, NULL) == ssl_verify_ok;
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
    /* An SNI that names a tenant the store does not know is served by the common trust set
     * (tenancy.unknown: common): no tenant served it. */
    struct tls_peer *pe = tls_verify_peer_of(ssl);
    return pe != NULL && pe->tenant != NULL && pe->id[0] != '\0' ? pe->id : NULL;
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
        SSL_CTX_set_custom_verify(ctx, mode, tls_verify_handshake);
    tls_verify_set_listener(ctx, tl);
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
    if (tls_pool == NULL) {
        tls_verify_init();
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
        char *subject = tls_verify_name_rfc2253(X509_get_subject_name(gen->leaf));
        char until[64];
        tls_verify_time_string(X509_get0_notAfter(gen->leaf), until, sizeof(until));
        printf("credentials: %s (+%zu intermediate%s), valid until %s\n", subject,
               sk_X509_num(gen->chain), sk_X509_num(gen->chain) == 1 ? "" : "s", until);
        free(subject);
    }
    if (gen->store != NULL)
        ca_store_describe(gen->store, stdout);
}

size_t tls_check_anchors(const struct config *cfg)
{
    return cfg->ca_store_dir != NULL ? tls_anchor_check_store(cfg->ca_store_dir, stderr) : 0;
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
    tls_verify_set_peer(ssl, pe);
    SSL_set_fd(ssl, fd);
    SSL_set_accept_state(ssl);
    SSL_set_app_data(ssl, app);
    return ssl;
}

int tls_check_resumed(struct ssl_st *ssl)
{
    int r = tls_verify_resumed(ssl);
    return r == ssl_verify_ok ? 1 : r == ssl_verify_retry ? TLS_WANT_VERIFY : 0;
}

void tls_set_async_hooks(uv_loop_t *(*loop_of)(void *app), void (*resume)(void *app))
{
    tls_revocation_set_hooks(loop_of, resume);
}

void tls_free(struct ssl_st *ssl)
{
    SSL_free(ssl);
}

void tls_thread_cleanup(void)
{
    tls_verify_thread_cleanup();
}

static int map_error(SSL *ssl, int rv)
{
    switch (SSL_get_error(ssl, rv)) {
    case SSL_ERROR_WANT_READ:
        return TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT_WRITE;
    case SSL_ERROR_WANT_CERTIFICATE_VERIFY:
        return TLS_WANT_VERIFY;
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
    if (r == TLS_WANT_READ || r == TLS_WANT_WRITE || r == TLS_WANT_VERIFY)
        return r;
    /* Verification failures were logged by tls_verify_handshake; log the rest here. */
    unsigned long e = ERR_peek_error();
    int reason = ERR_GET_REASON(e);
    /* Refusals by tls_verify_handshake and select_tenant were logged and counted there. */
    if (e != 0 && reason != SSL_R_CERTIFICATE_VERIFY_FAILED && reason != SSL_R_CONNECTION_REJECTED) {
        char text[256];
        const char *why = NULL;
        if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
            why = "the client sent no certificate";
        else if (reason == SSL_R_UNSUPPORTED_PROTOCOL)
            why = "the client offered only TLS versions older than 1.2";
        else if (reason == SSL_R_NO_SHARED_CIPHER)
            why = "no cipher in common with the client";
        else if (reason == SSL_R_KEY_USAGE_BIT_INCORRECT)
            why = "certificate not allowed for client authentication (key usage without "
                  "digitalSignature)";
        else if (reason == SSL_R_CANNOT_PARSE_LEAF_CERT)
            why = "the client's certificate does not parse or has a key type BoringSSL does "
                  "not support";
        if (why == NULL) {
            ERR_error_string_n(e, text, sizeof(text));
            why = text;
        }
        const char *result = reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ? "no_cert"
                             : reason == SSL_R_KEY_USAGE_BIT_INCORRECT        ? "policy"
                                                                               : "error";
        tls_verify_log_refusal(ssl, result, why, NULL);
    } else if (e == 0) {
        struct tls_listener *tl = tls_verify_listener_of(ssl);
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

bool tls_peer_allowed(struct ssl_st *ssl)
{
    STACK_OF(X509) *peer = ssl ? tls_verify_peer_chain(ssl) : NULL;
    bool ok = peer != NULL && sk_X509_num(peer) > 0 && tls_verify_allowed(sk_X509_value(peer, 0));
    sk_X509_pop_free(peer, X509_free);
    return ok;
}

char *tls_peer_subject(struct ssl_st *ssl)
{
    STACK_OF(X509) *peer = tls_verify_peer_chain(ssl);
    if (peer == NULL)
        return NULL;
    char *subject = tls_verify_name_rfc2253(X509_get_subject_name(sk_X509_value(peer, 0)));
    sk_X509_pop_free(peer, X509_free);
    return subject;
}

bool tls_client_cert_headers(struct tls_gen *gen, size_t index, struct ssl_st *ssl,
                             struct buf *out, struct buf *element)
{
    STACK_OF(X509) *peer = tls_verify_peer_chain(ssl);
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

int64_t tls_gen_server_not_after(const struct tls_gen *gen)
{
    return gen->leaf ? tls_verify_asn1_unix(X509_get0_notAfter(gen->leaf)) : 0;
}

void tls_gen_status_json(const struct tls_gen *gen, struct buf *out)
{
    buf_appends(out, "\"credentials\":");
    if (gen->leaf == NULL) {
        buf_appends(out, "null");
    } else {
        char *subject = tls_verify_name_rfc2253(X509_get_subject_name(gen->leaf));
        buf_appends(out, "{\"subject\":");
        log_json_string(out, subject);
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
            log_json_string(out, text);
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
            log_json_string(out, id);
            buf_appends(out, ":{\"cas\":[");
            const STACK_OF(X509) *cas = ca_store_cas(gen->store, t);
            for (size_t j = 0; j < sk_X509_num(cas); j++) {
                X509 *x = sk_X509_value(cas, j);
                char *subject = tls_verify_name_rfc2253(X509_get_subject_name(x));
                buf_appends(out, j ? ",{\"subject\":" : "{\"subject\":");
                log_json_string(out, subject);
                free(subject);
                buf_appendf(out, ",\"not_after\":%lld}",
                            (long long)tls_verify_asn1_unix(X509_get0_notAfter(x)));
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
                log_json_string(out, error);
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
            log_json_string(out, tid);
            buf_appends(out, ":{\"cas\":[],\"error\":");
            log_json_string(out, msg);
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
                first = MIN(first, tls_verify_asn1_unix(X509_get0_notAfter(sk_X509_value(cas, j))));
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
    tls_report_metrics(gen, out);
}
