#!/bin/sh
# test_man.sh SRCDIR [KITE_SERVE]: the manual pages in SRCDIR/man are
# complete and clean.
#  1. every page renders with groff's warnings on (-ww), as PostScript and
#     as terminal text, without a single warning;
#  2. a page for a function has NAME, SYNOPSIS, DESCRIPTION, RETURN VALUE,
#     THREAD SAFETY and SEE ALSO; a link page is one ".so man3/PAGE.3" line
#     naming a page that exists;
#  3. every symbol exported in lib/libkite.map has man/man3/SYMBOL.3 whose
#     page names it in NAME and SYNOPSIS, and no man3 file names a symbol
#     that is not exported;
#  4. every file under man/ is installed (listed in man/meson.build);
#  5. with KITE_SERVE: the flags of `kite-serve --help`, of kite-serve(1) and
#     of the flags table in tools/kite-serve.md are the same set.
# The page format is described in man/README.md.
# Exit 0 pass, 77 skip (no groff), 1 fail with every problem named.
set -u

src=${1:?usage: test_man.sh SRCDIR [KITE_SERVE]}
serve=${2:-}
man="$src/man"
fail=0
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

bad() {
	echo "FAIL: $*"
	fail=1
}

if ! command -v groff >/dev/null 2>&1; then
	echo "SKIP: groff not installed (Debian package groff-base, see tools/deps.sh)"
	exit 77
fi

pages=$(cd "$man" && ls man1/*.1 man3/*.3 man7/*.7 2>/dev/null)
[ -n "$pages" ] || { echo "FAIL: no pages under $man"; exit 1; }

# Link pages: one ".so man3/PAGE.3" line naming a real page. One awk pass
# prints "link FILE TARGET" and "lines FILE N".
(cd "$man" && awk '
	FNR == 1 && /^\.so / { print "link", FILENAME, $2 }
	{ lines[FILENAME] = FNR }
	END { for (f in lines) print "lines", f, lines[f] }' $pages) >"$tmp/links"
real=$(cd "$man" && awk 'FNR == 1 && !/^\.so / { print FILENAME }' $pages)
while read -r _ p target; do
	grep -qx "lines $p 1" "$tmp/links" || bad "$p: a link page holds only its .so line"
	if [ ! -f "$man/$target" ]; then
		bad "$p: links to $target, which does not exist"
	elif grep -q "^link $target " "$tmp/links"; then
		bad "$p: links to $target, which is itself a link"
	fi
done <<EOF2
$(grep '^link ' "$tmp/links")
EOF2

# 1: render every real page in one groff run per device (warnings name the
# file and line). -s resolves .so; -z formats without output, so only
# diagnostics reach stderr.
for dev in ps utf8; do
	if ! (cd "$man" && groff -ww -z -man -s -T"$dev" -I . $real) >"$tmp/out" 2>&1 ||
		[ -s "$tmp/out" ]; then
		bad "groff -ww -T$dev:"
		sed 's/^/    /' "$tmp/out"
	fi
done

# 2 + 3: sections, and what each page lists in NAME and SYNOPSIS, in one
# pass: prints "missing PAGE SECTION" and "name PAGE SYMBOL" /
# "proto PAGE SYMBOL" lines.
(cd "$man" && awk '
	FNR == 1 { sec = "" }
	/^\.SH / { sec = $0; sub(/^\.SH "?/, "", sec); sub(/"$/, "", sec); have[FILENAME, sec] = 1; next }
	sec == "NAME" && !named[FILENAME]++ {
		line = $0; sub(/ \\-.*/, "", line); gsub(/,/, " ", line)
		n = split(line, w, " "); for (i = 1; i <= n; i++) print "name", FILENAME, w[i]
	}
	sec == "SYNOPSIS" {
		line = $0
		while (match(line, /kite_[A-Za-z0-9_]*\(/)) {
			print "proto", FILENAME, substr(line, RSTART, RLENGTH - 1)
			line = substr(line, RSTART + RLENGTH)
		}
	}
	END {
		for (f in named) {
			need = f ~ /^man3\// ? "NAME SYNOPSIS DESCRIPTION RETURN_VALUE THREAD_SAFETY SEE_ALSO" \
			                     : "NAME SYNOPSIS DESCRIPTION SEE_ALSO"
			n = split(need, s, " ")
			for (i = 1; i <= n; i++) { gsub(/_/, " ", s[i]); if (!have[f, s[i]]) print "missing", f, s[i] }
		}
	}' $real) >"$tmp/facts"
grep '^missing ' "$tmp/facts" | while read -r _ p sec; do
	echo "FAIL: $p: no .SH $sec section"
done
grep -q '^missing ' "$tmp/facts" && fail=1

sed -n 's/^[[:space:]]*\(kite_[A-Za-z0-9_]*\);.*/\1/p' "$src/lib/libkite.map" | sort -u >"$tmp/syms"
[ -s "$tmp/syms" ] || bad "no kite_ symbols found in lib/libkite.map"
missing=""
while read -r sym; do
	f="man3/$sym.3"
	if [ ! -f "$man/$f" ]; then
		missing="$missing $sym"
		continue
	fi
	t=$(sed -n "s|^link $f ||p" "$tmp/links")
	[ -n "$t" ] && f=$t
	grep -qx "name $f $sym" "$tmp/facts" || bad "man3/$sym.3: page $f does not list $sym in NAME"
	grep -qx "proto $f $sym" "$tmp/facts" || bad "man3/$sym.3: page $f has no prototype of $sym in SYNOPSIS"
done <"$tmp/syms"
[ -z "$missing" ] || bad "exported in lib/libkite.map without a man page (add man/man3/NAME.3, see man/README.md):$missing"
for f in "$man"/man3/*.3; do
	sym=$(basename "$f" .3)
	grep -qx "$sym" "$tmp/syms" || bad "man3/$sym.3: $sym is not exported in lib/libkite.map"
done

# 4: installed.
for p in $pages; do
	grep -q "'$p'" "$man/meson.build" || bad "$p is not listed in man/meson.build (not installed)"
done

# 5: kite-serve's flags in its --help, its man page and its manual.
if [ -n "$serve" ]; then
	flags() { grep -o -- '--[a-z][a-z0-9-]*' | grep -vx -- '--help\|--version' | sort -u; }
	"$serve" --help | flags >"$tmp/help" || bad "$serve --help failed"
	sed 's/\\-/-/g; s/\\f[BIRP]//g' "$man/man1/kite-serve.1" |
		sed -n '/^\.SH OPTIONS/,/^\.SH SIGNALS/p' | flags >"$tmp/man1"
	sed -n '/^## Flags/,/^## /p' "$src/tools/kite-serve.md" | grep '^| `--' | flags >"$tmp/md"
	agree=1
	for w in man1 md; do
		if ! cmp -s "$tmp/help" "$tmp/$w"; then
			where=$([ $w = man1 ] && echo "man/man1/kite-serve.1 OPTIONS" ||
				echo "tools/kite-serve.md's flags table")
			bad "kite-serve flags differ between --help (<) and $where (>):"
			diff "$tmp/help" "$tmp/$w" | grep '^[<>]' | sed 's/^/    /'
			agree=0
		fi
	done
	[ $agree -eq 1 ] && echo "kite-serve: $(wc -l <"$tmp/help") flags agree in --help, kite-serve(1) and tools/kite-serve.md"
fi

echo "$(echo $pages | wc -w) pages, $(wc -l <"$tmp/syms") exported symbols checked"
[ $fail -eq 0 ] && echo "PASS" || echo "FAILED"
exit $fail
