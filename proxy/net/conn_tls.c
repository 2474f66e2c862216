/* conn_tls.c: the TLS side of a client connection: the handshake (continued after an
 * asynchronous OCSP query), and whether the client still verifies and is still allowed after
 * a reload or an allowlist change. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "tls/allowlist.h"
#include "tls/tls.h"

#include "net/conn_internal.h"
#include "net/worker.h"

static void handshake_done(struct conn *c)
{
    if (tls_resumed(c->ssl)) {
        int r = tls_check_resumed(c->ssl);
        if (r == TLS_WANT_VERIFY) {
            c->hs_verify_pending = true; /* verify_resume runs the handshake (done) again */
            return;
        }
        if (r != 1) {
            conn_close(c);
            return;
        }
    }
    metrics_handshake(c->index, tls_resumed(c->ssl) ? METRICS_HS_RESUMED : METRICS_HS_OK);
    c->tls_flush_pending = true; /* conn_event_end sends the session tickets */
    if (c->lc->mode == LISTENER_TLS) {
        if (!conn_allowed(c)) { /* a resumed session skipped the verify callback */
            log_msg(LOG_LEVEL_WARN, "connection_refused",
                    "listener %s: the client's subject is not in the allowlist", c->lc->name);
            conn_close(c);
            return;
        }
        conn_set_state(c, CONN_TUNNEL);
        conn_handlers()->upstream_connect(c);
        return;
    }
    if (tls_alpn_h2(c->ssl)) {
        conn_set_state(c, CONN_H2);
        conn_handlers()->h2_start(c);
        conn_client_read(c);
        return;
    }
    conn_set_state(c, CONN_HEAD);
    conn_client_read(c);
}

void conn_handshake(struct conn *c)
{
    int r = tls_handshake(c->ssl);
    c->hs_want_write = false;
    c->hs_verify_pending = false;
    if (r == 1) {
        handshake_done(c);
        return;
    }
    if (r == TLS_WANT_READ)
        return;
    if (r == TLS_WANT_VERIFY) {
        c->hs_verify_pending = true; /* verify_resume continues */
        return;
    }
    if (r == TLS_WANT_WRITE) {
        c->hs_want_write = true;
        return;
    }
    conn_close(c);
}

static uv_loop_t *loop_of(void *app)
{
    struct conn *c = app;
    return c != NULL ? &c->worker->loop : NULL;
}

/* An OCSP query of |app|'s handshake finished: run the handshake on. */
static void verify_resume(void *app)
{
    struct conn *c = app;
    if (c == NULL || c->state != CONN_HANDSHAKE || !c->hs_verify_pending)
        return;
    conn_handshake(c);
    conn_event_end(c);
}

void conn_init_hooks(void)
{
    tls_set_async_hooks(loop_of, verify_resume);
}


bool conn_still_trusted(struct conn *c)
{
    struct server *srv = c->worker->srv;
    if (c->ssl == NULL || c->untrusted)
        return !c->untrusted;
    if (atomic_load_explicit(&srv->gen, memory_order_acquire) == c->gen)
        return true;
    struct tls_gen *gen = server_gen(srv);
    uint64_t id = tls_gen_id(gen);
    if (id > c->checked_gen_id) {
        c->checked_gen_id = id;
        c->untrusted = !tls_reverify(gen, c->index, c->ssl);
    }
    tls_gen_unref(gen);
    return !c->untrusted;
}

bool conn_allowed(struct conn *c)
{
    if (!c->lc->require_allowed_subject)
        return true;
    uint64_t v = allowlist_version();
    if (v != c->allow_version) {
        c->allow_version = v;
        c->allow_ok = tls_peer_allowed(c->ssl);
    }
    return c->allow_ok;
}

void conn_recheck(struct conn *c)
{
    /* A tunnel, or an HTTP/2 connection whose streams (a gRPC stream may last for hours) were
     * checked when they began: a client that no longer verifies loses them now. */
    bool long_lived = c->state == CONN_TUNNEL || c->state == CONN_H2;
    if (long_lived && (!conn_still_trusted(c) || !conn_allowed(c)))
        conn_close(c);
}
