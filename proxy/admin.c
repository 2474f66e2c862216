/* admin.c: the admin listener: /healthz, /ready, POST /reload. A request is read whole (it is
 * small and bounded), answered, and the connection closed. */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "buf.h"
#include "config.h"
#include "listener.h"
#include "log.h"

#define ADMIN_MAX_REQUEST 8192

struct admin_conn {
    uv_tcp_t tcp;
    uv_write_t write;
    struct buf in;
    struct buf out;
    bool responded;
};

static uv_tcp_t admin_server;
static bool admin_running;
static struct server *admin_srv;
static int (*admin_reload)(struct server *, const char *, char *, size_t);

static void admin_conn_close_cb(uv_handle_t *h)
{
    struct admin_conn *ac = h->data;
    buf_free(&ac->in);
    buf_free(&ac->out);
    free(ac);
}

static void admin_write_cb(uv_write_t *req, int status)
{
    struct admin_conn *ac = req->data;
    uv_close((uv_handle_t *)&ac->tcp, admin_conn_close_cb);
}

static void respond(struct admin_conn *ac, int code, const char *reason, const char *type,
                    const char *body)
{
    ac->responded = true;
    uv_read_stop((uv_stream_t *)&ac->tcp);
    buf_appendf(&ac->out,
                "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                "Connection: close\r\n\r\n%s",
                code, reason, type, strlen(body), body);
    uv_buf_t b = uv_buf_init(buf_data(&ac->out), (unsigned)buf_used(&ac->out));
    ac->write.data = ac;
    if (uv_write(&ac->write, (uv_stream_t *)&ac->tcp, &b, 1, admin_write_cb) < 0)
        uv_close((uv_handle_t *)&ac->tcp, admin_conn_close_cb);
}

static void handle(struct admin_conn *ac)
{
    const char *d = buf_data(&ac->in);
    size_t len = buf_used(&ac->in);
    const char *sp1 = memchr(d, ' ', len);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - d)) : NULL;
    if (sp1 == NULL || sp2 == NULL) {
        respond(ac, 400, "Bad Request", "text/plain", "bad request\n");
        return;
    }
    size_t ml = (size_t)(sp1 - d), pl = (size_t)(sp2 - sp1 - 1);
    const char *path = sp1 + 1;
#define IS(m, p) (ml == strlen(m) && memcmp(d, m, ml) == 0 && pl == strlen(p) && memcmp(path, p, pl) == 0)
    if (IS("GET", "/healthz")) {
        respond(ac, 200, "OK", "text/plain", "ok\n");
    } else if (IS("GET", "/ready")) {
        if (atomic_load(&admin_srv->ready))
            respond(ac, 200, "OK", "text/plain", "ready\n");
        else
            respond(ac, 503, "Service Unavailable", "text/plain", "not ready\n");
    } else if (IS("POST", "/reload")) {
        char err[1024] = "";
        int r = admin_reload(admin_srv, "admin", err, sizeof(err));
        struct buf body = {0};
        log_begin(&body, LOG_LEVEL_INFO, "reload");
        log_str(&body, "result", r == 0 ? "success" : "failure");
        log_str(&body, "error", r == 0 ? NULL : err);
        /* The log line is also the answer: drop the time/level prefix. */
        const char *json = strstr(buf_data(&body), ",\"result\"");
        char *answer = xmalloc(buf_used(&body) + 4);
        snprintf(answer, buf_used(&body) + 4, "{%.*s}\n",
                 (int)(buf_used(&body) - (size_t)(json + 1 - buf_data(&body))), json + 1);
        respond(ac, r == 0 ? 200 : 500, r == 0 ? "OK" : "Internal Server Error",
                "application/json", answer);
        free(answer);
        buf_free(&body);
    } else if (IS("GET", "/healthz") || IS("GET", "/ready")) {
        respond(ac, 405, "Method Not Allowed", "text/plain", "method not allowed\n");
    } else {
        respond(ac, 404, "Not Found", "text/plain", "not found\n");
    }
#undef IS
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct admin_conn *ac = h->data;
    b->base = buf_reserve(&ac->in, 2048);
    b->len = 2048;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct admin_conn *ac = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)s, admin_conn_close_cb);
        return;
    }
    buf_commit(&ac->in, (size_t)n);
    if (ac->responded)
        return;
    if (buf_used(&ac->in) > ADMIN_MAX_REQUEST) {
        respond(ac, 431, "Request Header Fields Too Large", "text/plain", "too large\n");
        return;
    }
    if (memmem(buf_data(&ac->in), buf_used(&ac->in), "\r\n\r\n", 4) != NULL)
        handle(ac);
}

static void connection_cb(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    struct admin_conn *ac = xcalloc(1, sizeof(*ac));
    uv_tcp_init(server->loop, &ac->tcp);
    ac->tcp.data = ac;
    if (uv_accept(server, (uv_stream_t *)&ac->tcp) != 0) {
        uv_close((uv_handle_t *)&ac->tcp, admin_conn_close_cb);
        return;
    }
    uv_read_start((uv_stream_t *)&ac->tcp, alloc_cb, read_cb);
}

int admin_start(uv_loop_t *loop, struct server *srv,
                int (*reload)(struct server *srv, const char *source, char *err, size_t err_len),
                char *err, size_t err_len)
{
    const struct config *cfg = srv->cfg;
    admin_srv = srv;
    admin_reload = reload;
    if (cfg->admin_address.text == NULL)
        return 0;
    uv_tcp_init(loop, &admin_server);
    int r = uv_tcp_bind(&admin_server, (const struct sockaddr *)&cfg->admin_address.addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&admin_server, 128, connection_cb);
    if (r < 0) {
        snprintf(err, err_len, "admin: cannot listen on %s: %s", cfg->admin_address.text,
                 uv_strerror(r));
        uv_close((uv_handle_t *)&admin_server, NULL);
        return r;
    }
    admin_running = true;
    return 0;
}

void admin_stop(void)
{
    if (admin_running)
        uv_close((uv_handle_t *)&admin_server, NULL);
    admin_running = false;
}
