/* head.c: the strict line scanner of HTTP/1 heads (SECURITY 10-11: llhttp 8.1 accepts
 * "Host : x" and obs-fold; we do not, in either direction). */
#include "http/head.h"

#include <stdbool.h>
#include <string.h>

/* RFC 9110 5.6.2 tchar, as a bitmap over the 128 ASCII codes: one load per byte of a name. */
static const uint32_t tchar_map[4] = {
    0x00000000, /* 0x00-0x1f: controls */
    0x03ff6cfa, /* 0x20-0x3f: ! # $ % & ' * + - . 0-9 */
    0xc7fffffe, /* 0x40-0x5f: A-Z ^ _ */
    0x57ffffff, /* 0x60-0x7f: ` a-z | ~ */
};

static bool is_tchar(unsigned char ch)
{
    return ch < 128 && (tchar_map[ch >> 5] >> (ch & 31) & 1u) != 0;
}

/* Checks one complete field line (without its CRLF). */
static bool field_line_ok(const char *line, size_t line_len)
{
    if (line[0] == ' ' || line[0] == '\t')
        return false; /* obs-fold */
    size_t i = 0;
    while (i < line_len && is_tchar((unsigned char)line[i]))
        i++;
    return i > 0 && i < line_len && line[i] == ':'; /* not an empty name, nor "Name :" */
}

long head_scan(struct head_scan *hs, const char *p, size_t len, size_t max_head,
               unsigned max_fields)
{
    while (hs->seen < len) {
        /* Search only the bytes not searched yet: a line arriving a byte at a time costs its
         * length, not its length squared. */
        const char *nl = memchr(p + hs->seen, '\n', len - hs->seen);
        if (nl == NULL) {
            hs->scanned += len - hs->seen;
            hs->seen = len;
            break;
        }
        size_t end = (size_t)(nl - p);
        hs->scanned += end + 1 - hs->seen;
        size_t pos = hs->line;
        if (end == pos || p[end - 1] != '\r')
            return HEAD_BAD; /* bare LF */
        size_t line_len = end - 1 - pos;
        const char *line = p + pos;
        hs->scanned += line_len;
        if (memchr(line, '\r', line_len) != NULL || memchr(line, '\0', line_len) != NULL)
            return HEAD_BAD; /* bare CR, NUL */
        if (hs->lines == 0) {
            if (end + 1 > max_head)
                return HEAD_LONG_LINE;
        } else if (line_len == 0) {
            return (long)(end + 1);
        } else {
            if (!field_line_ok(line, line_len))
                return HEAD_BAD;
            if (hs->lines > max_fields)
                return HEAD_TOO_BIG;
        }
        hs->lines++;
        hs->line = hs->seen = end + 1;
        if (hs->line > max_head)
            return hs->lines <= 1 ? HEAD_LONG_LINE : HEAD_TOO_BIG;
    }
    if (len >= max_head)
        return hs->lines == 0 ? HEAD_LONG_LINE : HEAD_TOO_BIG;
    return 0;
}
