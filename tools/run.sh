#!/bin/sh
# README command 1: install what is missing, build, and serve a demo
# directory over HTTPS with kite-serve on https://127.0.0.1:8443/ until
# Ctrl-C. kite-serve prints the URL, the certificate's fingerprint and
# whether the kernel encrypts (kTLS) or why not; the access log on stdout
# shows it per request. Arguments go to kite-serve (e.g. --root DIR,
# --listen 0.0.0.0:8443; see build/tools/serve/kite-serve --help).
#
# The file-transfer demo of the library alone is build/tools/kite-demo.
set -eu
cd "$(dirname "$0")/.."
tools/deps.sh
tools/build.sh >/dev/null

# The demo root: a page linking to this README and a 64 MiB file (the size
# where the kernel path shows).
www=build/www
mkdir -p "$www"
cp README.md "$www/README.md"
[ -s "$www/64MiB.bin" ] || head -c 67108864 /dev/urandom > "$www/64MiB.bin"
cat > "$www/index.html" <<'EOF'
<!doctype html>
<html><head><meta charset="utf-8"><title>kite-serve</title></head>
<body>
<h1>kite-serve</h1>
<p>This page came over TLS from kite-serve: GnuTLS did the handshake, and on a
kernel with kTLS the kernel encrypts what follows (the access log says
<code>ktls=tx+rx</code> per request).</p>
<ul>
<li><a href="README.md">README.md</a></li>
<li><a href="64MiB.bin">64MiB.bin</a> (random bytes)</li>
</ul>
</body></html>
EOF

echo "try: curl -k https://127.0.0.1:8443/   or   curl -k -o /dev/null https://127.0.0.1:8443/64MiB.bin"
exec build/tools/serve/kite-serve --root "$www" --access-log - "$@"
