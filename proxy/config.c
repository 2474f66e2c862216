/* config.c: reads the YAML configuration of CONTRACT section 3 with libyaml's document API into
 * a struct config, applies the defaults and validates it. Every error names FILE:LINE:COLUMN of
 * the node at fault, and user text in messages is quoted and escaped. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <regex.h>
#include <sched.h>
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

struct unit {
    const char *suffix;
    uint64_t scale;
};

/* parse_scaled parses digits and one of |units|; the result must not exceed |max|. */
static int parse_scaled(uint64_t *out, const char *text, const struct unit *units, size_t num_units,
                        uint64_t max)
{
    uint64_t v;
    const char *p = text;
    if (text == NULL || !parse_digits(&v, &p))
        return -EINVAL;
    for (size_t i = 0; i < num_units; i++) {
        if (strcmp(p, units[i].suffix) != 0)
            continue;
        if (v > max / units[i].scale)
            return -EINVAL;
        *out = v * units[i].scale;
        return 0;
    }
    return -EINVAL;
}

int config_parse_duration_ms(uint64_t *out, const char *text)
{
    static const struct unit units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    return parse_scaled(out, text, units, ARRAY_SIZE(units), CONFIG_MAX_DURATION_MS);
}

int config_parse_size(size_t *out, const char *text)
{
    static const struct unit units[] = {
        {"", 1}, {"KiB", 1u << 10}, {"MiB", 1u << 20}, {"GiB", 1u << 30}};
    uint64_t v;
    int rc = parse_scaled(&v, text, units, ARRAY_SIZE(units), SIZE_MAX);
    if (rc == 0)
        *out = (size_t)v;
    return rc;
}

int config_parse_cpu_max(unsigned *out, const char *text)
{
    uint64_t quota = 0, period = 0;
    const char *p = text;
    bool unlimited = strncmp(p, "max", 3) == 0;
    if (unlimited)
        p += 3;
    else if (!parse_digits(&quota, &p) || quota == 0)
        return -EINVAL;
    if (*p++ != ' ' || !parse_digits(&period, &p) || period == 0 || period > 1000000)
        return -EINVAL;
    if (*p == '\n')
        p++;
    if (*p != '\0')
        return -EINVAL;
    /* A quota of 1.5 CPUs still keeps two threads busy part of the time: round up. */
    uint64_t cpus = unlimited ? 0 : quota / period + (quota % period != 0);
    *out = cpus > CONFIG_MAX_WORKERS ? CONFIG_MAX_WORKERS : (unsigned)cpus;
    return 0;
}

/* read_small reads a short text file (procfs, cgroupfs) into |out|; false when unreadable. */
static bool read_small(const char *path, char *out, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    if (n < 0)
        return false;
    out[n] = '\0';
    return true;
}

/* cgroup_cpu_limit returns the smallest cpu.max of the process's cgroup v2 and its parents,
 * 0 when none sets one (or there is no cgroup v2). */
static unsigned cgroup_cpu_limit(const char *root)
{
    char text[4096], dir[PATH_MAX], line[128];
    unsigned best = 0;
    if (!read_small("/proc/self/cgroup", text, sizeof(text)))
        return 0;
    /* cgroup v2 is the one line "0::/path". */
    const char *rel = strstr(text, "0::");
    if (rel == NULL || (rel != text && rel[-1] != '\n'))
        return 0;
    rel += 3;
    size_t rel_len = strcspn(rel, "\n");
    int n = snprintf(dir, sizeof(dir), "%s%.*s", root, (int)rel_len, rel);
    if (n < 0 || (size_t)n >= sizeof(dir))
        return 0;
    size_t root_len = strlen(root);
    for (;;) {
        char file[PATH_MAX + 16];
        unsigned cpus;
        snprintf(file, sizeof(file), "%s/cpu.max", dir);
        if (read_small(file, line, sizeof(line)) && config_parse_cpu_max(&cpus, line) == 0 &&
            cpus > 0 && (best == 0 || cpus < best))
            best = cpus;
        char *slash = strrchr(dir, '/');
        if (slash == NULL || (size_t)(slash - dir) < root_len)
            break;
        *slash = '\0';
    }
    return best;
}

unsigned config_usable_cpus(const char *cgroup_root)
{
    cpu_set_t set;
    long n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n < 1)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned limit = cgroup_cpu_limit(cgroup_root);
    if (limit > 0 && (n < 1 || (unsigned long)n > limit))
        n = (long)limit;
    return n < 1 ? 1 : n > (long)CONFIG_MAX_WORKERS ? CONFIG_MAX_WORKERS : (unsigned)n;
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

static bool endpoint_is_wildcard(const struct config_endpoint *ep)
{
    if (ep->unix_path != NULL)
        return false;
    if (ep->addr.ss_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&ep->addr)->sin6_addr);
    return ((const struct sockaddr_in *)&ep->addr)->sin_addr.s_addr == htonl(INADDR_ANY);
}

bool config_endpoint_is_loopback(const struct config_endpoint *ep)
{
    if (ep->text == NULL || ep->unix_path != NULL)
        return false;
    if (ep->addr.ss_family == AF_INET)
        return ntohl(((const struct sockaddr_in *)&ep->addr)->sin_addr.s_addr) >> 24 == 127;
    if (ep->addr.ss_family != AF_INET6)
        return false;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)&ep->addr)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
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

/* node_count parses a positive integer no larger than |max|. */
static int node_count(struct cfg_ctx *c, const yaml_node_t *n, const char *what, uint32_t max,
                      uint32_t *out)
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
    *out = (uint32_t)v;
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

/* section returns 1 for a mapping, 0 for null (treated as absent), or an error. */
static int section(struct cfg_ctx *c, yaml_node_t *n, const char *what)
{
    if (n->type == YAML_MAPPING_NODE)
        return 1;
    if (node_is_null(n))
        return 0;
    return ctx_fail(c, n, "%s: expected a mapping, got %s", what, node_kind(n));
}

/* Directives: as in h2o's configurator, each mapping is a table of the keys it accepts, and
 * one function walks a mapping against its table. */

enum directive_kind {
    DIRECTIVE_BOOL,     /* bool */
    DIRECTIVE_DURATION, /* uint64_t milliseconds; zero only with allow_zero */
    DIRECTIVE_COUNT,    /* uint32_t from 1 to max */
    DIRECTIVE_ENUM,     /* an enum, one of names */
    DIRECTIVE_STRING,   /* char *, non-empty; null clears it with allow_null */
    DIRECTIVE_ENDPOINT, /* struct config_endpoint; unix:/path with allow_unix */
    DIRECTIVE_SECTION,  /* a mapping of keys, then check */
    DIRECTIVE_CUSTOM,   /* parse does it all */
};

/* Where a directive's key and value were found; both NULL when it is absent. */
struct seen {
    yaml_node_t *key;
    yaml_node_t *value;
};

#define MAX_DIRECTIVES 16 /* per table, with its terminator */

/* One key of a mapping. Only the fields its kind names are set. */
struct directive {
    const char *name;
    enum directive_kind kind;
    size_t offset; /* of the field in the struct the table fills */
    bool allow_zero, allow_null, allow_unix;
    uint32_t max;
    const struct name_value *names;
    const struct directive *keys;
    int (*check)(struct cfg_ctx *c, const struct seen *seen); /* NULL or after keys */
    int (*parse)(struct cfg_ctx *c, yaml_node_t *v, const char *what, void *out);
};

/* DIRECTIVE_ENUM stores an int into the enum fields. */
_Static_assert(sizeof(enum log_level) == sizeof(int) && sizeof(enum listener_mode) == sizeof(int) &&
                   sizeof(enum client_auth) == sizeof(int) &&
                   sizeof(enum fcc_mode) == sizeof(int) && sizeof(enum cc_header) == sizeof(int) &&
                   sizeof(enum tenancy_policy) == sizeof(int) &&
                   sizeof(enum ocsp_mode) == sizeof(int) &&
                   sizeof(enum forwarded_headers) == sizeof(int) &&
                   sizeof(enum underscores) == sizeof(int),
               "enum fields are stored as int");

static int walk(struct cfg_ctx *c, yaml_node_t *map, const char *where, const char *prefix,
                const struct directive *keys, void *base, struct seen *seen);

/* parse_section walks a section's keys into |base|, then runs its check. */
static int parse_section(struct cfg_ctx *c, const struct directive *d, yaml_node_t *map,
                         const char *what, void *base)
{
    struct seen seen[MAX_DIRECTIVES] = {{NULL, NULL}};
    char where[96];
    int rc = section(c, map, what);
    if (rc <= 0)
        return rc;
    snprintf(where, sizeof(where), "in %s", what);
    if ((rc = walk(c, map, where, what, d->keys, base, d->check != NULL ? seen : NULL)) != 0)
        return rc;
    return d->check != NULL ? d->check(c, seen) : 0;
}

static int directive_parse(struct cfg_ctx *c, const struct directive *d, yaml_node_t *v,
                           const char *what, void *out)
{
    switch (d->kind) {
    case DIRECTIVE_BOOL:
        return node_bool(c, v, what, out);
    case DIRECTIVE_DURATION:
        return node_duration(c, v, what, d->allow_zero, out);
    case DIRECTIVE_COUNT:
        return node_count(c, v, what, d->max, out);
    case DIRECTIVE_ENUM:
        return node_enum(c, v, what, d->names, out);
    case DIRECTIVE_STRING:
        return node_string(c, v, what, d->allow_null, out);
    case DIRECTIVE_ENDPOINT:
        return node_endpoint(c, v, what, d->allow_unix, out);
    case DIRECTIVE_SECTION:
        return parse_section(c, d, v, what, out);
    case DIRECTIVE_CUSTOM:
        return d->parse(c, v, what, out);
    }
    return -EINVAL;
}

/* edit_distance is the Levenshtein distance of two key names, capped at |cap| + 1 (keys are
 * short; anything further away is no suggestion anyway). */
static size_t edit_distance(const char *a, const char *b, size_t cap)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[64];
    if (la >= ARRAY_SIZE(row) || lb >= ARRAY_SIZE(row))
        return cap + 1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t sub = diag + (a[i - 1] != b[j - 1]);
            row[j] = MIN(MIN(up + 1, row[j - 1] + 1), sub);
            diag = up;
        }
    }
    return MIN(row[lb], cap + 1);
}

/* unknown_key fails on |key|, suggesting the closest known name when a typo is likely: within
 * three edits, and fewer edits than half the name's length (so "ab" does not suggest "cd"). */
static int unknown_key(struct cfg_ctx *c, const yaml_node_t *k, const char *key,
                       const char *where, const struct directive *keys)
{
    const char *best = NULL;
    size_t best_d = 4;
    for (size_t i = 0; keys[i].name != NULL; i++) {
        size_t d = edit_distance(key, keys[i].name, 3);
        if (d < best_d && d * 2 < strlen(keys[i].name)) {
            best = keys[i].name;
            best_d = d;
        }
    }
    if (best != NULL)
        return ctx_fail(c, k, "unknown key %s %s; did you mean \"%s\"?", quote(c, key), where,
                        best);
    return ctx_fail(c, k, "unknown key %s %s", quote(c, key), where);
}

/* walk parses the mapping |map| against |keys| (ended by a NULL name) into the struct at |base|.
 * Messages place the mapping with |where| ("in log") and name a key |prefix|.key, or key alone
 * when |prefix| is NULL. seen[i], when |seen| is not NULL, records where keys[i] was found. */
static int walk(struct cfg_ctx *c, yaml_node_t *map, const char *where, const char *prefix,
                const struct directive *keys, void *base, struct seen *seen)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *key = NULL;
        yaml_node_t *k = NULL, *v = NULL;
        char what[80];
        size_t i;
        int rc;
        if ((rc = map_pair(c, map, p, where, &key, &k, &v)) != 0)
            return rc;
        for (i = 0; keys[i].name != NULL && strcmp(key, keys[i].name) != 0; i++)
            ;
        if (keys[i].name == NULL)
            return unknown_key(c, k, key, where, keys);
        if (prefix != NULL)
            snprintf(what, sizeof(what), "%s.%s", prefix, key);
        else
            snprintf(what, sizeof(what), "%s", key);
        if (seen != NULL)
            seen[i] = (struct seen){k, v};
        if ((rc = directive_parse(c, &keys[i], v, what, (char *)base + keys[i].offset)) != 0)
            return rc;
    }
    return 0;
}

/* Irregular keys. */

static int parse_workers(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    const char *s = "";
    uint64_t v;
    int rc = node_scalar(c, n, what, &s);
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
    *(unsigned *)out = (unsigned)v;
    return 0;
}

static int parse_sni(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    char *pattern;
    int rc = node_string(c, n, what, true, out);
    if (rc != 0 || (pattern = *(char **)out) == NULL)
        return rc;
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

static int parse_admin_address(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    if (node_is_null(n) ||
        (n->type == YAML_SCALAR_NODE && strcmp((const char *)n->data.scalar.value, "off") == 0)) {
        endpoint_cleanup(out);
        return 0;
    }
    return node_endpoint(c, n, what, false, out);
}

/* parse_request_head takes limits.max_request_head, the only size in the file. */
static int parse_request_head(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
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
    if (v < 256 || v > (16u << 20))
        return ctx_fail(c, n, "invalid value for %s: expected a size from 256 to 16MiB", what);
    *(size_t *)out = v;
    return 0;
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

static int parse_listener_name(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    int rc = node_string(c, n, what, false, out);
    if (rc == 0 && !safe_name(*(char **)out))
        return ctx_fail(c, n, "invalid value %s for %s: only A-Z a-z 0-9 _ . - are allowed",
                        quote(c, *(char **)out), what);
    return rc;
}

static int parse_upstream(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    struct config_endpoint *ep = out;
    int rc = node_endpoint(c, n, what, true, ep);
    if (rc == 0 && ep->unix_path == NULL && endpoint_port(ep) == 0)
        return ctx_fail(c, n, "invalid value %s for %s: the upstream port cannot be 0",
                        quote(c, ep->text), what);
    return rc;
}

static int parse_details(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
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
    *(unsigned *)out = bits;
    return 0;
}

/* skip_bracket returns the ']' that ends the bracket expression at |p| ('['), or its NUL. */
static const char *skip_bracket(const char *p)
{
    p += p[1] == '^' ? 2 : 1;
    if (*p == ']')
        p++;
    while (*p != '\0' && *p != ']') {
        if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
            char kind = p[1];
            for (p += 2; *p != '\0' && !(p[0] == kind && p[1] == ']'); p++)
                ;
            if (*p == '\0')
                break;
            p += 2;
            continue;
        }
        p++;
    }
    return p;
}

/* pattern_cost estimates how many elements glibc's regcomp expands |p| into: it copies a
 * repeated atom or group once per repetition ("a{3}" is "aaa", "a+" is "aa*"), so nested or
 * stacked repetitions grow exponentially ("a++++...", "((a{255}){255}){255}") and regcomp then
 * takes gigabytes (found by fuzz_config). Stops counting past |limit|. */
static uint64_t pattern_cost(const char *p, uint64_t limit)
{
    uint64_t sum[32] = {0}, last = 0;
    size_t depth = 0;
    for (; *p != '\0' && sum[depth] <= limit; p++) {
        if (*p == '(' && depth + 1 < ARRAY_SIZE(sum)) {
            sum[++depth] = 0;
            last = 0;
        } else if (*p == ')' && depth > 0) {
            last = sum[depth] > 0 ? sum[depth] : 1;
            sum[--depth] += last;
        } else if (*p == '+' || *p == '{') {
            uint64_t k = 2;
            if (*p == '{') { /* {m}, {m,} (m copies and a star), {m,n} */
                uint64_t m = 0, n = 0;
                bool comma = false, have_n = false;
                for (p++; *p >= '0' && *p <= '9'; p++)
                    m = m <= limit ? m * 10 + (uint64_t)(*p - '0') : m;
                if (*p == ',')
                    for (comma = true, p++; *p >= '0' && *p <= '9'; p++, have_n = true)
                        n = n <= limit ? n * 10 + (uint64_t)(*p - '0') : n;
                if (*p == '\0')
                    break;
                k = !comma ? m : have_n ? n : m + 1;
                k = k > 0 ? k : 1;
            }
            sum[depth] += last * (k - 1);
            last *= k;
        } else {
            if (*p == '\\' && p[1] != '\0')
                p++;
            else if (*p == '[') /* a bracket expression is one atom */
                p = skip_bracket(p);
            if (*p == '\0')
                break;
            last = (*p == '*' || *p == '?' || *p == '|') ? last : 1;
            sum[depth] += *p == '*' || *p == '?' || *p == '|' ? 0 : 1;
        }
    }
    return sum[depth] > limit ? sum[depth] : sum[0];
}

static int parse_pattern(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    char **pattern = out;
    regex_t re;
    int rc = node_string(c, n, what, true, pattern);
    if (rc != 0 || *pattern == NULL)
        return rc;
    if (pattern_cost(*pattern, 4096) > 4096)
        return ctx_fail(c, n,
                        "invalid value %s for %s: its repetitions expand too far (at most "
                        "4096 elements)",
                        quote(c, *pattern), what);
    int err = regcomp(&re, *pattern, REG_EXTENDED | REG_NOSUB);
    if (err != 0) {
        char msg[128];
        regerror(err, &re, msg, sizeof(msg));
        return ctx_fail(c, n, "invalid value %s for %s: %s", quote(c, *pattern), what, msg);
    }
    regfree(&re);
    return 0;
}

static bool is_token(const char *s)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr(extra, ch) != NULL))
            return false;
    }
    return true;
}

/* parse_strip_headers takes a listener's strip_headers: header names, stored lowercase with '_'
 * as '-', the way they are compared. The framing headers are certgate's own business. */
static int parse_strip_headers(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    static const char *const own[] = {"host",       "content-length", "transfer-encoding",
                                      "connection", "upgrade",        "te"};
    struct config_names *list = out;
    if (node_is_null(n))
        return 0;
    if (n->type != YAML_SEQUENCE_NODE)
        return ctx_fail(c, n,
                        "%s: expected a sequence of header names such as [x-client-id], "
                        "got %s",
                        what, node_kind(n));
    size_t num = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (num > CONFIG_MAX_STRIP_HEADERS)
        return ctx_fail(c, n, "%s: at most %u names are allowed", what, CONFIG_MAX_STRIP_HEADERS);
    list->names = xcalloc(num + 1, sizeof(char *));
    for (size_t i = 0; i < num; i++) {
        yaml_node_t *item = yaml_document_get_node(c->doc, n->data.sequence.items.start[i]);
        const char *s = "";
        int rc;
        if (item == NULL)
            return ctx_fail(c, n, "%s: malformed sequence", what);
        if ((rc = node_scalar(c, item, what, &s)) != 0)
            return rc;
        if (!is_token(s) || strlen(s) > CONFIG_MAX_HEADER_NAME)
            return ctx_fail(c, item,
                            "invalid value %s in %s: expected a header name (letters, digits and "
                            "!#$%%&'*+-.^_`|~, at most %u bytes)",
                            quote(c, s), what, CONFIG_MAX_HEADER_NAME);
        char *name = xstrdup(s);
        for (char *p = name; *p != '\0'; p++)
            *p = *p == '_' ? '-' : (*p >= 'A' && *p <= 'Z') ? (char)(*p - 'A' + 'a') : *p;
        list->names[list->num++] = name;
        for (size_t j = 0; j < ARRAY_SIZE(own); j++)
            if (strcmp(name, own[j]) == 0)
                return ctx_fail(c, item,
                                "invalid value %s in %s: certgate frames %s itself, it cannot be "
                                "stripped",
                                quote(c, s), what, own[j]);
        for (size_t j = 0; j + 1 < list->num; j++)
            if (strcmp(list->names[j], name) == 0)
                return ctx_fail(c, item, "duplicate value %s in %s", quote(c, s), what);
    }
    return 0;
}

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
            return ctx_fail(c, cert != NULL ? cert : key,
                            "credentials.%s cannot be combined with credentials.pkcs12",
                            cert != NULL ? "cert" : "key");
    } else {
        if (cfg->credentials_pkcs12_password_file != NULL)
            return ctx_fail(c, seen[CRED_PKCS12_PASSWORD_FILE].key,
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
    {"sni", DIRECTIVE_CUSTOM, CFG(tenancy_sni), .parse = parse_sni},
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
                       .parse = parse_admin_address},
    [ADMIN_TOKEN_FILE] = {"token_file", DIRECTIVE_STRING, CFG(admin_token_file),
                          .allow_null = true},
    [ADMIN_PUBLIC_ADDRESS] = {"public_address", DIRECTIVE_CUSTOM, CFG(admin_public_address),
                              .parse = parse_admin_address},
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
        return ctx_fail(c, seen[ADMIN_ADDRESS].value,
                        "admin.address %s is not a loopback address: without admin.token_file "
                        "the admin API (POST /reload, the allowlist) listens only on 127.0.0.1, "
                        "[::1] or localhost; set admin.token_file, or serve probes and metrics "
                        "on admin.public_address",
                        quote(c, a->text));
    if (a->text != NULL && p->text != NULL && endpoint_port(a) != 0 &&
        a->addr_len == p->addr_len && memcmp(&a->addr, &p->addr, a->addr_len) == 0)
        return ctx_fail(c, seen[ADMIN_PUBLIC_ADDRESS].value,
                        "admin.public_address is the same address as admin.address");
    return 0;
}

/* Upper bounds keep a typo from becoming an allocation that cannot succeed. Draining for zero
 * time is a valid choice: stop at once. */
static const struct directive limits_keys[] = {
    {"max_connections", DIRECTIVE_COUNT, CFG(limits.max_connections), .max = 10000000},
    {"max_headers", DIRECTIVE_COUNT, CFG(limits.max_headers), .max = 100000},
    {"max_request_head", DIRECTIVE_CUSTOM, CFG(limits.max_request_head),
     .parse = parse_request_head},
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
    L_STRIP_HEADERS
};
static const struct directive listener_keys[] = {
    [L_NAME] = {"name", DIRECTIVE_CUSTOM, LISTENER(name), .parse = parse_listener_name},
    [L_ADDRESS] = {"address", DIRECTIVE_ENDPOINT, LISTENER(address)},
    [L_PROXY_PROTOCOL] = {"proxy_protocol", DIRECTIVE_BOOL, LISTENER(proxy_protocol)},
    [L_FORWARDED_HEADERS] = {"forwarded_headers", DIRECTIVE_ENUM, LISTENER(forwarded_headers),
                             .names = forwarded_modes},
    [L_HEADERS_WITH_UNDERSCORES] = {"headers_with_underscores", DIRECTIVE_ENUM,
                                    LISTENER(headers_with_underscores), .names = underscore_modes},
    [L_STRIP_HEADERS] = {"strip_headers", DIRECTIVE_CUSTOM, LISTENER(strip_headers),
                         .parse = parse_strip_headers},
    {"mode", DIRECTIVE_ENUM, LISTENER(mode), .names = modes},
    {"upstream", DIRECTIVE_CUSTOM, LISTENER(upstream), .parse = parse_upstream},
    {"client_auth", DIRECTIVE_ENUM, LISTENER(client_auth), .names = client_auths},
    {"verify", DIRECTIVE_BOOL, LISTENER(verify)},
    {"forward_client_cert", DIRECTIVE_ENUM, LISTENER(forward_client_cert), .names = fcc_modes},
    {"client_cert_details", DIRECTIVE_CUSTOM, LISTENER(client_cert_details),
     .parse = parse_details},
    {"client_cert_header", DIRECTIVE_ENUM, LISTENER(client_cert_header), .names = cc_headers},
    {"subject_cn_pattern", DIRECTIVE_CUSTOM, LISTENER(subject_cn_pattern), .parse = parse_pattern},
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
    uint16_t port = endpoint_port(a);
    if (port == 0 || port != endpoint_port(b) || a->unix_path != NULL || b->unix_path != NULL)
        return false;
    bool wa = endpoint_is_wildcard(a), wb = endpoint_is_wildcard(b);
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
        return ctx_fail(c, map, "listeners[%zu]: expected a mapping, got %s", idx, node_kind(map));
    snprintf(prefix, sizeof(prefix), "listeners[%zu]", idx);
    if ((rc = walk(c, map, "in listener", prefix, listener_keys, l, ln->seen)) != 0)
        return rc;
    if (l->name == NULL)
        return ctx_fail(c, map, "missing required key \"name\" in listener");
    if (l->address.text == NULL)
        return ctx_fail(c, map, "missing required key \"address\" in listener %s",
                        quote(c, l->name));
    if (l->upstream.text == NULL)
        return ctx_fail(c, map, "missing required key \"upstream\" in listener %s",
                        quote(c, l->name));
    if (l->proxy_protocol && l->mode == LISTENER_HTTP)
        return ctx_fail(c, ln->seen[L_PROXY_PROTOCOL].value,
                        "listener %s: proxy_protocol is only for tcp and tls listeners",
                        quote(c, l->name));
    /* Request headers exist only where certgate speaks HTTP. */
    static const unsigned http_only[] = {L_FORWARDED_HEADERS, L_HEADERS_WITH_UNDERSCORES,
                                         L_STRIP_HEADERS};
    for (size_t i = 0; i < ARRAY_SIZE(http_only); i++)
        if (l->mode != LISTENER_HTTP && ln->seen[http_only[i]].key != NULL)
            return ctx_fail(c, ln->seen[http_only[i]].key,
                            "listener %s: %s is only for http listeners", quote(c, l->name),
                            listener_keys[http_only[i]].name);
    for (size_t i = 0; i < idx; i++) {
        const struct listener_config *o = &c->cfg->listeners[i];
        if (strcmp(o->name, l->name) == 0)
            return ctx_fail(c, ln->seen[L_NAME].value, "duplicate listener name %s",
                            quote(c, l->name));
        if (endpoint_port(&l->address) != 0 && o->address.addr_len == l->address.addr_len &&
            memcmp(&o->address.addr, &l->address.addr, l->address.addr_len) == 0)
            return ctx_fail(c, ln->seen[L_ADDRESS].value,
                            "listener %s uses the same address as listener %s", quote(c, l->name),
                            o->name);
        if (addresses_collide(&l->address, &o->address))
            return ctx_fail(c, ln->seen[L_ADDRESS].value,
                            "listener %s: address %s overlaps listener %s's %s (a wildcard "
                            "address takes the port on every interface)",
                            quote(c, l->name), l->address.text, o->name, o->address.text);
    }
    return 0;
}

static int parse_listeners(struct cfg_ctx *c, yaml_node_t *seq, const char *what, void *out)
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

static const struct directive root_keys[] = {
    {"workers", DIRECTIVE_CUSTOM, CFG(workers), .parse = parse_workers},
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

static int parse_root(struct cfg_ctx *c, yaml_node_t *root)
{
    int rc;

    if (root->type != YAML_MAPPING_NODE)
        return ctx_fail(c, root, "expected a mapping at top level, got %s", node_kind(root));
    if ((rc = walk(c, root, "at top level", NULL, root_keys, c->cfg, NULL)) != 0)
        return rc;
    if (c->cfg->listeners == NULL)
        return ctx_fail(c, root, "missing required key \"listeners\" at top level");
    /* The host's CPU count overstates a container limited by cpu.max or a process pinned
     * with taskset: more workers than usable CPUs only add contention. */
    c->cfg->workers_auto = c->workers_auto;
    if (c->workers_auto)
        c->cfg->workers = config_usable_cpus("/sys/fs/cgroup");
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
    cfg->expiry_warning_ms = 14ull * 24 * 3600 * 1000;
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

/* resolve_path makes |*field| absolute against |dir| when it is relative. */
static void resolve_path(char **field, const char *dir)
{
    if (*field == NULL || (*field)[0] == '/')
        return;
    char *joined = base_join_path(dir, *field);
    free(*field);
    *field = joined;
}

/* resolve_paths joins relative paths in the file to the file's own directory, as nginx and
 * Envoy do for theirs: the meaning of a configuration must not depend on the directory certgate
 * was started from (systemd's is /, a shell's is wherever the operator stood). */
static void resolve_paths(struct config *cfg, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return; /* the file is in the working directory: relative paths already mean that */
    char *dir = xstrndup(path, slash == path ? 1 : (size_t)(slash - path));
    resolve_path(&cfg->credentials_dir, dir);
    resolve_path(&cfg->ca_store_dir, dir);
    resolve_path(&cfg->allowed_subjects_file, dir);
    resolve_path(&cfg->admin_token_file, dir);
    free(dir);
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
    if (rc == 0)
        resolve_paths(*out, path);
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
    endpoint_cleanup(&cfg->admin_public_address);
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        struct listener_config *l = &cfg->listeners[i];
        free(l->name);
        endpoint_cleanup(&l->address);
        endpoint_cleanup(&l->upstream);
        free(l->subject_cn_pattern);
        for (size_t j = 0; j < l->strip_headers.num; j++)
            free(l->strip_headers.names[j]);
        free(l->strip_headers.names);
    }
    free(cfg->listeners);
    free(cfg);
}
