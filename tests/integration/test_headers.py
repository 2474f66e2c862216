#!/usr/bin/env python3
"""test_headers.py: what reaches the upstream of the client's request head (issue 9 items 2-4,
issue 11 item 4), in the group `hdr.`. run.py calls register(itself) to add them to its list;
this file also runs on its own:

    python3 tests/integration/test_headers.py --binary build/certgate [-k hdr.] [-v]

Real clients (Python ssl with raw request bytes, curl with --request-target and -H, `certgate
check`) against run.py's recording upstream; every test asserts what the upstream received.

Rule -> tests (SECURITY.md): 23 hdr.absolute_*; 24 hdr.underscore_*; 25 hdr.family_*,
hdr.tts_*; forwarded_headers hdr.forwarded_*; the check warning hdr.check_*.
"""

import base64
import os
import re
import ssl
import sys

H = None  # run.py's module, set by register()


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def mod(name):
    """Another test module of this directory, registered with the same harness."""
    m = __import__(name)
    m.register(H)
    return m


def hget(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


def one(t, port, ctx, raw, sni="localhost"):
    """One request on a fresh TLS connection: the status, or None when there was no answer."""
    s = H.tls_connect(t, port, ctx, sni=sni)
    err = H.safe_send(s, raw)
    check(err is None, "send: %s" % err)
    return H.read_response(H.Reader(s)).status


def by_target(up, n):
    reqs = up.wait_requests(n)
    check(len(reqs) == n, "upstream got %d requests, expected %d: %r"
          % (len(reqs), n, [q["target"] for q in reqs]))
    return {q["target"]: q for q in reqs}


# ---------------------------------------------------------------------------------------------
# issue 9 item 2, SECURITY 23: the absolute-form authority is the request's host

def t_absolute_origin_form(t):
    """Absolute-form is forwarded in origin-form with Host set to its authority (RFC 9112
    3.2.2): the client's Host is ignored, an empty path becomes "/", OPTIONS with an empty path
    becomes "*", and the scheme is matched in any case."""
    up, cg, ctx = H.http_env(t)
    port = cg.port()
    cases = [
        ("GET http://localhost/abs?q=1 HTTP/1.1\r\nHost: localhost\r\n\r\n", "/abs?q=1",
         "localhost"),
        ("GET HTTPS://LOCALHOST:%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % port, "/",
         "LOCALHOST:%d" % port),
        ("GET https://localhost?only=query HTTP/1.1\r\nHost: localhost\r\n\r\n", "/?only=query",
         "localhost"),
        ("OPTIONS http://localhost:%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % port, "*",
         "localhost:%d" % port),
        ("OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n", "*", "localhost"),
        ("GET /plain HTTP/1.1\r\nHost: localhost\r\n\r\n", "/plain", "localhost"),
    ]
    s = H.tls_connect(t, port, ctx)
    r = H.Reader(s)
    for raw, _, _ in cases:
        s.sendall(raw.encode())
        resp = H.read_response(r, "OPTIONS" if raw.startswith("OPTIONS") else "GET")
        check(resp.status == 200, "%r: status %d" % (raw.split("\r\n")[0], resp.status))
    got = [(q["target"], hget(q["headers"], "host")) for q in up.wait_requests(len(cases))]
    want = [(target, [host]) for _, target, host in cases]
    check(got == want, "upstream saw %r, expected %r" % (got, want))
    line = up.received().split(b"\r\n", 1)[0]
    check(line == b"GET /abs?q=1 HTTP/1.1", "first request line upstream: %r" % line)


def t_absolute_tenant(t):
    """Tenant a's connection (SNI a.example.com): an absolute-form target naming tenant b is
    421 even with Host a, and never reaches the upstream; one naming a is served with Host a
    even when Host says b."""
    TT = mod("test_tenancy")
    up, cg = TT.env(t)
    actx = TT.ctx_for("a-client")
    port = cg.port()
    raw = b"GET http://b.example.com/x HTTP/1.1\r\nHost: a.example.com\r\n\r\n"
    st = one(t, port, actx, raw, sni="a.example.com")
    check(st == 421, "absolute-form naming tenant b on a's connection: %d" % st)
    raw = b"GET http://B.Example.COM./x HTTP/1.1\r\nHost: a.example.com\r\n\r\n"
    st = one(t, port, actx, raw, sni="a.example.com")
    check(st == 421, "absolute-form naming tenant b (case, trailing dot): %d" % st)
    raw = b"GET http://a.example.com/mine?z HTTP/1.1\r\nHost: b.example.com\r\n\r\n"
    st = one(t, port, actx, raw, sni="a.example.com")
    check(st == 200, "absolute-form naming tenant a, Host b: %d" % st)
    reqs = up.wait_requests(1)
    check([(q["target"], hget(q["headers"], "host")) for q in reqs] ==
          [("/mine?z", ["a.example.com"])], "upstream saw %r" % reqs)


def t_absolute_curl(t):
    """curl --request-target: without tenancy, a target naming another host than the SNI is
    421 on a verifying listener; one naming the SNI's host arrives in origin-form."""
    up, cg, _ = H.http_env(t)
    port = cg.port()
    p = H.curl(t, port, "/", "ecdsa", extra=["--request-target", "http://other.example/x"])
    check(p.stdout.strip().endswith("421"), "other host: %r %r" % (p.stdout[-40:], p.stderr))
    p = H.curl(t, port, "/", "ecdsa",
               extra=["--request-target", "http://localhost:%d/curl?a=b" % port])
    check(p.stdout.strip().endswith("200"), "same host: %r %r" % (p.stdout[-40:], p.stderr))
    reqs = up.wait_requests(1)
    check([(q["target"], hget(q["headers"], "host")) for q in reqs] ==
          [("/curl?a=b", ["localhost:%d" % port])], "upstream saw %r" % reqs)


def t_absolute_refused(t):
    """Userinfo, a scheme other than http/https, "*" with GET, a fragment, an empty or bad
    authority, authority-form without CONNECT, and CONNECT are 400; nothing reaches the
    upstream."""
    up, cg, ctx = H.http_env(t)
    port = cg.port()
    targets = [
        ("GET", "http://user@localhost/x"),
        ("GET", "http://localhost@other.example/x"),
        ("GET", "http://user:pw@localhost/x"),
        ("GET", "ftp://localhost/x"),
        ("GET", "ws://localhost/x"),
        ("GET", "httpx://localhost/x"),
        ("GET", "http:/localhost/x"),
        ("GET", "http:///x"),
        ("GET", "http://:443/x"),
        ("GET", "http://localhost:8x/x"),
        ("GET", "http://[::1]:x/x"),
        ("GET", "*"),
        ("POST", "*"),
        ("GET", "/x#frag"),
        ("GET", "http://localhost/x#frag"),
        ("GET", "localhost:443"),
        ("CONNECT", "localhost:443"),
    ]
    for method, target in targets:
        raw = "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n" % (method, target)
        st = one(t, port, ctx, raw.encode())
        check(st == 400, "%s %s: %d" % (method, target, st))
    check(up.requests() == [], "upstream got %r" % up.requests())


# ---------------------------------------------------------------------------------------------
# issue 9 item 3, SECURITY 24: header names with "_"

DANGEROUS = [
    ("Transfer_Encoding", "chunked"),
    ("Content_Length", "5"),
    ("X_Forwarded_Client_Cert", "Hash=00"),
    ("X_Forwarded_Tls_Client_Cert", "MIIB"),
    ("x_amzn_mtls_clientcert", "MIIB"),
    ("Ssl_Client_Cert", "MIIB"),
    ("Client_Cert", ":AAAA:"),
]


def t_underscore_refused(t, mode):
    """Transfer_Encoding: chunked beside a Content-Length body (a CGI backend reads it as TE),
    Content_Length and underscore spellings of client-cert headers are 400 whatever
    headers_with_underscores says, and nothing reaches the upstream."""
    kw = {} if mode == "drop" else {"headers_with_underscores": mode}  # drop is the default
    up, cg, ctx = H.http_env(t, **kw)
    port = cg.port()
    smuggle = (b"POST /body HTTP/1.1\r\nHost: localhost\r\nTransfer_Encoding: chunked\r\n"
               b"Content-Length: 33\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nX: y\r\n\r\n")
    st = one(t, port, ctx, smuggle)
    check(st == 400, "Transfer_Encoding + Content-Length body: %d" % st)
    for name, value in DANGEROUS:
        st = one(t, port, ctx, H.get_req("/echo", extra="%s: %s\r\n" % (name, value)))
        check(st == 400, "%s (%s): %d" % (name, mode, st))
    p = H.curl(t, port, "/echo", "ecdsa", extra=["-H", "X_Forwarded_Client_Cert: spoof"])
    check(p.stdout.strip().endswith("400"), "curl: %r %r" % (p.stdout[-40:], p.stderr))
    check(up.requests() == [], "upstream got %r" % up.requests())


def t_underscore_dropped(t):
    """By default (drop, as nginx) X_Custom is not forwarded; X-Custom is."""
    up, cg, ctx = H.http_env(t)
    st = one(t, cg.port(), ctx, H.get_req("/echo", extra="X_Custom: 1\r\nX-Custom-Ok: 2\r\n"))
    check(st == 200, "status %d" % st)
    hs = up.wait_requests(1)[0]["headers"]
    check(hget(hs, "x_custom") == [] and hget(hs, "x-custom-ok") == ["2"],
          "upstream headers %r" % hs)
    check(b"X_Custom" not in up.received(), "X_Custom reached the upstream")


def t_underscore_forwarded(t):
    """headers_with_underscores: forward passes X_Custom unchanged (curl -H)."""
    up, cg, _ = H.http_env(t, headers_with_underscores="forward")
    p = H.curl(t, cg.port(), "/echo", "ecdsa", extra=["-H", "X_Custom: 1"])
    check(p.stdout.strip().endswith("200"), "curl: %r %r" % (p.stdout[-40:], p.stderr))
    hs = up.wait_requests(1)[0]["headers"]
    check(hget(hs, "x_custom") == ["1"], "upstream headers %r" % hs)


# ---------------------------------------------------------------------------------------------
# issue 9 item 4, SECURITY 25: every client-certificate header

FAMILY = [
    "X-Forwarded-Tls-Client-Cert", "x-forwarded-tls-client-cert-info", "X-SSL-Client-Cert",
    "X-SSL-Client-Verify", "X-SSL-Client-S-DN", "ssl-client-cert", "X-SSL-Cert",
    "X-Client-Verify", "X-Client-DN", "X-Amzn-Mtls-Clientcert", "X-AMZN-MTLS-CLIENTCERT-LEAF",
    "X-ARR-ClientCert", "X-Client-Cert", "Client-Cert", "Client-Cert-Chain",
    "X-Forwarded-Client-Cert", "X-Client-TLS-Info", "Cf-Client-Cert-Sha256", "Tls-Client-Id",
]
STRIPPED = ["X-Site-Identity", "X-INTERNAL-USER"]


def family_removed(t, names, **lkw):
    up, cg, ctx = H.http_env(t, **lkw)
    extra = "".join("%s: spoof-%d\r\n%s: spoof-%d\r\n" % (n, i, n.lower(), i)
                    for i, n in enumerate(names))
    st = one(t, cg.port(), ctx, H.get_req("/echo", extra=extra + "X-Kept: yes\r\n"))
    check(st == 200, "status %d" % st)
    hs = up.wait_requests(1)[0]["headers"]
    check(b"spoof" not in up.received(), "a client copy reached the upstream: %r" % hs)
    check(len(hget(hs, "x-forwarded-client-cert")) == 1, "certgate's XFCC: %r" % hs)
    check(hget(hs, "x-kept") == ["yes"], "an ordinary header was lost: %r" % hs)


def t_family_removed(t):
    """Every family member, in mixed case and twice, never reaches the upstream; certgate's
    XFCC does, once, and an ordinary header is kept."""
    family_removed(t, FAMILY)


def t_strip_headers(t):
    """The listener's strip_headers (one written x_internal_user in the config) are removed
    in any case, beside the family."""
    family_removed(t, FAMILY + STRIPPED, strip_headers=["X-Site-Identity", "x_internal_user"])


def t_family_forward_only(t):
    """forward_only with a client certificate: the listener's own header is the single
    exception; Traefik's header and the others are still removed."""
    up, cg, ctx = H.http_env(t, forward_client_cert="forward_only")
    extra = ("X-Forwarded-Client-Cert: By=upstream-hop\r\n"
             "X-Forwarded-Tls-Client-Cert: spoof\r\nX-SSL-Client-Verify: SUCCESS\r\n")
    st = one(t, cg.port(), ctx, H.get_req("/echo", extra=extra))
    check(st == 200, "status %d" % st)
    hs = up.wait_requests(1)[0]["headers"]
    check(hget(hs, "x-forwarded-client-cert") == ["By=upstream-hop"], "own header: %r" % hs)
    check(hget(hs, "x-forwarded-tls-client-cert") == [] and
          hget(hs, "x-ssl-client-verify") == [], "other family members kept: %r" % hs)


def tts_from_proxy_headers(headers):
    """A copy of The Things Stack's rule (pkg/auth/mtls/proxy_headers.go FromProxyHeaders):
    x-forwarded-client-cert first (split on ';', first Chain=, trim quotes and backslashes,
    path-unescape, first PEM block); when absent, Traefik's x-forwarded-tls-client-cert (first
    ','-separated element wrapped in PEM armour). Returns the leaf DER or None."""
    import urllib.parse
    xfcc = hget(headers, "x-forwarded-client-cert")
    if xfcc and xfcc[0]:
        for part in xfcc[0].split(";"):
            if part.startswith("Chain="):
                v = urllib.parse.unquote(part[len("Chain="):].strip("\"\\"))
                m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", v, re.S)
                return ssl.PEM_cert_to_DER_cert(m.group(0)) if m else None
        return None
    traefik = hget(headers, "x-forwarded-tls-client-cert")
    if traefik and traefik[0]:
        return base64.b64decode(traefik[0].split(",")[0])
    return None


def victim():
    """The run's client certificate: the gateway a spoofer would pose as."""
    with open(os.path.join(H.Opts.pki["ecdsa"], "client.crt")) as f:
        pem = f.read()
    der = ssl.PEM_cert_to_DER_cert(pem)
    return der, base64.b64encode(der).decode()


def t_tts_traefik_spoof(t):
    """client_auth optional, a client WITHOUT a certificate sends Traefik's
    X-Forwarded-Tls-Client-Cert holding a gateway's certificate (raw request and curl -H): the
    upstream gets neither it nor any XFCC, so The Things Stack's rule finds no certificate.
    With a certificate, the rule finds the client's own leaf through certgate's XFCC."""
    up, cg, ctx = H.http_env(t, client_auth="optional")
    der, b64 = victim()
    noctx = H.client_ctx("ecdsa", cert=None)
    port = cg.port()
    st = one(t, port, noctx, H.get_req("/echo?raw", extra="X-Forwarded-Tls-Client-Cert: %s\r\n"
                                       % b64))
    check(st == 200, "no certificate: %d" % st)
    p = H.curl(t, port, "/echo?curl", "ecdsa", cert=None,
               extra=["-H", "X-Forwarded-Tls-Client-Cert: %s" % b64])
    check(p.stdout.strip().endswith("200"), "curl: %r %r" % (p.stdout[-40:], p.stderr))
    reqs = by_target(up, 2)
    for target in ("/echo?raw", "/echo?curl"):
        hs = reqs[target]["headers"]
        check(tts_from_proxy_headers(hs) is None,
              "%s: The Things Stack's rule found a certificate in %r" % (target, hs))
    check(b64[:40].encode() not in up.received(), "the spoofed certificate reached the upstream")
    # With the client's certificate, certgate's XFCC is what the rule reads.
    other = H.client_ctx("ecdsa")
    st = one(t, port, other, H.get_req("/echo?cert", extra="X-Forwarded-Tls-Client-Cert: AAAA\r\n"))
    check(st == 200, "with a certificate: %d" % st)
    hs = by_target(up, 3)["/echo?cert"]["headers"]
    check(tts_from_proxy_headers(hs) == der, "the rule did not find the client's leaf in %r" % hs)
    st = one(t, port, noctx, H.get_req("/echo?u", extra="X-Forwarded-Tls-Client-Cert: %s\r\n"
                                       "x_forwarded_tls_client_cert: %s\r\n" % (b64, b64)))
    check(st == 400, "underscore spelling, no certificate: %d" % st)


def t_check_warns(t):
    """certgate check warns (exit 0) for each http listener that forwards a client's header
    (forward_only, append_forward, always_forward_only) while client_auth is not require, and
    for no other."""
    up = "%s:%d" % (H.HOST, H.free_port())
    ls = [
        H.listener("fo_opt", "http", up, client_auth="optional", forward_client_cert="forward_only"),
        H.listener("af_opt", "http", up, client_auth="optional",
                   forward_client_cert="append_forward"),
        H.listener("afo_none", "http", up, client_auth="none",
                   forward_client_cert="always_forward_only"),
        H.listener("fo_req", "http", up, client_auth="require", forward_client_cert="forward_only"),
        H.listener("set_opt", "http", up, client_auth="optional"),
    ]
    path = H.write_config(t, H.yaml_dump(H.make_config(t, "ecdsa", ls)) + "\n")
    p = H.run_cmd([H.Opts.binary, "check", "-c", path], timeout=T(20))
    check(p.returncode == 0, "check exit %d: %s" % (p.returncode, p.stderr[-300:]))
    warned = set(re.findall(r"warning: listener (\S+) forwards a client's", p.stderr))
    check(warned == {"fo_opt", "af_opt", "afo_none"}, "warned for %r: %s" % (warned, p.stderr))
    check(re.search(r"certgate\.yaml:\d+: warning: listener fo_opt", p.stderr),
          "no file:line in %r" % p.stderr)


def t_check_strip_headers_error(t):
    """An invalid strip_headers token is a configuration error naming FILE:LINE:COL (exit 2)."""
    up = "%s:%d" % (H.HOST, H.free_port())
    for bad, word in (("bad name", "expected a header name"), ("host", "cannot be stripped")):
        cfg = H.make_config(t, "ecdsa", [H.listener("l", "http", up, strip_headers=[bad])])
        path = H.write_config(t, H.yaml_dump(cfg) + "\n")
        p = H.run_cmd([H.Opts.binary, "check", "-c", path], timeout=T(20))
        check(p.returncode == 2, "%r: exit %d" % (bad, p.returncode))
        check(re.search(r"certgate\.yaml:\d+:\d+: invalid value .*strip_headers: .*" + word,
                        p.stderr), "%r: %s" % (bad, p.stderr))


# ---------------------------------------------------------------------------------------------
# issue 11 item 4: X-Forwarded-For / -Proto / Forwarded

SPOOF_FWD = ("X-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7, 8.8.8.8\r\n"
             "X-Forwarded-Proto: http\r\nForwarded: for=6.6.6.6;proto=http\r\n")


def t_forwarded_set(t):
    """Default set: client copies (any case, twice, and X_Forwarded_For under forward) are
    removed; the upstream sees X-Forwarded-For: 127.0.0.1 and X-Forwarded-Proto: https, once,
    also when Connection names them."""
    up, cg, ctx = H.http_env(t, headers_with_underscores="forward")
    extra = SPOOF_FWD + "X_Forwarded_For: 9.9.9.9\r\nConnection: X-Forwarded-For, X-Forwarded-Proto\r\n"
    st = one(t, cg.port(), ctx, H.get_req("/echo", extra=extra))
    check(st == 200, "status %d" % st)
    hs = up.wait_requests(1)[0]["headers"]
    check(hget(hs, "x-forwarded-for") == ["127.0.0.1"], "X-Forwarded-For: %r" % hs)
    check(hget(hs, "x-forwarded-proto") == ["https"], "X-Forwarded-Proto: %r" % hs)
    check(hget(hs, "forwarded") == [] and hget(hs, "x_forwarded_for") == [], "copies: %r" % hs)


def t_forwarded_append(t):
    """append: the incoming X-Forwarded-For copies, joined, then the client address (nginx's
    $proxy_add_x_forwarded_for); none incoming gives the address alone (curl)."""
    up, cg, ctx = H.http_env(t, forwarded_headers="append")
    st = one(t, cg.port(), ctx, H.get_req("/echo?spoof", extra=SPOOF_FWD))
    check(st == 200, "status %d" % st)
    p = H.curl(t, cg.port(), "/echo?curl", "ecdsa")
    check(p.stdout.strip().endswith("200"), "curl: %r %r" % (p.stdout[-40:], p.stderr))
    reqs = by_target(up, 2)
    hs = reqs["/echo?spoof"]["headers"]
    check(hget(hs, "x-forwarded-for") == ["6.6.6.6, 7.7.7.7, 8.8.8.8, 127.0.0.1"],
          "appended X-Forwarded-For: %r" % hs)
    check(hget(hs, "x-forwarded-proto") == ["https"], "X-Forwarded-Proto: %r" % hs)
    check(hget(hs, "forwarded") == ["for=6.6.6.6;proto=http"], "Forwarded: %r" % hs)
    hs = reqs["/echo?curl"]["headers"]
    check(hget(hs, "x-forwarded-for") == ["127.0.0.1"], "no incoming copy: %r" % hs)


def t_forwarded_off(t):
    """off: client copies pass unchanged and nothing is added."""
    up, cg, ctx = H.http_env(t, forwarded_headers="off")
    st = one(t, cg.port(), ctx, H.get_req("/echo?spoof", extra=SPOOF_FWD))
    check(st == 200, "status %d" % st)
    st = one(t, cg.port(), ctx, H.get_req("/echo?none"))
    check(st == 200, "status %d" % st)
    reqs = by_target(up, 2)
    hs = reqs["/echo?spoof"]["headers"]
    check(hget(hs, "x-forwarded-for") == ["6.6.6.6", "7.7.7.7, 8.8.8.8"] and
          hget(hs, "x-forwarded-proto") == ["http"] and
          hget(hs, "forwarded") == ["for=6.6.6.6;proto=http"], "copies changed: %r" % hs)
    hs = reqs["/echo?none"]["headers"]
    check(hget(hs, "x-forwarded-for") == [] and hget(hs, "x-forwarded-proto") == [],
          "added: %r" % hs)


def t_forwarded_not_on_tcp(t):
    """forwarded_headers on a tcp listener is a configuration error (exit 2, FILE:LINE:COL)."""
    cfg = H.make_config(t, "ecdsa", [H.listener("l", "tcp", "%s:%d" % (H.HOST, H.free_port()),
                                                forwarded_headers="set")])
    path = H.write_config(t, H.yaml_dump(cfg) + "\n")
    p = H.run_cmd([H.Opts.binary, "check", "-c", path], timeout=T(20))
    check(p.returncode == 2 and re.search(r":\d+:\d+: listener \"l\": forwarded_headers is only "
                                          r"for http listeners", p.stderr),
          "exit %d: %s" % (p.returncode, p.stderr))


def T(s):
    return H.T(s)


TESTS = [
    ("hdr.absolute_form_forwarded_in_origin_form", t_absolute_origin_form),
    ("hdr.absolute_form_authority_is_the_tenant_check", t_absolute_tenant),
    ("hdr.absolute_form_curl_request_target", t_absolute_curl),
    ("hdr.absolute_form_bad_targets_400", t_absolute_refused),
    ("hdr.underscore_framing_and_cert_names_400_drop",
     lambda t: t_underscore_refused(t, "drop")),
    ("hdr.underscore_framing_and_cert_names_400_forward",
     lambda t: t_underscore_refused(t, "forward")),
    ("hdr.underscore_names_dropped_by_default", t_underscore_dropped),
    ("hdr.underscore_names_forwarded_when_asked", t_underscore_forwarded),
    ("hdr.family_every_client_cert_header_removed", t_family_removed),
    ("hdr.family_strip_headers_removed", t_strip_headers),
    ("hdr.family_forward_only_keeps_only_its_own", t_family_forward_only),
    ("hdr.tts_traefik_header_spoof_without_certificate", t_tts_traefik_spoof),
    ("hdr.check_warns_forwarding_without_require", t_check_warns),
    ("hdr.check_strip_headers_invalid_token", t_check_strip_headers_error),
    ("hdr.forwarded_set_default", t_forwarded_set),
    ("hdr.forwarded_append", t_forwarded_append),
    ("hdr.forwarded_off", t_forwarded_off),
    ("hdr.forwarded_headers_only_on_http", t_forwarded_not_on_tcp),
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
