/* SPDX-License-Identifier: MIT */
/*
 * N concurrent connections (1, 100, 1000) fetch files of random sizes
 * (0 B .. 64 MiB) and random ranges from one engine; every byte is checked
 * against the file. Runs on whatever rung KITE_ENGINE selects. Where the
 * kernel offloads (UML, KITE_REQUIRE_KTLS=1) the server's TX must be in
 * the kernel and the bodies must have gone the kernel path (io_uring:
 * ktls-splice; epoll: ktls-sendfile); elsewhere the userspace fallback
 * carries them.
 *
 *   test_engine_transfer [--conns N] [--plain] [--seed S]
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "etest.h"

static uint64_t rnd_state;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

static void pick_range(const struct et_file *f, uint64_t *off, uint64_t *len)
{
	uint64_t size = f->size;

	switch (rnd() % 4) {
	case 0: /* a range from an unaligned offset */
		*off = size ? rnd() % size : 0;
		*len = size - *off ? rnd() % (size - *off) + 1 : 0;
		break;
	case 1: /* the tail from a page-aligned offset */
		*off = size > 4096 ? (rnd() % (size / 4096)) * 4096 : 0;
		*len = size - *off;
		break;
	default: /* the whole file */
		*off = 0;
		*len = size;
		break;
	}
}

int main(int argc, char **argv)
{
	unsigned conns = 1, nfiles, per_client, timeout_ms;
	bool plain = false;
	uint64_t seed = 0x6b697465;
	struct kite_ctx *sctx = NULL, *cctx = NULL;
	struct et_file *files;
	struct et_client *cl;
	struct et_server srv;
	struct t_creds cr;
	size_t big = et_scaled(64u << 20, 4u << 20), maxf;
	uint64_t total = 0, t0, t1;
	unsigned left, bad = 0;
	bool offload;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--conns") && i + 1 < argc)
			conns = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--plain"))
			plain = true;
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else
			t_fail("usage: %s [--conns N] [--plain] [--seed S]", argv[0]);
	}
	if (!conns)
		t_fail("--conns must be > 0");
	if (et_under_valgrind() && conns > 100)
		conns = 100; /* 1000 handshakes each way: hours under valgrind */
	et_valgrind_gate();
	rnd_state = seed | 1;
	et_need_fds(conns * 2 + 200);

	/* Files: fixed edge sizes plus random ones; the big one for few
	 * connections, small ones when there are many. */
	maxf = conns >= 1000 ? et_scaled(256u << 10, 64u << 10)
	     : conns >= 100 ? et_scaled(8u << 20, 1u << 20) : big;
	nfiles = 16;
	files = calloc(nfiles, sizeof(*files));
	{
		static const size_t edge[] = {0, 1, 4095, 16384, 16385, 65537};

		for (unsigned i = 0; i < nfiles; i++) {
			size_t sz;

			if (i < 6)
				sz = edge[i];
			else if (i == nfiles - 1)
				sz = conns >= 1000 ? maxf : big;
			else
				sz = (size_t)(rnd() % (maxf + 1));
			et_make_file(&files[i], sz, seed + i);
		}
	}

	if (!plain) {
		t_make_creds(&cr);
		sctx = t_server_ctx(&cr, NULL, KITE_KTLS_DEFAULT);
		cctx = t_client_ctx(NULL, KITE_KTLS_DEFAULT);
	}
	et_server_init(&srv, sctx);
	srv.files = files;
	srv.nfiles = nfiles;
	srv.cfg.max_streams = conns + 16;
	et_server_start(&srv, false);
	printf("engine: %s (%s)\n", srv.name, srv.detail);

	/* Requests. */
	per_client = conns == 1 ? nfiles + 3 : conns >= 1000 ? 1 : 3;
	cl = calloc(conns, sizeof(*cl));
	for (unsigned i = 0; i < conns; i++) {
		struct et_req *q = calloc(per_client, sizeof(*q));

		for (unsigned k = 0; k < per_client; k++) {
			unsigned f;

			if (conns == 1 && k < nfiles)
				f = k; /* every file, whole */
			else if (conns < 1000 && i < 2 && k == 0)
				f = nfiles - 1; /* a couple fetch the big file */
			else
				f = (unsigned)(rnd() % (nfiles - (conns >= 1000 ? 0 : 1)));
			q[k].kind = 'G';
			q[k].file = f;
			if (conns == 1 && k < nfiles) {
				q[k].off = 0;
				q[k].len = files[f].size;
			} else {
				pick_range(&files[f], &q[k].off, &q[k].len);
			}
			total += q[k].len;
		}
		q[per_client - 1].close = true; /* the server closes after the last */
		cl[i].reqs = q;
		cl[i].nreq = per_client;
	}

	/* Generous: UML's crypto is generic C and 1000 handshakes take time. */
	timeout_ms = et_in_uml() ? 900000 : 300000;
	t0 = t_now_ms();
	left = et_run_clients(cl, conns, cctx, srv.port, files, timeout_ms);
	t1 = t_now_ms();
	/* The server closes after the peer's end (linger): let it finish. */
	et_server_wait_closed(&srv, conns, 10000);
	et_server_stop(&srv);
	printf("clients %llu ms, server closes %llu ms more\n", (unsigned long long)(t1 - t0),
	       (unsigned long long)(t_now_ms() - t1));
	et_server_report(&srv, "transfer");

	for (unsigned i = 0; i < conns; i++) {
		struct et_client *c = &cl[i];

		if (!c->done || c->err || c->mismatch || !c->clean_end) {
			if (bad++ < 10)
				fprintf(stderr, "client %u: %s, err %d (%s)%s%s, %llu bytes, request %u/%u\n",
					i, c->done ? "done" : "NOT DONE", c->err, kite_strerror(c->err),
					c->mismatch ? ", MISMATCH" : "",
					c->clean_end ? "" : ", no clean end",
					(unsigned long long)c->bytes, c->cur, c->nreq);
			if (c->mismatch)
				t_fail("client %u: wrong byte at offset %llu", i,
				       (unsigned long long)c->mismatch_at);
		}
	}
	if (left || bad)
		t_fail("%u of %u clients failed (%u not done)", bad, conns, left);
	t_assert(atomic_load(&srv.bad_requests) == 0, "bad requests");
	t_assert(srv.stats.opened == conns, "%llu opened", (unsigned long long)srv.stats.opened);
	t_assert(srv.stats.closed_ok == conns, "%llu closed ok of %u",
		 (unsigned long long)srv.stats.closed_ok, conns);

	offload = !plain && atomic_load(&srv.ktx) == conns;
	if (!plain && t_require_ktls()) {
		t_assert(offload, "kTLS TX on %u of %u streams", atomic_load(&srv.ktx), conns);
		if (!strcmp(srv.name, "epoll"))
			t_assert(srv.stats.path[KITE_PATH_KTLS_SENDFILE].bytes > 0, "no ktls-sendfile bytes");
		else
			t_assert(srv.stats.path[KITE_PATH_KTLS_SPLICE].bytes +
				 srv.stats.path[KITE_PATH_KTLS_COPY].bytes > 0, "no kTLS path bytes");
	}
	if (!plain && !offload)
		t_assert(srv.stats.path[KITE_PATH_USER].bytes > 0 || total == 0,
			 "userspace path carried nothing");
	printf("ok: %u connections, %llu body bytes verified, %s, %s\n", conns,
	       (unsigned long long)total, plain ? "plaintext" : offload ? "kernel TLS" : "userspace TLS",
	       srv.name);
	for (unsigned i = 0; i < conns; i++)
		free(cl[i].reqs);
	free(cl);
	et_close_files(files, nfiles);
	free(files);
	kite_ctx_destroy(sctx);
	kite_ctx_destroy(cctx);
	return 0;
}
