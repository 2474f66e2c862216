/* fuzz_ocsp.c: libFuzzer target for the OCSP response parser and verifier (tls_ocsp_check), fed
 * as a responder's DER answer about a fixed leaf and issuer (ocsp_pki.h, made with the corpus by
 * make_ctl_corpus.sh, whose responses are real answers of `openssl ocsp` about that leaf). The
 * verdict must be 0 or -EBADMSG with a reason; a result has a known status, times within the
 * allowed skew of "now" and a revocation time only when revoked; the same bytes give the same
 * verdict. Without -DFUZZING, replay.c replays a corpus. */
#include <openssl/is_boringssl.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "fuzz_check.h"
#include "ocsp_pki.h"
#include "tls/tls_ocsp.h"

static X509 *leaf, *issuer;

static X509 *load(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    CHECK(bio != NULL);
    X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    CHECK(x != NULL);
    BIO_free(bio);
    return x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (leaf == NULL) {
        leaf = load(OCSP_LEAF_PEM);
        issuer = load(OCSP_ISSUER_PEM);
    }
    if (size > 200000)
        return 0;
    struct tls_ocsp_result res, res2;
    char err[256] = "", err2[256] = "";
    memset(&res, 0, sizeof(res));
    memset(&res2, 0, sizeof(res2));
    int rc = tls_ocsp_check(data, size, leaf, issuer, OCSP_NOW, &res, err, sizeof(err));
    int rc2 = tls_ocsp_check(data, size, leaf, issuer, OCSP_NOW, &res2, err2, sizeof(err2));
    CHECK(rc == rc2 && strcmp(err, err2) == 0);
    CHECK(rc == 0 || rc == -EBADMSG);
    if (rc != 0) {
        CHECK(err[0] != '\0');
        return 0;
    }
    CHECK(memcmp(&res, &res2, sizeof(res)) == 0);
    CHECK(res.status == TLS_OCSP_GOOD || res.status == TLS_OCSP_REVOKED ||
          res.status == TLS_OCSP_UNKNOWN);
    CHECK(res.this_update <= OCSP_NOW + 300);
    CHECK(res.next_update == 0 || res.next_update >= OCSP_NOW - 300);
    if (res.status != TLS_OCSP_REVOKED)
        CHECK(res.revoked_at == 0);
    /* NULL |err| is allowed. */
    CHECK(tls_ocsp_check(data, size, leaf, issuer, OCSP_NOW, &res2, NULL, 0) == 0);
    return 0;
}
