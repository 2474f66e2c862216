/* allowlist_file.c: the allowlist's JSON state file: a strict reader that names line and column
 * of what it refuses, and an atomic rewrite (temporary file beside the target, fsync, rename,
 * fsync of the directory) through symlinks. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base.h"
#include "core/log.h"
#include "tls/allowlist_internal.h"

/* --- the state file -------------------------------------------------------------------- */

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
int allowlist_parse_file(struct reader *r, struct entry **out_entries, size_t *out_num)
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
    allowlist_entries_free(e, num);
    return rc;
}

void allowlist_entries_json(struct buf *out, const struct entry *e, size_t num, bool pretty)
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
 * file and cut it off from whatever manages the target. Only links owned by root or by this
 * process's user are followed: readlink sidesteps the kernel's fs.protected_symlinks, and a link
 * another user planted (the state file in a shared directory) would have certgate, often root,
 * replace or create any file with the allowlist. Returns a new string, or NULL with errno set
 * (ELOOP after 40 links, as the kernel; EPERM for a link of another user). */
static char *resolve_target(const char *path)
{
    char *cur = xstrdup(path);
    for (int hops = 0; hops < 40; hops++) {
        struct stat st;
        if (lstat(cur, &st) != 0)
            return errno == ENOENT ? cur : (free(cur), NULL);
        if (!S_ISLNK(st.st_mode))
            return cur;
        if (st.st_uid != 0 && st.st_uid != geteuid()) {
            free(cur);
            errno = EPERM;
            return NULL;
        }
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

/* Writes |e| to |path|: a temporary file beside the file it names (through symlinks), fsync,
 * rename onto that file, fsync of its directory. */
int allowlist_write_file(const char *path, const struct entry *e, size_t num, char *err,
                         size_t err_len)
{
    struct buf b = {0};
    allowlist_entries_json(&b, e, num, true);
    buf_append(&b, "\n", 1);
    char *tmp = NULL;
    int rc = 0, fd = -1;
    char *target = resolve_target(path);
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
        snprintf(err, err_len, "cannot write %s: %s", path, strerror(-rc));
    free(target);
    free(tmp);
    buf_free(&b);
    return rc;
}
