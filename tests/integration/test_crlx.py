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
import json
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


def events(cg, name):
    """The JSON log lines of |cg| whose event is |name|."""
    out = []
    for line in H.log_lines(cg):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if obj.get("event") == name:
            out.append(obj)
    return out


def wait_event(cg, name, needle, timeout=3):
    TR = mod("test_reload")
    return TR.wait_for(lambda: [e for e in events(cg, name) if needle in json.dumps(e)],
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


TESTS = [
    ("crlx.special_fifo_in_tenant_bundle", t_special_fifo_in_tenant),
    ("crlx.special_socket_and_device_bundles", t_special_socket_and_device),
    ("crlx.special_fifo_as_credentials_cert", t_special_fifo_credentials),
    ("crlx.special_fifo_as_allowlist_file", t_special_fifo_allowlist),
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
