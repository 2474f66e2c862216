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
