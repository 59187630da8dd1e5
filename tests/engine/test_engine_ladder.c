/* SPDX-License-Identifier: MIT */
/*
 * The runtime ladder: uring -> uring-basic -> epoll, decided once per
 * engine and reported with its reason.
 *
 * - KITE_ENGINE and cfg.backend force each rung; a bad KITE_ENGINE value
 *   is an error, not a silent default.
 * - In forked children a seccomp filter makes io_uring_setup fail the way
 *   kernel.io_uring_disabled (EPERM) or a sandbox (ENOSYS) does: the
 *   automatic choice must land on epoll and say why, a forced io_uring rung
 *   must fail with -EOPNOTSUPP, and the epoll engine must then carry a TLS
 *   transfer correctly.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "etest.h"

static struct t_creds cr;

static void block_io_uring(int err)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW), /* other arch: leave alone */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		t_fail("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
		t_skip("seccomp filter unavailable: %s", strerror(errno));
}

static struct kite_engine *make(enum kite_engine_backend b, int *err)
{
	struct kite_engine_config cfg;
	struct kite_engine *e = NULL;

	kite_engine_config_init(&cfg);
	cfg.backend = b;
	*err = kite_engine_create(&e, &cfg);
	return e;
}

static void expect_rung(enum kite_engine_backend b, const char *name)
{
	struct kite_engine_info info;
	int err;
	struct kite_engine *e = make(b, &err);

	if (err)
		t_fail("forced %s: %s", name, kite_engine_create_error());
	t_ok(kite_engine_describe(e, &info));
	t_assert(!strcmp(info.name, name), "forced %s, got %s", name, info.name);
	t_assert(info.backend == b, "backend %d", info.backend);
	printf("%-12s %s\n%-12s reason: %s\n", name, info.detail, "", info.reason);
	kite_engine_destroy(e);
}

/* In a child: io_uring_setup fails with err; the ladder must go to epoll
 * and the epoll engine must work. */
static void child_blocked(int err)
{
	struct kite_engine_info info;
	struct kite_engine *e;
	struct et_server srv;
	struct et_file f[3];
	struct et_client cl[10] = {0};
	struct et_req q[10];
	struct kite_ctx *sctx, *cctx;
	int r;

	unsetenv("KITE_ENGINE");
	block_io_uring(err);

	e = make(KITE_ENGINE_URING, &r);
	t_assert(r == -EOPNOTSUPP, "forced uring with io_uring blocked: %d", r);
	printf("forced uring: %s\n", kite_engine_create_error());
#ifdef KITE_TEST_NO_URING
	/* Built without liburing: that is the reason, whatever the kernel. */
	const char *why = "not built";
#else
	const char *why = kite_strerror(-err);
#endif
	t_assert(strstr(kite_engine_create_error(), why), "no reason given");
	kite_engine_destroy(e);

	e = make(KITE_ENGINE_AUTO, &r);
	t_ok(r);
	t_ok(kite_engine_describe(e, &info));
	printf("auto: %s; reason: %s\n", info.name, info.reason);
	t_assert(!strcmp(info.name, "epoll"), "auto picked %s", info.name);
	t_assert(strstr(info.reason, why), "reason does not name the error");
	kite_engine_destroy(e);

	/* And the fallback carries data: 10 TLS clients, 3 files. */
	et_make_file(&f[0], 0, 1);
	et_make_file(&f[1], 100000, 2);
	et_make_file(&f[2], et_scaled(4u << 20, 1u << 20), 3);
	sctx = t_server_ctx(&cr, NULL, KITE_KTLS_DEFAULT);
	cctx = t_client_ctx(NULL, KITE_KTLS_DEFAULT);
	et_server_init(&srv, sctx);
	srv.files = f;
	srv.nfiles = 3;
	et_server_start(&srv, false);
	t_assert(!strcmp(srv.name, "epoll"), "server engine %s", srv.name);
	for (unsigned i = 0; i < 10; i++) {
		q[i] = (struct et_req){.kind = 'G', .file = i % 3, .off = 0, .len = f[i % 3].size,
				       .close = true};
		cl[i].reqs = &q[i];
		cl[i].nreq = 1;
	}
	t_assert(et_run_clients(cl, 10, cctx, srv.port, f, 60000) == 0, "timeout");
	et_server_wait_closed(&srv, 10, 5000);
	et_server_stop(&srv);
	for (unsigned i = 0; i < 10; i++)
		t_assert(cl[i].done && !cl[i].err && !cl[i].mismatch, "client %u: %d", i, cl[i].err);
	t_assert(srv.stats.closed_ok == 10, "%llu closed ok", (unsigned long long)srv.stats.closed_ok);
	et_close_files(f, 3);
	kite_ctx_destroy(sctx);
	kite_ctx_destroy(cctx);
	/* _exit: the parent's atexit handlers (the credentials dir) are not ours. */
	fflush(stdout);
	_exit(0);
}

static void run_child(int err)
{
	pid_t pid;
	int st;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		t_fail("fork: %s", strerror(errno));
	if (!pid)
		child_blocked(err);
	if (waitpid(pid, &st, 0) != pid)
		t_fail("waitpid: %s", strerror(errno));
	if (WIFEXITED(st) && WEXITSTATUS(st) == T_SKIP)
		t_skip("seccomp not available");
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		t_fail("io_uring blocked with %s: child failed (status %d)", strerror(err), st);
	printf("io_uring_setup -> %s: epoll rung, transfer ok\n", strerror(err));
}

int main(void)
{
	struct kite_engine *e;
	int r;

	t_make_creds(&cr);

	/* A bad KITE_ENGINE is refused, with the reason. */
	setenv("KITE_ENGINE", "turbo", 1);
	e = make(KITE_ENGINE_AUTO, &r);
	t_assert(r == -EINVAL && !e, "KITE_ENGINE=turbo: %d", r);
	t_assert(strstr(kite_engine_create_error(), "KITE_ENGINE"), "%s", kite_engine_create_error());
	/* ...but an explicit configuration wins over the environment. */
	e = make(KITE_ENGINE_EPOLL, &r);
	t_ok(r);
	kite_engine_destroy(e);

	/* Each rung by environment, then by configuration. */
	setenv("KITE_ENGINE", "epoll", 1);
	{
		struct kite_engine_info info;

		e = make(KITE_ENGINE_AUTO, &r);
		t_ok(r);
		t_ok(kite_engine_describe(e, &info));
		t_assert(!strcmp(info.name, "epoll") && strstr(info.reason, "KITE_ENGINE"),
			 "%s: %s", info.name, info.reason);
		kite_engine_destroy(e);
	}
	unsetenv("KITE_ENGINE");
#ifdef KITE_TEST_NO_URING
	expect_rung(KITE_ENGINE_EPOLL, "epoll");
#else
	expect_rung(KITE_ENGINE_URING, "uring");
	expect_rung(KITE_ENGINE_URING_BASIC, "uring-basic");
	expect_rung(KITE_ENGINE_EPOLL, "epoll");
	{
		struct kite_engine_info info;

		e = make(KITE_ENGINE_AUTO, &r);
		t_ok(r);
		t_ok(kite_engine_describe(e, &info));
		printf("auto: %s (%s)\n", info.name, info.reason);
		kite_engine_destroy(e);
	}
#endif

	/* io_uring refused the way sysctl and sandboxes refuse it. */
	run_child(ENOSYS);
	run_child(EPERM);
	printf("ok\n");
	return 0;
}
