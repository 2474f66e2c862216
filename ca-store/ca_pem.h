/* ca_pem.h: the PEM scanner of the CA store. It reads a bundle of CERTIFICATE and X509 CRL blocks
 * leniently where that is safe and names the line of anything that is not a complete block. */
#ifndef CERTGATE_CA_PEM_H
#define CERTGATE_CA_PEM_H

#include <openssl/is_boringssl.h>

#include <stddef.h>
#include <stdint.h>

#include <openssl/sha.h>
#include <openssl/x509.h>

/* ca_pem_parse scans the |len| bytes at |data| (a file called |name| in messages) and appends
 * every CERTIFICATE block to |certs| and every X509 CRL block to |crls| (the stacks take one
 * reference each). When |hash| is non-NULL, each object's type and DER are fed into it, in
 * order. CRLF line ends, blank lines, text outside blocks (without a "-----" run) and an END
 * line followed by the next BEGIN on the same line are accepted. Returns 0, or -EINVAL with
 * "NAME:LINE: what" in |err| when a block is unterminated, mismatched, of another type, not
 * base64 or not DER, when a CRL is not complete evidence (ca_crl_check), or when the bundle
 * holds no block at all; on error some objects may already have been appended, so callers
 * discard the stacks. */
int ca_pem_parse(STACK_OF(X509) * certs, STACK_OF(X509_CRL) * crls, SHA256_CTX *hash,
                 const char *name, const uint8_t *data, size_t len, char *err, size_t err_len);

/* ca_pem_crl_line returns the line of the |n|-th (from 0) X509 CRL block of a bundle that
 * ca_pem_parse accepted, for messages about that CRL; 0 when there is no such block. */
size_t ca_pem_crl_line(const uint8_t *data, size_t len, size_t n);

#endif
