/* SPDX-License-Identifier: MIT */
/*
 * One worker thread: a kite engine with its own SO_REUSEPORT listener on
 * every --listen address, the HTTP sessions of the connections it accepted,
 * and the counters it publishes for /metrics. Workers share nothing on the
 * request path; they meet only in the connection caps (an atomic and the
 * per-address table), the access log file and the context swap.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

/* An answer whose access log line waits until its bytes are in the
 * kernel or the connection has ended: the line then says how much of the
 * body went out (less than its length if the client reset first). */
struct pending_log {
	struct pending_log *next;
	uint64_t body_at, end;      /* the body's bytes in the stream: [body_at, end) */
	int status;
	time_t when;
	size_t line_len, ref_len, ua_len, host_len;
	char text[];                /* request line, Referer, User-Agent, Host */
};

struct conn {
	struct session sess;
	struct h2conn *h2;          /* ALPN h2: this instead of sess */
	struct worker *w;
	struct kite_stream *s;
	struct conn *prev, *next;
	uint8_t key[16];
	bool counted;               /* in srv->conns and the per-address table */
	char ip[48];
	char tls[160];              /* the access log's TLS fields */
	uint64_t queued;            /* bytes handed to the stream so far */
	uint64_t answered_end;      /* where the last answer's bytes end */
	struct pending_log *plog, **plog_tail;
};

uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void stats_publish(struct worker *w)
{
	if (w->e)
		(void)kite_engine_stats(w->e, &w->cur.eng);
	pthread_mutex_lock(&w->mu);
	w->pub = w->cur;
	pthread_mutex_unlock(&w->mu);
}

/* ---- The session's transport: the connection's engine stream ------------ */

static int t_send(void *t, const void *buf, size_t len)
{
	struct conn *c = t;
	ssize_t r = kite_stream_send(c->s, buf, len);

	if (r < 0)
		return (int)r;
	c->queued += len;
	return 0;
}

static int t_sendfile(void *t, int fd, uint64_t off, uint64_t len)
{
	struct conn *c = t;
	/* The engine closes fd after the range, and on every error. */
	int r = kite_stream_sendfile(c->s, fd, (off_t)off, (size_t)len, KITE_SENDFILE_CLOSE_FD);

	if (!r)
		c->queued += len;
	return r;
}

static int t_sendfile_kept(void *t, int fd, uint64_t off, uint64_t len)
{
	struct conn *c = t;
	/* fd is the open-file cache's, open until on_drain or on_close: the
	 * ring may register it once for every response that sends it. */
	int r = kite_stream_sendfile(c->s, fd, (off_t)off, (size_t)len, KITE_SENDFILE_KEEP_FD);

	if (!r)
		c->queued += len;
	return r;
}

static int t_unit(void *t, uint32_t lane, const void *head, size_t head_len, int fd, uint64_t off,
		  uint64_t len, bool kept)
{
	struct conn *c = t;
	/* fd stays the caller's until on_drain or on_close (h2.c keeps it). */
	int r = kite_stream_queue_unit(c->s, lane, head, head_len, fd, (off_t)off, (size_t)len,
				       kept ? KITE_UNIT_KEEP_FD : 0);

	if (!r)
		c->queued += head_len + len;
	return r;
}

static void t_close(void *t)
{
	struct conn *c = t;

	(void)kite_stream_close(c->s);
}

static void t_abort(void *t, int err)
{
	struct conn *c = t;

	kite_stream_abort(c->s, err);
}

static void log_line(struct conn *c, const struct sess_answer *a)
{
	struct alog_entry le = {.ip = c->ip, .a = a, .tls = c->tls};
	char line[4096];
	size_t n = alog_format(line, sizeof(line), &le);

	alog_write(&c->w->srv->log, line, n);
}

/* Write the lines of answers whose bytes are all in the kernel; once the
 * connection has ended, of all, with the body bytes that made it. */
static void flush_log(struct conn *c, bool ended)
{
	uint64_t sent = kite_stream_sent(c->s);

	while (c->plog && (ended || sent >= c->plog->end)) {
		struct pending_log *p = c->plog;
		struct http_request rq = {
			.referer = {p->text + p->line_len, p->ref_len},
			.user_agent = {p->text + p->line_len + p->ref_len, p->ua_len},
			.host = {p->text + p->line_len + p->ref_len + p->ua_len, p->host_len},
		};
		struct sess_answer a = {.req = &rq, .line = p->text, .line_len = p->line_len,
					.status = p->status, .when = p->when};

		if (sent > p->body_at)
			a.body_bytes = (sent < p->end ? sent : p->end) - p->body_at;
		log_line(c, &a);
		c->plog = p->next;
		free(p);
	}
	if (!c->plog)
		c->plog_tail = &c->plog;
}

static void t_answered(void *t, const struct sess_answer *a)
{
	struct conn *c = t;
	struct worker *w = c->w;
	const struct http_request *rq = a->req;
	size_t rl = rq ? rq->referer.n : 0, ul = rq ? rq->user_agent.n : 0;
	size_t hl = rq ? rq->host.n : 0;
	struct pending_log *p;
	uint64_t start = c->answered_end;

	w->cur.requests[status_slot(a->status)]++;
	w->cur.body_bytes += a->body_bytes;
	if (a->stream_id) {
		/* HTTP/2 answers when the stream has ended, with the body
		 * bytes it queued: streams interleave, no stream position. */
		w->cur.requests_h2[status_slot(a->status)]++;
		if (w->srv->log.fd >= 0)
			log_line(c, a);
		return;
	}
	c->answered_end = c->queued;
	if (w->srv->log.fd < 0)
		return;
	/* The request's strings live in the session's buffer only until the
	 * next request: keep copies for the line. */
	p = malloc(sizeof(*p) + a->line_len + rl + ul + hl);
	if (!p) {
		log_line(c, a); /* as queued */
		return;
	}
	p->next = NULL;
	p->end = c->queued;
	/* The body is the answer's last bytes (less if queueing failed). */
	p->body_at = p->end - start >= a->body_bytes ? p->end - a->body_bytes : start;
	p->status = a->status;
	p->when = a->when;
	p->line_len = a->line_len;
	p->ref_len = rl;
	p->ua_len = ul;
	p->host_len = hl;
	memcpy(p->text, a->line, a->line_len);
	if (rl)
		memcpy(p->text + a->line_len, rq->referer.p, rl);
	if (ul)
		memcpy(p->text + a->line_len + rl, rq->user_agent.p, ul);
	if (hl)
		memcpy(p->text + a->line_len + rl + ul, rq->host.p, hl);
	*c->plog_tail = p;
	c->plog_tail = &p->next;
}

static void t_pause(void *t, bool on)
{
	struct conn *c = t;

	kite_stream_pause_rx(c->s, on);
}

static size_t t_queued(void *t)
{
	struct conn *c = t;

	return kite_stream_queued(c->s);
}

/* A cached descriptor is about to close: the ring must let go of it. */
static void fc_forget(void *e, int fd)
{
	(void)kite_engine_forget_fd(e, fd);
}

static const struct sess_transport stream_transport = {
	.send = t_send,
	.sendfile = t_sendfile,
	.sendfile_kept = t_sendfile_kept,
	.unit = t_unit,
	.close = t_close,
	.abort = t_abort,
	.answered = t_answered,
	.pause = t_pause,
	.queued = t_queued,
};

/* ---- Engine callbacks ---------------------------------------------------- */

static void count_fallback(struct serve_stats *st, int dir, const char *why)
{
	unsigned i;

	for (i = 0; i < st->nfallback; i++)
		if (!strncmp(st->fallback[i].reason, why, sizeof(st->fallback[i].reason) - 1))
			break;
	if (i == st->nfallback) {
		if (i == FALLBACK_SLOTS) {
			st->fallback_other[dir]++;
			return;
		}
		snprintf(st->fallback[i].reason, sizeof(st->fallback[i].reason), "%s", why);
		st->nfallback++;
	}
	st->fallback[i].n[dir]++;
}

/* What the handshake gave: counters, and the access log's TLS fields.
 * Returns whether the client chose HTTP/2 and the kernel encrypts. */
static void note_tls(struct conn *c, bool *h2, bool *ktx)
{
	struct kite_conn *kc = kite_stream_conn(c->s);
	struct serve_stats *st = &c->w->cur;
	struct kite_conn_info info;
	const char *off;

	st->handshakes++;
	if (!kc || kite_conn_info(kc, &info)) {
		snprintf(c->tls, sizeof(c->tls), "-");
		return;
	}
	if (info.resumed)
		st->resumptions++;
	*h2 = !strcmp(info.alpn, "h2");
	*ktx = info.ktls[KITE_TX];
	for (int d = 0; d < KITE_DIR_COUNT; d++) {
		if (info.ktls[d])
			st->ktls[d]++;
		else
			count_fallback(st, d, info.ktls_reason[d]);
	}
	off = info.ktls[KITE_TX] ? (info.ktls[KITE_RX] ? "tx+rx" : "tx")
				 : (info.ktls[KITE_RX] ? "rx" : "off");
	snprintf(c->tls, sizeof(c->tls), "%s %s ktls=%s resumed=%d", info.version_name,
		 info.cipher_name, off, info.resumed ? 1 : 0);
}

/* 503 unless the server takes this connection: shutting down, the global
 * cap, the per-address cap (in that order). */
static int admit(struct conn *c)
{
	struct server *srv = c->w->srv;
	struct serve_stats *st = &c->w->cur;

	if (atomic_load(&srv->draining)) {
		st->rejected_shutdown++;
		return -1;
	}
	if (atomic_fetch_add(&srv->conns, 1) >= srv->cfg.max_conns) {
		atomic_fetch_sub(&srv->conns, 1);
		st->rejected_global++;
		return -1;
	}
	if (!iplimit_take(&srv->ipl, c->key)) {
		atomic_fetch_sub(&srv->conns, 1);
		st->rejected_ip++;
		return -1;
	}
	c->counted = true;
	st->open++;
	return 0;
}

static void on_open(struct kite_stream *s)
{
	struct worker *w = kite_engine_user(kite_stream_engine(s));
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct conn *c = calloc(1, sizeof(*c));
	bool h2 = false, ktx = false;

	if (!c) {
		kite_stream_abort(s, -ENOMEM);
		return;
	}
	c->w = w;
	c->s = s;
	c->plog_tail = &c->plog;
	sess_init(&c->sess, &w->scfg, &stream_transport, c);
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	kite_stream_set_user(s, c);
	memset(&ss, 0, sizeof(ss));
	if (getpeername(kite_stream_fd(s), (struct sockaddr *)&ss, &sl) == 0)
		ip_key(&ss, c->key, c->ip, sizeof(c->ip));
	else
		snprintf(c->ip, sizeof(c->ip), "-");
	note_tls(c, &h2, &ktx);
	if (h2) {
		/* File ranges are queued to the engine only where the kernel
		 * encrypts: there they are spliced behind the frame header. */
		c->h2 = h2_create(&w->h2cfg, &stream_transport, c, ktx);
		if (!c->h2) {
			kite_stream_abort(s, -ENOMEM);
			return;
		}
	}
	if (admit(c)) {
		if (c->h2)
			h2_reject(c->h2, 503);
		else
			sess_reject(&c->sess, 503);
	} else if (c->h2) {
		h2_drained(c->h2, mono_ms()); /* the server's SETTINGS go first */
	}
}

static void on_data(struct kite_stream *s, const void *buf, size_t len)
{
	struct conn *c = kite_stream_user(s);

	if (c && c->h2)
		h2_data(c->h2, buf, len, mono_ms());
	else if (c)
		sess_data(&c->sess, buf, len, mono_ms());
}

static void on_drain(struct kite_stream *s)
{
	struct conn *c = kite_stream_user(s);

	if (!c)
		return;
	flush_log(c, false);
	if (c->h2)
		h2_drained(c->h2, mono_ms());
	else
		sess_drained(&c->sess, mono_ms());
	/* A response is in the kernel: /metrics should show it already. */
	stats_publish(c->w);
}

/* A connection ended by a fault on our side (a file that shrank, a read
 * error, no memory), not by its peer: worth a line on stderr, at most one
 * a second per worker. Resets, timeouts and TLS errors are the peers'
 * doing and only counted (/metrics). */
static void report_close(struct worker *w, struct conn *c, int err)
{
	enum close_kind k = close_kind_of(err, true);
	uint64_t now;

	if (k != CK_FILE && k != CK_OTHER && err != -ENOMEM)
		return;
	now = mono_ms();
	if (now < w->close_report_at) {
		w->close_unreported++;
		return;
	}
	fprintf(stderr, "kite-serve: connection from %s ended: %s", c->ip,
		kite_conn_strerror(kite_stream_conn(c->s), err));
	if (w->close_unreported)
		fprintf(stderr, " (and %llu more not reported in the last second)",
			(unsigned long long)w->close_unreported);
	fputc('\n', stderr);
	w->close_unreported = 0;
	w->close_report_at = now + 1000;
}

/* The engine retries failed accepts itself (every ~100 ms): say why, at
 * most every 10 s per worker. */
static void report_accept(struct worker *w, uint64_t now)
{
	uint64_t n = w->cur.eng.accept_errors;
	int err = w->cur.eng.accept_error;

	if (n == w->accept_errors_seen || now < w->accept_report_at)
		return;
	fprintf(stderr, "kite-serve: worker %u: cannot accept connections: %s (%llu failed "
		"attempts; retrying)%s\n", w->id, kite_strerror(err),
		(unsigned long long)(n - w->accept_errors_seen),
		err == -EMFILE ? "; raise the descriptor limit (ulimit -n) or lower --max-conns"
		: err == -ENFILE ? "; the system's file table is full (fs.file-max)" : "");
	w->accept_errors_seen = n;
	w->accept_report_at = now + 10000;
}

static void on_close(struct kite_stream *s, int err)
{
	struct worker *w = kite_engine_user(kite_stream_engine(s));
	struct conn *c = kite_stream_user(s);

	w->cur.closed[close_kind_of(err, c != NULL)]++;
	if (c && err)
		report_close(w, c, err);
	if (c) {
		if (c->counted) {
			atomic_fetch_sub(&w->srv->conns, 1);
			iplimit_put(&w->srv->ipl, c->key);
			w->cur.open--;
		}
		if (c->prev)
			c->prev->next = c->next;
		else
			w->conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		flush_log(c, true);
		sess_fini(&c->sess);
		h2_destroy(c->h2); /* logs the streams still open */
		free(c);
		kite_stream_set_user(s, NULL);
	}
	stats_publish(w);
}

/* ---- The thread ---------------------------------------------------------- */

static void start_done(struct worker *w, int err)
{
	struct server *srv = w->srv;

	w->start_err = err;
	pthread_mutex_lock(&srv->mu);
	srv->started++;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->mu);
}

/* SIGHUP: main published a new context; new connections use it. */
static void adopt_ctx(struct worker *w)
{
	struct server *srv = w->srv;

	pthread_mutex_lock(&srv->mu);
	if (w->ctx_gen != srv->ctx_gen) {
		kite_engine_set_ctx(w->e, srv->ctx);
		w->ctx_gen = srv->ctx_gen;
		srv->acks++;
		pthread_cond_broadcast(&srv->cond);
	}
	pthread_mutex_unlock(&srv->mu);
}

/* SIGTERM: no new connections; idle ones end now, busy ones after the
 * request in progress (answered with Connection: close). */
static void begin_drain(struct worker *w)
{
	w->drain_seen = true;
	/* shutdown(2) on a listening socket unhashes it: the kernel refuses
	 * new connections (RST) at once, and a load balancer moves on,
	 * instead of them waiting in a backlog nobody will accept from. */
	for (unsigned i = 0; i < w->nl; i++)
		(void)shutdown(w->lfd[i], SHUT_RD);
	for (struct conn *c = w->conns; c; c = c->next) {
		if (c->h2)
			h2_drain_server(c->h2);
		else
			sess_drain_server(&c->sess);
	}
}

static int setup(struct worker *w)
{
	struct server *srv = w->srv;
	const struct serve_config *sc = &srv->cfg;
	struct kite_engine_config cfg;
	struct kite_engine_info info;
	struct kite_engine *e;
	int r;

	if (sc->file_cache) {
		struct filecache_config fcc = {
			.max_entries = sc->file_cache,
			.valid_ms = sc->file_cache_valid_ms,
			.small_max = sc->small_file_max,
			.stats = &w->cur.fc,
		};

		r = filecache_create(&w->fc, &fcc);
		if (r) {
			snprintf(w->start_msg, sizeof(w->start_msg), "file cache: %s",
				 kite_strerror(r));
			return r;
		}
		w->scfg.fc = w->fc;
		w->h2cfg.fc = w->fc;
	}
	kite_engine_config_init(&cfg);
	pthread_mutex_lock(&srv->mu);
	cfg.ctx = srv->ctx;
	w->ctx_gen = srv->ctx_gen;
	pthread_mutex_unlock(&srv->mu);
	cfg.on_open = on_open;
	cfg.on_data = on_data;
	cfg.on_drain = on_drain;
	cfg.on_close = on_close;
	cfg.user = w;
	cfg.handshake_timeout_ms = sc->handshake_timeout_ms;
	cfg.idle_timeout_ms = sc->idle_timeout_ms;
	cfg.send_timeout_ms = sc->send_timeout_ms;
	/* The engine's own cap closes connections without a word; ours
	 * (admit) answers 503. Leave room above ours for handshakes. */
	cfg.max_streams = sc->max_conns + sc->max_conns / 4 + 64;
	/* An HTTP/2 DATA frame carries at most 16 KiB (the client's
	 * SETTINGS_MAX_FRAME_SIZE, rarely raised): with the default (16 KiB
	 * and less go READ -> SEND) no frame would ever be spliced. Small
	 * HTTP/1.1 bodies ride in their head's record anyway (--inline-max). */
	if (sc->http2)
		cfg.small_max = 8192;
	r = kite_engine_create(&e, &cfg);
	if (r) {
		snprintf(w->start_msg, sizeof(w->start_msg), "engine: %s",
			 kite_engine_create_error());
		return r;
	}
	filecache_set_forget(w->fc, fc_forget, e);
	pthread_mutex_lock(&w->mu); /* worker_wake() may look already */
	w->e = e;
	pthread_mutex_unlock(&w->mu);
	for (unsigned i = 0; i < sc->nlisten; i++) {
		/* main bound (or took from systemd) every thread's sockets
		 * before dropping privileges. */
		r = kite_engine_add_listener(w->e, w->lfd[i]);
		if (r) {
			snprintf(w->start_msg, sizeof(w->start_msg), "engine listener: %s",
				 kite_strerror(r));
			return r;
		}
	}
	if (!kite_engine_describe(w->e, &info))
		snprintf(w->engine_desc, sizeof(w->engine_desc), "%s (%s; %s)", info.name,
			 info.detail, info.reason);
	return 0;
}

/* Under AddressSanitizer malloc is ASan's: glibc's malloc_trim() would
 * initialise glibc's arenas from a worker thread, and glibc then asserts
 * on that thread's exit (__malloc_arena_thread_freeres). Nothing to trim. */
#if defined(__SANITIZE_ADDRESS__)
#define KITE_FOREIGN_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KITE_FOREIGN_MALLOC 1
#endif
#endif
#ifndef KITE_FOREIGN_MALLOC
#define KITE_FOREIGN_MALLOC 0
#endif

/* glibc keeps what a burst of connections freed (3000 connections leave
 * ~140 MiB resident): once this worker has no connection left after one,
 * give the free memory back. At most once per burst, outside the loop's
 * hot path. */
static void trim_after_burst(struct worker *w)
{
	struct kite_engine_stats st;
	size_t n;

	/* Streams, not sessions: handshakes that never finish count too. */
	if (kite_engine_stats(w->e, &st))
		return;
	n = (size_t)st.streams;
	if (n > w->trim_peak)
		w->trim_peak = n;
	if (n == 0 && w->trim_peak >= 64) {
#if !KITE_FOREIGN_MALLOC
		malloc_trim(0);
#endif
		w->trim_peak = 0;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct server *srv = w->srv;
	struct kite_engine_stats st;
	int r = setup(w);

	start_done(w, r);
	if (r)
		goto out;
	for (;;) {
		uint64_t now;

		r = kite_engine_run(w->e, 500);
		if (r) {
			fprintf(stderr, "kite-serve: worker %u: engine loop: %s\n", w->id,
				kite_strerror(r));
			break;
		}
		now = mono_ms();
		adopt_ctx(w);
		if (atomic_load(&srv->draining) && !w->drain_seen)
			begin_drain(w);
		for (struct conn *c = w->conns; c; c = c->next) {
			if (c->h2)
				h2_tick(c->h2, now);
			else
				sess_tick(&c->sess, now);
		}
		filecache_sweep(w->fc);
		stats_publish(w);
		report_accept(w, now);
		trim_after_burst(w);
		if (atomic_load(&srv->force))
			break;
		if (w->drain_seen && !kite_engine_stats(w->e, &st) && !st.streams)
			break;
	}
out:
	{
		struct kite_engine *e;

		/* worker_wake() must never see an engine being destroyed. */
		pthread_mutex_lock(&w->mu);
		e = w->e;
		w->e = NULL;
		pthread_mutex_unlock(&w->mu);
		/* Aborts what is left (on_close(-ECANCELED) frees each
		 * session). The responses' last references close cached
		 * descriptors without telling the engine: nothing is queued
		 * any more, and a stream the kernel never let go is closed
		 * after the ring (and its file table) is gone. */
		filecache_set_forget(w->fc, NULL, NULL);
		kite_engine_destroy(e);
	}
	/* After the engine: its last on_close released every response. */
	filecache_destroy(w->fc);
	w->fc = NULL;
	for (unsigned i = 0; i < w->nl; i++)
		close(w->lfd[i]);
	w->nl = 0;
	stats_publish(w);
	pthread_mutex_lock(&srv->mu);
	srv->exited++;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->mu);
	return NULL;
}

int worker_start(struct worker *w, struct server *srv, unsigned id)
{
	w->srv = srv;
	w->id = id;
	w->scfg.rp = &srv->rp;
	w->scfg.pipeline_max = srv->cfg.pipeline;
	w->scfg.in_max = 64u << 10;
	w->scfg.head_timeout_ms = srv->cfg.header_timeout_ms;
	/* A small file the cache does not hold in memory (no cache, or a
	 * file still changing) costs one pread and then rides in the head's
	 * record: one send instead of a file operation plus a second record. */
	w->scfg.inline_max = srv->cfg.inline_max;
	w->h2cfg = (struct h2_config){
		.rp = &srv->rp,
		.inline_max = srv->cfg.inline_max,
		.max_streams = srv->cfg.h2_max_streams,
		.max_requests = srv->cfg.h2_max_requests,
		.resets_per_s = srv->cfg.h2_resets_per_s,
		.max_header_list = HTTP_MAX_HEADERS_BYTES,
		.send_timeout_ms = srv->cfg.send_timeout_ms,
		.header_timeout_ms = srv->cfg.header_timeout_ms,
		.stats = &w->cur.h2,
	};
	pthread_mutex_init(&w->mu, NULL);
	return -pthread_create(&w->th, NULL, worker_main, w);
}

void worker_wake(struct worker *w)
{
	/* kite_engine_stop is thread-safe; the loop comes back within one
	 * iteration and looks at the shared flags. */
	pthread_mutex_lock(&w->mu);
	if (w->e)
		kite_engine_stop(w->e);
	pthread_mutex_unlock(&w->mu);
}

int worker_join(struct worker *w)
{
	return -pthread_join(w->th, NULL);
}
