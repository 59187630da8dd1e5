/* SPDX-License-Identifier: MIT */
/*
 * Connections: the GnuTLS session, the handshake, and the choice - made
 * here and nowhere else - of kernel or userspace backend per direction.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/socket.h>

#include "kite-private.h"

/* ---- The GnuTLS transport -------------------------------------------------
 *
 * One for every connection: kite's blocking and non-blocking kite_conn and
 * the engine's streams. Records go through the syscall seam, or through the
 * memory of an owner (kite_conn_set_io: the engine's rounds); the errno
 * GnuTLS hears is kept for kite_handshake() and kite_recv(). */

static void io_errno(struct kite_conn *c, int err)
{
	c->io_errno = err;
	gnutls_transport_set_errno(c->s, err);
}

static void io_syscall(struct kite_conn *c, bool push)
{
	if (c->io)
		c->io->syscall(c->owner, push);
}

/* MSG_NOSIGNAL: a peer reset must be an error, not SIGPIPE. */
static ssize_t push_vec(gnutls_transport_ptr_t p, const giovec_t *iov, int n)
{
	struct kite_conn *c = p;
	struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
	ssize_t r = KITE_IO_SOCKET;

	/* Once TX belongs to the kernel, a GnuTLS record written here would
	 * be encrypted a second time by kTLS: refuse. (GnuTLS only writes
	 * after the handshake for alerts and KeyUpdate replies.) */
	if (c->ktls[KITE_TX]) {
		kite_conn_fail(c, -EKEYEXPIRED, "GnuTLS tried to send a record on a kernel TX socket");
		c->io_errno = EKEYEXPIRED;
		gnutls_transport_set_errno(c->s, EIO);
		return -1;
	}
	if (c->io)
		r = c->io->push(c->owner, iov, n);
	if (r == KITE_IO_SOCKET) {
		do {
			r = kite_sys->sendmsg(c->fd, &msg, MSG_NOSIGNAL);
			io_syscall(c, true);
		} while (r < 0 && errno == EINTR);
		if (r < 0)
			r = errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
	if (r < 0) {
		io_errno(c, (int)-r);
		return -1;
	}
	return r;
}

static ssize_t pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
	struct kite_conn *c = p;
	struct iovec iov = {buf, len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t r = KITE_IO_SOCKET;

	if (c->ktls[KITE_RX]) {
		io_errno(c, EIO);
		return -1;
	}
	if (c->io)
		r = c->io->pull(c->owner, buf, len);
	if (r == KITE_IO_SOCKET) {
		/* Exactly the bytes GnuTLS asks for: during the handshake
		 * whatever follows it stays in the socket for kernel TLS RX. */
		do {
			r = kite_sys->recvmsg(c->fd, &msg, 0);
			io_syscall(c, false);
		} while (r < 0 && errno == EINTR);
		if (r < 0)
			r = errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
	if (r == 0 && c->io && c->io->hold_eof && c->io->hold_eof(c->owner))
		r = -EAGAIN;
	else if (r == 0)
		c->peer_eof = true;
	if (r < 0) {
		io_errno(c, (int)-r);
		return -1;
	}
	return r;
}

static int pull_timeout(gnutls_transport_ptr_t p, unsigned ms)
{
	struct kite_conn *c = p;
	struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
	int r;

	if (c->io) {
		r = c->io->ready(c->owner);
		if (r >= 0)
			return r;
		ms = 0; /* an event loop never waits inside GnuTLS */
	}
	do
		r = poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms);
	while (r < 0 && errno == EINTR);
	io_syscall(c, false);
	return r;
}

void kite_conn_set_io(struct kite_conn *c, const struct kite_io *io, void *owner)
{
	c->io = io;
	c->owner = owner;
}

int kite_conn_truncated(struct kite_conn *c)
{
	c->peer_eof = true;
	return kite_conn_fail(c, -ECONNRESET, "peer closed TCP without close_notify");
}

size_t kite_conn_record_size(const struct kite_conn *c)
{
	size_t rec = c->s ? gnutls_record_get_max_size(c->s) : 0;

	return rec == 0 || rec > KITE_MAX_RECORD ? KITE_MAX_RECORD : rec;
}

unsigned kite_conn_handoff_syscalls(const struct kite_conn *c)
{
	const struct kite_caps *caps = kite_caps_get();
	unsigned n = 0;

	if (caps->ulp || c->version < 0 || c->cipher < 0)
		return 0;
	for (int d = 0; d < KITE_DIR_COUNT; d++)
		if ((c->ctx->ktls_flags & (d == KITE_TX ? KITE_KTLS_TX : KITE_KTLS_RX)) &&
		    !caps->offload[c->version][c->cipher][d])
			n++;
	return n ? n + 1 : 0;
}

/* Keep the TLS 1.3 application traffic secrets: the kernel path derives
 * later keys from them (RFC 8446 7.2). Nothing is ever written out. */
static int keylog(gnutls_session_t s, const char *label, const gnutls_datum_t *secret)
{
	/* The transport pointer, not the session pointer: an embedder's own
	 * session keeps its session pointer for its callbacks. */
	struct kite_conn *c = gnutls_transport_get_ptr(s);
	bool server = c->ctx->role == KITE_SERVER;
	int d;

	if (c->user_keylog && c->user_keylog(s, label, secret) < 0)
		return -1;

	if (!strcmp(label, "SERVER_TRAFFIC_SECRET_0"))
		d = server ? KITE_TX : KITE_RX;
	else if (!strcmp(label, "CLIENT_TRAFFIC_SECRET_0"))
		d = server ? KITE_RX : KITE_TX;
	else
		return 0;
	if (secret->size > KITE_MAX_SECRET)
		return 0;
	memcpy(c->secret[d], secret->data, secret->size);
	c->secret_len[d] = secret->size;
	return 0;
}

/* A connection without a session yet; holds a reference on ctx. */
static struct kite_conn *conn_new(struct kite_ctx *ctx, int fd)
{
	struct kite_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->ctx = ctx;
	c->fd = fd;
	c->version = c->cipher = -1;
	c->tx = &kite_tx_user;
	c->rx = &kite_rx_user;
	atomic_store(&ctx->frozen, true);
	kite_ctx_ref(ctx);
	return c;
}

/* From here on every record of s goes through kite's transport (the
 * syscall seam, errno kept for kite_handshake), and kite sees the TLS 1.3
 * traffic secrets. The same for kite's sessions and an embedder's. */
static void attach(struct kite_conn *c, gnutls_session_t s)
{
	c->s = s;
	gnutls_transport_set_ptr(s, c);
	gnutls_transport_set_vec_push_function(s, push_vec);
	gnutls_transport_set_pull_function(s, pull);
	gnutls_transport_set_pull_timeout_function(s, pull_timeout);
	if (!c->handshake_done) {
		c->user_keylog = gnutls_session_get_keylog_function(s);
		if (c->user_keylog == keylog)
			c->user_keylog = NULL;
		gnutls_session_set_keylog_function(s, keylog);
	}
}

int kite_conn_create(struct kite_conn **out, struct kite_ctx *ctx, int fd)
{
	gnutls_session_t s;
	struct kite_conn *c;
	unsigned flags;
	int r;

	if (!out || !ctx || fd < 0)
		return -EINVAL;
	*out = NULL;
	if (ctx->role == KITE_SERVER && !ctx->have_cred)
		return -EINVAL;
	c = conn_new(ctx, fd);
	if (!c)
		return -ENOMEM;

	flags = ctx->role == KITE_SERVER ? GNUTLS_SERVER : GNUTLS_CLIENT;
	r = gnutls_init(&s, flags);
	if (r < 0) {
		kite_conn_destroy(c);
		return -ENOMEM;
	}
	attach(c, s);
	/* kite's own session has no embedder keylog: what attach() found is
	 * GnuTLS's default, which writes the secrets to SSLKEYLOGFILE. */
	c->user_keylog = NULL;
	r = gnutls_priority_set(c->s, ctx->prio);
	if (r >= 0)
		r = gnutls_credentials_set(c->s, GNUTLS_CRD_CERTIFICATE, ctx->cred);
	if (r >= 0 && ctx->role == KITE_SERVER)
		kite_sni_attach(c);
	if (r >= 0 && ctx->ticket_key.data)
		r = gnutls_session_ticket_enable_server(c->s, &ctx->ticket_key);
	if (r >= 0 && ctx->nalpn)
		r = gnutls_alpn_set_protocols(c->s, ctx->alpn, ctx->nalpn,
					      ctx->role == KITE_SERVER ? GNUTLS_ALPN_MANDATORY : 0);
	if (r < 0) {
		kite_conn_destroy(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

/* GnuTLS keeps the last handshake message types sent and received while a
 * handshake runs, and -1 before the first and again once it completed.
 * Tickets and key updates after the handshake may show as such. */
static bool hs_idle(int type)
{
	return type == -1 || type == GNUTLS_HANDSHAKE_FINISHED ||
	       type == GNUTLS_HANDSHAKE_NEW_SESSION_TICKET || type == GNUTLS_HANDSHAKE_KEY_UPDATE;
}

/* Established: no handshake under way, and a record cipher in force (the
 * NULL cipher is the state before the first handshake). */
static bool session_established(gnutls_session_t s)
{
	return hs_idle((int)gnutls_handshake_get_last_in(s)) &&
	       hs_idle((int)gnutls_handshake_get_last_out(s)) &&
	       gnutls_cipher_get(s) != GNUTLS_CIPHER_NULL;
}

static bool session_fresh(gnutls_session_t s)
{
	return (int)gnutls_handshake_get_last_in(s) == -1 &&
	       (int)gnutls_handshake_get_last_out(s) == -1 &&
	       gnutls_cipher_get(s) == GNUTLS_CIPHER_NULL;
}

static int offload(struct kite_conn *c);

int kite_conn_adopt_session(struct kite_conn **out, struct kite_ctx *ctx,
			    struct gnutls_session_int *session, int fd)
{
	struct kite_conn *c;

	if (!out)
		return -EINVAL;
	*out = NULL;
	/* Every check that can refuse comes before the session is touched:
	 * on these errors it is still the caller's, exactly as it was. */
	if (!ctx || !session || fd < 0 || !session_established(session))
		return -EINVAL;
	c = conn_new(ctx, fd);
	if (!c)
		return -ENOMEM;
	/* The handshake is over: there are no secrets to watch, and the
	 * caller's keylog function stays as it was. */
	c->handshake_done = true;
	attach(c, session);
	*out = c;
	/* From here on the connection owns the session, whatever offload()
	 * answers: a socket with one direction in the kernel cannot be handed
	 * back. */
	return offload(c);
}

int kite_conn_create_session(struct kite_conn **out, struct kite_ctx *ctx,
			     struct gnutls_session_int *session, int fd)
{
	struct kite_conn *c;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!ctx || !session || fd < 0 || !session_fresh(session))
		return -EINVAL;
	c = conn_new(ctx, fd);
	if (!c)
		return -ENOMEM;
	attach(c, session);
	*out = c;
	return 0;
}

void kite_conn_destroy(struct kite_conn *c)
{
	if (!c)
		return;
	if (c->s)
		gnutls_deinit(c->s);
	kite_wipe(c->secret, sizeof(c->secret));
	kite_ctx_destroy(c->ctx); /* drops this connection's reference */
	free(c->buf);
	free(c);
}

int kite_conn_set_server_name(struct kite_conn *c, const char *name)
{
	int r;

	if (!c || !name || c->ctx->role != KITE_CLIENT || c->handshake_done)
		return -EINVAL;
	r = gnutls_server_name_set(c->s, GNUTLS_NAME_DNS, name, strlen(name));
	if (r < 0)
		return kite_gnutls_err(c, r, "server name");
	if (c->ctx->verify)
		gnutls_session_set_verify_cert(c->s, name, 0);
	return 0;
}

/* After the handshake: choose the backend of each direction. */
static int offload(struct kite_conn *c)
{
	unsigned flags = c->ctx->ktls_flags;
	int ret = 0;

	/* A GnuTLS built with kTLS and told to use it (system config
	 * ktls = true) would have set up the socket itself, through the
	 * transport it believes is an fd: kite must be the only owner. */
	if (gnutls_transport_is_ktls_enabled(c->s)) {
		c->dead = kite_conn_fail(c, -EPROTO, "GnuTLS enabled its own kernel TLS; set "
					 "ktls = false in the GnuTLS system config for kite");
		return c->dead;
	}
	c->version = kite_version_from_gnutls(gnutls_protocol_get_version(c->s));
	c->cipher = kite_cipher_from_gnutls(gnutls_cipher_get(c->s));
	{
		const char *vn = gnutls_protocol_get_name(gnutls_protocol_get_version(c->s));
		const char *cn = gnutls_cipher_get_name(gnutls_cipher_get(c->s));
		gnutls_datum_t proto;

		snprintf(c->version_name, sizeof(c->version_name), "%s", vn ? vn : "unknown");
		snprintf(c->cipher_name, sizeof(c->cipher_name), "%s", cn ? cn : "unknown");
		c->resumed = gnutls_session_is_resumed(c->s);
		if (gnutls_alpn_get_selected_protocol(c->s, &proto) == 0 &&
		    proto.size < sizeof(c->alpn)) {
			memcpy(c->alpn, proto.data, proto.size);
			c->alpn[proto.size] = 0;
		}
	}
	for (int d = 0; d < KITE_DIR_COUNT; d++) {
		unsigned want = d == KITE_TX ? KITE_KTLS_TX : KITE_KTLS_RX;
		int r;

		if (!(flags & want)) {
			c->ktls_err[d] = -EOPNOTSUPP;
			snprintf(c->ktls_reason[d], sizeof(c->ktls_reason[d]),
				 "kernel TLS disabled by configuration");
			continue;
		}
		c->detail[0] = 0;
		r = kite_ktls_install(c, (enum kite_dir)d);
		c->ktls_err[d] = r;
		snprintf(c->ktls_reason[d], sizeof(c->ktls_reason[d]), "%s",
			 r ? c->detail : "kernel TLS");
		if (r && (flags & KITE_KTLS_REQUIRE))
			ret = kite_conn_fail(c, -EOPNOTSUPP, "kernel TLS %s required: %s",
					     kite_dir_name(d), c->ktls_reason[d]);
	}
	c->tx = c->ktls[KITE_TX] ? &kite_tx_ktls : &kite_tx_user;
	c->rx = c->ktls[KITE_RX] ? &kite_rx_ktls : &kite_rx_user;
	/* Secrets are kept only for directions the kernel may need to rekey. */
	for (int d = 0; d < KITE_DIR_COUNT; d++)
		if (!c->ktls[d]) {
			kite_wipe(c->secret[d], sizeof(c->secret[d]));
			c->secret_len[d] = 0;
		}
	/* A required direction that could not be offloaded fails the
	 * connection for good: no later call may carry data in userspace. */
	if (ret)
		c->dead = ret;
	else
		c->detail[0] = 0;
	/* With both directions in the kernel, GnuTLS has nothing left to do:
	 * free the session now so its copy of the record keys is wiped
	 * (gnutls_deinit clears key material) instead of living on. */
	if (c->ktls[KITE_TX] && c->ktls[KITE_RX]) {
		gnutls_deinit(c->s);
		c->s = NULL;
	}
	return ret;
}

int kite_handshake(struct kite_conn *c)
{
	int r;

	if (!c)
		return -EINVAL;
	if (c->handshake_done)
		return c->dead;
	if (c->dead)
		return c->dead;
	for (;;) {
		c->io_errno = 0;
		r = gnutls_handshake(c->s);
		/* GnuTLS 3.7 also answers AGAIN for a record cut short by EOF,
		 * and after records that carried nothing it needed: only a real
		 * EAGAIN from the socket means "wait". */
		if (r == GNUTLS_E_AGAIN && c->peer_eof) {
			c->dead = kite_conn_fail(c, -ECONNRESET, "peer closed TCP during the handshake");
			return c->dead;
		}
		if (r == GNUTLS_E_AGAIN && c->io_errno != EAGAIN)
			continue;
		if (r < 0 && r != GNUTLS_E_AGAIN &&
		    (r == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal(r)))
			continue;
		break;
	}
	if (r == GNUTLS_E_AGAIN) {
		c->poll_events = gnutls_record_get_direction(c->s) ? POLLOUT : POLLIN;
		return -EAGAIN;
	}
	if (r < 0) {
		if (r == GNUTLS_E_PULL_ERROR && c->io_errno == 0)
			r = GNUTLS_E_PREMATURE_TERMINATION;
		c->dead = kite_gnutls_err(c, r, "handshake");
		if (c->dead == -EAGAIN)
			c->dead = -EIO;
		return c->dead;
	}
	c->handshake_done = true;
	return offload(c);
}

short kite_conn_poll_events(const struct kite_conn *c)
{
	return c ? c->poll_events : 0;
}

int kite_conn_fd(const struct kite_conn *c)
{
	return c ? c->fd : -EINVAL;
}

/* Common guards of the data calls. */
static int usable(struct kite_conn *c, bool tx)
{
	if (!c->handshake_done)
		return kite_conn_fail(c, -EINVAL, "handshake not complete");
	if (c->dead)
		return c->dead;
	if (tx && c->tx_closed)
		return kite_conn_fail(c, -EPIPE, "close_notify already sent");
	return 0;
}

ssize_t kite_send(struct kite_conn *c, const void *buf, size_t len)
{
	int r;

	if (!c || (!buf && len))
		return -EINVAL;
	r = usable(c, true);
	if (r)
		return r;
	if (!len && !c->tx_pending)
		return 0;
	return c->tx->send(c, buf, len);
}

ssize_t kite_sendfile(struct kite_conn *c, int fd, off_t *offset, size_t len)
{
	int r;

	if (!c || fd < 0 || !offset || *offset < 0)
		return -EINVAL;
	r = usable(c, true);
	if (r)
		return r;
	if (!len && !c->tx_pending)
		return 0;
	return c->tx->sendfile(c, fd, offset, len);
}

ssize_t kite_recv(struct kite_conn *c, void *buf, size_t len)
{
	int r;

	if (!c || !buf || !len)
		return -EINVAL;
	if (c->rx_eof)
		return 0;
	r = usable(c, false);
	if (r)
		return r;
	return c->rx->recv(c, buf, len);
}

int kite_shutdown(struct kite_conn *c)
{
	int r;

	if (!c)
		return -EINVAL;
	if (!c->handshake_done)
		return kite_conn_fail(c, -EINVAL, "handshake not complete");
	if (c->tx_closed)
		return 0;
	if (c->dead)
		return c->dead;
	r = c->tx->close_notify(c);
	if (!r)
		c->tx_closed = true;
	return r;
}

/* Set by kite_ktls_fastpath() once the direction is in the kernel. */
static const char *fast_reason(const struct kite_conn *c, enum kite_dir d, unsigned flag)
{
	if (c->fast_reason[d][0])
		return c->fast_reason[d];
	if (!(c->ctx->ktls_flags & flag))
		return "not requested";
	return c->handshake_done ? "direction not offloaded to the kernel" : "handshake not complete";
}

int kite_conn_info(const struct kite_conn *c, struct kite_conn_info *info)
{
	if (!c || !info)
		return -EINVAL;
	memset(info, 0, sizeof(*info));
	info->role = c->ctx->role;
	info->handshake_done = c->handshake_done;
	info->version = c->version;
	info->cipher = c->cipher;
	info->version_name = c->handshake_done ? c->version_name : "none";
	info->cipher_name = c->handshake_done ? c->cipher_name : "none";
	info->resumed = c->resumed;
	memcpy(info->alpn, c->alpn, sizeof(info->alpn));
	for (int d = 0; d < KITE_DIR_COUNT; d++) {
		info->ktls[d] = c->ktls[d];
		info->ktls_error[d] = c->ktls_err[d];
		info->ktls_reason[d] = c->handshake_done ? c->ktls_reason[d] : "handshake not complete";
		info->key_updates[d] = c->key_updates[d];
	}
	info->records_tx = c->tx_records;
	info->tx_zerocopy_ro = c->fast[KITE_TX];
	info->rx_expect_no_pad = c->fast[KITE_RX];
	info->tx_zerocopy_ro_reason = fast_reason(c, KITE_TX, KITE_KTLS_TX_ZEROCOPY_RO);
	info->rx_expect_no_pad_reason = fast_reason(c, KITE_RX, KITE_KTLS_RX_EXPECT_NO_PAD);
	return 0;
}
