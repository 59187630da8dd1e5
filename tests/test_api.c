/* SPDX-License-Identifier: MIT */
/*
 * The public API's promises on bad input: every misuse gets a clear -errno
 * and a message, nothing crashes, nothing is half-configured.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "common.h"

/* Every code kite returns (kite.h, the engine's on_close) has its own text:
 * a caller who prints kite_strerror() can tell any two failures apart. */
static void strerror_distinct(void)
{
	static const int codes[] = {
		0, EAGAIN, EOPNOTSUPP, EPROTO, EINVAL, EKEYEXPIRED, ENODATA, EPIPE,
		ECONNRESET, EALREADY, EPERM, ENOMEM, EACCES, ENOENT, ENOSPC, EDEADLK,
		ENOBUFS, EMSGSIZE, EMFILE, ETIMEDOUT, ECANCELED, ECONNABORTED, EIO,
		ENOTSOCK, EBUSY,
	};
	size_t n = sizeof(codes) / sizeof(codes[0]);

	for (size_t i = 0; i < n; i++) {
		const char *a = kite_strerror(-codes[i]);

		t_assert(a && *a && strcmp(a, "unknown error"), "code %d has no text", codes[i]);
		for (size_t j = 0; j < i; j++)
			t_assert(strcmp(a, kite_strerror(-codes[j])), "codes %d and %d share \"%s\"",
				 codes[i], codes[j], a);
	}
	/* A setter after the context went into use: its own code and text,
	 * not the kernel's "busy" of a second SOL_TLS setsockopt. */
	t_assert(strstr(kite_strerror(-EALREADY), "already configured"), "%s",
		 kite_strerror(-EALREADY));
	t_assert(!strstr(kite_strerror(-EBUSY), "configured"), "%s", kite_strerror(-EBUSY));
}

static void contexts(const struct t_creds *cr)
{
	struct kite_ctx *ctx;
	char path[400], fp[96];
	int r;

	/* destroy(NULL) is a no-op */
	kite_ctx_destroy(NULL);
	kite_conn_destroy(NULL);

	t_assert(kite_ctx_create(NULL, KITE_SERVER) == -EINVAL, "NULL out");
	t_assert(kite_ctx_create(&ctx, (enum kite_role)7) == -EINVAL, "bad role");

	t_ok(kite_ctx_create(&ctx, KITE_SERVER));
	r = kite_ctx_set_priority(ctx, "NORMAL:+NONSENSE-CIPHER");
	t_assert(r == -EINVAL, "bad priority: %d", r);
	t_assert(strstr(kite_ctx_error(ctx), "NONSENSE") != NULL, "message: %s", kite_ctx_error(ctx));
	/* A failed setter leaves the previous (default) priority in force. */
	t_assert(strstr(kite_ctx_priority(ctx), "-CIPHER-ALL") != NULL, "priority lost: %s",
		 kite_ctx_priority(ctx));

	r = kite_ctx_set_credentials(ctx, "/nonexistent/cert.pem", "/nonexistent/key.pem");
	t_assert(r == -ENOENT, "missing key file: %d", r);
	t_assert(strstr(kite_ctx_error(ctx), "/nonexistent/key.pem") != NULL, "%s", kite_ctx_error(ctx));
	t_assert(kite_ctx_set_credentials(ctx, cr->cert, NULL) == -EINVAL, "NULL key");

	/* A private key others can read is refused. */
	snprintf(path, sizeof(path), "%s/open-key.pem", cr->dir);
	{
		char cmd[900];

		snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", cr->key, path);
		t_assert(system(cmd) == 0, "cp");
	}
	chmod(path, 0644);
	r = kite_ctx_set_credentials(ctx, cr->cert, path);
	t_assert(r == -EPERM, "world-readable key accepted: %d", r);
	t_assert(strstr(kite_ctx_error(ctx), "other users") != NULL, "%s", kite_ctx_error(ctx));
	{	/* ...unless the caller explicitly allows it (a separate context:
		 * this one must keep refusing). */
		struct kite_ctx *lax;

		t_assert(kite_ctx_create(&lax, KITE_SERVER) == 0, "create");
		t_assert(kite_ctx_allow_insecure_key_perms(lax, true) == 0, "allow");
		r = kite_ctx_set_credentials(lax, cr->cert, path);
		t_assert(r == 0, "allowed world-readable key: %d (%s)", r, kite_ctx_error(lax));
		kite_ctx_destroy(lax);
	}
	chmod(path, 0600);
	/* Certificate and key that don't belong together / aren't PEM. */
	r = kite_ctx_set_credentials(ctx, path, path);
	t_assert(r == -EINVAL, "key as certificate: %d (%s)", r, kite_ctx_error(ctx));
	unlink(path);

	t_assert(kite_ctx_set_ktls(ctx, 1u << 9) == -EINVAL, "unknown flag");
	t_assert(kite_ctx_enable_tickets(ctx) == 0, "tickets");
	t_ok(kite_ctx_set_credentials(ctx, cr->cert, cr->key));
	{
		struct kite_conn *c;
		int sv[2];

		t_assert(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
		t_ok(kite_conn_create(&c, ctx, sv[0]));
		/* Once a connection uses the context, it is read-only. */
		t_assert(kite_ctx_set_priority(ctx, NULL) == -EALREADY, "setter after use");
		t_assert(kite_ctx_set_ephemeral_cert(ctx, "x", NULL) == -EALREADY, "cert after use");
		/* Data calls before the handshake are misuse, not a crash. */
		t_assert(kite_send(c, "x", 1) == -EINVAL, "send before handshake");
		t_assert(kite_recv(c, path, 1) == -EINVAL, "recv before handshake");
		t_assert(kite_shutdown(c) == -EINVAL, "shutdown before handshake");
		t_assert(kite_key_update(c) == -EINVAL, "key update before handshake");
		t_assert(strstr(kite_conn_strerror(c, -EINVAL), "handshake not complete"), "%s",
			 kite_conn_strerror(c, -EINVAL));
		t_assert(kite_conn_set_server_name(c, "x") == -EINVAL, "SNI on a server");
		{
			off_t off = -1;

			t_assert(kite_sendfile(c, 0, &off, 1) == -EINVAL, "negative offset");
			t_assert(kite_sendfile(c, 0, NULL, 1) == -EINVAL, "NULL offset");
		}
		kite_conn_destroy(c);
		close(sv[0]);
		close(sv[1]);
	}
	kite_ctx_destroy(ctx);

	/* A server without credentials cannot make connections. */
	t_ok(kite_ctx_create(&ctx, KITE_SERVER));
	t_assert(kite_conn_create(&(struct kite_conn *){NULL}, ctx, 0) == -EINVAL, "no creds");
	t_assert(kite_ctx_set_ephemeral_cert(ctx, "", fp) == -EINVAL, "empty name");
	t_ok(kite_ctx_set_ephemeral_cert(ctx, "localhost", fp));
	t_assert(strlen(fp) == 95 && fp[2] == ':', "fingerprint %s", fp);
	kite_ctx_destroy(ctx);

	t_ok(kite_ctx_create(&ctx, KITE_CLIENT));
	t_assert(kite_ctx_enable_tickets(ctx) == -EINVAL, "tickets on a client");
	r = kite_ctx_set_ca_file(ctx, "/nonexistent/ca.pem");
	t_assert(r == -ENOENT, "missing CA: %d", r);
	kite_ctx_destroy(ctx);

	t_assert(strcmp(kite_strerror(-EOPNOTSUPP), "kernel TLS offload not possible") == 0, "text");
	t_assert(kite_strerror(-123456)[0] != 0, "unknown errno has text");
	strerror_distinct();
}

struct garbage { int fd; const char *bytes; size_t len; };

static void *send_garbage(void *arg)
{
	struct garbage *g = arg;
	char buf[4096];

	if (g->len && write(g->fd, g->bytes, g->len) < 0)
		return NULL;
	shutdown(g->fd, SHUT_WR);
	while (read(g->fd, buf, sizeof(buf)) > 0)
		;
	return NULL;
}

/* A peer that is not TLS: the handshake fails cleanly with a message. */
static void bad_peers(const struct t_creds *cr)
{
	static const struct { const char *name, *bytes; size_t len; int want; } cases[] = {
		{"HTTP instead of a ClientHello", "GET / HTTP/1.1\r\n\r\n", 18, -EPROTO},
		{"immediate close", "", 0, -ECONNRESET},
		{"truncated record header", "\x16\x03\x01", 3, -ECONNRESET},
	};
	struct kite_ctx *ctx = t_server_ctx(cr, NULL, KITE_KTLS_DEFAULT);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct garbage g = {.bytes = cases[i].bytes, .len = cases[i].len};
		struct kite_conn *c;
		pthread_t th;
		int fds[2], r;

		t_tcp_pair(fds);
		g.fd = fds[0];
		pthread_create(&th, NULL, send_garbage, &g);
		t_ok(kite_conn_create(&c, ctx, fds[1]));
		r = kite_handshake(c);
		if (r != cases[i].want)
			t_fail("%s: handshake %d (%s), want %d", cases[i].name, r,
			       kite_conn_strerror(c, r), cases[i].want);
		printf("%s: %s\n", cases[i].name, kite_conn_strerror(c, r));
		/* Sticky: the connection stays failed. */
		t_assert(kite_handshake(c) == r, "second handshake");
		t_assert(kite_send(c, "x", 1) == -EINVAL, "send after failed handshake");
		close(fds[1]);
		pthread_join(th, NULL);
		close(fds[0]);
		kite_conn_destroy(c);
	}
	kite_ctx_destroy(ctx);
}

static void write_key(const char *path, size_t n, mode_t mode, uint64_t seed)
{
	uint8_t buf[128];
	int fd;

	t_fill(buf, sizeof(buf), seed);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	t_assert(fd >= 0 && write(fd, buf, n) == (ssize_t)n, "write %s", path);
	fchmod(fd, mode);
	close(fd);
}

struct gclient {
	int fd;
	gnutls_datum_t *session_in;   /* resume from this, if set */
	gnutls_datum_t session_out;
	bool resumed;
	char alpn[32];
};

/* A plain GnuTLS client: handshake, read one byte (so the TLS 1.3 ticket
 * that precedes it is processed), keep the session data. */
static void *gclient(void *arg)
{
	struct gclient *g = arg;
	gnutls_certificate_credentials_t cred;
	gnutls_session_t s;
	gnutls_datum_t proto = {(unsigned char *)"http/1.1", 8};
	char b;
	int r;

	gnutls_certificate_allocate_credentials(&cred);
	gnutls_init(&s, GNUTLS_CLIENT);
	gnutls_set_default_priority(s);
	gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred);
	gnutls_alpn_set_protocols(s, &proto, 1, 0);
	if (g->session_in)
		gnutls_session_set_data(s, g->session_in->data, g->session_in->size);
	gnutls_transport_set_int(s, g->fd);
	do
		r = gnutls_handshake(s);
	while (r < 0 && !gnutls_error_is_fatal(r));
	t_assert(r == 0, "client handshake: %s", gnutls_strerror(r));
	do
		r = (int)gnutls_record_recv(s, &b, 1);
	while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
	t_assert(r == 1, "client read: %d", r);
	g->resumed = gnutls_session_is_resumed(s);
	if (gnutls_alpn_get_selected_protocol(s, &proto) == 0)
		snprintf(g->alpn, sizeof(g->alpn), "%.*s", (int)proto.size, proto.data);
	gnutls_session_get_data2(s, &g->session_out);
	gnutls_bye(s, GNUTLS_SHUT_WR);
	gnutls_deinit(s);
	gnutls_certificate_free_credentials(cred);
	return NULL;
}

/* One connection from a GnuTLS client to a kite server ctx. */
static bool connect_once(struct kite_ctx *ctx, gnutls_datum_t *in, gnutls_datum_t *out,
			 bool destroy_ctx_first)
{
	struct gclient g = {.session_in = in};
	struct kite_conn_info info;
	struct kite_conn *c;
	pthread_t th;
	int fds[2];

	t_tcp_pair(fds);
	g.fd = fds[0];
	t_ok(kite_conn_create(&c, ctx, fds[1]));
	if (destroy_ctx_first)
		kite_ctx_destroy(ctx); /* the connection keeps it alive */
	pthread_create(&th, NULL, gclient, &g);
	t_handshake(c, "server");
	t_send_all(c, "x", 1);
	pthread_join(th, NULL);
	t_ok(kite_conn_info(c, &info));
	t_assert(info.resumed == g.resumed, "server and client disagree on resumption");
	t_assert(!strcmp(info.alpn, "http/1.1") && !strcmp(g.alpn, "http/1.1"), "ALPN %s/%s",
		 info.alpn, g.alpn);
	kite_conn_destroy(c);
	close(fds[0]);
	close(fds[1]);
	if (out)
		*out = g.session_out;
	else
		gnutls_free(g.session_out.data);
	return g.resumed;
}

static struct kite_ctx *ticket_server(const struct t_creds *cr, const char *keyfile)
{
	static const char *const alpn[] = {"http/1.1"};
	struct kite_ctx *ctx = t_server_ctx(cr, "NORMAL:-VERS-ALL:+VERS-TLS1.3", KITE_KTLS_DEFAULT);

	if (kite_ctx_set_ticket_key_file(ctx, keyfile))
		t_fail("ticket key: %s", kite_ctx_error(ctx));
	t_ok(kite_ctx_set_alpn(ctx, alpn, 1));
	return ctx;
}

/* Two servers sharing a ticket key file resume each other's sessions; a
 * server with another key does not. */
static void tickets(const struct t_creds *cr)
{
	char k1[400], k2[400];
	struct kite_ctx *a, *b, *other, *ctx;
	gnutls_datum_t sess;
	int r;

	snprintf(k1, sizeof(k1), "%s/ticket1.key", cr->dir);
	snprintf(k2, sizeof(k2), "%s/ticket2.key", cr->dir);
	t_ok(kite_ctx_create(&ctx, KITE_SERVER));
	write_key(k1, 63, 0600, 1);
	r = kite_ctx_set_ticket_key_file(ctx, k1);
	t_assert(r == -EINVAL && strstr(kite_ctx_error(ctx), "exactly 64 bytes"), "short key: %d", r);
	write_key(k1, 65, 0600, 1);
	t_assert(kite_ctx_set_ticket_key_file(ctx, k1) == -EINVAL, "long key");
	write_key(k1, 64, 0644, 1);
	t_assert(kite_ctx_set_ticket_key_file(ctx, k1) == -EPERM, "world-readable key");
	t_assert(kite_ctx_allow_insecure_key_perms(ctx, true) == 0, "allow");
	r = kite_ctx_set_ticket_key_file(ctx, k1);
	t_assert(r == 0, "allowed world-readable ticket key: %d (%s)", r, kite_ctx_error(ctx));
	t_assert(kite_ctx_allow_insecure_key_perms(ctx, false) == 0, "disallow");
	t_assert(kite_ctx_set_ticket_key_file(ctx, "/nonexistent") == -ENOENT, "missing key");
	t_assert(kite_ctx_set_alpn(ctx, (const char *const[]){""}, 1) == -EINVAL, "empty ALPN");
	kite_ctx_destroy(ctx);

	write_key(k1, 64, 0600, 1);
	write_key(k2, 64, 0600, 2);
	a = ticket_server(cr, k1);
	b = ticket_server(cr, k1);
	other = ticket_server(cr, k2);
	t_assert(!connect_once(a, NULL, &sess, false), "first connection resumed?");
	t_assert(connect_once(b, &sess, NULL, false), "server B did not resume A's session");
	t_assert(!connect_once(other, &sess, NULL, false), "a different key resumed");
	gnutls_free(sess.data);
	kite_ctx_destroy(a);
	kite_ctx_destroy(other);
	/* The creator's reference goes before the connection's: still works. */
	connect_once(b, NULL, NULL, true);
	printf("tickets: resumption across contexts sharing a key file ok\n");
}

/* ABI: reserved words are zero where the library fills a struct, and a
 * config with one set (a newer caller's member) is refused, not ignored. */
static void abi_reserved(void)
{
	struct kite_engine_config cfg;
	struct kite_engine *e = NULL;
	struct kite_conn_info info;
	struct kite_ctx *ctx;
	struct kite_conn *c;
	int fds[2], r;

	kite_engine_config_init(&cfg);
	for (size_t i = 0; i < sizeof(cfg.reserved) / sizeof(cfg.reserved[0]); i++)
		t_assert(cfg.reserved[i] == 0, "config reserved[%zu] not zeroed", i);
	cfg.reserved[3] = 1;
	r = kite_engine_create(&e, &cfg);
	t_assert(r == -EINVAL && !e, "config with a reserved word set: %d", r);
	t_assert(strstr(kite_engine_create_error(), "reserved"), "error: %s",
		 kite_engine_create_error());

	t_tcp_pair(fds);
	t_ok(kite_ctx_create(&ctx, KITE_CLIENT));
	t_ok(kite_conn_create(&c, ctx, fds[0]));
	memset(&info, 0xa5, sizeof(info));
	t_ok(kite_conn_info(c, &info));
	for (size_t i = 0; i < sizeof(info.reserved) / sizeof(info.reserved[0]); i++)
		t_assert(info.reserved[i] == 0, "info reserved[%zu] = %llx", i,
			 (unsigned long long)info.reserved[i]);
	kite_conn_destroy(c);
	kite_ctx_destroy(ctx);
	close(fds[0]);
	close(fds[1]);
}

int main(void)
{
	struct t_creds cr;

	abi_reserved();

	t_make_creds(&cr);
	contexts(&cr);
	bad_peers(&cr);
	tickets(&cr);
	return 0;
}
