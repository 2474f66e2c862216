/* h2_server.h: HTTP/2 on a client connection whose ALPN chose h2: an nghttp2 server session
 * over the connection's buffers (c->cin in, c->cout out), each stream an exchange with the
 * HTTP/1 path's rules. server/listener.c puts these in the connection's handler table
 * (struct conn_handlers, net/conn.h), which says what each does. */
#ifndef CERTGATE_H2_SERVER_H
#define CERTGATE_H2_SERVER_H

#include <stdbool.h>

struct conn;

/* What certgate announces and enforces per client connection. */
#define H2_MAX_CONCURRENT_STREAMS 100
#define H2_CONN_WINDOW (1024 * 1024) /* the connection's receive window (streams: 64 KiB) */

void h2_server_start(struct conn *c);
void h2_server_input(struct conn *c);
bool h2_server_output(struct conn *c);
bool h2_server_want_read(struct conn *c);
void h2_server_drain(struct conn *c);
void h2_server_close(struct conn *c);

#endif
