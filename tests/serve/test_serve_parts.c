/* SPDX-License-Identifier: MIT */
/*
 * kite-serve's parts that need no network: the per-address connection
 * table (limits.c), the access log line (log.c) and the error kinds of the
 * metrics (metrics.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "common.h"
#include "server.h"

static void addr(uint8_t a[16], unsigned i)
{
	memset(a, 0, 16);
	a[10] = a[11] = 0xff;
	a[12] = 10;
	a[13] = (uint8_t)(i >> 16);
	a[14] = (uint8_t)(i >> 8);
	a[15] = (uint8_t)i;
}

static void iplimit(void)
{
	struct iplimit l;
	uint8_t a[16];
	enum { N = 500 };

	t_ok(iplimit_init(&l, 3, N));
	/* Up to the limit per address, independently of other addresses. */
	for (unsigned i = 0; i < N / 3; i++) {
		addr(a, i);
		for (int k = 0; k < 3; k++)
			t_assert(iplimit_take(&l, a), "take %u/%d", i, k);
		t_assert(!iplimit_take(&l, a), "4th from %u", i);
	}
	/* Release in a scattered order (exercises backward-shift deletion),
	 * checking the rest are still counted. */
	for (unsigned i = 0; i < N / 3; i += 2) {
		addr(a, i);
		for (int k = 0; k < 3; k++)
			iplimit_put(&l, a);
	}
	for (unsigned i = 0; i < N / 3; i++) {
		addr(a, i);
		if (i % 2 == 0) {
			t_assert(iplimit_take(&l, a), "freed %u", i);
			iplimit_put(&l, a);
		} else {
			t_assert(!iplimit_take(&l, a), "still full %u", i);
		}
	}
	/* Releasing an unknown address is harmless. */
	addr(a, 999999);
	iplimit_put(&l, a);
	iplimit_fini(&l);

	t_ok(iplimit_init(&l, 0, 10)); /* 0: no limit */
	for (int k = 0; k < 100; k++)
		t_assert(iplimit_take(&l, a), "unlimited");
	iplimit_fini(&l);
}

static void ipkey(void)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	uint8_t a[16], b[16];
	char t[64];

	in->sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.7", &in->sin_addr);
	ip_key(&ss, a, t, sizeof(t));
	t_assert(!strcmp(t, "192.0.2.7"), "v4 text %s", t);
	memset(&ss, 0, sizeof(ss));
	in6->sin6_family = AF_INET6;
	inet_pton(AF_INET6, "::ffff:192.0.2.7", &in6->sin6_addr);
	ip_key(&ss, b, t, sizeof(t));
	/* Same client whether it came in on an IPv4 or a dual-stack socket. */
	t_assert(!memcmp(a, b, 16) && !strcmp(t, "192.0.2.7"), "mapped: %s", t);
	inet_pton(AF_INET6, "2001:db8::1", &in6->sin6_addr);
	ip_key(&ss, b, t, sizeof(t));
	t_assert(!strcmp(t, "2001:db8::1") && memcmp(a, b, 16), "v6 %s", t);
}

static void log_line(void)
{
	struct http_request req = {0};
	const char *raw = "GET /x\"y HTTP/1.1\r\nHost: h\r\nUser-Agent: evil\"\n\x01ua\r\n"
			  "Referer: http://r/\r\n\r\n";
	struct sess_answer a = {.req = &req, .status = 200, .body_bytes = 1234, .when = 784111777};
	struct alog_entry e = {.ip = "192.0.2.7", .a = &a, .tls = "TLS1.3 AES-128-GCM ktls=tx+rx resumed=0"};
	char out[4096], big[6000];
	size_t n;

	/* The parser refuses the raw LF inside a header; build req by hand. */
	(void)raw;
	req.user_agent = (struct http_str){"evil\"\n\x01ua", 9};
	req.referer = (struct http_str){"http://r/", 9};
	a.line = "GET /x\"y HTTP/1.1";
	a.line_len = strlen(a.line);
	n = alog_format(out, sizeof(out), &e);
	t_assert(n == strlen(out) && out[n - 1] == '\n', "one line");
	t_assert(!strcmp(out, "192.0.2.7 - - [06/Nov/1994:08:49:37 +0000] \"GET /x\\x22y HTTP/1.1\" "
			      "200 1234 \"http://r/\" \"evil\\x22\\x0a\\x01ua\" "
			      "TLS1.3 AES-128-GCM ktls=tx+rx resumed=0\n"), "got: %s", out);
	t_assert(!memchr(out, '\n', n - 1), "a newline from the client would forge a line");

	/* The host asked for, escaped like every client field, before the TLS fields. */
	req.host = (struct http_str){"a.test:8443\"x", 13};
	n = alog_format(out, sizeof(out), &e);
	t_assert(strstr(out, "\"evil\\x22\\x0a\\x01ua\" host=a.test:8443\\x22x TLS1.3 AES-128-GCM "),
		 "host: %s", out);
	req.host = (struct http_str){NULL, 0};

	/* No request (a 503 at connect): dashes; no body: "-". */
	a.req = NULL;
	a.line = "";
	a.line_len = 0;
	a.status = 503;
	a.body_bytes = 0;
	e.tls = NULL;
	n = alog_format(out, sizeof(out), &e);
	t_assert(strstr(out, "\"-\" 503 - \"-\" \"-\" -\n"), "got: %s", out);

	/* A huge line is cut, the line still ends with the TLS fields. */
	memset(big, 'a', sizeof(big));
	a.line = big;
	a.line_len = sizeof(big);
	e.tls = "TLS1.2 X ktls=off resumed=0";
	n = alog_format(out, sizeof(out), &e);
	t_assert(n < sizeof(out) && strstr(out, "aaa\" 503 - \"-\" \"-\" TLS1.2 X ktls=off resumed=0\n"),
		 "cut: %zu", n);
}

static void kinds(void)
{
	t_assert(close_kind_of(0, true) == CK_OK, "ok");
	t_assert(close_kind_of(-ETIMEDOUT, true) == CK_TIMEOUT, "timeout");
	t_assert(close_kind_of(-ETIMEDOUT, false) == CK_HANDSHAKE, "handshake timeout");
	t_assert(close_kind_of(-EOPNOTSUPP, false) == CK_OFFLOAD_REQUIRED, "require");
	t_assert(close_kind_of(-ECONNRESET, true) == CK_RESET, "reset");
	t_assert(close_kind_of(-ENODATA, true) == CK_FILE, "file");
	t_assert(close_kind_of(-ECANCELED, false) == CK_SHUTDOWN, "shutdown");
	t_assert(close_kind_of(-EXDEV, true) == CK_OTHER, "other");
	for (int k = 0; k < CK_COUNT; k++)
		t_assert(strlen(close_kind_name(k)) > 1, "name %d", k);
	t_assert(slot_status(status_slot(416)) == 416 && slot_status(status_slot(299)) == 0, "slots");
}

int main(void)
{
	iplimit();
	ipkey();
	log_line();
	kinds();
	printf("test_serve_parts: ok\n");
	return 0;
}
