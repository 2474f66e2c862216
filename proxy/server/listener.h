/* listener.h: the server (configuration, current generation, counters) and its worker loops.
 * Every worker thread runs its own libuv loop with its own SO_REUSEPORT socket per listener,
 * so accepting needs no lock and connections never move between threads. */
#ifndef CERTGATE_LISTENER_H
#define CERTGATE_LISTENER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/config.h"
#include "net/worker.h"

struct conn;
struct tls_gen;
struct server;

/* One listening socket of one worker. */
struct lsock {
    struct worker *worker;
    size_t index; /* into cfg->listeners */
    int fd;
    uv_poll_t poll;
    bool paused; /* accepting stopped: connection limit or EMFILE */
};

/* listener_bind opens every worker's sockets (SO_REUSEPORT) for every listener. Returns 0 or a
 * negative errno with a message in |err|. */
int listener_bind(struct server *srv, char *err, size_t err_len);

/* listener_start starts the worker threads. Returns 0 or a negative errno. */
int listener_start(struct server *srv);

/* listener_close_soon starts the shutdown delay: workers keep accepting, but every connection,
 * open or new, closes after its next response (which says Connection: close), so clients of a
 * load balancer that has not yet seen /ready fail move elsewhere without a refused connect. */
void listener_close_soon(struct server *srv);

/* listener_drain asks every worker to stop accepting and to finish in-flight requests. */
void listener_drain(struct server *srv);

/* listener_gen_changed tells every worker that a new generation is in place, so that tunnels
 * whose client no longer verifies are closed (keep-alive connections check on their next
 * request). Call it after swapping srv->gen. */
void listener_gen_changed(struct server *srv);

/* listener_join waits for every worker thread to finish and frees the workers. */
void listener_join(struct server *srv);

#endif
