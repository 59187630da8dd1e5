/* SPDX-License-Identifier: MIT */
/* Ephemeral self-signed credentials for demos and zero-configuration servers. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <gnutls/crypto.h>
#include <gnutls/x509.h>

#include "kite-private.h"

int kite_ctx_set_ephemeral_cert(struct kite_ctx *ctx, const char *name, char fingerprint[96])
{
	gnutls_x509_privkey_t key = NULL;
	gnutls_x509_crt_t crt = NULL;
	unsigned char serial[16], fp[32];
	size_t fplen = sizeof(fp);
	time_t now = time(NULL);
	int r;

	if (!ctx || !name || !*name)
		return -EINVAL;
	if (ctx->frozen)
		return -EALREADY;
	r = gnutls_x509_privkey_init(&key);
	if (r >= 0)
		r = gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
						 GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
	if (r >= 0)
		r = gnutls_x509_crt_init(&crt);
	if (r >= 0)
		r = gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial));
	serial[0] &= 0x7f; /* a positive INTEGER */
	if (r >= 0)
		r = gnutls_x509_crt_set_version(crt, 3);
	if (r >= 0)
		r = gnutls_x509_crt_set_serial(crt, serial, sizeof(serial));
	/* Back-dated an hour for clients with a slightly slow clock. */
	if (r >= 0)
		r = gnutls_x509_crt_set_activation_time(crt, now - 3600);
	if (r >= 0)
		r = gnutls_x509_crt_set_expiration_time(crt, now + 30 * 86400);
	if (r >= 0)
		r = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, name,
						  (unsigned)strlen(name));
	if (r >= 0)
		r = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, name,
							 (unsigned)strlen(name), GNUTLS_FSAN_SET);
	if (r >= 0)
		r = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE);
	if (r >= 0)
		r = gnutls_x509_crt_set_key(crt, key);
	if (r >= 0)
		r = gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0);
	if (r >= 0)
		r = gnutls_certificate_set_x509_key(ctx->cred, &crt, 1, key);
	if (r >= 0 && fingerprint)
		r = gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, fp, &fplen);
	if (r < 0) {
		snprintf(ctx->err, sizeof(ctx->err), "self-signed certificate: %s",
			 gnutls_strerror(r));
		r = r == GNUTLS_E_MEMORY_ERROR ? -ENOMEM : -EIO;
		goto out;
	}
	if (fingerprint)
		for (size_t i = 0; i < fplen; i++)
			snprintf(fingerprint + 3 * i, 4, i + 1 < fplen ? "%02X:" : "%02X", fp[i]);
	ctx->have_cred = true;
	r = 0;
out:
	if (crt)
		gnutls_x509_crt_deinit(crt);
	if (key)
		gnutls_x509_privkey_deinit(key); /* wipes the key */
	return r;
}
