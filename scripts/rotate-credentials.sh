#!/usr/bin/env bash
# rotate-credentials.sh: installs a new server certificate and key into certgate's watched
# credentials directory, atomically, with the Kubernetes "..data" scheme (CONTRACT section 9).
#
# usage:
#   scripts/rotate-credentials.sh --cert FILE --key FILE [--dir DIR] [--config FILE]
#   RENEWED_LINEAGE=/etc/letsencrypt/live/NAME scripts/rotate-credentials.sh [--dir DIR] [--config FILE]
#                                                   (certbot --deploy-hook form: the pair is
#                                                    $RENEWED_LINEAGE/fullchain.pem and privkey.pem)
#
# options:
#   --cert FILE     PEM certificate chain, leaf first (certbot: fullchain.pem)
#   --key FILE      PEM private key, unencrypted (certbot: privkey.pem)
#   --dir DIR       the watched credentials directory, credentials.dir in certgate.yaml
#                   (default: $CERTGATE_CREDENTIALS_DIR; with --config: the config's credentials.dir)
#   --config FILE   certgate.yaml: the file names come from its credentials.cert/credentials.key
#                   and `certgate check -c` validates the new pair with the whole configuration
#                   before it is installed
#   --force         install even when the pair is byte-identical to the installed one (by
#                   default an unchanged pair is not reinstalled: exit 0, nothing touched, so
#                   cron and timers can run this often)
#   -h, --help      this text
#
# Before anything changes, the pair is copied into a new version directory DIR/..<timestamp>/
# and validated there: both files parse (openssl x509 / openssl pkey), every PEM block of the
# chain parses, the key matches the leaf (same public key), the leaf is valid now (not expired,
# not yet valid), and with --config `certgate check` accepts a copy of the configuration whose
# credentials.dir is the new version directory. Then one rename of a new symlink swaps
# DIR/..data to the new version; DIR/tls.crt -> ..data/tls.crt and DIR/tls.key -> ..data/tls.key
# are created when missing (plain files already there are moved into a version directory of
# their own, so they stay available for rollback). The previous version is kept, older ones are
# deleted. The key is mode 0600; when run as root the new files get the owner of the files they
# replace (or of DIR). A running certgate sees the swap through its directory watch.
#
# In the certbot form RENEWED_LINEAGE must name an existing lineage directory, and the target
# (--dir, CERTGATE_CREDENTIALS_DIR or --config) must be given: a hook that is not configured
# fails with a message instead of doing nothing.
#
# Exit status: 0 installed or unchanged; 1 invalid or incomplete input (nothing changed); 2 usage
# error or nothing configured.
# Rollback: ln -s ..<previous> DIR/..data.new && mv -T DIR/..data.new DIR/..data
#
# Environment: CERTGATE (certgate binary for --config; default: certgate on PATH, then
# build/certgate beside this script), CERTGATE_CREDENTIALS_DIR (default --dir).
set -euo pipefail

prog=${0##*/}
here=$(cd "$(dirname "$0")" && pwd)

die() { # die STATUS MESSAGE
    echo "$prog: $2" >&2
    exit "$1"
}
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

cert="" key="" dir="" config="" force=0
while [ $# -gt 0 ]; do
    case "$1" in
    --cert) [ $# -ge 2 ] || die 2 "--cert needs a FILE"; cert=$2; shift 2 ;;
    --key) [ $# -ge 2 ] || die 2 "--key needs a FILE"; key=$2; shift 2 ;;
    --dir) [ $# -ge 2 ] || die 2 "--dir needs a DIR"; dir=$2; shift 2 ;;
    --config | -c) [ $# -ge 2 ] || die 2 "--config needs a FILE"; config=$2; shift 2 ;;
    --cert=*) cert=${1#*=}; shift ;;
    --key=*) key=${1#*=}; shift ;;
    --dir=*) dir=${1#*=}; shift ;;
    --config=*) config=${1#*=}; shift ;;
    --force) force=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$prog: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

command -v openssl >/dev/null 2>&1 || die 1 "openssl not found"

# The certbot deploy-hook form.
if [ -z "$cert" ] && [ -z "$key" ] && [ -n "${RENEWED_LINEAGE+set}" ]; then
    [ -n "$RENEWED_LINEAGE" ] ||
        die 2 "RENEWED_LINEAGE is set but empty (certbot sets it to /etc/letsencrypt/live/NAME)"
    [ -d "$RENEWED_LINEAGE" ] ||
        die 1 "RENEWED_LINEAGE=$RENEWED_LINEAGE: no such certbot lineage directory"
    cert=$RENEWED_LINEAGE/fullchain.pem
    key=$RENEWED_LINEAGE/privkey.pem
fi
[ -n "$cert" ] || die 2 "no certificate: give --cert FILE (or set RENEWED_LINEAGE)"
[ -n "$key" ] || die 2 "no private key: give --key FILE (or set RENEWED_LINEAGE)"

# --- the configuration: file names, credentials.dir, the certgate binary ----------------------

# cfg_get FILE KEY: the value of credentials.KEY in a block-style YAML file (unquoted).
cfg_get() {
    awk -v want="$2" '
        /^credentials:[ \t]*(#.*)?$/ { inside = 1; next }
        /^[^ \t#]/ { inside = 0 }
        inside && match($0, "^[ \t]+" want ":[ \t]*") {
            v = substr($0, RLENGTH + 1)
            if (v ~ /^"/) { sub(/^"/, "", v); sub(/".*$/, "", v) }
            else if (v ~ /^'\''/) { sub(/^'\''/, "", v); sub(/'\''.*$/, "", v) }
            else { sub(/[ \t]+#.*$/, "", v); sub(/[ \t]+$/, "", v) }
            print v; exit
        }' "$1"
}

cert_name=tls.crt
key_name=tls.key
cfg_dir=""
if [ -n "$config" ]; then
    [ -f "$config" ] || die 1 "$config: no such configuration file"
    if [ -n "$(cfg_get "$config" pkcs12)" ]; then
        die 1 "$config: credentials.pkcs12 is set; this script installs a PEM cert and key"
    fi
    cfg_dir=$(cfg_get "$config" dir)
    n=$(cfg_get "$config" cert)
    [ -z "$n" ] || cert_name=$n
    n=$(cfg_get "$config" key)
    [ -z "$n" ] || key_name=$n
    if [ -n "${CERTGATE:-}" ]; then
        certgate=$CERTGATE
    elif command -v certgate >/dev/null 2>&1; then
        certgate=$(command -v certgate)
    else
        certgate=$here/../build/certgate
    fi
    [ -x "$certgate" ] || die 1 "certgate binary not found (set CERTGATE=/path/to/certgate)"
fi
for n in "$cert_name" "$key_name"; do
    case "$n" in
    */* | .* | "") die 1 "credentials file name '$n' must be a plain name in credentials.dir" ;;
    esac
done

[ -n "$dir" ] || dir=${CERTGATE_CREDENTIALS_DIR:-}
[ -n "$dir" ] || dir=$cfg_dir
[ -n "$dir" ] || die 2 "no credentials directory: give --dir DIR or set CERTGATE_CREDENTIALS_DIR"
[ -d "$dir" ] || die 1 "$dir: the credentials directory does not exist"
dir=$(cd "$dir" && pwd -P)
if [ -n "$cfg_dir" ]; then
    real_cfg_dir=$(cd "$cfg_dir" 2>/dev/null && pwd -P) || real_cfg_dir=$cfg_dir
    [ "$real_cfg_dir" = "$dir" ] ||
        die 1 "$config watches credentials.dir $cfg_dir, not $dir"
fi

# --- input ------------------------------------------------------------------------------------

[ -e "$cert" ] || die 1 "$cert: no such certificate file"
[ -e "$key" ] || die 1 "$key: no such private key file"
[ -r "$cert" ] || die 1 "$cert: not readable"
[ -r "$key" ] || die 1 "$key: not readable"
[ -s "$cert" ] || die 1 "$cert: empty file"
[ -s "$key" ] || die 1 "$key: empty file"

# One run at a time per directory.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$dir/.rotate-credentials.lock" || die 1 "$dir: not writable"
    flock -w 60 9 || die 1 "$dir: another rotation is still running"
fi

work=$(mktemp -d)
stage=""
cleanup() {
    rm -rf "$work"
    [ -z "$stage" ] || rm -rf "$stage"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

ts=$(date -u +%Y_%m_%d_%H_%M_%S)
nano=$(date -u +%N)
case "$nano" in *N* | "") nano=$(printf '%09d' "$$") ;; esac
version="..$ts.$nano"
while ! mkdir -m 0755 "$dir/$version" 2>/dev/null; do
    [ -w "$dir" ] || die 1 "$dir: not writable"
    nano=$(printf '%09d' $((10#$nano + 1)))
    version="..$ts.$nano"
done
stage=$dir/$version

# Copy first and validate the copies: what is checked is exactly what will be served.
(umask 077 && cat "$key" >"$stage/$key_name") || die 1 "$key: cannot copy into $stage"
cat "$cert" >"$stage/$cert_name" || die 1 "$cert: cannot copy into $stage"
chmod 0600 "$stage/$key_name"
chmod 0644 "$stage/$cert_name"
new_cert=$stage/$cert_name
new_key=$stage/$key_name

# --- validation -------------------------------------------------------------------------------

openssl x509 -in "$new_cert" -noout 2>"$work/err" ||
    die 1 "$cert: not a PEM certificate ($(head -n 1 "$work/err"))"
blocks=$(grep -c -- '-----BEGIN CERTIFICATE-----' "$new_cert" || true)
awk -v d="$work" '/-----BEGIN CERTIFICATE-----/ { n++; f = d "/chain." n ".pem" }
                  f { print > f } /-----END CERTIFICATE-----/ { close(f); f = "" }' "$new_cert"
for ((i = 1; i <= blocks; i++)); do
    openssl x509 -in "$work/chain.$i.pem" -noout 2>/dev/null ||
        die 1 "$cert: certificate $i of the chain does not parse"
done
if grep -q -- '-----BEGIN [A-Z ]*PRIVATE KEY-----' "$new_cert"; then
    die 1 "$cert: holds a private key; give the certificate chain only"
fi

openssl pkey -in "$new_key" -passin pass: -noout 2>"$work/err" ||
    die 1 "$key: not an unencrypted PEM private key ($(head -n 1 "$work/err"))"

openssl x509 -in "$new_cert" -noout -pubkey >"$work/cert.pub" 2>/dev/null ||
    die 1 "$cert: cannot read the public key"
openssl pkey -in "$new_key" -passin pass: -pubout -out "$work/key.pub" 2>/dev/null ||
    die 1 "$key: cannot derive the public key"
cmp -s "$work/cert.pub" "$work/key.pub" ||
    die 1 "$key does not match the certificate in $cert (different public keys)"

subject=$(openssl x509 -in "$new_cert" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
not_after=$(openssl x509 -in "$new_cert" -noout -enddate | sed 's/^notAfter=//')
not_before=$(openssl x509 -in "$new_cert" -noout -startdate | sed 's/^notBefore=//')
openssl x509 -in "$new_cert" -noout -checkend 0 >/dev/null ||
    die 1 "$cert: the certificate \"$subject\" expired at $not_after"
if nb=$(date -u -d "$not_before" +%s 2>/dev/null) && [ "$nb" -gt "$(date -u +%s)" ]; then
    die 1 "$cert: the certificate \"$subject\" is not valid before $not_before"
fi

if [ -n "$config" ]; then
    # A copy of the configuration whose credentials.dir is the staged version directory.
    tmpcfg=$work/certgate.yaml
    if [ -n "$cfg_dir" ]; then
        awk -v nd="$stage" '
            /^credentials:[ \t]*(#.*)?$/ { inside = 1; print; next }
            /^[^ \t#]/ { inside = 0 }
            inside && !done && match($0, /^[ \t]+dir:/) {
                print substr($0, 1, RLENGTH) " \"" nd "\""; done = 1; next
            }
            { print }' "$config" >"$tmpcfg"
    else
        die 1 "$config: cannot find credentials.dir (write the credentials section in block style)"
    fi
    if ! "$certgate" check -c "$tmpcfg" >"$work/check.out" 2>&1; then
        sed -e "s|$tmpcfg|$config|g" -e "s|$stage/|$dir/|g" "$work/check.out" >&2
        die 1 "certgate check -c $config fails with the new credentials in place; nothing changed"
    fi
fi

# --- installation -----------------------------------------------------------------------------

# The same pair again (a timer or cron job running this often): nothing to do.
if [ $force -eq 0 ] && [ -L "$dir/..data" ] &&
    [ "$(readlink "$dir/$cert_name" 2>/dev/null)" = "..data/$cert_name" ] &&
    [ "$(readlink "$dir/$key_name" 2>/dev/null)" = "..data/$key_name" ] &&
    cmp -s "$dir/..data/$cert_name" "$new_cert" && cmp -s "$dir/..data/$key_name" "$new_key"; then
    echo "$prog: \"$subject\" (valid until $not_after) is already installed; nothing to do"
    exit 0
fi

# The owner of what is replaced (when run as root).
if [ "$(id -u)" = 0 ]; then
    ref=$dir
    [ -e "$dir/$key_name" ] && ref=$dir/$key_name
    chown --reference="$ref" "$new_cert" "$new_key" 2>/dev/null || true
fi

swap_data() { # swap_data VERSION: points DIR/..data at VERSION with one rename
    ln -s "$1" "$dir/..data.tmp.$$"
    mv -T "$dir/..data.tmp.$$" "$dir/..data"
}

previous=""
if [ -L "$dir/..data" ]; then
    previous=$(readlink "$dir/..data")
elif [ -e "$dir/..data" ]; then
    die 1 "$dir/..data exists and is not a symlink; refusing to touch it"
fi

# Plain files (or links elsewhere) where the ..data links go: keep them in a version directory
# of their own so that they remain available for rollback.
legacy=""
for n in "$cert_name" "$key_name"; do
    p=$dir/$n
    if [ -L "$p" ] && [ "$(readlink "$p")" = "..data/$n" ]; then
        continue
    fi
    if [ -e "$p" ] || [ -L "$p" ]; then
        if [ -z "$legacy" ]; then
            legacy="..${ts}.000000000"
            mkdir -m 0755 "$dir/$legacy"
        fi
        cp -pL "$p" "$dir/$legacy/$n" 2>/dev/null || true
        [ "$n" != "$key_name" ] || chmod 0600 "$dir/$legacy/$n" 2>/dev/null || true
    fi
done

swap_data "$version"
stage=""
# The links (renamed over what is there: each step is atomic; certgate refuses a pair whose
# key does not match, so the moment between the two renames is never served).
for n in "$key_name" "$cert_name"; do
    p=$dir/$n
    if [ -L "$p" ] && [ "$(readlink "$p")" = "..data/$n" ]; then
        continue
    fi
    ln -s "..data/$n" "$dir/.$n.tmp.$$"
    mv -T "$dir/.$n.tmp.$$" "$p"
done
[ -z "$legacy" ] || [ -n "$previous" ] || previous=$legacy

# Keep the new and the previous version, delete older ones.
for v in "$dir"/..[0-9][0-9][0-9][0-9]_*; do
    if [ ! -d "$v" ] || [ -L "$v" ]; then
        continue
    fi
    b=${v##*/}
    [ "$b" = "$version" ] || [ "$b" = "$previous" ] || rm -rf "$v"
done

echo "$prog: installed \"$subject\" (valid until $not_after) as $dir/$version" \
    "${previous:+(previous: $previous)}"
