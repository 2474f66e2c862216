/* upstream.c: the connection's side towards the application: connecting (or taking an idle
 * kept-alive connection from the worker's pool), moving bytes between the upstream socket and the
 * connection's buffers, and 502/503 when the upstream fails. The connect and response timeouts
 * (503/504) fire from conn.c's one timer per connection. */
#include "upstream/upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/base.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/conn.h"
#include "net/worker.h"

static void up_poll_cb(uv_poll_t *h, int status, int events);
static void up_read(struct conn *c);

static void up_close_cb(uv_handle_t *h)
{
    struct upconn *up = h->data;
    close(up->fd);
    free(up);
}

void upstream_close(struct conn *c)
{
    if (c->up == NULL)
        return;
    uv_poll_stop(&c->up->poll);
    c->up->c = NULL;
    uv_close((uv_handle_t *)&c->up->poll, up_close_cb);
    c->up = NULL;
    c->up_state = UP_NONE;
    c->up_eof = false;
    c->up_write_blocked = false;
    c->up_shut_wr = false;
    buf_free(&c->uin);
    llhttp_reset(&c->ex.resp_parser);
}

void upstream_watch(struct upconn *up, int events)
{
    if (events == up->events)
        return;
    up->events = events;
    if (events != 0)
        uv_poll_start(&up->poll, events, up_poll_cb);
    else
        uv_poll_stop(&up->poll);
}

/* --- the worker's pool of idle upstream connections --------------------------------------- */

static void pool_unlink(struct worker *w, struct upconn *up)
{
    for (struct upconn **pp = &w->up_pool; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == up) {
            *pp = up->next;
            w->num_up_pool--;
            return;
        }
    }
}

bool upstream_pool_put(struct worker *w, struct upconn *up, size_t index)
{
    if (w->draining || w->num_up_pool >= UPSTREAM_POOL_MAX)
        return false;
    up->c = NULL;
    up->owner = NULL;
    up->owner_cb = NULL;
    up->index = index;
    up->next = w->up_pool;
    w->up_pool = up;
    w->num_up_pool++;
    upstream_watch(up, UV_READABLE); /* any byte or EOF from an idle upstream retires it */
    return true;
}

/* Parks the connection's idle upstream for the next request of any client connection of this
 * listener: a new request costs no connect(2), and idle clients hold no upstream. */
static bool pool_put(struct conn *c)
{
    if (c->lc->mode != LISTENER_HTTP || !upstream_pool_put(c->worker, c->up, c->index))
        return false;
    c->up = NULL;
    c->up_state = UP_NONE;
    return true;
}

/* Tells whether |c|'s request may be sent again if its upstream closes before answering. */
static bool replayable(const struct conn *c)
{
    return c->ex.req_idempotent && c->ex.req_body.kind == BODY_NONE && !c->ex.req_upgrade;
}

/* The peek: the read watch retires a pooled upstream that spoke or closed only when its event
 * is handled, and that event may wait behind this client's in the same loop round. A
 * connection holding bytes nobody asked for would serve them as this request's answer
 * (another client's, or stray bytes past a Content-Length), so it is retired here, for every
 * request, replayable or not. */
struct upconn *upstream_pool_take(struct worker *w, size_t index)
{
    struct upconn *up = w->up_pool;
    while (up != NULL) {
        struct upconn *next = up->next;
        if (up->index == index) {
            pool_unlink(w, up);
            char probe;
            ssize_t n = recv(up->fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return up;
            uv_close((uv_handle_t *)&up->poll, up_close_cb); /* closed or talking: retire */
        }
        up = next;
    }
    return NULL;
}

/* Takes an idle upstream of |c|'s listener from the pool. */
static struct upconn *pool_take(struct conn *c)
{
    struct upconn *up = upstream_pool_take(c->worker, c->index);
    if (up != NULL)
        up->c = c; /* still watched for reading, which the exchange wants too: no epoll_ctl */
    return up;
}

void upstream_upconn_close(struct upconn *up)
{
    uv_poll_stop(&up->poll);
    up->c = NULL;
    uv_close((uv_handle_t *)&up->poll, up_close_cb);
}

void upstream_pool_close_all(struct worker *w)
{
    while (w->up_pool != NULL) {
        struct upconn *up = w->up_pool;
        w->up_pool = up->next;
        uv_close((uv_handle_t *)&up->poll, up_close_cb);
    }
    w->num_up_pool = 0;
}

void upstream_exchange_done(struct conn *c)
{
    /* Reusable: the response was complete and nothing else came (response_done), and the whole
     * request went out (an upstream that answered early may still expect body bytes). */
    bool idle_up = c->up != NULL && c->ex.up_reusable && c->up_state == UP_OPEN && !c->up_eof &&
                   buf_used(&c->uout) == 0 && buf_used(&c->uin) == 0;
    if (!idle_up || !pool_put(c))
        upstream_close(c);
    buf_free(&c->uout); /* what the closed upstream did not take is not for the next one */
}

/* --- connecting, reading and writing ------------------------------------------------------ */

/* PROXY protocol v2 header: who the client is, for a relay upstream. When the client came
 * through a balancer that sent its own PROXY header, both addresses are the ones it named. */
static void proxy_v2_header(struct conn *c, struct buf *out)
{
    struct sockaddr_storage src = {0}, dst = {0};
    socklen_t sl = 0, dl = sizeof(dst);
    static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    buf_append(out, sig, sizeof(sig));
    const struct sockaddr *client = conn_client_addr(c, &sl);
    memcpy(&src, client, sl);
    bool have_dst = true;
    if (c->pp != NULL)
        memcpy(&dst, &c->pp->dst, sizeof(c->pp->dst));
    else
        have_dst = getsockname(c->fd, (struct sockaddr *)&dst, &dl) == 0;
    if (sl == 0 || !have_dst || src.ss_family != dst.ss_family ||
        (src.ss_family != AF_INET && src.ss_family != AF_INET6)) {
        const uint8_t local[4] = {0x20, 0x00, 0x00, 0x00}; /* LOCAL, UNSPEC */
        buf_append(out, local, sizeof(local));
        return;
    }
    if (src.ss_family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&src, *d4 = (struct sockaddr_in *)&dst;
        const uint8_t hdr[4] = {0x21, 0x11, 0x00, 12};
        buf_append(out, hdr, sizeof(hdr));
        buf_append(out, &s4->sin_addr, 4);
        buf_append(out, &d4->sin_addr, 4);
        buf_append(out, &s4->sin_port, 2);
        buf_append(out, &d4->sin_port, 2);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&src, *d6 = (struct sockaddr_in6 *)&dst;
        const uint8_t hdr[4] = {0x21, 0x21, 0x00, 36};
        buf_append(out, hdr, sizeof(hdr));
        buf_append(out, &s6->sin6_addr, 16);
        buf_append(out, &d6->sin6_addr, 16);
        buf_append(out, &s6->sin6_port, 2);
        buf_append(out, &d6->sin6_port, 2);
    }
}

/* A kept-alive upstream may close an idle connection just as a request goes out on it. A
 * bodiless idempotent request (RFC 9110 9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) that got
 * no byte of answer is sent once more on a fresh connection, as nginx does; anything else, a
 * bodiless POST or PATCH included, gets its 502: the upstream may have acted on it. */
static bool try_replay(struct conn *c)
{
    if (c->state != CONN_PROXY || buf_used(&c->ex.replay) == 0 || c->ex.resp_sent ||
        buf_used(&c->uin) > 0)
        return false;
    upstream_close(c);
    buf_free(&c->uout);
    c->uout = c->ex.replay;
    memset(&c->ex.replay, 0, sizeof(c->ex.replay));
    c->ex.replayed = true;
    log_msg(LOG_LEVEL_DEBUG, "upstream_retry",
            "listener %s: a reused upstream connection "
            "closed before answering; sending the request on a new one",
            c->lc->name);
    return upstream_connect(c) == 0;
}

static void upstream_failed(struct conn *c, int status)
{
    if (status == 502 && try_replay(c))
        return;
    if (c->state == CONN_PROXY || c->state == CONN_TUNNEL)
        metrics_upstream_error(c->index, status == 503 ? METRICS_UP_CONNECT : METRICS_UP_RESET);
    if (c->lc->mode == LISTENER_HTTP && c->state == CONN_PROXY) {
        conn_error(c, status);
        return;
    }
    conn_close(c);
}

static void up_poll_cb(uv_poll_t *h, int status, int events)
{
    struct upconn *up = h->data;
    struct conn *c = up->c;
    if (c == NULL && up->owner != NULL) {
        up->owner_cb(h, status, events);
        return;
    }
    if (c == NULL) {
        /* A pooled upstream spoke or closed: it cannot take a request any more. */
        pool_unlink(up->worker, up);
        uv_poll_stop(&up->poll);
        uv_close((uv_handle_t *)&up->poll, up_close_cb);
        return;
    }
    if (status < 0)
        events |= UV_READABLE | UV_WRITABLE;
    if (c->up_state == UP_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(up->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            log_msg(LOG_LEVEL_WARN, "upstream_connect_failed", "listener %s: %s: %s", c->lc->name,
                    c->lc->upstream.text, strerror(err));
            upstream_failed(c, 503);
            conn_event_end(c);
            return;
        }
        c->up_state = UP_OPEN;
        c->timer_base = conn_now_ms(c);
        conn_arm_timer(c);
        events |= UV_WRITABLE;
    }
    if (events & UV_WRITABLE)
        upstream_flush(c);
    if (c->up == up && (events & UV_READABLE))
        up_read(c);
    conn_event_end(c);
}

int upstream_socket_connect(const struct config_endpoint *ep)
{
    int family = ep->unix_path ? AF_UNIX : ep->addr.ss_family;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int r;
    if (ep->unix_path != NULL) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", ep->unix_path);
        r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    } else {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        r = connect(fd, (const struct sockaddr *)&ep->addr, ep->addr_len);
    }
    if (r != 0 && errno != EINPROGRESS && errno != EAGAIN) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int upstream_dial(struct worker *w, const struct listener_config *lc, struct upconn **out)
{
    int fd = upstream_socket_connect(&lc->upstream);
    if (fd < 0) {
        log_msg(LOG_LEVEL_WARN, "upstream_connect_failed", "listener %s: %s: %s", lc->name,
                lc->upstream.text, strerror(-fd));
        return fd;
    }
    struct upconn *up = xcalloc(1, sizeof(*up));
    up->worker = w;
    up->fd = fd;
    uv_poll_init(&w->loop, &up->poll, fd);
    up->poll.data = up;
    *out = up;
    return 0;
}

int upstream_connect(struct conn *c)
{
    c->timer_base = conn_now_ms(c);
    bool reused = false;
    if (c->up_state == UP_NONE && c->lc->mode == LISTENER_HTTP && !c->ex.replayed) {
        struct upconn *up = pool_take(c);
        if (up != NULL) {
            c->up = up;
            c->up_state = UP_OPEN;
            reused = true;
        }
    }
    if (reused && replayable(c))
        buf_append(&c->ex.replay, buf_data(&c->uout), buf_used(&c->uout));
    if (c->up_state != UP_NONE) {
        conn_arm_timer(c);
        return 0; /* conn_event_end writes the request */
    }
    struct upconn *up = NULL;
    int r = upstream_dial(c->worker, c->lc, &up);
    if (r < 0) {
        upstream_failed(c, 503);
        return r;
    }
    up->c = c;
    c->up = up;
    c->up_state = UP_CONNECTING;
    if (c->lc->proxy_protocol) {
        struct buf hdr = {0};
        proxy_v2_header(c, &hdr);
        buf_append(&hdr, buf_data(&c->uout), buf_used(&c->uout));
        buf_free(&c->uout);
        c->uout = hdr;
    }
    conn_arm_timer(c);
    return 0;
}

void upstream_flush(struct conn *c)
{
    if (c->up == NULL || c->up_state != UP_OPEN)
        return;
    while (buf_used(&c->uout) > 0) {
        ssize_t n = send(c->up->fd, buf_data(&c->uout), buf_used(&c->uout), MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(&c->uout, (size_t)n);
            conn_activity(c);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->up_write_blocked = true;
            return;
        }
        upstream_failed(c, 502);
        return;
    }
    c->up_write_blocked = false;
    if (c->state == CONN_TUNNEL && c->client_eof && !c->up_shut_wr) {
        shutdown(c->up->fd, SHUT_WR);
        c->up_shut_wr = true;
    }
}

static bool can_read_up(struct conn *c)
{
    if (c->up == NULL || c->up_state != UP_OPEN || c->up_eof)
        return false;
    switch (c->state) {
    case CONN_PROXY:
    case CONN_TUNNEL:
        return buf_used(&c->cout) < CONN_HWM;
    default:
        return false;
    }
}

static void up_eof(struct conn *c)
{
    c->up_eof = true;
    switch (c->state) {
    case CONN_PROXY:
        if (!try_replay(c))
            conn_handlers()->http_upstream_eof(c);
        break;
    case CONN_TUNNEL:
        conn_tunnel_maybe_done(c);
        break;
    default:
        upstream_close(c);
        break;
    }
}

static void up_read(struct conn *c)
{
    for (int i = 0; i < CONN_READS_PER_EVENT && can_read_up(c); i++) {
        struct buf *dst = c->state == CONN_TUNNEL ? &c->cout : &c->uin;
        /* Bodies and tunnels stream: bigger reads, fewer system calls (the queue is still
         * bounded by CONN_HWM plus one read). Heads and idle connections read small. */
        size_t want = c->state == CONN_TUNNEL || c->ex.resp_head_done ? CONN_STREAM_READ_SIZE
                                                                      : CONN_READ_SIZE;
        char *p = buf_reserve(dst, want);
        ssize_t n = recv(c->up->fd, p, want, 0);
        if (n > 0) {
            buf_commit(dst, (size_t)n);
            conn_activity(c);
            if (c->state == CONN_PROXY)
                conn_handlers()->http_response(c); /* records; conn_event_end writes */
            else
                c->bytes_out += (uint64_t)n;
            if ((size_t)n < want)
                return; /* drained */
            continue;
        }
        if (buf_used(dst) == 0)
            buf_free(dst);
        if (n == 0) {
            up_eof(c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        upstream_failed(c, 502);
        return;
    }
}

void upstream_update_poll(struct conn *c)
{
    if (c->up == NULL)
        return;
    int uev = 0;
    if (c->up_state == UP_CONNECTING)
        uev = UV_WRITABLE;
    else {
        if (can_read_up(c))
            uev |= UV_READABLE;
        if (c->up_write_blocked)
            uev |= UV_WRITABLE;
    }
    upstream_watch(c->up, uev);
}
