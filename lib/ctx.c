/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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

/*
 * The default priority: TLS 1.3 and 1.2, AEADs only, and of those only the
 * ones the kernel accepted in the probe, so that a default connection is
 * offloadable. If the kernel offloads nothing, keep every AEAD kite could
 * offload elsewhere: the connection then runs in userspace either way.
 */
static char *default_priority(void)
{
	static const enum kite_cipher order[] = {KITE_AES_128_GCM, KITE_AES_256_GCM,
						 KITE_CHACHA20_POLY1305, KITE_AES_128_CCM};
	static const char *names[] = {"+AES-128-GCM", "+AES-256-GCM", "+CHACHA20-POLY1305",
				      "+AES-128-CCM"};
	const struct kite_caps *caps = kite_caps_get();
	char buf[256] = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL";
	int n = 0;

	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		enum kite_cipher c = order[i];
		bool ok = false;

		for (int v = 0; v < KITE_VERSION_COUNT; v++)
			ok |= !caps->offload[v][c][KITE_TX] && !caps->offload[v][c][KITE_RX];
		if (ok) {
			strcat(buf, ":");
			strcat(buf, names[i]);
			n++;
		}
	}
	if (!n)
		strcat(buf, ":+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305");
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
	r = gnutls_certificate_set_x509_key_file(ctx->cred, cert, key, GNUTLS_X509_FMT_PEM);
	if (r < 0)
		return ctx_fail(ctx, r == GNUTLS_E_FILE_ERROR ? -ENOENT : -EINVAL,
				"loading %s / %s: %s", cert, key, gnutls_strerror(r));
	ctx->have_cred = true;
	return 0;
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
	if (n != KITE_TICKET_KEY_SIZE) {
		kite_wipe(buf, sizeof(buf));
		return ctx_fail(ctx, -EINVAL, "ticket key file %s: want exactly %d bytes "
				"(head -c %d /dev/urandom > %s)", path, KITE_TICKET_KEY_SIZE,
				KITE_TICKET_KEY_SIZE, path);
	}
	if (ctx->ticket_key.data) {
		kite_wipe(ctx->ticket_key.data, ctx->ticket_key.size);
		gnutls_free(ctx->ticket_key.data);
	}
	ctx->ticket_key.data = gnutls_malloc(KITE_TICKET_KEY_SIZE);
	if (!ctx->ticket_key.data) {
		kite_wipe(buf, sizeof(buf));
		return -ENOMEM;
	}
	memcpy(ctx->ticket_key.data, buf, KITE_TICKET_KEY_SIZE);
	ctx->ticket_key.size = KITE_TICKET_KEY_SIZE;
	kite_wipe(buf, sizeof(buf));
	return 0;
}
