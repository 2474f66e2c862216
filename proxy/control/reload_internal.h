/* reload_internal.h: what reload.c (watchers, the generation swap) and reload_scan.c (walking
 * and hashing the watched trees) share. Only those two include it. */
#ifndef CERTGATE_RELOAD_INTERNAL_H
#define CERTGATE_RELOAD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/config.h"

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


/* reload_scan.c */

/* Hashing: reload_hash_init starts a hash, reload_hash_num mixes a number into it. */
void reload_hash_init(struct hash *h);
void reload_hash_num(struct hash *h, uint64_t v);

/* An open-addressing index over |num| |keys| (1 + position per slot, 0 when empty):
 * reload_index_build makes one of |*out_cap| slots, reload_index_slot finds the slot of |key|
 * (its own or the empty one it would take), reload_index_find its 1 + position, or 0. */
size_t *reload_index_build(char *const *keys, size_t num, size_t *out_cap);
size_t *reload_index_slot(size_t *index, size_t cap, char *const *keys, const char *key);
size_t reload_index_find(const size_t *index, size_t cap, char *const *keys, const char *key);

/* reload_add_dir_at adds the directory |path| (|real|: its real path when known, else NULL) to
 * the directories |s| watches; |*out_real| gets the real path. False when it is not one. */
bool reload_add_dir_at(struct scan *s, const char *path, char *real, const char **out_real);
/* reload_walk hashes the tree at |dir| (real path |real|, |rel| below the store) into |s|, down
 * to |depth| levels. */
void reload_walk(struct scan *s, const char *dir, const char *real, const char *rel, int depth);

/* reload_scan_all scans both trees of |cfg| into |s|; reload_scan_credentials only the
 * credentials; reload_scan_full is a full scan that also ages the file cache; reload_scan_total
 * is the hash of the whole; reload_scan_free frees |s| and zeroes it. */
void reload_scan_all(struct scan *s, const struct config *cfg);
void reload_scan_credentials(struct scan *s, const struct config *cfg);
void reload_scan_full(struct scan *s, const struct config *cfg);
struct hash reload_scan_total(const struct scan *s);
void reload_scan_free(struct scan *s);

/* The tenant directories of a scan, shared by reference. */
struct tenants *reload_tenants_new(void);
size_t reload_tenants_find(const struct tenants *t, const char *name);
void reload_tenants_unref(struct tenants *t);

/* The file cache: reload_fcache_poll makes the checks of a poll at |now_ms| read every file
 * when the last poll that did is a minute old (timestamps may lie), until
 * reload_fcache_poll_done; reload_fcache_read_all records that every file was just read;
 * reload_fcache_free empties the cache. */
void reload_fcache_poll(uint64_t now_ms);
void reload_fcache_poll_done(void);
void reload_fcache_read_all(uint64_t now_ms);
void reload_fcache_free(void);

#endif
