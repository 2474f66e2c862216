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

struct worker {
    struct server *srv;
    unsigned id;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup; /* drain request from the main thread */
    uv_async_t regen;  /* a new generation was swapped in */
    uv_timer_t resume; /* retries accepting after EMFILE */
    struct lsock *socks;
    size_t num_socks;
    struct conn *conns; /* every open connection, for draining */
    size_t num_conns;
    bool draining;
    bool closing;              /* shutdown delay: new and open connections end after a response */
    bool accept_paused_logged; /* accept_paused said for this episode */
    void *scratch; /* http.c's per-worker parse scratch */
    struct upconn *up_pool; /* idle upstream connections (upstream.c) */
    unsigned num_up_pool;
};

struct server {
    const struct config *cfg;
    _Atomic(struct tls_gen *) gen;
    uv_mutex_t gen_lock; /* serialises taking a reference against a swap */
    struct worker *workers;
    size_t num_workers;
    atomic_size_t num_conns; /* over all workers, for limits.max_connections */
    atomic_bool ready;
    atomic_int stop_phase; /* 0 running, 1 shutdown delay (still accepting), 2 draining */
    struct sockaddr_storage *bound; /* per listener: the address actually bound (port 0) */
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

/* listener_gen returns the current generation with a reference the caller owns. */
struct tls_gen *listener_gen(struct server *srv);

/* listener_conn_closed is called by conn.c when a connection is gone. */
void listener_conn_closed(struct worker *w, struct conn *c);

#endif
