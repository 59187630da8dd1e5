/* SPDX-License-Identifier: MIT */
/*
 * Userspace backend: GnuTLS encrypts and decrypts records. Used for every
 * direction the kernel cannot (or may not) take.
 */
#include <errno.h>
#include <poll.h>

#include "kite-private.h"

/* One gnutls_record_send, honouring GnuTLS's rule that after EAGAIN the
 * same record is completed by a call with no new data. */
static ssize_t send_once(struct kite_conn *c, const void *buf, size_t len)
{
	ssize_t r;

	do
		r = c->tx_pending ? gnutls_record_send(c->s, NULL, 0)
				  : gnutls_record_send(c->s, buf, len);
	while (r == GNUTLS_E_INTERRUPTED);
	if (r == GNUTLS_E_AGAIN) {
		c->tx_pending = true;
		c->poll_events = POLLOUT;
		return -EAGAIN;
	}
	c->tx_pending = false;
	if (r < 0) {
		r = kite_gnutls_err(c, (int)r, "send");
		c->dead = (int)r;
	}
	return r;
}

static ssize_t user_send(struct kite_conn *c, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t done = 0;

	while (done < len || c->tx_pending) {
		ssize_t r = send_once(c, p + done, len - done);

		if (r < 0)
			return done ? (ssize_t)done : r;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

static ssize_t user_sendfile(struct kite_conn *c, int fd, off_t *off, size_t len)
{
	size_t done = 0;

	while (done < len || c->tx_pending) {
		ssize_t n = 0, r;

		if (!c->tx_pending) {
			size_t want = len - done < KITE_MAX_RECORD ? len - done : KITE_MAX_RECORD;

			if (!kite_conn_buf(c))
				return done ? (ssize_t)done
					    : kite_conn_fail(c, -ENOMEM, "no memory for a file buffer");

			do
				n = kite_sys->pread(fd, c->buf, want, *off);
			while (n < 0 && errno == EINTR);
			if (n < 0) {
				r = kite_conn_fail(c, -errno, "reading the file at offset %lld",
						   (long long)*off);
				return done ? (ssize_t)done : r;
			}
			if (n == 0) {
				r = kite_conn_fail(c, -ENODATA, "file ends at offset %lld, %zu bytes short",
						   (long long)*off, len - done);
				return done ? (ssize_t)done : r;
			}
		}
		r = send_once(c, c->buf, (size_t)n);
		if (r < 0)
			return done ? (ssize_t)done : r;
		*off += r;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

static int user_close_notify(struct kite_conn *c)
{
	int r;

	do
		r = gnutls_bye(c->s, GNUTLS_SHUT_WR);
	while (r == GNUTLS_E_INTERRUPTED);
	if (r == GNUTLS_E_AGAIN) {
		c->poll_events = POLLOUT;
		return -EAGAIN;
	}
	return r < 0 ? kite_gnutls_err(c, r, "close_notify") : 0;
}

static ssize_t user_recv(struct kite_conn *c, void *buf, size_t len)
{
	ssize_t r;

	for (;;) {
		c->io_errno = 0;
		r = gnutls_record_recv(c->s, buf, len);
		if (r >= 0)
			break;
		switch (r) {
		case GNUTLS_E_INTERRUPTED:
		case GNUTLS_E_REHANDSHAKE: /* TLS 1.2 HelloRequest: may be ignored (RFC 5246 7.4.1.1) */
			continue;
		case GNUTLS_E_AGAIN:
			if (c->peer_eof) {
				c->dead = kite_conn_fail(c, -ECONNRESET,
							 "peer closed TCP in the middle of a record");
				return c->dead;
			}
			/* GnuTLS also answers AGAIN after a record with nothing
			 * for the caller (TLS 1.3 empty record, NewSessionTicket,
			 * KeyUpdate) while the socket did not block: read on. */
			if (c->io_errno != EAGAIN)
				continue;
			c->poll_events = POLLIN;
			return -EAGAIN;
		case GNUTLS_E_WARNING_ALERT_RECEIVED:
			if (gnutls_alert_get(c->s) == GNUTLS_A_USER_CANCELED)
				continue;
			break;
		case GNUTLS_E_PREMATURE_TERMINATION:
			c->dead = kite_conn_fail(c, -ECONNRESET,
						 "peer closed TCP without close_notify");
			return c->dead;
		default:
			break;
		}
		if (r == GNUTLS_E_PULL_ERROR && c->io_errno == 0)
			c->io_errno = EIO;
		c->dead = kite_gnutls_err(c, (int)r, "receive");
		return c->dead;
	}
	if (r == 0)
		c->rx_eof = true;
	return r;
}

const struct kite_tx_ops kite_tx_user = {
	.send = user_send,
	.sendfile = user_sendfile,
	.close_notify = user_close_notify,
};

const struct kite_rx_ops kite_rx_user = {
	.recv = user_recv,
};
