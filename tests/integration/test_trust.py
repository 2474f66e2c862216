#!/usr/bin/env python3
"""test_trust.py: trust on every path (issue 9 items 1, 7, 8), in the group `trust.`. run.py
calls register(itself) to add them to its list; this file also runs on its own:

    python3 tests/integration/test_trust.py --binary build/certgate [-k trust.] [-v]

Real clients only: Python ssl (with session reuse, TLS 1.3 tickets and TLS 1.2 tickets) and the
certgate CLI. Certificates are made with the openssl CLI; those that expire while certgate runs
are signed with `openssl ca -enddate` (seconds ahead: there is no faketime here).

Rule -> tests: SECURITY 22 trust.cache_store_anchor_expired_*, trust.resumed_*;
SECURITY 28 trust.name_constraints_*; issue 9 item 8 trust.reason_*, trust.check_anchor_*.
"""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

H = None  # run.py's module, set by register()
S = None  # test_security.py: certificate, log and metric helpers


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


# ---------------------------------------------------------------------------------------------
# certificates

EXT_CLIENT = ("basicConstraints=critical,CA:false\n"
              "keyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=clientAuth\n"
              "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
EXT_CA = ("basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n"
          "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")

CA_CNF = """[ ca ]
default_ca = CA_default
[ CA_default ]
dir              = %s
database         = $dir/index.txt
serial           = $dir/serial
new_certs_dir    = $dir
default_md       = sha256
policy           = policy_any
unique_subject   = no
[ policy_any ]
commonName       = optional
"""

_SERIAL = [20000]


def tdir():
    d = os.path.join(H.Opts.tmp, "trust-pki")
    os.makedirs(d, exist_ok=True)
    return d


def utc_short(ts):
    """The form `openssl ca -enddate` takes (UTCTime)."""
    return time.strftime("%y%m%d%H%M%SZ", time.gmtime(ts))


def sign(name, subj, ext, ca=None, kind="ec", not_after=None, curve="P-256"):
    """A certificate for a new key, signed by |ca| ((crt, key); None: self-signed) with
    `openssl ca`, valid from an hour ago until |not_after| (Unix time; None: 30 days).
    Returns (crt, key)."""
    d = tempfile.mkdtemp(prefix=name + "-", dir=tdir())
    key, csr, crt, extf = (os.path.join(d, n) for n in ("key.pem", "csr.pem", "crt.pem", "ext"))
    if kind == "ec":
        S.openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:" + curve,
                  "-out", key)
    else:
        S.openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key)
    with open(extf, "w") as f:
        f.write(ext)
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write(CA_CNF % d)
    open(os.path.join(d, "index.txt"), "w").close()
    _SERIAL[0] += 1
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("%X\n" % _SERIAL[0])
    S.openssl("req", "-new", "-key", key, "-subj", subj, "-out", csr)
    now = time.time()
    args = ["ca", "-config", os.path.join(d, "ca.cnf"), "-batch", "-notext", "-preserveDN",
            "-in", csr, "-out", crt, "-extfile", extf, "-startdate", utc_short(now - 3600),
            "-enddate", utc_short(not_after or now + 30 * 86400)]
    if ca is None:
        args += ["-selfsign", "-keyfile", key]
    else:
        args += ["-cert", ca[0], "-keyfile", ca[1]]
    S.openssl(*args)
    return crt, key


def run_pki(name):
    return S.pki("ecdsa", name)


def run_intermediate():
    return run_pki("intermediate.crt"), run_pki("intermediate.key")


def run_root():
    return run_pki("root.crt"), run_pki("root.key")


def chain_file(*files):
    out = tempfile.mktemp(suffix="-chain.pem", dir=tdir())
    return S.cat(out, *files)


def store_with(t, extra_common=(), name="ca-store"):
    """A private copy of the run's CA store whose common bundle lists the run's root plus
    |extra_common| (certificate files, one bundle each)."""
    d = os.path.join(t.dir, name)
    shutil.copytree(run_pki("ca-store"), d)
    names = ["common.pem"]
    for i, f in enumerate(extra_common):
        n = "extra-%d.pem" % i
        shutil.copy(f, os.path.join(d, "common", n))
        names.append(n)
    with open(os.path.join(d, "index.yml"), "w") as f:
        f.write("common:\n" + "".join("- %s\n" % n for n in names))
    return d


def env(t, store, workers=2, relay=False):
    up = t.upstream()
    ls = [H.listener("https", "http", up.http, client_auth="require")]
    if relay:
        ls.append(H.listener("relay", "tls", up.tcp, client_auth="require"))
    cg = t.certgate("ecdsa", ls, extra={"ca_store": {"dir": store}, "workers": workers,
                                        "reload": {"debounce": "100ms", "poll_interval": "1h"}})
    return up, cg


def ctx_for(chain, key, version=None):
    ctx = S.ctx_for(chain, key)
    if version is not None:
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


def refusal(cg, since, what, result=None, words=()):
    """The handshake_refused event logged after the first |since| ones: its result is |result|
    (when given) and its reason holds one of |words| (when given); returns it."""
    ev = S.wait_event(cg, "handshake_refused", since)
    check(ev is not None, "%s: no handshake_refused line logged: %s" % (what, cg.tail(3)))
    reason = (ev.get("reason") or "").lower()
    check((result is None or ev.get("result") == result) and
          (not words or any(w in reason for w in words)),
          "%s: refused for another reason: result=%s reason=%r" % (what, ev.get("result"),
                                                                  ev.get("reason")))
    return ev


def wait_until(ts):
    while time.time() < ts:
        time.sleep(min(0.2, max(0.0, ts - time.time())))


# ---------------------------------------------------------------------------------------------
# sessions: a full handshake that saves its session, then a resumption of it

def http_session(t, port, ctx):
    """A full handshake and one request (the TLS 1.3 ticket arrives with the response);
    returns the session to resume."""
    s = H.tls_connect(t, port, ctx)
    check(not s.session_reused, "the first connection resumed a session")
    s.sendall(H.get_req("/echo?first=1"))
    resp = H.read_response(H.Reader(s))
    check(resp.status == 200, "first connection: %d" % resp.status)
    sess = s.session
    check(sess is not None, "no session after the first connection")
    s.close()
    return sess


def relay_session(t, port, ctx):
    s = H.tls_connect(t, port, ctx)
    s.sendall(b"ping")
    check(H.Reader(s).read_exact(4) == b"ping", "tls relay echo")
    sess = s.session
    check(sess is not None, "no session after the first relay connection")
    s.close()
    return sess


def resume(t, port, ctx, sess):
    raw = socket.create_connection((H.HOST, port), timeout=T(5))
    t.socks.append(raw)
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
    t.socks.append(s)
    return s


def resumed_http(t, port, ctx, sess, tag):
    """("ok", Resp) or ("refused", why) for a resumption of |sess| and one request; checks
    that the handshake did resume."""
    try:
        s = resume(t, port, ctx, sess)
    except (ssl.SSLError, ConnectionError) as e:
        return "refused", "handshake: %s" % e
    check(s.session_reused, "%s: the session was not resumed (a full handshake)" % tag)
    err = H.safe_send(s, H.get_req("/echo?" + tag))
    if err:
        return "refused", err
    r = H.Reader(s)
    try:
        return "ok", H.read_response(r)
    except H.Failure as e:
        return "refused", str(r.err or e)


def resumed_relay(t, port, ctx, sess, tag):
    """("ok", None) when the resumed relay echoes, ("refused", why) when it is closed."""
    try:
        s = resume(t, port, ctx, sess)
    except (ssl.SSLError, ConnectionError) as e:
        return "refused", "handshake: %s" % e
    check(s.session_reused, "%s: the session was not resumed (a full handshake)" % tag)
    err = H.safe_send(s, tag.encode())
    if err:
        return "refused", err
    r = H.Reader(s)
    try:
        data = r.read_exact(len(tag))
        return ("ok", None) if data == tag.encode() else ("refused", repr(data))
    except H.Failure as e:
        return "refused", str(r.err or e)


VERSIONS = (("tls13", ssl.TLSVersion.TLSv1_3), ("tls12", ssl.TLSVersion.TLSv1_2))


# ---------------------------------------------------------------------------------------------
# item 1a: the verified-chain cache ends with the first notAfter of the verified chain

def t_cache_store_anchor_expired(t):
    """A common-bundle anchor that expires while certgate runs: a client verified through it
    before gets in; after it expired, a new full handshake with the same chain is refused as
    expired (SECURITY 22), not answered from the cache of verified chains, whose entry the
    client's own certificates would have kept for 30 days."""
    life = T(8)
    end = int(time.time() + life)
    ca = sign("short-root", "/O=certgate test/CN=Short-lived Root", EXT_CA, not_after=end)
    leaf = sign("short-leaf", "/O=certgate test/CN=short-leaf", EXT_CLIENT, ca=ca)
    store = store_with(t, [ca[0]])
    up, cg = env(t, store, workers=1)  # one worker: one cache
    ctx = ctx_for(leaf[0], leaf[1])
    res, resp = H.attempt(t, cg.port(), ctx, H.get_req("/echo?before=1"))
    check(res == "ok" and resp.status == 200, "before the anchor expired: %s %r" % (res, resp))
    check(time.time() < end - 1, "too slow: the first connection ended after the anchor expired")
    wait_until(end + 1.5)
    n = len(S.events(cg, "handshake_refused"))
    res, info = H.attempt(t, cg.port(), ctx_for(leaf[0], leaf[1]), H.get_req("/echo?after=1"))
    check(res == "refused", "after the anchor expired: got %s %r" % (res, info))
    refusal(cg, n, "expired anchor", "expired", ("expired",))
    targets = [q["target"] for q in up.requests()]
    check("/echo?after=1" not in targets, "the request reached the upstream")


# ---------------------------------------------------------------------------------------------
# item 1b: a resumed session is checked before its first request or relayed byte

def t_resumed_leaf_expired(name, version):
    def fn(t):
        """A leaf that expires between the first connection and the resumption of its session
        (http and tls relay): the resumed connection is closed before its first request or
        relayed byte, logged as a refusal (expired) and counted."""
        life = T(6)
        end = int(time.time() + life)
        leaf = sign("expiring-" + name, "/O=certgate test/CN=expiring", EXT_CLIENT,
                    ca=run_intermediate(), not_after=end)
        chain = chain_file(leaf[0], run_intermediate()[0])
        store = store_with(t)
        up, cg = env(t, store, relay=True)
        ctx = ctx_for(chain, leaf[1], version)
        hs = http_session(t, cg.port("https"), ctx)
        rs = relay_session(t, cg.port("relay"), ctx)
        check(time.time() < end - 0.5, "too slow: the sessions were made after the leaf expired")
        wait_until(end + 1.5)
        before = S.msum(S.metrics(cg), "certgate_handshakes_total", result="expired")
        n = len(S.events(cg, "handshake_refused"))
        res, info = resumed_http(t, cg.port("https"), ctx, hs, "after=1")
        check(res == "refused", "http: resumed after the leaf expired: %s %r" % (res, info))
        refusal(cg, n, "http resumption", "expired", ("expired",))
        n = len(S.events(cg, "handshake_refused"))
        res, info = resumed_relay(t, cg.port("relay"), ctx, rs, "relayed")
        check(res == "refused", "relay: resumed after the leaf expired: %s %r" % (res, info))
        refusal(cg, n, "relay resumption", "expired", ("expired",))
        after = S.msum(S.metrics(cg), "certgate_handshakes_total", result="expired")
        check(after >= before + 2, "refusals not counted: %s -> %s" % (before, after))
        check("/echo?after=1" not in [q["target"] for q in up.requests()],
              "the resumed request reached the upstream")
        relayed = b"".join(open(f, "rb").read() for f in up.files(".bin")
                           if os.path.basename(f).startswith("tcp-"))
        check(b"relayed" not in relayed, "the resumed relay's bytes reached the upstream")
    return fn


def t_resumed_valid(name, version):
    def fn(t):
        """A still-valid resumption is served (http 200, the relay echoes), and counted as
        resumed."""
        store = store_with(t)
        up, cg = env(t, store, relay=True)
        ctx = H.client_ctx("ecdsa")
        ctx.minimum_version = ctx.maximum_version = version
        hs = http_session(t, cg.port("https"), ctx)
        rs = relay_session(t, cg.port("relay"), ctx)
        res, resp = resumed_http(t, cg.port("https"), ctx, hs, "again=1")
        check(res == "ok" and resp.status == 200, "http resumption: %s %r" % (res, resp))
        res, info = resumed_relay(t, cg.port("relay"), ctx, rs, "again")
        check(res == "ok", "relay resumption: %s %r" % (res, info))
        ms = S.metrics(cg)
        check(S.msum(ms, "certgate_handshakes_total", result="resumed") >= 2,
              "resumptions not counted as resumed")
    return fn


def sessions_for_versions(t, cg, ctxs):
    out = {}
    for name, version in VERSIONS:
        out[name] = (http_session(t, cg.port("https"), ctxs[name]),
                     relay_session(t, cg.port("relay"), ctxs[name]))
    return out


def wait_reloaded(cg, before):
    deadline = time.time() + T(5)
    while time.time() < deadline:
        ms = S.metrics(cg)
        if S.mval(ms, "certgate_reload_total", source="watch", result="success") > before:
            return
        time.sleep(0.1)
    raise H.Failure("the change was not picked up: %s" % cg.tail(3))


def reload_count(cg):
    return S.mval(S.metrics(cg), "certgate_reload_total", source="watch", result="success")


def resumed_refused_all(t, cg, ctxs, sessions, what, result, words):
    for name, _ in VERSIONS:
        hs, rs = sessions[name]
        n = len(S.events(cg, "handshake_refused"))
        try:
            res, info = resumed_http(t, cg.port("https"), ctxs[name], hs, "after=" + name)
        except H.Failure:  # not resumed: a full handshake, which has to refuse too
            res, info = H.attempt(t, cg.port("https"), ctxs[name],
                                  H.get_req("/echo?after=" + name))
        check(res == "refused", "%s %s http: %s %r" % (what, name, res, info))
        refusal(cg, n, "%s %s http" % (what, name), result, words)
        n = len(S.events(cg, "handshake_refused"))
        try:
            res, info = resumed_relay(t, cg.port("relay"), ctxs[name], rs, "relay" + name)
        except H.Failure:
            res, info = H.attempt(t, cg.port("relay"), ctxs[name], b"relay" + name.encode())
        check(res == "refused", "%s %s relay: %s %r" % (what, name, res, info))
        refusal(cg, n, "%s %s relay" % (what, name), result, words)


def t_resumed_ca_removed(t):
    """The CA of a client's sessions leaves the common bundle (watch reload): resuming them
    (TLS 1.3 and 1.2, http and relay) is refused as untrusted."""
    other = sign("other-root", "/O=certgate test/CN=Other Root", EXT_CA)
    store = store_with(t)
    up, cg = env(t, store, relay=True)
    ctxs = {}
    for name, version in VERSIONS:
        ctxs[name] = H.client_ctx("ecdsa")
        ctxs[name].minimum_version = ctxs[name].maximum_version = version
    sessions = sessions_for_versions(t, cg, ctxs)
    before = reload_count(cg)
    with open(other[0]) as f:
        S.write_atomic(os.path.join(store, "common", "common.pem"), f.read())
    wait_reloaded(cg, before)
    resumed_refused_all(t, cg, ctxs, sessions, "CA removed", "untrusted", ("unknown issuer",))
    check(not any("after=" in q["target"] for q in up.requests()),
          "a request reached the upstream")


def t_resumed_crl_revokes(t):
    """A new CRL revokes the leaf of a client's sessions (watch reload): resuming them (TLS 1.3
    and 1.2, http and relay) is refused as revoked."""
    leaf = sign("revoked-later", "/O=certgate test/CN=revoked-later", EXT_CLIENT,
                ca=run_intermediate())
    chain = chain_file(leaf[0], run_intermediate()[0])
    crl0 = S.make_crl("trust-empty", [])
    crl1 = S.make_crl("trust-revoked", [leaf[0]])
    store = S.crl_store(t, crl0)
    up = t.upstream()
    ls = [H.listener("https", "http", up.http, client_auth="require"),
          H.listener("relay", "tls", up.tcp, client_auth="require")]
    cg = t.certgate("ecdsa", ls, extra={"ca_store": {"dir": store},
                                        "reload": {"debounce": "100ms", "poll_interval": "1h"}})
    ctxs = {name: ctx_for(chain, leaf[1], version) for name, version in VERSIONS}
    sessions = sessions_for_versions(t, cg, ctxs)
    before = reload_count(cg)
    S.write_atomic(os.path.join(store, "common", "crl.pem"), crl1)
    wait_reloaded(cg, before)
    resumed_refused_all(t, cg, ctxs, sessions, "revoked", "revoked", ("revoked",))


# ---------------------------------------------------------------------------------------------
# item 7: name constraints (SECURITY 28)

EXT_NC_CA = EXT_CA + ("nameConstraints=critical,permitted;DNS:example.com,"
                      "excluded;DNS:bar.example.com\n")


def nc_client(ca, tag, san, extra=""):
    leaf = sign("nc-" + tag, "/O=certgate test/CN=nc-" + tag,
                EXT_CLIENT + "subjectAltName=" + san + "\n" + extra, ca=ca)
    return ctx_for(chain_file(leaf[0], ca[0]), leaf[1])


def nc_ca(name, ext):
    return sign(name, "/O=certgate test/CN=" + name, ext, ca=run_root())


def t_name_constraints_wildcard(t):
    """An intermediate constrained to example.com minus bar.example.com: foo.example.com gets
    in, bar.example.com is refused (BoringSSL judges that), and *.example.com, which BoringSSL
    lets through although it covers bar.example.com, is refused by certgate."""
    ca = nc_ca("nc-ca", EXT_NC_CA)
    up, cg = env(t, store_with(t))
    S.accepted(t, cg, nc_client(ca, "foo", "DNS:foo.example.com"), "foo.example.com")
    n = len(S.events(cg, "handshake_refused"))
    res, info = H.attempt(t, cg.port(), nc_client(ca, "bar", "DNS:bar.example.com"))
    check(res == "refused", "bar.example.com (excluded): %s %r" % (res, info))
    refusal(cg, n, "excluded name")
    S.refused_by_certgate(t, cg, nc_client(ca, "wild", "DNS:*.example.com"), ("wildcard",),
                          "*.example.com under an excluded subtree")
    S.refused_by_certgate(t, cg, nc_client(ca, "wild2", "DNS:foo.example.com,DNS:*.example.com"),
                          ("wildcard",), "a wildcard as the second DNS name")


def t_name_constraints_malformed(t):
    """Malformed DNS names under a constrained CA (an empty label, an underscore, a leading
    hyphen: BoringSSL matches them by suffix) and a CA whose constraint is itself malformed (a
    wildcard in an excluded subtree, which BoringSSL silently never matches) are refused."""
    ca = nc_ca("nc-ca-m", EXT_NC_CA)
    bad_ca = nc_ca("nc-ca-bad", EXT_CA + "nameConstraints=critical,permitted;DNS:example.com,"
                   "excluded;DNS:*.bar.example.com\n")
    up, cg = env(t, store_with(t))
    for tag, san in (("empty", "DNS:foo..example.com"), ("under", "DNS:foo_x.example.com"),
                     ("hyphen", "DNS:-foo.example.com")):
        S.refused_by_certgate(t, cg, nc_client(ca, tag, san), ("malformed",), san)
    S.refused_by_certgate(t, cg, nc_client(bad_ca, "badca", "DNS:foo.bar.example.com"),
                          ("malformed",), "a wildcard in the CA's excluded subtree")


def t_name_constraints_in_leaf(t):
    """A client leaf that carries a nameConstraints extension itself is refused (BoringSSL
    accepts it)."""
    leaf = sign("nc-leaf", "/O=certgate test/CN=nc-leaf",
                EXT_CLIENT + "nameConstraints=permitted;DNS:example.com\n",
                ca=run_intermediate())
    up, cg = env(t, store_with(t))
    S.refused_by_certgate(t, cg, ctx_for(chain_file(leaf[0], run_intermediate()[0]), leaf[1]),
                          ("name constraints",), "a leaf with name constraints")
    S.accepted(t, cg, H.client_ctx("ecdsa"), "the run's client")


# ---------------------------------------------------------------------------------------------
# item 8: reasons an operator can act on

def t_reason_key_usage(t):
    """A leaf whose keyUsage lacks digitalSignature: the reason says key usage, not extended
    key usage."""
    leaf = sign("ku-leaf", "/O=certgate test/CN=ku-leaf",
                EXT_CLIENT.replace("digitalSignature", "keyEncipherment"), ca=run_intermediate())
    up, cg = env(t, store_with(t))
    ctx = ctx_for(chain_file(leaf[0], run_intermediate()[0]), leaf[1])
    n = len(S.events(cg, "handshake_refused"))
    res, info = H.attempt(t, cg.port(), ctx)
    check(res == "refused", "keyUsage without digitalSignature: %s %r" % (res, info))
    ev = refusal(cg, n, "key usage", "policy", ("key usage",))
    check("extended key usage" not in ev["reason"], "reason blames the EKU: %r" % ev["reason"])


def unusable_cas():
    """CAs that are in the bundle but cannot issue: (tag, ca, words of the reason)."""
    return [
        ("no-certsign", sign("ca-no-certsign", "/O=certgate test/CN=CA without keyCertSign",
                             EXT_CA.replace("keyCertSign,", "")), ("keycertsign",)),
        ("crit-ski", sign("ca-crit-ski", "/O=certgate test/CN=CA with critical SKI",
                          EXT_CA.replace("subjectKeyIdentifier=hash",
                                         "subjectKeyIdentifier=critical,hash")),
         ("critical", "subjectkeyidentifier", "2.5.29.14")),
        ("no-bc", sign("ca-no-bc", "/O=certgate test/CN=CA without basicConstraints",
                       EXT_CA.replace("basicConstraints=critical,CA:true\n", "")),
         ("basicconstraints",)),
    ]


def t_reason_unusable_issuer(t):
    """An issuer that is in the bundle but unusable (no keyCertSign, a critical
    SubjectKeyIdentifier, no basicConstraints) is named with its defect, not as an unknown
    issuer."""
    cas = unusable_cas()
    up, cg = env(t, store_with(t, [ca[0] for _, ca, _ in cas]))
    for tag, ca, words in cas:
        leaf = sign("leaf-of-" + tag, "/O=certgate test/CN=leaf-of-" + tag, EXT_CLIENT, ca=ca)
        n = len(S.events(cg, "handshake_refused"))
        res, info = H.attempt(t, cg.port(), ctx_for(leaf[0], leaf[1]))
        check(res == "refused", "%s: %s %r" % (tag, res, info))
        ev = refusal(cg, n, tag, "untrusted", ("cannot issue",))
        reason = ev["reason"].lower()
        check(any(w in reason for w in words) and "unknown issuer" not in reason,
              "%s: reason %r" % (tag, ev["reason"]))


def t_reason_unsupported_key(t):
    """An intermediate with a key type BoringSSL does not support (secp256k1): the reason says
    the key type is not supported, not that a key is under 2048 bits."""
    ca = sign("k1-ca", "/O=certgate test/CN=secp256k1 CA", EXT_CA, ca=run_root(),
              curve="secp256k1")
    leaf = sign("k1-leaf", "/O=certgate test/CN=k1-leaf", EXT_CLIENT, ca=ca)
    up, cg = env(t, store_with(t))
    n = len(S.events(cg, "handshake_refused"))
    res, info = H.attempt(t, cg.port(), ctx_for(chain_file(leaf[0], ca[0]), leaf[1]))
    check(res == "refused", "secp256k1 intermediate: %s %r" % (res, info))
    ev = refusal(cg, n, "unsupported key", None, ("key type",))
    check("2048" not in ev["reason"], "reason: %r" % ev["reason"])


def t_check_anchor_warnings(t):
    """`certgate check` warns about each bundle certificate that cannot issue client
    certificates, naming the file and the line of its BEGIN, and still exits 0; a good bundle
    gets no warning."""
    cas = unusable_cas()
    store = store_with(t)
    bundle = os.path.join(store, "common", "mixed.pem")
    lines = {}
    with open(bundle, "w") as out:
        line = 1
        out.write("# a comment line\n\n")
        line += 2
        for tag, ca, _ in cas:
            with open(run_root()[0]) as f:
                good = f.read()
            with open(ca[0]) as f:
                text = f.read()
            out.write(good)
            line += good.count("\n")
            lines[tag] = line
            out.write(text)
            line += text.count("\n")
    with open(os.path.join(store, "index.yml"), "w") as f:
        f.write("common:\n- common.pem\n- mixed.pem\n")
    up = t.upstream()
    cfg = H.make_config(t, "ecdsa", [H.listener("https", "http", up.http,
                                                client_auth="require")],
                        extra={"ca_store": {"dir": store}})
    path = os.path.join(t.dir, "check.yaml")
    with open(path, "w") as f:
        f.write(H.yaml_dump(cfg) + "\n")
    p = H.run_cmd([H.Opts.binary, "check", "-c", path])
    out = p.stdout + p.stderr
    check(p.returncode == 0, "check exit %d: %s" % (p.returncode, out[-400:]))
    warns = [l for l in out.splitlines() if l.startswith("warning:")]
    check(len(warns) == len(cas), "%d warnings, want %d: %s" % (len(warns), len(cas), warns))
    for tag, _, words in cas:
        want = "%s:%d:" % (bundle, lines[tag])
        hit = [w for w in warns if want in w]
        check(hit, "%s: no warning naming %s in %s" % (tag, want, warns))
        check(any(x in hit[0].lower() for x in words), "%s: warning %r" % (tag, hit[0]))
    check(not any("common.pem" in w for w in warns), "the good bundle was flagged: %s" % warns)


TESTS = [
    ("trust.cache_store_anchor_expired_full_handshake", t_cache_store_anchor_expired),
    ("trust.resumed_leaf_expired_tls13", t_resumed_leaf_expired("tls13", ssl.TLSVersion.TLSv1_3)),
    ("trust.resumed_leaf_expired_tls12", t_resumed_leaf_expired("tls12", ssl.TLSVersion.TLSv1_2)),
    ("trust.resumed_valid_tls13", t_resumed_valid("tls13", ssl.TLSVersion.TLSv1_3)),
    ("trust.resumed_valid_tls12", t_resumed_valid("tls12", ssl.TLSVersion.TLSv1_2)),
    ("trust.resumed_ca_removed", t_resumed_ca_removed),
    ("trust.resumed_crl_revokes", t_resumed_crl_revokes),
    ("trust.name_constraints_wildcard", t_name_constraints_wildcard),
    ("trust.name_constraints_malformed", t_name_constraints_malformed),
    ("trust.name_constraints_in_leaf", t_name_constraints_in_leaf),
    ("trust.reason_key_usage", t_reason_key_usage),
    ("trust.reason_unusable_issuer", t_reason_unusable_issuer),
    ("trust.reason_unsupported_key", t_reason_unsupported_key),
    ("trust.check_anchor_warnings", t_check_anchor_warnings),
]


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H, S
    H = harness
    if S is None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        S = __import__("test_security")
        S.register(harness)
    harness.add_tests(TESTS)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import run  # noqa: E402
    register(run)
    sys.exit(run.main())
