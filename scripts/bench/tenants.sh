#!/usr/bin/env bash
# tenants.sh: the CA-store scale figures of `make bench` (issue 6: "a CA store of 10,000 tenants
# must not change handshake cost by more than 5% against one tenant, and reloading one tenant in
# it takes under 50 ms"). Runs certgate with a 1-tenant and a 10,000-tenant store side by side,
# measures full TLS 1.3 mTLS handshakes (rate and certgate CPU per handshake) in interleaved
# rounds, then reloads one tenant of the big store by renaming a file over its bundle (reload
# duration, and the wall time until a new handshake sees the change) and by SIGHUP, with a perf
# profile of the reloads. Prints one table, also written to tests/bench/last-tenants.md.
#
# Standalone: scripts/bench/tenants.sh; from run.sh with BENCH_TENANTS=on.
# Environment (all optional):
#   BENCH_TENANTS_N=10000        tenants in the big store (bench + N-1 others, 2 CA files each)
#   BENCH_TENANTS_ROUNDS=8       interleaved handshake rounds (1 tenant, big, big, 1 tenant, ...)
#   BENCH_TENANTS_DURATION=2     seconds measured per round and store (after a 0.3 s warm-up)
#   BENCH_TENANTS_RELOADS=5      reloads measured per kind (rename-over, SIGHUP)
#   BENCH_TENANTS_IDLE=10        seconds of idle CPU measured (the periodic rescan, poll_interval
#                                10s); 0 skips it
#   BENCH_TENANTS_DEBOUNCE=10ms  reload.debounce of both instances
#   BENCH_PIN=on  BENCH_PERF=auto  BENCH_DIR=build/bench  CERTGATE=build/certgate
#   BENCH_TENANTS_RESULTS=tests/bench/last-tenants.md
#   BENCH_RESULTS_TSV=FILE       also append the headline figures to run.sh's results.txt
# 127.0.0.1 only; every wait is bounded; every process started here is stopped by pid on exit.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_TAG=bench-tenants
# shellcheck source=scripts/bench/lib.sh
. "$root/scripts/bench/lib.sh"
cd "$root"
N=${BENCH_TENANTS_N:-10000}
ROUNDS=${BENCH_TENANTS_ROUNDS:-8}
DUR=${BENCH_TENANTS_DURATION:-2}
RELOADS=${BENCH_TENANTS_RELOADS:-5}
DEBOUNCE=${BENCH_TENANTS_DEBOUNCE:-10ms}
IDLE_S=${BENCH_TENANTS_IDLE:-10}
PIN=${BENCH_PIN:-on}
PERF=${BENCH_PERF:-auto}
base=${BENCH_DIR:-$root/build/bench}
certgate=${CERTGATE:-$root/build/certgate}
results=${BENCH_TENANTS_RESULTS:-$root/tests/bench/last-tenants.md}
tsv=${BENCH_RESULTS_TSV:-}
case "$base" in /*) ;; *) base="$root/$base" ;; esac
case "$certgate" in /*) ;; *) certgate="$root/$certgate" ;; esac
out="$base/tenants"
helper="$root/tests/bench/tenants_helper.py"
UP_PORT=18091
declare -A PORT=([one]=18451 [big]=18452)
declare -A ADMIN=([one]=19451 [big]=19452)
t_start=$(date +%s)
loadavg=$(cut -d' ' -f1-3 /proc/loadavg)

ms_now() { date +%s%3N; }

for c in curl python3 openssl nginx; do
    command -v $c >/dev/null 2>&1 || { log "$c is needed (make deps; nginx is the upstream)"; exit 1; }
done
set_pinning

# ---- build --------------------------------------------------------------------------------
mkdir -p "$out"
[ -x "$certgate" ] || make --no-print-directory -C "$root" all >/dev/null
# a private copy: a rebuild of build/certgate during the run changes neither what is measured
# nor the symbols perf needs
cp "$certgate" "$out/certgate.bin"
certgate="$out/certgate.bin"
loadgen="$base/loadgen"
build_loadgen "$loadgen"

# ---- PKI: run.sh's demo chain, a *.example.com server certificate, filler CAs, a new CA ------
t0=$(ms_now)
pki="$base/pki"
if [ ! -f "$pki/client-chain.crt" ] || [ ! -f "$pki/intermediate.key" ]; then
    "$root/scripts/pki.sh" "$pki" 2>/dev/null
fi
k="$out/keys"
rm -rf "$out/cred" "$out/stage"
mkdir -p "$k" "$out/cred" "$out/stage"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
ca_ext=(-addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign")
# server: *.example.com (the SNI names the tenant), signed by the demo intermediate
openssl req -new "${ec[@]}" -keyout "$out/cred/tls.key" -subj "/O=certgate bench/CN=*.example.com" \
    -out "$k/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:*.example.com,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' \
    >"$k/server.ext"
openssl x509 -req -in "$k/server.csr" -CA "$pki/intermediate.crt" -CAkey "$pki/intermediate.key" \
    -set_serial "0x$(openssl rand -hex 8)" -days 30 -sha256 -extfile "$k/server.ext" \
    -out "$k/server-leaf.crt" 2>/dev/null
cat "$k/server-leaf.crt" "$pki/intermediate.crt" >"$out/cred/tls.crt"
# kept across runs (with the store built from them), so that a rerun need not rewrite 20,000 files
fillers=()
for i in 0 1 2 3 4 5 6 7; do fillers+=("$k/filler$i.pem"); done
if [ ! -f "$k/complete" ]; then
    # filler CAs: a few distinct certificates, reused as files across the tenant directories
    for i in 0 1 2 3 4 5 6 7; do
        openssl req -x509 "${ec[@]}" -keyout /dev/null -subj "/O=bench tenant/CN=filler CA $i" \
            -days 3650 "${ca_ext[@]}" -out "$k/filler$i.pem" 2>/dev/null
    done
    # the CA added to one tenant by the reload test, and a client it issued
    openssl req -x509 "${ec[@]}" -keyout "$k/newca.key" -subj "/O=bench tenant/CN=added CA" \
        -days 3650 "${ca_ext[@]}" -out "$k/newca.pem" 2>/dev/null
    openssl req -new "${ec[@]}" -keyout "$k/client2.key" -subj "/O=bench tenant/CN=client of added CA" \
        -out "$k/client2.csr" 2>/dev/null
    printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' \
        >"$k/client.ext"
    openssl x509 -req -in "$k/client2.csr" -CA "$k/newca.pem" -CAkey "$k/newca.key" \
        -set_serial "0x$(openssl rand -hex 8)" -days 30 -sha256 -extfile "$k/client.ext" \
        -out "$k/client2.crt" 2>/dev/null
    touch "$k/complete"
fi
t_pki=$(($(ms_now) - t0))

# ---- the two stores ------------------------------------------------------------------------
# the tenant whose bundle the reload test replaces: tenants/<target>/b.pem holds filler
# (i + 1) % 8 for tenant t<i> (tenants_helper.py mkstore)
ti=$((N / 2 - 1))
target=t$(printf '%05d' "$ti")
[ "$N" -gt 1 ] || target=bench
tdir="$out/store-big/tenants/$target"
bundle="$tdir/b.pem"
[ "$target" = bench ] && bundle="$tdir/ca.pem"
t0=$(ms_now)
rm -rf "$out/store-one"
python3 "$helper" mkstore "$out/store-one" --tenants 1 --bench-ca "$pki/intermediate.crt" \
    --fillers "${fillers[@]}"
stamp="$N $(cat "${fillers[@]}" "$pki/intermediate.crt" | sha256sum | cut -c1-64)"
if [ -d "$out/store-big" ] && [ "$(cat "$out/store-big.stamp" 2>/dev/null)" = "$stamp" ]; then
    store_made="reused"
else
    rm -rf "$out/store-big" "$out/store-big.stamp"
    python3 "$helper" mkstore "$out/store-big" --tenants "$N" --bench-ca "$pki/intermediate.crt" \
        --fillers "${fillers[@]}"
    echo "$stamp" >"$out/store-big.stamp"
    store_made="written"
fi
# the reload test's bundle as mkstore wrote it, also after an interrupted run
if [ "$target" = bench ]; then
    cp "$pki/intermediate.crt" "$bundle"
else
    cp "${fillers[$(((ti + 1) % 8))]}" "$bundle"
fi
t_store=$(($(ms_now) - t0))
store_files=$(find "$out/store-big" -type f | wc -l)
log "PKI in $t_pki ms; stores $store_made in $t_store ms ($N tenants, $store_files files)"

# ---- upstream and the two certgate instances --------------------------------------------------
up="$out/upstream"
mkdir -p "$up/www" "$up/tmp"
printf 'hello from the bench upstream\n' >"$up/www/index.html"
cat >"$up/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $up/nginx.pid;
error_log $up/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path $up/tmp; proxy_temp_path $up/tmp; fastcgi_temp_path $up/tmp;
    uwsgi_temp_path $up/tmp; scgi_temp_path $up/tmp;
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        root $up/www;
        location = / { try_files /index.html =404; }
    }
}
EOF
free_port $UP_PORT
"${PIN_CLIENT[@]}" nginx -c "$up/nginx.conf" -p "$up" >"$up/stdout.log" 2>&1 &
PIDS+=($!)

declare -A SPID=() STARTUP=()
start_cg() { # start_cg one|big STOREDIR
    local n=$1 store=$2 d="$out/$1"
    mkdir -p "$d"
    cat >"$d/certgate.yaml" <<EOF
workers: 1
log: {level: info, access: off}
credentials: {dir: $out/cred, cert: tls.crt, key: tls.key}
ca_store: {dir: $store}
tenancy: {sni: "{tenant}.example.com"}
reload: {debounce: $DEBOUNCE}
admin: {address: 127.0.0.1:${ADMIN[$n]}}
listeners:
  - name: bench
    address: 127.0.0.1:${PORT[$n]}
    mode: http
    upstream: 127.0.0.1:$UP_PORT
    client_auth: require
    client_cert_details: [cert]
EOF
    free_port "${PORT[$n]}"
    free_port "${ADMIN[$n]}"
    local t0 code=""
    t0=$(ms_now)
    "${PIN_PROXY[@]}" "$certgate" run -c "$d/certgate.yaml" >"$d/certgate.log" 2>&1 &
    SPID[$n]=$!
    PIDS+=("${SPID[$n]}")
    for _ in $(seq 600); do # up to 60 s
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
            "http://127.0.0.1:${ADMIN[$n]}/ready" 2>/dev/null || true)
        [ "$code" = 200 ] && break
        kill -0 "${SPID[$n]}" 2>/dev/null || break
        sleep 0.02
    done
    STARTUP[$n]=$(($(ms_now) - t0))
    if [ "$code" != 200 ]; then
        log "certgate ($n) not ready; see $d/certgate.log"
        tail -5 "$d/certgate.log" >&2 || true
        exit 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$pki/root.crt" \
        --cert "$pki/client-chain.crt" --key "$pki/client.key" \
        --resolve "bench.example.com:${PORT[$n]}:127.0.0.1" \
        "https://bench.example.com:${PORT[$n]}/" || true)
    [ "$code" = 200 ] || { log "certgate ($n): bench tenant answered $code"; exit 1; }
}
for _ in $(seq 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$UP_PORT/" && break
    sleep 0.1
done
start_cg one "$out/store-one"
start_cg big "$out/store-big"
log "ready: 1 tenant in ${STARTUP[one]} ms, $N tenants in ${STARTUP[big]} ms"

cpu_ns() { # cpu_ns PID: CPU time of all the process's threads, ns (schedstat)
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{t += $1} END {printf "%.0f", t}'
}

# ---- 1. handshakes: interleaved rounds ---------------------------------------------------------
RES="$out/results.txt"
: >"$RES"
rec() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; }
hs_round() { # hs_round one|big
    local n=$1 c0 c1 w0 w1 line
    c0=$(cpu_ns "${SPID[$n]}")
    w0=$(date +%s%N)
    line=$(timeout $((DUR + 30)) "${PIN_CLIENT[@]}" "$loadgen" handshake -V 1.3 -c 64 \
        -a "127.0.0.1:${PORT[$n]}" -d "${DUR}s" -w 0.3s -s bench.example.com -l "tenants-$n" \
        --cert "$pki/client-chain.crt" --key "$pki/client.key" --ca "$pki/root.crt" \
        2>>"$out/loadgen.err" || true)
    c1=$(cpu_ns "${SPID[$n]}")
    w1=$(date +%s%N)
    echo "$line cpu_ns=$((c1 - c0)) wall_ns=$((w1 - w0))" >>"$out/loadgen.log"
    local rate total errs per
    rate=$(field rate "$line")
    total=$(field total "$line")
    errs=$(field errors "$line")
    [ -n "$rate" ] || { log "loadgen failed against $n (see $out/loadgen.err)"; return; }
    [ "${errs:-0}" = 0 ] || log "$n: $errs errors, first $(field first_error "$line")"
    per=$(awk -v t=$((c1 - c0)) -v n="$total" 'BEGIN { if (n > 0) printf "%.1f", t / 1000 / n }')
    rec "$n" hs "$rate"
    rec "$n" cpu "$per"
    rec "$n" cpu_ns_sum $((c1 - c0))
    rec "$n" total_sum "$total"
    rec "$n" wall_ns_sum $((w1 - w0))
    rec "$n" errors "${errs:-0}"
    log "$(printf '%-4s %8s handshakes/s  %6s us CPU each' "$n" "$rate" "$per")"
}
if [ "$IDLE_S" != 0 ]; then
    # the periodic content-hash rescan (reload.poll_interval, 10 s) with nothing changed: the
    # CPU both instances use while idle for IDLE_S seconds
    log "---- idle CPU over $IDLE_S s (periodic rescan)"
    i0=$(cpu_ns "${SPID[one]}")
    b0=$(cpu_ns "${SPID[big]}")
    sleep "$IDLE_S"
    rec one idle_ms $((($(cpu_ns "${SPID[one]}") - i0) / 1000000))
    rec big idle_ms $((($(cpu_ns "${SPID[big]}") - b0) / 1000000))
    rec one idle_s "$IDLE_S"
    rec big idle_s "$IDLE_S"
fi
log "---- handshakes: $ROUNDS rounds x ${DUR} s per store"
for r in $(seq 0 $((ROUNDS - 1))); do
    if [ $((r % 2)) = 0 ]; then hs_round one; hs_round big; else hs_round big; hs_round one; fi
done
rec one rss "$(rss_kb "${SPID[one]}")"
rec big rss "$(rss_kb "${SPID[big]}")"

# ---- 2. reload one tenant of the big store: rename-over, then SIGHUP -----------------------------
blog="$out/big/certgate.log"
last_gen() { # the generation of the last "reloaded" line in the log ($blog), 1 (the start) if none
    local l
    l=$(grep '"event":"reloaded"' "$blog" | tail -1 || true)
    [ -n "$l" ] && sed -n 's/.*"generation":\([0-9]*\).*/\1/p' <<<"$l" || echo 1
}
wait_reload() { # wait_reload GEN: prints "duration_ms source" of the first reload after GEN
    local g=$1 l
    for _ in $(seq 500); do # up to 10 s
        l=$(grep '"event":"reloaded"' "$blog" |
            awk -v g="$g" 'match($0, /"generation":[0-9]+/) {
                v = substr($0, RSTART + 13, RLENGTH - 13) + 0; if (v > g) { print; exit } }' || true)
        if [ -n "$l" ]; then
            echo "$(sed -n 's/.*"duration_ms":\([0-9]*\).*/\1/p' <<<"$l")" \
                "$(sed -n 's/.*"source":"\([a-z]*\)".*/\1/p' <<<"$l")"
            return 0
        fi
        sleep 0.02
    done
    return 1
}
orig="$out/stage/orig.pem"
cp "$bundle" "$orig"
log "---- reload: tenant $target, rename over $(basename "$bundle"), debounce $DEBOUNCE"
sleep 0.5
for i in $(seq 1 "$RELOADS"); do
    if [ $((i % 2)) = 1 ]; then
        cat "$orig" "$k/newca.pem" >"$out/stage/next.pem"
        expect=accept
    else
        cp "$orig" "$out/stage/next.pem"
        expect=reject
    fi
    g=$(last_gen)
    p=$("${PIN_CLIENT[@]}" python3 "$helper" probe --addr "127.0.0.1:${PORT[big]}" \
        --sni "$target.example.com" --cert "$k/client2.crt" --key "$k/client2.key" \
        --src "$out/stage/next.pem" --dst "$bundle" --expect "$expect" --timeout 10 || true)
    vis=$(field visible_ms "$p")
    res=$(wait_reload "$g" || echo "")
    dur=${res% *}
    src=${res#* }
    if [ -z "$vis" ] || [ -z "$res" ]; then
        log "rename $i: probe '$p', reload '$res'"
        rec big watch_fail "$i"
        continue
    fi
    if [ "$src" != watch ]; then
        # the periodic rescan ran into the change first: not the watch path, not counted
        log "rename $i: the reload came from $src (${dur} ms), not counted"
        rec big watch_other "$i"
        sleep 0.3
        continue
    fi
    gen_now=$(last_gen)
    [ "$gen_now" = $((g + 1)) ] || log "rename $i: $((gen_now - g)) reloads"
    rec big watch_ms "$dur"
    rec big visible_ms "$vis"
    log "rename $i ($expect): reload ${dur} ms, visible to a new handshake after ${vis} ms"
    sleep 0.3
done
t0=$(date +%s%N)
status=$(curl -s --max-time 10 "http://127.0.0.1:${ADMIN[big]}/status" || true)
t_status=$((($(date +%s%N) - t0) / 1000000))
rec big status_ms "$t_status"
rec big status_kb "$((${#status} / 1024))"
t0=$(date +%s%N)
metrics=$(curl -s --max-time 10 "http://127.0.0.1:${ADMIN[big]}/metrics" || true)
rec big metrics_ms $((($(date +%s%N) - t0) / 1000000))
rec big metrics_kb "$((${#metrics} / 1024))"
nwatch=$(python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("watches", [])))' \
    <<<"$status" 2>/dev/null || echo "?")
st_dur=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["last_reload"]["duration_ms"])' \
    <<<"$status" 2>/dev/null || echo "?")
log "GET /status: $t_status ms, $((${#status} / 1024)) KiB, $nwatch directories watched, last_reload.duration_ms $st_dur"
grep -q '"watch_failed"' "$blog" && log "certgate could not watch every directory (watch_failed in the log)"

for i in $(seq 1 "$RELOADS"); do
    g=$(last_gen)
    kill -HUP "${SPID[big]}"
    res=$(wait_reload "$g" || echo "")
    if [ -z "$res" ]; then
        log "SIGHUP $i: no reload seen"
        continue
    fi
    rec big hup_ms "${res% *}"
    log "SIGHUP $i: reload ${res% *} ms"
    sleep 0.2
done
for i in 1 2 3; do # the same for the 1-tenant store, for scale
    blog="$out/one/certgate.log"
    g=$(last_gen)
    kill -HUP "${SPID[one]}"
    res=$(wait_reload "$g" || echo "")
    [ -n "$res" ] && rec one hup_ms "${res% *}"
    sleep 0.1
done
blog="$out/big/certgate.log"

# ---- 3. where a reload's time goes: perf over SIGHUP reloads of the big store ----------------------
PERF_ON=off
if [ "$PERF" != off ] && command -v perf >/dev/null 2>&1 &&
    perf record -e cpu-clock -o "$out/perf-probe.data" -- true >/dev/null 2>&1; then
    PERF_ON=on
fi
rm -f "$out/perf-probe.data"
ptxt="$out/perf-reload.txt"
if [ "$PERF_ON" = on ]; then
    data="$out/perf-reload.data"
    PERF_HZ=999
    perf record -e cpu-clock -F "$PERF_HZ" --call-graph dwarf,16384 -o "$data" -p "${SPID[big]}" \
        >/dev/null 2>&1 &
    ppid=$!
    PIDS+=("$ppid")
    sleep 0.5
    for i in $(seq 1 8); do # half forced (SIGHUP), half by rename-over (the watch path)
        g=$(last_gen)
        if [ $((i % 2)) = 1 ]; then
            kill -HUP "${SPID[big]}"
        else
            if [ $((i % 4)) = 2 ]; then
                cat "$orig" "$k/newca.pem" >"$out/stage/next.pem"
            else
                cp "$orig" "$out/stage/next.pem"
            fi
            mv -f "$out/stage/next.pem" "$bundle"
        fi
        wait_reload "$g" >/dev/null || true
        sleep 0.05
    done
    kill -INT "$ppid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$ppid" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$ppid"
    nsamp=$(perf script -i "$data" -F tid 2>/dev/null | wc -l || echo 0)
    {
        echo "## perf: certgate with $N tenants, 8 reloads (4 SIGHUP, 4 rename-over)"
        echo "$nsamp samples at $PERF_HZ Hz: about $((nsamp * 1000 / PERF_HZ / 8)) ms of CPU per reload"
        echo
        echo "## the reload path (inclusive; inlined frames are attributed to their caller too)"
        timeout 120 perf report -i "$data" --stdio --children --sort symbol -g none \
            --percent-limit 0.3 2>/dev/null | grep -v -e '^#' -e '^$' |
            grep -E '\] (reload_run|hup_cb|check|scan_all|walk|hash_file|hash_bytes|add_dir|rearm|__GI___realpath|__scandir64|__GI___fstatat64|__GI_readlink|tls_gen_new|tls_gen_unref|ca_store_load|ca_store_unref|cs_[a-z_]+|ca_file_read|file_read_once|ca_index_[a-z_]+|ca_pem_[a-z_]+|yaml_parser_parse|SHA256_Update|PEM_[A-Za-z_]+|d2i_X509|X509_[A-Za-z_]+|CRYPTO_BUFFER_[a-z_]+|listener_gen_changed|build_listener|malloc|free|__GI___libc_open64|__libc_open64|__GI___libc_read|__GI___close) ' |
            head -50 || true
        echo
        echo "## top inclusive (>= 3%)"
        timeout 120 perf report -i "$data" --stdio --children --sort symbol -g none \
            --percent-limit 3 2>/dev/null | grep -v -e '^#' -e '^$' -e '\] 0x0000' | head -40 || true
        echo
        echo "## self time by symbol (>= 1%)"
        timeout 120 perf report -i "$data" --stdio --no-children --sort dso,symbol -g none \
            --percent-limit 1 2>/dev/null | grep -v -e '^#' -e '^$' | head -30 || true
    } >"$ptxt" 2>&1 || true
    log "profile written to $ptxt"
fi

# ---- 4. the table ------------------------------------------------------------------------------
elapsed=$(($(date +%s) - t_start))
python3 - "$RES" "$results" "$N" "$ROUNDS" "$DUR" "$DEBOUNCE" "$PIN" "$elapsed" "$loadavg" \
    "${STARTUP[one]}" "${STARTUP[big]}" "$store_made in $t_store" "$store_files" "$target" "$nwatch" \
    "$([ "$PERF_ON" = on ] && echo "$ptxt")" "$("$certgate" version 2>&1 | head -1)" "${tsv:-}" \
    "$root/scripts/bench" "$IDLE_S" <<'PY'
import datetime, statistics, sys
(res, out, n, rounds, dur, debounce, pin, elapsed, loadavg, st_one, st_big, t_store, files,
 target, nwatch, ptxt, version, tsv, benchdir, idle_s) = sys.argv[1:]
sys.path.insert(0, benchdir)
from table import machine  # noqa: E402

vals = {}
for line in open(res):
    s, f, v = line.rstrip("\n").split("\t")
    try:
        vals.setdefault((s, f), []).append(float(v))
    except ValueError:
        pass


def med(s, f):
    v = vals.get((s, f))
    return statistics.median(v) if v else None


def mx(s, f):
    v = vals.get((s, f))
    return max(v) if v else None


def fmt(x, f="{:,.0f}"):
    return "-" if x is None else f.format(x)


nn = int(n)
big = "%s tenants" % "{:,}".format(nn)
hs1, hsb = med("one", "hs"), med("big", "hs")
c1, cb = med("one", "cpu"), med("big", "cpu")
r_hs = hsb / hs1 if hs1 and hsb else None
r_cpu = cb / c1 if c1 and cb else None
def pooled(s, net=False):
    """CPU per handshake over all rounds, us; net: less the idle (background) CPU rate."""
    c, t = vals.get((s, "cpu_ns_sum")), vals.get((s, "total_sum"))
    if not c or not t or sum(t) <= 0:
        return None
    cpu = sum(c)
    if net:
        idle, secs, wall = med(s, "idle_ms"), med(s, "idle_s"), vals.get((s, "wall_ns_sum"))
        if idle is None or not secs or not wall:
            return None
        cpu -= idle / secs * sum(wall) / 1000  # ms per s of wall -> ns over the rounds' wall
    return cpu / 1000 / sum(t)


def ratio(a, b):
    return b / a if a and b else None


p1, pb = pooled("one"), pooled("big")
n1, nb = pooled("one", True), pooled("big", True)
rows = [
    ("full mTLS handshakes/s, TLS 1.3, SNI bench.example.com", fmt(hs1), fmt(hsb),
     fmt(r_hs, "{:.3f}"), ">= 0.95"),
    ("certgate CPU per full handshake, us (lower is better)", fmt(c1, "{:,.1f}"),
     fmt(cb, "{:,.1f}"), fmt(r_cpu, "{:.3f}"), "<= 1.05"),
    ("certgate CPU per full handshake, all rounds pooled, us", fmt(p1, "{:,.1f}"),
     fmt(pb, "{:,.1f}"), fmt(ratio(p1, pb), "{:.3f}"), "<= 1.05"),
    ("  the same less the idle CPU rate (the handshake path alone), us", fmt(n1, "{:,.1f}"),
     fmt(nb, "{:,.1f}"), fmt(ratio(n1, nb), "{:.3f}"), "-"),
    ("idle CPU over %s s (periodic rescan, poll_interval 10s), ms" % idle_s,
     fmt(med("one", "idle_ms")), fmt(med("big", "idle_ms")), "-", "-"),
    ("certgate RSS after the handshakes, MiB", fmt((med("one", "rss") or 0) / 1024, "{:,.1f}"),
     fmt((med("big", "rss") or 0) / 1024, "{:,.1f}"), "-", "-"),
    ("start until /ready, ms", st_one, st_big, "-", "-"),
    ("reload one tenant (rename-over, watch): duration_ms median (max)", "-",
     "%s (%s)" % (fmt(med("big", "watch_ms")), fmt(mx("big", "watch_ms"))), "-", "< 50"),
    ("rename -> first new handshake that sees it, ms median (max), debounce %s" % debounce, "-",
     "%s (%s)" % (fmt(med("big", "visible_ms"), "{:,.1f}"), fmt(mx("big", "visible_ms"), "{:,.1f}")),
     "-", "-"),
    ("SIGHUP forced reload: duration_ms median (max)",
     "%s (%s)" % (fmt(med("one", "hup_ms")), fmt(mx("one", "hup_ms"))),
     "%s (%s)" % (fmt(med("big", "hup_ms")), fmt(mx("big", "hup_ms"))), "-", "-"),
    ("GET /status, ms (KiB)", "-",
     "%s (%s)" % (fmt(med("big", "status_ms")), fmt(med("big", "status_kb"))), "-", "-"),
    ("GET /metrics, ms (KiB)", "-",
     "%s (%s)" % (fmt(med("big", "metrics_ms")), fmt(med("big", "metrics_kb"))), "-", "-"),
]
head = ["figure", "1 tenant", big, big + " / 1", "goal"]
w = [max(len(r[i]) for r in [head] + rows) for i in range(5)]
line = lambda r: "| " + " | ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i])
                                  for i, c in enumerate(r)) + " |"
sep = "| " + " | ".join("-" * w[0] if i == 0 else "-" * (w[i] - 1) + ":" for i in range(5)) + " |"
text = [line(head), sep] + [line(r) for r in rows]
errs = sum(vals.get(("one", "errors"), []) + vals.get(("big", "errors"), []))
notes = []
if errs:
    notes.append("loadgen errors during the handshake rounds: %d" % errs)
if vals.get(("big", "watch_other")):
    notes.append("rename-over reloads picked up by the periodic rescan first (not counted): %d"
                 % len(vals[("big", "watch_other")]))
if vals.get(("big", "watch_fail")):
    notes.append("rename-over reloads not seen: %d" % len(vals[("big", "watch_fail")]))
desc = [
    "Machine: " + machine(),
    "Run: %s; %s, 1 worker; %s interleaved rounds of %s s per store (median), loadgen "
    "handshake -V 1.3 -c 64 with SNI bench.example.com; CPU pinning (certgate on CPU 0, "
    "load generator on CPU 1): %s; whole run %s s; load average before: %s." % (
        datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), version, rounds, dur, pin,
        elapsed, loadavg),
    "Store: %s tenants (bench + %s others with 2 CA files each, 8 distinct filler CA "
    "certificates reused), %s files (%s ms); %s directories watched; reload "
    "tenant %s by renaming a file over its bundle (alternately adding and removing a CA, "
    "probed by a client of that CA); reload.debounce %s, poll_interval 10s (default)." % (
        "{:,}".format(nn), "{:,}".format(nn - 1), files, t_store, nwatch, target, debounce),
]
print("\n".join(text + ([""] + notes if notes else []) + [""] + desc))
md = ["# certgate benchmark: CA store of %s tenants" % "{:,}".format(nn), "",
      "Written by scripts/bench/tenants.sh (`make bench BENCH_TENANTS=on`, or standalone).", ""]
md += ["- " + d for d in desc] + ["", ""] + text
if notes:
    md += [""] + ["- " + x for x in notes]
if ptxt:
    try:
        md += ["", "```", open(ptxt).read().rstrip(), "```"]
    except OSError:
        pass
open(out, "w").write("\n".join(md) + "\n")
print("written to %s" % out)
if tsv:
    with open(tsv, "a") as f:
        for key, v in (("tenants_hs_ratio", r_hs),
                       ("tenants_cpu_ratio", pb / p1 if p1 and pb else None),
                       ("tenants_reload_ms", med("big", "watch_ms")),
                       ("tenants_visible_ms", med("big", "visible_ms")),
                       ("tenants_hup_ms", med("big", "hup_ms"))):
            if v is not None:
                f.write("certgate\t%s\t%s\t\n" % (key, v))
PY
