/* h2_hdrs.h: a header list of an HTTP/2 stream (names and values copied into one arena), and
 * what HTTP/2 says about header names. */
#ifndef CERTGATE_H2_HDRS_H
#define CERTGATE_H2_HDRS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#include "core/buf.h"

/* A header list: names and values in one arena, nv built once all are added. */
struct h2_hdrs {
    struct buf arena; /* name, value, name, value, ... (no NULs) */
    uint32_t *offs;   /* per header: name offset, name length, value offset, value length */
    size_t num, cap;
    nghttp2_nv *nv; /* h2_hdrs_nv's; NULL until then */
};

/* h2_hdrs_add appends a header (copied). */
void h2_hdrs_add(struct h2_hdrs *h, const char *name, size_t name_len, const char *value,
                 size_t value_len);

/* h2_hdrs_nv returns the headers as nghttp2 wants them (pointers into the arena; valid until
 * the next h2_hdrs_add or h2_hdrs_free). */
const nghttp2_nv *h2_hdrs_nv(struct h2_hdrs *h);

/* h2_hdrs_free releases everything; the list is empty afterwards. */
void h2_hdrs_free(struct h2_hdrs *h);

/* h2_hdrs_at gives the |i|th header of |h| (pointers into the arena). */
void h2_hdrs_at(const struct h2_hdrs *h, size_t i, const char **n, size_t *nl, const char **v,
                size_t *vl);

/* h2_connection_specific tells whether |n| is a connection-specific header (RFC 9113 8.2.2),
 * never carried over HTTP/2 (te: trailers is the caller's exception). */
bool h2_connection_specific(const char *n, size_t nl);

#endif
