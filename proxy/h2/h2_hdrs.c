/* h2_hdrs.c: header lists of HTTP/2 streams (h2_hdrs.h). */
#include "h2/h2_hdrs.h"

#include <stdlib.h>
#include <string.h>

#include "core/base.h"
#include "http/message.h"

void h2_hdrs_add(struct h2_hdrs *h, const char *name, size_t name_len, const char *value,
                 size_t value_len)
{
    if (h->num == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->offs = xrealloc(h->offs, h->cap * 4 * sizeof(uint32_t));
    }
    uint32_t *o = &h->offs[h->num * 4];
    o[0] = (uint32_t)buf_used(&h->arena);
    o[1] = (uint32_t)name_len;
    buf_append(&h->arena, name, name_len);
    o[2] = (uint32_t)buf_used(&h->arena);
    o[3] = (uint32_t)value_len;
    buf_append(&h->arena, value, value_len);
    h->num++;
    free(h->nv);
    h->nv = NULL;
}

const nghttp2_nv *h2_hdrs_nv(struct h2_hdrs *h)
{
    if (h->nv != NULL || h->num == 0)
        return h->nv;
    h->nv = xcalloc(h->num, sizeof(*h->nv));
    uint8_t *base = (uint8_t *)buf_data(&h->arena);
    for (size_t i = 0; i < h->num; i++) {
        const uint32_t *o = &h->offs[i * 4];
        h->nv[i].name = base + o[0];
        h->nv[i].namelen = o[1];
        h->nv[i].value = base + o[2];
        h->nv[i].valuelen = o[3];
        h->nv[i].flags = NGHTTP2_NV_FLAG_NONE;
    }
    return h->nv;
}

void h2_hdrs_free(struct h2_hdrs *h)
{
    buf_free(&h->arena);
    free(h->offs);
    free(h->nv);
    memset(h, 0, sizeof(*h));
}

void h2_hdrs_at(const struct h2_hdrs *h, size_t i, const char **n, size_t *nl, const char **v,
                   size_t *vl)
{
    const char *base = buf_data(&h->arena);
    const uint32_t *o = &h->offs[i * 4];
    *n = base + o[0];
    *nl = o[1];
    *v = base + o[2];
    *vl = o[3];
}

bool h2_connection_specific(const char *n, size_t nl)
{
    return http_name_is(n, nl, "connection") || http_name_is(n, nl, "keep-alive") ||
           http_name_is(n, nl, "proxy-connection") || http_name_is(n, nl, "transfer-encoding") ||
           http_name_is(n, nl, "upgrade") || http_name_is(n, nl, "te");
}
