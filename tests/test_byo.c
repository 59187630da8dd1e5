/* SPDX-License-Identifier: MIT */
/*
 * Bring your own session, over real sockets: a server that configures
 * GnuTLS itself (its own credentials, an SNI callback that reads the
 * session pointer, ALPN) hands its session to kite, either after running
 * the handshake itself (kite_conn_adopt_session) or before it
 * (kite_conn_create_session on a non-blocking socket, kite drives). A kite
 * client downloads a file (kite_sendfile) and a message, and sends one
 * back; bytes are checked by hash.
 *
 * On this host (no kTLS) every direction must fall back with the probe's
 * reason; inside UML (KITE_REQUIRE_KTLS=1) every direction must be in the
 * kernel and /proc/net/tls_stat must move. The fast-path switches
 * (TLS_TX_ZEROCOPY_RO, TLS_RX_EXPECT_NO_PAD) are requested in the
 * create_session case: in the kernel, getsockopt must read them back as 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <linux/tls.h>

#include "common.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

#define FILE_SIZE ((size_t)(1 << 20) + 7)
#define FAST (KITE_KTLS_TX_ZEROCOPY_RO | KITE_KTLS_RX_EXPECT_NO_PAD)

static struct t_creds creds;
static gnutls_certificate_credentials_t server_cred;
static const gnutls_datum_t alpn = {(unsigned char *)"http/1.1", 8};

struct embedder {
	int fd;
	bool adopt;
	const char *prio;
	bool sni_seen;       /* the SNI callback ran, with our session pointer */
	int filefd;
	uint64_t file_hash;
};

/* The embedder's own SNI handling: it reads its state through the
 * session pointer, which kite must leave alone. */
static int on_client_hello(gnutls_session_t s)
{
	struct embedder *e = gnutls_session_get_ptr(s);
	char name[64];
	size_t len = sizeof(name);
	unsigned type;

	if (gnutls_server_name_get(s, name, &len, &type, 0) == 0 && !strcmp(name, "byo.test"))
		e->sni_seen = true;
	return 0;
}

static gnutls_session_t embedder_session(struct embedder *e)
{
	gnutls_session_t s;

	if (gnutls_init(&s, GNUTLS_SERVER) < 0 || gnutls_priority_set_direct(s, e->prio, NULL) < 0 ||
	    gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, server_cred) < 0 ||
	    gnutls_alpn_set_protocols(s, &alpn, 1, 0) < 0)
		t_fail("embedder session setup");
	gnutls_session_set_ptr(s, e);
	gnutls_handshake_set_post_client_hello_function(s, on_client_hello);
	return s;
}

static void check_offload(struct kite_conn *c, const char *who, unsigned fast)
{
	const struct kite_caps *caps = kite_caps_get();
	struct kite_conn_info info;

	t_ok(kite_conn_info(c, &info));
	for (int d = 0; d < KITE_DIR_COUNT; d++) {
		if (t_require_ktls())
			t_assert(info.ktls[d], "%s %s not offloaded: %s", who, kite_dir_name(d),
				 info.ktls_reason[d]);
		else if (caps->ulp)
			t_assert(!info.ktls[d] && !strcmp(info.ktls_reason[d], caps->ulp_reason),
				 "%s %s: ktls %d, reason %s", who, kite_dir_name(d), info.ktls[d],
				 info.ktls_reason[d]);
	}
	if ((fast & KITE_KTLS_TX_ZEROCOPY_RO) && info.ktls[KITE_TX]) {
		int v = 0;
		socklen_t len = sizeof(v);

		t_assert(info.tx_zerocopy_ro, "%s: %s", who, info.tx_zerocopy_ro_reason);
		/* uapi: getsockopt(SOL_TLS, TLS_TX_ZEROCOPY_RO) reads the switch back. */
		t_assert(getsockopt(kite_conn_fd(c), SOL_TLS, TLS_TX_ZEROCOPY_RO, &v, &len) == 0 &&
			 v == 1, "%s: TLS_TX_ZEROCOPY_RO reads %d (%s)", who, v, strerror(errno));
	} else if (fast & KITE_KTLS_TX_ZEROCOPY_RO) {
		t_assert(!info.tx_zerocopy_ro && strstr(info.tx_zerocopy_ro_reason, "not offloaded"),
			 "%s: zerocopy without kernel TX: %s", who, info.tx_zerocopy_ro_reason);
	}
	if ((fast & KITE_KTLS_RX_EXPECT_NO_PAD) && info.ktls[KITE_RX] &&
	    info.version == KITE_TLS13) {
		int v = 0;
		socklen_t len = sizeof(v);

		t_assert(info.rx_expect_no_pad, "%s: %s", who, info.rx_expect_no_pad_reason);
		t_assert(getsockopt(kite_conn_fd(c), SOL_TLS, TLS_RX_EXPECT_NO_PAD, &v, &len) == 0 &&
			 v == 1, "%s: TLS_RX_EXPECT_NO_PAD reads %d (%s)", who, v, strerror(errno));
	} else if (fast & KITE_KTLS_RX_EXPECT_NO_PAD) {
		t_assert(!info.rx_expect_no_pad && strcmp(info.rx_expect_no_pad_reason, "not requested"),
			 "%s: no-pad without kernel TLS 1.3 RX: %s", who, info.rx_expect_no_pad_reason);
	}
	if (!fast)
		t_assert(!info.tx_zerocopy_ro && !info.rx_expect_no_pad, "%s: switch on unasked", who);
	printf("%s: %s %s alpn %s; tx %s (zerocopy-ro: %s); rx %s (no-pad: %s)\n", who,
	       info.version_name, info.cipher_name, info.alpn, info.ktls_reason[KITE_TX],
	       info.tx_zerocopy_ro_reason, info.ktls_reason[KITE_RX], info.rx_expect_no_pad_reason);
}

static void *server(void *arg)
{
	struct embedder *e = arg;
	gnutls_session_t s = embedder_session(e);
	struct kite_ctx *ctx;
	struct kite_conn *c = NULL;
	uint8_t buf[256];
	uint64_t h = T_HASH_INIT;
	off_t off = 0;
	int r;

	/* Role and offload policy only: no credentials, the session has them. */
	t_ok(kite_ctx_create(&ctx, KITE_SERVER));
	t_ok(kite_ctx_set_ktls(ctx, KITE_KTLS_DEFAULT | (e->adopt ? 0 : FAST) |
				    (t_require_ktls() ? KITE_KTLS_REQUIRE : 0)));
	if (e->adopt) {
		/* The embedder's whole handshake and a first request, in
		 * userspace; then the session goes to kite. */
		gnutls_transport_set_int(s, e->fd);
		do
			r = gnutls_handshake(s);
		while (r < 0 && !gnutls_error_is_fatal(r));
		t_assert(r == 0, "embedder handshake: %s", gnutls_strerror(r));
		do
			r = (int)gnutls_record_recv(s, buf, sizeof(buf));
		while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
		t_assert(r == 4 && !memcmp(buf, "GET\n", 4), "request in userspace: %d", r);
		r = kite_conn_adopt_session(&c, ctx, s, e->fd);
		if (r)
			t_fail("adopt: %s", kite_conn_strerror(c, r));
	} else {
		t_assert(fcntl(e->fd, F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK");
		t_ok(kite_conn_create_session(&c, ctx, s, e->fd));
		t_handshake(c, "server");
		t_assert(t_recv_hash(c, 4, &h) == 4, "request");
	}
	kite_ctx_destroy(ctx); /* the connection keeps its reference */
	t_assert(e->sni_seen, "the embedder's SNI callback did not see byo.test");
	check_offload(c, "server", e->adopt ? 0 : FAST);

	t_sendfile_all(c, e->filefd, &off, FILE_SIZE);
	t_send_all(c, "done", 4);
	h = T_HASH_INIT;
	t_assert(t_recv_hash(c, 5, &h) == 5 && h == t_hash(T_HASH_INIT, "thanks", 5),
		 "client message");
	while ((r = kite_shutdown(c)) == -EAGAIN)
		t_wait(c);
	t_ok(r);
	kite_conn_destroy(c); /* and with it the embedder's session */
	return NULL;
}

static void run(bool adopt, enum kite_version v)
{
	struct embedder e = {.adopt = adopt, .prio = t_priority(v, KITE_AES_128_GCM)};
	const char *const protos[] = {"http/1.1"};
	long long tx0 = t_tls_stat("TlsTxSw"), rx0 = t_tls_stat("TlsRxSw");
	long long nopad0 = t_tls_stat("TlsRxNoPadViolation");
	struct kite_ctx *cctx;
	struct kite_conn *c;
	struct kite_conn_info info;
	uint64_t h = T_HASH_INIT;
	pthread_t th;
	int fds[2];

	printf("-- %s, %s\n", adopt ? "adopt an established session" : "kite drives the handshake",
	       kite_version_name(v));
	t_tcp_pair(fds);
	e.fd = fds[1];
	e.filefd = t_temp_file(FILE_SIZE, 42, &e.file_hash);
	cctx = t_client_ctx(e.prio, KITE_KTLS_DEFAULT | (adopt ? 0 : KITE_KTLS_RX_EXPECT_NO_PAD) |
					    (t_require_ktls() ? KITE_KTLS_REQUIRE : 0));
	t_ok(kite_ctx_set_alpn(cctx, protos, 1));
	t_ok(kite_conn_create(&c, cctx, fds[0]));
	t_ok(kite_conn_set_server_name(c, "byo.test"));
	if (pthread_create(&th, NULL, server, &e))
		t_fail("pthread_create");
	t_handshake(c, "client");
	t_send_all(c, "GET\n", 4);
	t_assert(t_recv_hash(c, FILE_SIZE, &h) == FILE_SIZE && h == e.file_hash, "file body");
	h = T_HASH_INIT;
	t_assert(t_recv_hash(c, 4, &h) == 4 && h == t_hash(T_HASH_INIT, "done", 4), "trailer");
	t_send_all(c, "thanks", 5);
	pthread_join(th, NULL);
	h = T_HASH_INIT;
	t_assert(t_recv_hash(c, 1, &h) == 0, "close_notify expected");
	check_offload(c, "client", adopt ? 0 : KITE_KTLS_RX_EXPECT_NO_PAD);
	t_ok(kite_conn_info(c, &info));
	t_assert(!strcmp(info.alpn, "http/1.1"), "ALPN %s", info.alpn);
	if (t_require_ktls()) {
		t_assert(t_tls_stat("TlsTxSw") >= tx0 + 2 && t_tls_stat("TlsRxSw") >= rx0 + 2,
			 "tls_stat did not move: TlsTxSw %lld -> %lld", tx0, t_tls_stat("TlsTxSw"));
		/* kite pads nothing: no record made the no-pad path retry. */
		if (nopad0 >= 0)
			t_assert(t_tls_stat("TlsRxNoPadViolation") == nopad0, "no-pad violations");
	}
	kite_conn_destroy(c);
	kite_ctx_destroy(cctx);
	close(fds[0]);
	close(fds[1]);
	close(e.filefd);
}

int main(void)
{
	t_make_creds(&creds);
	if (gnutls_certificate_allocate_credentials(&server_cred) < 0 ||
	    gnutls_certificate_set_x509_key_file(server_cred, creds.cert, creds.key,
						 GNUTLS_X509_FMT_PEM) < 0)
		t_fail("server credentials");
	run(true, KITE_TLS13);
	run(true, KITE_TLS12);
	run(false, KITE_TLS13);
	gnutls_certificate_free_credentials(server_cred);
	printf("PASS\n");
	return 0;
}
