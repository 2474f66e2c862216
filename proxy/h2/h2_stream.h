/* h2_stream.h: one HTTP/2 stream of a client connection, that is one exchange, and the
 * interface between the client side (h2/h2_server.c, an nghttp2 server session on the TLS
 * connection) and the two upstream sides that can carry a stream (listener key
 * upstream_protocol): an HTTP/1.1 connection of its own, from the worker's pool (h2/h2_up1.c),
 * or a stream of the worker's one multiplexed h2c connection (h2/h2_upc.c).
 *
 * Event discipline, as in the HTTP/1 data path: the functions below only record (bytes in a
 * buffer, a flag). The client connection's socket is written by conn_event_end. An upstream
 * side that changed a stream from its own socket or timer event calls h2_stream_touch for it;
 * h2_flush_touched runs conn_event_end for each client connection touched, once. A timer event
 * calls it at its end; after socket events the worker's check handle calls it once per loop
 * round (server/listener.c), so that the responses several upstreams gave one client in a
 * round leave in one write. */
#ifndef CERTGATE_H2_STREAM_H
#define CERTGATE_H2_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#include "core/buf.h"
#include "h2/h2_hdrs.h"

struct conn;
struct worker;
struct h2_conn;
struct h2_stream;

/* A stream's queues hold at most this much before the side that fills them stops reading
 * (the client's window, or the upstream socket). */
#define H2_STREAM_HWM (64 * 1024)

/* What the upstream side does for a stream. The client side calls these; none of them calls
 * back into the client side synchronously except through the h2_stream_* functions, which
 * only record. */
struct h2_backend {
    /* start: the request head is complete (s->req, s->req_content_length, s->req_end): connect
     * or submit. Returns 0, or a negative errno after which the client side answers 503 and
     * never calls the backend for |s| again. */
    int (*start)(struct h2_stream *s);
    /* req_more: s->req_body grew, or s->req_end (and maybe s->req_trailers) became true. The
     * backend takes bytes from s->req_body when it can and says so with h2_stream_req_taken. */
    void (*req_more)(struct h2_stream *s);
    /* resp_room: the client side took bytes from s->resp_body and it is below H2_STREAM_HWM:
     * reading from the upstream may go on. */
    void (*resp_room)(struct h2_stream *s);
    /* abort: the client stream is gone (reset by the client, refused, connection closed).
     * The backend drops the stream (closes its upstream connection, or resets the upstream
     * stream), frees s->be_data and never calls an h2_stream_* function for |s| again. |s|
     * itself is freed by the client side right after. */
    void (*abort)(struct h2_stream *s);
};

struct h2_stream {
    struct h2_conn *hc; /* the client side's */
    struct conn *c;     /* the client connection */
    int32_t id;         /* the client's stream id */

    /* The request as it goes upstream: :method, :scheme, :authority (when known) and :path
     * first, then the regular headers, lowercase, sanitised, cookies joined, with certgate's
     * own (client-certificate header, X-Forwarded-*, X-Request-Id) added; no connection-
     * specific header. */
    struct h2_hdrs req;
    const char *method; /* into req's arena */
    size_t method_len;
    int64_t req_content_length; /* from content-length, or -1 */
    struct buf req_body;        /* body bytes the backend has not taken yet */
    bool req_end;               /* the client ended its side */
    bool req_parked;            /* h2_stream_park's */
    size_t req_credit;          /* bytes of req_body whose connection window went back */
    struct h2_hdrs req_trailers; /* the client's trailers (only an h2c upstream gets them) */

    /* The response as it goes to the client. */
    struct buf resp_body;      /* body bytes the client side has not framed yet */
    bool resp_head;            /* h2_stream_response_head was called */
    bool resp_end;             /* h2_stream_response_end was called */
    struct h2_hdrs resp_trailers;

    /* The upstream side's. */
    const struct h2_backend *be;
    void *be_data;

    /* The client side's. */
    struct h2_stream *next, *prev; /* the connection's streams */
    struct h2_stream *pending_next;
    struct h2_hdrs resp;           /* the response head as sent */
    struct buf req_log;            /* access-log fields: method .. request_id */
    uint64_t req_start;            /* base_now_us() at the request head */
    uint64_t bytes_in, bytes_out;  /* body bytes */
    size_t header_bytes;           /* of the header block so far: head, then trailers */
    int status;                    /* of the response, or of certgate's answer */
    int refuse;                    /* certgate answers this status instead of forwarding */
    struct h2_hdrs raw;            /* the request head as the client sent it */
    int pseudo_idx[4];             /* 1 + index in raw of :method :scheme :authority :path */
    const char *p_method, *p_scheme, *p_authority, *p_path; /* into raw, once complete */
    size_t p_method_len, p_scheme_len, p_authority_len, p_path_len;
    bool started;                  /* be->start was called and returned 0 */
    bool be_done;                  /* the upstream side is done (ended, failed or aborted) */
    bool is_pending;               /* on the connection's list of heads to submit */
    bool own_answer;               /* certgate answers (s->status), not the upstream */
    bool upstream_failed;
    bool submitted;                /* the response head went to nghttp2 */
    bool deferred;                 /* the data provider said NGHTTP2_ERR_DEFERRED */
    bool logged;
    bool in_trailers;              /* the HEADERS being read are the request's trailers */
    bool saw_te, saw_host;
    bool has_authority;
};

/* The upstream side's calls back; they only record. */

/* h2_stream_response_head: the upstream's final response head: |status| and the regular
 * headers (any case; connection-specific ones are dropped here). Informational (1xx)
 * responses are the backend's to drop. */
void h2_stream_response_head(struct h2_stream *s, int status, const nghttp2_nv *nv, size_t num);

/* h2_stream_response_data appends body bytes to s->resp_body. The backend stops reading from
 * the upstream while h2_stream_resp_full(s) and goes on at resp_room. */
void h2_stream_response_data(struct h2_stream *s, const void *data, size_t len);
bool h2_stream_resp_full(const struct h2_stream *s);

/* h2_stream_response_end: the response is complete; |trailers| (may be NULL, |num| 0) go to
 * the client after the body. The backend is done with |s|: it has freed s->be_data and must
 * not call back again; abort is not called for it. */
void h2_stream_response_end(struct h2_stream *s, const nghttp2_nv *trailers, size_t num);

/* h2_stream_failed: the upstream failed (|status| 502, 503 or 504): the client gets that
 * status when no response head went out yet, else a RST_STREAM. The backend is done with |s|
 * as after h2_stream_response_end. */
void h2_stream_failed(struct h2_stream *s, int status);

/* h2_stream_req_taken: the backend took |len| bytes from the front of s->req_body (it
 * consumes them itself): the client may send that much more (WINDOW_UPDATE). */
void h2_stream_req_taken(struct h2_stream *s, size_t len);

/* h2_stream_park: |s| waits before its upstream (for an h2c slot) while |parked|. Body bytes
 * that come meanwhile give the client's connection window back at once, up to a bound per
 * connection beyond which the stream is refused (RST_STREAM REFUSED_STREAM, abort called):
 * waiting uploads never stall the client's running streams. Their stream windows still open
 * only at h2_stream_req_taken. */
void h2_stream_park(struct h2_stream *s, bool parked);

/* h2_stream_touch / h2_flush_touched: see the top of this file. */
void h2_stream_touch(struct h2_stream *s);
void h2_flush_touched(struct worker *w);

/* The two upstream sides. */
extern const struct h2_backend h2_up1_backend; /* h2/h2_up1.c: HTTP/1.1 per stream */
extern const struct h2_backend h2_upc_backend; /* h2/h2_upc.c: the worker's h2c connection */

/* h2_upc_close_all closes worker |w|'s h2c upstream connections (the worker is stopping; no
 * client connection is left). */
void h2_upc_close_all(struct worker *w);

#endif
