/* grpc_upstream.c: the h2c gRPC responder behind `make bench`'s gRPC figure: cleartext HTTP/2
 * with prior knowledge (nghttp2), one epoll loop, answering every request with a gRPC unary
 * response (200, application/grpc, one 12-byte message, trailers grpc-status: 0) once the
 * request has ended. The response header xfcc-seen says what arrived in the request's
 * x-forwarded-client-cert (absent, forged: the bench client's own copy, or present), so that
 * run.sh can check the forwarding on the gRPC path. Listens on a loopback address only. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#define READ_BUF (64 * 1024)
#define OUT_MAX (64 * 1024) /* bytes taken from nghttp2 before they are written */
#define MAX_CONNS 4096

/* The response message: the gRPC length prefix (not compressed, 7 bytes) and a protobuf
 * message with field 1 = "world". */
static const uint8_t grpc_reply[] = {0, 0, 0, 0, 7, 0x0a, 5, 'w', 'o', 'r', 'l', 'd'};

struct hconn {
    int fd;
    nghttp2_session *h2;
    uint32_t events;
    unsigned char *out; /* bytes from nghttp2 not yet written */
    size_t out_len, out_off, out_cap;
};

static int epfd;
static int num_conns;
static volatile sig_atomic_t stop_signal;
static nghttp2_session_callbacks *cbs;
static uint8_t rbuf[READ_BUF];
static bool verbose;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static void *xmalloc(size_t n)
{
    void *p = calloc(1, n);
    if (p == NULL)
        abort();
    return p;
}

static void hconn_free(struct hconn *c)
{
    nghttp2_session_del(c->h2);
    close(c->fd); /* also leaves epoll */
    free(c->out);
    free(c);
    num_conns--;
}

static void set_events(struct hconn *c, uint32_t ev)
{
    if (c->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
    c->events = ev;
}

/* The response body: the message, then the trailers (submitted here, as nghttp2 allows). */
static ssize_t read_reply(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
                          uint32_t *flags, nghttp2_data_source *src, void *user)
{
    (void)src, (void)user;
    if (len < sizeof(grpc_reply))
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* never: a frame holds at least 16 KB */
    memcpy(buf, grpc_reply, sizeof(grpc_reply));
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    static const nghttp2_nv trailers[] = {
        {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, NGHTTP2_NV_FLAG_NONE},
    };
    if (nghttp2_submit_trailer(h2, id, trailers, 1) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (ssize_t)sizeof(grpc_reply);
}

/* What a request's x-forwarded-client-cert held, kept as the stream's user data. */
enum xfcc_seen { XFCC_ABSENT, XFCC_FORGED, XFCC_PRESENT };
static const char *const xfcc_words[] = {"absent", "forged", "present"};

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
                     void *user)
{
    (void)flags, (void)user;
    if (verbose)
        fprintf(stderr, "grpc_upstream: stream %d %.*s: %.*s\n", frame->hd.stream_id,
                (int)name_len, name, (int)value_len, value);
    if (name_len == 23 && memcmp(name, "x-forwarded-client-cert", 23) == 0) {
        /* the bench client sends By=forged;...: a proxy that kept it let it through */
        bool forged = memmem(value, value_len, "forged", 6) != NULL;
        intptr_t seen = (intptr_t)nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
        if (seen != XFCC_FORGED)
            seen = forged ? XFCC_FORGED : XFCC_PRESENT;
        nghttp2_session_set_stream_user_data(h2, frame->hd.stream_id, (void *)seen);
    }
    return 0;
}

/* The request ended (END_STREAM on its HEADERS or DATA): answer it. */
static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    (void)user;
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    intptr_t seen = (intptr_t)nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    const char *word = xfcc_words[seen];
    nghttp2_nv head[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"xfcc-seen", (uint8_t *)word, 9, strlen(word), NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider body = {.read_callback = read_reply};
    if (nghttp2_submit_response(h2, frame->hd.stream_id, head, 3, &body) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

/* Writes what nghttp2 has to send. Returns 0 when all is written, 1 when the socket is full,
 * -1 on an error. */
static int flush(struct hconn *c)
{
    for (;;) {
        while (c->out_off < c->out_len) {
            ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN)
                return 1;
            if (n <= 0)
                return -1;
            c->out_off += (size_t)n;
        }
        c->out_len = c->out_off = 0;
        while (c->out_len < OUT_MAX) {
            const uint8_t *p;
            ssize_t n = nghttp2_session_mem_send(c->h2, &p);
            if (n < 0)
                return -1;
            if (n == 0)
                break;
            if (c->out_len + (size_t)n > c->out_cap) {
                c->out_cap = c->out_len + (size_t)n;
                c->out = realloc(c->out, c->out_cap);
                if (c->out == NULL)
                    abort();
            }
            memcpy(c->out + c->out_len, p, (size_t)n);
            c->out_len += (size_t)n;
        }
        if (c->out_len == 0)
            return 0;
    }
}

/* One event: read what arrived, write what is pending; closes the connection when the
 * session is over or the peer went away. */
static void drive(struct hconn *c)
{
    for (;;) {
        ssize_t n = read(c->fd, rbuf, sizeof(rbuf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0 || nghttp2_session_mem_recv(c->h2, rbuf, (size_t)n) < 0) {
            hconn_free(c);
            return;
        }
        if ((size_t)n < sizeof(rbuf))
            break;
    }
    int w = flush(c);
    if (w < 0 || (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))) {
        hconn_free(c);
        return;
    }
    set_events(c, EPOLLIN | (w > 0 ? EPOLLOUT : 0));
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (num_conns >= MAX_CONNS) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct hconn *c = xmalloc(sizeof(*c));
        c->fd = fd;
        c->events = EPOLLIN;
        num_conns++;
        if (nghttp2_session_server_new(&c->h2, cbs, c) != 0)
            abort();
        nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000}};
        nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 1);
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
            hconn_free(c);
            continue;
        }
        drive(c); /* the server preface goes out now */
    }
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "";
    verbose = argc > 2 && strcmp(argv[2], "-v") == 0;
    char host[64];
    const char *colon = strrchr(addr, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host)) {
        fprintf(stderr, "usage: grpc_upstream 127.0.0.1:PORT [-v]\n");
        return 2;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    int port = atoi(colon + 1);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 || (ntohl(sa.sin_addr.s_addr) >> 24) != 127 ||
        port <= 0 || port > 65535) {
        fprintf(stderr, "grpc_upstream: %s: want a 127.x.x.x address and a port\n", addr);
        return 2;
    }
    sa.sin_port = htons((uint16_t)port);

    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1024) < 0) {
        fprintf(stderr, "grpc_upstream: %s: %s\n", addr, strerror(errno));
        return 1;
    }
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        abort();
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &e);
    fprintf(stderr, "grpc_upstream: listening on %s\n", addr);
    struct epoll_event ev[256];
    while (!stop_signal) {
        int n = epoll_wait(epfd, ev, 256, 200);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.ptr == NULL)
                accept_all(lfd);
            else
                drive(ev[i].data.ptr);
        }
    }
    return 0;
}
