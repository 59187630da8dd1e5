/* SPDX-License-Identifier: MIT */
/*
 * kite-check's io_uring backend for builds without liburing: the ring
 * checks cannot run, and the fix is to build with it. tools/meson.build
 * builds this file or uring-rings.c.
 */
#include <errno.h>

#include "check.h"

int uring_rings(struct kc_report *r)
{
	kc_add(r, &(struct kc_check){
		.section = "uring", .id = "uring.setup", .name = "io_uring_setup",
		.status = KC_MISSING, .level = KC_FALLBACK, .value = "not built",
		.detail = "kite was built without liburing; kite uses epoll and sendfile(2)",
		.fix = "apt-get install liburing-dev, then meson setup --reconfigure build",
	});
	return -EOPNOTSUPP;
}
