/* fuzz_ca_pem.c: libFuzzer target for the CA store's PEM bundle scanner (ca_pem_parse, which
 * checks every CRL with ca_crl_check). An accepted bundle holds at least one object, every CRL in
 * it passes ca_crl_check and has a line (ca_pem_crl_line), and scanning it again gives the same
 * objects and the same hash; a refusal says "NAME:LINE: what" (but "NAME: no CERTIFICATE or
 * X509 CRL block", which is about the whole file). Without -DFUZZING, replay.c
 * replays a corpus. */
#include <openssl/is_boringssl.h>

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <openssl/sha.h>
#include <openssl/x509.h>

#include "ca_crl.h"
#include "ca_pem.h"
#include "fuzz_check.h"

#define NAME "bundle.pem"

struct scan {
    STACK_OF(X509) * certs;
    STACK_OF(X509_CRL) * crls;
    uint8_t digest[SHA256_DIGEST_LENGTH];
    char err[512];
    int rc;
};

static void scan(struct scan *s, const uint8_t *data, size_t size)
{
    SHA256_CTX hash;
    SHA256_Init(&hash);
    s->certs = sk_X509_new_null();
    s->crls = sk_X509_CRL_new_null();
    CHECK(s->certs != NULL && s->crls != NULL);
    s->err[0] = '\0';
    s->rc = ca_pem_parse(s->certs, s->crls, &hash, NAME, data, size, s->err, sizeof(s->err));
    SHA256_Final(s->digest, &hash);
}

static void scan_free(struct scan *s)
{
    sk_X509_pop_free(s->certs, X509_free);
    sk_X509_CRL_pop_free(s->crls, X509_CRL_free);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 262144)
        return 0;
    struct scan a, b;
    scan(&a, data, size);
    scan(&b, data, size);
    CHECK(a.rc == b.rc && strcmp(a.err, b.err) == 0);
    if (a.rc != 0) {
        CHECK(a.rc == -EINVAL);
        CHECK(strncmp(a.err, NAME ":", strlen(NAME ":")) == 0);
        const char *p = a.err + strlen(NAME ":");
        if (strcmp(p, " no CERTIFICATE or X509 CRL block") == 0)
            goto out; /* about the whole file: no line to name */
        CHECK(isdigit((unsigned char)*p) && *p != '0');
        while (isdigit((unsigned char)*p))
            p++;
        CHECK(p[0] == ':' && p[1] == ' ' && p[2] != '\0');
        goto out;
    }
    size_t nc = sk_X509_num(a.certs), nl = sk_X509_CRL_num(a.crls);
    CHECK(nc + nl > 0);
    CHECK(nc == sk_X509_num(b.certs) && nl == sk_X509_CRL_num(b.crls));
    CHECK(memcmp(a.digest, b.digest, sizeof(a.digest)) == 0);
    for (size_t i = 0; i < nc; i++)
        CHECK(X509_cmp(sk_X509_value(a.certs, i), sk_X509_value(b.certs, i)) == 0);
    for (size_t i = 0; i < nl; i++) {
        char what[256] = "";
        CHECK(ca_crl_check(sk_X509_CRL_value(a.crls, i), what, sizeof(what)) == 0);
        CHECK(ca_pem_crl_line(data, size, i) >= 1);
    }
    CHECK(ca_pem_crl_line(data, size, nl) == 0);
out:
    scan_free(&a);
    scan_free(&b);
    return 0;
}
