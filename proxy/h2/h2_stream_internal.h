/* h2_stream_internal.h: what the client side of HTTP/2 shares between its two files:
 * h2_server.c (the nghttp2 server session, its callbacks, the abuse limits) and h2_stream.c (a
 * stream's life and its response toward the client: certgate's own answers, the upstream
 * side's calls of h2_stream.h, the response body's data provider). Only they include it. */
#ifndef CERTGATE_H2_STREAM_INTERNAL_H
#define CERTGATE_H2_STREAM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#include "h2/h2_closed.h"
#include "h2/h2_mem.h"
#include "h2/h2_stream.h"

/* A token bucket: |tokens| as of |ms| (conn_now_ms). */
struct bucket {
    double tokens;
    uint64_t ms;
};

struct h2_conn {
    nghttp2_session *session;
    int32_t head_stream; /* the stream whose header block is being read, or 0 */
    struct h2_mem mem;   /* nghttp2's, given back while idle */
    struct h2_closed closed; /* frames on closed streams (h2_closed.h) */
    struct conn *c;
    struct h2_stream *streams;
    struct h2_stream *pending; /* streams with a response head or answer to submit */
    uint32_t opened, premature_resets;
    struct bucket flood, resets;
    unsigned continuations; /* CONTINUATION frames of the header block being read */
    size_t parked_bytes;    /* body bytes buffered with their connection window given back */
    uint32_t goaway_code;   /* a limit that closes the connection, else NGHTTP2_NO_ERROR */
    bool goaway_sent;
    bool drain_now; /* the worker drains: GOAWAY even before the first stream */
};

/* h2_stream_new opens stream |id| of |hc| (the client's HEADERS began it). */
struct h2_stream *h2_stream_new(struct h2_conn *hc, int32_t id);

/* h2_stream_detach: |s| leaves the upstream side (be->abort when it is still there); the
 * backend is not called for it again. */
void h2_stream_detach(struct h2_stream *s);

/* h2_stream_end: |s| is over, closed by nghttp2 or with its connection (also when nghttp2
 * refused it and its RST_STREAM never went out). It leaves the upstream side, gets its one
 * access-log line (and with it its count in the metrics) and is freed. */
void h2_stream_end(struct h2_conn *hc, struct h2_stream *s);

/* h2_stream_submit_head hands |s|'s response head (its own answer or the upstream's) to
 * nghttp2 with a data provider, or with END_STREAM when nothing can follow. */
void h2_stream_submit_head(struct h2_stream *s);

/* h2_stream_answer: certgate answers |status| itself (a short text body, as the HTTP/1
 * path's); the head is submitted at the next h2_server_output. */
void h2_stream_answer(struct h2_stream *s, int status);

/* h2_stream_drop_req_body frees the request body nobody will forward and gives the client its
 * window back (a closed stream's bytes count against the connection's window too: nghttp2
 * does not return them by itself). */
void h2_stream_drop_req_body(struct h2_stream *s);

#endif
