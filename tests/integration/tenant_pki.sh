#!/bin/sh
# tenant_pki.sh: the multi-tenant PKI and CA store of the tenancy tests (issue #4), made with
# the openssl CLI the way operators do it (openssl req + openssl ca, CRLs with -gencrl), and
# stored as The Things Stack stores tenant CAs (CONTRACT section 4).
#
# usage: tests/integration/tenant_pki.sh OUTDIR
#
# OUTDIR/ afterwards (ECDSA P-256 keys, PEM):
#   server-ca.crt                 the CA the clients use to verify certgate
#   server.crt server.key         fullchain for *.example.com, example.com, localhost,
#                                 IP 127.0.0.1, URI spiffe://certgate.demo/proxy
#   common-root.crt               shared root, in common/   -> client common-client
#   a-root.crt a-int.crt          tenant a: own root + issuing intermediate, both in the store
#                                 -> clients a-client, a-revoked (revoked by a-int's CRL)
#   b-root.crt b-int.crt          tenant b: only the intermediate is in the store
#                                 (partial-chain anchor) -> client b-client
#   c-root.crt                    tenant c: own root -> client c-client
#   x-root.crt                    in no store -> client x-client
#   NAME.crt NAME.key             client leaf and key; NAME-chain.crt = leaf + the
#                                 intermediates the client sends (for a- and b- clients)
#   a-int.crl                     CRL of a-int revoking a-revoked (in the store)
#   a-int-all.crl                 a later CRL of a-int revoking a-revoked and a-client
#   ca-store/index.yml            common: [common.pem]; tenants a: [a.pem, crl.pem],
#                                 b: [b.pem], c: [c.pem]
#   ca-store/common/common.pem, ca-store/tenants/{a,b,c}/...
set -eu

[ $# -eq 1 ] || {
    echo "usage: $0 OUTDIR" >&2
    exit 2
}
mkdir -p "$1"
out=$(cd "$1" && pwd)
work="$out/.ca"
rm -rf "$work"
mkdir -p "$work"

cat >"$work/openssl.cnf" <<'EOF'
[ ca ]
default_ca = CA_default

[ CA_default ]
dir              = $ENV::CA_DIR
database         = $dir/index.txt
serial           = $dir/serial
crlnumber        = $dir/crlnumber
new_certs_dir    = $dir/newcerts
default_md       = sha256
default_days     = 825
default_crl_days = 30
policy           = policy_loose
unique_subject   = no
preserve         = yes
copy_extensions  = none
email_in_dn      = no

[ policy_loose ]
countryName            = optional
organizationName       = optional
organizationalUnitName = optional
commonName             = supplied

[ req ]
distinguished_name = req_dn
prompt             = no
[ req_dn ]
CN = unused

[ v3_root ]
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
basicConstraints       = critical, CA:true
keyUsage               = critical, keyCertSign, cRLSign

[ v3_intermediate ]
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
basicConstraints       = critical, CA:true, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign

[ v3_client ]
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
basicConstraints       = critical, CA:false
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth

[ v3_server ]
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
basicConstraints       = critical, CA:false
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:*.example.com, DNS:example.com, DNS:localhost, IP:127.0.0.1, URI:spiffe://certgate.demo/proxy
EOF
CNF="$work/openssl.cnf"

genkey() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
    chmod 600 "$1"
}

newca_db() {
    mkdir -p "$1/newcerts"
    : >"$1/index.txt"
    echo "unique_subject = no" >"$1/index.txt.attr"
    echo 1000 >"$1/serial"
    echo 01 >"$1/crlnumber"
}

root() { # root NAME SUBJECT
    genkey "$out/$1.key"
    newca_db "$work/$1"
    CA_DIR="$work/$1" openssl req -config "$CNF" -new -x509 -key "$out/$1.key" -subj "$2" \
        -days 3650 -sha256 -extensions v3_root -out "$out/$1.crt"
}

sign() { # sign CA NAME SUBJECT EXT
    genkey "$out/$2.key"
    CA_DIR="$work/$1" openssl req -config "$CNF" -new -key "$out/$2.key" -subj "$3" \
        -out "$work/$2.csr"
    CA_DIR="$work/$1" openssl ca -config "$CNF" -batch -notext -cert "$out/$1.crt" \
        -keyfile "$out/$1.key" -extensions "$4" -in "$work/$2.csr" -out "$out/$2.crt" \
        2>"$work/$2.log" || {
        cat "$work/$2.log" >&2
        exit 1
    }
    case "$4" in v3_intermediate) newca_db "$work/$2" ;; esac
}

root server-ca "/O=tenant tests/CN=tenant tests server CA"
sign server-ca server "/O=tenant tests/CN=example.com" v3_server
cp "$out/server.crt" "$out/server-leaf.crt"
cat "$out/server-leaf.crt" "$out/server-ca.crt" >"$out/server.crt"

root common-root "/O=shared/CN=common root CA"
sign common-root common-client "/O=shared/CN=common-client" v3_client

root a-root "/O=tenant a/CN=a root CA"
sign a-root a-int "/O=tenant a/CN=a issuing CA" v3_intermediate
sign a-int a-client "/O=tenant a/CN=a-client" v3_client
sign a-int a-revoked "/O=tenant a/CN=a-revoked" v3_client
CA_DIR="$work/a-int" openssl ca -config "$CNF" -batch -cert "$out/a-int.crt" \
    -keyfile "$out/a-int.key" -revoke "$out/a-revoked.crt" 2>"$work/revoke.log" || {
    cat "$work/revoke.log" >&2
    exit 1
}
gencrl() { # gencrl OUT: a CRL of a-int with every certificate revoked so far
    CA_DIR="$work/a-int" openssl ca -config "$CNF" -batch -gencrl -cert "$out/a-int.crt" \
        -keyfile "$out/a-int.key" -out "$1" 2>"$work/crl.log" || {
        cat "$work/crl.log" >&2
        exit 1
    }
}
gencrl "$out/a-int.crl"
# A later CRL that also revokes a-client (for the store-change tests).
CA_DIR="$work/a-int" openssl ca -config "$CNF" -batch -cert "$out/a-int.crt" \
    -keyfile "$out/a-int.key" -revoke "$out/a-client.crt" 2>"$work/revoke.log" || {
    cat "$work/revoke.log" >&2
    exit 1
}
gencrl "$out/a-int-all.crl"

root b-root "/O=tenant b/CN=b root CA"
sign b-root b-int "/O=tenant b/CN=b issuing CA" v3_intermediate
sign b-int b-client "/O=tenant b/CN=b-client" v3_client

root c-root "/O=tenant c/CN=c root CA"
sign c-root c-client "/O=tenant c/CN=c-client" v3_client

root x-root "/O=nobody/CN=x root CA"
sign x-root x-client "/O=nobody/CN=x-client" v3_client

for n in common-client c-client x-client; do cp "$out/$n.crt" "$out/$n-chain.crt"; done
for n in a-client a-revoked; do cat "$out/$n.crt" "$out/a-int.crt" >"$out/$n-chain.crt"; done
cat "$out/b-client.crt" "$out/b-int.crt" >"$out/b-client-chain.crt"

s="$out/ca-store"
rm -rf "$s"
mkdir -p "$s/common" "$s/tenants/a" "$s/tenants/b" "$s/tenants/c"
cp "$out/common-root.crt" "$s/common/common.pem"
cat "$out/a-root.crt" "$out/a-int.crt" >"$s/tenants/a/a.pem"
cp "$out/a-int.crl" "$s/tenants/a/crl.pem"
cp "$out/b-int.crt" "$s/tenants/b/b.pem"
cp "$out/c-root.crt" "$s/tenants/c/c.pem"
cat >"$s/index.yml" <<'EOF'
common:
- common.pem
tenants:
  a:
  - a.pem
  - crl.pem
  b:
  - b.pem
  c:
  - c.pem
EOF
rm -rf "$work"
echo "tenant_pki.sh: written to $out" >&2
