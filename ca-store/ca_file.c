/* ca_file.c: reads the CA store's files whole, until two reads give the same bytes, so that a file
 * being rewritten in place is not taken half-written (CONTRACT section 4). Only regular files are
 * read: a FIFO, socket or device in a watched tree is an error, never a blocked thread. */
#include "ca_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ca_mem.h"

#define FILE_MAX (16u << 20) /* bytes; a system bundle is about 200 KiB */
#define FILE_READ_TRIES 5    /* reads until two give the same bytes */

__attribute__((format(printf, 3, 4))) static void file_err(char *err, size_t err_len,
                                                           const char *fmt, ...)
{
    va_list ap;
    if (err_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* file_kind names what a non-regular file is, for the error message. */
static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    return "not a regular file";
}

/* file_read_once reads |path| once. A FIFO would block open() until a writer comes and read()
 * until it leaves, on the thread that serves reloads, /healthz and SIGTERM: so stat() refuses
 * anything but a regular file before open(), and O_NONBLOCK (plus fstat on the descriptor) covers
 * a swap between the two; O_NOCTTY keeps a terminal device from becoming ours. |*out_mode| gets
 * the file type when the file is refused with -EISDIR. */
static int file_read_once(const char *path, uint8_t **out, size_t *out_len, mode_t *out_mode)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -errno;
    *out_mode = st.st_mode;
    if (!S_ISREG(st.st_mode))
        return -EISDIR;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return -errno;
    uint8_t *data = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        *out_mode = st.st_mode;
        rc = -EISDIR;
        goto out;
    }
    for (;;) {
        if (len == cap) {
            if (cap >= FILE_MAX) {
                rc = -EFBIG;
                goto out;
            }
            cap = cap ? cap * 2 : (st.st_size > 0 ? (size_t)st.st_size + 1 : 4096);
            if (cap > FILE_MAX)
                cap = FILE_MAX;
            data = ca_mem_realloc(data, cap);
        }
        ssize_t n = read(fd, data + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
out:
    close(fd);
    if (rc != 0) {
        free(data);
        return rc;
    }
    *out = data;
    *out_len = len;
    return 0;
}

int ca_file_read(const char *path, uint8_t **out, size_t *out_len, char *err, size_t err_len)
{
    uint8_t *prev = NULL, *cur = NULL;
    size_t prev_len = 0, cur_len = 0;
    mode_t mode = 0;
    int rc = file_read_once(path, &prev, &prev_len, &mode);
    for (int i = 0; rc == 0 && i < FILE_READ_TRIES; i++) {
        rc = file_read_once(path, &cur, &cur_len, &mode);
        if (rc != 0)
            break;
        if (cur_len == prev_len && memcmp(cur, prev, cur_len) == 0) {
            free(prev);
            *out = cur;
            *out_len = cur_len;
            return 0;
        }
        free(prev);
        prev = cur;
        prev_len = cur_len;
        cur = NULL;
    }
    free(prev);
    if (rc == 0)
        rc = -EAGAIN;
    if (rc == -EFBIG)
        file_err(err, err_len, "%s: larger than %u bytes", path, FILE_MAX);
    else if (rc == -EAGAIN)
        file_err(err, err_len, "%s: keeps changing while being read", path);
    else if (rc == -EISDIR)
        file_err(err, err_len, "%s: %s, not a regular file", path, file_kind(mode));
    else
        file_err(err, err_len, "%s: %s", path, strerror(-rc));
    return rc;
}
