/* SPDX-License-Identifier: MIT */
/*
 * The report: checks as they are added, the strings they point to, the exit
 * status they add up to.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

const char *const status_names[] = {"ok", "missing", "unknown"};
const char *const level_names[] = {"fallback", "slow", "limit"};


void __attribute__((noreturn)) oom(void)
{
	fputs("kite-check: out of memory\n", stderr);
	exit(2);
}

/* A formatted string that lives as long as the report. */
__attribute__((format(printf, 2, 3))) const char *kc_str(struct kc_report *r,
								  const char *fmt, ...)
{
	va_list ap;
	struct kc_str *s;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	s = n < 0 ? NULL : malloc(sizeof(*s) + (size_t)n + 1);
	if (!s)
		oom();
	va_start(ap, fmt);
	vsnprintf(s->s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	s->next = r->strings;
	r->strings = s;
	return s->s;
}

void kc_add(struct kc_report *r, const struct kc_check *c)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 64;
		struct kc_check *v = realloc(r->v, cap * sizeof(*v));

		if (!v)
			oom();
		r->v = v;
		r->cap = cap;
	}
	r->v[r->n] = *c;
	if (c->status == KC_OK)
		r->v[r->n].fix = NULL;
	r->n++;
}

void kc_free(struct kc_report *r)
{
	while (r->strings) {
		struct kc_str *s = r->strings;

		r->strings = s->next;
		free(s);
	}
	free(r->v);
}

int kc_exit_status(const struct kc_report *r)
{
	if (r->error)
		return 2;
	for (size_t i = 0; i < r->n; i++)
		if (r->v[i].status == KC_MISSING && r->v[i].level != KC_LIMIT)
			return 1;
	return 0;
}

/* "ok" for 0, else the errno's name ("ENOENT"): the value of a probe check. */
const char *errno_name(int err)
{
	const char *n = err ? strerrorname_np(-err) : "ok";

	return n ? n : "unknown errno";
}
