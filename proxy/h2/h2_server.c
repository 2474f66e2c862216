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
#include "h2/h2_mem.h"
#include "h2/h2_request.h"
#include "h2/h2_stream.h"
#include "http/message.h"
#include "http/reqhead.h"
#include "http/xfcc.h"
#include "net/conn.h"
#include "net/worker.h"
#include "tls/tls.h"

/* Abuse limits. A client may reset streams it opened (browsers and gRPC cancel calls), but
 * once more than H2_RESET_MIN streams were reset before their response ended and they are
 * more than half of all its streams, the connection is closed (as Envoy's
 * premature_reset_limit; CVE-2023-44487). Control frames that ask work of us and carry no
 * request (PING, SETTINGS, PRIORITY, empty DATA, CONTINUATION beyond a few) draw on a
 * bucket of H2_FLOOD_BURST refilled at H2_FLOOD_RATE per second. */
#define H2_RESET_MIN 100
#define H2_FLOOD_BURST 1000
#define H2_FLOOD_RATE 100
#define H2_MAX_CONTINUATIONS 16

struct h2_conn {
    nghttp2_session *session;
    int32_t head_stream; /* the stream whose header block is being read, or 0 */
    struct h2_mem mem; /* nghttp2's, given back while idle */
    struct conn *c;
    struct h2_stream *streams;
    struct h2_stream *pending; /* streams with a response head or answer to submit */
    uint32_t opened, premature_resets;
    double flood_tokens;
    uint64_t flood_ms;
    unsigned continuations; /* CONTINUATION frames of the header block being read */
    uint32_t goaway_code;   /* a limit that closes the connection, else NGHTTP2_NO_ERROR */
    bool goaway_sent;
    bool drain_now; /* the worker drains: GOAWAY even before the first stream */
};

static const char *const protocol_name = "HTTP/2";

static const struct h2_backend *backend_override; /* h2_server_set_backend's */

void h2_server_set_backend(const struct h2_backend *be)
{
    backend_override = be;
}

/* --- streams --------------------------------------------------------------------------- */

static struct h2_stream *stream_new(struct h2_conn *hc, int32_t id)
{
    struct h2_stream *s = xcalloc(1, sizeof(*s));
    s->hc = hc;
    s->c = hc->c;
    s->id = id;
    s->req_content_length = -1;
    s->req_start = base_now_us();
    s->next = hc->streams;
    if (hc->streams != NULL)
        hc->streams->prev = s;
    hc->streams = s;
    hc->opened++;
    hc->c->h2_streams++;
    h2_mem_busy(&hc->mem);
    return s;
}

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

static void stream_log(struct h2_stream *s, const char *response_from)
{
    if (s->logged)
        return;
    s->logged = true;
    struct conn_exchange_log x = {
        .req_log = &s->req_log,
        .status = s->status,
        .req_start = s->req_start,
        .bytes_in = s->bytes_in,
        .bytes_out = s->bytes_out,
        .response_from = response_from,
        .protocol = protocol_name,
    };
    conn_access_log_exchange(s->c, &x);
}

/* Body bytes nobody will forward: the client gets its window back (a closed stream's count
 * against the connection's window too: nghttp2 does not return them by itself). */
static void drop_req_body(struct h2_stream *s)
{
    if (buf_used(&s->req_body) > 0)
        nghttp2_session_consume(s->hc->session, s->id, buf_used(&s->req_body));
    buf_free(&s->req_body);
}

static void stream_free(struct h2_conn *hc, struct h2_stream *s)
{
    drop_req_body(s);
    if (--hc->c->h2_streams == 0 && hc->c->state == CONN_H2)
        restart_timer(hc->c); /* idle from now */
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        hc->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    for (struct h2_stream **pp = &hc->pending; *pp != NULL; pp = &(*pp)->pending_next) {
        if (*pp == s) {
            *pp = s->pending_next;
            break;
        }
    }
    h2_hdrs_free(&s->req);
    h2_hdrs_free(&s->req_trailers);
    h2_hdrs_free(&s->resp);
    h2_hdrs_free(&s->resp_trailers);
    h2_hdrs_free(&s->raw);
    buf_free(&s->resp_body);
    buf_free(&s->req_log);
    free(s);
}

/* The stream leaves the upstream side: it will not be called for |s| again. */
static void stream_detach(struct h2_stream *s)
{
    if (s->started && !s->be_done) {
        s->be_done = true;
        s->be->abort(s);
    }
}

static void pending_add(struct h2_stream *s)
{
    if (s->is_pending)
        return;
    s->is_pending = true;
    s->pending_next = s->hc->pending;
    s->hc->pending = s;
}

/* --- answers of certgate's own ---------------------------------------------------------- */

static ssize_t read_resp(nghttp2_session *session, int32_t id, uint8_t *out, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *user);

/* Submits the response head |s| has (its own answer or the upstream's) with a data provider,
 * or with END_STREAM when nothing can follow. */
static void submit_head(struct h2_stream *s)
{
    struct h2_conn *hc = s->hc;
    s->submitted = true;
    bool bodyless = s->resp_end && buf_used(&s->resp_body) == 0 && s->resp_trailers.num == 0;
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_resp};
    int r = nghttp2_submit_response(hc->session, s->id, h2_hdrs_nv(&s->resp), s->resp.num,
                                    bodyless ? NULL : &prd);
    if (r != 0)
        nghttp2_submit_rst_stream(hc->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
}

/* certgate answers |status| itself: a short text body, as the HTTP/1 path's. */
static void answer(struct h2_stream *s, int status)
{
    char st[4], len[24];
    char body[96];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, http_reason(status));
    snprintf(st, sizeof(st), "%d", status);
    snprintf(len, sizeof(len), "%d", n);
    h2_hdrs_free(&s->resp);
    h2_hdrs_add(&s->resp, ":status", 7, st, strlen(st));
    h2_hdrs_add(&s->resp, "content-type", 12, "text/plain", 10);
    h2_hdrs_add(&s->resp, "content-length", 14, len, strlen(len));
    buf_free(&s->resp_body);
    buf_append(&s->resp_body, body, (size_t)n);
    s->status = status;
    s->resp_head = s->resp_end = true;
    s->own_answer = true;
    if (!s->submitted)
        pending_add(s);
}

/* --- the upstream side's calls ---------------------------------------------------------- */

/* Appends |nv| to |h|, names lowercased, without pseudo or connection-specific headers. */
static void add_regular(struct h2_hdrs *h, const nghttp2_nv *nv, size_t num)
{
    char lower[256];
    for (size_t i = 0; i < num; i++) {
        const char *n = (const char *)nv[i].name;
        size_t nl = nv[i].namelen;
        if (nl == 0 || n[0] == ':' || h2_connection_specific(n, nl) || nl > sizeof(lower))
            continue;
        for (size_t j = 0; j < nl; j++)
            lower[j] = (char)((n[j] >= 'A' && n[j] <= 'Z') ? n[j] + 32 : n[j]);
        h2_hdrs_add(h, lower, nl, (const char *)nv[i].value, nv[i].valuelen);
    }
}

void h2_stream_response_head(struct h2_stream *s, int status, const nghttp2_nv *nv, size_t num)
{
    if (s->resp_head || s->own_answer)
        return;
    char st[24];
    size_t stl = status >= 0 ? base_utoa((unsigned)status, st)
                             : (size_t)snprintf(st, sizeof(st), "%d", status);
    h2_hdrs_add(&s->resp, ":status", 7, st, stl);
    add_regular(&s->resp, nv, num);
    s->status = status;
    s->resp_head = true;
    pending_add(s);
}

bool h2_stream_resp_full(const struct h2_stream *s)
{
    return buf_used(&s->resp_body) >= H2_STREAM_HWM;
}

void h2_stream_response_data(struct h2_stream *s, const void *data, size_t len)
{
    if (s->own_answer || len == 0)
        return;
    buf_append(&s->resp_body, data, len);
    if (s->submitted && s->deferred) {
        s->deferred = false;
        nghttp2_session_resume_data(s->hc->session, s->id);
    }
}

void h2_stream_response_end(struct h2_stream *s, const nghttp2_nv *trailers, size_t num)
{
    s->be_done = true;
    drop_req_body(s); /* an upstream that answered before reading it all */
    if (s->own_answer)
        return;
    if (num > 0)
        add_regular(&s->resp_trailers, trailers, num);
    s->resp_end = true;
    if (s->submitted && s->deferred) {
        s->deferred = false;
        nghttp2_session_resume_data(s->hc->session, s->id);
    }
}

void h2_stream_failed(struct h2_stream *s, int status)
{
    s->be_done = true;
    s->upstream_failed = true;
    drop_req_body(s);
    if (s->submitted) {
        /* Part of the response is out: only a reset can tell the client. */
        nghttp2_submit_rst_stream(s->hc->session, NGHTTP2_FLAG_NONE, s->id,
                                  NGHTTP2_INTERNAL_ERROR);
        return;
    }
    h2_hdrs_free(&s->resp_trailers);
    answer(s, status);
}

void h2_stream_req_taken(struct h2_stream *s, size_t len)
{
    if (len > 0)
        nghttp2_session_consume(s->hc->session, s->id, len);
}

void h2_stream_touch(struct h2_stream *s)
{
    struct conn *c = s->c;
    if (c->h2_touched)
        return;
    c->h2_touched = true;
    c->h2_touched_next = c->worker->h2_touched;
    c->worker->h2_touched = c;
}

void h2_flush_touched(struct worker *w)
{
    while (w->h2_touched != NULL) {
        struct conn *c = w->h2_touched;
        w->h2_touched = c->h2_touched_next;
        c->h2_touched = false;
        c->h2_touched_next = NULL;
        conn_event_end(c);
    }
}

/* --- the response body ------------------------------------------------------------------- */

static ssize_t read_resp(nghttp2_session *session, int32_t id, uint8_t *out, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct h2_stream *s = src->ptr;
    size_t n = MIN(len, buf_used(&s->resp_body));
    if (n > 0) {
        memcpy(out, buf_data(&s->resp_body), n);
        buf_consume(&s->resp_body, n);
        s->bytes_out += n;
    }
    if (buf_used(&s->resp_body) == 0) {
        if (s->resp_end) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (s->resp_trailers.num > 0) {
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                nghttp2_submit_trailer(session, id, h2_hdrs_nv(&s->resp_trailers),
                                       s->resp_trailers.num);
            }
        } else if (n == 0) {
            s->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    /* Every take, not only the one that leaves "full": an h2c upstream's window reopens by
     * what the client took (h2_upc.c), and it may stall before the queue was ever full. */
    if (n > 0 && !h2_stream_resp_full(s) && s->started && !s->be_done)
        s->be->resp_room(s);
    return (ssize_t)n;
}

/* --- abuse accounting -------------------------------------------------------------------- */

/* Takes one token for a frame that carries no request; false when the bucket is empty. */
static bool flood_take(struct h2_conn *hc)
{
    uint64_t now = conn_now_ms(hc->c);
    hc->flood_tokens += (double)(now - hc->flood_ms) * H2_FLOOD_RATE / 1000.0;
    hc->flood_ms = now;
    if (hc->flood_tokens > H2_FLOOD_BURST)
        hc->flood_tokens = H2_FLOOD_BURST;
    hc->flood_tokens -= 1;
    return hc->flood_tokens >= 0;
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

/* The request head of |s| is complete: check it, then forward it or answer. */
static void request_ready(struct h2_stream *s)
{
    s->c->num_requests++; /* from now on the connection's timeout is idle_timeout */
    conn_arm_timer(s->c); /* which may be shorter than request_head_timeout */
    int status = h2_request_build(s);
    h2_hdrs_free(&s->raw); /* the pseudo-header pointers went with it */
    s->p_method = s->p_scheme = s->p_authority = s->p_path = NULL;
    if (status != 0) {
        answer(s, status);
        return;
    }
    s->be = backend_override != NULL                           ? backend_override
            : s->c->lc->upstream_protocol == UPSTREAM_H2C ? &h2_upc_backend
                                                          : &h2_up1_backend;
    if (s->be->start(s) != 0) {
        metrics_upstream_error(s->c->index, METRICS_UP_CONNECT);
        answer(s, 503);
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
    hc->continuations = 0;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    head_begin(hc, frame->hd.stream_id);
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        if (hc->goaway_sent)
            return 0;
        struct h2_stream *s = stream_new(hc, frame->hd.stream_id);
        nghttp2_session_set_stream_user_data(session, s->id, s);
        return 0;
    }
    struct h2_stream *s = stream_of(hc, frame->hd.stream_id);
    if (s != NULL)
        s->in_trailers = true;
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
        if (s != NULL && !(s->resp_end && s->submitted)) {
            hc->premature_resets++;
            if (hc->premature_resets > H2_RESET_MIN && hc->premature_resets * 2 > hc->opened)
                return abuse(hc, "streams reset faster than they are answered (rapid reset)");
        }
        return 0;
    default:
        return 0;
    }
}

static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user)
{
    struct h2_conn *hc = user;
    if (hd->type != NGHTTP2_CONTINUATION)
        head_end(hc);
    if (hd->type == NGHTTP2_CONTINUATION && ++hc->continuations > H2_MAX_CONTINUATIONS)
        return abuse(hc, "a header block in too many CONTINUATION frames");
    return 0;
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
    stream_detach(s);
    if (!(s->resp_end && s->submitted) && !s->own_answer)
        s->status = s->status ? s->status : 499; /* the client gave up (nginx's 499) */
    if (buf_used(&s->req_log) > 0 || s->status != 0)
        stream_log(s, s->own_answer ? "certgate" : "upstream");
    stream_free(hc, s);
    return 0;
}

static int on_invalid_frame(nghttp2_session *session, const nghttp2_frame *frame, int err,
                            void *user)
{
    struct h2_conn *hc = user;
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
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks, on_invalid_frame);
    nghttp2_session_callbacks_set_on_invalid_header_callback(callbacks, on_invalid_header);
    nghttp2_option_new(&options);
    /* Window updates follow what the upstream side took: flow control is backpressure. */
    nghttp2_option_set_no_auto_window_update(options, 1);
    /* Queued ACKs to a client that does not read are bounded (nghttp2 ends the session). */
    nghttp2_option_set_max_outbound_ack(options, 1000);
    nghttp2_option_set_max_settings(options, 32);
    /* Closed streams are not kept for the priority tree (RFC 9113 deprecates it). */
    nghttp2_option_set_no_closed_streams(options, 1);
}

void h2_server_start(struct conn *c)
{
    uv_once(&callbacks_once, init_callbacks);
    struct h2_conn *hc = xcalloc(1, sizeof(*hc));
    hc->c = c;
    hc->flood_tokens = H2_FLOOD_BURST;
    hc->flood_ms = conn_now_ms(c);
    hc->goaway_code = NGHTTP2_NO_ERROR;
    c->h2 = hc;
    h2_mem_init(&hc->mem);
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
    ssize_t n = nghttp2_session_mem_recv(hc->session, (const uint8_t *)buf_data(&c->cin),
                                         buf_used(&c->cin));
    if (n < 0) {
        /* A limit of ours, a flood nghttp2 caught, or a protocol error: GOAWAY and close. */
        uint32_t code = hc->goaway_code != NGHTTP2_NO_ERROR ? hc->goaway_code
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
            submit_head(s);
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
        struct h2_stream *s = hc->streams;
        stream_detach(s);
        if (!(s->resp_end && s->submitted) && !s->own_answer && s->status == 0)
            s->status = 499;
        if (buf_used(&s->req_log) > 0)
            stream_log(s, s->own_answer ? "certgate" : "upstream");
        stream_free(hc, s);
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
