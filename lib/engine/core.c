/* SPDX-License-Identifier: MIT */
/*
 * Engine front end: configuration, the runtime ladder (decided here and
 * nowhere else), streams and their send queues, callbacks, statistics, and
 * the GnuTLS transport of engine streams. The backends (uring.c, epoll.c)
 * only move bytes and report what happened.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

static __thread char create_error[256];

const char *kite_engine_create_error(void)
{
	return create_error[0] ? create_error : "no error";
}

static int create_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int create_fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(create_error, sizeof(create_error), fmt, ap);
	va_end(ap);
	return err;
}

uint64_t eng_now_ms(void)
{
	struct timespec ts;

	/* vDSO: no syscall. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void kite_engine_config_init(struct kite_engine_config *cfg)
{
	if (!cfg)
		return;
	memset(cfg, 0, sizeof(*cfg));
	cfg->handshake_timeout_ms = 10000;
	cfg->idle_timeout_ms = 60000;
	cfg->send_timeout_ms = 30000;
	cfg->max_streams = 4096;
	cfg->max_queued = 1u << 20;
	cfg->backend = KITE_ENGINE_AUTO;
	cfg->pipes = 64;
	cfg->pipe_size = 256u << 10;
	cfg->buffers = 64;
	cfg->buffer_size = 64u << 10;
	cfg->small_max = 16u << 10;
	cfg->ring_entries = 1024;
	cfg->rx_buffers = 256;
}

static const char *const rung_names[] = {
	[KITE_ENGINE_AUTO] = "auto",
	[KITE_ENGINE_URING] = "uring",
	[KITE_ENGINE_URING_BASIC] = "uring-basic",
	[KITE_ENGINE_EPOLL] = "epoll",
};

static const char *const path_names[KITE_PATH_COUNT] = {
	[KITE_PATH_KTLS_SPLICE] = "ktls-splice",
	[KITE_PATH_KTLS_SENDFILE] = "ktls-sendfile",
	[KITE_PATH_KTLS_COPY] = "ktls-copy",
	[KITE_PATH_USER] = "userspace-tls",
	[KITE_PATH_PLAIN_SPLICE] = "plain-splice",
	[KITE_PATH_PLAIN_SENDFILE] = "plain-sendfile",
	[KITE_PATH_PLAIN_COPY] = "plain-copy",
	[KITE_PATH_SEND] = "send",
};

const char *kite_engine_path_name(enum kite_engine_path p)
{
	return (unsigned)p < KITE_PATH_COUNT ? path_names[p] : "unknown path";
}

_Static_assert(KITE_PATH_COUNT <= KITE_PATH_SLOTS, "kite_engine_stats.path has fixed slots (ABI)");

static int check_config(const struct kite_engine_config *c)
{
	/* ABI: a newer caller may have set a member this library does not
	 * know; ignoring it would be worse than saying so. */
	for (size_t i = 0; i < sizeof(c->reserved) / sizeof(c->reserved[0]); i++)
		if (c->reserved[i])
			return create_fail(-EINVAL, "config: reserved word %zu is set (a newer kite.h "
					   "than this library? start from kite_engine_config_init())", i);
	if (c->ctx && c->ctx->role != KITE_SERVER && c->ctx->role != KITE_CLIENT)
		return create_fail(-EINVAL, "config: bad context");
	if ((unsigned)c->backend > KITE_ENGINE_EPOLL)
		return create_fail(-EINVAL, "config: backend %d unknown", (int)c->backend);
	if (c->max_streams == 0)
		return create_fail(-EINVAL, "config: max_streams must be > 0");
	if (c->max_queued < 4096)
		return create_fail(-EINVAL, "config: max_queued must be >= 4096");
	if (c->pipes && (c->pipe_size < KITE_MAX_RECORD || c->pipe_size > (1u << 30)))
		return create_fail(-EINVAL, "config: pipe_size must be 16 KiB .. 1 GiB");
	if (c->buffers == 0 || c->buffers > 65536)
		return create_fail(-EINVAL, "config: buffers must be 1 .. 65536");
	if (c->buffer_size < KITE_MAX_RECORD || c->buffer_size > ENG_BUF_MAX ||
	    c->buffer_size % KITE_MAX_RECORD)
		return create_fail(-EINVAL, "config: buffer_size must be a multiple of 16 KiB, "
				   "16 KiB .. 256 KiB");
	if (c->small_max > c->buffer_size)
		return create_fail(-EINVAL, "config: small_max must not exceed buffer_size");
	if (c->ring_entries < 8 || c->ring_entries > 32768)
		return create_fail(-EINVAL, "config: ring_entries must be 8 .. 32768");
	if (c->rx_buffers > 32768 || (c->rx_buffers & (c->rx_buffers - 1)))
		return create_fail(-EINVAL, "config: rx_buffers must be 0 or a power of two up to "
				   "32768");
	return 0;
}

/* KITE_ENGINE forces a rung when the configuration leaves the choice. */
static int rung_from_env(enum kite_engine_backend *out)
{
	const char *v = getenv("KITE_ENGINE");

	*out = KITE_ENGINE_AUTO;
	if (!v || !*v)
		return 0;
	for (unsigned i = 0; i < sizeof(rung_names) / sizeof(rung_names[0]); i++)
		if (!strcmp(v, rung_names[i])) {
			*out = (enum kite_engine_backend)i;
			return 0;
		}
	return create_fail(-EINVAL, "KITE_ENGINE=%s: expected uring, uring-basic, epoll or auto", v);
}

static const struct eng_backend *backend_of(enum kite_engine_backend b)
{
#ifdef KITE_WITH_LIBURING
	if (b == KITE_ENGINE_URING || b == KITE_ENGINE_URING_BASIC)
		return &eng_uring;
#endif
	return b == KITE_ENGINE_EPOLL ? &eng_epoll : NULL;
}

/* Try one rung; on failure its reason is appended to why. */
static int try_rung(struct kite_engine *e, enum kite_engine_backend b, char *why, size_t len)
{
	const struct eng_backend *be = backend_of(b);
	size_t used = strlen(why);
	int r;

	if (!be) {
		snprintf(why + used, len - used, "%s%s: not built (liburing missing at build time)",
			 used ? "; " : "", rung_names[b]);
		return -EOPNOTSUPP;
	}
	e->rung = b;
	e->rung_name = rung_names[b];
	e->be = be;
	e->reason[0] = 0;
	e->detail[0] = 0;
	r = be->init(e);
	if (r) {
		snprintf(why + used, len - used, "%s%s: %s", used ? "; " : "", rung_names[b],
			 e->reason[0] ? e->reason : kite_strerror(r));
		e->be = NULL;
	}
	return r;
}

/* The rung the configuration or KITE_ENGINE names (how), or an error that
 * says why it cannot work here. */
static int forced_rung(struct kite_engine *e, enum kite_engine_backend want, const char *how)
{
	char why[512] = "";
	size_t used;
	int r;

	r = try_rung(e, want, why, sizeof(why));
	if (r)
		return create_fail(r == -EINVAL ? -EINVAL : -EOPNOTSUPP, "%s rung %s unusable: %s",
				   how, rung_names[want], why);
	used = strlen(e->reason);
	snprintf(e->reason + used, sizeof(e->reason) - used, "%s%s %s", used ? "; " : "", how,
		 how[0] == 'K' ? rung_names[want] : "rung");
	return 0;
}

/* The ladder: each rung is tried for real; the first that works is kept,
 * with the reasons the better ones failed:
 * "<better rung>: <why not>; ...; <notes of this rung>". */
static int ladder_rung(struct kite_engine *e)
{
	static const enum kite_engine_backend ladder[] = {
		KITE_ENGINE_URING, KITE_ENGINE_URING_BASIC, KITE_ENGINE_EPOLL,
	};
	char why[512] = "";
	size_t used, n;
	int r = -EOPNOTSUPP;

	for (unsigned i = 0; i < 3 && r; i++) {
		r = try_rung(e, ladder[i], why, sizeof(why));
		/* io_uring_setup itself refused: the basic rung would only
		 * hear the same answer. */
		if (ladder[i] == KITE_ENGINE_URING && (r == -ENOSYS || r == -EPERM))
			i++;
	}
	if (r)
		return create_fail(r, "no engine rung works: %s", why);
	if (!why[0]) {
		if (!e->reason[0])
			snprintf(e->reason, sizeof(e->reason), "best rung available");
		return 0;
	}
	used = strlen(why);
	if (e->reason[0] && used + 2 < sizeof(why)) {
		n = strlen(e->reason);
		memcpy(why + used, "; ", 2);
		used += 2;
		if (n > sizeof(why) - 1 - used)
			n = sizeof(why) - 1 - used;
		memcpy(why + used, e->reason, n);
		why[used + n] = 0;
	}
	memcpy(e->reason, why, sizeof(e->reason) - 1);
	e->reason[sizeof(e->reason) - 1] = 0;
	return 0;
}

int kite_engine_create(struct kite_engine **out, const struct kite_engine_config *cfg)
{
	enum kite_engine_backend want;
	struct kite_engine *e;
	const char *how;
	int r;

	create_error[0] = 0;
	if (!out || !cfg)
		return create_fail(-EINVAL, "out and cfg must not be NULL");
	*out = NULL;
	r = check_config(cfg);
	if (r)
		return r;
	want = cfg->backend;
	how = "configured";
	if (want == KITE_ENGINE_AUTO) {
		r = rung_from_env(&want);
		if (r)
			return r;
		how = "KITE_ENGINE";
	}

	e = calloc(1, sizeof(*e));
	if (!e)
		return create_fail(-ENOMEM, "out of memory");
	e->cfg = *cfg;
	e->epfd = -1;
	e->kick_tail = &e->kick_head;
	e->wait_tail = &e->wait_head;
	for (unsigned i = 0; i < ENG_MAX_LISTENERS; i++)
		e->listeners[i].fd = -1;
	e->scratch = malloc(ENG_RX_BUF);
	/* kite_engine_stop() from any thread or a signal handler: one
	 * eventfd write wakes the loop. */
	e->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!e->scratch || e->evfd < 0) {
		r = create_fail(e->evfd < 0 ? -errno : -ENOMEM, "eventfd: %s",
				kite_strerror(e->evfd < 0 ? -errno : -ENOMEM));
		goto fail;
	}

	r = want != KITE_ENGINE_AUTO ? forced_rung(e, want, how) : ladder_rung(e);
	if (r)
		goto fail;
	*out = e;
	return 0;
fail:
	if (e->evfd >= 0)
		close(e->evfd);
	free(e->scratch);
	free(e);
	return r;
}

int kite_engine_forget_fd(struct kite_engine *e, int fd)
{
	if (!e || fd < 0)
		return -EINVAL;
	if (e->be->forget_fd)
		e->be->forget_fd(e, fd);
	return 0;
}

void *kite_engine_user(const struct kite_engine *e)
{
	return e ? e->cfg.user : NULL;
}

int kite_engine_describe(const struct kite_engine *e, struct kite_engine_info *info)
{
	if (!e || !info)
		return -EINVAL;
	memset(info, 0, sizeof(*info));
	info->backend = e->rung;
	info->name = e->rung_name;
	info->detail = e->detail;
	info->reason = e->reason;
	info->ring_flags = e->ring_flags;
	info->pipes = e->npipes;
	info->pipe_size = e->pipe_cap;
	return 0;
}

/* Tests only (not exported): every stream's state on stderr, for a test
 * that timed out. Reads another thread's engine without locks: a snapshot
 * for a human, not for logic. */
void eng_debug_dump(const struct kite_engine *e)
{
	for (const struct kite_stream *s = e->streams; s; s = s->next) {
		const struct eng_item *it = s->qhead;

		fprintf(stderr, "stream kicked %d fd %d: state %d close_req %d ktx %d krx %d rx_eof %d "
			"rx_paused %d rx_hold %d waiting %d | pipe %d fill %u dirty %d buf %d "
			"queued %zu sent %llu head %s left %llu len %llu | ",
			s->kicked, s->fd, (int)s->state, s->close_req, s->ktx, s->krx, s->rx_eof, s->rx_paused,
			s->rx_hold, s->waiting, s->pipe, s->pipe_fill, s->pipe_dirty, s->buf, s->queued,
			(unsigned long long)s->sent, !it ? "-" : it->kind == ITEM_BUF ? "buf" : "file",
			it ? (unsigned long long)it->left : 0ull, it ? (unsigned long long)it->len : 0ull);
		if (e->be->dump)
			e->be->dump(s);
		fputc('\n', stderr);
	}
}

int kite_engine_stats(const struct kite_engine *e, struct kite_engine_stats *st)
{
	if (!e || !st)
		return -EINVAL;
	*st = e->st;
	return 0;
}

/* ---- Listeners ---------------------------------------------------------- */

/* Responses are written whole (MSG_MORE / SPLICE_F_MORE hold back what has
 * a continuation), so Nagle only adds delay: a small reply whose second
 * segment waits for the client's delayed ACK costs ~40 ms. Not TCP (a
 * Unix socket): nothing to do. */
static void tcp_nodelay(int fd)
{
	int one = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int kite_listen_reuseport(const char *host, uint16_t port, int backlog)
{
	struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV,
				 .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai = NULL;
	char ps[8];
	int fd = -1, one = 1, r;

	if (backlog <= 0)
		return -EINVAL;
	snprintf(ps, sizeof(ps), "%u", port);
	r = getaddrinfo(host, ps, &hints, &ai);
	if (r)
		return r == EAI_MEMORY ? -ENOMEM : -EINVAL;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	/* SO_REUSEPORT: every engine thread binds the same port and the
	 * kernel spreads new connections across their listeners. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, backlog)) {
		r = -errno;
		close(fd);
		goto out;
	}
	r = fd;
out:
	freeaddrinfo(ai);
	return r;
}

int kite_engine_add_listener(struct kite_engine *e, int fd)
{
	struct eng_listener *l;
	int acc = 0, fl;
	socklen_t len = sizeof(acc);

	if (!e || fd < 0)
		return -EINVAL;
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len))
		return errno == ENOTSOCK ? -ENOTSOCK : -EINVAL;
	if (!acc)
		return -EINVAL; /* not listening */
	if (e->nlisteners >= ENG_MAX_LISTENERS)
		return -ENOSPC; /* every listener slot is taken */
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK))
		return -errno;
	tcp_nodelay(fd); /* accepted sockets inherit it: no syscall per connection */
	l = &e->listeners[e->nlisteners];
	l->e = e;
	l->fd = fd;
	l->multishot = e->multishot;
	l->armed = false;
	e->nlisteners++;
	return e->be->listen(e, l);
}

/* ---- Streams: creation and end ------------------------------------------ */

/* The stream's TLS session, in the role and with the context the engine has
 * now. Its GnuTLS session talks through eng_push/eng_pull (below), which
 * count every syscall they make and, after the handshake, move records
 * through memory the backend fills and empties. */
int eng_tls_begin(struct kite_stream *s)
{
	int r;

	s->tls_wait = false;
	r = kite_conn_create(&s->conn, s->e->cfg.ctx, s->fd);
	if (r)
		return r;
	eng_tls_transport(s);
	return 0;
}

/* A stream for a connected socket. A server's TLS session (GnuTLS state,
 * some 10 KiB) is made only when the client's first bytes arrive: a
 * connection that never speaks costs little more than the stream. */
struct kite_stream *eng_stream_new(struct kite_engine *e, int fd)
{
	/* The backend's struct starts with the core's (struct eng_backend). */
	size_t size = e->be->stream_size ? e->be->stream_size : sizeof(struct kite_stream);
	struct kite_stream *s = calloc(1, size);

	if (!s)
		return NULL;
	s->e = e;
	s->fd = fd;
	s->pipe = s->buf = s->late_fd = -1;
	s->qtail = &s->qhead;
	s->state = ST_HANDSHAKE;
	s->t_start = s->t_active = eng_now_ms();
	if (e->cfg.ctx && e->cfg.ctx->role == KITE_SERVER) {
		s->tls_wait = true;
	} else if (e->cfg.ctx && eng_tls_begin(s)) {
		free(s);
		return NULL;
	}
	s->next = e->streams;
	if (e->streams)
		e->streams->prev = s;
	e->streams = s;
	e->st.streams++;
	e->st.accepted++;
	return s;
}

/* A new connected socket: a stream, or closed at once over the limit. */
int eng_accepted(struct kite_engine *e, int fd)
{
	struct kite_stream *s;
	int r;

	if (e->st.streams >= e->cfg.max_streams) {
		close(fd);
		eng_sys(e, -1);
		e->st.rejected++;
		return -EMFILE;
	}
	s = eng_stream_new(e, fd);
	if (!s) {
		close(fd);
		eng_sys(e, -1);
		e->st.rejected++;
		return -ENOMEM;
	}
	r = e->be->attach(s);
	if (r)
		eng_fail(s, r); /* the stream exists: it ends with on_close(r) */
	eng_kick(s);
	return 0;
}

int kite_engine_adopt(struct kite_engine *e, int fd, struct kite_stream **out)
{
	int type = 0, fl, r;
	socklen_t len = sizeof(type);

	if (out)
		*out = NULL;
	if (!e || fd < 0)
		return -EINVAL;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len))
		return -errno;
	if (type != SOCK_STREAM)
		return -EINVAL;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK))
		return -errno;
	tcp_nodelay(fd);
	r = eng_accepted(e, fd);
	if (r)
		return r;
	if (out)
		*out = e->streams;
	return 0;
}

void eng_kick(struct kite_stream *s)
{
	struct kite_engine *e = s->e;

	if (s->kicked || s->state == ST_ZOMBIE)
		return;
	s->kicked = true;
	s->kick_next = NULL;
	*e->kick_tail = s;
	e->kick_tail = &s->kick_next;
}

/* The item no longer needs its file's registration (an operation in flight
 * holds a reference of its own). */
static void item_unregister(struct kite_engine *e, struct eng_item *it)
{
	if (it->kind == ITEM_FILE && it->reg)
		e->be->file_put(e, (int)it->reg - 1);
	it->reg = 0;
}

static void drop_queue(struct kite_stream *s)
{
	bool head = true;

	while (s->qhead) {
		struct eng_item *it = s->qhead;

		s->qhead = it->next;
		item_unregister(s->e, it);
		if (it->kind == ITEM_FILE && (it->flags & KITE_SENDFILE_CLOSE_FD)) {
			if (head && s->e->be->tx_busy && s->e->be->tx_busy(s) && s->late_fd < 0) {
				/* The ring may still read this descriptor (io_uring
				 * looks a splice's or read's fd up when the op runs):
				 * closed now, its number could be reused by another
				 * connection's socket or file, and the op would read
				 * that instead. Closed once nothing is in flight
				 * (eng_release_all). */
				s->late_fd = it->fd;
			} else {
				close(it->fd);
				eng_sys(s->e, -1);
			}
		}
		if (head && !s->late_item && s->e->be->tx_busy && s->e->be->tx_busy(s)) {
			/* A SEND in flight may still read the item's bytes (a
			 * send that met a full socket is retried by the kernel
			 * from our buffer): freed once nothing is in flight. */
			s->late_item = it;
		} else {
			free(it);
		}
		head = false;
	}
	s->qtail = &s->qhead;
	s->queued = 0;
}

/* Kernel TLS TX met a full socket (kite_ktls_push() says why). */
void eng_ktls_push(struct kite_stream *s)
{
	if (!s->ktx || s->fd < 0)
		return;
	kite_ktls_push(s->fd);
	eng_sys(s->e, -1);
	s->e->st.ktls_pushes++;
}

/* Abort: whatever is queued is dropped (a half-sent range cannot be made
 * whole), the first error is what on_close reports, and the backend ends
 * the connection with a reset so that the peer never mistakes a cut-off
 * body for a complete one. */
void eng_fail(struct kite_stream *s, int err)
{
	if (s->state >= ST_DEAD)
		return;
	if (!s->err)
		s->err = err < 0 ? err : -ECONNABORTED;
	if (s->err == -ETIMEDOUT)
		s->e->st.timeouts++;
	s->rst = true;
	s->state = ST_DEAD;
	drop_queue(s);
	eng_kick(s);
}

/* Graceful end (our close_notify and FIN are out, the peer is done or the
 * linger ran out): close without a reset, on_close(0) unless an error came
 * first. */
void eng_finish(struct kite_stream *s)
{
	if (s->state >= ST_DEAD)
		return;
	s->state = ST_DEAD;
	drop_queue(s);
	eng_kick(s);
}

/* The fd is closed and no operation of the stream is in the kernel: only
 * now may its memory (receive buffer, msghdr, chains) go. on_close and the
 * free happen in reap(), after the kick list has drained, so no list holds
 * a freed stream. */
void eng_zombie(struct kite_stream *s)
{
	struct kite_engine *e = s->e;

	if (s->waiting) {
		struct kite_stream **pp = &e->wait_head;

		while (*pp && *pp != s)
			pp = &(*pp)->wait_next;
		if (*pp) {
			*pp = s->wait_next;
			if (e->wait_tail == &s->wait_next)
				e->wait_tail = pp;
		}
		s->waiting = false;
	}
	s->state = ST_ZOMBIE;
	s->fd = -1;
	/* Stays on the kick list if it is there (kick_next still links the
	 * streams behind it); dispatch skips zombies, and reap() waits for an
	 * empty kick list. */
	s->wait_next = e->zombies;
	e->zombies = s;
}

static void stream_free(struct kite_stream *s)
{
	struct kite_engine *e = s->e;

	if (s->prev)
		s->prev->next = s->next;
	else
		e->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	e->st.streams--;
	drop_queue(s);
	if (s->late_fd >= 0) /* nothing is in flight any more */
		close(s->late_fd);
	free(s->late_item);
	kite_conn_destroy(s->conn);
	if (e->be->stream_free)
		e->be->stream_free(s);
	free(s->stage_mem);
	free(s);
}

static void reap(struct kite_engine *e)
{
	while (e->zombies) {
		struct kite_stream *s = e->zombies;

		e->zombies = s->wait_next;
		if (s->err)
			e->st.closed_err++;
		else
			e->st.closed_ok++;
		if (e->cfg.on_close)
			e->cfg.on_close(s, s->err);
		stream_free(s);
	}
}

void eng_dispatch(struct kite_engine *e)
{
	do {
		while (e->kick_head) {
			struct kite_stream *s = e->kick_head;

			e->kick_head = s->kick_next;
			if (!e->kick_head)
				e->kick_tail = &e->kick_head;
			if (s->state == ST_ZOMBIE)
				continue; /* on e->zombies now; kicked stays set */
			s->kicked = false;
			e->be->progress(s);
		}
		/* Streams waiting for a pipe or buffer, in arrival order, while
		 * something is free; those still unlucky queue up again. */
		if (e->wait_head && (e->nbuf_free || e->pipe_free >= 0)) {
			struct kite_stream *list = e->wait_head;

			e->wait_head = NULL;
			e->wait_tail = &e->wait_head;
			while (list) {
				struct kite_stream *s = list;

				list = s->wait_next;
				s->waiting = false;
				if (!e->nbuf_free && e->pipe_free < 0) {
					/* Nothing left: back in line, order kept. */
					s->waiting = true;
					s->wait_next = NULL;
					*e->wait_tail = s;
					e->wait_tail = &s->wait_next;
					continue;
				}
				if (s->state != ST_ZOMBIE)
					e->be->progress(s);
			}
		}
		/* A zombie may still be on the kick list (kicked, then its
		 * close completed): free nothing until that list is empty. */
		if (!e->kick_head)
			reap(e);
	} while (e->kick_head);
}

/* ---- The loop ------------------------------------------------------------ */

/* One loop: dispatch (progress for every kicked stream, resource waiters,
 * reaping), then one wait for events. The stop flag is read between the
 * two, so a stop from a callback ends the run before the next wait. */
int kite_engine_run(struct kite_engine *e, int timeout_ms)
{
	uint64_t deadline = 0;
	sigset_t pipe_set, old;
	int r = 0;

	if (!e)
		return -EINVAL;
	/* From a callback: the outer run is this very loop, which would
	 * deadlock on itself. */
	if (e->in_run)
		return -EDEADLK;
	e->in_run = true;
	/* A write into a socket the peer has reset raises SIGPIPE unless the
	 * call says MSG_NOSIGNAL; sendfile(2) and splice cannot. Keep it
	 * blocked on this thread while the loop runs (see eng_sigpipe()). */
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	eng_sys(e, -1);
	if (timeout_ms > 0)
		deadline = eng_now_ms() + (uint64_t)timeout_ms;
	for (;;) {
		int wait_ms = -1;

		eng_dispatch(e);
		if (atomic_exchange(&e->stop, 0))
			break;
		if (timeout_ms == 0) {
			wait_ms = 0;
		} else if (timeout_ms > 0) {
			uint64_t now = eng_now_ms();

			if (now >= deadline)
				break;
			wait_ms = (int)(deadline - now);
		}
		r = e->be->wait(e, wait_ms);
		if (r)
			break;
		if (timeout_ms == 0) {
			eng_dispatch(e);
			break;
		}
	}
	eng_dispatch(e);
	/* Drop a SIGPIPE that became pending here before unblocking. */
	{
		sigset_t pend;
		struct timespec zero = {0, 0};

		if (!sigpending(&pend) && sigismember(&pend, SIGPIPE) && !sigismember(&old, SIGPIPE))
			(void)sigtimedwait(&pipe_set, NULL, &zero);
		eng_sys(e, -1);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	eng_sys(e, -1);
	e->in_run = false;
	return r;
}

void kite_engine_stop(struct kite_engine *e)
{
	uint64_t one = 1;
	int saved = errno;

	if (!e)
		return;
	atomic_store(&e->stop, 1);
	/* eventfd write: async-signal-safe. EAGAIN means already signalled. */
	if (write(e->evfd, &one, sizeof(one)) < 0) {
		/* nothing to do */
	}
	errno = saved;
}

void kite_engine_destroy(struct kite_engine *e)
{
	uint64_t until;

	if (!e)
		return;
	for (struct kite_stream *s = e->streams; s; s = s->next)
		eng_fail(s, -ECANCELED);
	e->be->quiesce(e);
	eng_dispatch(e);
	/* Wait (bounded) until the kernel holds no buffer of ours. */
	until = eng_now_ms() + 5000;
	while ((e->streams || e->inflight) && eng_now_ms() < until) {
		if (e->be->wait(e, 100))
			break;
		eng_dispatch(e);
	}
	e->be->fini(e);
	/* Streams the kernel never let go (should not happen): on_close
	 * anyway so the caller can free its state. */
	while (e->streams) {
		struct kite_stream *s = e->streams;

		if (s->state != ST_ZOMBIE) {
			if (s->fd >= 0)
				close(s->fd);
			if (!s->err)
				s->err = -ECANCELED;
			if (e->cfg.on_close)
				e->cfg.on_close(s, s->err);
			stream_free(s);
		} else {
			reap(e);
		}
	}
	close(e->evfd);
	free(e->scratch);
	free(e);
}

/* ---- Send queue ---------------------------------------------------------- */

/* Every queued item is charged (bytes copied plus ENG_ITEM_CHARGE), so a
 * peer that pipelines requests without reading cannot make the queue - the
 * only per-stream memory that grows with the peer - exceed max_queued. */
static int queue_check(struct kite_stream *s, size_t charge)
{
	size_t max = s->e->cfg.max_queued;

	if (s->state >= ST_LINGER || s->close_req)
		return -EPIPE;
	if (charge > max)
		return -EMSGSIZE;
	if (s->queued + charge > max)
		return -ENOBUFS;
	return 0;
}

/* Fair queueing between lanes, decided once at enqueue time (kite.h,
 * kite_stream_queue_unit): the item gets a finish tag and goes behind
 * every item with a smaller or equal one; lane 0 sorts before other lanes
 * on equal tags. The head item may have started going out (bytes in a
 * pipe, records in a buffer, a MORE promise made for it): nothing ever
 * goes ahead of it. O(queue): the queue is bounded by max_queued. */
static bool queue_before(const struct eng_item *q, const struct eng_item *it)
{
	if (q->tag != it->tag)
		return q->tag < it->tag;
	return q->lane == 0 || it->lane != 0;
}

static void queue_add(struct kite_stream *s, struct eng_item *it, uint64_t bytes)
{
	struct kite_engine *e = s->e;
	uint64_t v = s->qhead ? s->qhead->tag : s->vtag, last = 0;
	struct eng_item **pp;

	if (it->lane) {
		for (struct eng_item *q = s->qhead; q; q = q->next)
			if (q->lane == it->lane)
				last = q->tag; /* the lane's tags rise along the queue */
		it->tag = (last > v ? last : v) + bytes;
	} else {
		it->tag = v;
	}
	pp = &s->qhead;
	if (s->qhead && s->qtail != &s->qhead->next &&
	    queue_before((struct eng_item *)((char *)s->qtail - offsetof(struct eng_item, next)), it)) {
		pp = s->qtail; /* behind the last item: the only case without lanes */
	} else if (*pp) {
		pp = &(*pp)->next; /* never ahead of the head item */
		while (*pp && queue_before(*pp, it))
			pp = &(*pp)->next;
	}
	it->next = *pp;
	*pp = it;
	if (!it->next)
		s->qtail = &it->next;
	s->queued += it->charge;
	if (s->queued > e->st.peak_queued)
		e->st.peak_queued = s->queued;
	s->drain_due = true;
	eng_kick(s);
}

ssize_t kite_stream_send(struct kite_stream *s, const void *buf, size_t len)
{
	struct eng_item *it;
	int r;

	if (!s || (!buf && len))
		return -EINVAL;
	r = queue_check(s, len + ENG_ITEM_CHARGE);
	if (r)
		return r;
	if (!len)
		return 0;
	it = malloc(sizeof(*it) + len);
	if (!it)
		return -ENOMEM;
	memset(it, 0, sizeof(*it));
	it->kind = ITEM_BUF;
	it->fd = -1;
	it->len = len;
	it->left = len;
	it->charge = len + ENG_ITEM_CHARGE;
	memcpy(it->data, buf, len);
	queue_add(s, it, len);
	return (ssize_t)len;
}

int kite_stream_sendfile(struct kite_stream *s, int fd, off_t off, size_t len, unsigned flags)
{
	if (fd < 0)
		return -EINVAL; /* a range needs a file (a unit would take it for "bytes only") */
	return kite_stream_queue_unit(s, 0, NULL, 0, fd, off, len, flags);
}

/* The unit as one item: bytes only (ITEM_BUF), or a range with its head in
 * data (ITEM_FILE). Every check comes before the item exists, so an error
 * queues nothing. */
int kite_stream_queue_unit(struct kite_stream *s, uint32_t lane, const void *head,
			   size_t head_len, int fd, off_t off, size_t len, unsigned flags)
{
	bool file = fd >= 0 && len;
	struct eng_item *it;
	int r = -EINVAL;

	if (!s || (!head && head_len) || (fd < 0 && len) || off < 0 ||
	    (flags & ~(KITE_UNIT_CLOSE_FD | KITE_UNIT_KEEP_FD)) ||
	    ((flags & KITE_UNIT_CLOSE_FD) && (flags & KITE_UNIT_KEEP_FD)) ||
	    (uint64_t)off + len < (uint64_t)off ||
	    (uint64_t)off + len > (uint64_t)INT64_MAX)
		goto err;
	r = queue_check(s, head_len > SIZE_MAX - ENG_ITEM_CHARGE ? SIZE_MAX : head_len + ENG_ITEM_CHARGE);
	if (!r && head_len > UINT32_MAX)
		r = -EMSGSIZE; /* an item's head is counted in 32 bits */
	if (r)
		goto err;
	if (!head_len && !file) {
		r = 0;
		goto err; /* nothing to queue; the fd is closed as promised */
	}
	it = malloc(sizeof(*it) + head_len);
	if (!it) {
		r = -ENOMEM;
		goto err;
	}
	memset(it, 0, sizeof(*it));
	it->lane = lane;
	it->charge = head_len + ENG_ITEM_CHARGE;
	if (head_len)
		memcpy(it->data, head, head_len);
	if (file) {
		it->kind = ITEM_FILE;
		it->flags = flags;
		it->fd = fd;
		/* Registered when queued, not when its first round starts: a
		 * kite_engine_forget_fd() in between must not make a stale
		 * registration for a descriptor number the caller reuses
		 * later. */
		if ((flags & KITE_UNIT_KEEP_FD) && s->e->be->file_get)
			it->reg = (unsigned)(s->e->be->file_get(s->e, fd) + 1);
		it->off = (uint64_t)off;
		it->left = len;
		it->head_len = it->hleft = (uint32_t)head_len;
		it->len = head_len + len;
	} else {
		it->kind = ITEM_BUF;
		it->fd = -1;
		it->left = it->len = head_len;
	}
	queue_add(s, it, it->len);
	if (!file && fd >= 0 && (flags & KITE_UNIT_CLOSE_FD)) {
		close(fd); /* bytes only: the range was empty */
		eng_sys(s->e, -1);
	}
	return 0;
err:
	if (s && fd >= 0 && (flags & KITE_UNIT_CLOSE_FD)) {
		close(fd);
		eng_sys(s->e, -1);
	}
	return r;
}

int kite_stream_close(struct kite_stream *s)
{
	if (!s)
		return -EINVAL;
	if (s->state >= ST_LINGER || s->close_req)
		return 0;
	s->close_req = true;
	eng_kick(s);
	return 0;
}

void kite_stream_abort(struct kite_stream *s, int err)
{
	if (s)
		eng_fail(s, err < 0 ? err : -ECONNABORTED);
}

struct kite_conn *kite_stream_conn(const struct kite_stream *s)
{
	return s ? s->conn : NULL;
}

int kite_stream_fd(const struct kite_stream *s)
{
	return s ? s->fd : -EINVAL;
}

struct kite_engine *kite_stream_engine(const struct kite_stream *s)
{
	return s ? s->e : NULL;
}

void kite_stream_set_user(struct kite_stream *s, void *user)
{
	if (s)
		s->user = user;
}

void *kite_stream_user(const struct kite_stream *s)
{
	return s ? s->user : NULL;
}

size_t kite_stream_queued(const struct kite_stream *s)
{
	return s ? s->queued : 0;
}

uint64_t kite_stream_sent(const struct kite_stream *s)
{
	return s ? s->sent : 0;
}

void kite_stream_pause_rx(struct kite_stream *s, bool pause)
{
	if (!s || s->rx_hold == pause)
		return;
	s->rx_hold = pause;
	eng_kick(s); /* resuming: progress() arms a receive again */
}

void eng_item_pop(struct kite_stream *s)
{
	struct eng_item *it = s->qhead;
	struct kite_engine *e = s->e;

	if (!it)
		return;
	s->qhead = it->next;
	if (!s->qhead)
		s->qtail = &s->qhead;
	s->queued -= it->charge;
	s->vtag = it->tag;
	for (int p = 0; p < KITE_PATH_COUNT; p++)
		if (it->paths & (1u << p))
			e->st.path[p].requests++;
	item_unregister(e, it);
	if (it->kind == ITEM_FILE && (it->flags & KITE_SENDFILE_CLOSE_FD)) {
		close(it->fd);
		eng_sys(e, -1);
	}
	free(it);
	/* Reading may resume (backpressure) now that the queue shrank. */
	eng_kick(s);
}

/* n bytes of the head item are in the socket. Only then is an item done:
 * on_drain means "handed to the kernel", never "read into a buffer". */
void eng_item_done(struct kite_stream *s, struct eng_item *it, uint64_t n, int path)
{
	struct kite_engine *e = s->e;

	if (n > it->len)
		n = it->len; /* never happens; keeps the counters sane */
	it->len -= n;
	s->sent += n;
	e->st.path[path].bytes += n;
	it->paths |= 1u << path;
	s->t_active = eng_now_ms();
	if (!it->len && it == s->qhead)
		eng_item_pop(s);
}

bool eng_tx_work(const struct kite_stream *s)
{
	return s->qhead || s->pipe_fill || (s->buf >= 0 && (s->buf_off < s->buf_len || s->buf_plain)) ||
	       s->stage_off < s->stage_len || (s->close_req && !s->fin_sent);
}

bool eng_rx_wanted(struct kite_stream *s)
{
	size_t max = s->e->cfg.max_queued;

	if (s->rx_eof)
		return false;
	if (s->state == ST_LINGER)
		return true;
	if (s->state != ST_OPEN || s->rx_hold)
		return false;
	/* Backpressure: a peer that sends requests faster than it reads the
	 * answers stops being read; TCP then slows it down. */
	if (s->queued > max / 2 || (s->rx_paused && s->queued > max / 4)) {
		if (!s->rx_paused)
			s->e->st.rx_paused++;
		s->rx_paused = true;
		return false;
	}
	s->rx_paused = false;
	return true;
}

int eng_path(const struct kite_stream *s, int mech)
{
	if (s->conn && !s->ktx)
		return KITE_PATH_USER;
	switch (mech) {
	case MECH_SPLICE: return s->conn ? KITE_PATH_KTLS_SPLICE : KITE_PATH_PLAIN_SPLICE;
	case MECH_SENDFILE: return s->conn ? KITE_PATH_KTLS_SENDFILE : KITE_PATH_PLAIN_SENDFILE;
	default: return s->conn ? KITE_PATH_KTLS_COPY : KITE_PATH_PLAIN_COPY;
	}
}

/* ---- A stream's life: the rules every backend follows ------------------- */

/* The handshake's next step. A server's session is made only once the
 * client has spoken (readable), so a silent connection holds no GnuTLS
 * state. Returns 0 when the handshake is done (or plaintext), -EAGAIN when
 * it waits for the socket (kite_conn_poll_events() says for what, or the
 * first bytes), another -errno when it failed: the stream is failing. */
int eng_handshake(struct kite_stream *s, bool readable)
{
	int r;

	if (s->tls_wait) {
		if (!readable)
			return -EAGAIN;
		r = eng_tls_begin(s);
		if (r)
			goto fail;
	}
	if (!s->conn)
		return 0;
	r = kite_handshake(s->conn);
	if (r == -EAGAIN || !r)
		return r;
fail:
	eng_fail(s, r);
	return r;
}

/* The stream's deadline at now: a handshake, idle or linger time that has
 * run out fails the stream (-ETIMEDOUT) or, lingering, ends it gracefully.
 * Returns the ms until the deadline, 0 when there is none (or it passed).
 * A stream with bytes to send is not idle: its send timeout (the
 * backend's, measured from the last progress into the socket) bounds it,
 * and the idle timer is only looked at again one period later. */
unsigned eng_deadline(struct kite_stream *s, uint64_t now)
{
	const struct kite_engine_config *c = &s->e->cfg;
	uint64_t end;

	switch (s->state) {
	case ST_HANDSHAKE:
		if (!c->handshake_timeout_ms)
			return 0;
		end = s->t_start + c->handshake_timeout_ms;
		break;
	case ST_OPEN:
		if (!c->idle_timeout_ms)
			return 0;
		end = s->t_active + c->idle_timeout_ms;
		if (now >= end && eng_tx_busy(s))
			return c->idle_timeout_ms;
		break;
	case ST_LINGER:
		end = s->t_start + ENG_LINGER_MS;
		if (now >= end) {
			eng_finish(s);
			return 0;
		}
		return (unsigned)(end - now);
	default:
		return 0;
	}
	if (now < end)
		return (unsigned)(end - now);
	eng_fail(s, -ETIMEDOUT);
	return 0;
}

/* Bytes queued, in a buffer or pipe, or an operation still moving some. */
bool eng_tx_busy(const struct kite_stream *s)
{
	return eng_tx_work(s) || (s->e->be->tx_busy && s->e->be->tx_busy(s));
}

/* The send queue is empty: on_drain once per emptying. Returns true when
 * it was delivered (the callback may have queued more: look again). */
bool eng_drained(struct kite_stream *s)
{
	struct kite_engine *e = s->e;

	if (!s->drain_due)
		return false;
	s->drain_due = false;
	if (e->cfg.on_drain)
		e->cfg.on_drain(s);
	return true;
}

/* What closing needs next once the queue is empty (kite_stream_close()).
 * The close_notify of a userspace session is written here, into the stage
 * (gnutls_bye through eng_push); plaintext has none. */
enum eng_close eng_close_next(struct kite_stream *s)
{
	int r;

	if (!s->close_req || s->state != ST_OPEN || s->qhead)
		return ENG_CLOSE_NONE;
	if (!s->notify_sent) {
		if (s->conn && s->ktx)
			return ENG_CLOSE_NOTIFY; /* a record only the kernel may write */
		if (s->conn) {
			r = kite_shutdown(s->conn);
			if (r) {
				eng_fail(s, r);
				return ENG_CLOSE_NONE;
			}
		}
		s->notify_sent = true;
	}
	if (s->stage_off < s->stage_len)
		return ENG_CLOSE_FLUSH; /* the close_notify record goes out first */
	return s->fin_sent ? ENG_CLOSE_NONE : ENG_CLOSE_FIN;
}

/* Our FIN is out: wait (ENG_LINGER_MS at most) for the peer's end, reading
 * and dropping what it still sends, so that our close does not reset a
 * connection whose last bytes the peer has not read. */
void eng_fin_sent(struct kite_stream *s)
{
	s->fin_sent = true;
	s->state = ST_LINGER;
	s->t_start = eng_now_ms();
	if (s->rx_eof)
		eng_finish(s);
}

/* The peer's data ended (close_notify, or FIN in plaintext). */
void eng_rx_end(struct kite_stream *s)
{
	eng_deliver(s, NULL, 0);
	if (s->state == ST_LINGER)
		eng_finish(s);
}

/* Receiving failed with err. Lingering, the end was wanted anyway. A TLS
 * peer that closed TCP without close_notify after the user chose to close
 * (kite_stream_close: it reads nothing more) ends only the receive side:
 * the queue still goes out and the stream closes gracefully (kite.h,
 * on_data). The receive path may have marked the whole connection dead for
 * that truncation (kite_recv does); only RX is, and it is never read again,
 * so sending goes on. Anything else fails the stream. */
void eng_rx_error(struct kite_stream *s, int err)
{
	if (s->state == ST_LINGER) {
		eng_finish(s);
	} else if (err == -ECONNRESET && s->close_req && s->conn && kite_conn_peer_eof(s->conn)) {
		kite_conn_rx_over(s->conn);
		s->rx_eof = true;
		eng_kick(s);
	} else {
		eng_fail(s, err);
	}
}

/* The head item's file ended before the queued range did. */
int eng_short_file(struct kite_stream *s, const struct eng_item *it)
{
	if (s->conn)
		kite_conn_fail(s->conn, -ENODATA, "file ends at offset %llu, %llu bytes short",
			       (unsigned long long)it->off, (unsigned long long)it->left);
	return -ENODATA;
}

/* About to close the socket of a failed stream: SO_LINGER {1, 0} makes
 * close() send a reset, so the peer sees an error rather than a clean end
 * of a cut-off body. */
void eng_close_prepare(struct kite_stream *s)
{
	struct linger lg = {1, 0};

	if (!s->rst)
		return;
	if (setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg))) {
		/* the close still ends the connection */
	}
	eng_sys(s->e, -1);
}

/* ---- Handshake done ------------------------------------------------------ */

/* The handshake is done and conn.c has decided each direction's backend;
 * the stream's view of it (ktx, krx) is fixed from here on. A direction
 * left in userspace moves GnuTLS records through memory: TX always stages
 * them (a record is never half in the socket), RX reads from memory when
 * the backend receives for GnuTLS (rx_mem). */
void eng_opened(struct kite_stream *s, bool rx_mem)
{
	struct kite_engine *e = s->e;

	if (s->conn) {
		unsigned n = kite_conn_handoff_syscalls(s->conn);

		e->st.syscalls += n;
		e->st.handshake_syscalls += n;
		s->ktx = kite_conn_ktls(s->conn, KITE_TX);
		s->krx = kite_conn_ktls(s->conn, KITE_RX);
		s->stage_mode = !s->ktx;
		s->rx_mem = rx_mem && !s->krx;
	}
	s->state = ST_OPEN;
	s->t_active = eng_now_ms();
	e->st.opened++;
	s->opened = true;
	if (e->cfg.on_open)
		e->cfg.on_open(s);
}

void eng_deliver(struct kite_stream *s, const void *buf, size_t len)
{
	struct kite_engine *e = s->e;

	s->t_active = eng_now_ms();
	if (!len)
		s->rx_eof = true;
	/* After our close (LINGER) received bytes are dropped. */
	if (s->state != ST_OPEN)
		return;
	e->st.recv_bytes += len;
	if (e->cfg.on_data)
		e->cfg.on_data(s, len ? buf : NULL, len);
}

int eng_ktls_account(struct kite_stream *s, size_t calls, size_t len)
{
	struct kite_conn *c = s->conn;
	uint64_t before;
	int r;

	if (!c || !s->ktx || !calls)
		return 0;
	before = kite_conn_tx_estimate(c);
	r = kite_ktls_account(c, calls, len);
	/* A read-back of rec_seq (getsockopt) resets the estimate. */
	if (kite_conn_tx_estimate(c) < before)
		eng_sys(s->e, -1);
	if (!r)
		r = kite_conn_dead(c);
	if (r)
		eng_fail(s, r);
	return r;
}

/* ---- Engine streams' records in memory ------------------------------------
 *
 * conn.c's GnuTLS transport serves engine streams too; these hooks let it
 * move records through the stream's memory: userspace TX stages records for
 * one SEND (stage_mode), io_uring userspace RX hands GnuTLS what the ring
 * received (rx_mem). Every syscall the transport makes is counted. */

/* Room for records: a round's buffer (up to stage_limit) or the small
 * out-of-round stage. */
static uint8_t *stage_room(struct kite_stream *s, size_t need)
{
	struct kite_engine *e = s->e;

	if (s->buf >= 0 && s->buf_stage) {
		if (s->buf_len + need > s->stage_limit)
			return NULL;
		return eng_buf(e, s->buf) + s->buf_len;
	}
	if (s->stage_len + need > s->stage_cap) {
		/* Bounded: 4 full records and their overhead. */
		const size_t limit = 4 * ENG_RX_BUF;
		size_t cap = s->stage_cap ? s->stage_cap : 1024;
		uint8_t *p;

		/* Compact what was already sent before growing. */
		if (s->stage_off) {
			memmove(s->stage_mem, s->stage_mem + s->stage_off, s->stage_len - s->stage_off);
			s->stage_len -= s->stage_off;
			s->stage_off = 0;
		}
		if (s->stage_len + need > limit)
			return NULL;
		while (cap < s->stage_len + need)
			cap = cap * 2 < limit ? cap * 2 : limit;
		if (cap > s->stage_cap) {
			p = realloc(s->stage_mem, cap);
			if (!p) {
				errno = ENOMEM; /* not "full": no flush makes room */
				return NULL;
			}
			s->stage_mem = p;
			s->stage_cap = (uint32_t)cap;
		}
	}
	return s->stage_mem + s->stage_len;
}

static ssize_t io_push(void *owner, const giovec_t *iov, int n)
{
	struct kite_stream *s = owner;
	size_t total = 0;
	uint8_t *dst;

	if (!s->stage_mode)
		return KITE_IO_SOCKET;
	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	errno = 0;
	dst = stage_room(s, total);
	if (!dst) {
		/* Full: EAGAIN until a flush. Out of memory: an error, or the
		 * epoll rung would wait for a POLLOUT edge no flush brings. */
		return errno == ENOMEM ? -ENOMEM : -EAGAIN;
	}
	for (int i = 0; i < n; i++) {
		memcpy(dst, iov[i].iov_base, iov[i].iov_len);
		dst += iov[i].iov_len;
	}
	if (s->buf >= 0 && s->buf_stage)
		s->buf_len += (uint32_t)total;
	else
		s->stage_len += (uint32_t)total;
	return (ssize_t)total;
}

static ssize_t io_pull(void *owner, void *buf, size_t len)
{
	struct kite_stream *s = owner;
	size_t have = s->rx_have - s->rx_off;

	if (!s->rx_mem)
		return KITE_IO_SOCKET;
	if (!have)
		return s->rx_fin ? 0 : -EAGAIN;
	if (len > have)
		len = have;
	memcpy(buf, s->rxbuf + s->rx_off, len);
	s->rx_off += (uint32_t)len;
	return (ssize_t)len;
}

static int io_ready(void *owner)
{
	struct kite_stream *s = owner;

	if (!s->rx_mem)
		return -1;
	return s->rx_off < s->rx_have || s->rx_fin;
}

static void io_syscall(void *owner, bool push)
{
	struct kite_stream *s = owner;
	bool ready = kite_conn_ready(s->conn);

	eng_sys(s->e, push && ready ? KITE_PATH_USER : -1);
	if (!ready)
		s->e->st.handshake_syscalls++;
}

/* The peer ended TCP. Without close_notify GnuTLS would invalidate the
 * whole session, sending included; once the user has chosen to close (it
 * reads nothing more) the end is noted here and GnuTLS only hears "not
 * yet", so the records still queued go out. */
static bool io_hold_eof(void *owner)
{
	struct kite_stream *s = owner;

	if (!s->close_req || !kite_conn_ready(s->conn))
		return false;
	s->rx_eof = true;
	return true;
}

static const struct kite_io eng_io = {
	.push = io_push,
	.pull = io_pull,
	.ready = io_ready,
	.syscall = io_syscall,
	.hold_eof = io_hold_eof,
};

void eng_tls_transport(struct kite_stream *s)
{
	kite_conn_set_io(s->conn, &eng_io, s);
}
