/* ocsp_fetch.c: an HTTP/1.0 POST to an OCSP responder on a libuv loop. One allocation per fetch
 * holds every libuv request and handle; it is freed in the last close callback, so a cancel
 * at any step (even while getaddrinfo runs in the thread pool) is safe. A name that resolves to
 * several addresses is tried address after address, in getaddrinfo's order, until one
 * connects (a responder reachable over IPv4 only, behind a name with an AAAA record, is still
 * reached); the one timeout covers them all, and a connect that hangs (SYNs dropped) is given
 * up after its share of what is left, so that the next address still has time. */
#include "tls/ocsp_fetch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/base.h"
#include "core/buf.h"
#include "core/log.h"

#define MAX_RESPONSE (256u * 1024) /* head and body; OCSP responses are a few KiB */

struct ocsp_fetch {
    uv_loop_t *loop;
    uv_getaddrinfo_t resolve;
    uv_connect_t connect;
    uv_write_t write;
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct addrinfo *addrs; /* getaddrinfo's answer, owned */
    struct addrinfo *next;  /* the address to try after the current one */
    ocsp_fetch_cb cb;
    void *arg;
    struct buf out; /* the request */
    struct buf in;  /* the response so far */
    char host[256];
    char port_text[8];
    int pending_closes;
    int sync_error;  /* uv_getaddrinfo failed at once */
    bool resolving;  /* the getaddrinfo request is out */
    bool tcp_open;   /* tcp was initialised */
    bool redialing;  /* tcp is closing to connect again to f->next */
    bool connecting; /* a connect is out */
    uint64_t deadline; /* uv_now() at which the whole fetch times out */
    bool finished;   /* cb ran or was cancelled */
    bool closing;    /* handles are closing */
};

int ocsp_fetch_parse_url(const char *url, char *host, size_t host_len, uint16_t *port,
                         char *path, size_t path_len)
{
    if (strncasecmp(url, "http://", 7) != 0)
        return -EINVAL;
    const char *h = url + 7, *end = h + strcspn(h, "/?#");
    const char *hs = h, *he, *colon;
    if (*h == '[') {
        he = memchr(h, ']', (size_t)(end - h));
        if (he == NULL)
            return -EINVAL;
        hs = h + 1;
        colon = he + 1 < end && he[1] == ':' ? he + 1 : NULL;
        if (he + 1 < end && colon == NULL)
            return -EINVAL;
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        he = colon ? colon : end;
    }
    size_t hl = (size_t)(he - hs);
    if (hl == 0 || hl >= host_len || memchr(hs, '@', hl) != NULL)
        return -EINVAL;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    *port = 80;
    if (colon != NULL) {
        unsigned long v = 0;
        const char *p = colon + 1;
        if (p == end)
            return -EINVAL;
        for (; p < end; p++) {
            if (*p < '0' || *p > '9' || (v = v * 10 + (unsigned long)(*p - '0')) > 65535)
                return -EINVAL;
        }
        if (v == 0)
            return -EINVAL;
        *port = (uint16_t)v;
    }
    const char *p = *end == '/' ? end : "/";
    size_t pl = *end == '/' ? strcspn(end, "#") : 1;
    if (pl >= path_len)
        return -EINVAL;
    for (size_t i = 0; i < pl; i++) {
        if ((unsigned char)p[i] <= 0x20 || p[i] == 0x7f)
            return -EINVAL; /* no room for header injection */
    }
    memcpy(path, p, pl);
    path[pl] = '\0';
    return 0;
}

static void fetch_free(struct ocsp_fetch *f)
{
    if (f->addrs != NULL)
        uv_freeaddrinfo(f->addrs);
    buf_free(&f->out);
    buf_free(&f->in);
    free(f);
}

static void close_cb(uv_handle_t *h)
{
    struct ocsp_fetch *f = h->data;
    if (--f->pending_closes == 0 && !f->resolving)
        fetch_free(f);
}

/* Closes the handles; the memory goes when the last close callback and any outstanding
 * getaddrinfo callback have run. */
static void shut(struct ocsp_fetch *f)
{
    if (f->closing)
        return;
    f->closing = true;
    f->pending_closes = 1;
    uv_close((uv_handle_t *)&f->timer, close_cb);
    if (f->redialing)
        f->pending_closes++; /* redial_close_cb is on its way and counts as tcp's close */
    else if (f->tcp_open) {
        f->pending_closes++;
        uv_close((uv_handle_t *)&f->tcp, close_cb);
    }
}

static void finish(struct ocsp_fetch *f, int status, const uint8_t *body, size_t len,
                   const char *why)
{
    if (f->finished)
        return;
    f->finished = true;
    f->cb(f->arg, status, body, len, why);
    shut(f);
}

int ocsp_fetch_parse_response(const char *d, size_t n, bool eof, struct ocsp_fetch_answer *out)
{
    memset(out, 0, sizeof(*out));
    out->status = -EPROTO;
    const char *end = n >= 4 ? memmem(d, n, "\r\n\r\n", 4) : NULL;
    if (end == NULL) {
        if (eof)
            out->why = "the responder closed before a complete HTTP answer";
        return eof;
    }
    size_t head_len = (size_t)(end - d) + 4;
    /* "HTTP/1.x NNN", read by hand: the buffer is not NUL-terminated. */
    int code = 0;
    if (head_len < 13 || memcmp(d, "HTTP/1.", 7) != 0 || (d[7] != '0' && d[7] != '1') ||
        d[8] != ' ' || d[9] < '1' || d[9] > '5' || d[10] < '0' || d[10] > '9' || d[11] < '0' ||
        d[11] > '9' || (d[12] != ' ' && d[12] != '\r')) {
        out->why = "the responder's answer is not HTTP/1.x";
        return 1;
    }
    code = (d[9] - '0') * 100 + (d[10] - '0') * 10 + (d[11] - '0');
    if (code != 200) {
        snprintf(out->why_buf, sizeof(out->why_buf), "the responder answered HTTP %d", code);
        out->why = out->why_buf;
        return 1;
    }
    long long clen = -1;
    bool chunked = false;
    for (const char *l = memchr(d, '\n', head_len); l != NULL && l + 1 < d + head_len;
         l = memchr(l + 1, '\n', (size_t)(d + head_len - l - 1))) {
        const char *line = l + 1;
        size_t left = (size_t)(d + head_len - line);
        if (left > 15 && strncasecmp(line, "content-length:", 15) == 0) {
            const char *v = line + 15;
            while (v < d + head_len && (*v == ' ' || *v == '\t'))
                v++;
            clen = 0;
            for (; v < d + head_len && *v >= '0' && *v <= '9'; v++) {
                clen = clen * 10 + (*v - '0');
                if (clen > (long long)MAX_RESPONSE)
                    break;
            }
        } else if (left > 18 && strncasecmp(line, "transfer-encoding:", 18) == 0) {
            chunked = true;
        }
    }
    if (chunked) {
        out->why = "chunked OCSP answers are not supported";
        return 1;
    }
    size_t body = n - head_len;
    if (clen >= 0 && body >= (size_t)clen) {
        out->status = 0;
        out->body_off = head_len;
        out->body_len = (size_t)clen;
        return 1;
    }
    if (eof) {
        if (clen >= 0) {
            out->why = "the responder closed before the whole body";
        } else {
            out->status = 0;
            out->body_off = head_len;
            out->body_len = body;
        }
        return 1;
    }
    return 0;
}

/* Returns 1 when |f->in| holds a complete response (and calls finish), 0 when more is needed. */
static int try_complete(struct ocsp_fetch *f, bool eof)
{
    const char *d = buf_data(&f->in);
    struct ocsp_fetch_answer a;
    if (ocsp_fetch_parse_response(d, buf_used(&f->in), eof, &a) == 0)
        return 0;
    if (a.status == 0)
        finish(f, 0, (const uint8_t *)d + a.body_off, a.body_len, NULL);
    else
        finish(f, a.status, NULL, 0, a.why);
    return 1;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct ocsp_fetch *f = h->data;
    b->base = buf_reserve(&f->in, 16384);
    b->len = 16384;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct ocsp_fetch *f = s->data;
    if (f->finished)
        return;
    if (nread > 0) {
        buf_commit(&f->in, (size_t)nread);
        if (buf_used(&f->in) > MAX_RESPONSE) {
            finish(f, -EMSGSIZE, NULL, 0, "the responder's answer is too large");
            return;
        }
        try_complete(f, false);
    } else if (nread == UV_EOF) {
        try_complete(f, true);
    } else if (nread < 0) {
        finish(f, (int)nread, NULL, 0, uv_strerror((int)nread));
    }
}

static void write_cb(uv_write_t *w, int status)
{
    struct ocsp_fetch *f = w->data;
    if (status < 0 && status != UV_ECANCELED && !f->finished)
        finish(f, status, NULL, 0, uv_strerror(status));
}

static void dial(struct ocsp_fetch *f);

static void redial_close_cb(uv_handle_t *h)
{
    struct ocsp_fetch *f = h->data;
    f->redialing = false;
    f->tcp_open = false;
    if (f->finished) { /* cancelled or timed out meanwhile: shut() counted this close */
        close_cb(h);
        return;
    }
    dial(f);
}

static void timer_cb(uv_timer_t *t);

/* Closes tcp to connect to the next address. */
static void redial(struct ocsp_fetch *f)
{
    f->connecting = false;
    f->redialing = true;
    uv_close((uv_handle_t *)&f->tcp, redial_close_cb);
}

/* Runs the timer until |ms| from now, never past the fetch's deadline. */
static void arm(struct ocsp_fetch *f, uint64_t ms)
{
    uint64_t now = uv_now(f->loop), left = f->deadline > now ? f->deadline - now : 0;
    uv_timer_start(&f->timer, timer_cb, MIN(ms, left), 0);
}

static void connect_cb(uv_connect_t *req, int status)
{
    struct ocsp_fetch *f = req->data;
    if (f->finished || f->redialing) /* UV_ECANCELED from a redial's close */
        return;
    f->connecting = false;
    if (status == 0)
        arm(f, UINT64_MAX); /* the rest of the timeout for the exchange */
    if (status < 0 && f->next != NULL && status != UV_ECANCELED) {
        log_msg(LOG_LEVEL_DEBUG, "ocsp_fetch", "%s: one address failed (%s), trying the next",
                f->host, uv_strerror(status));
        redial(f);
        return;
    }
    if (status < 0) {
        finish(f, status, NULL, 0, uv_strerror(status));
        return;
    }
    uv_buf_t b = uv_buf_init(buf_data(&f->out), (unsigned)buf_used(&f->out));
    f->write.data = f;
    int r = uv_write(&f->write, (uv_stream_t *)&f->tcp, &b, 1, write_cb);
    if (r == 0)
        r = uv_read_start((uv_stream_t *)&f->tcp, alloc_cb, read_cb);
    if (r < 0)
        finish(f, r, NULL, 0, uv_strerror(r));
}

static void resolve_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct ocsp_fetch *f = req->data;
    f->resolving = false;
    if (f->finished) {
        uv_freeaddrinfo(res);
        if (f->closing && f->pending_closes == 0) /* the handles closed first */
            fetch_free(f);
        return;
    }
    if (status < 0 || res == NULL) {
        char why[320];
        snprintf(why, sizeof(why), "cannot resolve %s: %s", f->host, uv_strerror(status));
        uv_freeaddrinfo(res);
        finish(f, status < 0 ? status : -EHOSTUNREACH, NULL, 0, why);
        return;
    }
    f->addrs = f->next = res;
    dial(f);
}

/* Connects to f->next and moves it on; an address libuv refuses at once is skipped. */
static void dial(struct ocsp_fetch *f)
{
    int r = UV_EAI_NODATA;
    while (f->next != NULL) {
        const struct addrinfo *a = f->next;
        f->next = a->ai_next;
        if (a->ai_socktype != SOCK_STREAM && a->ai_socktype != 0)
            continue;
        uv_tcp_init(f->loop, &f->tcp);
        f->tcp.data = f;
        f->tcp_open = true;
        f->connect.data = f;
        r = uv_tcp_connect(&f->connect, &f->tcp, a->ai_addr, connect_cb);
        if (r == 0) {
            /* This address gets its share of what is left: the rest divided by the addresses
             * still to try, itself included. */
            uint64_t n = 1;
            for (const struct addrinfo *b = f->next; b != NULL; b = b->ai_next)
                n++;
            uint64_t now = uv_now(f->loop);
            f->connecting = true;
            arm(f, f->deadline > now ? (f->deadline - now) / n : 0);
            return;
        }
        if (f->next != NULL) { /* the handle must close before it is initialised again */
            f->redialing = true;
            uv_close((uv_handle_t *)&f->tcp, redial_close_cb);
            return;
        }
    }
    finish(f, r, NULL, 0, uv_strerror(r));
}

static void timer_cb(uv_timer_t *t)
{
    struct ocsp_fetch *f = t->data;
    if (f->connecting && f->next != NULL && uv_now(f->loop) < f->deadline) {
        log_msg(LOG_LEVEL_DEBUG, "ocsp_fetch", "%s: one address did not answer, trying the next",
                f->host);
        redial(f);
        return;
    }
    finish(f, -ETIMEDOUT, NULL, 0, "no answer from the responder in time");
    if (f->resolving)
        uv_cancel((uv_req_t *)&f->resolve);
}

static void sync_fail_cb(uv_timer_t *t)
{
    struct ocsp_fetch *f = t->data;
    finish(f, f->sync_error, NULL, 0, uv_strerror(f->sync_error));
}

struct ocsp_fetch *ocsp_fetch_start(uv_loop_t *loop, const char *url, const uint8_t *req,
                                    size_t req_len, uint64_t timeout_ms, ocsp_fetch_cb cb,
                                    void *arg)
{
    char host[256], path[2048];
    uint16_t port;
    if (ocsp_fetch_parse_url(url, host, sizeof(host), &port, path, sizeof(path)) != 0)
        return NULL;
    struct ocsp_fetch *f = xcalloc(1, sizeof(*f));
    f->loop = loop;
    f->cb = cb;
    f->arg = arg;
    snprintf(f->host, sizeof(f->host), "%s", host);
    snprintf(f->port_text, sizeof(f->port_text), "%u", port);
    bool v6 = strchr(host, ':') != NULL;
    buf_appendf(&f->out,
                "POST %s HTTP/1.0\r\nHost: %s%s%s%s%s\r\nContent-Type: application/ocsp-request\r\n"
                "Accept: application/ocsp-response\r\nContent-Length: %zu\r\n"
                "Connection: close\r\n\r\n",
                path, v6 ? "[" : "", host, v6 ? "]" : "", port == 80 ? "" : ":",
                port == 80 ? "" : f->port_text, req_len);
    buf_append(&f->out, req, req_len);
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    f->deadline = uv_now(loop) + timeout_ms;
    uv_timer_start(&f->timer, timer_cb, timeout_ms, 0);
    f->resolve.data = f;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    f->resolving = true;
    int r = uv_getaddrinfo(loop, &f->resolve, resolve_cb, f->host, f->port_text, &hints);
    if (r < 0) {
        /* Fail from the loop, never from inside ocsp_fetch_start. */
        f->resolving = false;
        f->sync_error = r;
        uv_timer_start(&f->timer, sync_fail_cb, 0, 0);
    }
    return f;
}

void ocsp_fetch_cancel(struct ocsp_fetch *f)
{
    if (f == NULL || f->finished)
        return;
    f->finished = true;
    if (f->resolving)
        uv_cancel((uv_req_t *)&f->resolve);
    shut(f);
}
