/* SPDX-License-Identifier: MIT */
/*
 * HTTP/1.1 request parsing for kite-serve: pure functions over bytes, no
 * I/O, no allocation, so each can be fuzzed alone (tests/fuzz/).
 */
#ifndef KITE_SERVE_HTTP_H
#define KITE_SERVE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Limits: a request line longer than this is 414, a header block 431. */
#define HTTP_MAX_REQUEST_LINE 8192
#define HTTP_MAX_HEADERS_BYTES 16384
#define HTTP_MAX_HEADERS 100

enum http_method { HTTP_GET, HTTP_HEAD, HTTP_OTHER };

/* A parsed request. Strings point into the caller's buffer (not NUL
 * terminated: use the lengths) and live as long as it does. */
struct http_str {
	const char *p;
	size_t n;
};

struct http_request {
	enum http_method method;
	struct http_str method_name;
	struct http_str target;       /* origin-form path?query as sent */
	int minor;                    /* HTTP/1.<minor> */
	bool keep_alive;              /* after Connection and version defaults */
	bool has_host;
	bool has_body;                /* Content-Length > 0 or Transfer-Encoding */
	struct http_str range;        /* Range value, n == 0 if absent */
	struct http_str if_none_match;
	struct http_str if_modified_since;
	struct http_str if_range;
	struct http_str user_agent;
	struct http_str referer;
	struct http_str host;
	struct http_str accept_encoding; /* n == 0: absent or empty (identity only) */
};

/*
 * Parse one request head from buf[0..len). Returns the bytes it used
 * (through the blank line), 0 if more bytes are needed, or a negative
 * HTTP status: -400 malformed, -414 request line too long, -431 headers
 * too large, -505 not HTTP/1.x, -501 Transfer-Encoding, -413 a body.
 */
int http_parse_request(const char *buf, size_t len, struct http_request *req);

/*
 * Decode and normalise a request target into a path relative to the root,
 * without leading '/': "" for the root itself. Percent-decodes, drops the
 * query, resolves "." and "..", collapses "//". Returns the length, or
 * -400 (bad encoding, NUL, control bytes, ".." above the root, neither
 * origin-form nor absolute-form) / -414 (longer than cap-1). In absolute-form
 * ("http://host/path") the authority is ignored.
 */
int http_normalize_path(const char *target, size_t n, char *out, size_t cap);

/*
 * A single byte range "bytes=a-b", "bytes=a-", "bytes=-n" against a file of
 * `size` bytes. Returns 1 with *start and *len for a satisfiable range, 0 to
 * serve the whole file (absent, multiple ranges, or a syntax RFC 9110 says
 * to ignore), -416 if it cannot be satisfied.
 */
int http_parse_range(const char *v, size_t n, uint64_t size, uint64_t *start, uint64_t *len);

/* IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT" (29 chars + NUL). */
void http_date(time_t t, char out[30]);
/* Parse IMF-fixdate; -1 if not one (obsolete formats are ignored). */
time_t http_parse_date(const char *s, size_t n);

/* Does an If-None-Match list match the strong etag (quoted)? */
bool http_etag_match(const char *list, size_t n, const char *etag);

/*
 * Which content coding to answer with, from an Accept-Encoding value
 * (RFC 9110 12.5.3) and the codings on offer (HTTP_CE_* bits). Returns the
 * offered codings the client accepts, best first, in order[] (at most 2)
 * and their count; 0 means identity. A coding's weight is its own q, else
 * that of "*", else 0; q=0 refuses it. Equal weights prefer br to gzip.
 * A coding is only chosen over identity when identity's weight (its own,
 * else "*", else 1 but ranked below any listed coding) is not higher.
 * "x-gzip" counts as gzip. Malformed elements are skipped.
 */
enum { HTTP_CE_BR = 1, HTTP_CE_GZIP = 2 };
int http_accept_encoding(const char *v, size_t n, unsigned offered, unsigned order[2]);

/* Content-Type by file name extension; "application/octet-stream" default. */
const char *http_mime_type(const char *path);

#endif
