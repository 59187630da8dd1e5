/* SPDX-License-Identifier: MIT */
/*
 * The engine under misbehaving peers and resources, on the rung
 * KITE_ENGINE selects, TLS (default) or --plain:
 *
 *   slow        clients reading 8 KiB every 10 ms finish; no send timeout,
 *               per-stream queue stays at one item (bounded memory)
 *   stall       a client that stops reading is cut off by the stalled-send
 *               timeout; the others are served meanwhile
 *   sndbuf      a 4 KiB SO_SNDBUF on the server's sockets, with and without
 *               pipes: whole files still arrive; with kTLS TX the splice and
 *               sendfile paths pushed TCP's queue on EAGAIN
 *   reset       clients resetting mid-body end with an error on the server;
 *               the engine serves the next batch
 *   truncate    a file cut short while it is being sent ends that stream
 *               with -ENODATA; the client gets a reset, never a wrong byte;
 *               a range past the end of a file does the same
 *   exhaust     2 pipes and 4 buffers for 40 concurrent big transfers: rounds
 *               without a pipe take the copy path, all bytes correct
 *   timeouts    a silent client hits the handshake timeout (TLS) or the idle
 *               timeout (plaintext); an idle TLS client hits the idle timeout
 *   keyupdate   mid-body the peer sends a TLS 1.3 KeyUpdate asking for ours:
 *               followed (GnuTLS answers from the receive side while the
 *               server's records are in flight: they must stay in order), or
 *               (kernel RX that cannot rekey) the end with -EKEYEXPIRED
 *   rxbufs      one shared receive buffer (rx_buffers 1) for 48 clients that
 *               upload and download at once: on the uring rung receives find
 *               none free and use the stream's own (rx_nobufs > 0), every
 *               upload's hash and every download's bytes still right; the
 *               other rungs never share
 *   limits      max_streams: the rest is closed at once; pipelined requests
 *               beyond max_queued stop the stream's reading (backpressure);
 *               kite_stream_send() reports -ENOBUFS and on_drain resumes
 *
 *   test_engine_faults [CASE] [--plain]     (no CASE: all of them)
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "etest.h"

/* lib/engine/core.c, internal: every stream's state, when a round times out. */
void eng_debug_dump(const struct kite_engine *e);

static struct kite_ctx *sctx, *cctx;
static bool plain;
static struct t_creds cr;

static void setup(struct et_server *srv, struct et_file *files, unsigned nfiles)
{
	et_server_init(srv, plain ? NULL : sctx);
	srv->files = files;
	srv->nfiles = nfiles;
}

static void get_req(struct et_req *q, unsigned f, uint64_t off, uint64_t len, bool close)
{
	memset(q, 0, sizeof(*q));
	q->kind = 'G';
	q->file = f;
	q->off = off;
	q->len = len;
	q->close = close;
}

static void expect_ok(struct et_client *c, unsigned i, const char *what)
{
	if (!c->done || c->err || c->mismatch)
		t_fail("%s: client %u: %s, err %d (%s)%s, %llu bytes", what, i,
		       c->done ? "done" : "not done", c->err, kite_strerror(c->err),
		       c->mismatch ? ", WRONG BYTES" : "", (unsigned long long)c->bytes);
}

/* ---- slow ---- */
static void case_slow(void)
{
	struct et_file f[1];
	struct et_server srv;
	struct et_client cl[8] = {0};
	struct et_req q[8];
	size_t size = et_scaled(1u << 20, 256u << 10);

	et_make_file(&f[0], size, 1);
	setup(&srv, f, 1);
	srv.cfg.send_timeout_ms = 2000; /* a slow reader still makes progress */
	et_server_start(&srv, false);
	for (unsigned i = 0; i < 8; i++) {
		get_req(&q[i], 0, 0, size, true);
		cl[i].reqs = &q[i];
		cl[i].nreq = 1;
		if (i < 3) {
			cl[i].mode = ET_SLOW;
			cl[i].slow_bytes = 8192;
			cl[i].slow_ms = 10;
		}
	}
	t_assert(et_run_clients(cl, 8, plain ? NULL : cctx, srv.port, f, 120000) == 0, "timeout");
	et_server_wait_closed(&srv, 8, 5000);
	et_server_stop(&srv);
	et_server_report(&srv, "slow readers");
	for (unsigned i = 0; i < 8; i++)
		expect_ok(&cl[i], i, "slow");
	t_assert(srv.stats.timeouts == 0, "a slow reader timed out");
	/* One sendfile item per stream, nothing copied: the queue is its
	 * charge, whatever the reader's speed. */
	t_assert(srv.stats.peak_queued <= 64, "peak queue %llu", (unsigned long long)srv.stats.peak_queued);
	et_close_files(f, 1);
}

/* ---- stall ---- */
static void case_stall(void)
{
	struct et_file f[1];
	struct et_server srv;
	struct et_client cl[4] = {0};
	struct et_req q[4];
	size_t size = et_scaled(64u << 20, 16u << 20);
	uint64_t t0;

	et_make_file(&f[0], size, 2);
	setup(&srv, f, 1);
	srv.cfg.send_timeout_ms = 500;
	et_server_start(&srv, false);
	for (unsigned i = 0; i < 4; i++) {
		get_req(&q[i], 0, 0, i == 0 ? size : 100000, true);
		cl[i].reqs = &q[i];
		cl[i].nreq = 1;
	}
	cl[0].mode = ET_STALL;
	cl[0].reset_after = 65536;
	t0 = t_now_ms();
	t_assert(et_run_clients(cl, 4, plain ? NULL : cctx, srv.port, f, 60000) == 0,
		 "the stalled client was never cut off");
	printf("stalled client cut off after %llu ms\n", (unsigned long long)(t_now_ms() - t0));
	et_server_wait_closed(&srv, 4, 5000);
	et_server_stop(&srv);
	et_server_report(&srv, "stalled reader");
	for (unsigned i = 1; i < 4; i++)
		expect_ok(&cl[i], i, "stall");
	t_assert(!cl[0].mismatch, "wrong bytes");
	t_assert(cl[0].err, "stalled client saw no error");
	t_assert(et_close_count(&srv, -ETIMEDOUT) == 1, "%u streams timed out",
		 et_close_count(&srv, -ETIMEDOUT));
	et_close_files(f, 1);
}

/* ---- sndbuf ---- */
/* A small send buffer: with kTLS TX every round meets a full socket. kTLS
 * queues each record in TCP marked "more follows" and answers EAGAIN
 * without pushing it, so the engine must push (engine/core.c, eng_ktls_push) or
 * the stream waits for room forever with one record unsent. */
static void sndbuf_run(bool copy)
{
	struct et_file f[1];
	struct et_server srv;
	struct et_client cl[4] = {0};
	struct et_req q[4];
	size_t size = et_scaled(16u << 20, 4u << 20);

	et_make_file(&f[0], size, 5);
	setup(&srv, f, 1);
	srv.sndbuf = 4096; /* the kernel doubles it, and keeps a floor of ~4.5 KiB */
	if (copy)
		srv.cfg.pipes = 0; /* io_uring: READ -> SEND (MSG_MORE); epoll: no change */
	et_server_start(&srv, false);
	for (unsigned i = 0; i < 4; i++) {
		get_req(&q[i], 0, 0, size, true);
		cl[i].reqs = &q[i];
		cl[i].nreq = 1;
	}
	if (et_run_clients(cl, 4, plain ? NULL : cctx, srv.port, f, 60000))
		t_fail("a stream with a small send buffer stopped");
	et_server_wait_closed(&srv, 4, 5000);
	et_server_stop(&srv);
	et_server_report(&srv, copy ? "small send buffer, no pipes" : "small send buffer");
	for (unsigned i = 0; i < 4; i++)
		expect_ok(&cl[i], i, "sndbuf");
	/* io_uring's SEND waits for room inside the kernel (it never returns
	 * EAGAIN to us), so only the splice and sendfile paths push. */
	if (atomic_load(&srv.ktx) && !copy)
		t_assert(srv.stats.ktls_pushes > 0, "kTLS TX never met a full socket: the case "
			 "tests nothing");
	else if (!atomic_load(&srv.ktx))
		t_assert(srv.stats.ktls_pushes == 0, "%llu kTLS pushes without kTLS TX",
			 (unsigned long long)srv.stats.ktls_pushes);
	et_close_files(f, 1);
}

static void case_sndbuf(void)
{
	sndbuf_run(false);
	sndbuf_run(true);
}

/* ---- reset ---- */
static void case_reset(void)
{
	struct et_file f[1];
	struct et_server srv;
	struct et_client cl[20] = {0};
	struct et_req q[20];
	size_t size = et_scaled(32u << 20, 8u << 20); /* more than the socket buffers hold */
	unsigned resets = 0;

	et_make_file(&f[0], size, 3);
	setup(&srv, f, 1);
	et_server_start(&srv, false);
	for (int round = 0; round < 2; round++) {
		memset(cl, 0, sizeof(cl));
		for (unsigned i = 0; i < 20; i++) {
			get_req(&q[i], 0, 0, size, true);
			cl[i].reqs = &q[i];
			cl[i].nreq = 1;
			if (round == 0 && i % 2 == 0) {
				cl[i].mode = ET_RESET;
				cl[i].reset_after = 100000 + i * 7919;
			}
		}
		if (et_run_clients(cl, 20, plain ? NULL : cctx, srv.port, f, 120000)) {
			struct kite_engine_stats es;

			if (!kite_engine_stats(srv.e, &es))
				fprintf(stderr, "server: accepted %llu, closed ok %llu, error %llu\n",
					(unsigned long long)es.accepted, (unsigned long long)es.closed_ok,
					(unsigned long long)es.closed_err);
			for (int i = 1; i < 160; i++)
				if (atomic_load(&srv.close_err[i]))
					fprintf(stderr, "  on_close(-%d %s): %u\n", i, kite_strerror(-i),
						atomic_load(&srv.close_err[i]));
			eng_debug_dump(srv.e);
			t_fail("reset round %d: timeout", round);
		}
		for (unsigned i = 0; i < 20; i++) {
			if (cl[i].mode == ET_RESET) {
				t_assert(!cl[i].mismatch, "wrong bytes before the reset");
				resets++;
			} else {
				expect_ok(&cl[i], i, "reset");
			}
		}
	}
	et_server_wait_closed(&srv, 40, 10000);
	et_server_stop(&srv);
	et_server_report(&srv, "resetting clients");
	/* A reset that arrives after the server has handed the whole body to
	 * the kernel (it lingers, closing) is no error for the server. */
	t_assert(srv.stats.closed_ok + srv.stats.closed_err == 40, "%llu + %llu closed",
		 (unsigned long long)srv.stats.closed_ok, (unsigned long long)srv.stats.closed_err);
	t_assert(srv.stats.closed_err >= 1 && srv.stats.closed_err <= resets,
		 "%llu closed with an error, %u resets", (unsigned long long)srv.stats.closed_err, resets);
	et_close_files(f, 1);
}

/* ---- truncate ---- */
static struct et_file *trunc_file;
static size_t trunc_at;
static bool truncated;

static void trunc_tick(struct et_client *cl, unsigned n)
{
	(void)n;
	/* Once the body is flowing, cut the file (page aligned: a partial
	 * page would be zeroed under a plaintext splice still in flight). */
	if (!truncated && cl[0].bytes >= 65536) {
		if (ftruncate(trunc_file->fd, (off_t)trunc_at))
			t_fail("ftruncate: %s", strerror(errno));
		truncated = true;
	}
}

static void case_truncate(void)
{
	struct et_file f[2];
	struct et_server srv;
	struct et_client cl[3] = {0};
	struct et_req q[3];
	/* Larger than what socket buffers hold, so the server is still at it
	 * when the file shrinks. */
	size_t size = et_scaled(32u << 20, 24u << 20);

	et_make_file(&f[0], size, 4);
	et_make_file(&f[1], 100000, 5);
	trunc_file = &f[0];
	trunc_at = (size / 4) & ~(size_t)4095;
	setup(&srv, f, 2);
	et_server_start(&srv, false);
	/* 0: the file shrinks while it is sent; 1: a range past the end of a
	 * file; 2: a normal request alongside. */
	get_req(&q[0], 0, 0, size, true);
	get_req(&q[1], 1, 50000, 60000, true);
	get_req(&q[2], 1, 0, 100000, true);
	for (unsigned i = 0; i < 3; i++) {
		cl[i].reqs = &q[i];
		cl[i].nreq = 1;
	}
	/* Slow enough that the cut comes before the server is done. */
	cl[0].mode = ET_SLOW;
	cl[0].slow_bytes = 65536;
	cl[0].slow_ms = 2;
	et_client_tick = trunc_tick;
	t_assert(et_run_clients(cl, 3, plain ? NULL : cctx, srv.port, f, 120000) == 0, "timeout");
	et_client_tick = NULL;
	et_server_wait_closed(&srv, 3, 5000);
	et_server_stop(&srv);
	et_server_report(&srv, "truncated files");
	t_assert(truncated, "the file was never cut");
	for (unsigned i = 0; i < 2; i++) {
		struct et_client *c = &cl[i];

		printf("client %u: %llu of %llu bytes, err %d (%s)%s\n", i, (unsigned long long)c->bytes,
		       (unsigned long long)q[i].len, c->err, kite_strerror(c->err),
		       c->clean_end ? ", clean end" : "");
		t_assert(!c->mismatch, "client %u got a wrong byte at %llu", i,
			 (unsigned long long)c->mismatch_at);
		t_assert(c->bytes < q[i].len, "client %u got everything", i);
		/* Never a clean end: TLS has no close_notify, plaintext a reset. */
		t_assert(c->err && !c->clean_end, "client %u: the stream ended cleanly", i);
	}
	expect_ok(&cl[2], 2, "truncate");
	t_assert(et_close_count(&srv, -ENODATA) == 2, "%u streams ended with -ENODATA",
		 et_close_count(&srv, -ENODATA));
	et_close_files(f, 2);
}

/* ---- exhaust ---- */
static void case_exhaust(void)
{
	struct et_file f[1];
	struct et_server srv;
	struct et_client cl[40] = {0};
	struct et_req q[40];
	size_t size = et_scaled(2u << 20, 512u << 10);

	et_make_file(&f[0], size, 6);
	for (int pipes = 2; pipes >= 0; pipes -= 2) {
		memset(cl, 0, sizeof(cl));
		setup(&srv, f, 1);
		srv.cfg.pipes = (unsigned)pipes;
		srv.cfg.buffers = 4;
		et_server_start(&srv, false);
		for (unsigned i = 0; i < 40; i++) {
			get_req(&q[i], 0, i * 4096u % 65536, size - i * 4096u % 65536, true);
			cl[i].reqs = &q[i];
			cl[i].nreq = 1;
		}
		t_assert(et_run_clients(cl, 40, plain ? NULL : cctx, srv.port, f, 120000) == 0, "timeout");
		et_server_wait_closed(&srv, 40, 5000);
		et_server_stop(&srv);
		et_server_report(&srv, pipes ? "2 pipes, 4 buffers" : "no pipes, 4 buffers");
		for (unsigned i = 0; i < 40; i++)
			expect_ok(&cl[i], i, "exhaust");
		if (plain || atomic_load(&srv.ktx)) {
			const struct kite_engine_path_stats *cp =
				&srv.stats.path[plain ? KITE_PATH_PLAIN_COPY : KITE_PATH_KTLS_COPY];

			if (strcmp(srv.name, "epoll")) {
				/* io_uring: splice while a pipe is free, copy otherwise. */
				t_assert(cp->bytes > 0, "no copy-path bytes");
				if (pipes)
					t_assert(srv.stats.pipe_exhausted > 0, "the pipe pool never ran out");
			}
		}
		t_assert(srv.stats.closed_ok == 40, "%llu closed ok", (unsigned long long)srv.stats.closed_ok);
	}
	et_close_files(f, 1);
}

/* ---- rxbufs ---- */

/* Provided-buffer rings (IORING_REGISTER_PBUF_RING) came in Linux 5.19. */
static bool kernel_has_buf_ring(void)
{
	struct utsname u;
	unsigned maj = 0, min = 0;

	return !uname(&u) && sscanf(u.release, "%u.%u", &maj, &min) == 2 &&
	       (maj > 5 || (maj == 5 && min >= 19));
}

static void case_rxbufs(void)
{
	enum { N = 48 };
	struct et_file f[1];
	struct et_server srv;
	struct et_client cl[N] = {0};
	struct et_req q[N][2];
	size_t up = et_scaled(256u << 10, 64u << 10), down = et_scaled(1u << 20, 128u << 10);
	bool shared;

	et_make_file(&f[0], down, 9);
	setup(&srv, f, 1);
	srv.cfg.rx_buffers = 1;
	et_server_start(&srv, false);
	for (unsigned i = 0; i < N; i++) {
		memset(q[i], 0, sizeof(q[i]));
		q[i][0].kind = 'P';
		q[i][0].len = up + i * 1000u;
		get_req(&q[i][1], 0, i * 777u, down - i * 777u, true);
		cl[i].reqs = q[i];
		cl[i].nreq = 2;
	}
	t_assert(et_run_clients(cl, N, plain ? NULL : cctx, srv.port, f, 120000) == 0, "timeout");
	et_server_wait_closed(&srv, N, 5000);
	et_server_stop(&srv);
	et_server_report(&srv, "1 shared receive buffer");
	for (unsigned i = 0; i < N; i++)
		expect_ok(&cl[i], i, "rxbufs");
	t_assert(srv.stats.closed_ok == N, "%llu closed ok", (unsigned long long)srv.stats.closed_ok);
	shared = strstr(srv.detail, "1 shared receive buffers of 4 KiB") != NULL;
	if (!strcmp(srv.name, "uring") && kernel_has_buf_ring()) {
		t_assert(shared, "uring rung on Linux >= 5.19 without shared receive buffers: %s",
			 srv.detail);
		/* Every stream's receives were in flight at once: one buffer
		 * cannot have been enough. */
		t_assert(srv.stats.rx_nobufs > 0, "no receive ever found the shared buffer taken");
	} else if (strcmp(srv.name, "uring")) {
		t_assert(!shared && srv.stats.rx_nobufs == 0, "%s rung shares receive buffers: %s",
			 srv.name, srv.detail);
	}
	et_close_files(f, 1);
}

/* ---- timeouts ---- */
static void case_timeouts(void)
{
	struct et_file f[1];
	struct et_server srv;
	struct et_client cl[3] = {0};

	et_make_file(&f[0], 1000, 7);
	setup(&srv, f, 1);
	srv.cfg.handshake_timeout_ms = 300;
	srv.cfg.idle_timeout_ms = 400;
	et_server_start(&srv, false);
	cl[0].mode = ET_SILENT;  /* never starts the handshake */
	cl[1].mode = ET_IDLE;    /* handshake, then nothing */
	cl[2].mode = ET_IDLE;
	t_assert(et_run_clients(cl, 3, plain ? NULL : cctx, srv.port, f, 30000) == 0,
		 "a silent client was never cut off");
	et_server_wait_closed(&srv, 3, 5000);
	et_server_stop(&srv);
	et_server_report(&srv, "timeouts");
	for (unsigned i = 0; i < 3; i++)
		t_assert(cl[i].done && cl[i].err, "client %u: no error (%d)", i, cl[i].err);
	t_assert(et_close_count(&srv, -ETIMEDOUT) == 3, "%u timeouts", et_close_count(&srv, -ETIMEDOUT));
	t_assert(srv.stats.opened == (plain ? 3u : 2u), "%llu opened",
		 (unsigned long long)srv.stats.opened);
	et_close_files(f, 1);
}

/* ---- limits ---- */
static void case_limits(void)
{
	struct et_file f[1];
	struct et_server srv;
	struct et_client cl[10] = {0};
	struct et_req q[100];
	struct et_client pc = {0};
	struct et_req sq = {.kind = 'S', .len = 4u << 20, .seed = 42};
	struct et_client sc = {0};

	et_make_file(&f[0], 20000, 8);

	/* max_streams: 4 idle streams fill it, the rest are closed at once. */
	setup(&srv, f, 1);
	srv.cfg.max_streams = 4;
	srv.cfg.idle_timeout_ms = 1500;
	srv.cfg.handshake_timeout_ms = 1500;
	et_server_start(&srv, false);
	for (unsigned i = 0; i < 10; i++)
		cl[i].mode = ET_IDLE;
	t_assert(et_run_clients(cl, 10, plain ? NULL : cctx, srv.port, f, 30000) == 0, "timeout");
	et_server_wait_closed(&srv, 4, 5000);
	et_server_stop(&srv);
	et_server_report(&srv, "max_streams 4");
	t_assert(srv.stats.rejected == 6, "%llu rejected", (unsigned long long)srv.stats.rejected);
	t_assert(srv.stats.accepted == 4, "%llu accepted", (unsigned long long)srv.stats.accepted);

	/* Pipelining beyond max_queued: the stream stops reading, TCP pushes
	 * back, every answer still arrives in order. */
	setup(&srv, f, 1);
	srv.cfg.max_queued = 4096;
	et_server_start(&srv, false);
	for (unsigned i = 0; i < 100; i++)
		get_req(&q[i], 0, i * 100u, 20000 - i * 100u, i == 99);
	pc.mode = ET_PIPELINE;
	pc.reqs = q;
	pc.nreq = 100;
	t_assert(et_run_clients(&pc, 1, plain ? NULL : cctx, srv.port, f, 60000) == 0, "timeout");
	et_server_wait_closed(&srv, 1, 5000);
	et_server_stop(&srv);
	et_server_report(&srv, "100 pipelined requests, max_queued 4096");
	expect_ok(&pc, 0, "pipeline");
	t_assert(srv.stats.rx_paused > 0, "reading never paused");
	t_assert(srv.stats.peak_queued <= 4096, "peak queue %llu", (unsigned long long)srv.stats.peak_queued);

	/* kite_stream_send beyond max_queued: -ENOBUFS, then on_drain. */
	setup(&srv, f, 1);
	srv.cfg.max_queued = 65536;
	et_server_start(&srv, false);
	sc.reqs = &sq;
	sc.nreq = 1;
	sc.mode = ET_SLOW;
	sc.slow_bytes = 65536;
	sc.slow_ms = 1;
	t_assert(et_run_clients(&sc, 1, plain ? NULL : cctx, srv.port, f, 60000) == 0, "timeout");
	et_server_wait_closed(&srv, 1, 5000);
	et_server_stop(&srv);
	et_server_report(&srv, "4 MiB through kite_stream_send, max_queued 64 KiB");
	expect_ok(&sc, 0, "send");
	t_assert(atomic_load(&srv.enobufs) > 0, "kite_stream_send never said -ENOBUFS");
	t_assert(srv.stats.peak_queued <= 65536, "peak queue %llu", (unsigned long long)srv.stats.peak_queued);
	t_assert(srv.stats.path[KITE_PATH_SEND].bytes == sq.len, "%llu send bytes",
		 (unsigned long long)srv.stats.path[KITE_PATH_SEND].bytes);
	et_close_files(f, 1);
}

/* ---- keyupdate ---- */
static void case_keyupdate(void)
{
	struct et_file f[1];
	struct et_server srv;
	struct et_client cl[1] = {0};
	struct et_req q[2];
	struct kite_ctx *uctx;
	bool follows;

	if (plain)
		return; /* TLS only */
	size_t size = et_scaled(8u << 20, 2u << 20);

	et_make_file(&f[0], size, 9);
	setup(&srv, f, 1);
	et_server_start(&srv, false);
	/* A userspace TLS 1.3 client, so that it can always send KeyUpdate;
	 * it does so mid-body, asking the server to update too. */
	uctx = t_client_ctx(t_priority(KITE_TLS13, KITE_AES_128_GCM), 0);
	get_req(&q[0], 0, 0, size, false);
	get_req(&q[1], 0, 1000, 200000, true);
	cl[0].reqs = q;
	cl[0].nreq = 2;
	cl[0].key_update = true;
	cl[0].reset_after = 256u << 10;
	t_assert(et_run_clients(cl, 1, uctx, srv.port, f, 30000) == 0, "timeout");
	et_server_wait_closed(&srv, 1, 5000);
	et_server_stop(&srv);
	et_server_report(&srv, "client KeyUpdate after the first request");
	/* The server follows in userspace, or in the kernel when it can rekey
	 * (Linux >= 6.14); otherwise it must end the stream cleanly with
	 * -EKEYEXPIRED, and never deliver a wrong byte. */
	follows = !atomic_load(&srv.krx) || kite_caps_get()->rekey == 0;
	t_assert(!cl[0].mismatch, "wrong bytes");
	if (follows) {
		expect_ok(&cl[0], 0, "keyupdate");
		t_assert(srv.stats.closed_ok == 1, "server did not close cleanly");
	} else {
		t_assert(et_close_count(&srv, -EKEYEXPIRED) == 1, "server: no -EKEYEXPIRED");
		t_assert(cl[0].err, "client: no error");
	}
	printf("KeyUpdate: %s\n", follows ? "followed" : "ended with -EKEYEXPIRED (kernel cannot rekey)");
	kite_ctx_destroy(uctx);
	et_close_files(f, 1);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} cases[] = {
		{"slow", case_slow}, {"stall", case_stall}, {"sndbuf", case_sndbuf},
		{"reset", case_reset},
		{"truncate", case_truncate}, {"exhaust", case_exhaust},
		{"timeouts", case_timeouts}, {"limits", case_limits}, {"keyupdate", case_keyupdate},
		{"rxbufs", case_rxbufs},
	};
	const char *which = NULL;
	bool found = false;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--plain"))
			plain = true;
		else if (argv[i][0] != '-' && !which)
			which = argv[i];
		else
			t_fail("usage: %s [CASE] [--plain]", argv[0]);
	}
	et_valgrind_gate();
	et_need_fds(512);
	if (!plain) {
		t_make_creds(&cr);
		sctx = t_server_ctx(&cr, NULL, KITE_KTLS_DEFAULT);
		cctx = t_client_ctx(NULL, KITE_KTLS_DEFAULT);
	}
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (which && strcmp(which, cases[i].name))
			continue;
		printf("### %s (%s, KITE_ENGINE=%s)\n", cases[i].name, plain ? "plaintext" : "TLS",
		       et_rung());
		fflush(stdout);
		cases[i].fn();
		found = true;
	}
	if (!found)
		t_fail("no case named %s", which);
	kite_ctx_destroy(sctx);
	kite_ctx_destroy(cctx);
	printf("ok\n");
	return 0;
}
