/* config_walk.c: the table-driven walk of the configuration (as in h2o's configurator: each
 * mapping is a table of the keys it accepts, and one function walks a mapping against its
 * table), the node helpers it uses, and messages that name FILE:LINE:COL and quote user text. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "core/base.h"
#include "core/config_internal.h"

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

__attribute__((format(printf, 3, 4))) int config_fail(struct cfg_ctx *c, const yaml_node_t *node,
                                                      const char *fmt, ...)
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
const char *config_quote(struct cfg_ctx *c, const char *s)
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
const char *config_expected(char *buf, size_t len, const struct name_value *names)
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


/* Node helpers. */

const char *config_node_kind(const yaml_node_t *n)
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

bool config_node_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = (const char *)n->data.scalar.value;
    return n->data.scalar.length == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

int config_node_scalar(struct cfg_ctx *c, const yaml_node_t *n, const char *what, const char **out)
{
    if (n->type != YAML_SCALAR_NODE)
        return config_fail(c, n, "%s: expected a scalar, got %s", what, config_node_kind(n));
    const char *s = (const char *)n->data.scalar.value;
    if (strlen(s) != n->data.scalar.length)
        return config_fail(c, n, "%s: contains a NUL byte", what);
    *out = s;
    return 0;
}

static int node_enum(struct cfg_ctx *c, const yaml_node_t *n, const char *what,
                     const struct name_value *names, int *out)
{
    const char *s = "";
    char buf[160];
    int rc = config_node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    for (size_t i = 0; names[i].name != NULL; i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].value;
            return 0;
        }
    }
    return config_fail(c, n, "invalid value %s for %s: expected %s", config_quote(c, s), what,
                    config_expected(buf, sizeof(buf), names));
}

static int node_bool(struct cfg_ctx *c, const yaml_node_t *n, const char *what, bool *out)
{
    static const char *const yes[] = {"on", "true", "yes"}, *const no[] = {"off", "false", "no"};
    const char *s = "";
    int rc = config_node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
            *out = strcasecmp(s, yes[i]) == 0;
            return 0;
        }
    }
    return config_fail(c, n, "invalid value %s for %s: expected on, off, true, false, yes or no",
                    config_quote(c, s), what);
}

static int node_duration(struct cfg_ctx *c, const yaml_node_t *n, const char *what, bool allow_zero,
                         uint64_t *out)
{
    const char *s = "";
    uint64_t v;
    int rc = config_node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    if (config_parse_duration_ms(&v, s) != 0)
        return config_fail(c, n,
                        "invalid value %s for %s: expected a duration such as 250ms, 10s, 5m or "
                        "1h (at most a year)",
                        config_quote(c, s), what);
    if (v == 0 && !allow_zero)
        return config_fail(c, n, "invalid value %s for %s: must be greater than zero",
                           config_quote(c, s), what);
    *out = v;
    return 0;
}

/* node_count parses a positive integer no larger than |max|. */
static int node_count(struct cfg_ctx *c, const yaml_node_t *n, const char *what, uint32_t max,
                      uint32_t *out)
{
    const char *s = "", *p;
    uint64_t v;
    int rc = config_node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    p = s;
    if (!config_parse_digits(&v, &p) || *p != '\0' || v == 0 || v > max)
        return config_fail(c, n, "invalid value %s for %s: expected an integer from 1 to %llu",
                        config_quote(c, s), what, (unsigned long long)max);
    *out = (uint32_t)v;
    return 0;
}

/* node_string replaces |*out| with a copy of a non-empty scalar; null clears it when allowed. */
int config_node_string(struct cfg_ctx *c, const yaml_node_t *n, const char *what, bool allow_null,
                       char **out)
{
    const char *s = "";
    if (allow_null && config_node_is_null(n)) {
        free(*out);
        *out = NULL;
        return 0;
    }
    int rc = config_node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    if (*s == '\0' || (!allow_null && config_node_is_null(n)))
        return config_fail(c, n, "%s must not be empty", what);
    free(*out);
    *out = xstrdup(s);
    return 0;
}

int config_node_endpoint(struct cfg_ctx *c, const yaml_node_t *n, const char *what, bool allow_unix,
                         struct config_endpoint *out)
{
    const char *s = "", *why = "invalid";
    struct config_endpoint ep;
    int rc = config_node_scalar(c, n, what, &s);
    if (rc != 0)
        return rc;
    if (config_endpoint_parse(&ep, s, allow_unix, &why) != 0)
        return config_fail(c, n, "invalid value %s for %s: %s", config_quote(c, s), what, why);
    config_endpoint_cleanup(out);
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
        return config_fail(c, map, "malformed mapping %s", where);
    if (k->type != YAML_SCALAR_NODE)
        return config_fail(c, k, "expected a key name %s, got %s", where, config_node_kind(k));
    const char *s = (const char *)k->data.scalar.value;
    if (strlen(s) != k->data.scalar.length)
        return config_fail(c, k, "key %s contains a NUL byte", where);
    for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
        yaml_node_t *prev = yaml_document_get_node(c->doc, q->key);
        if (prev != NULL && prev->type == YAML_SCALAR_NODE &&
            prev->data.scalar.length == k->data.scalar.length &&
            memcmp(prev->data.scalar.value, s, k->data.scalar.length) == 0)
            return config_fail(c, k, "duplicate key %s %s", config_quote(c, s), where);
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
    if (config_node_is_null(n))
        return 0;
    return config_fail(c, n, "%s: expected a mapping, got %s", what, config_node_kind(n));
}



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
    if ((rc = config_walk(c, map, where, what, d->keys, base, d->check != NULL ? seen : NULL)) != 0)
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
        return config_node_string(c, v, what, d->allow_null, out);
    case DIRECTIVE_ENDPOINT:
        return config_node_endpoint(c, v, what, d->allow_unix, out);
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
static int unknown_key(struct cfg_ctx *c, const yaml_node_t *k, const char *key, const char *where,
                       const struct directive *keys)
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
        return config_fail(c, k, "unknown key %s %s; did you mean \"%s\"?", config_quote(c, key),
                           where, best);
    return config_fail(c, k, "unknown key %s %s", config_quote(c, key), where);
}

/* walk parses the mapping |map| against |keys| (ended by a NULL name) into the struct at |base|.
 * Messages place the mapping with |where| ("in log") and name a key |prefix|.key, or key alone
 * when |prefix| is NULL. seen[i], when |seen| is not NULL, records where keys[i] was found. */
int config_walk(struct cfg_ctx *c, yaml_node_t *map, const char *where, const char *prefix,
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
