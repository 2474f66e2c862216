/* h2_closed.c: frames on closed client streams (h2_closed.h says what and why). */
#include "h2/h2_closed.h"

#include <string.h>

#include "core/base.h"

#define FRAME_HD_LEN 9

void h2_closed_init(struct h2_closed *t)
{
    memset(t, 0, sizeof(*t));
    t->skip = NGHTTP2_CLIENT_MAGIC_LEN;
}

/* Client stream |id| (odd) as a running index: 1 -> 1, 3 -> 2, ... (0: none yet). */
static uint32_t idx_of(int32_t id)
{
    return ((uint32_t)id + 1) / 2;
}

/* The bit of |id| in the window, or -1 when |id| is above the highest or older than the
 * window (its bit may now be a newer stream's). */
static int slot_of(const struct h2_closed *t, int32_t id)
{
    if (id <= 0 || (id & 1) == 0 || id > t->highest)
        return -1;
    uint32_t idx = idx_of(id);
    if (idx_of(t->highest) - idx >= H2_CLOSED_WINDOW)
        return -1;
    return (int)(idx % H2_CLOSED_WINDOW);
}

static bool bit_get(const uint64_t *bits, int slot)
{
    return (bits[slot / 64] >> (slot % 64)) & 1;
}

static void bit_set(uint64_t *bits, int slot, bool on)
{
    uint64_t m = (uint64_t)1 << (slot % 64);
    if (on)
        bits[slot / 64] |= m;
    else
        bits[slot / 64] &= ~m;
}

/* A HEADERS frame names |id|, above the highest: the client opens it, and the identifiers
 * between are closed without ever being opened (RFC 9113 5.1.1). */
static void open_new(struct h2_closed *t, int32_t id)
{
    uint32_t from = idx_of(t->highest) + 1, to = idx_of(id);
    if (to - from >= H2_CLOSED_WINDOW)
        from = to - H2_CLOSED_WINDOW + 1;
    for (uint32_t i = from; i <= to; i++) {
        int slot = (int)(i % H2_CLOSED_WINDOW);
        bit_set(t->opened, slot, false);
        bit_set(t->client_closed, slot, false);
        bit_set(t->reset, slot, false);
    }
    t->highest = id;
    bit_set(t->opened, slot_of(t, id), true);
}

/* Whether nghttp2 has |id| open (half-closed either way included): then the frame is its. */
static bool open_in_session(nghttp2_session *session, int32_t id)
{
    nghttp2_stream *st = nghttp2_session_find_stream(session, id);
    if (st == NULL)
        return false;
    nghttp2_stream_proto_state state = nghttp2_stream_get_state(st);
    return state != NGHTTP2_STREAM_STATE_IDLE && state != NGHTTP2_STREAM_STATE_CLOSED;
}

/* A frame on a closed stream that is malformed in itself gets the error of its malformation
 * (RFC 9113 4.2, 6.1, 6.2), not STREAM_CLOSED: one longer than our SETTINGS_MAX_FRAME_SIZE is
 * left to nghttp2 (FRAME_SIZE_ERROR, checked before the stream); padding that fills the frame
 * is PROTOCOL_ERROR here (nghttp2 would ignore the frame first). |pad| is the Pad Length
 * octet, or -1 when it has not come yet (the padding is then not judged). */
static bool too_long(nghttp2_session *session, uint32_t flen)
{
    return flen > nghttp2_session_get_local_settings(session, NGHTTP2_SETTINGS_MAX_FRAME_SIZE);
}

static bool bad_padding(uint8_t type, uint8_t flags, uint32_t flen, int pad)
{
    if ((flags & NGHTTP2_FLAG_PADDED) == 0 || pad < 0)
        return false;
    uint32_t fixed = 1 + (type == NGHTTP2_HEADERS && (flags & NGHTTP2_FLAG_PRIORITY) ? 5 : 0);
    return flen < fixed || (uint32_t)pad > flen - fixed;
}

/* Whether a DATA or HEADERS frame on |id| may be on a closed stream, so that nghttp2 must have
 * read all before it for check_frame to ask it; false for what is nghttp2's whatever its state
 * (stream 0, a server stream, a CONTINUATION expected) and for a new stream, which is noted
 * here. Most requests open a new stream: their HEADERS do not cut nghttp2's input. */
static bool may_be_closed(struct h2_closed *t, uint8_t type, int32_t id)
{
    if (id == 0 || (id & 1) == 0 || t->in_block)
        return false;
    if (id > t->highest) {
        if (type == NGHTTP2_HEADERS)
            open_new(t, id);
        return false; /* a new stream, or DATA on an idle one (PROTOCOL_ERROR): nghttp2's */
    }
    return true;
}

/* The check of a DATA or HEADERS frame header on |id|, once nghttp2 read all that came before
 * it: 0 to let nghttp2 have the frame, else the code of the connection error. */
static uint32_t check_frame(struct h2_closed *t, nghttp2_session *session, uint8_t type,
                            uint8_t flags, int32_t id, uint32_t flen, int pad)
{
    if (!nghttp2_session_want_read(session) || open_in_session(session, id) ||
        too_long(session, flen))
        return 0;
    if (bad_padding(type, flags, flen, pad))
        return NGHTTP2_PROTOCOL_ERROR;
    int slot = slot_of(t, id);
    if (slot < 0 || bit_get(t->reset, slot))
        return 0; /* forgotten, or closed by our RST_STREAM: ignored */
    if (bit_get(t->client_closed, slot))
        return NGHTTP2_STREAM_CLOSED;
    if (!bit_get(t->opened, slot))
        return type == NGHTTP2_HEADERS ? NGHTTP2_PROTOCOL_ERROR : NGHTTP2_STREAM_CLOSED;
    return 0;
}

ssize_t h2_closed_mem_recv(struct h2_closed *t, nghttp2_session *session, const uint8_t *in,
                           size_t len, uint32_t *code)
{
    size_t done = 0;
    while (done < len) {
        const uint8_t *p = in + done;
        size_t avail = len - done, span = 0; /* what nghttp2 may read now */
        while (span < avail) {
            if (t->skip > 0) {
                size_t k = MIN((size_t)t->skip, avail - span);
                t->skip -= (uint32_t)k;
                span += k;
                continue;
            }
            /* The frame header, perhaps begun in an earlier read. Until all of it is here
             * nghttp2 only buffers its bytes, as we do. */
            size_t k = MIN((size_t)(FRAME_HD_LEN - t->hd_len), avail - span);
            memcpy(t->hd + t->hd_len, p + span, k);
            if (t->hd_len + k < FRAME_HD_LEN) {
                t->hd_len = (uint8_t)(t->hd_len + k);
                span += k;
                continue;
            }
            const uint8_t *h = t->hd;
            uint32_t flen = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
            uint8_t type = h[3], flags = h[4];
            int32_t id = (int32_t)(((uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 |
                                    (uint32_t)h[7] << 8 | h[8]) &
                                   0x7fffffffu);
            /* may_be_closed changes nothing when it says yes: the header comes again. */
            if ((type == NGHTTP2_DATA || type == NGHTTP2_HEADERS) && may_be_closed(t, type, id)) {
                if (span > 0)
                    break; /* nghttp2 reads what comes before it first */
                int pad = k < avail ? p[k] : -1; /* the Pad Length octet, if PADDED */
                uint32_t c = check_frame(t, session, type, flags, id, flen, pad);
                if (c != 0) {
                    *code = c;
                    return NGHTTP2_ERR_CALLBACK_FAILURE;
                }
            }
            if (type == NGHTTP2_HEADERS)
                t->in_block = (flags & NGHTTP2_FLAG_END_HEADERS) == 0;
            else if (type == NGHTTP2_CONTINUATION && (flags & NGHTTP2_FLAG_END_HEADERS))
                t->in_block = false;
            t->hd_len = 0;
            span += k;
            t->skip = flen;
        }
        if (span == 0)
            break;
        /* nghttp2 takes all it is given (no callback of ours pauses it). */
        ssize_t n = nghttp2_session_mem_recv(session, p, span);
        if (n < 0)
            return n;
        done += (size_t)n;
        if ((size_t)n != span)
            break;
    }
    return (ssize_t)done;
}

void h2_closed_frame_recv(struct h2_closed *t, nghttp2_session *session, const nghttp2_frame *frame)
{
    bool closes = frame->hd.type == NGHTTP2_RST_STREAM ||
                  ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
                   (frame->hd.flags & NGHTTP2_FLAG_END_STREAM));
    int slot = slot_of(t, frame->hd.stream_id);
    if (closes && slot >= 0 && open_in_session(session, frame->hd.stream_id))
        bit_set(t->client_closed, slot, true);
}

void h2_closed_frame_sent(struct h2_closed *t, const nghttp2_frame *frame)
{
    int slot = slot_of(t, frame->hd.stream_id);
    if (frame->hd.type == NGHTTP2_RST_STREAM && slot >= 0)
        bit_set(t->reset, slot, true);
}
