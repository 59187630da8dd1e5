/* SPDX-License-Identifier: MIT */
/*
 * Kernel backend: the socket has TLS_TX and/or TLS_RX installed; plain
 * sendmsg/sendfile/recvmsg move application data and the kernel does the
 * records. Non-data records travel with a SOL_TLS cmsg.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "kite-private.h"

/* Bytes per kernel call: bounds the records one call can add between two
 * AEAD-limit read-backs (kite_ktls_account()). */
#define KITE_MAX_CALL (64u << 20)

static ssize_t ktls_io_error(struct kite_conn *c, size_t done, int err, const char *what)
{
	if (err == EAGAIN || err == EWOULDBLOCK) {
		kite_ktls_push(c->fd);
		c->poll_events = POLLOUT;
		return done ? (ssize_t)done : -EAGAIN;
	}
	if (done)
		return (ssize_t)done; /* report progress; the error repeats next call */
	return kite_conn_fail(c, -err, "%s: %s", what, kite_strerror(-err));
}

/* After a kernel send loop: progress first, then the error, then the AEAD
 * usage bookkeeping (which may end the connection for later calls). */
static ssize_t ktls_tx_done(struct kite_conn *c, size_t calls, size_t done, ssize_t err,
			    const char *what)
{
	ssize_t r = (ssize_t)done;

	if (err)
		r = ktls_io_error(c, done, (int)err, what);
	if (calls && kite_ktls_account(c, calls, done) && !done)
		return c->dead ? c->dead : -EIO;
	return r;
}

static ssize_t ktls_send(struct kite_conn *c, const void *buf, size_t len)
{
	size_t done = 0, calls = 0;
	int err = 0;

	while (done < len) {
		size_t n = len - done < KITE_MAX_CALL ? len - done : KITE_MAX_CALL;
		struct iovec iov = {(uint8_t *)buf + done, n};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t r = kite_sys->sendmsg(c->fd, &msg, MSG_NOSIGNAL);

		if (r < 0 && errno == EINTR)
			continue;
		calls++;
		if (r < 0) {
			err = errno;
			break;
		}
		done += (size_t)r;
	}
	return ktls_tx_done(c, calls, done, err, "kTLS send");
}

/* Below this SO_SNDBUF (the value the kernel reports, twice the one set),
 * one sendfile() call carries one record. */
#define KITE_SMALL_SNDBUF (256 << 10)

/* Linux 6.1 kTLS hands the records of one sendfile() call to TCP marked
 * "more follows", and TCP holds them unsent until a segment (up to 64 KiB)
 * fills. A send buffer too small for that plus an open record fills first:
 * a non-blocking call returns EAGAIN (kite_ktls_push() then frees it), a
 * blocking one waits forever inside the kernel. The end of a call pushes,
 * so with a small buffer each call carries one record; the size is read
 * again before each call, since TCP grows the buffer as it goes. */
static size_t sendfile_step(int fd)
{
	int v = 0;
	socklen_t l = sizeof(v);

	if (!getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, &l) && v > 0 && v < KITE_SMALL_SNDBUF)
		return KITE_MAX_RECORD;
	return KITE_MAX_CALL;
}

static ssize_t ktls_sendfile(struct kite_conn *c, int fd, off_t *off, size_t len)
{
	size_t done = 0, calls = 0, step = KITE_MAX_RECORD;
	int err = 0;

	while (done < len) {
		size_t n;

		if (step == KITE_MAX_RECORD && len - done > KITE_MAX_RECORD)
			step = sendfile_step(c->fd);
		n = len - done < step ? len - done : step;
		/* sendfile(2) splices page cache pages into the kTLS socket:
		 * the kernel encrypts them into full records, no copy to us. */
		ssize_t r = kite_sys->sendfile(c->fd, fd, off, n);

		if (r < 0 && errno == EINTR)
			continue;
		calls++;
		if (r < 0) {
			err = errno;
			break;
		}
		if (r == 0) {
			if (!done)
				return kite_conn_fail(c, -ENODATA,
						      "file ends at offset %lld, %zu bytes short",
						      (long long)*off, len);
			break;
		}
		done += (size_t)r;
	}
	return ktls_tx_done(c, calls, done, err, "kTLS sendfile");
}

static int ktls_close_notify(struct kite_conn *c)
{
	static const uint8_t close_notify[2] = {1 /* warning */, 0 /* close_notify */};
	int r = kite_ktls_send_control(c, KITE_CT_ALERT, close_notify, sizeof(close_notify));

	if (r == -EAGAIN)
		c->poll_events = POLLOUT;
	return r;
}

/* One recvmsg; *type gets the record's content type from the cmsg. */
static ssize_t recv_record(struct kite_conn *c, void *buf, size_t len, uint8_t *type)
{
	char cbuf[CMSG_SPACE(sizeof(uint8_t))] = {0}; /* walked by CMSG_NXTHDR */
	struct iovec iov = {buf, len};
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *cm;
	ssize_t n;

	/* EINTR without a pending signal was seen on Linux 6.1 TLS 1.3 RX:
	 * always retry. */
	do
		n = kite_sys->recvmsg(c->fd, &msg, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		int e = errno;

		switch (e) {
		case EAGAIN:
#if EWOULDBLOCK != EAGAIN
		case EWOULDBLOCK:
#endif
			c->poll_events = POLLIN;
			return -EAGAIN;
		case EBADMSG:
			return kite_conn_fail(c, -EPROTO, "record failed authentication (EBADMSG)");
		case EMSGSIZE:
			return kite_conn_fail(c, -EPROTO, "record too large (EMSGSIZE)");
		case EKEYEXPIRED:
			return kite_conn_fail(c, -EKEYEXPIRED,
					      "kernel waits for a new RX key after a KeyUpdate");
		default:
			return kite_conn_fail(c, -e, "kTLS receive: %s", kite_strerror(-e));
		}
	}
	/* uapi: with a control buffer, every kTLS recvmsg carries cmsg
	 * SOL_TLS/TLS_GET_RECORD_TYPE; a non-data record comes alone. */
	*type = KITE_CT_APPLICATION_DATA;
	if (msg.msg_flags & MSG_CTRUNC)
		return kite_conn_fail(c, -EPROTO, "record type cmsg truncated");
	for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_GET_RECORD_TYPE)
			memcpy(type, CMSG_DATA(cm), 1);
	if (n == 0 && *type == KITE_CT_APPLICATION_DATA)
		return kite_conn_truncated(c); /* a FIN, not a reset */
	return n;
}

/* Bytes of a control record still needed (0: complete). */
static size_t ctrl_missing(uint8_t type, const uint8_t *p, size_t have)
{
	size_t off = 0;

	if (type == KITE_CT_ALERT)
		return have >= 2 ? 0 : 2 - have;
	if (type != KITE_CT_HANDSHAKE)
		return 0;
	while (off < have) {
		size_t mlen;

		if (have - off < 4)
			return 4 - (have - off);
		mlen = (size_t)p[off + 1] << 16 | (size_t)p[off + 2] << 8 | p[off + 3];
		if (have - off - 4 < mlen)
			return mlen - (have - off - 4);
		off += 4 + mlen;
	}
	return have ? 0 : 4;
}

/* End the connection after a control record we cannot follow. */
static int finish(struct kite_conn *c, int err)
{
	/* Best effort: the error is what the caller needs to see. */
	if (!c->tx_closed)
		(void)!c->tx->close_notify(c);
	c->tx_closed = true;
	c->dead = err;
	return err;
}

static int handle_key_update(struct kite_conn *c, const uint8_t *body, size_t len)
{
	int r;

	if (c->version != KITE_TLS13 || len != 1 || body[0] > 1)
		return finish(c, kite_conn_fail(c, -EPROTO, "malformed KeyUpdate"));
	/* The kernel cannot read the peer's next record without the next key:
	 * without kernel rekey support the only safe outcome is the end. */
	r = kite_ktls_rekey(c, KITE_RX);
	if (r)
		return finish(c, kite_conn_fail(c, -EKEYEXPIRED,
			"peer updated its TLS 1.3 keys (KeyUpdate) and the next RX key could not "
			"be installed: %s; connection closed", c->detail));
	/* update_requested: answer with our own KeyUpdate (RFC 8446 4.6.3). */
	if (body[0] == 1) {
		r = kite_key_update(c);
		if (r)
			return finish(c, r);
	}
	return 0;
}

static int handle_control(struct kite_conn *c, uint8_t type, const uint8_t *p, size_t have)
{
	size_t off = 0;

	switch (type) {
	case KITE_CT_ALERT:
		if (p[1] == GNUTLS_A_CLOSE_NOTIFY) {
			c->rx_eof = true;
			return 0;
		}
		if (p[1] == GNUTLS_A_USER_CANCELED)
			return 0; /* a close_notify follows */
		c->dead = kite_conn_fail(c, -EPROTO, "peer sent %s alert: %s",
					 p[0] == 2 ? "fatal" : "warning",
					 gnutls_alert_get_strname((gnutls_alert_description_t)p[1]));
		return c->dead;
	case KITE_CT_HANDSHAKE:
		while (off < have) {
			uint8_t mt = p[off];
			size_t mlen = (size_t)p[off + 1] << 16 | (size_t)p[off + 2] << 8 | p[off + 3];
			int r = 0;

			if (mt == KITE_HS_NEW_SESSION_TICKET && c->version == KITE_TLS13 &&
			    c->ctx->role == KITE_CLIENT)
				r = 0; /* resumption from kTLS sessions is not offered: drop */
			else if (mt == KITE_HS_KEY_UPDATE)
				r = handle_key_update(c, p + off + 4, mlen);
			else if (mt == KITE_HS_HELLO_REQUEST && c->version == KITE_TLS12 &&
				 c->ctx->role == KITE_CLIENT)
				r = 0; /* renegotiation is not supported; ignoring is allowed */
			else
				r = finish(c, kite_conn_fail(c, -EPROTO,
					"unexpected handshake message %u after the handshake", mt));
			if (r)
				return r;
			off += 4 + mlen;
		}
		return 0;
	default:
		return finish(c, kite_conn_fail(c, -EPROTO, "unexpected record type %u", type));
	}
}

static ssize_t ktls_recv(struct kite_conn *c, void *buf, size_t len)
{
	for (;;) {
		uint8_t type, t2;
		ssize_t n = recv_record(c, buf, len, &type);
		size_t have, miss;
		int r;

		if (n < 0) {
			if (n != -EAGAIN)
				c->dead = (int)n;
			return n;
		}
		if (type == KITE_CT_APPLICATION_DATA)
			return n;

		/* A control record: gather it whole in c->buf. The kernel hands
		 * out the rest of a partly read record before the next one. */
		have = (size_t)n < KITE_MAX_RECORD ? (size_t)n : KITE_MAX_RECORD;
		if (!kite_conn_buf(c))
			return finish(c, kite_conn_fail(c, -ENOMEM, "no memory for a control record"));
		memcpy(c->buf, buf, have);
		while ((miss = ctrl_missing(type, c->buf, have)) > 0) {
			if (have + miss > KITE_MAX_RECORD)
				return finish(c, kite_conn_fail(c, -EPROTO, "oversized control record"));
			n = recv_record(c, c->buf + have, miss, &t2);
			if (n == -EAGAIN) {
				/* The kernel decrypted the record whole; its rest
				 * is readable now. Wait briefly, never forever. */
				struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

				if (poll(&pfd, 1, 5000) > 0)
					continue;
				return finish(c, kite_conn_fail(c, -EPROTO, "control record stalled"));
			}
			if (n <= 0 || t2 != type)
				return finish(c, n < 0 ? (int)n
						 : kite_conn_fail(c, -EPROTO, "truncated control record"));
			have += (size_t)n;
		}
		r = handle_control(c, type, c->buf, have);
		if (r)
			return r;
		if (c->rx_eof)
			return 0;
	}
}

const struct kite_tx_ops kite_tx_ktls = {
	.send = ktls_send,
	.sendfile = ktls_sendfile,
	.close_notify = ktls_close_notify,
};

const struct kite_rx_ops kite_rx_ktls = {
	.recv = ktls_recv,
};

/* For the io_uring engine, which receives kTLS records itself (RECVMSG with
 * a control buffer): the same gathering and handling of control records. */
size_t kite_ktls_ctrl_missing(uint8_t type, const uint8_t *p, size_t have)
{
	return ctrl_missing(type, p, have);
}

int kite_ktls_handle_control(struct kite_conn *c, uint8_t type, const uint8_t *p, size_t have)
{
	return handle_control(c, type, p, have);
}
