/* ca_store.h: the CA store of CONTRACT section 4 (The Things Stack's index.yml layout) loaded
 * into an immutable, reference-counted snapshot: per tenant a trust set = common + tenant, with
 * the CRLs found in the bundles. This library never includes anything from proxy/. */
#ifndef CERTGATE_CA_STORE_H
#define CERTGATE_CA_STORE_H

#include <openssl/is_boringssl.h>
#include <openssl/base.h>
#if !defined(OPENSSL_IS_BORINGSSL)
#error "certgate must be built against BoringSSL (android-libboringssl-dev)"
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/x509.h>

struct ca_store;
struct ca_tenant;

/* ca_store_read_file reads the regular file |path| (at most 16 MiB) until two reads give the
 * same bytes (a writer may be half-way through it) and sets |*out| (malloc'd, the caller frees
 * it) and |*out_len|. Returns 0, or a negative errno with "PATH: what" in |err|; a FIFO, socket
 * or device is -EISDIR ("PATH: a FIFO, not a regular file"), never a blocking read. The store
 * uses it for its bundles; the proxy uses it for its credentials. */
int ca_store_read_file(const char *path, uint8_t **out, size_t *out_len, char *err,
                       size_t err_len);

/* ca_store_load reads |dir|/index.yml and every bundle it lists. On success it returns 0 and
 * sets |*out| with one reference. A tenant whose files are missing or malformed is left out of
 * the snapshot and its error recorded (ca_store_num_errors); when |previous| is non-NULL such
 * a tenant keeps its bundle from |previous| instead. A missing or unparsable index.yml, or a
 * broken common bundle, fails the whole load: -EINVAL (or -errno) with "FILE:LINE:COL: what" in
 * |err|. An empty index.yml is a valid, empty store. */
int ca_store_load(struct ca_store **out, const char *dir, const struct ca_store *previous,
                  char *err, size_t err_len);

/* What changed in the CA store directory since the snapshot passed as |previous| was loaded, as a
 * caller that watches the files knows it: |common| is true when anything outside tenants/<id>/
 * may have changed (index.yml, common/); |tenant_changed(ctx, id)| returns true when
 * tenants/<id>/ may have changed, or is not known to be unchanged. */
struct ca_store_changes {
    bool common;
    bool (*tenant_changed)(void *ctx, const char *id);
    void *ctx;
};

/* ca_store_load_changes is ca_store_load with a hint: a tenant that |changes| reports unchanged,
 * that loaded cleanly into |previous| from the same list of files and whose entry in index.yml is
 * the same, takes its bundle from |previous| without reading its files. Every other tenant, and
 * common, load as in ca_store_load (read until two reads agree). |changes| NULL, or |previous|
 * NULL or of another directory, is ca_store_load. The caller vouches for the hint: a tenant it
 * wrongly reports unchanged keeps its previous bundle until the next load that reads it. */
int ca_store_load_changes(struct ca_store **out, const char *dir, const struct ca_store *previous,
                          const struct ca_store_changes *changes, char *err, size_t err_len);

/* ca_store_hint_next_load makes the next ca_store_load on the calling thread behave as
 * ca_store_load_changes with |changes| (copied; NULL clears the hint). The hint is used once:
 * that load clears it, whatever its result. For callers that reach ca_store_load through
 * another module. */
void ca_store_hint_next_load(const struct ca_store_changes *changes);

/* ca_store_num_read returns the number of tenants (plus 1 for common) whose files the load that
 * made |store| actually read, as opposed to took unchanged from the previous snapshot. */
size_t ca_store_num_read(const struct ca_store *store);

/* ca_store_ref adds a reference (thread-safe). */
void ca_store_ref(struct ca_store *store);

/* ca_store_unref drops a reference and frees the snapshot with the last one; NULL is a no-op. */
void ca_store_unref(struct ca_store *store);

/* ca_store_tenant finds a tenant by id (|len| bytes, compared exactly; callers lowercase) in
 * O(1). Returns NULL when unknown. The pointer lives as long as the store. */
const struct ca_tenant *ca_store_tenant(const struct ca_store *store, const char *id, size_t len);

/* ca_store_tenant_id returns the tenant's id. */
const char *ca_store_tenant_id(const struct ca_tenant *tenant);

/* ca_store_trust returns the X509_STORE of the trust set common + |tenant| (|tenant| NULL: common
 * only), with X509_V_FLAG_PARTIAL_CHAIN set so that every certificate in it is an anchor.
 * Borrowed: valid as long as the store. CRLs are not loaded into it; see ca_store_check_crl. */
X509_STORE *ca_store_trust(const struct ca_store *store, const struct ca_tenant *tenant);

/* ca_store_trust_hash writes the SHA-256 of the trust set's content (certificates and CRLs of
 * common + |tenant|) into |out|, for session scoping. */
void ca_store_trust_hash(const struct ca_store *store, const struct ca_tenant *tenant,
                         uint8_t out[32]);

/* ca_store_check_crl checks every certificate of |chain| (as verified, leaf first) against the
 * CRLs of the trust set common + |tenant|. Returns 0 when none is revoked, -EACCES with the
 * revoked certificate's index in |*out_index| when one is, and -EPROTO with that index when a
 * CRL for its issuer cannot be used (signed by a CA whose keyUsage lacks cRLSign, which the load
 * refuses when that CA is in the store; here when only the chain holds it): refuse, never take
 * it for "not revoked". A CRL past its nextUpdate still applies; |*out_stale| (may be NULL) is
 * set to true when one of the CRLs consulted is stale. A CRL that is not complete evidence
 * (ca_crl_check) or that a CA of its bundle's trust set without cRLSign signed fails its bundle's
 * load. */
int ca_store_check_crl(const struct ca_store *store, const struct ca_tenant *tenant,
                       STACK_OF(X509) *chain, size_t *out_index, bool *out_stale);

/* ca_store_crl_next_update returns the earliest nextUpdate (Unix time) of the CRLs of the trust
 * set common + |tenant|, INT64_MAX when none has one: a verification result that consulted
 * them holds until then. */
int64_t ca_store_crl_next_update(const struct ca_store *store, const struct ca_tenant *tenant);

/* ca_store_num_tenants returns the number of tenants loaded. */
size_t ca_store_num_tenants(const struct ca_store *store);

/* ca_store_tenant_at returns the i-th tenant (0 <= i < ca_store_num_tenants), or NULL. */
const struct ca_tenant *ca_store_tenant_at(const struct ca_store *store, size_t i);

/* ca_store_cas returns the CA certificates of |tenant|'s own bundle (NULL: the common bundle).
 * Borrowed: valid as long as the store. */
const STACK_OF(X509) *ca_store_cas(const struct ca_store *store, const struct ca_tenant *tenant);

/* ca_store_num_errors returns the number of tenants that failed to load;
 * ca_store_error(store, i, &tenant_id) returns the i-th message ("FILE:LINE: what"). */
size_t ca_store_num_errors(const struct ca_store *store);
const char *ca_store_error(const struct ca_store *store, size_t i, const char **out_tenant_id);

/* ca_store_describe prints a human summary (tenants, CA subjects, expiries, errors) to |out|,
 * as `certgate check` shows it. */
void ca_store_describe(const struct ca_store *store, FILE *out);

#endif
