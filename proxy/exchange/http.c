/* http.c: HTTP/1.1 framing on a connection. Request heads are scanned by hand first (llhttp 8.1
 * accepts "Host : x" and obs-fold; we do not), then parsed by llhttp in strict mode and written
 * to the upstream re-serialised from parsed data; bodies are re-framed and trailers dropped.
 * Response heads are parsed and re-serialised too; only a real 101 starts a tunnel. */
#include "exchange/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "core/base.h"
#include "core/log.h"
#include "core/metrics.h"
#include "exchange/http_internal.h"
#include "http/body.h"
#include "http/head.h"
#include "http/message.h"
#include "http/reqhead.h"
#include "http/xfcc.h"
#include "net/conn.h"
#include "net/worker.h"
#include "tls/tls.h"

void *http_scratch_new(unsigned max_headers)
{
    struct scratch *s = xcalloc(1, sizeof(*s));
    s->max = MAX(max_headers, 128u) + 8;
    s->h = xcalloc(s->max, sizeof(*s->h));
    return s;
}

void http_scratch_free(void *scratch)
{
    struct scratch *s = scratch;
    if (s == NULL)
        return;
    free(s->h);
    free(s);
}

static struct scratch *scratch_of(llhttp_t *p)
{
    struct conn *c = p->data;
    return c->worker->scratch;
}

/* --- llhttp callbacks shared by both directions ------------------------------------------ */

static int on_message_begin(llhttp_t *p)
{
    struct scratch *s = scratch_of(p);
    s->num = 0;
    s->overflow = false;
    s->in_value = false;
    s->in_trailers = false;
    s->url_len = s->reason_len = 0;
    return 0;
}

/* Grows the span |*off|, |*len| of the head by the piece llhttp hands over at |at|. */
static void span_add(const struct scratch *s, uint32_t *off, uint32_t *len, const char *at,
                     size_t n)
{
    if (*len == 0)
        *off = (uint32_t)(at - s->base);
    *len += (uint32_t)n;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct scratch *s = scratch_of(p);
    span_add(s, &s->url_off, &s->url_len, at, len);
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    struct scratch *s = scratch_of(p);
    span_add(s, &s->reason_off, &s->reason_len, at, len);
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct scratch *s = scratch_of(p);
    if (s->in_trailers)
        return 0; /* trailers are never forwarded */
    if (s->num > 0 && !s->in_value) {
        /* The name arrived in pieces. */
        s->h[s->num - 1].name_len += (uint32_t)len;
        return 0;
    }
    if (s->num == s->max) {
        s->overflow = true;
        return 0;
    }
    s->in_value = false;
    struct hdr *h = &s->h[s->num++];
    h->name_off = (uint32_t)(at - s->base);
    h->name_len = (uint32_t)len;
    h->value_off = h->value_len = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct scratch *s = scratch_of(p);
    if (s->in_trailers || s->overflow || s->num == 0)
        return 0;
    struct hdr *h = &s->h[s->num - 1];
    span_add(s, &h->value_off, &h->value_len, at, len);
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    scratch_of(p)->in_value = true; /* the next on_header_field starts a new header */
    return 0;
}


/* --- requests ----------------------------------------------------------------------------- */

/* Scans the complete lines of the request head (head.c). Returns the head's length when
 * complete, 0 when more is needed, or -status. */
static long scan_request_head(struct conn *c)
{
    const struct config_limits *lim = &c->worker->srv->cfg->limits;
    long r = head_scan(&c->ex.req_scan, buf_data(&c->cin), buf_used(&c->cin), lim->max_request_head,
                       lim->max_headers);
    switch (r) {
    case HEAD_BAD: return -400;
    case HEAD_LONG_LINE: return -414;
    case HEAD_TOO_BIG: return -431;
    default: return r;
    }
}

/* "Content-Length: N\r\n", without printf (once per request or response that has one). */
static void put_content_length(struct buf *o, uint64_t n)
{
    buf_append(o, "Content-Length: ", 16);
    buf_appendu(o, (unsigned long long)n);
    buf_append(o, "\r\n", 2);
}

static int request_head_done(llhttp_t *p)
{
    struct conn *c = p->data;
    struct scratch *s = scratch_of(p);
    if (s->overflow) {
        c->ex.head_error = 431;
        return -1;
    }
    unsigned n_host = 0, n_te = 0, n_cl = 0;
    struct hdr *host = NULL, *te = NULL, *upgrade = NULL;
    bool h2c = false;
    struct http_tokens conn_tokens = {0};
    bool refused = false;
    for (unsigned i = 0; i < s->num; i++) {
        struct hdr *h = &s->h[i];
        const char *n = HNAME(s, h);
        h->verdict = reqhead_classify(c->lc, n, h->name_len);
        refused |= h->verdict == REQHEAD_REFUSE;
        if (http_name_is(n, h->name_len, "host")) {
            n_host++;
            host = h;
        } else if (http_name_is(n, h->name_len, "transfer-encoding")) {
            n_te++;
            te = h;
        } else if (http_name_is(n, h->name_len, "content-length")) {
            n_cl++;
        } else if (http_name_is(n, h->name_len, "connection")) {
            http_collect_tokens(&conn_tokens, HVALUE(s, h), h->value_len);
        } else if (http_name_is(n, h->name_len, "upgrade")) {
            /* h2c in any Upgrade header, or more than one Upgrade header, is refused. */
            if (upgrade != NULL || http_has_token(HVALUE(s, h), h->value_len, "h2c"))
                h2c = true;
            upgrade = h;
        } else if (http_name_is(n, h->name_len, "http2-settings")) {
            h2c = true;
        }
    }
    char request_id[HTTP_REQUEST_ID_MAX + 1];
    http_note_request(c, p, s, host, request_id);
    int major = llhttp_get_http_major(p), minor = llhttp_get_http_minor(p);
    bool bad = major != 1 || (minor != 0 && minor != 1);
    bad |= n_host > 1 || (n_host == 0 && minor == 1);
    bad |= n_cl > 1 || (n_cl > 0 && n_te > 0);
    if (n_te > 0) {
        const char *v = HVALUE(s, te);
        size_t vl = te->value_len;
        http_trim(&v, &vl);
        bad |= n_te > 1 || !http_name_is(v, vl, "chunked");
    }
    bad |= llhttp_get_method(p) == HTTP_CONNECT;
    bad |= h2c || refused;
    /* The request-target in the form it is forwarded: an absolute-form authority replaces Host
     * (RFC 9112 3.2.2), for the 421 check too (SECURITY 23). */
    struct reqhead_target target;
    bad |= reqhead_target_parse(&target, s->base + s->url_off, s->url_len,
                                llhttp_get_method(p) == HTTP_OPTIONS) < 0;
    if (bad) {
        c->ex.head_error = 400;
        return -1;
    }
    const char *hv = NULL;
    size_t hl = 0;
    if (target.authority != NULL) {
        hv = target.authority;
        hl = target.authority_len;
    } else if (host != NULL) {
        hv = HVALUE(s, host);
        hl = host->value_len;
        http_trim(&hv, &hl);
    }
    if (c->ssl != NULL) {
        if (!tls_host_allowed(c->gen, c->index, c->ssl, hv, hl)) {
            c->ex.head_error = 421; /* the tenant is bound to the connection, never to Host */
            return -1;
        }
        if (!conn_still_trusted(c)) {
            c->ex.head_error = 403; /* revoked, removed or distrusted since the handshake */
            return -1;
        }
        if (!conn_allowed(c)) {
            c->ex.head_error = 403; /* not (or no longer) in the allowlist */
            return -1;
        }
    }

    c->ex.req_chunked = (p->flags & F_CHUNKED) != 0;
    c->ex.req_http10 = minor == 0;
    if (c->ex.req_chunked)
        body_init(&c->ex.req_body, BODY_CHUNKED, 0, true,
                  c->worker->srv->cfg->limits.max_request_head);
    else if (p->flags & F_CONTENT_LENGTH)
        body_init(&c->ex.req_body, BODY_LENGTH, p->content_length, false, 0);
    else
        body_init(&c->ex.req_body, BODY_NONE, 0, false, 0);
    c->ex.req_head_method = llhttp_get_method(p) == HTTP_HEAD;
    c->ex.req_idempotent = http_method_idempotent(llhttp_get_method(p));
    c->ex.req_upgrade = llhttp_get_upgrade(p) && upgrade != NULL;
    c->ex.req_keep_alive = llhttp_should_keep_alive(p);
    const char *method = llhttp_method_name(llhttp_get_method(p));

    struct buf *o = &c->uout;
    buf_appends(o, method);
    buf_append(o, " ", 1);
    if (target.add_slash)
        buf_append(o, "/", 1);
    buf_append(o, target.rest, target.rest_len);
    buf_append(o, " HTTP/1.1\r\n", 11);
    if (hv != NULL)
        http_put_header(o, "Host", 4, hv, hl);
    for (unsigned i = 0; i < s->num; i++) {
        struct hdr *h = &s->h[i];
        const char *n = HNAME(s, h);
        if (h == host || http_is_hop_by_hop(n, h->name_len) ||
            http_in_tokens(&conn_tokens, n, h->name_len))
            continue;
        /* Client-certificate headers: write_cc_headers decides; the rest per reqhead. */
        if (h->verdict != REQHEAD_FORWARD)
            continue;
        if (http_name_is(n, h->name_len, "x-request-id"))
            continue; /* the one chosen by note_request follows */
        http_put_header(o, n, h->name_len, HVALUE(s, h), h->value_len);
    }
    http_put_header(o, "X-Request-Id", 12, request_id, strlen(request_id));
    if (c->ex.req_chunked)
        buf_appends(o, "Transfer-Encoding: chunked\r\n");
    else if (p->flags & F_CONTENT_LENGTH)
        put_content_length(o, p->content_length);
    if (c->ex.req_upgrade) {
        const char *v = HVALUE(s, upgrade);
        size_t vl = upgrade->value_len;
        http_trim(&v, &vl);
        buf_appends(o, "Connection: upgrade\r\nUpgrade: ");
        buf_append(o, v, vl);
        buf_append(o, "\r\n", 2);
    }
    http_write_forwarded_headers(c, s, &conn_tokens);
    http_write_cc_headers(c, s, &conn_tokens);
    buf_append(o, "\r\n", 2);
    s->in_trailers = true;
    /* Only recorded here: http_request_process starts the exchange once llhttp has returned
     * and the head is consumed (a callback does no I/O and changes no state). */
    c->ex.head_ok = true;
    return HPE_PAUSED;
}

static const llhttp_settings_t request_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_headers_complete = request_head_done,
};

/* --- responses ---------------------------------------------------------------------------- */

static int response_head_done(llhttp_t *p)
{
    struct conn *c = p->data;
    struct scratch *s = scratch_of(p);
    int status = p->status_code;
    if (s->overflow || status < 100 || status > 999)
        return -1;
    unsigned n_te = 0;
    struct hdr *te = NULL;
    struct http_tokens conn_tokens = {0};
    for (unsigned i = 0; i < s->num; i++) {
        struct hdr *h = &s->h[i];
        const char *n = HNAME(s, h);
        if (http_name_is(n, h->name_len, "transfer-encoding")) {
            n_te++;
            te = h;
        } else if (http_name_is(n, h->name_len, "connection")) {
            http_collect_tokens(&conn_tokens, HVALUE(s, h), h->value_len);
        }
    }
    if (n_te > 0) {
        const char *v = HVALUE(s, te);
        size_t vl = te->value_len;
        http_trim(&v, &vl);
        if (n_te > 1 || !http_name_is(v, vl, "chunked"))
            return -1; /* we would have to drop a coding: 502 */
    }
    bool informational = status < 200;
    if (status == 101 && !c->ex.req_upgrade)
        return -1;
    bool no_body = informational || status == 204 || status == 304 || c->ex.req_head_method;
    c->ex.resp_chunked = !no_body && (p->flags & F_CHUNKED) != 0;
    c->ex.resp_until_close = !no_body && !c->ex.resp_chunked && !(p->flags & F_CONTENT_LENGTH);
    /* An HTTP/1.0 client cannot read chunked coding: send it the data until we close. */
    bool dechunk = c->ex.resp_chunked && c->ex.req_http10;
    size_t max_trailer = c->worker->srv->cfg->limits.max_request_head;
    if (no_body)
        body_init(&c->ex.resp_body, BODY_NONE, 0, false, 0);
    else if (c->ex.resp_chunked)
        body_init(&c->ex.resp_body, BODY_CHUNKED, 0, !dechunk, max_trailer);
    else if (p->flags & F_CONTENT_LENGTH)
        body_init(&c->ex.resp_body, BODY_LENGTH, p->content_length, false, 0);
    else
        body_init(&c->ex.resp_body, BODY_EOF, 0, false, 0);
    if (!informational) {
        c->ex.status = status;
        if (c->ex.resp_until_close || dechunk || !c->ex.req_keep_alive || c->draining)
            c->ex.close_after = true;
    }

    struct buf *o = &c->cout;
    buf_append(o, "HTTP/1.1 ", 9);
    buf_appendu(o, (unsigned)status); /* llhttp's, 100 to 999 */
    buf_append(o, " ", 1);
    buf_append(o, s->base + s->reason_off, s->reason_len);
    buf_append(o, "\r\n", 2);
    for (unsigned i = 0; i < s->num; i++) {
        struct hdr *h = &s->h[i];
        const char *n = HNAME(s, h);
        if (status != 101 &&
            (http_is_hop_by_hop(n, h->name_len) || http_in_tokens(&conn_tokens, n, h->name_len)))
            continue;
        if (status == 101 && (http_name_is(n, h->name_len, "content-length") ||
                              http_name_is(n, h->name_len, "transfer-encoding")))
            continue;
        http_put_header(o, n, h->name_len, HVALUE(s, h), h->value_len);
    }
    if (!informational && status != 101) {
        if (c->ex.resp_chunked && !dechunk)
            buf_appends(o, "Transfer-Encoding: chunked\r\n");
        else if (p->flags & F_CONTENT_LENGTH)
            put_content_length(o, p->content_length);
        if (c->ex.close_after)
            buf_appends(o, "Connection: close\r\n");
    }
    buf_append(o, "\r\n", 2);
    c->ex.resp_sent = true;
    s->in_trailers = true;
    if (!informational) {
        c->ex.resp_head_done = true;
        /* idle_timeout applies from here: the timer still runs for upstream_response_timeout,
         * which may be longer (a client that stops reading would be held that long). */
        c->timer_base = conn_now_ms(c);
        conn_arm_timer(c);
    }
    buf_free(&c->ex.replay); /* answered: never sent again */
    return HPE_PAUSED;
}

static const llhttp_settings_t response_settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_headers_complete = response_head_done,
};

void http_conn_init(struct conn *c)
{
    llhttp_init(&c->ex.req_parser, HTTP_REQUEST, &request_settings);
    c->ex.req_parser.data = c;
    llhttp_init(&c->ex.resp_parser, HTTP_RESPONSE, &response_settings);
    c->ex.resp_parser.data = c;
}

/* Parses exactly one head of |len| bytes (llhttp never sees a body). */
static bool parse_head(llhttp_t *p, struct scratch *s, const char *data, size_t len)
{
    llhttp_reset(p);
    s->base = data;
    llhttp_errno_t e = llhttp_execute(p, data, len);
    return e == HPE_OK || e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE;
}

/* Reads the request head at the start of c->cin, if it is complete, and starts its exchange.
 * Returns true when the connection is now in CONN_PROXY. */
static bool request_head(struct conn *c)
{
    if (c->ex.req_scan.lines == 0) {
        /* Empty lines before a request line are ignored (RFC 9112 2.2). */
        size_t skip = 0;
        const char *d = buf_data(&c->cin);
        while (skip + 1 < buf_used(&c->cin) && d[skip] == '\r' && d[skip + 1] == '\n')
            skip += 2;
        if (skip > 0) {
            buf_consume(&c->cin, skip);
            c->ex.req_scan.seen = 0; /* offsets moved; only the skipped bytes are searched again */
        }
    }
    if (buf_used(&c->cin) == 0)
        return false;
    c->ex.head_started = true;
    long r = scan_request_head(c);
    if (r == 0)
        return false;
    if (r < 0) {
        conn_error(c, (int)-r);
        return false;
    }
    c->ex.req_start = base_now_us();
    c->ex.head_ok = false;
    c->ex.head_error = 0;
    bool ok = parse_head(&c->ex.req_parser, c->worker->scratch, buf_data(&c->cin), (size_t)r);
    /* The head leaves the input before anything else happens: what follows it is the body or
     * the next request, never parsed as this one's. */
    buf_consume(&c->cin, (size_t)r);
    if (!ok || !c->ex.head_ok) {
        conn_error(c, c->ex.head_error != 0 ? c->ex.head_error : 400);
        return false;
    }
    conn_set_state(c, CONN_PROXY);
    return conn_handlers()->upstream_connect(c) == 0;
}

void http_request_process(struct conn *c)
{
    if (c->state == CONN_HEAD && !request_head(c))
        return;
    if (c->state != CONN_PROXY || c->ex.req_done)
        return;
    int r = body_feed(&c->ex.req_body, &c->cin, &c->uout, &c->bytes_in);
    if (r < 0) {
        conn_error(c, 400);
        return;
    }
    if (r == 1)
        conn_request_done(c);
}

static void response_done(struct conn *c)
{
    c->ex.resp_done = true;
    /* An upstream that sent more than the response, or a body it should not have after HEAD,
     * 204 or 304 (which may still be on its way), is not trusted with another request: its
     * extra bytes would answer the next one (SECURITY 14). */
    int status = c->ex.resp_parser.status_code;
    bool bodiless = c->ex.req_head_method || status == 204 || status == 304;
    c->ex.up_reusable = llhttp_should_keep_alive(&c->ex.resp_parser) && !c->ex.resp_until_close &&
                     buf_used(&c->uin) == 0 && !bodiless;
    if (!c->ex.req_done) {
        /* Answered before the request ended: finish here, the rest of it is not read. */
        c->ex.close_after = true;
        c->ex.up_reusable = false;
    }
    conn_http_cycle_done(c);
}

void http_response_process(struct conn *c)
{
    struct scratch *s = c->worker->scratch;
    while (c->state == CONN_PROXY && buf_used(&c->uin) > 0) {
        if (!c->ex.resp_head_done) {
            const char *d = buf_data(&c->uin);
            /* Obs-fold, a bare CR or LF, a NUL or an oversized head: 502, never copied. */
            long head_len = head_scan(&c->ex.resp_scan, d, buf_used(&c->uin),
                                      c->worker->srv->cfg->limits.max_request_head, UINT32_MAX);
            if (head_len == 0)
                return;
            if (head_len < 0) {
                metrics_upstream_error(c->index, METRICS_UP_FRAMING);
                conn_error(c, 502);
                return;
            }
            memset(&c->ex.resp_scan, 0, sizeof(c->ex.resp_scan)); /* an informational head: next */
            if (!parse_head(&c->ex.resp_parser, s, d, (size_t)head_len)) {
                metrics_upstream_error(c->index, METRICS_UP_FRAMING);
                conn_error(c, 502);
                return;
            }
            buf_consume(&c->uin, (size_t)head_len);
            if (c->ex.resp_parser.status_code == 101) {
                conn_tunnel(c);
                return;
            }
            if (!c->ex.resp_head_done)
                continue; /* an informational response went through; the real one follows */
        }
        int r = body_feed(&c->ex.resp_body, &c->uin, &c->cout, &c->bytes_out);
        if (r < 0) {
            metrics_upstream_error(c->index, METRICS_UP_FRAMING);
            conn_error(c, 502);
            return;
        }
        if (r == 1) {
            response_done(c);
            return;
        }
    }
    if (c->state == CONN_PROXY && c->ex.resp_head_done && c->ex.resp_body.kind == BODY_NONE)
        response_done(c);
}

void http_upstream_eof(struct conn *c)
{
    if (c->state != CONN_PROXY)
        return;
    if (c->ex.resp_head_done && c->ex.resp_body.kind == BODY_EOF) {
        c->ex.up_reusable = false;
        c->ex.close_after = true;
        c->ex.resp_done = true;
        conn_http_cycle_done(c);
        return;
    }
    conn_error(c, 502);
}
