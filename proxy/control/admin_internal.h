/* admin_internal.h: what the two files of the admin API share (admin.c: parsing, routing and
 * the handlers; admin_listen.c: the listeners and their connections). Only they include it. */
#ifndef CERTGATE_ADMIN_INTERNAL_H
#define CERTGATE_ADMIN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/admin.h"
#include "core/buf.h"

#define ADMIN_MAX_HEAD 8192
#define ADMIN_MAX_BODY 65536
#define ADMIN_MAX_CONNS 64
#define ADMIN_TIMEOUT_MS 10000
#define ADMIN_MAX_TOKEN 4096
#define ALLOWLIST_PATH "/allowed-client-certificate-subjects"

/* A parsed request head; pointers into the head, lengths alongside. */
struct request {
    const char *method;
    size_t method_len;
    const char *path; /* without the query */
    size_t path_len;
    const char *auth; /* Authorization value, NULL when absent */
    size_t auth_len;
    const char *host; /* Host value, NULL when absent */
    size_t host_len;
    bool http10; /* HTTP/1.0: Host is optional */
    bool origin; /* an Origin header: a browser sent this on a web page's behalf */
    uint64_t content_length;
    size_t head_len;
};
/* admin_respond_text writes a complete response with |code|, a text/plain |text| body and the
 * header lines |extra| (NULL for none), and Connection: close. */
void admin_respond_text(struct buf *out, int code, const char *text, const char *extra);

/* admin_parse_head parses the request head |head| (|len| bytes, up to and including the empty
 * line) into |rq|. Returns 0, or the status to answer (400, 413, 431, 505...). */
int admin_parse_head(const char *head, size_t len, struct request *rq);

/* admin_route answers the parsed request |rq| into |out|; |public_side| limits it to the read-only
 * probes and metrics of admin.public_address. */
void admin_route(const struct request *rq, bool public_side, struct buf *out);

#endif
