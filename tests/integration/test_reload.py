#!/usr/bin/env python3
"""test_reload.py: integration tests of hot reload and the admin API (issue #5), in the groups
`reload.` and `admin.`. They use run.py's harness: run.py calls register(itself) to add them to
its list (see the hook at the end of run.py's imports), and this file can also run on its own:

    python3 tests/integration/test_reload.py --binary build/certgate [-k reload.] [-v]

Every test gets private copies of the credentials and the CA store, rewrites them the way the
usual tools do (rename-over, Kubernetes ..data swap, certbot live/ -> archive/ links, editors),
and checks with real TLS handshakes which server certificate new connections see. Server leaves
are extra certificates signed by pki.sh's intermediate, so the client trusts them all.
"""

import json
import os
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

H = None  # run.py's module, set by register()


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


# ---------------------------------------------------------------------------------------------
# certificates

_LEAVES = {}
EXT = ("basicConstraints=critical,CA:false\n"
       "keyUsage=critical,digitalSignature,keyEncipherment\n"
       "extendedKeyUsage=serverAuth\n"
       "subjectAltName=DNS:localhost,IP:127.0.0.1,URI:spiffe://certgate.demo/proxy\n")


def leaves(alg="ecdsa", n=3):
    """n server leaves for localhost signed by the run's intermediate: a list of
    (fullchain_pem, key_pem, leaf_der), made once per run."""
    key = (alg, n)
    if key in _LEAVES:
        return _LEAVES[key]
    pki = H.Opts.pki[alg]
    d = os.path.join(H.Opts.tmp, "reload-leaves-%s" % alg)
    os.makedirs(d, exist_ok=True)
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write(EXT)
    with open(os.path.join(pki, "intermediate.crt")) as f:
        inter = f.read()
    out = []
    for i in range(n):
        k, csr, crt = (os.path.join(d, "leaf%d.%s" % (i, s)) for s in ("key", "csr", "crt"))
        if alg == "rsa":
            gen = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        else:
            gen = ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                   "ec_paramgen_curve:P-256"]
        for args in (gen + ["-out", k],
                     ["openssl", "req", "-new", "-key", k, "-subj",
                      "/O=certgate demo/CN=localhost", "-out", csr],
                     ["openssl", "x509", "-req", "-in", csr, "-CA",
                      os.path.join(pki, "intermediate.crt"), "-CAkey",
                      os.path.join(pki, "intermediate.key"), "-set_serial", str(7000 + i),
                      "-days", "30", "-sha256", "-extfile", ext, "-out", crt]):
            p = subprocess.run(args, capture_output=True, text=True, timeout=30)
            check(p.returncode == 0, "openssl: %s" % p.stderr[-300:])
        with open(crt) as f:
            leaf = f.read()
        with open(k) as f:
            keypem = f.read()
        out.append((leaf + inter, keypem, ssl.PEM_cert_to_DER_cert(leaf)))
    _LEAVES[key] = out
    return out


def original(alg="ecdsa"):
    pki = H.Opts.pki[alg]
    with open(os.path.join(pki, "server.crt")) as f:
        chain = f.read()
    with open(os.path.join(pki, "server.key")) as f:
        key = f.read()
    with open(os.path.join(pki, "server-leaf.crt")) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return chain, key, der


def write_atomic(path, data):
    tmp = os.path.join(os.path.dirname(path), ".%s.tmp" % os.path.basename(path))
    with open(tmp, "w") as f:
        f.write(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# layouts: each returns (credentials config, install(chain, key) function)

def plain_layout(t, alg="ecdsa"):
    d = os.path.join(t.dir, "creds")
    os.makedirs(d)
    chain, key, _ = original(alg)

    def install(c, k):
        write_atomic(os.path.join(d, "server.key"), k)
        write_atomic(os.path.join(d, "server.crt"), c)
    install(chain, key)
    return {"dir": d, "cert": "server.crt", "key": "server.key"}, install


def k8s_layout(t, alg="ecdsa"):
    """A Kubernetes Secret volume: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>, the
    new version written into a new timestamp directory and ..data swapped by rename."""
    d = os.path.join(t.dir, "secret")
    os.makedirs(d)
    state = {"n": 0}

    def install(c, k):
        state["n"] += 1
        ts = "..2026_11_30_10_00_%02d.%d" % (state["n"] % 60, state["n"])
        os.mkdir(os.path.join(d, ts))
        for name, data in (("tls.crt", c), ("tls.key", k)):
            with open(os.path.join(d, ts, name), "w") as f:
                f.write(data)
        tmp = os.path.join(d, "..data_tmp")
        os.symlink(ts, tmp)
        os.replace(tmp, os.path.join(d, "..data"))
        for name in ("tls.crt", "tls.key"):
            if not os.path.islink(os.path.join(d, name)):
                os.symlink(os.path.join("..data", name), os.path.join(d, name))
        for old in os.listdir(d):
            if old.startswith("..2026") and old != ts:
                shutil.rmtree(os.path.join(d, old))
    chain, key, _ = original(alg)
    install(chain, key)
    return {"dir": d, "cert": "tls.crt", "key": "tls.key"}, install


def certbot_layout(t, alg="ecdsa"):
    """certbot: live/NAME/{fullchain,privkey}.pem are relative symlinks into archive/NAME/,
    re-pointed one at a time (unlink + symlink, as certbot's storage.py does)."""
    base = os.path.join(t.dir, "letsencrypt")
    live = os.path.join(base, "live", "example")
    arch = os.path.join(base, "archive", "example")
    os.makedirs(live)
    os.makedirs(arch)
    state = {"n": 0}

    def install(c, k):
        state["n"] += 1
        n = state["n"]
        for name, data in (("fullchain", c), ("privkey", k)):
            with open(os.path.join(arch, "%s%d.pem" % (name, n)), "w") as f:
                f.write(data)
        for name in ("fullchain", "privkey"):
            link = os.path.join(live, name + ".pem")
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink("../../archive/example/%s%d.pem" % (name, n), link)
    chain, key, _ = original(alg)
    install(chain, key)
    return {"dir": live, "cert": "fullchain.pem", "key": "privkey.pem"}, install


def versioned_dir_layout(t, alg="ecdsa"):
    """credentials.dir itself a symlink to a versioned directory, swapped by rename (the
    scheme of rotate-credentials.sh one level up)."""
    base = os.path.join(t.dir, "versions")
    os.makedirs(base)
    link = os.path.join(t.dir, "current")
    state = {"n": 0}

    def install(c, k):
        state["n"] += 1
        v = os.path.join(base, "v%d" % state["n"])
        os.makedirs(v)
        for name, data in (("tls.crt", c), ("tls.key", k)):
            with open(os.path.join(v, name), "w") as f:
                f.write(data)
        tmp = link + ".tmp"
        os.symlink(v, tmp)
        os.replace(tmp, link)
        if state["n"] > 2:
            shutil.rmtree(os.path.join(base, "v%d" % (state["n"] - 2)))
    chain, key, _ = original(alg)
    install(chain, key)
    return {"dir": link, "cert": "tls.crt", "key": "tls.key"}, install


def private_store(t, alg="ecdsa"):
    d = os.path.join(t.dir, "ca-store")
    shutil.copytree(os.path.join(H.Opts.pki[alg], "ca-store"), d)
    return d


# ---------------------------------------------------------------------------------------------
# certgate, clients, admin

def start(t, creds, store=None, debounce="100ms", poll="1h", admin=None, alg="ecdsa", **lkw):
    up = t.upstream(record_max=4096)
    lkw.setdefault("client_auth", "require")
    extra = {"credentials": creds, "reload": {"debounce": debounce, "poll_interval": poll}}
    if store:
        extra["ca_store"] = {"dir": store}
    if admin:
        extra["admin"] = admin
    cg = t.certgate(alg, [H.listener("https", "http", up.http, **lkw)], extra=extra)
    admin_up(cg)
    return up, cg, H.client_ctx(alg)


def admin_up(cg):
    """The harness may see the listeners before the admin port: wait for the latter too."""
    def up():
        try:
            return H.http_get(cg.admin_port, "/healthz", timeout=1)[0] == 200
        except OSError:
            return False
    wait_for(up, 5, "the admin listener")


def served_der(port, ctx, timeout=3):
    """The leaf certificate (DER) a new handshake sees; None when the handshake fails."""
    try:
        raw = socket.create_connection((H.HOST, port), timeout=T(timeout))
    except OSError:
        return None
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        der = s.getpeercert(binary_form=True)
        s.close()
        return der
    except (ssl.SSLError, OSError):
        raw.close()
        return None


def wait_served(port, ctx, der, timeout=2.0):
    """Seconds until new handshakes see |der|; raises after |timeout|."""
    start = time.time()
    deadline = start + T(timeout)
    seen = None
    while time.time() < deadline:
        seen = served_der(port, ctx)
        if seen == der:
            return time.time() - start
        time.sleep(0.02)
    raise H.Failure("new handshakes do not see the new certificate after %.1fs (%s)"
                    % (T(timeout), "handshake failed" if seen is None else "old certificate"))


def admin_req(port, method, path, headers=(), body=b"", raw=None, timeout=5):
    """One admin request; returns (status, {lower name: value}, body)."""
    s = socket.create_connection((H.HOST, port), timeout=T(timeout))
    try:
        if raw is None:
            lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
            lines += list(headers)
            if body:
                lines.append("Content-Length: %d" % len(body))
            raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        s.sendall(raw)
        resp = H.read_response(H.Reader(s), method if method else "GET")
        return resp.status, {k.lower(): v for k, v in resp.headers}, resp.body
    finally:
        s.close()


def status(cg):
    code, _, body = admin_req(cg.admin_port, "GET", "/status")
    check(code == 200, "/status: %d" % code)
    try:
        return json.loads(body)
    except ValueError:
        raise H.Failure("/status is not JSON: %r" % body[:200])


def metrics(cg):
    code, hdrs, body = admin_req(cg.admin_port, "GET", "/metrics")
    check(code == 200, "/metrics: %d" % code)
    out = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        check(m, "bad metrics line %r" % line)
        labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def mval(ms, name, **labels):
    return ms.get((name, tuple(sorted(labels.items()))), 0.0)


def reloads(cg, result=None):
    ms = metrics(cg)
    total = 0
    for (name, labels), v in ms.items():
        if name == "certgate_reload_total" and (result is None or ("result", result) in labels):
            total += v
    return int(total)


def wait_for(fn, timeout, what):
    deadline = time.time() + T(timeout)
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise H.Failure("timed out waiting for %s" % what)


class Load:
    """Requests through mutual TLS while rotations happen: keep-alive threads (one connection,
    many requests, reconnecting after a server close) and fresh-connection threads."""

    def __init__(self, port, ctx, keepalive=2, fresh=2):
        self.port, self.ctx = port, ctx
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.threads = [threading.Thread(target=self.keepalive_loop, daemon=True)
                        for _ in range(keepalive)]
        self.threads += [threading.Thread(target=self.fresh_loop, daemon=True)
                         for _ in range(fresh)]
        for th in self.threads:
            th.start()

    def connect(self):
        raw = socket.create_connection((H.HOST, self.port), timeout=T(5))
        try:
            return self.ctx.wrap_socket(raw, server_hostname="localhost")
        except Exception:
            raw.close()
            raise

    def count(self, resp, err=None):
        with self.lock:
            if err is None and resp.status == 200:
                self.ok += 1
            else:
                self.failures.append(err or "status %d" % resp.status)

    def keepalive_loop(self):
        s = None
        while not self.stop_ev.is_set():
            try:
                if s is None:
                    s = self.connect()
                    r = H.Reader(s)
                s.sendall(H.get_req("/echo"))
                resp = H.read_response(r)
                self.count(resp)
                if (resp.header("connection") or "").lower() == "close":
                    s.close()
                    s = None
            except Exception as e:
                self.count(None, "keep-alive: %r" % e)
                if s is not None:
                    s.close()
                s = None
            time.sleep(0.002)
        if s is not None:
            s.close()

    def fresh_loop(self):
        while not self.stop_ev.is_set():
            s = None
            try:
                s = self.connect()
                s.sendall(H.get_req("/echo", extra="Connection: close\r\n"))
                self.count(H.read_response(H.Reader(s)))
            except Exception as e:
                self.count(None, "new connection: %r" % e)
            finally:
                if s is not None:
                    s.close()
            time.sleep(0.002)

    def stop(self):
        self.stop_ev.set()
        for th in self.threads:
            th.join(T(10))
        return self.ok, self.failures


# ---------------------------------------------------------------------------------------------
# tests: triggers

def t_sighup(t):
    creds, install = plain_layout(t)
    # debounce and poll so long that only the signal can reload
    up, cg, ctx = start(t, creds, debounce="1h", poll="1h")
    new = leaves()[0]
    install(new[0], new[1])
    time.sleep(0.3)
    check(served_der(cg.port(), ctx) == original()[2], "changed before SIGHUP")
    cg.signal(signal.SIGHUP)
    wait_served(cg.port(), ctx, new[2], 2)
    ms = metrics(cg)
    check(mval(ms, "certgate_reload_total", source="signal", result="success") == 1,
          "reload_total{signal,success} != 1")
    st = status(cg)
    check(st["last_reload"]["source"] == "signal" and st["last_reload"]["result"] == "success",
          "last_reload %r" % st["last_reload"])


def t_admin_reload(t):
    creds, install = plain_layout(t)
    up, cg, ctx = start(t, creds, debounce="1h", poll="1h")
    gen0 = status(cg)["generation"]
    new = leaves()[1]
    install(new[0], new[1])
    code, hdrs, body = admin_req(cg.admin_port, "POST", "/reload")
    check(code == 200, "POST /reload: %d %r" % (code, body))
    res = json.loads(body)
    check(res["result"] == "success" and res["error"] is None, "result %r" % res)
    check(res["generation"] == gen0 + 1, "generation %r after %r" % (res["generation"], gen0))
    check(served_der(cg.port(), ctx) == new[2], "new handshakes still see the old certificate")
    # forced: a second POST rebuilds even though nothing changed
    code, _, body = admin_req(cg.admin_port, "POST", "/reload")
    check(code == 200 and json.loads(body)["generation"] == gen0 + 2, "forced reload: %r" % body)


def t_admin_reload_failure_500(t):
    creds, install = plain_layout(t)
    up, cg, ctx = start(t, creds, debounce="1h", poll="1h")
    with open(os.path.join(creds["dir"], "server.key"), "w") as f:
        f.write("not a key\n")
    code, _, body = admin_req(cg.admin_port, "POST", "/reload")
    check(code == 500, "POST /reload with a broken key: %d" % code)
    res = json.loads(body)
    check(res["result"] == "failure" and "server.key" in (res["error"] or ""), "result %r" % res)
    check(served_der(cg.port(), ctx) == original()[2], "the old certificate is not served")


# ---------------------------------------------------------------------------------------------
# tests: layouts picked up by the watcher

def watch_case(layout, rotations=2):
    def fn(t):
        creds, install = layout(t)
        up, cg, ctx = start(t, creds)
        for i in range(rotations):
            new = leaves()[i % 3]
            install(new[0], new[1])
            took = wait_served(cg.port(), ctx, new[2], 2)
            if H.Opts.verbose:
                print("    rotation %d seen after %.2fs" % (i + 1, took))
        check(reloads(cg, "failure") == 0 or layout is certbot_layout,
              "failed reloads: %s" % cg.tail(3))
    return fn


def t_editor_write(t):
    """Editors: vim writes a backup and renames; others truncate and write in place."""
    creds, install = plain_layout(t)
    up, cg, ctx = start(t, creds)
    d = creds["dir"]
    new = leaves()[0]
    # in place, key then certificate, as `cp new.key server.key; cp new.crt server.crt` does
    with open(os.path.join(d, "server.key"), "w") as f:
        f.write(new[1])
    with open(os.path.join(d, "server.crt"), "w") as f:
        f.write(new[0])
    wait_served(cg.port(), ctx, new[2], 2)
    # vim-style: rename the original to a backup, write a new file, delete the backup
    new = leaves()[1]
    for name, data in (("server.key", new[1]), ("server.crt", new[0])):
        p = os.path.join(d, name)
        os.rename(p, p + "~")
        with open(p, "w") as f:
            f.write(data)
        os.unlink(p + "~")
    wait_served(cg.port(), ctx, new[2], 2)


def t_unchanged_no_rebuild(t):
    creds, install = plain_layout(t)
    store = private_store(t)
    up, cg, ctx = start(t, creds, store, poll="300ms")
    gen0 = status(cg)["generation"]
    chain, key, _ = original()
    for _ in range(3):
        install(chain, key)  # same bytes, new inodes
        os.utime(os.path.join(store, "index.yml"))
        time.sleep(0.2)
    time.sleep(0.8)  # several debounces and polls
    check(status(cg)["generation"] == gen0, "rebuilt although no content changed")
    check(reloads(cg) == 0, "reloads counted although no content changed")


def t_poll_fallback(t):
    """The periodic rescan reloads by itself: with a debounce of an hour, only the rescan can
    pick the change up before the deadline."""
    creds, install = plain_layout(t)
    up, cg, ctx = start(t, creds, debounce="1h", poll="300ms")
    new = leaves()[2]
    install(new[0], new[1])  # the watcher's debounce is 1h: only the poll can act
    wait_served(cg.port(), ctx, new[2], 2)
    ms = metrics(cg)
    check(mval(ms, "certgate_reload_total", source="poll", result="success") >= 1,
          "no reload counted for source=poll")


# ---------------------------------------------------------------------------------------------
# tests: failures keep the old state

def t_bad_key(t):
    creds, install = plain_layout(t)
    up, cg, ctx = start(t, creds)
    a, b = leaves()[0], leaves()[1]
    install(a[0], b[1])  # certificate of one pair, key of another
    wait_for(lambda: reloads(cg, "failure") >= 1, 2, "a failed reload")
    check(served_der(cg.port(), ctx) == original()[2], "old certificate not kept")
    st = status(cg)
    lr = st["last_reload"]
    check(lr["result"] == "failure" and "does not match" in (lr["error"] or ""),
          "/status last_reload %r" % lr)
    ms = metrics(cg)
    check(mval(ms, "certgate_reload_total", source="watch", result="failure") >= 1,
          "reload failure not counted")
    check(mval(ms, "certgate_last_reload_success") == 0, "certgate_last_reload_success != 0")
    install(a[0], a[1])
    wait_served(cg.port(), ctx, a[2], 2)
    check(mval(metrics(cg), "certgate_last_reload_success") == 1, "not recovered in /metrics")


def t_non_atomic(t):
    """Certificate first, key a second later: a mismatched pair is never served."""
    creds, install = plain_layout(t)
    up, cg, ctx = start(t, creds)
    load = Load(cg.port(), ctx)
    try:
        d = creds["dir"]
        for i in range(2):
            new = leaves()[i]
            write_atomic(os.path.join(d, "server.crt"), new[0])
            time.sleep(1.0)
            write_atomic(os.path.join(d, "server.key"), new[1])
            wait_served(cg.port(), ctx, new[2], 2)
    finally:
        ok, failures = load.stop()
    check(not failures, "%d failed requests (of %d): %s" % (len(failures), ok + len(failures),
                                                           failures[:3]))
    check(ok > 20, "only %d requests made" % ok)


def t_bad_index(t):
    creds, _ = plain_layout(t)
    store = private_store(t)
    up, cg, ctx = start(t, creds, store)
    idx = os.path.join(store, "index.yml")
    write_atomic(idx, "common: [common.pem\n  - : :\n")
    wait_for(lambda: reloads(cg, "failure") >= 1, 2, "a failed reload")
    lr = status(cg)["last_reload"]
    check(lr["result"] == "failure" and "index.yml" in (lr["error"] or ""), "last_reload %r" % lr)
    resp = H.https_request(t, cg.port(), ctx, H.get_req("/echo"))
    check(resp.status == 200, "mTLS request with the old store: %d" % resp.status)
    write_atomic(idx, "common:\n- common.pem\n")
    wait_for(lambda: status(cg)["last_reload"]["result"] == "success", 2, "a successful reload")


def t_tenant_dir_recreated(t):
    creds, _ = plain_layout(t)
    store = private_store(t)
    root = os.path.join(H.Opts.pki["ecdsa"], "root.crt")
    tdir = os.path.join(store, "tenants", "acme")
    os.makedirs(tdir)
    shutil.copy(root, os.path.join(tdir, "acme.pem"))
    write_atomic(os.path.join(store, "index.yml"),
                 "common:\n- common.pem\ntenants:\n  acme:\n  - acme.pem\n")
    up, cg, ctx = start(t, creds, store)
    real = os.path.realpath(tdir)
    check(real in status(cg)["watches"], "tenant directory not watched: %r"
          % status(cg)["watches"])
    n0 = reloads(cg)
    shutil.rmtree(tdir)
    wait_for(lambda: reloads(cg) > n0, 2, "a reload after the tenant directory was deleted")
    check(real not in status(cg)["watches"], "deleted directory still listed")
    n1 = reloads(cg)
    os.makedirs(tdir)
    wait_for(lambda: reloads(cg) > n1, 2, "a reload after the tenant directory was recreated")
    check(real in status(cg)["watches"], "recreated directory not re-armed")
    # the re-armed watch sees a change inside the new directory
    n2 = reloads(cg)
    shutil.copy(root, os.path.join(tdir, "acme.pem"))
    wait_for(lambda: reloads(cg) > n2, 2, "a reload for a file in the recreated directory")
    check(status(cg)["last_reload"]["result"] == "success", "last reload failed: %r"
          % status(cg)["last_reload"])
    resp = H.https_request(t, cg.port(), ctx, H.get_req("/echo"))
    check(resp.status == 200, "mTLS request: %d" % resp.status)


def t_store_dir_recreated(t):
    """The watched CA store directory itself deleted, then recreated a moment later."""
    creds, _ = plain_layout(t)
    base = os.path.join(t.dir, "outer")
    os.makedirs(base)
    store = os.path.join(base, "ca-store")
    shutil.copytree(os.path.join(H.Opts.pki["ecdsa"], "ca-store"), store)
    up, cg, ctx = start(t, creds, store)
    keep = os.path.join(t.dir, "ca-store-copy")
    shutil.copytree(store, keep)
    shutil.rmtree(store)
    wait_for(lambda: reloads(cg, "failure") >= 1, 2, "a failed reload while the store is gone")
    resp = H.https_request(t, cg.port(), ctx, H.get_req("/echo"))
    check(resp.status == 200, "mTLS request while the store is gone: %d" % resp.status)
    time.sleep(0.5)
    shutil.copytree(keep, store)
    wait_for(lambda: status(cg)["last_reload"]["result"] == "success", 2,
             "a successful reload after the store came back")
    check(os.path.realpath(store) in status(cg)["watches"], "store directory not re-armed")
    # and the re-armed watch works
    n = reloads(cg)
    write_atomic(os.path.join(store, "index.yml"), "common:\n- common.pem\n# changed\n")
    wait_for(lambda: reloads(cg) > n, 2, "a reload after a change in the recreated store")


def t_burst(t):
    """1,000 file events in a burst cause a bounded number of reloads."""
    creds, install = plain_layout(t)
    store = private_store(t)
    up, cg, ctx = start(t, creds, store, debounce="200ms")
    common = os.path.join(store, "common")
    start_t = time.time()
    # spread over about two seconds: longer than the debounce's cap, so the cap is tested too
    for i in range(1000):
        with open(os.path.join(common, "extra-%d.txt" % (i % 50)), "w") as f:
            f.write("%d\n" % i)
        if i % 10 == 9:
            time.sleep(0.02)
    new = leaves()[0]
    install(new[0], new[1])
    took = time.time() - start_t
    wait_served(cg.port(), ctx, new[2], 3)
    time.sleep(0.5)
    n = reloads(cg)
    bound = int(took) + 3  # at most one per second of burst (the debounce's cap), plus slack
    if H.Opts.verbose:
        print("    burst of 1000 events in %.2fs: %d reloads" % (took, n))
    check(1 <= n <= bound, "%d reloads for a burst of 1000 events (bound %d)" % (n, bound))


def rotations_under_load(layout, count=None):
    # CERTGATE_RELOAD_ROTATIONS=100 for the longer soak of issue #5
    count = count or int(os.environ.get("CERTGATE_RELOAD_ROTATIONS", "20"))

    def fn(t):
        creds, install = layout(t)
        up, cg, ctx = start(t, creds)
        load = Load(cg.port(), ctx)
        worst = 0.0
        try:
            for i in range(count):
                new = leaves()[i % 3]
                install(new[0], new[1])
                worst = max(worst, wait_served(cg.port(), ctx, new[2], 2))
        finally:
            ok, failures = load.stop()
        if H.Opts.verbose:
            print("    %d rotations, %d requests, slowest pickup %.2fs" % (count, ok, worst))
        check(not failures, "%d failed requests (of %d): %s"
              % (len(failures), ok + len(failures), failures[:3]))
        check(ok >= count, "only %d requests made" % ok)
    return fn


# ---------------------------------------------------------------------------------------------
# tests: admin API

def t_status_json(t):
    creds, _ = plain_layout(t)
    up, cg, ctx = start(t, creds)
    st = status(cg)
    for key in ("version", "generation", "credentials", "tenants", "listeners", "last_reload"):
        check(key in st, "/status lacks %s: %r" % (key, sorted(st)))
    check(st["generation"] == 1, "generation %r at start" % st["generation"])
    check(st["last_reload"] is None, "last_reload %r before any reload" % st["last_reload"])
    lst = st["listeners"]
    check(len(lst) == 1 and lst[0]["name"] == "https" and lst[0]["mode"] == "http",
          "listeners %r" % lst)
    check(lst[0]["address"] == "127.0.0.1:%d" % cg.port(), "bound address %r" % lst[0]["address"])
    check(lst[0]["upstream"] == up.http, "upstream %r" % lst[0]["upstream"])
    cred = st["credentials"]
    check(cred and "localhost" in cred.get("subject", ""), "credentials %r" % cred)


def t_metrics_format(t):
    creds, _ = plain_layout(t)
    up, cg, ctx = start(t, creds)
    H.https_request(t, cg.port(), ctx, H.get_req("/echo"))
    code, hdrs, body = admin_req(cg.admin_port, "GET", "/metrics")
    check(code == 200, "/metrics: %d" % code)
    check("version=0.0.4" in hdrs.get("content-type", ""), "content-type %r"
          % hdrs.get("content-type"))
    types = {}
    seen_samples = set()
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            check(name not in types, "TYPE %s given twice" % name)
            types[name] = typ
            continue
        if not line or line.startswith("#"):
            continue
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
        fam = re.sub(r"_(bucket|sum|count)$", "", name)
        check(name in types or fam in types, "sample %s without TYPE" % name)
        seen_samples.add(fam if fam in types else name)
    for fam in ("certgate_connections_total", "certgate_connections_active",
                "certgate_handshakes_total", "certgate_requests_total",
                "certgate_upstream_errors_total", "certgate_reload_total",
                "certgate_certificate_not_after_seconds", "certgate_tenant_load_errors",
                "certgate_request_duration_seconds", "certgate_crl_stale_total"):
        check(fam in types, "%s missing from /metrics" % fam)
    check(types["certgate_request_duration_seconds"] == "histogram", "duration is not a histogram")
    ms = wait_for(lambda: (lambda m: m if mval(m, "certgate_requests_total", listener="https",
                                                code="200") >= 1 else None)(metrics(cg)),
                  2, "the request counted")
    for name, labels in (("certgate_connections_total", {}),
                         ("certgate_handshakes_total", {"result": "ok"}),
                         ("certgate_request_duration_seconds_count", {})):
        check(mval(ms, name, listener="https", **labels) >= 1, "%s%r not counted" % (name, labels))
    na = mval(ms, "certgate_certificate_not_after_seconds", kind="server", tenant="")
    check(na > time.time(), "server not_after %r" % na)
    for src in ("watch", "poll", "signal", "admin"):
        for res in ("success", "failure"):
            check(("certgate_reload_total", (("result", res), ("source", src))) in ms,
                  "certgate_reload_total{%s,%s} not exposed" % (src, res))


def t_admin_token(t):
    creds, _ = plain_layout(t)
    tok = os.path.join(t.dir, "admin.token")
    with open(tok, "w") as f:
        f.write("s3cret-token\n")
    admin = {"address": "%s:%d" % (H.HOST, H.free_port()), "token_file": tok}
    up, cg, ctx = start(t, creds, admin=admin)
    code, hdrs, _ = admin_req(cg.admin_port, "POST", "/reload")
    check(code == 401, "no token: %d" % code)
    check("bearer" in hdrs.get("www-authenticate", "").lower(), "no WWW-Authenticate")
    code, _, _ = admin_req(cg.admin_port, "POST", "/reload", ["Authorization: Bearer wrong"])
    check(code == 401, "wrong token: %d" % code)
    code, _, _ = admin_req(cg.admin_port, "POST", "/reload", ["Authorization: Bearer s3cret-tok"])
    check(code == 401, "prefix of the token: %d" % code)
    code, _, _ = admin_req(cg.admin_port, "POST", "/reload", ["Authorization: Basic czNjcmV0"])
    check(code == 401, "basic auth: %d" % code)
    code, _, body = admin_req(cg.admin_port, "POST", "/reload",
                              ["Authorization: Bearer s3cret-token"])
    check(code == 200, "right token: %d %r" % (code, body))
    for path in ("/status", "/metrics", "/healthz", "/ready"):
        code, _, _ = admin_req(cg.admin_port, "GET", path)
        check(code == 200, "GET %s without token: %d" % (path, code))
    # the token file is re-read: a rotated token works at once
    with open(tok, "w") as f:
        f.write("next-token")
    code, _, _ = admin_req(cg.admin_port, "POST", "/reload", ["Authorization: Bearer next-token"])
    check(code == 200, "rotated token: %d" % code)
    check(reloads(cg) == 2, "reloads %d, want 2" % reloads(cg))


def t_admin_bad_requests(t):
    creds, _ = plain_layout(t)
    up, cg, ctx = start(t, creds)
    p = cg.admin_port
    cases = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /healthz\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET http://x/healthz HTTP/1.1\r\n\r\n", 400),
        (b"GET /healthz HTTP/2.0\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (b"POST /reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST /reload HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 431),
        (b"GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
        (b"GET /reload HTTP/1.1\r\nHost: localhost\r\n\r\n", 405),
        (b"DELETE /status HTTP/1.1\r\nHost: localhost\r\n\r\n", 405),
        (b"POST /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n", 405),
        (b"GET /healthz?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n", 200),
        (b"GET /healthz HTTP/1.0\r\n\r\n", 200),
        (b"POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello", 200),
    ]
    for raw, want in cases:
        try:
            code, _, _ = admin_req(p, None, None, raw=raw)
        except (H.Failure, OSError) as e:
            raise H.Failure("%r: %s" % (raw[:40], e))
        check(code == want, "%r: %d, want %d" % (raw[:40], code, want))
    # a client that sends nothing, then one that sends half a head, then closes
    s = socket.create_connection((H.HOST, p))
    s.sendall(b"GET /heal")
    s.close()
    code, _, body = admin_req(p, "GET", "/healthz")
    check(code == 200 and body.strip() == b"ok", "healthz after bad requests: %d" % code)
    check(cg.proc.poll() is None, "certgate exited")


# ---------------------------------------------------------------------------------------------
# tests: tenants change under a running proxy

def tenant_env(t, tenants, debounce="100ms", poll="1h"):
    """A CA store whose common bundle trusts nobody we use (the unknown root) and whose tenants
    map to bundle files; tenancy.unknown: reject, so a tenant exists only when loaded."""
    pki = H.Opts.pki["ecdsa"]
    creds, _ = plain_layout(t)
    store = os.path.join(t.dir, "ca-store")
    os.makedirs(os.path.join(store, "common"))
    shutil.copy(os.path.join(pki, "unknown-root.crt"), os.path.join(store, "common", "c.pem"))
    write_tenants(store, tenants)
    up = t.upstream(record_max=4096)
    extra = {"credentials": creds, "ca_store": {"dir": store},
             "reload": {"debounce": debounce, "poll_interval": poll},
             "tenancy": {"sni": "{tenant}.example.com", "unknown": "reject", "no_sni": "reject"}}
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http, client_auth="require")],
                    extra=extra)
    admin_up(cg)
    ctx = H.client_ctx("ecdsa")
    ctx.check_hostname = False
    return store, cg, ctx


def write_tenants(store, tenants):
    """tenants: {id: pem text or None (directory without the file)}; rewrites index.yml."""
    lines = ["common:", "- c.pem", "tenants:"]
    for tid, pem in tenants.items():
        d = os.path.join(store, "tenants", tid)
        os.makedirs(d, exist_ok=True)
        if pem is not None:
            write_atomic(os.path.join(d, "ca.pem"), pem)
        lines += ["  %s:" % tid, "  - ca.pem"]
    if not tenants:
        lines[-1] = "tenants: {}"
    write_atomic(os.path.join(store, "index.yml"), "\n".join(lines) + "\n")


def tenant_request(port, ctx, tenant):
    """"ok" when an mTLS request for |tenant|'s SNI and Host gets 200, else "refused"."""
    name = "%s.example.com" % tenant
    try:
        raw = socket.create_connection((H.HOST, port), timeout=T(3))
    except OSError:
        return "refused"
    try:
        s = ctx.wrap_socket(raw, server_hostname=name)
        s.sendall(H.get_req("/echo", host=name, extra="Connection: close\r\n"))
        resp = H.read_response(H.Reader(s))
        s.close()
        return "ok" if resp.status == 200 else "status %d" % resp.status
    except (ssl.SSLError, OSError, H.Failure):
        raw.close()
        return "refused"


def wait_tenant(port, ctx, tenant, want, timeout=2.0):
    deadline = time.time() + T(timeout)
    got = None
    while time.time() < deadline:
        got = tenant_request(port, ctx, tenant)
        if got == want:
            return
        time.sleep(0.05)
    raise H.Failure("tenant %s: %s after %.1fs, want %s" % (tenant, got, T(timeout), want))


def pem(name):
    with open(os.path.join(H.Opts.pki["ecdsa"], name)) as f:
        return f.read()


def t_tenant_lifecycle(t):
    store, cg, ctx = tenant_env(t, {})
    port = cg.port()
    check(tenant_request(port, ctx, "acme") == "refused", "unknown tenant accepted")
    write_tenants(store, {"acme": pem("root.crt")})              # added
    wait_tenant(port, ctx, "acme", "ok")
    write_tenants(store, {"acme": pem("unknown-root.crt")})      # changed: our root removed
    wait_tenant(port, ctx, "acme", "refused")
    write_tenants(store, {"acme": pem("intermediate.crt")})      # changed: intermediate anchor
    wait_tenant(port, ctx, "acme", "ok")
    shutil.rmtree(os.path.join(store, "tenants", "acme"))
    write_tenants(store, {})                                     # removed
    wait_tenant(port, ctx, "acme", "refused")
    check(reloads(cg, "failure") == 0, "failed reloads: %s" % status(cg)["last_reload"])


def t_broken_tenant_isolated(t):
    """A tenant whose bundle breaks keeps its last good bundle; the others still update."""
    store, cg, ctx = tenant_env(t, {"acme": pem("root.crt"), "beta": pem("unknown-root.crt")})
    port = cg.port()
    wait_tenant(port, ctx, "acme", "ok")
    check(tenant_request(port, ctx, "beta") == "refused", "beta trusts our root too early")
    gen0 = status(cg)["generation"]
    # one reload: acme's file becomes garbage, beta's bundle gains our root
    write_atomic(os.path.join(store, "tenants", "acme", "ca.pem"), "-----BEGIN CERTIFICATE-----\nxx\n")
    write_atomic(os.path.join(store, "tenants", "beta", "ca.pem"), pem("root.crt"))
    wait_tenant(port, ctx, "beta", "ok")
    check(status(cg)["generation"] > gen0, "no new generation")
    check(tenant_request(port, ctx, "acme") == "ok", "broken tenant lost its last good bundle")
    check(status(cg)["last_reload"]["result"] == "success", "the reload failed as a whole")


def opened_during(pid, seconds, under):
    """The files (not directories) below any of |under| that process |pid| (all its threads)
    opened within |seconds|, seen with strace."""
    out = os.path.join(tempfile.mkdtemp(), "strace.txt")
    p = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=open,openat", "-o", out,
                          "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(seconds)
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        raise H.Failure("strace did not stop")
    if not os.path.exists(out):
        raise H.Failure("strace could not attach: %s" % err.decode(errors="replace")[:200])
    seen = []
    with open(out) as f:
        for line in f:
            m = re.search(r'open(?:at)?\((?:[^,]*, )?"([^"]*)"', line)
            if (m and any(m.group(1).startswith(u) for u in under)
                    and not os.path.isdir(m.group(1))):  # scandir opens directories
                seen.append(m.group(1))
    return seen


def padded(text, n):
    """|text| (a PEM) followed by a comment line so that the whole is n bytes long."""
    return text + "#" * (n - len(text) - 1) + "\n"


def t_poll_reads_only_changed_files(t):
    """The periodic rescan compares metadata first: with nothing changed, a poll opens none of
    the store's or the credentials' files; a CA file rewritten in place, same size, its old
    mtime restored (what cp -p or touch -r leave) is still noticed by the next poll (its ctime
    moved), and only that file is read to notice it."""
    a, b = pem("unknown-root.crt"), pem("root.crt")
    n = max(len(a), len(b)) + 32
    store, cg, ctx = tenant_env(t, {"acme": padded(a, n), "beta": pem("unknown-root.crt")},
                                debounce="1h", poll="250ms")
    port = cg.port()
    check(tenant_request(port, ctx, "acme") == "refused", "acme trusts our root too early")
    creds_dir = cg.cfg["credentials"]["dir"]
    watched = [os.path.realpath(store), store, creds_dir, os.path.realpath(creds_dir)]
    time.sleep(3.2)  # older than the 2 s racy window: the next polls may trust the metadata
    seen = opened_during(cg.pid, 1.5, watched)
    check(seen == [], "polls of an unchanged store opened %d files: %s" % (len(seen), seen[:4]))
    path = os.path.join(store, "tenants", "acme", "ca.pem")
    st = os.stat(path)
    with open(path, "r+") as f:
        f.write(padded(b, n))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(path)
    check((st2.st_ino, st2.st_size, st2.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns),
          "the rewrite changed inode, size or mtime")
    # the next full read of every file is a minute away: only the ctime can tell
    wait_tenant(port, ctx, "acme", "ok", timeout=3)
    ms = metrics(cg)
    check(mval(ms, "certgate_reload_total", source="poll", result="success") >= 1,
          "the change was not picked up by a poll")


def t_ca_store_k8s_configmap(t):
    """The CA store as a Kubernetes ConfigMap/projected volume: index.yml and common/ are
    symlinks into ..data, swapped atomically."""
    creds, _ = plain_layout(t)
    store = os.path.join(t.dir, "cm")
    os.makedirs(store)
    state = {"n": 0}

    def install(index, files):
        state["n"] += 1
        ts = "..2026_%d" % state["n"]
        os.makedirs(os.path.join(store, ts, "common"))
        with open(os.path.join(store, ts, "index.yml"), "w") as f:
            f.write(index)
        for name, data in files.items():
            with open(os.path.join(store, ts, "common", name), "w") as f:
                f.write(data)
        os.symlink(ts, os.path.join(store, "..data_tmp"))
        os.replace(os.path.join(store, "..data_tmp"), os.path.join(store, "..data"))
        for name in ("index.yml", "common"):
            if not os.path.islink(os.path.join(store, name)):
                os.symlink(os.path.join("..data", name), os.path.join(store, name))
        for old in os.listdir(store):
            if old.startswith("..2026") and old != ts:
                shutil.rmtree(os.path.join(store, old))
    install("common:\n- a.pem\n", {"a.pem": pem("unknown-root.crt")})
    up, cg, ctx = start(t, creds, store)
    check(H.attempt(t, cg.port(), ctx)[0] != "ok", "client accepted without its root")
    install("common:\n- a.pem\n- b.pem\n", {"a.pem": pem("unknown-root.crt"),
                                             "b.pem": pem("root.crt")})
    wait_for(lambda: H.attempt(t, cg.port(), ctx)[0] == "ok", 2, "the new bundle in use")
    install("common:\n- a.pem\n", {"a.pem": pem("unknown-root.crt")})
    wait_for(lambda: H.attempt(t, cg.port(), ctx)[0] != "ok", 2, "the root removed again")


TESTS = [
    ("reload.sighup_swaps_certificate", t_sighup),
    ("reload.admin_post_swaps_certificate", t_admin_reload),
    ("reload.admin_post_failure_500_keeps_old", t_admin_reload_failure_500),
    ("reload.poll_reads_only_changed_files", t_poll_reads_only_changed_files),
    ("reload.watch_rename_over", watch_case(plain_layout)),
    ("reload.watch_k8s_data_symlink_swap", watch_case(k8s_layout)),
    ("reload.watch_certbot_live_archive", watch_case(certbot_layout)),
    ("reload.watch_credentials_dir_symlink_swap", watch_case(versioned_dir_layout, 3)),
    ("reload.watch_editor_writes", t_editor_write),
    ("reload.unchanged_content_not_rebuilt", t_unchanged_no_rebuild),
    ("reload.poll_picks_up_change", t_poll_fallback),
    ("reload.bad_key_keeps_old_cert", t_bad_key),
    ("reload.non_atomic_rotation_never_mismatched", t_non_atomic),
    ("reload.malformed_index_keeps_store", t_bad_index),
    ("reload.tenant_dir_deleted_recreated", t_tenant_dir_recreated),
    ("reload.store_dir_deleted_recreated", t_store_dir_recreated),
    ("reload.burst_1000_events_bounded", t_burst),
    ("reload.tenant_added_changed_removed", t_tenant_lifecycle),
    ("reload.broken_tenant_keeps_bundle_others_update", t_broken_tenant_isolated),
    ("reload.ca_store_k8s_configmap_swap", t_ca_store_k8s_configmap),
    ("reload.load_20_rotations_rename", rotations_under_load(plain_layout)),
    ("reload.load_20_rotations_k8s", rotations_under_load(k8s_layout)),
    ("reload.load_20_rotations_certbot", rotations_under_load(certbot_layout)),
    ("admin.status_json", t_status_json),
    ("admin.metrics_prometheus_format", t_metrics_format),
    ("admin.token_for_mutating_calls", t_admin_token),
    ("admin.bad_requests_4xx", t_admin_bad_requests),
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
