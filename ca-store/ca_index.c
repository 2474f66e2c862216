/* ca_index.c: index.yml to struct ca_index with libyaml's event parser. The layout is fixed
 * (a mapping of `common` and `tenants`), so a small state machine reads it; aliases are
 * refused so that a short file cannot list a huge number of bundles. */
#include "ca_index.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "ca_mem.h"

struct ix {
    yaml_parser_t parser;
    yaml_event_t ev;
    bool have_ev;
    const char *name;
    char *err;
    size_t err_len;
};

/* ix_printable copies at most 64 bytes of |s| for a message, unprintable bytes as '?'. */
static char *ix_printable(const char *s, size_t n)
{
    size_t m = n > 64 ? 64 : n;
    char *d = ca_mem_strndup(s, m);
    for (size_t i = 0; i < m; i++)
        if ((unsigned char)d[i] < 0x20 || (unsigned char)d[i] >= 0x7f || d[i] == '"')
            d[i] = '?';
    return d;
}

/* ix_msg returns a tenant's error message at |mark|, allocated. */
__attribute__((format(printf, 3, 4))) static char *ix_msg(struct ix *x, yaml_mark_t mark,
                                                          const char *fmt, ...)
{
    char what[256], line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(line, sizeof(line), "%s:%zu:%zu: %s", x->name, (size_t)mark.line + 1,
             (size_t)mark.column + 1, what);
    return ca_mem_strndup(line, strlen(line));
}

/* ix_fail writes a load-fatal error at |mark| into the caller's buffer. */
__attribute__((format(printf, 3, 4))) static int ix_fail(struct ix *x, yaml_mark_t mark,
                                                         const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (x->err_len > 0)
        snprintf(x->err, x->err_len, "%s:%zu:%zu: %s", x->name, (size_t)mark.line + 1,
                 (size_t)mark.column + 1, what);
    return -EINVAL;
}

static int ix_next(struct ix *x)
{
    if (x->have_ev) {
        yaml_event_delete(&x->ev);
        x->have_ev = false;
    }
    if (!yaml_parser_parse(&x->parser, &x->ev)) {
        const char *problem = x->parser.problem != NULL ? x->parser.problem : "invalid YAML";
        if (x->parser.context != NULL)
            return ix_fail(x, x->parser.problem_mark, "%s %s", x->parser.context, problem);
        return ix_fail(x, x->parser.problem_mark, "%s", problem);
    }
    x->have_ev = true;
    if (x->ev.type == YAML_ALIAS_EVENT)
        return ix_fail(x, x->ev.start_mark, "aliases are not supported in index.yml");
    return 0;
}

static bool ix_is_null(const yaml_event_t *ev)
{
    if (ev->type != YAML_SCALAR_EVENT || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    return n == 0 || (n == 1 && v[0] == '~') ||
           (n == 4 && (!memcmp(v, "null", 4) || !memcmp(v, "Null", 4) || !memcmp(v, "NULL", 4)));
}

static bool ix_key_is(const yaml_event_t *ev, const char *key)
{
    return ev->data.scalar.length == strlen(key) &&
           memcmp(ev->data.scalar.value, key, strlen(key)) == 0;
}

/* ix_skip consumes the rest of the node whose first event is current. */
static int ix_skip(struct ix *x)
{
    size_t depth = 0;
    for (;;) {
        if (x->ev.type == YAML_SEQUENCE_START_EVENT || x->ev.type == YAML_MAPPING_START_EVENT)
            depth++;
        else if (x->ev.type == YAML_SEQUENCE_END_EVENT || x->ev.type == YAML_MAPPING_END_EVENT)
            depth--;
        if (depth == 0)
            return 0;
        int rc = ix_next(x);
        if (rc != 0)
            return rc;
    }
}

bool ca_index_valid_tenant_id(const char *id, size_t len)
{
    if (len < 1 || len > 63)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' && i > 0 && i + 1 < len))
            return false;
    }
    return true;
}

bool ca_index_valid_path(const char *path, size_t len)
{
    if (len == 0 || path[0] == '/' || memchr(path, '\0', len) != NULL)
        return false;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || path[i] == '/') {
            if (i - start == 2 && path[start] == '.' && path[start + 1] == '.')
                return false;
            start = i + 1;
        }
    }
    return true;
}

/* ix_files reads a list of paths whose first event is current. With |tenant_err| NULL a problem
 * fails the load; otherwise it is stored there and the rest of the node is skipped. */
static int ix_files(struct ix *x, struct ca_index_file **files, size_t *num, const char *what,
                    char **tenant_err)
{
    size_t cap = 0;
    const char *problem = NULL;
    if (ix_is_null(&x->ev))
        return 0;
    if (x->ev.type != YAML_SEQUENCE_START_EVENT) {
        if (tenant_err == NULL)
            return ix_fail(x, x->ev.start_mark, "%s must be a list of file names", what);
        *tenant_err = ix_msg(x, x->ev.start_mark, "%s must be a list of file names", what);
        return ix_skip(x);
    }
    for (;;) {
        int rc = ix_next(x);
        if (rc != 0)
            return rc;
        if (x->ev.type == YAML_SEQUENCE_END_EVENT)
            return 0;
        if (x->ev.type != YAML_SCALAR_EVENT || ix_is_null(&x->ev)) {
            problem = "expected a file name";
        } else if (!ca_index_valid_path((const char *)x->ev.data.scalar.value,
                                        x->ev.data.scalar.length)) {
            problem = "file name must be a relative path without \"..\"";
        } else {
            if (*num == cap) {
                cap = cap ? cap * 2 : 4;
                *files = ca_mem_realloc(*files, cap * sizeof(**files));
            }
            (*files)[*num] =
                (struct ca_index_file){.path = ca_mem_strndup((const char *)x->ev.data.scalar.value,
                                                           x->ev.data.scalar.length),
                                       .line = x->ev.start_mark.line + 1,
                                       .col = x->ev.start_mark.column + 1};
            (*num)++;
            continue;
        }
        if (tenant_err == NULL)
            return ix_fail(x, x->ev.start_mark, "%s: %s", what, problem);
        *tenant_err = ix_msg(x, x->ev.start_mark, "%s: %s", what, problem);
        rc = ix_skip(x); /* the bad item */
        while (rc == 0) {
            rc = ix_next(x);
            if (rc != 0 || x->ev.type == YAML_SEQUENCE_END_EVENT)
                return rc;
            rc = ix_skip(x);
        }
        return rc;
    }
}

static void ix_free_files(struct ca_index_file *files, size_t num)
{
    for (size_t i = 0; i < num; i++)
        free(files[i].path);
    free(files);
}

static int ix_tenants(struct ix *x, struct ca_index *out)
{
    size_t cap = 0;
    if (ix_is_null(&x->ev))
        return 0;
    if (x->ev.type != YAML_MAPPING_START_EVENT)
        return ix_fail(x, x->ev.start_mark, "tenants must be a mapping of tenant id to files");
    for (;;) {
        int rc = ix_next(x);
        if (rc != 0)
            return rc;
        if (x->ev.type == YAML_MAPPING_END_EVENT)
            return 0;
        if (x->ev.type != YAML_SCALAR_EVENT)
            return ix_fail(x, x->ev.start_mark, "a tenant id must be a plain string");
        if (out->num_tenants == cap) {
            cap = cap ? cap * 2 : 16;
            out->tenants = ca_mem_realloc(out->tenants, cap * sizeof(*out->tenants));
        }
        struct ca_index_tenant *t = &out->tenants[out->num_tenants++];
        const char *id = (const char *)x->ev.data.scalar.value;
        size_t len = x->ev.data.scalar.length;
        *t = (struct ca_index_tenant){.line = x->ev.start_mark.line + 1,
                                      .col = x->ev.start_mark.column + 1};
        if (ca_index_valid_tenant_id(id, len)) {
            t->id = ca_mem_strndup(id, len);
        } else {
            t->id = ix_printable(id, len);
            t->error = ix_msg(x, x->ev.start_mark,
                              "invalid tenant id \"%s\" (must be a lowercase DNS label)", t->id);
        }
        rc = ix_next(x);
        if (rc != 0)
            return rc;
        if (t->error != NULL) {
            rc = ix_skip(x);
        } else {
            char what[96];
            snprintf(what, sizeof(what), "tenant %s", t->id);
            rc = ix_files(x, &t->files, &t->num_files, what, &t->error);
            if (rc == 0 && t->error != NULL) {
                ix_free_files(t->files, t->num_files);
                t->files = NULL;
                t->num_files = 0;
            }
        }
        if (rc != 0)
            return rc;
    }
}

static int ix_top(struct ix *x, struct ca_index *out)
{
    bool seen_common = false, seen_tenants = false;
    for (;;) {
        int rc = ix_next(x);
        if (rc != 0)
            return rc;
        if (x->ev.type == YAML_MAPPING_END_EVENT)
            return 0;
        if (x->ev.type != YAML_SCALAR_EVENT)
            return ix_fail(x, x->ev.start_mark, "expected `common` or `tenants`");
        yaml_mark_t mark = x->ev.start_mark;
        if (ix_key_is(&x->ev, "common")) {
            if (seen_common)
                return ix_fail(x, mark, "duplicate key `common`");
            seen_common = true;
            rc = ix_next(x);
            if (rc == 0)
                rc = ix_files(x, &out->common, &out->num_common, "common", NULL);
        } else if (ix_key_is(&x->ev, "tenants")) {
            if (seen_tenants)
                return ix_fail(x, mark, "duplicate key `tenants`");
            seen_tenants = true;
            rc = ix_next(x);
            if (rc == 0)
                rc = ix_tenants(x, out);
        } else {
            char *key =
                ix_printable((const char *)x->ev.data.scalar.value, x->ev.data.scalar.length);
            rc = ix_fail(x, mark, "unknown key \"%s\" (expected common or tenants)", key);
            free(key);
        }
        if (rc != 0)
            return rc;
    }
}

int ca_index_parse(struct ca_index *out, const char *name, const uint8_t *data, size_t len,
                   char *err, size_t err_len)
{
    struct ix x = {.name = name, .err = err, .err_len = err_len};
    int rc = 0;
    if (!yaml_parser_initialize(&x.parser))
        abort();
    yaml_parser_set_input_string(&x.parser, data, len);
    rc = ix_next(&x); /* stream start */
    if (rc != 0)
        goto out;
    rc = ix_next(&x);
    if (rc != 0 || x.ev.type == YAML_STREAM_END_EVENT)
        goto out;     /* an empty file is an empty store */
    rc = ix_next(&x); /* the document's root node */
    if (rc != 0)
        goto out;
    if (x.ev.type == YAML_MAPPING_START_EVENT) {
        rc = ix_top(&x, out);
    } else if (!ix_is_null(&x.ev)) {
        rc = ix_fail(&x, x.ev.start_mark, "index.yml must be a mapping with common and tenants");
    }
    if (rc != 0)
        goto out;
    rc = ix_next(&x); /* document end */
    if (rc == 0)
        rc = ix_next(&x);
    if (rc == 0 && x.ev.type != YAML_STREAM_END_EVENT)
        rc = ix_fail(&x, x.ev.start_mark, "index.yml must hold a single document");
out:
    if (x.have_ev)
        yaml_event_delete(&x.ev);
    yaml_parser_delete(&x.parser);
    return rc;
}

void ca_index_cleanup(struct ca_index *index)
{
    ix_free_files(index->common, index->num_common);
    for (size_t i = 0; i < index->num_tenants; i++) {
        free(index->tenants[i].id);
        free(index->tenants[i].error);
        ix_free_files(index->tenants[i].files, index->tenants[i].num_files);
    }
    free(index->tenants);
    memset(index, 0, sizeof(*index));
}
