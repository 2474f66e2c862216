/* metrics.h: the counters of CONTRACT section 7, kept as relaxed atomics so that workers never
 * take a lock to count, and rendered in the Prometheus text format by the admin API. */
#ifndef CERTGATE_METRICS_H
#define CERTGATE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"

enum metrics_handshake {
    METRICS_HS_OK,        /* full handshake accepted */
    METRICS_HS_RESUMED,   /* resumed session accepted */
    METRICS_HS_NO_CERT,   /* required certificate missing */
    METRICS_HS_UNTRUSTED, /* no chain to an anchor of the trust set */
    METRICS_HS_EXPIRED,   /* expired or not yet valid */
    METRICS_HS_REVOKED,   /* revoked by a CRL or OCSP */
    METRICS_HS_POLICY,    /* EKU, key size, signature, CN pattern, allowlist, tenant */
    METRICS_HS_ERROR,     /* anything else (protocol, timeout, reset) */
    METRICS_HS_NUM,
};

enum metrics_upstream {
    METRICS_UP_CONNECT,  /* refused or connect timeout (503) */
    METRICS_UP_TIMEOUT,  /* response timeout (504) */
    METRICS_UP_RESET,    /* reset or closed early (502) */
    METRICS_UP_FRAMING,  /* bad response framing (502) */
    METRICS_UP_NUM,
};

/* metrics_init sizes the per-listener counters for |cfg|'s listeners (called once). */
void metrics_init(const struct config *cfg);

/* Counting; |listener| is the index into cfg->listeners. All are thread-safe and lock-free. */
void metrics_conn_open(size_t listener);
void metrics_conn_close(size_t listener);
void metrics_handshake(size_t listener, enum metrics_handshake result);
void metrics_request(size_t listener, int status, uint64_t duration_us);
void metrics_bytes(size_t listener, uint64_t from_client, uint64_t to_client);
void metrics_upstream_error(size_t listener, enum metrics_upstream kind);
/* metrics_proxy_protocol_error counts a connection closed for a missing, malformed or late
 * PROXY protocol header (accept_proxy_protocol). */
void metrics_proxy_protocol_error(size_t listener);
void metrics_reload(const char *source, bool ok);
void metrics_crl_stale(void);

enum metrics_ocsp {
    METRICS_OCSP_GOOD,    /* the responder says good */
    METRICS_OCSP_REVOKED, /* the responder says revoked */
    METRICS_OCSP_UNKNOWN, /* the responder does not know the certificate */
    METRICS_OCSP_FAILED,  /* no usable answer: unreachable, timeout, bad signature, stale */
    METRICS_OCSP_NUM,
};

/* metrics_ocsp counts one OCSP query by its outcome (answers from the cache are not queries). */
void metrics_ocsp(enum metrics_ocsp result);

/* metrics_label appends |value| as a quoted Prometheus label value, escaping backslash, double
 * quote and newline as the text format wants. */
void metrics_label(struct buf *out, const char *value);

/* metrics_render appends every counter above in the Prometheus text format 0.0.4, each family
 * with its HELP and TYPE lines, then certgate_build_info and the standard process_* metrics
 * (CPU, resident memory, open and maximum descriptors, start time). The generation's
 * certificate gauges come from tls_gen_metrics. */
void metrics_render(struct buf *out);

/* metrics_reload_count returns certgate_reload_total for |source| and |ok| (0 when unknown). */
uint64_t metrics_reload_count(const char *source, bool ok);

/* metrics_free releases what metrics_init allocated (for tests and a clean exit); metrics_init
 * may be called again afterwards, which also zeroes the process-wide counters. */
void metrics_free(void);

#endif
