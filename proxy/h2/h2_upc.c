/* h2_upc.c: the h2c upstream side. Per worker and listener, one HTTP/2 connection with prior
 * knowledge to the upstream (an nghttp2 client session on a non-blocking socket) carries the
 * streams of every client connection of that listener. The upstream's flow-control windows are
 * the backpressure: a stream's window opens only as far as the client side has taken its bytes.
 *
 * Streams beyond the upstream's SETTINGS_MAX_CONCURRENT_STREAMS wait in nghttp2's queue of
 * request HEADERS (one connection, queued rather than a second connection: the upstream chose
 * that limit for all of its clients). A connection that got GOAWAY (or used up its stream ids)
 * takes no new stream; it closes once its last stream is done, and the next stream opens a new
 * one. A stream the upstream refused without seeing it (REFUSED_STREAM, beyond a GOAWAY's last
 * stream id, or never sent before the connection closed) is sent again, at most UPC_RETRIES
 * times, when no byte of its body went out yet (RFC 9113 8.7). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/base.h"
#include "core/log.h"
#include "core/metrics.h"
#include "h2/h2_stream.h"
#include "net/conn.h"
#include "net/worker.h"
#include "upstream/upstream.h"

/* A stream's receive window: what may wait in s->resp_body. */
#define UPC_STREAM_WINDOW H2_STREAM_HWM
/* The connection's receive window: effectively off, so that slow streams cannot stall the
 * others; memory is bounded by the stream windows. */
#define UPC_CONN_WINDOW ((1 << 30) - 1)
/* Frames queued for the socket before writing; one read's worth. */
#define UPC_OUT_HWM (64 * 1024)
#define UPC_READ_SIZE (16 * 1024)
/* Writes per event, so that one busy upstream cannot starve the worker. */
#define UPC_WRITES_PER_EVENT 16
#define UPC_RETRIES 2
/* Largest header block we send (nghttp2's default, 64 KiB, is less than a request head of
 * limits.max_request_head plus the client-certificate header certgate adds). */
#define UPC_MAX_SEND_HEADER_BLOCK (1024 * 1024)

struct upc;

/* One stream as the upstream side sees it: s->be_data. After the client side is done with it
 * (s == NULL: response over, failed, aborted or re-sent), it stays as a tombstone until nghttp2
 * closes the upstream stream, because nghttp2 still holds it as stream user data and as the
 * data source. */
struct upc_stream {
    struct h2_stream *s;
    struct upc *u;                  /* the connection it was submitted on; NULL while queued */
    struct upc_stream *next, *prev; /* u's streams, or the worker's retry queue (next only) */
    int32_t id;
    unsigned retries;
    uint64_t deadline;   /* upstream_response_timeout (loop time, ms); 0: not running */
    size_t unconsumed;   /* DATA bytes handed to the client side, window not yet reopened */
    size_t body_taken;   /* request body bytes taken from s->req_body */
    size_t block_bytes;  /* of the header block being read */
    struct h2_hdrs hdrs; /* the regular fields of the header block being read */
    int status;          /* its :status */
    bool headers_sent;   /* the request HEADERS went to the socket buffer */
    bool req_sent;       /* the request's last frame was produced */
    bool head_seen;      /* the final response head went to the client side */
    bool deferred;       /* the data source said NGHTTP2_ERR_DEFERRED */
};

/* One h2c connection. Its memory goes in the last close callback of poll and timer. */
struct upc {
    uv_poll_t poll;
    uv_timer_t timer;
    struct worker *w;
    struct upc_set *set;
    size_t index; /* listener */
    nghttp2_session *sess;
    int fd;
    int events;
    int pending_closes;
    bool connected;
    bool retiring; /* takes no new stream */
    bool goaway;   /* the upstream sent GOAWAY */
    bool lost;     /* the socket failed or the session is over: close at the end of the event */
    uint64_t connect_deadline;
    uint64_t timer_due;
    struct buf out; /* frames for the socket */
    struct upc_stream *streams;
    size_t num_live; /* streams with s != NULL */
    struct upc *next, *prev;
};

/* w->h2c. */
struct upc_set {
    size_t num_listeners;
    struct upc **cur;           /* per listener: the connection new streams go to, or NULL */
    struct upc *all;            /* every open connection */
    struct upc_stream *retry;   /* streams to submit again at the end of the event */
};

static const struct config_limits *limits(const struct upc *u)
{
    return &u->w->srv->cfg->limits;
}

static const struct listener_config *listener(const struct upc *u)
{
    return &u->w->srv->cfg->listeners[u->index];
}

static uint64_t now_ms(const struct upc *u)
{
    return uv_now(&u->w->loop);
}

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

static void stream_free(struct upc_stream *us)
{
    struct upc *u = us->u;
    if (u != NULL) {
        if (us->prev != NULL)
            us->prev->next = us->next;
        else
            u->streams = us->next;
        if (us->next != NULL)
            us->next->prev = us->prev;
    }
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

static void set_deadline(struct upc *u, struct upc_stream *us);

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
    if (us->block_bytes > limits(u)->max_request_head)
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
        u->retiring = true;
        if (u->set->cur[u->index] == u)
            u->set->cur[u->index] = NULL;
        log_msg(LOG_LEVEL_DEBUG, "upstream_goaway", "listener %s: h2c upstream sent GOAWAY "
                "(last stream %d, error %u)", listener(u)->name,
                (int)frame->goaway.last_stream_id, (unsigned)frame->goaway.error_code);
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

static int on_data_chunk_recv(nghttp2_session *sess, uint8_t flags, int32_t id,
                              const uint8_t *data, size_t len, void *ud)
{
    struct upc_stream *us = live_stream(sess, id);
    if (us == NULL) { /* a stream we let go of: its bytes go back to the window at once */
        nghttp2_session_consume(sess, id, len);
        return 0;
    }
    us->unconsumed += len;
    h2_stream_touch(us->s);
    h2_stream_response_data(us->s, data, len);
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
            set_deadline(u, us);
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

/* --- the connection ------------------------------------------------------------------------ */

static void poll_cb(uv_poll_t *h, int status, int events);
static void timer_cb(uv_timer_t *t);

static void upc_close_cb(uv_handle_t *h)
{
    struct upc *u = h->data;
    if (--u->pending_closes > 0)
        return;
    close(u->fd);
    free(u);
}

/* Closes |u|: its live streams fail with |status| (those never sent go to another connection
 * when they may). */
static void upc_close(struct upc *u, int status)
{
    struct upc_set *set = u->set;
    while (u->streams != NULL) {
        struct upc_stream *us = u->streams;
        if (us->s != NULL) {
            if (status == 502 && !us->headers_sent && stream_retryable(us))
                stream_retry(set, us);
            else
                stream_fail(us, status);
        }
        stream_free(us);
    }
    if (set->cur[u->index] == u)
        set->cur[u->index] = NULL;
    if (u->prev != NULL)
        u->prev->next = u->next;
    else
        set->all = u->next;
    if (u->next != NULL)
        u->next->prev = u->prev;
    nghttp2_session_del(u->sess);
    u->sess = NULL;
    buf_free(&u->out);
    uv_poll_stop(&u->poll);
    uv_timer_stop(&u->timer);
    u->pending_closes = 2;
    uv_close((uv_handle_t *)&u->poll, upc_close_cb);
    uv_close((uv_handle_t *)&u->timer, upc_close_cb);
}

static void update_poll(struct upc *u)
{
    int ev = UV_WRITABLE;
    if (u->connected) {
        ev = UV_READABLE;
        if (buf_used(&u->out) > 0 || nghttp2_session_want_write(u->sess))
            ev |= UV_WRITABLE;
    }
    if (ev != u->events) {
        u->events = ev;
        uv_poll_start(&u->poll, ev, poll_cb);
    }
}

static void arm_timer(struct upc *u, uint64_t due)
{
    if (uv_is_active((uv_handle_t *)&u->timer) && u->timer_due <= due)
        return;
    uint64_t now = now_ms(u);
    u->timer_due = due;
    uv_timer_start(&u->timer, timer_cb, due > now ? due - now : 0, 0);
}

static void set_deadline(struct upc *u, struct upc_stream *us)
{
    if (us->head_seen)
        return;
    us->deadline = now_ms(u) + limits(u)->upstream_response_timeout_ms;
    if (u->connected)
        arm_timer(u, us->deadline);
}

static struct upc *upc_new(struct worker *w, struct upc_set *set, size_t index, int *err)
{
    const struct listener_config *lc = &w->srv->cfg->listeners[index];
    int fd = upstream_socket_connect(&lc->upstream);
    if (fd < 0) {
        log_msg(LOG_LEVEL_WARN, "upstream_connect_failed", "listener %s: %s: %s", lc->name,
                lc->upstream.text, strerror(-fd));
        *err = fd;
        return NULL;
    }
    struct upc *u = xcalloc(1, sizeof(*u));
    u->w = w;
    u->set = set;
    u->index = index;
    u->fd = fd;

    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
        abort(); /* out of memory */
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_send_header_block_length(opt, UPC_MAX_SEND_HEADER_BLOCK);
    /* One stream until the upstream's SETTINGS say how many: nghttp2 would send 100, and a
     * server with a lower limit may answer the excess with a connection error (python-h2
     * does), not with the REFUSED_STREAM that we would retry. */
    nghttp2_option_set_peer_max_concurrent_streams(opt, 1);
    if (nghttp2_session_client_new2(&u->sess, cb, u, opt) != 0)
        abort();
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    const nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, UPC_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)w->srv->cfg->limits.max_request_head},
    };
    nghttp2_submit_settings(u->sess, NGHTTP2_FLAG_NONE, settings, ARRAY_SIZE(settings));
    nghttp2_session_set_local_window_size(u->sess, NGHTTP2_FLAG_NONE, 0, UPC_CONN_WINDOW);

    uv_poll_init(&w->loop, &u->poll, fd);
    u->poll.data = u;
    uv_timer_init(&w->loop, &u->timer);
    u->timer.data = u;
    u->next = set->all;
    if (set->all != NULL)
        set->all->prev = u;
    set->all = u;
    set->cur[index] = u;
    u->connect_deadline = now_ms(u) + w->srv->cfg->limits.upstream_connect_timeout_ms;
    arm_timer(u, u->connect_deadline);
    update_poll(u);
    return u;
}

static struct upc_set *worker_set(struct worker *w)
{
    if (w->h2c == NULL) {
        struct upc_set *set = xcalloc(1, sizeof(*set));
        set->num_listeners = w->srv->cfg->num_listeners;
        set->cur = xcalloc(set->num_listeners, sizeof(*set->cur));
        w->h2c = set;
    }
    return w->h2c;
}

/* Submits |us|'s request on the listener's current connection, opening one if needed. Returns
 * 0 or a negative errno. */
static int submit(struct worker *w, struct upc_stream *us)
{
    struct upc_set *set = worker_set(w);
    struct h2_stream *s = us->s;
    size_t index = s->c->index;
    for (int attempt = 0; attempt < 2; attempt++) {
        struct upc *u = set->cur[index];
        int err = 0;
        if (u == NULL && (u = upc_new(w, set, index, &err)) == NULL)
            return err;
        bool body = !s->req_end || buf_used(&s->req_body) > 0 || s->req_trailers.num > 0;
        nghttp2_data_provider dp = {.source.ptr = us, .read_callback = read_body};
        int32_t id = nghttp2_submit_request(u->sess, NULL, h2_hdrs_nv(&s->req), s->req.num,
                                            body ? &dp : NULL, us);
        if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) { /* ids used up: a new connection */
            u->retiring = true;
            set->cur[index] = NULL;
            update_poll(u);
            continue;
        }
        if (id < 0)
            return -EIO;
        us->id = id;
        us->req_sent = !body;
        stream_link(u, us);
        if (s->req_end)
            set_deadline(u, us);
        update_poll(u);
        return 0;
    }
    return -EIO;
}

static void run_retries(struct worker *w, struct upc_set *set)
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
static void goaway_requeue(struct upc *u)
{
    for (struct upc_stream *us = u->streams; us != NULL; us = us->next) {
        if (us->s != NULL && !us->headers_sent && stream_retryable(us)) {
            nghttp2_submit_rst_stream(u->sess, NGHTTP2_FLAG_NONE, us->id, NGHTTP2_REFUSED_STREAM);
            stream_retry(u->set, us);
        }
    }
}

/* Ends every event of the h2c side: closes what is over, sends refused streams again, watches
 * the sockets for what they can use now, and lets the client connections write. */
static void event_end(struct worker *w)
{
    struct upc_set *set = w->h2c;
    struct upc *next;
    for (struct upc *u = set->all; u != NULL; u = next) {
        next = u->next;
        if (u->goaway && u->num_live > 0)
            goaway_requeue(u);
        if (!u->lost && u->connected && !nghttp2_session_want_read(u->sess) &&
            !nghttp2_session_want_write(u->sess) && buf_used(&u->out) == 0)
            u->lost = true; /* the session is over */
        if (u->lost)
            upc_close(u, 502);
        else if (u->retiring && u->num_live == 0)
            upc_close(u, 502); /* no live stream left to fail */
        else
            update_poll(u);
    }
    run_retries(w, set);
    h2_flush_touched(w);
}

static void upc_send(struct upc *u)
{
    for (int i = 0; i < UPC_WRITES_PER_EVENT && !u->lost; i++) {
        while (buf_used(&u->out) < UPC_OUT_HWM) {
            const uint8_t *p = NULL;
            ssize_t n = nghttp2_session_mem_send(u->sess, &p);
            if (n < 0) {
                u->lost = true;
                return;
            }
            if (n == 0)
                break;
            buf_append(&u->out, p, (size_t)n);
        }
        if (buf_used(&u->out) == 0)
            return;
        ssize_t n = send(u->fd, buf_data(&u->out), buf_used(&u->out), MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(&u->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        u->lost = true;
    }
}

static void upc_read(struct upc *u)
{
    for (int i = 0; i < CONN_READS_PER_EVENT && !u->lost; i++) {
        uint8_t in[UPC_READ_SIZE];
        ssize_t n = recv(u->fd, in, sizeof(in), 0);
        if (n > 0) {
            ssize_t r = nghttp2_session_mem_recv(u->sess, in, (size_t)n);
            if (r < 0) {
                log_msg(LOG_LEVEL_DEBUG, "upstream_h2c_error", "listener %s: %s",
                        listener(u)->name, nghttp2_strerror((int)r));
                u->lost = true;
            }
            if ((size_t)n < sizeof(in))
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        u->lost = true; /* EOF or error */
    }
}

static void connected(struct upc *u)
{
    u->connected = true;
    uv_timer_stop(&u->timer);
    uint64_t due = 0;
    for (struct upc_stream *us = u->streams; us != NULL; us = us->next) {
        if (us->s != NULL && us->deadline != 0 && (due == 0 || us->deadline < due))
            due = us->deadline;
    }
    if (due != 0)
        arm_timer(u, due);
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    struct upc *u = h->data;
    struct worker *w = u->w;
    if (status < 0)
        events |= UV_READABLE | UV_WRITABLE;
    if (!u->connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            log_msg(LOG_LEVEL_WARN, "upstream_connect_failed", "listener %s: %s: %s",
                    listener(u)->name, listener(u)->upstream.text, strerror(err));
            upc_close(u, 503);
            event_end(w);
            return;
        }
        connected(u);
        events |= UV_WRITABLE;
    }
    if (events & UV_READABLE)
        upc_read(u);
    upc_send(u); /* what was asked for, and what reading queued (SETTINGS ack, PING ack) */
    event_end(w);
}

static void timer_cb(uv_timer_t *t)
{
    struct upc *u = t->data;
    struct worker *w = u->w;
    uint64_t now = now_ms(u);
    if (!u->connected) {
        if (now >= u->connect_deadline) {
            log_msg(LOG_LEVEL_WARN, "upstream_connect_failed", "listener %s: %s: timed out",
                    listener(u)->name, listener(u)->upstream.text);
            upc_close(u, 503);
            event_end(w);
            return;
        }
        arm_timer(u, u->connect_deadline);
        return;
    }
    uint64_t due = 0;
    for (struct upc_stream *us = u->streams; us != NULL; us = us->next) {
        if (us->s == NULL || us->deadline == 0)
            continue;
        if (now >= us->deadline) {
            nghttp2_submit_rst_stream(u->sess, NGHTTP2_FLAG_NONE, us->id, NGHTTP2_CANCEL);
            stream_fail(us, 504);
        } else if (due == 0 || us->deadline < due) {
            due = us->deadline;
        }
    }
    if (due != 0)
        arm_timer(u, due);
    upc_send(u);
    event_end(w);
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
        set_deadline(us->u, us);
    if (us->deferred) {
        us->deferred = false;
        nghttp2_session_resume_data(us->u->sess, us->id);
    }
    update_poll(us->u);
}

static void upc_resp_room(struct h2_stream *s)
{
    struct upc_stream *us = s->be_data;
    if (us == NULL || us->u == NULL)
        return;
    size_t held = buf_used(&s->resp_body);
    if (us->unconsumed <= held)
        return;
    nghttp2_session_consume(us->u->sess, us->id, us->unconsumed - held);
    us->unconsumed = held;
    update_poll(us->u);
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
    /* Cancels the request HEADERS if they are still queued; the tombstone goes when nghttp2
     * closes the stream. */
    nghttp2_submit_rst_stream(u->sess, NGHTTP2_FLAG_NONE, us->id, NGHTTP2_CANCEL);
    nghttp2_session_consume(u->sess, us->id, us->unconsumed);
    us->unconsumed = 0;
    stream_detach(us);
    update_poll(u);
}

const struct h2_backend h2_upc_backend = {upc_start, upc_req_more, upc_resp_room, upc_abort};

void h2_upc_close_all(struct worker *w)
{
    struct upc_set *set = w->h2c;
    if (set == NULL)
        return;
    while (set->all != NULL)
        upc_close(set->all, 502);
    while (set->retry != NULL) {
        struct upc_stream *us = set->retry;
        set->retry = us->next;
        stream_fail(us, 502);
        stream_free(us);
    }
    free(set->cur);
    free(set);
    w->h2c = NULL;
}
