#!/bin/sh
# The ABI check: the built libkite.so against the committed baseline
# lib/abi/libkite.abi, with abidiff (Debian abigail-tools).
#   - no change: pass;
#   - only additions (a new function or variable): pass, and print them;
#   - anything removed or changed (a symbol, a struct member, a size, a
#     parameter): fail, printing abidiff's report, which names it.
# If the change is intended (say a member carved from reserved space, which
# abidiff reports as a change), regenerate the baseline on purpose:
# `meson compile -C build abi-baseline` (lib/abi/README.md).
# Before that, the judge itself is tested on two tiny libraries: a struct
# that grew must fail naming the member, an added function must pass.
# Usage: test_abi.sh SOURCE_DIR LIBKITE_SO. Exit 0 pass, 77 skip, 1 fail.
set -u
src=$1
lib=$2
for t in abidw abidiff cc; do
	command -v $t >/dev/null || { echo "SKIP: $t missing (apt-get install abigail-tools)"; exit 77; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kite-abi.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# judge BASELINE LIB: 0 same or additions only, 1 otherwise. The baseline
# holds only what the public headers declare (opaque handles as bare
# declarations), so the library's private structs never show up as changes.
# (No --headers-dir2 here: the DWARF's relative header paths would make
# abidiff take kite.h's own structs for private ones and drop them.)
judge() {
	abidiff "$1" "$2" > "$tmp/report" 2>&1
	rc=$?
	[ $rc -eq 0 ] && return 0
	cat "$tmp/report"
	# Bits 1 and 2: abidiff itself failed; 8: incompatible change.
	[ $((rc & 11)) -ne 0 ] && return 1
	# Bit 4: some change. Compatible only if nothing was removed or changed.
	if grep -Eq '(^|[ ,])[1-9][0-9]* (Removed|Changed)' "$tmp/report"; then
		return 1
	fi
	return 0
}

# ---- the judge on known changes ----
mklib() { # DIR STRUCT_BODY EXTRA_DECL EXTRA_DEF
	mkdir -p "$tmp/$1"
	printf 'struct s { %s };\nint f(struct s *p);\n%s\n' "$2" "$3" > "$tmp/$1/t.h"
	printf '#include "t.h"\nint f(struct s *p) { return p->a; }\n%s\n' "$4" > "$tmp/$1/t.c"
	cc -g -shared -fPIC -o "$tmp/$1/libt.so" "$tmp/$1/t.c" || exit 1
}
mklib v1 'int a; int b;' '' ''
mklib grown 'int a; int b; int c;' '' ''
mklib added 'int a; int b;' 'int g(void);' 'int g(void) { return 1; }'
abidw --headers-dir "$tmp/v1" --drop-private-types --no-corpus-path "$tmp/v1/libt.so" \
	> "$tmp/v1.abi" || { echo "FAIL: abidw on the self-test library"; exit 1; }
if judge "$tmp/v1.abi" "$tmp/grown/libt.so" > "$tmp/out"; then
	cat "$tmp/out"; echo "FAIL: self-test: a grown struct passed"; exit 1
fi
grep -q "'int c'" "$tmp/out" || { cat "$tmp/out"; echo "FAIL: self-test: report does not name the member"; exit 1; }
judge "$tmp/v1.abi" "$tmp/added/libt.so" > "$tmp/out" ||
	{ cat "$tmp/out"; echo "FAIL: self-test: an added function failed"; exit 1; }
grep -q "function int g()" "$tmp/out" || { cat "$tmp/out"; echo "FAIL: self-test: addition not printed"; exit 1; }
echo "self-test: a grown struct fails naming its member, an added function passes"

# ---- libkite ----
base=$src/lib/abi/libkite.abi
[ -f "$base" ] || { echo "FAIL: no baseline $base (tools/abi-baseline.sh)"; exit 1; }
[ -f "$lib" ] || { echo "FAIL: $lib not built"; exit 1; }
# Types come from DWARF: a build without -g has only symbol names to compare.
if ! LC_ALL=C readelf -S "$lib" | grep -q '\.debug_info'; then
	echo "SKIP: $lib has no debug info (build with -g, e.g. the default debugoptimized)"
	exit 77
fi
if judge "$base" "$lib"; then
	echo "libkite ABI: compatible with lib/abi/libkite.abi ($(grep -c '<elf-symbol ' "$base") symbols)"
	exit 0
fi
echo "FAIL: libkite's ABI changed incompatibly against lib/abi/libkite.abi (report above)."
echo "If that is intended, regenerate the baseline: meson compile -C build abi-baseline"
exit 1
