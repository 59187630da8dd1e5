#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""kite-serve run the way services run, on the host and inside UML.

Groups (each starts its own kite-serve processes, see serve_test.py):

  user      --user nobody:nogroup after binding a port below 1024 with two
            threads and reading root-only keys: /proc/PID/status shows every
            uid and gid dropped, no supplementary groups and no capabilities;
            files are served; SIGHUP re-reads the root-only certificate and
            key (rewritten in place) through the descriptors kept from
            start-up. Without --user, as root, it says once that it keeps root.
  systemd   a listening socket handed in as fd 3 with LISTEN_FDS=1 and
            LISTEN_PID, and a NOTIFY_SOCKET datagram socket: the handed-in
            socket is served by both threads, READY=1, RELOADING=1 + READY=1
            on SIGHUP, STOPPING=1 on SIGTERM
  redirect  --redirect-listen answers 301 to https with the same host and
            path (curl and raw requests), 400 without a Host; --hsts
  sites     two names with their own certificates chosen by SNI (Python ssl,
            curl --resolve, openssl s_client -servername / -noservername),
            one name with ECDSA and RSA chosen by the client's signature
            algorithms, an OCSP response (made with openssl ocsp) stapled
            for one certificate only (s_client -status), all the same after
            SIGHUP with a replaced certificate
  ciphers   the server's cipher order: a client that prefers ChaCha20 gets
            the server's first choice (AES-GCM on a CPU with AES), TLS 1.2
            and 1.3; --priority overrides it
  precompressed  --precompressed: FILE.br / FILE.gz chosen by Accept-Encoding
            (q-values, "*", identity) checked byte for byte, Range and 304 on
            the encoded bytes and ETag, a stale sibling and siblings leaving
            the root never sent, curl --compressed over HTTP/1.1 and HTTP/2
  vhost     --vhost roots by Host / :authority with and without SNI (Host
            decides), other names and no Host get --root, escapes out of a
            site refused, host= in the access log, the same after SIGHUP;
            as root with --user nobody and site directories only the
            descriptors opened before the drop can reach

With KITE_REQUIRE_KTLS=1 (inside UML) every access log line must say
ktls=tx+rx. Exit status: 0 pass, 1 fail, 77 skip.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_test as st  # noqa: E402
from serve_test import (Fail, Server, WAIT, ask, check, check_ktls, connect, expect,  # noqa: E402
                        parse, read_all, req, tls_ctx, tool_env)


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=WAIT, env=tool_env(), **kw)


def make_ca(d):
    key, cert = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=kite test CA"],
        check=True)
    return cert, key


def make_leaf(d, ca, name, kind="ec", tag=""):
    """A certificate for name signed by ca; kind ec or rsa."""
    base = os.path.join(d, "%s-%s%s" % (name, kind, tag))
    key, csr, cert = base + ".key", base + ".csr", base + ".pem"
    newkey = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if kind == "ec"
              else ["-newkey", "rsa:2048"])
    run(["openssl", "req", "-new"] + newkey + ["-nodes", "-keyout", key, "-out", csr,
                                               "-subj", "/CN=" + name], check=True)
    ext = base + ".ext"
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\n" % name)
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext], check=True)
    os.chmod(key, 0o600)
    return cert, key


def der_of(pem_file):
    with open(pem_file) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def peer_der(srv, name=None, version=None):
    ctx = tls_ctx(version)
    raw = socket.create_connection((srv.host, srv.port), timeout=WAIT)
    s = ctx.wrap_socket(raw, server_hostname=name)
    s.sendall(req("GET", "/small.txt"))
    r = parse(read_all(s))
    der = s.getpeercert(binary_form=True)
    s.close()
    check(r and r[0][0] == 200, "GET over SNI %s" % name)
    return der


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            k, _, v = ln.partition(":")
            out[k] = v.split()
    return out


def low_port():
    """A free port below 1024 (only root may bind it)."""
    for p in range(900, 1000):
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise Fail("no free port below 1024")


# ---------------------------------------------------------------- group: user


def group_user(t):
    if os.geteuid() != 0:
        print("  (skipped: --user needs root)")
        return
    # nobody must reach the document root (mkdtemp makes it 0700).
    os.chmod(t.tmp, 0o755)
    d = os.path.join(t.tmp, "user")
    os.makedirs(d)
    ca = make_ca(d)
    cert, key = make_leaf(d, ca, "localhost")
    os.chmod(cert, 0o600)
    keyfile = os.path.join(d, "ticket.key")
    with open(keyfile, "wb") as f:
        f.write(os.urandom(64))
    os.chmod(keyfile, 0o600)
    port = low_port()
    srv = Server(t, "user", ["--user", "nobody:nogroup", "--cert", cert, "--key", key,
                             "--ticket-key-file", keyfile, "--threads", "2"],
                 listen=("127.0.0.1:%d" % port,))
    check(srv.port == port, "listening on %d" % port)
    check("running as root" not in srv.stderr(), "root warning with --user: %s" % srv.stderr())
    s = proc_status(srv.p.pid)
    nobody, nogroup = 65534, 65534
    check(s["Uid"] == [str(nobody)] * 4, "Uid after the drop: %s" % s["Uid"])
    check(s["Gid"] == [str(nogroup)] * 4, "Gid after the drop: %s" % s["Gid"])
    check(s["Groups"] == [], "supplementary groups kept: %s" % s["Groups"])
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        check(int(s[cap][0], 16) == 0, "%s after the drop: %s" % (cap, s[cap]))
    # Every thread, not just main.
    for tid in os.listdir("/proc/%d/task" % srv.p.pid):
        ts = proc_status(int(tid))
        check(ts["Uid"] == [str(nobody)] * 4 and int(ts["CapEff"][0], 16) == 0,
              "thread %s not dropped: %s" % (tid, ts["Uid"]))
    old = der_of(cert)
    for _ in range(4):  # both threads' sockets
        check(peer_der(srv) == old, "certificate before reload")
    hdr, body = expect(srv, "/small.txt", 200)
    check(body == t.files["small.txt"], "body as nobody")
    # The certificate and key are root's 0600: nobody can open neither
    # path. Rewrite both in place; the reload reads the kept descriptors.
    c2, k2 = make_leaf(d, ca, "localhost", tag="-new")
    for src, dst in ((c2, cert), (k2, key)):
        with open(src, "rb") as f, open(dst, "r+b") as g:
            data = f.read()
            g.truncate(0)
            g.write(data)
    srv.send_signal(signal.SIGHUP)
    st.wait_reloaded(srv, 1)
    check("reload failed" not in srv.stderr(), "reload as nobody: %s" % srv.stderr())
    check(peer_der(srv) == der_of(c2), "reload after the drop did not serve the new certificate")
    check_ktls(srv)
    check(srv.stop() == 0, "exit status")

    # A user that does not exist: refused before serving.
    p = run([t.kite_serve, "--user", "no-such-user-kite", "--listen", "127.0.0.1:0"])
    check(p.returncode == 1 and "no such user" in p.stderr, "unknown user: %r" % p.stderr)
    # Root without --user is said once.
    srv = Server(t, "root", [])
    check(srv.stderr().count("running as root") == 1, "root warning: %r" % srv.stderr())
    srv.stop()


# ---------------------------------------------------------------- group: systemd


class Activated:
    """kite-serve started the way systemd starts a socket-activated
    Type=notify service."""

    def __init__(self, t, name, args=()):
        self.dir = os.path.join(t.tmp, name)
        os.makedirs(self.dir)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.host, self.port = self.lsock.getsockname()
        self.nsock_path = os.path.join(self.dir, "notify")
        self.nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.nsock.bind(self.nsock_path)
        self.nsock.settimeout(WAIT)
        self.log = os.path.join(self.dir, "access.log")
        self.err = os.path.join(self.dir, "stderr")
        env = dict(os.environ, LISTEN_FDS="1", NOTIFY_SOCKET=self.nsock_path)
        if t.engine:
            env["KITE_ENGINE"] = t.engine
        lfd = self.lsock.fileno()

        def as_fd3():
            os.dup2(lfd, 3)
            os.set_inheritable(3, True)

        # LISTEN_PID must be the service's own pid: sh sets it to $$ and
        # exec keeps the pid.
        argv = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', t.kite_serve,
                "--root", t.root, "--access-log", self.log, "--threads", "2"] + list(args)
        with open(self.err, "wb") as er:
            self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=er,
                                      stdin=subprocess.DEVNULL, env=env, preexec_fn=as_fd3,
                                      close_fds=False, start_new_session=True)
        t.servers.append(self)

    def notified(self, want):
        got = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            msg = self.nsock.recv(4096).decode()
            got.append(msg)
            if want in msg.split("\n"):
                return got
        raise Fail("no %s from sd_notify (got %r)" % (want, got))

    def stderr(self):
        with open(self.err, errors="replace") as f:
            return f.read()

    def log_lines(self):
        try:
            with open(self.log) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()


def group_systemd(t):
    a = Activated(t, "activated")
    a.notified("READY=1")
    # Both threads accept from the one handed-in socket.
    for i in range(6):
        r = st.ask(a, req("GET", "/f5000.bin"), ["GET"])
        check(r[0][0] == 200 and r[0][2] == t.files["f5000.bin"], "GET %d via systemd socket" % i)
    os.kill(a.p.pid, signal.SIGHUP)
    a.notified("RELOADING=1")
    a.notified("READY=1")
    r = st.ask(a, req("GET", "/small.txt"), ["GET"])
    check(r[0][0] == 200, "GET after reload")
    os.kill(a.p.pid, signal.SIGTERM)
    a.notified("STOPPING=1")
    check(a.p.wait(WAIT) == 0, "exit status")
    deadline = time.monotonic() + WAIT
    while len(a.log_lines()) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    check_ktls(a, a.log_lines())
    # The socket is still the test's: kite-serve used it, did not rebind.
    check(a.lsock.getsockname()[1] == a.port, "socket")


# ---------------------------------------------------------------- group: redirect


def raw_http(host, port, data):
    s = socket.create_connection((host, port), timeout=WAIT)
    s.sendall(data)
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
    s.close()
    return out


def group_redirect(t):
    srv = Server(t, "redirect", ["--redirect-listen", "127.0.0.1:0", "--hsts", "31536000"])
    m = re.search(r"redirect: http://([\d.]+):(\d+)/", srv.banner)
    check(m, "banner lacks the redirect listener: %s" % srv.banner)
    rh, rp = m.group(1), int(m.group(2))
    for host, path, want in (
            ("example.test", "/a/b.html?x=1&y=2", "https://example.test:%d/a/b.html?x=1&y=2"),
            ("example.test:80", "/", "https://example.test:%d/"),
            ("[::1]:80", "/x", "https://[::1]:%d/x"),
            ("example.test", "http://other.test/p", "https://example.test:%d/p")):
        got = raw_http(rh, rp, ("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
        head = got.decode("latin-1")
        check(head.startswith("HTTP/1.1 301 "), "redirect %s %s: %r" % (host, path, head[:80]))
        loc = re.search(r"\r\nLocation: (\S+)\r\n", head)
        check(loc and loc.group(1) == want % srv.port, "Location %s for %s %s" %
              (loc.group(1) if loc else None, host, path))
        check("Content-Length: 0\r\n" in head, "redirect body")
    for bad in (b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: evil.test\"><\r\n\r\n", b"NONSENSE\r\n\r\n"):
        got = raw_http(rh, rp, bad).decode("latin-1")
        check(got.startswith("HTTP/1.1 400 ") and "Location" not in got, "bad %r: %r" %
              (bad, got[:80]))
    if st.need("curl"):
        p = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                 "-H", "Host: site.test", "http://%s:%d/dir/" % (rh, rp)])
        check(p.stdout == "301 https://site.test:%d/dir/" % srv.port, "curl: %r" % p.stdout)
    hdr, _ = expect(srv, "/small.txt", 200)
    check(hdr.get("strict-transport-security") == "max-age=31536000", "HSTS %s" % hdr)
    hdr, _ = expect(srv, "/nonexistent", 404)
    check(hdr.get("strict-transport-security") == "max-age=31536000", "HSTS on errors")
    check_ktls(srv)
    check(srv.stop() == 0, "exit status")


# ---------------------------------------------------------------- group: sites


def make_ocsp(d, ca, cert, name):
    """A DER OCSP response saying cert is good, signed by the CA."""
    serial = run(["openssl", "x509", "-in", cert, "-noout", "-serial"],
                 check=True).stdout.strip().split("=")[1]
    index = os.path.join(d, "index-%s.txt" % name)
    with open(index, "w") as f:
        f.write("V\t301231000000Z\t\t%s\tunknown\t/CN=%s\n" % (serial, name))
    reqf, resp = os.path.join(d, name + ".ocspreq"), os.path.join(d, name + ".ocsp")
    run(["openssl", "ocsp", "-issuer", ca[0], "-cert", cert, "-reqout", reqf, "-no_nonce"],
        check=True)
    run(["openssl", "ocsp", "-index", index, "-CA", ca[0], "-rsigner", ca[0], "-rkey", ca[1],
         "-reqin", reqf, "-respout", resp, "-ndays", "1"], check=True)
    return resp


def make_ocsp_expired(d, ca, cert, name):
    """A DER OCSP response saying cert was good until an hour ago: openssl
    ocsp only dates nextUpdate into the future, so it is built here."""
    import datetime
    try:
        import cryptography  # noqa: F401
    except ImportError:
        # Debian's python3-cryptography lives in the system interpreter's path.
        sys.path.append("/usr/lib/python3/dist-packages")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp as x509_ocsp

    def load(path):
        with open(path, "rb") as f:
            return f.read()
    leaf = x509.load_pem_x509_certificate(load(cert))
    issuer = x509.load_pem_x509_certificate(load(ca[0]))
    key = serialization.load_pem_private_key(load(ca[1]), None)
    now = datetime.datetime.utcnow()
    builder = x509_ocsp.OCSPResponseBuilder().add_response(
        cert=leaf, issuer=issuer, algorithm=hashes.SHA1(),
        cert_status=x509_ocsp.OCSPCertStatus.GOOD,
        this_update=now - datetime.timedelta(days=1),
        next_update=now - datetime.timedelta(hours=1),
        revocation_time=None, revocation_reason=None,
    ).responder_id(x509_ocsp.OCSPResponderEncoding.HASH, issuer)
    resp = os.path.join(d, name + "-expired.ocsp")
    with open(resp, "wb") as f:
        f.write(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    return resp


def s_client(srv, extra):
    p = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (srv.host, srv.port)] + extra,
                       input="", capture_output=True, text=True, timeout=WAIT, env=tool_env())
    return p.stdout + p.stderr


def group_sites(t):
    if not st.need("openssl"):
        return
    d = os.path.join(t.tmp, "sites")
    os.makedirs(d)
    ca = make_ca(d)
    a = make_leaf(d, ca, "a.test")
    b = make_leaf(d, ca, "b.test", "rsa")
    c_ec = make_leaf(d, ca, "c.test")
    c_rsa = make_leaf(d, ca, "c.test", "rsa")
    ocsp = make_ocsp(d, ca, a[0], "a.test")
    srv = Server(t, "sites", ["--cert", a[0], "--key", a[1], "--ocsp-file", ocsp,
                              "--cert", b[0], "--key", b[1],
                              "--cert", c_ec[0], "--key", c_ec[1],
                              "--cert", c_rsa[0], "--key", c_rsa[1]])
    check(srv.banner.count("certificate: ") == 4, "banner: %s" % srv.banner)

    def check_all(a_pem, when):
        for name, pem in (("a.test", a_pem), ("b.test", b[0]), (None, a_pem),
                          ("unknown.test", a_pem)):
            for v in ("1.3", "1.2"):
                check(peer_der(srv, name, v) == der_of(pem),
                      "%s: SNI %s TLS%s got the wrong certificate" % (when, name, v))
        if st.need("curl"):
            p = run(["curl", "-sSk", "-v", "--resolve", "b.test:%d:%s" % (srv.port, srv.host),
                     "https://b.test:%d/small.txt" % srv.port])
            check(p.returncode == 0 and "CN=b.test" in p.stderr, "%s: curl SNI b.test: %s" %
                  (when, p.stderr[-600:]))
        out = s_client(srv, ["-servername", "b.test"])
        check("CN = b.test" in out or "CN=b.test" in out, "%s: s_client b.test" % when)
        out = s_client(srv, ["-noservername"])
        check("CN = a.test" in out or "CN=a.test" in out, "%s: no SNI, not the default" % when)
        # One name, two key types: the client's signature algorithms pick.
        for sigalgs, kind in (("ECDSA+SHA256", "id-ecPublicKey"),
                              ("RSA-PSS+SHA256:RSA+SHA256", "rsaEncryption")):
            out = s_client(srv, ["-servername", "c.test", "-sigalgs", sigalgs, "-showcerts"])
            m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
            check(m, "%s: c.test %s: no certificate: %s" % (when, sigalgs, out[-400:]))
            txt = subprocess.run(["openssl", "x509", "-noout", "-text"], input=m.group(0),
                                 capture_output=True, text=True).stdout
            check(kind in txt and "c.test" in txt, "%s: c.test with %s got %s" %
                  (when, sigalgs, re.findall(r"Public Key Algorithm: (\S+)", txt)))
        # OCSP stapling: a.test has a response, b.test none.
        out = s_client(srv, ["-servername", "a.test", "-status"])
        check("OCSP Response Status: successful" in out and "Cert Status: good" in out,
              "%s: no stapled OCSP for a.test: %s" % (when, out[:800]))
        out = s_client(srv, ["-servername", "b.test", "-status"])
        check("OCSP response: no response sent" in out, "%s: b.test stapled something" % when)

    check_all(a[0], "start")
    # SIGHUP: a.test gets a new certificate (and its own OCSP response).
    a2 = make_leaf(d, ca, "a.test", tag="-2")
    shutil.copy(a2[0], a[0])
    shutil.copy(a2[1], a[1])
    shutil.copy(make_ocsp(d, ca, a2[0], "a2.test"), ocsp)
    srv.send_signal(signal.SIGHUP)
    st.wait_reloaded(srv, 1)
    check_all(a2[0], "after SIGHUP")
    # A response for another certificate is refused with a reason, and
    # serving goes on without stapling.
    shutil.copy(make_ocsp(d, ca, b[0], "b.test"), ocsp)
    srv.send_signal(signal.SIGHUP)
    st.wait_reloaded(srv, 2)
    check("not stapled" in srv.stderr(), "mismatched OCSP accepted: %s" % srv.stderr())
    out = s_client(srv, ["-servername", "a.test", "-status"])
    check("OCSP response: no response sent" in out, "stapled a response for another cert")
    # A response past its nextUpdate is refused the same way: a client
    # must never be handed a stale "good".
    shutil.copy(make_ocsp_expired(d, ca, a2[0], "a2.test"), ocsp)
    srv.send_signal(signal.SIGHUP)
    st.wait_reloaded(srv, 3)
    check("OCSP response has expired" in srv.stderr(),
          "expired OCSP accepted: %s" % srv.stderr()[-600:])
    out = s_client(srv, ["-servername", "a.test", "-status"])
    check("OCSP response: no response sent" in out, "stapled an expired response")
    # Bad combinations of flags.
    for bad in (["--ocsp-file", ocsp], ["--cert", a[0]], ["--cert", a[0], "--key", a[1],
                                                          "--key", b[1]]):
        p = run([t.kite_serve, "--listen", "127.0.0.1:0"] + bad)
        check(p.returncode == 2 and p.stderr, "%s: exit %d %r" % (bad, p.returncode, p.stderr))
    check_ktls(srv)
    check(srv.stop() == 0, "exit status")


# ---------------------------------------------------------------- group: ciphers


def cpu_has_aes():
    try:
        with open("/proc/cpuinfo") as f:
            return bool(re.search(r"^flags\s*:.*\baes\b", f.read(), re.M))
    except OSError:
        return False


def negotiated(srv, extra):
    out = s_client(srv, extra)
    m = re.search(r"Cipher is (\S+)", out)
    check(m, "no cipher from s_client %s: %s" % (extra, out[-400:]))
    return m.group(1)


def group_ciphers(t):
    if not st.need("openssl"):
        return
    srv = Server(t, "ciphers", [])
    prio = re.search(r"TLS priority: (\S+)", srv.banner).group(1)
    check("%SERVER_PRECEDENCE" in prio, "no server order: %s" % prio)
    order = re.findall(r":\+(AES-128-GCM|AES-256-GCM|CHACHA20-POLY1305|AES-128-CCM)", prio)
    # UML reports no CPU flags: the order is then checked against itself.
    if cpu_has_aes() and not st.IN_UML:
        check(order[0] == "AES-128-GCM", "AES CPU but %s first" % order)
    first = order[0]
    # Clients that put ChaCha20 first still get the server's first choice.
    tls13 = {"AES-128-GCM": "TLS_AES_128_GCM_SHA256", "AES-256-GCM": "TLS_AES_256_GCM_SHA384",
             "CHACHA20-POLY1305": "TLS_CHACHA20_POLY1305_SHA256"}
    got = negotiated(srv, ["-tls1_3", "-ciphersuites",
                           "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:"
                           "TLS_AES_128_GCM_SHA256"])
    check(got == tls13[first], "TLS 1.3: %s, want the server's %s" % (got, first))
    tls12 = {"AES-128-GCM": "ECDHE-ECDSA-AES128-GCM-SHA256",
             "AES-256-GCM": "ECDHE-ECDSA-AES256-GCM-SHA384",
             "CHACHA20-POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305"}
    got = negotiated(srv, ["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305:"
                           "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"])
    check(got == tls12[first], "TLS 1.2: %s, want the server's %s" % (got, first))
    expect(srv, "/small.txt", 200)
    check_ktls(srv)
    srv.stop()
    # --priority still decides.
    srv = Server(t, "ciphers-prio", ["--priority", "NORMAL:%SERVER_PRECEDENCE:-CIPHER-ALL:"
                                     "+CHACHA20-POLY1305:+AES-128-GCM"])
    got = negotiated(srv, ["-tls1_3", "-ciphersuites",
                           "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"])
    check(got == "TLS_CHACHA20_POLY1305_SHA256", "--priority ignored: %s" % got)
    srv.stop()


# ---------------------------------------------------------------- group: precompressed


def brotli_stored(data):
    """A valid brotli stream holding data uncompressed (RFC 7932 9.2: one
    uncompressed meta-block per 64 KiB, then an empty last one), so curl's
    decoder can check what it gets without a brotli encoder here."""
    out, first = bytearray(), True
    for i in range(0, len(data), 1 << 16):
        chunk = data[i:i + (1 << 16)]
        # [WBITS=16: 1 bit 0] ISLAST=0, MNIBBLES=4 (00), MLEN-1 (16 bits), ISUNCOMPRESSED=1
        bits, n = (0 << 0) | ((len(chunk) - 1) << 3) | (1 << 19), 20
        if first:
            bits, n, first = bits << 1, n + 1, False
        out += bits.to_bytes((n + 7) // 8, "little")
        out += chunk
    out.append(0x03 if not first else 0x06)  # ISLAST=1, ISLASTEMPTY=1 (after WBITS if empty)
    return bytes(out)


def curl_get(srv, url_path, extra, host="localhost"):
    """curl (HTTP/1.1 unless extra says otherwise): (status, headers, body)."""
    hdrs = os.path.join(srv.dir, "curl-headers")
    p = subprocess.run(["curl", "-sS", "-k", "-D", hdrs, "-o", "-", "--resolve",
                        "%s:%d:%s" % (host, srv.port, srv.host),
                        "https://%s:%d%s" % (host, srv.port, url_path)] + extra,
                       capture_output=True, timeout=WAIT * 2, env=tool_env())
    check(p.returncode == 0, "curl %s %s: %s" % (url_path, extra, p.stderr[-300:]))
    with open(hdrs, "rb") as f:
        blocks = f.read().decode("latin-1").strip().split("\r\n\r\n")
    lines = blocks[-1].split("\r\n")
    status = int(lines[0].split()[1])
    hdr = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        hdr[k.strip().lower()] = v.strip()
    return status, hdr, p.stdout


def tls_tx_sw():
    """TlsTxSw from /proc/net/tls_stat (sockets the kernel encrypted for), or None."""
    try:
        with open("/proc/net/tls_stat") as f:
            m = re.search(r"^TlsTxSw\s+(\d+)", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def group_precompressed(t):
    import gzip
    tx_before = tls_tx_sw()
    root = os.path.join(t.tmp, "pc-root")
    os.makedirs(os.path.join(root, "docs"))
    text = b"".join(b"line %06d of a page that compresses well\n" % i for i in range(3000))

    def put(rel, content, mtime=None):
        path = os.path.join(root, rel)
        with open(path, "wb") as f:
            f.write(content)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return content

    now = int(time.time())
    put("page.html", text, now - 100)
    gz = put("page.html.gz", gzip.compress(text, 9, mtime=0), now - 100)   # as new: served
    br = put("page.html.br", brotli_stored(text), now - 50)                # newer: served
    put("app.js", text[:5000], now - 100)
    gz_js = put("app.js.gz", gzip.compress(text[:5000], mtime=0), now - 99)
    put("stale.css", b"body { color: red }\n", now - 10)
    put("stale.css.gz", gzip.compress(b"body { color: blue }\n", mtime=0), now - 20)  # older
    put("docs/index.html", b"<p>docs</p>\n" * 100, now - 100)
    gz_idx = put("docs/index.html.gz", gzip.compress(b"<p>docs</p>\n" * 100, mtime=0), now)
    put("out.txt", b"inside\n", now - 100)
    secret = os.path.join(t.tmp, "pc-secret.gz")
    with open(secret, "wb") as f:
        f.write(st.MARK)
    os.symlink(secret, os.path.join(root, "out.txt.gz"))        # a sibling leaving the root
    os.symlink("../pc-secret.gz", os.path.join(root, "out.txt.br"))

    srv = Server(t, "precompressed", ["--precompressed"], root=root)
    check("precompressed" in srv.banner, "banner: %s" % srv.banner)

    def one(path, headers=(), method="GET"):
        r = ask(srv, req(method, path, headers), [method])
        check(len(r) == 1, "%s %s: %d responses" % (method, path, len(r)))
        check(st.MARK not in r[0][2], "%s %s leaked a file outside the root" % (path, headers))
        return r[0]

    # Explicit headers: which file, byte for byte, with which fields.
    s, h, b = one("/page.html")
    check(s == 200 and b == text and "content-encoding" not in h and
          h.get("vary") == "Accept-Encoding", "no Accept-Encoding: %d %s" % (s, h))
    id_etag = h["etag"]
    for ae, want, coding in (("gzip", gz, "gzip"), ("br", br, "br"), ("gzip, br", br, "br"),
                             ("br;q=0.5, gzip", gz, "gzip"), ("br;q=0, gzip;q=0.1", gz, "gzip"),
                             ("*", br, "br"), ("*;q=0.2, br;q=0", gz, "gzip"),
                             ("identity", text, None), ("gzip;q=0, br;q=0", text, None),
                             ("identity;q=1, gzip;q=0.5", text, None), ("deflate", text, None),
                             ("*;q=0", text, None)):
        s, h, b = one("/page.html", [("Accept-Encoding", ae)])
        check(s == 200 and b == want and h.get("content-encoding") == coding and
              int(h["content-length"]) == len(want) and h.get("vary") == "Accept-Encoding" and
              h.get("content-type", "").startswith("text/html"),
              "Accept-Encoding %r: %d %s, %d bytes" % (ae, s, h, len(b)))
    s, h, b = one("/page.html", [("Accept-Encoding", "gzip")])
    gz_etag = h["etag"]
    s, h, b = one("/page.html", [("Accept-Encoding", "br")])
    br_etag = h["etag"]
    check(len({id_etag, gz_etag, br_etag}) == 3, "ETags not distinct: %s %s %s" %
          (id_etag, gz_etag, br_etag))
    # Range on the encoded bytes, byte for byte; If-Range with its ETag.
    s, h, b = one("/page.html", [("Accept-Encoding", "gzip"), ("Range", "bytes=100-4195")])
    check(s == 206 and b == gz[100:4196] and
          h.get("content-range") == "bytes 100-4195/%d" % len(gz) and
          h.get("content-encoding") == "gzip", "gzip range: %d %s" % (s, h))
    s, h, b = one("/page.html", [("Accept-Encoding", "br"), ("Range", "bytes=-77"),
                                 ("If-Range", br_etag)])
    check(s == 206 and b == br[-77:], "br suffix range with If-Range: %d %s" % (s, h))
    s, h, b = one("/page.html", [("Accept-Encoding", "br"), ("Range", "bytes=0-9"),
                                 ("If-Range", gz_etag)])
    check(s == 200 and b == br, "If-Range with the gzip ETag on br: %d" % s)
    s, h, b = one("/page.html", [("Accept-Encoding", "gzip"), ("Range", "bytes=%d-" % len(gz))])
    check(s == 416 and h.get("content-range") == "bytes */%d" % len(gz), "416: %d %s" % (s, h))
    # Conditionals on the encoded ETag.
    s, h, b = one("/page.html", [("Accept-Encoding", "gzip"), ("If-None-Match", gz_etag)])
    check(s == 304 and not b and h.get("etag") == gz_etag and h.get("vary") == "Accept-Encoding",
          "304 on the gzip ETag: %d %s" % (s, h))
    s, h, b = one("/page.html", [("Accept-Encoding", "gzip"), ("If-None-Match", id_etag)])
    check(s == 200 and b == gz, "identity ETag does not validate the gzip answer: %d" % s)
    s, h, b = one("/page.html", [("If-None-Match", gz_etag)])
    check(s == 200 and b == text, "gzip ETag does not validate the identity answer: %d" % s)
    s, h, b = one("/page.html", [("Accept-Encoding", "gzip")], method="HEAD")
    check(s == 200 and not b and int(h["content-length"]) == len(gz) and
          h.get("content-encoding") == "gzip", "HEAD gzip: %s" % h)
    # A stale sibling is never sent; a directory index has its own.
    s, h, b = one("/stale.css", [("Accept-Encoding", "gzip")])
    check(s == 200 and b == b"body { color: red }\n" and "content-encoding" not in h,
          "stale .gz served: %s %r" % (h, b))
    s, h, b = one("/docs/", [("Accept-Encoding", "gzip")])
    check(s == 200 and b == gz_idx and h.get("content-encoding") == "gzip", "index.html.gz")
    s, h, b = one("/app.js", [("Accept-Encoding", "gzip, br")])
    check(b == gz_js and h.get("content-encoding") == "gzip", "only .gz exists: %s" % h)
    # Siblings that leave the root are refused like any file outside it.
    for ae in ("gzip", "br", "br, gzip"):
        s, h, b = one("/out.txt", [("Accept-Encoding", ae)])
        check(s == 200 and b == b"inside\n" and "content-encoding" not in h,
              "escaping sibling %s: %d %s %r" % (ae, s, h, b[:40]))
    s, h, b = one("/out.txt.gz")
    check(s == 403, "the escaping sibling by name: %d" % s)

    if st.need("curl"):
        # curl decodes what it gets: the bytes after decoding are FILE's.
        for extra, coding in ((["--compressed"], "br"),
                              (["--compressed", "-H", "Accept-Encoding: gzip"], "gzip"),
                              (["--http2", "--compressed"], "br")):
            s, h, b = curl_get(srv, "/page.html", extra)
            check(s == 200 and h.get("content-encoding") == coding and b == text,
                  "curl %s: %d %s, %d bytes" % (extra, s, h, len(b)))
        # Raw encoded bytes (no decoding), HTTP/1.1 and HTTP/2, whole and ranged.
        for ver in ("--http1.1", "--http2"):
            s, h, b = curl_get(srv, "/page.html", [ver, "-H", "Accept-Encoding: gzip"])
            check(s == 200 and b == gz, "curl %s raw gzip: %d, %d bytes" % (ver, s, len(b)))
            s, h, b = curl_get(srv, "/page.html", [ver, "-H", "Accept-Encoding: br",
                                                   "-r", "1000-30999"])
            check(s == 206 and b == br[1000:31000] and
                  h.get("content-range") == "bytes 1000-30999/%d" % len(br),
                  "curl %s br range: %d %s" % (ver, s, h))
            s, h, b = curl_get(srv, "/page.html", [ver, "-H", "Accept-Encoding: gzip",
                                                   "-H", "If-None-Match: " + gz_etag])
            check(s == 304 and not b, "curl %s 304: %d" % (ver, s))
            # One list in two fields is not joined: the plain file.
            s, h, b = curl_get(srv, "/page.html", [ver, "-H", "Accept-Encoding: gzip",
                                                   "-H", "Accept-Encoding: br"])
            check(s == 200 and b == text and "content-encoding" not in h,
                  "curl %s split Accept-Encoding: %s" % (ver, h))
    lines = srv.wait_log(10)
    check_ktls(srv, lines)
    if st.REQUIRE_KTLS:
        # The encoded files went out through the kernel's TLS: one
        # offloaded socket per connection above.
        check(tls_tx_sw() - tx_before >= len(lines) // 2,
              "TlsTxSw moved %d for %d requests" % (tls_tx_sw() - tx_before, len(lines)))
    check(srv.stop() == 0, "exit status")

    # Without the flag the siblings are ordinary files, never substituted.
    off = Server(t, "precompressed-off", [], root=root)
    s, h, b = ask(off, req("GET", "/page.html", [("Accept-Encoding", "gzip, br")]))[0]
    check(s == 200 and b == text and "content-encoding" not in h and "vary" not in h,
          "without --precompressed: %s" % h)
    check(off.stop() == 0, "exit status")


# ---------------------------------------------------------------- group: vhost


def group_vhost(t):
    base = os.path.join(t.tmp, "vh")
    sites = {}
    for name in ("default", "a", "b"):
        d = os.path.join(base, name)
        os.makedirs(d)
        with open(os.path.join(d, "who.txt"), "wb") as f:
            f.write(b"site %s\n" % name.encode())
        with open(os.path.join(d, "only-%s.txt" % name), "wb") as f:
            f.write(name.encode())
        sites[name] = d
    with open(os.path.join(base, "secret.txt"), "wb") as f:
        f.write(st.MARK)
    a = sites["a"]
    os.symlink("../b/who.txt", os.path.join(a, "to-b"))          # into another site: outside
    os.symlink("../secret.txt", os.path.join(a, "to-secret"))
    os.symlink(os.path.join(base, "secret.txt"), os.path.join(a, "to-secret-abs"))
    os.symlink("/etc", os.path.join(a, "etc"))
    os.symlink("who.txt", os.path.join(a, "same"))               # inside: fine
    args = ["--vhost", "a.test=" + a, "--vhost", "B.Test=" + sites["b"]]
    user = os.geteuid() == 0
    if user:
        # The site directories are reachable only through the descriptors
        # opened before the drop: their parent is root's alone.
        os.chmod(base, 0o700)
        os.chmod(t.tmp, 0o755)
        args += ["--user", "nobody:nogroup"]
    srv = Server(t, "vhost", args, root=sites["default"])
    check(srv.banner.count("vhost: ") == 2, "banner: %s" % srv.banner)
    if user:
        check(proc_status(srv.p.pid)["Uid"] == ["65534"] * 4, "not dropped to nobody")
        os.chown(srv.log, 65534, 65534)  # so that SIGHUP can reopen it as nobody

    def host_get(host, path="/who.txt", ctx=None, server_hostname=None):
        raw = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)
        s = socket.create_connection((srv.host, srv.port), timeout=WAIT)
        s = (ctx or tls_ctx()).wrap_socket(s, server_hostname=server_hostname)
        try:
            s.sendall(raw.encode())
            r = parse(read_all(s))
        finally:
            s.close()
        check(len(r) == 1, "Host %s: %d responses" % (host, len(r)))
        check(st.MARK not in r[0][2], "Host %s %s leaked the secret" % (host, path))
        return r[0]

    def check_sites(when):
        for host, sni, want in (("a.test", None, b"site a\n"), ("A.TEST:%d" % srv.port, None, b"site a\n"),
                                ("a.test.", "a.test", b"site a\n"), ("b.test", "b.test", b"site b\n"),
                                ("b.test", "a.test", b"site b\n"),   # Host picks the root, not SNI
                                ("a.test", "c.test", b"site a\n"),
                                ("c.test", "c.test", b"site default\n"),
                                ("localhost", None, b"site default\n"),
                                ("127.0.0.1:%d" % srv.port, None, b"site default\n")):
            s, h, b = host_get(host, server_hostname=sni)
            check(s == 200 and b == want, "%s: Host %s SNI %s: %d %r, want %r" %
                  (when, host, sni, s, b, want))
        check(host_get("a.test", "/only-a.txt")[0] == 200, "a's own file")
        check(host_get("a.test", "/only-default.txt")[0] == 404, "default root's file under a")
        check(host_get("c.test", "/only-a.txt")[0] == 404, "a's file under another name")
        check(host_get("b.test", "/only-a.txt")[0] == 404, "a's file under b")
        # Ways out of a.test's root.
        for path, ok in (("/to-b", 403), ("/to-secret", 403), ("/to-secret-abs", 403),
                         ("/etc/passwd", 403), ("/../b/who.txt", 400), ("/%2e%2e/secret.txt", 400),
                         ("/same", 200), ("http://b.test/../who.txt", 400)):
            s, h, b = host_get("a.test", path)
            check(s == ok, "%s: a.test %s: %d, want %d" % (when, path, s, ok))
        # HTTP/1.0 without Host: the default root.
        s_ = connect(srv)
        s_.sendall(b"GET /who.txt HTTP/1.0\r\n\r\n")
        r = parse(read_all(s_))
        s_.close()
        check(r[0][2] == b"site default\n", "%s: no Host: %r" % (when, r[0][2]))
        if st.need("curl"):
            for extra in (["--http1.1"], ["--http2"]):
                for name, want in (("a.test", b"site a\n"), ("b.test", b"site b\n"),
                                   ("other.test", b"site default\n")):
                    s, h, b = curl_get(srv, "/who.txt", extra, host=name)
                    check(s == 200 and b == want, "%s: curl %s %s: %d %r" %
                          (when, extra, name, s, b))
            # No SNI at all (an address in the URL), the name only in Host.
            p = subprocess.run(["curl", "-sSk", "-H", "Host: b.test", "--http2",
                                "https://%s:%d/who.txt" % (srv.host, srv.port)],
                               capture_output=True, timeout=WAIT, env=tool_env())
            check(p.stdout == b"site b\n", "%s: curl h2 Host without SNI: %r" % (when, p.stdout))

    check_sites("start")
    srv.send_signal(signal.SIGHUP)
    st.wait_reloaded(srv, 1)
    check_sites("after SIGHUP")
    lines = srv.log_lines()
    check(any(" host=a.test " in ln for ln in lines) and any(" host=b.test " in ln for ln in lines)
          and any(" host=c.test " in ln for ln in lines), "no host= in the log: %s" % lines[:3])
    check(any(re.search(r" host=a\.test:%d stream=\d+ " % srv.port, ln) for ln in lines)
          or not shutil.which("curl"), "HTTP/2 lines lack the host")
    check_ktls(srv, lines)
    check(srv.stop() == 0, "exit status")
    for bad in (["--vhost", "a.test"], ["--vhost", "=" + a], ["--vhost", "a.test="],
                ["--vhost", "a.test=" + os.path.join(base, "nonexistent")],
                ["--vhost", "a.test=" + a, "--vhost", "A.TEST=" + a],
                ["--vhost", "a b=" + a]):
        p = run([t.kite_serve, "--listen", "127.0.0.1:0"] + bad)
        check(p.returncode == 2 and "--vhost" in p.stderr, "%s: exit %d %r" %
              (bad, p.returncode, p.stderr))


GROUPS = {"user": group_user, "systemd": group_systemd, "redirect": group_redirect,
          "sites": group_sites, "ciphers": group_ciphers, "precompressed": group_precompressed,
          "vhost": group_vhost}


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
    print("kite-serve service tests: %s%s" % (" ".join(args.groups),
                                               " (kTLS required)" if st.REQUIRE_KTLS else ""))
    return t.run([("group " + g, GROUPS[g], t) for g in args.groups])


if __name__ == "__main__":
    sys.exit(main())
