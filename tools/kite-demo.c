/* SPDX-License-Identifier: MIT */
/*
 * kite-demo: one TLS transfer over loopback, the way kite does it. A server
 * thread sends a file with kite_sendfile(), a client thread receives it and
 * checks its SHA-256; the demo prints what was negotiated, which directions
 * the kernel encrypts (or why not), the throughput and the kernel's own
 * kTLS counters. With a kTLS kernel the file leaves through sendfile(2)
 * into kernel TLS; without one, through GnuTLS records in userspace.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>

#include "kite.h"

struct server {
	struct kite_ctx *ctx;
	int fd, file;
	size_t size;
	int err;
	char msg[512];
};

static void usage(FILE *f)
{
	fprintf(f, "usage: kite-demo [--size MIB] [--priority STRING] [--ktls on|off|require]\n"
		   "Sends MIB (default 64) MiB over a loopback TLS connection with kite and\n"
		   "reports which directions the kernel encrypted.\n");
}

static long long tls_stat(const char *name)
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

static int tcp_pair(int fds[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), r = -1;

	if (l < 0)
		return -1;
	if (!bind(l, (struct sockaddr *)&a, sizeof(a)) && !listen(l, 1) &&
	    !getsockname(l, (struct sockaddr *)&a, &alen) &&
	    (fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0 &&
	    !connect(fds[0], (struct sockaddr *)&a, sizeof(a)) &&
	    (fds[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC)) >= 0)
		r = 0;
	close(l);
	return r;
}

/* A temp file of pseudo-random bytes; returns its fd, SHA-256 in digest. */
static int make_file(size_t size, uint8_t digest[32])
{
	char path[] = "/tmp/kite-demo-XXXXXX";
	gnutls_hash_hd_t h;
	uint8_t *buf = malloc(1 << 20);
	int fd = mkstemp(path);

	if (fd < 0 || !buf || gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) {
		free(buf);
		return -1;
	}
	unlink(path);
	for (size_t done = 0; done < size;) {
		size_t n = size - done < (1u << 20) ? size - done : (1u << 20);

		if (gnutls_rnd(GNUTLS_RND_NONCE, buf, n) < 0 || write(fd, buf, n) != (ssize_t)n) {
			close(fd);
			fd = -1;
			break;
		}
		gnutls_hash(h, buf, n);
		done += n;
	}
	gnutls_hash_deinit(h, digest);
	free(buf);
	return fd;
}

static void *serve(void *arg)
{
	struct server *s = arg;
	struct kite_conn *c = NULL;
	off_t off = 0;
	int r = kite_conn_create(&c, s->ctx, s->fd);

	if (!r)
		r = kite_handshake(c);
	while (!r && (size_t)off < s->size) {
		ssize_t n = kite_sendfile(c, s->file, &off, s->size - (size_t)off);

		if (n < 0)
			r = (int)n;
	}
	if (!r)
		r = kite_shutdown(c);
	if (r)
		snprintf(s->msg, sizeof(s->msg), "%s", kite_conn_strerror(c, r));
	s->err = r;
	kite_conn_destroy(c);
	return NULL;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"size", required_argument, NULL, 's'},
		{"priority", required_argument, NULL, 'p'},
		{"ktls", required_argument, NULL, 'k'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const struct kite_caps *caps = kite_caps_get();
	struct kite_ctx *cctx = NULL;
	struct kite_conn *c = NULL;
	struct kite_conn_info info;
	struct server s = {0};
	const char *prio = NULL;
	unsigned ktls = KITE_KTLS_DEFAULT;
	uint8_t want[32], got[32];
	long long tx0, rx0;
	char fp[96];
	gnutls_hash_hd_t h;
	size_t size = 64u << 20, total = 0;
	uint8_t *buf = NULL;
	pthread_t th;
	double t0, t1;
	int fds[2] = {-1, -1}, r, o, ret = 1;

	while ((o = getopt_long(argc, argv, "s:p:k:h", opts, NULL)) != -1) {
		switch (o) {
		case 's': {
			char *end;
			long v = strtol(optarg, &end, 10);

			if (*end || v < 0 || v > 65536) {
				fprintf(stderr, "kite-demo: --size: want MiB from 0 to 65536, got \"%s\"\n", optarg);
				return 2;
			}
			size = (size_t)v << 20;
			break;
		}
		case 'p': prio = optarg; break;
		case 'k':
			if (!strcmp(optarg, "on"))
				ktls = KITE_KTLS_DEFAULT;
			else if (!strcmp(optarg, "off"))
				ktls = 0;
			else if (!strcmp(optarg, "require"))
				ktls = KITE_KTLS_DEFAULT | KITE_KTLS_REQUIRE;
			else {
				fprintf(stderr, "kite-demo: --ktls: want on, off or require, got \"%s\"\n", optarg);
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	printf("kernel TLS: %s\n", caps->ulp_reason);
	if ((r = kite_ctx_create(&s.ctx, KITE_SERVER)) ||
	    (r = kite_ctx_set_ephemeral_cert(s.ctx, "localhost", fp)) ||
	    (prio && (r = kite_ctx_set_priority(s.ctx, prio))) ||
	    (r = kite_ctx_set_ktls(s.ctx, ktls)) ||
	    (r = kite_ctx_create(&cctx, KITE_CLIENT)) || (r = kite_ctx_set_verify(cctx, false)) ||
	    (prio && (r = kite_ctx_set_priority(cctx, prio)))) {
		fprintf(stderr, "kite-demo: %s: %s\n", kite_strerror(r),
			kite_ctx_error(cctx ? cctx : s.ctx));
		goto out;
	}
	printf("certificate: self-signed ECDSA P-256, SHA-256 %s\n", fp);
	s.size = size;
	s.file = make_file(size, want);
	buf = malloc(1 << 20);
	if (s.file < 0 || !buf || tcp_pair(fds) || gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) {
		fprintf(stderr, "kite-demo: setup: %s\n", strerror(errno));
		goto out;
	}
	s.fd = fds[1];
	tx0 = tls_stat("TlsTxSw"), rx0 = tls_stat("TlsRxSw");
	t0 = now();
	pthread_create(&th, NULL, serve, &s);

	r = kite_conn_create(&c, cctx, fds[0]);
	if (!r)
		r = kite_handshake(c);
	for (ssize_t n = 1; !r && n > 0; total += (size_t)n) {
		n = kite_recv(c, buf, 1 << 20);
		if (n < 0)
			r = (int)n;
		else
			gnutls_hash(h, buf, (size_t)n);
	}
	t1 = now();
	gnutls_hash_deinit(h, got);
	if (r)
		shutdown(fds[0], SHUT_RDWR); /* unblock the server */
	pthread_join(th, NULL);
	if (r || s.err) {
		fprintf(stderr, "kite-demo: client: %s\n", r ? kite_conn_strerror(c, r) : "ok");
		if (s.err)
			fprintf(stderr, "kite-demo: server: %s\n", s.msg);
		goto out;
	}
	kite_conn_info(c, &info);
	printf("negotiated: %s %s\n", info.version_name, info.cipher_name);
	/* The client's RX is the server's TX: report the server's send path
	 * through what the client saw, plus the client's own state. */
	printf("client tx: %s\nclient rx: %s\n", info.ktls_reason[KITE_TX], info.ktls_reason[KITE_RX]);
	printf("transfer: %zu MiB server -> client with kite_sendfile, %s, %.0f MB/s\n",
	       size >> 20, memcmp(want, got, 32) || total != size ? "SHA-256 MISMATCH" : "SHA-256 ok",
	       size / 1e6 / (t1 - t0));
	if (tx0 >= 0)
		printf("/proc/net/tls_stat: TlsTxSw +%lld, TlsRxSw +%lld (software kTLS contexts)\n",
		       tls_stat("TlsTxSw") - tx0, tls_stat("TlsRxSw") - rx0);
	else
		printf("/proc/net/tls_stat: absent (no kTLS in this kernel)\n");
	if (info.ktls[KITE_RX])
		printf("result: the kernel encrypted and decrypted this transfer (kTLS)\n");
	else
		printf("result: userspace GnuTLS records (fallback): %s\n", info.ktls_reason[KITE_RX]);
	ret = memcmp(want, got, 32) || total != size;
out:
	kite_conn_destroy(c);
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	if (s.file > 0)
		close(s.file);
	kite_ctx_destroy(cctx);
	kite_ctx_destroy(s.ctx);
	free(buf);
	return ret;
}
