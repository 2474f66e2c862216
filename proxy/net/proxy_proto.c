/* proxy_proto.c: the PROXY protocol v1 (text) and v2 (binary) parser. Strict where a sender has
 * no latitude (signatures, lengths, address syntax) so that a malformed header is an error and
 * never a half-read stream; TLVs are walked for bounds and otherwise skipped. */
#include "net/proxy_proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

static const uint8_t v1_sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static long invalid(struct proxy_proto_hdr *out, const char *why)
{
    out->error = why;
    return -EINVAL;
}

/* --- version 1 ---------------------------------------------------------------------------- */

/* Cuts the next space-terminated (or, when |last|, line-terminated) field off |*p|. */
static bool v1_field(const char **p, const char *end, bool last, char *out, size_t out_len)
{
    const char *s = *p;
    const char *e = last ? end : memchr(s, ' ', (size_t)(end - s));
    if (e == NULL || e == s || (size_t)(e - s) >= out_len)
        return false;
    memcpy(out, s, (size_t)(e - s));
    out[e - s] = '\0';
    *p = last ? e : e + 1;
    return true;
}

static bool v1_port(const char *s, in_port_t *out)
{
    unsigned long v = 0;
    size_t n = strlen(s);
    if (n == 0 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = htons((in_port_t)v);
    return true;
}

/* "TCP4 1.2.3.4 5.6.7.8 1111 2222" or the TCP6 form, between "PROXY " and CRLF. */
static long v1_addresses(struct proxy_proto_hdr *out, const char *p, const char *end, int family)
{
    char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN], sport[8], dport[8];
    if (!v1_field(&p, end, false, src, sizeof(src)) ||
        !v1_field(&p, end, false, dst, sizeof(dst)) ||
        !v1_field(&p, end, false, sport, sizeof(sport)) ||
        !v1_field(&p, end, true, dport, sizeof(dport)))
        return invalid(out, "v1: expected \"source destination source-port destination-port\"");
    in_port_t sp, dp;
    if (!v1_port(sport, &sp) || !v1_port(dport, &dp))
        return invalid(out, "v1: a port is not a number from 0 to 65535");
    if (family == AF_INET) {
        out->src.in.sin_family = out->dst.in.sin_family = AF_INET;
        if (inet_pton(AF_INET, src, &out->src.in.sin_addr) != 1 ||
            inet_pton(AF_INET, dst, &out->dst.in.sin_addr) != 1)
            return invalid(out, "v1: TCP4 with an address that is not IPv4");
        out->src.in.sin_port = sp;
        out->dst.in.sin_port = dp;
    } else {
        out->src.in6.sin6_family = out->dst.in6.sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, src, &out->src.in6.sin6_addr) != 1 ||
            inet_pton(AF_INET6, dst, &out->dst.in6.sin6_addr) != 1)
            return invalid(out, "v1: TCP6 with an address that is not IPv6");
        out->src.in6.sin6_port = sp;
        out->dst.in6.sin6_port = dp;
    }
    out->has_addrs = true;
    return 0;
}

static long parse_v1(struct proxy_proto_hdr *out, const uint8_t *data, size_t len)
{
    size_t scan = len < PROXY_PROTO_V1_MAX ? len : PROXY_PROTO_V1_MAX;
    const uint8_t *lf = memchr(data, '\n', scan);
    if (lf == NULL)
        return len >= PROXY_PROTO_V1_MAX ? -EMSGSIZE : 0;
    size_t total = (size_t)(lf - data) + 1;
    if (total < sizeof(v1_sig) + 2 || lf[-1] != '\r')
        return invalid(out, "v1: the line does not end in CRLF");
    const char *p = (const char *)data + sizeof(v1_sig);
    const char *end = (const char *)lf - 1; /* the CR */
    if (memchr(p, '\r', (size_t)(end - p)) != NULL || memchr(p, '\0', (size_t)(end - p)) != NULL)
        return invalid(out, "v1: a control byte inside the line");
    out->version = 1;
    size_t rest = (size_t)(end - p);
    if (rest >= 7 && memcmp(p, "UNKNOWN", 7) == 0 && (rest == 7 || p[7] == ' '))
        return (long)total; /* the rest of the line is to be ignored */
    long rc;
    if (rest > 5 && memcmp(p, "TCP4 ", 5) == 0)
        rc = v1_addresses(out, p + 5, end, AF_INET);
    else if (rest > 5 && memcmp(p, "TCP6 ", 5) == 0)
        rc = v1_addresses(out, p + 5, end, AF_INET6);
    else
        return invalid(out, "v1: the protocol is not TCP4, TCP6 or UNKNOWN");
    return rc < 0 ? rc : (long)total;
}

/* --- version 2 ---------------------------------------------------------------------------- */

/* Checks that the TLVs after the address block fill the rest exactly; their values are not
 * used (certgate terminates TLS itself, so the balancer's SSL TLVs say nothing it needs). */
static long v2_tlvs(struct proxy_proto_hdr *out, const uint8_t *p, size_t len)
{
    while (len > 0) {
        if (len < 3)
            return invalid(out, "v2: a TLV is cut short");
        size_t vlen = ((size_t)p[1] << 8) | p[2];
        if (vlen > len - 3)
            return invalid(out, "v2: a TLV's length runs past the header");
        p += 3 + vlen;
        len -= 3 + vlen;
    }
    return 0;
}

static long parse_v2(struct proxy_proto_hdr *out, const uint8_t *data, size_t len)
{
    if (len < PROXY_PROTO_V2_FIXED)
        return 0;
    uint8_t ver_cmd = data[12], fam = data[13];
    size_t payload = ((size_t)data[14] << 8) | data[15];
    if ((ver_cmd >> 4) != 2)
        return invalid(out, "v2: the version is not 2");
    if ((ver_cmd & 0x0f) > 1)
        return invalid(out, "v2: the command is neither LOCAL nor PROXY");
    if ((fam >> 4) > 3 || (fam & 0x0f) > 2)
        return invalid(out, "v2: unknown address family or transport");
    if (payload > PROXY_PROTO_V2_MAX_PAYLOAD)
        return -EMSGSIZE;
    if (len < PROXY_PROTO_V2_FIXED + payload)
        return 0;
    out->version = 2;
    const uint8_t *p = data + PROXY_PROTO_V2_FIXED;
    size_t total = PROXY_PROTO_V2_FIXED + payload;
    if ((ver_cmd & 0x0f) == 0)
        return (long)total; /* LOCAL: the balancer speaking for itself; skip the payload */
    size_t addr_len;
    switch (fam >> 4) {
    case 1: /* AF_INET */
        addr_len = 12;
        break;
    case 2: /* AF_INET6 */
        addr_len = 36;
        break;
    case 3: /* AF_UNIX: two 108-byte paths */
        addr_len = 216;
        break;
    default: /* AF_UNSPEC: the receiver keeps the socket's addresses */
        return (long)total;
    }
    if (payload < addr_len)
        return invalid(out, "v2: the length is shorter than the address block");
    if (fam >> 4 == 1) {
        out->src.in.sin_family = out->dst.in.sin_family = AF_INET;
        memcpy(&out->src.in.sin_addr, p, 4);
        memcpy(&out->dst.in.sin_addr, p + 4, 4);
        memcpy(&out->src.in.sin_port, p + 8, 2);
        memcpy(&out->dst.in.sin_port, p + 10, 2);
        out->has_addrs = true;
    } else if (fam >> 4 == 2) {
        out->src.in6.sin6_family = out->dst.in6.sin6_family = AF_INET6;
        memcpy(&out->src.in6.sin6_addr, p, 16);
        memcpy(&out->dst.in6.sin6_addr, p + 16, 16);
        memcpy(&out->src.in6.sin6_port, p + 32, 2);
        memcpy(&out->dst.in6.sin6_port, p + 34, 2);
        out->has_addrs = true;
    }
    long rc = v2_tlvs(out, p + addr_len, payload - addr_len);
    return rc < 0 ? rc : (long)total;
}

/* --- detection ---------------------------------------------------------------------------- */

/* 1 when |data| starts with |sig|, 0 when it is a proper prefix of it, -1 when it differs. */
static int sig_match(const uint8_t *data, size_t len, const uint8_t *sig, size_t sig_len)
{
    size_t n = len < sig_len ? len : sig_len;
    if (memcmp(data, sig, n) != 0)
        return -1;
    return len >= sig_len ? 1 : 0;
}

long proxy_proto_parse(struct proxy_proto_hdr *out, const uint8_t *data, size_t len)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return 0;
    int v2 = sig_match(data, len, v2_sig, sizeof(v2_sig));
    if (v2 == 1)
        return parse_v2(out, data, len);
    int v1 = sig_match(data, len, v1_sig, sizeof(v1_sig));
    if (v1 == 1)
        return parse_v1(out, data, len);
    return v1 == 0 || v2 == 0 ? 0 : -ENOENT;
}
