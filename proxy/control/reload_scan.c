/* reload_scan.c: what a reload check looks at. Both trees (the credentials, following
 * symlinks, and the CA store, tenant by tenant) are walked into a struct scan: a content hash
 * per part and the directories to watch. A cache keyed by path skips reading files whose
 * inode, size and times did not change. No watchers and no loop here: reload.c has them. */
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

#include "control/reload_internal.h"
#include "core/base.h"

/* --- content hash ------------------------------------------------------------------------ */

void reload_hash_init(struct hash *h)
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

void reload_hash_num(struct hash *h, uint64_t v)
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
    reload_hash_init(&h);
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

void reload_fcache_free(void)
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
        reload_hash_num(s->cur, (uint64_t)errno);
        return;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        hash_str(s->cur, "\001not a regular file");
        close(fd);
        return;
    }
    struct hash content;
    reload_hash_init(&content);
    char chunk[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            hash_str(s->cur, "\001read error");
            reload_hash_num(s->cur, (uint64_t)errno);
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
    reload_hash_num(&content, total);
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
size_t *reload_index_slot(size_t *index, size_t cap, char *const *keys, const char *key)
{
    size_t i = str_hash(key) & (cap - 1);
    while (index[i] != 0 && strcmp(keys[index[i] - 1], key) != 0)
        i = (i + 1) & (cap - 1);
    return &index[i];
}

size_t *reload_index_build(char *const *keys, size_t num, size_t *out_cap)
{
    size_t cap = 16;
    while (cap < 2 * num + 2)
        cap *= 2;
    size_t *index = xcalloc(cap, sizeof(*index));
    for (size_t i = 0; i < num; i++)
        *reload_index_slot(index, cap, keys, keys[i]) = i + 1;
    *out_cap = cap;
    return index;
}

size_t reload_index_find(const size_t *index, size_t cap, char *const *keys, const char *key)
{
    if (index == NULL)
        return 0;
    return *reload_index_slot((size_t *)index, cap, keys, key);
}

/* Adds the directory |path| (by its real path) to the watch list, owned by s->cur_owner; false
 * when it is absent. */
/* Adds the directory at |path| to what is watched. |real| is its real path when the caller
 * knows it (an entry that scandir says is a directory, not a symlink, in a directory whose real
 * path is known; takes ownership), or NULL to resolve it here. Returns false when |path| is not
 * a directory. |out_real|, if not NULL, gets the real path as kept in |s| (valid until
 * scan_free), or NULL when it was not kept. */
bool reload_add_dir_at(struct scan *s, const char *path, char *real, const char **out_real)
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
    size_t at = reload_index_find(s->index, s->cap_index, s->dirs, real);
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
        s->index = reload_index_build(s->dirs, s->num_dirs, &s->cap_index);
    } else {
        *reload_index_slot(s->index, s->cap_index, s->dirs, real) = s->num_dirs;
    }
    if (out_real != NULL)
        *out_real = real;
    return true;
}

static bool add_dir(struct scan *s, const char *path)
{
    return reload_add_dir_at(s, path, NULL, NULL);
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

void reload_scan_credentials(struct scan *s, const struct config *cfg)
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


struct tenants *reload_tenants_new(void)
{
    struct tenants *t = xcalloc(1, sizeof(*t));
    t->refs = 1;
    return t;
}

void reload_tenants_unref(struct tenants *t)
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
size_t reload_tenants_find(const struct tenants *t, const char *name)
{
    return t == NULL ? 0 : reload_index_find(t->index, t->cap_index, t->names, name);
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
        t->index = reload_index_build(t->names, t->num, &t->cap_index);
    } else {
        *reload_index_slot(t->index, t->cap_index, t->names, name) = t->num;
    }
    struct trec *r = &s->recs[k];
    memset(r, 0, sizeof(*r));
    reload_hash_init(&r->h);
    struct hash *saved = s->cur;
    s->cur = &r->h;
    s->cur_rec = r;
    s->cur_owner = (int)k;
    const char *kept = NULL;
    reload_add_dir_at(s, path, real, &kept);
    reload_walk(s, path, kept, rel, 2);
    s->cur = saved;
    s->cur_rec = NULL;
    s->cur_owner = OWNER_TOP;
}

/* Hidden entries are skipped: editors' swap files, .git, and Kubernetes' ..data and timestamp
 * directories, whose files are reached through the visible symlinks anyway. |real| is |dir|'s
 * real path, or NULL when not known: then every subdirectory's is resolved. scandir's d_type
 * spares a stat and an lstat per file, and a realpath per directory, in the common case of a
 * tree without symlinks (20,000 files in 10,000 tenant directories). */
void reload_walk(struct scan *s, const char *dir, const char *real, const char *rel, int depth)
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
                reload_add_dir_at(s, path, child, &kept);
                reload_walk(s, path, kept, relpath, depth + 1);
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
    if (!reload_add_dir_at(s, cfg->ca_store_dir, NULL, &real)) {
        s->missing = true;
        hash_str(s->cur, "\001missing");
        return;
    }
    reload_walk(s, cfg->ca_store_dir, real, "", 0);
}

void reload_scan_all(struct scan *s, const struct config *cfg)
{
    reload_hash_init(&s->cred);
    reload_hash_init(&s->top);
    s->ten = reload_tenants_new();
    s->cur = &s->cred;
    s->cur_owner = OWNER_CRED;
    reload_scan_credentials(s, cfg);
    s->cur = &s->top;
    s->cur_owner = OWNER_TOP;
    scan_ca_store(s, cfg);
}

/* The hash of everything |s| covers. */
struct hash reload_scan_total(const struct scan *s)
{
    struct hash h;
    reload_hash_init(&h);
    hash_bytes(&h, &s->cred, sizeof(s->cred));
    hash_bytes(&h, &s->top, sizeof(s->top));
    for (size_t i = 0; s->ten != NULL && i < s->ten->num; i++) {
        hash_str(&h, s->ten->names[i]);
        hash_bytes(&h, &s->recs[i].h, sizeof(s->recs[i].h));
    }
    return h;
}

void reload_scan_free(struct scan *s)
{
    for (size_t i = 0; i < s->num_dirs; i++)
        free(s->dirs[i]);
    free(s->dirs);
    free(s->owner);
    free(s->index);
    free(s->recs);
    reload_tenants_unref(s->ten);
    memset(s, 0, sizeof(*s));
}

void reload_scan_full(struct scan *s, const struct config *cfg)
{
    fcache_scan++;
    reload_scan_all(s, cfg);
    if (!s->too_many)
        fcache_sweep();
}

void reload_fcache_poll(uint64_t now_ms)
{
    fcache_bypass = now_ms - fcache_full_ms >= FCACHE_FULL_MS;
    if (fcache_bypass)
        fcache_full_ms = now_ms;
}

void reload_fcache_poll_done(void)
{
    fcache_bypass = false;
}

void reload_fcache_read_all(uint64_t now_ms)
{
    fcache_full_ms = now_ms;
}
