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
#include "tls/tls_internal.h"
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

/* ALPN (RFC 7301): h2 when the listener offers it and the client asks for it, else http/1.1.
 * A client that names neither gets the no_application_protocol alert, as the RFC asks; a
 * client that sends no ALPN at all is served HTTP/1.1 (or h2 where only h2 is offered). */
static int alpn_select(SSL *ssl, const uint8_t **out, uint8_t *out_len, const uint8_t *in,
                       unsigned in_len, void *arg)
{
    const struct tls_listener *tl = arg;
    static const struct {
        unsigned bit;
        const char *name;
    } prefs[] = {{ALPN_H2, "h2"}, {ALPN_HTTP11, "http/1.1"}};
    for (size_t i = 0; i < ARRAY_SIZE(prefs); i++) {
        if (!(tl->lc->alpn & prefs[i].bit))
            continue;
        size_t want = strlen(prefs[i].name);
        for (unsigned off = 0; off < in_len;) {
            unsigned n = in[off];
            if (off + 1 + n > in_len)
                break;
            if (n == want && memcmp(in + off + 1, prefs[i].name, n) == 0) {
                *out = in + off + 1;
                *out_len = (uint8_t)n;
                return SSL_TLSEXT_ERR_OK;
            }
            off += 1 + n;
        }
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

bool tls_alpn_h2(struct ssl_st *ssl)
{
    const uint8_t *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    if (n == 0) {
        const struct tls_listener *tl = tls_peer_listener_of(ssl);
        return tl != NULL && tl->lc->alpn == ALPN_H2;
    }
    return n == 2 && memcmp(p, "h2", 2) == 0;
}

static int ticket_cb(SSL *ssl, uint8_t *key_name, uint8_t *iv, EVP_CIPHER_CTX *cctx, HMAC_CTX *hctx,
                     int encrypt)
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
        tls_ssl_error_string(e, sizeof(e));
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
        SSL_CTX_set_select_certificate_cb(ctx, tls_select_tenant);

    int mode = SSL_VERIFY_NONE;
    if (lc->client_auth == CLIENT_AUTH_REQUIRE)
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    else if (lc->client_auth == CLIENT_AUTH_OPTIONAL)
        mode = SSL_VERIFY_PEER;
    if (mode != SSL_VERIFY_NONE)
        SSL_CTX_set_custom_verify(ctx, mode, tls_verify_handshake);
    if (lc->mode == LISTENER_HTTP && lc->alpn != 0)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, tl);
    tls_peer_set_listener(ctx, tl);
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
            r = tls_load_pkcs12_credentials(gen, cfg, err, err_len);
        else
            r = tls_load_pem_credentials(gen, cfg, err, err_len);
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
        char *subject = tls_peer_name_rfc2253(X509_get_subject_name(gen->leaf));
        char until[64];
        tls_peer_time_string(X509_get0_notAfter(gen->leaf), until, sizeof(until));
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
    tls_peer_set(ssl, pe);
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
    /* Refusals by tls_verify_handshake and tls_select_tenant were logged and counted there. */
    if (e != 0 && reason != SSL_R_CERTIFICATE_VERIFY_FAILED &&
        reason != SSL_R_CONNECTION_REJECTED) {
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
        tls_peer_log_refusal(ssl, result, why, NULL);
    } else if (e == 0) {
        struct tls_listener *tl = tls_peer_listener_of(ssl);
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
    STACK_OF(X509) *peer = ssl ? tls_peer_chain(ssl) : NULL;
    bool ok = peer != NULL && sk_X509_num(peer) > 0 && tls_verify_allowed(sk_X509_value(peer, 0));
    sk_X509_pop_free(peer, X509_free);
    return ok;
}

char *tls_peer_subject(struct ssl_st *ssl)
{
    STACK_OF(X509) *peer = tls_peer_chain(ssl);
    if (peer == NULL)
        return NULL;
    char *subject = tls_peer_name_rfc2253(X509_get_subject_name(sk_X509_value(peer, 0)));
    sk_X509_pop_free(peer, X509_free);
    return subject;
}

bool tls_client_cert_headers(struct tls_gen *gen, size_t index, struct ssl_st *ssl, struct buf *out,
                             struct buf *element)
{
    STACK_OF(X509) *peer = tls_peer_chain(ssl);
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

