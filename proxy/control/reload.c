/* reload.c: watchers and the generation swap. Directories, never files, are watched (a file
 * replaced by rename or a Kubernetes ..data swap takes its inotify watch with it), re-armed on
 * every check, and their events debounced; a periodic rescan compares every file's metadata
 * (and every few polls its content) as a safety net. A new generation is built beside the
 * current one and swapped in with one pointer. */
#include "control/reload.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "ca_store.h"
#include "control/reload_internal.h"
#include "core/base.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "server/listener.h"
#include "tls/tls.h"
#include "tls/tls_report.h"

struct watch {
    uv_fs_event_t ev;
    char *path;
    dev_t dev;
    ino_t ino;
    bool keep;
    struct watch *next;
};

/* The last reload that ran (not the checks skipped as unchanged). */
struct last_reload {
    bool valid;
    char time[64];
    int64_t unix_time;
    const char *source;
    bool ok;
    char error[1024];
    uint64_t generation;
    uint64_t duration_ms;
};

static struct server *rl_srv;
static uv_loop_t *rl_loop;
static uv_timer_t debounce_timer, poll_timer, retry_timer;
static bool started, debounce_pending, retrying, watch_full_logged;
static uint64_t first_event_ms;
static struct watch *watches;
static size_t num_watches;
static struct hash last_hash;
static bool have_hash;
/* The last full scan, updated by incremental ones; valid unless it hit MAX_FILES. */
static struct scan state;
static bool have_state;
/* The tenant hashes the CA store in use was loaded after: what "unchanged" is relative to. */
static struct tenants *base_ten;
static struct trec *base_recs;
static struct hash base_top;
static bool have_base;
/* Directories named by events since the last check. */
static char *dirty[MAX_DIRTY];
static size_t num_dirty;
static bool dirty_overflow;
static uint64_t generation;
static struct last_reload last;


/* --- watchers ---------------------------------------------------------------------------- */

static void schedule(void);
static void retry_cb(uv_timer_t *t);

static void watch_close_cb(uv_handle_t *h)
{
    struct watch *w = h->data;
    free(w->path);
    free(w);
}

static void dirty_clear(void)
{
    for (size_t i = 0; i < num_dirty; i++)
        free(dirty[i]);
    num_dirty = 0;
    dirty_overflow = false;
}

static void event_cb(uv_fs_event_t *ev, const char *filename, int events, int status)
{
    /* Any event, even an error or the directory's own deletion, means "look again": the check
     * re-arms whatever was replaced. The directory tells the check what to rescan. */
    struct watch *w = ev->data;
    if (status < 0 || w == NULL || num_dirty == MAX_DIRTY) {
        dirty_overflow = true;
    } else {
        size_t i = 0;
        while (i < num_dirty && strcmp(dirty[i], w->path) != 0)
            i++;
        if (i == num_dirty)
            dirty[num_dirty++] = xstrdup(w->path);
    }
    schedule();
}


/* Starts watching directory |path| (|st| its stat); NULL when the kernel refuses (said once:
 * the periodic rescan still picks changes up). */
static struct watch *watch_start(const char *path, const struct stat *st)
{
    struct watch *nw = xcalloc(1, sizeof(*nw));
    nw->path = xstrdup(path);
    nw->dev = st->st_dev;
    nw->ino = st->st_ino;
    nw->keep = true;
    uv_fs_event_init(rl_loop, &nw->ev);
    nw->ev.data = nw;
    int r = uv_fs_event_start(&nw->ev, event_cb, nw->path, 0);
    if (r < 0) {
        if (!watch_full_logged)
            log_msg(LOG_LEVEL_WARN, "watch_failed",
                    "cannot watch %s: %s; the periodic rescan still picks changes up", nw->path,
                    uv_strerror(r));
        watch_full_logged = true;
        uv_close((uv_handle_t *)&nw->ev, watch_close_cb);
        return NULL;
    }
    return nw;
}

/* Brings the watches in line with |s|: a directory that is gone or was replaced (same path,
 * another inode) loses its watch and the new one gets one. */
/* Adds |w| (NULL: nothing) in front of the watch list. */
static void watch_push(struct watch *w)
{
    if (w == NULL)
        return;
    w->next = watches;
    watches = w;
    num_watches++;
}

/* Removes the watch *|pp| from the list and closes it. */
static void watch_unlink(struct watch **pp)
{
    struct watch *w = *pp;
    *pp = w->next;
    num_watches--;
    uv_fs_event_stop(&w->ev);
    uv_close((uv_handle_t *)&w->ev, watch_close_cb);
}

static void rearm(const struct scan *s)
{
    /* Index the current watches by path: a CA store can have thousands of directories. */
    struct watch **ws = xmalloc((num_watches + 1) * sizeof(*ws));
    char **paths = xmalloc((num_watches + 1) * sizeof(*paths));
    size_t n = 0;
    for (struct watch *w = watches; w != NULL; w = w->next) {
        w->keep = false;
        ws[n] = w;
        paths[n++] = w->path;
    }
    size_t cap = 0;
    size_t *index = reload_index_build(paths, n, &cap);
    for (size_t i = 0; i < s->num_dirs; i++) {
        struct stat st;
        if (stat(s->dirs[i], &st) != 0)
            continue;
        size_t at = *reload_index_slot(index, cap, paths, s->dirs[i]);
        struct watch *w = at ? ws[at - 1] : NULL;
        if (w != NULL && w->dev == st.st_dev && w->ino == st.st_ino) {
            w->keep = true;
            continue;
        }
        if (w != NULL)
            w->keep = false; /* replaced: closed below, a new watch follows */
        /* In front: the loop below sees it as kept. */
        watch_push(watch_start(s->dirs[i], &st));
    }
    free(index);
    free(paths);
    free(ws);
    struct watch **pp = &watches;
    while (*pp != NULL) {
        if ((*pp)->keep)
            pp = &(*pp)->next;
        else
            watch_unlink(pp);
    }
}

/* Watches the directories of an incremental scan |s| that are not watched yet or were replaced,
 * keeping every other watch (the next full scan drops those no longer needed). */
static void rearm_some(const struct scan *s)
{
    for (size_t i = 0; i < s->num_dirs; i++) {
        struct stat st;
        if (stat(s->dirs[i], &st) != 0)
            continue;
        struct watch **pp = &watches;
        while (*pp != NULL && strcmp((*pp)->path, s->dirs[i]) != 0)
            pp = &(*pp)->next;
        struct watch *w = *pp;
        if (w != NULL && w->dev == st.st_dev && w->ino == st.st_ino)
            continue;
        if (w != NULL)
            watch_unlink(pp);
        watch_push(watch_start(s->dirs[i], &st));
    }
}

/* Rescans only the credentials and the tenant directories the events named, updating |state|.
 * Returns false (|state| untouched) when the events named anything else, or the rescan found a
 * directory the last full scan did not give the same owner: a full scan must decide. */
static bool scan_incremental(const struct config *cfg)
{
    if (!have_state || dirty_overflow || num_dirty == 0 || state.too_many || state.missing ||
        cfg->ca_store_dir == NULL)
        return false;
    size_t todo[MAX_DIRTY];
    size_t num_todo = 0;
    for (size_t i = 0; i < num_dirty; i++) {
        size_t at = reload_index_find(state.index, state.cap_index, state.dirs, dirty[i]);
        if (at == 0)
            return false;
        int owner = state.owner[at - 1];
        if (owner == OWNER_CRED)
            continue;
        if (owner < 0 || (size_t)owner >= state.ten->num)
            return false;
        size_t k = 0;
        while (k < num_todo && todo[k] != (size_t)owner)
            k++;
        if (k == num_todo)
            todo[num_todo++] = (size_t)owner;
    }
    struct scan t = {0};
    struct trec recs[MAX_DIRTY];
    bool ok = true;
    reload_hash_init(&t.cred);
    t.cur = &t.cred;
    t.cur_owner = OWNER_CRED;
    reload_scan_credentials(&t, cfg);
    ok = !t.missing;
    for (size_t k = 0; k < num_todo && ok; k++) {
        const char *name = state.ten->names[todo[k]];
        char *rel = base_join_path("tenants", name);
        char *path = base_join_path(cfg->ca_store_dir, rel);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
            ok = false; /* the full scan hashes it as something else */
        } else {
            memset(&recs[k], 0, sizeof(recs[k]));
            reload_hash_init(&recs[k].h);
            t.cur = &recs[k].h;
            t.cur_rec = &recs[k];
            t.cur_owner = (int)todo[k];
            const char *real = NULL;
            reload_add_dir_at(&t, path, NULL, &real);
            reload_walk(&t, path, real, rel, 2);
            t.cur_rec = NULL;
        }
        free(rel);
        free(path);
    }
    for (size_t i = 0; i < t.num_dirs && ok; i++) {
        size_t at = reload_index_find(state.index, state.cap_index, state.dirs, t.dirs[i]);
        ok = at != 0 && state.owner[at - 1] == t.owner[i];
    }
    if (ok && state.num_files + t.num_files >= MAX_FILES)
        ok = false;
    if (ok) {
        if (started)
            rearm_some(&t);
        state.cred = t.cred;
        for (size_t k = 0; k < num_todo; k++)
            state.recs[todo[k]] = recs[k];
    }
    reload_scan_free(&t);
    return ok;
}

/* The hint for ca_store_load: whether tenants/|id|/ may differ from when the store in use was
 * loaded. */
static bool tenant_changed(void *ctx, const char *id)
{
    size_t at = reload_tenants_find(state.ten, id), b = reload_tenants_find(base_ten, id);
    if (at == 0 || b == 0)
        return true;
    const struct trec *r = &state.recs[at - 1], *br = &base_recs[b - 1];
    return r->always || br->always || memcmp(&r->h, &br->h, sizeof(r->h)) != 0;
}

/* Remembers |state| as what the CA store in use was loaded after. */
static void set_base(void)
{
    reload_tenants_unref(base_ten);
    free(base_recs);
    base_ten = NULL;
    base_recs = NULL;
    have_base = have_state;
    if (!have_state)
        return;
    base_ten = state.ten;
    base_ten->refs++;
    base_recs = xmalloc((base_ten->num + 1) * sizeof(*base_recs));
    if (base_ten->num > 0)
        memcpy(base_recs, state.recs, base_ten->num * sizeof(*base_recs));
    base_top = state.top;
}

/* A full scan becomes |state|. */
static void scan_full(const struct config *cfg)
{
    reload_scan_free(&state);
    reload_scan_full(&state, cfg);
    have_state = !state.too_many;
    if (started) {
        rearm(&state);
        if (state.missing && !retrying)
            uv_timer_start(&retry_timer, retry_cb, RETRY_MS, RETRY_MS);
        else if (!state.missing && retrying)
            uv_timer_stop(&retry_timer);
        retrying = state.missing;
    }
}

static void check(const char *source)
{
    char err[1024];
    reload_run(source, false, err, sizeof(err));
}

static void debounce_cb(uv_timer_t *t)
{
    debounce_pending = false;
    check("watch");
}

static void poll_cb(uv_timer_t *t)
{
    reload_fcache_poll(uv_now(rl_loop));
    check("poll");
    reload_fcache_poll_done();
}

static void retry_cb(uv_timer_t *t)
{
    dirty_overflow = true; /* a root was missing: look at everything */
    check("watch");
}

/* Debounce: wait until the events have been quiet for reload.debounce, but never longer than
 * MAX(4 * debounce, 1 s) after the first, so that a steady stream still reloads. */
static void schedule(void)
{
    if (!started)
        return;
    uint64_t now = uv_now(rl_loop), debounce = rl_srv->cfg->reload_debounce_ms;
    uint64_t max_wait = MAX(4 * debounce, (uint64_t)MIN_MAX_WAIT_MS);
    if (!debounce_pending) {
        debounce_pending = true;
        first_event_ms = now;
    }
    uint64_t due = MIN(now + debounce, first_event_ms + max_wait);
    uv_timer_start(&debounce_timer, debounce_cb, due > now ? due - now : 0, 0);
}

/* --- the reload itself ------------------------------------------------------------------- */

static void wall_clock(char *out, size_t len, int64_t *out_unix)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    *out_unix = (int64_t)tv.tv_sec;
}

/* record keeps the result for /status and the metrics and logs it; |changes| (NULL on failure)
 * holds the members tls_report_changes wrote. */
static void record(const char *source, int r, const char *err, uint64_t duration_ms,
                   const struct buf *changes)
{
    last.valid = true;
    wall_clock(last.time, sizeof(last.time), &last.unix_time);
    last.source = source;
    last.ok = r == 0;
    snprintf(last.error, sizeof(last.error), "%s", r == 0 ? "" : err);
    last.generation = generation;
    last.duration_ms = duration_ms;
    metrics_reload(source, r == 0);
    enum log_level level = r == 0 ? LOG_LEVEL_INFO : LOG_LEVEL_ERROR;
    if (!log_enabled(level))
        return;
    struct buf b = {0};
    log_begin(&b, level, r == 0 ? "reloaded" : "reload_failed");
    log_str(&b, "source", source);
    log_str(&b, "result", r == 0 ? "success" : "failure");
    log_num(&b, "generation", (long long)generation);
    log_num(&b, "duration_ms", (long long)duration_ms);
    log_str(&b, "error", r == 0 ? NULL : err);
    if (changes != NULL)
        buf_append(&b, buf_data(changes), buf_used(changes));
    if (r != 0)
        log_str(&b, "message", "keeping the current credentials and CA store");
    log_end(&b);
}

/* report repeats what is wrong with the generation now in use at every start and reload, so
 * a problem nobody fixed is never only in /status (CONTRACT 2). */
static void report(const struct tls_gen *gen)
{
    tls_report_log_store_errors(gen);
    tls_report_log_expiry(gen, rl_srv->cfg->expiry_warning_ms);
}

int reload_run(const char *source, bool force, char *err, size_t err_len)
{
    if (rl_srv == NULL) {
        snprintf(err, err_len, "reload is not initialised");
        return -EINVAL;
    }
    uint64_t t0 = uv_hrtime();
    /* Events in tenant directories only: rescan those; anything else (the periodic rescan,
     * SIGHUP, POST /reload, other directories): everything. */
    bool watch = strcmp(source, "watch") == 0;
    if (force || !watch || !scan_incremental(rl_srv->cfg))
        scan_full(rl_srv->cfg);
    dirty_clear();
    struct hash h = reload_scan_total(&state);
    bool too_many = state.too_many;
    if (too_many) {
        /* The hash covers only part of the store: it cannot vouch for "unchanged". */
        reload_hash_num(&h, uv_hrtime());
    }
    if (!force && have_hash && h.a == last_hash.a && h.b == last_hash.b) {
        err[0] = '\0';
        return 1;
    }
    /* The hash is taken before the files are read, so a change racing with the load makes the
     * next check differ and load again. */
    last_hash = h;
    have_hash = true;
    struct tls_gen *gen = NULL;
    /* Not forced: tenants whose directories hash as when the store in use was loaded keep
     * their bundles without being read again. */
    struct ca_store_changes changes = {.tenant_changed = tenant_changed};
    if (!force && have_base && have_state) {
        changes.common = memcmp(&state.top, &base_top, sizeof(base_top)) != 0;
        ca_store_hint_next_load(&changes);
    }
    int r = tls_gen_new(&gen, rl_srv->cfg, atomic_load(&rl_srv->gen), err, err_len);
    ca_store_hint_next_load(NULL);
    struct buf diff = {0};
    if (r == 0) {
        set_base();
        uv_mutex_lock(&rl_srv->gen_lock);
        struct tls_gen *old = atomic_exchange(&rl_srv->gen, gen);
        uv_mutex_unlock(&rl_srv->gen_lock);
        tls_report_changes(old, gen, &diff);
        tls_gen_unref(old); /* open connections keep their own references */
        generation++;
        /* Workers re-check their tunnels; not once stopping began (they may be gone). */
        if (started)
            listener_gen_changed(rl_srv);
    }
    record(source, r, err, (uv_hrtime() - t0) / 1000000, r == 0 ? &diff : NULL);
    buf_free(&diff);
    if (r == 0)
        report(gen);
    return r;
}

int reload_init(struct server *srv, char *err, size_t err_len)
{
    rl_srv = srv;
    memset(&last, 0, sizeof(last));
    scan_full(srv->cfg);
    last_hash = reload_scan_total(&state);
    if (state.too_many)
        reload_hash_num(&last_hash, uv_hrtime());
    have_hash = true;
    struct tls_gen *gen = NULL;
    int r = tls_gen_new(&gen, srv->cfg, NULL, err, err_len);
    if (r < 0)
        return r;
    set_base();
    atomic_store(&srv->gen, gen);
    generation = 1;
    report(gen);
    return 0;
}

int reload_start(uv_loop_t *loop)
{
    if (rl_srv == NULL)
        return -EINVAL;
    rl_loop = loop;
    reload_fcache_read_all(uv_now(loop)); /* reload_init read every file */
    uv_timer_init(loop, &debounce_timer);
    uv_timer_init(loop, &poll_timer);
    uv_timer_init(loop, &retry_timer);
    started = true;
    /* The first check arms the watches and catches what changed since reload_init. */
    check("watch");
    uint64_t every = rl_srv->cfg->reload_poll_interval_ms;
    if (every > 0)
        uv_timer_start(&poll_timer, poll_cb, every, every);
    return 0;
}

void reload_stop(void)
{
    if (!started)
        return;
    started = false;
    uv_close((uv_handle_t *)&debounce_timer, NULL);
    uv_close((uv_handle_t *)&poll_timer, NULL);
    uv_close((uv_handle_t *)&retry_timer, NULL);
    while (watches != NULL)
        watch_unlink(&watches);
    dirty_clear();
    reload_scan_free(&state);
    reload_fcache_free();
    have_state = false;
    reload_tenants_unref(base_ten);
    free(base_recs);
    base_ten = NULL;
    base_recs = NULL;
    have_base = false;
}

uint64_t reload_generation(void)
{
    return generation;
}

void reload_result_json(struct buf *out)
{
    if (!last.valid) {
        buf_appends(out, "null");
        return;
    }
    buf_appends(out, "{\"time\":");
    log_json_string(out, last.time);
    buf_appends(out, ",\"source\":");
    log_json_string(out, last.source);
    buf_appendf(out, ",\"result\":\"%s\",\"error\":", last.ok ? "success" : "failure");
    log_json_string(out, last.ok ? NULL : last.error);
    buf_appendf(out, ",\"generation\":%llu,\"duration_ms\":%llu}",
                (unsigned long long)last.generation, (unsigned long long)last.duration_ms);
}

void reload_metrics(struct buf *out)
{
    buf_appendf(out,
                "# HELP certgate_generation Number of the generation in use (1 at start).\n"
                "# TYPE certgate_generation gauge\n"
                "certgate_generation %llu\n"
                "# HELP certgate_last_reload_success 1 when the last reload succeeded (or none "
                "ran yet), 0 when it failed and an older state is in use.\n"
                "# TYPE certgate_last_reload_success gauge\n"
                "certgate_last_reload_success %d\n"
                "# HELP certgate_last_reload_timestamp_seconds Unix time of the last reload, 0 "
                "when none ran.\n"
                "# TYPE certgate_last_reload_timestamp_seconds gauge\n"
                "certgate_last_reload_timestamp_seconds %lld\n",
                (unsigned long long)generation, !last.valid || last.ok ? 1 : 0,
                (long long)(last.valid ? last.unix_time : 0));
}

size_t reload_num_watches(void)
{
    return num_watches;
}

void reload_watches_json(struct buf *out)
{
    buf_append(out, "[", 1);
    for (struct watch *w = watches; w != NULL; w = w->next) {
        if (w != watches)
            buf_append(out, ",", 1);
        log_json_string(out, w->path);
    }
    buf_append(out, "]", 1);
}
