/* tls_status.c: what a generation reports: its status as JSON for the admin API and its
 * Prometheus metrics (certificates, expiry, CA store). */
#include <openssl/is_boringssl.h>
#include <openssl/base.h>
#if !defined(OPENSSL_IS_BORINGSSL)
#error "certgate must be built against BoringSSL (android-libboringssl-dev)"
#endif


#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs8.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/hmac.h>
#include <openssl/cipher.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ca_store.h"
#include "core/base.h"
#include "core/log.h"
#include "core/metrics.h"
#include "tls/tls_peer.h"
#include "tls/tls_report.h"

#include "tls/tls_internal.h"

/* --- status and metrics ------------------------------------------------------------------- */

int64_t tls_gen_server_not_after(const struct tls_gen *gen)
{
    return gen->leaf ? tls_peer_asn1_unix(X509_get0_notAfter(gen->leaf)) : 0;
}

void tls_gen_status_json(const struct tls_gen *gen, struct buf *out)
{
    buf_appends(out, "\"credentials\":");
    if (gen->leaf == NULL) {
        buf_appends(out, "null");
    } else {
        char *subject = tls_peer_name_rfc2253(X509_get_subject_name(gen->leaf));
        buf_appends(out, "{\"subject\":");
        log_json_string(out, subject);
        free(subject);
        buf_appends(out, ",\"sans\":[");
        GENERAL_NAMES *names = X509_get_ext_d2i(gen->leaf, NID_subject_alt_name, NULL, NULL);
        bool first = true;
        for (size_t i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
            GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
            char text[300] = "";
            if (gn->type == GEN_DNS || gn->type == GEN_URI) {
                const ASN1_STRING *a = gn->d.ia5;
                snprintf(text, sizeof(text), "%s:%.*s", gn->type == GEN_DNS ? "DNS" : "URI",
                         (int)MIN(ASN1_STRING_length(a), 250), ASN1_STRING_get0_data(a));
            } else if (gn->type == GEN_IPADD) {
                char ip[INET6_ADDRSTRLEN] = "?";
                const ASN1_OCTET_STRING *a = gn->d.ip;
                int len = ASN1_STRING_length(a);
                inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(a), ip, sizeof(ip));
                snprintf(text, sizeof(text), "IP:%s", ip);
            } else {
                continue;
            }
            if (!first)
                buf_append(out, ",", 1);
            first = false;
            log_json_string(out, text);
        }
        GENERAL_NAMES_free(names);
        uint8_t *der = NULL;
        int der_len = i2d_X509(gen->leaf, &der);
        uint8_t md[SHA256_DIGEST_LENGTH];
        SHA256(der, (size_t)MAX(der_len, 0), md);
        OPENSSL_free(der);
        buf_appendf(out, "],\"not_after\":%lld,\"sha256\":\"",
                    (long long)tls_gen_server_not_after(gen));
        for (size_t i = 0; i < sizeof(md); i++)
            buf_appendf(out, "%02x", md[i]);
        buf_appends(out, "\"}");
    }
    buf_appends(out, ",\"tenants\":{");
    if (gen->store != NULL) {
        size_t n = ca_store_num_tenants(gen->store);
        for (size_t i = 0; i <= n; i++) {
            const struct ca_tenant *t = i == 0 ? NULL : ca_store_tenant_at(gen->store, i - 1);
            const char *id = t ? ca_store_tenant_id(t) : "";
            if (i > 0)
                buf_append(out, ",", 1);
            log_json_string(out, id);
            buf_appends(out, ":{\"cas\":[");
            const STACK_OF(X509) *cas = ca_store_cas(gen->store, t);
            for (size_t j = 0; j < sk_X509_num(cas); j++) {
                X509 *x = sk_X509_value(cas, j);
                char *subject = tls_peer_name_rfc2253(X509_get_subject_name(x));
                buf_appends(out, j ? ",{\"subject\":" : "{\"subject\":");
                log_json_string(out, subject);
                free(subject);
                buf_appendf(out, ",\"not_after\":%lld}",
                            (long long)tls_peer_asn1_unix(X509_get0_notAfter(x)));
            }
            buf_appends(out, "],\"error\":");
            const char *error = NULL;
            for (size_t k = 0; k < ca_store_num_errors(gen->store); k++) {
                const char *tid = NULL;
                const char *msg = ca_store_error(gen->store, k, &tid);
                if (tid != NULL && strcmp(tid, id) == 0)
                    error = msg;
            }
            if (error != NULL)
                log_json_string(out, error);
            else
                buf_appends(out, "null");
            buf_append(out, "}", 1);
        }
        /* Tenants that failed to load and have no previous bundle still get their error. */
        for (size_t k = 0; k < ca_store_num_errors(gen->store); k++) {
            const char *tid = NULL;
            const char *msg = ca_store_error(gen->store, k, &tid);
            if (tid == NULL || ca_store_tenant(gen->store, tid, strlen(tid)) != NULL)
                continue;
            buf_append(out, ",", 1);
            log_json_string(out, tid);
            buf_appends(out, ":{\"cas\":[],\"error\":");
            log_json_string(out, msg);
            buf_append(out, "}", 1);
        }
    }
    buf_append(out, "}", 1);
}

void tls_gen_metrics(const struct tls_gen *gen, struct buf *out)
{
    buf_appends(out,
                "# HELP certgate_certificate_not_after_seconds notAfter of loaded certificates.\n"
                "# TYPE certgate_certificate_not_after_seconds gauge\n");
    if (gen->leaf != NULL)
        buf_appendf(out,
                    "certgate_certificate_not_after_seconds{kind=\"server\",tenant=\"\"} %lld\n",
                    (long long)tls_gen_server_not_after(gen));
    if (gen->store != NULL) {
        size_t n = ca_store_num_tenants(gen->store);
        for (size_t i = 0; i <= n; i++) {
            const struct ca_tenant *t = i == 0 ? NULL : ca_store_tenant_at(gen->store, i - 1);
            const STACK_OF(X509) *cas = ca_store_cas(gen->store, t);
            int64_t first = INT64_MAX;
            for (size_t j = 0; j < sk_X509_num(cas); j++)
                first = MIN(first, tls_peer_asn1_unix(X509_get0_notAfter(sk_X509_value(cas, j))));
            if (first != INT64_MAX)
                buf_appendf(
                    out, "certgate_certificate_not_after_seconds{kind=\"ca\",tenant=\"%s\"} %lld\n",
                    t ? ca_store_tenant_id(t) : "", (long long)first);
        }
    }
    buf_appends(out, "# HELP certgate_tenant_load_errors Tenants whose CA bundle failed to load.\n"
                     "# TYPE certgate_tenant_load_errors gauge\n");
    for (size_t k = 0; gen->store != NULL && k < ca_store_num_errors(gen->store); k++) {
        const char *tid = NULL;
        ca_store_error(gen->store, k, &tid);
        tid = tid ? tid : "";
        bool seen = false;
        for (size_t j = 0; j < k && !seen; j++) {
            const char *other = NULL;
            ca_store_error(gen->store, j, &other);
            seen = other != NULL && strcmp(other, tid) == 0;
        }
        if (seen)
            continue;
        /* A broken index may name a tenant anything: escape it as a label value. */
        buf_appends(out, "certgate_tenant_load_errors{tenant=");
        metrics_label(out, tid);
        buf_appends(out, "} 1\n");
    }
    tls_report_metrics(gen, out);
}
