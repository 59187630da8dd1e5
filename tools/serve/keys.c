/* SPDX-License-Identifier: MIT */
/*
 * kite-serve's TLS material: certificates, private keys, OCSP responses
 * and the ticket key, read into memory and handed to a new kite context at
 * start and on every SIGHUP. Each file's descriptor is opened at start and
 * kept, so a reload still works after --user dropped root (see deploy.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "deploy.h"

/* Certificates, keys and OCSP responses are small; a bigger file is a
 * mistake (a wrong path), not something to read into memory. */
#define KEYFILE_MAX (1u << 20)

static int keyfile_open(struct keyfile *k, const char *path, bool secret)
{
	k->path = path;
	k->secret = secret;
	k->fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	return path && k->fd < 0 ? -errno : 0;
}

static void keyfile_close(struct keyfile *k)
{
	if (k->fd >= 0)
		close(k->fd);
	k->fd = -1;
}

/* The descriptor to read: the path opened now if we may (it follows a
 * rename), else the one kept from start-up. */
static int keyfile_fd(struct keyfile *k)
{
	int fd = open(k->path, O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		keyfile_close(k);
		k->fd = fd;
		return 0;
	}
	/* EACCES: the file is root's and we are not any more. */
	if ((errno == EACCES || errno == EPERM) && k->fd >= 0)
		return 0;
	return -errno;
}

/*
 * The whole file into *out (malloc'd; the caller wipes a secret's buffer
 * and frees it). Refuses a secret others can read or write unless
 * insecure. 0 or -errno with err filled.
 */
static int keyfile_read(struct keyfile *k, bool insecure, gnutls_datum_t *out, char *err,
			size_t cap)
{
	struct stat st;
	unsigned char *buf;
	size_t n = 0;
	int r = keyfile_fd(k);

	out->data = NULL;
	out->size = 0;
	if (!r && fstat(k->fd, &st))
		r = -errno;
	if (r) {
		snprintf(err, cap, "%s: %s", k->path, strerror(-r));
		return r;
	}
	/* A key others can read is a key others have. */
	if (k->secret && (st.st_mode & (S_IROTH | S_IWOTH)) && !insecure) {
		snprintf(err, cap, "%s is accessible to other users (chmod o-rw %s, or "
			 "--allow-insecure-key-perms)", k->path, k->path);
		return -EPERM;
	}
	if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > KEYFILE_MAX) {
		snprintf(err, cap, "%s: %s", k->path, S_ISREG(st.st_mode)
			 ? "empty or larger than 1 MiB" : "not a regular file");
		return -EINVAL;
	}
	buf = malloc((size_t)st.st_size);
	if (!buf)
		return -ENOMEM;
	/* pread from 0: the kept descriptor's offset is not ours to trust. */
	while (n < (size_t)st.st_size) {
		ssize_t got = pread(k->fd, buf + n, (size_t)st.st_size - n, (off_t)n);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		n += (size_t)got;
	}
	if (n != (size_t)st.st_size) {
		gnutls_memset(buf, 0, (size_t)st.st_size);
		free(buf);
		snprintf(err, cap, "%s: short read (changed while read?)", k->path);
		return -EIO;
	}
	out->data = buf;
	out->size = (unsigned)n;
	return 0;
}

static void datum_wipe(gnutls_datum_t *d)
{
	if (d->data) {
		gnutls_memset(d->data, 0, d->size);
		free(d->data);
	}
	d->data = NULL;
	d->size = 0;
}

int tls_files_open(struct tls_files *tf, const struct serve_config *c, char *err, size_t cap)
{
	struct keyfile *bad = NULL;
	int r = 0;

	for (unsigned i = 0; i < SERVE_MAX_SITES; i++)
		tf->cert[i].fd = tf->key[i].fd = tf->ocsp[i].fd = -1;
	tf->ticket.fd = -1;
	for (unsigned i = 0; i < c->nsite && !r; i++) {
		if ((r = keyfile_open(&tf->cert[i], c->site[i].cert, false)))
			bad = &tf->cert[i];
		else if ((r = keyfile_open(&tf->key[i], c->site[i].key, true)))
			bad = &tf->key[i];
		else if ((r = keyfile_open(&tf->ocsp[i], c->site[i].ocsp, false)))
			bad = &tf->ocsp[i];
	}
	if (!r && (r = keyfile_open(&tf->ticket, c->ticket_key_file, true)))
		bad = &tf->ticket;
	if (r)
		snprintf(err, cap, "%s: %s", bad->path, strerror(-r));
	return r;
}

void tls_files_close(struct tls_files *tf)
{
	for (unsigned i = 0; i < SERVE_MAX_SITES; i++) {
		keyfile_close(&tf->cert[i]);
		keyfile_close(&tf->key[i]);
		keyfile_close(&tf->ocsp[i]);
	}
	keyfile_close(&tf->ticket);
}

/* SHA-256 of the first certificate in PEM, as "AB:CD:...". */
static void cert_fingerprint(const gnutls_datum_t *pem, char out[96])
{
	gnutls_x509_crt_t crt = NULL;
	unsigned char md[32];
	size_t n = sizeof(md);

	snprintf(out, 96, "unknown");
	if (gnutls_x509_crt_init(&crt) >= 0 &&
	    gnutls_x509_crt_import(crt, pem, GNUTLS_X509_FMT_PEM) >= 0 &&
	    gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, md, &n) >= 0 && n == 32)
		for (size_t i = 0; i < n; i++)
			snprintf(out + 3 * i, 96 - 3 * i, "%02X%s", md[i], i + 1 < n ? ":" : "");
	gnutls_x509_crt_deinit(crt);
}

/* One --cert/--key pair and its OCSP response into ctx. */
static int add_site(struct kite_ctx *ctx, const struct serve_config *c, struct tls_files *tf,
		    unsigned i, char fp[96], char *warn, size_t wcap, char *err, size_t cap)
{
	gnutls_datum_t cert, key, ocsp = {NULL, 0};
	int r;

	r = keyfile_read(&tf->cert[i], false, &cert, err, cap);
	if (r)
		return r;
	r = keyfile_read(&tf->key[i], c->insecure_key_perms, &key, err, cap);
	if (r)
		goto out;
	if (i == 0)
		cert_fingerprint(&cert, fp);
	r = kite_ctx_add_credentials_mem(ctx, cert.data, cert.size, key.data, key.size);
	if (r) {
		snprintf(err, cap, "%s / %s: %s", c->site[i].cert, c->site[i].key,
			 kite_ctx_error(ctx));
		goto out;
	}
	if (!c->site[i].ocsp)
		goto out;
	r = keyfile_read(&tf->ocsp[i], true, &ocsp, err, cap);
	if (!r)
		r = kite_ctx_set_ocsp_response(ctx, ocsp.data, ocsp.size);
	/* An OCSP response that cannot be stapled costs the client a lookup
	 * of its own; it is no reason to stop serving. */
	if (r) {
		size_t o = strlen(warn);

		snprintf(warn + o, wcap - o, "%s--ocsp-file %s: %s; not stapled", o ? "; " : "",
			 c->site[i].ocsp, r == -EKEYEXPIRED || r == -EINVAL ? kite_ctx_error(ctx)
									: err);
		r = 0;
	}
out:
	datum_wipe(&cert);
	datum_wipe(&key);
	datum_wipe(&ocsp);
	return r;
}

static int set_ticket_key(struct kite_ctx *ctx, const struct serve_config *c,
			  struct tls_files *tf, char *err, size_t cap)
{
	gnutls_datum_t k;
	int r;

	/* Without a shared file each process (and each reload) has its own
	 * random key: resumption still works against it. */
	if (!c->ticket_key_file)
		return kite_ctx_enable_tickets(ctx);
	r = keyfile_read(&tf->ticket, c->insecure_key_perms, &k, err, cap);
	if (r)
		return r;
	r = kite_ctx_set_ticket_key(ctx, k.data, k.size);
	if (r)
		snprintf(err, cap, "%s: want exactly %d bytes (head -c %d /dev/urandom > %s)",
			 c->ticket_key_file, KITE_TICKET_KEY_SIZE, KITE_TICKET_KEY_SIZE,
			 c->ticket_key_file);
	datum_wipe(&k);
	return r;
}

int build_ctx(const struct serve_config *c, struct tls_files *tf, struct kite_ctx **out,
	      char fp[96], char *warn, size_t wcap, char *err, size_t errlen)
{
	static const char *const alpn[] = {"h2", "http/1.1"};
	struct kite_ctx *ctx;
	char detail[300] = "";
	const char *step = "certificate";
	int r;

	*out = NULL;
	warn[0] = 0;
	r = kite_ctx_create(&ctx, KITE_SERVER);
	if (r) {
		snprintf(err, errlen, "context: %s", kite_strerror(r));
		return r;
	}
	for (unsigned i = 0; !r && i < c->nsite; i++)
		r = add_site(ctx, c, tf, i, fp, warn, wcap, detail, sizeof(detail));
	if (!r && !c->nsite) {
		step = "self-signed certificate";
		r = kite_ctx_set_ephemeral_cert(ctx, "localhost", fp);
	}
	if (!r && c->priority) {
		step = "--priority";
		r = kite_ctx_set_priority(ctx, c->priority);
	}
	if (!r) {
		step = "--ktls";
		r = kite_ctx_set_ktls(ctx, c->ktls);
	}
	if (!r) {
		step = "ALPN";
		/* A client without ALPN gets HTTP/1.1 (RFC 9113 3.2 needs h2
		 * to be negotiated). */
		r = c->http2 ? kite_ctx_set_alpn(ctx, alpn, 2) : kite_ctx_set_alpn(ctx, alpn + 1, 1);
	}
	if (!r) {
		step = "session tickets";
		r = set_ticket_key(ctx, c, tf, detail, sizeof(detail));
	}
	if (r) {
		snprintf(err, errlen, "%s: %s", step, detail[0] ? detail : kite_ctx_error(ctx));
		kite_ctx_destroy(ctx);
		return r;
	}
	*out = ctx;
	return 0;
}
