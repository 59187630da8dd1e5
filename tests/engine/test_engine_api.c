/* SPDX-License-Identifier: MIT */
/*
 * The engine's API: every bad input is a clear error, run/stop/timeouts
 * behave as documented, destroy ends live streams with -ECANCELED, and an
 * engine works as a client too: a client-role engine uploads 300 KB (PUT,
 * through the server's receive path) and downloads 1 MB (SEND, through
 * its own), TLS and plaintext, then both sides close gracefully. A server
 * stream makes its TLS session only once the client has spoken. Units (a
 * head and a file range as one item) arrive exactly, bad ones queue
 * nothing, and lanes share a stream fairly. A file kept open by the caller
 * (KITE_SENDFILE_KEEP_FD) goes out many times, and after
 * kite_engine_forget_fd() a different file under the same descriptor
 * number goes out with its own bytes. Small on purpose: this is the test
 * to run under valgrind.
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
	fd = open("/dev/null", O_RDONLY);
	t_assert(kite_stream_sendfile(s, fd, 0, 1, KITE_SENDFILE_CLOSE_FD | KITE_SENDFILE_KEEP_FD) ==
		 -EINVAL, "CLOSE_FD with KEEP_FD");
	t_assert(fcntl(fd, F_GETFD) < 0 && errno == EBADF, "CLOSE_FD | KEEP_FD must close on error");
	fd = open("/dev/null", O_RDONLY);
	t_assert(kite_stream_queue_unit(s, 1, NULL, 0, fd, 0, 1,
					KITE_UNIT_CLOSE_FD | KITE_UNIT_KEEP_FD) == -EINVAL,
		 "unit with CLOSE_FD and KEEP_FD");
	t_assert(fcntl(fd, F_GETFD) < 0 && errno == EBADF, "unit CLOSE_FD | KEEP_FD must close on error");
	t_assert(kite_engine_forget_fd(NULL, 3) == -EINVAL, "forget_fd(NULL)");
	t_assert(kite_engine_forget_fd(e, -1) == -EINVAL, "forget_fd(-1)");
	t_ok(kite_engine_forget_fd(e, 1000)); /* never registered: nothing to do */
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

/* ---- Units: a head and a file range as one item, fair lanes ---- */

/* Run e until the peer socket pfd has given want bytes (or 10 s). */
static size_t read_all(struct kite_engine *e, int pfd, uint8_t *buf, size_t want)
{
	uint64_t until = t_now_ms() + 10000;
	size_t have = 0;

	while (have < want && t_now_ms() < until) {
		ssize_t n;

		t_ok(kite_engine_run(e, 1));
		n = recv(pfd, buf + have, want - have, MSG_DONTWAIT);
		if (n > 0)
			have += (size_t)n;
	}
	return have;
}

/* Every bad input is an error that queues nothing and closes the fd when
 * asked to; good units arrive exactly, head then range. */
static void unit_calls(void)
{
	const uint32_t CL = KITE_UNIT_CLOSE_FD;
	struct kite_engine_config c;
	struct kite_engine *e;
	struct kite_stream *s;
	struct et_file f;
	uint8_t big[2000], got[4096], want[4096];
	size_t q, wl = 0;
	int fd, sv[2];

	et_make_file(&f, 65536, 31);
	kite_engine_config_init(&c);
	c.max_queued = 4096;
	t_ok(kite_engine_create(&e, &c));
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		t_fail("socketpair");
	t_ok(kite_engine_adopt(e, sv[0], &s));

#define CLOSED(fd) (fcntl((fd), F_GETFD) < 0 && errno == EBADF)
	t_assert(kite_stream_queue_unit(NULL, 1, "h", 1, -1, 0, 0, 0) == -EINVAL, "NULL stream");
	t_assert(kite_stream_queue_unit(s, 1, NULL, 4, -1, 0, 0, 0) == -EINVAL, "NULL head");
	t_assert(kite_stream_queue_unit(s, 1, "h", 1, -1, 0, 10, 0) == -EINVAL, "range without fd");
	fd = dup(f.fd);
	t_assert(kite_stream_queue_unit(s, 1, "h", 1, fd, -1, 10, CL) == -EINVAL, "offset -1");
	t_assert(CLOSED(fd), "CLOSE_FD must close on -EINVAL (offset)");
	fd = dup(f.fd);
	t_assert(kite_stream_queue_unit(s, 1, "h", 1, fd, 0, 10, CL | 0x80) == -EINVAL, "flags");
	t_assert(CLOSED(fd), "CLOSE_FD must close on -EINVAL (flags)");
	fd = dup(f.fd);
	t_assert(kite_stream_queue_unit(s, 1, "h", 1, fd, INT64_MAX - 5, 10, CL) == -EINVAL,
		 "range past off_t");
	t_assert(CLOSED(fd), "CLOSE_FD must close on -EINVAL (range)");
	t_assert(kite_stream_queued(s) == 0, "an error queued %zu bytes", kite_stream_queued(s));
	/* A head that could never fit; then all-or-nothing at the limit. */
	fd = dup(f.fd);
	t_assert(kite_stream_queue_unit(s, 1, got, sizeof(got), fd, 0, 10, CL) == -EMSGSIZE,
		 "head over max_queued");
	t_assert(CLOSED(fd), "CLOSE_FD must close on -EMSGSIZE");
	memset(big, 'a', sizeof(big));
	t_ok(kite_stream_queue_unit(s, 1, big, sizeof(big), -1, 0, 0, 0));
	q = kite_stream_queued(s);
	t_assert(q == sizeof(big) + 64, "queued %zu", q);
	fd = dup(f.fd);
	t_assert(kite_stream_queue_unit(s, 2, big, sizeof(big), fd, 0, 100, CL) == -ENOBUFS,
		 "over max_queued: want -ENOBUFS");
	t_assert(CLOSED(fd), "CLOSE_FD must close on -ENOBUFS");
	t_assert(kite_stream_queued(s) == q, "-ENOBUFS queued something: %zu", kite_stream_queued(s));
	/* Nothing at all, and bytes only with an empty range (fd closed). */
	t_ok(kite_stream_queue_unit(s, 3, NULL, 0, -1, 0, 0, 0));
	t_assert(kite_stream_queued(s) == q, "an empty unit was charged");
	fd = dup(f.fd);
	t_ok(kite_stream_queue_unit(s, 0, "bbbbbbbbbbbbbbbb", 16, fd, 0, 0, CL));
	t_assert(CLOSED(fd), "bytes-only unit: CLOSE_FD must close the unused fd");
	/* Lane 1 again: behind its first unit and behind the lane-0 bytes
	 * (queued after the first unit had become the head item). */
	fd = dup(f.fd);
	t_ok(kite_stream_queue_unit(s, 1, "HDR!", 4, fd, 100, 1000, CL));
	memcpy(want, big, sizeof(big));
	wl = sizeof(big);
	memset(want + wl, 'b', 16);
	wl += 16;
	memcpy(want + wl, "HDR!", 4);
	wl += 4;
	t_assert(pread(f.ref, want + wl, 1000, 100) == 1000, "ref");
	wl += 1000;
	t_assert(read_all(e, sv[1], got, wl) == wl, "peer got too little");
	t_assert(!memcmp(got, want, wl), "unit bytes differ (head, lane-0 bytes, head + range)");
	t_assert(CLOSED(fd), "CLOSE_FD: fd still open after the unit went out");
	t_ok(kite_stream_close(s));
	fd = dup(f.fd);
	t_assert(kite_stream_queue_unit(s, 1, "h", 1, fd, 0, 1, CL) == -EPIPE, "after close");
	t_assert(CLOSED(fd), "CLOSE_FD must close on -EPIPE");
#undef CLOSED
	close(sv[1]);
	kite_engine_destroy(e);
	et_close_files(&f, 1);
	printf("unit calls: errors queue nothing, bytes exact\n");
}

/* Fairness. In one callback the server queues a big transfer on lane 1
 * (64 KiB units), then what an HTTP/2 server queues for two more streams:
 * HEADERS on lane 0, DATA as units on lanes 2 and 3, a control frame on
 * lane 0. The receiver parses the stream and checks every byte, the order
 * within each lane, HEADERS before their DATA, and that nothing small
 * waited for lane 1 beyond the unit that had started. Over TLS the client
 * reads record by record (RX in userspace: one GnuTLS record per
 * kite_recv) to see that a unit's head shares records with its payload. */
#define U_HDR 16
#define U_BIG 65536u           /* one lane-1 unit, head included */
#define U_SMALL 4096u          /* payload of a lane 2/3 unit */

struct u_rec {
	uint16_t lane;
	uint32_t seq;
	uint64_t pos;          /* stream offset of its header */
};

static struct {
	struct et_file f;
	unsigned nbig;
	uint64_t small_off;    /* file offset of the small units' payloads */
	uint64_t total;        /* bytes the server queued */
	uint64_t per_item_records; /* records if each item is sealed on its own */
	bool opened, closed, ktx;
	int close_err;
	/* Receiver. */
	uint8_t hdr[U_HDR];
	size_t hdr_have;
	uint64_t pos, payload_left, payload_off;
	struct u_rec seen[1024];
	unsigned nseen;
	uint64_t records, full_records;
} U;

static void u_header(uint8_t *h, uint16_t lane, uint32_t seq, uint32_t off, uint32_t len)
{
	memcpy(h, "UN", 2);
	memcpy(h + 2, &lane, 2);
	memcpy(h + 4, &seq, 4);
	memcpy(h + 8, &off, 4);
	memcpy(h + 12, &len, 4);
}

static void u_unit(struct kite_stream *s, uint16_t lane, uint32_t seq, uint64_t off, uint32_t len)
{
	uint8_t h[U_HDR];

	u_header(h, lane, seq, (uint32_t)off, len);
	if (!lane)
		t_assert(kite_stream_send(s, h, U_HDR) == U_HDR, "lane-0 bytes");
	else
		t_ok(kite_stream_queue_unit(s, lane, h, U_HDR, U.f.fd, (off_t)off, len, 0));
	U.total += U_HDR + len;
	U.per_item_records += (U_HDR + len + 16383) / 16384;
}

static void u_open(struct kite_stream *s)
{
	struct kite_conn_info ci;

	U.opened = true;
	if (kite_stream_conn(s) && !kite_conn_info(kite_stream_conn(s), &ci))
		U.ktx = ci.ktls[KITE_TX];
	for (unsigned k = 0; k < U.nbig; k++)
		u_unit(s, 1, k, (uint64_t)k * (U_BIG - U_HDR), U_BIG - U_HDR);
	u_unit(s, 0, 0, 0, 0);                               /* HEADERS of stream 2 */
	u_unit(s, 2, 0, U.small_off, U_SMALL);               /* its DATA */
	u_unit(s, 0, 1, 0, 0);                               /* HEADERS of stream 3 */
	u_unit(s, 3, 0, U.small_off + U_SMALL, U_SMALL);     /* its DATA */
	u_unit(s, 2, 1, U.small_off + 2 * U_SMALL, U_SMALL); /* more DATA of stream 2 */
	u_unit(s, 0, 2, 0, 0);                               /* a control frame */
	t_ok(kite_stream_close(s));
}

static void u_close(struct kite_stream *s, int err)
{
	(void)s;
	U.closed = true;
	U.close_err = err;
}

/* Parse and check what arrived. */
static void u_consume(const uint8_t *p, size_t n)
{
	uint8_t ref[16384];

	while (n) {
		if (!U.payload_left) {
			size_t k = U_HDR - U.hdr_have < n ? U_HDR - U.hdr_have : n;
			uint16_t lane;
			uint32_t seq, off, len;

			memcpy(U.hdr + U.hdr_have, p, k);
			U.hdr_have += k;
			p += k;
			n -= k;
			U.pos += k;
			if (U.hdr_have < U_HDR)
				return;
			U.hdr_have = 0;
			t_assert(!memcmp(U.hdr, "UN", 2), "no unit header at stream offset %llu",
				 (unsigned long long)(U.pos - U_HDR));
			memcpy(&lane, U.hdr + 2, 2);
			memcpy(&seq, U.hdr + 4, 4);
			memcpy(&off, U.hdr + 8, 4);
			memcpy(&len, U.hdr + 12, 4);
			t_assert(U.nseen < sizeof(U.seen) / sizeof(U.seen[0]), "too many units");
			U.seen[U.nseen++] = (struct u_rec){lane, seq, U.pos - U_HDR};
			U.payload_left = len;
			U.payload_off = off;
			continue;
		}
		{
			size_t k = U.payload_left < n ? (size_t)U.payload_left : n;

			if (k > sizeof(ref))
				k = sizeof(ref);
			t_assert(pread(U.f.ref, ref, k, (off_t)U.payload_off) == (ssize_t)k, "ref");
			t_assert(!memcmp(ref, p, k), "payload differs at stream offset %llu",
				 (unsigned long long)U.pos);
			U.payload_left -= k;
			U.payload_off += k;
			U.pos += k;
			p += k;
			n -= k;
		}
	}
}

/* Where (index in arrival order) unit lane/seq arrived; fails if never. */
static unsigned u_index(uint16_t lane, uint32_t seq)
{
	for (unsigned i = 0; i < U.nseen; i++)
		if (U.seen[i].lane == lane && U.seen[i].seq == seq)
			return i;
	t_fail("unit lane %u seq %u never arrived", lane, seq);
}

static void unit_fairness(bool tls, struct t_creds *cr)
{
	struct kite_ctx *sctx = tls ? t_server_ctx(cr, NULL, KITE_KTLS_DEFAULT) : NULL;
	/* Client RX in userspace: GnuTLS returns one record per call. */
	struct kite_ctx *cctx = tls ? t_client_ctx(NULL, KITE_KTLS_TX) : NULL;
	long long tx0 = t_tls_stat("TlsTxSw");
	struct kite_engine_config c;
	struct kite_engine_stats st;
	struct kite_engine *e;
	struct kite_conn *cc = NULL;
	uint8_t *buf = malloc(1 << 17);
	int fds[2], r = -EAGAIN;
	uint64_t until, user_bytes;
	unsigned i2, i3, h2, h3, c0, first_big_after;
	bool uring = strncmp(et_rung(), "epoll", 5) != 0;

	memset(&U, 0, sizeof(U));
	U.nbig = (unsigned)(et_scaled(8u << 20, 1u << 20) / U_BIG);
	U.small_off = (uint64_t)U.nbig * (U_BIG - U_HDR);
	et_make_file(&U.f, U.small_off + 3 * U_SMALL, 41);
	kite_engine_config_init(&c);
	c.ctx = sctx;
	c.on_open = u_open;
	c.on_close = u_close;
	t_ok(kite_engine_create(&e, &c));
	t_tcp_pair(fds);
	t_ok(kite_engine_adopt(e, fds[1], NULL));
	until = t_now_ms() + 20000;
	if (tls) {
		t_assert(fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0, "nonblock");
		t_ok(kite_conn_create(&cc, cctx, fds[0]));
		while ((r = kite_handshake(cc)) == -EAGAIN && t_now_ms() < until)
			t_ok(kite_engine_run(e, 1));
		t_ok(r);
	}
	until = t_now_ms() + 60000;
	while (t_now_ms() < until) {
		ssize_t n;

		t_ok(kite_engine_run(e, 0));
		if (tls) {
			n = kite_recv(cc, buf, 1 << 17);
		} else {
			n = recv(fds[0], buf, 1 << 17, MSG_DONTWAIT);
			if (n < 0)
				n = errno == EAGAIN ? -EAGAIN : -errno;
		}
		if (n == -EAGAIN) {
			t_ok(kite_engine_run(e, 1));
			continue;
		}
		if (n <= 0)
			break;
		U.records++;
		U.full_records += n == 16384;
		u_consume(buf, (size_t)n);
	}
	/* Our end too: the server lingers for it after its own. */
	(void)shutdown(fds[0], SHUT_WR);
	for (int i = 0; i < 200 && !U.closed; i++)
		t_ok(kite_engine_run(e, 5));
	t_ok(kite_engine_stats(e, &st));
	t_assert(U.closed && U.close_err == 0, "server closed %d with %d", U.closed, U.close_err);
	t_assert(U.pos == U.total && !U.payload_left && !U.hdr_have,
		 "received %llu of %llu bytes", (unsigned long long)U.pos, (unsigned long long)U.total);
	t_assert(U.nseen == U.nbig + 6, "%u units, want %u", U.nseen, U.nbig + 6);

	/* Order within each lane, and lane 0 FIFO. */
	for (unsigned k = 1; k < U.nbig; k++)
		t_assert(u_index(1, k - 1) < u_index(1, k), "lane 1 out of order at %u", k);
	h2 = u_index(0, 0);
	h3 = u_index(0, 1);
	c0 = u_index(0, 2);
	i2 = u_index(2, 0);
	i3 = u_index(3, 0);
	t_assert(h2 < h3 && h3 < c0, "lane 0 not FIFO: %u %u %u", h2, h3, c0);
	t_assert(i2 < u_index(2, 1), "lane 2 out of order");
	/* Bytes queued on lane 0 before a unit precede it. */
	t_assert(h2 < i2 && h3 < i3, "HEADERS after their DATA: %u/%u, %u/%u", h2, i2, h3, i3);
	/* Lane 0 first, then the small units, all right behind the lane-1
	 * unit that was the head item; none waited for the rest of lane 1. */
	t_assert(U.seen[0].lane == 1 && U.seen[0].seq == 0, "first unit: lane %u seq %u",
		 U.seen[0].lane, U.seen[0].seq);
	t_assert(U.seen[h2].pos == U_BIG, "lane-0 bytes at stream offset %llu, want %u",
		 (unsigned long long)U.seen[h2].pos, U_BIG);
	first_big_after = u_index(1, 1);
	t_assert(c0 < i2 && i2 < first_big_after && i3 < first_big_after &&
		 u_index(2, 1) < first_big_after,
		 "small units behind lane 1: lane-0 %u, lane 2 at %u and %u, lane 3 at %u, lane 1 #1 at %u",
		 c0, i2, u_index(2, 1), i3, first_big_after);

	printf("units (%s, %s): %u units, %llu bytes; lane 0 at offset %llu, lanes 2 and 3 done by "
	       "%llu of %llu; %llu records (%llu full)\n", tls ? "TLS" : "plaintext",
	       U.ktx ? "kernel TX" : tls ? "userspace TX" : "no TLS", U.nseen,
	       (unsigned long long)U.total, (unsigned long long)U.seen[h2].pos,
	       (unsigned long long)U.seen[first_big_after].pos, (unsigned long long)U.total,
	       (unsigned long long)U.records, (unsigned long long)U.full_records);
	for (int p = 0; p < KITE_PATH_COUNT; p++)
		if (st.path[p].bytes)
			printf("  path %-15s %10llu bytes, %llu items\n",
			       kite_engine_path_name((enum kite_engine_path)p),
			       (unsigned long long)st.path[p].bytes, (unsigned long long)st.path[p].requests);

	user_bytes = U.total - 3 * U_HDR; /* the units' heads and payloads */
	if (tls && !U.ktx) {
		/* Userspace records: each unit sealed as one plaintext, so a
		 * head never makes a record of its own, and its bytes count on
		 * the userspace path with the payload. */
		t_assert(st.path[KITE_PATH_USER].bytes == user_bytes &&
			 st.path[KITE_PATH_SEND].bytes == 3 * U_HDR,
			 "paths: userspace-tls %llu (want %llu), send %llu (want %u)",
			 (unsigned long long)st.path[KITE_PATH_USER].bytes, (unsigned long long)user_bytes,
			 (unsigned long long)st.path[KITE_PATH_SEND].bytes, 3 * U_HDR);
		t_assert(U.records == U.per_item_records, "%llu records, want %llu (one record stream "
			 "per unit)", (unsigned long long)U.records,
			 (unsigned long long)U.per_item_records);
	}
	if (tls && U.ktx) {
		uint64_t sum = 0;

		for (int p = 0; p < KITE_PATH_COUNT; p++)
			sum += st.path[p].bytes;
		t_assert(sum == U.total, "paths carried %llu of %llu bytes", (unsigned long long)sum,
			 (unsigned long long)U.total);
		t_assert(t_tls_stat("TlsTxSw") > tx0, "tls_stat TlsTxSw did not move (%lld)", tx0);
		if (uring) {
			/* Big units spliced, small ones through a buffer, every
			 * piece with "more follows" while something is queued
			 * behind it: the kernel fills every record but the last. */
			t_assert(st.path[KITE_PATH_KTLS_SPLICE].bytes > 0 &&
				 st.path[KITE_PATH_KTLS_COPY].bytes > 0, "no ktls-splice or ktls-copy bytes");
			t_assert(U.records == (U.total + 16383) / 16384,
				 "%llu records for %llu bytes: a unit's head or a piece ended a record early",
				 (unsigned long long)U.records, (unsigned long long)U.total);
		} else {
			/* sendfile(2) ends a record with each call (and a call
			 * cut short by a full socket ends one early), so records
			 * are not counted here. */
			t_assert(st.path[KITE_PATH_KTLS_SENDFILE].bytes > 0, "no ktls-sendfile bytes");
		}
	}
	if (tls && t_require_ktls())
		t_assert(U.ktx, "server TX not offloaded");
	kite_engine_destroy(e);
	kite_conn_destroy(cc);
	close(fds[0]);
	et_close_files(&U.f, 1);
	free(buf);
	kite_ctx_destroy(sctx);
	kite_ctx_destroy(cctx);
}

/* ---- Kept file descriptors (KITE_SENDFILE_KEEP_FD) ---- */

static bool kept_open;

static void kept_on_open(struct kite_stream *s)
{
	(void)s;
	kept_open = true;
}

/* Run the engine until the peer has read len bytes, which must be the
 * bytes [off, off + len) of f. */
static void expect_range(struct kite_engine *e, int fd, struct kite_conn *cc,
			 const struct et_file *f, size_t off, size_t len, const char *what)
{
	uint8_t *got = malloc(len), *want = malloc(len);
	uint64_t until = t_now_ms() + 30000;
	size_t have = 0;

	t_assert(got && want, "malloc");
	while (have < len && t_now_ms() < until) {
		ssize_t n;

		t_ok(kite_engine_run(e, 1));
		do {
			if (cc) {
				n = kite_recv(cc, got + have, len - have);
			} else {
				n = read(fd, got + have, len - have);
				if (n < 0)
					n = -errno;
			}
			if (n > 0)
				have += (size_t)n;
		} while (n > 0 && have < len);
		t_assert(n > 0 || n == -EAGAIN, "%s: peer read %zd after %zu bytes", what, n, have);
	}
	t_assert(have == len, "%s: %zu of %zu bytes arrived", what, have, len);
	t_assert(pread(f->ref, want, len, (off_t)off) == (ssize_t)len, "reference file");
	t_assert(!memcmp(got, want, len), "%s: wrong bytes (an old registration's file?)", what);
	free(got);
	free(want);
}

/* Ranges of a kept descriptor, small (read into a buffer) and large
 * (splice on kernel TLS and plaintext), checked byte for byte. */
static void send_kept(struct kite_engine *e, struct kite_stream *s, int peer, struct kite_conn *cc,
		      int fd, const struct et_file *f, const char *what)
{
	for (unsigned i = 0; i < 12; i++) {
		size_t len = i % 2 ? 200000 : 4096, off = (i * 4099u) % (f->size - len);

		if (i % 3 == 2) /* a unit on a lane of its own takes the flag too */
			t_ok(kite_stream_queue_unit(s, 1, NULL, 0, fd, (off_t)off, len,
						    KITE_UNIT_KEEP_FD));
		else
			t_ok(kite_stream_sendfile(s, fd, (off_t)off, len, KITE_SENDFILE_KEEP_FD));
		expect_range(e, peer, cc, f, off, len, what);
	}
}

/* A descriptor kept across many ranges is registered with the ring once
 * (rung uring); after forget and close, another file that gets the same
 * descriptor number must go out with its own bytes, never through the
 * old registration. A range queued before the forget still sends its
 * file. */
static void kept_files(struct t_creds *cr, bool tls)
{
	struct kite_ctx *sctx = tls ? t_server_ctx(cr, NULL, KITE_KTLS_DEFAULT) : NULL;
	struct kite_ctx *cctx = tls ? t_client_ctx(NULL, KITE_KTLS_DEFAULT) : NULL;
	struct kite_engine_config c;
	struct kite_engine_info info;
	struct kite_engine_stats st;
	struct kite_engine *e;
	struct kite_stream *s;
	struct kite_conn *cc = NULL;
	struct et_file a, b;
	int sv[2], num, r;
	bool table;
	uint64_t until;

	kite_engine_config_init(&c);
	c.ctx = sctx;
	c.on_open = kept_on_open;
	t_ok(kite_engine_create(&e, &c));
	t_ok(kite_engine_describe(e, &info));
	table = strstr(info.detail, "registered file slots") != NULL;
	if (tls) {
		struct sockaddr_in sa;
		socklen_t sl = sizeof(sa);
		int l = kite_listen_reuseport("127.0.0.1", 0, 4);

		t_assert(l >= 0 && !getsockname(l, (struct sockaddr *)&sa, &sl), "listen");
		sv[1] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (sv[1] < 0 || (connect(sv[1], (struct sockaddr *)&sa, sizeof(sa)) && errno != EINPROGRESS))
			t_fail("connect: %s", strerror(errno));
		sv[0] = accept(l, NULL, NULL);
		t_assert(sv[0] >= 0, "accept");
		close(l);
	} else if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv)) {
		t_fail("socketpair");
	}
	kept_open = false;
	t_ok(kite_engine_adopt(e, sv[0], &s));
	until = t_now_ms() + 20000;
	if (tls) {
		t_ok(kite_conn_create(&cc, cctx, sv[1]));
		while ((r = kite_handshake(cc)) == -EAGAIN && t_now_ms() < until)
			t_ok(kite_engine_run(e, 1));
		t_ok(r);
	}
	while (!kept_open && t_now_ms() < until)
		t_ok(kite_engine_run(e, 1));
	t_assert(kept_open, "stream did not open");

	et_make_file(&a, 300000, 31);
	et_make_file(&b, 300000, 32);
	num = a.fd;
	send_kept(e, s, sv[1], cc, num, &a, "kept file");
	t_ok(kite_engine_stats(e, &st));
	t_assert(st.files_registered == (table ? 1u : 0u), "%llu registrations (table: %d)",
		 (unsigned long long)st.files_registered, table);

	/* Forgotten while a range of it is queued: that range still reads it. */
	t_ok(kite_stream_sendfile(s, num, 1000, 200000, KITE_SENDFILE_KEEP_FD));
	t_ok(kite_engine_forget_fd(e, num));
	expect_range(e, sv[1], cc, &a, 1000, 200000, "range queued before the forget");

	/* The caller closes the descriptor; the next file gets its number. */
	t_assert(dup2(b.fd, num) == num, "dup2: %s", strerror(errno));
	send_kept(e, s, sv[1], cc, num, &b, "new file under the old number");
	t_ok(kite_engine_stats(e, &st));
	t_assert(st.files_registered == (table ? 2u : 0u), "%llu registrations after the forget",
		 (unsigned long long)st.files_registered);
	if (tls) {
		struct kite_conn_info ci;

		t_ok(kite_conn_info(kite_stream_conn(s), &ci));
		/* Inside UML the large ranges go file -> pipe -> kTLS socket
		 * through the registered file (SPLICE_F_FD_IN_FIXED) on the
		 * uring rungs, by sendfile(2) on the epoll rung. */
		if (t_require_ktls())
			t_assert(ci.ktls[KITE_TX] && (st.path[KITE_PATH_KTLS_SPLICE].bytes ||
						     st.path[KITE_PATH_KTLS_SENDFILE].bytes),
				 "kept file not sent through kernel TLS: %s", ci.ktls_reason[KITE_TX]);
	}
	printf("kept descriptors (%s, %s): %llu registrations, new file under an old number ok "
	       "(%llu bytes spliced, %llu by sendfile, %llu copied, %llu through GnuTLS)\n",
	       tls ? "TLS" : "plaintext", info.name, (unsigned long long)st.files_registered,
	       (unsigned long long)(st.path[KITE_PATH_KTLS_SPLICE].bytes +
				    st.path[KITE_PATH_PLAIN_SPLICE].bytes),
	       (unsigned long long)(st.path[KITE_PATH_KTLS_SENDFILE].bytes +
				    st.path[KITE_PATH_PLAIN_SENDFILE].bytes),
	       (unsigned long long)(st.path[KITE_PATH_KTLS_COPY].bytes +
				    st.path[KITE_PATH_PLAIN_COPY].bytes),
	       (unsigned long long)st.path[KITE_PATH_USER].bytes);
	t_ok(kite_engine_forget_fd(e, num));
	kite_engine_destroy(e);
	kite_conn_destroy(cc);
	close(sv[1]);
	et_close_files(&a, 1);
	et_close_files(&b, 1);
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
	unit_calls();
	unit_fairness(false, &cr);
	unit_fairness(true, &cr);
	kept_files(&cr, false);
	kept_files(&cr, true);
	engine_client(true, &cr);
	engine_client(false, &cr);
	printf("ok (KITE_ENGINE=%s)\n", et_rung());
	return 0;
}
