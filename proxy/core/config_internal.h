/* config_internal.h: what the files of the configuration loader share (config.c loads a file,
 * config_walk.c walks a mapping against a table of directives, config_keys.c holds the tables
 * and the checks, config_value.c the scalar parsers). Only those files include it. */
#ifndef CERTGATE_CONFIG_INTERNAL_H
#define CERTGATE_CONFIG_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

#include "core/config.h"

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

/* config_walk.c: messages and the node helpers. */

/* config_fail writes "FILE:LINE:COL: message" for |node| (line 1 when NULL) into c->err and
 * returns -EINVAL. */
__attribute__((format(printf, 3, 4))) int config_fail(struct cfg_ctx *c, const yaml_node_t *node,
                                                      const char *fmt, ...);
/* config_quote renders user text for a message: in double quotes, control bytes escaped,
 * truncated (in c->quoted: one per message). */
const char *config_quote(struct cfg_ctx *c, const char *s);
/* config_expected writes "a, b or c" for an enum table into |buf|. */
const char *config_expected(char *buf, size_t len, const struct name_value *names);
/* config_node_kind names a node's kind for messages ("a scalar", ...). */
const char *config_node_kind(const yaml_node_t *n);
/* config_node_is_null tells whether |n| is YAML null (~, null or empty). */
bool config_node_is_null(const yaml_node_t *n);
/* config_node_scalar, _string, _endpoint read one value named |what| into |*out|; 0 or an
 * error written by config_fail. */
int config_node_scalar(struct cfg_ctx *c, const yaml_node_t *n, const char *what, const char **out);
int config_node_string(struct cfg_ctx *c, const yaml_node_t *n, const char *what, bool allow_null,
                       char **out);
int config_node_endpoint(struct cfg_ctx *c, const yaml_node_t *n, const char *what, bool allow_unix,
                         struct config_endpoint *out);
/* config_walk parses the mapping |map| against |keys| (ended by a NULL name) into the struct at
 * |base|. Messages place the mapping with |where| ("in log") and name a key |prefix|.key, or key
 * alone when |prefix| is NULL. seen[i], when |seen| is not NULL, records where keys[i] was
 * found. */
int config_walk(struct cfg_ctx *c, yaml_node_t *map, const char *where, const char *prefix,
                const struct directive *keys, void *base, struct seen *seen);

/* config_value.c */

/* config_parse_digits reads decimal digits at |*p| into |*out|, advancing |*p|; false on none or
 * on overflow. */
bool config_parse_digits(uint64_t *out, const char **p);
/* config_endpoint_parse is config_parse_endpoint with a reason for messages in |*why|. */
int config_endpoint_parse(struct config_endpoint *out, const char *text, bool allow_unix,
                          const char **why);
/* config_endpoint_cleanup frees what |ep| holds and zeroes it. */
void config_endpoint_cleanup(struct config_endpoint *ep);
/* config_endpoint_is_wildcard tells whether |ep| is 0.0.0.0 or [::]. */
bool config_endpoint_is_wildcard(const struct config_endpoint *ep);
/* config_endpoint_port returns |ep|'s port, 0 for a unix socket. */
uint16_t config_endpoint_port(const struct config_endpoint *ep);

/* config_parsers.c: the keys that need their own parser (DIRECTIVE_CUSTOM); each reads the
 * value |n| of the key named |what| into |out|: 0 or an error written by config_fail. */
int config_parse_key_workers(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out);
int config_parse_key_sni(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out);
int config_parse_key_admin_address(struct cfg_ctx *c, yaml_node_t *n, const char *what,
                                   void *out);
int config_parse_key_request_head(struct cfg_ctx *c, yaml_node_t *n, const char *what,
                                  void *out);
int config_parse_key_listener_name(struct cfg_ctx *c, yaml_node_t *n, const char *what,
                                   void *out);
int config_parse_key_upstream(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out);
int config_parse_key_details(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out);
int config_parse_key_pattern(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out);
int config_parse_key_alpn(struct cfg_ctx *c, yaml_node_t *n, const char *what, void *out);
int config_parse_key_strip_headers(struct cfg_ctx *c, yaml_node_t *n, const char *what,
                                   void *out);

/* config_keys.c */

/* config_parse_root walks the document's root mapping into c->cfg and runs every check. */
int config_parse_root(struct cfg_ctx *c, yaml_node_t *root);

#endif
