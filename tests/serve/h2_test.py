#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""kite-serve over HTTP/2 (ALPN h2), on the host and inside UML.

Groups (each starts its own kite-serve processes, see serve_test.py):

  ktls      a 64 MiB file and 100 small ones over one h2 connection, every
            hash exact; with kernel TLS (UML, KITE_REQUIRE_KTLS=1) the 64 MiB
            go the ktls-splice path behind their frame headers and
            /proc/net/tls_stat moves; without it (the host) everything goes
            as userspace records, nothing spliced

  curl      curl --http2: every status kite-serve answers, Range, HEAD,
            conditionals, --parallel many files over one connection; the
            access log says HTTP/2.0 and the stream; ALPN: no ALPN and
            --http2 off give HTTP/1.1
  browser   headless Chromium loads the index page over h2 (the access log
            says HTTP/2.0), when chromium is installed
  tools     h2load and nghttp (nghttp2-client): every response 2xx, counts
            exact, bodies byte for byte
  frames    Python h2: many streams at once and a small response not stuck
            behind a 64 MiB one, flow control with a small window, frames
            within the client's MAX_FRAME_SIZE, PING, RST_STREAM frees the
            stream (the connection goes on), SIGTERM: GOAWAY with the last
            stream id while that stream finishes
  hostile   every defence: rapid reset, CONTINUATION flood, oversized header
            list (431) and an HPACK bomb, SETTINGS / PING / empty DATA /
            WINDOW_UPDATE floods, a window that never opens, stream-id
            exhaustion (--h2-max-requests), a preface that is not HTTP/2:
            each gets GOAWAY with its code and its /metrics counter moves,
            while another connection is served throughout

Bodies are compared byte for byte. Exit status: 0 pass, 1 fail, 77 skip.
"""

import argparse
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_test as st  # noqa: E402
from serve_test import Fail, Server, check  # noqa: E402

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings
    import h2.errors
except ImportError:
    # Debian's python3-h2 lives in the system interpreter's path.
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import h2.config
        import h2.connection
        import h2.events
        import h2.settings
        import h2.errors
    except ImportError:
        h2 = None

WAIT = st.WAIT
BIGFILE = "sparse.bin"  # 64 MiB of zeros (a hole): more than any window


def need_h2():
    if h2 is None:
        if st.ALLOW_MISSING:
            print("  skip: python3-h2 missing")
            return False
        raise Fail("python3-h2 missing (apt-get install python3-h2)")
    return True


def curl2(args):
    return subprocess.run(["curl", "-sS", "-k", "--http2"] + args, capture_output=True,
                          timeout=WAIT * 3, env=st.tool_env())


def url(srv, path=""):
    return "https://127.0.0.1:%d/%s" % (srv.port, path)


H2_LINE = re.compile(r'"(\S+) (\S+) HTTP/2\.0" (\d{3}) (\d+|-) .* stream=(\d+) (TLS1\.[23]) '
                     r'(\S+) ktls=(\S+) resumed=[01]$')


def h2_lines(srv):
    return [m for m in (H2_LINE.search(ln) for ln in srv.log_lines()) if m]


def check_h2_ktls(srv):
    lines = h2_lines(srv)
    check(lines, "no HTTP/2.0 lines in the access log")
    if st.REQUIRE_KTLS:
        for m in lines:
            check(m.group(8) == "tx+rx", "kTLS required but: %s" % m.group(0))


# ---------------------------------------------------------------- group: curl


def curl_statuses(t, srv):
    big = t.files["f%d.bin" % st.BIG]
    cases = [  # path, extra args, status, body or None
        ("small.txt", [], 200, t.files["small.txt"]),
        ("empty.txt", [], 200, b""),
        ("", [], 200, t.files["index.html"]),
        ("dir/", [], 200, t.files["dir/index.html"]),
        ("dir", [], 301, None),
        ("nope", [], 404, None),
        ("escape_rel", [], 403, None),
        ("noindex/", [], 403, None),
        ("fifo", [], 403, None),
        ("sock", [], 500, None),
        ("small.txt", ["-X", "POST"], 405, None),
        ("f100000.bin", ["-r", "10-20"], 206, t.files["f100000.bin"][10:21]),
        ("f%d.bin" % st.BIG, ["-r", "1000-70000"], 206, big[1000:70001]),
        ("f%d.bin" % st.BIG, ["-r", "-100"], 206, big[-100:]),
        ("f100000.bin", ["-r", "200000-"], 416, None),
        ("%2e%2e/secret.txt", ["--path-as-is"], 400, None),
    ]
    for path, extra, status, body in cases:
        p = curl2(extra + ["-w", "\n%{http_code} %{http_version}", url(srv, path)])
        out = p.stdout
        got, _, tail = out.rpartition(b"\n")
        check(tail == b"%d 2" % status, "%s %s: %r (%s)" % (path, extra, tail, p.stderr))
        check(st.MARK not in got, "%s leaked the file outside the root" % path)
        if body is not None:
            check(got == body, "%s %s: body differs (%d bytes, want %d)"
                  % (path, extra, len(got), len(body)))
    # HEAD, conditionals.
    p = curl2(["-I", url(srv, "f100000.bin")])
    check(p.stdout.startswith(b"HTTP/2 200") and b"content-length: 100000" in p.stdout,
          "HEAD: %r" % p.stdout)
    check(b"connection:" not in p.stdout.lower(), "connection header over h2")
    et = re.search(rb"etag: (\S+)", p.stdout).group(1).decode()
    p = curl2(["-o", "/dev/null", "-w", "%{http_code}", "-H", "If-None-Match: " + et,
               url(srv, "f100000.bin")])
    check(p.stdout == b"304", "If-None-Match: %r" % p.stdout)
    p = curl2(["-o", "/dev/null", "-w", "%{http_code}", "-z", "Sun, 06 Nov 1994 08:49:37 GMT",
               url(srv, "f100000.bin")])
    check(p.stdout == b"200", "-z old date: %r" % p.stdout)
    p = curl2(["-w", "%{http_code}", "-H", "If-Range: \"other\"", "-r", "0-9",
               url(srv, "f100000.bin")])
    check(p.stdout[-3:] == b"200" and p.stdout[:-3] == t.files["f100000.bin"],
          "If-Range mismatch must give the whole file")


def curl_parallel(t, srv):
    out = os.path.join(t.tmp, "par")
    os.makedirs(out, exist_ok=True)
    # Files up to 1 MiB: curl 7.88 can leave the end of a large body of a
    # --parallel transfer unread in its own buffers (h2load and nghttp
    # get every byte of the same responses, group tools).
    names = [n for n in sorted(t.files) if n.endswith(".bin") and len(t.files[n]) <= 1 << 20] * 8
    args = ["--parallel", "--parallel-max", "64", "-w",
            "%{http_version} %{http_code} %{num_connects}\\n"]
    for i, n in enumerate(names):
        args += ["-o", os.path.join(out, "%d" % i), url(srv, n)]
    before = len(h2_lines(srv))
    p = curl2(args)
    check(p.returncode == 0, "curl --parallel: %s" % p.stderr.decode())
    lines = p.stdout.decode().split("\n")[:-1]
    check(len(lines) == len(names) and all(ln.startswith("2 200") for ln in lines),
          "curl --parallel: %s" % lines[:5])
    # --parallel reuses one h2 connection: one connect among all transfers.
    check(sum(int(ln.split()[2]) for ln in lines) == 1, "more than one connection: %s" % lines)
    for i, n in enumerate(names):
        with open(os.path.join(out, "%d" % i), "rb") as f:
            check(f.read() == t.files[n], "parallel %s differs" % n)
    lines = srv.wait_log(before + len(names))
    got = h2_lines(srv)[before:]
    check(len(got) == len(names), "%d HTTP/2.0 log lines, want %d" % (len(got), len(names)))
    check(len({m.group(5) for m in got}) == len(names), "stream ids repeat in the log")
    check_h2_ktls(srv)


def curl_alpn(t, srv):
    p = curl2(["-o", "/dev/null", "-w", "%{http_version}", "--no-alpn", url(srv, "small.txt")])
    check(p.stdout == b"1.1", "no ALPN: HTTP %r" % p.stdout)
    s = st.connect(srv, st.tls_ctx(alpn=("h2", "http/1.1")))
    check(s.selected_alpn_protocol() == "h2", "ALPN %s" % s.selected_alpn_protocol())
    s.close()
    off = Server(t, "h2off", ["--http2", "off"])
    p = curl2(["-o", "/dev/null", "-w", "%{http_version}", url(off, "small.txt")])
    check(p.stdout == b"1.1", "--http2 off: HTTP %r" % p.stdout)
    off.stop()


def group_curl(t):
    if not st.need("curl"):
        return
    srv = Server(t, "h2curl", ["--metrics-listen", "127.0.0.1:0"])
    t.step("h2 curl statuses", curl_statuses, t, srv)
    t.step("h2 curl parallel", curl_parallel, t, srv)
    t.step("h2 alpn", curl_alpn, t, srv)
    m = srv.metrics()
    check(m.get('kite_http2_requests_total{code="200"}', 0) >= 10, "metrics: h2 200s")
    check(m.get('kite_http2_requests_total{code="404"}', 0) >= 1, "metrics: h2 404")
    check(m["kite_http2_connections_total"] >= 3, "metrics: h2 connections")


# ---------------------------------------------------------------- group: tools


def group_tools(t):
    if not st.need("h2load") or not st.need("nghttp"):
        return
    srv = Server(t, "h2tools", ["--metrics-listen", "127.0.0.1:0"])
    n = 2000
    p = subprocess.run(["h2load", "-n", str(n), "-c", "4", "-m", "10", url(srv, "f5000.bin")],
                       capture_output=True, text=True, timeout=WAIT * 6, env=st.tool_env())
    check(p.returncode == 0, "h2load: %s" % p.stderr)
    check("requests: %d total, %d started, %d done, %d succeeded, 0 failed, 0 errored" %
          (n, n, n, n) in p.stdout, "h2load: %s" % p.stdout)
    check("status codes: %d 2xx, 0 3xx, 0 4xx, 0 5xx" % n in p.stdout, "h2load codes")
    check("%d data" % (n * 5000) in p.stdout.replace("(", "").replace(")", ""),
          "h2load data bytes: %s" % p.stdout)
    big = "f%d.bin" % st.BIG
    p = subprocess.run(["h2load", "-n", "8", "-c", "2", "-m", "4", url(srv, big)],
                       capture_output=True, text=True, timeout=WAIT * 6, env=st.tool_env())
    check("status codes: 8 2xx" in p.stdout and "8 succeeded" in p.stdout, "h2load big: %s" % p.stdout)
    # nghttp: bodies byte for byte (it writes them to stdout in order).
    p = subprocess.run(["nghttp", url(srv, "f16385.bin")], capture_output=True,
                       timeout=WAIT * 3)
    check(p.returncode == 0 and p.stdout == t.files["f16385.bin"], "nghttp body differs")
    p = subprocess.run(["nghttp", "-ns", "-m", "20", url(srv, "f100000.bin")],
                       capture_output=True, text=True, timeout=WAIT * 3)
    check(p.returncode == 0 and p.stdout.count(" 200 ") == 20, "nghttp -m 20: %s" % p.stdout)
    m = srv.metrics()
    check(m['kite_http2_requests_total{code="200"}'] == n + 8 + 21,
          "metrics h2 200s: %s" % m['kite_http2_requests_total{code="200"}'])


# ---------------------------------------------------------------- python h2


class H2:
    """A frame-level HTTP/2 client over one TLS connection."""

    def __init__(self, srv, settings=None, window=None):
        self.s = st.connect(srv, st.tls_ctx(alpn=("h2",)))
        check(self.s.selected_alpn_protocol() == "h2", "no h2")
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.c = h2.connection.H2Connection(cfg)
        self.c.initiate_connection()
        if settings:
            self.c.update_settings(settings)
        self.flush()
        self.bodies, self.headers, self.ended, self.resets = {}, {}, set(), {}
        self.goaway = None
        self.closed = False
        self.frames = []      # (stream, length) of DATA received
        self.pings = 0
        self.auto_ack = True

    def flush(self):
        d = self.c.data_to_send()
        if d:
            self.s.sendall(d)

    def raw(self, b):
        self.s.sendall(b)

    def get(self, path, extra=(), end=True):
        sid = self.c.get_next_available_stream_id()
        hdr = [(":method", "GET"), (":scheme", "https"), (":authority", "kite.test"),
               (":path", "/" + path)] + list(extra)
        self.c.send_headers(sid, hdr, end_stream=end)
        self.flush()
        self.bodies[sid] = bytearray()
        return sid

    def pump(self, timeout=WAIT):
        self.s.settimeout(timeout)
        try:
            b = self.s.recv(1 << 16)
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            b = b""
        if not b:
            self.closed = True
            return False
        for ev in self.c.receive_data(b):
            self.event(ev)
        self.flush()
        return True

    def event(self, ev):
        if isinstance(ev, h2.events.ResponseReceived):
            self.headers[ev.stream_id] = dict(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            self.bodies.setdefault(ev.stream_id, bytearray()).extend(ev.data)
            self.frames.append((ev.stream_id, ev.flow_controlled_length))
            if self.auto_ack and ev.flow_controlled_length:
                self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self.ended.add(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            self.resets[ev.stream_id] = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = (ev.error_code, ev.last_stream_id)
        elif isinstance(ev, h2.events.PingAckReceived):
            self.pings += 1

    def until(self, cond, what, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while not cond():
            check(time.monotonic() < deadline, "timed out waiting for " + what)
            if not self.pump(max(0.05, deadline - time.monotonic())) and self.closed:
                check(cond(), "connection closed before " + what)
                return

    def wait_goaway(self, timeout=WAIT):
        """Read until GOAWAY (and the close after it)."""
        deadline = time.monotonic() + timeout
        while self.goaway is None and not self.closed and time.monotonic() < deadline:
            try:
                self.pump(0.5)
            except h2.exceptions.ProtocolError:
                break
        return self.goaway

    def status(self, sid):
        return int(self.headers[sid][":status"])

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


# ---------------------------------------------------------------- group: frames


def frames_multiplex(t, srv):
    c = H2(srv)
    # Python's h2 reads ~2 MB/s: many streams of the smaller files.
    names = [n for n in sorted(t.files) if n.endswith(".bin") and len(t.files[n]) <= 1 << 20]
    sids = {c.get(n): n for n in names * 4}
    c.until(lambda: all(s in c.ended for s in sids), "all streams")
    for s, n in sids.items():
        check(c.status(s) == 200 and bytes(c.bodies[s]) == t.files[n], "stream %d %s" % (s, n))
    # Fairness: a small file asked after a 64 MiB one arrives while the big
    # one is still far from done.
    big = c.get(BIGFILE)
    c.until(lambda: len(c.bodies[big]) > (1 << 20), "the big body to flow")
    small = c.get("small.txt")
    c.until(lambda: small in c.ended, "the small response")
    check(bytes(c.bodies[small]) == t.files["small.txt"], "small body")
    # The client's windows (64 KiB) bound what of the big body can be in
    # flight: anything near that means the small one did not wait.
    check(len(c.bodies[big]) < (4 << 20), "small response waited for %d bytes of the big one"
          % len(c.bodies[big]))
    check(not any(c.bodies[big]), "big body (zeros)")
    c.c.reset_stream(big)
    c.flush()
    # Frames never exceed the client's SETTINGS_MAX_FRAME_SIZE (16384 here).
    check(max(n for _, n in c.frames) <= 16384, "frame over MAX_FRAME_SIZE")
    c.close()


def frames_open_windows(t, srv):
    # Windows wide open: flow control no longer bounds what of a big body
    # waits in the server (file ranges cost its queue a few bytes each),
    # so a small response asked for later must be let through by the
    # server's own queue: each stream's DATA on its own lane, HEADERS first.
    c = H2(srv, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1})
    c.c.increment_flow_control_window((1 << 31) - 1 - 65535)
    c.flush()
    big = c.get(BIGFILE)
    c.until(lambda: len(c.bodies[big]) > (256 << 10), "the big body to flow")
    small = c.get("small.txt")
    c.until(lambda: small in c.ended, "the small response")
    check(bytes(c.bodies[small]) == t.files["small.txt"], "small body")
    # What socket buffers hold can be ahead of it, not the rest of 64 MiB.
    got = len(c.bodies[big])
    check(got < (16 << 20), "small response waited for %d bytes of the big one" % got)
    c.c.reset_stream(big)
    c.flush()
    c.close()


def frames_flow(t, srv):
    # A 1000-byte window: the server must stop at it and go on when it opens.
    c = H2(srv, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000,
                          h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 20})
    c.auto_ack = False
    sid = c.get("f100000.bin")
    c.until(lambda: len(c.bodies[sid]) >= 1000, "first window")
    c.pump(0.5)
    check(len(c.bodies[sid]) == 1000, "sent past the window: %d" % len(c.bodies[sid]))
    c.auto_ack = True
    c.c.increment_flow_control_window(200000, sid)
    c.c.increment_flow_control_window(200000)
    c.flush()
    c.until(lambda: sid in c.ended, "rest of the body after WINDOW_UPDATE")
    check(bytes(c.bodies[sid]) == t.files["f100000.bin"], "flow-controlled body differs")
    c.close()


def frames_ping_reset(t, srv):
    c = H2(srv)
    c.c.ping(b"kiteping")
    c.flush()
    c.until(lambda: c.pings == 1, "PING ACK")
    big = c.get(BIGFILE)
    c.until(lambda: len(c.bodies[big]) > 100000, "big body")
    c.c.reset_stream(big, h2.errors.ErrorCodes.CANCEL)
    c.flush()
    # The connection goes on; a new stream is answered at once.
    s = c.get("f5000.bin")
    c.until(lambda: s in c.ended, "stream after a reset")
    check(bytes(c.bodies[s]) == t.files["f5000.bin"], "body after reset")
    c.close()
    # Stream state is freed: the access log has the reset stream with
    # fewer body bytes than its length.
    lines = srv.wait_log(1)
    got = [m for m in h2_lines(srv) if m.group(2) == "/" + BIGFILE]
    check(got and int(got[-1].group(4)) < (64 << 20), "reset stream in the log: %s" %
          [m.group(0) for m in got])


def frames_goaway_on_term(t):
    srv = Server(t, "h2term", ["--shutdown-timeout", str(WAIT)])
    huge = (1 << 31) - 1
    c = H2(srv, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: huge})
    c.c.increment_flow_control_window(huge - 65535)
    c.flush()
    big = c.get(BIGFILE)
    # Python's h2 refuses frames after GOAWAY: read the frames by hand.
    buf, got, goaway, ended, termed = b"", 0, None, False, False
    c.s.settimeout(WAIT)
    while not ended:
        b = c.s.recv(1 << 16)
        if not b:
            break
        buf += b
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            ty, fl, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff
            pl, buf = buf[9:9 + n], buf[9 + n:]
            if ty == 0 and sid == big:
                got += n
                ended = bool(fl & 1)
            elif ty == 7:
                goaway = (int.from_bytes(pl[4:8], "big"),
                          int.from_bytes(pl[:4], "big") & 0x7fffffff)
        if got > 100000 and not termed:
            srv.send_signal(st.signal.SIGTERM)
            termed = True
    check(termed and goaway == (0, big), "GOAWAY %s, want (NO_ERROR, %d)" % (goaway, big))
    check(ended and got == 64 << 20, "stream cut at %d" % got)
    check(srv.stop(sig=None) == 0, "exit status")
    c.close()


def group_frames(t):
    if not need_h2():
        return
    srv = Server(t, "h2frames")
    t.step("h2 multiplex+fairness", frames_multiplex, t, srv)
    t.step("h2 fairness, open windows", frames_open_windows, t, srv)
    t.step("h2 flow control", frames_flow, t, srv)
    t.step("h2 ping, rst_stream", frames_ping_reset, t, srv)
    t.step("h2 goaway on SIGTERM", frames_goaway_on_term, t)


# ---------------------------------------------------------------- group: hostile

CALM = 0xb  # ENHANCE_YOUR_CALM
PROTO = 0x1
FLOW = 0x3


def limit(srv, name):
    return srv.metrics().get('kite_http2_limit_total{limit="%s"}' % name, 0)


def attack(t, srv, name, counter, code, fn):
    """fn(c) misbehaves on a fresh connection: GOAWAY code must come, the
    counter move, and a bystander connection be served throughout."""
    by = H2(srv)
    before = limit(srv, counter)
    c = H2(srv)
    fn(c)
    seen = []

    def done(f):
        if f[0] == 7:
            seen.append((int.from_bytes(f[3][4:8], "big"),
                         int.from_bytes(f[3][:4], "big") & 0x7fffffff))
        return bool(seen)
    # By hand: Python's h2 may refuse the frames a hostile sequence draws.
    raw_frames(c, done)
    g = seen[0] if seen else None
    check(g is not None and g[0] == code, "%s: GOAWAY %s, want code %d" % (name, g, code))
    c.close()
    deadline = time.monotonic() + WAIT
    while limit(srv, counter) != before + 1:
        check(time.monotonic() < deadline, "%s: counter %s %s -> %s" %
              (name, counter, before, limit(srv, counter)))
        time.sleep(0.05)
    s = by.get("f16385.bin")
    by.until(lambda: s in by.ended, name + ": bystander")
    check(bytes(by.bodies[s]) == t.files["f16385.bin"], name + ": bystander body")
    by.close()


def hostile_all(t, srv):
    def rapid_reset(c):
        for _ in range(400):
            sid = c.get("f100000.bin")
            c.c.reset_stream(sid)
        c.flush()

    def continuation(c):
        enc = h2.connection.Encoder()
        block = enc.encode([(":method", "GET"), (":scheme", "https"), (":path", "/"),
                            (":authority", "x")])
        c.raw(frame(1, 0, 1, block))  # HEADERS without END_HEADERS
        for _ in range(40):
            c.raw(frame(9, 0, 1, enc.encode([("x-a", "b" * 100)])))

    def bomb(c):
        # One 4000-byte field in the dynamic table, then indexed references
        # to it: a few bytes each, 4 KiB decoded each.
        enc = h2.connection.Encoder()
        first = enc.encode([(":method", "GET"), (":scheme", "https"), (":path", "/"),
                            (":authority", "x"), ("x-bomb", "z" * 4000)])
        refs = enc.encode([("x-bomb", "z" * 4000)]) * 60
        c.raw(frame(1, 0x4 | 0x1, 1, first + refs))

    def settings(c):
        c.raw(frame(4, 0, 0) * 1000)

    def ping(c):
        c.raw(frame(6, 0, 0, b"12345678") * 1000)

    def empty_data(c):
        sid = c.get("small.txt", end=False)
        c.raw(frame(0, 0, sid) * 1000)

    def window_update(c):
        c.raw(frame(8, 0, 0, struct.pack(">I", 1)) * 1000)

    def preface(c):
        pass  # replaced below: a fresh socket that speaks HTTP/1.1 after ALPN h2

    attack(t, srv, "rapid reset", "rapid_reset", CALM, rapid_reset)
    attack(t, srv, "continuation flood", "continuation", CALM, continuation)
    attack(t, srv, "hpack bomb", "header_list", CALM, bomb)
    attack(t, srv, "settings flood", "settings_flood", CALM, settings)
    attack(t, srv, "ping flood", "ping_flood", CALM, ping)
    attack(t, srv, "empty data flood", "empty_data_flood", CALM, empty_data)
    attack(t, srv, "window_update flood", "window_update_flood", CALM, window_update)
    # Oversized header list (not a bomb): that stream gets 431, the
    # connection goes on.
    c = H2(srv)
    sid = c.get("small.txt", [("x-big", "y" * 9000), ("x-big2", "y" * 9000)])
    c.until(lambda: sid in c.ended, "431")
    check(c.status(sid) == 431, "big header list: %d" % c.status(sid))
    s2 = c.get("small.txt")
    c.until(lambda: s2 in c.ended, "after 431")
    check(c.status(s2) == 200, "after 431: %d" % c.status(s2))
    c.close()
    # A preface that is not HTTP/2: GOAWAY PROTOCOL_ERROR.
    before = limit(srv, "bad_preface")
    s = st.connect(srv, st.tls_ctx(alpn=("h2",)))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 40)
    got = st.read_all(s)
    s.close()
    i = got.find(b"\x07\x00\x00\x00\x00\x00")  # a GOAWAY frame header's type/flags/stream
    check(i >= 3 and struct.unpack(">I", got[i + 10:i + 14])[0] == PROTO,
          "bad preface: no GOAWAY PROTOCOL_ERROR in %r" % got[:80])
    time.sleep(0.3)
    check(limit(srv, "bad_preface") == before + 1, "bad_preface counter")


def hostile_window(t):
    srv = Server(t, "h2stall", ["--send-timeout", "1", "--metrics-listen", "127.0.0.1:0"])
    c = H2(srv, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    c.auto_ack = False
    t0 = time.monotonic()
    sid = c.get("f100000.bin")
    g = c.wait_goaway(WAIT)
    check(g is not None and g[0] == FLOW, "never-opened window: GOAWAY %s" % (g,))
    check(time.monotonic() - t0 < WAIT, "window stall took too long")
    check(len(c.bodies.get(sid, b"")) == 0, "data past a zero window")
    check(limit(srv, "window_stall") == 1, "window_stall counter")
    c.close()


def raw_frames(c, done):
    """Frames (type, flags, stream, payload) until done(frame) or the end:
    Python's h2 refuses frames that follow a GOAWAY."""
    buf = b""
    c.s.settimeout(WAIT)
    while True:
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            f = (buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff, buf[9:9 + n])
            buf = buf[9 + n:]
            if done(f):
                return
        b = c.s.recv(1 << 16)
        if not b:
            return
        buf += b


def hostile_ids(t):
    srv = Server(t, "h2ids", ["--h2-max-requests", "5", "--metrics-listen", "127.0.0.1:0"])
    c = H2(srv)
    sids = [c.get("small.txt") for _ in range(6)]
    seen = {"goaway": None, "ended": set()}

    def done(f):
        ty, fl, sid, pl = f
        if ty == 7:
            seen["goaway"] = (int.from_bytes(pl[4:8], "big"),
                              int.from_bytes(pl[:4], "big") & 0x7fffffff)
        if ty in (0, 1) and fl & 1:
            seen["ended"].add(sid)
        return False
    raw_frames(c, done)  # until the server closes
    check(seen["goaway"] == (0, sids[4]), "max requests: GOAWAY %s" % (seen["goaway"],))
    check(seen["ended"] == set(sids[:5]), "answered: %s" % seen["ended"])
    check(limit(srv, "max_requests") == 1, "max_requests counter")
    c.close()


def hostile_slow_headers(t):
    """A request whose END_STREAM never comes, kept company by PINGs (which
    reset no idle timer of ours): GOAWAY after --header-timeout, while a
    request on another connection is served meanwhile."""
    srv = Server(t, "h2slow", ["--header-timeout", "1", "--metrics-listen", "127.0.0.1:0"])
    c = H2(srv)
    t0 = time.monotonic()
    sid = c.get("f5000.bin", end=False)
    other = H2(srv)
    o = other.get("f5000.bin")
    other.until(lambda: o in other.ended, "the other connection's response")
    check(bytes(other.bodies[o]) == t.files["f5000.bin"], "other connection's body")
    other.close()
    while c.goaway is None and not c.closed and time.monotonic() - t0 < WAIT:
        c.c.ping(b"12345678")  # three a second: far below the PING flood limit
        c.flush()
        tick = time.monotonic() + 0.3
        while time.monotonic() < tick and c.goaway is None and not c.closed:
            c.pump(max(0.01, tick - time.monotonic()))
    check(c.goaway is not None and c.goaway[0] == CALM, "slow headers: GOAWAY %s" % (c.goaway,))
    check(0.9 < time.monotonic() - t0 < WAIT, "slow headers ended after %.1f s (%s)" %
          (time.monotonic() - t0, srv.metrics()))
    check(sid not in c.headers, "an incomplete request was answered")
    check(limit(srv, "slow_headers") == 1, "slow_headers counter")
    check(srv.alive(), "server died")


def group_hostile(t):
    if not need_h2():
        return
    srv = Server(t, "h2hostile", ["--metrics-listen", "127.0.0.1:0"])
    t.step("h2 hostile floods", hostile_all, t, srv)
    t.step("h2 never-opened window", hostile_window, t)
    t.step("h2 slow headers", hostile_slow_headers, t)
    t.step("h2 stream-id exhaustion", hostile_ids, t)
    check(srv.alive(), "server died")


# ---------------------------------------------------------------- group: ktls


def tls_stat():
    try:
        with open("/proc/net/tls_stat") as f:
            return {k: int(v) for k, v in (ln.split() for ln in f if ln.strip())}
    except FileNotFoundError:
        return {}


def raw_h2_fetch(srv, paths):
    """One h2 connection, every path requested at once; frames read by hand
    (Python's h2 is too slow for 64 MiB inside UML). Windows are opened
    fully up front. Returns {path: (status, sha256, length)}."""
    import hashlib
    import hpack
    s = st.connect(srv, st.tls_ctx(alpn=("h2",)))
    check(s.selected_alpn_protocol() == "h2", "no h2")
    huge = (1 << 31) - 1
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    out += frame(4, 0, 0, struct.pack(">HI", 4, huge) + struct.pack(">HI", 3, 1000))
    out += frame(8, 0, 0, struct.pack(">I", huge - 65535))
    enc, dec = hpack.Encoder(), hpack.Decoder()
    sids = {}
    for i, p in enumerate(paths):
        sid = 1 + 2 * i
        sids[sid] = p
        out += frame(1, 0x5, sid, enc.encode([(":method", "GET"), (":scheme", "https"),
                                               (":authority", "kite.test"), (":path", "/" + p)]))
    s.sendall(out)
    res = {sid: [None, hashlib.sha256(), 0] for sid in sids}
    left = set(sids)
    buf = b""
    s.settimeout(WAIT * 4)
    while left:
        b = s.recv(1 << 18)
        check(b, "connection closed with %d streams open" % len(left))
        buf += b
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            ty, fl, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff
            pl, buf = buf[9:9 + n], buf[9 + n:]
            if ty == 4 and not fl & 1:
                s.sendall(frame(4, 1, 0))  # SETTINGS ACK
            elif ty == 1:
                hdr = dict(dec.decode(pl))
                res[sid][0] = int(hdr[":status"])
            elif ty == 0:
                # HEADERS go on the server's ordered lane, DATA on the
                # stream's: the former must never fall behind.
                check(res[sid][0] is not None, "stream %d: DATA before its HEADERS" % sid)
                res[sid][1].update(pl)
                res[sid][2] += n
            elif ty in (3, 7):
                raise Fail("stream %d: frame type %d %r" % (sid, ty, pl))
            if ty in (0, 1) and fl & 1:
                left.discard(sid)
    s.close()
    return {sids[k]: (v[0], v[1].hexdigest(), v[2]) for k, v in res.items()}


def group_ktls(t):
    """64 MiB and 100 small files over one h2 connection: with kTLS TX the
    DATA payloads go the splice path; without it, userspace records."""
    import hashlib
    base = os.path.join(t.tmp, "h2big")
    os.makedirs(os.path.join(base, "s"), exist_ok=True)
    want = {}
    big = st.data(64 << 20, 64)
    with open(os.path.join(base, "big.bin"), "wb") as f:
        f.write(big)
    want["big.bin"] = (hashlib.sha256(big).hexdigest(), len(big))
    for i in range(100):
        b = st.data(1 + (i * 7919) % 30000, 1000 + i)
        with open(os.path.join(base, "s", "%d.bin" % i), "wb") as f:
            f.write(b)
        want["s/%d.bin" % i] = (hashlib.sha256(b).hexdigest(), len(b))
    srv = Server(t, "h2ktls", ["--metrics-listen", "127.0.0.1:0"], root=base)
    before = tls_stat()
    m0 = srv.metrics()
    got = raw_h2_fetch(srv, list(want))
    for p, (h, n) in want.items():
        check(got[p] == (200, h, n), "%s: status %s, %d bytes (want %d), hash %s" %
              (p, got[p][0], got[p][2], n, "ok" if got[p][1] == h else "differs"))
    after = tls_stat()
    srv.wait_log(101)
    check_h2_ktls(srv)
    m = srv.metrics()

    def moved(k):
        return m.get(k, 0) - m0.get(k, 0)
    splice = moved('kite_bytes_total{path="ktls-splice"}')
    sent = moved('kite_bytes_total{path="send"}')
    files = moved("kite_http2_data_file_frames_total")
    ktx = all(x.group(8) in ("tx", "tx+rx") for x in h2_lines(srv))
    print("  ktls=%s splice=%d send=%d file-frames=%d tls_stat TxSw %s -> %s" %
          (ktx, splice, sent, files, before.get("TlsTxSw"), after.get("TlsTxSw")))
    if st.REQUIRE_KTLS or ktx:
        check(ktx, "kTLS TX not on")
        check(splice >= (60 << 20), "ktls-splice moved %d bytes, want the 64 MiB body" % splice)
        check(files >= (60 << 20) // 16375, "file-range DATA frames: %d" % files)
        check(after.get("TlsTxSw", 0) > before.get("TlsTxSw", 0) and
              after.get("TlsRxSw", 0) > before.get("TlsRxSw", 0), "tls_stat did not move")
    else:
        # The fallback: payloads are read next to their frame headers and
        # sealed with them (the send path), nothing spliced.
        check(splice == 0 and files == 0, "splice without kTLS: %d / %d" % (splice, files))
        check(sent >= (64 << 20), "send path moved %d bytes" % sent)


# ---------------------------------------------------------------- group: browser


def group_browser(t):
    """Headless Chromium loads the index page: it must negotiate h2 (the
    access log says HTTP/2.0) and render the page's text."""
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser")
                if shutil.which(n)), None)
    if not exe:
        if st.ALLOW_MISSING:
            print("  skip: chromium missing")
            return
        raise Fail("chromium missing (apt-get install chromium)")
    srv = Server(t, "h2browser")
    prof = os.path.join(t.tmp, "chromium-profile")
    p = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                        "--ignore-certificate-errors", "--user-data-dir=" + prof,
                        "--dump-dom", url(srv, "")], capture_output=True, text=True,
                       timeout=WAIT * 6, env=st.tool_env())
    check("kite root" in p.stdout, "chromium DOM: %r (%s)" % (p.stdout[:200], p.stderr[-300:]))
    lines = h2_lines(srv)
    check(any(m.group(1) == "GET" and m.group(2) == "/" and m.group(3) == "200" for m in lines),
          "no HTTP/2.0 GET / in the access log: %s" % srv.log_lines())


GROUPS = {"ktls": group_ktls, "browser": group_browser, "curl": group_curl, "tools": group_tools, "frames": group_frames,
          "hostile": group_hostile}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kite-serve", required=True)
    ap.add_argument("--engine", choices=["uring", "uring-basic", "epoll"])
    ap.add_argument("groups", nargs="+", choices=sorted(GROUPS))
    args = ap.parse_args()
    if not os.path.exists(args.kite_serve):
        print("kite-serve not built: %s" % args.kite_serve)
        return 77
    t = st.Test(args)
    print("kite-serve HTTP/2 tests: %s%s" % (" ".join(args.groups),
                                             " (kTLS required)" if st.REQUIRE_KTLS else ""))
    return t.run([("group " + g, GROUPS[g], t) for g in args.groups])


if __name__ == "__main__":
    sys.exit(main())
