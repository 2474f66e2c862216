"""test_h2review3.py: group h2rev3., the limits the hostile reviews of the HTTP/2 path left
(docs/testing.md), each through raw frames (h2lib) or python3-h2 against certgate with an h2c
or HTTP/1.1 upstream; each failed before its fix.

- A request the client side refuses after its head went upstream (trailers over the header
  limit, trailers with a pseudo-header, a content-length the DATA disagrees with) never ends
  upstream: an h2c upstream gets RST_STREAM instead of END_STREAM, an HTTP/1.1 upstream
  connection is closed before the request's last byte (the HTTP/1.1 test failed before).
"""

import json
import re
import socket
import threading
import time

import h2lib
import test_h2upc
from h2lib import DATA, END_STREAM, H2Conn, frame, request_headers

H = None


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


BIG = 10 * 1024  # a trailer value over limits.max_request_head below, in one frame
SMALL_HEAD = {"max_request_head": "8KiB"}


def open_post(c, path, extra=(), body=b"hello"):
    """HEADERS of a POST without END_STREAM, then |body| without END_STREAM."""
    sid = c.next_sid()
    c.send(c.headers_frame(sid, request_headers("POST", path, extra=list(extra)),
                           end_stream=False) + frame(DATA, 0, sid, body))
    return sid


def trailers(c, sid, hdrs):
    c.send(c.headers_frame(sid, hdrs, end_stream=True))


# ---------------------------------------------------------------------------------------------
# 1. a request refused at its end is aborted upstream

def t_refused_trailers_abort_h2c(t):
    """Trailers over the header limit reset the client's stream; the h2c upstream must not see
    the request end (END_STREAM), it gets RST_STREAM. So must trailers with a pseudo-header
    (nghttp2 resets that stream itself), and a content-length the DATA disagrees with at the
    trailers' END_STREAM. This one passed before the fix too: the reset went
    to the client, and with it the abort upstream, in the event that read the trailers, before
    the h2c socket was written; it now holds by construction (the abort comes first)."""
    up, cg = test_h2upc.env(t, limits=SMALL_HEAD)
    c = H2Conn(t, cg.ports["https"])
    c.wait_settings()
    a = open_post(c, "/echo?case=big")
    b = open_post(c, "/echo?case=pseudo")
    d = open_post(c, "/echo?case=short", extra=[("content-length", "10")])
    time.sleep(T(0.5))  # the heads and bodies went upstream
    trailers(c, a, [("x-big", "b" * BIG)])
    trailers(c, b, [(":path", "/other"), ("x-t", "1")])
    trailers(c, d, [("x-t", "1")])  # 5 bytes of 10
    sa, sb, sd = c.response(a), c.response(b), c.response(d)
    check(sa.reset is not None, "oversized trailers: %r" % sa)
    check(sb.reset is not None or (sb.status or 0) >= 400, "pseudo-header trailers: %r" % sb)
    check(sd.reset is not None or (sd.status or 0) >= 400, "content-length mismatch: %r" % sd)
    time.sleep(T(0.5))
    st = up.stats()
    ended = [p for p in st.get("ended", []) if "case=" in p]
    check(not ended, "the h2c upstream saw these requests end although certgate reset the "
          "client's streams: %r (resets upstream: %r)" % (ended, st["resets"]))
    h2lib.healthy(t, cg, name="https")


class Recorder:
    """An HTTP/1.1 upstream that reads each request to its end (Content-Length or the last
    chunk) and records how it ended: "complete" (answered 200) or "eof" with the bytes seen."""

    def __init__(self, t):
        self.lock = threading.Lock()
        self.seen = []
        self.up = None

    def answer(self, c, n, k, head, body):
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        chunked = re.search(rb"(?im)^transfer-encoding:\s*chunked", head) is not None
        path = head.split(b" ")[1].decode("latin-1")
        data = body
        while True:
            if m and len(data) >= int(m.group(1)):
                break
            if chunked and b"0\r\n\r\n" in data:
                break
            if not m and not chunked:
                break
            try:
                more = c.recv(65536)
            except OSError:
                more = b""
            if not more:
                with self.lock:
                    self.seen.append((path, "eof", len(data)))
                return False
            data += more
        with self.lock:
            self.seen.append((path, "complete", len(data)))
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
        return True

    def outcome(self, marker):
        with self.lock:
            return [(o, n) for p, o, n in self.seen if marker in p]


def http1_env(t, rec, limits=None):
    import test_h2up1
    test_h2up1.H = H
    return test_h2up1.raw_env(t, rec.answer, limits=limits, read_body=False)


def t_refused_request_abort_http1(t):
    """Toward an HTTP/1.1 upstream, a chunked request certgate refuses at its end (trailers
    over the limit) must not be complete upstream: the last chunk never goes, the upstream
    connection is closed. A Content-Length request is complete upstream with its last byte:
    a full-duplex client may wait for the answer before its END_STREAM (RFC 9113 8.1,
    h2rev4.cl_request_answered_before_end_stream), so such a request refused later (trailers,
    more DATA than declared) has reached the application whole, as declared; its client stream
    is still reset. A request that ends in an empty DATA frame later is complete."""
    rec = Recorder(t)
    up, cg = http1_env(t, rec, limits=SMALL_HEAD)
    c = H2Conn(t, cg.ports["https"])
    c.wait_settings()
    chunked = open_post(c, "/up?case=chunked")
    cl = open_post(c, "/up?case=cl", extra=[("content-length", "5")])
    cl0 = open_post(c, "/up?case=zero", extra=[("content-length", "0")], body=b"")
    more = open_post(c, "/up?case=mismatch", extra=[("content-length", "5")])
    conn = open_post(c, "/up?case=conntrailer", extra=[("content-length", "5")])
    ok = open_post(c, "/up?case=fine", extra=[("content-length", "5")])
    time.sleep(T(0.7))  # heads and bodies went upstream, as far as certgate sends them
    for sid in (chunked, cl, cl0):
        trailers(c, sid, [("x-big", "b" * BIG)])
    c.send(frame(DATA, END_STREAM, more, b"!"))
    trailers(c, conn, [("connection", "close")])
    c.send(frame(DATA, END_STREAM, ok, b""))
    s = c.response(chunked)
    check(s.reset is not None or (s.status or 0) >= 400, "chunked stream: %r" % s)
    for sid in (cl, cl0, more, conn):  # answered (complete upstream) before the refusal, or reset
        c.response(sid)
    s = c.response(ok)
    check(s.status == 200, "a Content-Length request ended by an empty DATA frame: %r" % s)
    time.sleep(T(0.7))
    bad = {}
    for case in ("chunked",):
        got = rec.outcome("case=" + case)
        if any(o == "complete" for o, n in got):
            bad[case] = got
    check(not bad, "the HTTP/1.1 upstream got complete requests whose client streams certgate "
          "reset: %r (all: %r)" % (bad, rec.seen))
    check(rec.outcome("case=fine") == [("complete", 5)], "fine: %r" % rec.outcome("case=fine"))
    h2lib.healthy(t, cg, name="https")


# ---------------------------------------------------------------------------------------------
# 2. every stream gets its access-log line

def requests_total(cg, code):
    status, body = H.http_get(cg.admin_port, "/metrics")
    m = re.search(rb'certgate_requests_total\{listener="https",code="%d"\} (\d+)' % code, body)
    return int(m.group(1)) if m else 0


def t_refused_stream_logged_on_close(t):
    """A stream nghttp2 refused (a connection-specific header: RST_STREAM PROTOCOL_ERROR) whose
    reset never went out, because a connection error in the same read ended the session first,
    must still get its access-log line (status 400) and its count in certgate_requests_total
    when the connection closes."""
    import struct
    from h2lib import END_HEADERS, HEADERS, WINDOW_UPDATE
    up, cg = test_h2upc.env(t)
    tails = {"window_update_0": frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)),
             "even_stream_id": frame(HEADERS, END_HEADERS | END_STREAM, 2,
                                     h2lib.hp_block(request_headers()))}
    for name, tail in tails.items():
        before = len(H.log_events(cg, "access"))
        counted = requests_total(cg, 400)
        c = H2Conn(t, cg.ports["https"])
        c.wait_settings()
        sid = c.next_sid()
        c.send(c.headers_frame(sid, request_headers(path="/echo?" + name,
                                                    extra=[("connection", "close")])) + tail)
        check(c.wait_closed(5), "%s: not closed: %s" % (name, c.state()))
        c.sock.close()
        deadline = time.time() + T(3)
        while time.time() < deadline and len(H.log_events(cg, "access")) == before:
            time.sleep(0.05)
        lines = H.log_events(cg, "access")[before:]
        check(len(lines) == 1 and lines[0].get("status") == 400,
              "%s: access-log lines of the refused stream: %r (client saw %s)"
              % (name, lines, c.state()))
        check(requests_total(cg, 400) == counted + 1,
              "%s: certgate_requests_total{code=400} %d -> %d"
              % (name, counted, requests_total(cg, 400)))


# ---------------------------------------------------------------------------------------------
# 3. uploads waiting for an h2c slot do not stall running streams

def push(c, sid, n):
    """Sends up to |n| body bytes on |sid| as far as the windows allow now; returns how many."""
    sent = 0
    while sent < n:
        room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size,
                   n - sent)
        if room <= 0:
            break
        c.conn.send_data(sid, b"w" * room)
        sent += room
    c.flush()
    return sent


def t_waiting_uploads_do_not_stall_running(t):
    """Streams waiting for a slot of the h2c upstream's SETTINGS_MAX_CONCURRENT_STREAMS kept
    their request bodies (up to 64 KiB each) unacknowledged: 20 waiting uploads filled the
    1 MiB connection window, and the client's running upload, which holds the slot, stalled
    until a timeout. Waiting streams give the connection window back for what they buffer, up to
    a bound per connection; beyond it a waiting stream is refused (REFUSED_STREAM), and the
    running upload completes. The waiting streams within the bound are served afterwards with
    their whole bodies."""
    up, cg = test_h2upc.env(t, extra={"workers": 1}, max_streams=1)
    c = test_h2upc.H2Client(t, cg.ports["https"])
    total = 1024 * 1024
    a = c.request("/echo?running=1", method="POST", end=False)
    sent_a = push(c, a, 16384)
    c.pump(0.5, lambda: False)  # a holds the upstream's one slot
    waiting = {}
    for i in range(20):
        sid = c.request("/echo?waiting=%d" % i, method="POST", end=False)
        waiting[sid] = push(c, sid, 65536)
        c.pump(0.05, lambda: False)
    deadline = time.time() + T(8)
    while sent_a < total and time.time() < deadline and not c.closed:
        n = push(c, a, total - sent_a)
        sent_a += n
        if n == 0:
            c.pump(0.2, lambda: c.conn.local_flow_control_window(a) > 0 and
                   c.conn.outbound_flow_control_window > 0)
    check(sent_a == total, "the running upload stalled at %d of %d bytes behind %d waiting "
          "uploads (%r)" % (sent_a, total, len(waiting),
                            [(s, c.streams[s].reset) for s in waiting]))
    c.conn.end_stream(a)
    c.flush()
    st = c.wait([a], timeout=10)[0]
    check(st.status == 200 and json.loads(bytes(st.data))["body_len"] == total,
          "the running upload: %r %r" % (st.status, bytes(st.data[:200])))
    refused = [s for s in waiting if c.streams[s].reset is not None]
    kept = [s for s in waiting if c.streams[s].reset is None]
    check(all(c.streams[s].reset == 7 for s in refused), "resets: %r"
          % [(s, c.streams[s].reset) for s in refused])
    check(kept, "every waiting upload was refused")
    for sid in kept:
        c.conn.end_stream(sid)
    c.flush()
    for sid, st in zip(kept, c.wait(kept, timeout=20)):
        seen = json.loads(bytes(st.data)) if st.status == 200 else None
        check(seen and seen["body_len"] == waiting[sid],
              "waiting upload %d: %r %r" % (sid, st.status, bytes(st.data[:200])))
    if H.Opts.verbose:
        print("    %d waiting uploads refused, %d served" % (len(refused), len(kept)))
    check(c.get("/echo?after=1").status == 200, "a request after them")


# ---------------------------------------------------------------------------------------------
# 4. rapid reset mixed with cheap streams; cancellations that are not an attack

def t_mixed_rapid_reset_closed(t):
    """CVE-2023-44487 with cheap complete streams mixed in: one answered GET per
    HEADERS+RST_STREAM pair keeps the resets at exactly half of the streams, under the ratio
    rule, and only nghttp2's own limit (1000 resets, GOAWAY INTERNAL_ERROR) ended it. Premature
    resets also draw on a budget whatever the ratio: GOAWAY ENHANCE_YOUR_CALM after a few
    hundred, an h2_abuse event, and a fresh connection is served."""
    from h2lib import ENHANCE_YOUR_CALM, err_name, rst_frame
    up, cg, _ = H.http_env(t)
    c = H2Conn(t, cg.port())
    c.wait_settings()
    resets = 0
    for _ in range(75):  # up to 1500 resets
        out = b""
        cheap = []
        for _ in range(20):
            sid = c.next_sid()
            cheap.append(sid)
            out += c.headers_frame(sid, request_headers(path="/echo?mix=%d" % sid))
            sid = c.next_sid()
            out += c.headers_frame(sid, request_headers(path="/slow?ms=2000&mixrr=%d" % sid))
            out += rst_frame(sid)
        c.send(out)
        resets += 20
        c.wait(lambda: all(c.stream(s).done for s in cheap) or c.eof or c.goaway is not None,
               T(5))
        if c.eof or c.goaway is not None or c.send_err is not None:
            break
    check(c.goaway is not None and c.goaway[1] == ENHANCE_YOUR_CALM,
          "after %d resets mixed with as many answered streams: %s" % (resets, c.state()))
    check(resets <= 400, "closed only after %d resets" % resets)
    check(H.log_events(cg, "h2_abuse"), "no h2_abuse event: %s" % cg.tail(3))
    if H.Opts.verbose:
        print("    closed after %d resets (GOAWAY %s)" % (resets, err_name(c.goaway[1])))
    h2lib.healthy(t, cg)


def t_cancel_patterns_tolerated(t):
    """What clients legitimately do must not close the connection: a gRPC client that cancels
    calls that ran a while (watches, server streams, deadlines of seconds: 150 calls, each
    reset after more than a second, before its response; every stream of the connection was
    reset, which the ratio rule alone took for an attack), and bursts of quick cancellations
    among answered calls (150 among 330)."""
    from h2lib import rst_frame
    up, cg = test_h2upc.env(t)
    c = H2Conn(t, cg.ports["https"])
    c.wait_settings()
    for rnd in range(2):
        sids = [c.request(path="/slow?ms=%d&watch=%d" % (int(T(20) * 1000), rnd))
                for _ in range(75)]
        c.wait(lambda: False, 1.3)
        c.send(b"".join(rst_frame(sid) for sid in sids))
    for rnd in range(3):
        sids = [c.request(path="/echo?fine=%d" % rnd) for _ in range(60)]
        for sid in sids:
            s = c.response(sid)
            check(s.status == 200, "stream %d: %s (%s)" % (sid, s, c.state()))
        out = b""
        for _ in range(50):
            sid = c.next_sid()
            out += c.headers_frame(sid, request_headers(path="/slow?ms=2000&quick=%d" % rnd))
            out += rst_frame(sid)
        c.send(out)
        c.wait(lambda: False, 0.3)
    s = c.get("/echo?after=1")
    check(s.status == 200 and c.goaway is None,
          "after 150 long calls cancelled and 150 quick cancellations among 180 answered "
          "calls: %s (%s)" % (s, c.state()))


# ---------------------------------------------------------------------------------------------
# 5. the CONTINUATION limit counts one header block at a time

def split_block(c, sid, hdrs, pieces):
    """HEADERS and CONTINUATION frames of one header block of |hdrs| in |pieces| frames."""
    from h2lib import CONTINUATION, END_HEADERS, HEADERS
    block = h2lib.hp_block(hdrs)
    step = -(-len(block) // pieces)
    parts = [block[i:i + step] for i in range(0, len(block), step)]
    out = frame(HEADERS, END_STREAM | (END_HEADERS if len(parts) == 1 else 0), sid, parts[0])
    for i, p in enumerate(parts[1:], 1):
        out += frame(CONTINUATION, END_HEADERS if i == len(parts) - 1 else 0, sid, p)
    return out


def t_continuations_counted_per_block(t):
    """The CONTINUATION limit is 16 frames per header block, with GOAWAY ENHANCE_YOUR_CALM and
    an h2_abuse event (docs/http2.md). nghttp2's own limit (8 frames, PROTOCOL_ERROR, no event)
    came first, so a block in 12 frames was refused and a flood never got certgate's answer.
    Blocks nghttp2 only decodes for HPACK's sake (streams refused beyond
    SETTINGS_MAX_CONCURRENT_STREAMS before the client acknowledged it) must not add up to a
    flood either: ten of them in four frames each are not one."""
    up, cg = test_h2upc.env(t)
    c = H2Conn(t, cg.ports["https"], ack_settings=False)
    c.wait_settings()
    held = [c.request(path="/slow?ms=%d" % int(T(3) * 1000)) for _ in range(100)]
    c.wait(lambda: False, 0.5)
    out = b""
    extra = []
    for i in range(10):
        sid = c.next_sid()
        extra.append(sid)
        out += split_block(c, sid, request_headers(path="/echo?over=%d" % i,
                                                   extra=[("x-pad", "p" * 60)]), 4)
    c.send(out)
    c.wait(lambda: all(c.stream(s).done for s in extra) or c.eof or c.goaway is not None,
           T(3))
    check(c.goaway is None and not c.eof, "streams beyond the limit, each in 4 frames: %s"
          % c.state())
    check(all(c.stream(s).reset is not None for s in extra), "refused: %r"
          % [c.stream(s) for s in extra])
    for sid in held:
        s = c.response(sid, timeout=10)
        check(s.status == 200, "held stream %d: %s" % (sid, s))
    sid = c.next_sid()
    c.send(split_block(c, sid, request_headers(path="/echo?twelve=1",
                                               extra=[("x-pad", "p" * 240)]), 12))
    s = c.response(sid)
    check(s.status == 200, "a header block in 12 frames: %s (%s)" % (s, c.state()))
    sid = c.next_sid()
    c.send(split_block(c, sid, request_headers(extra=[("x-pad", "p" * 400)]), 20))
    check(c.wait_closed(5) and c.goaway is not None and c.goaway[1] == h2lib.ENHANCE_YOUR_CALM,
          "a header block in 20 frames: %s" % c.state())
    check(H.log_events(cg, "h2_abuse"), "no h2_abuse event: %s" % cg.tail(3))


TESTS = [
    ("h2rev3.continuations_counted_per_block", t_continuations_counted_per_block),
    ("h2rev3.mixed_rapid_reset_closed", t_mixed_rapid_reset_closed),
    ("h2rev3.cancel_patterns_tolerated", t_cancel_patterns_tolerated),
    ("h2rev3.waiting_uploads_do_not_stall_running", t_waiting_uploads_do_not_stall_running),
    ("h2rev3.refused_stream_logged_on_close", t_refused_stream_logged_on_close),
    ("h2rev3.refused_trailers_abort_h2c", t_refused_trailers_abort_h2c),
    ("h2rev3.refused_request_abort_http1", t_refused_request_abort_http1),
]


def register(harness):
    global H
    H = harness
    h2lib.init(harness)
    test_h2upc.H = harness
    harness.add_tests(TESTS)

