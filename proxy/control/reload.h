/* reload.h: keeping the generation in step with the files (CONTRACT section 4). Watches the
 * credentials and CA store directories, debounces their events, rescans them periodically by
 * content hash, and swaps in a new generation built beside the old one. Main loop only. */
#ifndef CERTGATE_RELOAD_H
#define CERTGATE_RELOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/buf.h"

struct server;

/* reload_init builds the first generation for srv->cfg into srv->gen (generation 1) and
 * remembers the content hash of the watched files. Returns 0 or a negative errno with a
 * message in |err|. */
int reload_init(struct server *srv, char *err, size_t err_len);

/* reload_start watches both trees on |loop| and starts the periodic rescan. Directories that do
 * not exist yet are retried on a timer. Returns 0 or a negative errno. */
int reload_start(uv_loop_t *loop);

/* reload_run reloads now on behalf of |source| ("watch", "poll", "signal", "admin"). Unless
 * |force|, nothing is rebuilt when the content hash of the watched files is unchanged since the
 * last attempt. Returns 0 after a swap, 1 when skipped as unchanged, or a negative errno with
 * the reason in |err| (the current generation stays). Logs and counts the result. */
int reload_run(const char *source, bool force, char *err, size_t err_len);

/* reload_stop closes the watchers and timers (their memory is freed by the loop's close
 * callbacks) and releases the current generation's bookkeeping, not the generation itself. */
void reload_stop(void);

/* reload_generation returns the number of the current generation (1 after reload_init). */
uint64_t reload_generation(void);

/* reload_result_json appends the JSON object of the last reload: {"time":...,"source":...,
 * "result":"success"|"failure"|"unchanged","error":...,"generation":N,"duration_ms":N}, or null
 * when no reload happened since the start. */
void reload_result_json(struct buf *out);

/* reload_metrics appends the gauges certgate_generation, certgate_last_reload_success and
 * certgate_last_reload_timestamp_seconds in the Prometheus text format. */
void reload_metrics(struct buf *out);

/* reload_num_watches returns the number of directories watched now (for /status and tests). */
size_t reload_num_watches(void);

/* reload_watches_json appends a JSON array of the directories watched now. */
void reload_watches_json(struct buf *out);

#endif
