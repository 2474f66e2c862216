#!/usr/bin/env python3
"""test_h2up1.py: HTTP/2 streams to an HTTP/1.1 upstream (h2/h2_up1.c), group `h2up1.`.

Real clients (curl --http2, nghttp, python3-h2) through certgate to upstream.py or to a scripted
upstream in this process:
- translation: the request line, host from :authority, framing (Content-Length, chunked for a
  body of unknown length, none for a bodiless GET, 0 for a bodiless POST), trailers dropped;
  the response's hop-by-hop headers and 1xx dropped, HEAD, 204, 304, chunked responses;
- flow control both ways: 1 MiB up and down, and certgate's memory stays bounded against a
  client that does not read and an upstream that does not read;
- failures: an upstream that closes early (502, or a reset once the response started), bad
  response framing (502), silence (504), refused connect (503), with their metrics;
- the worker's pool: streams reuse idle upstream connections (the HTTP/1 path's too), a
  reused connection that closes before answering gets the request once more (idempotent only),
  an upstream that said Connection: close is not reused; 50 concurrent streams.
"""

import hashlib
import os
import re
import socket
import threading
import time

H = None


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


def hdr(headers, name):
    return [v for k, v in headers if k.lower() == name]


# ---------------------------------------------------------------------------------------------
# clients

def curl2(t, port, path, extra=(), alg="ecdsa", timeout=20):
    """curl --http2 to |path|; returns (http_version, status, body bytes, header lines)."""
    pki = H.Opts.pki[alg]
    out = os.path.join(t.dir, "curl-body-%d" % time.monotonic_ns())
    hd = out + ".h"
    args = ["curl", "-sS", "--http2", "-m", str(int(T(timeout))),
            "--resolve", "localhost:%d:%s" % (port, H.HOST),
            "--cacert", os.path.join(pki, "root.crt"),
            "--cert", os.path.join(pki, "client-chain.crt"), "--key", os.path.join(pki, "client.key"),
            "-o", out, "-D", hd, "-w", "%{http_version} %{http_code}"] + list(extra)
    args.append("https://localhost:%d%s" % (port, path))
    r = H.run_cmd(args, timeout=timeout + 5)
    parts = r.stdout.split()
    check(len(parts) == 2, "curl: %r %r" % (r.stdout, r.stderr[-300:]))
    body = open(out, "rb").read() if os.path.exists(out) else b""
    heads = open(hd, "rb").read().decode("latin-1").split("\r\n") if os.path.exists(hd) else []
    return parts[0], int(parts[1]), body, heads


def alpn_ctx(alg="ecdsa"):
    ctx = H.client_ctx(alg)
    ctx.set_alpn_protocols(["h2"])
    return ctx


class H2Client:
    """One HTTP/2 connection with python3-h2. Streams are driven by pump(); received DATA is
    acknowledged (window updates) only while self.reading."""

    def __init__(self, t, port, alg="ecdsa"):
        import h2.config
        import h2.connection
        self.ev = __import__("h2.events").events
        self.sock = H.tls_connect(t, port, alpn_ctx(alg))
        self.sock.settimeout(T(10))
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.flush()
        self.streams = {}
        self.reading = True
        self.unacked = []

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method, path, headers=(), body=None, end=True):
        sid = self.conn.get_next_available_stream_id()
        hs = [(":method", method), (":scheme", "https"), (":authority", "localhost"),
              (":path", path)] + list(headers)
        self.conn.send_headers(sid, hs, end_stream=body is None and end)
        if body is not None:
            self.send(sid, body, end)
        self.streams[sid] = {"status": None, "headers": [], "data": b"", "end": False,
                             "reset": None}
        self.flush()
        return sid

    def send(self, sid, data, end=False):
        """Sends |data| as flow control allows, pumping the connection meanwhile."""
        off = 0
        deadline = time.time() + T(30)
        while off < len(data):
            room = min(self.conn.local_flow_control_window(sid),
                       self.conn.max_outbound_frame_size, len(data) - off)
            if room > 0:
                self.conn.send_data(sid, data[off:off + room])
                off += room
                self.flush()
                continue
            check(time.time() < deadline, "no window to send after %.0fs" % T(30))
            self.pump_once(T(5))
        if end:
            self.conn.end_stream(sid)
        self.flush()

    def pump_once(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        if not chunk:
            return False
        for e in self.conn.receive_data(chunk):
            st = self.streams.get(getattr(e, "stream_id", None))
            if isinstance(e, self.ev.ResponseReceived):
                st["headers"] = [(k.decode(), v.decode()) for k, v in e.headers]
                st["status"] = int(dict(st["headers"])[":status"])
            elif isinstance(e, self.ev.InformationalResponseReceived):
                st.setdefault("info", []).append(e.headers)
            elif isinstance(e, self.ev.DataReceived):
                st["data"] += e.data
                if self.reading:
                    self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                else:
                    self.unacked.append((e.flow_controlled_length, e.stream_id))
            elif isinstance(e, self.ev.TrailersReceived):
                st["trailers"] = e.headers
            elif isinstance(e, self.ev.StreamEnded):
                st["end"] = True
            elif isinstance(e, self.ev.StreamReset):
                if st is not None:
                    st["reset"] = e.error_code
                    st["end"] = True
            elif isinstance(e, self.ev.ConnectionTerminated):
                return False
        self.flush()
        return True

    def resume(self):
        self.reading = True
        for n, sid in self.unacked:
            self.conn.acknowledge_received_data(n, sid)
        self.unacked = []
        self.flush()

    def wait(self, sid, timeout=10):
        deadline = time.time() + T(timeout)
        while not self.streams[sid]["end"]:
            check(time.time() < deadline, "stream %d not done after %.0fs" % (sid, T(timeout)))
            if not self.pump_once(T(2)):
                break
        return self.streams[sid]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def nghttp(t, port, path, extra=(), alg="ecdsa", timeout=30):
    pki = H.Opts.pki[alg]
    args = ["nghttp", "-n", "--cert", os.path.join(pki, "client-chain.crt"),
            "--key", os.path.join(pki, "client.key"), "-t", str(int(T(timeout)))] + list(extra)
    args.append("https://localhost:%d%s" % (port, path))
    return H.run_cmd(args, timeout=timeout + 5)


# ---------------------------------------------------------------------------------------------
# a scripted upstream: responses upstream.py does not give

class RawUpstream:
    """An HTTP/1.1 upstream in this process. Each request head (and its Content-Length body) is
    passed to answer(sock, conn number, request number on the conn, head, body), which writes
    what it wants and returns False to close the connection. With read_body False, body is what
    arrived with the head, and answer reads the rest itself."""

    def __init__(self, t, answer, read_body=True, rcvbuf=None, unix=False):
        self.answer = answer
        self.read_body = read_body
        if unix:
            path = os.path.join(t.dir, "up-%d.sock" % time.monotonic_ns())
            self.lsock = socket.socket(socket.AF_UNIX)
            self.lsock.bind(path)
            self.addr = "unix:" + path
        else:
            self.lsock = socket.socket()
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if rcvbuf:  # inherited by accepted sockets: bounds what the kernel takes unread
                self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.lsock.bind((H.HOST, 0))
            self.addr = "%s:%d" % (H.HOST, self.lsock.getsockname()[1])
        self.lsock.listen(128)
        self.conns = []
        self.heads = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        t.procs.append(self)
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            c.settimeout(T(20))
            with self.lock:
                self.conns.append(c)
                n = len(self.conns)
            threading.Thread(target=self.serve, args=(c, n), daemon=True).start()

    def serve(self, c, n):
        buf = b""
        k = 0
        try:
            while not self.stopping.is_set():
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                    continue
                head, buf = buf[:i + 4], buf[i + 4:]
                body = b""
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if not self.read_body:
                    body, buf = buf, b""  # what came with the head; answer reads the rest
                elif m:
                    want = int(m.group(1))
                    while len(buf) < want:
                        data = c.recv(65536)
                        if not data:
                            return
                        buf += data
                    body, buf = buf[:want], buf[want:]
                k += 1
                with self.lock:
                    self.heads.append((n, head))
                if not self.answer(c, n, k, head, body):
                    return
        except OSError:
            return
        finally:
            try:
                c.close()
            except OSError:
                pass

    def stop(self):
        self.stopping.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass
        return []


def raw_env(t, answer, limits=None, read_body=True, rcvbuf=None, unix=False):
    up = RawUpstream(t, answer, read_body, rcvbuf, unix)
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.addr, client_auth="require")],
                    limits=limits)
    return up, cg


def metric(cg, kind):
    status, body = H.http_get(cg.admin_port, "/metrics")
    m = re.search(rb'certgate_upstream_errors_total\{[^}]*kind="%s"\} (\d+)' % kind.encode(),
                  body)
    return int(m.group(1)) if m else None


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------------
# translation

def t_get_translated(t):
    up, cg, _ = H.http_env(t)
    port = cg.ports["https"]
    ver, st, body, heads = curl2(t, port, "/echo?x=1", extra=["-H", "cookie: a=1",
                                                              "-H", "cookie: b=2"])
    check(ver == "2" and st == 200, "GET over h2: %s %d" % (ver, st))
    check(body.startswith(b"GET /echo?x=1 HTTP/1.1\r\n"), "request line: %r" % body[:60])
    req = up.wait_requests(1)[0]
    hs = req["headers"]
    check(hdr(hs, "host") == ["localhost:%d" % port], "host from :authority: %r" % hs)
    check(not hdr(hs, "content-length") and not hdr(hs, "transfer-encoding"),
          "a bodiless GET has no framing headers: %r" % hs)
    check(hdr(hs, "cookie") == ["a=1; b=2"], "cookies joined: %r" % hs)
    check(hdr(hs, "x-forwarded-proto") == ["https"] and len(hdr(hs, "x-request-id")) == 1,
          "certgate's headers: %r" % hs)
    check(not [k for k, _ in hs if k.startswith(":")], "pseudo-headers upstream: %r" % hs)
    lower = [h.lower() for h in heads]
    check(any(h.startswith("x-upstream-conn:") for h in lower), "response headers: %r" % heads)
    check(not any(h.startswith(("connection:", "keep-alive:", "transfer-encoding:"))
                  for h in lower), "connection-specific response headers: %r" % heads)


def t_post_content_length(t):
    up, cg, _ = H.http_env(t)
    ver, st, body, _ = curl2(t, cg.ports["https"], "/body", extra=["--data-binary", "hello"])
    check(st == 200 and b"body-length: 5\n" in body, "POST: %d %r" % (st, body[-120:]))
    hs = up.wait_requests(1)[0]["headers"]
    check(hdr(hs, "content-length") == ["5"] and not hdr(hs, "transfer-encoding"),
          "framing: %r" % hs)


def t_post_chunked_trailers_dropped(t):
    up, cg, _ = H.http_env(t)
    c = H2Client(t, cg.ports["https"])
    sid = c.request("POST", "/body", body=b"abc", end=False)
    time.sleep(0.05)
    c.send(sid, b"defg")
    c.conn.send_headers(sid, [("x-trailer", "secret-trailer")], end_stream=True)
    c.flush()
    st = c.wait(sid)
    c.close()
    check(st["status"] == 200 and b"body-length: 7\n" in st["data"],
          "chunked upload: %r %r" % (st["status"], st["data"][-120:]))
    want = hashlib.sha256(b"abcdefg").hexdigest().encode()
    check(want in st["data"], "body digest: %r" % st["data"][-100:])
    hs = up.wait_requests(1)[0]["headers"]
    check(hdr(hs, "transfer-encoding") == ["chunked"] and not hdr(hs, "content-length"),
          "a body of unknown length goes chunked: %r" % hs)
    check(b"secret-trailer" not in up.received(), "request trailers reached the upstream")


def t_bodiless_framing(t):
    up, cg, _ = H.http_env(t)
    c = H2Client(t, cg.ports["https"])
    for method in ("POST", "DELETE"):
        st = c.wait(c.request(method, "/echo"))
        check(st["status"] == 200, "%s: %r" % (method, st))
    c.close()
    reqs = up.wait_requests(2)
    by = {r["method"]: r["headers"] for r in reqs}
    check(hdr(by["POST"], "content-length") == ["0"], "bodiless POST: %r" % by["POST"])
    check(not hdr(by["DELETE"], "content-length") and
          not hdr(by["DELETE"], "transfer-encoding"), "bodiless DELETE: %r" % by["DELETE"])


def t_head_204_304(t):
    up, cg, _ = H.http_env(t)
    c = H2Client(t, cg.ports["https"])
    st = c.wait(c.request("HEAD", "/echo"))
    check(st["status"] == 200 and st["data"] == b"" and hdr(st["headers"], "content-length"),
          "HEAD: %r" % st)
    for code in (204, 304):
        st = c.wait(c.request("GET", "/status?code=%d" % code))
        check(st["status"] == code and st["data"] == b"" and st["reset"] is None,
              "%d: %r" % (code, st))
    # The connection still works after bodiless responses.
    st = c.wait(c.request("GET", "/echo"))
    check(st["status"] == 200 and st["data"].startswith(b"GET /echo"), "after: %r" % st)
    c.close()


def t_chunked_response(t):
    up, cg, _ = H.http_env(t)
    n = 300000
    ver, st, body, heads = curl2(t, cg.ports["https"], "/download?bytes=%d&chunked=1" % n)
    block = b"0123456789abcdef" * 4096
    want = (block * (n // len(block) + 1))[:n]
    check(st == 200 and body == want, "chunked download: %d, %d bytes" % (st, len(body)))
    check(not any(h.lower().startswith("transfer-encoding") for h in heads),
          "transfer-encoding went to an h2 client: %r" % heads)


def t_response_headers_dropped(t):
    def answer(c, n, k, head, body):
        c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n"
                  b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                  b"HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\n"
                  b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: foo\r\n"
                  b"Trailer: x-t\r\nX-Kept: Yes\r\nContent-Length: 2\r\n\r\nok")
        return True
    up, cg = raw_env(t, answer)
    c = H2Client(t, cg.ports["https"])
    st = c.wait(c.request("GET", "/x"))
    c.close()
    names = [k for k, _ in st["headers"]]
    check(st["status"] == 200 and st["data"] == b"ok", "response: %r" % st)
    check(hdr(st["headers"], "x-kept") == ["Yes"], "a regular header lost: %r" % st["headers"])
    for gone in ("connection", "x-secret", "keep-alive", "proxy-connection", "upgrade", "trailer",
                 "link"):
        check(gone not in names, "%s reached the h2 client: %r" % (gone, st["headers"]))
    check(not st.get("info"), "an informational response was forwarded: %r" % st.get("info"))


def t_many_response_headers(t):
    """A head with more headers than fit certgate's stack arrays goes through whole; one with
    more than limits.max_headers (at least 128) + 8 lines is a 502."""
    def answer(c, n, k, head, body):
        count = 100 if b"/many" in head.split(b"\r\n")[0] else 300
        hs = b"".join(b"X-H%d: v%d\r\n" % (i, i) for i in range(count))
        c.sendall(b"HTTP/1.1 200 OK\r\n" + hs + b"Content-Length: 2\r\n\r\nok")
        return True
    up, cg = raw_env(t, answer)
    c = H2Client(t, cg.ports["https"])
    st = c.wait(c.request("GET", "/many"))
    st2 = c.wait(c.request("GET", "/toomany"))
    c.close()
    got = [k for k, _ in st["headers"] if k.startswith("x-h")]
    check(st["status"] == 200 and len(got) == 100 and hdr(st["headers"], "x-h99") == ["v99"],
          "100 headers: %d arrived" % len(got))
    check(st2["status"] == 502, "300 headers: %r" % st2.get("status"))


def t_response_split_bytewise(t):
    """A response head and chunked body that arrive a few bytes at a time (every split of the
    scanner's and the chunk decoder's states), behind a 100 Continue."""
    resp = (b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")

    def answer(c, n, k, head, body):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(resp), 3):
            c.sendall(resp[i:i + 3])
            time.sleep(0.003)
        return True
    up, cg = raw_env(t, answer)
    c = H2Client(t, cg.ports["https"])
    st = c.wait(c.request("GET", "/split"))
    st2 = c.wait(c.request("GET", "/again"))
    c.close()
    check(st["status"] == 200 and st["data"] == b"hello world" and
          hdr(st["headers"], "x-a") == ["1"] and not st.get("trailers"),
          "split response: %r" % st)
    check(st2["data"] == b"hello world" and len(up.conns) == 1,
          "a complete chunked response leaves a reusable connection: %d" % len(up.conns))


def t_early_response_not_reused(t):
    """An upstream that answers before it read the request body: the client gets the answer,
    and that connection is never used again (its unread body would be the next request)."""
    def answer(c, n, k, head, body):
        if head.startswith(b"POST"):
            c.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
            time.sleep(T(2))  # keep the connection open, reading nothing
            return False
        b = b"conn=%d" % n
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(b) + b)
        return True
    up, cg = raw_env(t, answer, read_body=False)
    c = H2Client(t, cg.ports["https"])
    sid = c.request("POST", "/up", headers=[("content-length", "1000000")], end=False)
    c.send(sid, b"x" * 32768)
    st = c.wait(sid)
    st2 = c.wait(c.request("GET", "/next"))
    c.close()
    check(st["status"] == 413 and st["data"] == b"big", "early answer: %r" % st)
    check(st2["status"] == 200 and st2["data"] == b"conn=2", "next request: %r" % st2)


def t_no_injection_into_http1(t):
    """Whatever bytes an h2 client puts in a header value, :path or :method, the HTTP/1.1
    request upstream keeps its lines: a CR, LF or NUL never reaches it, a space never splits
    the request line."""
    import h2.config
    import h2.connection
    up, cg, _ = H.http_env(t)
    cases = [
        [(":method", "GET"), (":path", "/ok"), ("x-evil", "a\r\nx-injected: 1")],
        [(":method", "GET"), (":path", "/ok"), ("x-evil", "a\nx-injected: 1")],
        [(":method", "GET"), (":path", "/ok"), ("x-evil", "a\x00b")],
        [(":method", "GET"), (":path", "/a b HTTP/1.1\r\nx-injected: 1\r\n\r\nGET /c")],
        [(":method", "GET"), (":path", "/a b")],
        [(":method", "GET /x HTTP/1.1\r\nx-injected: 1\r\n\r\nGET"), (":path", "/ok")],
        [(":method", "GET"), (":path", "/ok"), ("x-evil\r\nx-injected", "1")],
    ]
    for i, extra in enumerate(cases):
        c = H2Client(t, cg.ports["https"])
        c.conn.config = h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False)
        sid = c.conn.get_next_available_stream_id()
        hs = [(":scheme", "https"), (":authority", "localhost")] + extra
        c.conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in hs], end_stream=True)
        c.streams[sid] = {"status": None, "headers": [], "data": b"", "end": False,
                          "reset": None}
        c.flush()
        try:
            st = c.wait(sid)
        except (H.Failure, OSError):
            st = {"status": None}
        c.close()
        check(st.get("status") in (None, 400), "case %d answered %r" % (i, st.get("status")))
    # A good request after them all shows the upstream was reachable.
    ver, code, body, _ = curl2(t, cg.ports["https"], "/echo")
    check(code == 200, "control request: %d" % code)
    got = up.received()
    check(b"x-injected" not in got.lower() and b"\x00" not in got,
          "injected bytes reached the upstream: %r" % got[:400])
    check(len(up.requests()) == 1, "requests upstream: %r" % [r["target"] for r in up.requests()])


# ---------------------------------------------------------------------------------------------
# bodies and flow control

def t_event_stream_outlives_idle_timeout(t):
    """Server-sent events toward an h2 client whose request ended: lines 0.4 s apart keep the
    stream going well past idle_timeout (1 s), over HTTP/2 as over HTTP/1.1."""
    up, cg, _ = H.http_env(t, limits={"idle_timeout": "1s"})
    port = cg.ports["https"]
    start = time.time()
    ver, st, body, _ = curl2(t, port, "/drip?n=8&ms=400")
    took = time.time() - start
    want = b"".join(b"data: event %d\n\n" % i for i in range(8))
    check(ver == "2" and st == 200 and body == want,
          "h2 event stream: %s %d %r after %.1f s" % (ver, st, body[-60:], took))
    check(took > 2.5, "the stream was too short to prove anything (%.1f s)" % took)
    r = H.run_cmd(["curl", "-sS", "--http1.1", "-m", str(int(T(20))),
                   "--resolve", "localhost:%d:%s" % (port, H.HOST),
                   "--cacert", os.path.join(H.Opts.pki["ecdsa"], "root.crt"),
                   "--cert", os.path.join(H.Opts.pki["ecdsa"], "client-chain.crt"),
                   "--key", os.path.join(H.Opts.pki["ecdsa"], "client.key"),
                   "https://localhost:%d/drip?n=8&ms=400" % port], timeout=T(25))
    check(r.stdout.encode() == want, "HTTP/1.1 event stream: %r %r" % (r.stdout[-60:],
                                                                       r.stderr[-200:]))


def t_upload_download_1mb(t):
    up, cg, _ = H.http_env(t)
    port = cg.ports["https"]
    data = os.urandom(1 << 20)
    path = os.path.join(t.dir, "upload.bin")
    with open(path, "wb") as f:
        f.write(data)
    ver, st, body, _ = curl2(t, port, "/body", extra=["--data-binary", "@" + path])
    want = hashlib.sha256(data).hexdigest().encode()
    check(st == 200 and b"body-length: 1048576\n" in body and want in body,
          "1 MiB upload: %d %r" % (st, body[-120:]))
    # Without Content-Length (curl -T - streams stdin): chunked to the upstream.
    args_body = ["-T", path, "-X", "POST", "-H", "content-length:"]
    ver, st, body, _ = curl2(t, port, "/body", extra=args_body)
    check(st == 200 and want in body, "1 MiB upload of unknown length: %d %r" % (st, body[-120:]))
    ver, st, body, _ = curl2(t, port, "/download?bytes=%d" % (1 << 20))
    check(st == 200 and len(body) == 1 << 20, "1 MiB download: %d %d" % (st, len(body)))


def t_download_slow_reader_bounded(t):
    """A client that stops reading stops the upstream (flow control, then the socket): certgate
    holds about a stream's high-water mark, not the 8 MiB body."""
    up, cg, _ = H.http_env(t)
    n = 8 << 20
    c = H2Client(t, cg.ports["https"])
    c.wait(c.request("GET", "/echo"))  # warm: TLS, buffers, pools
    base = rss_kib(cg.pid)
    c.reading = False
    sid = c.request("GET", "/download?bytes=%d" % n)
    deadline = time.time() + T(1.5)
    while time.time() < deadline:
        c.pump_once(0.2)
    got_stalled = len(c.streams[sid]["data"])
    grown = rss_kib(cg.pid) - base
    c.resume()
    st = c.wait(sid, timeout=60)
    c.close()
    check(got_stalled < 1 << 20, "the client got %d bytes without granting window" % got_stalled)
    check(st["status"] == 200 and len(st["data"]) == n, "download: %r %d" % (st["status"],
                                                                             len(st["data"])))
    if not H.Opts.sanitizer:  # ASan's quarantine keeps freed memory: RSS says nothing there
        check(grown < 4096, "certgate grew %d KiB while the client did not read" % grown)


def t_upload_slow_upstream_bounded(t):
    """An upstream that does not read stops the client's window: certgate holds about a
    stream's high-water mark of the 8 MiB body, then everything arrives intact."""
    n = 8 << 20
    gate = threading.Event()
    digest = {}

    def answer(c, conn, k, head, body):
        if not head.startswith(b"POST"):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return True
        gate.wait(T(20))
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        left, h = int(m.group(1)) - len(body), hashlib.sha256(body)
        while left > 0:
            part = c.recv(min(left, 65536))
            if not part:
                return False
            h.update(part)
            left -= len(part)
        digest["d"] = h.hexdigest()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        return True
    up, cg = raw_env(t, answer, read_body=False, rcvbuf=65536)
    c = H2Client(t, cg.ports["https"])
    c.wait(c.request("GET", "/warm"))
    base = rss_kib(cg.pid)
    data = os.urandom(n)
    sid = c.request("POST", "/up", headers=[("content-length", str(n))], end=False)
    sent = [0]

    def stalled_send():
        # Send what the window allows for a while; the upstream reads nothing yet.
        off = 0
        deadline = time.time() + T(1.5)
        while time.time() < deadline:
            room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size,
                       n - off)
            if room > 0:
                c.conn.send_data(sid, data[off:off + room])
                off += room
                c.flush()
            else:
                c.pump_once(0.1)
        return off
    off = stalled_send()
    grown = rss_kib(cg.pid) - base
    gate.set()
    c.send(sid, data[off:], end=True)
    st = c.wait(sid, timeout=60)
    c.close()
    # What went out is the stream's window plus the kernel's socket buffers (certgate's send
    # buffer autotunes up to tcp_wmem's 4 MiB), never the whole body.
    check(off < 6 << 20, "the client could send %d bytes to an upstream that read nothing" % off)
    check(st["status"] == 200 and st["data"] == b"done", "upload: %r" % st)
    check(digest.get("d") == hashlib.sha256(data).hexdigest(), "the body arrived altered")
    if not H.Opts.sanitizer:
        check(grown < 4096, "certgate grew %d KiB while the upstream did not read" % grown)


# ---------------------------------------------------------------------------------------------
# failures

def t_upstream_closes_early_502(t):
    up, cg, _ = H.http_env(t)
    c = H2Client(t, cg.ports["https"])
    for path in ("/drop", "/reset"):
        st = c.wait(c.request("GET", path))
        check(st["status"] == 502, "%s: %r" % (path, st))
    st = c.wait(c.request("POST", "/drop", body=b"x"))
    check(st["status"] == 502, "POST /drop: %r" % st)
    c.close()
    check(metric(cg, "reset") >= 3, "reset metric: %r" % metric(cg, "reset"))


def t_closes_mid_body_reset(t):
    def answer(c, n, k, head, body):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        return False
    up, cg = raw_env(t, answer)
    c = H2Client(t, cg.ports["https"])
    st = c.wait(c.request("GET", "/x"))
    check(st["status"] == 200 and st["reset"] is not None and len(st["data"]) <= 1000,
          "a response cut short must end in RST_STREAM: %r" % {k: v for k, v in st.items()
                                                              if k != "data"})
    # The connection and the next stream are fine.
    st2 = c.wait(c.request("GET", "/y"))
    c.close()
    check(st2["status"] == 200, "next stream: %r" % st2)


def t_bad_framing_502(t):
    up, cg, _ = H.http_env(t)
    c = H2Client(t, cg.ports["https"])
    for kind in ("obsfold", "barecr", "te", "clte", "dupcl", "badcl"):
        st = c.wait(c.request("GET", "/badframing?kind=%s" % kind))
        check(st["status"] == 502 and b"hello" not in st["data"], "%s: %r" % (kind, st))
    c.close()
    check(metric(cg, "framing") >= 6, "framing metric: %r" % metric(cg, "framing"))


def t_silent_upstream_504(t):
    up, cg, _ = H.http_env(t, limits={"upstream_response_timeout": "1s"})
    start = time.time()
    ver, st, body, _ = curl2(t, cg.ports["https"], "/slow?ms=4000")
    took = time.time() - start
    check(st == 504, "status %d, want 504" % st)
    check(took < T(3), "504 only after %.1fs" % took)
    check(metric(cg, "timeout") == 1, "timeout metric: %r" % metric(cg, "timeout"))
    ver, st, body, _ = curl2(t, cg.ports["https"], "/slow?ms=200")
    check(st == 200, "a slow answer within the timeout: %d" % st)


def t_connect_refused_503(t):
    dead = "%s:%d" % (H.HOST, H.free_port())
    cg = t.certgate("ecdsa", [H.listener("https", "http", dead, client_auth="require")])
    ver, st, body, _ = curl2(t, cg.ports["https"], "/echo")
    check(ver == "2" and st == 503, "refused upstream: %s %d" % (ver, st))
    check(metric(cg, "connect") == 1, "connect metric: %r" % metric(cg, "connect"))


def t_connect_timeout_503(t):
    # A listener whose accept queue is full drops SYNs: the connect hangs.
    ls = socket.socket()
    ls.bind((H.HOST, 0))
    ls.listen(0)
    socks = [ls]
    t.procs.append(Closer(socks))
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(ls.getsockname())
        socks.append(s)
    time.sleep(0.2)
    addr = "%s:%d" % ls.getsockname()
    cg = t.certgate("ecdsa", [H.listener("https", "http", addr, client_auth="require")],
                    limits={"upstream_connect_timeout": "1s"})
    start = time.time()
    ver, st, body, _ = curl2(t, cg.ports["https"], "/echo")
    took = time.time() - start
    check(st == 503, "connect timeout: %d" % st)
    check(0.8 <= took < T(4), "503 after %.1fs (upstream_connect_timeout 1s)" % took)
    check(metric(cg, "connect") == 1, "connect metric: %r" % metric(cg, "connect"))


class Closer:
    def __init__(self, socks):
        self.socks = socks

    def stop(self):
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        return []


# ---------------------------------------------------------------------------------------------
# the pool

def conn_of(st):
    v = hdr(st["headers"], "x-upstream-conn")
    return int(v[0]) if v else None


def t_pool_reuse(t):
    up, cg, _ = H.http_env(t)
    c = H2Client(t, cg.ports["https"])
    a = c.wait(c.request("GET", "/echo"))
    b = c.wait(c.request("POST", "/body", body=b"1234"))
    c2 = H2Client(t, cg.ports["https"])
    d = c2.wait(c2.request("GET", "/echo"))
    check(a["status"] == b["status"] == d["status"] == 200, "statuses")
    # Two workers: a second connection may land on the other one; streams of one connection
    # share its worker's pool.
    check(conn_of(a) == conn_of(b), "sequential streams used upstream connections %r and %r" %
          (conn_of(a), conn_of(b)))
    # Connection: close from the upstream: that connection is not reused.
    e = c.wait(c.request("GET", "/close"))
    f = c.wait(c.request("GET", "/echo"))
    check(e["status"] == f["status"] == 200 and conn_of(e) == conn_of(a) and
          conn_of(f) != conn_of(e), "after Connection: close: %r then %r" % (conn_of(e),
                                                                            conn_of(f)))
    # A response cut at the end of a HEAD or with bytes beyond its body is never reused either;
    # an HTTP/1 request takes what h2 streams left in the pool.
    g = c.wait(c.request("GET", "/echo"))
    c.close()
    c2.close()
    check(conn_of(g) == conn_of(f), "reuse after a fresh connection: %r %r" % (conn_of(f),
                                                                            conn_of(g)))
    check(len(up.files(".bin")) <= 3, "upstream connections: %d" % len(up.files(".bin")))


def ok_answer(c, n, k, head, body):
    b = b"conn=%d req=%d" % (n, k)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(b) + b)
    return True


def t_unix_upstream(t):
    up, cg = raw_env(t, ok_answer, unix=True)
    c = H2Client(t, cg.ports["https"])
    a = c.wait(c.request("GET", "/a"))
    b = c.wait(c.request("POST", "/b", body=b"12345"))
    c.close()
    check(a["data"] == b"conn=1 req=1" and b["data"] == b"conn=1 req=2",
          "over a unix socket, pooled: %r %r" % (a["data"], b["data"]))


def t_client_reset_closes_upstream(t):
    """A stream the client resets mid-response: its upstream connection, half-read, is closed,
    never pooled; the next stream gets a new one."""
    closed = threading.Event()

    def answer(c, n, k, head, body):
        if b"/big" in head.split(b"\r\n")[0]:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
            try:
                while True:
                    c.sendall(b"y" * 65536)
            except OSError:
                closed.set()
                return False
        return ok_answer(c, n, k, head, body)
    up, cg = raw_env(t, answer)
    c = H2Client(t, cg.ports["https"])
    sid = c.request("GET", "/big")
    deadline = time.time() + T(5)
    while len(c.streams[sid]["data"]) < 100000 and time.time() < deadline:
        c.pump_once(0.5)
    c.conn.reset_stream(sid, 8)  # CANCEL
    c.flush()
    st = c.wait(c.request("GET", "/next"))
    c.close()
    check(st["data"] == b"conn=2 req=1", "after a reset stream: %r" % st["data"])
    check(closed.wait(T(5)), "the reset stream's upstream connection stayed open")


def t_pool_shared_with_http1(t):
    cg_up = H.Upstream(t)
    cg = t.certgate("ecdsa", [H.listener("https", "http", cg_up.http, client_auth="require")],
                    extra={"workers": 1})
    c = H2Client(t, cg.ports["https"])
    a = c.wait(c.request("GET", "/echo"))
    c.close()
    r = H.curl(t, cg.ports["https"], "/echo", "ecdsa")
    check(a["status"] == 200 and r.stdout.strip().endswith("200"), "setup: %r" % r.stdout[-80:])
    check(len(cg_up.files(".bin")) == 1, "an HTTP/1 request after an h2 stream opened %d "
          "upstream connections" % len(cg_up.files(".bin")))


def t_reused_closed_replayed(t):
    """A pooled connection that closes on the next request before answering: a GET is sent
    again on a new connection, a POST gets its 502 (the upstream may have acted on it)."""
    def answer(c, n, k, head, body):
        if k == 2:
            return False  # read the request, close without a word
        b = b"conn=%d" % n
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(b) + b)
        return True
    up, cg = raw_env(t, answer)
    c = H2Client(t, cg.ports["https"])
    a = c.wait(c.request("GET", "/a"))
    b = c.wait(c.request("GET", "/b"))
    check(a["data"] == b"conn=1" and b["status"] == 200 and b["data"] == b"conn=2",
          "GET replayed on a new connection: %r %r" % (a["data"], b))
    d = c.wait(c.request("POST", "/d", body=b"x"))
    c.close()
    check(d["status"] == 502, "a POST on a reused connection that closed: %r" % d)


def t_concurrent_50(t):
    up, cg, _ = H.http_env(t)
    r = nghttp(t, cg.ports["https"], "/echo", extra=["-m", "50", "-s"])
    check(r.returncode == 0, "nghttp: %d %s" % (r.returncode, (r.stdout + r.stderr)[-300:]))
    reqs = up.wait_requests(50)
    check(len(reqs) == 50, "the upstream got %d requests" % len(reqs))
    deadline = time.time() + T(3)
    while time.time() < deadline:
        lines = [e for e in H.log_events(cg, "access") if e.get("protocol") == "HTTP/2"]
        if len(lines) >= 50:
            break
        time.sleep(0.05)
    check(len(lines) == 50 and all(e["status"] == 200 for e in lines),
          "access log: %d lines, statuses %r" % (len(lines), {e["status"] for e in lines}))
    # Again, now that the pool holds idle connections: they are reused, not multiplied.
    before = len(up.files(".bin"))
    r = nghttp(t, cg.ports["https"], "/echo", extra=["-m", "50"])
    check(r.returncode == 0, "second round: %d" % r.returncode)
    up.wait_requests(100)
    check(len(up.files(".bin")) <= max(before, 64) + 50,
          "upstream connections %d after %d" % (len(up.files(".bin")), before))
    check(before <= 50, "50 streams opened %d upstream connections" % before)


TESTS = [
    ("h2up1.get_translated", t_get_translated),
    ("h2up1.event_stream_outlives_idle_timeout", t_event_stream_outlives_idle_timeout),
    ("h2up1.post_content_length", t_post_content_length),
    ("h2up1.post_chunked_trailers_dropped", t_post_chunked_trailers_dropped),
    ("h2up1.bodiless_framing", t_bodiless_framing),
    ("h2up1.head_204_304", t_head_204_304),
    ("h2up1.chunked_response", t_chunked_response),
    ("h2up1.response_headers_dropped", t_response_headers_dropped),
    ("h2up1.many_response_headers", t_many_response_headers),
    ("h2up1.response_split_bytewise", t_response_split_bytewise),
    ("h2up1.early_response_not_reused", t_early_response_not_reused),
    ("h2up1.no_injection_into_http1", t_no_injection_into_http1),
    ("h2up1.upload_download_1mb", t_upload_download_1mb),
    ("h2up1.download_slow_reader_bounded", t_download_slow_reader_bounded),
    ("h2up1.upload_slow_upstream_bounded", t_upload_slow_upstream_bounded),
    ("h2up1.upstream_closes_early_502", t_upstream_closes_early_502),
    ("h2up1.closes_mid_body_reset", t_closes_mid_body_reset),
    ("h2up1.bad_framing_502", t_bad_framing_502),
    ("h2up1.silent_upstream_504", t_silent_upstream_504),
    ("h2up1.connect_refused_503", t_connect_refused_503),
    ("h2up1.connect_timeout_503", t_connect_timeout_503),
    ("h2up1.pool_reuse", t_pool_reuse),
    ("h2up1.pool_shared_with_http1", t_pool_shared_with_http1),
    ("h2up1.unix_upstream", t_unix_upstream),
    ("h2up1.client_reset_closes_upstream", t_client_reset_closes_upstream),
    ("h2up1.reused_closed_replayed", t_reused_closed_replayed),
    ("h2up1.concurrent_50", t_concurrent_50),
]


def register(harness):
    global H
    H = harness
    harness.add_tests(TESTS)
