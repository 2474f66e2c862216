/* listener.c: binding, accepting and the worker threads. Each worker owns one SO_REUSEPORT
 * socket per listener, so the kernel spreads connections and no lock is taken on accept. */
#include "server/listener.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/base.h"
#include "core/log.h"
#include "exchange/http.h"
#include "h2/h2_server.h"
#include "h2/h2_stream.h"
#include "net/conn.h"
#include "tls/tls.h"
#include "upstream/upstream.h"

#define ACCEPTS_PER_EVENT 64
#define ACCEPT_RETRY_MS 100

static void endpoint_string(const struct sockaddr_storage *ss, char *out, size_t len);

static int probe_free(const struct sockaddr_storage *addr, socklen_t addr_len)
{
    const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
    if ((addr->ss_family == AF_INET && in->sin_port == 0) ||
        (addr->ss_family == AF_INET6 && in6->sin6_port == 0))
        return 0; /* the kernel picks a free port */
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int r = bind(fd, (const struct sockaddr *)addr, addr_len) == 0 ? 0 : -errno;
    close(fd);
    return r;
}

int listener_bind(struct server *srv, char *err, size_t err_len)
{
    const struct config *cfg = srv->cfg;
    srv->num_workers = cfg->workers ? cfg->workers : 1;
    srv->workers = xcalloc(srv->num_workers, sizeof(*srv->workers));
    srv->bound = xcalloc(cfg->num_listeners, sizeof(*srv->bound));
    for (size_t w = 0; w < srv->num_workers; w++) {
        struct worker *wk = &srv->workers[w];
        wk->srv = srv;
        wk->id = (unsigned)w;
        wk->num_socks = cfg->num_listeners;
        wk->socks = xcalloc(cfg->num_listeners, sizeof(*wk->socks));
        for (size_t i = 0; i < cfg->num_listeners; i++)
            wk->socks[i].fd = -1;
    }
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const struct listener_config *lc = &cfg->listeners[i];
        struct sockaddr_storage addr = lc->address.addr;
        socklen_t addr_len = lc->address.addr_len;
        /* SO_REUSEPORT would let us share a port another process already listens on (and take
         * part of its traffic): make sure the address is really free first, as nginx and Envoy
         * do by failing with "address in use". */
        int r = probe_free(&addr, addr_len);
        if (r < 0) {
            snprintf(err, err_len, "listener %s: cannot listen on %s: %s", lc->name,
                     lc->address.text, strerror(-r));
            return r;
        }
        for (size_t w = 0; w < srv->num_workers; w++) {
            int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                snprintf(err, err_len, "listener %s: socket: %s", lc->name, strerror(errno));
                return -errno;
            }
            int one = 1;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
            if (bind(fd, (struct sockaddr *)&addr, addr_len) != 0 || listen(fd, 1024) != 0) {
                int e = errno;
                close(fd);
                snprintf(err, err_len, "listener %s: cannot listen on %s: %s", lc->name,
                         lc->address.text, strerror(e));
                return -e;
            }
            if (w == 0) {
                /* Port 0 picked a port: the other workers join that one. */
                socklen_t sl = sizeof(addr);
                getsockname(fd, (struct sockaddr *)&addr, &sl);
                addr_len = sl;
                srv->bound[i] = addr;
            }
            srv->workers[w].socks[i].fd = fd;
            srv->workers[w].socks[i].index = i;
            srv->workers[w].socks[i].worker = &srv->workers[w];
        }
        char text[80];
        endpoint_string(&srv->bound[i], text, sizeof(text));
        struct buf b = {0};
        log_begin(&b, LOG_LEVEL_INFO, "listening");
        log_str(&b, "listener", lc->name);
        log_str(&b, "address", text);
        log_str(&b, "mode", lc->mode == LISTENER_HTTP ? "http" : lc->mode == LISTENER_TLS ? "tls"
                                                                                      : "tcp");
        log_str(&b, "upstream", lc->upstream.text);
        log_end(&b);
    }
    return 0;
}

static void endpoint_string(const struct sockaddr_storage *ss, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(out, len, "%s:%d", host, ntohs(in->sin_port));
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(out, len, "[%s]:%d", host, ntohs(in6->sin6_port));
    }
}

static void accept_cb(uv_poll_t *h, int status, int events);
static void resume_cb(uv_timer_t *t);

static void pause_accepting(struct worker *w)
{
    for (size_t i = 0; i < w->num_socks; i++) {
        if (!w->socks[i].paused && w->socks[i].fd >= 0) {
            uv_poll_stop(&w->socks[i].poll);
            w->socks[i].paused = true;
        }
    }
    if (!uv_is_active((uv_handle_t *)&w->resume))
        uv_timer_start(&w->resume, resume_cb, ACCEPT_RETRY_MS, 0);
}

static void resume_accepting(struct worker *w)
{
    if (w->draining)
        return;
    for (size_t i = 0; i < w->num_socks; i++) {
        if (w->socks[i].paused) {
            uv_poll_start(&w->socks[i].poll, UV_READABLE, accept_cb);
            w->socks[i].paused = false;
        }
    }
}

static void resume_cb(uv_timer_t *t)
{
    resume_accepting(t->data);
}

static void accept_cb(uv_poll_t *h, int status, int events)
{
    struct lsock *ls = h->data;
    struct worker *w = ls->worker;
    struct server *srv = w->srv;
    for (int i = 0; i < ACCEPTS_PER_EVENT && !w->draining; i++) {
        if (atomic_load(&srv->num_conns) >= srv->cfg->limits.max_connections) {
            pause_accepting(w);
            return;
        }
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof(peer);
        int fd = accept4(ls->fd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Spinning on a full descriptor table helps nobody: wait a little. Said once
                 * per episode, not at every retry. */
                if (!w->accept_paused_logged)
                    log_msg(LOG_LEVEL_WARN, "accept_paused", "accept: %s; retrying every %d ms",
                            strerror(errno), ACCEPT_RETRY_MS);
                w->accept_paused_logged = true;
                pause_accepting(w);
            }
            return;
        }
        atomic_fetch_add(&srv->num_conns, 1);
        w->accept_paused_logged = false;
        conn_accept(w, ls->index, fd, (struct sockaddr *)&peer, peer_len);
    }
}

static void stop_worker(struct worker *w)
{
    upstream_pool_close_all(w);
    h2_upc_close_all(w);
    if (!uv_is_closing((uv_handle_t *)&w->regen))
        uv_close((uv_handle_t *)&w->regen, NULL);
    if (!uv_is_closing((uv_handle_t *)&w->wakeup))
        uv_close((uv_handle_t *)&w->wakeup, NULL);
    if (!uv_is_closing((uv_handle_t *)&w->resume))
        uv_close((uv_handle_t *)&w->resume, NULL);
    if (!uv_is_closing((uv_handle_t *)&w->h2_trim))
        uv_close((uv_handle_t *)&w->h2_trim, NULL);
    if (!uv_is_closing((uv_handle_t *)&w->h2_flush))
        uv_close((uv_handle_t *)&w->h2_flush, NULL);
}

/* Upstream events of one loop round touch HTTP/2 client connections (h2_stream_touch); each
 * is written once, after all of them: the responses that came in one round from several
 * upstreams go out in one TLS write per client instead of one each. */
static void h2_flush_cb(uv_check_t *h)
{
    h2_flush_touched(h->data);
}

/* Idle HTTP/2 connections give back what they do not need while idle. The trim changes no
 * state a socket event would see. */
static void h2_trim_cb(uv_timer_t *t)
{
    struct worker *w = t->data;
    for (struct conn *c = w->conns; c != NULL; c = c->next)
        if (c->state == CONN_H2)
            h2_server_trim(c);
}

static void lsock_close_cb(uv_handle_t *h)
{
    struct lsock *ls = h->data;
    close(ls->fd);
    ls->fd = -1;
}

static void regen_cb(uv_async_t *a)
{
    struct worker *w = a->data;
    struct conn *c = w->conns;
    while (c != NULL) {
        struct conn *next = c->next;
        conn_recheck(c);
        c = next;
    }
}

/* close_soon marks what is open; conn_accept marks what comes during the delay. Idle
 * keep-alive connections stay: closing them now would race with the request a client may be
 * sending on them. */
static void close_soon(struct worker *w)
{
    w->closing = true;
    for (struct conn *c = w->conns; c != NULL; c = c->next)
        c->draining = true;
}

static void wakeup_cb(uv_async_t *a)
{
    struct worker *w = a->data;
    if (w->draining)
        return;
    if (atomic_load(&w->srv->stop_phase) < 2) {
        if (!w->closing)
            close_soon(w);
        return;
    }
    w->draining = true;
    for (size_t i = 0; i < w->num_socks; i++)
        uv_close((uv_handle_t *)&w->socks[i].poll, lsock_close_cb);
    struct conn *c = w->conns;
    while (c != NULL) {
        struct conn *next = c->next;
        conn_drain(c);
        c = next;
    }
    if (w->num_conns == 0)
        stop_worker(w);
}

/* A connection of |w| is gone: a draining worker may stop, a full one accept again. */
static void conn_closed(struct worker *w, struct conn *c)
{
    size_t before = atomic_fetch_sub(&w->srv->num_conns, 1);
    if (w->draining && w->num_conns == 0)
        stop_worker(w);
    else if (before == w->srv->cfg->limits.max_connections)
        resume_accepting(w);
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    tls_thread_cleanup();
}

/* The data path's layers, wired together: the socket layer calls up only through this. */
static const struct conn_handlers data_path = {
    .http_init = http_conn_init,
    .http_request = http_request_process,
    .http_response = http_response_process,
    .http_upstream_eof = http_upstream_eof,
    .upstream_connect = upstream_connect,
    .upstream_flush = upstream_flush,
    .upstream_close = upstream_close,
    .upstream_exchange_done = upstream_exchange_done,
    .upstream_update_poll = upstream_update_poll,
    .h2_start = h2_server_start,
    .h2_input = h2_server_input,
    .h2_output = h2_server_output,
    .h2_want_read = h2_server_want_read,
    .h2_drain = h2_server_drain,
    .h2_close = h2_server_close,
    .closed = conn_closed,
};

int listener_start(struct server *srv)
{
    conn_set_handlers(&data_path);
    for (size_t n = 0; n < srv->num_workers; n++) {
        struct worker *w = &srv->workers[n];
        uv_loop_init(&w->loop);
        uv_async_init(&w->loop, &w->wakeup, wakeup_cb);
        w->wakeup.data = w;
        uv_async_init(&w->loop, &w->regen, regen_cb);
        w->regen.data = w;
        uv_timer_init(&w->loop, &w->resume);
        w->resume.data = w;
        uv_timer_init(&w->loop, &w->h2_trim);
        w->h2_trim.data = w;
        uv_timer_start(&w->h2_trim, h2_trim_cb, H2_TRIM_INTERVAL_MS, H2_TRIM_INTERVAL_MS);
        uv_unref((uv_handle_t *)&w->h2_trim); /* it never keeps a loop alive by itself */
        uv_check_init(&w->loop, &w->h2_flush);
        w->h2_flush.data = w;
        uv_check_start(&w->h2_flush, h2_flush_cb);
        uv_unref((uv_handle_t *)&w->h2_flush);
        w->scratch = http_scratch_new(srv->cfg->limits.max_headers);
        for (size_t i = 0; i < w->num_socks; i++) {
            struct lsock *ls = &w->socks[i];
            uv_poll_init(&w->loop, &ls->poll, ls->fd);
            ls->poll.data = ls;
            uv_poll_start(&ls->poll, UV_READABLE, accept_cb);
        }
    }
    for (size_t n = 0; n < srv->num_workers; n++) {
        int r = uv_thread_create(&srv->workers[n].thread, worker_main, &srv->workers[n]);
        if (r < 0)
            return r;
    }
    return 0;
}

void listener_gen_changed(struct server *srv)
{
    for (size_t n = 0; n < srv->num_workers; n++)
        uv_async_send(&srv->workers[n].regen);
}

void listener_close_soon(struct server *srv)
{
    atomic_store(&srv->stop_phase, 1);
    for (size_t n = 0; n < srv->num_workers; n++)
        uv_async_send(&srv->workers[n].wakeup);
}

void listener_drain(struct server *srv)
{
    atomic_store(&srv->stop_phase, 2);
    for (size_t n = 0; n < srv->num_workers; n++)
        uv_async_send(&srv->workers[n].wakeup);
}

void listener_join(struct server *srv)
{
    for (size_t n = 0; n < srv->num_workers; n++) {
        struct worker *w = &srv->workers[n];
        uv_thread_join(&w->thread);
        uv_loop_close(&w->loop);
        http_scratch_free(w->scratch);
        free(w->socks);
    }
    free(srv->workers);
    free(srv->bound);
    srv->workers = NULL;
}

