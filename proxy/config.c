/* config.c: reads the YAML configuration of CONTRACT section 3 with libyaml's document API into
 * a struct config, applies the defaults and validates it. Every error names FILE:LINE:COLUMN of
 * the node at fault, and user text in messages is quoted and escaped. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <yaml.h>

#include "base.h"

#define CONFIG_MAX_FILE (4u << 20) /* a configuration is a few KiB; refuse absurd files */
#define CONFIG_MAX_WORKERS 256u
#define CONFIG_MAX_LISTENERS 1024u /* each is a port; also bounds the quadratic uniqueness check   \
                                    */
/* A year: timers add durations to a millisecond clock, so keep them far from overflowing. */
#define CONFIG_MAX_DURATION_MS (366ull * 24 * 3600 * 1000)

struct name_value {
    const char *name;
    int value;
};

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
static const struct name_value cc_details[] = {
    {"cert", CC_DETAIL_CERT}, {"chain", CC_DETAIL_CHAIN}, {"subject", CC_DETAIL_SUBJECT},
    {"uri", CC_DETAIL_URI},   {"dns", CC_DETAIL_DNS},     {NULL, 0},
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

/* Nodes remembered for checks that involve more than one key. */
struct listener_nodes {
    yaml_node_t *map;
    yaml_node_t *name;
    yaml_node_t *address;
    yaml_node_t *proxy_protocol;
};

struct cfg_ctx {
    const char *name;
    const char *text; /* the document, to place reader errors */
    size_t len;
    char *err;
    size_t err_len;
    yaml_document_t *doc;
    struct config *cfg;
    bool workers_auto;
    char quoted[128]; /* one quoted user string per message */
    struct listener_nodes *lnodes;
};

/* Message formatting. */

__attribute__((format(printf, 6, 0))) static int fail_at(char *err, size_t err_len,
                                                         const char *name, size_t line, size_t col,
                                                         const char *fmt, va_list ap)
{
    if (err == NULL || err_len == 0)
        return -EINVAL;
    int n = snprintf(err, err_len, "%s:%zu:%zu: ", name, line, col);
    if (n >= 0 && (size_t)n < err_len)
        vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
    return -EINVAL;
}

__attribute__((format(printf, 3, 4))) static int
ctx_fail(struct cfg_ctx *c, const yaml_node_t *node, const char *fmt, ...)
{
    va_list ap;
    size_t line = node ? node->start_mark.line + 1 : 1;
    size_t col = node ? node->start_mark.column + 1 : 1;
    va_start(ap, fmt);
    fail_at(c->err, c->err_len, c->name, line, col, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* quote renders user text for a message: in double quotes, control bytes escaped, truncated. */
static const char *quote(struct cfg_ctx *c, const char *s)
{
    char *o = c->quoted;
    size_t cap = sizeof(c->quoted), n = 0;
    o[n++] = '"';
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (n + 8 >= cap) {
            memcpy(o + n, "...", 3);
            n += 3;
            break;
        }
        if (ch == '"' || ch == '\\') {
            o[n++] = '\\';
            o[n++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            n += (size_t)snprintf(o + n, cap - n, "\\x%02x", ch);
        } else {
            o[n++] = (char)ch;
        }
    }
    o[n++] = '"';
    o[n] = '\0';
    return o;
}

/* expected writes "a, b or c" for an enum table. */
static const char *expected(char *buf, size_t len, const struct name_value *names)
{
    size_t n = 0, count = 0;
    while (names[count].name != NULL)
        count++;
    buf[0] = '\0';
    for (size_t i = 0; i < count && n < len; i++) {
        const char *sep = i == 0 ? "" : i + 1 == count ? " or " : ", ";
        int w = snprintf(buf + n, len - n, "%s%s", sep, names[i].name);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    return buf;
}

/* Scalar parsers shared by the public functions and the loader. */

static bool parse_digits(uint64_t *out, const char **p)
{
    const char *s = *p;
    uint64_t v = 0;
    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    *p = s;
    return true;
}

int config_parse_duration_ms(uint64_t *out, const char *text)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    uint64_t v;
    const char *p = text;
    if (text == NULL || !parse_digits(&v, &p))
        return -EINVAL;
    for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
        if (strcmp(p, units[i].unit) != 0)
            continue;
        if (v > CONFIG_MAX_DURATION_MS / units[i].ms)
            return -EINVAL;
        *out = v * units[i].ms;
        return 0;
    }
    return -EINVAL;
}

int config_parse_size(size_t *out, const char *text)
{
    static const struct {
        const char *unit;
        unsigned shift;
    } units[] = {{"", 0}, {"KiB", 10}, {"MiB", 20}, {"GiB", 30}};
    uint64_t v;
    const char *p = text;
    if (text == NULL || !parse_digits(&v, &p))
        return -EINVAL;
    for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
        if (strcmp(p, units[i].unit) != 0)
            continue;
        if (v > (UINT64_MAX >> units[i].shift) || (v << units[i].shift) > SIZE_MAX)
            return -EINVAL;
        *out = (size_t)(v << units[i].shift);
        return 0;
    }
    return -EINVAL;
}

static void endpoint_cleanup(struct config_endpoint *ep)
{
    free(ep->text);
    free(ep->unix_path);
    memset(ep, 0, sizeof(*ep));
}

/* endpoint_parse is config_parse_endpoint with a reason for messages in |*why|. */
static int endpoint_parse(struct config_endpoint *out, const char *text, bool allow_unix,
                          const char **why)
{
    struct sockaddr_storage ss;
    socklen_t ss_len;
    const char *host, *port_text;
    size_t host_len;
    uint64_t port;

    memset(&ss, 0, sizeof(ss));
    if (strncmp(text, "unix:", 5) == 0) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
        const char *path = text + 5;
        size_t len = strlen(path);
        if (!allow_unix) {
            *why = "a unix socket is not allowed here";
            return -EINVAL;
        }
        if (len == 0) {
            *why = "the unix socket path is empty";
            return -EINVAL;
        }
        if (len >= sizeof(sun->sun_path)) {
            *why = "the unix socket path is too long";
            return -EINVAL;
        }
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, path, len + 1);
        memset(out, 0, sizeof(*out));
        out->text = xstrdup(text);
        out->unix_path = xstrdup(path);
        memcpy(&out->addr, &ss, sizeof(ss));
        out->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
        return 0;
    }

    if (text[0] == '[') {
        const char *rb = strchr(text, ']');
        if (rb == NULL || rb[1] != ':') {
            *why = "expected [v6]:port";
            return -EINVAL;
        }
        host = text + 1;
        host_len = (size_t)(rb - host);
        port_text = rb + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (colon == NULL) {
            *why = "expected host:port";
            return -EINVAL;
        }
        host = text;
        host_len = (size_t)(colon - text);
        if (memchr(host, ':', host_len) != NULL) {
            *why = "an IPv6 address is written [v6]:port";
            return -EINVAL;
        }
        port_text = colon + 1;
    }
    const char *p = port_text;
    if (!parse_digits(&port, &p) || *p != '\0' || p - port_text > 5 || port > 65535) {
        *why = "the port must be a number from 0 to 65535";
        return -EINVAL;
    }
    if (host_len == 0 || host_len >= 64) {
        *why = "the host must be a numeric IP address or localhost";
        return -EINVAL;
    }
    char hbuf[64];
    memcpy(hbuf, host, host_len);
    hbuf[host_len] = '\0';
    if (text[0] == '[') {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        char *zone = strchr(hbuf, '%');
        if (zone != NULL) {
            *zone++ = '\0';
            uint64_t id;
            const char *z = zone;
            if (parse_digits(&id, &z) && *z == '\0' && id <= UINT32_MAX)
                sin6->sin6_scope_id = (uint32_t)id;
            else if ((sin6->sin6_scope_id = if_nametoindex(zone)) == 0) {
                *why = "unknown IPv6 zone";
                return -EINVAL;
            }
        }
        if (inet_pton(AF_INET6, hbuf, &sin6->sin6_addr) != 1) {
            *why = "not a valid IPv6 address";
            return -EINVAL;
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        ss_len = sizeof(*sin6);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        if (strcasecmp(hbuf, "localhost") == 0) {
            sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        } else if (inet_pton(AF_INET, hbuf, &sin->sin_addr) != 1) {
            *why = "the host must be a numeric IP address or localhost";
            return -EINVAL;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        ss_len = sizeof(*sin);
    }
    memset(out, 0, sizeof(*out));
    out->text = xstrdup(text);
    memcpy(&out->addr, &ss, sizeof(ss));
    out->addr_len = ss_len;
    return 0;
}

int config_parse_endpoint(struct config_endpoint *out, const char *text, bool allow_unix)
{
    const char *why = NULL;
    if (out == NULL || text == NULL)
        return -EINVAL;
    return endpoint_parse(out, text, allow_unix, &why);
}

static uint16_t endpoint_port(const struct config_endpoint *ep)
{
    if (ep->unix_path != NULL)
        return 0;
    if (ep->addr.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&ep->addr)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&ep->addr)->sin_port);
}

/* Node helpers. */

static const char *node_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return "a scalar";
    case YAML_SEQUENCE_NODE:
        return "a sequence";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

static bool node_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = (const char *)n->data.scalar.value;
    return n->data.scalar.length == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static int node_scalar(struct cfg_ctx *c, const yaml_node_t *n, const char *what, const char **out)
{
    if (n->type != YAML_SCALAR_NODE)
        return ctx_fail(c, n, "%s: expected a scalar, got %s", what, node_kind(n));
    const char *s = (const char *)n->data.scalar.value;
    if (strlen(s) != n->data.scalar.length)
        return ctx_fail(c, n, "%s: contains a NUL byte", what);
    *out = s;
    return 0;
}

static int node_enum(struct cfg_ctx *c, const yaml_node_t *n, const char *what,
                     const struct name_value *names, int *out)
{
    const char *s = "";
    char buf[160];
    int rc = node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    for (size_t i = 0; names[i].name != NULL; i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].value;
            return 0;
        }
    }
    return ctx_fail(c, n, "invalid value %s for %s: expected %s", quote(c, s), what,
                    expected(buf, sizeof(buf), names));
}

static int node_bool(struct cfg_ctx *c, const yaml_node_t *n, const char *what, bool *out)
{
    static const char *const yes[] = {"on", "true", "yes"}, *const no[] = {"off", "false", "no"};
    const char *s = "";
    int rc = node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
            *out = strcasecmp(s, yes[i]) == 0;
            return 0;
        }
    }
    return ctx_fail(c, n, "invalid value %s for %s: expected on, off, true, false, yes or no",
                    quote(c, s), what);
}

static int node_duration(struct cfg_ctx *c, const yaml_node_t *n, const char *what, bool allow_zero,
                         uint64_t *out)
{
    const char *s = "";
    uint64_t v;
    int rc = node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    if (config_parse_duration_ms(&v, s) != 0)
        return ctx_fail(c, n,
                        "invalid value %s for %s: expected a duration such as 250ms, 10s, 5m or "
                        "1h (at most a year)",
                        quote(c, s), what);
    if (v == 0 && !allow_zero)
        return ctx_fail(c, n, "invalid value %s for %s: must be greater than zero", quote(c, s),
                        what);
    *out = v;
    return 0;
}

static int node_size(struct cfg_ctx *c, const yaml_node_t *n, const char *what, size_t *out)
{
    const char *s = "";
    size_t v;
    int rc = node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    if (config_parse_size(&v, s) != 0)
        return ctx_fail(c, n, "invalid value %s for %s: expected a size such as 512, 64KiB or 1MiB",
                        quote(c, s), what);
    if (v == 0)
        return ctx_fail(c, n, "invalid value %s for %s: must be greater than zero", quote(c, s),
                        what);
    *out = v;
    return 0;
}

/* node_count parses a positive integer no larger than |max|. */
static int node_count(struct cfg_ctx *c, const yaml_node_t *n, const char *what, uint64_t max,
                      uint64_t *out)
{
    const char *s = "", *p;
    uint64_t v;
    int rc = node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    p = s;
    if (!parse_digits(&v, &p) || *p != '\0' || v == 0 || v > max)
        return ctx_fail(c, n, "invalid value %s for %s: expected an integer from 1 to %llu",
                        quote(c, s), what, (unsigned long long)max);
    *out = v;
    return 0;
}

/* node_string replaces |*out| with a copy of a non-empty scalar; null clears it when allowed. */
static int node_string(struct cfg_ctx *c, const yaml_node_t *n, const char *what, bool allow_null,
                       char **out)
{
    const char *s = "";
    if (allow_null && node_is_null(n)) {
        free(*out);
        *out = NULL;
        return 0;
    }
    int rc = node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    if (*s == '\0' || (!allow_null && node_is_null(n)))
        return ctx_fail(c, n, "%s must not be empty", what);
    free(*out);
    *out = xstrdup(s);
    return 0;
}

static int node_endpoint(struct cfg_ctx *c, const yaml_node_t *n, const char *what, bool allow_unix,
                         struct config_endpoint *out)
{
    const char *s = "", *why = "invalid";
    struct config_endpoint ep;
    int rc = node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    if (endpoint_parse(&ep, s, allow_unix, &why) != 0)
        return ctx_fail(c, n, "invalid value %s for %s: %s", quote(c, s), what, why);
    endpoint_cleanup(out);
    *out = ep;
    return 0;
}

/* map_pair takes the next pair of a mapping: the key must be a scalar, unique in the mapping.
 * Keys before |p| were all known and unique (an unknown key stops the load), so the duplicate
 * scan is short. */
static int map_pair(struct cfg_ctx *c, yaml_node_t *map, yaml_node_pair_t *p, const char *where,
                    const char **key, yaml_node_t **key_node, yaml_node_t **value)
{
    yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
    yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
    if (k == NULL || v == NULL)
        return ctx_fail(c, map, "malformed mapping %s", where);
    if (k->type != YAML_SCALAR_NODE)
        return ctx_fail(c, k, "expected a key name %s, got %s", where, node_kind(k));
    const char *s = (const char *)k->data.scalar.value;
    if (strlen(s) != k->data.scalar.length)
        return ctx_fail(c, k, "key %s contains a NUL byte", where);
    for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
        yaml_node_t *prev = yaml_document_get_node(c->doc, q->key);
        if (prev != NULL && prev->type == YAML_SCALAR_NODE &&
            prev->data.scalar.length == k->data.scalar.length &&
            memcmp(prev->data.scalar.value, s, k->data.scalar.length) == 0)
            return ctx_fail(c, k, "duplicate key %s %s", quote(c, s), where);
    }
    *key = s;
    *key_node = k;
    *value = v;
    return 0;
}

#define FOR_EACH_PAIR(map, p)                                                                      \
    for (yaml_node_pair_t *p = (map)->data.mapping.pairs.start; p < (map)->data.mapping.pairs.top; \
         p++)

static int unknown_key(struct cfg_ctx *c, yaml_node_t *k, const char *key, const char *where)
{
    return ctx_fail(c, k, "unknown key %s %s", quote(c, key), where);
}

/* section returns 1 for a mapping, 0 for null (treated as absent), or an error. */
static int section(struct cfg_ctx *c, yaml_node_t *n, const char *what)
{
    if (n->type == YAML_MAPPING_NODE)
        return 1;
    if (node_is_null(n))
        return 0;
    return ctx_fail(c, n, "%s: expected a mapping, got %s", what, node_kind(n));
}

/* Sections. */

static int parse_workers(struct cfg_ctx *c, yaml_node_t *n)
{
    const char *s = "";
    uint64_t v;
    int rc = node_scalar(c, n, "workers", &s);
    if (rc != 0)
        return rc;
    if (strcmp(s, "auto") == 0) {
        c->workers_auto = true;
        return 0;
    }
    const char *p = s;
    if (!parse_digits(&v, &p) || *p != '\0' || v == 0 || v > CONFIG_MAX_WORKERS)
        return ctx_fail(c, n, "invalid value %s for workers: expected auto or 1 to %u", quote(c, s),
                        CONFIG_MAX_WORKERS);
    c->workers_auto = false;
    c->cfg->workers = (unsigned)v;
    return 0;
}

static int parse_log(struct cfg_ctx *c, yaml_node_t *map)
{
    int rc = section(c, map, "log");
    if (rc <= 0)
        return rc;
    FOR_EACH_PAIR(map, p)
    {
        const char *key;
        yaml_node_t *k, *v;
        int e;
        if ((rc = map_pair(c, map, p, "in log", &key, &k, &v)) != 0)
            return rc;
        if (strcmp(key, "level") == 0) {
            rc = node_enum(c, v, "log.level", log_levels, &e);
            c->cfg->log_level = (enum log_level)e;
        } else if (strcmp(key, "access") == 0) {
            rc = node_bool(c, v, "log.access", &c->cfg->log_access);
        } else {
            rc = unknown_key(c, k, key, "in log");
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int parse_credentials(struct cfg_ctx *c, yaml_node_t *map)
{
    struct config *cfg = c->cfg;
    yaml_node_t *cert = NULL, *key_node = NULL, *p12pw = NULL;
    int rc = section(c, map, "credentials");
    if (rc <= 0)
        return rc;
    FOR_EACH_PAIR(map, p)
    {
        const char *key;
        yaml_node_t *k, *v;
        if ((rc = map_pair(c, map, p, "in credentials", &key, &k, &v)) != 0)
            return rc;
        if (strcmp(key, "dir") == 0) {
            rc = node_string(c, v, "credentials.dir", true, &cfg->credentials_dir);
        } else if (strcmp(key, "cert") == 0) {
            cert = k;
            rc = node_string(c, v, "credentials.cert", false, &cfg->credentials_cert);
        } else if (strcmp(key, "key") == 0) {
            key_node = k;
            rc = node_string(c, v, "credentials.key", false, &cfg->credentials_key);
        } else if (strcmp(key, "pkcs12") == 0) {
            rc = node_string(c, v, "credentials.pkcs12", true, &cfg->credentials_pkcs12);
        } else if (strcmp(key, "pkcs12_password_file") == 0) {
            p12pw = k;
            rc = node_string(c, v, "credentials.pkcs12_password_file", true,
                             &cfg->credentials_pkcs12_password_file);
        } else {
            rc = unknown_key(c, k, key, "in credentials");
        }
        if (rc != 0)
            return rc;
    }
    if (cfg->credentials_pkcs12 != NULL) {
        yaml_node_t *both = cert != NULL ? cert : key_node;
        if (both != NULL)
            return ctx_fail(c, both, "credentials.%s cannot be combined with credentials.pkcs12",
                            cert != NULL ? "cert" : "key");
    } else {
        if (cfg->credentials_pkcs12_password_file != NULL)
            return ctx_fail(c, p12pw, "credentials.pkcs12_password_file needs credentials.pkcs12");
        if (cfg->credentials_cert == NULL)
            cfg->credentials_cert = xstrdup("tls.crt");
        if (cfg->credentials_key == NULL)
            cfg->credentials_key = xstrdup("tls.key");
    }
    return 0;
}

/* parse_one_string handles the sections that hold a single string key: ca_store and access. */
static int parse_one_string(struct cfg_ctx *c, yaml_node_t *map, const char *name,
                            const char *key_name, char **out)
{
    char where[64], what[96];
    int rc = section(c, map, name);
    if (rc <= 0)
        return rc;
    snprintf(where, sizeof(where), "in %s", name);
    snprintf(what, sizeof(what), "%s.%s", name, key_name);
    FOR_EACH_PAIR(map, p)
    {
        const char *key;
        yaml_node_t *k, *v;
        if ((rc = map_pair(c, map, p, where, &key, &k, &v)) != 0)
            return rc;
        if (strcmp(key, key_name) == 0)
            rc = node_string(c, v, what, true, out);
        else
            rc = unknown_key(c, k, key, where);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int check_sni_pattern(struct cfg_ctx *c, yaml_node_t *n, const char *pattern)
{
    const char *first = strstr(pattern, "{tenant}");
    if (first == NULL || strstr(first + 1, "{tenant}") != NULL)
        return ctx_fail(c, n,
                        "invalid value %s for tenancy.sni: must contain {tenant} exactly once",
                        quote(c, pattern));
    for (const char *s = pattern; *s != '\0'; s++) {
        if (s == first) {
            s += strlen("{tenant}") - 1;
            continue;
        }
        if (*s == '{' || *s == '}' || *s <= ' ' || *s == 0x7f)
            return ctx_fail(c, n,
                            "invalid value %s for tenancy.sni: only {tenant} and host name "
                            "characters are allowed",
                            quote(c, pattern));
    }
    return 0;
}

static int parse_tenancy(struct cfg_ctx *c, yaml_node_t *map)
{
    struct config *cfg = c->cfg;
    int rc = section(c, map, "tenancy");
    if (rc <= 0)
        return rc;
    FOR_EACH_PAIR(map, p)
    {
        const char *key;
        yaml_node_t *k, *v;
        int e;
        if ((rc = map_pair(c, map, p, "in tenancy", &key, &k, &v)) != 0)
            return rc;
        if (strcmp(key, "sni") == 0) {
            rc = node_string(c, v, "tenancy.sni", true, &cfg->tenancy_sni);
            if (rc == 0 && cfg->tenancy_sni != NULL)
                rc = check_sni_pattern(c, v, cfg->tenancy_sni);
        } else if (strcmp(key, "unknown") == 0) {
            rc = node_enum(c, v, "tenancy.unknown", tenancy_policies, &e);
            cfg->tenancy_unknown = (enum tenancy_policy)e;
        } else if (strcmp(key, "no_sni") == 0) {
            rc = node_enum(c, v, "tenancy.no_sni", tenancy_policies, &e);
            cfg->tenancy_no_sni = (enum tenancy_policy)e;
        } else {
            rc = unknown_key(c, k, key, "in tenancy");
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int parse_reload(struct cfg_ctx *c, yaml_node_t *map)
{
    struct config *cfg = c->cfg;
    int rc = section(c, map, "reload");
    if (rc <= 0)
        return rc;
    FOR_EACH_PAIR(map, p)
    {
        const char *key;
        yaml_node_t *k, *v;
        if ((rc = map_pair(c, map, p, "in reload", &key, &k, &v)) != 0)
            return rc;
        if (strcmp(key, "debounce") == 0)
            rc = node_duration(c, v, "reload.debounce", true, &cfg->reload_debounce_ms);
        else if (strcmp(key, "poll_interval") == 0)
            rc = node_duration(c, v, "reload.poll_interval", false, &cfg->reload_poll_interval_ms);
        else
            rc = unknown_key(c, k, key, "in reload");
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int parse_revocation(struct cfg_ctx *c, yaml_node_t *map)
{
    struct config *cfg = c->cfg;
    int rc = section(c, map, "revocation");
    if (rc <= 0)
        return rc;
    FOR_EACH_PAIR(map, p)
    {
        const char *key;
        yaml_node_t *k, *v;
        int e;
        if ((rc = map_pair(c, map, p, "in revocation", &key, &k, &v)) != 0)
            return rc;
        if (strcmp(key, "crl") == 0) {
            rc = node_bool(c, v, "revocation.crl", &cfg->revocation_crl);
        } else if (strcmp(key, "ocsp") == 0) {
            rc = node_enum(c, v, "revocation.ocsp", ocsp_modes, &e);
            cfg->revocation_ocsp = (enum ocsp_mode)e;
        } else if (strcmp(key, "ocsp_timeout") == 0) {
            rc = node_duration(c, v, "revocation.ocsp_timeout", false, &cfg->ocsp_timeout_ms);
        } else if (strcmp(key, "ocsp_cache_max") == 0) {
            rc = node_duration(c, v, "revocation.ocsp_cache_max", true, &cfg->ocsp_cache_max_ms);
        } else {
            rc = unknown_key(c, k, key, "in revocation");
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int parse_admin(struct cfg_ctx *c, yaml_node_t *map)
{
    struct config *cfg = c->cfg;
    int rc = section(c, map, "admin");
    if (rc <= 0)
        return rc;
    FOR_EACH_PAIR(map, p)
    {
        const char *key;
        yaml_node_t *k, *v;
        if ((rc = map_pair(c, map, p, "in admin", &key, &k, &v)) != 0)
            return rc;
        if (strcmp(key, "address") == 0) {
            if (node_is_null(v) || (v->type == YAML_SCALAR_NODE &&
                                    strcmp((const char *)v->data.scalar.value, "off") == 0))
                endpoint_cleanup(&cfg->admin_address);
            else
                rc = node_endpoint(c, v, "admin.address", false, &cfg->admin_address);
        } else if (strcmp(key, "token_file") == 0) {
            rc = node_string(c, v, "admin.token_file", true, &cfg->admin_token_file);
        } else {
            rc = unknown_key(c, k, key, "in admin");
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int parse_limits(struct cfg_ctx *c, yaml_node_t *map)
{
    static const struct {
        const char *key;
        size_t offset;
    } durations[] = {
        {"handshake_timeout", offsetof(struct config_limits, handshake_timeout_ms)},
        {"request_head_timeout", offsetof(struct config_limits, request_head_timeout_ms)},
        {"idle_timeout", offsetof(struct config_limits, idle_timeout_ms)},
        {"upstream_connect_timeout", offsetof(struct config_limits, upstream_connect_timeout_ms)},
        {"upstream_response_timeout", offsetof(struct config_limits, upstream_response_timeout_ms)},
        {"drain_timeout", offsetof(struct config_limits, drain_timeout_ms)},
    };
    struct config_limits *lim = &c->cfg->limits;
    int rc = section(c, map, "limits");
    if (rc <= 0)
        return rc;
    FOR_EACH_PAIR(map, p)
    {
        const char *key;
        yaml_node_t *k, *v;
        char what[64];
        uint64_t n;
        size_t i;
        if ((rc = map_pair(c, map, p, "in limits", &key, &k, &v)) != 0)
            return rc;
        snprintf(what, sizeof(what), "limits.%.40s", key);
        /* Upper bounds keep a typo from becoming an allocation that cannot succeed. */
        if (strcmp(key, "max_connections") == 0) {
            rc = node_count(c, v, what, 10000000, &n);
            lim->max_connections = (uint32_t)n;
        } else if (strcmp(key, "max_headers") == 0) {
            rc = node_count(c, v, what, 100000, &n);
            lim->max_headers = (uint32_t)n;
        } else if (strcmp(key, "max_request_head") == 0) {
            rc = node_size(c, v, what, &lim->max_request_head);
            if (rc == 0 && (lim->max_request_head < 256 || lim->max_request_head > (16u << 20)))
                rc = ctx_fail(c, v, "invalid value for %s: expected a size from 256 to 16MiB",
                              what);
        } else {
            for (i = 0; i < ARRAY_SIZE(durations); i++)
                if (strcmp(key, durations[i].key) == 0)
                    break;
            if (i == ARRAY_SIZE(durations))
                return unknown_key(c, k, key, "in limits");
            /* Draining for zero time is a valid choice: stop at once. */
            rc = node_duration(c, v, what, strcmp(key, "drain_timeout") == 0,
                               (uint64_t *)((char *)lim + durations[i].offset));
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Listeners. */

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

static bool safe_name(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return false;
    }
    return true;
}

static int parse_details(struct cfg_ctx *c, yaml_node_t *n, const char *what, unsigned *out)
{
    char buf[160];
    unsigned bits = 0;
    if (n->type != YAML_SEQUENCE_NODE)
        return ctx_fail(c, n,
                        "%s: expected a sequence such as [cert, chain, subject, uri, dns], "
                        "got %s",
                        what, node_kind(n));
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        yaml_node_t *item = yaml_document_get_node(c->doc, *it);
        const char *s = "";
        int rc, e = -1;
        if (item == NULL)
            return ctx_fail(c, n, "%s: malformed sequence", what);
        if ((rc = node_scalar(c, item, what, &s)) != 0)
            return rc;
        for (size_t i = 0; cc_details[i].name != NULL; i++)
            if (strcmp(s, cc_details[i].name) == 0)
                e = cc_details[i].value;
        if (e < 0)
            return ctx_fail(c, item, "invalid value %s in %s: expected %s", quote(c, s), what,
                            expected(buf, sizeof(buf), cc_details));
        if (bits & (unsigned)e)
            return ctx_fail(c, item, "duplicate value %s in %s", quote(c, s), what);
        bits |= (unsigned)e;
    }
    *out = bits;
    return 0;
}

static int parse_pattern(struct cfg_ctx *c, yaml_node_t *n, const char *what, char **out)
{
    regex_t re;
    int rc = node_string(c, n, what, true, out);
    if (rc != 0 || *out == NULL)
        return rc;
    int err = regcomp(&re, *out, REG_EXTENDED | REG_NOSUB);
    if (err != 0) {
        char msg[128];
        regerror(err, &re, msg, sizeof(msg));
        return ctx_fail(c, n, "invalid value %s for %s: %s", quote(c, *out), what, msg);
    }
    regfree(&re);
    return 0;
}

static int parse_listener(struct cfg_ctx *c, yaml_node_t *map, size_t idx)
{
    struct listener_config *l = &c->cfg->listeners[idx];
    struct listener_nodes *ln = &c->lnodes[idx];
    yaml_node_t *upstream = NULL;
    int rc, e;

    listener_defaults(l);
    c->cfg->num_listeners = idx + 1;
    l->line = (unsigned)map->start_mark.line + 1;
    ln->map = map;
    if (map->type != YAML_MAPPING_NODE)
        return ctx_fail(c, map, "listeners[%zu]: expected a mapping, got %s", idx, node_kind(map));
    FOR_EACH_PAIR(map, p)
    {
        const char *key;
        yaml_node_t *k, *v;
        char what[80];
        if ((rc = map_pair(c, map, p, "in listener", &key, &k, &v)) != 0)
            return rc;
        snprintf(what, sizeof(what), "listeners[%zu].%.40s", idx, key);
        if (strcmp(key, "name") == 0) {
            ln->name = v;
            rc = node_string(c, v, what, false, &l->name);
            if (rc == 0 && !safe_name(l->name))
                rc = ctx_fail(c, v, "invalid value %s for %s: only A-Z a-z 0-9 _ . - are allowed",
                              quote(c, l->name), what);
        } else if (strcmp(key, "address") == 0) {
            ln->address = v;
            rc = node_endpoint(c, v, what, false, &l->address);
        } else if (strcmp(key, "mode") == 0) {
            rc = node_enum(c, v, what, modes, &e);
            l->mode = (enum listener_mode)e;
        } else if (strcmp(key, "upstream") == 0) {
            upstream = v;
            rc = node_endpoint(c, v, what, true, &l->upstream);
            if (rc == 0 && l->upstream.unix_path == NULL && endpoint_port(&l->upstream) == 0)
                rc = ctx_fail(c, v, "invalid value %s for %s: the upstream port cannot be 0",
                              quote(c, l->upstream.text), what);
        } else if (strcmp(key, "client_auth") == 0) {
            rc = node_enum(c, v, what, client_auths, &e);
            l->client_auth = (enum client_auth)e;
        } else if (strcmp(key, "verify") == 0) {
            rc = node_bool(c, v, what, &l->verify);
        } else if (strcmp(key, "forward_client_cert") == 0) {
            rc = node_enum(c, v, what, fcc_modes, &e);
            l->forward_client_cert = (enum fcc_mode)e;
        } else if (strcmp(key, "client_cert_details") == 0) {
            rc = parse_details(c, v, what, &l->client_cert_details);
        } else if (strcmp(key, "client_cert_header") == 0) {
            rc = node_enum(c, v, what, cc_headers, &e);
            l->client_cert_header = (enum cc_header)e;
        } else if (strcmp(key, "subject_cn_pattern") == 0) {
            rc = parse_pattern(c, v, what, &l->subject_cn_pattern);
        } else if (strcmp(key, "require_allowed_subject") == 0) {
            rc = node_bool(c, v, what, &l->require_allowed_subject);
        } else if (strcmp(key, "proxy_protocol") == 0) {
            ln->proxy_protocol = v;
            rc = node_bool(c, v, what, &l->proxy_protocol);
        } else {
            rc = unknown_key(c, k, key, "in listener");
        }
        if (rc != 0)
            return rc;
    }
    if (l->name == NULL)
        return ctx_fail(c, map, "missing required key \"name\" in listener");
    if (l->address.text == NULL)
        return ctx_fail(c, map, "missing required key \"address\" in listener %s",
                        quote(c, l->name));
    if (upstream == NULL)
        return ctx_fail(c, map, "missing required key \"upstream\" in listener %s",
                        quote(c, l->name));
    if (l->proxy_protocol && l->mode == LISTENER_HTTP)
        return ctx_fail(c, ln->proxy_protocol,
                        "listener %s: proxy_protocol is only for tcp and tls listeners",
                        quote(c, l->name));
    for (size_t i = 0; i < idx; i++) {
        const struct listener_config *o = &c->cfg->listeners[i];
        if (strcmp(o->name, l->name) == 0)
            return ctx_fail(c, ln->name, "duplicate listener name %s", quote(c, l->name));
        if (endpoint_port(&l->address) != 0 && o->address.addr_len == l->address.addr_len &&
            memcmp(&o->address.addr, &l->address.addr, l->address.addr_len) == 0)
            return ctx_fail(c, ln->address, "listener %s uses the same address as listener %s",
                            quote(c, l->name), o->name);
    }
    return 0;
}

static int parse_listeners(struct cfg_ctx *c, yaml_node_t *seq)
{
    if (seq->type != YAML_SEQUENCE_NODE && !node_is_null(seq))
        return ctx_fail(c, seq, "listeners: expected a sequence, got %s", node_kind(seq));
    size_t num = seq->type == YAML_SEQUENCE_NODE
                     ? (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start)
                     : 0;
    if (num == 0)
        return ctx_fail(c, seq, "listeners: at least one listener is required");
    if (num > CONFIG_MAX_LISTENERS)
        return ctx_fail(c, seq, "listeners: at most %u listeners are allowed",
                        CONFIG_MAX_LISTENERS);
    c->cfg->listeners = xcalloc(num, sizeof(*c->cfg->listeners));
    c->lnodes = xcalloc(num, sizeof(*c->lnodes));
    for (size_t i = 0; i < num; i++) {
        yaml_node_t *item = yaml_document_get_node(c->doc, seq->data.sequence.items.start[i]);
        if (item == NULL)
            return ctx_fail(c, seq, "listeners: malformed sequence");
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
            return ctx_fail(c, c->lnodes[i].map,
                            "listener %s: require_allowed_subject needs a verified client "
                            "certificate (mode http or tls, client_auth require or optional, "
                            "verify on)",
                            quote(c, l->name));
        if (l->require_allowed_subject && cfg->allowed_subjects_file == NULL)
            return ctx_fail(c, c->lnodes[i].map,
                            "listener %s requires allowed subjects, so "
                            "access.allowed_subjects_file is required",
                            quote(c, l->name));
        if (l->mode == LISTENER_TCP)
            continue;
        if (cfg->credentials_dir == NULL)
            return ctx_fail(c, c->lnodes[i].map,
                            "listener %s terminates TLS, so credentials.dir is required",
                            quote(c, l->name));
        if (l->client_auth != CLIENT_AUTH_NONE && l->verify && cfg->ca_store_dir == NULL)
            return ctx_fail(c, c->lnodes[i].map,
                            "listener %s verifies client certificates, so ca_store.dir is "
                            "required",
                            quote(c, l->name));
    }
    return 0;
}

static int parse_root(struct cfg_ctx *c, yaml_node_t *root)
{
    static const char *const where = "at top level";
    yaml_node_t *listeners = NULL;
    int rc;

    if (root->type != YAML_MAPPING_NODE)
        return ctx_fail(c, root, "expected a mapping at top level, got %s", node_kind(root));
    FOR_EACH_PAIR(root, p)
    {
        const char *key;
        yaml_node_t *k, *v;
        if ((rc = map_pair(c, root, p, where, &key, &k, &v)) != 0)
            return rc;
        if (strcmp(key, "workers") == 0)
            rc = parse_workers(c, v);
        else if (strcmp(key, "log") == 0)
            rc = parse_log(c, v);
        else if (strcmp(key, "credentials") == 0)
            rc = parse_credentials(c, v);
        else if (strcmp(key, "ca_store") == 0)
            rc = parse_one_string(c, v, "ca_store", "dir", &c->cfg->ca_store_dir);
        else if (strcmp(key, "tenancy") == 0)
            rc = parse_tenancy(c, v);
        else if (strcmp(key, "reload") == 0)
            rc = parse_reload(c, v);
        else if (strcmp(key, "revocation") == 0)
            rc = parse_revocation(c, v);
        else if (strcmp(key, "access") == 0)
            rc = parse_one_string(c, v, "access", "allowed_subjects_file",
                                  &c->cfg->allowed_subjects_file);
        else if (strcmp(key, "admin") == 0)
            rc = parse_admin(c, v);
        else if (strcmp(key, "limits") == 0)
            rc = parse_limits(c, v);
        else if (strcmp(key, "listeners") == 0)
            rc = parse_listeners(c, listeners = v);
        else
            rc = unknown_key(c, k, key, where);
        if (rc != 0)
            return rc;
    }
    if (listeners == NULL)
        return ctx_fail(c, root, "missing required key \"listeners\" at top level");
    if (c->workers_auto) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->cfg->workers = n < 1                          ? 1
                          : n > (long)CONFIG_MAX_WORKERS ? CONFIG_MAX_WORKERS
                                                         : (unsigned)n;
    }
    return check_dependencies(c);
}

static struct config *config_new(const char *name)
{
    struct config *cfg = xcalloc(1, sizeof(*cfg));
    cfg->path = xstrdup(name);
    cfg->workers = 1;
    cfg->log_level = LOG_LEVEL_INFO;
    cfg->log_access = true;
    cfg->tenancy_unknown = TENANCY_COMMON;
    cfg->tenancy_no_sni = TENANCY_COMMON;
    cfg->reload_debounce_ms = 200;
    cfg->reload_poll_interval_ms = 10 * 1000;
    cfg->revocation_crl = true;
    cfg->revocation_ocsp = OCSP_OFF;
    cfg->ocsp_timeout_ms = 2 * 1000;
    cfg->ocsp_cache_max_ms = 3600 * 1000;
    /* CONTRACT 3: an absent admin.address means no admin listener. */
    cfg->limits.max_connections = 10000;
    cfg->limits.max_request_head = 64 * 1024;
    cfg->limits.max_headers = 100;
    cfg->limits.handshake_timeout_ms = 10 * 1000;
    cfg->limits.request_head_timeout_ms = 30 * 1000;
    cfg->limits.idle_timeout_ms = 5 * 60 * 1000;
    cfg->limits.upstream_connect_timeout_ms = 5 * 1000;
    cfg->limits.upstream_response_timeout_ms = 60 * 1000;
    cfg->limits.drain_timeout_ms = 30 * 1000;
    return cfg;
}

/* syntax_error reports libyaml's own error; reader errors carry a byte offset, not a mark. */
static int syntax_error(struct cfg_ctx *c, const yaml_parser_t *parser)
{
    yaml_node_t at;
    const char *problem = parser->problem != NULL ? parser->problem : "invalid YAML";
    memset(&at, 0, sizeof(at));
    if (parser->error == YAML_MEMORY_ERROR) {
        fputs("certgate: out of memory\n", stderr);
        abort();
    }
    if (parser->error == YAML_READER_ERROR) {
        size_t off = MIN(parser->problem_offset, c->len);
        for (size_t i = 0; i < off; i++) {
            unsigned char ch = (unsigned char)c->text[i];
            if (ch == '\n') {
                at.start_mark.line++;
                at.start_mark.column = 0;
            } else if ((ch & 0xc0) != 0x80) {
                at.start_mark.column++;
            }
        }
    } else {
        at.start_mark = parser->problem_mark;
    }
    if (parser->context != NULL && parser->error != YAML_READER_ERROR &&
        (parser->context_mark.line != at.start_mark.line ||
         parser->context_mark.column != at.start_mark.column))
        return ctx_fail(c, &at, "syntax error: %s %s that started at %zu:%zu", problem,
                        parser->context, parser->context_mark.line + 1,
                        parser->context_mark.column + 1);
    if (parser->context != NULL && parser->error != YAML_READER_ERROR)
        return ctx_fail(c, &at, "syntax error: %s %s", problem, parser->context);
    return ctx_fail(c, &at, "syntax error: %s", problem);
}

int config_load_string(struct config **out, const char *name, const char *text, size_t len,
                       char *err, size_t err_len)
{
    yaml_parser_t parser;
    yaml_document_t doc, next;
    struct cfg_ctx c;
    struct config *cfg = NULL;
    int rc;

    *out = NULL;
    if (err != NULL && err_len > 0)
        err[0] = '\0';
    if (text == NULL) {
        text = "";
        len = 0;
    }
    memset(&c, 0, sizeof(c));
    c.name = name;
    c.text = text;
    c.len = len;
    c.err = err;
    c.err_len = err_len;
    c.workers_auto = true;
    if (!yaml_parser_initialize(&parser))
        abort();
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        rc = syntax_error(&c, &parser);
        yaml_parser_delete(&parser);
        return rc;
    }
    c.doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL || node_is_null(root)) {
        rc = ctx_fail(&c, root, "the configuration is empty: expected a mapping with listeners");
        goto done;
    }
    /* A second document would be silently ignored: refuse it, and find syntax errors in it. */
    if (!yaml_parser_load(&parser, &next)) {
        rc = syntax_error(&c, &parser);
        goto done;
    }
    yaml_node_t *extra = yaml_document_get_root_node(&next);
    if (extra != NULL)
        rc = ctx_fail(&c, extra, "only one YAML document is allowed");
    yaml_document_delete(&next);
    if (extra != NULL)
        goto done;

    cfg = config_new(name);
    c.cfg = cfg;
    rc = parse_root(&c, root);
    if (rc == 0) {
        *out = cfg;
        cfg = NULL;
    }
done:
    config_free(cfg);
    free(c.lnodes);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

int config_load(struct config **out, const char *path, char *err, size_t err_len)
{
    struct stat st;
    char *text = NULL;
    size_t len = 0, cap = 0;
    int rc;

    *out = NULL;
    if (err != NULL && err_len > 0)
        err[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        rc = -errno;
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        goto fail;
    }
    for (;;) {
        if (len == cap) {
            if (cap > CONFIG_MAX_FILE) {
                rc = -EFBIG;
                goto fail;
            }
            cap = cap ? cap * 2 : 8192;
            text = xrealloc(text, cap + 1);
        }
        ssize_t n = read(fd, text + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    rc = config_load_string(out, path, text != NULL ? text : "", len, err, err_len);
    free(text);
    return rc;
fail:
    if (err != NULL && err_len > 0)
        snprintf(err, err_len, "%s: %s", path, strerror(-rc));
    if (fd >= 0)
        close(fd);
    free(text);
    return rc;
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    free(cfg->credentials_dir);
    free(cfg->credentials_cert);
    free(cfg->credentials_key);
    free(cfg->credentials_pkcs12);
    free(cfg->credentials_pkcs12_password_file);
    free(cfg->ca_store_dir);
    free(cfg->tenancy_sni);
    free(cfg->allowed_subjects_file);
    endpoint_cleanup(&cfg->admin_address);
    free(cfg->admin_token_file);
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        struct listener_config *l = &cfg->listeners[i];
        free(l->name);
        endpoint_cleanup(&l->address);
        endpoint_cleanup(&l->upstream);
        free(l->subject_cn_pattern);
    }
    free(cfg->listeners);
    free(cfg);
}
