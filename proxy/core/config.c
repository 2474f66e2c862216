/* config.c: reads the YAML configuration of CONTRACT section 3 with libyaml's document API into
 * a struct config, applies the defaults and validates it. Every error names FILE:LINE:COLUMN of
 * the node at fault, and user text in messages is quoted and escaped. */
#include "core/config.h"

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

#include "core/base.h"
#include "core/config_internal.h"

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
        return config_fail(c, &at, "syntax error: %s %s that started at %zu:%zu", problem,
                        parser->context, parser->context_mark.line + 1,
                        parser->context_mark.column + 1);
    if (parser->context != NULL && parser->error != YAML_READER_ERROR)
        return config_fail(c, &at, "syntax error: %s %s", problem, parser->context);
    return config_fail(c, &at, "syntax error: %s", problem);
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
    if (root == NULL || config_node_is_null(root)) {
        rc = config_fail(&c, root, "the configuration is empty: expected a mapping with listeners");
        goto done;
    }
    /* A second document would be silently ignored: refuse it, and find syntax errors in it. */
    if (!yaml_parser_load(&parser, &next)) {
        rc = syntax_error(&c, &parser);
        goto done;
    }
    yaml_node_t *extra = yaml_document_get_root_node(&next);
    if (extra != NULL)
        rc = config_fail(&c, extra, "only one YAML document is allowed");
    yaml_document_delete(&next);
    if (extra != NULL)
        goto done;

    cfg = config_new(name);
    c.cfg = cfg;
    rc = config_parse_root(&c, root);
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
    config_endpoint_cleanup(&cfg->admin_address);
    free(cfg->admin_token_file);
    config_endpoint_cleanup(&cfg->admin_public_address);
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        struct listener_config *l = &cfg->listeners[i];
        free(l->name);
        config_endpoint_cleanup(&l->address);
        config_endpoint_cleanup(&l->upstream);
        free(l->subject_cn_pattern);
        for (size_t j = 0; j < l->strip_headers.num; j++)
            free(l->strip_headers.names[j]);
        free(l->strip_headers.names);
    }
    free(cfg->listeners);
    free(cfg);
}
