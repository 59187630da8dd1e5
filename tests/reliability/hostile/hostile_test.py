#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""kite-serve against hostile TLS peers, on the host and inside UML.

Every case ends one or more bad connections and then asserts, besides its
own outcome:
  - the bad connection ended within a bound (timeouts here are short),
  - kite-serve is alive and serves GET /small.txt byte-exact right after,
  - its open descriptors (/proc/PID/fd) return to the count it had before
    any connection once the bad ones are gone.

Cases (the first column names them for --cases):
  garbage     random bytes, a plain HTTP request, an SSLv2 hello, a record
              header claiming 64 KiB and an 18433-byte handshake record
              where a ClientHello belongs: ended at once (not by the
              handshake timeout), counted as failed handshakes
  truncated   a ClientHello cut in half, a whole one and then the end of
              the client's data, and a reset (SO_LINGER 0) mid-handshake
  slowloris   a ClientHello dripped a byte every 0.3 s is cut at
              --handshake-timeout from the connection's start; a request
              head dripped byte by byte gets 408 at --header-timeout
  fallback    TLS 1.2 with only CBC-SHA suites (--priority NORMAL): served
              byte-exact through userspace records, logged ktls=off while
              an AES-GCM connection to the same server gets ktls=tx+rx in UML
  badtag      evil-peer flips a bit of an application record's tag after
              the handshake (kTLS RX in UML: EBADMSG): no answer to it, the
              connection ends, counted as a TLS error; TLS 1.2 and 1.3
  oversize    evil-peer writes a record header of 18000 bytes and that many
              bytes after the handshake: the connection ends
  reset       a 64 MiB download (more than the socket buffers hold, also
              in UML) cut by the client's reset after 256 KiB: counted as
              a reset, the access log shows the body bytes that reached the
              kernel (fewer than the file, and no more than the buffers
              held), a complete answer logs its whole body
  halfclose   the client ends its TCP side (FIN, no close_notify) after a
              Connection: close request: the whole response still arrives;
              close_notify right after a request: answered, then closed
  flood       10000 pipelined GETs (1000 in UML; 3000 and 500 in the quick
              run, KITE_TEST_SIZE not "full") in big writes, read back
              in order while the server's RSS stays flat; 100000 requests
              written without reading answers: the server stops reading
              (received bytes plateau far below what was written, RSS flat)

Where kite-serve says what happened: /metrics (kite_connections_closed_total
by kind) and the access log; it writes nothing on stderr for a peer's
misdeeds. Under AddressSanitizer (its quarantine keeps freed memory) RSS is
not checked. Exit status: 0 pass, 1 fail, 77 skip.
"""

import argparse
import os
import random
import re
import select
import socket
import ssl
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "serve"))
import serve_test as st  # noqa: E402
from serve_test import check, Fail, IN_UML, REQUIRE_KTLS, WAIT  # noqa: E402

# How long a bad connection may take to end when nothing but the hostile
# input ends it (the servers' own timers are 10 s unless a case sets them).
BOUND = 8.0 if IN_UML else 4.0
# Slack on top of a timer the server is expected to enforce.
SLACK = 4.0 if IN_UML else 1.5
HS_TIMEOUT = 2.0
HDR_TIMEOUT = 1.5
# The quick run (serve_test.sized) pipelines fewer; the flood stays whole:
# it must exceed what kite-serve buffers before it stops reading.
PIPELINED = st.sized(500, 1000) if IN_UML else st.sized(3000, 10000)
FLOOD = 100000
RSS_GROWTH_KIB = 6 << 10


# ---------------------------------------------------------------- observing the server


def fd_count(srv):
    return len(os.listdir("/proc/%d/fd" % srv.p.pid))


def rss_kib(srv):
    with open("/proc/%d/status" % srv.p.pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise Fail("no VmRSS for pid %d" % srv.p.pid)


def rss_bounded(t, rss0, peak, what):
    if t.asan:
        # Its quarantine keeps freed memory: RSS says nothing there.
        print("  (%s: RSS not checked under AddressSanitizer)" % what)
        return
    check(peak - rss0 < RSS_GROWTH_KIB, "%s: RSS grew %d KiB" % (what, peak - rss0))


def closed_kinds(srv):
    m = srv.metrics()
    out = {}
    for k, v in m.items():
        g = re.fullmatch(r'kite_connections_closed_total\{kind="(\w+)"\}', k)
        if g:
            out[g.group(1)] = int(v)
    out["_accepted"] = int(m["kite_connections_accepted_total"])
    out["_received"] = int(m["kite_received_bytes_total"])
    return out


def quiet(srv):
    """Every connection accepted has ended (metrics), then the descriptor
    count is back at the baseline (/proc)."""
    deadline = time.monotonic() + WAIT
    while True:
        k = closed_kinds(srv)
        ended = sum(v for n, v in k.items() if not n.startswith("_"))
        if ended >= k["_accepted"]:
            break
        check(time.monotonic() < deadline,
              "connections never ended: %d accepted, %d ended (%s)" % (k["_accepted"], ended, k))
        time.sleep(0.05)
    while True:
        n = fd_count(srv)
        if n == srv.base_fds:
            break
        # The open-file cache keeps descriptors by design (bounded by
        # --file-cache); scraped after the listing, so the scrape's own
        # connection is not in n.
        cached = int(srv.metrics().get("kite_file_cache_open_fds", 0))
        if n - cached == srv.base_fds:
            break
        check(time.monotonic() < deadline, "descriptors: %d open (%d of them the file cache's), "
              "%d at start: %s" % (n, cached, srv.base_fds,
                                   sorted(os.listdir("/proc/%d/fd" % srv.p.pid))))
        time.sleep(0.05)
    return k


def closed_since(srv, before, kinds, n=1):
    """Wait until n more connections ended with one of kinds; returns the
    kinds that moved."""
    deadline = time.monotonic() + WAIT
    while True:
        now = closed_kinds(srv)
        moved = {k: now.get(k, 0) - before.get(k, 0) for k in now
                 if not k.startswith("_") and now.get(k, 0) != before.get(k, 0)}
        if sum(moved.get(k, 0) for k in kinds) >= n:
            return moved
        check(time.monotonic() < deadline,
              "no connection closed as %s (moved: %s)" % ("/".join(kinds), moved))
        time.sleep(0.05)


def healthy(t, srv):
    """Alive, serves a normal GET right now, descriptors back at baseline."""
    check(srv.alive(), "kite-serve died: exit %s\n%s" % (srv.p.poll(), srv.stderr()[-2000:]))
    hdr, body = st.expect(srv, "/small.txt", 200)
    check(body == t.files["small.txt"], "GET after the hostile peer: wrong body")
    quiet(srv)


# ---------------------------------------------------------------- raw peers


def raw_connect(srv, linger0=False, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(WAIT)
    s.connect((srv.host, srv.port))
    if linger0:
        set_linger0(s)
    return s


def set_linger0(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def rst_close(s):
    """Close with a reset: SO_LINGER {1, 0}."""
    sock = s if type(s) is socket.socket else socket.socket(fileno=os.dup(s.fileno()))
    set_linger0(sock)
    sock.close()
    if sock is not s:
        s.close()


def until_end(s, limit):
    """Read raw bytes until the server ends the connection or limit
    seconds pass: (bytes, 'eof' | 'reset' | 'open', seconds)."""
    t0 = time.monotonic()
    got = b""
    while True:
        left = limit - (time.monotonic() - t0)
        if left <= 0:
            return got, "open", time.monotonic() - t0
        r, _, _ = select.select([s], [], [], left)
        if not r:
            continue
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            return got, "reset", time.monotonic() - t0
        if not b:
            return got, "eof", time.monotonic() - t0
        got += b


def alerts(raw):
    """Plaintext TLS alert records in raw bytes: [(level, description)]."""
    out, i = [], 0
    while i + 5 <= len(raw):
        typ, _, ln = struct.unpack("!BHH", raw[i:i + 5])
        if typ == 21 and ln == 2 and i + 7 <= len(raw):
            out.append((raw[i + 5], raw[i + 6]))
        i += 5 + ln
    return out


def client_hello_bytes(version=None):
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = st.tls_ctx(version).wrap_bio(inc, out)
    try:
        o.do_handshake()
    except ssl.SSLWantReadError:
        pass
    ch = out.read()
    check(len(ch) > 100 and ch[0] == 22, "no ClientHello from OpenSSL: %r" % ch[:20])
    return ch


class Bio:
    """A TLS client whose TLS state lives in memory (ssl.SSLObject) over a
    non-blocking socket: the test decides what goes on the wire and when,
    and can write and read at once from one thread."""

    def __init__(self, srv, ctx=None, rcvbuf=None):
        self.sock = raw_connect(srv, rcvbuf=rcvbuf)
        self.sock.setblocking(False)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = (ctx or st.tls_ctx()).wrap_bio(self.inc, self.out)
        self.wire = bytearray()   # ciphertext not yet in the socket
        self.eof = False          # the server ended TCP
        self.reset = False
        self.notify = False       # the server's close_notify arrived
        self.plain = bytearray()  # plaintext received

    def _gather(self):
        self.wire += self.out.read()

    def push(self, timeout=0.0):
        """Write what is pending into the socket: True once all of it is."""
        self._gather()
        end = time.monotonic() + timeout
        while self.wire:
            try:
                n = self.sock.send(self.wire)
                del self.wire[:n]
                continue
            except BlockingIOError:
                pass
            left = end - time.monotonic()
            if left <= 0:
                return False
            select.select([], [self.sock], [], left)
        return True

    def pull(self, timeout=0.0):
        """Read what the socket has (waiting up to timeout for something),
        decrypt it into self.plain. True if anything arrived."""
        if self.eof:
            return False
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return False
        try:
            b = self.sock.recv(1 << 18)
        except ConnectionResetError:
            b, self.reset = b"", True
        if b:
            self.inc.write(b)
        else:
            self.eof = True
            self.inc.write_eof()
        self._decrypt()
        return True

    def _decrypt(self):
        while not self.notify:
            try:
                d = self.obj.read(1 << 18)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.notify = True
                break
            except (ssl.SSLEOFError, ssl.SSLError):
                break
            if not d:
                self.notify = True
                break
            self.plain += d
        self._gather()

    def handshake(self):
        deadline = time.monotonic() + WAIT
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            self.push(WAIT)
            check(not self.eof, "server ended the connection during the handshake")
            check(time.monotonic() < deadline, "handshake did not finish")
            self.pull(0.2)
        self.push(WAIT)
        return self

    def send(self, data):
        self.obj.write(data)
        return self.push(WAIT)

    def read_until(self, pred, limit):
        end = time.monotonic() + limit
        while not pred() and not self.eof:
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.pull(left)
        return pred()

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------- case: garbage


def ssl2_hello():
    """An SSL 2.0 CLIENT-HELLO (version 0x0002, SSLv2 cipher kinds)."""
    specs = bytes.fromhex("010080" "0700c0" "030080")
    challenge = os.urandom(16)
    body = struct.pack("!BHHHH", 1, 0x0002, len(specs), 0, len(challenge)) + specs + challenge
    return struct.pack("!H", 0x8000 | len(body)) + body


def case_garbage(t, srv):
    rnd = random.Random(7)
    inputs = [
        ("random bytes", bytes(rnd.getrandbits(8) for _ in range(3000))),
        ("plain HTTP to the TLS port", st.req("GET", "/small.txt")),
        ("SSLv2 hello", ssl2_hello()),
        ("record header claiming 65535 bytes", b"\x16\x03\x01\xff\xff"),
        # A handshake record longer than TLS allows (2^14 + 2048 and more).
        ("handshake record of 18433 bytes", b"\x16\x03\x01\x48\x01" + bytes(18433)),
    ]
    for what, raw in inputs:
        before = closed_kinds(srv)
        s = raw_connect(srv)
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        got, how, took = until_end(s, BOUND)
        s.close()
        print("  %-36s %s after %.2fs%s" % (what, how, took,
                                            " alerts %s" % alerts(got) if got else ""))
        check(how != "open", "%s: connection still open after %.1fs" % (what, BOUND))
        check(not got or alerts(got) and len(got) == 7 * len(alerts(got)),
              "%s: answered with something else than an alert: %r" % (what, got[:64]))
        moved = closed_since(srv, before, ["handshake"])
        check(set(moved) == {"handshake"}, "%s: closed as %s" % (what, moved))
        healthy(t, srv)


# ---------------------------------------------------------------- case: truncated


def case_truncated(t, srv):
    ch = client_hello_bytes()
    # Half a ClientHello, then the client ends its side: the server must
    # notice the end, not wait for the rest until its timer.
    for what, how_close in (("half a ClientHello, FIN", "fin"),
                            ("half a ClientHello, close", "close"),
                            ("half a ClientHello, reset", "rst")):
        before = closed_kinds(srv)
        s = raw_connect(srv)
        t0 = time.monotonic()
        s.sendall(ch[:len(ch) // 2])
        if how_close == "fin":
            s.shutdown(socket.SHUT_WR)
            got, how, took = until_end(s, BOUND)
            s.close()
            check(how != "open", "%s: still open after %.1fs" % (what, BOUND))
            check(not got or alerts(got), "%s: got %r" % (what, got[:40]))
        elif how_close == "close":
            s.close()
        else:
            rst_close(s)
        closed_since(srv, before, ["handshake"])
        took = time.monotonic() - t0
        print("  %-36s ended after %.2fs" % (what, took))
        check(took < BOUND, "%s: the server took %.1fs to notice" % (what, took))
        healthy(t, srv)

    # A whole ClientHello, read the server's flight, then end.
    for what, how_close in (("ClientHello, then FIN", "fin"),
                            ("ClientHello, then close", "close"),
                            ("ClientHello, then reset", "rst")):
        before = closed_kinds(srv)
        s = raw_connect(srv)
        t0 = time.monotonic()
        s.sendall(ch)
        first = s.recv(5)
        check(first[:1] == b"\x16", "%s: no ServerHello: %r" % (what, first))
        if how_close == "fin":
            s.shutdown(socket.SHUT_WR)
            got, how, took = until_end(s, BOUND)
            s.close()
            check(how != "open", "%s: still open after %.1fs" % (what, BOUND))
        elif how_close == "close":
            s.close()
        else:
            rst_close(s)
        closed_since(srv, before, ["handshake"])
        took = time.monotonic() - t0
        print("  %-36s ended after %.2fs" % (what, took))
        check(took < BOUND, "%s: the server took %.1fs to notice" % (what, took))
        healthy(t, srv)


# ---------------------------------------------------------------- case: slowloris


def case_slowloris(t, slow):
    # A ClientHello a byte at a time: cut at --handshake-timeout counted
    # from the connection's start, however steadily bytes come.
    ch = client_hello_bytes()
    before = closed_kinds(slow)
    t0 = time.monotonic()
    s = raw_connect(slow)
    sent, how = 0, "open"
    while sent < len(ch) and time.monotonic() - t0 < HS_TIMEOUT + SLACK + 2:
        try:
            s.sendall(ch[sent:sent + 1])
            sent += 1
        except (BrokenPipeError, ConnectionResetError):
            how = "reset"
            break
        _, how, _ = until_end(s, 0.3)
        if how != "open":
            break
    took = time.monotonic() - t0
    s.close()
    print("  ClientHello dripped: %s after %.2fs, %d of %d bytes" % (how, took, sent, len(ch)))
    check(how != "open", "dripped handshake never cut (%.1fs)" % took)
    check(HS_TIMEOUT - 0.2 <= took <= HS_TIMEOUT + SLACK,
          "dripped handshake cut after %.2fs, want %.1fs from the start" % (took, HS_TIMEOUT))
    closed_since(slow, before, ["handshake"])
    healthy(t, slow)

    # A request head a byte every 0.1 s: 408 at --header-timeout from its
    # first byte, not from the last.
    head = st.req("GET", "/small.txt", [("User-Agent", "hostile-drip"), ("X-Pad", "p" * 100)])
    lines = len(slow.log_lines())
    b = Bio(slow).handshake()
    t0 = time.monotonic()
    sent = 0
    while sent < len(head) and not b.plain and not b.eof:
        check(time.monotonic() - t0 < HDR_TIMEOUT + SLACK + 2, "dripped head never cut")
        b.send(head[sent:sent + 1])
        sent += 1
        b.read_until(lambda: b.plain, 0.1)
    b.read_until(lambda: b.notify, WAIT)
    took = time.monotonic() - t0
    b.close()
    got = bytes(b.plain)
    r = st.parse(got)
    print("  request head dripped: %s after %.2fs, %d of %d bytes" %
          ([x[0] for x in r], took, sent, len(head)))
    check(len(r) == 1 and r[0][0] == 408, "dripped head: %s" % [x[0] for x in r])
    check(r[0][1]["connection"] == "close", "408 keeps the connection")
    check(HDR_TIMEOUT - 0.2 <= took <= HDR_TIMEOUT + SLACK,
          "408 after %.2fs, want %.1fs from the first byte" % (took, HDR_TIMEOUT))
    check(sent < len(head), "the whole head went out before the 408")
    log = slow.wait_log(lines + 1)[lines:]
    check(any('" 408 ' in ln for ln in log), "no 408 in the access log: %s" % log)
    healthy(t, slow)


# ---------------------------------------------------------------- case: fallback


def case_fallback(t, cbc):
    ctx = st.tls_ctx("1.2")
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")
    name = "f%d.bin" % ((1 << 20) + 123)
    s = st.connect(cbc, ctx)
    cipher = s.cipher()
    version = s.version()
    s.sendall(st.req("GET", "/" + name, [("User-Agent", "hostile-cbc")], close=False) +
              st.req("GET", "/f16385.bin", [("User-Agent", "hostile-cbc")]))
    r = st.parse(st.read_all(s))
    s.close()
    print("  negotiated %s %s" % (version, cipher[0]))
    check(version == "TLSv1.2" and cipher[0].endswith("-SHA"), "not a CBC suite: %s %s" %
          (version, cipher))
    check(len(r) == 2 and r[0][0] == 200 and r[0][2] == t.files[name], "CBC: %s" % name)
    check(r[1][0] == 200 and r[1][2] == t.files["f16385.bin"], "CBC: second response")
    # The same server, a suite the kernel takes: offloaded in UML.
    r = st.ask(cbc, st.req("GET", "/" + name, [("User-Agent", "hostile-gcm")]))
    check(r[0][0] == 200 and r[0][2] == t.files[name], "GCM on the NORMAL server")
    lines = cbc.wait_log(3)
    cbc_lines = [ln for ln in lines if "hostile-cbc" in ln]
    gcm_lines = [ln for ln in lines if "hostile-gcm" in ln]
    check(len(cbc_lines) == 2 and len(gcm_lines) == 1, "log lines: %s" % lines)
    for ln in cbc_lines:
        m = re.search(r" (TLS1\.2) (\S+) ktls=(\S+) resumed=0$", ln)
        check(m and "CBC" in m.group(2) and m.group(3) == "off", "CBC log line: %s" % ln)
    print("  log: %s | %s" % (cbc_lines[0].split('" ')[-1], gcm_lines[0].split('" ')[-1]))
    if REQUIRE_KTLS:
        check(gcm_lines[0].endswith("ktls=tx+rx resumed=0"), "GCM not offloaded: %s" % gcm_lines[0])
    m = cbc.metrics()
    reasons = [k for k in m if k.startswith("kite_ktls_fallbacks_total")]
    check(reasons, "no fallback reason in /metrics")
    healthy(t, cbc)


# ---------------------------------------------------------------- case: badtag, oversize


def evil(t, srv, mode, version):
    p = subprocess.run([t.evil_peer, "--host", srv.host, "--port", str(srv.port), "--mode", mode,
                        "--version", version, "--timeout", str(int(WAIT))],
                       capture_output=True, text=True, timeout=WAIT * 2)
    out = dict(ln.split(" ", 1) for ln in p.stdout.splitlines() if " " in ln)
    return p, out


def case_badtag(t, srv):
    for version in ("1.3", "1.2"):
        before = closed_kinds(srv)
        lines = len(srv.log_lines())
        p, out = evil(t, srv, "badtag", version)
        print("  TLS%s bad tag: %s after %ss (%s)" % (version, out.get("outcome"),
                                                       out.get("seconds"), out.get("detail", "")))
        check(p.returncode == 0, "evil-peer badtag TLS%s: exit %d\n%s%s" %
              (version, p.returncode, p.stdout, p.stderr))
        check(out.get("first") == "200", "the request before the corruption: %s" % out)
        check(out.get("outcome") in ("alert", "eof", "reset"), "outcome %s" % out)
        check(float(out["seconds"]) < BOUND, "bad tag: ended after %ss" % out["seconds"])
        moved = closed_since(srv, before, ["tls"])
        check(set(moved) == {"tls"}, "closed as %s" % moved)
        log = srv.wait_log(lines + 1)[lines:]
        check(len(log) == 1 and "evil-first" in log[0], "log: only the first request: %s" % log)
        if REQUIRE_KTLS:
            check(log[0].endswith("ktls=tx+rx resumed=0"), "not offloaded: %s" % log[0])
        healthy(t, srv)


def case_oversize(t, srv):
    for version in ("1.3", "1.2"):
        before = closed_kinds(srv)
        p, out = evil(t, srv, "oversize", version)
        print("  TLS%s 18000-byte record: %s after %ss (%s)" %
              (version, out.get("outcome"), out.get("seconds"), out.get("detail", "")))
        check(p.returncode == 0, "evil-peer oversize TLS%s: exit %d\n%s%s" %
              (version, p.returncode, p.stdout, p.stderr))
        check(out.get("outcome") in ("alert", "eof", "reset"), "outcome %s" % out)
        check(float(out["seconds"]) < BOUND, "oversize: ended after %ss" % out["seconds"])
        moved = closed_since(srv, before, ["tls", "overflow"])
        print("    closed as %s" % moved)
        check(set(moved) <= {"tls", "overflow"}, "closed as %s" % moved)
        healthy(t, srv)


# ---------------------------------------------------------------- case: reset mid-body


def case_reset(t, srv):
    # 64 MiB (of holes): more than the socket buffers on both ends hold,
    # so the server is still sending when the reset comes (BIG, 2 MiB in
    # UML, fits in them).
    name = "sparse.bin"
    size = 64 << 20
    before = closed_kinds(srv)
    lines = len(srv.log_lines())
    raw = raw_connect(srv, rcvbuf=65536)
    s = st.tls_ctx().wrap_socket(raw)
    s.sendall(st.req("GET", "/" + name, [("User-Agent", "hostile-rst")]))
    got = b""
    while len(got) < 256 << 10:
        b = s.recv(65536)
        check(b, "closed after %d bytes" % len(got))
        got += b
    check(got.startswith(b"HTTP/1.1 200 "), "no 200: %r" % got[:40])
    rst_close(s)
    moved = closed_since(srv, before, ["reset"])
    print("  reset after %d KiB of %d: closed as %s" % (len(got) >> 10, size >> 10, moved))
    log = srv.wait_log(lines + 1)[lines:]
    check(len(log) == 1 and "hostile-rst" in log[0], "log: %s" % log)
    m = re.search(r'" (\d{3}) (\d+|-) "', log[0])
    check(m, "log line: %s" % log[0])
    sent = 0 if m.group(2) == "-" else int(m.group(2))
    print("  log: %s" % log[0].split("] ")[1])
    check(m.group(1) == "200" and 0 < sent < size,
          "the access log should say how much of the %d bytes went out before the reset: %s" %
          (size, log[0]))
    # What the socket buffers held, not more: the reset stops the sending
    # (a kTLS socket takes spliced bytes even after a reset).
    check(sent < 16 << 20, "%d bytes pushed into a reset connection" % sent)
    healthy(t, srv)
    # A complete answer still logs its whole body.
    ok = srv.wait_log(lines + 2)[-1]
    check('"GET /small.txt HTTP/1.1" 200 %d ' % len(t.files["small.txt"]) in ok,
          "log line of a complete answer: %s" % ok)


# ---------------------------------------------------------------- case: half-closed


def case_halfclose(t, srv):
    # (a) The request, Connection: close, then FIN without close_notify:
    # the answer still arrives whole (HTTP frames it; the request was
    # complete).
    for name in ("small.txt", "f%d.bin" % ((1 << 20) + 123)):
        lines = len(srv.log_lines())
        s = st.connect(srv)
        s.sendall(st.req("GET", "/" + name, [("User-Agent", "hostile-fin")]))
        tcp = socket.socket(fileno=os.dup(s.fileno()))
        tcp.shutdown(socket.SHUT_WR)
        tcp.close()
        t0 = time.monotonic()
        try:
            got = st.read_all(s)
        except ssl.SSLError as e:
            raise Fail("FIN after the request: %s" % e)
        took = time.monotonic() - t0
        s.close()
        r = st.parse(got)
        print("  FIN after GET /%s: %s in %.2fs" % (name, [(x[0], len(x[2])) for x in r], took))
        check(len(r) == 1 and r[0][0] == 200 and r[0][2] == t.files[name],
              "FIN after GET /%s: the answer did not arrive whole" % name)
        check(took < BOUND, "took %.1fs" % took)
        log = srv.wait_log(lines + 1)[lines:]
        check(any("hostile-fin" in ln and '" 200 ' in ln for ln in log), "log: %s" % log)
        healthy(t, srv)

    # (b) close_notify right after a keep-alive request: the request is
    # answered (RFC 8446 6.1 closes only the client's direction), then the
    # server sends its close_notify and ends.
    lines = len(srv.log_lines())
    b = Bio(srv).handshake()
    b.send(st.req("GET", "/f16385.bin", [("User-Agent", "hostile-notify")], close=False))
    t0 = time.monotonic()
    try:
        b.obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    b.push(WAIT)
    b.read_until(lambda: b.notify or b.eof, BOUND)
    took = time.monotonic() - t0
    b.close()
    got = bytes(b.plain)
    print("  close_notify after a GET: %d bytes, then %s in %.2fs" %
          (len(got), "close_notify" if b.notify else "eof" if b.eof else "nothing", took))
    check(b.notify or b.eof, "no end within %.1fs after close_notify" % BOUND)
    r = st.parse(got)
    check(len(r) == 1 and r[0][0] == 200 and r[0][2] == t.files["f16385.bin"],
          "close_notify after GET: %s" % [x[0] for x in r])
    log = srv.wait_log(lines + 1)[lines:]
    check(any("hostile-notify" in ln for ln in log), "log: %s" % log)
    healthy(t, srv)


# ---------------------------------------------------------------- case: flood


def case_flood(t, srv):
    # Pipelined GETs written in 64 KiB pieces while the answers are read.
    one = st.req("GET", "/small.txt", close=False)
    last = st.req("GET", "/f5000.bin")
    want_small, want_last = t.files["small.txt"], t.files["f5000.bin"]
    payload = one * (PIPELINED - 1) + last
    rss0 = rss_kib(srv)
    peak = rss0
    b = Bio(srv).handshake()
    t0 = time.monotonic()
    off, step = 0, 64 << 10
    end = time.monotonic() + WAIT * 3
    while not b.eof:
        if off < len(payload) and len(b.wire) < step:
            b.obj.write(payload[off:off + step])
            off += step
        b.push(0)
        b.pull(0.05 if off >= len(payload) and not b.wire else 0)
        peak = max(peak, rss_kib(srv))
        check(time.monotonic() < end, "pipelined flood: only %d bytes back after %ds" %
              (len(b.plain), WAIT * 3))
    took = time.monotonic() - t0
    b.close()
    r = st.parse(bytes(b.plain))
    print("  %d pipelined GETs: %d answers in %.1fs, RSS %d -> peak %d KiB" %
          (PIPELINED, len(r), took, rss0, peak))
    check(len(r) == PIPELINED, "%d answers for %d requests" % (len(r), PIPELINED))
    for i, (code, hdr, body) in enumerate(r[:-1]):
        if code != 200 or body != want_small:
            raise Fail("answer %d: %d, %d bytes" % (i, code, len(body)))
    check(r[-1][0] == 200 and r[-1][2] == want_last, "last answer out of order")
    rss_bounded(t, rss0, peak, "pipelined flood")
    healthy(t, srv)

    # Requests written without reading a single answer: the server must
    # stop reading them (its answers have nowhere to go) rather than
    # buffer them.
    before = closed_kinds(srv)
    rss0 = rss_kib(srv)
    peak = rss0
    b = Bio(srv, rcvbuf=65536).handshake()
    payload = one * FLOOD
    off, stalled_since = 0, None
    t0 = time.monotonic()
    while off < len(payload) or b.wire:
        if off < len(payload) and len(b.wire) < step:
            b.obj.write(payload[off:off + step])
            off += step
        n = len(b.wire)
        try:
            b.push(0.1)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Fail("the server ended the flooding connection: %s (closed: %s)" %
                       (e, {k: v - before.get(k, 0) for k, v in closed_kinds(srv).items()
                            if v != before.get(k, 0)}))
        peak = max(peak, rss_kib(srv))
        if len(b.wire) == n and n:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 1.5:
                break
        else:
            stalled_since = None
        check(time.monotonic() - t0 < WAIT * 2, "flood still being read after %ds" % (WAIT * 2))
    written = off - len(b.wire)
    # The server answers into its socket buffers until they are full,
    # reading as it goes; then it must stop: received bytes plateau.
    samples = [closed_kinds(srv)["_received"] - before["_received"]]
    while len(samples) < 3 or samples[-1] != samples[-3]:
        check(time.monotonic() - t0 < WAIT * 2, "the server never stopped reading: %s" % samples)
        time.sleep(0.5)
        samples.append(closed_kinds(srv)["_received"] - before["_received"])
        peak = max(peak, rss_kib(srv))
    got = samples[-1]
    print("  %d requests unread: %d KiB written, the server read %d KiB and stopped; "
          "RSS %d -> peak %d KiB" % (FLOOD, written >> 10, got >> 10, rss0, peak))
    check(srv.alive(), "kite-serve died during the flood")
    check(got < written // 2, "the server read %d of %d bytes" % (got, written))
    rss_bounded(t, rss0, peak, "unread flood")
    now = closed_kinds(srv)
    check(sum(v for k, v in now.items() if not k.startswith("_")) ==
          sum(v for k, v in before.items() if not k.startswith("_")),
          "the server ended the flooding connection")
    # Still alive and open on the server's side: a reset ends it now.
    rst_close(b.sock)
    closed_since(srv, before, ["reset", "tls", "other"])
    healthy(t, srv)


# ---------------------------------------------------------------- main


CASES = ["garbage", "truncated", "slowloris", "fallback", "badtag", "oversize", "reset",
         "halfclose", "flood"]


def start(t, name, args=()):
    srv = st.Server(t, name, ["--metrics-listen", "127.0.0.1:0"] + list(args))
    # Every descriptor the server holds with no connection: listeners,
    # engines, pipe pools, the access log.
    srv.base_fds = fd_count(srv)
    return srv


def run(t, cases):
    srv = start(t, "hostile")
    healthy(t, srv)
    slow = cbc = None
    for c in cases:
        if c == "slowloris":
            slow = slow or start(t, "slow", ["--handshake-timeout", str(HS_TIMEOUT),
                                             "--header-timeout", str(HDR_TIMEOUT)])
            t.step(c, case_slowloris, t, slow)
        elif c == "fallback":
            cbc = cbc or start(t, "cbc", ["--priority", "NORMAL"])
            t.step(c, case_fallback, t, cbc)
        else:
            t.step(c, globals()["case_" + c], t, srv)
    for s in (srv, slow, cbc):
        if s:
            check(s.alive(), "kite-serve died: %s" % s.stderr()[-2000:])
            check(s.stop() == 0, "exit status")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kite-serve", required=True)
    ap.add_argument("--evil-peer", required=True)
    ap.add_argument("--engine", choices=["uring", "uring-basic", "epoll"],
                    help="force the engine rung (KITE_ENGINE)")
    ap.add_argument("--cases", nargs="+", choices=CASES, default=CASES)
    args = ap.parse_args()
    for p in (args.kite_serve, args.evil_peer):
        if not os.path.exists(p):
            print("not built: %s" % p)
            return 77
    t = st.Test(args)
    t.evil_peer = os.path.abspath(args.evil_peer)
    with open(t.kite_serve, "rb") as f:
        t.asan = b"__asan_init" in f.read()
    print("hostile peers: %s%s%s" % (" ".join(args.cases),
                                      " engine=" + args.engine if args.engine else "",
                                      " (kTLS required)" if REQUIRE_KTLS else ""))
    return t.run([("hostile", run, t, args.cases)])


if __name__ == "__main__":
    sys.exit(main())
