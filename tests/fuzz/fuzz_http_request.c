/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the request head parser and the responder's use of it. */
#include <stdint.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_request req;
	size_t off = 0;

	/* Pipelined requests: parse until the bytes run out or one fails. */
	while (off < size) {
		int r = http_parse_request((const char *)data + off, size - off, &req);
		char path[512];
		uint64_t s, l;

		if (r <= 0)
			break;
		if ((size_t)r > size - off)
			__builtin_trap(); /* consumed more than it was given */
		(void)!http_normalize_path(req.target.p, req.target.n, path, sizeof(path));
		if (req.range.n)
			(void)!http_parse_range(req.range.p, req.range.n, 1000, &s, &l);
		if (req.if_none_match.n)
			(void)!http_etag_match(req.if_none_match.p, req.if_none_match.n, "\"x\"");
		if (req.accept_encoding.n) {
			unsigned order[2];
			int n = http_accept_encoding(req.accept_encoding.p, req.accept_encoding.n,
						     HTTP_CE_BR | HTTP_CE_GZIP, order);

			if (n < 0 || n > 2 || (n == 2 && order[0] == order[1]))
				__builtin_trap(); /* at most each offered coding once */
		}
		if (req.if_modified_since.n)
			(void)!http_parse_date(req.if_modified_since.p, req.if_modified_since.n);
		off += (size_t)r;
	}
	return 0;
}
