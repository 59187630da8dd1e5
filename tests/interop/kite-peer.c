/* SPDX-License-Identifier: MIT */
/*
 * kite-peer - one kite TLS endpoint for interop tests against real TLS
 * implementations (gnutls-cli, openssl s_client / s_server).
 *
 *   kite-peer [--port-file F] [--cert C --key K] [--priority P]
 *             [--send-bytes N] [--expect-bytes N] [--client HOST:PORT]
 *             [--seed S] [--timeout SECS]
 *   kite-peer --probe
 *
 * --probe prints what kite_caps_get() found, one line each, and exits:
 *   caps ulp ERR REASON / caps rekey ERR REASON /
 *   caps offload VERSION CIPHER DIR ERR REASON   (ERR 0: available)
 * (the interop script uses it to learn the kernel's abilities and how many
 * kTLS sockets the probe itself installs: /proc/net/tls_stat counts those).
 *
 * Server mode (default): listen on 127.0.0.1:0, write the port to F, accept
 * one connection. Client mode (--client): connect to HOST:PORT. Then:
 *
 *   1. kite_handshake; one line on stderr with kite_conn_info, and
 *      machine-readable lines on stdout:
 *        info VERSION CIPHER
 *        ktls tx|rx 1|0 REASON
 *   2. At the same time (non-blocking socket, poll loop, so neither side can
 *      block the other): send N bytes (t_fill data with seed S, the same
 *      bytes t_temp_file writes; kite_sendfile from such a file above 64 KiB,
 *      kite_send below) and receive until --expect-bytes bytes or, without
 *      it, until close_notify.
 *   3. Print on stdout
 *        received BYTES SHA256HEX
 *        sent BYTES SHA256HEX
 *      (SHA-256 of exactly the bytes received / handed to kite), then
 *      kite_shutdown, wait for the peer to close, exit 0.
 *
 * On any error the received/sent lines still report what was done (so a
 * script can check that every byte delivered was right), followed by
 *        error ERRNO_NAME MESSAGE
 * and the exit status is 1. With KITE_REQUIRE_KTLS=1 both directions must be
 * in the kernel after the handshake (exit 1 with the reasons otherwise).
 * Unexpected extra bytes after --expect-bytes are an error too.
 */
#include "common.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>

#define SEND_FILE_MIN (64u << 10) /* use kite_sendfile from this size on */
#define SEND_CHUNK (256u << 10)   /* bytes per send call in the poll loop */
#define RECV_BUF (64u << 10)
#define DRAIN_MS 5000             /* wait for the peer's close after ours */

struct opts {
	const char *port_file, *cert, *key, *priority, *client;
	unsigned long long send_bytes, expect_bytes;
	bool have_expect, probe;
	uint64_t seed;
	unsigned timeout;
};

struct sha {
	gnutls_hash_hd_t h;
	unsigned long long bytes;
};

static struct timespec deadline;

static void usage(FILE *f)
{
	fprintf(f, "usage: kite-peer [--port-file F] [--cert C --key K] [--priority P]\n"
		   "                 [--send-bytes N] [--expect-bytes N] [--client HOST:PORT]\n"
		   "                 [--seed S] [--timeout SECS]\n"
		   "       kite-peer --probe\n");
}

__attribute__((noreturn, format(printf, 1, 2)))
static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "kite-peer: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static unsigned long long parse_num(const char *opt, const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || s[0] == '-') {
		usage(stderr);
		die("%s: not a number: '%s'", opt, s);
	}
	return v;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->seed = 1;
	o->timeout = 120;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		}
		if (!strcmp(a, "--probe")) {
			o->probe = true;
			continue;
		}
		if (!v) {
			usage(stderr);
			die("%s: missing argument or unknown option", a);
		}
		i++;
		if (!strcmp(a, "--port-file"))
			o->port_file = v;
		else if (!strcmp(a, "--cert"))
			o->cert = v;
		else if (!strcmp(a, "--key"))
			o->key = v;
		else if (!strcmp(a, "--priority"))
			o->priority = v;
		else if (!strcmp(a, "--client"))
			o->client = v;
		else if (!strcmp(a, "--send-bytes"))
			o->send_bytes = parse_num(a, v);
		else if (!strcmp(a, "--expect-bytes"))
			o->expect_bytes = parse_num(a, v), o->have_expect = true;
		else if (!strcmp(a, "--seed"))
			o->seed = parse_num(a, v);
		else if (!strcmp(a, "--timeout"))
			o->timeout = (unsigned)parse_num(a, v);
		else {
			usage(stderr);
			die("unknown option %s", a);
		}
	}
	if (!o->client && !o->port_file && !o->probe) {
		usage(stderr);
		die("server mode needs --port-file");
	}
	if (!o->cert != !o->key) {
		usage(stderr);
		die("--cert and --key go together");
	}
	if (!o->timeout)
		o->timeout = 1;
}

/* Milliseconds left before the deadline (at least 0). */
static int ms_left(void)
{
	struct timespec now;
	long long ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (long long)(deadline.tv_sec - now.tv_sec) * 1000 +
	     (deadline.tv_nsec - now.tv_nsec) / 1000000;
	return ms < 0 ? 0 : ms > 1000000 ? 1000000 : (int)ms;
}

/* poll one fd until events or the deadline; false on timeout. */
static bool wait_fd(int fd, short events, int max_ms)
{
	struct pollfd p = {.fd = fd, .events = events};
	int r, ms = ms_left();

	if (max_ms >= 0 && max_ms < ms)
		ms = max_ms;
	do
		r = poll(&p, 1, ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		die("poll: %s", strerror(errno));
	return r > 0;
}

static void sha_init(struct sha *s)
{
	if (gnutls_hash_init(&s->h, GNUTLS_DIG_SHA256) < 0)
		die("gnutls_hash_init(SHA256) failed");
	s->bytes = 0;
}

static void sha_add(struct sha *s, const void *p, size_t n)
{
	if (n && gnutls_hash(s->h, p, n) < 0)
		die("gnutls_hash failed");
	s->bytes += n;
}

static void sha_hex(struct sha *s, char out[65])
{
	uint8_t d[32];

	gnutls_hash_deinit(s->h, d);
	s->h = NULL;
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static const char *errname(int err)
{
	const char *n = err < 0 ? strerrorname_np(-err) : NULL;

	return n ? n : "EUNKNOWN";
}

static void write_port_file(const char *path, unsigned port)
{
	char tmp[4200];
	FILE *f;

	/* Written whole and renamed, so a poller never sees a partial line. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f || fprintf(f, "%u\n", port) < 0 || fclose(f) || rename(tmp, path))
		die("writing port file %s: %s", path, strerror(errno));
}

static int listen_accept(const char *port_file)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), fd;

	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &alen))
		die("listen on 127.0.0.1: %s", strerror(errno));
	write_port_file(port_file, ntohs(a.sin_port));
	if (!wait_fd(l, POLLIN, -1))
		die("timeout waiting for a connection on port %u", ntohs(a.sin_port));
	fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		die("accept: %s", strerror(errno));
	close(l);
	return fd;
}

static int connect_to(const char *hostport, char *host, size_t hostlen)
{
	const char *colon = strrchr(hostport, ':');
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
	int r, fd = -1;

	if (!colon || colon == hostport || (size_t)(colon - hostport) >= hostlen)
		die("--client wants HOST:PORT, got '%s'", hostport);
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = 0;
	r = getaddrinfo(host, colon + 1, &hints, &res);
	if (r)
		die("%s: %s", hostport, gai_strerror(r));
	/* The server may still be starting: retry refused connections until
	 * the deadline. */
	for (;;) {
		for (ai = res; ai; ai = ai->ai_next) {
			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
			if (fd >= 0 && !connect(fd, ai->ai_addr, ai->ai_addrlen))
				break;
			r = errno;
			if (fd >= 0)
				close(fd);
			fd = -1;
		}
		if (fd >= 0 || ms_left() == 0)
			break;
		usleep(100 * 1000);
	}
	freeaddrinfo(res);
	if (fd < 0)
		die("connect %s: %s", hostport, strerror(r));
	return fd;
}

/* The outgoing bytes: a t_temp_file (read by kite_sendfile and for the
 * hash) or, when small, the same t_fill bytes in memory. */
struct source {
	int fd;
	uint8_t *mem;
	unsigned long long len;
};

static void source_open(struct source *s, unsigned long long len, uint64_t seed)
{
	uint64_t fnv;

	memset(s, 0, sizeof(*s));
	s->fd = -1;
	s->len = len;
	if (len < SEND_FILE_MIN) {
		s->mem = malloc(len ? len : 1);
		if (!s->mem)
			die("out of memory");
		t_fill(s->mem, len, seed);
	} else {
		s->fd = t_temp_file(len, seed, &fnv);
	}
}

/* Hash bytes [off, off + n) of the source. */
static void source_hash(struct source *s, struct sha *h, unsigned long long off, size_t n)
{
	static uint8_t buf[RECV_BUF];

	if (s->mem) {
		sha_add(h, s->mem + off, n);
		return;
	}
	while (n) {
		size_t k = n < sizeof(buf) ? n : sizeof(buf);
		ssize_t r = pread(s->fd, buf, k, (off_t)off);

		if (r <= 0)
			die("re-reading the send file: %s", r ? strerror(errno) : "short file");
		sha_add(h, buf, (size_t)r);
		off += (size_t)r, n -= (size_t)r;
	}
}

struct run {
	struct kite_conn *conn;
	int fd;
	struct sha rx, tx;
	int err;           /* first error, -errno */
	char errmsg[512];
};

static void set_err(struct run *r, int err)
{
	if (r->err)
		return;
	r->err = err;
	snprintf(r->errmsg, sizeof(r->errmsg), "%s", kite_conn_strerror(r->conn, err));
}

static void set_err_msg(struct run *r, int err, const char *msg)
{
	if (r->err)
		return;
	r->err = err;
	snprintf(r->errmsg, sizeof(r->errmsg), "%s", msg);
}

/* Send and receive at the same time until both are done or an error. */
static void transfer(struct run *r, struct source *src, const struct opts *o)
{
	static uint8_t buf[RECV_BUF];
	unsigned long long want_rx = o->have_expect ? o->expect_bytes : ~0ull;
	off_t off = 0;
	bool tx_done = src->len == 0, rx_done = o->have_expect && o->expect_bytes == 0;

	while (!r->err && (!tx_done || !rx_done)) {
		short events = 0;
		bool progress = false;

		if (!tx_done) {
			unsigned long long left = src->len - r->tx.bytes;
			size_t n = left < SEND_CHUNK ? (size_t)left : SEND_CHUNK;
			ssize_t k;

			if (src->mem)
				k = kite_send(r->conn, src->mem + r->tx.bytes, n);
			else
				k = kite_sendfile(r->conn, src->fd, &off, n);
			if (k > 0 && !src->mem && (unsigned long long)off != r->tx.bytes + (size_t)k) {
				char m[160];

				snprintf(m, sizeof(m), "kite_sendfile returned %zd but moved the offset "
					 "from %llu to %lld", k, r->tx.bytes, (long long)off);
				set_err_msg(r, -EIO, m);
				break;
			}
			if (k > 0) {
				source_hash(src, &r->tx, r->tx.bytes, (size_t)k);
				tx_done = r->tx.bytes == src->len;
				progress = true;
			} else if (k == -EAGAIN) {
				events |= kite_conn_poll_events(r->conn);
			} else {
				set_err(r, k ? (int)k : -EIO);
				break;
			}
		}
		for (int i = 0; !rx_done && i < 16; i++) {
			unsigned long long left = want_rx - r->rx.bytes;
			size_t n = left < sizeof(buf) ? (size_t)left : sizeof(buf);
			ssize_t k = kite_recv(r->conn, buf, n);

			if (k > 0) {
				sha_add(&r->rx, buf, (size_t)k);
				rx_done = r->rx.bytes == want_rx;
				progress = true;
			} else if (k == 0) {
				rx_done = true;
				if (o->have_expect) {
					char m[160];

					snprintf(m, sizeof(m),
						 "peer closed (close_notify) after %llu of %llu bytes",
						 r->rx.bytes, o->expect_bytes);
					set_err_msg(r, -ECONNRESET, m);
				}
			} else if (k == -EAGAIN) {
				events |= kite_conn_poll_events(r->conn);
				break;
			} else {
				set_err(r, (int)k);
				break;
			}
		}
		if (r->err || progress)
			continue;
		if (!events)
			events = POLLIN;
		if (!wait_fd(r->fd, events, -1)) {
			char m[160];

			snprintf(m, sizeof(m), "timeout: sent %llu of %llu, received %llu bytes",
				 r->tx.bytes, src->len, r->rx.bytes);
			set_err_msg(r, -ETIMEDOUT, m);
		}
	}
}

/* close_notify, then read until the peer closes: unread data would make our
 * close() a TCP reset that might destroy what the peer has not read yet. */
static void finish(struct run *r, const struct opts *o)
{
	static uint8_t buf[RECV_BUF];
	unsigned long long extra = 0;
	int k;

	for (;;) {
		k = kite_shutdown(r->conn);
		if (k != -EAGAIN)
			break;
		if (!wait_fd(r->fd, POLLOUT, -1)) {
			k = -ETIMEDOUT;
			break;
		}
	}
	if (k && !r->err) {
		set_err(r, k);
		return;
	}
	shutdown(r->fd, SHUT_WR);
	if (r->err) {
		/* The connection is unusable: do not read through kite (or the
		 * kernel) any more, just give the peer time to close. */
		wait_fd(r->fd, POLLRDHUP, DRAIN_MS);
		return;
	}
	for (;;) {
		ssize_t n = kite_recv(r->conn, buf, sizeof(buf));

		if (n > 0) {
			extra += (unsigned long long)n;
			continue;
		}
		if (n == -EAGAIN && wait_fd(r->fd, POLLIN, DRAIN_MS))
			continue;
		if (n < 0 && n != -EAGAIN)
			fprintf(stderr, "kite-peer: after close_notify: %s (ignored)\n",
				kite_conn_strerror(r->conn, (int)n));
		break;
	}
	if (extra && o->have_expect) {
		char m[160];

		snprintf(m, sizeof(m), "peer sent %llu bytes more than the %llu expected", extra,
			 o->expect_bytes);
		set_err_msg(r, -EPROTO, m);
	}
}

static int probe(void)
{
	const struct kite_caps *c = kite_caps_get();

	printf("caps ulp %d %s\n", c->ulp, c->ulp_reason);
	printf("caps rekey %d %s\n", c->rekey, c->rekey_reason);
	for (int v = 0; v < KITE_VERSION_COUNT; v++)
		for (int k = 0; k < KITE_CIPHER_COUNT; k++)
			for (int d = 0; d < KITE_DIR_COUNT; d++)
				printf("caps offload %s %s %s %d %s\n", kite_version_name(v),
				       kite_cipher_name(k), kite_dir_name(d), c->offload[v][k][d],
				       c->offload_reason[v][k][d]);
	return fflush(stdout) ? 1 : 0;
}

static void report_line(const char *what, struct sha *s)
{
	char hex[65];

	sha_hex(s, hex);
	printf("%s %llu %s\n", what, s->bytes, hex);
}

int main(int argc, char **argv)
{
	struct opts o;
	struct t_creds creds;
	struct kite_ctx *ctx;
	struct kite_conn_info info;
	struct source src;
	struct run run = {0};
	char host[256] = "";
	int r;

	parse_args(argc, argv, &o);
	signal(SIGPIPE, SIG_IGN); /* sendfile(2) has no MSG_NOSIGNAL */
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += o.timeout;
	alarm(o.timeout + 30); /* backstop: SIGALRM kills us */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (o.probe)
		return probe();

	r = kite_ctx_create(&ctx, o.client ? KITE_CLIENT : KITE_SERVER);
	if (r)
		die("kite_ctx_create: %s", kite_strerror(r));
	if (!o.client) {
		if (!o.cert) {
			t_make_creds(&creds);
			o.cert = creds.cert, o.key = creds.key;
		}
		if (kite_ctx_set_credentials(ctx, o.cert, o.key))
			die("credentials %s / %s: %s", o.cert, o.key, kite_ctx_error(ctx));
	} else if (kite_ctx_set_verify(ctx, false)) {
		die("kite_ctx_set_verify: %s", kite_ctx_error(ctx));
	}
	if (o.priority && kite_ctx_set_priority(ctx, o.priority))
		die("priority '%s': %s", o.priority, kite_ctx_error(ctx));
	if (kite_ctx_set_ktls(ctx, KITE_KTLS_DEFAULT))
		die("kite_ctx_set_ktls: %s", kite_ctx_error(ctx));
	source_open(&src, o.send_bytes, o.seed);

	run.fd = o.client ? connect_to(o.client, host, sizeof(host)) : listen_accept(o.port_file);
	if (fcntl(run.fd, F_SETFL, fcntl(run.fd, F_GETFL) | O_NONBLOCK))
		die("O_NONBLOCK: %s", strerror(errno));
	r = kite_conn_create(&run.conn, ctx, run.fd);
	if (r)
		die("kite_conn_create: %s", kite_strerror(r));
	if (o.client && host[0] && strspn(host, "0123456789.:") != strlen(host) &&
	    kite_conn_set_server_name(run.conn, host))
		die("server name %s rejected", host);

	while ((r = kite_handshake(run.conn)) == -EAGAIN)
		if (!wait_fd(run.fd, kite_conn_poll_events(run.conn), -1))
			die("handshake timed out");
	if (r)
		die("handshake: %s", kite_conn_strerror(run.conn, r));

	if (kite_conn_info(run.conn, &info))
		die("kite_conn_info failed");
	fprintf(stderr, "kite-peer: %s %s %s; tx: %s; rx: %s\n",
		o.client ? "client" : "server", info.version_name, info.cipher_name,
		info.ktls_reason[KITE_TX], info.ktls_reason[KITE_RX]);
	printf("info %s %s\n", info.version_name, info.cipher_name);
	for (int d = 0; d < KITE_DIR_COUNT; d++)
		printf("ktls %s %d %s\n", kite_dir_name(d), info.ktls[d], info.ktls_reason[d]);
	if (t_require_ktls() && !(info.ktls[KITE_TX] && info.ktls[KITE_RX])) {
		printf("error EOPNOTSUPP KITE_REQUIRE_KTLS=1 but tx: %s; rx: %s\n",
		       info.ktls_reason[KITE_TX], info.ktls_reason[KITE_RX]);
		die("KITE_REQUIRE_KTLS=1 but not both directions are in the kernel: tx: %s; rx: %s",
		    info.ktls_reason[KITE_TX], info.ktls_reason[KITE_RX]);
	}

	sha_init(&run.rx);
	sha_init(&run.tx);
	transfer(&run, &src, &o);
	/* Report before the close: the counts are final now. */
	report_line("received", &run.rx);
	report_line("sent", &run.tx);
	finish(&run, &o);
	if (run.err) {
		printf("error %s %s\n", errname(run.err), run.errmsg);
		fprintf(stderr, "kite-peer: error %s: %s\n", errname(run.err), run.errmsg);
	}
	fflush(stdout);

	kite_conn_destroy(run.conn);
	close(run.fd);
	kite_ctx_destroy(ctx);
	if (src.fd >= 0)
		close(src.fd);
	free(src.mem);
	return run.err ? 1 : 0;
}
