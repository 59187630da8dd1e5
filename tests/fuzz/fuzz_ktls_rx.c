/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: what kite does with records after kTLS RX took over.
 * The input is a script of kernel answers to recvmsg, fed through the
 * syscall seam to a connection in the offloaded state:
 *   [type u8][flags u8][len u8] then len bytes
 * type: the record's TLS_GET_RECORD_TYPE; flags bit 0: answer with an
 * errno (len selects one) instead; bit 1: deliver the record in two
 * pieces; bit 2: MSG_CTRUNC. Invariants: kite_recv returns only the bytes
 * of application-data records, in order, never more than asked; a dead
 * connection stays dead; nothing reads or writes out of bounds.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "kite-private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
	const uint8_t *p;
	size_t n;
	size_t split;        /* bytes of the current record already given */
	uint8_t app[1 << 16]; /* application bytes the script delivered, in order */
	size_t napp;
} in;

static const int errnos[] = {EAGAIN, EINTR, EBADMSG, EMSGSIZE, EKEYEXPIRED, ECONNRESET, EIO};

static ssize_t fz_recvmsg(int fd, struct msghdr *msg, int flags)
{
	uint8_t type, fl, len;
	size_t give;
	struct cmsghdr *cm;

	(void)fd, (void)flags;
	if (in.n < 3)
		return 0; /* TCP EOF */
	type = in.p[0], fl = in.p[1], len = in.p[2];
	if (fl & 1) {
		in.p += 3, in.n -= 3;
		errno = errnos[len % (sizeof(errnos) / sizeof(errnos[0]))];
		return -1;
	}
	if (in.n - 3 < len)
		len = (uint8_t)(in.n - 3);
	give = len - in.split;
	if ((fl & 2) && in.split == 0 && give > 1)
		give /= 2;
	if (give > msg->msg_iov[0].iov_len)
		give = msg->msg_iov[0].iov_len;
	memcpy(msg->msg_iov[0].iov_base, in.p + 3 + in.split, give);
	if (type == KITE_CT_APPLICATION_DATA && in.napp + give <= sizeof(in.app)) {
		memcpy(in.app + in.napp, in.p + 3 + in.split, give);
		in.napp += give;
	}
	in.split += give;
	if (in.split >= len) {
		in.p += 3u + len, in.n -= 3u + len;
		in.split = 0;
	}
	msg->msg_flags = (fl & 4) ? MSG_CTRUNC : 0;
	if (msg->msg_controllen >= CMSG_SPACE(1)) {
		cm = CMSG_FIRSTHDR(msg);
		cm->cmsg_level = SOL_TLS;
		cm->cmsg_type = TLS_GET_RECORD_TYPE;
		cm->cmsg_len = CMSG_LEN(1);
		*CMSG_DATA(cm) = type;
		msg->msg_controllen = CMSG_SPACE(1);
	}
	return (ssize_t)give;
}

static ssize_t fz_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	size_t n = 0;

	(void)fd, (void)flags;
	for (size_t i = 0; i < msg->msg_iovlen; i++)
		n += msg->msg_iov[i].iov_len;
	return (ssize_t)n; /* close_notify, KeyUpdate: swallowed */
}

static int fz_setsockopt(int fd, int level, int name, const void *v, socklen_t l)
{
	(void)fd, (void)level, (void)name, (void)v, (void)l;
	errno = EBUSY; /* no rekey in this kernel */
	return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct kite_sys sys;
	static struct kite_ctx *ctx;
	static struct kite_caps caps;
	static uint8_t out[1 << 16];
	struct kite_conn *c;
	size_t got = 0;
	int dead = 0;

	if (!ctx) {
		sys = kite_sys_libc;
		sys.recvmsg = fz_recvmsg;
		sys.sendmsg = fz_sendmsg;
		sys.setsockopt = fz_setsockopt;
		caps.rekey = -EBUSY;
		caps.rekey_reason = caps.ulp_reason = "fuzz";
		kite_caps_set(&caps);
		if (kite_ctx_create(&ctx, KITE_CLIENT))
			__builtin_trap();
	}
	kite_sys_set(&sys);
	memset(&in, 0, sizeof(in));
	in.p = data, in.n = size;
	if (kite_conn_create(&c, ctx, 0))
		__builtin_trap();
	/* The state kite_handshake() leaves after offloading both ways. */
	c->handshake_done = true;
	c->version = KITE_TLS13;
	c->cipher = KITE_AES_128_GCM;
	c->ktls[KITE_TX] = c->ktls[KITE_RX] = true;
	c->tx = &kite_tx_ktls;
	c->rx = &kite_rx_ktls;

	for (int i = 0; i < 4096; i++) {
		size_t want = 1 + (size_t)(i * 7919) % 300;
		ssize_t r = kite_recv(c, out + got, got + want <= sizeof(out) ? want : sizeof(out) - got);

		if (r > (ssize_t)want)
			__builtin_trap();
		if (r > 0) {
			if (dead || got + (size_t)r > in.napp || memcmp(out + got, in.app + got, (size_t)r))
				__builtin_trap(); /* bytes that were not application data */
			got += (size_t)r;
			if (got == sizeof(out))
				break;
			continue;
		}
		if (r == 0) {
			if (kite_recv(c, out, 1) != 0)
				__builtin_trap(); /* EOF is sticky */
			break;
		}
		if (r == -EAGAIN) {
			if (in.n < 3)
				break;
			continue;
		}
		if (dead && r != dead)
			__builtin_trap(); /* an error is sticky */
		dead = (int)r;
		if (in.n < 3)
			break;
	}
	kite_conn_destroy(c);
	kite_sys_set(NULL);
	return 0;
}
