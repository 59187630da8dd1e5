#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Soak kite-serve: a fixed load with every byte verified, thousands of idle
connections, and the server's descriptors and memory afterwards.

  soak   soak-client (C, this directory) sends a fixed number of requests
         over many concurrent TLS 1.2/1.3 clients to a document root of
         random files (0 B .. 4 MiB, record and buffer boundary sizes, fixed
         seed): keep-alive sequences, Connection: close, HEAD, Range (the
         slice is verified), pipelining, abrupt disconnects between
         requests, resets in the middle of a body, half request heads. Zero
         mismatches and zero transport errors; afterwards the server's open
         descriptors (/proc/PID/fd) are back at the baseline taken after a
         warm-up and its VmRSS is within a small tolerance of it.
  idle   soak-client holds N connections that finished the TLS handshake
         (every second one after one keep-alive GET) and then say nothing,
         then N that never send a byte after the TCP connect. While they are
         held other clients are served at once (GET latency bounded, a
         verified load burst passes); --idle-timeout and --handshake-timeout
         close them on time; descriptors return to the baseline and VmRSS
         to near it. Prints the memory per idle connection.

The figures (requests, bytes, seconds, req/s, descriptors and VmRSS before,
peak and after) are printed for the README. Inside UML (KITE_REQUIRE_KTLS=1)
the workload is smaller and every connection must have been offloaded both
ways (access log ktls=tx+rx, /metrics counters).

Memory: glibc malloc keeps freed memory in its arenas (it gives back only the
top of a heap, never the middle, unless malloc_trim() is called), so VmRSS
after 3000 connections have come and gone stays near its high-water mark
although every block is free. With --heap-probe (heap-probe.c, LD_PRELOADed
into kite-serve; meson passes it unless ASan is on) the test asks the
process, on SIGUSR2, for the heap bytes in use (mallinfo2) and VmRSS after
malloc_trim(0): those must return to the baseline within the tolerances
below, which is a leak check to a few bytes per connection. VmRSS as it is
(no trim) is printed, and after the soak, whose warm-up runs the same load
at the same concurrency, also checked. Without the probe (ASan) the heap is
LeakSanitizer's: every group stops kite-serve with SIGTERM and wants exit 0.

Exit status: 0 pass, 1 fail, 77 skip.
"""

import argparse
import os
import queue
import random
import re
import resource
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "serve"))
import serve_test as st  # noqa: E402

IN_UML = st.IN_UML
REQUIRE_KTLS = st.REQUIRE_KTLS
WAIT = st.WAIT
Fail, check = st.Fail, st.check

# Workload sizes: the host can move gigabytes in well under a minute; UML
# runs generic-C crypto in its kernel, so it gets files up to 1 MiB and
# fewer requests and connections. The quick run (KITE_TEST_SIZE not "full",
# see serve_test.sized) sends a third to a quarter of the requests and
# holds a third to a half of the idle connections: the same checks, with a
# leak needing more bytes per request to show.
if IN_UML:
    MAX_FILE = (1 << 20) + 1
    RANDOM_FILES = 40
    SOAK_REQUESTS, WARM_REQUESTS, CLIENTS = st.sized(1000, 3000), 300, 8
    # Timeouts with room: everything checked "while held" must finish before
    # the first held connection times out. Here that takes about 3.5 s for
    # the TLS round; a CI machine once needed 12.1 s.
    IDLE_N, IDLE_TIMEOUT, HS_TIMEOUT, CLOSE_SLACK = st.sized(150, 300), 30, 15, 20.0
else:
    MAX_FILE = 4 << 20
    RANDOM_FILES = 107
    SOAK_REQUESTS, WARM_REQUESTS, CLIENTS = st.sized(5000, 20000), 3000, 16
    IDLE_N, IDLE_TIMEOUT, HS_TIMEOUT, CLOSE_SLACK = st.sized(1000, 3000), 20, 10, 5.0

# Memory tolerances. Baselines are taken after a warm-up at the same
# concurrency. Measured spreads on the host (uring and epoll, 20000 to 100000
# requests; idle rounds of 3000): heap in use +9 .. +26 KiB, not growing with
# the number of requests; VmRSS after malloc_trim +40 .. +120 KiB; VmRSS as
# is +0.2 .. +1 MiB (glibc's arenas at their high-water mark).
# A leak of 13 bytes per request or 44 bytes per connection (20000 requests
# on ~6000 connections) exceeds HEAP_TOL.
HEAP_TOL = 256 << 10
TRIM_RSS_TOL_KB = 2 << 10
SOAK_RSS_TOL_KB = 4 << 10


# ---------------------------------------------------------------- the process


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def fd_targets(pid):
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            tgt = re.sub(r"\d+", "N", os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            continue
        out[tgt] = out.get(tgt, 0) + 1
    return out


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Fail("no VmRSS for %d" % pid)


class Sampler:
    """Peak VmRSS and descriptor count of a process, sampled every 50 ms."""

    def __init__(self, pid):
        self.pid = pid
        self.peak_rss = self.peak_fds = 0
        self.stop_ev = threading.Event()
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        while not self.stop_ev.is_set():
            try:
                self.peak_rss = max(self.peak_rss, rss_kb(self.pid))
                self.peak_fds = max(self.peak_fds, fd_count(self.pid))
            except (OSError, Fail):
                pass
            self.stop_ev.wait(0.05)

    def stop(self):
        self.stop_ev.set()
        self.th.join()
        return self


def cache_fds(srv):
    """Descriptors the open-file cache holds by design (its /metrics gauge;
    bounded by --file-cache, and entries unused for 10 s close)."""
    return int(srv.metrics().get("kite_file_cache_open_fds", 0))


def wait_idle(srv, base_fds, what):
    """Until the server's own descriptors (the open-file cache's not
    counted) are back at base_fds, then no connection may be open. The
    cache's gauge is read only after the listing, and then not again for
    0.2 s: a /metrics request's own connection is a descriptor in the
    server for a moment."""
    deadline = time.monotonic() + WAIT
    while True:
        n = fd_count(srv.p.pid)
        if n == base_fds:
            break
        cached = cache_fds(srv)
        if n - cached == base_fds:
            n -= cached
            break
        if time.monotonic() > deadline:
            raise Fail("%s: %d descriptors (%d of them the file cache's) %ss later (baseline "
                       "%d); now: %s" % (what, n, cached, WAIT, base_fds,
                                         fd_targets(srv.p.pid)))
        time.sleep(0.2)
    wait_closed(srv, what)
    return n


def wait_closed(srv, what):
    """No connection open by the server's own count. A socket's descriptor
    goes (io_uring CLOSE) a moment before the worker reaps that completion
    and counts the connection closed: a slow machine can see the gap."""
    deadline = time.monotonic() + 5
    while True:
        open_ = srv.metrics()["kite_connections_open"]
        if open_ == 0:
            return
        check(time.monotonic() < deadline, "%s: %d connections open 5 s after the "
              "descriptors were back" % (what, open_))
        time.sleep(0.05)


def settle_fds(srv):
    """Descriptor count once it has stopped changing for half a second (after
    the warm-up's clients have gone), the open-file cache's not counted."""
    deadline = time.monotonic() + WAIT
    last, same = -1, 0
    while same < 10:
        check(time.monotonic() < deadline, "descriptor count never settled")
        n = fd_count(srv.p.pid)
        same = same + 1 if n == last else 0
        last = n
        time.sleep(0.05)
    wait_closed(srv, "after the warm-up")
    return last - cache_fds(srv)


# ---------------------------------------------------------------- the client


def client(t, mode, args, timeout):
    argv = [t.client, mode, "--connect", "%s:%d" % (t.srv.host, t.srv.port)] + args
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return parse_result(p, argv)


def parse_result(p, argv):
    m = re.search(r"^RESULT (.*)$", p.stdout, re.M)
    if not m:
        raise Fail("%s: exit %s, no RESULT line\nstdout: %s\nstderr: %s"
                   % (" ".join(argv[:2]), p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
    r = {}
    for kv in m.group(1).split():
        k, v = kv.split("=", 1)
        r[k] = float(v) if "." in v else (int(v) if v.isdigit() else v)
    r["stdout"], r["stderr"], r["rc"] = p.stdout, p.stderr, p.returncode
    return r


def load(t, requests, seed, clients=CLIENTS):
    # Inside UML half of the client connections use kTLS too (libkite's
    # client side); on the host the kernel has none.
    r = client(t, "load", ["--root", t.root, "--requests", str(requests), "--clients", str(clients),
                           "--seed", str(seed), "--timeout", str(WAIT), "--deadline", "500",
                           "--client-ktls", "mix" if REQUIRE_KTLS else "off"],
               timeout=550)
    bad = r["mismatches"] or r["errors"] or r["rc"] != 0 or not r["ok"]
    check(not bad, "load: %d mismatches, %d errors (exit %d):\n%s%s"
          % (r["mismatches"], r["errors"], r["rc"], r["stdout"], r["stderr"][-3000:]))
    check(r["verified"] + r["aborted"] + r["partial"] == requests, "request count")
    return r


class IdleClient:
    """soak-client idle in the background: held() waits for its HELD line."""

    def __init__(self, t, n, silent):
        self.argv = [t.client, "idle", "--connect", "%s:%d" % (t.srv.host, t.srv.port),
                     "--count", str(n), "--timeout", str(int(max(IDLE_TIMEOUT, HS_TIMEOUT) + WAIT))]
        self.argv += ["--silent"] if silent else ["--get", "/" + t.small]
        self.p = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        self.lines = queue.Queue()
        self.out = []
        self.th = threading.Thread(target=self.read, daemon=True)
        self.th.start()

    def read(self):
        for line in self.p.stdout:
            self.out.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def held(self):
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.p.kill()
                raise Fail("idle client: no HELD line within %ss" % WAIT)
            if line is None:
                raise Fail("idle client ended early: %s%s" % ("".join(self.out),
                                                               self.p.stderr.read()[-2000:]))
            m = re.match(r"HELD n=(\d+) failed=(\d+) open_secs=(\S+)", line)
            if m:
                return int(m.group(1)), int(m.group(2)), float(m.group(3))

    def result(self):
        try:
            self.p.wait(IDLE_TIMEOUT + HS_TIMEOUT + 2 * WAIT)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise Fail("idle client did not finish")
        self.th.join()
        err = self.p.stderr.read()
        return parse_result(subprocess.CompletedProcess(self.argv, self.p.returncode,
                                                        "".join(self.out), err), self.argv)


# ---------------------------------------------------------------- the document root


def make_root(t, seed):
    """Random files, fixed seed: boundary sizes around TLS records (16 KiB),
    the engine's buffers (64 KiB), its pipes (256 KiB) and queue (1 MiB),
    plus log-uniform sizes in between."""
    rng = random.Random(seed)
    root = os.path.join(t.tmp, "root")
    os.makedirs(root)
    sizes = [0, 1, 2, 100, 4095, 4096, 4097, 16383, 16384, 16385, 32768, 65535, 65536, 65537,
             262143, 262144, 262145, 1048575, 1048576, 1048577, (4 << 20) - 1, 4 << 20]
    sizes = [s for s in sizes if s <= MAX_FILE]
    sizes += [int(2 ** rng.uniform(1, 21 if not IN_UML else 18)) for _ in range(RANDOM_FILES)]
    total = 0
    for i, n in enumerate(sizes):
        with open(os.path.join(root, "f%03d-%d.bin" % (i, n)), "wb") as f:
            f.write(rng.randbytes(n))
        total += n
    t.small = "f%03d-%d.bin" % (sizes.index(4096), 4096)
    t.root = root
    print("  document root: %d files, %.1f MiB, sizes 0 .. %d B (seed %d)"
          % (len(sizes), total / 1048576, max(sizes), seed))


# ---------------------------------------------------------------- checks


def check_offload(t, srv):
    """kTLS both ways for every connection when required; otherwise the log
    only has to carry the TLS fields."""
    m = srv.metrics()
    fb = {k: v for k, v in m.items() if k.startswith("kite_ktls_fallbacks_total") and v}
    try:
        st.check_ktls(srv)
    except Fail as e:
        raise Fail("%s\n(kTLS fallbacks in /metrics: %s)" % (e, fb))
    hs = m["kite_handshakes_total"]
    tx = m['kite_ktls_connections_total{direction="tx"}']
    rx = m['kite_ktls_connections_total{direction="rx"}']
    if REQUIRE_KTLS:
        # A client that resets right after its last handshake flight (the
        # half-head ending) can be gone before the server hands the keys
        # to the kernel: TCP_ULP then fails with ENOTCONN and no byte is
        # ever sent. Those few are the only exception allowed.
        gone = {d: sum(v for k, v in fb.items() if 'direction="%s"' % d in k and
                       "not connected" in k) for d in ("tx", "rx")}
        check(hs > 0 and tx + gone["tx"] == hs and rx + gone["rx"] == hs and
              gone["tx"] <= max(3, hs // 50),
              "kTLS required: %d handshakes, %d offloaded tx, %d rx; fallbacks: %s"
              % (hs, tx, rx, fb))
        kb = (m['kite_bytes_total{path="ktls-splice"}'] + m['kite_bytes_total{path="ktls-sendfile"}']
              + m['kite_bytes_total{path="ktls-copy"}'])
        check(kb > 0 and m['kite_bytes_total{path="userspace-tls"}'] == 0,
              "bytes not through kTLS: %s" % {k: v for k, v in m.items() if "bytes_total" in k})
    return hs, tx, rx


def engine_name(srv):
    m = re.search(r"engine: \d+ threads?, (\S+)", srv.banner)
    return m.group(1) if m else "?"


# ---------------------------------------------------------------- heap figures


def probe_env(t, name):
    """Environment that loads heap-probe.so into kite-serve (None without it)."""
    if not t.probe:
        return None
    out = os.path.join(t.tmp, name + ".heap")
    t.probe_out[name] = out
    return {"LD_PRELOAD": t.probe, "KITE_HEAP_PROBE_OUT": out}


class Mem:
    """VmRSS as the server has it, and, through heap-probe, the heap bytes in
    use and VmRSS right after malloc_trim(0) (None without the probe)."""

    def __init__(self, t, srv, name):
        pid = srv.p.pid
        self.rss = rss_kb(pid)
        self.inuse = self.trimmed = None
        out = t.probe_out.get(name)
        if not out:
            return

        def lines():
            try:
                with open(out) as f:
                    return f.read().splitlines()
            except FileNotFoundError:
                return []
        n = len(lines())
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + WAIT
        while len(lines()) <= n:
            check(time.monotonic() < deadline, "heap probe did not answer (LD_PRELOAD %s)" % t.probe)
            time.sleep(0.02)
        m = re.match(r"probe=\d+ inuse=(\d+) ", lines()[-1])
        self.inuse = int(m.group(1))
        self.trimmed = rss_kb(pid)

    def __str__(self):
        if self.inuse is None:
            return "VmRSS %d KiB" % self.rss
        return "VmRSS %d KiB (%d KiB after malloc_trim), heap in use %d KiB" % (
            self.rss, self.trimmed, self.inuse // 1024)


def check_mem(t, base, after, what, rss_tol_kb=None):
    """Heap in use back at the baseline; VmRSS near it (after malloc_trim)."""
    if base.inuse is None:
        print("  (no heap probe: %s not checked here; LeakSanitizer checks the heap)" % what)
        return
    check(after.inuse <= base.inuse + HEAP_TOL,
          "%s: heap in use %d bytes, baseline %d (+%d allowed): leak of %d bytes"
          % (what, after.inuse, base.inuse, HEAP_TOL, after.inuse - base.inuse))
    check(after.trimmed <= base.trimmed + TRIM_RSS_TOL_KB,
          "%s: VmRSS after malloc_trim %d KiB, baseline %d KiB (+%d KiB allowed)"
          % (what, after.trimmed, base.trimmed, TRIM_RSS_TOL_KB))
    if rss_tol_kb is not None:
        check(after.rss <= base.rss + rss_tol_kb, "%s: VmRSS %d KiB, baseline %d KiB (+%d KiB "
              "allowed)" % (what, after.rss, base.rss, rss_tol_kb))


# ---------------------------------------------------------------- group: soak


def group_soak(t):
    srv = t.srv = st.Server(t, "soak", ["--metrics-listen", "127.0.0.1:0"],
                            env=probe_env(t, "soak"))
    if t.engine:
        check(engine_name(srv) == t.engine, "engine %s, wanted %s" % (engine_name(srv), t.engine))
    pid = srv.p.pid
    warm = load(t, WARM_REQUESTS, t.seed + 1)
    base_fds = settle_fds(srv)
    base = Mem(t, srv, "soak")
    print("  warm-up: %d requests, %.1f MiB in %.1fs; baseline %d descriptors, %s"
          % (WARM_REQUESTS, warm["bytes"] / 1048576, warm["seconds"], base_fds, base))

    sampler = Sampler(pid)
    r = load(t, t.requests, t.seed)
    sampler.stop()
    after_fds = wait_idle(srv, base_fds, "after the soak")
    after = Mem(t, srv, "soak")
    for line in r["stdout"].splitlines():
        if not line.startswith("RESULT"):
            print("  " + line)
    print("  after: %d descriptors, %s" % (after_fds, after))
    secs = r["seconds"]
    print("  FIGURES soak engine=%s requests=%d verified=%d bytes=%d (%.2f GiB) mismatches=%d "
          "errors=%d seconds=%.1f req/s=%.0f MiB/s=%.0f fds=%d/%d/%d rss_kb=%d/%d/%d heap_kb=%s/%s"
          % (engine_name(srv), t.requests, r["verified"], r["bytes"], r["bytes"] / (1 << 30),
             r["mismatches"], r["errors"], secs, t.requests / secs, r["bytes"] / 1048576 / secs,
             base_fds, sampler.peak_fds, after_fds, base.rss, sampler.peak_rss, after.rss,
             base.inuse and base.inuse // 1024, after.inuse and after.inuse // 1024))
    print("        (fds and VmRSS: before / peak / after; heap in use: before / after)")
    check_mem(t, base, after, "after the soak", SOAK_RSS_TOL_KB)
    # The server's own counts agree: every response the client verified
    # was counted, none of them an error status the client did not ask for.
    m = srv.metrics()
    codes = {k: v for k, v in m.items() if k.startswith("kite_requests_total")}
    served = sum(codes.values())
    check(served >= warm["verified"] + r["verified"], "server counted %d responses" % served)
    check(codes.get('kite_requests_total{code="503"}', 0) == 0, "503s: %s" % codes)
    check(m['kite_connections_rejected_total{reason="engine_limit"}'] == 0, "engine limit hit")
    hs, tx, rx = check_offload(t, srv)
    print("  handshakes %d, kTLS tx %d rx %d; closed: %s" % (
        hs, tx, rx, ", ".join("%s %d" % (re.search(r'"(.*)"', k).group(1), v)
                              for k, v in m.items()
                              if k.startswith("kite_connections_closed_total") and v)))
    check(srv.stop() == 0, "kite-serve exit status (under ASan: leaks): %s" % srv.stderr()[-2000:])


# ---------------------------------------------------------------- group: idle


def wait_fds(srv, want, what):
    """The server accepts from its backlog a little after our connect()s."""
    deadline = time.monotonic() + WAIT
    while True:
        n = fd_count(srv.p.pid)
        if n == want:
            return n
        check(time.monotonic() < deadline, "%s: %d descriptors, want %d" % (what, n, want))
        time.sleep(0.02)


def idle_round(t, srv, base_fds, base, silent, n):
    """Hold n quiet connections until the server's timeout closes them."""
    kind = "silent (TCP only)" if silent else "TLS idle"
    timeout = HS_TIMEOUT if silent else IDLE_TIMEOUT
    # The first connection's timer runs from here: everything measured
    # "while held" must be done within the timeout.
    t_start = time.monotonic()
    ic = IdleClient(t, n, silent)
    held, failed, open_secs = ic.held()
    check(held == n and failed == 0, "%s: only %d of %d held (%d failed): %s"
          % (kind, held, n, failed, ic.p.stderr.read() if ic.p.poll() is not None else ""))
    # Every held connection is one descriptor in the server.
    held_fds = wait_fds(srv, base_fds + n, "%s, holding %d (%.1fs after the first connect, "
                        "timeout %ds)" % (kind, n, time.monotonic() - t_start, timeout))
    t_held = time.monotonic()
    mem = Mem(t, srv, "idle")

    # Meanwhile the server answers others at once.
    lat = []
    for _ in range(10):
        t0 = time.monotonic()
        status, _, body = st.get(srv, "/" + t.small)
        lat.append(time.monotonic() - t0)
        check(status == 200 and len(body) == 4096, "GET while holding: %d" % status)
    t_gets = time.monotonic()
    burst = load(t, 100 if IN_UML else 300, t.seed + 7, clients=4)
    limit = 3.0 if IN_UML else 1.0
    check(max(lat) < limit, "%s: GET took %.2fs while %d connections were held (limit %.1fs)"
          % (kind, max(lat), n, limit))
    during = time.monotonic() - t_start
    check(during < timeout - 0.5, "%s: opening and the checks while holding took %.1fs, more "
          "than the %ds timeout allows (machine too slow?): opening %.1fs (client: %.1fs), "
          "memory %.1fs, 10 GETs %.1fs, burst %.1fs" % (kind, during, timeout, t_held - t_start,
                                                       open_secs, t_gets - t_held - sum(lat),
                                                       sum(lat), time.monotonic() - t_gets))

    r = ic.result()
    check(r["ok"] and r["closed"] == n, "%s: server closed %s of %d: %s%s"
          % (kind, r.get("closed"), n, r["stdout"], r["stderr"][-2000:]))
    # Closed by the right timeout: not before it, not long after.
    check(r["min_ms"] >= (timeout - 1) * 1000 and r["max_ms"] <= (timeout + CLOSE_SLACK) * 1000,
          "%s: closed after %d .. %d ms, timeout %d s" % (kind, r["min_ms"], r["max_ms"], timeout))
    after_fds = wait_idle(srv, base_fds, "after the %s round" % kind)
    if mem.inuse is not None:
        # kite-serve gives a burst's freed memory back itself (malloc_trim
        # once a worker has no connection left): plain VmRSS returns too.
        deadline = time.monotonic() + 5
        while rss_kb(srv.p.pid) > base.rss + TRIM_RSS_TOL_KB:
            check(time.monotonic() < deadline, "%s: VmRSS still %d KiB 5 s after the round, "
                  "baseline %d KiB: freed memory not returned" % (kind, rss_kb(srv.p.pid), base.rss))
            time.sleep(0.1)
    after = Mem(t, srv, "idle")
    per_rss = (mem.rss - base.rss) * 1024 / n
    per_heap = "-" if mem.inuse is None else "%.0f" % ((mem.inuse - base.inuse) / n)
    print("  FIGURES idle kind=%s n=%d open_secs=%.2f fds=%d/%d/%d rss_kb=%d/%d/%d "
          "trimmed_rss_kb=%s/%s/%s heap_kb=%s/%s/%s per_conn_rss=%.0f per_conn_heap=%s "
          "get_ms_max=%.0f burst=%d req in %.1fs closed_after_ms=%d..%d"
          % ("silent" if silent else "tls", n, open_secs, base_fds, held_fds, after_fds, base.rss,
             mem.rss, after.rss, base.trimmed, mem.trimmed, after.trimmed,
             base.inuse and base.inuse // 1024, mem.inuse and mem.inuse // 1024,
             after.inuse and after.inuse // 1024, per_rss, per_heap, max(lat) * 1000,
             burst["verified"], burst["seconds"], r["min_ms"], r["max_ms"]))
    print("        (fds, VmRSS, VmRSS after malloc_trim and heap in use: before / held / after;"
          " per connection: bytes)")
    check_mem(t, base, after, "after the %s round" % kind)


def group_idle(t):
    n = t.idle_n
    # The round counts descriptors exactly against a baseline: no open-file
    # cache, whose descriptors come and go with revalidation (its bound is
    # cache_test's churn step).
    srv = t.srv = st.Server(t, "idle", env=probe_env(t, "idle"), args=[
        "--metrics-listen", "127.0.0.1:0", "--max-conns-per-ip", "0", "--file-cache", "0",
        "--max-conns", str(n + 1024), "--idle-timeout", str(IDLE_TIMEOUT),
        "--handshake-timeout", str(HS_TIMEOUT)])
    # Warm-up: some load, so that the baseline has every thread's arena.
    load(t, 300 if IN_UML else 1000, t.seed + 3)
    base_fds = settle_fds(srv)
    base = Mem(t, srv, "idle")
    print("  baseline: %d descriptors, %s" % (base_fds, base))
    idle_round(t, srv, base_fds, base, False, n)
    idle_round(t, srv, base_fds, base, True, n)
    m = srv.metrics()
    # Both kinds counted: idle timeouts after the handshake, handshake
    # timeouts (and nothing else) before it.
    check(m['kite_errors_total{kind="timeout"}'] >= n and
          m['kite_errors_total{kind="handshake"}'] >= n,
          "timeouts counted: %d idle, %d in the handshake"
          % (m['kite_errors_total{kind="timeout"}'], m['kite_errors_total{kind="handshake"}']))
    check_offload(t, srv)
    check(srv.stop() == 0, "kite-serve exit status (under ASan: leaks): %s" % srv.stderr()[-2000:])


# ---------------------------------------------------------------- main

GROUPS = {"soak": group_soak, "idle": group_idle}


class Run(st.Test):
    def __init__(self, args):  # pylint: disable=super-init-not-called
        self.kite_serve = os.path.abspath(args.kite_serve)
        self.client = os.path.abspath(args.soak_client)
        self.engine = args.engine
        self.seed = args.seed
        self.requests = args.requests
        self.idle_n = args.idle
        self.tmp = __import__("tempfile").mkdtemp(prefix="kite-soak-")
        self.servers = []
        self.failures = []
        self.srv = None
        self.probe = os.path.abspath(args.heap_probe) if args.heap_probe else None
        self.probe_out = {}
        make_root(self, args.seed)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kite-serve", required=True)
    ap.add_argument("--soak-client", required=True)
    ap.add_argument("--engine", choices=["uring", "uring-basic", "epoll"],
                    help="force the engine rung (KITE_ENGINE)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--requests", type=int, default=SOAK_REQUESTS)
    ap.add_argument("--heap-probe", help="heap-probe.so to LD_PRELOAD into kite-serve")
    ap.add_argument("--idle", type=int, default=IDLE_N, help="connections to hold")
    ap.add_argument("groups", nargs="+", choices=sorted(GROUPS))
    args = ap.parse_args()
    for p in (args.kite_serve, args.soak_client):
        if not os.path.exists(p):
            print("not built: %s" % p)
            return 77
    # The client holds --idle descriptors; kite-serve raises its own limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # Room for --idle connections from one address (main() raised the
    # soft limit; kite-serve raises its own, the client too).
    groups = list(args.groups)
    if "idle" in groups and hard != resource.RLIM_INFINITY and hard < args.idle + 512:
        print("skip group idle: RLIMIT_NOFILE hard limit %d < %d" % (hard, args.idle + 512))
        groups.remove("idle")
        if not groups:
            return 77
    t = Run(args)
    print("kite-serve soak: %s%s%s" % (" ".join(args.groups),
                                       " engine=" + args.engine if args.engine else "",
                                       " (kTLS required)" if REQUIRE_KTLS else ""))
    return t.run([("group " + g, GROUPS[g], t) for g in groups])


if __name__ == "__main__":
    sys.exit(main())
