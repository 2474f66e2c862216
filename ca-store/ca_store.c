/* ca_store.c: loads the CA store directory into an immutable, reference-counted snapshot: the
 * common bundle, one trust set per tenant found in O(1) by id, their CRLs and trust hashes.
 * A tenant that fails to load keeps its bundle from the previous snapshot. */
#include <openssl/is_boringssl.h>

#include "ca_store.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/siphash.h>

#include "ca_crl.h"
#include "ca_file.h"
#include "ca_index.h"
#include "ca_mem.h"
#include "ca_pem.h"
#include "ca_store_internal.h"

/* The hint of ca_store_hint_next_load, per thread. */
static _Thread_local struct ca_store_changes cs_hint;
static _Thread_local bool cs_hint_set;

static void cs_scope_cleanup(struct ca_scope *scope)
{
    if (scope->refs == NULL ||
        atomic_fetch_sub_explicit(scope->refs, 1, memory_order_acq_rel) == 1) {
        sk_X509_pop_free(scope->certs, X509_free);
        sk_X509_CRL_pop_free(scope->crls, X509_CRL_free);
        free(scope->refs);
    }
    free(scope->crl_state);
    memset(scope, 0, sizeof(*scope));
}

static void cs_scope_init(struct ca_scope *scope)
{
    scope->certs = sk_X509_new_null();
    scope->crls = sk_X509_CRL_new_null();
    if (scope->certs == NULL || scope->crls == NULL)
        abort();
    scope->refs = ca_mem_calloc(1, sizeof(*scope->refs));
    atomic_init(scope->refs, 1);
}

/* cs_scope_finish allocates the per-CRL memo once the objects are final. */
static void cs_scope_finish(struct ca_scope *scope)
{
    size_t n = sk_X509_CRL_num(scope->crls);
    if (n == 0)
        return;
    scope->crl_state = ca_mem_calloc(n, sizeof(*scope->crl_state));
    for (size_t i = 0; i < n; i++)
        atomic_init(&scope->crl_state[i], CRL_UNKNOWN);
}

/* cs_scope_share takes the objects of a scope of the previous snapshot (read-only stacks, shared
 * by reference); the CRL memo is new, as the trust set around them may differ. */
static void cs_scope_share(struct ca_scope *scope, const struct ca_scope *from)
{
    scope->certs = from->certs;
    scope->crls = from->crls;
    scope->refs = from->refs;
    atomic_fetch_add_explicit(scope->refs, 1, memory_order_relaxed);
    memcpy(scope->content_hash, from->content_hash, sizeof(scope->content_hash));
    memcpy(scope->source_hash, from->source_hash, sizeof(scope->source_hash));
    cs_scope_finish(scope);
}



/* cs_bad_signer returns a certificate of |scope| that has |crl|'s issuer name, verifies it and
 * may not sign CRLs (its keyUsage lacks cRLSign), or NULL. Signatures are checked only for such
 * certificates, which a sound CA hierarchy does not have, so the load pays nothing for them. */
static X509 *cs_bad_signer(X509_CRL *crl, const struct ca_scope *scope)
{
    X509_NAME *issuer = X509_CRL_get_issuer(crl);
    for (size_t i = 0; scope != NULL && i < sk_X509_num(scope->certs); i++) {
        X509 *x = sk_X509_value(scope->certs, i);
        if (!ca_crl_signer_ok(x) && X509_NAME_cmp(X509_get_subject_name(x), issuer) == 0 &&
            ca_store_crl_verifies(crl, x))
            return x;
    }
    return NULL;
}

/* cs_check_signers fails the load of |scope| when one of its CRLs is signed by a certificate of
 * the trust set (|scope| and |common|, which may be NULL) that may not sign CRLs: such a CRL is no
 * evidence, and taking it for none would answer "not revoked" (SECURITY rule 27). |first_crl[i]|
 * is the index of the first CRL of file i, to name the file and line. */
static int cs_check_signers(const struct ca_scope *scope, const struct ca_scope *common,
                            char *const *paths, uint8_t *const *data, const size_t *lens,
                            const size_t *first_crl, size_t num_files, char *err, size_t err_len)
{
    for (size_t k = 0; k < sk_X509_CRL_num(scope->crls); k++) {
        X509_CRL *crl = sk_X509_CRL_value(scope->crls, k);
        X509 *bad = cs_bad_signer(crl, scope);
        if (bad == NULL)
            bad = cs_bad_signer(crl, common);
        if (bad == NULL)
            continue;
        size_t i = num_files - 1;
        while (i > 0 && first_crl[i] > k)
            i--;
        char name[256] = "";
        BIO *bio = BIO_new(BIO_s_mem());
        const uint8_t *text = NULL;
        size_t len = 0;
        if (bio != NULL &&
            X509_NAME_print_ex(bio, X509_get_subject_name(bad), 0, XN_FLAG_RFC2253) >= 0 &&
            BIO_mem_contents(bio, &text, &len))
            snprintf(name, sizeof(name), "%.*s", (int)(len < 200 ? len : 200), (const char *)text);
        BIO_free(bio);
        snprintf(err, err_len,
                 "%s:%zu: X509 CRL is signed by \"%s\", whose keyUsage lacks cRLSign: it cannot "
                 "be used",
                 paths[i], ca_pem_crl_line(data[i], lens[i], k - first_crl[i]), name);
        return -EINVAL;
    }
    return 0;
}

/* cs_scope_load reads the bundles |files| below |base| into |scope|. When |prev| (a scope of the
 * previous snapshot, may be NULL) was built from the same file names and bytes, its objects are
 * shared instead of parsed again, so a reload costs little more than reading the files. |common|
 * is common's scope when |scope| is a tenant's (NULL for common itself): its CAs may sign the
 * tenant's CRLs. */
static int cs_scope_load(struct ca_scope *scope, const char *base,
                         const struct ca_index_file *files, size_t num_files,
                         const struct ca_scope *prev, const struct ca_scope *common, char *err,
                         size_t err_len)
{
    SHA256_CTX hash;
    uint8_t **data = ca_mem_calloc(num_files, sizeof(*data));
    size_t *lens = ca_mem_calloc(num_files, sizeof(*lens));
    char **paths = ca_mem_calloc(num_files, sizeof(*paths));
    size_t *first_crl = NULL;
    int rc = 0;

    SHA256_Init(&hash);
    for (size_t i = 0; i < num_files && rc == 0; i++) {
        size_t plen = strlen(base) + strlen(files[i].path) + 2;
        uint8_t len_be[8];
        paths[i] = ca_mem_realloc(NULL, plen);
        snprintf(paths[i], plen, "%s/%s", base, files[i].path);
        rc = ca_file_read(paths[i], &data[i], &lens[i], err, err_len);
        for (int k = 0; k < 8; k++)
            len_be[k] = (uint8_t)((uint64_t)lens[i] >> (56 - 8 * k));
        SHA256_Update(&hash, files[i].path, strlen(files[i].path) + 1);
        SHA256_Update(&hash, len_be, sizeof(len_be));
        SHA256_Update(&hash, data[i], lens[i]);
    }
    SHA256_Final(scope->source_hash, &hash);
    if (rc != 0)
        goto out;
    if (prev != NULL && prev->certs != NULL &&
        memcmp(prev->source_hash, scope->source_hash, sizeof(scope->source_hash)) == 0) {
        cs_scope_share(scope, prev);
        goto out;
    }
    cs_scope_init(scope);
    first_crl = ca_mem_calloc(num_files, sizeof(*first_crl));
    SHA256_Init(&hash);
    for (size_t i = 0; i < num_files && rc == 0; i++) {
        first_crl[i] = sk_X509_CRL_num(scope->crls);
        rc = ca_pem_parse(scope->certs, scope->crls, &hash, paths[i], data[i], lens[i], err,
                          err_len);
    }
    SHA256_Final(scope->content_hash, &hash);
    if (rc == 0)
        rc = cs_check_signers(scope, common, paths, data, lens, first_crl, num_files, err, err_len);
    if (rc == 0)
        cs_scope_finish(scope);
out:
    if (rc != 0)
        cs_scope_cleanup(scope);
    for (size_t i = 0; i < num_files; i++) {
        free(data[i]);
        free(paths[i]);
    }
    free(data);
    free(lens);
    free(paths);
    free(first_crl);
    return rc;
}

static void cs_trust_add(X509_STORE *trust, const struct ca_scope *scope)
{
    for (size_t i = 0; i < sk_X509_num(scope->certs); i++) {
        /* Fails only for a certificate already present (listed twice), which is harmless. */
        if (!X509_STORE_add_cert(trust, sk_X509_value(scope->certs, i)))
            ERR_clear_error();
    }
}

/* cs_trust_new builds the X509_STORE of common + |t| (|t| may be common itself). */
static X509_STORE *cs_trust_new(const struct ca_store *store, const struct ca_tenant *t)
{
    X509_STORE *trust = X509_STORE_new();
    if (trust == NULL || !X509_STORE_set_flags(trust, X509_V_FLAG_PARTIAL_CHAIN))
        abort();
    cs_trust_add(trust, &store->common.scope);
    if (t != &store->common)
        cs_trust_add(trust, &t->scope);
    return trust;
}

/* cs_build computes a tenant's trust hash. Its X509_STORE is built on first use by
 * ca_store_trust (X509_STORE_add_cert is slow for large bundles, and most tenants of a big store
 * are idle), or shared with |prev|, the same tenant in the previous snapshot, when neither its
 * content nor common's changed. */
static void cs_build(struct ca_tenant *t, const struct ca_tenant *common,
                     const struct ca_tenant *prev, const struct ca_tenant *prev_common)
{
    SHA256_CTX hash;
    uint8_t len_be[4] = {(uint8_t)(t->id_len >> 24), (uint8_t)(t->id_len >> 16),
                         (uint8_t)(t->id_len >> 8), (uint8_t)t->id_len};
    bool same = prev != NULL && prev_common != NULL && prev->id_len == t->id_len &&
                memcmp(prev->id, t->id, t->id_len) == 0 &&
                memcmp(prev->scope.content_hash, t->scope.content_hash, 32) == 0 &&
                memcmp(prev_common->scope.content_hash, common->scope.content_hash, 32) == 0;
    X509_STORE *trust = NULL;
    if (same) {
        /* The same id and contents: the same hash, and the same X509_STORE if it was built. */
        memcpy(t->trust_hash, prev->trust_hash, sizeof(t->trust_hash));
        trust = atomic_load_explicit(&prev->trust, memory_order_acquire);
        if (trust != NULL)
            X509_STORE_up_ref(trust);
        atomic_init(&t->trust, trust);
        return;
    }
    /* The id is part of the hash so that two tenants never share a session scope. */
    SHA256_Init(&hash);
    SHA256_Update(&hash, "certgate ca-store trust v1", 27);
    SHA256_Update(&hash, len_be, sizeof(len_be));
    SHA256_Update(&hash, t->id, t->id_len);
    SHA256_Update(&hash, common->scope.content_hash, 32);
    if (t != common)
        SHA256_Update(&hash, t->scope.content_hash, 32);
    SHA256_Final(t->trust_hash, &hash);
    atomic_init(&t->trust, trust);
}

static void cs_tenant_cleanup(struct ca_tenant *t)
{
    cs_scope_cleanup(&t->scope);
    X509_STORE_free(atomic_load_explicit(&t->trust, memory_order_acquire));
}

static void cs_add_error(struct ca_store *store, size_t *cap, const char *tenant_id,
                         const char *message)
{
    if (store->num_errors == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        store->errors = ca_mem_realloc(store->errors, *cap * sizeof(*store->errors));
    }
    store->errors[store->num_errors++] =
        (struct ca_error){.tenant_id = ca_mem_strdup(tenant_id), .message = ca_mem_strdup(message)};
}

static uint64_t cs_hash(const struct ca_store *store, const char *id, size_t len)
{
    return SIPHASH_24(store->hash_key, (const uint8_t *)id, len);
}

/* cs_find returns the slot holding |id| or the empty slot where it would go. */
static size_t cs_find(const struct ca_store *store, const char *id, size_t len)
{
    size_t i = (size_t)cs_hash(store, id, len) & store->mask;
    for (;; i = (i + 1) & store->mask) {
        uint32_t v = store->slots[i];
        if (v == 0)
            return i;
        const struct ca_tenant *t = &store->tenants[v - 1];
        if (t->id_len == len && memcmp(t->id, id, len) == 0)
            return i;
    }
}

static void cs_table_init(struct ca_store *store, size_t num)
{
    size_t size = 16;
    while (size < num * 2)
        size *= 2;
    store->slots = ca_mem_calloc(size, sizeof(*store->slots));
    store->mask = size - 1;
    if (!RAND_bytes((uint8_t *)store->hash_key, sizeof(store->hash_key)))
        abort();
}

/* cs_load_tenant loads index entry |it| into the next tenant slot, falling back to |previous|.
 * Returns false when the tenant ends up absent. */
/* cs_same_files reports whether |t| loaded from the list |files| (an index shared by both
 * snapshots gives the very same list). */
static bool cs_same_files(const struct ca_tenant *t, const struct ca_index_file *files, size_t n)
{
    if (t->files == NULL || t->num_files != n)
        return false;
    if (t->files == files)
        return true;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(t->files[i].path, files[i].path) != 0)
            return false;
    }
    return true;
}

/* cs_unchanged reports whether |prev| can stand for index entry |it| without reading its files:
 * the caller says tenants/<id>/ did not change, and |prev| loaded cleanly from the same list. */
static bool cs_unchanged(const struct ca_tenant *prev, const struct ca_index_tenant *it,
                         const struct ca_store_changes *changes)
{
    return changes != NULL && prev != NULL && !prev->from_previous && it->error == NULL &&
           prev->scope.certs != NULL && cs_same_files(prev, it->files, it->num_files) &&
           !changes->tenant_changed(changes->ctx, it->id);
}

static bool cs_load_tenant(struct ca_store *store, size_t *err_cap,
                           const struct ca_index_tenant *it, const struct ca_store *previous,
                           const struct ca_store_changes *changes)
{
    char msg[1024] = "";
    struct ca_tenant *t = &store->tenants[store->num_tenants];
    size_t len = strlen(it->id);
    bool id_ok = ca_index_valid_tenant_id(it->id, len);
    size_t slot = 0;
    bool ok = false;
    const struct ca_tenant *prev =
        id_ok && previous != NULL ? ca_store_tenant(previous, it->id, len) : NULL;
    memset(t, 0, sizeof(*t));
    if (id_ok) {
        slot = cs_find(store, it->id, len);
        if (store->slots[slot] != 0) {
            snprintf(msg, sizeof(msg), "%s/index.yml:%zu:%zu: duplicate tenant id \"%s\"",
                     store->dir, it->line, it->col, it->id);
            cs_add_error(store, err_cap, it->id, msg);
            return false; /* the first entry stands */
        }
    }
    if (it->error != NULL) {
        snprintf(msg, sizeof(msg), "%s", it->error);
    } else if (cs_unchanged(prev, it, changes)) {
        cs_scope_share(&t->scope, &prev->scope);
        ok = true;
    } else {
        store->num_read++;
        size_t blen = strlen(store->dir) + len + 10;
        char *base = ca_mem_realloc(NULL, blen);
        snprintf(base, blen, "%s/tenants/%s", store->dir, it->id);
        ok = cs_scope_load(&t->scope, base, it->files, it->num_files,
                           prev != NULL ? &prev->scope : NULL, &store->common.scope, msg,
                           sizeof(msg)) == 0;
        free(base);
    }
    if (!ok) {
        cs_add_error(store, err_cap, it->id, msg);
        if (prev == NULL)
            return false;
        cs_scope_share(&t->scope, &prev->scope);
        t->from_previous = true;
    } else {
        t->files = it->files;
        t->num_files = it->num_files;
    }
    t->id = it->id;
    t->id_len = len;
    store->slots[slot] = (uint32_t)(store->num_tenants + 1);
    store->num_tenants++;
    cs_build(t, &store->common, prev, previous != NULL ? &previous->common : NULL);
    return true;
}

static void cs_index_unref(struct cs_index *index)
{
    if (index == NULL || atomic_fetch_sub_explicit(&index->refs, 1, memory_order_acq_rel) != 1)
        return;
    ca_index_cleanup(&index->idx);
    free(index);
}

void ca_store_hint_next_load(const struct ca_store_changes *changes)
{
    cs_hint_set = changes != NULL;
    if (changes != NULL)
        cs_hint = *changes;
}

int ca_store_load(struct ca_store **out, const char *dir, const struct ca_store *previous,
                  char *err, size_t err_len)
{
    struct ca_store_changes hint = cs_hint;
    bool hinted = cs_hint_set;
    cs_hint_set = false;
    return ca_store_load_changes(out, dir, previous, hinted ? &hint : NULL, err, err_len);
}

int ca_store_load_changes(struct ca_store **out, const char *dir, const struct ca_store *previous,
                          const struct ca_store_changes *changes, char *err, size_t err_len)
{
    struct cs_index *index = NULL;
    struct ca_store *store = NULL;
    uint8_t *data = NULL;
    size_t len = 0, err_cap = 0;
    char *path = NULL;
    size_t plen = strlen(dir) + 32;
    int rc = 0;

    *out = NULL;
    path = ca_mem_realloc(NULL, plen);
    snprintf(path, plen, "%s/index.yml", dir);
    if (previous == NULL || strcmp(previous->dir, dir) != 0)
        changes = NULL;
    rc = ca_file_read(path, &data, &len, err, err_len);
    if (rc != 0)
        goto fail;
    uint8_t index_hash[32];
    SHA256(data, len, index_hash);
    if (previous != NULL && previous->index != NULL && strcmp(previous->dir, dir) == 0 &&
        memcmp(previous->index->hash, index_hash, sizeof(index_hash)) == 0) {
        /* The same bytes parse the same: skip the YAML parser (a 10,000-tenant index is
         * 30,000 lines). */
        index = previous->index;
        atomic_fetch_add_explicit(&index->refs, 1, memory_order_relaxed);
    } else {
        index = ca_mem_calloc(1, sizeof(*index));
        atomic_init(&index->refs, 1);
        memcpy(index->hash, index_hash, sizeof(index_hash));
        rc = ca_index_parse(&index->idx, path, data, len, err, err_len);
        if (rc != 0)
            goto fail;
    }

    store = ca_mem_calloc(1, sizeof(*store));
    atomic_init(&store->refs, 1);
    store->dir = ca_mem_strdup(dir);
    store->common.id = "";
    store->index = index;
    atomic_fetch_add_explicit(&index->refs, 1, memory_order_relaxed);
    snprintf(path, plen, "%s/common", dir);
    if (changes != NULL && !changes->common &&
        cs_same_files(&previous->common, index->idx.common, index->idx.num_common)) {
        cs_scope_share(&store->common.scope, &previous->common.scope);
    } else {
        store->num_read++;
        rc = cs_scope_load(&store->common.scope, path, index->idx.common, index->idx.num_common,
                           previous != NULL ? &previous->common.scope : NULL, NULL, err, err_len);
    }
    store->common.files = index->idx.common;
    store->common.num_files = index->idx.num_common;
    if (rc != 0)
        goto fail;
    cs_build(&store->common, &store->common, previous != NULL ? &previous->common : NULL,
             previous != NULL ? &previous->common : NULL);

    store->tenants = ca_mem_calloc(index->idx.num_tenants, sizeof(*store->tenants));
    cs_table_init(store, index->idx.num_tenants);
    for (size_t i = 0; i < index->idx.num_tenants; i++)
        cs_load_tenant(store, &err_cap, &index->idx.tenants[i], previous, changes);
    *out = store;
    store = NULL;
fail:
    ca_store_unref(store);
    cs_index_unref(index);
    free(data);
    free(path);
    return rc;
}

void ca_store_ref(struct ca_store *store)
{
    atomic_fetch_add_explicit(&store->refs, 1, memory_order_relaxed);
}

void ca_store_unref(struct ca_store *store)
{
    if (store == NULL || atomic_fetch_sub_explicit(&store->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < store->num_tenants; i++)
        cs_tenant_cleanup(&store->tenants[i]);
    cs_tenant_cleanup(&store->common);
    for (size_t i = 0; i < store->num_errors; i++) {
        free(store->errors[i].tenant_id);
        free(store->errors[i].message);
    }
    free(store->errors);
    free(store->tenants);
    free(store->slots);
    free(store->dir);
    cs_index_unref(store->index);
    free(store);
}

size_t ca_store_num_read(const struct ca_store *store)
{
    return store->num_read;
}

const struct ca_tenant *ca_store_tenant(const struct ca_store *store, const char *id, size_t len)
{
    if (store == NULL || store->num_tenants == 0)
        return NULL;
    uint32_t v = store->slots[cs_find(store, id, len)];
    return v != 0 ? &store->tenants[v - 1] : NULL;
}

const char *ca_store_tenant_id(const struct ca_tenant *tenant)
{
    return tenant->id;
}

X509_STORE *ca_store_trust(const struct ca_store *store, const struct ca_tenant *tenant)
{
    /* The snapshot is logically immutable; the store is built once, and a thread that loses the
     * race frees its copy. */
    struct ca_tenant *t = (struct ca_tenant *)(tenant != NULL ? tenant : &store->common);
    X509_STORE *trust = atomic_load_explicit(&t->trust, memory_order_acquire);
    if (trust != NULL)
        return trust;
    X509_STORE *fresh = cs_trust_new(store, t);
    if (atomic_compare_exchange_strong_explicit(&t->trust, &trust, fresh, memory_order_acq_rel,
                                                memory_order_acquire))
        return fresh;
    X509_STORE_free(fresh);
    return trust;
}

void ca_store_trust_hash(const struct ca_store *store, const struct ca_tenant *tenant,
                         uint8_t out[32])
{
    memcpy(out, tenant != NULL ? tenant->trust_hash : store->common.trust_hash, 32);
}

size_t ca_store_num_tenants(const struct ca_store *store)
{
    return store->num_tenants;
}

size_t ca_store_num_errors(const struct ca_store *store)
{
    return store->num_errors;
}

const char *ca_store_error(const struct ca_store *store, size_t i, const char **out_tenant_id)
{
    if (i >= store->num_errors)
        return NULL;
    if (out_tenant_id != NULL)
        *out_tenant_id = store->errors[i].tenant_id;
    return store->errors[i].message;
}

const struct ca_tenant *ca_store_tenant_at(const struct ca_store *store, size_t i)
{
    return i < store->num_tenants ? &store->tenants[i] : NULL;
}

const STACK_OF(X509) *ca_store_cas(const struct ca_store *store, const struct ca_tenant *tenant)
{
    return tenant != NULL ? tenant->scope.certs : store->common.scope.certs;
}

int ca_store_read_file(const char *path, uint8_t **out, size_t *out_len, char *err, size_t err_len)
{
    return ca_file_read(path, out, out_len, err, err_len);
}
