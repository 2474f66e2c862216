/* tls_internal.h: what the files of the TLS module (tls.c, tls_creds.c, tls_tenant.c,
 * tls_status.c) share beyond tls_verify.h. Only they include it. */
#ifndef CERTGATE_TLS_INTERNAL_H
#define CERTGATE_TLS_INTERNAL_H

#include "tls/tls.h"
#include "tls/tls_verify.h"

/* tls_creds.c: tls_load_pem_credentials and tls_load_pkcs12_credentials load the process's
 * certificate chain and key named by |cfg| into |gen|; 0, or a negative errno with a message
 * in |err|. tls_ssl_error_string writes the oldest queued BoringSSL error. */
int tls_load_pem_credentials(struct tls_gen *gen, const struct config *cfg, char *err,
                             size_t err_len);
int tls_load_pkcs12_credentials(struct tls_gen *gen, const struct config *cfg, char *err,
                                size_t err_len);
void tls_ssl_error_string(char *out, size_t len);

/* tls_tenant.c: tls_select_tenant is the select-certificate callback of every context: it
 * finds the tenant the SNI names and records it as the connection's tls_peer. */
enum ssl_select_cert_result_t tls_select_tenant(const SSL_CLIENT_HELLO *hello);

#endif
