/* fuzz_request.c: libFuzzer target for the request side of the HTTP/1 codec. The input is what a
 * client sends on a verified connection, all in one read; the output is what the upstream would
 * receive (h1_harness.h). Whenever a request is forwarded whole:
 * - exactly one exchange was started upstream, however many requests the input pipelines;
 * - the forwarded head carries exactly one client-certificate header, certgate's own;
 * - the forwarded bytes are one message and nothing more: fed to certgate again as a request,
 *   they are consumed whole, forwarded as one request again, and come out byte for byte the
 *   same (forwarding is a fixed point; excepted are HTTP/1.0 requests, which come out as
 *   HTTP/1.1, and heads that the headers certgate adds push over its own limits).
 * A refused request leaves nothing for the upstream and answers a 4xx. Without -DFUZZING,
 * main() replays a corpus. */
#include "h1_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs |in| (|len| bytes) through a new connection. Returns it for the caller to inspect. */
static struct conn *forward(const char *in, size_t len)
{
    struct conn *c = h1_conn_new();
    buf_append(&c->cin, in, len);
    http_request_process(c);
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    h1_init();
    struct conn *c = forward((const char *)data, size);
    unsigned connects = h1_connects;
    CHECK(connects <= 1);
    if (c->state == CONN_FLUSH) {
        /* Refused: an answer for the client, nothing for the upstream. */
        CHECK(buf_used(&c->uout) == 0);
        CHECK(buf_used(&c->cout) > 12 && memcmp(buf_data(&c->cout), "HTTP/1.1 4", 10) == 0);
    } else if (c->state == CONN_HEAD) {
        CHECK(connects == 0 && buf_used(&c->uout) == 0);
    }
    if (c->state != CONN_PROXY || !c->ex.req_done) {
        h1_conn_free(c);
        return 0;
    }
    CHECK(connects == 1);
    size_t out_len = buf_used(&c->uout);
    char *out = xmalloc(out_len ? out_len : 1);
    memcpy(out, buf_data(&c->uout), out_len);
    bool http10 = c->ex.req_http10;
    h1_conn_free(c);

    struct head_scan hs = {0};
    long head_len = head_scan(&hs, out, out_len, out_len + 1, UINT32_MAX);
    CHECK(head_len > 0);
    CHECK(h1_count_lines(out, (size_t)head_len, "x-forwarded-client-cert") == 1);
    CHECK(memmem(out, (size_t)head_len, H1_CC_LINE, strlen(H1_CC_LINE)) != NULL);
    CHECK(h1_count_lines(out, (size_t)head_len, "x-user") == 0); /* strip_headers */

    if (getenv("FUZZ_DUMP") != NULL) /* what the upstream would receive, for a failing input */
        fwrite(out, 1, out_len, stderr);
    /* The headers certgate adds can push a head that was just within the limits over them:
     * certgate itself would then refuse it (431), which is no fault of forwarding. */
    const struct config_limits *lim = &h1_cfg->limits;
    struct head_scan limits_scan = {0};
    bool within = head_scan(&limits_scan, out, out_len, lim->max_request_head, lim->max_headers) > 0;
    if (!http10 && within) {
        struct conn *again = forward(out, out_len);
        if (getenv("FUZZ_DUMP") != NULL)
            fprintf(stderr, "\n-- again: state %d, connects %u, cout: %.*s\n", (int)again->state,
                    h1_connects, (int)buf_used(&again->cout), buf_data(&again->cout));
        CHECK(h1_connects == 1);
        CHECK(again->state == CONN_PROXY && again->ex.req_done);
        CHECK(buf_used(&again->cin) == 0); /* one message, nothing after it */
        CHECK(buf_used(&again->uout) == out_len &&
              memcmp(buf_data(&again->uout), out, out_len) == 0);
        h1_conn_free(again);
    }
    free(out);
    return 0;
}
