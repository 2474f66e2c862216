/* tenancy.c: SNI and Host names to tenant ids. */
#include "http/tenancy.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

/* A port: digits only (none is allowed, as RFC 3986 allows an empty port). */
static bool all_digits(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] < '0' || p[i] > '9')
            return false;
    return true;
}

bool tenancy_normalize(char *out, const char *name, size_t len, bool is_host)
{
    if (is_host) {
        if (len > 0 && name[0] == '[') {
            const char *close = memchr(name, ']', len);
            if (close == NULL)
                return false;
            size_t rest = len - (size_t)(close + 1 - name);
            if (rest > 0 && (close[1] != ':' || !all_digits(close + 2, rest - 1)))
                return false;
            name++;
            len = (size_t)(close - name);
        } else {
            const char *colon = memchr(name, ':', len);
            if (colon != NULL) {
                if (!all_digits(colon + 1, (size_t)(name + len - colon - 1)))
                    return false;
                len = (size_t)(colon - name);
            }
        }
    }
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > TENANCY_MAX_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (unsigned char)(ch - 'A' + 'a');
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                  ch == '.' || ch == '_' || ch == ':';
        if (!ok)
            return false;
        out[i] = (char)ch;
    }
    out[len] = '\0';
    return true;
}

bool tenancy_is_ip_literal(const char *name)
{
    unsigned char addr[16];
    return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

static bool is_label(const char *s, size_t len)
{
    if (len == 0 || len > TENANCY_MAX_ID || s[0] == '-' || s[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
            return false;
    }
    return true;
}

bool tenancy_match(const char *pattern, const char *name, char *out_id)
{
    const char *mark = strstr(pattern, "{tenant}");
    if (mark == NULL)
        return false;
    size_t pre = (size_t)(mark - pattern);
    const char *suffix = mark + strlen("{tenant}");
    size_t suf = strlen(suffix), len = strlen(name);
    if (len <= pre + suf || strncasecmp(name, pattern, pre) != 0 ||
        strcasecmp(name + len - suf, suffix) != 0)
        return false;
    size_t id_len = len - pre - suf;
    if (!is_label(name + pre, id_len))
        return false;
    memcpy(out_id, name + pre, id_len);
    out_id[id_len] = '\0';
    return true;
}
