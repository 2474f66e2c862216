/* fuzz_ocsp_http.c: libFuzzer target for the OCSP fetch's HTTP response parser
 * (ocsp_fetch_parse_response), the bytes an OCSP responder, or anyone on the path to it, sends.
 * At end of stream it always decides; a body lies within the input, after the blank line; a
 * refusal says why; and once the parser has decided on a prefix, more bytes do not change the
 * answer (it acts on the first decision). Without -DFUZZING, replay.c replays a corpus. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "tls/ocsp_fetch.h"

static void check_answer(const char *d, size_t n, const struct ocsp_fetch_answer *a)
{
    if (a->status == 0) {
        CHECK(a->body_off >= 4 && a->body_off <= n && a->body_len <= n - a->body_off);
        CHECK(memcmp(d + a->body_off - 4, "\r\n\r\n", 4) == 0);
        CHECK(memcmp(d, "HTTP/1.", 7) == 0);
    } else {
        CHECK(a->status == -EPROTO && a->why != NULL && a->why[0] != '\0');
    }
}

static bool same_answer(const struct ocsp_fetch_answer *a, const struct ocsp_fetch_answer *b)
{
    if (a->status != b->status)
        return false;
    if (a->status == 0)
        return a->body_off == b->body_off && a->body_len == b->body_len;
    return strcmp(a->why, b->why) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    const char *d = (const char *)data;
    struct ocsp_fetch_answer at_eof, open, prefix;
    CHECK(ocsp_fetch_parse_response(d, size, true, &at_eof) == 1);
    check_answer(d, size, &at_eof);
    int done = ocsp_fetch_parse_response(d, size, false, &open);
    CHECK(done == 0 || done == 1);
    if (done) {
        check_answer(d, size, &open);
        CHECK(same_answer(&open, &at_eof));
    }
    /* Bytes arrive in pieces: a decision on a prefix is the decision. */
    size_t step = size / 16 + 1;
    for (size_t k = 0; k < size; k += step) {
        if (ocsp_fetch_parse_response(d, k, false, &prefix) == 1) {
            check_answer(d, k, &prefix);
            CHECK(done && same_answer(&prefix, &open));
        }
    }
    return 0;
}
