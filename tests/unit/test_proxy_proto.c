/* test_proxy_proto.c: the PROXY protocol parser: v1 and v2 headers whole, cut at every byte,
 * followed by stream bytes, and every malformed length and field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>

#include "net/proxy_proto.h"

static const uint8_t SIG2[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Builds a v2 header: signature, |ver_cmd|, |fam|, the length of |payload|, |payload|. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *payload, size_t len)
{
    memcpy(out, SIG2, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(len >> 8);
    out[15] = (uint8_t)len;
    if (len > 0)
        memcpy(out + 16, payload, len);
    return 16 + len;
}

/* Every proper prefix of a valid header asks for more; the whole parses to its length, also
 * with stream bytes after it. */
static void expect_complete(const uint8_t *h, size_t len, struct proxy_proto_hdr *out)
{
    for (size_t k = 0; k < len; k++)
        assert_int_equal(proxy_proto_parse(out, h, k), 0);
    assert_int_equal(proxy_proto_parse(out, h, len), (long)len);
    uint8_t more[PROXY_PROTO_MAX + 32];
    memcpy(more, h, len);
    memcpy(more + len, "\x16\x03\x01GET / HTTP/1.1\r\n", 19);
    assert_int_equal(proxy_proto_parse(out, more, len + 19), (long)len);
}

/* A malformed header: each prefix either asks for more or already fails the same way. */
static void expect_error(const uint8_t *h, size_t len, long err)
{
    struct proxy_proto_hdr out;
    for (size_t k = 0; k < len; k++) {
        long r = proxy_proto_parse(&out, h, k);
        assert_true(r == 0 || r == err);
    }
    assert_int_equal(proxy_proto_parse(&out, h, len), err);
    if (err == -EINVAL)
        assert_non_null(out.error);
}

static void test_v1_tcp4(void **state)
{
    const char *h = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n";
    struct proxy_proto_hdr out;
    expect_complete((const uint8_t *)h, strlen(h), &out);
    assert_int_equal(out.version, 1);
    assert_true(out.has_addrs);
    assert_int_equal(out.src.sa.sa_family, AF_INET);
    assert_int_equal(ntohl(out.src.in.sin_addr.s_addr), 0xC0000207u);
    assert_int_equal(ntohs(out.src.in.sin_port), 56324);
    assert_int_equal(ntohl(out.dst.in.sin_addr.s_addr), 0xC6336401u);
    assert_int_equal(ntohs(out.dst.in.sin_port), 443);
}

static void test_v1_tcp6_and_longest(void **state)
{
    const char *h = "PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n";
    struct proxy_proto_hdr out;
    expect_complete((const uint8_t *)h, strlen(h), &out);
    assert_int_equal(out.src.sa.sa_family, AF_INET6);
    assert_int_equal(out.src.in6.sin6_addr.s6_addr[15], 1);
    assert_int_equal(ntohs(out.src.in6.sin6_port), 65535);
    const char *big = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    expect_complete((const uint8_t *)big, strlen(big), &out);
    /* The specification's worst case is exactly 107 bytes. */
    const char *worst = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_int_equal(strlen(worst), PROXY_PROTO_V1_MAX);
    expect_complete((const uint8_t *)worst, strlen(worst), &out);
}

static void test_v1_unknown(void **state)
{
    struct proxy_proto_hdr out;
    const char *h = "PROXY UNKNOWN\r\n";
    expect_complete((const uint8_t *)h, strlen(h), &out);
    assert_false(out.has_addrs);
    h = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    expect_complete((const uint8_t *)h, strlen(h), &out);
    assert_false(out.has_addrs);
}

static void test_v1_malformed(void **state)
{
    static const char *const bad[] = {
        "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n",   /* bare LF */
        "PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",     /* a field missing */
        "PROXY TCP4 192.0.2.7  198.51.100.1 1 2\r\n",      /* two spaces */
        "PROXY TCP4 192.0.2.7 198.51.100.1 1 2 \r\n",      /* trailing space */
        "PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n", /* port too big */
        "PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n",    /* not a number */
        "PROXY TCP4 192.0.2.7 198.51.100.1 123456 4\r\n",  /* six digits */
        "PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",     /* v6 in TCP4 */
        "PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n",        /* v4 in TCP6 */
        "PROXY TCP4 192.0.2.256 198.51.100.1 1 2\r\n",     /* not an address */
        "PROXY TCP5 192.0.2.7 198.51.100.1 1 2\r\n",       /* unknown protocol */
        "PROXY TCP4\r\n",                                  /* nothing after it */
        "PROXY \r\n",                                      /* nothing at all */
        "PROXY UNKNOWNX\r\n",                              /* not UNKNOWN */
        "PROXY TCP4 192.0.2.7\r198.51.100.1 1 2\r\n",      /* a CR inside */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_error((const uint8_t *)bad[i], strlen(bad[i]), -EINVAL);
    /* A NUL inside the line. */
    const uint8_t nul[] = "PROXY TCP4 192.0.2.7\0198.51.100.1 1 2\r\n";
    expect_error(nul, sizeof(nul) - 1, -EINVAL);
    /* No CRLF within 107 bytes. */
    uint8_t line[200];
    memcpy(line, "PROXY UNKNOWN ", 14);
    memset(line + 14, 'a', sizeof(line) - 14);
    expect_error(line, PROXY_PROTO_V1_MAX, -EMSGSIZE);
    expect_error(line, sizeof(line), -EMSGSIZE);
}

static void test_v2_inet_with_tlvs(void **state)
{
    // clang-format off
    uint8_t payload[12 + 3 + 5 + 3] = {192, 0, 2, 7, 198, 51, 100, 1, 0xDC, 0x04, 0x01, 0xBB,
                                       /* PP2_TYPE_AUTHORITY "a.b.c" */ 0x02, 0x00, 0x05,
                                       'a', '.', 'b', '.', 'c',
                                       /* PP2_TYPE_NOOP, empty */ 0x04, 0x00, 0x00};
    // clang-format on
    uint8_t h[PROXY_PROTO_MAX];
    size_t n = v2(h, 0x21, 0x11, payload, sizeof(payload));
    struct proxy_proto_hdr out;
    expect_complete(h, n, &out);
    assert_int_equal(out.version, 2);
    assert_true(out.has_addrs);
    assert_int_equal(out.src.sa.sa_family, AF_INET);
    assert_int_equal(ntohl(out.src.in.sin_addr.s_addr), 0xC0000207u);
    assert_int_equal(ntohs(out.src.in.sin_port), 0xDC04);
    assert_int_equal(ntohs(out.dst.in.sin_port), 443);
}

static void test_v2_inet6_local_unspec_unix(void **state)
{
    uint8_t payload[216] = {0};
    payload[0] = 0x20;
    payload[1] = 0x01;
    payload[15] = 9;
    payload[32] = 0x12;
    payload[33] = 0x34;
    uint8_t h[PROXY_PROTO_MAX];
    struct proxy_proto_hdr out;
    size_t n = v2(h, 0x21, 0x21, payload, 36);
    expect_complete(h, n, &out);
    assert_int_equal(out.src.sa.sa_family, AF_INET6);
    assert_int_equal(out.src.in6.sin6_addr.s6_addr[15], 9);
    assert_int_equal(ntohs(out.src.in6.sin6_port), 0x1234);

    n = v2(h, 0x20, 0x00, NULL, 0); /* LOCAL: a health check */
    expect_complete(h, n, &out);
    assert_false(out.has_addrs);
    n = v2(h, 0x20, 0x11, payload, 7); /* LOCAL skips whatever it carries */
    expect_complete(h, n, &out);
    assert_false(out.has_addrs);
    n = v2(h, 0x21, 0x00, payload, 5); /* PROXY over AF_UNSPEC */
    expect_complete(h, n, &out);
    assert_false(out.has_addrs);
    n = v2(h, 0x21, 0x31, payload, 216); /* AF_UNIX: no IP to report */
    expect_complete(h, n, &out);
    assert_false(out.has_addrs);
}

static void test_v2_malformed(void **state)
{
    uint8_t payload[64] = {0};
    uint8_t h[PROXY_PROTO_MAX + 16];
    size_t n = v2(h, 0x11, 0x11, payload, 12); /* version 1 in a v2 header */
    expect_error(h, n, -EINVAL);
    n = v2(h, 0x22, 0x11, payload, 12); /* command 2 */
    expect_error(h, n, -EINVAL);
    n = v2(h, 0x21, 0x41, payload, 12); /* family 4 */
    expect_error(h, n, -EINVAL);
    n = v2(h, 0x21, 0x13, payload, 12); /* transport 3 */
    expect_error(h, n, -EINVAL);
    n = v2(h, 0x21, 0x11, payload, 11); /* shorter than an IPv4 block */
    expect_error(h, n, -EINVAL);
    n = v2(h, 0x21, 0x21, payload, 35); /* shorter than an IPv6 block */
    expect_error(h, n, -EINVAL);
    n = v2(h, 0x21, 0x31, payload, 64); /* shorter than a unix block */
    expect_error(h, n, -EINVAL);
    for (size_t cut = 1; cut <= 2; cut++) { /* a TLV head cut short */
        n = v2(h, 0x21, 0x11, payload, 12 + cut);
        expect_error(h, n, -EINVAL);
    }
    payload[12] = 0x02;
    payload[13] = 0x00;
    payload[14] = 0x10; /* 16 bytes announced, 4 present */
    n = v2(h, 0x21, 0x11, payload, 12 + 3 + 4);
    expect_error(h, n, -EINVAL);
    payload[13] = 0xff; /* a huge TLV length must not wrap */
    payload[14] = 0xff;
    n = v2(h, 0x21, 0x11, payload, 12 + 3 + 4);
    expect_error(h, n, -EINVAL);
}

static void test_v2_too_long(void **state)
{
    static uint8_t h[PROXY_PROTO_MAX + 64];
    memset(h, 0, sizeof(h));
    size_t n = v2(h, 0x21, 0x11, h + 16, PROXY_PROTO_V2_MAX_PAYLOAD + 1);
    struct proxy_proto_hdr out;
    /* Refused as soon as the length is known, without waiting for the payload. */
    assert_int_equal(proxy_proto_parse(&out, h, 15), 0);
    assert_int_equal(proxy_proto_parse(&out, h, 16), -EMSGSIZE);
    assert_int_equal(proxy_proto_parse(&out, h, n), -EMSGSIZE);
    memset(h + 16, 0, 12);
    h[14] = 0xff;
    h[15] = 0xff;
    assert_int_equal(proxy_proto_parse(&out, h, 16), -EMSGSIZE);
    /* The largest accepted payload: an IPv4 block and one TLV filling the rest. */
    size_t tlv = PROXY_PROTO_V2_MAX_PAYLOAD - 12 - 3;
    static uint8_t p[PROXY_PROTO_V2_MAX_PAYLOAD];
    p[12] = 0xEE;
    p[13] = (uint8_t)(tlv >> 8);
    p[14] = (uint8_t)tlv;
    n = v2(h, 0x21, 0x11, p, PROXY_PROTO_V2_MAX_PAYLOAD);
    assert_int_equal(proxy_proto_parse(&out, h, n), (long)n);
}

static void test_not_a_header(void **state)
{
    struct proxy_proto_hdr out;
    static const char *const streams[] = {
        "GET / HTTP/1.1\r\n", "POST / HTTP/1.1\r\n", "\x16\x03\x01\x02\x00", "PROXX",
        "proxy TCP4",         "\r\n\r\nX",
    };
    for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++)
        assert_int_equal(proxy_proto_parse(&out, (const uint8_t *)streams[i], strlen(streams[i])),
                         -ENOENT);
    assert_int_equal(proxy_proto_parse(&out, (const uint8_t *)"\r\n\r\n\0\r\nQUIX", 11), -ENOENT);
    /* Prefixes of either signature wait for more; nothing waits for nothing. */
    assert_int_equal(proxy_proto_parse(&out, (const uint8_t *)"PRO", 3), 0);
    assert_int_equal(proxy_proto_parse(&out, SIG2, 11), 0);
    assert_int_equal(proxy_proto_parse(&out, SIG2, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),           cmocka_unit_test(test_v1_tcp6_and_longest),
        cmocka_unit_test(test_v1_unknown),        cmocka_unit_test(test_v1_malformed),
        cmocka_unit_test(test_v2_inet_with_tlvs), cmocka_unit_test(test_v2_inet6_local_unspec_unix),
        cmocka_unit_test(test_v2_malformed),      cmocka_unit_test(test_v2_too_long),
        cmocka_unit_test(test_not_a_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
