#!/usr/bin/env python3
"""test_h2core.py: the HTTP/2 client side (h2/h2_server.c) through real clients, group `h2core.`.

- ALPN: curl --http2 negotiates h2 and gets certgate's answers and the upstream's responses.
- Each stream is an exchange with the HTTP/1 rules: 421 when :authority names another host
  than the connection's SNI, 400 when host and :authority disagree, one access-log line per
  stream with protocol HTTP/2.
"""

import json
import os
import time

H = None


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def curl2(t, port, path, alg="ecdsa", extra=(), host="localhost"):
    pki = H.Opts.pki[alg]
    args = ["curl", "-sS", "--http2", "-m", "10", "--resolve", "%s:%d:%s" % (host, port, H.HOST),
            "--cacert", os.path.join(pki, "root.crt"),
            "--cert", os.path.join(pki, "client-chain.crt"), "--key", os.path.join(pki, "client.key"),
            "-o", "-", "-w", "\n%{http_version} %{http_code}"] + list(extra)
    args.append("https://%s:%d%s" % (host, port, path))
    return H.run_cmd(args, timeout=20)


def t_alpn_h2_answers(t):
    up, cg, _ = H.http_env(t)
    r = curl2(t, cg.ports["https"], "/echo")
    tail = r.stdout.strip().splitlines()[-1]
    check(tail.startswith("2 "), "curl did not speak HTTP/2: %r %r" % (tail, r.stderr))


def h2_request(t, port, headers, alg="ecdsa", body=None, timeout=10):
    """One request over a fresh TLS connection with python3-h2 (headers as given, pseudo ones
    included). Returns (status or None, reset error code or None, response headers, body)."""
    import h2.config
    import h2.connection
    import h2.events
    sock = H.tls_connect(t, port, H.client_ctx(alg, ) if False else alpn_ctx(alg))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, headers, end_stream=body is None)
    if body is not None:
        conn.send_data(sid, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    status, reset, hdrs, data = None, None, [], b""
    sock.settimeout(H.T(timeout))
    done = False
    while not done:
        chunk = sock.recv(65536)
        if not chunk:
            break
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived):
                hdrs = ev.headers
                status = int(dict(hdrs)[b":status"])
            elif isinstance(ev, h2.events.DataReceived):
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded):
                done = True
            elif isinstance(ev, h2.events.StreamReset):
                reset = ev.error_code
                done = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                done = True
        sock.sendall(conn.data_to_send())
    sock.close()
    return status, reset, hdrs, data


def alpn_ctx(alg):
    ctx = H.client_ctx(alg)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def t_authority_host_disagree_400(t):
    up, cg, _ = H.http_env(t)
    base = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/echo")]
    st, rst, _, _ = h2_request(t, cg.ports["https"], base + [(b":authority", b"localhost"),
                                                            (b"host", b"other.example")])
    check(st == 400, "host disagreeing with :authority: %r %r" % (st, rst))
    st, rst, _, _ = h2_request(t, cg.ports["https"], base + [(b"host", b"other.example")])
    check(st == 421, "host alone names the host (another one than the SNI): %r %r" % (st, rst))


def t_authority_other_host_421(t):
    up, cg, _ = H.http_env(t)
    # curl sends a Host header as :authority; the connection's SNI stays localhost.
    r = curl2(t, cg.ports["https"], "/echo", extra=["-H", "host: other.example"])
    tail = r.stdout.strip().splitlines()[-1]
    check(tail == "2 421", "a :authority of another host than the SNI: %r" % tail)


def t_access_log_per_stream(t):
    up, cg, _ = H.http_env(t)
    r = curl2(t, cg.ports["https"], "/echo", extra=["-H", "host: other.example"])
    check(r.stdout.strip().endswith("2 421"), "setup: %r" % r.stdout)
    lines = [e for e in H.log_events(cg, "access") if e.get("protocol") == "HTTP/2"]
    check(len(lines) == 1 and lines[0]["status"] == 421 and lines[0]["path"] == "/echo" and
          lines[0]["method"] == "GET", "access log: %r" % lines)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class IdleH2:
    """An HTTP/2 connection that made one request and now idles (python3-h2)."""

    def __init__(self, t, port, alg="ecdsa"):
        import h2.config
        import h2.connection
        import h2.events
        self.sock = H.tls_connect(t, port, alpn_ctx(alg))
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                     (":authority", "localhost"), (":path", "/echo")],
                               end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        self.sock.settimeout(H.T(10))
        done = False
        while not done:
            data = self.sock.recv(65536)
            if not data:
                raise H.Failure("connection closed before the response ended")
            for ev in self.conn.receive_data(data):
                if isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            self.sock.sendall(self.conn.data_to_send())


def idle_h1(t, port, alg="ecdsa"):
    ctx = H.client_ctx(alg)
    ctx.set_alpn_protocols(["http/1.1"])
    s = H.tls_connect(t, port, ctx)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
    r = H.read_response(H.Reader(s))
    if r.status != 200:
        raise H.Failure("HTTP/1.1 request: %r" % r.status)
    return s


def t_idle_memory(t):
    """An idle HTTP/2 connection costs at most twice an idle HTTP/1.1 one (issue 13 item 3):
    RSS growth over N connections each, after a warm-up, one worker."""
    up, cg, _ = H.http_env(t, extra={"workers": 1})
    port = cg.ports["https"]
    keep = [idle_h1(t, port) for _ in range(20)] + [IdleH2(t, port) for _ in range(20)]
    n = 150
    time.sleep(2.5)
    base = rss_kib(cg.proc.pid)
    keep += [IdleH2(t, port) for _ in range(n)]
    time.sleep(2.5)  # idle for longer than the trim interval (H2_TRIM_INTERVAL_MS)
    mid = rss_kib(cg.proc.pid)
    keep += [idle_h1(t, port) for _ in range(n)]
    end = rss_kib(cg.proc.pid)
    h2 = (mid - base) * 1024 / n
    h1 = (end - mid) * 1024 / n
    print("    idle HTTP/1.1 %.0f B, idle HTTP/2 %.0f B per connection" % (h1, h2))
    check(h2 <= 2 * max(h1, 4096), "an idle HTTP/2 connection costs %.0f bytes, an idle HTTP/1.1 "
          "one %.0f" % (h2, h1))
    del keep


TESTS = [
    ("h2core.alpn_h2_answers", t_alpn_h2_answers),
    ("h2core.authority_host_disagree_400", t_authority_host_disagree_400),
    ("h2core.authority_other_host_421", t_authority_other_host_421),
    ("h2core.access_log_per_stream", t_access_log_per_stream),
    ("h2core.idle_memory", t_idle_memory),
]


def register(harness):
    global H
    H = harness
    harness.add_tests(TESTS)
