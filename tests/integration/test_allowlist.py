#!/usr/bin/env python3
"""test_allowlist.py: the allowlist of client certificate subjects (CONTRACT sections 3, 6 and
7; Corda's allowed client certificate subjects), in the group `allowlist.`: the admin calls,
equal subjects in any order and letter case of attribute names, persistence in
access.allowed_subjects_file across restarts, the check on full handshakes, on resumed sessions
and on every request of a live keep-alive connection, tls relays, and a broken state file
refused with FILE:LINE:COL without being touched. run.py calls register(itself)."""

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.parse

H = None  # run.py's module, set by register()
PATH = "/allowed-client-certificate-subjects"


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


def admin(port, method, path, token=None):
    """One admin request; returns (status, body)."""
    s = socket.create_connection((H.HOST, port), timeout=T(5))
    try:
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
        if token:
            head += "Authorization: Bearer %s\r\n" % token
        s.sendall((head + "\r\n").encode())
        resp = H.read_response(H.Reader(s), method)
        return resp.status, resp.body
    finally:
        s.close()


def subject_path(subject):
    return PATH + "/" + urllib.parse.quote(subject, safe="")


def leaf_subject(alg, name="client.crt"):
    p = subprocess.run(["openssl", "x509", "-in", os.path.join(H.Opts.pki[alg], name), "-noout",
                        "-subject", "-nameopt", "RFC2253"], capture_output=True, text=True,
                       timeout=10)
    check(p.returncode == 0, "openssl x509: %s" % p.stderr)
    return p.stdout.strip().split("=", 1)[1]


def reordered(subject):
    """The same subject another way round: pairs reversed, attribute names in lower case,
    spaces around the separators."""
    pairs = subject.split(",")
    return " , ".join(p.split("=", 1)[0].lower() + " = " + p.split("=", 1)[1]
                      for p in reversed(pairs))


def env(t, mode="http", state=None, token=None, alg="ecdsa"):
    up = t.upstream(record_max=4096)
    path = os.path.join(t.dir, "allowed-subjects.json")
    if state is not None:
        with open(path, "w") as f:
            f.write(state)
    extra = {"access": {"allowed_subjects_file": path}}
    if token:
        tok = os.path.join(t.dir, "admin.token")
        with open(tok, "w") as f:
            f.write(token + "\n")
        extra["admin"] = {"address": "%s:%d" % (H.HOST, H.free_port()), "token_file": tok}
    target = up.http if mode == "http" else up.tcp
    cg = t.certgate(alg, [H.listener("https", mode, target, client_auth="require",
                                     require_allowed_subject=True)], extra=extra)
    return up, cg, H.client_ctx(alg), path


def request_status(s, tag="x"):
    """One request on an open connection: its status, or None when the connection ended."""
    err = H.safe_send(s, H.get_req("/echo?" + tag))
    if err:
        return None
    try:
        return H.read_response(H.Reader(s)).status
    except H.Failure:
        return None


def t_admin_calls(t):
    """GET lists, PUT adds (204, idempotent for an equal subject in any spelling), DELETE removes
    (204, then 404), a subject that is not a DN is 400, other methods 405, and every change is in
    the state file at once."""
    up, cg, ctx, path = env(t)
    port = cg.admin_port
    code, body = admin(port, "GET", PATH)
    check(code == 200 and json.loads(body) == [], "empty list: %d %r" % (code, body))
    subj = "CN=CordaOperator,C=GB,L=London,O=Org"
    code, body = admin(port, "PUT", subject_path(subj))
    check(code == 204 and body == b"", "PUT: %d %r" % (code, body))
    code, _ = admin(port, "PUT", subject_path("O=Org,L=London,C=GB,CN=CordaOperator"))
    check(code == 204, "PUT of an equal subject: %d" % code)
    code, _ = admin(port, "PUT", subject_path('CN=a\\,b+OU=x y,O=caf\u00e9 "q"'))
    check(code == 204, "PUT with escapes, multi-valued RDN and UTF-8: %d" % code)
    code, body = admin(port, "GET", PATH)
    want = [subj, 'CN=a\\,b+OU=x y,O=caf\u00e9 "q"']
    check(code == 200 and json.loads(body) == want, "list: %r" % body)
    with open(path) as f:
        check(json.load(f) == want, "state file: %r" % open(path).read())
    code, _ = admin(port, "DELETE", subject_path("cn=CordaOperator, o=Org, l=London, c=GB"))
    check(code == 204, "DELETE of an equal subject: %d" % code)
    code, _ = admin(port, "DELETE", subject_path(subj))
    check(code == 404, "DELETE of an absent subject: %d" % code)
    with open(path) as f:
        check(json.load(f) == want[1:], "state file after DELETE: %r" % open(path).read())
    for bad in ("not a dn", "CN=a,", "CN=\"open", "CN=a%00b"):
        code, _ = admin(port, "PUT", PATH + "/" + (bad if "%" in bad else urllib.parse.quote(bad)))
        check(code == 400, "PUT %r: %d" % (bad, code))
    code, _ = admin(port, "POST", subject_path(subj))
    check(code == 405, "POST: %d" % code)
    code, _ = admin(port, "PUT", PATH)
    check(code == 405, "PUT on the list: %d" % code)
    code, _ = admin(port, "GET", PATH + "/" + "%zz")
    check(code in (400, 405), "bad percent-encoding: %d" % code)


def t_admin_token(t):
    """With admin.token_file, PUT and DELETE need the bearer token; GET does not."""
    up, cg, ctx, path = env(t, token="tok-123")
    port = cg.admin_port
    subj = "CN=x,O=y"
    code, _ = admin(port, "PUT", subject_path(subj))
    check(code == 401, "PUT without the token: %d" % code)
    code, _ = admin(port, "PUT", subject_path(subj), token="wrong")
    check(code == 401, "PUT with a wrong token: %d" % code)
    check(not os.path.exists(path), "a refused PUT wrote the state file")
    code, _ = admin(port, "PUT", subject_path(subj), token="tok-123")
    check(code == 204, "PUT with the token: %d" % code)
    code, _ = admin(port, "DELETE", subject_path(subj))
    check(code == 401, "DELETE without the token: %d" % code)
    code, body = admin(port, "GET", PATH)
    check(code == 200 and json.loads(body) == [subj], "GET without the token: %d %r"
          % (code, body))


def t_enforced_http(t):
    """require_allowed_subject: a client whose subject is not listed is refused at the handshake;
    once an equal subject (another order, other spacing and case) is PUT it is served; after a
    DELETE its open keep-alive connection gets 403 on the next request, and so does a session
    it resumes."""
    up, cg, ctx, path = env(t)
    res, why = H.attempt(t, cg.port(), ctx)
    check(res != "ok", "a client not in the allowlist was served: %r" % (why,))
    check("allowlist" in cg.stderr(), "the refusal does not say why: %s" % cg.tail(2))
    subj = leaf_subject("ecdsa")
    code, _ = admin(cg.admin_port, "PUT", subject_path(reordered(subj)))
    check(code == 204, "PUT: %d" % code)
    s = H.tls_connect(t, cg.port(), ctx)
    check(request_status(s, "a") == 200, "listed client not served")
    sess = s.session
    check(sess is not None, "no session to resume")
    code, _ = admin(cg.admin_port, "DELETE", subject_path(subj))
    check(code == 204, "DELETE: %d" % code)
    st = request_status(s, "b")
    check(st == 403, "request after DELETE on a live connection: %r" % st)
    raw = socket.create_connection((H.HOST, cg.port()), timeout=T(5))
    t.socks.append(raw)
    try:
        s2 = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
        t.socks.append(s2)
        st = request_status(s2, "c")
        reused = s2.session_reused
    except (ssl.SSLError, OSError):
        st, reused = None, False
    check(reused and st == 403, "a session resumed after DELETE: %r (reused=%s), want 403"
          % (st, reused))
    seen = [r for r in up.requests() if b"GET /echo?b" in r or b"GET /echo?c" in r]
    check(not seen, "the upstream saw a request of a removed subject")


def t_persisted(t):
    """The allowlist survives a restart: a subject PUT before is allowed by the next process."""
    up, cg, ctx, path = env(t)
    code, _ = admin(cg.admin_port, "PUT", subject_path(leaf_subject("ecdsa")))
    check(code == 204, "PUT: %d" % code)
    cg.signal(15)
    check(cg.wait(T(10)) == 0, "certgate did not stop")
    with open(path) as f:
        state = f.read()
    up2, cg2, ctx2, path2 = env(t, state=state)
    check(path2 == path, "not the same state file")
    res, resp = H.attempt(t, cg2.port(), ctx2)
    check(res == "ok" and resp.status == 200, "after a restart: %s %r" % (res, resp))


def t_relay(t):
    """tls relay: a listed client is relayed, an unlisted one refused; a DELETE closes its relay
    that is running, and a session it resumes afterwards is closed before anything reaches the
    upstream."""
    up, cg, ctx, path = env(t, mode="tls")
    res, _ = H.attempt(t, cg.port(), ctx, raw=b"hello")
    check(res != "ok", "unlisted client relayed")
    subj = leaf_subject("ecdsa")
    code, _ = admin(cg.admin_port, "PUT", subject_path(subj))
    check(code == 204, "PUT: %d" % code)
    s = H.tls_connect(t, cg.port(), ctx)
    s.sendall(b"ping\n")
    r = H.Reader(s)
    check(r.read_exact(5) == b"ping\n", "no echo through the relay")
    sess = s.session
    code, _ = admin(cg.admin_port, "DELETE", subject_path(subj))
    check(code == 204, "DELETE: %d" % code)
    check(r.at_eof(T(3)), "the running relay of a removed subject was not closed")
    raw = socket.create_connection((H.HOST, cg.port()), timeout=T(5))
    t.socks.append(raw)
    got = None
    try:
        s2 = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
        t.socks.append(s2)
        s2.sendall(b"pong\n")
        got = H.Reader(s2).read_exact(5)
    except (ssl.SSLError, OSError):
        pass
    check(got is None, "a removed subject's resumed session was relayed")


def t_broken_state_file(t):
    """A state file that does not parse stops the start with FILE:LINE:COL, and `certgate
    check` says the same; the file is left exactly as it was."""
    path = os.path.join(t.dir, "allowed-subjects.json")
    text = '[\n  "CN=a,O=b",\n  "not a dn"\n]\n'
    with open(path, "w") as f:
        f.write(text)
    cfg = H.make_config(t, "ecdsa", [H.listener("https", "http", "127.0.0.1:9",
                                                require_allowed_subject=True)],
                        extra={"access": {"allowed_subjects_file": path}})
    conf = os.path.join(t.dir, "c.yaml")
    with open(conf, "w") as f:
        f.write(H.yaml_dump(cfg) + "\n")
    want = "%s:3:3: not a distinguished name" % path
    p = H.run_cmd([H.Opts.binary, "check", "-c", conf])
    check(p.returncode == 1 and want in p.stderr, "check: exit %d, %r" % (p.returncode, p.stderr))
    p = H.run_cmd([H.Opts.binary, "run", "-c", conf], timeout=10)
    check(p.returncode == 1 and want in p.stderr, "run: exit %d, %r" % (p.returncode,
                                                                       p.stderr[-300:]))
    with open(path) as f:
        check(f.read() == text, "the broken state file was changed")


TESTS = [
    ("allowlist.admin_calls", t_admin_calls),
    ("allowlist.admin_token", t_admin_token),
    ("allowlist.enforced_handshake_request_resumption", t_enforced_http),
    ("allowlist.persisted_across_restart", t_persisted),
    ("allowlist.tls_relay", t_relay),
    ("allowlist.broken_state_file_refused", t_broken_state_file),
]


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS)
