/* SPDX-License-Identifier: MIT */
/*
 * kite-serve: an HTTPS static file server on kite. main.c parses the flags,
 * builds the TLS context, binds the listeners, starts one worker thread per
 * core (worker.c) and then only waits for signals: SIGHUP swaps in a new
 * context (certificate, ticket key) for new connections, SIGTERM/SIGINT
 * stop accepting and give transfers --shutdown-timeout to finish.
 */
#include <arpa/inet.h>
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

#include "server.h"

#define VERSION "0.1.0"

static void usage(FILE *f)
{
	fprintf(f,
"usage: kite-serve [OPTIONS]\n"
"Serve a directory over HTTPS (HTTP/1.1). GnuTLS does the handshake; the kernel\n"
"encrypts the records (kTLS) where it can, so files go out with splice/sendfile.\n"
"\n"
"  --root DIR               directory to serve (default: the current directory)\n"
"  --listen ADDR:PORT       listen address, repeatable; IPv6 as [ADDR]:PORT; port 0\n"
"                           picks a free port (default 127.0.0.1:8443)\n"
"  --cert FILE --key FILE   PEM certificate chain and private key (the key must not\n"
"                           be readable by others); default: a self-signed ECDSA\n"
"                           P-256 certificate for localhost, made at start\n"
"  --allow-insecure-key-perms  accept --key and --ticket-key-file files that other\n"
"                           users can read or write (refused by default)\n"
"  --threads N              worker threads, one engine each (default: one per core)\n"
"  --priority STRING        GnuTLS priority string (default: TLS 1.3 and 1.2 with\n"
"                           the AEADs this kernel can offload)\n"
"  --ktls auto|off|require  kernel TLS where possible (auto), never (off), or refuse\n"
"                           connections the kernel cannot offload both ways (require)\n"
"  --access-log FILE|-      combined log format + TLS version, cipher, kTLS state\n"
"  --ticket-key-file FILE   TLS 1.3 session ticket key: 64 random bytes shared by\n"
"                           servers that should resume each other's sessions\n"
"                           (head -c 64 /dev/urandom > FILE; chmod 600 FILE)\n"
"  --metrics-listen ADDR:PORT  Prometheus /metrics on plain HTTP (default: off)\n"
"  --handshake-timeout SECS TLS handshake (default 10)\n"
"  --header-timeout SECS    a request head from its first byte (default 10; 408)\n"
"  --idle-timeout SECS      keep-alive connection with nothing to do (default 60)\n"
"  --send-timeout SECS      client not reading what is queued (default 30)\n"
"  --shutdown-timeout SECS  transfers may finish after SIGTERM/SIGINT (default 10)\n"
"  --max-conns N            connections at once, all addresses (default 4096; 503)\n"
"  --max-conns-per-ip N     connections at once per client address (default 256,\n"
"                           0: no limit; 503)\n"
"  --pipeline N             pipelined requests answered ahead (default 16)\n"
"  --inline-max BYTES       file bodies read and sent in the head's record\n"
"                           (default 16384, the most one record holds; 0: never)\n"
"  --http2 on|off           offer HTTP/2 (ALPN h2) next to HTTP/1.1 (default on)\n"
"  --h2-max-streams N       concurrent HTTP/2 streams per connection (default 128)\n"
"  --h2-max-requests N      HTTP/2 streams per connection, then GOAWAY (default 10000)\n"
"  --h2-resets-per-s N      HTTP/2 stream resets a client may send per second, twice\n"
"                           that in a burst; more is an attack: GOAWAY (default 100)\n"
"  --help, --version\n"
"\n"
"Signals: SIGHUP reloads the certificate and ticket key (new connections; open\n"
"ones keep theirs) and reopens the access log. SIGTERM/SIGINT stop accepting;\n"
"a second one, or the shutdown timeout, aborts what is left.\n");
}

static int parse_addr(const char *s, struct serve_addr *a)
{
	const char *colon, *host = s;
	size_t hl;
	char *end;
	unsigned long port;
	unsigned char tmp[16];

	memset(a, 0, sizeof(*a));
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');

		if (!rb || rb[1] != ':')
			return -EINVAL;
		host = s + 1;
		hl = (size_t)(rb - host);
		colon = rb + 1;
		a->v6 = true;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - s);
	}
	if (hl >= sizeof(a->host))
		return -EINVAL;
	memcpy(a->host, host, hl);
	a->host[hl] = 0;
	if (!hl || !strcmp(a->host, "*"))
		snprintf(a->host, sizeof(a->host), a->v6 ? "::" : "0.0.0.0");
	if (inet_pton(a->v6 ? AF_INET6 : AF_INET, a->host, tmp) != 1)
		return -EINVAL;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || port > 65535)
		return -EINVAL;
	a->port = (uint16_t)port;
	return 0;
}

static int parse_secs(const char *s, unsigned *ms)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || end == s || v < 0 || v > 86400)
		return -EINVAL;
	*ms = (unsigned)(v * 1000.0 + 0.5);
	return 0;
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || end == s || v < min || v > max || s[0] == '-')
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static unsigned cores(void)
{
	cpu_set_t set;

	/* The cores this process may run on (taskset, cgroups cpusets). */
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return (unsigned)CPU_COUNT(&set);
	return 1;
}

enum {
	O_ROOT = 256, O_LISTEN, O_CERT, O_KEY, O_THREADS, O_PRIORITY, O_KTLS, O_ACCESS_LOG,
	O_TICKET, O_METRICS, O_HS_TO, O_HDR_TO, O_IDLE_TO, O_SEND_TO, O_SHUT_TO, O_MAXC,
	O_MAXIP, O_PIPE, O_INLINE, O_INSECURE, O_HELP, O_VERSION, O_HTTP2, O_H2_STREAMS,
	O_H2_REQUESTS, O_H2_RESETS,
};

static int parse_args(int argc, char **argv, struct serve_config *c)
{
	static const struct option opts[] = {
		{"root", required_argument, NULL, O_ROOT},
		{"listen", required_argument, NULL, O_LISTEN},
		{"cert", required_argument, NULL, O_CERT},
		{"key", required_argument, NULL, O_KEY},
		{"threads", required_argument, NULL, O_THREADS},
		{"priority", required_argument, NULL, O_PRIORITY},
		{"ktls", required_argument, NULL, O_KTLS},
		{"access-log", required_argument, NULL, O_ACCESS_LOG},
		{"ticket-key-file", required_argument, NULL, O_TICKET},
		{"metrics-listen", required_argument, NULL, O_METRICS},
		{"handshake-timeout", required_argument, NULL, O_HS_TO},
		{"header-timeout", required_argument, NULL, O_HDR_TO},
		{"idle-timeout", required_argument, NULL, O_IDLE_TO},
		{"send-timeout", required_argument, NULL, O_SEND_TO},
		{"shutdown-timeout", required_argument, NULL, O_SHUT_TO},
		{"max-conns", required_argument, NULL, O_MAXC},
		{"max-conns-per-ip", required_argument, NULL, O_MAXIP},
		{"pipeline", required_argument, NULL, O_PIPE},
		{"inline-max", required_argument, NULL, O_INLINE},
		{"http2", required_argument, NULL, O_HTTP2},
		{"h2-max-streams", required_argument, NULL, O_H2_STREAMS},
		{"h2-max-requests", required_argument, NULL, O_H2_REQUESTS},
		{"h2-resets-per-s", required_argument, NULL, O_H2_RESETS},
		{"allow-insecure-key-perms", no_argument, NULL, O_INSECURE},
		{"help", no_argument, NULL, O_HELP},
		{"version", no_argument, NULL, O_VERSION},
		{NULL, 0, NULL, 0},
	};
	int o, r = 0;

	memset(c, 0, sizeof(*c));
	c->root = ".";
	c->ktls = KITE_KTLS_DEFAULT;
	c->ktls_mode = "auto";
	c->threads = cores();
	c->handshake_timeout_ms = 10000;
	c->header_timeout_ms = 10000;
	c->idle_timeout_ms = 60000;
	c->send_timeout_ms = 30000;
	c->shutdown_timeout_ms = 10000;
	c->max_conns = 4096;
	c->max_conns_per_ip = 256;
	c->pipeline = 16;
	c->inline_max = 16384;
	c->backlog = 1024;
	c->http2 = true;
	c->h2_max_streams = 128;
	c->h2_max_requests = 10000;
	c->h2_resets_per_s = H2_RESETS_PER_S_DEFAULT;

	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		const char *what = NULL;

		switch (o) {
		case O_ROOT: c->root = optarg; break;
		case O_LISTEN:
			if (c->nlisten == SERVE_MAX_LISTEN) {
				what = "--listen: too many addresses";
				break;
			}
			if (parse_addr(optarg, &c->listen[c->nlisten++]))
				what = "--listen: want ADDR:PORT or [IPV6]:PORT with a numeric address";
			break;
		case O_METRICS:
			c->metrics_on = true;
			if (parse_addr(optarg, &c->metrics))
				what = "--metrics-listen: want ADDR:PORT or [IPV6]:PORT";
			break;
		case O_CERT: c->cert = optarg; break;
		case O_KEY: c->key = optarg; break;
		case O_THREADS:
			if (parse_uint(optarg, 1, SERVE_MAX_THREADS, &c->threads))
				what = "--threads: want 1 .. 256";
			break;
		case O_PRIORITY: c->priority = optarg; break;
		case O_KTLS:
			c->ktls_mode = optarg;
			if (!strcmp(optarg, "auto"))
				c->ktls = KITE_KTLS_DEFAULT;
			else if (!strcmp(optarg, "off"))
				c->ktls = 0;
			else if (!strcmp(optarg, "require"))
				c->ktls = KITE_KTLS_DEFAULT | KITE_KTLS_REQUIRE;
			else
				what = "--ktls: want auto, off or require";
			break;
		case O_ACCESS_LOG: c->access_log = optarg; break;
		case O_TICKET: c->ticket_key_file = optarg; break;
		case O_INSECURE: c->insecure_key_perms = true; break;
		case O_HS_TO: if (parse_secs(optarg, &c->handshake_timeout_ms)) what = "--handshake-timeout: want seconds"; break;
		case O_HDR_TO: if (parse_secs(optarg, &c->header_timeout_ms)) what = "--header-timeout: want seconds"; break;
		case O_IDLE_TO: if (parse_secs(optarg, &c->idle_timeout_ms)) what = "--idle-timeout: want seconds"; break;
		case O_SEND_TO: if (parse_secs(optarg, &c->send_timeout_ms)) what = "--send-timeout: want seconds"; break;
		case O_SHUT_TO: if (parse_secs(optarg, &c->shutdown_timeout_ms)) what = "--shutdown-timeout: want seconds"; break;
		case O_MAXC:
			if (parse_uint(optarg, 1, 1u << 20, &c->max_conns))
				what = "--max-conns: want 1 .. 1048576";
			break;
		case O_MAXIP:
			if (parse_uint(optarg, 0, 1u << 20, &c->max_conns_per_ip))
				what = "--max-conns-per-ip: want 0 .. 1048576";
			break;
		case O_PIPE:
			if (parse_uint(optarg, 1, 1024, &c->pipeline))
				what = "--pipeline: want 1 .. 1024";
			break;
		case O_INLINE:
			if (parse_uint(optarg, 0, 16384, &c->inline_max))
				what = "--inline-max: want 0 .. 16384";
			break;
		case O_HTTP2:
			if (!strcmp(optarg, "on") || !strcmp(optarg, "off"))
				c->http2 = !strcmp(optarg, "on");
			else
				what = "--http2: want on or off";
			break;
		case O_H2_STREAMS:
			if (parse_uint(optarg, 1, 1u << 16, &c->h2_max_streams))
				what = "--h2-max-streams: want 1 .. 65536";
			break;
		case O_H2_REQUESTS:
			if (parse_uint(optarg, 1, 1u << 30, &c->h2_max_requests))
				what = "--h2-max-requests: want 1 .. 1073741824";
			break;
		case O_H2_RESETS:
			if (parse_uint(optarg, 1, 1u << 20, &c->h2_resets_per_s))
				what = "--h2-resets-per-s: want 1 .. 1048576";
			break;
		case 'h':
		case O_HELP: usage(stdout); exit(0);
		case O_VERSION: printf("kite-serve %s\n", VERSION); exit(0);
		default: usage(stderr); return -EINVAL;
		}
		if (what) {
			fprintf(stderr, "kite-serve: %s (got \"%s\")\n", what, optarg);
			r = -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kite-serve: unexpected argument \"%s\" (see --help)\n", argv[optind]);
		return -EINVAL;
	}
	if (!c->cert != !c->key) {
		fprintf(stderr, "kite-serve: --cert and --key go together\n");
		return -EINVAL;
	}
	if (!c->nlisten) {
		parse_addr("127.0.0.1:8443", &c->listen[0]);
		c->nlisten = 1;
	}
	return r;
}

/* ---- TLS context --------------------------------------------------------- */

/* SHA-256 of the first certificate in a PEM file, as "AB:CD:...". */
static void cert_fingerprint(const char *path, char out[96])
{
	gnutls_datum_t pem = {NULL, 0};
	gnutls_x509_crt_t crt = NULL;
	unsigned char md[32];
	size_t n = sizeof(md);

	snprintf(out, 96, "unknown");
	if (gnutls_load_file(path, &pem) < 0)
		return;
	if (gnutls_x509_crt_init(&crt) >= 0 &&
	    gnutls_x509_crt_import(crt, &pem, GNUTLS_X509_FMT_PEM) >= 0 &&
	    gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, md, &n) >= 0 && n == 32)
		for (size_t i = 0; i < n; i++)
			snprintf(out + 3 * i, 96 - 3 * i, "%02X%s", md[i], i + 1 < n ? ":" : "");
	gnutls_x509_crt_deinit(crt);
	gnutls_free(pem.data);
}

static int build_ctx(const struct serve_config *c, struct kite_ctx **out, char fp[96],
		     char *err, size_t errlen)
{
	static const char *const alpn[] = {"h2", "http/1.1"};
	struct kite_ctx *ctx;
	const char *step;
	int r;

	*out = NULL;
	r = kite_ctx_create(&ctx, KITE_SERVER);
	if (r) {
		snprintf(err, errlen, "context: %s", kite_strerror(r));
		return r;
	}
	step = c->cert ? "certificate" : "self-signed certificate";
	r = kite_ctx_allow_insecure_key_perms(ctx, c->insecure_key_perms);
	if (!r && c->cert) {
		r = kite_ctx_set_credentials(ctx, c->cert, c->key);
		if (!r)
			cert_fingerprint(c->cert, fp);
	} else if (!r) {
		r = kite_ctx_set_ephemeral_cert(ctx, "localhost", fp);
	}
	if (!r && c->priority) {
		step = "--priority";
		r = kite_ctx_set_priority(ctx, c->priority);
	}
	if (!r) {
		step = "--ktls";
		r = kite_ctx_set_ktls(ctx, c->ktls);
	}
	if (!r) {
		step = "ALPN";
		/* A client without ALPN gets HTTP/1.1 (RFC 9113 3.2 needs h2
		 * to be negotiated). */
		r = c->http2 ? kite_ctx_set_alpn(ctx, alpn, 2) : kite_ctx_set_alpn(ctx, alpn + 1, 1);
	}
	if (!r) {
		step = "session tickets";
		/* Without a shared file each process (and each reload) has
		 * its own random key: resumption still works against it. */
		r = c->ticket_key_file ? kite_ctx_set_ticket_key_file(ctx, c->ticket_key_file)
				       : kite_ctx_enable_tickets(ctx);
	}
	if (r) {
		snprintf(err, errlen, "%s: %s%s", step, kite_ctx_error(ctx),
			 r == -EPERM ? " (or --allow-insecure-key-perms)" : "");
		kite_ctx_destroy(ctx);
		return r;
	}
	*out = ctx;
	return 0;
}

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

static int bind_listeners(struct server *srv, int *fds)
{
	struct serve_config *c = &srv->cfg;

	for (unsigned i = 0; i < c->nlisten; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		fds[i] = kite_listen_reuseport(c->listen[i].host, c->listen[i].port, c->backlog);
		if (fds[i] < 0) {
			fprintf(stderr, "kite-serve: listen on %s%s%s:%u: %s\n", c->listen[i].v6 ? "[" : "",
				c->listen[i].host, c->listen[i].v6 ? "]" : "", c->listen[i].port,
				kite_strerror(fds[i]));
			return fds[i];
		}
		/* Port 0: every other worker must join the port the kernel
		 * picked for this first socket. */
		if (!getsockname(fds[i], (struct sockaddr *)&ss, &sl))
			c->listen[i].port = ntohs(ss.ss_family == AF_INET6
				? ((struct sockaddr_in6 *)&ss)->sin6_port
				: ((struct sockaddr_in *)&ss)->sin_port);
	}
	return 0;
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
	if (c->cert)
		printf("certificate: %s, SHA-256 fingerprint %s\n", c->cert, srv->fingerprint);
	else
		printf("certificate: self-signed ECDSA P-256 for localhost, made at start (curl -k; a "
		       "browser asks first)\n  SHA-256 fingerprint %s\n", srv->fingerprint);
	ktls_summary(c, k, sizeof(k));
	printf("kernel TLS: %s\n", k);
	printf("engine: %u thread%s, %s\n", srv->nworkers, srv->nworkers == 1 ? "" : "s",
	       srv->workers[0].engine_desc);
	printf("session tickets: %s\n", c->ticket_key_file ? c->ticket_key_file : "on (key of this process)");
	if (c->access_log)
		printf("access log: %s\n", !strcmp(c->access_log, "-") ? "stdout" : c->access_log);
	if (c->metrics_on) {
		url_of(&c->metrics, "http", url, sizeof(url));
		printf("metrics: %smetrics\n", url);
	}
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
	char fp[96] = "", err[400];
	bool all = true;
	int r;

	r = build_ctx(&srv->cfg, &ctx, fp, err, sizeof(err));
	if (r) {
		fprintf(stderr, "kite-serve: reload failed, keeping the old certificate and keys: %s\n",
			err);
		return;
	}
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
		fprintf(stderr, "kite-serve: reopen access log %s: %s\n", srv->cfg.access_log,
			kite_strerror(r));
	fprintf(stderr, "kite-serve: reloaded: certificate SHA-256 %s%s%s\n", fp,
		srv->cfg.ticket_key_file ? ", ticket key from " : ", new ticket key",
		srv->cfg.ticket_key_file ? srv->cfg.ticket_key_file : "");
}

static int start_workers(struct server *srv, int *fds)
{
	unsigned need;
	int r;

	srv->workers = calloc(srv->cfg.threads, sizeof(*srv->workers));
	if (!srv->workers)
		return -ENOMEM;
	for (unsigned i = 0; i < srv->cfg.nlisten; i++)
		srv->workers[0].lfd[i] = fds[i];
	srv->workers[0].nl = srv->cfg.nlisten;
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
		srv->metrics_worker.lfd[0] = kite_listen_reuseport(srv->cfg.metrics.host,
								   srv->cfg.metrics.port, 64);
		if (srv->metrics_worker.lfd[0] < 0) {
			r = srv->metrics_worker.lfd[0];
			fprintf(stderr, "kite-serve: --metrics-listen %s:%u: %s\n", srv->cfg.metrics.host,
				srv->cfg.metrics.port, kite_strerror(r));
			return r;
		}
		srv->metrics_worker.nl = 1;
		{
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);

			if (!getsockname(srv->metrics_worker.lfd[0], (struct sockaddr *)&ss, &sl))
				srv->cfg.metrics.port = ntohs(ss.ss_family == AF_INET6
					? ((struct sockaddr_in6 *)&ss)->sin6_port
					: ((struct sockaddr_in *)&ss)->sin_port);
		}
		r = metrics_start(&srv->metrics_worker, srv);
		if (r)
			return r;
		srv->metrics_running = true;
		need++;
	}
	pthread_mutex_lock(&srv->mu);
	while (srv->started < need)
		pthread_cond_wait(&srv->cond, &srv->mu);
	pthread_mutex_unlock(&srv->mu);
	for (unsigned i = 0; i < srv->nworkers; i++)
		if (srv->workers[i].start_err) {
			fprintf(stderr, "kite-serve: worker %u: %s\n", i, srv->workers[i].start_msg);
			return srv->workers[i].start_err;
		}
	if (srv->metrics_running && srv->metrics_worker.start_err) {
		fprintf(stderr, "kite-serve: %s\n", srv->metrics_worker.start_msg);
		return srv->metrics_worker.start_err;
	}
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

int main(int argc, char **argv)
{
	static struct server srv;
	int fds[SERVE_MAX_LISTEN];
	char err[400], *root_abs = NULL;
	sigset_t set;
	int r, status = 1;

	if (parse_args(argc, argv, &srv.cfg))
		return 2;
	/* Signals are taken synchronously by main only (sigtimedwait); the
	 * workers inherit the blocked mask. SIGPIPE: sendfile(2) and splice
	 * into a reset socket cannot say MSG_NOSIGNAL. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();

	srv.root_fd = open(srv.cfg.root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (srv.root_fd < 0) {
		fprintf(stderr, "kite-serve: --root %s: %s\n", srv.cfg.root, strerror(errno));
		return 2;
	}
	root_abs = realpath(srv.cfg.root, NULL);
	srv.rp.root_fd = srv.root_fd;
	srv.rp.server_name = "kite-serve";
	srv.started_at = (uint64_t)time(NULL);
	pthread_mutex_init(&srv.mu, NULL);
	pthread_cond_init(&srv.cond, NULL);
	for (unsigned i = 0; i < SERVE_MAX_LISTEN; i++)
		fds[i] = -1;

	r = alog_open(&srv.log, srv.cfg.access_log);
	if (r) {
		fprintf(stderr, "kite-serve: --access-log %s: %s\n", srv.cfg.access_log,
			kite_strerror(r));
		goto out;
	}
	r = build_ctx(&srv.cfg, &srv.ctx, srv.fingerprint, err, sizeof(err));
	if (r) {
		fprintf(stderr, "kite-serve: %s\n", err);
		goto out;
	}
	r = iplimit_init(&srv.ipl, srv.cfg.max_conns_per_ip, srv.cfg.max_conns);
	if (r)
		goto out;
	r = bind_listeners(&srv, fds);
	if (r)
		goto out;
	r = start_workers(&srv, fds);
	for (unsigned i = 0; i < SERVE_MAX_LISTEN; i++)
		fds[i] = -1; /* worker 0 owns them now */
	if (r) {
		atomic_store(&srv.draining, true);
		atomic_store(&srv.force, true);
		goto stop;
	}
	banner(&srv, root_abs ? root_abs : srv.cfg.root);
	status = wait_signals(&srv);
stop:
	atomic_store(&srv.force, true);
	wake_all(&srv);
	for (unsigned i = 0; i < srv.nworkers; i++)
		worker_join(&srv.workers[i]);
	if (srv.metrics_running) {
		worker_wake(&srv.metrics_worker);
		worker_join(&srv.metrics_worker);
		if (srv.metrics_worker.lfd[0] >= 0)
			close(srv.metrics_worker.lfd[0]);
	}
	if (srv.nworkers)
		fprintf(stderr, "kite-serve: stopped\n");
out:
	for (unsigned i = 0; i < SERVE_MAX_LISTEN; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	kite_ctx_destroy(srv.ctx);
	iplimit_fini(&srv.ipl);
	alog_close(&srv.log);
	free(srv.workers);
	free(root_abs);
	close(srv.root_fd);
	return status;
}
