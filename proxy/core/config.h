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

enum forwarded_headers {
    FORWARDED_SET,    /* client copies removed; certgate writes X-Forwarded-For and -Proto */
    FORWARDED_APPEND, /* the client address is appended to an incoming X-Forwarded-For */
    FORWARDED_OFF,    /* client copies pass unchanged; nothing is added */
};

enum underscores {
    UNDERSCORES_DROP,    /* request headers with '_' in the name are not forwarded (nginx) */
    UNDERSCORES_FORWARD, /* they are forwarded, but for the ones that are always refused */
};

/* strip_headers: at most this many names, each a token of at most CONFIG_MAX_HEADER_NAME. */
#define CONFIG_MAX_STRIP_HEADERS 64
#define CONFIG_MAX_HEADER_NAME 128

enum tenancy_policy {
    TENANCY_COMMON, /* use the common bundle */
    TENANCY_REJECT, /* fail the handshake */
};

enum ocsp_mode {
    OCSP_OFF,       /* no OCSP */
    OCSP_SOFT_FAIL, /* an unreachable responder lets the client in */
    OCSP_HARD_FAIL, /* an unreachable responder refuses the client */
};

enum accept_proxy {
    ACCEPT_PROXY_OFF,      /* no PROXY protocol header is read */
    ACCEPT_PROXY_V1V2,     /* a connection may start with a v1 or v2 header */
    ACCEPT_PROXY_REQUIRED, /* a connection without a valid header is closed */
};

/* A list of names (header names, ...). */
struct config_names {
    char **names;
    size_t num;
};

/* An endpoint: a TCP address or a unix socket path. */
struct config_endpoint {
    char *text;                   /* as written, for logs */
    char *unix_path;              /* non-NULL for "unix:/path" */
    struct sockaddr_storage addr; /* when unix_path is NULL */
    socklen_t addr_len;
};

/* ALPN protocols an http listener offers (listener key alpn), as bits. */
#define ALPN_H2 1u
#define ALPN_HTTP11 2u

enum upstream_protocol {
    UPSTREAM_HTTP1, /* HTTP/1.1 to the upstream; an h2 client's streams are translated */
    UPSTREAM_H2C,   /* HTTP/2 with prior knowledge, one multiplexed connection per worker */
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
    enum accept_proxy accept_proxy_protocol;
    enum forwarded_headers forwarded_headers;
    enum underscores headers_with_underscores;
    struct config_names strip_headers; /* lowercase, '_' written as '-' */
    unsigned alpn;                     /* ALPN_* bits, in preference order h2 first */
    enum upstream_protocol upstream_protocol;
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
    uint64_t shutdown_delay_ms; /* after SIGTERM: keep accepting, /ready 503 */
    uint64_t drain_timeout_ms;
};

struct config {
    char *path;      /* the file it came from */
    unsigned workers; /* resolved: "auto" becomes the number of CPUs the process may use */
    bool workers_auto; /* workers came from "auto" */
    enum log_level log_level;
    bool log_access;

    /* credentials; all NULL when the section is absent. cert/key are NULL when pkcs12 is set.
     * Their file names stay relative: they are joined to credentials_dir by the user. The
     * directories and files outside it (credentials_dir, ca_store_dir, allowed_subjects_file,
     * admin_token_file) are made absolute against the config file's directory by config_load
     * (config_load_string leaves them as written). */
    char *credentials_dir;
    char *credentials_cert;
    char *credentials_key;
    char *credentials_pkcs12;
    char *credentials_pkcs12_password_file;
    uint64_t expiry_warning_ms; /* warn when the server certificate expires sooner */

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

/* config_parse_duration_ms parses "250ms", "10s", "5m", "1h", "14d". Returns 0 or -EINVAL. */
int config_parse_duration_ms(uint64_t *out, const char *text);

/* config_parse_size parses "512", "64KiB", "1MiB", "1GiB". Returns 0 or -EINVAL. */
int config_parse_size(size_t *out, const char *text);

/* config_parse_cpu_max reads a cgroup v2 cpu.max line ("QUOTA PERIOD" or "max PERIOD") into
 * the number of CPUs it allows, rounded up: "150000 100000" is 2. Returns 0 and sets |*out|
 * (0 for "max": no limit), or -EINVAL for anything else. */
int config_parse_cpu_max(unsigned *out, const char *text);

/* config_usable_cpus returns the number of CPUs this process may use: its affinity mask
 * (sched_getaffinity), capped by the cgroup v2 cpu.max quota of its cgroup and every parent
 * (read below |cgroup_root|, normally "/sys/fs/cgroup"); at least 1. */
unsigned config_usable_cpus(const char *cgroup_root);

#endif
