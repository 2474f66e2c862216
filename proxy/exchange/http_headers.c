/* http_headers.c: the headers certgate adds to a forwarded request (the client-certificate
 * header of CONTRACT section 5, X-Forwarded-For / -Proto per forwarded_headers), the request id,
 * and the access-log fields of a request. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base.h"
#include "core/log.h"
#include "exchange/http.h"
#include "exchange/http_internal.h"
#include "http/xfcc.h"
#include "net/worker.h"
#include "tls/tls.h"

/* --- the access log ----------------------------------------------------------------------- */

/* Bounds of what an access line keeps of the request. */
#define LOG_PATH_MAX 512
#define LOG_HOST_MAX 256
#define LOG_USER_AGENT_MAX 256

static void log_header(struct buf *b, const char *key, const struct scratch *s, const struct hdr *h,
                       size_t max)
{
    if (h == NULL) {
        log_str(b, key, NULL);
        return;
    }
    const char *v = HVALUE(s, h);
    size_t vl = h->value_len;
    http_trim(&v, &vl);
    log_strn(b, key, v, MIN(vl, max));
}

/* Chooses the request's id into |id| (HTTP_REQUEST_ID_MAX + 1 bytes): the client's X-Request-Id
 * when it sent exactly one valid one, else a new one. Then records the access-log fields of the
 * request, before any check can refuse it, so that a 4xx line still says what was asked. */
void http_note_request(struct conn *c, llhttp_t *p, const struct scratch *s, const struct hdr *host,
                       char *id)
{
    const struct hdr *ua = NULL, *rid = NULL;
    unsigned n_rid = 0;
    for (unsigned i = 0; i < s->num; i++) {
        const struct hdr *h = &s->h[i];
        if (http_name_is(HNAME(s, h), h->name_len, "x-request-id")) {
            rid = h;
            n_rid++;
        } else if (ua == NULL && http_name_is(HNAME(s, h), h->name_len, "user-agent")) {
            ua = h;
        }
    }
    const char *v = rid ? HVALUE(s, rid) : NULL;
    size_t vl = rid ? rid->value_len : 0;
    http_trim(&v, &vl);
    if (n_rid == 1 && http_request_id_valid(v, vl)) {
        memcpy(id, v, vl);
        id[vl] = '\0';
    } else {
        http_new_request_id(id);
    }
    if (!c->worker->srv->cfg->log_access)
        return;
    struct buf *b = &c->ex.req_log;
    buf_free(b);
    log_str(b, "method", llhttp_method_name(llhttp_get_method(p)));
    log_strn(b, "path", s->base + s->url_off, MIN(s->url_len, (uint32_t)LOG_PATH_MAX));
    log_header(b, "host", s, host, LOG_HOST_MAX);
    log_header(b, "user_agent", s, ua, LOG_USER_AGENT_MAX);
    log_str(b, "request_id", id);
}


void http_cc_plan(struct conn *c, struct http_cc_plan *plan)
{
    const struct listener_config *lc = c->lc;
    if (!c->cc_computed) {
        c->cc_computed = true;
        if (c->ssl != NULL) {
            struct buf lines = {0}, element = {0};
            c->has_client_cert =
                tls_client_cert_headers(c->gen, c->index, c->ssl, &lines, &element);
            if (c->has_client_cert) {
                c->cc_headers = xstrndup(buf_data(&lines), buf_used(&lines));
                if (lc->forward_client_cert == FCC_APPEND_FORWARD)
                    c->cc_element = xstrndup(buf_data(&element), buf_used(&element));
            }
            buf_free(&lines);
            buf_free(&element);
        }
    }
    enum fcc_mode mode = lc->forward_client_cert;
    /* append_forward only means something for XFCC's element list; for the other formats it
     * replaces, as sanitize_set does. */
    plan->keep_incoming =
        mode == FCC_ALWAYS_FORWARD_ONLY ||
        (c->has_client_cert &&
         (mode == FCC_FORWARD_ONLY ||
          (mode == FCC_APPEND_FORWARD && lc->client_cert_header == CC_HEADER_XFCC)));
    plan->add_ours = c->has_client_cert &&
                     (mode == FCC_SANITIZE_SET ||
                      (mode == FCC_APPEND_FORWARD && lc->client_cert_header != CC_HEADER_XFCC));
    plan->append = c->has_client_cert && mode == FCC_APPEND_FORWARD &&
                   lc->client_cert_header == CC_HEADER_XFCC;
}

bool http_cc_own(const struct listener_config *lc, int kind)
{
    return (lc->client_cert_header == CC_HEADER_XFCC && kind == XFCC_NAME_XFCC) ||
           (lc->client_cert_header == CC_HEADER_RFC9440 &&
            (kind == XFCC_NAME_CLIENT_CERT || kind == XFCC_NAME_CLIENT_CERT_CHAIN)) ||
           (lc->client_cert_header == CC_HEADER_PEM && kind == XFCC_NAME_X_SSL_CLIENT_CERT);
}

/* Writes this hop's client-certificate headers per CONTRACT section 5. */
void http_write_cc_headers(struct conn *c, struct scratch *s, const struct http_tokens *conn_tokens)
{
    const struct listener_config *lc = c->lc;
    struct http_cc_plan plan;
    http_cc_plan(c, &plan);
    bool keep_incoming = plan.keep_incoming, add_ours = plan.add_ours, append = plan.append;
    bool appended = false;

    if (keep_incoming) {
        for (unsigned i = 0; i < s->num; i++) {
            struct hdr *h = &s->h[i];
            bool underscore = false;
            enum xfcc_name kind = xfcc_classify(HNAME(s, h), h->name_len, &underscore);
            /* A copy the client declared hop-by-hop (named in Connection) is not forwarded. */
            if (kind == XFCC_NAME_NONE || underscore ||
                http_in_tokens(conn_tokens, HNAME(s, h), h->name_len))
                continue;
            if (!http_cc_own(lc, kind))
                continue;
            const char *v = HVALUE(s, h);
            size_t vl = h->value_len;
            http_trim(&v, &vl);
            if (append && !appended) {
                /* All incoming copies join into one header, ours last. */
                buf_appends(&c->uout, "x-forwarded-client-cert: ");
                bool first = true;
                for (unsigned j = i; j < s->num; j++) {
                    struct hdr *hj = &s->h[j];
                    bool u2 = false;
                    if (xfcc_classify(HNAME(s, hj), hj->name_len, &u2) != XFCC_NAME_XFCC || u2 ||
                        http_in_tokens(conn_tokens, HNAME(s, hj), hj->name_len))
                        continue;
                    const char *vj = HVALUE(s, hj);
                    size_t vjl = hj->value_len;
                    http_trim(&vj, &vjl);
                    if (vjl == 0)
                        continue;
                    if (!first)
                        buf_append(&c->uout, ",", 1);
                    buf_append(&c->uout, vj, vjl);
                    first = false;
                }
                if (!first)
                    buf_append(&c->uout, ",", 1);
                buf_appends(&c->uout, c->cc_element);
                buf_appends(&c->uout, "\r\n");
                appended = true;
                continue;
            }
            if (append)
                continue;
            http_put_header(&c->uout, HNAME(s, h), h->name_len, v, vl);
        }
    }
    if (append && !appended) {
        buf_appends(&c->uout, "x-forwarded-client-cert: ");
        buf_appends(&c->uout, c->cc_element);
        buf_appends(&c->uout, "\r\n");
    }
    if (add_ours)
        buf_appends(&c->uout, c->cc_headers);
}

bool http_client_address(const struct conn *c, char *out, size_t len)
{
    socklen_t sl = 0;
    const struct sockaddr *sa = conn_client_addr(c, &sl);
    if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
        return false;
    conn_client_addr_text(c, out, len, false);
    return true;
}

/* Writes X-Forwarded-For and X-Forwarded-Proto per the listener's forwarded_headers (issue 11):
 * after the client's headers, so that a Connection header naming them cannot remove ours. */
void http_write_forwarded_headers(struct conn *c, struct scratch *s,
                                  const struct http_tokens *conn_tokens)
{
    enum forwarded_headers mode = c->lc->forwarded_headers;
    char addr[INET6_ADDRSTRLEN];
    if (mode == FORWARDED_OFF)
        return;
    struct buf *o = &c->uout;
    bool known = http_client_address(c, addr, sizeof(addr));
    bool first = true;
    if (mode == FORWARDED_APPEND) {
        /* As nginx's $proxy_add_x_forwarded_for: every incoming copy, then the client. */
        for (unsigned i = 0; i < s->num; i++) {
            struct hdr *h = &s->h[i];
            if (h->verdict != REQHEAD_XFF_APPEND ||
                http_in_tokens(conn_tokens, HNAME(s, h), h->name_len))
                continue;
            const char *v = HVALUE(s, h);
            size_t vl = h->value_len;
            http_trim(&v, &vl);
            if (vl == 0)
                continue;
            buf_appends(o, first ? "X-Forwarded-For: " : ", ");
            buf_append(o, v, vl);
            first = false;
        }
    }
    if (known) {
        buf_appends(o, first ? "X-Forwarded-For: " : ", ");
        buf_appends(o, addr);
        first = false;
    }
    if (!first)
        buf_appends(o, "\r\n");
    buf_appends(o, "X-Forwarded-Proto: https\r\n");
}
