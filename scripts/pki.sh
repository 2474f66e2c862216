#!/bin/sh
# pki.sh: builds a demo/test PKI with the openssl CLI, the way operators do it by hand:
# root CA -> intermediate CA -> client and server certificates (openssl req + openssl ca),
# plus the broken client certificates the integration tests need and a CA store in the
# index.yml layout.
#
# usage: scripts/pki.sh OUTDIR [--rsa]
#
# OUTDIR/ afterwards (keys are unencrypted PEM, certificates PEM):
#   root.crt root.key                    root CA ("certgate demo root CA")
#   intermediate.crt intermediate.key    intermediate CA, signed by the root, pathlen 0
#   server.crt server.key                leaf + intermediate (fullchain) for localhost;
#                                        SAN DNS:localhost, IP:127.0.0.1,
#                                        URI:spiffe://certgate.demo/proxy; EKU serverAuth
#   server-leaf.crt                      the server leaf alone
#   client.crt client.key                client leaf alone (CN=0102030405060708, clientAuth)
#   client-chain.crt                     client leaf + intermediate
#   client-leafonly.crt                  same as client.crt (leaf only, intermediate not sent)
#   client-expired{.crt,-chain.crt,.key}     valid 2020-01-01 .. 2021-01-01
#   client-notyet{.crt,-chain.crt,.key}      valid 2040-01-01 .. 2041-01-01
#   client-wrongeku{.crt,-chain.crt,.key}    EKU serverAuth only
#   client-unknown{.crt,-chain.crt,.key}     signed by unknown-root.crt (not in the store)
#   unknown-root.crt unknown-root.key
#   ca-store/index.yml                   "common: [common.pem]"
#   ca-store/common/common.pem           the root CA
#
# ECDSA P-256 keys by default, RSA 2048 with --rsa. Existing files in OUTDIR are replaced.
set -eu

usage() {
    echo "usage: $0 OUTDIR [--rsa]" >&2
    exit 2
}

out=""
alg=ec
for arg in "$@"; do
    case "$arg" in
    --rsa) alg=rsa ;;
    --ec | --ecdsa) alg=ec ;;
    -h | --help)
        sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    -*) usage ;;
    *)
        [ -z "$out" ] || usage
        out=$arg
        ;;
    esac
done
[ -n "$out" ] || usage
command -v openssl >/dev/null 2>&1 || {
    echo "$0: openssl not found" >&2
    exit 1
}

mkdir -p "$out"
out=$(cd "$out" && pwd)
work="$out/.ca"
rm -rf "$work"
mkdir -p "$work"

EUI=0102030405060708
ORG="certgate demo"

genkey() { # genkey FILE
    if [ "$alg" = rsa ]; then
        openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null ||
            openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null
    else
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
    fi
    chmod 600 "$1"
}

# One openssl.cnf for every CA; the CA directory comes from the environment (CA_DIR).
cat >"$work/openssl.cnf" <<'EOF'
[ ca ]
default_ca = CA_default

[ CA_default ]
dir              = $ENV::CA_DIR
database         = $dir/index.txt
serial           = $dir/serial
new_certs_dir    = $dir/newcerts
default_md       = sha256
default_days     = 825
policy           = policy_loose
unique_subject   = no
preserve         = yes
copy_extensions  = none
email_in_dn      = no

[ policy_loose ]
countryName            = optional
stateOrProvinceName    = optional
localityName           = optional
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
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = clientAuth

[ v3_client_wrongeku ]
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
basicConstraints       = critical, CA:false
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = serverAuth

[ v3_server ]
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
basicConstraints       = critical, CA:false
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, IP:127.0.0.1, URI:spiffe://certgate.demo/proxy
EOF
CNF="$work/openssl.cnf"

newca_db() { # newca_db DIR
    mkdir -p "$1/newcerts"
    : >"$1/index.txt"
    echo "unique_subject = no" >"$1/index.txt.attr"
    echo 1000 >"$1/serial"
}

# selfsigned NAME SUBJECT: a root CA with openssl req -x509
selfsigned() {
    genkey "$out/$1.key"
    CA_DIR="$work/$1" openssl req -config "$CNF" -new -x509 -key "$out/$1.key" -subj "$2" \
        -days 3650 -sha256 -extensions v3_root -out "$out/$1.crt"
    newca_db "$work/$1"
}

# sign CA NAME SUBJECT EXTENSIONS [openssl ca date options...]: key + CSR, signed by CA
sign() {
    ca=$1 name=$2 subj=$3 ext=$4
    shift 4
    genkey "$out/$name.key"
    CA_DIR="$work/$ca" openssl req -config "$CNF" -new -key "$out/$name.key" -subj "$subj" \
        -out "$work/$name.csr"
    CA_DIR="$work/$ca" openssl ca -config "$CNF" -batch -notext -cert "$out/$ca.crt" \
        -keyfile "$out/$ca.key" -extensions "$ext" -in "$work/$name.csr" -out "$out/$name.crt" \
        "$@" 2>"$work/$name.log" || {
        cat "$work/$name.log" >&2
        exit 1
    }
}

selfsigned root "/O=$ORG/CN=certgate demo root CA"
sign root intermediate "/O=$ORG/CN=certgate demo intermediate CA" v3_intermediate -days 3000
newca_db "$work/intermediate"

sign intermediate server "/O=$ORG/CN=localhost" v3_server -days 825
cp "$out/server.crt" "$out/server-leaf.crt"
cat "$out/server-leaf.crt" "$out/intermediate.crt" >"$out/server.crt"

sign intermediate client "/O=$ORG/CN=$EUI" v3_client -days 825
cat "$out/client.crt" "$out/intermediate.crt" >"$out/client-chain.crt"
cp "$out/client.crt" "$out/client-leafonly.crt"

sign intermediate client-expired "/O=$ORG/CN=$EUI" v3_client \
    -startdate 20200101000000Z -enddate 20210101000000Z
sign intermediate client-notyet "/O=$ORG/CN=$EUI" v3_client \
    -startdate 20400101000000Z -enddate 20410101000000Z
sign intermediate client-wrongeku "/O=$ORG/CN=$EUI" v3_client_wrongeku -days 825
for n in client-expired client-notyet client-wrongeku; do
    cat "$out/$n.crt" "$out/intermediate.crt" >"$out/$n-chain.crt"
done

selfsigned unknown-root "/O=somebody else/CN=unknown root CA"
sign unknown-root client-unknown "/O=somebody else/CN=$EUI" v3_client -days 825
cat "$out/client-unknown.crt" "$out/unknown-root.crt" >"$out/client-unknown-chain.crt"

mkdir -p "$out/ca-store/common"
cp "$out/root.crt" "$out/ca-store/common/common.pem"
printf 'common:\n- common.pem\n' >"$out/ca-store/index.yml"

rm -rf "$work"
echo "pki.sh: $alg PKI written to $out" >&2
