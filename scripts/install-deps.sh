#!/bin/sh
# install-deps.sh: installs the Debian packages certgate builds, tests and demos with.
# A no-op when everything is present; uses sudo when not root.
set -eu
PKGS="build-essential android-libboringssl-dev libuv1-dev libyaml-dev node-llhttp libcmocka-dev
curl openssl python3 ca-certificates procps strace util-linux haproxy prometheus"
# haproxy is a real PROXY protocol sender for the pin. tests; prometheus is there for promtool
# (ops.metrics_promtool_after_traffic lints /metrics with `promtool check metrics`): about 19 MB
# to download, nothing is started in a container.
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
