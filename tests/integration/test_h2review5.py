"""test_h2review5.py: group h2rev5., what the fifth hostile review of the HTTP/2 path found
(the session of a5a575d..3e71304: MadeYouReset counted in on_frame_send, the rapid-reset
window, h2_closed's padding check, the held last byte reverted, ocsp_fetch's address shares).
Each test shows a bug against the real binary and fails until it is fixed.

- A request whose head and trailers are each within SETTINGS_MAX_HEADER_LIST_SIZE (which
  certgate advertises as limits.max_request_head, per header block: RFC 9113 6.5.2) but
  together over it is reset with PROTOCOL_ERROR (h2_server.c on_header: s->header_bytes is
  not restarted for the trailers' block), and since cf3b86a every such reset certgate sends
  counts as the client's rapid premature reset (on_frame_send): a client that does nothing
  its peer's SETTINGS forbid gets GOAWAY ENHANCE_YOUR_CALM after ~100 requests.
"""

import time

import h2lib
from h2lib import DATA, H2Conn, frame, request_headers

H = None


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


LIMITS = {"max_request_head": "4KiB"}


def _post_with_trailers(c):
    """A POST whose head (~2.7 KB) and trailers (~2 KB) each fit a 4 KiB header list."""
    sid = c.next_sid()
    head = request_headers("POST", "/echo?tr=%d" % sid,
                           extra=[("content-length", "5"), ("x-big", "h" * 2500)])
    out = c.headers_frame(sid, head, end_stream=False) + frame(DATA, 0, sid, b"hello")
    out += c.headers_frame(sid, [("x-trail", "t" * 2000)], end_stream=True)
    return sid, out


def t_trailers_within_settings_not_reset(t):
    """SETTINGS_MAX_HEADER_LIST_SIZE (4096 here) limits each header block; the request head
    (~2.7 KB) and its trailers (~2 KB) each respect it. certgate adds the trailers to the
    head's count and answers RST_STREAM PROTOCOL_ERROR ("malformed") for a request that is
    not. What should happen: the request is answered (the trailers judged on their own, as
    h2_up1_head.c already does toward HTTP/1.1 with max_trailer)."""
    up, cg, _ = H.http_env(t, limits=LIMITS)
    c = H2Conn(t, cg.port())
    c.wait_settings()
    adv = c.server_settings.get(6)
    sid, out = _post_with_trailers(c)
    c.send(out)
    c.wait(lambda: c.stream(sid).done or c.eof, T(5))
    s = c.stream(sid)
    check(s.reset is None and s.status == 200,
          "a request whose head and trailers each fit SETTINGS_MAX_HEADER_LIST_SIZE=%s: %r "
          "(%s)" % (adv, s, c.state()))


def t_legit_trailers_close_connection(t):
    """The same requests, one after another in batches of 20: each is reset by certgate with
    PROTOCOL_ERROR, on_frame_send counts that as the client's rapid premature reset, and the
    ratio rule (more than 100, more than half of the streams) closes the connection with
    GOAWAY ENHANCE_YOUR_CALM and an "h2_abuse ... MadeYouReset" warning, after ~100 requests
    of a client that never sent anything SETTINGS forbid. What should happen: the connection
    is kept (and no reset at all, see trailers_within_settings_not_reset)."""
    from h2lib import ENHANCE_YOUR_CALM
    up, cg, _ = H.http_env(t, limits=LIMITS)
    c = H2Conn(t, cg.port())
    c.wait_settings()
    sent = 0
    resets = 0
    for _ in range(8):  # 160 requests
        sids = []
        out = b""
        for _ in range(20):
            sid, o = _post_with_trailers(c)
            sids.append(sid)
            out += o
        c.send(out)
        sent += 20
        c.wait(lambda: all(c.stream(s).done for s in sids) or c.eof or c.goaway is not None,
               T(5))
        resets += sum(1 for s in sids if c.stream(s).reset is not None)
        if c.eof or c.goaway is not None or c.send_err is not None:
            break
    check(c.goaway is None or c.goaway[1] != ENHANCE_YOUR_CALM,
          "a client sending %d requests within the advertised header list size (%d of them "
          "reset by certgate) was closed as an abuser: %s" % (sent, resets, c.state()))


TESTS = [
    ("h2rev5.trailers_within_settings_not_reset", t_trailers_within_settings_not_reset),
    ("h2rev5.legit_trailers_close_connection", t_legit_trailers_close_connection),
]


def register(harness):
    global H
    H = harness
    h2lib.init(harness)
    harness.add_tests(TESTS)
