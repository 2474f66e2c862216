/* exchange_state.h: the state of one exchange, a request and its response: the two parsers,
 * the head scanners, the body framings and what was decided about them. Its own struct, apart
 * from the client connection that carries it (net/conn.h embeds one: HTTP/1 has one exchange
 * at a time; HTTP/2 will have many per connection). exchange/http.c fills it; the socket and
 * upstream layers read the few fields their timeouts and reuse decisions need. */
#ifndef CERTGATE_EXCHANGE_STATE_H
#define CERTGATE_EXCHANGE_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include <llhttp.h>

#include "core/buf.h"
#include "http/body.h"
#include "http/head.h"

struct exchange {
    llhttp_t req_parser;
    llhttp_t resp_parser;
    struct head_scan req_scan;  /* the request head scanned so far */
    struct head_scan resp_scan; /* the response head scanned so far */
    struct body req_body;
    struct body resp_body;
    struct buf req_log; /* the request's access-log fields as JSON: method .. request_id */
    struct buf replay;  /* a bodiless request sent on a reused upstream, until its answer */
    uint64_t req_start; /* base_now_us() at the request head, 0 before */
    int status;         /* of the response (or of certgate's answer) */
    int head_error;     /* the status the request head callback refused the head with */
    bool head_started;  /* a byte of the next request has arrived */
    bool head_ok;       /* the request head callback accepted the head */
    bool req_idempotent; /* RFC 9110 9.2.2: may be sent again on a fresh upstream */
    bool req_done;
    bool req_chunked;
    bool req_http10;
    bool req_head_method; /* HEAD: the response has no body */
    bool req_upgrade;
    bool req_keep_alive;
    bool resp_done;
    bool resp_head_done;
    bool resp_chunked;
    bool resp_until_close;
    bool resp_sent;    /* some of this response reached cout */
    bool close_after;  /* close the client connection after this response */
    bool replayed;     /* the request was already sent again once */
    bool up_reusable;  /* the upstream may take another request (it goes back to the pool) */
};

#endif
