/* allowlist.c: the allowed client certificate subjects: subject canonicalisation, the JSON
 * state file (read at start, rewritten atomically on every change) and a set every worker reads
 * under a mutex, with a version number so that connections re-check only after a change. */
#include "allowlist.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "base.h"
#include "log.h"

#define MAX_FILE_BYTES (16u << 20)
#define MAX_SUBJECT_BYTES 4096
#define MAX_PAIRS 64

/* One subject: as it was written, and its canonical form (the set's key). */
struct entry {
    char *subject;
    char *canon;
};

static uv_mutex_t al_lock;
static bool al_have_lock;
static struct entry *al_entries; /* in the order they were added */
static size_t al_num;
static char **al_sorted; /* canonical forms, sorted: binary search */
static char *al_path;
static _Atomic uint64_t al_version = 1;

/* --- canonical subjects ------------------------------------------------------------------ */

struct pair {
    char *attr;
    char *value;
    size_t value_len;
};

static const struct {
    const char *alias;
    const char *name;
} attr_aliases[] = {
    {"e", "emailaddress"},
    {"email", "emailaddress"},
    {"s", "st"},
    {"2.5.4.3", "cn"},
    {"2.5.4.5", "serialnumber"},
    {"2.5.4.6", "c"},
    {"2.5.4.7", "l"},
    {"2.5.4.8", "st"},
    {"2.5.4.9", "street"},
    {"2.5.4.10", "o"},
    {"2.5.4.11", "ou"},
    {"2.5.4.12", "title"},
    {"1.2.840.113549.1.9.1", "emailaddress"},
    {"0.9.2342.19200300.100.1.1", "uid"},
    {"0.9.2342.19200300.100.1.25", "dc"},
};

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

static void pairs_free(struct pair *p, size_t num)
{
    for (size_t i = 0; i < num; i++) {
        free(p[i].attr);
        free(p[i].value);
    }
}

/* Parses one "attr=value" from |*pp|, stopping at an unescaped ',', ';' or '+'. */
static int parse_pair(const char **pp, struct pair *out)
{
    const char *p = *pp;
    while (is_space(*p))
        p++;
    const char *a = p;
    while (isalnum((unsigned char)*p) || *p == '-' || *p == '.')
        p++;
    size_t alen = (size_t)(p - a);
    while (is_space(*p))
        p++;
    if (alen == 0 || *p != '=')
        return -EINVAL;
    p++;
    while (is_space(*p))
        p++;
    char *attr = xstrndup(a, alen);
    for (char *c = attr; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    for (size_t i = 0; i < ARRAY_SIZE(attr_aliases); i++) {
        if (strcmp(attr, attr_aliases[i].alias) == 0) {
            free(attr);
            attr = xstrdup(attr_aliases[i].name);
            break;
        }
    }
    char *value = xmalloc(strlen(p) + 1);
    size_t len = 0;
    size_t keep = 0; /* trailing spaces are trimmed unless escaped */
    if (*p == '"') {
        for (p++; *p != '"'; p++) {
            if (*p == '\0')
                goto bad;
            if (*p == '\\' && p[1] != '\0')
                p++;
            value[len++] = *p;
        }
        p++;
        while (is_space(*p))
            p++;
        keep = len;
    } else {
        for (; *p != '\0' && *p != ',' && *p != ';' && *p != '+'; p++) {
            if (*p == '\\') {
                int hi = base_hex_digit((unsigned char)p[1]);
                int lo = hi < 0 ? -1 : base_hex_digit((unsigned char)p[2]);
                if (hi >= 0 && lo >= 0) {
                    value[len++] = (char)(hi * 16 + lo);
                    p += 2;
                } else if (p[1] != '\0') {
                    value[len++] = *++p;
                } else {
                    goto bad;
                }
                keep = len;
                continue;
            }
            value[len++] = *p;
            if (!is_space(*p))
                keep = len;
        }
    }
    if (*p != '\0' && *p != ',' && *p != ';' && *p != '+')
        goto bad;
    value[keep] = '\0';
    out->attr = attr;
    out->value = value;
    out->value_len = keep;
    *pp = p;
    return 0;
bad:
    free(attr);
    free(value);
    return -EINVAL;
}

static int pair_cmp(const void *x, const void *y)
{
    const struct pair *a = x, *b = y;
    int c = strcmp(a->attr, b->attr);
    if (c != 0)
        return c;
    size_t n = MIN(a->value_len, b->value_len);
    c = memcmp(a->value, b->value, n);
    if (c != 0)
        return c;
    return a->value_len < b->value_len ? -1 : a->value_len > b->value_len;
}

int allowlist_canon(const char *subject, char **out)
{
    *out = NULL;
    if (subject == NULL || strlen(subject) > MAX_SUBJECT_BYTES)
        return -EINVAL;
    struct pair pairs[MAX_PAIRS];
    size_t num = 0;
    const char *p = subject;
    while (is_space(*p))
        p++;
    if (*p == '\0')
        return -EINVAL;
    for (;;) {
        if (num == MAX_PAIRS || parse_pair(&p, &pairs[num]) != 0) {
            pairs_free(pairs, num);
            return -EINVAL;
        }
        num++;
        if (*p == '\0')
            break;
        p++; /* ',', ';' or '+' */
    }
    qsort(pairs, num, sizeof(pairs[0]), pair_cmp);
    struct buf b = {0};
    for (size_t i = 0; i < num; i++) {
        if (i > 0 && pair_cmp(&pairs[i - 1], &pairs[i]) == 0)
            continue; /* the same pair twice says nothing more */
        if (buf_used(&b) > 0)
            buf_append(&b, ",", 1);
        buf_appends(&b, pairs[i].attr);
        buf_append(&b, "=", 1);
        /* Escaped too: what parse_pair would read otherwise (';' ends a pair, a leading '"'
         * quotes, spaces at either end are trimmed), so that a canonical form canonicalises
         * to itself. */
        size_t vlen = pairs[i].value_len;
        for (size_t k = 0; k < vlen; k++) {
            unsigned char c = (unsigned char)pairs[i].value[k];
            if (c < 0x20 || c == 0x7f || c == ',' || c == '+' || c == '\\' || c == '=' ||
                c == ';' || c == '"' || (c == ' ' && (k == 0 || k + 1 == vlen)))
                buf_appendf(&b, "\\%02X", c);
            else
                buf_append(&b, &c, 1);
        }
    }
    pairs_free(pairs, num);
    *out = xstrndup(buf_data(&b), buf_used(&b));
    buf_free(&b);
    return 0;
}

/* --- the set --------------------------------------------------------------------------- */

static int str_cmp(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Rebuilds the sorted index; called with the lock held. */
static void reindex(void)
{
    free(al_sorted);
    al_sorted = xmalloc((al_num + 1) * sizeof(*al_sorted));
    for (size_t i = 0; i < al_num; i++)
        al_sorted[i] = al_entries[i].canon;
    qsort(al_sorted, al_num, sizeof(*al_sorted), str_cmp);
    atomic_fetch_add(&al_version, 1);
}

static size_t find(const char *canon)
{
    for (size_t i = 0; i < al_num; i++) {
        if (strcmp(al_entries[i].canon, canon) == 0)
            return i + 1;
    }
    return 0;
}

static void entries_free(struct entry *e, size_t num)
{
    for (size_t i = 0; i < num; i++) {
        free(e[i].subject);
        free(e[i].canon);
    }
    free(e);
}

uint64_t allowlist_version(void)
{
    return atomic_load(&al_version);
}

bool allowlist_contains(const char *canon)
{
    if (!al_have_lock || canon == NULL)
        return false;
    uv_mutex_lock(&al_lock);
    bool found = al_num > 0 && bsearch(&canon, al_sorted, al_num, sizeof(*al_sorted), str_cmp);
    uv_mutex_unlock(&al_lock);
    return found;
}

/* --- the state file -------------------------------------------------------------------- */

struct reader {
    const char *path;
    const char *data;
    size_t len;
    size_t pos;
    char *err;
    size_t err_len;
};

static int read_fail(struct reader *r, size_t at, const char *what)
{
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < r->len; i++) {
        if (r->data[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    snprintf(r->err, r->err_len, "%s:%zu:%zu: %s", r->path, line, col, what);
    return -EINVAL;
}

static void skip_ws(struct reader *r)
{
    while (r->pos < r->len && strchr(" \t\r\n", r->data[r->pos]) != NULL)
        r->pos++;
}

static void put_utf8(struct buf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | cp >> 12);
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | cp >> 18);
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    buf_append(b, u, n);
}

static int read_hex4(struct reader *r, unsigned *out)
{
    if (r->len - r->pos < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = base_hex_digit((unsigned char)r->data[r->pos + (size_t)i]);
        if (h < 0)
            return -1;
        v = v * 16 + (unsigned)h;
    }
    r->pos += 4;
    *out = v;
    return 0;
}

/* Reads a JSON string at r->pos (the opening quote) into a new C string. */
static int read_string(struct reader *r, char **out)
{
    struct buf b = {0};
    size_t start = r->pos++;
    for (;;) {
        if (r->pos >= r->len) {
            buf_free(&b);
            return read_fail(r, start, "unterminated string");
        }
        unsigned char c = (unsigned char)r->data[r->pos++];
        if (c == '"')
            break;
        if (c < 0x20 || c == 0) {
            buf_free(&b);
            return read_fail(r, r->pos - 1, "control character in a string");
        }
        if (c != '\\') {
            buf_append(&b, &c, 1);
            continue;
        }
        if (r->pos >= r->len)
            continue;
        char e = r->data[r->pos++];
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        const char *k = e != '\0' ? strchr(from, e) : NULL;
        if (k != NULL) {
            buf_append(&b, &to[k - from], 1);
            continue;
        }
        unsigned cp, lo;
        if (e != 'u' || read_hex4(r, &cp) != 0) {
            buf_free(&b);
            return read_fail(r, r->pos - 2, "bad escape in a string");
        }
        if (cp >= 0xd800 && cp < 0xdc00) {
            if (r->len - r->pos < 2 || r->data[r->pos] != '\\' || r->data[r->pos + 1] != 'u' ||
                (r->pos += 2, read_hex4(r, &lo) != 0) || lo < 0xdc00 || lo >= 0xe000) {
                buf_free(&b);
                return read_fail(r, r->pos, "bad surrogate pair in a string");
            }
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        if (cp == 0) {
            buf_free(&b);
            return read_fail(r, r->pos - 6, "NUL in a string");
        }
        put_utf8(&b, cp);
    }
    *out = xstrndup(buf_data(&b), buf_used(&b));
    buf_free(&b);
    return 0;
}

/* Parses the file's content into |*out_entries|. */
static int parse_file(struct reader *r, struct entry **out_entries, size_t *out_num)
{
    struct entry *e = NULL;
    size_t num = 0, cap = 0;
    int rc = 0;
    skip_ws(r);
    if (r->pos >= r->len || r->data[r->pos] != '[') {
        rc = read_fail(r, r->pos, "expected a JSON array of subject strings");
        goto fail;
    }
    r->pos++;
    skip_ws(r);
    if (r->pos < r->len && r->data[r->pos] == ']') {
        r->pos++;
    } else {
        for (;;) {
            skip_ws(r);
            size_t at = r->pos;
            if (r->pos >= r->len || r->data[r->pos] != '"') {
                rc = read_fail(r, r->pos, "expected a subject string");
                goto fail;
            }
            char *subject = NULL, *canon = NULL;
            if ((rc = read_string(r, &subject)) != 0)
                goto fail;
            if (allowlist_canon(subject, &canon) != 0) {
                free(subject);
                rc = read_fail(r, at, "not a distinguished name (expected CN=...,O=...)");
                goto fail;
            }
            bool dup = false;
            for (size_t i = 0; i < num && !dup; i++)
                dup = strcmp(e[i].canon, canon) == 0;
            if (dup) {
                free(subject);
                free(canon);
            } else {
                if (num == cap) {
                    cap = cap ? 2 * cap : 16;
                    e = xrealloc(e, cap * sizeof(*e));
                }
                e[num].subject = subject;
                e[num].canon = canon;
                num++;
            }
            skip_ws(r);
            if (r->pos < r->len && r->data[r->pos] == ',') {
                r->pos++;
                continue;
            }
            if (r->pos < r->len && r->data[r->pos] == ']') {
                r->pos++;
                break;
            }
            rc = read_fail(r, r->pos, "expected ',' or ']'");
            goto fail;
        }
    }
    skip_ws(r);
    if (r->pos != r->len) {
        rc = read_fail(r, r->pos, "unexpected content after the array");
        goto fail;
    }
    *out_entries = e;
    *out_num = num;
    return 0;
fail:
    entries_free(e, num);
    return rc;
}

static void entries_json(struct buf *out, const struct entry *e, size_t num, bool pretty)
{
    buf_append(out, "[", 1);
    for (size_t i = 0; i < num; i++) {
        if (i > 0)
            buf_append(out, ",", 1);
        if (pretty)
            buf_append(out, "\n  ", 3);
        log_json_string(out, e[i].subject);
    }
    if (pretty && num > 0)
        buf_append(out, "\n", 1);
    buf_append(out, "]", 1);
}

/* The file a write of |path| must replace: |path| itself, or when it is a symlink (a Kubernetes
 * volume, a link into a config tree) the file it points to, followed link by link; a dangling
 * last link names the file to create. Renaming onto the link itself would turn it into a plain
 * file and cut it off from whatever manages the target. Returns a new string, or NULL with
 * errno set (ELOOP after 40 links, as the kernel). */
static char *resolve_target(const char *path)
{
    char *cur = xstrdup(path);
    for (int hops = 0; hops < 40; hops++) {
        struct stat st;
        if (lstat(cur, &st) != 0)
            return errno == ENOENT ? cur : (free(cur), NULL);
        if (!S_ISLNK(st.st_mode))
            return cur;
        size_t cap = (size_t)(st.st_size > 0 ? st.st_size : 255) + 1;
        char *link = xmalloc(cap);
        ssize_t n = readlink(cur, link, cap);
        if (n < 0 || (size_t)n >= cap) { /* vanished, or changed while we looked: retry */
            free(link);
            if (n < 0 && errno != ENOENT && errno != EINVAL) {
                free(cur);
                return NULL;
            }
            continue;
        }
        link[n] = '\0';
        char *slash = strrchr(cur, '/');
        if (link[0] == '/' || slash == NULL) {
            free(cur);
            cur = link;
            continue;
        }
        /* A relative target is relative to the link's directory. */
        if (slash == cur)
            slash[1] = '\0';
        else
            *slash = '\0';
        char *next = base_join_path(cur, link);
        free(cur);
        free(link);
        cur = next;
    }
    free(cur);
    errno = ELOOP;
    return NULL;
}

/* Opens a new temporary file beside |target| for writing; its name goes to |*out_tmp|. The mode
 * is the replaced file's (a state file shared with a group stays shared), else 0600. */
static int open_temp(const char *target, char **out_tmp)
{
    struct stat st;
    mode_t mode = stat(target, &st) == 0 ? (st.st_mode & 07777) : 0600;
    size_t len = strlen(target) + 40;
    char *tmp = xmalloc(len);
    for (int attempt = 0; attempt < 2; attempt++) {
        snprintf(tmp, len, "%s.tmp.%ld", target, (long)getpid());
        /* O_EXCL: never write through something planted under this name. */
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
            fchmod(fd, mode);
            *out_tmp = tmp;
            return fd;
        }
        if (errno != EEXIST || unlink(tmp) != 0) /* a leftover of a crashed write */
            break;
    }
    int e = errno;
    free(tmp);
    return -e;
}

/* Writes |e| to al_path: a temporary file beside the file it names (through symlinks), fsync,
 * rename onto that file, fsync of its directory. */
static int write_file(const struct entry *e, size_t num, char *err, size_t err_len)
{
    struct buf b = {0};
    entries_json(&b, e, num, true);
    buf_append(&b, "\n", 1);
    char *tmp = NULL;
    int rc = 0, fd = -1;
    char *target = resolve_target(al_path);
    if (target == NULL) {
        rc = -errno;
        goto out;
    }
    fd = open_temp(target, &tmp);
    if (fd < 0) {
        rc = fd;
        goto out;
    }
    size_t done = 0;
    while (done < buf_used(&b)) {
        ssize_t n = write(fd, buf_data(&b) + done, buf_used(&b) - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        done += (size_t)n;
    }
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, target) != 0)
        rc = -errno;
    if (rc != 0) {
        unlink(tmp);
        goto out;
    }
    char *slash = strrchr(target, '/');
    if (slash == target)
        slash[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    int dfd = open(slash != NULL ? target : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
out:
    if (rc != 0)
        snprintf(err, err_len, "cannot write %s: %s", al_path, strerror(-rc));
    free(target);
    free(tmp);
    buf_free(&b);
    return rc;
}

int allowlist_init(const char *path, char *err, size_t err_len)
{
    allowlist_cleanup();
    if (!al_have_lock) {
        uv_mutex_init(&al_lock);
        al_have_lock = true;
    }
    al_path = path != NULL ? xstrdup(path) : NULL;
    if (path == NULL)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0 && errno == ENOENT)
        return 0;
    if (fd < 0) {
        int e = errno;
        snprintf(err, err_len, "%s: cannot open: %s", path, strerror(e));
        return -e;
    }
    struct stat st = {0};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)MAX_FILE_BYTES) {
        close(fd);
        snprintf(err, err_len, "%s: %s, not a regular file of at most 16 MiB", path,
                 S_ISFIFO(st.st_mode)   ? "a FIFO"
                 : S_ISSOCK(st.st_mode) ? "a socket"
                 : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                 : S_ISDIR(st.st_mode)                        ? "a directory"
                                                              : "too large");
        return -EINVAL;
    }
    struct buf data = {0};
    int rc = 0;
    for (;;) {
        char *dst = buf_reserve(&data, 65536);
        ssize_t n = read(fd, dst, 65536);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            snprintf(err, err_len, "%s: cannot read: %s", path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        buf_commit(&data, (size_t)n);
        if (buf_used(&data) > MAX_FILE_BYTES) {
            rc = -EINVAL;
            snprintf(err, err_len, "%s: larger than 16 MiB", path);
            break;
        }
    }
    close(fd);
    if (rc == 0) {
        struct reader r = {path, buf_data(&data), buf_used(&data), 0, err, err_len};
        struct entry *e = NULL;
        size_t num = 0;
        rc = parse_file(&r, &e, &num);
        if (rc == 0) {
            uv_mutex_lock(&al_lock);
            al_entries = e;
            al_num = num;
            reindex();
            uv_mutex_unlock(&al_lock);
        }
    }
    buf_free(&data);
    return rc;
}

void allowlist_cleanup(void)
{
    if (al_have_lock)
        uv_mutex_lock(&al_lock);
    entries_free(al_entries, al_num);
    al_entries = NULL;
    al_num = 0;
    free(al_sorted);
    al_sorted = NULL;
    free(al_path);
    al_path = NULL;
    atomic_fetch_add(&al_version, 1);
    if (al_have_lock)
        uv_mutex_unlock(&al_lock);
}

/* Subjects come from percent-decoded request paths: text only. */
static bool valid_text(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3
                 : (*p & 0xf8) == 0xf0 ? 4 : 0;
        if (n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7f)))
            return false;
        for (size_t i = 1; i < n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
        }
        p += n;
    }
    return true;
}

/* Writes the file as it would be after the change and, when that worked, changes the set. */
static int commit(struct entry *next, size_t num, char *err, size_t err_len)
{
    int rc = write_file(next, num, err, err_len);
    if (rc != 0)
        return rc;
    uv_mutex_lock(&al_lock);
    free(al_entries);
    al_entries = next;
    al_num = num;
    reindex();
    uv_mutex_unlock(&al_lock);
    return 0;
}

/* The canonical form of |subject| for a change, or the error allowlist_add and _remove return. */
static int prepare(const char *subject, char **out_canon, char *err, size_t err_len)
{
    if (!valid_text(subject) || allowlist_canon(subject, out_canon) != 0) {
        snprintf(err, err_len, "not a distinguished name (expected CN=...,O=...)");
        return -EINVAL;
    }
    if (al_path == NULL || !al_have_lock) {
        free(*out_canon);
        *out_canon = NULL;
        snprintf(err, err_len, "access.allowed_subjects_file is not configured");
        return -ENOTSUP;
    }
    return 0;
}

int allowlist_add(const char *subject, char *err, size_t err_len)
{
    char *canon = NULL;
    int rc = prepare(subject, &canon, err, err_len);
    if (rc != 0)
        return rc;
    if (find(canon) != 0) {
        free(canon);
        return 1;
    }
    struct entry *next = xmalloc((al_num + 1) * sizeof(*next));
    if (al_num > 0)
        memcpy(next, al_entries, al_num * sizeof(*next));
    next[al_num].subject = xstrdup(subject);
    next[al_num].canon = canon;
    rc = commit(next, al_num + 1, err, err_len);
    if (rc != 0) {
        free(next[al_num].subject);
        free(canon);
        free(next);
    }
    return rc;
}

int allowlist_remove(const char *subject, char *err, size_t err_len)
{
    char *canon = NULL;
    int rc = prepare(subject, &canon, err, err_len);
    if (rc != 0)
        return rc;
    size_t at = find(canon);
    free(canon);
    if (at == 0) {
        snprintf(err, err_len, "not in the allowlist");
        return -ENOENT;
    }
    struct entry gone = al_entries[at - 1];
    struct entry *next = xmalloc((al_num + 1) * sizeof(*next));
    size_t num = 0;
    for (size_t i = 0; i < al_num; i++) {
        if (i != at - 1)
            next[num++] = al_entries[i];
    }
    rc = commit(next, num, err, err_len);
    if (rc != 0) {
        free(next);
        return rc;
    }
    free(gone.subject);
    free(gone.canon);
    return 0;
}

void allowlist_json(struct buf *out)
{
    if (al_have_lock)
        uv_mutex_lock(&al_lock);
    entries_json(out, al_entries, al_num, false);
    if (al_have_lock)
        uv_mutex_unlock(&al_lock);
}
