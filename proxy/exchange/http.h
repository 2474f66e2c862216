/* http.h: HTTP/1.1 on a connection with llhttp in strict mode: request heads scanned, checked
 * and re-serialised; bodies re-framed; response heads parsed and re-serialised; upgrades only
 * after a real 101. */
#ifndef CERTGATE_HTTP_H
#define CERTGATE_HTTP_H

#include <stdbool.h>
#include <stddef.h>

struct conn;

/* http_scratch_new / http_scratch_free manage a worker's parse scratch. */
void *http_scratch_new(unsigned max_headers);
void http_scratch_free(void *scratch);

/* http_conn_init prepares a connection's parsers. */
void http_conn_init(struct conn *c);

/* http_request_process parses what c->cin holds: heads go to c->uout re-serialised, bodies
 * re-framed. A head is consumed from c->cin before its exchange starts (upstream_connect).
 * It may queue an error (conn_error); it reads and writes no socket: conn_event_end does. */
void http_request_process(struct conn *c);

/* http_response_process parses what c->uin holds into c->cout. It may call conn_error,
 * conn_tunnel and conn_http_cycle_done (which parses a pipelined request); it reads and writes
 * no socket. */
void http_response_process(struct conn *c);

/* http_upstream_eof tells the response parser that the upstream closed. */
void http_upstream_eof(struct conn *c);

/* What this hop does with client-certificate headers (CONTRACT section 5), by the listener's
 * forward_client_cert and whether the client sent a certificate: keep the incoming copies of
 * the listener's own header, add certgate's lines (c->cc_headers), or append certgate's XFCC
 * element (c->cc_element) to the incoming copies joined into one header. http_cc_plan
 * computes c->cc_headers and c->cc_element once per connection. */
struct http_cc_plan {
    bool keep_incoming;
    bool add_ours;
    bool append;
};
void http_cc_plan(struct conn *c, struct http_cc_plan *plan);

/* http_cc_own tells whether a client-certificate header of |kind| (xfcc_classify's
 * enum xfcc_name) is the listener's own format, the one kept in the forward modes. */
struct listener_config;
bool http_cc_own(const struct listener_config *lc, int kind);

/* http_client_address writes the address of the client that |c| serves (no port) to |out|
 * (INET6_ADDRSTRLEN bytes), as X-Forwarded-For names it: the PROXY protocol source when the
 * connection began with one, else the TCP peer. Returns false when it is unknown. */
bool http_client_address(const struct conn *c, char *out, size_t len);

#endif
