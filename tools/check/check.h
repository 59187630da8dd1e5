/* SPDX-License-Identifier: MIT */
/*
 * kite-check's shared types: a report of checks, the kernel facts the
 * subcommands name fixes from, the config and fragment parsers' results;
 * and the functions the subcommand files share.
 */
#ifndef KITE_CHECK_H
#define KITE_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/utsname.h>

#include "kite.h"

enum kc_status { KC_OK, KC_MISSING, KC_UNKNOWN };
/* What kite loses when a check is missing; the names are also the fragment
 * annotation words ("#@ fallback: ..."). */
enum kc_level { KC_FALLBACK, KC_SLOW, KC_LIMIT, KC_LEVEL_COUNT };

struct kc_check {
	const char *section, *id, *name, *value, *detail, *fix;
	enum kc_status status;
	enum kc_level level;
};

struct kc_str {
	struct kc_str *next;
	char s[];
};

struct kc_report {
	struct kc_check *v;
	size_t n, cap;
	const char *command;
	const char *config_source; /* the kernel config read, or config FILE */
	const char *error;         /* set: exit 2 */
	struct kc_str *strings;    /* every string made by kc_str() */
};

struct kc_config { /* a kernel .config: CONFIG_X=v and "# CONFIG_X is not set" (v = "n") */
	char *text;
	struct kc_opt {
		const char *name, *value;
	} *opt;
	size_t n;
};

/* One option line of a fragment with the annotation in force above it. */
struct kc_want {
	const char *name, *value, *purpose;
	const char *arch; /* NULL: every architecture */
	enum kc_level level;
};

struct kc_fragment {
	const char *name;  /* "ktls.config", or the path given */
	const char *label; /* how a fix names it: "kernel-config/ktls.config" */
	char *text;
	struct kc_want *want;
	size_t n;
};

enum kc_module { MOD_UNKNOWN, MOD_BUILTIN, MOD_LOADED, MOD_AVAILABLE, MOD_ABSENT };

/* Facts about the running kernel, gathered once, used to name fixes. */
struct kc_kernel {
	struct utsname uts;
	struct kc_config config;
	bool have_config;
	const char *config_path;
	const char *arch;
	enum kc_module tls_module;
	char ulp[256]; /* tcp_available_ulp */
	int ulp_err;
};

/* Names of enum kc_status and enum kc_level, as printed (report.c). */
extern const char *const status_names[];
extern const char *const level_names[];

/* report.c */
void __attribute__((noreturn)) oom(void);
__attribute__((format(printf, 2, 3))) const char *kc_str(struct kc_report *r,
								  const char *fmt, ...);
void kc_add(struct kc_report *r, const struct kc_check *c);
void kc_free(struct kc_report *r);
int kc_exit_status(const struct kc_report *r);
const char *errno_name(int err);

/* read.c */
int read_file(const char *path, char **out);
int read_gzip(const char *path, char **out);
int read_line(const char *path, char *buf, size_t size);
int read_long(const char *path, long *v);
bool has_word(const char *s, const char *w);

/* kconfig.c */
void config_parse(struct kc_config *c, char *text);
void config_free(struct kc_config *c);
const char *config_get(const struct kc_config *c, const char *name);
const char *config_arch(const struct kc_config *c, const char *machine);
void fragment_free(struct kc_fragment *f);
int fragment_load(struct kc_report *r, struct kc_fragment *f, const char *spec,
		  const char **err);
void check_fragments(struct kc_report *r, const char *section, struct kc_fragment *frags,
		     size_t nfrags, const struct kc_config *c, const char *arch);

/* kernel.c */
void kernel_load(struct kc_report *r, struct kc_kernel *k);
const char *ulp_fix(struct kc_report *r, const struct kc_kernel *k, int err);

/* The subcommands (kernel.c, offload.c, uring.c, config.c): each adds its
 * checks to r; main.c's table runs them. */
int cmd_kernel(struct kc_report *r, struct kc_kernel *k);
int cmd_offload(struct kc_report *r, struct kc_kernel *k);
int cmd_uring(struct kc_report *r, struct kc_kernel *k);
int cmd_config(struct kc_report *r, struct kc_kernel *k, int argc, char **argv);

/* print.c */
void print_json(const struct kc_report *r, const struct utsname *u, FILE *f);
void print_human(const struct kc_report *r, const struct utsname *u, FILE *f);

/*
 * The ring backend (tools/meson.build picks it: uring-rings.c with liburing,
 * uring-rings-none.c without). Adds the ring checks and returns 0 if a ring
 * could be set up, else -errno.
 */
int uring_rings(struct kc_report *r);

#endif /* KITE_CHECK_H */
