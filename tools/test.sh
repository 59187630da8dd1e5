#!/bin/bash
# README command 2: install what is missing, build, run the tests.
#
#   tools/test.sh              quick: the main stage, every suite once
#   tools/test.sh all          the gauntlet (what CI runs): every stage below,
#                              full-size workloads, the kernel suite on two
#                              kernels
#   tools/test.sh asan fuzz    only the named stages (quick-size workloads)
#
# Stages:
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
# Kernels for the kernel suite (tests/README.md, "Kernel matrix"):
#   all       main on Debian's UML 6.1 (/usr/bin/linux.uml), ubsan-uml on
#             the Linux 6.12 UML kernel from kernel-config/build-uml-kernel,
#             which is built first when it is not cached (~7 min, once)
#   otherwise the 6.12 kernel when it is cached, else Debian's 6.1
#   KITE_UML_KERNEL=PATH overrides both.
#
# Environment: KITE_TEST_SIZE (quick or full; "all" sets full) sizes the
# soak, fault and hostile rounds; KITE_TEST_JOBS the parallel tests (default:
# the number of CPUs); KITE_MESON_TEST_ARGS extra meson test arguments for
# the main stage.
#
# Every stage runs even when an earlier one failed; the closing lines give
# each stage's time and counts and the kernel suite's counts per kernel.
# Exit status: 0 every test passed or skipped, 1 a test or a stage failed,
# 2 bad usage.
set -u
cd "$(dirname "$0")/.." || exit 2
readonly ALL_STAGES="main asan ubsan-uml valgrind fuzz"
readonly DEBIAN_UML=/usr/bin/linux.uml

usage() {
	sed -n '2,/^set -u/{/^set -u/d;s/^# \{0,1\}//;p}' "$0"
}

gauntlet=0
case "${1:-}" in
-h | --help) usage; exit 0 ;;
all)
	[ $# -eq 1 ] || { echo "tools/test.sh: 'all' takes no stages" >&2; exit 2; }
	gauntlet=1
	stages=$ALL_STAGES
	;;
'') stages=main ;;
*) stages=$* ;;
esac
for stage in $stages; do
	case " $ALL_STAGES " in
	*" $stage "*) ;;
	*)
		echo "tools/test.sh: unknown stage '$stage' (all, $ALL_STAGES)" >&2
		exit 2
		;;
	esac
done

tools/deps.sh || exit 1
jobs=${KITE_TEST_JOBS:-$(nproc 2>/dev/null || echo 2)}
if ((gauntlet)); then
	export KITE_TEST_SIZE=full
else
	export KITE_TEST_SIZE=${KITE_TEST_SIZE:-quick}
fi

# Each stage's meson testlog is copied here for the closing lines.
logs=$(mktemp -d "${TMPDIR:-/tmp}/kite-test-XXXXXX") || exit 1
trap 'rm -rf "$logs"' EXIT
failed_stages=''

setup() { # setup DIR MESON-ARGS...: configure once, reconfigure after
	local dir=$1
	shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi && meson compile -C "$dir"
}

# Sets stage_kernel: the UML kernel STAGE's kernel suite runs on. The
# gauntlet gives main Debian's 6.1 and ubsan-uml the self-built 6.12, so the
# whole kernel suite runs on both; otherwise 6.12 when it is cached.
k612=''
said_how=0
kernel_for() {
	if [ -n "${KITE_UML_KERNEL:-}" ]; then
		stage_kernel=$KITE_UML_KERNEL
	elif ((gauntlet)) && [ "$1" = main ]; then
		stage_kernel=$DEBIAN_UML
	elif [ -n "$k612" ] || k612=$(kernel-config/build-uml-kernel --print-path 2>/dev/null); then
		stage_kernel=$k612
	else
		if ((!said_how)); then
			echo "tools/test.sh: no Linux 6.12 UML kernel cached, so the kernel suite" \
				"runs on Debian's UML $("$DEBIAN_UML" --version 2>/dev/null) only; build" \
				"6.12 once (~7 min on 2 cores) with: kernel-config/build-uml-kernel" >&2
			said_how=1
		fi
		stage_kernel=$DEBIAN_UML
	fi
	stage_kver=$("$stage_kernel" --version 2>/dev/null)
	echo "tools/test.sh: kernel suite on Linux $stage_kver ($stage_kernel)"
}

# run_stage STAGE: build and test; sets stage_log (the meson log's path).
run_stage() {
	case $1 in
	main)
		kernel_for main
		setup build -Dwerror=true || return
		stage_log=build/meson-logs/testlog.json
		# shellcheck disable=SC2086 # word splitting of the extra args is wanted
		KITE_UML_KERNEL=$stage_kernel meson test -C build --print-errorlogs --num-processes "$jobs" \
			${KITE_MESON_TEST_ARGS:-}
		;;
	asan)
		setup build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
			-Dbench=disabled -Duml=disabled || return
		stage_log=build-asan/meson-logs/testlog.json
		ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1 \
			UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
			meson test -C build-asan --print-errorlogs --num-processes "$jobs" \
			--suite unit --suite host --suite interop
		;;
	ubsan-uml)
		kernel_for ubsan-uml
		# -fno-sanitize-recover: any undefined behaviour aborts the test
		# (UML passes only a fixed list of variables: no UBSAN_OPTIONS).
		# The bench stays on: its UML smoke run is part of the kernel suite.
		setup build-ubsan -Dwerror=true -Db_sanitize=undefined -Db_lundef=false \
			-Dc_args=-fno-sanitize-recover=undefined \
			-Dcpp_args=-fno-sanitize-recover=undefined || return
		stage_log=build-ubsan/meson-logs/testlog.json
		KITE_UML_KERNEL=$stage_kernel meson test -C build-ubsan --print-errorlogs \
			--num-processes "$jobs" --suite kernel
		;;
	valgrind)
		setup build -Dwerror=true || return
		stage_log=build/meson-logs/testlog-valgrind.json
		# Smaller transfers: valgrind runs about 50 times slower.
		KITE_TEST_BIG_MIB=2 KITE_UNDER_VALGRIND=1 \
			meson test -C build --print-errorlogs --num-processes "$jobs" \
			--suite unit --suite host --timeout-multiplier 4 \
			--wrap "valgrind --quiet --error-exitcode=66 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect --suppressions=$PWD/tests/valgrind.supp"
		;;
	fuzz)
		if ! command -v clang >/dev/null; then
			echo "tools/test.sh: fuzz needs clang (apt-get install clang)" >&2
			return 1
		fi
		# The library and parsers carry coverage instrumentation too, so the
		# fuzzers see inside them, and ASan+UBSan check them.
		CC=clang setup build-fuzz -Dfuzz=enabled -Dbench=disabled -Duml=disabled \
			-Db_sanitize=address,undefined -Db_lundef=false \
			-Dc_args=-fsanitize=fuzzer-no-link -Dc_link_args=-fsanitize=fuzzer-no-link || return
		stage_log=build-fuzz/meson-logs/testlog.json
		KITE_FUZZ_SECONDS=${KITE_FUZZ_SECONDS:-60} \
			meson test -C build-fuzz --print-errorlogs --num-processes "$jobs" --suite fuzz
		;;
	esac
}

if ((gauntlet)) && [ -z "${KITE_UML_KERNEL:-}" ]; then
	# The second kernel: built once per machine (cached by its inputs).
	echo "== tools/test.sh: kernel-6.12"
	start=$SECONDS
	if k612=$(kernel-config/build-uml-kernel); then
		echo "kernel-6.12 $((SECONDS - start)) $k612" >"$logs/0-kernel-6.12.time"
	else
		echo "tools/test.sh: building the Linux 6.12 UML kernel failed" >&2
		failed_stages="$failed_stages kernel-6.12"
		k612=$DEBIAN_UML # ubsan-uml still runs, on 6.1
	fi
fi

n=0
for stage in $stages; do
	n=$((n + 1))
	echo "== tools/test.sh: $stage"
	start=$SECONDS
	stage_log='' stage_kver=''
	run_stage "$stage"
	rc=$?
	if [ -n "$stage_log" ] && [ -f "$stage_log" ]; then
		cp "$stage_log" "$logs/$n-$stage.json"
	fi
	[ "$rc" = 0 ] || failed_stages="$failed_stages $stage"
	printf '%s %s %s %s\n' "$stage" "$((SECONDS - start))" "$rc" "$stage_kver" \
		>"$logs/$n-$stage.time"
done

# The closing lines: per stage, the kernel suite per kernel, and the total.
python3 - "$logs" "${failed_stages# }" <<'PY'
import glob, json, os, sys
logs, failed = sys.argv[1], sys.argv[2].split()
def bucket(r):
    return "OK" if r in ("OK", "EXPECTEDFAIL") else "SKIP" if r == "SKIP" else "FAIL"
def line(n):
    return f"{n['OK']} passed, {n['FAIL']} failed, {n['SKIP']} skipped"
total = {"OK": 0, "FAIL": 0, "SKIP": 0}
kernels = {}
for tf in sorted(glob.glob(os.path.join(logs, "*.time"))):
    parts = open(tf).read().split()
    stage, secs = parts[0], int(parts[1])
    if stage == "kernel-6.12":
        print(f"== kernel-6.12: {secs} s ({parts[2]})")
        continue
    kver = parts[3] if len(parts) > 3 else ""
    n = {"OK": 0, "FAIL": 0, "SKIP": 0}
    jf = tf[:-len(".time")] + ".json"
    for l in (open(jf) if os.path.exists(jf) else []):
        r = json.loads(l)
        b = bucket(r["result"])
        n[b] += 1
        total[b] += 1
        suites = r["name"].split(" / ")[0].split(":", 1)[-1].split("+")
        if "kernel" in suites and kver:
            k = kernels.setdefault((kver, stage), {"OK": 0, "FAIL": 0, "SKIP": 0})
            k[b] += 1
    state = "FAILED" if stage in failed else "ok"
    print(f"== {stage}: {state}, {secs} s, {line(n)}")
for (kver, stage), n in kernels.items():
    print(f"== kernel suite on Linux {kver} ({stage}): {line(n)}")
if failed:
    print("== failed stages: " + " ".join(failed))
print(f"tests: {line(total)}")
PY
[ -z "$failed_stages" ]
