/* body.c: Content-Length and chunked bodies, decoded strictly and re-framed. */
#include "http/body.h"

#include <string.h>

#include "core/base.h"

enum {
    CH_SIZE,         /* hex digits of a chunk size */
    CH_EXT,          /* chunk extensions, up to CR */
    CH_SIZE_LF,      /* LF after the size line */
    CH_DATA,         /* chunk data */
    CH_DATA_CR,      /* CR after the data */
    CH_DATA_LF,      /* LF after the data */
    CH_TRAILER_LINE, /* start of a trailer line, or the final CRLF */
    CH_TRAILER,      /* inside a trailer line */
    CH_TRAILER_LF,   /* LF ending a trailer line */
    CH_END_LF,       /* LF ending the message */
    CH_DONE,
};

void body_init(struct body *b, enum body_kind kind, uint64_t length, bool out_chunked,
               size_t max_trailer)
{
    memset(b, 0, sizeof(*b));
    b->kind = kind;
    b->remaining = length;
    b->out_chunked = out_chunked;
    b->max_trailer = max_trailer;
    b->state = CH_SIZE;
}

static void emit(struct body *b, struct buf *out, const char *data, size_t len, uint64_t *count)
{
    if (len == 0)
        return;
    if (b->out_chunked)
        buf_appendf(out, "%zx\r\n", len);
    buf_append(out, data, len);
    if (b->out_chunked)
        buf_append(out, "\r\n", 2);
    *count += len;
}

static int feed_chunked(struct body *b, struct buf *in, struct buf *out, uint64_t *count)
{
    const char *p = buf_data(in);
    size_t len = buf_used(in), i = 0;
    int ret = 0;
    while (i < len && b->state != CH_DONE) {
        unsigned char ch = (unsigned char)p[i];
        switch (b->state) {
        case CH_SIZE: {
            int v = base_hex_digit(ch);
            if (v >= 0) {
                if (++b->digits > 16) /* 16 hex digits always fit in 64 bits */
                    return -1;
                b->remaining = b->remaining << 4 | (uint64_t)v;
            } else if (b->digits > 0 && ch == ';') {
                b->state = CH_EXT;
            } else if (b->digits > 0 && ch == '\r') {
                b->state = CH_SIZE_LF;
            } else {
                return -1;
            }
            i++;
            break;
        }
        case CH_EXT:
            if (ch == '\r') {
                b->state = CH_SIZE_LF;
            } else if ((ch < 0x20 && ch != '\t') || ch == 0x7f ||
                       ++b->ext_len > BODY_MAX_CHUNK_EXT) {
                return -1;
            }
            i++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                return -1;
            i++;
            b->digits = 0;
            b->ext_len = 0;
            b->state = b->remaining == 0 ? CH_TRAILER_LINE : CH_DATA;
            break;
        case CH_DATA: {
            size_t n = (size_t)MIN((uint64_t)(len - i), b->remaining);
            emit(b, out, p + i, n, count);
            i += n;
            b->remaining -= n;
            if (b->remaining == 0)
                b->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (ch != '\r')
                return -1;
            i++;
            b->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                return -1;
            i++;
            b->state = CH_SIZE;
            break;
        case CH_TRAILER_LINE:
            if (ch == '\r') {
                b->state = CH_END_LF;
                i++;
                break;
            }
            b->state = CH_TRAILER;
            break;
        case CH_TRAILER:
            if (ch == '\r')
                b->state = CH_TRAILER_LF;
            else if (ch == '\n' || ch == '\0' || ++b->trailer_len > b->max_trailer)
                return -1;
            i++;
            break;
        case CH_TRAILER_LF:
            if (ch != '\n')
                return -1;
            i++;
            b->state = CH_TRAILER_LINE;
            break;
        case CH_END_LF:
            if (ch != '\n')
                return -1;
            i++;
            b->state = CH_DONE;
            break;
        }
    }
    buf_consume(in, i);
    if (b->state == CH_DONE) {
        if (b->out_chunked)
            buf_append(out, "0\r\n\r\n", 5);
        ret = 1;
    }
    return ret;
}

int body_feed(struct body *b, struct buf *in, struct buf *out, uint64_t *count)
{
    switch (b->kind) {
    case BODY_NONE:
        return 1;
    case BODY_LENGTH: {
        size_t n = (size_t)MIN((uint64_t)buf_used(in), b->remaining);
        buf_append(out, buf_data(in), n);
        buf_consume(in, n);
        *count += n;
        b->remaining -= n;
        return b->remaining == 0 ? 1 : 0;
    }
    case BODY_CHUNKED:
        return feed_chunked(b, in, out, count);
    case BODY_EOF:
        emit(b, out, buf_data(in), buf_used(in), count);
        buf_consume(in, buf_used(in));
        return 0;
    }
    return -1;
}
