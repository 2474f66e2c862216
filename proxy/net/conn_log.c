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
    bool http = c->lc->mode == LISTENER_HTTP;
    uint64_t start = http && c->ex.req_start ? c->ex.req_start : c->start;
    uint64_t duration_us = base_now_us() - start;
    if (http)
        metrics_request(c->index, c->ex.status, duration_us);
    metrics_bytes(c->index, c->bytes_in, c->bytes_out);
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
    if (buf_used(&c->ex.req_log) > 0) {
        buf_append(&b, buf_data(&c->ex.req_log), buf_used(&c->ex.req_log));
    } else {
        /* A relay, or a request refused before its head could be read. */
        static const char *const none[] = {"method", "path", "host", "user_agent"};
        for (size_t i = 0; i < ARRAY_SIZE(none); i++)
            log_str(&b, none[i], NULL);
        char id[HTTP_REQUEST_ID_NEW_LEN + 1];
        log_str(&b, "request_id", http ? http_new_request_id(id) : NULL);
    }
    if (http)
        log_num(&b, "status", c->ex.status);
    else
        log_str(&b, "status", NULL);
    log_str(&b, "response_from", response_from);
    log_num(&b, "bytes_in", (long long)c->bytes_in);
    log_num(&b, "bytes_out", (long long)c->bytes_out);
    log_num(&b, "duration_ms", (long long)(duration_us / 1000));
    log_num(&b, "duration_us", (long long)duration_us);
    log_str(&b, "upstream", c->lc->upstream.text);
    log_str(&b, "tls_version", c->ssl ? tls_version(c->ssl) : NULL);
    log_str(&b, "peer", peer);
    log_str(&b, "sni", c->ssl ? tls_sni(c->ssl) : NULL);
    log_end(&b);
}
