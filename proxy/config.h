/* config.h: the YAML configuration of CONTRACT section 3 as a plain struct. config.c is the
 * only module that touches YAML; everything else reads a loaded, validated struct config. */
#ifndef CERTGATE_CONFIG_H
#define CERTGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum log_level {
    LOG_LEVEL_DEBUG, /* everything */
    LOG_LEVEL_INFO,  /* the default */
    LOG_LEVEL_WARN,  /* warnings and errors */
    LOG_LEVEL_ERROR, /* errors only */
};

enum listener_mode {
    LISTENER_HTTP, /* terminate TLS, proxy HTTP/1.1 */
    LISTENER_TLS,  /* terminate TLS, relay decrypted bytes */
    LISTENER_TCP,  /* relay bytes, no TLS */
};

enum client_auth {
    CLIENT_AUTH_REQUIRE,  /* a client certificate is needed */
    CLIENT_AUTH_OPTIONAL, /* asked for; verified when sent */
    CLIENT_AUTH_NONE,     /* not asked for */
};

enum fcc_mode {
    FCC_SANITIZE,            /* remove the header */
    FCC_FORWARD_ONLY,        /* forward the client's header unchanged (with a certificate) */
    FCC_APPEND_FORWARD,      /* append this hop's element (with a certificate) */
    FCC_SANITIZE_SET,        /* replace with this hop's element (the default) */
    FCC_ALWAYS_FORWARD_ONLY, /* forward unchanged, always */
};

enum cc_header {
    CC_HEADER_XFCC,    /* x-forwarded-client-cert, Envoy's format */
    CC_HEADER_RFC9440, /* Client-Cert and Client-Cert-Chain */
    CC_HEADER_PEM,     /* X-SSL-Client-Cert, nginx's escaped PEM */
};

/* client_cert_details bits; Hash is always set. */
#define CC_DETAIL_CERT 0x01u
#define CC_DETAIL_CHAIN 0x02u
#define CC_DETAIL_SUBJECT 0x04u
#define CC_DETAIL_URI 0x08u
#define CC_DETAIL_DNS 0x10u

enum tenancy_policy {
    TENANCY_COMMON, /* use the common bundle */
    TENANCY_REJECT, /* fail the handshake */
};

enum ocsp_mode {
    OCSP_OFF,       /* no OCSP */
    OCSP_SOFT_FAIL, /* an unreachable responder lets the client in */
    OCSP_HARD_FAIL, /* an unreachable responder refuses the client */
};

/* An endpoint: a TCP address or a unix socket path. */
struct config_endpoint {
    char *text;                   /* as written, for logs */
    char *unix_path;              /* non-NULL for "unix:/path" */
    struct sockaddr_storage addr; /* when unix_path is NULL */
    socklen_t addr_len;
};

struct listener_config {
    char *name;
    struct config_endpoint address;
    enum listener_mode mode;
    struct config_endpoint upstream;
    enum client_auth client_auth;
    bool verify;
    enum fcc_mode forward_client_cert;
    unsigned client_cert_details; /* CC_DETAIL_* bits */
    enum cc_header client_cert_header;
    char *subject_cn_pattern; /* NULL when unset; compiled by whoever uses it */
    bool require_allowed_subject;
    bool proxy_protocol;
    unsigned line; /* where the listener starts in the file, for messages */
};

struct config_limits {
    uint32_t max_connections;
    size_t max_request_head;
    uint32_t max_headers;
    uint64_t handshake_timeout_ms;
    uint64_t request_head_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t upstream_connect_timeout_ms;
    uint64_t upstream_response_timeout_ms;
    uint64_t drain_timeout_ms;
};

struct config {
    char *path;      /* the file it came from */
    unsigned workers; /* resolved: "auto" becomes the number of CPUs */
    enum log_level log_level;
    bool log_access;

    /* credentials; all NULL when the section is absent. cert/key are NULL when pkcs12 is set.
     * Relative file names stay relative: they are joined to credentials_dir by the user. */
    char *credentials_dir;
    char *credentials_cert;
    char *credentials_key;
    char *credentials_pkcs12;
    char *credentials_pkcs12_password_file;

    char *ca_store_dir; /* NULL when absent */

    char *tenancy_sni; /* NULL: no tenancy */
    enum tenancy_policy tenancy_unknown;
    enum tenancy_policy tenancy_no_sni;

    uint64_t reload_debounce_ms;
    uint64_t reload_poll_interval_ms;

    bool revocation_crl;
    enum ocsp_mode revocation_ocsp;
    uint64_t ocsp_timeout_ms;
    uint64_t ocsp_cache_max_ms;

    char *allowed_subjects_file;

    struct config_endpoint admin_address; /* admin_address.text is NULL when off */
    char *admin_token_file; /* NULL: admin_address is loopback and Host is checked */
    /* A second admin listener that answers only GET/HEAD /healthz, /ready and /metrics (for
     * kubelet probes and Prometheus on the pod network); text is NULL when off. */
    struct config_endpoint admin_public_address;

    struct config_limits limits;

    struct listener_config *listeners;
    size_t num_listeners;
};

/* config_load reads and validates |path|. On success it returns 0 and sets |*out| (the caller
 * frees it with config_free). On failure it returns -EINVAL (or a negative errno when the file
 * cannot be read) and writes "FILE:LINE:COLUMN: message" into |err|. */
int config_load(struct config **out, const char *path, char *err, size_t err_len);

/* config_load_string is config_load on an in-memory document; |name| stands in for the file
 * name in messages. */
int config_load_string(struct config **out, const char *name, const char *text, size_t len,
                       char *err, size_t err_len);

/* config_free releases everything; config_free(NULL) is a no-op. */
void config_free(struct config *cfg);

/* config_parse_endpoint parses "host:port", "[v6]:port" or (when |allow_unix|) "unix:/path"
 * into |out|. Hosts are numeric addresses or "localhost". Returns 0 or -EINVAL. */
int config_parse_endpoint(struct config_endpoint *out, const char *text, bool allow_unix);

/* config_endpoint_is_loopback tells whether |ep| is a TCP address in 127.0.0.0/8 or ::1 (also
 * written as ::ffff:127.x.y.z). */
bool config_endpoint_is_loopback(const struct config_endpoint *ep);

/* config_parse_duration_ms parses "250ms", "10s", "5m", "1h". Returns 0 or -EINVAL. */
int config_parse_duration_ms(uint64_t *out, const char *text);

/* config_parse_size parses "512", "64KiB", "1MiB", "1GiB". Returns 0 or -EINVAL. */
int config_parse_size(size_t *out, const char *text);

#endif
