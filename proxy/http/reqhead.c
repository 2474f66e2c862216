/* reqhead.c: which client request headers go upstream, and in which form the request-target
 * goes. Backends that fold '_' into '-' (CGI, WSGI, PHP) and consumers that fall back to any
 * client-certificate header they know are why names are compared with '_' read as '-'. */
#include "http/reqhead.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "http/tenancy.h"

/* Lowercase, and '_' as '-': the name a CGI-style backend would see. */
static char fold(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return (char)(ch - 'A' + 'a');
    return ch == '_' ? '-' : ch;
}

/* The literal's length is known at compile time: no strlen for every request header. */
#define FOLDED_IS(name, len, lit) folded_is_n(name, len, lit, sizeof(lit) - 1)
#define FOLDED_HAS_PREFIX(name, len, lit) folded_has_prefix_n(name, len, lit, sizeof(lit) - 1)
#define FOLDED_AT(name, len, pos, lit) folded_at_n(name, len, pos, lit, sizeof(lit) - 1)

/* Tells whether |name| folded equals |lit| (lowercase, with '-'). */
static bool folded_is_n(const char *name, size_t len, const char *lit, size_t n)
{
    if (n != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (fold(name[i]) != lit[i])
            return false;
    return true;
}

static bool folded_has_prefix_n(const char *name, size_t len, const char *lit, size_t n)
{
    if (n > len)
        return false;
    for (size_t i = 0; i < n; i++)
        if (fold(name[i]) != lit[i])
            return false;
    return true;
}

/* Tells whether |name| folded holds |lit| at |pos|. */
static bool folded_at_n(const char *name, size_t len, size_t pos, const char *lit, size_t n)
{
    if (pos > len || n > len - pos)
        return false;
    for (size_t i = 0; i < n; i++)
        if (fold(name[pos + i]) != lit[i])
            return false;
    return true;
}

bool reqhead_is_cc_family(const char *name, size_t len)
{
    if (FOLDED_HAS_PREFIX(name, len, "x-amzn-mtls-") || FOLDED_IS(name, len, "x-ssl-cert"))
        return true;
    /* Every other member contains "client" (client-cert, clientcert, client-tls, tls-client,
     * ssl-client, x-client-verify, x-client-dn), so one pass looks for it and a closer look
     * happens only where it occurs: this runs for every request header. */
    for (size_t i = 0; i + 6 <= len; i++) {
        if ((name[i] | 0x20) != 'c' || !FOLDED_AT(name, len, i, "client"))
            continue;
        if (FOLDED_AT(name, len, i, "client-cert") || FOLDED_AT(name, len, i, "clientcert") ||
            FOLDED_AT(name, len, i, "client-tls"))
            return true;
        if (i >= 4 && (FOLDED_AT(name, len, i - 4, "tls-client") ||
                       FOLDED_AT(name, len, i - 4, "ssl-client")))
            return true;
        if (i == 2 &&
            (FOLDED_IS(name, len, "x-client-verify") || FOLDED_IS(name, len, "x-client-dn")))
            return true;
    }
    return false;
}

bool reqhead_is_stripped(const struct listener_config *lc, const char *name, size_t len)
{
    for (size_t i = 0; i < lc->strip_headers.num; i++)
        if (folded_is_n(name, len, lc->strip_headers.names[i], strlen(lc->strip_headers.names[i])))
            return true;
    return false;
}

/* The names a '_' spelling of which is refused: reading them as '-' changes the framing, the
 * host or the connection for the backend (SECURITY 24). */
static bool is_framing(const char *name, size_t len)
{
    static const char *const names[] = {
        "transfer-encoding", "content-length", "host", "connection", "upgrade", "te", "expect"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (folded_is_n(name, len, names[i], strlen(names[i])))
            return true;
    return false;
}

enum forwarded_kind { FWD_NONE, FWD_FOR, FWD_PROTO, FWD_FORWARDED };

static enum forwarded_kind forwarded_kind(const char *name, size_t len)
{
    if (FOLDED_IS(name, len, "x-forwarded-for"))
        return FWD_FOR;
    if (FOLDED_IS(name, len, "x-forwarded-proto"))
        return FWD_PROTO;
    if (FOLDED_IS(name, len, "forwarded"))
        return FWD_FORWARDED;
    return FWD_NONE;
}

enum reqhead_verdict reqhead_classify(const struct listener_config *lc, const char *name,
                                      size_t len)
{
    bool underscore = memchr(name, '_', len) != NULL;
    if (underscore && is_framing(name, len))
        return REQHEAD_REFUSE;
    if (reqhead_is_cc_family(name, len))
        return underscore ? REQHEAD_REFUSE : REQHEAD_CC;
    if (reqhead_is_stripped(lc, name, len))
        return REQHEAD_DROP;
    enum forwarded_kind fk = forwarded_kind(name, len);
    if (fk != FWD_NONE && lc->forwarded_headers != FORWARDED_OFF) {
        /* A '_' copy would reach a CGI-style backend as the very header certgate writes. */
        if (underscore || lc->forwarded_headers == FORWARDED_SET)
            return REQHEAD_DROP;
        if (fk == FWD_FOR)
            return REQHEAD_XFF_APPEND;
        /* append: the scheme is this hop's to say; Forwarded is the earlier hops' record. */
        return fk == FWD_PROTO ? REQHEAD_DROP : REQHEAD_FORWARD;
    }
    if (underscore && lc->headers_with_underscores == UNDERSCORES_DROP)
        return REQHEAD_DROP;
    return REQHEAD_FORWARD;
}

/* --- request-target ------------------------------------------------------------------------ */

static bool scheme_ok(const char *s, size_t len)
{
    return (len == 4 && strncasecmp(s, "http", 4) == 0) ||
           (len == 5 && strncasecmp(s, "https", 5) == 0);
}

int reqhead_target_parse(struct reqhead_target *out, const char *url, size_t len, bool is_options)
{
    memset(out, 0, sizeof(*out));
    /* A fragment is the client's own business and never part of a request-target. */
    if (len == 0 || memchr(url, '#', len) != NULL)
        return -EINVAL;
    if (len == 1 && url[0] == '*') {
        if (!is_options)
            return -EINVAL;
        out->rest = url;
        out->rest_len = 1;
        return 0;
    }
    if (url[0] == '/') {
        out->rest = url;
        out->rest_len = len;
        return 0;
    }
    const char *end = url + len;
    const char *colon = memchr(url, ':', len);
    if (colon == NULL || !scheme_ok(url, (size_t)(colon - url)))
        return -EINVAL;
    const char *p = colon + 1;
    if (end - p < 2 || p[0] != '/' || p[1] != '/')
        return -EINVAL;
    p += 2;
    const char *auth = p;
    while (p < end && *p != '/' && *p != '?')
        p++;
    size_t auth_len = (size_t)(p - auth);
    char host[TENANCY_MAX_NAME + 1];
    /* Userinfo would let "a.example.com@b.example.com" read as either host. */
    if (auth_len == 0 || memchr(auth, '@', auth_len) != NULL ||
        !tenancy_normalize(host, auth, auth_len, true))
        return -EINVAL;
    out->authority = auth;
    out->authority_len = auth_len;
    out->rest = p;
    out->rest_len = (size_t)(end - p);
    if (is_options && out->rest_len == 0) {
        /* RFC 9112 3.2.4: the last proxy sends OPTIONS with an empty path as "*". */
        out->rest = "*";
        out->rest_len = 1;
    } else {
        out->add_slash = out->rest_len == 0 || *p == '?';
    }
    return 0;
}
