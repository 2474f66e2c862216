#!/usr/bin/env python3
"""table.py: turns scripts/bench/run.sh's results.txt (server, figure, value, note; tab
separated) into the one benchmark table, printed on stdout and written as Markdown with the
machine description to tests/bench/last-results.md."""
import argparse
import datetime
import os
import platform
import re

# (figure key, label, better: "high" | "low" | None, number format)
ROWS = [
    ("hs13", "full mTLS handshakes/s, TLS 1.3", "high", "{:,.0f}"),
    ("hs12", "full mTLS handshakes/s, TLS 1.2", "high", "{:,.0f}"),
    ("res13", "resumed handshakes/s, TLS 1.3", "high", "{:,.0f}"),
    ("ka", "keep-alive requests/s, 50 connections", "high", "{:,.0f}"),
    ("ka_p50", "keep-alive latency p50, ms (lower is better)", "low", "{:.2f}"),
    ("ka_p99", "keep-alive latency p99, ms (lower is better)", "low", "{:.2f}"),
    ("large", "1 MiB responses, MB/s (4 connections)", "high", "{:,.0f}"),
    ("h2", "h2 keep-alive requests/s, 10 connections x 5 streams", "high", "{:,.0f}"),
    ("h2_p50", "h2 keep-alive latency p50, ms (lower is better)", "low", "{:.2f}"),
    ("h2_p99", "h2 keep-alive latency p99, ms (lower is better)", "low", "{:.2f}"),
    ("grpc", "gRPC unary calls/s, h2c upstream, 10 connections x 5 streams", "high", "{:,.0f}"),
    ("idle_kb", "memory per idle TLS connection, KB (lower is better)", "low", "{:.1f}"),
    ("hs13_cpu", "proxy CPU per full handshake, TLS 1.3, us (lower is better)", "low", "{:,.0f}"),
    ("hs12_cpu", "proxy CPU per full handshake, TLS 1.2, us (lower is better)", "low", "{:,.0f}"),
    ("res13_cpu", "proxy CPU per resumed handshake, us (lower is better)", "low", "{:,.0f}"),
    ("ka_cpu", "proxy CPU per keep-alive request, us (lower is better)", "low", "{:,.1f}"),
    ("large_cpu", "proxy CPU per MB of 1 MiB responses, us (lower is better)", "low", "{:,.0f}"),
    ("h2_cpu", "proxy CPU per h2 keep-alive request, us (lower is better)", "low", "{:,.1f}"),
    ("grpc_cpu", "proxy CPU per gRPC unary call, us (lower is better)", "low", "{:,.1f}"),
    ("hs13_w2", "2 workers: full handshakes/s, TLS 1.3", "high", "{:,.0f}"),
    ("ka_w2", "2 workers: keep-alive requests/s", "high", "{:,.0f}"),
    ("scale_hs", "2 workers / 1 worker, handshakes", "high", "{:.2f}x"),
    ("scale_ka", "2 workers / 1 worker, keep-alive", "high", "{:.2f}x"),
    ("hs13_c1", "cross-check, 1 connection: loadgen handshakes/s", None, "{:,.0f}"),
    ("stime", "cross-check, 1 connection: openssl s_time handshakes/s", None, "{:,.0f}"),
    ("forwarding", "client cert forwarded, forged copy removed", None, "{}"),
    ("forwarding_h2", "the same over h2", None, "{}"),
    ("forwarding_grpc", "the same on the gRPC path (h2 to an h2c upstream)", None, "{}"),
    # BENCH_TENANTS=on (scripts/bench/tenants.sh; details in tests/bench/last-tenants.md)
    ("tenants_hs_ratio", "CA store of 10,000 tenants / 1 tenant: full handshakes/s (goal >= 0.95)",
     None, "{:.3f}"),
    ("tenants_cpu_ratio", "CA store of 10,000 tenants / 1 tenant: CPU per handshake (goal <= 1.05)",
     None, "{:.3f}"),
    ("tenants_reload_ms", "CA store of 10,000 tenants: reload of one tenant, ms (goal < 50)", None,
     "{:,.0f}"),
    ("tenants_visible_ms", "CA store of 10,000 tenants: rename to a new handshake seeing it, ms",
     None, "{:,.0f}"),
]


def load(path):
    """Returns {(server, figure): value} with the median of a figure's rounds, and the notes."""
    rounds, notes = {}, []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            while len(parts) < 4:
                parts.append("")
            server, fig, value, note = parts[:4]
            rounds.setdefault((server, fig), []).append(value)
            if note:
                notes.append((server, fig, note))
    vals = {}
    for key, vs in rounds.items():
        nums = sorted(n for n in (num(v) for v in vs) if n is not None)
        if nums:
            mid = len(nums) // 2
            vals[key] = str(nums[mid] if len(nums) % 2 else (nums[mid - 1] + nums[mid]) / 2)
        else:
            vals[key] = vs[0]
    return vals, notes


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
            mem = "%.1f GiB" % (kb / 1048576)
    except (OSError, AttributeError):
        pass
    distro = "?"
    try:
        with open("/etc/os-release") as f:
            m = re.search(r'PRETTY_NAME="([^"]*)"', f.read())
            distro = m.group(1) if m else "?"
    except OSError:
        pass
    return "%d CPUs, %s, %s RAM, %s, Linux %s" % (
        os.cpu_count() or 0, model, mem, distro, platform.release())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--servers", required=True)
    ap.add_argument("--skipped", default="")
    ap.add_argument("--duration", default="5")
    ap.add_argument("--rounds", default="1")
    ap.add_argument("--idle", default="")
    ap.add_argument("--pin", default="off")
    ap.add_argument("--elapsed", default="")
    ap.add_argument("--versions", default="")
    ap.add_argument("--perf-dir", default="")
    ap.add_argument("--loadavg", default="?")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    servers = a.servers.split()
    peers = [s for s in servers if s != "certgate"]
    titles = {"certgate": "certgate", "nginx": "nginx", "haproxy": "HAProxy", "caddy": "Caddy"}
    vals, notes = load(a.results)
    for s in servers:
        for fig, one, two in (("scale_hs", "hs13", "hs13_w2"), ("scale_ka", "ka", "ka_w2")):
            x, y = num(vals.get((s, one))), num(vals.get((s, two)))
            if x and y is not None:
                vals[(s, fig)] = str(y / x)
    noted = {(s, f) for s, f, _ in notes}

    head = ["figure"] + [titles.get(s, s) for s in servers] + ["certgate / best peer"]
    table = []
    for key, label, better, fmt in ROWS:
        if key == "idle_kb":
            held = num(vals.get(("certgate", "idle_held"))) or num(a.idle) or 0
            held = "{:,}".format(int(held))
            label = "memory per idle TLS connection, KB (%s held; lower is better)" % held
        row = [label]
        present = False
        for s in servers:
            v = vals.get((s, key), "")
            n = num(v)
            if n is not None:
                cell = fmt.format(n)
                present = True
            else:
                cell = v if v else "-"
                present = present or bool(v)
            if (s, key) in noted:
                cell += " *"
            row.append(cell)
        ratio = "-"
        mine = num(vals.get(("certgate", key)))
        theirs = [num(vals.get((p, key))) for p in peers]
        theirs = [t for t in theirs if t is not None and t > 0]
        if better and mine is not None and theirs:
            best = max(theirs) if better == "high" else min(theirs)
            ratio = "%.2f" % (mine / best)
        row.append(ratio)
        if present:
            table.append(row)

    widths = [max(len(r[i]) for r in [head] + table) for i in range(len(head))]

    def line(r):
        return "| " + " | ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                                 for i, c in enumerate(r)) + " |"

    sep = "| " + " | ".join(("-" * widths[i]) if i == 0 else ("-" * (widths[i] - 1) + ":")
                            for i in range(len(head))) + " |"
    text = [line(head), sep] + [line(r) for r in table]
    footer = []
    if notes:
        footer.append("")
        footer.append("Notes (* in the table):")
        for s, f, n in notes:
            footer.append("- %s %s: %s" % (titles.get(s, s), f, n))
    if a.skipped.strip():
        footer.append("")
        footer.append("Skipped peers (not installable here): " + a.skipped)

    desc = [
        "Machine: " + machine(),
        "Run: %s, %s s per figure and proxy in %s interleaved rounds (median of the rounds), "
        "1 worker each unless stated; CPU pinning (1 worker: proxy on CPU 0, load generator "
        "and upstream on CPU 1): %s; whole run %s s; load average before the run: %s." % (
            datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), a.duration, a.rounds, a.pin,
            a.elapsed, a.loadavg),
    ]
    print("\n".join(text + footer))
    print()
    print("\n".join(desc))

    md = ["# certgate benchmark: last results", "",
          "Written by `make bench` (scripts/bench/run.sh); the ratios in one run are what count,",
          "absolute numbers move from machine to machine.", ""]
    md += ["- " + d for d in desc]
    for v in a.versions.splitlines():
        md.append("- " + v)
    md += ["", ""] + text + footer
    md += ["", "Method: tests/bench/loadgen.c presents the client chain (ECDSA P-256, root -> "
           "intermediate -> client), verifies the server against the root; handshake figures "
           "are 64 connections each doing handshake + GET / + close; resumed uses the newest "
           "session ticket per connection; keep-alive is 50 connections of sequential GET /; "
           "1 MiB is 4 keep-alive connections; h2 is 10 connections (ALPN h2) with 5 GET / "
           "streams in flight each, forwarded to the same HTTP/1.1 upstream; gRPC is the same "
           "with unary calls (POST, application/grpc, te: trailers, a 12-byte message; counted "
           "when the trailers say grpc-status 0) forwarded over h2c to tests/bench/"
           "grpc_upstream.c (certgate: upstream_protocol: h2c; nginx: grpc_pass; HAProxy: "
           "proto h2; Caddy: reverse_proxy h2c://); idle is the RSS growth of a fresh proxy "
           "process (all its processes) while the connections are held after one request each. "
           "Upstream: nginx on 127.0.0.1 serving a 30-byte body and a 1 MiB file."]
    if a.perf_dir:
        for name in ("handshake", "keepalive", "h2"):
            p = os.path.join(a.perf_dir, "perf-%s.txt" % name)
            if os.path.exists(p):
                with open(p) as f:
                    body = f.read().rstrip()
                md += ["", "```", body, "```"]
    with open(a.out, "w") as f:
        f.write("\n".join(md) + "\n")
    print("written to %s" % a.out)


if __name__ == "__main__":
    main()
