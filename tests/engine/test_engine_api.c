/* SPDX-License-Identifier: MIT */
/*
 * The engine's API: every bad input is a clear error, run/stop/timeouts
 * behave as documented, destroy ends live streams with -ECANCELED, and an
 * engine works as a client too: a client-role engine uploads 300 KB (PUT,
 * through the server's receive path) and downloads 1 MB (SEND, through
 * its own), TLS and plaintext, then both sides close gracefully. A server
 * stream makes its TLS session only once the client has spoken. Small on
 * purpose: this is the test to run under valgrind.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "etest.h"

static int expect_create(struct kite_engine_config *cfg, int want, const char *what)
{
	struct kite_engine *e = (void *)1;
	int r = kite_engine_create(&e, cfg);

	t_assert(r == want, "%s: %d (%s), want %d", what, r, kite_engine_create_error(), want);
	if (!r)
		kite_engine_destroy(e);
	else
		t_assert(e == NULL && strcmp(kite_engine_create_error(), "no error"),
			 "%s: no detail", what);
	return r;
}

static void bad_configs(void)
{
	struct kite_engine_config c;
	struct kite_engine *e;

	kite_engine_config_init(NULL); /* no crash */
	kite_engine_destroy(NULL);
	t_assert(kite_engine_create(NULL, &c) == -EINVAL, "NULL out");
	t_assert(kite_engine_create(&e, NULL) == -EINVAL, "NULL cfg");
#define BAD(field, value)                                          \
	do {                                                       \
		kite_engine_config_init(&c);                       \
		c.field = value;                                   \
		expect_create(&c, -EINVAL, #field " = " #value);   \
	} while (0)
	BAD(max_streams, 0);
	BAD(max_queued, 100);
	BAD(buffers, 0);
	BAD(buffer_size, 10000);
	BAD(buffer_size, 512u << 10);
	BAD(small_max, 1u << 20);
	BAD(pipe_size, 100);
	BAD(ring_entries, 1);
	BAD(backend, (enum kite_engine_backend)7);
#undef BAD
	kite_engine_config_init(&c);
	c.pipes = 0; /* no splicing: fine */
	expect_create(&c, 0, "pipes = 0");
}

static void bad_calls(void)
{
	struct kite_engine_config c;
	struct kite_engine *e;
	struct kite_stream *s;
	int fd, sv[2];

	kite_engine_config_init(&c);
	t_ok(kite_engine_create(&e, &c));
	t_assert(kite_engine_run(NULL, 0) == -EINVAL, "run(NULL)");
	t_assert(kite_engine_add_listener(NULL, 3) == -EINVAL, "listener on NULL");
	t_assert(kite_engine_add_listener(e, -1) == -EINVAL, "listener -1");
	fd = open("/dev/null", O_RDONLY);
	t_assert(kite_engine_add_listener(e, fd) == -ENOTSOCK, "listener on a file");
	t_assert(kite_engine_adopt(e, fd, &s) == -ENOTSOCK, "adopt a file");
	close(fd);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	t_assert(kite_engine_add_listener(e, fd) == -EINVAL, "listener on a non-listening socket");
	close(fd);
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	t_assert(kite_engine_adopt(e, fd, &s) == -EINVAL, "adopt UDP");
	close(fd);
	t_assert(kite_engine_adopt(e, -1, &s) == -EINVAL, "adopt -1");
	t_assert(kite_engine_describe(e, NULL) == -EINVAL, "describe NULL");
	t_assert(kite_engine_stats(NULL, NULL) == -EINVAL, "stats NULL");
	t_assert(kite_listen_reuseport("not-an-address", 0, 16) == -EINVAL, "bad address");
	t_assert(kite_listen_reuseport(NULL, 0, 0) == -EINVAL, "backlog 0");
	t_assert(strcmp(kite_engine_path_name(KITE_PATH_COUNT), "unknown path") == 0, "path name");

	/* Stream calls on a stream that never opens (plaintext: opens at once). */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		t_fail("socketpair");
	t_ok(kite_engine_adopt(e, sv[0], &s));
	t_assert(kite_stream_engine(s) == e && kite_stream_fd(s) == sv[0], "getters");
	t_assert(kite_stream_conn(s) == NULL, "plaintext has no conn");
	t_assert(kite_stream_send(NULL, "x", 1) == -EINVAL, "send NULL");
	t_assert(kite_stream_send(s, NULL, 1) == -EINVAL, "send NULL buf");
	t_assert(kite_stream_send(s, "x", 0) == 0, "send 0");
	t_assert(kite_stream_send(s, NULL, c.max_queued) == -EINVAL, "NULL buf");
	{
		char *big = calloc(1, c.max_queued);

		t_assert(kite_stream_send(s, big, c.max_queued) == -EMSGSIZE, "over max_queued");
		free(big);
	}
	t_assert(kite_stream_sendfile(s, -1, 0, 10, 0) == -EINVAL, "sendfile fd -1");
	t_assert(kite_stream_sendfile(s, 0, -5, 10, 0) == -EINVAL, "sendfile offset -5");
	t_assert(kite_stream_sendfile(s, 0, 0, 10, 0x80) == -EINVAL, "sendfile flags");
	fd = open("/dev/null", O_RDONLY);
	t_assert(kite_stream_sendfile(s, fd, -1, 1, KITE_SENDFILE_CLOSE_FD) == -EINVAL, "bad + close");
	t_assert(fcntl(fd, F_GETFD) < 0 && errno == EBADF, "CLOSE_FD must close on error");
	t_assert(kite_stream_send(s, "hello", 5) == 5, "send");
	t_assert(kite_stream_queued(s) == 5 + 64, "queued %zu", kite_stream_queued(s));
	t_ok(kite_stream_close(s));
	t_ok(kite_stream_close(s)); /* idempotent */
	t_assert(kite_stream_send(s, "x", 1) == -EPIPE, "send after close");
	t_assert(kite_stream_sendfile(s, 0, 0, 1, 0) == -EPIPE, "sendfile after close");

	/* run(0) handles what is ready; run(50) waits about that long. */
	t_ok(kite_engine_run(e, 0));
	{
		uint64_t t0 = t_now_ms();
		char b[16];

		t_ok(kite_engine_run(e, 50));
		t_assert(t_now_ms() - t0 >= 45, "run(50) returned after %llu ms",
			 (unsigned long long)(t_now_ms() - t0));
		/* The queued bytes went out, then our end. */
		t_assert(read(sv[1], b, sizeof(b)) == 5 && !memcmp(b, "hello", 5), "peer got the bytes");
	}
	close(sv[1]);
	kite_engine_destroy(e);
}

/* A run from inside a callback would wait on the loop it is part of. */
static int nested_run = 1;
static void run_in_callback(struct kite_stream *s)
{
	nested_run = kite_engine_run(kite_stream_engine(s), 0);
}

/* Distinct failures, distinct codes: a full listener table and a nested
 * run each say what they are. */
static void error_codes(void)
{
	struct kite_engine_config c;
	struct kite_engine *e;
	struct kite_stream *s;
	int fds[17], sv[2];

	kite_engine_config_init(&c);
	c.on_open = run_in_callback;
	t_ok(kite_engine_create(&e, &c));
	for (int i = 0; i < 17; i++) {
		fds[i] = kite_listen_reuseport("127.0.0.1", 0, 4);
		t_assert(fds[i] >= 0, "listen: %d", fds[i]);
		if (i < 16)
			t_ok(kite_engine_add_listener(e, fds[i]));
	}
	t_assert(kite_engine_add_listener(e, fds[16]) == -ENOSPC, "17th listener: want -ENOSPC");
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		t_fail("socketpair");
	t_ok(kite_engine_adopt(e, sv[0], &s)); /* plaintext: on_open at the first run */
	t_ok(kite_engine_run(e, 0));
	t_assert(nested_run == -EDEADLK, "run from a callback: %d, want -EDEADLK", nested_run);
	close(sv[1]);
	kite_engine_destroy(e);
	for (int i = 0; i < 17; i++)
		close(fds[i]);
}

/* kite_engine_stop() from another thread wakes run(-1); destroy ends a
 * live stream with -ECANCELED. */
static int cancelled;
static void count_cancel(struct kite_stream *s, int err)
{
	(void)s;
	if (err == -ECANCELED)
		cancelled++;
}

static void *stopper(void *arg)
{
	usleep(100000);
	kite_engine_stop(arg);
	return NULL;
}

static void stop_and_destroy(void)
{
	struct kite_engine_config c;
	struct kite_engine *e;
	pthread_t th;
	int sv[2];
	uint64_t t0;

	kite_engine_config_init(&c);
	c.on_close = count_cancel;
	t_ok(kite_engine_create(&e, &c));
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		t_fail("socketpair");
	t_ok(kite_engine_adopt(e, sv[0], NULL));
	pthread_create(&th, NULL, stopper, e);
	t0 = t_now_ms();
	t_ok(kite_engine_run(e, -1));
	pthread_join(th, NULL);
	t_assert(t_now_ms() - t0 < 5000, "stop took %llu ms", (unsigned long long)(t_now_ms() - t0));
	kite_engine_destroy(e);
	t_assert(cancelled == 1, "on_close(-ECANCELED) %d times", cancelled);
	close(sv[1]);
}

/* ---- An engine as client ---- */

struct cli {
	uint64_t put_len, put_sent, put_hash;
	uint64_t get_len, got;
	char line[64];
	size_t line_len;
	int phase;            /* 0 PUT, 1 hash line, 2 SEND body, 3 done */
	int closed_err;
	bool closed;
	bool ktls_tx, ktls_rx;
};

static struct cli C;

static void put_pump(struct kite_stream *s)
{
	uint8_t blk[16384];

	while (C.phase == 0 && C.put_sent < C.put_len) {
		uint64_t k = C.put_sent / 16384, in = C.put_sent % 16384;
		size_t n = 16384 - in;
		ssize_t r;

		if (n > C.put_len - C.put_sent)
			n = C.put_len - C.put_sent;
		et_send_block(blk, 77, k);
		r = kite_stream_send(s, blk + in, n);
		if (r == -ENOBUFS)
			return;
		t_ok(r);
		C.put_hash = t_hash(C.put_hash, blk + in, n);
		C.put_sent += n;
	}
}

static void c_open(struct kite_stream *s)
{
	char req[64];
	int n = snprintf(req, sizeof(req), "PUT %" PRIu64 "\n", C.put_len);
	struct kite_conn *conn = kite_stream_conn(s);

	if (conn) {
		struct kite_conn_info ci;

		t_ok(kite_conn_info(conn, &ci));
		C.ktls_tx = ci.ktls[KITE_TX];
		C.ktls_rx = ci.ktls[KITE_RX];
	}
	t_ok(kite_stream_send(s, req, (size_t)n));
	C.put_hash = T_HASH_INIT;
	put_pump(s);
}

static void c_data(struct kite_stream *s, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint8_t blk[16384];

	if (!len) {
		/* The server's close_notify may overtake our own close. */
		t_assert(C.phase == 3, "server ended early (phase %d)", C.phase);
		return;
	}
	while (len) {
		if (C.phase == 1) {
			if (*p != '\n') {
				if (C.line_len + 1 < sizeof(C.line))
					C.line[C.line_len++] = (char)*p;
			} else {
				char want[40];
				char req[64];
				int n;

				C.line[C.line_len] = 0;
				snprintf(want, sizeof(want), "HASH %016" PRIx64, C.put_hash);
				t_assert(!strcmp(want, C.line), "upload hash: %s, want %s", C.line, want);
				C.phase = 2;
				n = snprintf(req, sizeof(req), "SEND %" PRIu64 " 99\n", C.get_len);
				t_assert(kite_stream_send(s, req, (size_t)n) == n, "request");
			}
			p++;
			len--;
			continue;
		}
		t_assert(C.phase == 2, "unexpected bytes in phase %d", C.phase);
		{
			uint64_t k = C.got / 16384, in = C.got % 16384;
			size_t n = 16384 - in;

			if (n > len)
				n = len;
			et_send_block(blk, 99, k);
			t_assert(!memcmp(p, blk + in, n), "download: wrong byte near %llu",
				 (unsigned long long)C.got);
			C.got += n;
			p += n;
			len -= n;
			if (C.got == C.get_len) {
				C.phase = 3;
				t_ok(kite_stream_close(s));
			}
		}
	}
}

static void c_drain(struct kite_stream *s)
{
	if (C.phase == 0) {
		put_pump(s);
		if (C.put_sent == C.put_len)
			C.phase = 1;
	}
}

static void c_close(struct kite_stream *s, int err)
{
	C.closed = true;
	C.closed_err = err;
	kite_engine_stop(kite_stream_engine(s));
}

/* A server stream makes its TLS session only when the client's first bytes
 * arrive: a silent connection holds none, a ClientHello makes one. */
static int waited_closes;

static void count_close(struct kite_stream *s, int err)
{
	(void)s;
	(void)err;
	waited_closes++;
}

static void tls_after_first_bytes(struct t_creds *cr)
{
	struct kite_ctx *sctx = t_server_ctx(cr, NULL, KITE_KTLS_DEFAULT);
	struct kite_ctx *cctx = t_client_ctx(NULL, KITE_KTLS_DEFAULT);
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	struct kite_engine_config c;
	struct kite_engine *e;
	struct kite_stream *s;
	struct kite_conn *cc;
	int l, cfd, sfd;

	kite_engine_config_init(&c);
	c.ctx = sctx;
	c.on_close = count_close;
	t_ok(kite_engine_create(&e, &c));
	l = kite_listen_reuseport("127.0.0.1", 0, 4);
	t_assert(l >= 0 && !getsockname(l, (struct sockaddr *)&a, &al), "listen");
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (cfd < 0 || (connect(cfd, (struct sockaddr *)&a, sizeof(a)) && errno != EINPROGRESS))
		t_fail("connect: %s", strerror(errno));
	sfd = accept(l, NULL, NULL);
	t_assert(sfd >= 0, "accept");
	t_ok(kite_engine_adopt(e, sfd, &s));
	for (int i = 0; i < 3; i++)
		t_ok(kite_engine_run(e, 20));
	t_assert(waited_closes == 0, "silent stream closed");
	t_assert(kite_stream_conn(s) == NULL, "a TLS session before the client said anything");
	/* The client's ClientHello (non-blocking: it then waits for us). */
	t_ok(kite_conn_create(&cc, cctx, cfd));
	t_assert(kite_handshake(cc) == -EAGAIN, "client handshake should wait for the server");
	for (int i = 0; i < 100 && !kite_stream_conn(s); i++)
		t_ok(kite_engine_run(e, 10));
	t_assert(waited_closes == 0, "stream closed after the ClientHello");
	t_assert(kite_stream_conn(s) != NULL, "no TLS session after the ClientHello");
	kite_engine_destroy(e); /* the stream ends with -ECANCELED */
	t_assert(waited_closes == 1, "%d closes", waited_closes);
	kite_conn_destroy(cc);
	close(cfd);
	close(l);
	kite_ctx_destroy(sctx);
	kite_ctx_destroy(cctx);
}

/* A TLS client that sends its request and then closes TCP without
 * close_notify (a half-close some clients do) while the answer is still
 * queued: the user has already called kite_stream_close(), so the peer's
 * end only ends receiving. The whole answer and a close_notify still go
 * out and the stream closes gracefully (kite.h, on_data). With the
 * receive side offloaded the kernel reports the bare FIN as a truncation
 * that marks the connection dead; a rung that left it dead would reset the
 * connection with the answer cut short. */
static struct {
	struct et_file f;
	int close_err;
	bool opened, closed, server_krx;
	char why[160];
} FIN;

static void fin_open(struct kite_stream *s)
{
	(void)s;
	FIN.opened = true;
}

static void fin_data(struct kite_stream *s, const void *buf, size_t len)
{
	struct kite_conn_info ci;

	(void)buf;
	if (!len || kite_stream_queued(s))
		return;
	if (!kite_conn_info(kite_stream_conn(s), &ci)) {
		FIN.server_krx = ci.ktls[KITE_RX];
		snprintf(FIN.why, sizeof(FIN.why), "%s", ci.ktls_reason[KITE_RX]);
	}
	t_ok(kite_stream_sendfile(s, FIN.f.fd, 0, FIN.f.size, 0));
	t_ok(kite_stream_close(s));
}

static void fin_close(struct kite_stream *s, int err)
{
	(void)s;
	FIN.close_err = err;
	FIN.closed = true;
}

static void peer_fin_after_close(struct t_creds *cr)
{
	struct kite_ctx *sctx = t_server_ctx(cr, NULL, KITE_KTLS_DEFAULT);
	struct kite_ctx *cctx = t_client_ctx(NULL, KITE_KTLS_DEFAULT);
	int small = 16 << 10, l, cfd, sfd, r = -EAGAIN;
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	struct kite_engine_config c;
	struct kite_engine *e;
	struct kite_conn *cc;
	uint8_t *got, *want;
	size_t have = 0;
	ssize_t n = -EAGAIN;
	uint64_t until;

	memset(&FIN, 0, sizeof(FIN));
	et_make_file(&FIN.f, et_scaled(2u << 20, 1u << 20), 77);
	kite_engine_config_init(&c);
	c.ctx = sctx;
	c.on_open = fin_open;
	c.on_data = fin_data;
	c.on_close = fin_close;
	t_ok(kite_engine_create(&e, &c));
	l = kite_listen_reuseport("127.0.0.1", 0, 4);
	t_assert(l >= 0 && !getsockname(l, (struct sockaddr *)&a, &al), "listen");
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	/* Small buffers both ways: the answer stays queued in the engine
	 * until long after the client's FIN has arrived. */
	(void)setsockopt(cfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	if (cfd < 0 || (connect(cfd, (struct sockaddr *)&a, sizeof(a)) && errno != EINPROGRESS))
		t_fail("connect: %s", strerror(errno));
	sfd = accept(l, NULL, NULL);
	t_assert(sfd >= 0, "accept");
	(void)setsockopt(sfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	t_ok(kite_engine_adopt(e, sfd, NULL));
	t_ok(kite_conn_create(&cc, cctx, cfd));
	until = t_now_ms() + 20000;
	while ((r = kite_handshake(cc)) == -EAGAIN && t_now_ms() < until)
		t_ok(kite_engine_run(e, 1));
	t_ok(r);
	/* The server offloads once its handshake is done; TCP_ULP needs an
	 * established connection, so no FIN before that. */
	while (!FIN.opened && t_now_ms() < until)
		t_ok(kite_engine_run(e, 1));
	t_assert(FIN.opened, "server handshake");
	t_assert(kite_send(cc, "GET\n", 4) == 4, "request");
	/* TCP FIN, no close_notify. */
	t_assert(!shutdown(cfd, SHUT_WR), "shutdown: %s", strerror(errno));
	/* Let the server read the request and the FIN before reading. */
	for (int i = 0; i < 20; i++)
		t_ok(kite_engine_run(e, 1));
	t_assert(!FIN.closed, "server closed before the client read (err %d)", FIN.close_err);
	got = malloc(FIN.f.size + 1);
	t_assert(got != NULL, "malloc");
	until = t_now_ms() + 60000;
	while (t_now_ms() < until) {
		t_ok(kite_engine_run(e, 1));
		n = kite_recv(cc, got + have, FIN.f.size + 1 - have);
		if (n > 0)
			have += (size_t)n;
		else if (n != -EAGAIN)
			break;
	}
	for (int i = 0; i < 200 && !FIN.closed; i++)
		t_ok(kite_engine_run(e, 5));
	t_assert(n == 0, "client read %zu of %zu bytes, then %zd (%s)", have, FIN.f.size, n,
		 kite_conn_strerror(cc, (int)n));
	t_assert(FIN.closed && FIN.close_err == 0, "server stream closed %d with %d, want 0",
		 FIN.closed, FIN.close_err);
	want = malloc(FIN.f.size);
	t_assert(want && pread(FIN.f.ref, want, FIN.f.size, 0) == (ssize_t)FIN.f.size, "ref");
	t_assert(have == FIN.f.size && !memcmp(got, want, have), "answer differs");
	printf("peer FIN after close: %zu bytes, graceful end (server RX %s)\n", have,
	       FIN.server_krx ? "in the kernel" : "in userspace");
	if (t_require_ktls())
		t_assert(FIN.server_krx, "server RX not offloaded: %s", FIN.why);
	free(got);
	free(want);
	kite_engine_destroy(e);
	kite_conn_destroy(cc);
	close(cfd);
	close(l);
	et_close_files(&FIN.f, 1);
	kite_ctx_destroy(sctx);
	kite_ctx_destroy(cctx);
}

/* Both engines on this thread, turn by turn (run(e, 1)): no thread ever
 * blocks in io_uring_enter while the other needs to run. valgrind (3.19)
 * keeps its big lock across io_uring_enter, so this is the shape it can
 * check. */
static bool single_thread;

static void engine_client(bool tls, struct t_creds *cr)
{
	struct kite_ctx *sctx = tls ? t_server_ctx(cr, NULL, KITE_KTLS_DEFAULT) : NULL;
	/* TLS 1.3 tickets reach the engine client after its handshake: with
	 * kernel RX they are control records read through the ring. */
	if (tls)
		t_ok(kite_ctx_enable_tickets(sctx));
	struct kite_ctx *cctx = tls ? t_client_ctx(NULL, KITE_KTLS_DEFAULT) : NULL;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct kite_engine_config c;
	struct kite_engine *e;
	struct kite_stream *s;
	struct kite_engine_stats st;
	struct et_server srv;
	int fd;

	memset(&C, 0, sizeof(C));
	C.put_len = 300000;
	C.get_len = 1000000;
	et_server_init(&srv, sctx);
	srv.cfg.max_queued = 65536; /* the SEND pump meets backpressure */
	if (!single_thread) {
		et_server_start(&srv, false);
	} else {
		struct sockaddr_in sa;
		socklen_t sl = sizeof(sa);

		srv.lfd[0] = kite_listen_reuseport("127.0.0.1", 0, 16);
		t_assert(srv.lfd[0] >= 0, "listen");
		getsockname(srv.lfd[0], (struct sockaddr *)&sa, &sl);
		srv.port = ntohs(sa.sin_port);
		t_ok(kite_engine_create(&srv.e, &srv.cfg));
		t_ok(kite_engine_add_listener(srv.e, srv.lfd[0]));
	}

	kite_engine_config_init(&c);
	c.ctx = cctx;
	c.max_queued = 65536;
	c.on_open = c_open;
	c.on_data = c_data;
	c.on_drain = c_drain;
	c.on_close = c_close;
	t_ok(kite_engine_create(&e, &c));
	fd = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_port = htons(srv.port);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)))
		t_fail("connect");
	t_ok(kite_engine_adopt(e, fd, &s));
	{	/* Nagle off: a small response must not wait for a delayed ACK. */
		int v = 0;
		socklen_t vl = sizeof(v);

		t_assert(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &vl) == 0 && v,
			 "adopted socket without TCP_NODELAY");
		if (single_thread) /* accepted sockets inherit the listener's */
			t_assert(getsockopt(srv.lfd[0], IPPROTO_TCP, TCP_NODELAY, &v, &vl) == 0 && v,
				 "listener without TCP_NODELAY");
	}
	if (tls)
		t_ok(kite_conn_set_server_name(kite_stream_conn(s), "localhost"));
	if (!single_thread) {
		t_ok(kite_engine_run(e, 60000));
		t_ok(kite_engine_stats(e, &st));
		kite_engine_destroy(e);
		et_server_wait_closed(&srv, 1, 5000);
		et_server_stop(&srv);
	} else {
		uint64_t end = t_now_ms() + 120000;

		while ((!C.closed || atomic_load(&srv.closed) < 1) && t_now_ms() < end) {
			t_ok(kite_engine_run(e, 1));
			t_ok(kite_engine_run(srv.e, 1));
		}
		t_ok(kite_engine_stats(e, &st));
		t_ok(kite_engine_stats(srv.e, &srv.stats));
		kite_engine_destroy(e);
		kite_engine_destroy(srv.e);
		close(srv.lfd[0]);
	}
	et_server_report(&srv, tls ? "engine client, TLS: server" : "engine client, plaintext: server");
	t_assert(C.closed && C.closed_err == 0, "client closed %d, err %d (%s)", C.closed, C.closed_err,
		 kite_strerror(C.closed_err));
	t_assert(C.phase == 3, "phase %d", C.phase);
	t_assert(srv.stats.closed_ok == 1, "server: %llu closed ok", (unsigned long long)srv.stats.closed_ok);
	t_assert(st.recv_bytes == C.get_len + 22, "client received %llu",
		 (unsigned long long)st.recv_bytes);
	printf("engine client (%s): PUT %llu + SEND %llu ok%s\n", tls ? "TLS" : "plaintext",
	       (unsigned long long)C.put_len, (unsigned long long)C.get_len,
	       tls ? (C.ktls_rx ? ", client RX in the kernel" : ", client RX in userspace") : "");
	if (tls && t_require_ktls())
		t_assert(C.ktls_tx && C.ktls_rx && atomic_load(&srv.krx) == 1, "kTLS not engaged");
	kite_ctx_destroy(sctx);
	kite_ctx_destroy(cctx);
}

int main(int argc, char **argv)
{
	struct t_creds cr;

	single_thread = argc > 1 && !strcmp(argv[1], "--single-thread");
	/* valgrind holds its lock across io_uring_enter: one thread only. */
	if (et_under_valgrind() && strcmp(et_rung(), "epoll"))
		single_thread = true;

	bad_configs();
	bad_calls();
	error_codes();
	if (!single_thread)
		stop_and_destroy();
	t_make_creds(&cr);
	tls_after_first_bytes(&cr);
	peer_fin_after_close(&cr);
	engine_client(true, &cr);
	engine_client(false, &cr);
	printf("ok (KITE_ENGINE=%s)\n", et_rung());
	return 0;
}
