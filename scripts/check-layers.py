#!/usr/bin/env python3
"""check-layers.py: the include graph of proxy/ and ca-store/ has no cycle and flows one way.

A module is a .c/.h pair (proxy/net/conn.c and proxy/net/conn.h are the module net/conn; a .c
or .h alone is a module too). X_internal.h, the private interface that the files of a module
split over several .c files share (core/config_internal.h), belongs to module X. Module A depends on module B when a file of A has
`#include "..."` naming a file of B. Every module belongs to the layer its folder names, and
LAYERS lists them from the bottom up: a module may include its own layer and the layers below
it, never one above. Within a layer any include is allowed as long as the modules form no cycle.

The check fails (exit 1, one line per problem) on
- an include that goes up the layer order,
- a cycle between modules (printed as a path),
- an entry of ALLOWED that no longer occurs (so the list can only shrink).

ALLOWED lists the includes the code still has that break the rules, as "from -> to" module
names; the layer check ignores them and so does the cycle search. Emptying it is the goal.

Usage: check-layers.py [--root DIR] [-v]
"""
import argparse
import os
import re
import sys

# Bottom first. "ca-store" is the CA store library; "proxy" is proxy/main.c, on top.
LAYERS = [
    "ca-store",  # the index.yml CA store, a library of its own
    "core",      # base, buf, config, log, metrics: what every layer uses
    "http",      # the HTTP/1 codec: pure functions over buffers, no connection, no loop
    "tls",       # contexts, client verification, revocation, the allowlist of subjects
    "net",       # the socket layer: the client connection, its buffers, timer, PROXY in
    "upstream",  # the upstream side: connect, pool, relays
    "exchange",  # one request and its response: the forwarding policy
    "h2",        # HTTP/2: the client session, its streams, and their two upstream sides
    "server",    # listeners and worker loops
    "control",   # admin API, reload, probe, notify
    "proxy",     # main.c
]

# Includes that break the rules today, "from -> to" (module names as printed). Shrink only.
ALLOWED = set()

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def module_of(root, path):
    """proxy/net/conn.c -> net/conn; ca-store/ca_pem.h -> ca-store/ca_pem; proxy/main.c ->
    proxy/main."""
    rel = os.path.relpath(path, root)
    stem = os.path.splitext(rel)[0]
    if stem.startswith("proxy" + os.sep) and stem.count(os.sep) >= 2:
        stem = stem[len("proxy" + os.sep):]
    stem = stem.replace(os.sep, "/")
    if rel.endswith("_internal.h"):
        stem = stem[: -len("_internal")]
    return stem


def layer_of(module):
    return module.split("/", 1)[0]


def sources(root):
    out = []
    for top in ("proxy", "ca-store"):
        for d, _, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if f.endswith((".c", ".h")):
                    out.append(os.path.join(d, f))
    return sorted(out)


def resolve(root, src, name):
    """Where `#include "name"` in |src| lands, as the compiler finds it: beside the file, then
    -Iproxy, then -Ica-store (the Makefile's order). None for a header outside the tree."""
    for base in (os.path.dirname(src), os.path.join(root, "proxy"), os.path.join(root, "ca-store")):
        p = os.path.normpath(os.path.join(base, name))
        if os.path.isfile(p):
            return p
    return None


def graph(root):
    edges = {}  # module -> {module: "file:line"}
    problems = []
    for src in sources(root):
        m = module_of(root, src)
        edges.setdefault(m, {})
        with open(src, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for match in INCLUDE.finditer(text):
            target = resolve(root, src, match.group(1))
            where = "%s:%d" % (os.path.relpath(src, root), text.count("\n", 0, match.start()) + 1)
            if target is None:
                problems.append("%s: #include \"%s\" names no file of the tree" % (where, match.group(1)))
                continue
            t = module_of(root, target)
            if t != m:
                edges[m].setdefault(t, where)
    return edges, problems


def find_cycle(edges):
    """Returns one cycle as a list of modules, or None (iterative DFS, three colours)."""
    colour = {m: 0 for m in edges}
    for start in sorted(edges):
        if colour[start]:
            continue
        stack = [(start, iter(sorted(edges[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            if colour.get(nxt, 0) == 1:
                return path[path.index(nxt):] + [nxt]
            if colour.get(nxt, 0) == 0:
                colour[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(sorted(edges.get(nxt, {})))))
    return None


def check(root, allowed=ALLOWED, verbose=False):
    edges, problems = graph(root)
    rank = {name: i for i, name in enumerate(LAYERS)}
    used = set()
    kept = {}
    for m in sorted(edges):
        kept[m] = {}
        if layer_of(m) not in rank:
            problems.append("%s: folder %s is not in LAYERS (scripts/check-layers.py)" % (m, layer_of(m)))
            continue
        for t, where in sorted(edges[m].items()):
            key = "%s -> %s" % (m, t)
            if key in allowed:
                used.add(key)
                continue
            kept[m][t] = where
            if layer_of(t) in rank and rank[layer_of(t)] > rank[layer_of(m)]:
                problems.append("%s: %s includes %s, a layer above it (%s above %s)"
                                % (where, m, t, layer_of(t), layer_of(m)))
    # Every cycle is reported: after one is found its closing include is set aside and the
    # search goes on.
    for _ in range(100):
        cycle = find_cycle(kept)
        if not cycle:
            break
        steps = ["%s (%s)" % (b, kept[a][b]) for a, b in zip(cycle, cycle[1:])]
        problems.append("include cycle: %s -> %s" % (cycle[0], " -> ".join(steps)))
        del kept[cycle[-2]][cycle[-1]]
    for key in sorted(allowed - used):
        problems.append("ALLOWED has \"%s\", which no longer occurs: remove it" % key)
    if verbose:
        for m in sorted(edges):
            print("%-24s -> %s" % (m, " ".join(sorted(edges[m]))))
    n_inc = sum(len(v) for v in edges.values())
    return problems, len(edges), n_inc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("-v", action="store_true", help="print the module graph")
    args = ap.parse_args()
    problems, n_mod, n_inc = check(os.path.abspath(args.root), verbose=args.v)
    for p in problems:
        print("check-layers: " + p)
    if problems:
        print("check-layers: FAILED, %d problem(s)" % len(problems))
        return 1
    print("check-layers: %d modules, %d module includes, no cycle, none upwards, %d allowed "
          "exception(s)" % (n_mod, n_inc, len(ALLOWED)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
