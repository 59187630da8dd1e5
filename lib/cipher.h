/* SPDX-License-Identifier: MIT */
/*
 * Cipher module (cipher.c), private to libkite and its tests: what kite
 * knows about each AEAD and how the kernel wants its keys. No syscalls.
 */
#ifndef KITE_CIPHER_H
#define KITE_CIPHER_H

#include <gnutls/gnutls.h>
#include <stddef.h>
#include <stdint.h>

#include "compat.h"
#include "kite.h"

/* Large enough for every tls12_crypto_info_* kite builds. */
union kite_crypto_info {
	struct tls_crypto_info base;
	struct tls12_crypto_info_aes_gcm_128 gcm128;
	struct tls12_crypto_info_aes_gcm_256 gcm256;
	struct tls12_crypto_info_aes_ccm_128 ccm128;
	struct tls12_crypto_info_chacha20_poly1305 chacha;
};

/* Key material for one direction as GnuTLS reports it. */
struct kite_keys {
	const uint8_t *key;
	size_t key_len;
	const uint8_t *iv;   /* TLS 1.3: 12-byte IV; TLS 1.2: implicit IV (GCM/CCM 4, ChaCha 12) */
	size_t iv_len;
	uint8_t seq[8];      /* next record sequence number, big endian */
};

/*
 * Build the kernel's crypto_info for version/cipher from keys. Checks every
 * length first; returns the struct size, or -EINVAL (wrong sizes) /
 * -EOPNOTSUPP (unknown pair). On failure *ci is wiped.
 */
KITE_MUST_CHECK int kite_crypto_info_build(union kite_crypto_info *ci, enum kite_version v,
					   enum kite_cipher c, const struct kite_keys *keys);

/* Map GnuTLS's negotiated algorithms; -1 when kite cannot offload them. */
int kite_version_from_gnutls(gnutls_protocol_t p);
int kite_cipher_from_gnutls(gnutls_cipher_algorithm_t c);
gnutls_cipher_algorithm_t kite_cipher_to_gnutls(enum kite_cipher c);

/* Records an AEAD may protect under one key before it must change
 * (RFC 8446 5.5); the kernel path keeps a margin below it (ktls.c). */
uint64_t kite_aead_record_limit(enum kite_cipher c);

/*
 * TLS 1.3 key schedule step (RFC 8446 7.2):
 *   next = HKDF-Expand-Label(secret, "traffic upd", "", Hash.length)
 * and traffic keys (7.3) key = HKDF-Expand-Label(secret, "key", "", key_len),
 * iv = HKDF-Expand-Label(secret, "iv", "", 12). Secrets are <= 48 bytes.
 */
#define KITE_MAX_SECRET 48
KITE_MUST_CHECK int kite_tls13_next_secret(enum kite_cipher c, const uint8_t *secret,
					   size_t len, uint8_t *next);
KITE_MUST_CHECK int kite_tls13_traffic_keys(enum kite_cipher c, const uint8_t *secret,
					    size_t len, uint8_t *key, size_t key_len,
					    uint8_t iv[12]);
size_t kite_cipher_key_len(enum kite_cipher c);
size_t kite_cipher_secret_len(enum kite_cipher c);

#endif /* KITE_CIPHER_H */
