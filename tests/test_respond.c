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

/* Accept-Encoding -> the codings chosen, best first ("" for identity). */
static void ae(const char *v, unsigned offered, const char *want)
{
	unsigned order[2];
	int n = http_accept_encoding(v, strlen(v), offered, order);
	char got[16] = "";

	for (int i = 0; i < n; i++)
		strcat(got, order[i] == HTTP_CE_BR ? "b" : order[i] == HTTP_CE_GZIP ? "g" : "?");
	if (strcmp(got, want))
		t_fail("Accept-Encoding \"%s\" (offered %u): got \"%s\", want \"%s\"", v, offered,
		       got, want);
}

static void accept_encoding(void)
{
	const unsigned both = HTTP_CE_BR | HTTP_CE_GZIP;

	ae("", both, "");                          /* absent or empty: identity */
	ae("gzip", both, "g");
	ae("br", both, "b");
	ae("gzip, br", both, "bg");                /* equal q: br first */
	ae("br, gzip", both, "bg");
	ae("gzip, deflate, br, zstd", both, "bg"); /* what curl --compressed sends */
	ae("gzip;q=1.0, br;q=0.5", both, "gb");
	ae("br;q=0.3, gzip;q=0.7", both, "gb");
	ae("br;q=0, gzip", both, "g");             /* q=0: never */
	ae("br;q=0.000, gzip;q=0", both, "");
	ae("gzip", HTTP_CE_BR, "");                /* only what is offered */
	ae("br, gzip", HTTP_CE_GZIP, "g");
	ae("*", both, "bg");
	ae("*;q=0.5, gzip", both, "gb");           /* own weight beats "*" */
	ae("*;q=0", both, "");
	ae("*;q=0, identity", both, "");
	ae("identity", both, "");
	ae("identity;q=1, gzip;q=0.5", both, "");  /* identity weighs more */
	ae("identity;q=0.5, gzip", both, "g");
	ae("identity;q=0, br", both, "b");
	ae("gzip;q=0.5, identity;q=0.5", both, "g"); /* a tie goes to the coding */
	ae("x-gzip", both, "g");
	ae("GZip , BR ; Q=0.9", both, "gb");       /* case, spaces around ; and , */
	ae("br\t;\tq=0.9,gzip;q=0.8", both, "bg");
	ae("gzip;q=2", both, "");                  /* not a q-value: element skipped */
	ae("gzip;q=1.5", both, "");
	ae("gzip;q=0.1234", both, "");
	ae("gzip;level=1", both, "");
	ae("gzip;q=", both, "");
	ae(",,, ,gzip,,", both, "g");
	ae("gzipx, brotli, br2", both, "");
	ae(";q=1, =", both, "");
	ae("gzip;q=0.001", both, "g");
}

/* A file with a fixed mtime (seconds since the epoch). */
static void put_at(const char *rel, const char *content, time_t mtime)
{
	char p[512];
	struct timespec ts[2] = {{mtime, 0}, {mtime, 0}};

	put(rel, content);
	snprintf(p, sizeof(p), "%s/%s", root, rel);
	t_assert(utimensat(AT_FDCWD, p, ts, 0) == 0, "utimensat %s", p);
}

static const char *header(const struct response *res, const char *name, char *out, size_t cap)
{
	const char *h = memmem(res->head, res->head_len, name, strlen(name));
	const char *e;

	if (!h)
		return NULL;
	h += strlen(name);
	e = memchr(h, '\r', res->head_len - (size_t)(h - res->head));
	snprintf(out, cap, "%.*s", (int)(e - h), h);
	return out;
}

static void precompressed(struct responder *rp)
{
	struct response res;
	char raw[600], id_etag[80], gz_etag[80], br_etag[80], cr[80];

	put_at("p.txt", "plain text, not compressed at all\n", 1000000); /* 34 bytes */
	put_at("p.txt.gz", "GZ-BYTES-0123456789", 1000000);                /* 19, same age */
	put_at("p.txt.br", "BR-BYTES-01234", 1000001);                     /* 14, newer */
	put_at("old.txt", "fresh\n", 2000000);
	put_at("old.txt.gz", "STALE", 1999999);                             /* older: never */
	put_at("dir/index.html.gz", "GZ-INDEX", 2000000000);

	rp->precompressed = true;
	ask(rp, "GET /p.txt HTTP/1.1\r\nHost: t\r\n\r\n", &res);
	t_assert(res.status == 200 && res.length == 34 && has(&res, "Vary: Accept-Encoding\r\n") &&
		 !has(&res, "Content-Encoding"), "identity answer: %.*s", (int)res.head_len, res.head);
	t_assert(header(&res, "ETag: ", id_etag, sizeof(id_etag)), "identity etag");
	response_clear(&res);

	ask(rp, "GET /p.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n", &res);
	t_assert(res.status == 200 && res.length == 19 && has(&res, "Content-Encoding: gzip\r\n") &&
		 has(&res, "Content-Length: 19\r\n") && has(&res, "Vary: Accept-Encoding\r\n") &&
		 has(&res, "Content-Type: text/plain; charset=utf-8\r\n"),
		 "gzip answer: %.*s", (int)res.head_len, res.head);
	t_assert(header(&res, "ETag: ", gz_etag, sizeof(gz_etag)) && strcmp(gz_etag, id_etag),
		 "gzip etag %s vs identity %s", gz_etag, id_etag);
	response_clear(&res);

	ask(rp, "HEAD /p.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip, br\r\n\r\n", &res);
	t_assert(res.status == 200 && res.fd < 0 && has(&res, "Content-Encoding: br\r\n") &&
		 has(&res, "Content-Length: 14\r\n"), "HEAD br: %.*s", (int)res.head_len, res.head);
	t_assert(header(&res, "ETag: ", br_etag, sizeof(br_etag)) && strcmp(br_etag, gz_etag) &&
		 strcmp(br_etag, id_etag), "br etag %s", br_etag);
	response_clear(&res);

	/* Range on the encoded bytes, and its Content-Range total. */
	ask(rp, "GET /p.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nRange: bytes=3-7\r\n\r\n",
	    &res);
	t_assert(res.status == 206 && res.offset == 3 && res.length == 5 &&
		 has(&res, "Content-Range: bytes 3-7/19\r\n") && has(&res, "Content-Encoding: gzip"),
		 "range on gzip: %.*s", (int)res.head_len, res.head);
	response_clear(&res);
	ask(rp, "GET /p.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nRange: bytes=19-\r\n\r\n",
	    &res);
	t_assert(res.status == 416 && header(&res, "Content-Range: ", cr, sizeof(cr)) &&
		 !strcmp(cr, "bytes */19"), "416 on gzip: %.*s", (int)res.head_len, res.head);
	response_clear(&res);

	/* Conditionals against the encoded validator. */
	snprintf(raw, sizeof(raw), "GET /p.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n"
		 "If-None-Match: %s\r\n\r\n", gz_etag);
	ask(rp, raw, &res);
	t_assert(res.status == 304 && has(&res, "Vary: Accept-Encoding\r\n"), "304 gzip: %.*s",
		 (int)res.head_len, res.head);
	response_clear(&res);
	snprintf(raw, sizeof(raw), "GET /p.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: %s\r\n\r\n",
		 gz_etag);
	ask(rp, raw, &res);
	t_assert(res.status == 200 && res.length == 34, "identity client, gzip etag: %d", res.status);
	response_clear(&res);
	snprintf(raw, sizeof(raw), "GET /p.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br\r\n"
		 "Range: bytes=0-1\r\nIf-Range: %s\r\n\r\n", gz_etag);
	ask(rp, raw, &res);
	t_assert(res.status == 200 && res.length == 14, "If-Range with another coding's etag: %d",
		 res.status);
	response_clear(&res);

	/* q-values pick between the two; q=0 and stale siblings are never sent. */
	ask(rp, "GET /p.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br;q=0.5, gzip\r\n\r\n", &res);
	t_assert(res.length == 19 && has(&res, "Content-Encoding: gzip"), "q prefers gzip");
	response_clear(&res);
	ask(rp, "GET /p.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br;q=0, gzip;q=0\r\n\r\n", &res);
	t_assert(res.length == 34 && !has(&res, "Content-Encoding"), "q=0 for both");
	response_clear(&res);
	ask(rp, "GET /old.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n", &res);
	t_assert(res.status == 200 && res.length == 6 && !has(&res, "Content-Encoding"),
		 "stale sibling served: %.*s", (int)res.head_len, res.head);
	response_clear(&res);
	/* A directory's index.html.gz stands beside index.html. */
	ask(rp, "GET /dir/ HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n", &res);
	t_assert(res.length == 8 && has(&res, "Content-Encoding: gzip") && has(&res, "text/html"),
		 "index.html.gz: %.*s", (int)res.head_len, res.head);
	response_clear(&res);

	/* One list in two fields: the parser cannot join them, so identity. */
	ask(rp, "GET /p.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nAccept-Encoding: br\r\n\r\n",
	    &res);
	t_assert(res.length == 34 && !has(&res, "Content-Encoding") && has(&res, "Vary"),
		 "split Accept-Encoding: %.*s", (int)res.head_len, res.head);
	response_clear(&res);

	/* Off: the siblings are plain files nobody gets instead. */
	rp->precompressed = false;
	ask(rp, "GET /p.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n", &res);
	t_assert(res.length == 34 && !has(&res, "Content-Encoding") && !has(&res, "Vary"), "off");
	response_clear(&res);
}

static void vhosts(struct responder *rp)
{
	static struct vhost v[2];
	struct response res;
	char p[512];

	snprintf(p, sizeof(p), "%s/site-a", root);
	mkdir(p, 0755);
	put("site-a/who.txt", "aaaa\n");
	snprintf(p, sizeof(p), "%s/site-a/back", root);
	t_assert(symlink("../hello.txt", p) == 0, "symlink");
	snprintf(p, sizeof(p), "%s/site-a", root);
	snprintf(v[0].name, sizeof(v[0].name), "a.test");
	v[0].root_fd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
	snprintf(v[1].name, sizeof(v[1].name), "[::1]");
	v[1].root_fd = v[0].root_fd;
	t_assert(v[0].root_fd >= 0, "open vhost root");
	rp->vhost = v;
	rp->nvhost = 2;
	t_assert(responder_root(rp, "a.test", 6) == v[0].root_fd, "a.test");
	t_assert(responder_root(rp, "A.Test:8443", 11) == v[0].root_fd, "case and port");
	t_assert(responder_root(rp, "a.test.", 7) == v[0].root_fd, "trailing dot");
	t_assert(responder_root(rp, "[::1]:443", 9) == v[0].root_fd, "IPv6 literal");
	t_assert(responder_root(rp, "a.tes", 5) == rp->root_fd, "prefix");
	t_assert(responder_root(rp, "a.test.x", 8) == rp->root_fd, "longer");
	t_assert(responder_root(rp, "", 0) == rp->root_fd, "no host");

	ask(rp, "GET /who.txt HTTP/1.1\r\nHost: A.TEST:443\r\n\r\n", &res);
	t_assert(res.status == 200 && res.length == 5, "vhost file: %d", res.status);
	response_clear(&res);
	ask(rp, "GET /who.txt HTTP/1.1\r\nHost: other.test\r\n\r\n", &res);
	t_assert(res.status == 404, "other name: default root: %d", res.status);
	response_clear(&res);
	ask(rp, "GET /hello.txt HTTP/1.1\r\nHost: other.test\r\n\r\n", &res);
	t_assert(res.status == 200 && res.length == 13, "default root: %d", res.status);
	response_clear(&res);
	/* The default root is outside a.test's: not reachable from it. */
	ask(rp, "GET /hello.txt HTTP/1.1\r\nHost: a.test\r\n\r\n", &res);
	t_assert(res.status == 404, "default root's file under a.test: %d", res.status);
	response_clear(&res);
	/* absolute-form: the target's authority, not Host, names the site. */
	ask(rp, "GET https://a.test:8443/who.txt HTTP/1.1\r\nHost: other.test\r\n\r\n", &res);
	t_assert(res.status == 200 && res.length == 5, "absolute-form a.test: %d", res.status);
	response_clear(&res);
	ask(rp, "GET http://u:p@A.test/who.txt HTTP/1.1\r\nHost: other.test\r\n\r\n", &res);
	t_assert(res.status == 200 && res.length == 5, "absolute-form with userinfo: %d", res.status);
	response_clear(&res);
	ask(rp, "GET http://other.test/hello.txt HTTP/1.1\r\nHost: a.test\r\n\r\n", &res);
	t_assert(res.status == 200 && res.length == 13, "absolute-form other name: %d", res.status);
	response_clear(&res);
	ask(rp, "GET /back HTTP/1.1\r\nHost: a.test\r\n\r\n", &res);
	t_assert(res.status == 403, "symlink out of a.test: %d", res.status);
	response_clear(&res);
	ask(rp, "GET /../hello.txt HTTP/1.1\r\nHost: a.test\r\n\r\n", &res);
	t_assert(res.status == 400, "dot-dot under a.test: %d", res.status);
	response_clear(&res);
	close(v[0].root_fd);
	rp->vhost = NULL;
	rp->nvhost = 0;
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
	accept_encoding();
	precompressed(&rp);
	vhosts(&rp);
	close(rp.root_fd);
	return 0;
}
