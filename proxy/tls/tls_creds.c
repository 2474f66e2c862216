/* tls_creds.c: certgate's own credentials for a generation: a PEM certificate chain and key, or a
 * PKCS#12 bundle with its password file, loaded into a struct tls_gen. */
#include <openssl/is_boringssl.h>
#include <openssl/base.h>
#if !defined(OPENSSL_IS_BORINGSSL)
#error "certgate must be built against BoringSSL (android-libboringssl-dev)"
#endif


#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs8.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/hmac.h>
#include <openssl/cipher.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/base.h"
#include "tls/tls_report.h"

#include "tls/tls_internal.h"

/* --- credentials ------------------------------------------------------------------------- */

void tls_ssl_error_string(char *out, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(out, len, "unknown error");
    else
        ERR_error_string_n(e, out, len);
    ERR_clear_error();
}

int tls_load_pem_credentials(struct tls_gen *gen, const struct config *cfg, char *err,
                             size_t err_len)
{
    char *cert_path = base_join_path(cfg->credentials_dir, cfg->credentials_cert);
    char *key_path = base_join_path(cfg->credentials_dir, cfg->credentials_key);
    uint8_t *cert_pem = NULL, *key_pem = NULL;
    size_t cert_len = 0, key_len = 0;
    BIO *bio = NULL;
    int r = ca_store_read_file(cert_path, &cert_pem, &cert_len, err, err_len);
    if (r < 0)
        goto fail;
    r = ca_store_read_file(key_path, &key_pem, &key_len, err, err_len);
    if (r < 0)
        goto fail;
    r = -EINVAL;
    bio = BIO_new_mem_buf(cert_pem, (int)cert_len);
    gen->leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (gen->leaf == NULL) {
        snprintf(err, err_len, "%s: no PEM certificate found", cert_path);
        tls_report_explain_credentials(err, err_len, cert_path, cert_pem, cert_len, key_path,
                                       key_pem, key_len, false);
        goto fail;
    }
    gen->chain = sk_X509_new_null();
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
        sk_X509_push(gen->chain, x);
    /* The loop ends at the end of the file, or at a block that does not parse: a file caught
     * half-written must not be served as a shorter chain. */
    unsigned long e = ERR_peek_last_error();
    ERR_clear_error();
    if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
        snprintf(err, err_len, "%s: certificate %zu of the chain does not parse", cert_path,
                 sk_X509_num(gen->chain) + 2);
        goto fail;
    }
    BIO_free(bio);
    bio = BIO_new_mem_buf(key_pem, (int)key_len);
    gen->key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    if (gen->key == NULL) {
        ERR_clear_error();
        snprintf(err, err_len, "%s: no PEM private key found", key_path);
        tls_report_explain_credentials(err, err_len, cert_path, cert_pem, cert_len, key_path,
                                       key_pem, key_len, true);
        goto fail;
    }
    if (!X509_check_private_key(gen->leaf, gen->key)) {
        ERR_clear_error();
        snprintf(err, err_len, "%s: the private key does not match the certificate in %s",
                 key_path, cert_path);
        goto fail;
    }
    r = 0;
fail:
    BIO_free(bio);
    if (key_pem != NULL)
        OPENSSL_cleanse(key_pem, key_len);
    free(cert_pem);
    free(key_pem);
    free(cert_path);
    free(key_path);
    return r;
}

int tls_load_pkcs12_credentials(struct tls_gen *gen, const struct config *cfg, char *err,
                                size_t err_len)
{
    char *p12_path = base_join_path(cfg->credentials_dir, cfg->credentials_pkcs12);
    char *pass_path = NULL;
    uint8_t *p12 = NULL, *pass = NULL;
    size_t p12_len = 0, pass_len = 0;
    char *password = NULL;
    STACK_OF(X509) *certs = sk_X509_new_null();
    int r = ca_store_read_file(p12_path, &p12, &p12_len, err, err_len);
    if (r < 0)
        goto fail;
    if (cfg->credentials_pkcs12_password_file != NULL) {
        pass_path = base_join_path(cfg->credentials_dir, cfg->credentials_pkcs12_password_file);
        r = ca_store_read_file(pass_path, &pass, &pass_len, err, err_len);
        if (r < 0)
            goto fail;
        while (pass_len > 0 && (pass[pass_len - 1] == '\n' || pass[pass_len - 1] == '\r'))
            pass_len--;
    }
    password = xstrndup((const char *)(pass ? pass : (uint8_t *)""), pass_len);
    r = -EINVAL;
    CBS cbs;
    CBS_init(&cbs, p12, p12_len);
    if (!PKCS12_get_key_and_certs(&gen->key, certs, &cbs, password)) {
        char e[256];
        tls_ssl_error_string(e, sizeof(e));
        snprintf(err, err_len, "%s: cannot read PKCS#12 (%s)", p12_path, e);
        goto fail;
    }
    /* The leaf is the certificate that matches the key; the rest is the chain. */
    gen->chain = sk_X509_new_null();
    for (size_t i = 0; i < sk_X509_num(certs); i++) {
        X509 *x = sk_X509_value(certs, i);
        if (gen->leaf == NULL && X509_check_private_key(x, gen->key))
            gen->leaf = X509_up_ref(x) ? x : NULL;
        else if (X509_up_ref(x))
            sk_X509_push(gen->chain, x);
    }
    ERR_clear_error();
    if (gen->leaf == NULL) {
        snprintf(err, err_len, "%s: no certificate matches the private key", p12_path);
        goto fail;
    }
    r = 0;
fail:
    sk_X509_pop_free(certs, X509_free);
    if (password != NULL)
        OPENSSL_cleanse(password, strlen(password));
    free(password);
    free(p12);
    free(pass);
    free(p12_path);
    free(pass_path);
    return r;
}
