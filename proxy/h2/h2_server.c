/* h2_server.c: HTTP/2 with a client (ALPN h2). An nghttp2 server session reads c->cin and
 * queues frames that h2_server_output copies to c->cout; nghttp2 checks the framing and the
 * HTTP messaging rules of RFC 9113 8 (pseudo-headers, connection-specific headers, te,
 * content-length against DATA). Each stream is one exchange, under the rules of the HTTP/1
 * path: the 421 rule on :authority, a client that still verifies and is still allowed, the
 * request headers sanitised by reqhead_classify, certgate's client-certificate and
 * X-Forwarded-* headers, one access-log line. The upstream side of a stream is h2_up1.c or
 * h2_upc.c (h2_stream.h). The abuse limits (rapid reset, CONTINUATION and control-frame
 * floods, header lists) are counted here. */
#include "h2/h2_server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/base.h"
#include "core/log.h"
#include "core/metrics.h"
#include "exchange/http.h"
#include "h2/h2_request.h"
#include "h2/h2_stream_internal.h"
#include "http/message.h"
#include "http/reqhead.h"
#include "http/xfcc.h"
#include "net/conn.h"
#include "net/worker.h"
#include "tls/tls.h"

/* Abuse limits. A client may reset streams it opened (browsers and gRPC cancel calls). A reset
 * is premature when it comes before the response ended and within H2_RESET_LIFETIME_MS of the
 * stream's opening (Envoy's premature reset and min_stream_lifetime; CVE-2023-44487): a call
 * cancelled after running a while (a gRPC watch, a deadline of seconds) never counts. The
 * connection is closed once more than H2_RESET_MIN resets were premature and they are more
 * than half of all its streams. Resets within H2_RESET_RAPID_MS of the opening (what a rapid
 * reset attack sends: HEADERS and RST_STREAM together) also empty a bucket of H2_RESET_BURST
 * refilled at H2_RESET_RATE per second, whatever the ratio: cheap complete streams mixed in do
 * not buy a client more of them, while a client cancelling calls at a deadline (100 ms or
 * more) is never closed for it. A stream certgate resets for the client's fault (malformed:
 * more DATA than its content-length, a bad header; CVE-2025-8671, MadeYouReset) counts as a
 * rapid reset. Control frames that ask work of us and carry no request (PING, SETTINGS,
 * PRIORITY, empty DATA, CONTINUATION beyond a few) draw on a bucket of H2_FLOOD_BURST refilled
 * at H2_FLOOD_RATE per second. */
#define H2_RESET_LIFETIME_MS 1000
#define H2_RESET_RAPID_MS 100
#define H2_RESET_MIN 100
#define H2_RESET_BURST 200
#define H2_RESET_RATE 20
#define H2_FLOOD_BURST 1000
#define H2_FLOOD_RATE 100
#define H2_MAX_CONTINUATIONS 16

/* Body bytes of streams parked before their upstream (h2_stream_park: waiting for an h2c
 * slot) give their connection window back at once, up to this much per connection: parked
 * uploads can never close the window that running streams need, and beyond it a parked
 * stream is refused (RST_STREAM REFUSED_STREAM: the upstream never saw it, the client may
 * retry). */
#define H2_PARKED_MAX (256 * 1024)

static const struct h2_backend *backend_override; /* h2_server_set_backend's */

void h2_server_set_backend(const struct h2_backend *be)
{
    backend_override = be;
}

/* --- streams --------------------------------------------------------------------------- */

/* The connection's timeout starts again from now (conn.c's state_timeout for CONN_H2 says
 * which one applies). */
static void restart_timer(struct conn *c)
{
    c->timer_base = conn_now_ms(c);
    conn_arm_timer(c);
}

/* A header block began on |id|: it must end within request_head_timeout. */
static void head_begin(struct h2_conn *hc, int32_t id)
{
    hc->head_stream = id;
    hc->c->h2_head_open = true;
    restart_timer(hc->c);
}

/* The header block ended (complete, refused, or followed by another frame, which HTTP/2 does
 * not allow in the middle of one). */
static void head_end(struct h2_conn *hc)
{
    if (!hc->c->h2_head_open)
        return;
    hc->head_stream = 0;
    hc->c->h2_head_open = false;
    restart_timer(hc->c);
}

/* --- abuse accounting -------------------------------------------------------------------- */

/* Takes one token from |b|, refilled at |rate| per second up to |burst|; false when it is
 * empty. */
static bool bucket_take(struct h2_conn *hc, struct bucket *b, double burst, double rate)
{
    uint64_t now = conn_now_ms(hc->c);
    b->tokens += (double)(now - b->ms) * rate / 1000.0;
    b->ms = now;
    if (b->tokens > burst)
        b->tokens = burst;
    b->tokens -= 1;
    return b->tokens >= 0;
}

/* Takes one token for a frame that carries no request; false when the bucket is empty. */
static bool flood_take(struct h2_conn *hc)
{
    return bucket_take(hc, &hc->flood, H2_FLOOD_BURST, H2_FLOOD_RATE);
}

/* Counts a premature reset, |rapid| when it came at once; false when the connection is to be
 * closed. */
static bool premature_reset(struct h2_conn *hc, bool rapid)
{
    hc->premature_resets++;
    if (hc->premature_resets > H2_RESET_MIN && hc->premature_resets * 2 > hc->opened)
        return false;
    return !rapid || bucket_take(hc, &hc->resets, H2_RESET_BURST, H2_RESET_RATE);
}

/* Counts the client's reset of |s|; false when the connection is to be closed. */
static bool reset_allowed(struct h2_conn *hc, const struct h2_stream *s)
{
    uint64_t age_us = base_now_us() - s->req_start;
    if ((s->resp_end && s->submitted) || age_us >= (uint64_t)H2_RESET_LIFETIME_MS * 1000)
        return true;
    return premature_reset(hc, age_us < (uint64_t)H2_RESET_RAPID_MS * 1000);
}

/* Ends the session: GOAWAY with |code|, the streams in flight are dropped. */
static int abuse(struct h2_conn *hc, const char *what)
{
    if (hc->goaway_code == NGHTTP2_NO_ERROR) {
        hc->goaway_code = NGHTTP2_ENHANCE_YOUR_CALM;
        char peer[CONN_ADDR_TEXT_MAX];
        conn_client_addr_text(hc->c, peer, sizeof(peer), true);
        log_msg(LOG_LEVEL_WARN, "h2_abuse", "listener %s: client %s: %s; closing the connection",
                hc->c->lc->name, peer, what);
    }
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* The client's request failed after its head may have gone upstream (trailers refused, a
 * content-length that disagrees with the DATA): the upstream side drops it before it ends (an
 * h2c upstream gets RST_STREAM, an HTTP/1.1 upstream connection is closed, never pooled), so
 * that the application never sees a request whose client stream certgate reset. |status| is
 * what the access log says when no response head went to the client yet. */
static void request_refused_late(struct h2_stream *s, int status)
{
    h2_stream_detach(s);
    h2_stream_drop_req_body(s);
    if (!s->resp_head && !s->own_answer) {
        s->status = status;
        s->own_answer = true;
    }
}

/* The request head of |s| is complete: check it, then forward it or answer. */
static void request_ready(struct h2_stream *s)
{
    s->c->num_requests++; /* from now on the connection's timeout is idle_timeout */
    conn_arm_timer(s->c); /* which may be shorter than request_head_timeout */
    int status = h2_request_build(s);
    h2_hdrs_free(&s->raw); /* the pseudo-header pointers went with it */
    s->p_method = s->p_scheme = s->p_authority = s->p_path = NULL;
    if (status != 0) {
        h2_stream_answer(s, status);
        return;
    }
    s->be = backend_override != NULL                           ? backend_override
            : s->c->lc->upstream_protocol == UPSTREAM_H2C ? &h2_upc_backend
                                                          : &h2_up1_backend;
    if (s->be->start(s) != 0) {
        metrics_upstream_error(s->c->index, METRICS_UP_CONNECT);
        h2_stream_answer(s, 503);
        return;
    }
    s->started = true;
}

/* --- nghttp2 callbacks ------------------------------------------------------------------- */

static struct h2_stream *stream_of(struct h2_conn *hc, int32_t id)
{
    return nghttp2_session_get_stream_user_data(hc->session, id);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct h2_conn *hc = user;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    head_begin(hc, frame->hd.stream_id);
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        if (hc->goaway_sent)
            return 0;
        struct h2_stream *s = h2_stream_new(hc, frame->hd.stream_id);
        nghttp2_session_set_stream_user_data(session, s->id, s);
        return 0;
    }
    struct h2_stream *s = stream_of(hc, frame->hd.stream_id);
    if (s != NULL) {
        s->in_trailers = true;
        s->header_bytes = 0; /* SETTINGS_MAX_HEADER_LIST_SIZE is per header block */
    }
    return 0;
}

/* Remembers a pseudo-header: a pointer into s->raw's arena, fixed up once complete. */
static void set_pseudo(struct h2_stream *s, const uint8_t *name, size_t nl, const uint8_t *value,
                       size_t vl)
{
    static const char *const names[] = {":method", ":scheme", ":authority", ":path"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        if (nl == strlen(names[i]) && memcmp(name, names[i], nl) == 0) {
            s->pseudo_idx[i] = (int)s->raw.num + 1;
            h2_hdrs_add(&s->raw, (const char *)name, nl, (const char *)value, vl);
            return;
        }
    }
}

/* A request trailer goes upstream (an h2c hop carries them) under the rules of the head's
 * fields: never a client copy of the client-certificate family, a strip_headers name, an
 * X-Forwarded-* or underscore spelling (SECURITY 8), nor a field that only means something
 * in a head (host, content-length, x-request-id) or a connection-specific one. */
static bool trailer_forwarded(struct conn *c, const char *n, size_t nl)
{
    return reqhead_classify(c->lc, n, nl) == REQHEAD_FORWARD && !h2_connection_specific(n, nl) &&
           !http_name_is(n, nl, "host") && !http_name_is(n, nl, "content-length") &&
           !http_name_is(n, nl, "x-request-id");
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *user)
{
    struct h2_conn *hc = user;
    struct h2_stream *s = stream_of(hc, frame->hd.stream_id);
    if (s == NULL || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    /* RFC 7541 4.1's size: what the header list costs us, whatever HPACK made it from. */
    s->header_bytes += nl + vl + 32;
    const struct config_limits *lim = &s->c->worker->srv->cfg->limits;
    if (s->header_bytes > lim->max_request_head || s->raw.num >= lim->max_headers + 8) {
        if (s->in_trailers) {
            request_refused_late(s, 431);
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_PROTOCOL_ERROR);
            return 0;
        }
        if (s->refuse == 0)
            s->refuse = 431;
        h2_hdrs_free(&s->raw);
        memset(s->pseudo_idx, 0, sizeof(s->pseudo_idx));
        return 0;
    }
    if (s->refuse != 0)
        return 0;
    if (s->in_trailers) {
        if (trailer_forwarded(s->c, (const char *)name, nl))
            h2_hdrs_add(&s->req_trailers, (const char *)name, nl, (const char *)value, vl);
        return 0;
    }
    if (nl > 0 && name[0] == ':')
        set_pseudo(s, name, nl, value, vl);
    else
        h2_hdrs_add(&s->raw, (const char *)name, nl, (const char *)value, vl);
    return 0;
}

/* Points the p_* fields at the pseudo-headers in s->raw (its arena no longer moves). */
static void fix_pseudo(struct h2_stream *s)
{
    const char **p[] = {&s->p_method, &s->p_scheme, &s->p_authority, &s->p_path};
    size_t *l[] = {&s->p_method_len, &s->p_scheme_len, &s->p_authority_len, &s->p_path_len};
    for (size_t i = 0; i < ARRAY_SIZE(p); i++) {
        *p[i] = NULL;
        *l[i] = 0;
        if (s->pseudo_idx[i] == 0)
            continue;
        const char *n;
        size_t nl;
        h2_hdrs_at(&s->raw, (size_t)s->pseudo_idx[i] - 1, &n, &nl, p[i], l[i]);
    }
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct h2_conn *hc = user;
    struct h2_stream *s = frame->hd.stream_id ? stream_of(hc, frame->hd.stream_id) : NULL;
    bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    h2_closed_frame_recv(&hc->closed, session, frame);
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        head_end(hc);
        if (s == NULL)
            return 0;
        if (end)
            s->req_end = true;
        if (!s->in_trailers) {
            fix_pseudo(s);
            request_ready(s);
        } else if (s->started && !s->be_done) {
            s->be->req_more(s);
        }
        return 0;
    case NGHTTP2_DATA:
        if (frame->hd.length == 0 && !end && !flood_take(hc))
            return abuse(hc, "a flood of empty DATA frames");
        if (s == NULL)
            return 0;
        if (end)
            s->req_end = true;
        if (s->started && !s->be_done)
            s->be->req_more(s);
        return 0;
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0 && !flood_take(hc))
            return abuse(hc, frame->hd.type == NGHTTP2_PING ? "a PING flood" : "a SETTINGS flood");
        return 0;
    case NGHTTP2_PRIORITY:
        if (!flood_take(hc))
            return abuse(hc, "a PRIORITY flood");
        return 0;
    case NGHTTP2_RST_STREAM:
        if (s != NULL && !reset_allowed(hc, s))
            return abuse(hc, "streams reset faster than they are answered (rapid reset)");
        return 0;
    default:
        return 0;
    }
}

static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user)
{
    struct h2_conn *hc = user;
    if (hd->type != NGHTTP2_CONTINUATION) {
        /* Any other frame starts a header block or ends one: also the blocks nghttp2 reads
         * only for HPACK's sake (a refused stream's), for which on_begin_headers never runs. */
        head_end(hc);
        hc->continuations = 0;
        return 0;
    }
    if (++hc->continuations > H2_MAX_CONTINUATIONS)
        return abuse(hc, "a header block in too many CONTINUATION frames");
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct h2_conn *hc = user;
    h2_closed_frame_sent(&hc->closed, frame);
    if (frame->hd.type != NGHTTP2_RST_STREAM || hc->goaway_sent)
        return 0;
    switch (frame->rst_stream.error_code) {
    case NGHTTP2_PROTOCOL_ERROR:
    case NGHTTP2_FLOW_CONTROL_ERROR:
    case NGHTTP2_STREAM_CLOSED:
    case NGHTTP2_FRAME_SIZE_ERROR:
        /* The client made us reset it (MadeYouReset): as its own rapid reset. */
        if (!premature_reset(hc, true)) {
            abuse(hc, "streams certgate must reset for the client's errors (MadeYouReset)");
            nghttp2_session_terminate_session(session, hc->goaway_code);
            hc->goaway_sent = true;
        }
        return 0;
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    struct h2_conn *hc = user;
    struct h2_stream *s = stream_of(hc, id);
    if (s == NULL || !s->started || s->be_done) {
        /* Refused, answered or done: the body is read and dropped. */
        nghttp2_session_consume(session, id, len);
        return 0;
    }
    if (s->req_parked) {
        if (hc->parked_bytes + len > H2_PARKED_MAX) {
            nghttp2_session_consume(session, id, len);
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
            request_refused_late(s, 503);
            return 0;
        }
        nghttp2_session_consume_connection(session, len);
        s->req_credit += len;
        hc->parked_bytes += len;
    }
    buf_append(&s->req_body, data, len);
    s->bytes_in += len;
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t code, void *user)
{
    struct h2_conn *hc = user;
    if (id == hc->head_stream)
        head_end(hc);
    struct h2_stream *s = stream_of(hc, id);
    if (s == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(session, id, NULL);
    h2_stream_end(hc, s);
    return 0;
}

static int on_invalid_frame(nghttp2_session *session, const nghttp2_frame *frame, int err,
                            void *user)
{
    struct h2_conn *hc = user;
    struct h2_stream *s = frame->hd.stream_id ? stream_of(hc, frame->hd.stream_id) : NULL;
    /* nghttp2 resets a stream whose request breaks RFC 9113 8 (a pseudo-header in trailers, a
     * content-length the DATA disagrees with at the trailers' END_STREAM): also upstream. */
    if (s != NULL && (err == NGHTTP2_ERR_HTTP_HEADER || err == NGHTTP2_ERR_HTTP_MESSAGING))
        request_refused_late(s, 400);
    if (!flood_take(hc))
        return abuse(hc, "a flood of invalid frames");
    return 0;
}

static int on_invalid_header(nghttp2_session *session, const nghttp2_frame *frame,
                             const uint8_t *name, size_t nl, const uint8_t *value, size_t vl,
                             uint8_t flags, void *user)
{
    /* nghttp2 resets the stream (PROTOCOL_ERROR): a malformed request is never forwarded. */
    struct h2_conn *hc = user;
    struct h2_stream *s = stream_of(hc, frame->hd.stream_id);
    if (s != NULL && s->status == 0)
        s->status = 400;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

/* --- the session -------------------------------------------------------------------------- */

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *options;
static uv_once_t callbacks_once = UV_ONCE_INIT;

static void init_callbacks(void)
{
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks, on_begin_frame);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks, on_invalid_frame);
    nghttp2_session_callbacks_set_on_invalid_header_callback(callbacks, on_invalid_header);
    nghttp2_option_new(&options);
    /* Window updates follow what the upstream side took: flow control is backpressure. */
    nghttp2_option_set_no_auto_window_update(options, 1);
    /* Queued ACKs to a client that does not read are bounded (nghttp2 ends the session). */
    nghttp2_option_set_max_outbound_ack(options, 1000);
    nghttp2_option_set_max_settings(options, 32);
    /* nghttp2's own CONTINUATION limit (8 by default, a PROTOCOL_ERROR with no h2_abuse event)
     * would come before ours: ours decides, with ENHANCE_YOUR_CALM and the event; nghttp2's
     * still bounds the blocks it only reads for HPACK's sake, which never reach us. */
    nghttp2_option_set_max_continuations(options, H2_MAX_CONTINUATIONS + 1);
    /* Closed streams are not kept for the priority tree (RFC 9113 deprecates it); h2_closed.c
     * answers frames on them. */
    nghttp2_option_set_no_closed_streams(options, 1);
}

void h2_server_start(struct conn *c)
{
    uv_once(&callbacks_once, init_callbacks);
    struct h2_conn *hc = xcalloc(1, sizeof(*hc));
    hc->c = c;
    hc->flood = (struct bucket){H2_FLOOD_BURST, conn_now_ms(c)};
    hc->resets = (struct bucket){H2_RESET_BURST, conn_now_ms(c)};
    hc->goaway_code = NGHTTP2_NO_ERROR;
    c->h2 = hc;
    h2_mem_init(&hc->mem);
    h2_closed_init(&hc->closed);
    if (nghttp2_session_server_new3(&hc->session, callbacks, hc, options, &hc->mem.mem) != 0) {
        c->h2 = NULL;
        free(hc);
        log_msg(LOG_LEVEL_WARN, "h2_failed", "listener %s: out of memory for an HTTP/2 session",
                c->lc->name);
        conn_close(c);
        return;
    }
    const struct config_limits *lim = &c->worker->srv->cfg->limits;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_CONCURRENT_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_HWM},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)lim->max_request_head},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(hc->session, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv));
    nghttp2_session_set_local_window_size(hc->session, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
}

void h2_server_input(struct conn *c)
{
    struct h2_conn *hc = c->h2;
    if (buf_used(&c->cin) == 0)
        return;
    uint32_t closed_code = NGHTTP2_NO_ERROR;
    ssize_t n = h2_closed_mem_recv(&hc->closed, hc->session, (const uint8_t *)buf_data(&c->cin),
                                   buf_used(&c->cin), &closed_code);
    if (n < 0) {
        /* A limit of ours, a flood nghttp2 caught, or a protocol error: GOAWAY and close. */
        uint32_t code = hc->goaway_code != NGHTTP2_NO_ERROR ? hc->goaway_code
                        : closed_code != NGHTTP2_NO_ERROR   ? closed_code
                        : n == NGHTTP2_ERR_FLOODED           ? NGHTTP2_ENHANCE_YOUR_CALM
                                                             : NGHTTP2_PROTOCOL_ERROR;
        buf_free(&c->cin);
        nghttp2_session_terminate_session(hc->session, code);
        hc->goaway_sent = true;
        return;
    }
    buf_consume(&c->cin, (size_t)n);
    if (buf_used(&c->cin) == 0)
        buf_free(&c->cin);
}

bool h2_server_output(struct conn *c)
{
    struct h2_conn *hc = c->h2;
    while (hc->pending != NULL) {
        struct h2_stream *s = hc->pending;
        hc->pending = s->pending_next;
        s->pending_next = NULL;
        s->is_pending = false;
        if (!s->submitted)
            h2_stream_submit_head(s);
    }
    /* A draining connection says goodbye once a stream came: during the shutdown delay
     * (CONTRACT 2) a new connection serves its first request, as Connection: close does for
     * HTTP/1, where a GOAWAY naming stream 0 before it would refuse every request until the
     * listener stops. Once the worker drains, at once. */
    if (c->draining && !hc->goaway_sent && (hc->opened > 0 || hc->drain_now)) {
        hc->goaway_sent = true;
        nghttp2_submit_goaway(hc->session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(hc->session),
                              NGHTTP2_NO_ERROR, NULL, 0);
    }
    while (buf_used(&c->cout) < CONN_HWM) {
        const uint8_t *data = NULL;
        ssize_t n = nghttp2_session_mem_send(hc->session, &data);
        if (n < 0)
            return false;
        if (n == 0)
            break;
        buf_append(&c->cout, data, (size_t)n);
    }
    return nghttp2_session_want_read(hc->session) || nghttp2_session_want_write(hc->session) ||
           hc->pending != NULL;
}

bool h2_server_want_read(struct conn *c)
{
    /* Frames we must answer wait while the client does not read what we already owe it. */
    return buf_used(&c->cout) < CONN_HWM && nghttp2_session_want_read(c->h2->session);
}

void h2_server_drain(struct conn *c)
{
    c->h2->drain_now = true; /* h2_server_output sends the GOAWAY */
}

void h2_server_close(struct conn *c)
{
    struct h2_conn *hc = c->h2;
    struct worker *w = c->worker;
    if (c->h2_touched) {
        for (struct conn **pp = &w->h2_touched; *pp != NULL; pp = &(*pp)->h2_touched_next) {
            if (*pp == c) {
                *pp = c->h2_touched_next;
                break;
            }
        }
        c->h2_touched = false;
    }
    while (hc->streams != NULL) {
        h2_stream_end(hc, hc->streams);
    }
    nghttp2_session_del(hc->session);
    free(hc);
    c->h2 = NULL;
}

void h2_server_trim(struct conn *c)
{
    struct h2_conn *hc = c->h2;
    if (hc != NULL && hc->streams == NULL && buf_used(&c->cout) == 0 &&
        !nghttp2_session_want_write(hc->session))
        h2_mem_trim(&hc->mem);
}
