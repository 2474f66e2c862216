/* tls_verify.h: client-certificate verification for tls.c: the verify callback, resumed
 * sessions, one chain under a listener's and tenant's policy, the verified-chain cache. The
 * structures it works on are in tls_peer.h. Only tls/ includes it. */
#ifndef CERTGATE_TLS_VERIFY_H
#define CERTGATE_TLS_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "tls/tls_peer.h"

/* tls_verify_init allocates the ex data slots (tls_peer_init) and sets up OCSP
 * (tls_revocation_init). Call it once, before the first context is built. */
void tls_verify_init(void);

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

/* tls_verify_allowed reports whether |leaf|'s subject is in the allowlist (allowlist.h). */
bool tls_verify_allowed(X509 *leaf);

#endif
