"""test_h2review4.py: group h2rev4., what the fourth hostile review of the HTTP/2 path found
(the session of f313cc5..58951d7: h2_closed.c, the h2_stream.c split, the parked uploads, the
premature-reset budget, requests refused at their end, ocsp_fetch's address list). Each test
shows a bug against the real binary and fails until it is fixed.

- A Content-Length request toward an HTTP/1.1 upstream whose body is complete but whose
  END_STREAM the client sends only after the response (a full-duplex client) never gets its
  response: certgate holds the body's last byte (or the head's, for content-length 0) until
  END_STREAM, the application waits for it, the client waits for the answer, until
  idle_timeout turns it into a 504 (h2_up1.c up1_send).
- The premature-reset bucket (200, 20/s, whatever the ratio) closes a legitimate gRPC client
  whose sub-second deadlines expire against a slow upstream, with every call in flight.
- Resets certgate is made to send (MadeYouReset: DATA over content-length) are not budgeted.
- h2_closed answers STREAM_CLOSED before nghttp2's FRAME_SIZE_ERROR / PROTOCOL_ERROR.
- ocsp_fetch: a first address that drops SYNs uses all of ocsp_timeout; the next is never
  tried.
"""

import socket
import struct
import time

import h2lib
from h2lib import DATA, END_STREAM, H2Conn, frame, request_headers

H = None


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


# ---------------------------------------------------------------------------------------------
# 1. the held last byte toward HTTP/1.1

def t_cl_request_answered_before_end_stream(t):
    """RFC 9113 8.1 lets a server answer before the client ended its stream, and a request with
    Content-Length whose DATA carried all of it is complete for an HTTP/1.1 application. A
    client that sends the whole body without END_STREAM and ends its stream only once the
    response came (a full-duplex client; an empty DATA frame with END_STREAM afterwards) got
    its 200 before c8e0b74. Now certgate keeps the last body byte (content-length 5) or the
    head's last byte (content-length 0) back until END_STREAM: the upstream never sees a
    complete request, nothing answers, and after idle_timeout the client gets a 504 for a
    request its application never received."""
    import test_h2review3 as r3
    r3.H = H
    rec = r3.Recorder(t)
    up, cg = r3.http1_env(t, rec, limits={"idle_timeout": "3s"})
    c = H2Conn(t, cg.ports["https"])
    c.wait_settings()
    body = r3.open_post(c, "/up?case=body", extra=[("content-length", "5")], body=b"hello")
    zero = r3.open_post(c, "/up?case=zero", extra=[("content-length", "0")], body=b"")
    sb, sz = c.stream(body), c.stream(zero)
    c.wait(lambda: sb.done and sz.done, 2)
    got = (repr(sb), repr(sz), rec.outcome("case=body"), rec.outcome("case=zero"))
    # the client ends its side now (what it would have done after the response)
    c.send(frame(DATA, END_STREAM, body, b"") + frame(DATA, END_STREAM, zero, b""))
    c.wait(lambda: sb.done and sz.done, 5)
    check(got[0].find("200") >= 0 and got[1].find("200") >= 0,
          "complete Content-Length requests were not answered before the client's END_STREAM "
          "(within 2 s): body stream %s, content-length 0 stream %s; the upstream saw %r / %r "
          "(the last byte is held back for END_STREAM: h2_up1.c up1_send)" % got)


# ---------------------------------------------------------------------------------------------
# 2. the premature-reset bucket closes a legitimate client under a slow upstream

def t_deadline_cancels_under_slow_upstream(t):
    """A gRPC client with sub-second deadlines (300 ms) against an upstream that became slow
    (1.5 s) cancels every slow call at its deadline: about 40 premature resets a second, while
    most of its calls (fast ones, 60 a second) are answered; the resets are well under half of
    its streams, so the ratio rule does not apply. The bucket of 200 refilled at 20/s
    (901284f) closes the connection anyway after about 8 s (GOAWAY ENHANCE_YOUR_CALM), and with
    it every call in flight on it: a slow upstream turns into connection churn and failed
    calls that would have succeeded. What should happen: the connection is kept (a reset
    budget whatever the ratio should scale with the streams answered, or count only resets
    of streams that never reached the upstream or came within a few ms, as Envoy's ratio-only
    rule does)."""
    import test_h2upc
    from h2lib import rst_frame
    test_h2upc.H = H
    up, cg = test_h2upc.env(t)
    c = H2Conn(t, cg.ports["https"])
    c.wait_settings()
    start = time.time()
    slow = []            # (sid, opened at)
    fast = []
    cancelled = 0
    next_slow = next_fast = start
    while time.time() - start < T(12):
        now = time.time()
        if now >= next_slow:
            slow.append((c.request(path="/slow?ms=1500"), now))
            next_slow += 1 / 40.0
        if now >= next_fast:
            fast.append(c.request(path="/echo?fast=1"))
            next_fast += 1 / 60.0
        due = [sid for sid, at in slow if now - at >= 0.3]
        if due:
            c.send(b"".join(rst_frame(sid) for sid in due))
            cancelled += len(due)
            slow = [(sid, at) for sid, at in slow if now - at < 0.3]
        c.drain()
        if c.goaway is not None or c.eof:
            break
        time.sleep(0.005)
    answered = sum(1 for sid in fast if c.stream(sid).status == 200)
    check(c.goaway is None and not c.eof,
          "a client cancelling calls at a 300 ms deadline (%d cancelled, %d fast calls "
          "answered of %d, in %.1f s) was closed: %s" % (cancelled, answered, len(fast),
                                                         time.time() - start, c.state()))


# ---------------------------------------------------------------------------------------------
# 3. ocsp_fetch: an address that does not answer takes the whole timeout

def t_ocsp_blackholed_first_address(t):
    """4548a29 tries the responder's addresses one after the other "until one connects", for a
    responder reachable over IPv4 behind a name whose other address is unreachable. An
    unreachable address is usually one whose SYNs are dropped (a firewalled or unrouted IPv6
    address), not one that refuses: the connect then hangs, and the one ocsp_timeout covering
    all addresses runs out on the first, so the second is never tried and, in hard_fail, the
    good leaf is refused. Here the first address is a listener whose accept queue is full (the
    kernel drops the SYNs), the second a relay to the responder (as ocsp.responder_second_address
    sets up the name). What should happen: each address gets a share of the timeout (or a short
    connect timeout, or Happy Eyeballs, RFC 8305), and the good leaf is served
    (proxy/tls/ocsp_fetch.c dial/connect_cb)."""
    import subprocess
    import test_ocsp as o
    o.H = H
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    check(probe.returncode == 0, "this test needs `unshare -rm`: %s" % probe.stderr.strip())
    port, real = H.free_port(), H.free_port()
    pki = o.Pki(t)
    name = "ocsp-blackhole.test"
    pki.leaf("good", port, aia_host=name)
    o.responder(t, pki, real)
    relay = o.Forwarder(t, "127.0.0.2", port, real)
    hole = socket.socket()
    hole.bind(("127.0.0.1", port))
    hole.listen(0)
    t.socks.append(hole)
    filler = socket.create_connection(("127.0.0.1", port), timeout=2)  # the queue is full now
    t.socks.append(filler)
    hosts = pki.path("hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n127.0.0.1 %s\n127.0.0.2 %s\n" % (name, name))
    saved = list(H.Opts.wrapper)
    H.Opts.wrapper = ["unshare", "-rm", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
                      hosts] + saved
    try:
        up, cg = o.start(t, pki, "hard_fail", timeout="3s")
    finally:
        H.Opts.wrapper = saved
    t0 = time.time()
    got = o.outcome(t, cg, pki.ctx("good"))
    check(got == "ok", "the good leaf was %r after %.1f s: the first address (SYNs dropped) "
          "took all of ocsp_timeout, the second (relay accepted %d connections) was never "
          "tried: %s" % (got, time.time() - t0, relay.accepted, cg.tail(2)))


# ---------------------------------------------------------------------------------------------
# 4. h2_closed's check comes before nghttp2's frame checks

def t_closed_check_before_frame_checks(t):
    """h2_closed judges a DATA or HEADERS frame by its header alone, before nghttp2 reads it,
    so a frame that is malformed in itself gets h2_closed's STREAM_CLOSED when it names a
    stream the client closed: a DATA frame over SETTINGS_MAX_FRAME_SIZE (RFC 9113 4.2: MUST be
    FRAME_SIZE_ERROR) and a padded DATA frame whose padding is as long as its payload (6.1: MUST
    be PROTOCOL_ERROR). Before e98f061 nghttp2 alone answered the first FRAME_SIZE_ERROR (and
    ignored the second, on a stream it no longer knew: not the RFC's answer either);
    h2_closed_mem_recv should leave frames malformed in themselves to nghttp2
    (check_frame in proxy/h2/h2_closed.c: at least the length against the local
    SETTINGS_MAX_FRAME_SIZE, and the pad length once the first payload octet is there)."""
    from h2lib import FRAME_SIZE_ERROR, PADDED, PROTOCOL_ERROR, err_name
    up, cg, _ = H.http_env(t)
    cases = [("a DATA frame of 16385 octets", FRAME_SIZE_ERROR,
              lambda sid: frame(DATA, 0, sid, b"x" * 16385)),
             ("a DATA frame whose padding fills it", PROTOCOL_ERROR,
              lambda sid: frame(DATA, PADDED, sid, bytes([4]) + b"abc"))]
    bad = []
    for what, want, make in cases:
        c = H2Conn(t, cg.port())
        c.wait_settings()
        s = c.response(c.request(path="/echo?closed=1"))  # END_STREAM both ways: closed
        check(s.status == 200, "the first request: %r" % s)
        c.send(make(s.id))
        c.wait(lambda: c.goaway is not None or c.eof, 3)
        got = c.goaway[1] if c.goaway else None
        if got != want:
            bad.append("%s on a closed stream: GOAWAY %s, want %s" % (
                what, err_name(got) if got is not None else None, err_name(want)))
    check(not bad, "; ".join(bad))


# ---------------------------------------------------------------------------------------------
# 5. resets certgate is made to send are not counted (MadeYouReset)

def t_provoked_resets_counted(t):
    """CVE-2025-8671 (MadeYouReset): instead of RST_STREAM, the client makes certgate reset
    each stream, here with more DATA than its content-length (RFC 9113 8.1.1: malformed, a
    stream error PROTOCOL_ERROR, which nghttp2 answers with RST_STREAM). Each stream went upstream first
    (toward HTTP/1.1, one new upstream connection per stream, closed at the reset), its
    concurrency slot is free at once, and none of it is a premature reset: only the flood
    bucket of invalid frames (1000, then 100/s) applies, five times the reset budget. As
    h2rev3.mixed_rapid_reset_closed does with the client's own RST_STREAM (closed within 400
    resets, GOAWAY ENHANCE_YOUR_CALM), a stream reset by certgate for the client's fault
    within H2_RESET_LIFETIME_MS should count as a premature reset (reset_allowed in
    proxy/h2/h2_server.c is only called from the client's RST_STREAM)."""
    from h2lib import ENHANCE_YOUR_CALM
    up, cg, _ = H.http_env(t)
    c = H2Conn(t, cg.port())
    c.wait_settings()
    resets = 0
    for _ in range(60):  # up to 1200 streams
        out = b""
        cheap = []
        for _ in range(20):
            sid = c.next_sid()
            cheap.append(sid)
            out += c.headers_frame(sid, request_headers(path="/echo?mix=%d" % sid))
            sid = c.next_sid()
            out += c.headers_frame(sid, request_headers(
                "POST", "/slow?ms=2000&myr=%d" % sid, extra=[("content-length", "1")]),
                end_stream=False)
            out += frame(DATA, END_STREAM, sid, b"xy")
        c.send(out)
        resets += 20
        c.wait(lambda: all(c.stream(s).done for s in cheap) or c.eof or c.goaway is not None,
               T(5))
        if c.eof or c.goaway is not None or c.send_err is not None:
            break
    time.sleep(T(0.5))
    heads = up.received().count(b"myr=")
    check(c.goaway is not None and c.goaway[1] == ENHANCE_YOUR_CALM and resets <= 400,
          "streams reset by certgate at the client's request (DATA over content-length): %d of "
          "them, %d of their request heads reached the upstream, and the connection is still "
          "served: %s" % (resets, heads, c.state()))


TESTS = [
    ("h2rev4.provoked_resets_counted", t_provoked_resets_counted),
    ("h2rev4.closed_check_before_frame_checks", t_closed_check_before_frame_checks),
    ("h2rev4.ocsp_blackholed_first_address", t_ocsp_blackholed_first_address),
    ("h2rev4.deadline_cancels_under_slow_upstream", t_deadline_cancels_under_slow_upstream),
    ("h2rev4.cl_request_answered_before_end_stream", t_cl_request_answered_before_end_stream),
]


def register(harness):
    global H
    H = harness
    h2lib.init(harness)
    harness.add_tests(TESTS)
