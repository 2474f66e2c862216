#!/bin/sh
# deploy/certbot/certgate-deploy-hook.sh: certbot deploy hook that installs a renewed
# certificate into certgate's credentials directory with scripts/rotate-credentials.sh.
#
#   install -m 0755 deploy/certbot/certgate-deploy-hook.sh \
#       /etc/letsencrypt/renewal-hooks/deploy/certgate
#   install -m 0644 deploy/certbot/certgate-deploy-hook.default /etc/default/certgate-deploy-hook
#   $EDITOR /etc/default/certgate-deploy-hook          (CERTGATE_LINEAGE and the target)
#   RENEWED_LINEAGE=/etc/letsencrypt/live/NAME /etc/letsencrypt/renewal-hooks/deploy/certgate
#                                                       (try it once by hand)
#
# certbot runs every deploy hook once per renewed certificate with RENEWED_LINEAGE set to
# /etc/letsencrypt/live/NAME; only the lineage named in CERTGATE_LINEAGE is installed (another
# one is skipped with a message, exit 0). The hook runs as root: rotate-credentials.sh copies
# fullchain.pem and privkey.pem (the key mode 0600, owned like the files it replaces, so create
# the directory owned by the certgate user), validates them with `certgate check` against the
# configuration, and swaps ..data. certgate reloads on its own; a failure leaves the old
# certificate in place and makes certbot report the hook's error.
#
# Settings, from the environment or from /etc/default/certgate-deploy-hook (CERTGATE_HOOK_ENV
# names another file). Nothing is assumed: a hook that is not configured exits 1 and says what
# is missing, instead of silently doing nothing at every renewal.
#   CERTGATE_LINEAGE         the certbot certificate name (required)
#   CERTGATE_CONFIG          certgate.yaml: validation, and the target directory (its
#                            credentials.dir) when CERTGATE_CREDENTIALS_DIR is not set
#   CERTGATE_CREDENTIALS_DIR credentials.dir (required without CERTGATE_CONFIG)
#   CERTGATE_ROTATE          the rotation script (default: /usr/local/bin/rotate-credentials.sh)
set -eu

prog=certgate-deploy-hook
envfile=${CERTGATE_HOOK_ENV:-/etc/default/certgate-deploy-hook}
if [ -f "$envfile" ]; then
    # shellcheck disable=SC1090 # the operator's settings file
    . "$envfile"
fi

fail() {
    echo "$prog: $1" >&2
    exit 1
}

lineage=${CERTGATE_LINEAGE:-}
config=${CERTGATE_CONFIG:-}
dir=${CERTGATE_CREDENTIALS_DIR:-}
rotate=${CERTGATE_ROTATE:-/usr/local/bin/rotate-credentials.sh}

[ -n "$lineage" ] ||
    fail "CERTGATE_LINEAGE is not set: name the certbot certificate to install (in $envfile)"
[ -n "$dir" ] || [ -n "$config" ] ||
    fail "neither CERTGATE_CREDENTIALS_DIR nor CERTGATE_CONFIG is set: nowhere to install $lineage (in $envfile)"
[ -z "$config" ] || [ -f "$config" ] || fail "CERTGATE_CONFIG=$config: no such file"
[ -z "$dir" ] || [ -d "$dir" ] || fail "CERTGATE_CREDENTIALS_DIR=$dir: no such directory"
[ -x "$rotate" ] || fail "CERTGATE_ROTATE=$rotate: not an executable script"
[ -n "${RENEWED_LINEAGE:-}" ] || fail "RENEWED_LINEAGE is not set (certbot sets it for deploy hooks)"
[ -d "$RENEWED_LINEAGE" ] || fail "RENEWED_LINEAGE=$RENEWED_LINEAGE: no such lineage directory"

case "$RENEWED_LINEAGE" in
*/"$lineage" | */"$lineage"/) ;;
*)
    echo "$prog: $RENEWED_LINEAGE is not $lineage; skipped" >&2
    exit 0
    ;;
esac

export RENEWED_LINEAGE
set --
[ -z "$dir" ] || set -- "$@" --dir "$dir"
[ -z "$config" ] || set -- "$@" --config "$config"
exec "$rotate" "$@"
