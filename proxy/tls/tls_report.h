/* tls_report.h: what a generation means to an operator, as log events and `certgate check`
 * lines: the server certificate's validity against credentials.expiry_warning, the tenants of
 * the CA store that failed to load, and what changed from one generation to the next. */
#ifndef CERTGATE_TLS_REPORT_H
#define CERTGATE_TLS_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

struct tls_gen;

enum tls_expiry {
    TLS_EXPIRY_NONE,          /* no server certificate (only tcp listeners) */
    TLS_EXPIRY_OK,            /* valid, and for longer than the warning period */
    TLS_EXPIRY_SOON,          /* valid, but expires within the warning period */
    TLS_EXPIRY_EXPIRED,       /* past its notAfter */
    TLS_EXPIRY_NOT_YET_VALID, /* before its notBefore */
};

/* tls_report_expiry classifies |gen|'s server certificate at Unix time |now| against a warning
 * period of |warn_ms|, and writes one sentence for a human (subject, dates) into |msg|. */
enum tls_expiry tls_report_expiry(const struct tls_gen *gen, int64_t now, uint64_t warn_ms,
                                  char *msg, size_t len);

/* tls_report_log_expiry logs the classification of tls_report_expiry when it is not OK: an
 * error event credentials_expired or credentials_not_yet_valid, or a warn event
 * credentials_expiring. Returns the classification. */
enum tls_expiry tls_report_log_expiry(const struct tls_gen *gen, uint64_t warn_ms);

/* tls_report_log_store_errors writes one error event tenant_load_failed (tenant, location,
 * error) per tenant of |gen|'s CA store that failed to load. Returns their number. */
size_t tls_report_log_store_errors(const struct tls_gen *gen);

/* tls_report_changes appends to a JSON log line the members ,"credentials":{subject, serial,
 * not_after} (null when unchanged), ,"common_changed":bool and the arrays ,"tenants_added",
 * ,"tenants_removed", ,"tenants_changed", ,"tenants_failed" of tenant ids, from |old| (may be
 * NULL) to |gen|. */
void tls_report_changes(const struct tls_gen *old, const struct tls_gen *gen, struct buf *out);

/* tls_report_metrics appends the gauge certgate_crl_next_update_seconds{tenant}: per trust set
 * ("" for common) that has CRLs, the earliest nextUpdate (Unix time); past it, verification
 * still applies the CRL but counts certgate_crl_stale_total. */
void tls_report_metrics(const struct tls_gen *gen, struct buf *out);

/* tls_report_explain_credentials replaces the message in |err| with what is recognisably wrong
 * with the PEM credentials when the certificate (|at_key| false) or the key (|at_key| true)
 * did not parse: a DER file (with the openssl command that converts it), an encrypted key, or
 * a certificate and key swapped. Returns true when it wrote a message. */
bool tls_report_explain_credentials(char *err, size_t err_len, const char *cert_path,
                                    const uint8_t *cert, size_t cert_len, const char *key_path,
                                    const uint8_t *key, size_t key_len, bool at_key);

#endif
