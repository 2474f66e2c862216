/* h2_up1_internal.h: what the two files of the HTTP/1.1 upstream side of an HTTP/2 stream share
 * (h2_up1.c: the exchange on its upstream socket; h2_up1_head.c: the translation of heads
 * between HTTP/2 and HTTP/1.1). Only they include it. */
#ifndef CERTGATE_H2_UP1_INTERNAL_H
#define CERTGATE_H2_UP1_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <llhttp.h>
#include <uv.h>

#include "core/buf.h"
#include "h2/h2_stream.h"
#include "http/body.h"
#include "http/head.h"

/* One stream's exchange with its HTTP/1.1 upstream (s->be_data). */
struct up1 {
    struct h2_stream *s;
    struct worker *w;
    size_t index;      /* the listener's */
    struct upconn *up; /* NULL once closed or pooled */
    uv_timer_t timer;  /* connect, response and inactivity timeouts; its close frees us */
    uint64_t timer_base;

    /* The request. */
    struct buf out;     /* head and chunk framing not sent yet */
    uint64_t data_left; /* body bytes to send straight from s->req_body (the Content-Length
                           body, or the current chunk) */
    bool req_chunked;    /* sent with Transfer-Encoding: chunked */
    bool req_terminated; /* the last chunk is queued */
    bool req_sent;       /* all of it went out */
    bool req_head_method;
    bool req_idempotent;
    bool took_body; /* body bytes went out (the request cannot be sent again) */

    /* The response. */
    struct buf in;  /* from the upstream, not parsed yet */
    struct buf dec; /* a chunked body's data, decoded */
    struct head_scan scan;
    llhttp_t parser;
    struct body body;
    bool head_done;       /* the final head went to the client side */
    bool resp_bodiless;   /* HEAD, 204, 304 */
    bool resp_keep_alive; /* the upstream may take another request after it */
    bool got_bytes;       /* any byte of answer came */

    /* The connection. */
    bool connecting;
    bool write_blocked;
    bool up_eof;
    bool reused;   /* from the pool */
    bool replayed; /* sent again on a new connection once */
    bool changed;  /* this upstream event changed the stream: touch it */
    bool counted;  /* holds one of srv->num_h2_upstreams */
};

/* up1_request_head queues the request head of x->s as HTTP/1.1 in x->out and sets the
 * request's framing fields. Returns 0, or -EINVAL when the stream has no :path. */
int up1_request_head(struct up1 *x);

/* up1_response_head looks for a complete response head at the start of x->in, consumes it and,
 * when it is a final one, hands it to the client side (x->head_done) and sets x->body. Returns
 * 1 when a head was consumed (informational ones are dropped), 0 when more bytes are needed,
 * -1 when it is malformed or oversized (502). */
int up1_response_head(struct up1 *x);

#endif
