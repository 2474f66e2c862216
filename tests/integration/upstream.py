#!/usr/bin/env python3
"""upstream.py: the demo and test upstream behind certgate (Python 3 stdlib only).

Two servers, each optional, one thread per connection:

  --http PORT   HTTP/1.1 server. Every response carries `X-Upstream-Conn: <n>` (the connection
                number) and, unless said otherwise, echoes the request head it received as a
                text/plain body with Content-Length. Keep-alive, pipelining and chunked request
                bodies are supported. Behaviours by path:
                  /echo (and any other path)  echo the request head
                  /body                       echo the head, then "body-length: N" and
                                              "body-sha256: HEX" of the request body
                  /download?bytes=N[&chunked=1]   stream N bytes (Content-Length or chunked)
                  /slow?ms=N                  sleep N ms before answering (echo)
                  /drip?n=N&ms=M              N chunked lines M ms apart (server-sent events)
                  /reset                      RST the connection (SO_LINGER 0, close)
                  /drop                       read the request, then close without answering
                  /closeafter                 echo (kept alive, no Connection: close), then close
                  /close                      echo, with Connection: close, then close
                  /status?code=N              answer with status N (echo body; none for
                                              204, 304 and 1xx; HEAD never gets a body)
                  /ws                         WebSocket 101 handshake, then echo frames
                  /upgrade200                 answer 200 with a body, even to an upgrade request
                  /badframing?kind=K          bad response framing: K = clte (CL and TE),
                                              badcl (Content-Length: 1x), dupcl (two different
                                              CLs), te (Transfer-Encoding: gzip), obsfold (a
                                              folded header line), barecr (a CR inside a line)
  --tcp PORT    raw TCP echo. Echoes every byte; a half-close from the client is answered by a
                half-close after the echo. A PROXY protocol v2 header at the start of the stream
                is parsed, recorded (conn-N.proxy.json) and not echoed.

--record DIR: every byte received on connection n is appended to DIR/http-n.bin or DIR/tcp-n.bin
(the first --record-max bytes per connection; default 1 MiB), and DIR/http-n.requests gets one
JSON line per parsed request (method, target, headers, body length).

Use port 0 to let the kernel pick one. Once listening, one line is printed on stdout:
`READY http=PORT tcp=PORT` (a server that is not enabled shows 0).
"""

import argparse
import base64
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_HEAD = 1 << 20


class Recorder:
    """Appends the received bytes of one connection to a file."""

    def __init__(self, directory, name, limit):
        self.f = None
        self.left = limit
        self.dir = directory
        self.name = name
        if directory:
            self.f = open(os.path.join(directory, name + ".bin"), "ab", buffering=0)

    def add(self, data):
        if self.f is None or self.left <= 0 or not data:
            return
        part = data[: self.left]
        self.left -= len(part)
        self.f.write(part)

    def side(self, suffix, obj, mode="a"):
        if not self.dir:
            return
        with open(os.path.join(self.dir, self.name + suffix), mode) as f:
            f.write(json.dumps(obj) + "\n")

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None


class Conn:
    """A buffered reader over a socket that records everything it receives."""

    def __init__(self, sock, rec):
        self.sock = sock
        self.rec = rec
        self.buf = b""
        self.eof = False

    def fill(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.rec.add(data)
        self.buf += data
        return True

    def read_until(self, sep, limit):
        """Returns the bytes up to and including sep, or None on EOF or over limit."""
        start = 0
        while True:
            i = self.buf.find(sep, start)
            if i >= 0:
                out = self.buf[: i + len(sep)]
                self.buf = self.buf[i + len(sep):]
                return out
            if len(self.buf) > limit:
                return None
            start = max(0, len(self.buf) - len(sep) + 1)
            if not self.fill():
                return None

    def read_some(self, n):
        """Returns up to n bytes (at least 1), or b"" on EOF."""
        if not self.buf and not self.fill():
            return b""
        out = self.buf[:n]
        self.buf = self.buf[n:]
        return out

    def read_exact(self, n):
        out = bytearray()
        while len(out) < n:
            part = self.read_some(n - len(out))
            if not part:
                return None
            out += part
        return bytes(out)


def parse_head(head):
    """Parses a request head (lenient: this is the upstream, not the proxy)."""
    text = head.decode("latin-1")
    lines = text.replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        if ":" not in line:
            return None
        k, v = line.split(":", 1)
        headers.append((k.strip(), v.strip()))
    return method, target, version, headers


def hget(headers, name):
    vals = [v for k, v in headers if k.lower() == name]
    return vals


class HttpHandler:
    def __init__(self, sock, n, args):
        self.sock = sock
        self.n = n
        self.rec = Recorder(args.record, "http-%d" % n, args.record_max)
        self.c = Conn(sock, self.rec)
        self.method = "GET"

    def send(self, data):
        self.sock.sendall(data)

    def respond(self, status, body, extra=(), close=False, reason=None):
        """Sends a response; no body for HEAD, 1xx, 204 and 304 (as HTTP requires)."""
        reason = reason or {200: "OK", 101: "Switching Protocols"}.get(status, "Status")
        head = "HTTP/1.1 %d %s\r\n" % (status, reason)
        if status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            head += "Content-Type: text/plain\r\n"
            head += "Content-Length: %d\r\n" % len(body)
            if self.method == "HEAD":
                body = b""
        head += "X-Upstream-Conn: %d\r\n" % self.n
        for k, v in extra:
            head += "%s: %s\r\n" % (k, v)
        if close:
            head += "Connection: close\r\n"
        self.send(head.encode("latin-1") + b"\r\n" + body)

    def read_body(self, headers, sink):
        """Reads the request body into sink(bytes); returns False on framing trouble."""
        te = hget(headers, "transfer-encoding")
        if te and te[-1].lower().endswith("chunked"):
            while True:
                line = self.c.read_until(b"\n", 4096)
                if line is None:
                    return False
                size_text = line.split(b";")[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    return False
                if size == 0:
                    while True:  # trailers
                        t = self.c.read_until(b"\n", 65536)
                        if t is None:
                            return False
                        if t.strip() == b"":
                            return True
                left = size
                while left > 0:
                    part = self.c.read_some(min(left, 65536))
                    if not part:
                        return False
                    sink(part)
                    left -= len(part)
                if self.c.read_until(b"\n", 16) is None:
                    return False
        cl = hget(headers, "content-length")
        if cl:
            try:
                left = int(cl[0])
            except ValueError:
                return False
            while left > 0:
                part = self.c.read_some(min(left, 65536))
                if not part:
                    return False
                sink(part)
                left -= len(part)
        return True

    def run(self):
        try:
            while self.one():
                pass
        except OSError:
            pass
        finally:
            self.rec.close()
            try:
                self.sock.close()
            except OSError:
                pass

    def one(self):
        head = self.c.read_until(b"\r\n\r\n", MAX_HEAD)
        if head is None:
            return False
        req = parse_head(head)
        if req is None:
            self.respond(400, b"upstream: bad request\n", close=True)
            return False
        method, target, version, headers = req
        self.method = method
        url = urlsplit(target)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        h = hashlib.sha256()
        length = [0]

        def sink(data):
            h.update(data)
            length[0] += len(data)

        if not self.read_body(headers, sink):
            return False
        self.rec.side(".requests", {
            "method": method, "target": target, "version": version,
            "headers": headers, "body_length": length[0]})
        conn_hdr = ",".join(hget(headers, "connection")).lower()
        close = "close" in conn_hdr or version == "HTTP/1.0"
        path = url.path

        if path == "/body":
            body = head + b"body-length: %d\nbody-sha256: %s\n" % (
                length[0], h.hexdigest().encode())
            self.respond(200, body, close=close)
        elif path == "/download":
            self.download(int(q.get("bytes", "0")), q.get("chunked") == "1", close)
        elif path == "/slow":
            time.sleep(int(q.get("ms", "1000")) / 1000.0)
            self.respond(200, head, close=close)
        elif path == "/reset":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        elif path == "/drop":
            return False
        elif path == "/closeafter":
            self.respond(200, head)
            time.sleep(0.05)  # the answer is read first; then the idle connection goes away
            return False
        elif path == "/close":
            self.respond(200, head, close=True)
            return False
        elif path == "/drip":
            self.drip(int(q.get("n", "5")), int(q.get("ms", "400")) / 1000.0, close)
        elif path == "/status":
            code = int(q.get("code", "200"))
            self.respond(code, head, close=close)
        elif path == "/ws":
            return self.websocket(head, headers)
        elif path == "/upgrade200":
            self.respond(200, b"no upgrade here\n", close=close)
        elif path == "/badframing":
            self.badframing(q.get("kind", "clte"))
            return False
        else:
            self.respond(200, head, close=close)
        return not close

    def drip(self, n, gap, close):
        """A chunked response of |n| lines, |gap| seconds apart (server-sent events, a watch)."""
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        head += "Transfer-Encoding: chunked\r\n"
        if close:
            head += "Connection: close\r\n"
        self.send(head.encode() + b"\r\n")
        for i in range(n):
            if i:
                time.sleep(gap)
            line = b"data: event %d\n\n" % i
            self.send(b"%x\r\n" % len(line) + line + b"\r\n")
        self.send(b"0\r\n\r\n")

    def download(self, n, chunked, close):
        block = (b"0123456789abcdef" * 4096)  # 64 KiB
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        head += "X-Upstream-Conn: %d\r\n" % self.n
        if chunked:
            head += "Transfer-Encoding: chunked\r\n"
        else:
            head += "Content-Length: %d\r\n" % n
        if close:
            head += "Connection: close\r\n"
        self.send(head.encode() + b"\r\n")
        left = n
        while left > 0:
            part = block[: min(left, len(block))]
            if chunked:
                self.send(b"%x\r\n" % len(part) + part + b"\r\n")
            else:
                self.send(part)
            left -= len(part)
        if chunked:
            self.send(b"0\r\n\r\n")

    def badframing(self, kind):
        body = b"hello"
        if kind == "clte":
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            body = b"5\r\nhello\r\n0\r\n\r\n"
        elif kind == "badcl":
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n"
        elif kind == "dupcl":
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n"
        elif kind == "te":
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"
        elif kind == "obsfold":
            head = b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\n"
        elif kind == "barecr":
            head = b"HTTP/1.1 200 OK\r\nX-Bare: a\rb\r\nContent-Length: 5\r\n\r\n"
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"
        self.send(head + body)

    def websocket(self, head, headers):
        key = hget(headers, "sec-websocket-key")
        upgrade = ",".join(hget(headers, "upgrade")).lower()
        if not key or "websocket" not in upgrade:
            self.respond(400, b"upstream: not a websocket request\n", close=True)
            return False
        accept = base64.b64encode(hashlib.sha1((key[0] + WS_GUID).encode()).digest()).decode()
        self.send(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                   "X-Upstream-Conn: %d\r\n\r\n" % (accept, self.n)).encode())
        while True:
            frame = ws_read_frame(self.c)
            if frame is None:
                return False
            opcode, payload = frame
            if opcode == 8:
                self.send(ws_frame(8, payload[:2]))
                return False
            if opcode == 9:
                self.send(ws_frame(10, payload))
                continue
            self.send(ws_frame(opcode, payload))


def ws_frame(opcode, payload, mask=None):
    """Builds one final WebSocket frame (masked when mask is 4 bytes)."""
    b0 = 0x80 | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        hdr += mask
    return hdr + payload


def ws_read_frame(c):
    """Reads one frame from a Conn; returns (opcode, unmasked payload) or None."""
    hdr = c.read_exact(2)
    if hdr is None:
        return None
    opcode = hdr[0] & 0x0F
    n = hdr[1] & 0x7F
    masked = hdr[1] & 0x80
    if n == 126:
        ext = c.read_exact(2)
        if ext is None:
            return None
        n = struct.unpack("!H", ext)[0]
    elif n == 127:
        ext = c.read_exact(8)
        if ext is None:
            return None
        n = struct.unpack("!Q", ext)[0]
    mask = c.read_exact(4) if masked else None
    payload = c.read_exact(n) if n else b""
    if payload is None:
        return None
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def parse_proxy_v2(data):
    """Parses a complete PROXY v2 header; returns a dict."""
    ver_cmd, fam, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    body = data[16:16 + length]
    out = {"version": ver_cmd >> 4, "command": {0: "LOCAL", 1: "PROXY"}.get(ver_cmd & 15, "?"),
           "family": fam, "length": length}
    off = 0
    if fam == 0x11 and length >= 12:
        out.update(family_name="TCP4", src=socket.inet_ntop(socket.AF_INET, body[0:4]),
                   dst=socket.inet_ntop(socket.AF_INET, body[4:8]),
                   src_port=struct.unpack("!H", body[8:10])[0],
                   dst_port=struct.unpack("!H", body[10:12])[0])
        off = 12
    elif fam == 0x21 and length >= 36:
        out.update(family_name="TCP6", src=socket.inet_ntop(socket.AF_INET6, body[0:16]),
                   dst=socket.inet_ntop(socket.AF_INET6, body[16:32]),
                   src_port=struct.unpack("!H", body[32:34])[0],
                   dst_port=struct.unpack("!H", body[34:36])[0])
        off = 36
    tlvs = []
    while off + 3 <= length:
        t, ln = body[off], struct.unpack("!H", body[off + 1:off + 3])[0]
        tlvs.append({"type": t, "value": body[off + 3:off + 3 + ln].hex()})
        off += 3 + ln
    out["tlvs"] = tlvs
    return out


def tcp_echo(sock, n, args):
    rec = Recorder(args.record, "tcp-%d" % n, args.record_max)
    try:
        buf = b""
        # PROXY v2 detection: wait while what we have is a prefix of the signature.
        while len(buf) < 16 and PP2_SIG.startswith(buf[:12]):
            data = sock.recv(65536)
            if not data:
                break
            rec.add(data)
            buf += data
        if len(buf) >= 16 and buf.startswith(PP2_SIG):
            need = 16 + struct.unpack("!H", buf[14:16])[0]
            while len(buf) < need:
                data = sock.recv(65536)
                if not data:
                    break
                rec.add(data)
                buf += data
            if len(buf) >= need:
                rec.side(".proxy.json", parse_proxy_v2(buf[:need]), mode="w")
                buf = buf[need:]
        if buf:
            sock.sendall(buf)
        while True:
            data = sock.recv(65536)
            if not data:
                break
            rec.add(data)
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        # Wait briefly for the peer to close, then close.
        sock.settimeout(5)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass
    except OSError:
        pass
    finally:
        rec.close()
        sock.close()


def serve(lsock, handler, args):
    n = 0
    while True:
        try:
            sock, _ = lsock.accept()
        except OSError:
            return
        n += 1
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = threading.Thread(target=handler, args=(sock, n, args), daemon=True)
        t.start()


def http_handler(sock, n, args):
    HttpHandler(sock, n, args).run()


def listen(host, port):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(128)
    return s


def main():
    ap = argparse.ArgumentParser(description="certgate demo/test upstream")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--http", type=int, default=None, help="HTTP port (0: any)")
    ap.add_argument("--tcp", type=int, default=None, help="raw TCP echo port (0: any)")
    ap.add_argument("--record", default=None, help="directory for recordings")
    ap.add_argument("--record-max", type=int, default=1 << 20)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.http is None and args.tcp is None:
        args.http = 8080
    if args.record:
        os.makedirs(args.record, exist_ok=True)
    threads = []
    ports = {"http": 0, "tcp": 0}
    for kind, port, handler in (("http", args.http, http_handler), ("tcp", args.tcp, tcp_echo)):
        if port is None:
            continue
        s = listen(args.host, port)
        ports[kind] = s.getsockname()[1]
        t = threading.Thread(target=serve, args=(s, handler, args), daemon=True)
        t.start()
        threads.append(t)
    print("READY http=%d tcp=%d" % (ports["http"], ports["tcp"]), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
