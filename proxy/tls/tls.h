/* tls.h: BoringSSL behind a small interface. A generation (struct tls_gen) holds everything
 * built from files: the server credentials, the CA store snapshot and one SSL_CTX per
 * listener. Connections keep the generation they started with by reference. Only tls.c,
 * tls_verify.c, xfcc.c and ca-store/ include <openssl/...>; other modules see struct ssl_st as
 * opaque. */
#ifndef CERTGATE_TLS_H
#define CERTGATE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include <uv.h>

#include "core/buf.h"
#include "core/config.h"

struct ssl_st;
struct tls_gen;

/* tls_io results besides a byte count. */
#define TLS_WANT_READ (-1)  /* wait until the socket is readable */
#define TLS_WANT_WRITE (-2) /* wait until the socket is writable */
#define TLS_EOF (-3)        /* the peer closed (close_notify or TCP EOF) */
#define TLS_ERROR (-4)      /* fatal; the connection must be closed */
#define TLS_WANT_VERIFY (-5) /* handshake: an OCSP query runs; tls_set_async_hooks resumes it */

/* tls_library names the TLS library in use, for `certgate version`. */
const char *tls_library(void);

/* tls_gen_new loads credentials and the CA store named by |cfg| and builds one SSL_CTX per TLS
 * listener. |prev| (may be NULL) is the generation in use: a tenant that fails to load keeps
 * its bundle from it. Returns 0 and one reference in |*out|, or a negative errno with a message
 * naming the file in |err|. */
int tls_gen_new(struct tls_gen **out, const struct config *cfg, const struct tls_gen *prev,
                char *err, size_t err_len);

/* tls_gen_status_json appends the members "credentials":{...},"tenants":{...} (no enclosing
 * braces) for GET /status: the server certificate's subject, SANs, not_after, sha256; per
 * tenant ("" for common) its CA subjects with not_after and its load error or null. */
void tls_gen_status_json(const struct tls_gen *gen, struct buf *out);

/* tls_gen_metrics appends the Prometheus lines of certgate_certificate_not_after_seconds and
 * certgate_tenant_load_errors for this generation. */
void tls_gen_metrics(const struct tls_gen *gen, struct buf *out);

/* tls_gen_server_not_after returns the server certificate's notAfter as Unix time, 0 if none. */
int64_t tls_gen_server_not_after(const struct tls_gen *gen);

/* tls_gen_ref / tls_gen_unref manage the generation's atomic reference count; unref of the
 * last reference frees it; NULL is a no-op. */
void tls_gen_ref(struct tls_gen *gen);
void tls_gen_unref(struct tls_gen *gen);

/* tls_gen_describe prints the credentials and CA store summary for `certgate check`. */
void tls_gen_describe(const struct tls_gen *gen, const struct config *cfg);

/* tls_check_anchors prints to stderr one "warning: FILE:LINE: ..." line per certificate of the
 * CA store's bundles that cannot issue client certificates (not a CA, no keyCertSign, an
 * unsupported critical extension...), for `certgate check`; returns how many. */
size_t tls_check_anchors(const struct config *cfg);

/* tls_new_ssl makes a server SSL for listener |index| on socket |fd| accepted from |peer| (may
 * be NULL), which refusal logs name. Returns NULL only for a listener without TLS. */
struct ssl_st *tls_new_ssl(struct tls_gen *gen, size_t index, int fd, void *app,
                           const struct sockaddr *peer, socklen_t peer_len);

/* tls_thread_cleanup frees what the calling thread cached (its verified-chain cache); worker
 * threads call it before they end. */
void tls_thread_cleanup(void);

/* tls_check_resumed checks a resumed session once its handshake is done, as a full handshake
 * is in the verify callback: its chain still valid now under the connection's trust set and
 * CRLs (SECURITY 22), then revocation.ocsp. 1 to go on, 0 to close (the refusal was logged and
 * counted), or TLS_WANT_VERIFY while an OCSP query runs (call again after the resume hook). */
int tls_check_resumed(struct ssl_st *ssl);

/* tls_set_async_hooks tells the verifier how to find the loop a connection runs on (|loop_of|,
 * given the app pointer of tls_new_ssl) and how to continue its handshake after an OCSP query
 * (|resume|, called on that loop). Call once before the workers start. */
void tls_set_async_hooks(uv_loop_t *(*loop_of)(void *app), void (*resume)(void *app));

/* tls_free frees an SSL (cancelling its OCSP query, if any); NULL is a no-op. */
void tls_free(struct ssl_st *ssl);

/* tls_handshake advances the handshake: 1 when done, or TLS_WANT_READ, TLS_WANT_WRITE,
 * TLS_WANT_VERIFY (call again after the resume hook ran), TLS_ERROR. On TLS_ERROR the reason has
 * been logged. */
int tls_handshake(struct ssl_st *ssl);

/* tls_read reads up to |len| decrypted bytes: a count > 0, or TLS_WANT_*, TLS_EOF, TLS_ERROR. */
int tls_read(struct ssl_st *ssl, char *out, size_t len);

/* tls_pending tells whether bytes (decrypted or not) are buffered inside the SSL. */
bool tls_pending(struct ssl_st *ssl);

/* tls_write writes up to |len| bytes: a count > 0, or TLS_WANT_*, TLS_ERROR. */
int tls_write(struct ssl_st *ssl, const char *data, size_t len);

/* tls_flush sends records BoringSSL queued without application data (session tickets): 0, or
 * TLS_WANT_WRITE / TLS_WANT_READ to try again when the socket allows, or TLS_ERROR. */
int tls_flush(struct ssl_st *ssl);

/* tls_shutdown sends close_notify (best effort, never blocks). */
void tls_shutdown(struct ssl_st *ssl);

/* tls_version returns "TLSv1.3", "TLSv1.2", ... */
const char *tls_version(struct ssl_st *ssl);

/* tls_sni returns the SNI the client sent, or NULL. */
const char *tls_sni(struct ssl_st *ssl);

/* tls_alpn_h2 tells whether the client is to be spoken HTTP/2 to: ALPN chose h2, or the client
 * sent no ALPN to a listener that offers only h2. */
bool tls_alpn_h2(struct ssl_st *ssl);

/* tls_resumed tells whether the handshake resumed a session. */
bool tls_resumed(struct ssl_st *ssl);

/* tls_peer_allowed reports whether the client's leaf certificate (from the handshake, or the
 * session it resumed) has a subject in the allowlist; false without a certificate. */
bool tls_peer_allowed(struct ssl_st *ssl);

/* tls_peer_subject returns the client leaf's RFC 2253 subject (caller frees), or NULL when
 * the client sent no certificate. */
char *tls_peer_subject(struct ssl_st *ssl);

/* tls_host_allowed tells whether a request's Host (|host_len| bytes, NULL when absent) names
 * the same tenant as the connection's SNI (with tenancy), or the SNI itself (without tenancy,
 * on listeners that verify client certificates). false means 421 (SECURITY 1). */
bool tls_host_allowed(struct tls_gen *gen, size_t index, struct ssl_st *ssl, const char *host,
                      size_t host_len);

/* tls_reverify checks an established connection's client again under generation |gen| (after
 * a reload changed the CA store, CRLs or policy): true when it still verifies. A refusal is
 * logged. One full chain verification: callers cache the answer per generation. */
bool tls_reverify(struct tls_gen *gen, size_t index, struct ssl_st *ssl);

/* tls_gen_id returns the generation's number; a newer generation has a larger one. */
uint64_t tls_gen_id(const struct tls_gen *gen);

/* tls_gen_store_errors returns how many tenants of the CA store failed to load. */
size_t tls_gen_store_errors(const struct tls_gen *gen);

/* tls_tenant returns the id of the tenant whose trust set served the connection, or NULL when
 * the common trust set did (no tenancy, no SNI, or an SNI naming no known tenant). */
const char *tls_tenant(struct ssl_st *ssl);


/* tls_client_cert_headers appends this hop's client-certificate header lines ("Name: value\r\n")
 * for listener |index| in its client_cert_header format to |out|, and for xfcc the bare element
 * to |element| (for append_forward). Returns false when the client sent no certificate. */
bool tls_client_cert_headers(struct tls_gen *gen, size_t index, struct ssl_st *ssl,
                             struct buf *out, struct buf *element);

#endif
