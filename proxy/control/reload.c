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
#include "core/base.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "server/listener.h"
#include "tls/tls.h"
#include "tls/tls_report.h"

#define MAX_DEPTH 8             /* directory levels walked below ca_store.dir */
#define MAX_FILES 1000000       /* files hashed per check; beyond, every check reloads */
#define MAX_FILE_BYTES (64u << 20)
#define MAX_WATCHES 65536
#define MAX_LINKS 16            /* symlink hops followed from a credentials file */
#define RETRY_MS 250            /* re-arming a directory that vanished */
#define MIN_MAX_WAIT_MS 1000    /* a stream of events still reloads at least this often */
#define MAX_DIRTY 64            /* directories remembered from events; beyond, a full scan */

/* Who a watched directory belongs to, when a full scan found it: a tenant (index >= 0) or: */
#define OWNER_TOP (-1)    /* the CA store outside tenants/<id>/ */
#define OWNER_MIXED (-2)  /* found twice, for different owners */
#define OWNER_LINKED (-3) /* on the way to a symlinked file or root */
#define OWNER_CRED (-4)   /* the credentials, rescanned on every check */

/* A 128-bit content hash built from two independent 64-bit mixes. It only has to notice
 * changes made by whoever can write the watched trees, so it need not be cryptographic. */
struct hash {
    uint64_t a, b;
};

/* The directories below tenants/ that one full scan found, by name (their order in the scan). */
struct tenants {
    int refs;
    char **names;
    size_t num;
    size_t cap;
    size_t *index; /* open addressing over names: 1 + position, 0 when empty */
    size_t cap_index;
};

/* The content hash of one tenant directory's tree. */
struct trec {
    struct hash h;
    bool always; /* holds what the scan skips (hidden entries, too deep): never "unchanged" */
};

/* What one scan of both trees found: the content hashes and the directories to watch. A check
 * after events in tenant directories only rescans those and the credentials (an incremental
 * scan); the hash of the whole is then made of the parts again. */
struct scan {
    struct hash cred; /* the credentials */
    struct hash top;  /* the CA store outside tenants/<id>/ */
    struct hash *cur; /* where the walk hashes now */
    struct trec *cur_rec; /* the tenant being walked, or NULL */
    int cur_owner;
    struct tenants *ten;
    struct trec *recs; /* parallel to ten->names */
    size_t cap_recs;
    char **dirs; /* real paths, without duplicates */
    int *owner;  /* parallel to dirs: OWNER_* or a tenant index */
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

/* --- file cache --------------------------------------------------------------------------- */

/* The content hash of every file by path, so that a rescan need not read a file whose inode,
 * size, mtime and ctime did not change (git's index does the same). ctime cannot be set by
 * a user, so a rewrite that restores the old mtime (cp -p, touch -r) still shows. A file
 * changed within FCACHE_RACY_S of being hashed may change again within the same timestamp
 * tick: it is read again until it is older. A poll at least FCACHE_FULL_MS after the last one
 * that read everything reads every file anyway, for file systems whose timestamps cannot be
 * trusted (coarse or skewed NFS clocks). */
#define FCACHE_RACY_S 2
#define FCACHE_FULL_MS 60000

struct fcache_entry {
    uint64_t key; /* hash of the path, never 0; 0 marks an empty slot */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    struct hash content;
    uint32_t seen;   /* the full scan that last looked at it */
    bool trusted;    /* hashed when its ctime was already FCACHE_RACY_S old */
};

static struct fcache_entry *fcache;
static size_t fcache_cap, fcache_num;
static uint32_t fcache_scan; /* number of full scans so far */
static bool fcache_bypass;   /* this scan reads every file */
static uint64_t fcache_full_ms; /* when a poll last read every file */

static uint64_t fcache_key(const char *path)
{
    struct hash h;
    hash_init(&h);
    hash_str(&h, path);
    uint64_t k = h.a ^ (h.b * 0x9e3779b97f4a7c15ULL);
    return k ? k : 1;
}

static struct fcache_entry *fcache_slot(struct fcache_entry *t, size_t cap, uint64_t key)
{
    size_t i = (size_t)key & (cap - 1);
    while (t[i].key != 0 && t[i].key != key)
        i = (i + 1) & (cap - 1);
    return &t[i];
}

/* Rebuilds the table with room for |want| entries, keeping those |keep| accepts. */
static void fcache_rebuild(size_t want, bool only_seen)
{
    size_t cap = 1024;
    while (cap < 2 * want + 2)
        cap *= 2;
    struct fcache_entry *t = xcalloc(cap, sizeof(*t));
    size_t num = 0;
    for (size_t i = 0; i < fcache_cap; i++) {
        if (fcache[i].key == 0 || (only_seen && fcache[i].seen != fcache_scan))
            continue;
        *fcache_slot(t, cap, fcache[i].key) = fcache[i];
        num++;
    }
    free(fcache);
    fcache = t;
    fcache_cap = cap;
    fcache_num = num;
}

static struct fcache_entry *fcache_find(uint64_t key, bool create)
{
    if (create && 2 * (fcache_num + 1) >= fcache_cap)
        fcache_rebuild(fcache_num + 1, false);
    if (fcache_cap == 0)
        return NULL;
    struct fcache_entry *e = fcache_slot(fcache, fcache_cap, key);
    if (e->key == 0 && !create)
        return NULL;
    if (e->key == 0) {
        e->key = key;
        fcache_num++;
    }
    return e;
}

/* After a full scan: forget the files it did not see. */
static void fcache_sweep(void)
{
    size_t seen = 0;
    for (size_t i = 0; i < fcache_cap; i++)
        seen += fcache[i].key != 0 && fcache[i].seen == fcache_scan;
    if (seen < fcache_num)
        fcache_rebuild(seen, true);
}

static void fcache_free(void)
{
    free(fcache);
    fcache = NULL;
    fcache_cap = fcache_num = 0;
}

static bool same_time(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static bool fcache_matches(const struct fcache_entry *e, const struct stat *st)
{
    return e->trusted && e->dev == st->st_dev && e->ino == st->st_ino &&
           e->size == st->st_size && same_time(&e->mtime, &st->st_mtim) &&
           same_time(&e->ctime, &st->st_ctim);
}

static void fcache_store(uint64_t key, const struct stat *st, const struct hash *content)
{
    struct fcache_entry *e = fcache_find(key, true);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    e->dev = st->st_dev;
    e->ino = st->st_ino;
    e->size = st->st_size;
    e->mtime = st->st_mtim;
    e->ctime = st->st_ctim;
    e->content = *content;
    e->seen = fcache_scan;
    e->trusted = st->st_ctim.tv_sec + FCACHE_RACY_S < now.tv_sec;
}

/* Hashes |name| and the content of |path| (symlinks followed). A file that cannot be read
 * hashes as its errno, so that fixing its permissions counts as a change. */
static void hash_file(struct scan *s, const char *name, const char *path)
{
    hash_str(s->cur, name);
    s->num_files++;
    uint64_t key = fcache_key(path);
    struct stat st;
    if (!fcache_bypass && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        struct fcache_entry *e = fcache_find(key, false);
        if (e != NULL && fcache_matches(e, &st)) {
            e->seen = fcache_scan;
            hash_bytes(s->cur, &e->content, sizeof(e->content));
            return;
        }
    }
    /* O_NONBLOCK: a FIFO dropped into the tree must not block the main loop; O_NOCTTY: a
     * terminal device must not become ours. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        hash_str(s->cur, "\001error");
        hash_num(s->cur, (uint64_t)errno);
        return;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        hash_str(s->cur, "\001not a regular file");
        close(fd);
        return;
    }
    struct hash content;
    hash_init(&content);
    char chunk[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            hash_str(s->cur, "\001read error");
            hash_num(s->cur, (uint64_t)errno);
            close(fd);
            return;
        }
        if (n == 0)
            break;
        hash_bytes(&content, chunk, (size_t)n);
        total += (size_t)n;
        if (total > MAX_FILE_BYTES)
            break;
    }
    hash_num(&content, total);
    close(fd);
    hash_bytes(s->cur, &content, sizeof(content));
    fcache_store(key, &st, &content);
}

/* --- what to watch ----------------------------------------------------------------------- */

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

static size_t index_find(const size_t *index, size_t cap, char *const *keys, const char *key)
{
    if (index == NULL)
        return 0;
    return *index_slot((size_t *)index, cap, keys, key);
}

/* Adds the directory |path| (by its real path) to the watch list, owned by s->cur_owner; false
 * when it is absent. */
/* Adds the directory at |path| to what is watched. |real| is its real path when the caller
 * knows it (an entry that scandir says is a directory, not a symlink, in a directory whose real
 * path is known; takes ownership), or NULL to resolve it here. Returns false when |path| is not
 * a directory. |out_real|, if not NULL, gets the real path as kept in |s| (valid until
 * scan_free), or NULL when it was not kept. */
static bool add_dir_at(struct scan *s, const char *path, char *real, const char **out_real)
{
    if (out_real != NULL)
        *out_real = NULL;
    if (real == NULL) {
        real = realpath(path, NULL);
        struct stat st;
        if (real == NULL || stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
            free(real);
            return false;
        }
    }
    size_t at = index_find(s->index, s->cap_index, s->dirs, real);
    if (at != 0) {
        if (s->owner[at - 1] != s->cur_owner)
            s->owner[at - 1] = OWNER_MIXED;
        free(real);
        if (out_real != NULL)
            *out_real = s->dirs[at - 1];
        return true;
    }
    if (s->num_dirs >= MAX_WATCHES) {
        free(real);
        return true;
    }
    if (s->num_dirs == s->cap_dirs) {
        s->cap_dirs = s->cap_dirs ? s->cap_dirs * 2 : 16;
        s->dirs = xrealloc(s->dirs, s->cap_dirs * sizeof(*s->dirs));
        s->owner = xrealloc(s->owner, s->cap_dirs * sizeof(*s->owner));
    }
    s->owner[s->num_dirs] = s->cur_owner;
    s->dirs[s->num_dirs++] = real;
    if (2 * s->num_dirs + 2 > s->cap_index) {
        free(s->index);
        s->index = index_build(s->dirs, s->num_dirs, &s->cap_index);
    } else {
        *index_slot(s->index, s->cap_index, s->dirs, real) = s->num_dirs;
    }
    if (out_real != NULL)
        *out_real = real;
    return true;
}

static bool add_dir(struct scan *s, const char *path)
{
    return add_dir_at(s, path, NULL, NULL);
}

/* Watches every directory on the way from |path| to the file it finally names: certbot's
 * live/NAME/fullchain.pem -> ../../archive/NAME/fullchain3.pem and Kubernetes' tls.crt ->
 * ..data/tls.crt -> ..2026_11_23_.../tls.crt each change in a directory of their own. */
static void follow_links(struct scan *s, const char *path)
{
    /* A change in these directories changes a file of another one: never incremental. */
    int saved_owner = s->cur_owner;
    if (s->cur_owner != OWNER_CRED)
        s->cur_owner = OWNER_LINKED;
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
        char *next = base_join_path(dir, target);
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
    s->cur_owner = saved_owner;
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
    hash_str(s->cur, "\002credentials");
    follow_root(s, cfg->credentials_dir);
    if (!add_dir(s, cfg->credentials_dir))
        s->missing = true;
    const char *files[] = {cfg->credentials_cert, cfg->credentials_key, cfg->credentials_pkcs12,
                           cfg->credentials_pkcs12_password_file};
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        if (files[i] == NULL)
            continue;
        char *path = base_join_path(cfg->credentials_dir, files[i]);
        hash_file(s, files[i], path);
        follow_links(s, path);
        free(path);
    }
}

static void walk(struct scan *s, const char *dir, const char *real, const char *rel, int depth);

static struct tenants *tenants_new(void)
{
    struct tenants *t = xcalloc(1, sizeof(*t));
    t->refs = 1;
    return t;
}

static void tenants_unref(struct tenants *t)
{
    if (t == NULL || --t->refs > 0)
        return;
    for (size_t i = 0; i < t->num; i++)
        free(t->names[i]);
    free(t->names);
    free(t->index);
    free(t);
}

/* The position + 1 of tenant directory |name| in |t|, 0 when absent. */
static size_t tenants_find(const struct tenants *t, const char *name)
{
    return t == NULL ? 0 : index_find(t->index, t->cap_index, t->names, name);
}

/* Walks tenants/|name| (at |path|) into a hash of its own, a new entry of s->ten. |real| is as
 * for add_dir_at. */
static void walk_tenant(struct scan *s, const char *path, char *real, const char *rel,
                        const char *name)
{
    struct tenants *t = s->ten;
    if (t->num == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->names = xrealloc(t->names, t->cap * sizeof(*t->names));
    }
    if (t->num == s->cap_recs) {
        s->cap_recs = s->cap_recs ? 2 * s->cap_recs : 64;
        s->recs = xrealloc(s->recs, s->cap_recs * sizeof(*s->recs));
    }
    size_t k = t->num++;
    t->names[k] = xstrdup(name);
    if (2 * t->num + 2 > t->cap_index) {
        free(t->index);
        t->index = index_build(t->names, t->num, &t->cap_index);
    } else {
        *index_slot(t->index, t->cap_index, t->names, name) = t->num;
    }
    struct trec *r = &s->recs[k];
    memset(r, 0, sizeof(*r));
    hash_init(&r->h);
    struct hash *saved = s->cur;
    s->cur = &r->h;
    s->cur_rec = r;
    s->cur_owner = (int)k;
    const char *kept = NULL;
    add_dir_at(s, path, real, &kept);
    walk(s, path, kept, rel, 2);
    s->cur = saved;
    s->cur_rec = NULL;
    s->cur_owner = OWNER_TOP;
}

/* Hidden entries are skipped: editors' swap files, .git, and Kubernetes' ..data and timestamp
 * directories, whose files are reached through the visible symlinks anyway. |real| is |dir|'s
 * real path, or NULL when not known: then every subdirectory's is resolved. scandir's d_type
 * spares a stat and an lstat per file, and a realpath per directory, in the common case of a
 * tree without symlinks (20,000 files in 10,000 tenant directories). */
static void walk(struct scan *s, const char *dir, const char *real, const char *rel, int depth)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0) {
        hash_str(s->cur, rel);
        hash_str(s->cur, "\001unreadable directory");
        return;
    }
    bool tenants_dir = depth == 1 && strcmp(rel, "tenants") == 0;
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (name[0] == '.') {
            /* A hidden file may be listed in index.yml, and its changes are not hashed. */
            if (s->cur_rec != NULL && strcmp(name, ".") != 0 && strcmp(name, "..") != 0)
                s->cur_rec->always = true;
            continue;
        }
        if (s->num_files >= MAX_FILES) {
            s->too_many = true;
            break;
        }
        char *path = base_join_path(dir, name);
        char *relpath = rel[0] ? base_join_path(rel, name) : xstrdup(name);
        unsigned char type = names[i]->d_type;
        struct stat st, lst;
        if (type == DT_REG) {
            hash_file(s, relpath, path); /* not a symlink: nothing to follow */
        } else if (type != DT_DIR && stat(path, &st) != 0) {
            hash_str(s->cur, relpath);
            hash_str(s->cur, "\001dangling");
        } else if (type == DT_DIR || S_ISDIR(st.st_mode)) {
            hash_str(s->cur, relpath);
            hash_str(s->cur, "\001dir");
            char *child = type == DT_DIR && real != NULL ? base_join_path(real, name) : NULL;
            const char *kept = NULL;
            if (depth < MAX_DEPTH && tenants_dir) {
                walk_tenant(s, path, child, relpath, name);
            } else if (depth < MAX_DEPTH) {
                add_dir_at(s, path, child, &kept);
                walk(s, path, kept, relpath, depth + 1);
            } else {
                free(child);
                if (s->cur_rec != NULL)
                    s->cur_rec->always = true;
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
    hash_str(s->cur, "\002ca_store");
    follow_root(s, cfg->ca_store_dir);
    const char *real = NULL;
    if (!add_dir_at(s, cfg->ca_store_dir, NULL, &real)) {
        s->missing = true;
        hash_str(s->cur, "\001missing");
        return;
    }
    walk(s, cfg->ca_store_dir, real, "", 0);
}

static void scan_all(struct scan *s, const struct config *cfg)
{
    hash_init(&s->cred);
    hash_init(&s->top);
    s->ten = tenants_new();
    s->cur = &s->cred;
    s->cur_owner = OWNER_CRED;
    scan_credentials(s, cfg);
    s->cur = &s->top;
    s->cur_owner = OWNER_TOP;
    scan_ca_store(s, cfg);
}

/* The hash of everything |s| covers. */
static struct hash scan_total(const struct scan *s)
{
    struct hash h;
    hash_init(&h);
    hash_bytes(&h, &s->cred, sizeof(s->cred));
    hash_bytes(&h, &s->top, sizeof(s->top));
    for (size_t i = 0; s->ten != NULL && i < s->ten->num; i++) {
        hash_str(&h, s->ten->names[i]);
        hash_bytes(&h, &s->recs[i].h, sizeof(s->recs[i].h));
    }
    return h;
}

static void scan_free(struct scan *s)
{
    for (size_t i = 0; i < s->num_dirs; i++)
        free(s->dirs[i]);
    free(s->dirs);
    free(s->owner);
    free(s->index);
    free(s->recs);
    tenants_unref(s->ten);
    memset(s, 0, sizeof(*s));
}

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
        size_t at = index_find(state.index, state.cap_index, state.dirs, dirty[i]);
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
    hash_init(&t.cred);
    t.cur = &t.cred;
    t.cur_owner = OWNER_CRED;
    scan_credentials(&t, cfg);
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
            hash_init(&recs[k].h);
            t.cur = &recs[k].h;
            t.cur_rec = &recs[k];
            t.cur_owner = (int)todo[k];
            const char *real = NULL;
            add_dir_at(&t, path, NULL, &real);
            walk(&t, path, real, rel, 2);
            t.cur_rec = NULL;
        }
        free(rel);
        free(path);
    }
    for (size_t i = 0; i < t.num_dirs && ok; i++) {
        size_t at = index_find(state.index, state.cap_index, state.dirs, t.dirs[i]);
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
    scan_free(&t);
    return ok;
}

/* The hint for ca_store_load: whether tenants/|id|/ may differ from when the store in use was
 * loaded. */
static bool tenant_changed(void *ctx, const char *id)
{
    size_t at = tenants_find(state.ten, id), b = tenants_find(base_ten, id);
    if (at == 0 || b == 0)
        return true;
    const struct trec *r = &state.recs[at - 1], *br = &base_recs[b - 1];
    return r->always || br->always || memcmp(&r->h, &br->h, sizeof(r->h)) != 0;
}

/* Remembers |state| as what the CA store in use was loaded after. */
static void set_base(void)
{
    tenants_unref(base_ten);
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
    scan_free(&state);
    fcache_scan++;
    scan_all(&state, cfg);
    if (!state.too_many)
        fcache_sweep();
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
    uint64_t now = uv_now(rl_loop);
    fcache_bypass = now - fcache_full_ms >= FCACHE_FULL_MS;
    if (fcache_bypass)
        fcache_full_ms = now;
    check("poll");
    fcache_bypass = false;
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
    struct hash h = scan_total(&state);
    bool too_many = state.too_many;
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
    last_hash = scan_total(&state);
    if (state.too_many)
        hash_num(&last_hash, uv_hrtime());
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
    fcache_full_ms = uv_now(loop); /* reload_init read every file */
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
    scan_free(&state);
    fcache_free();
    have_state = false;
    tenants_unref(base_ten);
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
