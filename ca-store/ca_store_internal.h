/* ca_store_internal.h: the snapshot's structures, shared by ca_store.c (loading) and
 * ca_store_check.c (CRL checks, descriptions, CRL dates). Only they include it. */
#ifndef CA_STORE_INTERNAL_H
#define CA_STORE_INTERNAL_H

#include <openssl/is_boringssl.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/sha.h>
#include <openssl/x509.h>

#include "ca_index.h"
#include "ca_store.h"

/* Memoised result of looking for a CRL's signer among the trust set's certificates. */
enum crl_state {
    CRL_UNKNOWN = 0, /* not looked at yet */
    CRL_SIGNED,      /* a certificate of the trust set with the issuer's name verifies it */
    CRL_UNSIGNED,    /* none does; only the next certificate of a chain may */
    CRL_UNUSABLE,    /* only certificates whose keyUsage lacks cRLSign verify it */
};

/* The objects of common or of one tenant, in file order. */
struct ca_scope {
    STACK_OF(X509) * certs;
    STACK_OF(X509_CRL) * crls;
    atomic_size_t *refs;      /* of certs and crls, shared by consecutive snapshots */
    atomic_uchar *crl_state;  /* enum crl_state per CRL, filled lazily by any thread */
    uint8_t content_hash[32]; /* of the objects' DER, for the trust hash */
    uint8_t source_hash[32];  /* of the file names and bytes, to reuse unchanged scopes */
};

struct ca_tenant {
    const char *id; /* "" for common; in the store's index */
    size_t id_len;
    struct ca_scope scope;
    _Atomic(X509_STORE *) trust; /* common + scope; NULL until first used */
    uint8_t trust_hash[32];
    bool from_previous; /* this load failed; the bundle is the previous snapshot's */
    const struct ca_index_file *files; /* the list it loaded from, in the store's index; NULL */
    size_t num_files;                  /* when from_previous: reuse needs the same list */
};

/* A parsed index.yml, shared by consecutive snapshots while its bytes stay the same. */
struct cs_index {
    atomic_size_t refs;
    struct ca_index idx;
    uint8_t hash[32]; /* SHA-256 of the file's bytes */
};

struct ca_error {
    char *tenant_id;
    char *message;
};

struct ca_store {
    atomic_size_t refs;
    char *dir;
    struct ca_tenant common;
    struct ca_tenant *tenants;
    size_t num_tenants;
    uint32_t *slots; /* open addressing, linear probing: tenant index + 1, 0 when empty */
    size_t mask;
    uint64_t hash_key[2];
    struct ca_error *errors;
    size_t num_errors;
    struct cs_index *index;
    size_t num_read; /* tenants (and common) whose files this load read */
};
/* ca_store_crl_verifies tells whether |crl| carries a valid signature by |signer|'s key. */
bool ca_store_crl_verifies(X509_CRL *crl, X509 *signer);

#endif
