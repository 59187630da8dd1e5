/* SPDX-License-Identifier: MIT */
/*
 * handshake_full / handshake_resumed: one TLS connection per iteration
 * against a kite server on loopback, TLS 1.2 and 1.3, with an ECDSA P-256
 * or an RSA-2048 certificate.
 *
 * An iteration is what a client waits for: TCP connect, GnuTLS client
 * handshake (verifying the server's self-signed certificate against itself
 * as the trust anchor), and reading until the server's close_notify. The
 * server thread, on the other core, runs kite_conn_create, kite_handshake
 * (including the kTLS handoff the kernel allows), kite_shutdown. Resumed rows
 * present the session ticket of the previous connection, as a browser would;
 * saving that ticket and closing the socket are not timed.
 *
 * The client is GnuTLS, not kite: kite has no client-side session
 * resumption API yet.
 *
 * Counters: server_cpu_us and client_cpu_us per handshake (getrusage
 * RUSAGE_THREAD of each thread): the server's is the cost a server pays.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

struct hs_row {
	bool resumed;
	enum kite_version v;
	enum bench_cert cert;
	const struct bench_cipher *cipher;
};
static struct hs_row rows[2 * 2 * BENCH_NCERTS * BENCH_NCIPHERS];

struct server {
	struct kite_ctx *ctx;
	int listen_fd;
	int cpu;
	pthread_t th;
	atomic_bool failed;
	char msg[512];
	/* Written by the server thread, read after the join. */
	uint64_t conns, resumed;
	bool ktls_tx;
	struct bench_cpu used;
};

static void *serve(void *arg)
{
	struct server *s = arg;
	struct bench_cpu c0, c1;

	bench_pin(s->cpu, NULL);
	bench_thread_cpu(&c0);
	for (;;) {
		struct kite_conn *c = NULL;
		struct kite_conn_info info;
		int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC), r;

		if (fd < 0 && errno == EINTR)
			continue;
		if (fd < 0)
			break; /* the listener was shut down: the run is over */
		r = bench_nodelay(fd);
		if (!r)
			r = kite_conn_create(&c, s->ctx, fd);
		if (!r)
			r = kite_handshake(c);
		if (!r)
			r = kite_shutdown(c);
		if (r && !atomic_load(&s->failed)) {
			snprintf(s->msg, sizeof(s->msg), "server: %s",
				 c ? kite_conn_strerror(c, r) : kite_strerror(r));
			atomic_store(&s->failed, true);
		}
		if (!r && !kite_conn_info(c, &info)) {
			s->conns++;
			s->resumed += info.resumed;
			s->ktls_tx = info.ktls[KITE_TX];
		}
		kite_conn_destroy(c);
		close(fd);
	}
	bench_thread_cpu(&c1);
	s->used.user_ns = c1.user_ns - c0.user_ns;
	s->used.sys_ns = c1.sys_ns - c0.sys_ns;
	return NULL;
}

struct client {
	const struct hs_row *row;
	gnutls_certificate_credentials_t cred;
	char prio[128];
	uint16_t port;
	gnutls_datum_t ticket; /* session data of the last connection */
	char label[160];
	char err[512];
};

/* Stop the timer once per connection (st NULL: untimed connection). */
static void pause_once(struct kb_state *st, bool *paused)
{
	if (st && !*paused)
		kb_pause(st);
	*paused = true;
}

/* One connection; 0 or -1 with c->err set. keep: save its session data. */
static int connect_once(struct client *c, struct kb_state *st, bool keep)
{
	gnutls_session_t s = NULL;
	bool paused = false;
	const char *group, *sign;
	uint8_t buf[256];
	ssize_t n;
	int fd, r = 0, ret = -1;

	fd = bench_connect(c->port);
	if (fd < 0) {
		pause_once(st, &paused);
		snprintf(c->err, sizeof(c->err), "connect: %s", strerror(-fd));
		goto out;
	}
	r = gnutls_init(&s, GNUTLS_CLIENT);
	if (r < 0) {
		s = NULL;
		goto out;
	}
	if ((r = gnutls_priority_set_direct(s, c->prio, NULL)) < 0 ||
	    (r = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, c->cred)) < 0 ||
	    (r = gnutls_server_name_set(s, GNUTLS_NAME_DNS, "localhost", 9)) < 0)
		goto out;
	gnutls_session_set_verify_cert(s, "localhost", 0);
	if (c->row->resumed && c->ticket.data &&
	    (r = gnutls_session_set_data(s, c->ticket.data, c->ticket.size)) < 0)
		goto out;
	gnutls_transport_set_int(s, fd);
	r = bench_gnutls_handshake(s);
	if (r < 0)
		goto out;
	/* Up to the server's close_notify; TLS 1.3 tickets arrive on the way. */
	do
		n = gnutls_record_recv(s, buf, sizeof(buf));
	while (n > 0 || n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED);
	if (n < 0) {
		r = (int)n;
		goto out;
	}
	pause_once(st, &paused);
	if (c->row->resumed && st && !gnutls_session_is_resumed(s)) {
		snprintf(c->err, sizeof(c->err), "the server did not resume the session");
		goto out;
	}
	if (keep) {
		gnutls_free(c->ticket.data);
		c->ticket.data = NULL;
		r = gnutls_session_get_data2(s, &c->ticket);
		if (r < 0)
			goto out;
	}
	group = gnutls_group_get(s) ? gnutls_group_get_name(gnutls_group_get(s)) : NULL;
	sign = gnutls_sign_get_name(gnutls_sign_algorithm_get(s));
	snprintf(c->label, sizeof(c->label), "%s %s %s",
		 gnutls_protocol_get_name(gnutls_protocol_get_version(s)),
		 group ? group : "no-group", sign ? sign : "no-signature");
	ret = 0;
out:
	pause_once(st, &paused);
	if (r < 0)
		snprintf(c->err, sizeof(c->err), "client: %s", gnutls_strerror(r));
	if (s)
		gnutls_deinit(s);
	if (fd >= 0)
		close(fd);
	if (st)
		kb_resume(st);
	return ret;
}

static void bm_handshake(struct kb_state *st, const void *arg)
{
	const struct hs_row *row = arg;
	const struct bench_creds *cr = bench_creds(row->cert);
	struct server srv = {.listen_fd = -1};
	struct client cl = {.row = row};
	struct bench_affinity saved = {0};
	struct bench_cpu c0 = {0}, c1 = {0};
	bool running = false;
	int cpu[2], r;
	double n;

	if (!cr) {
		kb_fail(st, "no %s certificate", row->cert == BENCH_RSA_2048 ? "RSA" : "ECDSA");
		return;
	}
	bench_priority(cl.prio, sizeof(cl.prio), row->v, row->cipher);
	if ((r = kite_ctx_create(&srv.ctx, KITE_SERVER)) ||
	    (r = kite_ctx_set_credentials(srv.ctx, cr->cert, cr->key)) ||
	    (r = kite_ctx_set_priority(srv.ctx, cl.prio)) ||
	    (r = kite_ctx_enable_tickets(srv.ctx))) {
		kb_fail(st, "kite server context: %s", kite_ctx_error(srv.ctx));
		goto out;
	}
	if (gnutls_certificate_allocate_credentials(&cl.cred) < 0 ||
	    gnutls_certificate_set_x509_trust_file(cl.cred, cr->cert, GNUTLS_X509_FMT_PEM) <= 0) {
		kb_fail(st, "client credentials from %s", cr->cert);
		goto out;
	}
	r = bench_listen(&srv.listen_fd, &cl.port);
	if (r) {
		kb_fail(st, "listen: %s", strerror(-r));
		goto out;
	}
	bench_cpus(cpu);
	bench_pin(cpu[0], &saved);
	srv.cpu = cpu[1];
	r = pthread_create(&srv.th, NULL, serve, &srv);
	if (r) {
		kb_fail(st, "pthread_create: %s", strerror(r));
		goto out;
	}
	running = true;
	/* A first full handshake: the ticket for resumed rows, and a check
	 * that the pair works before anything is timed. */
	if (connect_once(&cl, NULL, row->resumed)) {
		kb_fail(st, "%s%s%s", cl.err, atomic_load(&srv.failed) ? "; " : "",
			atomic_load(&srv.failed) ? srv.msg : "");
		goto out;
	}

	bench_thread_cpu(&c0);
	while (kb_keep_running(st)) {
		if (connect_once(&cl, st, row->resumed)) {
			kb_fail(st, "%s%s%s", cl.err, atomic_load(&srv.failed) ? "; " : "",
				atomic_load(&srv.failed) ? srv.msg : "");
			break;
		}
	}
	bench_thread_cpu(&c1);
out:
	if (running) {
		/* Wakes the server's accept() with EINVAL: no more connections. */
		shutdown(srv.listen_fd, SHUT_RDWR);
		pthread_join(srv.th, NULL);
		if (!kb_stopped(st) && atomic_load(&srv.failed))
			kb_fail(st, "%s", srv.msg);
		n = (double)kb_iterations(st);
		if (!kb_stopped(st) && n > 0 && !bench_in_uml()) {
			/* The server also served the untimed first connection. */
			double conns = (double)srv.conns;

			kb_counter(st, "server_cpu_us",
				   (double)(srv.used.user_ns + srv.used.sys_ns) / 1e3 / conns, KB_VALUE);
			kb_counter(st, "client_cpu_us",
				   (double)(c1.user_ns - c0.user_ns + c1.sys_ns - c0.sys_ns) / 1e3 / n,
				   KB_VALUE);
		}
		if (!kb_stopped(st))
			kb_label(st, "%s server-tx:%s", cl.label, srv.ktls_tx ? "kernel" : "userspace");
	}
	bench_unpin(&saved);
	if (srv.listen_fd >= 0)
		close(srv.listen_fd);
	gnutls_free(cl.ticket.data);
	if (cl.cred)
		gnutls_certificate_free_credentials(cl.cred);
	kite_ctx_destroy(srv.ctx);
}

void bench_handshake_register(bool quick)
{
	static const char *const vname[] = {"TLS1.2", "TLS1.3"};
	size_t n = 0;

	for (int resumed = 0; resumed < 2; resumed++)
		for (int v = KITE_TLS12; v <= KITE_TLS13; v++)
			for (int cert = 0; cert < BENCH_NCERTS; cert++)
				for (int c = 0; c < (quick ? 1 : BENCH_NCIPHERS); c++) {
					struct hs_row *row = &rows[n++];
					char name[128];
					struct kb_bench *b;

					row->resumed = resumed;
					row->v = (enum kite_version)v;
					row->cert = (enum bench_cert)cert;
					row->cipher = &bench_ciphers[c];
					snprintf(name, sizeof(name), "handshake_%s/%s/%s/%s",
						 resumed ? "resumed" : "full", vname[v],
						 cert == BENCH_RSA_2048 ? "RSA-2048" : "ECDSA-P256",
						 row->cipher->name);
					b = kb_register(name, bm_handshake, row);
					kb_real_time(b);
					kb_unit(b, KB_US);
				}
}
