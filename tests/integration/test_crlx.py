#!/usr/bin/env python3
"""test_crlx.py: integration tests of issue 9 items 5, 6 and 9, in the group `crlx.`. run.py calls
register(itself) to add them to its list; this file also runs on its own:

    python3 tests/integration/test_crlx.py --binary build/certgate [-k crlx.] [-v]

- crlx.special_*: a FIFO, socket or device in a watched tree (a tenant's bundle, the credentials,
  the allowlist file) is a load error naming the file; the main thread never blocks on it, so
  /healthz answers, other tenants still reload and SIGTERM stops the process (SECURITY rule 29).
- crlx.crl_*: a CRL that is not valid for its issuer (issuer without cRLSign, unknown critical
  extension at CRL or entry level, delta CRL, Issuing Distribution Point that narrows its scope)
  makes its bundle fail to load: previous bundle kept, reported by /status, the log, the metrics
  and `certgate check` with file and line (SECURITY rule 27).
- crlx.xfcc_*: XFCC values that neither The Things Stack's parser (split on ';', first `Chain=`)
  nor a quote-aware parser can be fooled by, and Envoy's bytes for `O=Acme\\, Inc.` and UTF-8
  subjects (SECURITY rule 26, CONTRACT section 5).
"""

import base64
import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse

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


def openssl(*args, data=None, cwd=None):
    p = subprocess.run(["openssl"] + list(args), input=data, capture_output=True, timeout=60,
                       cwd=cwd)
    check(p.returncode == 0, "openssl %s: %s" % (args[0], p.stderr.decode()[-300:]))
    return p.stdout


def events(cg, name=None):
    return H.log_events(cg, name)


def wait_event(cg, name, needle, timeout=3):
    TR = mod("test_reload")
    return TR.wait_for(lambda: [e for e in events(cg, name)
                                if any(needle in str(v) for v in e.values()) or
                                needle in "%s: %s" % (e.get("location"), e.get("error"))],
                       timeout, "a %s event naming %s (log: %s)" % (name, needle, cg.tail(3)))


def healthz(cg):
    try:
        return H.http_get(cg.admin_port, "/healthz", timeout=T(2))[0]
    except OSError as e:
        return "error %s" % e


def check_cmd(cg, needle, what):
    """`certgate check` on |cg|'s config fails promptly and names |needle|."""
    p = H.run_cmd([H.Opts.binary, "check", "-c", cg.path], timeout=15)
    out = p.stdout + p.stderr
    check(p.returncode != 0, "check passed with %s: %s" % (what, out[-300:]))
    check(needle in out, "check does not name %r: %s" % (needle, out[-400:]))
    return out


def sigterm_exits(cg):
    t0 = time.time()
    cg.signal(signal.SIGTERM)
    rc = cg.wait(T(5))
    check(rc is not None, "SIGTERM ignored for %.0fs (main thread blocked?)" % T(5))
    return time.time() - t0


def mkfifo_over(path):
    """Replaces |path| by a FIFO with one rename, as a careless tool could."""
    tmp = path + ".fifo.tmp"
    os.mkfifo(tmp)
    os.replace(tmp, path)


# --- item 9: special files ----------------------------------------------------------------------

def t_special_fifo_in_tenant(t):
    """mkfifo in a tenant directory, listed in index.yml: that tenant keeps its bundle and
    reports the FIFO; another tenant still reloads; /healthz stays 200; SIGTERM exits; check
    fails naming the file."""
    TR = mod("test_reload")
    store, cg, ctx = TR.tenant_env(t, {"acme": TR.pem("root.crt"),
                                       "beta": TR.pem("unknown-root.crt")})
    port = cg.port()
    TR.wait_tenant(port, ctx, "acme", "ok")
    fifo = os.path.join(store, "tenants", "acme", "pipe.pem")
    os.mkfifo(fifo)
    TR.write_atomic(os.path.join(store, "tenants", "beta", "ca.pem"), TR.pem("root.crt"))
    TR.write_atomic(os.path.join(store, "index.yml"),
                    "common:\n- c.pem\ntenants:\n  acme:\n  - ca.pem\n  - pipe.pem\n"
                    "  beta:\n  - ca.pem\n")
    TR.wait_tenant(port, ctx, "beta", "ok", timeout=5)
    check(healthz(cg) == 200, "/healthz: %s" % healthz(cg))
    check(TR.tenant_request(port, ctx, "acme") == "ok", "acme lost its last good bundle")
    err = (TR.status(cg)["tenants"].get("acme") or {}).get("error") or ""
    check("tenants/acme/pipe.pem: a FIFO, not a regular file" in err, "/status error %r" % err)
    wait_event(cg, "tenant_load_failed", "tenants/acme/pipe.pem: a FIFO")
    check(TR.mval(TR.metrics(cg), "certgate_tenant_load_errors", tenant="acme") == 1,
          "certgate_tenant_load_errors{tenant=acme} != 1")
    # a third tenant added later still loads: the reloads keep running
    os.makedirs(os.path.join(store, "tenants", "gamma"))
    TR.write_atomic(os.path.join(store, "tenants", "gamma", "ca.pem"), TR.pem("root.crt"))
    TR.write_atomic(os.path.join(store, "index.yml"),
                    "common:\n- c.pem\ntenants:\n  acme:\n  - ca.pem\n  - pipe.pem\n"
                    "  beta:\n  - ca.pem\n  gamma:\n  - ca.pem\n")
    TR.wait_tenant(port, ctx, "gamma", "ok", timeout=5)
    check_cmd(cg, "tenants/acme/pipe.pem: a FIFO, not a regular file", "a FIFO in a bundle")
    sigterm_exits(cg)


def t_special_socket_and_device(t):
    """A socket and a character device (a symlink to /dev/zero) as bundles: errors naming
    them, the other tenant serves."""
    TR = mod("test_reload")
    store, cg, ctx = TR.tenant_env(t, {"acme": TR.pem("root.crt")})
    port = cg.port()
    TR.wait_tenant(port, ctx, "acme", "ok")
    for tid in ("sock", "dev"):
        os.makedirs(os.path.join(store, "tenants", tid))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    t.socks.append(s)
    s.bind(os.path.join(store, "tenants", "sock", "ca.pem"))
    os.symlink("/dev/zero", os.path.join(store, "tenants", "dev", "ca.pem"))
    TR.write_atomic(os.path.join(store, "index.yml"),
                    "common:\n- c.pem\ntenants:\n  acme:\n  - ca.pem\n  sock:\n  - ca.pem\n"
                    "  dev:\n  - ca.pem\n")
    wait_event(cg, "tenant_load_failed", "tenants/dev/ca.pem: a character device")
    wait_event(cg, "tenant_load_failed", "tenants/sock/ca.pem: a socket")
    check(healthz(cg) == 200, "/healthz: %s" % healthz(cg))
    check(TR.tenant_request(port, ctx, "acme") == "ok", "acme refused")
    check_cmd(cg, "tenants/dev/ca.pem: a character device", "/dev/zero as a bundle")
    sigterm_exits(cg)


def t_special_fifo_credentials(t):
    """A FIFO as the credentials' certificate: the reload fails naming it, the old certificate
    is still served, /healthz 200, SIGTERM exits; check fails naming the file."""
    TR = mod("test_reload")
    creds, install = TR.plain_layout(t)
    up, cg, ctx = TR.start(t, creds)
    crt = os.path.join(creds["dir"], creds["cert"])
    mkfifo_over(crt)
    wait_event(cg, "reload_failed", "server.crt: a FIFO, not a regular file")
    check(healthz(cg) == 200, "/healthz: %s" % healthz(cg))
    check(TR.served_der(cg.port(), ctx) == TR.original()[2], "old certificate not kept")
    check(TR.status(cg)["last_reload"]["result"] == "failure", "reload not reported failed")
    code, _, body = TR.admin_req(cg.admin_port, "POST", "/reload")
    check(code == 500 and b"a FIFO" in body, "POST /reload: %d %r" % (code, body[:200]))
    check_cmd(cg, "server.crt: a FIFO, not a regular file", "a FIFO as tls.crt")
    sigterm_exits(cg)


def t_special_fifo_allowlist(t):
    """A FIFO as access.allowed_subjects_file: check and run fail at once naming it (the
    allowlist is read at start only; run refuses to start without it, as for any bad file)."""
    up = t.upstream()
    cfg = H.make_config(t, "ecdsa", [H.listener("l", "http", up.http, client_auth="require")])
    path = cfg["access"]["allowed_subjects_file"]
    os.mkfifo(path)
    conf = os.path.join(t.dir, "fifo-allowlist.yaml")
    with open(conf, "w") as f:
        f.write(H.yaml_dump(cfg) + "\n")
    p = H.run_cmd([H.Opts.binary, "check", "-c", conf], timeout=15)
    out = p.stdout + p.stderr
    check(p.returncode != 0 and "allowed-subjects.json: a FIFO" in out,
          "check: exit %d: %s" % (p.returncode, out[-300:]))
    p = H.run_cmd([H.Opts.binary, "run", "-c", conf], timeout=15)
    out = p.stdout + p.stderr
    check(p.returncode != 0 and "allowed-subjects.json: a FIFO" in out and "startup_failed" in out,
          "run: exit %d: %s" % (p.returncode, out[-300:]))


# --- item 6: CRLs that are not evidence -----------------------------------------------------

CRL_CNF = """[ ca ]
default_ca = CA_default
[ CA_default ]
dir              = %s
database         = $dir/index.txt
crlnumber        = $dir/crlnumber
new_certs_dir    = $dir
default_md       = sha256
default_crl_days = 30
policy           = policy_any
[ policy_any ]
commonName       = optional
[ exts ]
%s
[ idp ]
%s
"""

# (name, crl_extensions, idp section, what the error says)
BAD_CRLS = [
    ("crit", "1.2.3.4.5 = critical,ASN1:NULL", "",
     "X509 CRL has an unknown critical extension 1.2.3.4.5"),
    ("delta", "2.5.29.27 = critical,ASN1:INTEGER:1", "",
     "X509 CRL is a delta CRL (deltaCRLIndicator)"),
    ("reasons", "issuingDistributionPoint = critical,@idp", "onlysomereasons = keyCompromise",
     "X509 CRL has an Issuing Distribution Point that narrows its scope (onlySomeReasons)"),
    ("onlyca", "issuingDistributionPoint = critical,@idp", "onlyCA = TRUE",
     "X509 CRL has an Issuing Distribution Point that narrows its scope (onlyContainsCACerts)"),
    ("indirect", "issuingDistributionPoint = critical,@idp", "indirectCRL = TRUE",
     "X509 CRL has an Issuing Distribution Point that narrows its scope (indirectCRL)"),
]


def cdir():
    d = os.path.join(H.Opts.tmp, "crlx-pki")
    os.makedirs(d, exist_ok=True)
    return d


def pki(name):
    return os.path.join(H.Opts.pki["ecdsa"], name)


def make_crl(name, exts="", idp="", revoked=(), ca=None):
    """A CRL (PEM text) of |ca| ((cert, key) files; the run's intermediate by default) revoking
    |revoked|, with the crl_extensions |exts|, made by openssl ca -gencrl."""
    if name in _CACHE:
        return _CACHE[name]
    ca = ca or (pki("intermediate.crt"), pki("intermediate.key"))
    d = os.path.join(cdir(), "ca-" + name)
    os.makedirs(d)
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write(CRL_CNF % (d, exts, idp))
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "crlnumber"), "w") as f:
        f.write("01\n")
    base = ["-config", os.path.join(d, "ca.cnf"), "-batch", "-cert", ca[0], "-keyfile", ca[1]]
    for crt in revoked:
        openssl("ca", *(base + ["-revoke", crt]))
    out = os.path.join(d, "crl.pem")
    openssl("ca", *(base + ["-gencrl", "-out", out] + (["-crlexts", "exts"] if exts else [])))
    with open(out) as f:
        _CACHE[name] = f.read()
    return _CACHE[name]


def issue(name, ca, ext, subj):
    """A certificate of |ca| ((cert, key) files); returns (cert file, key file)."""
    key, csr, crt, extf = (os.path.join(cdir(), "%s.%s" % (name, x))
                           for x in ("key", "csr", "crt", "ext"))
    if not os.path.exists(crt):
        with open(extf, "w") as f:
            f.write(ext)
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
        openssl("req", "-new", "-key", key, "-subj", subj, "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial",
                str(7000 + len(os.listdir(cdir()))), "-days", "30", "-sha256", "-extfile", extf,
                "-out", crt)
    return crt, key


EXT_CLIENT = ("basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=clientAuth\n")


def victim_ctx():
    """A client of the run's intermediate that the good CRL revokes; (ctx, cert file)."""
    crt, key = issue("victim", (pki("intermediate.crt"), pki("intermediate.key")), EXT_CLIENT,
                     "/O=certgate demo/CN=crl victim")
    chain = os.path.join(cdir(), "victim-chain.crt")
    with open(chain, "w") as out:
        out.write(open(crt).read() + open(pki("intermediate.crt")).read())
    ctx = H.client_ctx("ecdsa", cert=chain, key=key)
    ctx.check_hostname = False
    return ctx, crt


def read(path):
    with open(path) as f:
        return f.read()


def t_crl_not_evidence_keeps_bundle(t):
    """Tenant acme's bundle: the root and a CRL revoking the victim. Each rewrite of it with a CRL
    that is not evidence (unknown critical extension, delta, IDP with onlySomeReasons,
    onlyContainsCACerts, indirectCRL; none of them lists the victim) is a load error naming the
    file and line: acme keeps its bundle, so the victim stays refused (before the fix, the new
    CRL replaced the old one and the victim got in); /status, the log, the metrics and
    `certgate check` report it; tenant beta updates in the same reloads."""
    TR = mod("test_reload")
    vctx, vcrt = victim_ctx()
    root = TR.pem("root.crt")
    good = make_crl("good", revoked=[vcrt])
    store, cg, ctx = TR.tenant_env(t, {"acme": root + good, "beta": TR.pem("unknown-root.crt")})
    port = cg.port()
    TR.wait_tenant(port, ctx, "acme", "ok")
    check(TR.tenant_request(port, vctx, "acme") == "refused", "the revoked victim got in")
    line = root.count("\n") + 1
    bundle = os.path.join(store, "tenants", "acme", "ca.pem")
    for i, (name, exts, idp, what) in enumerate(BAD_CRLS):
        TR.write_atomic(bundle, root + make_crl(name, exts, idp))
        beta = TR.pem("root.crt") if i % 2 == 0 else TR.pem("unknown-root.crt")
        TR.write_atomic(os.path.join(store, "tenants", "beta", "ca.pem"), beta)
        TR.wait_tenant(port, ctx, "beta", "ok" if i % 2 == 0 else "refused", timeout=5)
        check(TR.tenant_request(port, vctx, "acme") == "refused",
              "%s: the victim got in: the CRL that is no evidence was used" % name)
        want = "tenants/acme/ca.pem:%d: %s" % (line, what)
        wait_event(cg, "tenant_load_failed", want)
        err = (TR.status(cg)["tenants"].get("acme") or {}).get("error") or ""
        check(want in err, "%s: /status error %r, want %r" % (name, err, want))
        check(TR.tenant_request(port, ctx, "acme") == "ok", "%s: acme lost its bundle" % name)
        check(TR.mval(TR.metrics(cg), "certgate_tenant_load_errors", tenant="acme") == 1,
              "%s: certgate_tenant_load_errors{tenant=acme} != 1" % name)
        check_cmd(cg, want, "a %s CRL" % name)
    # repaired: the error goes away
    TR.write_atomic(bundle, root + good)
    TR.wait_for(lambda: not (TR.status(cg)["tenants"].get("acme") or {}).get("error"), 3,
                "acme's error cleared")


def t_crl_signer_without_crlsign(t):
    """A CA whose keyUsage lacks cRLSign signs a CRL listed with it in a tenant's bundle: a load
    error naming file, line and CA; a new tenant stays absent; check fails."""
    TR = mod("test_reload")
    ca = issue("nosign-ca", (pki("root.crt"), pki("root.key")),
               "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign\n",
               "/O=certgate demo/CN=no crl sign CA")
    crl = make_crl("nosign", ca=ca)
    store, cg, ctx = TR.tenant_env(t, {"acme": TR.pem("root.crt")})
    port = cg.port()
    TR.wait_tenant(port, ctx, "acme", "ok")
    cert = read(ca[0])
    d = os.path.join(store, "tenants", "nosign")
    os.makedirs(d)
    TR.write_atomic(os.path.join(d, "ca.pem"), TR.pem("root.crt") + cert + crl)
    TR.write_atomic(os.path.join(store, "index.yml"),
                    "common:\n- c.pem\ntenants:\n  acme:\n  - ca.pem\n  nosign:\n  - ca.pem\n")
    line = TR.pem("root.crt").count("\n") + cert.count("\n") + 1
    want = ('tenants/nosign/ca.pem:%d: X509 CRL is signed by "CN=no crl sign CA,O=certgate demo",'
            ' whose keyUsage lacks cRLSign' % line)
    wait_event(cg, "tenant_load_failed", want)
    check(TR.tenant_request(port, ctx, "nosign") == "refused", "tenant nosign loaded")
    check(TR.tenant_request(port, ctx, "acme") == "ok", "acme refused")
    check_cmd(cg, want, "a CRL signed without cRLSign")
    # The CA only in the client's chain: the store cannot judge the CRL at load, the handshake
    # does: refused, although the CRL lists nobody (before the fix: "not revoked", 200).
    leaf, key = issue("nosign-leaf", ca, EXT_CLIENT, "/O=certgate demo/CN=nosign leaf")
    chain = os.path.join(cdir(), "nosign-leaf-chain.crt")
    with open(chain, "w") as out:
        out.write(read(leaf) + cert)
    lctx = H.client_ctx("ecdsa", cert=chain, key=key)
    lctx.check_hostname = False
    d = os.path.join(store, "tenants", "chainonly")
    os.makedirs(d)
    TR.write_atomic(os.path.join(d, "ca.pem"), TR.pem("root.crt") + crl)
    TR.write_atomic(os.path.join(store, "index.yml"),
                    "common:\n- c.pem\ntenants:\n  acme:\n  - ca.pem\n  chainonly:\n  - ca.pem\n")
    TR.wait_tenant(port, ctx, "chainonly", "ok", timeout=5)
    check(TR.tenant_request(port, lctx, "acme") == "ok", "the CA's own client refused by acme")
    check(TR.tenant_request(port, lctx, "chainonly") == "refused",
          "a CRL signed by a CA without cRLSign was taken for 'not revoked'")


# --- item 5: XFCC values no parser can be fooled by ------------------------------------------

def tts_parse(value):
    """A copy of The Things Stack's rule (pkg/auth/mtls/proxy_headers.go, FromProxyHeaders):
    strings.Split(value, ";"), the first part with the prefix "Chain=", strings.Trim of '\\' and
    '"', url.PathUnescape (an invalid escape is an error), pem.Decode (the first block), then
    x509.ParseCertificate. Returns the DER it would take as the client, or None (an error)."""
    for part in value.split(";"):
        if not part.startswith("Chain="):
            continue
        v = part[len("Chain="):].strip('\\"')
        if re.search(r"%(?![0-9A-Fa-f]{2})", v):
            return None
        v = urllib.parse.unquote(v, encoding="latin-1")
        m = re.search(r"(?:^|\n)-----BEGIN ([^\n]*?)-----\n(.*?)\n?-----END \1-----", v, re.S)
        if not m:
            return None
        try:
            return base64.b64decode("".join(m.group(2).split()), validate=True)
        except ValueError:
            return None
    return None


SMUGGLER_CNF = r"""[ req ]
distinguished_name = dn
prompt = no
string_mask = utf8only
utf8 = yes
[ dn ]
CN = gw \"quoted\"
description = x;Chain=%(enc)s
[ ext ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = @alt
[ alt ]
URI.1 = urn:x;Chain=%(enc)s
DNS.1 = gw.example.com
"""

ACME_CNF = r"""[ req ]
distinguished_name = dn
prompt = no
string_mask = utf8only
utf8 = yes
[ dn ]
O = Acme\, Inc.
CN = M\xc3\xbcller \xe2\x82\xac
[ ext ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:spiffe://acme.test/q?a=b&c=d, DNS:gw.acme.test
"""


def cnf_leaf(X, name, text):
    cnf = os.path.join(cdir(), name + ".cnf")
    with open(cnf, "w", encoding="utf-8") as f:
        f.write(text)
    return X.sign_leaf(name, ["-utf8"], "", config=cnf)


def xfcc_values(t, chain, key, details_sets):
    """One listener per details set (None: the default, all five); one request each through
    Python's ssl with the client chain; returns the x-forwarded-client-cert values received."""
    X = mod("test_xfcc")
    up = t.upstream()
    ls = []
    for i, det in enumerate(details_sets):
        kw = {"client_auth": "require", "client_cert_header": "xfcc"}
        if det is not None:
            kw["client_cert_details"] = list(det)
        ls.append(H.listener("d%d" % i, "http", up.http, **kw))
    cg = t.certgate("ecdsa", ls)
    ctx = X.ctx_with(chain, key)
    for i in range(len(details_sets)):
        res, resp = H.attempt(t, cg.port("d%d" % i), ctx, X.get("d=%d" % i))
        check(res == "ok" and resp.status == 200, "d%d: %s %r %s" % (i, res, resp, cg.tail(2)))
    got = X.by_target(up, len(details_sets))
    out = []
    for i in range(len(details_sets)):
        hs = X.cc_of(got["/echo?d=%d" % i][0]["headers"])
        check(len(hs) == 1 and hs[0][0] == "x-forwarded-client-cert", "d%d: %r" % (i, hs))
        out.append(hs[0][1])
    return out


def t_xfcc_smuggled_chain(t):
    """A client certificate whose subject (CN with '"', a description attribute) and URI SAN
    hold ';Chain=<another client's PEM>': The Things Stack's parser must find this client's own
    leaf when chain is among the details and nothing when it is not, never the other client
    (before the fix it returned the victim for every details set without chain)."""
    X = mod("test_xfcc")
    victim = X.read_chain(pki("client.crt"))[0]
    victim_der = X.der(victim)
    chain, key = cnf_leaf(X, "smuggler", SMUGGLER_CNF % {"enc": X.envoy_pem_encode(victim)})
    own_der = X.der(X.read_chain(chain)[0])
    sets = [None, ("subject", "uri", "dns"), ("subject",), ("uri",), ("cert", "uri")]
    values = xfcc_values(t, chain, key, sets)
    for det, value in zip(sets, values):
        got = tts_parse(value)
        check(got != victim_der, "details %r: The Things Stack's parser took the smuggled "
              "certificate: %r" % (det, value[:300]))
        if det is None:
            check(got == own_der, "details %r: The Things Stack's parser did not get the client's"
                  " own leaf" % (det,))
        else:
            check(got is None, "details %r: a Chain= where certgate wrote none" % (det,))
    for det, value in zip(sets, values):
        # naive splitters: one piece per key certgate wrote, no ',' at all (all values here
        # are in the encoded form)
        keys = [p.split("=", 1)[0] for p in value.split(";")]
        want = ["By", "Hash"] + [k for d, k in (("cert", "Cert"), ("chain", "Chain"),
                                                ("subject", "Subject"), ("uri", "URI"),
                                                ("dns", "DNS"))
                                 if det is None or d in det]
        check(keys == want, "details %r: a ';' splitter sees keys %r, want %r" % (det, keys, want))
        check("," not in value, "details %r: a ',' in %r" % (det, value[:200]))
        # a quote-aware parser: one element, and the values decode to the certificate's
        el = X.xfcc_parse(value)
        check(len(el) == 1 and [k for k, _ in el[0]] == want, "quote-aware: %r" % el)
        vals = dict(el[0])
        if "URI" in vals:
            check(urllib.parse.unquote(vals["URI"]) == "urn:x;Chain=" +
                  X.envoy_pem_encode(victim), "URI does not decode to the SAN")
        if "Subject" in vals:
            check(urllib.parse.unquote(vals["Subject"]) == X.subject_rfc2253(X.read_chain(chain)[0]),
                  "Subject does not decode to the RFC 2253 string")
            check(value.count('Subject="') == 1 and '\\' not in value,
                  "a backslash left in the encoded form: %r" % value[:200])


def t_xfcc_envoy_bytes_escapes_utf8(t):
    """O=Acme\\, Inc. and a UTF-8 CN (M\\C3\\BCller \\E2\\82\\AC), a URI SAN with a query string:
    byte-identical to Envoy (its Subject is X509_NAME_print_ex(XN_FLAG_RFC2253)'s string, here
    from the openssl CLI's -nameopt RFC2253, quoted and nothing else). Before the fix certgate
    doubled each backslash (and quoted the URI for its '=')."""
    X = mod("test_xfcc")
    chain, key = cnf_leaf(X, "acme", ACME_CNF.replace("\\xc3\\xbc", "\u00fc")
                          .replace("\\xe2\\x82\\xac", "\u20ac"))
    pems = X.read_chain(chain)
    subj = X.subject_rfc2253(pems[0])
    check(subj == "CN=M\\C3\\BCller \\E2\\82\\AC,O=Acme\\, Inc.", "openssl says %r" % subj)
    sets = [None, ("subject",), ("uri", "dns")]
    values = xfcc_values(t, chain, key, sets)
    by = X.by_uris("ecdsa")
    for det, value in zip(sets, values):
        want = X.envoy_xfcc(pems, by, det) if det is not None else X.envoy_xfcc(pems, by)
        check(value == want, "details %r: not Envoy's bytes:\n got  %r\n want %r"
              % (det, value[-160:], want[-160:]))
    check('Subject="CN=M\\C3\\BCller \\E2\\82\\AC,O=Acme\\, Inc."' in values[1],
          "the literal subject: %r" % values[1])


TESTS = [
    ("crlx.special_fifo_in_tenant_bundle", t_special_fifo_in_tenant),
    ("crlx.special_socket_and_device_bundles", t_special_socket_and_device),
    ("crlx.special_fifo_as_credentials_cert", t_special_fifo_credentials),
    ("crlx.special_fifo_as_allowlist_file", t_special_fifo_allowlist),
    ("crlx.crl_not_evidence_keeps_previous_bundle", t_crl_not_evidence_keeps_bundle),
    ("crlx.crl_signer_without_crlsign", t_crl_signer_without_crlsign),
    ("crlx.xfcc_smuggled_chain_the_things_stack", t_xfcc_smuggled_chain),
    ("crlx.xfcc_envoy_bytes_escapes_utf8", t_xfcc_envoy_bytes_escapes_utf8),
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
