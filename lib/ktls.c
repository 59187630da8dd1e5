/* SPDX-License-Identifier: MIT */
/*
 * Kernel TLS: key handoff from GnuTLS, control records, rekey, AEAD usage
 * limits. Everything that can fail is checked before the first SOL_TLS
 * setsockopt: once TLS_TX/TLS_RX is set there is no undo.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <gnutls/crypto.h>

#include "kite-private.h"

/* With MSG_MORE or SPLICE_F_MORE (and inside a long sendfile), kTLS hands
 * each full record to TCP marked "more follows", and TCP queues it unsent
 * until a segment fills. kTLS checks the send buffer itself and returns
 * EAGAIN without the push that TCP does before it waits for memory: then
 * nothing is in flight, no ACK frees room, and POLLOUT never comes (Linux
 * 6.1; a 4 KiB SO_SNDBUF shows it every time: test_engine_faults sndbuf).
 * Setting TCP_NODELAY, even when it is already set, sends TCP's pending
 * frames. */
void kite_ktls_push(int fd)
{
	int one = 1;

	if (kite_sys->setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))) {
		/* not TCP, or gone: the caller's wait ends some other way */
	}
}

/* Records kept in reserve below the limit: more than can be sent between
 * two read-backs of rec_seq (see kite_ktls_account()). */
#define KITE_LIMIT_MARGIN (1ull << 20)
/* Pessimistic record estimate after which rec_seq is read back. */
#define KITE_CHECK_EVERY (1ull << 16)

static uint64_t be64(const uint8_t b[8])
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

static int set_ulp(struct kite_conn *c)
{
	static const char ulp[] = "tls";
	int r;

	/* A second TCP_ULP on the same socket gives EEXIST: the ULP is
	 * attached once, for both directions. */
	if (c->ktls[KITE_TX] || c->ktls[KITE_RX])
		return 0;
	r = kite_sys->setsockopt(c->fd, IPPROTO_TCP, TCP_ULP, ulp, sizeof(ulp));
	if (r == 0 || errno == EEXIST)
		return 0;
	return -errno;
}

/* Does the kernel still hold an unsent TLS 1.3 secret we may need? */
static bool keep_secret(const struct kite_conn *c)
{
	return c->version == KITE_TLS13 && kite_caps_get()->rekey == 0;
}

static void drop_secret(struct kite_conn *c, enum kite_dir d)
{
	kite_wipe(c->secret[d], sizeof(c->secret[d]));
	c->secret_len[d] = 0;
}

int kite_ktls_install(struct kite_conn *c, enum kite_dir d)
{
	const struct kite_caps *caps = kite_caps_get();
	union kite_crypto_info ci;
	gnutls_datum_t iv, key;
	struct kite_keys k;
	uint64_t seq;
	int r, size;

	if (c->version < 0 || c->cipher < 0)
		return kite_conn_fail(c, -EOPNOTSUPP, "%s %s cannot be offloaded",
				      gnutls_protocol_get_name(gnutls_protocol_get_version(c->s)),
				      gnutls_cipher_get_name(gnutls_cipher_get(c->s)));
	if (caps->ulp)
		return kite_conn_fail(c, -EOPNOTSUPP, "%s", caps->ulp_reason);
	r = caps->offload[c->version][c->cipher][d];
	if (r)
		return kite_conn_fail(c, -EOPNOTSUPP, "%s",
				      caps->offload_reason[c->version][c->cipher][d]);
	/* Bytes GnuTLS already decrypted would be skipped by the kernel. */
	if (d == KITE_RX && gnutls_record_check_pending(c->s))
		return kite_conn_fail(c, -EOPNOTSUPP, "GnuTLS holds received data");

	r = gnutls_record_get_state(c->s, d == KITE_RX, NULL, &iv, &key, k.seq);
	if (r < 0)
		return kite_conn_fail(c, -EOPNOTSUPP, "cannot read GnuTLS %s key state: %s",
				      kite_dir_name(d), gnutls_strerror(r));
	k.key = key.data, k.key_len = key.size;
	k.iv = iv.data, k.iv_len = iv.size;
	seq = be64(k.seq); /* k is wiped before the kernel call */
	size = kite_crypto_info_build(&ci, (enum kite_version)c->version,
				      (enum kite_cipher)c->cipher, &k);
	kite_wipe(&k, sizeof(k));
	if (size < 0) {
		r = kite_conn_fail(c, size, "unexpected %s key material sizes (key %u, iv %u)",
				   kite_cipher_name(c->cipher), key.size, iv.size);
		goto out;
	}

	r = set_ulp(c);
	if (r) {
		kite_conn_fail(c, -EOPNOTSUPP, "setsockopt(TCP_ULP, \"tls\"): %s",
			       kite_strerror(r));
		r = -EOPNOTSUPP;
		goto out;
	}
	/* Point of no return for this direction once it succeeds. A failure
	 * leaves the socket as it was (the kernel validates before it
	 * commits), so the direction can stay in userspace. */
	if (kite_sys->setsockopt(c->fd, SOL_TLS, d == KITE_TX ? TLS_TX : TLS_RX, &ci,
				 (socklen_t)size)) {
		r = -errno;
		kite_conn_fail(c, -EOPNOTSUPP, "setsockopt(SOL_TLS, %s): %s",
			       d == KITE_TX ? "TLS_TX" : "TLS_RX", kite_strerror(r));
		r = -EOPNOTSUPP;
		goto out;
	}
	c->ktls[d] = true;
	if (d == KITE_TX) {
		c->tx_records = seq;
		c->tx_estimate = 0;
	}
	kite_ktls_fastpath(c, d);
	r = 0;
out:
	kite_wipe(&ci, sizeof(ci));
	if (r || !keep_secret(c))
		drop_secret(c, d);
	return r;
}

void kite_ktls_fastpath(struct kite_conn *c, enum kite_dir d)
{
	const struct kite_caps *caps = kite_caps_get();
	unsigned want = d == KITE_TX ? KITE_KTLS_TX_ZEROCOPY_RO : KITE_KTLS_RX_EXPECT_NO_PAD;
	/* uapi: both switches are an int 0/1 at SOL_TLS, set after the
	 * direction's TLS_TX/TLS_RX (the kernel checks the installed state). */
	int name = d == KITE_TX ? TLS_TX_ZEROCOPY_RO : TLS_RX_EXPECT_NO_PAD;
	const char *opt = d == KITE_TX ? "TLS_TX_ZEROCOPY_RO" : "TLS_RX_EXPECT_NO_PAD";
	int probe = d == KITE_TX ? caps->tx_zerocopy_ro : caps->rx_no_pad;
	char *why = c->fast_reason[d];
	size_t n = sizeof(c->fast_reason[d]);
	int one = 1;

	c->fast[d] = false;
	if (!(c->ctx->ktls_flags & want)) {
		snprintf(why, n, "not requested");
		return;
	}
	/* The kernel refuses no-pad for TLS 1.2 (EINVAL): TLS 1.2 records
	 * carry no padding to expect or not. */
	if (d == KITE_RX && c->version != KITE_TLS13) {
		snprintf(why, n, "%s is for TLS 1.3 only", opt);
		return;
	}
	if (probe) {
		snprintf(why, n, "%s", d == KITE_TX ? caps->tx_zerocopy_ro_reason
						    : caps->rx_no_pad_reason);
		return;
	}
	if (kite_sys->setsockopt(c->fd, SOL_TLS, name, &one, sizeof(one))) {
		snprintf(why, n, "setsockopt(SOL_TLS, %s): %s", opt, kite_strerror(-errno));
		return;
	}
	c->fast[d] = true;
	snprintf(why, n, "on");
}

int kite_ktls_rekey(struct kite_conn *c, enum kite_dir d)
{
	const struct kite_caps *caps = kite_caps_get();
	uint8_t next[KITE_MAX_SECRET], key[32], iv[12];
	union kite_crypto_info ci;
	struct kite_keys k = {0};
	size_t slen = c->secret_len[d];
	int r, size;

	if (c->version != KITE_TLS13)
		return kite_conn_fail(c, -EOPNOTSUPP, "key update exists only in TLS 1.3");
	if (caps->rekey)
		return kite_conn_fail(c, -EOPNOTSUPP, "%s", caps->rekey_reason);
	if (!slen)
		return kite_conn_fail(c, -EOPNOTSUPP, "%s traffic secret not available",
				      kite_dir_name(d));

	r = kite_tls13_next_secret(c->cipher, c->secret[d], slen, next);
	if (!r)
		r = kite_tls13_traffic_keys(c->cipher, next, slen, key,
					    kite_cipher_key_len(c->cipher), iv);
	if (r) {
		r = kite_conn_fail(c, r, "TLS 1.3 key derivation failed");
		goto out;
	}
	/* A new key starts at sequence number 0 (RFC 8446 5.3). */
	k.key = key, k.key_len = kite_cipher_key_len(c->cipher);
	k.iv = iv, k.iv_len = 12;
	size = kite_crypto_info_build(&ci, KITE_TLS13, c->cipher, &k);
	if (size < 0) {
		r = kite_conn_fail(c, size, "crypto_info for the next key");
		goto out;
	}
	/* Linux >= 6.14 accepts a second TLS_TX/TLS_RX on a TLS 1.3 socket
	 * as a key update; for RX it must follow the KeyUpdate record (reads
	 * fail with EKEYEXPIRED until it is installed). */
	if (kite_sys->setsockopt(c->fd, SOL_TLS, d == KITE_TX ? TLS_TX : TLS_RX, &ci,
				 (socklen_t)size)) {
		r = -errno;
		kite_conn_fail(c, r, "installing the updated %s key: setsockopt: %s",
			       kite_dir_name(d), kite_strerror(r));
		goto out;
	}
	memcpy(c->secret[d], next, slen);
	c->key_updates[d]++;
	if (d == KITE_TX)
		c->tx_records = 0, c->tx_estimate = 0;
	r = 0;
out:
	kite_wipe(next, sizeof(next));
	kite_wipe(key, sizeof(key));
	kite_wipe(iv, sizeof(iv));
	kite_wipe(&ci, sizeof(ci));
	return r;
}

int kite_ktls_send_control(struct kite_conn *c, uint8_t type, const void *buf, size_t len)
{
	char cbuf[CMSG_SPACE(sizeof(type))] = {0};
	struct iovec iov = {(void *)buf, len};
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	ssize_t n;

	/* uapi: a cmsg SOL_TLS/TLS_SET_RECORD_TYPE makes this sendmsg one
	 * record of that content type (flushing any open data record). */
	cm->cmsg_level = SOL_TLS;
	cm->cmsg_type = TLS_SET_RECORD_TYPE;
	cm->cmsg_len = CMSG_LEN(sizeof(type));
	memcpy(CMSG_DATA(cm), &type, sizeof(type));
	do
		n = kite_sys->sendmsg(c->fd, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
	if ((size_t)n != len)
		return kite_conn_fail(c, -EIO, "short control record (%zd of %zu bytes)", n, len);
	c->tx_estimate += 2;
	return 0;
}

static int read_tx_seq(struct kite_conn *c, uint64_t *seq)
{
	/* uapi: getsockopt(TLS_TX) wants exactly the cipher's struct size
	 * (EINVAL otherwise, even for a larger buffer). */
	static const socklen_t sizes[KITE_CIPHER_COUNT] = {
		[KITE_AES_128_GCM] = sizeof(struct tls12_crypto_info_aes_gcm_128),
		[KITE_AES_256_GCM] = sizeof(struct tls12_crypto_info_aes_gcm_256),
		[KITE_CHACHA20_POLY1305] = sizeof(struct tls12_crypto_info_chacha20_poly1305),
		[KITE_AES_128_CCM] = sizeof(struct tls12_crypto_info_aes_ccm_128),
	};
	union kite_crypto_info ci;
	socklen_t len = sizes[c->cipher];
	const uint8_t *rs;
	int r = 0;

	/* uapi: getsockopt(TLS_TX) returns the crypto_info with the current
	 * rec_seq - and the key, which is wiped at once. */
	if (kite_sys->getsockopt(c->fd, SOL_TLS, TLS_TX, &ci, &len)) {
		r = -errno;
		goto out;
	}
	switch (ci.base.cipher_type) {
	case TLS_CIPHER_AES_GCM_128: rs = ci.gcm128.rec_seq; break;
	case TLS_CIPHER_AES_GCM_256: rs = ci.gcm256.rec_seq; break;
	case TLS_CIPHER_AES_CCM_128: rs = ci.ccm128.rec_seq; break;
	case TLS_CIPHER_CHACHA20_POLY1305: rs = ci.chacha.rec_seq; break;
	default: r = -EIO; goto out;
	}
	*seq = be64(rs);
out:
	kite_wipe(&ci, sizeof(ci));
	return r;
}

int kite_ktls_account(struct kite_conn *c, size_t calls, size_t len)
{
	uint64_t seq = 0, limit = kite_aead_record_limit(c->cipher);
	int r;

	/* Upper bound on records: each call may close an open record and
	 * start a new one, and a record holds at least 1 KiB of a bulk call
	 * (in practice 16 KiB). The TX path caps one call's length so that
	 * the margin cannot be overrun between two read-backs. */
	c->tx_estimate += 2 * calls + len / 1024;
	if (c->tx_estimate < KITE_CHECK_EVERY && c->tx_records + c->tx_estimate + KITE_LIMIT_MARGIN < limit)
		return 0;
	r = read_tx_seq(c, &seq);
	if (r)
		return kite_conn_fail(c, r, "reading TLS_TX rec_seq: %s", kite_strerror(r));
	c->tx_records = seq;
	c->tx_estimate = 0;
	if (seq + KITE_LIMIT_MARGIN < limit)
		return 0;

	if (c->version == KITE_TLS13 && kite_caps_get()->rekey == 0 && c->secret_len[KITE_TX])
		return kite_key_update(c);
	/* No way to change the key: close before the limit, cleanly. */
	r = kite_ktls_send_control(c, KITE_CT_ALERT, (const uint8_t[]){1, 0}, 2);
	c->tx_closed = true;
	c->dead = -EKEYEXPIRED;
	return kite_conn_fail(c, -EKEYEXPIRED,
			      "%s key reached its usage limit (%llu records) and this kernel "
			      "cannot update it; connection closed%s",
			      kite_cipher_name(c->cipher), (unsigned long long)seq,
			      r ? " (close_notify not sent)" : "");
}

int kite_key_update(struct kite_conn *c)
{
	static const uint8_t msg[5] = {KITE_HS_KEY_UPDATE, 0, 0, 1, 0 /* update_not_requested */};
	int r;

	if (!c || !c->handshake_done)
		return -EINVAL;
	if (c->dead)
		return c->dead;
	if (c->version != KITE_TLS13)
		return kite_conn_fail(c, -EOPNOTSUPP, "key update exists only in TLS 1.3");
	if (!c->ktls[KITE_TX]) {
		r = gnutls_session_key_update(c->s, 0);
		if (r < 0)
			return kite_gnutls_err(c, r, "key update");
		c->key_updates[KITE_TX]++;
		return 0;
	}
	/* Check before the KeyUpdate goes out: once the peer reads it, it
	 * expects the next key, so installing it must not be able to fail
	 * for a reason known in advance. */
	if (kite_caps_get()->rekey)
		return kite_conn_fail(c, -EOPNOTSUPP, "%s", kite_caps_get()->rekey_reason);
	if (!c->secret_len[KITE_TX])
		return kite_conn_fail(c, -EOPNOTSUPP, "tx traffic secret not available");
	r = kite_ktls_send_control(c, KITE_CT_HANDSHAKE, msg, 5);
	if (r)
		return r;
	r = kite_ktls_rekey(c, KITE_TX);
	if (r) {
		/* The peer now expects the new key: nothing safe can be sent. */
		c->dead = -EKEYEXPIRED;
		c->tx_closed = true;
	}
	return r;
}
