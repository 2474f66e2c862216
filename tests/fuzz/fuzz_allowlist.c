/* fuzz_allowlist.c: libFuzzer target for the allowlist: the subject canonicaliser and the JSON
 * state file. The input, up to its first NUL, is a subject: when allowlist_canon accepts it, its
 * canonical form must canonicalise to itself (a canonical form is a subject, and the same one).
 * The whole input is also the state file (read through a memfd, as allowlist_init reads a file):
 * when it is accepted, the JSON that allowlist_json writes (what the admin API serves and the
 * file gets on the next change) must load again and write the same JSON, and every subject in it
 * must be found by its canonical form. Without -DFUZZING, replay.c replays a corpus. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tls/allowlist.h"
#include "core/buf.h"
#include "fuzz_check.h"
#include "core/log.h"

static int state_fd = -1;
static char state_path[64];

static void setup(void)
{
    if (state_fd >= 0)
        return;
    log_set_level(LOG_LEVEL_ERROR);
    state_fd = memfd_create("allowlist-fuzz", MFD_CLOEXEC);
    CHECK(state_fd >= 0);
    snprintf(state_path, sizeof(state_path), "/proc/self/fd/%d", state_fd);
}

static void set_file(const void *data, size_t size)
{
    CHECK(ftruncate(state_fd, 0) == 0);
    CHECK(size == 0 || pwrite(state_fd, data, size, 0) == (ssize_t)size);
}

static void check_canon(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    char *subject = strndup((const char *)data, nul ? (size_t)(nul - data) : size);
    CHECK(subject != NULL);
    char *canon = NULL, *again = NULL;
    int rc = allowlist_canon(subject, &canon);
    CHECK(rc == 0 || rc == -EINVAL);
    CHECK((rc == 0) == (canon != NULL));
    if (rc == 0) {
        if (allowlist_canon(canon, &again) != 0 || strcmp(canon, again) != 0) {
            fprintf(stderr, "canonical form of \"%s\" is \"%s\", which canonicalises to %s%s%s\n",
                    subject, canon, again ? "\"" : "", again ? again : "(refused)",
                    again ? "\"" : "");
            abort();
        }
    }
    free(subject);
    free(canon);
    free(again);
}

/* Reads the strings of a JSON array that allowlist_json wrote, with the escapes it uses, and
 * checks that each is in the set by its canonical form. A member with a \u escape above 0x7f
 * (not expected from a subject) is only skipped. */
static void check_members(const char *json, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (json[i] != '"')
            continue;
        struct buf s = {0};
        bool skip = false;
        for (i++; i < len && json[i] != '"'; i++) {
            char c = json[i];
            if (c == '\\') {
                CHECK(i + 1 < len);
                char e = json[++i];
                if (e == 'u') {
                    CHECK(i + 4 < len);
                    char hex[5] = {json[i + 1], json[i + 2], json[i + 3], json[i + 4], 0};
                    unsigned long v = strtoul(hex, NULL, 16);
                    i += 4;
                    skip |= v >= 0x80 || v == 0;
                    c = (char)v;
                } else {
                    const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
                    const char *k = e != '\0' ? strchr(from, e) : NULL;
                    CHECK(k != NULL);
                    c = to[k - from];
                }
            }
            buf_append(&s, &c, 1);
        }
        CHECK(i < len);
        buf_append(&s, "", 1);
        char *canon = NULL;
        if (!skip) {
            CHECK(allowlist_canon(buf_data(&s), &canon) == 0);
            CHECK(allowlist_contains(canon));
        }
        free(canon);
        buf_free(&s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    setup();
    check_canon(data, size);

    char err[512] = "";
    set_file(data, size);
    int rc = allowlist_init(state_path, err, sizeof(err));
    if (rc != 0) {
        CHECK(rc == -EINVAL && strncmp(err, state_path, strlen(state_path)) == 0);
        allowlist_cleanup();
        return 0;
    }
    struct buf first = {0}, second = {0};
    allowlist_json(&first);
    set_file(buf_data(&first), buf_used(&first));
    rc = allowlist_init(state_path, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "allowlist_json wrote a file that does not load: %s\n%.*s\n", err,
                (int)buf_used(&first), buf_data(&first));
        abort();
    }
    allowlist_json(&second);
    if (buf_used(&first) != buf_used(&second) ||
        memcmp(buf_data(&first), buf_data(&second), buf_used(&first)) != 0) {
        fprintf(stderr, "the allowlist does not round-trip:\n%.*s\n---\n%.*s\n",
                (int)buf_used(&first), buf_data(&first), (int)buf_used(&second),
                buf_data(&second));
        abort();
    }
    check_members(buf_data(&first), buf_used(&first));
    allowlist_cleanup();
    buf_free(&first);
    buf_free(&second);
    return 0;
}
