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
    """The JSON event lines certgate wrote so far (optionally only |name|)."""
    out = []
    for line in H.log_lines(cg):
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if name is None or ev.get("event") == name:
            out.append(ev)
    return out


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
    up, cg, ctx = H.http_env(t, limits={"shutdown_delay": "2s", "drain_timeout": "5s"})
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
            result["resp"] = H.https_request(t, port, ctx, H.get_req("/slow?ms=3500"))
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
    check(time.time() - start < 1.8, "the checks took too long to prove anything")
    # After the delay: the port refuses while the slow request drains; the admin port stays.
    time.sleep(max(0, start + 2.4 - time.time()))
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
    check(ev.get("shutdown_delay_ms") == 2000 and ev.get("signal") == signal.SIGTERM,
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
