/* SPDX-License-Identifier: MIT */
/*
 * kite-check uring: the ring checks (uring-rings.c or uring-rings-none.c),
 * io_uring_disabled, memlock and the pipe limits kite's splice path needs.
 */
#include <errno.h>
#include <string.h>

#include "check.h"

/* Kernel defaults: below them kite's pipe pool (io_uring splice) gets
 * smaller pipes than it was sized for. */
#define PIPE_MAX_SIZE_DEFAULT 1048576
#define PIPE_USER_PAGES_DEFAULT 16384


static void check_pipe_sysctl(struct kc_report *r, const char *key, const char *path, long dflt,
			      bool zero_is_unlimited, const char *what)
{
	long v = 0;
	int e = read_long(path, &v);
	bool ok = !e && (v >= dflt || (zero_is_unlimited && v == 0));

	kc_add(r, &(struct kc_check){
		.section = "uring", .id = kc_str(r, "uring.sysctl.%s", key + 3),
		.name = key, .status = e ? KC_UNKNOWN : ok ? KC_OK : KC_MISSING, .level = KC_SLOW,
		.value = e ? NULL : kc_str(r, "%ld", v),
		.detail = e ? kc_str(r, "cannot read %s: %s", path, strerror(-e))
			: kc_str(r, "%ld (kernel default %ld): %s", v, dflt, what),
		.fix = kc_str(r, "sysctl -w %s=%ld", key, dflt),
	});
}

int cmd_uring(struct kc_report *r, struct kc_kernel *k)
{
	long dis = 0;
	int e, setup;

	(void)k;
	setup = uring_rings(r);
	/* kernel.io_uring_disabled (Linux >= 6.6): 0 all, 1 only root and
	 * kernel.io_uring_group, 2 nobody. */
	e = read_long("/proc/sys/kernel/io_uring_disabled", &dis);
	kc_add(r, &(struct kc_check){
		.section = "uring", .id = "uring.sysctl.io_uring_disabled",
		.name = "kernel.io_uring_disabled",
		.status = e == -ENOENT || (!e && dis == 0) || (!e && dis == 1 && !setup) ? KC_OK
			: e ? KC_UNKNOWN : KC_MISSING,
		.level = KC_FALLBACK,
		.value = e ? NULL : kc_str(r, "%ld", dis),
		.detail = e == -ENOENT ? "not present (Linux < 6.6): io_uring is not restricted"
			: e ? kc_str(r, "cannot read it: %s", strerror(-e))
			: dis == 0 ? "0: io_uring allowed for everyone"
			: dis == 1 ? "1: io_uring only for root and the group kernel.io_uring_group"
				   : "2: io_uring disabled for everyone",
		.fix = dis == 1 ? "sysctl -w kernel.io_uring_disabled=0, or run kite in the group "
				  "kernel.io_uring_group"
				: "sysctl -w kernel.io_uring_disabled=0",
	});
	check_pipe_sysctl(r, "fs.pipe-max-size", "/proc/sys/fs/pipe-max-size", PIPE_MAX_SIZE_DEFAULT,
			  false, "largest pipe an unprivileged process may make");
	check_pipe_sysctl(r, "fs.pipe-user-pages-soft", "/proc/sys/fs/pipe-user-pages-soft",
			  PIPE_USER_PAGES_DEFAULT, true,
			  "pages of pipes per user before new pipes shrink to one page");
	return 0;
}
