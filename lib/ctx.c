/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include "kite-private.h"

static int ctx_fail(struct kite_ctx *ctx, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int ctx_fail(struct kite_ctx *ctx, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ctx->err, sizeof(ctx->err), fmt, ap);
	va_end(ap);
	return err;
}

const char *kite_ctx_error(const struct kite_ctx *ctx)
{
	return ctx && ctx->err[0] ? ctx->err : "no error";
}

/* Does this CPU encrypt AES in hardware? GnuTLS's AES-GCM then runs
 * several times faster than its ChaCha20-Poly1305, and so does the
 * kernel's. */
static bool cpu_has_aes(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	return __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
#elif defined(__aarch64__)
	return (getauxval(AT_HWCAP) & HWCAP_AES) && (getauxval(AT_HWCAP) & HWCAP_PMULL);
#else
	return false;
#endif
}

static bool offloadable(const struct kite_caps *caps, enum kite_cipher c)
{
	bool ok = false;

	for (int v = 0; v < KITE_VERSION_COUNT; v++)
		ok |= !caps->offload[v][c][KITE_TX] && !caps->offload[v][c][KITE_RX];
	return ok;
}

/*
 * The default priority: TLS 1.3 and 1.2, AEADs only, in the server's order
 * (%SERVER_PRECEDENCE: the client's order decides only among what the
 * server ranks equal, which is nothing here). First the AEADs the kernel
 * accepted in the probe, so that a default connection is offloaded when the
 * client allows it; then the others kite could offload elsewhere, run in
 * userspace, rather than no handshake at all. Within each group AES-GCM
 * leads on a CPU with AES instructions and ChaCha20-Poly1305 on one
 * without. AES-128-CCM only where the kernel takes it (GnuTLS offers no
 * fast userspace CCM).
 */
static char *default_priority(void)
{
	static const enum kite_cipher aes_cpu[] = {KITE_AES_128_GCM, KITE_AES_256_GCM,
						   KITE_CHACHA20_POLY1305, KITE_AES_128_CCM};
	static const enum kite_cipher soft_cpu[] = {KITE_CHACHA20_POLY1305, KITE_AES_128_GCM,
						    KITE_AES_256_GCM, KITE_AES_128_CCM};
	const struct kite_caps *caps = kite_caps_get();
	const enum kite_cipher *order = cpu_has_aes() ? aes_cpu : soft_cpu;
	char buf[256] = "NORMAL:%SERVER_PRECEDENCE:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL";

	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < 4; i++) {
			enum kite_cipher c = order[i];
			bool off = offloadable(caps, c);

			if ((pass == 0) != off || (c == KITE_AES_128_CCM && !off))
				continue;
			strcat(buf, ":+");
			strcat(buf, kite_cipher_name(c));
		}
	return strdup(buf);
}

int kite_ctx_create(struct kite_ctx **out, enum kite_role role)
{
	struct kite_ctx *ctx;
	int r;

	if (!out || (role != KITE_SERVER && role != KITE_CLIENT))
		return -EINVAL;
	*out = NULL;
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	atomic_init(&ctx->refs, 1);
	atomic_init(&ctx->frozen, false);
	ctx->role = role;
	ctx->ktls_flags = KITE_KTLS_DEFAULT;
	ctx->verify = true;
	if (gnutls_certificate_allocate_credentials(&ctx->cred) < 0) {
		free(ctx);
		return -ENOMEM;
	}
	/* Loading a pair then returns its index, which an OCSP response
	 * names; GnuTLS picks among the pairs by SNI and by the client's
	 * signature algorithms, the first pair when nothing matches. */
	gnutls_certificate_set_flags(ctx->cred, GNUTLS_CERTIFICATE_API_V2);
	r = kite_ctx_set_priority(ctx, NULL);
	if (r) {
		kite_ctx_destroy(ctx);
		return r;
	}
	*out = ctx;
	return 0;
}

void kite_ctx_ref(struct kite_ctx *ctx)
{
	atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
}

void kite_ctx_destroy(struct kite_ctx *ctx)
{
	if (!ctx)
		return;
	/* acq_rel: the last owner must see every other owner's writes. */
	if (atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (ctx->prio)
		gnutls_priority_deinit(ctx->prio);
	if (ctx->cred)
		gnutls_certificate_free_credentials(ctx->cred);
	kite_sni_free(ctx);
	if (ctx->ticket_key.data) {
		kite_wipe(ctx->ticket_key.data, ctx->ticket_key.size);
		gnutls_free(ctx->ticket_key.data);
	}
	for (unsigned i = 0; i < ctx->nalpn; i++)
		free(ctx->alpn[i].data);
	free(ctx->prio_str);
	free(ctx);
}

static int check_mutable(struct kite_ctx *ctx)
{
	if (!ctx)
		return -EINVAL;
	if (atomic_load(&ctx->frozen))
		return ctx_fail(ctx, -EALREADY, "context already in use by a connection");
	return 0;
}

int kite_ctx_set_credentials(struct kite_ctx *ctx, const char *cert, const char *key)
{
	struct stat st;
	int r = check_mutable(ctx);

	if (r)
		return r;
	if (!cert || !key)
		return ctx_fail(ctx, -EINVAL, "certificate and key files are both required");
	if (stat(key, &st))
		return ctx_fail(ctx, -errno, "private key %s: %s", key, kite_strerror(-errno));
	/* A key others can read is a key others have. */
	if ((st.st_mode & (S_IROTH | S_IWOTH)) && !ctx->insecure_key_perms)
		return ctx_fail(ctx, -EPERM,
				"private key %s is accessible to other users (chmod o-rw %s)", key,
				key);
	{
		gnutls_datum_t c = {NULL, 0}, k = {NULL, 0};

		if (gnutls_load_file(cert, &c) < 0 || gnutls_load_file(key, &k) < 0)
			r = ctx_fail(ctx, -ENOENT, "loading %s / %s: %s", cert, key,
				     gnutls_strerror(GNUTLS_E_FILE_ERROR));
		else
			r = kite_ctx_add_credentials_mem(ctx, c.data, c.size, k.data, k.size);
		if (k.data)
			kite_wipe(k.data, k.size);
		gnutls_free(k.data);
		gnutls_free(c.data);
	}
	return r;
}

int kite_ctx_add_credentials_mem(struct kite_ctx *ctx, const void *cert, size_t cert_len,
				 const void *key, size_t key_len)
{
	gnutls_datum_t c = {(unsigned char *)cert, (unsigned)cert_len};
	gnutls_datum_t k = {(unsigned char *)key, (unsigned)key_len};
	int r = check_mutable(ctx);

	if (r)
		return r;
	if (!cert || !key || !cert_len || !key_len || cert_len > UINT32_MAX || key_len > UINT32_MAX)
		return ctx_fail(ctx, -EINVAL, "certificate and key are both required");
	r = gnutls_certificate_set_x509_key_mem(ctx->cred, &c, &k, GNUTLS_X509_FMT_PEM);
	if (r < 0)
		return ctx_fail(ctx, -EINVAL, "loading certificate and key: %s", gnutls_strerror(r));
	ctx->have_cred = true;
	ctx->ncred++;
	r = kite_sni_add(ctx, &c, &k);
	return r ? ctx_fail(ctx, r, "certificate by name: %s", kite_strerror(r)) : 0;
}

int kite_ctx_set_ocsp_response(struct kite_ctx *ctx, const void *der, size_t len)
{
	gnutls_datum_t d = {(unsigned char *)der, (unsigned)len};
	int r = check_mutable(ctx);

	if (r)
		return r;
	if (!ctx->ncred)
		return ctx_fail(ctx, -EINVAL, "an OCSP response needs a certificate loaded first");
	if (!der || !len || len > UINT32_MAX)
		return ctx_fail(ctx, -EINVAL, "empty OCSP response");
	/* GnuTLS checks that the response is for this chain and not past its
	 * nextUpdate, here and again before each handshake staples it. */
	r = gnutls_certificate_set_ocsp_status_request_mem(ctx->cred, &d, ctx->ncred - 1,
							   GNUTLS_X509_FMT_DER);
	if (r == GNUTLS_E_EXPIRED)
		return ctx_fail(ctx, -EKEYEXPIRED, "OCSP response has expired (nextUpdate passed)");
	if (r < 0)
		return ctx_fail(ctx, -EINVAL, "OCSP response: %s", gnutls_strerror(r));
	r = kite_sni_set_ocsp(ctx, &d);
	return r ? ctx_fail(ctx, r, "OCSP response for the name's group: rejected") : 0;
}

int kite_ctx_allow_insecure_key_perms(struct kite_ctx *ctx, bool allow)
{
	int r = check_mutable(ctx);

	if (!r)
		ctx->insecure_key_perms = allow;
	return r;
}

int kite_ctx_set_ca_file(struct kite_ctx *ctx, const char *ca)
{
	int r = check_mutable(ctx);

	if (r)
		return r;
	if (!ca)
		return ctx_fail(ctx, -EINVAL, "no CA file given");
	r = gnutls_certificate_set_x509_trust_file(ctx->cred, ca, GNUTLS_X509_FMT_PEM);
	if (r <= 0)
		return ctx_fail(ctx, r == GNUTLS_E_FILE_ERROR ? -ENOENT : -EINVAL,
				"loading CA file %s: %s", ca,
				r == 0 ? "no certificates found" : gnutls_strerror(r));
	return 0;
}

int kite_ctx_set_verify(struct kite_ctx *ctx, bool verify)
{
	int r = check_mutable(ctx);

	if (!r)
		ctx->verify = verify;
	return r;
}

int kite_ctx_set_priority(struct kite_ctx *ctx, const char *prio)
{
	gnutls_priority_t p;
	const char *errpos = NULL;
	char *s;
	int r = check_mutable(ctx);

	if (r)
		return r;
	s = prio ? strdup(prio) : default_priority();
	if (!s)
		return -ENOMEM;
	r = gnutls_priority_init2(&p, s, &errpos, GNUTLS_PRIORITY_INIT_DEF_APPEND);
	if (r < 0) {
		r = ctx_fail(ctx, -EINVAL, "bad priority string \"%s\" near \"%s\": %s", s,
			     errpos ? errpos : "", gnutls_strerror(r));
		free(s);
		return r;
	}
	if (ctx->prio)
		gnutls_priority_deinit(ctx->prio);
	free(ctx->prio_str);
	ctx->prio = p;
	ctx->prio_str = s;
	return 0;
}

const char *kite_ctx_priority(const struct kite_ctx *ctx)
{
	return ctx && ctx->prio_str ? ctx->prio_str : "";
}

int kite_ctx_set_ktls(struct kite_ctx *ctx, unsigned flags)
{
	int r = check_mutable(ctx);

	if (r)
		return r;
	if (flags & ~(KITE_KTLS_TX | KITE_KTLS_RX | KITE_KTLS_REQUIRE | KITE_KTLS_TX_ZEROCOPY_RO |
		      KITE_KTLS_RX_EXPECT_NO_PAD))
		return ctx_fail(ctx, -EINVAL, "unknown kTLS flags 0x%x", flags);
	ctx->ktls_flags = flags;
	return 0;
}

int kite_ctx_enable_tickets(struct kite_ctx *ctx)
{
	int r = check_mutable(ctx);

	if (r)
		return r;
	if (ctx->role != KITE_SERVER)
		return ctx_fail(ctx, -EINVAL, "session ticket keys are for servers");
	if (ctx->ticket_key.data)
		return 0;
	r = gnutls_session_ticket_key_generate(&ctx->ticket_key);
	return r < 0 ? ctx_fail(ctx, -ENOMEM, "ticket key: %s", gnutls_strerror(r)) : 0;
}

int kite_ctx_set_alpn(struct kite_ctx *ctx, const char *const *protos, size_t n)
{
	int r = check_mutable(ctx);

	if (r)
		return r;
	if (n > sizeof(ctx->alpn) / sizeof(ctx->alpn[0]) || (n && !protos))
		return ctx_fail(ctx, -EINVAL, "at most 4 ALPN protocols");
	for (size_t i = 0; i < n; i++)
		if (!protos[i] || !protos[i][0] || strlen(protos[i]) > 255)
			return ctx_fail(ctx, -EINVAL, "ALPN protocol names are 1 to 255 bytes");
	for (unsigned i = 0; i < ctx->nalpn; i++)
		free(ctx->alpn[i].data);
	ctx->nalpn = 0;
	for (size_t i = 0; i < n; i++) {
		ctx->alpn[i].data = (unsigned char *)strdup(protos[i]);
		if (!ctx->alpn[i].data)
			return -ENOMEM;
		ctx->alpn[i].size = (unsigned)strlen(protos[i]);
		ctx->nalpn++;
	}
	return 0;
}

int kite_ctx_set_ticket_key(struct kite_ctx *ctx, const void *key, size_t len)
{
	int r = check_mutable(ctx);

	if (r)
		return r;
	if (ctx->role != KITE_SERVER)
		return ctx_fail(ctx, -EINVAL, "session ticket keys are for servers");
	if (!key || len != KITE_TICKET_KEY_SIZE)
		return ctx_fail(ctx, -EINVAL, "ticket key: want exactly %d bytes", KITE_TICKET_KEY_SIZE);
	if (ctx->ticket_key.data) {
		kite_wipe(ctx->ticket_key.data, ctx->ticket_key.size);
		gnutls_free(ctx->ticket_key.data);
		ctx->ticket_key.data = NULL;
	}
	ctx->ticket_key.data = gnutls_malloc(KITE_TICKET_KEY_SIZE);
	if (!ctx->ticket_key.data)
		return -ENOMEM;
	memcpy(ctx->ticket_key.data, key, KITE_TICKET_KEY_SIZE);
	ctx->ticket_key.size = KITE_TICKET_KEY_SIZE;
	return 0;
}

int kite_ctx_set_ticket_key_file(struct kite_ctx *ctx, const char *path)
{
	uint8_t buf[KITE_TICKET_KEY_SIZE + 1];
	struct stat st;
	ssize_t n;
	int fd, r = check_mutable(ctx);

	if (r)
		return r;
	if (ctx->role != KITE_SERVER)
		return ctx_fail(ctx, -EINVAL, "session ticket keys are for servers");
	if (!path)
		return ctx_fail(ctx, -EINVAL, "no ticket key file given");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ctx_fail(ctx, -errno, "ticket key file %s: %s", path, kite_strerror(-errno));
	if (fstat(fd, &st)) {
		r = -errno;
		close(fd);
		return ctx_fail(ctx, r, "ticket key file %s: %s", path, kite_strerror(r));
	}
	if ((st.st_mode & (S_IROTH | S_IWOTH)) && !ctx->insecure_key_perms) {
		close(fd);
		return ctx_fail(ctx, -EPERM, "ticket key file %s is accessible to other users "
				"(chmod o-rw %s)", path, path);
	}
	do
		n = read(fd, buf, sizeof(buf));
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n != KITE_TICKET_KEY_SIZE)
		r = ctx_fail(ctx, -EINVAL, "ticket key file %s: want exactly %d bytes "
			     "(head -c %d /dev/urandom > %s)", path, KITE_TICKET_KEY_SIZE,
			     KITE_TICKET_KEY_SIZE, path);
	else
		r = kite_ctx_set_ticket_key(ctx, buf, KITE_TICKET_KEY_SIZE);
	kite_wipe(buf, sizeof(buf));
	return r;
}
