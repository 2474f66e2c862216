/* ocsp_fetch.h: one HTTP POST of an OCSP request to a responder, on a worker's libuv loop, with
 * a deadline: resolution (libuv's thread pool), connect, write, read until the response is
 * complete. It knows HTTP, not OCSP; tls_verify.c decides what the answer means. */
#ifndef CERTGATE_OCSP_FETCH_H
#define CERTGATE_OCSP_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct ocsp_fetch;

/* Called once, on the loop: |status| 0 with the response body (valid during the call only), or a
 * negative errno (-ETIMEDOUT, -ECONNREFUSED, -EPROTO for a non-200 or malformed answer, ...)
 * with |why| saying what failed in a few words. */
typedef void (*ocsp_fetch_cb)(void *arg, int status, const uint8_t *body, size_t len,
                              const char *why);

/* ocsp_fetch_start POSTs |req| (application/ocsp-request) to |url| (http://host[:port][/path];
 * host may be a name, an IPv4 or a bracketed IPv6 literal) on |loop| and calls |cb| once unless
 * cancelled first. The whole exchange must finish within |timeout_ms|. Returns the fetch, or
 * NULL (|cb| is never called) when |url| is not such a URL. |req| is copied. */
struct ocsp_fetch *ocsp_fetch_start(uv_loop_t *loop, const char *url, const uint8_t *req,
                                    size_t req_len, uint64_t timeout_ms, ocsp_fetch_cb cb,
                                    void *arg);

/* ocsp_fetch_cancel makes sure |cb| is not called; the fetch frees itself once libuv is done with
 * it. Must be called on the loop's thread, at most once, and not after |cb| ran. */
void ocsp_fetch_cancel(struct ocsp_fetch *f);

/* ocsp_fetch_parse_url splits |url| into host (without brackets), port and path. Returns 0, or
 * -EINVAL for anything but http:// with a host. Exposed for tests. */
int ocsp_fetch_parse_url(const char *url, char *host, size_t host_len, uint16_t *port,
                         char *path, size_t path_len);

/* What a responder's answer amounts to (ocsp_fetch_parse_response). */
struct ocsp_fetch_answer {
    int status;       /* 0: the body is |body_len| bytes at |body_off|; else -EPROTO */
    size_t body_off;
    size_t body_len;
    const char *why;  /* when |status| is not 0: what failed, in a few words */
    char why_buf[64]; /* storage |why| may point to */
};

/* ocsp_fetch_parse_response reads the |n| bytes received so far at |d| (|eof|: the responder
 * closed after them) as an HTTP/1.x answer. Returns 1 and fills |out| when the exchange is
 * over, 0 when more bytes are needed. Exposed for the fuzzer. */
int ocsp_fetch_parse_response(const char *d, size_t n, bool eof, struct ocsp_fetch_answer *out);

#endif
