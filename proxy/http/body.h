/* body.h: message bodies, framed by Content-Length, chunked coding or the end of the
 * connection, decoded and re-framed. Our own chunked decoder: llhttp 8.1 accepts chunk data
 * that is not followed by CRLF, which is a smuggling vector (SECURITY 10-11). */
#ifndef CERTGATE_BODY_H
#define CERTGATE_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum body_kind {
    BODY_NONE,    /* no body */
    BODY_LENGTH,  /* Content-Length bytes */
    BODY_CHUNKED, /* chunked coding */
    BODY_EOF,     /* until the sender closes (responses only) */
};

#define BODY_MAX_CHUNK_EXT 4096

struct body {
    enum body_kind kind;
    uint8_t state;     /* the chunked decoder's state */
    bool out_chunked;  /* re-frame as chunked on output (else raw data) */
    uint8_t digits;    /* hex digits of the current size line */
    uint64_t remaining; /* bytes left of the body (LENGTH) or of the chunk (CHUNKED) */
    size_t ext_len;     /* chunk-extension bytes of the current size line */
    size_t trailer_len; /* trailer bytes so far */
    size_t max_trailer; /* bound on trailer bytes */
};

/* body_init prepares |b| for a body of |kind|; |length| is the Content-Length for
 * BODY_LENGTH; |out_chunked| makes the output chunked; trailers may take |max_trailer| bytes. */
void body_init(struct body *b, enum body_kind kind, uint64_t length, bool out_chunked,
               size_t max_trailer);

/* body_feed decodes what |in| holds into |out| (data re-framed; chunk extensions and trailers
 * dropped) and consumes it from |in|; bytes after the body stay in |in|. Adds the data bytes
 * to |*count|. Returns 1 when the body is complete, 0 when more input is needed, -1 on bad
 * framing. */
int body_feed(struct body *b, struct buf *in, struct buf *out, uint64_t *count);

#endif
