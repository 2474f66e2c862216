/* reqhead.c: which client request headers go upstream, and in which form the request-target
 * goes. Backends that fold '_' into '-' (CGI, WSGI, PHP) and consumers that fall back to any
 * client-certificate header they know are why names are compared with '_' read as '-'. */
#include "reqhead.h"

#include <string.h>
#include <strings.h>

#include "tenancy.h"

/* Lowercase, and '_' as '-': the name a CGI-style backend would see. */
static char fold(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return (char)(ch - 'A' + 'a');
    return ch == '_' ? '-' : ch;
}

/* Tells whether |name| folded equals |lit| (lowercase, with '-'). */
static bool folded_is(const char *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    if (n != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (fold(name[i]) != lit[i])
            return false;
    return true;
}

static bool folded_has_prefix(const char *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    if (n > len)
        return false;
    for (size_t i = 0; i < n; i++)
        if (fold(name[i]) != lit[i])
            return false;
    return true;
}

/* Tells whether |name| folded contains |lit|. The needles are short (at most 11 bytes), so this
 * stays linear in |len|. */
static bool folded_contains(const char *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    for (size_t i = 0; i + n <= len; i++) {
        if (fold(name[i]) != lit[0])
            continue;
        size_t j = 1;
        while (j < n && fold(name[i + j]) == lit[j])
            j++;
        if (j == n)
            return true;
    }
    return false;
}

bool reqhead_is_cc_family(const char *name, size_t len)
{
    /* Every proxy's spelling: Envoy, RFC 9440, nginx X-SSL-Client-*, Traefik
     * X-Forwarded-Tls-Client-Cert(-Info), IIS X-Arr-ClientCert, AWS X-Amzn-Mtls-*. */
    static const char *const parts[] = {"client-cert", "clientcert", "client-tls", "tls-client",
                                        "ssl-client"};
    static const char *const names[] = {"x-ssl-cert", "x-client-verify", "x-client-dn"};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        if (folded_contains(name, len, parts[i]))
            return true;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (folded_is(name, len, names[i]))
            return true;
    return folded_has_prefix(name, len, "x-amzn-mtls-");
}

bool reqhead_is_stripped(const struct listener_config *lc, const char *name, size_t len)
{
    for (size_t i = 0; i < lc->strip_headers.num; i++)
        if (folded_is(name, len, lc->strip_headers.names[i]))
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
        if (folded_is(name, len, names[i]))
            return true;
    return false;
}

enum forwarded_kind { FWD_NONE, FWD_FOR, FWD_PROTO, FWD_FORWARDED };

static enum forwarded_kind forwarded_kind(const char *name, size_t len)
{
    if (folded_is(name, len, "x-forwarded-for"))
        return FWD_FOR;
    if (folded_is(name, len, "x-forwarded-proto"))
        return FWD_PROTO;
    if (folded_is(name, len, "forwarded"))
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
        return -400;
    if (len == 1 && url[0] == '*') {
        if (!is_options)
            return -400;
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
        return -400;
    const char *p = colon + 1;
    if (end - p < 2 || p[0] != '/' || p[1] != '/')
        return -400;
    p += 2;
    const char *auth = p;
    while (p < end && *p != '/' && *p != '?')
        p++;
    size_t auth_len = (size_t)(p - auth);
    char host[TENANCY_MAX_NAME + 1];
    /* Userinfo would let "a.example.com@b.example.com" read as either host. */
    if (auth_len == 0 || memchr(auth, '@', auth_len) != NULL ||
        !tenancy_normalize(host, auth, auth_len, true))
        return -400;
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
