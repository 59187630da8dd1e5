/* SPDX-License-Identifier: MIT */
/*
 * cipher_seal: GnuTLS AEAD encryption of one record's payload, 16 B to
 * 16 KiB (TLS's maximum record), per cipher. This is the ceiling of any
 * userspace TLS sender on this CPU: no socket, no copy to the kernel, just
 * the seal that every record needs. The nonce changes per record and the
 * associated data is a 5-byte TLS 1.3 record header, as in a real record.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>

#include "bench.h"

#define TAG_LEN 16

static void bm_seal(struct kb_state *st, const void *arg)
{
	const struct bench_cipher *c = arg;
	size_t size = (size_t)kb_arg(st, 0), out_len;
	gnutls_aead_cipher_hd_t h = NULL;
	uint8_t keybuf[32], nonce[12] = {0}, aad[5] = {23, 3, 3, 0, 0};
	gnutls_datum_t key = {keybuf, (unsigned)gnutls_cipher_get_key_size(c->gnutls)};
	uint8_t *in = malloc(size), *out = malloc(size + TAG_LEN);
	uint64_t seq = 0;
	int r;

	if (!in || !out) {
		kb_fail(st, "out of memory");
		goto out;
	}
	memset(in, 0xa5, size);
	gnutls_rnd(GNUTLS_RND_NONCE, keybuf, sizeof(keybuf));
	r = gnutls_aead_cipher_init(&h, c->gnutls, &key);
	if (r < 0) {
		kb_skip(st, "GnuTLS has no %s: %s", c->name, gnutls_strerror(r));
		h = NULL;
		goto out;
	}
	aad[3] = (uint8_t)((size + TAG_LEN) >> 8);
	aad[4] = (uint8_t)(size + TAG_LEN);
	while (kb_keep_running(st)) {
		/* Per-record nonce: IV XOR sequence number (RFC 8446 5.3);
		 * here the IV is zero, so the nonce is the sequence number. */
		seq++;
		for (int i = 0; i < 8; i++)
			nonce[11 - i] = (uint8_t)(seq >> (8 * i));
		out_len = size + TAG_LEN;
		r = gnutls_aead_cipher_encrypt(h, nonce, sizeof(nonce), aad, sizeof(aad), TAG_LEN, in,
					       size, out, &out_len);
		if (r < 0) {
			kb_fail(st, "gnutls_aead_cipher_encrypt: %s", gnutls_strerror(r));
			break;
		}
	}
	kb_bytes(st, kb_iterations(st) * (int64_t)size);
	kb_label(st, "GnuTLS %s", gnutls_check_version(NULL));
out:
	if (h)
		gnutls_aead_cipher_deinit(h);
	gnutls_memset(keybuf, 0, sizeof(keybuf));
	free(in);
	free(out);
}

void bench_cipher_register(bool quick)
{
	(void)quick;
	for (int i = 0; i < BENCH_NCIPHERS; i++) {
		char name[64];
		struct kb_bench *b;

		snprintf(name, sizeof(name), "cipher_seal/%s", bench_ciphers[i].name);
		b = kb_register(name, bm_seal, &bench_ciphers[i]);
		/* 16, 64, 256, 1 Ki, 4 Ki, 16 Ki: cheap enough for --quick too. */
		kb_range(b, "size", 16, 16384, 4);
	}
}
