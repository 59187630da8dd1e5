/* SPDX-License-Identifier: MIT */
/*
 * kite <-> kite transfers for every version x cipher, both directions,
 * send and sendfile, sizes around the record boundary and one large file,
 * close_notify both ways. Where the kernel offloads (inside UML), both
 * directions of both ends must be in the kernel and /proc/net/tls_stat must
 * move; where it cannot (this host), the fallback must say why and carry
 * the same bytes.
 *
 * The same on O_NONBLOCK sockets, then with a 4 KiB SO_SNDBUF on the
 * server's socket, blocking and not.
 *
 * KITE_TEST_BIG_MIB sets the large transfer (default 100 MiB).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "kite-private.h"

static const size_t sizes[] = {0, 1, 16383, 16384, 16385, 65536 * 3 + 7};

struct side {
	struct kite_conn *conn;
	int fd;
	int bigfd;         /* server: file to sendfile */
	size_t big;
	uint64_t big_hash;
	int err;
};

static uint64_t msg_hash(size_t n, uint64_t seed, uint8_t *buf)
{
	t_fill(buf, n, seed);
	return t_hash(T_HASH_INIT, buf, n);
}

/* Receive exactly n bytes and compare with the deterministic message. */
static void expect_msg(struct kite_conn *c, size_t n, uint64_t seed, uint8_t *scratch, const char *what)
{
	uint64_t h = T_HASH_INIT, want = msg_hash(n, seed, scratch);
	size_t got = t_recv_hash(c, n, &h);

	if (got != n || h != want)
		t_fail("%s: %zu of %zu bytes, hash %s", what, got, n, h == want ? "ok" : "MISMATCH");
}

static void *server(void *arg)
{
	struct side *s = arg;
	uint8_t *buf = malloc(1 << 20);
	int r;

	t_handshake(s->conn, "server");

	/* server -> client: kite_send, then the same sizes via sendfile */
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		t_fill(buf, sizes[i], 100 + i);
		t_send_all(s->conn, buf, sizes[i]);
	}
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t h;
		int fd = t_temp_file(sizes[i], 200 + i, &h);
		off_t off = 0;

		t_sendfile_all(s->conn, fd, &off, sizes[i]);
		t_assert(off == (off_t)sizes[i], "offset %lld after %zu", (long long)off, sizes[i]);
		close(fd);
	}
	if (s->big) {
		off_t off = 0;

		t_sendfile_all(s->conn, s->bigfd, &off, s->big);
	}
	/* client -> server */
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		expect_msg(s->conn, sizes[i], 300 + i, buf, "client->server");
	/* The client closes first: we must see an orderly EOF. */
	{
		uint64_t h = T_HASH_INIT;
		size_t n = t_recv_hash(s->conn, 1, &h);

		if (n != 0)
			t_fail("server expected close_notify, got %zu bytes", n);
	}
	while ((r = kite_shutdown(s->conn)) == -EAGAIN)
		t_wait(s->conn);
	if (r)
		t_fail("server shutdown: %s", kite_conn_strerror(s->conn, r));
	free(buf);
	return NULL;
}

static void check_offload(struct kite_conn *c, const char *who, enum kite_version v,
			  enum kite_cipher ci, bool expect)
{
	struct kite_conn_info in;
	const struct kite_caps *caps = kite_caps_get();

	t_ok(kite_conn_info(c, &in));
	t_assert(in.version == (int)v && in.cipher == (int)ci, "%s negotiated %s %s", who,
		 in.version_name, in.cipher_name);
	for (int d = 0; d < KITE_DIR_COUNT; d++) {
		if (expect) {
			if (!in.ktls[d])
				t_fail("%s %s %s %s: not offloaded: %s", who, kite_version_name(v),
				       kite_cipher_name(ci), kite_dir_name(d), in.ktls_reason[d]);
			/* The kernel owns both directions: GnuTLS's session, with
			 * its copy of the keys, must already be gone. */
			t_assert(c->s == NULL, "%s: GnuTLS session kept after full offload", who);
			continue;
		}
		t_assert(!in.ktls[d], "%s %s offloaded although the probe said no", who,
			 kite_dir_name(d));
		t_assert(in.ktls_error[d] == -EOPNOTSUPP, "%s: error %d", who, in.ktls_error[d]);
		/* The connection repeats the probe's reason, word for word. */
		const char *want = caps->ulp ? caps->ulp_reason : caps->offload_reason[v][ci][d];
		t_assert(strcmp(in.ktls_reason[d], want) == 0, "%s reason \"%s\" != \"%s\"", who,
			 in.ktls_reason[d], want);
	}
}

static void run(enum kite_version v, enum kite_cipher ci, const struct t_creds *cr, size_t big,
		int bigfd, uint64_t big_hash, bool nonblocking, int sndbuf)
{
	const char *prio = t_priority(v, ci);
	bool expect = t_kernel_offloads(v, ci);
	struct kite_ctx *sctx = t_server_ctx(cr, prio, KITE_KTLS_DEFAULT);
	struct kite_ctx *cctx = t_client_ctx(prio, KITE_KTLS_DEFAULT);
	long long tx0 = t_tls_stat("TlsTxSw"), rx0 = t_tls_stat("TlsRxSw");
	struct side s = {.bigfd = bigfd, .big = big, .big_hash = big_hash};
	struct kite_conn *c;
	uint8_t *buf = malloc(1 << 20);
	pthread_t th;
	int fds[2], r;

	if (t_require_ktls() && !expect && ci != KITE_AES_128_CCM)
		t_fail("KITE_REQUIRE_KTLS=1 but the kernel cannot offload %s %s: %s",
		       kite_version_name(v), kite_cipher_name(ci),
		       kite_caps_get()->offload_reason[v][ci][KITE_TX]);
	t_tcp_pair(fds);
	if (nonblocking)
		for (int i = 0; i < 2; i++)
			fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
	if (sndbuf)
		t_assert(!setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)),
			 "SO_SNDBUF");
	t_ok(kite_conn_create(&c, cctx, fds[0]));
	t_ok(kite_conn_create(&s.conn, sctx, fds[1]));
	pthread_create(&th, NULL, server, &s);

	t_handshake(c, "client");
	check_offload(c, "client", v, ci, expect);

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		expect_msg(c, sizes[i], 100 + i, buf, "server->client send");
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t h = T_HASH_INIT, want;
		int fd = t_temp_file(sizes[i], 200 + i, &want);
		size_t got = t_recv_hash(c, sizes[i], &h);

		close(fd);
		if (got != sizes[i] || h != want)
			t_fail("server->client sendfile %zu: got %zu, hash %s", sizes[i], got,
			       h == want ? "ok" : "MISMATCH");
	}
	if (big) {
		uint64_t h = T_HASH_INIT;
		size_t got = t_recv_hash(c, big, &h);

		if (got != big || h != big_hash)
			t_fail("big transfer: %zu of %zu bytes, hash %s", got, big,
			       h == big_hash ? "ok" : "MISMATCH");
	}
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		t_fill(buf, sizes[i], 300 + i);
		t_send_all(c, buf, sizes[i]);
	}
	while ((r = kite_shutdown(c)) == -EAGAIN)
		t_wait(c);
	if (r)
		t_fail("client shutdown: %s", kite_conn_strerror(c, r));
	{
		uint64_t h = T_HASH_INIT;
		size_t n = t_recv_hash(c, 1, &h);

		if (n != 0)
			t_fail("client expected close_notify, got %zu bytes", n);
		t_assert(kite_send(c, "x", 1) == -EPIPE, "send after shutdown must fail");
	}
	pthread_join(th, NULL);
	check_offload(s.conn, "server", v, ci, expect);

	if (expect) {
		/* Each end installed one TX and one RX software context. */
		long long tx = t_tls_stat("TlsTxSw") - tx0, rx = t_tls_stat("TlsRxSw") - rx0;

		t_assert(tx >= 2 && rx >= 2, "tls_stat TlsTxSw +%lld TlsRxSw +%lld", tx, rx);
	}
	printf("%s %-17s %-11s%s tx=%s rx=%s (+%zu MiB sendfile) ok\n", kite_version_name(v),
	       kite_cipher_name(ci), nonblocking ? "nonblocking" : "blocking",
	       sndbuf ? " 4 KiB SO_SNDBUF" : "", expect ? "kernel" : "userspace",
	       expect ? "kernel" : "userspace", big >> 20);
	fflush(stdout);

	kite_conn_destroy(c);
	kite_conn_destroy(s.conn);
	close(fds[0]);
	close(fds[1]);
	kite_ctx_destroy(cctx);
	kite_ctx_destroy(sctx);
	free(buf);
}

int main(void)
{
	const struct kite_caps *caps = kite_caps_get();
	const char *e = getenv("KITE_TEST_BIG_MIB");
	size_t big = (size_t)(e ? atoi(e) : 100) << 20;
	struct t_creds cr;
	uint64_t big_hash = 0;
	int bigfd = big ? t_temp_file(big, 7, &big_hash) : -1;

	printf("kernel TLS: %s\n", caps->ulp_reason);
	t_make_creds(&cr);
	/* Blocking sockets with the large file, then O_NONBLOCK sockets
	 * (every call may return -EAGAIN) with an 8 MiB prefix of it. */
	for (int v = 0; v < KITE_VERSION_COUNT; v++)
		for (int c = 0; c < KITE_CIPHER_COUNT; c++)
			run(v, c, &cr, big, bigfd, big_hash, false, 0);
	if (big) {
		size_t nb_big = big < (8u << 20) ? big : (8u << 20);
		uint64_t h = T_HASH_INIT;
		uint8_t *b = malloc(1 << 20);

		for (size_t o = 0; o < nb_big; o += 1 << 20) {
			size_t k = nb_big - o < (1u << 20) ? nb_big - o : (1u << 20);

			t_assert(pread(bigfd, b, k, (off_t)o) == (ssize_t)k, "pread");
			h = t_hash(h, b, k);
		}
		free(b);
		big = nb_big, big_hash = h;
	}
	for (int v = 0; v < KITE_VERSION_COUNT; v++)
		for (int c = 0; c < KITE_CIPHER_COUNT; c++)
			run(v, c, &cr, big, bigfd, big_hash, true, 0);
	/* A server socket whose send buffer is always full: kTLS answers
	 * EAGAIN with a record still queued in TCP, which the library must
	 * push (kite_ktls_push) or the wait for POLLOUT never ends; a blocking
	 * sendfile would wait inside the kernel unless each call is a record
	 * (io_ktls.c). */
	for (int v = 0; v < KITE_VERSION_COUNT; v++) {
		run(v, KITE_AES_128_GCM, &cr, big, bigfd, big_hash, true, 4096);
		run(v, KITE_AES_128_GCM, &cr, big, bigfd, big_hash, false, 4096);
	}
	if (bigfd >= 0)
		close(bigfd);
	return 0;
}
