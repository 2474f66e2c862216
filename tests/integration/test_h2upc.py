#!/usr/bin/env python3
"""test_h2upc.py: the h2c upstream side (h2/h2_upc.c, `upstream_protocol: h2c`), group `h2upc.`.

Clients (curl --http2, nghttp, python3-h2 over TLS with a client certificate) talk to certgate;
certgate talks HTTP/2 with prior knowledge to the h2c server below (python3-h2 on asyncio, this
file run as `test_h2upc.py serve`), which answers by path and counts what it saw (connections,
concurrent streams, resets, bytes sent per download) on a side port that answers one JSON line:

  /echo[?trailers=1]     200, JSON of what arrived (headers, body length and sha256, trailers);
                         with trailers=1 the response ends with trailers
  /download?bytes=N&tag=T  N bytes of the pattern i % 251, sent as the window allows
  /slow?ms=N             answers after N ms
  /reset                 RST_STREAM INTERNAL_ERROR instead of an answer
  /reset_after_head      a response head, some body, then RST_STREAM
  /trailers_only         a gRPC error: one HEADERS with END_STREAM
  /early_hints           103, then the answer
  /bighead?n=N           a response head with N headers of 8 KiB
  /goaway                answers, then GOAWAY and closes the connection
  /drop                  closes the connection at once, without GOAWAY
  /sink                  reads no request body: its window stays shut
  /goaway_keep?wait=W&ms=N  after W ms, GOAWAY naming this stream as the last; answers N ms
                         later
  /refuse_once?tag=T     RST_STREAM REFUSED_STREAM the first time T is seen, then answers
  /goaway_once?tag=T[&ms=N]  the first time: (after N ms) GOAWAY with a last stream id below
                         this stream's, and close; then answers
"""

import sys
if "/usr/lib/python3/dist-packages" not in sys.path:
    sys.path.append("/usr/lib/python3/dist-packages")
import hashlib
import json
import os
import socket
import subprocess
import threading
import time

H = None
PATTERN = bytes(i % 251 for i in range(251 * 256))  # 251 * 256: whole periods


def pattern(offset, n):
    """Bytes offset .. offset+n of the download pattern (i % 251)."""
    out = bytearray()
    off = offset % 251
    while n > 0:
        piece = PATTERN[off:off + n]
        out += piece
        n -= len(piece)
        off = 0
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# the h2c upstream (a subprocess)

def serve(argv):
    import asyncio
    import urllib.parse
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings

    max_streams = int(argv[argv.index("--max-streams") + 1]) if "--max-streams" in argv else 100
    stats = {"connections": 0, "max_open": 0, "streams": 0, "resets": [], "sent": {},
             "paths": []}
    refused = set()

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            stats["connections"] += 1
            self.tr = transport
            self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
                client_side=False, header_encoding="utf-8"))
            self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams})
            self.conn.initiate_connection()
            self.streams = {}
            self.windows = {}
            self.tasks = set()
            self.flush()

        def flush(self):
            data = self.conn.data_to_send()
            if data and not self.tr.is_closing():
                self.tr.write(data)

        def connection_lost(self, exc):
            for task in self.tasks:
                task.cancel()
            for ev in self.windows.values():
                ev.set()

        def data_received(self, data):
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                print("protocol error: %r" % e, file=sys.stderr)
                self.flush()
                self.tr.close()
                return
            for ev in events:
                sid = getattr(ev, "stream_id", None)
                if isinstance(ev, h2.events.RequestReceived):
                    self.streams[sid] = {"headers": ev.headers, "body": bytearray(),
                                         "trailers": [],
                                         "sink": dict(ev.headers)[":path"].startswith("/sink")}
                    stats["streams"] += 1
                    stats["max_open"] = max(stats["max_open"], self.conn.open_inbound_streams)
                elif isinstance(ev, h2.events.DataReceived):
                    if sid in self.streams and self.streams[sid]["sink"]:
                        stats["sink"] = stats.get("sink", 0) + len(ev.data)
                        continue  # never read: the window stays shut
                    if sid in self.streams:
                        self.streams[sid]["body"] += ev.data
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.TrailersReceived):
                    if sid in self.streams:
                        self.streams[sid]["trailers"] = ev.headers
                elif isinstance(ev, h2.events.StreamEnded):
                    if sid in self.streams:
                        stats.setdefault("ended", []).append(
                            dict(self.streams[sid]["headers"])[":path"])
                        self.spawn(self.handle(sid))
                elif isinstance(ev, h2.events.StreamReset):
                    stats["resets"].append(ev.error_code)
                    self.streams.pop(sid, None)
                    w = self.windows.pop(sid, None)
                    if w is not None:
                        w.set()
                elif isinstance(ev, h2.events.WindowUpdated):
                    targets = list(self.windows) if ev.stream_id == 0 else [ev.stream_id]
                    for t in targets:
                        if t in self.windows:
                            self.windows[t].set()
            self.flush()

        def spawn(self, coro):
            task = asyncio.ensure_future(coro)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        def alive(self, sid):
            return sid in self.streams and not self.tr.is_closing()

        async def send_body(self, sid, n, tag=None):
            off = 0
            while off < n:
                if not self.alive(sid):
                    return False
                window = min(self.conn.local_flow_control_window(sid),
                             self.conn.max_outbound_frame_size, n - off)
                if window <= 0:
                    ev = self.windows.setdefault(sid, asyncio.Event())
                    ev.clear()
                    await ev.wait()
                    continue
                self.conn.send_data(sid, pattern(off, window))
                off += window
                if tag:
                    stats["sent"][tag] = off
                self.flush()
                await asyncio.sleep(0)
            return True

        def respond(self, sid, status, body=b"", extra=(), trailers=None):
            if not self.alive(sid):
                return
            hdrs = [(":status", str(status))] + list(extra)
            if trailers is None:
                hdrs.append(("content-length", str(len(body))))
            self.conn.send_headers(sid, hdrs, end_stream=not body and trailers is None)
            if body:
                self.conn.send_data(sid, body, end_stream=trailers is None)
            if trailers is not None:
                self.conn.send_headers(sid, trailers, end_stream=True)
            self.streams.pop(sid, None)
            self.flush()

        async def handle(self, sid):
            st = self.streams[sid]
            hd = st["headers"]
            path = dict(hd)[":path"]
            url = urllib.parse.urlparse(path)
            q = dict(urllib.parse.parse_qsl(url.query))
            stats["paths"].append(url.path)
            if url.path == "/echo":
                body = json.dumps({"headers": hd, "trailers": st["trailers"],
                                   "body_len": len(st["body"]),
                                   "body_sha256": hashlib.sha256(st["body"]).hexdigest(),
                                   "stream": sid}).encode()
                trailers = [("x-up-trailer", "yes"), ("grpc-status", "0")] \
                    if q.get("trailers") else None
                self.respond(sid, 200, body, [("content-type", "application/json")], trailers)
            elif url.path == "/download":
                n = int(q.get("bytes", "0"))
                self.conn.send_headers(sid, [(":status", "200"), ("content-length", str(n))])
                self.flush()
                if await self.send_body(sid, n, q.get("tag")) and self.alive(sid):
                    self.conn.end_stream(sid)
                    self.streams.pop(sid, None)
                    self.flush()
            elif url.path in ("/slow", "/hold"):
                await asyncio.sleep(int(q.get("ms", "100")) / 1000.0)
                self.respond(sid, 200, b"slow\n")
            elif url.path == "/reset":
                self.conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
                self.streams.pop(sid, None)
                self.flush()
            elif url.path == "/reset_after_head":
                self.conn.send_headers(sid, [(":status", "200")])
                self.conn.send_data(sid, b"partial")
                self.flush()
                await asyncio.sleep(0.1)
                if self.alive(sid):
                    self.conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
                    self.streams.pop(sid, None)
                    self.flush()
            elif url.path == "/trailers_only":
                self.conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                             ("grpc-status", "13"), ("grpc-message", "boom")],
                                       end_stream=True)
                self.streams.pop(sid, None)
                self.flush()
            elif url.path == "/bighead":
                extra = [("x-big-%d" % i, "b" * 8192) for i in range(int(q.get("n", "1")))]
                self.respond(sid, 200, b"big head\n", extra)
            elif url.path == "/early_hints":
                self.conn.send_headers(sid, [(":status", "103"), ("link", "</a.css>; rel=preload")])
                self.flush()
                self.respond(sid, 200, b"after hints\n")
            elif url.path == "/refuse_once":
                tag = q.get("tag", "")
                if tag not in refused:
                    refused.add(tag)
                    self.conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
                    self.streams.pop(sid, None)
                    self.flush()
                else:
                    self.respond(sid, 200, b"second try\n")
            elif url.path == "/goaway_once":
                tag = q.get("tag", "")
                if tag not in refused:
                    # GOAWAY naming the stream before this one: this one (and any later) was
                    # not processed, and the client may send it again.
                    refused.add(tag)
                    await asyncio.sleep(int(q.get("ms", "0")) / 1000.0)
                    self.conn.close_connection(last_stream_id=max(0, sid - 2))
                    self.flush()
                    self.tr.close()
                else:
                    self.respond(sid, 200, b"after goaway\n")
            elif url.path == "/goaway_keep":
                # A graceful GOAWAY naming this stream as the last: written past python-h2's
                # state machine, which would refuse to answer after it.
                import hyperframe.frame
                await asyncio.sleep(int(q.get("wait", "0")) / 1000.0)
                self.tr.write(hyperframe.frame.GoAwayFrame(0, last_stream_id=sid).serialize())
                await asyncio.sleep(int(q.get("ms", "200")) / 1000.0)
                self.respond(sid, 200, b"finished after goaway\n")
            elif url.path == "/drop":
                self.tr.abort()  # no GOAWAY: the connection is just gone
            elif url.path == "/goaway":
                self.respond(sid, 200, b"bye\n")
                self.conn.close_connection(last_stream_id=sid)
                self.flush()
                self.tr.close()
            else:
                self.respond(sid, 404, b"no such path\n")

    async def stats_client(reader, writer):
        writer.write(json.dumps(stats).encode() + b"\n")
        await writer.drain()
        writer.close()

    async def main():
        loop = asyncio.get_running_loop()
        if "--unix" in argv:
            await loop.create_unix_server(Proto, argv[argv.index("--unix") + 1])
        server = await loop.create_server(Proto, "127.0.0.1", 0)
        side = await asyncio.start_server(stats_client, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sport = side.sockets[0].getsockname()[1]
        print("READY h2c=%d stats=%d" % (port, sport), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class H2cUpstream:
    """The h2c server above as a subprocess."""

    def __init__(self, t, max_streams=100, unix=None):
        import re
        import select
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve",
                                      "--max-streams", str(max_streams)] +
                                     (["--unix", unix] if unix else []),
                                     stdout=subprocess.PIPE,
                                     stderr=open(os.path.join(t.dir, "h2c-upstream.stderr"), "wb"))
        t.procs.append(self)
        r, _, _ = select.select([self.proc.stdout], [], [], H.T(15))
        check(r, "the h2c upstream did not start")
        line = self.proc.stdout.readline().decode()
        m = re.match(r"READY h2c=(\d+) stats=(\d+)", line)
        check(m, "the h2c upstream said %r" % line)
        self.port, self.stats_port = int(m.group(1)), int(m.group(2))
        self.addr = "%s:%d" % (H.HOST, self.port)

    def stats(self):
        with socket.create_connection((H.HOST, self.stats_port), timeout=H.T(5)) as s:
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc.stdout.close()
        return []


# ---------------------------------------------------------------------------------------------
# clients

def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def env(t, limits=None, extra=None, max_streams=100, upstream=None, **lkw):
    up = H2cUpstream(t, max_streams) if upstream is None else None
    lkw.setdefault("client_auth", "require")
    lkw["upstream_protocol"] = "h2c"
    cg = t.certgate("ecdsa", [H.listener("https", "http", upstream or up.addr, **lkw)],
                    limits=limits, extra=extra)
    return up, cg


def curl2(t, port, path, extra=(), timeout=10):
    pki = H.Opts.pki["ecdsa"]
    args = ["curl", "-sS", "--http2", "-m", str(int(H.T(timeout))),
            "--resolve", "localhost:%d:%s" % (port, H.HOST),
            "--cacert", os.path.join(pki, "root.crt"),
            "--cert", os.path.join(pki, "client-chain.crt"),
            "--key", os.path.join(pki, "client.key"),
            "-o", "-", "-w", "\n%{http_version} %{http_code}"] + list(extra)
    args.append("https://localhost:%d%s" % (port, path))
    r = H.run_cmd(args, timeout=timeout + 5)
    body, _, tail = r.stdout.rpartition("\n")
    return tail.strip(), body, r.stderr


def upstream_errors(cg):
    """certgate_upstream_errors_total of the https listener, by kind."""
    import re
    status, body = H.http_get(cg.admin_port, "/metrics")
    check(status == 200, "metrics: %r" % status)
    out = {}
    for m in re.finditer(rb'certgate_upstream_errors_total\{listener="https",kind="(\w+)"\} (\d+)',
                         body):
        out[m.group(1).decode()] = int(m.group(2))
    return out


class Stream:
    def __init__(self):
        self.status = None
        self.headers = []
        self.informational = []
        self.data = bytearray()
        self.trailers = None
        self.reset = None
        self.ended = False

    @property
    def done(self):
        return self.ended or self.reset is not None


class H2Client:
    """An HTTP/2 client on one TLS connection (python3-h2), with a client certificate. With
    ack=False it never gives window back: a client that stopped reading."""

    def __init__(self, t, port, ack=True):
        import h2.config
        import h2.connection
        ctx = H.client_ctx("ecdsa")
        ctx.set_alpn_protocols(["h2"])
        self.sock = H.tls_connect(t, port, ctx)
        check(self.sock.selected_alpn_protocol() == "h2", "ALPN did not choose h2")
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.ack = ack
        self.streams = {}
        self.closed = False
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", body=None, headers=(), trailers=None, end=True):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "https"), (":authority", "localhost"),
                (":path", path)] + list(headers)
        self.conn.send_headers(sid, hdrs, end_stream=end and body is None and trailers is None)
        if body is not None:
            self.send_body(sid, body)
        if trailers is not None:
            self.conn.send_headers(sid, trailers, end_stream=True)
        elif body is not None and end:
            self.conn.end_stream(sid)
        self.streams[sid] = Stream()
        self.flush()
        return sid

    def send_body(self, sid, body):
        off = 0
        while off < len(body):
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump(1, lambda: self.conn.local_flow_control_window(sid) > 0)
                continue
            self.conn.send_data(sid, body[off:off + window])
            off += window
            self.flush()

    def pump(self, timeout, until):
        """Reads events until until() is true or |timeout| seconds pass; returns until()."""
        import h2.events
        deadline = time.time() + H.T(timeout)
        while not until() and not self.closed:
            left = deadline - time.time()
            if left <= 0:
                break
            self.sock.settimeout(min(left, 0.5))
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            if not chunk:
                self.closed = True
                break
            for ev in self.conn.receive_data(chunk):
                st = self.streams.get(getattr(ev, "stream_id", None))
                if isinstance(ev, h2.events.ResponseReceived) and st:
                    st.headers = ev.headers
                    st.status = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.InformationalResponseReceived) and st:
                    st.informational.append(ev.headers)
                elif isinstance(ev, h2.events.DataReceived) and st:
                    st.data += ev.data
                    if self.ack:
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived) and st:
                    st.trailers = ev.headers
                elif isinstance(ev, h2.events.StreamEnded) and st:
                    st.ended = True
                elif isinstance(ev, h2.events.StreamReset) and st:
                    st.reset = ev.error_code
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.closed = True
            self.flush()
        return until()

    def wait(self, sids, timeout=10):
        sids = list(sids)
        ok = self.pump(timeout, lambda: all(self.streams[s].done for s in sids))
        check(ok, "streams not done in time: %r" % [(s, self.streams[s].status, self.streams[s].reset)
                                                     for s in sids if not self.streams[s].done])
        return [self.streams[s] for s in sids]

    def get(self, path, timeout=10, **kw):
        return self.wait([self.request(path, **kw)], timeout)[0]

    def resume(self):
        """Gives back every byte received so far: the client reads again."""
        self.ack = True
        for sid, st in self.streams.items():
            if st.data and not st.done:
                try:
                    self.conn.acknowledge_received_data(len(st.data), sid)
                except Exception:
                    pass
        self.flush()


# ---------------------------------------------------------------------------------------------
# tests

def t_get_post_curl_nghttp(t):
    up, cg = env(t)
    port = cg.ports["https"]
    tail, body, err = curl2(t, port, "/echo")
    check(tail == "2 200", "GET through h2c: %r %r" % (tail, err))
    seen = json.loads(body)
    names = [k for k, _ in seen["headers"]]
    check(names[:4] == [":method", ":scheme", ":authority", ":path"] or
          names[:3] == [":method", ":scheme", ":path"], "pseudo-headers first: %r" % names)
    check("x-forwarded-client-cert" in names, "the upstream gets the client-cert header: %r" % names)
    payload = os.urandom(300 * 1024)
    path = os.path.join(t.dir, "payload.bin")
    with open(path, "wb") as f:
        f.write(payload)
    tail, body, err = curl2(t, port, "/echo", extra=["--data-binary", "@" + path])
    check(tail == "2 200", "POST through h2c: %r %r" % (tail, err))
    seen = json.loads(body)
    check(seen["body_len"] == len(payload) and
          seen["body_sha256"] == hashlib.sha256(payload).hexdigest(), "POST body: %r" % seen)
    # nghttp: a second real client, several streams on one connection.
    pki = H.Opts.pki["ecdsa"]
    r = H.run_cmd(["nghttp", "-n", "-s", "--cert", os.path.join(pki, "client-chain.crt"),
                   "--key", os.path.join(pki, "client.key"), "-t", str(int(H.T(10))),
                   "https://localhost:%d/echo" % port, "https://localhost:%d/slow?ms=10" % port],
                  timeout=20)
    check(r.returncode == 0 and r.stdout.count(" 200 ") + r.stdout.count("200") >= 2,
          "nghttp: %r %r" % (r.stdout[-400:], r.stderr[-400:]))
    st = up.stats()
    check(st["connections"] == 1 or st["connections"] <= 2,
          "one h2c connection per worker: %r" % st["connections"])


def t_client_cert_header_replaced(t):
    up, cg = env(t)
    c = H2Client(t, cg.ports["https"])
    st = c.get("/echo", headers=[("x-forwarded-client-cert", "By=spoofed;Hash=00")])
    check(st.status == 200, "status %r" % st.status)
    hdrs = json.loads(bytes(st.data))["headers"]
    xfcc = [v for k, v in hdrs if k == "x-forwarded-client-cert"]
    check(len(xfcc) == 1 and "spoofed" not in xfcc[0] and "Hash=" in xfcc[0],
          "the client's header replaced by certgate's: %r" % xfcc)


def t_trailers_end_to_end(t):
    up, cg = env(t)
    c = H2Client(t, cg.ports["https"])
    sid = c.request("/echo?trailers=1", method="POST", body=b"hello trailers",
                    headers=[("te", "trailers"), ("content-type", "application/grpc")],
                    trailers=[("x-client-trailer", "sent"), ("grpc-timeout", "1S")])
    st = c.wait([sid])[0]
    check(st.status == 200 and st.ended, "status %r reset %r" % (st.status, st.reset))
    seen = json.loads(bytes(st.data))
    check(["x-client-trailer", "sent"] in seen["trailers"],
          "the upstream got the request trailers: %r" % seen["trailers"])
    check(seen["body_len"] == len(b"hello trailers"), "request body: %r" % seen)
    check(st.trailers is not None and ("x-up-trailer", "yes") in st.trailers and
          ("grpc-status", "0") in st.trailers, "the client got the response trailers: %r" % st.trailers)


def t_trailers_curl(t):
    up, cg = env(t)
    tail, body, err = curl2(t, cg.ports["https"], "/echo?trailers=1", extra=["-v"])
    check(tail == "2 200", "curl: %r %r" % (tail, err[-300:]))
    check("x-up-trailer: yes" in err.lower(), "curl -v shows the trailer: %r" % err[-600:])


def t_trailers_only(t):
    up, cg = env(t)
    c = H2Client(t, cg.ports["https"])
    st = c.get("/trailers_only", method="POST", body=b"\0\0\0\0\0",
               headers=[("te", "trailers"), ("content-type", "application/grpc")])
    h = dict(st.headers)
    check(st.status == 200 and st.ended and h.get("grpc-status") == "13" and
          h.get("grpc-message") == "boom" and not st.data,
          "trailers-only response: %r %r %r" % (st.status, st.headers, bytes(st.data)))


def t_informational_dropped(t):
    up, cg = env(t)
    c = H2Client(t, cg.ports["https"])
    st = c.get("/early_hints")
    check(st.status == 200 and bytes(st.data) == b"after hints\n" and not st.informational,
          "1xx dropped, the answer delivered: %r %r %r" % (st.status, st.informational,
                                                           bytes(st.data)))


def t_slow_client_stalls_upstream(t):
    up, cg = env(t)
    n = 16 * 1024 * 1024
    c = H2Client(t, cg.ports["https"], ack=False)
    sid = c.request("/download?bytes=%d&tag=slow" % n)
    c.pump(3, lambda: len(c.streams[sid].data) >= 65535)
    time.sleep(H.T(1))
    sent1 = up.stats()["sent"].get("slow", 0)
    time.sleep(H.T(0.5))
    sent2 = up.stats()["sent"].get("slow", 0)
    # The client's window (64 KiB) + certgate's stream queue (64 KiB) + the h2c window (64 KiB),
    # and frames in flight: far below the 16 MiB download.
    check(sent1 == sent2 and 0 < sent2 <= 512 * 1024,
          "the upstream stopped at the window: sent %d then %d bytes" % (sent1, sent2))
    c.resume()
    ok = c.pump(60, lambda: c.streams[sid].done)
    st = c.streams[sid]
    check(ok and st.ended and len(st.data) == n, "the download finished: %r bytes, reset %r" %
          (len(st.data), st.reset))
    check(bytes(st.data) == pattern(0, n), "the download arrived intact")


def t_slow_upstream_stalls_client(t):
    """An upstream that reads no request body: certgate stops taking the client's body once
    its queue is full, so the client's window shuts too."""
    up, cg = env(t)
    c = H2Client(t, cg.ports["https"])
    sid = c.request("/sink", method="POST", end=False)
    body = b"u" * (8 << 20)
    sent = 0
    deadline = time.time() + H.T(5)
    while time.time() < deadline:
        window = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
        if window > 0:
            c.conn.send_data(sid, body[sent:sent + window])
            sent += window
            c.flush()
            continue
        if not c.pump(0.5, lambda: c.conn.local_flow_control_window(sid) > 0):
            break
    check(c.conn.local_flow_control_window(sid) == 0, "the client's window shut")
    # The upstream's window (64 KiB), certgate's queue (64 KiB) and the client's initial window.
    check(0 < sent <= 512 * 1024, "the client could send %d bytes" % sent)
    check(up.stats().get("sink", 0) <= 65535, "the upstream got %r" % up.stats().get("sink"))


def t_memory_bounded_slow_clients(t):
    """Ten stalled 8 MiB downloads: certgate's resident memory grows by far less than 80 MiB."""
    up, cg = env(t, extra={"workers": 1})

    def rss():
        with open("/proc/%d/status" % cg.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    before = rss()
    clients = [H2Client(t, cg.ports["https"], ack=False) for _ in range(10)]
    sids = [c.request("/download?bytes=%d&tag=m%d" % (8 << 20, i)) for i, c in enumerate(clients)]
    for c, sid in zip(clients, sids):
        c.pump(3, lambda c=c, sid=sid: len(c.streams[sid].data) >= 65535)
    time.sleep(H.T(1))
    sent = up.stats()["sent"]
    total = sum(sent.get("m%d" % i, 0) for i in range(10))
    grown = rss() - before
    check(total <= 10 * 512 * 1024, "the upstream sent %d bytes to stalled clients" % total)
    # ASan's allocator (quarantine, redzones) makes RSS meaningless; the byte count holds.
    check(H.Opts.sanitizer or grown < 16 * 1024 * 1024, "certgate grew by %d bytes" % grown)


def t_upstream_reset_502(t):
    up, cg = env(t)
    c = H2Client(t, cg.ports["https"])
    st = c.get("/reset")
    check(st.status == 502, "upstream RST_STREAM before the head: %r %r" % (st.status, st.reset))
    st = c.get("/reset_after_head")
    check(st.status == 200 and st.reset is not None and not st.ended,
          "upstream RST_STREAM after the head: the client's stream is reset: %r %r" %
          (st.status, st.reset))
    st = c.get("/echo")
    check(st.status == 200, "the connection goes on: %r" % st.status)
    events = [e for e in H.log_events(cg, "access") if e.get("path") == "/reset"]
    check(events and events[0]["status"] == 502, "access log: %r" % events)
    check(upstream_errors(cg).get("reset") == 2, "metrics: %r" % upstream_errors(cg))


def t_response_head_limit(t):
    """A response head beyond limits.max_request_head: 502 for that stream, the connection to
    the upstream goes on."""
    up, cg = env(t, extra={"workers": 1})
    c = H2Client(t, cg.ports["https"])
    st = c.get("/bighead?n=4")
    check(st.status == 200 and bytes(st.data) == b"big head\n", "32 KiB head: %r" % st.status)
    st = c.get("/bighead?n=12")
    check(st.status == 502, "96 KiB head: %r %r" % (st.status, st.reset))
    st = c.get("/echo")
    check(st.status == 200 and up.stats()["connections"] == 1,
          "the same upstream connection goes on: %r %r" % (st.status, up.stats()["connections"]))


def t_http1_upstream_502(t):
    """upstream_protocol h2c in front of an HTTP/1.1 application (a configuration mistake): 502,
    and a warning that names the upstream."""
    http1 = t.upstream()
    _, cg = env(t, upstream=http1.http)
    tail, body, err = curl2(t, cg.ports["https"], "/echo")
    check(tail == "2 502", "an HTTP/1.1 upstream: %r %r" % (tail, err))
    ev = H.log_events(cg, "upstream_h2c_lost")
    check(ev and http1.http in ev[0]["message"], "upstream_h2c_lost: %r" % ev)


def t_upstream_down_503(t):
    port = H.free_port()
    up, cg = env(t, upstream="%s:%d" % (H.HOST, port))
    tail, body, err = curl2(t, cg.ports["https"], "/echo")
    check(tail == "2 503", "nothing listening upstream: %r %r" % (tail, err))
    ev = H.log_events(cg, "upstream_connect_failed")
    check(ev, "upstream_connect_failed logged")
    check(upstream_errors(cg).get("connect") == 1, "metrics: %r" % upstream_errors(cg))


def t_connect_timeout_503(t):
    # A listener that never accepts, its backlog filled: the SYN of certgate's connect is
    # dropped and the connect hangs until upstream_connect_timeout.
    ls = socket.socket()
    ls.bind((H.HOST, 0))
    ls.listen(0)
    t.socks.append(ls)
    addr = ls.getsockname()
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(addr)
        except BlockingIOError:
            pass
        fillers.append(f)
        t.socks.append(f)
    time.sleep(0.2)
    up, cg = env(t, upstream="%s:%d" % addr, limits={"upstream_connect_timeout": "1s"})
    start = time.time()
    tail, body, err = curl2(t, cg.ports["https"], "/echo", timeout=15)
    took = time.time() - start
    check(tail == "2 503" and took >= 0.9, "connect timeout: %r after %.1fs" % (tail, took))


def t_response_timeout_504(t):
    up, cg = env(t, limits={"upstream_response_timeout": "1s"})
    c = H2Client(t, cg.ports["https"])
    start = time.time()
    st = c.get("/slow?ms=4000", timeout=10)
    took = time.time() - start
    check(st.status == 504 and 0.9 <= took < H.T(3.5), "504 after %.1fs: %r" % (took, st.status))
    deadline = time.time() + H.T(3)
    while time.time() < deadline and 8 not in up.stats()["resets"]:
        time.sleep(0.05)
    check(8 in up.stats()["resets"], "the upstream stream was cancelled (RST_STREAM CANCEL): %r" %
          up.stats()["resets"])
    st = c.get("/echo")
    check(st.status == 200, "the next stream works: %r" % st.status)
    check(upstream_errors(cg).get("timeout") == 1, "metrics: %r" % upstream_errors(cg))


def t_client_reset_cancels_upstream(t):
    up, cg = env(t)
    c = H2Client(t, cg.ports["https"], ack=False)
    sid = c.request("/download?bytes=%d&tag=cancel" % (32 << 20))
    c.pump(3, lambda: len(c.streams[sid].data) > 0)
    import h2.errors
    c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    c.flush()
    deadline = time.time() + H.T(3)
    while time.time() < deadline and 8 not in up.stats()["resets"]:
        time.sleep(0.05)
    check(8 in up.stats()["resets"], "certgate cancelled the upstream stream: %r" %
          up.stats()["resets"])
    st = c.get("/echo")
    check(st.status == 200, "the connection goes on: %r" % st.status)


def t_goaway_next_request_works(t):
    up, cg = env(t, extra={"workers": 1})
    c = H2Client(t, cg.ports["https"])
    st = c.get("/goaway")
    check(st.status == 200 and bytes(st.data) == b"bye\n", "answer before GOAWAY: %r" % st.status)
    time.sleep(H.T(0.2))
    for i in range(3):
        st = c.get("/echo")
        check(st.status == 200, "request %d after the upstream's GOAWAY: %r" % (i, st.status))
    check(up.stats()["connections"] == 2, "a new h2c connection: %r" % up.stats()["connections"])


def t_connection_lost_in_flight(t):
    """The upstream connection drops with streams in flight: each gets 502, a warning is
    logged, and the next stream opens a new connection."""
    up, cg = env(t, extra={"workers": 1})
    c = H2Client(t, cg.ports["https"])
    held = c.request("/hold?ms=2000")
    time.sleep(H.T(0.1))
    dropper = c.request("/drop")
    res = c.wait([held, dropper], timeout=10)
    check([r.status for r in res] == [502, 502], "in flight when the connection dropped: %r" %
          [(r.status, r.reset) for r in res])
    st = c.get("/echo")
    check(st.status == 200 and up.stats()["connections"] == 2, "a new connection: %r %r" %
          (st.status, up.stats()["connections"]))
    ev = H.log_events(cg, "upstream_h2c_lost")
    check(ev and "2 streams" in ev[0]["message"], "upstream_h2c_lost: %r" % ev)


def t_goaway_then_close_idle(t):
    """The upstream closes its idle connection: the next stream opens a new one."""
    up, cg = env(t, extra={"workers": 1})
    tail, _, err = curl2(t, cg.ports["https"], "/goaway")
    check(tail == "2 200", "setup: %r %r" % (tail, err))
    time.sleep(H.T(0.3))
    tail, _, err = curl2(t, cg.ports["https"], "/echo")
    check(tail == "2 200", "after the upstream closed: %r %r" % (tail, err))


def t_concurrency_over_limit(t):
    """200 concurrent streams (two client connections of 100) over an upstream that allows 100:
    all answered, never more than 100 open upstream, one upstream connection."""
    up, cg = env(t, extra={"workers": 1}, max_streams=100)
    clients = [H2Client(t, cg.ports["https"]) for _ in range(2)]
    sids = []
    for c in clients:
        for i in range(100):
            sids.append((c, c.request("/hold?ms=300")))
        c.flush()
    results = []
    deadline = time.time() + H.T(30)

    def all_done():
        return all(c.streams[s].done for c, s in sids)

    while not all_done() and time.time() < deadline:
        for c in clients:
            c.pump(0.2, lambda c=c: all(c.streams[s].done for cc, s in sids if cc is c))
    results = [c.streams[s] for c, s in sids]
    bad = [(r.status, r.reset) for r in results if r.status != 200 or not r.ended]
    check(not bad, "%d of 200 streams failed: %r" % (len(bad), bad[:5]))
    st = up.stats()
    check(st["max_open"] <= 100, "the upstream's limit held: %d open" % st["max_open"])
    check(st["max_open"] >= 50, "streams ran concurrently: %d" % st["max_open"])
    check(st["connections"] == 1 and st["streams"] == 200, "one connection, 200 streams: %r" %
          {k: st[k] for k in ("connections", "streams")})


def t_concurrency_small_limit(t):
    """An upstream that allows 5 streams: 40 queue behind them, all answered."""
    up, cg = env(t, extra={"workers": 1}, max_streams=5)
    c = H2Client(t, cg.ports["https"])
    sids = [c.request("/hold?ms=50") for _ in range(40)]
    res = c.wait(sids, timeout=30)
    bad = [(r.status, r.reset) for r in res if r.status != 200]
    check(not bad, "failed: %r" % bad[:5])
    check(up.stats()["max_open"] <= 5, "limit held: %r" % up.stats()["max_open"])


def t_refused_stream_retried(t):
    """REFUSED_STREAM (RFC 9113 8.7: not processed) is sent again when no body byte went out;
    a request whose body went out gets its 502."""
    up, cg = env(t, extra={"workers": 1})
    c = H2Client(t, cg.ports["https"])
    st = c.get("/refuse_once?tag=get")
    check(st.status == 200 and bytes(st.data) == b"second try\n",
          "a refused GET is sent again: %r %r" % (st.status, bytes(st.data)))
    st = c.get("/refuse_once?tag=post", method="POST", body=b"x" * 1000)
    check(st.status == 502, "a refused POST whose body went out: %r" % st.status)
    check(up.stats()["paths"].count("/refuse_once") == 3, "the upstream saw: %r" %
          up.stats()["paths"])


def t_goaway_refused_streams_resent(t):
    """GOAWAY whose last stream id is below streams in flight, with more streams waiting behind
    an upstream limit of 1: every one is sent again on a new connection and answered."""
    up, cg = env(t, extra={"workers": 1}, max_streams=1)
    c = H2Client(t, cg.ports["https"])
    first = c.request("/goaway_once?tag=g&ms=200")
    time.sleep(H.T(0.05))
    rest = [c.request("/echo") for _ in range(3)]
    res = c.wait([first] + rest, timeout=15)
    check([r.status for r in res] == [200] * 4, "statuses: %r" % [(r.status, r.reset) for r in res])
    check(bytes(res[0].data) == b"after goaway\n", "the refused stream was answered the second "
          "time: %r" % bytes(res[0].data))
    st = up.stats()
    check(st["connections"] == 2, "a second connection: %r" % st["connections"])


def t_graceful_goaway_queued_streams(t):
    """A graceful GOAWAY while streams wait behind an upstream limit of 1: the stream in flight
    finishes on the old connection, the waiting ones go to a new one."""
    up, cg = env(t, extra={"workers": 1}, max_streams=1)
    c = H2Client(t, cg.ports["https"])
    first = c.request("/goaway_keep?wait=300&ms=300")
    time.sleep(0.05)
    rest = [c.request("/echo") for _ in range(3)]
    res = c.wait([first] + rest, timeout=15)
    check([r.status for r in res] == [200] * 4, "statuses: %r" % [(r.status, r.reset) for r in res])
    check(bytes(res[0].data) == b"finished after goaway\n", "in flight: %r" % bytes(res[0].data))
    st = up.stats()
    check(st["connections"] == 2 and st["streams"] == 4, "two connections, four streams: %r" %
          {k: st[k] for k in ("connections", "streams")})


def t_grpc_server(t):
    """A real gRPC server (python3-grpcio, h2c on an insecure port) behind certgate: a unary call
    that sees the client-cert header in its metadata, an error status, a bidirectional stream."""
    script = os.path.join(t.dir, "grpc_server.py")
    with open(script, "w") as f:
        f.write(GRPC_SERVER)
    proc = subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE,
                            stderr=open(os.path.join(t.dir, "grpc.stderr"), "wb"))
    t.procs.append(_Proc(proc))
    import select
    r, _, _ = select.select([proc.stdout], [], [], H.T(20))
    check(r, "the gRPC server did not start")
    port = int(proc.stdout.readline().decode().split()[1])
    _, cg = env(t, upstream="%s:%d" % (H.HOST, port))
    import grpc
    pki = H.Opts.pki["ecdsa"]
    rd = lambda n: open(os.path.join(pki, n), "rb").read()  # noqa: E731
    creds = grpc.ssl_channel_credentials(rd("root.crt"), rd("client.key"), rd("client-chain.crt"))
    ch = grpc.secure_channel("localhost:%d" % cg.ports["https"], creds)
    ident = lambda b: b  # noqa: E731
    unary = ch.unary_unary("/t.T/Echo", request_serializer=ident, response_deserializer=ident)
    out = unary(b"ping", timeout=H.T(10))
    check(out.startswith(b"pong ") and b"Hash=" in out, "unary call: %r" % out[:200])
    try:
        unary(b"fail", timeout=H.T(10))
        check(False, "the error status did not arrive")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.PERMISSION_DENIED and e.details() == "no",
              "status: %r %r" % (e.code(), e.details()))
    bidi = ch.stream_stream("/t.T/Chat", request_serializer=ident, response_deserializer=ident)
    got = list(bidi(iter([b"a", b"bb", b"ccc"]), timeout=H.T(10)))
    check(got == [b"A", b"BB", b"CCC"], "bidirectional stream: %r" % got)
    ch.close()


class _Proc:
    def __init__(self, proc):
        self.proc = proc

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc.stdout.close()
        return []


GRPC_SERVER = r"""
import sys
if "/usr/lib/python3/dist-packages" not in sys.path:
    sys.path.append("/usr/lib/python3/dist-packages")
from concurrent import futures
import grpc

def echo(req, ctx):
    if req == b"fail":
        ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
    md = dict(ctx.invocation_metadata())
    return b"pong " + md.get("x-forwarded-client-cert", "").encode()

def chat(it, ctx):
    for m in it:
        yield m.upper()

ident = lambda b: b
h = grpc.method_handlers_generic_handler("t.T", {
    "Echo": grpc.unary_unary_rpc_method_handler(echo, ident, ident),
    "Chat": grpc.stream_stream_rpc_method_handler(chat, ident, ident)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((h,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print("READY %d" % port, flush=True)
server.wait_for_termination()
"""


def t_unix_socket(t):
    path = os.path.join(t.dir, "h2c.sock")
    up = H2cUpstream(t, unix=path)
    _, cg = env(t, upstream="unix:" + path)
    c = H2Client(t, cg.ports["https"])
    st = c.get("/echo?trailers=1", method="POST", body=b"over a unix socket")
    check(st.status == 200 and json.loads(bytes(st.data))["body_len"] == 18 and
          ("x-up-trailer", "yes") in (st.trailers or []), "h2c over unix: %r %r" %
          (st.status, st.trailers))
    check(up.stats()["connections"] == 1, "one connection: %r" % up.stats())


def t_drain_with_idle_h2c(t):
    """SIGTERM with an idle h2c connection open: certgate exits cleanly (h2_upc_close_all)."""
    import signal
    up, cg = env(t, limits={"shutdown_delay": "0s"})
    tail, _, err = curl2(t, cg.ports["https"], "/echo")
    check(tail == "2 200", "setup: %r %r" % (tail, err))
    cg.signal(signal.SIGTERM)
    rc = cg.wait(H.T(10))
    check(rc == 0, "exit status %r: %s" % (rc, cg.tail()))


TESTS = [
    ("h2upc.get_post_curl_nghttp", t_get_post_curl_nghttp),
    ("h2upc.client_cert_header_replaced", t_client_cert_header_replaced),
    ("h2upc.trailers_end_to_end", t_trailers_end_to_end),
    ("h2upc.trailers_curl", t_trailers_curl),
    ("h2upc.trailers_only", t_trailers_only),
    ("h2upc.informational_dropped", t_informational_dropped),
    ("h2upc.slow_client_stalls_upstream", t_slow_client_stalls_upstream),
    ("h2upc.slow_upstream_stalls_client", t_slow_upstream_stalls_client),
    ("h2upc.memory_bounded_slow_clients", t_memory_bounded_slow_clients),
    ("h2upc.upstream_reset_502", t_upstream_reset_502),
    ("h2upc.response_head_limit", t_response_head_limit),
    ("h2upc.http1_upstream_502", t_http1_upstream_502),
    ("h2upc.upstream_down_503", t_upstream_down_503),
    ("h2upc.connect_timeout_503", t_connect_timeout_503),
    ("h2upc.response_timeout_504", t_response_timeout_504),
    ("h2upc.client_reset_cancels_upstream", t_client_reset_cancels_upstream),
    ("h2upc.goaway_next_request_works", t_goaway_next_request_works),
    ("h2upc.goaway_then_close_idle", t_goaway_then_close_idle),
    ("h2upc.connection_lost_in_flight", t_connection_lost_in_flight),
    ("h2upc.concurrency_over_limit", t_concurrency_over_limit),
    ("h2upc.concurrency_small_limit", t_concurrency_small_limit),
    ("h2upc.refused_stream_retried", t_refused_stream_retried),
    ("h2upc.goaway_refused_streams_resent", t_goaway_refused_streams_resent),
    ("h2upc.graceful_goaway_queued_streams", t_graceful_goaway_queued_streams),
    ("h2upc.grpc_server", t_grpc_server),
    ("h2upc.unix_socket", t_unix_socket),
    ("h2upc.drain_with_idle_h2c", t_drain_with_idle_h2c),
]


def register(harness):
    global H
    H = harness
    harness.add_tests(TESTS)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "serve":
    serve(sys.argv[2:])
