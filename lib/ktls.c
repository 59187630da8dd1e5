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

struct cipher_desc {
	const char *name;
	gnutls_cipher_algorithm_t gnutls;
	gnutls_mac_algorithm_t hash; /* TLS 1.3 HKDF hash of the suites using it */
	uint16_t kernel;             /* TLS_CIPHER_* */
	uint8_t key_len;
	uint8_t salt_len;            /* kernel `salt` field */
	uint8_t iv_len;              /* kernel `iv` field */
	uint64_t limit;              /* records per key, RFC 8446 5.5 */
};

/*
 * RFC 8446 5.5: AES-GCM may protect at most 2^24.5 full-size records per
 * key. AES-CCM has no figure there; RFC 9147 4.5.3 gives 2^23 for
 * confidentiality at comparable margins, used here. ChaCha20-Poly1305's
 * limit lies beyond the 64-bit sequence number space.
 */
static const struct cipher_desc ciphers[KITE_CIPHER_COUNT] = {
	[KITE_AES_128_GCM] = {"AES-128-GCM", GNUTLS_CIPHER_AES_128_GCM, GNUTLS_MAC_SHA256,
			      TLS_CIPHER_AES_GCM_128, 16, 4, 8, 23726566ull},
	[KITE_AES_256_GCM] = {"AES-256-GCM", GNUTLS_CIPHER_AES_256_GCM, GNUTLS_MAC_SHA384,
			      TLS_CIPHER_AES_GCM_256, 32, 4, 8, 23726566ull},
	[KITE_CHACHA20_POLY1305] = {"CHACHA20-POLY1305", GNUTLS_CIPHER_CHACHA20_POLY1305,
				    GNUTLS_MAC_SHA256, TLS_CIPHER_CHACHA20_POLY1305, 32, 0, 12,
				    UINT64_MAX},
	[KITE_AES_128_CCM] = {"AES-128-CCM", GNUTLS_CIPHER_AES_128_CCM, GNUTLS_MAC_SHA256,
			      TLS_CIPHER_AES_CCM_128, 16, 4, 8, 1ull << 23},
};

/* Records kept in reserve below the limit: more than can be sent between
 * two read-backs of rec_seq (see kite_ktls_account()). */
#define KITE_LIMIT_MARGIN (1ull << 20)
/* Pessimistic record estimate after which rec_seq is read back. */
#define KITE_CHECK_EVERY (1ull << 16)

const char *kite_cipher_name(enum kite_cipher c)
{
	return (unsigned)c < KITE_CIPHER_COUNT ? ciphers[c].name : "unknown cipher";
}

const char *kite_version_name(enum kite_version v)
{
	return v == KITE_TLS12 ? "TLS1.2" : v == KITE_TLS13 ? "TLS1.3" : "unknown version";
}

const char *kite_dir_name(enum kite_dir d)
{
	return d == KITE_TX ? "tx" : d == KITE_RX ? "rx" : "?";
}

int kite_version_from_gnutls(gnutls_protocol_t p)
{
	return p == GNUTLS_TLS1_2 ? KITE_TLS12 : p == GNUTLS_TLS1_3 ? KITE_TLS13 : -1;
}

int kite_cipher_from_gnutls(gnutls_cipher_algorithm_t g)
{
	for (int i = 0; i < KITE_CIPHER_COUNT; i++)
		if (ciphers[i].gnutls == g)
			return i;
	return -1;
}

gnutls_cipher_algorithm_t kite_cipher_to_gnutls(enum kite_cipher c)
{
	return ciphers[c].gnutls;
}

uint64_t kite_aead_record_limit(enum kite_cipher c)
{
	return ciphers[c].limit;
}

size_t kite_cipher_key_len(enum kite_cipher c)
{
	return ciphers[c].key_len;
}

size_t kite_cipher_secret_len(enum kite_cipher c)
{
	return gnutls_hash_get_len((gnutls_digest_algorithm_t)ciphers[c].hash);
}

int kite_crypto_info_build(union kite_crypto_info *ci, enum kite_version v, enum kite_cipher c,
			   const struct kite_keys *k)
{
	const struct cipher_desc *d;
	uint8_t *iv, *key, *salt, *seq;
	size_t size;

	memset(ci, 0, sizeof(*ci));
	if ((unsigned)c >= KITE_CIPHER_COUNT || (v != KITE_TLS12 && v != KITE_TLS13))
		return -EOPNOTSUPP;
	d = &ciphers[c];
	if (k->key_len != d->key_len)
		return -EINVAL;
	/*
	 * GnuTLS's write IV: 12 bytes in TLS 1.3 (RFC 8446 5.3); in TLS 1.2 the
	 * implicit part only: 4 bytes for GCM/CCM (RFC 5288 3), all 12 for
	 * ChaCha20-Poly1305 (RFC 7905 2).
	 */
	if (k->iv_len != (v == KITE_TLS13 || c == KITE_CHACHA20_POLY1305 ? 12u : d->salt_len))
		return -EINVAL;

	/* Every tls12_crypto_info_* is { info; iv; key; salt; rec_seq } with
	 * byte arrays only, so the fields follow each other without padding. */
	switch (c) {
	case KITE_AES_128_GCM:
		iv = ci->gcm128.iv, key = ci->gcm128.key, salt = ci->gcm128.salt;
		seq = ci->gcm128.rec_seq, size = sizeof(ci->gcm128);
		break;
	case KITE_AES_256_GCM:
		iv = ci->gcm256.iv, key = ci->gcm256.key, salt = ci->gcm256.salt;
		seq = ci->gcm256.rec_seq, size = sizeof(ci->gcm256);
		break;
	case KITE_AES_128_CCM:
		iv = ci->ccm128.iv, key = ci->ccm128.key, salt = ci->ccm128.salt;
		seq = ci->ccm128.rec_seq, size = sizeof(ci->ccm128);
		break;
	case KITE_CHACHA20_POLY1305:
		iv = ci->chacha.iv, key = ci->chacha.key, salt = NULL;
		seq = ci->chacha.rec_seq, size = sizeof(ci->chacha);
		break;
	default:
		return -EOPNOTSUPP;
	}

	ci->base.version = v == KITE_TLS13 ? TLS_1_3_VERSION : TLS_1_2_VERSION;
	ci->base.cipher_type = d->kernel;
	memcpy(key, k->key, d->key_len);
	if (c == KITE_CHACHA20_POLY1305) {
		/* Kernel nonce = iv XOR padded seq in both versions: the whole
		 * 12-byte IV goes in `iv`, no salt (GnuTLS < 3.8.13 put the
		 * sequence number here for TLS 1.2, which is wrong). */
		memcpy(iv, k->iv, 12);
	} else if (v == KITE_TLS13) {
		/* TLS 1.3 GCM/CCM: the kernel rebuilds the 12-byte nonce as
		 * salt || iv and XORs in the sequence number. */
		memcpy(salt, k->iv, 4);
		memcpy(iv, k->iv + 4, 8);
	} else {
		/* TLS 1.2 GCM/CCM: salt is the implicit IV; `iv` is the first
		 * explicit nonce, which the kernel then increments per record.
		 * Using the sequence number keeps nonces unique (RFC 5288 3). */
		memcpy(salt, k->iv, 4);
		memcpy(iv, k->seq, 8);
	}
	memcpy(seq, k->seq, 8);
	return (int)size;
}

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

/* HKDF-Expand-Label(secret, label, "", len), RFC 8446 7.1. */
static int expand_label(enum kite_cipher c, const uint8_t *secret, size_t slen,
			const char *label, uint8_t *out, size_t len)
{
	uint8_t info[2 + 1 + 6 + 32 + 1];
	size_t ll = strlen(label), n = 0;
	gnutls_datum_t key = {(unsigned char *)secret, (unsigned)slen};
	gnutls_datum_t inf;
	int r;

	info[n++] = (uint8_t)(len >> 8);
	info[n++] = (uint8_t)len;
	info[n++] = (uint8_t)(6 + ll);
	memcpy(info + n, "tls13 ", 6);
	n += 6;
	memcpy(info + n, label, ll);
	n += ll;
	info[n++] = 0; /* empty context */
	inf.data = info, inf.size = (unsigned)n;
	r = gnutls_hkdf_expand(ciphers[c].hash, &key, &inf, out, len);
	return r < 0 ? -EIO : 0;
}

int kite_tls13_next_secret(enum kite_cipher c, const uint8_t *secret, size_t len, uint8_t *next)
{
	return expand_label(c, secret, len, "traffic upd", next, len);
}

int kite_tls13_traffic_keys(enum kite_cipher c, const uint8_t *secret, size_t len, uint8_t *key,
			    size_t key_len, uint8_t iv[12])
{
	int r = expand_label(c, secret, len, "key", key, key_len);

	return r ? r : expand_label(c, secret, len, "iv", iv, 12);
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
