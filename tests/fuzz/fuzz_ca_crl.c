/* fuzz_ca_crl.c: libFuzzer target for the CRL checks of the CA store (ca_crl_check on any DER
 * that BoringSSL parses as a CRL, and ca_crl_signer_ok on any DER certificate). ca_pem.c reaches
 * ca_crl_check only through a PEM block; this target feeds it DER directly so that the fuzzer
 * mutates the extensions rather than base64. A CRL is judged the same twice, a refusal names what
 * is wrong, and an accepted CRL re-encodes to DER that is judged the same. Without -DFUZZING,
 * replay.c replays a corpus. */
#include <openssl/is_boringssl.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <openssl/mem.h>
#include <openssl/x509.h>

#include "ca_crl.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 262144)
        return 0;
    const uint8_t *p = data;
    X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)size);
    if (crl != NULL) {
        char what[256] = "", what2[256] = "";
        int rc = ca_crl_check(crl, what, sizeof(what));
        CHECK(rc == 0 || rc == -EINVAL);
        CHECK(rc == 0 || what[0] != '\0');
        CHECK(ca_crl_check(crl, what2, sizeof(what2)) == rc);
        CHECK(strcmp(what, what2) == 0);
        uint8_t *der = NULL;
        int len = i2d_X509_CRL(crl, &der);
        if (rc == 0 && len > 0) {
            const uint8_t *q = der;
            X509_CRL *back = d2i_X509_CRL(NULL, &q, len);
            CHECK(back != NULL);
            CHECK(ca_crl_check(back, what2, sizeof(what2)) == 0);
            X509_CRL_free(back);
        }
        OPENSSL_free(der);
        X509_CRL_free(crl);
    }
    p = data;
    X509 *cert = d2i_X509(NULL, &p, (long)size);
    if (cert != NULL) {
        bool ok = ca_crl_signer_ok(cert);
        CHECK(ca_crl_signer_ok(cert) == ok);
        X509_free(cert);
    }
    return 0;
}
