/* SPDX-License-Identifier: MIT */
/*
 * The same HTTPS file server inside an existing epoll loop: non-blocking
 * sockets, kite_handshake() and kite_sendfile() return -EAGAIN and say
 * what to wait for (kite_conn_poll_events()); the loop waits and calls
 * again. One thread, any number of connections.
 *
 *   cc https-epoll.c $(pkg-config --cflags --libs kite) -o https-epoll
 *   ./https-epoll ROOT [CERT KEY]        prints "port N"
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kite.h>

enum step { HANDSHAKE, REQUEST, BODY, DONE };

struct client {
	int fd, file;
	struct kite_conn *c;
	enum step step;
	char req[2048];
	size_t got;
	off_t off, size;
};

static int ep, root;

static int drop(struct client *cl)
{
	kite_conn_destroy(cl->c);
	if (cl->file >= 0)
		close(cl->file);
	close(cl->fd); /* also removes it from the epoll set */
	free(cl);
	return 0;
}

/* Wait for what kite asked for: POLLIN or POLLOUT, edge by edge. */
static int want(struct client *cl)
{
	struct epoll_event ev = {.data.ptr = cl};

	ev.events = (kite_conn_poll_events(cl->c) & POLLOUT) ? EPOLLOUT : EPOLLIN;
	return epoll_ctl(ep, EPOLL_CTL_MOD, cl->fd, &ev);
}

/* Runs each time the socket is ready; returns when it would block or the
 * connection is gone. */
static int step(struct client *cl)
{
	struct kite_conn_info info;
	char path[1024], head[256];
	struct stat st;
	ssize_t n;

	switch (cl->step) {
	case HANDSHAKE:
		n = kite_handshake(cl->c);
		if (n == -EAGAIN)
			return want(cl);
		if (n)
			return drop(cl);
		kite_conn_info(cl->c, &info);
		fprintf(stderr, "tls %s %s: tx %s, rx %s\n", info.version_name, info.cipher_name,
			info.ktls_reason[KITE_TX], info.ktls_reason[KITE_RX]);
		cl->step = REQUEST;
		/* fall through: the request may already be here */
	case REQUEST:
		while (!strstr(cl->req, "\r\n\r\n")) {
			n = kite_recv(cl->c, cl->req + cl->got, sizeof(cl->req) - 1 - cl->got);
			if (n == -EAGAIN)
				return want(cl);
			if (n <= 0 || cl->got + (size_t)n >= sizeof(cl->req) - 1)
				return drop(cl);
			cl->got += (size_t)n;
			cl->req[cl->got] = 0;
		}
		if (sscanf(cl->req, "GET /%1023s HTTP/1.1", path) != 1 || strstr(path, "..") ||
		    (cl->file = openat(root, path, O_RDONLY | O_CLOEXEC)) < 0 ||
		    fstat(cl->file, &st) || !S_ISREG(st.st_mode))
			return drop(cl); /* a real server answers 404 here */
		cl->size = st.st_size;
		snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %lld\r\n"
			 "Connection: close\r\n\r\n", (long long)cl->size);
		/* A head this small fits the socket buffer of a fresh
		 * connection; a server with pipelining keeps a queue instead. */
		if (kite_send(cl->c, head, strlen(head)) != (ssize_t)strlen(head))
			return drop(cl);
		cl->step = BODY;
		/* fall through */
	case BODY:
		while (cl->off < cl->size) {
			n = kite_sendfile(cl->c, cl->file, &cl->off, (size_t)(cl->size - cl->off));
			if (n == -EAGAIN)
				return want(cl); /* the socket is full: wait for POLLOUT */
			if (n < 0)
				return drop(cl);
		}
		cl->step = DONE;
		/* fall through */
	case DONE:
		n = kite_shutdown(cl->c);
		if (n == -EAGAIN)
			return want(cl);
	}
	return drop(cl);
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	struct epoll_event ev = {.events = EPOLLIN}, evs[64];
	struct kite_ctx *ctx;
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
	l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (l < 0 || ep < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 64) ||
	    getsockname(l, (struct sockaddr *)&a, &alen) || epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev))
		return 1;
	printf("port %d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (;;) {
		int n = epoll_wait(ep, evs, 64, -1);

		for (int i = 0; i < n; i++) {
			struct client *cl;
			int fd;

			if (evs[i].data.ptr) {
				(void)step(evs[i].data.ptr);
				continue;
			}
			/* The listener (data.ptr NULL): a new connection. */
			fd = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (fd < 0)
				continue;
			cl = calloc(1, sizeof(*cl));
			if (!cl || kite_conn_create(&cl->c, ctx, fd)) {
				free(cl);
				close(fd);
				continue;
			}
			cl->fd = fd, cl->file = -1;
			ev.events = EPOLLIN, ev.data.ptr = cl;
			epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
			ev.data.ptr = NULL;
			(void)step(cl); /* start the handshake now */
		}
	}
}
