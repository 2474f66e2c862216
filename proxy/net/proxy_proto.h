/* proxy_proto.h: the PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2) that
 * an L4 balancer puts in front of a connection to say who the client is. A pure parser over a
 * buffer: it never reads a socket, so the connection code, the unit tests and a fuzzer share it. */
#ifndef CERTGATE_PROXY_PROTO_H
#define CERTGATE_PROXY_PROTO_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A v1 header is at most 107 bytes, CRLF included (the specification's bound). */
#define PROXY_PROTO_V1_MAX 107
/* v2: the fixed part, and the most certgate accepts after it (addresses and TLVs). The
 * specification allows 64 KiB; balancers send a few dozen bytes of TLVs (AWS NLB's VPC endpoint
 * id, GCP's PSC connection id), so a bound keeps a connection from holding a large header. */
#define PROXY_PROTO_V2_FIXED 16
#define PROXY_PROTO_V2_MAX_PAYLOAD 2048
/* The most bytes a header can take: what a reader needs to look at, at most. */
#define PROXY_PROTO_MAX (PROXY_PROTO_V2_FIXED + PROXY_PROTO_V2_MAX_PAYLOAD)

/* An IPv4 or IPv6 socket address; sa.sa_family is AF_UNSPEC when there is none. */
union proxy_proto_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

struct proxy_proto_hdr {
    int version; /* 1 or 2 */
    /* true when the header names the client: v1 TCP4/TCP6, v2 PROXY over AF_INET/AF_INET6.
     * false for v1 UNKNOWN, v2 LOCAL (the balancer's own health check) and v2 AF_UNSPEC or
     * AF_UNIX: the socket's own addresses stand. */
    bool has_addrs;
    union proxy_proto_addr src; /* the client */
    union proxy_proto_addr dst; /* the address the client connected to */
    const char *error;          /* on -EINVAL: what is wrong, a static string */
};

/* proxy_proto_parse looks at the first |len| bytes of a connection. It returns the length of a
 * complete, valid header (> 0) and fills |out|; 0 when the bytes are a valid beginning of a
 * header and more are needed; -ENOENT when they do not start with either signature (the bytes
 * are the normal stream); -EINVAL when they start with a signature but are not a valid header
 * (out->error says why); -EMSGSIZE when a v2 header announces more than
 * PROXY_PROTO_V2_MAX_PAYLOAD bytes or a v1 line has no CRLF within PROXY_PROTO_V1_MAX bytes.
 * Never reads beyond |len| or beyond the header. */
long proxy_proto_parse(struct proxy_proto_hdr *out, const uint8_t *data, size_t len);

#endif
