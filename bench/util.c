/* SPDX-License-Identifier: MIT */
/* kite-bench helpers: sockets, pinning, CPU time, data files, certificates. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/x509.h>

#include "bench.h"

const struct bench_cipher bench_ciphers[BENCH_NCIPHERS] = {
	{KITE_AES_128_GCM, "AES-128-GCM", "AES-128-GCM", GNUTLS_CIPHER_AES_128_GCM},
	{KITE_AES_256_GCM, "AES-256-GCM", "AES-256-GCM", GNUTLS_CIPHER_AES_256_GCM},
	{KITE_CHACHA20_POLY1305, "CHACHA20-POLY1305", "CHACHA20-POLY1305",
	 GNUTLS_CIPHER_CHACHA20_POLY1305},
};

const char *bench_priority(char *buf, size_t len, enum kite_version v, const struct bench_cipher *c)
{
	snprintf(buf, len, "NORMAL:-VERS-ALL:+VERS-TLS%s:-CIPHER-ALL:+%s",
		 v == KITE_TLS13 ? "1.3" : "1.2", c->prio);
	return buf;
}

/* ---- Sockets ---------------------------------------------------------------- */

static struct sockaddr_in loopback(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

int bench_listen(int *fd, uint16_t *port)
{
	struct sockaddr_in a = loopback(0);
	socklen_t alen = sizeof(a);
	int l;

	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0)
		return -errno;
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 16) ||
	    getsockname(l, (struct sockaddr *)&a, &alen)) {
		int e = -errno;

		close(l);
		return e;
	}
	*fd = l;
	*port = ntohs(a.sin_port);
	return 0;
}

int bench_nodelay(int fd)
{
	int one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ? -errno : 0;
}

int bench_connect(uint16_t port)
{
	struct sockaddr_in a = loopback(port);
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) || bench_nodelay(fd)) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

int bench_tcp_pair(int fds[2])
{
	uint16_t port;
	int l, r;

	fds[0] = fds[1] = -1;
	r = bench_listen(&l, &port);
	if (r)
		return r;
	fds[0] = bench_connect(port);
	if (fds[0] < 0) {
		r = fds[0];
		goto out;
	}
	fds[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	r = fds[1] < 0 ? -errno : bench_nodelay(fds[1]);
	if (r) {
		for (int i = 0; i < 2; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		fds[0] = fds[1] = -1;
	}
out:
	close(l);
	return r;
}

/* ---- CPUs ------------------------------------------------------------------- */

int bench_cpus(int cpu[2])
{
	cpu_set_t set;
	int n = 0;

	cpu[0] = cpu[1] = -1;
	if (sched_getaffinity(0, sizeof(set), &set))
		return 1;
	for (int i = 0; i < CPU_SETSIZE && n < 2; i++)
		if (CPU_ISSET(i, &set))
			cpu[n++] = i;
	if (n < 2)
		cpu[0] = cpu[1] = -1;
	return n < 2 ? 1 : 2;
}

int bench_pin(int cpu, struct bench_affinity *old)
{
	cpu_set_t set;
	int r;

	_Static_assert(sizeof(old->mask) >= sizeof(cpu_set_t), "mask too small");
	if (old)
		old->saved = false;
	if (cpu < 0)
		return 0;
	if (old) {
		r = pthread_getaffinity_np(pthread_self(), sizeof(cpu_set_t), (cpu_set_t *)old->mask);
		if (r)
			return -r;
		old->saved = true;
	}
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	r = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	return -r;
}

void bench_unpin(const struct bench_affinity *old)
{
	if (old && old->saved)
		pthread_setaffinity_np(pthread_self(), sizeof(cpu_set_t), (const cpu_set_t *)old->mask);
}

static void rusage_cpu(int who, struct bench_cpu *out)
{
	struct rusage ru;

	memset(out, 0, sizeof(*out));
	if (getrusage(who, &ru))
		return;
	out->user_ns = (uint64_t)ru.ru_utime.tv_sec * 1000000000u + (uint64_t)ru.ru_utime.tv_usec * 1000u;
	out->sys_ns = (uint64_t)ru.ru_stime.tv_sec * 1000000000u + (uint64_t)ru.ru_stime.tv_usec * 1000u;
}

void bench_thread_cpu(struct bench_cpu *out)
{
	/* RUSAGE_THREAD: this thread only, so the receiver's work on the other
	 * core never counts as the sender's. */
	rusage_cpu(RUSAGE_THREAD, out);
}

void bench_process_cpu(struct bench_cpu *out)
{
	/* RUSAGE_SELF includes threads that have exited, such as io_uring's
	 * io-wq workers that went idle. */
	rusage_cpu(RUSAGE_SELF, out);
}

/* ---- Data files ------------------------------------------------------------- */

static struct {
	size_t size;
	int fd;
} files[16];
static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;

static int make_data_file(size_t size)
{
	const size_t chunk = 1u << 20;
	uint8_t *buf = malloc(chunk);
	uint64_t x = 0x9e3779b97f4a7c15ull ^ size;
	int fd = memfd_create("kite-bench-data", MFD_CLOEXEC), r = 0;

	if (fd < 0 || !buf) {
		r = fd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	for (size_t done = 0; done < size;) {
		size_t n = size - done < chunk ? size - done : chunk;

		/* xorshift: incompressible enough, and cheaper than gnutls_rnd
		 * for 64 MiB inside User-Mode Linux. */
		for (size_t i = 0; i < n; i += 8) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			memcpy(buf + i, &x, n - i < 8 ? n - i : 8);
		}
		if (write(fd, buf, n) != (ssize_t)n) {
			r = -errno;
			goto out;
		}
		done += n;
	}
out:
	free(buf);
	if (r && fd >= 0)
		close(fd);
	return r ? r : fd;
}

int bench_data_file(size_t size)
{
	int fd = -ENOSPC;

	pthread_mutex_lock(&files_lock);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if (files[i].size == size && files[i].fd > 0) {
			fd = files[i].fd;
			break;
		}
		if (!files[i].size) {
			fd = make_data_file(size);
			if (fd >= 0) {
				files[i].size = size;
				files[i].fd = fd;
			}
			break;
		}
	}
	pthread_mutex_unlock(&files_lock);
	return fd;
}

/* ---- Certificates ----------------------------------------------------------- */

static struct bench_creds creds[BENCH_NCERTS] = {
	{.name = "ECDSA-P256"},
	{.name = "RSA-2048"},
};
static bool creds_made[BENCH_NCERTS];
static char creds_dir[256];

static void remove_creds(void)
{
	for (int i = 0; i < BENCH_NCERTS; i++)
		if (creds_made[i]) {
			unlink(creds[i].cert);
			unlink(creds[i].key);
		}
	if (creds_dir[0])
		rmdir(creds_dir);
}

static int write_pem(const char *path, const gnutls_datum_t *d, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode), r = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, d->data, d->size) != (ssize_t)d->size)
		r = -EIO;
	if (close(fd) && !r)
		r = -errno;
	return r;
}

static int make_creds(enum bench_cert which, struct bench_creds *out)
{
	gnutls_x509_privkey_t key = NULL;
	gnutls_x509_crt_t crt = NULL;
	gnutls_datum_t pem = {NULL, 0};
	unsigned char serial[8];
	time_t now = time(NULL);
	int r;

	r = gnutls_x509_privkey_init(&key);
	if (r >= 0)
		r = which == BENCH_RSA_2048
			? gnutls_x509_privkey_generate(key, GNUTLS_PK_RSA, 2048, 0)
			: gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
						       GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
	if (r >= 0)
		r = gnutls_x509_crt_init(&crt);
	if (r >= 0)
		r = gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial));
	serial[0] &= 0x7f; /* a positive INTEGER */
	if (r >= 0)
		r = gnutls_x509_crt_set_version(crt, 3);
	if (r >= 0)
		r = gnutls_x509_crt_set_serial(crt, serial, sizeof(serial));
	if (r >= 0)
		r = gnutls_x509_crt_set_activation_time(crt, now - 3600);
	if (r >= 0)
		r = gnutls_x509_crt_set_expiration_time(crt, now + 7 * 86400);
	if (r >= 0)
		r = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, "localhost", 9);
	if (r >= 0)
		r = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "localhost", 9,
							 GNUTLS_FSAN_SET);
	if (r >= 0)
		r = gnutls_x509_crt_set_key(crt, key);
	if (r >= 0)
		r = gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0);
	if (r >= 0)
		r = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &pem);
	if (r < 0) {
		fprintf(stderr, "kite-bench: %s certificate: %s\n", out->name, gnutls_strerror(r));
		r = -EINVAL;
		goto out;
	}
	snprintf(out->cert, sizeof(out->cert), "%s/%s.crt", creds_dir, out->name);
	snprintf(out->key, sizeof(out->key), "%s/%s.key", creds_dir, out->name);
	r = write_pem(out->cert, &pem, 0644);
	gnutls_free(pem.data);
	pem.data = NULL;
	if (!r && gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &pem) < 0)
		r = -EINVAL;
	if (!r)
		r = write_pem(out->key, &pem, 0600);
	if (r)
		fprintf(stderr, "kite-bench: writing %s: %s\n", out->key, strerror(-r));
out:
	if (pem.data) {
		gnutls_memset(pem.data, 0, pem.size);
		gnutls_free(pem.data);
	}
	gnutls_x509_crt_deinit(crt);
	gnutls_x509_privkey_deinit(key);
	return r;
}

const struct bench_creds *bench_creds(enum bench_cert which)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	const struct bench_creds *ret = NULL;

	pthread_mutex_lock(&lock);
	if (!creds_dir[0]) {
		const char *tmp = getenv("TMPDIR");

		snprintf(creds_dir, sizeof(creds_dir), "%s/kite-bench-XXXXXX", tmp ? tmp : "/tmp");
		if (!mkdtemp(creds_dir)) {
			fprintf(stderr, "kite-bench: mkdtemp %s: %s\n", creds_dir, strerror(errno));
			creds_dir[0] = 0;
			goto out;
		}
		atexit(remove_creds);
	}
	if (!creds_made[which]) {
		if (make_creds(which, &creds[which]))
			goto out;
		creds_made[which] = true;
	}
	ret = &creds[which];
out:
	pthread_mutex_unlock(&lock);
	return ret;
}

/* ---- Misc ------------------------------------------------------------------- */

bool bench_require_ktls(void)
{
	const char *e = getenv("KITE_REQUIRE_KTLS");

	return e && !strcmp(e, "1");
}

bool bench_in_uml(void)
{
	const char *e = getenv("KITE_IN_UML");

	return e && !strcmp(e, "1");
}

int bench_gnutls_handshake(gnutls_session_t s)
{
	int r;

	do
		r = gnutls_handshake(s);
	while (r < 0 && !gnutls_error_is_fatal(r));
	return r;
}
