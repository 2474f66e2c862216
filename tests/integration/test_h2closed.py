#!/usr/bin/env python3
"""test_h2closed.py: frames on closed HTTP/2 streams (docs/http2.md, "h2spec"), in the group
`h2closed.`, what the h2spec. cases do not cover. certgate keeps no closed streams
(no_closed_streams) but three bits for each of the last 128 client streams
(proxy/h2/h2_closed.c): a client's body and trailers that arrive after certgate reset the
stream are ignored, and the connection keeps serving its other streams, with the connection
window credited for the ignored DATA; the same frames after the client's own END_STREAM or
RST_STREAM close the connection with STREAM_CLOSED (h2spec 5.1/8-12). run.py calls
register(itself); this file also runs on its own:

    python3 tests/integration/test_h2closed.py --binary build/certgate [-k h2closed.] [-v]

The client is h2lib.py's (raw frames over TLS, ALPN h2), against an http listener with a client
certificate and the HTTP/1.1 recording upstream.
"""

import os
import socket
import struct
import sys
import threading
import time

import h2lib
from h2lib import (DATA, END_HEADERS, END_STREAM, HEADERS, PRIORITY, PROTOCOL_ERROR,
                   STREAM_CLOSED, WINDOW_UPDATE, H2Conn, err_name, frame, hp_block,
                   request_headers, rst_frame, window_frame)

H = None  # run.py's module, set by register()
TESTS = []
CHUNK = 16384           # the default SETTINGS_MAX_FRAME_SIZE
STREAM_WINDOW = 65536   # certgate's SETTINGS_INITIAL_WINDOW_SIZE (H2_STREAM_HWM)
CONN_WINDOW = 1 << 20   # certgate's connection window (H2_CONN_WINDOW)
WINDOW_IDS = 128        # client streams remembered (H2_CLOSED_WINDOW)


def test(name):
    def deco(fn):
        TESTS.append((name, fn))
        return fn
    return deco


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


class Conn(H2Conn):
    """h2lib's connection, sending DATA within certgate's connection window: what certgate
    granted (WINDOW_UPDATE on stream 0) is counted, and send_data waits for it."""

    def __init__(self, t, port, **kw):
        self.granted = 65535  # RFC 9113 6.9.2: the initial window, before any WINDOW_UPDATE
        self.sent = 0
        super().__init__(t, port, **kw)

    def _on_frame(self, ftype, flags, sid, payload):
        if ftype == WINDOW_UPDATE and sid == 0:
            self.granted += struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
        super()._on_frame(ftype, flags, sid, payload)

    def send_data(self, sid, n, end=False):
        """|n| octets of DATA on |sid| in frames of CHUNK, each once the connection window
        has room for it."""
        while n > 0:
            k = min(n, CHUNK)
            self.drain()
            if self.granted - self.sent < k:
                check(self.wait(lambda: self.granted - self.sent >= k, 5),
                      "the connection window stays shut: %d octets sent, %d granted (the "
                      "ignored DATA was not credited back?) (%s)"
                      % (self.sent, self.granted, self.state()))
            n -= k
            self.sent += k
            self.send(frame(DATA, END_STREAM if (end and n == 0) else 0, sid, b"u" * k))

    def trailers(self, sid, extra=()):
        self.send(frame(HEADERS, END_STREAM | END_HEADERS, sid,
                        hp_block([("x-checksum", "0")] + list(extra))))


def env(t, limits=None):
    up, cg, _ = H.http_env(t, limits=limits)
    c = Conn(t, cg.port())
    check(c.alpn == "h2", "ALPN chose %r, not h2" % c.alpn)
    c.wait_settings()
    return up, cg, c


def post_head(c, sid, length=None, path="/body"):
    extra = [("content-length", str(length))] if length is not None else []
    c.send(c.headers_frame(sid, request_headers("POST", path, extra=extra), end_stream=False))


def wait_reset(c, sid, code):
    s = c.stream(sid)
    check(c.wait(lambda: s.reset is not None or c.eof or c.goaway is not None),
          "no RST_STREAM on stream %d (%s)" % (sid, c.state()))
    check(s.reset == code and c.goaway is None, "stream %d: %r, want RST_STREAM %s (%s)"
          % (sid, s, err_name(code), c.state()))


def still_serving(c, sid, what, path="/echo?after"):
    """A new request on |sid| is answered and certgate sent no GOAWAY: |what| was ignored."""
    s = c.response(c.request(path=path, sid=sid))
    check(s.status == 200, "after %s, a new stream got %r (%s)" % (what, s, c.state()))
    c.wait(lambda: c.goaway is not None or c.eof, 0.3)
    check(c.goaway is None and not c.eof,
          "certgate ignores %s (RFC 9113 5.1: frames after its own RST_STREAM); it closed the "
          "connection (%s)" % (what, c.state()))
    return s


@test("h2closed.upload_after_our_reset_ignored")
def t_upload_after_our_reset_ignored(t):
    """certgate resets a stream while the client is still uploading (a body longer than its
    content-length: nghttp2's RST_STREAM PROTOCOL_ERROR); the rest of the body and the
    trailers, sent before the client could see the reset, are ignored: no GOAWAY, the
    connection serves the next stream, nothing answers the reset stream."""
    up, cg, c = env(t)
    post_head(c, 1, length=4)
    c.send_data(1, 100)
    wait_reset(c, 1, PROTOCOL_ERROR)
    c.send_data(1, 3 * CHUNK)
    c.trailers(1)
    still_serving(c, 3, "body and trailers after certgate's RST_STREAM")
    check(c.stream(1).headers is None, "a response on the reset stream: %r" % c.stream(1))
    got = [r.get("target") for r in up.wait_requests(1)]
    check("/echo?after" in got, "the upstream got %r" % got)


@test("h2closed.after_our_reset_client_ended")
def t_after_our_reset_client_ended(t):
    """certgate resets a stream for a header list over max_request_head (the trailers, which
    carry the client's END_STREAM); DATA and HEADERS that follow on it are ignored. (nghttp2
    reports no trailers it reset the stream over, so this one does not tell which of the
    client's END_STREAM and certgate's reset decides: after_our_reset_upstream_failed does.)"""
    up, cg, c = env(t, limits={"max_request_head": "8KiB"})
    post_head(c, 1)
    c.send_data(1, 10)
    c.trailers(1, [("x-big", "b" * 9000)])
    wait_reset(c, 1, PROTOCOL_ERROR)
    c.send_data(1, 10, end=True)
    c.trailers(1)
    still_serving(c, 3, "DATA and HEADERS on a stream certgate reset after the client ended it")


def truncating_upstream(t):
    """An HTTP/1.1 upstream whose /truncated answer stops short: the head and 10 of the 100000
    octets it announces, then, 0.3 s later (certgate has sent the head on), the connection
    closes. Anything else gets a short 200."""
    srv = socket.socket()
    srv.bind((H.HOST, 0))
    srv.listen(8)
    t.socks.append(srv)

    def serve():
        while True:
            try:
                s, _ = srv.accept()
            except OSError:
                return
            try:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    d = s.recv(65536)
                    if not d:
                        break
                    buf += d
                if b" /truncated " in buf.split(b"\r\n", 1)[0]:
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
                    time.sleep(0.3)
                else:
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                              b"Connection: close\r\n\r\nok\n")
            except OSError:
                pass
            finally:
                s.close()

    threading.Thread(target=serve, daemon=True).start()
    return "%s:%d" % (H.HOST, srv.getsockname()[1])


@test("h2closed.after_our_reset_upstream_failed")
def t_after_our_reset_upstream_failed(t):
    """The client's request is complete (END_STREAM), the response is under way, the upstream
    fails mid-body: certgate resets the stream (INTERNAL_ERROR). DATA and trailers the client
    sends on it afterwards are ignored, although the client had closed its side: certgate's
    own RST_STREAM decides (RFC 9113 5.1), not the client's END_STREAM. An implementation that
    answered STREAM_CLOSED for every stream the client closed (h2spec 5.1/11), or that looked at
    the client's END_STREAM before certgate's reset, closes the connection here."""
    cg = t.certgate("ecdsa", [H.listener("https", "http", truncating_upstream(t),
                                         client_auth="require")])
    c = Conn(t, cg.port())
    c.wait_settings()
    s = c.stream(c.request(path="/truncated", sid=1))
    check(c.wait(lambda: s.headers is not None or s.done), "no response head (%s)" % c.state())
    check(s.status == 200, "the truncated response: %r (%s)" % (s, c.state()))
    wait_reset(c, 1, h2lib.INTERNAL_ERROR)
    c.send_data(1, 10)
    c.trailers(1)
    still_serving(c, 3, "DATA and HEADERS on a stream certgate reset after the client ended it",
                  path="/ok")


@test("h2closed.after_refused_stream")
def t_after_refused_stream(t):
    """A stream beyond SETTINGS_MAX_CONCURRENT_STREAMS before the client acknowledged it is
    refused (nghttp2's RST_STREAM REFUSED_STREAM, never opened in nghttp2); the body and
    trailers the client sent on it before it saw the refusal are ignored, and the connection
    carries on. 100 streams stay open (answered 421 by certgate, their request bodies never
    ended), the 101st is refused."""
    up, cg, _ = H.http_env(t)
    c = Conn(t, cg.port())
    hdrs = request_headers("POST", "/echo", authority="other.example")
    c.send(b"".join(c.headers_frame(sid, hdrs, end_stream=False) for sid in range(1, 202, 2)))
    wait_reset(c, 201, h2lib.REFUSED_STREAM)
    c.send_data(201, 10)
    c.trailers(201)
    check(c.wait(lambda: c.stream(199).status == 421), "stream 199: %r (%s)"
          % (c.stream(199), c.state()))
    c.send(frame(DATA, END_STREAM, 1))  # a slot for one more stream
    still_serving(c, 203, "DATA and HEADERS on a refused stream")


@test("h2closed.window_credited_after_our_reset")
def t_window_credited_after_our_reset(t):
    """DATA that certgate ignores on streams it reset still counts against the connection
    window, and is credited back: 24 streams each reset on their first DATA, each followed by
    the rest of its 64 KiB stream window, 1.5 MiB in all (past certgate's 1 MiB connection
    window), go through without the window shutting; then a 32 KiB body arrives whole."""
    up, cg, c = env(t)
    sid = 1
    for _ in range(24):
        post_head(c, sid, length=1)
        c.send_data(sid, CHUNK)
        wait_reset(c, sid, PROTOCOL_ERROR)
        c.send_data(sid, STREAM_WINDOW - CHUNK)
        c.trailers(sid)
        sid += 2
    check(c.sent > CONN_WINDOW, "sent %d" % c.sent)
    post_head(c, sid, length=32768)
    c.send_data(sid, 32768, end=True)
    s = c.response(sid)
    check(s.status == 200 and b"body-length: 32768" in bytes(s.body),
          "a body after 1.5 MiB of ignored DATA: %r (%s)" % (s, c.state()))
    check(c.goaway is None, "GOAWAY: %s" % c.state())


def run_streams(c, first, n):
    """n GET requests from stream |first| on, 50 at a time, each answered; the next id."""
    sid = first
    while n > 0:
        batch = []
        for _ in range(min(n, 50)):
            batch.append(c.request(path="/echo?n=%d" % sid, sid=sid))
            sid += 2
            n -= 1
        for b in batch:
            s = c.response(b)
            check(s.status == 200, "stream %d: %r (%s)" % (b, s, c.state()))
    return sid


@test("h2closed.window_edges")
def t_window_edges(t):
    """The window of remembered streams, and what stays allowed on closed streams. After 130
    streams, each closed by both sides: WINDOW_UPDATE, PRIORITY and RST_STREAM on a closed
    stream are accepted; DATA on stream 1, older than the last 128 client streams, is ignored
    (nothing is known of it); DATA on a closed stream within them is a connection error
    STREAM_CLOSED (RFC 9113 5.1, as h2spec 5.1/11)."""
    up, cg, c = env(t)
    nxt = run_streams(c, 1, 130)
    last = nxt - 2
    c.send(window_frame(last, 1000) + frame(PRIORITY, 0, last, struct.pack(">IB", 1, 15))
           + rst_frame(last))
    nxt = run_streams(c, nxt, 1)
    check(c.goaway is None, "WINDOW_UPDATE, PRIORITY and RST_STREAM on closed stream %d: %s"
          % (last, c.state()))
    c.send_data(1, 10)
    still_serving(c, nxt, "DATA on stream 1, older than the last %d streams" % WINDOW_IDS)
    c.send_data(last, 10)
    check(c.wait(lambda: c.goaway is not None or c.eof),
          "DATA on closed stream %d: no GOAWAY (%s)" % (last, c.state()))
    check(c.goaway is not None and c.goaway[1] == STREAM_CLOSED,
          "DATA on closed stream %d: want GOAWAY STREAM_CLOSED (%s)" % (last, c.state()))


@test("h2closed.lower_stream_never_opened")
def t_lower_stream_never_opened(t):
    """RFC 9113 5.1.1: a client stream below the highest one opened, never opened itself, is
    closed. HEADERS on it closes the connection with PROTOCOL_ERROR (h2spec 5.1.1/2); after a
    client reset, trailers on the reset stream are STREAM_CLOSED (h2spec 5.1/9), and stream 7
    went to the upstream while the requests on 3 and 5 never did."""
    up, cg, c = env(t)
    c.response(c.request(path="/echo?one", sid=1))
    c.response(c.request(path="/echo?seven", sid=7))
    c.send(c.headers_frame(5, request_headers("GET", "/echo?five")))
    check(c.wait(lambda: c.goaway is not None or c.eof),
          "HEADERS on stream 5 after 7: no GOAWAY (%s)" % c.state())
    check(c.goaway is not None and c.goaway[1] == PROTOCOL_ERROR,
          "HEADERS on stream 5 after 7: want GOAWAY PROTOCOL_ERROR (%s)" % c.state())
    c2 = Conn(t, cg.port())
    post_head(c2, 1)
    c2.send(rst_frame(1))
    c2.trailers(1)
    check(c2.wait(lambda: c2.goaway is not None or c2.eof),
          "trailers after the client's RST_STREAM: no GOAWAY (%s)" % c2.state())
    check(c2.goaway is not None and c2.goaway[1] == STREAM_CLOSED,
          "trailers after the client's RST_STREAM: want GOAWAY STREAM_CLOSED (%s)" % c2.state())
    got = sorted(r.get("target") for r in up.wait_requests(3, timeout=0.5))
    check(got == ["/echo?one", "/echo?seven"], "the upstream got %r" % got)


@test("h2closed.byte_at_a_time")
def t_byte_at_a_time(t):
    """Frame headers split across reads (one byte per TLS record): a request with a body and
    trailers is answered, and DATA on the stream once closed both ways is still GOAWAY
    STREAM_CLOSED (the check waits for the whole frame header, as nghttp2 does)."""
    up, cg, c = env(t)

    def trickle(data):
        for i in range(len(data)):
            c.send(data[i:i + 1])

    trickle(c.headers_frame(1, request_headers("POST", "/body"), end_stream=False)
            + frame(DATA, 0, 1, b"abc") + frame(HEADERS, END_STREAM | END_HEADERS, 1,
                                                 hp_block([("x-checksum", "0")])))
    s = c.response(1)
    check(s.status == 200 and b"body-length: 3" in bytes(s.body), "stream 1: %r (%s)"
          % (s, c.state()))
    trickle(frame(DATA, END_STREAM, 1, b"late"))
    check(c.wait(lambda: c.goaway is not None or c.eof),
          "DATA on closed stream 1: no GOAWAY (%s)" % c.state())
    check(c.goaway is not None and c.goaway[1] == STREAM_CLOSED,
          "DATA on closed stream 1: want GOAWAY STREAM_CLOSED (%s)" % c.state())


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    h2lib.init(harness)
    harness.add_tests(TESTS)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import run  # noqa: E402
    register(run)
    sys.exit(run.main())
