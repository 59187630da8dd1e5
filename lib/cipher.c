/* SPDX-License-Identifier: MIT */
/*
 * The AEADs kite can hand to the kernel: their table, GnuTLS <-> kite
 * mapping, the kernel's crypto_info built from GnuTLS's record state, usage
 * limits and the TLS 1.3 key schedule step for rekeying. Pure computation:
 * no syscalls, no connection state, so the capability probe (caps.c) and
 * the key handoff (ktls.c) share it without depending on each other.
 */
#include <errno.h>
#include <string.h>

#include <gnutls/crypto.h>

#include "cipher.h"

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
