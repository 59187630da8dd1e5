/* SPDX-License-Identifier: MIT */
/*
 * The kernel crypto_info kite builds, byte for byte, for every version and
 * cipher; its error cases; and the TLS 1.3 key schedule (RFC 8446 7.2/7.3)
 * against GnuTLS itself: a real KeyUpdate between two GnuTLS sessions must
 * leave GnuTLS with exactly the key and IV kite derives.
 *
 * Expected structs are written out from the uapi layout rules, never taken
 * from kite_crypto_info_build() itself.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "common.h"
#include "cipher.h"

/* Runs of consecutive byte values: B8(0x10) is 0x10, 0x11, ..., 0x17. */
#define B4(b) (uint8_t)(b), (uint8_t)((b) + 1), (uint8_t)((b) + 2), (uint8_t)((b) + 3)
#define B8(b) B4(b), B4((b) + 4)
#define B12(b) B8(b), B4((b) + 8)
#define B16(b) B8(b), B8((b) + 8)
#define B32(b) B16(b), B16((b) + 16)

/* Known key material: key bytes from 0x10, IV bytes from 0xa0, and a
 * sequence number whose bytes are all distinct from both. */
#define KEY0 0x10
#define IV0 0xa0
#define SEQ 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08

static const uint8_t key_bytes[32] = {B32(KEY0)};
static const uint8_t iv_bytes[12] = {B12(IV0)};
static const uint8_t seq_bytes[8] = {SEQ};

/* Every union byte past the struct must stay zero too: the kernel is
 * handed `size` bytes, but the wipe-on-failure promise covers all. */
static void check_build(const char *what, enum kite_version v, enum kite_cipher c,
			size_t iv_len, const void *expect, size_t expect_size)
{
	union kite_crypto_info ci, want;
	struct kite_keys k = {
		.key = key_bytes, .key_len = kite_cipher_key_len(c),
		.iv = iv_bytes, .iv_len = iv_len,
	};
	int r;

	memcpy(k.seq, seq_bytes, 8);
	memset(&ci, 0xee, sizeof(ci));
	memset(&want, 0, sizeof(want));
	memcpy(&want, expect, expect_size);
	r = kite_crypto_info_build(&ci, v, c, &k);
	t_assert(r == (int)expect_size, "%s: size %d, want %zu", what, r, expect_size);
	t_assert(!memcmp(&ci, &want, sizeof(ci)), "%s: crypto_info bytes differ", what);
}

static void test_layouts(void)
{
	/* TLS 1.3 GCM/CCM: salt = IV[0..4], iv = IV[4..12], rec_seq = seq. */
	struct tls12_crypto_info_aes_gcm_128 g128_13 = {
		.info = {.version = TLS_1_3_VERSION, .cipher_type = TLS_CIPHER_AES_GCM_128},
		.iv = {B8(IV0 + 4)}, .key = {B16(KEY0)}, .salt = {B4(IV0)}, .rec_seq = {SEQ},
	};
	struct tls12_crypto_info_aes_gcm_256 g256_13 = {
		.info = {.version = TLS_1_3_VERSION, .cipher_type = TLS_CIPHER_AES_GCM_256},
		.iv = {B8(IV0 + 4)}, .key = {B32(KEY0)}, .salt = {B4(IV0)}, .rec_seq = {SEQ},
	};
	struct tls12_crypto_info_aes_ccm_128 ccm_13 = {
		.info = {.version = TLS_1_3_VERSION, .cipher_type = TLS_CIPHER_AES_CCM_128},
		.iv = {B8(IV0 + 4)}, .key = {B16(KEY0)}, .salt = {B4(IV0)}, .rec_seq = {SEQ},
	};
	/* ChaCha20-Poly1305, both versions: the whole 12-byte IV, no salt. */
	struct tls12_crypto_info_chacha20_poly1305 cc_13 = {
		.info = {.version = TLS_1_3_VERSION, .cipher_type = TLS_CIPHER_CHACHA20_POLY1305},
		.iv = {B12(IV0)}, .key = {B32(KEY0)}, .rec_seq = {SEQ},
	};
	struct tls12_crypto_info_chacha20_poly1305 cc_12 = {
		.info = {.version = TLS_1_2_VERSION, .cipher_type = TLS_CIPHER_CHACHA20_POLY1305},
		.iv = {B12(IV0)}, .key = {B32(KEY0)}, .rec_seq = {SEQ},
	};
	/* TLS 1.2 GCM/CCM: GnuTLS gives the 4-byte implicit IV = salt; the
	 * explicit nonce starts at the sequence number. */
	struct tls12_crypto_info_aes_gcm_128 g128_12 = {
		.info = {.version = TLS_1_2_VERSION, .cipher_type = TLS_CIPHER_AES_GCM_128},
		.iv = {SEQ}, .key = {B16(KEY0)}, .salt = {B4(IV0)}, .rec_seq = {SEQ},
	};
	struct tls12_crypto_info_aes_gcm_256 g256_12 = {
		.info = {.version = TLS_1_2_VERSION, .cipher_type = TLS_CIPHER_AES_GCM_256},
		.iv = {SEQ}, .key = {B32(KEY0)}, .salt = {B4(IV0)}, .rec_seq = {SEQ},
	};
	struct tls12_crypto_info_aes_ccm_128 ccm_12 = {
		.info = {.version = TLS_1_2_VERSION, .cipher_type = TLS_CIPHER_AES_CCM_128},
		.iv = {SEQ}, .key = {B16(KEY0)}, .salt = {B4(IV0)}, .rec_seq = {SEQ},
	};

	/* The uapi sizes themselves: a changed header would silently change
	 * what "expected" means above. */
	t_assert(sizeof(g128_13) == 4 + 8 + 16 + 4 + 8, "gcm128 size %zu", sizeof(g128_13));
	t_assert(sizeof(g256_13) == 4 + 8 + 32 + 4 + 8, "gcm256 size %zu", sizeof(g256_13));
	t_assert(sizeof(ccm_13) == 4 + 8 + 16 + 4 + 8, "ccm128 size %zu", sizeof(ccm_13));
	t_assert(sizeof(cc_13) == 4 + 12 + 32 + 8, "chacha size %zu", sizeof(cc_13));

	check_build("TLS1.3 AES-128-GCM", KITE_TLS13, KITE_AES_128_GCM, 12, &g128_13, sizeof(g128_13));
	check_build("TLS1.3 AES-256-GCM", KITE_TLS13, KITE_AES_256_GCM, 12, &g256_13, sizeof(g256_13));
	check_build("TLS1.3 CHACHA20", KITE_TLS13, KITE_CHACHA20_POLY1305, 12, &cc_13, sizeof(cc_13));
	check_build("TLS1.3 AES-128-CCM", KITE_TLS13, KITE_AES_128_CCM, 12, &ccm_13, sizeof(ccm_13));
	check_build("TLS1.2 AES-128-GCM", KITE_TLS12, KITE_AES_128_GCM, 4, &g128_12, sizeof(g128_12));
	check_build("TLS1.2 AES-256-GCM", KITE_TLS12, KITE_AES_256_GCM, 4, &g256_12, sizeof(g256_12));
	check_build("TLS1.2 CHACHA20", KITE_TLS12, KITE_CHACHA20_POLY1305, 12, &cc_12, sizeof(cc_12));
	check_build("TLS1.2 AES-128-CCM", KITE_TLS12, KITE_AES_128_CCM, 4, &ccm_12, sizeof(ccm_12));
}

/* A failing build returns err and leaves the whole union zero. */
static void check_fail(const char *what, int v, int c, size_t key_len, size_t iv_len, int err)
{
	static const uint8_t zero[sizeof(union kite_crypto_info)];
	union kite_crypto_info ci;
	struct kite_keys k = {.key = key_bytes, .key_len = key_len, .iv = iv_bytes, .iv_len = iv_len};
	int r;

	memcpy(k.seq, seq_bytes, 8);
	memset(&ci, 0xee, sizeof(ci));
	r = kite_crypto_info_build(&ci, (enum kite_version)v, (enum kite_cipher)c, &k);
	t_assert(r == err, "%s: got %d, want %d", what, r, err);
	t_assert(!memcmp(&ci, zero, sizeof(ci)), "%s: crypto_info not wiped on failure", what);
}

static void test_errors(void)
{
	check_fail("TLS1.3 GCM-128 with a 32-byte key", KITE_TLS13, KITE_AES_128_GCM, 32, 12, -EINVAL);
	check_fail("TLS1.3 GCM-256 with a 16-byte key", KITE_TLS13, KITE_AES_256_GCM, 16, 12, -EINVAL);
	check_fail("TLS1.2 CHACHA with a 16-byte key", KITE_TLS12, KITE_CHACHA20_POLY1305, 16, 12, -EINVAL);
	check_fail("TLS1.2 CCM with a 0-byte key", KITE_TLS12, KITE_AES_128_CCM, 0, 4, -EINVAL);
	check_fail("TLS1.2 GCM with a 12-byte IV", KITE_TLS12, KITE_AES_128_GCM, 16, 12, -EINVAL);
	check_fail("TLS1.2 CCM with a 12-byte IV", KITE_TLS12, KITE_AES_128_CCM, 16, 12, -EINVAL);
	check_fail("TLS1.3 GCM with a 4-byte IV", KITE_TLS13, KITE_AES_128_GCM, 16, 4, -EINVAL);
	check_fail("TLS1.3 GCM-256 with an 8-byte IV", KITE_TLS13, KITE_AES_256_GCM, 32, 8, -EINVAL);
	check_fail("TLS1.2 CHACHA with a 4-byte IV", KITE_TLS12, KITE_CHACHA20_POLY1305, 32, 4, -EINVAL);
	check_fail("TLS1.3 CHACHA with a 4-byte IV", KITE_TLS13, KITE_CHACHA20_POLY1305, 32, 4, -EINVAL);
	check_fail("unknown cipher", KITE_TLS13, KITE_CIPHER_COUNT, 16, 12, -EOPNOTSUPP);
	check_fail("negative cipher", KITE_TLS13, -1, 16, 12, -EOPNOTSUPP);
	check_fail("unknown version", KITE_VERSION_COUNT, KITE_AES_128_GCM, 16, 12, -EOPNOTSUPP);
}

static void test_tables(void)
{
	static const size_t key_len[] = {16, 32, 32, 16}, secret_len[] = {32, 48, 32, 32};
	static const gnutls_cipher_algorithm_t g[] = {
		GNUTLS_CIPHER_AES_128_GCM, GNUTLS_CIPHER_AES_256_GCM,
		GNUTLS_CIPHER_CHACHA20_POLY1305, GNUTLS_CIPHER_AES_128_CCM};

	for (int c = 0; c < KITE_CIPHER_COUNT; c++) {
		t_assert(kite_cipher_key_len(c) == key_len[c], "%s key length %zu",
			 kite_cipher_name(c), kite_cipher_key_len(c));
		t_assert(kite_cipher_secret_len(c) == secret_len[c], "%s secret length %zu",
			 kite_cipher_name(c), kite_cipher_secret_len(c));
		t_assert(kite_cipher_from_gnutls(g[c]) == c, "%s from GnuTLS", kite_cipher_name(c));
		t_assert(kite_cipher_to_gnutls(c) == g[c], "%s to GnuTLS", kite_cipher_name(c));
	}
	t_assert(kite_cipher_from_gnutls(GNUTLS_CIPHER_AES_128_CBC) == -1, "CBC is not offloadable");
	t_assert(kite_version_from_gnutls(GNUTLS_TLS1_2) == KITE_TLS12, "TLS 1.2");
	t_assert(kite_version_from_gnutls(GNUTLS_TLS1_3) == KITE_TLS13, "TLS 1.3");
	t_assert(kite_version_from_gnutls(GNUTLS_TLS1_1) == -1, "TLS 1.1 is not offloadable");

	/* RFC 8446 5.5: 2^24.5 full records per AES-GCM key, rounded down. */
	t_assert(kite_aead_record_limit(KITE_AES_128_GCM) == 23726566ull, "GCM-128 limit %llu",
		 (unsigned long long)kite_aead_record_limit(KITE_AES_128_GCM));
	t_assert(kite_aead_record_limit(KITE_AES_256_GCM) == 23726566ull, "GCM-256 limit %llu",
		 (unsigned long long)kite_aead_record_limit(KITE_AES_256_GCM));
	/* CCM: a finite limit no larger than GCM's, but far above the 2^20
	 * records kite keeps in reserve, or every connection would rekey. */
	t_assert(kite_aead_record_limit(KITE_AES_128_CCM) <= 23726566ull &&
		 kite_aead_record_limit(KITE_AES_128_CCM) >= (1ull << 22), "CCM limit %llu",
		 (unsigned long long)kite_aead_record_limit(KITE_AES_128_CCM));
	/* ChaCha20-Poly1305's limit is beyond any sequence number we reach. */
	t_assert(kite_aead_record_limit(KITE_CHACHA20_POLY1305) >= (1ull << 62), "ChaCha limit %llu",
		 (unsigned long long)kite_aead_record_limit(KITE_CHACHA20_POLY1305));
}

/* ---- TLS 1.3 key schedule against GnuTLS -------------------------------- */

struct captured {
	uint8_t secret[KITE_MAX_SECRET];
	unsigned len;
};

static int keylog(gnutls_session_t s, const char *label, const gnutls_datum_t *secret)
{
	struct captured *cap = gnutls_session_get_ptr(s);

	if (strcmp(label, "CLIENT_TRAFFIC_SECRET_0") || secret->size > sizeof(cap->secret))
		return 0;
	memcpy(cap->secret, secret->data, secret->size);
	cap->len = secret->size;
	return 0;
}

static void *server_handshake(void *arg)
{
	gnutls_session_t s = arg;
	intptr_t r;

	do
		r = gnutls_handshake(s);
	while (r < 0 && !gnutls_error_is_fatal((int)r));
	return (void *)r;
}

/* Compare GnuTLS's current client write key and IV with kite's derivation
 * from `secret`. */
static void check_write_state(gnutls_session_t client, enum kite_cipher c, const uint8_t *secret,
			      size_t len, int gen)
{
	uint8_t key[32], iv[12], seq[8];
	gnutls_datum_t gkey, giv;
	int r;

	r = gnutls_record_get_state(client, 0, NULL, &giv, &gkey, seq);
	t_assert(r == 0, "gnutls_record_get_state: %s", gnutls_strerror(r));
	t_ok(kite_tls13_traffic_keys(c, secret, len, key, kite_cipher_key_len(c), iv));
	t_assert(gkey.size == kite_cipher_key_len(c) && giv.size == 12,
		 "%s generation %d: GnuTLS key %u, iv %u bytes", kite_cipher_name(c), gen,
		 gkey.size, giv.size);
	t_assert(!memcmp(gkey.data, key, gkey.size), "%s generation %d: key differs from GnuTLS",
		 kite_cipher_name(c), gen);
	t_assert(!memcmp(giv.data, iv, 12), "%s generation %d: IV differs from GnuTLS",
		 kite_cipher_name(c), gen);
}

static void test_key_schedule(const struct t_creds *cr, enum kite_cipher c)
{
	gnutls_certificate_credentials_t scred = NULL, ccred = NULL;
	gnutls_session_t srv = NULL, cli = NULL;
	struct captured cap = {0};
	uint8_t secret[KITE_MAX_SECRET], next[KITE_MAX_SECRET];
	char buf[16];
	pthread_t th;
	void *sr;
	int fds[2], r;

	t_tcp_pair(fds);
	if (gnutls_certificate_allocate_credentials(&scred) < 0 ||
	    gnutls_certificate_allocate_credentials(&ccred) < 0 ||
	    gnutls_certificate_set_x509_key_file(scred, cr->cert, cr->key, GNUTLS_X509_FMT_PEM) < 0 ||
	    gnutls_init(&srv, GNUTLS_SERVER | GNUTLS_NO_TICKETS) < 0 ||
	    gnutls_init(&cli, GNUTLS_CLIENT) < 0 ||
	    gnutls_priority_set_direct(srv, t_priority(KITE_TLS13, c), NULL) < 0 ||
	    gnutls_priority_set_direct(cli, t_priority(KITE_TLS13, c), NULL) < 0 ||
	    gnutls_credentials_set(srv, GNUTLS_CRD_CERTIFICATE, scred) < 0 ||
	    gnutls_credentials_set(cli, GNUTLS_CRD_CERTIFICATE, ccred) < 0)
		t_fail("GnuTLS session setup for %s", kite_cipher_name(c));
	gnutls_transport_set_int(srv, fds[1]);
	gnutls_transport_set_int(cli, fds[0]);
	gnutls_session_set_ptr(cli, &cap);
	gnutls_session_set_keylog_function(cli, keylog);

	if (pthread_create(&th, NULL, server_handshake, srv))
		t_fail("pthread_create");
	do
		r = gnutls_handshake(cli);
	while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0)
		shutdown(fds[0], SHUT_RDWR); /* don't leave the server waiting */
	pthread_join(th, &sr);
	t_assert(r == 0, "client handshake (%s): %s", kite_cipher_name(c), gnutls_strerror(r));
	t_assert((intptr_t)sr == 0, "server handshake: %s", gnutls_strerror((int)(intptr_t)sr));
	t_assert(gnutls_protocol_get_version(cli) == GNUTLS_TLS1_3, "not TLS 1.3");
	t_assert(kite_cipher_from_gnutls(gnutls_cipher_get(cli)) == (int)c, "negotiated %s",
		 gnutls_cipher_get_name(gnutls_cipher_get(cli)));
	t_assert(cap.len == kite_cipher_secret_len(c), "%s: captured secret of %u bytes",
		 kite_cipher_name(c), cap.len);
	memcpy(secret, cap.secret, cap.len);

	/* Generation 0 checks kite_tls13_traffic_keys() alone. */
	check_write_state(cli, c, secret, cap.len, 0);
	for (int gen = 1; gen <= 2; gen++) {
		r = gnutls_session_key_update(cli, 0);
		t_assert(r == 0, "gnutls_session_key_update: %s", gnutls_strerror(r));
		/* The server must read the KeyUpdate and then data under the
		 * new key: proves GnuTLS's new key is the one on the wire. */
		r = (int)gnutls_record_send(cli, "ku", 2);
		t_assert(r == 2, "send after key update: %s", gnutls_strerror(r));
		do
			r = (int)gnutls_record_recv(srv, buf, sizeof(buf));
		while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
		t_assert(r == 2 && !memcmp(buf, "ku", 2), "server read %d: %s", r,
			 r < 0 ? gnutls_strerror(r) : "wrong bytes");

		t_ok(kite_tls13_next_secret(c, secret, cap.len, next));
		t_assert(memcmp(next, secret, cap.len), "next secret equals the old one");
		memcpy(secret, next, cap.len);
		check_write_state(cli, c, secret, cap.len, gen);
	}

	gnutls_deinit(cli);
	gnutls_deinit(srv);
	gnutls_certificate_free_credentials(ccred);
	gnutls_certificate_free_credentials(scred);
	close(fds[0]);
	close(fds[1]);
}

int main(void)
{
	struct t_creds cr;

	test_layouts();
	test_errors();
	test_tables();
	t_make_creds(&cr);
	test_key_schedule(&cr, KITE_AES_128_GCM);
	test_key_schedule(&cr, KITE_AES_256_GCM);
	test_key_schedule(&cr, KITE_CHACHA20_POLY1305);
	printf("PASS\n");
	return 0;
}
