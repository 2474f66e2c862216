#!/usr/bin/env python3
"""test_ocsp.py: revocation.ocsp (SECURITY 7), in the group `ocsp.`, against a real OCSP
responder (`openssl ocsp -index ... -port ...`): good and revoked leaves, soft_fail and
hard_fail with the responder down, hanging (the event loop keeps serving other connections
while the query waits) or answering with a forged signature, a leaf without an OCSP URL, the
answer cache, and OCSP off. A PKI of its own: root -> intermediate -> leaves whose Authority
Information Access names a responder on 127.0.0.1. run.py calls register(itself)."""

import os
import socket
import ssl
import subprocess
import threading
import time

H = None  # run.py's module, set by register()


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


def openssl(args, cwd):
    p = subprocess.run(["openssl"] + args, cwd=cwd, capture_output=True, text=True, timeout=30)
    check(p.returncode == 0, "openssl %s: %s" % (args[0], p.stderr[-300:]))
    return p.stdout


class Proc:
    """A subprocess stopped at cleanup; its output goes to |log|."""

    def __init__(self, t, args, cwd, log):
        self.log = log
        with open(log, "wb") as out:
            self.p = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT)
        t.procs.append(self)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return []


class Silent:
    """A TCP server that accepts and never answers (a hanging responder)."""

    def __init__(self, t):
        self.sock = socket.socket()
        self.sock.bind((H.HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopped = False
        threading.Thread(target=self.run, daemon=True).start()
        t.procs.append(self)

    def run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def stop(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()
        return []


EXT = """
[ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
[leaf]
basicConstraints = CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
%s
"""


class Pki:
    """root -> intermediate -> leaves; an index.txt for `openssl ocsp`."""

    def __init__(self, t):
        self.d = os.path.join(t.dir, "ocsp-pki")
        os.makedirs(self.d)
        self.index = []
        self.serial = 0x1000
        self.make("root", "OCSP Test Root", None, "ca")
        self.make("intermediate", "OCSP Test Intermediate", "root", "ca")
        self.make("other", "Forger", None, "ca")  # an unrelated CA that signs forged answers
        store = os.path.join(self.d, "store")
        os.makedirs(os.path.join(store, "common"))
        with open(os.path.join(self.d, "root.crt")) as f, \
                open(os.path.join(store, "common", "root.pem"), "w") as g:
            g.write(f.read())
        with open(os.path.join(store, "index.yml"), "w") as f:
            f.write("common:\n- root.pem\n")
        self.store = store

    def path(self, name):
        return os.path.join(self.d, name)

    def make(self, name, cn, issuer, kind, aia_port=None, aia_host="127.0.0.1"):
        self.serial += 1
        openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name + ".key"],
                self.d)
        openssl(["req", "-new", "-key", name + ".key", "-subj", "/CN=%s/O=certgate ocsp test" % cn,
                 "-out", name + ".csr"], self.d)
        aia = ("authorityInfoAccess = OCSP;URI:http://%s:%d/" % (aia_host, aia_port)
               if aia_port else "")
        with open(self.path(name + ".ext"), "w") as f:
            f.write(EXT % aia)
        signer = issuer or name
        args = ["x509", "-req", "-in", name + ".csr", "-days", "30", "-sha256",
                "-set_serial", "0x%X" % self.serial, "-extfile", name + ".ext",
                "-extensions", kind, "-out", name + ".crt"]
        if issuer:
            args += ["-CA", signer + ".crt", "-CAkey", signer + ".key"]
        else:
            args += ["-signkey", name + ".key"]
        openssl(args, self.d)
        if kind == "leaf":
            with open(self.path(name + ".crt")) as a, open(self.path("intermediate.crt")) as b, \
                    open(self.path(name + "-chain.crt"), "w") as c:
                c.write(a.read() + b.read())

    def leaf(self, name, aia_port, revoked=False, listed=True, aia_host="127.0.0.1"):
        self.make(name, name, "intermediate", "leaf", aia_port, aia_host)
        if listed:
            exp = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() + 30 * 86400))
            rev = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() - 3600)) if revoked else ""
            self.index.append("%s\t%s\t%s\t%X\tunknown\t/CN=%s/O=certgate ocsp test"
                              % ("R" if revoked else "V", exp, rev, self.serial, name))
            with open(self.path("index.txt"), "w") as f:
                f.write("\n".join(self.index) + "\n")

    def revoke(self, name):
        """Marks leaf |name| revoked in index.txt (openssl ocsp reads it once: restart it)."""
        rev = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() - 60))
        out = []
        for line in self.index:
            f = line.split("\t")
            if f[5].startswith("/CN=%s/" % name):
                f[0], f[2] = "R", rev
            out.append("\t".join(f))
        self.index = out
        with open(self.path("index.txt"), "w") as f:
            f.write("\n".join(self.index) + "\n")

    def ctx(self, name):
        pki = H.Opts.pki["ecdsa"]
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=os.path.join(pki, "root.crt"))
        ctx.load_cert_chain(self.path(name + "-chain.crt"), self.path(name + ".key"))
        return ctx


def responder(t, pki, port, signer="intermediate"):
    """`openssl ocsp` answering from pki's index on |port|, signing as |signer|."""
    log = pki.path("responder-%d-%d.log" % (port, len(t.procs)))
    p = Proc(t, ["openssl", "ocsp", "-index", "index.txt", "-port", str(port), "-rsigner",
                 signer + ".crt", "-rkey", signer + ".key", "-CA", "intermediate.crt",
                 "-ndays", "1"], pki.d, log)
    p.port = port
    # Not a probe connection: the responder serves one connection at a time, and an empty one
    # keeps it waiting. It says when it listens.
    deadline = time.time() + T(10)
    while time.time() < deadline:
        with open(log, "rb") as f:
            if b"waiting for OCSP client connections" in f.read():
                return
        check(p.p.poll() is None, "openssl ocsp exited: %r" % open(log, "rb").read()[-300:])
        time.sleep(0.05)
    raise H.Failure("openssl ocsp did not start on port %d" % port)


class Forwarder:
    """Accepts on (host, port) and relays each connection to 127.0.0.1:|to|."""

    def __init__(self, t, host, port, to):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.to = to
        self.accepted = 0
        self.stopped = False
        threading.Thread(target=self.run, daemon=True).start()
        t.procs.append(self)

    def pipe(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    b.shutdown(socket.SHUT_WR)
                    return
                b.sendall(d)
        except OSError:
            return

    def run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            u = socket.create_connection((H.HOST, self.to), timeout=T(10))
            threading.Thread(target=self.pipe, args=(c, u), daemon=True).start()
            threading.Thread(target=self.pipe, args=(u, c), daemon=True).start()

    def stop(self):
        self.stopped = True
        self.sock.close()
        return []


def start(t, pki, mode, timeout="1s", cache_max="1h"):
    up = t.upstream(record_max=4096)
    extra = {"ca_store": {"dir": pki.store},
             "revocation": {"ocsp": mode, "ocsp_timeout": timeout, "ocsp_cache_max": cache_max}}
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http, client_auth="require")],
                    extra=extra)
    return up, cg


def outcome(t, cg, ctx):
    res, info = H.attempt(t, cg.port(), ctx)
    if res == "ok":
        return "ok" if info.status == 200 else "status %d" % info.status
    return res


def t_good_and_revoked(t):
    """hard_fail with a working responder: the good leaf is served, the revoked one refused with
    a reason that says so."""
    port = H.free_port()
    pki = Pki(t)
    pki.leaf("good", port)
    pki.leaf("revoked", port, revoked=True)
    responder(t, pki, port)
    up, cg = start(t, pki, "hard_fail")
    check(outcome(t, cg, pki.ctx("good")) == "ok", "good leaf not served: %s" % cg.tail(2))
    check(outcome(t, cg, pki.ctx("revoked")) == "refused", "revoked leaf served")
    check("revoked at" in cg.stderr() and "OCSP" in cg.stderr(),
          "the refusal does not say revoked (OCSP): %s" % cg.tail(2))
    status, body = H.http_get(cg.admin_port, "/metrics")
    for result in ("good", "revoked"):
        line = 'certgate_ocsp_queries_total{result="%s"} 1' % result
        check(line.encode() in body, "metrics lack %s" % line)


def t_off(t):
    """revocation.ocsp off: the revoked leaf is served (what refuses it above is OCSP)."""
    port = H.free_port()
    pki = Pki(t)
    pki.leaf("revoked", port, revoked=True)
    up, cg = start(t, pki, "off")
    check(outcome(t, cg, pki.ctx("revoked")) == "ok", "revoked leaf refused with OCSP off")


def t_responder_down(t):
    """Nothing listens at the responder's address: soft_fail serves and logs ocsp_soft_fail;
    hard_fail refuses, naming the mode."""
    port = H.free_port()
    pki = Pki(t)
    pki.leaf("good", port)
    up, cg = start(t, pki, "soft_fail")
    check(outcome(t, cg, pki.ctx("good")) == "ok", "soft_fail refused: %s" % cg.tail(2))
    check("ocsp_soft_fail" in cg.stderr(), "no ocsp_soft_fail log: %s" % cg.tail(2))
    up2, cg2 = start(t, pki, "hard_fail")
    check(outcome(t, cg2, pki.ctx("good")) == "refused", "hard_fail served without an answer")
    check("hard_fail" in cg2.stderr(), "the refusal does not name hard_fail: %s" % cg2.tail(2))


def t_second_address(t):
    """The responder's name resolves to two addresses and nothing listens on the first
    (a responder with an unreachable IPv6 address beside a working IPv4 one, say): the fetch
    goes on to the second and the revoked leaf is refused, the good one served. certgate runs
    in a user and mount namespace where a hosts file of the test's is bound over /etc/hosts;
    getaddrinfo puts 127.0.0.1 (nothing on the port) before 127.0.0.2 (a relay to the
    responder)."""
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    check(probe.returncode == 0, "this test needs `unshare -rm` (user and mount namespaces): %s"
          % probe.stderr.strip())
    port, real = H.free_port(), H.free_port()
    pki = Pki(t)
    name = "ocsp-two-addresses.test"
    pki.leaf("good", port, aia_host=name)
    pki.leaf("revoked", port, revoked=True, aia_host=name)
    responder(t, pki, real)
    relay = Forwarder(t, "127.0.0.2", port, real)
    hosts = pki.path("hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n127.0.0.1 %s\n127.0.0.2 %s\n" % (name, name))
    order = subprocess.run(["unshare", "-rm", "sh", "-c",
                            'mount --bind "$0" /etc/hosts && exec getent ahostsv4 "$1"',
                            hosts, name], capture_output=True, text=True)
    check(order.stdout.split()[:1] == ["127.0.0.1"],
          "the hosts file does not put the dead address first: %r" % order.stdout)
    saved = list(H.Opts.wrapper)
    H.Opts.wrapper = ["unshare", "-rm", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
                      hosts] + saved
    try:
        up, cg = start(t, pki, "hard_fail", timeout="5s")
    finally:
        H.Opts.wrapper = saved
    check(outcome(t, cg, pki.ctx("good")) == "ok",
          "good leaf not served through the second address: %s" % cg.tail(3))
    check(outcome(t, cg, pki.ctx("revoked")) == "refused", "revoked leaf served")
    check("revoked at" in cg.stderr(), "the refusal does not say revoked: %s" % cg.tail(2))
    check(relay.accepted >= 2, "the second address was not used (%d)" % relay.accepted)


def t_hanging_responder_does_not_block(t):
    """A responder that never answers: the handshake waits ocsp_timeout (3 s) and is then refused
    (hard_fail); meanwhile an established keep-alive connection is served without delay, so the
    query does not block the event loop."""
    good_port = H.free_port()
    silent = Silent(t)
    pki = Pki(t)
    pki.leaf("good", good_port)
    pki.leaf("slow", silent.port)
    responder(t, pki, good_port)
    up, cg = start(t, pki, "hard_fail", timeout="3s")
    s = H.tls_connect(t, cg.port(), pki.ctx("good"))
    s.sendall(H.get_req("/echo?first"))
    check(H.read_response(H.Reader(s)).status == 200, "good leaf not served")
    res = {}

    def slow():
        t0 = time.time()
        res["r"] = outcome(t, cg, pki.ctx("slow"))
        res["s"] = time.time() - t0
    th = threading.Thread(target=slow, daemon=True)
    th.start()
    time.sleep(0.3)  # the slow handshake's query is now waiting
    worst = 0.0
    r = H.Reader(s)
    for i in range(5):
        t0 = time.time()
        s.sendall(H.get_req("/echo?during%d" % i))
        check(H.read_response(r).status == 200, "request %d during the query" % i)
        worst = max(worst, time.time() - t0)
    check("r" not in res, "the slow handshake ended before its query could time out: %r" % res)
    th.join(T(10))
    check(res.get("r") == "refused", "slow leaf under hard_fail: %r" % res)
    check(res["s"] >= 2.5, "refused after %.2fs, before ocsp_timeout" % res["s"])
    check(worst < 1.0, "a request on another connection took %.2fs during the query" % worst)


def t_connection_gone_during_query(t):
    """The handshake timeout (1 s) fires while the OCSP query (timeout 3 s) still waits: the
    connection closes, its query is cancelled with it (the ASan run checks that nothing is
    used after it is freed), and the next client is served normally."""
    good_port = H.free_port()
    silent = Silent(t)
    pki = Pki(t)
    pki.leaf("good", good_port)
    pki.leaf("slow", silent.port)
    responder(t, pki, good_port)
    up = t.upstream(record_max=4096)
    extra = {"ca_store": {"dir": pki.store},
             "revocation": {"ocsp": "hard_fail", "ocsp_timeout": "3s"}}
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http, client_auth="require")],
                    extra=extra, limits={"handshake_timeout": "1s"})
    t0 = time.time()
    check(outcome(t, cg, pki.ctx("slow")) != "ok", "served without an OCSP answer")
    took = time.time() - t0
    check(took < T(2.5), "the handshake timeout did not end the wait (%.1fs)" % took)
    time.sleep(3)  # past the query's own deadline: a cancelled query must stay silent
    check(outcome(t, cg, pki.ctx("good")) == "ok", "the next client was not served")


def t_cache(t):
    """An answer is cached: with the responder gone, a new handshake of the same leaf is still
    served under hard_fail (until nextUpdate or ocsp_cache_max)."""
    port = H.free_port()
    pki = Pki(t)
    pki.leaf("good", port)
    responder(t, pki, port)
    up, cg = start(t, pki, "hard_fail")
    check(outcome(t, cg, pki.ctx("good")) == "ok", "good leaf not served")
    for p in t.procs:
        if isinstance(p, Proc):
            p.stop()
    check(outcome(t, cg, pki.ctx("good")) == "ok", "the cached answer was not used")


def t_no_aia(t):
    """A leaf that names no OCSP responder: soft_fail serves it, hard_fail refuses it."""
    pki = Pki(t)
    pki.leaf("noaia", None)
    up, cg = start(t, pki, "soft_fail")
    check(outcome(t, cg, pki.ctx("noaia")) == "ok", "soft_fail refused a leaf without AIA")
    up2, cg2 = start(t, pki, "hard_fail")
    check(outcome(t, cg2, pki.ctx("noaia")) == "refused", "hard_fail served a leaf without AIA")
    check("names no http:// OCSP responder" in cg2.stderr(), "reason: %s" % cg2.tail(2))


def t_forged(t):
    """An answer signed by a key that is neither the issuer nor a responder it delegated to is
    no answer: hard_fail refuses (the log says the signature is the problem), even for a leaf
    the forger calls good."""
    port = H.free_port()
    pki = Pki(t)
    pki.leaf("good", port)
    responder(t, pki, port, signer="other")
    up, cg = start(t, pki, "hard_fail")
    check(outcome(t, cg, pki.ctx("good")) == "refused", "a forged OCSP answer was believed")
    check("hard_fail" in cg.stderr() and "OCSP responder certificate is not issued by" in
          cg.stderr(), "reason: %s" % cg.tail(2))


def t_resumed_session(t):
    """A resumed session skips the verify callback, yet OCSP still applies: while the answer is
    cached the session resumes; once the leaf is revoked and the cached answer has expired
    (ocsp_cache_max 1s), resuming the same session asks again and is refused."""
    port = H.free_port()
    pki = Pki(t)
    pki.leaf("flip", port)
    responder(t, pki, port)
    up, cg = start(t, pki, "hard_fail", cache_max="1s")
    ctx = pki.ctx("flip")
    s = H.tls_connect(t, cg.port(), ctx)
    s.sendall(H.get_req("/echo?full"))
    check(H.read_response(H.Reader(s)).status == 200, "full handshake not served")
    sess = s.session
    check(sess is not None, "no session")

    def resume(tag):
        raw = socket.create_connection((H.HOST, cg.port()), timeout=T(5))
        t.socks.append(raw)
        try:
            s2 = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
            t.socks.append(s2)
            reused = s2.session_reused
            s2.sendall(H.get_req("/echo?" + tag))
            return H.read_response(H.Reader(s2)).status, reused
        except (ssl.SSLError, OSError, H.Failure) as e:
            return "refused: %s" % e, None
    st, reused = resume("again")
    check(st == 200 and reused, "resumed session while good: %r reused=%s" % (st, reused))
    pki.revoke("flip")
    for p in t.procs:
        if isinstance(p, Proc):
            p.stop()
    responder(t, pki, port)
    time.sleep(1.5)  # the cached "good" expires (ocsp_cache_max 1s)
    st, reused = resume("revoked")
    check(st != 200, "a revoked leaf was served on a resumed session")
    seen = [r for r in up.requests() if b"GET /echo?revoked" in r]
    check(not seen, "the upstream saw the revoked leaf's request")
    check("revoked at" in cg.stderr(), "the refusal does not say revoked: %s" % cg.tail(2))


TESTS = [
    ("ocsp.good_served_revoked_refused", t_good_and_revoked),
    ("ocsp.off_does_not_ask", t_off),
    ("ocsp.responder_down_soft_and_hard", t_responder_down),
    ("ocsp.hanging_responder_times_out_loop_not_blocked", t_hanging_responder_does_not_block),
    ("ocsp.connection_gone_during_query", t_connection_gone_during_query),
    ("ocsp.answer_cached", t_cache),
    ("ocsp.resumed_session_checked", t_resumed_session),
    ("ocsp.leaf_without_responder_url", t_no_aia),
    ("ocsp.forged_answer_refused", t_forged),
    ("ocsp.responder_second_address", t_second_address),
]


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS)
