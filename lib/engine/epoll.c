/* SPDX-License-Identifier: MIT */
/*
 * epoll backend: the last rung, for kernels or policies without io_uring
 * (kernel.io_uring_disabled, seccomp, containers). Same streams, same
 * queue, same callbacks; the bytes move with non-blocking syscalls:
 * sendfile(2) into kernel TLS or plaintext sockets, pread + GnuTLS records
 * staged in memory and sent with sendmsg in userspace. Sockets are
 * edge-triggered and registered once, so a stream costs no epoll_ctl after
 * its accept. Timers are a scan every ENG_EPOLL_TICK_MS.
 *
 * Owns: the epoll set, readiness and the send timeout per stream (struct
 * ep_stream). What a stream does at each step of its life is the core's
 * rule (core.h); this file turns it into non-blocking syscalls.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"

/* epoll_event.data: a stream, or a tagged listener / the eventfd. */
#define TAG_LISTENER 1u
#define TAG_EVENTFD 2u
#define TAG_MASK 3u

/* Bytes one stream may move per turn before the others get theirs. */
#define EP_BUDGET (4u << 20)
/* One sendfile(2) call at most: bounds the records between two AEAD
 * usage checks (kite_ktls_account). */
#define EP_MAX_CALL (1u << 20)
/* Userspace TLS: records per pread / sendmsg round (the stage holds
 * 4 * ENG_RX_BUF, enough for 4 full records and their overhead). */
#define EP_RECORDS 4u

/* A stream of this backend: the core's fields, then readiness and the
 * read buffer of the userspace path. */
struct ep_stream {
	struct kite_stream super;
	bool can_read, can_write;  /* edge seen, not yet read / written to EAGAIN */
	uint64_t t_blocked;        /* ms: TX waiting for POLLOUT since */
	uint8_t *ebuf;             /* file bytes for GnuTLS to encrypt */
};

static struct ep_stream *ep_of(struct kite_stream *s)
{
	return (struct ep_stream *)s;
}

static void ep_stream_free(struct kite_stream *s)
{
	free(ep_of(s)->ebuf);
}

static int ep_init(struct kite_engine *e)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_EVENTFD};

	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	eng_sys(e, -1);
	if (e->epfd < 0) {
		int r = -errno;

		snprintf(e->reason, sizeof(e->reason), "epoll_create1: %s", kite_strerror(r));
		return r;
	}
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->evfd, &ev)) {
		int r = -errno;

		close(e->epfd);
		e->epfd = -1;
		return r;
	}
	eng_sys(e, -1);
	snprintf(e->detail, sizeof(e->detail),
		 "epoll (edge-triggered) + sendfile(2), pread + GnuTLS records in userspace");
	return 0;
}

static void ep_fini(struct kite_engine *e)
{
	if (e->epfd >= 0)
		close(e->epfd);
	e->epfd = -1;
}

static int ep_listen(struct kite_engine *e, struct eng_listener *l)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uintptr_t)l | TAG_LISTENER};

	eng_sys(e, -1);
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, l->fd, &ev)) {
		l->fd = -1;
		e->nlisteners--;
		return -errno;
	}
	return 0;
}

static int ep_attach(struct kite_stream *s)
{
	/* Registered once for everything; edge-triggered, so each side is
	 * read or written until EAGAIN and then waits for its edge. */
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
				 .data.ptr = s};

	eng_sys(s->e, -1);
	if (epoll_ctl(s->e->epfd, EPOLL_CTL_ADD, s->fd, &ev))
		return -errno;
	/* Try at once; but a TLS server stream waits for the client's first
	 * bytes, whose edge the ADD reports if they are already there. */
	ep_of(s)->can_read = !s->tls_wait;
	ep_of(s)->can_write = true;
	return 0;
}

static void ep_quiesce(struct kite_engine *e)
{
	for (unsigned i = 0; i < e->nlisteners; i++) {
		struct eng_listener *l = &e->listeners[i];

		if (l->fd >= 0) {
			epoll_ctl(e->epfd, EPOLL_CTL_DEL, l->fd, NULL);
			eng_sys(e, -1);
		}
		l->fd = -1;
	}
}

static void blocked(struct kite_stream *s)
{
	if (ep_of(s)->can_write)
		ep_of(s)->t_blocked = eng_now_ms();
	ep_of(s)->can_write = false;
	eng_ktls_push(s);
}

/* Closing, once the queue is empty (the order is the core's). Returns true
 * when there is more to do at once (staged records to flush). */
static bool ep_close_steps(struct kite_stream *s)
{
	struct kite_engine *e = s->e;
	int r;

	switch (eng_close_next(s)) {
	case ENG_CLOSE_NOTIFY:
		/* One sendmsg with a TLS_SET_RECORD_TYPE cmsg (io_ktls.c). */
		r = kite_shutdown(s->conn);
		eng_sys(e, -1);
		if (r == -EAGAIN) {
			blocked(s);
			return false;
		}
		if (r) {
			eng_fail(s, r);
			return false;
		}
		s->notify_sent = true;
		return true;
	case ENG_CLOSE_FLUSH:
		return true;
	case ENG_CLOSE_FIN:
		shutdown(s->fd, SHUT_WR);
		eng_sys(e, -1);
		eng_fin_sent(s);
		return false;
	default:
		return false;
	}
}

/* Userspace TLS: GnuTLS writes records into the stage (eng_push in stage
 * mode), never into the socket, so it never holds a half-sent record: a
 * KeyUpdate or alert it must send while reading simply queues behind. */
static int stage_flush(struct kite_stream *s)
{
	struct kite_engine *e = s->e;

	while (s->stage_off < s->stage_len) {
		struct iovec iov = {s->stage_mem + s->stage_off, s->stage_len - s->stage_off};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t r;

		do {
			r = kite_sys->sendmsg(s->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
			eng_sys(e, s->stage_plain ? s->stage_path : -1);
		} while (r < 0 && errno == EINTR);
		if (r < 0)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		s->stage_off += (uint32_t)r;
		s->t_active = eng_now_ms();
	}
	s->stage_off = s->stage_len = 0;
	if (s->stage_plain && s->qhead) {
		/* Every record of that plaintext is in the socket. */
		uint64_t n = s->stage_plain;

		s->stage_plain = 0;
		eng_item_done(s, s->qhead, n, s->stage_path);
	}
	return 0;
}

/* Encrypt the head item's next records (up to EP_RECORDS of them, one
 * pread and later one sendmsg) into the stage. A unit's head goes in front
 * of its file bytes: one plaintext, so they share records. */
static int stage_record(struct kite_stream *s, struct eng_item *it)
{
	struct kite_engine *e = s->e;
	/* The peer may ask for smaller records (RFC 8449): the stage's slack
	 * is per record, so fewer bytes per round then. */
	size_t rec = kite_conn_record_size(s->conn), done = 0, max = EP_RECORDS * rec;
	const uint8_t *src;
	size_t n, h = 0;
	ssize_t r;

	if (it->kind == ITEM_BUF) {
		n = it->left < max ? it->left : max;
		src = it->data + it->off;
		s->stage_path = KITE_PATH_SEND;
	} else {
		if (!ep_of(s)->ebuf) {
			ep_of(s)->ebuf = malloc(EP_RECORDS * KITE_MAX_RECORD);
			if (!ep_of(s)->ebuf)
				return -ENOMEM;
		}
		h = it->hleft < max ? it->hleft : max;
		memcpy(ep_of(s)->ebuf, eng_head(it), h);
		n = it->left < max - h ? it->left : max - h;
		r = 0;
		while (n) {
			r = kite_sys->pread(it->fd, ep_of(s)->ebuf + h, n, (off_t)it->off);
			eng_sys(e, KITE_PATH_USER);
			if (r >= 0 || errno != EINTR)
				break;
		}
		if (r < 0)
			return -errno;
		if (n && r == 0)
			return -ENODATA;
		n = (size_t)r;
		src = ep_of(s)->ebuf;
		s->stage_path = KITE_PATH_USER;
	}
	while (done < h + n) {
		size_t k = h + n - done < rec ? h + n - done : rec;

		r = kite_send(s->conn, src + done, k);
		if (r != (ssize_t)k)
			return r < 0 ? (int)r : -EIO;
		done += k;
	}
	if (it->kind == ITEM_FILE)
		it->hleft -= (uint32_t)h;
	it->off += n;
	it->left -= n;
	s->stage_plain = h + n;
	return 0;
}

/* Kernel TLS or plaintext: the bytes go straight into the socket. */
static ssize_t send_direct(struct kite_stream *s, struct eng_item *it, int *path)
{
	struct kite_engine *e = s->e;
	ssize_t r;

	if (it->kind == ITEM_BUF) {
		struct iovec iov = {it->data + it->off, it->left};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		int flags = MSG_NOSIGNAL | MSG_DONTWAIT;

		*path = KITE_PATH_SEND;
		if (eng_more_after(it, it->left))
			flags |= MSG_MORE; /* same record / segment as what follows */
		do {
			r = kite_sys->sendmsg(s->fd, &msg, flags);
			eng_sys(e, *path);
		} while (r < 0 && errno == EINTR);
		if (r < 0)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		it->off += (uint64_t)r;
		it->left -= (uint64_t)r;
		return r;
	}
	if (it->hleft) {
		/* A unit's head: MSG_MORE keeps the record (or segment) open
		 * for the range that sendfile(2) adds next. */
		struct iovec iov = {(void *)eng_head(it), it->hleft};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

		*path = KITE_PATH_SEND;
		do {
			r = kite_sys->sendmsg(s->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT | MSG_MORE);
			eng_sys(e, *path);
		} while (r < 0 && errno == EINTR);
		if (r < 0)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		it->hleft -= (uint32_t)r;
		return r;
	}
	*path = eng_path(s, MECH_SENDFILE);
	{
		size_t n = it->left < EP_MAX_CALL ? it->left : EP_MAX_CALL;
		off_t off = (off_t)it->off;

		/* sendfile(2) splices page cache pages into the socket; with
		 * kTLS TX the kernel encrypts them into records, no copy here.
		 * It takes no flags: its last piece ends the record, also when
		 * another item follows. */
		do {
			r = kite_sys->sendfile(s->fd, it->fd, &off, n);
			eng_sys(e, *path);
		} while (r < 0 && errno == EINTR);
		if (r < 0)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		if (r == 0)
			return -ENODATA;
		it->off = (uint64_t)off;
		it->left -= (uint64_t)r;
		return r;
	}
}

static void ep_tx(struct kite_stream *s)
{
	size_t budget = EP_BUDGET;

	while (ep_of(s)->can_write && eng_live(s)) {
		struct eng_item *it;
		int path = KITE_PATH_SEND;
		ssize_t r;

		if (s->conn && kite_conn_dead(s->conn)) {
			eng_fail(s, kite_conn_dead(s->conn));
			return;
		}
		/* Records first, in the order GnuTLS made them. */
		r = stage_flush(s);
		if (r == -EAGAIN) {
			blocked(s);
			return;
		}
		if (r) {
			eng_fail(s, (int)r);
			return;
		}
		if (!budget) {
			eng_kick(s); /* more later: the others first */
			return;
		}
		it = s->qhead;
		if (!it) {
			if (eng_drained(s) || ep_close_steps(s))
				continue;
			return;
		}
		if (s->stage_mode) {
			r = stage_record(s, it);
			if (!r) {
				budget = s->stage_len < budget ? budget - s->stage_len : 0;
				continue;
			}
		} else {
			r = send_direct(s, it, &path);
		}
		if (r == -EAGAIN) {
			blocked(s);
			return;
		}
		if (r < 0) {
			eng_fail(s, r == -ENODATA ? eng_short_file(s, it) : (int)r);
			return;
		}
		ep_of(s)->t_blocked = 0;
		budget = (size_t)r < budget ? budget - (size_t)r : 0;
		eng_item_done(s, it, (uint64_t)r, path);
		if (s->ktx && eng_ktls_account(s, 1, (size_t)r))
			return;
	}
}

static void ep_rx(struct kite_stream *s)
{
	struct kite_engine *e = s->e;

	while (ep_of(s)->can_read && eng_live(s) && eng_rx_wanted(s)) {
		ssize_t n;

		if (s->conn) {
			/* Kernel RX: recvmsg with a control buffer (io_ktls.c);
			 * userspace: GnuTLS through eng_pull. */
			n = kite_recv(s->conn, e->scratch, ENG_RX_BUF);
			if (s->krx)
				eng_sys(e, -1);
		} else {
			do {
				n = recv(s->fd, e->scratch, ENG_RX_BUF, 0);
				eng_sys(e, -1);
			} while (n < 0 && errno == EINTR);
			if (n < 0)
				n = errno == EWOULDBLOCK ? -EAGAIN : -errno;
		}
		if (n > 0) {
			eng_deliver(s, e->scratch, (size_t)n);
			continue;
		}
		if (n == 0)
			eng_rx_end(s);
		else if (n == -EAGAIN)
			ep_of(s)->can_read = false;
		else
			eng_rx_error(s, (int)n);
		return;
	}
}

static void ep_progress(struct kite_stream *s)
{
	struct kite_engine *e = s->e;
	int r;

	switch (s->state) {
	case ST_HANDSHAKE:
		/* A server's TLS session waits for the client's first bytes
		 * (or its hang-up): the read edge. */
		r = eng_handshake(s, ep_of(s)->can_read);
		if (r == -EAGAIN)
			return; /* the next edge brings us back */
		if (r)
			break;
		/* Userspace RX reads the socket through GnuTLS (eng_pull). */
		eng_opened(s, false);
		if (s->state != ST_OPEN)
			break;
		/* fallthrough */
	case ST_OPEN:
	case ST_LINGER:
		ep_tx(s);
		ep_rx(s);
		if (s->state == ST_LINGER && s->rx_eof)
			eng_finish(s);
		break;
	default:
		break;
	}
	if (s->state == ST_DEAD) {
		eng_close_prepare(s);
		/* close() also drops the fd from the epoll set. */
		close(s->fd);
		eng_sys(e, -1);
		eng_zombie(s);
	}
}

static void ep_accept(struct kite_engine *e, struct eng_listener *l)
{
	for (;;) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		eng_sys(e, -1);
		if (fd >= 0) {
			(void)eng_accepted(e, fd);
			continue;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return; /* drained */
		if (errno == EINTR || errno == ECONNABORTED)
			continue; /* that connection is gone; the next may be fine */
		if (errno == EINVAL || errno == EBADF || errno == ENOTSOCK || errno == EOPNOTSUPP) {
			/* Not a listener any more (the user shut it down to stop
			 * accepting): it stays readable (EPOLLHUP, which no event
			 * mask hides), so stop watching it for good. */
			(void)epoll_ctl(e->epfd, EPOLL_CTL_DEL, l->fd, NULL);
			eng_sys(e, -1);
			l->fd = -1;
			l->retry_at = 0;
			return;
		}
		/* EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays queued
		 * and the (level-triggered) listener readable, so waiting for
		 * it again would spin. Stop watching it for 100 ms. */
		e->st.accept_errors++;
		e->st.accept_error = -errno;
		{
			struct epoll_event ev = {.events = 0, .data.u64 = (uintptr_t)l | TAG_LISTENER};

			if (!epoll_ctl(e->epfd, EPOLL_CTL_MOD, l->fd, &ev))
				l->retry_at = eng_now_ms() + 100;
			eng_sys(e, -1);
		}
		return;
	}
}

/* Every ENG_EPOLL_TICK_MS: the core's deadlines, and this rung's send
 * timeout (no POLLOUT edge since the socket said EAGAIN). */
static void ep_timers(struct kite_engine *e, uint64_t now)
{
	unsigned send_ms = e->cfg.send_timeout_ms;

	for (struct kite_stream *s = e->streams; s; s = s->next) {
		struct ep_stream *es = ep_of(s);

		(void)eng_deadline(s, now);
		if (s->state == ST_OPEN && send_ms && !es->can_write && es->t_blocked &&
		    eng_tx_work(s) && now >= es->t_blocked + send_ms)
			eng_fail(s, -ETIMEDOUT);
	}
}

static int ep_wait(struct kite_engine *e, int timeout_ms)
{
	struct epoll_event ev[256];
	uint64_t now = eng_now_ms();
	int n;

	/* Timers need a look every tick while streams exist. */
	if (e->streams && (timeout_ms < 0 || timeout_ms > ENG_EPOLL_TICK_MS))
		timeout_ms = ENG_EPOLL_TICK_MS;
	/* Listeners resting after an accept error (ep_accept). */
	for (unsigned i = 0; i < e->nlisteners; i++) {
		struct eng_listener *l = &e->listeners[i];
		struct epoll_event lev = {.events = EPOLLIN, .data.u64 = (uintptr_t)l | TAG_LISTENER};

		if (!l->retry_at || l->fd < 0)
			continue;
		if (l->retry_at > now) {
			if (timeout_ms < 0 || (uint64_t)timeout_ms > l->retry_at - now)
				timeout_ms = (int)(l->retry_at - now);
			continue;
		}
		l->retry_at = 0;
		(void)epoll_ctl(e->epfd, EPOLL_CTL_MOD, l->fd, &lev);
		eng_sys(e, -1);
	}
	e->st.enters++;
	eng_sys(e, -1);
	n = epoll_wait(e->epfd, ev, 256, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		uint64_t tag = ev[i].data.u64 & TAG_MASK;

		if (tag == TAG_EVENTFD) {
			uint64_t v;

			if (read(e->evfd, &v, sizeof(v)) < 0) {
				/* EAGAIN: nothing to reset */
			}
			eng_sys(e, -1);
		} else if (tag == TAG_LISTENER) {
			struct eng_listener *l = (void *)(uintptr_t)(ev[i].data.u64 & ~(uint64_t)TAG_MASK);

			if (l->fd >= 0)
				ep_accept(e, l);
		} else {
			struct kite_stream *s = ev[i].data.ptr;

			if (ev[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
				ep_of(s)->can_read = true;
			if (ev[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
				ep_of(s)->can_write = true;
			eng_kick(s);
		}
	}
	now = eng_now_ms();
	if (now >= e->next_tick) {
		ep_timers(e, now);
		e->next_tick = now + ENG_EPOLL_TICK_MS;
	}
	return 0;
}

const struct eng_backend eng_epoll = {
	.name = "epoll",
	.stream_size = sizeof(struct ep_stream),
	.stream_free = ep_stream_free,
	.init = ep_init,
	.fini = ep_fini,
	.listen = ep_listen,
	.attach = ep_attach,
	.progress = ep_progress,
	.wait = ep_wait,
	.quiesce = ep_quiesce,
};
