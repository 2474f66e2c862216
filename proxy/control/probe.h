/* probe.h: `certgate probe`, the container health check: asks the running instance's /ready over
 * its admin listener, without curl in the image. */
#ifndef CERTGATE_PROBE_H
#define CERTGATE_PROBE_H

#include "core/config.h"

/* probe_run asks GET /ready on cfg->admin_address (or admin.public_address when only that is
 * set), connecting to loopback when the address is a wildcard, and says why on stderr when it
 * fails. Returns 0 when the answer is 200, 1 when it is anything else or there is no answer
 * within |timeout_ms|, 2 when the configuration names no admin address a probe can reach. */
int probe_run(const struct config *cfg, unsigned timeout_ms);

#endif
