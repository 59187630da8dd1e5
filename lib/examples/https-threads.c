/* SPDX-License-Identifier: MIT */
/*
 * A blocking HTTPS file server, one thread per connection, with kite_conn.
 *
 *   cc https-threads.c $(pkg-config --cflags --libs kite) -o https-threads
 *   ./https-threads ROOT [CERT KEY]      (no CERT KEY: a self-signed one)
 *
 * Prints "port N" once listening on 127.0.0.1 (port 0: the kernel picks).
 * GET /NAME sends the file ROOT/NAME with kite_sendfile(): through kernel
 * TLS when the kernel took the keys, GnuTLS records otherwise.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kite.h>

static struct kite_ctx *ctx; /* read-only once connections use it: shared */
static int root;              /* directory descriptor of ROOT */

static void *serve(void *arg)
{
	int fd = (int)(long)arg, file = -1;
	struct kite_conn *c = NULL;
	struct kite_conn_info info;
	char req[2048] = "", head[256], path[1024];
	size_t got = 0;
	struct stat st;
	off_t off = 0;

	if (kite_conn_create(&c, ctx, fd) || kite_handshake(c))
		goto out; /* the handshake failed: nothing to answer */
	kite_conn_info(c, &info);
	fprintf(stderr, "tls %s %s: tx %s, rx %s\n", info.version_name, info.cipher_name,
		info.ktls_reason[KITE_TX], info.ktls_reason[KITE_RX]);
	/* Read the request head (one request per connection keeps it short). */
	while (got < sizeof(req) - 1 && !strstr(req, "\r\n\r\n")) {
		ssize_t n = kite_recv(c, req + got, sizeof(req) - 1 - got);

		if (n <= 0)
			goto out;
		got += (size_t)n;
		req[got] = 0;
	}
	/* Only plain names below ROOT: no "..", no absolute paths. */
	if (sscanf(req, "GET /%1023s HTTP/1.1", path) != 1 || strstr(path, "..") ||
	    (file = openat(root, path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(file, &st) ||
	    !S_ISREG(st.st_mode)) {
		static const char nf[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
					 "Connection: close\r\n\r\n";
		(void)!kite_send(c, nf, sizeof(nf) - 1);
		goto close;
	}
	snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %lld\r\n"
		 "Connection: close\r\n\r\n", (long long)st.st_size);
	if (kite_send(c, head, strlen(head)) < 0)
		goto out;
	/* On a blocking socket kite_sendfile() sends what it can per call
	 * and advances off; loop until the file is out. */
	while (off < st.st_size) {
		ssize_t n = kite_sendfile(c, file, &off, (size_t)(st.st_size - off));

		if (n < 0) {
			fprintf(stderr, "sendfile: %s\n", kite_conn_strerror(c, (int)n));
			goto out;
		}
	}
close:
	(void)!kite_shutdown(c); /* close_notify: the client knows the body is whole */
out:
	if (file >= 0)
		close(file);
	kite_conn_destroy(c);   /* NULL-safe */
	close(fd);              /* the socket is ours, not kite's */
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int l, r;

	if (argc != 2 && argc != 4) {
		fprintf(stderr, "usage: %s ROOT [CERT KEY]\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN); /* sendfile(2) has no MSG_NOSIGNAL */
	root = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0 || kite_ctx_create(&ctx, KITE_SERVER))
		return 1;
	r = argc == 4 ? kite_ctx_set_credentials(ctx, argv[2], argv[3])
		      : kite_ctx_set_ephemeral_cert(ctx, "localhost", NULL);
	if (r) {
		fprintf(stderr, "credentials: %s\n", kite_ctx_error(ctx));
		return 1;
	}
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 64) ||
	    getsockname(l, (struct sockaddr *)&a, &alen))
		return 1;
	printf("port %d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (;;) {
		int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		pthread_t th;

		if (fd < 0)
			continue;
		if (pthread_create(&th, NULL, serve, (void *)(long)fd))
			close(fd);
		else
			pthread_detach(th);
	}
}
