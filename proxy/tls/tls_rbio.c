/* tls_rbio.c: the read side of a client connection's TLS. BoringSSL reads a record as two
 * reads of exactly what it needs (the 5-byte header, then the body), so a socket BIO costs
 * two read(2) per record, most often a whole request. This BIO takes what the socket has,
 * up to a full record and then some, in one recv(2) and hands it out from there; its buffer
 * exists only while it holds bytes (an idle connection keeps none). Writes keep BoringSSL's
 * socket BIO. Bytes held here raise no poll event: tls_pending counts them. */
#include <openssl/is_boringssl.h>

#include "tls/tls_rbio.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/bio.h>

#include "core/base.h"

/* A record is at most 5 + 16384 + 256 bytes; the rest is the next record's start. */
#define RBIO_SIZE (17 * 1024)

struct rbio {
    int fd;
    uint32_t off, len;
    char *buf; /* NULL when empty */
};

static BIO_METHOD *method;
static pthread_once_t method_once = PTHREAD_ONCE_INIT;

static void drop(struct rbio *r)
{
    free(r->buf);
    r->buf = NULL;
    r->off = r->len = 0;
}

static int rbio_read(BIO *b, char *out, int outl)
{
    struct rbio *r = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (outl <= 0)
        return 0;
    if (r->len == 0) {
        if (r->buf == NULL)
            r->buf = xmalloc(RBIO_SIZE);
        ssize_t n;
        do
            n = recv(r->fd, r->buf, RBIO_SIZE, 0);
        while (n < 0 && errno == EINTR);
        if (n <= 0) {
            int e = errno;
            drop(r);
            if (n < 0 && (e == EAGAIN || e == EWOULDBLOCK))
                BIO_set_retry_read(b);
            errno = e;
            return (int)n; /* 0: the peer closed; -1: an error, errno says which */
        }
        r->len = (uint32_t)n;
    }
    size_t k = MIN((size_t)outl, (size_t)(r->len - r->off));
    memcpy(out, r->buf + r->off, k);
    r->off += (uint32_t)k;
    if (r->off == r->len)
        drop(r);
    return (int)k;
}

static long rbio_ctrl(BIO *b, int cmd, long larg, void *parg)
{
    struct rbio *r = BIO_get_data(b);
    (void)larg;
    switch (cmd) {
    case BIO_CTRL_PENDING:
        return r != NULL ? (long)(r->len - r->off) : 0;
    case BIO_C_GET_FD:
        if (r == NULL)
            return -1;
        if (parg != NULL)
            *(int *)parg = r->fd;
        return r->fd;
    case BIO_CTRL_FLUSH:
        return 1;
    default:
        return 0;
    }
}

static int rbio_destroy(BIO *b)
{
    struct rbio *r = BIO_get_data(b);
    if (r != NULL) {
        drop(r);
        free(r);
        BIO_set_data(b, NULL);
    }
    return 1;
}

static void method_init(void)
{
    /* A descriptor BIO, so that SSL_get_fd finds its socket. */
    method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_DESCRIPTOR | BIO_TYPE_SOURCE_SINK,
                          "certgate socket reader");
    if (method == NULL || !BIO_meth_set_read(method, rbio_read) ||
        !BIO_meth_set_ctrl(method, rbio_ctrl) || !BIO_meth_set_destroy(method, rbio_destroy))
        abort();
}

BIO *tls_rbio_new(int fd)
{
    pthread_once(&method_once, method_init);
    BIO *b = BIO_new(method);
    if (b == NULL)
        abort();
    struct rbio *r = xcalloc(1, sizeof(*r));
    r->fd = fd;
    BIO_set_data(b, r);
    BIO_set_init(b, 1);
    return b;
}
