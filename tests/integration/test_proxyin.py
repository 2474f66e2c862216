#!/usr/bin/env python3
"""test_proxyin.py: issue 11 items 5 and 3, in the group `pin.`.

PROXY protocol in (accept_proxy_protocol): HAProxy as the real sender in tcp mode (send-proxy-v2
and send-proxy, i.e. v1) in front of http, tls and tcp listeners, the client's address reaching
the access log (`peer`) and the outgoing PROXY v2 header; raw sockets for what a balancer must
never send: no header on a `required` listener, malformed headers, a header cut short that times
out, and a v1v2 listener used without one.

Access log for incidents: the JSON access lines after curl requests (answered by the upstream,
refused with 421 by certgate, with a valid and an invalid client X-Request-Id), and the
X-Request-Id the upstream received. run.py calls register(itself)."""

import json
import os
import shutil
import socket
import struct
import subprocess
import time

H = None  # run.py's module, set by register()

PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


# ---------------------------------------------------------------------------------------------
# helpers

class HAProxy:
    """haproxy in the foreground (tcp mode) forwarding one port to certgate with a PROXY header."""

    def __init__(self, t, target_port, send="send-proxy-v2"):
        check(shutil.which("haproxy"), "haproxy is not installed (scripts/install-deps.sh)")
        self.port = H.free_port()
        self.dir = os.path.join(t.dir, "haproxy-%d" % self.port)
        os.makedirs(self.dir)
        cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("global\n  maxconn 64\n\n"
                    "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n"
                    "  timeout server 30s\n\n"
                    "listen pin\n  bind %s:%d\n  server s %s:%d %s\n"
                    % (H.HOST, self.port, H.HOST, target_port, send))
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdin=subprocess.DEVNULL,
                                     stdout=open(os.path.join(self.dir, "out"), "wb"),
                                     stderr=subprocess.STDOUT)
        t.procs.append(self)
        deadline = time.time() + T(10)
        while not listening(self.port):
            check(self.proc.poll() is None, "haproxy exited: %s" % self.output())
            check(time.time() < deadline, "haproxy did not listen: %s" % self.output())
            time.sleep(0.02)

    def output(self):
        with open(os.path.join(self.dir, "out"), "rb") as f:
            return f.read().decode("latin-1")[-300:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return []


def listening(port):
    """Whether something listens on |port|, without connecting: a connection through HAProxy
    would reach certgate and the upstream and count in what the tests check."""
    s = socket.socket()
    try:
        s.bind((H.HOST, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


def access_lines(cg, want=1, timeout=3):
    """The JSON access-log lines, waiting until there are |want| of them."""
    deadline = time.time() + T(timeout)
    while True:
        lines = []
        for line in H.log_lines(cg):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("event") == "access":
                lines.append(obj)
        if len(lines) >= want or time.time() > deadline:
            return lines
        time.sleep(0.05)


def events(cg, name=None):
    return H.log_events(cg, name)


def metric(cg, name, listener):
    status, body = H.http_get(cg.admin_port, "/metrics")
    check(status == 200, "/metrics answered %d" % status)
    prefix = '%s{listener="%s"} ' % (name, listener)
    for line in body.decode().split("\n"):
        if line.startswith(prefix):
            return int(line[len(prefix):])
    return None


def wait_metric(cg, name, listener, want, timeout=3):
    deadline = time.time() + T(timeout)
    got = metric(cg, name, listener)
    while got != want and time.time() < deadline:
        time.sleep(0.05)
        got = metric(cg, name, listener)
    check(got == want, "%s{listener=%s} is %r, want %d" % (name, listener, got, want))


def pp_env(t, mode, accept, **lkw):
    """An upstream and certgate with one listener |mode| named "pin" that accepts PROXY."""
    up = t.upstream()
    if mode != "tcp":
        lkw.setdefault("client_auth", "require")
    target = up.http if mode == "http" else up.tcp
    cg = t.certgate("ecdsa", [H.listener("pin", mode, target, accept_proxy_protocol=accept,
                                         **lkw)])
    return up, cg


def v1(src, sport, dst="198.51.100.1", dport=443):
    return ("PROXY TCP4 %s %s %d %d\r\n" % (src, dst, sport, dport)).encode()


def v2(src, sport, dst="198.51.100.1", dport=443, tlvs=b""):
    body = (socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
            + tlvs)
    return PP2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def tls_after(t, port, header, ctx=None):
    """A TLS client that first writes |header| on the raw socket, as a balancer does."""
    raw = socket.create_connection((H.HOST, port), timeout=T(5))
    t.socks.append(raw)
    if header:
        raw.sendall(header)
    s = (ctx or H.client_ctx("ecdsa")).wrap_socket(raw, server_hostname="localhost")
    t.socks.append(s)
    return s


def closed_without_answer(s, timeout=3):
    """True when the server closes |s| (EOF or reset) without sending a byte."""
    s.settimeout(T(timeout))
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def get_ok(t, s, path="/echo"):
    s.sendall(H.get_req(path))
    resp = H.read_response(H.Reader(s))
    check(resp.status == 200, "status %d" % resp.status)
    return resp


# ---------------------------------------------------------------------------------------------
# PROXY protocol through HAProxy

def t_haproxy_v2_http(t):
    up, cg = pp_env(t, "http", "required")
    ha = HAProxy(t, cg.port(), "send-proxy-v2")
    s = H.tls_connect(t, ha.port, H.client_ctx("ecdsa"))
    client = s.getsockname()
    get_ok(t, s, "/echo?via=haproxy-v2")
    lines = [a for a in access_lines(cg) if "haproxy-v2" in (a.get("path") or "")]
    check(lines, "no access line for the request through HAProxy")
    want = "%s:%d" % client
    check(lines[0]["peer"] == want, "peer %r, want the client's %s (not HAProxy's)"
          % (lines[0]["peer"], want))
    wait_metric(cg, "certgate_proxy_protocol_errors_total", "pin", 0)


def t_haproxy_v1_http_curl(t):
    up, cg = pp_env(t, "http", "required")
    ha = HAProxy(t, cg.port(), "send-proxy")
    sport = H.free_port()
    p = H.curl(t, ha.port, "/echo?via=haproxy-v1", "ecdsa", extra=("--local-port", str(sport)))
    check(p.stdout.endswith("\n200"), "curl through HAProxy (send-proxy): %r %r"
          % (p.stdout[-60:], p.stderr[-200:]))
    lines = [a for a in access_lines(cg) if "haproxy-v1" in (a.get("path") or "")]
    check(lines, "no access line for curl's request")
    check(lines[0]["peer"] == "%s:%d" % (H.HOST, sport), "peer %r, want curl's %s:%d"
          % (lines[0]["peer"], H.HOST, sport))


def pp_relay_through_haproxy(t, mode, send):
    """Client -> HAProxy (send) -> certgate (accept required, proxy_protocol on) -> upstream:
    the upstream's PROXY v2 header names the client and HAProxy's frontend, not HAProxy's
    outgoing socket or certgate's listener."""
    up, cg = pp_env(t, mode, "required", proxy_protocol=True)
    ha = HAProxy(t, cg.port(), send)
    if mode == "tls":
        s = H.tls_connect(t, ha.port, H.client_ctx("ecdsa"))
    else:
        s = H.plain_connect(t, ha.port)
    client = s.getsockname()
    s.sendall(b"ping")
    got = H.Reader(s).read_exact(4)
    check(got == b"ping", "echo through HAProxy and certgate: %r" % got)
    s.close()
    pps = up.proxy_headers()
    check(len(pps) == 1, "the upstream saw no PROXY v2 header: %r" % up.received()[:40])
    pp = pps[0]
    check(pp["command"] == "PROXY" and pp["src"] == client[0] and pp["src_port"] == client[1],
          "upstream header %r, want source %s:%d" % (pp, client[0], client[1]))
    check(pp["dst_port"] == ha.port, "upstream header destination %r, want HAProxy's port %d"
          % (pp, ha.port))
    lines = access_lines(cg)
    check(lines and lines[0]["peer"] == "%s:%d" % client, "access %r" % lines[:1])


def t_haproxy_v2_tcp(t):
    pp_relay_through_haproxy(t, "tcp", "send-proxy-v2")


def t_haproxy_v1_tls(t):
    pp_relay_through_haproxy(t, "tls", "send-proxy")


# ---------------------------------------------------------------------------------------------
# PROXY protocol: raw senders

def t_required_without_header(t):
    up, cg = pp_env(t, "http", "required")
    raw = socket.create_connection((H.HOST, cg.port()), timeout=T(5))
    t.socks.append(raw)
    ok = False
    try:
        s = H.client_ctx("ecdsa").wrap_socket(raw, server_hostname="localhost")
        t.socks.append(s)
        s.sendall(H.get_req("/echo"))
        ok = not closed_without_answer(s)
    except (OSError, ValueError):
        pass
    check(not ok, "a TLS client without a PROXY header was served on a required listener")
    check(up.requests() == [], "the upstream received a request")
    wait_metric(cg, "certgate_proxy_protocol_errors_total", "pin", 1)
    ev = events(cg, "proxy_protocol_refused")
    check(ev and "did not start with a PROXY" in ev[0]["reason"], "refusal events %r" % ev)


def t_required_malformed(t):
    up, cg = pp_env(t, "tcp", "required")
    bad = [
        b"PROXY TCP4 192.0.2.1 198.51.100.1 99999 443\r\n",    # port out of range
        b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",         # v6 address in TCP4
        b"PROXY TCP4 192.0.2.1 198.51.100.1 1 2\n",            # bare LF
        b"PROXY " + b"x" * 120,                               # no CRLF within 107 bytes
        PP2_SIG + b"\x11\x11\x00\x0c" + b"\x00" * 12,          # v2 header saying version 1
        PP2_SIG + b"\x21\x11\x00\x08" + b"\x00" * 8,           # shorter than an IPv4 block
        PP2_SIG + b"\x21\x11\x00\x10" + b"\x00" * 12 + b"\x01\x00\x09\x00",  # TLV overruns
        PP2_SIG + b"\x21\x11\xff\xff",                         # 64 KiB announced
    ]
    for i, data in enumerate(bad):
        s = H.plain_connect(t, cg.port())
        s.sendall(data + b"hello")
        check(closed_without_answer(s), "malformed header %d (%r) was not refused" % (i, data[:30]))
        s.close()
    wait_metric(cg, "certgate_proxy_protocol_errors_total", "pin", len(bad))
    time.sleep(0.1)
    check(up.received() == b"", "the upstream received %r" % up.received()[:40])
    check(len(events(cg, "proxy_protocol_refused")) == len(bad), "one refusal event per header")


def t_truncated_times_out(t):
    up = t.upstream()
    cg = t.certgate("ecdsa", [H.listener("pin", "http", up.http, client_auth="require",
                                         accept_proxy_protocol="v1v2")],
                    limits={"handshake_timeout": "1s"})
    s = H.plain_connect(t, cg.port())
    header = v2("192.0.2.9", 4242)
    s.sendall(header[:10])  # inside the signature
    time.sleep(0.2)
    s.sendall(header[10:20])  # inside the addresses
    start = time.time()
    check(closed_without_answer(s, timeout=5), "a header cut short was not closed")
    took = time.time() - start
    check(took < T(3), "closed after %.1fs, want about the 1s handshake timeout" % took)
    wait_metric(cg, "certgate_proxy_protocol_errors_total", "pin", 1)
    ev = events(cg, "proxy_protocol_refused")
    check(ev and "handshake_timeout" in ev[0]["reason"], "refusal events %r" % ev)


def t_v1v2_without_header(t):
    up, cg = pp_env(t, "http", "v1v2")
    s = H.tls_connect(t, cg.port(), H.client_ctx("ecdsa"))
    client = s.getsockname()
    get_ok(t, s, "/echo?nohdr=1")
    s2 = tls_after(t, cg.port(), v1("203.0.113.5", 40001))
    get_ok(t, s2, "/echo?v1hdr=1")
    s3 = tls_after(t, cg.port(), v2("203.0.113.6", 40002, tlvs=b"\x04\x00\x02ab"))
    get_ok(t, s3, "/echo?v2hdr=1")
    lines = access_lines(cg, 3)
    by = {a["path"].split("?")[1]: a["peer"] for a in lines if a.get("path")}
    check(by.get("nohdr=1") == "%s:%d" % client, "peer without a header %r" % by)
    check(by.get("v1hdr=1") == "203.0.113.5:40001", "peer with a v1 header %r" % by)
    check(by.get("v2hdr=1") == "203.0.113.6:40002", "peer with a v2 header %r" % by)
    wait_metric(cg, "certgate_proxy_protocol_errors_total", "pin", 0)


def t_v1v2_tcp_stream_like_signature(t):
    """On a tcp listener a stream that starts like the v2 signature and then differs is the
    client's data, even when its first bytes arrive alone."""
    up, cg = pp_env(t, "tcp", "v1v2")
    s = H.plain_connect(t, cg.port())
    s.sendall(b"\r\n\r")
    time.sleep(0.2)
    s.sendall(b"\nhello")
    s.shutdown(socket.SHUT_WR)
    got = H.Reader(s).read_to_eof()
    check(got == b"\r\n\r\nhello", "echo %r" % got)
    check(up.received() == b"\r\n\r\nhello", "upstream received %r" % up.received())


def t_v2_local_keeps_socket_address(t):
    """A LOCAL command (the balancer's own health check) names nobody: the socket's address
    stands."""
    up, cg = pp_env(t, "http", "required")
    s = tls_after(t, cg.port(), PP2_SIG + b"\x20\x00\x00\x00")
    client = s.getsockname()
    get_ok(t, s, "/echo?local=1")
    lines = access_lines(cg)
    check(lines and lines[0]["peer"] == "%s:%d" % client, "access %r" % lines[:1])


def t_v2_ipv6_source(t):
    up, cg = pp_env(t, "http", "required")
    body = (socket.inet_pton(socket.AF_INET6, "2001:db8::7") +
            socket.inet_pton(socket.AF_INET6, "2001:db8::1") + struct.pack("!HH", 5555, 443))
    hdr = PP2_SIG + b"\x21\x21" + struct.pack("!H", len(body)) + body
    s = tls_after(t, cg.port(), hdr)
    get_ok(t, s, "/echo?v6=1")
    lines = access_lines(cg)
    check(lines and lines[0]["peer"] == "[2001:db8::7]:5555", "access %r" % lines[:1])
    # X-Forwarded-For (forwarded_headers: set, the default) names the balancer's client too
    hs = up.wait_requests(1)[0]["headers"]
    xff = [v for k, v in hs if k.lower() == "x-forwarded-for"]
    check(xff == ["2001:db8::7"], "upstream X-Forwarded-For %r, want the PROXY source" % xff)


# ---------------------------------------------------------------------------------------------
# access log

def t_access_fields(t):
    up, cg, _ = H.http_env(t)
    port = cg.port()
    ua = ("--user-agent", "pin-agent/1.0")
    p1 = H.curl(t, port, "/echo?case=upstream", "ecdsa", extra=ua)
    check(p1.stdout.endswith("\n200"), "curl: %r" % p1.stdout[-40:])
    p2 = H.curl(t, port, "/echo?case=misdirected", "ecdsa",
                extra=ua + ("-H", "Host: other.example.com"))
    check(p2.stdout.endswith("\n421"), "curl with another Host: %r" % p2.stdout[-40:])
    p3 = H.curl(t, port, "/echo?case=clientid", "ecdsa",
                extra=ua + ("-H", "X-Request-Id: req-42.a_b:c"))
    check(p3.stdout.endswith("\n200"), "curl: %r" % p3.stdout[-40:])
    p4 = H.curl(t, port, "/echo?case=badid", "ecdsa",
                extra=ua + ("-H", "X-Request-Id: no spaces\"allowed"))
    check(p4.stdout.endswith("\n200"), "curl: %r" % p4.stdout[-40:])
    lines = access_lines(cg, 4)
    by = {}
    for a in lines:
        path = a.get("path") or ""
        if "case=" in path:
            by[path.split("case=")[1]] = a
    check(len(by) == 4, "access lines %r" % lines)
    for case, a in by.items():
        for key in ("peer", "sni", "host", "user_agent", "request_id", "response_from",
                    "duration_us", "duration_ms", "tenant", "subject", "tls_version"):
            check(key in a, "%s line lacks %s: %r" % (case, key, a))
        check(a["sni"] == "localhost", "%s sni %r" % (case, a["sni"]))
        check(a["user_agent"] == "pin-agent/1.0", "%s user_agent %r" % (case, a["user_agent"]))
        check(a["peer"].startswith(H.HOST + ":"), "%s peer %r" % (case, a["peer"]))
        check(isinstance(a["duration_us"], int) and a["duration_us"] > 0,
              "%s duration_us %r" % (case, a["duration_us"]))
        check(a["tenant"] is None, "%s: no tenancy configured, tenant %r" % (case, a["tenant"]))
    up_line, mis, cid, bad = by["upstream"], by["misdirected"], by["clientid"], by["badid"]
    check(up_line["status"] == 200 and up_line["response_from"] == "upstream", "%r" % up_line)
    check(up_line["host"] == "localhost:%d" % port, "host %r" % up_line["host"])
    check(mis["status"] == 421 and mis["response_from"] == "certgate", "%r" % mis)
    check(mis["host"] == "other.example.com", "421 line host %r" % mis["host"])
    check(cid["request_id"] == "req-42.a_b:c", "client id not kept: %r" % cid["request_id"])
    for a in (up_line, mis, bad):
        rid = a["request_id"]
        check(isinstance(rid, str) and len(rid) == 32 and all(ch in "0123456789abcdef"
                                                              for ch in rid),
              "a new request id is 32 hex digits: %r" % rid)
    check(len({up_line["request_id"], mis["request_id"], bad["request_id"]}) == 3,
          "request ids repeat")
    # What the upstream received: one X-Request-Id each, the access line's.
    reqs = {r["target"].split("case=")[1]: r for r in up.wait_requests(3)
            if "case=" in r["target"]}
    check(set(reqs) == {"upstream", "clientid", "badid"}, "upstream saw %r" % sorted(reqs))
    for case, r in reqs.items():
        ids = [v for k, v in r["headers"] if k.lower() == "x-request-id"]
        check(ids == [by[case]["request_id"]], "%s: upstream X-Request-Id %r, access line %r"
              % (case, ids, by[case]["request_id"]))


def t_access_duplicate_request_id(t):
    """Two X-Request-Id headers are not a valid id: one new id replaces both upstream."""
    up, cg, ctx = H.http_env(t)
    s = H.tls_connect(t, cg.port(), ctx)
    s.sendall(H.get_req("/echo?dup=1", extra="X-Request-Id: a\r\nX-Request-Id: b\r\n"))
    resp = H.read_response(H.Reader(s))
    check(resp.status == 200, "status %d" % resp.status)
    r = up.wait_requests(1)[0]
    ids = [v for k, v in r["headers"] if k.lower() == "x-request-id"]
    check(len(ids) == 1 and ids[0] not in ("a", "b") and len(ids[0]) == 32,
          "upstream X-Request-Id %r" % ids)
    lines = access_lines(cg)
    check(lines and lines[0]["request_id"] == ids[0], "access %r" % lines[:1])


def t_access_tenant_null_for_common(t):
    """tenant names the tenant whose trust set served the connection; an SNI naming no known
    tenant (tenancy.unknown: common) is served by the common set: null, not the SNI's label."""
    TT = __import__("test_tenancy")
    TT.register(H)
    up, cg = TT.env(t)
    port = cg.port()
    p = TT.curl(port, "a", "a-client")
    check(p.stdout.strip() == "200", "a-client at a: %r %s" % (p.stdout, p.stderr[-200:]))
    p = TT.curl(port, "zz", "common-client")
    check(p.stdout.strip() == "200", "common-client at zz: %r %s" % (p.stdout, p.stderr[-200:]))
    by = {}
    for a in access_lines(cg, 2):
        by[(a.get("path") or "").split("?")[-1]] = a
    check(by.get("curl-a", {}).get("tenant") == "a", "tenant a's line %r" % by.get("curl-a"))
    zz = by.get("curl-zz")
    check(zz is not None and zz["tenant"] is None and zz["sni"] == "zz.example.com",
          "an unknown tenant's SNI served by the common set: %r" % zz)


def t_access_relay_line(t):
    up, cg = H.relay_env(t, "tls")
    s = H.tls_connect(t, cg.port(), H.client_ctx("ecdsa"))
    client = s.getsockname()
    s.sendall(b"ping")
    H.Reader(s).read_exact(4)
    s.close()
    lines = access_lines(cg)
    check(lines, "no access line for the relayed connection")
    a = lines[0]
    check(a["peer"] == "%s:%d" % client and a["sni"] == "localhost", "relay line %r" % a)
    check(a["response_from"] is None and a["request_id"] is None and a["host"] is None,
          "relay line %r" % a)
    check(a["duration_us"] > 0, "relay line %r" % a)


TESTS = [
    ("pin.haproxy_send_proxy_v2_http_peer", t_haproxy_v2_http),
    ("pin.haproxy_send_proxy_v1_curl_peer", t_haproxy_v1_http_curl),
    ("pin.haproxy_send_proxy_v2_tcp_to_upstream_v2", t_haproxy_v2_tcp),
    ("pin.haproxy_send_proxy_v1_tls_to_upstream_v2", t_haproxy_v1_tls),
    ("pin.required_refuses_no_header", t_required_without_header),
    ("pin.required_refuses_malformed", t_required_malformed),
    ("pin.truncated_header_times_out", t_truncated_times_out),
    ("pin.v1v2_with_and_without_header", t_v1v2_without_header),
    ("pin.v1v2_tcp_stream_like_signature", t_v1v2_tcp_stream_like_signature),
    ("pin.v2_local_keeps_socket_address", t_v2_local_keeps_socket_address),
    ("pin.v2_ipv6_source", t_v2_ipv6_source),
    ("pin.access_fields_upstream_421_request_ids", t_access_fields),
    ("pin.access_duplicate_request_id_replaced", t_access_duplicate_request_id),
    ("pin.access_relay_line", t_access_relay_line),
    ("pin.access_tenant_null_for_common_trust_set", t_access_tenant_null_for_common),
]


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS)
