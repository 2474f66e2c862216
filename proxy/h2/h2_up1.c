/* h2_up1.c: the HTTP/1.1 upstream side of an HTTP/2 stream (upstream_protocol: http1). Each
 * stream gets an upstream connection of its own, idle from the worker's pool (shared with the
 * HTTP/1 data path) or new, for one exchange: the request head re-serialised from the stream's
 * headers, its body re-framed, the response head scanned and parsed as http.c does, its body
 * decoded and handed to the client side, and the connection pooled again when reusable.
 * Translation (head serialisation and response head) is in h2_up1_head.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "core/base.h"
#include "core/log.h"
#include "core/metrics.h"
#include "h2/h2_up1_internal.h"
#include "net/conn.h"
#include "net/worker.h"
#include "upstream/upstream.h"

static void up1_poll_cb(uv_poll_t *h, int status, int events);

static const struct config_limits *limits(const struct up1 *x)
{
    return &x->w->srv->cfg->limits;
}

/* --- lifetime ----------------------------------------------------------------------------- */

static void timer_close_cb(uv_handle_t *h)
{
    free(h->data);
}

/* Releases |x| (s->be_data is already NULL): its upstream goes back to the pool when |reuse|,
 * else it is closed; the memory goes in the timer's close callback. */
static void up1_free(struct up1 *x, bool reuse)
{
    if (x->up != NULL) {
        x->up->owner = NULL;
        x->up->owner_cb = NULL;
        if (!reuse || !upstream_pool_put(x->w, x->up, x->index))
            upstream_upconn_close(x->up);
        x->up = NULL;
    }
    if (x->counted)
        atomic_fetch_sub(&x->w->srv->num_h2_upstreams, 1);
    x->counted = false;
    buf_free(&x->out);
    buf_free(&x->in);
    buf_free(&x->dec);
    uv_timer_stop(&x->timer);
    uv_close((uv_handle_t *)&x->timer, timer_close_cb);
}

/* The exchange ends with |status| (502, 503, 504) for the client. Only from an upstream event:
 * the stream is touched for that event's h2_flush_touched. */
static void up1_fail(struct up1 *x, int status)
{
    struct h2_stream *s = x->s;
    s->be_data = NULL;
    h2_stream_touch(s);
    h2_stream_failed(s, status);
    up1_free(x, false);
}

/* The response is complete: the upstream is reused only when nothing about it is in doubt. An
 * upstream that sent more than the response, or a body it should not have after HEAD, 204 or
 * 304 (which may still be on its way), or that got only part of the request, is not trusted
 * with another one (SECURITY 14). */
static void up1_done(struct up1 *x)
{
    struct h2_stream *s = x->s;
    bool reuse = x->resp_keep_alive && x->body.kind != BODY_EOF && !x->resp_bodiless &&
                 !x->up_eof && buf_used(&x->in) == 0 && x->req_sent;
    s->be_data = NULL;
    h2_stream_touch(s);
    h2_stream_response_end(s, NULL, 0);
    up1_free(x, reuse);
}

/* --- the timer: connect, response and inactivity timeouts --------------------------------- */

static uint64_t now_ms(const struct up1 *x)
{
    return uv_now(&x->w->loop);
}

static uint64_t up1_timeout(const struct up1 *x)
{
    const struct config_limits *lim = limits(x);
    if (x->connecting)
        return lim->upstream_connect_timeout_ms;
    if (x->req_sent && !x->head_done)
        return lim->upstream_response_timeout_ms;
    return lim->idle_timeout_ms;
}

static void up1_timer_cb(uv_timer_t *t)
{
    struct up1 *x = t->data;
    struct worker *w = x->w;
    uint64_t deadline = x->timer_base + up1_timeout(x), now = now_ms(x);
    if (now < deadline) {
        uv_timer_start(&x->timer, up1_timer_cb, deadline - now, 0);
        return;
    }
    if (x->connecting) {
        log_msg(LOG_LEVEL_WARN, "upstream_connect_failed", "listener %s: %s: connect timeout",
                x->s->c->lc->name, x->s->c->lc->upstream.text);
        metrics_upstream_error(x->index, METRICS_UP_CONNECT);
        up1_fail(x, 503);
    } else if (x->req_sent && !x->head_done) {
        metrics_upstream_error(x->index, METRICS_UP_TIMEOUT);
        up1_fail(x, 504);
    } else {
        /* Nothing moved for idle_timeout (the HTTP/1 path closes such a connection): a stream
         * whose response started is reset, one still waiting gets its 504. */
        up1_fail(x, x->head_done ? 502 : 504);
    }
    h2_flush_touched(w);
}

/* (Re)starts the timer for the current phase from now. Inactivity only moves the base; the
 * timer catches up when it fires. */
static void up1_arm(struct up1 *x)
{
    x->timer_base = now_ms(x);
    uv_timer_start(&x->timer, up1_timer_cb, up1_timeout(x), 0);
}

/* --- the socket --------------------------------------------------------------------------- */

static bool can_read(const struct up1 *x)
{
    return !x->connecting && !x->up_eof && (!x->head_done || !h2_stream_resp_full(x->s));
}

static void up1_update_poll(struct up1 *x)
{
    int ev = 0;
    if (x->connecting || x->write_blocked)
        ev |= UV_WRITABLE;
    if (can_read(x))
        ev |= UV_READABLE;
    upstream_watch(x->up, ev);
}

/* A new connection waits for writability; a pooled one stays watched for reading as the pool
 * left it (no epoll_ctl), and start() sends the request at once. */
static void up1_attach(struct up1 *x, struct upconn *up, bool connecting)
{
    x->up = up;
    up->owner = x;
    up->owner_cb = up1_poll_cb;
    x->connecting = connecting;
    x->write_blocked = connecting;
    up1_update_poll(x);
}

/* Connects anew (never from the pool). Returns 0 or a negative errno (logged). */
static int up1_dial(struct up1 *x)
{
    struct upconn *up = NULL;
    int r = upstream_dial(x->w, x->s->c->lc, &up);
    if (r < 0)
        return r;
    up1_attach(x, up, true);
    up1_arm(x);
    return 0;
}

/* A request that may be sent again on a fresh connection when a reused one closed before
 * answering (as http.c does, RFC 9110 9.2.2): idempotent, with no body, and not a byte of
 * answer came. */
static bool up1_try_replay(struct up1 *x)
{
    if (!x->reused || x->replayed || x->got_bytes || !x->req_idempotent || x->took_body ||
        x->req_chunked || x->data_left > 0)
        return false;
    log_msg(LOG_LEVEL_DEBUG, "upstream_retry",
            "listener %s: a reused upstream connection "
            "closed before answering; sending the request on a new one",
            x->s->c->lc->name);
    x->up->owner = NULL;
    x->up->owner_cb = NULL;
    upstream_upconn_close(x->up);
    x->up = NULL;
    x->replayed = true;
    x->reused = false;
    x->req_sent = false;
    x->up_eof = false;
    buf_free(&x->out);
    buf_free(&x->in);
    up1_request_head(x);
    if (up1_dial(x) < 0) {
        metrics_upstream_error(x->index, METRICS_UP_CONNECT);
        up1_fail(x, 503);
    }
    return true;
}

/* The upstream failed (a socket error, or it closed before the response was complete). */
static void up1_broken(struct up1 *x)
{
    if (up1_try_replay(x))
        return;
    metrics_upstream_error(x->index, METRICS_UP_RESET);
    up1_fail(x, 502);
}

/* Tells whether the whole request went out. */
static bool request_complete(const struct up1 *x)
{
    if (buf_used(&x->out) > 0 || x->data_left > 0)
        return false;
    return x->req_chunked ? x->req_terminated : true;
}

/* With the current body part sent (x->data_left 0), queues the framing of the next one in
 * x->out: a chunk of what s->req_body holds now, or the last chunk; the bytes themselves are
 * sent straight from s->req_body (x->data_left of them). */
static void frame_more(struct up1 *x)
{
    struct h2_stream *s = x->s;
    size_t avail = buf_used(&s->req_body);
    if (!x->req_chunked) {
        if (avail > 0) {
            /* More than the Content-Length (nghttp2 resets such a stream first): dropped. */
            buf_consume(&s->req_body, avail);
            h2_stream_req_taken(s, avail);
            x->changed = true;
        }
        return;
    }
    if (avail > 0) {
        buf_appendf(&x->out, "%zx\r\n", avail);
        x->data_left = avail;
    } else if (s->req_end && !x->req_terminated) {
        buf_appends(&x->out, "0\r\n\r\n"); /* request trailers are not for HTTP/1.1 */
        x->req_terminated = true;
    }
}

/* Sends what can be sent of the request: what x->out holds (head, chunk framing) and the body
 * bytes after it in one sendmsg. Returns 0 (done or blocked: x->write_blocked), or a negative
 * errno. Body bytes are taken from the stream only as the socket takes them, so a blocked
 * upstream stops the client's window. */
static int up1_send(struct up1 *x)
{
    struct h2_stream *s = x->s;
    x->write_blocked = false;
    for (;;) {
        if (x->data_left == 0)
            frame_more(x);
        size_t head = buf_used(&x->out);
        size_t body = (size_t)MIN((uint64_t)buf_used(&s->req_body), x->data_left);
        if (head == 0 && body == 0)
            break;
        struct iovec iov[2];
        int niov = 0;
        if (head > 0)
            iov[niov++] = (struct iovec){buf_data(&x->out), head};
        if (body > 0)
            iov[niov++] = (struct iovec){buf_data(&s->req_body), body};
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
        ssize_t n = sendmsg(x->up->fd, &m, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            x->write_blocked = true;
            return 0;
        }
        if (n <= 0)
            return n < 0 ? -errno : -EPIPE;
        x->timer_base = now_ms(x);
        size_t from_out = MIN((size_t)n, head), from_body = (size_t)n - from_out;
        buf_consume(&x->out, from_out);
        if (from_body == 0)
            continue;
        buf_consume(&s->req_body, from_body);
        h2_stream_req_taken(s, from_body);
        x->changed = true;
        x->took_body = true;
        x->data_left -= from_body;
        if (x->data_left == 0 && x->req_chunked)
            buf_append(&x->out, "\r\n", 2); /* goes out with the next chunk's size line */
    }
    if (!x->req_sent && request_complete(x)) {
        x->req_sent = true; /* upstream_response_timeout counts from here */
        up1_arm(x);
    }
    return 0;
}

/* Hands what x->in holds to the client side: the response head, then the body. Returns false
 * when the exchange ended (|x| is gone). */
static bool up1_parse(struct up1 *x)
{
    struct h2_stream *s = x->s;
    while (buf_used(&x->in) > 0) {
        if (!x->head_done) {
            int r = up1_response_head(x);
            if (r < 0) {
                metrics_upstream_error(x->index, METRICS_UP_FRAMING);
                up1_fail(x, 502);
                return false;
            }
            if (r == 0)
                return true; /* more of the head to come */
            if (!x->head_done)
                continue; /* an informational response, dropped; the real one follows */
            x->changed = true;
            if (x->body.kind == BODY_NONE) {
                up1_done(x);
                return false;
            }
            continue;
        }
        int r;
        if (x->body.kind == BODY_CHUNKED) {
            uint64_t count = 0;
            r = body_feed(&x->body, &x->in, &x->dec, &count);
            if (buf_used(&x->dec) > 0) {
                h2_stream_response_data(s, buf_data(&x->dec), buf_used(&x->dec));
                x->dec.off = x->dec.len = 0; /* kept for the next read: no malloc per read */
            }
        } else {
            /* Content-Length or until close: straight from the read buffer, no decoding. */
            size_t n = buf_used(&x->in);
            if (x->body.kind == BODY_LENGTH)
                n = (size_t)MIN((uint64_t)n, x->body.remaining);
            h2_stream_response_data(s, buf_data(&x->in), n);
            buf_consume(&x->in, n);
            if (x->body.kind == BODY_LENGTH)
                x->body.remaining -= n;
            r = x->body.kind == BODY_LENGTH && x->body.remaining == 0;
        }
        x->changed = true;
        if (r < 0) {
            metrics_upstream_error(x->index, METRICS_UP_FRAMING);
            up1_fail(x, 502);
            return false;
        }
        if (r == 1) {
            up1_done(x);
            return false;
        }
    }
    return true;
}

static void up1_eof(struct up1 *x)
{
    x->up_eof = true;
    if (x->head_done && x->body.kind == BODY_EOF) {
        up1_done(x);
        return;
    }
    up1_broken(x);
}

/* Reads the response. Returns false when the exchange ended. */
static bool up1_read(struct up1 *x)
{
    for (int i = 0; i < CONN_READS_PER_EVENT && can_read(x); i++) {
        /* Bodies stream: bigger reads. Heads read small, as in upstream.c. */
        size_t want = x->head_done ? CONN_STREAM_READ_SIZE : CONN_READ_SIZE;
        char *p = buf_reserve(&x->in, want);
        ssize_t n = recv(x->up->fd, p, want, 0);
        if (n > 0) {
            buf_commit(&x->in, (size_t)n);
            x->got_bytes = true;
            if (!up1_parse(x))
                return false;
            /* Inactivity counts bytes; upstream_response_timeout does not (a trickle of 1xx
             * heads would hold the stream forever), as in conn.c. */
            if (x->head_done || !x->req_sent)
                x->timer_base = now_ms(x);
            if ((size_t)n < want)
                break; /* drained */
            continue;
        }
        if (buf_used(&x->in) == 0)
            buf_free(&x->in);
        if (n == 0) {
            up1_eof(x);
            return false;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        up1_broken(x);
        return false;
    }
    return true;
}

/* One event of the upstream socket. Returns false when the exchange ended. */
static bool up1_event(struct up1 *x, int status, int events)
{
    if (status < 0)
        events |= UV_READABLE | UV_WRITABLE;
    if (x->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(x->up->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            log_msg(LOG_LEVEL_WARN, "upstream_connect_failed", "listener %s: %s: %s",
                    x->s->c->lc->name, x->s->c->lc->upstream.text, strerror(err));
            metrics_upstream_error(x->index, METRICS_UP_CONNECT);
            up1_fail(x, 503);
            return false;
        }
        x->connecting = false;
        up1_arm(x);
        events |= UV_WRITABLE;
    }
    if ((events & UV_WRITABLE) && up1_send(x) < 0) {
        up1_broken(x);
        return false;
    }
    if ((events & UV_READABLE) && !up1_read(x))
        return false;
    up1_update_poll(x);
    return true;
}

static void up1_poll_cb(uv_poll_t *h, int status, int events)
{
    struct upconn *up = h->data;
    struct up1 *x = up->owner;
    x->changed = false;
    if (up1_event(x, status, events) && x->changed)
        h2_stream_touch(x->s); /* the worker's check handle writes it after this round */
}

/* --- the backend -------------------------------------------------------------------------- */

/* Takes one of the upstream connections HTTP/2 streams may hold. A client connection holds at
 * most one upstream on HTTP/1.1, but each of its HTTP/2 streams one: without this bound, one
 * client with 100 streams per connection made certgate open 100 times limits.max_connections
 * sockets, until every listener ran out of file descriptors. Returns 0 or -EMFILE. */
static int up1_count(struct up1 *x)
{
    struct server *srv = x->w->srv;
    if (atomic_fetch_add(&srv->num_h2_upstreams, 1) >= srv->cfg->limits.max_connections) {
        atomic_fetch_sub(&srv->num_h2_upstreams, 1);
        log_msg(LOG_LEVEL_WARN, "upstream_connect_failed",
                "listener %s: %s: HTTP/2 streams hold limits.max_connections (%zu) upstream "
                "connections", x->s->c->lc->name, x->s->c->lc->upstream.text,
                (size_t)srv->cfg->limits.max_connections);
        return -EMFILE;
    }
    x->counted = true;
    return 0;
}

static int start(struct h2_stream *s)
{
    struct up1 *x = xcalloc(1, sizeof(*x));
    x->s = s;
    x->w = s->c->worker;
    x->index = s->c->index;
    uv_timer_init(&x->w->loop, &x->timer);
    x->timer.data = x;
    int r = up1_count(x);
    if (r == 0)
        r = up1_request_head(x);
    if (r == 0) {
        struct upconn *up = upstream_pool_take(x->w, x->index);
        if (up != NULL) {
            x->reused = true;
            up1_attach(x, up, false);
            up1_arm(x);
            /* Sent at once (a pooled socket is writable); an error shows again at the
             * writability event, where the stream may fail. */
            if (up1_send(x) < 0)
                x->write_blocked = true;
            up1_update_poll(x);
        } else {
            r = up1_dial(x); /* a failure: the client side counts it and answers 503 */
        }
    }
    if (r < 0) {
        up1_free(x, false);
        return r;
    }
    s->be_data = x;
    return 0;
}

/* The client side calls these from its own event (it flushes): they send, but never end the
 * exchange; an error waits for the socket event. */

static void req_more(struct h2_stream *s)
{
    struct up1 *x = s->be_data;
    if (x == NULL || x->connecting || x->write_blocked)
        return; /* the writability event sends it */
    if (up1_send(x) < 0)
        x->write_blocked = true;
    up1_update_poll(x);
}

static void resp_room(struct h2_stream *s)
{
    struct up1 *x = s->be_data;
    if (x == NULL)
        return;
    x->timer_base = now_ms(x);
    up1_update_poll(x);
}

static void abort_stream(struct h2_stream *s)
{
    struct up1 *x = s->be_data;
    if (x == NULL)
        return;
    s->be_data = NULL;
    up1_free(x, false); /* its response is half-read: never pooled */
}

const struct h2_backend h2_up1_backend = {start, req_more, resp_room, abort_stream};
