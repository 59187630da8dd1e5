#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Faults through the syscall seam and the environment, against the real server.

kite-serve-faults is kite-serve (tools/serve/main.c and the same server
parts) linked with fault.c: KITE_FAULTS (grammar in fault.c) fails chosen
calls of libkite's syscall seam, io_uring completions and kite's own
mallocs. The environment faults need no seam: a low RLIMIT_NOFILE, files
deleted or truncated under a response, an access log on /dev/full or a
full tmpfs.

Groups (each starts its own servers; --engine picks the rung, repeatable):

  io         per rule (EIO, ENOMEM, EPIPE, ECONNRESET, ENOBUFS, EBADMSG on
             the rung's data calls): faulted connections end (close or
             reset), every byte a client got is the file's, the others get
             whole files, the reason is on stderr (our faults) or in
             /metrics (the peer's kind), the rule really fired
  transient  EINTR (and EAGAIN where the engine polls level-triggered) on
             every second call: every request still byte-exact
  leaks      2 x 200 faulted requests (2 x 60 in UML; half in the quick
             run, KITE_TEST_SIZE not "full"): descriptors back to
             the idle count, no connection left open, RSS flat between the
             rounds, clean exit (LSan in the ASan stage)
  accept     io_uring accept completions failing (EMFILE, ENFILE, ENOBUFS,
             ECONNABORTED): that client is dropped, the rest are served
  emfile     RLIMIT_NOFILE exhausted by idle connections: no CPU spin, one
             clear stderr line, a request then needing a file gets 503 and
             is logged, and once the connections go new ones are served
  malloc     a window in which 10% (then 30%) of kite's own mallocs fail
             (SIGUSR1 .. SIGUSR2): no crash or hang, afterwards all served,
             no descriptor leak (GnuTLS's and libc's mallocs are not wrapped)
  files      a file deleted mid-response is served whole (open inode); one
             truncated mid-response is cut short (never padded), reported
             on stderr, and the next request is fine
  log        access log on /dev/full (and a full tmpfs when mountable):
             requests still served, one line on stderr, SIGHUP reopens,
             "writing again" once writes work
  ktls       (kTLS only: inside UML) setsockopt TCP_ULP / TLS_TX / TLS_RX
             failing with ENOENT ENOMEM EBUSY EINVAL EOPNOTSUPP: the
             connection falls back per direction, is served byte-exactly, and
             the access log and /metrics say what was offloaded and why;
             --ktls require refuses instead

--http2: every request of io, transient and leaks goes over HTTP/2 (ALPN
h2, frames read by hand, the same checks); rules on the engine's file reads
are left out on userspace TLS, where kite-serve reads HTTP/2 payloads itself.

Not faithful, so not tested: a successful io_uring completion turned into
EAGAIN or EINTR (the operation has happened), and a made-up EAGAIN on the
epoll rung (edge-triggered: no edge would follow). Kernel EAGAIN/EINTR on
those paths is covered by tests/engine.

Exit status: 0 pass, 1 fail, 77 skip.
"""

import argparse
import collections
import concurrent.futures
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time

st = None  # tests/serve/serve_test.py, imported in main()

KTLS = False        # set in main(): the kernel offloads (inside UML)
HTTP2 = False       # --http2: fetch() speaks HTTP/2 (ALPN h2)
SMALL = False       # UML: fewer and smaller transfers
PATHS = ["small.txt", "f5000.bin", "f16385.bin", "f100000.bin", "f%d.bin" % ((1 << 20) + 123)]


# ---------------------------------------------------------------- helpers


def fds(srv):
    return sorted(os.listdir("/proc/%d/fd" % srv.p.pid), key=int)


def fd_targets(srv):
    out = []
    for fd in fds(srv):
        try:
            out.append(os.readlink("/proc/%d/fd/%s" % (srv.p.pid, fd)))
        except OSError:
            pass
    return out


def rss_kib(srv):
    with open("/proc/%d/status" % srv.p.pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def cpu_seconds(srv):
    with open("/proc/%d/stat" % srv.p.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sanitized(srv):
    """ASan keeps freed memory in quarantine: RSS says nothing there."""
    with open("/proc/%d/maps" % srv.p.pid) as f:
        return "libasan" in f.read()


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def sock_states(srv):
    """TCP states of the server's sockets, for a leak report."""
    inodes = {x[8:-1] for x in fd_targets(srv) if x.startswith("socket:[")}
    out = collections.Counter()
    for tab in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(tab) as f:
                for ln in f.readlines()[1:]:
                    c = ln.split()
                    if c[9] in inodes:
                        out[TCP_STATES.get(c[3], c[3])] += 1
        except OSError:
            pass
    return dict(out)


def settle(srv, base, what):
    """Wait until the server holds no more descriptors than base (lingering
    connections end within 2 s), not counting those its open-file cache
    keeps by design (bounded by --file-cache; its gauge in /metrics). The
    descriptors are listed before the scrape, whose own connection then
    does not count."""
    deadline = time.monotonic() + st.WAIT
    while True:
        n = len(fds(srv))
        if n <= base:
            return n
        cached = metric(metrics(srv), "kite_file_cache_open_fds")
        if n - cached <= base:
            return n - cached
        if time.monotonic() > deadline:
            raise st.Fail("%s: %d descriptors, %d of them the file cache's, %d when idle; "
                          "open: %s; TCP: %s" %
                          (what, n, cached, base,
                           collections.Counter(fd_targets(srv)).most_common(6), sock_states(srv)))
        time.sleep(0.1)


def wait_stderr(srv, pattern, what, n=1):
    deadline = time.monotonic() + st.WAIT
    while len(re.findall(pattern, srv.stderr())) < n:
        st.check(srv.alive(), "server died waiting for %s: %s" % (what, srv.stderr()[-800:]))
        st.check(time.monotonic() < deadline, "no %s on stderr: %s" % (what, srv.stderr()[-800:]))
        time.sleep(0.02)


def server_lines(srv):
    """kite-serve's own stderr lines (not the fault module's)."""
    return [ln for ln in srv.stderr().splitlines() if ln.startswith("kite-serve:")]


def fired(srv):
    """Failures each rule injected, from the report at exit (stopped)."""
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r"kite-serve-faults: rule (\S+): \d+ calls, (\d+) failed", srv.stderr())}


def stop_clean(srv, what):
    code = srv.stop()
    st.check(code == 0, "%s: exit status %s: %s" % (what, code, srv.stderr()[-1500:]))


def start(t, name, faults="", args=(), env=None, **kw):
    e = {"KITE_FAULTS": faults}
    e.update(env or {})
    # No file bodies from memory: the faults aim at the reads and sends of
    # file bytes, which a body the open-file cache holds would skip.
    a = ["--metrics-listen", "127.0.0.1:0", "--small-file-max", "0"] + list(args)
    # One directory (and access log) per rung and server.
    srv = st.Server(t, "%s-%s" % (t.engine, name), a, env=e, **kw)
    if faults:
        st.check("kite-serve-faults: armed: " in srv.stderr(), "no fault banner: %s" % srv.stderr())
    return srv


def step(t, name, fn, *a):
    """t.step, printing what fn returns (counts, timings) under its line."""
    def run():
        r = fn(*a)
        if r:
            print("     %s" % r)
    t.step(name, run)


def h2_exchange(s, path):
    """GET path over HTTP/2 on the TLS socket s, windows opened up front.
    Returns (status or 0, content-length or None, body bytes, ended)."""
    import struct
    import hpack

    def frame(ty, fl, sid, pl=b""):
        return struct.pack(">I", len(pl))[1:] + bytes([ty, fl]) + struct.pack(">I", sid) + pl
    huge = (1 << 31) - 1
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" +
              frame(4, 0, 0, struct.pack(">HI", 4, huge)) +
              frame(8, 0, 0, struct.pack(">I", huge - 65535)) +
              frame(1, 0x5, 1, hpack.Encoder().encode([
                  (":method", "GET"), (":scheme", "https"), (":authority", "kite.test"),
                  (":path", "/" + path)])))
    dec, buf, body, status, cl = hpack.Decoder(), b"", bytearray(), 0, None
    while True:
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            ty, fl, sid, pl = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff, \
                buf[9:9 + n]
            buf = buf[9 + n:]
            if ty == 1 and sid == 1:
                hdr = dict(dec.decode(pl))
                status = int(hdr[":status"])
                cl = int(hdr["content-length"]) if "content-length" in hdr else None
            elif ty == 0 and sid == 1:
                body += pl
            elif ty in (3, 7):
                return status, cl, bytes(body), False  # reset or GOAWAY: cut
            if ty in (0, 1) and sid == 1 and fl & 1:
                return status, cl, bytes(body), True
        b = s.recv(1 << 16)
        if not b:
            return status, cl, bytes(body), False
        buf += b


def fetch_h2(srv, path, want, allow):
    """fetch() over HTTP/2: the same kinds and checks."""
    try:
        raw = socket.create_connection((srv.host, srv.port), timeout=st.WAIT)
    except socket.timeout:
        raise st.Fail("%s: connect hangs" % path)
    except (ConnectionError, OSError):
        return "refused", 0, b""
    try:
        s = st.tls_ctx(alpn=("h2",)).wrap_socket(raw)
    except socket.timeout:
        raw.close()
        raise st.Fail("%s: handshake hangs" % path)
    except (ssl.SSLError, ConnectionError, OSError):
        raw.close()
        return "refused", 0, b""
    try:
        status, cl, body, ended = h2_exchange(s, path)
    except socket.timeout:
        raise st.Fail("%s: the server neither sent nor closed for %ss" % (path, st.WAIT))
    except (ssl.SSLError, ConnectionError, OSError):
        status, cl, body, ended = 0, None, b"", False
    finally:
        s.close()
    if not status:
        return "cut", 0, b""
    if status != 200:
        st.check(status in allow, "%s: status %d (allowed: 200 %s)" % (path, status, list(allow)))
        return "status", status, body
    st.check(cl == len(want), "%s: content-length %s, want %d" % (path, cl, len(want)))
    st.check(len(body) <= cl, "%s: %d bytes after a %d-byte body" % (path, len(body) - cl, cl))
    if body != want[:len(body)]:
        i = next(i for i in range(len(body)) if body[i] != want[i])
        raise st.Fail("%s: WRONG BYTES at offset %d of %d" % (path, i, len(body)))
    st.check(ended or len(body) < cl, "%s: whole body but no END_STREAM" % path)
    return ("ok" if len(body) == cl and ended else "cut"), status, body


def fetch(srv, path, want, allow=()):
    """One GET of path on its own connection. Returns (kind, status, body):
    ok      200 and the whole file
    cut     a byte-exact prefix (maybe empty), then the server ended it
    refused no TLS connection (the handshake failed)
    status  an allowed other status (allow)
    Wrong bytes, extra bytes, an unexpected status or a hang raise Fail."""
    if HTTP2:
        return fetch_h2(srv, path, want, allow)
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(st.WAIT)
        raw.connect((srv.host, srv.port))
    except (ConnectionError, OSError) as e:
        if isinstance(e, socket.timeout):
            raise st.Fail("%s: connect hangs" % path)
        return "refused", 0, b""
    try:
        s = st.tls_ctx().wrap_socket(raw)
    except socket.timeout:
        raw.close()
        raise st.Fail("%s: handshake hangs" % path)
    except (ssl.SSLError, ConnectionError, OSError):
        raw.close()
        return "refused", 0, b""
    buf = bytearray()
    try:
        s.sendall(st.req("GET", "/" + path))
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            buf += b
    except socket.timeout:
        raise st.Fail("%s: the server neither sent nor closed for %ss (%d bytes in)" %
                      (path, st.WAIT, len(buf)))
    except (ssl.SSLError, ConnectionError, OSError):
        pass  # reset, or no close_notify: the end of a cut response
    finally:
        s.close()
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        st.check(bytes(buf[:9]) == b"HTTP/1.1 "[:len(buf[:9])], "%s: garbage %r" %
                 (path, bytes(buf[:60])))
        return "cut", 0, b""
    head = buf[:end].decode("latin-1")
    m = re.match(r"HTTP/1\.1 (\d{3}) ", head)
    st.check(m, "%s: bad status line %r" % (path, head[:60]))
    status = int(m.group(1))
    body = bytes(buf[end + 4:])
    if status != 200:
        st.check(status in allow, "%s: status %d (allowed: 200 %s)" % (path, status, list(allow)))
        return "status", status, body
    cl = int(re.search(r"(?im)^content-length: (\d+)", head).group(1))
    st.check(cl == len(want), "%s: content-length %d, want %d" % (path, cl, len(want)))
    st.check(len(body) <= cl, "%s: %d bytes after a %d-byte body" % (path, len(body) - cl, cl))
    if body != want[:len(body)]:
        i = next(i for i in range(len(body)) if body[i] != want[i])
        raise st.Fail("%s: WRONG BYTES at offset %d of %d" % (path, i, len(body)))
    return ("ok" if len(body) == cl else "cut"), status, body


def batch(t, srv, n, conc=4, allow=(), paths=None):
    """n GETs, conc at a time, over paths round robin: a Counter of kinds."""
    paths = paths or PATHS
    jobs = [paths[i % len(paths)] for i in range(n)]
    with concurrent.futures.ThreadPoolExecutor(conc) as ex:
        res = list(ex.map(lambda p: fetch(srv, p, t.files[p], allow)[0], jobs))
    return collections.Counter(res)


def metrics(srv):
    """/metrics; the faults apply to the metrics listener's engine too, so
    a failed scrape is tried again."""
    for _ in range(20):
        try:
            return srv.metrics()
        except (OSError, ValueError, st.Fail, http.client.HTTPException):
            time.sleep(0.05)
    return srv.metrics()


def metric(m, key):
    return int(m.get(key, 0))


def closed(m, kind):
    return metric(m, 'kite_connections_closed_total{kind="%s"}' % kind)


# ---------------------------------------------------------------- io


# (rule, evidence) per engine rung and kernel: evidence "stderr:REGEX" (a
# fault on our side, reported) or "kind:K[|K...]" (/metrics closed kinds).
IO_RULES = {
    # Userspace TLS (no kTLS on the host): the io_uring rung reads files
    # and sends records through the ring; the handshake uses the seam.
    ("uring", False): [
        ("cqe.read=EIO/3", "stderr:Input/output error"),
        ("cqe.read=ENOMEM/3", "stderr:out of memory"),
        ("cqe.send=EPIPE/4", "kind:reset"),
        ("cqe.send=ECONNRESET/4", "kind:reset"),
        ("cqe.send=ENOBUFS/4", "kind:overflow"),
        ("cqe.send=ENOMEM/4", "stderr:out of memory"),
        ("cqe.recv=ECONNRESET/3", "kind:reset|kind:handshake"),
        ("cqe.recv=ENOMEM/3", "stderr:out of memory|kind:handshake"),
        ("cqe.recv=EIO/3", "stderr:Input/output error|kind:handshake"),
        ("sendmsg=EPIPE/8", "kind:handshake"),
        ("recvmsg=ECONNRESET/12", "kind:handshake"),
        ("recvmsg=ENOMEM/12", "kind:handshake"),
    ],
    # The epoll rung: pread + GnuTLS records + sendmsg, recvmsg.
    ("epoll", False): [
        ("pread=EIO/3", "stderr:Input/output error"),
        ("pread=ENOMEM/3", "stderr:out of memory"),
        ("sendmsg=EPIPE/10", "kind:reset|kind:handshake"),
        ("sendmsg=ECONNRESET/10", "kind:reset|kind:handshake"),
        ("sendmsg=ENOBUFS/10", "kind:overflow|kind:handshake"),
        ("sendmsg=ENOMEM/10", "stderr:out of memory"),
        ("recvmsg=ECONNRESET/12", "kind:reset|kind:handshake"),
        ("recvmsg=EIO/12", "stderr:Input/output error|kind:handshake"),
    ],
    # Kernel TLS both ways: splice file -> pipe -> socket, SEND of heads,
    # RECVMSG with the record type, SENDMSG of close_notify.
    ("uring", True): [
        ("cqe.splice_in=EIO/3", "stderr:Input/output error"),
        ("cqe.splice_out=EPIPE/3", "kind:reset"),
        ("cqe.splice_out=ENOMEM/3", "stderr:out of memory"),
        ("cqe.splice_out=ENOBUFS/3", "kind:overflow"),
        ("cqe.splice_out=EIO/3", "stderr:Input/output error"),
        # Small files: READ_FIXED linked to SEND. The SEND has run when
        # the READ's result is turned into an error, so the client has
        # the whole body before the reset.
        ("cqe.read=EIO/2", "stderr:Input/output error", False),
        ("cqe.send=ECONNRESET/3", "kind:reset"),
        ("cqe.recvmsg=EBADMSG/2", "kind:tls"),
        ("cqe.recvmsg=ENOMEM/2", "stderr:out of memory"),
        ("cqe.recvmsg=EMSGSIZE/2", "kind:tls"),
        ("cqe.sendmsg=EPIPE/2", "kind:reset", False),  # close_notify: after the body
    ],
    # sendfile(2) into kTLS, recvmsg from kTLS, sendmsg of heads.
    ("epoll", True): [
        ("sendfile=EIO/3", "stderr:Input/output error"),
        ("sendfile=EPIPE/3", "kind:reset"),
        ("sendfile=ENOMEM/3", "stderr:out of memory"),
        ("sendfile=ENOBUFS/3", "kind:overflow"),
        ("sendmsg=ECONNRESET/6", "kind:reset|kind:handshake"),
        ("sendmsg.cmsg=EPIPE/2", "kind:reset", False),  # close_notify: after the body
        ("recvmsg.cmsg=EBADMSG/5", "kind:tls"),
        ("recvmsg.cmsg=EIO/5", "stderr:Input/output error"),
        ("recvmsg.cmsg=EMSGSIZE/5", "kind:tls"),
    ],
}


def check_evidence(srv, m, rule, evidence):
    lines = server_lines(srv)
    for alt in evidence.split("|"):
        typ, val = alt.split(":", 1)
        if typ == "stderr" and any(re.search(r"connection from \S+ ended: .*" + val, ln)
                                   for ln in lines):
            return
        if typ == "kind" and closed(m, val) > 0:
            return
    raise st.Fail("%s: no evidence (%s): stderr %s; closed %s" %
                  (rule, evidence, lines[-5:],
                   {k: v for k, v in m.items() if "closed_total" in k and v}))


def io_rule(t, rule, evidence, visible=True):
    # Every body through the engine's file paths (small ones would
    # otherwise ride in the head's record: --inline-max).
    srv = start(t, "io-" + re.sub(r"\W", "_", rule), rule, args=["--inline-max", "0"])
    n = 16 if SMALL else 40
    t0 = time.monotonic()
    res = batch(t, srv, n)
    st.check(res["ok"] >= 1, "%s: nothing served whole: %s" % (rule, dict(res)))
    # Not visible: the fault comes after the whole response is out.
    st.check(res["ok"] < n or not visible, "%s: no request failed: %s" % (rule, dict(res)))
    m = metrics(srv)
    check_evidence(srv, m, rule, evidence)
    # Report lines are rate-limited: one a second per worker (2).
    reports = [ln for ln in server_lines(srv) if "ended:" in ln]
    limit = 2 * (int(time.monotonic() - t0) + 2)
    st.check(len(reports) <= limit, "%s: %d report lines for %d requests (at most %d)" %
             (rule, len(reports), n, limit))
    st.check(srv.alive(), "%s: server died" % rule)
    stop_clean(srv, rule)
    st.check(fired(srv).get(rule, 0) > 0, "%s: never fired: %s" % (rule, srv.stderr()[-400:]))
    return "%s %s" % (rule, "/".join("%s=%d" % kv for kv in sorted(res.items())))


def applies(rule):
    """Over HTTP/2 on userspace TLS kite-serve reads file payloads itself
    (next to their frame headers): the engine's file reads never run."""
    if HTTP2 and not KTLS and rule.split("=")[0] in ("cqe.read", "pread"):
        print("  (%s: no engine file reads over HTTP/2 without kTLS)" % rule)
        return False
    # The control-record rules fault HTTP/1.1's close_notify after the
    # body (Connection: close); an HTTP/2 connection stays open for more
    # streams and the client leaves first: nothing to fault.
    if HTTP2 and KTLS and rule.split("=")[0] in ("cqe.sendmsg", "sendmsg.cmsg"):
        print("  (%s: no close_notify after an HTTP/2 answer)" % rule)
        return False
    return True


def group_io(t):
    for r in IO_RULES[(t.engine, KTLS)]:
        if applies(r[0]):
            step(t, "io " + r[0], io_rule, t, *r)


# ---------------------------------------------------------------- transient


def transient(t, rule):
    srv = start(t, "tr-" + re.sub(r"\W", "_", rule)[:40], rule, args=["--inline-max", "0"])
    n = 12 if SMALL else 30
    res = batch(t, srv, n)
    st.check(res == {"ok": n}, "%s: %s (every request must be served whole)" % (rule, dict(res)))
    stop_clean(srv, rule)
    f = fired(srv)
    st.check(sum(f.values()) > 0, "%s: never fired: %s" % (rule, f))


def group_transient(t):
    # Every second call: a retry loop that re-fails must still progress.
    rules = ["sendmsg=EINTR/2", "recvmsg=EINTR/2"]
    if t.engine == "epoll":
        rules.append("sendfile=EINTR/2" if KTLS else "pread=EINTR/2")
    if t.engine == "uring":
        # The io_uring rung waits for the handshake with POLL_ADD (level):
        # an EAGAIN with data waiting just polls again. The epoll rung is
        # edge-triggered, so a made-up EAGAIN (the socket had room or data)
        # would wait for an edge that never comes: not a fault a kernel
        # can produce, not tested.
        rules += ["sendmsg=EAGAIN/2", "recvmsg=EAGAIN/2"]
    for r in [r for r in rules if applies(r)]:
        t.step("transient " + r, transient, t, r)


# ---------------------------------------------------------------- leaks


def leaks(t, rule):
    srv = start(t, "leaks", rule)
    base = len(fds(srv))  # idle: listeners, pools, ring, log
    # Quick run (serve_test.sized): half the rounds.
    rounds = st.sized(30, 60) if SMALL else st.sized(100, 200)
    # Warm up before measuring RSS: pools, GnuTLS caches, malloc arenas.
    batch(t, srv, 20)
    metrics(srv)
    settle(srv, base, "warm-up")
    res1 = batch(t, srv, rounds)
    settle(srv, base, "after %d faulted requests" % rounds)
    r1 = rss_kib(srv)
    res2 = batch(t, srv, rounds)
    settle(srv, base, "after %d more" % rounds)
    r2 = rss_kib(srv)
    for res in (res1, res2):
        st.check(res["ok"] and res["ok"] < rounds, "%s: %s" % (rule, dict(res)))
    if sanitized(srv):
        print("  (ASan build: RSS not compared; LeakSanitizer checks at exit)")
    else:
        # A leak of one 16 KiB receive buffer per failed stream would add
        # >1 MiB per round here.
        st.check(r2 - r1 < 1024, "%s: RSS grew %d KiB over %d faulted requests (%d -> %d)" %
                 (rule, r2 - r1, rounds, r1, r2))
    deadline = time.monotonic() + st.WAIT
    while metric(metrics(srv), "kite_connections_open"):
        st.check(time.monotonic() < deadline, "%s: connections left open: %s, sockets %s" %
                 (rule, metric(metrics(srv), "kite_connections_open"), sock_states(srv)))
        time.sleep(0.1)
    stop_clean(srv, rule)
    return "%s: %d descriptors, RSS %d -> %d KiB, %s %s" % (rule, base, r1, r2, dict(res1), dict(res2))


def group_leaks(t):
    rule = {("uring", False): "cqe.send=ECONNRESET/7", ("epoll", False): "sendmsg=EPIPE/7",
            ("uring", True): "cqe.splice_out=EPIPE/5", ("epoll", True): "sendfile=EIO/5"}
    step(t, "leaks " + rule[(t.engine, KTLS)], leaks, t, rule[(t.engine, KTLS)])
    # Faults on our side (a read failing) take the other error paths.
    rule2 = {("uring", False): "cqe.read=EIO/5", ("epoll", False): "pread=ENOMEM/5",
             ("uring", True): "cqe.splice_in=EIO/5", ("epoll", True): "recvmsg.cmsg=EBADMSG/5"}
    if applies(rule2[(t.engine, KTLS)]):
        step(t, "leaks " + rule2[(t.engine, KTLS)], leaks, t, rule2[(t.engine, KTLS)])


# ---------------------------------------------------------------- accept (io_uring)


def accept_rule(t, rule):
    srv = start(t, "acc-" + re.sub(r"\W", "_", rule), rule, args=["--threads", "1"])
    base = len(fds(srv))
    n = 12 if SMALL else 30
    res = batch(t, srv, n, paths=["small.txt", "f5000.bin"])
    st.check(res["ok"] >= n // 2 and res["refused"] >= 1 and res["ok"] + res["refused"] == n,
             "%s: %s (dropped clients are refused, the rest served)" % (rule, dict(res)))
    m = metrics(srv)
    st.check(metric(m, "kite_accept_errors_total") >= 1, "%s: kite_accept_errors_total 0" % rule)
    settle(srv, base + 1, rule)  # + the metrics connection, maybe lingering
    wait_stderr(srv, r"kite-serve: worker 0: cannot accept connections: ", "accept report")
    stop_clean(srv, rule)


def group_accept(t):
    if t.engine != "uring":
        print("  (accept faults through the seam: io_uring rung only; epoll's accept4 is "
              "exercised by the emfile group)")
        return
    for r in ("cqe.accept=EMFILE/3", "cqe.accept=ENFILE/3", "cqe.accept=ENOBUFS/3",
              "cqe.accept=ECONNABORTED/3"):
        t.step("accept " + r, accept_rule, t, r)


# ---------------------------------------------------------------- emfile


def limited(t, limit):
    """A launcher that lowers RLIMIT_NOFILE, soft and hard, so that
    kite-serve cannot raise it again, then becomes kite-serve."""
    path = os.path.join(t.tmp, "nofile-%d" % limit)
    with open(path, "w") as f:
        f.write("#!%s\nimport os, resource, sys\n"
                "resource.setrlimit(resource.RLIMIT_NOFILE, (%d, %d))\n"
                "os.execv(%r, [%r] + sys.argv[1:])\n" %
                (sys.executable, limit, limit, t.real_serve, t.real_serve))
    os.chmod(path, 0o755)
    return path


def emfile(t):
    limit = 256
    t.kite_serve = limited(t, limit)
    try:
        srv = st.Server(t, t.engine + "-emfile",
                        ["--threads", "1", "--handshake-timeout", "120", "--idle-timeout", "120"],
                        env={"KITE_FAULTS": ""})
    finally:
        t.kite_serve = t.real_serve
    with open("/proc/%d/limits" % srv.p.pid) as f:
        st.check(re.search(r"Max open files\s+%d\s+%d" % (limit, limit), f.read()), "limit not applied")
    # Two TLS connections ready for later requests, then idle TCP
    # connections until the server has no descriptor left.
    ready = [st.connect(srv) for _ in range(2)]
    idle = []
    deadline = time.monotonic() + st.WAIT
    while len(fds(srv)) < limit:
        st.check(time.monotonic() < deadline, "server stuck at %d of %d descriptors" %
                 (len(fds(srv)), limit))
        for _ in range(8):
            idle.append(socket.create_connection((srv.host, srv.port), timeout=st.WAIT))
        time.sleep(0.01)
    # Some more wait in the backlog.
    for _ in range(8):
        idle.append(socket.create_connection((srv.host, srv.port), timeout=st.WAIT))
    wait_stderr(srv, r"cannot accept connections: Too many open files", "EMFILE report")
    c0 = cpu_seconds(srv)
    time.sleep(2)
    c1 = cpu_seconds(srv)
    st.check(c1 - c0 < 0.3, "server burns CPU while out of descriptors: %.2f s in 2 s" % (c1 - c0))
    # A request that needs a file: no descriptor for it.
    s = ready[0]
    s.sendall(st.req("GET", "/small.txt", close=False))
    r = st.recv_responses(s, 1)
    st.check(r[0][0] == 503 and r[0][1].get("retry-after") == "1",
             "GET with no descriptor left: %d %s, want 503 with Retry-After" % (r[0][0], r[0][1]))
    lines = srv.wait_log(1)
    st.check(any(' 503 ' in ln and "/small.txt" in ln for ln in lines), "503 not logged: %s" % lines)
    reports = [ln for ln in server_lines(srv) if "cannot accept" in ln]
    st.check(len(reports) <= 2, "accept failures not rate-limited: %d lines" % len(reports))
    # Free the descriptors: the backlog drains and new clients are served.
    for c in idle:
        c.close()
    deadline = time.monotonic() + st.WAIT
    while True:
        kind, _, _ = fetch(srv, "f100000.bin", t.files["f100000.bin"])
        if kind == "ok":
            break
        st.check(time.monotonic() < deadline, "not serving after the descriptors came back: %s" % kind)
        time.sleep(0.2)
    s = ready[1]
    s.sendall(st.req("GET", "/f5000.bin"))
    r = st.parse(st.read_all(s))
    st.check(r[0][0] == 200 and r[0][2] == t.files["f5000.bin"], "kept connection after EMFILE")
    for s in ready:
        s.close()
    stop_clean(srv, "emfile")
    return "%.2f s CPU in 2 s at %d descriptors" % (c1 - c0, limit)


def group_emfile(t):
    step(t, "emfile", emfile, t)


# ---------------------------------------------------------------- malloc


def malloc_window(t, pct):
    rule = "~malloc=ENOMEM%%%d" % pct
    srv = start(t, "malloc%d" % pct, rule)
    batch(t, srv, 10)
    metrics(srv)
    base = settle(srv, 10 ** 6, "warm-up")
    srv.send_signal(signal.SIGUSR1)
    wait_stderr(srv, r"held rules armed", "arming")
    n = 30 if SMALL else 100
    res = batch(t, srv, n, allow=(500, 503))
    srv.send_signal(signal.SIGUSR2)
    wait_stderr(srv, r"all rules disarmed", "disarming")
    st.check(srv.alive(), "server died with mallocs failing: %s" % srv.stderr()[-1500:])
    after = batch(t, srv, 20)
    st.check(after == {"ok": 20}, "after the window: %s" % dict(after))
    settle(srv, base, "after the malloc window")
    stop_clean(srv, "malloc")
    f = fired(srv).get(rule, 0)
    st.check(f > 0, "no malloc failed")
    return "%d mallocs failed; during: %s" % (f, dict(res))


def group_malloc(t):
    for pct in (10, 30):
        step(t, "malloc window %d%%" % pct, malloc_window, t, pct)


# ---------------------------------------------------------------- files


def victim(t, name, size):
    """A file of random bytes under the root. Inside UML on a tmpfs: UML's
    hostfs answers truncate(2) of a file another process has open with
    EINVAL."""
    if st.IN_UML:
        vol = os.path.join(t.root, "vol")
        if not os.path.ismount(vol):
            os.makedirs(vol, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "kite-victims", vol],
                           check=True)
        name = "vol/" + name
    data = st.data(size, size + 7)
    with open(os.path.join(t.root, name), "wb") as f:
        f.write(data)
    return name, data


def slow_get(srv, name, then):
    """GET name with a tiny receive buffer, read a little, run then(),
    read the rest. Returns (status, content-length, body, how it ended)."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    raw.settimeout(st.WAIT)
    raw.connect((srv.host, srv.port))
    # A ragged end (no close_notify) must be seen, not read as EOF.
    s = st.tls_ctx().wrap_socket(raw, suppress_ragged_eofs=False)
    s.sendall(st.req("GET", "/" + name))
    buf = bytearray()
    while len(buf) < 32768:
        b = s.recv(4096)
        st.check(b, "closed early")
        buf += b
    then()
    how = "eof"
    try:
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            buf += b
    except socket.timeout:
        raise st.Fail("%s: hangs after %d bytes" % (name, len(buf)))
    except (ssl.SSLError, ConnectionError, OSError) as e:
        how = "%s %s" % (type(e).__name__, e)
    s.close()
    end = buf.find(b"\r\n\r\n")
    head = buf[:end].decode("latin-1")
    cl = int(re.search(r"(?im)^content-length: (\d+)", head).group(1))
    return int(head[9:12]), cl, bytes(buf[end + 4:]), how


def files_deleted(t):
    srv = start(t, "deleted")
    size = (4 << 20) if SMALL else (16 << 20)
    name, data = victim(t, "deleted.bin", size)
    base = len(fds(srv))
    status, cl, body, how = slow_get(srv, name, lambda: os.unlink(os.path.join(t.root, name)))
    st.check(status == 200 and cl == size, "status %d length %d" % (status, cl))
    st.check(len(body) == size, "deleted file: %d of %d bytes (%s)" % (len(body), size, how))
    st.check(body == data, "deleted file: wrong bytes")
    st.expect(srv, "/" + name, 404)
    settle(srv, base, "after the deleted file")
    deadline = time.monotonic() + st.WAIT
    while any("deleted.bin" in x for x in fd_targets(srv)):
        st.check(time.monotonic() < deadline, "the deleted file is still open (%s)" %
                 {k: v for k, v in metrics(srv).items() if "file_cache" in k})
        time.sleep(0.05)
    stop_clean(srv, "deleted")


def files_truncated(t):
    srv = start(t, "truncated")
    size = (4 << 20) if SMALL else (16 << 20)
    cut_to = 1 << 20
    name, data = victim(t, "trunc.bin", size)
    base = len(fds(srv))
    path = os.path.join(t.root, name)
    status, cl, body, how = slow_get(srv, name, lambda: os.truncate(path, cut_to))
    st.check(status == 200 and cl == size, "status %d length %d" % (status, cl))
    st.check(len(body) < size, "truncated file: all %d bytes arrived (padded?)" % len(body))
    st.check(body == data[:len(body)], "truncated file: wrong bytes")
    # Cut with a reset, never a close_notify that would call it complete.
    st.check(how != "eof", "the cut response ended with a clean close")
    wait_stderr(srv, r"connection from \S+ ended: .*(No data available|file ends at offset)",
                "truncation report")
    hdr, got = st.expect(srv, "/" + name, 200)
    st.check(got == data[:cut_to], "the truncated file afterwards")
    kind, _, _ = fetch(srv, "f100000.bin", t.files["f100000.bin"])
    st.check(kind == "ok", "next request: %s" % kind)
    m = metrics(srv)
    st.check(closed(m, "file_changed") >= 1, "closed{kind=file_changed} not counted")
    settle(srv, base + 1, "after the truncated file")
    stop_clean(srv, "truncated")
    return "%d of %d bytes, then %s" % (len(body), size, how)


def group_files(t):
    t.step("files deleted", files_deleted, t)
    step(t, "files truncated", files_truncated, t)
    vol = os.path.join(t.root, "vol")
    if os.path.ismount(vol):
        subprocess.run(["umount", "-l", vol])


# ---------------------------------------------------------------- log


def log_dev_full(t):
    link = os.path.join(t.tmp, t.engine + "-full-access.log")
    real = os.path.join(t.tmp, t.engine + "-real-access.log")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink("/dev/full", link)
    srv = start(t, "logfull", args=["--access-log", link])
    n = 10 if SMALL else 30
    res = batch(t, srv, n)
    st.check(res == {"ok": n}, "with the log on /dev/full: %s" % dict(res))
    fails = [ln for ln in server_lines(srv) if "access log" in ln]
    st.check(len(fails) == 1 and "No space left on device" in fails[0],
             "want one report of the full log: %s" % fails)
    # Rotate onto a working file: SIGHUP reopens the path.
    os.unlink(link)
    os.symlink(real, link)
    srv.send_signal(signal.SIGHUP)
    wait_stderr(srv, r"kite-serve: reloaded", "reload")
    st.get(srv, "/small.txt")
    deadline = time.monotonic() + st.WAIT
    while not (os.path.exists(real) and open(real).read().count("\n") >= 1):
        st.check(time.monotonic() < deadline, "nothing logged after SIGHUP")
        time.sleep(0.02)
    wait_stderr(srv, r"access log \S+: writing again \(\d+ line\(s\) lost\)", "recovery note")
    stop_clean(srv, "log /dev/full")


def log_tmpfs(t):
    mnt = os.path.join(t.tmp, t.engine + "-tinyfs")
    os.makedirs(mnt, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "kite-faults", mnt],
                                           capture_output=True).returncode:
        print("  (skipped: cannot mount a tmpfs here)")
        return "skipped"
    srv = None
    try:
        log = os.path.join(mnt, "access.log")
        filler = os.path.join(mnt, "filler")
        srv = start(t, "logtmpfs", args=["--access-log", log])
        # Fill the file system.
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"x" * 4096)
            except OSError:
                pass
        res = batch(t, srv, 10)
        st.check(res == {"ok": 10}, "with the log's disk full: %s" % dict(res))
        wait_stderr(srv, r"access log \S+: write failed: No space left on device", "ENOSPC report")
        os.unlink(filler)
        st.get(srv, "/small.txt")
        wait_stderr(srv, r"access log \S+: writing again", "recovery note")
        fails = [ln for ln in server_lines(srv) if "write failed" in ln]
        st.check(len(fails) == 1, "reported %d times" % len(fails))
        stop_clean(srv, "log tmpfs")
    finally:
        if srv:
            srv.kill()
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def group_log(t):
    t.step("log /dev/full", log_dev_full, t)
    step(t, "log full tmpfs", log_tmpfs, t)


# ---------------------------------------------------------------- ktls (UML)

# errno and its kite_strerror() text in the fallback reason.
KTLS_ERRNOS = [("ENOENT", "not found"), ("ENOMEM", "out of memory"), ("EBUSY", "Device or resource busy"),
               ("EINVAL", "invalid argument"), ("EOPNOTSUPP", "kernel TLS offload not possible")]


def ktls_fallback(t, target):
    # One rule per errno, each failing the first call that reaches it:
    # the first connections see ENOENT, ENOMEM, ... in turn.
    rules = ";".join("setsockopt.%s=%s@1" % (target, e) for e, _ in KTLS_ERRNOS)
    srv = start(t, "ktls-" + target, rules)
    for i in range(len(KTLS_ERRNOS) + 2):
        p = PATHS[i % len(PATHS)] if i % 2 else "f%d.bin" % ((1 << 20) + 123)
        kind, _, _ = fetch(srv, p, t.files[p])
        st.check(kind == "ok", "%s connection %d: %s" % (target, i, kind))
    lines = srv.wait_log(len(KTLS_ERRNOS) + 2)
    states = collections.Counter(re.search(r" ktls=(\S+) ", ln).group(1) for ln in lines)
    want = {"TLS_TX": "rx", "TLS_RX": "tx", "TCP_ULP": "off"}[target]
    if target == "TCP_ULP":
        # Each direction attaches the ULP if the other has not: one
        # connection may use up two rules.
        st.check(states[want] >= 1, "%s failing: log states %s, want some ktls=%s" %
                 (target, dict(states), want))
    else:
        # One failed setsockopt per connection: five fall back, then all
        # are offloaded both ways.
        st.check(states == {want: len(KTLS_ERRNOS), "tx+rx": 2},
                 "%s failing: log states %s, want ktls=%s x%d then tx+rx" %
                 (target, dict(states), want, len(KTLS_ERRNOS)))
    st.check(states["tx+rx"] >= 1, "%s: no connection offloaded once the faults were used up: %s" %
             (target, dict(states)))
    m = metrics(srv)
    reasons = " ".join(k for k in m if k.startswith("kite_ktls_fallbacks_total"))
    for e, text in KTLS_ERRNOS:
        st.check(text in reasons, "%s %s: fallback reason not in /metrics: %s" % (target, e, reasons))
    stop_clean(srv, "ktls " + target)
    return "log: %s" % dict(states)


def ktls_require(t):
    srv = start(t, "ktls-require", "setsockopt.TLS_TX=ENOMEM@1", args=["--ktls", "require"])
    kind, status, body = fetch(srv, "small.txt", t.files["small.txt"])
    # TLS 1.3: the client may finish its handshake before the server
    # drops the connection; either way no response.
    st.check(kind in ("refused", "cut") and not status and not body,
             "--ktls require with TLS_TX failing: %s %s" % (kind, status))
    kind, _, _ = fetch(srv, "small.txt", t.files["small.txt"])
    st.check(kind == "ok", "--ktls require, next connection: %s" % kind)
    m = metrics(srv)
    st.check(closed(m, "offload_required") >= 1, "closed{kind=offload_required} not counted")
    stop_clean(srv, "ktls require")


def group_ktls(t):
    if not KTLS:
        print("  (kernel TLS not offloaded here: setsockopt(SOL_TLS) faults need UML)")
        return
    for target in ("TLS_TX", "TLS_RX", "TCP_ULP"):
        step(t, "ktls %s fails" % target, ktls_fallback, t, target)
    t.step("ktls require", ktls_require, t)


# ---------------------------------------------------------------- main

GROUPS = {"io": group_io, "transient": group_transient, "leaks": group_leaks,
          "accept": group_accept, "emfile": group_emfile, "malloc": group_malloc,
          "files": group_files, "log": group_log, "ktls": group_ktls}
ORDER = ["ktls", "io", "transient", "accept", "files", "log", "emfile", "malloc", "leaks"]


def kernel_offloads():
    """Does this kernel offload TLS? (tls module loaded; UML loads it.)"""
    return os.path.exists("/proc/net/tls_stat") or os.environ.get("KITE_REQUIRE_KTLS") == "1"


def main():
    global st, KTLS, SMALL, PATHS, HTTP2
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kite-serve", required=True, help="the kite-serve-faults binary")
    ap.add_argument("--serve-test", required=True, help="tests/serve/serve_test.py")
    ap.add_argument("--engine", action="append", choices=["uring", "epoll"],
                    help="engine rung(s) (KITE_ENGINE); default uring")
    ap.add_argument("--http2", action="store_true",
                    help="requests over HTTP/2 (io, transient, leaks, accept, malloc, ktls)")
    ap.add_argument("groups", nargs="*", help="default: all (%s)" % " ".join(ORDER))
    args = ap.parse_args()
    HTTP2 = args.http2
    for g in args.groups:
        if g not in GROUPS:
            ap.error("unknown group %s" % g)
    sys.path.insert(0, os.path.dirname(os.path.abspath(args.serve_test)))
    sys.path.append("/usr/lib/python3/dist-packages")  # Debian's python3-h2 / hpack
    import serve_test
    st = serve_test
    if not os.path.exists(args.kite_serve):
        print("kite-serve-faults not built: %s" % args.kite_serve)
        return 77
    KTLS = kernel_offloads()
    SMALL = st.IN_UML
    engines = args.engine or ["uring"]
    ns = argparse.Namespace(kite_serve=args.kite_serve, engine=engines[0])
    t = st.Test(ns)
    t.real_serve = t.kite_serve
    groups = [g for g in ORDER if not args.groups or g in args.groups]
    print("kite-serve fault tests: %s; engines %s; kernel TLS %s" %
          (" ".join(groups), ",".join(engines), "offloaded" if KTLS else "not offloaded (host)"))
    def on(engine, group):
        def run(t):
            t.engine = engine
            GROUPS[group](t)
        return run
    return t.run([("[%s] %s" % (e, g), on(e, g), t) for e in engines for g in groups])


if __name__ == "__main__":
    sys.exit(main())
