/* SPDX-License-Identifier: MIT */
/*
 * Certificates by server name. A context's main credentials hold every
 * pair, which is enough for TLS 1.3: GnuTLS matches the SNI first and the
 * signature algorithm after. TLS 1.2 is different: the cipher suite names
 * the key type and GnuTLS chooses the suite before it looks at the name,
 * so a client that ranks ECDHE-ECDSA first gets the ECDSA pair of another
 * site. Pairs are therefore also grouped by the name their certificate is
 * for (an ECDSA and an RSA pair for one site make one group), and right
 * after the ClientHello the group matching its SNI becomes the session's
 * credentials, before any suite is chosen.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/x509.h>

#include "kite-private.h"

struct kite_sni_group {
	char name[256];       /* the certificate's first DNS name (or CN) */
	gnutls_x509_crt_t crt;
	gnutls_certificate_credentials_t cred;
	unsigned n;           /* pairs in cred */
};

static int first_name(gnutls_x509_crt_t crt, char *out, size_t cap)
{
	for (unsigned i = 0;; i++) {
		size_t n = cap;
		unsigned crit;
		int t = gnutls_x509_crt_get_subject_alt_name(crt, i, out, &n, &crit);

		if (t == GNUTLS_SAN_DNSNAME)
			return 0;
		if (t < 0)
			break;
	}
	cap--; /* the DN call counts the NUL in */
	return gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, out, &cap) < 0
		? -ENOENT : 0;
}

static struct kite_sni_group *group_for(struct kite_ctx *ctx, const char *name)
{
	struct kite_sni_group *g;

	for (unsigned i = 0; i < ctx->nsni; i++)
		if (!strcasecmp(ctx->sni[i].name, name))
			return &ctx->sni[i];
	g = realloc(ctx->sni, (ctx->nsni + 1) * sizeof(*g));
	if (!g)
		return NULL;
	ctx->sni = g;
	g = &ctx->sni[ctx->nsni];
	memset(g, 0, sizeof(*g));
	snprintf(g->name, sizeof(g->name), "%s", name);
	if (gnutls_certificate_allocate_credentials(&g->cred) < 0)
		return NULL;
	gnutls_certificate_set_flags(g->cred, GNUTLS_CERTIFICATE_API_V2);
	ctx->nsni++;
	return g;
}

int kite_sni_add(struct kite_ctx *ctx, const gnutls_datum_t *cert, const gnutls_datum_t *key)
{
	gnutls_x509_crt_t crt;
	struct kite_sni_group *g;
	char name[256];
	int r;

	if (gnutls_x509_crt_init(&crt) < 0)
		return -ENOMEM;
	r = gnutls_x509_crt_import(crt, cert, GNUTLS_X509_FMT_PEM) < 0 ||
	    first_name(crt, name, sizeof(name)) ? -EINVAL : 0;
	g = r ? NULL : group_for(ctx, name);
	if (!r && !g)
		r = -ENOMEM;
	if (!r && gnutls_certificate_set_x509_key_mem(g->cred, cert, key, GNUTLS_X509_FMT_PEM) < 0)
		r = -EINVAL;
	if (r) {
		gnutls_x509_crt_deinit(crt);
		/* A certificate without a name still serves as a default. */
		ctx->sni_last = NULL;
		return r == -EINVAL ? 0 : r;
	}
	if (!g->crt)
		g->crt = crt;
	else
		gnutls_x509_crt_deinit(crt);
	ctx->sni_last = g;
	ctx->sni_last_idx = g->n++;
	return 0;
}

int kite_sni_set_ocsp(struct kite_ctx *ctx, const gnutls_datum_t *der)
{
	struct kite_sni_group *g = ctx->sni_last;

	if (!g)
		return 0;
	return gnutls_certificate_set_ocsp_status_request_mem(g->cred, der, ctx->sni_last_idx,
							      GNUTLS_X509_FMT_DER) < 0 ? -EINVAL : 0;
}

void kite_sni_free(struct kite_ctx *ctx)
{
	for (unsigned i = 0; i < ctx->nsni; i++) {
		gnutls_certificate_free_credentials(ctx->sni[i].cred);
		gnutls_x509_crt_deinit(ctx->sni[i].crt);
	}
	free(ctx->sni);
	ctx->sni = NULL;
	ctx->nsni = 0;
}

/* GnuTLS calls this once the ClientHello is parsed, before it picks the
 * cipher suite and certificate: the credentials set here are the ones it
 * picks from. No SNI, or no group for it: the main credentials (all
 * pairs, the first one the default). */
static int sni_select(gnutls_session_t s)
{
	/* The transport pointer: the session pointer may be an embedder's. */
	struct kite_conn *c = gnutls_transport_get_ptr(s);
	const struct kite_ctx *ctx = c->ctx;
	char name[256];
	size_t n = sizeof(name);
	unsigned type;

	if (gnutls_server_name_get(s, name, &n, &type, 0) < 0 || type != GNUTLS_NAME_DNS)
		return 0;
	for (unsigned i = 0; i < ctx->nsni; i++)
		if (gnutls_x509_crt_check_hostname2(ctx->sni[i].crt, name, 0))
			return gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, ctx->sni[i].cred);
	return 0;
}

void kite_sni_attach(struct kite_conn *c)
{
	/* One site: the main credentials are that site's. */
	if (c->ctx->nsni > 1)
		gnutls_handshake_set_post_client_hello_function(c->s, sni_select);
}
