#!/bin/sh
# deploy/certbot/certgate-deploy-hook.sh: certbot deploy hook that installs a renewed
# certificate into certgate's credentials directory with scripts/rotate-credentials.sh.
#
#   install -m 0755 deploy/certbot/certgate-deploy-hook.sh \
#       /etc/letsencrypt/renewal-hooks/deploy/certgate
#   (or: certbot certonly ... --deploy-hook /etc/letsencrypt/renewal-hooks/deploy/certgate)
#
# certbot runs every deploy hook once per renewed certificate with RENEWED_LINEAGE set to
# /etc/letsencrypt/live/NAME; only the lineage named in CERTGATE_LINEAGE is installed. The hook
# runs as root: rotate-credentials.sh copies fullchain.pem and privkey.pem (the key mode 0600,
# owned like the files it replaces, so create the directory owned by the certgate user),
# validates them with `certgate check` against the configuration, and swaps ..data. certgate
# reloads on its own; a failure leaves the old certificate in place and makes certbot report
# the hook's error.
#
# Settings (environment, or edit the defaults):
#   CERTGATE_LINEAGE         the certbot certificate name (default: lorawan.example.com)
#   CERTGATE_CREDENTIALS_DIR credentials.dir (default: /etc/certgate/credentials)
#   CERTGATE_CONFIG          certgate.yaml (default: /etc/certgate/certgate.yaml; "" to skip)
#   CERTGATE_ROTATE          the rotation script (default: /usr/local/bin/rotate-credentials.sh)
set -eu

lineage=${CERTGATE_LINEAGE:-lorawan.example.com}
dir=${CERTGATE_CREDENTIALS_DIR:-/etc/certgate/credentials}
config=${CERTGATE_CONFIG-/etc/certgate/certgate.yaml}
rotate=${CERTGATE_ROTATE:-/usr/local/bin/rotate-credentials.sh}

: "${RENEWED_LINEAGE:?certgate-deploy-hook: RENEWED_LINEAGE is not set (run by certbot)}"
case "$RENEWED_LINEAGE" in
*/"$lineage") ;;
*) exit 0 ;; # another certificate
esac

if [ -n "$config" ]; then
    exec "$rotate" --dir "$dir" --config "$config"
fi
exec "$rotate" --dir "$dir"
