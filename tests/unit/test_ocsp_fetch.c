/* test_ocsp_fetch.c: OCSP responder URLs are split strictly (http only, a host, a port in range,
 * nothing that could inject a header), and a fetch against a local server that answers, closes
 * early or stays silent ends the way it should. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tls/ocsp_fetch.h"

static int parse(const char *url, char *host, uint16_t *port, char *path)
{
    return ocsp_fetch_parse_url(url, host, 256, port, path, 256);
}

static void test_parse_url(void **state)
{
    char host[256], path[256];
    uint16_t port = 0;
    assert_int_equal(parse("http://ocsp.example.com", host, &port, path), 0);
    assert_string_equal(host, "ocsp.example.com");
    assert_int_equal(port, 80);
    assert_string_equal(path, "/");
    assert_int_equal(parse("HTTP://127.0.0.1:8888/ocsp/x?y=1#frag", host, &port, path), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8888);
    assert_string_equal(path, "/ocsp/x?y=1");
    assert_int_equal(parse("http://[::1]:9/", host, &port, path), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9);
    assert_int_equal(parse("http://[::1]/a", host, &port, path), 0);
    assert_int_equal(port, 80);
    const char *bad[] = {"https://ocsp.example.com/", "ftp://x/", "http://", "http:///x",
                         "http://host:0/", "http://host:65536/", "http://host:/",
                         "http://host:8x/", "http://user@host/", "http://[::1/",
                         "http://[::1]x/", "http://host/a b", "http://host/a\r\nX: y", "ocsp"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], host, &port, path) == 0)
            fail_msg("accepted %s", bad[i]);
    }
}

struct result {
    int calls;
    int status;
    size_t len;
    char body[64];
};

static void done(void *arg, int status, const uint8_t *body, size_t len, const char *why)
{
    struct result *r = arg;
    r->calls++;
    r->status = status;
    r->len = len;
    if (body != NULL)
        memcpy(r->body, body, len < sizeof(r->body) ? len : sizeof(r->body) - 1);
}

/* A one-shot server on the same loop: answers |answer| to the first connection, then closes. */
struct server {
    uv_tcp_t tcp;
    uv_tcp_t conn;
    uv_write_t w;
    const char *answer;
    bool silent;
};

static void noop_close(uv_handle_t *h)
{
}

static void srv_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    static char scratch[4096];
    *b = uv_buf_init(scratch, sizeof(scratch));
}

static void srv_written(uv_write_t *w, int status)
{
    if (!uv_is_closing((uv_handle_t *)w->handle))
        uv_close((uv_handle_t *)w->handle, noop_close);
}

static void srv_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct server *sv = s->data;
    if (n <= 0 || sv->silent)
        return;
    uv_read_stop(s);
    uv_buf_t out = uv_buf_init((char *)sv->answer, (unsigned)strlen(sv->answer));
    uv_write(&sv->w, s, &out, 1, srv_written);
}

static void srv_accept(uv_stream_t *s, int status)
{
    struct server *sv = s->data;
    uv_tcp_init(s->loop, &sv->conn);
    sv->conn.data = sv;
    uv_accept(s, (uv_stream_t *)&sv->conn);
    uv_read_start((uv_stream_t *)&sv->conn, srv_alloc, srv_read);
}

static struct result fetch_from(const char *answer, bool silent, uint64_t timeout_ms)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct server sv = {.answer = answer, .silent = silent};
    uv_tcp_init(&loop, &sv.tcp);
    sv.tcp.data = &sv;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_bind(&sv.tcp, (struct sockaddr *)&a, 0);
    uv_listen((uv_stream_t *)&sv.tcp, 4, srv_accept);
    int len = sizeof(a);
    uv_tcp_getsockname(&sv.tcp, (struct sockaddr *)&a, &len);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/ocsp", ntohs(a.sin_port));
    struct result r = {0};
    assert_non_null(ocsp_fetch_start(&loop, url, (const uint8_t *)"req", 3, timeout_ms, done, &r));
    while (r.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&sv.tcp, noop_close);
    if (!uv_is_closing((uv_handle_t *)&sv.conn))
        uv_close((uv_handle_t *)&sv.conn, noop_close);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0); /* the fetch freed everything */
    return r;
}

static void test_fetch(void **state)
{
    struct result r = fetch_from("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, 2000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.len, 5);
    assert_string_equal(r.body, "hello");
    r = fetch_from("HTTP/1.0 200 OK\r\nContent-Type: x\r\n\r\nto-eof", false, 2000);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.body, "to-eof");
    r = fetch_from("HTTP/1.0 500 Oops\r\nContent-Length: 0\r\n\r\n", false, 2000);
    assert_true(r.status < 0);
    r = fetch_from("HTTP/1.0 200 OK\r\nContent-Length: 50\r\n\r\nshort", false, 2000);
    assert_true(r.status < 0);
    r = fetch_from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                   false, 2000);
    assert_true(r.status < 0);
    r = fetch_from("garbage\r\n\r\n", false, 2000);
    assert_true(r.status < 0);
    r = fetch_from("HTTP/1.1\r\n\r\n200 x", false, 2000); /* no status code on the line */
    assert_true(r.status < 0);
    r = fetch_from("HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", false, 2000);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.body, "ok");
    r = fetch_from("", true, 200);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, -ETIMEDOUT);
}

static void test_cancel(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct result r = {0};
    struct ocsp_fetch *f =
        ocsp_fetch_start(&loop, "http://127.0.0.1:9/", (const uint8_t *)"x", 1, 1000, done, &r);
    assert_non_null(f);
    ocsp_fetch_cancel(f); /* while resolving */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(r.calls, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_null(ocsp_fetch_start(&loop, "https://x/", (const uint8_t *)"x", 1, 1000, done, &r));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_url),
        cmocka_unit_test(test_fetch),
        cmocka_unit_test(test_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
