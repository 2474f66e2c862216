/* ca_index.h: the parser of the CA store's index.yml (CONTRACT section 4): which bundles are
 * common and which belong to which tenant. It only reads YAML; ca_store.c loads the files. */
#ifndef CERTGATE_CA_INDEX_H
#define CERTGATE_CA_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A listed bundle: a path relative to common/ or tenants/<id>/, checked not to escape it. */
struct ca_index_file {
    char *path;
    size_t line; /* where index.yml lists it, 1-based */
    size_t col;
};

/* One entry of `tenants:`. */
struct ca_index_tenant {
    char *id; /* as written, unprintable bytes replaced by '?' when |error| is set */
    size_t line;
    size_t col;
    struct ca_index_file *files;
    size_t num_files;
    char *error; /* non-NULL: the entry itself is bad ("FILE:LINE:COL: what"), files empty */
};

struct ca_index {
    struct ca_index_file *common;
    size_t num_common;
    struct ca_index_tenant *tenants;
    size_t num_tenants;
};

/* ca_index_parse parses the |len| bytes at |data| (called |name| in messages) into |out|, which
 * the caller zero-initialises and releases with ca_index_cleanup even on failure. A tenant with
 * an invalid id, a path that escapes its directory or a malformed list gets its |error| set and
 * the others still parse. Returns 0, or -EINVAL with "NAME:LINE:COL: what" in |err| when the
 * YAML does not parse, a top-level key is unknown, or `common` is malformed. Duplicate tenant
 * ids are not detected here. */
int ca_index_parse(struct ca_index *out, const char *name, const uint8_t *data, size_t len,
                   char *err, size_t err_len);

/* ca_index_cleanup frees everything |index| holds and zeroes it. */
void ca_index_cleanup(struct ca_index *index);

/* ca_index_valid_tenant_id reports whether the |len| bytes at |id| form a DNS label
 * `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`. */
bool ca_index_valid_tenant_id(const char *id, size_t len);

/* ca_index_valid_path reports whether |path| (|len| bytes) is non-empty, relative, free of NUL
 * and without a ".." component. */
bool ca_index_valid_path(const char *path, size_t len);

#endif
