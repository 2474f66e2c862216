/* allowlist_canon.c: the canonical form of a certificate subject in RFC 2253 text, the key of
 * the allowlist: attribute types in upper case, values unescaped and re-escaped one way,
 * multi-valued RDNs sorted, so that two spellings of one subject are one entry. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/base.h"
#include "tls/allowlist_internal.h"

/* --- canonical subjects ------------------------------------------------------------------ */

struct pair {
    char *attr;
    char *value;
    size_t value_len;
};

static const struct {
    const char *alias;
    const char *name;
} attr_aliases[] = {
    {"e", "emailaddress"},
    {"email", "emailaddress"},
    {"s", "st"},
    {"2.5.4.3", "cn"},
    {"2.5.4.5", "serialnumber"},
    {"2.5.4.6", "c"},
    {"2.5.4.7", "l"},
    {"2.5.4.8", "st"},
    {"2.5.4.9", "street"},
    {"2.5.4.10", "o"},
    {"2.5.4.11", "ou"},
    {"2.5.4.12", "title"},
    {"1.2.840.113549.1.9.1", "emailaddress"},
    {"0.9.2342.19200300.100.1.1", "uid"},
    {"0.9.2342.19200300.100.1.25", "dc"},
};

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

static void pairs_free(struct pair *p, size_t num)
{
    for (size_t i = 0; i < num; i++) {
        free(p[i].attr);
        free(p[i].value);
    }
}

/* Parses one "attr=value" from |*pp|, stopping at an unescaped ',', ';' or '+'. */
static int parse_pair(const char **pp, struct pair *out)
{
    const char *p = *pp;
    while (is_space(*p))
        p++;
    const char *a = p;
    while (isalnum((unsigned char)*p) || *p == '-' || *p == '.')
        p++;
    size_t alen = (size_t)(p - a);
    while (is_space(*p))
        p++;
    if (alen == 0 || *p != '=')
        return -EINVAL;
    p++;
    while (is_space(*p))
        p++;
    char *attr = xstrndup(a, alen);
    for (char *c = attr; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    for (size_t i = 0; i < ARRAY_SIZE(attr_aliases); i++) {
        if (strcmp(attr, attr_aliases[i].alias) == 0) {
            free(attr);
            attr = xstrdup(attr_aliases[i].name);
            break;
        }
    }
    char *value = xmalloc(strlen(p) + 1);
    size_t len = 0;
    size_t keep = 0; /* trailing spaces are trimmed unless escaped */
    if (*p == '"') {
        for (p++; *p != '"'; p++) {
            if (*p == '\0')
                goto bad;
            if (*p == '\\' && p[1] != '\0')
                p++;
            value[len++] = *p;
        }
        p++;
        while (is_space(*p))
            p++;
        keep = len;
    } else {
        for (; *p != '\0' && *p != ',' && *p != ';' && *p != '+'; p++) {
            if (*p == '\\') {
                int hi = base_hex_digit((unsigned char)p[1]);
                int lo = hi < 0 ? -1 : base_hex_digit((unsigned char)p[2]);
                if (hi >= 0 && lo >= 0) {
                    value[len++] = (char)(hi * 16 + lo);
                    p += 2;
                } else if (p[1] != '\0') {
                    value[len++] = *++p;
                } else {
                    goto bad;
                }
                keep = len;
                continue;
            }
            value[len++] = *p;
            if (!is_space(*p))
                keep = len;
        }
    }
    if (*p != '\0' && *p != ',' && *p != ';' && *p != '+')
        goto bad;
    value[keep] = '\0';
    out->attr = attr;
    out->value = value;
    out->value_len = keep;
    *pp = p;
    return 0;
bad:
    free(attr);
    free(value);
    return -EINVAL;
}

static int pair_cmp(const void *x, const void *y)
{
    const struct pair *a = x, *b = y;
    int c = strcmp(a->attr, b->attr);
    if (c != 0)
        return c;
    size_t n = MIN(a->value_len, b->value_len);
    c = memcmp(a->value, b->value, n);
    if (c != 0)
        return c;
    return a->value_len < b->value_len ? -1 : a->value_len > b->value_len;
}

int allowlist_canon(const char *subject, char **out)
{
    *out = NULL;
    if (subject == NULL || strlen(subject) > MAX_SUBJECT_BYTES)
        return -EINVAL;
    struct pair pairs[MAX_PAIRS];
    size_t num = 0;
    const char *p = subject;
    while (is_space(*p))
        p++;
    if (*p == '\0')
        return -EINVAL;
    for (;;) {
        if (num == MAX_PAIRS || parse_pair(&p, &pairs[num]) != 0) {
            pairs_free(pairs, num);
            return -EINVAL;
        }
        num++;
        if (*p == '\0')
            break;
        p++; /* ',', ';' or '+' */
    }
    qsort(pairs, num, sizeof(pairs[0]), pair_cmp);
    struct buf b = {0};
    for (size_t i = 0; i < num; i++) {
        if (i > 0 && pair_cmp(&pairs[i - 1], &pairs[i]) == 0)
            continue; /* the same pair twice says nothing more */
        if (buf_used(&b) > 0)
            buf_append(&b, ",", 1);
        buf_appends(&b, pairs[i].attr);
        buf_append(&b, "=", 1);
        /* Escaped too: what parse_pair would read otherwise (';' ends a pair, a leading '"'
         * quotes, spaces at either end are trimmed), so that a canonical form canonicalises
         * to itself. */
        size_t vlen = pairs[i].value_len;
        for (size_t k = 0; k < vlen; k++) {
            unsigned char c = (unsigned char)pairs[i].value[k];
            if (c < 0x20 || c == 0x7f || c == ',' || c == '+' || c == '\\' || c == '=' ||
                c == ';' || c == '"' || (c == ' ' && (k == 0 || k + 1 == vlen)))
                buf_appendf(&b, "\\%02X", c);
            else
                buf_append(&b, &c, 1);
        }
    }
    pairs_free(pairs, num);
    /* Escaping lengthens a value up to threefold: a canonical form longer than a subject may be
     * would not canonicalise again (found by fuzz_allowlist), so such a subject is refused. */
    int rc = buf_used(&b) <= MAX_SUBJECT_BYTES ? 0 : -EINVAL;
    if (rc == 0)
        *out = xstrndup(buf_data(&b), buf_used(&b));
    buf_free(&b);
    return rc;
}
