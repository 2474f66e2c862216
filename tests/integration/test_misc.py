#!/usr/bin/env python3
"""test_misc.py: the data-path features of issue 2 no other module covers, in the group
`misc.`: PKCS#12 credentials (with a password file, and a wrong password refused at start
naming the file) and an upstream on a unix socket. run.py calls register(itself)."""

import os
import socket
import ssl
import subprocess
import threading

H = None  # run.py's module, set by register()


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def make_p12(t, alg, password):
    pki = H.Opts.pki[alg]
    d = os.path.join(t.dir, "p12")
    os.makedirs(d, exist_ok=True)
    p12 = os.path.join(d, "server.p12")
    with open(os.path.join(d, "p12.pass"), "w") as f:
        f.write(password + "\n")
    p = subprocess.run(["openssl", "pkcs12", "-export", "-inkey", os.path.join(pki, "server.key"),
                        "-in", os.path.join(pki, "server-leaf.crt"),
                        "-certfile", os.path.join(pki, "intermediate.crt"),
                        "-out", p12, "-passout", "pass:" + password],
                       capture_output=True, timeout=30)
    check(p.returncode == 0, "openssl pkcs12: %s" % p.stderr.decode("latin-1")[-200:])
    return d


def served_leaf(s):
    return s.getpeercert(binary_form=True)


def t_pkcs12_credentials(t):
    d = make_p12(t, "ecdsa", "s3cret")
    up = t.upstream()
    creds = {"dir": d, "pkcs12": "server.p12", "pkcs12_password_file": "p12.pass"}
    cg = t.certgate("ecdsa", [H.listener("https", "http", up.http, client_auth="require")],
                    extra={"credentials": creds})
    s = H.tls_connect(t, cg.port(), H.client_ctx("ecdsa"))
    with open(os.path.join(H.Opts.pki["ecdsa"], "server-leaf.crt")) as f:
        want = ssl.PEM_cert_to_DER_cert(f.read())
    check(served_leaf(s) == want, "the certificate served is not the PKCS#12 leaf")
    s.sendall(H.get_req("/echo"))
    resp = H.read_response(H.Reader(s))
    check(resp.status == 200, "status %d through PKCS#12 credentials" % resp.status)


def t_pkcs12_wrong_password(t):
    d = make_p12(t, "ecdsa", "right")
    with open(os.path.join(d, "p12.pass"), "w") as f:
        f.write("wrong\n")
    cfg = H.make_config(t, "ecdsa", [H.listener("https", "http", "127.0.0.1:9")],
                        extra={"credentials": {"dir": d, "pkcs12": "server.p12",
                                               "pkcs12_password_file": "p12.pass"}})
    path = os.path.join(t.dir, "p12-wrong.yaml")
    with open(path, "w") as f:
        f.write(H.yaml_dump(cfg) + "\n")
    p = subprocess.run([H.Opts.binary, "check", "-c", path], capture_output=True,
                       timeout=H.T(20))
    err = p.stderr.decode("utf-8", "replace")
    check(p.returncode == 1, "check exited %d, want 1: %s" % (p.returncode, err[-200:]))
    check("server.p12" in err, "the message does not name the file: %s" % err[-200:])


class UnixUpstream:
    """A one-thread HTTP/1.1 upstream on a unix socket that keeps every request head."""

    def __init__(self, path):
        self.path = path
        self.heads = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(5)
            data = b""
            try:
                while True:
                    while b"\r\n\r\n" not in data:
                        more = c.recv(65536)
                        if not more:
                            raise EOFError
                        data += more
                    head, data = data.split(b"\r\n\r\n", 1)
                    self.heads.append(head)
                    body = b"unix-ok"
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                              % (len(body), body))
            except (EOFError, OSError):
                pass
            c.close()

    def close(self):
        self.stop = True
        self.sock.close()


def t_unix_upstream(t):
    path = os.path.join(t.dir, "app.sock")
    up = UnixUpstream(path)
    try:
        cg = t.certgate("ecdsa", [H.listener("https", "http", "unix:" + path,
                                             client_auth="require")])
        s = H.tls_connect(t, cg.port(), H.client_ctx("ecdsa"))
        r = H.Reader(s)
        for i in range(3):  # keep-alive on both sides
            s.sendall(H.get_req("/u%d" % i))
            resp = H.read_response(r)
            check(resp.status == 200 and resp.body == b"unix-ok",
                  "request %d: %d %r" % (i, resp.status, resp.body[:40]))
        check(len(up.heads) == 3, "the unix upstream saw %d requests" % len(up.heads))
        check(all(b"x-forwarded-client-cert: " in h.lower() for h in up.heads),
              "the forwarded client certificate did not reach the unix upstream")
    finally:
        up.close()


class ClosingUpstream:
    """A TCP upstream that answers the first request of each connection with keep-alive, then
    closes the connection without answering when the next request arrives: the race between an
    application's idle timeout and a proxy reusing the connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns = 0
        self.stop = False
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self.serve, args=(c, self.conns), daemon=True).start()

    def serve(self, c, no):
        c.settimeout(5)
        data = b""
        try:
            for req in (1, 2):
                while b"\r\n\r\n" not in data:
                    more = c.recv(65536)
                    if not more:
                        return
                    data += more
                _, data = data.split(b"\r\n\r\n", 1)
                if req == 2:
                    return  # closes without an answer
                body = b"conn-%d" % no
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stop = True
        self.sock.close()


def t_retry_on_closed_reused_upstream(t):
    up = ClosingUpstream()
    try:
        cg = t.certgate("ecdsa", [H.listener("https", "http", "127.0.0.1:%d" % up.port,
                                             client_auth="require")])
        s = H.tls_connect(t, cg.port(), H.client_ctx("ecdsa"))
        r = H.Reader(s)
        s.sendall(H.get_req("/a"))
        first = H.read_response(r)
        check(first.status == 200 and first.body == b"conn-1", "first: %r" % first)
        s.sendall(H.get_req("/b"))
        second = H.read_response(r)
        check(second.status == 200 and second.body == b"conn-2",
              "a GET on a reused upstream that closed without answering: %d %r (want a retry "
              "on a new connection)" % (second.status, second.body[:40]))
        # a request with a body is not sent twice: 502
        s2 = H.tls_connect(t, cg.port(), H.client_ctx("ecdsa"))
        r2 = H.Reader(s2)
        s2.sendall(H.get_req("/c"))
        H.read_response(r2)
        s2.sendall(b"POST /d HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi")
        third = H.read_response(r2)
        check(third.status == 502, "a POST must not be replayed: got %d" % third.status)
    finally:
        up.close()


TESTS = [
    ("misc.pkcs12_credentials", t_pkcs12_credentials),
    ("misc.pkcs12_wrong_password_refused", t_pkcs12_wrong_password),
    ("misc.unix_socket_upstream", t_unix_upstream),
    ("misc.retry_bodiless_request_on_closed_reused_upstream", t_retry_on_closed_reused_upstream),
]


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS)
