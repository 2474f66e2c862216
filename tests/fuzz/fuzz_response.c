/* fuzz_response.c: libFuzzer target for the response side of the HTTP/1 codec. The input is what
 * the upstream answers to a forwarded GET, all in one read; the output is what the client would
 * receive (h1_harness.h). The exchange must either refuse the answer (a 502 when nothing of it
 * reached the client yet, else the connection closes) or forward it re-serialised: a head that
 * certgate's own scanner accepts (no obs-fold, bare CR or LF, NUL copied through), and, once
 * the response is complete, bytes that certgate forwards again unchanged when an upstream
 * answers with them (forwarding is a fixed point). Without -DFUZZING, main() replays a corpus. */
#include "h1_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char get[] = "GET /x HTTP/1.1\r\nHost: fuzz\r\n\r\n";

/* Runs the upstream's answer |in| (|len| bytes) through a new connection whose GET was
 * forwarded. |*complete| tells whether the response ended. */
static struct conn *answer(const char *in, size_t len, bool *complete)
{
    struct conn *c = h1_conn_new();
    buf_append(&c->cin, get, strlen(get));
    http_request_process(c);
    CHECK(c->state == CONN_PROXY && c->ex.req_done);
    buf_append(&c->uin, in, len);
    http_response_process(c);
    /* A complete exchange goes back to waiting for the next request. */
    *complete = c->state == CONN_HEAD || (c->state == CONN_FLUSH && c->ex.resp_done);
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    h1_init();
    bool complete = false;
    struct conn *c = answer((const char *)data, size, &complete);
    size_t out_len = buf_used(&c->cout);
    const char *o = buf_data(&c->cout);
    if (out_len > 0) {
        /* Whatever reached the client starts with a head certgate itself accepts. */
        struct head_scan hs = {0};
        long head_len = head_scan(&hs, o, out_len, out_len + 1, UINT32_MAX);
        CHECK(head_len > 0 || c->state == CONN_PROXY || c->state == CONN_CLOSING);
        CHECK(out_len >= 9 && memcmp(o, "HTTP/1.1 ", 9) == 0);
    }
    bool fixed_point = complete && out_len > 0;
    char *out = NULL;
    if (fixed_point) {
        out = xmalloc(out_len);
        memcpy(out, o, out_len);
    }
    h1_conn_free(c);
    if (out != NULL) {
        bool again_complete = false;
        struct conn *again = answer(out, out_len, &again_complete);
        CHECK(again_complete);
        CHECK(buf_used(&again->cout) == out_len && memcmp(buf_data(&again->cout), out, out_len) == 0);
        h1_conn_free(again);
        free(out);
    }
    return 0;
}
