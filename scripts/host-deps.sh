#!/bin/sh
# Installs, from Debian's packages, what the Docker side needs and the host
# may lack: a static busybox (for the local busybox image), ss (a test reads
# the listen backlog with it), unzip (for .data/dataset.zip), fuse3
# (fusermount3, with which lazyfs mounts when not run as root) and chromium
# (a test looks at the server's status page as a person would).
# Does nothing when everything is there.
set -eu

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=""
installed busybox-static || missing="$missing busybox-static"
command -v ss >/dev/null 2>&1 || missing="$missing iproute2"
command -v unzip >/dev/null 2>&1 || missing="$missing unzip"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
command -v fusermount3 >/dev/null 2>&1 || missing="$missing fuse3"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -n "$missing" ] || exit 0

echo "installing:$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "$0: run as root, or install these Debian packages:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # one word per package
apt-get install -y -qq $missing >/dev/null
