/* conn_log.c: the access log: one line per response or relayed connection. */
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
#include "tls/tls.h"

#include "net/conn_internal.h"
#include "net/worker.h"

/* --- access log ---------------------------------------------------------------------------- */

/* Writes one access-log line. |response_from| is "upstream" or "certgate" for an HTTP
 * response, NULL for a relayed connection. */
void conn_access_log(struct conn *c, const char *response_from)
{
    struct conn_exchange_log x = {
        .req_log = &c->ex.req_log,
        .status = c->ex.status,
        .req_start = c->ex.req_start,
        .bytes_in = c->bytes_in,
        .bytes_out = c->bytes_out,
        .response_from = response_from,
    };
    conn_access_log_exchange(c, &x);
}

void conn_access_log_exchange(struct conn *c, const struct conn_exchange_log *x)
{
    bool http = c->lc->mode == LISTENER_HTTP;
    uint64_t start = http && x->req_start ? x->req_start : c->start;
    uint64_t duration_us = base_now_us() - start;
    const char *response_from = x->response_from;
    if (http)
        metrics_request(c->index, x->status, duration_us);
    metrics_bytes(c->index, x->bytes_in, x->bytes_out);
    if (!c->worker->srv->cfg->log_access)
        return;
    bool shook = c->ssl != NULL && c->state != CONN_HANDSHAKE;
    char peer[CONN_ADDR_TEXT_MAX];
    conn_client_addr_text(c, peer, sizeof(peer), true);
    struct buf b = {0};
    log_begin(&b, LOG_LEVEL_INFO, "access");
    log_str(&b, "listener", c->lc->name);
    log_str(&b, "tenant", shook ? tls_tenant(c->ssl) : NULL);
    if (shook && c->client_subject == NULL)
        c->client_subject = tls_peer_subject(c->ssl);
    log_str(&b, "subject", c->client_subject);
    if (buf_used(x->req_log) > 0) {
        buf_append(&b, buf_data(x->req_log), buf_used(x->req_log));
    } else {
        /* A relay, or a request refused before its head could be read. */
        static const char *const none[] = {"method", "path", "host", "user_agent"};
        for (size_t i = 0; i < ARRAY_SIZE(none); i++)
            log_str(&b, none[i], NULL);
        char id[HTTP_REQUEST_ID_NEW_LEN + 1];
        log_str(&b, "request_id", http ? http_new_request_id(id) : NULL);
    }
    if (http)
        log_num(&b, "status", x->status);
    else
        log_str(&b, "status", NULL);
    log_str(&b, "response_from", response_from);
    log_num(&b, "bytes_in", (long long)x->bytes_in);
    log_num(&b, "bytes_out", (long long)x->bytes_out);
    log_num(&b, "duration_ms", (long long)(duration_us / 1000));
    log_num(&b, "duration_us", (long long)duration_us);
    log_str(&b, "upstream", c->lc->upstream.text);
    log_str(&b, "tls_version", c->ssl ? tls_version(c->ssl) : NULL);
    if (x->protocol != NULL)
        log_str(&b, "protocol", x->protocol);
    log_str(&b, "peer", peer);
    log_str(&b, "sni", c->ssl ? tls_sni(c->ssl) : NULL);
    log_end(&b);
}
