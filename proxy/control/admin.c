/* admin.c: the admin listeners of CONTRACT section 7. A request is read whole (its head is small
 * and bounded, a body is read and ignored), parsed strictly, answered, and the connection closed;
 * a bad request gets a 4xx, a slow one is cut off by a timer. admin.address serves the whole API;
 * admin.public_address only the read-only probes and metrics. */
#include "control/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "control/admin_internal.h"
#include "control/reload.h"
#include "core/base.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "server/listener.h"
#include "tls/allowlist.h"
#include "tls/tls.h"


static struct server *admin_srv;

/* --- responses ------------------------------------------------------------------------------ */

static const char *reason_of(int code)
{
    switch (code) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* Appends a whole response; |extra| is more header lines ("Name: value\r\n") or NULL. */
static void respond(struct buf *out, int code, const char *type, const char *body, size_t body_len,
                    const char *extra, bool head_only)
{
    if (code == 204) { /* neither a body nor its length */
        buf_appendf(out, "HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\n"
                         "Connection: close\r\n%s\r\n", extra ? extra : "");
        return;
    }
    buf_appendf(out,
                "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                code, reason_of(code), type, body_len, extra ? extra : "");
    if (!head_only)
        buf_append(out, body, body_len);
}

void admin_respond_text(struct buf *out, int code, const char *text, const char *extra)
{
    respond(out, code, "text/plain; charset=utf-8", text, strlen(text), extra, false);
}

/* --- parsing -------------------------------------------------------------------------------- */

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool eq_nocase(const char *a, size_t len, const char *lit)
{
    return len == strlen(lit) && strncasecmp(a, lit, len) == 0;
}

/* Parses |len| bytes that end with the blank line. Returns 0, or the status code to answer. */
int admin_parse_head(const char *head, size_t len, struct request *rq)
{
    memset(rq, 0, sizeof(*rq));
    rq->head_len = len;
    const char *end = head + len;
    const char *eol = memmem(head, len, "\r\n", 2);
    if (eol == NULL)
        return 400;
    /* request-line = method SP request-target SP HTTP-version */
    const char *p = head;
    while (p < eol && is_tchar((unsigned char)*p))
        p++;
    if (p == head || p == eol || *p != ' ')
        return 400;
    rq->method = head;
    rq->method_len = (size_t)(p - head);
    const char *target = ++p;
    while (p < eol && *p != ' ' && (unsigned char)*p > 0x20 && *p != 0x7f)
        p++;
    if (p == target || p == eol || *p != ' ')
        return 400;
    if (*target != '/')
        return 400; /* origin-form only */
    const char *q = memchr(target, '?', (size_t)(p - target));
    rq->path = target;
    rq->path_len = (size_t)((q ? q : p) - target);
    p++;
    if ((size_t)(eol - p) != 8 || memcmp(p, "HTTP/1.", 7) != 0)
        return 400;
    if (p[7] != '0' && p[7] != '1')
        return 505;
    rq->http10 = p[7] == '0';
    bool have_cl = false;
    for (const char *line = eol + 2; line < end;) {
        const char *le = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (le == NULL)
            return 400;
        if (le == line)
            break; /* the blank line */
        const char *c = line;
        while (c < le && is_tchar((unsigned char)*c))
            c++;
        /* No obs-fold, no space before the colon, no empty name. */
        if (c == line || c == le || *c != ':')
            return 400;
        const char *name = line;
        size_t name_len = (size_t)(c - line);
        const char *v = c + 1, *ve = le;
        for (const char *x = v; x < ve; x++)
            if (((unsigned char)*x < 0x20 && *x != '\t') || *x == 0x7f)
                return 400;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t vlen = (size_t)(ve - v);
        if (eq_nocase(name, name_len, "authorization")) {
            if (rq->auth != NULL)
                return 400;
            rq->auth = v;
            rq->auth_len = vlen;
        } else if (eq_nocase(name, name_len, "host")) {
            if (rq->host != NULL)
                return 400;
            rq->host = v;
            rq->host_len = vlen;
        } else if (eq_nocase(name, name_len, "origin")) {
            rq->origin = true;
        } else if (eq_nocase(name, name_len, "content-length")) {
            uint64_t n = 0;
            if (vlen == 0 || vlen > 12)
                return 400;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return 400;
                n = n * 10 + (uint64_t)(v[i] - '0');
            }
            if (have_cl && n != rq->content_length)
                return 400;
            have_cl = true;
            rq->content_length = n;
        } else if (eq_nocase(name, name_len, "transfer-encoding")) {
            return 501; /* the admin API takes no chunked bodies */
        }
        line = le + 2;
    }
    if (rq->content_length > ADMIN_MAX_BODY)
        return 413;
    return 0;
}

/* --- handlers ------------------------------------------------------------------------------- */

static bool method_is(const struct request *rq, const char *m)
{
    return rq->method_len == strlen(m) && memcmp(rq->method, m, rq->method_len) == 0;
}

static bool path_is(const struct request *rq, const char *p)
{
    return rq->path_len == strlen(p) && memcmp(rq->path, p, rq->path_len) == 0;
}

/* A Host a browser could only send for a page served from this machine: a loopback literal
 * (127.x.y.z, [::1]) or localhost, each with an optional port. A DNS name that an attacker
 * rebinds to 127.0.0.1 is none of these, so a page of theirs cannot drive the API. */
static bool host_is_loopback(const char *h, size_t len)
{
    const char *end = h + len, *name = h, *name_end, *port;
    bool bracket = len > 0 && h[0] == '[';
    if (bracket) {
        name = h + 1;
        name_end = memchr(name, ']', len - 1);
        if (name_end == NULL)
            return false;
        port = name_end + 1;
    } else {
        name_end = memchr(h, ':', len);
        if (name_end == NULL)
            name_end = end;
        port = name_end;
    }
    if (port < end) { /* ":" and at most five digits */
        if (*port != ':' || end - port - 1 > 5)
            return false;
        for (const char *d = port + 1; d < end; d++)
            if (*d < '0' || *d > '9')
                return false;
    }
    char text[64];
    size_t text_len = (size_t)(name_end - name);
    if (text_len == 0 || text_len >= sizeof(text))
        return false;
    memcpy(text, name, text_len);
    text[text_len] = '\0';
    if (bracket) {
        struct in6_addr a6;
        return inet_pton(AF_INET6, text, &a6) == 1 &&
               (IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127));
    }
    struct in_addr a4;
    if (inet_pton(AF_INET, text, &a4) == 1)
        return ntohl(a4.s_addr) >> 24 == 127;
    return strcasecmp(text, "localhost") == 0;
}

/* Without a token nothing but loopback may reach the API (config.c), and the Host check keeps a
 * browser page out. HTTP/1.0 has no Host and no browser speaks it; HTTP/1.1 needs one. A page
 * of any site can still have the browser POST to http://127.0.0.1:<port>/reload (a form post
 * needs no CORS preflight, and its Host is loopback): the browser names that page in Origin,
 * which curl, probes and Prometheus never send. */
static bool host_allowed(const struct request *rq)
{
    if (admin_srv->cfg->admin_token_file != NULL)
        return true;
    if (rq->origin)
        return false;
    if (rq->host == NULL)
        return rq->http10;
    return host_is_loopback(rq->host, rq->host_len);
}

/* Reads admin.token_file (it may be rotated, so on every call); trailing whitespace is dropped.
 * Returns its length, or -1 when it cannot be read or is empty. */
static int read_token(const char *path, char *out, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -1;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, out + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == cap)
            break;
    }
    close(fd);
    while (len > 0 && strchr(" \t\r\n", out[len - 1]) != NULL)
        len--;
    return len > 0 ? (int)len : -1;
}

/* Returns 0 when the request may mutate, else the status code to answer. */
static int authorize(const struct request *rq)
{
    const char *file = admin_srv->cfg->admin_token_file;
    if (file == NULL)
        return 0;
    char token[ADMIN_MAX_TOKEN];
    int tlen = read_token(file, token, sizeof(token));
    if (tlen < 0) {
        log_msg(LOG_LEVEL_ERROR, "admin_token_unavailable",
                "%s cannot be read or is empty: mutating admin calls are refused", file);
        return 500;
    }
    if (rq->auth == NULL || rq->auth_len < 7 || strncasecmp(rq->auth, "Bearer ", 7) != 0)
        return 401;
    const char *given = rq->auth + 7;
    size_t glen = rq->auth_len - 7;
    while (glen > 0 && *given == ' ') {
        given++;
        glen--;
    }
    /* Constant time in the token's content; its length is not a secret worth hiding. */
    unsigned char diff = glen != (size_t)tlen;
    for (size_t i = 0; i < (size_t)tlen; i++)
        diff |= (unsigned char)(token[i] ^ (i < glen ? given[i] : 0));
    return diff == 0 ? 0 : 401;
}

static void address_text(char *out, size_t len, size_t i)
{
    const struct listener_config *lc = &admin_srv->cfg->listeners[i];
    const struct sockaddr_storage *ss = admin_srv->bound ? &admin_srv->bound[i] : NULL;
    char ip[INET6_ADDRSTRLEN] = "";
    if (ss != NULL && ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        snprintf(out, len, "%s:%u", ip, ntohs(a->sin_port));
    } else if (ss != NULL && ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        snprintf(out, len, "[%s]:%u", ip, ntohs(a->sin6_port));
    } else {
        snprintf(out, len, "%s", lc->address.text ? lc->address.text : "");
    }
}

static void status_json(struct buf *out)
{
    const struct config *cfg = admin_srv->cfg;
    buf_appends(out, "{\"version\":");
    log_json_string(out, CERTGATE_VERSION);
    buf_appends(out, ",\"tls_library\":");
    log_json_string(out, tls_library());
    buf_appendf(out, ",\"generation\":%llu,\"ready\":%s,",
                (unsigned long long)reload_generation(),
                atomic_load(&admin_srv->ready) ? "true" : "false");
    struct tls_gen *gen = server_gen(admin_srv);
    if (gen != NULL) {
        tls_gen_status_json(gen, out);
        tls_gen_unref(gen);
    } else {
        buf_appends(out, "\"credentials\":null,\"tenants\":{}");
    }
    buf_appends(out, ",\"listeners\":[");
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const struct listener_config *lc = &cfg->listeners[i];
        char addr[INET6_ADDRSTRLEN + 16];
        address_text(addr, sizeof(addr), i);
        buf_appends(out, i ? ",{\"name\":" : "{\"name\":");
        log_json_string(out, lc->name);
        buf_appends(out, ",\"address\":");
        log_json_string(out, addr);
        buf_appends(out, ",\"mode\":");
        log_json_string(out, lc->mode == LISTENER_HTTP  ? "http"
                      : lc->mode == LISTENER_TLS ? "tls"
                                                 : "tcp");
        buf_appends(out, ",\"upstream\":");
        log_json_string(out, lc->upstream.text);
        buf_appends(out, "}");
    }
    buf_appends(out, "],\"last_reload\":");
    reload_result_json(out);
    buf_appends(out, ",\"watches\":");
    reload_watches_json(out);
    buf_appends(out, "}\n");
}

static void metrics_text(struct buf *out)
{
    metrics_render(out);
    struct tls_gen *gen = server_gen(admin_srv);
    if (gen != NULL) {
        tls_gen_metrics(gen, out);
        tls_gen_unref(gen);
    }
    reload_metrics(out);
}

/* Answers 401 or 503 and returns false when |rq| may not mutate. */
static bool may_mutate(const struct request *rq, struct buf *out)
{
    int code = authorize(rq);
    if (code == 401) {
        admin_respond_text(out, 401, "unauthorized\n",
                           "WWW-Authenticate: Bearer realm=\"certgate\"\r\n");
        return false;
    }
    if (code != 0) {
        admin_respond_text(out, code, "admin token unavailable\n", NULL);
        return false;
    }
    return true;
}

/* Percent-decodes |len| bytes of |in| into a new string; NULL for a bad escape or a NUL. */
static char *percent_decode(const char *in, size_t len)
{
    char *out = xmalloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] != '%') {
            out[n++] = in[i];
            continue;
        }
        int hi = i + 2 < len ? base_hex_digit(in[i + 1]) : -1;
        int lo = hi >= 0 ? base_hex_digit(in[i + 2]) : -1;
        if (lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            return NULL;
        }
        out[n++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[n] = '\0';
    return out;
}

/* PUT and DELETE /allowed-client-certificate-subjects/<percent-encoded subject>. */
static void allowlist_route(const struct request *rq, struct buf *out)
{
    bool put = method_is(rq, "PUT"), del = method_is(rq, "DELETE");
    if (!put && !del) {
        admin_respond_text(out, 405, "method not allowed\n", "Allow: PUT, DELETE\r\n");
        return;
    }
    if (!may_mutate(rq, out))
        return;
    size_t skip = strlen(ALLOWLIST_PATH) + 1;
    char *subject = percent_decode(rq->path + skip, rq->path_len - skip);
    char err[512] = "";
    int r = subject == NULL ? -EINVAL
            : put          ? allowlist_add(subject, err, sizeof(err))
                           : allowlist_remove(subject, err, sizeof(err));
    if (subject == NULL)
        snprintf(err, sizeof(err), "bad percent-encoding in the subject");
    free(subject);
    char text[600];
    snprintf(text, sizeof(text), "%s\n", err);
    if (r >= 0)
        respond(out, 204, NULL, NULL, 0, NULL, false);
    else if (r == -EINVAL)
        admin_respond_text(out, 400, text, NULL);
    else if (r == -ENOENT && del)
        admin_respond_text(out, 404, text, NULL);
    else if (r == -ENOTSUP)
        admin_respond_text(out, 409, text, NULL);
    else
        admin_respond_text(out, 500, text, NULL);
    if (r == 0)
        listener_gen_changed(admin_srv); /* workers re-check their tunnels */
    if (r >= 0 && log_enabled(LOG_LEVEL_INFO))
        log_msg(LOG_LEVEL_INFO, put ? "allowlist_added" : "allowlist_removed", "%.*s",
                (int)(rq->path_len - skip), rq->path + skip);
}

/* The public listener is for kubelet probes and Prometheus on the pod network: read-only, the
 * same answers as on admin.address, everything else does not exist there. */
static bool public_path(const struct request *rq)
{
    return path_is(rq, "/healthz") || path_is(rq, "/ready") || path_is(rq, "/metrics");
}

void admin_route(const struct request *rq, bool public_side, struct buf *out)
{
    bool get = method_is(rq, "GET"), head = method_is(rq, "HEAD");
    struct buf body = {0};
    if (public_side && !public_path(rq)) {
        admin_respond_text(out, 404, "not found\n", NULL);
    } else if (!public_side && !host_allowed(rq)) {
        admin_respond_text(out, 403,
                     "forbidden: without admin.token_file the admin API answers only requests "
                     "whose Host is localhost or a loopback address, and none from a browser "
                     "page (Origin)\n",
                     NULL);
    } else if (path_is(rq, "/healthz")) {
        if (!get && !head)
            goto not_allowed_get;
        respond(out, 200, "text/plain; charset=utf-8", "ok\n", 3, NULL, head);
    } else if (path_is(rq, "/ready")) {
        if (!get && !head)
            goto not_allowed_get;
        bool ready = atomic_load(&admin_srv->ready);
        const char *text = ready ? "ready\n" : "not ready\n";
        respond(out, ready ? 200 : 503, "text/plain; charset=utf-8", text, strlen(text), NULL,
                head);
    } else if (path_is(rq, "/metrics")) {
        if (!get && !head)
            goto not_allowed_get;
        metrics_text(&body);
        respond(out, 200, "text/plain; version=0.0.4; charset=utf-8", buf_data(&body),
                buf_used(&body), NULL, head);
    } else if (path_is(rq, "/status")) {
        if (!get && !head)
            goto not_allowed_get;
        status_json(&body);
        respond(out, 200, "application/json", buf_data(&body), buf_used(&body), NULL, head);
    } else if (path_is(rq, "/reload")) {
        if (!method_is(rq, "POST")) {
            admin_respond_text(out, 405, "method not allowed\n", "Allow: POST\r\n");
            return;
        }
        if (!may_mutate(rq, out))
            return;
        char err[1024] = "";
        int r = reload_run("admin", true, err, sizeof(err));
        reload_result_json(&body);
        buf_append(&body, "\n", 1);
        respond(out, r < 0 ? 500 : 200, "application/json", buf_data(&body), buf_used(&body),
                NULL, false);
    } else if (path_is(rq, ALLOWLIST_PATH)) {
        if (!get && !head)
            goto not_allowed_get;
        allowlist_json(&body);
        buf_append(&body, "\n", 1);
        respond(out, 200, "application/json", buf_data(&body), buf_used(&body), NULL, head);
    } else if (rq->path_len > strlen(ALLOWLIST_PATH) + 1 &&
               memcmp(rq->path, ALLOWLIST_PATH "/", strlen(ALLOWLIST_PATH) + 1) == 0) {
        allowlist_route(rq, out);
    } else {
        admin_respond_text(out, 404, "not found\n", NULL);
    }
    buf_free(&body);
    return;
not_allowed_get:
    admin_respond_text(out, 405, "method not allowed\n", "Allow: GET, HEAD\r\n");
}

void admin_handle(const char *head, size_t head_len, bool public_side, struct buf *out)
{
    struct request rq;
    int code = admin_parse_head(head, head_len, &rq);
    if (code != 0) {
        admin_respond_text(out, code, code == 413 ? "request body too large\n" : "bad request\n",
                           NULL);
        return;
    }
    admin_route(&rq, public_side, out);
}

void admin_set_server(struct server *srv)
{
    admin_srv = srv;
}

