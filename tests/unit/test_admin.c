/* test_admin.c: the admin API answers every request, well-formed or not, with the right status:
 * routing, 404/405, strict head parsing (4xx, never a crash), the bearer token for POST /reload,
 * and the JSON and Prometheus bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "control/admin.h"
#include "control/reload.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/metrics.h"
#include "server/listener.h"
#include "tls/tls.h"

static struct config cfg;
static struct server srv;
static char token_path[64];

static int setup(void **state)
{
    memset(&cfg, 0, sizeof(cfg));
    memset(&srv, 0, sizeof(srv));
    cfg.path = "test.yaml";
    srv.cfg = &cfg;
    uv_mutex_init(&srv.gen_lock);
    char err[256];
    if (reload_init(&srv, err, sizeof(err)) != 0)
        fail_msg("reload_init: %s", err);
    atomic_store(&srv.ready, true);
    metrics_init(&cfg);
    admin_set_server(&srv);
    return 0;
}

static int teardown(void **state)
{
    tls_gen_unref(atomic_load(&srv.gen));
    uv_mutex_destroy(&srv.gen_lock);
    metrics_free();
    if (token_path[0])
        unlink(token_path);
    token_path[0] = '\0';
    return 0;
}

/* Answers |req| and returns the status code; the whole response goes to |*out| if non-NULL. */
static int ask(const char *req, char **out)
{
    struct buf b = {0};
    admin_handle(req, strlen(req), false, &b);
    assert_true(buf_used(&b) > 12);
    assert_memory_equal(buf_data(&b), "HTTP/1.1 ", 9);
    int code = atoi(buf_data(&b) + 9);
    /* Every response is complete: Content-Length matches the body. */
    char *text = strndup(buf_data(&b), buf_used(&b));
    char *cl = strstr(text, "Content-Length: ");
    char *body = strstr(text, "\r\n\r\n");
    assert_non_null(cl);
    assert_non_null(body);
    if (strncmp(req, "HEAD ", 5) != 0)
        assert_int_equal((size_t)atol(cl + 16), strlen(body + 4));
    if (out != NULL)
        *out = text;
    else
        free(text);
    buf_free(&b);
    return code;
}

static void test_routes(void **state)
{
    char *r = NULL;
    assert_int_equal(ask("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:9901\r\n\r\n", &r), 200);
    assert_non_null(strstr(r, "\r\n\r\nok\n"));
    free(r);
    assert_int_equal(ask("GET /ready HTTP/1.1\r\nHost: localhost\r\n\r\n", NULL), 200);
    atomic_store(&srv.ready, false);
    assert_int_equal(ask("GET /ready HTTP/1.1\r\nHost: localhost\r\n\r\n", NULL), 503);
    atomic_store(&srv.ready, true);
    assert_int_equal(ask("HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", NULL), 200);
    assert_int_equal(ask("GET /healthz?verbose=1 HTTP/1.0\r\n\r\n", NULL), 200);
    assert_int_equal(ask("GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n", NULL), 404);
    assert_int_equal(ask("GET /healthz/ HTTP/1.1\r\nHost: localhost\r\n\r\n", NULL), 404);
    assert_int_equal(ask("POST /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", &r), 405);
    assert_non_null(strstr(r, "Allow: GET, HEAD\r\n"));
    free(r);
    assert_int_equal(ask("GET /reload HTTP/1.1\r\nHost: localhost\r\n\r\n", &r), 405);
    assert_non_null(strstr(r, "Allow: POST\r\n"));
    free(r);
    assert_int_equal(ask("PUT /status HTTP/1.1\r\nHost: localhost\r\n\r\n", NULL), 405);
}

static void test_bad_heads(void **state)
{
    const char *bad[] = {
        "\r\n\r\n",
        "GET\r\n\r\n",
        "GET /healthz\r\n\r\n",
        "GET  /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1 \r\n\r\n",
        "GET healthz HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
        "G@T /healthz HTTP/1.1\r\n\r\n",
        "GET /health\x01z HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\n: x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nX: a\rb\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nX: a\nb\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nX: y",
        "GET /healthz HTTP/1.1",
        "GET /healthz HTTX/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int code = ask(bad[i], NULL);
        if (code != 400)
            fail_msg("case %zu: %d", i, code);
    }
    assert_int_equal(ask("GET /healthz HTTP/2.0\r\n\r\n", NULL), 400);
    assert_int_equal(ask("GET /healthz HTTP/1.2\r\n\r\n", NULL), 505);
    assert_int_equal(ask("POST /reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", NULL),
                     501);
    assert_int_equal(ask("POST /reload HTTP/1.1\r\nContent-Length: 70000\r\n\r\n", NULL), 413);
}

/* Every prefix of a valid request is either refused or answered, never a crash. */
static void test_every_prefix(void **state)
{
    const char *req = "POST /reload?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    for (size_t n = 0; n <= strlen(req); n++) {
        struct buf b = {0};
        admin_handle(req, n, false, &b);
        assert_true(buf_used(&b) > 0);
        buf_free(&b);
    }
}

static void test_status_and_metrics(void **state)
{
    char *r = NULL;
    assert_int_equal(ask("GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n", &r), 200);
    assert_non_null(strstr(r, "application/json"));
    assert_non_null(strstr(r, "\"version\":\""));
    assert_non_null(strstr(r, "\"generation\":1,"));
    assert_non_null(strstr(r, "\"listeners\":[]"));
    assert_non_null(strstr(r, "\"last_reload\":null"));
    free(r);
    assert_int_equal(ask("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n", &r), 200);
    assert_non_null(strstr(r, "text/plain; version=0.0.4"));
    assert_non_null(strstr(r, "certgate_reload_total{source=\"admin\",result=\"success\"} 0\n"));
    assert_non_null(strstr(r, "certgate_generation 1\n"));
    free(r);
}

static void test_reload_without_token(void **state)
{
    char *r = NULL;
    assert_int_equal(ask("POST /reload HTTP/1.1\r\nHost: localhost\r\n\r\n", &r), 200);
    assert_non_null(strstr(r, "\"result\":\"success\""));
    assert_non_null(strstr(r, "\"generation\":2"));
    free(r);
    assert_int_equal(metrics_reload_count("admin", true), 1);
}

static void test_reload_token(void **state)
{
    snprintf(token_path, sizeof(token_path), "/tmp/certgate-test-token-%d", (int)getpid());
    FILE *f = fopen(token_path, "w");
    assert_non_null(f);
    fputs("abc123\n", f);
    fclose(f);
    cfg.admin_token_file = token_path;
    assert_int_equal(ask("POST /reload HTTP/1.1\r\n\r\n", NULL), 401);
    assert_int_equal(ask("POST /reload HTTP/1.1\r\nAuthorization: Bearer abc12\r\n\r\n", NULL),
                     401);
    assert_int_equal(ask("POST /reload HTTP/1.1\r\nAuthorization: Bearer abc1234\r\n\r\n", NULL),
                     401);
    assert_int_equal(ask("POST /reload HTTP/1.1\r\nAuthorization: Bearer\r\n\r\n", NULL), 401);
    assert_int_equal(ask("POST /reload HTTP/1.1\r\nAuthorization: abc123\r\n\r\n", NULL), 401);
    assert_int_equal(ask("POST /reload HTTP/1.1\r\nauthorization: bearer abc123\r\n\r\n", NULL),
                     200);
    /* Reading is not mutating. */
    assert_int_equal(ask("GET /status HTTP/1.1\r\n\r\n", NULL), 200);
    /* An unreadable token file refuses mutating calls (fails closed). */
    unlink(token_path);
    assert_int_equal(ask("POST /reload HTTP/1.1\r\nAuthorization: Bearer abc123\r\n\r\n", NULL),
                     500);
    cfg.admin_token_file = NULL;
}

/* SECURITY rule 31: without a token only a loopback Host is answered (DNS rebinding). */
static void test_host_check(void **state)
{
    const char *ok[] = {"localhost", "LocalHost:9901", "127.0.0.1", "127.0.0.1:9901",
                        "127.8.9.10:1", "[::1]", "[::1]:9901", "[::ffff:127.0.0.1]:80",
                        "localhost:"};
    const char *bad[] = {"evil.example", "evil.example:9901", "localhost.", "localhost.evil",
                         "127.0.0.1.nip.io", "10.0.0.1:9901", "0.0.0.0", "[::2]", "[::1",
                         "[::1]x", "::1", "127.1", "localhost:99999x", "localhost:123456",
                         "", "[]", "127.0.0.1@evil", "evil.example#localhost"};
    char req[256];
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", ok[i]);
        if (ask(req, NULL) != 200)
            fail_msg("Host %s refused", ok[i]);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(req, sizeof(req), "POST /reload HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
        if (ask(req, NULL) != 403)
            fail_msg("Host %s answered", bad[i]);
        snprintf(req, sizeof(req), "GET /status HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
        if (ask(req, NULL) != 403)
            fail_msg("Host %s answered /status", bad[i]);
    }
    assert_int_equal(ask("PUT /allowed-client-certificate-subjects/CN%3Dx HTTP/1.1\r\n"
                         "Host: evil.example\r\n\r\n", NULL), 403);
    /* HTTP/1.1 needs a Host; HTTP/1.0 has none (and no browser speaks it). */
    assert_int_equal(ask("GET /healthz HTTP/1.1\r\n\r\n", NULL), 403);
    assert_int_equal(ask("GET /healthz HTTP/1.0\r\n\r\n", NULL), 200);
    assert_int_equal(ask("GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n",
                         NULL), 400);
    /* With a token the Host is not checked (the address may be on the network). */
    snprintf(token_path, sizeof(token_path), "/tmp/certgate-test-token-%d", (int)getpid());
    FILE *f = fopen(token_path, "w");
    assert_non_null(f);
    fputs("abc123\n", f);
    fclose(f);
    cfg.admin_token_file = token_path;
    assert_int_equal(ask("GET /healthz HTTP/1.1\r\nHost: 10.0.0.7:9901\r\n\r\n", NULL), 200);
    assert_int_equal(ask("POST /reload HTTP/1.1\r\nHost: evil.example\r\n\r\n", NULL), 401);
    cfg.admin_token_file = NULL;
}

/* Answers |req| as the public listener would and returns the status code. */
static int ask_public(const char *req)
{
    struct buf b = {0};
    admin_handle(req, strlen(req), true, &b);
    assert_true(buf_used(&b) > 12);
    int code = atoi(buf_data(&b) + 9);
    buf_free(&b);
    return code;
}

/* admin.public_address: probes and metrics for any Host, nothing else. */
static void test_public_side(void **state)
{
    assert_int_equal(ask_public("GET /healthz HTTP/1.1\r\nHost: 10.1.2.3:9902\r\n\r\n"), 200);
    assert_int_equal(ask_public("GET /ready HTTP/1.1\r\nHost: 10.1.2.3:9902\r\n\r\n"), 200);
    assert_int_equal(ask_public("HEAD /metrics HTTP/1.1\r\nHost: pod\r\n\r\n"), 200);
    assert_int_equal(ask_public("GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n"), 404);
    assert_int_equal(ask_public("POST /reload HTTP/1.1\r\nHost: localhost\r\n\r\n"), 404);
    assert_int_equal(ask_public("GET /allowed-client-certificate-subjects HTTP/1.1\r\n"
                                "Host: localhost\r\n\r\n"), 404);
    assert_int_equal(ask_public("PUT /allowed-client-certificate-subjects/CN%3Dx HTTP/1.1\r\n"
                                "Host: localhost\r\n\r\n"), 404);
    assert_int_equal(ask_public("POST /ready HTTP/1.1\r\nHost: localhost\r\n\r\n"), 405);
    assert_int_equal(metrics_reload_count("admin", true), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_heads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_and_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_without_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_public_side, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
