#!/bin/sh
# README command 1: install what is missing, build, and show kite's main job:
# a file sent over TLS with kite_sendfile, encrypted by the kernel where it
# can (kTLS) and by GnuTLS in userspace where it cannot, with the reason.
# On a kernel without kTLS the same binary then runs inside User-Mode Linux,
# whose kernel has it, so the offloaded path is shown too.
set -eu
cd "$(dirname "$0")/.."
tools/deps.sh
tools/build.sh >/dev/null
echo "== kite-demo on this kernel ($(uname -r))"
build/tools/kite-demo "$@"
if ! grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null &&
   [ ! -e /proc/net/tls_stat ] && command -v linux.uml >/dev/null; then
	echo
	echo "== the same binary inside User-Mode Linux (Debian's UML kernel has kTLS;"
	echo "   its crypto is generic C, so its MB/s is no speed claim)"
	tests/uml/uml-run -- build/tools/kite-demo "$@"
fi
