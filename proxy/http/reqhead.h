/* reqhead.h: the forwarding policy on a request head, as pure functions over names and the
 * parsed request-target: which client headers are refused, removed or kept (CONTRACT 5,
 * SECURITY 8, 24, 25), what happens to X-Forwarded-For / -Proto / Forwarded (forwarded_headers),
 * and how a request-target is forwarded (RFC 9112 3.2, SECURITY 23). No I/O: http.c parses
 * and writes, this decides. */
#ifndef CERTGATE_REQHEAD_H
#define CERTGATE_REQHEAD_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

/* What becomes of one client request header. */
enum reqhead_verdict {
    REQHEAD_FORWARD,    /* forwarded, subject to http.c's framing and hop-by-hop rules */
    REQHEAD_DROP,       /* not forwarded: a "_" name, strip_headers, a forwarded_headers copy */
    REQHEAD_CC,         /* the client-certificate family: only write_cc_headers may keep it */
    REQHEAD_XFF_APPEND, /* X-Forwarded-For under `append`: joins ours, before the client */
    REQHEAD_REFUSE,     /* the whole request is refused with 400 */
};

/* reqhead_classify tells what becomes of the client header |name| (|len| bytes, a token) on
 * listener |lc|. Names are compared in any letter case with '_' read as '-'. A "_" name that
 * reads as a framing header (Transfer-Encoding, Content-Length, Host, Connection, Upgrade, TE,
 * Expect) or as a client-certificate header is REQHEAD_REFUSE whatever headers_with_underscores
 * says. Linear in |len|. */
enum reqhead_verdict reqhead_classify(const struct listener_config *lc, const char *name,
                                      size_t len);

/* reqhead_is_cc_family tells whether |name| (any case, '_' read as '-') is a member of the
 * client-certificate header family of CONTRACT 5 (strip_headers not included). */
bool reqhead_is_cc_family(const char *name, size_t len);

/* reqhead_is_stripped tells whether |name| is one of the listener's strip_headers. */
bool reqhead_is_stripped(const struct listener_config *lc, const char *name, size_t len);

/* A request-target as it is forwarded. */
struct reqhead_target {
    const char *authority; /* absolute-form: the authority (host[:port]); NULL otherwise */
    size_t authority_len;
    bool add_slash;   /* absolute-form with an empty path: "/" goes before |rest| */
    const char *rest; /* what follows on the request line: the origin-form path and query,
                       * or "*" */
    size_t rest_len;
};

/* reqhead_target_parse splits the request-target |url| (|len| bytes) of a request whose method
 * is OPTIONS when |is_options|. Origin-form ("/x?y") and OPTIONS' "*" are kept; absolute-form
 * ("http://host:port/x?y", scheme http or https in any case) becomes its authority and its
 * origin-form. Returns 0, or -EINVAL (the request is a 400) for userinfo, another scheme, an
 * empty or malformed authority, a "#fragment", "*" with another method, and any other form
 * (authority-form belongs to CONNECT, which is refused before). */
int reqhead_target_parse(struct reqhead_target *out, const char *url, size_t len, bool is_options);

#endif
