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

struct h2_backend;

/* h2_server_set_backend sends every stream to |be| instead of the listener's upstream side
 * (upstream_protocol), or restores that with NULL: for the fuzz target (tests/fuzz/fuzz_h2.c),
 * which inspects what would go upstream. Call before the first connection. */
void h2_server_set_backend(const struct h2_backend *be);

void h2_server_start(struct conn *c);
void h2_server_input(struct conn *c);
bool h2_server_output(struct conn *c);
bool h2_server_want_read(struct conn *c);
void h2_server_drain(struct conn *c);
void h2_server_close(struct conn *c);

/* h2_server_trim gives the memory an idle HTTP/2 connection does not need back to the kernel
 * (its frame buffer's pages). The worker calls it for each connection every
 * H2_TRIM_INTERVAL_MS: a connection idle that long is trimmed, a busy one is left alone. */
#define H2_TRIM_INTERVAL_MS 2000
void h2_server_trim(struct conn *c);

#endif
