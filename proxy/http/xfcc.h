/* xfcc.h: the values of the forwarded client-certificate headers (CONTRACT section 5): Envoy's
 * x-forwarded-client-cert element, RFC 9440's Client-Cert and Client-Cert-Chain, nginx's escaped
 * PEM; and the predicate that recognises a client-supplied copy of any of them. */
#ifndef CERTGATE_XFCC_H
#define CERTGATE_XFCC_H

#include <openssl/is_boringssl.h>
#include <openssl/base.h>
#if !defined(OPENSSL_IS_BORINGSSL)
#error "certgate must be built against BoringSSL (android-libboringssl-dev)"
#endif

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

#include "core/buf.h"

enum xfcc_name {
    XFCC_NAME_NONE,              /* not a client-certificate header */
    XFCC_NAME_XFCC,              /* x-forwarded-client-cert */
    XFCC_NAME_CLIENT_CERT,       /* client-cert (RFC 9440) */
    XFCC_NAME_CLIENT_CERT_CHAIN, /* client-cert-chain (RFC 9440) */
    XFCC_NAME_X_SSL_CLIENT_CERT, /* x-ssl-client-cert (pem) */
};

/* xfcc_classify tells which client-certificate header |name| (|len| bytes) is, in any letter
 * case; |*out_underscore| is set when it was spelt with at least one '_' for a '-'. */
enum xfcc_name xfcc_classify(const char *name, size_t len, bool *out_underscore);

/* xfcc_element appends this hop's x-forwarded-client-cert element for |chain| (leaf first, as
 * the client sent it) to |out|: By (one per |by_uris|), Hash, then the keys chosen by |details|
 * (CC_DETAIL_* of config.h), in Envoy's order. Each value is byte-identical to Envoy's unless it
 * holds a byte a parser could misread; such a value is quoted and percent-encoded (CONTRACT
 * section 5), so that no ';' (nor, outside a Subject, ',') can come from certificate content and
 * neither a quote-aware parser nor a naive one that splits on ';' sees a key certgate did not
 * write. The value is visible ASCII: never CR, LF, NUL or a byte >= 0x80. */
void xfcc_element(struct buf *out, STACK_OF(X509) *chain, unsigned details,
                  const char *const *by_uris, size_t num_by_uris);

/* xfcc_rfc9440 appends the Client-Cert value (":<base64 DER of the leaf>:") to |cert_out| and,
 * when |chain| holds more than the leaf, the Client-Cert-Chain value to |chain_out|. */
void xfcc_rfc9440(struct buf *cert_out, struct buf *chain_out, STACK_OF(X509) *chain);

/* xfcc_pem appends the leaf PEM percent-encoded as nginx's $ssl_client_escaped_cert. */
void xfcc_pem(struct buf *out, X509 *leaf);

/* xfcc_uri_sans returns the URI SANs of |cert| as a NULL-terminated array of strings (caller
 * frees each and the array with free); *out_num gets the count. */
char **xfcc_uri_sans(X509 *cert, size_t *out_num);

#endif
