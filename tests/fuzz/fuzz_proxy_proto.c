/* fuzz_proxy_proto.c: libFuzzer target for the PROXY protocol parser. The input is the first bytes
 * of a connection. The parser must answer within the input, never claim more bytes than it was
 * given or than a header may have, name an error when it refuses, and agree with itself on every
 * shorter prefix of a header it accepts. Without -DFUZZING, main() replays a corpus. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "net/proxy_proto.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * PROXY_PROTO_MAX)
        return 0;
    /* A copy of exactly |size| bytes, so that ASan sees any read past the end. */
    uint8_t *copy = calloc(1, size ? size : 1);
    CHECK(copy != NULL);
    if (size > 0)
        memcpy(copy, data, size);
    struct proxy_proto_hdr hdr;
    long r = proxy_proto_parse(&hdr, copy, size);
    CHECK(r == 0 || r == -ENOENT || r == -EINVAL || r == -EMSGSIZE || r > 0);
    if (r == 0)
        CHECK(size < PROXY_PROTO_MAX);
    if (r == -EINVAL)
        CHECK(hdr.error != NULL);
    if (r > 0) {
        CHECK((size_t)r <= size && (size_t)r <= PROXY_PROTO_MAX);
        CHECK(hdr.version == 1 || hdr.version == 2);
        if (hdr.has_addrs)
            CHECK(hdr.src.sa.sa_family == hdr.dst.sa.sa_family &&
                  (hdr.src.sa.sa_family == AF_INET || hdr.src.sa.sa_family == AF_INET6));
        struct proxy_proto_hdr again;
        CHECK(proxy_proto_parse(&again, copy, (size_t)r) == r);
        for (size_t k = 0; k < (size_t)r; k++)
            CHECK(proxy_proto_parse(&again, copy, k) == 0);
    }
    free(copy);
    return 0;
}
