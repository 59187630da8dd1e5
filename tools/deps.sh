#!/bin/sh
# Install what kite needs from Debian 12's own packages, only if missing.
# Used by tools/run.sh and tools/test.sh; safe to run again.
set -eu

pkgs="gcc g++ clang pkg-config meson ninja-build libgnutls28-dev liburing-dev libbenchmark-dev
      linux-libc-dev user-mode-linux kmod iproute2 procps gnutls-bin openssl python3 valgrind
      curl wrk strace abigail-tools groff-base libnghttp2-dev nghttp2-client python3-h2 python3-cryptography
      chromium libsystemd-dev
      python3-matplotlib"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "kite: missing Debian packages:$missing" >&2
	echo "kite: run as root, or: sudo apt-get install$missing" >&2
	exit 1
fi
echo "kite: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086 # word splitting of the package list is wanted
apt-get install -y --no-install-recommends $missing ||
	{ apt-get update && apt-get install -y --no-install-recommends $missing; }
