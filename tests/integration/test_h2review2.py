"""test_h2review2.py: group h2rev2., a second hostile review of the HTTP/2 path (h2/, its wiring
in net/conn*.c, docs/http2.md). Each test is a finding, through a real client (python3-h2 over
mutual TLS, or raw frames with h2lib), against certgate with an h2c or HTTP/1.1 upstream; each
failed before its fix."""

import time

import h2lib
import test_h2upc

H = None


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def t_abandoned_queued_h2c_streams_freed(t):
    """Streams that wait for a slot of the h2c upstream's SETTINGS_MAX_CONCURRENT_STREAMS, and
    whose client then goes away, must not keep their request heads. nghttp2 only marks a queued
    request HEADERS as cancelled and keeps it (with its copy of the header list) until the
    upstream frees a slot: a client that opens 100 streams with big heads and closes its
    connection, again and again, while the upstream is busy, made certgate's memory grow
    without bound (here 155 MiB for 2400 abandoned streams). The streams waiting for a
    slot are certgate's own queue now, and an abandoned one is freed at once; the stream that
    held the slot, and a new one after it, are still answered."""
    up, cg = test_h2upc.env(t, extra={"workers": 1}, max_streams=1,
                            limits={"upstream_response_timeout": "%ds" % int(H.T(60))})
    holder = test_h2upc.H2Client(t, cg.ports["https"])
    hs = holder.request("/slow?ms=%d" % int(H.T(20) * 1000))
    holder.pump(1, lambda: False)
    before = rss(cg.pid)
    # 56 * 1037 bytes once decoded; on the wire, one literal and 55 one-byte HPACK indexes
    pad = [("x-pad", "p" * 1000)] * 56
    for _ in range(24):
        c = test_h2upc.H2Client(t, cg.ports["https"])
        for _ in range(100):
            c.request("/echo", headers=pad)
        c.pump(0.3, lambda: False)
        c.sock.close()
    time.sleep(H.T(0.5))
    grown = rss(cg.pid) - before
    # ASan's allocator (quarantine, redzones) makes RSS meaningless.
    check(H.Opts.sanitizer or grown < 16 * 1024 * 1024,
          "certgate grew by %.1f MiB for streams whose clients went away" % (grown / 1048576.0))
    st = holder.wait([hs], timeout=30)[0]
    check(st.status == 200, "the stream holding the slot: %r %r" % (st.status, st.reset))
    st = holder.get("/echo", timeout=15)
    check(st.status == 200, "a new stream after them: %r %r" % (st.status, st.reset))


def t_shutdown_delay_serves_new_h2_connections(t):
    """CONTRACT 2: during limits.shutdown_delay the listeners keep accepting and serve (with
    Connection: close, one response per connection). An HTTP/2 connection accepted then must
    be served too: a GOAWAY must not name a last stream below the client's first request."""
    import signal
    import test_h2client
    test_h2client.H = H
    up, cg = test_h2client.env(t, limits={"shutdown_delay": "%dms" % int(H.T(4) * 1000)})
    port = cg.port()
    check(test_h2client.curl(t, port, "/echo?before=1")[2] == 200, "before SIGTERM")
    cg.signal(signal.SIGTERM)
    time.sleep(H.T(0.5))
    bad = []
    for i in range(5):
        rc, ver, status, body, err = test_h2client.curl(t, port, "/echo?delay=%d" % i)
        if status != 200:
            bad.append((rc, ver, status, err.strip()[-200:]))
    for i in range(3):
        c = h2lib.H2Conn(t, port)
        sid = c.request(path="/echo?rawdelay=%d" % i)
        c.wait(lambda: c.stream(sid).done or c.eof, H.T(3))
        s = c.stream(sid)
        if s.status != 200:
            bad.append(("raw", str(s), c.state()))
        elif not c.wait_closed(H.T(3)) or c.goaway is None or c.goaway[0] < sid:
            bad.append(("raw, not closed after its stream", c.state()))
    check(not bad, "HTTP/2 requests during the shutdown delay: %r" % bad)
    rc = cg.wait(H.T(15))
    check(rc == 0, "exit status %r after the shutdown delay and the drain" % rc)


def t_h2_upstream_connections_bounded(t):
    """limits.max_connections bounds what certgate holds open: on HTTP/1.1 a client connection
    holds at most one upstream connection. Each HTTP/2 stream toward an HTTP/1.1 upstream holds
    one of its own, so one client connection with 100 streams held 100, and 10000 clients a
    million: file descriptors ran out (EMFILE) for every listener and tenant. The upstream
    connections of HTTP/2 streams count against limits.max_connections; a stream beyond it
    gets 503 at once, and the others are served."""
    import threading
    import test_h2up1
    test_h2up1.H = H
    lock = threading.Lock()
    live = {"now": 0, "max": 0}

    def answer(c, n, k, head, body):
        with lock:
            live["now"] += 1
            live["max"] = max(live["max"], live["now"])
        time.sleep(H.T(1.5))
        with lock:
            live["now"] -= 1
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
        return True

    up, cg = test_h2up1.raw_env(t, answer, limits={"max_connections": 4})
    c = test_h2up1.H2Client(t, cg.ports["https"])
    sids = [c.request("GET", "/held?i=%d" % i) for i in range(12)]
    res = [c.wait(sid, timeout=15) for sid in sids]
    statuses = sorted(r["status"] for r in res)
    check(len(up.conns) <= 4 and live["max"] <= 4,
          "one HTTP/2 client connection made certgate open %d upstream connections (%d at "
          "once) with max_connections 4; statuses %r" % (len(up.conns), live["max"], statuses))
    check(statuses.count(200) >= 3 and set(statuses) <= {200, 503},
          "statuses %r" % statuses)
    r = c.wait(c.request("GET", "/held?after=1"), timeout=15)
    check(r["status"] == 200, "a stream after them: %r" % r)


TESTS = [
    ("h2rev2.h2_upstream_connections_bounded", t_h2_upstream_connections_bounded),
    ("h2rev2.shutdown_delay_serves_new_h2_connections", t_shutdown_delay_serves_new_h2_connections),
    ("h2rev2.abandoned_queued_h2c_streams_freed", t_abandoned_queued_h2c_streams_freed),
]


def register(harness):
    global H
    H = harness
    h2lib.init(harness)
    test_h2upc.H = harness
    harness.add_tests(TESTS)
