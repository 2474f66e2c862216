/* tls_ocsp.h: the OCSP codec (RFC 6960) written with CBS/CBB, since BoringSSL has no OCSP API:
 * the responder URL from a leaf's AIA, the DER request, and the parsed and verified response.
 * No I/O here: fetching and caching belong to the callers. Only tls*.c include this header. */
#ifndef CERTGATE_TLS_OCSP_H
#define CERTGATE_TLS_OCSP_H

#include <openssl/is_boringssl.h>

#include <openssl/base.h>
#if !defined(OPENSSL_IS_BORINGSSL)
#error "certgate must be built against BoringSSL (android-libboringssl-dev)"
#endif

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

/* Outcome of checking one OCSP response for one certificate. */
enum tls_ocsp_status {
    TLS_OCSP_GOOD,    /* the responder vouches for the certificate */
    TLS_OCSP_REVOKED, /* revoked since |revoked_at| */
    TLS_OCSP_UNKNOWN, /* the responder does not know the certificate */
};

struct tls_ocsp_result {
    enum tls_ocsp_status status;
    int64_t this_update; /* unix seconds */
    int64_t next_update; /* unix seconds, 0 when the response has none (a present one is > 0) */
    int64_t revoked_at;  /* unix seconds when REVOKED */
};

/* tls_ocsp_url returns a new copy of the first http:// OCSP URI in |leaf|'s Authority
 * Information Access extension, or NULL when there is none (https:// and other schemes are
 * skipped: an OCSP responder is plain HTTP by design, and fetching over TLS would recurse).
 * URIs holding control characters, spaces or non-ASCII bytes, or longer than 2048 bytes, are
 * skipped too. The caller frees the copy with free(). */
char *tls_ocsp_url(X509 *leaf);

/* tls_ocsp_request builds a DER OCSPRequest (RFC 6960, one Request, CertID with SHA-1 as every
 * responder accepts it, no nonce) for |leaf| issued by |issuer|. Returns 0 and a new buffer the
 * caller frees with OPENSSL_free, or -ENOMEM / -EINVAL. */
int tls_ocsp_request(X509 *leaf, X509 *issuer, uint8_t **out, size_t *out_len);

/* tls_ocsp_check parses the DER OCSPResponse |der| and verifies that it is a successful
 * id-pkix-ocsp-basic response, signed either by |issuer| itself or by a responder certificate
 * included in the response that |issuer| signed and that has EKU id-kp-OCSPSigning (RFC 6960
 * 4.2.2.2; the responder certificate's own validity period must cover |now|), whose ResponderID
 * matches the signer, and that holds a SingleResponse for exactly |leaf|'s CertID (issuer name
 * hash, issuer key hash, serial; accept SHA-1 and SHA-256 CertID hashes). thisUpdate must not
 * be later than |now| + 300 s, and nextUpdate, when present, not earlier than |now| - 300 s.
 * When several SingleResponses match, the worst status wins (revoked, then unknown, then good).
 * Signatures: RSA PKCS#1 v1.5 and ECDSA with SHA-1/256/384/512; RSA-PSS is refused. Responses
 * above 128 KiB or with more than 8 certificates are refused.
 * Returns 0 and fills |out|; or a negative errno (-EBADMSG for anything malformed or any check
 * that fails, -EINVAL for unusable |leaf| / |issuer|) with a one-line human reason in |err|
 * (e.g. "OCSP response signature does not verify", "OCSP responder status 6 (unauthorized)",
 * "OCSP response is stale: nextUpdate 2026-11-01T00:00:00Z"). |err| may be NULL. */
int tls_ocsp_check(const uint8_t *der, size_t der_len, X509 *leaf, X509 *issuer, int64_t now,
                   struct tls_ocsp_result *out, char *err, size_t err_len);

#endif
