/* tls_peer.h: the structures the files of the TLS layer share (the generation, a listener's
 * handshake data, a connection's peer) and the helpers every one of them uses: ex data,
 * the peer's chain, certificate text, the refusal log. It includes BoringSSL: only tls/ includes
 * it; every other layer sees tls.h. */
#ifndef CERTGATE_TLS_PEER_H
#define CERTGATE_TLS_PEER_H

#include <openssl/is_boringssl.h>
#include <openssl/base.h>
#if !defined(OPENSSL_IS_BORINGSSL)
#error "certgate must be built against BoringSSL (android-libboringssl-dev)"
#endif

#include <netinet/in.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "ca_store.h"
#include "core/config.h"
#include "http/tenancy.h"

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

/* Everything built from files (tls.c builds it, tls_verify.c reads it). */
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

/* tls_peer_init allocates the SSL_CTX and SSL ex data slots of tls_peer_set_listener and
 * tls_peer_set. Call it once, before the first context is built. */
void tls_peer_init(void);

/* tls_peer_set_listener attaches |tl| (borrowed: it must outlive |ctx|) to |ctx|. */
void tls_peer_set_listener(SSL_CTX *ctx, struct tls_listener *tl);

/* tls_peer_listener_of returns the listener attached to |ssl|'s context, or NULL. */
struct tls_listener *tls_peer_listener_of(const SSL *ssl);

/* tls_peer_set attaches |pe| to |ssl| and takes ownership of it: it is freed with the
 * SSL. */
void tls_peer_set(SSL *ssl, struct tls_peer *pe);

/* tls_peer_of returns the peer data attached to |ssl|, or NULL. */
struct tls_peer *tls_peer_of(const SSL *ssl);

/* tls_peer_chain parses the peer's certificates (leaf first, as sent); NULL when it sent
 * none or one does not parse. The caller frees it with sk_X509_pop_free(chain, X509_free). */
STACK_OF(X509) *tls_peer_chain(const SSL *ssl);

/* tls_peer_log_refusal logs a refused client with everything an operator needs to act on it
 * (listener, |result|, |reason|, address, SNI, and |leaf|'s subject and issuer when not NULL)
 * and counts it in the handshake metrics under |result|. */
void tls_peer_log_refusal(SSL *ssl, const char *result, const char *reason, X509 *leaf);

/* tls_peer_name_rfc2253 returns |name| in RFC 2253 form; the caller frees it. */
char *tls_peer_name_rfc2253(X509_NAME *name);

/* tls_peer_time_string writes |t| as text ("Jan  2 15:04:05 2026 GMT") to |out|. */
void tls_peer_time_string(const ASN1_TIME *t, char *out, size_t len);

/* tls_peer_asn1_unix returns |t| as Unix time, 0 if it cannot be converted. */
int64_t tls_peer_asn1_unix(const ASN1_TIME *t);

#endif
