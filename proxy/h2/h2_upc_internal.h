/* h2_upc_internal.h: what the two files of the h2c upstream side share. h2_upc.c owns the
 * streams (nghttp2's callbacks, the backend the client side calls); h2_upc_conn.c owns the
 * connections (connect, socket I/O, timers, the end of every event). */
#ifndef CERTGATE_H2_UPC_INTERNAL_H
#define CERTGATE_H2_UPC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "core/buf.h"
#include "h2/h2_stream.h"

/* A stream's receive window: what may wait in s->resp_body. */
#define UPC_STREAM_WINDOW H2_STREAM_HWM
/* The connection's receive window: effectively off, so that slow streams cannot stall the
 * others; memory is bounded by the stream windows. */
#define UPC_CONN_WINDOW ((1 << 30) - 1)
/* A refused stream is sent again at most this often. */
#define UPC_RETRIES 2

struct config_limits;
struct upc;

/* One stream as the upstream side sees it: s->be_data. After the client side is done with it
 * (s == NULL: response over, failed, aborted or re-sent), it stays as a tombstone until nghttp2
 * closes the upstream stream, because nghttp2 still holds it as stream user data and as the
 * data source. */
struct upc_stream {
    struct h2_stream *s;
    struct upc *u;                  /* the connection it was submitted on; NULL while queued */
    struct upc_stream *next, *prev; /* u's streams, or the worker's retry queue (next only) */
    int32_t id;
    unsigned retries;
    uint64_t deadline;   /* upstream_response_timeout, or once the head is out the stall
                            timeout (h2_upc_conn_set_stall) (loop time, ms); 0: not running */
    size_t unconsumed;   /* DATA bytes handed to the client side, window not yet reopened */
    size_t body_taken;   /* request body bytes taken from s->req_body */
    size_t block_bytes;  /* of the header block being read */
    struct h2_hdrs hdrs; /* the regular fields of the header block being read */
    int status;          /* its :status */
    bool headers_sent;   /* the request HEADERS went to the socket buffer */
    bool req_sent;       /* the request's last frame was produced */
    bool head_seen;      /* the final response head went to the client side */
    bool deferred;       /* the data source said NGHTTP2_ERR_DEFERRED */
    bool waiting;        /* on u's wait list: not submitted to nghttp2 yet (id 0) */
    struct upc_stream *wnext; /* u's wait list */
};

/* One h2c connection. Its memory goes in the last close callback of poll and timer. */
struct upc {
    uv_poll_t poll;
    uv_timer_t timer;
    struct worker *w;
    struct upc_set *set;
    size_t index; /* listener */
    nghttp2_session *sess;
    int fd;
    int events;
    int pending_closes;
    bool connected;
    bool retiring;    /* takes no new stream */
    bool goaway;      /* the upstream sent GOAWAY */
    const char *lost; /* why the socket or the session is over (close at the end of the
                       * event); NULL while it goes on */
    uint64_t connect_deadline;
    uint64_t timer_due;
    struct buf out; /* frames for the socket */
    struct upc_stream *streams;
    size_t num_live; /* streams with s != NULL */
    size_t num_open; /* streams submitted to nghttp2 and not closed yet (tombstones too) */
    /* Streams beyond the upstream's SETTINGS_MAX_CONCURRENT_STREAMS wait here, in order, and
     * are submitted as streams close: a stream whose client goes away while it waits is freed
     * at once (nghttp2 would keep a queued request HEADERS, cancelled, until a slot frees). */
    struct upc_stream *wait_head, *wait_tail;
    struct upc *next, *prev;
};

/* w->h2c. */
struct upc_set {
    size_t num_listeners;
    struct upc **cur;         /* per listener: the connection new streams go to, or NULL */
    struct upc *all;          /* every open connection */
    struct upc_stream *retry; /* streams to submit again at the end of the event */
};

/* --- h2_upc.c: the streams ----------------------------------------------------------------- */

/* h2_upc_callbacks sets the callbacks of an h2c session (user data: its struct upc). */
void h2_upc_callbacks(nghttp2_session_callbacks *cb);

/* h2_upc_streams_lost detaches every stream of |u| (closing) and frees them: a live one fails
 * with |status|, or goes to the retry queue when the upstream never saw it. */
void h2_upc_streams_lost(struct upc *u, int status);

/* h2_upc_streams_expire answers 504 for the streams of |u| whose response head is late at
 * |now| (and resets them upstream); returns the next deadline, or 0. */
uint64_t h2_upc_streams_expire(struct upc *u, uint64_t now);

/* h2_upc_streams_goaway sends the streams that nghttp2 still holds back on |u| (which got
 * GOAWAY) to the retry queue. */
void h2_upc_streams_goaway(struct upc *u);

/* h2_upc_streams_promote submits the streams waiting on |u| while the upstream's concurrency
 * limit allows (at the end of every event of |u|); on a connection that takes no new stream,
 * they go to the retry queue. */
void h2_upc_streams_promote(struct upc *u);

/* h2_upc_streams_retry submits the streams of the retry queue again (or fails them: 503). */
void h2_upc_streams_retry(struct worker *w, struct upc_set *set);

/* h2_upc_streams_close_all fails what waits in the retry queue (the worker is stopping). */
void h2_upc_streams_close_all(struct upc_set *set);

/* --- h2_upc_conn.c: the connections -------------------------------------------------------- */

/* h2_upc_conn_get returns the connection new streams of listener |index| go to, opening one
 * (and the worker's set) when there is none; NULL with a negative errno in |*err| when the
 * connect failed at once. */
struct upc *h2_upc_conn_get(struct worker *w, size_t index, int *err);

/* h2_upc_conn_retire: |u| takes no new stream (GOAWAY, stream ids used up); it closes once its
 * last live stream is done. */
void h2_upc_conn_retire(struct upc *u);

/* h2_upc_conn_update_poll watches |u|'s socket for what it can use now (writability while
 * connecting or while nghttp2 has frames to send). */
void h2_upc_conn_update_poll(struct upc *u);

/* h2_upc_conn_set_deadline starts (or restarts) |us|'s response timeout. */
void h2_upc_conn_set_deadline(struct upc *u, struct upc_stream *us);

/* h2_upc_conn_set_stall: once |us|'s response head is out, its deadline is idle_timeout from
 * the last time the client took response bytes, while the client side holds some (|held|): a
 * client that stops reading (and PINGs to keep its connection) must not hold an upstream
 * stream, and a slot of the upstream's concurrency limit, for ever. */
void h2_upc_conn_set_stall(struct upc *u, struct upc_stream *us, bool held);

/* h2_upc_conn_limits and h2_upc_conn_name: the configuration |u| runs under. */
const struct config_limits *h2_upc_conn_limits(const struct upc *u);
const char *h2_upc_conn_name(const struct upc *u);

#endif
