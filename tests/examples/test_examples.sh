#!/bin/sh
# The examples of lib/examples, as a server author would use them: kite is
# installed into a temporary prefix (meson install --destdir), every example
# is built there with nothing but `cc X.c $(pkg-config --cflags --libs kite)`,
# and each serves (or, the client, fetches) a 2 MiB file that is compared
# byte for byte: the servers against curl, the client against the
# thread-per-connection server.
# Under KITE_REQUIRE_KTLS=1 (inside UML) every connection must report both
# directions in the kernel; elsewhere they fall back and say why.
# Usage: test_examples.sh SOURCE_DIR BUILD_DIR. Exit 0 pass, 77 skip, 1 fail.
set -u
src=$1
build=$2
for t in cc pkg-config curl openssl meson; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
# A sanitizer build's libkite.so needs its runtime loaded first, which a
# plain `cc` program does not do: the examples are for the library as
# installed, so they are checked in the plain builds only.
if LC_ALL=C readelf -d "$build/lib/libkite.so" 2>/dev/null | grep -q 'libasan'; then
	echo "SKIP: libkite built with AddressSanitizer; the examples are checked in plain builds"
	exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kite-examples.XXXXXX") || exit 1
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.err; do [ -s "$f" ] && { echo "--- $f"; cat "$f"; }; done; exit 1; }

# ---- install and build, as a user of the installed library would ----
meson install -C "$build" --no-rebuild --quiet --destdir "$tmp/root" > "$tmp/install.log" 2>&1 ||
	{ cat "$tmp/install.log"; fail "meson install"; }
pc=$(find "$tmp/root" -name kite.pc | head -n 1)
[ -n "$pc" ] || fail "no kite.pc installed"
export PKG_CONFIG_PATH="${pc%/kite.pc}" PKG_CONFIG_SYSROOT_DIR="$tmp/root"
flags=$(pkg-config --cflags --libs kite) || fail "pkg-config kite"
echo "pkg-config --cflags --libs kite: $flags"
libdir=$(dirname "$(find "$tmp/root" -name 'libkite.so*' | head -n 1)")
export LD_LIBRARY_PATH="$libdir"
for ex in https-threads https-epoll byo-session engine-server download-client; do
	# shellcheck disable=SC2086 # the flags are words
	cc "$src/lib/examples/$ex.c" $flags -o "$tmp/$ex" 2> "$tmp/cc-$ex.err" ||
		{ cat "$tmp/cc-$ex.err"; fail "building $ex"; }
done
echo "built 5 examples against $libdir"

# ---- run ----
mkdir "$tmp/www"
head -c 2097159 /dev/urandom > "$tmp/www/file.bin" || fail "test file"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
	-days 2 -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2> /dev/null || fail "openssl req"

# start NAME ARGS...: run a server example, wait for its "port N".
start() {
	name=$1
	shift
	"$tmp/$name" "$@" > "$tmp/$name.out" 2> "$tmp/$name.err" &
	pids="$pids $!"
	i=0
	while ! grep -q '^port ' "$tmp/$name.out" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 300 ] && fail "$name did not start"
		sleep 0.1
	done
	port=$(sed -n 's/^port //p' "$tmp/$name.out")
}

# fetch NAME PORT: curl the file from a server example, compare.
fetch() {
	curl -sSk --max-time 120 "https://localhost:$2/file.bin" -o "$tmp/got" 2> "$tmp/curl.err" ||
		fail "$1: curl: $(cat "$tmp/curl.err")"
	cmp -s "$tmp/got" "$tmp/www/file.bin" || fail "$1: body differs from the file"
	echo "$1: 2097159 bytes identical"
}

# check NAME: every TLS line the example printed names the kernel (UML) or
# a reason (elsewhere).
check() {
	grep -q '^tls ' "$tmp/$1.err" || fail "$1 printed no connection"
	if [ "${KITE_REQUIRE_KTLS:-0}" = 1 ]; then
		if grep '^tls ' "$tmp/$1.err" | grep -qv 'tx kernel TLS, rx kernel TLS\|rx kernel TLS, tx kernel TLS'; then
			fail "$1: a connection was not offloaded both ways"
		fi
	fi
	grep '^tls ' "$tmp/$1.err" | head -n 1 | sed "s/^/$1: /"
}

start https-threads "$tmp/www" "$tmp/cert.pem" "$tmp/key.pem"
fetch https-threads "$port"
"$tmp/download-client" 127.0.0.1 "$port" /file.bin > "$tmp/got" 2> "$tmp/download-client.err" ||
	fail "download-client"
cmp -s "$tmp/got" "$tmp/www/file.bin" || fail "download-client: body differs"
echo "download-client: 2097159 bytes identical"
check https-threads
check download-client

start https-epoll "$tmp/www" "$tmp/cert.pem" "$tmp/key.pem"
fetch https-epoll "$port"
check https-epoll

start byo-session "$tmp/www/file.bin" "$tmp/cert.pem" "$tmp/key.pem"
fetch byo-session "$port"
check byo-session
grep -q 'SNI callback ran 1 times' "$tmp/byo-session.err" || fail "byo-session: SNI callback"

start engine-server "$tmp/www/file.bin"
fetch engine-server "$port"
check engine-server
echo PASS
