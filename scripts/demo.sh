#!/bin/sh
# demo.sh: `make run`. Creates demo/ (git-ignored) with a PKI and CA store (scripts/pki.sh,
# once), a config demo/certgate.yaml and a demo upstream (tests/integration/upstream.py: an
# HTTP echo on 127.0.0.1:8080 and a raw TCP echo on 127.0.0.1:8081), prints the commands to
# try, then runs certgate in the foreground. Ctrl-C stops certgate (it drains) and the upstream.
#
# Environment: CERTGATE (binary, default build/certgate), DEMO_DIR (default demo),
# DEMO_RSA=1 (RSA keys instead of ECDSA P-256 for a new PKI).
set -eu

cd "$(dirname "$0")/.."
root=$(pwd)
bin=${CERTGATE:-build/certgate}
demo=${DEMO_DIR:-demo}
case "$demo" in /*) ;; *) demo="$root/$demo" ;; esac
pki="$demo/pki"

if [ ! -x "$bin" ]; then
    echo "demo.sh: $bin not found; run make first" >&2
    exit 1
fi
python3 - <<'PY' || exit 1
import socket, sys
busy = []
for port in (8080, 8081, 8443, 8444, 8445, 9901):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        busy.append(str(port))
    s.close()
if busy:
    sys.exit("demo.sh: 127.0.0.1 port(s) %s already in use" % ", ".join(busy))
PY

mkdir -p "$demo"
if [ ! -f "$pki/server.crt" ] || [ ! -f "$pki/ca-store/index.yml" ]; then
    if [ "${DEMO_RSA:-0}" = 1 ]; then
        scripts/pki.sh "$pki" --rsa
    else
        scripts/pki.sh "$pki"
    fi
fi

cat >"$demo/certgate.yaml" <<EOF
# certgate demo configuration, written by scripts/demo.sh (rewritten on every make run).
workers: auto

log:
  level: info
  access: on

credentials:
  dir: $pki
  cert: server.crt
  key: server.key

ca_store:
  dir: $pki/ca-store

access:
  allowed_subjects_file: $demo/allowed-subjects.json

admin:
  address: 127.0.0.1:9901

limits:
  drain_timeout: 5s

listeners:
  - name: https
    address: 127.0.0.1:8443
    mode: http
    upstream: 127.0.0.1:8080
    client_auth: require
  - name: tls
    address: 127.0.0.1:8444
    mode: tls
    upstream: 127.0.0.1:8081
    client_auth: require
  - name: tcp
    address: 127.0.0.1:8445
    mode: tcp
    upstream: 127.0.0.1:8080
EOF

python3 tests/integration/upstream.py --http 8080 --tcp 8081 >"$demo/upstream.log" 2>&1 &
up_pid=$!
cg_pid=""

cleanup() {
    trap - EXIT INT TERM
    if [ -n "$cg_pid" ] && kill -0 "$cg_pid" 2>/dev/null; then
        kill -TERM "$cg_pid" 2>/dev/null || true
        wait "$cg_pid" 2>/dev/null || true
    fi
    kill "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# wait for the upstream
i=0
until grep -q READY "$demo/upstream.log" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 50 ] || ! kill -0 "$up_pid" 2>/dev/null; then
        echo "demo.sh: the demo upstream did not start:" >&2
        cat "$demo/upstream.log" >&2
        exit 1
    fi
    sleep 0.1
done

d=${demo#"$root"/}
p=${pki#"$root"/}
cat <<EOF

certgate demo: config $d/certgate.yaml, PKI $p, upstream HTTP echo 127.0.0.1:8080, TCP echo 127.0.0.1:8081

Try (from $root):
  # mTLS HTTP proxy (https listener, 8443): the upstream echoes the request head it received
  curl --cacert $p/root.crt --cert $p/client-chain.crt --key $p/client.key https://localhost:8443/hello

  # refused: no client certificate / an expired one
  curl --cacert $p/root.crt https://localhost:8443/hello
  curl --cacert $p/root.crt --cert $p/client-expired-chain.crt --key $p/client-expired.key https://localhost:8443/hello

  # TLS relay (tls listener, 8444) to the TCP echo: type a line, it comes back
  openssl s_client -quiet -connect 127.0.0.1:8444 -servername localhost -CAfile $p/root.crt -cert $p/client.crt -key $p/client.key -cert_chain $p/intermediate.crt

  # plain TCP relay (tcp listener, 8445) to the HTTP upstream
  curl http://127.0.0.1:8445/hello

  # admin API
  curl http://127.0.0.1:9901/healthz; curl http://127.0.0.1:9901/status; curl http://127.0.0.1:9901/metrics

Ctrl-C stops certgate and the upstream.

EOF

"$bin" run -c "$demo/certgate.yaml" &
cg_pid=$!
set +e
wait "$cg_pid"
rc=$?
# wait returns early (>128) when a trapped signal arrives; the trap handles that case.
cg_pid=""
exit "$rc"
