/* SPDX-License-Identifier: MIT */
/*
 * Socket paths: one file of `size` bytes per iteration from a sender (this
 * thread, the TLS server) to a receiver thread (the TLS client) over
 * loopback TCP, each pinned to its own core. An iteration ends when the
 * receiver has the whole file and says so through an eventfd, so the time
 * per iteration is the time to deliver a file, not to queue it in a socket
 * buffer. Both ends use the path's stack (kite <-> kite, GnuTLS <-> GnuTLS).
 *
 * The file is a memfd in the page cache (bench_data_file). "send" paths read
 * it in 64 KiB chunks with pread() and send them; "sendfile" paths hand the
 * kernel the file descriptor; "splice" paths are kite's io_uring engine
 * (kite_engine, one adopted stream, kite_stream_sendfile per file), whose
 * ring splices file -> pipe -> socket. The engine's small-range copy path
 * (small_max) is turned off so that every size measures the splice.
 * kite_engine_userspace is the same engine with kTLS off: file reads into
 * its buffers, GnuTLS records, sends.
 *
 * Counters per row:
 *   bytes_per_second     file bytes delivered per second of wall time
 *   cpu_user_ns_per_B    sender thread user CPU / bytes (getrusage RUSAGE_THREAD)
 *   cpu_sys_ns_per_B     sender thread system CPU / bytes
 *   syscalls_per_MiB     the sender loop's own calls per MiB: pread, send,
 *                        sendfile, gnutls_record_send(_file), kite_send(file).
 *                        For plain paths each is one syscall; a GnuTLS or kite
 *                        call may make more than one (it is not traced).
 *                        Engine rows: the engine's own count of every syscall
 *                        it made (kite_engine_stats: io_uring_enter and direct
 *                        calls) plus the bench's kite_engine_stop() per file.
 *   sqes_per_MiB         engine rows: io_uring submissions per MiB.
 *
 * Engine rows count sender CPU as the whole process minus the receiver
 * thread: io_uring may finish a splice in its io-wq worker threads, which
 * RUSAGE_THREAD of the sender would miss.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/socket.h>

#include "bench.h"

#define CHUNK (64u << 10)    /* read size of the "send" paths */
#define RX_BUF (256u << 10)  /* receiver's read size */

enum path {
	PLAIN_SEND,
	PLAIN_SENDFILE,
	PLAIN_SPLICE,
	USERSPACE_GNUTLS,
	KITE_ENGINE_USERSPACE,
	GNUTLS_KTLS,
	KITE_KTLS_SEND,
	KITE_KTLS_SENDFILE,
	KITE_KTLS_SPLICE,
	NPATHS
};

enum stack { PLAIN, GNUTLS, KITE };

static const struct {
	const char *name;
	enum stack stack;
	bool engine;       /* the sender is a kite_engine (io_uring splice) */
	enum kite_engine_path want; /* engine rows: the path the bytes must take */
} paths[NPATHS] = {
	[PLAIN_SEND] = {"plain_send", PLAIN},
	[PLAIN_SENDFILE] = {"plain_sendfile", PLAIN},
	[PLAIN_SPLICE] = {"plain_splice", PLAIN, true, KITE_PATH_PLAIN_SPLICE},
	[USERSPACE_GNUTLS] = {"userspace_gnutls", GNUTLS},
	/* The engine with kTLS turned off: its userspace-TLS path, to set
	 * against plain_splice (the same engine without TLS). */
	[KITE_ENGINE_USERSPACE] = {"kite_engine_userspace", KITE, true, KITE_PATH_USER},
	[GNUTLS_KTLS] = {"gnutls_ktls", GNUTLS},
	[KITE_KTLS_SEND] = {"kite_ktls_send", KITE},
	[KITE_KTLS_SENDFILE] = {"kite_ktls_sendfile", KITE},
	[KITE_KTLS_SPLICE] = {"kite_ktls_splice", KITE, true, KITE_PATH_KTLS_SPLICE},
};

/* One registered family member: a path, and a cipher for TLS paths. */
struct row {
	enum path path;
	const struct bench_cipher *cipher;
};
static struct row rows[NPATHS * BENCH_NCIPHERS];

/* Connection ends, used as array indices. */
enum { RX = 0, TX = 1 };

struct link {
	enum path path;
	const struct bench_cipher *cipher;
	size_t size;        /* bytes per iteration */
	int fds[2];         /* [RX] client side, [TX] server side */
	int ack;            /* eventfd: +1 per whole file received, or on error */
	int rx_cpu;
	pthread_t th;
	bool th_running;
	bool tx_ready;      /* sender handshake done */

	struct kite_ctx *kctx[2];
	struct kite_conn *kc[2];
	gnutls_certificate_credentials_t gcred[2];
	gnutls_session_t gs[2];

	/* Engine rows: the sender is this engine with one adopted stream
	 * (it owns fds[TX] then; fds[TX] is -1). Flags set by its callbacks. */
	struct kite_engine *eng;
	struct kite_stream *stream;
	bool opened, drained, closed;
	int close_err;
	char close_msg[256];  /* the TLS connection's detail of close_err */
	/* Engine rows: the receiver thread's CPU time, stored before each ack,
	 * so that the sender's share is the process's minus this. */
	_Atomic uint64_t rx_user_ns, rx_sys_ns;

	/* The receiver's outcome: set before its ack or exit. */
	atomic_bool rx_failed;
	char rx_msg[256];
	const char *rx_how; /* how the receiver decrypts: "kernel" / "userspace" */
	char rx_reason[256];  /* kite: why RX is not offloaded */
	char err[512];      /* the sender's error */
};

/* ---- Both ends -------------------------------------------------------------- */

static int engine_until(struct link *l, const bool *flag, const char *what);

static int end_handshake(struct link *l, int end)
{
	char *msg = end == TX ? l->err : l->rx_msg;
	size_t len = end == TX ? sizeof(l->err) : sizeof(l->rx_msg);
	const char *who = end == TX ? "server" : "client";
	int r;

	if (end == TX && paths[l->path].engine)
		return engine_until(l, &l->opened, "the handshake");
	switch (paths[l->path].stack) {
	case PLAIN:
		return 0;
	case GNUTLS:
		r = bench_gnutls_handshake(l->gs[end]);
		if (r < 0)
			snprintf(msg, len, "%s handshake: %s", who, gnutls_strerror(r));
		return r < 0 ? -EPROTO : 0;
	case KITE:
		r = kite_handshake(l->kc[end]);
		if (r)
			snprintf(msg, len, "%s handshake: %s", who, kite_conn_strerror(l->kc[end], r));
		return r;
	}
	return -EINVAL;
}

static ssize_t rx_read(struct link *l, void *buf, size_t len)
{
	ssize_t n;

	switch (paths[l->path].stack) {
	case PLAIN:
		do
			n = recv(l->fds[RX], buf, len, 0);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			snprintf(l->rx_msg, sizeof(l->rx_msg), "recv: %s", strerror(errno));
		return n < 0 ? -1 : n;
	case GNUTLS:
		/* A blocking socket still sees AGAIN after records with nothing
		 * for the caller (TLS 1.3 NewSessionTicket): read on. */
		do
			n = gnutls_record_recv(l->gs[RX], buf, len);
		while (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED);
		if (n < 0)
			snprintf(l->rx_msg, sizeof(l->rx_msg), "gnutls_record_recv: %s",
				 gnutls_strerror((int)n));
		return n < 0 ? -1 : n;
	case KITE:
		n = kite_recv(l->kc[RX], buf, len);
		if (n < 0)
			snprintf(l->rx_msg, sizeof(l->rx_msg), "kite_recv: %s",
				 kite_conn_strerror(l->kc[RX], (int)n));
		return n < 0 ? -1 : n;
	}
	return -1;
}

static void ack(struct link *l)
{
	uint64_t one = 1;

	if (paths[l->path].engine) {
		struct bench_cpu c;

		bench_thread_cpu(&c);
		atomic_store(&l->rx_user_ns, c.user_ns);
		atomic_store(&l->rx_sys_ns, c.sys_ns);
	}
	if (write(l->ack, &one, sizeof(one)) != sizeof(one))
		abort(); /* an eventfd write of 1 cannot fail short of a bug */
}

static const char *rx_decrypts(struct link *l)
{
	struct kite_conn_info info;

	switch (paths[l->path].stack) {
	case GNUTLS:
		return gnutls_transport_is_ktls_enabled(l->gs[RX]) & GNUTLS_KTLS_RECV ? "kernel"
										       : "userspace";
	case KITE:
		if (kite_conn_info(l->kc[RX], &info))
			return "?";
		snprintf(l->rx_reason, sizeof(l->rx_reason), "%s", info.ktls_reason[KITE_RX]);
		return info.ktls[KITE_RX] ? "kernel" : "userspace";
	default:
		return NULL;
	}
}

static void *receiver(void *arg)
{
	struct link *l = arg;
	uint8_t *buf = malloc(RX_BUF);
	size_t got = 0;
	bool ok = buf != NULL;

	bench_pin(l->rx_cpu, NULL);
	if (!buf)
		snprintf(l->rx_msg, sizeof(l->rx_msg), "out of memory");
	if (ok && end_handshake(l, RX))
		ok = false;
	if (ok) {
		/* How this end decrypts is settled once its handshake (and
		 * kite's offload after it) is done: tell the sender, which
		 * waits for this before it times anything. */
		l->rx_how = rx_decrypts(l);
		ack(l);
	}
	while (ok) {
		ssize_t n = rx_read(l, buf, RX_BUF);

		if (n < 0) {
			ok = false;
			break;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		/* The sender waits for this ack before the next file, so a
		 * read never holds bytes of two files. */
		if (got > l->size) {
			snprintf(l->rx_msg, sizeof(l->rx_msg), "%zu bytes arrived for a %zu-byte file",
				 got, l->size);
			ok = false;
		} else if (got == l->size) {
			got = 0;
			ack(l);
		}
	}
	if (ok && got) {
		snprintf(l->rx_msg, sizeof(l->rx_msg), "connection ended %zu bytes into a file", got);
		ok = false;
	}
	/* The engine's graceful close waits (lingers) for the peer's end. */
	if (ok && paths[l->path].engine)
		shutdown(l->fds[RX], SHUT_WR);
	if (!ok) {
		atomic_store(&l->rx_failed, true);
		shutdown(l->fds[RX], SHUT_RDWR); /* unblock the sender */
		ack(l);
	}
	free(buf);
	return NULL;
}

/* ---- Setup and teardown ----------------------------------------------------- */

static int wait_ack(struct link *l);

static int setup_kite(struct link *l)
{
	const struct bench_creds *cr = bench_creds(BENCH_ECDSA_P256);
	char prio[128];
	int r;

	if (!cr) {
		snprintf(l->err, sizeof(l->err), "no certificate");
		return -EINVAL;
	}
	bench_priority(prio, sizeof(prio), KITE_TLS13, l->cipher);
	if ((r = kite_ctx_create(&l->kctx[TX], KITE_SERVER)) ||
	    (r = kite_ctx_set_credentials(l->kctx[TX], cr->cert, cr->key)) ||
	    (r = kite_ctx_set_priority(l->kctx[TX], prio)) ||
	    (r = kite_ctx_create(&l->kctx[RX], KITE_CLIENT)) ||
	    (r = kite_ctx_set_verify(l->kctx[RX], false)) ||
	    (r = kite_ctx_set_priority(l->kctx[RX], prio))) {
		snprintf(l->err, sizeof(l->err), "kite context: %s: %s", kite_strerror(r),
			 kite_ctx_error(l->kctx[RX] ? l->kctx[RX] : l->kctx[TX]));
		return r;
	}
	/* Engine rows: the engine makes the server's conn itself. */
	for (int e = 0; e < (paths[l->path].engine ? 1 : 2); e++) {
		r = kite_conn_create(&l->kc[e], l->kctx[e], l->fds[e]);
		if (r) {
			snprintf(l->err, sizeof(l->err), "kite_conn_create: %s", kite_strerror(r));
			return r;
		}
	}
	return 0;
}

static int setup_gnutls(struct link *l)
{
	const struct bench_creds *cr = bench_creds(BENCH_ECDSA_P256);
	char prio[128];
	const char *where = "credentials";
	int r;

	if (!cr) {
		snprintf(l->err, sizeof(l->err), "no certificate");
		return -EINVAL;
	}
	bench_priority(prio, sizeof(prio), KITE_TLS13, l->cipher);
	for (int e = 0; e < 2; e++) {
		r = gnutls_certificate_allocate_credentials(&l->gcred[e]);
		if (r < 0)
			goto fail;
		if (e == TX) {
			r = gnutls_certificate_set_x509_key_file(l->gcred[e], cr->cert, cr->key,
								 GNUTLS_X509_FMT_PEM);
			if (r < 0)
				goto fail;
		}
		where = "session";
		r = gnutls_init(&l->gs[e], e == TX ? GNUTLS_SERVER : GNUTLS_CLIENT);
		if (r < 0) {
			l->gs[e] = NULL;
			goto fail;
		}
		if ((r = gnutls_priority_set_direct(l->gs[e], prio, NULL)) < 0 ||
		    (r = gnutls_credentials_set(l->gs[e], GNUTLS_CRD_CERTIFICATE, l->gcred[e])) < 0)
			goto fail;
		/* A plain fd transport: GnuTLS's kTLS needs the socket itself. */
		gnutls_transport_set_int(l->gs[e], l->fds[e]);
	}
	return 0;
fail:
	snprintf(l->err, sizeof(l->err), "GnuTLS %s: %s", where, gnutls_strerror(r));
	return -EINVAL;
}

/* ---- The engine (splice rows) ---------------------------------------------- */

static struct link *eng_link(struct kite_stream *s)
{
	return kite_engine_user(kite_stream_engine(s));
}

static void on_open(struct kite_stream *s)
{
	eng_link(s)->opened = true;
	kite_engine_stop(kite_stream_engine(s));
}

static void on_drain(struct kite_stream *s)
{
	eng_link(s)->drained = true;
	kite_engine_stop(kite_stream_engine(s));
}

static void on_close(struct kite_stream *s, int err)
{
	struct link *l = eng_link(s);

	l->closed = true;
	l->close_err = err;
	if (err && kite_stream_conn(s))
		snprintf(l->close_msg, sizeof(l->close_msg), "%s",
			 kite_conn_strerror(kite_stream_conn(s), err));
	l->stream = NULL;
	kite_engine_stop(kite_stream_engine(s));
}

/* Run the engine until *flag (set by a callback), the stream's end, or 20 s.
 * 0, or -1 with l->err set. */
static int engine_until(struct link *l, const bool *flag, const char *what)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!*flag) {
		int r;

		if (l->closed) {
			snprintf(l->err, sizeof(l->err), "the engine closed the stream during %s: %s",
				 what, l->close_err ? strerror(-l->close_err) : "graceful close");
			if (l->close_msg[0])
				snprintf(l->err + strlen(l->err), sizeof(l->err) - strlen(l->err),
					 " (%s)", l->close_msg);
			return -1;
		}
		r = kite_engine_run(l->eng, 1000);
		if (r) {
			snprintf(l->err, sizeof(l->err), "kite_engine_run: %s", strerror(-r));
			return -1;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > 20) {
			snprintf(l->err, sizeof(l->err), "the engine did not finish %s in 20 s", what);
			return -1;
		}
	}
	return 0;
}

static int setup_engine(struct link *l)
{
	struct kite_engine_config cfg;
	int r;

	if (paths[l->path].stack == KITE && (r = setup_kite(l)))
		return r;
	if (l->path == KITE_ENGINE_USERSPACE && (r = kite_ctx_set_ktls(l->kctx[TX], 0))) {
		snprintf(l->err, sizeof(l->err), "kite_ctx_set_ktls: %s", kite_strerror(r));
		return r;
	}
	kite_engine_config_init(&cfg);
	cfg.ctx = l->kctx[TX]; /* NULL for plain_splice: a plaintext engine */
	cfg.on_open = on_open;
	cfg.on_drain = on_drain;
	cfg.on_close = on_close;
	cfg.user = l;
	cfg.small_max = 0;        /* every size splices: the row is the splice path */
	cfg.idle_timeout_ms = 0;  /* the receiver never writes; a long row is not idle */
	cfg.max_streams = 1;
	r = kite_engine_create(&l->eng, &cfg);
	if (r) {
		snprintf(l->err, sizeof(l->err), "kite_engine_create: %s: %s", strerror(-r),
			 kite_engine_create_error());
		return r;
	}
	r = kite_engine_adopt(l->eng, l->fds[TX], &l->stream);
	/* The engine owns the socket from now on (and closed it on -EMFILE). */
	if (!r || r == -EMFILE)
		l->fds[TX] = -1;
	if (r)
		snprintf(l->err, sizeof(l->err), "kite_engine_adopt: %s", strerror(-r));
	return r;
}

/* Close the stream gracefully (close_notify, FIN) and run the engine until
 * it has; then, or at once after a failure, destroy the engine, which
 * resets a connection still open. How the close went is not measured. */
static void engine_close(struct link *l, bool clean)
{
	if (clean && l->stream && l->tx_ready && !kite_stream_close(l->stream))
		(void)engine_until(l, &l->closed, "its close");
	kite_engine_destroy(l->eng); /* on_close(-ECANCELED) for a stream still there */
	l->eng = NULL;
}

/* Close the sending direction cleanly, or (failed) tear the socket down so
 * that the receiver stops; then wait for the receiver. */
static void link_close(struct link *l, bool clean)
{
	if (l->eng) {
		engine_close(l, clean);
	} else if (clean && l->tx_ready) {
		int r = 0;

		switch (paths[l->path].stack) {
		case PLAIN:
			r = shutdown(l->fds[TX], SHUT_WR);
			break;
		case GNUTLS:
			do
				r = gnutls_bye(l->gs[TX], GNUTLS_SHUT_WR);
			while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
			break;
		case KITE:
			r = kite_shutdown(l->kc[TX]);
			break;
		}
		if (r)
			clean = false;
	}
	if (!clean && l->fds[TX] >= 0)
		shutdown(l->fds[TX], SHUT_RDWR);
	if (l->th_running)
		pthread_join(l->th, NULL);
	l->th_running = false;
	for (int e = 0; e < 2; e++) {
		kite_conn_destroy(l->kc[e]);
		kite_ctx_destroy(l->kctx[e]);
		if (l->gs[e])
			gnutls_deinit(l->gs[e]);
		if (l->gcred[e])
			gnutls_certificate_free_credentials(l->gcred[e]);
		if (l->fds[e] >= 0)
			close(l->fds[e]);
	}
	if (l->ack >= 0)
		close(l->ack);
}

static int link_open(struct link *l)
{
	int r;

	r = bench_tcp_pair(l->fds);
	if (r) {
		snprintf(l->err, sizeof(l->err), "loopback TCP pair: %s", strerror(-r));
		return r;
	}
	l->ack = eventfd(0, EFD_CLOEXEC);
	if (l->ack < 0) {
		r = -errno;
		snprintf(l->err, sizeof(l->err), "eventfd: %s", strerror(errno));
		return r;
	}
	if (paths[l->path].engine)
		r = setup_engine(l);
	else if (paths[l->path].stack == KITE)
		r = setup_kite(l);
	else if (paths[l->path].stack == GNUTLS)
		r = setup_gnutls(l);
	if (r)
		return r;
	r = pthread_create(&l->th, NULL, receiver, l);
	if (r) {
		snprintf(l->err, sizeof(l->err), "pthread_create: %s", strerror(r));
		return -r;
	}
	l->th_running = true;
	r = end_handshake(l, TX);
	if (r)
		return r;
	l->tx_ready = true;
	return wait_ack(l);
}

/* ---- Sending ---------------------------------------------------------------- */

static ssize_t read_chunk(struct link *l, int file, uint8_t *buf, size_t off, uint64_t *calls)
{
	size_t want = l->size - off < CHUNK ? l->size - off : CHUNK;
	ssize_t n;

	do {
		n = pread(file, buf, want, (off_t)off);
		++*calls;
	} while (n < 0 && errno == EINTR);
	if (n <= 0)
		snprintf(l->err, sizeof(l->err), "pread at %zu: %s", off,
			 n ? strerror(errno) : "unexpected end of file");
	return n <= 0 ? -1 : n;
}

/* Send one whole file down the path; 0 or -1 with l->err set. */
static int send_file(struct link *l, int file, uint8_t *buf, uint64_t *calls)
{
	off_t off = 0;
	int r;

	switch (l->path) {
	case PLAIN_SEND:
	case USERSPACE_GNUTLS:
	case KITE_KTLS_SEND:
		while ((size_t)off < l->size) {
			ssize_t n = read_chunk(l, file, buf, (size_t)off, calls), w;

			if (n < 0)
				return -1;
			for (ssize_t done = 0; done < n; done += w) {
				++*calls;
				if (l->path == PLAIN_SEND) {
					w = send(l->fds[TX], buf + done, (size_t)(n - done), MSG_NOSIGNAL);
					if (w < 0 && errno == EINTR)
						w = 0;
					else if (w < 0)
						snprintf(l->err, sizeof(l->err), "send: %s", strerror(errno));
				} else if (l->path == USERSPACE_GNUTLS) {
					/* One record (at most 16 KiB) per call. */
					w = gnutls_record_send(l->gs[TX], buf + done, (size_t)(n - done));
					if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED)
						w = 0;
					else if (w < 0)
						snprintf(l->err, sizeof(l->err), "gnutls_record_send: %s",
							 gnutls_strerror((int)w));
				} else {
					w = kite_send(l->kc[TX], buf + done, (size_t)(n - done));
					if (w < 0)
						snprintf(l->err, sizeof(l->err), "kite_send: %s",
							 kite_conn_strerror(l->kc[TX], (int)w));
				}
				if (w < 0)
					return -1;
			}
			off += n;
		}
		return 0;
	case PLAIN_SENDFILE:
	case GNUTLS_KTLS:
	case KITE_KTLS_SENDFILE:
		while ((size_t)off < l->size) {
			size_t left = l->size - (size_t)off;
			ssize_t w;

			++*calls;
			if (l->path == PLAIN_SENDFILE) {
				w = sendfile(l->fds[TX], file, &off, left);
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					snprintf(l->err, sizeof(l->err), "sendfile: %s",
						 w ? strerror(errno) : "no progress");
			} else if (l->path == GNUTLS_KTLS) {
				w = gnutls_record_send_file(l->gs[TX], file, &off, left);
				if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED)
					continue;
				if (w <= 0)
					snprintf(l->err, sizeof(l->err), "gnutls_record_send_file: %s",
						 w ? gnutls_strerror((int)w) : "no progress");
			} else {
				w = kite_sendfile(l->kc[TX], file, &off, left);
				if (w <= 0)
					snprintf(l->err, sizeof(l->err), "kite_sendfile: %s",
						 w ? kite_conn_strerror(l->kc[TX], (int)w) : "no progress");
			}
			if (w <= 0)
				return -1;
		}
		return 0;
	case PLAIN_SPLICE:
	case KITE_ENGINE_USERSPACE:
	case KITE_KTLS_SPLICE:
		if (!l->stream) {
			snprintf(l->err, sizeof(l->err), "the engine closed the stream: %s%s%s",
				 strerror(-l->close_err), l->close_msg[0] ? ": " : "", l->close_msg);
			return -1;
		}
		l->drained = false;
		r = kite_stream_sendfile(l->stream, file, 0, l->size, 0);
		if (r) {
			snprintf(l->err, sizeof(l->err), "kite_stream_sendfile: %s", strerror(-r));
			return -1;
		}
		/* Engine syscalls are counted by the engine; this one is ours:
		 * on_drain's kite_engine_stop() (an eventfd write). */
		++*calls;
		return engine_until(l, &l->drained, "sending a file");
	default:
		snprintf(l->err, sizeof(l->err), "path not implemented");
		return -1;
	}
}

/* Wait until the receiver has the whole file. */
static int wait_ack(struct link *l)
{
	uint64_t v;
	ssize_t n;

	do
		n = read(l->ack, &v, sizeof(v));
	while (n < 0 && errno == EINTR);
	if (n != sizeof(v)) {
		snprintf(l->err, sizeof(l->err), "eventfd read: %s", strerror(errno));
		return -1;
	}
	if (atomic_load(&l->rx_failed)) {
		snprintf(l->err, sizeof(l->err), "receiver: %s", l->rx_msg);
		return -1;
	}
	return 0;
}

/* ---- Who encrypts ----------------------------------------------------------- */

/* Engine rows: can this engine splice at all here? */
static bool engine_splices(struct kb_state *st, struct link *l)
{
	struct kite_engine_info info;

	if (kite_engine_describe(l->eng, &info)) {
		kb_fail(st, "kite_engine_describe failed");
		return false;
	}
	if (info.backend == KITE_ENGINE_EPOLL) {
		kb_skip(st, "kite's engine runs on its epoll rung here (%s): files go out with "
			    "sendfile(2), there is no io_uring splice to measure", info.reason);
		return false;
	}
	if (!info.pipes) {
		kb_skip(st, "kite's engine has no pipes for splicing here (%s)", info.detail);
		return false;
	}
	return true;
}

/*
 * After the handshake: does this row measure what its name says? Returns
 * true to run; otherwise the row has been skipped or failed with the reason.
 */
static bool path_engaged(struct kb_state *st, struct link *l)
{
	const struct kite_caps *caps = kite_caps_get();
	struct kite_conn_info info;
	unsigned kt;

	switch (l->path) {
	case USERSPACE_GNUTLS:
		if (gnutls_transport_is_ktls_enabled(l->gs[TX])) {
			kb_skip(st, "GnuTLS put this session into kTLS by itself (its ktls switch is "
				    "on: %s); rerun with --gnutls-ktls=off for the userspace row",
				bench_gnutls_ktls_config);
			return false;
		}
		return true;
	case GNUTLS_KTLS:
		kt = gnutls_transport_is_ktls_enabled(l->gs[TX]);
		if (!(kt & GNUTLS_KTLS_SEND)) {
			if (!bench_gnutls_ktls_switch_on)
				kb_skip(st, "GnuTLS's ktls switch is off: %s", bench_gnutls_ktls_config);
			else if (caps->ulp)
				kb_skip(st, "GnuTLS did not enable kTLS (gnutls_transport_is_ktls_enabled "
					    "= 0 with its switch on: %s); this kernel: %s",
					bench_gnutls_ktls_config, caps->ulp_reason);
			else
				kb_skip(st, "GnuTLS did not enable kTLS although this kernel has it "
					    "(gnutls_transport_is_ktls_enabled = 0 with its switch on: %s): "
					    "this GnuTLS %s is built without kTLS (Debian configures "
					    "3.7.9 without --enable-ktls)",
					bench_gnutls_ktls_config, gnutls_check_version(NULL));
			return false;
		}
		return true;
	case PLAIN_SPLICE:
		return engine_splices(st, l);
	case KITE_KTLS_SEND:
	case KITE_KTLS_SENDFILE:
	case KITE_KTLS_SPLICE:
		if (l->path == KITE_KTLS_SPLICE && !engine_splices(st, l))
			return false;
		kite_conn_info(l->path == KITE_KTLS_SPLICE ? kite_stream_conn(l->stream) : l->kc[TX],
			       &info);
		if (!info.ktls[KITE_TX]) {
			if (bench_require_ktls())
				kb_fail(st, "KITE_REQUIRE_KTLS=1 but kite did not offload TX: %s",
					info.ktls_reason[KITE_TX]);
			else
				kb_skip(st, "kite did not offload TX to the kernel: %s",
					info.ktls_reason[KITE_TX]);
			return false;
		}
		/* The receiver is part of the path: in a kTLS kernel it must
		 * decrypt there too. */
		if (bench_require_ktls() && strcmp(l->rx_how, "kernel")) {
			kb_fail(st, "KITE_REQUIRE_KTLS=1 but kite did not offload the receiver's RX: %s",
				l->rx_reason);
			return false;
		}
		return true;
	default:
		return true;
	}
}

/* ---- The benchmark ---------------------------------------------------------- */

/*
 * The sender's CPU time. Engine rows: the process's minus the receiver
 * thread's (as of its last ack), so that io_uring's io-wq workers count as
 * the sender's; other rows: the sender thread's own.
 */
static void sender_cpu(struct link *l, struct bench_cpu *out)
{
	if (!paths[l->path].engine) {
		bench_thread_cpu(out);
		return;
	}
	bench_process_cpu(out);
	out->user_ns -= atomic_load(&l->rx_user_ns);
	out->sys_ns -= atomic_load(&l->rx_sys_ns);
}

/* Engine rows: counters from the engine's stats over the timed loop, and
 * the row's label ("engine:uring plain-splice 100%"). The bytes must have
 * taken the row's path; otherwise the row fails. */
static void engine_counters(struct kb_state *st, struct link *l, const struct kite_engine_stats *s0,
			    const struct kite_engine_stats *s1, double bytes, uint64_t calls,
			    char *label, size_t len)
{
	enum kite_engine_path want = paths[l->path].want;
	struct kite_engine_info info;
	double moved = 0, mib = bytes / 1048576.0;
	int n;

	kite_engine_describe(l->eng, &info);
	n = snprintf(label, len, "engine:%s", info.name);
	for (int p = 0; p < KITE_PATH_COUNT; p++)
		moved += (double)(s1->path[p].bytes - s0->path[p].bytes);
	for (int p = 0; p < KITE_PATH_COUNT && moved > 0 && (size_t)n < len; p++) {
		double b = (double)(s1->path[p].bytes - s0->path[p].bytes);

		if (b > 0)
			n += snprintf(label + n, len - (size_t)n, " %s %.0f%%",
				      kite_engine_path_name((enum kite_engine_path)p), 100.0 * b / moved);
	}
	if (moved > 0 && (double)(s1->path[want].bytes - s0->path[want].bytes) < moved / 2)
		kb_fail(st, "the engine moved most bytes outside %s (%s)",
			kite_engine_path_name(want), label);
	if (mib > 0) {
		kb_counter(st, "syscalls_per_MiB",
			   ((double)(s1->syscalls - s0->syscalls) + (double)calls) / mib, KB_VALUE);
		kb_counter(st, "sqes_per_MiB", (double)(s1->sqes - s0->sqes) / mib, KB_VALUE);
	}
}

static void bm_path(struct kb_state *st, const void *arg)
{
	const struct row *row = arg;
	struct link l = {
		.path = row->path,
		.cipher = row->cipher,
		.size = (size_t)kb_arg(st, 0),
		.fds = {-1, -1},
		.ack = -1,
	};
	struct bench_affinity saved = {0};
	struct bench_cpu c0, c1;
	struct kite_engine_stats s0 = {0}, s1 = {0};
	uint8_t *buf = NULL;
	uint64_t calls = 0;
	int cpu[2], file;
	bool clean = false;
	double bytes;
	char label[160] = "";

	file = bench_data_file(l.size);
	buf = malloc(CHUNK);
	if (file < 0 || !buf) {
		kb_fail(st, "data file of %zu bytes: %s", l.size,
			file < 0 ? strerror(-file) : "out of memory");
		goto out;
	}
	bench_cpus(cpu);
	bench_pin(cpu[0], &saved);
	l.rx_cpu = cpu[1];
	if (link_open(&l)) {
		/* The receiver's message is often the better one (it saw the
		 * alert); wait for it before reporting. */
		link_close(&l, false);
		kb_fail(st, "setup: %s%s%s", l.err, l.rx_msg[0] ? "; receiver: " : "", l.rx_msg);
		goto out;
	}
	if (!path_engaged(st, &l))
		goto out_close;

	if (l.eng)
		kite_engine_stats(l.eng, &s0);
	sender_cpu(&l, &c0);
	while (kb_keep_running(st)) {
		if (send_file(&l, file, buf, &calls) || wait_ack(&l)) {
			/* A receiver that failed first is the cause; its message
			 * is in rx_msg, and wait_ack has already quoted it. */
			bool rx = atomic_load(&l.rx_failed) && !strstr(l.err, "receiver: ");

			kb_fail(st, "%s%s%s", l.err, rx ? "; receiver: " : "", rx ? l.rx_msg : "");
			break;
		}
	}
	sender_cpu(&l, &c1);
	if (l.eng)
		kite_engine_stats(l.eng, &s1);
	clean = !kb_stopped(st);

	bytes = (double)kb_iterations(st) * (double)l.size;
	kb_bytes(st, (int64_t)bytes);
	if (l.eng)
		engine_counters(st, &l, &s0, &s1, bytes, calls, label, sizeof(label));
	else if (bytes > 0)
		kb_counter(st, "syscalls_per_MiB", (double)calls / (bytes / 1048576.0), KB_VALUE);
	if (bytes > 0 && !bench_in_uml()) {
		/* Signed: the process's and a thread's user/system split are
		 * scaled separately from tick samples (engine rows). */
		double user = (double)(int64_t)(c1.user_ns - c0.user_ns);
		double sys = (double)(int64_t)(c1.sys_ns - c0.sys_ns);

		kb_counter(st, "cpu_user_ns_per_B", (user > 0 ? user : 0) / bytes, KB_VALUE);
		kb_counter(st, "cpu_sys_ns_per_B", (sys > 0 ? sys : 0) / bytes, KB_VALUE);
	}
	if (paths[row->path].stack != PLAIN)
		kb_label(st, "TLS1.3 rx:%s%s%s", l.rx_how ? l.rx_how : "?", label[0] ? " " : "", label);
	else if (label[0])
		kb_label(st, "%s", label);
out_close:
	link_close(&l, clean);
	if (clean && atomic_load(&l.rx_failed))
		kb_fail(st, "receiver: %s", l.rx_msg);
out:
	bench_unpin(&saved);
	free(buf);
}

void bench_socket_register(bool quick)
{
	static const int64_t full[] = {4 << 10, 64 << 10, 1 << 20, 64 << 20};
	static const int64_t fast[] = {4 << 10, 64 << 10, 1 << 20};
	const int64_t *sizes = quick ? fast : full;
	size_t nsizes = quick ? 3 : 4, n = 0;
	static const char *const argname[] = {"size"};

	for (int p = 0; p < NPATHS; p++) {
		for (int c = 0; c < (paths[p].stack == PLAIN ? 1 : BENCH_NCIPHERS); c++) {
			struct row *row = &rows[n++];
			char name[96];
			struct kb_bench *b;

			row->path = (enum path)p;
			row->cipher = paths[p].stack == PLAIN ? NULL : &bench_ciphers[c];
			if (row->cipher)
				snprintf(name, sizeof(name), "%s/%s", paths[p].name, row->cipher->name);
			else
				snprintf(name, sizeof(name), "%s", paths[p].name);
			b = kb_register(name, bm_path, row);
			for (size_t i = 0; i < nsizes; i++)
				kb_args(b, argname, &sizes[i], 1);
			kb_real_time(b);
			kb_unit(b, KB_US);
		}
	}
}
