#!/usr/bin/env python3
"""test_h2attack.py: the HTTP/2 attacks of issue 13 (item 4), in the group `h2attack.`, against
an http listener with a client certificate and the HTTP/1.1 recording upstream. run.py calls
register(itself); this file also runs on its own:

    python3 tests/integration/test_h2attack.py --binary build/certgate [-k h2attack.] [-v]

The client is h2lib.py: raw HTTP/2 frames over TLS (ALPN h2), built by hand because a
conforming library refuses to send most of them. Each test asserts what certgate does (GOAWAY
and its error code, RST_STREAM, 400/421/431, the connection closed), that the upstream did not
receive what must not reach it, and that certgate still serves a fresh connection afterwards.
"""

import hashlib
import itertools
import json
import os
import ssl
import sys
import time

import h2lib
from h2lib import (CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, HEADERS,
                   PING, PROTOCOL_ERROR, REFUSED_STREAM, COMPRESSION_ERROR,
                   SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_CONCURRENT_STREAMS, H2Conn,
                   err_name, frame, healthy, hp_block, hp_indexed, hp_literal,
                   hp_literal_indexed, request_headers, rst_frame, settings_frame)

H = None  # run.py's module, set by register()
TESTS = []


def test(name):
    def deco(fn):
        TESTS.append((name, fn))
        return fn
    return deco


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


def env(t, alg="ecdsa", limits=None, **lkw):
    up, cg, _ = H.http_env(t, alg, limits=limits, **lkw)
    return up, cg


def connect(t, cg, **kw):
    c = H2Conn(t, cg.port(), **kw)
    check(c.alpn == "h2", "ALPN chose %r, not h2" % c.alpn)
    return c


def targets(up):
    return [r["target"] for r in up.requests()]


def not_forwarded(up, marker, settle=0.3):
    """Checks that no request whose target contains |marker| reached the upstream."""
    time.sleep(settle)
    got = [x for x in targets(up) if marker in x]
    check(not got, "the upstream received %r" % got[:3])


def rss_limit_mib():
    return 48 if H.Opts.sanitizer else 32


def closed_with_calm(c, what, timeout=10, need_goaway=False, codes=(ENHANCE_YOUR_CALM,)):
    """Checks that certgate closed the connection within |timeout| and that its GOAWAY (needed
    when |need_goaway|) carries one of |codes|."""
    check(c.wait_closed(timeout), "%s: connection still open after %.0fs (%s)"
          % (what, T(timeout), c.state()))
    if c.goaway is None:
        check(not need_goaway, "%s: closed without a GOAWAY (%s)" % (what, c.state()))
        return
    check(c.goaway[1] in codes, "%s: GOAWAY %s, want %s (%s)"
          % (what, err_name(c.goaway[1]), "/".join(err_name(x) for x in codes), c.state()))


def stream_refused(s, statuses=(400,), resets=(PROTOCOL_ERROR,)):
    return (s.reset is not None and s.reset in resets) or (s.reset is None and
                                                            s.status in statuses)


# ---------------------------------------------------------------------------------------------
# rapid reset (CVE-2023-44487)

@test("h2attack.rapid_reset_goaway_enhance_your_calm")
def t_rapid_reset(t):
    up, cg = env(t)
    c = connect(t, cg)
    c.wait_settings()
    n = 5000
    per = 50

    def chunks():
        for base in range(0, n, per):
            out = b""
            for i in range(base, base + per):
                sid = 2 * i + 1
                out += c.headers_frame(sid, request_headers(path="/echo?rr=%d" % i))
                out += rst_frame(sid)
            yield out
    c.last_sid = 2 * n - 1
    sent = c.flood(chunks(), timeout=15)
    closed_with_calm(c, "after %d HEADERS+RST_STREAM pairs" % (sent * per), need_goaway=True)
    check(sent * per < n or c.goaway is not None, "no GOAWAY after %d pairs" % (sent * per))
    time.sleep(0.5)
    reached = len([x for x in targets(up) if "rr=" in x])
    if H.Opts.verbose:
        print("    rapid reset: %d pairs sent, %d reached the upstream, %s"
              % (sent * per, reached, c.state()))
    check(reached * 4 < sent * per, "%d of %d reset streams reached the upstream"
          % (reached, sent * per))
    check(H.log_events(cg, "h2_abuse"), "no h2_abuse event names the client: %s" % cg.tail(3))
    healthy(t, cg)


@test("h2attack.occasional_resets_tolerated")
def t_some_resets(t):
    """Clients cancel calls (browsers, gRPC deadlines): a few resets among answered streams
    are not an attack."""
    up, cg = env(t)
    c = connect(t, cg)
    for i in range(3):
        sids = [c.request(path="/echo?fine=%d" % (i * 40 + j)) for j in range(40)]
        for sid in sids:
            s = c.response(sid)
            check(s.status == 200, "stream %d: %s" % (sid, s))
        out = b""
        for _ in range(20):
            sid = c.next_sid()
            out += c.headers_frame(sid, request_headers(path="/slow?ms=2000&cancel=1"))
            out += rst_frame(sid)
        c.send(out)
    s = c.get("/echo?after")
    check(s.status == 200 and c.goaway is None, "after 60 resets among 120 answered streams: "
          "%s (%s)" % (s, c.state()))


@test("h2attack.stalled_header_block_closed")
def t_stalled_head(t):
    """Slowloris over HTTP/2: a header block that is never finished is bounded by
    limits.request_head_timeout as on HTTP/1.1."""
    up, cg = env(t, limits={"request_head_timeout": "1s"})
    c = connect(t, cg)
    c.wait_settings()
    first = c.get("/echo?beforestall=1")  # the connection has served a request already
    check(first.status is not None, "first stream: %s" % first)
    sid = c.next_sid()
    c.send(frame(HEADERS, END_STREAM, sid, hp_block(request_headers(path="/echo?stalled=1"))))
    start = time.time()
    closed = c.wait(lambda: c.eof or c.stream(sid).done, timeout=6)
    check(closed, "a header block without END_HEADERS kept the connection %.0fs (%s)"
          % (time.time() - start, c.state()))
    not_forwarded(up, "stalled")
    healthy(t, cg)


@test("h2attack.allowlist_delete_stops_live_connection")
def t_allowlist(t):
    import test_allowlist as al
    al.register(H)
    up, cg, _, _ = al.env(t)
    subject = al.leaf_subject("ecdsa")
    status, _ = al.admin(cg.admin_port, "PUT", al.subject_path(subject))
    check(status == 204, "PUT %d" % status)
    c = connect(t, cg)
    s = c.get("/echo?allowed=1")
    check(s.status == 200, "allowed subject: %s" % s)
    status, _ = al.admin(cg.admin_port, "DELETE", al.subject_path(subject))
    check(status == 204, "DELETE %d" % status)
    # the next stream gets 403, or certgate closed the connection (it does so to cut the
    # long-lived streams of a client no longer allowed); a new connection is not served either
    sid = c.request(path="/echo?allowed=2")
    c.wait(lambda: c.eof or c.stream(sid).done, timeout=5)
    s = c.stream(sid)
    check(s.status == 403 or (c.eof and not s.done), "the same h2 connection after DELETE: %s"
          " (%s), want 403 or the connection closed" % (s, c.state()))
    try:
        c2 = connect(t, cg)
        s2 = c2.response(c2.request(path="/echo?allowed=3"))
        check(s2.status == 403, "a new connection after DELETE: %s, want 403" % s2)
    except (ssl.SSLError, OSError, H.Failure) as e:
        check("want 403" not in str(e), str(e))  # refused at the handshake: fine
    not_forwarded(up, "allowed=2")
    not_forwarded(up, "allowed=3")


# ---------------------------------------------------------------------------------------------
# CONTINUATION flood (2024: CVE-2024-27316, -27983, -28182, ...)

def continuation_flood(t, fragment, per, limit):
    up, cg = env(t)
    c = connect(t, cg)
    c.wait_settings()
    watch = H.RssWatch(cg.pid)
    block = hp_block(request_headers(path="/echo?contflood=1"))
    c.send(frame(HEADERS, END_STREAM, 1, block))  # no END_HEADERS
    chunk = frame(CONTINUATION, 0, 1, fragment) * per
    sent = c.flood(itertools.repeat(chunk, limit), timeout=15)
    closed_with_calm(c, "CONTINUATION flood (%d frames, %d bytes)"
                     % (sent * per, sent * len(chunk)), need_goaway=True,
                     codes=(ENHANCE_YOUR_CALM, PROTOCOL_ERROR, COMPRESSION_ERROR))
    peak, _ = watch.stop()
    check(sent < limit, "certgate took all %d CONTINUATION frames" % (limit * per))
    check(peak < rss_limit_mib(), "RSS grew by %.1f MiB during the flood" % peak)
    not_forwarded(up, "contflood")
    healthy(t, cg)


@test("h2attack.continuation_flood_empty_frames")
def t_cont_empty(t):
    continuation_flood(t, b"", per=2000, limit=500)  # up to a million empty frames


@test("h2attack.continuation_flood_header_fragments")
def t_cont_fragments(t):
    # each fragment is a complete small header field: the list grows without end (40 MB)
    continuation_flood(t, hp_literal("x-flood", "f" * 100), per=100, limit=4000)


# ---------------------------------------------------------------------------------------------
# HPACK bomb: one large dynamic table entry referenced many times

@test("h2attack.hpack_bomb_refused_memory_bounded")
def t_hpack_bomb(t):
    up, cg = env(t)
    c = connect(t, cg)
    c.wait_settings()
    watch = H.RssWatch(cg.pid)
    # 4000 bytes + 32 fits the default 4096-byte table; 1000 references make 4 MB per block,
    # far above limits.max_request_head (64 KiB), from 5 KB on the wire
    entry = hp_literal_indexed("x-bomb", "b" * 4000)
    refs = hp_indexed(62) * 999
    sids = []
    for i in range(40):
        sid = c.next_sid()
        block = hp_block(request_headers(path="/echo?bomb=%d" % i)) + (entry if i == 0 else
                                                                       hp_indexed(62)) + refs
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, sid, block))
        sids.append(sid)
    c.wait(lambda: c.eof or all(c.stream(s).done for s in sids) or
           (c.goaway is not None and all(c.stream(s).done or s > c.goaway[0] for s in sids)),
           timeout=10)
    peak, _ = watch.stop()
    for sid in sids:
        s = c.stream(sid)
        if c.goaway is not None and sid > c.goaway[0]:
            continue  # refused with the connection
        check(s.done or c.eof, "bomb stream %d: no answer (%s)" % (sid, c.state()))
        check(not s.done or s.reset is not None or s.status == 431,
              "bomb stream %d answered %s, want 431 or RST_STREAM" % (sid, s))
    if c.goaway is not None:
        check(c.goaway[1] in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR, COMPRESSION_ERROR),
              "GOAWAY %s" % err_name(c.goaway[1]))
    check(peak < rss_limit_mib(), "RSS grew by %.1f MiB (40 blocks of 4 MB decoded)" % peak)
    not_forwarded(up, "bomb=")
    healthy(t, cg)


@test("h2attack.header_list_over_limit_431")
def t_head_431(t):
    """Without compression tricks: a plain header list over max_request_head is 431, under it
    200 (the HTTP/1 limits apply per stream)."""
    up, cg = env(t, limits={"max_request_head": "8KiB", "max_headers": 20})
    c = connect(t, cg)
    big = c.get("/echo?big431", extra=[("x-big", "a" * 10000)])
    check(stream_refused(big, (431,), ()) or big.reset is not None,
          "10 KB header: %s, want 431" % big)
    many = c.get("/echo?many431", extra=[("x-n%d" % i, "v") for i in range(25)])
    check(many.status == 431 or many.reset is not None, "25 headers: %s, want 431" % many)
    ok = c.get("/echo?small", extra=[("x-n%d" % i, "v" * 100) for i in range(15)])
    check(ok.status == 200, "under the limits: %s (%s)" % (ok, c.state()))
    not_forwarded(up, "431")
    healthy(t, cg)


# ---------------------------------------------------------------------------------------------
# floods of control frames and empty DATA

@test("h2attack.settings_flood_unread_acks")
def t_settings_flood(t):
    up, cg = env(t)
    c = connect(t, cg)
    chunk = settings_frame([(SETTINGS_INITIAL_WINDOW_SIZE, 65535)]) * 1000
    watch = H.RssWatch(cg.pid)
    sent = c.flood(itertools.repeat(chunk, 200), timeout=10, read=False)
    closed_with_calm(c, "after %d SETTINGS frames" % (sent * 1000))
    peak, _ = watch.stop()
    check(peak < rss_limit_mib(), "RSS grew by %.1f MiB" % peak)
    healthy(t, cg)


@test("h2attack.ping_flood_unread_acks")
def t_ping_flood(t):
    up, cg = env(t)
    c = connect(t, cg)
    chunk = frame(PING, 0, 0, b"12345678") * 1000
    watch = H.RssWatch(cg.pid)
    sent = c.flood(itertools.repeat(chunk, 200), timeout=10, read=False)
    closed_with_calm(c, "after %d PING frames" % (sent * 1000))
    peak, _ = watch.stop()
    check(peak < rss_limit_mib(), "RSS grew by %.1f MiB" % peak)
    healthy(t, cg)


@test("h2attack.empty_data_flood")
def t_empty_data(t):
    up, cg = env(t)
    c = connect(t, cg)
    c.wait_settings()
    sid = c.request("POST", "/body?emptydata=1", end=False)
    chunk = frame(DATA, 0, sid, b"") * 1000
    sent = c.flood(itertools.repeat(chunk, 500), timeout=10)
    closed_with_calm(c, "after %d empty DATA frames" % (sent * 1000))
    healthy(t, cg)


# ---------------------------------------------------------------------------------------------
# SETTINGS_MAX_CONCURRENT_STREAMS

@test("h2attack.max_concurrent_streams_excess_refused")
def t_max_streams(t):
    up, cg = env(t)
    c = connect(t, cg, ack_settings=False)  # the announced limit is not acknowledged yet
    settings = c.wait_settings()
    limit = settings.get(SETTINGS_MAX_CONCURRENT_STREAMS)
    check(limit is not None, "certgate announces no SETTINGS_MAX_CONCURRENT_STREAMS (%r)"
          % settings)
    check(0 < limit <= 128, "SETTINGS_MAX_CONCURRENT_STREAMS %d, want 1..128" % limit)
    extra = 10
    out = b""
    sids = []
    for i in range(limit + extra):
        sid = c.next_sid()
        sids.append(sid)
        out += c.headers_frame(sid, request_headers(path="/slow?ms=800&conc=%d" % i))
    c.send(out)
    c.ack_settings = True
    c.send(settings_frame(ack=True))
    c.wait(lambda: all(c.stream(s).done for s in sids), timeout=15)
    ok = [s for s in sids if c.stream(s).status == 200]
    refused = [s for s in sids if c.stream(s).reset in (REFUSED_STREAM, PROTOCOL_ERROR)]
    other = [c.stream(s) for s in sids if s not in ok and s not in refused]
    if H.Opts.verbose:
        print("    limit %d: %d ok, %d refused, other %r" % (limit, len(ok), len(refused),
                                                          other[:3]))
    check(not other, "streams neither answered nor refused: %r (%s)" % (other[:3], c.state()))
    check(len(refused) >= extra, "only %d of %d streams over the limit %d were refused"
          % (len(refused), limit + extra, limit))
    check(len(ok) >= limit - 1, "only %d streams within the limit %d completed"
          % (len(ok), limit))
    check(c.goaway is None, "GOAWAY %s" % err_name(c.goaway[1]) if c.goaway else "")
    healthy(t, cg)


# ---------------------------------------------------------------------------------------------
# connection-specific headers (RFC 9113 section 8.2.2)

CONN_HEADERS = [
    ("connection", "keep-alive"),
    ("transfer-encoding", "chunked"),
    ("keep-alive", "timeout=5"),
    ("upgrade", "websocket"),
    ("proxy-connection", "keep-alive"),
    ("te", "gzip"),
    ("te", "trailers, gzip"),
]


@test("h2attack.connection_specific_headers_refused")
def t_conn_headers(t):
    up, cg = env(t)
    bad = []
    for i, (name, value) in enumerate(CONN_HEADERS):
        c = connect(t, cg)
        s = c.get("/echo?connhdr=%d" % i, extra=[(name, value)])
        if not stream_refused(s):
            bad.append("%s: %s -> %s" % (name, value, s))
    check(not bad, "forwarded or answered: %s" % "; ".join(bad))
    not_forwarded(up, "connhdr=")
    healthy(t, cg)


@test("h2attack.te_trailers_allowed")
def t_te_trailers(t):
    up, cg = env(t)
    c = connect(t, cg)
    s = c.get("/echo?tetrailers=1", extra=[("te", "trailers")])
    check(s.status == 200, "te: trailers got %s" % s)
    check(any("tetrailers" in x for x in targets(up)), "not forwarded")


# ---------------------------------------------------------------------------------------------
# :authority, host and the 421 rule

def upstream_host(up, marker):
    reqs = [r for r in up.requests() if marker in r["target"]]
    check(len(reqs) == 1, "the upstream got %d requests for %s" % (len(reqs), marker))
    return [v for k, v in reqs[0]["headers"] if k.lower() == "host"]


@test("h2attack.authority_and_host_disagree_400")
def t_authority_host(t):
    up, cg = env(t)
    c = connect(t, cg)
    s = c.get("/echo?disagree=1", extra=[("host", "other.example")])
    check(s.status == 400 or s.reset is not None, ":authority localhost, host other.example: %s"
          % s)
    check(s.reset is None, "want 400, got RST_STREAM %s" % err_name(s.reset))
    s = c.get("/echo?disagree=2", authority="other.example", extra=[("host", "localhost")])
    check(s.status in (400, 421), ":authority other.example, host localhost: %s" % s)
    not_forwarded(up, "disagree=")
    healthy(t, cg)


@test("h2attack.host_alone_and_equal_authority_ok")
def t_host_ok(t):
    up, cg = env(t)
    c = connect(t, cg)
    s = c.get("/echo?hostalone=1", authority=None, extra=[("host", "localhost")])
    check(s.status == 200, "host alone: %s" % s)
    check(upstream_host(up, "hostalone") == ["localhost"], "upstream Host %r"
          % upstream_host(up, "hostalone"))
    s = c.get("/echo?hostequal=1", extra=[("host", "localhost")])
    check(s.status == 200, ":authority and host equal: %s" % s)
    check(len(upstream_host(up, "hostequal")) == 1, "upstream Host %r"
          % upstream_host(up, "hostequal"))
    port = "localhost:%d" % cg.port()
    s = c.get("/echo?authport=1", authority=port)
    check(s.status == 200, ":authority with the port: %s" % s)
    check(upstream_host(up, "authport") == [port], "upstream Host %r"
          % upstream_host(up, "authport"))


@test("h2attack.authority_other_than_sni_421")
def t_authority_421(t):
    up, cg = env(t)
    c = connect(t, cg)
    s = c.get("/echo?misdirected=1", authority="other.example")
    check(s.status == 421, ":authority other.example over SNI localhost: %s, want 421" % s)
    s = c.get("/echo?misdirected=2", authority=None, extra=[("host", "other.example")])
    check(s.status == 421, "host other.example (no :authority): %s, want 421" % s)
    not_forwarded(up, "misdirected")
    s = c.get("/echo?directed=1")
    check(s.status == 200, "the same connection then: %s" % s)


@test("h2attack.tenancy_authority_of_other_tenant_421")
def t_tenancy_421(t):
    ten = tenancy()
    up, cg = ten.env(t)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ten.pf("server-ca.crt"))
    ctx.check_hostname = False
    cert, key, _ = ten.client_files("a-client")
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    c = H2Conn(t, cg.port(), ctx=ctx, sni="a.example.com")
    check(c.alpn == "h2", "ALPN chose %r" % c.alpn)
    bad = []
    for i, auth in enumerate(["b.example.com", "B.EXAMPLE.COM.", "b.example.com:443",
                              "localhost", "a.example.com.evil.test"]):
        s = c.get("/echo?tenant421=%d" % i, authority=auth)
        if s.status != 421:
            bad.append("%s -> %s" % (auth, s))
    check(not bad, "SNI a.example.com: %s, want 421" % "; ".join(bad))
    not_forwarded(up, "tenant421")
    for auth in ("a.example.com", "A.Example.Com.", "a.example.com:%d" % cg.port()):
        s = c.get("/echo?tenantok=1", authority=auth)
        check(s.status == 200, ":authority %s over SNI a.example.com: %s" % (auth, s))


def tenancy():
    import test_tenancy
    test_tenancy.register(H)
    return test_tenancy


# ---------------------------------------------------------------------------------------------
# pseudo-header misuse (RFC 9113 section 8.3)

def pseudo_cases():
    base = request_headers
    return [
        ("missing_method", [h for h in base(path="/echo?pseudo=1") if h[0] != ":method"]),
        ("missing_path", [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                          ("x-pseudo", "2")]),
        ("missing_scheme", [h for h in base(path="/echo?pseudo=3") if h[0] != ":scheme"]),
        ("duplicate_path", base(path="/echo?pseudo=4") + [(":path", "/echo?pseudo=4b")]),
        ("duplicate_method", base(path="/echo?pseudo=5") + [(":method", "POST")]),
        ("unknown_pseudo", base(path="/echo?pseudo=6") + [(":foo", "bar")]),
        ("pseudo_after_regular", [(":method", "GET"), (":scheme", "https"),
                                  ("x-first", "1"), (":authority", "localhost"),
                                  (":path", "/echo?pseudo=7")]),
        ("uppercase_name", base(path="/echo?pseudo=8", extra=[("X-Upper", "1")])),
        ("empty_path", [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                        (":path", ""), ("x-pseudo", "9")]),
        ("path_without_slash", base(path="echo?pseudo=10")),
        ("response_pseudo_in_request", base(path="/echo?pseudo=11") + [(":status", "200")]),
    ]


@test("h2attack.pseudo_header_misuse_refused")
def t_pseudo(t):
    up, cg = env(t)
    bad = []
    for name, hdrs in pseudo_cases():
        c = connect(t, cg)
        s = c.response(c.request(headers=hdrs))
        if not stream_refused(s):
            bad.append("%s -> %s" % (name, s))
    check(not bad, "not refused: %s" % "; ".join(bad))
    time.sleep(0.3)
    got = [r["target"] for r in up.requests()]
    check(not got, "the upstream received %r" % got[:3])
    healthy(t, cg)


@test("h2attack.pseudo_header_in_trailers_refused")
def t_pseudo_trailers(t):
    up, cg = env(t)
    c = connect(t, cg)
    sid = c.request("POST", "/body?trailerpseudo=1", body=b"hello", end=False)
    c.send(c.headers_frame(sid, [(":path", "/evil"), ("x-trailer", "1")], end_stream=True))
    s = c.response(sid)
    check(s.reset is not None or s.status == 400, "pseudo-header in trailers: %s" % s)
    not_forwarded(up, "trailerpseudo")
    healthy(t, cg)


# ---------------------------------------------------------------------------------------------
# HTTP/2 to HTTP/1.1 downgrade smuggling (Kettle, "HTTP/2: the sequel is always worse")

SMUGGLE = "GET /smuggled HTTP/1.1\r\nHost: evil"


def downgrade_cases():
    base = request_headers
    return [
        ("crlf_in_value", base(path="/echo?dg=1", extra=[("x-a", "b\r\n" + SMUGGLE)])),
        ("lf_in_value", base(path="/echo?dg=2", extra=[("x-a", "b\n" + SMUGGLE)])),
        ("nul_in_value", base(path="/echo?dg=3", extra=[("x-a", "b\x00c")])),
        ("crlf_in_name", base(path="/echo?dg=4", extra=[("x-a\r\nx-evil", "1")])),
        ("colon_in_name", base(path="/echo?dg=5", extra=[("x-a:b", "1")])),
        ("space_in_name", base(path="/echo?dg=6", extra=[("x a", "1")])),
        ("space_in_path", base(path="/echo?dg=7 HTTP/1.1\r\nHost: evil\r\n\r\n" + SMUGGLE)),
        ("crlf_in_method", [(":method", "GET /smuggled HTTP/1.1\r\nHost: evil\r\n\r\nGET"),
                            (":scheme", "https"), (":authority", "localhost"),
                            (":path", "/echo?dg=8")]),
        ("crlf_in_authority", base(path="/echo?dg=9", authority="localhost\r\nx-evil: 1")),
        ("userinfo_in_authority", base(path="/echo?dg=10", authority="evil@localhost")),
        ("te_chunked", base("POST", "/body?dg=11", extra=[("transfer-encoding", "chunked")])),
    ]


@test("h2attack.downgrade_smuggling_refused")
def t_downgrade(t):
    up, cg = env(t)
    bad = []
    for name, hdrs in downgrade_cases():
        c = connect(t, cg)
        s = c.response(c.request(headers=hdrs))
        # userinfo (RFC 9113 8.3.1 forbids it): 400, or 421 as a host that is not the SNI's
        if not stream_refused(s, (400, 421) if "userinfo" in name else (400,)):
            bad.append("%s -> %s" % (name, s))
    check(not bad, "not refused: %s" % "; ".join(bad))
    time.sleep(0.3)
    got = up.received()
    check(b"smuggled" not in got and b"evil" not in got, "the upstream received %r"
          % got[max(0, got.find(b"evil") - 200):][:300])
    check(not [r for r in up.requests() if "dg=" in r["target"]], "a request was forwarded")
    healthy(t, cg)


@test("h2attack.content_length_mismatch_refused")
def t_cl_mismatch(t):
    """content-length must match the DATA (RFC 9113 8.1.1): an HTTP/1.1 upstream would
    otherwise read the rest of the body as the next request."""
    up, cg = env(t)
    bad = []
    cases = [("shorter", "10", b"hello"), ("longer", "3", b"hello" + b"GET /smuggled HTTP/1.1"),
             ("two_values", None, b"hello")]
    for i, (name, cl, body) in enumerate(cases):
        c = connect(t, cg)
        extra = [("content-length", cl)] if cl else [("content-length", "5"),
                                                     ("content-length", "6")]
        s = c.response(c.request("POST", "/body?clm=%d" % i, extra=extra, body=body))
        if not stream_refused(s):
            bad.append("%s -> %s" % (name, s))
    check(not bad, "not refused: %s" % "; ".join(bad))
    time.sleep(0.3)
    check(b"smuggled" not in up.received(), "the upstream received the smuggled request")
    check(not [r for r in up.requests() if "clm=" in r["target"]], "a request was forwarded")
    c = connect(t, cg)
    s = c.response(c.request("POST", "/body?clok=1", extra=[("content-length", "5")],
                             body=b"hello"))
    check(s.status == 200 and b"body-length: 5" in s.body, "a matching content-length: %s" % s)


# ---------------------------------------------------------------------------------------------
# client-certificate header spoofing over h2

SPOOFED = [
    ("x-forwarded-client-cert", "By=spoof-1;Hash=aa;Subject=\"CN=admin\""),
    ("x-forwarded-client-cert", "By=spoof-2;Hash=bb"),
    ("client-cert", ":c3Bvb2Y=:"),
    ("client-cert-chain", ":c3Bvb2Y=:"),
    ("ssl-client-cert", "spoof-3"),
    ("x-ssl-client-cert", "spoof-4"),
    ("x-ssl-cert", "spoof-5"),
    ("x-client-verify", "SUCCESS"),
    ("x-client-dn", "CN=spoof-6"),
    ("x-forwarded-tls-client-cert", "spoof-7"),
    ("x-forwarded-tls-client-cert-info", "spoof-8"),
    ("x-amzn-mtls-clientcert", "spoof-9"),
    ("x-arr-clientcert", "spoof-10"),
]


def leaf_hash(alg="ecdsa"):
    with open(os.path.join(H.Opts.pki[alg], "client.crt")) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


@test("h2attack.client_cert_headers_stripped_own_xfcc_set")
def t_spoof(t):
    up, cg = env(t)
    c = connect(t, cg)
    s = c.get("/echo?spoof=1", extra=SPOOFED)
    check(s.status == 200, "status %s" % s)
    reqs = [r for r in up.requests() if "spoof=1" in r["target"]]
    check(len(reqs) == 1, "%d requests reached the upstream" % len(reqs))
    hdrs = [(k.lower(), v) for k, v in reqs[0]["headers"]]
    leaked = [(k, v) for k, v in hdrs if "spoof" in v or v in ("SUCCESS", ":c3Bvb2Y=:")]
    check(not leaked, "spoofed headers reached the upstream: %r" % leaked)
    xfcc = [v for k, v in hdrs if k == "x-forwarded-client-cert"]
    check(len(xfcc) == 1, "upstream got %d x-forwarded-client-cert headers" % len(xfcc))
    check("Hash=%s" % leaf_hash() in xfcc[0], "XFCC without the client's hash: %r"
          % xfcc[0][:200])
    check("CN=0102030405060708" in xfcc[0], "XFCC without the subject: %r" % xfcc[0][:200])
    family = [k for k, _ in hdrs if k != "x-forwarded-client-cert" and
              any(w in k for w in ("client-cert", "clientcert", "ssl-cert", "client-dn",
                                   "client-verify", "x-amzn-mtls"))]
    check(not family, "client-cert family headers forwarded: %r" % family)


@test("h2attack.client_cert_header_underscore_refused")
def t_spoof_underscore(t):
    up, cg = env(t)
    c = connect(t, cg)
    s = c.get("/echo?underscore=1", extra=[("x_forwarded_client_cert", "By=spoof;Hash=cc")])
    check(s.status == 400 or s.reset is not None, "x_forwarded_client_cert: %s, want 400" % s)
    s = c.get("/echo?underscore=2", extra=[("transfer_encoding", "chunked")])
    check(s.status == 400 or s.reset is not None, "transfer_encoding: %s, want 400" % s)
    not_forwarded(up, "underscore=")
    s = c.get("/echo?underscore=3", extra=[("x_harmless", "1")])
    check(s.status == 200, "x_harmless (dropped, not refused): %s" % s)


# ---------------------------------------------------------------------------------------------
# access log

@test("h2attack.access_log_one_line_per_stream")
def t_access_log(t):
    up, cg = env(t)
    c = connect(t, cg)
    a = c.request("GET", "/echo?alog=1")
    b = c.request("POST", "/body?alog=2", body=b"x" * 1000)
    d = c.request("GET", "/status?code=404&alog=3")
    want = {a: ("GET", "/echo?alog=1", 200), b: ("POST", "/body?alog=2", 200),
            d: ("GET", "/status?code=404&alog=3", 404)}
    for sid, (_, _, status) in want.items():
        s = c.response(sid)
        check(s.status == status, "stream %d: %s" % (sid, s))
    deadline = time.time() + T(3)
    lines = []
    while time.time() < deadline:
        lines = [e for e in H.log_events(cg, "access") if "alog=" in (e.get("path") or "")]
        if len(lines) >= 3:
            break
        time.sleep(0.05)
    check(len(lines) == 3, "%d access-log lines for 3 streams: %s"
          % (len(lines), json.dumps(lines)[:400]))
    got = sorted((e.get("method"), e.get("path"), e.get("status")) for e in lines)
    check(got == sorted(want.values()), "access log %r, want %r" % (got, sorted(want.values())))
    for e in lines:
        check(e.get("subject") == "CN=0102030405060708,O=certgate demo",
              "subject %r" % e.get("subject"))
        check(e.get("listener") == "https", "listener %r" % e.get("listener"))
        check(e.get("protocol") == "HTTP/2", "protocol %r" % e.get("protocol"))
    post = [e for e in lines if e.get("method") == "POST"][0]
    check(post.get("bytes_in") == 1000, "POST bytes_in %r" % post.get("bytes_in"))


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
