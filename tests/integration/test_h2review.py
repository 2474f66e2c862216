"""test_h2review.py: group h2rev., a hostile review of the HTTP/2 and gRPC path (issue 13).
Each test is a finding of the review, through a real client (python3-h2, or raw frames with
h2lib), against certgate with an h2c or HTTP/1.1 upstream."""

import json
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


TESTS = [
    ("h2rev.trailers_cc_header_stripped", t_trailers_cc_header_stripped),
]


def register(harness):
    global H
    H = harness
    h2lib.init(harness)
    test_h2upc.H = harness
    harness.add_tests(TESTS)
