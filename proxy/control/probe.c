/* probe.c: `certgate probe` (CONTRACT section 2). One blocking request with a deadline: the
 * process exists only for it, and a container runtime runs it every few seconds. */
#include "control/probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/base.h"

/* A wildcard address is reached through loopback on the same family. */
static void loopback_if_wildcard(struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        if (a->sin_addr.s_addr == htonl(INADDR_ANY))
            a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (ss->ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr))
            a->sin6_addr = in6addr_loopback;
    }
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)ss)->sin6_port)
                                     : ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* Waits until |fd| is ready for |events| or |deadline| (base_now_ms) passes; 0 or -ETIMEDOUT. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = base_now_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)MIN(deadline - now, (uint64_t)60000));
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

/* Sends the request and reads the status line; returns the status code or a negative errno. */
static int ask_ready(int fd, uint64_t deadline)
{
    static const char req[] = "GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                              "User-Agent: certgate-probe\r\n\r\n";
    size_t sent = 0;
    while (sent < sizeof(req) - 1) {
        int r = wait_fd(fd, POLLOUT, deadline);
        if (r < 0)
            return r;
        ssize_t n = send(fd, req + sent, sizeof(req) - 1 - sent, MSG_NOSIGNAL);
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            return -errno;
        if (n > 0)
            sent += (size_t)n;
    }
    char head[256] = {0};
    size_t got = 0;
    while (got < sizeof(head) - 1 && memchr(head, '\n', got) == NULL) {
        int r = wait_fd(fd, POLLIN, deadline);
        if (r < 0)
            return r;
        ssize_t n = recv(fd, head + got, sizeof(head) - 1 - got, 0);
        if (n == 0)
            break;
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            return -errno;
        if (n > 0)
            got += (size_t)n;
    }
    head[got] = '\0';
    /* "HTTP/1.x DDD" then SP or CR, exactly: sscanf's %3d took "HTTP/1.1 2000" (or " 200",
     * "+20") for a status it is not. */
    if (got < 13 || memcmp(head, "HTTP/1.", 7) != 0 || (head[7] != '0' && head[7] != '1') ||
        head[8] != ' ' || (head[12] != ' ' && head[12] != '\r'))
        return -EPROTO;
    int code = 0;
    for (int i = 9; i < 12; i++) {
        if (head[i] < '0' || head[i] > '9')
            return -EPROTO;
        code = code * 10 + (head[i] - '0');
    }
    return code;
}

int probe_run(const struct config *cfg, unsigned timeout_ms)
{
    const struct config_endpoint *ep = cfg->admin_address.text != NULL
                                           ? &cfg->admin_address
                                           : &cfg->admin_public_address;
    if (ep->text == NULL) {
        fprintf(stderr, "probe: %s has no admin.address (or admin.public_address) to ask\n",
                cfg->path);
        return 2;
    }
    struct sockaddr_storage ss = ep->addr;
    if (port_of(&ss) == 0) {
        fprintf(stderr, "probe: %s: admin port 0 is picked at start; a probe cannot know it\n",
                ep->text);
        return 2;
    }
    loopback_if_wildcard(&ss);
    uint64_t deadline = base_now_ms() + timeout_ms;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int r = fd < 0 ? -errno : 0;
    if (r == 0 && connect(fd, (const struct sockaddr *)&ss, ep->addr_len) != 0) {
        r = errno == EINPROGRESS ? wait_fd(fd, POLLOUT, deadline) : -errno;
        int so = 0;
        socklen_t len = sizeof(so);
        if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &len) == 0 && so != 0)
            r = -so;
    }
    if (r == 0)
        r = ask_ready(fd, deadline);
    if (fd >= 0)
        close(fd);
    if (r == 200)
        return 0;
    if (r > 0)
        fprintf(stderr, "probe: %s: /ready answered %d\n", ep->text, r);
    else
        fprintf(stderr, "probe: %s: %s\n", ep->text,
                r == -EPROTO ? "not an HTTP answer" : strerror(-r));
    return 1;
}
