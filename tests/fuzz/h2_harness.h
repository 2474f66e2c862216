/* h2_harness.h: a client connection for the HTTP/2 fuzz target (fuzz_h2.c). It runs the real
 * client side (h2/h2_server.c, h2_request.c over http/) on a struct conn of a listener in mode
 * http, in state CONN_H2 as after a handshake whose ALPN chose h2, without TLS and without a
 * socket peer: what the client would receive is what h2_server_output leaves in c->cout, and
 * the streams go to the fuzz target's stub backend (h2_server_set_backend) instead of an
 * upstream. The connection's certificate headers are preset as in h1_harness.h, so the
 * client-certificate header policy runs too. */
#ifndef CERTGATE_H2_HARNESS_H
#define CERTGATE_H2_HARNESS_H

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/base.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "h2/h2_server.h"
#include "h2/h2_stream.h"
#include "net/conn.h"
#include "net/worker.h"

#include "fuzz_check.h"

/* The listeners. fuzz: sanitize_set, XFCC: every client copy of the header goes, ours is
 * added; x-user is stripped; headers with '_' are dropped (the default). fuzz-append: the
 * client's XFCC elements are kept and ours appended, X-Forwarded-For appends to the client's. */
static const char h2h_yaml[] = "workers: 1\n"
                               "log: {level: error, access: off}\n"
                               "credentials: {dir: /nonexistent, cert: a.crt, key: a.key}\n"
                               "ca_store: {dir: /nonexistent}\n"
                               "listeners:\n"
                               "  - name: fuzz\n"
                               "    address: 127.0.0.1:0\n"
                               "    mode: http\n"
                               "    upstream: 127.0.0.1:9\n"
                               "    forward_client_cert: sanitize_set\n"
                               "    client_cert_header: xfcc\n"
                               "    strip_headers: [x-user]\n"
                               "  - name: fuzz-append\n"
                               "    address: 127.0.0.1:0\n"
                               "    mode: http\n"
                               "    upstream: 127.0.0.1:9\n"
                               "    forward_client_cert: append_forward\n"
                               "    client_cert_header: xfcc\n"
                               "    forwarded_headers: append\n"
                               "    strip_headers: [x-user]\n";

/* This hop's header, as tls_client_cert_headers would have computed it, and its value as the
 * upstream must receive it. */
#define H2H_CC_LINE "X-Forwarded-Client-Cert: Hash=00ff;Subject=\"CN=fuzz\"\r\n"
#define H2H_CC_VALUE "Hash=00ff;Subject=\"CN=fuzz\""
#define H2H_CLIENT "192.0.2.1"

static struct config *h2h_cfg;
static struct server h2h_srv;
static struct worker h2h_w;

static void h2h_nop(struct conn *c)
{
}

static void h2h_closed(struct worker *w, struct conn *c)
{
}

/* Only what a CONN_H2 connection reaches: the h2 entries and the close path. */
static const struct conn_handlers h2h_handlers = {
    .upstream_close = h2h_nop,
    .upstream_update_poll = h2h_nop,
    .h2_start = h2_server_start,
    .h2_input = h2_server_input,
    .h2_output = h2_server_output,
    .h2_want_read = h2_server_want_read,
    .h2_drain = h2_server_drain,
    .h2_close = h2_server_close,
    .closed = h2h_closed,
};

static void h2h_init(const struct h2_backend *be)
{
    if (h2h_cfg != NULL)
        return;
    char err[512] = "";
    if (config_load_string(&h2h_cfg, "fuzz.yaml", h2h_yaml, strlen(h2h_yaml), err, sizeof(err)) !=
        0) {
        fprintf(stderr, "h2_harness: %s\n", err);
        abort();
    }
    log_set_level(LOG_LEVEL_ERROR); /* the abuse warnings, once per flood input */
    metrics_init(h2h_cfg);
    h2h_srv.cfg = h2h_cfg;
    h2h_w.srv = &h2h_srv;
    CHECK(uv_loop_init(&h2h_w.loop) == 0);
    conn_set_handlers(&h2h_handlers);
    h2_server_set_backend(be);
}

/* h2h_conn_new returns a connection of listener |index| in CONN_H2 whose session has started
 * (its SETTINGS are queued), as handshake_done leaves it; its client is 192.0.2.1:4711. */
static struct conn *h2h_conn_new(size_t index)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    close(sv[1]);
    struct conn *c = xcalloc(1, sizeof(*c));
    c->worker = &h2h_w;
    c->index = index;
    c->lc = &h2h_cfg->listeners[index];
    c->peer.in.sin_family = AF_INET;
    c->peer.in.sin_port = htons(4711);
    c->peer.in.sin_addr.s_addr = htonl(0xc0000201);
    c->fd = sv[0];
    c->start = base_now_us();
    c->state = CONN_HANDSHAKE;
    uv_poll_init(&h2h_w.loop, &c->poll, c->fd);
    c->poll.data = c;
    uv_timer_init(&h2h_w.loop, &c->timer);
    c->timer.data = c;
    c->next = h2h_w.conns;
    if (h2h_w.conns != NULL)
        h2h_w.conns->prev = c;
    h2h_w.conns = c;
    h2h_w.num_conns++;
    c->cc_computed = true;
    c->has_client_cert = true;
    c->cc_headers = xstrdup(H2H_CC_LINE);
    c->cc_element = xstrdup(H2H_CC_VALUE);
    conn_set_state(c, CONN_H2);
    h2_server_start(c);
    CHECK(c->h2 != NULL);
    return c;
}

/* h2h_conn_free closes |c| and runs the loop until its memory is gone. */
static void h2h_conn_free(struct conn *c)
{
    conn_close(c);
    uv_run(&h2h_w.loop, UV_RUN_NOWAIT);
}

#endif
