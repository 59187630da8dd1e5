/* SPDX-License-Identifier: MIT */
/*
 * kite-check's io_uring backend with liburing: set up rings the way kite's
 * engine does and ask the kernel which opcodes it has. tools/meson.build
 * builds this file or uring-rings-none.c.
 *
 * Keep the tables in step with kite's io_uring engine (lib/): what it submits
 * and how it sets up its rings.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/uio.h>

#include <liburing.h>

#include "check.h"

/* Registered for READ_FIXED (small bodies); counts against RLIMIT_MEMLOCK
 * unless the process has CAP_IPC_LOCK. */
#define URING_REGISTER_BYTES (1u << 20)

static const struct {
	unsigned flag;
	const char *key, *name, *since, *why;
} uring_flags[] = {
	{IORING_SETUP_SUBMIT_ALL, "submit_all", "IORING_SETUP_SUBMIT_ALL", "5.18",
	 "keep submitting after one bad request"},
	{IORING_SETUP_COOP_TASKRUN, "coop_taskrun", "IORING_SETUP_COOP_TASKRUN", "5.19",
	 "completions without interrupting the thread"},
	{IORING_SETUP_SINGLE_ISSUER, "single_issuer", "IORING_SETUP_SINGLE_ISSUER", "6.0",
	 "one ring per thread, no ring locking"},
	/* The kernel takes DEFER_TASKRUN only together with SINGLE_ISSUER. */
	{IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, "defer_taskrun",
	 "IORING_SETUP_DEFER_TASKRUN", "6.1", "completion work batched at wait time"},
};

static const struct {
	int op;
	const char *key, *name, *since, *why;
} uring_ops[] = {
	{IORING_OP_SPLICE, "splice", "IORING_OP_SPLICE", "5.7", "file -> pipe -> kTLS socket"},
	{IORING_OP_READ_FIXED, "read_fixed", "IORING_OP_READ_FIXED", "5.1",
	 "small bodies into registered buffers"},
	{IORING_OP_SEND, "send", "IORING_OP_SEND", "5.6", "small bodies and headers"},
	{IORING_OP_RECV, "recv", "IORING_OP_RECV", "5.6", "requests"},
	{IORING_OP_SENDMSG, "sendmsg", "IORING_OP_SENDMSG", "5.3",
	 "control records (TLS_SET_RECORD_TYPE)"},
	{IORING_OP_RECVMSG, "recvmsg", "IORING_OP_RECVMSG", "5.3",
	 "alerts, tickets, KeyUpdate (TLS_GET_RECORD_TYPE)"},
	{IORING_OP_POLL_ADD, "poll_add", "IORING_OP_POLL_ADD", "5.1", "wait for a full socket"},
	{IORING_OP_ACCEPT, "accept", "IORING_OP_ACCEPT", "5.5", "new connections"},
	{IORING_OP_ASYNC_CANCEL, "async_cancel", "IORING_OP_ASYNC_CANCEL", "5.5",
	 "cancel on close"},
	{IORING_OP_TIMEOUT, "timeout", "IORING_OP_TIMEOUT", "5.4", "the wait for the nearest deadline"},
	{IORING_OP_CLOSE, "close", "IORING_OP_CLOSE", "5.6", "close in the ring"},
};

static const char *uring_setup_fix(struct kc_report *r, int err)
{
	switch (-err) {
	case ENOSYS:
		return "the kernel has no io_uring: rebuild with kernel-config/io_uring.config";
	case EPERM:
		return "io_uring is denied: sysctl -w kernel.io_uring_disabled=0, or allow "
		       "io_uring_setup in the seccomp filter (containers)";
	case ENOMEM:
		return "raise the memlock limit (ulimit -l; Linux < 5.12 charges rings to it)";
	default:
		return kc_str(r, "io_uring_setup failed with %s", strerror(-err));
	}
}

int uring_rings(struct kc_report *r)
{
	struct io_uring_params p = {0};
	struct io_uring ring;
	struct io_uring_probe *probe;
	struct rlimit lim;
	struct iovec iov;
	const char *lim_text;
	int setup, e;

	setup = io_uring_queue_init_params(8, &ring, &p);
	kc_add(r, &(struct kc_check){
		.section = "uring", .id = "uring.setup", .name = "io_uring_setup",
		.status = setup ? KC_MISSING : KC_OK, .level = KC_FALLBACK,
		.value = setup ? errno_name(setup) : kc_str(r, "features 0x%x", p.features),
		.detail = setup ? kc_str(r, "no ring: %s; kite uses epoll and sendfile(2)",
					 strerror(-setup))
				: "a ring can be set up",
		.fix = setup ? uring_setup_fix(r, setup) : NULL,
	});
	for (size_t i = 0; i < sizeof(uring_flags) / sizeof(uring_flags[0]); i++) {
		struct io_uring_params fp = {.flags = uring_flags[i].flag};
		struct io_uring fr;

		/* Unknown setup flags are refused with EINVAL: that is the probe. */
		e = setup ? setup : io_uring_queue_init_params(8, &fr, &fp);
		if (!e)
			io_uring_queue_exit(&fr);
		kc_add(r, &(struct kc_check){
			.section = "uring", .id = kc_str(r, "uring.flag.%s", uring_flags[i].key),
			.name = uring_flags[i].name, .status = e ? KC_MISSING : KC_OK,
			.level = KC_SLOW, .value = errno_name(e),
			.detail = uring_flags[i].why,
			.fix = setup ? uring_setup_fix(r, setup)
				     : kc_str(r, "upgrade the kernel: %s needs Linux >= %s",
					      uring_flags[i].name, uring_flags[i].since),
		});
	}

	/* IORING_REGISTER_PROBE itself needs Linux >= 5.6. */
	probe = setup ? NULL : io_uring_get_probe_ring(&ring);
	for (size_t i = 0; i < sizeof(uring_ops) / sizeof(uring_ops[0]); i++) {
		bool have = probe && io_uring_opcode_supported(probe, uring_ops[i].op);

		kc_add(r, &(struct kc_check){
			.section = "uring", .id = kc_str(r, "uring.op.%s", uring_ops[i].key),
			.name = uring_ops[i].name,
			.status = have ? KC_OK : probe || setup ? KC_MISSING : KC_UNKNOWN,
			.level = KC_FALLBACK, .value = have ? "supported" : probe ? "unsupported" : NULL,
			.detail = probe || setup ? uring_ops[i].why
				: "cannot probe opcodes (IORING_REGISTER_PROBE needs Linux >= 5.6)",
			.fix = setup ? uring_setup_fix(r, setup)
				     : kc_str(r, "upgrade the kernel: %s needs Linux >= %s",
					      uring_ops[i].name, uring_ops[i].since),
		});
	}
	if (probe)
		io_uring_free_probe(probe);

	if (getrlimit(RLIMIT_MEMLOCK, &lim))
		lim.rlim_cur = 0;
	lim_text = lim.rlim_cur == RLIM_INFINITY ? "unlimited"
		   : kc_str(r, "%llu KiB", (unsigned long long)lim.rlim_cur / 1024);
	e = setup;
	if (!e) {
		iov.iov_len = URING_REGISTER_BYTES;
		iov.iov_base = mmap(NULL, iov.iov_len, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (iov.iov_base == MAP_FAILED) {
			e = -errno;
		} else {
			e = io_uring_register_buffers(&ring, &iov, 1);
			munmap(iov.iov_base, iov.iov_len);
		}
	}
	kc_add(r, &(struct kc_check){
		.section = "uring", .id = "uring.memlock", .name = "registered buffers",
		.status = e ? KC_MISSING : KC_OK, .level = KC_SLOW, .value = lim_text,
		.detail = e ? kc_str(r, "cannot register %u KiB (memlock limit %s): %s",
				     URING_REGISTER_BYTES / 1024, lim_text, strerror(-e))
			    : kc_str(r, "%u KiB registered (memlock limit %s)",
				     URING_REGISTER_BYTES / 1024, lim_text),
		.fix = setup ? uring_setup_fix(r, setup)
			     : "raise the memlock limit: ulimit -l 65536, LimitMEMLOCK= for a "
			       "systemd service, or memlock in /etc/security/limits.conf",
	});
	if (!setup)
		io_uring_queue_exit(&ring);
	return setup;
}
