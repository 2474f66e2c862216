#!/usr/bin/env python3
"""test_tenancy.py: integration tests of per-tenant trust (issue #4), in the group `tenancy.`.
run.py calls register(itself) to add them to its list; this file also runs on its own:

    python3 tests/integration/test_tenancy.py --binary build/certgate [-k tenancy.] [-v]

The PKI comes from tenant_pki.sh (made once per run): a shared root in common/, tenant a with
its own root and issuing intermediate (and a CRL), tenant b with only its issuing intermediate
in the store (partial-chain anchor), tenant c with its own root, and a client of nobody. Clients
are real: Python ssl, openssl s_client (IP-literal SNI, no SNI, session files) and curl. The
tenant is taken from the SNI through tenancy.sni "{tenant}.example.com".
"""

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time

H = None  # run.py's module, set by register()

TENANT_PKI_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tenant_pki.sh")
PATTERN = "{tenant}.example.com"
_PKI = {}
_CTX = {}

# client name -> (home of its CA: "common", "a", "b", "c" or None, revoked by tenant a's CRL)
CLIENTS = {
    "common-client": ("common", False),
    "a-client": ("a", False),
    "a-revoked": ("a", True),
    "b-client": ("b", False),        # sends leaf + b-int
    "b-client-leaf": ("b", False),   # sends the leaf only: b-int is the anchor in the store
    "c-client": ("c", False),
    "x-client": (None, False),
}
TENANTS = ("a", "b", "c")


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


def pki():
    """The tenant PKI directory, made once per run."""
    if "dir" not in _PKI:
        d = os.path.join(H.Opts.tmp, "tenant-pki")
        p = subprocess.run(["sh", TENANT_PKI_SH, d], capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, "tenant_pki.sh failed: %s" % p.stderr[-400:])
        _PKI["dir"] = d
    return _PKI["dir"]


def pf(name):
    return os.path.join(pki(), name)


def client_files(name):
    """(cert file with everything the client sends, key file, extra chain file for s_client)"""
    if name == "b-client-leaf":
        return pf("b-client.crt"), pf("b-client.key"), None
    inter = {"a-client": "a-int.crt", "a-revoked": "a-int.crt", "b-client": "b-int.crt"}
    extra = pf(inter[name]) if name in inter else None
    return pf(name + "-chain.crt"), pf(name + ".key"), extra


def ctx_for(name, version=None):
    key = (name, version)
    if key not in _CTX:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pf("server-ca.crt"))
        ctx.check_hostname = False  # SNI is varied on purpose; the server CA is still checked
        if name:
            cert, k, _ = client_files(name)
            ctx.load_cert_chain(cert, k)
        if version == "1.2":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        elif version == "1.3":
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        _CTX[key] = ctx
    return _CTX[key]


def store_copy(t):
    d = os.path.join(t.dir, "ca-store")
    shutil.copytree(pf("ca-store"), d)
    return d


def config(t, store, unknown="common", no_sni="common", **lkw):
    up = t.upstream()
    lkw.setdefault("client_auth", "require")
    cfg = {
        "workers": 2,
        "log": {"level": "info", "access": True},
        "credentials": {"dir": pki(), "cert": "server.crt", "key": "server.key"},
        "ca_store": {"dir": store},
        "tenancy": {"sni": PATTERN, "unknown": unknown, "no_sni": no_sni},
        "reload": {"debounce": "100ms", "poll_interval": "1h"},
        "access": {"allowed_subjects_file": os.path.join(t.dir, "allowed-subjects.json")},
        "admin": {"address": "%s:%d" % (H.HOST, H.free_port())},
        "limits": {"handshake_timeout": "5s", "drain_timeout": "1s"},
        "listeners": [H.listener("https", "http", up.http, **lkw)],
    }
    return up, H.Certgate(t, cfg)


def env(t, unknown="common", no_sni="common", store=None):
    return config(t, store or pf("ca-store"), unknown, no_sni)


def log_events(cg, event=None):
    return H.log_events(cg, event)


def refusals(cg):
    return [e for e in log_events(cg) if "handshake_refused" in json.dumps(e)]


def request(host, tag, extra=""):
    return ("GET /echo?%s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (tag, host, extra)).encode()


def attempt(t, port, ctx, sni, raw, session=None):
    """("ok", Resp, sock) or ("refused", why, None); with TLS 1.3 a refused client certificate
    shows up as an alert or EOF on the first read."""
    import socket
    try:
        rawsock = socket.create_connection((H.HOST, port), timeout=T(5))
        t.socks.append(rawsock)
        s = ctx.wrap_socket(rawsock, server_hostname=sni, session=session)
        t.socks.append(s)
    except (ssl.SSLError, ConnectionError) as e:
        return "refused", "handshake: %s" % e, None
    err = H.safe_send(s, raw)
    if err:
        return "refused", "send: %s" % err, None
    r = H.Reader(s)
    try:
        return "ok", H.read_response(r), s
    except H.Failure as e:
        if "timed out" in str(e):
            return "timeout", str(e), None
        return "refused", str(r.err or e), None


def host_for(sni):
    """A Host header naming the same tenant as |sni| (or none, as the SNI does)."""
    return sni if sni else "localhost"


def s_client(port, sni, cert=None, raw=b"", version=None, sess_in=None, sess_out=None,
             timeout=10):
    """openssl s_client; returns (CompletedProcess, reused, http status or None)."""
    args = ["openssl", "s_client", "-connect", "%s:%d" % (H.HOST, port), "-ign_eof",
            "-CAfile", pf("server-ca.crt")]
    args += ["-noservername"] if sni is None else ["-servername", sni]
    if cert:
        c, k, extra = client_files(cert)
        args += ["-cert", pf(cert.replace("-leaf", "") + ".crt"), "-key", k]
        if extra:
            args += ["-cert_chain", extra]
    if version:
        args += ["-tls1_2" if version == "1.2" else "-tls1_3"]
    if sess_in:
        args += ["-sess_in", sess_in]
    if sess_out:
        args += ["-sess_out", sess_out]
    try:
        p = subprocess.run(args, input=raw, capture_output=True, timeout=T(timeout))
    except subprocess.TimeoutExpired:
        raise H.Failure("openssl s_client timed out")
    out = p.stdout.decode("latin-1")
    reused = bool(re.search(r"^Reused, ", out, re.M))
    m = re.search(r"HTTP/1\.1 (\d{3}) ", out)
    return p, reused, int(m.group(1)) if m else None


def expected_accept(cert, sni_tenant, unknown, no_sni):
    """sni_tenant: "a"/"b"/"c", "unknown" (names no tenant) or None (no SNI / IP literal)."""
    if sni_tenant is None and no_sni == "reject":
        return False
    if sni_tenant == "unknown" and unknown == "reject":
        return False
    home, revoked = CLIENTS[cert]
    trust = {"common"} | ({sni_tenant} if sni_tenant in TENANTS else set())
    return home in trust and not revoked


# SNI as sent -> the tenant it names
SNIS = [
    ("a.example.com", "a"), ("b.example.com", "b"), ("c.example.com", "c"),
    ("A.Example.COM.", "a"), ("zzz.example.com", "unknown"), ("localhost", "unknown"),
    (None, None),
]


def matrix(t, unknown, no_sni):
    up, cg = env(t, unknown, no_sni)
    port = cg.port()
    bad = []
    accepted = []
    n = 0
    for cert in CLIENTS:
        for sni, tenant in SNIS:
            n += 1
            want = expected_accept(cert, tenant, unknown, no_sni)
            tag = "case=%d" % n
            res, resp, _ = attempt(t, port, ctx_for(cert), sni, request(host_for(sni), tag))
            got = res == "ok" and resp.status == 200
            if res == "ok" and resp.status != 200:
                bad.append("%s sni=%s: HTTP %d" % (cert, sni, resp.status))
            elif got != want:
                bad.append("%s sni=%s: %s, want %s (%s)" % (
                    cert, sni, "accepted" if got else "refused",
                    "accept" if want else "refuse", resp if res != "ok" else ""))
            if got:
                accepted.append("/echo?" + tag)
    # IP-literal SNI (Python never sends one): openssl s_client -servername 127.0.0.1
    for cert in ("common-client", "a-client"):
        want = expected_accept(cert, None, unknown, no_sni)
        p, _, status = s_client(port, "127.0.0.1", cert,
                                request("127.0.0.1", "ip-" + cert, "Connection: close\r\n"))
        got = status == 200
        if got != want:
            bad.append("%s sni=127.0.0.1 (s_client): %s, want %s" % (
                cert, "status %s" % status, "accept" if want else "refuse"))
        if got:
            accepted.append("/echo?ip-" + cert)
    time.sleep(0.1)
    targets = sorted(q["target"] for q in up.requests())
    check(not bad, "%d of %d cases wrong: %s || log: %s" % (
        len(bad), n + 2, "; ".join(bad), cg.tail(3)))
    check(targets == sorted(accepted), "upstream saw %r, want %r" % (targets, sorted(accepted)))
    return cg


def t_matrix_common(t):
    """certificate x SNI under tenancy.unknown: common, no_sni: common."""
    cg = matrix(t, "common", "common")
    ref = refusals(cg)
    text = json.dumps(ref)
    check("revoked" in text, "no 'revoked' refusal logged: %s" % text[:300])
    check("tenant b" in text or '"b"' in text,
          "no refusal names tenant b's trust set: %s" % text[:300])


def t_matrix_reject(t):
    """certificate x SNI under tenancy.unknown: reject, no_sni: reject."""
    cg = matrix(t, "reject", "reject")
    text = json.dumps(refusals(cg))
    check("no SNI" in text or "no_sni" in text, "no no-SNI refusal logged: %s" % text[:300])
    check("zzz.example.com" in text, "no unknown-tenant refusal logged: %s" % text[:300])


def t_revoked(t):
    """The CRL of tenant a revokes a-revoked; a-client of the same issuer still passes."""
    up, cg = env(t)
    res, resp, _ = attempt(t, cg.port(), ctx_for("a-client"), "a.example.com",
                           request("a.example.com", "ok"))
    check(res == "ok" and resp.status == 200, "a-client: %s %r" % (res, resp))
    res, why, _ = attempt(t, cg.port(), ctx_for("a-revoked"), "a.example.com",
                          request("a.example.com", "revoked"))
    check(res == "refused", "a-revoked: %s %r" % (res, why))
    time.sleep(0.1)
    ref = [e for e in refusals(cg) if "a-revoked" in json.dumps(e)]
    check(ref and any(e.get("result") == "revoked" for e in ref),
          "no refusal with result revoked for a-revoked: %s" % json.dumps(ref)[:300])
    targets = [q["target"] for q in up.requests()]
    check(targets == ["/echo?ok"], "upstream saw %r" % targets)


def t_revocation_off(t):
    """revocation.crl: off: the revoked client passes (the CRL is what refused it)."""
    up = t.upstream()
    cfg = {
        "workers": 1,
        "credentials": {"dir": pki(), "cert": "server.crt", "key": "server.key"},
        "ca_store": {"dir": pf("ca-store")},
        "tenancy": {"sni": PATTERN},
        "revocation": {"crl": False},
        "access": {"allowed_subjects_file": os.path.join(t.dir, "allowed-subjects.json")},
        "admin": {"address": "%s:%d" % (H.HOST, H.free_port())},
        "listeners": [H.listener("https", "http", up.http, client_auth="require")],
    }
    cg = H.Certgate(t, cfg)
    res, resp, _ = attempt(t, cg.port(), ctx_for("a-revoked"), "a.example.com",
                           request("a.example.com", "x"))
    check(res == "ok" and resp.status == 200, "a-revoked with crl off: %s %r" % (res, resp))


HOST_CASES = [
    # (client, SNI, Host, expected status)
    ("a-client", "a.example.com", "a.example.com", 200),
    ("a-client", "a.example.com", "a.example.com:{port}", 200),
    ("a-client", "a.example.com", "A.EXAMPLE.COM", 200),
    ("a-client", "a.example.com", "a.example.com.", 200),
    ("a-client", "a.example.com", "A.Example.Com.:443", 200),
    ("a-client", "A.EXAMPLE.COM.", "a.example.com", 200),
    ("a-client", "a.example.com", "b.example.com", 421),
    ("a-client", "a.example.com", "b.example.com:443", 421),
    ("a-client", "a.example.com", "B.EXAMPLE.COM.", 421),
    ("a-client", "a.example.com", "zzz.example.com", 421),
    ("a-client", "a.example.com", "localhost", 421),
    ("a-client", "a.example.com", "127.0.0.1", 421),
    ("a-client", "a.example.com", "a.example.com..", 421),
    ("a-client", "a.example.com", "a.example.com.evil.test", 421),
    ("a-client", "a.example.com", "xa.example.com", 421),
    ("common-client", "b.example.com", "a.example.com", 421),
    ("common-client", "b.example.com", "b.example.com", 200),
    ("common-client", None, "a.example.com", 421),
    ("common-client", None, "localhost", 200),
    ("common-client", None, "127.0.0.1:{port}", 200),
    ("common-client", "zzz.example.com", "zzz.example.com", 200),
    ("common-client", "zzz.example.com", "a.example.com", 421),
    ("common-client", "localhost", "a.example.com", 421),
]


def t_host_matrix(t):
    """Host x SNI: same tenant 200, any other 421 (port, trailing dot, case, no SNI)."""
    up, cg = env(t)
    port = cg.port()
    bad = []
    want_targets = []
    for i, (cert, sni, host, want) in enumerate(HOST_CASES):
        host = host.format(port=port)
        res, resp, _ = attempt(t, port, ctx_for(cert), sni, request(host, "h=%d" % i))
        status = resp.status if res == "ok" else None
        if status != want:
            bad.append("%s sni=%s Host=%s: %s, want %d" % (cert, sni, host,
                                                           status or resp, want))
        if want == 200:
            want_targets.append("/echo?h=%d" % i)
    # IP-literal SNI: treated as no SNI
    for host, want in (("a.example.com", 421), ("127.0.0.1", 200)):
        _, _, status = s_client(port, "127.0.0.1", "common-client",
                                request(host, "ip-" + host, "Connection: close\r\n"))
        if status != want:
            bad.append("s_client sni=127.0.0.1 Host=%s: %s, want %d" % (host, status, want))
        if want == 200:
            want_targets.append("/echo?ip-" + host)
    time.sleep(0.1)
    check(not bad, "%d wrong: %s" % (len(bad), "; ".join(bad)))
    targets = sorted(q["target"] for q in up.requests())
    check(targets == sorted(want_targets),
          "upstream saw %r, want %r (a 421 request reached it?)" % (targets, want_targets))


def t_host_keepalive(t):
    """On one connection: Host a -> 200, then Host b -> 421 and the connection closes."""
    up, cg = env(t)
    res, resp, s = attempt(t, cg.port(), ctx_for("common-client"), "a.example.com",
                           request("a.example.com", "first"))
    check(res == "ok" and resp.status == 200, "first: %s %r" % (res, resp))
    r = H.Reader(s)
    s.sendall(request("b.example.com", "second"))
    resp = H.read_response(r)
    check(resp.status == 421, "second: %d, want 421" % resp.status)
    check(r.at_eof(T(2)), "connection not closed after 421")
    time.sleep(0.1)
    targets = [q["target"] for q in up.requests()]
    check(targets == ["/echo?first"], "upstream saw %r" % targets)


def curl(port, name, cert, extra=()):
    c, k, _ = client_files(cert)
    args = ["curl", "-sS", "-m", str(int(T(10))), "--resolve",
            "%s.example.com:%d:%s" % (name, port, H.HOST), "--cacert", pf("server-ca.crt"),
            "--cert", c, "--key", k, "-o", "/dev/null", "-w", "%{http_code}"]
    args += list(extra) + ["https://%s.example.com:%d/echo?curl-%s" % (name, port, name)]
    return H.run_cmd(args, timeout=15)


def t_curl(t):
    """curl: a-client at a.example.com 200; Host b -> 421; at b.example.com the handshake
    fails; common-client at b.example.com 200."""
    up, cg = env(t)
    port = cg.port()
    p = curl(port, "a", "a-client")
    check(p.stdout.strip() == "200", "a-client at a: %r %s" % (p.stdout, p.stderr[-200:]))
    p = curl(port, "a", "a-client", ["-H", "Host: b.example.com"])
    check(p.stdout.strip() == "421", "Host b over SNI a: %r" % p.stdout)
    p = curl(port, "b", "a-client")
    check(p.returncode != 0 and p.stdout.strip() in ("000", ""),
          "a-client at b: rc %d %r" % (p.returncode, p.stdout))
    p = curl(port, "b", "common-client")
    check(p.stdout.strip() == "200", "common-client at b: %r %s" % (p.stdout, p.stderr[-200:]))


def t_never_cross(t):
    """A client of tenant a is never accepted under tenant b's SNI, whatever Host says, with
    and without its intermediate, over TLS 1.2 and 1.3."""
    up, cg = env(t)
    port = cg.port()
    for version in ("1.2", "1.3"):
        for host in ("a.example.com", "b.example.com", "localhost"):
            for sni in ("b.example.com", "B.EXAMPLE.COM.", "c.example.com"):
                res, resp, _ = attempt(t, port, ctx_for("a-client", version), sni,
                                       request(host, "x"))
                check(res != "ok", "a-client accepted with SNI %s Host %s TLS %s: %r"
                      % (sni, host, version, resp))
    time.sleep(0.1)
    check(up.requests() == [], "upstream got %r" % up.requests())


# --- resumption ------------------------------------------------------------------------------

def session_file(t, name):
    return os.path.join(t.dir, name + ".sess")


def t_resume_same_tenant(t):
    """Control: a session of tenant a resumes under tenant a's SNI (TLS 1.2 and 1.3)."""
    up, cg = env(t)
    for v in ("1.2", "1.3"):
        sess = session_file(t, "a" + v)
        raw = request("a.example.com", "full" + v, "Connection: close\r\n")
        p, reused, status = s_client(cg.port(), "a.example.com", "a-client", raw, v,
                                     sess_out=sess)
        check(status == 200 and not reused, "TLS %s full: status %s reused %s" % (v, status,
                                                                                   reused))
        check(os.path.exists(sess) and os.path.getsize(sess) > 0, "no session saved")
        raw = request("a.example.com", "res" + v, "Connection: close\r\n")
        p, reused, status = s_client(cg.port(), "a.example.com", "a-client", raw, v,
                                     sess_in=sess)
        check(reused, "TLS %s: session of tenant a not reused under tenant a" % v)
        check(status == 200, "TLS %s resumed: status %s" % (v, status))


def t_resume_across_tenants(t):
    """A session made under tenant a and offered under tenant b's SNI is not resumed: full
    handshake, the client certificate is verified against b's trust set and refused."""
    up, cg = env(t)
    for v in ("1.2", "1.3"):
        sess = session_file(t, "x" + v)
        raw = request("a.example.com", "full" + v, "Connection: close\r\n")
        _, reused, status = s_client(cg.port(), "a.example.com", "a-client", raw, v,
                                     sess_out=sess)
        check(status == 200, "TLS %s full: status %s" % (v, status))
        n_ref = len(refusals(cg))
        raw = request("b.example.com", "cross" + v, "Connection: close\r\n")
        p, reused, status = s_client(cg.port(), "b.example.com", "a-client", raw, v,
                                     sess_in=sess)
        check(not reused, "TLS %s: tenant a's session was resumed under tenant b" % v)
        check(status is None, "TLS %s: a-client got HTTP %s under tenant b" % (v, status))
        time.sleep(0.1)
        new = refusals(cg)[n_ref:]
        check(any("a-client" in json.dumps(e) and "b.example.com" in json.dumps(e)
                  for e in new),
              "TLS %s: no refusal of a-client under b logged: %s" % (v, json.dumps(new)[:300]))
    # A client trusted by both (common) still gets a full handshake, and is accepted.
    for v in ("1.2", "1.3"):
        sess = session_file(t, "c" + v)
        raw = request("a.example.com", "cfull" + v, "Connection: close\r\n")
        s_client(cg.port(), "a.example.com", "common-client", raw, v, sess_out=sess)
        raw = request("b.example.com", "ccross" + v, "Connection: close\r\n")
        _, reused, status = s_client(cg.port(), "b.example.com", "common-client", raw, v,
                                     sess_in=sess)
        check(not reused, "TLS %s: common-client's session of tenant a resumed under b" % v)
        check(status == 200, "TLS %s: common-client under b: %s" % (v, status))
    targets = [q["target"] for q in up.requests()]
    check(not any("/echo?cross" in x for x in targets), "upstream got %r" % targets)


def t_resume_python(t):
    """Python ssl: session of tenant a offered under b (session=): not reused, refused; under
    a: reused."""
    up, cg = env(t)
    ctx = ctx_for("a-client", "1.3")
    res, resp, s = attempt(t, cg.port(), ctx, "a.example.com", request("a.example.com", "p1"))
    check(res == "ok" and resp.status == 200, "first: %s %r" % (res, resp))
    sess = s.session
    check(sess is not None, "no session")
    res, resp, s2 = attempt(t, cg.port(), ctx, "a.example.com", request("a.example.com", "p2"),
                            session=sess)
    check(res == "ok" and resp.status == 200 and s2.session_reused,
          "same tenant: %s %r reused=%s" % (res, resp, s2 and s2.session_reused))
    res, resp, s3 = attempt(t, cg.port(), ctx, "b.example.com", request("b.example.com", "p3"),
                            session=sess)
    check(res != "ok", "a-client with tenant a's session accepted under b: %r" % (resp,))


def wait_reloaded(cg, before, timeout=5):
    deadline = time.time() + T(timeout)
    while time.time() < deadline:
        n = len([e for e in log_events(cg) if "reload" in str(e.get("event", e.get("msg")))])
        if n > before:
            time.sleep(0.3)  # let a watcher-triggered reload of the same change settle
            return
        time.sleep(0.05)
    raise H.Failure("no reload logged within %ds: %s" % (timeout, cg.tail(3)))


def reload_count(cg):
    return len([e for e in log_events(cg) if "reload" in str(e.get("event", e.get("msg")))])


def t_resume_after_store_change(t):
    """A session from before a CA store change is not resumed. Change 1: tenant a's bundle
    gains c's root -> full handshake, still accepted. Change 2: tenant a's CRL is replaced by
    one revoking a-client -> full handshake and refused."""
    store = store_copy(t)
    up, cg = config(t, store)
    for v in ("1.2", "1.3"):
        sess = session_file(t, "s" + v)
        raw = request("a.example.com", "before" + v, "Connection: close\r\n")
        _, _, status = s_client(cg.port(), "a.example.com", "a-client", raw, v, sess_out=sess)
        check(status == 200, "TLS %s before: %s" % (v, status))
    n = reload_count(cg)
    with open(os.path.join(store, "tenants", "a", "a.pem"), "a") as f, open(pf("c-root.crt")) as c:
        f.write(c.read())
    cg.signal(signal.SIGHUP)
    wait_reloaded(cg, n)
    for v in ("1.2", "1.3"):
        sess = session_file(t, "s" + v)
        raw = request("a.example.com", "after" + v, "Connection: close\r\n")
        _, reused, status = s_client(cg.port(), "a.example.com", "a-client", raw, v,
                                     sess_in=sess, sess_out=sess + "2")
        check(not reused, "TLS %s: session from before the CA change was resumed" % v)
        check(status == 200, "TLS %s after change: %s" % (v, status))
    n = reload_count(cg)
    shutil.copy(pf("a-int-all.crl"), os.path.join(store, "tenants", "a", "crl.pem"))
    cg.signal(signal.SIGHUP)
    wait_reloaded(cg, n)
    for v in ("1.2", "1.3"):
        sess = session_file(t, "s" + v) + "2"
        raw = request("a.example.com", "revoked" + v, "Connection: close\r\n")
        _, reused, status = s_client(cg.port(), "a.example.com", "a-client", raw, v,
                                     sess_in=sess)
        check(not reused, "TLS %s: session from before the CRL change was resumed" % v)
        check(status is None, "TLS %s: revoked a-client got HTTP %s" % (v, status))
    targets = [q["target"] for q in up.requests()]
    check(not any("revoked" in x for x in targets), "upstream got %r" % targets)


# --- certgate check on broken stores -----------------------------------------------------------

def check_config(t, store):
    path = os.path.join(t.dir, "certgate.yaml")
    cfg = {
        "credentials": {"dir": pki(), "cert": "server.crt", "key": "server.key"},
        "ca_store": {"dir": store},
        "tenancy": {"sni": PATTERN},
        "access": {"allowed_subjects_file": os.path.join(t.dir, "allowed-subjects.json")},
        "admin": {"address": "off"},
        "listeners": [H.listener("https", "http", "%s:%d" % (H.HOST, H.free_port()),
                                 client_auth="require")],
    }
    with open(path, "w") as f:
        f.write(H.yaml_dump(cfg) + "\n")
    p = H.run_cmd([H.Opts.binary, "check", "-c", path], timeout=10)
    return p, p.stdout + p.stderr


def t_check_good(t):
    p, out = check_config(t, pf("ca-store"))
    check(p.returncode == 0, "exit %d: %s" % (p.returncode, out[-300:]))
    for want in ("a root CA", "a issuing CA", "b issuing CA", "c root CA", "common root CA"):
        check(want in out, "summary lacks %r: %s" % (want, out[-400:]))


def broken_pem_cases(t):
    """Yields (what, store, expected line range, check output) for malformed bundles of b."""
    store = store_copy(t)
    path = os.path.join(store, "tenants", "b", "b.pem")
    with open(path) as f:
        good = f.read()
    cases = [
        ("no END line", good + "-----BEGIN CERTIFICATE-----\nMIIBgarbage\n", "begin"),
        ("invalid base64", good + "\n-----BEGIN CERTIFICATE-----\nMIIB%%not base64\n"
                                  "-----END CERTIFICATE-----\n", "body"),
    ]
    for what, text, where in cases:
        with open(path, "w") as f:
            f.write(text)
        lines = text.split("\n")
        begin = max(i for i, l in enumerate(lines) if l.startswith("-----BEGIN")) + 1
        lo, hi = (begin, begin) if where == "begin" else (begin, begin + 1)
        p, out = check_config(t, store)
        yield what, lo, hi, p, out


def t_check_broken_pem(t):
    """Malformed PEM in tenant b's bundle: check names the file and the line; the other
    tenants are still described."""
    for what, lo, hi, p, out in broken_pem_cases(t):
        m = re.search(r"(\S*tenants/b/b\.pem):(\d+)", out)
        check(m, "%s: no tenants/b/b.pem:LINE in %r" % (what, out[-400:]))
        line = int(m.group(2))
        check(lo <= line <= hi, "%s: line %d, want %d..%d: %s" % (what, line, lo, hi,
                                                                   m.group(0)))
        check("a issuing CA" in out and "c root CA" in out,
              "%s: the other tenants are not reported: %s" % (what, out[-300:]))


def t_check_broken_pem_exit(t):
    """certgate check exits 1 when a tenant bundle is broken (CONTRACT 2: validation failure;
    CONTRACT 9: sync-ca-store.sh relies on check -c to refuse an invalid store)."""
    for what, lo, hi, p, out in broken_pem_cases(t):
        check(p.returncode == 1, "%s: exit %d, want 1; output: %s" % (
            what, p.returncode, " | ".join(l for l in out.splitlines() if "b.pem" in l)))


def t_check_broken_index(t):
    """An unparsable index.yml: check names index.yml:LINE:COL and exits 1."""
    store = store_copy(t)
    cases = [
        # (text, line of the error as libyaml reports it)
        ("common:\n- common.pem\ntenants:\n  a:\n  - a.pem\n  b: [b.pem\n  c:\n  - c.pem\n", None),
        ("common:\n- common.pem\n\ttenants: x\n", 3),
    ]
    for text, want_line in cases:
        with open(os.path.join(store, "index.yml"), "w") as f:
            f.write(text)
        p, out = check_config(t, store)
        m = re.search(r"index\.yml:(\d+):(\d+)", out)
        check(m, "no index.yml:LINE:COL in %r" % out[-300:])
        if want_line is not None:
            check(int(m.group(1)) == want_line, "line %s, want %d: %s"
                  % (m.group(1), want_line, m.group(0)))
        else:
            check(6 <= int(m.group(1)) <= 9, "line %s, the open [ is at line 6" % m.group(1))
        check(p.returncode == 1, "exit %d, want 1: %s" % (p.returncode, out[-200:]))


TESTS = [
    ("tenancy.matrix_unknown_common_nosni_common", t_matrix_common),
    ("tenancy.matrix_unknown_reject_nosni_reject", t_matrix_reject),
    ("tenancy.crl_revoked_refused", t_revoked),
    ("tenancy.crl_off_accepts_revoked", t_revocation_off),
    ("tenancy.host_sni_421_matrix", t_host_matrix),
    ("tenancy.host_421_on_keepalive", t_host_keepalive),
    ("tenancy.curl", t_curl),
    ("tenancy.tenant_a_never_under_b", t_never_cross),
    ("tenancy.resume_same_tenant_reused", t_resume_same_tenant),
    ("tenancy.resume_across_tenants_full_handshake", t_resume_across_tenants),
    ("tenancy.resume_python_session_across_tenants", t_resume_python),
    ("tenancy.resume_after_store_change", t_resume_after_store_change),
    ("tenancy.check_good_store", t_check_good),
    ("tenancy.check_broken_pem_names_file_line", t_check_broken_pem),
    ("tenancy.check_broken_pem_exit_status", t_check_broken_pem_exit),
    ("tenancy.check_broken_index_names_line_col", t_check_broken_index),
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
