#!/usr/bin/env python3
"""tenants_helper.py: helpers of scripts/bench/tenants.sh. `mkstore` writes a CA store in the
index.yml layout with N tenants (a few distinct CA files reused across tenant directories, plus
the tenant `bench`); `probe` renames a file over a tenant's bundle and measures how long until a
new mTLS handshake sees the change (a client of the added CA accepted, or of the removed one
refused). Loopback only; every wait is bounded."""
import argparse
import os
import socket
import ssl
import sys
import time


def mkstore(a):
    """index.yml + tenants/bench/ca.pem + tenants/tNNNNN/{a,b}.pem (N - 1 filler tenants)."""
    fillers = [open(f, "rb").read() for f in a.fillers]
    bench = open(a.bench_ca, "rb").read()
    os.makedirs(os.path.join(a.dir, "common"), exist_ok=True)
    os.makedirs(os.path.join(a.dir, "tenants", "bench"), exist_ok=True)
    with open(os.path.join(a.dir, "tenants", "bench", "ca.pem"), "wb") as f:
        f.write(bench)
    lines = ["# %d tenants, written by tests/bench/tenants_helper.py" % a.tenants, "tenants:",
             "  bench:", "  - ca.pem"]
    k = len(fillers)
    for i in range(a.tenants - 1):
        tid = "t%05d" % i
        d = os.path.join(a.dir, "tenants", tid)
        os.makedirs(d, exist_ok=True)
        for j, name in enumerate(("a.pem", "b.pem")):
            with open(os.path.join(d, name), "wb") as f:
                f.write(fillers[(i + j) % k])
        lines += ["  %s:" % tid, "  - a.pem", "  - b.pem"]
    tmp = os.path.join(a.dir, ".index.yml.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.rename(tmp, os.path.join(a.dir, "index.yml"))


def attempt(ctx, host, port, sni, timeout):
    """One new connection: handshake + GET /. Returns accept, reject or other:WHAT."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=sni) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                          % sni.encode())
                data = s.recv(64)
    except ssl.SSLError:
        return "reject"  # the alert of the refused client certificate (TLS 1.3: on read)
    except (ConnectionResetError, BrokenPipeError):
        return "reject"
    except OSError as e:
        return "other:%s" % e.__class__.__name__
    if data.startswith(b"HTTP/1.1 200"):
        return "accept"
    if not data:
        return "reject"
    return "other:" + data[:12].decode("latin-1").replace(" ", "_")


def probe(a):
    host, port = a.addr.rsplit(":", 1)
    port = int(port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("probe: loopback targets only")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # what is measured is the server's verdict on the client
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(a.cert, a.key)
    before = attempt(ctx, host, port, a.sni, 2.0)
    if before == a.expect:
        print("probe error=already_%s" % a.expect)
        return 1
    t0 = time.monotonic()
    os.rename(a.src, a.dst)
    n = 0
    while True:
        n += 1
        r = attempt(ctx, host, port, a.sni, 2.0)
        el = time.monotonic() - t0
        if r == a.expect:
            print("probe visible_ms=%.1f attempts=%d before=%s" % (el * 1000, n, before))
            return 0
        if el > a.timeout:
            print("probe error=timeout last=%s attempts=%d" % (r, n))
            return 1
        time.sleep(a.interval)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mkstore")
    m.add_argument("dir")
    m.add_argument("--tenants", type=int, required=True, help="tenants including bench")
    m.add_argument("--bench-ca", required=True)
    m.add_argument("--fillers", nargs="+", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--addr", required=True)
    p.add_argument("--sni", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--src", required=True, help="the new bundle, outside the watched tree")
    p.add_argument("--dst", required=True, help="the tenant's bundle it replaces (rename)")
    p.add_argument("--expect", choices=("accept", "reject"), required=True)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--interval", type=float, default=0.002)
    a = ap.parse_args()
    if a.cmd == "mkstore":
        mkstore(a)
        return 0
    return probe(a)


if __name__ == "__main__":
    sys.exit(main())
