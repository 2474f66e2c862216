/* conn.h: one client connection and, while an exchange (or a relay) runs, its upstream
 * connection: the state machine, the single timer, the four buffers (named by direction, as in
 * hitch) and the close protocol. http.c reads and writes these fields while it parses (and
 * only records: no socket I/O); upstream.c drives the upstream side; every event callback ends
 * in conn_event_end, where the I/O happens. */
#ifndef CERTGATE_CONN_H
#define CERTGATE_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <llhttp.h>
#include <uv.h>

#include "core/buf.h"
#include "core/config.h"
#include "http/body.h"
#include "http/exchange_state.h"
#include "http/head.h"
#include "net/proxy_proto.h"

struct worker;
struct tls_gen;
struct ssl_st;
struct upconn;
struct h2_conn;

enum conn_state {
    CONN_PROXY_HEADER, /* reading a PROXY protocol header (accept_proxy_protocol) */
    CONN_HANDSHAKE, /* TLS handshake in progress */
    CONN_HEAD,      /* waiting for or reading a request head */
    CONN_PROXY,     /* a request and its response are in flight */
    CONN_TUNNEL,    /* raw bytes both ways: tls/tcp relay, or after a 101 */
    CONN_H2,        /* HTTP/2: h2/h2_server.c's session carries the exchanges */
    CONN_FLUSH,     /* writing what is left to the client, then closing */
    CONN_CLOSING,   /* handles are closing; memory goes in the last close callback */
};

enum up_state {
    UP_NONE,       /* no upstream connection */
    UP_CONNECTING, /* connect(2) in progress */
    UP_OPEN,       /* connected */
};

/* High-water mark of a direction's queue: above it the other side stops reading. */
#define CONN_HWM (64 * 1024)
/* One read's worth. */
#define CONN_READ_SIZE (16 * 1024)
/* One read from an upstream that streams a body or a tunnel. */
#define CONN_STREAM_READ_SIZE (64 * 1024)
/* Reads per poll event and side, so that one busy connection cannot starve the others. */
#define CONN_READS_PER_EVENT 8

struct conn {
    struct worker *worker;
    struct conn *next, *prev; /* the worker's list */
    const struct listener_config *lc;
    size_t index; /* listener index */
    struct tls_gen *gen;
    uint64_t checked_gen_id; /* newest generation the client was verified under */
    bool untrusted;          /* a newer generation refused the client */
    uint64_t allow_version;  /* allowlist version allow_ok was decided under; 0: not yet */
    bool allow_ok;           /* the client's subject is in the allowlist */
    enum conn_state state;

    int fd;
    union proxy_proto_addr peer; /* the socket's peer, from accept */
    struct proxy_proto_hdr *pp;  /* a PROXY protocol header naming the client; else NULL */
    uv_poll_t poll;
    int poll_events;
    struct ssl_st *ssl;
    bool client_eof;
    bool client_write_blocked; /* the last write would have blocked */
    bool client_read_wants_write;
    bool hs_want_write;
    bool hs_verify_pending; /* an OCSP query of the handshake runs: the socket is not polled */
    bool tls_flush_pending; /* session tickets still to be sent */
    bool lingering;      /* response sent and SHUT_WR done: discard input until EOF */
    bool client_shut_wr; /* relay: our side of the client connection is shut */

    struct upconn *up; /* upstream.c's; NULL when there is no upstream connection */
    enum up_state up_state;
    bool up_eof;
    bool up_write_blocked;
    bool up_shut_wr; /* SHUT_WR sent to the upstream (relay half-close) */

    uv_timer_t timer;
    uint64_t timer_base; /* when the current timeout started */
    int pending_closes;

    struct buf cin;  /* decrypted bytes from the client, not yet parsed */
    struct buf uout; /* bytes for the upstream */
    struct buf uin;  /* bytes from the upstream, not yet parsed */
    struct buf cout; /* bytes for the client */

    /* HTTP: the exchange in flight (one at a time in HTTP/1). */
    struct exchange ex;
    struct h2_conn *h2;      /* HTTP/2 (CONN_H2): the session and its streams */
    struct conn *h2_touched_next; /* the worker's list of connections to flush */
    bool h2_touched;
    unsigned h2_streams; /* open HTTP/2 streams: the connection is idle when 0 */
    bool h2_head_open;   /* an HTTP/2 header block is being read (request_head_timeout) */
    bool draining;
    unsigned num_requests;
    uint64_t bytes_in, bytes_out;
    char *client_subject; /* cached RFC 2253 subject of the client leaf */
    char *cc_headers;     /* cached client-cert header lines of this hop */
    char *cc_element;     /* cached xfcc element of this hop */
    bool cc_computed;
    bool has_client_cert;
    uint64_t start; /* base_now_us() at accept */
};

/* What the layers above the socket layer do for a connection. The socket layer calls up only
 * through this table (as h2o's sockets call their protocol handler): the exchange
 * (exchange/http.c), the upstream side (upstream/upstream.c) and the server
 * (server/listener.c), which registers it with conn_set_handlers before the workers start. */
struct conn_handlers {
    /* The HTTP/1 exchange: prepare a new connection's parsers; parse what c->cin holds (heads
     * re-serialised to c->uout, bodies re-framed); parse what c->uin holds into c->cout; the
     * upstream closed. They only record: the I/O is conn_event_end's. */
    void (*http_init)(struct conn *c);
    void (*http_request)(struct conn *c);
    void (*http_response)(struct conn *c);
    void (*http_upstream_eof)(struct conn *c);
    /* The upstream side: connect (0, or a negative errno once it answered or closed), write
     * c->uout, close, end an exchange (back to the pool or closed), watch the socket. */
    int (*upstream_connect)(struct conn *c);
    void (*upstream_flush)(struct conn *c);
    void (*upstream_close)(struct conn *c);
    void (*upstream_exchange_done)(struct conn *c);
    void (*upstream_update_poll)(struct conn *c);
    /* HTTP/2 (h2/h2_server.c), in CONN_H2: start the session (ALPN chose h2); parse what
     * c->cin holds; queue frames to c->cout (returns false once the session is over and
     * everything is queued: the connection then says goodbye); whether the client may be read;
     * GOAWAY for a draining connection; free the session and its streams (the connection is
     * closing). Only h2_output runs inside conn_event_end; the others only record. */
    void (*h2_start)(struct conn *c);
    void (*h2_input)(struct conn *c);
    bool (*h2_output)(struct conn *c);
    bool (*h2_want_read)(struct conn *c);
    void (*h2_drain)(struct conn *c);
    void (*h2_close)(struct conn *c);
    /* The server: |c| of worker |w| is gone (its memory is about to be freed). */
    void (*closed)(struct worker *w, struct conn *c);
};

/* conn_set_handlers registers |h| (borrowed: static) for every connection. Call it once,
 * before the workers start. */
void conn_set_handlers(const struct conn_handlers *h);

/* conn_handlers returns the registered table, for the layers between (upstream.c hands the
 * upstream's bytes to the exchange through it). */
const struct conn_handlers *conn_handlers(void);

/* conn_set_state moves |c| to state |to|, aborting on a transition the design does not allow,
 * and arms the timer with the new state's timeout. */
void conn_set_state(struct conn *c, enum conn_state to);

/* conn_accept takes ownership of the socket |fd| accepted from |peer| and starts the
 * connection. */
void conn_accept(struct worker *w, size_t index, int fd, const struct sockaddr *peer,
                 socklen_t peer_len);

/* CONN_ADDR_TEXT_MAX is the size conn_client_addr_text needs: "[v6]:port" and a NUL. */
#define CONN_ADDR_TEXT_MAX (INET6_ADDRSTRLEN + 9)

/* conn_client_addr returns the effective client address of |c|: the source named by the PROXY
 * protocol header it started with, else the socket's peer. Borrowed from |c|; its family is
 * AF_INET or AF_INET6, or AF_UNSPEC when unknown. |*out_len| (optional) gets its length. */
const struct sockaddr *conn_client_addr(const struct conn *c, socklen_t *out_len);

/* conn_client_addr_text writes conn_client_addr as "192.0.2.1:4711" or "[2001:db8::1]:4711",
 * or without the port ("192.0.2.1", "2001:db8::1", for X-Forwarded-For) when |with_port| is
 * false, into |out| (CONN_ADDR_TEXT_MAX bytes suffice); "unknown" when there is none. */
void conn_client_addr_text(const struct conn *c, char *out, size_t len, bool with_port);

/* conn_drain makes an idle connection close now and a busy one close after its response. */
void conn_drain(struct conn *c);

/* conn_error answers |status| with a short body and closes after it (the response is queued;
 * conn_event_end writes it); when a response is already on its way it closes at once. */
void conn_error(struct conn *c, int status);

/* conn_request_done is called by http.c when the whole request has been read. */
void conn_request_done(struct conn *c);

/* conn_http_cycle_done is called by http.c when a request and its response are complete. */
void conn_http_cycle_done(struct conn *c);

/* conn_still_trusted tells whether the client still verifies under the current generation
 * (CA store, CRLs and policy can change under a live connection). One verification per
 * connection per reload; the common case (no reload since the handshake) is one atomic load. */
bool conn_still_trusted(struct conn *c);

/* conn_init_hooks lets the TLS verifier continue a handshake after an asynchronous OCSP
 * query (tls_set_async_hooks). Call once before the workers start. */
void conn_init_hooks(void);

/* conn_allowed tells whether the client may be served under its listener's
 * require_allowed_subject: always when the listener does not require it; otherwise when its
 * leaf subject is in the allowlist. Decided again only after the allowlist changed. */
bool conn_allowed(struct conn *c);

/* conn_recheck closes a tunnel (WebSocket, tls relay) or an HTTP/2 connection whose client no
 * longer verifies or is no longer allowed. */
void conn_recheck(struct conn *c);

/* One exchange's access-log line (conn_access_log_exchange): |req_log| holds the request's
 * fields (method .. request_id) or is empty; |response_from| is "upstream" or "certgate";
 * |protocol| ("HTTP/2") is added when not NULL. */
struct conn_exchange_log {
    const struct buf *req_log;
    int status;
    uint64_t req_start;
    uint64_t bytes_in, bytes_out;
    const char *response_from;
    const char *protocol;
};

/* conn_access_log_exchange writes the access-log line of one exchange of |c| (an HTTP/2
 * stream; HTTP/1's own go through conn.c) and counts it in the metrics. */
void conn_access_log_exchange(struct conn *c, const struct conn_exchange_log *x);

/* conn_tunnel switches to raw relaying (after a 101). */
void conn_tunnel(struct conn *c);

/* The rest is for upstream.c, which drives the upstream side of the same connection. */

/* conn_now_ms returns the worker loop's time in milliseconds (what the timer measures). */
uint64_t conn_now_ms(struct conn *c);

/* conn_arm_timer (re)starts the connection's timer for the current state's timeout, counted
 * from c->timer_base. */
void conn_arm_timer(struct conn *c);

/* conn_activity restarts the inactivity timeout of a streaming state after bytes moved. */
void conn_activity(struct conn *c);

/* conn_event_end ends every event callback of the connection (client or upstream socket,
 * timer, asynchronous verification): the one place where the writes the event made possible
 * are done (upstream, then client), bytes already decrypted inside the SSL are taken (they
 * raise no poll event), and both sockets are watched for what the connection can use next.
 * Parsers and the functions they call only record what they want (bytes in a buffer, a new
 * state); they never read, write or close a socket. A no-op on a closing connection. */
void conn_event_end(struct conn *c);

/* conn_client_flush writes c->cout to the client until the socket would block (called by
 * conn_event_end and on a writable event). Once it is empty, a closing connection says goodbye
 * (close_notify, SHUT_WR) and lingers, and a tunnel checks whether both sides are done. May
 * close |c|. */
void conn_client_flush(struct conn *c);

/* conn_tunnel_maybe_done half-closes the client side of a tunnel once the upstream has ended
 * and everything is written, and closes the connection when both sides are done. */
void conn_tunnel_maybe_done(struct conn *c);

/* conn_close closes |c| at once (no response); its memory goes in the last close callback. A
 * no-op on a connection that is already closing. */
void conn_close(struct conn *c);

#endif
