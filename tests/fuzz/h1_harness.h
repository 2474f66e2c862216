/* h1_harness.h: a client connection for the fuzz targets of the HTTP/1 codec (fuzz_request.c,
 * fuzz_response.c). It runs the real exchange code (exchange/http.c over http/) on a struct
 * conn of a listener in mode http, without TLS and without a socket peer: the upstream side is
 * a stub registered through the socket layer's handler table (conn_set_handlers), so what the
 * upstream would receive is exactly what the exchange leaves in c->uout, and what the client
 * would receive what it leaves in c->cout. The connection's certificate headers are preset as
 * if its handshake had computed them, so the client-certificate header policy runs too. */
#ifndef CERTGATE_H1_HARNESS_H
#define CERTGATE_H1_HARNESS_H

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/base.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/metrics.h"
#include "exchange/http.h"
#include "http/head.h"
#include "net/conn.h"
#include "net/worker.h"

#include "fuzz_check.h"

/* The listener: sanitize_set, XFCC: every client copy of the header goes, ours is added. */
static const char h1_yaml[] = "workers: 1\n"
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
                              "    strip_headers: [x-user]\n";

/* This hop's header, as tls_client_cert_headers would have computed it. */
#define H1_CC_LINE "x-forwarded-client-cert: Hash=00ff;Subject=\"CN=fuzz\"\r\n"

static struct config *h1_cfg;
static struct server h1_srv;
static struct worker h1_w;
static unsigned h1_connects; /* exchanges started on the upstream stub */

static int h1_upstream_connect(struct conn *c)
{
    h1_connects++;
    return 0;
}

static void h1_upstream_nop(struct conn *c)
{
}

static void h1_closed(struct worker *w, struct conn *c)
{
}

static const struct conn_handlers h1_handlers = {
    .http_init = http_conn_init,
    .http_request = http_request_process,
    .http_response = http_response_process,
    .http_upstream_eof = http_upstream_eof,
    .upstream_connect = h1_upstream_connect,
    .upstream_flush = h1_upstream_nop,
    .upstream_close = h1_upstream_nop,
    .upstream_exchange_done = h1_upstream_nop,
    .upstream_update_poll = h1_upstream_nop,
    .closed = h1_closed,
};

static void h1_init(void)
{
    if (h1_cfg != NULL)
        return;
    char err[512] = "";
    if (config_load_string(&h1_cfg, "fuzz.yaml", h1_yaml, strlen(h1_yaml), err, sizeof(err)) != 0) {
        fprintf(stderr, "h1_harness: %s\n", err);
        abort();
    }
    metrics_init(h1_cfg);
    h1_srv.cfg = h1_cfg;
    h1_w.srv = &h1_srv;
    CHECK(uv_loop_init(&h1_w.loop) == 0);
    h1_w.scratch = http_scratch_new(h1_cfg->limits.max_headers);
    conn_set_handlers(&h1_handlers);
}

/* h1_conn_new returns a connection waiting for a request head, as after its handshake. */
static struct conn *h1_conn_new(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    close(sv[1]);
    struct conn *c = xcalloc(1, sizeof(*c));
    c->worker = &h1_w;
    c->lc = &h1_cfg->listeners[0];
    c->fd = sv[0];
    c->start = base_now_us();
    c->state = CONN_HEAD;
    uv_poll_init(&h1_w.loop, &c->poll, c->fd);
    c->poll.data = c;
    uv_timer_init(&h1_w.loop, &c->timer);
    c->timer.data = c;
    c->next = h1_w.conns;
    if (h1_w.conns != NULL)
        h1_w.conns->prev = c;
    h1_w.conns = c;
    h1_w.num_conns++;
    http_conn_init(c);
    c->cc_computed = true;
    c->has_client_cert = true;
    c->cc_headers = xstrdup(H1_CC_LINE);
    h1_connects = 0;
    return c;
}

/* h1_conn_free closes |c| (if the exchange did not) and runs the loop until its memory is gone. */
static void h1_conn_free(struct conn *c)
{
    conn_close(c);
    uv_run(&h1_w.loop, UV_RUN_NOWAIT);
}

/* h1_count_lines counts the lines of the head at the start of |b| whose name is |name| (any
 * case). */
static inline unsigned h1_count_lines(const char *p, size_t head_len, const char *name)
{
    size_t nl = strlen(name);
    unsigned n = 0;
    for (size_t i = 0; i < head_len;) {
        const char *eol = memchr(p + i, '\n', head_len - i);
        size_t end = eol != NULL ? (size_t)(eol - p) : head_len;
        if (end - i > nl && strncasecmp(p + i, name, nl) == 0 && p[i + nl] == ':')
            n++;
        i = end + 1;
    }
    return n;
}


#endif
