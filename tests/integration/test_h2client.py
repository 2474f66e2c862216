#!/usr/bin/env python3
"""test_h2client.py: HTTP/2 with real clients (issue 13, item 5), in the group `h2client.`:
curl --http2 and nghttp (Debian nghttp2-client) through mutual TLS to the HTTP/1.1 recording
upstream, ALPN selection per listener (alpn key), the handshake refusals, and the config errors
of the alpn and upstream_protocol keys. run.py calls register(itself); this file also runs on
its own:

    python3 tests/integration/test_h2client.py --binary build/certgate [-k h2client.] [-v]
"""

import hashlib
import json
import os
import re
import ssl
import sys
import time

import h2lib

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


def env(t, alg="ecdsa", **lkw):
    up, cg, _ = H.http_env(t, alg, **lkw)
    return up, cg


def curl(t, port, path, proto="--http2", cert=True, extra=(), alg="ecdsa", timeout=10,
         output="-"):
    """curl with the client certificate; returns (exit code, HTTP version, status, body,
    stderr). -w prints the version and status after the body."""
    pki = H.Opts.pki[alg]
    args = ["curl", "-sS", proto, "-m", str(int(H.T(timeout))),
            "--resolve", "localhost:%d:%s" % (port, H.HOST),
            "--cacert", os.path.join(pki, "root.crt"), "-o", output,
            "-w", "\n%{http_version} %{http_code}"]
    if cert:
        args += ["--cert", os.path.join(pki, "client-chain.crt"),
                 "--key", os.path.join(pki, "client.key")]
    args += list(extra) + ["https://localhost:%d%s" % (port, path)]
    p = H.run_cmd(args, timeout=timeout + 5)
    body, _, tail = p.stdout.rpartition("\n")
    m = re.fullmatch(r"(\S+) (\d{3})", tail.strip())
    version, status = (m.group(1), int(m.group(2))) if m else (None, None)
    return p.returncode, version, status, body, p.stderr


def leaf_hash(alg="ecdsa"):
    with open(os.path.join(H.Opts.pki[alg], "client.crt")) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def upstream_headers(up, marker):
    reqs = [r for r in up.requests() if marker in r["target"]]
    check(len(reqs) == 1, "the upstream got %d requests for %s" % (len(reqs), marker))
    return [(k.lower(), v) for k, v in reqs[0]["headers"]]


def xfcc_of(hdrs):
    return [v for k, v in hdrs if k == "x-forwarded-client-cert"]


# ---------------------------------------------------------------------------------------------
# curl

@test("h2client.curl_http2_get_and_post_with_xfcc")
def t_curl_h2(t):
    p = H.run_cmd(["curl", "-V"])
    check(re.search(r"^Features:.*\bHTTP2\b", p.stdout, re.M),
          "this curl has no HTTP2 feature: %r" % p.stdout[-300:])
    up, cg = env(t)
    rc, version, status, body, err = curl(t, cg.port(), "/echo?curlget=1")
    check(rc == 0, "curl exit %d: %s" % (rc, err[-300:]))
    check(version == "2", "HTTP version %r (ALPN did not choose h2)" % version)
    check(status == 200, "status %r" % status)
    check("x-forwarded-client-cert" in body.lower(), "the echoed head has no XFCC: %r"
          % body[:300])
    xfcc = xfcc_of(upstream_headers(up, "curlget"))
    check(len(xfcc) == 1 and "Hash=%s" % leaf_hash() in xfcc[0], "upstream XFCC %r" % xfcc)
    # POST a body that spans several DATA frames
    data = os.path.join(t.dir, "post.bin")
    blob = os.urandom(200 * 1024)
    with open(data, "wb") as f:
        f.write(blob)
    rc, version, status, body, err = curl(t, cg.port(), "/body?curlpost=1",
                                          extra=["--data-binary", "@" + data])
    check(rc == 0 and version == "2" and status == 200, "POST: exit %d, %r %r: %s"
          % (rc, version, status, err[-200:]))
    check("body-length: %d" % len(blob) in body, "body length not echoed: %r" % body[-200:])
    check("body-sha256: %s" % hashlib.sha256(blob).hexdigest() in body,
          "the upstream got other bytes: %r" % body[-200:])
    hdrs = upstream_headers(up, "curlpost")
    check(len(xfcc_of(hdrs)) == 1, "POST: upstream XFCC %r" % xfcc_of(hdrs))


@test("h2client.curl_spoofed_xfcc_replaced")
def t_curl_spoof(t):
    up, cg = env(t)
    rc, version, status, body, err = curl(
        t, cg.port(), "/echo?curlspoof=1",
        extra=["-H", "X-Forwarded-Client-Cert: By=spoof;Hash=00", "-H", "Client-Cert: :c3A=:"])
    check(rc == 0 and version == "2" and status == 200, "exit %d, %r %r: %s"
          % (rc, version, status, err[-200:]))
    hdrs = upstream_headers(up, "curlspoof")
    xfcc = xfcc_of(hdrs)
    check(len(xfcc) == 1 and "spoof" not in xfcc[0] and "Hash=%s" % leaf_hash() in xfcc[0],
          "upstream XFCC %r" % xfcc)
    check(not [v for k, v in hdrs if k == "client-cert"], "client-cert forwarded")


@test("h2client.curl_http2_large_download_and_upload")
def t_curl_big(t):
    """Flow control both ways, end to end: 32 MiB down and 16 MiB up through 64 KiB stream
    windows, with certgate's memory bounded."""
    asan = {}
    if H.Opts.sanitizer:  # ASan's quarantine would hold every freed buffer (as big_env)
        asan["ASAN_OPTIONS"] = ":".join(o for o in (os.environ.get("ASAN_OPTIONS", ""),
                                                    "quarantine_size_mb=8") if o)
    up, cg = env(t, record_max=4096, env=asan)
    check(curl(t, cg.port(), "/echo?warmup=1")[2] == 200, "warm-up request failed")
    watch = H.RssWatch(cg.pid)
    n = 32 * 1024 * 1024
    out = os.path.join(t.dir, "down.bin")
    rc, version, status, _, err = curl(t, cg.port(), "/download?bytes=%d" % n,
                                       output=out, timeout=60)
    check(rc == 0 and version == "2" and status == 200, "download: exit %d, %r %r: %s"
          % (rc, version, status, err[-200:]))
    check(os.path.getsize(out) == n, "downloaded %d bytes of %d" % (os.path.getsize(out), n))
    data = os.path.join(t.dir, "up.bin")
    with open(data, "wb") as f:
        for _ in range(16):
            f.write(os.urandom(1024 * 1024))
    with open(data, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    rc, version, status, body, err = curl(t, cg.port(), "/body?bigup=1",
                                          extra=["--data-binary", "@" + data], timeout=60)
    check(rc == 0 and version == "2" and status == 200, "upload: exit %d, %r %r: %s"
          % (rc, version, status, err[-200:]))
    check("body-sha256: %s" % digest in body, "the upstream got other bytes: %r" % body[-200:])
    peak, _ = watch.stop()
    check(peak < H.rss_limit(), "RSS grew by %.1f MiB" % peak)


# ---------------------------------------------------------------------------------------------
# nghttp

@test("h2client.nghttp_multiple_streams")
def t_nghttp(t):
    up, cg = env(t)
    pki = H.Opts.pki["ecdsa"]
    urls = ["https://localhost:%d/echo?ng=%d" % (cg.port(), i) for i in range(5)]
    args = ["nghttp", "-v", "-n", "-t", str(int(H.T(10))),
            "--cert", os.path.join(pki, "client-chain.crt"),
            "--key", os.path.join(pki, "client.key")] + urls
    p = H.run_cmd(args, timeout=20)
    out = p.stdout + p.stderr
    check(p.returncode == 0, "nghttp exit %d: %s" % (p.returncode, out[-400:]))
    check(re.search(r"negotiated protocol: h2", out, re.I), "ALPN: %r" % out[:400])
    # one HEADERS with :status 200 per stream, on one connection, streams 13, 15, ... or 1, 3
    statuses = re.findall(r"recv \(stream_id=(\d+)\) :status: (\d{3})", out)
    check(len(statuses) == 5, "%d responses: %r" % (len(statuses), statuses))
    check(all(s == "200" for _, s in statuses), "statuses %r" % statuses)
    check(len({sid for sid, _ in statuses}) == 5, "stream ids %r" % statuses)
    reqs = up.wait_requests(5)
    got = sorted(r["target"] for r in reqs if "ng=" in r["target"])
    check(got == sorted("/echo?ng=%d" % i for i in range(5)), "upstream got %r" % got)
    for r in reqs:
        xfcc = [v for k, v in r["headers"] if k.lower() == "x-forwarded-client-cert"]
        check(len(xfcc) == 1 and leaf_hash() in xfcc[0], "%s: XFCC %r" % (r["target"], xfcc))


# ---------------------------------------------------------------------------------------------
# ALPN per listener

@test("h2client.alpn_http11_only_listener_curl_falls_back")
def t_alpn_http11(t):
    up, cg = env(t, alpn=["http/1.1"])
    rc, version, status, body, err = curl(t, cg.port(), "/echo?fallback=1")
    check(rc == 0, "curl exit %d: %s" % (rc, err[-300:]))
    check(version == "1.1" and status == 200, "HTTP version %r, status %r (want 1.1 200)"
          % (version, status))
    check(len(xfcc_of(upstream_headers(up, "fallback"))) == 1, "no XFCC")


@test("h2client.alpn_h2_only_refuses_http11_client")
def t_alpn_h2only(t):
    up, cg = env(t, alpn=["h2"])
    rc, version, status, body, err = curl(t, cg.port(), "/echo?h11only=1", proto="--http1.1")
    check(rc != 0, "an http/1.1-only client was served: %r %r" % (version, status))
    check("no application protocol" in err.lower() or "no_application_protocol" in err.lower(),
          "curl did not report the no_application_protocol alert: %r" % err[-300:])
    # the same listener serves HTTP/2
    rc, version, status, body, err = curl(t, cg.port(), "/echo?h2only=1")
    check(rc == 0 and version == "2" and status == 200, "h2 client: exit %d, %r %r: %s"
          % (rc, version, status, err[-200:]))
    time.sleep(0.2)
    check(not [r for r in up.requests() if "h11only" in r["target"]], "forwarded")


@test("h2client.default_alpn_offers_both")
def t_alpn_default(t):
    up, cg = env(t)
    rc, version, status, _, err = curl(t, cg.port(), "/echo?both=1", proto="--http1.1")
    check(rc == 0 and version == "1.1" and status == 200, "http/1.1: exit %d, %r %r: %s"
          % (rc, version, status, err[-200:]))
    rc, version, status, _, err = curl(t, cg.port(), "/echo?both=2")
    check(rc == 0 and version == "2" and status == 200, "h2: exit %d, %r %r: %s"
          % (rc, version, status, err[-200:]))


@test("h2client.no_client_certificate_refused_at_handshake")
def t_nocert(t):
    up, cg = env(t)
    rc, version, status, body, err = curl(t, cg.port(), "/echo?nocert=1", cert=False)
    check(rc != 0 and status in (None, 0), "served without a certificate: exit %d, %r %r"
          % (rc, version, status))
    # TLS 1.3: curl's handshake completes before certgate looks at the certificate, so curl
    # sees the alert or the reset when it sends the HTTP/2 preface, or already when it asks
    # for the peer's address after its handshake (ENOTCONN: certgate's reset came first)
    check(re.search(r"alert|certificate|handshake|SSL|reset|Send failure|Recv failure|"
                    r"getpeername\(\) failed with errno 107", err, re.I),
          "curl said %r" % err[-300:])
    deadline = time.time() + H.T(3)
    while time.time() < deadline and not refused_no_cert(cg):
        time.sleep(0.05)
    check(refused_no_cert(cg), "no refused handshake (no certificate) in the log: %s"
          % cg.tail(3))
    # the raw h2 client too: the alert comes on its first read (TLS 1.3)
    c = None
    try:
        c = h2lib.H2Conn(t, cg.port(), ctx=h2lib.h2_ctx(cert=None, key=None))
        c.request(path="/echo?nocert=2")
        c.wait(lambda: c.eof, 5)
    except (ssl.SSLError, OSError):
        pass
    check(c is None or c.eof, "the raw client's connection stayed open: %s"
          % (c.state() if c else ""))
    check(c is None or not any(s.status for s in c.streams.values()), "a stream was answered")
    time.sleep(0.2)
    check(not [r for r in up.requests() if "nocert" in r["target"]], "the upstream got it")


def refused_no_cert(cg):
    return [e for e in H.log_events(cg) if "refused" in str(e.get("event")) and
            "certificate" in json.dumps(e).lower()]


# ---------------------------------------------------------------------------------------------
# connection lifetime: idle timeout, drain

@test("h2client.idle_connection_closed")
def t_idle(t):
    up, cg = env(t, limits={"idle_timeout": "1s"})
    c = h2lib.H2Conn(t, cg.port())
    s = c.get("/echo?idle=1")
    check(s.status == 200, "first stream: %s" % s)
    start = time.time()
    check(c.wait_closed(5), "idle h2 connection still open after %.1fs (%s)"
          % (time.time() - start, c.state()))
    took = time.time() - start
    check(took > 0.5, "closed too early (%.2fs)" % took)
    if c.goaway is not None:
        check(c.goaway[1] == h2lib.NO_ERROR, "GOAWAY %s" % h2lib.err_name(c.goaway[1]))


@test("h2client.idle_connection_with_pings_closed")
def t_idle_pings(t):
    """A connection with no stream is idle even when the client PINGs (as Envoy's
    idle_timeout): PINGs must not hold a connection slot for ever."""
    up, cg = env(t, limits={"idle_timeout": "1s", "request_head_timeout": "1s"})
    c = h2lib.H2Conn(t, cg.port())
    s = c.get("/echo?pings=1")  # a keep-alive connection (before any request it is
    check(s.status == 200, "first stream: %s" % s)  # request_head_timeout's)
    start = time.time()
    while time.time() - start < H.T(5) and not c.eof:
        c.send(h2lib.frame(h2lib.PING, 0, 0, b"keepaliv"))
        c.wait(lambda: c.eof, 0.3)
    check(c.eof, "a connection without streams, PINGed every 0.3s, still open after %.1fs "
          "with idle_timeout 1s (%s)" % (time.time() - start, c.state()))


@test("h2client.sigterm_goaway_inflight_stream_completes")
def t_drain(t):
    up, cg = env(t, limits={"drain_timeout": "5s"})
    c = h2lib.H2Conn(t, cg.port())
    check(c.get("/echo?drain=0").status == 200, "first stream failed")
    sid = c.request(path="/slow?ms=1500&drain=1")
    up.wait_requests(2)
    start = time.time()
    cg.signal(15)
    s = c.response(sid, timeout=8)
    check(s.status == 200 and s.ended, "in-flight stream during the drain: %s (%s)"
          % (s, c.state()))
    check(c.goaway is not None and c.goaway[1] == h2lib.NO_ERROR,
          "no GOAWAY NO_ERROR during the drain (%s)" % c.state())
    check(c.goaway[0] >= sid, "GOAWAY last stream %d < the in-flight %d" % (c.goaway[0], sid))
    check(c.wait_closed(5), "connection open after its last stream (%s)" % c.state())
    rc = cg.wait(H.T(7))
    check(rc == 0, "exit status %r %.1fs after SIGTERM" % (rc, time.time() - start))


# ---------------------------------------------------------------------------------------------
# config errors name FILE:LINE

def config_with(t, lkw, mode="http"):
    cfg = H.make_config(t, "ecdsa", [H.listener("https", mode, "%s:%d" % (H.HOST, H.free_port()),
                                                **lkw)])
    text = H.yaml_dump(cfg) + "\n"
    return H.write_config(t, text), text.split("\n")


def line_of(lines, pred, start=0):
    for i in range(start, len(lines)):
        if pred(lines[i]):
            return i + 1
    raise H.Failure("generated config lacks the line")


def expect_error(t, path, lines, want_lines, words, cmd="check"):
    p = H.run_cmd([H.Opts.binary, cmd, "-c", path], timeout=10)
    out = p.stdout + p.stderr
    check(p.returncode == 2, "%s exit %d (want 2): %s" % (cmd, p.returncode, out[-300:]))
    m = re.search(r"(\S*certgate\.yaml):(\d+):(\d+):(.*)", out)
    check(m, "no FILE:LINE:COL: in %r" % out[-300:])
    check(int(m.group(2)) in want_lines, "line %s, want %s: %s"
          % (m.group(2), "/".join(map(str, want_lines)), m.group(0)))
    for w in words:
        check(w in m.group(4), "message lacks %r: %s" % (w, m.group(0)))


@test("h2client.config_errors_name_file_line")
def t_config_errors(t):
    # alpn: [h3]
    path, lines = config_with(t, {"alpn": ["h3"]})
    expect_error(t, path, lines, [line_of(lines, lambda l: l.strip() == "- h3")], ["h3"])
    # alpn: []
    path, lines = config_with(t, {"alpn": []})
    expect_error(t, path, lines, [line_of(lines, lambda l: l.strip() == "alpn: []")], ["alpn"])
    # alpn: [h2, h2]
    path, lines = config_with(t, {"alpn": ["h2", "h2"]})
    first = line_of(lines, lambda l: l.strip() == "- h2")
    expect_error(t, path, lines, [first + 1], ["h2"])
    # upstream_protocol h2c with http/1.1 offered
    path, lines = config_with(t, {"upstream_protocol": "h2c", "alpn": ["h2", "http/1.1"]})
    key = line_of(lines, lambda l: l.strip() == "alpn:")
    expect_error(t, path, lines, [key, key + 1, key + 2], ["h2c", "http/1.1"])
    # the same at startup (certgate run exits 2 with the same message)
    expect_error(t, path, lines, [key, key + 1, key + 2], ["h2c"], cmd="run")
    # upstream_protocol: h3
    path, lines = config_with(t, {"upstream_protocol": "h3"})
    expect_error(t, path, lines, [line_of(lines, lambda l: "upstream_protocol:" in l)], ["h3"])
    # alpn on a tls listener
    path, lines = config_with(t, {"alpn": ["h2"]}, mode="tls")
    expect_error(t, path, lines, [line_of(lines, lambda l: l.strip() == "alpn:")],
                 ["alpn", "http"])


@test("h2client.config_h2c_defaults_to_h2_only")
def t_config_h2c_ok(t):
    path, lines = config_with(t, {"upstream_protocol": "h2c"})
    p = H.run_cmd([H.Opts.binary, "check", "-c", path], timeout=10)
    check(p.returncode == 0, "check exit %d: %s" % (p.returncode, (p.stdout + p.stderr)[-300:]))
    path, lines = config_with(t, {"upstream_protocol": "h2c", "alpn": ["h2"]})
    p = H.run_cmd([H.Opts.binary, "check", "-c", path], timeout=10)
    check(p.returncode == 0, "check exit %d: %s" % (p.returncode, (p.stdout + p.stderr)[-300:]))


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
