/* worker.c: the server's current generation, as connections take it. */
#include "net/worker.h"

#include "tls/tls.h"

struct tls_gen *server_gen(struct server *srv)
{
    /* The lock orders taking a reference against a swap that drops the last one. */
    uv_mutex_lock(&srv->gen_lock);
    struct tls_gen *gen = atomic_load(&srv->gen);
    tls_gen_ref(gen);
    uv_mutex_unlock(&srv->gen_lock);
    return gen;
}
