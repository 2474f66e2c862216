#!/bin/sh
# make_xfcc_corpus.sh: regenerates the seed corpus of fuzz_xfcc (tests/fuzz/corpus/xfcc/) with the
# openssl CLI: a few DER certificates and one length-prefixed chain. No key is kept. nul.der (NUL,
# CR, LF in the CN and the SANs, a BMPString O) cannot come from the CLI; it was built once with
# BoringSSL's X509 API, as test_nul_bytes in tests/unit/test_xfcc.c does, and is left alone.
set -e
out=$(cd "$(dirname "$0")" && pwd)/corpus/xfcc
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
cd "$tmp"
ec='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'

openssl req -x509 $ec -keyout k -days 30 -outform DER -out "$out/ec.der" \
    -subj '/C=NL/O=Acme/CN=0102030405060708' \
    -addext 'subjectAltName=URI:spiffe://acme.test/ns/default/sa/client,DNS:client.acme.test' \
    -addext 'issuerAltName=DNS:alt.acme.test'
openssl req -x509 -newkey rsa:2048 -nodes -keyout k -days 30 -outform DER -out "$out/rsa.der" \
    -subj '/CN=plain rsa/O=Example Org'
openssl req -x509 $ec -keyout k -days 30 -outform DER -out "$out/multi.der" -multivalue-rdn \
    -subj '/CN=a+serialNumber=1/O=x\, y/OU=#hash' \
    -addext 'subjectAltName=email:a@b.test,IP:192.0.2.1,IP:2001:db8::1,URI:urn:a%0Ab,DNS:*.w.test'
cat > nasty.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
string_mask = utf8only
utf8 = yes
x509_extensions = ext
[dn]
CN = evil;Cert=\"x\",By=y\\z\r\nInjected: 1 é
O = \#lead ,O+<>
1.OU = " spaced "
2.OU = tab\there
[ext]
subjectAltName = @alt
[alt]
URI.1 = spiffe://acme.test/a;Hash=0,URI=b
URI.2 = urn:x\"y\\z\r\nX: é
DNS.1 = a.example;DNS=b.example
DNS.2 = c.example,Subject=\"x\"
DNS.3 = crlf\r\nX-Evil: 1
EOF
openssl req -x509 $ec -keyout k -days 30 -outform DER -out "$out/nasty.der" -config nasty.cnf

# Envoy's own escapes kept verbatim: "O=Acme\, Inc." and a UTF-8 CN; a query string in the URI.
openssl req -x509 $ec -keyout k -days 30 -outform DER -out "$out/utf8.der" -utf8 \
    -subj "/O=Acme\\, Inc./CN=M$(printf '\303\274')ller $(printf '\342\202\254')" \
    -addext 'subjectAltName=URI:spiffe://acme.test/q?a=b&c=d,DNS:*.acme.test'
# The Things Stack's parser takes the first "Chain=": a subject attribute (description has no
# length bound) and a URI SAN that hold ";Chain=" and another certificate's PEM, url-encoded.
openssl req -x509 $ec -keyout k -days 30 -out victim.pem -subj '/CN=victim'
enc=$(sed 's/ /%20/g; s/+/%2B/g; s#/#%2F#g; s/=/%3D/g; s/$/%0A/' victim.pem | tr -d '\n')
cat > smuggle.cnf <<EOF
[req]
distinguished_name = dn
prompt = no
x509_extensions = ext
[dn]
CN = gw
description = x";Chain=$enc
[ext]
subjectAltName = URI:urn:x;Chain=$enc,DNS:a"b.example
EOF
openssl req -x509 $ec -keyout k -days 30 -outform DER -out "$out/smuggle.der" -config smuggle.cnf

# A chain: leaf, intermediate, root, each preceded by its length as 2 bytes, big-endian.
openssl req -x509 $ec -keyout root.key -days 30 -out root.pem -subj '/CN=Root'
printf 'basicConstraints=critical,CA:true\n' > ca.ext
printf 'subjectAltName=URI:spiffe://acme.test/leaf,DNS:leaf.acme.test\n' > leaf.ext
openssl req -new $ec -keyout int.key -subj '/CN=Intermediate' -out int.csr
openssl x509 -req -in int.csr -CA root.pem -CAkey root.key -set_serial 2 -days 30 \
    -extfile ca.ext -out int.pem
openssl req -new $ec -keyout leaf.key -subj '/CN=Leaf' -out leaf.csr
openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -set_serial 3 -days 30 \
    -extfile leaf.ext -out leaf.pem
: > "$out/chain.bin"
for c in leaf int root; do
    openssl x509 -in $c.pem -outform DER -out $c.der
    len=$(wc -c < $c.der)
    printf "\\$(printf %03o $((len >> 8)))\\$(printf %03o $((len & 255)))" >> "$out/chain.bin"
    cat $c.der >> "$out/chain.bin"
done
ls -l "$out"
