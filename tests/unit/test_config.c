/* test_config.c: the YAML configuration loads with its defaults, parses every key, and refuses
 * every kind of mistake with the exact FILE:LINE:COLUMN message; no input leaks or crashes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/config.h"

/* CONTRACT section 3, verbatim but for the commented-out keys. */
static const char contract_example[] =
    "workers: auto                    # event-loop threads; auto = number of CPUs\n"
    "\n"
    "log:\n"
    "  level: info                    # debug | info | warn | error (events)\n"
    "  access: on                     # one access-log line per request or relayed connection\n"
    "\n"
    "credentials:                     # the server certificate presented on every TLS listener\n"
    "  dir: /etc/certgate/credentials # required when any listener terminates TLS\n"
    "  cert: tls.crt                  # leaf first, then intermediates (certbot: fullchain.pem)\n"
    "  key: tls.key                   # PEM private key (certbot: privkey.pem)\n"
    "  expiry_warning: 14d            # check, run and reload warn when the server certificate "
    "expires sooner\n"
    "\n"
    "ca_store:\n"
    "  dir: /etc/certgate/ca-store    # required when any listener verifies client certificates\n"
    "\n"
    "tenancy:\n"
    "  sni: \"{tenant}.example.com\"    # pattern that names the tenant from the TLS SNI; absen"
    "t: no tenancy\n"
    "  unknown: common                # common: an SNI that names no known tenant gets the comm"
    "on bundle; reject: fail the handshake\n"
    "  no_sni: common                 # common | reject\n"
    "\n"
    "reload:\n"
    "  debounce: 200ms                # quiet time after the last file event before a reload\n"
    "  poll_interval: 10s             # safety-net rescan (content hash) of both watched trees\n"
    "\n"
    "revocation:\n"
    "  crl: on                        # on: CRLs found in the CA store are enforced; off\n"
    "  ocsp: off                      # off | soft_fail | hard_fail (client leaf via its AIA OC"
    "SP URL)\n"
    "  ocsp_timeout: 2s\n"
    "  ocsp_cache_max: 1h             # never longer than the response's nextUpdate\n"
    "\n"
    "access:\n"
    "  allowed_subjects_file: /var/lib/certgate/allowed-subjects.json   # state file of the all"
    "owlist (section 6)\n"
    "\n"
    "admin:\n"
    "  address: 127.0.0.1:9901        # absent or \"off\": no admin listener\n"
    "  token_file: null               # when set, mutating admin calls need \"Authorization: Be"
    "arer <token>\"\n"
    "\n"
    "limits:\n"
    "  max_connections: 10000         # over all listeners; beyond it accepts pause\n"
    "  max_request_head: 64KiB        # request line + headers; over it: 431 (headers) or 414 ("
    "URI)\n"
    "  max_headers: 100               # over it: 431\n"
    "  handshake_timeout: 10s\n"
    "  request_head_timeout: 30s      # slowloris defence: 408 and close\n"
    "  idle_timeout: 5m               # keep-alive and tunnels\n"
    "  upstream_connect_timeout: 5s   # then 503\n"
    "  upstream_response_timeout: 60s # until the response head; then 504\n"
    "  shutdown_delay: 0s             # after SIGTERM: keep accepting this long with /ready 503 "
    "(Kubernetes: 5s)\n"
    "  drain_timeout: 30s\n"
    "\n"
    "listeners:                       # required, at least one\n"
    "  - name: cups                   # required, unique; used in logs and metrics\n"
    "    address: 0.0.0.0:8443        # required; host:port, [v6]:port; port 0 picks a free por"
    "t\n"
    "    mode: http                   # http: terminate TLS, proxy HTTP/1.1 (WebSocket upgrades"
    " tunnelled)\n"
    "                                 # tls: terminate TLS, relay the decrypted bytes\n"
    "                                 # tcp: relay bytes, no TLS (ports whose TLS ends elsewher"
    "e)\n"
    "    upstream: 127.0.0.1:8080     # required; host:port or unix:/path.sock\n"
    "    client_auth: require         # require | optional | none\n"
    "    verify: on                   # on: the chain must verify against common + tenant CAs\n"
    "                                 # off: any presented certificate is accepted and forwarde"
    "d, the upstream verifies it\n"
    "    forward_client_cert: sanitize_set   # sanitize | forward_only | append_forward | sanit"
    "ize_set | always_forward_only\n"
    "    client_cert_details: [cert, chain, subject, uri, dns]   # which XFCC keys to set; Hash"
    " is always set\n"
    "    client_cert_header: xfcc     # xfcc | rfc9440 | pem\n"
    "    subject_cn_pattern: null     # POSIX extended regex the leaf CN must match, e.g. \"^[0"
    "-9A-F]{16}$\"\n"
    "    require_allowed_subject: off # on: the leaf subject must be in the allowlist (section "
    "6)\n"
    "    proxy_protocol: off          # tcp and tls modes: send a PROXY protocol v2 header to t"
    "he upstream\n";

/* A listener that needs neither credentials nor a CA store. */
#define TCP_LISTENER                                                                               \
    "listeners:\n"                                                                                 \
    "  - name: a\n"                                                                                \
    "    address: 127.0.0.1:0\n"                                                                   \
    "    mode: tcp\n"                                                                              \
    "    upstream: 127.0.0.1:8080\n"

#define ALL_DETAILS                                                                                \
    (CC_DETAIL_CERT | CC_DETAIL_CHAIN | CC_DETAIL_SUBJECT | CC_DETAIL_URI | CC_DETAIL_DNS)

static struct config *load_ok(const char *yaml)
{
    char err[512] = "";
    struct config *cfg = NULL;
    int rc = config_load_string(&cfg, "t.yaml", yaml, strlen(yaml), err, sizeof(err));
    if (rc != 0)
        fail_msg("unexpected error %d: %s", rc, err);
    assert_non_null(cfg);
    return cfg;
}

static void expect_error(const char *yaml, const char *message)
{
    char err[512] = "";
    struct config *cfg = (struct config *)&err; /* must be reset to NULL */
    int rc = config_load_string(&cfg, "t.yaml", yaml, strlen(yaml), err, sizeof(err));
    assert_int_equal(rc, -EINVAL);
    assert_null(cfg);
    assert_string_equal(err, message);
}

/* expect_error_prefix is for messages whose tail comes from the C library or libyaml. */
static void expect_error_prefix(const char *yaml, const char *prefix)
{
    char err[512] = "";
    struct config *cfg = NULL;
    int rc = config_load_string(&cfg, "t.yaml", yaml, strlen(yaml), err, sizeof(err));
    assert_int_equal(rc, -EINVAL);
    assert_null(cfg);
    if (strncmp(err, prefix, strlen(prefix)) != 0)
        fail_msg("error \"%s\" does not start with \"%s\"", err, prefix);
}

/* well_formed_error: "t.yaml:LINE:COLUMN: message" with positive LINE and COLUMN. */
/* check_patterns: each of |bad| as a subject_cn_pattern is refused at its line and column with
 * a message containing |why|; each of |good| loads. */
static void check_patterns(const char *const *bad, size_t num_bad, const char *why,
                           const char *const *good, size_t num_good)
{
    static const char head[] = "listeners:\n- name: a\n  address: 127.0.0.1:1\n  upstream: "
                               "127.0.0.1:2\n  mode: tcp\n  subject_cn_pattern: \"";
    char yaml[512];
    for (size_t i = 0; i < num_bad; i++) {
        snprintf(yaml, sizeof(yaml), "%s%s\"\n", head, bad[i]);
        char err[512] = "";
        struct config *cfg = NULL;
        assert_int_equal(config_load_string(&cfg, "t.yaml", yaml, strlen(yaml), err, sizeof(err)),
                         -EINVAL);
        if (strstr(err, "t.yaml:6:23: invalid value") != err || strstr(err, why) == NULL)
            fail_msg("%s: %s", bad[i], err);
    }
    for (size_t i = 0; i < num_good; i++) {
        snprintf(yaml, sizeof(yaml), "%s%s\"\n", head, good[i]);
        config_free(load_ok(yaml));
    }
}

/* A regex whose repetitions glibc's regcomp would expand into gigabytes is refused before
 * regcomp (found by fuzz_config: "a+++...+" doubles per '+'). */
static void test_pattern_expansion_bounded(void **state)
{
    static const char *const bad[] = {"a++++++++++++++++++++++++++++++++++++++++",
                                      "((a{255}){255}){255}", "(x{100}){100}", "[a-z]{5000}"};
    static const char *const good[] = {"^[0-9A-F]{16}$", "^(gw|gateway)-[a-z0-9]{1,63}$",
                                       "^[[:xdigit:]]{16}(-[0-9]+)*$", "a{4000}"};
    (void)state;
    check_patterns(bad, sizeof(bad) / sizeof(bad[0]), "repetitions expand too far", good,
                   sizeof(good) / sizeof(good[0]));
}

/* Repetitions nested three deep (stacked operators count) are refused: glibc's regcomp took
 * 89 s over fuzz_config's "^3***...***" and 42 s over "((a*)+){2000}". */
static void test_pattern_nesting_bounded(void **state)
{
    static const char *const bad[] = {
        "^3*****************************************************************************",
        "a*++r",
        "((a*)+){2000}",
        "((a*)*){4000}",
        "((a*){2000})+",
        "x|(y?)*+"};
    static const char *const good[] = {"^([a-z0-9-]+\\\\.)+example\\\\.com$",
                                       "(a*)*",
                                       "a**",
                                       "(a*){1000}(b+){1000}",
                                       "[*+?]{3}(x[(]*)+",
                                       "\\\\(a*\\\\)+"};
    (void)state;
    check_patterns(bad, sizeof(bad) / sizeof(bad[0]), "nest more than two deep", good,
                   sizeof(good) / sizeof(good[0]));
}

static void assert_well_formed_error(const char *err)
{
    unsigned line = 0, col = 0;
    int used = 0;
    if (sscanf(err, "t.yaml:%u:%u: %n", &line, &col, &used) != 2 || line == 0 || col == 0 ||
        used == 0 || err[used] == '\0')
        fail_msg("malformed error message \"%s\"", err);
}

static void test_defaults(void **state)
{
    struct config *cfg = load_ok(TCP_LISTENER);
    assert_string_equal(cfg->path, "t.yaml");
    assert_int_equal(cfg->workers, config_usable_cpus("/sys/fs/cgroup"));
    assert_true(cfg->workers_auto);
    assert_int_equal(cfg->expiry_warning_ms, 14ull * 24 * 3600 * 1000);
    assert_int_equal(cfg->limits.shutdown_delay_ms, 0);
    assert_int_equal(cfg->log_level, LOG_LEVEL_INFO);
    assert_true(cfg->log_access);
    assert_null(cfg->credentials_dir);
    assert_null(cfg->credentials_cert);
    assert_null(cfg->credentials_key);
    assert_null(cfg->credentials_pkcs12);
    assert_null(cfg->credentials_pkcs12_password_file);
    assert_null(cfg->ca_store_dir);
    assert_null(cfg->tenancy_sni);
    assert_int_equal(cfg->tenancy_unknown, TENANCY_COMMON);
    assert_int_equal(cfg->tenancy_no_sni, TENANCY_COMMON);
    assert_int_equal(cfg->reload_debounce_ms, 200);
    assert_int_equal(cfg->reload_poll_interval_ms, 10000);
    assert_true(cfg->revocation_crl);
    assert_int_equal(cfg->revocation_ocsp, OCSP_OFF);
    assert_int_equal(cfg->ocsp_timeout_ms, 2000);
    assert_int_equal(cfg->ocsp_cache_max_ms, 3600000);
    assert_null(cfg->allowed_subjects_file);
    assert_null(cfg->admin_address.text); /* absent: no admin listener */
    assert_null(cfg->admin_token_file);
    assert_int_equal(cfg->limits.max_connections, 10000);
    assert_int_equal(cfg->limits.max_request_head, 65536);
    assert_int_equal(cfg->limits.max_headers, 100);
    assert_int_equal(cfg->limits.handshake_timeout_ms, 10000);
    assert_int_equal(cfg->limits.request_head_timeout_ms, 30000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 300000);
    assert_int_equal(cfg->limits.upstream_connect_timeout_ms, 5000);
    assert_int_equal(cfg->limits.upstream_response_timeout_ms, 60000);
    assert_int_equal(cfg->limits.drain_timeout_ms, 30000);
    assert_int_equal(cfg->num_listeners, 1);
    struct listener_config *l = &cfg->listeners[0];
    assert_string_equal(l->name, "a");
    assert_string_equal(l->address.text, "127.0.0.1:0");
    assert_int_equal(l->mode, LISTENER_TCP);
    assert_string_equal(l->upstream.text, "127.0.0.1:8080");
    assert_int_equal(l->line, 2);
    config_free(cfg);

    /* Listener defaults, on an http listener. */
    cfg = load_ok("credentials:\n"
                  "  dir: /c\n"
                  "ca_store:\n"
                  "  dir: /s\n"
                  "listeners:\n"
                  "- name: h\n"
                  "  address: 0.0.0.0:8443\n"
                  "  upstream: 127.0.0.1:8080\n");
    l = &cfg->listeners[0];
    assert_int_equal(l->line, 6);
    assert_int_equal(l->mode, LISTENER_HTTP);
    assert_int_equal(l->client_auth, CLIENT_AUTH_REQUIRE);
    assert_true(l->verify);
    assert_int_equal(l->forward_client_cert, FCC_SANITIZE_SET);
    assert_int_equal(l->client_cert_details, ALL_DETAILS);
    assert_int_equal(l->client_cert_header, CC_HEADER_XFCC);
    assert_null(l->subject_cn_pattern);
    assert_false(l->require_allowed_subject);
    assert_false(l->proxy_protocol);
    assert_string_equal(cfg->credentials_dir, "/c");
    assert_string_equal(cfg->credentials_cert, "tls.crt");
    assert_string_equal(cfg->credentials_key, "tls.key");
    assert_string_equal(cfg->ca_store_dir, "/s");
    config_free(cfg);
}

static void test_every_key(void **state)
{
    struct config *cfg = load_ok("workers: 3\n"
                                 "log:\n"
                                 "  level: debug\n"
                                 "  access: no\n"
                                 "credentials:\n"
                                 "  dir: /etc/cg/creds\n"
                                 "  pkcs12: server.p12\n"
                                 "  pkcs12_password_file: p12.pass\n"
                                 "ca_store:\n"
                                 "  dir: /etc/cg/ca\n"
                                 "tenancy:\n"
                                 "  sni: '{tenant}.example.com'\n"
                                 "  unknown: reject\n"
                                 "  no_sni: reject\n"
                                 "reload:\n"
                                 "  debounce: 0ms\n"
                                 "  poll_interval: 1m\n"
                                 "revocation:\n"
                                 "  crl: false\n"
                                 "  ocsp: hard_fail\n"
                                 "  ocsp_timeout: 1500ms\n"
                                 "  ocsp_cache_max: 2h\n"
                                 "access:\n"
                                 "  allowed_subjects_file: /var/lib/cg/allowed.json\n"
                                 "admin:\n"
                                 "  address: '[::1]:9000'\n"
                                 "  token_file: /etc/cg/token\n"
                                 "limits:\n"
                                 "  max_connections: 5\n"
                                 "  max_request_head: 8KiB\n"
                                 "  max_headers: 7\n"
                                 "  handshake_timeout: 1s\n"
                                 "  request_head_timeout: 2s\n"
                                 "  idle_timeout: 3s\n"
                                 "  upstream_connect_timeout: 4s\n"
                                 "  upstream_response_timeout: 5s\n"
                                 "  drain_timeout: 0s\n"
                                 "listeners:\n"
                                 "  - name: cups.v1-x_2\n"
                                 "    address: '[::]:8443'\n"
                                 "    mode: tls\n"
                                 "    upstream: unix:/run/app.sock\n"
                                 "    client_auth: optional\n"
                                 "    verify: on\n"
                                 "    forward_client_cert: append_forward\n"
                                 "    client_cert_details: [uri, dns]\n"
                                 "    client_cert_header: rfc9440\n"
                                 "    subject_cn_pattern: \"^[0-9A-F]{16}$\"\n"
                                 "    require_allowed_subject: yes\n"
                                 "    proxy_protocol: on\n"
                                 "  - name: second\n"
                                 "    address: localhost:9443\n"
                                 "    upstream: 10.0.0.1:80\n"
                                 "    client_auth: none\n"
                                 "    forward_client_cert: always_forward_only\n"
                                 "    client_cert_details: []\n"
                                 "    client_cert_header: pem\n"
                                 "    require_allowed_subject: false\n"
                                 "  - {name: third, address: '0.0.0.0:1', upstream: '[::1]:2',\n"
                                 "     mode: tcp, forward_client_cert: sanitize,\n"
                                 "     client_cert_details: [cert, chain, subject]}\n"
                                 "  - {name: fourth, address: '0.0.0.0:2', upstream: '[::1]:2',\n"
                                 "     forward_client_cert: forward_only, verify: yes}\n");
    assert_int_equal(cfg->workers, 3);
    assert_int_equal(cfg->log_level, LOG_LEVEL_DEBUG);
    assert_false(cfg->log_access);
    assert_string_equal(cfg->credentials_dir, "/etc/cg/creds");
    assert_null(cfg->credentials_cert);
    assert_null(cfg->credentials_key);
    assert_string_equal(cfg->credentials_pkcs12, "server.p12");
    assert_string_equal(cfg->credentials_pkcs12_password_file, "p12.pass");
    assert_string_equal(cfg->ca_store_dir, "/etc/cg/ca");
    assert_string_equal(cfg->tenancy_sni, "{tenant}.example.com");
    assert_int_equal(cfg->tenancy_unknown, TENANCY_REJECT);
    assert_int_equal(cfg->tenancy_no_sni, TENANCY_REJECT);
    assert_int_equal(cfg->reload_debounce_ms, 0);
    assert_int_equal(cfg->reload_poll_interval_ms, 60000);
    assert_false(cfg->revocation_crl);
    assert_int_equal(cfg->revocation_ocsp, OCSP_HARD_FAIL);
    assert_int_equal(cfg->ocsp_timeout_ms, 1500);
    assert_int_equal(cfg->ocsp_cache_max_ms, 7200000);
    assert_string_equal(cfg->allowed_subjects_file, "/var/lib/cg/allowed.json");
    assert_string_equal(cfg->admin_address.text, "[::1]:9000");
    assert_int_equal(cfg->admin_address.addr.ss_family, AF_INET6);
    assert_string_equal(cfg->admin_token_file, "/etc/cg/token");
    assert_int_equal(cfg->limits.max_connections, 5);
    assert_int_equal(cfg->limits.max_request_head, 8192);
    assert_int_equal(cfg->limits.max_headers, 7);
    assert_int_equal(cfg->limits.handshake_timeout_ms, 1000);
    assert_int_equal(cfg->limits.request_head_timeout_ms, 2000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 3000);
    assert_int_equal(cfg->limits.upstream_connect_timeout_ms, 4000);
    assert_int_equal(cfg->limits.upstream_response_timeout_ms, 5000);
    assert_int_equal(cfg->limits.drain_timeout_ms, 0);
    assert_int_equal(cfg->num_listeners, 4);

    struct listener_config *l = &cfg->listeners[0];
    assert_string_equal(l->name, "cups.v1-x_2");
    assert_int_equal(l->line, 39);
    assert_int_equal(l->address.addr.ss_family, AF_INET6);
    assert_int_equal(l->mode, LISTENER_TLS);
    assert_string_equal(l->upstream.text, "unix:/run/app.sock");
    assert_string_equal(l->upstream.unix_path, "/run/app.sock");
    assert_int_equal(l->client_auth, CLIENT_AUTH_OPTIONAL);
    assert_true(l->verify);
    assert_int_equal(l->forward_client_cert, FCC_APPEND_FORWARD);
    assert_int_equal(l->client_cert_details, CC_DETAIL_URI | CC_DETAIL_DNS);
    assert_int_equal(l->client_cert_header, CC_HEADER_RFC9440);
    assert_string_equal(l->subject_cn_pattern, "^[0-9A-F]{16}$");
    assert_true(l->require_allowed_subject);
    assert_true(l->proxy_protocol);

    l = &cfg->listeners[1];
    assert_string_equal(l->name, "second");
    assert_int_equal(l->line, 51);
    assert_int_equal(l->address.addr.ss_family, AF_INET);
    assert_int_equal(((struct sockaddr_in *)&l->address.addr)->sin_addr.s_addr,
                     htonl(INADDR_LOOPBACK));
    assert_int_equal(l->mode, LISTENER_HTTP);
    assert_int_equal(l->client_auth, CLIENT_AUTH_NONE);
    assert_true(l->verify);
    assert_int_equal(l->forward_client_cert, FCC_ALWAYS_FORWARD_ONLY);
    assert_int_equal(l->client_cert_details, 0);
    assert_int_equal(l->client_cert_header, CC_HEADER_PEM);
    assert_null(l->subject_cn_pattern);
    assert_false(l->require_allowed_subject);
    assert_false(l->proxy_protocol);

    l = &cfg->listeners[2];
    assert_string_equal(l->name, "third");
    assert_int_equal(l->mode, LISTENER_TCP);
    assert_int_equal(l->forward_client_cert, FCC_SANITIZE);
    assert_int_equal(l->client_cert_details, CC_DETAIL_CERT | CC_DETAIL_CHAIN | CC_DETAIL_SUBJECT);
    assert_int_equal(l->upstream.addr.ss_family, AF_INET6);
    assert_int_equal(cfg->listeners[3].forward_client_cert, FCC_FORWARD_ONLY);
    config_free(cfg);

    /* Everything switched the other way, and sections that are present but empty. */
    cfg = load_ok("workers: auto\n"
                  "log: {level: error, access: yes}\n"
                  "reload:\n"
                  "tenancy:\n"
                  "  sni: null\n"
                  "revocation: {crl: on, ocsp: soft_fail}\n"
                  "admin:\n"
                  "  address: off\n"
                  "  token_file: ~\n" TCP_LISTENER);
    assert_true(cfg->workers >= 1);
    assert_int_equal(cfg->log_level, LOG_LEVEL_ERROR);
    assert_true(cfg->log_access);
    assert_int_equal(cfg->revocation_ocsp, OCSP_SOFT_FAIL);
    assert_null(cfg->tenancy_sni);
    assert_null(cfg->admin_address.text);
    assert_int_equal(cfg->admin_address.addr_len, 0);
    assert_null(cfg->admin_token_file);
    config_free(cfg);

    cfg = load_ok("log: {level: warn}\n"
                  "credentials: {dir: creds, cert: fullchain.pem, key: privkey.pem}\n"
                  "admin: {address: 'localhost:0'}\n" TCP_LISTENER);
    assert_int_equal(cfg->log_level, LOG_LEVEL_WARN);
    assert_string_equal(cfg->credentials_dir, "creds");
    assert_string_equal(cfg->credentials_cert, "fullchain.pem");
    assert_string_equal(cfg->credentials_key, "privkey.pem");
    assert_string_equal(cfg->admin_address.text, "localhost:0");
    config_free(cfg);
}

/* The request-header keys of an http listener (issue 9 items 3-4, issue 11 item 4). */
#define HTTP_HEAD                                                                                  \
    "credentials: {dir: /c}\nca_store: {dir: /s}\nlisteners:\n  - name: h\n"                       \
    "    address: 127.0.0.1:1\n    upstream: 127.0.0.1:2\n"

static void test_header_keys(void **state)
{
    struct config *cfg = load_ok(HTTP_HEAD);
    struct listener_config *l = &cfg->listeners[0];
    assert_int_equal(l->forwarded_headers, FORWARDED_SET);
    assert_int_equal(l->headers_with_underscores, UNDERSCORES_DROP);
    assert_int_equal(l->strip_headers.num, 0);
    config_free(cfg);

    cfg = load_ok(HTTP_HEAD
                  "    forwarded_headers: append\n"
                  "    headers_with_underscores: forward\n"
                  "    strip_headers: [X-Site-Identity, x_internal_USER, \"a!#$%&'*+.^`|~\"]\n");
    l = &cfg->listeners[0];
    assert_int_equal(l->forwarded_headers, FORWARDED_APPEND);
    assert_int_equal(l->headers_with_underscores, UNDERSCORES_FORWARD);
    assert_int_equal(l->strip_headers.num, 3);
    assert_string_equal(l->strip_headers.names[0], "x-site-identity");
    assert_string_equal(l->strip_headers.names[1], "x-internal-user");
    assert_string_equal(l->strip_headers.names[2], "a!#$%&'*+.^`|~");
    config_free(cfg);

    cfg = load_ok(HTTP_HEAD "    forwarded_headers: off\n    strip_headers: []\n");
    assert_int_equal(cfg->listeners[0].forwarded_headers, FORWARDED_OFF);
    assert_int_equal(cfg->listeners[0].strip_headers.num, 0);
    config_free(cfg);
    cfg = load_ok(HTTP_HEAD "    strip_headers: ~\n");
    assert_int_equal(cfg->listeners[0].strip_headers.num, 0);
    config_free(cfg);

    expect_error(HTTP_HEAD "    forwarded_headers: replace\n",
                 "t.yaml:7:24: invalid value \"replace\" for listeners[0].forwarded_headers: "
                 "expected set, append or off");
    expect_error(HTTP_HEAD "    headers_with_underscores: yes\n",
                 "t.yaml:7:31: invalid value \"yes\" for listeners[0].headers_with_underscores: "
                 "expected drop or forward");
    expect_error(HTTP_HEAD "    strip_headers: [ok, \"bad name\"]\n",
                 "t.yaml:7:25: invalid value \"bad name\" in listeners[0].strip_headers: expected "
                 "a header name (letters, digits and !#$%&'*+-.^_`|~, at most 128 bytes)");
    expect_error(HTTP_HEAD "    strip_headers: [\"x:y\"]\n",
                 "t.yaml:7:21: invalid value \"x:y\" in listeners[0].strip_headers: expected "
                 "a header name (letters, digits and !#$%&'*+-.^_`|~, at most 128 bytes)");
    expect_error(HTTP_HEAD "    strip_headers: ['']\n",
                 "t.yaml:7:21: invalid value \"\" in listeners[0].strip_headers: expected "
                 "a header name (letters, digits and !#$%&'*+-.^_`|~, at most 128 bytes)");
    expect_error(HTTP_HEAD "    strip_headers: [Transfer_Encoding]\n",
                 "t.yaml:7:21: invalid value \"Transfer_Encoding\" in listeners[0].strip_headers: "
                 "certgate frames transfer-encoding itself, it cannot be stripped");
    expect_error(HTTP_HEAD "    strip_headers: [x-a, X_A]\n",
                 "t.yaml:7:26: duplicate value \"X_A\" in listeners[0].strip_headers");
    expect_error(HTTP_HEAD "    strip_headers: x-a\n",
                 "t.yaml:7:20: listeners[0].strip_headers: expected a sequence of header names "
                 "such as [x-client-id], got a scalar");
    expect_error_prefix(HTTP_HEAD "    strip_headers: [[x]]\n", "t.yaml:7:21: ");

    char yaml[4096] = HTTP_HEAD "    strip_headers: [";
    for (int i = 0; i < CONFIG_MAX_STRIP_HEADERS + 1; i++)
        snprintf(yaml + strlen(yaml), sizeof(yaml) - strlen(yaml), "%sx-%d", i ? ", " : "", i);
    strcat(yaml, "]\n");
    expect_error(yaml, "t.yaml:7:20: listeners[0].strip_headers: at most 64 names are allowed");
    char name[CONFIG_MAX_HEADER_NAME + 2];
    memset(name, 'a', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    snprintf(yaml, sizeof(yaml), HTTP_HEAD "    strip_headers: [%s]\n", name);
    expect_error_prefix(yaml, "t.yaml:7:21: invalid value \"aaaa");
    name[sizeof(name) - 2] = '\0';
    snprintf(yaml, sizeof(yaml), HTTP_HEAD "    strip_headers: [%s]\n", name);
    config_free(load_ok(yaml));

    /* Only http listeners have request headers. */
    expect_error(TCP_LISTENER "    strip_headers: [x-a]\n",
                 "t.yaml:6:5: listener \"a\": strip_headers is only for http listeners");
    expect_error(TCP_LISTENER "    headers_with_underscores: drop\n",
                 "t.yaml:6:5: listener \"a\": headers_with_underscores is only for http listeners");
    expect_error(TCP_LISTENER "    forwarded_headers: set\n",
                 "t.yaml:6:5: listener \"a\": forwarded_headers is only for http listeners");
}

/* alpn and upstream_protocol (issue 13). */
static void test_alpn_keys(void **state)
{
    struct config *cfg = load_ok(HTTP_HEAD);
    assert_int_equal(cfg->listeners[0].alpn, ALPN_H2 | ALPN_HTTP11);
    assert_int_equal(cfg->listeners[0].upstream_protocol, UPSTREAM_HTTP1);
    config_free(cfg);
    cfg = load_ok(HTTP_HEAD "    upstream_protocol: h2c\n");
    assert_int_equal(cfg->listeners[0].alpn, ALPN_H2);
    assert_int_equal(cfg->listeners[0].upstream_protocol, UPSTREAM_H2C);
    config_free(cfg);
    cfg = load_ok(HTTP_HEAD "    alpn: [http/1.1]\n");
    assert_int_equal(cfg->listeners[0].alpn, ALPN_HTTP11);
    config_free(cfg);
    cfg = load_ok(HTTP_HEAD "    alpn: [http/1.1, h2]\n    upstream_protocol: http1\n");
    assert_int_equal(cfg->listeners[0].alpn, ALPN_H2 | ALPN_HTTP11);
    config_free(cfg);
    expect_error(HTTP_HEAD "    alpn: [h3]\n",
                 "t.yaml:7:12: invalid value \"h3\" in listeners[0].alpn: expected h2 or http/1.1");
    expect_error(HTTP_HEAD "    alpn: []\n",
                 "t.yaml:7:11: listeners[0].alpn: name at least one of h2 and http/1.1");
    expect_error(HTTP_HEAD "    alpn: [h2, h2]\n",
                 "t.yaml:7:16: duplicate value \"h2\" in listeners[0].alpn");
    expect_error(HTTP_HEAD "    alpn: h2\n",
                 "t.yaml:7:11: listeners[0].alpn: expected a sequence such as [h2, http/1.1], "
                 "got a scalar");
    expect_error(HTTP_HEAD "    upstream_protocol: h2c\n    alpn: [h2, http/1.1]\n",
                 "t.yaml:8:11: listener \"h\": alpn offers http/1.1, but upstream_protocol h2c "
                 "forwards only HTTP/2 streams; use alpn: [h2] or upstream_protocol: http1");
    expect_error(HTTP_HEAD "    upstream_protocol: h3\n",
                 "t.yaml:7:24: invalid value \"h3\" for listeners[0].upstream_protocol: "
                 "expected http1 or h2c");
    expect_error(HTTP_HEAD "    mode: tls\n    alpn: [h2]\n",
                 "t.yaml:8:5: listener \"h\": alpn is only for http listeners");
}

static void test_contract_example(void **state)
{
    struct config *cfg = load_ok(contract_example);
    assert_int_equal(cfg->num_listeners, 1);
    assert_string_equal(cfg->listeners[0].name, "cups");
    assert_string_equal(cfg->listeners[0].address.text, "0.0.0.0:8443");
    assert_int_equal(cfg->listeners[0].mode, LISTENER_HTTP);
    assert_int_equal(cfg->listeners[0].client_cert_details, ALL_DETAILS);
    assert_null(cfg->listeners[0].subject_cn_pattern);
    assert_string_equal(cfg->credentials_dir, "/etc/certgate/credentials");
    assert_string_equal(cfg->credentials_cert, "tls.crt");
    assert_string_equal(cfg->ca_store_dir, "/etc/certgate/ca-store");
    assert_string_equal(cfg->tenancy_sni, "{tenant}.example.com");
    assert_string_equal(cfg->allowed_subjects_file, "/var/lib/certgate/allowed-subjects.json");
    assert_string_equal(cfg->admin_address.text, "127.0.0.1:9901");
    assert_null(cfg->admin_token_file);
    assert_int_equal(cfg->limits.drain_timeout_ms, 30000);
    config_free(cfg);
}

static void test_error_positions(void **state)
{
    expect_error("listeners:\n"
                 "  - name: a\n"
                 "    adress: 127.0.0.1:1\n",
                 "t.yaml:3:5: unknown key \"adress\" in listener; did you mean \"address\"?");
    expect_error("workers: 2\nfoo: 1\n" TCP_LISTENER,
                 "t.yaml:2:1: unknown key \"foo\" at top level");
    expect_error("log:\n  level: info\n  level: warn\n" TCP_LISTENER,
                 "t.yaml:3:3: duplicate key \"level\" in log");
    expect_error(TCP_LISTENER "log: {}\nlog: {}\n",
                 "t.yaml:7:1: duplicate key \"log\" at top level");
    expect_error("log: [a]\n" TCP_LISTENER, "t.yaml:1:6: log: expected a mapping, got a sequence");
    expect_error("log:\n  level: verbose\n" TCP_LISTENER,
                 "t.yaml:2:10: invalid value \"verbose\" for log.level: expected debug, info, warn "
                 "or error");
    expect_error("log:\n  level: {a: b}\n" TCP_LISTENER,
                 "t.yaml:2:10: log.level: expected a scalar, got a mapping");
    expect_error("reload:\n  debounce: 10x\n" TCP_LISTENER,
                 "t.yaml:2:13: invalid value \"10x\" for reload.debounce: expected a duration such "
                 "as 250ms, 10s, 5m or 1h (at most a year)");
    expect_error("limits:\n  idle_timeout: 0s\n" TCP_LISTENER,
                 "t.yaml:2:17: invalid value \"0s\" for limits.idle_timeout: must be greater than "
                 "zero");
    expect_error("limits:\n  max_request_head: 64KB\n" TCP_LISTENER,
                 "t.yaml:2:21: invalid value \"64KB\" for limits.max_request_head: expected a size "
                 "such as 512, 64KiB or 1MiB");
    expect_error("limits:\n  max_connections: 4294967296\n" TCP_LISTENER,
                 "t.yaml:2:20: invalid value \"4294967296\" for limits.max_connections: expected "
                 "an integer from 1 to 10000000");
    expect_error("limits:\n  max_headers: 0\n" TCP_LISTENER,
                 "t.yaml:2:16: invalid value \"0\" for limits.max_headers: expected an integer "
                 "from 1 to 100000");
    expect_error("limits:\n  max_headers: 4000000000\n" TCP_LISTENER,
                 "t.yaml:2:16: invalid value \"4000000000\" for limits.max_headers: expected an "
                 "integer from 1 to 100000");
    expect_error("limits:\n  max_request_head: 1GiB\n" TCP_LISTENER,
                 "t.yaml:2:21: invalid value for limits.max_request_head: expected a size from "
                 "256 to 16MiB");
    expect_error("limits:\n  max_header: 10\n" TCP_LISTENER,
                 "t.yaml:2:3: unknown key \"max_header\" in limits; did you mean \"max_headers\"?");
    expect_error("limits:\n  shutdown_dealy: 5s\n" TCP_LISTENER,
                 "t.yaml:2:3: unknown key \"shutdown_dealy\" in limits; did you mean "
                 "\"shutdown_delay\"?");
    expect_error("credentials:\n  expiry_warn: 7d\n" TCP_LISTENER,
                 "t.yaml:2:3: unknown key \"expiry_warn\" in credentials; did you mean "
                 "\"expiry_warning\"?");
    /* Too far from any key: no guess. */
    expect_error("limits:\n  xyz: 1\n" TCP_LISTENER, "t.yaml:2:3: unknown key \"xyz\" in limits");
    expect_error("workers: 0\n" TCP_LISTENER,
                 "t.yaml:1:10: invalid value \"0\" for workers: expected auto or 1 to 256");
    expect_error("workers: 257\n" TCP_LISTENER,
                 "t.yaml:1:10: invalid value \"257\" for workers: expected auto or 1 to 256");
    expect_error("workers: -1\n" TCP_LISTENER,
                 "t.yaml:1:10: invalid value \"-1\" for workers: expected auto or 1 to 256");
    expect_error("revocation:\n  ocsp: on\n" TCP_LISTENER,
                 "t.yaml:2:9: invalid value \"on\" for revocation.ocsp: expected off, soft_fail or "
                 "hard_fail");
    expect_error("listeners:\n"
                 "  - name: a\n"
                 "    address: 127.0.0.1:1\n"
                 "    upstream: 127.0.0.1:2\n"
                 "    mode: tcp\n"
                 "    verify: maybe\n",
                 "t.yaml:6:13: invalid value \"maybe\" for listeners[0].verify: expected on, off, "
                 "true, false, yes or no");
}

static void test_error_structure(void **state)
{
    expect_error("", "t.yaml:1:1: the configuration is empty: expected a mapping with listeners");
    expect_error("# nothing\n\n",
                 "t.yaml:1:1: the configuration is empty: expected a mapping with listeners");
    expect_error("- a\n", "t.yaml:1:1: expected a mapping at top level, got a sequence");
    expect_error("\n  hello\n", "t.yaml:2:3: expected a mapping at top level, got a scalar");
    expect_error("workers: 2\n", "t.yaml:1:1: missing required key \"listeners\" at top level");
    expect_error("listeners: []\n", "t.yaml:1:12: listeners: at least one listener is required");
    expect_error("listeners:\n", "t.yaml:1:11: listeners: at least one listener is required");
    char *many = malloc(1100 * 3 + 16);
    assert_non_null(many);
    strcpy(many, "listeners: [");
    for (int i = 0; i < 1025; i++)
        strcat(many, i ? ",{}" : "{}");
    strcat(many, "]\n");
    expect_error(many, "t.yaml:1:12: listeners: at most 1024 listeners are allowed");
    free(many);
    expect_error("listeners: {a: b}\n",
                 "t.yaml:1:12: listeners: expected a sequence, got a mapping");
    expect_error("listeners:\n  - foo\n",
                 "t.yaml:2:5: listeners[0]: expected a mapping, got a scalar");
    expect_error("listeners:\n  - [a]: b\n",
                 "t.yaml:2:5: expected a key name in listener, got a sequence");
    expect_error(TCP_LISTENER "---\nworkers: 1\n", "t.yaml:7:1: only one YAML document is allowed");
    expect_error("log: [\n" TCP_LISTENER,
                 "t.yaml:3:3: syntax error: did not find expected node content while parsing a "
                 "flow node");
    expect_error("log: [a\nlisteners: 1\n",
                 "t.yaml:2:10: syntax error: did not find expected ',' or ']' while parsing a flow "
                 "sequence that started at 1:6");
    expect_error("listeners:\n  - name: a\n   bad\n",
                 "t.yaml:3:4: syntax error: did not find expected '-' indicator while parsing a "
                 "block collection that started at 2:3");
    expect_error("a: *b\n" TCP_LISTENER, "t.yaml:1:4: syntax error: found undefined alias");
    expect_error("log:\n  level: \"info\\0\"\n" TCP_LISTENER,
                 "t.yaml:2:10: log.level: contains a NUL byte");
    /* User text is escaped in messages. */
    expect_error(
        "log:\n  level: \"a\\e[31m\\\"\"\n" TCP_LISTENER,
        "t.yaml:2:10: invalid value \"a\\x1b[31m\\\"\" for log.level: expected debug, info, "
        "warn or error");
    /* Invalid UTF-8 is placed by its byte offset. */
    expect_error_prefix("workers: 1\nlog:\n  level: \xff\n", "t.yaml:3:10: syntax error: ");
}

static void test_error_listeners(void **state)
{
    expect_error("listeners:\n  - address: 127.0.0.1:1\n    upstream: 127.0.0.1:2\n",
                 "t.yaml:2:5: missing required key \"name\" in listener");
    expect_error("listeners:\n  - name: a\n    upstream: 127.0.0.1:2\n",
                 "t.yaml:2:5: missing required key \"address\" in listener \"a\"");
    expect_error("listeners:\n  - name: a\n    address: 127.0.0.1:2\n",
                 "t.yaml:2:5: missing required key \"upstream\" in listener \"a\"");
    expect_error("listeners:\n  - name: a b\n",
                 "t.yaml:2:11: invalid value \"a b\" for listeners[0].name: only A-Z a-z 0-9 _ . - "
                 "are allowed");
    expect_error("listeners:\n  - name: ''\n", "t.yaml:2:11: listeners[0].name must not be empty");
    expect_error("listeners:\n  - name:\n", "t.yaml:2:10: listeners[0].name must not be empty");
    expect_error(TCP_LISTENER "  - name: a\n"
                              "    address: 127.0.0.1:1\n"
                              "    mode: tcp\n"
                              "    upstream: 127.0.0.1:2\n",
                 "t.yaml:6:11: duplicate listener name \"a\"");
    expect_error("listeners:\n"
                 "  - {name: a, address: '127.0.0.1:7', mode: tcp, upstream: '127.0.0.1:2'}\n"
                 "  - {name: b, address: '127.0.0.1:7', mode: tcp, upstream: '127.0.0.1:2'}\n",
                 "t.yaml:3:24: listener \"b\" uses the same address as listener a");
    expect_error("listeners:\n"
                 "  - name: a\n"
                 "    address: 127.0.0.1:1\n"
                 "    upstream: 127.0.0.1:2\n"
                 "    client_auth: none\n"
                 "    proxy_protocol: on\n",
                 "t.yaml:6:21: listener \"a\": proxy_protocol is only for tcp and tls listeners");
    expect_error("listeners:\n"
                 "  - name: a\n"
                 "    mode: tcp\n"
                 "    address: 127.0.0.1:1\n"
                 "    upstream: 127.0.0.1:0\n",
                 "t.yaml:5:15: invalid value \"127.0.0.1:0\" for listeners[0].upstream: the "
                 "upstream port cannot be 0");
    expect_error("listeners:\n"
                 "  - name: a\n"
                 "    address: unix:/x.sock\n",
                 "t.yaml:3:14: invalid value \"unix:/x.sock\" for listeners[0].address: a unix "
                 "socket is not allowed here");
    expect_error("listeners:\n"
                 "  - name: a\n"
                 "    address: ::1:8443\n",
                 "t.yaml:3:14: invalid value \"::1:8443\" for listeners[0].address: an IPv6 "
                 "address is written [v6]:port");
    expect_error("listeners:\n"
                 "  - name: a\n"
                 "    address: example.com:8443\n",
                 "t.yaml:3:14: invalid value \"example.com:8443\" for listeners[0].address: the "
                 "host must be a numeric IP address or localhost");
    expect_error(
        "listeners:\n"
        "  - name: a\n"
        "    mode: https\n",
        "t.yaml:3:11: invalid value \"https\" for listeners[0].mode: expected http, tls or "
        "tcp");
    expect_error("listeners:\n"
                 "  - name: a\n"
                 "    client_cert_details: [cert, issuer]\n",
                 "t.yaml:3:33: invalid value \"issuer\" in listeners[0].client_cert_details: "
                 "expected cert, chain, subject, uri or dns");
    expect_error("listeners:\n"
                 "  - name: a\n"
                 "    client_cert_details: [dns, dns]\n",
                 "t.yaml:3:32: duplicate value \"dns\" in listeners[0].client_cert_details");
    expect_error("listeners:\n"
                 "  - name: a\n"
                 "    client_cert_details: cert\n",
                 "t.yaml:3:26: listeners[0].client_cert_details: expected a sequence such as "
                 "[cert, chain, subject, uri, dns], got a scalar");
    expect_error_prefix(
        "listeners:\n"
        "  - name: a\n"
        "    subject_cn_pattern: '^([0-9]$'\n",
        "t.yaml:3:25: invalid value \"^([0-9]$\" for listeners[0].subject_cn_pattern: ");
}

static void test_error_dependencies(void **state)
{
    expect_error("listeners:\n"
                 "  - name: a\n"
                 "    address: 127.0.0.1:1\n"
                 "    upstream: 127.0.0.1:2\n",
                 "t.yaml:2:5: listener \"a\" terminates TLS, so credentials.dir is required");
    expect_error("credentials: {dir: /c}\n"
                 "listeners:\n"
                 "  - name: a\n"
                 "    address: 127.0.0.1:1\n"
                 "    mode: tls\n"
                 "    upstream: 127.0.0.1:2\n",
                 "t.yaml:3:5: listener \"a\" verifies client certificates, so ca_store.dir is "
                 "required");
    /* No CA store is needed when nothing is verified. */
    struct config *cfg = load_ok("credentials: {dir: /c}\n"
                                 "listeners:\n"
                                 "  - {name: a, address: '127.0.0.1:1', upstream: '127.0.0.1:2',\n"
                                 "     client_auth: none}\n"
                                 "  - {name: b, address: '127.0.0.1:3', upstream: '127.0.0.1:2',\n"
                                 "     verify: off, mode: tls}\n");
    config_free(cfg);
    expect_error("credentials: {dir: /c}\n"
                 "ca_store: {dir: /s}\n"
                 "listeners:\n"
                 "  - {name: a, address: '127.0.0.1:1', upstream: '127.0.0.1:2',\n"
                 "     require_allowed_subject: on}\n",
                 "t.yaml:4:5: listener \"a\" requires allowed subjects, so "
                 "access.allowed_subjects_file is required");
    expect_error("credentials: {dir: /c}\n"
                 "access: {allowed_subjects_file: /a.json}\n"
                 "listeners:\n"
                 "  - {name: a, address: '127.0.0.1:1', upstream: '127.0.0.1:2',\n"
                 "     require_allowed_subject: on, verify: off}\n",
                 "t.yaml:4:5: listener \"a\": require_allowed_subject needs a verified client "
                 "certificate (mode http or tls, client_auth require or optional, verify on)");
    expect_error("access: {allowed_subjects_file: /a.json}\n"
                 "listeners:\n"
                 "  - {name: a, address: '127.0.0.1:1', upstream: '127.0.0.1:2',\n"
                 "     require_allowed_subject: on, mode: tcp}\n",
                 "t.yaml:3:5: listener \"a\": require_allowed_subject needs a verified client "
                 "certificate (mode http or tls, client_auth require or optional, verify on)");
    expect_error("credentials:\n"
                 "  dir: /c\n"
                 "  pkcs12: a.p12\n"
                 "  key: tls.key\n" TCP_LISTENER,
                 "t.yaml:4:3: credentials.key cannot be combined with credentials.pkcs12");
    expect_error("credentials:\n"
                 "  cert: a.crt\n"
                 "  pkcs12: a.p12\n" TCP_LISTENER,
                 "t.yaml:2:3: credentials.cert cannot be combined with credentials.pkcs12");
    expect_error("credentials:\n"
                 "  pkcs12_password_file: p\n" TCP_LISTENER,
                 "t.yaml:2:3: credentials.pkcs12_password_file needs credentials.pkcs12");
    expect_error("tenancy:\n  sni: example.com\n" TCP_LISTENER,
                 "t.yaml:2:8: invalid value \"example.com\" for tenancy.sni: must contain {tenant} "
                 "exactly once");
    expect_error("tenancy:\n  sni: '{tenant}.{tenant}.com'\n" TCP_LISTENER,
                 "t.yaml:2:8: invalid value \"{tenant}.{tenant}.com\" for tenancy.sni: must "
                 "contain {tenant} exactly once");
    expect_error("tenancy:\n  sni: '{tenant}.{x}.com'\n" TCP_LISTENER,
                 "t.yaml:2:8: invalid value \"{tenant}.{x}.com\" for tenancy.sni: only {tenant} "
                 "and host name characters are allowed");
    expect_error("tenancy:\n  unknown: allow\n" TCP_LISTENER,
                 "t.yaml:2:12: invalid value \"allow\" for tenancy.unknown: expected common or "
                 "reject");
    expect_error("admin:\n  address: 127.0.0.1\n" TCP_LISTENER,
                 "t.yaml:2:12: invalid value \"127.0.0.1\" for admin.address: expected host:port");
}

static void test_durations(void **state)
{
    static const struct {
        const char *text;
        uint64_t ms;
    } good[] = {
        {"0ms", 0},
        {"250ms", 250},
        {"10s", 10000},
        {"5m", 300000},
        {"1h", 3600000},
        {"14d", 1209600000ull},
        {"366d", 31622400000ull},
        {"0010s", 10000},
        {"8784h", 31622400000ull},
        {"527040m", 31622400000ull},
        {"31622400000ms", 31622400000ull},
    };
    static const char *const bad[] = {
        "",
        "ms",
        "10",
        "10 s",
        " 10s",
        "10s ",
        "-1s",
        "+1s",
        "1.5s",
        "10S",
        "10sec",
        "1D",
        "367d",
        "0x10s",
        "1h1m",
        "8785h",
        "31622400001ms",
        "18446744073709551615ms",
        "18446744073709551616ms",
        "99999999999999999999999h",
    };
    uint64_t v;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = 12345;
        assert_int_equal(config_parse_duration_ms(&v, good[i].text), 0);
        assert_int_equal(v, good[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 12345;
        if (config_parse_duration_ms(&v, bad[i]) != -EINVAL)
            fail_msg("duration \"%s\" was accepted", bad[i]);
        assert_int_equal(v, 12345);
    }
    assert_int_equal(config_parse_duration_ms(&v, NULL), -EINVAL);
}

static void test_cpu_max(void **state)
{
    static const struct {
        const char *text;
        unsigned cpus;
    } good[] = {
        {"max 100000", 0},      {"max 100000\n", 0}, {"100000 100000", 1},
        {"150000 100000\n", 2}, {"50000 100000", 1}, {"200000 100000", 2},
        {"200001 100000", 3},   {"1 1000000", 1},    {"400000000 1000", 256},
    };
    static const char *const bad[] = {
        "",
        "max",
        "100000",
        "0 100000",
        "max 0",
        "-1 100000",
        "100000  100000",
        "100000 100000 1",
        "abc 100000",
        "100000 100000\n\n",
        "100000 10000000",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        unsigned v = 12345;
        if (config_parse_cpu_max(&v, good[i].text) != 0)
            fail_msg("cpu.max \"%s\" was refused", good[i].text);
        assert_int_equal(v, good[i].cpus);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned v = 12345;
        if (config_parse_cpu_max(&v, bad[i]) != -EINVAL)
            fail_msg("cpu.max \"%s\" was accepted", bad[i]);
        assert_int_equal(v, 12345);
    }
    /* Whatever the machine, auto is at least one worker and at most the affinity mask. */
    unsigned n = config_usable_cpus("/nonexistent");
    assert_true(n >= 1 && n <= 256);
    assert_true(config_usable_cpus("/sys/fs/cgroup") <= n);
}

static void test_colliding_addresses(void **state)
{
#define TWO(a, b)                                                                                  \
    "listeners:\n  - {name: a, mode: tcp, address: \"" a "\", upstream: \"127.0.0.1:1\"}\n"        \
    "  - {name: b, mode: tcp, address: \"" b "\", upstream: \"127.0.0.1:1\"}\n"
    expect_error(TWO("0.0.0.0:8443", "127.0.0.1:8443"),
                 "t.yaml:3:35: listener \"b\": address 127.0.0.1:8443 overlaps listener a's "
                 "0.0.0.0:8443 (a wildcard address takes the port on every interface)");
    expect_error(TWO("127.0.0.1:8443", "0.0.0.0:8443"),
                 "t.yaml:3:35: listener \"b\": address 0.0.0.0:8443 overlaps listener a's "
                 "127.0.0.1:8443 (a wildcard address takes the port on every interface)");
    expect_error_prefix(TWO("[::]:8443", "127.0.0.1:8443"), "t.yaml:3:35: listener \"b\": address");
    expect_error_prefix(TWO("[::1]:8443", "[::]:8443"), "t.yaml:3:35: listener \"b\": address");
    struct config *cfg = load_ok(TWO("0.0.0.0:8443", "127.0.0.1:8444"));
    config_free(cfg);
    cfg = load_ok(TWO("127.0.0.1:8443", "127.0.0.2:8443"));
    config_free(cfg);
    cfg = load_ok(TWO("0.0.0.0:8443", "[::1]:8443"));
    config_free(cfg);
    cfg = load_ok(TWO("0.0.0.0:0", "127.0.0.1:0"));
    config_free(cfg);
#undef TWO
}

static void test_sizes(void **state)
{
    static const struct {
        const char *text;
        size_t len;
    } good[] = {
        {"0", 0},
        {"512", 512},
        {"64KiB", 65536},
        {"1MiB", 1048576},
        {"1GiB", 1073741824},
        {"16777215GiB", (size_t)16777215 << 30},
        {"18446744073709551615", SIZE_MAX},
    };
    static const char *const bad[] = {
        "",
        "KiB",
        "1KB",
        "1kib",
        "1 KiB",
        "-1",
        "+1",
        "1.5MiB",
        "1TiB",
        "0x10",
        "1B",
        " 1",
        "1 ",
        "17179869184GiB",
        "18446744073709551616",
        "18014398509481984KiB",
    };
    size_t v;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = 12345;
        assert_int_equal(config_parse_size(&v, good[i].text), 0);
        assert_int_equal(v, good[i].len);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 12345;
        if (config_parse_size(&v, bad[i]) != -EINVAL)
            fail_msg("size \"%s\" was accepted", bad[i]);
        assert_int_equal(v, 12345);
    }
    assert_int_equal(config_parse_size(&v, NULL), -EINVAL);
}

static void endpoint_free(struct config_endpoint *ep)
{
    free(ep->text);
    free(ep->unix_path);
}

static void test_endpoints(void **state)
{
    struct config_endpoint ep;
    char buf[INET6_ADDRSTRLEN];

    assert_int_equal(config_parse_endpoint(&ep, "10.1.2.3:8443", false), 0);
    assert_string_equal(ep.text, "10.1.2.3:8443");
    assert_null(ep.unix_path);
    assert_int_equal(ep.addr.ss_family, AF_INET);
    assert_int_equal(ep.addr_len, sizeof(struct sockaddr_in));
    struct sockaddr_in *sin = (struct sockaddr_in *)&ep.addr;
    assert_int_equal(ntohs(sin->sin_port), 8443);
    assert_string_equal(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)), "10.1.2.3");
    endpoint_free(&ep);

    assert_int_equal(config_parse_endpoint(&ep, "localhost:65535", false), 0);
    sin = (struct sockaddr_in *)&ep.addr;
    assert_int_equal(ntohs(sin->sin_port), 65535);
    assert_string_equal(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)), "127.0.0.1");
    endpoint_free(&ep);

    assert_int_equal(config_parse_endpoint(&ep, "0.0.0.0:0", false), 0);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ep.addr)->sin_port), 0);
    endpoint_free(&ep);

    assert_int_equal(config_parse_endpoint(&ep, "[2001:db8::1]:443", false), 0);
    assert_int_equal(ep.addr.ss_family, AF_INET6);
    assert_int_equal(ep.addr_len, sizeof(struct sockaddr_in6));
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ep.addr;
    assert_int_equal(ntohs(sin6->sin6_port), 443);
    assert_string_equal(inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf)), "2001:db8::1");
    endpoint_free(&ep);

    assert_int_equal(config_parse_endpoint(&ep, "[::]:8443", false), 0);
    endpoint_free(&ep);
    assert_int_equal(config_parse_endpoint(&ep, "[::ffff:10.0.0.1]:1", false), 0);
    endpoint_free(&ep);
    assert_int_equal(config_parse_endpoint(&ep, "[fe80::1%7]:80", false), 0);
    assert_int_equal(((struct sockaddr_in6 *)&ep.addr)->sin6_scope_id, 7);
    endpoint_free(&ep);
    assert_int_equal(config_parse_endpoint(&ep, "[fe80::1%lo]:80", false), 0);
    assert_int_equal(((struct sockaddr_in6 *)&ep.addr)->sin6_scope_id, 1);
    endpoint_free(&ep);

    assert_int_equal(config_parse_endpoint(&ep, "unix:/run/app.sock", true), 0);
    assert_string_equal(ep.text, "unix:/run/app.sock");
    assert_string_equal(ep.unix_path, "/run/app.sock");
    assert_int_equal(ep.addr.ss_family, AF_UNIX);
    assert_string_equal(((struct sockaddr_un *)&ep.addr)->sun_path, "/run/app.sock");
    endpoint_free(&ep);

    char long_path[200] = "unix:/";
    memset(long_path + 6, 'a', 106);
    assert_int_equal(config_parse_endpoint(&ep, long_path, true), 0); /* 107 bytes + NUL fit */
    endpoint_free(&ep);
    long_path[6 + 106] = 'a';
    assert_int_equal(config_parse_endpoint(&ep, long_path, true), -EINVAL);

    static const char *const bad[] = {
        "unix:",
        "1.2.3.4",
        "1.2.3.4:",
        "1.2.3.4:65536",
        "1.2.3.4:-1",
        "1.2.3.4:+1",
        "1.2.3.4:000080",
        "example.com:80",
        "[::1]80",
        "[::1]",
        "[1.2.3.4]:80",
        ":80",
        "1.2.3:80",
        "::1:80",
        "[::1:80",
        "[]:80",
        "1.2.3.4:80 ",
        " 1.2.3.4:80",
        "[fe80::1%nosuchif0]:80",
        "256.1.1.1:80",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (config_parse_endpoint(&ep, bad[i], true) != -EINVAL)
            fail_msg("endpoint \"%s\" was accepted", bad[i]);
    }
    assert_int_equal(config_parse_endpoint(&ep, "unix:/a.sock", false), -EINVAL);
    assert_int_equal(config_parse_endpoint(&ep, NULL, true), -EINVAL);
}

static void test_load_file(void **state)
{
    char dir[] = "/tmp/test_config.XXXXXX", path[64], err[512];
    struct config *cfg = NULL;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/certgate.yaml", dir);

    assert_int_equal(config_load(&cfg, path, err, sizeof(err)), -ENOENT);
    assert_null(cfg);
    char want[128];
    snprintf(want, sizeof(want), "%s: No such file or directory", path);
    assert_string_equal(err, want);

    assert_int_equal(config_load(&cfg, dir, err, sizeof(err)), -EISDIR);
    snprintf(want, sizeof(want), "%s: Is a directory", dir);
    assert_string_equal(err, want);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(contract_example, f);
    fclose(f);
    assert_int_equal(config_load(&cfg, path, err, sizeof(err)), 0);
    assert_string_equal(cfg->path, path);
    assert_int_equal(cfg->num_listeners, 1);
    config_free(cfg);

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("listeners:\n  - name: a\n    adress: 127.0.0.1:1\n", f);
    fclose(f);
    assert_int_equal(config_load(&cfg, path, err, sizeof(err)), -EINVAL);
    assert_null(cfg);
    snprintf(want, sizeof(want),
             "%s:3:5: unknown key \"adress\" in listener; did you mean "
             "\"address\"?",
             path);
    assert_string_equal(err, want);

    /* Relative paths mean the config file's directory, not the working directory. */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("credentials:\n  dir: creds\nca_store:\n  dir: ./store\naccess:\n"
          "  allowed_subjects_file: /abs/list.json\nadmin:\n  token_file: ../token\n"
          "listeners:\n  - {name: a, address: \"127.0.0.1:0\", upstream: \"127.0.0.1:1\"}\n",
          f);
    fclose(f);
    assert_int_equal(config_load(&cfg, path, err, sizeof(err)), 0);
    snprintf(want, sizeof(want), "%s/creds", dir);
    assert_string_equal(cfg->credentials_dir, want);
    snprintf(want, sizeof(want), "%s/./store", dir);
    assert_string_equal(cfg->ca_store_dir, want);
    assert_string_equal(cfg->allowed_subjects_file, "/abs/list.json");
    snprintf(want, sizeof(want), "%s/../token", dir);
    assert_string_equal(cfg->admin_token_file, want);
    assert_string_equal(cfg->credentials_cert, "tls.crt"); /* joined to dir by its user */
    config_free(cfg);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("listeners:\n  - name: a\n    adress: 127.0.0.1:1\n", f);
    fclose(f);

    /* No room for the message is not a crash. */
    assert_int_equal(config_load(&cfg, path, NULL, 0), -EINVAL);
    assert_int_equal(config_load(&cfg, path, err, 1), -EINVAL);
    assert_string_equal(err, "");
    assert_int_equal(config_load(&cfg, path, err, 10), -EINVAL);
    assert_int_equal(strlen(err), 9);

    unlink(path);
    rmdir(dir);
    config_free(NULL);
}

/* check_any loads |text| and accepts either a config or a well-formed error; ASan and LSan do
 * the rest. */
static void check_any(const char *text, size_t len)
{
    char err[512] = "";
    struct config *cfg = NULL;
    int rc = config_load_string(&cfg, "t.yaml", text, len, err, sizeof(err));
    if (rc == 0) {
        assert_non_null(cfg);
        config_free(cfg);
    } else {
        assert_int_equal(rc, -EINVAL);
        assert_null(cfg);
        assert_well_formed_error(err);
    }
}

/* accept_proxy_protocol: its default, every value on every mode, and a bad value's position. */
static void test_accept_proxy_protocol(void **state)
{
    struct config *cfg = load_ok(TCP_LISTENER);
    assert_int_equal(cfg->listeners[0].accept_proxy_protocol, ACCEPT_PROXY_OFF);
    config_free(cfg);
    cfg = load_ok("credentials: {dir: /c}\n"
                  "ca_store: {dir: /s}\n"
                  "listeners:\n"
                  "  - {name: a, address: '127.0.0.1:1', upstream: '127.0.0.1:2',\n"
                  "     accept_proxy_protocol: v1v2}\n"
                  "  - {name: b, address: '127.0.0.1:2', upstream: '127.0.0.1:2', mode: tls,\n"
                  "     accept_proxy_protocol: required, proxy_protocol: on}\n"
                  "  - {name: c, address: '127.0.0.1:3', upstream: '127.0.0.1:2', mode: tcp,\n"
                  "     accept_proxy_protocol: off}\n");
    assert_int_equal(cfg->listeners[0].accept_proxy_protocol, ACCEPT_PROXY_V1V2);
    assert_int_equal(cfg->listeners[1].accept_proxy_protocol, ACCEPT_PROXY_REQUIRED);
    assert_int_equal(cfg->listeners[2].accept_proxy_protocol, ACCEPT_PROXY_OFF);
    config_free(cfg);
    expect_error(TCP_LISTENER "    accept_proxy_protocol: on\n",
                 "t.yaml:6:28: invalid value \"on\" for listeners[0].accept_proxy_protocol: "
                 "expected off, v1v2 or required");
    expect_error(TCP_LISTENER "    accept_proxy_protocol: [v1v2]\n",
                 "t.yaml:6:28: listeners[0].accept_proxy_protocol: expected a scalar, got a "
                 "sequence");
}

static void test_every_prefix_and_byte(void **state)
{
    static const char subst[] = {':', '-', ' ',  '\n', '"',    '[', '{', '&',
                                 '*', '!', '\0', '\t', '\xff', '#', '0'};
    size_t len = strlen(contract_example);
    char *copy = malloc(len + 1);
    assert_non_null(copy);
    /* Under valgrind (tests/run-all.sh) every prefix and byte would take minutes: a stride
     * samples the positions, each still with every substitution. */
    const char *env = getenv("CERTGATE_UNIT_STRIDE");
    size_t stride = env != NULL && atoi(env) > 0 ? (size_t)atoi(env) : 1;
    for (size_t i = 0; i <= len; i += stride)
        check_any(contract_example, i);
    for (size_t i = 0; i < len; i += stride) {
        memcpy(copy, contract_example, len + 1);
        for (size_t j = 0; j < sizeof(subst); j++) {
            copy[i] = subst[j];
            check_any(copy, len);
        }
    }
    free(copy);

    /* Anchors and aliases are followed, but cannot smuggle in anything the schema forbids; an
     * alias is reported where its anchor is. */
    check_any("x: &a [*a]\n", 11);
    expect_error("listeners: &l\n  - *l\n",
                 "t.yaml:1:12: listeners[0]: expected a mapping, got a sequence");
    struct config *cfg = load_ok("listeners:\n"
                                 "  - &l {name: a, address: '127.0.0.1:1', mode: tcp,\n"
                                 "        upstream: '127.0.0.1:2'}\n"
                                 "log: {level: debug}\n");
    config_free(cfg);
}

/* admin: loopback unless a token protects it (SECURITY rule 31); the public listener. */
static void test_admin_section(void **state)
{
    expect_error_prefix("admin:\n  address: 0.0.0.0:9901\n" TCP_LISTENER,
                        "t.yaml:2:12: admin.address \"0.0.0.0:9901\" is not a loopback address");
    expect_error_prefix("admin:\n  token_file: null\n  address: '[::]:9901'\n" TCP_LISTENER,
                        "t.yaml:3:12: admin.address \"[::]:9901\" is not a loopback address");
    expect_error_prefix("admin: {address: 10.0.0.1:9901}\n" TCP_LISTENER,
                        "t.yaml:1:18: admin.address \"10.0.0.1:9901\" is not a loopback");
    expect_error(
        "admin:\n  address: 127.0.0.1:9901\n  public_address: 127.0.0.1:9901\n" TCP_LISTENER,
        "t.yaml:3:19: admin.public_address is the same address as admin.address");
    expect_error_prefix("admin:\n  public_address: nowhere\n" TCP_LISTENER,
                        "t.yaml:2:19: invalid value \"nowhere\" for admin.public_address");
    const char *loopback[] = {"127.0.0.1:1", "127.3.4.5:1", "localhost:1", "'[::1]:1'",
                              "'[::ffff:127.0.0.1]:1'"};
    char yaml[256];
    for (size_t i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++) {
        snprintf(yaml, sizeof(yaml), "admin: {address: %s}\n" TCP_LISTENER, loopback[i]);
        config_free(load_ok(yaml));
    }
    struct config *cfg = load_ok("admin:\n  address: 0.0.0.0:9901\n  token_file: /run/tok\n"
                                 "  public_address: 0.0.0.0:9902\n" TCP_LISTENER);
    assert_string_equal(cfg->admin_address.text, "0.0.0.0:9901");
    assert_string_equal(cfg->admin_public_address.text, "0.0.0.0:9902");
    assert_false(config_endpoint_is_loopback(&cfg->admin_public_address));
    config_free(cfg);
    cfg =
        load_ok("admin:\n  address: 127.0.0.1:9901\n  public_address: '[::]:9902'\n" TCP_LISTENER);
    assert_true(config_endpoint_is_loopback(&cfg->admin_address));
    assert_null(cfg->admin_token_file);
    assert_int_equal(cfg->admin_public_address.addr.ss_family, AF_INET6);
    config_free(cfg);
    /* Only the public listener: probes without the API. */
    cfg = load_ok("admin: {address: off, public_address: '0.0.0.0:9902'}\n" TCP_LISTENER);
    assert_null(cfg->admin_address.text);
    assert_non_null(cfg->admin_public_address.text);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_pattern_expansion_bounded),
        cmocka_unit_test(test_pattern_nesting_bounded),
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_header_keys),
        cmocka_unit_test(test_alpn_keys),
        cmocka_unit_test(test_contract_example),
        cmocka_unit_test(test_error_positions),
        cmocka_unit_test(test_error_structure),
        cmocka_unit_test(test_error_listeners),
        cmocka_unit_test(test_error_dependencies),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_cpu_max),
        cmocka_unit_test(test_colliding_addresses),
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_every_prefix_and_byte),
        cmocka_unit_test(test_accept_proxy_protocol),
        cmocka_unit_test(test_admin_section),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
