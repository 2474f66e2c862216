/* reload.c: watchers and the generation swap. Directories, never files, are watched (a file
 * replaced by rename or a Kubernetes ..data swap takes its inotify watch with it), re-armed on
 * every check, and their events debounced; a periodic rescan hashes every file's content as a
 * safety net. A new generation is built beside the current one and swapped in with one pointer. */
#include "reload.h"

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

#include "base.h"
#include "config.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "tls.h"

#define MAX_DEPTH 8             /* directory levels walked below ca_store.dir */
#define MAX_FILES 1000000       /* files hashed per check; beyond, every check reloads */
#define MAX_FILE_BYTES (64u << 20)
#define MAX_WATCHES 65536
#define MAX_LINKS 16            /* symlink hops followed from a credentials file */
#define RETRY_MS 250            /* re-arming a directory that vanished */
#define MIN_MAX_WAIT_MS 1000    /* a stream of events still reloads at least this often */

/* A 128-bit content hash built from two independent 64-bit mixes. It only has to notice
 * changes made by whoever can write the watched trees, so it need not be cryptographic. */
struct hash {
    uint64_t a, b;
};

/* What one scan of both trees found: the content hash and the directories to watch. */
struct scan {
    struct hash h;
    char **dirs; /* real paths, without duplicates */
    size_t num_dirs;
    size_t cap_dirs;
    size_t *index; /* open addressing over dirs: 1 + position, 0 when empty */
    size_t cap_index;
    size_t num_files;
    bool too_many; /* MAX_FILES reached: the hash cannot vouch for "unchanged" */
    bool missing; /* a root directory does not exist (retry arming on a timer) */
};

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
static uint64_t generation;
static struct last_reload last;

/* --- content hash ------------------------------------------------------------------------ */

static void hash_init(struct hash *h)
{
    h->a = 0xcbf29ce484222325ULL;
    h->b = 0x84222325cbf29ce4ULL;
}

static void hash_bytes(struct hash *h, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t a = h->a, b = h->b;
    for (size_t i = 0; i < len; i++) {
        a = (a ^ p[i]) * 0x100000001b3ULL;
        b = (b + p[i] + 1) * 0x9e3779b97f4a7c15ULL;
        b ^= b >> 29;
    }
    h->a = a;
    h->b = b;
}

static void hash_str(struct hash *h, const char *s)
{
    hash_bytes(h, s, strlen(s) + 1);
}

static void hash_num(struct hash *h, uint64_t v)
{
    hash_bytes(h, &v, sizeof(v));
}

/* Hashes |name| and the content of |path| (symlinks followed). A file that cannot be read
 * hashes as its errno, so that fixing its permissions counts as a change. */
static void hash_file(struct scan *s, const char *name, const char *path)
{
    hash_str(&s->h, name);
    s->num_files++;
    /* O_NONBLOCK: a FIFO dropped into the tree must not block the main loop. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        hash_str(&s->h, "\001error");
        hash_num(&s->h, (uint64_t)errno);
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        hash_str(&s->h, "\001not a regular file");
        close(fd);
        return;
    }
    char chunk[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            hash_str(&s->h, "\001read error");
            hash_num(&s->h, (uint64_t)errno);
            break;
        }
        if (n == 0)
            break;
        hash_bytes(&s->h, chunk, (size_t)n);
        total += (size_t)n;
        if (total > MAX_FILE_BYTES)
            break;
    }
    hash_num(&s->h, total);
    close(fd);
}

/* --- what to watch ----------------------------------------------------------------------- */

static char *join(const char *dir, const char *name)
{
    if (name[0] == '/' || dir == NULL)
        return xstrdup(name);
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static char *parent_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return xstrdup(".");
    if (slash == path)
        return xstrdup("/");
    return xstrndup(path, (size_t)(slash - path));
}

static size_t str_hash(const char *str)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)str; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    return (size_t)h;
}

/* The slot of |key| in an open-addressing index over |keys| (|cap| a power of two): holds
 * 1 + the key's position, or 0 where it would go. */
static size_t *index_slot(size_t *index, size_t cap, char *const *keys, const char *key)
{
    size_t i = str_hash(key) & (cap - 1);
    while (index[i] != 0 && strcmp(keys[index[i] - 1], key) != 0)
        i = (i + 1) & (cap - 1);
    return &index[i];
}

static size_t *index_build(char *const *keys, size_t num, size_t *out_cap)
{
    size_t cap = 16;
    while (cap < 2 * num + 2)
        cap *= 2;
    size_t *index = xcalloc(cap, sizeof(*index));
    for (size_t i = 0; i < num; i++)
        *index_slot(index, cap, keys, keys[i]) = i + 1;
    *out_cap = cap;
    return index;
}

/* Adds the directory |path| (by its real path) to the watch list; false when it is absent. */
static bool add_dir(struct scan *s, const char *path)
{
    char *real = realpath(path, NULL);
    if (real == NULL)
        return false;
    struct stat st;
    if (stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
        free(real);
        return false;
    }
    if (s->index != NULL && *index_slot(s->index, s->cap_index, s->dirs, real) != 0) {
        free(real);
        return true;
    }
    if (s->num_dirs >= MAX_WATCHES) {
        free(real);
        return true;
    }
    if (s->num_dirs == s->cap_dirs) {
        s->cap_dirs = s->cap_dirs ? s->cap_dirs * 2 : 16;
        s->dirs = xrealloc(s->dirs, s->cap_dirs * sizeof(*s->dirs));
    }
    s->dirs[s->num_dirs++] = real;
    if (2 * s->num_dirs + 2 > s->cap_index) {
        free(s->index);
        s->index = index_build(s->dirs, s->num_dirs, &s->cap_index);
    } else {
        *index_slot(s->index, s->cap_index, s->dirs, real) = s->num_dirs;
    }
    return true;
}

/* Watches every directory on the way from |path| to the file it finally names: certbot's
 * live/NAME/fullchain.pem -> ../../archive/NAME/fullchain3.pem and Kubernetes' tls.crt ->
 * ..data/tls.crt -> ..2026_11_23_.../tls.crt each change in a directory of their own. */
static void follow_links(struct scan *s, const char *path)
{
    char *cur = xstrdup(path);
    for (int hop = 0; hop < MAX_LINKS; hop++) {
        char *dir = parent_of(cur);
        add_dir(s, dir);
        struct stat st;
        char target[PATH_MAX];
        ssize_t n;
        if (lstat(cur, &st) != 0 || !S_ISLNK(st.st_mode) ||
            (n = readlink(cur, target, sizeof(target) - 1)) <= 0) {
            free(dir);
            break;
        }
        target[n] = '\0';
        char *next = join(dir, target);
        free(dir);
        free(cur);
        cur = next;
    }
    free(cur);
    char *real = realpath(path, NULL);
    if (real != NULL) {
        char *dir = parent_of(real);
        add_dir(s, dir);
        free(dir);
        free(real);
    }
}

/* A root that is itself a symlink (dir -> versions/v2, swapped by rename) changes in the
 * directory holding the link: watch that one too. */
static void follow_root(struct scan *s, const char *root)
{
    struct stat st;
    if (lstat(root, &st) == 0 && S_ISLNK(st.st_mode))
        follow_links(s, root);
}

static void scan_credentials(struct scan *s, const struct config *cfg)
{
    if (cfg->credentials_dir == NULL)
        return;
    hash_str(&s->h, "\002credentials");
    follow_root(s, cfg->credentials_dir);
    if (!add_dir(s, cfg->credentials_dir))
        s->missing = true;
    const char *files[] = {cfg->credentials_cert, cfg->credentials_key, cfg->credentials_pkcs12,
                           cfg->credentials_pkcs12_password_file};
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        if (files[i] == NULL)
            continue;
        char *path = join(cfg->credentials_dir, files[i]);
        hash_file(s, files[i], path);
        follow_links(s, path);
        free(path);
    }
}

/* Hidden entries are skipped: editors' swap files, .git, and Kubernetes' ..data and timestamp
 * directories, whose files are reached through the visible symlinks anyway. */
static void walk(struct scan *s, const char *dir, const char *rel, int depth)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0) {
        hash_str(&s->h, rel);
        hash_str(&s->h, "\001unreadable directory");
        return;
    }
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (name[0] == '.')
            continue;
        if (s->num_files >= MAX_FILES) {
            s->too_many = true;
            break;
        }
        char *path = join(dir, name);
        char *relpath = rel[0] ? join(rel, name) : xstrdup(name);
        struct stat st, lst;
        if (stat(path, &st) != 0) {
            hash_str(&s->h, relpath);
            hash_str(&s->h, "\001dangling");
        } else if (S_ISDIR(st.st_mode)) {
            hash_str(&s->h, relpath);
            hash_str(&s->h, "\001dir");
            if (depth < MAX_DEPTH) {
                add_dir(s, path);
                walk(s, path, relpath, depth + 1);
            }
        } else if (S_ISREG(st.st_mode)) {
            hash_file(s, relpath, path);
            if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode))
                follow_links(s, path);
        }
        free(path);
        free(relpath);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* The whole CA store tree is hashed, not only what index.yml lists: reload.c does not parse
 * YAML, and a superset can only cause a redundant rebuild, never a missed change. */
static void scan_ca_store(struct scan *s, const struct config *cfg)
{
    if (cfg->ca_store_dir == NULL)
        return;
    hash_str(&s->h, "\002ca_store");
    follow_root(s, cfg->ca_store_dir);
    if (!add_dir(s, cfg->ca_store_dir)) {
        s->missing = true;
        hash_str(&s->h, "\001missing");
        return;
    }
    walk(s, cfg->ca_store_dir, "", 0);
}

static void scan_all(struct scan *s, const struct config *cfg)
{
    hash_init(&s->h);
    scan_credentials(s, cfg);
    scan_ca_store(s, cfg);
}

static void scan_free(struct scan *s)
{
    for (size_t i = 0; i < s->num_dirs; i++)
        free(s->dirs[i]);
    free(s->dirs);
    free(s->index);
}

/* --- watchers ---------------------------------------------------------------------------- */

static void schedule(void);

static void watch_close_cb(uv_handle_t *h)
{
    struct watch *w = h->data;
    free(w->path);
    free(w);
}

static void event_cb(uv_fs_event_t *ev, const char *filename, int events, int status)
{
    /* Any event, even an error or the directory's own deletion, means "look again": the check
     * re-arms whatever was replaced. */
    schedule();
}

/* Brings the watches in line with |s|: a directory that is gone or was replaced (same path,
 * another inode) loses its watch and the new one gets one. */
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
    size_t *index = index_build(paths, n, &cap);
    for (size_t i = 0; i < s->num_dirs; i++) {
        struct stat st;
        if (stat(s->dirs[i], &st) != 0)
            continue;
        size_t at = *index_slot(index, cap, paths, s->dirs[i]);
        struct watch *w = at ? ws[at - 1] : NULL;
        if (w != NULL && w->dev == st.st_dev && w->ino == st.st_ino) {
            w->keep = true;
            continue;
        }
        if (w != NULL)
            w->keep = false; /* replaced: closed below, a new watch follows */
        struct watch *nw = xcalloc(1, sizeof(*nw));
        nw->path = xstrdup(s->dirs[i]);
        nw->dev = st.st_dev;
        nw->ino = st.st_ino;
        nw->keep = true;
        uv_fs_event_init(rl_loop, &nw->ev);
        nw->ev.data = nw;
        int r = uv_fs_event_start(&nw->ev, event_cb, nw->path, 0);
        if (r < 0) {
            if (!watch_full_logged)
                log_msg(LOG_LEVEL_WARN, "watch_failed",
                        "cannot watch %s: %s; the periodic rescan still picks changes up",
                        nw->path, uv_strerror(r));
            watch_full_logged = true;
            uv_close((uv_handle_t *)&nw->ev, watch_close_cb);
            continue;
        }
        /* Insert in front: the loop below sees it as kept. */
        nw->next = watches;
        watches = nw;
        num_watches++;
    }
    free(index);
    free(paths);
    free(ws);
    struct watch **pp = &watches;
    while (*pp != NULL) {
        struct watch *w = *pp;
        if (w->keep) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        num_watches--;
        uv_fs_event_stop(&w->ev);
        uv_close((uv_handle_t *)&w->ev, watch_close_cb);
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
    check("poll");
}

static void retry_cb(uv_timer_t *t)
{
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

static void record(const char *source, int r, const char *err, uint64_t duration_ms)
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
    if (r != 0)
        log_str(&b, "message", "keeping the current credentials and CA store");
    log_end(&b);
}

int reload_run(const char *source, bool force, char *err, size_t err_len)
{
    if (rl_srv == NULL) {
        snprintf(err, err_len, "reload is not initialised");
        return -EINVAL;
    }
    uint64_t t0 = uv_hrtime();
    struct scan s = {0};
    scan_all(&s, rl_srv->cfg);
    if (started) {
        rearm(&s);
        if (s.missing && !retrying)
            uv_timer_start(&retry_timer, retry_cb, RETRY_MS, RETRY_MS);
        else if (!s.missing && retrying)
            uv_timer_stop(&retry_timer);
        retrying = s.missing;
    }
    struct hash h = s.h;
    bool too_many = s.too_many;
    scan_free(&s);
    if (too_many) {
        /* The hash covers only part of the store: it cannot vouch for "unchanged". */
        hash_num(&h, uv_hrtime());
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
    int r = tls_gen_new(&gen, rl_srv->cfg, atomic_load(&rl_srv->gen), err, err_len);
    if (r == 0) {
        uv_mutex_lock(&rl_srv->gen_lock);
        struct tls_gen *old = atomic_exchange(&rl_srv->gen, gen);
        uv_mutex_unlock(&rl_srv->gen_lock);
        tls_gen_unref(old); /* open connections keep their own references */
        generation++;
        /* Workers re-check their tunnels; not once stopping began (they may be gone). */
        if (started)
            listener_gen_changed(rl_srv);
    }
    record(source, r, err, (uv_hrtime() - t0) / 1000000);
    return r;
}

int reload_init(struct server *srv, char *err, size_t err_len)
{
    rl_srv = srv;
    memset(&last, 0, sizeof(last));
    struct scan s = {0};
    scan_all(&s, srv->cfg);
    last_hash = s.h;
    have_hash = true;
    scan_free(&s);
    struct tls_gen *gen = NULL;
    int r = tls_gen_new(&gen, srv->cfg, NULL, err, err_len);
    if (r < 0)
        return r;
    atomic_store(&srv->gen, gen);
    generation = 1;
    return 0;
}

int reload_start(uv_loop_t *loop)
{
    if (rl_srv == NULL)
        return -EINVAL;
    rl_loop = loop;
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
    while (watches != NULL) {
        struct watch *w = watches;
        watches = w->next;
        uv_fs_event_stop(&w->ev);
        uv_close((uv_handle_t *)&w->ev, watch_close_cb);
    }
    num_watches = 0;
}

uint64_t reload_generation(void)
{
    return generation;
}

static void json_string(struct buf *out, const char *s)
{
    /* log_str writes ,"k":"v" with JSON escaping; keep only the value. */
    struct buf tmp = {0};
    log_str(&tmp, "k", s);
    buf_append(out, buf_data(&tmp) + 5, buf_used(&tmp) - 5);
    buf_free(&tmp);
}

void reload_result_json(struct buf *out)
{
    if (!last.valid) {
        buf_appends(out, "null");
        return;
    }
    buf_appends(out, "{\"time\":");
    json_string(out, last.time);
    buf_appends(out, ",\"source\":");
    json_string(out, last.source);
    buf_appendf(out, ",\"result\":\"%s\",\"error\":", last.ok ? "success" : "failure");
    json_string(out, last.ok ? NULL : last.error);
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
        json_string(out, w->path);
    }
    buf_append(out, "]", 1);
}
