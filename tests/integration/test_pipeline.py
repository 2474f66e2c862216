#!/usr/bin/env python3
"""test_pipeline.py: the data path's event discipline and upstream reuse (issue 10 items 2-4),
in the group `pipe.`. run.py calls register(itself).

- pipe.reentrancy_*: a pipelined request head parsed when its predecessor's answer arrives,
  while BoringSSL holds a partial record of its body and the rest waits in the socket (record
  bytes cut by the test, event order fixed with SIGSTOP/SIGCONT). Before the event discipline,
  the head callback connected upstream, which read the body from inside the parser and
  forwarded the unconsumed head as the body (smuggling). The body must reach the upstream
  intact, as one request.
- pipe.pairs_*: every pairing of bodiless, Content-Length and chunked requests pipelined in one
  write and split at every byte boundary (one connection per split, one certgate): the
  recording upstream gets exactly the two requests with their bodies, the client both answers.
- pipe.pool_*: upstream connections belong to the exchange: idle clients hold none, and a
  request may go out on another client's former upstream connection with its own client-cert
  header.
- pipe.retry_*: only idempotent requests are sent again when a reused upstream connection
  closes before answering; pipe.response_*: a response head with obs-fold or a bare CR is a
  502, never copied.
"""

import hashlib
import signal
import socket
import ssl
import time

H = None  # run.py's module, set by register()


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


CC_NAMES = ("x-forwarded-client-cert", "client-cert", "client-cert-chain", "x-ssl-client-cert")
FAST = {"upstream_response_timeout": "3s"}  # a lost request shows as a quick 504, not a hang


def env(t, **kw):
    return H.http_env(t, limits=dict(FAST), **kw)


# --- re-entrancy ------------------------------------------------------------------------------

def smuggle_body(n):
    """A body whose tail is a complete request: forwarded as a body it is harmless; parsed as a
    request (the tail left over when the head is sent as the body) it would reach the
    upstream as a second request."""
    tail = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
    return b"x" * (n - len(tail)) + tail


class RawTLS:
    """A TLS client whose records the test cuts into TCP writes itself (ssl.MemoryBIO): a
    record can reach certgate in part, so that BoringSSL holds a partial record."""

    def __init__(self, t, port, ctx):
        self.sock = H.plain_connect(t, port)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.push()
                data = self.sock.recv(65536)
                check(data, "handshake cut short")
                self.inc.write(data)
        self.push()

    def push(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def record(self, plaintext):
        """The bytes of one TLS record carrying |plaintext| (not sent)."""
        self.obj.write(plaintext)
        return self.out.read()

    def recv(self, n):  # for H.Reader
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                if not data:
                    return b""
                self.inc.write(data)

    def settimeout(self, v):
        self.sock.settimeout(v)


def reentrancy_case(t, head, body, want_sha, want_len):
    """A GET /slow and the head of a request with a body in one record; the body in a second
    record, of which only a few bytes arrive at first (BoringSSL buffers the partial record).
    The rest arrives after the GET's answer, while certgate is stopped, so that when it runs
    again the answer is handled first: the pipelined head is parsed while the rest of its body
    waits in the socket behind the buffered partial record."""
    up, cg, ctx = env(t)
    c = RawTLS(t, cg.port(), ctx)
    rec_a = c.record(H.get_req("/slow?ms=400") + head)
    rec_b = c.record(body)  # records are numbered: encrypted in the order they are sent
    c.sock.sendall(rec_a + rec_b[:20])
    time.sleep(0.2)  # the GET went upstream; the partial record sits in the SSL
    cg.signal(signal.SIGSTOP)
    try:
        time.sleep(0.6)  # the upstream answered the GET (its socket became readable first)
        c.sock.sendall(rec_b[20:])
        time.sleep(0.1)
    finally:
        cg.signal(signal.SIGCONT)
    r = H.Reader(c)
    first = H.read_response(r)
    check(first.status == 200 and first.body.startswith(b"GET /slow"), "first: %r" % first)
    resp = H.read_response(r)
    check(resp.status == 200, "second: status %d" % resp.status)
    want = b"body-sha256: " + want_sha.encode()
    check(want in resp.body, "the body changed on the way: %r" % resp.body[-160:])
    time.sleep(0.2)
    got = [(q["method"], q["target"], q["body_length"]) for q in up.requests()]
    check(got == [("GET", "/slow?ms=400", 0), ("POST", "/body", want_len)],
          "upstream saw %r" % got)


def t_reentrancy_partial_record(t):
    body = smuggle_body(4000)
    head = b"POST /body HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(body)
    reentrancy_case(t, head, body, hashlib.sha256(body).hexdigest(), len(body))


def t_reentrancy_chunked(t):
    data = smuggle_body(4000)
    head = b"POST /body HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    reentrancy_case(t, head, b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data),
                    hashlib.sha256(data).hexdigest(), len(data))


# --- pipelining -------------------------------------------------------------------------------

BODY = b"hello"


def request(kind, ident):
    if kind == "none":
        return b"GET /echo?id=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % ident
    if kind == "cl":
        return (b"POST /body?id=%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s"
                % (ident, len(BODY), BODY))
    return (b"POST /body?id=%s HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n" % ident)


def check_answer(resp, kind, ident, what):
    check(resp.status == 200, "%s: status %d" % (what, resp.status))
    method = b"GET" if kind == "none" else b"POST"
    path = b"/echo" if kind == "none" else b"/body"
    check(resp.body.startswith(method + b" " + path + b"?id=" + ident + b" "),
          "%s: answered %r" % (what, resp.body[:60]))
    if kind != "none":
        want = b"body-length: %d\nbody-sha256: %s\n" % (
            len(BODY), hashlib.sha256(BODY).hexdigest().encode())
        check(resp.body.endswith(want), "%s: body arrived as %r" % (what, resp.body[-100:]))


def pipelined(t, cg, ctx, a, b, ident, split):
    """Sends requests of kinds a and b in one stream, cut at |split| (None: one write)."""
    raw1, raw2 = request(a, ident + b"a"), request(b, ident + b"b")
    raw = raw1 + raw2
    s = H.tls_connect(t, cg.port(), ctx)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle wait between the parts
    try:
        if split is None:
            s.sendall(raw)
        else:
            s.sendall(raw[:split])
            s.sendall(raw[split:])
        r = H.Reader(s)
        what = "%s+%s split %s" % (a, b, split)
        check_answer(H.read_response(r), a, ident + b"a", what + " (first)")
        check_answer(H.read_response(r), b, ident + b"b", what + " (second)")
    finally:
        s.close()
        t.socks.remove(s)
    return [ident + b"a", ident + b"b"]


KINDS = ("none", "cl", "chunked")


def expect_exactly(up, idents):
    want = sorted("?id=" + i.decode() for i in idents)
    got = []
    deadline = time.time() + H.T(5)
    while time.time() < deadline:
        got = sorted(q["target"][q["target"].index("?"):] for q in up.requests())
        if len(got) >= len(want):
            break
        time.sleep(0.05)
    time.sleep(0.1)
    got = sorted(q["target"][q["target"].index("?"):] for q in up.requests())
    if got != want:
        extra = sorted(set(got) - set(want))[:5]
        missing = sorted(set(want) - set(got))[:5]
        raise H.Failure("upstream got %d requests for %d sent; extra %r, missing %r"
                        % (len(got), len(want), extra, missing))
    for q in up.requests():
        kind = "none" if q["method"] == "GET" else "body"
        check(q["body_length"] == (0 if kind == "none" else len(BODY)),
              "%s %s: body of %d bytes" % (q["method"], q["target"], q["body_length"]))


def t_pairs_one_write(t):
    """Every pairing in one write (GET then POST with a body was lost: 504)."""
    up, cg, ctx = env(t)
    idents = []
    for a in KINDS:
        for b in KINDS:
            idents += pipelined(t, cg, ctx, a, b, ("%s-%s" % (a, b)).encode(), None)
    expect_exactly(up, idents)


def t_pairs_every_split(t):
    up, cg, ctx = env(t)
    idents = []
    for a in KINDS:
        for b in KINDS:
            n = len(request(a, b"%s-%s-000a" % (a.encode(), b.encode())) +
                    request(b, b"%s-%s-000b" % (a.encode(), b.encode())))
            for k in range(1, n):
                ident = b"%s-%s-%03d" % (a.encode(), b.encode(), k)
                idents += pipelined(t, cg, ctx, a, b, ident, k)
    expect_exactly(up, idents)


# --- the pool ---------------------------------------------------------------------------------

def upstream_conns(up):
    return len(up.files(".bin"))


def t_pool_idle_clients(t):
    """Keep-alive clients that made one request each and idle hold no upstream connection."""
    up, cg, ctx = env(t)
    n = 40
    socks = []
    for i in range(n):
        s = H.tls_connect(t, cg.port(), ctx)
        s.sendall(H.get_req("/echo?c=%d" % i))
        check(H.read_response(H.Reader(s)).status == 200, "client %d: first request" % i)
        socks.append(s)
    time.sleep(0.2)
    held = upstream_conns(up)
    check(held <= 3, "%d idle clients made %d upstream connections" % (n, held))
    for i, s in enumerate(socks):
        s.sendall(H.get_req("/echo?c=%d&again" % i))
        resp = H.read_response(H.Reader(s))
        check(resp.status == 200, "client %d after idling: status %d" % (i, resp.status))
        check(resp.body.startswith(b"GET /echo?c=%d&again " % i), "client %d got %r"
              % (i, resp.body[:40]))
    check(upstream_conns(up) <= 3, "%d upstream connections for %d clients"
          % (upstream_conns(up), n))


def cc_lines(body):
    return [line for line in body.decode("latin-1").lower().split("\r\n")
            if line.split(":", 1)[0] in CC_NAMES]


def t_pool_shared_xfcc(t):
    """Two clients, one with a certificate and one without, take turns on one upstream
    connection; each request carries its own client's header and no other's."""
    up, cg, ctx = env(t, client_auth="optional", extra={"workers": 1})  # one worker, one pool
    anon = H.client_ctx("ecdsa", cert=None)
    a = H.tls_connect(t, cg.port(), ctx)
    b = H.tls_connect(t, cg.port(), anon)
    ra, rb = H.Reader(a), H.Reader(b)
    conns = set()
    for i in range(3):
        a.sendall(H.get_req("/echo?who=a&i=%d" % i,
                            extra="X-Forwarded-Client-Cert: By=spoof;Hash=00\r\n"))
        resp = H.read_response(ra)
        check(resp.status == 200, "a: status %d" % resp.status)
        lines = cc_lines(resp.body)
        check(len(lines) == 1 and "spoof" not in lines[0] and "hash=" in lines[0],
              "a's request carried %r" % lines)
        conns.add(resp.header("X-Upstream-Conn"))
        b.sendall(H.get_req("/echo?who=b&i=%d" % i,
                            extra="X-Forwarded-Client-Cert: By=spoof;Hash=00\r\n"))
        resp = H.read_response(rb)
        check(resp.status == 200, "b: status %d" % resp.status)
        check(cc_lines(resp.body) == [], "b (no certificate) carried %r" % cc_lines(resp.body))
        conns.add(resp.header("X-Upstream-Conn"))
    check(len(conns) == 1, "the two clients did not share the upstream connection: %r" % conns)


def t_pool_closed_while_idle(t):
    """An upstream closes a kept-alive connection while it waits in the pool: the next request,
    a POST with a body (never sent twice) or a GET, goes out on a new connection and succeeds."""
    up, cg, ctx = env(t, extra={"workers": 1})
    s = H.tls_connect(t, cg.port(), ctx)
    r = H.Reader(s)
    for method, raw in (("POST", b"POST /body HTTP/1.1\r\nHost: localhost\r\n"
                                 b"Content-Length: 5\r\n\r\nhello"),
                        ("GET", H.get_req("/echo?after"))):
        s.sendall(H.get_req("/closeafter"))
        check(H.read_response(r).status == 200, "closeafter failed")
        time.sleep(0.3)  # closed by the upstream while pooled
        s.sendall(raw)
        resp = H.read_response(r)
        check(resp.status == 200, "%s after the pooled connection closed: status %d"
              % (method, resp.status))
    got = [(q["method"], q["target"]) for q in up.requests()]
    check(got == [("GET", "/closeafter"), ("POST", "/body"), ("GET", "/closeafter"),
                  ("GET", "/echo?after")], "upstream saw %r" % got)


# --- retries and response heads -----------------------------------------------------------------

def retry_case(t, method, extra=""):
    up, cg, ctx = env(t)
    s = H.tls_connect(t, cg.port(), ctx)
    r = H.Reader(s)
    s.sendall(H.get_req("/echo?first"))
    check(H.read_response(r).status == 200, "first request failed")
    # The same upstream connection, from the pool; it closes as the request arrives.
    s.sendall(("%s /drop HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % (method, extra)).encode())
    resp = H.read_response(r, method)
    time.sleep(0.3)
    seen = [q["method"] for q in up.requests() if q["target"] == "/drop"]
    return resp, seen


def t_retry_post_never(t):
    resp, seen = retry_case(t, "POST")
    check(resp.status == 502, "bodiless POST on a closing upstream: status %d" % resp.status)
    check(seen == ["POST"], "the upstream saw %r (a POST must not be sent twice)" % seen)


def t_retry_patch_never(t):
    resp, seen = retry_case(t, "PATCH")
    check(resp.status == 502, "PATCH on a closing upstream: status %d" % resp.status)
    check(seen == ["PATCH"], "the upstream saw %r" % seen)


def t_retry_get_once(t):
    resp, seen = retry_case(t, "GET")
    check(resp.status == 502, "GET on an upstream that always drops: status %d" % resp.status)
    check(seen == ["GET", "GET"], "the upstream saw %r (one retry on a new connection)" % seen)


def t_retry_delete_once(t):
    resp, seen = retry_case(t, "DELETE")
    check(seen == ["DELETE", "DELETE"], "the upstream saw %r" % seen)


def bad_head_case(t, kind, marker):
    up, cg, ctx = env(t)
    resp = H.https_request(t, cg.port(), ctx, H.get_req("/badframing?kind=" + kind))
    check(resp.status == 502, "%s response head: status %d" % (kind, resp.status))
    check(marker not in resp.head.lower() and marker not in resp.body.lower(),
          "the bad head was copied: %r" % resp.head)


def t_response_obsfold(t):
    bad_head_case(t, "obsfold", b"x-folded")


def t_response_bare_cr(t):
    bad_head_case(t, "barecr", b"x-bare")


TESTS = [
    ("pipe.reentrancy_partial_record", t_reentrancy_partial_record),
    ("pipe.reentrancy_chunked", t_reentrancy_chunked),
    ("pipe.pairs_one_write", t_pairs_one_write),
    ("pipe.pairs_every_split", t_pairs_every_split),
    ("pipe.pool_idle_clients", t_pool_idle_clients),
    ("pipe.pool_shared_xfcc", t_pool_shared_xfcc),
    ("pipe.pool_closed_while_idle", t_pool_closed_while_idle),
    ("pipe.retry_post_never", t_retry_post_never),
    ("pipe.retry_patch_never", t_retry_patch_never),
    ("pipe.retry_get_once", t_retry_get_once),
    ("pipe.retry_delete_once", t_retry_delete_once),
    ("pipe.response_obsfold_502", t_response_obsfold),
    ("pipe.response_bare_cr_502", t_response_bare_cr),
]


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS)
