#!/bin/sh
# Write lib/abi/libkite.abi: the ABI of the built libkite.so as abidw
# (Debian abigail-tools) describes it, limited to what lib/include declares.
# Run it only to accept an ABI change on purpose (a new function, a member
# carved from reserved space): `meson compile -C build abi-baseline`, or
# tools/abi-baseline.sh SOURCE_DIR LIBKITE_SO by hand. The diff of the
# baseline is then part of the commit that changes the ABI.
set -eu
src=${1:-.}
lib=${2:-$src/build/lib/libkite.so}
command -v abidw >/dev/null || { echo "abi-baseline: abidw missing (apt-get install abigail-tools)" >&2; exit 1; }
[ -f "$lib" ] || { echo "abi-baseline: $lib not built" >&2; exit 1; }
out=$src/lib/abi/libkite.abi
# No paths or source locations: the baseline must not depend on where the
# tree was built. Hash type ids keep unrelated edits out of its diff.
abidw --headers-dir "$src/lib/include" --drop-private-types --drop-undefined-syms \
	--no-corpus-path --no-comp-dir-path --no-show-locs --type-id-style hash \
	"$lib" > "$out.tmp"
mv "$out.tmp" "$out"
echo "abi-baseline: wrote $out ($(grep -c '<elf-symbol ' "$out") symbols)"
