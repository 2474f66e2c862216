/* tls_anchor.c: why a CA-store certificate cannot issue client certificates. BoringSSL skips
 * such a certificate while it builds a chain and then reports "unable to get local issuer
 * certificate", which sends an operator looking for a missing CA that is in fact there; this
 * names the defect instead, at handshake time and in `certgate check`. */
#include <openssl/is_boringssl.h>

#include "tls/tls_anchor.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca_index.h"
#include "ca_store.h"
#include "core/base.h"
#include "tls/tls_peer.h"

bool tls_anchor_problem(X509 *x, bool with_key, char *out, size_t len)
{
    uint32_t flags = X509_get_extension_flags(x);
    for (int i = 0; i < X509_get_ext_count(x); i++) {
        X509_EXTENSION *ext = X509_get_ext(x, i);
        if (!X509_EXTENSION_get_critical(ext) || X509_supported_extension(ext))
            continue;
        char oid[80];
        OBJ_obj2txt(oid, sizeof(oid), X509_EXTENSION_get_object(ext), 0);
        snprintf(out, len, "it has a critical %s extension, which BoringSSL does not process", oid);
        return true;
    }
    if (flags & EXFLAG_INVALID) {
        snprintf(out, len, "one of its extensions does not parse (or is repeated)");
        return true;
    }
    if ((flags & EXFLAG_KUSAGE) && !(X509_get_key_usage(x) & KU_KEY_CERT_SIGN)) {
        snprintf(out, len, "its keyUsage lacks keyCertSign");
        return true;
    }
    if (!(flags & EXFLAG_BCONS) && !(flags & EXFLAG_V1)) {
        snprintf(out, len, "it has no basicConstraints extension (not a CA)");
        return true;
    }
    if (X509_check_ca(x) == 0) {
        snprintf(out, len, "its basicConstraints say CA:FALSE (not a CA)");
        return true;
    }
    EVP_PKEY *pk = with_key ? X509_get_pubkey(x) : NULL;
    ERR_clear_error();
    if (with_key && pk == NULL) {
        snprintf(out, len, "its key type is not supported");
        return true;
    }
    EVP_PKEY_free(pk);
    return false;
}

bool tls_anchor_dns_name_ok(const uint8_t *s, size_t n, bool constraint)
{
    if (constraint && n > 0 && s[0] == '.') {
        s++;
        n--;
    }
    if (n == 0 || n > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            if (label == 0 || label > 63 || s[i - 1] == '-' || s[i - label] == '-')
                return false;
            label = 0;
            continue;
        }
        uint8_t c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return false;
        label++;
    }
    return true;
}

/* --- certgate check ---------------------------------------------------------------------- */

static size_t check_bundle(const char *path, FILE *out)
{
    uint8_t *data = NULL;
    size_t len = 0;
    char err[512];
    if (ca_store_read_file(path, &data, &len, err, sizeof(err)) < 0)
        return 0; /* the store's own load reports it */
    static const char begin[] = "-----BEGIN CERTIFICATE-----";
    size_t warnings = 0, line = 1, counted = 0;
    const uint8_t *p = data, *end = data + len;
    while ((p = memmem(p, (size_t)(end - p), begin, sizeof(begin) - 1)) != NULL) {
        for (; counted < (size_t)(p - data); counted++)
            line += data[counted] == '\n';
        BIO *bio = BIO_new_mem_buf(p, (int)MIN((size_t)(end - p), (size_t)INT32_MAX));
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
        ERR_clear_error();
        char why[256];
        if (x != NULL && tls_anchor_problem(x, true, why, sizeof(why))) {
            char *subject = tls_peer_name_rfc2253(X509_get_subject_name(x));
            fprintf(out,
                    "warning: %s:%zu: certificate \"%s\" cannot issue client certificates: %s "
                    "(it is an anchor for itself only)\n",
                    path, line, subject, why);
            free(subject);
            warnings++;
        }
        X509_free(x);
        p += sizeof(begin) - 1;
    }
    free(data);
    return warnings;
}

static size_t check_files(const char *base, const struct ca_index_file *files, size_t n, FILE *out)
{
    size_t warnings = 0;
    for (size_t i = 0; i < n; i++) {
        char *path = base_join_path(base, files[i].path);
        warnings += check_bundle(path, out);
        free(path);
    }
    return warnings;
}

size_t tls_anchor_check_store(const char *dir, FILE *out)
{
    char *index_path = base_join_path(dir, "index.yml");
    uint8_t *data = NULL;
    size_t len = 0, warnings = 0;
    char err[512];
    struct ca_index index = {0};
    if (ca_store_read_file(index_path, &data, &len, err, sizeof(err)) < 0 ||
        ca_index_parse(&index, index_path, data, len, err, sizeof(err)) < 0)
        goto done; /* the store's own load reports it */
    char *common = base_join_path(dir, "common");
    warnings += check_files(common, index.common, index.num_common, out);
    free(common);
    for (size_t i = 0; i < index.num_tenants; i++) {
        const struct ca_index_tenant *t = &index.tenants[i];
        if (t->error != NULL)
            continue;
        char *tenants = base_join_path(dir, "tenants");
        char *base = base_join_path(tenants, t->id);
        warnings += check_files(base, t->files, t->num_files, out);
        free(base);
        free(tenants);
    }
done:
    ca_index_cleanup(&index);
    free(data);
    free(index_path);
    return warnings;
}
