/* h2_up1_head.c: heads translated between an HTTP/2 stream and its HTTP/1.1 upstream. The
 * request head is written from the stream's (already sanitised) header list with our own
 * framing; the response head goes through head_scan and llhttp as in http.c, loses its
 * hop-by-hop headers and goes to the client side with lowercase names. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base.h"
#include "core/config.h"
#include "h2/h2_up1_internal.h"
#include "http/message.h"
#include "net/worker.h"

/* --- the request -------------------------------------------------------------------------- */

static bool nv_is(const nghttp2_nv *nv, const char *lit)
{
    return http_name_is((const char *)nv->name, nv->namelen, lit);
}

static bool method_is(const struct h2_stream *s, const char *lit)
{
    return s->method_len == strlen(lit) && memcmp(s->method, lit, s->method_len) == 0;
}

/* RFC 9110 9.2.2, as http_method_idempotent: only such a request is sent again. */
static bool method_idempotent(const struct h2_stream *s)
{
    return method_is(s, "GET") || method_is(s, "HEAD") || method_is(s, "OPTIONS") ||
           method_is(s, "TRACE") || method_is(s, "PUT") || method_is(s, "DELETE");
}

int up1_request_head(struct up1 *x)
{
    struct h2_stream *s = x->s;
    const nghttp2_nv *nv = h2_hdrs_nv(&s->req);
    const nghttp2_nv *path = NULL, *authority = NULL;
    for (size_t i = 0; i < s->req.num; i++) {
        if (nv_is(&nv[i], ":path"))
            path = &nv[i];
        else if (nv_is(&nv[i], ":authority"))
            authority = &nv[i];
    }
    if (path == NULL || path->valuelen == 0 || s->method_len == 0)
        return -EINVAL;
    struct buf *o = &x->out;
    buf_append(o, s->method, s->method_len);
    buf_append(o, " ", 1);
    buf_append(o, path->value, path->valuelen);
    buf_append(o, " HTTP/1.1\r\n", 11);
    if (authority != NULL)
        http_put_header(o, "host", 4, (const char *)authority->value, authority->valuelen);
    bool host = authority != NULL, cl_sent = false;
    for (size_t i = 0; i < s->req.num; i++) {
        const char *n = (const char *)nv[i].name;
        if (nv_is(&nv[i], "content-length"))
            cl_sent = true;
        if (nv[i].namelen == 0 || n[0] == ':' || http_is_hop_by_hop(n, nv[i].namelen))
            continue; /* the framing is ours; te: trailers means nothing to HTTP/1.1 */
        if (nv_is(&nv[i], "host")) {
            if (host)
                continue; /* :authority said it (the client side checked they agree) */
            host = true;
        }
        http_put_header(o, n, nv[i].namelen, (const char *)nv[i].value, nv[i].valuelen);
    }
    if (!host)
        buf_appends(o, "host: \r\n"); /* RFC 9112 3.2: empty when there is no authority */
    /* Framing: the client's Content-Length, else chunked while the body is still coming, else
     * the body that came with the head (the client side sets req_content_length to 0 for a
     * request that ended with its head: no Content-Length then, except for the methods whose
     * servers expect one). */
    x->req_chunked = false;
    x->req_terminated = false;
    x->data_left = 0;
    bool length = false;
    if (s->req_content_length > 0 || (s->req_content_length == 0 && cl_sent)) {
        x->data_left = (uint64_t)s->req_content_length;
        length = true;
    } else if (!s->req_end) {
        x->req_chunked = true;
        buf_appends(o, "transfer-encoding: chunked\r\n");
    } else if (buf_used(&s->req_body) > 0) {
        x->data_left = buf_used(&s->req_body); /* all of it came with the head */
        length = true;
    } else {
        length = method_is(s, "POST") || method_is(s, "PUT") || method_is(s, "PATCH");
    }
    if (length)
        buf_appendf(o, "content-length: %llu\r\n", (unsigned long long)x->data_left);
    buf_append(o, "\r\n", 2);
    x->req_head_method = method_is(s, "HEAD");
    x->req_idempotent = method_idempotent(s);
    return 0;
}

/* --- the response ------------------------------------------------------------------------- */

/* Headers of a response head handled without allocating (more take the heap). */
#define UP1_STACK_HEADERS 48

struct span {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
};

/* The headers of the one head being parsed (a head is parsed in a single llhttp_execute, so
 * offsets relative to |base| stay valid). */
struct parse {
    const char *base;
    struct span *h;
    unsigned num, max;
    bool overflow, in_value, complete;
};

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct parse *ps = p->data;
    if (ps->num > 0 && !ps->in_value) {
        ps->h[ps->num - 1].name_len += (uint32_t)len; /* the name arrived in pieces */
        return 0;
    }
    if (ps->num == ps->max) {
        ps->overflow = true;
        return 0;
    }
    ps->in_value = false;
    struct span *h = &ps->h[ps->num++];
    *h = (struct span){.name_off = (uint32_t)(at - ps->base), .name_len = (uint32_t)len};
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    ((struct parse *)p->data)->in_value = true;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct parse *ps = p->data;
    if (ps->overflow || ps->num == 0)
        return 0;
    struct span *h = &ps->h[ps->num - 1];
    if (h->value_len == 0)
        h->value_off = (uint32_t)(at - ps->base);
    h->value_len += (uint32_t)len;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    ((struct parse *)p->data)->complete = true;
    return HPE_PAUSED; /* llhttp never sees the body */
}

static const llhttp_settings_t response_settings = {
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
};

/* The response's framing (one Transfer-Encoding, chunked; llhttp's strict mode has refused
 * Content-Length with it and conflicting Content-Lengths) and the body it announces. Returns
 * false when the head is not acceptable. */
static bool response_framing(struct up1 *x, const struct parse *ps, char *d,
                             struct http_tokens *conn_tokens)
{
    unsigned n_te = 0;
    const struct span *te = NULL;
    for (unsigned i = 0; i < ps->num; i++) {
        const struct span *h = &ps->h[i];
        const char *n = d + h->name_off;
        if (http_name_is(n, h->name_len, "transfer-encoding")) {
            n_te++;
            te = h;
        } else if (http_name_is(n, h->name_len, "connection")) {
            http_collect_tokens(conn_tokens, d + h->value_off, h->value_len);
        }
    }
    if (n_te > 0) {
        const char *v = d + te->value_off;
        size_t vl = te->value_len;
        http_trim(&v, &vl);
        if (n_te > 1 || !http_name_is(v, vl, "chunked"))
            return false; /* we would have to drop a coding */
    }
    const llhttp_t *p = &x->parser;
    int status = p->status_code;
    x->resp_bodiless = x->req_head_method || status == 204 || status == 304;
    size_t max_trailer = x->w->srv->cfg->limits.max_request_head;
    if (x->resp_bodiless)
        body_init(&x->body, BODY_NONE, 0, false, 0);
    else if (p->flags & F_CHUNKED)
        body_init(&x->body, BODY_CHUNKED, 0, false, max_trailer);
    else if (p->flags & F_CONTENT_LENGTH)
        body_init(&x->body, BODY_LENGTH, p->content_length, false, 0);
    else
        body_init(&x->body, BODY_EOF, 0, false, 0);
    if (x->body.kind == BODY_LENGTH && x->body.remaining == 0)
        x->body.kind = BODY_NONE;
    x->resp_keep_alive = llhttp_should_keep_alive(p);
    return true;
}

/* Hands the final head to the client side: names lowercased (in place: x->in is ours),
 * connection-specific headers and those the Connection header names dropped. The list points
 * into x->in (the client side copies it): no copy here, and no allocation for a usual head. */
static void response_deliver(struct up1 *x, const struct parse *ps, char *d,
                             const struct http_tokens *conn_tokens)
{
    nghttp2_nv stack_nv[UP1_STACK_HEADERS];
    nghttp2_nv *nv = ps->num + 1 <= UP1_STACK_HEADERS ? stack_nv
                                                       : xcalloc(ps->num + 1, sizeof(*nv));
    size_t num = 0;
    const llhttp_t *p = &x->parser;
    int status = p->status_code;
    for (unsigned i = 0; i < ps->num; i++) {
        const struct span *h = &ps->h[i];
        char *n = d + h->name_off;
        if (http_is_hop_by_hop(n, h->name_len) || http_in_tokens(conn_tokens, n, h->name_len))
            continue;
        for (uint32_t k = 0; k < h->name_len; k++)
            n[k] = (char)tolower((unsigned char)n[k]);
        const char *v = d + h->value_off;
        size_t vl = h->value_len;
        http_trim(&v, &vl);
        nv[num++] = (nghttp2_nv){.name = (uint8_t *)n, .namelen = h->name_len,
                                 .value = (uint8_t *)(uintptr_t)v, .valuelen = vl};
    }
    /* Content-Length stays, as the size of the body (or of a HEAD's resource): written from
     * the parsed value, once. Never on a 204 (RFC 9110 8.6). */
    char cl[24];
    if ((p->flags & F_CONTENT_LENGTH) && status != 204) {
        size_t cll = base_utoa((unsigned long long)p->content_length, cl);
        nv[num++] = (nghttp2_nv){.name = (uint8_t *)"content-length", .namelen = 14,
                                 .value = (uint8_t *)cl, .valuelen = cll};
    }
    h2_stream_response_head(x->s, status, nv, num);
    if (nv != stack_nv)
        free(nv);
}

int up1_response_head(struct up1 *x)
{
    const struct config_limits *lim = &x->w->srv->cfg->limits;
    char *d = buf_data(&x->in);
    /* Obs-fold, a bare CR or LF, a NUL or an oversized head: 502, never copied. */
    long len = head_scan(&x->scan, d, buf_used(&x->in), lim->max_request_head,
                         MAX(lim->max_headers, 128u) + 8);
    if (len == 0)
        return 0;
    if (len < 0)
        return -1;
    struct span stack_h[UP1_STACK_HEADERS];
    struct parse ps = {.base = d, .max = x->scan.lines, .h = stack_h};
    memset(&x->scan, 0, sizeof(x->scan)); /* the next head (after a 1xx) starts afresh */
    if (ps.max > UP1_STACK_HEADERS)
        ps.h = xcalloc(ps.max, sizeof(*ps.h));
    llhttp_init(&x->parser, HTTP_RESPONSE, &response_settings);
    x->parser.data = &ps;
    llhttp_errno_t e = llhttp_execute(&x->parser, d, (size_t)len);
    int status = x->parser.status_code;
    bool ok = (e == HPE_OK || e == HPE_PAUSED) && ps.complete && !ps.overflow && status >= 100 &&
              status <= 999 && status != 101; /* no upgrade was asked for */
    struct http_tokens conn_tokens = {0};
    if (ok && status >= 200) {
        ok = response_framing(x, &ps, d, &conn_tokens);
        if (ok) {
            response_deliver(x, &ps, d, &conn_tokens);
            x->head_done = true;
        }
    }
    x->parser.data = NULL;
    if (ps.h != stack_h)
        free(ps.h);
    if (!ok)
        return -1;
    buf_consume(&x->in, (size_t)len);
    return 1;
}
