#!/usr/bin/env python3
"""test_layers.py: the layering of proxy/ (issue 10 item 1), in the group `layers.`.

- scripts/check-layers.py passes on the tree: no include cycle between modules, no include up
  the layer order, no stale entry in its allow-list;
- the check is not vacuous: on a small made-up tree it finds an include cycle inside a layer
  and an include that goes up the layer order;
- every folder of proxy/ is a layer the README's architecture table names.

run.py calls register(itself). Needs no certgate process.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile

H = None  # run.py's module, set by register()


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def script():
    return os.path.join(H.ROOT, "scripts", "check-layers.py")


def load_checker():
    spec = importlib.util.spec_from_file_location("check_layers", script())
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def t_check_passes(t):
    r = subprocess.run([sys.executable, script()], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "check-layers.py failed:\n" + r.stdout + r.stderr)


def write(root, rel, text):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w", encoding="utf-8") as f:
        f.write(text)


def t_check_finds_cycle_and_upward(t):
    m = load_checker()
    with tempfile.TemporaryDirectory() as root:
        write(root, "ca-store/ca_x.h", "")
        write(root, "proxy/core/a.h", '#include "core/b.h"\n')
        write(root, "proxy/core/b.c", '#include "core/b.h"\n#include "core/a.h"\n')
        write(root, "proxy/core/b.h", "")
        write(root, "proxy/http/h.c", '#include "http/h.h"\n#include "core/a.h"\n')
        write(root, "proxy/http/h.h", "")
        problems, _, _ = m.check(root, allowed=set())
        check(any("include cycle" in p and "core/a" in p and "core/b" in p for p in problems),
              "no cycle found: %s" % problems)
        check(not any("above" in p for p in problems), "spurious layer problem: %s" % problems)
        write(root, "proxy/core/c.c", '#include "http/h.h"\n')
        problems, _, _ = m.check(root, allowed=set())
        check(any("core/c includes http/h, a layer above it" in p for p in problems),
              "upward include not found: %s" % problems)
        problems, _, _ = m.check(root, allowed={"core/c -> http/h", "core/x -> core/y"})
        check(any("core/x -> core/y" in p and "no longer occurs" in p for p in problems),
              "stale allow-list entry not found: %s" % problems)


def t_folders_are_layers(t):
    m = load_checker()
    proxy = os.path.join(H.ROOT, "proxy")
    with open(os.path.join(H.ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read().split("## Architecture", 1)[1].split("\n## ", 1)[0]
    for d in sorted(os.listdir(proxy)):
        if not os.path.isdir(os.path.join(proxy, d)):
            continue
        check(d in m.LAYERS, "proxy/%s is not a layer of scripts/check-layers.py" % d)
        check("`proxy/%s/" % d in readme, "README's architecture table lacks proxy/%s/" % d)


TESTS = [
    ("layers.check_passes", t_check_passes),
    ("layers.check_finds_cycle_and_upward", t_check_finds_cycle_and_upward),
    ("layers.folders_are_layers", t_folders_are_layers),
]


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS)
