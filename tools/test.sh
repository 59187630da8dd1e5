#!/bin/sh
# README command 2: install what is missing, build, run every test suite:
# unit, host (this kernel), kernel (the same tests inside User-Mode Linux,
# where kTLS must engage) and interop (gnutls-cli, openssl s_client).
set -eu
cd "$(dirname "$0")/.."
tools/deps.sh
tools/build.sh
meson test -C build --print-errorlogs --num-processes 2 "$@"
