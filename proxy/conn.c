/* conn.c: one client connection's state machine. The client socket is driven with uv_poll and
 * BoringSSL reads and writes it directly (no memory BIOs, no copies); the upstream socket is a
 * plain non-blocking socket. One timer per connection carries the timeout of the current state.
 * Memory is freed only in the last close callback. */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base.h"
#include "http.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "tls.h"

#define LINGER_MS 2000
#define READS_PER_EVENT 8

static void client_read(struct conn *c);
static void client_flush(struct conn *c);
static void up_read(struct conn *c);
static void up_flush(struct conn *c);
static void update_polls(struct conn *c);
static void arm_timer(struct conn *c);
static void conn_close(struct conn *c);

static const struct config_limits *limits(struct conn *c)
{
    return &c->worker->srv->cfg->limits;
}

static uint64_t now_ms(struct conn *c)
{
    return uv_now(&c->worker->loop);
}

void conn_set_state(struct conn *c, enum conn_state to)
{
    /* The transitions the design allows; anything else is a bug. */
    switch (to) {
    case CONN_HEAD:
        ASSERT_TRANSITION(c->state == CONN_HANDSHAKE || c->state == CONN_PROXY);
        break;
    case CONN_PROXY:
        ASSERT_TRANSITION(c->state == CONN_HEAD);
        break;
    case CONN_TUNNEL:
        ASSERT_TRANSITION(c->state == CONN_HANDSHAKE || c->state == CONN_PROXY ||
                          c->state == CONN_TUNNEL);
        break;
    case CONN_FLUSH:
        ASSERT_TRANSITION(c->state != CONN_CLOSING);
        break;
    case CONN_CLOSING:
        c->state = to;
        return; /* no timer: the handles are closing */
    default:
        break;
    }
    c->state = to;
    c->timer_base = now_ms(c);
    arm_timer(c);
}

/* --- access log ---------------------------------------------------------------------------- */

static void upstream_text(struct conn *c, struct buf *b)
{
    log_str(b, "upstream", c->lc->upstream.text);
}

static void access_log(struct conn *c)
{
    if (c->lc->mode == LISTENER_HTTP) {
        uint64_t start = c->req_start ? c->req_start : c->start;
        metrics_request(c->index, c->status, (base_now_ms() - start) * 1000);
    }
    if (!c->worker->srv->cfg->log_access)
        return;
    struct buf b = {0};
    log_begin(&b, LOG_LEVEL_INFO, "access");
    log_str(&b, "listener", c->lc->name);
    log_str(&b, "tenant", c->ssl != NULL && c->state != CONN_HANDSHAKE ? tls_tenant(c->ssl) : NULL);
    if (c->ssl != NULL && c->client_subject == NULL && c->state != CONN_HANDSHAKE)
        c->client_subject = tls_peer_subject(c->ssl);
    log_str(&b, "subject", c->client_subject);
    if (c->lc->mode == LISTENER_HTTP) {
        const char *mp = c->method_path ? c->method_path : "";
        const char *sp = strchr(mp, ' ');
        log_strn(&b, "method", mp, sp ? (size_t)(sp - mp) : strlen(mp));
        log_str(&b, "path", sp ? sp + 1 : NULL);
        log_num(&b, "status", c->status);
    } else {
        log_str(&b, "method", NULL);
        log_str(&b, "path", NULL);
        log_str(&b, "status", NULL);
    }
    log_num(&b, "bytes_in", (long long)c->bytes_in);
    log_num(&b, "bytes_out", (long long)c->bytes_out);
    uint64_t start = c->lc->mode == LISTENER_HTTP ? c->req_start : c->start;
    log_num(&b, "duration_ms", (long long)(base_now_ms() - start));
    upstream_text(c, &b);
    log_str(&b, "tls_version", c->ssl ? tls_version(c->ssl) : NULL);
    log_end(&b);
}

/* --- timers -------------------------------------------------------------------------------- */

static uint64_t state_timeout(struct conn *c)
{
    const struct config_limits *lim = limits(c);
    switch (c->state) {
    case CONN_HANDSHAKE:
        return lim->handshake_timeout_ms;
    case CONN_HEAD:
        if (c->head_started || c->num_requests == 0)
            return lim->request_head_timeout_ms;
        return lim->idle_timeout_ms;
    case CONN_PROXY:
        if (c->up_state == UP_CONNECTING)
            return lim->upstream_connect_timeout_ms;
        if (!c->resp_head_done && c->req_done)
            return lim->upstream_response_timeout_ms;
        return lim->idle_timeout_ms;
    case CONN_TUNNEL:
        if (c->up_state == UP_CONNECTING)
            return lim->upstream_connect_timeout_ms;
        return lim->idle_timeout_ms;
    case CONN_FLUSH:
        return c->lingering ? LINGER_MS : lim->idle_timeout_ms;
    default:
        return 0;
    }
}

static void on_timeout(struct conn *c)
{
    switch (c->state) {
    case CONN_HANDSHAKE:
        metrics_handshake(c->index, METRICS_HS_ERROR);
        break;
    case CONN_HEAD:
        if (c->head_started && buf_used(&c->cin) > 0) {
            conn_error(c, 408);
            return;
        }
        break;
    case CONN_PROXY:
        if (c->up_state == UP_CONNECTING) {
            metrics_upstream_error(c->index, METRICS_UP_CONNECT);
            conn_error(c, 503);
            return;
        }
        if (!c->resp_head_done) {
            metrics_upstream_error(c->index, METRICS_UP_TIMEOUT);
            conn_error(c, 504);
            return;
        }
        break;
    default:
        break;
    }
    conn_close(c);
}

static void timer_cb(uv_timer_t *t)
{
    struct conn *c = t->data;
    uint64_t deadline = c->timer_base + state_timeout(c);
    uint64_t now = now_ms(c);
    if (now < deadline) {
        uv_timer_start(&c->timer, timer_cb, deadline - now, 0);
        return;
    }
    on_timeout(c);
}

static void arm_timer(struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    uint64_t deadline = c->timer_base + state_timeout(c);
    uint64_t now = now_ms(c);
    uv_timer_start(&c->timer, timer_cb, deadline > now ? deadline - now : 0, 0);
}

/* Streaming states time out on inactivity: moving the base is enough, the timer catches up. */
static void activity(struct conn *c)
{
    bool awaiting_head = c->state == CONN_PROXY && c->req_done && !c->resp_head_done;
    if (c->state == CONN_TUNNEL || (c->state == CONN_PROXY && !awaiting_head))
        c->timer_base = now_ms(c);
}

/* --- upstream ------------------------------------------------------------------------------ */

static void up_poll_cb(uv_poll_t *h, int status, int events);

static void up_close_cb(uv_handle_t *h)
{
    struct upconn *up = h->data;
    close(up->fd);
    free(up);
}

static void close_upstream(struct conn *c)
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
    llhttp_reset(&c->resp_parser);
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

/* Parks the connection's idle upstream for the next client connection of this listener, so
 * that a gateway's reconnect costs no connect(2). */
static bool pool_put(struct conn *c)
{
    struct worker *w = c->worker;
    struct upconn *up = c->up;
    if (w->draining || w->num_up_pool >= CONN_UP_POOL_MAX || c->lc->mode != LISTENER_HTTP)
        return false;
    up->c = NULL;
    up->index = c->index;
    up->next = w->up_pool;
    w->up_pool = up;
    w->num_up_pool++;
    up->events = UV_READABLE; /* any byte or EOF from an idle upstream retires it */
    uv_poll_start(&up->poll, UV_READABLE, up_poll_cb);
    c->up = NULL;
    c->up_state = UP_NONE;
    return true;
}

static struct upconn *pool_take(struct conn *c)
{
    struct worker *w = c->worker;
    struct upconn *up = w->up_pool;
    while (up != NULL) {
        struct upconn *next = up->next;
        if (up->index == c->index) {
            pool_unlink(w, up);
            char probe;
            ssize_t n = recv(up->fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                uv_poll_stop(&up->poll);
                up->events = 0;
                up->c = c;
                return up;
            }
            uv_close((uv_handle_t *)&up->poll, up_close_cb); /* closed or talking: retire */
        }
        up = next;
    }
    return NULL;
}

void conn_pool_close_all(struct worker *w)
{
    while (w->up_pool != NULL) {
        struct upconn *up = w->up_pool;
        w->up_pool = up->next;
        uv_close((uv_handle_t *)&up->poll, up_close_cb);
    }
    w->num_up_pool = 0;
}

/* PROXY protocol v2 header: who the client is, for a relay upstream. */
static void proxy_v2_header(struct conn *c, struct buf *out)
{
    struct sockaddr_storage src, dst;
    socklen_t sl = sizeof(src), dl = sizeof(dst);
    static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    buf_append(out, sig, sizeof(sig));
    if (getpeername(c->fd, (struct sockaddr *)&src, &sl) != 0 ||
        getsockname(c->fd, (struct sockaddr *)&dst, &dl) != 0 || src.ss_family != dst.ss_family ||
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
 * bodiless request that got no byte of answer is sent once more on a fresh connection, as
 * nginx does; anything else gets its 502. */
static bool try_replay(struct conn *c)
{
    if (c->state != CONN_PROXY || buf_used(&c->replay) == 0 || c->resp_sent ||
        buf_used(&c->uin) > 0)
        return false;
    close_upstream(c);
    buf_free(&c->uout);
    c->uout = c->replay;
    memset(&c->replay, 0, sizeof(c->replay));
    c->replayed = true;
    log_msg(LOG_LEVEL_DEBUG, "upstream_retry", "listener %s: a reused upstream connection "
            "closed before answering; sending the request on a new one", c->lc->name);
    return conn_upstream_connect(c) == 0;
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
    if (c->state == CONN_HEAD) {
        close_upstream(c); /* an idle kept-alive upstream went away */
        update_polls(c);
        return;
    }
    conn_close(c);
}

static void up_poll_cb(uv_poll_t *h, int status, int events)
{
    struct upconn *up = h->data;
    struct conn *c = up->c;
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
            log_msg(LOG_LEVEL_WARN, "upstream_connect_failed", "listener %s: %s: %s",
                    c->lc->name, c->lc->upstream.text, strerror(err));
            upstream_failed(c, 503);
            return;
        }
        c->up_state = UP_OPEN;
        c->timer_base = now_ms(c);
        arm_timer(c);
        events |= UV_WRITABLE;
    }
    if (events & UV_WRITABLE)
        up_flush(c);
    if (c->state != CONN_CLOSING && c->up != NULL && (events & UV_READABLE))
        up_read(c);
    if (c->state != CONN_CLOSING)
        update_polls(c);
}

int conn_upstream_connect(struct conn *c)
{
    c->timer_base = now_ms(c);
    bool reused = c->up_state == UP_OPEN && c->up_idle;
    c->up_idle = false;
    if (c->up_state == UP_NONE && c->lc->mode == LISTENER_HTTP && !c->replayed) {
        struct upconn *up = pool_take(c);
        if (up != NULL) {
            c->up = up;
            c->up_state = UP_OPEN;
            reused = true;
        }
    }
    if (reused && !c->replayed && c->req_body.kind == BODY_NONE && !c->req_upgrade)
        buf_append(&c->replay, buf_data(&c->uout), buf_used(&c->uout));
    if (c->up_state != UP_NONE) {
        arm_timer(c);
        up_flush(c);
        update_polls(c);
        return 0;
    }
    const struct config_endpoint *ep = &c->lc->upstream;
    int family = ep->unix_path ? AF_UNIX : ep->addr.ss_family;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        upstream_failed(c, 503);
        return -errno;
    }
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
        log_msg(LOG_LEVEL_WARN, "upstream_connect_failed", "listener %s: %s: %s", c->lc->name,
                ep->text, strerror(e));
        upstream_failed(c, 503);
        return -e;
    }
    struct upconn *up = xcalloc(1, sizeof(*up));
    up->c = c;
    up->worker = c->worker;
    up->fd = fd;
    uv_poll_init(&c->worker->loop, &up->poll, fd);
    up->poll.data = up;
    c->up = up;
    c->up_state = UP_CONNECTING;
    if (c->lc->proxy_protocol) {
        struct buf hdr = {0};
        proxy_v2_header(c, &hdr);
        buf_append(&hdr, buf_data(&c->uout), buf_used(&c->uout));
        buf_free(&c->uout);
        c->uout = hdr;
    }
    arm_timer(c);
    update_polls(c);
    return 0;
}

static void up_flush(struct conn *c)
{
    if (c->up == NULL || c->up_state != UP_OPEN)
        return;
    while (buf_used(&c->uout) > 0) {
        ssize_t n = send(c->up->fd, buf_data(&c->uout), buf_used(&c->uout), MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(&c->uout, (size_t)n);
            activity(c);
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
    case CONN_HEAD:
        return true; /* an idle upstream: notice when it closes */
    default:
        return false;
    }
}

static void tunnel_maybe_done(struct conn *c)
{
    if (c->state != CONN_TUNNEL)
        return;
    if (c->up_eof && buf_used(&c->cout) == 0 && !c->client_shut_wr) {
        c->client_shut_wr = true;
        if (c->ssl != NULL)
            tls_shutdown(c->ssl);
        else
            shutdown(c->fd, SHUT_WR);
    }
    if (c->up_eof && c->client_eof && buf_used(&c->cout) == 0 && buf_used(&c->uout) == 0)
        conn_close(c);
}

static void up_eof(struct conn *c)
{
    c->up_eof = true;
    switch (c->state) {
    case CONN_PROXY:
        if (!try_replay(c))
            http_upstream_eof(c);
        break;
    case CONN_TUNNEL:
        tunnel_maybe_done(c);
        break;
    default:
        close_upstream(c);
        break;
    }
}

static void up_read(struct conn *c)
{
    for (int i = 0; i < READS_PER_EVENT && can_read_up(c); i++) {
        struct buf *dst = c->state == CONN_TUNNEL ? &c->cout : &c->uin;
        /* Bodies and tunnels stream: bigger reads, fewer system calls (the queue is still
         * bounded by CONN_HWM plus one read). Heads and idle connections read small. */
        size_t want = c->state == CONN_TUNNEL || c->resp_head_done ? CONN_STREAM_READ_SIZE
                                                                   : CONN_READ_SIZE;
        char *p = buf_reserve(dst, want);
        ssize_t n = recv(c->up->fd, p, want, 0);
        if (n > 0) {
            buf_commit(dst, (size_t)n);
            activity(c);
            if (c->state == CONN_PROXY) {
                http_response_process(c);
            } else if (c->state == CONN_HEAD) {
                close_upstream(c); /* bytes nobody asked for */
                return;
            } else {
                c->bytes_out += (uint64_t)n;
            }
            if (c->state == CONN_CLOSING)
                return;
            client_flush(c);
            if (c->state == CONN_CLOSING)
                return;
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

/* --- client -------------------------------------------------------------------------------- */

static bool can_read_client(struct conn *c)
{
    if (c->client_eof)
        return false;
    switch (c->state) {
    case CONN_HEAD:
        return buf_used(&c->cin) <= limits(c)->max_request_head;
    case CONN_PROXY:
        /* After the request, keep the socket readable: a pipelined request is buffered
         * (bounded like a head) instead of turning the poll off and on for every request. */
        if (c->req_done)
            return buf_used(&c->cin) <= limits(c)->max_request_head;
        return buf_used(&c->uout) < CONN_HWM;
    case CONN_TUNNEL:
        return buf_used(&c->uout) < CONN_HWM;
    case CONN_FLUSH:
        return c->lingering;
    default:
        return false;
    }
}

static void client_eof(struct conn *c)
{
    c->client_eof = true;
    switch (c->state) {
    case CONN_PROXY:
        if (!c->req_done) {
            conn_close(c); /* the client gave up half-way through its request */
            return;
        }
        c->close_after = true;
        break;
    case CONN_TUNNEL:
        if (buf_used(&c->uout) == 0 && c->up != NULL && c->up_state == UP_OPEN &&
            !c->up_shut_wr) {
            shutdown(c->up->fd, SHUT_WR);
            c->up_shut_wr = true;
        }
        tunnel_maybe_done(c);
        break;
    default:
        conn_close(c);
        break;
    }
}

static void client_read(struct conn *c)
{
    c->client_read_wants_write = false;
    for (int i = 0; i < READS_PER_EVENT && can_read_client(c); i++) {
        if (c->state == CONN_FLUSH) {
            char discard[4096];
            ssize_t n = recv(c->fd, discard, sizeof(discard), 0);
            if (n > 0)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            conn_close(c);
            return;
        }
        struct buf *dst = c->state == CONN_TUNNEL ? &c->uout : &c->cin;
        char *p = buf_reserve(dst, CONN_READ_SIZE);
        int n;
        if (c->ssl != NULL) {
            n = tls_read(c->ssl, p, CONN_READ_SIZE);
        } else {
            ssize_t r = recv(c->fd, p, CONN_READ_SIZE, 0);
            n = r > 0 ? (int)r : r == 0 ? TLS_EOF
                      : (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? TLS_WANT_READ
                                                                                    : TLS_ERROR;
        }
        if (n > 0) {
            buf_commit(dst, (size_t)n);
            activity(c);
            if (c->state == CONN_HEAD && !c->head_started) {
                c->head_started = true;
                c->timer_base = now_ms(c);
                arm_timer(c);
            }
            if (c->state == CONN_TUNNEL)
                c->bytes_in += (uint64_t)n;
            else
                http_request_process(c);
            if (c->state == CONN_CLOSING)
                return;
            up_flush(c);
            if (c->state == CONN_CLOSING)
                return;
            /* A short read drained the socket: the next read would only say EAGAIN. */
            if ((size_t)n < CONN_READ_SIZE && (c->ssl == NULL || !tls_pending(c->ssl)))
                return;
            continue;
        }
        if (buf_used(dst) == 0)
            buf_free(dst);
        if (n == TLS_WANT_READ)
            return;
        if (n == TLS_WANT_WRITE) {
            c->client_read_wants_write = true;
            return;
        }
        if (n == TLS_EOF) {
            client_eof(c);
            return;
        }
        conn_close(c);
        return;
    }
}

static void finish_flush(struct conn *c)
{
    /* Everything is written: say goodbye, then read until the client closes so that the kernel
     * does not answer its late bytes with a reset that would destroy our response. */
    if (c->ssl != NULL)
        tls_shutdown(c->ssl);
    shutdown(c->fd, SHUT_WR);
    c->lingering = true;
    c->client_eof = false;
    c->timer_base = now_ms(c);
    arm_timer(c);
}

static void client_flush(struct conn *c)
{
    if (c->tls_flush_pending && buf_used(&c->cout) == 0) {
        int r = tls_flush(c->ssl);
        if (r == TLS_WANT_WRITE || r == TLS_WANT_READ) {
            c->client_write_blocked = true;
            return;
        }
        c->tls_flush_pending = false;
        if (r == TLS_ERROR) {
            conn_close(c);
            return;
        }
    }
    while (buf_used(&c->cout) > 0) {
        int n;
        if (c->ssl != NULL) {
            n = tls_write(c->ssl, buf_data(&c->cout), buf_used(&c->cout));
        } else {
            ssize_t r = send(c->fd, buf_data(&c->cout), buf_used(&c->cout), MSG_NOSIGNAL);
            n = r > 0 ? (int)r
                      : (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                            ? TLS_WANT_WRITE
                            : TLS_ERROR;
        }
        if (n > 0) {
            buf_consume(&c->cout, (size_t)n);
            activity(c);
            continue;
        }
        if (n == TLS_WANT_WRITE || n == TLS_WANT_READ) {
            c->client_write_blocked = true;
            return;
        }
        conn_close(c);
        return;
    }
    c->client_write_blocked = false;
    if (c->state == CONN_FLUSH && !c->lingering)
        finish_flush(c);
    else if (c->state == CONN_TUNNEL)
        tunnel_maybe_done(c);
}

static void handshake_done(struct conn *c)
{
    metrics_handshake(c->index, tls_resumed(c->ssl) ? METRICS_HS_RESUMED : METRICS_HS_OK);
    c->tls_flush_pending = true;
    client_flush(c);
    if (c->state == CONN_CLOSING)
        return;
    if (c->lc->mode == LISTENER_TLS) {
        conn_set_state(c, CONN_TUNNEL);
        conn_upstream_connect(c);
        return;
    }
    conn_set_state(c, CONN_HEAD);
    client_read(c);
}

static void do_handshake(struct conn *c)
{
    int r = tls_handshake(c->ssl);
    c->hs_want_write = false;
    if (r == 1) {
        handshake_done(c);
        return;
    }
    if (r == TLS_WANT_READ)
        return;
    if (r == TLS_WANT_WRITE) {
        c->hs_want_write = true;
        return;
    }
    conn_close(c);
}

static void client_poll_cb(uv_poll_t *h, int status, int events)
{
    struct conn *c = h->data;
    if (status < 0)
        events |= UV_READABLE | UV_WRITABLE;
    if (c->state == CONN_HANDSHAKE) {
        do_handshake(c);
    } else {
        if (events & UV_WRITABLE)
            client_flush(c);
        if (c->state != CONN_CLOSING &&
            ((events & UV_READABLE) || (c->client_read_wants_write && (events & UV_WRITABLE))))
            client_read(c);
    }
    if (c->state != CONN_CLOSING)
        update_polls(c);
}

static void update_polls(struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    /* Bytes already decrypted inside the SSL raise no poll event: take them now. */
    if (c->ssl != NULL && c->state != CONN_HANDSHAKE && can_read_client(c) && tls_pending(c->ssl)) {
        client_read(c);
        if (c->state == CONN_CLOSING)
            return;
    }
    int ev = 0;
    if (c->state == CONN_HANDSHAKE)
        ev = c->hs_want_write ? UV_WRITABLE : UV_READABLE;
    else {
        if (can_read_client(c))
            ev |= UV_READABLE;
        if (c->client_write_blocked || c->client_read_wants_write)
            ev |= UV_WRITABLE;
    }
    if (ev != c->poll_events) {
        c->poll_events = ev;
        if (ev)
            uv_poll_start(&c->poll, ev, client_poll_cb);
        else
            uv_poll_stop(&c->poll);
    }
    if (c->up != NULL) {
        int uev = 0;
        if (c->up_state == UP_CONNECTING)
            uev = UV_WRITABLE;
        else {
            if (can_read_up(c))
                uev |= UV_READABLE;
            if (c->up_write_blocked)
                uev |= UV_WRITABLE;
        }
        if (uev != c->up->events) {
            c->up->events = uev;
            if (uev)
                uv_poll_start(&c->up->poll, uev, up_poll_cb);
            else
                uv_poll_stop(&c->up->poll);
        }
    }
}

/* --- lifecycle ----------------------------------------------------------------------------- */

void conn_accept(struct worker *w, size_t index, int fd, const struct sockaddr *peer,
                 socklen_t peer_len)
{
    struct conn *c = xcalloc(1, sizeof(*c));
    c->worker = w;
    c->index = index;
    c->lc = &w->srv->cfg->listeners[index];
    c->fd = fd;
    c->gen = listener_gen(w->srv);
    c->checked_gen_id = tls_gen_id(c->gen);
    c->start = base_now_ms();
    c->state = CONN_HANDSHAKE;
    c->timer_base = now_ms(c);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uv_poll_init(&w->loop, &c->poll, fd);
    c->poll.data = c;
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    c->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = c;
    w->conns = c;
    w->num_conns++;
    metrics_conn_open(index);
    http_conn_init(c);
    if (c->lc->mode == LISTENER_TCP) {
        conn_set_state(c, CONN_TUNNEL);
        conn_upstream_connect(c);
        if (c->state != CONN_CLOSING)
            update_polls(c);
        return;
    }
    c->ssl = tls_new_ssl(c->gen, index, fd, c, peer, peer_len);
    arm_timer(c);
    do_handshake(c);
    if (c->state != CONN_CLOSING)
        update_polls(c);
}

static void conn_close_cb(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->pending_closes > 0)
        return;
    tls_free(c->ssl);
    close(c->fd);
    buf_free(&c->cin);
    buf_free(&c->cout);
    buf_free(&c->uin);
    buf_free(&c->uout);
    buf_free(&c->replay);
    free(c->method_path);
    free(c->client_subject);
    free(c->cc_headers);
    free(c->cc_element);
    tls_gen_unref(c->gen);
    free(c);
}

static void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    if (c->lc->mode != LISTENER_HTTP && c->state == CONN_TUNNEL)
        access_log(c);
    conn_set_state(c, CONN_CLOSING);
    bool idle_up = c->up != NULL && c->up_idle && c->up_state == UP_OPEN && !c->up_eof &&
                   buf_used(&c->uout) == 0 && buf_used(&c->uin) == 0;
    if (!idle_up || !pool_put(c))
        close_upstream(c);
    struct worker *w = c->worker;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    w->num_conns--;
    metrics_conn_close(c->index);
    c->pending_closes = 2;
    uv_close((uv_handle_t *)&c->poll, conn_close_cb);
    uv_close((uv_handle_t *)&c->timer, conn_close_cb);
    listener_conn_closed(w, c);
}

void conn_error(struct conn *c, int status)
{
    if (c->state == CONN_FLUSH || c->state == CONN_CLOSING)
        return;
    if (c->lc->mode != LISTENER_HTTP || c->state == CONN_HANDSHAKE) {
        conn_close(c);
        return;
    }
    if (c->resp_sent) {
        conn_close(c); /* part of a response is out: a clean error is impossible */
        return;
    }
    c->status = status;
    if (c->req_start == 0)
        c->req_start = base_now_ms();
    access_log(c);
    close_upstream(c);
    buf_free(&c->uout);
    http_error_response(c, status);
    conn_set_state(c, CONN_FLUSH);
    client_flush(c);
    if (c->state != CONN_CLOSING)
        update_polls(c);
}

void conn_request_done(struct conn *c)
{
    c->req_done = true;
    c->timer_base = now_ms(c); /* upstream_response_timeout starts now */
    arm_timer(c);
    if (c->resp_done)
        conn_http_cycle_done(c);
}

void conn_http_cycle_done(struct conn *c)
{
    access_log(c);
    c->num_requests++;
    if (!c->up_reusable)
        close_upstream(c);
    else
        c->up_idle = true;
    if (c->close_after || c->draining || !c->req_keep_alive) {
        conn_set_state(c, CONN_FLUSH);
        client_flush(c);
        return;
    }
    c->req_done = c->req_chunked = c->req_head_method = c->req_http10 = false;
    c->req_upgrade = c->resp_head_done = c->resp_chunked = c->resp_done = false;
    c->resp_until_close = c->resp_sent = c->close_after = c->head_started = false;
    c->up_reusable = c->replayed = false;
    buf_free(&c->replay);
    c->status = 0;
    c->head_scan = 0;
    c->head_lines = 0;
    c->bytes_in = c->bytes_out = 0;
    c->req_start = 0;
    conn_set_state(c, CONN_HEAD);
    if (buf_used(&c->cin) > 0) {
        c->head_started = true;
        http_request_process(c);
    }
}

void conn_tunnel(struct conn *c)
{
    /* What follows the 101 on either side is no longer HTTP. */
    buf_append(&c->cout, buf_data(&c->uin), buf_used(&c->uin));
    buf_free(&c->uin);
    buf_append(&c->uout, buf_data(&c->cin), buf_used(&c->cin));
    buf_free(&c->cin);
    access_log(c);
    conn_set_state(c, CONN_TUNNEL);
    up_flush(c);
}

bool conn_still_trusted(struct conn *c)
{
    struct server *srv = c->worker->srv;
    if (c->ssl == NULL || c->untrusted)
        return !c->untrusted;
    if (atomic_load_explicit(&srv->gen, memory_order_acquire) == c->gen)
        return true;
    struct tls_gen *gen = listener_gen(srv);
    uint64_t id = tls_gen_id(gen);
    if (id > c->checked_gen_id) {
        c->checked_gen_id = id;
        c->untrusted = !tls_reverify(gen, c->index, c->ssl);
    }
    tls_gen_unref(gen);
    return !c->untrusted;
}

void conn_recheck(struct conn *c)
{
    if (c->state == CONN_TUNNEL && !conn_still_trusted(c))
        conn_close(c);
}

void conn_drain(struct conn *c)
{
    c->draining = true;
    if ((c->state == CONN_HEAD && !c->head_started) || c->state == CONN_HANDSHAKE)
        conn_close(c);
}
