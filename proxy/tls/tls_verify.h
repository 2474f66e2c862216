/* tls_verify.h: client-certificate verification for tls.c, and the generation, listener and peer
 * structures the two files share. It includes BoringSSL: only tls.c and tls_verify.c include it;
 * every other module sees tls.h. */
#ifndef CERTGATE_TLS_VERIFY_H
#define CERTGATE_TLS_VERIFY_H

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

/* tls_verify_init allocates the SSL_CTX and SSL ex data slots of tls_verify_set_listener and
 * tls_verify_set_peer. Call it once, before the first context is built. */
void tls_verify_init(void);

/* tls_verify_set_listener attaches |tl| (borrowed: it must outlive |ctx|) to |ctx|. */
void tls_verify_set_listener(SSL_CTX *ctx, struct tls_listener *tl);

/* tls_verify_listener_of returns the listener attached to |ssl|'s context, or NULL. */
struct tls_listener *tls_verify_listener_of(const SSL *ssl);

/* tls_verify_set_peer attaches |pe| to |ssl| and takes ownership of it: it is freed with the
 * SSL. */
void tls_verify_set_peer(SSL *ssl, struct tls_peer *pe);

/* tls_verify_peer_of returns the peer data attached to |ssl|, or NULL. */
struct tls_peer *tls_verify_peer_of(const SSL *ssl);

/* tls_verify_handshake is the SSL_CTX_set_custom_verify callback: it verifies the client's chain
 * under its listener's and tenant's policy, answering from the calling thread's cache of
 * verified chains when it can. A refusal is logged and counted, and |*out_alert| is set. */
enum ssl_verify_result_t tls_verify_handshake(SSL *ssl, uint8_t *out_alert);

/* tls_verify_resumed checks a resumed session, which skipped the verify callback: its chain
 * is still valid now under the connection's trust set and CRLs (from the cache of verified
 * chains, or verified again), and revocation.ocsp (from the answer cache, or by starting a
 * query). Returns ssl_verify_ok, ssl_verify_invalid (refusal logged and counted), or
 * ssl_verify_retry while a query runs (call again after the resume hook). */
int tls_verify_resumed(SSL *ssl);

/* tls_verify_chain verifies |peer| (the client's certificates, leaf first; may be NULL) for
 * listener |tl| against the trust set of |tenant| (NULL: the common bundle), the CRLs and the
 * listener's policy, without the cache. Returns ssl_verify_ok, or ssl_verify_invalid after
 * logging the refusal and setting |*out_alert|. On success |*out_issuer| (when not NULL) gets a
 * reference to the leaf's issuer in the verified chain, or NULL when the leaf is itself a trust
 * anchor; the caller frees it. |*out_not_after| (when not NULL) gets the earliest notAfter of
 * the verified chain, anchors and intermediates from the store included, as Unix time. */
enum ssl_verify_result_t tls_verify_chain(SSL *ssl, struct tls_listener *tl,
                                          const struct ca_tenant *tenant, STACK_OF(X509) *peer,
                                          uint8_t *out_alert, X509 **out_issuer,
                                          int64_t *out_not_after);

/* tls_verify_thread_cleanup frees the calling thread's cache of verified chains. */
void tls_verify_thread_cleanup(void);

/* tls_verify_peer_chain parses the peer's certificates (leaf first, as sent); NULL when it sent
 * none or one does not parse. The caller frees it with sk_X509_pop_free(chain, X509_free). */
STACK_OF(X509) *tls_verify_peer_chain(const SSL *ssl);

/* tls_verify_log_refusal logs a refused client with everything an operator needs to act on it
 * (listener, |result|, |reason|, address, SNI, and |leaf|'s subject and issuer when not NULL)
 * and counts it in the handshake metrics under |result|. */
void tls_verify_log_refusal(SSL *ssl, const char *result, const char *reason, X509 *leaf);

/* tls_verify_allowed reports whether |leaf|'s subject is in the allowlist (allowlist.h). */
bool tls_verify_allowed(X509 *leaf);

/* tls_verify_name_rfc2253 returns |name| in RFC 2253 form; the caller frees it. */
char *tls_verify_name_rfc2253(X509_NAME *name);

/* tls_verify_time_string writes |t| as text ("Jan  2 15:04:05 2026 GMT") to |out|. */
void tls_verify_time_string(const ASN1_TIME *t, char *out, size_t len);

/* tls_verify_asn1_unix returns |t| as Unix time, 0 if it cannot be converted. */
int64_t tls_verify_asn1_unix(const ASN1_TIME *t);

#endif
