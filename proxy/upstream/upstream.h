/* upstream.h: a connection's side towards the application: connecting (TCP or unix socket,
 * PROXY protocol v2 for relays), the worker's pool of idle kept-alive upstream connections,
 * moving bytes to and from the upstream socket, and turning its failures into 502/503. */
#ifndef CERTGATE_UPSTREAM_H
#define CERTGATE_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

struct config_endpoint;
struct conn;
struct listener_config;
struct worker;

/* The upstream socket lives in its own allocation so that a connection can drop one upstream
 * and open another while libuv is still closing the first. */
struct upconn {
    uv_poll_t poll;
    struct conn *c; /* NULL while it waits in the worker's pool, or carries an HTTP/2 stream */
    struct worker *worker;
    struct upconn *next; /* the pool's list */
    size_t index;        /* listener it belongs to */
    void *owner;         /* an HTTP/2 stream's exchange using it (h2/h2_up1.c), else NULL */
    uv_poll_cb owner_cb; /* the owner's socket events (the watch's callback stays upstream's) */
    int fd;
    int events; /* what the watch asks for; changed only through upstream_watch */
};

/* Idle upstream connections a worker keeps for its next client connections. */
#define UPSTREAM_POOL_MAX 64

/* upstream_connect gives |c|'s exchange an upstream connection for the request bytes queued in
 * c->uout: an idle one from the worker's pool, or a new connection to the listener's upstream
 * (http.c calls it once a request head is parsed and consumed; conn.c for tls and tcp relays).
 * It writes nothing: conn_event_end does. Returns 0, or a negative errno after it has already
 * queued a 503 or closed |c|. */
int upstream_connect(struct conn *c);

/* upstream_flush writes |c|'s upstream-bound bytes (c->uout) until the socket would block, and
 * half-closes the upstream in a tunnel whose client has finished. An error answers 502 (or
 * replays the request once on a fresh connection, see upstream.c). */
void upstream_flush(struct conn *c);

/* upstream_close closes |c|'s upstream connection, if any, and forgets the response bytes
 * read from it. */
void upstream_close(struct conn *c);

/* upstream_exchange_done is called when |c|'s request and response are complete: an upstream
 * that may take another request goes back to the worker's pool, for the next request of any
 * client connection; any other is closed. */
void upstream_exchange_done(struct conn *c);

/* upstream_update_poll starts or stops watching |c|'s upstream socket for what the connection
 * can use now (writability while connecting or blocked, readability while there is room). */
void upstream_update_poll(struct conn *c);

/* The pieces of the above that h2/h2_up1.c uses for the HTTP/1.1 upstream connection of one
 * HTTP/2 stream (it watches the socket with its own callback while it owns it). */

/* upstream_socket_connect starts a non-blocking connect(2) to |ep| (TCP with TCP_NODELAY, or
 * a unix socket). Returns the socket, connected or connecting (wait for writability, then read
 * SO_ERROR; the caller owns it), or a negative errno. The h2c side (h2/h2_upc_conn.c)
 * watches it with a poll of its own. */
int upstream_socket_connect(const struct config_endpoint *ep);

/* upstream_dial starts a non-blocking connect to listener |lc|'s upstream (TCP or unix socket)
 * for worker |w|: on success |*out| gets a new upconn (owned by the caller, not yet watched,
 * fd possibly still connecting: wait for writability and check SO_ERROR) and it returns 0;
 * else it logs upstream_connect_failed and returns a negative errno. */
int upstream_dial(struct worker *w, const struct listener_config *lc, struct upconn **out);

/* upstream_pool_take takes an idle upstream of listener |index| from |w|'s pool, peeked first
 * (one that spoke or closed is retired), or returns NULL. The caller owns it; it is still
 * watched for reading with the pool's callback until the caller starts its own watch. */
struct upconn *upstream_pool_take(struct worker *w, size_t index);

/* upstream_pool_put parks |up| (idle, its exchange complete) in |w|'s pool for listener
 * |index| and watches it with the pool's callback. Returns false (|up| still the caller's)
 * when the worker is draining or the pool is full. */
bool upstream_pool_put(struct worker *w, struct upconn *up, size_t index);

/* upstream_watch makes |up|'s socket watch ask for |events| (UV_READABLE, UV_WRITABLE, 0). The
 * watch's callback is upstream's for every owner (an HTTP/1 connection, the pool, an HTTP/2
 * stream through owner_cb), so nothing changes when the events stay the same: this libuv
 * turns every uv_poll_start into an EPOLL_CTL_DEL and an ADD, whatever it watched before. */
void upstream_watch(struct upconn *up, int events);

/* upstream_upconn_close closes |up| (not in the pool); its memory goes in the close callback. */
void upstream_upconn_close(struct upconn *up);

/* upstream_pool_close_all closes the idle upstream connections of worker |w|. */
void upstream_pool_close_all(struct worker *w);

#endif
