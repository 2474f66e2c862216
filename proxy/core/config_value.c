/* config_value.c: the scalar values of the configuration (durations, sizes, cpu.max, usable CPUs,
 * endpoints), for the loader and for the public config_parse_* functions. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/base.h"
#include "core/config_internal.h"

/* Scalar parsers shared by the public functions and the loader. */

bool config_parse_digits(uint64_t *out, const char **p)
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
    if (text == NULL || !config_parse_digits(&v, &p))
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
    else if (!config_parse_digits(&quota, &p) || quota == 0)
        return -EINVAL;
    if (*p++ != ' ' || !config_parse_digits(&period, &p) || period == 0 || period > 1000000)
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

void config_endpoint_cleanup(struct config_endpoint *ep)
{
    free(ep->text);
    free(ep->unix_path);
    memset(ep, 0, sizeof(*ep));
}

/* endpoint_parse is config_parse_endpoint with a reason for messages in |*why|. */
int config_endpoint_parse(struct config_endpoint *out, const char *text, bool allow_unix,
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
    if (!config_parse_digits(&port, &p) || *p != '\0' || p - port_text > 5 || port > 65535) {
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
            if (config_parse_digits(&id, &z) && *z == '\0' && id <= UINT32_MAX)
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
    return config_endpoint_parse(out, text, allow_unix, &why);
}

bool config_endpoint_is_wildcard(const struct config_endpoint *ep)
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

uint16_t config_endpoint_port(const struct config_endpoint *ep)
{
    if (ep->unix_path != NULL)
        return 0;
    if (ep->addr.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&ep->addr)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&ep->addr)->sin_port);
}
