/* main.c: the command line (run, check, version, probe), signals, start, reload and stop. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "control/admin.h"
#include "control/notify.h"
#include "control/probe.h"
#include "control/reload.h"
#include "core/base.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/conn.h"
#include "server/listener.h"
#include "tls/allowlist.h"
#include "tls/tls.h"
#include "tls/tls_report.h"

static struct server srv;
static uv_loop_t *main_loop;
static uv_signal_t sig_term, sig_int, sig_hup;
static uv_timer_t drain_timer, delay_timer, hup_timer;
static uv_async_t workers_done;
static uv_thread_t joiner;
static bool stopping;

static int usage(void)
{
    fprintf(stderr, "usage: certgate run   [-c FILE]   run the proxy (default ./certgate.yaml)\n"
                    "       certgate check [-c FILE]   validate config, credentials, CA store\n"
                    "       certgate version           print the version and TLS library\n"
                    "       certgate probe [-c FILE]   exit 0 when the running instance is ready\n");
    return 2;
}

static void join_workers(void *arg)
{
    listener_join(&srv);
    uv_async_send(&workers_done);
}

static void workers_done_cb(uv_async_t *a)
{
    /* The admin port lived through the drain, so probes saw 503 rather than a refused
     * connection; it goes with the last worker. */
    admin_stop();
    uv_stop(main_loop);
}

static void drain_timeout_cb(uv_timer_t *t)
{
    log_msg(LOG_LEVEL_WARN, "drain_timeout", "connections still open after drain_timeout; exiting");
    _exit(0);
}

static void begin_drain(void)
{
    const struct config_limits *lim = &srv.cfg->limits;
    log_msg(LOG_LEVEL_INFO, "draining",
            "listeners closed; finishing in-flight requests for up to %llu ms",
            (unsigned long long)lim->drain_timeout_ms);
    reload_stop();
    listener_drain(&srv);
    uv_timer_start(&drain_timer, drain_timeout_cb, lim->drain_timeout_ms, 0);
    uv_thread_create(&joiner, join_workers, NULL);
}

static void delay_done_cb(uv_timer_t *t)
{
    begin_drain();
}

/* The Kubernetes sequence: /ready fails at once, but endpoints learn it only after a while, so
 * the listeners keep accepting for limits.shutdown_delay (every response closing its
 * connection) before they close and the drain begins. A second signal means "now". */
static void stop_cb(uv_signal_t *s, int signum)
{
    if (stopping) {
        log_msg(LOG_LEVEL_WARN, "stopped_now",
                "signal %d during shutdown: exiting without waiting for %zu connection%s", signum,
                atomic_load(&srv.num_conns), atomic_load(&srv.num_conns) == 1 ? "" : "s");
        _exit(0);
    }
    stopping = true;
    atomic_store(&srv.ready, false);
    const struct config_limits *lim = &srv.cfg->limits;
    struct buf b = {0};
    log_begin(&b, LOG_LEVEL_INFO, "shutting_down");
    log_num(&b, "signal", signum);
    log_num(&b, "shutdown_delay_ms", (long long)lim->shutdown_delay_ms);
    log_num(&b, "drain_timeout_ms", (long long)lim->drain_timeout_ms);
    log_str(&b, "message",
            lim->shutdown_delay_ms > 0
                ? "/ready answers 503; still accepting (Connection: close) until the delay ends"
                : "/ready answers 503");
    log_end(&b);
    if (lim->shutdown_delay_ms == 0) {
        begin_drain();
        return;
    }
    listener_close_soon(&srv);
    uv_timer_start(&delay_timer, delay_done_cb, lim->shutdown_delay_ms, 0);
}

static void hup_timer_cb(uv_timer_t *t)
{
    char err[1024];
    reload_run("signal", true, err, sizeof(err));
}

/* SIGHUPs that come while a reload runs wait in libuv's signal pipe and are delivered together:
 * they share one reload on the next loop turn, so a storm of signals costs a reload per turn,
 * never a backlog of reloads that goes on long after the storm. */
static void hup_cb(uv_signal_t *s, int signum)
{
    uv_timer_start(&hup_timer, hup_timer_cb, 0, 0);
}

/* warn_forwarding tells the operator of listeners that pass a client's own client-certificate
 * header on while a client may come without a certificate (CONTRACT 5): whoever trusts that
 * header downstream trusts the client's word. A warning, not an error: a chain of proxies may
 * want it. */
static void warn_forwarding(const struct config *cfg)
{
    static const char *const modes[] = {
        [FCC_FORWARD_ONLY] = "forward_only",
        [FCC_APPEND_FORWARD] = "append_forward",
        [FCC_ALWAYS_FORWARD_ONLY] = "always_forward_only",
    };
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const struct listener_config *lc = &cfg->listeners[i];
        enum fcc_mode m = lc->forward_client_cert;
        if (lc->mode != LISTENER_HTTP || lc->client_auth == CLIENT_AUTH_REQUIRE ||
            (m != FCC_FORWARD_ONLY && m != FCC_APPEND_FORWARD && m != FCC_ALWAYS_FORWARD_ONLY))
            continue;
        fprintf(stderr,
                "%s:%u: warning: listener %s forwards a client's own client-certificate header "
                "(forward_client_cert: %s) while client_auth is %s, so a client can choose what "
                "the upstream reads; use client_auth: require, or sanitize_set\n",
                cfg->path, lc->line, lc->name, modes[m],
                lc->client_auth == CLIENT_AUTH_OPTIONAL ? "optional" : "none");
    }
}

/* check_expiry prints what is wrong with the server certificate's dates; returns 1 when
 * clients would refuse it now (expired, not yet valid), else 0. */
static int check_expiry(const struct tls_gen *gen, const struct config *cfg)
{
    char msg[1024];
    enum tls_expiry ex =
        tls_report_expiry(gen, (int64_t)time(NULL), cfg->expiry_warning_ms, msg, sizeof(msg));
    if (ex == TLS_EXPIRY_EXPIRED || ex == TLS_EXPIRY_NOT_YET_VALID) {
        fprintf(stderr, "check: %s\n", msg);
        return 1;
    }
    if (ex == TLS_EXPIRY_SOON)
        fprintf(stderr, "warning: %s (credentials.expiry_warning)\n", msg);
    return 0;
}

/* check_token_file: a token file that is set but missing or empty locks every mutating admin
 * call out (401 to everyone), which run only discovers at the first call. */
static int check_token_file(const struct config *cfg)
{
    struct stat st;
    if (cfg->admin_address.text == NULL || cfg->admin_token_file == NULL)
        return 0;
    if (stat(cfg->admin_token_file, &st) != 0) {
        fprintf(stderr, "check: admin.token_file %s: %s\n", cfg->admin_token_file,
                strerror(errno));
        return 1;
    }
    if (!S_ISREG(st.st_mode) || st.st_size == 0) {
        fprintf(stderr, "check: admin.token_file %s: %s\n", cfg->admin_token_file,
                S_ISREG(st.st_mode) ? "the file is empty" : "not a regular file");
        return 1;
    }
    if (access(cfg->admin_token_file, R_OK) != 0) {
        fprintf(stderr, "check: admin.token_file %s: %s\n", cfg->admin_token_file,
                strerror(errno));
        return 1;
    }
    return 0;
}

static int cmd_check(const char *path)
{
    char err[2048];
    struct config *cfg = NULL;
    int r = config_load(&cfg, path, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    struct tls_gen *gen = NULL;
    r = tls_gen_new(&gen, cfg, NULL, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "%s\n", err);
        config_free(cfg);
        return 1;
    }
    printf("configuration: %s ok (%zu listener%s, %u worker%s)\n", path, cfg->num_listeners,
           cfg->num_listeners == 1 ? "" : "s", cfg->workers, cfg->workers == 1 ? "" : "s");
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const struct listener_config *lc = &cfg->listeners[i];
        printf("listener %s: %s -> %s (%s)\n", lc->name, lc->address.text, lc->upstream.text,
               lc->mode == LISTENER_HTTP ? "http" : lc->mode == LISTENER_TLS ? "tls" : "tcp");
    }
    tls_gen_describe(gen, cfg);
    warn_forwarding(cfg);
    /* Warnings only: such a certificate is still an anchor for itself (a pinned client). */
    tls_check_anchors(cfg);
    /* A tenant that did not load is a validation failure, even though run would serve the
     * others. */
    size_t broken = tls_gen_store_errors(gen);
    if (broken > 0)
        fprintf(stderr, "check: %zu tenant%s of the CA store failed to load\n", broken,
                broken == 1 ? "" : "s");
    broken += (size_t)check_expiry(gen, cfg);
    broken += (size_t)check_token_file(cfg);
    r = allowlist_init(cfg->allowed_subjects_file, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "%s\n", err);
        broken++;
    } else if (cfg->allowed_subjects_file != NULL) {
        struct buf list = {0};
        allowlist_json(&list);
        printf("allowlist: %s ok: %.*s\n", cfg->allowed_subjects_file, (int)buf_used(&list),
               buf_data(&list));
        buf_free(&list);
    }
    allowlist_cleanup();
    tls_gen_unref(gen);
    config_free(cfg);
    return broken > 0 ? 1 : 0;
}

/* log_started says how many workers run and where the number came from: with "auto" it is the
 * CPUs this process may use (affinity, cgroup cpu.max), which an operator may want to verify. */
static void log_started(void)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "certgate %s with %zu worker%s", CERTGATE_VERSION,
             srv.num_workers, srv.num_workers == 1 ? "" : "s");
    struct buf b = {0};
    log_begin(&b, LOG_LEVEL_INFO, "started");
    log_str(&b, "message", msg);
    log_str(&b, "version", CERTGATE_VERSION);
    log_num(&b, "workers", (long long)srv.num_workers);
    log_str(&b, "workers_from", srv.cfg->workers_auto ? "auto" : "config");
    log_end(&b);
}

/* The configuration is read quietly: a broken one is a usage problem (2), not "not ready". */
static int cmd_probe(const char *path)
{
    char err[2048];
    struct config *cfg = NULL;
    if (config_load(&cfg, path, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    int r = probe_run(cfg, 3000);
    config_free(cfg);
    return r;
}

static int cmd_run(const char *path)
{
    char err[2048];
    struct config *cfg = NULL;
    int r = config_load(&cfg, path, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    log_set_level(cfg->log_level);
    signal(SIGPIPE, SIG_IGN);
    srv.cfg = cfg;
    uv_mutex_init(&srv.gen_lock);
    metrics_init(cfg);
    r = reload_init(&srv, err, sizeof(err));
    if (r < 0) {
        log_msg(LOG_LEVEL_ERROR, "startup_failed", "%s", err);
        config_free(cfg);
        return 1;
    }
    /* A broken allowlist file stops the start: serving without it would refuse every client
     * it allows, and rewriting it would lose what the operator wrote. */
    r = allowlist_init(cfg->allowed_subjects_file, err, sizeof(err));
    if (r < 0) {
        log_msg(LOG_LEVEL_ERROR, "startup_failed", "%s", err);
        return 1;
    }
    /* The admin port listens first, so that whoever sees it up and asks /ready gets 503 until
     * the listeners really accept, never a refused connection after they do. */
    main_loop = uv_default_loop();
    if (admin_start(main_loop, &srv, err, sizeof(err)) < 0) {
        log_msg(LOG_LEVEL_ERROR, "startup_failed", "%s", err);
        return 1;
    }
    if (listener_bind(&srv, err, sizeof(err)) < 0) {
        log_msg(LOG_LEVEL_ERROR, "startup_failed", "%s", err);
        return 1;
    }
    reload_start(main_loop);
    uv_signal_init(main_loop, &sig_term);
    uv_signal_start(&sig_term, stop_cb, SIGTERM);
    uv_signal_init(main_loop, &sig_int);
    uv_signal_start(&sig_int, stop_cb, SIGINT);
    uv_signal_init(main_loop, &sig_hup);
    uv_timer_init(main_loop, &hup_timer);
    uv_signal_start(&sig_hup, hup_cb, SIGHUP);
    uv_timer_init(main_loop, &drain_timer);
    uv_timer_init(main_loop, &delay_timer);
    uv_async_init(main_loop, &workers_done, workers_done_cb);
    conn_init_hooks();
    if (listener_start(&srv) < 0) {
        log_msg(LOG_LEVEL_ERROR, "startup_failed", "cannot start worker threads");
        return 1;
    }
    atomic_store(&srv.ready, true);
    /* systemd Type=notify: every listener is bound and accepting from here on. */
    if (notify_send("READY=1\nSTATUS=serving") < 0)
        log_msg(LOG_LEVEL_WARN, "notify_failed", "cannot send READY=1 to NOTIFY_SOCKET %s",
                getenv("NOTIFY_SOCKET"));
    log_started();
    uv_run(main_loop, UV_RUN_DEFAULT);
    uv_thread_join(&joiner);
    log_msg(LOG_LEVEL_INFO, "stopped", "all connections drained");
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_hup, NULL);
    /* libuv gives SIGHUP back its default action, which kills: a late reload request must not
     * turn a clean exit into death by signal. */
    signal(SIGHUP, SIG_IGN);
    uv_close((uv_handle_t *)&hup_timer, NULL);
    uv_close((uv_handle_t *)&drain_timer, NULL);
    uv_close((uv_handle_t *)&delay_timer, NULL);
    uv_close((uv_handle_t *)&workers_done, NULL);
    uv_run(main_loop, UV_RUN_NOWAIT);
    tls_gen_unref(atomic_load(&srv.gen));
    uv_mutex_destroy(&srv.gen_lock);
    metrics_free();
    allowlist_cleanup();
    config_free(cfg);
    uv_loop_close(main_loop);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *cmd = argv[1];
    const char *path = "certgate.yaml";
    for (int i = 2; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            path = argv[++i];
        else
            return usage();
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("certgate %s (%s)\n", CERTGATE_VERSION, tls_library());
        return 0;
    }
    if (strcmp(cmd, "check") == 0)
        return cmd_check(path);
    if (strcmp(cmd, "run") == 0)
        return cmd_run(path);
    if (strcmp(cmd, "probe") == 0)
        return cmd_probe(path);
    return usage();
}
