#!/bin/sh
# make_ctl_corpus.sh: regenerates the seed corpora of the control-plane fuzz targets
# (tests/fuzz/corpus/{config,ca_index,ca_pem,ca_crl,ocsp,ocsp_http,admin,allowlist}/) and
# tests/fuzz/ocsp_pki.h, the leaf and issuer that fuzz_ocsp checks responses against. The
# certificates, CRLs and OCSP responses come from scripts/pki.sh and the openssl CLI (openssl ca
# -gencrl, openssl ocsp -index), the configurations from deploy/ and the directives of
# docs/configuration.md; keys are thrown away. Inputs the fuzzers found and kept (crash-*,
# found-*) are not touched. Run from anywhere; needs openssl.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
c=$here/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in config ca_index ca_pem ca_crl ocsp ocsp_http admin allowlist; do
    mkdir -p "$c/$t"
    find "$c/$t" -name 'seed-*' -delete
done

# --- configuration ---------------------------------------------------------------------------
cp "$root/deploy/certgate.yaml" "$c/config/seed-deploy.yaml"
cat > "$c/config/seed-every-key.yaml" <<'EOF'
workers: 2
log: {level: debug, access: off}
credentials:
  dir: /etc/certgate/credentials
  cert: tls.crt
  key: tls.key
  expiry_warning: 14d
ca_store: {dir: /etc/certgate/ca-store}
tenancy: {sni: "{tenant}.example.com", unknown: common, no_sni: reject}
reload: {debounce: 250ms, poll_interval: 1m}
revocation: {crl: yes, ocsp: soft_fail, ocsp_timeout: 2s, ocsp_cache_max: 1h}
access: {allowed_subjects_file: allowed.json}
admin: {address: "[::1]:9901", token_file: /run/token, public_address: "0.0.0.0:9902"}
limits:
  max_connections: 100
  max_headers: 50
  max_request_head: 64KiB
  handshake_timeout: 5s
  request_head_timeout: 30s
  idle_timeout: 5m
  upstream_connect_timeout: 5s
  upstream_response_timeout: 60s
  shutdown_delay: 0s
  drain_timeout: 2s
listeners:
  - name: web
    address: 0.0.0.0:8443
    mode: http
    upstream: unix:/run/app.sock
    client_auth: optional
    verify: on
    forward_client_cert: append_forward
    client_cert_details: [cert, chain, subject, uri, dns]
    client_cert_header: rfc9440
    subject_cn_pattern: "^[0-9a-f]{16}$"
    require_allowed_subject: true
    accept_proxy_protocol: v1v2
    forwarded_headers: append
    headers_with_underscores: forward
    strip_headers: [X-Client-Verify, x_ssl_client_dn]
  - name: relay
    address: 127.0.0.1:8887
    mode: tls
    upstream: "[::1]:1887"
    client_auth: none
    proxy_protocol: true
    accept_proxy_protocol: required
  - name: raw
    address: 127.0.0.1:1700
    mode: tcp
    upstream: localhost:1701
EOF
cat > "$c/config/seed-pkcs12.yaml" <<'EOF'
credentials: {dir: creds, pkcs12: server.p12, pkcs12_password_file: pass}
ca_store: {dir: ca}
listeners:
- {name: a, address: "127.0.0.1:0", upstream: "127.0.0.1:80", client_cert_header: pem,
   forward_client_cert: sanitize}
EOF
printf 'listeners:\n- name: a\n  address: 1.2.3.4:5\n  upstream: 1.2.3.4:6\n  mode: tcp\n  upstream: 1.2.3.4:7\n' \
    > "$c/config/seed-duplicate-key.yaml"
printf 'limits:\n  idle_timeout: 10x\nlisteners: []\n' > "$c/config/seed-bad-duration.yaml"
printf 'listeners: &a [*a]\n\t- "\\xff"\n' > "$c/config/seed-bad-yaml.yaml"

# --- PKI: CA, intermediate, leaves, CRLs, OCSP responses ---------------------------------------
"$root/scripts/pki.sh" "$tmp/pki" >/dev/null 2>&1
cd "$tmp"
ec='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'
cat > ext.cnf <<'EOF'
[ca]
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
[leaf]
basicConstraints=CA:FALSE
extendedKeyUsage=clientAuth
authorityInfoAccess=OCSP;URI:http://127.0.0.1:8888/ocsp
[resp]
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=OCSPSigning
EOF
openssl req -x509 $ec -keyout ca.key -out ca.crt -days 36500 -subj '/CN=Fuzz OCSP CA' \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null
issue() { # name extension-section subject
    openssl req $ec -keyout "$1.key" -out "$1.csr" -subj "$3" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 36500 \
        -extfile ext.cnf -extensions "$2" -out "$1.crt" 2>/dev/null
}
issue leaf leaf '/CN=0102030405060708/O=Fuzz'
issue other leaf '/CN=other'
issue resp resp '/CN=Fuzz OCSP responder'
serial=$(openssl x509 -in leaf.crt -noout -serial | cut -d= -f2)
: > index-empty.txt
printf 'V\t21000101000000Z\t\t%s\tunknown\t/CN=0102030405060708/O=Fuzz\n' "$serial" > index-good.txt
printf 'R\t21000101000000Z\t240101000000Z,keyCompromise\t%s\tunknown\t/CN=0102030405060708/O=Fuzz\n' \
    "$serial" > index-revoked.txt
openssl ocsp -issuer ca.crt -cert leaf.crt -reqout req-sha1.der -no_nonce >/dev/null
openssl ocsp -sha256 -issuer ca.crt -cert leaf.crt -cert other.crt -reqout req-sha256.der \
    -no_nonce >/dev/null
respond() { # index request signer key out [extra...]
    idx=$1 req=$2 signer=$3 key=$4 out=$5
    shift 5
    openssl ocsp -index "$idx" -CA ca.crt -rsigner "$signer" -rkey "$key" -reqin "$req" \
        -respout "$c/ocsp/seed-$out.der" -ndays 36500 "$@" >/dev/null 2>&1
}
respond index-good.txt req-sha1.der ca.crt ca.key good
respond index-revoked.txt req-sha1.der ca.crt ca.key revoked
respond index-empty.txt req-sha1.der ca.crt ca.key unknown
respond index-good.txt req-sha256.der resp.crt resp.key delegated-sha256
respond index-good.txt req-sha1.der ca.crt ca.key by-key -resp_key_id -resp_no_certs
printf '\060\003\012\001\006' > "$c/ocsp/seed-unauthorized.der"
now=$(date +%s)
{
    echo "/* ocsp_pki.h: made by make_ctl_corpus.sh with the corpus/ocsp responses; do not edit. */"
    echo "#define OCSP_NOW ((int64_t)${now})"
    printf '#define OCSP_ISSUER_PEM \\\n'
    sed 's/.*/    "&\\n" \\/' ca.crt
    echo '    ""'
    printf '#define OCSP_LEAF_PEM \\\n'
    sed 's/.*/    "&\\n" \\/' leaf.crt
    echo '    ""'
} > "$here/ocsp_pki.h"

# CRLs with openssl ca: a plain one, one with an IDP that narrows it, a delta CRL.
mkdir -p db
: > db/index.txt
echo 01 > db/crlnumber
cat > ca.cnf <<'EOF'
[ca]
default_ca = fuzz
[fuzz]
database = db/index.txt
crlnumber = db/crlnumber
default_md = sha256
default_crl_days = 36500
[idp]
issuingDistributionPoint=critical,@idp_section
[idp_section]
fullname=URI:http://crl.example/ca.crl
onlysomereasons=keyCompromise
[delta]
2.5.29.27=critical,DER:02:01:01
[unknown]
1.2.3.4=critical,DER:05:00
[crl_ok]
authorityKeyIdentifier=keyid
EOF
openssl ca -config ca.cnf -keyfile ca.key -cert ca.crt -revoke other.crt >/dev/null 2>&1
openssl ca -config ca.cnf -keyfile ca.key -cert ca.crt -gencrl -out ok.crl -crlexts crl_ok 2>/dev/null
openssl ca -config ca.cnf -keyfile ca.key -cert ca.crt -gencrl -out idp.crl -crlexts idp 2>/dev/null
openssl ca -config ca.cnf -keyfile ca.key -cert ca.crt -gencrl -out delta.crl -crlexts delta 2>/dev/null
openssl ca -config ca.cnf -keyfile ca.key -cert ca.crt -gencrl -out unknown.crl -crlexts unknown 2>/dev/null
for n in ok idp delta unknown; do
    openssl crl -in $n.crl -outform DER -out "$c/ca_crl/seed-$n.der"
done
openssl x509 -in ca.crt -outform DER -out "$c/ca_crl/seed-ca-cert.der"
# Built CRLs (fuzz_ca_crl.c build_crl): records FLAGS NID-INDEX LEN VALUE; index 3 is the IDP.
crl_rec() { printf "%b" "$2" > "$c/ca_crl/seed-built-$1"; }
crl_rec idp-name '\002\003\021\060\017\240\015\240\013\206\011http://x/'
crl_rec idp-only-ca '\002\003\005\060\003\202\001\377'
crl_rec idp-reasons '\000\003\006\060\004\203\002\007\200'
crl_rec entry-reason '\003\006\003\012\001\001\001\012\002\005\000'
crl_rec delta '\002\004\003\002\001\001'
crl_rec unknown-critical '\000\000\000\002\012\002\005\000'

# --- PEM bundles and index.yml ------------------------------------------------------------
cp pki/ca-store/common/common.pem "$c/ca_pem/seed-root.pem"
cat pki/root.crt pki/intermediate.crt ok.crl > "$c/ca_pem/seed-chain-crl.pem"
{ echo "text before"; cat ca.crt; cat idp.crl; } | sed 's/$/\r/' > "$c/ca_pem/seed-crlf-idp.pem"
printf '%s' "$(cat ca.crt)" | sed 's/-----END CERTIFICATE-----/&-----BEGIN CERTIFICATE-----/' \
    > "$c/ca_pem/seed-unterminated.pem"
cp pki/ca-store/index.yml "$c/ca_index/seed-pki.yml"
printf 'common:\n- common.pem\ntenants:\n  test:\n  - test.pem\n  other-1:\n  - a/b.pem\n  - c.pem\n' \
    > "$c/ca_index/seed-tenants.yml"
printf 'common: [x.pem]\ntenants:\n  Bad_Id: [x.pem]\n  up: [../escape.pem]\n  ok: {a: b}\n' \
    > "$c/ca_index/seed-bad-tenants.yml"
printf '' > "$c/ca_index/seed-empty.yml"
printf 'unknown: 1\n' > "$c/ca_index/seed-unknown-key.yml"

# --- the OCSP responder's HTTP answer ------------------------------------------------------------
good=$c/ocsp/seed-good.der
{ printf 'HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: %d\r\n\r\n' \
    "$(wc -c < "$good")"; cat "$good"; } > "$c/ocsp_http/seed-200.bin"
{ printf 'HTTP/1.0 200 OK\r\nServer: x\r\n\r\n'; cat "$good"; } > "$c/ocsp_http/seed-200-eof.bin"
printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n' \
    > "$c/ocsp_http/seed-chunked.bin"
printf 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n' > "$c/ocsp_http/seed-404.bin"
printf 'HTTP/1.1 200 OK\r\ncontent-length:  99999999999\r\n\r\nabc' > "$c/ocsp_http/seed-short.bin"

# --- admin requests (first byte: bit 0 public side, bit 1 with admin.token_file) ----------------
req() { printf "%b" "$2" > "$c/admin/seed-$1"; }
req status '\000GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n'
req metrics-public '\001GET /metrics?x=1 HTTP/1.1\r\nHost: example\r\n\r\n'
req reload '\000POST /reload HTTP/1.1\r\nHost: 127.0.0.1:9901\r\nContent-Length: 0\r\n\r\n'
req reload-token '\002POST /reload HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n'
req allow-put '\000PUT /allowed-client-certificate-subjects/CN%3Da%2CO%3Db HTTP/1.1\r\nHost: [::1]\r\n\r\n'
req allow-get '\000HEAD /allowed-client-certificate-subjects HTTP/1.0\r\n\r\n'
req bad '\000GET  /x HTTP/1.1\r\nHost : a\r\nTransfer-Encoding: chunked\r\n\r\n'

# --- allowlist state files and subjects ---------------------------------------------------------
printf '[\n  "CN=0102030405060708,O=Acme",\n  "O=Acme, CN = x\\\\2Cy",\n  "cn=a+serialNumber=1;E=a@b"\n]\n' \
    > "$c/allowlist/seed-file.json"
printf '["CN=\\"quoted, value\\"", "2.5.4.3=\\u00e9\\ud83d\\ude00", "CN=a", "cn=A"]' \
    > "$c/allowlist/seed-escapes.json"
printf '[]' > "$c/allowlist/seed-empty.json"
printf 'CN=a\\,b,O=x\\20,OU= y ,C=NL' > "$c/allowlist/seed-subject.txt"
printf '["CN=a",]' > "$c/allowlist/seed-trailing-comma.json"
echo "corpora written under $c"
