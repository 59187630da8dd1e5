#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""kite-serve's open-file cache (--file-cache), on the host and inside UML.

Group cache (each step starts its own kite-serve, see serve_test.py):

  counts   10 requests of one file over one keep-alive connection: 1 miss,
           9 hits, one entry, one descriptor, its 1 KiB in memory; every
           body byte went out with its head (path "send", nothing on a file
           path, even with --inline-max 0); HTTP/2 (curl --http2) answers from
           the same entry without a file DATA frame; on the host strace
           counts no file syscall (open, stat, read, close) for 200 cached
           hits; a 256 KiB file (above --small-file-max) is sent from the
           cached descriptor: over HTTP/1.1 and HTTP/2 the right bytes, on
           the io_uring rung the descriptor registered with the ring, on
           the host strace counts for 200 large hits no open, fcntl, dup or
           close and at most one fstat each
  inflight an entry of a 64 MiB file evicted while a response from it waits
           for a client that stopped reading: the descriptor stays open
           (one more than the entries) until the response is out, the
           whole body is the file's, then the descriptor is closed
  churn    100,000 requests (10,000 in UML) of distinct paths, half of them
           300 existing files and half nonexistent, pipelined over
           keep-alive (h2load --h1) against --file-cache 64: the process's
           descriptors (/proc/PID/fd, sampled throughout) never exceed its
           idle count + 64 + a few, entries were evicted, and afterwards
           the cache holds one descriptor per entry (no reference leaked)
  changes  client threads fetch two paths in a loop over keep-alive while
           the file is replaced by rename, rewritten in place, truncated,
           made unreadable (kite-serve runs as nobody, so chmod 000 counts),
           deleted and recreated, and a directory is replaced by a file:
           every 200 body is one whole version that was written (SHA-256),
           anything else is a clean 403/404 or a dropped connection, and
           from --file-cache-valid + slack after each change on, every
           answer is the newest state

Exit status: 0 pass, 1 fail, 77 skip.
"""

import hashlib
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_test as st  # noqa: E402
from serve_test import Fail, Server, check  # noqa: E402

IN_UML = st.IN_UML
VALID = 0.5                        # --file-cache-valid in these tests
SLACK = 2.0 if IN_UML else 0.6     # a request's way through a loaded machine
WINDOW = 2.0 if IN_UML else 1.0    # how long each state is checked
NOBODY = 65534
BIG = 256 << 10                    # above --small-file-max: sent from the descriptor
HUGE = 64 << 20                    # still going out while its entry is evicted


def sha(b):
    return hashlib.sha256(b).hexdigest()


def write(path, content):
    with open(path, "wb") as f:
        f.write(content)


def cache_root(t):
    """A root of its own that nobody can read (mkdtemp makes t.tmp 0700)."""
    os.chmod(t.tmp, 0o755)
    root = os.path.join(t.tmp, "cache-root")
    os.makedirs(os.path.join(root, "c"))
    os.makedirs(os.path.join(root, "v", "d"))
    write(os.path.join(root, "one.bin"), st.data(1024, 1))
    write(os.path.join(root, "big.bin"), st.data(BIG, 2))
    for i in range(300):
        write(os.path.join(root, "c", "%d.bin" % i), st.data(100 + i, i))
    # The cache keeps a file's bytes only once it has been still for a
    # second (a younger file may be half-written).
    time.sleep(1.2)
    return root


def metric_sum(m, prefix):
    return sum(v for k, v in m.items() if k.startswith(prefix))


def fc(m, name):
    return m["kite_file_cache_" + name]


def metrics_after(srv, n, m0):
    """/metrics once the cache has counted n more lookups than in m0: a
    worker publishes its counters when an answer has left, which may be
    just after the client has it."""
    deadline = time.monotonic() + st.WAIT
    while True:
        m = srv.metrics()
        done = (fc(m, "hits_total") + fc(m, "misses_total") -
                fc(m0, "hits_total") - fc(m0, "misses_total"))
        if done >= n or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


# ---------------------------------------------------------------- counts


FILE_CALLS = {"open", "openat", "openat2", "stat", "fstat", "newfstatat", "statx", "pread64",
              "preadv", "preadv2", "read", "sendfile", "splice", "close", "fcntl", "dup",
              "dup2", "dup3"}


# What a descriptor shared by reference must not cost per hit.
DESC_CALLS = {"open", "openat", "openat2", "close", "fcntl", "dup", "dup2", "dup3"}
STAT_CALLS = {"stat", "fstat", "newfstatat", "statx"}


def strace_calls(srv, n, path="/one.bin", body=None):
    """Syscalls of srv's threads (name -> count) while n cached hits are
    answered."""
    body = body if body is not None else st.data(1024, 1)
    s = st.connect(srv)
    s.sendall(st.req("GET", path, close=False))
    st.recv_responses(s, 1)
    tids = os.listdir("/proc/%d/task" % srv.p.pid)
    out = os.path.join(srv.dir, "strace")
    cmd = ["strace", "-f", "-c", "-o", out]
    for tid in tids:
        cmd += ["-p", tid]
    tr = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attached to every thread
    for _ in range(n):
        s.sendall(st.req("GET", path, close=False))
        r = st.recv_responses(s, 1)
        check(r[0][0] == 200 and r[0][2] == body, "GET %s under strace" % path)
    tr.send_signal(signal.SIGINT)
    tr.wait(timeout=st.WAIT)
    s.close()
    calls = {}
    with open(out) as f:
        for ln in f:
            p = ln.split()
            if len(p) >= 5 and p[0][0].isdigit() and p[-1] != "total":
                calls[p[-1]] = int(p[3])
    return calls


def cache_counts(t):
    # Valid for longer than the step: no periodic lookup among the hits.
    srv = Server(t, "cache-counts", ["--threads", "1", "--metrics-listen", "127.0.0.1:0",
                                     "--inline-max", "0", "--file-cache-valid", "600"],
                 root=t.croot)
    body = st.data(1024, 1)
    m0 = srv.metrics()
    s = st.connect(srv)
    for _ in range(10):
        s.sendall(st.req("GET", "/one.bin", close=False))
        r = st.recv_responses(s, 1)
        check(r[0][0] == 200 and r[0][2] == body, "GET /one.bin: %d" % r[0][0])
    s.close()
    m1 = metrics_after(srv, 10, m0)
    hits = fc(m1, "hits_total") - fc(m0, "hits_total")
    misses = fc(m1, "misses_total") - fc(m0, "misses_total")
    check(misses == 1 and hits == 9, "10 requests: %d misses, %d hits" % (misses, hits))
    check(fc(m1, "entries") == 1 and fc(m1, "open_fds") == 1,
          "entries %d, descriptors %d" % (fc(m1, "entries"), fc(m1, "open_fds")))
    check(fc(m1, "memory_bytes") == 1024, "bytes held: %d" % fc(m1, "memory_bytes"))
    # --inline-max 0: a body not held by the cache would take a file path.
    sent = m1['kite_bytes_total{path="send"}'] - m0['kite_bytes_total{path="send"}']
    files = (metric_sum(m1, "kite_bytes_total") - metric_sum(m0, "kite_bytes_total")) - sent
    check(files == 0 and sent >= 10 * 1024,
          "cached hits: %d bytes on file paths, %d sent with heads" % (files, sent))
    # HTTP/2: the same entry, copied into DATA frames (no file frame).
    if st.need("curl"):
        url = srv.urls[0] + "/one.bin"
        p = subprocess.run(["curl", "-sk", "--http2"] + [url] * 5, capture_output=True,
                           timeout=st.WAIT, env=st.tool_env())
        check(p.returncode == 0 and p.stdout == body * 5, "curl --http2: %d %d bytes" %
              (p.returncode, len(p.stdout)))
        m2 = metrics_after(srv, 5, m1)
        check(fc(m2, "hits_total") - fc(m1, "hits_total") == 5 and
              fc(m2, "misses_total") == fc(m1, "misses_total"),
              "HTTP/2: %d hits %d misses" % (fc(m2, "hits_total") - fc(m1, "hits_total"),
                                            fc(m2, "misses_total") - fc(m1, "misses_total")))
        check(m2["kite_http2_streams_total"] - m1["kite_http2_streams_total"] == 5,
              "not HTTP/2")
        check(m2["kite_http2_data_file_frames_total"] == m1["kite_http2_data_file_frames_total"],
              "HTTP/2 cached body queued as a file range")
    # ptrace inside UML is slow and says nothing new: the host counts.
    if not IN_UML and st.need("strace"):
        n = 200
        calls = strace_calls(srv, n)
        files = {k: v for k, v in calls.items() if k in FILE_CALLS}
        check(not files, "%d cached hits made file syscalls: %s" % (n, files))
        print("  %d cached hits, one at a time: %.2f syscalls each (%s)" % (
            n, sum(calls.values()) / n, ", ".join("%s %d" % kv for kv in sorted(calls.items()))))
    big_hits(srv)
    st.check_ktls(srv)
    check(srv.stop() == 0, "exit status")


def fds_settle(srv, want_extra=0):
    """/metrics once the cache's descriptors are its entries + want_extra
    (a response still holding a dropped entry's), or at the deadline."""
    deadline = time.monotonic() + st.WAIT
    while True:
        m = srv.metrics()
        if (fc(m, "open_fds") == fc(m, "entries") + want_extra or
                time.monotonic() > deadline):
            return m
        time.sleep(0.05)


def big_hits(srv):
    """A file above --small-file-max: sent from the cached descriptor
    itself, which the io_uring rung registers with its ring."""
    body = st.data(BIG, 2)
    m0 = srv.metrics()
    s = st.connect(srv)
    for _ in range(5):
        s.sendall(st.req("GET", "/big.bin", close=False))
        r = st.recv_responses(s, 1)
        check(r[0][0] == 200 and r[0][2] == body, "GET /big.bin: %d, %d bytes" %
              (r[0][0], len(r[0][2])))
    s.close()
    m1 = metrics_after(srv, 5, m0)
    check(fc(m1, "misses_total") - fc(m0, "misses_total") == 1 and
          fc(m1, "hits_total") - fc(m0, "hits_total") == 4, "/big.bin: 1 miss, 4 hits")
    uring = any(k.startswith('kite_engine_info{backend="uring"') for k in m1)
    reg = m1["kite_engine_files_registered_total"] - m0["kite_engine_files_registered_total"]
    check(reg == (1 if uring else 0), "descriptors registered with the ring: %d (uring %s)" %
          (reg, uring))
    if st.need("curl"):
        # HTTP/2: DATA frames queued as ranges of the same descriptor.
        url = srv.urls[0] + "/big.bin"
        p = subprocess.run(["curl", "-sk", "--http2"] + [url] * 3, capture_output=True,
                           timeout=st.WAIT, env=st.tool_env())
        check(p.returncode == 0 and p.stdout == body * 3, "curl --http2 /big.bin: %d %d bytes" %
              (p.returncode, len(p.stdout)))
        m2 = metrics_after(srv, 3, m1)
        check(fc(m2, "hits_total") - fc(m1, "hits_total") == 3 and
              fc(m2, "misses_total") == fc(m1, "misses_total"), "HTTP/2 /big.bin: 3 hits")
        # Frames go out as file ranges where the kernel encrypts (else
        # each is read into the record buffer).
        ranged = (m2["kite_http2_data_file_frames_total"] -
                  m1["kite_http2_data_file_frames_total"])
        if st.REQUIRE_KTLS:
            check(ranged > 0, "HTTP/2 /big.bin under kTLS: no DATA frame queued as a file range")
        check(m2["kite_engine_files_registered_total"] == m1["kite_engine_files_registered_total"],
              "HTTP/2 registered the cached descriptor again")
    m = fds_settle(srv)
    check(fc(m, "open_fds") == fc(m, "entries"), "descriptors %d for %d entries after the hits" %
          (fc(m, "open_fds"), fc(m, "entries")))
    if not IN_UML and st.need("strace"):
        n = 200
        calls = strace_calls(srv, n, "/big.bin", body)
        desc = {k: v for k, v in calls.items() if k in DESC_CALLS}
        stats = sum(v for k, v in calls.items() if k in STAT_CALLS)
        check(not desc, "%d large cached hits managed descriptors: %s" % (n, desc))
        # One fstat per hit: a file rewritten in place is seen before use.
        check(stats <= n, "%d large cached hits made %d stat calls" % (n, stats))
        print("  %d large cached hits: %.2f syscalls each (%s)" % (
            n, sum(calls.values()) / n, ", ".join("%s %d" % kv for kv in sorted(calls.items()))))


# ---------------------------------------------------------------- inflight


def recv_head(s):
    """A response head and what came after it, from a kept-alive connection."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(1 << 16)
        check(b, "connection closed in a head")
        buf += b
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def cache_inflight(t):
    body = st.data(HUGE, 3)
    write(os.path.join(t.croot, "huge.bin"), body)
    bound = 4
    srv = Server(t, "cache-inflight", ["--threads", "1", "--metrics-listen", "127.0.0.1:0",
                                       "--file-cache", str(bound), "--file-cache-valid", "600"],
                 root=t.croot)
    m0 = srv.metrics()
    s = st.connect(srv)
    s.sendall(st.req("GET", "/huge.bin", close=False))
    head, got = recv_head(s)
    check(head.startswith("HTTP/1.1 200") and "Content-Length: %d" % HUGE in head,
          "GET /huge.bin: %s" % head[:200])
    # The client stops reading: the rest waits in the server's queue.
    m1 = metrics_after(srv, 1, m0)
    ev0 = fc(m1, "evictions_total")
    for i in range(2 * bound):
        st.expect(srv, "/c/%d.bin" % i, 200)
    m2 = fds_settle(srv, 1)
    check(fc(m2, "evictions_total") - ev0 >= bound, "evictions: %d" %
          (fc(m2, "evictions_total") - ev0))
    # The evicted entry's descriptor is still open for the response.
    check(fc(m2, "open_fds") == fc(m2, "entries") + 1,
          "while the response is out: %d descriptors for %d entries" %
          (fc(m2, "open_fds"), fc(m2, "entries")))
    got = bytearray(got)
    while len(got) < HUGE:
        b = s.recv(1 << 20)
        check(b, "connection closed after %d body bytes" % len(got))
        got += b
    check(len(got) == HUGE and sha(bytes(got)) == sha(body),
          "/huge.bin after its entry was evicted: %d bytes, %s" %
          (len(got), "right" if bytes(got) == body else "wrong bytes"))
    s.close()
    # The response is out: its reference, the last, closed the descriptor.
    m3 = fds_settle(srv)
    check(fc(m3, "open_fds") == fc(m3, "entries"),
          "after the response: %d descriptors for %d entries" %
          (fc(m3, "open_fds"), fc(m3, "entries")))
    print("  a 64 MiB response outlived its evicted entry, whole and right")
    os.unlink(os.path.join(t.croot, "huge.bin"))
    st.check_ktls(srv)
    check(srv.stop() == 0, "exit status")


# ---------------------------------------------------------------- churn


def proc_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


def cache_churn(t):
    if not st.need("h2load"):
        return
    bound = 64
    srv = Server(t, "cache-churn", ["--threads", "1", "--metrics-listen", "127.0.0.1:0",
                                    "--file-cache", str(bound)], root=t.croot)
    n = st.sized(10000, 100000) if IN_UML else 100000
    base = srv.urls[0]
    uris = os.path.join(srv.dir, "uris")
    with open(uris, "w") as f:
        for i in range(n):
            if i % 2:
                f.write("%s/nx/%d\n" % (base, i))          # distinct, nonexistent
            else:
                f.write("%s/c/%d.bin\n" % (base, (i // 2) % 300))
    # Whatever the engine sets up on first use is there before counting.
    subprocess.run(["h2load", "--h1", "-n", "100", "-c", "1", "-m", "16", base + "/c/0.bin"],
                   capture_output=True, timeout=st.WAIT, env=st.tool_env())
    time.sleep(0.5)
    idle = proc_fds(srv.p.pid)
    peak = [idle]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc_fds(srv.p.pid))
            time.sleep(0.01)

    th = threading.Thread(target=sample)
    th.start()
    try:
        p = subprocess.run(["h2load", "--h1", "-n", str(n), "-c", "1", "-m", "16", "-i", uris],
                           capture_output=True, text=True, timeout=600, env=st.tool_env())
    finally:
        done.set()
        th.join()
    check(p.returncode == 0, "h2load: %s %s" % (p.stdout[-500:], p.stderr[-500:]))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", p.stdout)
    check(m, "h2load output: %s" % p.stdout[-500:])
    c2, c4 = int(m.group(1)), int(m.group(3))
    check(c2 == n // 2 and c4 == n - n // 2, "h2load: %d 2xx %d 4xx of %d" % (c2, c4, n))
    # The client's connection, the descriptors a lookup holds for a moment
    # (directory, file, sibling), dropped entries a response still holds: a few.
    check(peak[0] <= idle + bound + 8,
          "descriptors peaked at %d (idle %d, cache bound %d)" % (peak[0], idle, bound))
    mt = srv.metrics()
    check(fc(mt, "open_fds") <= bound and fc(mt, "entries") <= bound,
          "cache holds %d descriptors" % fc(mt, "open_fds"))
    check(fc(mt, "evictions_total") >= 300 - bound, "evictions: %d" % fc(mt, "evictions_total"))
    mt = fds_settle(srv)
    check(fc(mt, "open_fds") == fc(mt, "entries"), "after the churn: %d descriptors for %d "
          "entries" % (fc(mt, "open_fds"), fc(mt, "entries")))
    print("  %d requests, descriptors idle %d, peak %d" % (n, idle, peak[0]))
    check(srv.stop() == 0, "exit status")


# ---------------------------------------------------------------- changes


class Client(threading.Thread):
    """Fetch paths in turn over keep-alive until stopped; every answer is
    (start, path, status or None for a dropped connection, body hash, end)."""

    def __init__(self, srv, paths, stop):
        super().__init__()
        self.srv, self.paths, self.stop, self.got, self.error = srv, paths, stop, [], None

    def run(self):
        s, i = None, 0
        try:
            while not self.stop.is_set():
                path = self.paths[i % len(self.paths)]
                i += 1
                t0 = time.monotonic()
                try:
                    if s is None:
                        s = st.connect(self.srv)
                    s.sendall(st.req("GET", path, close=False))
                    r = st.recv_responses(s, 1)
                    self.got.append((t0, path, r[0][0], sha(r[0][2]), time.monotonic()))
                except (OSError, ssl.SSLError, Fail):
                    # A file cut short under a response ends the connection.
                    self.got.append((t0, path, None, None, time.monotonic()))
                    if s is not None:
                        s.close()
                    s = None
        except Exception as e:  # reported by the step
            self.error = e
        if s is not None:
            s.close()


def cache_changes(t):
    root = t.croot
    f = os.path.join(root, "v", "file.bin")
    d = os.path.join(root, "v", "d")
    fpath, dpath = "/v/file.bin", "/v/d/"
    args = ["--threads", "2", "--metrics-listen", "127.0.0.1:0",
            "--file-cache-valid", str(VALID)]
    as_nobody = os.geteuid() == 0
    if as_nobody:
        # Root reads a chmod 000 file anyway: the server must not be root.
        args += ["--user", "nobody:nogroup"]
    else:
        print("  (chmod 000 step skipped: not root, cannot run kite-serve as nobody)")
    seen = {fpath: set(), dpath: set()}  # every version ever written
    timeline = []                        # (done, path, expected status, expected hash, began)
    began = [time.monotonic()]

    def change():
        """A change to the files begins now."""
        began[0] = time.monotonic()

    def state(path, status, content=None):
        """The change that began at change() is done: path answers this."""
        h = sha(content) if content is not None else None
        if h:
            seen[path].add(h)
        timeline.append((time.monotonic(), path, status, h, began[0]))

    v = {k: st.data(n, 100 + k) for k, n in
         ((0, 1024), (1, 2048), (2, 64 << 10), (3, 2500), (4, 3000), (5, 2500), (6, 1500))}
    write(f, v[0])
    write(os.path.join(d, "index.html"), b"<html>the directory</html>\n")
    time.sleep(1.1)
    srv = Server(t, "cache-changes", args, root=root)
    state(fpath, 200, v[0])
    state(dpath, 200, b"<html>the directory</html>\n")
    stop = threading.Event()
    clients = [Client(srv, [fpath, dpath], stop) for _ in range(3 if IN_UML else 6)]
    for c in clients:
        c.start()

    def settle():
        time.sleep(VALID + SLACK + WINDOW)

    def replace(content):
        change()
        tmp = f + ".tmp"
        write(tmp, content)
        os.rename(tmp, f)
        state(fpath, 200, content)

    try:
        settle()
        replace(v[1])                      # small, by rename
        settle()
        replace(v[2])                      # large (a descriptor, not bytes), by rename
        settle()
        replace(v[5])                      # small again
        settle()
        # Rewritten in place, same size. (A body being sent while the file
        # is rewritten under it mixes versions with or without a cache: the
        # rewrite is small and one write, so that window is a page copy.)
        change()
        with open(f, "r+b") as o:
            o.write(v[3])
        state(fpath, 200, v[3])
        settle()
        seen[fpath].add(sha(b""))          # O_TRUNC empties it before the write
        change()
        write(f, v[4])                     # in place, shorter
        state(fpath, 200, v[4])
        settle()
        change()
        os.truncate(f, 1000)               # truncated
        state(fpath, 200, v[4][:1000])
        settle()
        if as_nobody:
            change()
            os.chmod(f, 0)                 # unreadable
            state(fpath, 403)
            settle()
            change()
            os.chmod(f, 0o644)
            state(fpath, 200, v[4][:1000])
            settle()
        change()
        os.unlink(f)                       # deleted
        state(fpath, 404)
        settle()
        change()
        write(f, v[6])                     # back (a 404 is not cached)
        state(fpath, 200, v[6])
        os.unlink(os.path.join(d, "index.html"))  # the directory becomes a file
        os.rmdir(d)
        seen[dpath].add(sha(b""))          # created empty, then written
        write(d, b"now a file\n")
        state(dpath, 200, b"now a file\n")
        settle()
    finally:
        stop.set()
        for c in clients:
            c.join()
    for c in clients:
        check(c.error is None, "client: %r" % c.error)
    got = [g for c in clients for g in c.got]
    check(len(got) > 100, "only %d answers" % len(got))
    # Every body is one whole version; every failure is clean.
    for t0, path, status, h, _ in got:
        if status == 200:
            check(h in seen[path], "%s: a body that was never the file (%s)" % (path, h))
        else:
            check(status in (None, 403, 404), "%s: status %s" % (path, status))
    # Nothing stale: from VALID + SLACK after each change, the newest state.
    for path in (fpath, dpath):
        tl = [x for x in timeline if x[1] == path]
        names = {h: "state %d" % i for i, (_, _, _, h, _) in enumerate(tl) if h}
        for i, (when, _, status, h, _) in enumerate(tl):
            end = tl[i + 1][4] if i + 1 < len(tl) else time.monotonic()
            # Asked for after the window, answered before the next change.
            win = [g for g in got if g[1] == path and when + VALID + SLACK <= g[0] and
                   g[4] < end]
            check(win, "%s: no answers in the state from %.1fs" % (path, when - tl[0][0]))
            for g in win:
                check(g[2] == status and (h is None or g[3] == h),
                      "%s: asked %.2fs after the change to state %d, answered %.2fs after: "
                      "status %s, body of %s" % (path, g[0] - when, i, g[4] - when, g[2],
                                                 names.get(g[3], g[3])))
    m = srv.metrics()
    check(fc(m, "invalidations_total") >= 5, "invalidations: %d" % fc(m, "invalidations_total"))
    print("  %d answers, %d dropped connections, %d hits, %d misses, %d invalidations" %
          (len(got), sum(1 for g in got if g[2] is None), fc(m, "hits_total"),
           fc(m, "misses_total"), fc(m, "invalidations_total")))
    check(srv.stop() == 0, "exit status")


def group_cache(t):
    t.croot = cache_root(t)
    for step in (cache_counts, cache_inflight, cache_churn, cache_changes):
        t.step(step.__name__, step, t)


GROUPS = {"cache": group_cache}


def main():
    return st.group_main(__doc__, GROUPS, "kite-serve file cache tests")


if __name__ == "__main__":
    sys.exit(main())
