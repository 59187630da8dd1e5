/* SPDX-License-Identifier: MIT */
/*
 * engine-bench: syscalls per request and per MiB for each data path of the
 * engine, counted inside the engine (io_uring_enter / epoll_wait and every
 * direct syscall it makes; kite_engine_stats()). Asserts nothing about
 * time; prints a table (or --json).
 *
 *   engine-bench [--syscalls] [--json] [--rung R] [--scenario S] [--requests N]
 *                [--conns C] [--size BYTES] [--max-sqes X]
 *
 * Each scenario: C keep-alive connections fetch N files of one size in
 * turn. The engine runs on this process's only thread; the clients run in
 * a forked child, so `strace -c engine-bench --scenario S` (no -f) counts
 * exactly the engine's side (tools/kite-syscalls does that as a check).
 * Handshake syscalls are reported per connection and left out of the
 * per-request figures. With --max-sqes it is a test: exit 1 when an
 * io_uring row needs more than X submissions per request (a keep-alive
 * request's work per round: a timeout operation linked to every receive
 * and send, as the engine once had, shows up here).
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "etest.h"

struct scenario {
	const char *name;
	bool tls;
	bool large;
	bool no_pipes;
};

static const struct scenario scenarios[] = {
	{"plain-large", false, true, false},
	{"plain-large-nopipe", false, true, true},
	{"plain-small", false, false, false},
	{"tls-large", true, true, false},
	{"tls-large-nopipe", true, true, true},
	{"tls-small", true, false, false},
};

struct result {
	char rung[16];
	const struct scenario *sc;
	unsigned requests, conns;
	size_t size;
	bool ktls;
	struct kite_engine_stats st;
};

static unsigned closed_n, want_closed;
static void (*et_on_close)(struct kite_stream *, int);

static void b_close(struct kite_stream *s, int err)
{
	et_on_close(s, err);
	if (++closed_n == want_closed)
		kite_engine_stop(kite_stream_engine(s));
}

/* The server side of et_server's protocol, on this thread: reuse its
 * callbacks through a private et_server whose engine we run ourselves. */
static int run_one(const char *rung, const struct scenario *sc, unsigned requests, unsigned conns,
		   size_t size, struct t_creds *cr, struct result *res)
{
	struct kite_ctx *sctx = NULL, *cctx = NULL;
	struct et_server srv;
	struct et_file f;
	struct kite_engine *e;
	int lfd, st, r;
	pid_t pid;

	if (sc->tls) {
		sctx = t_server_ctx(cr, NULL, KITE_KTLS_DEFAULT);
		cctx = t_client_ctx(NULL, KITE_KTLS_DEFAULT);
	}
	et_make_file(&f, size, 7);
	et_server_init(&srv, sctx);
	srv.files = &f;
	srv.nfiles = 1;
	if (sc->no_pipes)
		srv.cfg.pipes = 0;
	srv.cfg.backend = !strcmp(rung, "uring") ? KITE_ENGINE_URING
			: !strcmp(rung, "uring-basic") ? KITE_ENGINE_URING_BASIC : KITE_ENGINE_EPOLL;
	et_on_close = srv.cfg.on_close;
	srv.cfg.on_close = b_close; /* stop when every connection is done */
	closed_n = 0;
	want_closed = conns;
	lfd = kite_listen_reuseport("127.0.0.1", 0, 1024);
	if (lfd < 0)
		t_fail("listen: %s", kite_strerror(lfd));
	{
		struct sockaddr_in a;
		socklen_t al = sizeof(a);

		getsockname(lfd, (struct sockaddr *)&a, &al);
		srv.port = ntohs(a.sin_port);
	}
	/* The clients fork before the engine exists: a child that inherited
	 * the ring's registered buffers crashed User-Mode Linux 6.12 ("Bad
	 * page map", then a panic) as it exited. Until the engine accepts,
	 * their connections wait in the listener's backlog. */
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		t_fail("fork");
	if (!pid) {
		/* The clients: C connections, requests spread over them. */
		struct et_client *cl = calloc(conns, sizeof(*cl));
		struct et_req *q = calloc(requests, sizeof(*q));
		unsigned left, k = 0;

		for (unsigned i = 0; i < conns; i++) {
			unsigned n = requests / conns + (i < requests % conns);

			cl[i].reqs = &q[k];
			cl[i].nreq = n;
			for (unsigned j = 0; j < n; j++, k++)
				q[k] = (struct et_req){.kind = 'G', .file = 0, .off = 0, .len = size,
						       .close = j == n - 1};
			if (!n)
				cl[i].mode = ET_IDLE; /* never happens with requests >= conns */
		}
		left = et_run_clients(cl, conns, cctx, srv.port, &f, 600000);
		for (unsigned i = 0; i < conns; i++)
			if (cl[i].err || cl[i].mismatch)
				left++;
		/* Freed, so that valgrind (which follows the fork) finds no leak
		 * when it runs engine-bench as a test. */
		free(q);
		free(cl);
		fflush(stdout);
		_exit(left ? 1 : 0);
	}
	r = kite_engine_create(&e, &srv.cfg);
	if (r) {
		fprintf(stderr, "%s: %s\n", rung, kite_engine_create_error());
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		close(lfd);
		et_close_files(&f, 1);
		kite_ctx_destroy(sctx);
		kite_ctx_destroy(cctx);
		return r;
	}
	t_ok(kite_engine_add_listener(e, lfd));

	r = kite_engine_run(e, 900000);
	if (r)
		t_fail("run: %s", kite_strerror(r));
	t_ok(kite_engine_stats(e, &res->st));
	kite_engine_destroy(e);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		t_fail("%s %s: the clients failed", rung, sc->name);
	res->ktls = sc->tls && atomic_load(&srv.ktx) > 0;
	snprintf(res->rung, sizeof(res->rung), "%s", rung);
	res->sc = sc;
	res->requests = requests;
	res->conns = conns;
	res->size = size;
	close(lfd);
	et_close_files(&f, 1);
	kite_ctx_destroy(sctx);
	kite_ctx_destroy(cctx);
	return 0;
}

/* Which paths carried the bytes, e.g. "ktls-splice+ktls-copy". */
static void paths(const struct kite_engine_stats *st, char *buf, size_t len)
{
	buf[0] = 0;
	for (int p = 0; p < KITE_PATH_COUNT; p++)
		if (p != KITE_PATH_SEND && st->path[p].bytes)
			snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", buf[0] ? "+" : "",
				 kite_engine_path_name(p));
}

static void print_row(const struct result *r, bool json, bool first)
{
	const struct kite_engine_stats *st = &r->st;
	double mib = (double)r->requests * (double)r->size / 1048576.0;
	double data_sys = (double)(st->syscalls - st->handshake_syscalls);
	char p[96];

	paths(st, p, sizeof(p));
	if (json) {
		printf("%s{\"rung\":\"%s\",\"scenario\":\"%s\",\"paths\":\"%s\",\"ktls\":%s,"
		       "\"requests\":%u,\"conns\":%u,\"size\":%zu,\"syscalls\":%llu,"
		       "\"handshake_syscalls\":%llu,\"enters\":%llu,\"sqes\":%llu,"
		       "\"syscalls_per_request\":%.2f,\"syscalls_per_mib\":%.2f,"
		       "\"sqes_per_request\":%.2f,\"sqes_per_mib\":%.2f}",
		       first ? "" : ",\n", r->rung, r->sc->name, p, r->ktls ? "true" : "false",
		       r->requests, r->conns, r->size, (unsigned long long)st->syscalls,
		       (unsigned long long)st->handshake_syscalls, (unsigned long long)st->enters,
		       (unsigned long long)st->sqes, data_sys / r->requests,
		       mib > 0 ? data_sys / mib : 0, (double)st->sqes / r->requests,
		       mib > 0 ? (double)st->sqes / mib : 0);
		return;
	}
	printf("%-11s %-18s %-26s %5u %7.1f %9.2f %9.2f %8.2f %8.2f %8.1f\n", r->rung, r->sc->name, p,
	       r->requests, mib, data_sys / r->requests, mib > 0 ? data_sys / mib : 0,
	       (double)st->sqes / r->requests, mib > 0 ? (double)st->sqes / mib : 0,
	       (double)st->handshake_syscalls / r->conns);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	const char *only_rung = NULL, *only_sc = NULL;
	unsigned requests = 0, conns = 4;
	double max_sqes = 0;
	int over = 0;
	size_t size = 0;
	bool json = false, first = true;
	struct t_creds cr;
	struct utsname u;
	const char *rungs[] = {"uring", "uring-basic", "epoll"};

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--syscalls"))
			continue; /* the default (and only) report */
		else if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--rung") && i + 1 < argc)
			only_rung = argv[++i];
		else if (!strcmp(argv[i], "--scenario") && i + 1 < argc)
			only_sc = argv[++i];
		else if (!strcmp(argv[i], "--requests") && i + 1 < argc)
			requests = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--conns") && i + 1 < argc)
			conns = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--size") && i + 1 < argc)
			size = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--max-sqes") && i + 1 < argc)
			max_sqes = strtod(argv[++i], NULL);
		else {
			fprintf(stderr, "usage: %s [--syscalls] [--json] [--rung uring|uring-basic|epoll] "
				"[--scenario NAME] [--requests N] [--conns C] [--size BYTES] "
				"[--max-sqes X]\n"
				"scenarios: plain-large plain-large-nopipe plain-small tls-large "
				"tls-large-nopipe tls-small\n", argv[0]);
			return 2;
		}
	}
	if (!conns)
		conns = 1;
	signal(SIGPIPE, SIG_IGN);
	et_need_fds(conns * 2 + 64);
	t_make_creds(&cr);
	uname(&u);
	if (json) {
		printf("{\"kernel\":\"%s\",\"ktls_available\":%s,\"results\":[\n", u.release,
		       kite_caps_get()->ulp ? "false" : "true");
	} else {
		printf("kite engine: syscalls counted inside the engine (io_uring_enter/epoll_wait + "
		       "direct syscalls), kernel %s, kTLS %s\n", u.release,
		       kite_caps_get()->ulp ? "unavailable (TLS goes the userspace path)" : "available");
		printf("per request and per MiB exclude handshakes (last column, per connection)\n\n");
		printf("%-11s %-18s %-26s %5s %7s %9s %9s %8s %8s %8s\n", "rung", "scenario", "paths",
		       "req", "MiB", "sys/req", "sys/MiB", "sqe/req", "sqe/MiB", "hs/conn");
	}
	for (unsigned ri = 0; ri < 3; ri++) {
		if (only_rung && strcmp(only_rung, rungs[ri]))
			continue;
		for (unsigned si = 0; si < sizeof(scenarios) / sizeof(scenarios[0]); si++) {
			const struct scenario *sc = &scenarios[si];
			size_t sz = size ? size : sc->large ? et_scaled(4u << 20, 1u << 20) : 8192;
			unsigned n = requests ? requests : sc->large ? (et_in_uml() ? 16 : 32) : 1000;
			struct result res;

			if (only_sc && strcmp(only_sc, sc->name))
				continue;
			if (n < conns)
				n = conns;
			memset(&res, 0, sizeof(res));
			if (run_one(rungs[ri], sc, n, conns, sz, &cr, &res))
				continue; /* rung not available here: said on stderr */
			print_row(&res, json, first);
			first = false;
			if (max_sqes > 0 && strcmp(rungs[ri], "epoll") &&
			    (double)res.st.sqes / res.requests > max_sqes) {
				fprintf(stderr, "FAIL: %s %s: %.2f SQEs per request, at most %.2f wanted\n",
					rungs[ri], sc->name, (double)res.st.sqes / res.requests, max_sqes);
				over++;
			}
		}
	}
	if (json)
		printf("\n]}\n");
	return over ? 1 : 0;
}
