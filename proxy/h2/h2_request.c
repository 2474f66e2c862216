/* h2_request.c: an HTTP/2 request head checked and rebuilt as it goes upstream, under the HTTP/1
 * path's rules (h2_request.h). */
#include "h2/h2_request.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/base.h"
#include "core/log.h"
#include "exchange/http.h"
#include "http/message.h"
#include "http/reqhead.h"
#include "http/xfcc.h"
#include "net/conn.h"
#include "net/worker.h"
#include "tls/tls.h"

/* The request's X-Request-Id: the client's when it sent exactly one valid one, else new. */
static void choose_request_id(const struct h2_hdrs *raw, char *id)
{
    const char *v = NULL;
    size_t vl = 0;
    unsigned n_rid = 0;
    for (size_t i = 0; i < raw->num; i++) {
        const char *n, *val;
        size_t nl, l;
        h2_hdrs_at(raw, i, &n, &nl, &val, &l);
        if (http_name_is(n, nl, "x-request-id")) {
            v = val;
            vl = l;
            n_rid++;
        }
    }
    http_trim(&v, &vl);
    if (n_rid == 1 && http_request_id_valid(v, vl)) {
        memcpy(id, v, vl);
        id[vl] = '\0';
    } else {
        http_new_request_id(id);
    }
}

static void note_request(struct h2_stream *s, const char *id)
{
    if (!s->c->worker->srv->cfg->log_access)
        return;
    struct buf *b = &s->req_log;
    const char *ua = NULL;
    size_t ual = 0;
    for (size_t i = 0; i < s->raw.num && ua == NULL; i++) {
        const char *n, *v;
        size_t nl, vl;
        h2_hdrs_at(&s->raw, i, &n, &nl, &v, &vl);
        if (http_name_is(n, nl, "user-agent")) {
            ua = v;
            ual = vl;
        }
    }
    log_strn(b, "method", s->p_method, MIN(s->p_method_len, 32));
    log_strn(b, "path", s->p_path, MIN(s->p_path_len, 512));
    if (s->p_authority != NULL)
        log_strn(b, "host", s->p_authority, MIN(s->p_authority_len, 256));
    else
        log_str(b, "host", NULL);
    if (ua != NULL)
        log_strn(b, "user_agent", ua, MIN(ual, 256));
    else
        log_str(b, "user_agent", NULL);
    log_str(b, "request_id", id);
}

/* certgate's client-certificate headers (CONTRACT section 5), as http_write_cc_headers writes
 * them for HTTP/1: the incoming copies of the listener's own header when a forward mode keeps
 * them, then ours. */
static void add_cc_headers(struct h2_stream *s)
{
    struct conn *c = s->c;
    struct http_cc_plan plan;
    http_cc_plan(c, &plan);
    struct buf joined = {0};
    for (size_t i = 0; plan.keep_incoming && i < s->raw.num; i++) {
        const char *n, *v;
        size_t nl, vl;
        h2_hdrs_at(&s->raw, i, &n, &nl, &v, &vl);
        bool underscore = false;
        enum xfcc_name kind = xfcc_classify(n, nl, &underscore);
        if (kind == XFCC_NAME_NONE || underscore || !http_cc_own(c->lc, kind))
            continue;
        http_trim(&v, &vl);
        if (!plan.append) {
            h2_hdrs_add(&s->req, n, nl, v, vl);
        } else if (vl > 0) {
            if (buf_used(&joined) > 0)
                buf_append(&joined, ",", 1);
            buf_append(&joined, v, vl);
        }
    }
    if (plan.append) {
        if (buf_used(&joined) > 0)
            buf_append(&joined, ",", 1);
        buf_appends(&joined, c->cc_element);
        h2_hdrs_add(&s->req, "x-forwarded-client-cert", 23, buf_data(&joined), buf_used(&joined));
    }
    buf_free(&joined);
    if (!plan.add_ours || c->cc_headers == NULL)
        return;
    /* c->cc_headers holds "Name: value\r\n" lines; HTTP/2 names are lowercase. */
    char name[64];
    for (const char *p = c->cc_headers; *p != '\0';) {
        const char *colon = strchr(p, ':');
        const char *eol = strstr(p, "\r\n");
        if (colon == NULL || eol == NULL || colon > eol || (size_t)(colon - p) > sizeof(name))
            break;
        size_t nl = (size_t)(colon - p);
        for (size_t j = 0; j < nl; j++)
            name[j] = (char)((p[j] >= 'A' && p[j] <= 'Z') ? p[j] + 32 : p[j]);
        const char *v = colon + 1;
        size_t vl = (size_t)(eol - v);
        http_trim(&v, &vl);
        h2_hdrs_add(&s->req, name, nl, v, vl);
        p = eol + 2;
    }
}

/* X-Forwarded-For and X-Forwarded-Proto per the listener's forwarded_headers. */
static void add_forwarded(struct h2_stream *s)
{
    enum forwarded_headers mode = s->c->lc->forwarded_headers;
    if (mode == FORWARDED_OFF)
        return;
    struct buf xff = {0};
    for (size_t i = 0; mode == FORWARDED_APPEND && i < s->raw.num; i++) {
        const char *n, *v;
        size_t nl, vl;
        h2_hdrs_at(&s->raw, i, &n, &nl, &v, &vl);
        if (reqhead_classify(s->c->lc, n, nl) != REQHEAD_XFF_APPEND)
            continue;
        http_trim(&v, &vl);
        if (vl == 0)
            continue;
        if (buf_used(&xff) > 0)
            buf_appends(&xff, ", ");
        buf_append(&xff, v, vl);
    }
    char addr[INET6_ADDRSTRLEN];
    bool known = http_client_address(s->c, addr, sizeof(addr));
    if (buf_used(&xff) == 0) { /* the usual case: the client's address alone, no copy */
        if (known)
            h2_hdrs_add(&s->req, "x-forwarded-for", 15, addr, strlen(addr));
    } else {
        if (known) {
            buf_appends(&xff, ", ");
            buf_appends(&xff, addr);
        }
        h2_hdrs_add(&s->req, "x-forwarded-for", 15, buf_data(&xff), buf_used(&xff));
    }
    buf_free(&xff);
    h2_hdrs_add(&s->req, "x-forwarded-proto", 17, "https", 5);
}

static int build(struct h2_stream *s, const char *request_id)
{
    struct conn *c = s->c;
    if (s->refuse != 0)
        return s->refuse;
    if (s->p_method == NULL || http_name_is(s->p_method, s->p_method_len, "CONNECT") ||
        s->p_path == NULL || s->p_scheme == NULL)
        return 400; /* CONNECT (and extended CONNECT) are not proxied, as for HTTP/1 */
    if (!http_name_is(s->p_scheme, s->p_scheme_len, "https"))
        return 400;
    /* :authority is the host; a host header that disagrees is ambiguous (RFC 9113 8.3.1). */
    const char *host = NULL;
    size_t host_len = 0;
    unsigned n_host = 0;
    for (size_t i = 0; i < s->raw.num; i++) {
        const char *n, *v;
        size_t nl, vl;
        h2_hdrs_at(&s->raw, i, &n, &nl, &v, &vl);
        if (http_name_is(n, nl, "host")) {
            host = v;
            host_len = vl;
            n_host++;
        }
    }
    if (n_host > 1)
        return 400;
    if (s->p_authority != NULL && host != NULL &&
        (s->p_authority_len != host_len || strncasecmp(s->p_authority, host, host_len) != 0))
        return 400;
    const char *auth = s->p_authority != NULL ? s->p_authority : host;
    size_t auth_len = s->p_authority != NULL ? s->p_authority_len : host_len;
    if (auth == NULL || auth_len == 0)
        return 400;
    struct reqhead_target target;
    if (reqhead_target_parse(&target, s->p_path, s->p_path_len,
                             http_name_is(s->p_method, s->p_method_len, "OPTIONS")) < 0 ||
        target.authority != NULL)
        return 400; /* :path is origin-form (or * for OPTIONS) in HTTP/2 */
    if (c->ssl != NULL) {
        if (!tls_host_allowed(c->gen, c->index, c->ssl, auth, auth_len))
            return 421; /* the tenant is bound to the connection, never to :authority */
        if (!conn_still_trusted(c) || !conn_allowed(c))
            return 403;
    }

    h2_hdrs_add(&s->req, ":method", 7, s->p_method, s->p_method_len);
    h2_hdrs_add(&s->req, ":scheme", 7, "https", 5);
    h2_hdrs_add(&s->req, ":authority", 10, auth, auth_len);
    h2_hdrs_add(&s->req, ":path", 5, s->p_path, s->p_path_len);
    struct buf cookie = {0};
    for (size_t i = 0; i < s->raw.num; i++) {
        const char *n, *v;
        size_t nl, vl;
        h2_hdrs_at(&s->raw, i, &n, &nl, &v, &vl);
        if (nl > 0 && n[0] == ':')
            continue; /* the pseudo-headers went first, above */
        enum reqhead_verdict verdict = reqhead_classify(c->lc, n, nl);
        if (verdict == REQHEAD_REFUSE) {
            buf_free(&cookie);
            return 400;
        }
        if (http_name_is(n, nl, "te") && c->lc->upstream_protocol == UPSTREAM_H2C) {
            /* nghttp2 let only "trailers" in; an h2c hop carries it (gRPC servers want it). */
            h2_hdrs_add(&s->req, "te", 2, "trailers", 8);
            continue;
        }
        if (verdict != REQHEAD_FORWARD || http_name_is(n, nl, "host") ||
            http_name_is(n, nl, "x-request-id") || h2_connection_specific(n, nl))
            continue;
        if (http_name_is(n, nl, "cookie")) {
            /* RFC 9113 8.2.3: crumbs are joined for an HTTP/1.1 hop, and may be for h2. */
            if (buf_used(&cookie) > 0)
                buf_appends(&cookie, "; ");
            buf_append(&cookie, v, vl);
            continue;
        }
        if (http_name_is(n, nl, "content-length")) {
            char *end = NULL;
            char tmp[24];
            if (vl == 0 || vl >= sizeof(tmp)) {
                buf_free(&cookie);
                return 400;
            }
            memcpy(tmp, v, vl);
            tmp[vl] = '\0';
            long long cl = strtoll(tmp, &end, 10);
            if (*end != '\0' || cl < 0) {
                buf_free(&cookie);
                return 400;
            }
            s->req_content_length = cl;
        }
        h2_hdrs_add(&s->req, n, nl, v, vl);
    }
    if (buf_used(&cookie) > 0)
        h2_hdrs_add(&s->req, "cookie", 6, buf_data(&cookie), buf_used(&cookie));
    buf_free(&cookie);
    h2_hdrs_add(&s->req, "x-request-id", 12, request_id, strlen(request_id));
    add_forwarded(s);
    add_cc_headers(s);
    if (s->req_end && s->req_content_length < 0 && buf_used(&s->req_body) == 0)
        s->req_content_length = 0;
    /* The method as the upstream side reads it (into the arena of s->req). */
    const char *n, *v;
    size_t nl, vl;
    h2_hdrs_at(&s->req, 0, &n, &nl, &v, &vl);
    s->method = v;
    s->method_len = vl;
    return 0;
}

int h2_request_build(struct h2_stream *s)
{
    char request_id[HTTP_REQUEST_ID_MAX + 1];
    choose_request_id(&s->raw, request_id);
    note_request(s, request_id);
    return build(s, request_id);
}
