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
                            limits={"upstream_response_timeout": "60s"})
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


TESTS = [
    ("h2rev2.abandoned_queued_h2c_streams_freed", t_abandoned_queued_h2c_streams_freed),
]


def register(harness):
    global H
    H = harness
    h2lib.init(harness)
    test_h2upc.H = harness
    harness.add_tests(TESTS)
