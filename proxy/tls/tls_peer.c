/* tls_peer.c: what the TLS layer attaches to a context (its listener) and to a connection (its
 * tenant and address), the peer's chain, certificate text for logs and reports, and the one
 * place where a refused client is logged and counted. */
#include <openssl/is_boringssl.h>

#include "tls/tls_peer.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/pool.h>
#include <openssl/x509v3.h>

#include "core/base.h"
#include "core/log.h"
#include "core/metrics.h"

/* --- ex data: the listener of a context, the peer of a connection ------------------------- */

static int tls_listener_index = -1;
static int tls_peer_index = -1;

static void peer_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl, void *argp)
{
    free(ptr);
}

void tls_peer_init(void)
{
    tls_listener_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    tls_peer_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, peer_free);
}

void tls_peer_set_listener(SSL_CTX *ctx, struct tls_listener *tl)
{
    SSL_CTX_set_ex_data(ctx, tls_listener_index, tl);
}

struct tls_listener *tls_peer_listener_of(const SSL *ssl)
{
    return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_listener_index);
}

void tls_peer_set(SSL *ssl, struct tls_peer *pe)
{
    SSL_set_ex_data(ssl, tls_peer_index, pe);
}

struct tls_peer *tls_peer_of(const SSL *ssl)
{
    return SSL_get_ex_data(ssl, tls_peer_index);
}

STACK_OF(X509) *tls_peer_chain(const SSL *ssl)
{
    const STACK_OF(CRYPTO_BUFFER) *bufs = SSL_get0_peer_certificates(ssl);
    if (bufs == NULL || sk_CRYPTO_BUFFER_num(bufs) == 0)
        return NULL;
    STACK_OF(X509) *chain = sk_X509_new_null();
    for (size_t i = 0; i < sk_CRYPTO_BUFFER_num(bufs); i++) {
        X509 *x = X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(bufs, i));
        if (x == NULL) {
            sk_X509_pop_free(chain, X509_free);
            ERR_clear_error();
            return NULL;
        }
        sk_X509_push(chain, x);
    }
    return chain;
}

/* --- certificate text --------------------------------------------------------------------- */

char *tls_peer_name_rfc2253(X509_NAME *name)
{
    BIO *bio = BIO_new(BIO_s_mem());
    X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
    const uint8_t *data = NULL;
    size_t len = 0;
    BIO_mem_contents(bio, &data, &len);
    char *s = xstrndup((const char *)data, len);
    BIO_free(bio);
    return s;
}

void tls_peer_time_string(const ASN1_TIME *t, char *out, size_t len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    ASN1_TIME_print(bio, t);
    const uint8_t *data = NULL;
    size_t n = 0;
    BIO_mem_contents(bio, &data, &n);
    snprintf(out, len, "%.*s", (int)n, (const char *)data);
    BIO_free(bio);
}

int64_t tls_peer_asn1_unix(const ASN1_TIME *t)
{
    /* This BoringSSL has no ASN1_TIME_to_posix: measure from the epoch instead. */
    int days = 0, secs = 0;
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    int ok = epoch != NULL && ASN1_TIME_diff(&days, &secs, epoch, t);
    ASN1_TIME_free(epoch);
    return ok ? (int64_t)days * 86400 + secs : 0;
}

/* --- refusals ----------------------------------------------------------------------------- */

static void peer_address(SSL *ssl, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    struct tls_peer *pe = tls_peer_of(ssl);
    bool known = pe != NULL && pe->addr.sa.sa_family != AF_UNSPEC;
    if (known)
        memcpy(&ss, &pe->addr, sizeof(pe->addr));
    if (known || getpeername(SSL_get_fd(ssl), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
            port = ntohs(in->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
            port = ntohs(in6->sin6_port);
        }
    }
    snprintf(out, len, "%s:%d", host, port);
}

static enum metrics_handshake result_metric(const char *result)
{
    static const char *const names[] = {"ok", "resumed", "no_cert", "untrusted",
                                        "expired", "revoked", "policy", "error"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (strcmp(result, names[i]) == 0)
            return (enum metrics_handshake)i;
    return METRICS_HS_ERROR;
}

void tls_peer_log_refusal(SSL *ssl, const char *result, const char *reason, X509 *leaf)
{
    struct tls_listener *tl = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_listener_index);
    if (tl != NULL)
        metrics_handshake(tl->index, result_metric(result));
    struct buf b = {0};
    char peer[80];
    peer_address(ssl, peer, sizeof(peer));
    log_begin(&b, LOG_LEVEL_WARN, "handshake_refused");
    log_str(&b, "listener", tl ? tl->lc->name : NULL);
    log_str(&b, "result", result);
    log_str(&b, "reason", reason);
    log_str(&b, "peer", peer);
    log_str(&b, "sni", SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    char *subject = leaf ? tls_peer_name_rfc2253(X509_get_subject_name(leaf)) : NULL;
    char *issuer = leaf ? tls_peer_name_rfc2253(X509_get_issuer_name(leaf)) : NULL;
    log_str(&b, "subject", subject);
    log_str(&b, "issuer", issuer);
    log_end(&b);
    free(subject);
    free(issuer);
}
