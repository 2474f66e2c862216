#!/usr/bin/env python3
"""run.py: certgate's integration tests (issue #2), driven with real clients (curl,
openssl s_client, Python ssl) against a real build/certgate and the recording upstream in
upstream.py. Talks only to 127.0.0.1.

usage: tests/integration/run.py [--binary PATH] [--sanitizer] [--wrapper CMD] [-k SUBSTRING]...
                                [--list] [--keep] [-v]

Each test prints `ok NAME` or `FAIL NAME: REASON`; the last line is `N passed, N failed`;
the exit status is 1 when any test failed. Test names start with their group (cli., admin.,
mtls.ecdsa., mtls.rsa., http., ws., xfcc., big., smuggling., limits., upstream., relay.,
drain.), so `-k smuggling.` selects a group. The PKI (scripts/pki.sh, ECDSA and RSA) is made
once per run; every test starts its own upstream and certgate with a generated config on free
ports, and everything started is killed when the test ends.

--sanitizer: the binary is an ASan/UBSan build: timeouts are tripled and a test fails when a
certgate process it started wrote "ERROR: AddressSanitizer", "ERROR: LeakSanitizer" or
"runtime error:" to stderr.

--wrapper CMD: certgate run is started as CMD... certgate run -c FILE (CMD is split like a
shell word list). When CMD is valgrind, timeouts are multiplied by 10, valgrind writes its report
to valgrind-PID.log beside the certgate's config (--log-file is added) and a test fails when a
report does not say "ERROR SUMMARY: 0 errors".
"""

import sys
# Debian's python3-h2 and python3-grpcio live in dist-packages; a python3 from elsewhere on PATH
# (pyenv) does not look there. Appended: a module of the interpreter's own still wins.
if "/usr/lib/python3/dist-packages" not in sys.path:
    sys.path.append("/usr/lib/python3/dist-packages")
import argparse
import base64
import hashlib
import json
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
UPSTREAM = os.path.join(HERE, "upstream.py")
PKI_SH = os.path.join(ROOT, "scripts", "pki.sh")
HOST = "127.0.0.1"
MIB = 1 << 20
SAN_PATTERNS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


class Opts:
    binary = os.path.join(ROOT, "build", "certgate")
    sanitizer = False
    wrapper = []  # argv prefix for certgate run (e.g. valgrind and its options)
    valgrind = False
    scale = 1.0
    keep = False
    verbose = False
    pki = {}  # alg -> directory
    tmp = None


def T(seconds):
    """A timeout scaled for sanitizer builds."""
    return seconds * Opts.scale


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


# ---------------------------------------------------------------------------------------------
# registry

TESTS = []


def test(name):
    def deco(fn):
        TESTS.append((name, fn))
        return fn
    return deco


def add_tests(tests, wrap=None):
    """Adds a test module's (name, fn) pairs, each once however often the module registers;
    |wrap|, when given, turns each fn into the function to run."""
    known = {n for n, _ in TESTS}
    for name, fn in tests:
        if name not in known:
            TESTS.append((name, wrap(fn) if wrap else fn))


def test_each_alg(name):
    """Registers fn(t, alg) once per key algorithm: mtls.ecdsa.NAME, mtls.rsa.NAME."""
    group, _, rest = name.partition(".")

    def deco(fn):
        for alg in ("ecdsa", "rsa"):
            TESTS.append(("%s.%s.%s" % (group, alg, rest), lambda t, fn=fn, alg=alg: fn(t, alg)))
        return fn
    return deco


# ---------------------------------------------------------------------------------------------
# processes

def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL = _ephemeral_range()
_HANDED_OUT = set()


def free_port():
    """A port that is free now and that no outgoing connection will take before certgate binds
    it: picked below the kernel's ephemeral range (a port the kernel hands out with bind(0) can
    be taken by any connect() in between, which made "Address already in use" flakes), and
    never handed out twice in one run."""
    lo = 20000 if _EPHEMERAL[0] > 21000 else 1024
    hi = min(_EPHEMERAL[0] - 1, lo + 12000) if _EPHEMERAL[0] > 21000 else _EPHEMERAL[0] - 1
    for _ in range(200):
        port = random.randint(lo, hi)
        if port in _HANDED_OUT:
            continue
        s = socket.socket()
        try:
            s.bind((HOST, port))
        except OSError:
            continue
        finally:
            s.close()
        _HANDED_OUT.add(port)
        return port
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_cmd(args, timeout=10, **kw):
    """Runs a command with a timeout; returns CompletedProcess (text)."""
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=T(timeout),
                           errors="replace", **kw)
    except subprocess.TimeoutExpired:
        raise Failure("command timed out: %s" % " ".join(args[:3]))
    if Opts.sanitizer and args[0] == Opts.binary:
        for pat in SAN_PATTERNS:
            i = p.stderr.find(pat)
            if i >= 0:
                raise Failure("sanitizer: " + p.stderr[i:i + 300].replace("\n", " | "))
    return p


class Upstream:
    """upstream.py as a subprocess, recording into its own directory."""

    def __init__(self, t, record_max=MIB):
        self.dir = tempfile.mkdtemp(prefix="up-", dir=t.dir)
        self.rec = os.path.join(self.dir, "rec")
        self.proc = subprocess.Popen(
            [sys.executable, UPSTREAM, "--http", "0", "--tcp", "0", "--record", self.rec,
             "--record-max", str(record_max)],
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.dir, "stderr"), "wb"))
        t.procs.append(self)
        r, _, _ = select.select([self.proc.stdout], [], [], T(10))
        check(r, "upstream did not start")
        line = self.proc.stdout.readline().decode()
        m = re.match(r"READY http=(\d+) tcp=(\d+)", line)
        check(m, "upstream said %r" % line)
        self.http_port = int(m.group(1))
        self.tcp_port = int(m.group(2))
        self.http = "%s:%d" % (HOST, self.http_port)
        self.tcp = "%s:%d" % (HOST, self.tcp_port)

    def files(self, suffix):
        if not os.path.isdir(self.rec):
            return []
        names = [n for n in os.listdir(self.rec) if n.endswith(suffix)]
        names.sort(key=lambda n: (n.split("-")[0], int(re.findall(r"\d+", n)[0])))
        return [os.path.join(self.rec, n) for n in names]

    def received(self):
        """Every byte the upstream received, all connections concatenated."""
        out = b""
        for f in self.files(".bin"):
            with open(f, "rb") as fh:
                out += fh.read()
        return out

    def requests(self):
        out = []
        for f in self.files(".requests"):
            with open(f) as fh:
                out += [json.loads(line) for line in fh if line.strip()]
        return out

    def proxy_headers(self):
        out = []
        for f in self.files(".proxy.json"):
            with open(f) as fh:
                out.append(json.load(fh))
        return out

    def wait_requests(self, n, timeout=5):
        deadline = time.time() + T(timeout)
        while time.time() < deadline:
            reqs = self.requests()
            if len(reqs) >= n:
                return reqs
            time.sleep(0.02)
        return self.requests()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc.stdout.close()
        return []


def yaml_scalar(v):
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, int):
        return str(v)
    s = str(v)
    if re.fullmatch(r"[A-Za-z0-9_./:\-\[\]]+", s) and not s.startswith(("[", "-")):
        return s
    return json.dumps(s)


def yaml_dump(obj, indent=0):
    """A small block-style YAML writer for dicts, lists and scalars."""
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append("%s%s:" % (pad, k))
                lines.append(yaml_dump(v, indent + 2))
            elif isinstance(v, list):
                lines.append("%s%s: []" % (pad, k))
            else:
                lines.append("%s%s: %s" % (pad, k, yaml_scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                sub = yaml_dump(item, indent + 2).split("\n")
                sub[0] = pad + "- " + sub[0][indent + 2:]
                lines.extend(sub)
            else:
                lines.append("%s- %s" % (pad, yaml_scalar(item)))
    return "\n".join(lines)


def listener(name, mode, upstream, **kw):
    d = {"name": name, "address": "%s:%d" % (HOST, free_port()), "mode": mode,
         "upstream": upstream}
    d.update(kw)
    return d


def make_config(t, alg, listeners, limits=None, extra=None):
    pki = Opts.pki[alg]
    lim = {"handshake_timeout": "5s", "drain_timeout": "2s"}
    lim.update(limits or {})
    cfg = {
        "workers": 2,
        "log": {"level": "info", "access": True},
        "credentials": {"dir": pki, "cert": "server.crt", "key": "server.key"},
        "ca_store": {"dir": os.path.join(pki, "ca-store")},
        "access": {"allowed_subjects_file": os.path.join(t.dir, "allowed-subjects.json")},
        "admin": {"address": "%s:%d" % (HOST, free_port())},
        "limits": lim,
        "listeners": listeners,
    }
    for k, v in (extra or {}).items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return cfg


class Certgate:
    """A certgate process running a generated config."""

    def __init__(self, t, cfg, env=None):
        self.t = t
        self.cfg = cfg
        self.dir = tempfile.mkdtemp(prefix="cg-", dir=t.dir)
        self.path = os.path.join(self.dir, "certgate.yaml")
        with open(self.path, "w") as f:
            f.write(yaml_dump(cfg) + "\n")
        self.ports = {l["name"]: int(l["address"].rsplit(":", 1)[1]) for l in cfg["listeners"]}
        admin = cfg.get("admin", {}).get("address")
        self.admin_port = int(admin.rsplit(":", 1)[1]) if admin else None
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.rc = None
        penv = dict(os.environ)
        penv.update(env or {})
        wrap = list(Opts.wrapper)
        if Opts.valgrind:
            wrap.append("--log-file=" + os.path.join(self.dir, "valgrind-%p.log"))
        self.proc = subprocess.Popen(wrap + [Opts.binary, "run", "-c", self.path],
                                     stdin=subprocess.DEVNULL,
                                     stdout=open(os.path.join(self.dir, "stdout"), "wb"),
                                     stderr=open(self.stderr_path, "wb"), env=penv)
        t.procs.append(self)
        self.wait_ready()

    @property
    def pid(self):
        return self.proc.pid

    def port(self, name=None):
        if name is None:
            return next(iter(self.ports.values()))
        return self.ports[name]

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, n=6):
        lines = self.stderr().strip().split("\n")
        return " | ".join(lines[-n:])

    def wait_ready(self):
        deadline = time.time() + T(10)
        while time.time() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.rc = rc
                raise Failure("certgate exited with %d at start: %s" % (rc, self.tail()))
            admin_up = False
            if self.admin_port:
                try:
                    status, _ = http_get(self.admin_port, "/ready", timeout=1)
                    admin_up = True
                    if status == 200:
                        return
                except OSError:
                    pass
            if not admin_up and all(port_open(p) for p in self.ports.values()):
                return
            time.sleep(0.02)
        raise Failure("certgate not ready after %.0fs: %s" % (T(10), self.tail()))

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            self.rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.rc

    def stop(self):
        """Stops the process (SIGTERM, then SIGKILL); returns a list of problems found."""
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(T(6)) is None:
                self.proc.kill()
                self.wait(5)
                problems.append("warn: certgate did not exit within %.0fs of SIGTERM" % T(6))
        else:
            self.rc = self.proc.returncode
        if Opts.sanitizer:
            err = self.stderr()
            for pat in SAN_PATTERNS:
                i = err.find(pat)
                if i >= 0:
                    problems.append("sanitizer: " + err[i:i + 300].replace("\n", " | "))
                    break
        if Opts.valgrind:
            problems += valgrind_problems(self.dir)
        return problems


def valgrind_problems(directory):
    """What the valgrind reports in |directory| found: each must end with 0 errors."""
    out = []
    logs = [n for n in os.listdir(directory) if re.fullmatch(r"valgrind-\d+\.log", n)]
    if not logs:
        return ["valgrind: no report in %s" % directory]
    for name in logs:
        with open(os.path.join(directory, name), errors="replace") as f:
            text = f.read()
        m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
        if m is None:
            out.append("valgrind: %s has no ERROR SUMMARY (killed?)" % name)
        elif m.group(1) != "0":
            first = re.search(r"==\d+== (Invalid|Conditional|Syscall|Mismatched|\d+ bytes in"
                              r"|Source and destination|Argument)[^\n]*", text)
            out.append("valgrind: %s errors (%s)" % (m.group(1), first.group(0) if first else "?"))
            # the report goes with the test's directory: show its start now
            start = first.start() if first else 0
            sys.stderr.write("--- %s\n%s\n---\n" % (name, "\n".join(
                text[start:].split("\n")[:60])))
    return out


def port_open(port):
    try:
        s = socket.create_connection((HOST, port), timeout=0.5)
        s.close()
        return True
    except OSError:
        return False


class Ctx:
    """Per-test resources; cleanup() kills everything the test started."""

    def __init__(self, name):
        self.dir = tempfile.mkdtemp(prefix=re.sub(r"[^\w]", "_", name) + "-", dir=Opts.tmp)
        self.procs = []
        self.socks = []

    def upstream(self, **kw):
        return Upstream(self, **kw)

    def certgate(self, alg, listeners, limits=None, extra=None, env=None):
        return Certgate(self, make_config(self, alg, listeners, limits, extra), env=env)

    def cleanup(self):
        problems = []
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        for p in reversed(self.procs):
            try:
                problems += p.stop()
            except Exception as e:  # keep cleaning up
                problems.append("cleanup: %r" % e)
        if not Opts.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        return problems


# ---------------------------------------------------------------------------------------------
# clients

def client_ctx(alg, cert="client-chain.crt", key="client.key", cafile="root.crt"):
    pki = Opts.pki[alg]
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.path.join(pki, cafile))
    if cert:
        ctx.load_cert_chain(os.path.join(pki, cert), os.path.join(pki, key or "client.key"))
    return ctx


def tls_connect(t, port, ctx, sni="localhost", timeout=5):
    raw = socket.create_connection((HOST, port), timeout=T(timeout))
    t.socks.append(raw)
    s = ctx.wrap_socket(raw, server_hostname=sni)
    t.socks.append(s)
    return s


def plain_connect(t, port, timeout=5):
    s = socket.create_connection((HOST, port), timeout=T(timeout))
    t.socks.append(s)
    return s


class Reader:
    """Buffered reads from a (TLS) socket; EOF, resets and TLS alerts end the stream."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False
        self.err = None

    def fill(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(262144)
        except ssl.SSLZeroReturnError:
            data = b""
        except socket.timeout:
            raise Failure("timed out waiting for data")
        except (ssl.SSLError, ConnectionError, OSError) as e:
            self.err = e
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, sep, limit=1 << 22):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out, self.buf = self.buf[:i + len(sep)], self.buf[i + len(sep):]
                return out
            if len(self.buf) > limit or not self.fill():
                return None

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self.fill():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_some(self, n):
        if not self.buf and not self.fill():
            return b""
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self, limit=1 << 26):
        while len(self.buf) < limit and self.fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def at_eof(self, timeout):
        """True when the peer closes (EOF, reset, alert) within timeout with no more data."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            return not self.fill()
        except Failure:
            return False


class Resp:
    def __init__(self, status, reason, headers, body, head):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.head = head

    def header(self, name):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return vals[-1] if vals else None

    def __repr__(self):
        return "<%d %s>" % (self.status, self.body[:60])


def read_head(r):
    head = r.read_until(b"\r\n\r\n")
    if head is None:
        raise Failure("no response (%s)" % (r.err or "connection closed"))
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3}) ?(.*)", lines[0])
    check(m, "bad status line %r" % lines[0])
    headers = []
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
    return int(m.group(1)), m.group(2), headers, head


def read_body(r, status, headers, method="GET", sink=None):
    """Reads a response body per RFC 9112 framing; returns bytes (empty when sink is used)."""
    out = bytearray()

    def put(data):
        if sink:
            sink(data)
        else:
            out.extend(data)

    hv = {k.lower(): v for k, v in headers}
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return b""
    if "chunked" in hv.get("transfer-encoding", "").lower():
        while True:
            line = r.read_until(b"\r\n", 4096)
            check(line is not None, "chunked body cut short")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:
                    trailer = r.read_until(b"\r\n", 65536)
                    check(trailer is not None, "chunked trailers cut short")
                    if trailer == b"\r\n":
                        return bytes(out)
            left = size
            while left:
                part = r.read_some(min(left, 262144))
                check(part, "chunk cut short")
                put(part)
                left -= len(part)
            check(r.read_exact(2) == b"\r\n", "chunk not followed by CRLF")
    if "content-length" in hv:
        left = int(hv["content-length"])
        while left:
            part = r.read_some(min(left, 262144))
            check(part, "body cut short (%d bytes missing)" % left)
            put(part)
            left -= len(part)
        return bytes(out)
    while True:
        part = r.read_some(262144)
        if not part:
            return bytes(out)
        put(part)


def read_response(r, method="GET"):
    status, reason, headers, head = read_head(r)
    body = read_body(r, status, headers, method)
    return Resp(status, reason, headers, body, head)


def safe_send(sock, data):
    try:
        sock.sendall(data)
        return None
    except (ssl.SSLError, OSError) as e:
        return e


def get_req(path="/echo", host="localhost", extra=""):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, host, extra)).encode()


def https_request(t, port, ctx, raw, method="GET"):
    s = tls_connect(t, port, ctx)
    s.sendall(raw)
    return read_response(Reader(s), method)


def http_get(port, path, timeout=2):
    """Plain HTTP GET to the admin API; returns (status, body)."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                   % (path, HOST, port)).encode())
        r = Reader(s)
        try:
            resp = read_response(r)
        except Failure as e:
            raise OSError(str(e))
        return resp.status, resp.body
    finally:
        s.close()


def attempt(t, port, ctx, raw=None):
    """A TLS connection that may be refused: returns ("ok", Resp) or ("refused", why).

    With TLS 1.3 the client finishes its handshake before the server has looked at the client
    certificate, so a refusal shows up as an alert or EOF on the first read."""
    raw = raw or get_req("/echo")
    try:
        s = tls_connect(t, port, ctx)
    except (ssl.SSLError, ConnectionError) as e:
        return "refused", "handshake: %s" % e
    except socket.timeout:
        return "timeout", "handshake timed out"
    err = safe_send(s, raw)
    if err:
        return "refused", "send: %s" % err
    r = Reader(s)
    try:
        return "ok", read_response(r)
    except Failure as e:
        if "timed out" in str(e):
            return "timeout", str(e)
        return "refused", str(r.err or e)


def curl(t, port, path, alg, cert="client-chain.crt", key="client.key", extra=(), timeout=10):
    pki = Opts.pki[alg]
    # HTTP/1.1: these tests are about the HTTP/1 path (listeners offer h2 too; the h2 tests
    # ask for it themselves).
    args = ["curl", "-sS", "--http1.1", "-m", str(int(T(timeout))), "--resolve", "localhost:%d:%s" % (port, HOST),
            "--cacert", os.path.join(pki, "root.crt"), "-o", "-", "-w", "\n%{http_code}"]
    if cert:
        args += ["--cert", os.path.join(pki, cert), "--key", os.path.join(pki, key)]
    args += list(extra)
    if isinstance(path, str):
        path = [path]
    args += ["https://localhost:%d%s" % (port, p) for p in path]
    return run_cmd(args, timeout=timeout + 5)


# ---------------------------------------------------------------------------------------------
# common set-ups

def http_env(t, alg="ecdsa", limits=None, extra=None, record_max=MIB, env=None, **lkw):
    up = t.upstream(record_max=record_max)
    lkw.setdefault("client_auth", "require")
    cg = t.certgate(alg, [listener("https", "http", up.http, **lkw)], limits=limits,
                    extra=extra, env=env)
    return up, cg, client_ctx(alg)


# ---------------------------------------------------------------------------------------------
# cli

def write_config(t, text):
    path = os.path.join(t.dir, "certgate.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def good_config_text(t, alg="ecdsa"):
    cfg = make_config(t, alg, [listener("https", "http", "%s:%d" % (HOST, free_port()))])
    return yaml_dump(cfg) + "\n"


@test("cli.version")
def t_version(t):
    p = run_cmd([Opts.binary, "version"])
    check(p.returncode == 0, "exit %d" % p.returncode)
    check(re.search(r"\d+\.\d+", p.stdout), "no version number in %r" % p.stdout)


@test("cli.version_tls_library")
def t_version_tls(t):
    p = run_cmd([Opts.binary, "version"])
    check(p.returncode == 0, "exit %d" % p.returncode)
    check("boringssl" in (p.stdout + p.stderr).lower(), "no TLS library in %r" % p.stdout)


@test("cli.check_good_config")
def t_check_good(t):
    path = write_config(t, good_config_text(t))
    p = run_cmd([Opts.binary, "check", "-c", path])
    check(p.returncode == 0, "exit %d: %s" % (p.returncode, (p.stdout + p.stderr)[-300:]))


@test("cli.check_unknown_key")
def t_check_unknown_key(t):
    text = good_config_text(t).rstrip("\n").split("\n")
    # put an unknown key inside the listener, after its name
    idx = next(i for i, l in enumerate(text) if l.strip().startswith("- name:"))
    text.insert(idx + 1, "    bogus_key: 1")
    path = write_config(t, "\n".join(text) + "\n")
    p = run_cmd([Opts.binary, "check", "-c", path])
    out = p.stdout + p.stderr
    check(p.returncode == 2, "exit %d (want 2): %s" % (p.returncode, out[-300:]))
    m = re.search(r"(\S*certgate\.yaml):(\d+):(\d+):", out)
    check(m, "no FILE:LINE:COL: in %r" % out[-300:])
    check(int(m.group(2)) == idx + 2, "line %s, want %d: %s" % (m.group(2), idx + 2, out[-200:]))


@test("cli.check_bad_value")
def t_check_bad_value(t):
    text = good_config_text(t).replace("handshake_timeout: 5s", "handshake_timeout: fast")
    path = write_config(t, text)
    p = run_cmd([Opts.binary, "check", "-c", path])
    out = p.stdout + p.stderr
    check(p.returncode == 2, "exit %d (want 2): %s" % (p.returncode, out[-300:]))
    check(re.search(r"certgate\.yaml:\d+:\d+:", out), "no FILE:LINE:COL: in %r" % out[-300:])


@test("cli.check_missing_credentials")
def t_check_missing_cred(t):
    text = good_config_text(t).replace("cert: server.crt", "cert: no-such-file.crt")
    path = write_config(t, text)
    p = run_cmd([Opts.binary, "check", "-c", path])
    check(p.returncode == 1, "exit %d (want 1): %s" % (p.returncode, (p.stdout + p.stderr)[-300:]))


@test("cli.run_unknown_key_exits_2")
def t_run_unknown_key(t):
    path = write_config(t, good_config_text(t) + "no_such_section: 1\n")
    p = run_cmd([Opts.binary, "run", "-c", path], timeout=10)
    check(p.returncode == 2, "exit %d (want 2)" % p.returncode)


# ---------------------------------------------------------------------------------------------
# admin

@test("admin.healthz_ready")
def t_admin(t):
    up, cg, ctx = http_env(t)
    check(cg.admin_port, "no admin port")
    status, body = http_get(cg.admin_port, "/healthz")
    check(status == 200 and body.strip() == b"ok", "healthz: %d %r" % (status, body))
    status, body = http_get(cg.admin_port, "/ready")
    check(status == 200, "ready: %d %r" % (status, body))


@test("admin.metrics_exposed")
def t_metrics(t):
    up, cg, ctx = http_env(t)
    https_request(t, cg.port(), ctx, get_req("/echo"))
    status, body = http_get(cg.admin_port, "/metrics")
    check(status == 200, "metrics: %d" % status)
    for name in (b"certgate_connections_total", b"certgate_requests_total",
                 b"certgate_handshakes_total"):
        check(name in body, "%s missing from /metrics" % name.decode())


# ---------------------------------------------------------------------------------------------
# logs: JSON lines on stderr, access log, refused handshakes with a reason

def log_lines(cg):
    out = []
    for line in cg.stderr().split("\n"):
        if not line.strip() or line.startswith(("==", "    #", "SUMMARY")):
            continue  # sanitizer reports are not log lines
        out.append(line)
    return out


def log_events(cg, name=None):
    """The JSON objects certgate logged so far whose event is |name| (every one when None)."""
    out = []
    for line in log_lines(cg):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and (name is None or obj.get("event") == name):
            out.append(obj)
    return out


@test("log.json_lines_and_access_log")
def t_log_json(t):
    up, cg, ctx = http_env(t)
    resp = https_request(t, cg.port(), ctx, get_req("/echo?logcheck=1"))
    check(resp.status == 200, "status %d" % resp.status)
    deadline = time.time() + T(3)
    while time.time() < deadline and "logcheck" not in cg.stderr():
        time.sleep(0.05)
    objs = []
    for line in log_lines(cg):
        try:
            obj = json.loads(line)
        except ValueError:
            raise Failure("stderr line is not JSON: %r" % line[:120])
        check(isinstance(obj, dict), "log line is not an object: %r" % line[:120])
        objs.append(obj)
    access = [o for o in objs if "logcheck" in json.dumps(o)]
    check(access, "no access-log line for the request")
    text = json.dumps(access[0])
    check("200" in text and "https" in text, "access line lacks status or listener: %s"
          % text[:300])


def refused_log_case(cert, key, words):
    def fn(t):
        up, cg, _ = http_env(t)
        res, info = attempt(t, cg.port(), client_ctx("ecdsa", cert=cert, key=key))
        check(res == "refused", "got %s %r" % (res, info))
        deadline = time.time() + T(3)
        while time.time() < deadline:
            err = cg.stderr().lower()
            if all(any(w in err for w in alts) for alts in words):
                return
            time.sleep(0.05)
        raise Failure("log does not mention %r: %s" % (words, cg.tail(3)))
    return fn


for _name, _cert, _key, _words in (
        ("no_cert", None, None, [("no certificate", "no client certificate", "no_cert",
                                     "did not return a certificate", "without a certificate")]),
        ("expired", "client-expired-chain.crt", "client-expired.key", [("expired",)]),
        ("not_yet_valid", "client-notyet-chain.crt", "client-notyet.key",
         [("not yet valid", "not_yet_valid")]),
        ("unknown_issuer", "client-unknown-chain.crt", "client-unknown.key",
         [("unknown root ca",)]),
        ("wrong_eku", "client-wrongeku-chain.crt", "client-wrongeku.key",
         [("eku", "extended key usage", "purpose")])):
    TESTS.append(("log.refused_handshake_reason_" + _name, refused_log_case(_cert, _key, _words)))


# ---------------------------------------------------------------------------------------------
# mTLS matrix

def expect_refused(t, alg, cert, key, what):
    up, cg, _ = http_env(t, alg)
    ctx = client_ctx(alg, cert=cert, key=key)
    res, info = attempt(t, cg.port(), ctx)
    check(res == "refused", "%s: got %s %r" % (what, res, info))
    time.sleep(0.1)
    check(up.received() == b"", "upstream received bytes for a refused client")


@test_each_alg("mtls.valid_chain_accepted")
def t_mtls_valid(t, alg):
    up, cg, ctx = http_env(t, alg)
    res, resp = attempt(t, cg.port(), ctx, get_req("/echo?valid=1"))
    check(res == "ok", "refused: %s" % resp)
    check(resp.status == 200, "status %d" % resp.status)
    check(resp.body.startswith(b"GET /echo?valid=1 HTTP/1.1\r\n"), "body %r" % resp.body[:80])
    reqs = up.requests()
    check(len(reqs) == 1 and reqs[0]["target"] == "/echo?valid=1", "upstream saw %r" % reqs)


@test_each_alg("mtls.curl_valid_chain")
def t_mtls_curl(t, alg):
    up, cg, _ = http_env(t, alg)
    p = curl(t, cg.port(), "/hello", alg)
    check(p.returncode == 0, "curl exit %d: %s" % (p.returncode, p.stderr.strip()))
    body, _, code = p.stdout.rpartition("\n")
    check(code == "200", "status %s" % code)
    check(body.startswith("GET /hello HTTP/1.1"), "body %r" % body[:80])


@test_each_alg("mtls.no_cert_refused")
def t_mtls_nocert(t, alg):
    up, cg, _ = http_env(t, alg)
    res, info = attempt(t, cg.port(), client_ctx(alg, cert=None))
    check(res == "refused", "got %s %r" % (res, info))
    p = curl(t, cg.port(), "/hello", alg, cert=None)
    check(p.returncode != 0, "curl without certificate succeeded: %r" % p.stdout[-100:])
    time.sleep(0.1)
    check(up.received() == b"", "upstream received bytes")


@test_each_alg("mtls.unknown_ca_refused")
def t_mtls_unknown(t, alg):
    expect_refused(t, alg, "client-unknown-chain.crt", "client-unknown.key", "unknown CA")


@test_each_alg("mtls.expired_refused")
def t_mtls_expired(t, alg):
    expect_refused(t, alg, "client-expired-chain.crt", "client-expired.key", "expired")


@test_each_alg("mtls.not_yet_valid_refused")
def t_mtls_notyet(t, alg):
    expect_refused(t, alg, "client-notyet-chain.crt", "client-notyet.key", "not yet valid")


@test_each_alg("mtls.wrong_eku_refused")
def t_mtls_eku(t, alg):
    expect_refused(t, alg, "client-wrongeku-chain.crt", "client-wrongeku.key", "wrong EKU")


@test_each_alg("mtls.missing_intermediate_refused")
def t_mtls_leafonly(t, alg):
    expect_refused(t, alg, "client-leafonly.crt", "client.key", "leaf without intermediate")


@test_each_alg("mtls.tls11_refused")
def t_mtls_tls11(t, alg):
    up, cg, _ = http_env(t, alg)
    pki = Opts.pki[alg]
    args = ["openssl", "s_client", "-connect", "%s:%d" % (HOST, cg.port()),
            "-servername", "localhost", "-CAfile", os.path.join(pki, "root.crt"),
            "-cert", os.path.join(pki, "client.crt"), "-key", os.path.join(pki, "client.key"),
            "-cert_chain", os.path.join(pki, "intermediate.crt")]
    # TLS 1.1 needs security level 0 on the client side with OpenSSL 3.
    p = run_cmd(args + ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], input="")
    out = p.stdout + p.stderr
    check("no protocols available" not in out, "the local openssl refused TLS 1.1 itself")
    check(not re.search(r"Protocol\s*:\s*TLSv1\.1", out) or "Cipher is (NONE)" in out,
          "TLS 1.1 handshake succeeded")
    # control: TLS 1.2 with the same client works
    p = run_cmd(args + ["-tls1_2"], input="GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    out = p.stdout + p.stderr
    check(re.search(r"Protocol\s*:\s*TLSv1\.2", out), "TLS 1.2 control failed: %s" % out[-200:])


# ---------------------------------------------------------------------------------------------
# HTTP behaviour

@test("http.keepalive")
def t_keepalive(t):
    up, cg, ctx = http_env(t)
    s = tls_connect(t, cg.port(), ctx)
    r = Reader(s)
    for i in range(5):
        s.sendall(get_req("/echo?n=%d" % i))
        resp = read_response(r)
        check(resp.status == 200, "request %d: status %d" % (i, resp.status))
        check(resp.body.startswith(b"GET /echo?n=%d " % i), "request %d: body %r" % (i, resp.body[:40]))
    check(len(up.requests()) == 5, "upstream saw %d requests" % len(up.requests()))


@test("http.curl_keepalive")
def t_curl_keepalive(t):
    up, cg, _ = http_env(t)
    p = curl(t, cg.port(), ["/a", "/b", "/c"], "ecdsa", extra=["-v"])
    check(p.returncode == 0, "curl exit %d: %s" % (p.returncode, p.stderr[-200:]))
    check(p.stderr.count("Re-using existing connection") == 2,
          "curl did not reuse the connection")
    check([r["target"] for r in up.requests()] == ["/a", "/b", "/c"], "upstream saw %r"
          % [r["target"] for r in up.requests()])


@test("http.pipelining")
def t_pipelining(t):
    up, cg, ctx = http_env(t)
    s = tls_connect(t, cg.port(), ctx)
    s.sendall(get_req("/slow?ms=200&n=1") + get_req("/echo?n=2") + get_req("/echo?n=3"))
    r = Reader(s)
    for n, path in ((1, b"/slow?ms=200&n=1"), (2, b"/echo?n=2"), (3, b"/echo?n=3")):
        resp = read_response(r)
        check(resp.status == 200, "response %d: status %d" % (n, resp.status))
        check(resp.body.startswith(b"GET " + path + b" "), "response %d out of order: %r"
              % (n, resp.body[:40]))


@test("http.content_length_body")
def t_cl_body(t):
    up, cg, ctx = http_env(t)
    body = os.urandom(100000)
    resp = https_request(t, cg.port(), ctx, b"POST /body HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
    check(resp.status == 200, "status %d" % resp.status)
    check(b"body-sha256: " + hashlib.sha256(body).hexdigest().encode() in resp.body,
          "body changed on the way: %r" % resp.body[-120:])


@test("http.chunked_request_body")
def t_chunked_req(t):
    up, cg, ctx = http_env(t)
    parts = [os.urandom(n) for n in (1, 100, 5000, 70000, 3)]
    raw = b"POST /body HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    s = tls_connect(t, cg.port(), ctx)
    for i in range(0, len(raw), 7000):  # arrive in pieces
        s.sendall(raw[i:i + 7000])
    resp = read_response(Reader(s))
    check(resp.status == 200, "status %d" % resp.status)
    want = hashlib.sha256(b"".join(parts)).hexdigest().encode()
    check(b"body-sha256: " + want in resp.body, "body changed: %r" % resp.body[-120:])
    check(b"body-length: %d\n" % sum(map(len, parts)) in resp.body, "length changed")


@test("http.chunked_response")
def t_chunked_resp(t):
    up, cg, ctx = http_env(t)
    resp = https_request(t, cg.port(), ctx, get_req("/download?bytes=300000&chunked=1"))
    check(resp.status == 200, "status %d" % resp.status)
    want = (b"0123456789abcdef" * 4096 * 5)[:300000]
    check(resp.body == want, "got %d bytes, not the expected body" % len(resp.body))


@test("http.upstream_sees_request_target_and_host")
def t_forward_basics(t):
    up, cg, ctx = http_env(t)
    resp = https_request(t, cg.port(), ctx, get_req("/p/a%20b?x=1&y=%2F", extra="X-Custom: v1\r\n"))
    check(resp.status == 200, "status %d" % resp.status)
    req = up.requests()[0]
    check(req["target"] == "/p/a%20b?x=1&y=%2F", "target %r" % req["target"])
    hdrs = {k.lower(): v for k, v in req["headers"]}
    check(hdrs.get("x-custom") == "v1", "custom header lost: %r" % req["headers"])
    check(hdrs.get("host", "").startswith("localhost"), "host %r" % hdrs.get("host"))


@test("http.head_then_get_same_connection")
def t_head(t):
    up, cg, ctx = http_env(t)
    s = tls_connect(t, cg.port(), ctx)
    r = Reader(s)
    s.sendall(b"HEAD /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
    resp = read_response(r, method="HEAD")
    check(resp.status == 200 and resp.body == b"", "HEAD: %r" % resp)
    s.sendall(get_req("/echo?after-head=1"))
    resp = read_response(r)
    check(resp.status == 200 and resp.body.startswith(b"GET /echo?after-head=1 "),
          "GET after HEAD: %r" % resp)


@test("http.204_then_get_same_connection")
def t_204(t):
    up, cg, ctx = http_env(t)
    s = tls_connect(t, cg.port(), ctx)
    r = Reader(s)
    s.sendall(get_req("/status?code=204"))
    resp = read_response(r)
    check(resp.status == 204 and resp.body == b"", "204: %r" % resp)
    s.sendall(get_req("/echo?after-204=1"))
    resp = read_response(r)
    check(resp.status == 200 and resp.body.startswith(b"GET /echo?after-204=1 "),
          "GET after 204: %r" % resp)


@test("http.connection_close_honoured")
def t_conn_close(t):
    up, cg, ctx = http_env(t)
    s = tls_connect(t, cg.port(), ctx)
    r = Reader(s)
    s.sendall(get_req("/echo", extra="Connection: close\r\n"))
    resp = read_response(r)
    check(resp.status == 200, "status %d" % resp.status)
    check(r.at_eof(T(2)), "connection still open after Connection: close")


@test("http.http10_request")
def t_http10(t):
    up, cg, ctx = http_env(t)
    s = tls_connect(t, cg.port(), ctx)
    r = Reader(s)
    s.sendall(b"GET /echo?v10=1 HTTP/1.0\r\nHost: localhost\r\n\r\n")
    resp = read_response(r)
    check(resp.status == 200, "status %d" % resp.status)
    check(b"/echo?v10=1" in resp.body, "body %r" % resp.body[:60])
    check(r.at_eof(T(2)), "HTTP/1.0 connection without keep-alive left open")


@test("http.hop_by_hop_headers_removed")
def t_hop_by_hop(t):
    up, cg, ctx = http_env(t)
    resp = https_request(t, cg.port(), ctx, get_req(
        "/echo", extra="Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\n"
                       "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-End: 1\r\n"))
    check(resp.status == 200, "status %d" % resp.status)
    hdrs = {k.lower(): v for k, v in up.requests()[0]["headers"]}
    check("x-end" in hdrs, "end-to-end header lost: %r" % hdrs)
    for h in ("x-hop", "keep-alive", "proxy-connection"):
        check(h not in hdrs, "hop-by-hop header %s forwarded" % h)


@test("http.curl_large_post_expect_100")
def t_expect100(t):
    up, cg, _ = http_env(t)
    path = os.path.join(t.dir, "post.bin")
    data = os.urandom(3 * MIB)
    with open(path, "wb") as f:
        f.write(data)
    # curl sends "Expect: 100-continue" for bodies over 1 MiB
    p = curl(t, cg.port(), "/body", "ecdsa", extra=["--data-binary", "@" + path])
    check(p.returncode == 0, "curl exit %d: %s" % (p.returncode, p.stderr.strip()))
    body, _, code = p.stdout.rpartition("\n")
    check(code == "200", "status %s" % code)
    check("body-sha256: " + hashlib.sha256(data).hexdigest() in body, "body changed")


@test("http.many_pipelined_requests")
def t_many_pipelined(t):
    up, cg, ctx = http_env(t)
    s = tls_connect(t, cg.port(), ctx, timeout=15)
    n = 200
    s.sendall(b"".join(get_req("/echo?n=%d" % i) for i in range(n)))
    r = Reader(s)
    for i in range(n):
        resp = read_response(r)
        check(resp.status == 200 and resp.body.startswith(b"GET /echo?n=%d " % i),
              "response %d: %r" % (i, resp))


@test("host.sni_host_mismatch_421")
def t_421(t):
    up, cg, ctx = http_env(t)
    resp = https_request(t, cg.port(), ctx, get_req("/echo", host="other.example"))
    check(resp.status == 421, "status %d, want 421" % resp.status)
    time.sleep(0.1)
    check(up.received() == b"", "upstream received bytes")


@test("host.host_case_port_and_trailing_dot_match")
def t_host_variants(t):
    up, cg, ctx = http_env(t)
    s = tls_connect(t, cg.port(), ctx)
    r = Reader(s)
    for host in ("localhost:%d" % cg.port(), "LOCALHOST", "localhost."):
        s.sendall(get_req("/echo", host=host))
        resp = read_response(r)
        check(resp.status == 200, "Host %s: status %d" % (host, resp.status))


@test("http.upgrade_200_stays_http")
def t_upgrade200(t):
    up, cg, ctx = http_env(t)
    s = tls_connect(t, cg.port(), ctx)
    r = Reader(s)
    s.sendall(b"GET /upgrade200 HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
              b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    resp = read_response(r)
    check(resp.status == 200, "status %d" % resp.status)
    s.sendall(get_req("/echo?second=1"))
    resp = read_response(r)
    check(resp.status == 200, "second: status %d" % resp.status)
    check(resp.body.startswith(b"GET /echo?second=1 HTTP/1.1\r\n"),
          "second request not parsed as HTTP by the upstream: %r" % resp.body[:60])
    targets = [q["target"] for q in up.requests()]
    check(targets == ["/upgrade200", "/echo?second=1"], "upstream saw %r" % targets)


@test("http.upgrade_200_then_garbage_not_tunnelled")
def t_upgrade200_garbage(t):
    up, cg, ctx = http_env(t)
    s = tls_connect(t, cg.port(), ctx)
    r = Reader(s)
    s.sendall(b"GET /upgrade200 HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
              b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    resp = read_response(r)
    check(resp.status == 200, "status %d" % resp.status)
    safe_send(s, b"\x81\x05GARBAGE-NOT-HTTP\r\n\r\n")
    try:
        resp = read_response(r)
        check(resp.status == 400, "garbage after a 200 upgrade answer got %d" % resp.status)
    except Failure:
        pass  # closing is fine too
    time.sleep(0.1)
    check(b"GARBAGE" not in up.received(), "bytes after a non-101 answer were tunnelled")


@test("ws.websocket_echo")
def t_websocket(t):
    up, cg, ctx = http_env(t)
    s = tls_connect(t, cg.port(), ctx)
    r = Reader(s)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
               "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Key: %s\r\n\r\n" % key).encode())
    status, _, headers, _ = read_head(r)
    check(status == 101, "status %d" % status)
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                           .encode()).digest()).decode()
    hv = {k.lower(): v for k, v in headers}
    check(hv.get("sec-websocket-accept") == accept, "bad accept %r" % hv)
    for payload in (b"hello", os.urandom(300), os.urandom(70000)):
        s.sendall(ws_frame(2, payload, os.urandom(4)))
        op, data = ws_read(r)
        check(op == 2 and data == payload, "echo mismatch (%d bytes)" % len(payload))
    s.sendall(ws_frame(8, b"\x03\xe8", os.urandom(4)))
    op, _ = ws_read(r)
    check(op == 8, "no close frame back")


def ws_frame(opcode, payload, mask):
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_read(r):
    hdr = r.read_exact(2)
    check(hdr is not None, "websocket closed (%s)" % r.err)
    n = hdr[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", r.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", r.read_exact(8))[0]
    data = r.read_exact(n) if n else b""
    check(data is not None, "websocket frame cut short")
    return hdr[0] & 0x0F, data


# ---------------------------------------------------------------------------------------------
# the forwarded client-certificate header: only that client copies never arrive

@test("xfcc.client_copies_never_reach_upstream")
def t_xfcc_spoof(t):
    up, cg, ctx = http_env(t)
    res, resp = attempt(t, cg.port(), ctx, get_req(
        "/echo", extra="X-Forwarded-Client-Cert: spoof-1\r\nx-forwarded-client-cert: spoof-2\r\n"
                       "X-FORWARDED-CLIENT-CERT: spoof-3\r\nClient-Cert: :c3Bvb2Y=:\r\n"
                       "X-SSL-Client-Cert: spoof-4\r\nConnection: x-forwarded-client-cert\r\n"))
    check(res == "ok" and resp.status == 200, "got %s %r" % (res, resp))
    got = up.received()
    check(b"spoof" not in got and b"c3Bvb2Y" not in got, "a client copy reached the upstream")


@test("xfcc.underscore_spelling_never_reaches_upstream")
def t_xfcc_underscore(t):
    up, cg, ctx = http_env(t)
    res, resp = attempt(t, cg.port(), ctx, get_req(
        "/echo", extra="X_Forwarded_Client_Cert: spoof-u\r\n"))
    check(res == "ok" and resp.status in (200, 400), "got %s %r" % (res, resp))
    check(b"spoof" not in up.received(), "an underscore copy reached the upstream")


@test("xfcc.trailer_never_reaches_upstream")
def t_xfcc_trailer(t):
    up, cg, ctx = http_env(t)
    res, resp = attempt(t, cg.port(), ctx,
                        b"POST /body HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                        b"\r\n5\r\nhello\r\n0\r\nX-Forwarded-Client-Cert: spoof-t\r\n\r\n")
    check(res == "ok" and resp.status in (200, 400), "got %s %r" % (res, resp))
    check(b"spoof" not in up.received(), "a trailer copy reached the upstream")


# ---------------------------------------------------------------------------------------------
# 100 MiB each way with bounded memory

def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssWatch:
    def __init__(self, pid):
        self.pid = pid
        self.base = rss_kib(pid)
        self.max = self.base
        self.stop_flag = False
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        while not self.stop_flag:
            self.max = max(self.max, rss_kib(self.pid))
            time.sleep(0.02)

    def stop(self):
        self.stop_flag = True
        self.th.join(2)
        after = rss_kib(self.pid)
        return (self.max - self.base) / 1024.0, (after - self.base) / 1024.0


def big_env(t):
    env = {}
    if Opts.sanitizer:
        env["ASAN_OPTIONS"] = ":".join(o for o in (os.environ.get("ASAN_OPTIONS", ""),
                                                   "quarantine_size_mb=8") if o)
    up, cg, ctx = http_env(t, record_max=65536, env=env)
    # warm up: one small request so that the baseline includes the TLS state
    resp = https_request(t, cg.port(), ctx, get_req("/echo"))
    check(resp.status == 200, "warm-up status %d" % resp.status)
    return up, cg, ctx


def rss_limit():
    return 96 if Opts.sanitizer else 64


@test("big.upload_100mib_bounded_rss")
def t_upload_big(t):
    up, cg, ctx = big_env(t)
    n = 100 * MIB
    block = os.urandom(256 * 1024)
    h = hashlib.sha256()
    w = RssWatch(cg.pid)
    s = tls_connect(t, cg.port(), ctx, timeout=60)
    s.sendall(b"POST /body HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % n)
    sent = 0
    while sent < n:
        s.sendall(block)
        h.update(block)
        sent += len(block)
    resp = read_response(Reader(s))
    peak, after = w.stop()
    check(resp.status == 200, "status %d" % resp.status)
    check(b"body-length: %d\n" % n in resp.body, "length wrong: %r" % resp.body[-120:])
    check(b"body-sha256: " + h.hexdigest().encode() in resp.body, "body changed")
    check(peak < rss_limit(), "RSS grew by %.1f MiB during the upload" % peak)


@test("big.upload_chunked_100mib_bounded_rss")
def t_upload_big_chunked(t):
    up, cg, ctx = big_env(t)
    n = 100 * MIB
    block = os.urandom(256 * 1024)
    chunk = b"%x\r\n" % len(block) + block + b"\r\n"
    h = hashlib.sha256()
    w = RssWatch(cg.pid)
    s = tls_connect(t, cg.port(), ctx, timeout=60)
    s.sendall(b"POST /body HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(n // len(block)):
        s.sendall(chunk)
        h.update(block)
    s.sendall(b"0\r\n\r\n")
    resp = read_response(Reader(s))
    peak, after = w.stop()
    check(resp.status == 200, "status %d" % resp.status)
    check(b"body-sha256: " + h.hexdigest().encode() in resp.body, "body changed")
    check(peak < rss_limit(), "RSS grew by %.1f MiB during the upload" % peak)


@test("big.download_100mib_bounded_rss")
def t_download_big(t):
    up, cg, ctx = big_env(t)
    n = 100 * MIB
    w = RssWatch(cg.pid)
    s = tls_connect(t, cg.port(), ctx, timeout=60)
    s.sendall(get_req("/download?bytes=%d" % n))
    r = Reader(s)
    status, _, headers, _ = read_head(r)
    got = [0]
    h = hashlib.sha256()

    def sink(d):
        got[0] += len(d)
        h.update(d)
    read_body(r, status, headers, sink=sink)
    peak, after = w.stop()
    check(status == 200, "status %d" % status)
    check(got[0] == n, "got %d bytes" % got[0])
    want = hashlib.sha256()
    block = b"0123456789abcdef" * 4096
    for _ in range(n // len(block)):
        want.update(block)
    check(h.digest() == want.digest(), "body changed")
    check(peak < rss_limit(), "RSS grew by %.1f MiB during the download" % peak)


# ---------------------------------------------------------------------------------------------
# request smuggling and malformed requests: 400, and the upstream receives nothing

SMUGGLING = [
    ("cl_and_te", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n"
                  b"Host: localhost\r\n\r\n"),
    ("te_and_cl", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 6\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n"
                  b"Host: localhost\r\n\r\n"),
    ("te_chunked_twice", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked"
                         b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te_gzip_chunked", b"POST /echo HTTP/1.1\r\nHost: localhost\r\n"
                        b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("te_xchunked", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n"
                    b"\r\n0\r\n\r\n"),
    ("te_chunked_comma", b"POST /echo HTTP/1.1\r\nHost: localhost\r\n"
                         b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ("te_identity", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: identity\r\n"
                    b"Content-Length: 5\r\n\r\nhello"),
    ("cl_duplicate_same", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                          b"Content-Length: 5\r\n\r\nhello"),
    ("cl_duplicate_different", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                               b"Content-Length: 0\r\n\r\nhello"),
    ("cl_list", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5, 5\r\n\r\nhello"),
    ("cl_plus_sign", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: +5\r\n\r\nhello"),
    ("cl_minus_sign", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: -5\r\n\r\nhello"),
    ("cl_garbage", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5x\r\n\r\nhello"),
    ("cl_hex", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0x5\r\n\r\nhello"),
    ("space_before_colon", b"GET /echo HTTP/1.1\r\nHost : localhost\r\n\r\n"),
    ("space_before_colon_te", b"POST /echo HTTP/1.1\r\nHost: localhost\r\n"
                              b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello"),
    ("obs_fold", b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n b\r\n\r\n"),
    ("obs_fold_tab", b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n\tb\r\n\r\n"),
    ("bare_lf", b"GET /echo HTTP/1.1\nHost: localhost\n\n"),
    ("bare_lf_header", b"GET /echo HTTP/1.1\r\nHost: localhost\nX-A: b\r\n\r\n"),
    ("bare_cr", b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX-A: b\rX-B: c\r\n\r\n"),
    ("nul_in_header_value", b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX-A: b\x00c\r\n\r\n"),
    ("nul_in_header_name", b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX-\x00A: b\r\n\r\n"),
    ("empty_header_name", b"GET /echo HTTP/1.1\r\nHost: localhost\r\n: b\r\n\r\n"),
    ("missing_host", b"GET /echo HTTP/1.1\r\nX-A: b\r\n\r\n"),
    ("duplicate_host", b"GET /echo HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n"),
    ("h2c_upgrade", b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings"
                    b"\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
    ("h2_prior_knowledge", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ("http_0_9_request_line", b"GET /echo\r\n\r\n"),
    ("space_in_target", b"GET /ec ho HTTP/1.1\r\nHost: localhost\r\n\r\n"),
]


def smuggling_case(payload):
    def fn(t):
        up, cg, ctx = http_env(t)
        s = tls_connect(t, cg.port(), ctx)
        s.sendall(payload)
        r = Reader(s)
        try:
            resp = read_response(r)
        except Failure as e:
            raise Failure("no 400 (%s)" % e)
        # the request body (or what follows) may leave bytes the proxy must not parse further
        check(resp.status == 400, "status %d, want 400" % resp.status)
        check(r.at_eof(T(2)), "connection not closed after the 400")
        time.sleep(0.1)
        got = up.received()
        check(got == b"", "upstream received %r" % got[:80])
    return fn


for _name, _payload in SMUGGLING:
    TESTS.append(("smuggling." + _name, smuggling_case(_payload)))

# Bad framing inside a chunked body: the head may already be on its way to the upstream (bodies
# are streamed), so the rule is: 400 or close to the client, the upstream never sees a complete
# request and never sees what follows the bad chunk.
BODY_SMUGGLING = [
    ("bad_chunk_size", b"zz\r\nhello\r\n0\r\n\r\n"),
    ("chunk_size_overflow", b"10000000000000001\r\nhello\r\n0\r\n\r\n"),
    ("chunk_missing_crlf", b"5\r\nhelloXX0\r\n\r\n"),
    ("chunk_bare_lf", b"5\nhello\n0\n\n"),
    ("chunk_ext_huge", b"5;" + b"e" * 200000 + b"\r\nhello\r\n0\r\n\r\n"),
]


def body_smuggling_case(body):
    def fn(t):
        up, cg, ctx = http_env(t)
        s = tls_connect(t, cg.port(), ctx)
        err = safe_send(s, b"POST /body HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked"
                        b"\r\n\r\n" + body + b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n")
        r = Reader(s)
        try:
            resp = read_response(r)
            check(resp.status in (400, 413, 431), "status %d, want 400" % resp.status)
            check(r.at_eof(T(2)), "connection not closed after the error")
        except Failure as e:
            check("no response" in str(e), str(e))  # closing without a response is fine
        time.sleep(0.2)
        check(up.requests() == [], "upstream completed a request: %r" % up.requests())
        check(b"smuggled" not in up.received(), "the smuggled request reached the upstream")
    return fn


for _name, _payload in BODY_SMUGGLING:
    TESTS.append(("smuggling.body_" + _name, body_smuggling_case(_payload)))


# ---------------------------------------------------------------------------------------------
# limits

LIMITS = {"max_request_head": "8KiB", "max_headers": 20, "request_head_timeout": "1s"}


def limit_case(t, raw, want):
    up, cg, ctx = http_env(t, limits=LIMITS)
    s = tls_connect(t, cg.port(), ctx)
    err = safe_send(s, raw)
    r = Reader(s)
    try:
        resp = read_response(r)
    except Failure as e:
        raise Failure("no %d (%s; send error %s)" % (want, e, err))
    check(resp.status == want, "status %d, want %d" % (resp.status, want))
    time.sleep(0.1)
    check(up.received() == b"", "upstream received bytes")


@test("limits.head_too_large_431")
def t_head_431(t):
    limit_case(t, get_req("/echo", extra="X-Big: %s\r\n" % ("a" * 10000)), 431)


@test("limits.many_small_headers_over_size_431")
def t_head_431b(t):
    extra = "".join("X-H: %s\r\n" % ("b" * 900) for _ in range(12))
    limit_case(t, get_req("/echo", extra=extra), 431)


@test("limits.uri_too_long_414")
def t_uri_414(t):
    limit_case(t, get_req("/echo?" + "u" * 9000), 414)


@test("limits.too_many_headers_431")
def t_headers_431(t):
    limit_case(t, get_req("/echo", extra="".join("X-N%d: v\r\n" % i for i in range(25))), 431)


@test("limits.just_under_limits_ok")
def t_limits_ok(t):
    up, cg, ctx = http_env(t, limits=LIMITS)
    extra = "".join("X-N%d: %s\r\n" % (i, "v" * 100) for i in range(15))
    resp = https_request(t, cg.port(), ctx, get_req("/echo?" + "u" * 2000, extra=extra))
    check(resp.status == 200, "status %d" % resp.status)


@test("limits.idle_keepalive_closed")
def t_idle(t):
    up, cg, ctx = http_env(t, limits={"idle_timeout": "1s"})
    s = tls_connect(t, cg.port(), ctx, timeout=6)
    r = Reader(s)
    s.sendall(get_req("/echo"))
    check(read_response(r).status == 200, "first request failed")
    start = time.time()
    check(r.at_eof(T(4)), "idle connection still open after %.1fs" % (time.time() - start))
    check(time.time() - start > 0.5, "closed too early (%.2fs)" % (time.time() - start))


@test("limits.handshake_timeout_closes")
def t_handshake_timeout(t):
    up, cg, ctx = http_env(t, limits={"handshake_timeout": "1s"})
    s = plain_connect(t, cg.port(), timeout=6)
    s.sendall(b"\x16\x03\x01")  # the start of a ClientHello, never finished
    start = time.time()
    check(Reader(s).at_eof(T(4)), "half handshake still open after %.1fs" % (time.time() - start))


@test("limits.max_connections_pauses_accept")
def t_max_conns(t):
    up, cg, ctx = http_env(t, limits={"max_connections": 2})
    a = tls_connect(t, cg.port(), ctx)
    a.sendall(get_req("/echo"))
    read_response(Reader(a))
    b = tls_connect(t, cg.port(), ctx)
    b.sendall(get_req("/echo"))
    read_response(Reader(b))
    # the third connection is not served while two are open ...
    res = {}

    def third():
        res["r"] = attempt(t, cg.port(), ctx)
    th = threading.Thread(target=third, daemon=True)
    th.start()
    th.join(0.8)
    check("r" not in res or res["r"][0] != "ok", "a third connection was served")
    # ... and is served once one closes
    a.close()
    th.join(T(5))
    check("r" in res, "third connection never finished")
    check(res["r"][0] == "ok", "third connection after a close: %r" % (res["r"],))


@test("limits.slowloris_partial_head_408")
def t_slowloris(t):
    up, cg, ctx = http_env(t, limits=LIMITS)
    s = tls_connect(t, cg.port(), ctx, timeout=6)
    start = time.time()
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n")
    r = Reader(s)
    resp = read_response(r)
    took = time.time() - start
    check(resp.status == 408, "status %d, want 408" % resp.status)
    check(took < T(3.5), "408 after %.1fs" % took)
    check(r.at_eof(T(2)), "connection not closed after the 408")
    check(up.received() == b"", "upstream received bytes")


@test("limits.slowloris_trickle_408")
def t_slowloris_trickle(t):
    """A client that keeps sending a header line every 300 ms still hits the 1 s head timeout."""
    up, cg, ctx = http_env(t, limits=LIMITS)
    s = tls_connect(t, cg.port(), ctx, timeout=6)
    start = time.time()
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n")
    s.setblocking(False)
    while time.time() - start < T(4):
        r_ready, _, _ = select.select([s], [], [], 0.3)
        if r_ready or s.pending():
            break
        if safe_send(s, b"X-T: %d\r\n" % int(time.time() * 1000)):
            break
    s.setblocking(True)
    s.settimeout(T(3))
    resp = read_response(Reader(s))
    check(resp.status == 408, "status %d, want 408" % resp.status)
    check(time.time() - start < T(3.5), "408 only after %.1fs" % (time.time() - start))


# ---------------------------------------------------------------------------------------------
# upstream failures

@test("upstream.down_503")
def t_up_down(t):
    cg = t.certgate("ecdsa", [listener("https", "http", "%s:%d" % (HOST, free_port()),
                                       client_auth="require")])
    resp = https_request(t, cg.port(), client_ctx("ecdsa"), get_req("/echo"))
    check(resp.status == 503, "status %d, want 503" % resp.status)


@test("upstream.reset_502")
def t_up_reset(t):
    up, cg, ctx = http_env(t)
    resp = https_request(t, cg.port(), ctx, get_req("/reset"))
    check(resp.status == 502, "status %d, want 502" % resp.status)


@test("upstream.slow_504")
def t_up_slow(t):
    up, cg, ctx = http_env(t, limits={"upstream_response_timeout": "1s"})
    start = time.time()
    resp = https_request(t, cg.port(), ctx, get_req("/slow?ms=4000"))
    check(resp.status == 504, "status %d, want 504" % resp.status)
    check(time.time() - start < T(3), "504 only after %.1fs" % (time.time() - start))


@test("upstream.slow_within_timeout_200")
def t_up_slow_ok(t):
    up, cg, ctx = http_env(t, limits={"upstream_response_timeout": "2s"})
    resp = https_request(t, cg.port(), ctx, get_req("/slow?ms=300"))
    check(resp.status == 200, "status %d" % resp.status)


def badframing_case(kind):
    def fn(t):
        up, cg, ctx = http_env(t)
        resp = https_request(t, cg.port(), ctx, get_req("/badframing?kind=" + kind))
        check(resp.status == 502, "status %d, want 502" % resp.status)
    return fn


for _kind in ("clte", "badcl", "dupcl", "te"):
    TESTS.append(("upstream.bad_framing_%s_502" % _kind, badframing_case(_kind)))


# ---------------------------------------------------------------------------------------------
# relays (tls and tcp modes)

class BioTLS:
    """A TLS client over memory BIOs, so that it can send close_notify (a TLS half-close)
    and keep reading."""

    def __init__(self, t, port, ctx, sni="localhost"):
        self.sock = plain_connect(t, port)
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=sni)
        self.closed = False
        self._loop(self.obj.do_handshake)

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _pull(self):
        data = self.sock.recv(65536)
        if data:
            self.inc.write(data)
        else:
            self.inc.write_eof()
        return data

    def _loop(self, fn, *a):
        while True:
            try:
                res = fn(*a)
                self._flush()
                return res
            except ssl.SSLWantReadError:
                self._flush()
                if not self._pull():
                    raise Failure("EOF during TLS")

    def send(self, data):
        self._loop(self.obj.write, data)

    def close_notify(self):
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._flush()

    def recv_all(self, limit):
        out = b""
        while len(out) < limit:
            try:
                data = self.obj.read(65536)
                if not data:
                    break
                out += data
            except ssl.SSLWantReadError:
                self._flush()
                if not self._pull():
                    break
            except ssl.SSLZeroReturnError:
                break
            except (ssl.SSLError, OSError) as e:
                if out:
                    break
                raise Failure("TLS read failed: %s" % e)
        return out


def relay_env(t, mode, **lkw):
    up = t.upstream()
    if mode == "tls":
        lkw.setdefault("client_auth", "require")
    cg = t.certgate("ecdsa", [listener(mode, mode, up.tcp, **lkw)])
    return up, cg


@test("relay.tls_echo")
def t_relay_tls(t):
    up, cg = relay_env(t, "tls")
    s = tls_connect(t, cg.port(), client_ctx("ecdsa"))
    r = Reader(s)
    for payload in (b"hello\n", os.urandom(100000)):
        s.sendall(payload)
        got = r.read_exact(len(payload))
        check(got == payload, "echo mismatch (%s)" % (r.err or "short"))
    check(up.received() == b"hello\n" + payload, "upstream did not receive the exact bytes")


@test("relay.tls_half_close")
def t_relay_tls_half(t):
    up, cg = relay_env(t, "tls")
    c = BioTLS(t, cg.port(), client_ctx("ecdsa"))
    data = os.urandom(50000)
    c.send(data)
    c.close_notify()
    got = c.recv_all(len(data) + 1)
    check(got == data, "after close_notify got %d of %d bytes back" % (len(got), len(data)))


@test("relay.tls_client_cert_required")
def t_relay_tls_nocert(t):
    up, cg = relay_env(t, "tls")
    res, info = attempt(t, cg.port(), client_ctx("ecdsa", cert=None), b"hello")
    check(res == "refused", "got %s %r" % (res, info))
    time.sleep(0.1)
    check(up.received() == b"", "upstream received bytes")


@test("relay.tcp_echo_half_close")
def t_relay_tcp(t):
    up, cg = relay_env(t, "tcp")
    s = plain_connect(t, cg.port())
    data = os.urandom(200000)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    got = Reader(s).read_to_eof()
    check(got == data, "got %d of %d bytes back" % (len(got), len(data)))
    check(up.received() == data, "upstream did not receive the exact bytes")


@test("relay.tcp_proxy_protocol_v2")
def t_relay_pp2(t):
    up, cg = relay_env(t, "tcp", proxy_protocol=True)
    s = plain_connect(t, cg.port())
    src_port = s.getsockname()[1]
    s.sendall(b"ping")
    s.shutdown(socket.SHUT_WR)
    got = Reader(s).read_to_eof()
    check(got == b"ping", "echo %r" % got)
    pps = up.proxy_headers()
    check(len(pps) == 1, "upstream saw no PROXY v2 header: %r" % up.received()[:40])
    pp = pps[0]
    check(pp["version"] == 2 and pp["command"] == "PROXY", "header %r" % pp)
    check(pp.get("family_name") == "TCP4" and pp["src"] == HOST and pp["src_port"] == src_port,
          "source %r, want %s:%d" % (pp, HOST, src_port))
    check(pp["dst"] == HOST and pp["dst_port"] == cg.port(), "destination %r" % pp)
    check(up.received().startswith(b"\r\n\r\n\x00\r\nQUIT\n"), "header not first")


@test("relay.tls_proxy_protocol_v2")
def t_relay_tls_pp2(t):
    up, cg = relay_env(t, "tls", proxy_protocol=True)
    s = tls_connect(t, cg.port(), client_ctx("ecdsa"))
    src_port = s.getsockname()[1]
    s.sendall(b"ping")
    got = Reader(s).read_exact(4)
    check(got == b"ping", "echo %r" % got)
    pps = up.proxy_headers()
    check(len(pps) == 1, "upstream saw no PROXY v2 header")
    check(pps[0]["src_port"] == src_port and pps[0]["src"] == HOST, "header %r" % pps[0])


@test("relay.tcp_without_proxy_protocol_sends_no_header")
def t_relay_tcp_nopp(t):
    up, cg = relay_env(t, "tcp")
    s = plain_connect(t, cg.port())
    s.sendall(b"x")
    s.shutdown(socket.SHUT_WR)
    Reader(s).read_to_eof()
    check(up.received() == b"x", "upstream received %r" % up.received()[:40])


# ---------------------------------------------------------------------------------------------
# drain

@test("drain.sigterm_completes_inflight")
def t_drain(t):
    up, cg, ctx = http_env(t, limits={"drain_timeout": "5s"})
    result = {}

    def slow():
        try:
            result["resp"] = https_request(t, cg.port(), ctx, get_req("/slow?ms=1500"))
        except Exception as e:  # reported below
            result["err"] = e
    th = threading.Thread(target=slow, daemon=True)
    th.start()
    up.wait_requests(1)
    check(up.requests(), "the slow request never reached the upstream")
    start = time.time()
    cg.signal(signal.SIGTERM)
    time.sleep(0.3)
    res, info = attempt(t, cg.port(), ctx)
    check(res != "ok", "a new connection was served during the drain: %r" % (info,))
    th.join(T(10))
    check("resp" in result, "in-flight request failed: %r" % result.get("err"))
    check(result["resp"].status == 200, "in-flight request got %d" % result["resp"].status)
    done = time.time()
    rc = cg.wait(T(7))
    if Opts.verbose:
        print("    drain: response %.2fs, exit %.2fs after SIGTERM; response Connection: %s"
              % (done - start, time.time() - start, result["resp"].header("connection")))
    check(rc is not None, "certgate still running %.1fs after SIGTERM" % (time.time() - start))
    check(rc == 0, "exit status %d" % rc)
    check(time.time() - start < T(5.5), "exit took %.1fs" % (time.time() - start))


@test("drain.sigterm_idle_exits_fast")
def t_drain_idle(t):
    up, cg, ctx = http_env(t, limits={"drain_timeout": "5s"})
    s = tls_connect(t, cg.port(), ctx)  # an idle keep-alive connection
    s.sendall(get_req("/echo"))
    read_response(Reader(s))
    start = time.time()
    cg.signal(signal.SIGTERM)
    rc = cg.wait(T(7))
    check(rc == 0, "exit status %r" % rc)
    check(time.time() - start < T(5.5), "exit took %.1fs" % (time.time() - start))


# ---------------------------------------------------------------------------------------------
# runner

sys.path.insert(0, HERE)
for _m in ("test_reload", "test_tenancy", "test_xfcc", "test_scripts", "test_security",
           "test_misc"):
    if os.path.exists(os.path.join(HERE, _m + ".py")):
        __import__(_m).register(sys.modules[__name__])


def make_pki():
    for alg, flags in (("ecdsa", []), ("rsa", ["--rsa"])):
        d = os.path.join(Opts.tmp, "pki-" + alg)
        p = subprocess.run(["sh", PKI_SH, d] + flags, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            print("pki.sh failed: %s" % p.stderr, file=sys.stderr)
            return False
        Opts.pki[alg] = d
    return True


def main():
    ap = argparse.ArgumentParser(description="certgate integration tests")
    ap.add_argument("--binary", default=Opts.binary)
    ap.add_argument("--sanitizer", action="store_true")
    ap.add_argument("--wrapper", default="",
                    help="prefix certgate run with this command (e.g. valgrind and options)")
    ap.add_argument("-k", action="append", default=[], help="run tests whose name contains this")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print certgate's last log lines on failure")
    args = ap.parse_args()
    Opts.binary = os.path.abspath(args.binary)
    Opts.sanitizer = args.sanitizer
    Opts.wrapper = shlex.split(args.wrapper)
    Opts.valgrind = bool(Opts.wrapper) and os.path.basename(Opts.wrapper[0]) == "valgrind"
    Opts.scale = 10.0 if Opts.valgrind else 3.0 if args.sanitizer else 1.0
    Opts.keep = args.keep
    Opts.verbose = args.verbose

    selected = [(n, f) for n, f in TESTS if not args.k or any(k in n for k in args.k)]
    if args.list:
        for n, _ in selected:
            print(n)
        return 0
    if not os.access(Opts.binary, os.X_OK):
        print("FAIL setup: no executable %s" % Opts.binary)
        print("0 passed, 1 failed")
        return 1

    Opts.tmp = tempfile.mkdtemp(prefix="certgate-it-")
    passed = failed = 0
    results = []
    try:
        if not make_pki():
            print("FAIL setup: pki.sh")
            print("0 passed, 1 failed")
            return 1
        for name, fn in selected:
            t = Ctx(name)
            err = None
            start = time.time()
            try:
                fn(t)
            except Failure as e:
                err = str(e)
            except Exception as e:
                err = "%s: %s" % (type(e).__name__, e)
                if args.verbose:
                    traceback.print_exc()
            finally:
                problems = t.cleanup()
            hard = [p for p in problems if not p.startswith("warn:")]
            if err is None and hard:
                err = "; ".join(hard)
            results.append((name, err is None))
            if err is None:
                passed += 1
                if args.verbose:
                    print("ok %s (%.1fs)" % (name, time.time() - start), flush=True)
                else:
                    print("ok %s" % name, flush=True)
            else:
                failed += 1
                print("FAIL %s: %s" % (name, err.replace("\n", " ")[:400]), flush=True)
                if args.verbose:
                    for p in t.procs:
                        if isinstance(p, Certgate):
                            print("    certgate stderr: %s" % p.tail(8))
            for p in problems:
                if p.startswith("warn:") and args.verbose:
                    print("    %s: %s" % (name, p))
    except KeyboardInterrupt:
        print("interrupted")
        failed += 1
    finally:
        if not Opts.keep:
            shutil.rmtree(Opts.tmp, ignore_errors=True)
        else:
            print("kept %s" % Opts.tmp)
    groups = {}
    for name, ok in results:
        g = groups.setdefault(name.split(".")[0], [0, 0])
        g[0 if ok else 1] += 1
    print("by group: " + ", ".join("%s %d/%d" % (g, v[0], v[0] + v[1])
                                   for g, v in groups.items()))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def load_test_modules():
    """Adds the tests of every tests/integration/test_*.py: each has register(harness)."""
    sys.path.insert(0, HERE)
    for name in sorted(os.listdir(HERE)):
        if re.fullmatch(r"test_\w+\.py", name):
            mod = __import__(name[:-3])
            if hasattr(mod, "register"):
                mod.register(sys.modules[__name__])


if __name__ == "__main__":
    load_test_modules()
    sys.exit(main())
