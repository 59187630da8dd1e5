/* SPDX-License-Identifier: MIT */
/*
 * kite-serve's command line: one table row per flag (name, how its value
 * is read, where it goes, what a bad value gets told), so that adding a
 * flag is one row and the parser stays one short loop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "flags.h"

static void usage(FILE *f)
{
	fprintf(f,
"usage: kite-serve [OPTIONS]\n"
"Serve a directory over HTTPS (HTTP/1.1). GnuTLS does the handshake; the kernel\n"
"encrypts the records (kTLS) where it can, so files go out with splice/sendfile.\n"
"\n"
"  --root DIR               directory to serve (default: the current directory)\n"
"  --vhost NAME=DIR         serve DIR to requests for host NAME (Host or :authority,\n"
"                           port and case ignored), repeatable; other names get\n"
"                           --root; opened at start (before --user), kept on SIGHUP\n"
"  --precompressed          send FILE.br or FILE.gz (Content-Encoding) instead of\n"
"                           FILE when the client accepts it and it is as new as FILE\n"
"  --listen ADDR:PORT       listen address, repeatable; IPv6 as [ADDR]:PORT; port 0\n"
"                           picks a free port (default 127.0.0.1:8443)\n"
"  --cert FILE --key FILE   PEM certificate chain and private key (the key must not\n"
"                           be readable by others), repeatable: chosen by the\n"
"                           client's SNI and key type, the first pair by default;\n"
"                           default: a self-signed ECDSA P-256 certificate for\n"
"                           localhost, made at start\n"
"  --ocsp-file FILE         DER OCSP response stapled for the --cert before it\n"
"                           (re-read on SIGHUP; never stapled once expired)\n"
"  --allow-insecure-key-perms  accept --key and --ticket-key-file files that other\n"
"                           users can read or write (refused by default)\n"
"  --user NAME[:GROUP]      after binding and reading keys as root, become NAME\n"
"                           (and GROUP, else NAME's group) for good\n"
"  --redirect-listen ADDR:PORT  plain HTTP listener: 301 to https, same host/path\n"
"  --hsts SECONDS           send Strict-Transport-Security: max-age=SECONDS\n"
); /* C11 promises string literals up to 4095 bytes: two halves */
	fputs(
"  --threads N              worker threads, one engine each (default: one per core)\n"
"  --priority STRING        GnuTLS priority string (default: TLS 1.3 and 1.2, the\n"
"                           server's order: what the kernel offloads first, AES-GCM\n"
"                           first on a CPU with AES instructions)\n"
"  --ktls auto|off|require  kernel TLS where possible (auto), never (off), or refuse\n"
"                           connections the kernel cannot offload both ways (require)\n"
"  --access-log FILE|-      combined log format + TLS version, cipher, kTLS state\n"
"  --ticket-key-file FILE   TLS 1.3 session ticket key: 64 random bytes shared by\n"
"                           servers that should resume each other's sessions\n"
"                           (head -c 64 /dev/urandom > FILE; chmod 600 FILE)\n"
"  --metrics-listen ADDR:PORT  Prometheus /metrics on plain HTTP (e.g. 127.0.0.1:9100)\n"
"  --handshake-timeout SECS accept to handshake done (default 10)\n"
"  --header-timeout SECS    a request head from first byte to end (default 10; 408)\n"
"  --idle-timeout SECS      keep-alive with nothing to do (default 60)\n"
"  --send-timeout SECS      client not reading what is queued (default 30)\n"
"  --shutdown-timeout SECS  transfers may finish after SIGTERM/SIGINT (default 10)\n"
"  --max-conns N            connections at once, all addresses (default 4096; 503)\n"
"  --max-conns-per-ip N     connections at once per client address (default 256,\n"
"                           0: no limit; 503)\n"
"  --pipeline N             pipelined requests answered ahead (default 16)\n"
"  --inline-max BYTES       file bodies read and sent in the head's record\n"
"                           (default 16384, the most one record holds; 0: never)\n"
"                           when the file cache does not hold them in memory\n"
"  --file-cache N           open files kept per worker thread: descriptor, stat,\n"
"                           ETag (default 1024; 0: open every file per request)\n"
"  --file-cache-valid SECS  a cached file is trusted this long, then its path is\n"
"                           looked up again and a changed file reopened (default 1)\n"
"  --small-file-max BYTES   cached files up to this size are kept in memory and\n"
"                           sent with the head, no file I/O (default 15360, so\n"
"                           head and body fit one TLS record; 0: none)\n"
"  --http2 on|off           offer HTTP/2 (ALPN h2) next to HTTP/1.1 (default on)\n"
"  --h2-max-streams N       concurrent HTTP/2 streams per connection (default 128)\n"
"  --h2-max-requests N      HTTP/2 streams per connection, then GOAWAY (default 10000)\n"
"  --h2-resets-per-s N      HTTP/2 stream resets a client may send per second, twice\n"
"                           that in a burst; more is an attack: GOAWAY (default 100)\n"
"  --help, --version\n"
"\n"
"Signals: SIGHUP reloads the certificates, keys, OCSP responses and ticket key\n"
"(new connections; open ones keep theirs) and reopens the access log; --root and\n"
"--vhost directories stay the ones opened at start.\n"
"SIGTERM/SIGINT stop accepting; a second one, or the shutdown timeout, aborts\n"
"what is left. Started by systemd with sockets (LISTEN_FDS), it serves those.\n", f);
}

int parse_addr(const char *s, struct serve_addr *a)
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

/* ---- Flags that need more than a field -------------------------------- */

static int set_listen(struct serve_config *c, const char *arg)
{
	if (c->nlisten == SERVE_MAX_LISTEN)
		return -E2BIG;
	return parse_addr(arg, &c->listen[c->nlisten++]);
}

static int set_metrics(struct serve_config *c, const char *arg)
{
	c->metrics_on = true;
	return parse_addr(arg, &c->metrics);
}

static int set_redirect(struct serve_config *c, const char *arg)
{
	c->redirect_on = true;
	return parse_addr(arg, &c->redirect);
}

static int set_cert(struct serve_config *c, const char *arg)
{
	if (c->nsite == SERVE_MAX_SITES)
		return -E2BIG;
	c->site[c->nsite++].cert = arg;
	return 0;
}

/* --key pairs with the --cert of the same position. */
static int set_key(struct serve_config *c, const char *arg)
{
	if (c->nkey == SERVE_MAX_SITES)
		return -E2BIG;
	c->site[c->nkey++].key = arg;
	return 0;
}

static int set_ocsp(struct serve_config *c, const char *arg)
{
	if (!c->nsite || c->site[c->nsite - 1].ocsp)
		return -EINVAL;
	c->site[c->nsite - 1].ocsp = arg;
	return 0;
}

/* NAME=DIR: NAME is a host name as clients send it (matched without case
 * and port), DIR its root. */
static int set_vhost(struct serve_config *c, const char *arg)
{
	const char *eq = strchr(arg, '=');
	size_t n = eq ? (size_t)(eq - arg) : 0;

	if (c->nvhost == SERVE_MAX_VHOSTS || !eq || !n || n > 253 || !eq[1] ||
	    arg[n - 1] == '.')
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._[]:",
			    arg[i]))
			return -EINVAL;
	for (unsigned i = 0; i < c->nvhost; i++)
		if (c->vhost[i].name_len == n && !strncasecmp(c->vhost[i].name, arg, n))
			return -EINVAL; /* the same name twice: which root would win? */
	c->vhost[c->nvhost++] = (struct serve_vhost){.name = arg, .name_len = n, .dir = eq + 1};
	return 0;
}

static int set_ktls(struct serve_config *c, const char *arg)
{
	c->ktls_mode = arg;
	if (!strcmp(arg, "auto"))
		c->ktls = KITE_KTLS_DEFAULT;
	else if (!strcmp(arg, "off"))
		c->ktls = 0;
	else if (!strcmp(arg, "require"))
		c->ktls = KITE_KTLS_DEFAULT | KITE_KTLS_REQUIRE;
	else
		return -EINVAL;
	return 0;
}

static int set_hsts(struct serve_config *c, const char *arg)
{
	c->hsts_on = true;
	/* Two years is what preload lists ask for; ten is plenty of room. */
	return parse_uint(arg, 0, 10 * 366 * 86400, &c->hsts);
}

static int set_user(struct serve_config *c, const char *arg)
{
	if (!arg[0] || arg[0] == ':')
		return -EINVAL;
	c->user = arg;
	return 0;
}

static int set_http2(struct serve_config *c, const char *arg)
{
	if (strcmp(arg, "on") && strcmp(arg, "off"))
		return -EINVAL;
	c->http2 = !strcmp(arg, "on");
	return 0;
}

static int show_help(struct serve_config *c, const char *arg)
{
	(void)c, (void)arg;
	usage(stdout);
	exit(0);
}

static int show_version(struct serve_config *c, const char *arg)
{
	(void)c, (void)arg;
	printf("kite-serve %s\n", KITE_SERVE_VERSION);
	exit(0);
}

/* ---- The table --------------------------------------------------------- */

enum flag_kind { F_STR, F_SECS, F_UINT, F_TRUE, F_FN };

struct flag {
	const char *name;
	enum flag_kind kind;
	size_t off;               /* field of struct serve_config (not F_FN) */
	unsigned min, max;        /* F_UINT */
	int (*fn)(struct serve_config *c, const char *arg); /* F_FN */
	bool no_arg;
	const char *want;         /* what a bad value is told */
};

#define FIELD(f) offsetof(struct serve_config, f)
#define ADDR_WANT "want ADDR:PORT or [IPV6]:PORT with a numeric address"

static const struct flag flags[] = {
	{"root", F_STR, FIELD(root), 0, 0, NULL, false, NULL},
	{"vhost", F_FN, 0, 0, 0, set_vhost, false,
	 "want NAME=DIR, a host name once each, at most 16"},
	{"precompressed", F_TRUE, FIELD(precompressed), 0, 0, NULL, true, NULL},
	{"listen", F_FN, 0, 0, 0, set_listen, false, ADDR_WANT " (at most 8)"},
	{"metrics-listen", F_FN, 0, 0, 0, set_metrics, false, ADDR_WANT},
	{"redirect-listen", F_FN, 0, 0, 0, set_redirect, false, ADDR_WANT},
	{"cert", F_FN, 0, 0, 0, set_cert, false, "at most 16 certificates"},
	{"key", F_FN, 0, 0, 0, set_key, false, "at most 16 keys"},
	{"ocsp-file", F_FN, 0, 0, 0, set_ocsp, false, "one per --cert, after it"},
	{"user", F_FN, 0, 0, 0, set_user, false, "want NAME or NAME:GROUP"},
	{"hsts", F_FN, 0, 0, 0, set_hsts, false, "want seconds (0 .. 316224000)"},
	{"threads", F_UINT, FIELD(threads), 1, SERVE_MAX_THREADS, NULL, false, "want 1 .. 256"},
	{"priority", F_STR, FIELD(priority), 0, 0, NULL, false, NULL},
	{"ktls", F_FN, 0, 0, 0, set_ktls, false, "want auto, off or require"},
	{"access-log", F_STR, FIELD(access_log), 0, 0, NULL, false, NULL},
	{"ticket-key-file", F_STR, FIELD(ticket_key_file), 0, 0, NULL, false, NULL},
	{"allow-insecure-key-perms", F_TRUE, FIELD(insecure_key_perms), 0, 0, NULL, true, NULL},
	{"handshake-timeout", F_SECS, FIELD(handshake_timeout_ms), 0, 0, NULL, false, "want seconds"},
	{"header-timeout", F_SECS, FIELD(header_timeout_ms), 0, 0, NULL, false, "want seconds"},
	{"idle-timeout", F_SECS, FIELD(idle_timeout_ms), 0, 0, NULL, false, "want seconds"},
	{"send-timeout", F_SECS, FIELD(send_timeout_ms), 0, 0, NULL, false, "want seconds"},
	{"shutdown-timeout", F_SECS, FIELD(shutdown_timeout_ms), 0, 0, NULL, false, "want seconds"},
	{"max-conns", F_UINT, FIELD(max_conns), 1, 1u << 20, NULL, false, "want 1 .. 1048576"},
	{"max-conns-per-ip", F_UINT, FIELD(max_conns_per_ip), 0, 1u << 20, NULL, false,
	 "want 0 .. 1048576"},
	{"pipeline", F_UINT, FIELD(pipeline), 1, 1024, NULL, false, "want 1 .. 1024"},
	{"inline-max", F_UINT, FIELD(inline_max), 0, 16384, NULL, false, "want 0 .. 16384"},
	{"file-cache", F_UINT, FIELD(file_cache), 0, 1u << 20, NULL, false, "want 0 .. 1048576"},
	{"file-cache-valid", F_SECS, FIELD(file_cache_valid_ms), 0, 0, NULL, false,
	 "want seconds"},
	{"small-file-max", F_UINT, FIELD(small_file_max), 0, 1u << 20, NULL, false,
	 "want 0 .. 1048576"},
	{"http2", F_FN, 0, 0, 0, set_http2, false, "want on or off"},
	{"h2-max-streams", F_UINT, FIELD(h2_max_streams), 1, 1u << 16, NULL, false,
	 "want 1 .. 65536"},
	{"h2-max-requests", F_UINT, FIELD(h2_max_requests), 1, 1u << 30, NULL, false,
	 "want 1 .. 1073741824"},
	{"h2-resets-per-s", F_UINT, FIELD(h2_resets_per_s), 1, 1u << 20, NULL, false,
	 "want 1 .. 1048576"},
	{"help", F_FN, 0, 0, 0, show_help, true, NULL},
	{"version", F_FN, 0, 0, 0, show_version, true, NULL},
};
#define NFLAGS (sizeof(flags) / sizeof(flags[0]))

static int apply(const struct flag *f, struct serve_config *c, const char *arg)
{
	void *field = (char *)c + f->off;

	switch (f->kind) {
	case F_STR: *(const char **)field = arg; return 0;
	case F_TRUE: *(bool *)field = true; return 0;
	case F_SECS: return parse_secs(arg, field);
	case F_UINT: return parse_uint(arg, f->min, f->max, field);
	case F_FN: return f->fn(c, arg);
	}
	return -EINVAL;
}

static void defaults(struct serve_config *c)
{
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
	c->file_cache = 1024;
	c->file_cache_valid_ms = 1000;
	/* One TLS record holds 16 KiB of plaintext; a head stays under 1 KiB. */
	c->small_file_max = 16384 - RESPONSE_HEAD_MAX;
	c->backlog = 1024;
	c->http2 = true;
	c->h2_max_streams = 128;
	c->h2_max_requests = 10000;
	c->h2_resets_per_s = H2_RESETS_PER_S_DEFAULT;
}

/* What only the whole command line can say. */
static int check_combination(struct serve_config *c)
{
	if (c->nsite != c->nkey) {
		fprintf(stderr, "kite-serve: --cert and --key go together (%u certificate(s), "
			"%u key(s))\n", c->nsite, c->nkey);
		return -EINVAL;
	}
	if (!c->nlisten) {
		parse_addr("127.0.0.1:8443", &c->listen[0]);
		c->nlisten = 1;
	}
	return 0;
}

int parse_args(int argc, char **argv, struct serve_config *c)
{
	struct option opts[NFLAGS + 1];
	int o, r = 0;

	defaults(c);
	memset(opts, 0, sizeof(opts));
	for (size_t i = 0; i < NFLAGS; i++)
		opts[i] = (struct option){flags[i].name,
					  flags[i].no_arg ? no_argument : required_argument, NULL,
					  256 + (int)i};
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		const struct flag *f;

		if (o == 'h')
			show_help(c, NULL);
		if (o < 256 || o >= 256 + (int)NFLAGS) {
			usage(stderr);
			return -EINVAL;
		}
		f = &flags[o - 256];
		if (apply(f, c, optarg)) {
			fprintf(stderr, "kite-serve: --%s: %s (got \"%s\")\n", f->name,
				f->want ? f->want : "bad value", optarg ? optarg : "");
			r = -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kite-serve: unexpected argument \"%s\" (see --help)\n", argv[optind]);
		return -EINVAL;
	}
	return r ? r : check_combination(c);
}
