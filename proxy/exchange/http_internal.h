/* http_internal.h: what the two files of the exchange (http.c: parsing, framing and the
 * exchange's course; http_headers.c: the headers certgate adds and the access log) share: the
 * per-worker scratch of the head being parsed. Only they include it. */
#ifndef CERTGATE_HTTP_INTERNAL_H
#define CERTGATE_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <llhttp.h>

#include "http/message.h"
#include "http/reqhead.h"
#include "net/conn.h"

struct hdr {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
    enum reqhead_verdict verdict; /* requests: decided once in request_head_done */
};

/* Per worker: the headers of the one head being parsed. Offsets are relative to |base|, the
 * buffer handed to llhttp_execute: a head is always parsed in a single call. */
struct scratch {
    struct hdr *h;
    unsigned num, max;
    bool overflow;
    bool in_value;
    bool in_trailers;
    const char *base;
    uint32_t url_off, url_len;
    uint32_t reason_off, reason_len;
};


#define HNAME(s, h) ((s)->base + (h)->name_off)
#define HVALUE(s, h) ((s)->base + (h)->value_off)
/* http_note_request chooses the request's id into |id| (HTTP_REQUEST_ID_MAX + 1 bytes): the
 * client's X-Request-Id when it sent exactly one valid one, else a new one. Then it records the
 * access-log fields of the request in c->req_log, before any check can refuse it, so that a 4xx
 * line still says what was asked. */
void http_note_request(struct conn *c, llhttp_t *p, const struct scratch *s, const struct hdr *host,
                       char *id);

/* http_write_cc_headers writes this hop's client-certificate headers to c->uout per CONTRACT
 * section 5; |conn_tokens| are the request's Connection tokens (copies they name are dropped). */
void http_write_cc_headers(struct conn *c, struct scratch *s,
                           const struct http_tokens *conn_tokens);

/* http_write_forwarded_headers writes X-Forwarded-For and X-Forwarded-Proto to c->uout per the
 * listener's forwarded_headers, after the client's headers, so that a Connection header naming
 * them cannot remove ours. */
void http_write_forwarded_headers(struct conn *c, struct scratch *s,
                                  const struct http_tokens *conn_tokens);

#endif
