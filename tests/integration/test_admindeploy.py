#!/usr/bin/env python3
"""test_admindeploy.py: the admin API without a token (issue 9 item 10, SECURITY rule 31) in the
group `adm.`, and the deployment recipes of issue 12 in the group `deploy.`: `certgate probe`,
sd_notify READY=1, admin.public_address, the Kubernetes manifests (kubectl, offline), the
Dockerfile and compose file, the systemd units (systemd-analyze verify), the cron.d file, the
certbot hook and the shell scripts (shellcheck), each run end to end against a live certgate
where this machine allows. run.py calls register(itself); this file also runs on its own:

    python3 tests/integration/test_admindeploy.py --binary build/certgate [-k adm.] [-v]
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

H = None  # run.py's module, set by register()


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


def root(*parts):
    return os.path.join(H.ROOT, *parts)


def admin_curl(port, method, path, host=None, addr=None):
    """One admin request with curl; returns (status, body). |host| replaces the Host header."""
    args = ["curl", "-sS", "-m", str(int(T(10))), "-X", method, "-o", "-", "-w", "\n%{http_code}"]
    if host is not None:
        args += ["-H", "Host: " + host]
    args.append("http://%s:%d%s" % (addr or H.HOST, port, path))
    p = H.run_cmd(args, timeout=15)
    check(p.returncode == 0, "curl %s %s: exit %d %s" % (method, path, p.returncode, p.stderr))
    body, _, code = p.stdout.rpartition("\n")
    return int(code), body


def subject_path(subject):
    return "/allowed-client-certificate-subjects/" + urllib.parse.quote(subject, safe="")


def reload_count(port):
    code, body = admin_curl(port, "GET", "/metrics")
    check(code == 200, "/metrics: %d" % code)
    m = re.search(r'certgate_reload_total\{source="admin",result="success"\} (\d+)', body)
    check(m, "no admin reload counter in /metrics")
    return int(m.group(1))


# ---------------------------------------------------------------------------------------------
# adm.: the admin API without a token

def t_host_refused(t):
    """A page on evil.example whose name an attacker rebinds to 127.0.0.1 reaches the admin
    port, but its requests carry Host: evil.example: 403, nothing reloaded or changed."""
    up, cg, ctx = H.http_env(t)
    port = cg.admin_port
    state = cg.cfg["access"]["allowed_subjects_file"]
    for host in ("evil.example", "evil.example:%d" % port, "127.0.0.1.nip.io:%d" % port,
                 "localhost.evil.example"):
        code, body = admin_curl(port, "POST", "/reload", host=host)
        check(code == 403, "POST /reload with Host %s: %d %r" % (host, code, body))
        code, _ = admin_curl(port, "PUT", subject_path("CN=mallory,O=Evil"), host=host)
        check(code == 403, "PUT allowlist with Host %s: %d" % (host, code))
        code, _ = admin_curl(port, "GET", "/status", host=host)
        check(code == 403, "GET /status with Host %s: %d" % (host, code))
    check(not os.path.exists(state), "the allowlist state file was written")
    check(reload_count(port) == 0, "a refused POST /reload reloaded")
    # Loopback names and literals are served.
    for host in (None, "localhost:%d" % port, "[::1]:%d" % port, "127.0.0.1"):
        code, _ = admin_curl(port, "GET", "/healthz", host=host)
        check(code == 200, "GET /healthz with Host %s: %d" % (host, code))
    code, _ = admin_curl(port, "POST", "/reload")
    check(code == 200, "POST /reload from curl on 127.0.0.1: %d" % code)
    check(reload_count(port) == 1, "reload count after the allowed POST")


def admin_line(text):
    lines = text.split("\n")
    top = lines.index("admin:")
    return top + 2  # "  address: ..." right below, 1-based


def t_non_loopback_exit_2(t):
    text = H.good_config_text(t)
    port = H.free_port()
    text = re.sub(r"(?m)^admin:\n  address: \S+$", "admin:\n  address: 0.0.0.0:%d" % port, text)
    line = admin_line(text)
    path = H.write_config(t, text)
    for cmd in ("run", "check"):
        p = H.run_cmd([H.Opts.binary, cmd, "-c", path], timeout=10)
        out = p.stdout + p.stderr
        check(p.returncode == 2, "%s: exit %d (want 2): %s" % (cmd, p.returncode, out[-300:]))
        m = re.search(r"certgate\.yaml:(\d+):(\d+): admin\.address \"0\.0\.0\.0:\d+\" is not a "
                      r"loopback address", out)
        check(m, "%s: no FILE:LINE:COL naming admin.address: %r" % (cmd, out[-300:]))
        check(int(m.group(1)) == line, "%s: line %s, want %d" % (cmd, m.group(1), line))
    check(not H.port_open(port), "something listens on the admin port")
    # With a token the same address is accepted.
    tok = os.path.join(t.dir, "token")
    with open(tok, "w") as f:
        f.write("t0ken\n")
    text = text.replace("admin:\n", "admin:\n  token_file: %s\n" % tok)
    p = H.run_cmd([H.Opts.binary, "check", "-c", H.write_config(t, text)])
    check(p.returncode == 0, "with a token: exit %d %s" % (p.returncode, p.stderr[-300:]))


def k8s_state(t, name):
    """A Kubernetes-style volume: name -> ..data/name, ..data -> ..2026_01_01/."""
    d = os.path.join(t.dir, "state-" + name)
    ver = os.path.join(d, "..2026_01_01_00_00_00.1")
    os.makedirs(ver)
    with open(os.path.join(ver, name), "w") as f:
        f.write("[]\n")
    os.chmod(os.path.join(ver, name), 0o640)
    os.symlink("..2026_01_01_00_00_00.1", os.path.join(d, "..data"))
    os.symlink("..data/" + name, os.path.join(d, name))
    return os.path.join(d, name), ver


def t_symlink_state(t):
    """A symlinked allowlist state file stays a symlink: the write replaces its target."""
    link, ver = k8s_state(t, "allowed-subjects.json")
    target = os.path.join(ver, "allowed-subjects.json")
    up = t.upstream(record_max=4096)
    extra = {"access": {"allowed_subjects_file": link}}
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http)], extra=extra)
    subj = "CN=gateway-1,O=Acme"
    code, body = admin_curl(cg.admin_port, "PUT", subject_path(subj))
    check(code == 204, "PUT: %d %r" % (code, body))
    check(os.path.islink(link), "the state file link was replaced by a plain file")
    check(os.readlink(link) == "..data/allowed-subjects.json", "link now points to %r"
          % os.readlink(link))
    check(os.path.islink(os.path.dirname(link) + "/..data"), "..data is no longer a link")
    with open(target) as f:
        check(json.load(f) == [subj], "the target holds %r" % open(target).read())
    check(os.stat(target).st_mode & 0o777 == 0o640, "the target's mode changed to %o"
          % (os.stat(target).st_mode & 0o777))
    check(sorted(os.listdir(ver)) == ["allowed-subjects.json"], "left behind: %r"
          % os.listdir(ver))
    # A dangling link (its target not created yet) gets its target created, the link kept.
    dangling = os.path.join(t.dir, "dangling.json")
    real_dir = os.path.join(t.dir, "real")
    os.makedirs(real_dir)
    os.symlink(os.path.join(real_dir, "subjects.json"), dangling)
    cg2 = t.certgate("ecdsa", [H.listener("https2", "http", up.http)],
                     extra={"access": {"allowed_subjects_file": dangling}})
    code, _ = admin_curl(cg2.admin_port, "PUT", subject_path(subj))
    check(code == 204, "PUT through a dangling link: %d" % code)
    check(os.path.islink(dangling), "the dangling link was replaced")
    with open(os.path.join(real_dir, "subjects.json")) as f:
        check(json.load(f) == [subj], "the new target holds %r" % f.read())
    # The state survives a restart through the link.
    cg.stop()
    cg3 = t.certgate("ecdsa", [H.listener("https3", "http", up.http)], extra=extra)
    code, body = admin_curl(cg3.admin_port, "GET", "/allowed-client-certificate-subjects")
    check(code == 200 and json.loads(body) == [subj], "after restart: %d %r" % (code, body))


def public_env(t):
    up = t.upstream(record_max=4096)
    pub = H.free_port()
    extra = {"admin": {"address": "%s:%d" % (H.HOST, H.free_port()),
                       "public_address": "%s:%d" % (H.HOST, pub)}}
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http)], extra=extra)
    return cg, pub


def t_public_address(t):
    """admin.public_address answers probes and metrics for any Host, and nothing else."""
    cg, pub = public_env(t)
    for path in ("/healthz", "/ready", "/metrics"):
        code, body = admin_curl(pub, "GET", path, host="10.1.2.3:9902")
        check(code == 200, "public GET %s: %d" % (path, code))
    code, body = admin_curl(pub, "GET", "/metrics", host="10.1.2.3:9902")
    check("certgate_connections_total" in body, "public /metrics lacks the counters")
    for method, path in (("GET", "/status"), ("POST", "/reload"),
                         ("GET", "/allowed-client-certificate-subjects"),
                         ("PUT", subject_path("CN=x")), ("DELETE", subject_path("CN=x"))):
        code, _ = admin_curl(pub, method, path)
        check(code == 404, "public %s %s: %d (want 404)" % (method, path, code))
    check(reload_count(cg.admin_port) == 0, "the public listener reloaded")
    code, _ = admin_curl(cg.admin_port, "GET", "/status")
    check(code == 200, "/status on admin.address: %d" % code)


# ---------------------------------------------------------------------------------------------
# deploy.: certgate probe and sd_notify

def probe(path, timeout=10):
    return H.run_cmd([H.Opts.binary, "probe", "-c", path], timeout=timeout)


def t_probe(t):
    up = t.upstream(record_max=4096)
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http)])
    p = probe(cg.path)
    check(p.returncode == 0, "probe of a ready instance: exit %d %s" % (p.returncode, p.stderr))
    cg.signal(signal.SIGTERM)
    check(cg.wait(T(10)) == 0, "certgate did not stop")
    p = probe(cg.path)
    check(p.returncode == 1, "probe of a stopped instance: exit %d" % p.returncode)
    check("probe:" in p.stderr and "refused" in p.stderr.lower(), "no reason: %r" % p.stderr)
    # Configuration problems are 2: no admin address, a broken file, a missing file.
    text = open(cg.path).read()
    no_admin = re.sub(r"(?m)^admin:\n  address: \S+\n", "", text)
    check(no_admin != text, "could not remove the admin section")
    p = probe(H.write_config(t, no_admin))
    check(p.returncode == 2 and "admin.address" in p.stderr, "no admin: exit %d %r"
          % (p.returncode, p.stderr))
    p = probe(H.write_config(t, text + "bogus: 1\n"))
    check(p.returncode == 2 and re.search(r"certgate\.yaml:\d+:\d+:", p.stderr),
          "broken config: exit %d %r" % (p.returncode, p.stderr))
    p = probe(os.path.join(t.dir, "nope.yaml"))
    check(p.returncode == 2, "missing config: exit %d" % p.returncode)
    p = H.run_cmd([H.Opts.binary, "probe", "-x"])
    check(p.returncode == 2, "usage error: exit %d" % p.returncode)


def t_probe_public_and_wildcard(t):
    """Only admin.public_address set, on 0.0.0.0: the probe asks loopback."""
    up = t.upstream(record_max=4096)
    pub = H.free_port()
    extra = {"admin": {"public_address": "0.0.0.0:%d" % pub}}
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http)], extra=extra)
    deadline = time.time() + T(5)
    while time.time() < deadline and not H.port_open(pub):
        time.sleep(0.05)
    p = probe(cg.path)
    check(p.returncode == 0, "probe via public 0.0.0.0: exit %d %s" % (p.returncode, p.stderr))


def t_probe_not_ready(t):
    """An admin port that answers 503 (a stand-in server) makes the probe exit 1."""
    srv = socket.socket()
    srv.bind((H.HOST, 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    t.socks.append(srv)
    text = re.sub(r"(?m)^(admin:\n  address: )\S+$", r"\g<1>127.0.0.1:%d" % port,
                  H.good_config_text(t))
    path = H.write_config(t, text)
    proc = subprocess.Popen([H.Opts.binary, "probe", "-c", path], stderr=subprocess.PIPE)
    conn, _ = srv.accept()
    conn.settimeout(T(5))
    req = conn.recv(4096)
    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 10\r\n\r\nnot ready\n")
    conn.close()
    rc = proc.wait(timeout=T(10))
    err = proc.stderr.read().decode()
    proc.stderr.close()
    check(req.startswith(b"GET /ready HTTP/1.1\r\n"), "probe sent %r" % req[:60])
    check(b"\r\nHost: localhost\r\n" in req, "probe Host: %r" % req)
    check(rc == 1 and "503" in err, "503: exit %d %r" % (rc, err))
    # One that never answers: exit 1 within the probe's own deadline.
    start = time.time()
    p = probe(path, timeout=15)
    check(p.returncode == 1, "silent server: exit %d" % p.returncode)
    check(time.time() - start < T(8), "the probe waited %.1fs" % (time.time() - start))


def notify_case(abstract):
    def fn(t):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        t.socks.append(s)
        if abstract:
            name = "certgate-test-%d-%d" % (os.getpid(), H.free_port())
            s.bind("\0" + name)
            env_value = "@" + name
        else:
            env_value = os.path.join(t.dir, "notify.sock")
            s.bind(env_value)
        s.settimeout(T(10))
        up = t.upstream(record_max=4096)
        lst = H.listener("https", "http", up.http)
        port = int(lst["address"].rsplit(":", 1)[1])
        cfg = H.make_config(t, "ecdsa", [lst], extra={"admin": None})
        cg = H.Certgate.__new__(H.Certgate)
        # Started by hand: Certgate() would wait for the port, and READY=1 must come by itself.
        path = os.path.join(t.dir, "notify.yaml")
        with open(path, "w") as f:
            f.write(H.yaml_dump(cfg) + "\n")
        env = dict(os.environ, NOTIFY_SOCKET=env_value)
        errf = open(os.path.join(t.dir, "stderr"), "wb")
        proc = subprocess.Popen([H.Opts.binary, "run", "-c", path], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=errf, env=env)
        cg.proc, cg.t, cg.rc = proc, t, None
        cg.stderr_path = os.path.join(t.dir, "stderr")
        t.procs.append(cg)
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            raise H.Failure("no notification within %.0fs" % T(10))
        check("READY=1" in msg.split("\n"), "notification %r" % msg)
        # Ready means accepting: the listener takes a TLS handshake right now.
        res, resp = H.attempt(t, port, H.client_ctx("ecdsa"))
        check(res == "ok" and resp.status == 200, "after READY=1: %s %r" % (res, resp))
    return fn


# ---------------------------------------------------------------------------------------------
# deploy.: the recipes. Helpers first.

NOTES = []
_COMPAT = {}


def TS():
    return mod("test_scripts")


def mod(name):
    """Another test module of this directory, registered with the same harness."""
    m = __import__(name)
    m.register(H)
    return m


def note(text):
    if text not in NOTES:
        NOTES.append(text)
        if H.Opts.verbose:
            print("    note: " + text, flush=True)


def deploy(*parts):
    return root("deploy", *parts)


def read(path):
    with open(path) as f:
        return f.read()


def compat(text):
    """The recipes configure limits.shutdown_delay (issue 12 asks for it; another branch
    implements it). A binary that does not know the key yet gets the text without it, noted."""
    if "known" not in _COMPAT:
        cfg = os.path.join(H.Opts.tmp, "compat-shutdown-delay.yaml")
        with open(cfg, "w") as f:
            f.write("limits: {shutdown_delay: 5s}\nlisteners:\n  - {name: a, address: "
                    "'127.0.0.1:0', mode: tcp, upstream: '127.0.0.1:9'}\n")
        p = H.run_cmd([H.Opts.binary, "check", "-c", cfg])
        _COMPAT["known"] = "shutdown_delay" not in p.stderr
    if _COMPAT["known"]:
        return text
    note("this binary does not know limits.shutdown_delay yet: the recipes' configurations "
         "were checked without that line")
    return re.sub(r"(?m)^[ \t]*shutdown_delay:.*\n", "", text)


def yaml_docs(text):
    """YAML documents as Python objects: PyYAML when this Python has it, else the system
    python3 (python3-yaml comes with docker-compose, which install-deps installs)."""
    try:
        import yaml
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except ImportError:
        p = subprocess.run(["/usr/bin/python3", "-c", "import json,sys,yaml; json.dump([d for d "
                            "in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)"],
                           input=text, capture_output=True, text=True, timeout=T(30))
        check(p.returncode == 0, "no YAML parser: %s" % p.stderr[-200:])
        return json.loads(p.stdout)


def duration_s(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text).strip())
    check(m, "not a duration: %r" % text)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def config_limits(text):
    """(shutdown_delay, drain_timeout) in seconds of a certgate.yaml text (CONTRACT defaults)."""
    lim = (yaml_docs(text)[0].get("limits") or {})
    return (duration_s(lim.get("shutdown_delay", "0s")), duration_s(lim.get("drain_timeout", "30s")))


_GW = {}


def gateway_pki():
    """A tenant CA and a gateway leaf whose CN is an EUI (the recipes' subject_cn_pattern):
    {ca, crt, key} paths, made once per run."""
    if _GW:
        return _GW
    d = os.path.join(H.Opts.tmp, "deploy-gateway")
    os.makedirs(d, exist_ok=True)
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=clientAuth\n")
    ca, cakey, key, csr, crt = (os.path.join(d, n) for n in
                                ("ca.crt", "ca.key", "gw.key", "gw.csr", "gw.crt"))
    for args in (["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-nodes", "-keyout", cakey, "-out", ca, "-days", "30",
                  "-subj", "/O=Acme gateways/CN=Acme gateway CA", "-addext",
                  "basicConstraints=critical,CA:true", "-addext",
                  "keyUsage=critical,keyCertSign,cRLSign"],
                 ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-nodes", "-keyout", key, "-out", csr, "-subj", "/O=Acme/CN=0011223344556677"],
                 ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", cakey,
                  "-set_serial", "4242", "-days", "30", "-sha256", "-extfile", ext, "-out", crt]):
        p = subprocess.run(args, capture_output=True, text=True, timeout=T(30))
        check(p.returncode == 0, "openssl: %s" % p.stderr[-300:])
    _GW.update(ca=ca, crt=crt, key=key)
    return _GW


def gateway_request(port, sni="acme.lorawan.example.com"):
    """One request as a gateway of tenant acme: ("ok", Resp) or ("refused", why)."""
    import ssl
    gw = gateway_pki()
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                     cafile=os.path.join(H.Opts.pki["ecdsa"], "root.crt"))
    ctx.check_hostname = False  # the test server certificate is for localhost
    ctx.load_cert_chain(gw["crt"], gw["key"])
    try:
        raw = socket.create_connection((H.HOST, port), timeout=T(5))
        s = ctx.wrap_socket(raw, server_hostname=sni)
        t_sock = s
        t_sock.sendall(("GET /cups HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                        % sni).encode())
        resp = H.read_response(H.Reader(t_sock))
        s.close()
        return "ok", resp
    except (ssl.SSLError, OSError, H.Failure) as e:
        return "refused", str(e)


def tenant_files(src, flat):
    """Adds tenant acme (the gateway CA) to a CA-store source, laid out or flat."""
    gw = gateway_pki()
    if flat:
        shutil.copy(gw["ca"], os.path.join(src, "tenant.acme.acme.pem"))
    else:
        os.makedirs(os.path.join(src, "tenants", "acme"), exist_ok=True)
        shutil.copy(gw["ca"], os.path.join(src, "tenants", "acme", "acme.pem"))
    tmp = os.path.join(src, ".index.tmp")
    with open(tmp, "w") as f:
        f.write("tenants:\n  acme:\n  - acme.pem\n")
    os.rename(tmp, os.path.join(src, "index.yml"))


class Live:
    """certgate run on a recipe's configuration text (paths and ports already replaced)."""

    def __init__(self, t, text, name):
        self.t = t
        self.path = os.path.join(t.dir, name + ".yaml")
        with open(self.path, "w") as f:
            f.write(compat(text))
        self.stderr_path = os.path.join(t.dir, name + ".stderr")
        self.rc = None
        self.proc = subprocess.Popen([H.Opts.binary, "run", "-c", self.path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.stderr_path, "wb"))
        t.procs.append(self)
        deadline = time.time() + T(10)
        while True:
            if self.proc.poll() is not None:
                raise H.Failure("certgate (%s) exited with %d: %s" % (name, self.proc.returncode,
                                                                     self.tail()))
            if probe(self.path).returncode == 0:
                return
            check(time.time() < deadline, "certgate (%s) not ready: %s" % (name, self.tail()))
            time.sleep(0.1)

    def tail(self, n=6):
        return H.Certgate.tail(self, n)

    def stderr(self):
        return H.Certgate.stderr(self)

    def signal(self, sig):
        H.Certgate.signal(self, sig)

    def wait(self, timeout):
        return H.Certgate.wait(self, timeout)

    def stop(self):
        return H.Certgate.stop(self)


class Background:
    """A job (a sync loop, a rotation loop) run in the background; stop() ends its group."""

    def __init__(self, t, args, env=None, name="job"):
        self.out_path = os.path.join(t.dir, name + ".out")
        penv = dict(os.environ)
        penv["CERTGATE"] = H.Opts.binary
        penv.update(env or {})
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=open(self.out_path, "wb"), stderr=subprocess.STDOUT,
                                     env=penv, start_new_session=True)
        t.procs.append(self)

    def output(self):
        return read(self.out_path)

    def terminate(self, timeout=5):
        """SIGTERM to the job alone (as a container runtime does); its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=T(timeout))
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        return []


def wait_for(fn, what, timeout=10):
    deadline = time.time() + T(timeout)
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.1)
    raise H.Failure("timed out waiting for %s" % what)


def served_leaf(port, sni="acme.lorawan.example.com"):
    """The leaf (DER) a handshake for tenant acme sees (the recipes reject unknown SNIs)."""
    import ssl
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    gw = gateway_pki()
    ctx.load_cert_chain(gw["crt"], gw["key"])
    try:
        raw = socket.create_connection((H.HOST, port), timeout=T(3))
    except OSError:
        return None
    try:
        s = ctx.wrap_socket(raw, server_hostname=sni)
        der = s.getpeercert(binary_form=True)
        s.close()
        return der
    except (ssl.SSLError, OSError):
        raw.close()
        return None


def lorawan_text(t, text, creds, store, up):
    """deploy/certgate.yaml (or the Kubernetes one) pointed at test paths and free ports."""
    ports = {}
    for old in ("0.0.0.0:8443", "0.0.0.0:8887"):
        ports[old] = H.free_port()
        text = text.replace(old, "%s:%d" % (H.HOST, ports[old]))
    admin, public = H.free_port(), H.free_port()
    text = (text.replace("/etc/certgate/credentials", creds)
            .replace("/etc/certgate/ca-store", store)
            .replace("127.0.0.1:9901", "%s:%d" % (H.HOST, admin))
            .replace("0.0.0.0:9902", "%s:%d" % (H.HOST, public))
            .replace("127.0.0.1:1885", up.http).replace("127.0.0.1:1887", up.http)
            .replace("workers: auto", "workers: 2"))
    text = text.replace("poll_interval: 10s", "poll_interval: 1s")
    return text, ports["0.0.0.0:8443"], admin, public


# --- shell ----------------------------------------------------------------------------------

SHELL_FILES = ["scripts/rotate-credentials.sh", "scripts/sync-ca-store.sh",
               "scripts/install-deps.sh", "deploy/certbot/certgate-deploy-hook.sh"]


def t_shellcheck(t):
    sc = shutil.which("shellcheck")
    check(sc, "shellcheck is not installed (make deps installs it)")
    files = [root(f) for f in SHELL_FILES]
    # The shell embedded in the recipes: the cron jobs and the compose rotation loop.
    cron = os.path.join(t.dir, "cron-jobs.sh")
    with open(cron, "w") as f:
        f.write("#!/bin/sh\n" + "\n".join(cmd for _, cmd in cron_jobs()) + "\n")
    loop = os.path.join(t.dir, "compose-rotate.sh")
    with open(loop, "w") as f:
        f.write("#!/bin/bash\n" + compose()["services"]["rotate"]["command"][0]
                .replace("$$", "$"))
    for f in files + [cron, loop]:
        p = H.run_cmd(["bash", "-n", f] if not f.endswith("cron-jobs.sh") else ["sh", "-n", f])
        check(p.returncode == 0, "syntax %s: %s" % (f, p.stderr))
    p = H.run_cmd([sc, "-x"] + files + [cron, loop], timeout=120, cwd=H.ROOT)
    check(p.returncode == 0, "shellcheck: %s" % (p.stdout + p.stderr)[:600])


# --- Kubernetes -----------------------------------------------------------------------------

CONTAINER_KEYS = {"name", "image", "args", "command", "env", "ports", "restartPolicy",
                  "startupProbe", "readinessProbe", "livenessProbe", "lifecycle", "resources",
                  "securityContext", "volumeMounts", "workingDir", "envFrom", "imagePullPolicy"}


def kubectl(args, stdin=None):
    kc = shutil.which("kubectl")
    check(kc, "kubectl is not installed (make deps installs kubernetes-client)")
    p = subprocess.run([kc] + args, input=stdin, capture_output=True, text=True,
                       timeout=T(60))
    check(p.returncode == 0, "kubectl %s: %s" % (" ".join(args[:2]), p.stderr[-400:]))
    return p.stdout


def k8s_objects(overlay):
    """The objects of a kustomization, rendered and parsed by kubectl alone (offline)."""
    rendered = kubectl(["kustomize", deploy("kubernetes", overlay)])
    out = kubectl(["annotate", "--local", "-f", "-", "certgate.test/validated=yes", "-o",
                   "json"], stdin=rendered)
    objs, dec, i = [], json.JSONDecoder(), 0
    while i < len(out):  # one JSON object per resource, one after the other
        if out[i].isspace():
            i += 1
            continue
        doc, i = dec.raw_decode(out, i)
        objs += doc["items"] if doc.get("kind") == "List" else [doc]
    return objs


def pod_spec(objs):
    dep = [o for o in objs if o["kind"] == "Deployment"]
    check(len(dep) == 1, "one Deployment expected, got %d" % len(dep))
    return dep[0]["spec"]["template"], dep[0]["spec"]["template"]["spec"]


def k8s_config(objs):
    cm = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    return cm["certgate-config"]["data"]["certgate.yaml"], cm


def check_pod(objs, native):
    tmpl, spec = pod_spec(objs)
    check(not [o for o in objs if o["kind"] == "Secret"],
          "the manifest defines a Secret: applying it would blank what cert-manager wrote")
    certs = [o for o in objs if o["kind"] == "Certificate"]
    check(len(certs) == 1 and certs[0]["apiVersion"] == "cert-manager.io/v1",
          "no cert-manager Certificate")
    inits = {c["name"]: c for c in spec.get("initContainers", [])}
    mains = {c["name"]: c for c in spec["containers"]}
    allc = dict(inits, **mains)
    for c in allc.values():
        extra = set(c) - CONTAINER_KEYS
        check(not extra, "container %s has unknown keys %r" % (c["name"], extra))
    if native:
        check(list(inits) == ["ca-sync", "certgate"], "init containers %r" % list(inits))
        for n in ("ca-sync", "certgate"):
            check(inits[n].get("restartPolicy") == "Always", "%s is not a native sidecar" % n)
        check(list(mains) == ["app"], "containers %r" % list(mains))
    else:
        check("ca-seed" in inits and "restartPolicy" not in inits["ca-seed"], "no ca-seed")
        for n in ("ca-sync", "certgate"):
            check(n in mains and "restartPolicy" not in mains[n], "%s not a plain container" % n)
    cg = allc["certgate"]
    vols = {v["name"]: v for v in spec["volumes"]}
    for c in allc.values():
        for m in c.get("volumeMounts", []):
            check(m["name"] in vols, "%s mounts unknown volume %s" % (c["name"], m["name"]))
    check(vols["tls"]["secret"]["secretName"] == certs[0]["spec"]["secretName"],
          "the credentials volume is not the Certificate's Secret")
    check("emptyDir" in vols["ca-store"], "the CA store is not an emptyDir")
    check("items" not in vols["ca-source"]["configMap"],
          "the CA source ConfigMap lists items: a new tenant would need a rollout")
    text, cms = k8s_config(objs)
    check(cms["certgate-ca-source"]["data"].get("index.yml", None) == "",
          "the shipped CA source is not an empty index.yml")
    cfg = yaml_docs(text)[0]
    admin = cfg["admin"]
    check(admin["address"].startswith("127.0.0.1:") and "token_file" not in admin,
          "admin.address %r" % admin)
    pub_port = int(admin["public_address"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in cg["ports"]}
    for probe_name, path in (("startupProbe", "/ready"), ("readinessProbe", "/ready"),
                             ("livenessProbe", "/healthz")):
        hg = cg[probe_name]["httpGet"]
        check(hg["path"] == path and ports.get(hg["port"]) == pub_port,
              "%s %r does not ask %s on admin.public_address" % (probe_name, hg, path))
    ann = tmpl["metadata"]["annotations"]
    check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") ==
          str(pub_port) and ann.get("prometheus.io/path") == "/metrics", "scrape annotations")
    delay, drain = config_limits(text)
    check(delay == 5, "limits.shutdown_delay %r, want 5s" % delay)
    pre = mains["app"]["lifecycle"]["preStop"]
    pre_s = pre["sleep"]["seconds"] if "sleep" in pre else int(pre["exec"]["command"][-1])
    grace = spec["terminationGracePeriodSeconds"]
    if native:  # the app stops first, then certgate: the times add up
        check(pre_s >= delay and grace >= pre_s + delay + drain + 10,
              "grace %ss for preStop %ss + shutdown_delay %ss + drain %ss + the app's stop"
              % (grace, pre_s, delay, drain))
    else:  # all at once: the app must outlive certgate's shutdown
        check(pre_s >= delay + drain and grace >= pre_s + 10,
              "fallback preStop %ss for shutdown_delay %ss + drain %ss (grace %ss)"
              % (pre_s, delay, drain, grace))
    sync = allc["ca-sync"]
    check("--every" in sync["args"] and "--init-empty" in sync["args"], "ca-sync args")
    mounts = {m["mountPath"]: m for m in cg["volumeMounts"]}
    check(cfg["credentials"]["dir"] in mounts and cfg["ca_store"]["dir"] in mounts,
          "certgate does not mount its credentials and CA store")
    check(mounts[cfg["ca_store"]["dir"]]["name"] == "ca-store" and
          sync["args"][-1] == cfg["ca_store"]["dir"], "ca-sync does not fill certgate's store")
    svc = [o for o in objs if o["kind"] == "Service"][0]
    check(all(p["targetPort"] in ports for p in svc["spec"]["ports"]), "Service target ports")
    check(str(pub_port) not in json.dumps(svc), "the public admin port is in the Service")
    return text, cms, allc


def t_kubernetes_offline(t):
    objs = k8s_objects("base")
    kinds = sorted(o["kind"] for o in objs)
    check(kinds == ["Certificate", "ConfigMap", "ConfigMap", "Deployment", "Service"],
          "objects %r" % kinds)
    # kubectl decodes the plain file too (apply -f).
    names = kubectl(["annotate", "--local", "-f", deploy("kubernetes", "base",
                                                         "certgate-sidecar.yaml"),
                     "certgate.test/validated=yes", "-o", "name"]).split()
    check(len(names) == 5, "kubectl read %r" % names)
    check_pod(objs, native=True)
    check_pod(k8s_objects("fallback"), native=False)


def t_kubernetes_as_shipped(t):
    """The pod as shipped, on this machine: the ca-sync command (flat ConfigMap source, empty
    index.yml) seeds an empty store, certgate starts on the ConfigMap's configuration with a
    Secret-style credentials mount, probes and metrics answer on the public port, a gateway
    is refused; a tenant added to the ConfigMap is served without a restart; SIGTERM ends
    both within the grace period."""
    objs = k8s_objects("base")
    text, cms, allc = check_pod(objs, native=True)
    src = os.path.join(t.dir, "ca-source")  # the ConfigMap mount: flat keys
    os.makedirs(src)
    for k, v in cms["certgate-ca-source"]["data"].items():
        with open(os.path.join(src, k), "w") as f:
            f.write(v)
    store = os.path.join(t.dir, "ca-store")  # the emptyDir
    os.makedirs(store)
    args = [a.replace("/ca-source", src).replace("/etc/certgate/ca-store", store)
            for a in allc["ca-sync"]["args"]]
    args[args.index("--every") + 1] = "1"  # 30s in the pod
    sync = Background(t, ["bash", root("scripts", "sync-ca-store.sh")] + args, name="ca-sync")
    wait_for(lambda: os.path.exists(os.path.join(store, "index.yml")), "the seeded store")
    check(read(os.path.join(store, "index.yml")) == "", "the seeded index.yml is not empty")
    creds = TS().k8s_creds(t)  # the kubelet's ..data layout
    up = t.upstream(record_max=4096)
    text, port, admin, public = lorawan_text(t, text, creds, store, up)
    cg = Live(t, text, "k8s")
    for path in ("/healthz", "/ready", "/metrics"):
        code, _ = admin_curl(public, "GET", path, host="10.244.1.7:9902")
        check(code == 200, "kubelet-style GET %s: %d" % (path, code))
    code, _ = admin_curl(public, "POST", "/reload")
    check(code == 404, "POST /reload on the public port: %d" % code)
    res, info = gateway_request(port)
    check(res == "refused", "a gateway got in with no CA: %s %r" % (res, info))
    tenant_files(src, flat=True)

    def served():
        res, resp = gateway_request(port)
        return res == "ok" and resp.status == 200
    wait_for(served, "the new tenant through ca-sync", timeout=15)
    reqs = up.requests()
    check(reqs and any("x-forwarded-client-cert" in json.dumps(r).lower() for r in reqs),
          "no XFCC upstream")
    rc = sync.terminate()
    check(rc == 0, "ca-sync exit %r on SIGTERM: %s" % (rc, sync.output()[-300:]))
    start = time.time()
    cg.signal(signal.SIGTERM)
    delay, drain = config_limits(cg_text(cg))
    rc = cg.wait(T(delay + drain + 5))
    check(rc == 0, "certgate exit %r after SIGTERM: %s" % (rc, cg.tail()))
    check(time.time() - start <= delay + drain + 2, "stopping took %.1fs" % (time.time() - start))


def cg_text(cg):
    return read(cg.path)


# --- Docker ---------------------------------------------------------------------------------

def compose():
    env = dict(os.environ, CERTGATE_UID="1000", CERTGATE_GID="1000")
    dc = shutil.which("docker-compose")
    check(dc, "docker-compose is not installed (make deps installs it)")
    p = subprocess.run([dc, "-f", deploy("docker-compose.yml"), "config"], capture_output=True,
                       text=True, timeout=T(60), env=env, cwd=deploy())
    check(p.returncode == 0, "docker-compose config: %s" % p.stderr[-400:])
    return yaml_docs(p.stdout)[0]


def t_docker_static(t):
    df = read(deploy("Dockerfile"))
    stages = re.findall(r"(?m)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", df)
    check([s[1] for s in stages] == ["build", "runtime", "ca-sync", ""] and
          stages[-1][0] == "runtime", "stages %r" % stages)
    hc = re.search(r"(?m)^HEALTHCHECK .*\n\s+CMD (\[.*\])", df)
    check(hc, "no HEALTHCHECK")
    cmd = json.loads(hc.group(1))
    check(cmd[1:3] == ["probe", "-c"], "HEALTHCHECK %r" % cmd)
    code = lambda text: "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    check("x86_64" not in code(df) and "/usr/lib/x86_64" not in code(read(root("Makefile"))),
          "an x86_64 path is hard-coded")
    # The Makefile's multiarch path: what dpkg says here, and what another triplet gives.
    def bssl_lib(*args):
        p = H.run_cmd(["make", "-s", "--no-print-directory", "-C", H.ROOT, "--eval",
                       "print-bssl: ; @echo $(BSSL_LIB)", "print-bssl"] + list(args), timeout=60)
        check(p.returncode == 0, "make: %s" % p.stderr[-200:])
        return p.stdout.strip()
    check(bssl_lib("MULTIARCH=aarch64-linux-gnu") == "/usr/lib/aarch64-linux-gnu/android",
          "MULTIARCH does not set BSSL_LIB")
    arch = H.run_cmd(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"]).stdout.strip()
    check(bssl_lib() == "/usr/lib/%s/android" % arch, "the Makefile did not find %s" % arch)
    check(os.path.isdir(bssl_lib()), "%s does not exist" % bssl_lib())
    # The image's configuration and health check work against a live instance.
    up = t.upstream(record_max=4096)
    creds = TS().k8s_creds(t)
    store = os.path.join(t.dir, "store")
    os.makedirs(store)
    open(os.path.join(store, "index.yml"), "w").close()
    text, port, admin, _ = lorawan_text(t, read(deploy("certgate.yaml")), creds, store, up)
    cg = Live(t, text, "image")
    p = H.run_cmd([H.Opts.binary] + cmd[1:-1] + [cg.path])
    check(p.returncode == 0, "the HEALTHCHECK command on a ready instance: %d" % p.returncode)
    cg.signal(signal.SIGTERM)
    cg.wait(T(40))
    p = H.run_cmd([H.Opts.binary] + cmd[1:-1] + [cg.path])
    check(p.returncode == 1, "the HEALTHCHECK command on a stopped instance: %d" % p.returncode)


def t_compose(t):
    """docker-compose validates the file; the wiring (health checks, order, grace) is right;
    the ca-sync and rotate commands run on this machine against a live certgate."""
    c = compose()
    sv = c["services"]
    check({"app", "certgate", "ca-sync", "rotate"} <= set(sv), "services %r" % list(sv))
    cg_s = sv["certgate"]
    check("probe" in cg_s["healthcheck"]["test"], "certgate health check %r"
          % cg_s["healthcheck"])
    dep = cg_s["depends_on"]
    check(dep["ca-sync"]["condition"] == "service_healthy" and
          dep["rotate"]["condition"] == "service_healthy", "certgate depends_on %r" % dep)
    cfg_text = read(deploy("certgate.yaml"))
    delay, drain = config_limits(cfg_text)
    check(duration_s(cg_s["stop_grace_period"]) >= delay + drain + 2,
          "stop_grace_period %s for shutdown_delay %ss + drain %ss"
          % (cg_s["stop_grace_period"], delay, drain))
    for name in ("ca-sync", "rotate"):
        check(sv[name].get("healthcheck"), "%s has no health check" % name)
    # Run the two jobs here: their container paths mapped to test directories.
    run_dir = os.path.join(t.dir, "run")
    paths = {"/ca-source": os.path.join(run_dir, "ca-source"),
             "/etc/certgate/ca-store": os.path.join(run_dir, "ca-store"),
             "/etc/certgate/credentials": os.path.join(run_dir, "credentials"),
             "/incoming": os.path.join(run_dir, "incoming")}
    for d in paths.values():
        os.makedirs(d)
    open(os.path.join(paths["/ca-source"], "index.yml"), "w").close()
    chain, key, leaf_der = TS().leaves()[1]
    with open(os.path.join(paths["/incoming"], "fullchain.pem"), "w") as f:
        f.write(chain)
    with open(os.path.join(paths["/incoming"], "privkey.pem"), "w") as f:
        f.write(key)

    def mapped(s):
        for k in sorted(paths, key=len, reverse=True):
            s = s.replace(k, paths[k])
        return s
    up = t.upstream(record_max=4096)
    text, port, admin, _ = lorawan_text(t, cfg_text, paths["/etc/certgate/credentials"],
                                        paths["/etc/certgate/ca-store"], up)
    conf = os.path.join(t.dir, "compose-certgate.yaml")
    with open(conf, "w") as f:
        f.write(compat(text))
    sync_args = [mapped(a) for a in sv["ca-sync"]["command"]]
    sync_args[sync_args.index("--every") + 1] = "1"
    sync = Background(t, ["bash", root("scripts", "sync-ca-store.sh")] + sync_args,
                      name="compose-ca-sync")
    wait_for(lambda: os.path.exists(os.path.join(paths["/etc/certgate/ca-store"], "index.yml")),
             "ca-sync's first store (its health check)")
    loop = mapped(sv["rotate"]["command"][0]).replace("$$", "$").replace(
        "/etc/certgate/certgate.yaml", conf).replace("sleep 3600", "sleep 1")
    bindir = os.path.join(t.dir, "bin")
    os.makedirs(bindir)
    for n in ("rotate-credentials.sh", "sync-ca-store.sh"):
        os.symlink(root("scripts", n), os.path.join(bindir, n))
    rot = Background(t, ["bash", "-c", loop], name="compose-rotate",
                     env={"PATH": bindir + os.pathsep + os.environ["PATH"]})
    wait_for(lambda: os.path.exists(os.path.join(paths["/etc/certgate/credentials"], "tls.crt")),
             "rotate's first install (its health check)")
    cg = Live(t, text, "compose")
    tenant_files(paths["/ca-source"], flat=False)
    wait_for(lambda: gateway_request(port)[0] == "ok", "the tenant added to ./run/ca-source",
             timeout=15)
    check(served_leaf(port) == leaf_der, "certgate does not serve the incoming pair")
    time.sleep(T(1.5))  # another rotate turn: the unchanged pair is skipped
    check("already installed" in rot.output(), "rotate reinstalled an unchanged pair: %s"
          % rot.output()[-300:])
    for job in (sync, rot):
        rc = job.terminate()
        check(rc == 0, "a job exited %r on SIGTERM: %s" % (rc, job.output()[-300:]))
    cg.stop()


# --- systemd --------------------------------------------------------------------------------

UNITS = ["certgate.service", "certgate-rotate.service", "certgate-rotate.timer"]


def unit_text(name):
    return read(deploy("systemd", name))


def unit_values(text, key):
    return [m.group(1).strip() for m in re.finditer(r"(?m)^%s=(.*)$" % re.escape(key), text)]


def t_systemd_verify(t):
    sa = shutil.which("systemd-analyze")
    check(sa, "systemd-analyze is not installed (make deps installs systemd)")
    d = os.path.join(t.dir, "units")
    os.makedirs(d)
    env_file = os.path.join(t.dir, "certgate-rotate")
    shutil.copy(deploy("systemd", "certgate-rotate.default"), env_file)
    for name in UNITS:
        text = (unit_text(name).replace("/usr/local/bin/certgate", H.Opts.binary)
                .replace("/usr/local/bin/", root("scripts") + "/")
                .replace("/etc/default/certgate-rotate", env_file))
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    p = subprocess.run([sa, "verify"] + [os.path.join(d, n) for n in UNITS],
                       capture_output=True, text=True, timeout=T(60), cwd=d)
    out = (p.stdout + p.stderr).strip()
    check(p.returncode == 0 and out == "", "systemd-analyze verify: rc %d: %s"
          % (p.returncode, out[:600]))
    svc = unit_text("certgate.service")
    check(unit_values(svc, "Type") == ["notify"] and unit_values(svc, "NotifyAccess") == ["main"],
          "certgate.service is not Type=notify")
    delay, drain = config_limits(read(deploy("certgate.yaml")))
    stop = duration_s(unit_values(svc, "TimeoutStopSec")[0] + "s")
    check(stop >= delay + drain + 2, "TimeoutStopSec %s for shutdown_delay %ss + drain %ss"
          % (stop, delay, drain))
    check("RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" in svc,
          "AF_UNIX (NOTIFY_SOCKET) is not allowed")
    rot = unit_text("certgate-rotate.service")
    check(unit_values(rot, "Type") == ["oneshot"] and len(unit_values(rot, "ExecStart")) == 2,
          "certgate-rotate.service")
    check(unit_values(unit_text("certgate-rotate.timer"), "OnCalendar"), "no OnCalendar")


def systemd_env(path):
    env = {}
    for line in read(path).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k.strip()] = v.strip()
    return env


def systemd_expand(cmd, env):
    """ExecStart= as systemd runs it: ${VAR} is replaced by the value split into words ($VAR
    in the unit's syntax), an unset one by nothing."""
    import shlex
    words = []
    for w in shlex.split(cmd):
        m = re.fullmatch(r"\$\{(\w+)\}", w)
        if m:
            words += env.get(m.group(1), "").split()
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda x: env.get(x.group(1), ""), w))
    return words


def t_systemd_rotate_e2e(t):
    """certgate-rotate.service's two ExecStart lines, with the shipped settings file pointed at
    test paths, run against a live certgate: the CA store and the pair are installed; an
    unset setting fails the run."""
    pki = H.Opts.pki["ecdsa"]
    base = os.path.join(t.dir, "etc")
    creds, store = os.path.join(base, "credentials"), os.path.join(base, "ca-store")
    incoming, srcdir = os.path.join(t.dir, "incoming"), os.path.join(t.dir, "ca-src")
    for d in (incoming, srcdir):
        os.makedirs(d)
    # The first state, as the install steps leave it: a credentials pair and an empty store.
    os.makedirs(creds)
    p = TS().run_script("rotate-credentials.sh", ["--cert", os.path.join(pki, "server.crt"),
                                                  "--key", os.path.join(pki, "server.key"),
                                                  "--dir", creds])
    check(p.returncode == 0, "first install: %s" % p.stderr)
    open(os.path.join(srcdir, "index.yml"), "w").close()
    p = TS().run_script("sync-ca-store.sh", [srcdir, store])
    check(p.returncode == 0, "first store: %s" % p.stderr)
    up = t.upstream(record_max=4096)
    text, port, _, _ = lorawan_text(t, read(deploy("certgate.yaml")), creds, store, up)
    cg = Live(t, text, "systemd")
    conf = cg.path
    chain, key, leaf_der = TS().leaves()[2]
    with open(os.path.join(incoming, "fullchain.pem"), "w") as f:
        f.write(chain)
    with open(os.path.join(incoming, "privkey.pem"), "w") as f:
        f.write(key)
    tenant_files(srcdir, flat=False)
    env = systemd_env(deploy("systemd", "certgate-rotate.default"))
    check(set(env) == {"CERTGATE_CA_SOURCE", "CERTGATE_NEW_CERT", "CERTGATE_NEW_KEY"},
          "settings %r" % sorted(env))
    env.update(CERTGATE_CA_SOURCE=srcdir,
               CERTGATE_NEW_CERT=os.path.join(incoming, "fullchain.pem"),
               CERTGATE_NEW_KEY=os.path.join(incoming, "privkey.pem"))
    unit = unit_text("certgate-rotate.service")

    def run_unit(env):
        results = []
        for cmd in unit_values(unit, "ExecStart"):
            argv = systemd_expand(cmd, env)
            argv = [a.replace("/usr/local/bin/", root("scripts") + "/")
                    .replace("/etc/certgate/certgate.yaml", conf)
                    .replace("/etc/certgate/ca-store", store)
                    .replace("/etc/certgate/credentials", creds) for a in argv]
            penv = dict(os.environ, CERTGATE=H.Opts.binary)
            p = subprocess.run(argv, capture_output=True, text=True, timeout=T(120), env=penv)
            results.append(p)
            if p.returncode != 0:
                break  # systemd stops a oneshot at the first failing ExecStart
        return results
    res = run_unit(env)
    check(len(res) == 2 and all(p.returncode == 0 for p in res), "the unit's commands: %s"
          % [(p.returncode, p.stderr[-200:]) for p in res])
    wait_for(lambda: gateway_request(port)[0] == "ok", "the synced tenant")
    wait_for(lambda: served_leaf(port) == leaf_der, "the rotated pair")
    res = run_unit(env)  # the next timer tick: nothing changed, nothing done
    check(all(p.returncode == 0 for p in res) and "unchanged" in res[0].stdout and
          "already installed" in res[1].stdout, "second run: %s" % [p.stdout for p in res])
    res = run_unit({})  # a settings file that sets nothing
    check(res[0].returncode == 2 and "usage" in res[0].stderr, "unset settings: %r"
          % [(p.returncode, p.stderr) for p in res])


# --- cron -----------------------------------------------------------------------------------

def cron_lines():
    env, jobs = {}, []
    for line in read(deploy("cron", "certgate")).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"([A-Z_]+)=(.*)", line)
        if m:
            env[m.group(1)] = m.group(2)
            continue
        f = line.split(None, 6)
        check(len(f) == 7, "not a cron.d line (5 times, user, command): %r" % line)
        for field in f[:5]:
            check(re.fullmatch(r"[\d*/,\-]+", field), "bad time field %r in %r" % (field, line))
        check(f[5] == "certgate", "the job runs as %r" % f[5])
        check("%" not in f[6], "a %% in a crontab command is a newline: %r" % line)
        jobs.append((f[:5], f[6]))
    return env, jobs


def cron_jobs():
    return [(" ".join(times), cmd) for times, cmd in cron_lines()[1]]


def t_cron_e2e(t):
    """The cron.d jobs, run by sh as cron would (with their PATH, a logger that writes a file),
    against a live certgate; a job whose lock is held logs that it did not run."""
    import fcntl
    env, jobs = cron_lines()
    check(len(jobs) == 2, "jobs %r" % jobs)
    for _, cmd in jobs:
        check("flock -n" in cmd and "| logger -t certgate-" in cmd, "no lock or log: %r" % cmd)
    pki = H.Opts.pki["ecdsa"]
    base = os.path.join(t.dir, "etc")
    creds, store = os.path.join(base, "credentials"), os.path.join(base, "ca-store")
    incoming, srcdir, lockdir = (os.path.join(t.dir, n) for n in ("incoming", "src", "lock"))
    for d in (incoming, srcdir, lockdir, creds):
        os.makedirs(d)
    p = TS().run_script("rotate-credentials.sh", ["--cert", os.path.join(pki, "server.crt"),
                                                  "--key", os.path.join(pki, "server.key"),
                                                  "--dir", creds])
    check(p.returncode == 0, "first install: %s" % p.stderr)
    open(os.path.join(srcdir, "index.yml"), "w").close()
    p = TS().run_script("sync-ca-store.sh", [srcdir, store])
    check(p.returncode == 0, "first store: %s" % p.stderr)
    up = t.upstream(record_max=4096)
    text, port, _, _ = lorawan_text(t, read(deploy("certgate.yaml")), creds, store, up)
    cg = Live(t, text, "cron")
    chain, key, leaf_der = TS().leaves()[1]
    with open(os.path.join(incoming, "fullchain.pem"), "w") as f:
        f.write(chain)
    with open(os.path.join(incoming, "privkey.pem"), "w") as f:
        f.write(key)
    tenant_files(srcdir, flat=False)
    bindir = os.path.join(t.dir, "bin")
    os.makedirs(bindir)
    for n in ("rotate-credentials.sh", "sync-ca-store.sh"):
        os.symlink(root("scripts", n), os.path.join(bindir, n))
    log = os.path.join(t.dir, "syslog")
    with open(os.path.join(bindir, "logger"), "w") as f:
        f.write('#!/bin/sh\n[ "$1" = -t ] || exit 64\nwhile IFS= read -r l; do '
                'printf "%%s: %%s\\n" "$2" "$l" >>%s; done\n' % log)
    os.chmod(os.path.join(bindir, "logger"), 0o755)
    cenv = {"SHELL": env["SHELL"], "HOME": t.dir, "LOGNAME": "certgate",
            "PATH": bindir + ":" + env["PATH"], "CERTGATE": H.Opts.binary}
    check(env.get("CERTGATE") == "/usr/local/bin/certgate", "CERTGATE=%r" % env.get("CERTGATE"))

    def mapped(cmd):
        return (cmd.replace("s3://example-ca-bucket/certgate/ca-store", srcdir)
                .replace("/etc/certgate/certgate.yaml", cg.path)
                .replace("/etc/certgate/ca-store", store)
                .replace("/etc/certgate/credentials", creds)
                .replace("/var/lib/certgate/incoming", incoming)
                .replace("/run/lock", lockdir))

    def run_jobs():
        for _, cmd in jobs:
            p = subprocess.run([env["SHELL"], "-c", mapped(cmd)], capture_output=True, text=True,
                               timeout=T(120), env=cenv)
            check(p.returncode == 0 and p.stdout + p.stderr == "",
                  "cron would mail: rc %d %r" % (p.returncode, (p.stdout + p.stderr)[-300:]))
    run_jobs()
    text = read(log)
    check(re.search(r"(?m)^certgate-ca-sync: sync-ca-store\.sh: installed", text) and
          re.search(r"(?m)^certgate-rotate: rotate-credentials\.sh: installed", text),
          "syslog: %r" % text[-600:])
    wait_for(lambda: gateway_request(port)[0] == "ok", "the synced tenant")
    wait_for(lambda: served_leaf(port) == leaf_der, "the rotated pair")
    # An earlier run still holding the lock: this one does not run, and says so.
    os.remove(log)
    with open(os.path.join(lockdir, "certgate-ca-sync.lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        run_jobs()
    text = read(log)
    check("certgate-ca-sync: certgate-ca-sync: failed with exit status 75" in text,
          "a held lock is not logged: %r" % text)
    check("certgate-rotate: rotate-credentials.sh:" in text and "already installed" in text,
          "the unchanged pair: %r" % text)


# --- certbot --------------------------------------------------------------------------------

def hook(env):
    penv = {k: v for k, v in os.environ.items() if not k.startswith(("CERTGATE", "RENEWED"))}
    penv["CERTGATE"] = H.Opts.binary
    penv["CERTGATE_HOOK_ENV"] = os.path.join(H.Opts.tmp, "no-such-hook-env")
    penv.update(env)
    return subprocess.run(["sh", deploy("certbot", "certgate-deploy-hook.sh")],
                          capture_output=True, text=True, timeout=T(60), env=penv)


def t_certbot_unconfigured(t):
    """The hook and the script's certbot form fail loudly when nothing says what to install
    where; a configured hook skips other lineages and installs its own."""
    ts = TS()
    d = ts.k8s_creds(t)
    cg, ctx = ts.start(t, d)
    live = ts.certbot_layout(t, 2)  # letsencrypt/live/x
    before = ts.snapshot(d)
    rotate = root("scripts", "rotate-credentials.sh")
    cases = [
        ({"RENEWED_LINEAGE": live}, "CERTGATE_LINEAGE is not set"),
        ({"RENEWED_LINEAGE": live, "CERTGATE_LINEAGE": "x"}, "nowhere to install"),
        ({"CERTGATE_LINEAGE": "x", "CERTGATE_CREDENTIALS_DIR": d, "CERTGATE_ROTATE": rotate},
         "RENEWED_LINEAGE is not set"),
        ({"RENEWED_LINEAGE": live + "-gone", "CERTGATE_LINEAGE": "x",
          "CERTGATE_CREDENTIALS_DIR": d, "CERTGATE_ROTATE": rotate}, "no such lineage"),
        ({"RENEWED_LINEAGE": live, "CERTGATE_LINEAGE": "x",
          "CERTGATE_CREDENTIALS_DIR": d + "-gone", "CERTGATE_ROTATE": rotate}, "no such directory"),
        ({"RENEWED_LINEAGE": live, "CERTGATE_LINEAGE": "x", "CERTGATE_CREDENTIALS_DIR": d,
          "CERTGATE_ROTATE": "/nonexistent/rotate.sh"}, "not an executable"),
    ]
    for env, words in cases:
        p = hook(env)
        check(p.returncode != 0 and words in p.stderr, "%r: rc %d %r"
              % (sorted(env), p.returncode, p.stderr))
    # rotate-credentials.sh's own certbot form.
    for lineage, rc, words in (("", 2, "set but empty"), (live + "-gone", 1, "no such certbot")):
        p = ts.run_script("rotate-credentials.sh", ["--dir", d],
                          env={"RENEWED_LINEAGE": lineage})
        check(p.returncode == rc and words in p.stderr, "RENEWED_LINEAGE=%r: rc %d %r"
              % (lineage, p.returncode, p.stderr))
    p = ts.run_script("rotate-credentials.sh", [], env={"RENEWED_LINEAGE": live})
    check(p.returncode == 2 and "no credentials directory" in p.stderr, "no target: %d %r"
          % (p.returncode, p.stderr))
    check(ts.snapshot(d) == before, "a refused hook changed the credentials directory")
    # Configured through the shipped settings file, pointed at the test paths.
    settings = read(deploy("certbot", "certgate-deploy-hook.default"))
    check(re.search(r"(?m)^CERTGATE_LINEAGE=", settings) and
          re.search(r"(?m)^CERTGATE_CONFIG=", settings), "settings file")
    envf = os.path.join(t.dir, "hook.env")
    with open(envf, "w") as f:
        f.write(re.sub(r"(?m)^CERTGATE_CONFIG=.*$", "CERTGATE_CONFIG=" + cg.path, settings) +
                "CERTGATE_ROTATE=%s\n" % rotate)
    other = hook({"CERTGATE_HOOK_ENV": envf, "RENEWED_LINEAGE": live})
    check(other.returncode == 0 and "skipped" in other.stderr, "other lineage: %d %r"
          % (other.returncode, other.stderr))
    check(ts.snapshot(d) == before, "another lineage changed the directory")
    name = re.search(r"(?m)^CERTGATE_LINEAGE=(.*)$", settings).group(1)
    mine = os.path.join(os.path.dirname(live), name)
    os.rename(live, mine)
    p = hook({"CERTGATE_HOOK_ENV": envf, "RENEWED_LINEAGE": mine})
    check(p.returncode == 0, "configured hook: %d %r" % (p.returncode, p.stderr))
    ts.eventually(cg, lambda: ts.served_der(cg.port(), ctx) == ts.leaves()[2][2],
                  "the renewed lineage")


# --- every recipe is tested -----------------------------------------------------------------

RECIPES = {
    "deploy/README.md": "t_recipes_referenced",
    "deploy/certgate.yaml": "t_docker_static t_systemd_rotate_e2e t_cron_e2e t_compose",
    "deploy/Dockerfile": "t_docker_static",
    "deploy/Dockerfile.dockerignore": "t_recipes_referenced",
    "deploy/docker-compose.yml": "t_compose t_shellcheck",
    "deploy/kubernetes/base/certgate-sidecar.yaml": "t_kubernetes_offline t_kubernetes_as_shipped",
    "deploy/kubernetes/base/kustomization.yaml": "t_kubernetes_offline",
    "deploy/kubernetes/fallback/kustomization.yaml": "t_kubernetes_offline",
    "deploy/systemd/certgate.service": "t_systemd_verify",
    "deploy/systemd/certgate-rotate.service": "t_systemd_verify t_systemd_rotate_e2e",
    "deploy/systemd/certgate-rotate.timer": "t_systemd_verify",
    "deploy/systemd/certgate-rotate.default": "t_systemd_rotate_e2e",
    "deploy/cron/certgate": "t_cron_e2e t_shellcheck",
    "deploy/certbot/certgate-deploy-hook.sh": "t_certbot_unconfigured t_shellcheck",
    "deploy/certbot/certgate-deploy-hook.default": "t_certbot_unconfigured",
}


def t_recipes_referenced(t):
    """Every file under deploy/ is exercised by a test named here, and documented."""
    files = []
    for dirpath, _, names in os.walk(deploy()):
        for n in names:
            rel = os.path.relpath(os.path.join(dirpath, n), H.ROOT)
            if not rel.startswith("deploy/run/"):
                files.append(rel)
    missing = sorted(set(files) - set(RECIPES))
    check(not missing, "recipes without a test: %r" % missing)
    docs = read(root("docs", "deployment.md")) + read(deploy("README.md"))
    undocumented = [f for f in RECIPES if f != "deploy/README.md" and f[len("deploy/"):] not in docs]
    check(not undocumented, "recipes the docs do not name: %r" % undocumented)
    ignore = read(deploy("Dockerfile.dockerignore"))
    for path in re.findall(r"(?m)^COPY (?:--from=\S+ )?(\S+)", read(deploy("Dockerfile"))):
        if path.startswith("/"):
            continue
        check("!" + path in ignore, "the Dockerfile copies %s, which .dockerignore leaves out"
              % path)


# ---------------------------------------------------------------------------------------------
# registration

TESTS = [
    ("adm.host_not_loopback_refused", t_host_refused),
    ("adm.non_loopback_without_token_exit_2", t_non_loopback_exit_2),
    ("adm.symlinked_state_file_survives_put", t_symlink_state),
    ("adm.public_address_read_only", t_public_address),
    ("deploy.probe_ready_stopped_config", t_probe),
    ("deploy.probe_public_wildcard", t_probe_public_and_wildcard),
    ("deploy.probe_not_ready", t_probe_not_ready),
    ("deploy.sd_notify_path", notify_case(False)),
    ("deploy.sd_notify_abstract", notify_case(True)),
    ("deploy.shellcheck", t_shellcheck),
    ("deploy.kubernetes_offline", t_kubernetes_offline),
    ("deploy.kubernetes_as_shipped", t_kubernetes_as_shipped),
    ("deploy.docker_image_recipe", t_docker_static),
    ("deploy.compose_jobs_live", t_compose),
    ("deploy.systemd_verify", t_systemd_verify),
    ("deploy.systemd_rotate_timer_live", t_systemd_rotate_e2e),
    ("deploy.cron_jobs_live", t_cron_e2e),
    ("deploy.certbot_hook_unconfigured", t_certbot_unconfigured),
    ("deploy.every_recipe_tested", t_recipes_referenced),
]


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import run  # noqa: E402
    register(run)
    sys.exit(run.main())
