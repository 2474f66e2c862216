#!/usr/bin/env python3
"""test_security.py: tests for the rules of SECURITY.md that the other suites left without a
test or with a weak one, in the group `security.`. run.py calls register(itself) to add them to
its list; this file also runs on its own:

    python3 tests/integration/test_security.py --binary build/certgate [-k security.] [-v]

Real clients only (Python ssl, also over memory BIOs to fragment a ClientHello; curl is used by
the other suites) against run.py's recording upstream, or, where an upstream has to misbehave
(bad framing that it keeps open, bytes after a response, a 101 nobody asked for), a scripted
upstream in this process. Certificates are made with the openssl CLI, signed by the run's PKI:
SHA-1, MD5 and RSA 1024 leaves and intermediates, chains of 8 to 10 certificates, CRLs that are
past nextUpdate or go stale while certgate runs. Loopback only; every test is bounded.

Rule -> tests: 1-2 security.fragmented_client_hello_*, security.no_cert_*; 5 security.verify_*;
6 security.crl_*; 8 security.connection_header_*; 12 security.head_reserialised_*;
13 security.upgrade_*; 14 security.upstream_*; 15 security.pipeline_*, security.chunk_ext_*;
16 security.header_handling_linear; 17 security.emfile_*; 19 security.half_written_*;
20 security.credentials_dir_replaced_*.
"""

import os
import re
import resource
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

H = None  # run.py's module, set by register()
_CACHE = {}


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


def mod(name):
    """Another test module of this directory, registered with the same harness."""
    m = __import__(name)
    m.register(H)
    return m


# ---------------------------------------------------------------------------------------------
# certificates (openssl CLI), made once per run under the run's temporary directory

EXT_CLIENT = ("basicConstraints=critical,CA:false\n"
              "keyUsage=critical,digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=clientAuth\n"
              "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
EXT_CA = ("basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n"
          "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")


def sdir():
    d = os.path.join(H.Opts.tmp, "security-pki")
    os.makedirs(d, exist_ok=True)
    return d


def openssl(*args, data=None):
    p = subprocess.run(["openssl"] + list(args), input=data, capture_output=True, timeout=60)
    check(p.returncode == 0, "openssl %s: %s" % (" ".join(args[:2]),
                                                 p.stderr.decode("latin-1")[-300:]))
    return p.stdout


def genkey(path, kind):
    if kind == "ec":
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    else:
        bits = {"rsa1024": "1024", "rsa2048": "2048"}[kind]
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:" + bits,
                "-out", path)


def issue(name, kind, ca_crt, ca_key, subj, ext, md="sha256"):
    """A certificate for a new key of |kind| signed by ca_crt/ca_key with digest |md|;
    returns (cert file, key file). Cached per run by name."""
    if name in _CACHE:
        return _CACHE[name]
    d = sdir()
    k, csr, crt, extf = (os.path.join(d, "%s.%s" % (name, s)) for s in ("key", "csr", "crt", "ext"))
    genkey(k, kind)
    with open(extf, "w") as f:
        f.write(ext)
    openssl("req", "-new", "-key", k, "-subj", subj, "-out", csr)
    _CACHE.setdefault("serial", 9000)
    _CACHE["serial"] += 1
    openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-set_serial",
            str(_CACHE["serial"]), "-days", "30", "-" + md, "-extfile", extf, "-out", crt)
    _CACHE[name] = (crt, k)
    return crt, k


def pki(alg, name):
    return os.path.join(H.Opts.pki[alg], name)


def cat(out, *files):
    with open(out, "w") as o:
        for f in files:
            with open(f) as i:
                o.write(i.read())
    return out


def client_leaf(name, alg="ecdsa", kind=None, md="sha256", subj=None, ext=EXT_CLIENT):
    """A client leaf signed by the run's intermediate; returns (chain file, key file)."""
    kind = kind or ("ec" if alg == "ecdsa" else "rsa2048")
    crt, key = issue("%s-%s" % (alg, name), kind, pki(alg, "intermediate.crt"),
                     pki(alg, "intermediate.key"),
                     subj or "/O=certgate demo/CN=0102030405060708", ext, md)
    chain = cat(os.path.join(sdir(), "%s-%s-chain.crt" % (alg, name)), crt,
                pki(alg, "intermediate.crt"))
    return chain, key


def weak_ctx(chain, key, alg="ecdsa"):
    """A client context that is itself willing to use weak certificates (security level 0), so
    that a refusal can only come from certgate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki(alg, "root.crt"))
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(chain, key)
    return ctx


def ctx_for(chain, key, alg="ecdsa"):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki(alg, "root.crt"))
    ctx.load_cert_chain(chain, key)
    return ctx


# ---------------------------------------------------------------------------------------------
# logs and metrics

def events(cg, name=None):
    return H.log_events(cg, name)


def wait_event(cg, name, since, pred=lambda e: True, timeout=3):
    """The first event |name| after the first |since| ones that satisfies pred."""
    deadline = time.time() + T(timeout)
    while True:
        new = [e for e in events(cg, name)[since:] if pred(e)]
        if new:
            return new[0]
        if time.time() > deadline:
            return None
        time.sleep(0.05)


def metrics(cg):
    status, body = H.http_get(cg.admin_port, "/metrics")
    check(status == 200, "/metrics: %d" % status)
    out = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if m:
            labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def mval(ms, name, **labels):
    return ms.get((name, tuple(sorted(labels.items()))), 0.0)


def msum(ms, name, **labels):
    return sum(v for (n, ls), v in ms.items()
               if n == name and all((k, w) in ls for k, w in labels.items()))


# ---------------------------------------------------------------------------------------------
# rule 5: verification beyond chain building

def refused_by_certgate(t, cg, ctx, words, what, result="policy"):
    """The client is refused, and certgate logged why: a handshake_refused line with |result|
    whose reason holds one of |words| (so that a refusal for another reason does not pass)."""
    n = len(events(cg, "handshake_refused"))
    res, info = H.attempt(t, cg.port(), ctx)
    check(res == "refused", "%s: got %s %r" % (what, res, info))
    ev = wait_event(cg, "handshake_refused", n)
    check(ev is not None, "%s: no handshake_refused line logged: %s" % (what, cg.tail(3)))
    reason = (ev.get("reason") or "").lower()
    check(ev.get("result") == result and any(w in reason for w in words),
          "%s: refused for another reason: result=%s reason=%r" % (what, ev.get("result"),
                                                                  ev.get("reason")))


def accepted(t, cg, ctx, what, tag="ok"):
    res, resp = H.attempt(t, cg.port(), ctx, H.get_req("/echo?" + tag))
    check(res == "ok" and resp.status == 200, "%s: %s %r || %s" % (what, res, resp, cg.tail(2)))


def t_sha1_leaf(alg):
    def fn(t):
        up, cg, ctx = H.http_env(t, alg)
        accepted(t, cg, ctx, "control (sha256 leaf)")
        chain, key = client_leaf("sha1-leaf", alg, md="sha1")
        refused_by_certgate(t, cg, weak_ctx(chain, key, alg), ("sha1",), "SHA-1 leaf")
        time.sleep(0.1)
        check([q["target"] for q in up.requests()] == ["/echo?ok"], "upstream saw %r"
              % [q["target"] for q in up.requests()])
    return fn


def t_md5_leaf(t):
    up, cg, ctx = H.http_env(t, "rsa")
    chain, key = client_leaf("md5-leaf", "rsa", md="md5")
    refused_by_certgate(t, cg, weak_ctx(chain, key, "rsa"), ("md5",), "MD5 leaf")


def t_sha1_intermediate(t):
    """An intermediate signed with SHA-1 by the (trusted) root, leaf signed with SHA-256."""
    inter, ikey = issue("ecdsa-sha1-int", "ec", pki("ecdsa", "root.crt"), pki("ecdsa", "root.key"),
                        "/O=certgate demo/CN=sha1 intermediate", EXT_CA, "sha1")
    leaf, key = issue("ecdsa-under-sha1-int", "ec", inter, ikey,
                      "/O=certgate demo/CN=0102030405060708", EXT_CLIENT)
    chain = cat(os.path.join(sdir(), "under-sha1-int-chain.crt"), leaf, inter)
    up, cg, ctx = H.http_env(t, "ecdsa")
    refused_by_certgate(t, cg, weak_ctx(chain, key), ("sha1",), "leaf under a SHA-1 intermediate")
    accepted(t, cg, ctx, "control")


def t_rsa1024_leaf(t):
    up, cg, ctx = H.http_env(t, "rsa")
    chain, key = client_leaf("rsa1024-leaf", "rsa", kind="rsa1024")
    refused_by_certgate(t, cg, weak_ctx(chain, key, "rsa"), ("2048", "bits"), "RSA 1024 leaf")
    accepted(t, cg, ctx, "control (RSA 2048 leaf)")


def t_rsa1024_intermediate(t):
    inter, ikey = issue("rsa1024-int", "rsa1024", pki("rsa", "root.crt"), pki("rsa", "root.key"),
                        "/O=certgate demo/CN=rsa1024 intermediate", EXT_CA)
    leaf, key = issue("rsa-under-1024-int", "rsa2048", inter, ikey,
                      "/O=certgate demo/CN=0102030405060708", EXT_CLIENT)
    chain = cat(os.path.join(sdir(), "under-rsa1024-int-chain.crt"), leaf, inter)
    up, cg, ctx = H.http_env(t, "rsa")
    refused_by_certgate(t, cg, weak_ctx(chain, key, "rsa"), ("2048", "bits"),
                        "leaf under an RSA 1024 intermediate")


def deep_chain(total):
    """A chain of |total| certificates: the run's ECDSA root, total-2 intermediates, a leaf.
    Returns (file with leaf + intermediates as the client sends them, key)."""
    name = "deep-%d" % total
    if name in _CACHE:
        return _CACHE[name]
    ca_crt, ca_key = pki("ecdsa", "root.crt"), pki("ecdsa", "root.key")
    inters = []
    for i in range(1, total - 1):
        ca_crt, ca_key = issue("deep-int-%d" % i, "ec", ca_crt, ca_key,
                               "/O=certgate demo/CN=deep intermediate %d" % i, EXT_CA)
        inters.append(ca_crt)
    leaf, key = issue("deep-leaf-%d" % total, "ec", ca_crt, ca_key,
                      "/O=certgate demo/CN=0102030405060708", EXT_CLIENT)
    chain = cat(os.path.join(sdir(), name + ".crt"), leaf, *reversed(inters))
    _CACHE[name] = (chain, key)
    return chain, key


def depth_case(t, ok, refused):
    up, cg, _ = H.http_env(t, "ecdsa")
    for total in ok:
        chain, key = deep_chain(total)
        accepted(t, cg, ctx_for(chain, key), "chain of %d certificates" % total, "n=%d" % total)
    for total in refused:
        chain, key = deep_chain(total)
        n = len(events(cg, "handshake_refused"))
        res, info = H.attempt(t, cg.port(), ctx_for(chain, key))
        check(res == "refused", "chain of %d certificates (root + %d intermediates + leaf): %s %s"
              % (total, total - 2, res, getattr(info, "status", info)))
        check(wait_event(cg, "handshake_refused", n) is not None,
              "chain of %d: no refusal logged" % total)
    time.sleep(0.1)
    check(len(up.requests()) == len(ok), "upstream saw %d requests" % len(up.requests()))


def t_chain_depth_bounded(t):
    """Chain depth is bounded: 5 certificates pass, 10 and 12 are refused."""
    depth_case(t, (5,), (10, 12))


def t_chain_depth_readme(t):
    """README: "the chain has at most 8 certificates" (MAX_CHAIN_DEPTH 8 in proxy/tls/tls_verify.c):
    8 certificates (root + 6 intermediates + leaf) pass, 9 are refused."""
    depth_case(t, (8,), (9,))


def t_cn_pattern(t):
    """subject_cn_pattern applies to the leaf CN only: a DNS SAN that matches does not help."""
    up = t.upstream()
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http, client_auth="require",
                                         subject_cn_pattern="^[0-9A-F]{16}$")])
    accepted(t, cg, H.client_ctx("ecdsa"), "CN 0102030405060708")
    chain, key = client_leaf("cn-mismatch", subj="/O=certgate demo/CN=0102030405060708x",
                             ext=EXT_CLIENT + "subjectAltName=DNS:0102030405060708\n")
    refused_by_certgate(t, cg, ctx_for(chain, key), ("subject_cn_pattern",),
                        "CN not matching, DNS SAN matching")
    chain, key = client_leaf("cn-none", subj="/O=certgate demo/OU=0102030405060708",
                             ext=EXT_CLIENT + "subjectAltName=DNS:0102030405060708\n")
    refused_by_certgate(t, cg, ctx_for(chain, key), ("subject_cn_pattern",), "no CN at all")


# ---------------------------------------------------------------------------------------------
# rule 6: CRLs

CA_CNF = """[ ca ]
default_ca = CA_default
[ CA_default ]
dir              = %s
database         = $dir/index.txt
serial           = $dir/serial
crlnumber        = $dir/crlnumber
new_certs_dir    = $dir
default_md       = sha256
default_crl_days = 30
policy           = policy_any
[ policy_any ]
commonName       = optional
"""


def utc(ts):
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(ts))


def make_crl(name, revoked, last=None, nxt=None, alg="ecdsa"):
    """A CRL of the run's intermediate revoking |revoked| (certificate files), in PEM."""
    d = tempfile.mkdtemp(prefix="crl-", dir=sdir())
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write(CA_CNF % d)
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("01\n")
    with open(os.path.join(d, "crlnumber"), "w") as f:
        f.write("%02X\n" % (len(_CACHE) + 1))
    base = ["-config", os.path.join(d, "ca.cnf"), "-batch", "-cert", pki(alg, "intermediate.crt"),
            "-keyfile", pki(alg, "intermediate.key")]
    for crt in revoked:
        openssl("ca", *(base + ["-revoke", crt]))
    out = os.path.join(sdir(), name + ".crl")
    args = base + ["-gencrl", "-out", out]
    if last:
        args += ["-crl_lastupdate", utc(last)]
    if nxt:
        args += ["-crl_nextupdate", utc(nxt)]
    openssl("ca", *args)
    with open(out) as f:
        return f.read()


def crl_store(t, crl_pem, alg="ecdsa"):
    """A private copy of the run's CA store whose common bundle lists crl.pem too."""
    d = os.path.join(t.dir, "ca-store")
    shutil.copytree(pki(alg, "ca-store"), d)
    with open(os.path.join(d, "common", "crl.pem"), "w") as f:
        f.write(crl_pem)
    with open(os.path.join(d, "index.yml"), "w") as f:
        f.write("common:\n- common.pem\n- crl.pem\n")
    return d


def write_atomic(path, data):
    tmp = os.path.join(os.path.dirname(path), ".%s.tmp" % os.path.basename(path))
    with open(tmp, "w") as f:
        f.write(data)
    os.replace(tmp, path)


def crl_env(t, crl_pem, listeners=None, workers=2):
    store = crl_store(t, crl_pem)
    up = t.upstream()
    ls = listeners(up) if listeners else [H.listener("https", "http", up.http,
                                                       client_auth="require")]
    cg = t.certgate("ecdsa", ls, extra={"ca_store": {"dir": store}, "workers": workers,
                                        "reload": {"debounce": "100ms", "poll_interval": "1h"}})
    return store, up, cg


def victim():
    return client_leaf("victim", subj="/O=certgate demo/CN=victim")


def t_crl_stale_applies(t):
    """A CRL past its nextUpdate still applies (its revoked client is refused), the others are
    served, and the staleness is loud: an event crl_stale and certgate_crl_stale_total."""
    vchain, vkey = victim()
    crl = make_crl("stale", [_CACHE["ecdsa-victim"][0]], last=time.time() - 86400 * 400,
                   nxt=time.time() - 86400 * 30)
    store, up, cg = crl_env(t, crl)
    accepted(t, cg, H.client_ctx("ecdsa"), "a client the stale CRL does not list")
    ev = wait_event(cg, "crl_stale", 0)
    check(ev is not None and ev.get("level") in (None, "warn", "warning", "error"),
          "no crl_stale event (or not a warning): %s" % cg.tail(3))
    ms = metrics(cg)
    check(mval(ms, "certgate_crl_stale_total") >= 1, "certgate_crl_stale_total = %r"
          % mval(ms, "certgate_crl_stale_total"))
    refused_by_certgate(t, cg, ctx_for(vchain, vkey), ("revoked",),
                        "client listed by the stale CRL", result="revoked")


def t_crl_stale_counted_when_revoked(t):
    """README: certgate_crl_stale_total counts "verifications that consulted a CRL past its
    nextUpdate"; a refusal because of the stale CRL is such a verification."""
    vchain, vkey = victim()
    crl = make_crl("stale2", [_CACHE["ecdsa-victim"][0]], last=time.time() - 86400 * 400,
                   nxt=time.time() - 86400 * 30)
    store, up, cg = crl_env(t, crl)
    refused_by_certgate(t, cg, ctx_for(vchain, vkey), ("revoked",),
                        "client listed by the stale CRL", result="revoked")
    ms = metrics(cg)
    check(mval(ms, "certgate_crl_stale_total") >= 1 or wait_event(cg, "crl_stale", 0, timeout=0.5),
          "a client refused by a CRL past its nextUpdate: no crl_stale event and "
          "certgate_crl_stale_total = %r" % mval(ms, "certgate_crl_stale_total"))


def t_crl_goes_stale_at_runtime(t):
    """The usual way a CRL goes stale: its nextUpdate passes while certgate runs. The same client
    connecting before and after that moment: the second verification consulted a stale CRL and
    must be loud (event and metric), even though the chain was verified before."""
    crl = make_crl("soon-stale", [], last=time.time() - 60, nxt=time.time() + T(2) + 1)
    store, up, cg = crl_env(t, crl, workers=1)
    ctx = H.client_ctx("ecdsa")
    accepted(t, cg, ctx, "before nextUpdate", "before")
    check(not events(cg, "crl_stale"), "crl_stale logged while the CRL is fresh")
    deadline = time.time() + T(2) + 1.5
    while time.time() < deadline:
        time.sleep(0.1)
    accepted(t, cg, ctx, "after nextUpdate", "after")
    ev = wait_event(cg, "crl_stale", 0, timeout=1)
    ms = metrics(cg)
    check(ev is not None or mval(ms, "certgate_crl_stale_total") >= 1,
          "the CRL went stale while certgate ran; a client verified after that: no crl_stale "
          "event, certgate_crl_stale_total = %r (the per-worker verify cache answered without "
          "consulting the CRL?)" % mval(ms, "certgate_crl_stale_total"))


WS_REQUEST = (b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
              b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


def ws_upgrade(t, port, ctx):
    s = H.tls_connect(t, port, ctx)
    r = H.Reader(s)
    s.sendall(WS_REQUEST)
    status, _, _, _ = H.read_head(r)
    check(status == 101, "websocket: status %d" % status)
    s.sendall(H.ws_frame(1, b"hi", os.urandom(4)))
    op, data = H.ws_read(r)
    check(op == 1 and data == b"hi", "websocket echo failed")
    return s, r


def t_crl_replaced_live(t):
    """A replaced CRL file is picked up by the watcher, without a restart: new handshakes of the
    newly revoked client are refused; its keep-alive connection gets 403 on its next request
    and is closed; its WebSocket and its tls-relay tunnel are closed; a client the new CRL does
    not list goes on, on its open connection and on new ones."""
    vchain, vkey = victim()
    vctx = ctx_for(vchain, vkey)
    bctx = H.client_ctx("ecdsa")
    crl0 = make_crl("empty", [])
    crl1 = make_crl("victim", [_CACHE["ecdsa-victim"][0]])

    def ls(up):
        return [H.listener("https", "http", up.http, client_auth="require"),
                H.listener("relay", "tls", up.tcp, client_auth="require")]
    store, up, cg = crl_env(t, crl0, ls)
    port = cg.port("https")
    k = H.tls_connect(t, port, vctx)
    kr = H.Reader(k)
    k.sendall(H.get_req("/echo?victim=1"))
    check(H.read_response(kr).status == 200, "victim's first request")
    b = H.tls_connect(t, port, bctx)
    br = H.Reader(b)
    b.sendall(H.get_req("/echo?bystander=1"))
    check(H.read_response(br).status == 200, "bystander's first request")
    w, wr = ws_upgrade(t, port, vctx)
    rl = H.tls_connect(t, cg.port("relay"), vctx)
    rr = H.Reader(rl)
    rl.sendall(b"ping")
    check(rr.read_exact(4) == b"ping", "tls relay echo")

    write_atomic(os.path.join(store, "common", "crl.pem"), crl1)
    deadline = time.time() + T(3)
    while True:
        res, _ = H.attempt(t, port, vctx)
        if res != "ok":
            break
        check(time.time() < deadline, "the replaced CRL was not picked up within %.0fs" % T(3))
        time.sleep(0.1)
    ms = metrics(cg)
    check(mval(ms, "certgate_reload_total", source="watch", result="success") >= 1,
          "no successful watch reload counted")
    k.sendall(H.get_req("/echo?victim=2"))
    resp = H.read_response(kr)
    check(resp.status == 403, "victim's keep-alive request after the revocation: %d" % resp.status)
    check(kr.at_eof(T(2)), "victim's keep-alive connection not closed after the 403")
    check(wr.at_eof(T(2)), "victim's WebSocket still open after the revocation")
    check(rr.at_eof(T(2)), "victim's tls-relay tunnel still open after the revocation")
    b.sendall(H.get_req("/echo?bystander=2"))
    check(H.read_response(br).status == 200, "bystander's keep-alive request after the reload")
    accepted(t, cg, bctx, "bystander, new connection", "bystander=3")
    targets = [q["target"] for q in up.requests()]
    check("/echo?victim=2" not in targets, "the revoked client's request reached the upstream")


# ---------------------------------------------------------------------------------------------
# rules 1-2: tenant from the SNI, also when the ClientHello is fragmented; no permissive default

def frag_connect(t, port, ctx, sni, frag=29):
    """A TLS connection whose ClientHello is cut into TLS records of |frag| bytes, each sent in
    its own TCP segment (the shape that gave Traefik an empty SNI, CVE-2026-32305). Returns a
    run.BioTLS-like object; raises H.Failure or ssl.SSLError when refused."""
    c = H.BioTLS.__new__(H.BioTLS)
    c.sock = H.plain_connect(t, port)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.inc, c.out = ssl.MemoryBIO(), ssl.MemoryBIO()
    c.obj = ctx.wrap_bio(c.inc, c.out, server_hostname=sni)
    c.closed = False
    try:
        c.obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = c.out.read()
    check(hello[:1] == b"\x16", "not a handshake record")
    pos = 0
    while pos < len(hello):
        typ, ver = hello[pos:pos + 1], hello[pos + 1:pos + 3]
        ln = struct.unpack("!H", hello[pos + 3:pos + 5])[0]
        payload = hello[pos + 5:pos + 5 + ln]
        pos += 5 + ln
        for i in range(0, len(payload), frag):
            part = payload[i:i + frag]
            c.sock.sendall(typ + ver + struct.pack("!H", len(part)) + part)
            time.sleep(0.001)
    c._loop(c.obj.do_handshake)
    return c


def frag_request(t, port, ctx, sni, host):
    """("ok", status) or ("refused", why) for one request over a fragmented ClientHello."""
    try:
        c = frag_connect(t, port, ctx, sni)
        c.send(("GET /echo?sni=%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                % (sni, host)).encode())
        data = c.recv_all(1 << 20)
    except (H.Failure, ssl.SSLError, OSError) as e:
        return "refused", str(e)
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
    if not m:
        return "refused", "no response (%r)" % data[:40]
    return "ok", int(m.group(1))


def t_fragmented_hello(t):
    """Tenancy with unknown: reject and no_sni: reject, so a lost SNI would be refused: with the
    ClientHello in 29-byte records, the tenant still comes from the SNI (a-client at a: 200;
    Host b: 421; a-client at b: refused)."""
    TT = mod("test_tenancy")
    up, cg = TT.env(t, unknown="reject", no_sni="reject")
    port = cg.port()
    actx = TT.ctx_for("a-client")
    got = frag_request(t, port, actx, "a.example.com", "a.example.com")
    check(got == ("ok", 200), "a-client, SNI a, fragmented hello: %r || %s" % (got, cg.tail(2)))
    got = frag_request(t, port, actx, "a.example.com", "b.example.com")
    check(got == ("ok", 421), "a-client, SNI a, Host b, fragmented hello: %r" % (got,))
    got = frag_request(t, port, actx, "b.example.com", "b.example.com")
    check(got[0] == "refused", "a-client at SNI b, fragmented hello: %r" % (got,))
    got = frag_request(t, port, TT.ctx_for("common-client"), "b.example.com", "b.example.com")
    check(got == ("ok", 200), "common-client at b, fragmented hello: %r" % (got,))
    targets = sorted(q["target"] for q in up.requests())
    check(targets == ["/echo?sni=a.example.com", "/echo?sni=b.example.com"],
          "upstream saw %r" % targets)


def t_no_cert_any_sni(t):
    """No permissive default: without a client certificate, no SNI (known, unknown, absent,
    IP literal) lands in a context that asks for less than client_auth: require."""
    TT = mod("test_tenancy")
    up, cg = TT.env(t, unknown="common", no_sni="common")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=TT.pf("server-ca.crt"))
    ctx.check_hostname = False
    for sni in ("a.example.com", "zzz.example.com", "localhost", None):
        res, info, _ = TT.attempt(t, cg.port(), ctx, sni, TT.request(sni or "localhost", "x"))
        check(res == "refused", "no certificate, SNI %s: %s %r" % (sni, res, info))
    p, _, status = TT.s_client(cg.port(), "127.0.0.1", None,
                               TT.request("127.0.0.1", "ip", "Connection: close\r\n"))
    check(status is None, "no certificate, IP-literal SNI: HTTP %s" % status)
    time.sleep(0.1)
    check(up.requests() == [], "upstream got %r" % up.requests())


# ---------------------------------------------------------------------------------------------
# rule 8: a Connection header never removes certgate's own header

def t_connection_header(t):
    up, cg, ctx = H.http_env(t)
    s = H.tls_connect(t, cg.port(), ctx)
    r = H.Reader(s)
    junk = ", ".join("x-junk-%d" % i for i in range(20))
    cases = [
        ("base", ""),
        ("two_headers", "Connection: keep-alive\r\nConnection: X-Forwarded-Client-Cert\r\n"),
        ("odd_list", "Connection: ,, x-forwarded-client-cert ,\t,\r\n"),
        ("underscore", "Connection: X_Forwarded_Client_Cert\r\n"),
        ("after_many_tokens", "Connection: %s, x-forwarded-client-cert\r\n" % junk),
        ("with_spoof", "Connection: x-forwarded-client-cert\r\nX-Forwarded-Client-Cert: spoof\r\n"),
    ]
    for name, extra in cases:
        s.sendall(H.get_req("/echo?c=" + name, extra=extra))
        resp = H.read_response(r)
        check(resp.status == 200, "%s: status %d" % (name, resp.status))
    reqs = {q["target"]: q["headers"] for q in up.wait_requests(len(cases))}
    own = None
    for name, _ in cases:
        hs = reqs.get("/echo?c=" + name)
        check(hs is not None, "%s: not received" % name)
        cc = [v for k, v in hs if k.lower().replace("_", "-") == "x-forwarded-client-cert"]
        check(len(cc) == 1, "%s: %d x-forwarded-client-cert headers upstream" % (name, len(cc)))
        own = own or cc[0]
        check(cc[0] == own and "spoof" not in cc[0],
              "%s: header %r, want ours" % (name, cc[0][:60]))
        check(not any(k.lower() == "connection" and "forwarded" in v.lower() for k, v in hs),
              "%s: the Connection header naming it was forwarded" % name)


# ---------------------------------------------------------------------------------------------
# rule 12: the head is re-serialised, bodies re-framed, trailers dropped

def t_head_reserialised(t):
    up, cg, ctx = H.http_env(t)
    raw = (b"POST /body?x=1 HTTP/1.1\r\nX-First:   padded value \t \r\nx-lower: v\r\n"
           b"Host:   localhost  \r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n"
           b"TE: trailers\r\n\r\n"
           b"5;name=extvalue\r\nhello\r\n3\r\nabc\r\n"
           b"0\r\nX-Trailer: trailer-value\r\nX-Forwarded-Client-Cert: spoof-trailer\r\n\r\n")
    resp = H.https_request(t, cg.port(), ctx, raw)
    check(resp.status == 200, "status %d" % resp.status)
    check(b"body-length: 8\n" in resp.body, "body length changed: %r" % resp.body[-80:])
    got = up.received()
    head, _, body = got.partition(b"\r\n\r\n")
    check(head.startswith(b"POST /body?x=1 HTTP/1.1\r\nHost: localhost\r\n"),
          "head does not start with the request line and Host: %r" % head[:80])
    check(b"\r\nX-First: padded value\r\n" in head, "value not trimmed: %r" % head)
    check(b"\r\nx-lower: v\r\n" in head, "header lost: %r" % head)
    for tok in (b"Trailer", b"TE:", b"trailer-value", b"extvalue", b"spoof-trailer"):
        check(tok not in got, "%r reached the upstream: %r" % (tok, got[:400]))
    check(body == b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n", "body not re-framed: %r" % body)


# ---------------------------------------------------------------------------------------------
# scripted upstream: answers per request with bytes a script chooses; records EOFs

class ScriptedUpstream:
    """An HTTP upstream in this process. script(conn_no, req_no, head) returns the bytes to send
    (None: send nothing). Connections stay open until certgate closes them; closed[conn_no] is
    set when certgate closed the connection."""

    def __init__(self, t, script):
        self.script = script
        self.lsock = socket.socket()
        self.lsock.bind((H.HOST, 0))
        self.lsock.listen(64)
        t.socks.append(self.lsock)
        self.t = t
        self.addr = "%s:%d" % (H.HOST, self.lsock.getsockname()[1])
        self.heads = []  # (conn_no, req_no, head)
        self.closed = {}
        self.n = 0
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.n += 1
            self.t.socks.append(s)
            threading.Thread(target=self.serve, args=(s, self.n), daemon=True).start()

    def serve(self, s, no):
        buf = b""
        req = 0
        try:
            while True:
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    data = s.recv(65536)
                    if not data:
                        break
                    buf += data
                    continue
                head, buf = buf[:i + 4], buf[i + 4:]
                req += 1
                self.heads.append((no, req, head))
                out = self.script(no, req, head)
                if out:
                    s.sendall(out)
        except OSError:
            pass
        self.closed[no] = time.time()

    def wait_closed(self, no, timeout):
        deadline = time.time() + T(timeout)
        while time.time() < deadline:
            if no in self.closed:
                return True
            time.sleep(0.02)
        return False


def scripted_env(t, script, **lkw):
    up = ScriptedUpstream(t, script)
    lkw.setdefault("client_auth", "require")
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.addr, **lkw)])
    return up, cg, H.client_ctx("ecdsa")


def ok_response(body):
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


# ---------------------------------------------------------------------------------------------
# rule 13: only a real 101 starts a tunnel; no h2c

def t_h2c_variants(t):
    cases = [
        ("no_connection_token", b"Upgrade: h2c\r\n"),
        ("in_a_list", b"Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n"),
        ("upper_case", b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: H2C\r\n"
                       b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
        ("second_upgrade_header", b"Connection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n"),
        ("first_upgrade_header", b"Connection: Upgrade\r\nUpgrade: h2c\r\nUpgrade: websocket\r\n"),
    ]
    up, cg, ctx = H.http_env(t)
    bad = []
    for i, (name, extra) in enumerate(cases):
        s = H.tls_connect(t, cg.port(), ctx)
        s.sendall(b"GET /echo?u=%d HTTP/1.1\r\nHost: localhost\r\n" % i + extra + b"\r\n")
        r = H.Reader(s)
        try:
            status = H.read_response(r).status
        except H.Failure as e:
            status = str(e)
        if status != 400:
            bad.append("%s: %s" % (name, status))
    time.sleep(0.1)
    got = up.received()
    check(b"h2c" not in got.lower(), "an h2c upgrade reached the upstream: %r" % got[:300])
    check(not bad, "h2c upgrade not refused with 400: %s" % "; ".join(bad))


def t_101_without_upgrade(t):
    """An upstream that answers 101 to a request that asked for no upgrade: 502, no tunnel."""
    def script(no, req, head):
        return (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                b"RAW-AFTER-101")
    up, cg, ctx = scripted_env(t, script)
    s = H.tls_connect(t, cg.port(), ctx)
    r = H.Reader(s)
    s.sendall(H.get_req("/plain"))
    resp = H.read_response(r)
    check(resp.status == 502, "status %d, want 502" % resp.status)
    H.safe_send(s, b"CLIENT-BYTES-AFTER\r\n\r\n")
    rest = r.read_to_eof()
    check(b"RAW-AFTER-101" not in resp.body + rest,
          "bytes after the unasked 101 reached the client")
    time.sleep(0.1)
    check(not any(b"CLIENT-BYTES" in h for _, _, h in up.heads), "client bytes tunnelled")


def t_upgrade_200_with_upgrade_headers(t):
    """Envoy CVE-2024-23326: the upstream answers a WebSocket request with 200 carrying
    Connection: Upgrade / Upgrade: websocket. What the client sends next is HTTP, parsed and
    sanitised: Host is checked (421) and a spoofed XFCC is replaced."""
    def script(no, req, head):
        if head.startswith(b"GET /ws"):
            return (b"HTTP/1.1 200 OK\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                    b"Content-Length: 0\r\n\r\n")
        return ok_response(b"second")
    up, cg, ctx = scripted_env(t, script)
    s = H.tls_connect(t, cg.port(), ctx)
    r = H.Reader(s)
    s.sendall(WS_REQUEST)
    resp = H.read_response(r)
    check(resp.status == 200, "status %d" % resp.status)
    s.sendall(b"GET /next HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Client-Cert: By=spoof\r\n\r\n")
    resp = H.read_response(r)
    check(resp.status == 200 and resp.body == b"second", "second request: %r" % resp)
    s.sendall(b"GET /other-tenant HTTP/1.1\r\nHost: other.example\r\n\r\n")
    resp = H.read_response(r)
    check(resp.status == 421, "Host of another name after a 200 upgrade answer: %d (tunnelled?)"
          % resp.status)
    heads = [h for _, _, h in up.heads]
    nxt = [h for h in heads if h.startswith(b"GET /next ")]
    check(len(nxt) == 1, "upstream heads %r" % [h[:30] for h in heads])
    check(b"spoof" not in nxt[0] and b"x-forwarded-client-cert: By=" in nxt[0],
          "the request after the 200 was not sanitised: %r" % nxt[0][:300])
    check(not any(b"other-tenant" in h for h in heads), "the 421 request reached the upstream")


# ---------------------------------------------------------------------------------------------
# rule 14: upstream framing

def t_upstream_bad_framing_closes(t):
    """Bad framing from an upstream that keeps its connection open: 502, and certgate closes
    that upstream connection (the upstream sees EOF); counted as kind=framing."""
    def script(no, req, head):
        return (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n")
    up, cg, ctx = scripted_env(t, script)
    resp = H.https_request(t, cg.port(), ctx, H.get_req("/bad"))
    check(resp.status == 502, "status %d, want 502" % resp.status)
    check(up.wait_closed(1, 2), "certgate kept the upstream connection open after bad framing")
    ms = metrics(cg)
    check(mval(ms, "certgate_upstream_errors_total", listener="https", kind="framing") >= 1,
          "framing error not counted")


def t_upstream_bad_chunk_midway(t):
    """Bad chunk framing after the response head went out: the client connection is closed
    (a clean 502 is impossible), and so is the upstream connection."""
    def script(no, req, head):
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"
    up, cg, ctx = scripted_env(t, script)
    s = H.tls_connect(t, cg.port(), ctx)
    r = H.Reader(s)
    s.sendall(H.get_req("/bad"))
    try:
        resp = H.read_response(r)
        bad = "complete response %r" % resp
    except H.Failure:
        bad = None
    check(bad is None, "a response with a broken chunk was passed on as complete: %s" % bad)
    check(r.at_eof(T(2)) or r.eof, "client connection left open")
    check(up.wait_closed(1, 2), "upstream connection left open")


def t_upstream_extra_bytes_not_reused(t):
    """An upstream that sends more than the response it was asked for (a second, unrequested
    response in the same write). Those bytes must never become the answer to the client's next
    request on the same connection: the upstream connection is dropped (or the next request
    gets an error), never answered with the leftover."""
    def script(no, req, head):
        if req == 1:
            return ok_response(b"first") + ok_response(b"SMUGGLED")
        return ok_response(b"real-%d-%d" % (no, req))
    up, cg, ctx = scripted_env(t, script)
    s = H.tls_connect(t, cg.port(), ctx)
    r = H.Reader(s)
    s.sendall(H.get_req("/one"))
    resp = H.read_response(r)
    check(resp.status == 200 and resp.body == b"first", "first: %r" % resp)
    time.sleep(0.2)
    s.sendall(H.get_req("/two"))
    try:
        resp2 = H.read_response(r)
    except H.Failure as e:
        resp2 = None
        why = str(e)
    check(resp2 is None or resp2.body != b"SMUGGLED",
          "the unrequested second response of the upstream was served as the answer to the "
          "next request (response desync); upstream heads: %r"
          % [(n, q, h.split(b"\r\n")[0]) for n, q, h in up.heads])
    if resp2 is not None:
        # a fresh upstream connection answers its first request with b"first" again
        check(resp2.status >= 500 or resp2.body.startswith(b"real-") or resp2.body == b"first",
              "second: %r" % resp2)
    else:
        check("no response" in why, why)


def t_upstream_head_with_body(t):
    """The common way to get there by accident: an application that sends a body with its
    answer to HEAD (or with a 204). The body must not become the next response."""
    def script(no, req, head):
        if head.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nLEFTOVR"
        if b"/nocontent" in head.split(b"\r\n")[0]:
            return b"HTTP/1.1 204 No Content\r\n\r\n" + ok_response(b"SMUGGLED")
        return ok_response(b"real-%d-%d" % (no, req))
    up, cg, ctx = scripted_env(t, script)
    bad = []
    for first, method in (("/head", "HEAD"), ("/nocontent", "GET")):
        s = H.tls_connect(t, cg.port(), ctx)
        r = H.Reader(s)
        s.sendall(("%s %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % (method, first)).encode())
        resp = H.read_response(r, method)
        check(resp.status in (200, 204), "%s %s: %r" % (method, first, resp))
        time.sleep(0.2)
        s.sendall(H.get_req("/next"))
        try:
            resp = H.read_response(r)
        except H.Failure:
            continue  # closed: fine
        if resp.status < 500 and not resp.body.startswith(b"real-"):
            bad.append("after %s %s the next request got %r" % (method, first, resp.body))
    check(not bad, "; ".join(bad))


# ---------------------------------------------------------------------------------------------
# rule 15: bounds

def t_pipeline_1000_bounded(t):
    """1,000 pipelined requests of 8 KiB each (8 MiB) in one write: certgate reads one request
    at a time, so its RSS stays bounded while the client is not reading, and every response
    arrives, in order.

    One thread drives the socket with non-blocking I/O: an OpenSSL connection must not be read
    and written from two threads at once (a TLS 1.3 session ticket read while a write is in
    progress corrupts the client's state, which showed as a spurious close)."""
    env = {}
    if H.Opts.sanitizer:
        env["ASAN_OPTIONS"] = ":".join(o for o in (os.environ.get("ASAN_OPTIONS", ""),
                                                   "quarantine_size_mb=1") if o)
    up, cg, ctx = H.http_env(t, record_max=4096, env=env)
    accepted(t, cg, ctx, "warm-up")
    n = 1000
    pad = "p" * 8000
    data = memoryview(b"".join(H.get_req("/echo?n=%d" % i, extra="X-Pad: %s\r\n" % pad)
                               for i in range(n)))
    w = H.RssWatch(cg.pid)
    s = H.tls_connect(t, cg.port(), ctx, timeout=30)
    s.setblocking(False)
    off = 0
    got = bytearray()
    would_block = (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError)

    def send_some():
        nonlocal off
        try:
            off += s.send(data[off:off + 262144])
            return True
        except would_block:
            return False

    # certgate answers into a client that does not read yet
    stall_end = time.time() + T(1.0)
    while time.time() < stall_end and off < len(data):
        if not send_some():
            time.sleep(0.01)
    stalled_peak = (w.max - w.base) / 1024.0
    # now read and write until every request is sent
    deadline = time.time() + T(30)
    while off < len(data):
        check(time.time() < deadline, "sent only %d of %d bytes in time" % (off, len(data)))
        sent = send_some()
        try:
            d = s.recv(262144)
            check(d, "connection closed after %d of %d request bytes" % (off, len(data)))
            got += d
        except would_block:
            if not sent:
                select.select([s], [s], [], 0.05)
    s.setblocking(True)
    s.settimeout(T(30))
    r = H.Reader(s)
    r.buf = bytes(got)
    for i in range(n):
        try:
            resp = H.read_response(r)
        except H.Failure as e:
            raise H.Failure("response %d: %s" % (i, e))
        check(resp.status == 200 and resp.body.startswith(b"GET /echo?n=%d " % i),
              "response %d: %r" % (i, resp))
    peak, _ = w.stop()
    limit = 8 if H.Opts.sanitizer else 6  # 8 MiB buffered would show (ASan: 1 MiB quarantine)
    if H.Opts.verbose:
        print("    RSS growth: %.1f MiB while the client did not read, %.1f MiB peak"
              % (stalled_peak, peak))
    check(stalled_peak < limit and peak < limit,
          "RSS grew by %.1f MiB (client not reading) / %.1f MiB (overall) for 8 MiB of pipelined "
          "requests" % (stalled_peak, peak))
    check(len(up.requests()) == n + 1, "upstream saw %d requests" % len(up.requests()))


def chunk_ext_request(t, n_after_semicolon):
    up, cg, ctx = H.http_env(t)
    s = H.tls_connect(t, cg.port(), ctx)
    H.safe_send(s, b"POST /body HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5;" + b"e" * n_after_semicolon + b"\r\nhello\r\n0\r\n\r\n")
    r = H.Reader(s)
    try:
        resp = H.read_response(r)
    except H.Failure:
        resp = None
    time.sleep(0.1)
    return up, resp


def t_chunk_ext_bound(t):
    """The chunk-extension bound (4 KiB) at its edge: an extension of 4096 bytes with its ';'
    passes (and is dropped), one of 4098 is refused and the request never completes upstream."""
    up, resp = chunk_ext_request(t, 4095)
    check(resp is not None and resp.status == 200, "extension of 4096 bytes: %r" % resp)
    check(b"eeee" not in up.received(), "the extension reached the upstream")
    up, resp = chunk_ext_request(t, 4097)
    check(resp is None or resp.status == 400, "extension of 4098 bytes: %r" % resp)
    check(up.requests() == [], "upstream completed a request with a 4097-byte extension")


def t_max_connections_exact(t):
    """limits.max_connections 3 over two listeners: the fourth connection (either listener) is
    not served while three are open, and is served when one closes."""
    up = t.upstream()
    cg = t.certgate("ecdsa", [H.listener("a", "http", up.http, client_auth="require"),
                              H.listener("b", "http", up.http, client_auth="require")],
                    limits={"max_connections": 3})
    ctx = H.client_ctx("ecdsa")
    held = []
    for name in ("a", "b", "a"):
        s = H.tls_connect(t, cg.port(name), ctx)
        s.sendall(H.get_req("/echo"))
        check(H.read_response(H.Reader(s)).status == 200, "connection %d" % len(held))
        held.append(s)
    res = {}

    def fourth():
        res["r"] = H.attempt(t, cg.port("b"), ctx)
    th = threading.Thread(target=fourth, daemon=True)
    th.start()
    th.join(1.0)
    check("r" not in res or res["r"][0] != "ok", "a fourth connection was served")
    held[0].close()
    th.join(T(5))
    check(res.get("r", ("none",))[0] == "ok", "fourth connection after a close: %r" % (res,))


# ---------------------------------------------------------------------------------------------
# rule 16: header handling is linear

def t_header_linear(t):
    """The same ~800 KB of header bytes as 1 header, 8 headers and 20,000 headers (max_headers
    20000): none takes long, and 20,000 headers cost no more than a few times one header of
    the same size (work per header pair, or per byte per header, would show)."""
    up, cg, ctx = H.http_env(t, limits={"max_request_head": "1MiB", "max_headers": 20000},
                             record_max=4096)
    s = H.tls_connect(t, cg.port(), ctx, timeout=20)
    r = H.Reader(s)
    total = 800000
    shapes = [("1x800000", 1), ("8x100000", 8), ("20000x40", 19990)]  # + Host
    times = {}
    for _ in range(2):
        for name, count in shapes:
            size = total // count
            extra = "".join("X-%d: %s\r\n" % (i, "v" * (size - 12)) for i in range(count))
            req = H.get_req("/echo?%s" % name, extra=extra)
            start = time.time()
            s.sendall(req)
            resp = H.read_response(r)
            took = time.time() - start
            check(resp.status == 200, "%s: status %d" % (name, resp.status))
            times[name] = min(times.get(name, 1e9), took)
    if H.Opts.verbose:
        print("    head of 800 KB: %s" % ", ".join("%s %.3fs" % kv for kv in times.items()))
    worst = max(times.values())
    check(worst < T(2.0), "a head of 800 KB took %.2fs: %r" % (worst, times))
    check(times["20000x40"] < 10 * times["1x800000"] + T(0.3),
          "20,000 headers took %.3fs, one header of the same size %.3fs"
          % (times["20000x40"], times["1x800000"]))


# ---------------------------------------------------------------------------------------------
# rule 17: EMFILE pauses accepting instead of spinning

def start_with_nofile(t, cfg, nofile):
    """run.Certgate, started with RLIMIT_NOFILE = nofile."""
    cg = H.Certgate.__new__(H.Certgate)
    cg.t, cg.cfg = t, cfg
    cg.dir = tempfile.mkdtemp(prefix="cg-", dir=t.dir)
    cg.path = os.path.join(cg.dir, "certgate.yaml")
    with open(cg.path, "w") as f:
        f.write(H.yaml_dump(cfg) + "\n")
    cg.ports = {l["name"]: int(l["address"].rsplit(":", 1)[1]) for l in cfg["listeners"]}
    cg.admin_port = int(cfg["admin"]["address"].rsplit(":", 1)[1])
    cg.stderr_path = os.path.join(cg.dir, "stderr")
    cg.rc = None

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    cg.proc = subprocess.Popen([H.Opts.binary, "run", "-c", cg.path], stdin=subprocess.DEVNULL,
                               stdout=open(os.path.join(cg.dir, "stdout"), "wb"),
                               stderr=open(cg.stderr_path, "wb"), preexec_fn=limit)
    t.procs.append(cg)
    cg.wait_ready()
    return cg


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def t_emfile(t):
    up = t.upstream()
    cfg = H.make_config(t, "ecdsa", [H.listener("https", "http", up.http, client_auth="require")],
                        limits={"handshake_timeout": "60s"})
    cg = start_with_nofile(t, cfg, 64)
    ctx = H.client_ctx("ecdsa")
    accepted(t, cg, ctx, "before")
    used = len(os.listdir("/proc/%d/fd" % cg.pid))
    socks = []
    for _ in range(64 - used + 40):
        socks.append(H.plain_connect(t, cg.port()))
    deadline = time.time() + T(3)
    while time.time() < deadline and len(os.listdir("/proc/%d/fd" % cg.pid)) < 64:
        time.sleep(0.05)
    check(len(os.listdir("/proc/%d/fd" % cg.pid)) >= 63, "certgate never reached its fd limit")
    time.sleep(0.3)
    c0, w0 = cpu_seconds(cg.pid), time.time()
    time.sleep(2.0)
    cpu = (cpu_seconds(cg.pid) - c0) / (time.time() - w0)
    check(cpu < (0.5 if H.Opts.sanitizer else 0.25),
          "certgate used %.0f%% CPU while out of file descriptors (spinning on accept?)"
          % (cpu * 100))
    check(cg.proc.poll() is None, "certgate exited: %s" % cg.tail(3))
    paused = events(cg, "accept_paused")
    if H.Opts.verbose:
        print("    out of fds: %.1f%% CPU, %d accept_paused lines" % (cpu * 100, len(paused)))
    check(paused, "no accept_paused line logged")
    for s in socks:
        s.close()
    deadline = time.time() + T(5)
    while True:
        res, resp = H.attempt(t, cg.port(), ctx, H.get_req("/echo?after"))
        if res == "ok" and resp.status == 200:
            break
        check(time.time() < deadline, "not serving again after the connections closed: %s %r"
              % (res, resp))
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# rule 19: a half-written certificate file is never loaded

def t_half_written_fullchain(t):
    """The new fullchain written in place in two halves, the key already matching its leaf:
    while the intermediate is cut off, new handshakes keep getting a complete chain (the old
    one); once the file is complete the new certificate is served."""
    TR = mod("test_reload")
    creds, install = TR.plain_layout(t)
    up, cg, ctx = TR.start(t, creds)
    new = TR.leaves()[0]
    chain, key = new[0], new[1]
    cut = chain.index("-----END CERTIFICATE-----") + 60  # leaf + a piece of the intermediate
    with open(os.path.join(creds["dir"], "server.key"), "w") as f:
        f.write(key)
    with open(os.path.join(creds["dir"], "server.crt"), "w") as f:
        f.write(chain[:cut])
        f.flush()
        end = time.time() + 0.8
        while time.time() < end:
            der = TR.served_der(cg.port(), ctx)
            check(der is not None, "a handshake failed while the chain file was half written "
                                   "(a leaf without its intermediate was loaded?)")
            time.sleep(0.05)
        f.write(chain[cut:])
    TR.wait_served(cg.port(), ctx, new[2], 2)


# ---------------------------------------------------------------------------------------------
# rule 20: a replaced directory is re-armed

def t_creds_dir_replaced(t):
    """credentials.dir (a plain directory) replaced by rename: the new contents are loaded, and
    a later change inside the new directory is seen by the watch (the poll is 1 h)."""
    TR = mod("test_reload")
    creds, install = TR.plain_layout(t)
    up, cg, ctx = TR.start(t, creds, poll="1h")
    d = creds["dir"]
    a, b = TR.leaves()[0], TR.leaves()[1]
    fresh = d + ".new"
    os.makedirs(fresh)
    for name, data in (("server.key", a[1]), ("server.crt", a[0])):
        with open(os.path.join(fresh, name), "w") as f:
            f.write(data)
    os.rename(d, d + ".old")
    os.rename(fresh, d)
    TR.wait_served(cg.port(), ctx, a[2], 3)
    install(b[0], b[1])  # inside the new directory
    TR.wait_served(cg.port(), ctx, b[2], 2)


# ---------------------------------------------------------------------------------------------

TESTS = [
    ("security.fragmented_client_hello_sni_tenant", t_fragmented_hello),
    ("security.no_cert_refused_for_every_sni", t_no_cert_any_sni),
    ("security.verify_sha1_leaf_refused_ecdsa", t_sha1_leaf("ecdsa")),
    ("security.verify_sha1_leaf_refused_rsa", t_sha1_leaf("rsa")),
    ("security.verify_md5_leaf_refused", t_md5_leaf),
    ("security.verify_sha1_intermediate_refused", t_sha1_intermediate),
    ("security.verify_rsa1024_leaf_refused", t_rsa1024_leaf),
    ("security.verify_rsa1024_intermediate_refused", t_rsa1024_intermediate),
    ("security.verify_chain_depth_bounded", t_chain_depth_bounded),
    ("security.verify_chain_depth_at_most_8_as_documented", t_chain_depth_readme),
    ("security.verify_cn_pattern_leaf_cn_only", t_cn_pattern),
    ("security.crl_stale_applies_loud", t_crl_stale_applies),
    ("security.crl_stale_counted_when_revoked", t_crl_stale_counted_when_revoked),
    ("security.crl_goes_stale_at_runtime_loud", t_crl_goes_stale_at_runtime),
    ("security.crl_replaced_live_connections", t_crl_replaced_live),
    ("security.connection_header_never_removes_own", t_connection_header),
    ("security.head_reserialised_trailers_dropped", t_head_reserialised),
    ("security.upgrade_h2c_variants_refused", t_h2c_variants),
    ("security.upgrade_101_not_asked_502", t_101_without_upgrade),
    ("security.upgrade_200_with_upgrade_headers_stays_http", t_upgrade_200_with_upgrade_headers),
    ("security.upstream_bad_framing_closes_upstream", t_upstream_bad_framing_closes),
    ("security.upstream_bad_chunk_midway_closes_both", t_upstream_bad_chunk_midway),
    ("security.upstream_extra_bytes_not_served", t_upstream_extra_bytes_not_reused),
    ("security.upstream_head_or_204_with_body_not_served", t_upstream_head_with_body),
    ("security.pipeline_1000_in_one_write_bounded", t_pipeline_1000_bounded),
    ("security.chunk_ext_bound_exact", t_chunk_ext_bound),
    ("security.max_connections_across_listeners", t_max_connections_exact),
    ("security.header_handling_linear", t_header_linear),
    ("security.emfile_pauses_accept_no_spin", t_emfile),
    ("security.half_written_fullchain_never_loaded", t_half_written_fullchain),
    ("security.credentials_dir_replaced_rearmed", t_creds_dir_replaced),
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
