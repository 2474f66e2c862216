/* h2_upc_conn.c: the h2c upstream side, its connections: per worker and listener, a
 * non-blocking socket to the upstream (TCP or unix:) with an nghttp2 client session, driven by
 * its own uv_poll, and one timer for its connect timeout and its streams' response timeouts.
 * Every event ends in event_end, which closes what is over, resubmits refused streams and lets
 * the touched client connections write. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/base.h"
#include "core/config.h"
#include "core/log.h"
#include "h2/h2_upc_internal.h"
#include "net/conn.h"
#include "net/worker.h"
#include "upstream/upstream.h"

/* Frames gathered from nghttp2 before a write. */
#define UPC_OUT_HWM (64 * 1024)
#define UPC_READ_SIZE (16 * 1024)
/* Writes per event, so that one busy upstream cannot starve the worker. */
#define UPC_WRITES_PER_EVENT 16
/* Largest header block we send (nghttp2's default, 64 KiB, is less than a request head of
 * limits.max_request_head plus the client-certificate header certgate adds). */
#define UPC_MAX_SEND_HEADER_BLOCK (1024 * 1024)

static void poll_cb(uv_poll_t *h, int status, int events);
static void timer_cb(uv_timer_t *t);

const struct config_limits *h2_upc_conn_limits(const struct upc *u)
{
    return &u->w->srv->cfg->limits;
}

static const struct listener_config *listener(const struct upc *u)
{
    return &u->w->srv->cfg->listeners[u->index];
}

const char *h2_upc_conn_name(const struct upc *u)
{
    return listener(u)->name;
}

static uint64_t now_ms(const struct upc *u)
{
    return uv_now(&u->w->loop);
}

static void close_cb(uv_handle_t *h)
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
    h2_upc_streams_lost(u, status);
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
    uv_close((uv_handle_t *)&u->poll, close_cb);
    uv_close((uv_handle_t *)&u->timer, close_cb);
}

void h2_upc_conn_retire(struct upc *u)
{
    u->retiring = true;
    if (u->set->cur[u->index] == u)
        u->set->cur[u->index] = NULL;
}

void h2_upc_conn_update_poll(struct upc *u)
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

void h2_upc_conn_set_deadline(struct upc *u, struct upc_stream *us)
{
    if (us->head_seen)
        return;
    us->deadline = now_ms(u) + h2_upc_conn_limits(u)->upstream_response_timeout_ms;
    if (u->connected) /* else the connect timeout runs, and connected() arms this one */
        arm_timer(u, us->deadline);
}

void h2_upc_conn_set_stall(struct upc *u, struct upc_stream *us, bool held)
{
    if (!us->head_seen)
        return; /* the response timeout runs */
    if (!held) {
        us->deadline = 0;
        return;
    }
    us->deadline = now_ms(u) + h2_upc_conn_limits(u)->idle_timeout_ms;
    arm_timer(u, us->deadline);
}

static nghttp2_session *session_new(struct upc *u)
{
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    nghttp2_session *sess = NULL;
    if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
        abort(); /* out of memory */
    h2_upc_callbacks(cb);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_send_header_block_length(opt, UPC_MAX_SEND_HEADER_BLOCK);
    /* One stream until the upstream's SETTINGS say how many: nghttp2 would send 100, and a
     * server with a lower limit may answer the excess with a connection error (python-h2
     * does), not with the REFUSED_STREAM that we would retry. */
    nghttp2_option_set_peer_max_concurrent_streams(opt, 1);
    if (nghttp2_session_client_new2(&sess, cb, u, opt) != 0)
        abort();
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    const nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, UPC_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)h2_upc_conn_limits(u)->max_request_head},
    };
    nghttp2_submit_settings(sess, NGHTTP2_FLAG_NONE, settings, ARRAY_SIZE(settings));
    nghttp2_session_set_local_window_size(sess, NGHTTP2_FLAG_NONE, 0, UPC_CONN_WINDOW);
    return sess;
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
    u->sess = session_new(u);
    uv_poll_init(&w->loop, &u->poll, fd);
    u->poll.data = u;
    uv_timer_init(&w->loop, &u->timer);
    u->timer.data = u;
    u->next = set->all;
    if (set->all != NULL)
        set->all->prev = u;
    set->all = u;
    set->cur[index] = u;
    u->connect_deadline = now_ms(u) + h2_upc_conn_limits(u)->upstream_connect_timeout_ms;
    arm_timer(u, u->connect_deadline);
    h2_upc_conn_update_poll(u);
    return u;
}

struct upc *h2_upc_conn_get(struct worker *w, size_t index, int *err)
{
    struct upc_set *set = w->h2c;
    if (set == NULL) {
        set = xcalloc(1, sizeof(*set));
        set->num_listeners = w->srv->cfg->num_listeners;
        set->cur = xcalloc(set->num_listeners, sizeof(*set->cur));
        w->h2c = set;
    }
    if (set->cur[index] != NULL)
        return set->cur[index];
    return upc_new(w, set, index, err);
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
            h2_upc_streams_goaway(u);
        h2_upc_streams_promote(u); /* streams that wait for a slot (or for a new connection) */
        if (!u->lost && u->connected && !nghttp2_session_want_read(u->sess) &&
            !nghttp2_session_want_write(u->sess) && buf_used(&u->out) == 0)
            u->lost = u->goaway ? "GOAWAY" : "HTTP/2 protocol error";
        if (u->lost) {
            /* An idle connection the upstream closed is no news; streams cut off are. */
            if (u->num_live > 0)
                log_msg(LOG_LEVEL_WARN, "upstream_h2c_lost",
                        "listener %s: %s: %s with %zu streams in flight", listener(u)->name,
                        listener(u)->upstream.text, u->lost, u->num_live);
            upc_close(u, 502);
        } else if (u->retiring && u->num_live == 0)
            upc_close(u, 502); /* no live stream left to fail */
        else
            h2_upc_conn_update_poll(u);
    }
    h2_upc_streams_retry(w, set); /* the worker's check handle writes what was touched */
}

static void upc_send(struct upc *u)
{
    for (int i = 0; i < UPC_WRITES_PER_EVENT && !u->lost; i++) {
        while (buf_used(&u->out) < UPC_OUT_HWM) {
            const uint8_t *p = NULL;
            ssize_t n = nghttp2_session_mem_send(u->sess, &p);
            if (n < 0) {
                u->lost = nghttp2_strerror((int)n);
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
        u->lost = strerror(errno);
    }
}

static void upc_read(struct upc *u)
{
    for (int i = 0; i < CONN_READS_PER_EVENT && !u->lost; i++) {
        uint8_t in[UPC_READ_SIZE];
        ssize_t n = recv(u->fd, in, sizeof(in), 0);
        if (n > 0) {
            ssize_t r = nghttp2_session_mem_recv(u->sess, in, (size_t)n);
            if (r < 0)
                u->lost = nghttp2_strerror((int)r);
            if ((size_t)n < sizeof(in))
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        u->lost = n == 0 ? "connection closed" : strerror(errno);
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
    uint64_t due = h2_upc_streams_expire(u, now);
    if (due != 0)
        arm_timer(u, due);
    upc_send(u);
    event_end(w);
}

void h2_upc_close_all(struct worker *w)
{
    struct upc_set *set = w->h2c;
    if (set == NULL)
        return;
    while (set->all != NULL)
        upc_close(set->all, 502);
    h2_upc_streams_close_all(set);
    free(set->cur);
    free(set);
    w->h2c = NULL;
}
