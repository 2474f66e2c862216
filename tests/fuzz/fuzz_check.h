/* fuzz_check.h: CHECK for every fuzz target: an invariant that fails aborts, which
 * libFuzzer reports as a crash and the replay drivers as a failed run. */
#ifndef CERTGATE_FUZZ_CHECK_H
#define CERTGATE_FUZZ_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
