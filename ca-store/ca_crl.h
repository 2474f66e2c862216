/* ca_crl.h: whether a CRL can count as evidence on its own terms (CONTRACT section 6, SECURITY
 * rule 27): complete in scope, nothing in it that certgate would have to understand and does not.
 * What depends on the issuer (keyUsage cRLSign) is checked by the store, which knows the CAs. */
#ifndef CERTGATE_CA_CRL_H
#define CERTGATE_CA_CRL_H

#include <openssl/is_boringssl.h>

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

/* ca_crl_check returns 0 when |crl| is a complete CRL that certgate understands, or -EINVAL with
 * what is wrong in |what| ("delta CRL (deltaCRLIndicator)", "unknown critical extension 1.2.3",
 * "Issuing Distribution Point narrows its scope (onlyContainsCACerts)", ...): a delta CRL, an
 * unknown critical extension of the CRL or of an entry, an entry for another issuer
 * (certificateIssuer), an Issuing Distribution Point that cannot be parsed or that limits the
 * CRL to some reasons, some kinds of certificate or makes it indirect. A distribution point
 * name alone is accepted: it names where the CRL is published, and the CRL stays complete for
 * every certificate of its issuer that points there. */
int ca_crl_check(X509_CRL *crl, char *what, size_t what_len);

/* ca_crl_signer_ok reports whether |signer|'s keyUsage, when it has one, allows cRLSign. */
bool ca_crl_signer_ok(X509 *signer);

#endif
