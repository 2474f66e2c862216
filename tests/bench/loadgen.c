/* loadgen.c: the mTLS load generator behind `make bench`: N client connections on one epoll
 * loop per thread, each presenting a client certificate chain, measuring full and resumed
 * handshakes/s, keep-alive requests/s with latency percentiles, large-body MB/s, idle
 * connections held open, and over HTTP/2 (ALPN h2, nghttp2) keep-alive GETs and gRPC unary
 * calls with M concurrent streams per connection. Loopback targets only; every run is
 * bounded in time. */
#include <openssl/is_boringssl.h>
#include <openssl/base.h>
#if !defined(OPENSSL_IS_BORINGSSL)
#error "loadgen must be built against BoringSSL (-I/usr/include/android)"
#endif
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <nghttp2/nghttp2.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode {
    MODE_HANDSHAKE,
    MODE_RESUME,
    MODE_KEEPALIVE,
    MODE_LARGE,
    MODE_IDLE,
    MODE_H2,   /* keep-alive GETs over HTTP/2, o.streams in flight per connection */
    MODE_GRPC, /* gRPC unary calls over HTTP/2, the same way */
};
static const char *const mode_names[] = {"handshake", "resume", "keepalive", "large",
                                         "idle",      "h2",     "grpc"};
#define NUM_MODES 7
#define IS_H2(m) ((m) == MODE_H2 || (m) == MODE_GRPC)

/* ST_H2: the handshake is done and an nghttp2 client session runs the connection */
enum st { ST_CONNECT, ST_HANDSHAKE, ST_WRITE, ST_READ, ST_IDLE, ST_H2, ST_DEAD };
enum rp { RP_HEAD, RP_BODY, RP_CHUNK_SIZE, RP_CHUNK_DATA, RP_CHUNK_CRLF, RP_TRAILER, RP_DONE };

#define HEAD_MAX 8192
#define READ_BUF (64 * 1024)

struct opts {
    enum mode mode;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *addr_text;
    int conns;
    int threads;
    double duration; /* seconds measured (idle: seconds held after all are established) */
    double warmup;   /* seconds before measuring */
    int tls_max;     /* TLS1_3_VERSION or TLS1_2_VERSION */
    const char *cert, *key, *ca, *sni, *path, *label, *extra_header;
    bool pin;        /* verify the server chain once per thread, then compare the leaf's DER */
    int parallel;    /* idle: handshakes in flight at once */
    int streams;     /* h2, grpc: concurrent streams per connection */
    char xh_name[64];     /* h2, grpc: extra_header's name, lowercase */
    const char *xh_value; /* and its value */
};

/* One HTTP/2 request of a connection (h2, grpc); a connection has o.streams of them. */
struct h2req {
    int32_t id;       /* the stream's, 0 while the slot is free */
    int status;       /* :status */
    int grpc_status;  /* grpc-status from the trailers (or a trailers-only head), -1 if none */
    size_t sent;      /* grpc: request body bytes handed to nghttp2 */
    uint64_t t_start; /* ns */
};

struct slot {
    struct thread *t;
    int fd;
    SSL *ssl;
    SSL_SESSION *sess; /* resume: the newest session the server gave this slot */
    enum st st;
    uint32_t events;
    bool registered;
    bool close_after; /* the response said Connection: close */
    bool counted_hs;
    uint64_t t_start; /* connection or request start, ns */
    enum rp rp;
    int status;
    uint64_t body_left;
    size_t head_len;
    char head[HEAD_MAX];
    /* h2, grpc */
    nghttp2_session *h2;
    struct h2req *reqs; /* o.streams */
    unsigned char *out; /* bytes from nghttp2 not yet taken by SSL_write */
    size_t out_len, out_off, out_cap;
};

struct thread {
    int id;
    pthread_t tid;
    int epfd;
    SSL_CTX *ctx;
    struct slot *slots;
    int nslots;
    unsigned char *pin_der;
    size_t pin_len;
    char *rbuf;
    char req[1024];
    size_t reqlen;
    /* results */
    uint64_t ok, full, resumed, errors, bytes, drops;
    uint64_t total, total_bytes; /* also counting the warm-up: for CPU per operation */
    uint64_t *lat; /* ns */
    size_t nlat, caplat;
    char first_error[200];
    int in_flight; /* idle: connections not yet established */
    int established;
};

static struct opts o;
static uint64_t t_begin, t_measure, t_end; /* ns, CLOCK_MONOTONIC */
static atomic_int idle_established; /* idle: connections up now */
static atomic_int idle_settled;     /* idle: connections that came up or failed while opening */
static atomic_bool idle_ready;
static volatile sig_atomic_t stop_signal;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...);

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = calloc(1, n);
    if (p == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        abort();
    }
    return p;
}

static void on_signal(int sig)
{
    stop_signal = sig;
}

static bool in_window(uint64_t t)
{
    return t >= t_measure && t < t_end;
}

static void note_error(struct thread *t, const char *what)
{
    if (!in_window(now_ns()) && o.mode != MODE_IDLE)
        return;
    t->errors++;
    if (t->first_error[0] == '\0') {
        unsigned long e = ERR_peek_error();
        char ebuf[120] = "";
        if (e != 0)
            ERR_error_string_n(e, ebuf, sizeof(ebuf));
        snprintf(t->first_error, sizeof(t->first_error), "%s%s%s", what, ebuf[0] ? ": " : "",
                 ebuf);
        for (char *p = t->first_error; *p; p++)
            if (*p == ' ' || *p == '"')
                *p = '_';
    }
    ERR_clear_error();
}

static void add_latency(struct thread *t, uint64_t ns)
{
    if (t->nlat == t->caplat) {
        t->caplat = t->caplat ? t->caplat * 2 : 4096;
        uint64_t *n = realloc(t->lat, t->caplat * sizeof(*n));
        if (n == NULL)
            abort();
        t->lat = n;
    }
    t->lat[t->nlat++] = ns;
}

/* ---- TLS context ---------------------------------------------------------------------- */

static int verify_pinned(X509_STORE_CTX *store, void *arg)
{
    struct thread *t = arg;
    X509 *leaf = X509_STORE_CTX_get0_cert(store);
    unsigned char *der = NULL;
    int len = leaf != NULL ? i2d_X509(leaf, &der) : -1;
    if (len < 0)
        return 0;
    int ok;
    if (t->pin_der != NULL && (size_t)len == t->pin_len && memcmp(der, t->pin_der, t->pin_len) == 0) {
        ok = 1;
    } else {
        ok = X509_verify_cert(store) == 1;
        if (ok && o.pin) {
            OPENSSL_free(t->pin_der);
            t->pin_der = der;
            t->pin_len = (size_t)len;
            der = NULL;
        }
    }
    OPENSSL_free(der);
    return ok;
}

static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct slot *s = SSL_get_app_data(ssl);
    if (s == NULL || o.mode != MODE_RESUME)
        return 0;
    if (s->sess != NULL)
        SSL_SESSION_free(s->sess);
    s->sess = sess;
    return 1; /* we keep the reference */
}

static SSL_CTX *make_ctx(struct thread *t)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL)
        die("%s", "SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, (uint16_t)o.tls_max);
    if (o.tls_max == TLS1_2_VERSION)
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, o.cert) != 1)
        die("cannot load client certificate chain %s", o.cert);
    if (SSL_CTX_use_PrivateKey_file(ctx, o.key, SSL_FILETYPE_PEM) != 1)
        die("cannot load client key %s", o.key);
    if (SSL_CTX_load_verify_locations(ctx, o.ca, NULL) != 1)
        die("cannot load CA file %s", o.ca);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    X509_VERIFY_PARAM_set1_host(SSL_CTX_get0_param(ctx), o.sni, strlen(o.sni));
    SSL_CTX_set_cert_verify_callback(ctx, verify_pinned, t);
    if (o.mode == MODE_RESUME) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    if (IS_H2(o.mode) && SSL_CTX_set_alpn_protos(ctx, (const uint8_t *)"\x02h2", 3) != 0)
        die("%s", "SSL_CTX_set_alpn_protos failed");
    return ctx;
}

/* ---- connections ---------------------------------------------------------------------- */

static void set_events(struct slot *s, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.ptr = s};
    if (!s->registered) {
        if (epoll_ctl(s->t->epfd, EPOLL_CTL_ADD, s->fd, &e) < 0)
            die("epoll_ctl: %s", strerror(errno));
        s->registered = true;
    } else if (s->events != ev) {
        epoll_ctl(s->t->epfd, EPOLL_CTL_MOD, s->fd, &e);
    }
    s->events = ev;
}

static void slot_close(struct slot *s)
{
    if (s->h2 != NULL) {
        nghttp2_session_del(s->h2);
        s->h2 = NULL;
        memset(s->reqs, 0, sizeof(*s->reqs) * (size_t)o.streams);
        s->out_len = s->out_off = 0;
    }
    if (s->ssl != NULL) {
        if (s->st == ST_READ || s->st == ST_WRITE || s->st == ST_IDLE || s->st == ST_H2)
            SSL_shutdown(s->ssl); /* one close_notify, never waited for */
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd); /* also removes it from epoll */
        s->fd = -1;
    }
    s->registered = false;
    s->events = 0;
    s->st = ST_DEAD;
}

static void slot_open(struct slot *s)
{
    struct thread *t = s->t;
    s->fd = socket(o.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        note_error(t, "socket");
        s->st = ST_DEAD;
        return;
    }
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->t_start = now_ns();
    s->counted_hs = false;
    s->ssl = SSL_new(t->ctx);
    SSL_set_app_data(s->ssl, s);
    SSL_set_fd(s->ssl, s->fd);
    SSL_set_connect_state(s->ssl);
    SSL_set_tlsext_host_name(s->ssl, o.sni);
    if (o.mode == MODE_RESUME && s->sess != NULL)
        SSL_set_session(s->ssl, s->sess);
    if (connect(s->fd, (struct sockaddr *)&o.addr, o.addrlen) < 0 && errno != EINPROGRESS) {
        note_error(t, errno == ECONNREFUSED ? "connect_refused" : "connect");
        slot_close(s);
        return;
    }
    s->st = ST_CONNECT;
    set_events(s, EPOLLOUT);
}

static void begin_request(struct slot *s)
{
    s->st = ST_WRITE;
    s->rp = RP_HEAD;
    s->head_len = 0;
    s->status = 0;
    s->body_left = 0;
    s->close_after = false;
    if (o.mode == MODE_KEEPALIVE || o.mode == MODE_LARGE)
        s->t_start = now_ns();
}

/* Returns the value of header NAME in the head, or NULL. */
static const char *find_header(const char *head, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *p = strstr(head, "\r\n");
    while (p != NULL && p[2] != '\r') {
        const char *line = p + 2;
        const char *eol = strstr(line, "\r\n");
        if (eol == NULL)
            return NULL;
        if ((size_t)(eol - line) > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
            const char *v = line + nlen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            *vlen = (size_t)(eol - v);
            return v;
        }
        p = eol;
    }
    return NULL;
}

/* Consumes N response bytes at P. Returns 1 when the response is complete, 0 when more is
 * needed, -1 on a framing error. */
static int parse_response(struct slot *s, const char *p, size_t n)
{
    while (n > 0) {
        switch (s->rp) {
        case RP_HEAD: {
            size_t take = n;
            if (s->head_len + take > HEAD_MAX - 1)
                take = HEAD_MAX - 1 - s->head_len;
            if (take == 0)
                return -1;
            memcpy(s->head + s->head_len, p, take);
            size_t old = s->head_len;
            s->head_len += take;
            s->head[s->head_len] = '\0';
            char *end = strstr(s->head + (old > 3 ? old - 3 : 0), "\r\n\r\n");
            if (end == NULL) {
                p += take;
                n -= take;
                continue;
            }
            size_t hlen = (size_t)(end - s->head) + 4;
            size_t used = hlen - old;
            p += used;
            n -= used;
            end[2] = '\0';
            if (strncmp(s->head, "HTTP/1.", 7) != 0 || s->head_len < 12)
                return -1;
            s->status = atoi(s->head + 9);
            size_t vl = 0;
            const char *v = find_header(s->head, "connection", &vl);
            if (v != NULL && vl >= 5 && strncasecmp(v, "close", 5) == 0)
                s->close_after = true;
            v = find_header(s->head, "transfer-encoding", &vl);
            if (v != NULL && vl >= 7 && strncasecmp(v + vl - 7, "chunked", 7) == 0) {
                s->rp = RP_CHUNK_SIZE;
                s->head_len = 0;
                continue;
            }
            v = find_header(s->head, "content-length", &vl);
            if (v == NULL)
                return -1; /* read-until-close bodies are not supported */
            s->body_left = strtoull(v, NULL, 10);
            s->rp = s->body_left ? RP_BODY : RP_DONE;
            break;
        }
        case RP_BODY:
        case RP_CHUNK_DATA:
        case RP_CHUNK_CRLF: {
            /* skip body_left bytes, then: the end, a chunk's CRLF, or the next chunk size */
            size_t take = n < s->body_left ? n : (size_t)s->body_left;
            s->body_left -= take;
            p += take;
            n -= take;
            if (s->body_left > 0)
                break;
            if (s->rp == RP_CHUNK_DATA) {
                s->rp = RP_CHUNK_CRLF;
                s->body_left = 2;
            } else {
                s->rp = s->rp == RP_BODY ? RP_DONE : RP_CHUNK_SIZE;
            }
            break;
        }
        case RP_CHUNK_SIZE:
        case RP_TRAILER: {
            /* collect one line in head[] */
            const char *nl = memchr(p, '\n', n);
            size_t take = nl ? (size_t)(nl - p) + 1 : n;
            if (s->head_len + take > 256)
                return -1;
            memcpy(s->head + s->head_len, p, take);
            s->head_len += take;
            p += take;
            n -= take;
            if (nl == NULL)
                continue;
            s->head[s->head_len] = '\0';
            if (s->rp == RP_TRAILER) {
                bool empty = s->head_len <= 2;
                s->head_len = 0;
                if (empty)
                    s->rp = RP_DONE;
                break;
            }
            s->body_left = strtoull(s->head, NULL, 16);
            s->head_len = 0;
            s->rp = s->body_left ? RP_CHUNK_DATA : RP_TRAILER;
            break;
        }
        case RP_DONE:
            return -1; /* bytes after the response: nothing was pipelined */
        }
        if (s->rp == RP_DONE)
            return n == 0 ? 1 : -1;
    }
    return s->rp == RP_DONE;
}

/* One response is complete: count it, then close, send the next request or go idle. */
static void response_done(struct slot *s)
{
    struct thread *t = s->t;
    uint64_t now = now_ns();
    if (s->status == 200 && now < t_end)
        t->total++;
    if (s->status != 200) {
        char what[40];
        snprintf(what, sizeof(what), "http_status_%d", s->status);
        note_error(t, what);
    } else if (in_window(now) || o.mode == MODE_IDLE) {
        if (o.mode != MODE_IDLE) {
            t->ok++;
            add_latency(t, now - s->t_start);
        }
        if ((o.mode == MODE_HANDSHAKE || o.mode == MODE_RESUME) && s->counted_hs) {
            if (SSL_session_reused(s->ssl))
                t->resumed++;
            else
                t->full++;
        }
    }
    switch (o.mode) {
    case MODE_HANDSHAKE:
    case MODE_RESUME:
        slot_close(s);
        slot_open(s);
        return;
    case MODE_IDLE:
        s->st = ST_IDLE;
        set_events(s, EPOLLIN);
        t->in_flight--;
        t->established++;
        atomic_fetch_add(&idle_established, 1);
        atomic_fetch_add(&idle_settled, 1);
        return;
    default:
        if (s->close_after || s->status != 200) {
            slot_close(s);
            slot_open(s);
            return;
        }
        begin_request(s);
        set_events(s, EPOLLOUT);
        return;
    }
}

static void fail(struct slot *s, const char *what)
{
    note_error(s->t, what);
    bool idle = o.mode == MODE_IDLE;
    if (idle && s->st == ST_IDLE) {
        s->t->drops++;
        s->t->established--;
        atomic_fetch_sub(&idle_established, 1);
    }
    bool was_idle = s->st == ST_IDLE;
    slot_close(s);
    if (!idle) {
        slot_open(s);
    } else if (!was_idle) {
        /* an idle connection that failed while opening is not retried */
        s->t->in_flight--;
        atomic_fetch_add(&idle_settled, 1);
    }
}

static void ssl_wait(struct slot *s, int rc, const char *what)
{
    int err = SSL_get_error(s->ssl, rc);
    if (err == SSL_ERROR_WANT_READ)
        set_events(s, EPOLLIN);
    else if (err == SSL_ERROR_WANT_WRITE)
        set_events(s, EPOLLOUT);
    else if (err == SSL_ERROR_ZERO_RETURN)
        fail(s, "server_closed");
    else if (err == SSL_ERROR_SYSCALL)
        fail(s, errno == 0 ? "eof" : errno == ECONNRESET ? "reset" : what);
    else
        fail(s, what);
}

/* ---- HTTP/2 (h2, grpc) ---------------------------------------------------------------- */

/* The request heads, built once in main (nghttp2 copies them on every submit). */
static nghttp2_nv req_nv[8];
static size_t req_num_nv;

/* A gRPC unary request body: the 5-byte length-prefixed message header (not compressed,
 * length 7) and a protobuf message with field 1 = "hello". */
static const uint8_t grpc_body[] = {0, 0, 0, 0, 7, 0x0a, 5, 'h', 'e', 'l', 'l', 'o'};

#define H2_OUT_MAX (64 * 1024) /* bytes taken from nghttp2 before they are written */

static nghttp2_nv mk_nv(const char *name, const char *value)
{
    return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                        NGHTTP2_NV_FLAG_NONE};
}

static void h2_build_request(void)
{
    static char authority[300];
    snprintf(authority, sizeof(authority), "%s", o.sni);
    bool grpc = o.mode == MODE_GRPC;
    req_nv[req_num_nv++] = mk_nv(":method", grpc ? "POST" : "GET");
    req_nv[req_num_nv++] = mk_nv(":scheme", "https");
    req_nv[req_num_nv++] = mk_nv(":authority", authority);
    req_nv[req_num_nv++] = mk_nv(":path", o.path);
    req_nv[req_num_nv++] = mk_nv("user-agent", "certgate-loadgen");
    if (grpc) {
        req_nv[req_num_nv++] = mk_nv("content-type", "application/grpc");
        req_nv[req_num_nv++] = mk_nv("te", "trailers");
    }
    if (o.xh_name[0] != '\0')
        req_nv[req_num_nv++] = mk_nv(o.xh_name, o.xh_value);
}

static ssize_t grpc_read_body(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
                              uint32_t *flags, nghttp2_data_source *src, void *user)
{
    (void)h2, (void)id, (void)user;
    struct h2req *r = src->ptr;
    size_t n = sizeof(grpc_body) - r->sent;
    if (n > len)
        n = len;
    memcpy(buf, grpc_body + r->sent, n);
    r->sent += n;
    if (r->sent == sizeof(grpc_body))
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Starts a request on every free stream slot while the run lasts. Returns 0 or -1 (the slot
 * was failed). */
static int h2_refill(struct slot *s)
{
    uint64_t now = now_ns();
    if (now >= t_end)
        return 0;
    for (int i = 0; i < o.streams; i++) {
        struct h2req *r = &s->reqs[i];
        if (r->id != 0)
            continue;
        memset(r, 0, sizeof(*r));
        r->grpc_status = -1;
        r->t_start = now;
        nghttp2_data_provider body = {.source.ptr = r, .read_callback = grpc_read_body};
        int32_t id = nghttp2_submit_request(s->h2, NULL, req_nv, req_num_nv,
                                            o.mode == MODE_GRPC ? &body : NULL, r);
        if (id < 0) {
            fail(s, id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? "h2_ids_exhausted" : "h2_submit");
            return -1;
        }
        r->id = id;
    }
    return 0;
}

static int on_h2_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                        size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
                        void *user)
{
    (void)flags, (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2req *r = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (r == NULL)
        return 0;
    char v[16];
    size_t n = value_len < sizeof(v) - 1 ? value_len : sizeof(v) - 1;
    memcpy(v, value, n);
    v[n] = '\0';
    if (name_len == 7 && memcmp(name, ":status", 7) == 0)
        r->status = atoi(v);
    else if (name_len == 11 && memcmp(name, "grpc-status", 11) == 0)
        r->grpc_status = atoi(v);
    return 0;
}

static int on_h2_data(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                      size_t len, void *user)
{
    (void)h2, (void)flags, (void)id, (void)data;
    struct slot *s = user;
    s->t->total_bytes += len;
    if (in_window(now_ns()))
        s->t->bytes += len;
    return 0;
}

/* A stream ended: count it as a response (200, and for grpc grpc-status 0) or an error, and
 * free its slot for h2_refill. */
static int on_h2_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *user)
{
    struct slot *s = user;
    struct thread *t = s->t;
    struct h2req *r = nghttp2_session_get_stream_user_data(h2, id);
    if (r == NULL)
        return 0;
    uint64_t now = now_ns();
    char what[48];
    what[0] = '\0';
    if (error_code != NGHTTP2_NO_ERROR)
        snprintf(what, sizeof(what), "h2_stream_reset_%s", nghttp2_http2_strerror(error_code));
    else if (r->status != 200)
        snprintf(what, sizeof(what), "http_status_%d", r->status);
    else if (o.mode == MODE_GRPC && r->grpc_status != 0)
        snprintf(what, sizeof(what), "grpc_status_%d", r->grpc_status);
    if (what[0] != '\0') {
        note_error(t, what);
    } else {
        if (now < t_end)
            t->total++;
        if (in_window(now)) {
            t->ok++;
            add_latency(t, now - r->t_start);
        }
    }
    r->id = 0;
    return 0;
}

static nghttp2_session_callbacks *h2_cbs; /* h2_init's, shared read-only by the threads */

/* Called once in main, before the threads. */
static void h2_init(void)
{
    if (nghttp2_session_callbacks_new(&h2_cbs) != 0)
        die("%s", "nghttp2_session_callbacks_new failed");
    nghttp2_session_callbacks_set_on_header_callback(h2_cbs, on_h2_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(h2_cbs, on_h2_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(h2_cbs, on_h2_close);
    h2_build_request();
}

/* The handshake is done: check that the server chose h2, start the session and the first
 * o.streams requests. Returns 0, or -1 when the slot was failed. */
static int h2_start(struct slot *s)
{
    const uint8_t *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(s->ssl, &alpn, &alpn_len);
    if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
        fail(s, "server_did_not_select_h2");
        return -1;
    }
    if (s->reqs == NULL)
        s->reqs = xmalloc(sizeof(*s->reqs) * (size_t)o.streams);
    if (s->out == NULL) {
        s->out_cap = H2_OUT_MAX + 16 * 1024;
        s->out = xmalloc(s->out_cap);
    }
    if (nghttp2_session_client_new(&s->h2, h2_cbs, s) != 0)
        die("%s", "nghttp2_session_client_new failed");
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
    };
    nghttp2_submit_settings(s->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    s->st = ST_H2;
    return h2_refill(s);
}

/* Writes what nghttp2 has to send. Returns 0 when all is written, 1 when the socket is full
 * (EPOLLOUT armed), -1 when the slot was failed. */
static int h2_flush(struct slot *s)
{
    for (;;) {
        if (s->out_off < s->out_len) {
            /* BoringSSL writes all or nothing; a retry passes the same bytes */
            int rc = SSL_write(s->ssl, s->out + s->out_off, (int)(s->out_len - s->out_off));
            if (rc <= 0) {
                if (SSL_get_error(s->ssl, rc) == SSL_ERROR_WANT_WRITE) {
                    set_events(s, EPOLLOUT);
                    return 1;
                }
                ssl_wait(s, rc, "write");
                return -1;
            }
            s->out_off += (size_t)rc;
            continue;
        }
        s->out_len = s->out_off = 0;
        while (s->out_len < H2_OUT_MAX) {
            const uint8_t *p;
            ssize_t n = nghttp2_session_mem_send(s->h2, &p);
            if (n < 0) {
                fail(s, "h2_send");
                return -1;
            }
            if (n == 0)
                break;
            if (s->out_len + (size_t)n > s->out_cap) {
                s->out_cap = s->out_len + (size_t)n;
                s->out = realloc(s->out, s->out_cap);
                if (s->out == NULL)
                    abort();
            }
            memcpy(s->out + s->out_len, p, (size_t)n);
            s->out_len += (size_t)n;
        }
        if (s->out_len == 0)
            return 0;
    }
}

/* One event on an h2 connection: write what is pending, read what arrived, start new
 * requests for the streams that completed, until the socket has nothing more. */
static void h2_drive(struct slot *s)
{
    struct thread *t = s->t;
    for (;;) {
        int w = h2_flush(s);
        if (w != 0)
            return;
        if (!nghttp2_session_want_read(s->h2) && !nghttp2_session_want_write(s->h2)) {
            fail(s, "h2_session_ended"); /* GOAWAY, or a connection error */
            return;
        }
        int rc = SSL_read(s->ssl, t->rbuf, READ_BUF);
        if (rc <= 0) {
            ssl_wait(s, rc, "read");
            return;
        }
        ssize_t n = nghttp2_session_mem_recv(s->h2, (const uint8_t *)t->rbuf, (size_t)rc);
        if (n < 0) {
            fail(s, "h2_recv");
            return;
        }
        if (h2_refill(s) < 0)
            return;
    }
}

static void drive(struct slot *s)
{
    struct thread *t = s->t;
    for (;;) {
        switch (s->st) {
        case ST_CONNECT: {
            int err = 0;
            socklen_t l = sizeof(err);
            getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
            if (err != 0) {
                fail(s, err == ECONNREFUSED ? "connect_refused" : "connect");
                return;
            }
            struct sockaddr_storage peer;
            l = sizeof(peer);
            if (getpeername(s->fd, (struct sockaddr *)&peer, &l) < 0)
                return; /* a stale event: still connecting */
            s->st = ST_HANDSHAKE;
            continue;
        }
        case ST_HANDSHAKE: {
            int rc = SSL_do_handshake(s->ssl);
            if (rc != 1) {
                ssl_wait(s, rc, "handshake");
                return;
            }
            s->counted_hs = true;
            if (IS_H2(o.mode)) {
                if (h2_start(s) < 0)
                    return;
                continue;
            }
            if (o.mode == MODE_HANDSHAKE || o.mode == MODE_RESUME || o.mode == MODE_IDLE) {
                uint64_t ts = s->t_start;
                begin_request(s);
                s->t_start = ts;
            } else {
                begin_request(s);
            }
            continue;
        }
        case ST_WRITE: {
            int rc = SSL_write(s->ssl, t->req, (int)t->reqlen);
            if (rc <= 0) {
                ssl_wait(s, rc, "write");
                return;
            }
            s->st = ST_READ;
            continue;
        }
        case ST_READ:
        case ST_IDLE: {
            int rc = SSL_read(s->ssl, t->rbuf, READ_BUF);
            if (rc <= 0) {
                ssl_wait(s, rc, s->st == ST_IDLE ? "idle_read" : "read");
                return;
            }
            if (s->st == ST_IDLE) {
                fail(s, "unexpected_data");
                return;
            }
            if (o.mode == MODE_LARGE) {
                t->total_bytes += (uint64_t)rc;
                if (in_window(now_ns()))
                    t->bytes += (uint64_t)rc;
            }
            int done = parse_response(s, t->rbuf, (size_t)rc);
            if (done < 0) {
                fail(s, "bad_response");
                return;
            }
            if (done > 0) {
                response_done(s);
                if (s->st != ST_WRITE)
                    return; /* idle, reconnecting or dead */
            }
            continue;
        }
        case ST_H2:
            h2_drive(s);
            return;
        case ST_DEAD:
            return;
        }
    }
}

/* ---- threads -------------------------------------------------------------------------- */

static void *thread_main(void *arg)
{
    struct thread *t = arg;
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    t->ctx = make_ctx(t);
    t->rbuf = xmalloc(READ_BUF);
    t->reqlen = (size_t)snprintf(t->req, sizeof(t->req),
                                 "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: certgate-loadgen\r\n"
                                 "%s%s%s\r\n",
                                 o.path, o.sni, o.extra_header ? o.extra_header : "",
                                 o.extra_header ? "\r\n" : "",
                                 (o.mode == MODE_HANDSHAKE || o.mode == MODE_RESUME)
                                     ? "Connection: close\r\n"
                                     : "");
    for (int i = 0; i < t->nslots; i++) {
        t->slots[i].t = t;
        t->slots[i].fd = -1;
        t->slots[i].st = ST_DEAD;
    }
    int next = 0; /* idle: next slot to open */
    if (o.mode != MODE_IDLE)
        for (int i = 0; i < t->nslots; i++)
            slot_open(&t->slots[i]);
    struct epoll_event ev[256];
    uint64_t idle_deadline = 0;
    for (;;) {
        uint64_t now = now_ns();
        if (stop_signal)
            break;
        if (o.mode != MODE_IDLE && now >= t_end)
            break;
        if (o.mode == MODE_IDLE) {
            int per_thread = o.parallel / o.threads > 0 ? o.parallel / o.threads : 1;
            while (next < t->nslots && t->in_flight < per_thread) {
                struct slot *s = &t->slots[next++];
                t->in_flight++;
                slot_open(s);
                if (s->st == ST_DEAD) {
                    t->in_flight--;
                    atomic_fetch_add(&idle_settled, 1);
                }
            }
            if (atomic_load(&idle_ready)) {
                if (idle_deadline == 0)
                    idle_deadline = now + (uint64_t)(o.duration * 1e9);
                if (now >= idle_deadline)
                    break;
            } else if (now - t_begin > 120ull * 1000000000u) {
                note_error(t, "idle_setup_timeout");
                break;
            }
        }
        int n = epoll_wait(t->epfd, ev, 256, 50);
        for (int i = 0; i < n; i++) {
            struct slot *s = ev[i].data.ptr;
            if (s->fd < 0)
                continue;
            drive(s);
        }
        /* slots whose reopen failed (socket()/connect() errors) are retried here */
        if (o.mode != MODE_IDLE) {
            for (int i = 0; i < t->nslots; i++) {
                struct slot *s = &t->slots[i];
                if (s->st == ST_DEAD && now_ns() < t_end)
                    slot_open(s);
            }
        }
    }
    for (int i = 0; i < t->nslots; i++) {
        struct slot *s = &t->slots[i];
        slot_close(s);
        if (s->sess != NULL)
            SSL_SESSION_free(s->sess);
        free(s->reqs);
        free(s->out);
    }
    SSL_CTX_free(t->ctx);
    OPENSSL_free(t->pin_der);
    free(t->rbuf);
    close(t->epfd);
    return NULL;
}

/* Watches idle_established and prints the ready line once every connection is up. */
static void wait_idle_ready(void)
{
    uint64_t start = now_ns();
    while (!stop_signal) {
        int e = atomic_load(&idle_established);
        if (atomic_load(&idle_settled) >= o.conns) {
            printf("loadgen-ready mode=idle conns=%d failed=%d setup_s=%.2f\n", e, o.conns - e,
                   (double)(now_ns() - start) / 1e9);
            fflush(stdout);
            atomic_store(&idle_ready, true);
            return;
        }
        if (now_ns() - start > 120ull * 1000000000u)
            return;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* ---- options and report --------------------------------------------------------------- */

static double parse_duration(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0)
        die("bad duration %s", s);
    if (*end == '\0' || strcmp(end, "s") == 0)
        return v;
    if (strcmp(end, "ms") == 0)
        return v / 1000;
    if (strcmp(end, "m") == 0)
        return v * 60;
    die("bad duration %s", s);
    return 0;
}

static void parse_addr(const char *s)
{
    char host[128];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
        die("bad address %s (want HOST:PORT)", s);
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    int port = atoi(colon + 1);
    if (port <= 0 || port > 65535)
        die("bad port in %s", s);
    char *h = host;
    if (h[0] == '[') {
        h++;
        h[strlen(h) - 1] = '\0';
    }
    if (strcmp(h, "localhost") == 0)
        h = "127.0.0.1";
    struct sockaddr_in *a4 = (struct sockaddr_in *)&o.addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&o.addr;
    memset(&o.addr, 0, sizeof(o.addr));
    if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
        if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127)
            die("refusing %s: loopback targets only", s);
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        o.addrlen = sizeof(*a4);
    } else if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr))
            die("refusing %s: loopback targets only", s);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        o.addrlen = sizeof(*a6);
    } else {
        die("bad address %s (numeric loopback address or localhost)", s);
    }
    o.addr_text = s;
}

static void usage(void)
{
    fputs("usage: loadgen MODE [options]\n"
          "  MODE: handshake | resume | keepalive | large | idle | h2 | grpc\n"
          "        h2: keep-alive GETs over HTTP/2 (ALPN h2), -m streams in flight per\n"
          "        connection; grpc: the same with gRPC unary calls (POST, application/grpc,\n"
          "        te: trailers, a 12-byte message), counted when grpc-status is 0\n"
          "  -a HOST:PORT  target, loopback only (default 127.0.0.1:8443)\n"
          "  -c N          connections (default: handshake/resume 16, keepalive 50, large 4,\n"
          "                idle 1000, h2/grpc 10)\n"
          "  -m N          h2, grpc: concurrent streams per connection (default 5)\n"
          "  -t N          threads (default 1)\n"
          "  -d DURATION   measured time, e.g. 5s, 500ms (default 5s); idle: hold time after all\n"
          "                connections are up (SIGTERM ends it early)\n"
          "  -w DURATION   warm-up before measuring (default 0.5s; idle: none)\n"
          "  -V 1.2|1.3    highest TLS version offered (default 1.3)\n"
          "  -P N          idle: handshakes in flight while opening (default 64)\n"
          "  -p PATH       request path (default /, large: /1m, grpc: /bench.Bench/Unary)\n"
          "  -H 'K: V'     one extra request header (e.g. a forged x-forwarded-client-cert)\n"
          "  -s NAME       SNI and Host (default localhost)\n"
          "  -l LABEL      label echoed in the result line\n"
          "  --cert FILE   client certificate chain, leaf first (PEM)\n"
          "  --key FILE    client private key (PEM)\n"
          "  --ca FILE     CA file that verifies the server certificate\n"
          "  --no-pin      fully verify the server chain on every handshake (default: once per\n"
          "                thread, then the same leaf is accepted by DER comparison)\n"
          "Prints one line: loadgen mode=... rate=... (key=value pairs); total= counts the\n"
          "warm-up too (for CPU per operation), client_cpu_pct is this process's CPU use per\n"
          "thread (near 100: the load generator, not the server, may be the limit).\n",
          stderr);
    exit(2);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    int m;
    for (m = 0; m < NUM_MODES; m++)
        if (strcmp(argv[1], mode_names[m]) == 0)
            break;
    if (m == NUM_MODES)
        usage();
    o.mode = (enum mode)m;
    o.conns = -1;
    o.threads = 1;
    o.duration = 5;
    o.warmup = o.mode == MODE_IDLE ? 0 : 0.5;
    o.tls_max = TLS1_3_VERSION;
    o.sni = "localhost";
    o.label = "-";
    o.pin = true;
    o.parallel = 64;
    o.streams = 5;
    parse_addr("127.0.0.1:8443");
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-pin") == 0) {
            o.pin = false;
            continue;
        }
        if (v == NULL)
            usage();
        i++;
        if (strcmp(a, "-a") == 0)
            parse_addr(v);
        else if (strcmp(a, "-c") == 0)
            o.conns = atoi(v);
        else if (strcmp(a, "-t") == 0)
            o.threads = atoi(v);
        else if (strcmp(a, "-d") == 0)
            o.duration = parse_duration(v);
        else if (strcmp(a, "-w") == 0)
            o.warmup = parse_duration(v);
        else if (strcmp(a, "-V") == 0)
            o.tls_max = strcmp(v, "1.2") == 0 ? TLS1_2_VERSION
                        : strcmp(v, "1.3") == 0 ? TLS1_3_VERSION
                                                : (usage(), 0);
        else if (strcmp(a, "-P") == 0)
            o.parallel = atoi(v);
        else if (strcmp(a, "-m") == 0)
            o.streams = atoi(v);
        else if (strcmp(a, "-p") == 0)
            o.path = v;
        else if (strcmp(a, "-H") == 0)
            o.extra_header = v;
        else if (strcmp(a, "-s") == 0)
            o.sni = v;
        else if (strcmp(a, "-l") == 0)
            o.label = v;
        else if (strcmp(a, "--cert") == 0)
            o.cert = v;
        else if (strcmp(a, "--key") == 0)
            o.key = v;
        else if (strcmp(a, "--ca") == 0)
            o.ca = v;
        else
            usage();
    }
    if (o.cert == NULL || o.key == NULL || o.ca == NULL)
        die("%s", "--cert, --key and --ca are required");
    if (o.conns < 0) {
        static const int defaults[NUM_MODES] = {16, 16, 50, 4, 1000, 10, 10};
        o.conns = defaults[o.mode];
    }
    if (o.path == NULL)
        o.path = o.mode == MODE_LARGE ? "/1m" : o.mode == MODE_GRPC ? "/bench.Bench/Unary" : "/";
    if (o.conns <= 0 || o.threads <= 0 || o.threads > 64 || o.parallel <= 0 ||
        o.streams <= 0 || o.streams > 1000)
        usage();
    if (o.extra_header != NULL && IS_H2(o.mode)) {
        /* HTTP/2 header names are lowercase (RFC 9113 8.2.1) */
        const char *colon = strchr(o.extra_header, ':');
        size_t n = colon != NULL ? (size_t)(colon - o.extra_header) : 0;
        if (n == 0 || n >= sizeof(o.xh_name))
            die("bad header %s (want 'Name: value')", o.extra_header);
        for (size_t i = 0; i < n; i++)
            o.xh_name[i] = (char)tolower((unsigned char)o.extra_header[i]);
        o.xh_value = colon + 1;
        while (*o.xh_value == ' ' || *o.xh_value == '\t')
            o.xh_value++;
    }
    if (IS_H2(o.mode))
        h2_init();
    if (o.threads > o.conns)
        o.threads = o.conns;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    struct thread *th = xmalloc(sizeof(*th) * (size_t)o.threads);
    t_begin = now_ns();
    t_measure = t_begin + (uint64_t)(o.warmup * 1e9);
    t_end = t_measure + (uint64_t)(o.duration * 1e9);
    if (o.mode == MODE_IDLE)
        t_end = UINT64_MAX;
    for (int i = 0; i < o.threads; i++) {
        th[i].id = i;
        th[i].nslots = o.conns / o.threads + (i < o.conns % o.threads);
        th[i].slots = xmalloc(sizeof(struct slot) * (size_t)th[i].nslots);
        if (pthread_create(&th[i].tid, NULL, thread_main, &th[i]) != 0)
            die("%s", "pthread_create failed");
    }
    if (o.mode == MODE_IDLE)
        wait_idle_ready();
    for (int i = 0; i < o.threads; i++)
        pthread_join(th[i].tid, NULL);
    uint64_t t_stop = now_ns();

    uint64_t ok = 0, full = 0, resumed = 0, errors = 0, bytes = 0, drops = 0;
    uint64_t total = 0, total_bytes = 0;
    size_t nlat = 0;
    const char *first_error = "-";
    int held = 0;
    for (int i = 0; i < o.threads; i++) {
        ok += th[i].ok;
        full += th[i].full;
        resumed += th[i].resumed;
        errors += th[i].errors;
        bytes += th[i].bytes;
        drops += th[i].drops;
        total += th[i].total;
        total_bytes += th[i].total_bytes;
        nlat += th[i].nlat;
        held += th[i].established;
        if (th[i].first_error[0] && first_error[0] == '-')
            first_error = th[i].first_error;
    }
    uint64_t *lat = xmalloc(sizeof(uint64_t) * (nlat + 1));
    size_t k = 0;
    for (int i = 0; i < o.threads; i++) {
        if (th[i].nlat)
            memcpy(lat + k, th[i].lat, th[i].nlat * sizeof(uint64_t));
        k += th[i].nlat;
    }
    qsort(lat, nlat, sizeof(uint64_t), cmp_u64);
    double p50 = nlat ? (double)lat[nlat / 2] / 1e6 : 0;
    double p99 = nlat ? (double)lat[(nlat * 99) / 100] / 1e6 : 0;
    double pmax = nlat ? (double)lat[nlat - 1] / 1e6 : 0;

    double secs = o.mode == MODE_IDLE ? (double)(t_stop - t_begin) / 1e9 : o.duration;
    if (!(o.mode == MODE_IDLE) && stop_signal && t_stop < t_end)
        secs = t_stop > t_measure ? (double)(t_stop - t_measure) / 1e9 : 0;
    double rate;
    const char *unit;
    switch (o.mode) {
    case MODE_HANDSHAKE:
        rate = secs > 0 ? (double)full / secs : 0;
        unit = "handshakes/s";
        break;
    case MODE_RESUME:
        rate = secs > 0 ? (double)resumed / secs : 0;
        unit = "resumed/s";
        break;
    case MODE_LARGE:
        rate = secs > 0 ? (double)bytes / secs / 1e6 : 0;
        unit = "MB/s";
        break;
    case MODE_IDLE:
        rate = held;
        unit = "connections";
        break;
    default:
        rate = secs > 0 ? (double)ok / secs : 0;
        unit = "requests/s";
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    double wall = (double)(t_stop - t_begin) / 1e9;
    printf("loadgen mode=%s label=%s target=%s tls=%s conns=%d streams=%d threads=%d "
           "duration_s=%.2f "
           "rate=%.1f unit=%s ok=%llu full=%llu resumed=%llu errors=%llu drops=%llu "
           "bytes=%llu p50_ms=%.3f p99_ms=%.3f max_ms=%.3f total=%llu total_bytes=%llu "
           "wall_s=%.2f cpu_s=%.2f client_cpu_pct=%.0f first_error=%s\n",
           mode_names[o.mode], o.label, o.addr_text, o.tls_max == TLS1_3_VERSION ? "1.3" : "1.2",
           o.conns, IS_H2(o.mode) ? o.streams : 1, o.threads, secs, rate, unit,
           (unsigned long long)ok,
           (unsigned long long)full, (unsigned long long)resumed, (unsigned long long)errors,
           (unsigned long long)drops, (unsigned long long)bytes, p50, p99, pmax,
           (unsigned long long)total, (unsigned long long)total_bytes, wall, cpu,
           wall > 0 ? 100 * cpu / wall / o.threads : 0, first_error);
    fflush(stdout);
    for (int i = 0; i < o.threads; i++) {
        free(th[i].slots);
        free(th[i].lat);
    }
    free(th);
    free(lat);
    return ok > 0 || held > 0 ? 0 : 1;
}
