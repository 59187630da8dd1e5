/* SPDX-License-Identifier: MIT */
/*
 * kite-serve's connection logic (tools/serve/session.c) against a recording
 * transport: pipelined requests answered in order and at most pipeline_max
 * ahead of a drain, every ending (Connection: close, errors, the client's
 * end, server shutdown, 503), slow heads (408) and the input cap. No
 * network: the engine is replaced by the transport table.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "session.h"

struct rec {
	char out[1 << 16];     /* heads and bodies sent, in order */
	size_t out_len;
	unsigned files;        /* sendfile calls */
	unsigned sends;        /* send calls */
	uint64_t file_bytes;
	int closed;            /* 1 graceful, < 0 abort err */
	unsigned answered;
	int statuses[64];
	int fail_send;         /* make send fail with this */
};

static int r_send(void *t, const void *buf, size_t len)
{
	struct rec *r = t;

	t_assert(!r->closed, "send after the end");
	if (r->fail_send)
		return r->fail_send;
	t_assert(r->out_len + len <= sizeof(r->out), "recorder full");
	memcpy(r->out + r->out_len, buf, len);
	r->out_len += len;
	r->sends++;
	return 0;
}

static int r_sendfile(void *t, int fd, uint64_t off, uint64_t len)
{
	struct rec *r = t;
	char buf[4096];
	ssize_t n;

	t_assert(!r->closed, "sendfile after the end");
	t_assert(len <= sizeof(buf), "test files are small");
	n = pread(fd, buf, len, (off_t)off);
	close(fd); /* owned by the transport */
	t_assert(n == (ssize_t)len, "pread");
	r->files++;
	r->file_bytes += len;
	memcpy(r->out + r->out_len, buf, len);
	r->out_len += len;
	return 0;
}

static void r_close(void *t)
{
	struct rec *r = t;

	t_assert(!r->closed, "closed twice");
	r->closed = 1;
}

static void r_abort(void *t, int err)
{
	struct rec *r = t;

	t_assert(!r->closed, "aborted after the end");
	t_assert(err < 0, "abort with %d", err);
	r->closed = err;
}

static void r_answered(void *t, const struct sess_answer *a)
{
	struct rec *r = t;

	if (r->answered < 64)
		r->statuses[r->answered] = a->status;
	r->answered++;
}

static const struct sess_transport rec_tp = {
	.send = r_send, .sendfile = r_sendfile, .close = r_close, .abort = r_abort,
	.answered = r_answered,
};

static char root[256];
static struct responder rp;
static struct sess_config cfg;

static void setup(void)
{
	char p[300];
	int fd;

	snprintf(root, sizeof(root), "/tmp/kite-test-session-XXXXXX");
	t_assert(mkdtemp(root), "mkdtemp");
	snprintf(p, sizeof(p), "%s/a.txt", root);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	t_assert(fd >= 0 && write(fd, "AAAA", 4) == 4, "a.txt");
	close(fd);
	snprintf(p, sizeof(p), "%s/b.txt", root);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	t_assert(fd >= 0 && write(fd, "BB", 2) == 2, "b.txt");
	close(fd);
	rp.root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	t_assert(rp.root_fd >= 0, "root");
	rp.server_name = "test";
	cfg.rp = &rp;
	cfg.pipeline_max = 4;
	cfg.in_max = 64 << 10;
	cfg.head_timeout_ms = 1000;
}

static void cleanup(void)
{
	char p[300];

	snprintf(p, sizeof(p), "%s/a.txt", root);
	unlink(p);
	snprintf(p, sizeof(p), "%s/b.txt", root);
	unlink(p);
	rmdir(root);
}

static unsigned count(const struct rec *r, const char *needle)
{
	unsigned n = 0;
	const char *p = r->out, *end = r->out + r->out_len;

	while ((p = memmem(p, (size_t)(end - p), needle, strlen(needle)))) {
		n++;
		p += strlen(needle);
	}
	return n;
}

static void feed(struct session *s, const char *str, uint64_t now)
{
	sess_data(s, str, strlen(str), now);
}

#define GET(p) "GET " p " HTTP/1.1\r\nHost: t\r\n\r\n"

/* Several requests in one read: all answered, in order, one body each. */
static void pipelined_in_order(void)
{
	struct rec r = {0};
	struct session s;
	const char *a, *b;

	sess_init(&s, &cfg, &rec_tp, &r);
	feed(&s, GET("/a.txt") GET("/b.txt") GET("/a.txt"), 1);
	t_assert(r.answered == 3 && r.files == 3 && !r.closed, "answered %u files %u", r.answered,
		 r.files);
	a = memmem(r.out, r.out_len, "AAAA", 4);
	b = memmem(r.out, r.out_len, "BB", 2);
	t_assert(a && b && a < b, "responses out of order");
	t_assert(count(&r, "HTTP/1.1 200 OK") == 3, "three 200s");
	sess_fini(&s);
}

/* No more than pipeline_max answers before the transport drains. */
static void pipeline_limit(void)
{
	struct rec r = {0};
	struct session s;
	char many[2048] = "";

	for (int i = 0; i < 10; i++)
		strcat(many, GET("/a.txt"));
	sess_init(&s, &cfg, &rec_tp, &r);
	feed(&s, many, 1);
	t_assert(r.answered == 4, "answered %u before a drain, want 4", r.answered);
	sess_drained(&s, 2);
	t_assert(r.answered == 8, "answered %u after one drain, want 8", r.answered);
	sess_drained(&s, 3);
	t_assert(r.answered == 10 && !r.closed, "answered %u, closed %d", r.answered, r.closed);
	sess_fini(&s);
}

/* A request split across reads, byte by byte. */
static void split_request(void)
{
	struct rec r = {0};
	struct session s;
	const char *req = GET("/b.txt");

	sess_init(&s, &cfg, &rec_tp, &r);
	for (size_t i = 0; i < strlen(req); i++) {
		t_assert(r.answered == 0, "answered early at byte %zu", i);
		sess_data(&s, req + i, 1, 1);
	}
	t_assert(r.answered == 1 && r.statuses[0] == 200, "split request");
	/* Everything answered: an idle keep-alive connection holds no input
	 * buffer; a partial head keeps one. */
	t_assert(!s.in && !s.in_cap && !r.closed, "idle connection keeps %zu bytes", s.in_cap);
	sess_data(&s, req, 5, 2);
	t_assert(s.in && s.in_len == 5, "partial head not kept");
	sess_fini(&s);
}

/* Connection: close ends after the answer; later pipelined bytes are ignored. */
static void connection_close(void)
{
	struct rec r = {0};
	struct session s;

	sess_init(&s, &cfg, &rec_tp, &r);
	feed(&s, "GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" GET("/b.txt"), 1);
	t_assert(r.answered == 1 && r.closed == 1, "answered %u closed %d", r.answered, r.closed);
	t_assert(count(&r, "Connection: close") == 1, "close header");
	feed(&s, GET("/a.txt"), 2);
	t_assert(r.answered == 1, "answered after close");
	sess_fini(&s);
}

/* HTTP/1.0 without keep-alive closes; with it, stays. */
static void http10(void)
{
	struct rec r = {0}, r2 = {0};
	struct session s;

	sess_init(&s, &cfg, &rec_tp, &r);
	feed(&s, "GET /a.txt HTTP/1.0\r\n\r\n", 1);
	t_assert(r.answered == 1 && r.closed == 1, "1.0 closes");
	sess_fini(&s);
	sess_init(&s, &cfg, &rec_tp, &r2);
	feed(&s, "GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1);
	t_assert(r2.answered == 1 && !r2.closed, "1.0 keep-alive stays");
	sess_fini(&s);
}

/* Malformed input: one error answer, then the end (framing is lost). */
static void errors_end(void)
{
	static const struct { const char *raw; int status; } cases[] = {
		{"GARBAGE\r\n\r\n", 400},
		{"GET /a.txt HTTP/1.1\r\n\r\n", 400},                 /* no Host */
		{"GET /a.txt HTTP/2.0\r\nHost: t\r\n\r\n", 505},
		{"GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 413},
		{"GET /../x HTTP/1.1\r\nHost: t\r\n\r\n", 400},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rec r = {0};
		struct session s;

		sess_init(&s, &cfg, &rec_tp, &r);
		feed(&s, cases[i].raw, 1);
		t_assert(r.answered == 1 && r.statuses[0] == cases[i].status && r.closed == 1,
			 "case %zu: answered %u status %d closed %d", i, r.answered, r.statuses[0],
			 r.closed);
		sess_fini(&s);
	}
}

/* 405 and 404 keep the connection: the framing is intact. */
static void soft_errors_keep(void)
{
	struct rec r = {0};
	struct session s;

	sess_init(&s, &cfg, &rec_tp, &r);
	feed(&s, "DELETE /a.txt HTTP/1.1\r\nHost: t\r\n\r\n" GET("/nope") GET("/a.txt"), 1);
	t_assert(r.answered == 3 && r.statuses[0] == 405 && r.statuses[1] == 404 &&
		 r.statuses[2] == 200 && !r.closed, "405, 404, 200 on one connection");
	t_assert(count(&r, "Allow: GET, HEAD") == 1, "405 says Allow");
	sess_fini(&s);
}

/* One header field of 17 KiB after a short request line: 431 (the header
 * block has its own limit, not what the request line left over). */
static void big_header(void)
{
	struct rec r = {0};
	struct session s;
	static char buf[20000];
	int n = snprintf(buf, sizeof(buf), "GET /a.txt HTTP/1.1\r\nHost: t\r\nX-Big: ");

	memset(buf + n, 'b', 17 << 10);
	memcpy(buf + n + (17 << 10), "\r\n\r\n", 5);
	sess_init(&s, &cfg, &rec_tp, &r);
	feed(&s, buf, 1);
	t_assert(r.answered == 1 && r.statuses[0] == 431 && r.closed == 1, "431: status %d",
		 r.statuses[0]);
	sess_fini(&s);
}

/* A request line beyond the limit: 414 without waiting for its end. */
static void long_line(void)
{
	struct rec r = {0};
	struct session s;
	static char buf[HTTP_MAX_REQUEST_LINE + 100];

	memcpy(buf, "GET /", 5);
	memset(buf + 5, 'a', sizeof(buf) - 6);
	buf[sizeof(buf) - 1] = 0;
	sess_init(&s, &cfg, &rec_tp, &r);
	feed(&s, buf, 1);
	t_assert(r.answered == 1 && r.statuses[0] == 414 && r.closed == 1, "414: status %d",
		 r.statuses[0]);
	sess_fini(&s);
}

/* Slow head: 408 after head_timeout_ms from its first byte, not before. */
static void slow_head(void)
{
	struct rec r = {0};
	struct session s;

	sess_init(&s, &cfg, &rec_tp, &r);
	sess_tick(&s, 5000); /* idle: the engine's idle timeout, not ours */
	t_assert(r.answered == 0, "408 on an idle connection");
	feed(&s, "GET /a.txt HTTP/1.1\r\n", 10000);
	sess_tick(&s, 10999);
	t_assert(r.answered == 0, "408 too early");
	feed(&s, "Host: t\r\n", 10500); /* trickling does not reset the clock */
	sess_tick(&s, 11000);
	t_assert(r.answered == 1 && r.statuses[0] == 408 && r.closed == 1, "408: %d", r.statuses[0]);
	sess_fini(&s);
}

/* The client's end: answer what is complete, then close. */
static void peer_done(void)
{
	struct rec r = {0};
	struct session s;
	char many[2048] = "";

	for (int i = 0; i < 6; i++)
		strcat(many, GET("/b.txt"));
	sess_init(&s, &cfg, &rec_tp, &r);
	feed(&s, many, 1);
	sess_data(&s, NULL, 0, 1);
	t_assert(r.answered == 4 && !r.closed, "blocked on the pipeline: %u %d", r.answered, r.closed);
	sess_drained(&s, 2);
	t_assert(r.answered == 6 && r.closed == 1, "then closed: %u %d", r.answered, r.closed);
	sess_fini(&s);

	memset(&r, 0, sizeof(r));
	sess_init(&s, &cfg, &rec_tp, &r);
	feed(&s, "GET /a.txt HTTP/1.1\r\nHo", 1);
	sess_data(&s, NULL, 0, 1);
	t_assert(r.answered == 0 && r.closed == 1, "truncated head: no answer, closed");
	sess_fini(&s);
}

/* Server shutdown: idle connections end now, a request in progress gets
 * its answer with Connection: close. */
static void server_drain(void)
{
	struct rec r = {0}, r2 = {0};
	struct session s;

	sess_init(&s, &cfg, &rec_tp, &r);
	sess_drain_server(&s);
	t_assert(r.closed == 1 && r.answered == 0, "idle: closed");
	sess_fini(&s);

	sess_init(&s, &cfg, &rec_tp, &r2);
	feed(&s, "GET /a.txt HTTP/1.1\r\n", 1);
	sess_drain_server(&s);
	t_assert(!r2.closed, "busy: not yet");
	feed(&s, "Host: t\r\n\r\n" GET("/b.txt"), 2);
	t_assert(r2.answered == 1 && r2.closed == 1 && count(&r2, "Connection: close") == 1,
		 "last answer says close");
	sess_fini(&s);
}

static void reject(void)
{
	struct rec r = {0};
	struct session s;

	sess_init(&s, &cfg, &rec_tp, &r);
	sess_reject(&s, 503);
	t_assert(r.answered == 1 && r.statuses[0] == 503 && r.closed == 1, "503");
	t_assert(count(&r, "Connection: close") == 1 && count(&r, "503 Service Unavailable\n") == 1,
		 "503 head and body");
	feed(&s, GET("/a.txt"), 1);
	t_assert(r.answered == 1, "nothing after the 503");
	sess_fini(&s);
}

/* A client pipelining far ahead of reading: dropped at in_max. */
static void input_cap(void)
{
	struct rec r = {0};
	struct session s;
	struct sess_config small = cfg;
	char req[64];
	unsigned fed = 0;

	small.in_max = 4096;
	small.pipeline_max = 1;
	snprintf(req, sizeof(req), "%s", GET("/a.txt"));
	sess_init(&s, &small, &rec_tp, &r);
	while (!r.closed && fed < 1000) {
		feed(&s, req, 1);
		fed++;
	}
	t_assert(r.closed == -ENOBUFS, "closed %d after %u requests", r.closed, fed);
	t_assert(fed * strlen(req) > 4096 - strlen(req) && fed * strlen(req) <= 4096 + 2 * strlen(req),
		 "cap at %u bytes", fed * (unsigned)strlen(req));
	sess_fini(&s);
}

/* A transport error aborts. */
static void send_failure(void)
{
	struct rec r = {.fail_send = -ENOBUFS};
	struct session s;

	sess_init(&s, &cfg, &rec_tp, &r);
	feed(&s, GET("/a.txt"), 1);
	t_assert(r.closed == -ENOBUFS, "abort on send failure: %d", r.closed);
	sess_fini(&s);
}

/* HEAD: headers only, no file queued. */
static void head_only(void)
{
	struct rec r = {0};
	struct session s;

	sess_init(&s, &cfg, &rec_tp, &r);
	feed(&s, "HEAD /a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 1);
	t_assert(r.answered == 1 && r.files == 0 && count(&r, "Content-Length: 4") == 1, "HEAD");
	sess_fini(&s);
}

/* Small files ride in the head's send (one TLS record); beyond
 * inline_max, and for HEAD, the file path as before. */
static void inline_small(void)
{
	struct sess_config in = cfg;
	struct rec r = {0};
	struct session s;
	const char *body;

	in.inline_max = 2; /* b.txt (2 bytes) inline, a.txt (4) not */
	sess_init(&s, &in, &rec_tp, &r);
	feed(&s, GET("/b.txt"), 1);
	t_assert(r.answered == 1 && r.files == 0 && r.sends == 1, "b.txt: files %u sends %u",
		 r.files, r.sends);
	body = memmem(r.out, r.out_len, "\r\n\r\n", 4);
	t_assert(body && r.out + r.out_len - body == 4 + 2 && !memcmp(body + 4, "BB", 2),
		 "b.txt: head and body in one send");
	feed(&s, GET("/a.txt"), 2);
	t_assert(r.answered == 2 && r.files == 1 && r.sends == 2, "a.txt: files %u sends %u",
		 r.files, r.sends);
	/* A range of a larger file: only the range is read, from its offset. */
	r.out_len = 0;
	feed(&s, "GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=1-2\r\n\r\n", 3);
	t_assert(r.answered == 3 && r.files == 1 && r.sends == 3 && count(&r, " 206 ") == 1,
		 "range: files %u sends %u", r.files, r.sends);
	t_assert(r.out_len > 2 && !memcmp(r.out + r.out_len - 4, "\r\nAA", 4), "range body");
	r.out_len = 0;
	feed(&s, "HEAD /b.txt HTTP/1.1\r\nHost: t\r\n\r\n", 4);
	t_assert(r.answered == 4 && r.files == 1 && r.sends == 4 && count(&r, "Content-Length: 2") == 1,
		 "HEAD");
	t_assert(!r.closed, "connection kept");
	sess_fini(&s);
}

int main(void)
{
	setup();
	pipelined_in_order();
	pipeline_limit();
	split_request();
	connection_close();
	http10();
	errors_end();
	soft_errors_keep();
	long_line();
	big_header();
	slow_head();
	peer_done();
	server_drain();
	reject();
	input_cap();
	send_failure();
	head_only();
	inline_small();
	cleanup();
	printf("test_session: ok\n");
	return 0;
}
