/* SPDX-License-Identifier: MIT */
/*
 * kite-serve: an HTTPS static file server on kite. main.c takes the flags
 * (flags.c), builds the TLS context (keys.c), binds every listener (or takes
 * systemd's), drops to --user, starts one worker thread per core (worker.c)
 * and then only waits for signals: SIGHUP swaps in a new context
 * (certificates, OCSP, ticket key) for new connections, SIGTERM/SIGINT stop
 * accepting and give transfers --shutdown-timeout to finish.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "deploy.h"
#include "flags.h"

#define VERSION KITE_SERVE_VERSION

/* The files build_ctx() reads, kept open across --user (keys.c). */
static struct tls_files tls_files;

/* What the kernel will do for this server's connections, and why not. */
static void ktls_summary(const struct serve_config *c, char *out, size_t cap)
{
	const struct kite_caps *caps = kite_caps_get();
	bool dir_ok[KITE_DIR_COUNT] = {false, false};
	const char *why[KITE_DIR_COUNT] = {NULL, NULL};
	char list[256] = "";
	size_t o = 0;

	if (!c->ktls) {
		snprintf(out, cap, "off (--ktls off): records are encrypted by GnuTLS in userspace");
		return;
	}
	if (caps->ulp) {
		snprintf(out, cap, "TX off, RX off: %s; records are encrypted by GnuTLS in "
			 "userspace%s", caps->ulp_reason,
			 c->ktls & KITE_KTLS_REQUIRE ? " (--ktls require: every handshake will fail)" : "");
		return;
	}
	for (int v = KITE_TLS13; v >= KITE_TLS12; v--)
		for (int ci = 0; ci < KITE_CIPHER_COUNT; ci++) {
			bool both = true;

			for (int d = 0; d < KITE_DIR_COUNT; d++) {
				if (!caps->offload[v][ci][d])
					dir_ok[d] = true;
				else {
					both = false;
					if (!why[d])
						why[d] = caps->offload_reason[v][ci][d];
				}
			}
			if (both && o < sizeof(list) - 40)
				o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s %s", o ? ", " : "",
						      kite_version_name(v), kite_cipher_name(ci));
		}
	snprintf(out, cap, "TX %s, RX %s%s%s%s%s%s%s", dir_ok[KITE_TX] ? "on" : "off",
		 dir_ok[KITE_RX] ? "on" : "off", list[0] ? " for " : "", list,
		 !dir_ok[KITE_TX] ? "; TX: " : "", !dir_ok[KITE_TX] ? why[KITE_TX] : "",
		 !dir_ok[KITE_RX] ? "; RX: " : "", !dir_ok[KITE_RX] ? why[KITE_RX] : "");
}

/* ---- Process ------------------------------------------------------------- */

static void raise_nofile(void)
{
	struct rlimit rl;

	/* One descriptor per connection plus one per file being sent and
	 * the engines' pipes: the default soft limit (1024) is far too low. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* The port the kernel gave a socket (asked for port 0, or handed in). */
static void learn_addr(int fd, struct serve_addr *a, bool host_too)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl))
		return;
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		a->port = ntohs(s6->sin6_port);
		if (host_too && inet_ntop(AF_INET6, &s6->sin6_addr, a->host, sizeof(a->host)))
			a->v6 = true;
	} else if (ss.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		a->port = ntohs(s4->sin_port);
		if (host_too && inet_ntop(AF_INET, &s4->sin_addr, a->host, sizeof(a->host)))
			a->v6 = false;
	}
}

static int bind_one(struct serve_addr *a, int backlog, const char *flag)
{
	int fd = kite_listen_reuseport(a->host, a->port, backlog);

	if (fd < 0) {
		fprintf(stderr, "kite-serve: %s %s%s%s:%u: %s\n", flag, a->v6 ? "[" : "", a->host,
			a->v6 ? "]" : "", a->port, kite_strerror(fd));
		return fd;
	}
	/* Port 0: the sockets that join this one must ask for the port the
	 * kernel picked. */
	learn_addr(fd, a, false);
	return fd;
}

/*
 * Every thread's listening sockets, bound here before --user takes effect
 * (a port below 1024 needs root, and SO_REUSEPORT admits only sockets of
 * the same user to a group). Sockets from systemd are used as they are:
 * the threads share each one (a descriptor per thread, one accept queue),
 * since joining a SO_REUSEPORT group needs the uid that bound it.
 */
static int bind_listeners(struct server *srv, const int *handed, unsigned nhanded)
{
	struct serve_config *c = &srv->cfg;

	for (unsigned t = 0; t < c->threads; t++) {
		struct worker *w = &srv->workers[t];

		for (unsigned i = 0; i < c->nlisten; i++) {
			if (nhanded)
				w->lfd[i] = t ? fcntl(handed[i], F_DUPFD_CLOEXEC, 3) : handed[i];
			else
				w->lfd[i] = bind_one(&c->listen[i], c->backlog, "listen on");
			if (w->lfd[i] < 0)
				return nhanded ? -errno : w->lfd[i];
			w->nl = i + 1;
		}
	}
	if (c->metrics_on) {
		srv->metrics_worker.lfd[0] = bind_one(&c->metrics, 64, "--metrics-listen");
		if (srv->metrics_worker.lfd[0] < 0)
			return srv->metrics_worker.lfd[0];
		srv->metrics_worker.nl = 1;
	}
	if (c->redirect_on) {
		srv->redirect_worker.lfd[0] = bind_one(&c->redirect, c->backlog, "--redirect-listen");
		if (srv->redirect_worker.lfd[0] < 0)
			return srv->redirect_worker.lfd[0];
		srv->redirect_worker.nl = 1;
	}
	return 0;
}

/* Sockets from systemd replace --listen; the banner shows what they are. */
static int take_listeners(struct server *srv)
{
	int handed[SERVE_MAX_LISTEN];
	int n = systemd_listeners(handed, SERVE_MAX_LISTEN);

	if (n < 0)
		return n;
	if (n > 0) {
		srv->cfg.nlisten = (unsigned)n;
		for (int i = 0; i < n; i++)
			learn_addr(handed[i], &srv->cfg.listen[i], true);
		srv->socket_activated = true;
	}
	srv->workers = calloc(srv->cfg.threads, sizeof(*srv->workers));
	if (!srv->workers)
		return -ENOMEM;
	for (unsigned t = 0; t < srv->cfg.threads; t++)
		for (unsigned i = 0; i < SERVE_MAX_LISTEN; i++)
			srv->workers[t].lfd[i] = -1;
	srv->metrics_worker.lfd[0] = srv->redirect_worker.lfd[0] = -1;
	return bind_listeners(srv, handed, (unsigned)(n > 0 ? n : 0));
}

/* --user: everything that needs root is done; become the user for good. */
static int drop_root(struct server *srv)
{
	struct serve_user u;
	char err[300];
	int r;

	if (srv->cfg.user && geteuid() == 0) {
		struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};

		/* io_uring's registered and provided buffers count against
		 * RLIMIT_MEMLOCK for a user without CAP_IPC_LOCK (Linux >=
		 * 5.12); root may lift it now, the user could not later. */
		(void)setrlimit(RLIMIT_MEMLOCK, &rl);
	}
	if (!srv->cfg.user) {
		if (geteuid() == 0)
			fprintf(stderr, "kite-serve: running as root (no --user): every request is "
				"served with root's rights; --user NAME drops them after start-up\n");
		return 0;
	}
	r = user_resolve(srv->cfg.user, &u, err, sizeof(err));
	if (!r)
		r = user_drop(&u, err, sizeof(err));
	if (r)
		fprintf(stderr, "kite-serve: %s\n", err);
	return r;
}

static void url_of(const struct serve_addr *a, const char *scheme, char *out, size_t cap)
{
	const char *h = a->host;

	/* An unspecified address is reachable on loopback at least. */
	if (!strcmp(h, "0.0.0.0"))
		h = "127.0.0.1";
	else if (!strcmp(h, "::"))
		h = "::1";
	snprintf(out, cap, "%s://%s%s%s:%u/", scheme, a->v6 ? "[" : "", h, a->v6 ? "]" : "", a->port);
}

static void banner(struct server *srv, const char *root_abs)
{
	const struct serve_config *c = &srv->cfg;
	char url[128], k[600];

	printf("kite-serve %s: serving %s\n", VERSION, root_abs);
	for (unsigned i = 0; i < c->nlisten; i++) {
		url_of(&c->listen[i], "https", url, sizeof(url));
		printf("  url: %s\n", url);
	}
	for (unsigned i = 0; i < c->nvhost; i++)
		printf("  vhost: %s -> %s\n", srv->vhost[i].name, c->vhost[i].dir);
	if (c->precompressed)
		printf("  precompressed: FILE.br / FILE.gz when accepted and as new as FILE\n");
	for (unsigned i = 0; i < c->nsite; i++)
		printf("certificate: %s%s%s%s%s%s\n", c->site[i].cert,
		       i ? "" : ", SHA-256 fingerprint ", i ? "" : srv->fingerprint,
		       i ? "" : " (default)", c->site[i].ocsp ? ", OCSP " : "",
		       c->site[i].ocsp ? c->site[i].ocsp : "");
	if (!c->nsite)
		printf("certificate: self-signed ECDSA P-256 for localhost, made at start (curl -k; a "
		       "browser asks first)\n  SHA-256 fingerprint %s\n", srv->fingerprint);
	ktls_summary(c, k, sizeof(k));
	printf("kernel TLS: %s\n", k);
	printf("TLS priority: %s\n", kite_ctx_priority(srv->ctx));
	printf("engine: %u thread%s, %s\n", srv->nworkers, srv->nworkers == 1 ? "" : "s",
	       srv->workers[0].engine_desc);
	printf("session tickets: %s\n", c->ticket_key_file ? c->ticket_key_file : "on (key of this process)");
	if (c->access_log)
		printf("access log: %s\n", !strcmp(c->access_log, "-") ? "stdout" : c->access_log);
	if (c->metrics_on) {
		url_of(&c->metrics, "http", url, sizeof(url));
		printf("metrics: %smetrics\n", url);
	}
	if (c->redirect_on) {
		url_of(&c->redirect, "http", url, sizeof(url));
		printf("redirect: %s -> https\n", url);
	}
	if (srv->socket_activated)
		printf("listeners: from systemd (socket activation), shared by the threads\n");
	if (c->user)
		printf("user: %s (uid %u, gid %u)\n", c->user, (unsigned)getuid(), (unsigned)getgid());
	printf("ready (Ctrl-C stops)\n");
	fflush(stdout);
}

static void wake_all(struct server *srv)
{
	for (unsigned i = 0; i < srv->nworkers; i++)
		worker_wake(&srv->workers[i]);
}

/* SIGHUP: a new context for new connections; open ones keep theirs. */
static void reload(struct server *srv)
{
	struct kite_ctx *ctx, *old;
	struct timespec until;
	char fp[96] = "", err[400], warn[400];
	bool all = true;
	int r;

	/* Type=notify units: systemd holds further reloads until READY=1. */
	systemd_notify("RELOADING=1");
	r = build_ctx(&srv->cfg, &tls_files, &ctx, fp, warn, sizeof(warn), err, sizeof(err));
	if (r) {
		fprintf(stderr, "kite-serve: reload failed, keeping the old certificate and keys: %s\n",
			err);
		systemd_notify("READY=1");
		return;
	}
	if (warn[0])
		fprintf(stderr, "kite-serve: reload: %s\n", warn);
	pthread_mutex_lock(&srv->mu);
	old = srv->ctx;
	srv->ctx = ctx;
	srv->ctx_gen++;
	srv->acks = 0;
	pthread_mutex_unlock(&srv->mu);
	wake_all(srv);

	/* The engines borrow the context: the old one may go only once
	 * every worker has moved to the new one (connections keep their
	 * own references and are unaffected). */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	pthread_mutex_lock(&srv->mu);
	while (srv->acks < srv->nworkers - srv->exited)
		if (pthread_cond_timedwait(&srv->cond, &srv->mu, &until)) {
			all = false;
			break;
		}
	snprintf(srv->fingerprint, sizeof(srv->fingerprint), "%s", fp);
	pthread_mutex_unlock(&srv->mu);
	if (all)
		kite_ctx_destroy(old);
	else
		fprintf(stderr, "kite-serve: reload: a worker did not answer; the old context stays\n");
	r = alog_reopen(&srv->log);
	if (r)
		fprintf(stderr, "kite-serve: reopen access log %s: %s%s\n", srv->cfg.access_log,
			strerror(-r), srv->cfg.user ? " (the --user must be able to create it)" : "");
	fprintf(stderr, "kite-serve: reloaded: certificate SHA-256 %s%s%s\n", fp,
		srv->cfg.ticket_key_file ? ", ticket key from " : ", new ticket key",
		srv->cfg.ticket_key_file ? srv->cfg.ticket_key_file : "");
	systemd_notify("READY=1");
}

/* A thread's start-up failed: it said why in start_msg. */
static int start_error(struct worker *w, const char *what)
{
	if (w->start_err)
		fprintf(stderr, "kite-serve: %s: %s\n", what, w->start_msg);
	return w->start_err;
}

static int start_workers(struct server *srv)
{
	unsigned need;
	int r;

	for (unsigned i = 0; i < srv->cfg.threads; i++) {
		r = worker_start(&srv->workers[i], srv, i);
		if (r) {
			fprintf(stderr, "kite-serve: thread: %s\n", kite_strerror(r));
			return r;
		}
		srv->nworkers++;
	}
	need = srv->nworkers;
	if (srv->cfg.metrics_on) {
		r = metrics_start(&srv->metrics_worker, srv);
		if (r)
			return r;
		srv->metrics_running = true;
		need++;
	}
	if (srv->cfg.redirect_on) {
		r = redirect_start(&srv->redirect_worker, srv);
		if (r)
			return r;
		srv->redirect_running = true;
		need++;
	}
	pthread_mutex_lock(&srv->mu);
	while (srv->started < need)
		pthread_cond_wait(&srv->cond, &srv->mu);
	pthread_mutex_unlock(&srv->mu);
	for (unsigned i = 0; i < srv->nworkers; i++)
		if ((r = start_error(&srv->workers[i], "worker")))
			return r;
	if (srv->metrics_running && (r = start_error(&srv->metrics_worker, "metrics")))
		return r;
	if (srv->redirect_running && (r = start_error(&srv->redirect_worker, "redirect")))
		return r;
	return 0;
}

/* Until SIGTERM/SIGINT and the drain, or a worker dies. */
static int wait_signals(struct server *srv)
{
	sigset_t set;
	uint64_t deadline = 0;
	int status = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	for (;;) {
		struct timespec tick = {0, 200 * 1000 * 1000};
		int sig = sigtimedwait(&set, NULL, &tick);
		bool draining = atomic_load(&srv->draining);
		unsigned exited;

		if (sig == SIGHUP && !draining) {
			reload(srv);
		} else if (sig == SIGINT || sig == SIGTERM) {
			if (draining) {
				fprintf(stderr, "kite-serve: %s again: aborting the transfers left\n",
					strsignal(sig));
				atomic_store(&srv->force, true);
				wake_all(srv);
			} else {
				fprintf(stderr, "kite-serve: %s: no new connections; %u open may finish "
					"(up to %.1f s)\n", strsignal(sig), atomic_load(&srv->conns),
					srv->cfg.shutdown_timeout_ms / 1000.0);
				systemd_notify("STOPPING=1");
				atomic_store(&srv->draining, true);
				deadline = mono_ms() + srv->cfg.shutdown_timeout_ms;
				wake_all(srv);
			}
		}
		pthread_mutex_lock(&srv->mu);
		exited = srv->exited;
		pthread_mutex_unlock(&srv->mu);
		if (exited == srv->nworkers)
			break;
		if (exited && !atomic_load(&srv->draining)) {
			/* A worker's loop failed: it said why; stop cleanly. */
			status = 1;
			atomic_store(&srv->draining, true);
			deadline = mono_ms() + srv->cfg.shutdown_timeout_ms;
			wake_all(srv);
		}
		if (deadline && mono_ms() >= deadline && !atomic_load(&srv->force)) {
			fprintf(stderr, "kite-serve: shutdown timeout: aborting %u connection(s)\n",
				atomic_load(&srv->conns));
			atomic_store(&srv->force, true);
			wake_all(srv);
		}
	}
	return status;
}

/* Signals are taken synchronously by main only (sigtimedwait); the
 * workers inherit the blocked mask. SIGPIPE: sendfile(2) and splice into a
 * reset socket cannot say MSG_NOSIGNAL. */
static void setup_process(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
}

/* --vhost roots: opened once, here, while still root (before --user), and
 * kept for the life of the process, so a reload never needs rights the
 * server gave up. */
static int open_vhosts(struct server *srv)
{
	const struct serve_config *c = &srv->cfg;

	for (unsigned i = 0; i < c->nvhost; i++) {
		struct vhost *v = &srv->vhost[i];
		int fd = open(c->vhost[i].dir, O_PATH | O_DIRECTORY | O_CLOEXEC);

		if (fd < 0) {
			fprintf(stderr, "kite-serve: --vhost %.*s: %s: %s\n", (int)c->vhost[i].name_len,
				c->vhost[i].name, c->vhost[i].dir, strerror(errno));
			return -EINVAL;
		}
		for (size_t k = 0; k < c->vhost[i].name_len; k++)
			v->name[k] = (char)tolower((unsigned char)c->vhost[i].name[k]);
		v->name[c->vhost[i].name_len] = 0;
		v->root_fd = fd;
		srv->rp.nvhost = i + 1;
	}
	srv->rp.vhost = srv->vhost;
	return 0;
}

/* The root directory, the access log, the TLS context and the listeners:
 * everything that may need root, in that order. */
static int open_everything(struct server *srv)
{
	char err[400], warn[400];
	int r;

	r = alog_open(&srv->log, srv->cfg.access_log);
	if (r) {
		fprintf(stderr, "kite-serve: --access-log %s: %s\n", srv->cfg.access_log,
			kite_strerror(r));
		return r;
	}
	r = tls_files_open(&tls_files, &srv->cfg, err, sizeof(err));
	if (!r)
		r = build_ctx(&srv->cfg, &tls_files, &srv->ctx, srv->fingerprint, warn, sizeof(warn),
			      err, sizeof(err));
	if (r) {
		fprintf(stderr, "kite-serve: %s\n", err);
		return r;
	}
	if (warn[0])
		fprintf(stderr, "kite-serve: %s\n", warn);
	if (srv->cfg.hsts_on) {
		snprintf(srv->hsts, sizeof(srv->hsts), "Strict-Transport-Security: max-age=%u\r\n",
			 srv->cfg.hsts);
		srv->rp.hsts = srv->hsts;
	}
	r = iplimit_init(&srv->ipl, srv->cfg.max_conns_per_ip, srv->cfg.max_conns);
	return r ? r : take_listeners(srv);
}

static void stop_thread(struct worker *w)
{
	worker_wake(w);
	worker_join(w);
	if (w->lfd[0] >= 0)
		close(w->lfd[0]);
}

static void stop_all(struct server *srv)
{
	atomic_store(&srv->force, true);
	wake_all(srv);
	for (unsigned i = 0; i < srv->nworkers; i++)
		worker_join(&srv->workers[i]);
	if (srv->metrics_running)
		stop_thread(&srv->metrics_worker);
	if (srv->redirect_running)
		stop_thread(&srv->redirect_worker);
	if (srv->nworkers)
		fprintf(stderr, "kite-serve: stopped\n");
}

int main(int argc, char **argv)
{
	static struct server srv;
	char *root_abs = NULL;
	int r, status = 1;

	if (parse_args(argc, argv, &srv.cfg))
		return 2;
	setup_process();
	srv.root_fd = open(srv.cfg.root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (srv.root_fd < 0) {
		fprintf(stderr, "kite-serve: --root %s: %s\n", srv.cfg.root, strerror(errno));
		return 2;
	}
	root_abs = realpath(srv.cfg.root, NULL);
	srv.rp.root_fd = srv.root_fd;
	srv.rp.precompressed = srv.cfg.precompressed;
	if (open_vhosts(&srv)) {
		for (unsigned i = 0; i < srv.rp.nvhost; i++)
			close(srv.vhost[i].root_fd);
		close(srv.root_fd);
		free(root_abs);
		return 2;
	}
	srv.rp.server_name = "kite-serve";
	srv.started_at = (uint64_t)time(NULL);
	pthread_mutex_init(&srv.mu, NULL);
	pthread_cond_init(&srv.cond, NULL);

	r = open_everything(&srv);
	if (!r)
		r = drop_root(&srv);
	if (r)
		goto out;
	r = start_workers(&srv);
	if (r) {
		atomic_store(&srv.draining, true);
		goto stop;
	}
	banner(&srv, root_abs ? root_abs : srv.cfg.root);
	systemd_notify("READY=1");
	status = wait_signals(&srv);
stop:
	stop_all(&srv);
out:
	/* Sockets of threads that never started (their own close them). */
	for (unsigned t = srv.nworkers; srv.workers && t < srv.cfg.threads; t++)
		for (unsigned i = 0; i < srv.workers[t].nl; i++)
			close(srv.workers[t].lfd[i]);
	tls_files_close(&tls_files);
	kite_ctx_destroy(srv.ctx);
	iplimit_fini(&srv.ipl);
	alog_close(&srv.log);
	free(srv.workers);
	free(root_abs);
	for (unsigned i = 0; i < srv.rp.nvhost; i++)
		close(srv.vhost[i].root_fd);
	close(srv.root_fd);
	return status;
}
