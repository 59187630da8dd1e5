/* SPDX-License-Identifier: MIT */
#include "etest.h"
#include "kite-private.h" /* the client's GnuTLS session, for KeyUpdate */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BLK 16384u

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t t_now_ms(void)
{
	return now_ms();
}

void et_send_block(uint8_t *buf, uint64_t seed, uint64_t k)
{
	t_fill(buf, BLK, seed * 1000003u + k);
}

bool et_in_uml(void)
{
	const char *v = getenv("KITE_IN_UML");

	return v && !strcmp(v, "1");
}

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif

bool et_under_valgrind(void)
{
	const char *v = getenv("KITE_UNDER_VALGRIND");

#ifdef RUNNING_ON_VALGRIND
	if (RUNNING_ON_VALGRIND)
		return true;
#endif
	return v && !strcmp(v, "1");
}

void et_valgrind_gate(void)
{
	if (et_under_valgrind() && strcmp(et_rung(), "epoll"))
		t_skip("under valgrind an io_uring engine cannot serve a second thread (valgrind "
		       "holds its lock across io_uring_enter); test_engine_api --single-thread "
		       "covers the ring under valgrind, this test runs there with KITE_ENGINE=epoll");
}

const char *et_rung(void)
{
	const char *v = getenv("KITE_ENGINE");

	return v && *v ? v : "auto";
}

size_t et_scaled(size_t size, size_t min)
{
	const char *v = getenv("KITE_ENGINE_TEST_SCALE");
	unsigned pct = et_under_valgrind() ? 3 : et_in_uml() ? 10 : 100;
	size_t r;

	if (v && *v)
		pct = (unsigned)strtoul(v, NULL, 10);
	r = size / 100 * pct + size % 100 * pct / 100;
	return r < min ? min : r;
}

void et_need_fds(unsigned n)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		t_fail("getrlimit: %s", strerror(errno));
	if (rl.rlim_cur >= n)
		return;
	if (rl.rlim_max < n)
		t_skip("need %u file descriptors, hard limit is %llu (ulimit -Hn)", n,
		       (unsigned long long)rl.rlim_max);
	rl.rlim_cur = n;
	if (setrlimit(RLIMIT_NOFILE, &rl))
		t_fail("setrlimit(NOFILE, %u): %s", n, strerror(errno));
}

void et_make_file(struct et_file *f, size_t size, uint64_t seed)
{
	uint64_t h;
	char buf[1 << 16];

	f->fd = t_temp_file(size, seed, &h);
	f->size = size;
	/* The reference copy: what the client compares with, even after a
	 * test truncates f->fd. */
	f->ref = t_temp_file(0, 0, &h);
	for (size_t off = 0; off < size;) {
		ssize_t n = pread(f->fd, buf, sizeof(buf), (off_t)off);

		if (n <= 0 || pwrite(f->ref, buf, (size_t)n, (off_t)off) != n)
			t_fail("copying a test file: %s", strerror(errno));
		off += (size_t)n;
	}
}

void et_close_files(struct et_file *f, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		close(f[i].fd);
		close(f[i].ref);
	}
}

/* ---- Server ------------------------------------------------------------- */

struct sconn {
	char line[256];
	size_t have;
	/* Input not parsed yet because the send queue was full: a pipelining
	 * peer's requests wait here (bounded: the engine stops reading while
	 * the queue is over half full). */
	char *held;
	size_t held_len;
	bool blocked;
	uint64_t put_left, put_hash;
	uint64_t send_left, send_seed, send_done;
};

static void pump(struct kite_stream *st)
{
	struct et_server *s = kite_engine_user(kite_stream_engine(st));
	struct sconn *c = kite_stream_user(st);
	uint8_t blk[BLK];

	while (c->send_left) {
		uint64_t k = c->send_done / BLK, in = c->send_done % BLK;
		size_t n = BLK - in;
		ssize_t r;

		if (n > c->send_left)
			n = c->send_left;
		et_send_block(blk, c->send_seed, k);
		r = kite_stream_send(st, blk + in, n);
		if (r == -ENOBUFS) {
			atomic_fetch_add(&s->enobufs, 1);
			return; /* on_drain continues */
		}
		if (r < 0) {
			kite_stream_abort(st, (int)r);
			return;
		}
		c->send_done += n;
		c->send_left -= n;
	}
}

static void track_queue(struct et_server *s, struct kite_stream *st)
{
	size_t q = kite_stream_queued(st), m = atomic_load(&s->max_queued);

	while (q > m && !atomic_compare_exchange_weak(&s->max_queued, &m, q))
		;
}

/* Returns false when the send queue is full: the caller keeps the line. */
static bool request(struct kite_stream *st, struct sconn *c, char *line)
{
	struct et_server *s = kite_engine_user(kite_stream_engine(st));
	unsigned long long a, b, d;
	unsigned f;
	char cl[16] = "";
	int r;

	if (sscanf(line, "GET %u %llu %llu %15s", &f, &a, &b, cl) >= 3 && f < s->nfiles) {
		r = kite_stream_sendfile(st, s->files[f].fd, (off_t)a, (size_t)b, 0);
		if (r == -ENOBUFS) {
			atomic_fetch_add(&s->enobufs, 1);
			return false;
		}
		if (r) {
			atomic_fetch_add(&s->bad_requests, 1);
			kite_stream_abort(st, r);
			return true;
		}
		if (!strcmp(cl, "close"))
			(void)kite_stream_close(st);
	} else if (sscanf(line, "SEND %llu %llu", &a, &d) == 2) {
		c->send_left = a;
		c->send_seed = d;
		c->send_done = 0;
		pump(st);
	} else if (sscanf(line, "PUT %llu", &a) == 1) {
		c->put_left = a;
		c->put_hash = T_HASH_INIT;
		if (!a) {
			char out[40];
			int n = snprintf(out, sizeof(out), "HASH %016" PRIx64 "\n", c->put_hash);

			(void)!kite_stream_send(st, out, (size_t)n);
		}
	} else if (!strcmp(line, "CLOSE")) {
		(void)kite_stream_close(st);
	} else {
		atomic_fetch_add(&s->bad_requests, 1);
		kite_stream_abort(st, -EPROTO);
	}
	track_queue(s, st);
	return true;
}

static void on_open(struct kite_stream *st)
{
	struct et_server *s = kite_engine_user(kite_stream_engine(st));
	struct kite_conn *conn = kite_stream_conn(st);
	struct sconn *c = calloc(1, sizeof(*c));

	if (!c)
		t_fail("out of memory");
	kite_stream_set_user(st, c);
	atomic_fetch_add(&s->opened, 1);
	if (s->sndbuf)
		t_assert(!setsockopt(kite_stream_fd(st), SOL_SOCKET, SO_SNDBUF, &s->sndbuf,
				     sizeof(s->sndbuf)), "SO_SNDBUF: %s", strerror(errno));
	if (conn) {
		struct kite_conn_info ci;

		t_ok(kite_conn_info(conn, &ci));
		if (ci.ktls[KITE_TX])
			atomic_fetch_add(&s->ktx, 1);
		if (ci.ktls[KITE_RX])
			atomic_fetch_add(&s->krx, 1);
	}
}

/* Parse input; returns the bytes consumed (less than len when the send
 * queue filled up). */
static size_t parse(struct kite_stream *st, struct sconn *c, const char *p, size_t len)
{
	size_t used = 0;

	while (used < len) {
		if (c->put_left) {
			size_t n = len - used < c->put_left ? len - used : (size_t)c->put_left;

			c->put_hash = t_hash(c->put_hash, p + used, n);
			c->put_left -= n;
			used += n;
			if (!c->put_left) {
				char out[40];
				int k = snprintf(out, sizeof(out), "HASH %016" PRIx64 "\n", c->put_hash);

				if (kite_stream_send(st, out, (size_t)k) < 0)
					kite_stream_abort(st, -ENOBUFS);
			}
			continue;
		}
		if (p[used] == '\n') {
			c->line[c->have] = 0;
			if (!request(st, c, c->line))
				return used; /* the line stays in c->line; retried on drain */
			c->have = 0;
		} else if (c->have + 1 < sizeof(c->line)) {
			c->line[c->have++] = p[used];
		}
		used++;
	}
	return used;
}

static void hold(struct sconn *c, const char *p, size_t len)
{
	char *n = realloc(c->held, c->held_len + len);

	if (!n)
		t_fail("out of memory");
	memcpy(n + c->held_len, p, len);
	c->held = n;
	c->held_len += len;
}

static void on_data(struct kite_stream *st, const void *buf, size_t len)
{
	struct sconn *c = kite_stream_user(st);
	size_t used;

	if (!len) {
		/* The peer is done: so are we (after what is queued). */
		if (!c->held_len)
			(void)kite_stream_close(st);
		else
			c->blocked = true; /* close once the held requests are answered */
		return;
	}
	if (c->held_len) {
		hold(c, buf, len);
		return;
	}
	used = parse(st, c, buf, len);
	if (used < len)
		hold(c, (const char *)buf + used, len - used);
}

static void on_drain(struct kite_stream *st)
{
	struct sconn *c = kite_stream_user(st);
	size_t used;

	if (!c)
		return;
	if (c->held_len) {
		/* First the line that did not fit, then the rest. */
		if (c->have && !request(st, c, c->line))
			return;
		c->have = 0;
		used = parse(st, c, c->held + 1, c->held_len - 1); /* held[0] is that line's '\n' */
		memmove(c->held, c->held + 1 + used, c->held_len - 1 - used);
		c->held_len -= 1 + used;
		if (!c->held_len && c->blocked)
			(void)kite_stream_close(st);
		return;
	}
	if (c->send_left)
		pump(st);
}

static void on_close(struct kite_stream *st, int err)
{
	struct et_server *s = kite_engine_user(kite_stream_engine(st));
	unsigned idx = err <= 0 && -err < 160 ? (unsigned)-err : 159;

	atomic_fetch_add(&s->close_err[idx], 1);
	atomic_fetch_add(&s->closed, 1);
	if (kite_stream_user(st))
		free(((struct sconn *)kite_stream_user(st))->held);
	free(kite_stream_user(st));
}

void et_server_init(struct et_server *s, struct kite_ctx *ctx)
{
	memset(s, 0, sizeof(*s));
	kite_engine_config_init(&s->cfg);
	s->cfg.ctx = ctx;
	s->cfg.on_open = on_open;
	s->cfg.on_data = on_data;
	s->cfg.on_drain = on_drain;
	s->cfg.on_close = on_close;
	s->cfg.user = s;
	if (et_under_valgrind() || et_in_uml()) {
		/* valgrind is ~50 times slower, and UML's generic-C crypto on a
		 * loaded machine queues 1000 handshakes behind each other for
		 * longer than the 10 s default: these tests are not about
		 * timeouts (test_engine_faults sets its own). */
		s->cfg.handshake_timeout_ms = 600000;
		s->cfg.idle_timeout_ms = 600000;
		s->cfg.send_timeout_ms = 600000;
	}
	s->listeners = 1;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
}

static void *server_main(void *arg)
{
	struct et_server *s = arg;
	struct kite_engine *e = NULL;
	struct kite_engine_info info;
	int r;

	/* Created on the thread that runs it (io_uring SINGLE_ISSUER). */
	r = kite_engine_create(&e, &s->cfg);
	if (r)
		snprintf(s->create_msg, sizeof(s->create_msg), "%s", kite_engine_create_error());
	for (unsigned i = 0; !r && i < s->listeners; i++)
		r = kite_engine_add_listener(e, s->lfd[i]);
	if (!r) {
		t_ok(kite_engine_describe(e, &info));
		snprintf(s->name, sizeof(s->name), "%s", info.name);
		snprintf(s->detail, sizeof(s->detail), "%s", info.detail);
		snprintf(s->reason, sizeof(s->reason), "%s", info.reason);
	}
	pthread_mutex_lock(&s->mu);
	s->e = r ? NULL : e;
	s->create_err = r;
	s->ready = true;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	if (r) {
		kite_engine_destroy(e);
		return NULL;
	}
	r = kite_engine_run(e, -1);
	if (r)
		t_fail("kite_engine_run: %s", kite_strerror(r));
	t_ok(kite_engine_stats(e, &s->stats));
	kite_engine_destroy(e);
	return NULL;
}

int et_server_start(struct et_server *s, bool allow_fail)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);

	if (!s->listeners || s->listeners > 4)
		s->listeners = 1;
	for (unsigned i = 0; i < s->listeners; i++) {
		s->lfd[i] = kite_listen_reuseport("127.0.0.1", s->port, 4096);
		if (s->lfd[i] < 0)
			t_fail("kite_listen_reuseport: %s", kite_strerror(s->lfd[i]));
		if (!i) {
			if (getsockname(s->lfd[0], (struct sockaddr *)&a, &alen))
				t_fail("getsockname: %s", strerror(errno));
			s->port = ntohs(a.sin_port);
		}
	}
	if (pthread_create(&s->th, NULL, server_main, s))
		t_fail("pthread_create");
	pthread_mutex_lock(&s->mu);
	while (!s->ready)
		pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
	if (s->create_err) {
		pthread_join(s->th, NULL);
		for (unsigned i = 0; i < s->listeners; i++)
			close(s->lfd[i]);
		if (allow_fail)
			return s->create_err;
		t_fail("engine (KITE_ENGINE=%s): %s", et_rung(), s->create_msg);
	}
	return 0;
}

void et_server_stop(struct et_server *s)
{
	kite_engine_stop(s->e);
	pthread_join(s->th, NULL);
	for (unsigned i = 0; i < s->listeners; i++)
		close(s->lfd[i]);
}

bool et_server_wait_closed(struct et_server *s, unsigned n, unsigned ms)
{
	uint64_t end = now_ms() + ms;

	while (atomic_load(&s->closed) < n) {
		if (now_ms() >= end)
			return false;
		usleep(2000);
	}
	return true;
}

unsigned et_close_count(struct et_server *s, int err)
{
	unsigned idx = err <= 0 && -err < 160 ? (unsigned)-err : 159;

	return atomic_load(&s->close_err[idx]);
}

void et_server_report(struct et_server *s, const char *title)
{
	const struct kite_engine_stats *st = &s->stats;

	printf("== %s\nengine: %s (%s)\nreason: %s\n", title, s->name, s->detail, s->reason);
	printf("streams: accepted %llu, opened %llu, closed ok %llu / error %llu (timeouts %llu), "
	       "rejected %llu; kTLS tx %u rx %u\n",
	       (unsigned long long)st->accepted, (unsigned long long)st->opened,
	       (unsigned long long)st->closed_ok, (unsigned long long)st->closed_err,
	       (unsigned long long)st->timeouts, (unsigned long long)st->rejected,
	       atomic_load(&s->ktx), atomic_load(&s->krx));
	printf("syscalls %llu (enters %llu, handshake %llu), sqes %llu, pipe exhausted %llu, "
	       "buffer waits %llu, rx paused %llu, peak queued %llu, kTLS pushes %llu, rx no-bufs %llu\n",
	       (unsigned long long)st->syscalls, (unsigned long long)st->enters,
	       (unsigned long long)st->handshake_syscalls, (unsigned long long)st->sqes,
	       (unsigned long long)st->pipe_exhausted, (unsigned long long)st->buffer_waits,
	       (unsigned long long)st->rx_paused, (unsigned long long)st->peak_queued,
	       (unsigned long long)st->ktls_pushes, (unsigned long long)st->rx_nobufs);
	for (int i = 1; i < 160; i++)
		if (atomic_load(&s->close_err[i]))
			printf("  on_close(-%d %s): %u\n", i, kite_strerror(-i),
			       atomic_load(&s->close_err[i]));
	for (int p = 0; p < KITE_PATH_COUNT; p++)
		if (st->path[p].requests || st->path[p].bytes)
			printf("  %-15s requests %6llu  bytes %12llu  sqes %8llu  syscalls %8llu\n",
			       kite_engine_path_name(p), (unsigned long long)st->path[p].requests,
			       (unsigned long long)st->path[p].bytes,
			       (unsigned long long)st->path[p].sqes,
			       (unsigned long long)st->path[p].syscalls);
	fflush(stdout);
}

/* ---- Clients ------------------------------------------------------------ */

enum { C_CONNECT, C_HS, C_REQ, C_BODY, C_PUT, C_HASH, C_EOF, C_SILENT, C_STALLED, C_DONE };

/* A stuck client's connection as the kernel sees it: both ends' send and
 * receive queues, timers and, on the server's side, whether a file still
 * holds the socket (its inode). */
static void tcp_table(int fd)
{
	struct sockaddr_in la;
	socklen_t ll = sizeof(la);
	char line[512], hex[16];
	FILE *tf = fopen("/proc/net/tcp", "r");

	getsockname(fd, (struct sockaddr *)&la, &ll);
	snprintf(hex, sizeof(hex), ":%04X ", ntohs(la.sin_port));
	fprintf(stderr, "/proc/net/tcp for client port %u:\n", ntohs(la.sin_port));
	while (tf && fgets(line, sizeof(line), tf))
		if (strstr(line, hex) || strstr(line, "local_address"))
			fputs(line, stderr);
	if (tf)
		fclose(tf);
}

void (*et_client_tick)(struct et_client *cl, unsigned n);

static ssize_t c_send(struct et_client *c, const void *b, size_t n)
{
	ssize_t r;

	if (c->c)
		return kite_send(c->c, b, n);
	r = send(c->fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	return r < 0 ? (errno == EWOULDBLOCK ? -EAGAIN : -errno) : r;
}

static ssize_t c_recv(struct et_client *c, void *b, size_t n)
{
	ssize_t r;

	if (c->c)
		return kite_recv(c->c, b, n);
	do
		r = recv(c->fd, b, n, MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	return r < 0 ? (errno == EWOULDBLOCK ? -EAGAIN : -errno) : r;
}

static void c_end(struct et_client *c, int err)
{
	if (c->done)
		return;
	c->done = true;
	c->err = err;
	c->st = C_DONE;
	if (c->c) {
		struct kite_conn_info ci;

		if (!kite_conn_info(c->c, &ci))
			c->ktls_rx = ci.ktls[KITE_RX];
		if (!err)
			(void)!kite_shutdown(c->c); /* best effort close_notify */
		kite_conn_destroy(c->c);
		c->c = NULL;
	}
	close(c->fd);
	c->fd = -1;
}

static void c_reset(struct et_client *c)
{
	struct linger lg = {1, 0};

	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	c_end(c, 0);
}

/* After the request line: what to expect. */
static void c_after_request(struct et_client *c)
{
	struct et_req *q = &c->reqs[c->cur];

	if (q->kind == 'P') {
		c->put_hash = T_HASH_INIT;
		c->st = C_PUT;
	} else {
		c->st = C_BODY;
	}
	if (q->kind != 'P' && !q->len)
		c->st = q->close ? C_EOF : C_BODY;
}

static size_t req_line(char *out, size_t cap, const struct et_req *q)
{
	int n;

	switch (q->kind) {
	case 'G':
		n = snprintf(out, cap, "GET %u %llu %llu%s\n", q->file, (unsigned long long)q->off,
			     (unsigned long long)q->len, q->close ? " close" : "");
		break;
	case 'S':
		n = snprintf(out, cap, "SEND %llu %llu\n", (unsigned long long)q->len,
			     (unsigned long long)q->seed);
		break;
	default:
		n = snprintf(out, cap, "PUT %llu\n", (unsigned long long)q->len);
		break;
	}
	if (n < 0 || (size_t)n >= cap)
		t_fail("request line too long");
	return (size_t)n;
}

static void c_next(struct et_client *c)
{
	struct et_req *q;

	if (c->mode == ET_IDLE) {
		c->st = C_SILENT;
		return;
	}
	if (c->cur >= c->nreq) {
		c_end(c, 0);
		return;
	}
	q = &c->reqs[c->cur];
	c->got = 0;
	c->put_sent = 0;
	c->line_len = 0;
	if (c->mode == ET_PIPELINE) {
		/* Every request in one write, once; then the answers in order. */
		if (c->cur == 0) {
			c->out_len = 0;
			for (unsigned i = 0; i < c->nreq; i++)
				c->out_len += req_line(c->out + c->out_len, sizeof(c->out) - c->out_len,
						       &c->reqs[i]);
			c->out_off = 0;
			c->st = C_REQ;
		} else {
			c_after_request(c);
		}
		return;
	}
	c->out_len = req_line(c->out, sizeof(c->out), q);
	c->out_off = 0;
	c->st = C_REQ;
}

static bool c_verify(struct et_client *c, const uint8_t *b, size_t n, const struct et_file *files,
		     uint8_t *scratch)
{
	struct et_req *q = &c->reqs[c->cur];

	if (q->kind == 'G') {
		ssize_t r = pread(files[q->file].ref, scratch, n, (off_t)(q->off + c->got));

		if (r != (ssize_t)n)
			t_fail("reading the reference file: %s", strerror(errno));
		for (size_t i = 0; i < n; i++)
			if (b[i] != scratch[i]) {
				c->mismatch_at = q->off + c->got + i;
				return false;
			}
		return true;
	}
	for (size_t i = 0; i < n;) {
		uint64_t pos = c->got + i, k = pos / BLK, in = pos % BLK;
		size_t m = BLK - in < n - i ? BLK - in : n - i;

		et_send_block(scratch, q->seed, k);
		if (memcmp(b + i, scratch + in, m)) {
			c->mismatch_at = pos;
			return false;
		}
		i += m;
	}
	return true;
}

/* One step of a client whose socket is ready (or timer due). */
static void c_step(struct et_client *c, short rev, const struct et_file *files, uint8_t *buf,
		   uint8_t *scratch, uint64_t now)
{
	/* Whoever stops short of -EAGAIN must come back without waiting for
	 * the socket: GnuTLS may hold a decrypted record the socket no longer
	 * shows. */
	c->again = true;
	for (int guard = 0; guard < 64 && !c->done; guard++) {
		struct et_req *q = c->cur < c->nreq ? &c->reqs[c->cur] : NULL;
		ssize_t r;

		switch (c->st) {
		case C_CONNECT: {
			int err = 0;
			socklen_t l = sizeof(err);

			if (!(rev & (POLLOUT | POLLERR | POLLHUP))) {
				c->again = false;
				return;
			}
			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
			if (err) {
				c_end(c, -err);
				return;
			}
			c->st = c->mode == ET_SILENT ? C_SILENT : c->c ? C_HS : C_REQ;
			if (c->st == C_REQ)
				c_next(c); /* ET_IDLE goes silent here */
			break;
		}
		case C_SILENT:
			c->again = false;
			if (!(rev & (POLLIN | POLLERR | POLLHUP)))
				return;
			r = recv(c->fd, buf, 1, MSG_DONTWAIT);
			if (r < 0 && errno == EAGAIN)
				return;
			c_end(c, r < 0 ? -errno : -EPIPE);
			return;
		case C_HS:
			r = kite_handshake(c->c);
			if (r == -EAGAIN) {
				c->again = false;
				return;
			}
			if (r) {
				c_end(c, (int)r);
				return;
			}
			c_next(c);
			break;
		case C_REQ:
			r = c_send(c, c->out + c->out_off, c->out_len - c->out_off);
			if (r == -EAGAIN) {
				c->again = false;
				return;
			}
			if (r < 0) {
				c_end(c, (int)r);
				return;
			}
			c->out_off += (size_t)r;
			if (c->out_off == c->out_len)
				c_after_request(c);
			break;
		case C_PUT: {
			uint64_t k = c->put_sent / BLK, in = c->put_sent % BLK;
			size_t n = BLK - in;

			if (c->put_sent == q->len) {
				c->st = C_HASH;
				break;
			}
			if (n > q->len - c->put_sent)
				n = q->len - c->put_sent;
			et_send_block(scratch, q->seed, k);
			r = c_send(c, scratch + in, n);
			if (r == -EAGAIN) {
				c->again = false;
				return;
			}
			if (r < 0) {
				c_end(c, (int)r);
				return;
			}
			c->put_hash = t_hash(c->put_hash, scratch + in, (size_t)r);
			c->put_sent += (uint64_t)r;
			break;
		}
		case C_HASH: {
			char want[40];

			r = c_recv(c, buf, 1);
			if (r == -EAGAIN) {
				c->again = false;
				return;
			}
			if (r <= 0) {
				c_end(c, r ? (int)r : -EPIPE);
				return;
			}
			if (buf[0] != '\n') {
				if (c->line_len + 1 < sizeof(c->line))
					c->line[c->line_len++] = (char)buf[0];
				break;
			}
			c->line[c->line_len] = 0;
			snprintf(want, sizeof(want), "HASH %016" PRIx64, c->put_hash);
			if (strcmp(want, c->line)) {
				c->mismatch = true;
				c_end(c, -EBADMSG);
				return;
			}
			c->bytes += q->len;
			c->cur++;
			c_next(c);
			break;
		}
		case C_BODY: {
			size_t want = 65536;

			if (c->got == q->len) {
				c->cur++;
				if (q->close)
					c->st = C_EOF;
				else
					c_next(c);
				break;
			}
			if (c->mode == ET_STALL && c->bytes >= c->reset_after) {
				/* Stop reading; the server must give up on us. */
				c->st = C_STALLED;
				c->again = false;
				return;
			}
			if (c->mode == ET_SLOW) {
				if (now < c->next_ms)
					return; /* again, at next_ms */
				want = c->slow_bytes;
			}
			if (want > q->len - c->got)
				want = q->len - c->got;
			r = c_recv(c, buf, want);
			if (r == -EAGAIN) {
				c->again = false;
				return;
			}
			if (r <= 0) {
				c->clean_end = r == 0;
				c_end(c, r ? (int)r : -EPIPE);
				return;
			}
			if (!c_verify(c, buf, (size_t)r, files, scratch)) {
				c->mismatch = true;
				c_end(c, -EBADMSG);
				return;
			}
			c->got += (uint64_t)r;
			c->bytes += (uint64_t)r;
			if (c->key_update && c->ku_state < 2 && c->bytes >= c->reset_after && c->c) {
				/* Mid-body: our next records use the next key and
				 * the server must answer with its own KeyUpdate
				 * (RFC 8446 4.6.3 update_requested) while sending. */
				int g = gnutls_session_key_update(c->c->s, GNUTLS_KU_PEER);

				if (g == GNUTLS_E_AGAIN || g == GNUTLS_E_INTERRUPTED) {
					c->ku_state = 1;
				} else if (g < 0) {
					c_end(c, -EPROTO);
					return;
				} else {
					c->ku_state = 2;
				}
			}
			if (c->mode == ET_SLOW) {
				c->next_ms = now + c->slow_ms;
				return;
			}
			if (c->mode == ET_RESET && c->bytes >= c->reset_after) {
				c_reset(c);
				return;
			}
			break;
		}
		case C_STALLED: {
			int err = 0;
			socklen_t l = sizeof(err);

			c->again = false;
			if (!(rev & (POLLERR | POLLHUP)))
				return;
			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
			c_end(c, err ? -err : -EPIPE);
			return;
		}
		case C_EOF:
			r = c_recv(c, buf, 65536);
			if (r == -EAGAIN) {
				c->again = false;
				return;
			}
			if (r > 0) {
				c->mismatch = true;
				c_end(c, -EBADMSG);
				return;
			}
			c->clean_end = r == 0;
			c_end(c, (int)r);
			return;
		default:
			return;
		}
	}
}

static short c_events(struct et_client *c, uint64_t now, int *wait_ms)
{
	if (c->again) {
		int ms = c->mode == ET_SLOW && now < c->next_ms ? (int)(c->next_ms - now) : 0;

		if (*wait_ms < 0 || ms < *wait_ms)
			*wait_ms = ms;
		return 0;
	}
	switch (c->st) {
	case C_CONNECT: return POLLOUT;
	case C_HS: return kite_conn_poll_events(c->c);
	case C_REQ:
	case C_PUT: return POLLOUT;
	case C_STALLED: return 0; /* POLLERR/POLLHUP only */
	case C_BODY:
		if (c->mode == ET_SLOW && now < c->next_ms) {
			int ms = (int)(c->next_ms - now);

			if (*wait_ms < 0 || ms < *wait_ms)
				*wait_ms = ms;
			return 0;
		}
		return POLLIN;
	default: return POLLIN;
	}
}

unsigned et_run_clients(struct et_client *cl, unsigned n, struct kite_ctx *ctx, uint16_t port,
			const struct et_file *files, unsigned timeout_ms)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct pollfd *pfd = calloc(n, sizeof(*pfd));
	unsigned *idx = calloc(n, sizeof(*idx));
	uint8_t *buf = malloc(65536), *scratch = malloc(65536);
	uint64_t end = now_ms() + timeout_ms;
	unsigned left = n;

	if (!pfd || !idx || !buf || !scratch)
		t_fail("out of memory");
	for (unsigned i = 0; i < n; i++) {
		struct et_client *c = &cl[i];

		c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (c->fd < 0)
			t_fail("socket: %s", strerror(errno));
		if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) && errno != EINPROGRESS)
			t_fail("connect: %s", strerror(errno));
		if (ctx)
			t_ok(kite_conn_create(&c->c, ctx, c->fd));
		c->st = C_CONNECT;
	}
	while (left && now_ms() < end) {
		uint64_t now = now_ms();
		unsigned np = 0;
		int wait_ms = 200;

		for (unsigned i = 0; i < n; i++) {
			struct et_client *c = &cl[i];
			short ev;

			if (c->done)
				continue;
			ev = c_events(c, now, &wait_ms);
			pfd[np].fd = c->fd;
			pfd[np].events = ev;
			pfd[np].revents = 0;
			idx[np++] = i;
		}
		if (poll(pfd, np, wait_ms) < 0 && errno != EINTR)
			t_fail("poll: %s", strerror(errno));
		now = now_ms();
		for (unsigned k = 0; k < np; k++) {
			struct et_client *c = &cl[idx[k]];

			if (c->again && !(c->mode == ET_SLOW && now < c->next_ms))
				c_step(c, pfd[k].revents | POLLIN | POLLOUT, files, buf, scratch, now);
			else if (pfd[k].revents && !c->again)
				c_step(c, pfd[k].revents, files, buf, scratch, now);
		}
		left = 0;
		for (unsigned i = 0; i < n; i++)
			left += !cl[i].done;
		if (et_client_tick)
			et_client_tick(cl, n);
	}
	for (unsigned i = 0; i < n; i++)
		if (!cl[i].done) {
			/* Say where each unfinished client stood. */
			int unread = -1;
			struct pollfd pf = {.fd = cl[i].fd, .events = POLLIN};

			(void)ioctl(cl[i].fd, FIONREAD, &unread);
			(void)poll(&pf, 1, 0);
			fprintf(stderr, "client %u not done after %u ms: mode %d, state %d, request %u of "
				"%u, %llu body bytes verified, err %d, kTLS RX %d, FIONREAD %d, "
				"revents %#x\n", i, timeout_ms, (int)cl[i].mode, cl[i].st, cl[i].cur,
				cl[i].nreq, (unsigned long long)cl[i].bytes, cl[i].err, cl[i].ktls_rx,
				unread, pf.revents);
			tcp_table(cl[i].fd);
			if (cl[i].c)
				kite_conn_destroy(cl[i].c);
			cl[i].c = NULL;
			close(cl[i].fd);
		}
	free(pfd);
	free(idx);
	free(buf);
	free(scratch);
	return left;
}
