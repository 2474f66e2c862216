/* h2_stream.c: a stream's response toward the client, on the client side of HTTP/2:
 * certgate's own answers, the calls the upstream side makes (h2_stream.h: the response head,
 * body and end, a failure, request body taken, a stream parked), the response body's data
 * provider, the connection window a stream's request body holds, and a stream's life (its
 * one access-log line when it ends). The nghttp2 session and its callbacks are h2_server.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base.h"
#include "h2/h2_hdrs.h"
#include "h2/h2_stream_internal.h"
#include "http/message.h"
#include "net/conn.h"
#include "net/worker.h"

/* --- a stream's life on the client side ------------------------------------------------- */

struct h2_stream *h2_stream_new(struct h2_conn *hc, int32_t id)
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
        .protocol = "HTTP/2",
    };
    conn_access_log_exchange(s->c, &x);
}

static void stream_free(struct h2_conn *hc, struct h2_stream *s)
{
    h2_stream_drop_req_body(s);
    if (--hc->c->h2_streams == 0 && hc->c->state == CONN_H2) {
        hc->c->timer_base = conn_now_ms(hc->c); /* idle from now */
        conn_arm_timer(hc->c);
    }
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

void h2_stream_detach(struct h2_stream *s)
{
    if (s->started && !s->be_done) {
        s->be_done = true;
        s->be->abort(s);
    }
}

void h2_stream_end(struct h2_conn *hc, struct h2_stream *s)
{
    h2_stream_detach(s);
    if (!(s->resp_end && s->submitted) && !s->own_answer && s->status == 0)
        s->status = 499; /* the client gave up (nginx's 499) */
    stream_log(s, s->own_answer ? "certgate" : "upstream");
    stream_free(hc, s);
}

static ssize_t read_resp(nghttp2_session *session, int32_t id, uint8_t *out, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *user);

static void pending_add(struct h2_stream *s)
{
    if (s->is_pending)
        return;
    s->is_pending = true;
    s->pending_next = s->hc->pending;
    s->hc->pending = s;
}

/* The client may send |len| more bytes on |s|: the stream's window, and the connection's for
 * what it still holds (a parked stream's bytes gave theirs back when they came). */
static void req_release(struct h2_stream *s, size_t len)
{
    size_t early = MIN(len, s->req_credit);
    if (early > 0) {
        nghttp2_session_consume_stream(s->hc->session, s->id, early);
        s->req_credit -= early;
        s->hc->parked_bytes -= early;
    }
    if (len > early)
        nghttp2_session_consume(s->hc->session, s->id, len - early);
}

void h2_stream_drop_req_body(struct h2_stream *s)
{
    req_release(s, buf_used(&s->req_body));
    buf_free(&s->req_body);
}

/* --- answers of certgate's own ---------------------------------------------------------- */

void h2_stream_submit_head(struct h2_stream *s)
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

void h2_stream_answer(struct h2_stream *s, int status)
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
    size_t stl = base_utoa((unsigned)status, st); /* three digits, from either upstream side */
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
    h2_stream_drop_req_body(s); /* an upstream that answered before reading it all */
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
    h2_stream_drop_req_body(s);
    if (s->submitted) {
        /* Part of the response is out: only a reset can tell the client. */
        nghttp2_submit_rst_stream(s->hc->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    h2_hdrs_free(&s->resp_trailers);
    h2_stream_answer(s, status);
}

void h2_stream_req_taken(struct h2_stream *s, size_t len)
{
    req_release(s, len);
}

void h2_stream_park(struct h2_stream *s, bool parked)
{
    s->req_parked = parked;
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
