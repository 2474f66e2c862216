/* tls_rbio.h: a read BIO for a client socket that takes a whole record (or more) per recv(2),
 * where BoringSSL's socket BIO makes two reads of every record (tls_rbio.c). */
#ifndef CERTGATE_TLS_RBIO_H
#define CERTGATE_TLS_RBIO_H

#include <openssl/base.h>

/* tls_rbio_new returns a BIO reading socket |fd| (not closed with it) for SSL_set0_rbio. */
BIO *tls_rbio_new(int fd);

#endif
