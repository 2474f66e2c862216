/* tls_revocation.c: OCSP for client leaves. Answers are cached by the SHA-256 of the leaf's DER in
 * a fixed, direct-mapped table shared by the workers (bounded memory, O(1)), until the answer's
 * nextUpdate and never longer than revocation.ocsp_cache_max; a failed query is remembered for
 * a short while too, so that a responder that is down does not make every handshake wait
 * ocsp_timeout. A handshake that needs a query keeps it in the SSL's ex data; freeing the SSL
 * cancels it. */
#include <openssl/is_boringssl.h>
#include <openssl/base.h>

#include "tls/tls_revocation.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/mem.h>
#include <openssl/pool.h>
#include <openssl/sha.h>

#include "core/base.h"
#include "core/log.h"
#include "core/metrics.h"
#include "tls/ocsp_fetch.h"
#include "tls/tls_ocsp.h"

#define CACHE_SLOTS 16384
#define FAILURE_CACHE_S 30 /* how long a failed query is remembered */
#define FRESH_WITHOUT_NEXT_UPDATE_S                                                                \
    300 /* or ocsp_cache_max: the age of an answer without nextUpdate */

enum answer {
    ANSWER_GOOD,
    ANSWER_REVOKED,
    ANSWER_FAILED, /* no usable answer (unreachable, malformed, unsigned, stale, unknown) */
};

struct entry {
    uint8_t key[SHA256_DIGEST_LENGTH];
    int64_t expires; /* unix seconds; 0: empty */
    enum answer answer;
    int64_t revoked_at;
    char why[160];
};

/* One handshake's query. */
struct pending {
    struct ocsp_fetch *fetch; /* NULL once it finished */
    uint8_t key[SHA256_DIGEST_LENGTH];
    X509 *leaf, *issuer;
    uint64_t cache_max_ms;
    bool done;
    struct entry result;
};

static struct entry *cache;
static uv_mutex_t cache_lock;
static int pending_index = -1;
static uv_loop_t *(*hook_loop_of)(void *app);
static void (*hook_resume)(void *app);

static void pending_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                         void *argp)
{
    struct pending *p = ptr;
    if (p == NULL)
        return;
    ocsp_fetch_cancel(p->fetch);
    X509_free(p->leaf);
    X509_free(p->issuer);
    free(p);
}

void tls_revocation_init(void)
{
    if (cache != NULL)
        return;
    cache = xcalloc(CACHE_SLOTS, sizeof(*cache));
    uv_mutex_init(&cache_lock);
    pending_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, pending_free);
}

void tls_revocation_set_hooks(uv_loop_t *(*loop_of)(void *app), void (*resume)(void *app))
{
    hook_loop_of = loop_of;
    hook_resume = resume;
}

static bool leaf_key(SSL *ssl, uint8_t out[SHA256_DIGEST_LENGTH])
{
    const STACK_OF(CRYPTO_BUFFER) *bufs = SSL_get0_peer_certificates(ssl);
    if (bufs == NULL || sk_CRYPTO_BUFFER_num(bufs) == 0)
        return false;
    const CRYPTO_BUFFER *leaf = sk_CRYPTO_BUFFER_value(bufs, 0);
    SHA256(CRYPTO_BUFFER_data(leaf), CRYPTO_BUFFER_len(leaf), out);
    return true;
}

static struct entry *slot(const uint8_t key[SHA256_DIGEST_LENGTH])
{
    uint32_t i;
    memcpy(&i, key, sizeof(i));
    return &cache[i % CACHE_SLOTS];
}

static bool cache_get(const uint8_t key[SHA256_DIGEST_LENGTH], struct entry *out)
{
    uv_mutex_lock(&cache_lock);
    struct entry *e = slot(key);
    bool hit = e->expires > (int64_t)time(NULL) && memcmp(e->key, key, sizeof(e->key)) == 0;
    if (hit)
        *out = *e;
    uv_mutex_unlock(&cache_lock);
    return hit;
}

static void cache_put(const struct entry *e)
{
    if (e->expires <= (int64_t)time(NULL))
        return;
    uv_mutex_lock(&cache_lock);
    *slot(e->key) = *e;
    uv_mutex_unlock(&cache_lock);
}

static bool ocsp_on(const struct tls_listener *tl)
{
    return tl->lc->verify && tl->gen->cfg->revocation_ocsp != OCSP_OFF;
}

static void utc(int64_t t, char *out, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The decision for an answer under the listener's mode. */
static enum ssl_verify_result_t decide(SSL *ssl, const struct tls_listener *tl,
                                       const struct entry *e, uint8_t *out_alert)
{
    char reason[320];
    if (e->answer == ANSWER_GOOD)
        return ssl_verify_ok;
    STACK_OF(X509) *peer = tls_peer_chain(ssl);
    X509 *leaf = peer && sk_X509_num(peer) > 0 ? sk_X509_value(peer, 0) : NULL;
    enum ssl_verify_result_t ret = ssl_verify_invalid;
    if (e->answer == ANSWER_REVOKED) {
        char when[32];
        utc(e->revoked_at, when, sizeof(when));
        snprintf(reason, sizeof(reason), "certificate revoked at %s (OCSP)", when);
        tls_peer_log_refusal(ssl, "revoked", reason, leaf);
        *out_alert = SSL_AD_CERTIFICATE_REVOKED;
    } else if (tl->gen->cfg->revocation_ocsp == OCSP_HARD_FAIL) {
        snprintf(reason, sizeof(reason), "revocation status unknown (OCSP hard_fail): %s",
                 e->why);
        tls_peer_log_refusal(ssl, "policy", reason, leaf);
        *out_alert = SSL_AD_CERTIFICATE_UNKNOWN;
    } else {
        char *subject = leaf ? tls_peer_name_rfc2253(X509_get_subject_name(leaf)) : NULL;
        log_msg(LOG_LEVEL_WARN, "ocsp_soft_fail",
                "listener %s: accepting client %s without a revocation status (soft_fail): %s",
                tl->lc->name, subject ? subject : "?", e->why);
        free(subject);
        ret = ssl_verify_ok;
    }
    sk_X509_pop_free(peer, X509_free);
    return ret;
}

int tls_revocation_resume(SSL *ssl, const struct tls_listener *tl, uint8_t *out_alert)
{
    if (pending_index < 0)
        return -1;
    struct pending *p = SSL_get_ex_data(ssl, pending_index);
    if (p == NULL)
        return -1;
    if (!p->done)
        return ssl_verify_retry;
    struct entry e = p->result;
    SSL_set_ex_data(ssl, pending_index, NULL);
    pending_free(NULL, p, NULL, 0, 0, NULL);
    return decide(ssl, tl, &e, out_alert);
}

int tls_revocation_cached(SSL *ssl, const struct tls_listener *tl, uint8_t *out_alert)
{
    if (!ocsp_on(tl))
        return ssl_verify_ok;
    uint8_t key[SHA256_DIGEST_LENGTH];
    struct entry e;
    if (!leaf_key(ssl, key) || !cache_get(key, &e))
        return -1;
    return decide(ssl, tl, &e, out_alert);
}

static void fetch_done(void *arg, int status, const uint8_t *body, size_t len, const char *why)
{
    SSL *ssl = arg;
    struct pending *p = SSL_get_ex_data(ssl, pending_index);
    if (p == NULL)
        return;
    p->fetch = NULL;
    p->done = true;
    struct entry *e = &p->result;
    memcpy(e->key, p->key, sizeof(e->key));
    int64_t now = (int64_t)time(NULL);
    int64_t max = (int64_t)(p->cache_max_ms / 1000);
    struct tls_ocsp_result r;
    char err[160] = "";
    int rc = status == 0 ? tls_ocsp_check(body, len, p->leaf, p->issuer, now, &r, err,
                                          sizeof(err))
                         : status;
    if (status != 0) {
        snprintf(e->why, sizeof(e->why), "OCSP query failed: %s", why ? why : "error");
        e->answer = ANSWER_FAILED;
        e->expires = now + MIN(max, FAILURE_CACHE_S);
    } else if (rc != 0) {
        snprintf(e->why, sizeof(e->why), "%s", err[0] ? err : "unusable OCSP response");
        e->answer = ANSWER_FAILED;
        e->expires = now + MIN(max, FAILURE_CACHE_S);
    } else {
        e->answer = r.status == TLS_OCSP_GOOD      ? ANSWER_GOOD
                    : r.status == TLS_OCSP_REVOKED ? ANSWER_REVOKED
                                                   : ANSWER_FAILED;
        e->revoked_at = r.revoked_at;
        if (r.status == TLS_OCSP_UNKNOWN)
            snprintf(e->why, sizeof(e->why), "the OCSP responder does not know the certificate");
        e->expires = now + max;
        if (r.next_update > 0)
            e->expires = MIN(e->expires, r.next_update);
        /* Without nextUpdate nothing dates the answer but thisUpdate, and without a nonce an
         * old "good" could be replayed by anyone on the path to the responder. */
        if (r.next_update == 0 && r.this_update < now - MAX(max, FRESH_WITHOUT_NEXT_UPDATE_S)) {
            snprintf(e->why, sizeof(e->why),
                     "OCSP response without nextUpdate is older than ocsp_cache_max");
            e->answer = ANSWER_FAILED;
            rc = -EBADMSG;
            e->expires = now + MIN(max, FAILURE_CACHE_S);
        }
    }
    metrics_ocsp(e->answer == ANSWER_GOOD      ? METRICS_OCSP_GOOD
                 : e->answer == ANSWER_REVOKED ? METRICS_OCSP_REVOKED
                 : rc == 0                     ? METRICS_OCSP_UNKNOWN
                                               : METRICS_OCSP_FAILED);
    cache_put(e);
    if (hook_resume != NULL)
        hook_resume(SSL_get_app_data(ssl));
}

enum ssl_verify_result_t tls_revocation_check(SSL *ssl, const struct tls_listener *tl, X509 *leaf,
                                              X509 *issuer, uint8_t *out_alert)
{
    if (!ocsp_on(tl) || issuer == NULL)
        return ssl_verify_ok;
    struct entry e = {0};
    if (!leaf_key(ssl, e.key))
        return ssl_verify_ok;
    if (cache_get(e.key, &e))
        return decide(ssl, tl, &e, out_alert);
    e.answer = ANSWER_FAILED;
    char *url = tls_ocsp_url(leaf);
    uint8_t *req = NULL;
    size_t req_len = 0;
    uv_loop_t *loop = hook_loop_of ? hook_loop_of(SSL_get_app_data(ssl)) : NULL;
    if (url == NULL) {
        snprintf(e.why, sizeof(e.why), "the certificate names no http:// OCSP responder");
    } else if (loop == NULL) {
        snprintf(e.why, sizeof(e.why), "no event loop to query %s from", url);
    } else if (tls_ocsp_request(leaf, issuer, &req, &req_len) != 0) {
        snprintf(e.why, sizeof(e.why), "cannot build an OCSP request");
    } else {
        struct pending *p = xcalloc(1, sizeof(*p));
        memcpy(p->key, e.key, sizeof(p->key));
        X509_up_ref(leaf);
        X509_up_ref(issuer);
        p->leaf = leaf;
        p->issuer = issuer;
        p->cache_max_ms = tl->gen->cfg->ocsp_cache_max_ms;
        SSL_set_ex_data(ssl, pending_index, p);
        p->fetch = ocsp_fetch_start(loop, url, req, req_len, tl->gen->cfg->ocsp_timeout_ms,
                                    fetch_done, ssl);
        OPENSSL_free(req);
        if (p->fetch != NULL) {
            free(url);
            return ssl_verify_retry;
        }
        SSL_set_ex_data(ssl, pending_index, NULL);
        pending_free(NULL, p, NULL, 0, 0, NULL);
        snprintf(e.why, sizeof(e.why), "the OCSP responder URL %s is not usable", url);
    }
    free(url);
    /* Remembered like a failed query, so that every handshake of this leaf does not verify its
     * chain again only to find the same. */
    int64_t max = (int64_t)(tl->gen->cfg->ocsp_cache_max_ms / 1000);
    e.expires = (int64_t)time(NULL) + MIN(max, FAILURE_CACHE_S);
    cache_put(&e);
    return decide(ssl, tl, &e, out_alert);
}
