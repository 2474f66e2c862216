"""test_h2review.py: group h2rev., a hostile review of the HTTP/2 and gRPC path (issue 13).
Each test is a finding of the review, through a real client (python3-h2, or raw frames with
h2lib), against certgate with an h2c or HTTP/1.1 upstream."""

import json
import ssl
import sys

import h2lib
import test_h2upc

H = None


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def t_trailers_cc_header_stripped(t):
    """SECURITY 8: a client copy of the client-certificate header never reaches the upstream,
    request trailers included. An h2c upstream gets the request trailers (gRPC): the client's
    x-forwarded-client-cert (or another of the family, or a strip_headers name) in them must not
    go along."""
    up, cg = test_h2upc.env(t)
    c = test_h2upc.H2Client(t, cg.ports["https"])
    sid = c.request("/echo", method="POST", body=b"x",
                    headers=[("te", "trailers"), ("content-type", "application/grpc")],
                    trailers=[("x-forwarded-client-cert", "By=spoofed;Hash=00;Subject=\"CN=admin\""),
                              ("x-client-cert", "spoofed"), ("x-forwarded-for", "6.6.6.6"),
                              ("host", "evil.example"), ("x-client-trailer", "kept")])
    st = c.wait([sid])[0]
    check(st.status == 200, "status %r reset %r" % (st.status, st.reset))
    seen = json.loads(bytes(st.data))
    names = [k for k, v in seen["trailers"]]
    check(["x-client-trailer", "kept"] in seen["trailers"], "trailers: %r" % seen["trailers"])
    for bad in ("x-forwarded-client-cert", "x-client-cert", "x-forwarded-for", "host"):
        check(bad not in names, "the client's %s went upstream in the trailers: %r"
              % (bad, seen["trailers"]))


def t_stalled_reader_frees_h2c_slots(t):
    """A client that stops reading responses (no WINDOW_UPDATE) but PINGs, so that its
    connection never goes idle, must not hold h2c upstream streams for ever: the upstream's
    concurrency limit is shared by every client of the worker. As the HTTP/1.1 upstream side
    does (h2_up1.c: a stream where nothing moved for idle_timeout is reset), a stalled h2c
    stream must be let go after idle_timeout, and another client's request gets through."""
    import time
    up, cg = test_h2upc.env(t, extra={"workers": 1}, max_streams=2,
                            limits={"idle_timeout": "1s", "upstream_response_timeout": "20s"})
    a = test_h2upc.H2Client(t, cg.ports["https"], ack=False)
    sa = [a.request("/download?bytes=%d&tag=a%d" % (4 << 20, i)) for i in range(2)]
    # The connection window (65535, never given back) fills with the two streams.
    a.pump(3, lambda: sum(len(a.streams[s].data) for s in sa) >= 65535)

    def ping_a():
        """PINGs from the stalled client; once certgate let its streams go, it may close it
        as idle (PINGs do not count), which is fine."""
        if a.closed:
            time.sleep(H.T(0.1))
            return
        try:
            a.conn.ping(b"keepaliv")
            a.flush()
            a.pump(0.3, lambda: False)
        except (OSError, ssl.SSLError):
            a.closed = True

    for _ in range(8):  # 2.4 s of PINGs, well past idle_timeout
        ping_a()
    b = test_h2upc.H2Client(t, cg.ports["https"])
    sb = b.request("/echo")
    deadline = time.time() + H.T(4)
    while not b.streams[sb].done and time.time() < deadline:
        ping_a()
        b.pump(0.2, lambda: b.streams[sb].done)
    st = b.streams[sb]
    check(st.done and st.status == 200,
          "another client's request waited behind a stalled client's h2c streams: status %r "
          "reset %r; stalled streams: %r" % (st.status, st.reset,
                                             [(a.streams[s].reset, len(a.streams[s].data))
                                              for s in sa]))


TESTS = [
    ("h2rev.trailers_cc_header_stripped", t_trailers_cc_header_stripped),
    ("h2rev.stalled_reader_frees_h2c_slots", t_stalled_reader_frees_h2c_slots),
]


def register(harness):
    global H
    H = harness
    h2lib.init(harness)
    test_h2upc.H = harness
    harness.add_tests(TESTS)
