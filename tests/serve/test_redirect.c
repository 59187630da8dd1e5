/* SPDX-License-Identifier: MIT */
/*
 * The Location that --redirect-listen answers with (redirect_location):
 * the Host header's name with its port dropped, the https port when it is
 * not 443, the request's path and query; 400 for a Host that could smuggle
 * anything else into the header, 414 when it does not fit.
 */
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "deploy.h"
#include "http.h"

static int loc(const char *raw, unsigned port, char *out, size_t cap)
{
	struct http_request req;
	int r = http_parse_request(raw, strlen(raw), &req);

	t_assert(r > 0, "parse %s: %d", raw, r);
	return redirect_location(&req, port, out, cap);
}

int main(void)
{
	static const struct {
		const char *req;
		unsigned port;
		const char *want; /* NULL: expect 400 */
	} cases[] = {
		{"GET /a?b=1 HTTP/1.1\r\nHost: example.test\r\n\r\n", 443, "https://example.test/a?b=1"},
		{"GET / HTTP/1.1\r\nHost: example.test:80\r\n\r\n", 8443, "https://example.test:8443/"},
		{"GET /x HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 443, "https://[::1]/x"},
		{"GET http://other.test/p HTTP/1.1\r\nHost: ex.test\r\n\r\n", 443, "https://ex.test/p"},
		{"GET / HTTP/1.0\r\n\r\n", 443, NULL},
		{"GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n", 443, NULL},
		{"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 443, NULL},
		{"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 443, NULL},
		{"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 443, NULL},
	};
	char out[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = loc(cases[i].req, cases[i].port, out, sizeof(out));

		if (cases[i].want) {
			t_assert(r == (int)strlen(cases[i].want) && !strcmp(out, cases[i].want),
				 "case %zu: %d %s, want %s", i, r, r > 0 ? out : "", cases[i].want);
		} else {
			t_assert(r == -400, "case %zu: %d, want -400", i, r);
		}
	}
	t_assert(loc("GET /long HTTP/1.1\r\nHost: example.test\r\n\r\n", 443, out, 20) == -414,
		 "no 414 when the Location does not fit");
	printf("redirect locations: %zu cases ok\n", sizeof(cases) / sizeof(cases[0]) + 1);
	return 0;
}
