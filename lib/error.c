/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kite-private.h"

const char *kite_strerror(int err)
{
	/* One text per code, true both for what kite means by it and for the
	 * kernel's answer, since callers print syscall errors through here
	 * too. Codes whose libc text already fits (EBUSY from a second
	 * SOL_TLS setsockopt, EMFILE, ETIMEDOUT, ...) keep it. */
	switch (-err) {
	case 0: return "success";
	case EAGAIN: return "temporarily unavailable (the socket would block or a queue had no room): try again";
	case EOPNOTSUPP: return "kernel TLS offload not possible";
	case EPROTO: return "TLS protocol error";
	case EINVAL: return "invalid argument";
	case EKEYEXPIRED: return "TLS key expired and cannot be updated";
	case ENODATA: return "file ended before the requested range";
	case EPIPE: return "connection closed for sending";
	case ECONNRESET: return "connection reset by peer";
	case EALREADY: return "already configured: settings are fixed once a connection uses them";
	case EPERM: return "operation not permitted";
	case ENOMEM: return "out of memory";
	case EACCES: return "certificate verification failed";
	case ENOENT: return "not found";
	case ENOSPC: return "no space left (on a device, or in a fixed-size table)";
	case EDEADLK: return "not allowed from inside a callback (it would deadlock)";
	case ENOBUFS: return "no buffer space (a send queue is full: wait until it drains)";
	case EMSGSIZE: return "message too long (larger than a send queue may ever hold)";
	case ECANCELED: return "operation cancelled (the engine was destroyed)";
	default: break;
	}
	/* strerror() is not thread-safe in theory; strerrordesc_np is. */
	const char *s = err < 0 ? strerrordesc_np(-err) : NULL;
	return s ? s : "unknown error";
}

int kite_conn_fail(struct kite_conn *c, int err, const char *fmt, ...)
{
	char buf[sizeof(c->detail)];
	va_list ap;

	/* The arguments may include c->detail itself (a message wrapping the
	 * detail of an inner failure): format aside, then copy. */
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	memcpy(c->detail, buf, sizeof(buf));
	return err;
}

const char *kite_conn_strerror(struct kite_conn *c, int err)
{
	if (!c)
		return kite_strerror(err);
	if (c->detail[0])
		snprintf(c->msg, sizeof(c->msg), "%s: %s", kite_strerror(err), c->detail);
	else
		snprintf(c->msg, sizeof(c->msg), "%s", kite_strerror(err));
	return c->msg;
}

int kite_gnutls_err(struct kite_conn *c, int gerr, const char *what)
{
	int err;

	switch (gerr) {
	case GNUTLS_E_AGAIN:
	case GNUTLS_E_INTERRUPTED:
		return -EAGAIN;
	case GNUTLS_E_PUSH_ERROR:
	case GNUTLS_E_PULL_ERROR:
		err = c && c->io_errno ? -c->io_errno : -EIO;
		break;
	case GNUTLS_E_PREMATURE_TERMINATION:
	case GNUTLS_E_UNEXPECTED_PACKET_LENGTH:
		err = -ECONNRESET;
		break;
	case GNUTLS_E_MEMORY_ERROR:
		err = -ENOMEM;
		break;
	case GNUTLS_E_CERTIFICATE_ERROR:
	case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR:
		err = -EACCES;
		break;
	case GNUTLS_E_INVALID_REQUEST:
		err = -EINVAL;
		break;
	case GNUTLS_E_WARNING_ALERT_RECEIVED:
	case GNUTLS_E_FATAL_ALERT_RECEIVED:
		err = -EPROTO;
		if (c)
			return kite_conn_fail(c, err, "%s: peer sent alert %s", what,
					      gnutls_alert_get_name(gnutls_alert_get(c->s)));
		break;
	default:
		err = -EPROTO;
		break;
	}
	return c ? kite_conn_fail(c, err, "%s: %s", what, gnutls_strerror(gerr)) : err;
}
