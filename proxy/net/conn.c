/* conn.c: one client connection's state machine. The client socket is driven with uv_poll and
 * BoringSSL reads and writes it directly (no memory BIOs, no copies); the upstream socket is
 * upstream.c's. One timer per connection carries the timeout of the current state. Memory is
 * freed only in the last close callback. */
#include "net/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/base.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/message.h"
#include "net/conn_internal.h"
#include "net/worker.h"
#include "tls/allowlist.h"
#include "tls/tls.h"


static const struct conn_handlers *handlers;

void conn_set_handlers(const struct conn_handlers *h)
{
    handlers = h;
}

const struct conn_handlers *conn_handlers(void)
{
    return handlers;
}

static const struct config_limits *limits(struct conn *c)
{
    return &c->worker->srv->cfg->limits;
}

uint64_t conn_now_ms(struct conn *c)
{
    return uv_now(&c->worker->loop);
}

void conn_set_state(struct conn *c, enum conn_state to)
{
    /* The transitions the design allows; anything else is a bug. */
    switch (to) {
    case CONN_HANDSHAKE:
        ASSERT_TRANSITION(c->state == CONN_PROXY_HEADER);
        break;
    case CONN_HEAD:
        ASSERT_TRANSITION(c->state == CONN_HANDSHAKE || c->state == CONN_PROXY);
        break;
    case CONN_PROXY:
        ASSERT_TRANSITION(c->state == CONN_HEAD);
        break;
    case CONN_H2:
        ASSERT_TRANSITION(c->state == CONN_HANDSHAKE);
        break;
    case CONN_TUNNEL:
        ASSERT_TRANSITION(c->state == CONN_PROXY_HEADER || c->state == CONN_HANDSHAKE ||
                          c->state == CONN_PROXY || c->state == CONN_TUNNEL);
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
    c->timer_base = conn_now_ms(c);
    conn_arm_timer(c);
}

/* --- timers -------------------------------------------------------------------------------- */

static uint64_t state_timeout(struct conn *c)
{
    const struct config_limits *lim = limits(c);
    switch (c->state) {
    case CONN_PROXY_HEADER: /* one timeout covers the header and the handshake after it */
    case CONN_HANDSHAKE:
        return lim->handshake_timeout_ms;
    case CONN_HEAD:
        if (c->ex.head_started || c->num_requests == 0)
            return lim->request_head_timeout_ms;
        return lim->idle_timeout_ms;
    case CONN_PROXY:
        if (c->up_state == UP_CONNECTING)
            return lim->upstream_connect_timeout_ms;
        if (!c->ex.resp_head_done && c->ex.req_done)
            return lim->upstream_response_timeout_ms;
        return lim->idle_timeout_ms;
    case CONN_TUNNEL:
        if (c->up_state == UP_CONNECTING)
            return lim->upstream_connect_timeout_ms;
        return lim->idle_timeout_ms;
    case CONN_H2: /* streams wait for their upstream under the upstream sides' own timers */
        /* The first request and every header block must come within request_head_timeout
         * (slowloris, SECURITY 15); an idle connection lasts idle_timeout from its last stream,
         * whatever PINGs it sends; a busy one idle_timeout from its last byte. */
        return c->num_requests == 0 || c->h2_head_open ? lim->request_head_timeout_ms
                                                       : lim->idle_timeout_ms;
    case CONN_FLUSH:
        return c->lingering ? LINGER_MS : lim->idle_timeout_ms;
    default:
        return 0;
    }
}


static void on_timeout(struct conn *c)
{
    switch (c->state) {
    case CONN_PROXY_HEADER:
        /* A v1v2 client that sent nothing is only a slow client, as in a handshake. */
        if (c->lc->accept_proxy_protocol == ACCEPT_PROXY_REQUIRED || buf_used(&c->cin) > 0) {
            conn_proxy_header_refused(c, "no complete PROXY protocol header within "
                                    "limits.handshake_timeout");
            return;
        }
        if (c->lc->mode != LISTENER_TCP)
            metrics_handshake(c->index, METRICS_HS_ERROR);
        break;
    case CONN_HANDSHAKE:
        metrics_handshake(c->index, METRICS_HS_ERROR);
        break;
    case CONN_HEAD:
        if (c->ex.head_started && buf_used(&c->cin) > 0) {
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
        if (!c->ex.resp_head_done) {
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
    uint64_t now = conn_now_ms(c);
    if (now < deadline) {
        uv_timer_start(&c->timer, timer_cb, deadline - now, 0);
        return;
    }
    on_timeout(c);
    conn_event_end(c);
}

void conn_arm_timer(struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    uint64_t deadline = c->timer_base + state_timeout(c);
    uint64_t now = conn_now_ms(c);
    uv_timer_start(&c->timer, timer_cb, deadline > now ? deadline - now : 0, 0);
}

/* Streaming states time out on inactivity: moving the base is enough, the timer catches up. */
void conn_activity(struct conn *c)
{
    bool awaiting_head = c->state == CONN_PROXY && c->ex.req_done && !c->ex.resp_head_done;
    bool h2_busy = c->state == CONN_H2 && c->h2_streams > 0 && !c->h2_head_open;
    if (c->state == CONN_TUNNEL || h2_busy || (c->state == CONN_PROXY && !awaiting_head))
        c->timer_base = conn_now_ms(c);
}

void conn_tunnel_maybe_done(struct conn *c)
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
        if (c->ex.req_done)
            return buf_used(&c->cin) <= limits(c)->max_request_head;
        return buf_used(&c->uout) < CONN_HWM;
    case CONN_TUNNEL:
        return buf_used(&c->uout) < CONN_HWM;
    case CONN_H2:
        return handlers->h2_want_read(c);
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
        if (!c->ex.req_done) {
            conn_close(c); /* the client gave up half-way through its request */
            return;
        }
        c->ex.close_after = true;
        break;
    case CONN_TUNNEL:
        if (buf_used(&c->uout) == 0)
            handlers->upstream_flush(c); /* nothing left to send: it half-closes the upstream */
        conn_tunnel_maybe_done(c);
        break;
    default:
        conn_close(c);
        break;
    }
}

void conn_client_read(struct conn *c)
{
    c->client_read_wants_write = false;
    for (int i = 0; i < CONN_READS_PER_EVENT && can_read_client(c); i++) {
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
            conn_activity(c);
            if (c->state == CONN_HEAD && !c->ex.head_started) {
                c->ex.head_started = true;
                c->timer_base = conn_now_ms(c);
                conn_arm_timer(c);
            }
            if (c->state == CONN_TUNNEL)
                c->bytes_in += (uint64_t)n;
            else if (c->state == CONN_H2)
                handlers->h2_input(c); /* records; conn_event_end writes */
            else
                handlers->http_request(c); /* records; conn_event_end writes */
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
    c->timer_base = conn_now_ms(c);
    conn_arm_timer(c);
}

void conn_client_flush(struct conn *c)
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
            conn_activity(c);
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
        conn_tunnel_maybe_done(c);
}


static void client_poll_cb(uv_poll_t *h, int status, int events)
{
    struct conn *c = h->data;
    if (status < 0)
        events |= UV_READABLE | UV_WRITABLE;
    if (c->state == CONN_PROXY_HEADER) {
        conn_proxy_header_read(c);
    } else if (c->state == CONN_HANDSHAKE) {
        conn_handshake(c);
    } else {
        if (events & UV_WRITABLE)
            conn_client_flush(c);
        if ((events & UV_READABLE) || (c->client_read_wants_write && (events & UV_WRITABLE)))
            conn_client_read(c);
    }
    conn_event_end(c);
}

static void update_polls(struct conn *c)
{
    int ev = 0;
    if (c->state == CONN_PROXY_HEADER)
        ev = UV_READABLE;
    else if (c->state == CONN_HANDSHAKE)
        ev = c->hs_verify_pending ? 0 : c->hs_want_write ? UV_WRITABLE : UV_READABLE;
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
    handlers->upstream_update_poll(c);
}

/* HTTP/2: frames the session has queued go to c->cout and out, a bounded number of rounds;
 * what is left raises a writable event. A session that is over says goodbye. */
static void h2_pump(struct conn *c)
{
    for (int i = 0; i < CONN_READS_PER_EVENT * 2; i++) {
        if (!handlers->h2_output(c)) {
            conn_set_state(c, CONN_FLUSH);
            conn_client_flush(c); /* the GOAWAY, then close_notify and lingering */
            return;
        }
        if (buf_used(&c->cout) == 0)
            return;
        conn_client_flush(c);
        if (c->client_write_blocked || c->state != CONN_H2)
            return;
    }
    c->client_write_blocked = true; /* more to send: the socket is writable, come back */
}

void conn_event_end(struct conn *c)
{
    /* Each round writes what the event's parsing queued, then takes bytes the SSL already holds
     * (a partial record read ahead, or a record after the last one read): they raise no poll
     * event. Bounded like reads, so one connection cannot starve the others; what is left
     * waits for the next event. */
    for (int round = 0; c->state != CONN_CLOSING; round++) {
        if (c->state == CONN_HANDSHAKE || c->state == CONN_PROXY_HEADER)
            break;
        if (!c->up_write_blocked)
            handlers->upstream_flush(c);
        if (c->state == CONN_H2)
            h2_pump(c);
        else if (c->state != CONN_CLOSING && !c->client_write_blocked)
            conn_client_flush(c);
        /* The last round only writes: what a read queued must go out now, since a full uout
         * stops reading the client and an upstream that is not blocked is not polled for
         * writing, so nothing else would ever send it. */
        if (round == CONN_READS_PER_EVENT - 1 || c->state == CONN_CLOSING ||
            c->state == CONN_FLUSH || c->ssl == NULL || !can_read_client(c) ||
            !tls_pending(c->ssl))
            break; /* lingering reads the socket raw: what the SSL holds is never taken */
        conn_client_read(c);
    }
    if (c->state != CONN_CLOSING)
        update_polls(c);
}

/* --- lifecycle ----------------------------------------------------------------------------- */

/* Starts the listener's protocol once the client is known. */
void conn_start(struct conn *c)
{
    if (c->lc->mode == LISTENER_TCP) {
        conn_set_state(c, CONN_TUNNEL);
        handlers->upstream_connect(c);
        return;
    }
    socklen_t len = 0;
    const struct sockaddr *client = conn_client_addr(c, &len);
    c->ssl = tls_new_ssl(c->gen, c->index, c->fd, c, len ? client : NULL, len);
    if (c->state == CONN_PROXY_HEADER) {
        uint64_t base = c->timer_base; /* the header and the handshake share one timeout */
        conn_set_state(c, CONN_HANDSHAKE);
        c->timer_base = base;
    }
    conn_arm_timer(c);
    conn_handshake(c);
}

void conn_accept(struct worker *w, size_t index, int fd, const struct sockaddr *peer,
                 socklen_t peer_len)
{
    struct conn *c = xcalloc(1, sizeof(*c));
    c->worker = w;
    c->index = index;
    c->lc = &w->srv->cfg->listeners[index];
    c->fd = fd;
    c->gen = server_gen(w->srv);
    c->checked_gen_id = tls_gen_id(c->gen);
    c->start = base_now_us();
    if (peer != NULL && peer_len <= sizeof(c->peer))
        memcpy(&c->peer, peer, peer_len);
    bool proxied = c->lc->accept_proxy_protocol != ACCEPT_PROXY_OFF;
    c->state = proxied ? CONN_PROXY_HEADER : CONN_HANDSHAKE;
    c->draining = w->closing; /* accepted during the shutdown delay: one response, then close */
    c->timer_base = conn_now_ms(c);
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
    handlers->http_init(c);
    if (proxied)
        conn_arm_timer(c); /* the poll says when the header comes */
    else
        conn_start(c);
    conn_event_end(c);
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
    buf_free(&c->ex.replay);
    buf_free(&c->ex.req_log);
    free(c->client_subject);
    free(c->cc_headers);
    free(c->cc_element);
    free(c->pp);
    tls_gen_unref(c->gen);
    free(c);
}

void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    if (c->lc->mode != LISTENER_HTTP && c->state == CONN_TUNNEL)
        conn_access_log(c, NULL);
    conn_set_state(c, CONN_CLOSING);
    if (c->h2 != NULL)
        handlers->h2_close(c); /* every stream's upstream side lets go */
    handlers->upstream_close(c);
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
    handlers->closed(w, c);
}

void conn_error(struct conn *c, int status)
{
    if (c->state == CONN_FLUSH || c->state == CONN_CLOSING)
        return;
    if (c->lc->mode != LISTENER_HTTP || c->state == CONN_HANDSHAKE ||
        c->state == CONN_PROXY_HEADER || c->state == CONN_H2) {
        conn_close(c);
        return;
    }
    if (c->ex.resp_sent) {
        conn_close(c); /* part of a response is out: a clean error is impossible */
        return;
    }
    c->ex.status = status;
    if (c->ex.req_start == 0)
        c->ex.req_start = base_now_us();
    conn_access_log(c, "certgate");
    handlers->upstream_close(c);
    buf_free(&c->uout);
    http_error_response(&c->cout, status);
    conn_set_state(c, CONN_FLUSH); /* conn_event_end writes it */
}

void conn_request_done(struct conn *c)
{
    c->ex.req_done = true;
    c->timer_base = conn_now_ms(c); /* upstream_response_timeout starts now */
    conn_arm_timer(c);
    if (c->ex.resp_done)
        conn_http_cycle_done(c);
}

void conn_http_cycle_done(struct conn *c)
{
    conn_access_log(c, "upstream");
    buf_free(&c->ex.req_log);
    c->num_requests++;
    /* The upstream connection belongs to the exchange, not to the client: a client idling
     * between requests holds none (HAProxy's and nginx's upstream keep-alive). */
    handlers->upstream_exchange_done(c);
    if (c->ex.close_after || c->draining || !c->ex.req_keep_alive) {
        conn_set_state(c, CONN_FLUSH); /* conn_event_end writes what is left, then says goodbye */
        return;
    }
    c->ex.req_done = c->ex.req_chunked = c->ex.req_head_method = c->ex.req_http10 = false;
    c->ex.req_upgrade = c->ex.resp_head_done = c->ex.resp_chunked = c->ex.resp_done = false;
    c->ex.resp_until_close = c->ex.resp_sent = c->ex.close_after = c->ex.head_started = false;
    c->ex.up_reusable = c->ex.replayed = c->ex.req_idempotent = false;
    buf_free(&c->ex.replay);
    c->ex.status = 0;
    memset(&c->ex.req_scan, 0, sizeof(c->ex.req_scan));
    memset(&c->ex.resp_scan, 0, sizeof(c->ex.resp_scan));
    c->bytes_in = c->bytes_out = 0;
    c->ex.req_start = 0;
    conn_set_state(c, CONN_HEAD);
    if (buf_used(&c->cin) > 0) {
        c->ex.head_started = true;
        handlers->http_request(c); /* a pipelined request: parsed now, written by conn_event_end */
    }
}

void conn_tunnel(struct conn *c)
{
    /* What follows the 101 on either side is no longer HTTP. */
    buf_append(&c->cout, buf_data(&c->uin), buf_used(&c->uin));
    buf_free(&c->uin);
    buf_append(&c->uout, buf_data(&c->cin), buf_used(&c->cin));
    buf_free(&c->cin);
    conn_access_log(c, "upstream");
    conn_set_state(c, CONN_TUNNEL); /* conn_event_end writes both queues */
}

void conn_drain(struct conn *c)
{
    c->draining = true;
    if (c->state == CONN_H2) {
        handlers->h2_drain(c); /* GOAWAY: the streams in flight finish, then it closes */
        conn_event_end(c);
        return;
    }
    if ((c->state == CONN_HEAD && !c->ex.head_started) || c->state == CONN_HANDSHAKE ||
        c->state == CONN_PROXY_HEADER)
        conn_close(c);
}
