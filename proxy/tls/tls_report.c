/* tls_report.c: a generation as an operator needs to hear about it (tls_report.h). Read-only
 * over a built generation; runs on the main loop (start, reload) or in `certgate check`. */
#include "tls/tls_report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/mem.h>
#include <openssl/sha.h>

#include "core/base.h"
#include "core/log.h"
#include "core/metrics.h"
#include "tls/tls_peer.h"

static void utc_string(int64_t t, char *out, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

enum tls_expiry tls_report_expiry(const struct tls_gen *gen, int64_t now, uint64_t warn_ms,
                                  char *msg, size_t len)
{
    msg[0] = '\0';
    if (gen == NULL || gen->leaf == NULL)
        return TLS_EXPIRY_NONE;
    int64_t not_before = tls_peer_asn1_unix(X509_get0_notBefore(gen->leaf));
    int64_t not_after = tls_peer_asn1_unix(X509_get0_notAfter(gen->leaf));
    char *subject = tls_peer_name_rfc2253(X509_get_subject_name(gen->leaf));
    char nb[32], na[32];
    utc_string(not_before, nb, sizeof(nb));
    utc_string(not_after, na, sizeof(na));
    enum tls_expiry r = TLS_EXPIRY_OK;
    if (now > not_after) {
        r = TLS_EXPIRY_EXPIRED;
        snprintf(msg, len, "the server certificate %s expired at %s; clients refuse it", subject,
                 na);
    } else if (now < not_before) {
        r = TLS_EXPIRY_NOT_YET_VALID;
        snprintf(msg, len, "the server certificate %s is not valid before %s; clients refuse it",
                 subject, nb);
    } else if ((uint64_t)(not_after - now) * 1000 < warn_ms) {
        r = TLS_EXPIRY_SOON;
        int64_t hours = (not_after - now) / 3600;
        snprintf(msg, len, "the server certificate %s expires at %s, in %lld day%s %lld hour%s",
                 subject, na, (long long)(hours / 24), hours / 24 == 1 ? "" : "s",
                 (long long)(hours % 24), hours % 24 == 1 ? "" : "s");
    }
    free(subject);
    return r;
}

enum tls_expiry tls_report_log_expiry(const struct tls_gen *gen, uint64_t warn_ms)
{
    char msg[1024];
    enum tls_expiry r = tls_report_expiry(gen, (int64_t)time(NULL), warn_ms, msg, sizeof(msg));
    if (r == TLS_EXPIRY_NONE || r == TLS_EXPIRY_OK)
        return r;
    enum log_level level = r == TLS_EXPIRY_SOON ? LOG_LEVEL_WARN : LOG_LEVEL_ERROR;
    if (!log_enabled(level))
        return r;
    const char *event = r == TLS_EXPIRY_SOON      ? "credentials_expiring"
                        : r == TLS_EXPIRY_EXPIRED ? "credentials_expired"
                                                  : "credentials_not_yet_valid";
    char na[32];
    utc_string(tls_peer_asn1_unix(X509_get0_notAfter(gen->leaf)), na, sizeof(na));
    struct buf b = {0};
    log_begin(&b, level, event);
    log_str(&b, "not_after", na);
    log_str(&b, "message", msg);
    log_end(&b);
    return r;
}

/* prev_kept tells whether a tenant that failed to load is still served (from the generation
 * before): only a failure at start leaves it out. */
static bool prev_kept(const struct tls_gen *gen, const char *tenant)
{
    return tenant != NULL && ca_store_tenant(gen->store, tenant, strlen(tenant)) != NULL;
}

size_t tls_report_log_store_errors(const struct tls_gen *gen)
{
    size_t n = gen != NULL && gen->store != NULL ? ca_store_num_errors(gen->store) : 0;
    for (size_t i = 0; i < n && log_enabled(LOG_LEVEL_ERROR); i++) {
        const char *tenant = NULL;
        const char *msg = ca_store_error(gen->store, i, &tenant);
        /* Messages start with the place: "FILE:LINE[:COL]: what" or "FILE: what". */
        const char *sep = strstr(msg, ": ");
        struct buf b = {0};
        log_begin(&b, LOG_LEVEL_ERROR, "tenant_load_failed");
        log_str(&b, "tenant", tenant);
        log_strn(&b, "location", msg, sep != NULL ? (size_t)(sep - msg) : strlen(msg));
        log_str(&b, "error", sep != NULL ? sep + 2 : msg);
        log_str(&b, "message",
                gen->store != NULL && prev_kept(gen, tenant)
                    ? "serving the tenant's previous bundle"
                    : "not loaded: the tenant has no bundle of its own");
        log_end(&b);
    }
    return n;
}

/* own_hash is the SHA-256 of a tenant's own CA certificates (not common's): what the operator
 * changed in tenants/<id>/, whatever happened to common. */
static void own_hash(const struct ca_store *store, const struct ca_tenant *t, uint8_t out[32])
{
    SHA256_CTX sha;
    SHA256_Init(&sha);
    const STACK_OF(X509) *cas = ca_store_cas(store, t);
    for (size_t i = 0; cas != NULL && i < sk_X509_num(cas); i++) {
        uint8_t *der = NULL;
        int len = i2d_X509(sk_X509_value(cas, i), &der);
        if (len > 0)
            SHA256_Update(&sha, der, (size_t)len);
        OPENSSL_free(der);
    }
    SHA256_Final(out, &sha);
}

static bool tenant_changed(const struct ca_store *a, const struct ca_tenant *ta,
                           const struct ca_store *b, const struct ca_tenant *tb, bool common)
{
    uint8_t ha[32], hb[32];
    own_hash(a, ta, ha);
    own_hash(b, tb, hb);
    if (memcmp(ha, hb, sizeof(ha)) != 0)
        return true;
    if (common)
        return false; /* the trust set differs because of common, reported once */
    /* Same CAs: a CRL of the tenant may still have changed. */
    ca_store_trust_hash(a, ta, ha);
    ca_store_trust_hash(b, tb, hb);
    return memcmp(ha, hb, sizeof(ha)) != 0;
}

static void id_array(struct buf *out, const char *key, const struct ca_store *a,
                     const struct ca_store *b, int which, bool common)
{
    buf_appendf(out, ",\"%s\":[", key);
    bool first = true;
    size_t n = a != NULL ? ca_store_num_tenants(a) : 0;
    for (size_t i = 0; i < n; i++) {
        const struct ca_tenant *t = ca_store_tenant_at(a, i);
        const char *id = ca_store_tenant_id(t);
        const struct ca_tenant *o = b != NULL ? ca_store_tenant(b, id, strlen(id)) : NULL;
        /* which 0: in a, not in b; 1: in both and changed (a is the new store). */
        if (which == 0 ? o != NULL : (o == NULL || !tenant_changed(b, o, a, t, common)))
            continue;
        if (!first)
            buf_append(out, ",", 1);
        log_json_string(out, id);
        first = false;
    }
    buf_append(out, "]", 1);
}

void tls_report_changes(const struct tls_gen *old, const struct tls_gen *gen, struct buf *out)
{
    buf_appends(out, ",\"credentials\":");
    if (gen->leaf != NULL && (old == NULL || old->leaf == NULL || X509_cmp(old->leaf, gen->leaf))) {
        char *subject = tls_peer_name_rfc2253(X509_get_subject_name(gen->leaf));
        char na[32];
        utc_string(tls_peer_asn1_unix(X509_get0_notAfter(gen->leaf)), na, sizeof(na));
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(gen->leaf), NULL);
        char *serial = bn != NULL ? BN_bn2hex(bn) : NULL;
        buf_appends(out, "{\"subject\":");
        log_json_string(out, subject);
        buf_appends(out, ",\"serial\":");
        log_json_string(out, serial);
        buf_appends(out, ",\"not_after\":");
        log_json_string(out, na);
        buf_appends(out, "}");
        OPENSSL_free(serial);
        BN_free(bn);
        free(subject);
    } else {
        buf_appends(out, "null");
    }
    const struct ca_store *a = old != NULL ? old->store : NULL, *b = gen->store;
    bool common = false;
    if (a != NULL && b != NULL) {
        uint8_t ha[32], hb[32];
        ca_store_trust_hash(a, NULL, ha);
        ca_store_trust_hash(b, NULL, hb);
        common = memcmp(ha, hb, sizeof(ha)) != 0;
    }
    buf_appendf(out, ",\"common_changed\":%s", common ? "true" : "false");
    id_array(out, "tenants_added", b, a, 0, common);
    id_array(out, "tenants_removed", a, b, 0, common);
    id_array(out, "tenants_changed", b, a, 1, common);
    buf_appends(out, ",\"tenants_failed\":[");
    size_t n = b != NULL ? ca_store_num_errors(b) : 0;
    for (size_t i = 0; i < n; i++) {
        const char *tenant = NULL;
        ca_store_error(b, i, &tenant);
        if (i > 0)
            buf_append(out, ",", 1);
        log_json_string(out, tenant);
    }
    buf_append(out, "]", 1);
}

static bool contains(const uint8_t *data, size_t len, const char *needle)
{
    return memmem(data, len, needle, strlen(needle)) != NULL;
}

/* is_der: a DER certificate or key is one ASN.1 SEQUENCE (0x30): with a long-form length, or
 * (a small EC key) a short one that spans the whole file. PEM has "-----BEGIN". */
static bool is_der(const uint8_t *data, size_t len)
{
    if (len < 4 || data[0] != 0x30 || contains(data, len, "-----BEGIN"))
        return false;
    return data[1] == 0x82 || data[1] == 0x81 || (size_t)data[1] + 2 == len;
}

bool tls_report_explain_credentials(char *err, size_t err_len, const char *cert_path,
                                    const uint8_t *cert, size_t cert_len, const char *key_path,
                                    const uint8_t *key, size_t key_len, bool at_key)
{
    bool cert_has_key = contains(cert, cert_len, "PRIVATE KEY-----");
    bool key_has_cert = contains(key, key_len, "-----BEGIN CERTIFICATE-----");
    if (cert_has_key && key_has_cert && !contains(cert, cert_len, "-----BEGIN CERTIFICATE-----")) {
        snprintf(err, err_len,
                 "%s holds a private key and %s a certificate: credentials.cert and "
                 "credentials.key are swapped",
                 cert_path, key_path);
        return true;
    }
    const char *path = at_key ? key_path : cert_path;
    const uint8_t *data = at_key ? key : cert;
    size_t len = at_key ? key_len : cert_len;
    if (is_der(data, len)) {
        snprintf(err, err_len,
                 "%s is DER (binary), certgate reads PEM; convert it with: openssl %s -inform DER "
                 "-in %s -out %s.pem",
                 path, at_key ? "pkey" : "x509", path, path);
        return true;
    }
    if (at_key && (contains(data, len, "ENCRYPTED PRIVATE KEY-----") ||
                   contains(data, len, "Proc-Type: 4,ENCRYPTED"))) {
        snprintf(err, err_len,
                 "%s is an encrypted (passphrase-protected) private key; certgate needs it "
                 "unencrypted: openssl pkey -in %s -out %s.plain (keep it mode 0600), or use "
                 "credentials.pkcs12 with pkcs12_password_file",
                 path, path, path);
        return true;
    }
    if (!at_key && cert_has_key) {
        snprintf(err, err_len, "%s holds a private key, not a certificate (credentials.cert)",
                 path);
        return true;
    }
    if (at_key && key_has_cert) {
        snprintf(err, err_len, "%s holds a certificate, not a private key (credentials.key)", path);
        return true;
    }
    return false;
}

void tls_report_metrics(const struct tls_gen *gen, struct buf *out)
{
    buf_appends(out, "# HELP certgate_crl_next_update_seconds Earliest nextUpdate of the CRLs of "
                     "a trust set (common + tenant).\n"
                     "# TYPE certgate_crl_next_update_seconds gauge\n");
    size_t n = gen->store != NULL ? ca_store_num_tenants(gen->store) : 0;
    for (size_t i = 0; gen->store != NULL && i <= n; i++) {
        const struct ca_tenant *t = i == 0 ? NULL : ca_store_tenant_at(gen->store, i - 1);
        int64_t next = ca_store_crl_next_update(gen->store, t);
        if (next == INT64_MAX)
            continue; /* no CRL, or none with a nextUpdate */
        buf_appends(out, "certgate_crl_next_update_seconds{tenant=");
        metrics_label(out, t != NULL ? ca_store_tenant_id(t) : "");
        buf_appendf(out, "} %lld\n", (long long)next);
    }
}
