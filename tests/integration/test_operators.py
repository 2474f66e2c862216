#!/usr/bin/env python3
"""test_operators.py: what an operator sees and does, in the group `ops.` (issue 11 items 1, 2,
6, 7 and 8). run.py calls register(itself) to add them; this file also runs on its own:

    python3 tests/integration/test_operators.py --binary build/certgate [-k ops.] [-v]

- ops.shutdown_*: the SIGTERM sequence behind a Kubernetes Service (curl during the delay,
  /ready and /healthz, the port refused after it, a second signal).
- ops.tenant_load_failed_*, ops.expiry_*, ops.reloaded_*: certificate problems are log events.
- ops.metrics_*: /metrics after traffic, checked by promtool.
- ops.check_*: `certgate check` names the mistake (encrypted key, DER, swapped pair, colliding
  listeners, missing token file, relative paths, did you mean).
- ops.workers_*: `workers: auto` under taskset.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

H = None  # run.py's module, set by register()
TESTS = []


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def T(s):
    return H.T(s)


def test(name):
    def deco(fn):
        TESTS.append((name, fn))
        return fn
    return deco


def events(cg, name=None):
    return H.log_events(cg, name)


def wait_event(cg, name, n=1, timeout=5, pred=None):
    deadline = time.time() + T(timeout)
    while time.time() < deadline:
        evs = [e for e in events(cg, name) if pred is None or pred(e)]
        if len(evs) >= n:
            return evs
        time.sleep(0.05)
    return [e for e in events(cg, name) if pred is None or pred(e)]


def curl_head(t, port, alg="ecdsa", path="/echo"):
    """curl -i: returns (status, {lowercase header: value}) of the response."""
    p = H.curl(t, port, path, alg, extra=("-i",))
    check(p.returncode == 0, "curl exit %d: %s" % (p.returncode, p.stderr[-200:]))
    lines = [line.rstrip("\r") for line in p.stdout.split("\n")]
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if not line:
            break
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


def refused(port):
    try:
        s = socket.create_connection((H.HOST, port), timeout=1)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    s.close()
    return False


# ---------------------------------------------------------------------------------------------
# item 2: stopping behind a Service


@test("ops.shutdown_delay_accepts_with_connection_close")
def t_shutdown_delay(t):
    delay = 2 * H.Opts.scale  # room for the checks below, also under a sanitizer
    up, cg, ctx = H.http_env(t, limits={"shutdown_delay": "%dms" % (delay * 1000),
                                        "drain_timeout": "%ds" % (delay + 5)})
    port = cg.port()
    # A keep-alive connection from before the signal, and a slow request that outlives the delay.
    ka = H.tls_connect(t, port, ctx)
    ka.sendall(H.get_req("/echo"))
    r = H.Reader(ka)
    first = H.read_response(r)
    check(first.header("connection") is None, "Connection: %s before SIGTERM"
          % first.header("connection"))
    result = {}

    def slow():
        try:
            result["resp"] = H.https_request(t, port, ctx,
                                             H.get_req("/slow?ms=%d" % ((delay + 1.5) * 1000)))
        except Exception as e:  # reported below
            result["err"] = e
    th = threading.Thread(target=slow, daemon=True)
    th.start()
    up.wait_requests(2)
    start = time.time()
    cg.signal(signal.SIGTERM)
    # During the delay: /ready fails at once, /healthz answers, new connections are served
    # and told to close, and so is the keep-alive connection's next response.
    time.sleep(0.2)
    status, _ = H.http_get(cg.admin_port, "/ready")
    check(status == 503, "/ready %d during the shutdown delay" % status)
    status, _ = H.http_get(cg.admin_port, "/healthz")
    check(status == 200, "/healthz %d during the shutdown delay" % status)
    status, headers = curl_head(t, port)
    check(status == 200, "curl during the delay: %d" % status)
    check(headers.get("connection", "").lower() == "close",
          "curl during the delay: Connection: %r" % headers.get("connection"))
    ka.sendall(H.get_req("/echo"))
    second = H.read_response(r)
    check(second.status == 200, "keep-alive request during the delay: %d" % second.status)
    check((second.header("connection") or "").lower() == "close",
          "keep-alive response during the delay: Connection: %r" % second.header("connection"))
    check(time.time() - start < delay - 0.2, "the checks took too long to prove anything")
    # After the delay: the port refuses while the slow request drains; the admin port stays.
    time.sleep(max(0, start + delay + 0.4 - time.time()))
    check(cg.proc.poll() is None, "certgate exited before the in-flight request finished")
    check(refused(port), "the listener still accepts after the shutdown delay")
    status, _ = H.http_get(cg.admin_port, "/ready")
    check(status == 503, "/ready %d during the drain" % status)
    th.join(T(10))
    check("resp" in result, "in-flight request failed: %r" % result.get("err"))
    check(result["resp"].status == 200, "in-flight request got %d" % result["resp"].status)
    rc = cg.wait(T(5))
    check(rc == 0, "exit status %r" % rc)
    seq = [e["event"] for e in events(cg) if e.get("event") in ("shutting_down", "draining",
                                                                 "stopped")]
    check(seq == ["shutting_down", "draining", "stopped"], "events %r" % seq)
    ev = events(cg, "shutting_down")[0]
    check(ev.get("shutdown_delay_ms") == int(delay * 1000) and ev.get("signal") == signal.SIGTERM,
          "shutting_down event %r" % ev)


@test("ops.shutdown_second_signal_exits_now")
def t_shutdown_second_signal(t):
    up, cg, ctx = H.http_env(t, limits={"shutdown_delay": "1s", "drain_timeout": "30s"})
    result = {}

    def slow():
        try:
            result["resp"] = H.https_request(t, cg.port(), ctx, H.get_req("/slow?ms=20000"))
        except Exception as e:  # expected: the process goes away
            result["err"] = e
    th = threading.Thread(target=slow, daemon=True)
    th.start()
    up.wait_requests(1)
    cg.signal(signal.SIGTERM)
    time.sleep(1.5)  # past the delay: draining, with 30s to go
    check(cg.proc.poll() is None, "certgate exited with a request in flight")
    start = time.time()
    cg.signal(signal.SIGINT)
    rc = cg.wait(T(2))
    check(rc is not None, "still running %.1fs after the second signal" % (time.time() - start))
    check(rc == 0, "exit status %r" % rc)
    check(events(cg, "stopped_now"), "no stopped_now event")


@test("ops.shutdown_second_signal_during_delay")
def t_shutdown_second_during_delay(t):
    up, cg, ctx = H.http_env(t, limits={"shutdown_delay": "20s"})
    cg.signal(signal.SIGTERM)
    time.sleep(0.3)
    check(cg.proc.poll() is None, "exited during the delay")
    status, headers = curl_head(t, cg.port())
    check(status == 200 and headers.get("connection", "").lower() == "close",
          "curl during the delay: %d %r" % (status, headers.get("connection")))
    start = time.time()
    cg.signal(signal.SIGTERM)
    rc = cg.wait(T(2))
    check(rc is not None, "still running %.1fs after the second SIGTERM" % (time.time() - start))


# ---------------------------------------------------------------------------------------------
# certificates for these tests (openssl CLI), made under each test's directory

CA_CNF = """[ ca ]
default_ca = ca_default
[ ca_default ]
dir = %(dir)s
database = %(dir)s/index.txt
new_certs_dir = %(dir)s
serial = %(dir)s/serial
default_md = sha256
policy = policy_any
unique_subject = no
[ policy_any ]
commonName = supplied
organizationName = optional
[ v3_server ]
basicConstraints = critical,CA:false
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
"""


def openssl(*args):
    p = subprocess.run(["openssl"] + list(args), capture_output=True, timeout=60)
    check(p.returncode == 0, "openssl %s: %s" % (" ".join(args[:2]),
                                                 p.stderr.decode("latin-1")[-300:]))
    return p.stdout


def server_creds(t, name, dates=("-days", "30"), alg="ecdsa"):
    """A credentials directory t.dir/NAME with tls.crt (leaf + intermediate, signed by the
    run's intermediate with openssl ca and |dates|) and tls.key; returns (dir, serial hex)."""
    d = os.path.join(t.dir, name)
    ca = os.path.join(t.dir, name + "-ca")
    os.makedirs(d)
    os.makedirs(ca)
    open(os.path.join(ca, "index.txt"), "w").close()
    serial = "%X" % (0x1000 + len(os.listdir(t.dir)) * 7919 + int(time.time() * 1000) % 100000)
    if len(serial) % 2:
        serial = "0" + serial
    with open(os.path.join(ca, "serial"), "w") as f:
        f.write(serial + "\n")
    cnf = os.path.join(ca, "ca.cnf")
    with open(cnf, "w") as f:
        f.write(CA_CNF % {"dir": ca})
    key, csr, leaf = (os.path.join(ca, n) for n in ("tls.key", "tls.csr", "leaf.crt"))
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    openssl("req", "-new", "-key", key, "-subj", "/O=certgate ops test/CN=localhost", "-out", csr)
    pki = H.Opts.pki[alg]
    openssl("ca", "-config", cnf, "-batch", "-notext", "-cert", os.path.join(pki, "intermediate.crt"),
            "-keyfile", os.path.join(pki, "intermediate.key"), "-extensions", "v3_server",
            "-in", csr, "-out", leaf, *dates)
    with open(os.path.join(d, "tls.crt"), "w") as out:
        for part in (leaf, os.path.join(pki, "intermediate.crt")):
            with open(part) as f:
                out.write(f.read())
    shutil.copy(key, os.path.join(d, "tls.key"))
    return d, serial


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(data)
    os.rename(tmp, path)


def make_store(t, tenants, name="ca-store", alg="ecdsa"):
    """A CA store: common = the run's root; |tenants| maps id -> PEM text (None: garbage)."""
    d = os.path.join(t.dir, name)
    os.makedirs(os.path.join(d, "common"))
    shutil.copy(os.path.join(H.Opts.pki[alg], "root.crt"), os.path.join(d, "common", "common.pem"))
    set_tenants(d, tenants)
    return d


def set_tenants(store, tenants):
    lines = ["common:", "- common.pem", "tenants:"]
    for tid, pem in sorted(tenants.items()):
        td = os.path.join(store, "tenants", tid)
        os.makedirs(td, exist_ok=True)
        if pem is None:
            pem = "-----BEGIN CERTIFICATE-----\nthis is not base64\n-----END CERTIFICATE-----\n"
        write_atomic(os.path.join(td, tid + ".pem"), pem)
        lines += ["  %s:" % tid, "  - %s.pem" % tid]
    for tid in os.listdir(os.path.join(store, "tenants")) if os.path.isdir(
            os.path.join(store, "tenants")) else []:
        if tid not in tenants:
            shutil.rmtree(os.path.join(store, "tenants", tid))
    write_atomic(os.path.join(store, "index.yml"), "\n".join(lines) + "\n")


def pem(alg, name):
    with open(os.path.join(H.Opts.pki[alg], name)) as f:
        return f.read()


def ops_config(t, creds, store=None, extra_cfg=None, **lkw):
    up = t.upstream()
    lkw.setdefault("client_auth", "require")
    cfg = H.make_config(t, "ecdsa", [H.listener("https", "http", up.http, **lkw)])
    cfg["credentials"] = {"dir": creds, "cert": "tls.crt", "key": "tls.key"}
    if store:
        cfg["ca_store"] = {"dir": store}
    cfg["reload"] = {"debounce": "100ms", "poll_interval": "1h"}
    cfg.update(extra_cfg or {})
    return up, cfg


def check_cmd(t, cfg, name="check.yaml"):
    path = os.path.join(t.dir, name)
    with open(path, "w") as f:
        f.write(H.yaml_dump(cfg) + "\n")
    return H.run_cmd([H.Opts.binary, "check", "-c", path])


# ---------------------------------------------------------------------------------------------
# item 1: loud certificate problems


@test("ops.tenant_load_failed_at_start_and_reload")
def t_tenant_load_failed(t):
    store = make_store(t, {"good": pem("rsa", "root.crt"), "bad": None})
    creds, _ = server_creds(t, "creds")
    up, cfg = ops_config(t, creds, store)
    cg = H.Certgate(t, cfg)
    evs = wait_event(cg, "tenant_load_failed")
    check(len(evs) == 1, "at start: %r" % evs)
    ev = evs[0]
    check(ev.get("level") == "error" and ev.get("tenant") == "bad", "event %r" % ev)
    check(ev.get("location", "").startswith(os.path.join(store, "tenants", "bad", "bad.pem")),
          "location %r" % ev.get("location"))
    check(ev.get("error"), "no error in %r" % ev)
    cg.signal(signal.SIGHUP)
    evs = wait_event(cg, "tenant_load_failed", n=2)
    check(len(evs) == 2 and evs[1].get("tenant") == "bad", "after SIGHUP: %r" % evs)
    rel = wait_event(cg, "reloaded")
    check(rel and rel[-1].get("tenants_failed") == ["bad"], "reloaded %r" % rel)


@test("ops.reloaded_says_what_changed")
def t_reloaded_changes(t):
    a, b = pem("ecdsa", "root.crt"), pem("rsa", "root.crt")
    store = make_store(t, {"keep": a, "change": a, "gone": a})
    creds, _ = server_creds(t, "creds")
    up, cfg = ops_config(t, creds, store)
    cg = H.Certgate(t, cfg)
    # A forced reload of unchanged files changes nothing.
    cg.signal(signal.SIGHUP)
    rel = wait_event(cg, "reloaded")
    check(len(rel) == 1, "no reloaded event: %s" % cg.tail())
    ev = rel[0]
    for k, want in (("credentials", None), ("common_changed", False), ("tenants_added", []),
                    ("tenants_removed", []), ("tenants_changed", []), ("tenants_failed", [])):
        check(k in ev and ev[k] == want, "unchanged reload: %s=%r in %r" % (k, ev.get(k), ev))
    # Rotate the credentials and change the store, then reload.
    new_creds, serial = server_creds(t, "creds2")
    for n in ("tls.key", "tls.crt"):
        os.rename(os.path.join(new_creds, n), os.path.join(creds, n))
    set_tenants(store, {"keep": a, "change": b, "new": a, "bad": None})
    time.sleep(0.3)
    cg.signal(signal.SIGHUP)
    rel = wait_event(cg, "reloaded",
                     pred=lambda e: "change" in e.get("tenants_changed", []) or
                     e.get("credentials"))
    check(rel, "no reloaded event with the changes: %s" % cg.tail())
    got = {"added": set(), "removed": set(), "changed": set(), "failed": set()}
    creds_ev = None
    for e in events(cg, "reloaded")[1:]:
        for k in got:
            got[k] |= set(e.get("tenants_" + k, []))
        creds_ev = creds_ev or e.get("credentials")
    check(got == {"added": {"new"}, "removed": {"gone"}, "changed": {"change"},
                  "failed": {"bad"}}, "tenants %r" % got)
    check(creds_ev and "CN=localhost" in creds_ev.get("subject", "")
          and creds_ev.get("serial", "").lstrip("0").upper() == serial.lstrip("0").upper()
          and creds_ev.get("not_after", "").endswith("Z"), "credentials %r" % creds_ev)


@test("ops.expiry_check_exit_codes")
def t_expiry_check(t):
    expired, _ = server_creds(t, "expired", ("-startdate", "20200101000000Z", "-enddate",
                                             "20210101000000Z"))
    notyet, _ = server_creds(t, "notyet", ("-startdate", "20400101000000Z", "-enddate",
                                           "20410101000000Z"))
    soon, _ = server_creds(t, "soon", ("-days", "3"))
    fine, _ = server_creds(t, "fine", ("-days", "60"))
    for d, rc, words in ((expired, 1, "expired at 2021-01-01"),
                         (notyet, 1, "not valid before 2040-01-01"),
                         (soon, 0, "warning: the server certificate"),
                         (fine, 0, None)):
        up, cfg = ops_config(t, d)
        p = check_cmd(t, cfg)
        out = p.stdout + p.stderr
        check(p.returncode == rc, "%s: exit %d (want %d): %s"
              % (os.path.basename(d), p.returncode, rc, out[-300:]))
        if words:
            check(words in p.stderr, "%s: %r not in %r" % (os.path.basename(d), words,
                                                          p.stderr[-300:]))
        else:
            check("warning" not in p.stderr, "fine: %r" % p.stderr[-300:])
    # The warning period is configurable: 3 days left is fine with a 1-day warning.
    up, cfg = ops_config(t, soon)
    cfg["credentials"]["expiry_warning"] = "1d"
    p = check_cmd(t, cfg)
    check(p.returncode == 0 and "warning" not in p.stderr, "1d: %r" % p.stderr[-300:])


@test("ops.expiry_logged_at_start_and_reload")
def t_expiry_logged(t):
    soon, _ = server_creds(t, "soon", ("-days", "3"))
    up, cfg = ops_config(t, soon)
    cg = H.Certgate(t, cfg)
    evs = wait_event(cg, "credentials_expiring")
    check(len(evs) == 1 and evs[0].get("level") == "warn", "at start: %r" % evs)
    check("expires at" in evs[0].get("message", ""), "message %r" % evs[0])
    cg.signal(signal.SIGHUP)
    evs = wait_event(cg, "credentials_expiring", n=2)
    check(len(evs) == 2, "after SIGHUP: %r" % evs)
    expired, _ = server_creds(t, "expired", ("-startdate", "20200101000000Z", "-enddate",
                                             "20210101000000Z"))
    up2, cfg2 = ops_config(t, expired)
    cg2 = H.Certgate(t, cfg2)
    evs = wait_event(cg2, "credentials_expired")
    check(len(evs) == 1 and evs[0].get("level") == "error", "expired at start: %r" % evs)


# ---------------------------------------------------------------------------------------------
# item 6: metrics


def scrape(cg):
    status, body = H.http_get(cg.admin_port, "/metrics")
    check(status == 200, "/metrics %d" % status)
    return body.decode()


def samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus text exposition."""
    out = {}
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        check(m, "unparsable line %r" % line)
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = m.group(4)
    return out


def value(ss, name, **labels):
    return ss.get((name, frozenset(labels.items())))


@test("ops.metrics_promtool_after_traffic")
def t_metrics(t):
    promtool = shutil.which("promtool")
    check(promtool, "promtool is missing: apt-get install prometheus (scripts/install-deps.sh)")
    S = __import__("test_security")
    S.register(H)
    nxt = int(time.time()) + 7 * 86400
    crl = S.make_crl("ops-metrics", [], nxt=nxt)
    store, up, cg = S.crl_env(t, crl, listeners=lambda up: [
        H.listener("https", "http", up.http, client_auth="require"),
        H.listener("raw", "tcp", up.tcp)])
    body = "x" * 1000
    for i in range(4):
        p = H.curl(t, cg.port("https"), "/body", "ecdsa", extra=("--data-binary", body))
        check(p.returncode == 0 and p.stdout.endswith("200"), "curl: %r" % p.stdout[-100:])
    s = H.plain_connect(t, cg.port("raw"))
    s.sendall(b"y" * 300)
    got = b""
    while len(got) < 300:
        chunk = s.recv(4096)
        check(chunk, "tcp echo closed early")
        got += chunk
    s.close()
    deadline = time.time() + T(3)
    while True:
        text = scrape(cg)
        ss = samples(text)
        if value(ss, "certgate_request_bytes_total", listener="raw") == "300" or \
                time.time() > deadline:
            break
        time.sleep(0.05)
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    check(p.returncode == 0 and not (p.stdout + p.stderr).strip(),
          "promtool check metrics: %d %s" % (p.returncode, (p.stdout + p.stderr)[-500:]))
    # Durations come from a microsecond clock: the sum is not whole milliseconds.
    total = value(ss, "certgate_request_duration_seconds_sum", listener="https")
    count = value(ss, "certgate_request_duration_seconds_count", listener="https")
    check(count == "4", "histogram count %r" % count)
    check(total and not total.endswith("000"), "duration sum %r has millisecond resolution"
          % total)
    check(value(ss, "certgate_request_duration_seconds_bucket", listener="https", le="0.0001")
          is not None, "no sub-millisecond bucket")
    check(int(value(ss, "certgate_request_bytes_total", listener="https") or 0) >= 4000,
          "request bytes %r" % value(ss, "certgate_request_bytes_total", listener="https"))
    check(int(value(ss, "certgate_response_bytes_total", listener="https") or 0) > 0,
          "response bytes %r" % value(ss, "certgate_response_bytes_total", listener="https"))
    check(value(ss, "certgate_request_bytes_total", listener="raw") == "300" and
          value(ss, "certgate_response_bytes_total", listener="raw") == "300",
          "tcp bytes %r %r" % (value(ss, "certgate_request_bytes_total", listener="raw"),
                               value(ss, "certgate_response_bytes_total", listener="raw")))
    # No handshake series for a tcp listener; all eight results for the TLS one.
    hs = [k for k in ss if k[0] == "certgate_handshakes_total"]
    check(not [k for k in hs if ("listener", "raw") in k[1]], "tcp listener has handshakes")
    check(len(hs) == 8, "handshake series %r" % hs)
    build = [(dict(k[1]), v) for k, v in ss.items() if k[0] == "certgate_build_info"]
    check(len(build) == 1 and build[0][1] == "1" and build[0][0].get("version") and
          "BoringSSL" in build[0][0].get("tls_library", ""), "certgate_build_info %r" % build)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "process_start_time_seconds", "process_max_fds"):
        check(value(ss, name) is not None, "%s missing" % name)
    check(float(value(ss, "process_cpu_seconds_total")) > 0, "cpu 0")
    check(int(value(ss, "process_resident_memory_bytes")) > 1 << 20, "rss too small")
    check(int(value(ss, "process_open_fds")) >= 5, "open fds %r" % value(ss, "process_open_fds"))
    check(abs(float(value(ss, "process_start_time_seconds")) - time.time()) < 120,
          "start time %r" % value(ss, "process_start_time_seconds"))
    check(value(ss, "certgate_crl_next_update_seconds", tenant="") == str(nxt),
          "crl next update %r, want %d" % (value(ss, "certgate_crl_next_update_seconds",
                                                  tenant=""), nxt))


# ---------------------------------------------------------------------------------------------
# item 7: certgate check names the mistake


def creds_variant(t, name, cert_bytes, key_bytes):
    d = os.path.join(t.dir, name)
    os.makedirs(d)
    with open(os.path.join(d, "tls.crt"), "wb") as f:
        f.write(cert_bytes)
    with open(os.path.join(d, "tls.key"), "wb") as f:
        f.write(key_bytes)
    return d


@test("ops.check_names_credential_mistakes")
def t_check_credentials(t):
    base, _ = server_creds(t, "base")
    crt_path, key_path = os.path.join(base, "tls.crt"), os.path.join(base, "tls.key")
    with open(crt_path, "rb") as f:
        crt = f.read()
    with open(key_path, "rb") as f:
        key = f.read()
    der_crt = openssl("x509", "-in", crt_path, "-outform", "DER")
    der_key = openssl("pkey", "-in", key_path, "-outform", "DER")
    enc_key = openssl("pkey", "-in", key_path, "-aes256", "-passout", "pass:secret")
    legacy_enc = openssl("ec", "-in", key_path, "-aes256", "-passout", "pass:secret")
    cases = [
        ("der-cert", der_crt, key, ["is DER", "openssl x509 -inform DER -in"]),
        ("der-key", crt, der_key, ["is DER", "openssl pkey -inform DER -in"]),
        ("encrypted-key", crt, enc_key, ["encrypted", "passphrase"]),
        ("encrypted-legacy", crt, legacy_enc, ["encrypted", "passphrase"]),
        ("swapped", key, crt, ["swapped"]),
    ]
    for name, c, k, words in cases:
        d = creds_variant(t, name, c, k)
        up, cfg = ops_config(t, d)
        p = check_cmd(t, cfg, name + ".yaml")
        out = p.stdout + p.stderr
        check(p.returncode == 1, "%s: exit %d: %s" % (name, p.returncode, out[-300:]))
        for w in words:
            check(w in p.stderr, "%s: %r not in %r" % (name, w, p.stderr[-400:]))


@test("ops.check_colliding_listeners")
def t_check_colliding(t):
    port = H.free_port()
    up = t.upstream()
    cfg = H.make_config(t, "ecdsa", [
        H.listener("a", "http", up.http, address="0.0.0.0:%d" % port),
        H.listener("b", "tcp", up.tcp, address="127.0.0.1:%d" % port)])
    p = check_cmd(t, cfg)
    check(p.returncode == 2, "exit %d: %s" % (p.returncode, (p.stdout + p.stderr)[-300:]))
    check(re.search(r"check\.yaml:\d+:\d+: listener \"b\": address 127\.0\.0\.1:%d overlaps "
                    r"listener a's 0\.0\.0\.0:%d" % (port, port), p.stderr),
          "message %r" % p.stderr[-300:])


@test("ops.check_missing_token_file")
def t_check_token(t):
    up = t.upstream()
    cfg = H.make_config(t, "ecdsa", [H.listener("https", "http", up.http)])
    token = os.path.join(t.dir, "admin.token")
    cfg["admin"]["token_file"] = token
    p = check_cmd(t, cfg)
    check(p.returncode == 1, "missing: exit %d: %s" % (p.returncode, (p.stdout + p.stderr)[-300:]))
    check("admin.token_file %s: No such file" % token in p.stderr, "message %r" % p.stderr[-300:])
    open(token, "w").close()
    p = check_cmd(t, cfg)
    check(p.returncode == 1 and "empty" in p.stderr, "empty: %d %r" % (p.returncode, p.stderr))
    with open(token, "w") as f:
        f.write("s3cret\n")
    p = check_cmd(t, cfg)
    check(p.returncode == 0, "present: exit %d: %s" % (p.returncode, p.stderr[-300:]))


@test("ops.check_relative_paths_from_config_dir")
def t_check_relative(t):
    # The config sits in conf/, the credentials and store beside it; check and run are started
    # from another directory (/), as systemd does.
    conf = os.path.join(t.dir, "conf")
    os.makedirs(conf)
    creds, _ = server_creds(t, "conf/creds")
    store = make_store(t, {"a": pem("rsa", "root.crt")}, name="conf/store")
    up, cfg = ops_config(t, "creds", "store")
    cfg["access"]["allowed_subjects_file"] = "allowed.json"
    path = os.path.join(conf, "certgate.yaml")
    with open(path, "w") as f:
        f.write(H.yaml_dump(cfg) + "\n")
    p = H.run_cmd([H.Opts.binary, "check", "-c", path], cwd="/")
    check(p.returncode == 0, "check from /: exit %d: %s" % (p.returncode, (p.stdout + p.stderr)[-300:]))
    check(creds in p.stdout or "credentials:" in p.stdout, "summary %r" % p.stdout[:300])
    rel = os.path.relpath(path, t.dir)
    p = H.run_cmd([H.Opts.binary, "check", "-c", rel], cwd=t.dir)
    check(p.returncode == 0, "check -c %s: exit %d: %s" % (rel, p.returncode, p.stderr[-300:]))


@test("ops.check_did_you_mean")
def t_check_did_you_mean(t):
    up = t.upstream()
    cfg = H.make_config(t, "ecdsa", [H.listener("https", "http", up.http)])
    cfg["limits"]["shutdown_dealy"] = "5s"
    p = check_cmd(t, cfg)
    check(p.returncode == 2, "exit %d" % p.returncode)
    check(re.search(r"check\.yaml:\d+:\d+: unknown key \"shutdown_dealy\" in limits; did you mean "
                    r"\"shutdown_delay\"\?", p.stderr), "message %r" % p.stderr[-300:])
    del cfg["limits"]["shutdown_dealy"]
    cfg["listeners"][0]["upstrem"] = cfg["listeners"][0].pop("upstream")
    p = check_cmd(t, cfg)
    check("did you mean \"upstream\"?" in p.stderr, "message %r" % p.stderr[-300:])


# ---------------------------------------------------------------------------------------------
# item 8: workers: auto


def start_raw(t, cfg, prefix=()):
    """Starts certgate under |prefix| (e.g. taskset) with a generated config; returns
    (proc, stderr path). The caller's cleanup kills it."""
    path = os.path.join(t.dir, "raw.yaml")
    with open(path, "w") as f:
        f.write(H.yaml_dump(cfg) + "\n")
    err = os.path.join(t.dir, "raw.stderr")
    proc = subprocess.Popen(list(prefix) + [H.Opts.binary, "run", "-c", path],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(err, "wb"))
    t.procs.append(RawProc(proc))
    return proc, err


class RawProc:
    def __init__(self, proc):
        self.proc = proc

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(T(6))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return []


def wait_started(proc, err, timeout=10):
    deadline = time.time() + T(timeout)
    while time.time() < deadline:
        with open(err) as f:
            for line in f:
                if '"event":"started"' in line:
                    return json.loads(line)
        check(proc.poll() is None, "certgate exited %r" % proc.poll())
        time.sleep(0.05)
    raise H.Failure("no started event")


@test("ops.workers_auto_follows_taskset")
def t_workers_taskset(t):
    check(shutil.which("taskset"), "taskset is missing (util-linux)")
    up = t.upstream()
    cfg = H.make_config(t, "ecdsa", [H.listener("https", "http", up.http)])
    cfg["workers"] = "auto"
    proc, err = start_raw(t, cfg, prefix=("taskset", "-c", "0"))
    ev = wait_started(proc, err)
    check(ev.get("workers") == 1 and ev.get("workers_from") == "auto",
          "taskset -c 0 with workers auto: %r" % ev)
    # Without the pin, auto is every CPU this process may use (what the unit test computes).
    cpus = len(os.sched_getaffinity(0))
    cfg2 = H.make_config(t, "ecdsa", [H.listener("https2", "http", up.http)])
    cfg2["workers"] = "auto"
    path = os.path.join(t.dir, "check.yaml")
    with open(path, "w") as f:
        f.write(H.yaml_dump(cfg2) + "\n")
    p = H.run_cmd(["taskset", "-c", "0", H.Opts.binary, "check", "-c", path])
    check("1 worker)" in p.stdout, "check under taskset -c 0: %r" % p.stdout[:200])
    if cpus > 1:
        p = H.run_cmd([H.Opts.binary, "check", "-c", path])
        check("1 worker)" not in p.stdout, "check without taskset: %r" % p.stdout[:200])


# ---------------------------------------------------------------------------------------------
# registration


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
