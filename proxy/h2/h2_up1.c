/* h2_up1.c: placeholder until the upstream side lands: every stream gets 503. */
#include <errno.h>

#include "h2/h2_stream.h"

static int start(struct h2_stream *s)
{
    (void)s;
    return -ENOSYS;
}

static void nothing(struct h2_stream *s)
{
    (void)s;
}

const struct h2_backend h2_up1_backend = {start, nothing, nothing, nothing};
