#!/usr/bin/env python3
"""test_scripts.py: integration tests of the rotation scripts (CONTRACT section 9),
scripts/rotate-credentials.sh and scripts/sync-ca-store.sh, in the group `scripts.`. run.py
calls register(itself) to add them to its list; this file also runs on its own:

    python3 tests/integration/test_scripts.py --binary build/certgate [-k scripts.] [-v]

The scripts run as subprocesses (CERTGATE points them at the binary under test) against private
credentials directories and CA stores that a running certgate watches; what certgate serves is
checked with real TLS handshakes on 127.0.0.1. "Old state untouched" is checked by comparing a
snapshot of the directory tree (names, symlink targets, file bytes and modes) before and after.
The s3:// source is tested with a stand-in `aws` command on PATH (no network). The deploy/
recipes that use these scripts are tested in test_admindeploy.py (group `deploy.`).
"""

import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

H = None  # run.py's module, set by register()

LOCKS = (".rotate-credentials.lock", ".sync-ca-store.lock")
NOTES = []  # when the watcher did not see a swap and SIGHUP was needed (printed with -v)


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


def script(name):
    return os.path.join(H.ROOT, "scripts", name)


def run_script(name, args, env=None, timeout=60):
    """Runs a script with CERTGATE set to the binary under test; returns CompletedProcess."""
    penv = dict(os.environ)
    penv["CERTGATE"] = H.Opts.binary
    penv.pop("RENEWED_LINEAGE", None)
    penv.pop("CERTGATE_CREDENTIALS_DIR", None)
    penv.update(env or {})
    try:
        p = subprocess.run(["bash", script(name)] + list(args), capture_output=True, text=True,
                           timeout=T(timeout), env=penv, errors="replace")
    except subprocess.TimeoutExpired:
        raise H.Failure("%s timed out" % name)
    if H.Opts.sanitizer:
        for pat in H.SAN_PATTERNS:
            check(pat not in p.stderr, "sanitizer report in %s's certgate check: %s"
                  % (name, p.stderr[p.stderr.find(pat):][:300]))
    return p


def snapshot(d):
    """The tree under d without following symlinks: {relpath: (kind, target or sha256, mode)}.
    The scripts' lock files are left out (they are not state certgate reads)."""
    out = {}
    for root, dirs, files in os.walk(d, followlinks=False):
        for n in dirs + files:
            if n in LOCKS:
                continue
            p = os.path.join(root, n)
            rel = os.path.relpath(p, d)
            st = os.lstat(p)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p), 0)
            elif os.path.isdir(p):
                out[rel] = ("dir", "", st.st_mode & 0o7777)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", hashlib.sha256(f.read()).hexdigest(), st.st_mode & 0o7777)
    return out


def versions(d):
    return sorted(n for n in os.listdir(d) if n.startswith("..") and n[2:3].isdigit())


# ---------------------------------------------------------------------------------------------
# certificates

EXT = ("basicConstraints=critical,CA:false\n"
       "keyUsage=critical,digitalSignature,keyEncipherment\n"
       "extendedKeyUsage=serverAuth\n"
       "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
_LEAVES = []


def leaves():
    """Three server leaves for localhost signed by the run's ECDSA intermediate: a list of
    (fullchain_pem, key_pem, leaf_der), made once per run."""
    if _LEAVES:
        return _LEAVES
    pki = H.Opts.pki["ecdsa"]
    d = os.path.join(H.Opts.tmp, "scripts-leaves")
    os.makedirs(d, exist_ok=True)
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write(EXT)
    with open(os.path.join(pki, "intermediate.crt")) as f:
        inter = f.read()
    for i in range(3):
        k, csr, crt = (os.path.join(d, "leaf%d.%s" % (i, s)) for s in ("key", "csr", "crt"))
        for args in (["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                      "ec_paramgen_curve:P-256", "-out", k],
                     ["openssl", "req", "-new", "-key", k, "-subj",
                      "/O=certgate scripts/CN=localhost", "-out", csr],
                     ["openssl", "x509", "-req", "-in", csr, "-CA",
                      os.path.join(pki, "intermediate.crt"), "-CAkey",
                      os.path.join(pki, "intermediate.key"), "-set_serial", str(8100 + i),
                      "-days", "30", "-sha256", "-extfile", ext, "-out", crt]):
            p = subprocess.run(args, capture_output=True, text=True, timeout=30)
            check(p.returncode == 0, "openssl: %s" % p.stderr[-300:])
        with open(crt) as f:
            leaf = f.read()
        with open(k) as f:
            keypem = f.read()
        _LEAVES.append((leaf + inter, keypem, ssl.PEM_cert_to_DER_cert(leaf)))
    return _LEAVES


def pair_files(t, i, name=None):
    """Writes leaf i's chain and key into the test directory; returns (cert_path, key_path)."""
    chain, key, _ = leaves()[i]
    d = os.path.join(t.dir, name or "pair%d" % i)
    os.makedirs(d, exist_ok=True)
    c, k = os.path.join(d, "chain.pem"), os.path.join(d, "key.pem")
    with open(c, "w") as f:
        f.write(chain)
    with open(k, "w") as f:
        f.write(key)
    return c, k


def original_der():
    with open(os.path.join(H.Opts.pki["ecdsa"], "server-leaf.crt")) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


# ---------------------------------------------------------------------------------------------
# certgate and clients

def served_der(port, ctx, timeout=3):
    """The leaf (DER) a new handshake sees; None when the handshake fails."""
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


def eventually(cg, fn, what, timeout=3.0):
    """Waits for fn() to be true: first through certgate's own directory watch; when that does
    not happen in |timeout|, sends SIGHUP (a binary without the watcher) and waits again."""
    for attempt in (0, 1):
        deadline = time.time() + T(timeout)
        while time.time() < deadline:
            if fn():
                return
            time.sleep(0.05)
        if attempt == 0:
            note = "%s: not seen through the watch within %.0fs; sent SIGHUP" % (what,
                                                                                  T(timeout))
            NOTES.append(note)
            if H.Opts.verbose:
                print("    note: " + note, flush=True)
            cg.signal(signal.SIGHUP)
    raise H.Failure("certgate does not see %s (watch and SIGHUP): %s" % (what, cg.tail(4)))


def start(t, creds_dir, store=None):
    up = t.upstream(record_max=4096)
    extra = {"credentials": {"dir": creds_dir, "cert": "tls.crt", "key": "tls.key"},
             "reload": {"debounce": "100ms", "poll_interval": "1h"}}
    if store:
        extra["ca_store"] = {"dir": store}
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http, client_auth="require")],
                    extra=extra)
    return cg, H.client_ctx("ecdsa")


def k8s_creds(t):
    """A credentials directory installed by the script itself from the run's server pair."""
    d = os.path.join(t.dir, "creds")
    os.makedirs(d)
    pki = H.Opts.pki["ecdsa"]
    p = run_script("rotate-credentials.sh", ["--cert", os.path.join(pki, "server.crt"), "--key",
                                             os.path.join(pki, "server.key"), "--dir", d])
    check(p.returncode == 0, "first install: rc %d: %s" % (p.returncode, p.stderr.strip()))
    return d


# ---------------------------------------------------------------------------------------------
# tests: rotate-credentials.sh

def t_help(t):
    for name in ("rotate-credentials.sh", "sync-ca-store.sh"):
        p = run_script(name, ["--help"])
        check(p.returncode == 0, "%s --help: rc %d" % (name, p.returncode))
        check("usage" in p.stdout and len(p.stdout.splitlines()) > 5,
              "%s --help prints %r" % (name, p.stdout[:200]))
        p = run_script(name, ["--no-such-option"])
        check(p.returncode == 2, "%s with an unknown option: rc %d" % (name, p.returncode))


def t_rotate_valid(t):
    d = k8s_creds(t)
    cg, ctx = start(t, d)
    check(served_der(cg.port(), ctx) == original_der(), "the original certificate is not served")
    first = os.readlink(os.path.join(d, "..data"))
    c, k = pair_files(t, 0)
    p = run_script("rotate-credentials.sh", ["--cert", c, "--key", k, "--dir", d])
    check(p.returncode == 0, "rc %d: %s" % (p.returncode, p.stderr.strip()))
    second = os.readlink(os.path.join(d, "..data"))
    check(second != first and second.startswith("..2"), "..data -> %r (was %r)" % (second, first))
    check(versions(d) == sorted([first, second]), "versions %r" % versions(d))
    for n in ("tls.crt", "tls.key"):
        check(os.readlink(os.path.join(d, n)) == "..data/" + n, "%s is not a ..data link" % n)
    with open(os.path.join(d, second, "tls.crt")) as f:
        check(f.read() == leaves()[0][0], "installed chain differs from the input")
    mode = os.stat(os.path.join(d, second, "tls.key")).st_mode & 0o777
    check(mode == 0o600, "key mode %o" % mode)
    with open(os.path.join(d, first, "tls.key")) as f, \
            open(os.path.join(H.Opts.pki["ecdsa"], "server.key")) as g:
        check(f.read() == g.read(), "the previous version was not kept")
    eventually(cg, lambda: served_der(cg.port(), ctx) == leaves()[0][2], "the rotated pair")
    # a third rotation: the new and the previous version stay, the oldest goes
    c, k = pair_files(t, 1)
    p = run_script("rotate-credentials.sh", ["--cert", c, "--key", k, "--dir", d])
    check(p.returncode == 0, "rc %d: %s" % (p.returncode, p.stderr.strip()))
    third = os.readlink(os.path.join(d, "..data"))
    check(versions(d) == sorted([second, third]), "versions after 3 installs: %r" % versions(d))
    eventually(cg, lambda: served_der(cg.port(), ctx) == leaves()[1][2], "the second rotation")


def refused_case(args_fn, words, want_rc=1):
    """The script refuses (rc want_rc, message with every word), the directory is byte-for-byte
    what it was, and certgate still serves the original certificate."""
    def fn(t):
        d = k8s_creds(t)
        cg, ctx = start(t, d)
        before = snapshot(d)
        args, env = args_fn(t, d)
        p = run_script("rotate-credentials.sh", args, env=env)
        check(p.returncode == want_rc, "rc %d (want %d): %s" % (p.returncode, want_rc,
                                                                 p.stderr.strip()))
        msg = p.stderr.lower()
        for w in words:
            check(w.lower() in msg, "message %r lacks %r" % (p.stderr.strip(), w))
        after = snapshot(d)
        check(after == before, "the directory changed: %r" % sorted(
            set(before.items()) ^ set(after.items()))[:4])
        time.sleep(0.3)
        check(served_der(cg.port(), ctx) == original_der(), "certgate does not serve the old pair")
    return fn


def mismatched(t, d):
    c, _ = pair_files(t, 0)
    _, k = pair_files(t, 1)
    return ["--cert", c, "--key", k, "--dir", d], None


def missing_key(t, d):
    c, _ = pair_files(t, 0)
    return ["--cert", c, "--key", os.path.join(t.dir, "nope.key"), "--dir", d], None


def no_key_arg(t, d):
    c, _ = pair_files(t, 0)
    return ["--cert", c, "--dir", d], None


def expired(t, d):
    pki = H.Opts.pki["ecdsa"]
    return ["--cert", os.path.join(pki, "client-expired.crt"), "--key",
            os.path.join(pki, "client-expired.key"), "--dir", d], None


def garbage_cert(t, d):
    c, k = pair_files(t, 0)
    with open(c, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    return ["--cert", c, "--key", k, "--dir", d], None


def truncated_chain(t, d):
    c, k = pair_files(t, 0)
    with open(c) as f:
        chain = f.read()
    with open(c, "w") as f:
        f.write(chain[:len(chain) - 120])  # the intermediate loses its end
    return ["--cert", c, "--key", k, "--dir", d], None


def certbot_incomplete(t, d):
    live = os.path.join(t.dir, "letsencrypt", "live", "x")
    os.makedirs(live)
    chain, _, _ = leaves()[0]
    with open(os.path.join(live, "fullchain.pem"), "w") as f:
        f.write(chain)
    return ["--dir", d], {"RENEWED_LINEAGE": live}


def certbot_layout(t, i):
    """certbot's live/NAME/{fullchain,privkey}.pem symlinks into archive/NAME/."""
    le = os.path.join(t.dir, "letsencrypt")
    archive, live = os.path.join(le, "archive", "x"), os.path.join(le, "live", "x")
    os.makedirs(archive)
    os.makedirs(live)
    chain, key, _ = leaves()[i]
    for name, data in (("fullchain1.pem", chain), ("privkey1.pem", key)):
        with open(os.path.join(archive, name), "w") as f:
            f.write(data)
    for name in ("fullchain", "privkey"):
        os.symlink("../../archive/x/%s1.pem" % name, os.path.join(live, name + ".pem"))
    return live


def t_rotate_certbot(t):
    d = k8s_creds(t)
    cg, ctx = start(t, d)
    live = certbot_layout(t, 2)
    # the deploy-hook form, with the directory from CERTGATE_CREDENTIALS_DIR
    p = run_script("rotate-credentials.sh", [],
                   env={"RENEWED_LINEAGE": live, "CERTGATE_CREDENTIALS_DIR": d})
    check(p.returncode == 0, "rc %d: %s" % (p.returncode, p.stderr.strip()))
    with open(os.path.join(d, "..data", "tls.key")) as f:
        check(f.read() == leaves()[2][1], "privkey.pem was not installed as tls.key")
    check(not os.path.islink(os.path.join(d, "..data", "tls.crt")),
          "the installed certificate is a link into the certbot tree")
    eventually(cg, lambda: served_der(cg.port(), ctx) == leaves()[2][2], "the certbot pair")


def t_rotate_config(t):
    d = k8s_creds(t)
    cg, ctx = start(t, d)
    c, k = pair_files(t, 0)
    # --config: the directory comes from the running certgate's own configuration
    p = run_script("rotate-credentials.sh", ["--cert", c, "--key", k, "--config", cg.path])
    check(p.returncode == 0, "rc %d: %s" % (p.returncode, p.stderr.strip()))
    eventually(cg, lambda: served_der(cg.port(), ctx) == leaves()[0][2], "the rotated pair")
    # --config whose CA store is broken: certgate check fails, nothing changes
    bad = os.path.join(t.dir, "bad.yaml")
    with open(cg.path) as f:
        text = f.read()
    store = cg.cfg["ca_store"]["dir"]
    with open(bad, "w") as f:
        f.write(text.replace(store, os.path.join(t.dir, "no-such-store")))
    before = snapshot(d)
    c, k = pair_files(t, 1)
    p = run_script("rotate-credentials.sh", ["--cert", c, "--key", k, "--config", bad])
    check(p.returncode == 1, "broken config: rc %d: %s" % (p.returncode, p.stderr.strip()))
    check("no-such-store" in p.stderr and "certgate check" in p.stderr,
          "message %r" % p.stderr.strip())
    check(snapshot(d) == before, "the directory changed after a failed check")


def t_rotate_plain(t):
    """A directory with plain tls.crt/tls.key (not yet ..data): links replace them, the plain
    pair is kept as the previous version."""
    d = os.path.join(t.dir, "creds")
    os.makedirs(d)
    pki = H.Opts.pki["ecdsa"]
    shutil.copy(os.path.join(pki, "server.crt"), os.path.join(d, "tls.crt"))
    shutil.copy(os.path.join(pki, "server.key"), os.path.join(d, "tls.key"))
    cg, ctx = start(t, d)
    c, k = pair_files(t, 0)
    p = run_script("rotate-credentials.sh", ["--cert", c, "--key", k, "--dir", d])
    check(p.returncode == 0, "rc %d: %s" % (p.returncode, p.stderr.strip()))
    for n in ("tls.crt", "tls.key"):
        check(os.readlink(os.path.join(d, n)) == "..data/" + n, "%s is not a ..data link" % n)
    vs = versions(d)
    check(len(vs) == 2, "versions %r" % vs)
    old = [v for v in vs if v != os.readlink(os.path.join(d, "..data"))][0]
    with open(os.path.join(d, old, "tls.crt")) as f, open(os.path.join(pki, "server.crt")) as g:
        check(f.read() == g.read(), "the plain pair was not kept for rollback")
    eventually(cg, lambda: served_der(cg.port(), ctx) == leaves()[0][2], "the rotated pair")


# ---------------------------------------------------------------------------------------------
# tests: sync-ca-store.sh

def store_tree(t, name, common_pem, tenants=None):
    """A CA store directory: common/common.pem = common_pem (a file path), tenants as
    {id: {filename: text}}."""
    d = os.path.join(t.dir, name)
    os.makedirs(os.path.join(d, "common"))
    shutil.copy(common_pem, os.path.join(d, "common", "common.pem"))
    lines = ["common:", "- common.pem"]
    if tenants:
        lines.append("tenants:")
        for tid, files in tenants.items():
            os.makedirs(os.path.join(d, "tenants", tid))
            lines.append("  %s:" % tid)
            for fname, text in files.items():
                with open(os.path.join(d, "tenants", tid, fname), "w") as f:
                    f.write(text)
                lines.append("  - %s" % fname)
    with open(os.path.join(d, "index.yml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return d


def request_ok(cg, ctx):
    """True when the client (signed under the run's root) completes a request."""
    try:
        raw = socket.create_connection((H.HOST, cg.port()), timeout=T(3))
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while len(data) < 12:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        return data.startswith(b"HTTP/1.1 200")
    except (ssl.SSLError, OSError):
        return False


def sync_env(t):
    """certgate with a plain CA store that trusts nobody we use (common = unknown root) and a
    source store that trusts the run's root (and has tenant acme)."""
    pki = H.Opts.pki["ecdsa"]
    dest = store_tree(t, "dest", os.path.join(pki, "unknown-root.crt"))
    with open(os.path.join(pki, "root.crt")) as f:
        root = f.read()
    src = store_tree(t, "src", os.path.join(pki, "root.crt"), {"acme": {"acme.pem": root}})
    cg, ctx = start(t, pki_creds(t), dest)
    check(not request_ok(cg, ctx), "the client is trusted before the sync")
    return src, dest, cg, ctx


def pki_creds(t):
    d = os.path.join(t.dir, "creds")
    os.makedirs(d)
    pki = H.Opts.pki["ecdsa"]
    shutil.copy(os.path.join(pki, "server.crt"), os.path.join(d, "tls.crt"))
    shutil.copy(os.path.join(pki, "server.key"), os.path.join(d, "tls.key"))
    return d


def t_sync_valid(t):
    src, dest, cg, ctx = sync_env(t)
    p = run_script("sync-ca-store.sh", [src, dest])
    check(p.returncode == 0, "rc %d: %s" % (p.returncode, p.stderr.strip()))
    data = os.readlink(os.path.join(dest, "..data"))
    for n in ("index.yml", "common", "tenants"):
        check(os.readlink(os.path.join(dest, n)) == "..data/" + n, "%s is not a ..data link" % n)
    check(os.path.isfile(os.path.join(dest, "tenants", "acme", "acme.pem")), "tenant not copied")
    vs = versions(dest)
    check(len(vs) == 2 and data in vs, "versions %r, ..data -> %r" % (vs, data))
    old = [v for v in vs if v != data][0]
    check(os.path.isfile(os.path.join(dest, old, "index.yml")), "the previous store was not kept")
    eventually(cg, lambda: request_ok(cg, ctx), "the synced CA store")
    # certgate itself loads the installed layout (symlinked index.yml and directories)
    cfg = os.path.join(t.dir, "check.yaml")
    with open(cg.path) as f, open(cfg, "w") as g:
        g.write(f.read())
    p = H.run_cmd([H.Opts.binary, "check", "-c", cfg])
    check(p.returncode == 0 and "tenant acme: 1 certificate" in p.stdout,
          "certgate check on the installed store: rc %d %s %s" % (p.returncode, p.stdout,
                                                                 p.stderr))
    # unchanged source: nothing is reinstalled
    p = run_script("sync-ca-store.sh", [src, dest])
    check(p.returncode == 0 and "unchanged" in p.stdout, "rc %d: %s" % (p.returncode, p.stdout))
    check(os.readlink(os.path.join(dest, "..data")) == data, "an unchanged store was reinstalled")
    # a change: the new and the previous version stay, the oldest goes
    with open(os.path.join(src, "tenants", "acme", "acme.pem"), "a") as f:
        f.write("\n")
    p = run_script("sync-ca-store.sh", [src, dest])
    check(p.returncode == 0, "rc %d: %s" % (p.returncode, p.stderr.strip()))
    new = os.readlink(os.path.join(dest, "..data"))
    check(versions(dest) == sorted([data, new]), "versions %r" % versions(dest))
    check(request_ok(cg, ctx), "the client is refused after the second sync")


def sync_refused_case(mutate, words):
    def fn(t):
        src, dest, cg, ctx = sync_env(t)
        p = run_script("sync-ca-store.sh", [src, dest])
        check(p.returncode == 0, "first sync: rc %d: %s" % (p.returncode, p.stderr.strip()))
        eventually(cg, lambda: request_ok(cg, ctx), "the synced CA store")
        src_arg = mutate(t, src)
        before = snapshot(dest)
        p = run_script("sync-ca-store.sh", [src_arg, dest])
        check(p.returncode == 1, "rc %d: %s %s" % (p.returncode, p.stdout, p.stderr.strip()))
        for w in words:
            check(w in p.stderr, "message %r lacks %r" % (p.stderr.strip(), w))
        check(snapshot(dest) == before, "the store changed")
        time.sleep(0.3)
        check(request_ok(cg, ctx), "the client is refused after a rejected sync")
    return fn


def broken_tenant(t, src):
    os.makedirs(os.path.join(src, "tenants", "bad"))
    with open(os.path.join(H.Opts.pki["ecdsa"], "root.crt")) as f:
        pem = f.read()
    with open(os.path.join(src, "tenants", "bad", "bad.pem"), "w") as f:
        f.write(pem[:200])  # no END line
    with open(os.path.join(src, "index.yml"), "a") as f:
        f.write("  bad:\n  - bad.pem\n")
    return src


def missing_tenant_file(t, src):
    with open(os.path.join(src, "index.yml"), "a") as f:
        f.write("  gone:\n  - gone.pem\n")
    return src


def broken_index(t, src):
    with open(os.path.join(src, "index.yml"), "w") as f:
        f.write("common: [\n")
    return src


def no_index(t, src):
    os.unlink(os.path.join(src, "index.yml"))
    return src


def no_src(t, src):
    return os.path.join(t.dir, "no-such-dir")


def fake_aws(t, bucket_root):
    """A stand-in `aws` (s3 sync s3://B/P DIR ...: copies bucket_root/B/P into DIR) on PATH."""
    bindir = os.path.join(t.dir, "bin")
    os.makedirs(bindir)
    with open(os.path.join(bindir, "aws"), "w") as f:
        f.write("#!/bin/sh\n"
                "[ \"$1 $2\" = 's3 sync' ] || { echo \"fake aws: $*\" >&2; exit 2; }\n"
                "p=${3#s3://}\n"
                "[ -d \"$FAKE_S3/$p\" ] || { echo \"fatal error: NoSuchBucket $3\" >&2; exit 1; }\n"
                "cp -R \"$FAKE_S3/$p/.\" \"$4\"\n")
    os.chmod(os.path.join(bindir, "aws"), 0o755)
    return {"PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "FAKE_S3": bucket_root}


def t_sync_s3(t):
    src, dest, cg, ctx = sync_env(t)
    bucket = os.path.join(t.dir, "s3")
    os.makedirs(os.path.join(bucket, "bucket"))
    shutil.copytree(src, os.path.join(bucket, "bucket", "stores", "prod"))
    env = fake_aws(t, bucket)
    p = run_script("sync-ca-store.sh", ["s3://bucket/stores/prod", dest], env=env)
    check(p.returncode == 0, "rc %d: %s" % (p.returncode, p.stderr.strip()))
    eventually(cg, lambda: request_ok(cg, ctx), "the CA store synced from s3")
    before = snapshot(dest)
    p = run_script("sync-ca-store.sh", ["s3://bucket/nope", dest], env=env)
    check(p.returncode == 1 and "s3://bucket/nope" in p.stderr and "NoSuchBucket" in p.stderr,
          "failed fetch: rc %d: %s" % (p.returncode, p.stderr.strip()))
    check(snapshot(dest) == before, "the store changed after a failed fetch")
    # without the aws CLI: a clear error
    nobin = os.path.join(t.dir, "nobin")
    os.makedirs(nobin)
    for tool in ("bash", "openssl", "mkdir", "mktemp", "rm", "cat", "date", "dirname", "sed",
                 "grep", "chmod", "cp", "flock", "printf", "head"):
        w = shutil.which(tool)
        if w:
            os.symlink(w, os.path.join(nobin, tool))
    p = run_script("sync-ca-store.sh", ["s3://bucket/stores/prod", dest], env={"PATH": nobin})
    check(p.returncode == 1 and "aws CLI" in p.stderr,
          "no aws: rc %d: %s" % (p.returncode, p.stderr.strip()))
    check(snapshot(dest) == before, "the store changed without aws")


def t_sync_first_install(t):
    """An empty DEST that does not exist yet: created and installed, no previous version."""
    pki = H.Opts.pki["ecdsa"]
    src = store_tree(t, "src", os.path.join(pki, "root.crt"))
    dest = os.path.join(t.dir, "new", "ca-store")
    p = run_script("sync-ca-store.sh", [src, dest])
    check(p.returncode == 0, "rc %d: %s" % (p.returncode, p.stderr.strip()))
    check(len(versions(dest)) == 1, "versions %r" % versions(dest))
    cg, ctx = start(t, pki_creds(t), dest)
    check(request_ok(cg, ctx), "certgate does not trust the client with the installed store")


TESTS = [
    ("scripts.help", t_help),
    ("scripts.rotate_valid", t_rotate_valid),
    ("scripts.rotate_mismatch", refused_case(mismatched, ["does not match"])),
    ("scripts.rotate_missing_key", refused_case(missing_key, ["nope.key", "no such"])),
    ("scripts.rotate_no_key_arg", refused_case(no_key_arg, ["--key"], want_rc=2)),
    ("scripts.rotate_expired", refused_case(expired, ["expired"])),
    ("scripts.rotate_garbage_cert", refused_case(garbage_cert, ["not a pem certificate"])),
    ("scripts.rotate_truncated_chain", refused_case(truncated_chain, ["certificate 2"])),
    ("scripts.rotate_certbot_incomplete", refused_case(certbot_incomplete, ["privkey.pem"])),
    ("scripts.rotate_certbot", t_rotate_certbot),
    ("scripts.rotate_config", t_rotate_config),
    ("scripts.rotate_plain_dir", t_rotate_plain),
    ("scripts.sync_valid", t_sync_valid),
    ("scripts.sync_first_install", t_sync_first_install),
    ("scripts.sync_broken_tenant",
     sync_refused_case(broken_tenant, ["tenants/bad/bad.pem:1", "unchanged"])),
    ("scripts.sync_missing_tenant_file", sync_refused_case(missing_tenant_file, ["gone.pem"])),
    ("scripts.sync_broken_index", sync_refused_case(broken_index, ["index.yml:"])),
    ("scripts.sync_no_index", sync_refused_case(no_index, ["no index.yml"])),
    ("scripts.sync_no_src", sync_refused_case(no_src, ["no-such-dir", "no such directory"])),
    ("scripts.sync_s3", t_sync_s3),
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
