#!/usr/bin/env python3
"""test_docs.py: the README is the front door (issue 10 item 7), in the group `docs.`.

- every relative link in README.md and docs/*.md names a file or folder that exists, and every
  `#anchor` names a heading of its target page (GitHub's slug rule);
- README.md stays a front door: what certgate is, the two commands, the architecture tour and
  links (under 12 KB), and every page of docs/ is linked from it;
- every path the README's architecture table names exists.

run.py calls register(itself). Needs no certgate process.
"""

import glob
import os
import re

H = None  # run.py's module, set by register()

LINK = re.compile(r"\]\(([^)\s]+)\)")


def check(cond, msg):
    if not cond:
        raise H.Failure(msg)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path):
    out = set()
    in_code = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("```"):
                in_code = not in_code
            elif not in_code and line.startswith("#"):
                out.add(slug(line.lstrip("#")))
    return out


def pages():
    root = H.ROOT
    out = [os.path.join(root, "README.md")]
    d = os.path.join(root, "docs")
    out += sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".md"))
    return out


def t_links_resolve(t):
    bad = []
    for page in pages():
        with open(page, encoding="utf-8") as f:
            text = f.read()
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, frag = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(dest):
                bad.append("%s: %s (no such file)" % (os.path.relpath(page, H.ROOT), target))
            elif frag and dest.endswith(".md") and frag not in anchors(dest):
                bad.append("%s: %s (no such heading)" % (os.path.relpath(page, H.ROOT), target))
    check(not bad, "broken links: " + "; ".join(bad))


def t_readme_is_a_front_door(t):
    readme = os.path.join(H.ROOT, "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    check(len(text.encode()) < 12 * 1024, "README.md is %d bytes; keep reference in docs/"
          % len(text.encode()))
    for needed in ("make run", "make test", "## Architecture"):
        check(needed in text, "README.md lacks %r" % needed)
    linked = {os.path.normpath(os.path.join(H.ROOT, p.partition("#")[0]))
              for p in LINK.findall(text) if not re.match(r"^[a-z]+:", p)}
    for page in pages()[1:]:
        check(page in linked, "README.md does not link %s" % os.path.relpath(page, H.ROOT))


def t_architecture_paths_exist(t):
    with open(os.path.join(H.ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    missing = []
    for row in re.findall(r"^\| (`[^|]+)\|", section, re.M):
        for pattern in re.findall(r"`([^`]+)`", row):
            if not glob.glob(os.path.join(H.ROOT, pattern)):
                missing.append(pattern)
    check(not missing, "the architecture table names missing paths: %s" % missing)


TESTS = [
    ("docs.links_resolve", t_links_resolve),
    ("docs.readme_is_a_front_door", t_readme_is_a_front_door),
    ("docs.architecture_paths_exist", t_architecture_paths_exist),
]


def register(harness):
    """Adds this module's tests to run.py's registry (idempotent)."""
    global H
    H = harness
    harness.add_tests(TESTS)
