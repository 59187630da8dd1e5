/* SPDX-License-Identifier: MIT */
/* libFuzzer target: a satisfiable range always lies inside the file. */
#include <stdint.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t fsize = 0, start = 0, len = 0;
	int r;

	if (size < 8)
		return 0;
	memcpy(&fsize, data, 8);
	fsize %= 1ull << 50;
	r = http_parse_range((const char *)data + 8, size - 8, fsize, &start, &len);
	if (r == 1 && (len == 0 || start >= fsize || len > fsize - start))
		__builtin_trap();
	if (r != 1 && r != 0 && r != -416)
		__builtin_trap();
	return 0;
}
