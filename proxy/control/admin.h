/* admin.h: the admin API of CONTRACT section 7 (/healthz, /ready, /metrics, /status,
 * POST /reload, the allowlist calls) on the main loop, with the optional bearer token for
 * mutating calls. */
#ifndef CERTGATE_ADMIN_H
#define CERTGATE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "core/buf.h"

struct server;

/* admin_start listens on cfg->admin_address and cfg->admin_public_address, each when set
 * (nothing happens when both are off). POST /reload calls reload_run. Returns 0 or a negative
 * errno with a message in |err|. */
int admin_start(uv_loop_t *loop, struct server *srv, char *err, size_t err_len);

/* admin_stop closes the admin listeners and their open connections. */
void admin_stop(void);

/* admin_handle answers one complete request: |head| is the request head up to and including
 * the blank line (|head_len| bytes), as received on admin.public_address when |public_side|,
 * else on admin.address. The whole response (status line, headers, body) is appended to |out|.
 * Exposed for unit tests; needs admin_start's |srv| (admin_set_server). */
void admin_handle(const char *head, size_t head_len, bool public_side, struct buf *out);

/* admin_set_server sets the server admin_handle reports on without listening (for tests). */
void admin_set_server(struct server *srv);

#endif
