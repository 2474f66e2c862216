#!/usr/bin/python3
"""make_h2_corpus.py DIR: writes seed inputs for the HTTP/2 fuzz target (fuzz_h2.c) to DIR.

Each seed is the target's input layout: a flags byte, a script (the pieces' sizes and the stub
backend's choices) and what a client sends after the TLS handshake: valid request sequences,
bodies, trailers, header blocks split into CONTINUATION frames, PRIORITY, RST_STREAM,
WINDOW_UPDATE, PING, SETTINGS and GOAWAY, and the requests certgate must refuse or sanitise.
Frames come from hyperframe and HPACK from hpack (python3-h2's dependencies): run it with
Debian's /usr/bin/python3. The committed corpus (tests/fuzz/corpus/h2) is these seeds merged
with what the fuzzer found (libFuzzer -merge=1)."""
import os
import sys

from hpack import Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame,
                              PingFrame, PriorityFrame, RstStreamFrame, SettingsFrame,
                              WindowUpdateFrame)

F_RAW, F_DRAIN, F_TRIM, F_REPEAT, F_APPEND = 0x01, 0x02, 0x04, 0x08, 0x10
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def base(path="/", method="GET", authority="app.example", extra=()):
    return [(":method", method), (":scheme", "https"), (":authority", authority),
            (":path", path)] + list(extra)


class Client:
    """A client's byte stream, frame by frame, with one HPACK context."""

    def __init__(self):
        self.enc = Encoder()
        self.out = b""

    def frame(self, f):
        self.out += f.serialize()
        return self

    def headers(self, sid, hdrs, end=False, split=0, priority=False, pad=0):
        block = self.enc.encode(hdrs)
        flags = set()
        if end:
            flags.add("END_STREAM")
        if split <= 0 or split >= len(block):
            flags.add("END_HEADERS")
            first, rest = block, b""
        else:
            first, rest = block[:split], block[split:]
        f = HeadersFrame(sid, first, flags=flags)
        if priority:
            f.flags.add("PRIORITY")
            f.depends_on, f.stream_weight, f.exclusive = 0, 15, False
        if pad:
            f.flags.add("PADDED")
            f.pad_length = pad
        self.frame(f)
        while rest:
            chunk, rest = rest[:max(split, 1)], rest[max(split, 1):]
            self.frame(ContinuationFrame(sid, chunk, flags=set() if rest else {"END_HEADERS"}))
        return self

    def data(self, sid, payload, end=False, pad=0):
        f = DataFrame(sid, payload, flags={"END_STREAM"} if end else set())
        if pad:
            f.flags.add("PADDED")
            f.pad_length = pad
        return self.frame(f)


def seed(flags, script, body):
    assert len(script) < 256
    return bytes([flags, len(script)]) + bytes(script) + body


def seeds():
    out = {}

    c = Client().headers(1, base(extra=[("user-agent", "curl/7.88"), ("accept", "*/*")]), end=True)
    out["get"] = seed(0, b"", c.out)
    out["get_pieces"] = seed(0, bytes([3, 0x45, 0x81, 0, 9, 0x10]), c.out)

    body = b"x" * 3000
    c = Client().headers(1, base("/upload", "POST", extra=[("content-length", str(len(body))),
                                                            ("content-type", "text/plain")]))
    c.data(1, body[:1000]).data(1, body[1000:], end=True)
    out["post"] = seed(0, bytes([0x02, 5, 0x82, 0x02]), c.out)
    out["post_answer_early"] = seed(0, bytes([0x00, 0xff, 0x84, 0x00]), c.out)

    c = Client().headers(1, base("/pkg.Svc/Call", "POST",
                                 extra=[("content-type", "application/grpc"), ("te", "trailers"),
                                        ("grpc-timeout", "1S")]))
    c.data(1, b"\x00\x00\x00\x00\x05hello")
    c.headers(1, [("grpc-status-client", "0"), ("x-trailer", "t")], end=True)
    out["grpc_trailers"] = seed(0, bytes([0x82, 0x30, 0x06]), c.out)

    c = Client()
    # Seven CONTINUATION frames; Debian's nghttp2 ends the session after eight (CVE-2024-28182).
    c.headers(1, base("/long", extra=[("x-long-%d" % i, "v" * 40) for i in range(20)]), end=True,
              split=150)
    out["continuation"] = seed(0, bytes([0x07, 0x23]), c.out)

    c = Client()
    c.headers(1, base("/p"), end=True, priority=True, pad=7)
    c.frame(PriorityFrame(3, depends_on=1, stream_weight=200))
    c.frame(WindowUpdateFrame(0, window_increment=1 << 20))
    c.frame(PingFrame(0, b"12345678"))
    c.frame(SettingsFrame(0, settings={SettingsFrame.HEADER_TABLE_SIZE: 0,
                                       SettingsFrame.INITIAL_WINDOW_SIZE: 1 << 20,
                                       SettingsFrame.MAX_FRAME_SIZE: 1 << 15}))
    c.frame(SettingsFrame(0, flags={"ACK"}))
    c.headers(3, base("/q"), end=True)
    c.frame(WindowUpdateFrame(3, window_increment=1000))
    c.frame(RstStreamFrame(3, error_code=8))
    c.frame(GoAwayFrame(0, last_stream_id=0, error_code=0))
    out["control"] = seed(0, bytes([0x10, 0x03, 0x44]), c.out)

    c = Client()
    for i in range(8):
        sid = 1 + 2 * i
        c.headers(sid, base("/s%d" % i, "POST" if i % 2 else "GET"), end=i % 2 == 0)
    for i in range(8):
        if i % 2:
            c.data(1 + 2 * i, b"d%d" % i, end=True)
    out["concurrent"] = seed(0, bytes([0x00, 0x01, 0x02, 0x03, 0x81, 0x55, 0xaa]), c.out)
    out["concurrent_drain"] = seed(F_DRAIN, bytes([0x10, 0x41, 0x02, 0x03]), c.out)

    c = Client()
    c.headers(1, base("/spoof", extra=[
        ("x-forwarded-client-cert", "Hash=evil"), ("x-forwarded-client-cert", "By=x"),
        ("x-ssl-client-cert", "evil"), ("x-user", "admin"), ("x_custom", "u"),
        ("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "http"),
        ("cookie", "a=1"), ("cookie", "b=2"), ("x-request-id", "abc-123"),
        ("forwarded", "for=1.2.3.4"), ("client-cert", ":AAAA:")]), end=True)
    out["spoof"] = seed(0, b"", c.out)
    out["spoof_append"] = seed(F_APPEND, b"", c.out)
    c = Client()
    c.headers(1, base("/t", "POST", extra=[("te", "trailers")]))
    c.data(1, b"abc")
    c.headers(1, [("x-forwarded-client-cert", "Hash=evil"), ("x-user", "admin"),
                  ("content_length", "5"), ("x-ok", "1")], end=True)
    out["spoof_trailers"] = seed(0, bytes([0x02]), c.out)
    out["spoof_trailers_append"] = seed(F_APPEND, bytes([0x02]), c.out)

    refused = [
        base(extra=[("host", "other.example")]),
        base(method="CONNECT"),
        [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/")],
        [(":method", "OPTIONS"), (":scheme", "https"), (":authority", "a"), (":path", "*")],
        base(path="http://a/x"),
        base(extra=[("transfer_encoding", "chunked")]),
        base(extra=[("x_forwarded_client_cert", "Hash=evil")]),
        base(extra=[("connection", "close")]),
        base(extra=[("te", "gzip")]),
        base(extra=[("content-length", "12"), ("content-length", "13")]),
        [(":method", "GET"), (":scheme", "https"), (":path", "/"), ("host", "h.example")],
        [(":method", "GET"), (":path", "/")],
    ]
    for i, hdrs in enumerate(refused):
        c = Client().headers(1, hdrs, end=True)
        c.headers(3, base("/after"), end=True)
        out["refused_%d" % i] = seed(0, bytes([0x03]), c.out)

    # A body past the stream's window, for a stub that reads nothing or everything; floods.
    def repeat(head, tail, times, script):
        return seed(F_REPEAT, bytes([len(tail) & 255, len(tail) >> 8, times // 8]) + script,
                    head + tail)
    c = Client().headers(1, base("/big", "POST"))
    tail = DataFrame(1, b"z" * 16000).serialize()
    out["window_silent"] = repeat(c.out, tail, 8, bytes([0x03, 0x80, 0xbf]))
    out["window_echo"] = repeat(c.out, tail, 64, bytes([0x02, 0x80, 0xbf]))
    out["ping_flood"] = repeat(b"", PingFrame(0, b"p" * 8).serialize() * 4, 256, b"\xbf")
    c = Client().headers(1, base("/e", "POST"))
    out["empty_data_flood"] = repeat(c.out, DataFrame(1, b"").serialize() * 4, 256, b"\xbf")
    out["settings_flood"] = repeat(b"", SettingsFrame(0).serialize() * 4, 256, b"\xbf")
    out["priority_flood"] = repeat(b"", PriorityFrame(5, depends_on=0).serialize() * 4, 256,
                                   b"\xbf")
    c = Client()
    for i in range(120):
        c.headers(1 + 2 * i, base("/r"), end=False)
        c.frame(RstStreamFrame(1 + 2 * i, error_code=8))
    out["rapid_reset"] = seed(0, bytes([0xbf, 0x03]), c.out)
    c = Client().headers(1, base("/c", extra=[("x-a", "b" * 50)]), end=True, split=1)
    out["continuation_flood"] = seed(0, b"", c.out)

    # A response past the client's window and then the stream's high-water mark (the script
    # byte 0x0c: pieces of 13 bytes, each followed by an upstream event that adds 4 KB of a
    # 180 KB body); PINGs pass the time, then the client opens its window bit by bit.
    c = Client().headers(1, base("/download"), end=True)
    for _ in range(32):
        c.frame(PingFrame(0, b"t" * 8))
    for _ in range(12):
        c.frame(WindowUpdateFrame(0, window_increment=30000))
        c.frame(WindowUpdateFrame(1, window_increment=30000))
    out["flow_control"] = seed(0, bytes([0x0c]), c.out)

    # HPACK bombs: one large entry of the dynamic table, referenced again and again, in the
    # head (431) and in the trailers (RST_STREAM).
    def bomb(enc_hdrs, refs):
        block = Encoder().encode(enc_hdrs)
        return block + b"\xbe" * refs
    block = bomb(base("/b") + [("x-big", "b" * 4000)], 40)
    head = HeadersFrame(1, block, flags={"END_HEADERS", "END_STREAM"}).serialize()
    out["hpack_bomb"] = seed(0, b"", head)
    c = Client().headers(1, base("/bt", "POST", extra=[("te", "trailers")]))
    c.data(1, b"abc")
    tblock = bomb([("x-big", "b" * 4000)], 40)
    c.frame(HeadersFrame(1, tblock, flags={"END_HEADERS", "END_STREAM"}))
    out["hpack_bomb_trailers"] = seed(0, bytes([0x02]), c.out)

    # The preface the client sends itself; trimming between pieces.
    c = Client().headers(1, base("/raw"), end=True)
    raw = PREFACE + SettingsFrame(0, settings={SettingsFrame.ENABLE_PUSH: 0}).serialize() + c.out
    out["raw_preface"] = seed(F_RAW, b"", raw)
    out["raw_preface_trim"] = seed(F_RAW | F_TRIM, bytes([0x05, 0x08, 0x20]), raw)
    out["bad_preface"] = seed(F_RAW, b"", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_h2_corpus.py DIR")
    os.makedirs(sys.argv[1], exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(sys.argv[1], "seed_" + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
