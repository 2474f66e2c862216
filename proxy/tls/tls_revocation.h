/* tls_revocation.h: OCSP for client leaves (revocation.ocsp): a cache of answers shared by the
 * workers, one asynchronous query per handshake that needs one (the verify callback returns
 * ssl_verify_retry meanwhile, so the event loop never blocks), and the off / soft_fail /
 * hard_fail decision. Only tls_verify.c includes it. */
#ifndef CERTGATE_TLS_REVOCATION_H
#define CERTGATE_TLS_REVOCATION_H

#include "tls/tls_peer.h"

#include <uv.h>

/* tls_revocation_init sets up the cache and the per-handshake state; once, before any handshake. */
void tls_revocation_init(void);

/* tls_revocation_set_hooks tells how to find the loop a connection runs on (|loop_of|, given the
 * SSL's app data) and how to continue its handshake once a query finished (|resume|, called on
 * that loop). Without hooks, OCSP queries fail (soft_fail accepts, hard_fail refuses). */
void tls_revocation_set_hooks(uv_loop_t *(*loop_of)(void *app), void (*resume)(void *app));

/* tls_revocation_resume is called first by the verify callback: when this handshake has a query,
 * it returns ssl_verify_retry while the query runs, or the decision once it finished (the query
 * is then forgotten). Returns -1 when the handshake has no query. */
int tls_revocation_resume(SSL *ssl, const struct tls_listener *tl, uint8_t *out_alert);

/* tls_revocation_cached decides from the cache alone for the client's leaf (when the chain was
 * found in the verified-chain cache): ssl_verify_ok or ssl_verify_invalid, or -1 when the cache
 * does not know the leaf (the caller then verifies the chain to learn the issuer). ssl_verify_ok
 * when OCSP is off. */
int tls_revocation_cached(SSL *ssl, const struct tls_listener *tl, uint8_t *out_alert);

/* tls_revocation_check decides for |leaf| issued by |issuer| (NULL when the leaf is itself a
 * trust anchor: nothing to ask): from the cache, or by starting a query and returning
 * ssl_verify_retry. Borrows |leaf| and |issuer|. */
enum ssl_verify_result_t tls_revocation_check(SSL *ssl, const struct tls_listener *tl, X509 *leaf,
                                              X509 *issuer, uint8_t *out_alert);

#endif
