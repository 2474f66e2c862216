#!/usr/bin/env python3
"""test_grpc.py: gRPC end to end through certgate (issue 13, item 5), in the group `grpc.`.

A real gRPC server (python3-grpcio, Debian) listens with add_insecure_port on 127.0.0.1, which
speaks h2c with prior knowledge: certgate's listener has `upstream_protocol: h2c`. The service
is defined without protoc (generic handlers, bytes in and out): it answers with what it saw, in
JSON: the x-forwarded-client-cert metadata certgate set, the subject and hash in it, the
grpc-timeout it was given. A real gRPC client (grpc.secure_channel with
ssl_channel_credentials: the demo root, the client key and chain) calls it through mutual TLS.
The server runs in this process, in grpc's thread pool, and is stopped when the test ends.

    python3 tests/integration/test_grpc.py --binary build/certgate [-k grpc.] [-v]
"""

import hashlib
import json
import os
import queue
import re
import ssl
import sys
import threading
import time

import h2lib

grpc = None  # imported by need_grpc(), so that a run without grpc. tests never loads it

H = None  # run.py's module, set by register()
TESTS = []
SERVICE = "certgate.test.Echo"
SUBJECT = "CN=0102030405060708,O=certgate demo"


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


def leaf_hash(alg="ecdsa"):
    with open(os.path.join(H.Opts.pki[alg], "client.crt")) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


# ---------------------------------------------------------------------------------------------
# the server

def seen(context, extra=None):
    """What the server saw of a call: the client-certificate header certgate set and the
    rest of the metadata."""
    md = list(context.invocation_metadata())
    xfcc = [v for k, v in md if k == "x-forwarded-client-cert"]
    subject = None
    if xfcc:
        m = re.search(r'Subject="([^"]*)"', xfcc[0])
        subject = m.group(1) if m else None
    out = {"xfcc": xfcc, "subject": subject, "metadata": [[k, v] for k, v in md
                                                         if isinstance(v, str)],
           "time_remaining": context.time_remaining(), "peer": context.peer()}
    out.update(extra or {})
    return out


class GrpcServer:
    """The gRPC server behind certgate: h2c on 127.0.0.1, a few methods of SERVICE."""

    def __init__(self, t):
        from concurrent import futures
        self.calls = []  # method names, in the order they arrived
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        methods = {
            "WhoAmI": grpc.unary_unary_rpc_method_handler(self.who_am_i),
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "Trailers": grpc.unary_unary_rpc_method_handler(self.trailers),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
            "Watch": grpc.unary_stream_rpc_method_handler(self.watch),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, methods),))
        self.port = self.server.add_insecure_port("%s:0" % H.HOST)
        check(self.port, "the gRPC server could not bind")
        self.server.start()
        self.slow_seen = None
        t.procs.append(self)

    def called(self, name):
        with self.lock:
            self.calls.append(name)

    def who_am_i(self, request, context):
        self.called("WhoAmI")
        return json.dumps(seen(context, {"request": request.decode()})).encode()

    def echo(self, request, context):
        self.called("Echo")
        return hashlib.sha256(request).hexdigest().encode() + b"\n" + request

    def chat(self, request_iterator, context):
        self.called("Chat")
        first = True
        for msg in request_iterator:
            if first:
                yield json.dumps(seen(context)).encode()
                first = False
            yield b"echo:" + msg

    def fail(self, request, context):
        self.called("Fail")
        context.set_trailing_metadata((("x-custom-trailer", "failing"),
                                       ("x-detail-bin", b"\x00\x01\xff")))
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "no access for " + request.decode())

    def trailers(self, request, context):
        self.called("Trailers")
        context.set_trailing_metadata((("x-custom-trailer", "v1"), ("x-count", "3")))
        return b"with trailers"

    def slow(self, request, context):
        self.called("Slow")
        self.slow_seen = context.time_remaining()
        deadline = time.time() + float(request.decode())
        while time.time() < deadline and context.is_active():
            time.sleep(0.02)
        return b"slow done"

    def watch(self, request, context):
        """Server streaming, as Fabric's Deliver: "N,SECONDS" answers N messages SECONDS apart
        to a client that sends nothing after its request."""
        self.called("Watch")
        n, gap = request.decode().split(",")
        for i in range(int(n)):
            if i:
                time.sleep(float(gap))
            if not context.is_active():
                return
            yield b"event %d" % i

    def stop(self):
        self.server.stop(0).wait(5)
        return []


# ---------------------------------------------------------------------------------------------
# the client

def need_grpc():
    global grpc
    if grpc is None:
        # grpc-core logs the handshake failures the tests provoke; the tests check them
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        try:
            import grpc as mod
        except ImportError:
            h2lib.debian_modules()
            try:
                import grpc as mod
            except ImportError:
                raise H.Failure("python3-grpcio is not installed (make deps)")
        grpc = mod


class Client:
    """A gRPC channel through certgate with the client certificate |cert|."""

    def __init__(self, t, port, cert="client-chain.crt", key="client.key", alg="ecdsa"):
        pki = H.Opts.pki[alg]

        def read(name):
            with open(os.path.join(pki, name), "rb") as f:
                return f.read()
        creds = grpc.ssl_channel_credentials(root_certificates=read("root.crt"),
                                             private_key=read(key),
                                             certificate_chain=read(cert))
        self.channel = grpc.secure_channel(
            "%s:%d" % (H.HOST, port), creds,
            options=(("grpc.ssl_target_name_override", "localhost"),
                     ("grpc.default_authority", "localhost:%d" % port),
                     ("grpc.enable_retries", 0)))
        t.procs.append(self)

    def unary(self, method):
        return self.channel.unary_unary("/%s/%s" % (SERVICE, method))

    def stream(self, method):
        return self.channel.stream_stream("/%s/%s" % (SERVICE, method))

    def server_stream(self, method):
        return self.channel.unary_stream("/%s/%s" % (SERVICE, method))

    def stop(self):
        self.channel.close()
        return []


def grpc_env(t, **lkw):
    need_grpc()
    srv = GrpcServer(t)
    lkw.setdefault("client_auth", "require")
    cg = t.certgate("ecdsa", [H.listener("grpc", "http", "%s:%d" % (H.HOST, srv.port),
                                         upstream_protocol="h2c", **lkw)])
    return srv, cg


def check_xfcc(got):
    check(len(got["xfcc"]) == 1, "the server saw %d x-forwarded-client-cert values: %r"
          % (len(got["xfcc"]), got["xfcc"]))
    check("Hash=%s" % leaf_hash() in got["xfcc"][0], "XFCC without the client's hash: %r"
          % got["xfcc"][0][:200])
    check(got["subject"] == SUBJECT, "subject %r, want %r" % (got["subject"], SUBJECT))


# ---------------------------------------------------------------------------------------------
# tests

@test("grpc.unary_call_sees_client_certificate")
def t_unary(t):
    srv, cg = grpc_env(t)
    c = Client(t, cg.port())
    resp, call = c.unary("WhoAmI").with_call(
        b"hello", timeout=T(10),
        metadata=(("x-forwarded-client-cert", "By=spoof;Hash=00;Subject=\"CN=admin\""),
                  ("x-app", "kept")))
    check(call.code() == grpc.StatusCode.OK, "code %s" % call.code())
    got = json.loads(resp)
    check(got["request"] == "hello", "request %r" % got["request"])
    check_xfcc(got)
    check("spoof" not in json.dumps(got["xfcc"]), "the client's XFCC reached the server")
    check(["x-app", "kept"] in got["metadata"], "other metadata lost: %r" % got["metadata"])
    check(srv.calls == ["WhoAmI"], "server calls %r" % srv.calls)
    deadline = time.time() + T(3)
    while time.time() < deadline:
        lines = [e for e in H.log_events(cg, "access") if "WhoAmI" in (e.get("path") or "")]
        if lines:
            break
        time.sleep(0.05)
    check(lines and lines[0].get("method") == "POST" and lines[0].get("status") == 200,
          "access log %r" % lines[:1])


@test("grpc.unary_large_messages")
def t_large(t):
    srv, cg = grpc_env(t)
    c = Client(t, cg.port())
    blob = os.urandom(3 * 1024 * 1024)  # several windows' worth each way
    resp = c.unary("Echo")(blob, timeout=T(20))
    digest, _, body = resp.partition(b"\n")
    check(digest.decode() == hashlib.sha256(blob).hexdigest(), "the server got other bytes")
    check(body == blob, "the client got %d other bytes back" % len(body))


@test("grpc.concurrent_calls_multiplexed")
def t_concurrent(t):
    """50 calls at once on one client connection: each gets its own answer, and they share
    certgate's h2c connection (one per worker and listener) instead of one each."""
    srv, cg = grpc_env(t)
    c = Client(t, cg.port())
    futures = [c.unary("WhoAmI").future(b"call-%d" % i, timeout=T(15)) for i in range(50)]
    peers = set()
    for i, f in enumerate(futures):
        got = json.loads(f.result())
        check(got["request"] == "call-%d" % i, "call %d got the answer to %r" % (i, got["request"]))
        check_xfcc(got)
        peers.add(got["peer"])
    check(len(srv.calls) == 50, "the server saw %d calls" % len(srv.calls))
    check(len(peers) <= 2, "50 calls came over %d upstream connections: %r"
          % (len(peers), sorted(peers)[:5]))


@test("grpc.bidi_streaming_ping_pong")
def t_bidi(t):
    srv, cg = grpc_env(t)
    c = Client(t, cg.port())
    outq = queue.Queue()
    n = 6

    def requests():
        while True:
            item = outq.get(timeout=T(10))
            if item is None:
                return
            yield item
    responses = c.stream("Chat")(requests(), timeout=T(20))
    # one message at a time: the next goes out only when the echo of the last came back, so
    # neither certgate nor the server may hold a message until the stream ends
    outq.put(b"m0")
    first = json.loads(next(responses))
    check_xfcc(first)
    got = [next(responses)]
    for i in range(1, n):
        outq.put(b"m%d" % i)
        got.append(next(responses))
    outq.put(None)
    rest = list(responses)
    check(got == [b"echo:m%d" % i for i in range(n)], "echoes %r" % got)
    check(rest == [], "extra responses %r" % rest)
    check(responses.code() == grpc.StatusCode.OK, "status %s" % responses.code())


@test("grpc.server_streaming_outlives_idle_timeout")
def t_server_streaming(t):
    """A server-streaming call (Fabric's Deliver, a watch) whose client sends nothing after its
    request: while the server's messages keep coming, closer together than idle_timeout, the
    call lasts as long as the server wants, well past idle_timeout; a second call on the same
    channel meanwhile is served."""
    need_grpc()
    srv = GrpcServer(t)
    cg = t.certgate("ecdsa", [H.listener("grpc", "http", "%s:%d" % (H.HOST, srv.port),
                                         upstream_protocol="h2c", client_auth="require")],
                    limits={"idle_timeout": "1s"})
    c = Client(t, cg.port())
    start = time.time()
    stream = c.server_stream("Watch")(b"8,0.4", timeout=T(20))
    got = [next(stream)]
    echo = c.unary("Echo")(b"meanwhile", timeout=T(5))
    check(echo.endswith(b"meanwhile"), "the unary call beside the stream: %r" % echo[:80])
    got += list(stream)
    check(got == [b"event %d" % i for i in range(8)], "events %r (after %.1f s)"
          % (got, time.time() - start))
    check(stream.code() == grpc.StatusCode.OK, "status %s" % stream.code())
    check(time.time() - start > 2.5, "the call was too short to prove anything")


@test("grpc.status_details_and_trailing_metadata")
def t_status(t):
    srv, cg = grpc_env(t)
    c = Client(t, cg.port())
    try:
        c.unary("Fail")(b"bob", timeout=T(10))
        raise H.Failure("Fail returned OK")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.PERMISSION_DENIED, "code %s" % e.code())
        check(e.details() == "no access for bob", "details %r" % e.details())
        md = dict(e.trailing_metadata() or ())
        check(md.get("x-custom-trailer") == "failing", "trailing metadata %r" % md)
        check(md.get("x-detail-bin") == b"\x00\x01\xff", "binary trailer %r"
              % md.get("x-detail-bin"))
    resp, call = c.unary("Trailers").with_call(b"", timeout=T(10))
    check(resp == b"with trailers" and call.code() == grpc.StatusCode.OK, "Trailers: %r %s"
          % (resp, call.code()))
    md = dict(call.trailing_metadata() or ())
    check(md.get("x-custom-trailer") == "v1" and md.get("x-count") == "3",
          "trailing metadata %r" % md)
    # an unknown method: UNIMPLEMENTED from the server, through certgate
    try:
        c.unary("NoSuchMethod")(b"", timeout=T(10))
        raise H.Failure("NoSuchMethod returned OK")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.UNIMPLEMENTED, "NoSuchMethod: %s" % e.code())


@test("grpc.wrong_certificate_refused_at_handshake")
def t_wrong_cert(t):
    srv, cg = grpc_env(t)
    bad = Client(t, cg.port(), cert="client-unknown-chain.crt", key="client-unknown.key")
    try:
        bad.unary("WhoAmI")(b"intruder", timeout=T(5))
        raise H.Failure("a client of another CA was served")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.UNAVAILABLE, "code %s (%s)" % (e.code(), e.details()))
    time.sleep(0.2)
    check(srv.calls == [], "the server saw calls %r" % srv.calls)
    refused = [e for e in H.log_events(cg) if "refused" in json.dumps(e)]
    check(refused, "no refused handshake in the log")
    # a good client on the same listener still works
    resp = Client(t, cg.port()).unary("WhoAmI")(b"ok", timeout=T(10))
    check_xfcc(json.loads(resp))


@test("grpc.deadline_exceeded_and_propagated")
def t_deadline(t):
    srv, cg = grpc_env(t)
    c = Client(t, cg.port())
    start = time.time()
    try:
        c.unary("Slow")(b"5", timeout=0.5 * H.Opts.scale)
        raise H.Failure("Slow returned before its deadline")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "code %s" % e.code())
    took = time.time() - start
    check(took < T(3), "the deadline took %.1fs" % took)
    deadline = time.time() + T(3)
    while srv.slow_seen is None and time.time() < deadline:
        time.sleep(0.02)
    check(srv.slow_seen is not None, "the server never saw the call")
    check(0 < srv.slow_seen <= 0.5 * H.Opts.scale + 0.2,
          "the server's time remaining %r (grpc-timeout not forwarded?)" % srv.slow_seen)
    resp = c.unary("Slow")(b"0", timeout=T(10))
    check(resp == b"slow done", "the channel after a deadline: %r" % resp)


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
