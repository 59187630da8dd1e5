/* SPDX-License-Identifier: MIT */
/*
 * soak-client - the load generator and idle-connection holder behind the
 * kite-serve soak tests (soak.py in this directory drives it).
 *
 *   soak-client load --connect HOST:PORT --root DIR --requests N
 *                    [--clients C] [--seed S] [--tls mix|1.2|1.3]
 *                    [--client-ktls off|on|mix] [--timeout SECS]
 *
 *     C threads, each a sequence of TLS connections through libkite's
 *     client side on blocking sockets. Every connection draws a plan: TLS
 *     version and AEAD, 1..10 requests (GET, HEAD, Range; sometimes three
 *     pipelined at once), and an ending: Connection: close (the server
 *     must answer and then close cleanly), our close_notify, an abrupt
 *     close (FIN or RST without close_notify), a reset in the middle of a
 *     body, or half a request head and then a close. Exactly N requests
 *     are sent. Every body is compared byte for byte with the file in DIR
 *     (read into memory at start), every Range slice with its slice,
 *     Content-Length and Content-Range with what they must say.
 *
 *   soak-client idle --connect HOST:PORT --count N [--silent] [--get PATH]
 *                    [--threads T] [--timeout SECS]
 *
 *     Opens N connections that then say nothing: TLS handshake done (and
 *     with --get, one keep-alive GET of PATH on every second connection
 *     first), or with --silent only the TCP connect, not even a
 *     ClientHello. Prints "HELD n=N ..." once all are open, then waits
 *     until the server has closed every one and prints when
 *     ("CLOSED n=N min_ms=.. max_ms=..", times from each connection's last
 *     activity).
 *
 * The last line is "RESULT key=value ..." for the driver. Exit 0 when
 * everything was as expected, 1 otherwise, 2 for bad arguments.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define RBUF (64u << 10)    /* receive buffer per connection */
#define HEAD_MAX (16u << 10) /* a response head must fit */
#define MAX_PIPE 3
#define MAX_REPORTS 20      /* first problems printed in full */

/* ---- Options and shared state -------------------------------------------- */

static struct {
	const char *host, *port, *root;
	long requests;
	unsigned clients, threads, count;
	uint64_t seed;
	int tls;           /* -1 mix, else enum kite_version */
	int client_ktls;   /* 0 off, 1 on, -1 mix */
	unsigned timeout_s;
	bool silent;
	const char *get;
} opt = {.clients = 16, .threads = 8, .seed = 1, .tls = -1, .timeout_s = 30};

struct file {
	char name[128];
	const uint8_t *data;
	size_t size;
};
static struct file *files;
static unsigned nfiles;

static struct addrinfo *server_ai;
static struct kite_ctx *ctxs[KITE_VERSION_COUNT][3][2]; /* version, AEAD, client kTLS */
static const enum kite_cipher aeads[3] = {KITE_AES_128_GCM, KITE_AES_256_GCM,
					  KITE_CHACHA20_POLY1305};

static atomic_long tickets;          /* requests handed out so far */
static atomic_uint reports;          /* problems printed so far */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

__attribute__((format(printf, 1, 2)))
static void report(const char *fmt, ...)
{
	va_list ap;

	if (atomic_fetch_add(&reports, 1) >= MAX_REPORTS)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "soak-client: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

__attribute__((noreturn, format(printf, 1, 2)))
static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "soak-client: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* The whole run has a deadline: a hang becomes a failure with a message. */
static void on_alarm(int sig)
{
	static const char msg[] = "soak-client: overall timeout, giving up\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing to do */
	}
	_exit(3);
}

/* splitmix64: a per-thread stream, reproducible from --seed. */
struct rng { uint64_t s; };

static uint64_t rnd(struct rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n), n > 0. */
static uint64_t below(struct rng *r, uint64_t n)
{
	return rnd(r) % n;
}

/* ---- Setup --------------------------------------------------------------- */

static void load_root(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	unsigned cap = 0;

	if (!d)
		die("--root %s: %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		char path[4096];
		struct stat st;
		struct file *f;
		int fd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (stat(path, &st) || !S_ISREG(st.st_mode) || strlen(de->d_name) >= sizeof(f->name))
			continue;
		if (nfiles == cap) {
			cap = cap ? 2 * cap : 64;
			files = realloc(files, cap * sizeof(*files));
			if (!files)
				die("out of memory");
		}
		f = &files[nfiles];
		snprintf(f->name, sizeof(f->name), "%s", de->d_name);
		f->size = (size_t)st.st_size;
		f->data = NULL;
		if (f->size) {
			/* A private copy in memory: what the server sends must
			 * match what the file held when we started. */
			uint8_t *p = malloc(f->size);
			size_t got = 0;

			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0 || !p)
				die("%s: %s", path, strerror(errno));
			while (got < f->size) {
				ssize_t r = read(fd, p + got, f->size - got);

				if (r <= 0)
					die("reading %s: %s", path, r ? strerror(errno) : "short file");
				got += (size_t)r;
			}
			close(fd);
			f->data = p;
		}
		nfiles++;
	}
	closedir(d);
	if (!nfiles)
		die("--root %s: no regular files", dir);
}

static void resolve(const char *hostport)
{
	static char host[256];
	const char *colon = strrchr(hostport, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
	int r;

	if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof(host))
		die("--connect wants HOST:PORT, got '%s'", hostport);
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = 0;
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = 0;
	}
	r = getaddrinfo(host, colon + 1, &hints, &server_ai);
	if (r)
		die("--connect %s: %s", hostport, gai_strerror(r));
}

static void make_ctxs(void)
{
	for (int v = 0; v < KITE_VERSION_COUNT; v++)
		for (int a = 0; a < 3; a++)
			for (int k = 0; k < 2; k++) {
				struct kite_ctx *c;

				t_ok(kite_ctx_create(&c, KITE_CLIENT));
				t_ok(kite_ctx_set_verify(c, false));
				if (kite_ctx_set_priority(c, t_priority((enum kite_version)v, aeads[a])))
					die("priority: %s", kite_ctx_error(c));
				t_ok(kite_ctx_set_ktls(c, k ? KITE_KTLS_DEFAULT : 0));
				ctxs[v][a][k] = c;
			}
}

/* A blocking TCP connection to the server with send/receive timeouts
 * (SO_RCVTIMEO/SO_SNDTIMEO: an unresponsive server fails the call with
 * EAGAIN instead of blocking forever). -errno on failure. */
static int dial(void)
{
	struct timeval tv = {.tv_sec = opt.timeout_s};
	int one = 1;
	int fd = socket(server_ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
	    connect(fd, server_ai->ai_addr, server_ai->ai_addrlen)) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

/* Close without close_notify; rst: SO_LINGER 0 makes close(2) send a RST
 * and drop whatever is still queued either way. */
static void close_abrupt(int fd, bool rst)
{
	if (rst) {
		struct linger l = {.l_onoff = 1, .l_linger = 0};

		(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	}
	close(fd);
}

/* ---- load mode ----------------------------------------------------------- */

struct stats {
	uint64_t verified, aborted, partial, mismatches, errors;
	uint64_t bytes, conns, gets, heads, ranges, unsat, pipelined;
	uint64_t end[5];   /* by ending, see enum ending */
	uint64_t tls[KITE_VERSION_COUNT], client_ktls;
};

enum ending { END_CLOSE_HDR, END_NOTIFY, END_ABRUPT, END_MIDBODY, END_PARTIAL };
static const char *const ending_name[5] = {"conn-close", "close-notify", "abrupt", "mid-body",
					   "partial-head"};

struct rq {
	unsigned file;
	bool head, close;
	int range;        /* 0 none, 1 a-b, 2 a-, 3 -n, 4 unsatisfiable a- */
	uint64_t a, b;    /* as sent */
	int want;         /* status */
	uint64_t start, len; /* expected slice (len: Content-Length for 200/206) */
};

struct cl {
	int fd;
	struct kite_conn *c;
	unsigned tid;
	uint64_t serial;
	struct stats *st;
	size_t off, len;
	uint8_t buf[RBUF];
};

/* More bytes into cl->buf. > 0 bytes, 0 clean close (close_notify), < 0 -errno. */
static ssize_t fill(struct cl *cl)
{
	ssize_t r;

	if (cl->off == cl->len) {
		cl->off = cl->len = 0;
	} else if (cl->len == RBUF) {
		memmove(cl->buf, cl->buf + cl->off, cl->len - cl->off);
		cl->len -= cl->off;
		cl->off = 0;
	}
	r = kite_recv(cl->c, cl->buf + cl->len, RBUF - cl->len);
	if (r > 0)
		cl->len += (size_t)r;
	return r;
}

static const char *errtext(struct cl *cl, ssize_t r)
{
	if (r == 0)
		return "connection closed";
	if (r == -EAGAIN)
		return "timed out (no data within --timeout)";
	return kite_conn_strerror(cl->c, (int)r);
}

static void describe(const struct rq *q, char *out, size_t cap)
{
	const char *m = q->head ? "HEAD" : "GET";

	switch (q->range) {
	case 1: snprintf(out, cap, "%s /%s Range: bytes=%" PRIu64 "-%" PRIu64, m, files[q->file].name, q->a, q->b); break;
	case 2: case 4: snprintf(out, cap, "%s /%s Range: bytes=%" PRIu64 "-", m, files[q->file].name, q->a); break;
	case 3: snprintf(out, cap, "%s /%s Range: bytes=-%" PRIu64, m, files[q->file].name, q->b); break;
	default: snprintf(out, cap, "%s /%s", m, files[q->file].name); break;
	}
}

/* Draw a request for file f and work out the exact answer. */
static void plan_request(struct rng *r, struct rq *q)
{
	uint64_t size, x = below(r, 100);

	memset(q, 0, sizeof(*q));
	q->file = (unsigned)below(r, nfiles);
	size = files[q->file].size;
	q->want = 200;
	q->start = 0;
	q->len = size;
	if (x < 10) {
		q->head = true;
		return;
	}
	if (x < 35) {
		q->range = 1 + (int)below(r, 3);
		if (below(r, 20) == 0)
			q->range = 4;
		if (size == 0) {
			/* Nothing can be satisfied in an empty file. */
			q->range = below(r, 2) ? 2 : 3;
			q->a = 0;
			q->b = 1 + below(r, 10);
			q->want = 416;
			return;
		}
		q->want = 206;
		switch (q->range) {
		case 1:
			q->a = below(r, size);
			/* Sometimes past the end: the server clamps. */
			q->b = q->a + below(r, below(r, 4) ? size - q->a : size + 1000);
			q->start = q->a;
			q->len = (q->b < size ? q->b : size - 1) - q->a + 1;
			break;
		case 2:
			q->a = below(r, size);
			q->start = q->a;
			q->len = size - q->a;
			break;
		case 3:
			q->b = 1 + below(r, size + 100);
			q->len = q->b < size ? q->b : size;
			q->start = size - q->len;
			break;
		case 4:
			q->a = size + below(r, 1000);
			q->want = 416;
			break;
		}
	}
}

static size_t format_request(const struct rq *q, char *out, size_t cap)
{
	char range[96] = "";
	int n;

	switch (q->range) {
	case 1: snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-%" PRIu64 "\r\n", q->a, q->b); break;
	case 2: case 4: snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-\r\n", q->a); break;
	case 3: snprintf(range, sizeof(range), "Range: bytes=-%" PRIu64 "\r\n", q->b); break;
	}
	n = snprintf(out, cap, "%s /%s HTTP/1.1\r\nHost: kite.test\r\nUser-Agent: soak-client\r\n%s%s\r\n",
		     q->head ? "HEAD" : "GET", files[q->file].name, range,
		     q->close ? "Connection: close\r\n" : "");
	return (size_t)n;
}

/* Header value (case-insensitive name) in head [p, p+n); NULL if absent. */
static const char *header(const char *p, size_t n, const char *name, size_t *vlen)
{
	size_t nl = strlen(name);
	const char *end = p + n, *line = memchr(p, '\n', n);

	while (line && line + 1 < end) {
		const char *s = line + 1, *e = memchr(s, '\n', (size_t)(end - s));

		if (!e)
			e = end;
		if ((size_t)(e - s) > nl + 1 && !strncasecmp(s, name, nl) && s[nl] == ':') {
			const char *v = s + nl + 1;

			while (v < e && (*v == ' ' || *v == '\t'))
				v++;
			*vlen = (size_t)(e - v);
			while (*vlen && (v[*vlen - 1] == '\r' || v[*vlen - 1] == ' '))
				(*vlen)--;
			return v;
		}
		line = e < end ? e : NULL;
	}
	return NULL;
}

static bool header_u64(const char *p, size_t n, const char *name, uint64_t *out)
{
	size_t vl;
	const char *v = header(p, n, name, &vl);
	char tmp[32];
	char *e;

	if (!v || !vl || vl >= sizeof(tmp))
		return false;
	memcpy(tmp, v, vl);
	tmp[vl] = 0;
	errno = 0;
	*out = strtoull(tmp, &e, 10);
	return !errno && !*e && tmp[0] >= '0' && tmp[0] <= '9';
}

static bool header_is(const char *p, size_t n, const char *name, const char *want)
{
	size_t vl;
	const char *v = header(p, n, name, &vl);

	return v && vl == strlen(want) && !strncasecmp(v, want, vl);
}

enum outcome { OK, MISMATCH, BROKEN };

/*
 * Read one response to q and check it. mid_body: read part of the body and
 * return (the caller resets the connection). Returns OK, MISMATCH (wrong
 * bytes or headers: the connection cannot be trusted any more) or BROKEN
 * (transport error).
 */
static enum outcome read_response(struct cl *cl, const struct rq *q, bool mid_body, struct rng *r)
{
	const struct file *f = &files[q->file];
	char what[256], want_cr[96];
	const char *head, *hend;
	size_t hlen, vl;
	uint64_t clen, got = 0, stop;
	int status;
	ssize_t n;

	describe(q, what, sizeof(what));
	/* The head. */
	for (;;) {
		head = (const char *)cl->buf + cl->off;
		hend = cl->len > cl->off ? memmem(head, cl->len - cl->off, "\r\n\r\n", 4) : NULL;
		if (hend)
			break;
		if (cl->len - cl->off >= HEAD_MAX) {
			report("thread %u conn %" PRIu64 ": %s: response head over %u bytes", cl->tid,
			       cl->serial, what, HEAD_MAX);
			return MISMATCH;
		}
		n = fill(cl);
		if (n <= 0) {
			report("thread %u conn %" PRIu64 ": %s: waiting for the head: %s", cl->tid,
			       cl->serial, what, errtext(cl, n));
			return BROKEN;
		}
	}
	hlen = (size_t)(hend - head) + 4;
	if (hlen < 13 || memcmp(head, "HTTP/1.1 ", 9) || sscanf(head + 9, "%3d", &status) != 1) {
		report("thread %u conn %" PRIu64 ": %s: bad status line %.40s", cl->tid, cl->serial,
		       what, head);
		return MISMATCH;
	}
	if (status != q->want) {
		report("thread %u conn %" PRIu64 ": %s: status %d, want %d", cl->tid, cl->serial, what,
		       status, q->want);
		return MISMATCH;
	}
	if (!header_u64(head, hlen, "Content-Length", &clen)) {
		report("thread %u conn %" PRIu64 ": %s: no Content-Length", cl->tid, cl->serial, what);
		return MISMATCH;
	}
	if (status != 416 && clen != q->len) {
		report("thread %u conn %" PRIu64 ": %s: Content-Length %" PRIu64 ", want %" PRIu64,
		       cl->tid, cl->serial, what, clen, q->len);
		return MISMATCH;
	}
	if (status == 206)
		snprintf(want_cr, sizeof(want_cr), "bytes %" PRIu64 "-%" PRIu64 "/%zu", q->start,
			 q->start + q->len - 1, f->size);
	else if (status == 416)
		snprintf(want_cr, sizeof(want_cr), "bytes */%zu", f->size);
	if ((status == 206 || status == 416) && !header_is(head, hlen, "Content-Range", want_cr)) {
		const char *v = header(head, hlen, "Content-Range", &vl);

		report("thread %u conn %" PRIu64 ": %s: Content-Range '%.*s', want '%s'", cl->tid,
		       cl->serial, what, v ? (int)vl : 6, v ? v : "(none)", want_cr);
		return MISMATCH;
	}
	if (q->close && !header_is(head, hlen, "Connection", "close")) {
		report("thread %u conn %" PRIu64 ": %s: Connection: close not echoed", cl->tid,
		       cl->serial, what);
		return MISMATCH;
	}
	cl->off += hlen;
	if (q->head)
		return OK;
	/* The body: compared as it arrives with the slice of the file it must
	 * be (the 416 error page is only skipped). */
	stop = mid_body && clen > 1 ? 1 + below(r, clen - 1) : clen;
	while (got < stop) {
		size_t k;

		if (cl->off == cl->len) {
			n = fill(cl);
			if (n <= 0) {
				report("thread %u conn %" PRIu64 ": %s: body cut at %" PRIu64 " of %" PRIu64
				       ": %s", cl->tid, cl->serial, what, got, clen, errtext(cl, n));
				return BROKEN;
			}
		}
		k = cl->len - cl->off;
		if (k > stop - got)
			k = (size_t)(stop - got);
		if (status != 416 && memcmp(cl->buf + cl->off, f->data + q->start + got, k)) {
			size_t i = 0;

			while (cl->buf[cl->off + i] == f->data[q->start + got + i])
				i++;
			report("thread %u conn %" PRIu64 ": %s: WRONG BYTE at body offset %" PRIu64
			       " (file offset %" PRIu64 "): got 0x%02x, want 0x%02x", cl->tid,
			       cl->serial, what, got + i, q->start + got + i, cl->buf[cl->off + i],
			       f->data[q->start + got + i]);
			return MISMATCH;
		}
		cl->off += k;
		got += k;
		cl->st->bytes += k;
	}
	return OK;
}

/* One connection's plan, start to end. false: stop (no tickets left). */
static bool run_connection(struct cl *cl, struct rng *r)
{
	struct stats *st = cl->st;
	int v = opt.tls >= 0 ? opt.tls : (int)below(r, 2);
	int a = (int)below(r, 3);
	int k = opt.client_ktls >= 0 ? opt.client_ktls : (int)below(r, 2);
	unsigned nreq = 1 + (unsigned)(below(r, 4) ? below(r, 4) : below(r, 10));
	uint64_t x = below(r, 100);
	enum ending end = x < 35 ? END_CLOSE_HDR : x < 70 ? END_NOTIFY : x < 90 ? END_ABRUPT
			: x < 96 ? END_MIDBODY : END_PARTIAL;
	bool pipeline = below(r, 8) == 0;
	unsigned done = 0;
	ssize_t n;
	int fd, e;

	/* Take this connection's tickets first: exactly --requests are sent. */
	{
		long t = atomic_fetch_add(&tickets, (long)nreq);

		if (t >= opt.requests)
			return false;
		if (t + (long)nreq > opt.requests)
			nreq = (unsigned)(opt.requests - t);
	}
	cl->serial++;
	cl->off = cl->len = 0;
	fd = dial();
	if (fd < 0) {
		report("thread %u conn %" PRIu64 ": connect: %s", cl->tid, cl->serial, strerror(-fd));
		st->errors += nreq;
		return true;
	}
	cl->fd = fd;
	e = kite_conn_create(&cl->c, ctxs[v][a][k], fd);
	if (e)
		die("kite_conn_create: %s", kite_strerror(e));
	e = kite_handshake(cl->c);
	if (e) {
		report("thread %u conn %" PRIu64 ": handshake (%s %s): %s", cl->tid, cl->serial,
		       kite_version_name((enum kite_version)v), kite_cipher_name(aeads[a]),
		       kite_conn_strerror(cl->c, e));
		st->errors += nreq;
		goto out_abrupt;
	}
	st->conns++;
	st->tls[v]++;
	if (k) {
		struct kite_conn_info info;

		if (!kite_conn_info(cl->c, &info) && info.ktls[KITE_TX] && info.ktls[KITE_RX])
			st->client_ktls++;
	}
	st->end[end]++;

	while (done < nreq) {
		struct rq q[MAX_PIPE];
		char reqbuf[MAX_PIPE * 512];
		size_t rl = 0;
		unsigned batch = pipeline ? MAX_PIPE : 1;

		if (batch > nreq - done)
			batch = nreq - done;
		/* The half head goes alone: complete requests before it in
		 * the same write would be answered to a peer that is gone
		 * (and inside UML could race the server's kTLS setup). */
		if (end == END_PARTIAL && done + batch == nreq && batch > 1)
			batch--;
		for (unsigned i = 0; i < batch; i++) {
			plan_request(r, &q[i]);
			q[i].close = end == END_CLOSE_HDR && done + i + 1 == nreq;
			rl += format_request(&q[i], reqbuf + rl, sizeof(reqbuf) - rl);
			st->gets += !q[i].head && !q[i].range;
			st->heads += q[i].head;
			st->ranges += q[i].range != 0;
			st->unsat += q[i].want == 416;
		}
		if (batch > 1)
			st->pipelined += batch;
		if (end == END_PARTIAL && done + batch == nreq) {
			/* Half of the last head, then away: the server must
			 * drop the connection and everything it held. */
			n = kite_send(cl->c, reqbuf, rl / 2);
			st->partial += batch;
			if (n < 0)
				report("thread %u conn %" PRIu64 ": send: %s", cl->tid, cl->serial,
				       kite_conn_strerror(cl->c, (int)n));
			goto out_abrupt;
		}
		n = kite_send(cl->c, reqbuf, rl);
		if (n != (ssize_t)rl) {
			report("thread %u conn %" PRIu64 ": send: %s", cl->tid, cl->serial,
			       n < 0 ? kite_conn_strerror(cl->c, (int)n) : "short");
			st->errors += nreq - done;
			goto out_abrupt;
		}
		for (unsigned i = 0; i < batch; i++) {
			bool cut = end == END_MIDBODY && done + 1 == nreq && !q[i].head &&
				   q[i].len > 1 && q[i].want != 416;
			enum outcome oc = read_response(cl, &q[i], cut, r);

			if (oc != OK) {
				if (oc == MISMATCH)
					st->mismatches++;
				else
					st->errors++;
				/* The rest of this connection's requests are lost. */
				st->errors += nreq - done - 1;
				goto out_abrupt;
			}
			done++;
			if (cut) {
				st->aborted++;
				close_abrupt(fd, true);
				goto out;
			}
			st->verified++;
		}
	}
	switch (end) {
	case END_CLOSE_HDR:
		/* The server must end cleanly: close_notify and nothing more. */
		if (cl->off != cl->len) {
			report("thread %u conn %" PRIu64 ": %zu bytes after the last response",
			       cl->tid, cl->serial, cl->len - cl->off);
			st->mismatches++;
		} else if ((n = fill(cl)) != 0) {
			report("thread %u conn %" PRIu64 ": after Connection: close: %s", cl->tid,
			       cl->serial, n > 0 ? "more bytes" : errtext(cl, n));
			if (n > 0)
				st->mismatches++;
			else
				st->errors++;
		}
		close(fd);
		goto out;
	case END_NOTIFY:
		e = kite_shutdown(cl->c);
		if (e) {
			report("thread %u conn %" PRIu64 ": close_notify: %s", cl->tid, cl->serial,
			       kite_conn_strerror(cl->c, e));
			st->errors++;
		}
		close(fd);
		goto out;
	case END_ABRUPT:
		close_abrupt(fd, below(r, 2));
		goto out;
	default:
		close_abrupt(fd, true);
		goto out;
	}
out_abrupt:
	close_abrupt(fd, true);
out:
	kite_conn_destroy(cl->c);
	cl->c = NULL;
	return true;
}

struct load_thread {
	pthread_t th;
	unsigned id;
	struct stats st;
};

static void *load_main(void *arg)
{
	struct load_thread *lt = arg;
	struct rng r = {opt.seed * 1000003u + lt->id};
	struct cl *cl = calloc(1, sizeof(*cl));

	if (!cl)
		die("out of memory");
	cl->tid = lt->id;
	cl->st = &lt->st;
	while (run_connection(cl, &r))
		;
	free(cl);
	return NULL;
}

static int run_load(void)
{
	struct load_thread *lt = calloc(opt.clients, sizeof(*lt));
	struct stats t = {0};
	double t0, secs;
	bool ok;

	if (!lt)
		die("out of memory");
	load_root(opt.root);
	make_ctxs();
	t0 = now_s();
	for (unsigned i = 0; i < opt.clients; i++) {
		lt[i].id = i;
		if (pthread_create(&lt[i].th, NULL, load_main, &lt[i]))
			die("pthread_create failed");
	}
	for (unsigned i = 0; i < opt.clients; i++) {
		const struct stats *s = &lt[i].st;

		pthread_join(lt[i].th, NULL);
		t.verified += s->verified, t.aborted += s->aborted, t.partial += s->partial;
		t.mismatches += s->mismatches, t.errors += s->errors, t.bytes += s->bytes;
		t.conns += s->conns, t.gets += s->gets, t.heads += s->heads, t.ranges += s->ranges;
		t.unsat += s->unsat, t.pipelined += s->pipelined, t.client_ktls += s->client_ktls;
		for (int k = 0; k < 5; k++)
			t.end[k] += s->end[k];
		for (int v = 0; v < KITE_VERSION_COUNT; v++)
			t.tls[v] += s->tls[v];
	}
	secs = now_s() - t0;
	free(lt);
	printf("requests %" PRIu64 " verified, %" PRIu64 " reset mid-body, %" PRIu64
	       " half heads; %" PRIu64 " GET, %" PRIu64 " HEAD, %" PRIu64 " Range (%" PRIu64
	       " unsatisfiable), %" PRIu64 " pipelined\n",
	       t.verified, t.aborted, t.partial, t.gets, t.heads, t.ranges, t.unsat, t.pipelined);
	printf("connections %" PRIu64 " (TLS1.2 %" PRIu64 ", TLS1.3 %" PRIu64 ", client kTLS %" PRIu64
	       "); endings:", t.conns, t.tls[KITE_TLS12], t.tls[KITE_TLS13], t.client_ktls);
	for (int k = 0; k < 5; k++)
		printf(" %s %" PRIu64, ending_name[k], t.end[k]);
	printf("\n%.1f MiB of bodies verified in %.2f s: %.0f req/s, %.1f MiB/s\n",
	       (double)t.bytes / 1048576.0, secs, (double)(t.verified + t.aborted) / secs,
	       (double)t.bytes / 1048576.0 / secs);
	ok = t.mismatches == 0 && t.errors == 0 &&
	     t.verified + t.aborted + t.partial == (uint64_t)opt.requests;
	printf("RESULT mode=load requests=%ld verified=%" PRIu64 " aborted=%" PRIu64
	       " partial=%" PRIu64 " mismatches=%" PRIu64 " errors=%" PRIu64 " bytes=%" PRIu64
	       " conns=%" PRIu64 " client_ktls=%" PRIu64 " seconds=%.3f ok=%d\n",
	       opt.requests, t.verified, t.aborted, t.partial, t.mismatches, t.errors, t.bytes,
	       t.conns, t.client_ktls, secs, ok);
	fflush(stdout);
	return ok ? 0 : 1;
}

/* ---- idle mode ----------------------------------------------------------- */

struct idle_conn {
	int fd;
	double since;     /* last activity: connect, handshake or the GET */
	double closed_at; /* 0 while open */
};

static struct idle_conn *idles;
static atomic_uint idle_next, idle_failed;

/* One keep-alive GET of opt.get on a fresh TLS connection; 0 or -1. */
static int idle_get(struct kite_conn *c, unsigned i)
{
	char req[512], buf[RBUF];
	size_t have = 0;
	uint64_t clen;
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: kite.test\r\n\r\n", opt.get);
	ssize_t r = kite_send(c, req, (size_t)n);

	if (r != n) {
		report("idle conn %u: send: %s", i, r < 0 ? kite_conn_strerror(c, (int)r) : "short");
		return -1;
	}
	for (;;) {
		const char *h;

		r = kite_recv(c, buf + have, sizeof(buf) - have);
		if (r <= 0) {
			report("idle conn %u: GET %s: %s", i, opt.get,
			       r ? kite_conn_strerror(c, (int)r) : "closed");
			return -1;
		}
		have += (size_t)r;
		h = memmem(buf, have, "\r\n\r\n", 4);
		if (h) {
			size_t hl = (size_t)(h - buf) + 4;

			if (strncmp(buf, "HTTP/1.1 200 ", 13) ||
			    !header_u64(buf, hl, "Content-Length", &clen) || hl + clen > sizeof(buf)) {
				report("idle conn %u: GET %s: unexpected answer %.30s", i, opt.get, buf);
				return -1;
			}
			if (have >= hl + clen)
				return have == hl + clen ? 0 : -1;
		}
		if (have == sizeof(buf))
			return -1;
	}
}

static void *idle_open_main(void *arg)
{
	unsigned i;

	(void)arg;
	while ((i = atomic_fetch_add(&idle_next, 1)) < opt.count) {
		struct kite_conn *c = NULL;
		int fd = dial(), e;

		idles[i].fd = -1;
		if (fd < 0) {
			report("idle conn %u: connect: %s", i, strerror(-fd));
			atomic_fetch_add(&idle_failed, 1);
			continue;
		}
		if (!opt.silent) {
			e = kite_conn_create(&c, ctxs[i % 2][0][0], fd);
			if (e)
				die("kite_conn_create: %s", kite_strerror(e));
			e = kite_handshake(c);
			if (e)
				report("idle conn %u: handshake: %s", i, kite_conn_strerror(c, e));
			else if (opt.get && i % 2 == 0)
				e = idle_get(c, i);
			/* The TLS state goes; the socket stays open and quiet. */
			kite_conn_destroy(c);
			if (e) {
				close_abrupt(fd, true);
				atomic_fetch_add(&idle_failed, 1);
				continue;
			}
		}
		idles[i].fd = fd;
		idles[i].since = now_s();
	}
	return NULL;
}

static int run_idle(void)
{
	pthread_t th[64];
	struct pollfd *pfd;
	unsigned *map, open = 0, closed = 0;
	double t0 = now_s(), t_held, deadline, lo = 1e9, hi = 0;
	struct rlimit rl;
	bool ok;

	/* One descriptor per held connection. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < opt.count + 64)
		die("RLIMIT_NOFILE %llu is too low for --count %u",
		    (unsigned long long)rl.rlim_cur, opt.count);
	make_ctxs();
	idles = calloc(opt.count, sizeof(*idles));
	pfd = calloc(opt.count, sizeof(*pfd));
	map = calloc(opt.count, sizeof(*map));
	if (!idles || !pfd || !map)
		die("out of memory");
	if (opt.threads > 64)
		opt.threads = 64;
	for (unsigned i = 0; i < opt.threads; i++)
		if (pthread_create(&th[i], NULL, idle_open_main, NULL))
			die("pthread_create failed");
	for (unsigned i = 0; i < opt.threads; i++)
		pthread_join(th[i], NULL);
	t_held = now_s();
	for (unsigned i = 0; i < opt.count; i++)
		open += idles[i].fd >= 0;
	printf("HELD n=%u failed=%u open_secs=%.2f\n", open, atomic_load(&idle_failed), t_held - t0);
	fflush(stdout);

	/* Wait for the server to close each one: EOF or a reset. Leftover
	 * bytes (a TLS 1.3 session ticket) are read and ignored. */
	deadline = t_held + opt.timeout_s;
	while (closed < open && now_s() < deadline) {
		unsigned np = 0;
		int r;

		for (unsigned i = 0; i < opt.count; i++)
			if (idles[i].fd >= 0 && !idles[i].closed_at) {
				pfd[np].fd = idles[i].fd;
				pfd[np].events = POLLIN | POLLRDHUP;
				pfd[np].revents = 0;
				map[np++] = i;
			}
		r = poll(pfd, np, 200);
		if (r < 0 && errno != EINTR)
			die("poll: %s", strerror(errno));
		for (unsigned j = 0; r > 0 && j < np; j++) {
			struct idle_conn *ic = &idles[map[j]];
			char b[4096];
			ssize_t n;

			if (!pfd[j].revents)
				continue;
			while ((n = recv(ic->fd, b, sizeof(b), MSG_DONTWAIT)) > 0)
				;
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
				double after = now_s() - ic->since;

				ic->closed_at = now_s();
				close(ic->fd);
				ic->fd = -1;
				closed++;
				lo = after < lo ? after : lo;
				hi = after > hi ? after : hi;
			}
		}
	}
	for (unsigned i = 0; i < opt.count; i++)
		if (idles[i].fd >= 0)
			close(idles[i].fd);
	ok = open == opt.count && closed == open;
	if (closed < open)
		report("%u of %u connections still open after %u s", open - closed, open,
		       opt.timeout_s);
	printf("CLOSED n=%u of %u min_ms=%.0f max_ms=%.0f\n", closed, open,
	       closed ? lo * 1000 : 0.0, hi * 1000);
	printf("RESULT mode=idle count=%u held=%u closed=%u failed=%u open_secs=%.3f min_ms=%.0f "
	       "max_ms=%.0f ok=%d\n", opt.count, open, closed, atomic_load(&idle_failed),
	       t_held - t0, closed ? lo * 1000 : 0.0, hi * 1000, ok);
	fflush(stdout);
	free(idles);
	free(pfd);
	free(map);
	return ok ? 0 : 1;
}

/* ---- main ---------------------------------------------------------------- */

static void usage(FILE *to)
{
	fprintf(to,
		"usage: soak-client load --connect HOST:PORT --root DIR --requests N [--clients C]\n"
		"                        [--seed S] [--tls mix|1.2|1.3] [--client-ktls off|on|mix]\n"
		"                        [--timeout SECS] [--deadline SECS]\n"
		"       soak-client idle --connect HOST:PORT --count N [--silent] [--get PATH]\n"
		"                        [--threads T] [--timeout SECS]\n"
		"load: N verified requests over C concurrent TLS clients; idle: hold N quiet\n"
		"connections until the server closes them (see the source's head comment).\n");
}

static bool num(const char *s, unsigned long long lo, unsigned long long hi, unsigned long long *out)
{
	char *e;

	errno = 0;
	*out = strtoull(s, &e, 10);
	return !errno && *s >= '0' && *s <= '9' && !*e && *out >= lo && *out <= hi;
}

int main(int argc, char **argv)
{
	enum { O_CONNECT = 256, O_ROOT, O_REQUESTS, O_CLIENTS, O_SEED, O_TLS, O_CKTLS, O_TIMEOUT,
	       O_DEADLINE, O_COUNT, O_SILENT, O_GET, O_THREADS, O_HELP };
	static const struct option lo[] = {
		{"connect", required_argument, NULL, O_CONNECT},
		{"root", required_argument, NULL, O_ROOT},
		{"requests", required_argument, NULL, O_REQUESTS},
		{"clients", required_argument, NULL, O_CLIENTS},
		{"seed", required_argument, NULL, O_SEED},
		{"tls", required_argument, NULL, O_TLS},
		{"client-ktls", required_argument, NULL, O_CKTLS},
		{"timeout", required_argument, NULL, O_TIMEOUT},
		{"deadline", required_argument, NULL, O_DEADLINE},
		{"count", required_argument, NULL, O_COUNT},
		{"silent", no_argument, NULL, O_SILENT},
		{"get", required_argument, NULL, O_GET},
		{"threads", required_argument, NULL, O_THREADS},
		{"help", no_argument, NULL, O_HELP},
		{NULL, 0, NULL, 0},
	};
	const char *mode, *connect_to = NULL, *bad = NULL;
	unsigned long long v, deadline = 600;
	int c;

	if (argc < 2 || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	mode = argv[1];
	if (strcmp(mode, "load") && strcmp(mode, "idle")) {
		fprintf(stderr, "soak-client: unknown mode '%s' (load or idle)\n", mode);
		return 2;
	}
	optind = 2;
	while (!bad && (c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case O_CONNECT: connect_to = optarg; break;
		case O_ROOT: opt.root = optarg; break;
		case O_REQUESTS:
			if (num(optarg, 1, 1000000000, &v)) opt.requests = (long)v; else bad = "--requests: want 1 .. 10^9";
			break;
		case O_CLIENTS:
			if (num(optarg, 1, 1024, &v)) opt.clients = (unsigned)v; else bad = "--clients: want 1 .. 1024";
			break;
		case O_SEED:
			if (num(optarg, 0, UINT64_MAX, &v)) opt.seed = v; else bad = "--seed: want a number";
			break;
		case O_TLS:
			if (!strcmp(optarg, "mix")) opt.tls = -1;
			else if (!strcmp(optarg, "1.2")) opt.tls = KITE_TLS12;
			else if (!strcmp(optarg, "1.3")) opt.tls = KITE_TLS13;
			else bad = "--tls: want mix, 1.2 or 1.3";
			break;
		case O_CKTLS:
			if (!strcmp(optarg, "off")) opt.client_ktls = 0;
			else if (!strcmp(optarg, "on")) opt.client_ktls = 1;
			else if (!strcmp(optarg, "mix")) opt.client_ktls = -1;
			else bad = "--client-ktls: want off, on or mix";
			break;
		case O_TIMEOUT:
			if (num(optarg, 1, 3600, &v)) opt.timeout_s = (unsigned)v; else bad = "--timeout: want 1 .. 3600 seconds";
			break;
		case O_DEADLINE:
			if (!num(optarg, 1, 86400, &deadline)) bad = "--deadline: want 1 .. 86400 seconds";
			break;
		case O_COUNT:
			if (num(optarg, 1, 1000000, &v)) opt.count = (unsigned)v; else bad = "--count: want 1 .. 10^6";
			break;
		case O_SILENT: opt.silent = true; break;
		case O_GET:
			if (optarg[0] == '/' && strlen(optarg) < 256 && !strpbrk(optarg, " \r\n")) opt.get = optarg;
			else bad = "--get: want a path starting with /";
			break;
		case O_THREADS:
			if (num(optarg, 1, 64, &v)) opt.threads = (unsigned)v; else bad = "--threads: want 1 .. 64";
			break;
		case O_HELP: usage(stdout); return 0;
		default: bad = "unknown option (--help lists them)"; break;
		}
	}
	if (!bad && optind < argc)
		bad = "unexpected argument";
	if (!bad && !connect_to)
		bad = "--connect HOST:PORT is required";
	if (!bad && !strcmp(mode, "load") && (!opt.root || !opt.requests))
		bad = "load needs --root DIR and --requests N";
	if (!bad && !strcmp(mode, "idle") && !opt.count)
		bad = "idle needs --count N";
	if (bad) {
		fprintf(stderr, "soak-client: %s\n", bad);
		return 2;
	}
	resolve(connect_to);
	/* A reset peer must show up as an error return, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	alarm((unsigned)deadline);
	return !strcmp(mode, "load") ? run_load() : run_idle();
}
