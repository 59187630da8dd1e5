/* SPDX-License-Identifier: MIT */
/*
 * kite-check config FILE: a kernel .config checked against the
 * kernel-config/ fragments (or the ones given), before the kernel is built.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

int cmd_config(struct kc_report *r, struct kc_kernel *k, int argc, char **argv)
{
	struct kc_fragment frags[8];
	const char *specs[8], *file = NULL, *err = NULL;
	size_t nspec = 0, n = 0;
	struct kc_config c;
	char *text;
	int e;

	(void)k;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--fragment") && i + 1 < argc) {
			if (nspec == sizeof(specs) / sizeof(specs[0])) {
				r->error = "too many --fragment options";
				return -EINVAL;
			}
			specs[nspec++] = argv[++i];
		} else if (!file && argv[i][0] != '-') {
			file = argv[i];
		} else {
			r->error = kc_str(r, "config: unexpected argument '%s'", argv[i]);
			return -EINVAL;
		}
	}
	if (!file) {
		r->error = "config: which file? usage: kite-check config FILE [--fragment NAME|PATH]...";
		return -EINVAL;
	}
	r->config_source = file;
	e = read_file(file, &text);
	if (e) {
		r->error = kc_str(r, "cannot read %s: %s", file, strerror(-e));
		return e;
	}
	config_parse(&c, text);
	if (!c.n) {
		r->error = kc_str(r, "%s is not a kernel .config (no option lines)", file);
		config_free(&c);
		return -EINVAL;
	}
	if (!nspec) {
		specs[nspec++] = "ktls";
		specs[nspec++] = "io_uring";
		if (!strcmp(config_arch(&c, NULL), "um"))
			specs[nspec++] = "uml";
	}
	for (size_t i = 0; i < nspec; i++, n++) {
		e = fragment_load(r, &frags[n], specs[i], &err);
		if (e) {
			r->error = err;
			goto out;
		}
	}
	check_fragments(r, "config", frags, n, &c, config_arch(&c, NULL));
out:
	for (size_t i = 0; i < n; i++)
		fragment_free(&frags[i]);
	config_free(&c);
	return e;
}
