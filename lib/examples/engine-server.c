/* SPDX-License-Identifier: MIT */
/*
 * A minimal kite_engine server: the engine accepts, handshakes and moves
 * bytes (io_uring splice file -> pipe -> kTLS socket where it can); the
 * program only answers requests from callbacks.
 *
 *   cc engine-server.c $(pkg-config --cflags --libs kite) -o engine-server
 *   ./engine-server FILE                 prints "port N"; serves FILE to
 *                                        every GET (self-signed certificate)
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kite.h>

static const char *file;

/* A request arrived (this sketch takes the first segment as the whole
 * head; a real server buffers until the blank line). */
static void on_data(struct kite_stream *s, const void *buf, size_t len)
{
	struct kite_conn_info info;
	char head[256];
	struct stat st;
	int fd;

	if (!len || kite_stream_user(s))
		return; /* the peer finished sending, or already answered */
	kite_stream_set_user(s, s);
	(void)buf;
	kite_conn_info(kite_stream_conn(s), &info);
	fprintf(stderr, "tls %s %s: tx %s, rx %s\n", info.version_name, info.cipher_name,
		info.ktls_reason[KITE_TX], info.ktls_reason[KITE_RX]);
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st)) {
		kite_stream_abort(s, -ENOENT);
		return;
	}
	snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %lld\r\n"
		 "Connection: close\r\n\r\n", (long long)st.st_size);
	/* Queue the head and the file; the engine closes fd when it is sent.
	 * Then a graceful close: close_notify once the queue drained. */
	if (kite_stream_send(s, head, strlen(head)) < 0 ||
	    kite_stream_sendfile(s, fd, 0, (size_t)st.st_size, KITE_SENDFILE_CLOSE_FD) < 0)
		kite_stream_abort(s, -EIO);
	else
		kite_stream_close(s);
}

int main(int argc, char **argv)
{
	struct kite_engine_config cfg;
	struct kite_engine *e;
	struct kite_engine_info info;
	struct kite_ctx *ctx;
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	int l;

	if (argc != 2) {
		fprintf(stderr, "usage: %s FILE\n", argv[0]);
		return 2;
	}
	file = argv[1];
	signal(SIGPIPE, SIG_IGN);
	if (kite_ctx_create(&ctx, KITE_SERVER) || kite_ctx_set_ephemeral_cert(ctx, "localhost", NULL))
		return 1;
	kite_engine_config_init(&cfg); /* defaults, reserved words zeroed */
	cfg.ctx = ctx;
	cfg.on_data = on_data;
	if (kite_engine_create(&e, &cfg)) {
		fprintf(stderr, "engine: %s\n", kite_engine_create_error());
		return 1;
	}
	l = kite_listen_reuseport("127.0.0.1", 0, 128);
	if (l < 0 || kite_engine_add_listener(e, l) ||
	    getsockname(l, (struct sockaddr *)&a, &alen))
		return 1;
	kite_engine_describe(e, &info);
	fprintf(stderr, "engine: %s (%s)\n", info.name, info.detail);
	printf("port %d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (;;)
		if (kite_engine_run(e, -1) < 0)
			return 1;
}
