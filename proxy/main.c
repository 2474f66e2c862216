/* main.c: the command line (run, check, version, probe), signals, start, reload and stop. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "admin.h"
#include "allowlist.h"
#include "base.h"
#include "config.h"
#include "conn.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "probe.h"
#include "reload.h"
#include "tls.h"

static struct server srv;
static uv_loop_t *main_loop;
static uv_signal_t sig_term, sig_int, sig_hup;
static uv_timer_t drain_timer;
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
    uv_stop(main_loop);
}

static void drain_timeout_cb(uv_timer_t *t)
{
    log_msg(LOG_LEVEL_WARN, "drain_timeout", "connections still open after drain_timeout; exiting");
    _exit(0);
}

static void stop_cb(uv_signal_t *s, int signum)
{
    if (stopping)
        return;
    stopping = true;
    log_msg(LOG_LEVEL_INFO, "draining", "signal %d: stop accepting, finish in-flight requests",
            signum);
    atomic_store(&srv.ready, false);
    admin_stop();
    reload_stop();
    listener_drain(&srv);
    uv_timer_start(&drain_timer, drain_timeout_cb, srv.cfg->limits.drain_timeout_ms, 0);
    uv_thread_create(&joiner, join_workers, NULL);
}

static void hup_cb(uv_signal_t *s, int signum)
{
    char err[1024];
    reload_run("signal", true, err, sizeof(err));
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
    /* A tenant that did not load is a validation failure, even though run would serve the
     * others. */
    size_t broken = tls_gen_store_errors(gen);
    if (broken > 0)
        fprintf(stderr, "check: %zu tenant%s of the CA store failed to load\n", broken,
                broken == 1 ? "" : "s");
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
    uv_signal_start(&sig_hup, hup_cb, SIGHUP);
    uv_timer_init(main_loop, &drain_timer);
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
    log_msg(LOG_LEVEL_INFO, "started", "certgate %s with %zu worker%s", CERTGATE_VERSION,
            srv.num_workers, srv.num_workers == 1 ? "" : "s");
    uv_run(main_loop, UV_RUN_DEFAULT);
    uv_thread_join(&joiner);
    log_msg(LOG_LEVEL_INFO, "stopped", "all connections drained");
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_hup, NULL);
    uv_close((uv_handle_t *)&drain_timer, NULL);
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
