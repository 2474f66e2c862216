#!/usr/bin/env python3
"""soak.py: the long run of issue 14 (`make soak`). Mixed traffic through mutual TLS for
SOAK_SECONDS (default 1800) against build/certgate while its credentials rotate, tenants come
and go and the allowlist changes; reports requests, failures, RSS, open descriptors and p99.

usage: scripts/soak.py [--binary PATH] [--seconds N] [--report-every N] [--keep]

Traffic, one thread each, in a loop on 127.0.0.1 (a recording-free tests/integration/upstream.py
behind):
  full       a new connection and full handshake per request
  resumed    a new connection resuming the last TLS session per request
  keepalive  20 requests per connection
  pipelined  5 requests in one write, 4 writes per connection
  chunked    a 64 KiB chunked upload, checked by its sha256
  websocket  an upgrade, 5 echoed frames (up to 64 KiB), a close
  large      an 8 MiB upload and an 8 MiB download, checked
  tlsrelay   a mode: tls listener to the upstream's TCP echo, 64 KiB echoed
  tcprelay   a mode: tcp listener to the same echo, 64 KiB echoed
  h2         an HTTP/2 connection (ALPN h2, python3-h2): 5 rounds of 10 concurrent streams,
             GETs and 64 KiB POSTs checked by their sha256, translated to the HTTP/1.1 upstream
  gated      a listener with require_allowed_subject: served while the client's subject is
             listed, refused while it is not (these are the test's own policy changes and are
             counted apart; a request served while unlisted is a failure)
Changes, while that runs:
  every 10 s  scripts/rotate-credentials.sh installs the next of three server pairs
  every 15 s  a tenant is added to the CA store's index.yml, or the last one removed (so one
              is added and removed every 30 s)
  every 10 s  the gated client's subject is PUT or DELETEd through the admin API (plus an
              unrelated subject every time, so the state file is rewritten on every change)

Every --report-every seconds (default 60) a line: requests and failures in the window, p50 and
p99 latency of a request (a connection of 20 keep-alive requests counts as 20 requests of a 20th
of its time; an 8 MiB upload and download as two), p99 of a request on a new connection with a
full handshake, RSS and open descriptors. At the end: totals, failures by kind with
examples, RSS and descriptors after warm-up (the first report) and at the end, p99 per window.
Exit status 1 when a failure that the policy changes do not explain happened, or certgate died.
"""

import argparse
import base64
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import run as H  # noqa: E402  the integration harness: PKI, config writer, HTTP reader
import test_scripts  # noqa: E402  three server leaves for rotations

MIB = 1 << 20
HOST = "127.0.0.1"


class Stats:
    def __init__(self, window):
        self.lock = threading.Lock()
        self.window = window
        self.start = time.time()
        self.lat = {}  # window index -> [seconds]
        self.count = {}  # kind -> ok count
        self.fail = {}  # kind -> [reasons]
        self.policy = {"refused_unlisted": 0, "refused_near_change": 0}
        self.resumed = [0, 0]  # reused, offered

    def ok(self, kind, seconds, n=1):
        """|n| requests took |seconds| in all: each counts with seconds / n."""
        w = int((time.time() - self.start) // self.window)
        with self.lock:
            self.count[kind] = self.count.get(kind, 0) + n
            self.lat.setdefault(w, []).append((kind, seconds / n))

    def failed(self, kind, why):
        with self.lock:
            self.fail.setdefault(kind, []).append("%.0fs %s" % (time.time() - self.start, why))

    def total(self):
        with self.lock:
            return sum(self.count.values()), sum(len(v) for v in self.fail.values())


def pct(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


def proc_rss_kib(pid):
    return H.rss_kib(pid)


def proc_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


# ---------------------------------------------------------------------------------------------
# clients (no socket is kept beyond its exchange)

def tls_conn(port, ctx, session=None, timeout=30):
    raw = socket.create_connection((HOST, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    except BaseException:
        raw.close()
        raise


def get(path):
    return ("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path).encode()


def expect_200(resp, what):
    if resp.status != 200:
        raise H.Failure("%s: status %d" % (what, resp.status))


class Traffic:
    def __init__(self, soak):
        self.s = soak
        self.stats = soak.stats
        self.ctx = H.client_ctx("ecdsa")
        self.session = None

    def loop(self, kind, fn):
        while not self.s.stop.is_set():
            t0 = time.time()
            try:
                n = fn()
                self.stats.ok(kind, time.time() - t0, n or 1)
            except (H.Failure, OSError, ssl.SSLError, ValueError) as e:
                if not self.s.stop.is_set():
                    self.stats.failed(kind, "%s: %s" % (type(e).__name__, str(e)[:160]))
                    time.sleep(0.2)

    def full(self):
        s = tls_conn(self.s.port("https"), self.ctx)
        try:
            s.sendall(get("/echo?full"))
            expect_200(H.read_response(H.Reader(s)), "full")
        finally:
            s.close()

    def resumed(self):
        s = tls_conn(self.s.port("https"), self.ctx, session=self.session)
        try:
            s.sendall(get("/echo?resumed"))
            expect_200(H.read_response(H.Reader(s)), "resumed")
            with self.stats.lock:
                self.stats.resumed[1] += 1
                self.stats.resumed[0] += 1 if s.session_reused else 0
            self.session = s.session
        finally:
            s.close()

    def keepalive(self):
        s = tls_conn(self.s.port("https"), self.ctx)
        r = H.Reader(s)
        try:
            for i in range(20):
                s.sendall(get("/echo?ka=%d" % i))
                expect_200(H.read_response(r), "keep-alive request %d" % i)
        finally:
            s.close()
        return 20

    def pipelined(self):
        s = tls_conn(self.s.port("https"), self.ctx)
        r = H.Reader(s)
        try:
            for _ in range(4):
                s.sendall(b"".join(get("/echo?p=%d" % i) for i in range(5)))
                for i in range(5):
                    resp = H.read_response(r)
                    expect_200(resp, "pipelined %d" % i)
                    if b"/echo?p=%d " % i not in resp.body:
                        raise H.Failure("pipelined answer %d out of order" % i)
        finally:
            s.close()
        return 20

    def chunked(self):
        s = tls_conn(self.s.port("https"), self.ctx)
        try:
            data = os.urandom(64 * 1024)
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c)
                            for c in (data[i:i + 5000] for i in range(0, len(data), 5000)))
            s.sendall(b"POST /body HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked"
                      b"\r\n\r\n" + body + b"0\r\n\r\n")
            resp = H.read_response(H.Reader(s))
            expect_200(resp, "chunked")
            if hashlib.sha256(data).hexdigest().encode() not in resp.body:
                raise H.Failure("chunked upload changed on the way")
        finally:
            s.close()

    def websocket(self):
        s = tls_conn(self.s.port("https"), self.ctx)
        r = H.Reader(s)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(("GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
                       "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                       "Sec-WebSocket-Key: %s\r\n\r\n" % key).encode())
            status, _, _, _ = H.read_head(r)
            if status != 101:
                raise H.Failure("websocket: status %d" % status)
            for n in (5, 300, 4000, 20000, 65536):
                payload = os.urandom(n)
                s.sendall(H.ws_frame(2, payload, os.urandom(4)))
                op, got = H.ws_read(r)
                if op != 2 or got != payload:
                    raise H.Failure("websocket echo mismatch (%d bytes)" % n)
            s.sendall(H.ws_frame(8, b"\x03\xe8", os.urandom(4)))
            H.ws_read(r)
        finally:
            s.close()
        return 5

    def large(self):
        n = 8 * MIB
        s = tls_conn(self.s.port("https"), self.ctx)
        r = H.Reader(s)
        try:
            block = os.urandom(256 * 1024)
            h = hashlib.sha256()
            s.sendall(b"POST /body HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % n)
            for _ in range(n // len(block)):
                s.sendall(block)
                h.update(block)
            resp = H.read_response(r, "POST")
            expect_200(resp, "large upload")
            if h.hexdigest().encode() not in resp.body:
                raise H.Failure("large upload changed on the way")
            s.sendall(get("/download?bytes=%d" % n))
            status, _, headers, _ = H.read_head(r)
            got = [0]
            H.read_body(r, status, headers, sink=lambda d: got.__setitem__(0, got[0] + len(d)))
            if status != 200 or got[0] != n:
                raise H.Failure("large download: %d, %d bytes" % (status, got[0]))
        finally:
            s.close()
        return 2

    def h2(self):
        """5 rounds of 10 concurrent streams on one HTTP/2 connection: GETs and 64 KiB POSTs."""
        import h2.config
        import h2.connection
        import h2.events
        ctx = H.client_ctx("ecdsa")
        ctx.set_alpn_protocols(["h2"])
        s = tls_conn(self.s.port("https"), ctx)
        try:
            if s.selected_alpn_protocol() != "h2":
                raise H.Failure("ALPN chose %r" % s.selected_alpn_protocol())
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.increment_flow_control_window(4 * MIB)
            s.sendall(conn.data_to_send())
            n = 0
            for rnd in range(5):
                want = {}
                for i in range(10):
                    sid = conn.get_next_available_stream_id()
                    path = "/echo?h2=%d.%d" % (rnd, i)
                    body = os.urandom(64 * 1024) if i % 3 == 0 else None
                    method = "POST" if body else "GET"
                    conn.send_headers(sid, [(":method", method), (":scheme", "https"),
                                            (":authority", "localhost"),
                                            (":path", "/body" if body else path)],
                                      end_stream=body is None)
                    want[sid] = [body, b"", None, False]
                    s.sendall(conn.data_to_send())
                pending_body = {sid: w[0] for sid, w in want.items() if w[0] is not None}
                while not all(w[3] for w in want.values()):
                    for sid, rest in list(pending_body.items()):
                        room = min(conn.local_flow_control_window(sid),
                                   conn.max_outbound_frame_size, len(rest))
                        if room > 0:
                            conn.send_data(sid, rest[:room], end_stream=room == len(rest))
                            rest = rest[room:]
                        if rest:
                            pending_body[sid] = rest
                        else:
                            pending_body.pop(sid)
                    s.sendall(conn.data_to_send())
                    data = s.recv(256 * 1024)
                    if not data:
                        raise H.Failure("h2: connection closed")
                    for ev in conn.receive_data(data):
                        if isinstance(ev, h2.events.ResponseReceived):
                            want[ev.stream_id][2] = dict(ev.headers).get(b":status")
                        elif isinstance(ev, h2.events.DataReceived):
                            want[ev.stream_id][1] += ev.data
                            conn.acknowledge_received_data(ev.flow_controlled_length,
                                                           ev.stream_id)
                        elif isinstance(ev, h2.events.StreamEnded):
                            want[ev.stream_id][3] = True
                        elif isinstance(ev, (h2.events.StreamReset,
                                             h2.events.ConnectionTerminated)):
                            raise H.Failure("h2: %r" % ev)
                    s.sendall(conn.data_to_send())
                for sid, (body, got, status, _) in want.items():
                    if status != b"200":
                        raise H.Failure("h2 stream %d: status %r" % (sid, status))
                    if body is not None and hashlib.sha256(body).hexdigest().encode() not in got:
                        raise H.Failure("h2 upload changed on the way")
                n += len(want)
            return n
        finally:
            s.close()

    def relay(self, name, tls):
        payload = os.urandom(64 * 1024)
        if tls:
            s = tls_conn(self.s.port(name), self.ctx)
        else:
            s = socket.create_connection((HOST, self.s.port(name)), timeout=30)
        r = H.Reader(s)
        try:
            s.sendall(payload)
            if r.read_exact(len(payload)) != payload:
                raise H.Failure("%s echo mismatch (%s)" % (name, r.err or "short"))
        finally:
            s.close()

    def gated(self):
        """Counted apart: refusals are expected while the subject is not listed."""
        listed, changed = self.s.allow_state()
        t0 = time.time()
        res, resp = H.attempt(_NoTrack, self.s.port("gated"), self.ctx, get("/echo?gated"))
        served = res == "ok" and resp.status == 200
        listed2, changed2 = self.s.allow_state()
        # a change under way or made while this ran (once the admin call has answered, every
        # new handshake and request sees the new set: no slack after that)
        near = changed is None or changed2 is None or changed2 != changed
        if served and (listed or near):
            self.stats.ok("gated", time.time() - t0)
        elif served:
            self.stats.failed("gated", "served while its subject was not listed")
        elif not listed and not listed2:
            with self.stats.lock:
                self.stats.policy["refused_unlisted"] += 1
        elif near:
            with self.stats.lock:
                self.stats.policy["refused_near_change"] += 1
        else:
            self.stats.failed("gated", "refused while listed: %s %r" % (res, resp))
        time.sleep(0.05)


class _NoTrack:
    """A stand-in for run.py's per-test context: attempt() appends its sockets here."""
    socks = []


class _DropList(list):
    def append(self, s):  # sockets of H.attempt are closed by the garbage collector
        pass


_NoTrack.socks = _DropList()


# ---------------------------------------------------------------------------------------------
# the run

class Soak:
    def __init__(self, args):
        self.args = args
        self.stop = threading.Event()
        self.stats = Stats(args.report_every)
        self.allow_lock = threading.Lock()
        self.listed = False
        self.changing = False
        self.allow_changed = 0.0
        self.procs = []

    def port(self, name):
        return self.ports[name]

    def allow_state(self):
        """(listed, when it last changed); the time is None while a change is under way."""
        with self.allow_lock:
            return self.listed, None if self.changing else self.allow_changed

    # --- set-up ------------------------------------------------------------------------------

    def setup(self):
        H.Opts.binary = os.path.abspath(self.args.binary)
        H.Opts.tmp = tempfile.mkdtemp(prefix="certgate-soak-")
        self.tmp = H.Opts.tmp
        if not H.make_pki():
            raise SystemExit("pki.sh failed")
        test_scripts.register(H)
        self.leaves = test_scripts.leaves()
        pki = H.Opts.pki["ecdsa"]
        self.creds = os.path.join(self.tmp, "creds")
        os.makedirs(self.creds)
        self.pairs = []
        for i, (chain, key, _) in enumerate(self.leaves):
            c = os.path.join(self.tmp, "pair%d.crt" % i)
            k = os.path.join(self.tmp, "pair%d.key" % i)
            with open(c, "w") as f:
                f.write(chain)
            with open(k, "w") as f:
                f.write(key)
            self.pairs.append((c, k))
        self.rotate(0)
        self.store = os.path.join(self.tmp, "ca-store")
        shutil.copytree(os.path.join(pki, "ca-store"), self.store)
        self.tenants = []
        self.write_index()
        self.allow_file = os.path.join(self.tmp, "allowed-subjects.json")
        up_log = open(os.path.join(self.tmp, "upstream.stderr"), "wb")
        self.up = subprocess.Popen([sys.executable, H.UPSTREAM, "--http", "0", "--tcp", "0"],
                                   stdout=subprocess.PIPE, stderr=up_log)
        self.procs.append(self.up)
        m = re.match(r"READY http=(\d+) tcp=(\d+)", self.up.stdout.readline().decode())
        if not m:
            raise SystemExit("upstream did not start")
        http_up, tcp_up = "%s:%s" % (HOST, m.group(1)), "%s:%s" % (HOST, m.group(2))
        listeners = [
            H.listener("https", "http", http_up, client_auth="require"),
            H.listener("gated", "http", http_up, client_auth="require",
                       require_allowed_subject=True),
            H.listener("tlsrelay", "tls", tcp_up, client_auth="require"),
            H.listener("tcprelay", "tcp", tcp_up),
        ]
        cfg = {
            "workers": 2,
            "log": {"level": "warn", "access": False},
            "credentials": {"dir": self.creds, "cert": "tls.crt", "key": "tls.key"},
            "ca_store": {"dir": self.store},
            "access": {"allowed_subjects_file": self.allow_file},
            "admin": {"address": "%s:%d" % (HOST, H.free_port())},
            "limits": {"handshake_timeout": "10s", "drain_timeout": "5s"},
            "listeners": listeners,
        }
        self.ports = {l["name"]: int(l["address"].rsplit(":", 1)[1]) for l in listeners}
        self.admin_port = int(cfg["admin"]["address"].rsplit(":", 1)[1])
        self.cfg_path = os.path.join(self.tmp, "certgate.yaml")
        with open(self.cfg_path, "w") as f:
            f.write(H.yaml_dump(cfg) + "\n")
        self.cg_err = os.path.join(self.tmp, "certgate.stderr")
        self.cg = subprocess.Popen([H.Opts.binary, "run", "-c", self.cfg_path],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=open(self.cg_err, "wb"))
        self.procs.append(self.cg)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                if H.http_get(self.admin_port, "/ready", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("certgate not ready: %s" % open(self.cg_err).read()[-500:])
        p = subprocess.run(["openssl", "x509", "-in", os.path.join(pki, "client.crt"), "-noout",
                            "-subject", "-nameopt", "RFC2253"], capture_output=True, text=True)
        self.subject = p.stdout.strip().split("=", 1)[1]

    def rotate(self, i):
        c, k = self.pairs[i % len(self.pairs)]
        p = subprocess.run([os.path.join(HERE, "rotate-credentials.sh"), "--cert", c, "--key", k,
                            "--dir", self.creds], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            self.stats.failed("rotation", p.stderr.strip()[-200:])

    def write_index(self):
        lines = ["common:", "- common.pem"]
        if self.tenants:
            lines.append("tenants:")
            for name in self.tenants:
                lines += ["  %s:" % name, "  - ca.pem"]
        tmp = os.path.join(self.store, "index.yml.tmp")
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.rename(tmp, os.path.join(self.store, "index.yml"))

    def admin(self, method, path):
        s = socket.create_connection((HOST, self.admin_port), timeout=10)
        try:
            s.sendall(("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % (method, path)).encode())
            return H.read_response(H.Reader(s), method).status
        finally:
            s.close()

    # --- changes -----------------------------------------------------------------------------

    def changes(self):
        n_tenant = 0
        rot = 1
        allow_on = True
        path = "/allowed-client-certificate-subjects/"
        other = path + urllib.parse.quote("CN=soak-other,O=certgate soak", safe="")
        mine = path + urllib.parse.quote(self.subject, safe="")
        start = time.time()
        tick = 0
        while not self.stop.wait(max(0.0, start + (tick + 1) * 5 - time.time())):
            tick += 1
            try:
                if tick % 2 == 0:  # every 10 s
                    self.rotate(rot)
                    rot += 1
                    with self.allow_lock:  # a change under way: either answer is right
                        self.changing = True
                    st = self.admin("PUT" if allow_on else "DELETE", mine)
                    st2 = self.admin("DELETE" if allow_on else "PUT", other)
                    if st != 204 or st2 not in (204, 404):
                        self.stats.failed("allowlist", "admin answered %d, %d" % (st, st2))
                    with self.allow_lock:
                        self.listed = allow_on
                        self.allow_changed = time.time()
                        self.changing = False
                    allow_on = not allow_on
                if tick % 3 == 0:  # every 15 s: add, then remove
                    if self.tenants:
                        gone = self.tenants.pop()
                        self.write_index()
                        shutil.rmtree(os.path.join(self.store, "tenants", gone), True)
                    else:
                        n_tenant += 1
                        name = "soak%d" % n_tenant
                        d = os.path.join(self.store, "tenants", name)
                        os.makedirs(d)
                        shutil.copy(os.path.join(self.store, "common", "common.pem"),
                                    os.path.join(d, "ca.pem"))
                        self.tenants.append(name)
                        self.write_index()
            except (OSError, H.Failure) as e:
                self.stats.failed("changes", "%s: %s" % (type(e).__name__, e))

    # --- report ------------------------------------------------------------------------------

    def sample(self):
        return proc_rss_kib(self.cg.pid), proc_fds(self.cg.pid)

    def reporter(self):
        w = self.args.report_every
        start = self.stats.start
        i = 0
        self.samples = []
        last_total = (0, 0)
        while not self.stop.wait(max(0.0, start + (i + 1) * w - time.time())):
            rss, fds = self.sample()
            tot = self.stats.total()
            with self.stats.lock:
                lat = [x for _, x in self.stats.lat.get(i, [])]
                full = [x for k, x in self.stats.lat.get(i, []) if k == "full"]
            line = ("%5ds  requests %6d  failures %d  p50 %5.1f ms  p99 %5.1f ms  p99 full "
                    "handshake %5.1f ms  RSS %5.1f MiB  fds %d"
                    % ((i + 1) * w, tot[0] - last_total[0], tot[1] - last_total[1],
                       pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000, pct(full, 0.99) * 1000,
                       rss / 1024.0, fds))
            print(line, flush=True)
            self.samples.append((i, tot[0] - last_total[0], tot[1] - last_total[1],
                                 pct(lat, 0.99) * 1000, rss, fds, pct(full, 0.99) * 1000))
            last_total = tot
            i += 1
            if self.cg.poll() is not None:
                print("certgate exited with %s" % self.cg.returncode, flush=True)
                self.stop.set()

    def gated_loop(self, tr):
        while not self.stop.is_set():
            tr.gated()

    def run(self):
        self.setup()
        print("soak: %s, %d s, pid %d, in %s" % (H.Opts.binary, self.args.seconds, self.cg.pid,
                                                self.tmp), flush=True)
        tr = Traffic(self)
        plan = [("full", tr.full), ("resumed", tr.resumed), ("keepalive", tr.keepalive),
                ("pipelined", tr.pipelined), ("chunked", tr.chunked),
                ("websocket", tr.websocket), ("large", tr.large),
                ("tlsrelay", lambda: tr.relay("tlsrelay", True)),
                ("tcprelay", lambda: tr.relay("tcprelay", False)), ("h2", tr.h2)]
        threads = [threading.Thread(target=tr.loop, args=(k, f), daemon=True) for k, f in plan]
        threads.append(threading.Thread(target=self.gated_loop, args=(tr,), daemon=True))
        threads.append(threading.Thread(target=self.changes, daemon=True))
        threads.append(threading.Thread(target=self.reporter, daemon=True))
        start_rss, start_fds = self.sample()
        for th in threads:
            th.start()
        self.stop.wait(self.args.seconds)
        self.stop.set()
        for th in threads:
            th.join(60)
        end_rss, end_fds = self.sample()
        alive = self.cg.poll() is None
        return self.summary(alive, (start_rss, start_fds), (end_rss, end_fds))

    def summary(self, alive, start, end):
        st = self.stats
        reqs, fails = st.total()
        print("\n== soak summary: %s, %d s, %s" % (time.strftime("%Y-%m-%d %H:%M UTC",
                                                                 time.gmtime()),
                                                   self.args.seconds, os.uname().machine))
        print("requests %d (%s)" % (reqs, ", ".join("%s %d" % kv
                                                    for kv in sorted(st.count.items()))))
        print("failures %d%s" % (fails, "" if not fails else " (%s)" % ", ".join(
            "%s %d" % (k, len(v)) for k, v in sorted(st.fail.items()))))
        for k, v in sorted(st.fail.items()):
            for why in v[:3]:
                print("  %s: %s" % (k, why))
        print("gated listener, the test's own policy: refused while unlisted %d, refused during "
              "a change %d" % (st.policy["refused_unlisted"],
                                      st.policy["refused_near_change"]))
        print("resumed handshakes: %d of %d offered sessions"
              % tuple(st.resumed))
        if self.samples:
            warm = self.samples[0]
            print("after warm-up (%ds): RSS %.1f MiB, fds %d; at the end: RSS %.1f MiB, fds %d; "
                  "max RSS %.1f MiB" % (self.args.report_every, warm[4] / 1024.0, warm[5],
                                        end[0] / 1024.0, end[1],
                                        max(s[4] for s in self.samples) / 1024.0))
        print("at start: RSS %.1f MiB, fds %d" % (start[0] / 1024.0, start[1]))
        print("p99 per %ds window (ms): %s" % (self.args.report_every, " ".join(
            "%.1f" % s[3] for s in self.samples)))
        print("p99 of a full-handshake request per window (ms): %s" % " ".join(
            "%.1f" % s[6] for s in self.samples))
        if alive:
            try:
                body = H.http_get(self.admin_port, "/metrics", timeout=10)[1].decode()
                rel = re.findall(r'certgate_reload_total\{source="(\w+)",result="(\w+)"\} (\d+)',
                                 body)
                print("reloads: %s" % ", ".join("%s/%s %s" % r for r in rel if r[2] != "0"))
            except OSError as e:
                print("reloads: /metrics: %s" % e)
        rc = 0
        if not alive:
            print("certgate DIED: %s" % open(self.cg_err).read()[-500:])
            rc = 1
        else:
            self.cg.send_signal(signal.SIGTERM)
            try:
                code = self.cg.wait(30)
                print("certgate exit status after SIGTERM: %d" % code)
                rc = rc or (code != 0)
            except subprocess.TimeoutExpired:
                print("certgate did not exit within 30 s of SIGTERM")
                rc = 1
        errs = [ln for ln in open(self.cg_err, errors="replace") if '"level":"error"' in ln]
        print("certgate error lines: %d%s" % (len(errs), "" if not errs else ": " + errs[0][:300]))
        return 1 if (fails or rc) else 0

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description="certgate soak (issue 14)")
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "certgate"))
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", "1800")))
    ap.add_argument("--report-every", type=int, default=60)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    soak = Soak(args)
    try:
        return soak.run()
    finally:
        soak.cleanup()


if __name__ == "__main__":
    sys.exit(main())
