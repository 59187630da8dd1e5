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

#include "common.h"

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
		t_assert(kite_ctx_set_priority(ctx, NULL) == -EBUSY, "setter after use");
		t_assert(kite_ctx_set_ephemeral_cert(ctx, "x", NULL) == -EBUSY, "cert after use");
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

int main(void)
{
	struct t_creds cr;

	t_make_creds(&cr);
	contexts(&cr);
	bad_peers(&cr);
	return 0;
}
