# lib.sh: what run.sh and tenants.sh share, sourced by both (not run on its own): logging, the
# processes a benchmark starts (recorded in PIDS, all stopped on exit), port and /proc helpers,
# CPU pinning and the load generator's build. Set BENCH_TAG before sourcing it.

BSSL=/usr/lib/x86_64-linux-gnu/android # BoringSSL (android-libboringssl-dev)

log() { printf '%s: %s\n' "${BENCH_TAG:-bench}" "$*" >&2; }

# ---- processes: everything started here is recorded and stopped by pid ----------------------
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
    done
    sleep 0.3
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true # reap them: nobody else will
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() { # stop_pid PID: TERM, wait up to 5 s, then KILL
    local p=$1
    kill -TERM "$p" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

free_port() { # free_port PORT: fail when something listens there already
    python3 - "$1" "${BENCH_TAG:-bench}" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is fine
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit("%s: 127.0.0.1:%s is already in use" % (sys.argv[2], sys.argv[1]))
PY
}

field() { # field KEY LINE: the value of KEY=... in a loadgen result line
    sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"
}

proc_tree() { # proc_tree PID: the pid and all its descendants
    local c
    echo "$1"
    for c in $(pgrep -P "$1" 2>/dev/null); do proc_tree "$c"; done
}

rss_kb() { # rss_kb PID: VmRSS summed over the process tree, in KiB
    local t=0 p r
    for p in $(proc_tree "$1"); do
        r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
        t=$((t + ${r:-0}))
    done
    echo "$t"
}

# set_pinning: with PIN=on and two CPUs or more, PIN_PROXY runs a proxy on CPU 0 and PIN_CLIENT
# the load generator (and upstream) on CPU 1; otherwise both are empty and PIN=off.
set_pinning() {
    PIN_PROXY=()
    PIN_CLIENT=()
    if [ "$PIN" = on ] && command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
        PIN_PROXY=(taskset -c 0)
        PIN_CLIENT=(taskset -c 1)
    else
        PIN=off
    fi
}

build_loadgen() { # build_loadgen PATH: (re)build tests/bench/loadgen.c when it is newer, and
    # tests/bench/grpc_upstream.c (the h2c gRPC responder) beside it as DIR/grpc_upstream
    if [ ! -x "$1" ] || [ "$root/tests/bench/loadgen.c" -nt "$1" ]; then
        log "building the load generator"
        cc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -I/usr/include/android \
            -o "$1" "$root/tests/bench/loadgen.c" \
            -L"$BSSL" -Wl,-rpath,"$BSSL" -lssl -lcrypto -lnghttp2 -lpthread
    fi
    local g
    g="$(dirname "$1")/grpc_upstream"
    if [ ! -x "$g" ] || [ "$root/tests/bench/grpc_upstream.c" -nt "$g" ]; then
        cc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -o "$g" \
            "$root/tests/bench/grpc_upstream.c" -lnghttp2
    fi
}
