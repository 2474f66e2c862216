/* metrics.c: the process-wide counters of CONTRACT section 7. Workers count with relaxed atomics
 * into per-listener slots sized once at start; the admin API renders them as Prometheus text
 * (format 0.0.4). Nothing here takes a lock. */
#include "core/metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "core/base.h"

/* Status codes 100..599 are counted exactly; anything else lands in "other". */
#define CODE_MIN 100
#define CODE_MAX 599
#define NUM_CODES (CODE_MAX - CODE_MIN + 2)

/* Upper bounds of the request duration histogram, in microseconds (+Inf is implicit). A
 * request certgate answers itself or a local upstream answers takes a few hundred
 * microseconds: the first buckets are below a millisecond so that they do not all land in one. */
static const uint64_t bucket_us[] = {100,     250,     500,     1000,     2500,    5000,
                                     10000,   25000,   50000,   100000,   250000,  500000,
                                     1000000, 2500000, 5000000, 10000000, 30000000, 60000000};
#define NUM_BUCKETS (ARRAY_SIZE(bucket_us) + 1)

struct listener_metrics {
    char *name;
    bool tls; /* tcp listeners make no handshakes: no series for them */
    atomic_uint_fast64_t bytes_in;  /* from clients */
    atomic_uint_fast64_t bytes_out; /* to clients */
    atomic_uint_fast64_t conns_total;
    atomic_int_fast64_t conns_active;
    atomic_uint_fast64_t handshakes[METRICS_HS_NUM];
    atomic_uint_fast64_t requests[NUM_CODES];
    atomic_uint_fast64_t upstream[METRICS_UP_NUM];
    atomic_uint_fast64_t buckets[NUM_BUCKETS]; /* per bucket, not cumulative */
    atomic_uint_fast64_t duration_sum_us;
    bool accepts_proxy; /* accept_proxy_protocol is not off: its error series exists */
    atomic_uint_fast64_t proxy_errors;
};

static const char *const hs_names[METRICS_HS_NUM] = {
    "ok", "resumed", "no_cert", "untrusted", "expired", "revoked", "policy", "error",
};
static const char *const up_names[METRICS_UP_NUM] = {"connect", "timeout", "reset", "framing"};
static const char *const reload_sources[] = {"watch", "poll", "signal", "admin", "other"};
#define NUM_SOURCES ARRAY_SIZE(reload_sources)

static struct listener_metrics *lms;
static size_t num_lms;
static atomic_uint_fast64_t reloads[NUM_SOURCES][2]; /* [source][ok] */
static atomic_uint_fast64_t crl_stale;
static atomic_uint_fast64_t ocsp[METRICS_OCSP_NUM];
static const char *const ocsp_results[METRICS_OCSP_NUM] = {"good", "revoked", "unknown",
                                                             "failed"};
static int64_t start_time_us; /* wall clock at metrics_init, for process_start_time_seconds */

#define INC(x) atomic_fetch_add_explicit(&(x), 1, memory_order_relaxed)
#define GET(x) atomic_load_explicit(&(x), memory_order_relaxed)

void metrics_init(const struct config *cfg)
{
    metrics_free();
    num_lms = cfg->num_listeners;
    lms = xcalloc(num_lms ? num_lms : 1, sizeof(*lms));
    for (size_t i = 0; i < num_lms; i++) {
        lms[i].name = xstrdup(cfg->listeners[i].name);
        lms[i].accepts_proxy = cfg->listeners[i].accept_proxy_protocol != ACCEPT_PROXY_OFF;
        lms[i].tls = cfg->listeners[i].mode != LISTENER_TCP;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    start_time_us = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
    for (size_t s = 0; s < NUM_SOURCES; s++) {
        atomic_store(&reloads[s][0], 0);
        atomic_store(&reloads[s][1], 0);
    }
    atomic_store(&crl_stale, 0);
    for (size_t i = 0; i < METRICS_OCSP_NUM; i++)
        atomic_store(&ocsp[i], 0);
}

void metrics_free(void)
{
    for (size_t i = 0; i < num_lms; i++)
        free(lms[i].name);
    free(lms);
    lms = NULL;
    num_lms = 0;
}

static struct listener_metrics *lm(size_t listener)
{
    return listener < num_lms ? &lms[listener] : NULL;
}

void metrics_conn_open(size_t listener)
{
    struct listener_metrics *m = lm(listener);
    if (m == NULL)
        return;
    INC(m->conns_total);
    INC(m->conns_active);
}

void metrics_conn_close(size_t listener)
{
    struct listener_metrics *m = lm(listener);
    if (m != NULL)
        atomic_fetch_sub_explicit(&m->conns_active, 1, memory_order_relaxed);
}

void metrics_handshake(size_t listener, enum metrics_handshake result)
{
    struct listener_metrics *m = lm(listener);
    if (m != NULL && (unsigned)result < METRICS_HS_NUM)
        INC(m->handshakes[result]);
}

void metrics_request(size_t listener, int status, uint64_t duration_us)
{
    struct listener_metrics *m = lm(listener);
    if (m == NULL)
        return;
    size_t code = status >= CODE_MIN && status <= CODE_MAX ? (size_t)(status - CODE_MIN)
                                                            : NUM_CODES - 1;
    INC(m->requests[code]);
    size_t b = 0;
    while (b < ARRAY_SIZE(bucket_us) && duration_us > bucket_us[b])
        b++;
    INC(m->buckets[b]);
    atomic_fetch_add_explicit(&m->duration_sum_us, duration_us, memory_order_relaxed);
}

void metrics_bytes(size_t listener, uint64_t from_client, uint64_t to_client)
{
    struct listener_metrics *m = lm(listener);
    if (m == NULL)
        return;
    atomic_fetch_add_explicit(&m->bytes_in, from_client, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->bytes_out, to_client, memory_order_relaxed);
}

void metrics_upstream_error(size_t listener, enum metrics_upstream kind)
{
    struct listener_metrics *m = lm(listener);
    if (m != NULL && (unsigned)kind < METRICS_UP_NUM)
        INC(m->upstream[kind]);
}

void metrics_proxy_protocol_error(size_t listener)
{
    struct listener_metrics *m = lm(listener);
    if (m != NULL)
        INC(m->proxy_errors);
}

void metrics_reload(const char *source, bool ok)
{
    size_t s = 0;
    while (s < NUM_SOURCES - 1 && (source == NULL || strcmp(source, reload_sources[s]) != 0))
        s++;
    INC(reloads[s][ok ? 1 : 0]);
}

void metrics_crl_stale(void)
{
    INC(crl_stale);
}

void metrics_ocsp(enum metrics_ocsp result)
{
    if (result < METRICS_OCSP_NUM)
        INC(ocsp[result]);
}

uint64_t metrics_reload_count(const char *source, bool ok)
{
    for (size_t s = 0; s < NUM_SOURCES; s++)
        if (source != NULL && strcmp(source, reload_sources[s]) == 0)
            return GET(reloads[s][ok ? 1 : 0]);
    return 0;
}

void metrics_label(struct buf *out, const char *value)
{
    buf_append(out, "\"", 1);
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            buf_appendf(out, "\\%c", *p);
        else if (*p == '\n')
            buf_appends(out, "\\n");
        else
            buf_append(out, p, 1);
    }
    buf_append(out, "\"", 1);
}

static void family(struct buf *out, const char *name, const char *type, const char *help)
{
    buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_start(struct buf *out, const char *name, const struct listener_metrics *m)
{
    buf_appendf(out, "%s{listener=", name);
    metrics_label(out, m->name);
}

static void render_listeners(struct buf *out)
{
    family(out, "certgate_connections_total", "counter", "Connections accepted.");
    for (size_t i = 0; i < num_lms; i++) {
        sample_start(out, "certgate_connections_total", &lms[i]);
        buf_appendf(out, "} %llu\n", (unsigned long long)GET(lms[i].conns_total));
    }
    family(out, "certgate_connections_active", "gauge", "Connections open now.");
    for (size_t i = 0; i < num_lms; i++) {
        sample_start(out, "certgate_connections_active", &lms[i]);
        buf_appendf(out, "} %lld\n", (long long)GET(lms[i].conns_active));
    }
    family(out, "certgate_handshakes_total", "counter", "TLS handshakes by result.");
    for (size_t i = 0; i < num_lms; i++) {
        for (size_t r = 0; r < METRICS_HS_NUM && lms[i].tls; r++) {
            sample_start(out, "certgate_handshakes_total", &lms[i]);
            buf_appendf(out, ",result=\"%s\"} %llu\n", hs_names[r],
                        (unsigned long long)GET(lms[i].handshakes[r]));
        }
    }
    family(out, "certgate_requests_total", "counter", "HTTP responses sent, by status code.");
    for (size_t i = 0; i < num_lms; i++) {
        for (size_t c = 0; c < NUM_CODES; c++) {
            uint64_t v = GET(lms[i].requests[c]);
            if (v == 0)
                continue;
            sample_start(out, "certgate_requests_total", &lms[i]);
            if (c == NUM_CODES - 1)
                buf_appendf(out, ",code=\"other\"} %llu\n", (unsigned long long)v);
            else
                buf_appendf(out, ",code=\"%zu\"} %llu\n", c + CODE_MIN, (unsigned long long)v);
        }
    }
    family(out, "certgate_request_bytes_total", "counter",
           "Bytes received from clients: request bodies (http), the relayed stream (tls, tcp).");
    for (size_t i = 0; i < num_lms; i++) {
        sample_start(out, "certgate_request_bytes_total", &lms[i]);
        buf_appendf(out, "} %llu\n", (unsigned long long)GET(lms[i].bytes_in));
    }
    family(out, "certgate_response_bytes_total", "counter",
           "Bytes sent to clients: response bodies (http), the relayed stream (tls, tcp).");
    for (size_t i = 0; i < num_lms; i++) {
        sample_start(out, "certgate_response_bytes_total", &lms[i]);
        buf_appendf(out, "} %llu\n", (unsigned long long)GET(lms[i].bytes_out));
    }
    family(out, "certgate_upstream_errors_total", "counter", "Upstream failures by kind.");
    for (size_t i = 0; i < num_lms; i++) {
        for (size_t k = 0; k < METRICS_UP_NUM; k++) {
            sample_start(out, "certgate_upstream_errors_total", &lms[i]);
            buf_appendf(out, ",kind=\"%s\"} %llu\n", up_names[k],
                        (unsigned long long)GET(lms[i].upstream[k]));
        }
    }
    family(out, "certgate_proxy_protocol_errors_total", "counter",
           "Connections closed for a missing, malformed or late PROXY protocol header.");
    for (size_t i = 0; i < num_lms; i++) {
        if (!lms[i].accepts_proxy)
            continue;
        sample_start(out, "certgate_proxy_protocol_errors_total", &lms[i]);
        buf_appendf(out, "} %llu\n", (unsigned long long)GET(lms[i].proxy_errors));
    }
    family(out, "certgate_request_duration_seconds", "histogram",
           "Time from the request head to the end of the response.");
    for (size_t i = 0; i < num_lms; i++) {
        uint64_t cum = 0;
        for (size_t b = 0; b < NUM_BUCKETS; b++) {
            cum += GET(lms[i].buckets[b]);
            sample_start(out, "certgate_request_duration_seconds_bucket", &lms[i]);
            if (b < ARRAY_SIZE(bucket_us))
                buf_appendf(out, ",le=\"%g\"} %llu\n", (double)bucket_us[b] / 1e6,
                            (unsigned long long)cum);
            else
                buf_appendf(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        uint64_t sum = GET(lms[i].duration_sum_us);
        sample_start(out, "certgate_request_duration_seconds_sum", &lms[i]);
        buf_appendf(out, "} %llu.%06llu\n", (unsigned long long)(sum / 1000000),
                    (unsigned long long)(sum % 1000000));
        sample_start(out, "certgate_request_duration_seconds_count", &lms[i]);
        buf_appendf(out, "} %llu\n", (unsigned long long)cum);
    }
}

/* RUSAGE_SELF sums every thread of the process, workers included. */
static double process_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static long long process_rss_bytes(void)
{
    char text[128] = "";
    long long size = 0, rss = 0;
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, text, sizeof(text) - 1);
    close(fd);
    if (n <= 0 || sscanf(text, "%lld %lld", &size, &rss) != 2)
        return 0;
    return rss * sysconf(_SC_PAGESIZE);
}

static long long process_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    long long n = 0;
    if (d == NULL)
        return 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n > 0 ? n - 1 : 0; /* not the descriptor opendir holds */
}

static void render_process(struct buf *out)
{
    family(out, "certgate_build_info", "gauge", "Always 1; the labels name the build.");
    buf_appends(out, "certgate_build_info{version=");
    metrics_label(out, CERTGATE_VERSION);
    buf_appends(out, ",tls_library=");
    metrics_label(out, OPENSSL_VERSION_TEXT); /* what tls_library() says; core is below tls */
    buf_appends(out, "} 1\n");
    family(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent.");
    buf_appendf(out, "process_cpu_seconds_total %.6f\n", process_cpu_seconds());
    family(out, "process_resident_memory_bytes", "gauge", "Resident memory size.");
    buf_appendf(out, "process_resident_memory_bytes %lld\n", process_rss_bytes());
    family(out, "process_open_fds", "gauge", "Open file descriptors.");
    buf_appendf(out, "process_open_fds %lld\n", process_open_fds());
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        family(out, "process_max_fds", "gauge", "Limit on open file descriptors.");
        buf_appendf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
    family(out, "process_start_time_seconds", "gauge", "Start time since the Unix epoch.");
    buf_appendf(out, "process_start_time_seconds %lld.%06lld\n",
                (long long)(start_time_us / 1000000), (long long)(start_time_us % 1000000));
}

void metrics_render(struct buf *out)
{
    render_listeners(out);
    render_process(out);
    family(out, "certgate_reload_total", "counter", "Reloads of credentials and CA store.");
    for (size_t s = 0; s < NUM_SOURCES; s++) {
        for (int ok = 1; ok >= 0; ok--) {
            uint64_t v = GET(reloads[s][ok]);
            if (s == NUM_SOURCES - 1 && v == 0)
                continue; /* "other" only when something counted there */
            buf_appendf(out, "certgate_reload_total{source=\"%s\",result=\"%s\"} %llu\n",
                        reload_sources[s], ok ? "success" : "failure", (unsigned long long)v);
        }
    }
    family(out, "certgate_crl_stale_total", "counter",
           "Verifications that consulted a CRL past its nextUpdate.");
    buf_appendf(out, "certgate_crl_stale_total %llu\n", (unsigned long long)GET(crl_stale));
    family(out, "certgate_ocsp_queries_total", "counter",
           "OCSP queries for client leaves, by outcome (failed: no usable answer).");
    for (size_t i = 0; i < METRICS_OCSP_NUM; i++)
        buf_appendf(out, "certgate_ocsp_queries_total{result=\"%s\"} %llu\n", ocsp_results[i],
                    (unsigned long long)GET(ocsp[i]));
}
