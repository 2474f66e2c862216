/* fuzz_admin.c: libFuzzer target for the admin API's request parser and router (admin_handle),
 * as on a connection: the first input byte picks the side (admin.address or public_address) and
 * whether admin.token_file is set; the rest is the request head, cut after its first blank line
 * as admin.c's reader does. Every answer is one complete HTTP/1.1 response with a known status
 * and a Content-Length that matches its body (none for HEAD); the public side never answers 2xx
 * outside /healthz, /ready and /metrics; with a token file, nothing mutates without the token.
 * The server state is that of tests/unit/test_admin.c: a real reload generation, no allowlist
 * file. Without -DFUZZING, replay.c replays a corpus. */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "control/admin.h"
#include "tls/allowlist.h"
#include "core/buf.h"
#include "core/config.h"
#include "fuzz_check.h"
#include "server/listener.h"
#include "core/log.h"
#include "core/metrics.h"
#include "control/reload.h"

static struct config cfg;
static struct server srv;
static char token_path[64];

static void remove_token(void)
{
    unlink(token_path);
}

static void setup(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    log_set_level(LOG_LEVEL_ERROR);
    cfg.path = "fuzz.yaml";
    srv.cfg = &cfg;
    uv_mutex_init(&srv.gen_lock);
    char err[256];
    CHECK(reload_init(&srv, err, sizeof(err)) == 0);
    atomic_store(&srv.ready, true);
    metrics_init(&cfg);
    CHECK(allowlist_init(NULL, err, sizeof(err)) == 0);
    admin_set_server(&srv);
    /* A token the fuzzer cannot learn from comparisons: it is compared in constant time. */
    snprintf(token_path, sizeof(token_path), "/tmp/certgate-fuzz-token-%d", (int)getpid());
    FILE *f = fopen(token_path, "w");
    CHECK(f != NULL);
    fputs("d41d8cd98f00b204e9800998ecf8427e\n", f);
    fclose(f);
    atexit(remove_token);
}

static bool public_path(const char *head)
{
    static const char *const ok[] = {"/healthz", "/ready", "/metrics"};
    const char *sp = strchr(head, ' ');
    for (size_t i = 0; sp != NULL && i < 3; i++) {
        size_t n = strlen(ok[i]);
        if (strncmp(sp + 1, ok[i], n) == 0 && (sp[1 + n] == ' ' || sp[1 + n] == '?'))
            return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 16384)
        return 0;
    setup();
    bool public_side = data[0] & 1, with_token = data[0] & 2;
    const char *head = (const char *)data + 1;
    size_t len = size - 1;
    const char *blank = memmem(head, len, "\r\n\r\n", 4);
    if (blank != NULL)
        len = (size_t)(blank - head) + 4;
    cfg.admin_token_file = with_token ? token_path : NULL;
    uint64_t gen_before = metrics_reload_count("admin", true) + metrics_reload_count("admin", false);

    struct buf out = {0};
    admin_handle(head, len, public_side, &out);
    buf_append(&out, "", 1);
    const char *r = buf_data(&out);
    size_t rlen = buf_used(&out) - 1;
    CHECK(rlen > 13 && memcmp(r, "HTTP/1.1 ", 9) == 0);
    int code = atoi(r + 9);
    CHECK(code >= 200 && code <= 599 && r[12] == ' ');
    const char *end = strstr(r, "\r\n\r\n");
    CHECK(end != NULL);
    const char *cl = strcasestr(r, "\r\nContent-Length: ");
    bool is_head = len >= 5 && memcmp(head, "HEAD ", 5) == 0;
    if (code == 204) { /* no body, no length */
        CHECK(cl == NULL && end + 4 == r + rlen);
    } else {
        CHECK(cl != NULL && cl < end);
        if (!is_head)
            CHECK((size_t)atol(cl + 18) == rlen - (size_t)(end + 4 - r));
        else /* HEAD: no body, but admin.c sends its error text (Connection: close) */
            CHECK(end + 4 == r + rlen || code >= 400);
    }
    char *nul_head = strndup(head, len);
    CHECK(nul_head != NULL);
    if (public_side && code < 300)
        CHECK(public_path(nul_head));
    free(nul_head);
    uint64_t gen_after = metrics_reload_count("admin", true) + metrics_reload_count("admin", false);
    if (with_token)
        CHECK(gen_after == gen_before); /* the fuzzer does not know the token */
    if (public_side)
        CHECK(gen_after == gen_before);
    buf_free(&out);
    return 0;
}
