/* admin.h: the admin API of CONTRACT section 7 on the main loop. */
#ifndef CERTGATE_ADMIN_H
#define CERTGATE_ADMIN_H

#include <uv.h>

struct server;

/* admin_start listens on cfg->admin_address when set. |reload| is called for POST /reload and
 * returns 0 or a negative errno with a message in its |err|. Returns 0 or a negative errno. */
int admin_start(uv_loop_t *loop, struct server *srv,
                int (*reload)(struct server *srv, const char *source, char *err, size_t err_len),
                char *err, size_t err_len);

/* admin_stop closes the admin listener and its connections. */
void admin_stop(void);

#endif
