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

#include "proxy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

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

#ifndef FUZZING
static int fuzz_replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    static uint8_t data[2 * PROXY_PROTO_MAX];
    size_t len = fread(data, 1, sizeof(data), f);
    fclose(f);
    LLVMFuzzerTestOneInput(data, len);
    return 0;
}

/* main replays every file named on the command line, or found directly in a named directory. */
int main(int argc, char **argv)
{
    size_t num = 0;
    int failed = 0;
    for (int a = 1; a < argc; a++) {
        struct stat st;
        if (stat(argv[a], &st) != 0) {
            perror(argv[a]);
            failed = 1;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            failed |= fuzz_replay_file(argv[a]) != 0;
            num++;
            continue;
        }
        DIR *dir = opendir(argv[a]);
        if (dir == NULL) {
            perror(argv[a]);
            failed = 1;
            continue;
        }
        struct dirent *de;
        while ((de = readdir(dir)) != NULL) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[a], de->d_name);
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            failed |= fuzz_replay_file(path) != 0;
            num++;
        }
        closedir(dir);
    }
    printf("fuzz_proxy_proto: replayed %zu inputs\n", num);
    return failed;
}
#endif
