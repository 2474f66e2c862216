#!/usr/bin/env bash
# run.sh: `make bench`. Installs nginx, HAProxy and Caddy from Debian, gives each the same job as
# certgate (mTLS required and verified against the demo root, client certificate forwarded in
# x-forwarded-client-cert, the client's own copy removed, keep-alive to one upstream; over
# HTTP/1.1 and over h2 (ALPN), and gRPC over h2 to an h2c upstream, tests/bench/grpc_upstream.c),
# measures every figure with tests/bench/loadgen.c on 127.0.0.1 only, and prints one table, also
# written to tests/bench/last-results.md with the machine description.
#
# Environment (all optional):
#   BENCH_DURATION=5       seconds measured per figure and proxy, split into BENCH_ROUNDS
#   BENCH_ROUNDS=3         interleaved rounds (proxy A, B, C, D, then again...), each with a
#                          0.3 s warm-up; a figure is the median of its rounds, so that a burst
#                          of other load on the machine does not decide a comparison
#   BENCH_IDLE_CONNS=5000  idle mTLS connections held for the memory figure
#   BENCH_PEERS="nginx haproxy caddy"   peers to run (a peer that cannot be installed is skipped)
#   BENCH_WORKERS2=on      also run the 2-worker figures (off to skip)
#   BENCH_PIN=on           1-worker runs: proxy on CPU 0, load generator and upstream on CPU 1
#   BENCH_PERF=auto        perf profiles of certgate (handshake, keep-alive): auto | on | off
#   BENCH_INSTALL=on       apt-get install missing peers (off: use what is installed)
#   BENCH_FIGURES=all      or some of: idle hs13 hs12 res13 ka large h2 grpc hs13_c1 stime perf
#                          w2 (a short run while developing; the table shows what was measured)
#   BENCH_TENANTS=off      on: also scripts/bench/tenants.sh, a CA store of 10,000 tenants against
#                          one (handshake cost, reload of one tenant; ~80 s more)
#   BENCH_DIR=build/bench  work directory (configs, logs, perf data)
#   BENCH_RESULTS=tests/bench/last-results.md
#   CERTGATE=build/certgate
# Everything listens on and talks to 127.0.0.1 only; every step is bounded in time, and every
# process this script starts is stopped by it (by pid) on exit.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_TAG=bench
# shellcheck source=scripts/bench/lib.sh
. "$root/scripts/bench/lib.sh"
cd "$root"
D=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-3}
DR=$(awk -v d="$D" -v r="$ROUNDS" 'BEGIN { printf "%.2f", d / r }')
IDLE=${BENCH_IDLE_CONNS:-5000}
PEERS=${BENCH_PEERS:-nginx haproxy caddy}
WORKERS2=${BENCH_WORKERS2:-on}
PIN=${BENCH_PIN:-on}
PERF=${BENCH_PERF:-auto}
INSTALL=${BENCH_INSTALL:-on}
FIGURES=${BENCH_FIGURES:-all}
want() { [ "$FIGURES" = all ] || [[ " $FIGURES " == *" $1 "* ]]; }
out=${BENCH_DIR:-$root/build/bench}
results=${BENCH_RESULTS:-$root/tests/bench/last-results.md}
certgate=${CERTGATE:-$root/build/certgate}
case "$out" in /*) ;; *) out="$root/$out" ;; esac
case "$certgate" in /*) ;; *) certgate="$root/$certgate" ;; esac

UP_PORT=18080
GRPC_UP_PORT=18081 # tests/bench/grpc_upstream.c: h2c, answers every request as a gRPC unary call
# PORT: HTTP/1.1 and h2 (ALPN) to the HTTP/1.1 upstream; GPORT: h2 only, to the h2c upstream
declare -A PORT=([certgate]=18443 [nginx]=18444 [haproxy]=18445 [caddy]=18446)
declare -A GPORT=([certgate]=18453 [nginx]=18454 [haproxy]=18455 [caddy]=18456)
declare -A TITLE=([certgate]=certgate [nginx]=nginx [haproxy]=HAProxy [caddy]=Caddy)
t_start=$(date +%s)
loadavg=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- 1. install peers, build certgate and the load generator --------------------------------
declare -A PKG=([nginx]=nginx [haproxy]=haproxy [caddy]=caddy)
declare -A BIN=([nginx]=nginx [haproxy]=haproxy [caddy]=caddy)
SKIPPED=""
active=()
missing=()
for p in $PEERS; do
    [ -n "${PKG[$p]:-}" ] || { log "unknown peer $p, skipped"; continue; }
    command -v "${BIN[$p]}" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ] && [ "$INSTALL" = on ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    log "installing ${missing[*]} from Debian"
    $SUDO apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed; trying the cached lists"
    for p in "${missing[@]}"; do
        if ! apt-cache policy "${PKG[$p]}" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            log "${PKG[$p]} has no installation candidate here"
            continue
        fi
        # --no-install-recommends; the packages' own services are not what we measure
        $SUDO apt-get install -y -qq --no-install-recommends "${PKG[$p]}" >"$out.apt-$p.log" 2>&1 ||
            log "apt-get install ${PKG[$p]} failed (see $out.apt-$p.log)"
    done
fi
for p in $PEERS; do
    [ -n "${PKG[$p]:-}" ] || continue
    if command -v "${BIN[$p]}" >/dev/null 2>&1; then
        active+=("$p")
    else
        SKIPPED="$SKIPPED $p"
        log "peer $p is not installed: skipped"
    fi
done
command -v curl >/dev/null 2>&1 || { log "curl is needed (make deps)"; exit 1; }
command -v python3 >/dev/null 2>&1 || { log "python3 is needed (make deps)"; exit 1; }

mkdir -p "$out"
if [ ! -x "$certgate" ]; then
    log "building certgate"
    make --no-print-directory -C "$root" all >/dev/null
fi
loadgen="$out/loadgen"
build_loadgen "$loadgen"

# ---- 2. PKI, file descriptors, upstream ------------------------------------------------------
pki="$out/pki"
if [ ! -f "$pki/client-chain.crt" ] || [ ! -f "$pki/ca-store/index.yml" ]; then
    "$root/scripts/pki.sh" "$pki" 2>/dev/null
fi
cat "$pki/server.crt" "$pki/server.key" >"$pki/server-haproxy.pem"
cat "$pki/intermediate.crt" "$pki/root.crt" >"$pki/stime-ca.pem" # lets s_time send the chain

hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
ulimit -n "$hard" 2>/dev/null || true
nofile=$(ulimit -n)
max_idle=$(((nofile - 200) / 2))
if [ "$IDLE" -gt "$max_idle" ]; then
    log "BENCH_IDLE_CONNS=$IDLE lowered to $max_idle (open-file limit $nofile)"
    IDLE=$max_idle
fi
maxconn=$((IDLE + 1000))

set_pinning

up="$out/upstream"
mkdir -p "$up/www" "$up/tmp"
printf 'hello from the bench upstream\n' >"$up/www/index.html"
printf '\0\0\0\0\7\n\5hello' >"$up/grpc-req.bin" # a gRPC message, as loadgen's grpc mode sends
[ -f "$up/www/1m" ] || head -c 1048576 /dev/urandom >"$up/www/1m"
cat >"$up/nginx.conf" <<EOF
# the trivial upstream every proxy forwards to (written by scripts/bench/run.sh)
daemon off;
master_process off;
worker_processes 1;
pid $up/nginx.pid;
error_log $up/error.log warn;
worker_rlimit_nofile $nofile;
events { worker_connections $((nofile - 100)); }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    default_type application/octet-stream;
    client_body_temp_path $up/tmp; proxy_temp_path $up/tmp; fastcgi_temp_path $up/tmp;
    uwsgi_temp_path $up/tmp; scgi_temp_path $up/tmp;
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        root $up/www;
        location = / { try_files /index.html =404; }
        location = /xfcc { return 200 "xfcc=[\$http_x_forwarded_client_cert]\n"; }
    }
}
EOF
command -v nginx >/dev/null 2>&1 || { log "the upstream is nginx: install nginx"; exit 1; }
free_port $UP_PORT
"${PIN_CLIENT[@]}" nginx -c "$up/nginx.conf" -p "$up" >"$up/stdout.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$UP_PORT/" && break
    sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$UP_PORT/" || { log "upstream did not start"; exit 1; }
free_port $GRPC_UP_PORT
"${PIN_CLIENT[@]}" "$out/grpc_upstream" "127.0.0.1:$GRPC_UP_PORT" >"$up/grpc.log" 2>&1 &
PIDS+=($!)

# ---- 3. the proxies --------------------------------------------------------------------------
write_config() { # write_config NAME WORKERS -> prints the command line
    local n=$1 w=$2 d="$out/$1"
    local port=${PORT[$n]}
    mkdir -p "$d"
    case $n in
    certgate)
        cat >"$d/certgate.yaml" <<EOF
workers: $w
log: {level: warn, access: off}
credentials: {dir: $pki, cert: server.crt, key: server.key}
ca_store: {dir: $pki/ca-store}
limits: {max_connections: $maxconn}
listeners:
  - name: bench
    address: 127.0.0.1:$port
    mode: http
    upstream: 127.0.0.1:$UP_PORT
    client_auth: require
    # the leaf, as the peers forward it (nginx: escaped PEM, HAProxy/Caddy: base64 DER), not
    # the whole chain and subject that certgate's default XFCC carries
    client_cert_details: [cert]
  - name: grpc
    address: 127.0.0.1:${GPORT[$n]}
    mode: http
    upstream: 127.0.0.1:$GRPC_UP_PORT
    upstream_protocol: h2c
    client_auth: require
    client_cert_details: [cert]
EOF
        echo "$certgate run -c $d/certgate.yaml"
        ;;
    nginx)
        mkdir -p "$d/tmp"
        cat >"$d/nginx.conf" <<EOF
daemon off;
worker_processes $w;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile $nofile;
events { worker_connections $((nofile - 100)); }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path $d/tmp; proxy_temp_path $d/tmp; fastcgi_temp_path $d/tmp;
    uwsgi_temp_path $d/tmp; scgi_temp_path $d/tmp;
    upstream app {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
    }
    upstream grpc_app {
        server 127.0.0.1:$GRPC_UP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$port ssl http2 backlog=4096;
        ssl_certificate $pki/server.crt;
        ssl_certificate_key $pki/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_client_certificate $pki/root.crt;
        ssl_verify_client on;
        ssl_verify_depth 3;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # replaces any client copy (underscore spellings are dropped by nginx itself)
            proxy_set_header X-Forwarded-Client-Cert \$ssl_client_escaped_cert;
            proxy_buffer_size 16k;
            proxy_buffers 16 64k;
            proxy_max_temp_file_size 0;
        }
    }
    server {
        listen 127.0.0.1:${GPORT[$n]} ssl http2 backlog=4096;
        ssl_certificate $pki/server.crt;
        ssl_certificate_key $pki/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_client_certificate $pki/root.crt;
        ssl_verify_client on;
        ssl_verify_depth 3;
        location / {
            grpc_pass grpc://grpc_app;
            grpc_set_header X-Forwarded-Client-Cert \$ssl_client_escaped_cert;
        }
    }
}
EOF
        echo "nginx -c $d/nginx.conf -p $d"
        ;;
    haproxy)
        cat >"$d/haproxy.cfg" <<EOF
global
    nbthread $w
    maxconn $maxconn
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 30s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:$port ssl crt $pki/server-haproxy.pem ca-file $pki/root.crt verify required alpn h2,http/1.1
    maxconn $maxconn
    http-request del-header x-forwarded-client-cert
    http-request set-header X-Forwarded-Client-Cert %[ssl_c_der,base64]
    default_backend app
frontend fe_grpc
    bind 127.0.0.1:${GPORT[$n]} ssl crt $pki/server-haproxy.pem ca-file $pki/root.crt verify required alpn h2
    http-request del-header x-forwarded-client-cert
    http-request set-header X-Forwarded-Client-Cert %[ssl_c_der,base64]
    default_backend grpc_app
backend app
    http-reuse always
    server up 127.0.0.1:$UP_PORT
backend grpc_app
    http-reuse always
    server up 127.0.0.1:$GRPC_UP_PORT proto h2
EOF
        echo "haproxy -db -f $d/haproxy.cfg"
        ;;
    caddy)
        mkdir -p "$d/home"
        cat >"$d/Caddyfile" <<EOF
{
    admin off
    auto_https off
    servers {
        protocols h1 h2
    }
}
https://localhost:$port {
    bind 127.0.0.1
    tls $pki/server.crt $pki/server.key {
        protocols tls1.2 tls1.3
        client_auth {
            mode require_and_verify
            trusted_ca_cert_file $pki/root.crt
        }
    }
    reverse_proxy 127.0.0.1:$UP_PORT {
        header_up X-Forwarded-Client-Cert {http.request.tls.client.certificate_der_base64}
    }
}
https://localhost:${GPORT[$n]} {
    bind 127.0.0.1
    tls $pki/server.crt $pki/server.key {
        protocols tls1.2 tls1.3
        client_auth {
            mode require_and_verify
            trusted_ca_cert_file $pki/root.crt
        }
    }
    reverse_proxy h2c://127.0.0.1:$GRPC_UP_PORT {
        header_up X-Forwarded-Client-Cert {http.request.tls.client.certificate_der_base64}
    }
}
EOF
        echo "caddy run --config $d/Caddyfile --adapter caddyfile"
        ;;
    esac
}

SERVER_PID=""
start_server() { # start_server NAME WORKERS
    local n=$1 w=$2 d="$out/$1" cmd pin=()
    cmd=$(write_config "$n" "$w")
    [ "$w" = 1 ] && pin=("${PIN_PROXY[@]}")
    free_port "${PORT[$n]}" || return 1
    free_port "${GPORT[$n]}" || return 1
    # shellcheck disable=SC2086
    GOMAXPROCS=$w HOME="$d/home" XDG_DATA_HOME="$d/home" XDG_CONFIG_HOME="$d/home" \
        "${pin[@]}" $cmd >"$d/server-$w.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local code=""
    for _ in $(seq 100); do
        # HTTP/1.1: whether h2 works is for the h2 figures (and forwarding_h2) to show
        code=$(curl -s --http1.1 -o /dev/null -w '%{http_code}' --max-time 2 \
            --cacert "$pki/root.crt" \
            --cert "$pki/client-chain.crt" --key "$pki/client.key" \
            "https://localhost:${PORT[$n]}/" 2>/dev/null || true)
        [ "$code" = 200 ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "$n ($w workers) did not answer 200 (last: $code); see $d/server-$w.log"
    tail -5 "$d/server-$w.log" >&2 || true
    stop_pid "$SERVER_PID"
    return 1
}


RES="$out/results.txt"
: >"$RES"
record() { # record SERVER FIGURE VALUE [NOTE]
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$RES"
}

LG_COMMON=(--cert "$pki/client-chain.crt" --key "$pki/client.key" --ca "$pki/root.crt"
    -s localhost -H "X-Forwarded-Client-Cert: By=forged;Hash=00")

cpu_ticks() { # cpu_ticks PID: user+system clock ticks of the process tree
    local t=0 p v
    for p in $(proc_tree "$1"); do
        v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || true)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
HZ=$(getconf CLK_TCK)

loadgen_run() { # loadgen_run SERVER FIGURE WORKERS MODE ARGS... -> records rate (and latency)
    local n=$1 fig=$2 w=$3 mode=$4
    shift 4
    local pin=() line c0 c1 port=${PORT[$n]}
    [ "$w" = 1 ] && pin=("${PIN_CLIENT[@]}")
    [ "$mode" = grpc ] && port=${GPORT[$n]}
    c0=$(cpu_ticks "${SPID[$n]}")
    line=$(timeout $((${D%.*} + 30)) "${pin[@]}" "$loadgen" "$mode" -a "127.0.0.1:$port" \
        -d "${DR}s" -w 0.3s -l "$n/$fig/w$w" "${LG_COMMON[@]}" "$@" \
        2>>"$out/$n/loadgen.err" || true)
    c1=$(cpu_ticks "${SPID[$n]}")
    echo "$line proxy_ticks=$((c1 - c0))" >>"$out/loadgen.log"
    if [ -z "$line" ]; then
        record "$n" "$fig" "" "loadgen failed"
        return
    fi
    local errs note=""
    errs=$(field errors "$line")
    [ "${errs:-0}" != 0 ] && note="$errs errors, first $(field first_error "$line")"
    local ccpu
    ccpu=$(field client_cpu_pct "$line")
    if [ "${ccpu:-0}" -ge 90 ]; then
        note="${note:+$note; }load generator at ${ccpu}% of its CPU (a lower bound)"
    fi
    record "$n" "$fig" "$(field rate "$line")" "$note"
    # the proxy's own CPU time per operation: far less sensitive to other load than rates
    local total per
    if [ "$mode" = large ]; then
        total=$(field total_bytes "$line")
        per=$(awk -v t=$((c1 - c0)) -v n="${total:-0}" -v hz="$HZ" \
            'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / (n / 1e6) }')
    else
        total=$(field total "$line")
        per=$(awk -v t=$((c1 - c0)) -v n="${total:-0}" -v hz="$HZ" \
            'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n }')
    fi
    [ "$w" = 1 ] && [ -n "$per" ] && record "$n" "${fig}_cpu" "$per"
    if [ "$mode" = keepalive ] || [ "$mode" = h2 ]; then
        record "$n" "${fig}_p50" "$(field p50_ms "$line")"
        record "$n" "${fig}_p99" "$(field p99_ms "$line")"
    fi
    log "$(printf '%-8s %-10s w%s %s' "$n" "$fig" "$w" "$(field rate "$line") $(field unit "$line")${note:+ ($note)}")"
}

check_forwarding() { # the header reached the upstream, and the client's forged copy did not:
    # over HTTP/1.1 and h2 (the upstream echoes it), and on the gRPC path (grpc_upstream says
    # what it saw in its xfcc-seen response header)
    local n=$1 body ver fig
    local cc=(curl -s --max-time 5 --cacert "$pki/root.crt" --cert "$pki/client-chain.crt"
        --key "$pki/client.key" -H "X-Forwarded-Client-Cert: By=forged;Hash=00")
    for ver in http1.1 http2; do
        fig=forwarding
        [ $ver = http2 ] && fig=forwarding_h2
        body=$("${cc[@]}" --$ver -w ' %{http_version}' "https://localhost:${PORT[$n]}/xfcc" || true)
        echo "$n $ver: $(tr '\n' ' ' <<<"$body")" >>"$out/forwarding.log"
        if [[ "$body" == "xfcc=["?*"]"* ]] && [[ "$body" != *forged* ]] &&
            { [ $ver = http1.1 ] || [[ "$body" == *" 2" ]]; }; then
            record "$n" $fig ok
        else
            record "$n" $fig FAIL "upstream saw: ${body:0:80}"
        fi
    done
    body=$("${cc[@]}" --http2 -o /dev/null -D - -X POST \
        -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @"$up/grpc-req.bin" \
        "https://localhost:${GPORT[$n]}/bench.Bench/Unary" | tr -d '\r' || true)
    echo "$n grpc: $(tr '\n' ' ' <<<"$body")" >>"$out/forwarding.log"
    if grep -qx 'xfcc-seen: present' <<<"$body"; then
        record "$n" forwarding_grpc ok
    else
        record "$n" forwarding_grpc FAIL \
            "gRPC upstream saw: $(sed -n 's/^xfcc-seen: //p' <<<"$body")"
    fi
}

measure_idle() { # fresh process: RSS before and after IDLE connections are held
    local n=$1 pid=$2 before after lpid ready="" f="$out/$n/idle.out"
    "${PIN_CLIENT[@]}" "$loadgen" handshake -a "127.0.0.1:${PORT[$n]}" -c 4 -d 0.3s -w 0 \
        "${LG_COMMON[@]}" >/dev/null 2>&1 || true
    sleep 0.5
    before=$(rss_kb "$pid")
    "${PIN_CLIENT[@]}" "$loadgen" idle -a "127.0.0.1:${PORT[$n]}" -c "$IDLE" -P 64 -d 120s \
        "${LG_COMMON[@]}" >"$f" 2>>"$out/$n/loadgen.err" &
    lpid=$!
    PIDS+=("$lpid")
    for _ in $(seq 1500); do # up to 150 s
        ready=$(grep -m1 '^loadgen-ready' "$f" 2>/dev/null || true)
        [ -n "$ready" ] && break
        kill -0 "$lpid" 2>/dev/null || break
        sleep 0.1
    done
    sleep 1
    after=$(rss_kb "$pid")
    stop_pid "$lpid"
    local held failed
    held=$(field conns "$ready")
    failed=$(field failed "$ready")
    if [ -z "$ready" ] || [ "${held:-0}" -le 0 ]; then
        record "$n" idle_kb "" "idle connections were not established"
        return
    fi
    local kb
    kb=$(python3 -c "print('%.1f' % (($after - $before) / $held))")
    record "$n" idle_kb "$kb" "$([ "${failed:-0}" != 0 ] && echo "$failed of $IDLE failed")"
    record "$n" idle_held "$held"
    log "$(printf '%-8s %-10s    %s KB per connection (%s held, RSS %s -> %s KiB)' "$n" idle "$kb" "$held" "$before" "$after")"
}

stime_run() { # openssl s_time: one connection at a time, full handshakes + GET /
    local n=$1 secs=2 t0 t1 txt count
    t0=$(date +%s.%N)
    txt=$(timeout 20 "${PIN_CLIENT[@]}" openssl s_time -connect "127.0.0.1:${PORT[$n]}" -new \
        -time $secs -www / -cert "$pki/client.crt" -key "$pki/client.key" \
        -CAfile "$pki/stime-ca.pem" 2>&1 || true)
    t1=$(date +%s.%N)
    count=$(sed -n 's/^\([0-9]*\) connections in [0-9]* real seconds.*/\1/p' <<<"$txt" | tail -1)
    local bytes
    bytes=$(sed -n 's/.* real seconds, \([0-9]*\) bytes read per connection/\1/p' <<<"$txt" | tail -1)
    if [ -z "$count" ] || [ "${bytes:-0}" = 0 ]; then
        record "$n" stime "" "s_time failed"
        return
    fi
    record "$n" stime "$(python3 -c "print('%.1f' % ($count / ($t1 - $t0)))")"
}

PERF_ON=off
if [ "$PERF" != off ] && command -v perf >/dev/null 2>&1; then
    if perf record -e cpu-clock -o "$out/perf-probe.data" -- true >/dev/null 2>&1; then
        PERF_ON=on
    elif [ "$PERF" = on ]; then
        log "perf does not work here; no profiles"
    fi
    rm -f "$out/perf-probe.data"
fi

profile() { # profile PID NAME MODE ARGS...: perf while loadgen runs, then a text report
    local pid=$1 name=$2 mode=$3
    shift 3
    local data="$out/perf-$name.data"
    "${PIN_CLIENT[@]}" "$loadgen" "$mode" -a "127.0.0.1:${PORT[certgate]}" -d "$((${D%.*} + 1))s" \
        -w 0 "${LG_COMMON[@]}" "$@" >/dev/null 2>&1 &
    local lpid=$!
    PIDS+=("$lpid")
    sleep 0.5
    timeout 60 perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -o "$data" -p "$pid" \
        -- sleep "${D%.*}" >/dev/null 2>&1 || true
    wait "$lpid" 2>/dev/null || true
    {
        echo "## perf: certgate, $name (inclusive, symbols >= 2%)"
        perf report -i "$data" --stdio --children --sort symbol -g none --percent-limit 2 \
            2>/dev/null | grep -v -e '^#' -e '^$' -e '\] 0x0000' | head -45 || true
        echo
        echo "## perf: certgate, $name (self, by library)"
        perf report -i "$data" --stdio --no-children --sort dso -g none 2>/dev/null |
            grep -v -e '^#' -e '^$' | head -8 || true
    } >"$out/perf-$name.txt" 2>&1 || true
    log "profile written to $out/perf-$name.txt"
}

declare -A SPID=()
start_all() { # start_all WORKERS: every proxy, fresh; a proxy that does not start is dropped
    local w=$1 n
    running=()
    for n in "${servers[@]}"; do
        if start_server "$n" "$w"; then
            SPID[$n]=$SERVER_PID
            running+=("$n")
        else
            record "$n" started no "did not start with $w workers"
        fi
    done
}
stop_all() {
    local n
    for n in "${running[@]}"; do stop_pid "${SPID[$n]}"; done
    running=()
}

interleaved() { # interleaved FIGURE WORKERS MODE ARGS...: ROUNDS rounds over the running proxies
    local fig=$1 w=$2 r i k n
    shift 2
    want "${fig%_w2}" || return 0
    for r in $(seq 0 $((ROUNDS - 1))); do
        k=${#running[@]}
        for i in $(seq 0 $((k - 1))); do
            n=${running[$(((i + r) % k))]}
            loadgen_run "$n" "$fig" "$w" "$@"
        done
    done
}

servers=(certgate "${active[@]}")
running=()
log "$D s per figure in $ROUNDS rounds, $IDLE idle connections, pinning $PIN, perf $PERF_ON," \
    "peers: ${active[*]:-none}${SKIPPED:+ (skipped:$SKIPPED)}"

log "---- 1 worker each"
start_all 1
for n in "${running[@]}"; do
    check_forwarding "$n"
    want idle && measure_idle "$n" "${SPID[$n]}"
done
interleaved hs13 1 handshake -V 1.3 -c 64
interleaved hs12 1 handshake -V 1.2 -c 64
interleaved res13 1 resume -V 1.3 -c 64
interleaved ka 1 keepalive -c 50
interleaved large 1 large -c 4
# h2: the same 50 requests in flight as ka, as 10 connections x 5 streams; grpc: the same over
# the h2c upstream (GPORT), each call a POST with a 12-byte message, grpc-status 0 expected
interleaved h2 1 h2 -c 10 -m 5
interleaved grpc 1 grpc -c 10 -m 5
interleaved hs13_c1 1 handshake -V 1.3 -c 1
if want stime; then
    for n in "${running[@]}"; do stime_run "$n"; done
fi
if want perf && [ "$PERF_ON" = on ] && [ -n "${SPID[certgate]:-}" ] &&
    kill -0 "${SPID[certgate]}" 2>/dev/null; then
    profile "${SPID[certgate]}" handshake handshake -V 1.3 -c 64
    profile "${SPID[certgate]}" keepalive keepalive -c 50
    profile "${SPID[certgate]}" h2 h2 -c 10 -m 5
fi
stop_all
if [ "$WORKERS2" = on ] && want w2; then
    log "---- 2 workers each"
    start_all 2
    interleaved hs13_w2 2 handshake -V 1.3 -c 64 -t 2
    interleaved ka_w2 2 keepalive -c 50 -t 2
    stop_all
fi

if [ "${BENCH_TENANTS:-off}" = on ]; then
    log "---- CA store of 10,000 tenants (scripts/bench/tenants.sh)"
    BENCH_DIR="$out" CERTGATE="$certgate" BENCH_PIN="$PIN" BENCH_PERF="$PERF" \
        BENCH_RESULTS_TSV="$RES" "$root/scripts/bench/tenants.sh" >"$out/tenants.txt" ||
        log "tenants.sh failed (see $out/tenants.txt)"
fi

# ---- 4. the table ----------------------------------------------------------------------------
versions() {
    echo "certgate: $("$certgate" version 2>&1 | head -1)"
    for p in "${active[@]}"; do
        case $p in
        nginx) echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(nginx -V 2>&1 | grep -o 'built with OpenSSL [0-9.a-z]*')" ;;
        haproxy) echo "HAProxy: $(haproxy -v 2>&1 | head -1 | awk '{print $3}'), $(haproxy -vv 2>&1 | sed -n 's/^Running on OpenSSL version : //p' | head -1)" ;;
        caddy) echo "Caddy: $(caddy version 2>&1 | head -1)" ;;
        esac
    done
}
elapsed=$(($(date +%s) - t_start))
python3 "$root/scripts/bench/table.py" \
    --results "$RES" --servers "certgate ${active[*]}" --skipped "${SKIPPED# }" \
    --duration "$D" --rounds "$ROUNDS" --loadavg "$loadavg" --idle "$IDLE" --pin "$PIN" --elapsed "$elapsed" \
    --versions "$(versions)" --perf-dir "$([ "$PERF_ON" = on ] && echo "$out")" \
    --out "$results"
