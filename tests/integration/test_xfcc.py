#!/usr/bin/env python3
"""test_xfcc.py: integration tests of the forwarded client-certificate header (issue #3), in the
group `xfcc.`. run.py calls register(itself) to add them to its list; this file also runs on its
own:

    python3 tests/integration/test_xfcc.py --binary build/certgate [-k xfcc.] [-v]

What the recording upstream received is asserted exactly:
- every forward_client_cert mode x client_cert_header format, with and without a client
  certificate, with and without spoofed incoming headers in every spelling;
- Envoy's XFCC format reproduced independently from the test certificates with the openssl CLI
  (hash of the DER, url-encoded PEM, RFC 2253 subject, By from the server's URI SAN);
- consumer-side parsers (The Things Stack's way, and a quote-aware one) on hostile certificates
  and on a 5-certificate chain of 4096-bit RSA keys;
- resumed sessions (TLS 1.2 and 1.3 tickets, openssl s_client -sess_out/-sess_in and Python
  ssl session=) forward the same header as the full handshake.
"""

import atexit
import base64
import hashlib
import os
import re
import ssl
import subprocess
import sys
import urllib.parse

H = None  # run.py's module, set by register()

MODES = ("sanitize", "forward_only", "append_forward", "sanitize_set", "always_forward_only")
FORMATS = ("xfcc", "rfc9440", "pem")
OWN = {
    "xfcc": ("x-forwarded-client-cert",),
    "rfc9440": ("client-cert", "client-cert-chain"),
    "pem": ("x-ssl-client-cert",),
}
CC_NAMES = ("x-forwarded-client-cert", "client-cert", "client-cert-chain", "x-ssl-client-cert")
_CACHE = {}


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


def openssl(*args, data=None):
    p = subprocess.run(["openssl"] + list(args), input=data, capture_output=True, timeout=60)
    check(p.returncode == 0, "openssl %s: %s" % (args[0], p.stderr.decode()[-300:]))
    return p.stdout


# --- certificates, computed independently of certgate ---------------------------------------

def pem_blocks(text):
    return re.findall(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----\n", text,
                      re.S)


def read_chain(path):
    """The PEM blocks of a file, each normalised by `openssl x509` (64 columns, final LF)."""
    with open(path) as f:
        blocks = pem_blocks(f.read())
    return [openssl("x509", data=b.encode()).decode() for b in blocks]


def der(pem):
    return openssl("x509", "-outform", "DER", data=pem.encode())


def subject_rfc2253(pem):
    out = openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253", data=pem.encode())
    out = out.decode("latin-1")
    check(out.startswith("subject="), "openssl -subject said %r" % out)
    return out[len("subject="):].rstrip("\n")


def sans(pem):
    """(URI SANs, DNS SANs) as the openssl CLI prints them (one line per value expected)."""
    p = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"],
                       input=pem.encode(), capture_output=True, timeout=30)
    text = p.stdout.decode("latin-1")
    body = text.split("\n", 1)[1] if "\n" in text else ""
    uris = re.findall(r"URI:([^,\n]*)", body)
    dns = re.findall(r"DNS:([^,\n]*)", body)
    return uris, dns


def envoy_pem_encode(pem):
    """Envoy's url-encoding of PEM: exactly \\n, space, +, / and =."""
    out = pem.replace("\n", "%0A").replace(" ", "%20").replace("+", "%2B")
    return out.replace("/", "%2F").replace("=", "%3D")


def nginx_escape(pem):
    """nginx's $ssl_client_escaped_cert (ngx_escape_uri, NGX_ESCAPE_URI_COMPONENT)."""
    keep = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    return "".join(chr(c) if c in keep else "%%%02X" % c for c in pem.encode())


def by_uris(alg):
    with open(os.path.join(H.Opts.pki[alg], "server-leaf.crt")) as f:
        return sans(f.read())[0]


def contract_form(raw, subject=False):
    """How CONTRACT section 5 writes a By, Subject, URI or DNS value: as Envoy does (Subject
    quoted, the others raw) unless it holds '"', ';', a control byte, a byte >= 0x80, (Subject)
    an escaped ',' before a key ("\\,By=") or (not Subject) ',' or ' '; then quoted, with those
    bytes, '%' and '\\' percent-encoded."""
    def special(c):
        return c in '"%;\\,' or ord(c) < 0x20 or ord(c) >= 0x7f or (not subject and c == " ")
    forges = subject and re.search(r"(?<!\\)(?:\\\\)*\\,[ \t]*[A-Za-z]+=", raw)
    if not forges and not any(c in '";' or ord(c) < 0x20 or ord(c) >= 0x7f or
                              (not subject and c in ", ") for c in raw):
        return '"%s"' % raw if subject else raw
    return '"%s"' % "".join("%%%02X" % ord(c) if special(c) else c for c in raw)


def envoy_xfcc(chain, by, details=("cert", "chain", "subject", "uri", "dns")):
    """Envoy's XFCC element for a client chain (list of PEM, leaf first), from the openssl CLI."""
    leaf = chain[0]
    parts = ["By=" + u for u in by]
    parts.append("Hash=" + hashlib.sha256(der(leaf)).hexdigest())
    if "cert" in details:
        parts.append('Cert="%s"' % envoy_pem_encode(leaf))
    if "chain" in details:
        parts.append('Chain="%s"' % "".join(envoy_pem_encode(c) for c in chain))
    if "subject" in details:
        parts.append('Subject="%s"' % subject_rfc2253(leaf))
    uris, dns = sans(leaf)
    if "uri" in details:
        parts += ["URI=" + u for u in uris] or ["URI="]
    if "dns" in details:
        parts += ["DNS=" + d for d in dns]
    return ";".join(parts)


def rfc9440(chain):
    out = [("client-cert", ":%s:" % base64.b64encode(der(chain[0])).decode())]
    if len(chain) > 1:
        out.append(("client-cert-chain", ", ".join(
            ":%s:" % base64.b64encode(der(c)).decode() for c in chain[1:])))
    return out


def ours(fmt, chain, by):
    if fmt == "xfcc":
        return [("x-forwarded-client-cert", envoy_xfcc(chain, by))]
    if fmt == "rfc9440":
        return rfc9440(chain)
    return [("x-ssl-client-cert", nginx_escape(chain[0]))]


# --- consumer-side parsers ----------------------------------------------------------------------

def tts_leaf(value):
    """The Things Stack's way (pkg/auth/mtls/proxy_headers.go): split on ';', first `Chain=`,
    trim quotes and backslashes, path-unescape, first PEM block -> DER of the leaf."""
    for part in value.split(";"):
        if part.startswith("Chain="):
            v = part[len("Chain="):].strip("\"\\")
            v = urllib.parse.unquote(v)
            m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", v, re.S)
            if not m:
                return None
            return ssl.PEM_cert_to_DER_cert(m.group(0))
    return None


def xfcc_parse(value):
    """A quote-aware XFCC parser: a list of elements (split on ',' outside quotes), each a list
    of (key, value) (split on ';' outside quotes; quoted values unescaped: \\x -> x)."""
    elements, pairs = [], []
    i, n = 0, len(value)
    while i < n:
        j = value.find("=", i)
        check(j >= 0, "xfcc_parse: key without '=' at %d: %r" % (i, value[i:i + 40]))
        key = value[i:j]
        check(re.fullmatch(r"[A-Za-z]+", key), "xfcc_parse: bad key %r" % key)
        i = j + 1
        if i < n and value[i] == '"':
            i += 1
            out = []
            while True:
                check(i < n, "xfcc_parse: unterminated quote for %s" % key)
                c = value[i]
                if c == "\\":
                    check(i + 1 < n, "xfcc_parse: dangling backslash")
                    out.append(value[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    out.append(c)
                    i += 1
            val = "".join(out)
            check(i == n or value[i] in ";,", "xfcc_parse: junk after quoted %s: %r"
                  % (key, value[i:i + 20]))
        else:
            k = i
            while k < n and value[k] not in ";,":
                k += 1
            val = value[i:k]
            i = k
        pairs.append((key, val))
        if i < n and value[i] == ",":
            elements.append(pairs)
            pairs = []
        i += 1 if i < n else 0
    elements.append(pairs)
    return elements


# --- the PKI of these tests -----------------------------------------------------------------------

EXT_CLIENT = ("basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=clientAuth\n")

HOSTILE_CNF = r"""[ req ]
distinguished_name = dn
prompt = no
string_mask = utf8only
utf8 = yes
[ dn ]
O = evil;Cert=\"x\",Chain=y\\z
CN = dev;Subject=\"a\",b=c\r\nX-Injected: 1 \xc3\xa9 \xc3\xbc
+OU = multi=valued;x
[ ext ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = @alt
[ alt ]
URI.1 = spiffe://certgate.demo/dev;Cert=\"x\",Chain=y\\z
URI.2 = urn:a\r\nX-Injected: 2
DNS.1 = a;b,c=d\".example.com
DNS.2 = plain.example.com
"""
# What the config above puts into the certificate (the openssl config parser unescapes).
HOSTILE_URIS = ['spiffe://certgate.demo/dev;Cert="x",Chain=y\\z', "urn:a\r\nX-Injected: 2"]
HOSTILE_DNS = ['a;b,c=d".example.com', "plain.example.com"]


def xdir():
    d = os.path.join(H.Opts.tmp, "xfcc-pki")
    os.makedirs(d, exist_ok=True)
    return d


def sign_leaf(name, subj_args, ext, alg="ecdsa", config=None):
    """A client leaf signed by run.py's intermediate; returns (chain file, key file)."""
    key = "%s:%s" % (alg, name)
    if key in _CACHE:
        return _CACHE[key]
    pki = H.Opts.pki[alg]
    d = xdir()
    k, csr, crt, extf = (os.path.join(d, "%s-%s.%s" % (alg, name, s))
                         for s in ("key", "csr", "crt", "ext"))
    with open(extf, "w") as f:
        f.write(ext)
    gen = (["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"] if alg == "rsa"
           else ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
    openssl(*(gen + ["-out", k]))
    req = ["req", "-new", "-key", k, "-out", csr]
    req += (["-config", config] if config else []) + subj_args
    openssl(*req)
    x = ["x509", "-req", "-in", csr, "-CA", os.path.join(pki, "intermediate.crt"), "-CAkey",
         os.path.join(pki, "intermediate.key"), "-set_serial", str(5000 + len(_CACHE)),
         "-days", "30", "-sha256", "-extfile", config or extf, "-out", crt]
    if config:
        x += ["-extensions", "ext"]
    openssl(*x)
    chain = os.path.join(d, "%s-%s-chain.crt" % (alg, name))
    with open(crt) as a, open(os.path.join(pki, "intermediate.crt")) as b, \
            open(chain, "w") as out:
        out.write(a.read() + b.read())
    _CACHE[key] = (chain, k)
    return chain, k


def san_client():
    return sign_leaf("san", ["-subj", "/O=certgate demo/CN=san-client"], EXT_CLIENT +
                     "subjectAltName=URI:spiffe://certgate.demo/dev/1,DNS:dev1.example.com,"
                     "DNS:dev1.example.net\n")


def hostile_client():
    cnf = os.path.join(xdir(), "hostile.cnf")
    text = HOSTILE_CNF.replace("\\xc3\\xa9", "\u00e9").replace("\\xc3\\xbc", "\u00fc")
    with open(cnf, "w", encoding="utf-8") as f:
        f.write(text)
    return sign_leaf("hostile", ["-utf8"], "", config=cnf)


BIG_NAMES = ["root", "i1", "i2", "i3", "leaf"]
BIG_TEST = "xfcc.consumer_parsers_5_cert_rsa4096_chain"
_KEYGEN = []


def big_keygen_start():
    """Starts the five RSA 4096 key generations in the background (they take seconds), once,
    and only when the big-chain test is selected, so that they overlap the other tests."""
    if _KEYGEN or "big" in _CACHE:
        return
    ks = [a for i, a in enumerate(sys.argv[1:]) if sys.argv[i] == "-k"]
    ks += [a[2:] for a in sys.argv[1:] if a.startswith("-k") and len(a) > 2]
    if ks and not any(k in BIG_TEST for k in ks):
        return
    big_keygen_spawn()


def big_keygen_spawn():
    d = xdir()
    for n in BIG_NAMES:
        path = os.path.join(d, "big-%s.key" % n)
        _KEYGEN.append((path, subprocess.Popen(
            ["nice", "-n", "5", "openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
             "rsa_keygen_bits:4096", "-out", path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    atexit.register(big_keygen_stop)


def big_keygen_stop():
    for _, p in _KEYGEN:
        if p.poll() is None:
            p.kill()
            p.wait()


def big_chain():
    """root -> i1 -> i2 -> i3 -> leaf, all RSA 4096: (file with leaf,i3,i2,i1,root, key, root)"""
    if "big" in _CACHE:
        return _CACHE["big"]
    if not _KEYGEN:
        big_keygen_spawn()
    d = xdir()
    names = BIG_NAMES
    keys = {}
    for path, p in _KEYGEN:
        check(p.wait(timeout=T(120)) == 0, "RSA 4096 key generation failed")
        keys[os.path.basename(path)[4:-4]] = path
    ca_ext = os.path.join(d, "big-ca.ext")
    with open(ca_ext, "w") as f:
        f.write("basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")
    leaf_ext = os.path.join(d, "big-leaf.ext")
    with open(leaf_ext, "w") as f:
        f.write(EXT_CLIENT + "subjectAltName=URI:spiffe://certgate.demo/big\n")
    crt = {n: os.path.join(d, "big-%s.crt" % n) for n in names}
    openssl("req", "-x509", "-new", "-key", keys["root"], "-subj", "/O=big/CN=big root",
            "-days", "30", "-sha256", "-addext", "basicConstraints=critical,CA:true",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", crt["root"])
    for i, n in enumerate(names[1:], 1):
        parent = names[i - 1]
        csr = os.path.join(d, "big-%s.csr" % n)
        openssl("req", "-new", "-key", keys[n], "-subj", "/O=big/CN=big %s" % n, "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", crt[parent], "-CAkey", keys[parent],
                "-set_serial", str(100 + i), "-days", "30", "-sha256", "-extfile",
                leaf_ext if n == "leaf" else ca_ext, "-out", crt[n])
    chain = os.path.join(d, "big-chain.crt")
    with open(chain, "w") as out:
        for n in reversed(names):
            with open(crt[n]) as f:
                out.write(f.read())
    _CACHE["big"] = (chain, keys["leaf"], crt["root"])
    return _CACHE["big"]


def store_with(t, extra_roots):
    """A CA store: run.py's ECDSA root plus |extra_roots| in common."""
    d = os.path.join(t.dir, "ca-store")
    os.makedirs(os.path.join(d, "common"))
    with open(os.path.join(d, "common", "common.pem"), "w") as out:
        for path in [os.path.join(H.Opts.pki["ecdsa"], "root.crt")] + list(extra_roots):
            with open(path) as f:
                out.write(f.read())
    with open(os.path.join(d, "index.yml"), "w") as f:
        f.write("common:\n- common.pem\n")
    return d


def ctx_with(chain=None, key=None, version=None, alg="ecdsa"):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                     cafile=os.path.join(H.Opts.pki[alg], "root.crt"))
    if chain:
        ctx.load_cert_chain(chain, key)
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def default_chain(alg="ecdsa"):
    pki = H.Opts.pki[alg]
    return os.path.join(pki, "client-chain.crt"), os.path.join(pki, "client.key")


# --- what the upstream received -------------------------------------------------------------------

def cc_of(headers):
    """The client-certificate headers among |headers| (any spelling), name lowercased."""
    return [(k.lower(), v) for k, v in headers
            if k.lower().replace("_", "-") in CC_NAMES]


def by_target(up, n, timeout=5):
    reqs = up.wait_requests(n, timeout)
    out = {}
    for q in reqs:
        out.setdefault(q["target"], []).append(q)
    return out


def get(tag, host="localhost", lines=()):
    return ("GET /echo?%s HTTP/1.1\r\nHost: %s\r\n%s\r\n"
            % (tag, host, "".join(l + "\r\n" for l in lines))).encode()


# --- the mode x format x spoof matrix ---------------------------------------------------------

SPOOFS = [
    ("none", []),
    ("xfcc_lower", ["x-forwarded-client-cert: By=spoof-1;Hash=aa"]),
    ("xfcc_mixed", ["X-Forwarded-Client-Cert: By=spoof-2;Hash=bb"]),
    ("xfcc_duplicated", ["x-forwarded-client-cert: By=spoof-4;Hash=dd",
                         "X-FORWARDED-CLIENT-CERT: By=spoof-5;Hash=ee"]),
    ("client_cert", ["Client-Cert: :c3Bvb2YtNg==:"]),
    ("client_cert_chain", ["Client-Cert-Chain: :c3Bvb2YtOA==:, :c3Bvb2YtOQ==:"]),
    ("x_ssl_client_cert", ["X-SSL-Client-Cert: spoof-11"]),
    ("connection_names_them", ["Connection: keep-alive, x-forwarded-client-cert, Client-Cert, "
                               "client-cert-chain, X-SSL-Client-Cert"]),
    ("connection_and_spoof", ["Connection: X-Forwarded-Client-Cert, client-cert, "
                              "x-ssl-client-cert",
                              "X-Forwarded-Client-Cert: By=spoof-13;Hash=ff",
                              "Client-Cert: :c3Bvb2YtMTQ=:",
                              "X-SSL-Client-Cert: spoof-15"]),
]
# Underscore spellings are refused with 400 (CONTRACT 5), each on its own connection.
UNDERSCORE_SPOOFS = [
    ("xfcc_underscore", ["X_FORWARDED_CLIENT_CERT: By=spoof-3;Hash=cc"]),
    ("client_cert_underscore", ["client_cert: :c3Bvb2YtNw==:"]),
    ("client_cert_chain_underscore", ["Client_Cert_Chain: :c3Bvb2YtMTA=:"]),
    ("x_ssl_client_cert_underscore", ["x_ssl_client_cert: spoof-12"]),
]
SPOOFS.append(("every_spelling", [l for name, ls in SPOOFS
                                  if name not in ("none", "connection_names_them",
                                                  "connection_and_spoof") for l in ls]))


def incoming_own(fmt, lines):
    out = []
    for line in lines:
        name, _, value = line.partition(":")
        if name.lower() in OWN[fmt] and "_" not in name:
            out.append((name.lower(), value.strip()))
    return out


def expected_cc(mode, fmt, has_cert, lines, mine):
    """The exact client-certificate headers the upstream must receive (CONTRACT 5 and the
    README: append_forward with rfc9440/pem replaces)."""
    inc = incoming_own(fmt, lines)
    if mode == "sanitize":
        return []
    if mode == "always_forward_only":
        return inc
    if not has_cert:
        return []
    if mode == "forward_only":
        return inc
    if mode == "sanitize_set":
        return mine
    # append_forward
    if fmt != "xfcc":
        return mine
    vals = [v for _, v in inc if v] + [mine[0][1]]
    return [("x-forwarded-client-cert", ",".join(vals))]


def matrix_case(t, mode, fmt):
    """One listener (client_auth optional); two connections (with and without a client
    certificate), every spoof variant on each, keep-alive."""
    up = t.upstream()
    cg = t.certgate("ecdsa", [H.listener("l", "http", up.http, client_auth="optional",
                                         forward_client_cert=mode, client_cert_header=fmt)])
    chain_file, key = default_chain()
    mine = ours(fmt, read_chain(chain_file), by_uris("ecdsa"))
    sent = 0
    for has_cert, ctx in ((True, ctx_with(chain_file, key)), (False, ctx_with())):
        s = H.tls_connect(t, cg.port(), ctx)
        r = H.Reader(s)
        for name, lines in SPOOFS:
            s.sendall(get("c=%d&s=%s" % (has_cert, name), lines=lines))
            resp = H.read_response(r)
            check(resp.status == 200, "cert=%s spoof=%s: status %d" % (has_cert, name,
                                                                      resp.status))
            sent += 1
        for name, lines in UNDERSCORE_SPOOFS:
            raw = get("c=%d&s=%s" % (has_cert, name), lines=lines)
            resp = H.https_request(t, cg.port(), ctx, raw)
            check(resp.status == 400, "cert=%s spoof=%s: status %d" % (has_cert, name,
                                                                      resp.status))
    got = by_target(up, sent)
    bad = []
    for has_cert in (True, False):
        for name, lines in SPOOFS:
            tag = "/echo?c=%d&s=%s" % (has_cert, name)
            reqs = got.get(tag, [])
            if len(reqs) != 1:
                bad.append("%s: upstream got %d requests" % (tag, len(reqs)))
                continue
            have = cc_of(reqs[0]["headers"])
            want = expected_cc(mode, fmt, has_cert, lines, mine)
            if have == want and mode == "append_forward" and fmt == "xfcc" and has_cert:
                # a quote-aware consumer sees the client's elements, then exactly ours
                els = xfcc_parse(have[0][1])
                n_in = len([v for _, v in incoming_own(fmt, lines) if v])
                keys = [k for k, _ in els[-1]]
                if len(els) != n_in + 1 or keys != ["By", "Hash", "Cert", "Chain", "Subject",
                                                    "URI"]:
                    bad.append("spoof=%s: parsed %d elements (want %d), last keys %r"
                               % (name, len(els), n_in + 1, keys))
                continue
            if have == want:
                continue
            if name == "connection_and_spoof" and mode in (
                    "forward_only", "append_forward", "always_forward_only"):
                # The client's own copy is named in Connection: dropping it as hop-by-hop is
                # acceptable too; ours must still be there.
                if have == expected_cc(mode, fmt, has_cert, [], mine):
                    continue
            bad.append("cert=%s spoof=%s: got %s, want %s" % (
                has_cert, name, short(have), short(want)))
    raw = up.received()
    for tok in (b"spoof-3", b"spoof-12", b"c3Bvb2YtNw", b"c3Bvb2YtMTA"):
        if tok in raw:
            bad.append("an underscore spelling (%s) reached the upstream" % tok.decode())
    check(not bad, "%d of %d wrong: %s" % (len(bad), sent, " || ".join(bad[:6])))


def short(headers):
    return [(k, v if len(v) < 50 else v[:30] + "..." + v[-12:]) for k, v in headers]


def matrix_test(mode, fmt):
    return lambda t: matrix_case(t, mode, fmt)


def t_curl_spoof(t):
    """curl (with -H in several spellings, and duplicated) through sanitize_set/xfcc: the
    upstream gets exactly one x-forwarded-client-cert, certgate's. (Underscore spellings are
    400: hdr.underscore_*.)"""
    up, cg, _ = H.http_env(t)
    extra = []
    for h in ("X-Forwarded-Client-Cert: spoof-a", "x-forwarded-client-cert: spoof-b",
              "Client-Cert: :c3Bvb2Y=:", "Client-Cert-Chain: :c3Bvb2Y=:",
              "X-SSL-Client-Cert: spoof-e", "Connection: x-forwarded-client-cert"):
        extra += ["-H", h]
    p = H.curl(t, cg.port(), "/echo?curl", "ecdsa", extra=extra)
    check(p.stdout.endswith("200"), "curl: %r %s" % (p.stdout[-40:], p.stderr[-200:]))
    reqs = up.wait_requests(1)
    chain = read_chain(default_chain()[0])
    want = ours("xfcc", chain, by_uris("ecdsa"))
    have = cc_of(reqs[0]["headers"])
    check(have == want, "upstream got %s, want %s" % (short(have), short(want)))


# --- Envoy byte compatibility -------------------------------------------------------------------

def envoy_case(t, alg, chain_file, key, details_sets):
    up = t.upstream()
    ls = []
    for i, det in enumerate(details_sets):
        kw = {"client_auth": "require", "client_cert_header": "xfcc"}
        if det is not None:
            kw["client_cert_details"] = list(det)
        ls.append(H.listener("d%d" % i, "http", up.http, **kw))
    cg = t.certgate(alg, ls)
    chain = read_chain(chain_file)
    by = by_uris(alg)
    check(by == ["spiffe://certgate.demo/proxy"], "server URI SANs %r" % by)
    ctx = ctx_with(chain_file, key, alg=alg)
    for i, det in enumerate(details_sets):
        res, resp = H.attempt(t, cg.port("d%d" % i), ctx, get("d=%d" % i))
        check(res == "ok" and resp.status == 200, "details %r: %s %r" % (det, res, resp))
    raw = up.received()
    got = by_target(up, len(details_sets))
    for i, det in enumerate(details_sets):
        want = envoy_xfcc(chain, by, det) if det is not None else envoy_xfcc(chain, by)
        line = b"x-forwarded-client-cert: " + want.encode() + b"\r\n"
        have = cc_of(got["/echo?d=%d" % i][0]["headers"])
        check(line in raw, "details %r: not byte-identical to Envoy's format:\n got  %r\n want"
              " %r" % (det, have[0][1][:200] if have else None, want[:200]))
        check(len(have) == 1, "details %r: %d client-cert headers" % (det, len(have)))


def t_envoy_ecdsa(t):
    chain, key = default_chain("ecdsa")
    envoy_case(t, "ecdsa", chain, key, [None, ("cert",), ("chain", "dns"), ("subject",),
                                        ("uri",), ()])


def t_envoy_rsa(t):
    chain, key = default_chain("rsa")
    envoy_case(t, "rsa", chain, key, [None])


def t_envoy_sans(t):
    chain, key = san_client()
    envoy_case(t, "ecdsa", chain, key, [None, ("uri", "dns")])


# --- consumer-side parsers on hostile and big certificates -----------------------------------

def consumer_case(t, chain_file, key, extra_roots=(), want_uris=None, want_dns=None):
    store = store_with(t, extra_roots)
    up = t.upstream()
    ls = [H.listener(f, "http", up.http, client_auth="require", client_cert_header=f)
          for f in FORMATS]
    cg = t.certgate("ecdsa", ls, extra={"ca_store": {"dir": store}})
    ctx = ctx_with(chain_file, key)
    for f in FORMATS:
        res, resp = H.attempt(t, cg.port(f), ctx, get("f=" + f))
        check(res == "ok" and resp.status == 200, "%s: %s %r || %s" % (f, res, resp,
                                                                        cg.tail(2)))
    got = by_target(up, 3)
    chain = read_chain(chain_file)
    leaf_der = der(chain[0])
    by = by_uris("ecdsa")
    hx = cc_of(got["/echo?f=xfcc"][0]["headers"])
    check(len(hx) == 1 and hx[0][0] == "x-forwarded-client-cert", "xfcc headers %s" % short(hx))
    value = hx[0][1]
    check(not re.search(r"[\x00-\x1f\x7f]", value), "control character in the header")
    check(len(value) < 64 * 1024, "header of %d bytes" % len(value))
    # The Things Stack's parser
    check(tts_leaf(value) == leaf_der, "TTS-style parser did not recover the client leaf")
    # quote-aware parser: one element, every key, every value
    elements = xfcc_parse(value)
    check(len(elements) == 1, "%d elements (certificate content added one)" % len(elements))
    el = elements[0]
    uris, dns = sans(chain[0])
    if want_uris is not None:
        uris, dns = want_uris, want_dns
    subject = subject_rfc2253(chain[0])
    want = [("By", u) for u in by] + [
        ("Hash", hashlib.sha256(leaf_der).hexdigest()),
        ("Cert", envoy_pem_encode(chain[0])),
        ("Chain", "".join(envoy_pem_encode(c) for c in chain)),
        ("Subject", subject)] + \
        ([("URI", u) for u in uris] or [("URI", "")]) + [("DNS", d) for d in dns]
    # The exact bytes (CONTRACT section 5): Envoy's unless a value needs its encoded form.
    exact = ";".join("%s=%s" % (k, '"%s"' % w if k in ("Cert", "Chain") else
                                contract_form(w, k == "Subject") if k != "Hash" else w)
                     for k, w in want)
    check(value == exact, "not CONTRACT section 5's bytes:\n got  %r\n want %r"
          % (value[-300:], exact[-300:]))
    check([k for k, _ in el] == [k for k, _ in want], "keys %r, want %r"
          % ([k for k, _ in el], [k for k, _ in want]))
    for (k, v), (_, w) in zip(el, want):
        if k in ("By", "Subject", "URI", "DNS") and contract_form(w, k == "Subject") != \
                ('"%s"' % w if k == "Subject" else w):
            v = urllib.parse.unquote(v, encoding="latin-1")  # the encoded form
        elif k == "Subject":
            v = w if v == re.sub(r"\\(.)", r"\1", w) else v  # Envoy's, read quote-aware
        check(v == w, "%s: parsed %r, want %r" % (k, v[:160], w[:160]))
    pem_blocks_back = pem_blocks(urllib.parse.unquote(dict(el)["Chain"]))
    check([ssl.PEM_cert_to_DER_cert(b) for b in pem_blocks_back] == [der(c) for c in chain],
          "Chain does not give back the chain as sent")
    # nothing the certificate says became a header of its own
    names = [k.lower() for k, _ in got["/echo?f=xfcc"][0]["headers"]]
    check("x-injected" not in names, "a certificate string injected a header")
    # rfc9440 and pem give back the same certificates
    hr = dict(cc_of(got["/echo?f=rfc9440"][0]["headers"]))
    check(base64.b64decode(hr["client-cert"].strip(":")) == leaf_der, "Client-Cert != leaf")
    rest = [base64.b64decode(x.strip().strip(":")) for x in hr.get("client-cert-chain",
                                                                    "").split(",") if x]
    check(rest == [der(c) for c in chain[1:]], "Client-Cert-Chain != the rest of the chain")
    hp = dict(cc_of(got["/echo?f=pem"][0]["headers"]))
    check(ssl.PEM_cert_to_DER_cert(urllib.parse.unquote(hp["x-ssl-client-cert"])) == leaf_der,
          "X-SSL-Client-Cert != leaf")
    return value


def t_hostile(t):
    """Subject and SANs with ; , = " \\ CR LF and non-ASCII (multi-valued RDN too)."""
    chain, key = hostile_client()
    value = consumer_case(t, chain, key, want_uris=HOSTILE_URIS, want_dns=HOSTILE_DNS)
    subj = urllib.parse.unquote(dict(xfcc_parse(value)[0])["Subject"])
    for frag in ("\\;", "\\,", "\\0D\\0A", "\\C3\\A9", "+"):
        check(frag in subj, "subject %r lacks %r" % (subj, frag))


def t_plain(t):
    chain, key = default_chain()
    consumer_case(t, chain, key)


def t_big_chain(t):
    """5 certificates (leaf, 3 intermediates, root), all RSA 4096."""
    chain, key, root = big_chain()
    value = consumer_case(t, chain, key, extra_roots=[root])
    check(len(read_chain(chain)) == 5, "not 5 certificates")
    check(value.count("BEGIN%20CERTIFICATE") == 6, "Cert + 5 in Chain expected")


# --- resumption ----------------------------------------------------------------------------------

def s_client(port, version, chain_file, key, raw, sess_in=None, sess_out=None):
    pki = H.Opts.pki["ecdsa"]
    blocks = pem_blocks(open(chain_file).read())
    d = os.path.dirname(sess_in or sess_out)
    leaf, rest = os.path.join(d, "leaf.pem"), os.path.join(d, "rest.pem")
    with open(leaf, "w") as f:
        f.write(blocks[0])
    with open(rest, "w") as f:
        f.write("".join(blocks[1:]))
    args = ["openssl", "s_client", "-connect", "%s:%d" % (H.HOST, port), "-servername",
            "localhost", "-ign_eof", "-CAfile", os.path.join(pki, "root.crt"), "-cert", leaf,
            "-key", key, "-cert_chain", rest, "-tls1_2" if version == "1.2" else "-tls1_3"]
    if sess_in:
        args += ["-sess_in", sess_in]
    if sess_out:
        args += ["-sess_out", sess_out]
    try:
        p = subprocess.run(args, input=raw, capture_output=True, timeout=T(10))
    except subprocess.TimeoutExpired:
        raise H.Failure("openssl s_client timed out")
    out = p.stdout.decode("latin-1")
    m = re.search(r"HTTP/1\.1 (\d{3}) ", out)
    return bool(re.search(r"^Reused, ", out, re.M)), int(m.group(1)) if m else None


def t_resume_s_client(t):
    """openssl s_client -sess_out / -sess_in, TLS 1.2 and 1.3 tickets, every format: the resumed
    session forwards the same header as the full handshake (and the spoof is still removed)."""
    up = t.upstream()
    ls = [H.listener(f, "http", up.http, client_auth="require", client_cert_header=f)
          for f in FORMATS]
    cg = t.certgate("ecdsa", ls)
    chain_file, key = default_chain()
    chain = read_chain(chain_file)
    by = by_uris("ecdsa")
    n = 0
    for f in FORMATS:
        for v in ("1.2", "1.3"):
            sess = os.path.join(t.dir, "%s-%s.sess" % (f, v))
            spoof = ["X-Forwarded-Client-Cert: By=spoof", "Client-Cert: :c3Bvb2Y=:",
                     "X-SSL-Client-Cert: spoof", "Connection: close"]
            reused, status = s_client(cg.port(f), v, chain_file, key,
                                      get("f=%s&v=%s&full" % (f, v), lines=spoof),
                                      sess_out=sess)
            check(status == 200 and not reused, "%s TLS %s full: %s %s" % (f, v, status, reused))
            reused, status = s_client(cg.port(f), v, chain_file, key,
                                      get("f=%s&v=%s&resumed" % (f, v), lines=spoof),
                                      sess_in=sess)
            check(reused, "%s TLS %s: the session was not resumed" % (f, v))
            check(status == 200, "%s TLS %s resumed: status %s" % (f, v, status))
            n += 2
    got = by_target(up, n)
    for f in FORMATS:
        want = ours(f, chain, by)
        for v in ("1.2", "1.3"):
            full = cc_of(got["/echo?f=%s&v=%s&full" % (f, v)][0]["headers"])
            res = cc_of(got["/echo?f=%s&v=%s&resumed" % (f, v)][0]["headers"])
            check(full == want, "%s TLS %s full: %s, want %s" % (f, v, short(full), short(want)))
            check(res == full, "%s TLS %s resumed: %s, full handshake: %s"
                  % (f, v, short(res), short(full)))


def t_resume_python(t):
    """Python ssl session= (TLS 1.2 and 1.3): session_reused, same header."""
    up = t.upstream()
    cg = t.certgate("ecdsa", [H.listener("x", "http", up.http, client_auth="require")])
    chain_file, key = default_chain()
    want = ours("xfcc", read_chain(chain_file), by_uris("ecdsa"))
    n = 0
    for v in ("1.2", "1.3"):
        ctx = ctx_with(chain_file, key, v)
        s = H.tls_connect(t, cg.port(), ctx)
        s.sendall(get("v=%s&full" % v))
        resp = H.read_response(H.Reader(s))
        check(resp.status == 200, "full: %d" % resp.status)
        sess = s.session
        raw = H.socket.create_connection((H.HOST, cg.port()), timeout=T(5))
        t.socks.append(raw)
        s2 = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
        t.socks.append(s2)
        s2.sendall(get("v=%s&resumed" % v))
        resp = H.read_response(H.Reader(s2))
        check(resp.status == 200, "resumed: %d" % resp.status)
        check(s2.session_reused, "TLS %s: Python's session was not reused" % v)
        n += 2
    got = by_target(up, n)
    for v in ("1.2", "1.3"):
        full = cc_of(got["/echo?v=%s&full" % v][0]["headers"])
        res = cc_of(got["/echo?v=%s&resumed" % v][0]["headers"])
        check(full == want, "TLS %s full: %s" % (v, short(full)))
        check(res == want, "TLS %s resumed: %s" % (v, short(res)))


TESTS = [("xfcc.matrix.%s.%s" % (m, f), matrix_test(m, f)) for m in MODES for f in FORMATS] + [
    ("xfcc.curl_spoofed_headers_replaced", t_curl_spoof),
    ("xfcc.envoy_byte_identical_ecdsa_details", t_envoy_ecdsa),
    ("xfcc.envoy_byte_identical_rsa", t_envoy_rsa),
    ("xfcc.envoy_byte_identical_uri_dns_sans", t_envoy_sans),
    ("xfcc.consumer_parsers_plain", t_plain),
    ("xfcc.consumer_parsers_hostile_subject_sans", t_hostile),
    ("xfcc.consumer_parsers_5_cert_rsa4096_chain", t_big_chain),
    ("xfcc.resumed_same_header_s_client", t_resume_s_client),
    ("xfcc.resumed_same_header_python", t_resume_python),
]


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS, wrap=lambda fn: lambda t: (big_keygen_start(), fn(t))[1])


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import run  # noqa: E402
    register(run)
    sys.exit(run.main())
