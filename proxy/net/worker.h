/* worker.h: a worker loop and the server it belongs to, as the data path sees them: the loop,
 * the open connections, the pool of idle upstream connections, the parse scratch, the current
 * generation and the counters. server/listener.c creates and runs them; the layers below it
 * (net, upstream, exchange) only read and update these fields. */
#ifndef CERTGATE_WORKER_H
#define CERTGATE_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "core/config.h"

struct conn;
struct lsock;
struct server;
struct tls_gen;
struct upconn;

struct worker {
    struct server *srv;
    unsigned id;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup; /* drain request from the main thread */
    uv_async_t regen;  /* a new generation was swapped in */
    uv_timer_t resume; /* retries accepting after EMFILE */
    uv_timer_t h2_trim; /* idle HTTP/2 connections give memory back (h2/h2_server.c) */
    uv_check_t h2_flush; /* after each round's socket events: what they gave HTTP/2 clients */
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
    struct conn *h2_touched; /* client connections an upstream event changed (h2/h2_server.c) */
    void *h2c; /* the h2c upstream connections, one per listener (h2/h2_upc.c) */
};

struct server {
    const struct config *cfg;
    _Atomic(struct tls_gen *) gen;
    uv_mutex_t gen_lock; /* serialises taking a reference against a swap */
    struct worker *workers;
    size_t num_workers;
    atomic_size_t num_conns; /* over all workers, for limits.max_connections */
    /* Upstream connections held by HTTP/2 streams (h2/h2_up1.c), over all workers: bounded by
     * limits.max_connections too, as an HTTP/1.1 client connection holds at most one. */
    atomic_size_t num_h2_upstreams;
    atomic_bool ready;
    atomic_int stop_phase; /* 0 running, 1 shutdown delay (still accepting), 2 draining */
    struct sockaddr_storage *bound; /* per listener: the address actually bound (port 0) */
};

/* server_gen returns the current generation of |srv| with a reference the caller owns. */
struct tls_gen *server_gen(struct server *srv);

#endif
