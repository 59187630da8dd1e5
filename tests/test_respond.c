/* SPDX-License-Identifier: MIT */
/* kite-serve's request -> response decisions against a real directory tree:
 * every status, the headers that go with it, and no way out of the root. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "respond.h"

static char root[256];

static void put(const char *rel, const char *content)
{
	char p[512];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	t_assert(fd >= 0 && write(fd, content, strlen(content)) == (ssize_t)strlen(content), "%s", p);
	close(fd);
}

static void rm_tree(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	if (system(cmd))
		fprintf(stderr, "cleanup failed\n");
}

/* Run one request through parse + respond. */
static void ask(const struct responder *rp, const char *raw, struct response *res)
{
	struct http_request req;
	int r = http_parse_request(raw, strlen(raw), &req);

	t_assert(r != 0, "incomplete test request");
	respond(rp, r > 0 ? &req : NULL, r > 0 ? 0 : r, 784111777, res);
}

static bool has(const struct response *res, const char *hdr)
{
	return memmem(res->head, res->head_len, hdr, strlen(hdr)) != NULL;
}

static void expect(const struct responder *rp, const char *target, const char *extra, int status,
		   const char *hdr, uint64_t off, uint64_t len)
{
	char raw[9000];
	struct response res;

	snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n", target, extra ? extra : "");
	ask(rp, raw, &res);
	if (res.status != status)
		t_fail("GET %s %s: status %d, want %d\n%.*s", target, extra ? extra : "", res.status,
		       status, (int)res.head_len, res.head);
	t_assert(res.head_len > 4 && !memcmp(res.head + res.head_len - 4, "\r\n\r\n", 4),
		 "head not terminated");
	if (hdr && !has(&res, hdr))
		t_fail("GET %s: missing \"%s\" in\n%.*s", target, hdr, (int)res.head_len, res.head);
	if ((status == 200 || status == 206) && len) {
		t_assert(res.fd >= 0 && res.offset == off && res.length == len,
			 "GET %s: body fd %d %llu+%llu", target, res.fd, (unsigned long long)res.offset,
			 (unsigned long long)res.length);
	} else {
		t_assert(res.fd < 0, "GET %s: status %d with a file", target, status);
	}
	response_clear(&res);
}

int main(void)
{
	struct responder rp = {.server_name = "kite"};
	struct response res;
	char etag[80], p[512];
	const char *tmp = getenv("TMPDIR");

	snprintf(root, sizeof(root), "%s/kite-root-XXXXXX", tmp ? tmp : "/tmp");
	t_assert(mkdtemp(root), "mkdtemp");
	atexit(rm_tree);
	put("hello.txt", "hello, world\n");   /* 13 bytes */
	put("empty.bin", "");
	snprintf(p, sizeof(p), "%s/dir", root);
	mkdir(p, 0755);
	put("dir/index.html", "<p>index</p>\n");
	snprintf(p, sizeof(p), "%s/noindex", root);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/fifo", root);
	mkfifo(p, 0644);
	snprintf(p, sizeof(p), "%s/out", root);
	t_assert(symlink("/etc/passwd", p) == 0, "symlink");
	snprintf(p, sizeof(p), "%s/up", root);
	t_assert(symlink("../", p) == 0, "symlink");
	snprintf(p, sizeof(p), "%s/in", root);
	t_assert(symlink("hello.txt", p) == 0, "symlink");
	rp.root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	t_assert(rp.root_fd >= 0, "open root");

	expect(&rp, "/hello.txt", NULL, 200, "Content-Length: 13\r\n", 0, 13);
	expect(&rp, "/hello.txt", NULL, 200, "Content-Type: text/plain; charset=utf-8\r\n", 0, 13);
	expect(&rp, "/hello.txt", NULL, 200, "Accept-Ranges: bytes\r\n", 0, 13);
	expect(&rp, "/hello.txt", NULL, 200, "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n", 0, 13);
	expect(&rp, "/in", NULL, 200, NULL, 0, 13);            /* symlink inside the root */
	expect(&rp, "/dir/", NULL, 200, "text/html", 0, 13);
	expect(&rp, "/dir", NULL, 301, "Location: /dir/\r\n", 0, 0);
	{
		/* A redirect echoes the target: one too long for the head is
		 * 414, never a head cut short or written past its end (a
		 * fuzz-session find: absolute-form, padded with a query). */
		static char longdir[3000];
		int n = snprintf(longdir, sizeof(longdir), "https://t/dir%s", "/.");

		while (n < 2000)
			n += snprintf(longdir + n, sizeof(longdir) - (size_t)n, "/.");
		expect(&rp, longdir, NULL, 414, "Connection: close\r\n", 0, 0);
		expect(&rp, "https://t/dir?q", NULL, 301, "Location: https://t/dir/\r\n", 0, 0);
	}
	expect(&rp, "/", NULL, 403, NULL, 0, 0);               /* no index, no listing */
	expect(&rp, "/noindex/", NULL, 403, NULL, 0, 0);
	expect(&rp, "/fifo", NULL, 403, NULL, 0, 0);
	expect(&rp, "/missing", NULL, 404, NULL, 0, 0);
	expect(&rp, "/hello.txt/x", NULL, 404, NULL, 0, 0);
	/* Traversal: lexical ones are 400, symlinks leaving the root 403. */
	static const char *escapes[] = {"/../etc/passwd", "/%2e%2e/etc/passwd", "/a/../../etc/passwd",
					"/%2e%2e%2fetc%2fpasswd", "/a%00"};
	for (size_t i = 0; i < sizeof(escapes) / sizeof(escapes[0]); i++)
		expect(&rp, escapes[i], NULL, 400, "Connection: close\r\n", 0, 0);
	expect(&rp, "/out", NULL, 403, NULL, 0, 0);
	expect(&rp, "/up/etc/passwd", NULL, 403, NULL, 0, 0);
	{
		static char longp[8100];

		memset(longp, 'a', sizeof(longp) - 1);
		longp[0] = '/';
		expect(&rp, longp, NULL, 414, NULL, 0, 0);
	}

	/* Ranges */
	expect(&rp, "/hello.txt", "Range: bytes=0-4\r\n", 206, "Content-Range: bytes 0-4/13\r\n", 0, 5);
	expect(&rp, "/hello.txt", "Range: bytes=-6\r\n", 206, "Content-Length: 6\r\n", 7, 6);
	expect(&rp, "/hello.txt", "Range: bytes=20-\r\n", 416, "Content-Range: bytes */13\r\n", 0, 0);
	expect(&rp, "/hello.txt", "Range: bytes=0-1,3-4\r\n", 200, NULL, 0, 13);
	expect(&rp, "/empty.bin", NULL, 200, "Content-Length: 0\r\n", 0, 0 /* no body fd */ );

	/* Conditionals */
	ask(&rp, "GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", &res);
	{
		const char *e = memmem(res.head, res.head_len, "ETag: ", 6), *end;

		t_assert(e, "no ETag");
		end = memchr(e, '\r', (size_t)(res.head + res.head_len - e));
		snprintf(etag, sizeof(etag), "%.*s", (int)(end - e - 6), e + 6);
		t_assert(etag[0] == '"', "strong etag %s", etag);
	}
	response_clear(&res);
	{
		char h[200];

		snprintf(h, sizeof(h), "If-None-Match: %s\r\n", etag);
		expect(&rp, "/hello.txt", h, 304, "ETag: ", 0, 0);
		expect(&rp, "/hello.txt", "If-None-Match: \"other\"\r\n", 200, NULL, 0, 13);
		expect(&rp, "/hello.txt", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n", 304, NULL, 0, 0);
		expect(&rp, "/hello.txt", "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n", 200, NULL, 0, 13);
		/* If-None-Match takes precedence over If-Modified-Since */
		expect(&rp, "/hello.txt", "If-None-Match: \"other\"\r\nIf-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n",
		       200, NULL, 0, 13);
		snprintf(h, sizeof(h), "Range: bytes=1-2\r\nIf-Range: %s\r\n", etag);
		expect(&rp, "/hello.txt", h, 206, NULL, 1, 2);
		expect(&rp, "/hello.txt", "Range: bytes=1-2\r\nIf-Range: \"stale\"\r\n", 200, NULL, 0, 13);
	}

	/* Methods and malformed requests */
	ask(&rp, "HEAD /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", &res);
	t_assert(res.status == 200 && res.fd < 0 && has(&res, "Content-Length: 13\r\n"), "HEAD");
	response_clear(&res);
	ask(&rp, "DELETE /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", &res);
	t_assert(res.status == 405 && has(&res, "Allow: GET, HEAD\r\n") && res.keep_alive, "405");
	response_clear(&res);
	ask(&rp, "GET / HTTP/1.1\r\n\r\n", &res);
	t_assert(res.status == 400 && !res.keep_alive && res.body_len > 0, "400 without Host");
	response_clear(&res);
	ask(&rp, "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n", &res);
	t_assert(res.status == 413 && !res.keep_alive, "413");
	response_clear(&res);
	ask(&rp, "GET / HTTP/3.0\r\nHost: t\r\n\r\n", &res);
	t_assert(res.status == 505, "505");
	response_clear(&res);
	ask(&rp, "GET /hello.txt HTTP/1.0\r\n\r\n", &res);
	t_assert(res.status == 200 && !res.keep_alive && has(&res, "Connection: close\r\n"), "1.0");
	response_clear(&res);
	close(rp.root_fd);
	return 0;
}
