/* allowlist_internal.h: what the files of the allowlist share (allowlist.c: the set and its
 * changes; allowlist_canon.c: canonical subjects; allowlist_file.c: the state file). Only they
 * include it. */
#ifndef CERTGATE_ALLOWLIST_INTERNAL_H
#define CERTGATE_ALLOWLIST_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "tls/allowlist.h"

#define MAX_FILE_BYTES (16u << 20)
#define MAX_SUBJECT_BYTES 4096
#define MAX_PAIRS 64

/* One subject: as it was written, and its canonical form (the set's key). */
struct entry {
    char *subject;
    char *canon;
};

/* The JSON file being read. */
struct reader {
    const char *path;
    const char *data;
    size_t len;
    size_t pos;
    char *err;
    size_t err_len;
};

/* allowlist.c: allowlist_entries_free frees |num| entries and the array. */
void allowlist_entries_free(struct entry *e, size_t num);

/* allowlist_file.c: allowlist_parse_file reads the state file's entries; 0, or -EINVAL with
 * "PATH:LINE:COL: what" in r->err. allowlist_entries_json writes entries as the file's (or the
 * admin API's) JSON. allowlist_write_file replaces the file at |path| atomically with |e|. */
int allowlist_parse_file(struct reader *r, struct entry **out_entries, size_t *out_num);
void allowlist_entries_json(struct buf *out, const struct entry *e, size_t num, bool pretty);
int allowlist_write_file(const char *path, const struct entry *e, size_t num, char *err,
                         size_t err_len);

#endif
