#!/bin/sh
# README command 2: install what is missing, build, run every test suite.
#
#   main      ./build (warnings are errors): unit, host, kernel (the same
#             tests inside User-Mode Linux, where kTLS must engage), interop
#             (gnutls-cli, openssl, curl...), bench (kite-bench --quick)
#   asan      ./build-asan with AddressSanitizer + UBSan: unit, host, interop
#   ubsan-uml ./build-ubsan with UBSan (ASan's shadow memory does not fit in
#             User-Mode Linux): the kernel suite, inside UML with kTLS
#   valgrind  ./build under valgrind (leaks, invalid accesses): unit, host
#   fuzz      ./build-fuzz with clang + libFuzzer: each target for
#             KITE_FUZZ_SECONDS (default 60)
#
# tools/test.sh            every stage (what CI runs)
# tools/test.sh main ...   only the named stages
# Extra meson test arguments for the main stage: KITE_MESON_TEST_ARGS.
set -eu
cd "$(dirname "$0")/.."
tools/deps.sh

stages=${*:-main asan ubsan-uml valgrind fuzz}
jobs=$(nproc 2>/dev/null || echo 2)

setup() { # setup DIR MESON-ARGS...: configure once, reconfigure after
	dir=$1
	shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi
	meson compile -C "$dir"
}

# Each stage's meson testlog is copied here for the closing count.
logs=$(mktemp -d "${TMPDIR:-/tmp}/kite-test-XXXXXX")
trap 'rm -rf "$logs"' EXIT
# keep_log DIR [NAME]: meson names the log after the --wrap program.
keep_log() { cp "$1/meson-logs/${2:-testlog}.json" "$logs/$stage.json"; }

for stage in $stages; do
	echo "== tools/test.sh: $stage"
	case $stage in
	main)
		setup build -Dwerror=true
		# shellcheck disable=SC2086 # word splitting of the extra args is wanted
		meson test -C build --print-errorlogs --num-processes "$jobs" ${KITE_MESON_TEST_ARGS:-}
		keep_log build
		;;
	asan)
		setup build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
			-Dbench=disabled -Duml=disabled
		ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
			meson test -C build-asan --print-errorlogs --num-processes "$jobs" \
			--suite unit --suite host --suite interop
		keep_log build-asan
		;;
	ubsan-uml)
		# -fno-sanitize-recover: any undefined behaviour aborts the test
		# (UML passes only a fixed list of variables: no UBSAN_OPTIONS).
		setup build-ubsan -Dwerror=true -Db_sanitize=undefined -Db_lundef=false \
			-Dbench=disabled -Dc_args=-fno-sanitize-recover=undefined
		meson test -C build-ubsan --print-errorlogs --num-processes "$jobs" --suite kernel
		keep_log build-ubsan
		;;
	valgrind)
		setup build -Dwerror=true
		# Smaller transfers: valgrind runs about 50 times slower.
		KITE_TEST_BIG_MIB=2 KITE_UNDER_VALGRIND=1 \
			meson test -C build --print-errorlogs --num-processes "$jobs" \
			--suite unit --suite host --timeout-multiplier 4 \
			--wrap "valgrind --quiet --error-exitcode=66 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect --suppressions=$PWD/tests/valgrind.supp"
		keep_log build testlog-valgrind
		;;
	fuzz)
		if ! command -v clang >/dev/null; then
			echo "tools/test.sh: fuzz needs clang (apt-get install clang)" >&2
			exit 1
		fi
		# The library and parsers carry coverage instrumentation too, so the
		# fuzzers see inside them, and ASan+UBSan check them.
		CC=clang setup build-fuzz -Dfuzz=enabled -Dbench=disabled -Duml=disabled \
			-Db_sanitize=address,undefined -Db_lundef=false \
			-Dc_args=-fsanitize=fuzzer-no-link -Dc_link_args=-fsanitize=fuzzer-no-link
		KITE_FUZZ_SECONDS=${KITE_FUZZ_SECONDS:-60} \
			meson test -C build-fuzz --print-errorlogs --num-processes "$jobs" --suite fuzz
		keep_log build-fuzz
		;;
	*)
		echo "tools/test.sh: unknown stage '$stage' (main, asan, ubsan-uml, valgrind, fuzz)" >&2
		exit 2
		;;
	esac
done
echo "== tools/test.sh: all stages passed ($stages)"
# One closing line over every stage (a failing stage already stopped us).
python3 - "$logs"/*.json <<'PY'
import json, sys
n = {"OK": 0, "FAIL": 0, "SKIP": 0}
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)["result"]
        key = "OK" if r in ("OK", "EXPECTEDFAIL") else "SKIP" if r == "SKIP" else "FAIL"
        n[key] += 1
print(f"tests: {n['OK']} passed, {n['FAIL']} failed, {n['SKIP']} skipped")
PY
