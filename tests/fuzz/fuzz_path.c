/* SPDX-License-Identifier: MIT */
/* libFuzzer target: path normalisation must never produce a path that
 * leaves the root or contains what it promised to reject. */
#include <stdint.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char out[256];
	int r = http_normalize_path((const char *)data, size, out, sizeof(out));

	if (r < 0)
		return 0;
	if ((size_t)r != strlen(out) || (size_t)r >= sizeof(out))
		__builtin_trap();
	/* Invariants of a normalised relative path. */
	if (out[0] == '/' || strstr(out, "//") || (r && out[r - 1] == '/'))
		__builtin_trap();
	for (char *seg = out; *seg;) {
		char *end = strchr(seg, '/');
		size_t n = end ? (size_t)(end - seg) : strlen(seg);

		if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
			__builtin_trap();
		seg += n + (end != NULL);
	}
	for (int i = 0; i < r; i++)
		if ((unsigned char)out[i] < 0x20 || out[i] == '\\')
			__builtin_trap();
	return 0;
}
