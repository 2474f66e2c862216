/* admin_listen.c: the admin listeners (admin.address, admin.public_address) on the main loop:
 * at most ADMIN_MAX_CONNS connections, each read whole (head and body) under a timer, answered
 * once by admin.c and closed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "control/admin_internal.h"
#include "core/base.h"
#include "core/config.h"
#include "core/log.h"
#include "server/listener.h"

struct admin_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t write;
    struct buf in;
    struct buf out;
    bool responded;
    bool closing;
    bool public_side; /* accepted on admin.public_address */
    int pending_closes;
    struct admin_conn *prev, *next;
};


static uv_tcp_t admin_server, admin_public_server;
static bool admin_running, admin_public_running;

static struct admin_conn *admin_conns;
static size_t admin_num_conns;

/* --- connections ---------------------------------------------------------------------------- */

static void conn_close_cb(uv_handle_t *h)
{
    struct admin_conn *ac = h->data;
    if (--ac->pending_closes > 0)
        return;
    buf_free(&ac->in);
    buf_free(&ac->out);
    free(ac);
}

static void conn_close(struct admin_conn *ac)
{
    if (ac->closing)
        return;
    ac->closing = true;
    if (ac->prev)
        ac->prev->next = ac->next;
    else
        admin_conns = ac->next;
    if (ac->next)
        ac->next->prev = ac->prev;
    admin_num_conns--;
    ac->pending_closes = 2;
    uv_close((uv_handle_t *)&ac->timer, conn_close_cb);
    uv_close((uv_handle_t *)&ac->tcp, conn_close_cb);
}

static void write_cb(uv_write_t *req, int status)
{
    conn_close(req->data);
}

static void timeout_cb(uv_timer_t *t);

static void send_response(struct admin_conn *ac)
{
    ac->responded = true;
    uv_read_stop((uv_stream_t *)&ac->tcp);
    uv_timer_start(&ac->timer, timeout_cb, ADMIN_TIMEOUT_MS, 0);
    uv_buf_t b = uv_buf_init(buf_data(&ac->out), (unsigned)buf_used(&ac->out));
    ac->write.data = ac;
    if (uv_write(&ac->write, (uv_stream_t *)&ac->tcp, &b, 1, write_cb) < 0)
        conn_close(ac);
}

static void timeout_cb(uv_timer_t *t)
{
    struct admin_conn *ac = t->data;
    if (ac->responded) {
        conn_close(ac); /* the client does not read its answer */
        return;
    }
    admin_respond_text(&ac->out, 408, "request timeout\n", NULL);
    send_response(ac);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct admin_conn *ac = h->data;
    b->base = buf_reserve(&ac->in, 4096);
    b->len = 4096;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct admin_conn *ac = s->data;
    if (n < 0) {
        conn_close(ac);
        return;
    }
    buf_commit(&ac->in, (size_t)n);
    if (ac->responded)
        return;
    const char *d = buf_data(&ac->in);
    size_t len = buf_used(&ac->in);
    const char *end = memmem(d, MIN(len, (size_t)ADMIN_MAX_HEAD), "\r\n\r\n", 4);
    if (end == NULL) {
        if (len >= ADMIN_MAX_HEAD) {
            admin_respond_text(&ac->out, 431, "request head too large\n", NULL);
            send_response(ac);
        }
        return;
    }
    size_t head_len = (size_t)(end + 4 - d);
    struct request rq;
    int code = admin_parse_head(d, head_len, &rq);
    if (code != 0) {
        admin_respond_text(&ac->out, code,
                           code == 413 ? "request body too large\n" : "bad request\n", NULL);
        send_response(ac);
        return;
    }
    /* Read the whole body before answering: closing with unread bytes would reset the
     * connection and could destroy the answer before the client reads it. */
    if (len - head_len < rq.content_length)
        return;
    admin_route(&rq, ac->public_side, &ac->out);
    send_response(ac);
}

static void connection_cb(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    struct admin_conn *ac = xcalloc(1, sizeof(*ac));
    uv_tcp_init(server->loop, &ac->tcp);
    uv_timer_init(server->loop, &ac->timer);
    ac->tcp.data = ac;
    ac->timer.data = ac;
    ac->public_side = server == (uv_stream_t *)&admin_public_server;
    ac->next = admin_conns;
    if (admin_conns)
        admin_conns->prev = ac;
    admin_conns = ac;
    admin_num_conns++;
    if (uv_accept(server, (uv_stream_t *)&ac->tcp) != 0 || admin_num_conns > ADMIN_MAX_CONNS) {
        conn_close(ac);
        return;
    }
    uv_timer_start(&ac->timer, timeout_cb, ADMIN_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&ac->tcp, alloc_cb, read_cb);
}

/* Binds and listens on |ep| with |server|; returns 0 or a negative errno with a message. */
static int listen_on(uv_loop_t *loop, uv_tcp_t *server, const struct config_endpoint *ep,
                     const char *key, char *err, size_t err_len)
{
    uv_tcp_init(loop, server);
    int r = uv_tcp_bind(server, (const struct sockaddr *)&ep->addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)server, 128, connection_cb);
    if (r < 0) {
        snprintf(err, err_len, "admin: cannot listen on %s %s: %s", key, ep->text, uv_strerror(r));
        uv_close((uv_handle_t *)server, NULL);
    }
    return r;
}

int admin_start(uv_loop_t *loop, struct server *srv, char *err, size_t err_len)
{
    const struct config *cfg = srv->cfg;
    admin_set_server(srv);
    if (cfg->admin_address.text != NULL) {
        int r = listen_on(loop, &admin_server, &cfg->admin_address, "admin.address", err,
                          err_len);
        if (r < 0)
            return r;
        admin_running = true;
    }
    if (cfg->admin_public_address.text != NULL) {
        int r = listen_on(loop, &admin_public_server, &cfg->admin_public_address,
                          "admin.public_address", err, err_len);
        if (r < 0)
            return r;
        admin_public_running = true;
    }
    return 0;
}

void admin_stop(void)
{
    if (admin_running)
        uv_close((uv_handle_t *)&admin_server, NULL);
    if (admin_public_running)
        uv_close((uv_handle_t *)&admin_public_server, NULL);
    admin_running = admin_public_running = false;
    while (admin_conns != NULL)
        conn_close(admin_conns);
}
