#!/usr/bin/env python3
"""test_review.py: defects found by a hostile review of this session's merges, in the group
`rev.`. run.py calls register(itself). Each test failed before its fix."""

import os
import signal
import socket
import threading
import time
import urllib.parse

H = None  # run.py's module, set by register()


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


class Scripted:
    """An upstream whose every connection runs |handler(sock, n)| in its own thread."""

    def __init__(self, t, handler):
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((H.HOST, 0))
        self.srv.listen(64)
        self.addr = "%s:%d" % (H.HOST, self.srv.getsockname()[1])
        self.handler = handler
        self.conns = 0
        self.stopped = False
        t.procs.append(self)
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while not self.stopped:
            try:
                s, _ = self.srv.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self.run, args=(s, self.conns), daemon=True).start()

    def run(self, s, n):
        try:
            self.handler(s, n)
        except OSError:
            pass
        finally:
            s.close()

    def stop(self):
        self.stopped = True
        self.srv.close()
        return []


def read_request(s, buf=b""):
    """Reads one bodiless request head from |s|; returns (head, rest) or (None, buf)."""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        if not data:
            return None, buf
        buf += data
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


TESTS = []


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS)


# --- the upstream pool: a pooled connection that spoke is never handed out ---------------------

def wait_stopped(pid, timeout=5):
    """Waits until every thread of |pid| is stopped: kill(SIGSTOP) returns before they are, and
    a thread still running could handle what the test sends next."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = []
        for task in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/stat" % (pid, task)) as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                pass
        if states and all(st in "tT" for st in states):
            return
        time.sleep(0.005)
    raise H.Failure("certgate did not stop")


def t_pool_stray_bytes_not_served(t):
    """An idle pooled upstream connection sends bytes (a buggy or hostile application writing
    past the Content-Length it announced) in the same event-loop round as another client's GET.
    The GET must not take that connection: the stray bytes would be read as its answer (response
    queue poisoning across clients). Event order is fixed with SIGSTOP: the client's request
    reaches certgate's socket first, then the stray bytes, then certgate runs."""
    stray, sent = threading.Event(), threading.Event()

    def handler(s, n):
        rest = b""
        while True:
            head, rest = read_request(s, rest)
            if head is None:
                return
            if b"/first" in head:
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
                stray.wait(T_WAIT)
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Stray: 1\r\n\r\nSTRAY!")
                sent.set()
            else:
                body = b"own answer %d" % n
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    up = Scripted(t, handler)
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.addr, client_auth="require")],
                    limits={"upstream_response_timeout": "3s"}, extra={"workers": 1})
    ctx = H.client_ctx("ecdsa")
    first = H.https_request(t, cg.port(), ctx, H.get_req("/first"))
    check(first.status == 200 and first.body == b"first", "first: %r" % first)
    victim = H.tls_connect(t, cg.port(), ctx)  # handshake done: idle, holding no upstream
    time.sleep(0.2)  # the first exchange's upstream connection is back in the pool
    cg.signal(signal.SIGSTOP)
    try:
        wait_stopped(cg.pid)
        victim.sendall(H.get_req("/victim"))
        time.sleep(0.1)
        stray.set()
        check(sent.wait(T_WAIT), "the upstream did not send its stray bytes")
        time.sleep(0.05)  # on loopback they are in certgate's socket buffer now
    finally:
        cg.signal(signal.SIGCONT)
    resp = H.read_response(H.Reader(victim))
    check(resp.header("X-Stray") is None and b"STRAY" not in resp.body,
          "the victim was served the pooled connection's stray bytes: %r" % resp)
    check(resp.status == 200 and resp.body.startswith(b"own answer"), "victim: %r" % resp)


# --- XFCC against a naive ',' splitter -------------------------------------------------------

COMMA_CNF = r"""[ req ]
distinguished_name = dn
prompt = no
[ dn ]
O = certgate demo
CN = x,By=spiffe://admin.example/root
[ ext ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
"""


def naive_elements(value):
    """A consumer that splits XFCC elements on ',' and keys on ';' without reading quotes."""
    return [[p.partition("=") for p in el.split(";")] for el in value.split(",")]


def t_xfcc_subject_comma_by(t):
    """A client whose subject holds ',By=': OpenSSL's RFC 2253 string writes it as '\\,By=',
    which no trigger byte of the value rule caught, so it was written raw inside Subject's
    quotes and a consumer splitting elements on ',' saw an element of the client's making
    starting 'By=spiffe://admin.example/root' (CONTRACT 5: no naive ',' splitter may see a key
    or element certgate did not write). The value must be in its encoded form."""
    X = mod("test_xfcc")
    cnf = os.path.join(X.xdir(), "comma-by.cnf")
    with open(cnf, "w") as f:
        f.write(COMMA_CNF)
    chain, key = X.sign_leaf("comma-by", [], "", config=cnf)
    up = t.upstream()
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http, client_auth="require",
                                         client_cert_header="xfcc")],
                    extra={"ca_store": {"dir": X.store_with(t, [])}})
    res, resp = H.attempt(t, cg.port(), X.ctx_with(chain, key), H.get_req("/echo"))
    check(res == "ok" and resp.status == 200, "%s %r" % (res, resp))
    reqs = up.wait_requests(1)
    value = [v for k, v in reqs[0]["headers"] if k.lower() == "x-forwarded-client-cert"][0]
    forged = [el for el in naive_elements(value)[1:] if el and el[0][0].strip() == "By"]
    check(not forged, "a naive ',' splitter reads an element the client wrote: %r in %r"
          % (forged, value[-160:]))
    # A quote-aware reader still gets the subject back (percent-decoded).
    subj = dict(X.xfcc_parse(value)[0])["Subject"]
    check(urllib.parse.unquote(subj) == X.subject_rfc2253(X.read_chain(chain)[0]),
          "Subject %r" % subj)


# --- admin API without a token: cross-site requests -------------------------------------------

def admin_raw(port, raw):
    s = socket.create_connection((H.HOST, port), timeout=5)
    try:
        s.sendall(raw)
        return H.read_response(H.Reader(s))
    finally:
        s.close()


def t_admin_cross_site_post_refused(t):
    """Without admin.token_file the Host check stops DNS rebinding, but a page on any web site
    can still make the visitor's browser POST to http://127.0.0.1:<admin>/reload: a form POST
    (text/plain) needs no CORS preflight and carries a loopback Host. The browser names the page
    in Origin; an operator's curl, a probe or Prometheus never sends one. Such a request is
    refused (403) and no reload happens."""
    up = t.upstream()
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http, client_auth="require")])
    port = cg.admin_port
    host = "127.0.0.1:%d" % port
    body = b"x=1"
    raw = ("POST /reload HTTP/1.1\r\nHost: %s\r\nOrigin: https://evil.example\r\n"
           "Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
           % (host, len(body))).encode() + body
    resp = admin_raw(port, raw)
    check(resp.status == 403, "a cross-site POST /reload answered %d %r" % (resp.status,
                                                                         resp.body[:80]))
    time.sleep(0.2)
    check(not [l for l in H.log_lines(cg) if '"admin"' in l and "reload" in l],
          "the cross-site POST reloaded")
    # The operator's own call (no Origin) still works.
    raw = ("POST /reload HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close"
           "\r\n\r\n" % host).encode()
    resp = admin_raw(port, raw)
    check(resp.status == 200, "POST /reload without Origin answered %d" % resp.status)


# --- certgate probe against a hostile /ready ----------------------------------------------------

def t_probe_status_line_strict(t):
    """certgate probe read the status with sscanf("HTTP/1.%*1[01] %3d "): whatever listens on
    the admin port (another process after a crash) answering "HTTP/1.1 2000" or
    "HTTP/1.1  200" was taken for a ready certgate (exit 0)."""
    answer = {}

    def handler(s, n):
        read_request(s)
        s.sendall(answer["line"] + b"\r\nContent-Length: 0\r\n\r\n")

    fake = Scripted(t, handler)
    cfg = H.make_config(t, "ecdsa", [H.listener("https", "http", "127.0.0.1:9")])
    cfg["admin"] = {"address": fake.addr}
    path = H.write_config(t, H.yaml_dump(cfg) + "\n")
    for line in (b"HTTP/1.1 2000 OK", b"HTTP/1.1  200 OK", b"HTTP/1.1 +200 OK",
                 b"HTTP/1.1 200OK"):
        answer["line"] = line
        p = H.run_cmd([H.Opts.binary, "probe", "-c", path], timeout=10)
        check(p.returncode == 1, "probe took %r for ready: exit %d" % (line, p.returncode))
    for line in (b"HTTP/1.1 200 OK", b"HTTP/1.0 200"):
        answer["line"] = line
        p = H.run_cmd([H.Opts.binary, "probe", "-c", path], timeout=10)
        check(p.returncode == 0, "probe refused %r: exit %d %s" % (line, p.returncode, p.stderr))


# --- the allowlist state file: links planted by another user ------------------------------------

def t_allowlist_foreign_symlink_not_followed(t):
    """The allowlist state file is written through symlinks (Kubernetes volumes), resolved with
    readlink, which the kernel's fs.protected_symlinks does not guard. With the state file in a
    shared sticky directory (/tmp-like), another user plants the link: certgate (root) replaced
    or created the file it names (here a victim file, as it could be /etc/... ). A link owned by
    neither root nor certgate's user is refused: the PUT fails (500), the victim is untouched."""
    import pwd
    if os.geteuid() != 0:
        return  # needs root to plant a link owned by another user
    nobody = pwd.getpwnam("nobody")
    shared = os.path.join(t.dir, "shared")
    os.makedirs(shared)
    os.chmod(shared, 0o1777)
    victim = os.path.join(t.dir, "victim.conf")
    with open(victim, "w") as f:
        f.write("precious\n")
    state = os.path.join(shared, "allowed-subjects.json")
    os.symlink(victim, state)
    os.lchown(state, nobody.pw_uid, nobody.pw_gid)
    up = t.upstream(record_max=4096)
    # The victim is no JSON array: start with a dangling link, plant the real one after.
    os.unlink(state)
    os.symlink(os.path.join(t.dir, "not-yet.json"), state)
    os.lchown(state, nobody.pw_uid, nobody.pw_gid)
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http)],
                    extra={"access": {"allowed_subjects_file": state}})
    created = os.path.join(t.dir, "not-yet.json")
    raw = ("PUT /allowed-client-certificate-subjects/CN%3Dgw HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()
    resp = admin_raw(cg.admin_port, raw)
    check(not os.path.exists(created), "certgate created the file a foreign link names")
    check(resp.status == 500, "PUT through a foreign link answered %d" % resp.status)
    os.unlink(state)
    os.symlink(victim, state)
    os.lchown(state, nobody.pw_uid, nobody.pw_gid)
    raw = raw.replace(b"CN%3Dgw", b"CN%3Dgw2")
    resp = admin_raw(cg.admin_port, raw)
    with open(victim) as f:
        check(f.read() == "precious\n", "certgate overwrote the file a foreign link names")
    check(resp.status == 500, "PUT through a foreign link answered %d" % resp.status)
    check(os.path.islink(state), "the planted link was replaced")


def mod(name):
    """Another test module of this directory, registered with the same harness."""
    m = __import__(name)
    m.register(H)
    return m


T_WAIT = 10

TESTS = [
    ("rev.pool_stray_bytes_not_served", t_pool_stray_bytes_not_served),
    ("rev.xfcc_subject_comma_by", t_xfcc_subject_comma_by),
    ("rev.admin_cross_site_post_refused", t_admin_cross_site_post_refused),
    ("rev.probe_status_line_strict", t_probe_status_line_strict),
    ("rev.allowlist_foreign_symlink_not_followed", t_allowlist_foreign_symlink_not_followed),
]


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS)
