#!/usr/bin/env python3
"""test_review.py: defects found by a hostile review of this session's merges, in the group
`rev.`. run.py calls register(itself). Each test failed before its fix."""

import signal
import socket
import threading
import time

H = None  # run.py's module, set by register()


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


class Scripted:
    """An upstream whose every connection runs |handler(sock, n)| in its own thread."""

    def __init__(self, t, handler):
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((H.HOST, 0))
        self.srv.listen(64)
        self.addr = "%s:%d" % (H.HOST, self.srv.getsockname()[1])
        self.handler = handler
        self.conns = 0
        self.stopped = False
        t.procs.append(self)
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while not self.stopped:
            try:
                s, _ = self.srv.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self.run, args=(s, self.conns), daemon=True).start()

    def run(self, s, n):
        try:
            self.handler(s, n)
        except OSError:
            pass
        finally:
            s.close()

    def stop(self):
        self.stopped = True
        self.srv.close()
        return []


def read_request(s, buf=b""):
    """Reads one bodiless request head from |s|; returns (head, rest) or (None, buf)."""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        if not data:
            return None, buf
        buf += data
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


TESTS = []


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS)


# --- the upstream pool: a pooled connection that spoke is never handed out ---------------------

def t_pool_stray_bytes_not_served(t):
    """An idle pooled upstream connection sends bytes (a buggy or hostile application writing
    past the Content-Length it announced) in the same event-loop round as another client's GET.
    The GET must not take that connection: the stray bytes would be read as its answer (response
    queue poisoning across clients). Event order is fixed with SIGSTOP: the client's request
    reaches certgate's socket first, then the stray bytes, then certgate runs."""
    stray = threading.Event()

    def handler(s, n):
        rest = b""
        while True:
            head, rest = read_request(s, rest)
            if head is None:
                return
            if b"/first" in head:
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
                stray.wait(T_WAIT)
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Stray: 1\r\n\r\nSTRAY!")
            else:
                body = b"own answer %d" % n
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    up = Scripted(t, handler)
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.addr, client_auth="require")],
                    limits={"upstream_response_timeout": "3s"}, extra={"workers": 1})
    ctx = H.client_ctx("ecdsa")
    first = H.https_request(t, cg.port(), ctx, H.get_req("/first"))
    check(first.status == 200 and first.body == b"first", "first: %r" % first)
    victim = H.tls_connect(t, cg.port(), ctx)  # handshake done: idle, holding no upstream
    time.sleep(0.2)  # the first exchange's upstream connection is back in the pool
    cg.signal(signal.SIGSTOP)
    try:
        victim.sendall(H.get_req("/victim"))
        time.sleep(0.1)
        stray.set()
        time.sleep(0.2)
    finally:
        cg.signal(signal.SIGCONT)
    resp = H.read_response(H.Reader(victim))
    check(resp.header("X-Stray") is None and b"STRAY" not in resp.body,
          "the victim was served the pooled connection's stray bytes: %r" % resp)
    check(resp.status == 200 and resp.body.startswith(b"own answer"), "victim: %r" % resp)


T_WAIT = 10

TESTS = [
    ("rev.pool_stray_bytes_not_served", t_pool_stray_bytes_not_served),
]


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS)
