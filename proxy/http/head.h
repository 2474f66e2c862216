/* head.h: the line scanner every HTTP/1 head goes through before llhttp sees it (request heads
 * from clients, response heads from the upstream). Pure: a state over a growing buffer, no
 * connection, no socket. */
#ifndef CERTGATE_HEAD_H
#define CERTGATE_HEAD_H

#include <stddef.h>
#include <stdint.h>

/* Where a scan of one head stands; zero it to start a new head. Offsets are relative to the
 * start of the buffer, which must not move under a scan (only grow at the end). */
struct head_scan {
    size_t line;      /* where the current, incomplete line starts */
    size_t seen;      /* bytes already searched for the line's LF */
    unsigned lines;   /* complete lines so far, the start line included */
    uint64_t scanned; /* bytes looked at so far: the tests check it stays linear */
};

/* Why a head is refused. */
enum head_error {
    HEAD_BAD = -1,       /* bare LF, bare CR, NUL, obs-fold, "Name :" or an empty name */
    HEAD_LONG_LINE = -2, /* the start line does not fit in |max_head| */
    HEAD_TOO_BIG = -3,   /* the head does not fit in |max_head| or has too many fields */
};

/* head_scan looks at the complete lines of the head at the start of |p| (|len| bytes so far),
 * continuing where |hs| stopped. Returns the head's length once its empty line has arrived, 0
 * when more is needed, or an enum head_error. Linear in the head's size however it is split:
 * every byte is searched once and every complete line checked once. */
long head_scan(struct head_scan *hs, const char *p, size_t len, size_t max_head,
               unsigned max_fields);

#endif
