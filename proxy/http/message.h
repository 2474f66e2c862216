/* message.h: pieces of HTTP/1 messages shared by the request and response codecs, the exchange
 * and the socket layer: token lists, hop-by-hop names, header lines, reason phrases, error
 * responses and request ids. Pure: strings and buffers, no connection. */
#ifndef CERTGATE_MESSAGE_H
#define CERTGATE_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"

/* The Connection tokens kept of one head (more are ignored: they only name headers to drop). */
#define HTTP_MAX_CONNECTION_TOKENS 16

struct http_tokens {
    const char *p[HTTP_MAX_CONNECTION_TOKENS];
    size_t len[HTTP_MAX_CONNECTION_TOKENS];
    unsigned num;
};

/* http_name_is tells whether |name| (|len| bytes) is |lit| in any letter case. Inline: with a
 * literal, strlen folds and a name of another length costs one comparison (header lists are
 * walked with it several times per request). */
static inline bool http_name_is(const char *name, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(name, lit, len) == 0;
}

/* http_trim removes spaces and tabs around |*p| (|*len| bytes). */
void http_trim(const char **p, size_t *len);

/* http_has_token tells whether a comma-separated value holds |token| (any case). */
bool http_has_token(const char *v, size_t len, const char *token);

/* http_collect_tokens adds the tokens of a Connection value to |t|; http_in_tokens tells
 * whether |name| is one of them (any case). */
void http_collect_tokens(struct http_tokens *t, const char *v, size_t len);
bool http_in_tokens(const struct http_tokens *t, const char *name, size_t len);

/* http_is_hop_by_hop tells whether |n| is a hop-by-hop header or a framing header certgate
 * writes itself (Connection, Keep-Alive, TE, Trailer, Upgrade, Proxy-Connection,
 * Content-Length, Transfer-Encoding). */
bool http_is_hop_by_hop(const char *n, size_t len);

/* http_put_header writes "name: value\r\n" to |o|, the value without surrounding whitespace. */
void http_put_header(struct buf *o, const char *name, size_t name_len, const char *v, size_t vl);

/* http_method_idempotent tells whether the llhttp method |method| may be sent twice with the
 * effect of once (RFC 9110 9.2.2): only such a request is sent again on a fresh upstream. */
bool http_method_idempotent(int method);

/* http_reason returns the reason phrase of |status|. */
const char *http_reason(int status);

/* http_error_response appends to |out| a complete response with |status|, a short text body and
 * Connection: close. */
void http_error_response(struct buf *out, int status);

/* The longest client X-Request-Id kept (a longer one is replaced), and the length of one
 * certgate makes. */
#define HTTP_REQUEST_ID_MAX 128
#define HTTP_REQUEST_ID_NEW_LEN 32

/* http_request_id_valid tells whether a client's X-Request-Id value (|len| bytes) is kept and
 * forwarded: 1 to HTTP_REQUEST_ID_MAX bytes of A-Z a-z 0-9 . _ : - (safe in any log or header). */
bool http_request_id_valid(const char *v, size_t len);

/* http_new_request_id writes a new random request id, HTTP_REQUEST_ID_NEW_LEN hex digits and a
 * NUL, into |out| and returns |out|. Unique, not secret: seeded once per thread from getrandom. */
const char *http_new_request_id(char *out);

#endif
