/* SPDX-License-Identifier: MIT */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>

void t_fail_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "FAIL %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

void t_skip(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "SKIP: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(T_SKIP);
}

bool t_require_ktls(void)
{
	const char *e = getenv("KITE_REQUIRE_KTLS");

	return e && !strcmp(e, "1");
}

bool t_kernel_offloads(enum kite_version v, enum kite_cipher c)
{
	const struct kite_caps *caps = kite_caps_get();

	return !caps->offload[v][c][KITE_TX] && !caps->offload[v][c][KITE_RX];
}

void t_tcp_pair(int fds[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &alen))
		t_fail("listen: %s", strerror(errno));
	fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof(a)))
		t_fail("connect: %s", strerror(errno));
	fds[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (fds[1] < 0)
		t_fail("accept: %s", strerror(errno));
	close(l);
}

static char cleanup_dir[256];

static void rm_creds(void)
{
	char p[320];

	if (!cleanup_dir[0])
		return;
	snprintf(p, sizeof(p), "%s/cert.pem", cleanup_dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/key.pem", cleanup_dir);
	unlink(p);
	rmdir(cleanup_dir);
}

static void write_file(const char *path, const gnutls_datum_t *d, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	if (fd < 0 || write(fd, d->data, d->size) != (ssize_t)d->size || close(fd))
		t_fail("writing %s: %s", path, strerror(errno));
}

void t_make_creds(struct t_creds *out)
{
	gnutls_x509_privkey_t key;
	gnutls_x509_crt_t crt;
	gnutls_datum_t pem;
	unsigned char serial[8];
	time_t now = time(NULL);
	const char *tmp = getenv("TMPDIR");

	snprintf(out->dir, sizeof(out->dir), "%s/kite-test-XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(out->dir))
		t_fail("mkdtemp: %s", strerror(errno));
	snprintf(out->cert, sizeof(out->cert), "%s/cert.pem", out->dir);
	snprintf(out->key, sizeof(out->key), "%s/key.pem", out->dir);
	if (!cleanup_dir[0]) {
		snprintf(cleanup_dir, sizeof(cleanup_dir), "%s", out->dir);
		atexit(rm_creds);
	}

	if (gnutls_x509_privkey_init(&key) < 0 ||
	    gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
					 GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) < 0 ||
	    gnutls_x509_crt_init(&crt) < 0)
		t_fail("key generation");
	gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial));
	serial[0] &= 0x7f;
	if (gnutls_x509_crt_set_version(crt, 3) < 0 ||
	    gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)) < 0 ||
	    gnutls_x509_crt_set_activation_time(crt, now - 3600) < 0 ||
	    gnutls_x509_crt_set_expiration_time(crt, now + 86400) < 0 ||
	    gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, "localhost", 9) < 0 ||
	    gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "localhost", 9,
						 GNUTLS_FSAN_SET) < 0 ||
	    gnutls_x509_crt_set_key(crt, key) < 0 ||
	    gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0) < 0)
		t_fail("certificate generation");
	if (gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &pem) < 0)
		t_fail("cert export");
	write_file(out->cert, &pem, 0644);
	gnutls_free(pem.data);
	if (gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &pem) < 0)
		t_fail("key export");
	write_file(out->key, &pem, 0600);
	gnutls_memset(pem.data, 0, pem.size);
	gnutls_free(pem.data);
	gnutls_x509_crt_deinit(crt);
	gnutls_x509_privkey_deinit(key);
}

struct kite_ctx *t_server_ctx(const struct t_creds *cr, const char *prio, unsigned ktls)
{
	struct kite_ctx *ctx;

	t_ok(kite_ctx_create(&ctx, KITE_SERVER));
	if (kite_ctx_set_credentials(ctx, cr->cert, cr->key))
		t_fail("credentials: %s", kite_ctx_error(ctx));
	if (prio && kite_ctx_set_priority(ctx, prio))
		t_fail("priority: %s", kite_ctx_error(ctx));
	t_ok(kite_ctx_set_ktls(ctx, ktls));
	return ctx;
}

struct kite_ctx *t_client_ctx(const char *prio, unsigned ktls)
{
	struct kite_ctx *ctx;

	t_ok(kite_ctx_create(&ctx, KITE_CLIENT));
	t_ok(kite_ctx_set_verify(ctx, false));
	if (prio && kite_ctx_set_priority(ctx, prio))
		t_fail("priority: %s", kite_ctx_error(ctx));
	t_ok(kite_ctx_set_ktls(ctx, ktls));
	return ctx;
}

const char *t_priority(enum kite_version v, enum kite_cipher c)
{
	static const char *cn[] = {"AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305", "AES-128-CCM"};
	static char buf[160];

	snprintf(buf, sizeof(buf), "NORMAL:-VERS-ALL:+VERS-TLS%s:-CIPHER-ALL:+%s",
		 v == KITE_TLS13 ? "1.3" : "1.2", cn[c]);
	return buf;
}

long long t_tls_stat(const char *name)
{
	FILE *f = fopen("/proc/net/tls_stat", "r");
	char key[64];
	long long v, r = -1;

	if (!f)
		return -1;
	while (fscanf(f, "%63s %lld", key, &v) == 2)
		if (!strcmp(key, name))
			r = v;
	fclose(f);
	return r;
}

void t_fill(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		p[i] = (uint8_t)(x >> 24);
	}
}

uint64_t t_hash(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

int t_temp_file(size_t n, uint64_t seed, uint64_t *hash)
{
	const char *tmp = getenv("TMPDIR");
	char path[256];
	uint8_t *buf = malloc(1 << 20);
	uint64_t x = seed;
	int fd;

	snprintf(path, sizeof(path), "%s/kite-data-XXXXXX", tmp ? tmp : "/tmp");
	fd = mkstemp(path);
	if (fd < 0 || !buf)
		t_fail("mkstemp: %s", strerror(errno));
	unlink(path);
	*hash = T_HASH_INIT;
	for (size_t done = 0; done < n;) {
		size_t k = n - done < (1u << 20) ? n - done : (1u << 20);

		t_fill(buf, k, x++);
		*hash = t_hash(*hash, buf, k);
		if (write(fd, buf, k) != (ssize_t)k)
			t_fail("write temp: %s", strerror(errno));
		done += k;
	}
	free(buf);
	return fd;
}

void t_wait(struct kite_conn *c)
{
	struct pollfd pfd = {.fd = kite_conn_fd(c), .events = kite_conn_poll_events(c)};
	int r;

	t_assert(pfd.events != 0, "-EAGAIN without poll events");
	do
		r = poll(&pfd, 1, 60000);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		t_fail("no progress for 60 s waiting for %s",
		       pfd.events & POLLOUT ? "POLLOUT" : "POLLIN");
}

void t_handshake(struct kite_conn *c, const char *who)
{
	int r;

	while ((r = kite_handshake(c)) == -EAGAIN)
		t_wait(c);
	if (r)
		t_fail("%s handshake: %s", who, kite_conn_strerror(c, r));
}

void t_send_all(struct kite_conn *c, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	size_t done = 0;

	while (done < n) {
		ssize_t r = kite_send(c, p + done, n - done);

		if (r == -EAGAIN) {
			t_wait(c);
			continue;
		}
		if (r <= 0)
			t_fail("kite_send(%zu) after %zu = %zd: %s", n, done, r,
			       kite_conn_strerror(c, (int)r));
		done += (size_t)r;
	}
}

void t_sendfile_all(struct kite_conn *c, int fd, off_t *off, size_t len)
{
	off_t end = *off + (off_t)len;

	while (*off < end) {
		ssize_t r = kite_sendfile(c, fd, off, (size_t)(end - *off));

		if (r == -EAGAIN) {
			t_wait(c);
			continue;
		}
		if (r <= 0)
			t_fail("kite_sendfile at %lld: %zd: %s", (long long)*off, r,
			       kite_conn_strerror(c, (int)r));
	}
}

size_t t_recv_hash(struct kite_conn *c, size_t max, uint64_t *hash)
{
	static __thread uint8_t buf[65536];
	size_t got = 0;

	while (got < max) {
		size_t want = max - got < sizeof(buf) ? max - got : sizeof(buf);
		ssize_t r = kite_recv(c, buf, want);

		if (r == -EAGAIN) {
			t_wait(c);
			continue;
		}
		if (r == 0)
			break;
		if (r < 0)
			t_fail("kite_recv after %zu bytes: %s", got, kite_conn_strerror(c, (int)r));
		*hash = t_hash(*hash, buf, (size_t)r);
		got += (size_t)r;
	}
	return got;
}
