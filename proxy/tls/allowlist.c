/* allowlist.c: the allowed client certificate subjects: subject canonicalisation, the JSON
 * state file (read at start, rewritten atomically on every change) and a set every worker reads
 * under a mutex, with a version number so that connections re-check only after a change. */
#include "tls/allowlist.h"

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

#include "core/base.h"
#include "core/log.h"
#include "tls/allowlist_internal.h"


static uv_mutex_t al_lock;
static bool al_have_lock;
static struct entry *al_entries; /* in the order they were added */
static size_t al_num;
static char **al_sorted; /* canonical forms, sorted: binary search */
static char *al_path;
static _Atomic uint64_t al_version = 1;

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

void allowlist_entries_free(struct entry *e, size_t num)
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
        rc = allowlist_parse_file(&r, &e, &num);
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
    allowlist_entries_free(al_entries, al_num);
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
    int rc = allowlist_write_file(al_path, next, num, err, err_len);
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
    allowlist_entries_json(out, al_entries, al_num, false);
    if (al_have_lock)
        uv_mutex_unlock(&al_lock);
}
