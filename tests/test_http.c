/* SPDX-License-Identifier: MIT */
/* kite-serve's HTTP parsing, table-driven: requests, paths, ranges, dates. */
#include <string.h>

#include "common.h"
#include "http.h"

#define ALL 1

static void requests(void)
{
	static const struct {
		const char *in;
		int want;  /* ALL: consumed whole; 0 incomplete; < 0 status */
		int method, keep;
	} cases[] = {
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", ALL, HTTP_GET, 1},
		{"HEAD /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", ALL, HTTP_HEAD, 0},
		{"GET / HTTP/1.0\r\n\r\n", ALL, HTTP_GET, 0},
		{"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", ALL, HTTP_GET, 1},
		{"GET / HTTP/1.1\nHost: a\n\n", ALL, HTTP_GET, 1},             /* bare LF */
		{"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", ALL, HTTP_GET, 1},   /* leading CRLF */
		{"POST / HTTP/1.1\r\nHost: a\r\n\r\n", ALL, HTTP_OTHER, 1},
		{"get / HTTP/1.1\r\nHost: a\r\n\r\n", ALL, HTTP_OTHER, 1},     /* case-sensitive */
		{"GET / HTTP/1.1\r\nHost: a\r\n", 0, 0, 0},
		{"GET / HTTP/1.1", 0, 0, 0},
		{"", 0, 0, 0},
		{"GET / HTTP/1.1\r\n\r\n", -400, 0, 0},                      /* no Host */
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", -400, 0, 0},
		{"GET / HTTP/2.0\r\nHost: a\r\n\r\n", -505, 0, 0},
		{"GET / HTTX/1.1\r\nHost: a\r\n\r\n", -400, 0, 0},
		{"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", -400, 0, 0},
		{"GET / HTTP/1.1\r\nHost : a\r\n\r\n", -400, 0, 0},           /* space before colon */
		{"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", -400, 0, 0},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", -400, 0, 0},
		{"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", -400, 0, 0},
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", -413, 0, 0},
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", ALL, HTTP_GET, 1},
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", -400, 0, 0},
		{"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", -413, 0, 0},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n", ALL, HTTP_GET, 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct http_request req;
		int r = http_parse_request(cases[i].in, strlen(cases[i].in), &req);
		int want = cases[i].want == ALL ? (int)strlen(cases[i].in) : cases[i].want;

		if (r != want)
			t_fail("request %zu: got %d want %d", i, r, want);
		if (r > 0) {
			t_assert((int)req.method == cases[i].method, "case %zu method", i);
			t_assert(req.keep_alive == (bool)cases[i].keep, "case %zu keep-alive", i);
		}
	}

	/* Pipelining: the second request starts where the first ended. */
	{
		const char *two = "GET /a HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\n\r\n"
				  "GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
		struct http_request req;
		int r = http_parse_request(two, strlen(two), &req);

		t_assert(r > 0 && req.range.n == 9 && !memcmp(req.range.p, "bytes=1-2", 9), "first");
		r = http_parse_request(two + r, strlen(two + r), &req);
		t_assert(r == 28 && req.target.n == 2 && !memcmp(req.target.p, "/b", 2), "second %d", r);
	}

	/* Limits: an endless request line is 414, endless headers 431. */
	{
		static char big[40000];
		struct http_request req;
		int n;

		memset(big, 'a', sizeof(big));
		memcpy(big, "GET /", 5);
		t_assert(http_parse_request(big, sizeof(big), &req) == -414, "long line");
		n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: a\r\n");
		while ((size_t)n + 20 < sizeof(big))
			n += snprintf(big + n, sizeof(big) - (size_t)n, "X-A: bbbbbbbbbb\r\n");
		t_assert(http_parse_request(big, (size_t)n, &req) == -431, "long headers");
		n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: a\r\n");
		for (int i = 0; i < HTTP_MAX_HEADERS + 1; i++)
			n += snprintf(big + n, sizeof(big) - (size_t)n, "X: y\r\n");
		n += snprintf(big + n, sizeof(big) - (size_t)n, "\r\n");
		t_assert(http_parse_request(big, (size_t)n, &req) == -431, "too many headers");
	}
}

static void paths(void)
{
	static const struct { const char *in, *out; int err; } cases[] = {
		{"/", "", 0},
		{"/index.html", "index.html", 0},
		{"/a//b///c", "a/b/c", 0},
		{"/a/./b/.", "a/b", 0},
		{"/a/b/../c", "a/c", 0},
		{"/a/..", "", 0},
		{"/a/b/c/../../d?x=1", "a/d", 0},
		{"/%41%62c", "Abc", 0},
		{"/sp%20ace", "sp ace", 0},
		{"/a/%2e%2e/b", "b", 0},
		{"/dir/#frag", "dir", 0},
		{"/..", NULL, -400},
		{"/../etc/passwd", NULL, -400},
		{"/a/../../etc/passwd", NULL, -400},
		{"/%2e%2e/etc/passwd", NULL, -400},
		{"/%2E%2E%2Fetc%2Fpasswd", NULL, -400},
		{"/a%2f..%2f..%2fetc", NULL, -400},
		{"/a%00b", NULL, -400},
		{"/a%zz", NULL, -400},
		{"/a%4", NULL, -400},
		{"/a\\..\\b", NULL, -400},
		{"etc/passwd", NULL, -400},
		/* absolute-form: the authority is ignored, the path checked as ever */
		{"http://host/x", "x", 0},
		{"HTTPS://host:8443/a/../b?q", "b", 0},
		{"http://host", "", 0},
		{"http://host?x=1", "", 0},
		{"http://user@host/x", "x", 0},
		{"http://host/../etc/passwd", NULL, -400},
		{"http://host/%2e%2e/x", NULL, -400},
		{"http:///x", NULL, -400},
		{"http://", NULL, -400},
		{"ftp://host/x", NULL, -400},
		{"http:/x", NULL, -400},
		{"*", NULL, -400},
		{"/%0a", NULL, -400},
	};
	char out[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = http_normalize_path(cases[i].in, strlen(cases[i].in), out, sizeof(out));

		if (cases[i].out) {
			if (r < 0 || strcmp(out, cases[i].out))
				t_fail("path %s: got %d \"%s\" want \"%s\"", cases[i].in, r,
				       r < 0 ? "" : out, cases[i].out);
			t_assert((size_t)r == strlen(out), "length");
		} else if (r != cases[i].err) {
			t_fail("path %s: got %d want %d", cases[i].in, r, cases[i].err);
		}
	}
	t_assert(http_normalize_path("/abcdef", 7, out, 4) == -414, "too long for buffer");
}

static void ranges(void)
{
	static const struct { const char *v; uint64_t size; int r; uint64_t start, len; } cases[] = {
		{"bytes=0-0", 10, 1, 0, 1},
		{"bytes=0-", 10, 1, 0, 10},
		{"bytes=2-5", 10, 1, 2, 4},
		{"bytes=5-100", 10, 1, 5, 5},
		{"bytes=-3", 10, 1, 7, 3},
		{"bytes=-30", 10, 1, 0, 10},
		{"BYTES=1-1", 10, 1, 1, 1},
		{"bytes=10-", 10, -416, 0, 0},
		{"bytes=10-20", 10, -416, 0, 0},
		{"bytes=-0", 10, -416, 0, 0},
		{"bytes=0-", 0, -416, 0, 0},
		{"bytes=5-2", 10, 0, 0, 0},        /* invalid: ignored */
		{"bytes=0-1,3-4", 10, 0, 0, 0},    /* multiple: whole file */
		{"items=0-1", 10, 0, 0, 0},
		{"bytes=a-b", 10, 0, 0, 0},
		{"bytes=", 10, 0, 0, 0},
		{"bytes=99999999999999999999-", 10, 0, 0, 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t s = 0, l = 0;
		int r = http_parse_range(cases[i].v, strlen(cases[i].v), cases[i].size, &s, &l);

		if (r != cases[i].r || (r == 1 && (s != cases[i].start || l != cases[i].len)))
			t_fail("range %s of %llu: got %d %llu+%llu", cases[i].v,
			       (unsigned long long)cases[i].size, r, (unsigned long long)s,
			       (unsigned long long)l);
	}
}

static void dates_etags_types(void)
{
	char d[30];

	http_date(784111777, d);
	t_assert(!strcmp(d, "Sun, 06 Nov 1994 08:49:37 GMT"), "%s", d);
	t_assert(http_parse_date(d, strlen(d)) == 784111777, "round trip");
	t_assert(http_parse_date("Sunday, 06-Nov-94 08:49:37 GMT", 30) == -1, "obsolete format");
	t_assert(http_parse_date("Sun, 06 Foo 1994 08:49:37 GMT", 29) == -1, "bad month");

	t_assert(http_etag_match("\"abc\"", 5, "\"abc\""), "exact");
	t_assert(http_etag_match("\"x\", W/\"abc\"", 12, "\"abc\""), "weak in list");
	t_assert(http_etag_match("*", 1, "\"abc\""), "star");
	t_assert(!http_etag_match("\"abcd\"", 6, "\"abc\""), "prefix is not a match");
	t_assert(!http_etag_match("", 0, "\"abc\""), "empty");

	t_assert(!strcmp(http_mime_type("a/b.HTML"), "text/html; charset=utf-8"), "html");
	t_assert(!strcmp(http_mime_type("x.tar.gz"), "application/gzip"), "gz");
	t_assert(!strcmp(http_mime_type(".bashrc"), "application/octet-stream"), "dotfile");
	t_assert(!strcmp(http_mime_type("dir.d/file"), "application/octet-stream"), "dot in dir");
}

int main(void)
{
	requests();
	paths();
	ranges();
	dates_etags_types();
	return 0;
}
