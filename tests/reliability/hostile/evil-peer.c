/* SPDX-License-Identifier: MIT */
/*
 * evil-peer - a TLS client (plain GnuTLS, records made in userspace) that
 * breaks the record layer after a good handshake, for hostile_test.py.
 *
 *   evil-peer --host ADDR --port N --mode badtag|oversize
 *             [--version 1.2|1.3] [--timeout SECS]
 *
 * First "GET /small.txt" (keep-alive, User-Agent: evil-first) and its whole
 * answer, so the connection is known to work; then:
 *   badtag    the next request (User-Agent: evil-bad) leaves in a record
 *             whose last byte - the AEAD tag - has one bit flipped by the
 *             transport's push function;
 *   oversize  a raw application-data record header announcing 18000 bytes
 *             (more than any TLS version allows: 2^14 + 256 in 1.3, + 2048
 *             in 1.2) and 18000 bytes, written straight to the socket.
 * Then it reads until the server ends the connection. On stdout:
 *   first STATUS          the status of the good request
 *   outcome alert|eof|reset|data|timeout|error
 *   detail TEXT           alert name, how TCP ended, or GnuTLS's error
 *   seconds S             from the bad record to the end
 * Exit 0 if the server ended the connection without answering the bad
 * record (outcome alert, eof or reset), 1 otherwise, 2 for bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#define OVERSIZE 18000u

struct peer {
	int fd;
	gnutls_session_t s;
	bool armed;       /* flip the tag of the next application-data record */
	bool flipped;
	int rx_errno;     /* of the last failed recv */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: evil-peer --host ADDR --port N --mode badtag|oversize "
		   "[--version 1.2|1.3] [--timeout SECS]\n");
}

static bool write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* GnuTLS hands over whole records (header and body as separate iovecs):
 * gather them, and when armed corrupt the first application-data record's
 * last byte, which in every AEAD suite is part of the tag. */
static ssize_t push(gnutls_transport_ptr_t p, const giovec_t *iov, int n)
{
	struct peer *pe = p;
	size_t total = 0, off = 0;
	uint8_t *buf;

	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	buf = malloc(total ? total : 1);
	if (!buf) {
		gnutls_transport_set_errno(pe->s, ENOMEM);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		memcpy(buf + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	for (off = 0; pe->armed && off + 5 <= total;) {
		size_t len = (size_t)buf[off + 3] << 8 | buf[off + 4];

		if (off + 5 + len > total || !len)
			break;
		if (buf[off] == 23) {
			buf[off + 5 + len - 1] ^= 0x01;
			pe->armed = false;
			pe->flipped = true;
		}
		off += 5 + len;
	}
	if (!write_all(pe->fd, buf, total)) {
		gnutls_transport_set_errno(pe->s, errno);
		free(buf);
		return -1;
	}
	free(buf);
	return (ssize_t)total;
}

static ssize_t pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
	struct peer *pe = p;
	ssize_t r;

	do
		r = recv(pe->fd, buf, len, 0);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		pe->rx_errno = errno;
		gnutls_transport_set_errno(pe->s, errno);
	}
	return r;
}

static int pull_timeout(gnutls_transport_ptr_t p, unsigned ms)
{
	struct peer *pe = p;
	struct pollfd pfd = {.fd = pe->fd, .events = POLLIN};

	return poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms);
}

static int dial(const char *host, const char *port, unsigned timeout)
{
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
				 .ai_socktype = SOCK_STREAM};
	struct timeval tv = {.tv_sec = timeout};
	struct addrinfo *ai;
	int fd, r;

	r = getaddrinfo(host, port, &hints, &ai);
	if (r) {
		fprintf(stderr, "evil-peer: %s port %s: %s\n", host, port, gai_strerror(r));
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	/* Every blocking call is bounded: nothing here may hang. */
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
	    connect(fd, ai->ai_addr, ai->ai_addrlen)) {
		fprintf(stderr, "evil-peer: connect %s port %s: %s\n", host, port, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

static const char *content_length(const char *head, const char *end)
{
	for (const char *p = head; p < end; p++)
		if (!strncasecmp(p, "\r\nContent-Length:", 17))
			return p + 17;
	return NULL;
}

/* One HTTP/1.1 response (head and Content-Length body): its status, or -1. */
static int read_response(struct peer *pe)
{
	char buf[8192];
	size_t have = 0, need = 0;
	char *end = NULL;
	int status = -1;

	for (;;) {
		ssize_t r;

		if (end && have >= need)
			return status;
		if (have == sizeof(buf) - 1) {
			if (!end)
				return -1;
			need -= have; /* body bytes: count and drop */
			have = 0;
		}
		pe->rx_errno = 0;
		r = gnutls_record_recv(pe->s, buf + have, sizeof(buf) - 1 - have);
		/* AGAIN without a recv that timed out: a record with nothing
		 * for us (TLS 1.3 NewSessionTicket). */
		if (r == GNUTLS_E_INTERRUPTED || (r == GNUTLS_E_AGAIN && !pe->rx_errno))
			continue;
		if (r <= 0) { /* AGAIN: SO_RCVTIMEO ran out */
			fprintf(stderr, "evil-peer: first response: %s\n",
				r ? gnutls_strerror((int)r) : "connection closed");
			return -1;
		}
		have += (size_t)r;
		buf[have] = 0;
		if (!end && (end = strstr(buf, "\r\n\r\n"))) {
			const char *cl = content_length(buf, end);

			if (sscanf(buf, "HTTP/1.1 %d", &status) != 1 || !cl)
				return -1;
			need = (size_t)(end + 4 - buf) + strtoul(cl, NULL, 10);
		}
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"host", required_argument, NULL, 'h'}, {"port", required_argument, NULL, 'p'},
		{"mode", required_argument, NULL, 'm'}, {"version", required_argument, NULL, 'v'},
		{"timeout", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'H'},
		{NULL, 0, NULL, 0},
	};
	const char *host = NULL, *port = NULL, *mode = NULL, *version = "1.3";
	const char *outcome = "error", *err_where = NULL;
	const char *first = "GET /small.txt HTTP/1.1\r\nHost: kite.test\r\nUser-Agent: evil-first\r\n\r\n";
	const char *bad = "GET /small.txt HTTP/1.1\r\nHost: kite.test\r\nUser-Agent: evil-bad\r\n\r\n";
	gnutls_certificate_credentials_t cred = NULL;
	gnutls_datum_t alpn = {(unsigned char *)"http/1.1", 8};
	struct peer pe = {.fd = -1};
	char detail[256] = "";
	unsigned timeout = 20;
	double t0 = 0;
	int o, r, status, ret = 1;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'h': host = optarg; break;
		case 'p': port = optarg; break;
		case 'm': mode = optarg; break;
		case 'v': version = optarg; break;
		case 't': timeout = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'H': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!host || !port || !mode || (strcmp(mode, "badtag") && strcmp(mode, "oversize")) ||
	    (strcmp(version, "1.2") && strcmp(version, "1.3")) || !timeout || optind != argc) {
		usage(stderr);
		return 2;
	}

	pe.fd = dial(host, port, timeout);
	if (pe.fd < 0)
		return 1;
	if (gnutls_certificate_allocate_credentials(&cred) < 0 ||
	    gnutls_init(&pe.s, GNUTLS_CLIENT) < 0) {
		err_where = "gnutls_init";
		goto out;
	}
	r = gnutls_priority_set_direct(pe.s, !strcmp(version, "1.3") ?
				       "NORMAL:-VERS-ALL:+VERS-TLS1.3" :
				       "NORMAL:-VERS-ALL:+VERS-TLS1.2", NULL);
	if (!r)
		r = gnutls_credentials_set(pe.s, GNUTLS_CRD_CERTIFICATE, cred);
	if (!r)
		r = gnutls_alpn_set_protocols(pe.s, &alpn, 1, 0);
	if (r < 0) {
		err_where = "session setup";
		goto out;
	}
	/* The server's self-signed certificate is not what is tested here:
	 * no verification function is set. */
	gnutls_transport_set_ptr(pe.s, &pe);
	gnutls_transport_set_vec_push_function(pe.s, push);
	gnutls_transport_set_pull_function(pe.s, pull);
	gnutls_transport_set_pull_timeout_function(pe.s, pull_timeout);
	gnutls_handshake_set_timeout(pe.s, timeout * 1000);
	do
		r = gnutls_handshake(pe.s);
	while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0) {
		fprintf(stderr, "evil-peer: handshake: %s\n", gnutls_strerror(r));
		goto out;
	}
	fprintf(stderr, "evil-peer: %s %s\n", gnutls_protocol_get_name(gnutls_protocol_get_version(pe.s)),
		gnutls_cipher_get_name(gnutls_cipher_get(pe.s)));

	if (gnutls_record_send(pe.s, first, strlen(first)) != (ssize_t)strlen(first)) {
		err_where = "first request";
		goto out;
	}
	status = read_response(&pe);
	printf("first %d\n", status);
	if (status < 0)
		goto out;

	t0 = now_s();
	if (!strcmp(mode, "badtag")) {
		pe.armed = true;
		r = (int)gnutls_record_send(pe.s, bad, strlen(bad));
		if (r != (int)strlen(bad) || !pe.flipped) {
			err_where = "bad request";
			goto out;
		}
	} else {
		uint8_t *rec = malloc(5 + OVERSIZE);

		if (!rec) {
			err_where = "malloc";
			goto out;
		}
		rec[0] = 23;
		rec[1] = 3;
		rec[2] = 3;
		rec[3] = (uint8_t)(OVERSIZE >> 8);
		rec[4] = (uint8_t)OVERSIZE;
		for (size_t i = 5; i < 5 + OVERSIZE; i++)
			rec[i] = (uint8_t)(i * 131u + 7u);
		/* The server may end the connection before all of it is in. */
		(void)write_all(pe.fd, rec, 5 + OVERSIZE);
		free(rec);
	}

	/* What the server does about it. */
	for (;;) {
		char buf[4096];
		ssize_t n;

		pe.rx_errno = 0;
		n = gnutls_record_recv(pe.s, buf, sizeof(buf));
		if (n == GNUTLS_E_INTERRUPTED || (n == GNUTLS_E_AGAIN && !pe.rx_errno))
			continue;
		if (n > 0) {
			outcome = "data";
			snprintf(detail, sizeof(detail), "%zd bytes: %.40s", n, buf);
			break;
		}
		if (n == 0) {
			outcome = "eof";
			snprintf(detail, sizeof(detail), "close_notify");
		} else if (n == GNUTLS_E_FATAL_ALERT_RECEIVED || n == GNUTLS_E_WARNING_ALERT_RECEIVED) {
			outcome = "alert";
			snprintf(detail, sizeof(detail), "%s",
				 gnutls_alert_get_name(gnutls_alert_get(pe.s)));
		} else if (n == GNUTLS_E_PREMATURE_TERMINATION) {
			outcome = "eof";
			snprintf(detail, sizeof(detail), "TCP FIN without close_notify");
		} else if (n == GNUTLS_E_PULL_ERROR && pe.rx_errno == ECONNRESET) {
			outcome = "reset";
			snprintf(detail, sizeof(detail), "TCP reset");
		} else if (n == GNUTLS_E_AGAIN) {
			outcome = "timeout"; /* SO_RCVTIMEO ran out */
		} else {
			snprintf(detail, sizeof(detail), "%s (recv: %s)", gnutls_strerror((int)n),
				 strerror(pe.rx_errno));
		}
		break;
	}
	printf("outcome %s\n", outcome);
	if (detail[0])
		printf("detail %s\n", detail);
	printf("seconds %.3f\n", now_s() - t0);
	ret = strcmp(outcome, "alert") && strcmp(outcome, "eof") && strcmp(outcome, "reset");
out:
	if (err_where) {
		fprintf(stderr, "evil-peer: %s failed\n", err_where);
		printf("outcome error\ndetail %s failed\n", err_where);
	}
	if (pe.s)
		gnutls_deinit(pe.s);
	if (cred)
		gnutls_certificate_free_credentials(cred);
	close(pe.fd);
	return ret;
}
