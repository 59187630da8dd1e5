/* SPDX-License-Identifier: MIT */
/* The syscall seam: libc by default, replaceable by tests so that rare kernel
 * answers (EBUSY, EKEYEXPIRED, short writes) are tested without that kernel. */
#include <sys/sendfile.h>
#include <unistd.h>

#include "kite-private.h"

static int sys_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	return setsockopt(fd, level, name, val, len);
}

static int sys_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	return getsockopt(fd, level, name, val, len);
}

static void sys_wipe(void *p, size_t n)
{
	gnutls_memset(p, 0, n);
}

const struct kite_sys kite_sys_libc = {
	.setsockopt = sys_setsockopt,
	.getsockopt = sys_getsockopt,
	.sendmsg = sendmsg,
	.recvmsg = recvmsg,
	.sendfile = sendfile,
	.pread = pread,
	.wipe = sys_wipe,
};

const struct kite_sys *kite_sys = &kite_sys_libc;

void kite_wipe(void *p, size_t n)
{
	(kite_sys->wipe ? kite_sys->wipe : sys_wipe)(p, n);
}

void kite_sys_set(const struct kite_sys *ops)
{
	kite_sys = ops ? ops : &kite_sys_libc;
}
