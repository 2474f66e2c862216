/* xfcc_reparse.h: a strict, quote-aware x-forwarded-client-cert parser for the tests and the
 * fuzzer: elements split on ',' and keys on ';' outside quotes, key=value, quoted values unescape
 * '\x' to 'x'. What it recovers is what any careful downstream parser would see. */
#ifndef CERTGATE_XFCC_REPARSE_H
#define CERTGATE_XFCC_REPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct reparse_pair {
    char *key;
    char *value; /* unquoted and unescaped, NUL-terminated */
    size_t value_len;
    bool quoted;
};

struct reparse_element {
    struct reparse_pair *pairs;
    size_t num_pairs;
};

struct reparse_header {
    struct reparse_element *elements;
    size_t num_elements;
};

static inline void *reparse_grow(void *ptr, size_t num, size_t size)
{
    void *p = realloc(ptr, num * size);
    if (p == NULL)
        abort();
    return p;
}

/* reparse_free releases what reparse_header filled in; a zeroed header is fine. */
static inline void reparse_free(struct reparse_header *h)
{
    for (size_t e = 0; e < h->num_elements; e++) {
        for (size_t i = 0; i < h->elements[e].num_pairs; i++) {
            free(h->elements[e].pairs[i].key);
            free(h->elements[e].pairs[i].value);
        }
        free(h->elements[e].pairs);
    }
    free(h->elements);
    memset(h, 0, sizeof(*h));
}

/* reparse_header parses |len| bytes into |h| (zeroed by the caller). It returns 0, or -1 when the
 * text is not well formed: an empty key, no '=', an unterminated quote, anything but ';' ',' or
 * the end after a closing quote, or '"' inside an unquoted value ('=' is allowed there, as
 * Envoy writes a URI SAN's query string raw). */
static inline int reparse_header(struct reparse_header *h, const char *s, size_t len)
{
    size_t i = 0;
    h->elements = reparse_grow(NULL, 1, sizeof(*h->elements));
    memset(&h->elements[0], 0, sizeof(h->elements[0]));
    h->num_elements = 1;
    for (;;) {
        struct reparse_element *el = &h->elements[h->num_elements - 1];
        size_t key_start = i;
        while (i < len && s[i] != '=' && s[i] != ';' && s[i] != ',' && s[i] != '"')
            i++;
        if (i == key_start || i == len || s[i] != '=')
            return -1;
        el->pairs = reparse_grow(el->pairs, el->num_pairs + 1, sizeof(*el->pairs));
        struct reparse_pair *p = &el->pairs[el->num_pairs++];
        memset(p, 0, sizeof(*p));
        p->key = reparse_grow(NULL, i - key_start + 1, 1);
        memcpy(p->key, s + key_start, i - key_start);
        p->key[i - key_start] = '\0';
        i++; /* '=' */
        p->value = reparse_grow(NULL, len - i + 1, 1);
        if (i < len && s[i] == '"') {
            p->quoted = true;
            i++;
            for (;;) {
                if (i == len)
                    return -1;
                if (s[i] == '"')
                    break;
                if (s[i] == '\\') {
                    if (++i == len)
                        return -1;
                }
                p->value[p->value_len++] = s[i++];
            }
            i++; /* closing quote */
        } else {
            while (i < len && s[i] != ';' && s[i] != ',') {
                if (s[i] == '"')
                    return -1;
                p->value[p->value_len++] = s[i++];
            }
        }
        p->value[p->value_len] = '\0';
        if (i == len)
            return 0;
        if (s[i] == ',') {
            h->elements = reparse_grow(h->elements, h->num_elements + 1, sizeof(*h->elements));
            memset(&h->elements[h->num_elements], 0, sizeof(h->elements[0]));
            h->num_elements++;
        } else if (s[i] != ';') {
            return -1;
        }
        i++;
    }
}

static inline int reparse_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* reparse_pct_decode decodes %XX in place (like Go's url.PathUnescape: '+' stays); returns the
 * new length, or (size_t)-1 on a malformed escape. */
static inline size_t reparse_pct_decode(char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            s[o++] = s[i];
            continue;
        }
        if (i + 2 >= len)
            return (size_t)-1;
        int hi = reparse_hexval(s[i + 1]), lo = reparse_hexval(s[i + 2]);
        if (hi < 0 || lo < 0)
            return (size_t)-1;
        s[o++] = (char)(hi << 4 | lo);
        i += 2;
    }
    if (o < len)
        s[o] = '\0';
    return o;
}

#endif
