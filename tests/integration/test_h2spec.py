#!/usr/bin/env python3
"""test_h2spec.py: group `h2spec.`, the conformance cases of h2spec (github.com/summerwind/h2spec,
http2/, generic/ and hpack/: RFC 7540/9113 and RFC 7541), ported one test per case against
certgate's HTTP/2 listener (an http listener, client_auth require, the echo upstream).

h2spec is not installable here, and cannot present a client certificate; this module is what it
would run, case by case, over TLS with a client certificate and ALPN h2. A test is named by its
h2spec section and sequence number: `h2spec.http2_5_1_1_2` is h2spec's `http2/5.1.1/2`,
`h2spec.generic_3_10_1` is `generic/3.10/1`, `h2spec.hpack_6_3_1` is `hpack/6.3/1`. Each case
sends what h2spec sends, byte for byte where h2spec writes raw bytes, and frames built the way
golang.org/x/net/http2's Framer builds them otherwise; header blocks come from a stateful HPACK
encoder with a dynamic table, as h2spec's (Go's hpack.Encoder; here python3-hpack's).

What is asserted is h2spec's verifier (spec/verifier.go), with its leniency: a connection error
passes on a GOAWAY with one of the expected codes, or on the connection being closed; a stream
error also on a RST_STREAM with one of the codes; every read waits at most h2spec's default
timeout (2 s, -o 2), and a timeout ends the case, as in h2spec. `-v` prints, per case, what
certgate sent when it passed only through h2spec's leniency (for example a GOAWAY with another
code, then the close). Every case asserts h2spec's own expectation (docs/http2.md, section
"h2spec").

h2spec runs http2/5.4.1/2 only with --strict (-S); it is here as well. run.py loads this
module; it also runs alone: python3 tests/integration/test_h2spec.py --binary build/certgate
"""

import socket
import ssl
import struct
import sys
import time

import h2lib
from h2lib import (CONTINUATION, DATA, GOAWAY, HEADERS, PING, PRIORITY, PUSH_PROMISE,
                   RST_STREAM, SETTINGS, WINDOW_UPDATE, err_name, frame)

H = None  # run.py's module, set by register()
TESTS = []

# h2spec's defaults (cmd/h2spec/h2spec.go, spec/connection.go)
TIMEOUT = 2.0            # -o 2: every read waits at most this long
MAX_HEADER_LEN = 4000    # --max-header-length
PATH = "/"               # -P /
DEFAULT_WINDOW = 65535
DEFAULT_FRAME = 16384
CASE_LIMIT = 5.0         # no connection is read for longer (h2spec has no such bound)

# golang.org/x/net/http2 names
SETTING_HEADER_TABLE_SIZE, SETTING_ENABLE_PUSH, SETTING_MAX_CONCURRENT_STREAMS, \
    SETTING_INITIAL_WINDOW_SIZE, SETTING_MAX_FRAME_SIZE, SETTING_MAX_HEADER_LIST_SIZE = range(1, 7)
(NO, PROTOCOL, INTERNAL, FLOW_CONTROL, SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE,
 REFUSED_STREAM, CANCEL, COMPRESSION) = range(10)
F_END_STREAM, F_ACK, F_END_HEADERS, F_PADDED, F_PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
TYPE_NAMES = {DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY", RST_STREAM: "RST_STREAM",
              SETTINGS: "SETTINGS", PUSH_PROMISE: "PUSH_PROMISE", PING: "PING",
              GOAWAY: "GOAWAY", WINDOW_UPDATE: "WINDOW_UPDATE",
              CONTINUATION: "CONTINUATION"}

NOTES = {}  # case name -> how a lenient pass went (printed with -v)


class Skipped(Exception):
    """h2spec's ErrSkipped: the case does not apply to this server."""


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


# ---------------------------------------------------------------------------------------------
# events (spec/event.go)

class Ev:
    def __init__(self, kind, ftype=None, flags=0, sid=0, payload=b"", err=None):
        self.kind = kind        # frame, closed, timeout, error
        self.type = ftype
        self.flags = flags
        self.sid = sid
        self.payload = payload
        self.err = err

    def is_frame(self, ftype):
        return self.kind == "frame" and self.type == ftype

    @property
    def code(self):
        """The error code of a RST_STREAM or GOAWAY."""
        if self.type == RST_STREAM and len(self.payload) >= 4:
            return struct.unpack(">I", self.payload[:4])[0]
        if self.type == GOAWAY and len(self.payload) >= 8:
            return struct.unpack(">I", self.payload[4:8])[0]
        return None

    @property
    def ack(self):
        return bool(self.flags & F_ACK)

    @property
    def end_stream(self):
        return bool(self.flags & F_END_STREAM)

    def __repr__(self):
        if self.kind == "closed":
            return "Connection closed"
        if self.kind == "timeout":
            return "Timeout"
        if self.kind == "error":
            return "Error: %s" % self.err
        name = TYPE_NAMES.get(self.type, "type 0x%x" % self.type)
        s = "%s Frame (length:%d, flags:0x%02x, stream_id:%d)" % (name, len(self.payload),
                                                                  self.flags, self.sid)
        if self.type in (RST_STREAM, GOAWAY):
            s += " (Error Code: %s)" % err_name(self.code)
        if self.type == GOAWAY and len(self.payload) > 8:
            s += " %r" % self.payload[8:80]
        return s


# ---------------------------------------------------------------------------------------------
# the connection (spec/connection.go)

class Conn:
    """h2spec's Conn: TLS with ALPN h2 (and h2-16, as h2spec offers) and the client certificate;
    frames written as golang.org/x/net/http2's Framer writes them with AllowIllegalWrites."""

    def __init__(self, t, port, name=None):
        self.t = t
        self.port = port
        self.name = name
        self.timeout = T(TIMEOUT)
        ctx = h2lib.h2_ctx(alpn=("h2", "h2-16"))
        raw = socket.create_connection((H.HOST, port), timeout=self.timeout)
        # Go's net.Dial sets TCP_NODELAY: each frame h2spec writes leaves at once. Without it,
        # a frame written right after another waits for the ACK of the first (Nagle) and
        # reaches certgate ~40 ms later, after the stream it was meant for is already closed.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t.socks.append(raw)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        t.socks.append(self.sock)
        check(self.sock.selected_alpn_protocol() == "h2",
              "Protocol negotiation failed (ALPN %r)" % self.sock.selected_alpn_protocol())
        self.closed = False
        self.buf = b""
        self.settings = {}
        self.window_update = True
        self.window = {0: DEFAULT_WINDOW}
        self.enc = h2lib.hpack.Encoder()
        self.seen = []          # every event, for failure messages
        self.send_err = None
        self.started = time.time()

    # writing -----------------------------------------------------------------------------

    def send(self, data):
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
        except (ssl.SSLError, OSError) as e:
            self.send_err = e
            return e
        return None

    def write_frame(self, ftype, flags, sid, payload=b""):
        return self.send(frame(ftype, flags, sid, payload))

    def write_data(self, sid, end_stream, data):
        return self.write_frame(DATA, F_END_STREAM if end_stream else 0, sid, data)

    def write_data_padded(self, sid, end_stream, data, pad):
        flags = (F_END_STREAM if end_stream else 0) | F_PADDED
        return self.write_frame(DATA, flags, sid, bytes([len(pad)]) + data + pad)

    def write_headers(self, sid, end_stream, end_headers, block, pad_length=0, priority=None):
        """http2.HeadersFrameParam: PRIORITY when the priority is not the zero value
        (dependency 0, weight 0, not exclusive); PADDED with |pad_length| zeros."""
        flags = (F_END_STREAM if end_stream else 0) | (F_END_HEADERS if end_headers else 0)
        payload = b""
        if pad_length:
            flags |= F_PADDED
            payload += bytes([pad_length])
        if priority is not None and priority != (0, False, 0):
            dep, excl, weight = priority
            flags |= F_PRIORITY
            payload += struct.pack(">IB", dep | (0x80000000 if excl else 0), weight)
        payload += block + b"\0" * pad_length
        return self.write_frame(HEADERS, flags, sid, payload)

    def write_priority(self, sid, dep, excl, weight):
        return self.write_frame(PRIORITY, 0, sid,
                                struct.pack(">IB", dep | (0x80000000 if excl else 0), weight))

    def write_rst_stream(self, sid, code):
        return self.write_frame(RST_STREAM, 0, sid, struct.pack(">I", code))

    def write_settings(self, *pairs):
        return self.write_frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v)
                                                         for k, v in pairs))

    def write_settings_ack(self):
        return self.write_frame(SETTINGS, F_ACK, 0)

    def write_push_promise(self, sid, promise_id, end_headers, block):
        return self.write_frame(PUSH_PROMISE, F_END_HEADERS if end_headers else 0, sid,
                                struct.pack(">I", promise_id) + block)

    def write_ping(self, ack, data):
        return self.write_frame(PING, F_ACK if ack else 0, 0, data)

    def write_goaway(self, last_sid, code, debug=b""):
        return self.write_frame(GOAWAY, 0, 0, struct.pack(">II", last_sid, code) + debug)

    def write_window_update(self, sid, incr):
        return self.write_frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", incr))

    def write_continuation(self, sid, end_headers, block):
        return self.write_frame(CONTINUATION, F_END_HEADERS if end_headers else 0, sid, block)

    # HPACK -------------------------------------------------------------------------------

    def encode_headers(self, headers):
        """Conn.EncodeHeaders: one encoding context for the connection (a dynamic table,
        Huffman where shorter), as Go's hpack.Encoder."""
        return self.enc.encode([(n, v) for n, v in headers])

    def set_max_dynamic_table_size(self, v):
        self.enc.header_table_size = v

    def common_headers(self, method="GET"):
        """spec.CommonHeaders over TLS on a port other than 443: :authority is host:port."""
        return [[":method", method], [":scheme", "https"], [":path", PATH],
                [":authority", "localhost:%d" % self.port]]

    # reading (Conn.WaitEvent) ------------------------------------------------------------

    def _read(self, deadline):
        """One frame, or closed / timeout / error; any of the three ends the connection for
        h2spec (Conn.Closed)."""
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    ftype, flags, sid = struct.unpack(">BBI", self.buf[3:9])
                    payload = self.buf[9:9 + length]
                    self.buf = self.buf[9 + length:]
                    return Ev("frame", ftype, flags, sid & 0x7FFFFFFF, payload)
            left = deadline - time.time()
            if left <= 0:
                return Ev("timeout")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except (socket.timeout, TimeoutError):
                return Ev("timeout")
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionResetError):
                data = b""  # Go: io.EOF or ECONNRESET, both ConnectionClosedEvent
            except (ssl.SSLError, OSError) as e:
                return Ev("error", err=e)
            if not data:
                if self.buf:
                    return Ev("error", err="unexpected EOF inside a frame")
                return Ev("closed")
            self.buf += data

    def wait_event(self):
        if self.closed:
            return Ev("closed")
        ev = self._read(time.time() + self.timeout)
        if ev.kind != "frame":
            self.closed = True
        elif ev.type == DATA:
            self._update_window(ev)
        self.seen.append(ev)
        if time.time() - self.started > T(CASE_LIMIT):  # the bound h2spec does not have
            self.closed = True
        return ev

    def wait_event_by_type(self, ftype):
        last = None
        while not self.closed:
            ev = self.wait_event()
            if ev.is_frame(ftype):
                return ev, True
            if ev.kind == "timeout" and last is not None:
                break
            last = ev
        return last, False

    def _update_window(self, ev):
        if not self.window_update:
            return
        n = len(ev.payload)
        self.window.setdefault(ev.sid, DEFAULT_WINDOW)
        for sid in (ev.sid, 0):
            self.window[sid] -= n
            if self.window[sid] <= 0:
                incr = DEFAULT_WINDOW - self.window[sid]
                self.write_window_update(sid, incr)
                self.window[sid] += incr

    def handshake(self):
        """The client preface, SETTINGS_INITIAL_WINDOW_SIZE 65535, then certgate's SETTINGS
        (acknowledged) and the ACK of ours, within the timeout."""
        self.send(h2lib.PREFACE)
        self.write_settings((SETTING_INITIAL_WINDOW_SIZE, DEFAULT_WINDOW))
        local = remote = False
        deadline = time.time() + self.timeout
        while not (local and remote):
            ev = self._read(deadline)
            if ev.kind != "frame":
                raise H.Failure("handshake: %r (SETTINGS: ours acknowledged %s, certgate's %s)"
                                % (ev, local, remote))
            if ev.type != SETTINGS:
                continue
            if ev.ack:
                local = True
            else:
                remote = True
                for i in range(0, len(ev.payload) - 5, 6):
                    k, v = struct.unpack(">HI", ev.payload[i:i + 6])
                    self.settings[k] = v
                self.write_settings_ack()

    def collect(self, seconds):
        """Reads whatever comes for |seconds| (not h2spec's: a timeout here ends nothing)."""
        deadline = time.time() + seconds
        while not self.closed:
            ev = self._read(deadline)
            if ev.kind == "timeout":
                return
            if ev.kind != "frame":
                self.closed = True
            self.seen.append(ev)

    def max_frame_size(self):
        return self.settings.get(SETTING_MAX_FRAME_SIZE, DEFAULT_FRAME)

    def history(self):
        return ", ".join(repr(e) for e in self.seen[-6:]) or "nothing"

    def note(self, text):
        if self.name:
            NOTES[self.name] = text


def dummy_string(n):
    return "x" * n


def dummy_headers(n):
    return [["x-dummy%d" % i, dummy_string(MAX_HEADER_LEN)] for i in range(n)]


def fail(c, expected, actual):
    raise H.Failure("expected %s; actual: %r (received: %s)"
                    % (" or ".join(expected), actual, c.history()))


# ---------------------------------------------------------------------------------------------
# the verifiers (spec/verifier.go)

def verify_connection_close(c):
    actual = None
    while not c.closed:
        ev = c.wait_event()
        if ev.kind == "closed":
            return
        if ev.kind == "timeout":
            actual = actual or ev
        else:
            actual = ev
    fail(c, ["Connection closed"], actual)


def _lenient(c, codes, kinds):
    """Notes how a case passed on the close alone: after a GOAWAY or RST_STREAM with another
    code, or with none at all (h2spec's --strict 5.4.1/2 asks for the GOAWAY)."""
    wrong = [e for e in c.seen if e.kind == "frame" and e.type in kinds
             and e.code not in codes]
    if wrong:
        c.note("passed on the close; before it: %s" % ", ".join(map(repr, wrong)))
    elif not any(e.is_frame(GOAWAY) for e in c.seen):
        c.note("passed on the close, without a GOAWAY")


def verify_connection_error(c, *codes):
    actual = None
    while not c.closed:
        ev = c.wait_event()
        if ev.kind == "closed":
            _lenient(c, codes, (GOAWAY,))
            return
        if ev.is_frame(GOAWAY) and ev.code in codes:
            return
        if ev.kind == "timeout":
            actual = actual or ev
        else:
            actual = ev
    fail(c, ["GOAWAY Frame (Error Code: %s)" % err_name(x) for x in codes]
         + ["Connection closed"], actual)


def verify_stream_error(c, *codes):
    actual = None
    while not c.closed:
        ev = c.wait_event()
        if ev.kind == "closed":
            _lenient(c, codes, (GOAWAY, RST_STREAM))
            return
        if (ev.is_frame(GOAWAY) or ev.is_frame(RST_STREAM)) and ev.code in codes:
            return
        if ev.kind == "timeout":
            actual = actual or ev
        else:
            actual = ev
    fail(c, ["GOAWAY or RST_STREAM Frame (Error Code: %s)" % err_name(x) for x in codes]
         + ["Connection closed"], actual)


def verify_stream_close(c):
    actual = None
    while not c.closed:
        ev = c.wait_event()
        if (ev.is_frame(DATA) or ev.is_frame(HEADERS)) and ev.end_stream:
            return
        if ev.is_frame(RST_STREAM) and ev.code == NO:
            return
        if ev.kind == "timeout":
            actual = actual or ev
        else:
            actual = ev
    fail(c, ["Stream closed"], actual)


def verify_headers_frame(c, sid):
    actual, passed = c.wait_event_by_type(HEADERS)
    if not (passed and actual.sid == sid):
        fail(c, ["HEADERS Frame (stream_id:%d)" % sid], actual)


def verify_settings_frame_with_ack(c):
    actual, passed = c.wait_event_by_type(SETTINGS)
    if not (passed and actual.ack):
        fail(c, ["SETTINGS Frame (length:0, flags:0x01, stream_id:0)"], actual)


def verify_ping_frame_with_ack(c, data):
    actual, passed = c.wait_event_by_type(PING)
    if not (passed and actual.ack and actual.payload == data):
        fail(c, ["PING Frame (length:8, flags:0x01, stream_id:0, opaque_data:%r)" % data],
             actual)


def verify_ping_frame_or_connection_close(c, data):
    actual = None
    while not c.closed:
        ev = c.wait_event()
        if ev.kind == "closed":
            return
        if ev.is_frame(PING) and ev.ack and ev.payload == data:
            return
        if ev.kind == "timeout":
            actual = actual or ev
        else:
            actual = ev
    fail(c, ["Connection closed", "PING Frame (flags:0x01, opaque_data:%r)" % data], actual)


def verify_event_type(c, ftype):
    actual, passed = c.wait_event_by_type(ftype)
    if not passed:
        fail(c, ["%s Frame" % TYPE_NAMES[ftype]], actual)


def verify_data_length(c, sid, length):
    """The cases that wait for a DATA frame of |length| octets (6.5.3/1, 6.9.1/1, 6.9.2/*)."""
    actual, passed = c.wait_event_by_type(DATA)
    if not (passed and len(actual.payload) == length):
        fail(c, ["DATA Frame (length:%d, flags:0x00, stream_id:%d)" % (length, sid)], actual)


def server_data_length(c):
    """spec.ServerDataLength: the DATA octets of GET PATH on a connection of its own."""
    o = Conn(c.t, c.port)
    o.handshake()
    o.write_headers(1, True, True, o.encode_headers(o.common_headers()))
    n = 0
    done = False
    while not o.closed and not done:
        ev = o.wait_event()
        if ev.is_frame(DATA):
            n += len(ev.payload)
            done = ev.end_stream
        elif ev.is_frame(HEADERS):
            done = ev.end_stream
    check(done, "Unable to get server data length (%s)" % o.history())
    return n


PING_H2SPEC = b"h2spec\0\0"
PING_ZERO = b"\0" * 8


# ---------------------------------------------------------------------------------------------
# registration

def case(key, section, seq, desc):
    """Registers h2spec's case key/section/seq as h2spec.KEY_SECTION_SEQ; fn(c) gets a
    connection to a fresh certgate (an http listener in front of the echo upstream)."""
    name = "h2spec.%s_%s_%d" % (key, section.replace(".", "_"), seq)

    def deco(fn):
        def run(t):
            up, cg, _ = H.http_env(t)
            c = Conn(t, cg.port(), name)
            c.up = up
            try:
                fn(c)
            except Skipped as e:
                # h2spec reports a skipped case; here that is a failure: certgate's answers
                # always have a body and it announces SETTINGS_MAX_CONCURRENT_STREAMS.
                raise H.Failure("skipped: %s" % e)
            if H.Opts.verbose and name in NOTES:
                print("    %s: %s" % (name, NOTES[name]))
            check(cg.proc.poll() is None, "certgate exited (%s): %s"
                  % (cg.proc.returncode, cg.tail()))
        run.__doc__ = "%s/%s/%d: %s" % (key, section, seq, desc)
        TESTS.append((name, run))
        return fn
    return deco


# =============================================================================================
# http2/ : RFC 7540 (9113)

# 3.5 HTTP/2 Connection Preface

@case("http2", "3.5", 1, "Sends client connection preface")
def http2_3_5_1(c):
    c.send(h2lib.PREFACE)
    c.write_settings((SETTING_INITIAL_WINDOW_SIZE, DEFAULT_WINDOW))
    ev = c.wait_event()
    if not (ev.is_frame(SETTINGS) and not ev.ack):
        fail(c, ["SETTINGS Frame (flags:0x00)"], ev)


@case("http2", "3.5", 2, "Sends invalid connection preface")
def http2_3_5_2(c):
    err = c.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
    check(err is None, "send: %s" % err)
    verify_connection_error(c, PROTOCOL)


# 4.1 Frame Format

@case("http2", "4.1", 1, "Sends a frame with unknown type")
def http2_4_1_1(c):
    c.handshake()
    c.send(b"\x00\x00\x08\x16\x00\x00\x00\x00\x00")
    c.send(b"\x00\x00\x00\x00\x00\x00\x00\x00")
    c.write_ping(False, PING_ZERO)
    verify_ping_frame_with_ack(c, PING_ZERO)


@case("http2", "4.1", 2, "Sends a frame with undefined flag")
def http2_4_1_2(c):
    c.handshake()
    c.send(b"\x00\x00\x08\x06\x16\x00\x00\x00\x00")
    c.send(b"\x00\x00\x00\x00\x00\x00\x00\x00")
    verify_event_type(c, PING)


@case("http2", "4.1", 3, "Sends a frame with reserved field bit")
def http2_4_1_3(c):
    c.handshake()
    c.send(b"\x00\x00\x08\x06\x16\x80\x00\x00\x00")
    c.send(b"\x00\x00\x00\x00\x00\x00\x00\x00")
    verify_event_type(c, PING)


# 4.2 Frame Size

@case("http2", "4.2", 1, "Sends a DATA frame with 2^14 octets in length")
def http2_4_2_1(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers("POST")))
    c.write_data(1, True, dummy_string(c.max_frame_size()).encode())
    verify_headers_frame(c, 1)


@case("http2", "4.2", 2, "Sends a large size DATA frame that exceeds the SETTINGS_MAX_FRAME_SIZE")
def http2_4_2_2(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers("POST")))
    c.write_data(1, True, dummy_string(c.max_frame_size() + 1).encode())
    verify_stream_error(c, FRAME_SIZE)


@case("http2", "4.2", 3,
      "Sends a large size HEADERS frame that exceeds the SETTINGS_MAX_FRAME_SIZE")
def http2_4_2_3(c):
    c.handshake()
    hdrs = c.common_headers() + dummy_headers(5)
    c.write_headers(1, True, True, c.encode_headers(hdrs))
    verify_connection_error(c, FRAME_SIZE)


# 4.3 Header Compression and Decompression

@case("http2", "4.3", 1, "Sends invalid header block fragment")
def http2_4_3_1(c):
    c.handshake()
    # a literal header field with incremental indexing without length and string
    err = c.send(b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x40")
    check(err is None, "send: %s" % err)
    verify_connection_error(c, COMPRESSION)


@case("http2", "4.3", 2, "Sends a PRIORITY frame while sending the header blocks")
def http2_4_3_2(c):
    c.handshake()
    c.write_headers(1, False, False, c.encode_headers(c.common_headers()))
    c.write_priority(1, 0, False, 255)
    c.write_continuation(1, True, c.encode_headers(dummy_headers(1)))
    verify_connection_error(c, PROTOCOL)


@case("http2", "4.3", 3,
      "Sends a HEADERS frame to another stream while sending the header blocks")
def http2_4_3_3(c):
    c.handshake()
    hdrs = c.common_headers()
    c.write_headers(1, False, False, c.encode_headers(hdrs))
    c.write_headers(3, True, True, c.encode_headers(hdrs))
    c.write_continuation(1, True, c.encode_headers(dummy_headers(1)))
    verify_connection_error(c, PROTOCOL)


# 5.1 Stream States

@case("http2", "5.1", 1, "idle: Sends a DATA frame")
def http2_5_1_1(c):
    c.handshake()
    c.write_data(1, True, b"test")
    verify_stream_error(c, PROTOCOL, STREAM_CLOSED)


@case("http2", "5.1", 2, "idle: Sends a RST_STREAM frame")
def http2_5_1_2(c):
    c.handshake()
    c.write_rst_stream(1, CANCEL)
    verify_connection_error(c, PROTOCOL)


@case("http2", "5.1", 3, "idle: Sends a WINDOW_UPDATE frame")
def http2_5_1_3(c):
    c.handshake()
    c.write_window_update(1, 100)
    verify_connection_error(c, PROTOCOL)


@case("http2", "5.1", 4, "idle: Sends a CONTINUATION frame")
def http2_5_1_4(c):
    c.handshake()
    c.write_continuation(1, True, c.encode_headers(c.common_headers()))
    verify_connection_error(c, PROTOCOL)


@case("http2", "5.1", 5, "half closed (remote): Sends a DATA frame")
def http2_5_1_5(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    c.write_data(1, True, b"test")
    verify_stream_error(c, STREAM_CLOSED)


@case("http2", "5.1", 6, "half closed (remote): Sends a HEADERS frame")
def http2_5_1_6(c):
    c.handshake()
    hdrs = c.common_headers()
    c.write_headers(1, True, True, c.encode_headers(hdrs))
    c.write_headers(1, True, True, c.encode_headers(hdrs))
    verify_stream_error(c, STREAM_CLOSED)


@case("http2", "5.1", 7, "half closed (remote): Sends a CONTINUATION frame")
def http2_5_1_7(c):
    c.handshake()
    block = c.encode_headers(c.common_headers())
    c.write_headers(1, True, True, block)
    c.write_continuation(1, True, block)
    verify_stream_error(c, STREAM_CLOSED, PROTOCOL)


# 5.1/8, 5.1/9, 5.1/11, 5.1/12 and 5.1.1/2: certgate keeps no closed streams (nghttp2's
# no_closed_streams, for idle memory: h2core.idle_memory) but remembers the last client stream
# identifiers in a few bits (proxy/h2/h2_closed.h), and answers as nghttp2 does when it keeps
# them: a connection error STREAM_CLOSED for DATA or HEADERS on a stream the client closed,
# PROTOCOL_ERROR for HEADERS on an identifier below the highest that was never opened.
# Frames after a RST_STREAM of certgate's are still ignored (RFC 9113 5.1): test_h2closed.py.

@case("http2", "5.1", 8, "closed: Sends a DATA frame after sending RST_STREAM frame")
def http2_5_1_8(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers()))
    c.write_rst_stream(1, CANCEL)
    c.write_data(1, True, b"test")
    verify_stream_error(c, STREAM_CLOSED)


@case("http2", "5.1", 9, "closed: Sends a HEADERS frame after sending RST_STREAM frame")
def http2_5_1_9(c):
    c.handshake()
    hdrs = c.common_headers()
    c.write_headers(1, False, True, c.encode_headers(hdrs))
    c.write_rst_stream(1, CANCEL)
    c.write_headers(1, True, True, c.encode_headers(hdrs))
    verify_stream_error(c, STREAM_CLOSED)


@case("http2", "5.1", 10, "closed: Sends a CONTINUATION frame after sending RST_STREAM frame")
def http2_5_1_10(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers()))
    c.write_rst_stream(1, CANCEL)
    c.write_continuation(1, True, c.encode_headers(dummy_headers(1)))
    verify_stream_error(c, STREAM_CLOSED, PROTOCOL)


@case("http2", "5.1", 11, "closed: Sends a DATA frame")
def http2_5_1_11(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_stream_close(c)
    c.write_data(1, True, b"test")
    verify_stream_error(c, STREAM_CLOSED)


@case("http2", "5.1", 12, "closed: Sends a HEADERS frame")
def http2_5_1_12(c):
    c.handshake()
    block = c.encode_headers(c.common_headers())
    c.write_headers(1, True, True, block)
    verify_stream_close(c)
    c.write_headers(1, True, True, block)
    verify_connection_error(c, STREAM_CLOSED)


@case("http2", "5.1", 13, "closed: Sends a CONTINUATION frame")
def http2_5_1_13(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_stream_close(c)
    c.write_continuation(1, True, c.encode_headers(dummy_headers(1)))
    verify_connection_error(c, STREAM_CLOSED, PROTOCOL)


# 5.1.1 Stream Identifiers

@case("http2", "5.1.1", 1, "Sends even-numbered stream identifier")
def http2_5_1_1_1(c):
    c.handshake()
    c.write_headers(2, True, True, c.encode_headers(c.common_headers()))
    verify_connection_error(c, PROTOCOL)


@case("http2", "5.1.1", 2, "Sends stream identifier that is numerically smaller than previous")
def http2_5_1_1_2(c):
    c.handshake()
    hdrs = c.common_headers()
    c.write_headers(5, True, True, c.encode_headers(hdrs))
    c.write_headers(3, True, True, c.encode_headers(hdrs))
    verify_connection_error(c, PROTOCOL)


# 5.1.2 Stream Concurrency

@case("http2", "5.1.2", 1, "Sends HEADERS frames that causes their advertised concurrent stream "
      "limit to be exceeded")
def http2_5_1_2_1(c):
    c.handshake()
    if SETTING_MAX_CONCURRENT_STREAMS not in c.settings:
        raise Skipped("no SETTINGS_MAX_CONCURRENT_STREAMS")
    max_streams = c.settings[SETTING_MAX_CONCURRENT_STREAMS]
    c.write_settings((SETTING_INITIAL_WINDOW_SIZE, 0))
    block = c.encode_headers(c.common_headers())
    sid = 1
    for _ in range(max_streams + 1):
        c.write_headers(sid, True, True, block)
        sid += 2
    verify_stream_error(c, PROTOCOL, REFUSED_STREAM)


# 5.3.1 Stream Dependencies

@case("http2", "5.3.1", 1, "Sends HEADERS frame that depends on itself")
def http2_5_3_1_1(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()),
                    priority=(1, False, 255))
    verify_stream_error(c, PROTOCOL)


@case("http2", "5.3.1", 2, "Sends PRIORITY frame that depend on itself")
def http2_5_3_1_2(c):
    c.handshake()
    c.write_priority(1, 1, False, 255)
    verify_stream_error(c, PROTOCOL)


# 5.4.1 Connection Error Handling

@case("http2", "5.4.1", 1, "Sends an invalid PING frame for connection close")
def http2_5_4_1_1(c):
    c.handshake()
    c.send(b"\x00\x00\x08\x06\x00\x00\x00\x00\x03")
    c.send(b"\x00\x00\x00\x00\x00\x00\x00\x00")
    verify_connection_close(c)


@case("http2", "5.4.1", 2, "Sends an invalid PING frame to receive GOAWAY frame (strict)")
def http2_5_4_1_2(c):
    c.handshake()
    c.send(b"\x00\x00\x08\x06\x00\x00\x00\x00\x03")
    c.send(b"\x00\x00\x00\x00\x00\x00\x00\x00")
    actual, passed = c.wait_event_by_type(GOAWAY)
    if not passed:
        fail(c, ["GOAWAY Frame (Error Code: PROTOCOL_ERROR)"], actual)


# 5.5 Extending HTTP/2

@case("http2", "5.5", 1, "Sends an unknown extension frame")
def http2_5_5_1(c):
    c.handshake()
    c.send(b"\x00\x00\x08\x16\x00\x00\x00\x00\x00")
    c.send(b"\x00\x00\x00\x00\x00\x00\x00\x00")
    c.write_ping(False, PING_ZERO)
    verify_ping_frame_with_ack(c, PING_ZERO)


@case("http2", "5.5", 2, "Sends an unknown extension frame in the middle of a header block")
def http2_5_5_2(c):
    c.handshake()
    c.write_headers(1, True, False, c.encode_headers(c.common_headers()))
    c.send(b"\x00\x00\x08\x16\x00\x00\x00\x00\x00")
    c.send(b"\x00\x00\x00\x00\x00\x00\x00\x00")
    verify_connection_error(c, PROTOCOL)


# 6.1 DATA

@case("http2", "6.1", 1, "Sends a DATA frame with 0x0 stream identifier")
def http2_6_1_1(c):
    c.handshake()
    c.write_data(0, True, b"test")
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.1", 2, "Sends a DATA frame on the stream that is not in \"open\" or "
      "\"half-closed (local)\" state")
def http2_6_1_2(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers("POST")))
    c.write_data(1, True, b"test")
    verify_stream_error(c, STREAM_CLOSED)


@case("http2", "6.1", 3, "Sends a DATA frame with invalid pad length")
def http2_6_1_3(c):
    c.handshake()
    hdrs = c.common_headers("POST") + [["content-length", "4"]]
    c.write_headers(1, False, True, c.encode_headers(hdrs))
    c.send(b"\x00\x00\x05\x00\x09\x00\x00\x00\x01")
    c.send(b"\x06\x54\x65\x73\x74")
    verify_connection_error(c, PROTOCOL)


# 6.2 HEADERS

@case("http2", "6.2", 1, "Sends a HEADERS frame without the END_HEADERS flag, and a PRIORITY "
      "frame")
def http2_6_2_1(c):
    c.handshake()
    c.write_headers(1, False, False, c.encode_headers(c.common_headers()))
    c.write_priority(1, 0, False, 255)
    c.write_continuation(1, True, c.encode_headers(dummy_headers(1)))
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.2", 2, "Sends a HEADERS frame to another stream while sending a HEADERS frame")
def http2_6_2_2(c):
    c.handshake()
    hdrs = c.common_headers()
    c.write_headers(1, False, False, c.encode_headers(hdrs))
    c.write_headers(3, True, True, c.encode_headers(hdrs))
    c.write_continuation(1, True, c.encode_headers(dummy_headers(1)))
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.2", 3, "Sends a HEADERS frame with 0x0 stream identifier")
def http2_6_2_3(c):
    c.handshake()
    c.write_headers(0, True, True, c.encode_headers(c.common_headers()))
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.2", 4, "Sends a HEADERS frame with invalid pad length")
def http2_6_2_4(c):
    c.handshake()
    block = c.encode_headers(c.common_headers())
    fh = bytearray(b"\x00\x00\x00\x01\x0d\x00\x00\x00\x01")
    fh[2] = len(block) + 1
    c.send(bytes(fh))
    c.send(bytes([len(block) + 2]))
    c.send(block)
    verify_stream_error(c, PROTOCOL)


# 6.3 PRIORITY

@case("http2", "6.3", 1, "Sends a PRIORITY frame with 0x0 stream identifier")
def http2_6_3_1(c):
    c.handshake()
    c.write_priority(0, 0, False, 255)
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.3", 2, "Sends a PRIORITY frame with a length other than 5 octets")
def http2_6_3_2(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    c.send(b"\x00\x00\x04\x02\x00\x00\x00\x00\x01")
    c.send(b"\x80\x00\x00\x01")
    verify_stream_error(c, FRAME_SIZE)


# 6.4 RST_STREAM

@case("http2", "6.4", 1, "Sends a RST_STREAM frame with 0x0 stream identifier")
def http2_6_4_1(c):
    c.handshake()
    c.write_rst_stream(0, CANCEL)
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.4", 2, "Sends a RST_STREAM frame on a idle stream")
def http2_6_4_2(c):
    c.handshake()
    c.write_rst_stream(1, CANCEL)
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.4", 3, "Sends a RST_STREAM frame with a length other than 4 octets")
def http2_6_4_3(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    c.send(b"\x00\x00\x03\x03\x00\x00\x00\x00\x01")
    c.send(b"\x00\x00\x00")
    verify_stream_error(c, FRAME_SIZE)


# 6.5 SETTINGS

@case("http2", "6.5", 1, "Sends a SETTINGS frame with ACK flag and payload")
def http2_6_5_1(c):
    c.handshake()
    c.send(b"\x00\x00\x01\x04\x01\x00\x00\x00\x00")
    c.send(b"\x00")
    verify_connection_error(c, FRAME_SIZE)


@case("http2", "6.5", 2, "Sends a SETTINGS frame with a stream identifier other than 0x0")
def http2_6_5_2(c):
    c.handshake()
    c.send(b"\x00\x00\x06\x04\x00\x00\x00\x00\x01")
    c.send(b"\x00\x03\x00\x00\x00\x64")
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.5", 3, "Sends a SETTINGS frame with a length other than a multiple of 6 octets")
def http2_6_5_3(c):
    c.handshake()
    c.send(b"\x00\x00\x03\x04\x00\x00\x00\x00\x00")
    c.send(b"\x00\x03\x00")
    verify_stream_error(c, PROTOCOL, FRAME_SIZE)


# 6.5.2 Defined SETTINGS Parameters

@case("http2", "6.5.2", 1, "SETTINGS_ENABLE_PUSH (0x2): Sends the value other than 0 or 1")
def http2_6_5_2_1(c):
    c.handshake()
    c.write_settings((SETTING_ENABLE_PUSH, 2))
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.5.2", 2, "SETTINGS_INITIAL_WINDOW_SIZE (0x4): Sends the value above the "
      "maximum flow control window size")
def http2_6_5_2_2(c):
    c.handshake()
    c.write_settings((SETTING_INITIAL_WINDOW_SIZE, 2147483648))
    verify_connection_error(c, FLOW_CONTROL)


@case("http2", "6.5.2", 3, "SETTINGS_MAX_FRAME_SIZE (0x5): Sends the value below the initial "
      "value")
def http2_6_5_2_3(c):
    c.handshake()
    c.write_settings((SETTING_MAX_FRAME_SIZE, 16383))
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.5.2", 4, "SETTINGS_MAX_FRAME_SIZE (0x5): Sends the value above the maximum "
      "allowed frame size")
def http2_6_5_2_4(c):
    c.handshake()
    c.write_settings((SETTING_MAX_FRAME_SIZE, 16777216))
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.5.2", 5, "Sends a SETTINGS frame with unknown identifier")
def http2_6_5_2_5(c):
    c.handshake()
    c.write_settings((0xFF, 1))
    c.write_ping(False, PING_ZERO)
    verify_ping_frame_with_ack(c, PING_ZERO)


# 6.5.3 Settings Synchronization

@case("http2", "6.5.3", 1, "Sends multiple values of SETTINGS_INITIAL_WINDOW_SIZE")
def http2_6_5_3_1(c):
    if server_data_length(c) < 1:
        raise Skipped("no DATA for GET %s" % PATH)
    c.handshake()
    c.write_settings((SETTING_INITIAL_WINDOW_SIZE, 100), (SETTING_INITIAL_WINDOW_SIZE, 1))
    verify_settings_frame_with_ack(c)
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_data_length(c, 1, 1)


@case("http2", "6.5.3", 2, "Sends a SETTINGS frame without ACK flag")
def http2_6_5_3_2(c):
    c.handshake()
    c.write_settings((SETTING_ENABLE_PUSH, 0))
    verify_settings_frame_with_ack(c)


# 6.7 PING

@case("http2", "6.7", 1, "Sends a PING frame")
def http2_6_7_1(c):
    c.handshake()
    c.write_ping(False, PING_H2SPEC)
    verify_ping_frame_with_ack(c, PING_H2SPEC)


@case("http2", "6.7", 2, "Sends a PING frame with ACK")
def http2_6_7_2(c):
    c.handshake()
    c.write_ping(True, b"invalid\0")
    c.write_ping(False, PING_H2SPEC)
    verify_ping_frame_with_ack(c, PING_H2SPEC)


@case("http2", "6.7", 3, "Sends a PING frame with a stream identifier field value other than 0x0")
def http2_6_7_3(c):
    c.handshake()
    c.send(b"\x00\x00\x08\x06\x00\x00\x00\x00\x01")
    c.send(b"\x00\x00\x00\x00\x00\x00\x00\x00")
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.7", 4, "Sends a PING frame with a length field value other than 8")
def http2_6_7_4(c):
    c.handshake()
    c.send(b"\x00\x00\x06\x06\x00\x00\x00\x00\x00")
    c.send(b"\x00\x00\x00\x00\x00\x00")
    verify_connection_error(c, FRAME_SIZE)


# 6.8 GOAWAY

@case("http2", "6.8", 1, "Sends a GOAWAY frame with a stream identifier other than 0x0")
def http2_6_8_1(c):
    c.handshake()
    c.send(b"\x00\x00\x08\x07\x00\x00\x00\x00\x01")
    c.send(b"\x00\x00\x00\x00\x00\x00\x00\x00")
    verify_connection_error(c, PROTOCOL)


# 6.9 WINDOW_UPDATE

@case("http2", "6.9", 1, "Sends a WINDOW_UPDATE frame with a flow control window increment of 0")
def http2_6_9_1(c):
    c.handshake()
    c.write_window_update(0, 0)
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.9", 2, "Sends a WINDOW_UPDATE frame with a flow control window increment of 0 "
      "on a stream")
def http2_6_9_2(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers()))
    c.write_window_update(1, 0)
    verify_stream_error(c, PROTOCOL)


@case("http2", "6.9", 3, "Sends a WINDOW_UPDATE frame with a length other than 4 octets")
def http2_6_9_3(c):
    c.handshake()
    c.send(b"\x00\x00\x03\x08\x00\x00\x00\x00\x00")
    c.send(b"\x00\x00\x01")
    verify_connection_error(c, FRAME_SIZE)


# 6.9.1 The Flow-Control Window

@case("http2", "6.9.1", 1, "Sends SETTINGS frame to set the initial window size to 1 and sends "
      "HEADERS frame")
def http2_6_9_1_1(c):
    if server_data_length(c) < 1:
        raise Skipped("no DATA for GET %s" % PATH)
    c.handshake()
    c.write_settings((SETTING_INITIAL_WINDOW_SIZE, 1))
    verify_settings_frame_with_ack(c)
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_data_length(c, 1, 1)


@case("http2", "6.9.1", 2, "Sends multiple WINDOW_UPDATE frames increasing the flow control "
      "window to above 2^31-1")
def http2_6_9_1_2(c):
    c.handshake()
    c.write_window_update(0, 2147483647)
    c.write_window_update(0, 2147483647)
    actual, passed = c.wait_event_by_type(GOAWAY)
    if not (passed and actual.code == FLOW_CONTROL):
        fail(c, ["GOAWAY Frame (Error Code: FLOW_CONTROL_ERROR)"], actual)


@case("http2", "6.9.1", 3, "Sends multiple WINDOW_UPDATE frames increasing the flow control "
      "window to above 2^31-1 on a stream")
def http2_6_9_1_3(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers()))
    c.write_window_update(1, 2147483647)
    c.write_window_update(1, 2147483647)
    actual, passed = c.wait_event_by_type(RST_STREAM)
    if not (passed and actual.sid == 1 and actual.code == FLOW_CONTROL):
        fail(c, ["RST_STREAM Frame (Error Code: FLOW_CONTROL_ERROR)"], actual)


# 6.9.2 Initial Flow-Control Window Size

@case("http2", "6.9.2", 1, "Changes SETTINGS_INITIAL_WINDOW_SIZE after sending HEADERS frame")
def http2_6_9_2_1(c):
    if server_data_length(c) < 1:
        raise Skipped("no DATA for GET %s" % PATH)
    c.handshake()
    c.write_settings((SETTING_INITIAL_WINDOW_SIZE, 0))
    verify_settings_frame_with_ack(c)
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    c.write_settings((SETTING_INITIAL_WINDOW_SIZE, 1))
    verify_data_length(c, 1, 1)


@case("http2", "6.9.2", 2, "Sends a SETTINGS frame for window size to be negative")
def http2_6_9_2_2(c):
    if server_data_length(c) < 5:
        raise Skipped("fewer than 5 octets of DATA for GET %s" % PATH)
    c.handshake()
    c.write_settings((SETTING_INITIAL_WINDOW_SIZE, 3))
    verify_settings_frame_with_ack(c)
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_event_type(c, DATA)
    c.write_settings((SETTING_INITIAL_WINDOW_SIZE, 2))
    verify_settings_frame_with_ack(c)
    c.write_window_update(1, 2)
    verify_data_length(c, 1, 1)


@case("http2", "6.9.2", 3, "Sends a SETTINGS_INITIAL_WINDOW_SIZE settings with an exceeded "
      "maximum window size value")
def http2_6_9_2_3(c):
    c.handshake()
    c.send(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00")
    c.send(b"\x00\x04\x80\x00\x00\x00")
    verify_connection_error(c, FLOW_CONTROL)


# 6.10 CONTINUATION

@case("http2", "6.10", 1, "Sends multiple CONTINUATION frames preceded by a HEADERS frame")
def http2_6_10_1(c):
    c.handshake()
    c.write_headers(1, True, False, c.encode_headers(c.common_headers()))
    dummy = dummy_headers(1)
    c.write_continuation(1, False, c.encode_headers(dummy))
    c.write_continuation(1, True, c.encode_headers(dummy))
    verify_headers_frame(c, 1)


@case("http2", "6.10", 2, "Sends a CONTINUATION frame followed by any frame other than "
      "CONTINUATION")
def http2_6_10_2(c):
    c.handshake()
    c.write_headers(1, False, False, c.encode_headers(c.common_headers("POST")))
    c.write_continuation(1, False, c.encode_headers(dummy_headers(1)))
    c.write_data(1, True, b"test")
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.10", 3, "Sends a CONTINUATION frame with 0x0 stream identifier")
def http2_6_10_3(c):
    c.handshake()
    c.write_headers(1, True, False, c.encode_headers(c.common_headers()))
    c.write_continuation(0, True, c.encode_headers(dummy_headers(1)))
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.10", 4, "Sends a CONTINUATION frame preceded by a HEADERS frame with "
      "END_HEADERS flag")
def http2_6_10_4(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    c.write_continuation(1, True, c.encode_headers(dummy_headers(1)))
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.10", 5, "Sends a CONTINUATION frame preceded by a CONTINUATION frame with "
      "END_HEADERS flag")
def http2_6_10_5(c):
    c.handshake()
    c.write_headers(1, True, False, c.encode_headers(c.common_headers()))
    dummy = dummy_headers(1)
    c.write_continuation(1, True, c.encode_headers(dummy))
    c.write_continuation(1, True, c.encode_headers(dummy))
    verify_connection_error(c, PROTOCOL)


@case("http2", "6.10", 6, "Sends a CONTINUATION frame preceded by a DATA frame")
def http2_6_10_6(c):
    c.handshake()
    c.write_headers(1, False, False, c.encode_headers(c.common_headers("POST")))
    c.write_data(1, True, b"test")
    dummy = dummy_headers(1)
    c.write_continuation(1, False, c.encode_headers(dummy))
    c.write_continuation(0, True, c.encode_headers(dummy))
    verify_connection_error(c, PROTOCOL)


# 7 Error Codes

@case("http2", "7", 1, "Sends a GOAWAY frame with unknown error code")
def http2_7_1(c):
    c.handshake()
    c.write_goaway(0, 0xff, b"")
    c.write_ping(False, PING_H2SPEC)
    verify_ping_frame_or_connection_close(c, PING_H2SPEC)


@case("http2", "7", 2, "Sends a RST_STREAM frame with unknown error code")
def http2_7_2(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers("POST")))
    c.write_rst_stream(1, 0xff)
    c.write_ping(False, PING_ZERO)
    verify_ping_frame_or_connection_close(c, PING_ZERO)


# 8.1 HTTP Request/Response Exchange

@case("http2", "8.1", 1, "Sends a second HEADERS frame without the END_STREAM flag")
def http2_8_1_1(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers("POST")))
    c.write_data(1, False, b"test")
    c.write_headers(1, False, True, c.encode_headers([["x-test", "ok"]]))
    verify_stream_error(c, PROTOCOL)


# 8.1.2 HTTP Header Fields

@case("http2", "8.1.2", 1, "Sends a HEADERS frame that contains the header field name in "
      "uppercase letters")
def http2_8_1_2_1(c):
    c.handshake()
    hdrs = c.common_headers() + [["X-TEST", "ok"]]
    c.write_headers(1, True, True, c.encode_headers(hdrs))
    verify_stream_error(c, PROTOCOL)


# 8.1.2.1 Pseudo-Header Fields

@case("http2", "8.1.2.1", 1, "Sends a HEADERS frame that contains a unknown pseudo-header field")
def http2_8_1_2_1_1(c):
    c.handshake()
    hdrs = c.common_headers() + [[":test", "ok"]]
    c.write_headers(1, True, True, c.encode_headers(hdrs))
    verify_stream_error(c, PROTOCOL)


@case("http2", "8.1.2.1", 2, "Sends a HEADERS frame that contains the pseudo-header field "
      "defined for response")
def http2_8_1_2_1_2(c):
    c.handshake()
    hdrs = c.common_headers() + [[":status", "200"]]
    c.write_headers(1, True, True, c.encode_headers(hdrs))
    verify_stream_error(c, PROTOCOL)


@case("http2", "8.1.2.1", 3, "Sends a HEADERS frame that contains a pseudo-header field as "
      "trailers")
def http2_8_1_2_1_3(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers("POST")))
    c.write_data(1, False, b"test")
    c.write_headers(1, False, True, c.encode_headers([[":method", "POST"]]))
    verify_stream_error(c, PROTOCOL)


@case("http2", "8.1.2.1", 4, "Sends a HEADERS frame that contains a pseudo-header field that "
      "appears in a header block after a regular header field")
def http2_8_1_2_1_4(c):
    c.handshake()
    hdrs = [["x-test", "ok"]] + c.common_headers()
    c.write_headers(1, True, True, c.encode_headers(hdrs))
    verify_stream_error(c, PROTOCOL)


# 8.1.2.2 Connection-Specific Header Fields

@case("http2", "8.1.2.2", 1, "Sends a HEADERS frame that contains the connection-specific header "
      "field")
def http2_8_1_2_2_1(c):
    c.handshake()
    hdrs = c.common_headers() + [["connection", "keep-alive"]]
    c.write_headers(1, True, True, c.encode_headers(hdrs))
    verify_stream_error(c, PROTOCOL)


@case("http2", "8.1.2.2", 2, "Sends a HEADERS frame that contains the TE header field with any "
      "value other than \"trailers\"")
def http2_8_1_2_2_2(c):
    c.handshake()
    hdrs = c.common_headers() + [["trailers", "test"], ["te", "trailers, deflate"]]
    c.write_headers(1, True, True, c.encode_headers(hdrs))
    verify_stream_error(c, PROTOCOL)


# 8.1.2.3 Request Pseudo-Header Fields

@case("http2", "8.1.2.3", 1, "Sends a HEADERS frame with empty \":path\" pseudo-header field")
def http2_8_1_2_3_1(c):
    c.handshake()
    hdrs = c.common_headers()
    hdrs[2][1] = ""
    c.write_headers(1, True, True, c.encode_headers(hdrs))
    verify_stream_error(c, PROTOCOL)


@case("http2", "8.1.2.3", 2, "Sends a HEADERS frame that omits \":method\" pseudo-header field")
def http2_8_1_2_3_2(c):
    c.handshake()
    h = c.common_headers()
    hdrs = [h[1], h[2], h[3]]
    # as h2spec: it encodes headers[1:], so :scheme is left out as well
    c.write_headers(1, True, True, c.encode_headers(hdrs[1:]))
    verify_stream_error(c, PROTOCOL)


@case("http2", "8.1.2.3", 3, "Sends a HEADERS frame that omits \":scheme\" pseudo-header field")
def http2_8_1_2_3_3(c):
    c.handshake()
    h = c.common_headers()
    c.write_headers(1, True, True, c.encode_headers([h[0], h[2], h[3]]))
    verify_stream_error(c, PROTOCOL)


@case("http2", "8.1.2.3", 4, "Sends a HEADERS frame that omits \":path\" pseudo-header field")
def http2_8_1_2_3_4(c):
    c.handshake()
    h = c.common_headers()
    c.write_headers(1, True, True, c.encode_headers([h[0], h[1], h[3]]))
    verify_stream_error(c, PROTOCOL)


@case("http2", "8.1.2.3", 5, "Sends a HEADERS frame with duplicated \":method\" pseudo-header "
      "field")
def http2_8_1_2_3_5(c):
    c.handshake()
    h = c.common_headers()
    c.write_headers(1, True, True, c.encode_headers(h + [[":method", h[0][1]]]))
    verify_stream_error(c, PROTOCOL)


@case("http2", "8.1.2.3", 6, "Sends a HEADERS frame with duplicated \":scheme\" pseudo-header "
      "field")
def http2_8_1_2_3_6(c):
    c.handshake()
    h = c.common_headers()
    c.write_headers(1, True, True, c.encode_headers(h + [[":scheme", h[1][1]]]))
    verify_stream_error(c, PROTOCOL)


@case("http2", "8.1.2.3", 7, "Sends a HEADERS frame with duplicated \":path\" pseudo-header field")
def http2_8_1_2_3_7(c):
    c.handshake()
    h = c.common_headers()
    c.write_headers(1, True, True, c.encode_headers(h + [[":path", h[2][1]]]))
    verify_stream_error(c, PROTOCOL)


# 8.1.2.6 Malformed Requests and Responses

@case("http2", "8.1.2.6", 1, "Sends a HEADERS frame with the \"content-length\" header field "
      "which does not equal the DATA frame payload length")
def http2_8_1_2_6_1(c):
    c.handshake()
    hdrs = c.common_headers("POST") + [["content-length", "1"]]
    c.write_headers(1, False, True, c.encode_headers(hdrs))
    c.write_data(1, True, b"test")
    verify_stream_error(c, PROTOCOL)


@case("http2", "8.1.2.6", 2, "Sends a HEADERS frame with the \"content-length\" header field "
      "which does not equal the sum of the multiple DATA frames payload length")
def http2_8_1_2_6_2(c):
    c.handshake()
    hdrs = c.common_headers("POST") + [["content-length", "1"]]
    c.write_headers(1, False, True, c.encode_headers(hdrs))
    c.write_data(1, False, b"test")
    c.write_data(1, True, b"test")
    verify_stream_error(c, PROTOCOL)


# 8.2 Server Push

@case("http2", "8.2", 1, "Sends a PUSH_PROMISE frame")
def http2_8_2_1(c):
    c.handshake()
    c.write_push_promise(1, 3, True, c.encode_headers(c.common_headers()))
    verify_connection_error(c, PROTOCOL)


# =============================================================================================
# generic/ : what any HTTP/2 server must accept

@case("generic", "1", 1, "Sends a client connection preface")
def generic_1_1(c):
    c.send(h2lib.PREFACE)
    c.write_settings((SETTING_INITIAL_WINDOW_SIZE, DEFAULT_WINDOW))
    ev = c.wait_event()
    if not (ev.is_frame(SETTINGS) and not ev.ack):
        fail(c, ["SETTINGS Frame (flags:0x00)"], ev)


# 2 Streams and Multiplexing

@case("generic", "2", 1, "Sends a PRIORITY frame on idle stream")
def generic_2_1(c):
    c.handshake()
    c.write_priority(1, 0, False, 255)
    c.write_ping(False, PING_ZERO)
    verify_ping_frame_with_ack(c, PING_ZERO)


@case("generic", "2", 2, "Sends a WINDOW_UPDATE frame on half-closed (remote) stream")
def generic_2_2(c):
    c.handshake()
    c.write_settings((SETTING_INITIAL_WINDOW_SIZE, 0))
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    c.write_window_update(1, 1)
    verify_event_type(c, DATA)


@case("generic", "2", 3, "Sends a PRIORITY frame on half-closed (remote) stream")
def generic_2_3(c):
    c.handshake()
    c.write_settings((SETTING_INITIAL_WINDOW_SIZE, 0))
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    c.write_priority(1, 0, False, 255)
    c.write_window_update(1, 1)
    verify_event_type(c, DATA)


@case("generic", "2", 4, "Sends a RST_STREAM frame on half-closed (remote) stream")
def generic_2_4(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    c.write_rst_stream(1, CANCEL)
    c.write_ping(False, PING_ZERO)
    verify_ping_frame_or_connection_close(c, PING_ZERO)


@case("generic", "2", 5, "Sends a PRIORITY frame on closed stream")
def generic_2_5(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_stream_close(c)
    c.write_priority(1, 0, False, 255)
    c.write_ping(False, PING_ZERO)
    verify_ping_frame_with_ack(c, PING_ZERO)


# 3.1 DATA

@case("generic", "3.1", 1, "Sends a DATA frame")
def generic_3_1_1(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers("POST")))
    c.write_data(1, True, b"test")
    verify_headers_frame(c, 1)


@case("generic", "3.1", 2, "Sends multiple DATA frames")
def generic_3_1_2(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers("POST")))
    c.write_data(1, False, b"test")
    c.write_data(1, True, b"test")
    verify_headers_frame(c, 1)


@case("generic", "3.1", 3, "Sends a DATA frame with padding")
def generic_3_1_3(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers("POST")))
    c.write_data_padded(1, True, b"test", b"\0" * 5)
    verify_headers_frame(c, 1)


# 3.2 HEADERS

@case("generic", "3.2", 1, "Sends a HEADERS frame")
def generic_3_2_1(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_headers_frame(c, 1)


@case("generic", "3.2", 2, "Sends a HEADERS frame with padding")
def generic_3_2_2(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()), pad_length=8)
    verify_headers_frame(c, 1)


@case("generic", "3.2", 3, "Sends a HEADERS frame with priority")
def generic_3_2_3(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()),
                    priority=(0, False, 255))
    verify_headers_frame(c, 1)


# 3.3 PRIORITY

@case("generic", "3.3", 1, "Sends a PRIORITY frame with priority 1")
def generic_3_3_1(c):
    c.handshake()
    c.write_priority(1, 0, False, 0)
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_headers_frame(c, 1)


@case("generic", "3.3", 2, "Sends a PRIORITY frame with priority 256")
def generic_3_3_2(c):
    c.handshake()
    c.write_priority(1, 0, False, 255)
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_headers_frame(c, 1)


@case("generic", "3.3", 3, "Sends a PRIORITY frame with stream dependency")
def generic_3_3_3(c):
    c.handshake()
    c.write_priority(3, 1, False, 0)
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_headers_frame(c, 1)


@case("generic", "3.3", 4, "Sends a PRIORITY frame with exclusive")
def generic_3_3_4(c):
    c.handshake()
    c.write_priority(1, 0, True, 0)
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_headers_frame(c, 1)


@case("generic", "3.3", 5, "Sends a PRIORITY frame for an idle stream, then send a HEADER frame "
      "for a lower stream ID")
def generic_3_3_5(c):
    c.handshake()
    c.write_priority(3, 0, False, 255)
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_headers_frame(c, 1)


# 3.4 RST_STREAM

@case("generic", "3.4", 1, "Sends a RST_STREAM frame")
def generic_3_4_1(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers()))
    c.write_rst_stream(1, CANCEL)
    c.write_ping(False, PING_ZERO)
    verify_ping_frame_or_connection_close(c, PING_ZERO)


# 3.5 SETTINGS

@case("generic", "3.5", 1, "Sends a SETTINGS frame")
def generic_3_5_1(c):
    c.handshake()
    c.write_settings((SETTING_HEADER_TABLE_SIZE, 4096), (SETTING_ENABLE_PUSH, 1),
                     (SETTING_MAX_CONCURRENT_STREAMS, 100), (SETTING_INITIAL_WINDOW_SIZE, 65535),
                     (SETTING_MAX_FRAME_SIZE, 16384), (SETTING_MAX_HEADER_LIST_SIZE, 100))
    verify_settings_frame_with_ack(c)


# 3.7 PING

@case("generic", "3.7", 1, "Sends a PING frame")
def generic_3_7_1(c):
    c.handshake()
    c.write_ping(False, PING_H2SPEC)
    verify_ping_frame_with_ack(c, PING_H2SPEC)


# 3.8 GOAWAY

@case("generic", "3.8", 1, "Sends a GOAWAY frame")
def generic_3_8_1(c):
    c.handshake()
    c.write_goaway(0, NO, b"h2spec")
    c.write_ping(False, PING_H2SPEC)
    verify_ping_frame_or_connection_close(c, PING_H2SPEC)


# 3.9 WINDOW_UPDATE

@case("generic", "3.9", 1, "Sends a WINDOW_UPDATE frame with stream ID 0")
def generic_3_9_1(c):
    c.handshake()
    c.write_window_update(0, 1)
    c.write_ping(False, PING_ZERO)
    verify_ping_frame_with_ack(c, PING_ZERO)


@case("generic", "3.9", 2, "Sends a WINDOW_UPDATE frame with stream ID 1")
def generic_3_9_2(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    c.write_window_update(1, 1)
    verify_headers_frame(c, 1)


# 3.10 CONTINUATION

@case("generic", "3.10", 1, "Sends a CONTINUATION frame")
def generic_3_10_1(c):
    c.handshake()
    block = c.encode_headers(c.common_headers())
    c.write_headers(1, True, False, block[:5])
    c.write_continuation(1, True, block[5:])
    verify_headers_frame(c, 1)


@case("generic", "3.10", 2, "Sends multiple CONTINUATION frames")
def generic_3_10_2(c):
    c.handshake()
    block = c.encode_headers(c.common_headers())
    c.write_headers(1, True, False, block[:5])
    c.write_continuation(1, False, block[5:10])
    c.write_continuation(1, True, block[10:])
    verify_headers_frame(c, 1)


# 4 HTTP Message Exchanges

@case("generic", "4", 1, "Sends a GET request")
def generic_4_1(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_headers_frame(c, 1)


@case("generic", "4", 2, "Sends a HEAD request")
def generic_4_2(c):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers("HEAD")))
    verify_headers_frame(c, 1)


@case("generic", "4", 3, "Sends a POST request")
def generic_4_3(c):
    c.handshake()
    c.write_headers(1, False, True, c.encode_headers(c.common_headers("POST")))
    c.write_data(1, True, b"test")
    verify_headers_frame(c, 1)


@case("generic", "4", 4, "Sends a POST request with trailers")
def generic_4_4(c):
    c.handshake()
    hdrs = c.common_headers("POST") + [["trailer", "x-test"]]
    c.write_headers(1, False, True, c.encode_headers(hdrs))
    c.write_data(1, False, b"test")
    c.write_headers(1, True, True, c.encode_headers([["x-test", "ok"]]))
    verify_headers_frame(c, 1)


# 5 HPACK: header blocks that end with one representation, which certgate must decode

def hpack_appended(c, rep):
    c.handshake()
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()) + rep)
    verify_headers_frame(c, 1)


GENERIC_HPACK = [
    (1, "Sends a indexed header field representation", b"\xba"),
    (2, "Sends a literal header field with incremental indexing - indexed name",
     b"\x40\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"),
    (3, "Sends a literal header field with incremental indexing - indexed name (with Huffman "
        "coding)", b"\x40\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"),
    (4, "Sends a literal header field with incremental indexing - new name",
     b"\x40\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63"),
    (5, "Sends a literal header field with incremental indexing - new name (with Huffman coding)",
     b"\x40\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
    (6, "Sends a literal header field without indexing - indexed name",
     b"\x00\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"),
    (7, "Sends a literal header field without indexing - indexed name (with Huffman coding)",
     b"\x00\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"),
    (8, "Sends a literal header field without indexing - new name",
     b"\x00\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63"),
    (9, "Sends a literal header field without indexing - new name (huffman encoded)",
     b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
    (10, "Sends a literal header field never indexed - indexed name",
     b"\x10\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"),
    (11, "Sends a literal header field never indexed - indexed name (huffman encoded)",
     b"\x10\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"),
    (12, "Sends a literal header field never indexed - new name",
     b"\x10\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
    # h2spec's 13 sends the same bytes as its 12
    (13, "Sends a literal header field never indexed - new name (huffman encoded)",
     b"\x10\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
]

for _seq, _desc, _rep in GENERIC_HPACK:
    case("generic", "5", _seq, _desc)(lambda c, rep=_rep: hpack_appended(c, rep))


@case("generic", "5", 14, "Sends a dynamic table size update")
def generic_5_14(c):
    c.handshake()
    c.set_max_dynamic_table_size(128)
    c.write_headers(1, True, True, c.encode_headers(c.common_headers()))
    verify_headers_frame(c, 1)


@case("generic", "5", 15, "Sends multiple dynamic table size update")
def generic_5_15(c):
    c.handshake()
    c.write_headers(1, True, True,
                    b"\x3f\x61\x3f\xe1\x1f" + c.encode_headers(c.common_headers()))
    verify_headers_frame(c, 1)


# =============================================================================================
# hpack/ : RFC 7541 decoding errors, each a connection error COMPRESSION_ERROR

def hpack_error(c, rep, prepend=False):
    c.handshake()
    block = c.encode_headers(c.common_headers())
    c.write_headers(1, True, True, rep + block if prepend else block + rep)
    verify_connection_error(c, COMPRESSION)


@case("hpack", "2.3.3", 1, "Sends a indexed header field representation with invalid index")
def hpack_2_3_3_1(c):
    hpack_error(c, b"\xC6")


@case("hpack", "2.3.3", 2, "Sends a literal header field representation with invalid index")
def hpack_2_3_3_2(c):
    hpack_error(c, b"\x7F\x07\x00")


@case("hpack", "4.2", 1, "Sends a dynamic table size update at the end of header block")
def hpack_4_2_1(c):
    hpack_error(c, b"\x21")


@case("hpack", "5.2", 1, "Sends a Huffman-encoded string literal representation with padding "
      "longer than 7 bits")
def hpack_5_2_1(c):
    hpack_error(c, b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x49\x50\x9f\xff")


@case("hpack", "5.2", 2, "Sends a Huffman-encoded string literal representation padded by zero")
def hpack_5_2_2(c):
    hpack_error(c, b"\x00\x85\xf2\xb2\x4a\x84\xff\x83\x49\x50\x90")


@case("hpack", "5.2", 3, "Sends a Huffman-encoded string literal representation containing the "
      "EOS symbol")
def hpack_5_2_3(c):
    hpack_error(c, b"\x00\x85\xf2\xb2\x4a\x84\xff\x87\x49\x51\xff\xff\xff\xfa\x7f")


@case("hpack", "6.1", 1, "Sends a indexed header field representation with index 0")
def hpack_6_1_1(c):
    hpack_error(c, b"\x80")


@case("hpack", "6.3", 1, "Sends a dynamic table size update larger than the value of "
      "SETTINGS_HEADER_TABLE_SIZE")
def hpack_6_3_1(c):
    c.handshake()
    table_size = c.settings.get(SETTING_HEADER_TABLE_SIZE, 4096) + 1
    k = (1 << 5) - 1
    if table_size < k:
        rep = bytearray([table_size])
    else:
        rep = bytearray([k])
        table_size -= k
        while table_size >= 128:
            rep.append(0x80 | (table_size & 0x7f))
            table_size >>= 7
        rep.append(table_size)
    rep[0] |= 0x20
    c.write_headers(1, True, True, bytes(rep) + c.encode_headers(c.common_headers()))
    verify_connection_error(c, COMPRESSION)


def register(harness):
    global H
    H = harness
    h2lib.init(harness)
    harness.add_tests(TESTS)


if __name__ == "__main__":
    import os
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import run
    register(run)
    sys.exit(run.main())
