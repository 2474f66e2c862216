#!/usr/bin/env python3
"""test_faults.py: fault injection (issue 14 item 3), in the group `fault.`: a descriptor table
that runs full (accepting pauses and resumes), upstreams that reset mid-response, answer with a
malformed or oversized head or never read a request body, a client that never reads a large
response, a full disk under the allowlist state file (a real 64 KiB tmpfs), SIGHUP storms while
requests run, and SIGTERM during a reload. Every test talks to 127.0.0.1 only, is bounded in
time and asserts on outcomes (what the client got, what certgate still serves, how much memory it
took), not on how fast things happened. run.py calls register(itself)."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

H = None  # run.py's module, set by register()
MIB = 1 << 20


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


# ---------------------------------------------------------------------------------------------
# a scripted upstream: what upstream.py cannot do (bad heads, resets after part of a body, a
# request body nobody reads)

class RawUpstream:
    """An HTTP/1.1 upstream in this process. Connections are numbered from 1; every request head
    read is passed to answer(conn, n, path), which writes whatever it wants and returns False to
    end the connection. The default answer to any other path is 200 with body "conn=N"."""

    def __init__(self, t, answer):
        self.answer = answer
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((H.HOST, 0))
        self.lsock.listen(128)
        self.addr = "%s:%d" % (H.HOST, self.lsock.getsockname()[1])
        self.conns = []
        self.paths = []  # (conn number, path) per request head received
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        t.procs.append(self)
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(c)
                n = len(self.conns)
            threading.Thread(target=self.serve, args=(c, n), daemon=True).start()

    def serve(self, c, n):
        buf = b""
        try:
            while not self.stopping.is_set():
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                    continue
                head, buf = buf[:i + 4], buf[i + 4:]
                path = head.split(b" ", 2)[1].decode("latin-1")
                with self.lock:
                    self.paths.append((n, path))
                if not self.answer(self, c, n, path):
                    return
        except OSError:
            return
        finally:
            if not self.stopping.is_set():
                try:
                    c.close()
                except OSError:
                    pass

    @staticmethod
    def ok(c, n):
        body = b"conn=%d" % n
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        return True

    def stop(self):
        self.stopping.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass
        return []


def raw_env(t, answer, limits=None):
    up = RawUpstream(t, answer)
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.addr, client_auth="require")],
                    limits=limits)
    return up, cg, H.client_ctx("ecdsa")


def rst_close(c):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()


def served_ok(t, cg, ctx, what):
    """A new client connection gets 200 /ok: certgate still serves."""
    res, resp = H.attempt(t, cg.port(), ctx, H.get_req("/ok"))
    check(res == "ok" and resp.status == 200, "%s: then a new request got %s %r"
          % (what, res, resp))
    return resp


def metric(cg, name, labels=""):
    """The sum of the samples of |name| whose labels contain |labels|."""
    status, body = H.http_get(cg.admin_port, "/metrics", timeout=T(5))
    check(status == 200, "/metrics: %d" % status)
    total = 0.0
    for line in body.decode().split("\n"):
        m = re.match(r"%s(\{[^}]*\})? (\S+)$" % re.escape(name), line)
        if m and labels in (m.group(1) or ""):
            total += float(m.group(2))
    return total


def open_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


# ---------------------------------------------------------------------------------------------
# upstream faults

def t_reset_mid_response(t):
    """The pooled upstream connection is reset after the head and part of the body: the client
    sees its response cut short (a clean close, never another response's bytes), certgate keeps
    serving, and the next request goes over a new upstream connection."""
    def answer(up, c, n, path):
        if path == "/resetmid":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 4096)
            time.sleep(0.05)
            rst_close(c)
            return False
        return up.ok(c, n)
    up, cg, ctx = raw_env(t, answer)
    s = H.tls_connect(t, cg.port(), ctx)
    s.sendall(H.get_req("/ok"))
    r = H.Reader(s)
    first = H.read_response(r)
    check(first.status == 200 and first.body == b"conn=1", "first request: %r" % first)
    s.sendall(H.get_req("/resetmid"))
    status, _, headers, _ = H.read_head(r)
    check(status == 200, "reset response: head %d" % status)
    got = [0]
    try:
        H.read_body(r, status, headers, sink=lambda d: got.__setitem__(0, got[0] + len(d)))
        cut = False
    except H.Failure:
        cut = True
    check(cut and got[0] < 1000000, "a reset response came whole (%d bytes)" % got[0])
    check(r.at_eof(T(5)), "the client connection stayed open after a cut response")
    seen = {p for _, p in up.paths}
    check("/resetmid" in seen, "the upstream never saw /resetmid: %r" % up.paths)
    for i in range(3):
        resp = served_ok(t, cg, ctx, "after the reset")
        check(resp.body != b"conn=1", "request %d went over the reset connection" % i)


def t_reset_in_head(t):
    """A reset in the middle of the response head: 502, and certgate keeps serving."""
    def answer(up, c, n, path):
        if path == "/resethead":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
            time.sleep(0.05)
            rst_close(c)
            return False
        return up.ok(c, n)
    up, cg, ctx = raw_env(t, answer)
    resp = H.https_request(t, cg.port(), ctx, H.get_req("/resethead"))
    check(resp.status == 502, "status %d, want 502" % resp.status)
    served_ok(t, cg, ctx, "after a reset head")


BAD_HEADS = {
    "status": b"HTTP/1.1 2x0 Weird\r\nContent-Length: 0\r\n\r\n",
    "notHTTP": b"SSH-2.0-OpenSSH_9.2\r\nfoo: bar\r\n\r\n",
    "nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "bareLF": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "nocolon": b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
    "binary": bytes(range(256)) + b"\r\n\r\n",
}


def t_malformed_head(t):
    """Each malformed response head is a 502 (never copied to the client) and that upstream
    connection is not used again."""
    def answer(up, c, n, path):
        kind = path.lstrip("/")
        if kind in BAD_HEADS:
            c.sendall(BAD_HEADS[kind])
            return True  # keep it open: certgate must be the one that drops it
        return up.ok(c, n)
    up, cg, ctx = raw_env(t, answer)
    for kind in BAD_HEADS:
        s = H.tls_connect(t, cg.port(), ctx)
        s.sendall(H.get_req("/" + kind))
        r = H.Reader(s)
        resp = H.read_response(r)
        check(resp.status == 502, "%s: status %d, want 502" % (kind, resp.status))
        check(BAD_HEADS[kind][:12] not in resp.head + resp.body, "%s: copied to the client" % kind)
        bad_conn = [n for n, p in up.paths if p == "/" + kind][-1]
        s = H.tls_connect(t, cg.port(), ctx)
        s.sendall(H.get_req("/ok"))
        ok = H.read_response(H.Reader(s))
        check(ok.status == 200, "%s: then %r" % (kind, ok))
        check(ok.body != b"conn=%d" % bad_conn, "%s: its upstream connection was reused" % kind)


def t_oversized_head(t):
    """A response head of 1 MiB (one huge header, or ten thousand small ones) is a 502 with
    bounded memory; certgate keeps serving."""
    def answer(up, c, n, path):
        if path == "/hugeheader":
            head = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MIB + b"\r\nContent-Length: 0\r\n\r\n"
        elif path == "/manyheaders":
            head = (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(10000))
                    + b"Content-Length: 0\r\n\r\n")
        elif path == "/endless":
            c.sendall(b"HTTP/1.1 200 OK\r\n")
            line = b"X-More: " + b"b" * 1000 + b"\r\n"
            deadline = time.time() + T(10)
            while time.time() < deadline:
                c.sendall(line * 64)  # until certgate gives up on it and closes
            return False
        else:
            return up.ok(c, n)
        c.sendall(head)
        return True
    up, cg, ctx = raw_env(t, answer)
    w = H.RssWatch(cg.pid)
    for path in ("/hugeheader", "/manyheaders", "/endless"):
        resp = H.https_request(t, cg.port(), ctx, H.get_req(path))
        check(resp.status == 502, "%s: status %d, want 502" % (path, resp.status))
        served_ok(t, cg, ctx, path)
    peak, _ = w.stop()
    check(peak < H.rss_limit(), "RSS grew by %.1f MiB" % peak)


def t_upstream_never_reads(t):
    """The upstream reads the request head and then never reads the 64 MiB body: certgate
    stops reading from the client (its memory stays bounded), the upstream timeouts end the
    exchange, and other clients are served meanwhile and after."""
    hold = threading.Event()

    def answer(up, c, n, path):
        if path == "/sink":
            hold.wait(T(60))  # reads nothing more; the kernel buffers fill up
            return False
        return up.ok(c, n)
    up, cg, ctx = raw_env(t, answer, limits={"upstream_response_timeout": "2s",
                                            "idle_timeout": "2s"})
    served_ok(t, cg, ctx, "warm-up")
    n = 64 * MIB
    w = H.RssWatch(cg.pid)
    s = H.tls_connect(t, cg.port(), ctx)
    s.settimeout(None)  # blocking writes: a timed-out TLS write cannot be resumed cleanly
    s.sendall(b"POST /sink HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % n)
    state = {"sent": 0, "err": None}

    def sender():
        block = b"z" * (256 * 1024)
        try:
            while state["sent"] < n:
                s.sendall(block)
                state["sent"] += len(block)
        except (OSError, ssl.SSLError) as e:
            state["err"] = e
    th = threading.Thread(target=sender, daemon=True)
    th.start()
    time.sleep(T(1))
    served_ok(t, cg, ctx, "while one upstream does not read")
    th.join(T(30))
    alive = th.is_alive()
    hold.set()
    peak, _ = w.stop()
    if alive:
        s.close()  # unblocks the sender
        th.join(5)
    check(not alive, "the exchange was still going after %.0fs (%d bytes sent)"
          % (T(30) + T(1), state["sent"]))
    check(peak < H.rss_limit(), "RSS grew by %.1f MiB with %.1f MiB sent"
          % (peak, state["sent"] / MIB))
    if state["err"] is None:
        # certgate read (and dropped) the whole body after its timeout: the answer is 504
        s.settimeout(T(10))
        resp = H.read_response(H.Reader(s), "POST")
        check(resp.status in (502, 504), "status %d after a body nobody read" % resp.status)
    served_ok(t, cg, ctx, "after an upstream that never read")


def t_client_never_reads(t):
    """A client asks for 1 GiB and never reads: certgate stops reading from the upstream (its
    memory stays bounded), idle_timeout ends the exchange, and other clients are served."""
    up, cg, ctx = H.http_env(t, limits={"idle_timeout": "2s"}, record_max=4096)
    served_ok(t, cg, ctx, "warm-up")
    w = H.RssWatch(cg.pid)
    s = H.tls_connect(t, cg.port(), ctx)
    s.sendall(H.get_req("/download?bytes=%d" % (1024 * MIB)))
    time.sleep(T(1.5))
    served_ok(t, cg, ctx, "while a client does not read")
    deadline = time.time() + T(20)
    while time.time() < deadline and metric(cg, "certgate_connections_active") > 0:
        time.sleep(0.2)
    peak, _ = w.stop()
    check(metric(cg, "certgate_connections_active") == 0, "the stalled exchange is still open "
          "after %.0fs" % T(20))
    check(peak < H.rss_limit(), "RSS grew by %.1f MiB" % peak)
    served_ok(t, cg, ctx, "after a client that never read")


def t_uploads_never_stall(t):
    """8 MiB uploads one after the other, two clients at once, for a while: none stalls. (The
    soak found one in a few hundred waiting forever: the last round of conn_event_end read the
    client into a full uout that nothing wrote, since a full uout stops reading the client and
    an upstream that is not blocked is not polled for writing.)"""
    up, cg, ctx = H.http_env(t, record_max=4096)
    n = 8 * MIB
    block = os.urandom(256 * 1024)
    digest = hashlib.sha256(block * (n // len(block))).hexdigest().encode()
    stop = time.time() + T(15)
    done = [0, 0]
    errors = []

    def client(k):
        while time.time() < stop and not errors:
            raw = socket.create_connection((H.HOST, cg.port()), timeout=T(5))
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            try:
                s.sendall(b"POST /body HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d"
                          b"\r\n\r\n" % n)
                for _ in range(n // len(block)):
                    s.sendall(block)
                resp = H.read_response(H.Reader(s), "POST")
                if resp.status != 200 or digest not in resp.body:
                    errors.append("upload %d: %r" % (done[k], resp))
                done[k] += 1
            except (OSError, ssl.SSLError, H.Failure) as e:
                errors.append("upload %d of client %d stalled or failed: %s" % (done[k], k, e))
            finally:
                s.close()
    ths = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(2)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(T(40))
    check(not errors, "%s (after %d uploads)" % (errors[0] if errors else "", sum(done)))
    check(sum(done) > 0, "no upload finished")


# ---------------------------------------------------------------------------------------------
# resources: descriptors and disk

def t_nofile(t):
    """The descriptor table runs full (RLIMIT_NOFILE lowered with prlimit while it runs): accept
    pauses (said once in the log, no crash, no busy loop), the connection waiting in the backlog
    is served once descriptors free up, and everything works afterwards."""
    up, cg, ctx = H.http_env(t, record_max=4096)
    served_ok(t, cg, ctx, "warm-up")
    limit = open_fds(cg.pid) + 8
    p = subprocess.run(["prlimit", "--pid", str(cg.pid), "--nofile=%d:%d" % (limit, limit)],
                       capture_output=True, text=True, timeout=10)
    check(p.returncode == 0, "prlimit: %s" % p.stderr.strip())
    held = []
    for _ in range(12):  # more than fit
        s = socket.create_connection((H.HOST, cg.port()), timeout=T(5))
        t.socks.append(s)
        held.append(s)
    deadline = time.time() + T(10)
    while time.time() < deadline and "accept_paused" not in cg.stderr():
        time.sleep(0.05)
    check("accept_paused" in cg.stderr(), "no accept_paused with a full descriptor table: %s"
          % cg.tail(3))
    check(cg.proc.poll() is None, "certgate died: %s" % cg.tail(3))
    result = {}

    def waiting():
        result["r"] = H.attempt(t, cg.port(), ctx, H.get_req("/echo?waited"))
    th = threading.Thread(target=waiting, daemon=True)
    th.start()
    time.sleep(T(0.5))
    with open("/proc/%d/stat" % cg.pid) as f:
        ticks0 = sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])
    time.sleep(1)
    with open("/proc/%d/stat" % cg.pid) as f:
        ticks1 = sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])
    hz = os.sysconf("SC_CLK_TCK")
    check((ticks1 - ticks0) / hz < 0.5, "certgate spun at %.0f%% CPU while accept was paused"
          % (100.0 * (ticks1 - ticks0) / hz))
    for s in held:
        s.close()
    th.join(T(20))
    check("r" in result, "the waiting client was never answered")
    res, resp = result["r"]
    check(res == "ok" and resp.status == 200, "the waiting client got %s %r" % (res, resp))
    for _ in range(5):
        served_ok(t, cg, ctx, "after descriptors were freed")
    paused = [ln for ln in H.log_lines(cg) if "accept_paused" in ln]
    check(len(paused) <= 4, "accept_paused logged %d times in one episode" % len(paused))


class Tmpfs:
    """A small tmpfs mounted for one test; unmounted at cleanup."""

    def __init__(self, t, path, size):
        os.makedirs(path, exist_ok=True)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs",
                            path], capture_output=True, text=True, timeout=10)
        check(p.returncode == 0, "cannot mount a tmpfs (the test needs root): %s"
              % p.stderr.strip())
        self.path = path
        t.procs.insert(0, self)  # unmounted after certgate stopped

    def stop(self):
        subprocess.run(["umount", "-l", self.path], capture_output=True, timeout=10)
        return []


def t_disk_full(t):
    """The allowlist state file lives on a 64 KiB tmpfs that is then filled up: a PUT fails
    with 500 and a reason, the old file survives intact with no temporary file left beside it,
    the set in use is unchanged; once space is free the next PUT works."""
    al = __import__("test_allowlist")
    al.register(H)
    fs = Tmpfs(t, os.path.join(t.dir, "small"), "64k")
    path = os.path.join(fs.path, "allowed-subjects.json")
    up = t.upstream(record_max=4096)
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http, client_auth="require")],
                    extra={"access": {"allowed_subjects_file": path}})
    first = "CN=first,O=Org"
    code, body = al.admin(cg.admin_port, "PUT", al.subject_path(first))
    check(code == 204, "PUT with space: %d %r" % (code, body))
    with open(path, "rb") as f:
        before = f.read()
    filler = os.path.join(fs.path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    second = "CN=second,O=Org,OU=" + "x" * 3000  # more than any slack left in a page
    code, body = al.admin(cg.admin_port, "PUT", al.subject_path(second))
    check(code == 500, "PUT on a full disk: %d %r, want 500" % (code, body))
    check(b"No space left" in body, "the 500 does not say why: %r" % body)
    with open(path, "rb") as f:
        check(f.read() == before, "the state file changed on a full disk")
    check(json.loads(before) == [first], "old state: %r" % before)
    left = [n for n in os.listdir(fs.path) if n not in ("filler", "allowed-subjects.json")]
    check(not left, "left beside the state file: %r" % left)
    code, body = al.admin(cg.admin_port, "GET", al.PATH)
    check(code == 200 and json.loads(body) == [first], "the set in use changed: %r" % body)
    code, _ = al.admin(cg.admin_port, "DELETE", al.subject_path(first))
    check(code == 500, "DELETE on a full disk: %d, want 500" % code)
    code, body = al.admin(cg.admin_port, "GET", al.PATH)
    check(json.loads(body) == [first], "a failed DELETE changed the set: %r" % body)
    os.unlink(filler)
    code, body = al.admin(cg.admin_port, "PUT", al.subject_path(second))
    check(code == 204, "PUT once space is free: %d %r" % (code, body))
    with open(path) as f:
        check(len(json.load(f)) == 2, "state file after the PUT: %r" % open(path).read()[:200])


# ---------------------------------------------------------------------------------------------
# signals

class Load:
    """Clients sending requests in a loop on new and keep-alive connections; counts outcomes."""

    def __init__(self, t, cg, ctx, threads=3):
        self.t, self.cg, self.ctx = t, cg, ctx
        self.stop_flag = threading.Event()
        self.ok = 0
        self.failed = []
        self.lock = threading.Lock()
        self.ths = [threading.Thread(target=self.run, args=(i,), daemon=True)
                    for i in range(threads)]
        for th in self.ths:
            th.start()

    def run(self, i):
        while not self.stop_flag.is_set():
            s = None
            try:
                s = H.tls_connect(self.t, self.cg.port(), self.ctx, timeout=10)
                r = H.Reader(s)
                for j in range(1 + i * 3):  # thread 0: a connection per request
                    s.sendall(H.get_req("/echo?t%d" % i))
                    resp = H.read_response(r)
                    with self.lock:
                        if resp.status == 200:
                            self.ok += 1
                        else:
                            self.failed.append("status %d" % resp.status)
                    if (resp.header("Connection") or "").lower() == "close":
                        break
            except (H.Failure, OSError, ssl.SSLError) as e:
                with self.lock:
                    self.failed.append("%s: %s" % (type(e).__name__, e))
            finally:
                if s is not None:
                    s.close()  # as a real client does: a lingering server waits for it

    def stop(self):
        self.stop_flag.set()
        for th in self.ths:
            th.join(T(15))
        return self.ok, self.failed


def big_store(t, tenants):
    """A CA store with |tenants| tenants (each with its own copy of the common CA, with a
    different first line so that no two files are alike): reloads that take a while."""
    store = os.path.join(tempfile.mkdtemp(prefix="store-", dir=t.dir), "ca-store")
    shutil.copytree(os.path.join(H.Opts.pki["ecdsa"], "ca-store"), store)
    with open(os.path.join(store, "common", "common.pem")) as f:
        pem = f.read()
    idx = ["common:", "- common.pem", "tenants:"]
    for i in range(tenants):
        d = os.path.join(store, "tenants", "t%d" % i)
        os.makedirs(d)
        with open(os.path.join(d, "ca.pem"), "w") as f:
            f.write("tenant t%d\n%s" % (i, pem))
        idx += ["  t%d:" % i, "  - ca.pem"]
    with open(os.path.join(store, "index.yml"), "w") as f:
        f.write("\n".join(idx) + "\n")
    return store


def log_event(line):
    try:
        return json.loads(line).get("event")
    except ValueError:
        return None


def signal_reloads(cg):
    """The duration_ms of every reload by signal, from the log."""
    out = []
    for line in H.log_lines(cg):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") in ("reloaded", "reload_failed") and e.get("source") == "signal":
            out.append(e.get("duration_ms") or 0)
    return out


def storm_env(t, store=None):
    up = t.upstream(record_max=4096)
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http, client_auth="require")],
                    extra={"ca_store": {"dir": store or big_store(t, 2000)}})
    return up, cg, H.client_ctx("ecdsa")


def t_sighup_storm(t):
    """300 SIGHUPs within about a second while clients send requests: no request fails, no
    crash, no reload fails; SIGHUPs that come during a reload share the next one, so reloading
    stops with the storm instead of working off a backlog of one reload per signal: reloads
    run one after the other, so all but the last two started before the last signal and their
    durations add up to no more than the storm's length. The next SIGHUP still reloads, and
    SIGTERM then stops certgate with status 0."""
    up, cg, ctx = storm_env(t)
    load = Load(t, cg, ctx)
    time.sleep(T(0.3))
    sent = 300
    start = time.time()
    for _ in range(sent):
        os.kill(cg.pid, signal.SIGHUP)
        time.sleep(0.003)
    storm_ms = (time.time() - start) * 1000
    settled, last, deadline = False, -1, time.time() + T(60)
    while time.time() < deadline:
        n = metric(cg, "certgate_reload_total", 'source="signal"')
        if n == last:
            settled = True
            break
        last = n
        time.sleep(T(0.5))
    ok, failed = load.stop()
    check(cg.proc.poll() is None, "certgate died: %s" % cg.tail(3))
    check(not failed, "%d of %d requests failed during the storm: %s"
          % (len(failed), ok + len(failed), failed[:3]))
    check(ok > 0, "no request was served during the storm")
    check(settled, "still reloading %.0fs after the storm (%d reloads)" % (T(60), last))
    check(1 <= last <= sent, "%d reloads for %d SIGHUPs" % (last, sent))
    bad = metric(cg, "certgate_reload_total", 'result="failed"')
    check(bad == 0, "%d reloads failed" % bad)
    durs = signal_reloads(cg)
    check(len(durs) == last, "%d reload lines for %d reloads" % (len(durs), last))
    busy = sum(durs)
    allowed = storm_ms + 2 * max(durs) + 500
    check(busy <= allowed, "%d reloads took %d ms in all for a storm of %.0f ms: a backlog of "
          "one reload per signal" % (len(durs), busy, storm_ms))
    os.kill(cg.pid, signal.SIGHUP)
    deadline = time.time() + T(10)
    while time.time() < deadline and metric(cg, "certgate_reload_total",
                                             'source="signal"') <= last:
        time.sleep(0.1)
    check(metric(cg, "certgate_reload_total", 'source="signal"') > last,
          "a SIGHUP after the storm did not reload")
    cg.signal(signal.SIGTERM)
    check(cg.wait(T(15)) == 0, "exit status %r after SIGTERM" % cg.rc)


def post_reload(cg):
    try:
        s = socket.create_connection((H.HOST, cg.admin_port), timeout=T(5))
        s.sendall(b"POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        s.recv(4096)
        s.close()
    except OSError:
        pass


def t_sigterm_during_reload(t):
    """SIGTERM arrives while reloads triggered by SIGHUP (and by the admin API) run, with
    clients connected: certgate stops in bounded time with status 0 and logs "stopped", every
    time."""
    store = big_store(t, 2000)
    for delay in (0.0, 0.002, 0.01, 0.03):
        up, cg, ctx = storm_env(t, store)
        load = Load(t, cg, ctx, threads=2)
        time.sleep(T(0.2))
        for _ in range(20):
            os.kill(cg.pid, signal.SIGHUP)
        threading.Thread(target=post_reload, args=(cg,), daemon=True).start()
        time.sleep(delay)
        cg.signal(signal.SIGTERM)
        for _ in range(20):  # more reloads asked for while it stops
            try:
                os.kill(cg.pid, signal.SIGHUP)
            except ProcessLookupError:
                break
        rc = cg.wait(T(20))
        load.stop()
        check(rc == 0, "delay %.3f: exit status %r after SIGTERM during a reload: %s"
              % (delay, rc, cg.tail(3)))
        events = [e for e in map(log_event, H.log_lines(cg)) if e != "access"]
        check(events[-1:] == ["stopped"], "delay %.3f: events %r, want the last to be stopped"
              % (delay, events[-6:]))


TESTS = [
    ("fault.upstream_reset_mid_response", t_reset_mid_response),
    ("fault.upstream_reset_in_head_502", t_reset_in_head),
    ("fault.upstream_malformed_head_502", t_malformed_head),
    ("fault.upstream_oversized_head_502", t_oversized_head),
    ("fault.upstream_never_reads_body", t_upstream_never_reads),
    ("fault.client_never_reads_response", t_client_never_reads),
    ("fault.uploads_never_stall", t_uploads_never_stall),
    ("fault.nofile_accept_pauses_and_recovers", t_nofile),
    ("fault.disk_full_allowlist_state_survives", t_disk_full),
    ("fault.sighup_storm", t_sighup_storm),
    ("fault.sigterm_during_reload", t_sigterm_during_reload),
]


def register(harness):
    global H
    H = harness
    H.add_tests(TESTS)
