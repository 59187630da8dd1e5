#!/bin/sh
# run-fuzz.sh FUZZER CORPUS: fuzz for KITE_FUZZ_SECONDS (default 60) from the
# seed corpus; new inputs go to a scratch dir so the repo stays unchanged.
# A crash leaves crash-* in the scratch dir (printed) and fails the test.
set -eu
fuzzer=$(realpath "$1") corpus=$(realpath "$2")
scratch=$(mktemp -d "${TMPDIR:-/tmp}/kite-fuzz-XXXXXX")
trap 'rm -rf "$scratch/corpus"' EXIT
mkdir "$scratch/corpus"
cd "$scratch"
if "$fuzzer" -max_total_time="${KITE_FUZZ_SECONDS:-60}" -print_final_stats=1 \
	-artifact_prefix="$scratch/" "$scratch/corpus" "$corpus"; then
	rmdir "$scratch" 2>/dev/null || true
	exit 0
fi
echo "fuzz: crash inputs kept in $scratch (add one to $corpus as a regression seed)" >&2
exit 1
