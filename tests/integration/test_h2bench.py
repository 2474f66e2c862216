#!/usr/bin/env python3
"""test_h2bench.py: `make bench`'s HTTP/2 tools work, group `h2bench.` (functional only: no
figure is asserted). run.py calls register(itself).

- tests/bench/loadgen.c's h2 mode (ALPN h2, nghttp2, N connections x M streams) completes
  requests through certgate to the recording upstream with no errors, and the upstream saw
  certgate's client-certificate header, not the client's forged copy;
- its grpc mode completes unary calls through certgate (upstream_protocol: h2c) to
  tests/bench/grpc_upstream.c, the bench's h2c gRPC responder, which reports in xfcc-seen what
  header arrived;
- a listener that does not offer h2 is reported as such, not measured as HTTP/1.1; a 200
  without grpc-status is an error in grpc mode, not a call.
Both programs are built once per run with scripts/bench/lib.sh's build_loadgen, as make bench
builds them.
"""

import os
import re
import subprocess

H = None  # run.py's module, set by register()
FORGED = "X-Forwarded-Client-Cert: By=forged;Hash=00"
_bins = {}


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def bins():
    """Returns (loadgen, grpc_upstream) paths, built on first use in the run's directory."""
    if not _bins:
        d = os.path.join(H.Opts.tmp, "bench-bin")
        os.makedirs(d, exist_ok=True)
        script = 'root="$1"; BENCH_TAG=h2bench; . "$1/scripts/bench/lib.sh"; build_loadgen "$2"'
        r = H.run_cmd(["bash", "-c", script, "_", H.ROOT, os.path.join(d, "loadgen")],
                      timeout=120)
        check(r.returncode == 0, "building the load generator failed: %s" % r.stderr[-400:])
        _bins["loadgen"] = os.path.join(d, "loadgen")
        _bins["grpc_upstream"] = os.path.join(d, "grpc_upstream")
    return _bins["loadgen"], _bins["grpc_upstream"]


def loadgen(t, mode, port, *args, alg="ecdsa"):
    """Runs loadgen MODE against 127.0.0.1:PORT briefly; returns (exit status, {key: value})."""
    pki = H.Opts.pki[alg]
    lg, _ = bins()
    r = H.run_cmd([lg, mode, "-a", "%s:%d" % (H.HOST, port), "-c", "2", "-m", "4",
                   "-d", "0.4s", "-w", "0.1s", "--cert", os.path.join(pki, "client-chain.crt"),
                   "--key", os.path.join(pki, "client.key"), "--ca", os.path.join(pki, "root.crt"),
                   "-H", FORGED] + list(args), timeout=30)
    line = [l for l in r.stdout.splitlines() if l.startswith("loadgen ")]
    check(line, "loadgen printed no result line (exit %d): %s" % (r.returncode, r.stderr[-300:]))
    return r.returncode, dict(re.findall(r"(\w+)=(\S+)", line[-1]))


def brief(rc, res):
    return "exit %d, %s" % (rc, " ".join("%s=%s" % (k, res.get(k)) for k in (
        "mode", "streams", "ok", "errors", "first_error")))


class GrpcUpstream:
    """tests/bench/grpc_upstream.c on a free port, stopped with the test."""

    def __init__(self, t):
        _, prog = bins()
        self.port = H.free_port()
        self.addr = "%s:%d" % (H.HOST, self.port)
        self.log = open(os.path.join(t.dir, "grpc_upstream.log"), "wb")
        self.proc = subprocess.Popen([prog, self.addr], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)
        t.procs.append(self)
        for _ in range(int(H.T(100))):
            if H.port_open(self.port):
                return
            check(self.proc.poll() is None, "grpc_upstream exited at start")
            H.time.sleep(0.05)
        raise H.Failure("grpc_upstream did not listen on %s" % self.addr)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return []


def t_h2_keepalive(t):
    up, cg, _ = H.http_env(t)
    rc, res = loadgen(t, "h2", cg.port())
    check(rc == 0 and res.get("mode") == "h2" and res.get("streams") == "4" and
          int(res["ok"]) > 0 and res["errors"] == "0", "loadgen h2: " + brief(rc, res))
    reqs = up.requests()
    check(reqs, "the upstream received no request")
    for r in reqs:
        vals = [v for k, v in r["headers"] if k.lower() == "x-forwarded-client-cert"]
        check(len(vals) == 1 and "forged" not in vals[0],
              "upstream saw x-forwarded-client-cert %r" % vals)


def t_grpc_unary(t):
    g = GrpcUpstream(t)
    cg = t.certgate("ecdsa", [H.listener("grpc", "http", g.addr, upstream_protocol="h2c",
                                         client_auth="require")])
    rc, res = loadgen(t, "grpc", cg.port())
    check(rc == 0 and res.get("mode") == "grpc" and int(res["ok"]) > 0 and
          res["errors"] == "0", "loadgen grpc: " + brief(rc, res))
    # what run.sh's forwarding_grpc check does: curl's call, the upstream's xfcc-seen
    pki = H.Opts.pki["ecdsa"]
    body = os.path.join(t.dir, "grpc-req.bin")
    with open(body, "wb") as f:
        f.write(b"\0\0\0\0\7\n\5hello")
    r = H.run_cmd(["curl", "-sS", "--http2", "-m", "10", "-o", "/dev/null", "-D", "-",
                   "--resolve", "localhost:%d:%s" % (cg.port(), H.HOST),
                   "--cacert", os.path.join(pki, "root.crt"),
                   "--cert", os.path.join(pki, "client-chain.crt"),
                   "--key", os.path.join(pki, "client.key"), "-H", FORGED, "-X", "POST",
                   "-H", "content-type: application/grpc", "-H", "te: trailers",
                   "--data-binary", "@" + body,
                   "https://localhost:%d/bench.Bench/Unary" % cg.port()], timeout=20)
    head = r.stdout.replace("\r", "")
    check(re.search(r"^xfcc-seen: present$", head, re.M) and
          re.search(r"^grpc-status: 0$", head, re.M),
          "curl's gRPC call: %r %r" % (head[:300], r.stderr[-200:]))


def t_no_h2_reported(t):
    _, cg, _ = H.http_env(t, alpn=["http/1.1"])
    rc, res = loadgen(t, "h2", cg.port())
    # certgate refuses the handshake (RFC 7301: no common protocol); a server that ignores
    # ALPN would answer with none selected, which loadgen reports as server_did_not_select_h2
    err = res["first_error"]
    check(rc != 0 and res["ok"] == "0" and ("NO_APPLICATION_PROTOCOL" in err or
                                           err == "server_did_not_select_h2"),
          "loadgen h2 against an http/1.1-only listener: " + brief(rc, res))


def t_grpc_status_required(t):
    # the recording upstream answers 200 over HTTP/1.1: no trailers, so no grpc-status
    _, cg, _ = H.http_env(t)
    rc, res = loadgen(t, "grpc", cg.port(), "-p", "/echo")
    check(rc != 0 and res["ok"] == "0" and res["first_error"] == "grpc_status_-1",
          "loadgen grpc against a non-gRPC upstream: " + brief(rc, res))


TESTS = [
    ("h2bench.h2_keepalive", t_h2_keepalive),
    ("h2bench.grpc_unary", t_grpc_unary),
    ("h2bench.no_h2_reported", t_no_h2_reported),
    ("h2bench.grpc_status_required", t_grpc_status_required),
]


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS)
