/* h2_upc.c: the h2c upstream side, its streams. Per worker and listener, one HTTP/2 connection
 * with prior knowledge to the upstream (h2_upc_conn.c) carries the streams of every client
 * connection of that listener; this file turns nghttp2's frames into the client side's calls
 * and back. The upstream's flow-control windows are the backpressure: a stream's window opens
 * only as far as the client side has taken its bytes.
 *
 * Streams beyond the upstream's SETTINGS_MAX_CONCURRENT_STREAMS wait on the connection's wait
 * list (one connection, queued rather than a second connection: the upstream chose that limit
 * for all of its clients) and are handed to nghttp2 as slots free. Not in nghttp2's own queue:
 * it keeps a cancelled request HEADERS, and its copy of the header list, until a slot frees,
 * so clients that open streams with big heads and go away would grow it without bound while
 * the upstream is busy. A connection that got GOAWAY (or used up its stream ids)
 * takes no new stream; it closes once its last stream is done, and the next stream opens a new
 * one. A stream the upstream refused without seeing it (REFUSED_STREAM, beyond a GOAWAY's last
 * stream id, or never sent before the connection closed) is sent again, at most UPC_RETRIES
 * times, when no byte of its body went out yet (RFC 9113 8.7). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/base.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "h2/h2_upc_internal.h"
#include "net/conn.h"
#include "net/worker.h"

/* --- the connection's streams -------------------------------------------------------------- */

static void stream_link(struct upc *u, struct upc_stream *us)
{
    us->u = u;
    us->prev = NULL;
    us->next = u->streams;
    if (u->streams != NULL)
        u->streams->prev = us;
    u->streams = us;
    u->num_live++;
}

static void stream_unlink(struct upc *u, struct upc_stream *us)
{
    if (us->prev != NULL)
        us->prev->next = us->next;
    else
        u->streams = us->next;
    if (us->next != NULL)
        us->next->prev = us->prev;
    us->u = NULL;
}

/* Takes |us| off |u|'s wait list. */
static void wait_remove(struct upc *u, struct upc_stream *us)
{
    struct upc_stream *prev = NULL;
    for (struct upc_stream *p = u->wait_head; p != NULL; prev = p, p = p->wnext) {
        if (p != us)
            continue;
        if (prev != NULL)
            prev->wnext = p->wnext;
        else
            u->wait_head = p->wnext;
        if (u->wait_tail == p)
            u->wait_tail = prev;
        break;
    }
    us->wnext = NULL;
    us->waiting = false;
}

static void stream_free(struct upc_stream *us)
{
    if (us->waiting && us->u != NULL)
        wait_remove(us->u, us);
    if (us->u != NULL)
        stream_unlink(us->u, us);
    h2_hdrs_free(&us->hdrs);
    free(us);
}

/* Turns |us| into a tombstone: the client side's stream is no longer ours. */
static void stream_detach(struct upc_stream *us)
{
    if (us->s == NULL)
        return;
    us->s->be_data = NULL;
    us->s = NULL;
    if (us->u != NULL)
        us->u->num_live--;
    h2_hdrs_free(&us->hdrs);
}

static void stream_fail(struct upc_stream *us, int status)
{
    struct h2_stream *s = us->s;
    metrics_upstream_error(s->c->index, status == 503   ? METRICS_UP_CONNECT
                                        : status == 504 ? METRICS_UP_TIMEOUT
                                                        : METRICS_UP_RESET);
    stream_detach(us);
    h2_stream_touch(s);
    h2_stream_failed(s, status);
}

static bool stream_retryable(const struct upc_stream *us)
{
    return us->s != NULL && !us->head_seen && us->body_taken == 0 && us->retries < UPC_RETRIES;
}

/* Queues |us|'s client stream to be submitted again at the end of the event, under a new
 * upc_stream; |us| stays behind as a tombstone. */
static void stream_retry(struct upc_set *set, struct upc_stream *us)
{
    struct upc_stream *again = xcalloc(1, sizeof(*again));
    again->s = us->s;
    again->retries = us->retries + 1;
    stream_detach(us);
    again->s->be_data = again;
    again->next = set->retry;
    set->retry = again;
}

/* A stream waiting on |u|, which takes no new stream, goes to the retry queue as it is: the
 * upstream never saw it. */
static void wait_requeue(struct upc *u, struct upc_stream *us)
{
    wait_remove(u, us);
    u->num_live--;
    stream_unlink(u, us);
    us->next = u->set->retry;
    u->set->retry = us;
}

/* --- the upstream's frames (nghttp2 callbacks: they only record) --------------------------- */

static struct upc_stream *live_stream(nghttp2_session *sess, int32_t id)
{
    struct upc_stream *us = nghttp2_session_get_stream_user_data(sess, id);
    return us != NULL && us->s != NULL ? us : NULL;
}

static int on_begin_headers(nghttp2_session *sess, const nghttp2_frame *frame, void *ud)
{
    struct upc_stream *us = live_stream(sess, frame->hd.stream_id);
    if (us != NULL) {
        h2_hdrs_free(&us->hdrs);
        us->block_bytes = 0;
        us->status = 0;
    }
    return 0;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name,
                     size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
                     void *ud)
{
    struct upc *u = ud;
    struct upc_stream *us = live_stream(sess, frame->hd.stream_id);
    if (us == NULL || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    /* A response head is bounded as an HTTP/1 one is; beyond it the stream is reset (502). */
    us->block_bytes += name_len + value_len + 32;
    if (us->block_bytes > h2_upc_conn_limits(u)->max_request_head)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (name_len > 0 && name[0] == ':') {
        /* nghttp2 checked the pseudo-headers: :status is three digits, and only in a head. */
        if (name_len == 7 && memcmp(name, ":status", 7) == 0 && value_len == 3)
            us->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
        return 0;
    }
    h2_hdrs_add(&us->hdrs, (const char *)name, name_len, (const char *)value, value_len);
    return 0;
}

/* The response is complete: the client side gets |us|'s trailers (if any) after the body. */
static void stream_finish(struct upc *u, struct upc_stream *us, bool trailers)
{
    struct h2_stream *s = us->s;
    const nghttp2_nv *nv = trailers && us->hdrs.num > 0 ? h2_hdrs_nv(&us->hdrs) : NULL;
    h2_stream_touch(s);
    h2_stream_response_end(s, nv, nv != NULL ? us->hdrs.num : 0);
    /* What the client side still holds is no longer ours to count: the stream is over. */
    nghttp2_session_consume(u->sess, us->id, us->unconsumed);
    us->unconsumed = 0;
    if (!us->req_sent) /* the upstream answered before the request ended: stop sending it */
        nghttp2_submit_rst_stream(u->sess, NGHTTP2_FLAG_NONE, us->id, NGHTTP2_CANCEL);
    stream_detach(us);
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *frame, void *ud)
{
    struct upc *u = ud;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        u->goaway = true;
        h2_upc_conn_retire(u);
        log_msg(frame->goaway.error_code == NGHTTP2_NO_ERROR ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN,
                "upstream_goaway",
                "listener %s: h2c upstream sent GOAWAY "
                "(last stream %d, error %u)",
                h2_upc_conn_name(u), (int)frame->goaway.last_stream_id,
                (unsigned)frame->goaway.error_code);
        return 0;
    }
    struct upc_stream *us = live_stream(sess, frame->hd.stream_id);
    if (us == NULL)
        return 0;
    bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (frame->hd.type == NGHTTP2_HEADERS) {
        if (us->head_seen) { /* trailers: nghttp2 made sure END_STREAM is set */
            stream_finish(u, us, true);
            return 0;
        }
        if (us->status >= 100 && us->status < 200 && !end) { /* informational: dropped */
            h2_hdrs_free(&us->hdrs);
            return 0;
        }
        us->head_seen = true;
        us->deadline = 0;
        h2_stream_touch(us->s);
        h2_stream_response_head(us->s, us->status, us->hdrs.num ? h2_hdrs_nv(&us->hdrs) : NULL,
                                us->hdrs.num);
        h2_hdrs_free(&us->hdrs);
        if (end) /* trailers-only, as gRPC answers an error */
            stream_finish(u, us, false);
    } else if (frame->hd.type == NGHTTP2_DATA && end) {
        h2_hdrs_free(&us->hdrs);
        stream_finish(u, us, false);
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *sess, uint8_t flags, int32_t id, const uint8_t *data,
                              size_t len, void *ud)
{
    struct upc_stream *us = live_stream(sess, id);
    if (us == NULL) { /* a stream we let go of: its bytes go back to the window at once */
        nghttp2_session_consume(sess, id, len);
        return 0;
    }
    us->unconsumed += len;
    h2_stream_touch(us->s);
    h2_stream_response_data(us->s, data, len);
    if (us->deadline == 0)
        h2_upc_conn_set_stall(ud, us, true); /* from now, the client must take bytes */
    return 0;
}

static int on_frame_send(nghttp2_session *sess, const nghttp2_frame *frame, void *ud)
{
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        struct upc_stream *us = nghttp2_session_get_stream_user_data(sess, frame->hd.stream_id);
        if (us != NULL)
            us->headers_sent = true;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t id, uint32_t error_code, void *ud)
{
    struct upc *u = ud;
    struct upc_stream *us = nghttp2_session_get_stream_user_data(sess, id);
    if (us == NULL)
        return 0;
    if (u->num_open > 0)
        u->num_open--; /* a slot is free: h2_upc_streams_promote fills it */
    if (us->s != NULL) {
        /* Closed before the response ended: reset by the upstream, refused, or broken. */
        if (error_code == NGHTTP2_REFUSED_STREAM && stream_retryable(us))
            stream_retry(u->set, us);
        else
            stream_fail(us, 502);
    }
    stream_free(us);
    return 0;
}

/* The request body, from s->req_body; the trailers follow the last DATA frame. */
static ssize_t read_body(nghttp2_session *sess, int32_t id, uint8_t *out, size_t len,
                         uint32_t *flags, nghttp2_data_source *source, void *ud)
{
    struct upc *u = ud;
    struct upc_stream *us = source->ptr;
    struct h2_stream *s = us->s;
    if (s == NULL) /* a tombstone: its RST_STREAM is on its way */
        return NGHTTP2_ERR_DEFERRED;
    size_t n = MIN(len, buf_used(&s->req_body));
    if (n > 0) {
        memcpy(out, buf_data(&s->req_body), n);
        buf_consume(&s->req_body, n);
        us->body_taken += n;
        h2_stream_touch(s);
        h2_stream_req_taken(s, n);
        if (s->req_end)
            h2_upc_conn_set_deadline(u, us);
    }
    if (buf_used(&s->req_body) == 0 && s->req_end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        us->req_sent = true;
        if (s->req_trailers.num > 0) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nghttp2_submit_trailer(sess, id, h2_hdrs_nv(&s->req_trailers),
                                       s->req_trailers.num) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return (ssize_t)n;
    }
    if (n == 0) {
        us->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

void h2_upc_callbacks(nghttp2_session_callbacks *cb)
{
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
}

/* --- the streams of a connection, as a whole ------------------------------------------------ */

/* Tells whether |u| has as many streams open as the upstream allows. */
static bool upc_full(struct upc *u)
{
    return u->num_open >=
           nghttp2_session_get_remote_settings(u->sess, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

/* Hands |us|'s request to nghttp2 on |u|. Returns its stream id or nghttp2's error. */
static int32_t submit_request(struct upc *u, struct upc_stream *us)
{
    struct h2_stream *s = us->s;
    bool body = !s->req_end || buf_used(&s->req_body) > 0 || s->req_trailers.num > 0;
    nghttp2_data_provider dp = {.source.ptr = us, .read_callback = read_body};
    int32_t id = nghttp2_submit_request(u->sess, NULL, h2_hdrs_nv(&s->req), s->req.num,
                                        body ? &dp : NULL, us);
    if (id < 0)
        return id;
    us->id = id;
    us->req_sent = !body;
    u->num_open++;
    return id;
}

/* Submits |us|'s request on the listener's current connection, opening one if needed, or puts
 * it on that connection's wait list while the upstream's concurrency limit is reached. Returns
 * 0 or a negative errno. */
static int submit(struct worker *w, struct upc_stream *us)
{
    struct h2_stream *s = us->s;
    for (int attempt = 0; attempt < 2; attempt++) {
        int err = 0;
        struct upc *u = h2_upc_conn_get(w, s->c->index, &err);
        if (u == NULL)
            return err;
        if (u->wait_head != NULL || upc_full(u)) {
            h2_stream_park(s, true);
            us->waiting = true;
            us->id = 0;
            stream_link(u, us);
            if (u->wait_tail != NULL)
                u->wait_tail->wnext = us;
            else
                u->wait_head = us;
            u->wait_tail = us;
            if (s->req_end)
                h2_upc_conn_set_deadline(u, us);
            return 0;
        }
        int32_t id = submit_request(u, us);
        if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) { /* ids used up: a new connection */
            h2_upc_conn_retire(u);
            h2_upc_conn_update_poll(u);
            continue;
        }
        if (id < 0)
            return -EIO;
        h2_stream_park(s, false);
        stream_link(u, us);
        if (s->req_end)
            h2_upc_conn_set_deadline(u, us);
        h2_upc_conn_update_poll(u);
        return 0;
    }
    return -EIO;
}

void h2_upc_streams_promote(struct upc *u)
{
    while (u->wait_head != NULL) {
        struct upc_stream *us = u->wait_head;
        if (u->retiring || u->goaway || u->lost) {
            wait_requeue(u, us);
            continue;
        }
        if (upc_full(u))
            return;
        wait_remove(u, us);
        h2_stream_park(us->s, false);
        int32_t id = submit_request(u, us);
        if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
            h2_upc_conn_retire(u); /* this one and the rest: a new connection */
            u->num_live--;
            stream_unlink(u, us);
            us->next = u->set->retry;
            u->set->retry = us;
            continue;
        }
        if (id < 0) {
            stream_fail(us, 503);
            stream_free(us);
            continue;
        }
        if (us->s->req_end && us->deadline == 0)
            h2_upc_conn_set_deadline(u, us);
    }
}

void h2_upc_streams_retry(struct worker *w, struct upc_set *set)
{
    while (set->retry != NULL) {
        struct upc_stream *us = set->retry;
        set->retry = us->next;
        us->next = NULL;
        int err = submit(w, us);
        if (err != 0) {
            stream_fail(us, 503);
            stream_free(us);
        }
    }
}

/* GOAWAY: requests still waiting in nghttp2's queue (the concurrency limit held them back)
 * will never go out on this connection: cancel them here and send them on a new one. */
void h2_upc_streams_goaway(struct upc *u)
{
    struct upc_stream *next;
    for (struct upc_stream *us = u->streams; us != NULL; us = next) {
        next = us->next;
        if (us->waiting) {
            wait_requeue(u, us);
            continue;
        }
        if (us->s != NULL && !us->headers_sent && stream_retryable(us)) {
            nghttp2_submit_rst_stream(u->sess, NGHTTP2_FLAG_NONE, us->id, NGHTTP2_REFUSED_STREAM);
            stream_retry(u->set, us);
        }
    }
}

void h2_upc_streams_lost(struct upc *u, int status)
{
    while (u->streams != NULL) {
        struct upc_stream *us = u->streams;
        if (us->s != NULL) {
            if (status == 502 && !us->headers_sent && stream_retryable(us))
                stream_retry(u->set, us);
            else
                stream_fail(us, status);
        }
        u->streams = us->next; /* the head: unlinked here, as the analyzer can follow */
        if (us->next != NULL)
            us->next->prev = NULL;
        us->u = NULL;
        us->waiting = false;
        stream_free(us);
    }
    u->wait_head = u->wait_tail = NULL;
}

uint64_t h2_upc_streams_expire(struct upc *u, uint64_t now)
{
    uint64_t due = 0;
    struct upc_stream *next;
    for (struct upc_stream *us = u->streams; us != NULL; us = next) {
        next = us->next;
        if (us->s == NULL || us->deadline == 0)
            continue;
        if (now >= us->deadline && us->waiting) { /* never got a slot: nghttp2 never saw it */
            stream_fail(us, 504);
            stream_free(us);
        } else if (now >= us->deadline && us->head_seen) {
            /* The client took none of the response for idle_timeout: the stream is reset both
             * ways (as h2_up1.c does); not an upstream error. */
            struct h2_stream *s = us->s;
            nghttp2_submit_rst_stream(u->sess, NGHTTP2_FLAG_NONE, us->id, NGHTTP2_CANCEL);
            nghttp2_session_consume(u->sess, us->id, us->unconsumed);
            us->unconsumed = 0;
            stream_detach(us);
            h2_stream_touch(s);
            h2_stream_failed(s, 502);
        } else if (now >= us->deadline) {
            nghttp2_submit_rst_stream(u->sess, NGHTTP2_FLAG_NONE, us->id, NGHTTP2_CANCEL);
            stream_fail(us, 504);
        } else if (due == 0 || us->deadline < due) {
            due = us->deadline;
        }
    }
    return due;
}

void h2_upc_streams_close_all(struct upc_set *set)
{
    while (set->retry != NULL) {
        struct upc_stream *us = set->retry;
        set->retry = us->next;
        stream_fail(us, 502);
        stream_free(us);
    }
}

/* --- the backend --------------------------------------------------------------------------- */

static int upc_start(struct h2_stream *s)
{
    struct upc_stream *us = xcalloc(1, sizeof(*us));
    us->s = s;
    s->be_data = us;
    int err = submit(s->c->worker, us);
    if (err != 0) { /* the client side answers 503 and counts it */
        s->be_data = NULL;
        free(us);
    }
    return err;
}

static void upc_req_more(struct h2_stream *s)
{
    struct upc_stream *us = s->be_data;
    if (us == NULL || us->u == NULL)
        return;
    if (s->req_end)
        h2_upc_conn_set_deadline(us->u, us);
    if (us->deferred) {
        us->deferred = false;
        nghttp2_session_resume_data(us->u->sess, us->id);
    }
    h2_upc_conn_update_poll(us->u);
}

static void upc_resp_room(struct h2_stream *s)
{
    struct upc_stream *us = s->be_data;
    if (us == NULL || us->u == NULL)
        return;
    size_t held = buf_used(&s->resp_body);
    h2_upc_conn_set_stall(us->u, us, held > 0); /* the client took bytes: it is alive */
    if (us->unconsumed <= held)
        return;
    nghttp2_session_consume(us->u->sess, us->id, us->unconsumed - held);
    us->unconsumed = held;
    h2_upc_conn_update_poll(us->u);
}

static void upc_abort(struct h2_stream *s)
{
    struct upc_stream *us = s->be_data;
    if (us == NULL)
        return;
    struct upc *u = us->u;
    if (u == NULL) { /* waiting in the retry queue */
        struct upc_set *set = s->c->worker->h2c;
        for (struct upc_stream **pp = &set->retry; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == us) {
                *pp = us->next;
                break;
            }
        }
        s->be_data = NULL;
        stream_free(us);
        return;
    }
    if (us->waiting) { /* nghttp2 never saw it: gone at once */
        stream_detach(us);
        stream_free(us);
        return;
    }
    /* Cancels the request HEADERS if they are still queued; the tombstone goes when nghttp2
     * closes the stream. */
    nghttp2_submit_rst_stream(u->sess, NGHTTP2_FLAG_NONE, us->id, NGHTTP2_CANCEL);
    nghttp2_session_consume(u->sess, us->id, us->unconsumed);
    us->unconsumed = 0;
    stream_detach(us);
    h2_upc_conn_update_poll(u);
}

const struct h2_backend h2_upc_backend = {upc_start, upc_req_more, upc_resp_room, upc_abort};
