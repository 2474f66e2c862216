/* conn_proxy.c: who the client is: the socket's peer or the source a PROXY protocol header
 * names (accept_proxy_protocol), and reading that header before anything else. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/base.h"
#include "core/log.h"
#include "core/metrics.h"

#include "net/conn_internal.h"

/* --- client address and PROXY protocol header ---------------------------------------------- */

static socklen_t addr_len(const union proxy_proto_addr *a)
{
    return a->sa.sa_family == AF_INET    ? sizeof(a->in)
           : a->sa.sa_family == AF_INET6 ? sizeof(a->in6)
                                         : 0;
}

const struct sockaddr *conn_client_addr(const struct conn *c, socklen_t *out_len)
{
    const union proxy_proto_addr *a = c->pp != NULL ? &c->pp->src : &c->peer;
    if (out_len != NULL)
        *out_len = addr_len(a);
    return &a->sa;
}

/* inet_ntop's dotted quad without its sprintf (X-Forwarded-For is written per request). */
static void ipv4_text(const struct in_addr *in, char ip[INET_ADDRSTRLEN])
{
    const uint8_t *b = (const uint8_t *)&in->s_addr;
    char *p = ip;
    for (int i = 0; i < 4; i++) {
        unsigned v = b[i];
        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = i < 3 ? '.' : '\0';
    }
}

static void addr_text(const union proxy_proto_addr *a, char *out, size_t len, bool with_port)
{
    char ip[INET6_ADDRSTRLEN];
    bool v6 = a->sa.sa_family == AF_INET6;
    if (a->sa.sa_family == AF_INET) {
        ipv4_text(&a->in.sin_addr, ip);
    } else if (!v6 || inet_ntop(AF_INET6, &a->in6.sin6_addr, ip, sizeof(ip)) == NULL) {
        snprintf(out, len, "unknown");
        return;
    }
    unsigned port = ntohs(v6 ? a->in6.sin6_port : a->in.sin_port);
    if (!with_port) {
        size_t n = strlen(ip);
        if (len == 0)
            return;
        if (n >= len)
            n = len - 1; /* truncated, as snprintf would */
        memcpy(out, ip, n);
        out[n] = '\0';
    } else
        snprintf(out, len, v6 ? "[%s]:%u" : "%s:%u", ip, port);
}

void conn_client_addr_text(const struct conn *c, char *out, size_t len, bool with_port)
{
    addr_text(c->pp != NULL ? &c->pp->src : &c->peer, out, len, with_port);
}


/* Counts and logs a connection refused for its PROXY protocol header, and closes it. */
void conn_proxy_header_refused(struct conn *c, const char *why)
{
    metrics_proxy_protocol_error(c->index);
    if (log_enabled(LOG_LEVEL_WARN)) {
        char peer[CONN_ADDR_TEXT_MAX];
        addr_text(&c->peer, peer, sizeof(peer), true);
        struct buf b = {0};
        log_begin(&b, LOG_LEVEL_WARN, "proxy_protocol_refused");
        log_str(&b, "listener", c->lc->name);
        log_str(&b, "peer", peer);
        log_str(&b, "reason", why);
        log_end(&b);
    }
    conn_close(c);
}

/* The header (or, on a v1v2 listener, its absence) is known: the connection goes on as its
 * listener's mode says, with the socket positioned just after the header. */
static void proxy_header_done(struct conn *c, const struct proxy_proto_hdr *hdr)
{
    if (hdr != NULL && hdr->has_addrs) {
        c->pp = xmalloc(sizeof(*c->pp));
        *c->pp = *hdr;
    }
    conn_start(c);
}

/* Reads the PROXY protocol header with MSG_PEEK, so that not a byte after it is taken from the
 * socket BoringSSL reads next. A header that arrives in pieces is taken into c->cin as it comes
 * (else the bytes left in the socket would wake the poll again at once, forever): they are a
 * prefix of a header, which no TLS stream can start with. */
void conn_proxy_header_read(struct conn *c)
{
    uint8_t data[PROXY_PROTO_MAX];
    size_t held = buf_used(&c->cin);
    if (held > 0)
        memcpy(data, buf_data(&c->cin), held);
    ssize_t n = recv(c->fd, data + held, sizeof(data) - held, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    bool required = c->lc->accept_proxy_protocol == ACCEPT_PROXY_REQUIRED;
    if (n <= 0) {
        /* A connect-and-close probe with no byte at all is no protocol error. */
        if (held > 0)
            conn_proxy_header_refused(c, "the connection ended inside a PROXY protocol header");
        else
            conn_close(c);
        return;
    }
    struct proxy_proto_hdr hdr;
    size_t have = held + (size_t)n;
    long r = proxy_proto_parse(&hdr, data, have);
    if (r == 0 && have < sizeof(data)) {
        ssize_t got = recv(c->fd, data + held, (size_t)n, 0);
        if (got > 0)
            buf_append(&c->cin, data + held, (size_t)got);
        return;
    }
    if (r == -ENOENT && !required && (held == 0 || c->lc->mode == LISTENER_TCP)) {
        if (held > 0) /* a tcp stream that began like a header */
            buf_append(&c->uout, buf_data(&c->cin), held);
        buf_free(&c->cin);
        proxy_header_done(c, NULL);
        return;
    }
    if (r <= 0) {
        conn_proxy_header_refused(c, r == -ENOENT   ? "the connection did not start with a PROXY "
                                                 "protocol header (accept_proxy_protocol: required)"
                                : r == -EINVAL ? hdr.error
                                               : "the PROXY protocol header is too long");
        return;
    }
    size_t take = (size_t)r - held;
    if (recv(c->fd, data + held, take, 0) != (ssize_t)take) {
        conn_close(c); /* peeked bytes cannot vanish; a socket error can */
        return;
    }
    buf_free(&c->cin);
    proxy_header_done(c, &hdr);
}
