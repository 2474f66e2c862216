#!/usr/bin/env bash
# sync-ca-store.sh: copies a CA store (The Things Stack's index.yml layout) from a directory or
# an S3 prefix into certgate's watched ca_store.dir, validated first and swapped in atomically
# with the Kubernetes "..data" scheme (CONTRACT section 9). Meant for cron, a systemd timer or
# a sidecar container (--every).
#
# usage: scripts/sync-ca-store.sh [--force] [--flat] [--init-empty] [--every SECONDS] SRC DEST
#   SRC       a directory, or s3://bucket/prefix (fetched with `aws s3 sync`; needs the aws CLI
#             and its usual credentials: environment, ~/.aws, instance or pod role)
#   DEST      the watched CA store directory, ca_store.dir in certgate.yaml (created if absent)
#   --force   install even when the new store is byte-identical to the installed one
#   --flat    SRC is flat, as a Kubernetes ConfigMap mounts its keys: index.yml, common.FILE
#             (becomes common/FILE) and tenant.ID.FILE (becomes tenants/ID/FILE); other names
#             are reported and ignored
#   --init-empty  when DEST has no index.yml yet, first install an empty store (valid: nothing
#             trusted yet), so that certgate can start before the first sync succeeds
#   --every SECONDS  a sidecar: sync now and then every SECONDS until SIGTERM; a failed sync is
#             reported on stderr and retried at the next turn (the previous store stays)
#   -h, --help  this text
#
# Only SRC/index.yml, SRC/common/ and SRC/tenants/ are taken (certgate never reads anything
# else; symlinks in SRC are followed). They are copied into a new version directory
# DEST/..<timestamp>/ and validated there with `certgate check` on a throwaway configuration
# (one tls listener that verifies client certificates against the staged store, a self-signed
# server certificate made with openssl, no admin listener): index.yml must parse, every listed
# file must exist and hold only complete CERTIFICATE / X509 CRL blocks, in common and in every
# tenant. Any problem, even in a single tenant, rejects the whole sync and leaves DEST as it
# was; the message names the file and line. Then one rename of a new symlink swaps DEST/..data
# to the new version; DEST/index.yml, DEST/common and DEST/tenants are symlinks into ..data
# (created on the first run; a plain store already in DEST is moved into a version directory of
# its own, index.yml first, so a certgate reloading in between keeps its previous store). The
# previous version is kept for rollback, older ones are deleted. An unchanged store is not
# reinstalled (exit 0). A running certgate sees the swap through its directory watch.
#
# Exit status: 0 installed or unchanged; 1 invalid or incomplete input, fetch failure (DEST is
# unchanged); 2 usage error.
# Rollback: ln -s ..<previous> DEST/..data.new && mv -T DEST/..data.new DEST/..data
#
# Environment: CERTGATE (the certgate binary; default: certgate on PATH, then build/certgate
# beside this script), AWS_* (for s3:// sources).
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

force=0
flat=0
init_empty=0
every=""
args=()
pass=() # the options a turn of --every passes on
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --force) force=1; pass+=("$1"); shift ;;
    --flat) flat=1; pass+=("$1"); shift ;;
    --init-empty) init_empty=1; pass+=("$1"); shift ;;
    --every) [ $# -ge 2 ] || die 2 "--every needs SECONDS"; every=$2; shift 2 ;;
    --every=*) every=${1#*=}; shift ;;
    --) shift; args+=("$@"); break ;;
    -*) echo "$prog: unknown option: $1 (see --help)" >&2; exit 2 ;;
    *) args+=("$1"); shift ;;
    esac
done
[ ${#args[@]} -eq 2 ] || die 2 "usage: $prog [--force] SRC DEST (see --help)"
src=${args[0]}
dest=${args[1]}

if [ -n "$every" ]; then
    case "$every" in
    *[!0-9]* | "" | 0) die 2 "--every needs a whole number of seconds, not '$every'" ;;
    esac
    # Each turn is a fresh run of this script, so that a failure (die) ends only that turn.
    trap 'exit 0' TERM INT
    while :; do
        rc=0
        "${BASH:-bash}" "$0" "${pass[@]}" -- "$src" "$dest" || rc=$?
        [ "$rc" -ne 2 ] || exit 2 # a usage error does not get better by retrying
        [ "$rc" -eq 0 ] || echo "$prog: sync failed (exit $rc); next try in ${every}s" >&2
        sleep "$every" &
        wait $! || true
    done
fi

command -v openssl >/dev/null 2>&1 || die 1 "openssl not found"
if [ -n "${CERTGATE:-}" ]; then
    certgate=$CERTGATE
elif command -v certgate >/dev/null 2>&1; then
    certgate=$(command -v certgate)
else
    certgate=$here/../build/certgate
fi
[ -x "$certgate" ] || die 1 "certgate binary not found (set CERTGATE=/path/to/certgate)"

mkdir -p "$dest" 2>/dev/null || die 1 "$dest: cannot create the CA store directory"
dest=$(cd "$dest" && pwd -P)
[ -w "$dest" ] || die 1 "$dest: not writable"

# An empty store first (before the lock: it is a run of its own), so certgate can start.
if [ $init_empty -eq 1 ] && [ ! -e "$dest/index.yml" ]; then
    empty=$(mktemp -d)
    mkdir "$empty/src"
    : >"$empty/src/index.yml"
    if ! "${BASH:-bash}" "$0" -- "$empty/src" "$dest"; then
        rm -rf "$empty"
        die 1 "$dest: cannot install an empty CA store"
    fi
    rm -rf "$empty"
fi

if command -v flock >/dev/null 2>&1; then
    exec 9>"$dest/.sync-ca-store.lock" || die 1 "$dest: not writable"
    flock -w 120 9 || die 1 "$dest: another sync is still running"
fi

work=$(mktemp -d)
stage=""
cleanup() {
    rm -rf "$work"
    [ -z "$stage" ] || rm -rf "$stage"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# --- fetch ------------------------------------------------------------------------------------

case "$src" in
s3://*)
    command -v aws >/dev/null 2>&1 ||
        die 1 "$src: the aws CLI is not installed (apt-get install awscli, or sync the bucket into a directory and give that)"
    mkdir "$work/s3"
    aws s3 sync "${src%/}/" "$work/s3/" --only-show-errors --no-progress >"$work/aws.out" 2>&1 || {
        sed 's/^/  /' "$work/aws.out" >&2
        die 1 "$src: aws s3 sync failed; nothing changed"
    }
    srcdir=$work/s3
    ;;
*://*) die 2 "$src: only directories and s3:// sources are supported" ;;
*)
    [ -d "$src" ] || die 1 "$src: no such directory"
    srcdir=$src
    ;;
esac
# flat_layout IN OUT: a ConfigMap's flat keys laid out as index.yml, common/, tenants/ID/.
flat_layout() {
    mkdir -p "$2/common" "$2/tenants"
    local f b rest id
    for f in "$1"/*; do
        [ -f "$f" ] || continue # ..data and the version directories start with a dot
        b=${f##*/}
        case "$b" in
        index.yml) cp -L "$f" "$2/index.yml" ;;
        common.?*) cp -L "$f" "$2/common/${b#common.}" ;;
        tenant.?*.?*)
            rest=${b#tenant.}
            id=${rest%%.*}
            mkdir -p "$2/tenants/$id"
            cp -L "$f" "$2/tenants/$id/${rest#*.}"
            ;;
        *) echo "$prog: $src/$b: ignored (flat names are index.yml, common.FILE, tenant.ID.FILE)" >&2 ;;
        esac
    done
}
if [ $flat -eq 1 ]; then
    flat_layout "$srcdir" "$work/flat" || die 1 "$src: cannot lay out the flat store"
    srcdir=$work/flat
fi

[ -f "$srcdir/index.yml" ] || die 1 "$src: no index.yml (incomplete CA store); nothing changed"
for d in common tenants; do
    if [ -e "$srcdir/$d" ] && [ ! -d "$srcdir/$d" ]; then
        die 1 "$src/$d: not a directory"
    fi
done

# --- stage ------------------------------------------------------------------------------------

ts=$(date -u +%Y_%m_%d_%H_%M_%S)
nano=$(date -u +%N)
case "$nano" in *N* | "") nano=$(printf '%09d' "$$") ;; esac
version="..$ts.$nano"
while ! mkdir -m 0755 "$dest/$version" 2>/dev/null; do
    nano=$(printf '%09d' $((10#$nano + 1)))
    version="..$ts.$nano"
done
stage=$dest/$version

cp -L "$srcdir/index.yml" "$stage/index.yml" || die 1 "$src/index.yml: cannot copy"
for d in common tenants; do
    if [ -d "$srcdir/$d" ]; then
        cp -RL "$srcdir/$d" "$stage/$d" || die 1 "$src/$d: cannot copy"
    else
        mkdir "$stage/$d"
    fi
done
chmod -R u+rwX,go+rX,go-w "$stage"

# --- validate ---------------------------------------------------------------------------------

mkdir -m 0700 "$work/creds"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=certgate sync-ca-store check" -keyout "$work/creds/tls.key" \
    -out "$work/creds/tls.crt" >/dev/null 2>"$work/openssl.err" ||
    die 1 "openssl cannot make the throwaway certificate: $(head -n 1 "$work/openssl.err")"
cat >"$work/check.yaml" <<EOF
log:
  level: error
credentials:
  dir: "$work/creds"
ca_store:
  dir: "$stage"
listeners:
  - name: check
    address: 127.0.0.1:0
    mode: tls
    upstream: 127.0.0.1:9
    client_auth: require
    verify: on
EOF
rc=0
"$certgate" check -c "$work/check.yaml" >"$work/check.out" 2>&1 || rc=$?
# certgate check reports a broken tenant on an "error:" line and counts it in "N load errors"
# (its exit status stays 0 there, since the proxy serves the other tenants): both count here.
summary=$(grep -E '^CA store .*: [0-9]+ tenants?, [0-9]+ load errors?$' "$work/check.out" || true)
errors=$(printf '%s\n' "$summary" | sed -n 's/.*, \([0-9]*\) load errors\{0,1\}$/\1/p')
if [ "$rc" -ne 0 ] || [ -z "$summary" ] || [ "${errors:-1}" -ne 0 ] ||
    grep -q '^error:' "$work/check.out"; then
    grep -v -e '^configuration: ' -e '^listener check: ' -e '^credentials: ' "$work/check.out" |
        sed -e "s|$stage|$src|g" -e 's/^/  /' >&2
    die 1 "$src: the CA store does not validate; $dest is unchanged"
fi
tenants=$(printf '%s\n' "$summary" | sed -n 's/.*: \([0-9]* tenants\{0,1\}\), .*/\1/p')

# --- install ----------------------------------------------------------------------------------

previous=""
if [ -L "$dest/..data" ]; then
    previous=$(readlink "$dest/..data")
elif [ -e "$dest/..data" ]; then
    die 1 "$dest/..data exists and is not a symlink; refusing to touch it"
fi

linked=1
for n in index.yml common tenants; do
    if [ ! -L "$dest/$n" ] || [ "$(readlink "$dest/$n")" != "..data/$n" ]; then
        linked=0
    fi
done

if [ $force -eq 0 ] && [ $linked -eq 1 ] && [ -n "$previous" ] &&
    diff -r -q "$dest/$previous" "$stage" >/dev/null 2>&1; then
    echo "$prog: $src is unchanged ($tenants); nothing to do"
    exit 0
fi

# A plain store (or foreign links) where the ..data links go: moved into a version directory of
# its own, index.yml first (without an index.yml a reloading certgate keeps its previous store).
if [ $linked -eq 0 ]; then
    legacy=""
    for n in index.yml common tenants; do
        p=$dest/$n
        if [ -L "$p" ] && [ "$(readlink "$p")" = "..data/$n" ]; then
            continue
        fi
        if [ -e "$p" ] || [ -L "$p" ]; then
            if [ -z "$legacy" ]; then
                legacy="..$ts.000000000"
                mkdir -m 0755 "$dest/$legacy" || die 1 "$dest: cannot make $legacy"
            fi
            mv -T "$p" "$dest/$legacy/$n" || die 1 "$p: cannot move it aside"
        fi
    done
    [ -n "$previous" ] || previous=$legacy
fi

ln -s "$version" "$dest/..data.tmp.$$"
mv -T "$dest/..data.tmp.$$" "$dest/..data"
stage=""
for n in common tenants index.yml; do
    p=$dest/$n
    if [ -L "$p" ] && [ "$(readlink "$p")" = "..data/$n" ]; then
        continue
    fi
    ln -s "..data/$n" "$dest/.$n.tmp.$$"
    mv -T "$dest/.$n.tmp.$$" "$p"
done

for v in "$dest"/..[0-9][0-9][0-9][0-9]_*; do
    if [ ! -d "$v" ] || [ -L "$v" ]; then
        continue
    fi
    b=${v##*/}
    [ "$b" = "$version" ] || [ "$b" = "$previous" ] || rm -rf "$v"
done

echo "$prog: installed $src ($tenants) as $dest/$version${previous:+ (previous: $previous)}"
