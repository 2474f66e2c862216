/* conn_internal.h: what the files of the client connection share (conn.c: states, timer,
 * client I/O, close protocol; conn_tls.c: the handshake and trust checks; conn_proxy.c: the
 * client address and the PROXY protocol header; conn_log.c: the access log). Only they include
 * it. */
#ifndef CERTGATE_CONN_INTERNAL_H
#define CERTGATE_CONN_INTERNAL_H

#include "net/conn.h"

#define LINGER_MS 2000

/* conn.c: conn_start begins a connection's TLS handshake, or its relay or HTTP, once its
 * PROXY protocol header (if any) is read; conn_client_read reads what the client sent and hands
 * it on (handshake, PROXY header, HTTP, relay). */
void conn_start(struct conn *c);
void conn_client_read(struct conn *c);

/* conn_log.c: conn_access_log writes one access-log line. |response_from| is "upstream" or
 * "certgate" for an HTTP response, NULL for a relayed connection. */
void conn_access_log(struct conn *c, const char *response_from);

/* conn_tls.c: conn_handshake advances the TLS handshake; once it is done the connection
 * starts reading requests (or relaying). */
void conn_handshake(struct conn *c);

/* conn_proxy.c: conn_proxy_header_read reads the PROXY protocol header at the start of the
 * connection; conn_proxy_header_refused closes a connection whose header is refused or late,
 * saying |why| in the log. */
void conn_proxy_header_read(struct conn *c);
void conn_proxy_header_refused(struct conn *c, const char *why);

#endif
