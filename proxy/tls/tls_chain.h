/* tls_chain.h: what a chain says, for tls_verify.c: the reason an operator can act on when
 * verification failed (SECURITY 28), name constraints BoringSSL does not judge, anchors that
 * must not be used, the earliest notAfter. Includes BoringSSL: only tls/ includes it. */
#ifndef CERTGATE_TLS_CHAIN_H
#define CERTGATE_TLS_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tls/tls_peer.h"

/* tls_chain_error_reason explains the failure |ctx| reports for the client's chain |peer|
 * (leaf |leaf|) under listener |tl| and |tenant|: |reason| gets the text, |*result| the refusal
 * class for logs and metrics, |*out_alert| the TLS alert. */
void tls_chain_error_reason(X509_STORE_CTX *ctx, const struct tls_listener *tl,
                            const struct ca_tenant *tenant, STACK_OF(X509) *peer, X509 *leaf,
                            char *reason, size_t len, const char **result, uint8_t *out_alert);

/* tls_chain_name_constraints_problem tells whether the verified chain has a name constraint
 * certgate refuses to trust BoringSSL with (in a leaf, malformed, or a wildcard against an
 * exclusion), and writes which to |out|. */
bool tls_chain_name_constraints_problem(STACK_OF(X509) *verified, char *out, size_t len);

/* tls_chain_unusable_anchor tells whether the verified chain's anchor from the store of
 * |tenant_name| may not issue certificates (not a CA, no keyCertSign, an unknown critical
 * extension) though it was used as an issuer, and writes why to |out|. */
bool tls_chain_unusable_anchor(STACK_OF(X509) *verified, const char *tenant_name, char *out,
                               size_t len);

/* tls_chain_not_after returns the earliest notAfter of the verified chain, anchors from the
 * store included, as Unix time. */
int64_t tls_chain_not_after(STACK_OF(X509) *verified);

#endif
