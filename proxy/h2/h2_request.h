/* h2_request.h: the request head of an HTTP/2 stream, checked and rebuilt as it goes upstream
 * under the HTTP/1 path's rules: :scheme https, :authority (or host, never both disagreeing)
 * under the 421 rule, a client that still verifies and is allowed, no CONNECT, headers
 * classified by reqhead_classify (client-certificate family stripped, strip_headers,
 * underscores), cookies joined, then X-Request-Id, X-Forwarded-* and certgate's own
 * client-certificate header. */
#ifndef CERTGATE_H2_REQUEST_H
#define CERTGATE_H2_REQUEST_H

#include "h2/h2_stream.h"

/* h2_request_build reads s->raw and the p_* pseudo-headers, writes the access-log fields to
 * s->req_log and the request to s->req (and s->req_content_length, s->method). Returns 0, or
 * the status certgate answers instead (400, 403, 421, or s->refuse). */
int h2_request_build(struct h2_stream *s);

#endif
