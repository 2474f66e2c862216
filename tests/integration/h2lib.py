#!/usr/bin/env python3
"""h2lib.py: a small HTTP/2 client over mutual TLS for the h2 tests (test_h2attack.py,
test_h2client.py). Frames and header blocks are built by hand, so that a test can send what a
conforming library refuses to (connection-specific headers, pseudo-header misuse, uppercase
names, floods); what certgate answers is decoded with python3-hpack (Debian). Not a test module:
run.py loads only test_*.py files.

Every read and write is bounded by a timeout; a connection records what certgate sent (frame
counts per type, SETTINGS, GOAWAY, per stream: head, body, trailers, RST_STREAM code) so that a
test asserts on it afterwards.
"""

import os
import select
import socket
import ssl
import struct
import sys
import time

H = None  # run.py's module, set by init()


def debian_modules():
    """python3-h2, -hpack and -grpcio are Debian packages (scripts/install-deps.sh): when the
    python3 on PATH is another interpreter of the same version (pyenv, a venv), they are found
    in Debian's dist-packages."""
    d = "/usr/lib/python3/dist-packages"
    if os.path.isdir(d) and d not in sys.path:
        sys.path.append(d)


try:
    import hpack
except ImportError:
    debian_modules()
    try:
        import hpack
    except ImportError:  # reported by the tests that need it, not at load time
        hpack = None


def init(harness):
    global H
    H = harness


# RFC 9113 section 6: frame types and flags
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20

# section 6.5.2: settings
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

# section 7: error codes
ERRORS = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
          "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
          "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY",
          "HTTP_1_1_REQUIRED"]
(NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED,
 FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM,
 INADEQUATE_SECURITY, HTTP_1_1_REQUIRED) = range(len(ERRORS))

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def err_name(code):
    if code is None:
        return "none"
    return ERRORS[code] if 0 <= code < len(ERRORS) else "0x%x" % code


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def need_hpack():
    check(hpack is not None, "python3-hpack is not installed (make deps installs python3-h2)")


# ---------------------------------------------------------------------------------------------
# frames and HPACK (RFC 7541) by hand

def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, sid) + payload


def settings_frame(pairs=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v)
                                                           for k, v in pairs))


def rst_frame(sid, code=CANCEL):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def window_frame(sid, incr):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", incr))


def hp_int(value, prefix_bits, first=0):
    """An HPACK integer with an N-bit prefix; |first| holds the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hp_str(s):
    s = s.encode("latin-1") if isinstance(s, str) else s
    return hp_int(len(s), 7) + s


def hp_literal(name, value):
    """A literal header field without indexing, new name (section 6.2.2): nothing is added to
    the decoder's dynamic table, so blocks can be built without tracking its state."""
    return b"\x00" + hp_str(name) + hp_str(value)


def hp_literal_indexed(name, value):
    """A literal header field with incremental indexing, new name (section 6.2.1)."""
    return b"\x40" + hp_str(name) + hp_str(value)


def hp_indexed(index):
    """An indexed header field (section 6.1); 62 is the newest dynamic table entry."""
    return hp_int(index, 7, 0x80)


def hp_block(headers):
    return b"".join(hp_literal(n, v) for n, v in headers)


def request_headers(method="GET", path="/echo", authority="localhost", scheme="https",
                    extra=()):
    hdrs = [(":method", method), (":scheme", scheme)]
    if authority is not None:
        hdrs.append((":authority", authority))
    hdrs.append((":path", path))
    return hdrs + list(extra)


def h2_ctx(alg="ecdsa", cert="client-chain.crt", key="client.key", alpn=("h2",),
           cafile="root.crt"):
    ctx = H.client_ctx(alg, cert=cert, key=key, cafile=cafile)
    ctx.set_alpn_protocols(list(alpn))
    return ctx


# ---------------------------------------------------------------------------------------------
# the connection

class Stream:
    def __init__(self, sid):
        self.id = sid
        self.headers = None   # the final response head: [(name, value)]
        self.informational = []
        self.trailers = None
        self.body = bytearray()
        self.ended = False    # END_STREAM from certgate
        self.reset = None     # RST_STREAM error code from certgate

    @property
    def status(self):
        for n, v in self.headers or ():
            if n == ":status":
                return int(v)
        return None

    def header(self, name):
        vals = [v for n, v in self.headers or () if n == name]
        return vals[-1] if vals else None

    @property
    def done(self):
        return self.ended or self.reset is not None

    def __repr__(self):
        if self.reset is not None:
            return "<stream %d RST_STREAM %s>" % (self.id, err_name(self.reset))
        return "<stream %d status %s%s body %r>" % (self.id, self.status,
                                                     "" if self.ended else " (open)",
                                                     bytes(self.body[:80]))


class H2Conn:
    """An HTTP/2 connection to certgate over TLS (ALPN h2) with a client certificate.

    ack_settings / ack_pings: answer certgate's SETTINGS and PINGs (a flooding client may not).
    settings: the client's SETTINGS; the connection window is opened to 1 GiB at once."""

    def __init__(self, t, port, ctx=None, alg="ecdsa", sni="localhost", settings=(),
                 ack_settings=True, ack_pings=True, timeout=5, preface=True):
        need_hpack()
        self.t = t
        ctx = ctx or h2_ctx(alg)
        raw = socket.create_connection((H.HOST, port), timeout=H.T(timeout))
        t.socks.append(raw)
        self.sock = ctx.wrap_socket(raw, server_hostname=sni)
        t.socks.append(self.sock)
        self.alpn = self.sock.selected_alpn_protocol()
        self.timeout = H.T(timeout)
        self.buf = b""
        self.dec = hpack.Decoder(max_header_list_size=1 << 24)
        self.ack_settings = ack_settings
        self.ack_pings = ack_pings
        self.eof = False
        self.err = None        # why reading ended, when not a clean EOF
        self.send_err = None
        self.server_settings = {}
        self.settings_seen = 0
        self.settings_acks = 0
        self.goaway = None     # (last stream id, error code, debug data)
        self.counts = {}       # frame type -> frames received
        self.streams = {}
        self.cont = None       # (stream id, flags, fragment) of a header block in progress
        self.last_sid = -1
        if preface:
            self.send(PREFACE + settings_frame(settings) + window_frame(0, (1 << 30) - 65535))

    # sending -------------------------------------------------------------------------------

    def send(self, data):
        """Sends |data|; returns None or the error (recorded in send_err)."""
        if self.send_err is not None:
            return self.send_err
        self.sock.settimeout(self.timeout)
        try:
            self.sock.sendall(data)
            return None
        except (ssl.SSLError, OSError) as e:
            self.send_err = e
            return e

    def next_sid(self):
        self.last_sid += 2
        return self.last_sid

    def headers_frame(self, sid, headers, end_stream=True, end_headers=True, block=None):
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, flags, sid, hp_block(headers) if block is None else block)

    def request(self, method="GET", path="/echo", authority="localhost", extra=(), body=None,
                end=True, headers=None, sid=None):
        """Opens a stream: HEADERS (exactly |headers| when given) and DATA for |body|; returns
        the stream id."""
        sid = sid or self.next_sid()
        hdrs = headers if headers is not None else request_headers(method, path, authority,
                                                                    extra=extra)
        out = self.headers_frame(sid, hdrs, end_stream=end and body is None)
        if body is not None:
            for i in range(0, max(len(body), 1), 16384):
                last = i + 16384 >= len(body)
                out += frame(DATA, END_STREAM if (last and end) else 0, sid, body[i:i + 16384])
        self.send(out)
        return sid

    def get(self, path="/echo", timeout=5, **kw):
        return self.response(self.request(path=path, **kw), timeout)

    # receiving -----------------------------------------------------------------------------

    def stream(self, sid):
        if sid not in self.streams:
            self.streams[sid] = Stream(sid)
        return self.streams[sid]

    def _recv(self, timeout):
        """Reads once (up to |timeout|) and handles the frames; False at EOF."""
        if self.eof:
            return False
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 18)
        except (socket.timeout, TimeoutError):
            return True
        except ssl.SSLZeroReturnError:
            data = b""
        except (ssl.SSLError, OSError) as e:
            self.err = e
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        self._parse()
        return True

    def _parse(self):
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            ftype, flags, sid = struct.unpack(">BBI", self.buf[3:9])
            payload = self.buf[9:9 + length]
            self.buf = self.buf[9 + length:]
            self._on_frame(ftype, flags, sid & 0x7FFFFFFF, payload)

    def _on_frame(self, ftype, flags, sid, payload):
        self.counts[ftype] = self.counts.get(ftype, 0) + 1
        if ftype in (DATA, HEADERS) and flags & PADDED:
            pad = payload[0]
            payload = payload[1:len(payload) - pad]
        if ftype == SETTINGS:
            if flags & ACK:
                self.settings_acks += 1
                return
            for i in range(0, len(payload) - 5, 6):
                k, v = struct.unpack(">HI", payload[i:i + 6])
                self.server_settings[k] = v
            self.settings_seen += 1
            if self.ack_settings:
                self.send(settings_frame(ack=True))
        elif ftype == PING:
            if not flags & ACK and self.ack_pings:
                self.send(frame(PING, ACK, 0, payload))
        elif ftype == HEADERS:
            if flags & PRIO:
                payload = payload[5:]
            self.cont = (sid, flags, payload)
            if flags & END_HEADERS:
                self._header_block()
        elif ftype == CONTINUATION and self.cont:
            self.cont = (self.cont[0], self.cont[1] | (flags & END_HEADERS),
                         self.cont[2] + payload)
            if flags & END_HEADERS:
                self._header_block()
        elif ftype == DATA:
            s = self.stream(sid)
            s.body += payload
            if payload and not flags & END_STREAM:
                self.send(window_frame(sid, len(payload)))
            if flags & END_STREAM:
                s.ended = True
        elif ftype == RST_STREAM:
            self.stream(sid).reset = struct.unpack(">I", payload[:4])[0]
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = (last & 0x7FFFFFFF, code, payload[8:])

    def _header_block(self):
        sid, flags, block = self.cont
        self.cont = None
        hdrs = [(n.decode("latin-1"), v.decode("latin-1"))
                for n, v in self.dec.decode(block, raw=True)]
        s = self.stream(sid)
        if s.headers is None:
            status = dict(hdrs).get(":status", "")
            if status.startswith("1"):
                s.informational.append(hdrs)
            else:
                s.headers = hdrs
        else:
            s.trailers = hdrs
        if flags & END_STREAM:
            s.ended = True

    def wait(self, cond, timeout=5):
        """Reads until cond() holds, EOF or |timeout|; returns cond()."""
        deadline = time.time() + H.T(timeout)
        while not cond():
            left = deadline - time.time()
            if left <= 0 or not self._recv(min(left, 0.5)):
                break
        return cond()

    def drain(self):
        """Handles whatever certgate sent so far, without waiting."""
        while not self.eof and (self.sock.pending() or
                                select.select([self.sock], [], [], 0)[0]):
            if not self._recv(0.05):
                break

    def response(self, sid, timeout=5):
        """The stream once it ended or was reset; a Failure when certgate said nothing."""
        s = self.stream(sid)
        self.wait(lambda: s.done or (self.goaway is not None and self.goaway[0] < sid),
                  timeout)
        if not s.done:
            raise H.Failure("stream %d: no response within %.0fs (%s; %s)"
                            % (sid, H.T(timeout), s, self.state()))
        return s

    def wait_settings(self, timeout=5):
        check(self.wait(lambda: self.settings_seen > 0, timeout),
              "no SETTINGS from certgate (%s)" % self.state())
        return self.server_settings

    def wait_closed(self, timeout=5):
        """True when certgate closes the connection within |timeout|."""
        self.wait(lambda: self.eof, timeout)
        return self.eof

    def state(self):
        """A one-line summary for failure messages."""
        names = {DATA: "DATA", HEADERS: "HEADERS", RST_STREAM: "RST_STREAM",
                 SETTINGS: "SETTINGS", PING: "PING", GOAWAY: "GOAWAY",
                 WINDOW_UPDATE: "WINDOW_UPDATE", CONTINUATION: "CONTINUATION"}
        frames = ", ".join("%s %d" % (names.get(k, str(k)), v) for k, v in
                           sorted(self.counts.items()))
        goaway = "no GOAWAY" if self.goaway is None else "GOAWAY %s last %d %r" % (
            err_name(self.goaway[1]), self.goaway[0], self.goaway[2][:60])
        return "received: %s; %s; %s%s" % (frames or "nothing", goaway,
                                            "closed" if self.eof else "open",
                                            " (send: %s)" % self.send_err
                                            if self.send_err else "")

    # floods ----------------------------------------------------------------------------------

    def flood(self, chunks, timeout=10, read=True, stop=None):
        """Sends the byte strings of |chunks| (any iterable) until certgate closes or |timeout|.
        With |read|, what certgate sends is handled between chunks (a client that reads; a
        GOAWAY or EOF then ends the flood), else nothing is read (a client that does not read
        its ACKs). stop(): an extra condition that ends the flood. Returns how many chunks
        went out."""
        deadline = time.time() + H.T(timeout)
        sent = 0
        for chunk in chunks:
            if time.time() >= deadline or self.send_err is not None:
                break
            if read:
                self.drain()
                if self.eof or self.goaway is not None or (stop and stop()):
                    break
            self.sock.settimeout(max(deadline - time.time(), 0.01))
            try:
                self.sock.sendall(chunk)
            except (socket.timeout, TimeoutError):
                break
            except (ssl.SSLError, OSError) as e:
                self.send_err = e
                break
            sent += 1
        return sent


def healthy(t, cg, alg="ecdsa", name=None, ctx=None, sni="localhost", authority="localhost"):
    """Checks that a fresh HTTP/2 connection to certgate gets 200 (after an attack)."""
    check(cg.proc.poll() is None, "certgate exited (%s): %s" % (cg.proc.returncode, cg.tail()))
    c = H2Conn(t, cg.port(name), ctx=ctx, alg=alg, sni=sni)
    check(c.alpn == "h2", "ALPN chose %r, not h2" % c.alpn)
    s = c.get("/echo?healthy", authority=authority)
    check(s.status == 200, "certgate unhealthy afterwards: a fresh connection got %s (%s)"
          % (s, c.state()))
    return c
