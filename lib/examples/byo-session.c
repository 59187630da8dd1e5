/* SPDX-License-Identifier: MIT */
/*
 * Bring your own session: the server configures GnuTLS itself - here a
 * certificate chosen by SNI in a callback - runs the handshake, and only
 * then hands the session and its socket to kite, which moves the keys to
 * the kernel (where it can) and sends a file with kite_sendfile().
 *
 *   cc byo-session.c $(pkg-config --cflags --libs kite) -o byo-session
 *   ./byo-session FILE CERT KEY           prints "port N"; serves FILE to
 *                                         every GET, one client at a time
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <kite.h>

struct server {
	gnutls_certificate_credentials_t cred; /* one per name in a real server */
	unsigned sni_hits;
};

/* The server's own SNI logic: runs inside the handshake, reads its state
 * through the session pointer (kite leaves that pointer alone). */
static int on_client_hello(gnutls_session_t s)
{
	struct server *srv = gnutls_session_get_ptr(s);
	char name[256];
	size_t len = sizeof(name);
	unsigned type;

	if (gnutls_server_name_get(s, name, &len, &type, 0) == 0 && !strcmp(name, "localhost"))
		srv->sni_hits++;
	/* Pick the certificate for `name` here. */
	return gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, srv->cred);
}

static void serve(struct server *srv, struct kite_ctx *ctx, int fd, const char *file)
{
	gnutls_session_t s;
	struct kite_conn *c = NULL;
	struct kite_conn_info info;
	char req[2048] = "", head[256];
	size_t got = 0;
	struct stat st;
	off_t off = 0;
	int f = -1, r;

	gnutls_init(&s, GNUTLS_SERVER);
	gnutls_set_default_priority(s);
	gnutls_session_set_ptr(s, srv);
	gnutls_handshake_set_post_client_hello_function(s, on_client_hello);
	gnutls_transport_set_int(s, fd);
	do
		r = gnutls_handshake(s);
	while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0) {
		gnutls_deinit(s); /* still ours: kite never saw it */
		return;
	}
	/* From here kite owns the session whenever c is set, error or not. */
	r = kite_conn_adopt_session(&c, ctx, s, fd);
	if (!c) {
		gnutls_deinit(s);
		return;
	}
	if (r)
		goto out;
	kite_conn_info(c, &info);
	fprintf(stderr, "tls %s %s (SNI callback ran %u times): tx %s, rx %s\n",
		info.version_name, info.cipher_name, srv->sni_hits, info.ktls_reason[KITE_TX],
		info.ktls_reason[KITE_RX]);
	while (got < sizeof(req) - 1 && !strstr(req, "\r\n\r\n")) {
		ssize_t n = kite_recv(c, req + got, sizeof(req) - 1 - got);

		if (n <= 0)
			goto out;
		got += (size_t)n;
		req[got] = 0;
	}
	if ((f = open(file, O_RDONLY | O_CLOEXEC)) < 0 || fstat(f, &st))
		goto out;
	snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %lld\r\n"
		 "Connection: close\r\n\r\n", (long long)st.st_size);
	if (kite_send(c, head, strlen(head)) < 0)
		goto out;
	while (off < st.st_size)
		if (kite_sendfile(c, f, &off, (size_t)(st.st_size - off)) < 0)
			goto out;
	(void)!kite_shutdown(c);
out:
	if (f >= 0)
		close(f);
	kite_conn_destroy(c); /* frees the session too */
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	struct server srv = {0};
	struct kite_ctx *ctx;
	int l;

	if (argc != 4) {
		fprintf(stderr, "usage: %s FILE CERT KEY\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN); /* sendfile(2) has no MSG_NOSIGNAL */
	if (gnutls_certificate_allocate_credentials(&srv.cred) < 0 ||
	    gnutls_certificate_set_x509_key_file(srv.cred, argv[2], argv[3],
						 GNUTLS_X509_FMT_PEM) < 0)
		return 1;
	/* kite's context: the role and the offload policy only. */
	if (kite_ctx_create(&ctx, KITE_SERVER))
		return 1;
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 64) ||
	    getsockname(l, (struct sockaddr *)&a, &alen))
		return 1;
	printf("port %d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (;;) {
		int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0)
			continue;
		serve(&srv, ctx, fd, argv[1]);
		close(fd);
	}
}
