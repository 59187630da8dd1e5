#!/bin/bash
# Self-test for tests/uml/uml-run.  Runs a handful of commands under UML, all
# at the same time (which also exercises concurrent instances), and checks
# exit statuses, kTLS availability, environment, working directory, argument
# quoting, the stdout/stderr plumbing and that no UML process is left over.
# Exits 0 if everything passed, 1 otherwise.
#
# Usage: tests/uml/selftest.sh [uml-run options...]   (e.g. --kernel PATH)
# UML_RUN=/path/to/uml-run overrides the runner under test.

# shellcheck disable=SC2016  # single-quoted $... is meant for the UML side
set -u

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P) || exit 1
runner=${UML_RUN:-$here/uml-run}
runner_opts=("$@")

work=$(mktemp -d "${TMPDIR:-/tmp}/uml-selftest.XXXXXX") || exit 1
trap 'rm -rf -- "$work"' EXIT

names=()
declare -A pid=() want=()
in_dir=.      # working directory for the next start
with_env=()   # NAME=VALUE for the runner's environment, next start only
extra_opts=() # extra uml-run options, next start only

# start NAME EXPECTED_STATUS CMD...: run CMD under uml-run in the background,
# stdout and stderr to $work/NAME.out and $work/NAME.err.
start() {
	local name=$1 expected=$2
	shift 2
	# cd + exec keep $! the runner's pid (its umid contains it).
	(cd -- "$in_dir" && exec env "${with_env[@]}" \
		"$runner" "${runner_opts[@]}" "${extra_opts[@]}" -- "$@") \
		>"$work/$name.out" 2>"$work/$name.err" &
	pid[$name]=$!
	want[$name]=$expected
	names+=("$name")
	in_dir=. with_env=() extra_opts=()
}

# 1. plain success
start true 0 true
# 2. the exit status comes back
start exit3 3 sh -c 'exit 3'
# 3. kTLS is really there, and the runner's variables are set
start ktls 0 sh -c 'grep -q TlsTxSw /proc/net/tls_stat &&
	[ "$KITE_REQUIRE_KTLS" = 1 ] && [ "$KITE_IN_UML" = 1 ]'
# 4. arguments arrive intact (printed NUL-separated, compared below)
args=('two words' '  padded  ' "it's" 'dq"x' '$HOME' '*' '' $'new\nline' 'back\slash' '-n')
start args 0 printf '%s\0' "${args[@]}"
# 5. environment passing (KITE_*, MESON_*, --env NAME, and nothing else), the
#    working directory (with a space in its name), a file written inside
#    reaching the host, stdout and stderr kept apart
envdir="$work/dir with space"
mkdir -p "$envdir"
in_dir=$envdir
with_env=('KITE_SELFTEST=k v' MESON_SELFTEST=m SELFTEST_EXTRA=e SELFTEST_HIDDEN=h)
extra_opts=(--env SELFTEST_EXTRA)
start env 0 sh -c '
	[ "$KITE_SELFTEST" = "k v" ] || { echo "KITE_SELFTEST=$KITE_SELFTEST"; exit 1; }
	[ "$MESON_SELFTEST" = m ] || { echo "MESON_SELFTEST missing"; exit 1; }
	[ "$SELFTEST_EXTRA" = e ] || { echo "--env SELFTEST_EXTRA missing"; exit 1; }
	[ -z "${SELFTEST_HIDDEN+x}" ] || { echo "SELFTEST_HIDDEN leaked"; exit 1; }
	[ "$(pwd -P)" = "$1" ] || { echo "cwd is $(pwd -P), want $1"; exit 1; }
	echo from-uml >written-inside
	echo to-stdout
	echo to-stderr >&2' sh "$envdir"

failed=()
check() { # NAME DESCRIPTION COMMAND...: report COMMAND's success
	local name=$1 what=$2
	shift 2
	if "$@"; then
		echo "ok   $name: $what"
		return 0
	fi
	echo "FAIL $name: $what"
	[[ " ${failed[*]} " == *" $name "* ]] || failed+=("$name")
	return 1
}
show() { # the captured output of case $1
	local f
	for f in "$work/$1.out" "$work/$1.err"; do
		[[ -s $f ]] && sed "s|^|    ${f##*/}: |" "$f"
	done
	return 0
}

for name in "${names[@]}"; do
	wait "${pid[$name]}"
	st=$?
	check "$name" "exit status $st, expected ${want[$name]}" test "$st" = "${want[$name]}" ||
		show "$name"
	check "$name" "kernel/tls report on stderr" \
		grep -q '^uml-run: kernel .*tls_stat present' "$work/$name.err"
	leftover=$(pgrep -a -f -- "umid=kite-${pid[$name]}-") || true
	check "$name" "no UML process left" test -z "$leftover" || echo "    $leftover"
done

mapfile -d '' got <"$work/args.out"
check args "${#args[@]} arguments arrive intact" test "${args[*]@Q}" = "${got[*]@Q}" ||
	printf '    sent: %s\n    got:  %s\n' "${args[*]@Q}" "${got[*]@Q}"

check env "file written inside UML is on the host" \
	grep -qsx from-uml "$envdir/written-inside"
check env "stdout is the command's stdout only" \
	test "$(<"$work/env.out")" = to-stdout
check env "stderr reaches stderr" grep -qx to-stderr "$work/env.err"

if ((${#failed[@]})); then
	echo "selftest: FAILED: ${failed[*]}"
	exit 1
fi
echo "selftest: all passed"
exit 0
