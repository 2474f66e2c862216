/* message.c: pieces of HTTP/1 messages that the request and response codecs, the exchange and
 * the socket layer share: token lists, hop-by-hop names, header lines, reason phrases, error
 * responses, request ids. Pure functions over strings and buffers. */
#include "http/message.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include <llhttp.h>

const char *http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 421: return "Misdirected Request";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

void http_error_response(struct buf *out, int status)
{
    const char *reason = http_reason(status);
    buf_appendf(out,
                "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                "Connection: close\r\n\r\n%s\n",
                status, reason, strlen(reason) + 1, reason);
}

void http_trim(const char **p, size_t *len)
{
    while (*len > 0 && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*len)--;
    }
    while (*len > 0 && ((*p)[*len - 1] == ' ' || (*p)[*len - 1] == '\t'))
        (*len)--;
}

/* Tells whether a comma-separated header value holds |token| (case-insensitive). */
bool http_has_token(const char *v, size_t len, const char *token)
{
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && v[j] != ',')
            j++;
        const char *t = v + i;
        size_t tl = j - i;
        http_trim(&t, &tl);
        if (http_name_is(t, tl, token))
            return true;
        i = j + 1;
    }
    return false;
}

void http_collect_tokens(struct http_tokens *t, const char *v, size_t len)
{
    size_t i = 0;
    while (i < len && t->num < HTTP_MAX_CONNECTION_TOKENS) {
        size_t j = i;
        while (j < len && v[j] != ',')
            j++;
        const char *p = v + i;
        size_t tl = j - i;
        http_trim(&p, &tl);
        if (tl > 0) {
            t->p[t->num] = p;
            t->len[t->num++] = tl;
        }
        i = j + 1;
    }
}

bool http_in_tokens(const struct http_tokens *t, const char *name, size_t len)
{
    for (unsigned i = 0; i < t->num; i++)
        if (t->len[i] == len && strncasecmp(t->p[i], name, len) == 0)
            return true;
    return false;
}

/* Hop-by-hop headers, and the framing headers we write ourselves. */
bool http_is_hop_by_hop(const char *n, size_t len)
{
    switch (len) {
    case 2: return http_name_is(n, len, "te");
    case 7: return http_name_is(n, len, "upgrade") || http_name_is(n, len, "trailer");
    case 10: return http_name_is(n, len, "connection") || http_name_is(n, len, "keep-alive");
    case 14: return http_name_is(n, len, "content-length");
    case 16: return http_name_is(n, len, "proxy-connection");
    case 17: return http_name_is(n, len, "transfer-encoding");
    default: return false;
    }
}


/* Writes "name: value\r\n" to |o|, the value without surrounding whitespace. */
void http_put_header(struct buf *o, const char *name, size_t name_len, const char *v, size_t vl)
{
    http_trim(&v, &vl);
    buf_append(o, name, name_len);
    buf_append(o, ": ", 2);
    buf_append(o, v, vl);
    buf_append(o, "\r\n", 2);
}

bool http_request_id_valid(const char *v, size_t len)
{
    if (len == 0 || len > HTTP_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == ':' || ch == '-'))
            return false;
    }
    return true;
}

/* splitmix64 (Steele, Lea, Flood): a full-period 64-bit sequence; two outputs make an id. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

const char *http_new_request_id(char *out)
{
    static _Thread_local uint64_t state;
    static _Thread_local bool seeded;
    if (!seeded) {
        if (getrandom(&state, sizeof(state), 0) != (ssize_t)sizeof(state))
            state = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&state;
        seeded = true;
    }
    uint64_t hi = splitmix64(&state), lo = splitmix64(&state);
    /* "%016llx%016llx" without snprintf: one per request was 1 % of an h2 request's CPU */
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[i] = hex[(hi >> (60 - 4 * i)) & 0xf];
        out[16 + i] = hex[(lo >> (60 - 4 * i)) & 0xf];
    }
    _Static_assert(HTTP_REQUEST_ID_NEW_LEN == 32, "two 64-bit halves in hex");
    out[HTTP_REQUEST_ID_NEW_LEN] = '\0';
    return out;
}

/* RFC 9110 9.2.2: a request that may be sent twice with the effect of once. Only these are
 * sent again when a reused upstream connection closes before answering. */
bool http_method_idempotent(int method)
{
    switch (method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_TRACE:
    case HTTP_PUT:
    case HTTP_DELETE:
        return true;
    default:
        return false;
    }
}
