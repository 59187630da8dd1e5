#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""kite-serve against real HTTP clients, on the host and inside UML.

Each group starts its own kite-serve processes (port 0, a fresh document
root under a temp dir) and talks to them:

  http       every status (200 206 301 304 400 403 404 405 408 413 414 416
             431 500 503 505), headers, HEAD, Range, conditional requests,
             keep-alive, Connection: close, pipelining, the traversal table,
             random bytes, ALPN, IPv6, per-address and global caps, slow
             heads and idle connections (Python ssl, byte-exact requests)
  clients    curl (TLS 1.2 and 1.3: downloads, Range, HEAD, If-None-Match),
             openssl s_client, gnutls-cli, Python http.client; every body
             compared byte for byte
  resume     two servers sharing --ticket-key-file resume each other's
             sessions (Python ssl and openssl s_client); SIGHUP rotates the
             ticket key and swaps the certificate without dropping an open
             connection
  load       wrk for a few seconds: no errors, no non-2xx
  lifecycle  SIGTERM lets a transfer finish and refuses new connections,
             --shutdown-timeout bounds it, flags and their errors, --ktls,
             /metrics, SIGHUP reopens the access log

kTLS: with KITE_REQUIRE_KTLS=1 (tests/uml/uml-run) every connection in the
access log must say ktls=tx+rx and /metrics must count kTLS bytes; without
it the log and /metrics must agree with what the kernel offers.

A missing client tool fails the test ("apt-get install curl wrk gnutls-bin
openssl") unless KITE_ALLOW_MISSING_PEERS=1, which skips those checks.
Exit status: 0 pass, 1 fail, 77 skip.
"""

import argparse
import hashlib
import http.client
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
from email.utils import formatdate, parsedate_to_datetime

IN_UML = os.environ.get("KITE_IN_UML") == "1"
REQUIRE_KTLS = os.environ.get("KITE_REQUIRE_KTLS") == "1"
ALLOW_MISSING = os.environ.get("KITE_ALLOW_MISSING_PEERS") == "1"
# UML runs generic-C crypto and slow exec: smaller bodies, longer waits.
BIG = (2 << 20) if IN_UML else (8 << 20)
WAIT = 60 if IN_UML else 20
# Round sizes of the soak, fault and hostile tests: KITE_TEST_SIZE=full
# (tools/test.sh all) runs the long rounds at full size; otherwise (the quick
# run, a test run by hand) they are shorter. Every check runs either way.
FULL_SIZE = os.environ.get("KITE_TEST_SIZE") == "full"


def sized(quick, full):
    return full if FULL_SIZE else quick

MARK = b"KITE-SECRET-OUTSIDE-THE-ROOT"


class Fail(Exception):
    pass


class Skip(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def data(n, seed):
    return random.Random(seed).randbytes(n)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def need(tool):
    if shutil.which(tool):
        return True
    if ALLOW_MISSING:
        print("  (skipped: %s not installed)" % tool)
        return False
    raise Fail("%s not installed (apt-get install %s; KITE_ALLOW_MISSING_PEERS=1 skips)" %
               (tool, {"gnutls-cli": "gnutls-bin"}.get(tool, tool)))


# ---------------------------------------------------------------- the server


class Server:
    """One kite-serve process; its banner gives the URLs."""

    def __init__(self, t, name, args=(), listen=("127.0.0.1:0",), env=None, root=None):
        self.t = t
        self.dir = os.path.join(t.tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, "access.log")
        self.out = os.path.join(self.dir, "stdout")
        self.err = os.path.join(self.dir, "stderr")
        argv = [t.kite_serve, "--root", root or t.root, "--access-log", self.log]
        for a in listen:
            argv += ["--listen", a]
        if "--threads" not in args:
            argv += ["--threads", "2"]
        argv += list(args)
        e = dict(os.environ)
        if t.engine:
            e["KITE_ENGINE"] = t.engine
        e.update(env or {})
        with open(self.out, "wb") as o, open(self.err, "wb") as er:
            self.p = subprocess.Popen(argv, stdout=o, stderr=er, stdin=subprocess.DEVNULL,
                                      env=e, start_new_session=True)
        t.servers.append(self)
        deadline = time.monotonic() + WAIT
        while True:
            text = self.stdout()
            if "ready (Ctrl-C stops)" in text:
                break
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise Fail("%s did not start (%s): %s" % (name, self.p.poll(), self.stderr()))
            time.sleep(0.02)
        self.banner = text
        self.urls = re.findall(r"url: (https://\S+)/", text)
        m = re.search(r"metrics: (http://\S+)/metrics", text)
        self.metrics_url = m.group(1) if m else None
        self.host, self.port = self.split(self.urls[0])

    @staticmethod
    def split(url):
        m = re.match(r"\w+://\[?([^\]]+?)\]?:(\d+)$", url)
        return m.group(1), int(m.group(2))

    def stdout(self):
        with open(self.out, errors="replace") as f:
            return f.read()

    def stderr(self):
        with open(self.err, errors="replace") as f:
            return f.read()

    def log_lines(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def wait_log(self, n, what="access log lines"):
        deadline = time.monotonic() + WAIT
        while len(self.log_lines()) < n:
            check(time.monotonic() < deadline, "only %d of %d %s" % (len(self.log_lines()), n, what))
            time.sleep(0.02)
        return self.log_lines()

    def alive(self):
        return self.p.poll() is None

    def send_signal(self, sig):
        self.p.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """Signal (a second SIGTERM would abort the drain: sig=None after
        one was sent) and wait for the exit status."""
        if sig and self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.p.wait(timeout or WAIT)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
            raise Fail("kite-serve did not stop within %ss: %s" % (timeout or WAIT, self.stderr()))

    def kill(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait()

    def metrics(self):
        check(self.metrics_url, "no --metrics-listen")
        h, p = self.split(self.metrics_url)
        c = http.client.HTTPConnection(h, p, timeout=WAIT)
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        check(r.status == 200, "/metrics: %d" % r.status)
        check(r.getheader("Content-Type", "").startswith("text/plain; version=0.0.4"),
              "metrics content type %s" % r.getheader("Content-Type"))
        out = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out


# ---------------------------------------------------------------- TLS clients


def tls_ctx(version=None, alpn=("http/1.1",)):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version == "1.2":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def connect(srv, ctx=None, session=None, host=None, port=None, source=None):
    raw = socket.create_connection((host or srv.host, port or srv.port), timeout=WAIT,
                                   source_address=(source, 0) if source else None)
    return (ctx or tls_ctx()).wrap_socket(raw, session=session)


def read_all(s, limit=64 << 20):
    """Until the server closes (close_notify / FIN)."""
    out = bytearray()
    while len(out) < limit:
        try:
            b = s.recv(1 << 16)
        except (ConnectionResetError, ssl.SSLEOFError):
            break
        if not b:
            break
        out += b
    return bytes(out)


def parse(buf, methods=None):
    """HTTP/1.1 responses in buf -> [(status, {header: value}, body)]."""
    out, i, n = [], 0, 0
    while i < len(buf):
        end = buf.find(b"\r\n\r\n", i)
        check(end >= 0, "truncated response head: %r" % buf[i:i + 200])
        lines = buf[i:end].decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.1 (\d{3}) ", lines[0] + " ")
        check(m, "bad status line %r" % lines[0])
        st = int(m.group(1))
        hdr = {}
        for ln in lines[1:]:
            k, v = ln.split(":", 1)
            check(k.lower() not in hdr, "duplicate header %s" % k)
            hdr[k.lower()] = v.strip()
        i = end + 4
        head_only = methods and n < len(methods) and methods[n] == "HEAD"
        blen = 0 if head_only or st == 304 else int(hdr.get("content-length", "0"))
        check(i + blen <= len(buf), "truncated body: %d of %d" % (len(buf) - i, blen))
        out.append((st, hdr, buf[i:i + blen]))
        i += blen
        n += 1
    return out


def recv_responses(s, n, methods=None):
    """Read from a kept-alive connection until n whole responses are in."""
    buf = b""
    while True:
        b = s.recv(1 << 16)
        check(b, "connection closed after %d bytes" % len(buf))
        buf += b
        try:
            r = parse(buf, methods)
        except Fail:
            continue  # a response is still arriving
        if len(r) == n:
            return r


def req(method, path, headers=(), close=True, version="1.1", host=True):
    h = "%s %s HTTP/%s\r\n" % (method, path, version)
    if host:
        h += "Host: kite.test\r\n"
    for k, v in headers:
        h += "%s: %s\r\n" % (k, v)
    if close:
        h += "Connection: close\r\n"
    return (h + "\r\n").encode("latin-1")


def ask(srv, raw, methods=None, ctx=None, **kw):
    """One connection: send raw, read until the server closes, parse."""
    s = connect(srv, ctx, **kw)
    try:
        s.sendall(raw)
        got = read_all(s)
    finally:
        s.close()
    return parse(got, methods)


def get(srv, path, headers=(), method="GET"):
    r = ask(srv, req(method, path, headers), [method])
    check(len(r) == 1, "%s %s: %d responses" % (method, path, len(r)))
    return r[0]


def expect(srv, path, status, headers=(), method="GET"):
    st, hdr, body = get(srv, path, headers, method)
    check(st == status, "%s %s %s: %d, want %d" % (method, path, list(headers), st, status))
    check(MARK not in body, "%s leaked the file outside the root" % path)
    return hdr, body


def check_ktls(srv, lines=None):
    """Every connection in the log: kTLS both ways if required, else as the
    kernel offers (this one: none)."""
    lines = lines if lines is not None else srv.log_lines()
    check(lines, "empty access log")
    for ln in lines:
        m = re.search(r" (TLS1\.[23]) (\S+) ktls=(\S+) resumed=([01])$", ln)
        check(m, "no TLS fields in log line: %s" % ln)
        if REQUIRE_KTLS:
            check(m.group(3) == "tx+rx", "kTLS required but: %s" % ln)


def tool_env():
    e = dict(os.environ)
    e.pop("SSLKEYLOGFILE", None)
    return e


# ---------------------------------------------------------------- the document root


def make_root(t):
    base = t.tmp
    root = os.path.join(base, "root")
    os.makedirs(os.path.join(root, "dir"))
    os.makedirs(os.path.join(root, "noindex"))
    os.makedirs(os.path.join(root, "sub", "deeper"))
    with open(os.path.join(base, "secret.txt"), "wb") as f:
        f.write(MARK + b"\n")
    t.files = {}

    def put(rel, content):
        with open(os.path.join(root, rel), "wb") as f:
            f.write(content)
        t.files[rel] = content

    put("small.txt", b"hello from kite\n")
    put("empty.txt", b"")
    put("index.html", b"<html><body>kite root</body></html>\n")
    put("dir/index.html", b"<html>dir index</html>\n")
    put("style.css", b"body{}\n")
    put("sub/deeper/file.json", b'{"a": 1}\n')
    put("space name.txt", b"spaces\n")
    for n in (1, 5000, 16383, 16384, 16385, 100000, (1 << 20) + 123, BIG):
        put("f%d.bin" % n, data(n, n))
    # Ways out of the root, all of which must fail.
    os.symlink("../secret.txt", os.path.join(root, "escape_rel"))
    os.symlink(os.path.join(base, "secret.txt"), os.path.join(root, "escape_abs"))
    os.symlink("..", os.path.join(root, "dirlink"))
    os.symlink("/etc", os.path.join(root, "etclink"))
    # A symlink that stays inside is fine.
    os.symlink("small.txt", os.path.join(root, "inside_link"))
    # 64 MiB of holes: more than any socket buffers hold, costs no disk.
    with open(os.path.join(root, "sparse.bin"), "wb") as f:
        f.truncate(64 << 20)
    os.mkfifo(os.path.join(root, "fifo"))
    # open(2) of a socket file fails with ENXIO: no client's fault (500).
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.path.join(root, "sock"))
    s.close()
    t.root = root


# ---------------------------------------------------------------- group: http


def http_statuses(t, srv):
    hdr, body = expect(srv, "/small.txt", 200)
    check(body == t.files["small.txt"], "small.txt body")
    check(hdr["content-type"] == "text/plain; charset=utf-8", "type %s" % hdr["content-type"])
    check(hdr["content-length"] == str(len(body)), "content-length")
    check(re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"', hdr["etag"]), "strong etag %s" % hdr["etag"])
    mtime = os.stat(os.path.join(t.root, "small.txt")).st_mtime
    check(hdr["last-modified"] == formatdate(int(mtime), usegmt=True), "last-modified")
    check(abs(parsedate_to_datetime(hdr["date"]).timestamp() - time.time()) < 120, "date")
    check(hdr["accept-ranges"] == "bytes", "accept-ranges")
    check(hdr["connection"] == "close", "connection: close echoed")
    for path, typ in (("/style.css", "text/css"), ("/f1.bin", "application/octet-stream"),
                      ("/sub/deeper/file.json", "application/json"), ("/", "text/html")):
        hdr, _ = expect(srv, path, 200)
        check(hdr["content-type"].startswith(typ), "%s: %s" % (path, hdr["content-type"]))
    expect(srv, "/space%20name.txt", 200)
    hdr, body = expect(srv, "/inside_link", 200)
    check(body == t.files["small.txt"], "symlink inside the root")
    hdr, body = expect(srv, "/empty.txt", 200)
    check(body == b"" and hdr["content-length"] == "0", "empty file")

    # HEAD: the GET headers, no body.
    hdr, body = expect(srv, "/f100000.bin", 200, method="HEAD")
    check(hdr["content-length"] == "100000" and body == b"", "HEAD")

    # Range (single), 206 / 416.
    f = t.files["f100000.bin"]
    for rng, lo, hi in (("bytes=10-19", 10, 19), ("bytes=-5", 99995, 99999),
                        ("bytes=99990-", 99990, 99999), ("bytes=0-0", 0, 0),
                        ("bytes=500-999999", 500, 99999)):
        hdr, body = expect(srv, "/f100000.bin", 206, [("Range", rng)])
        check(body == f[lo:hi + 1], "range %s body" % rng)
        check(hdr["content-range"] == "bytes %d-%d/100000" % (lo, hi), "content-range %s" % rng)
    hdr, _ = expect(srv, "/f100000.bin", 416, [("Range", "bytes=100000-")])
    check(hdr["content-range"] == "bytes */100000", "416 content-range")
    expect(srv, "/f100000.bin", 200, [("Range", "bytes=1-2,5-6")])  # multiple: whole file
    expect(srv, "/f100000.bin", 200, [("Range", "lines=1-2")])

    # Conditional requests (strong ETag, dates), 304.
    hdr, _ = expect(srv, "/f5000.bin", 200)
    etag, lm = hdr["etag"], hdr["last-modified"]
    h304, body = expect(srv, "/f5000.bin", 304, [("If-None-Match", etag)])
    check(body == b"" and h304["etag"] == etag, "304 etag")
    expect(srv, "/f5000.bin", 304, [("If-None-Match", '"x", ' + etag)])
    expect(srv, "/f5000.bin", 304, [("If-None-Match", "*")])
    expect(srv, "/f5000.bin", 200, [("If-None-Match", '"other"')])
    expect(srv, "/f5000.bin", 304, [("If-Modified-Since", lm)])
    expect(srv, "/f5000.bin", 200, [("If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")])
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
    expect(srv, "/f5000.bin", 200, [("If-None-Match", '"other"'), ("If-Modified-Since", lm)])
    expect(srv, "/f5000.bin", 206, [("Range", "bytes=0-9"), ("If-Range", etag)])
    expect(srv, "/f5000.bin", 200, [("Range", "bytes=0-9"), ("If-Range", '"stale"')])

    # Directories.
    hdr, _ = expect(srv, "/dir", 301)
    check(hdr["location"] == "/dir/", "location %s" % hdr["location"])
    _, body = expect(srv, "/dir/", 200)
    check(body == t.files["dir/index.html"], "dir index")
    expect(srv, "/noindex/", 403)  # no listings
    expect(srv, "/fifo", 403)
    expect(srv, "/nope.txt", 404)
    expect(srv, "/sub/nope/", 404)
    expect(srv, "/sock", 500)

    # Methods and malformed requests.
    hdr, _ = expect(srv, "/small.txt", 405, method="POST")
    check(hdr["allow"] == "GET, HEAD", "allow")
    expect(srv, "/small.txt", 405, method="DELETE")
    expect(srv, "/small.txt", 405, method="OPTIONS")
    for raw, status in (
            (b"GET\r\n\r\n", 400),
            (b"GET /small.txt HTTP/1.1\r\n\r\n", 400),                      # no Host
            (req("GET", "/%zz"), 400),
            (req("GET", "/a b"), 400),
            (b"GET /small.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET /small.txt HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
            (b"GET /small.txt HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            (req("GET", "/small.txt", version="2.0"), 505),
            (req("POST", "/small.txt", [("Content-Length", "5")])[:-2] + b"\r\nhello", 413),
            (req("GET", "/small.txt", [("Transfer-Encoding", "chunked")]) + b"0\r\n\r\n", 413),
            (req("GET", "/" + "a" * 9000), 414),
            (req("GET", "/small.txt", [("X-Big", "b" * 20000)]), 431),
            (req("GET", "/small.txt", [("X-%d" % i, "v") for i in range(120)]), 431)):
        r = ask(srv, raw)
        check(len(r) == 1 and r[0][0] == status, "%r...: %s, want %d" %
              (raw[:40], [x[0] for x in r], status))
        check(r[0][1]["connection"] == "close", "error %d keeps the connection" % status)

    # HTTP/1.0: closes unless keep-alive.
    r = ask(srv, b"GET /small.txt HTTP/1.0\r\n\r\n")
    check(r[0][0] == 200 and r[0][1]["connection"] == "close", "HTTP/1.0")


def http_traversal(t, srv):
    """Nothing outside --root, whatever the spelling."""
    table = [
        ("/../secret.txt", (400,)),
        ("/..", (400,)),
        ("/%2e%2e/secret.txt", (400,)),
        ("/%2E%2E/secret.txt", (400,)),
        ("/.%2e/secret.txt", (400,)),
        ("/%2e./secret.txt", (400,)),
        ("/..%2fsecret.txt", (400,)),
        ("/%2e%2e%2fsecret.txt", (400,)),
        ("/..%5csecret.txt", (400,)),
        ("/..\\secret.txt", (400,)),
        ("/sub/../../secret.txt", (400,)),
        ("/sub/deeper/../../../secret.txt", (400,)),
        ("//../secret.txt", (400,)),
        ("/./../secret.txt", (400,)),
        ("/%252e%252e/secret.txt", (404,)),      # double encoding is a literal name
        ("/..;/secret.txt", (404,)),
        ("/small.txt%00.html", (400,)),
        ("/%00", (400,)),
        ("/%c0%ae%c0%ae/secret.txt", (404,)),    # overlong UTF-8 is just bytes
        ("/escape_rel", (403,)),                 # symlinks leaving the root
        ("/escape_abs", (403,)),
        ("/dirlink/secret.txt", (403,)),
        ("/etclink/passwd", (403,)),
        ("/etc/passwd", (404,)),                 # absolute paths stay below the root
        (t.tmp + "/secret.txt", (404,)),
        ("http://kite.test/../secret.txt", (400,)),  # absolute-form: same checks
        ("https://other.example:1/sub/../../secret.txt", (400,)),
        ("http://kite.test/escape_rel", (403,)),
        ("http://kite.test/small.txt", (200,)),
        ("http:///secret.txt", (400,)),
        ("secret.txt", (400,)),
        ("*", (400,)),
    ]
    for target, ok in table:
        r = ask(srv, req("GET", target))
        check(len(r) == 1, "%s: %d responses" % (target, len(r)))
        check(r[0][0] in ok, "traversal %s: %d, want %s" % (target, r[0][0], ok))
        check(MARK not in r[0][2], "traversal %s leaked the secret" % target)
    # And the same through curl, which sends what it is told with --path-as-is.
    if need("curl"):
        for target, _ in table[:14]:
            p = subprocess.run(["curl", "-sk", "--path-as-is", "-o", "-", "-w", "\n%{http_code}",
                                "https://127.0.0.1:%d%s" % (srv.port, target)],
                               capture_output=True, timeout=WAIT)
            check(MARK not in p.stdout, "curl %s leaked" % target)
            check(p.stdout.endswith(b"400"), "curl %s: %r" % (target, p.stdout[-3:]))


def http_connections(t, srv):
    files = t.files
    # Keep-alive: three requests, one connection, answered one by one.
    s = connect(srv)
    for name in ("small.txt", "f5000.bin", "f1.bin"):
        s.sendall(req("GET", "/" + name, close=False))
        r = recv_responses(s, 1)
        check(r[0][0] == 200 and r[0][2] == files[name], "keep-alive %s" % name)
        check(r[0][1]["connection"] == "keep-alive", "keep-alive header")
    s.close()

    # Pipelining: 40 requests in one write (more than --pipeline), HEAD
    # mixed in, the last one closes; answers in order, bodies exact.
    names = ["small.txt", "f16385.bin", "f1.bin", "f5000.bin", "missing.bin"] * 8
    methods = ["HEAD" if i % 7 == 3 else "GET" for i in range(len(names))]
    raw = b"".join(req(m, "/" + n, close=(i == len(names) - 1))
                   for i, (m, n) in enumerate(zip(methods, names)))
    r = ask(srv, raw, methods)
    check(len(r) == len(names), "pipelined: %d answers for %d requests" % (len(r), len(names)))
    for (st, hdr, body), n, m in zip(r, names, methods):
        want = files.get(n)
        if want is None:
            check(st == 404, "pipelined %s: %d" % (n, st))
        else:
            check(st == 200 and body == (b"" if m == "HEAD" else want), "pipelined %s %s" % (m, n))

    # Requests split in odd places across TLS records.
    s = connect(srv)
    raw = req("GET", "/small.txt")
    for i in range(0, len(raw), 7):
        s.sendall(raw[i:i + 7])
        time.sleep(0.001)
    r = parse(read_all(s))
    s.close()
    check(r[0][0] == 200 and r[0][2] == files["small.txt"], "split request")

    # Two requests in one write on a kept-alive connection, read as they come.
    s = connect(srv)
    s.sendall(req("GET", "/f5000.bin", close=False) + req("GET", "/small.txt", close=False))
    r = recv_responses(s, 2)
    s.close()
    check([x[0] for x in r] == [200, 200] and r[1][2] == files["small.txt"], "two answers")


def http_garbage(t, srv):
    """Random bytes never crash the server; it answers or closes."""
    rnd = random.Random(7)
    prefixes = [b"", b"GET ", b"GET /", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n",
                b"HEAD /small.txt HTTP/1.1\r\nRange: bytes=", b"\r\n\r\n"]
    for i in range(25 if IN_UML else 120):
        body = bytes(rnd.getrandbits(8) for _ in range(rnd.choice((1, 10, 100, 1000, 9000))))
        if rnd.random() < 0.3:
            body = body.replace(b"\x00", b"\r\n")
        raw = rnd.choice(prefixes) + body + b"\r\n\r\n"
        s = connect(srv)
        s.settimeout(5)
        try:
            s.sendall(raw)
            s.recv(4096)
        except (OSError, ssl.SSLError):
            pass
        s.close()
    check(srv.alive(), "kite-serve died on random bytes: %s" % srv.stderr())
    expect(srv, "/small.txt", 200)


def http_alpn(t, srv):
    s = connect(srv)
    check(s.selected_alpn_protocol() == "http/1.1", "ALPN %s" % s.selected_alpn_protocol())
    s.close()
    s = connect(srv, tls_ctx(alpn=None))  # no ALPN at all: fine
    s.close()
    # An h2-only client gets h2 (tests/serve/h2_test.py speaks it).
    s = connect(srv, tls_ctx(alpn=("h2",)))
    check(s.selected_alpn_protocol() == "h2", "ALPN h2: %s" % s.selected_alpn_protocol())
    s.close()


def http_limits(t):
    # Global cap: two connections, the third gets 503 and is closed.
    srv = Server(t, "cap", ["--max-conns", "2", "--metrics-listen", "127.0.0.1:0"])
    held = []
    for _ in range(2):
        s = connect(srv)
        s.sendall(req("GET", "/small.txt", close=False))
        recv_responses(s, 1)
        held.append(s)
    r = parse(read_all(connect(srv)))
    check(len(r) == 1 and r[0][0] == 503 and r[0][1]["connection"] == "close",
          "over --max-conns: %s" % [x[0] for x in r])
    held.pop().close()
    deadline = time.monotonic() + WAIT
    while True:  # the server notices the close, then admits again
        r = ask(srv, req("GET", "/small.txt"))
        if r[0][0] == 200:
            break
        check(time.monotonic() < deadline, "cap never freed")
        time.sleep(0.05)
    m = srv.metrics()
    check(m['kite_connections_rejected_total{reason="global_cap"}'] >= 1, "global_cap metric")
    for s in held:
        s.close()

    # Per address: 127.0.0.1 may hold one, 127.0.0.2 is another client.
    srv = Server(t, "perip", ["--max-conns-per-ip", "1", "--metrics-listen", "127.0.0.1:0"],
                 listen=("0.0.0.0:0",))
    a = connect(srv, host="127.0.0.1")
    a.sendall(req("GET", "/small.txt", close=False))
    recv_responses(a, 1)
    r = parse(read_all(connect(srv, host="127.0.0.1")))
    check(r[0][0] == 503, "second connection from one address: %d" % r[0][0])
    r = ask(srv, req("GET", "/small.txt"), host="127.0.0.1", source="127.0.0.2")
    check(r[0][0] == 200, "another address is not limited: %d" % r[0][0])
    check(srv.metrics()['kite_connections_rejected_total{reason="per_ip_cap"}'] >= 1, "per_ip metric")
    a.close()


def http_timeouts(t):
    srv = Server(t, "timeouts", ["--header-timeout", "1", "--idle-timeout", "1.5",
                                 "--handshake-timeout", "1"])
    # A head that trickles in: 408 after --header-timeout, then closed.
    s = connect(srv)
    t0 = time.monotonic()
    s.sendall(b"GET /small.txt HTTP/1.1\r\nHo")
    time.sleep(0.5)
    s.sendall(b"st: x\r\n")
    r = parse(read_all(s))
    took = time.monotonic() - t0
    check(len(r) == 1 and r[0][0] == 408, "slow head: %s" % [x[0] for x in r])
    check(0.8 < took < 5, "408 after %.1fs" % took)
    # Idle keep-alive: closed after --idle-timeout without an answer.
    s = connect(srv)
    s.sendall(req("GET", "/small.txt", close=False))
    t0 = time.monotonic()
    got = read_all(s)
    took = time.monotonic() - t0
    check(parse(got)[0][0] == 200, "idle: first answer")
    check(1.0 < took < 6, "idle connection closed after %.1fs" % took)
    # A handshake that stalls: closed after --handshake-timeout.
    raw = socket.create_connection((srv.host, srv.port), timeout=WAIT)
    raw.sendall(b"\x16\x03\x01")
    t0 = time.monotonic()
    try:
        check(raw.recv(100) == b"", "stalled handshake got bytes")
    except ConnectionResetError:
        pass
    took = time.monotonic() - t0
    check(0.5 < took < 6, "stalled handshake closed after %.1fs" % took)
    raw.close()


def http_ipv6(t):
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        print("  (IPv6: no ::1 here, skipped)")
        return
    srv = Server(t, "v6", listen=("[::1]:0", "127.0.0.1:0"))
    check(len(srv.urls) == 2 and srv.urls[0].startswith("https://[::1]:"), "urls %s" % srv.urls)
    h6, p6 = Server.split(srv.urls[0])
    h4, p4 = Server.split(srv.urls[1])
    for h, p in ((h6, p6), (h4, p4)):
        r = ask(srv, req("GET", "/small.txt"), host=h, port=p)
        check(r[0][0] == 200 and r[0][2] == t.files["small.txt"], "GET over %s" % h)
    check(srv.log_lines()[0].startswith("::1 "), "IPv6 peer in the log: %s" % srv.log_lines()[0])


def group_http(t):
    srv = Server(t, "http", ["--metrics-listen", "127.0.0.1:0"])
    for step in (http_statuses, http_traversal, http_connections, http_garbage, http_alpn):
        t.step(step.__name__, step, t, srv)
    t.step("http_limits", http_limits, t)
    t.step("http_timeouts", http_timeouts, t)
    t.step("http_ipv6", http_ipv6, t)
    m = srv.metrics()
    for code in (200, 206, 301, 304, 400, 403, 404, 405, 413, 414, 416, 431, 500, 505):
        check(m.get('kite_requests_total{code="%d"}' % code, 0) >= 1, "metrics: no %d" % code)
    check_ktls(srv)
    check(srv.stop() == 0, "exit status")


# ---------------------------------------------------------------- group: clients


def curl(args, **kw):
    return subprocess.run(["curl", "-sS", "-k", "--http1.1"] + args, capture_output=True,
                          timeout=WAIT * 2, env=tool_env(), **kw)


CLIENT_SIZES = ["empty.txt", "f1.bin", "f5000.bin", "f16384.bin", "f16385.bin",
                "f%d.bin" % ((1 << 20) + 123), "f%d.bin" % BIG]


def clients_curl(t, srv):
    if not need("curl"):
        return
    u = "https://127.0.0.1:%d" % srv.port
    out = os.path.join(t.tmp, "dl")
    os.makedirs(out, exist_ok=True)
    big = t.files["f%d.bin" % BIG]
    for v in ("1.2", "1.3"):
        ver = ["--tlsv" + v, "--tls-max", v]
        # All sizes over one connection (curl keeps it alive).
        args = ver + ["-w", "%{http_code} %{http_version} %{size_download}\\n"]
        for name in CLIENT_SIZES:
            args += ["-o", os.path.join(out, name), u + "/" + name]
        p = curl(args)
        check(p.returncode == 0, "curl TLS%s: %s" % (v, p.stderr.decode()))
        for name, line in zip(CLIENT_SIZES, p.stdout.decode().split("\n")):
            with open(os.path.join(out, name), "rb") as f:
                check(f.read() == t.files[name], "curl TLS%s %s differs" % (v, name))
            check(line.startswith("200 1.1 "), "curl %s: %s" % (name, line))
        p = curl(ver + ["-r", "1000-70000", u + "/f%d.bin" % BIG])
        check(p.stdout == big[1000:70001], "curl TLS%s range" % v)
        p = curl(ver + ["-r", "-100", u + "/f%d.bin" % BIG])
        check(p.stdout == big[-100:], "curl TLS%s suffix range" % v)
        p = curl(ver + ["-I", u + "/f100000.bin"])
        check(b"HTTP/1.1 200 OK" in p.stdout and b"Content-Length: 100000" in p.stdout,
              "curl -I: %r" % p.stdout)
        et = re.search(rb"ETag: (\S+)", p.stdout).group(1).decode()
        p = curl(ver + ["-o", "/dev/null", "-w", "%{http_code}", "-H", "If-None-Match: " + et,
                        u + "/f100000.bin"])
        check(p.stdout == b"304", "curl If-None-Match: %r" % p.stdout)
        p = curl(ver + ["-o", "/dev/null", "-w", "%{http_code}", "-z",
                        "Sun, 06 Nov 1994 08:49:37 GMT", u + "/f100000.bin"])
        check(p.stdout == b"200", "curl -z old date: %r" % p.stdout)


def clients_openssl(t, srv):
    if not need("openssl"):
        return
    for v in ("1.2", "1.3"):
        for name in ("small.txt", "f%d.bin" % ((1 << 20) + 123)):
            p = subprocess.run(["openssl", "s_client", "-quiet", "-connect",
                                "127.0.0.1:%d" % srv.port, "-tls1_" + v[2], "-alpn", "http/1.1"],
                               input=req("GET", "/" + name), capture_output=True,
                               timeout=WAIT * 2, env=tool_env())
            r = parse(p.stdout)
            check(len(r) == 1 and r[0][0] == 200 and r[0][2] == t.files[name],
                  "s_client TLS%s %s: %s" % (v, name, p.stderr.decode()[-300:]))


def clients_gnutls(t, srv):
    if not need("gnutls-cli"):
        return
    for v in ("1.2", "1.3"):
        # gnutls-cli copies what it reads to stdout at about 1 MB/s on the
        # host (50 times less in UML): a body of 16 kB and a bit.
        name = "f16385.bin"
        # Two requests, then stdin ends: gnutls-cli sends close_notify and
        # reads on; both answers must still come.
        p = subprocess.run(["gnutls-cli", "--insecure", "--logfile", os.path.join(t.tmp, "gcli.log"),
                            "--alpn", "http/1.1", "--priority",
                            "NORMAL:-VERS-ALL:+VERS-TLS" + v, "-p", str(srv.port), "127.0.0.1"],
                           input=req("GET", "/" + name, close=False) +
                           req("GET", "/small.txt", close=False),
                           capture_output=True, timeout=WAIT * 2, env=tool_env())
        r = parse(p.stdout)
        check(len(r) == 2 and r[0][2] == t.files[name] and r[1][2] == t.files["small.txt"],
              "gnutls-cli TLS%s: %d answers; %s" % (v, len(r), p.stderr.decode()[-300:]))


def clients_python(t, srv):
    # Python's http.client over ssl: keep-alive, several files.
    for v in ("1.2", "1.3"):
        c = http.client.HTTPSConnection(srv.host, srv.port, context=tls_ctx(v), timeout=WAIT)
        for name in CLIENT_SIZES:
            c.request("GET", "/" + name)
            r = c.getresponse()
            check(r.status == 200 and r.read() == t.files[name], "http.client TLS%s %s" % (v, name))
        c.request("HEAD", "/f5000.bin")
        r = c.getresponse()
        check(r.status == 200 and r.getheader("Content-Length") == "5000", "http.client HEAD")
        r.read()
        c.request("GET", "/f5000.bin", headers={"Range": "bytes=4990-"})
        r = c.getresponse()
        check(r.status == 206 and r.read() == t.files["f5000.bin"][4990:], "http.client Range")
        c.close()


def group_clients(t):
    srv = Server(t, "clients")
    for step in (clients_curl, clients_openssl, clients_gnutls, clients_python):
        t.step(step.__name__, step, t, srv)
    lines = srv.wait_log(1)
    check_ktls(srv, lines)
    versions = {re.search(r" (TLS1\.[23]) ", ln).group(1) for ln in lines}
    check(versions == {"TLS1.2", "TLS1.3"}, "versions in the log: %s" % versions)
    check(srv.stop() == 0, "exit status")


# ---------------------------------------------------------------- group: resume


def make_cert(d, name):
    key, cert = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


def fetch_session(srv, ctx, session=None):
    s = connect(srv, ctx, session=session)
    s.sendall(req("GET", "/small.txt"))
    r = parse(read_all(s))
    check(r[0][0] == 200, "resume fetch")
    reused, sess = s.session_reused, s.session
    s.close()
    return reused, sess


def wait_reloaded(srv, n):
    deadline = time.monotonic() + WAIT
    while srv.stderr().count("kite-serve: reloaded") < n:
        check(time.monotonic() < deadline, "no reload: %s" % srv.stderr())
        time.sleep(0.02)


def group_resume(t):
    d = os.path.join(t.tmp, "resume")
    os.makedirs(d)
    keyfile = os.path.join(d, "ticket.key")
    with open(keyfile, "wb") as f:
        f.write(os.urandom(64))
    os.chmod(keyfile, 0o600)
    a = Server(t, "resume-a", ["--ticket-key-file", keyfile, "--metrics-listen", "127.0.0.1:0"])
    b = Server(t, "resume-b", ["--ticket-key-file", keyfile, "--metrics-listen", "127.0.0.1:0"])
    for v in ("1.3", "1.2"):
        ctx = tls_ctx(v)
        reused, sess = fetch_session(a, ctx)
        check(not reused and sess is not None, "first handshake TLS%s" % v)
        reused, _ = fetch_session(b, ctx, sess)
        check(reused, "TLS%s: server B did not resume A's session (shared ticket key)" % v)
        reused, _ = fetch_session(a, ctx, sess)
        check(reused, "TLS%s: A did not resume its own session" % v)
    check(a.metrics()["kite_resumptions_total"] >= 1 and b.metrics()["kite_resumptions_total"] >= 1,
          "resumptions metric")
    check(any(ln.endswith("resumed=1") for ln in b.wait_log(2)), "B's log shows resumed=1")
    # Without the shared file, a third server cannot resume A's tickets.
    c = Server(t, "resume-c")
    ctx = tls_ctx("1.3")
    _, sess = fetch_session(a, ctx)
    reused, _ = fetch_session(c, ctx, sess)
    check(not reused, "a server with another ticket key resumed")

    if need("openssl"):
        sf = os.path.join(d, "s_client.sess")
        for srv, arg, want in ((a, "-sess_out", None), (b, "-sess_in", "Reused")):
            p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port,
                                "-tls1_3", "-alpn", "http/1.1", "-ign_eof", arg, sf],
                               input=req("GET", "/small.txt"), capture_output=True,
                               timeout=WAIT, env=tool_env())
            check(b"hello from kite" in p.stdout, "s_client resume fetch: %r" % p.stderr[-200:])
            if want:
                check(b"Reused, TLSv1.3" in p.stdout, "s_client did not resume at B")

    # SIGHUP: rotate the ticket key; an open connection lives on.
    ctx = tls_ctx("1.3")
    _, old = fetch_session(b, ctx)
    held = connect(b, ctx)
    held.sendall(req("GET", "/small.txt", close=False))
    check(recv_responses(held, 1)[0][0] == 200, "held connection")
    with open(keyfile + ".new", "wb") as f:
        f.write(os.urandom(64))
    os.chmod(keyfile + ".new", 0o600)
    os.rename(keyfile + ".new", keyfile)
    b.send_signal(signal.SIGHUP)
    wait_reloaded(b, 1)
    held.sendall(req("GET", "/f5000.bin"))
    r = parse(read_all(held))
    check(r[0][0] == 200 and r[0][2] == t.files["f5000.bin"], "connection across SIGHUP")
    held.close()
    reused, _ = fetch_session(b, ctx, old)
    check(not reused, "B resumed a ticket of the rotated-out key")
    reused, _ = fetch_session(a, ctx, old)
    check(reused, "A (not reloaded) lost its key")
    _, new = fetch_session(b, ctx)
    reused, _ = fetch_session(b, ctx, new)
    check(reused, "B does not resume with its new key")

    # SIGHUP with --cert: new connections get the new certificate.
    if need("openssl"):
        c1, k1 = make_cert(d, "one")
        c2, k2 = make_cert(d, "two")
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        shutil.copy(c1, cert)
        shutil.copy(k1, key)
        os.chmod(key, 0o600)
        s = Server(t, "reload-cert", ["--cert", cert, "--key", key])

        def peer_fp():
            x = connect(s)
            fp = sha(x.getpeercert(binary_form=True))
            x.close()
            return fp

        def pem_fp(path):
            with open(path) as f:
                return sha(ssl.PEM_cert_to_DER_cert(f.read()))

        check(peer_fp() == pem_fp(c1), "first certificate")
        fp_banner = re.search(r"fingerprint (\S+)", s.banner).group(1).replace(":", "").lower()
        check(fp_banner == pem_fp(c1), "banner fingerprint %s" % fp_banner)
        held = connect(s)
        held.sendall(req("GET", "/small.txt", close=False))
        recv_responses(held, 1)
        shutil.copy(c2, cert)
        shutil.copy(k2, key)
        s.send_signal(signal.SIGHUP)
        wait_reloaded(s, 1)
        check(peer_fp() == pem_fp(c2), "certificate not swapped by SIGHUP")
        held.sendall(req("GET", "/small.txt"))
        check(parse(read_all(held))[0][0] == 200, "old connection after the swap")
        held.close()
        # A broken reload keeps the old context.
        with open(key, "w") as f:
            f.write("garbage")
        s.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + WAIT
        while "reload failed" not in s.stderr():
            check(time.monotonic() < deadline, "no reload failure message")
            time.sleep(0.02)
        check(peer_fp() == pem_fp(c2), "a failed reload changed the certificate")
        s.stop()
    for srv in (a, b, c):
        check_ktls(srv)
        check(srv.stop() == 0, "exit status")


# ---------------------------------------------------------------- group: load


def group_load(t):
    if not need("wrk"):
        return
    srv = Server(t, "load", ["--metrics-listen", "127.0.0.1:0"])
    conns, secs = ("4", "2") if IN_UML else ("32", "3")
    for path in ("/f100000.bin", "/small.txt"):
        p = subprocess.run(["wrk", "-t", "2", "-c", conns, "-d", secs + "s", "--latency",
                            "https://127.0.0.1:%d%s" % (srv.port, path)],
                           capture_output=True, text=True, timeout=120)
        print("  wrk %s: %s" % (path, " ".join(re.findall(r"Requests/sec:\s+\S+|Transfer/sec:\s+\S+",
                                                         p.stdout))))
        check(p.returncode == 0, "wrk: %s %s" % (p.stdout, p.stderr))
        check("Non-2xx" not in p.stdout and "Socket errors" not in p.stdout,
              "wrk saw errors:\n%s" % p.stdout)
        n = int(re.search(r"(\d+) requests in", p.stdout).group(1))
        check(n > 10, "wrk: only %d requests" % n)
    m = srv.metrics()
    path_bytes = {k: v for k, v in m.items() if k.startswith("kite_bytes_total")}
    if REQUIRE_KTLS:
        check(m['kite_bytes_total{path="ktls-splice"}'] + m['kite_bytes_total{path="ktls-sendfile"}'] +
              m['kite_bytes_total{path="ktls-copy"}'] > 0, "no kTLS bytes: %s" % path_bytes)
    check(srv.alive(), "kite-serve died under load")
    check_ktls(srv)
    check(srv.stop() == 0, "exit status")


# ---------------------------------------------------------------- group: lifecycle


def lifecycle_drain(t):
    srv = Server(t, "drain", ["--shutdown-timeout", "30"])
    name = "f%d.bin" % BIG
    idle = connect(srv)
    idle.sendall(req("GET", "/small.txt", close=False))
    recv_responses(idle, 1)
    # A small receive buffer keeps most of the body queued in the server
    # when the signal comes.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    raw.settimeout(WAIT)
    raw.connect((srv.host, srv.port))
    s = tls_ctx().wrap_socket(raw)
    s.sendall(req("GET", "/" + name))
    got = s.recv(1 << 16)
    srv.send_signal(signal.SIGTERM)
    # Stops accepting at once...
    deadline = time.monotonic() + WAIT
    while True:
        try:
            x = socket.create_connection((srv.host, srv.port), timeout=2)
            x.close()
        except OSError:
            break
        check(time.monotonic() < deadline, "still accepting after SIGTERM")
        time.sleep(0.05)
    # ...ends idle keep-alive connections...
    idle.settimeout(WAIT)
    check(read_all(idle) == b"", "idle connection not ended")
    idle.close()
    # ...and lets the transfer finish.
    got += read_all(s)
    s.close()  # as clients do after Connection: close; the server waits for it
    r = parse(got)
    check(r[0][0] == 200 and r[0][2] == t.files[name], "transfer cut by SIGTERM")
    check(srv.stop(sig=None) == 0, "exit status after drain")
    check("again" not in srv.stderr(), "drain aborted")
    check("no new connections" in srv.stderr(), "shutdown message")
    # The listeners are shut down, not failing: no accept retries (the
    # epoll rung once spun on the shut-down listener's EPOLLHUP).
    check("cannot accept" not in srv.stderr(), "accept errors while draining: %s" % srv.stderr())


def lifecycle_bounded(t):
    srv = Server(t, "bounded", ["--shutdown-timeout", "1", "--send-timeout", "60"])
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    raw.settimeout(WAIT)
    raw.connect((srv.host, srv.port))
    s = tls_ctx().wrap_socket(raw)
    s.sendall(req("GET", "/sparse.bin"))
    s.recv(1000)  # then stop reading: 64 MiB cannot leave
    t0 = time.monotonic()
    code = srv.stop(timeout=15)
    took = time.monotonic() - t0
    check(code == 0 and 0.9 < took < (12 if IN_UML else 8),
          "bounded shutdown: %s after %.1fs" % (code, took))
    check("shutdown timeout: aborting 1 connection" in srv.stderr(), "no abort message")
    s.close()


def lifecycle_linger(t):
    """After close_notify and FIN the server waits at most 2 s for the
    client's end (engine ENG_LINGER_MS), then closes: a client that never
    closes holds neither the connection nor a SIGTERM drain."""
    srv = Server(t, "linger", ["--shutdown-timeout", "30", "--idle-timeout", "60"])
    s = connect(srv)
    s.sendall(req("GET", "/small.txt"))
    r = parse(read_all(s))  # until close_notify; the socket stays open
    check(r and r[0][0] == 200, "GET before linger")
    t0 = time.monotonic()
    code = srv.stop(timeout=25)
    took = time.monotonic() - t0
    check(code == 0 and took < (8 if IN_UML else 5),
          "SIGTERM with a lingering client: exit %s after %.1fs (linger is 2 s)" % (code, took))
    check("aborting" not in srv.stderr(), "the drain had to abort: %s" % srv.stderr())
    s.close()


def lifecycle_flags(t):
    p = subprocess.run([t.kite_serve, "--help"], capture_output=True, text=True)
    check(p.returncode == 0, "--help")
    for flag in ("--root", "--listen", "--cert", "--key", "--threads", "--priority", "--ktls",
                 "--access-log", "--ticket-key-file", "--metrics-listen", "--header-timeout",
                 "--idle-timeout", "--max-conns", "--max-conns-per-ip", "--shutdown-timeout",
                 "--allow-insecure-key-perms"):
        check(flag in p.stdout, "--help lacks %s" % flag)
    for bad in (["--listen", "localhost:80"], ["--listen", "1.2.3.4"], ["--ktls", "maybe"],
                ["--threads", "0"], ["--cert", "x.pem"], ["--root", "/nonexistent/dir"],
                ["--bogus"], ["extra-arg"], ["--header-timeout", "-1"]):
        p = subprocess.run([t.kite_serve] + bad, capture_output=True, text=True, timeout=WAIT)
        check(p.returncode == 2 and p.stderr, "%s: exit %d %r" % (bad, p.returncode, p.stderr))
    d = os.path.join(t.tmp, "flags")
    os.makedirs(d)
    if need("openssl"):
        cert, key = make_cert(d, "wr")
        os.chmod(key, 0o644)
        p = subprocess.run([t.kite_serve, "--cert", cert, "--key", key, "--listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=WAIT)
        check(p.returncode == 1 and "accessible to other users" in p.stderr
              and "--allow-insecure-key-perms" in p.stderr, "world-readable key: %r" % p.stderr)
        # ...served when the operator says so explicitly.
        srv = Server(t, "insecure-key", ["--cert", cert, "--key", key, "--allow-insecure-key-perms"])
        expect(srv, "/small.txt", 200)
        srv.stop()
    bad_key = os.path.join(d, "bad.key")
    with open(bad_key, "wb") as f:
        f.write(b"short")
    os.chmod(bad_key, 0o600)
    p = subprocess.run([t.kite_serve, "--ticket-key-file", bad_key, "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=WAIT)
    check(p.returncode == 1 and "64 bytes" in p.stderr, "short ticket key: %r" % p.stderr)
    p = subprocess.run([t.kite_serve, "--priority", "NONSENSE", "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=WAIT)
    check(p.returncode == 1 and "priority" in p.stderr, "bad priority: %r" % p.stderr)


def lifecycle_ktls_modes(t):
    off = Server(t, "ktls-off", ["--ktls", "off"])
    check("kernel TLS: off (--ktls off)" in off.banner, "banner for --ktls off")
    check(get(off, "/small.txt")[0] == 200, "--ktls off serves")
    check(all(ln.endswith("ktls=off resumed=0") for ln in off.wait_log(1)), "--ktls off log")
    off.stop()
    req_srv = Server(t, "ktls-require", ["--ktls", "require", "--metrics-listen", "127.0.0.1:0"])
    try:
        st = get(req_srv, "/f5000.bin")[0]
        worked = st == 200
    except (ssl.SSLError, OSError, Fail):
        worked = False
    if REQUIRE_KTLS or "TX on, RX on" in req_srv.banner:
        check(worked, "--ktls require refused a connection the kernel can offload")
        check_ktls(req_srv)
    else:
        check(not worked, "--ktls require served without kTLS")
        deadline = time.monotonic() + WAIT  # workers publish their counts each loop
        while req_srv.metrics()['kite_errors_total{kind="offload_required"}'] < 1:
            check(time.monotonic() < deadline, "offload_required not counted")
            time.sleep(0.05)
    req_srv.stop()


def lifecycle_secrets(t):
    """No key material in anything kite-serve writes: stdout, stderr, the
    access log, /metrics; and no key log even when SSLKEYLOGFILE is set."""
    if not need("openssl"):
        return
    import base64
    d = os.path.join(t.tmp, "secrets")
    os.makedirs(d)
    cert, key = make_cert(d, "s")
    tk = os.path.join(d, "ticket.key")
    ticket = os.urandom(64)
    with open(tk, "wb") as f:
        f.write(ticket)
    os.chmod(tk, 0o600)
    keylog = os.path.join(d, "keylog.txt")
    srv = Server(t, "secrets", ["--cert", cert, "--key", key, "--ticket-key-file", tk,
                                "--metrics-listen", "127.0.0.1:0"],
                 env={"SSLKEYLOGFILE": keylog})
    for v in ("1.2", "1.3"):
        ctx = tls_ctx(v)
        s, sess = fetch_session(srv, ctx)
        r = ask(srv, req("GET", "/small.txt"), ctx=ctx, session=sess)
        check(r[0][0] == 200, "GET over TLS %s" % v)
    raw = socket.create_connection((srv.host, srv.port), timeout=WAIT)
    raw.sendall(b"GET / HTTP/1.1\r\n\r\n")  # plaintext: a failing handshake logs an error
    try:
        raw.recv(100)
    except ConnectionResetError:
        pass
    raw.close()
    srv.send_signal(signal.SIGHUP)
    wait_reloaded(srv, 1)
    metrics = "\n".join("%s %s" % kv for kv in srv.metrics().items())
    check(srv.stop() == 0, "exit status")
    out = (srv.stdout() + srv.stderr() + "\n".join(srv.log_lines()) + metrics).encode()
    # The private key: its PEM body lines and its DER bytes in hex.
    with open(key) as f:
        pem = [ln for ln in f.read().splitlines() if ln and not ln.startswith("-----")]
    der = subprocess.run(["openssl", "pkey", "-in", key, "-outform", "DER"], check=True,
                         capture_output=True).stdout
    needles = {"ticket key (raw)": ticket, "ticket key (hex)": ticket.hex().encode(),
               "ticket key (HEX)": ticket.hex().upper().encode(),
               "ticket key (base64)": base64.b64encode(ticket)[:40],
               "private key (DER hex)": der[-40:].hex().encode()}
    for i, ln in enumerate(pem):
        if len(ln) >= 32:
            needles["private key PEM line %d" % i] = ln.encode()
    for what, n in needles.items():
        check(n not in out, "%s appears in kite-serve's output" % what)
    check(not os.path.exists(keylog), "SSLKEYLOGFILE was written: session secrets on disk")


def lifecycle_metrics(t):
    srv = Server(t, "metrics", ["--metrics-listen", "127.0.0.1:0"])
    get(srv, "/f%d.bin" % ((1 << 20) + 123))
    get(srv, "/nope")
    m = srv.metrics()
    for k in ("kite_connections_accepted_total", "kite_connections_open", "kite_handshakes_total",
              "kite_resumptions_total", 'kite_requests_total{code="200"}',
              'kite_requests_total{code="404"}', 'kite_bytes_total{path="ktls-splice"}',
              'kite_bytes_total{path="ktls-sendfile"}', 'kite_bytes_total{path="userspace-tls"}',
              'kite_errors_total{kind="timeout"}', 'kite_connections_closed_total{kind="ok"}',
              'kite_ktls_connections_total{direction="tx"}', "kite_engine_rx_nobufs_total"):
        check(k in m, "metrics lack %s" % k)
    check(m["kite_handshakes_total"] >= 2 and m['kite_requests_total{code="404"}'] >= 1, "counts")
    body = sum(v for k, v in m.items() if k.startswith("kite_bytes_total"))
    check(body >= (1 << 20), "bytes by path: %s" % body)
    if REQUIRE_KTLS:
        check(m['kite_ktls_connections_total{direction="tx"}'] >= 2 and
              m['kite_ktls_connections_total{direction="rx"}'] >= 2, "kTLS connections")
        kb = m['kite_bytes_total{path="ktls-splice"}'] + m['kite_bytes_total{path="ktls-sendfile"}']
        check(kb >= (1 << 20), "the body did not go through kTLS splice/sendfile: %s" % kb)
        check('kite_kernel_tls_stat{counter="TlsTxSw"}' in m and
              m['kite_kernel_tls_stat{counter="TlsTxSw"}'] >= 2, "tls_stat in /metrics")
    elif not os.path.exists("/proc/net/tls_stat"):
        check(any(k.startswith("kite_ktls_fallbacks_total{direction=\"tx\"") for k in m),
              "no fallback reason in /metrics")
        check(m['kite_bytes_total{path="userspace-tls"}'] >= (1 << 20), "userspace bytes")
    # Only /metrics, only GET/HEAD, plain HTTP.
    h, p = Server.split(srv.metrics_url)
    c = http.client.HTTPConnection(h, p, timeout=WAIT)
    c.request("GET", "/other")
    check(c.getresponse().status == 404, "metrics 404")
    c.close()
    # SIGHUP reopens the access log (after rotation).
    os.rename(srv.log, srv.log + ".1")
    srv.send_signal(signal.SIGHUP)
    wait_reloaded(srv, 1)
    get(srv, "/small.txt")
    check(len(srv.wait_log(1)) == 1, "access log not reopened")
    check(srv.stop() == 0, "exit status")


def lifecycle_inline(t):
    """A small body rides in the head's record (path "send", no file path);
    --inline-max 0 with the file cache off sends it through the engine's file
    path instead."""
    for limit in ("16384", "0"):
        srv = Server(t, "inline-" + limit, ["--metrics-listen", "127.0.0.1:0",
                                            "--inline-max", limit, "--file-cache", "0"])
        for _ in range(4):
            st_, _, body = get(srv, "/f5000.bin")
            check(st_ == 200 and body == t.files["f5000.bin"], "GET f5000.bin")
        st_, _, body = get(srv, "/f5000.bin", [("Range", "bytes=100-199")])
        check(st_ == 206 and body == t.files["f5000.bin"][100:200], "range")
        m = srv.metrics()
        sent = m['kite_bytes_total{path="send"}']
        files = sum(v for k, v in m.items()
                    if k.startswith("kite_bytes_total") and k != 'kite_bytes_total{path="send"}')
        if limit != "0":
            check(files == 0 and sent >= 4 * 5000 + 100,
                  "inline: %d bytes on file paths, %d sent with heads" % (files, sent))
        else:
            check(files == 4 * 5000 + 100, "--inline-max 0: %d bytes on file paths" % files)
        check(srv.stop() == 0, "exit status")


def lifecycle_threads(t):
    srv = Server(t, "threads", ["--threads", "3"])
    socks = [connect(srv) for _ in range(12 if IN_UML else 40)]
    for s in socks:
        s.sendall(req("GET", "/f5000.bin"))
    for s in socks:
        r = parse(read_all(s))
        check(r[0][0] == 200 and r[0][2] == t.files["f5000.bin"], "concurrent GET")
        s.close()
    check(srv.stop() == 0, "exit status")


def group_lifecycle(t):
    for step in (lifecycle_flags, lifecycle_drain, lifecycle_bounded, lifecycle_linger,
                 lifecycle_secrets, lifecycle_ktls_modes,
                 lifecycle_metrics, lifecycle_inline, lifecycle_threads):
        t.step(step.__name__, step, t)


# ---------------------------------------------------------------- main

GROUPS = {"http": group_http, "clients": group_clients, "resume": group_resume,
          "load": group_load, "lifecycle": group_lifecycle}


class Test:
    def __init__(self, args):
        self.kite_serve = os.path.abspath(args.kite_serve)
        self.engine = args.engine
        self.tmp = tempfile.mkdtemp(prefix="kite-serve-test-")
        self.servers = []
        self.failures = []
        make_root(self)

    def step(self, name, fn, *a):
        t0 = time.monotonic()
        try:
            fn(*a)
            print("ok   %-24s %.1fs" % (name, time.monotonic() - t0))
        except Fail as e:
            print("FAIL %-24s %s" % (name, e))
            self.failures.append(name)
        except Exception:  # a harness error is a failure too
            print("FAIL %-24s harness error:\n%s" % (name, traceback.format_exc()))
            self.failures.append(name)
        sys.stdout.flush()

    def run(self, steps):
        """Run steps (name, fn, *args), clean up, report; the exit status."""
        try:
            for name, fn, *a in steps:
                self.step(name, fn, *a)
        finally:
            self.cleanup()
        if self.failures:
            print("FAILED: %s" % ", ".join(self.failures))
            return 1
        print("all passed")
        return 0

    def cleanup(self):
        for s in self.servers:
            s.kill()
        if not self.failures:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print("kept %s for inspection" % self.tmp)
            for s in self.servers:
                err = s.stderr().strip()
                if err:
                    print("--- %s stderr:\n%s" % (s.dir, err[-1500:]))


def group_main(doc, groups, what):
    """A driver's command line: --kite-serve, --engine and the groups to
    run (each a function of the Test); the exit status."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--kite-serve", required=True)
    ap.add_argument("--engine", choices=["uring", "uring-basic", "epoll"],
                    help="force the engine rung (KITE_ENGINE)")
    ap.add_argument("groups", nargs="+", choices=sorted(groups))
    args = ap.parse_args()
    if not os.path.exists(args.kite_serve):
        print("kite-serve not built: %s" % args.kite_serve)
        return 77
    t = Test(args)
    print("%s: %s%s%s" % (what, " ".join(args.groups),
                          " engine=" + args.engine if args.engine else "",
                          " (kTLS required)" if REQUIRE_KTLS else ""))
    return t.run([("group " + g, groups[g], t) for g in args.groups])


def main():
    return group_main(__doc__, GROUPS, "kite-serve tests")


if __name__ == "__main__":
    sys.exit(main())
