/* config_parsers.c: the keys whose values need more than a directive kind (config_walk.c) can
 * say: workers, tenancy.sni, admin addresses, limits.max_request_head, listener names and
 * upstreams, client_cert_details, subject_cn_pattern, strip_headers. config_keys.c names them
 * in its tables. */
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "core/base.h"
#include "core/config_internal.h"

static const struct name_value cc_details[] = {
    {"cert", CC_DETAIL_CERT}, {"chain", CC_DETAIL_CHAIN}, {"subject", CC_DETAIL_SUBJECT},
    {"uri", CC_DETAIL_URI},   {"dns", CC_DETAIL_DNS},     {NULL, 0},
};

/* Irregular keys. */

int config_parse_key_workers(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    const char *s = "";
    uint64_t v;
    int rc = config_node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    if (strcmp(s, "auto") == 0) {
        c->workers_auto = true;
        return 0;
    }
    const char *p = s;
    if (!config_parse_digits(&v, &p) || *p != '\0' || v == 0 || v > CONFIG_MAX_WORKERS)
        return config_fail(c, n, "invalid value %s for workers: expected auto or 1 to %u",
                           config_quote(c, s), CONFIG_MAX_WORKERS);
    c->workers_auto = false;
    *(unsigned *)out = (unsigned)v;
    return 0;
}

int config_parse_key_sni(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    char *pattern;
    int rc = config_node_string(c, n, what, true, out);
    if (rc != 0 || (pattern = *(char **)out) == NULL)
        return rc;
    const char *first = strstr(pattern, "{tenant}");
    if (first == NULL || strstr(first + 1, "{tenant}") != NULL)
        return config_fail(c, n,
                           "invalid value %s for tenancy.sni: must contain {tenant} exactly once",
                           config_quote(c, pattern));
    for (const char *s = pattern; *s != '\0'; s++) {
        if (s == first) {
            s += strlen("{tenant}") - 1;
            continue;
        }
        if (*s == '{' || *s == '}' || *s <= ' ' || *s == 0x7f)
            return config_fail(c, n,
                               "invalid value %s for tenancy.sni: only {tenant} and host name "
                               "characters are allowed",
                               config_quote(c, pattern));
    }
    return 0;
}

int config_parse_key_admin_address(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    if (config_node_is_null(n) ||
        (n->type == YAML_SCALAR_NODE && strcmp((const char *)n->data.scalar.value, "off") == 0)) {
        config_endpoint_cleanup(out);
        return 0;
    }
    return config_node_endpoint(c, n, what, false, out);
}

/* config_parse_key_request_head takes limits.max_request_head, the only size in the file. */
int config_parse_key_request_head(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    const char *s = "";
    size_t v;
    int rc = config_node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    if (config_parse_size(&v, s) != 0)
        return config_fail(c, n,
                           "invalid value %s for %s: expected a size such as 512, 64KiB or 1MiB",
                           config_quote(c, s), what);
    if (v == 0)
        return config_fail(c, n, "invalid value %s for %s: must be greater than zero",
                           config_quote(c, s), what);
    if (v < 256 || v > (16u << 20))
        return config_fail(c, n, "invalid value for %s: expected a size from 256 to 16MiB", what);
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

int config_parse_key_listener_name(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    int rc = config_node_string(c, n, what, false, out);
    if (rc == 0 && !safe_name(*(char **)out))
        return config_fail(c, n, "invalid value %s for %s: only A-Z a-z 0-9 _ . - are allowed",
                           config_quote(c, *(char **)out), what);
    return rc;
}

int config_parse_key_upstream(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    struct config_endpoint *ep = out;
    int rc = config_node_endpoint(c, n, what, true, ep);
    if (rc == 0 && ep->unix_path == NULL && config_endpoint_port(ep) == 0)
        return config_fail(c, n, "invalid value %s for %s: the upstream port cannot be 0",
                           config_quote(c, ep->text), what);
    return rc;
}

int config_parse_key_details(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    char buf[160];
    unsigned bits = 0;
    if (n->type != YAML_SEQUENCE_NODE)
        return config_fail(c, n,
                           "%s: expected a sequence such as [cert, chain, subject, uri, dns], "
                           "got %s",
                           what, config_node_kind(n));
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        yaml_node_t *item = yaml_document_get_node(c->doc, *it);
        const char *s = "";
        int rc, e = -1;
        if (item == NULL)
            return config_fail(c, n, "%s: malformed sequence", what);
        if ((rc = config_node_scalar(c, item, what, &s)) != 0)
            return rc;
        for (size_t i = 0; cc_details[i].name != NULL; i++)
            if (strcmp(s, cc_details[i].name) == 0)
                e = cc_details[i].value;
        if (e < 0)
            return config_fail(c, item, "invalid value %s in %s: expected %s", config_quote(c, s),
                               what, config_expected(buf, sizeof(buf), cc_details));
        if (bits & (unsigned)e)
            return config_fail(c, item, "duplicate value %s in %s", config_quote(c, s), what);
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

/* pattern_nesting returns how deeply |p|'s repetitions nest: "a*" is 1, "(a*)+" and "a*+" are 2.
 * glibc's regcomp is polynomial or worse in a third level over something that can match empty
 * ("^3****...": 7 s for 134 stars; "((a*)+){2000}": 42 s, found by fuzz_config), and ERE leaves
 * stacked operators undefined, so more than two levels are refused. */
static unsigned pattern_nesting(const char *p)
{
    unsigned inner[32] = {0}, last = 0, worst = 0;
    bool have_atom = false;
    size_t depth = 0;
    for (; *p != '\0'; p++) {
        if (*p == '(' && depth + 1 < ARRAY_SIZE(inner)) {
            inner[++depth] = 0;
            last = 0;
            have_atom = false;
        } else if (*p == ')' && depth > 0) {
            last = inner[depth--];
            have_atom = true;
        } else if (*p == '*' || *p == '+' || *p == '?' || *p == '{') {
            if (*p == '{')
                while (p[1] != '\0' && *p != '}')
                    p++;
            if (have_atom)
                last++;
        } else if (*p == '|') {
            have_atom = false;
            continue;
        } else {
            if (*p == '\\' && p[1] != '\0')
                p++;
            else if (*p == '[')
                p = skip_bracket(p);
            if (*p == '\0')
                break;
            last = 0;
            have_atom = true;
        }
        inner[depth] = last > inner[depth] ? last : inner[depth];
        worst = last > worst ? last : worst;
    }
    return worst;
}

int config_parse_key_pattern(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    char **pattern = out;
    regex_t re;
    int rc = config_node_string(c, n, what, true, pattern);
    if (rc != 0 || *pattern == NULL)
        return rc;
    if (pattern_cost(*pattern, 4096) > 4096)
        return config_fail(c, n,
                           "invalid value %s for %s: its repetitions expand too far (at most "
                           "4096 elements)",
                           config_quote(c, *pattern), what);
    if (pattern_nesting(*pattern) > 2)
        return config_fail(c, n,
                           "invalid value %s for %s: its repetitions nest more than two deep "
                           "(like \"a*++\" or \"((a*)+)*\"), which regcomp takes minutes over",
                           config_quote(c, *pattern), what);
    int err = regcomp(&re, *pattern, REG_EXTENDED | REG_NOSUB);
    if (err != 0) {
        char msg[128];
        regerror(err, &re, msg, sizeof(msg));
        return config_fail(c, n, "invalid value %s for %s: %s", config_quote(c, *pattern), what,
                           msg);
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

/* config_parse_key_strip_headers takes a listener's strip_headers: header names, stored lowercase
 * with '_' as '-', the way they are compared. The framing headers are certgate's own business. */
int config_parse_key_strip_headers(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    static const char *const own[] = {"host",       "content-length", "transfer-encoding",
                                      "connection", "upgrade",        "te"};
    struct config_names *list = out;
    if (config_node_is_null(n))
        return 0;
    if (n->type != YAML_SEQUENCE_NODE)
        return config_fail(c, n,
                           "%s: expected a sequence of header names such as [x-client-id], "
                           "got %s",
                           what, config_node_kind(n));
    size_t num = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (num > CONFIG_MAX_STRIP_HEADERS)
        return config_fail(c, n, "%s: at most %u names are allowed", what,
                           CONFIG_MAX_STRIP_HEADERS);
    list->names = xcalloc(num + 1, sizeof(char *));
    for (size_t i = 0; i < num; i++) {
        yaml_node_t *item = yaml_document_get_node(c->doc, n->data.sequence.items.start[i]);
        const char *s = "";
        int rc;
        if (item == NULL)
            return config_fail(c, n, "%s: malformed sequence", what);
        if ((rc = config_node_scalar(c, item, what, &s)) != 0)
            return rc;
        if (!is_token(s) || strlen(s) > CONFIG_MAX_HEADER_NAME)
            return config_fail(
                c, item,
                "invalid value %s in %s: expected a header name (letters, digits and "
                "!#$%%&'*+-.^_`|~, at most %u bytes)",
                config_quote(c, s), what, CONFIG_MAX_HEADER_NAME);
        char *name = xstrdup(s);
        for (char *p = name; *p != '\0'; p++)
            *p = *p == '_' ? '-' : (*p >= 'A' && *p <= 'Z') ? (char)(*p - 'A' + 'a') : *p;
        list->names[list->num++] = name;
        for (size_t j = 0; j < ARRAY_SIZE(own); j++)
            if (strcmp(name, own[j]) == 0)
                return config_fail(
                    c, item,
                    "invalid value %s in %s: certgate frames %s itself, it cannot be "
                    "stripped",
                    config_quote(c, s), what, own[j]);
        for (size_t j = 0; j + 1 < list->num; j++)
            if (strcmp(list->names[j], name) == 0)
                return config_fail(c, item, "duplicate value %s in %s", config_quote(c, s), what);
    }
    return 0;
}

/* config_parse_key_alpn takes a listener's alpn: a sequence of h2 and http/1.1 (RFC 7301 names),
 * at least one, each once. The server's preference is always h2 first. */
int config_parse_key_alpn(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out)
{
    unsigned *bits = out;
    *bits = 0;
    if (n->type != YAML_SEQUENCE_NODE)
        return config_fail(c, n, "%s: expected a sequence such as [h2, http/1.1], got %s", what,
                           config_node_kind(n));
    size_t num = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (num == 0)
        return config_fail(c, n, "%s: name at least one of h2 and http/1.1", what);
    for (size_t i = 0; i < num; i++) {
        yaml_node_t *item = yaml_document_get_node(c->doc, n->data.sequence.items.start[i]);
        const char *s = "";
        int rc;
        if (item == NULL)
            return config_fail(c, n, "%s: malformed sequence", what);
        if ((rc = config_node_scalar(c, item, what, &s)) != 0)
            return rc;
        unsigned bit = strcmp(s, "h2") == 0         ? ALPN_H2
                       : strcmp(s, "http/1.1") == 0 ? ALPN_HTTP11
                                                    : 0;
        if (bit == 0)
            return config_fail(c, item, "invalid value %s in %s: expected h2 or http/1.1",
                               config_quote(c, s), what);
        if (*bits & bit)
            return config_fail(c, item, "duplicate value %s in %s", config_quote(c, s), what);
        *bits |= bit;
    }
    return 0;
}
