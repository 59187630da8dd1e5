/* SPDX-License-Identifier: MIT */
/*
 * An HTTPS client that downloads with kernel TLS receive: after the
 * handshake the kernel decrypts, and kite_recv() reads plaintext.
 *
 *   cc download-client.c $(pkg-config --cflags --libs kite) -o download-client
 *   ./download-client HOST PORT PATH > body     (numeric IPv4 HOST; the
 *   certificate is not checked here: call kite_ctx_set_ca_file() for that)
 */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <kite.h>

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	struct kite_ctx *ctx;
	struct kite_conn *c;
	struct kite_conn_info info;
	static char buf[1 << 16];
	char req[512];
	size_t have = 0;
	bool in_body = false;
	int fd, r;

	if (argc != 4 || inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) {
		fprintf(stderr, "usage: %s IPV4 PORT PATH\n", argv[0]);
		return 2;
	}
	a.sin_port = htons((unsigned short)atoi(argv[2]));
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)))
		return perror("connect"), 1;
	if (kite_ctx_create(&ctx, KITE_CLIENT) || kite_ctx_set_verify(ctx, false) ||
	    kite_conn_create(&c, ctx, fd) || kite_conn_set_server_name(c, "localhost"))
		return 1;
	r = kite_handshake(c);
	if (r) {
		fprintf(stderr, "handshake: %s\n", kite_conn_strerror(c, r));
		return 1;
	}
	kite_conn_info(c, &info);
	fprintf(stderr, "tls %s %s: rx %s, tx %s\n", info.version_name, info.cipher_name,
		info.ktls_reason[KITE_RX], info.ktls_reason[KITE_TX]);
	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
		 argv[3]);
	if (kite_send(c, req, strlen(req)) < 0)
		return 1;
	/* Write the body to stdout: everything after the response head, up
	 * to the server's close_notify (kite_recv() returns 0). */
	for (;;) {
		ssize_t n = kite_recv(c, buf + have, sizeof(buf) - have);
		char *end;

		if (n == 0)
			break;
		if (n < 0) {
			fprintf(stderr, "recv: %s\n", kite_conn_strerror(c, (int)n));
			return 1;
		}
		if (in_body) {
			fwrite(buf, 1, (size_t)n, stdout);
			continue;
		}
		have += (size_t)n;
		end = memmem(buf, have, "\r\n\r\n", 4);
		if (!end && have == sizeof(buf))
			return 1; /* head too long */
		if (end) {
			in_body = true;
			fwrite(end + 4, 1, have - (size_t)(end + 4 - buf), stdout);
			have = 0;
		}
	}
	kite_conn_destroy(c);
	kite_ctx_destroy(ctx);
	close(fd);
	return fflush(stdout) ? 1 : 0;
}
