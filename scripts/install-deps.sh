#!/bin/sh
# install-deps.sh: installs the Debian packages certgate builds, tests and demos with, and the
# tools `make test` checks the deployment recipes with (shellcheck; kubectl, systemd-analyze and
# docker-compose for offline validation of the manifests, units and compose file).
# A no-op when everything is present; uses sudo when not root.
set -eu
PKGS="build-essential android-libboringssl-dev libuv1-dev libyaml-dev node-llhttp libcmocka-dev libnghttp2-dev
curl openssl python3 ca-certificates procps strace shellcheck util-linux docker-compose haproxy
prometheus valgrind python3-h2 python3-grpcio nghttp2-client"
# valgrind: tests/run-all.sh runs the unit tests and some integration tests under memcheck.
# haproxy is a real PROXY protocol sender for the pin. tests; prometheus is there for promtool
# (ops.metrics_promtool_after_traffic lints /metrics with `promtool check metrics`): about 19 MB
# to download, nothing is started in a container.
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# Tools that may come from elsewhere than Debian (a kubectl from the Kubernetes project, a host
# systemd): only their absence makes us install Debian's. systemd-analyze verify works without
# systemd running as PID 1, so the package is usable inside a container too.
command -v kubectl >/dev/null 2>&1 || missing="$missing kubernetes-client"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
[ -z "$missing" ] && exit 0
echo "install-deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086 # one word per package
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
