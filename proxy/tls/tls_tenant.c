/* tls_tenant.c: the tenant of a connection: chosen from the SNI in the ClientHello (CONTRACT 6),
 * checked against the Host of every request (the 421 rule), and verified again under a newer
 * generation. */
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
#include "http/tenancy.h"
#include "tls/tls_verify.h"

#include "tls/tls_internal.h"

/* --- tenancy ------------------------------------------------------------------------------- */

/* The first host_name of the server_name extension, or false when there is none. */
static bool client_hello_sni(const SSL_CLIENT_HELLO *hello, char *out, size_t out_len)
{
    const uint8_t *data = NULL;
    size_t len = 0;
    if (!SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_server_name, &data, &len))
        return false;
    CBS ext, list, name;
    uint8_t type;
    CBS_init(&ext, data, len);
    if (!CBS_get_u16_length_prefixed(&ext, &list) || CBS_len(&ext) != 0)
        return false;
    while (CBS_len(&list) > 0) {
        if (!CBS_get_u8(&list, &type) || !CBS_get_u16_length_prefixed(&list, &name))
            return false;
        if (type != TLSEXT_NAMETYPE_host_name)
            continue;
        if (CBS_len(&name) == 0 || CBS_len(&name) >= out_len ||
            memchr(CBS_data(&name), 0, CBS_len(&name)) != NULL)
            return false;
        memcpy(out, CBS_data(&name), CBS_len(&name));
        out[CBS_len(&name)] = '\0';
        return true;
    }
    return false;
}

/* Picks the connection's tenant from its SNI before anything else happens, and scopes session
 * resumption to that tenant's trust set (SECURITY 1-3). */
enum ssl_select_cert_result_t tls_select_tenant(const SSL_CLIENT_HELLO *hello)
{
    SSL *ssl = hello->ssl;
    struct tls_listener *tl = tls_peer_listener_of(ssl);
    const struct config *cfg = tl->gen->cfg;
    struct tls_peer *pe = tls_peer_of(ssl);
    if (pe == NULL) {
        pe = xcalloc(1, sizeof(*pe));
        tls_peer_set(ssl, pe);
    }
    char raw[TENANCY_MAX_NAME + 1], name[TENANCY_MAX_NAME + 1];
    bool has_sni = client_hello_sni(hello, raw, sizeof(raw)) &&
                   tenancy_normalize(name, raw, strlen(raw), false) && !tenancy_is_ip_literal(name);
    char reason[400];
    if (!has_sni) {
        if (cfg->tenancy_no_sni == TENANCY_REJECT) {
            tls_peer_log_refusal(ssl, "policy", "the client sent no SNI (tenancy.no_sni: reject)",
                                   NULL);
            return ssl_select_cert_error;
        }
    } else if (tenancy_match(cfg->tenancy_sni, name, pe->id)) {
        pe->tenant = tl->gen->store ? ca_store_tenant(tl->gen->store, pe->id, strlen(pe->id))
                                    : NULL;
    }
    if (has_sni && pe->tenant == NULL && cfg->tenancy_unknown == TENANCY_REJECT) {
        snprintf(reason, sizeof(reason), "SNI %s names no known tenant (tenancy.unknown: reject)",
                 name);
        tls_peer_log_refusal(ssl, "policy", reason, NULL);
        return ssl_select_cert_error;
    }
    /* Sessions resume only into the same tenant and trust set. */
    uint8_t trust[32] = {0}, sid[SHA256_DIGEST_LENGTH];
    if (tl->gen->store != NULL)
        ca_store_trust_hash(tl->gen->store, pe->tenant, trust);
    SHA256_CTX sha;
    SHA256_Init(&sha);
    SHA256_Update(&sha, tl->sid_ctx, sizeof(tl->sid_ctx));
    SHA256_Update(&sha, trust, sizeof(trust));
    SHA256_Update(&sha, pe->id, strlen(pe->id) + 1);
    SHA256_Final(sid, &sha);
    SSL_set_session_id_context(ssl, sid, SSL_MAX_SID_CTX_LENGTH);
    return ssl_select_cert_success;
}

bool tls_host_allowed(struct tls_gen *gen, size_t index, struct ssl_st *ssl, const char *host,
                      size_t host_len)
{
    const struct config *cfg = gen->cfg;
    const struct listener_config *lc = gen->listeners[index].lc;
    char name[TENANCY_MAX_NAME + 1];
    bool has_host = host != NULL && tenancy_normalize(name, host, host_len, true);
    if (cfg->tenancy_sni != NULL) {
        struct tls_peer *pe = tls_peer_of(ssl);
        char id[TENANCY_MAX_ID + 1] = "";
        if (has_host && !tenancy_match(cfg->tenancy_sni, name, id))
            id[0] = '\0';
        return strcmp(id, pe ? pe->id : "") == 0;
    }
    /* Without tenancy, a Host that differs from a present SNI is refused where client
     * certificates are verified (CONTRACT 6). */
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (sni == NULL || lc->client_auth == CLIENT_AUTH_NONE || !lc->verify)
        return true;
    char sni_name[TENANCY_MAX_NAME + 1];
    if (!tenancy_normalize(sni_name, sni, strlen(sni), false) || tenancy_is_ip_literal(sni_name))
        return true;
    return has_host && strcmp(name, sni_name) == 0;
}

bool tls_reverify(struct tls_gen *gen, size_t index, struct ssl_st *ssl)
{
    struct tls_listener *tl = &gen->listeners[index];
    if (tl->ctx == NULL || tl->lc->client_auth == CLIENT_AUTH_NONE)
        return true;
    struct tls_peer *pe = tls_peer_of(ssl);
    const struct ca_tenant *tenant = NULL;
    if (pe != NULL && pe->id[0] != '\0') {
        tenant = gen->store ? ca_store_tenant(gen->store, pe->id, strlen(pe->id)) : NULL;
        if (tenant == NULL && gen->cfg->tenancy_unknown == TENANCY_REJECT) {
            tls_peer_log_refusal(ssl, "policy",
                                   "the connection's tenant is gone from the CA store", NULL);
            return false;
        }
    }
    STACK_OF(X509) *peer = tls_peer_chain(ssl);
    uint8_t alert = 0;
    bool ok = tls_verify_chain(ssl, tl, tenant, peer, &alert, NULL, NULL) == ssl_verify_ok;
    sk_X509_pop_free(peer, X509_free);
    return ok;
}

uint64_t tls_gen_id(const struct tls_gen *gen)
{
    return gen->id;
}

size_t tls_gen_store_errors(const struct tls_gen *gen)
{
    return gen->store ? ca_store_num_errors(gen->store) : 0;
}

const char *tls_tenant(struct ssl_st *ssl)
{
    /* An SNI that names a tenant the store does not know is served by the common trust set
     * (tenancy.unknown: common): no tenant served it. */
    struct tls_peer *pe = tls_peer_of(ssl);
    return pe != NULL && pe->tenant != NULL && pe->id[0] != '\0' ? pe->id : NULL;
}
