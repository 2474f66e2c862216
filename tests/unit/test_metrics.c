/* test_metrics.c: the counters count exactly under concurrency and render as Prometheus text
 * (families with HELP/TYPE, escaped labels, cumulative histogram buckets). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/metrics.h"

static struct listener_config lcs[2];
static struct config cfg;

static int setup(void **state)
{
    memset(lcs, 0, sizeof(lcs));
    memset(&cfg, 0, sizeof(cfg));
    lcs[0].name = "web";
    lcs[1].name = "we\"ird\\name\n";
    cfg.listeners = lcs;
    cfg.num_listeners = 2;
    metrics_init(&cfg);
    return 0;
}

static int teardown(void **state)
{
    metrics_free();
    return 0;
}

/* Renders and returns a NUL-terminated copy (caller frees). */
static char *render(void)
{
    struct buf b = {0};
    metrics_render(&b);
    char *s = strndup(buf_data(&b), buf_used(&b));
    buf_free(&b);
    return s;
}

static void assert_has(const char *text, const char *line)
{
    if (strstr(text, line) == NULL)
        fail_msg("missing: %s", line);
}

static void test_connections_and_handshakes(void **state)
{
    metrics_conn_open(0);
    metrics_conn_open(0);
    metrics_conn_close(0);
    metrics_handshake(0, METRICS_HS_OK);
    metrics_handshake(0, METRICS_HS_REVOKED);
    metrics_handshake(0, METRICS_HS_REVOKED);
    metrics_upstream_error(0, METRICS_UP_FRAMING);
    char *s = render();
    assert_has(s, "# TYPE certgate_connections_total counter\n");
    assert_has(s, "certgate_connections_total{listener=\"web\"} 2\n");
    assert_has(s, "certgate_connections_active{listener=\"web\"} 1\n");
    assert_has(s, "certgate_handshakes_total{listener=\"web\",result=\"ok\"} 1\n");
    assert_has(s, "certgate_handshakes_total{listener=\"web\",result=\"revoked\"} 2\n");
    assert_has(s, "certgate_handshakes_total{listener=\"web\",result=\"no_cert\"} 0\n");
    assert_has(s, "certgate_upstream_errors_total{listener=\"web\",kind=\"framing\"} 1\n");
    assert_has(s, "certgate_crl_stale_total 0\n");
    free(s);
}

static void test_label_escaping(void **state)
{
    metrics_conn_open(1);
    char *s = render();
    assert_has(s, "certgate_connections_total{listener=\"we\\\"ird\\\\name\\n\"} 1\n");
    free(s);
}

static void test_requests_and_histogram(void **state)
{
    metrics_request(0, 200, 1500);    /* 1.5 ms */
    metrics_request(0, 200, 1000);    /* exactly on the 1 ms bound */
    metrics_request(0, 503, 7000000); /* 7 s */
    metrics_request(0, 42, 10);       /* not an HTTP status */
    char *s = render();
    assert_has(s, "certgate_requests_total{listener=\"web\",code=\"200\"} 2\n");
    assert_has(s, "certgate_requests_total{listener=\"web\",code=\"503\"} 1\n");
    assert_has(s, "certgate_requests_total{listener=\"web\",code=\"other\"} 1\n");
    assert_null(strstr(s, "code=\"404\""));
    assert_has(s, "# TYPE certgate_request_duration_seconds histogram\n");
    assert_has(s, "certgate_request_duration_seconds_bucket{listener=\"web\",le=\"0.001\"} 2\n");
    assert_has(s, "certgate_request_duration_seconds_bucket{listener=\"web\",le=\"0.0025\"} 3\n");
    assert_has(s, "certgate_request_duration_seconds_bucket{listener=\"web\",le=\"5\"} 3\n");
    assert_has(s, "certgate_request_duration_seconds_bucket{listener=\"web\",le=\"10\"} 4\n");
    assert_has(s, "certgate_request_duration_seconds_bucket{listener=\"web\",le=\"+Inf\"} 4\n");
    assert_has(s, "certgate_request_duration_seconds_count{listener=\"web\"} 4\n");
    assert_has(s, "certgate_request_duration_seconds_sum{listener=\"web\"} 7.002510\n");
    free(s);
}

static void test_reload_and_out_of_range(void **state)
{
    metrics_reload("watch", true);
    metrics_reload("watch", false);
    metrics_reload("admin", true);
    metrics_reload("bogus", true);
    metrics_crl_stale();
    metrics_conn_open(99); /* ignored, not a crash */
    metrics_handshake(99, METRICS_HS_OK);
    metrics_request(99, 200, 1);
    assert_int_equal(metrics_reload_count("watch", true), 1);
    assert_int_equal(metrics_reload_count("watch", false), 1);
    assert_int_equal(metrics_reload_count("poll", true), 0);
    char *s = render();
    assert_has(s, "certgate_reload_total{source=\"watch\",result=\"success\"} 1\n");
    assert_has(s, "certgate_reload_total{source=\"watch\",result=\"failure\"} 1\n");
    assert_has(s, "certgate_reload_total{source=\"signal\",result=\"failure\"} 0\n");
    assert_has(s, "certgate_reload_total{source=\"other\",result=\"success\"} 1\n");
    assert_has(s, "certgate_crl_stale_total 1\n");
    free(s);
}

/* Every family is announced once, before its samples. */
static void test_each_family_once(void **state)
{
    metrics_request(0, 200, 5);
    char *s = render();
    const char *fams[] = {"certgate_connections_total", "certgate_connections_active",
                          "certgate_handshakes_total", "certgate_requests_total",
                          "certgate_upstream_errors_total", "certgate_request_duration_seconds",
                          "certgate_reload_total", "certgate_crl_stale_total"};
    for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++) {
        char type[128];
        snprintf(type, sizeof(type), "# TYPE %s ", fams[i]);
        const char *first = strstr(s, type);
        assert_non_null(first);
        assert_null(strstr(first + 1, type));
        char sample[128];
        snprintf(sample, sizeof(sample), "\n%s", fams[i]);
        const char *p = strstr(s, sample);
        assert_non_null(p);
        assert_true(p > first);
    }
    free(s);
}

/* tcp listeners have no handshake series; bytes count per listener; sub-millisecond buckets;
 * the build and process families are there. */
static void test_bytes_tcp_and_process(void **state)
{
    lcs[1].mode = LISTENER_TCP;
    metrics_init(&cfg);
    metrics_bytes(0, 100, 2000);
    metrics_bytes(0, 1, 2);
    metrics_bytes(1, 300, 300);
    metrics_request(0, 200, 180); /* 180 us */
    char *s = render();
    assert_has(s, "certgate_handshakes_total{listener=\"web\",result=\"ok\"} 0\n");
    assert_null(strstr(s, "certgate_handshakes_total{listener=\"we\\\"ird"));
    assert_has(s, "certgate_request_bytes_total{listener=\"web\"} 101\n");
    assert_has(s, "certgate_response_bytes_total{listener=\"web\"} 2002\n");
    assert_has(s, "certgate_request_bytes_total{listener=\"we\\\"ird\\\\name\\n\"} 300\n");
    assert_has(s, "certgate_request_duration_seconds_bucket{listener=\"web\",le=\"0.0001\"} 0\n");
    assert_has(s, "certgate_request_duration_seconds_bucket{listener=\"web\",le=\"0.00025\"} 1\n");
    assert_has(s, "certgate_request_duration_seconds_sum{listener=\"web\"} 0.000180\n");
    assert_has(s, "# TYPE certgate_build_info gauge\n");
    assert_has(s, "# TYPE process_cpu_seconds_total counter\n");
    assert_has(s, "# TYPE process_resident_memory_bytes gauge\n");
    assert_has(s, "# TYPE process_open_fds gauge\n");
    assert_has(s, "# TYPE process_start_time_seconds gauge\n");
    free(s);
}

static void worker(void *arg)
{
    for (int i = 0; i < 100000; i++) {
        metrics_conn_open(0);
        metrics_request(0, 204, 100);
        metrics_conn_close(0);
    }
}

static void test_concurrent_counts_exact(void **state)
{
    uv_thread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(uv_thread_create(&th[i], worker, NULL), 0);
    for (int i = 0; i < 4; i++)
        uv_thread_join(&th[i]);
    char *s = render();
    assert_has(s, "certgate_connections_total{listener=\"web\"} 400000\n");
    assert_has(s, "certgate_connections_active{listener=\"web\"} 0\n");
    assert_has(s, "certgate_requests_total{listener=\"web\",code=\"204\"} 400000\n");
    assert_has(s, "certgate_request_duration_seconds_sum{listener=\"web\"} 40.000000\n");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connections_and_handshakes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_label_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requests_and_histogram, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_and_out_of_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_family_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_counts_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_tcp_and_process, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
