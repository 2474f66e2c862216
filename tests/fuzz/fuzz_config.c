/* fuzz_config.c: libFuzzer target for the configuration loader (config_load_string: libyaml, the
 * table-driven walk and every directive parser). A refused document must say "NAME:LINE:COL: "
 * where it is wrong; an accepted one is written back as YAML (every field explicitly), which must
 * load again into a configuration that writes back to the same text: the parsed values are what
 * the directives mean, not an artefact of how they were spelled. Without -DFUZZING, replay.c
 * replays a corpus. */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/config.h"
#include "fuzz_check.h"

#define NAME "fuzz.yaml"

static void put(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

/* A YAML double-quoted scalar holding |s| exactly: escapes for '"', '\\', control bytes and the
 * Unicode line breaks that a quoted scalar would otherwise fold. */
static void put_str(struct buf *b, const char *s)
{
    put(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            buf_append(b, e, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            buf_appendf(b, "\\x%02x", *p);
        } else if (p[0] == 0xc2 && p[1] == 0x85) {
            put(b, "\\N");
            p++;
        } else if (p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9)) {
            put(b, p[2] == 0xa8 ? "\\L" : "\\P");
            p += 2;
        } else if (p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) {
            put(b, "\\uFEFF");
            p += 2;
        } else {
            buf_append(b, p, 1);
        }
    }
    put(b, "\"");
}

static void put_key_str(struct buf *b, const char *indent, const char *key, const char *value)
{
    if (value == NULL)
        return;
    buf_appendf(b, "%s%s: ", indent, key);
    put_str(b, value);
    put(b, "\n");
}

static void put_key_ms(struct buf *b, const char *indent, const char *key, uint64_t ms)
{
    buf_appendf(b, "%s%s: %llums\n", indent, key, (unsigned long long)ms);
}

static void put_key_bool(struct buf *b, const char *indent, const char *key, bool v)
{
    buf_appendf(b, "%s%s: %s\n", indent, key, v ? "true" : "false");
}

static const char *const levels[] = {"debug", "info", "warn", "error"};
static const char *const modes[] = {"http", "tls", "tcp"};
static const char *const auths[] = {"require", "optional", "none"};
static const char *const fccs[] = {"sanitize", "forward_only", "append_forward", "sanitize_set",
                                   "always_forward_only"};
static const char *const cc_headers[] = {"xfcc", "rfc9440", "pem"};
static const char *const details[] = {"cert", "chain", "subject", "uri", "dns"};
static const char *const forwardeds[] = {"set", "append", "off"};
static const char *const underscores[] = {"drop", "forward"};
static const char *const tenancies[] = {"common", "reject"};
static const char *const ocsps[] = {"off", "soft_fail", "hard_fail"};
static const char *const proxies[] = {"off", "v1v2", "required"};

static const char *named(const char *const *table, size_t num, unsigned v)
{
    CHECK(v < num);
    return table[v];
}
#define NAMED(table, v) named(table, sizeof(table) / sizeof(table[0]), (unsigned)(v))

static void emit_listener(struct buf *b, const struct listener_config *l)
{
    const char *in = "    ";
    put(b, "  - name: ");
    put_str(b, l->name);
    put(b, "\n");
    put_key_str(b, in, "address", l->address.text);
    buf_appendf(b, "%smode: %s\n", in, NAMED(modes, l->mode));
    put_key_str(b, in, "upstream", l->upstream.text);
    buf_appendf(b, "%sclient_auth: %s\n", in, NAMED(auths, l->client_auth));
    put_key_bool(b, in, "verify", l->verify);
    buf_appendf(b, "%sforward_client_cert: %s\n", in, NAMED(fccs, l->forward_client_cert));
    buf_appendf(b, "%sclient_cert_details: [", in);
    for (size_t i = 0, n = 0; i < 5; i++)
        if (l->client_cert_details & (1u << i))
            buf_appendf(b, "%s%s", n++ ? ", " : "", details[i]);
    put(b, "]\n");
    CHECK((l->client_cert_details & ~0x1fu) == 0);
    buf_appendf(b, "%sclient_cert_header: %s\n", in, NAMED(cc_headers, l->client_cert_header));
    put_key_str(b, in, "subject_cn_pattern", l->subject_cn_pattern);
    put_key_bool(b, in, "require_allowed_subject", l->require_allowed_subject);
    if (l->mode != LISTENER_HTTP)
        put_key_bool(b, in, "proxy_protocol", l->proxy_protocol);
    else
        CHECK(!l->proxy_protocol);
    buf_appendf(b, "%saccept_proxy_protocol: %s\n", in, NAMED(proxies, l->accept_proxy_protocol));
    if (l->mode == LISTENER_HTTP) {
        buf_appendf(b, "%sforwarded_headers: %s\n", in, NAMED(forwardeds, l->forwarded_headers));
        buf_appendf(b, "%sheaders_with_underscores: %s\n", in,
             NAMED(underscores, l->headers_with_underscores));
        buf_appendf(b, "%sstrip_headers: [", in);
        CHECK(l->strip_headers.num <= CONFIG_MAX_STRIP_HEADERS);
        for (size_t i = 0; i < l->strip_headers.num; i++) {
            const char *h = l->strip_headers.names[i];
            CHECK(strlen(h) > 0 && strlen(h) <= CONFIG_MAX_HEADER_NAME);
            for (const char *c = h; *c != '\0'; c++)
                CHECK(*c != '_' && !isupper((unsigned char)*c));
            put(b, i ? ", " : "");
            put_str(b, h);
        }
        put(b, "]\n");
    }
}

/* emit writes |cfg| back as YAML that sets every field explicitly. */
static void emit(struct buf *b, const struct config *cfg)
{
    if (cfg->workers_auto)
        put(b, "workers: auto\n");
    else
        buf_appendf(b, "workers: %u\n", cfg->workers);
    CHECK(cfg->workers >= 1 && cfg->workers <= 256);
    buf_appendf(b, "log:\n  level: %s\n", NAMED(levels, cfg->log_level));
    put_key_bool(b, "  ", "access", cfg->log_access);
    if (cfg->credentials_cert != NULL || cfg->credentials_pkcs12 != NULL) {
        CHECK((cfg->credentials_cert != NULL) == (cfg->credentials_key != NULL));
        CHECK(cfg->credentials_cert == NULL || cfg->credentials_pkcs12 == NULL);
        put(b, "credentials:\n");
        put_key_str(b, "  ", "dir", cfg->credentials_dir);
        put_key_str(b, "  ", "cert", cfg->credentials_cert);
        put_key_str(b, "  ", "key", cfg->credentials_key);
        put_key_str(b, "  ", "pkcs12", cfg->credentials_pkcs12);
        put_key_str(b, "  ", "pkcs12_password_file", cfg->credentials_pkcs12_password_file);
        put_key_ms(b, "  ", "expiry_warning", cfg->expiry_warning_ms);
    } else {
        CHECK(cfg->credentials_dir == NULL && cfg->credentials_pkcs12_password_file == NULL);
    }
    if (cfg->ca_store_dir != NULL) {
        put(b, "ca_store:\n");
        put_key_str(b, "  ", "dir", cfg->ca_store_dir);
    }
    put(b, "tenancy:\n");
    put_key_str(b, "  ", "sni", cfg->tenancy_sni);
    buf_appendf(b, "  unknown: %s\n", NAMED(tenancies, cfg->tenancy_unknown));
    buf_appendf(b, "  no_sni: %s\n", NAMED(tenancies, cfg->tenancy_no_sni));
    put(b, "reload:\n");
    put_key_ms(b, "  ", "debounce", cfg->reload_debounce_ms);
    put_key_ms(b, "  ", "poll_interval", cfg->reload_poll_interval_ms);
    put(b, "revocation:\n");
    put_key_bool(b, "  ", "crl", cfg->revocation_crl);
    buf_appendf(b, "  ocsp: %s\n", NAMED(ocsps, cfg->revocation_ocsp));
    put_key_ms(b, "  ", "ocsp_timeout", cfg->ocsp_timeout_ms);
    put_key_ms(b, "  ", "ocsp_cache_max", cfg->ocsp_cache_max_ms);
    if (cfg->allowed_subjects_file != NULL) {
        put(b, "access:\n");
        put_key_str(b, "  ", "allowed_subjects_file", cfg->allowed_subjects_file);
    }
    if (cfg->admin_address.text != NULL || cfg->admin_token_file != NULL ||
        cfg->admin_public_address.text != NULL)
        put(b, "admin:\n");
    put_key_str(b, "  ", "address", cfg->admin_address.text);
    put_key_str(b, "  ", "token_file", cfg->admin_token_file);
    put_key_str(b, "  ", "public_address", cfg->admin_public_address.text);
    const struct config_limits *lim = &cfg->limits;
    put(b, "limits:\n");
    buf_appendf(b, "  max_connections: %u\n", (unsigned)lim->max_connections);
    buf_appendf(b, "  max_headers: %u\n", (unsigned)lim->max_headers);
    buf_appendf(b, "  max_request_head: %zu\n", lim->max_request_head);
    put_key_ms(b, "  ", "handshake_timeout", lim->handshake_timeout_ms);
    put_key_ms(b, "  ", "request_head_timeout", lim->request_head_timeout_ms);
    put_key_ms(b, "  ", "idle_timeout", lim->idle_timeout_ms);
    put_key_ms(b, "  ", "upstream_connect_timeout", lim->upstream_connect_timeout_ms);
    put_key_ms(b, "  ", "upstream_response_timeout", lim->upstream_response_timeout_ms);
    put_key_ms(b, "  ", "shutdown_delay", lim->shutdown_delay_ms);
    put_key_ms(b, "  ", "drain_timeout", lim->drain_timeout_ms);
    CHECK(cfg->num_listeners >= 1 && cfg->listeners != NULL);
    put(b, "listeners:\n");
    for (size_t i = 0; i < cfg->num_listeners; i++)
        emit_listener(b, &cfg->listeners[i]);
}

/* A refusal names the document, a line and a column: "fuzz.yaml:12:3: ...". */
static void check_error(const char *err)
{
    CHECK(strncmp(err, NAME ":", strlen(NAME ":")) == 0);
    const char *p = err + strlen(NAME ":");
    for (int field = 0; field < 2; field++) {
        CHECK(isdigit((unsigned char)*p) && *p != '0');
        while (isdigit((unsigned char)*p))
            p++;
        CHECK(*p == ':');
        p++;
    }
    CHECK(*p == ' ' && p[1] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    struct config *cfg = NULL;
    char err[1024] = "";
    int rc = config_load_string(&cfg, NAME, (const char *)data, size, err, sizeof(err));
    if (rc != 0) {
        CHECK(rc == -EINVAL && cfg == NULL);
        check_error(err);
        return 0;
    }
    CHECK(cfg != NULL);
    struct buf first = {0}, second = {0};
    emit(&first, cfg);
    config_free(cfg);
    cfg = NULL;
    rc = config_load_string(&cfg, NAME, buf_data(&first), buf_used(&first), err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "the written-back configuration does not load: %s\n%.*s", err,
                (int)buf_used(&first), buf_data(&first));
        abort();
    }
    emit(&second, cfg);
    config_free(cfg);
    if (buf_used(&first) != buf_used(&second) ||
        memcmp(buf_data(&first), buf_data(&second), buf_used(&first)) != 0) {
        fprintf(stderr, "the configuration does not re-load the same:\n%.*s---\n%.*s",
                (int)buf_used(&first), buf_data(&first), (int)buf_used(&second),
                buf_data(&second));
        abort();
    }
    buf_free(&first);
    buf_free(&second);
    return 0;
}
