/* h2_closed.h: what RFC 9113 5.1 and 5.1.1 ask of frames on closed client streams, without
 * keeping closed streams. certgate runs nghttp2 with no_closed_streams (an idle connection
 * gives its stream table back: h2core.idle_memory), so nghttp2 forgets a stream once it
 * closes and drops whatever comes on it later. This keeps, per connection, three bits for each
 * of the last H2_CLOSED_WINDOW client stream identifiers (48 bytes, nothing per stream): the
 * client opened it (a HEADERS frame), the client closed it (END_STREAM or RST_STREAM), and
 * certgate reset it (a RST_STREAM sent, ours or nghttp2's). A DATA or HEADERS frame on a
 * stream nghttp2 no longer has open, within the window:
 *   - certgate reset it: ignored (5.1, closed: frames after our RST_STREAM MUST be ignored;
 *     trailers or body that crossed our reset must not end the connection);
 *   - the client closed it: connection error STREAM_CLOSED (what nghttp2 answers when it keeps
 *     closed streams: session_on_data_received_fail_fast, session_on_request_headers_received);
 *   - never opened (an identifier below the highest the client opened, implicitly closed by
 *     5.1.1): HEADERS is a connection error PROTOCOL_ERROR (5.1.1), DATA one of STREAM_CLOSED;
 *   - otherwise (opened, then dropped without a reset, as nghttp2 does with streams beyond a
 *     GOAWAY): ignored.
 * Older than the window: ignored, as before. Every other frame type, and every frame on an
 * open, idle or even stream, is nghttp2's to judge. The frames are looked at between nghttp2's
 * reads: h2_closed_mem_recv cuts nghttp2's input where a DATA or HEADERS frame begins on a
 * stream at or below the highest the client opened (a new stream's HEADERS is not cut for), so
 * that the check sees the streams as nghttp2 left them. */
#ifndef CERTGATE_H2_CLOSED_H
#define CERTGATE_H2_CLOSED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <nghttp2/nghttp2.h>

#define H2_CLOSED_WINDOW 128 /* client (odd) stream identifiers: the last 256 ids */

struct h2_closed {
    uint64_t opened[H2_CLOSED_WINDOW / 64];
    uint64_t client_closed[H2_CLOSED_WINDOW / 64];
    uint64_t reset[H2_CLOSED_WINDOW / 64];
    int32_t highest; /* the highest client stream identifier a HEADERS frame named */
    uint32_t skip;   /* bytes of the current frame's payload (or the preface) still to pass */
    uint8_t hd[9];   /* the frame header being read, hd_len bytes of it so far */
    uint8_t hd_len;
    bool in_block; /* a header block waits for its CONTINUATION: nghttp2's to judge */
};

/* h2_closed_init prepares |t| for a new server session (the client preface comes first). */
void h2_closed_init(struct h2_closed *t);

/* h2_closed_mem_recv is nghttp2_session_mem_recv (it returns what that returns: |len|, or a
 * negative nghttp2 error), with the check above before each DATA and HEADERS frame; on a frame
 * the check refuses, it returns NGHTTP2_ERR_CALLBACK_FAILURE and sets *code (else left alone)
 * to the GOAWAY error code, the frames before it read. */
ssize_t h2_closed_mem_recv(struct h2_closed *t, nghttp2_session *session, const uint8_t *in,
                           size_t len, uint32_t *code);

/* From on_frame_recv: END_STREAM, or a RST_STREAM, from the client on an open stream. */
void h2_closed_frame_recv(struct h2_closed *t, nghttp2_session *session,
                          const nghttp2_frame *frame);

/* From on_frame_send: a RST_STREAM went out (certgate's or nghttp2's own). */
void h2_closed_frame_sent(struct h2_closed *t, const nghttp2_frame *frame);

#endif
