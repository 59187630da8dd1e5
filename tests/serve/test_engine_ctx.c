/* SPDX-License-Identifier: MIT */
/*
 * kite_engine_set_ctx (lib/engine/ctx.c), what kite-serve's SIGHUP relies
 * on: connections accepted after the call use the new context, those
 * already there keep theirs and keep working after the caller has dropped
 * it, and calls that would change the engine's kind are ignored.
 * The contexts tell themselves apart by their ALPN protocol.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

struct client {
	int fd;
	pthread_t th;
	char alpn[32];
	char got[16];
	int err;
};

static void *client_main(void *arg)
{
	static const char *const offer[] = {"x-old", "x-new"};
	struct client *cl = arg;
	struct kite_ctx *ctx = t_client_ctx(NULL, KITE_KTLS_DEFAULT);
	struct kite_conn_info info;
	struct kite_conn *c;
	size_t n = 0;

	t_ok(kite_ctx_set_alpn(ctx, offer, 2));
	t_ok(kite_conn_create(&c, ctx, cl->fd));
	t_handshake(c, "client");
	t_ok(kite_conn_info(c, &info));
	memcpy(cl->alpn, info.alpn, sizeof(cl->alpn));
	/* The server says "hello" once it has seen the handshake. */
	while (n < 5) {
		ssize_t r = kite_recv(c, cl->got + n, 5 - n);

		if (r <= 0) {
			cl->err = r ? (int)r : -EPIPE;
			break;
		}
		n += (size_t)r;
	}
	kite_conn_destroy(c);
	kite_ctx_destroy(ctx);
	close(cl->fd);
	return NULL;
}

static struct kite_stream *opened[4];
static unsigned nopened;
static char server_alpn[4][32];

static void on_open(struct kite_stream *s)
{
	struct kite_conn_info info;

	t_ok(kite_conn_info(kite_stream_conn(s), &info));
	memcpy(server_alpn[nopened], info.alpn, sizeof(info.alpn));
	opened[nopened++] = s;
}

static struct kite_ctx *server_ctx(const char *proto)
{
	struct kite_ctx *ctx;

	t_ok(kite_ctx_create(&ctx, KITE_SERVER));
	t_ok(kite_ctx_set_ephemeral_cert(ctx, "localhost", NULL));
	t_ok(kite_ctx_set_alpn(ctx, &proto, 1));
	return ctx;
}

/* A client connection to the engine, handshake done on both sides. */
static void connect_one(struct kite_engine *e, struct client *cl)
{
	unsigned want = nopened + 1;
	int fds[2];

	t_tcp_pair(fds);
	cl->fd = fds[0];
	t_ok(kite_engine_adopt(e, fds[1], NULL));
	t_assert(!pthread_create(&cl->th, NULL, client_main, cl), "thread");
	for (int i = 0; i < 200 && nopened < want; i++)
		t_ok(kite_engine_run(e, 50));
	t_assert(nopened == want, "handshake %u did not finish", want);
}

static void finish(struct kite_engine *e, struct client *cl, unsigned idx)
{
	t_assert(kite_stream_send(opened[idx], "hello", 5) == 5, "send");
	/* The client thread ends once it has read it. */
	for (int i = 0; i < 200; i++) {
		t_ok(kite_engine_run(e, 20));
		if (!strcmp(cl->got, "hello") || cl->err)
			break;
	}
	pthread_join(cl->th, NULL);
	t_assert(!cl->err && !strcmp(cl->got, "hello"), "stream %u: %s", idx,
		 kite_strerror(cl->err));
}

int main(void)
{
	struct kite_engine_config cfg;
	struct kite_engine *e;
	struct kite_ctx *old = server_ctx("x-old"), *new = server_ctx("x-new"), *client;
	struct client c1 = {0}, c2 = {0}, c3 = {0};

	/* valgrind holds its lock across io_uring_enter, so the client
	 * thread would never run next to a ring: use the epoll rung there. */
	if (getenv("KITE_UNDER_VALGRIND"))
		setenv("KITE_ENGINE", "epoll", 1);
	kite_engine_config_init(&cfg);
	cfg.ctx = old;
	cfg.on_open = on_open;
	t_ok(kite_engine_create(&e, &cfg));

	connect_one(e, &c1);
	t_assert(!strcmp(server_alpn[0], "x-old"), "first: %s", server_alpn[0]);

	kite_engine_set_ctx(e, new);
	/* The engine borrowed old; the stream holds its own reference. */
	kite_ctx_destroy(old);
	connect_one(e, &c2);
	t_assert(!strcmp(server_alpn[1], "x-new") && !strcmp(c2.alpn, "x-new"), "second: %s",
		 server_alpn[1]);

	/* Ignored: NULL (plaintext) and a context of the other role. */
	kite_engine_set_ctx(e, NULL);
	t_ok(kite_ctx_create(&client, KITE_CLIENT));
	kite_engine_set_ctx(e, client);
	kite_engine_set_ctx(NULL, new);
	connect_one(e, &c3);
	t_assert(!strcmp(server_alpn[2], "x-new"), "third: %s", server_alpn[2]);

	/* The first connection still works on the dropped context. */
	finish(e, &c1, 0);
	finish(e, &c2, 1);
	finish(e, &c3, 2);
	kite_engine_destroy(e);
	kite_ctx_destroy(new);
	kite_ctx_destroy(client);
	printf("test_engine_ctx: ok\n");
	return 0;
}
