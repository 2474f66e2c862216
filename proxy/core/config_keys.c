/* config_keys.c: the keys of CONTRACT section 3 as tables of directives (config_walk.c walks
 * them), the keys that need their own parser, and the checks across keys (credentials, admin,
 * listeners, dependencies). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "core/base.h"
#include "core/config_internal.h"


static const struct name_value log_levels[] = {
    {"debug", LOG_LEVEL_DEBUG},
    {"info", LOG_LEVEL_INFO},
    {"warn", LOG_LEVEL_WARN},
    {"error", LOG_LEVEL_ERROR},
    {NULL, 0},
};
static const struct name_value modes[] = {
    {"http", LISTENER_HTTP},
    {"tls", LISTENER_TLS},
    {"tcp", LISTENER_TCP},
    {NULL, 0},
};
static const struct name_value client_auths[] = {
    {"require", CLIENT_AUTH_REQUIRE},
    {"optional", CLIENT_AUTH_OPTIONAL},
    {"none", CLIENT_AUTH_NONE},
    {NULL, 0},
};
static const struct name_value fcc_modes[] = {
    {"sanitize", FCC_SANITIZE},
    {"forward_only", FCC_FORWARD_ONLY},
    {"append_forward", FCC_APPEND_FORWARD},
    {"sanitize_set", FCC_SANITIZE_SET},
    {"always_forward_only", FCC_ALWAYS_FORWARD_ONLY},
    {NULL, 0},
};
static const struct name_value cc_headers[] = {
    {"xfcc", CC_HEADER_XFCC},
    {"rfc9440", CC_HEADER_RFC9440},
    {"pem", CC_HEADER_PEM},
    {NULL, 0},
};
static const struct name_value accept_proxies[] = {
    {"off", ACCEPT_PROXY_OFF},
    {"v1v2", ACCEPT_PROXY_V1V2},
    {"required", ACCEPT_PROXY_REQUIRED},
    {NULL, 0},
};
static const struct name_value forwarded_modes[] = {
    {"set", FORWARDED_SET},
    {"append", FORWARDED_APPEND},
    {"off", FORWARDED_OFF},
    {NULL, 0},
};
static const struct name_value upstream_protocols[] = {
    {"http1", UPSTREAM_HTTP1},
    {"h2c", UPSTREAM_H2C},
    {NULL, 0},
};

static const struct name_value underscore_modes[] = {
    {"drop", UNDERSCORES_DROP},
    {"forward", UNDERSCORES_FORWARD},
    {NULL, 0},
};
static const struct name_value tenancy_policies[] = {
    {"common", TENANCY_COMMON},
    {"reject", TENANCY_REJECT},
    {NULL, 0},
};
static const struct name_value ocsp_modes[] = {
    {"off", OCSP_OFF},
    {"soft_fail", OCSP_SOFT_FAIL},
    {"hard_fail", OCSP_HARD_FAIL},
    {NULL, 0},
};


/* Tables. */

#define CFG(field) .offset = offsetof(struct config, field)
#define LISTENER(field) .offset = offsetof(struct listener_config, field)

static const struct directive log_keys[] = {
    {"level", DIRECTIVE_ENUM, CFG(log_level), .names = log_levels},
    {"access", DIRECTIVE_BOOL, CFG(log_access)},
    {NULL},
};

enum { CRED_DIR, CRED_CERT, CRED_KEY, CRED_PKCS12, CRED_PKCS12_PASSWORD_FILE };
static const struct directive credentials_keys[] = {
    [CRED_DIR] = {"dir", DIRECTIVE_STRING, CFG(credentials_dir), .allow_null = true},
    [CRED_CERT] = {"cert", DIRECTIVE_STRING, CFG(credentials_cert)},
    [CRED_KEY] = {"key", DIRECTIVE_STRING, CFG(credentials_key)},
    [CRED_PKCS12] = {"pkcs12", DIRECTIVE_STRING, CFG(credentials_pkcs12), .allow_null = true},
    [CRED_PKCS12_PASSWORD_FILE] = {"pkcs12_password_file", DIRECTIVE_STRING,
                                   CFG(credentials_pkcs12_password_file), .allow_null = true},
    {"expiry_warning", DIRECTIVE_DURATION, CFG(expiry_warning_ms), .allow_zero = true},
    {NULL},
};

_Static_assert(ARRAY_SIZE(credentials_keys) <= MAX_DIRECTIVES, "credentials' keys fit seen[]");

/* check_credentials enforces that pkcs12 replaces cert and key, and defaults those two. */
static int check_credentials(struct cfg_ctx *c, const struct seen *seen)
{
    struct config *cfg = c->cfg;
    yaml_node_t *cert = seen[CRED_CERT].key, *key = seen[CRED_KEY].key;
    if (cfg->credentials_pkcs12 != NULL) {
        if (cert != NULL || key != NULL)
            return config_fail(c, cert != NULL ? cert : key,
                            "credentials.%s cannot be combined with credentials.pkcs12",
                            cert != NULL ? "cert" : "key");
    } else {
        if (cfg->credentials_pkcs12_password_file != NULL)
            return config_fail(c, seen[CRED_PKCS12_PASSWORD_FILE].key,
                            "credentials.pkcs12_password_file needs credentials.pkcs12");
        if (cfg->credentials_cert == NULL)
            cfg->credentials_cert = xstrdup("tls.crt");
        if (cfg->credentials_key == NULL)
            cfg->credentials_key = xstrdup("tls.key");
    }
    return 0;
}

static const struct directive ca_store_keys[] = {
    {"dir", DIRECTIVE_STRING, CFG(ca_store_dir), .allow_null = true},
    {NULL},
};

static const struct directive tenancy_keys[] = {
    {"sni", DIRECTIVE_CUSTOM, CFG(tenancy_sni), .parse = config_parse_key_sni},
    {"unknown", DIRECTIVE_ENUM, CFG(tenancy_unknown), .names = tenancy_policies},
    {"no_sni", DIRECTIVE_ENUM, CFG(tenancy_no_sni), .names = tenancy_policies},
    {NULL},
};

static const struct directive reload_keys[] = {
    {"debounce", DIRECTIVE_DURATION, CFG(reload_debounce_ms), .allow_zero = true},
    {"poll_interval", DIRECTIVE_DURATION, CFG(reload_poll_interval_ms)},
    {NULL},
};

static const struct directive revocation_keys[] = {
    {"crl", DIRECTIVE_BOOL, CFG(revocation_crl)},
    {"ocsp", DIRECTIVE_ENUM, CFG(revocation_ocsp), .names = ocsp_modes},
    {"ocsp_timeout", DIRECTIVE_DURATION, CFG(ocsp_timeout_ms)},
    {"ocsp_cache_max", DIRECTIVE_DURATION, CFG(ocsp_cache_max_ms), .allow_zero = true},
    {NULL},
};

static const struct directive access_keys[] = {
    {"allowed_subjects_file", DIRECTIVE_STRING, CFG(allowed_subjects_file), .allow_null = true},
    {NULL},
};

enum { ADMIN_ADDRESS, ADMIN_TOKEN_FILE, ADMIN_PUBLIC_ADDRESS };
static const struct directive admin_keys[] = {
    [ADMIN_ADDRESS] = {"address", DIRECTIVE_CUSTOM, CFG(admin_address),
                       .parse = config_parse_key_admin_address},
    [ADMIN_TOKEN_FILE] = {"token_file", DIRECTIVE_STRING, CFG(admin_token_file),
                          .allow_null = true},
    [ADMIN_PUBLIC_ADDRESS] = {"public_address", DIRECTIVE_CUSTOM, CFG(admin_public_address),
                              .parse = config_parse_key_admin_address},
    {NULL},
};

/* check_admin: without a token, the mutating API must not be reachable from the network (a
 * browser page can reach any address the host can, and DNS rebinding gets it past the
 * same-origin rule; SECURITY rule 31). The public listener serves nothing that mutates. */
static int check_admin(struct cfg_ctx *c, const struct seen *seen)
{
    const struct config *cfg = c->cfg;
    const struct config_endpoint *a = &cfg->admin_address, *p = &cfg->admin_public_address;
    if (a->text != NULL && cfg->admin_token_file == NULL && !config_endpoint_is_loopback(a))
        return config_fail(c, seen[ADMIN_ADDRESS].value,
                        "admin.address %s is not a loopback address: without admin.token_file "
                        "the admin API (POST /reload, the allowlist) listens only on 127.0.0.1, "
                        "[::1] or localhost; set admin.token_file, or serve probes and metrics "
                        "on admin.public_address",
                        config_quote(c, a->text));
    if (a->text != NULL && p->text != NULL && config_endpoint_port(a) != 0 &&
        a->addr_len == p->addr_len && memcmp(&a->addr, &p->addr, a->addr_len) == 0)
        return config_fail(c, seen[ADMIN_PUBLIC_ADDRESS].value,
                        "admin.public_address is the same address as admin.address");
    return 0;
}

/* Upper bounds keep a typo from becoming an allocation that cannot succeed. Draining for zero
 * time is a valid choice: stop at once. */
static const struct directive limits_keys[] = {
    {"max_connections", DIRECTIVE_COUNT, CFG(limits.max_connections), .max = 10000000},
    {"max_headers", DIRECTIVE_COUNT, CFG(limits.max_headers), .max = 100000},
    {"max_request_head", DIRECTIVE_CUSTOM, CFG(limits.max_request_head),
     .parse = config_parse_key_request_head},
    {"handshake_timeout", DIRECTIVE_DURATION, CFG(limits.handshake_timeout_ms)},
    {"request_head_timeout", DIRECTIVE_DURATION, CFG(limits.request_head_timeout_ms)},
    {"idle_timeout", DIRECTIVE_DURATION, CFG(limits.idle_timeout_ms)},
    {"upstream_connect_timeout", DIRECTIVE_DURATION, CFG(limits.upstream_connect_timeout_ms)},
    {"upstream_response_timeout", DIRECTIVE_DURATION, CFG(limits.upstream_response_timeout_ms)},
    {"shutdown_delay", DIRECTIVE_DURATION, CFG(limits.shutdown_delay_ms), .allow_zero = true},
    {"drain_timeout", DIRECTIVE_DURATION, CFG(limits.drain_timeout_ms), .allow_zero = true},
    {NULL},
};

enum {
    L_NAME,
    L_ADDRESS,
    L_PROXY_PROTOCOL,
    L_FORWARDED_HEADERS,
    L_HEADERS_WITH_UNDERSCORES,
    L_STRIP_HEADERS,
    L_ALPN,
    L_UPSTREAM_PROTOCOL
};
static const struct directive listener_keys[] = {
    [L_NAME] = {"name", DIRECTIVE_CUSTOM, LISTENER(name), .parse = config_parse_key_listener_name},
    [L_ADDRESS] = {"address", DIRECTIVE_ENDPOINT, LISTENER(address)},
    [L_PROXY_PROTOCOL] = {"proxy_protocol", DIRECTIVE_BOOL, LISTENER(proxy_protocol)},
    [L_FORWARDED_HEADERS] = {"forwarded_headers", DIRECTIVE_ENUM, LISTENER(forwarded_headers),
                             .names = forwarded_modes},
    [L_HEADERS_WITH_UNDERSCORES] = {"headers_with_underscores", DIRECTIVE_ENUM,
                                    LISTENER(headers_with_underscores), .names = underscore_modes},
    [L_STRIP_HEADERS] = {"strip_headers", DIRECTIVE_CUSTOM, LISTENER(strip_headers),
                         .parse = config_parse_key_strip_headers},
    [L_ALPN] = {"alpn", DIRECTIVE_CUSTOM, LISTENER(alpn), .parse = config_parse_key_alpn},
    [L_UPSTREAM_PROTOCOL] = {"upstream_protocol", DIRECTIVE_ENUM, LISTENER(upstream_protocol),
                             .names = upstream_protocols},
    {"mode", DIRECTIVE_ENUM, LISTENER(mode), .names = modes},
    {"upstream", DIRECTIVE_CUSTOM, LISTENER(upstream), .parse = config_parse_key_upstream},
    {"client_auth", DIRECTIVE_ENUM, LISTENER(client_auth), .names = client_auths},
    {"verify", DIRECTIVE_BOOL, LISTENER(verify)},
    {"forward_client_cert", DIRECTIVE_ENUM, LISTENER(forward_client_cert), .names = fcc_modes},
    {"client_cert_details", DIRECTIVE_CUSTOM, LISTENER(client_cert_details),
     .parse = config_parse_key_details},
    {"client_cert_header", DIRECTIVE_ENUM, LISTENER(client_cert_header), .names = cc_headers},
    {"subject_cn_pattern", DIRECTIVE_CUSTOM, LISTENER(subject_cn_pattern),
     .parse = config_parse_key_pattern},
    {"require_allowed_subject", DIRECTIVE_BOOL, LISTENER(require_allowed_subject)},
    {"accept_proxy_protocol", DIRECTIVE_ENUM, LISTENER(accept_proxy_protocol),
     .names = accept_proxies},
    {NULL},
};

/* Nodes remembered for checks that involve more than one key. */
struct listener_nodes {
    yaml_node_t *map;
    struct seen seen[ARRAY_SIZE(listener_keys)];
};

/* Listeners. */

/* addresses_collide tells whether two listeners would share a port: same port, and one of
 * them the wildcard of its family, or [::] (dual-stack) beside any IPv4 address. */
static bool addresses_collide(const struct config_endpoint *a, const struct config_endpoint *b)
{
    uint16_t port = config_endpoint_port(a);
    if (port == 0 || port != config_endpoint_port(b) || a->unix_path != NULL ||
        b->unix_path != NULL)
        return false;
    bool wa = config_endpoint_is_wildcard(a), wb = config_endpoint_is_wildcard(b);
    if (a->addr.ss_family == b->addr.ss_family)
        return wa || wb;
    return (wa && a->addr.ss_family == AF_INET6) || (wb && b->addr.ss_family == AF_INET6);
}

static void listener_defaults(struct listener_config *l)
{
    memset(l, 0, sizeof(*l));
    l->mode = LISTENER_HTTP;
    l->client_auth = CLIENT_AUTH_REQUIRE;
    l->verify = true;
    l->forward_client_cert = FCC_SANITIZE_SET;
    l->client_cert_details =
        CC_DETAIL_CERT | CC_DETAIL_CHAIN | CC_DETAIL_SUBJECT | CC_DETAIL_URI | CC_DETAIL_DNS;
    l->client_cert_header = CC_HEADER_XFCC;
}

static int parse_listener(struct cfg_ctx *c, yaml_node_t *map, size_t idx)
{
    struct listener_config *l = &c->cfg->listeners[idx];
    struct listener_nodes *ln = &c->lnodes[idx];
    char prefix[32];
    int rc;

    listener_defaults(l);
    c->cfg->num_listeners = idx + 1;
    l->line = (unsigned)map->start_mark.line + 1;
    ln->map = map;
    if (map->type != YAML_MAPPING_NODE)
        return config_fail(c, map, "listeners[%zu]: expected a mapping, got %s", idx,
                           config_node_kind(map));
    snprintf(prefix, sizeof(prefix), "listeners[%zu]", idx);
    if ((rc = config_walk(c, map, "in listener", prefix, listener_keys, l, ln->seen)) != 0)
        return rc;
    if (l->name == NULL)
        return config_fail(c, map, "missing required key \"name\" in listener");
    if (l->address.text == NULL)
        return config_fail(c, map, "missing required key \"address\" in listener %s",
                        config_quote(c, l->name));
    if (l->upstream.text == NULL)
        return config_fail(c, map, "missing required key \"upstream\" in listener %s",
                        config_quote(c, l->name));
    if (l->proxy_protocol && l->mode == LISTENER_HTTP)
        return config_fail(c, ln->seen[L_PROXY_PROTOCOL].value,
                        "listener %s: proxy_protocol is only for tcp and tls listeners",
                        config_quote(c, l->name));
    /* Request headers exist only where certgate speaks HTTP. */
    static const unsigned http_only[] = {L_FORWARDED_HEADERS, L_HEADERS_WITH_UNDERSCORES,
                                         L_STRIP_HEADERS, L_ALPN, L_UPSTREAM_PROTOCOL};
    for (size_t i = 0; i < ARRAY_SIZE(http_only); i++)
        if (l->mode != LISTENER_HTTP && ln->seen[http_only[i]].key != NULL)
            return config_fail(c, ln->seen[http_only[i]].key,
                            "listener %s: %s is only for http listeners", config_quote(c, l->name),
                            listener_keys[http_only[i]].name);
    /* An h2c upstream carries HTTP/2 streams only: its listener offers h2 alone unless told
     * otherwise, and an HTTP/1.1 client has nothing to be forwarded as. */
    if (ln->seen[L_ALPN].key == NULL)
        l->alpn = l->upstream_protocol == UPSTREAM_H2C ? ALPN_H2 : ALPN_H2 | ALPN_HTTP11;
    else if (l->upstream_protocol == UPSTREAM_H2C && (l->alpn & ALPN_HTTP11))
        return config_fail(c, ln->seen[L_ALPN].value,
                           "listener %s: alpn offers http/1.1, but upstream_protocol h2c "
                           "forwards only HTTP/2 streams; use alpn: [h2] or "
                           "upstream_protocol: http1",
                           config_quote(c, l->name));
    for (size_t i = 0; i < idx; i++) {
        const struct listener_config *o = &c->cfg->listeners[i];
        if (strcmp(o->name, l->name) == 0)
            return config_fail(c, ln->seen[L_NAME].value, "duplicate listener name %s",
                            config_quote(c, l->name));
        if (config_endpoint_port(&l->address) != 0 && o->address.addr_len == l->address.addr_len &&
            memcmp(&o->address.addr, &l->address.addr, l->address.addr_len) == 0)
            return config_fail(c, ln->seen[L_ADDRESS].value,
                               "listener %s uses the same address as listener %s",
                               config_quote(c, l->name), o->name);
        if (addresses_collide(&l->address, &o->address))
            return config_fail(c, ln->seen[L_ADDRESS].value,
                            "listener %s: address %s overlaps listener %s's %s (a wildcard "
                            "address takes the port on every interface)",
                            config_quote(c, l->name), l->address.text, o->name, o->address.text);
    }
    return 0;
}

static int parse_listeners(struct cfg_ctx *c, yaml_node_t *seq, const char *what, void *out)
{
    if (seq->type != YAML_SEQUENCE_NODE && !config_node_is_null(seq))
        return config_fail(c, seq, "listeners: expected a sequence, got %s", config_node_kind(seq));
    size_t num = seq->type == YAML_SEQUENCE_NODE
                     ? (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start)
                     : 0;
    if (num == 0)
        return config_fail(c, seq, "listeners: at least one listener is required");
    if (num > CONFIG_MAX_LISTENERS)
        return config_fail(c, seq, "listeners: at most %u listeners are allowed",
                        CONFIG_MAX_LISTENERS);
    c->cfg->listeners = xcalloc(num, sizeof(*c->cfg->listeners));
    c->lnodes = xcalloc(num, sizeof(*c->lnodes));
    for (size_t i = 0; i < num; i++) {
        yaml_node_t *item = yaml_document_get_node(c->doc, seq->data.sequence.items.start[i]);
        if (item == NULL)
            return config_fail(c, seq, "listeners: malformed sequence");
        int rc = parse_listener(c, item, i);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* check_dependencies enforces what one part of the file requires of another. */
static int check_dependencies(struct cfg_ctx *c)
{
    struct config *cfg = c->cfg;
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const struct listener_config *l = &cfg->listeners[i];
        if (l->require_allowed_subject &&
            (l->mode == LISTENER_TCP || l->client_auth == CLIENT_AUTH_NONE || !l->verify))
            return config_fail(c, c->lnodes[i].map,
                            "listener %s: require_allowed_subject needs a verified client "
                            "certificate (mode http or tls, client_auth require or optional, "
                            "verify on)",
                            config_quote(c, l->name));
        if (l->require_allowed_subject && cfg->allowed_subjects_file == NULL)
            return config_fail(c, c->lnodes[i].map,
                            "listener %s requires allowed subjects, so "
                            "access.allowed_subjects_file is required",
                            config_quote(c, l->name));
        if (l->mode == LISTENER_TCP)
            continue;
        if (cfg->credentials_dir == NULL)
            return config_fail(c, c->lnodes[i].map,
                            "listener %s terminates TLS, so credentials.dir is required",
                            config_quote(c, l->name));
        if (l->client_auth != CLIENT_AUTH_NONE && l->verify && cfg->ca_store_dir == NULL)
            return config_fail(c, c->lnodes[i].map,
                            "listener %s verifies client certificates, so ca_store.dir is "
                            "required",
                            config_quote(c, l->name));
    }
    return 0;
}

static const struct directive root_keys[] = {
    {"workers", DIRECTIVE_CUSTOM, CFG(workers), .parse = config_parse_key_workers},
    {"log", DIRECTIVE_SECTION, .keys = log_keys},
    {"credentials", DIRECTIVE_SECTION, .keys = credentials_keys, .check = check_credentials},
    {"ca_store", DIRECTIVE_SECTION, .keys = ca_store_keys},
    {"tenancy", DIRECTIVE_SECTION, .keys = tenancy_keys},
    {"reload", DIRECTIVE_SECTION, .keys = reload_keys},
    {"revocation", DIRECTIVE_SECTION, .keys = revocation_keys},
    {"access", DIRECTIVE_SECTION, .keys = access_keys},
    {"admin", DIRECTIVE_SECTION, .keys = admin_keys, .check = check_admin},
    {"limits", DIRECTIVE_SECTION, .keys = limits_keys},
    {"listeners", DIRECTIVE_CUSTOM, CFG(listeners), .parse = parse_listeners},
    {NULL},
};

int config_parse_root(struct cfg_ctx *c, yaml_node_t *root)
{
    int rc;

    if (root->type != YAML_MAPPING_NODE)
        return config_fail(c, root, "expected a mapping at top level, got %s",
                           config_node_kind(root));
    if ((rc = config_walk(c, root, "at top level", NULL, root_keys, c->cfg, NULL)) != 0)
        return rc;
    if (c->cfg->listeners == NULL)
        return config_fail(c, root, "missing required key \"listeners\" at top level");
    /* The host's CPU count overstates a container limited by cpu.max or a process pinned
     * with taskset: more workers than usable CPUs only add contention. */
    c->cfg->workers_auto = c->workers_auto;
    if (c->workers_auto)
        c->cfg->workers = config_usable_cpus("/sys/fs/cgroup");
    return check_dependencies(c);
}
