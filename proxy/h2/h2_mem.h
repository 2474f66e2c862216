/* h2_mem.h: the memory of one nghttp2 session. nghttp2 keeps a 16 KiB frame buffer per
 * session for its whole life (twice what an idle HTTP/1.1 connection costs in all) and a 4 KiB
 * stream table. Allocations of a page or more come from their own pages, which an idle
 * connection gives back to the kernel (h2_mem_trim): the frame buffer's content is dead
 * between frames, and a page of another block is given back only when it holds nothing but
 * zeros (an empty stream table), which is what the kernel's fresh page holds too. Untouched
 * pages cost nothing. */
#ifndef CERTGATE_H2_MEM_H
#define CERTGATE_H2_MEM_H

#include <stdbool.h>
#include <stddef.h>

#include <nghttp2/nghttp2.h>

#define H2_MEM_SLOTS 6

struct h2_mem {
    nghttp2_mem mem; /* what nghttp2_session_*_new3 takes; mem_user_data is this */
    struct {
        void *p;
        size_t len;
        bool scratch; /* the frame buffer: dead between frames */
    } big[H2_MEM_SLOTS];
    bool trimmed; /* given back since h2_mem_busy */
};

/* h2_mem_init prepares |m| (it must not move while a session uses it). */
void h2_mem_init(struct h2_mem *m);

/* h2_mem_busy: the session is about to work again (trimming may happen once more). */
void h2_mem_busy(struct h2_mem *m);

/* h2_mem_trim gives back what an idle session does not need. The caller knows the session is
 * idle: no stream is open and nothing waits to be sent. */
void h2_mem_trim(struct h2_mem *m);

#endif
