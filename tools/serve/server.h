/* SPDX-License-Identifier: MIT */
/*
 * kite-serve: shared state of the server process. main.c parses the flags,
 * builds the TLS context and owns the signals; worker.c runs one kite engine
 * per thread; metrics.c sums what the workers publish; log.c writes the
 * access log; limits.c counts connections per client address.
 */
#ifndef KITE_SERVE_SERVER_H
#define KITE_SERVE_SERVER_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "filecache.h"
#include "h2.h"
#include "plain.h"
#include "kite.h"
#include "respond.h"
#include "session.h"

#define SERVE_MAX_LISTEN 8
#define SERVE_MAX_THREADS 256
#define SERVE_MAX_SITES 16
#define SERVE_MAX_VHOSTS 16

struct serve_addr {
	char host[64];     /* numeric, no brackets */
	uint16_t port;     /* 0 until bound when asked for 0 */
	bool v6;
};

/* One --cert/--key pair and its stapled OCSP response (--ocsp-file). */
struct serve_site {
	const char *cert, *key, *ocsp;
};

/* One --vhost NAME=DIR. */
struct serve_vhost {
	const char *name, *dir; /* dir points into the argument */
	size_t name_len;
};

struct serve_config {
	const char *root;
	struct serve_vhost vhost[SERVE_MAX_VHOSTS];
	unsigned nvhost;
	bool precompressed;      /* --precompressed: FILE.br / FILE.gz beside FILE */
	struct serve_addr listen[SERVE_MAX_LISTEN];
	unsigned nlisten;
	struct serve_addr metrics;
	bool metrics_on;
	struct serve_site site[SERVE_MAX_SITES]; /* none: a self-signed certificate */
	unsigned nsite, nkey;
	const char *priority;
	const char *user;        /* --user NAME[:GROUP]: drop to it after start-up */
	struct serve_addr redirect; /* --redirect-listen: plain HTTP, 301 to https */
	bool redirect_on;
	unsigned hsts;           /* --hsts SECONDS */
	bool hsts_on;
	const char *ticket_key_file;
	bool insecure_key_perms;      /* --allow-insecure-key-perms */
	const char *access_log;  /* NULL: none; "-": stdout */
	unsigned ktls;           /* KITE_KTLS_* */
	const char *ktls_mode;   /* "auto", "off", "require" */
	unsigned threads;
	unsigned handshake_timeout_ms, header_timeout_ms, idle_timeout_ms, send_timeout_ms;
	unsigned shutdown_timeout_ms;
	unsigned max_conns, max_conns_per_ip;
	unsigned pipeline;
	unsigned inline_max;     /* bytes: small bodies go in the head's record */
	unsigned file_cache;     /* --file-cache: entries per worker; 0: no cache */
	unsigned file_cache_valid_ms; /* --file-cache-valid */
	unsigned small_file_max; /* --small-file-max: cached files kept in memory */
	int backlog;
	bool http2;              /* ALPN offers h2 */
	unsigned h2_max_streams, h2_max_requests, h2_resets_per_s;
};

/* ---- limits.c: open connections per client address ---------------------- */

struct iplimit {
	pthread_mutex_t mu;
	unsigned max;        /* per address; 0: no limit */
	unsigned mask;       /* slots - 1 (a power of two) */
	uint64_t seed;
	struct ipslot { uint8_t a[16]; unsigned n; } *slot;
};

int iplimit_init(struct iplimit *l, unsigned max_per_ip, unsigned max_total);
void iplimit_fini(struct iplimit *l);
/* Count one more connection from a; false (nothing counted) at the limit. */
bool iplimit_take(struct iplimit *l, const uint8_t a[16]);
void iplimit_put(struct iplimit *l, const uint8_t a[16]);
/* Address as 16 bytes (IPv4 as ::ffff:a.b.c.d) and as text. */
void ip_key(const struct sockaddr_storage *ss, uint8_t a[16], char *text, size_t cap);

/* ---- log.c: access log -------------------------------------------------- */

struct access_log {
	int fd;              /* -1: off */
	const char *path;    /* "-": stdout */
	atomic_bool failing; /* the last write failed (reported once) */
	atomic_ulong lost;   /* lines lost since it began failing */
};

int alog_open(struct access_log *l, const char *path);
/* SIGHUP: reopen the file (after rotation); other threads keep writing. */
int alog_reopen(struct access_log *l);
void alog_close(struct access_log *l);

struct alog_entry {
	const char *ip;
	const struct sess_answer *a;
	const char *tls;     /* "TLS1.3 AES-128-GCM ktls=tx+rx resumed=0" or "-" */
};
/* One line in the combined log format plus the TLS fields, '\n'-ended;
 * returns its length (< cap). Bytes from the client are escaped. */
size_t alog_format(char *out, size_t cap, const struct alog_entry *e);
void alog_write(struct access_log *l, const char *line, size_t n);

/* ---- metrics.c ---------------------------------------------------------- */

enum close_kind {
	CK_OK, CK_TIMEOUT, CK_RESET, CK_TLS, CK_HANDSHAKE, CK_FILE, CK_ABORTED, CK_SHUTDOWN,
	CK_KEY_EXPIRED, CK_OFFLOAD_REQUIRED, CK_OVERFLOW, CK_OTHER, CK_COUNT
};
const char *close_kind_name(enum close_kind k);
enum close_kind close_kind_of(int err, bool opened);

#define STATUS_SLOTS 20
#define FALLBACK_SLOTS 16

/* What one worker counted; copied whole into the published snapshot. */
struct serve_stats {
	struct kite_engine_stats eng;
	uint64_t handshakes, resumptions;
	uint64_t ktls[KITE_DIR_COUNT];      /* connections offloaded, per direction */
	struct {
		char reason[112];
		uint64_t n[KITE_DIR_COUNT];
	} fallback[FALLBACK_SLOTS];
	unsigned nfallback;
	uint64_t fallback_other[KITE_DIR_COUNT]; /* reasons beyond the table */
	uint64_t closed[CK_COUNT];
	uint64_t rejected_global, rejected_ip, rejected_shutdown;
	uint64_t requests[STATUS_SLOTS];    /* by status_slot(), every protocol */
	uint64_t requests_h2[STATUS_SLOTS]; /* of which over HTTP/2 */
	struct h2_stats h2;
	struct filecache_stats fc;
	uint64_t body_bytes;
	uint64_t open;                      /* connections past the handshake now */
};
int status_slot(int status);
int slot_status(int slot);

/* ---- worker.c ------------------------------------------------------------ */

struct server;

struct worker {
	struct server *srv;
	unsigned id;
	pthread_t th;
	struct kite_engine *e;
	int lfd[SERVE_MAX_LISTEN];
	unsigned nl;
	unsigned ctx_gen;          /* context generation in use */
	struct conn *conns;        /* open connections (ticks, shutdown) */
	struct sess_config scfg;
	struct h2_config h2cfg;
	struct filecache *fc;      /* this thread's open-file cache, or NULL */
	bool drain_seen;
	bool metrics;              /* the plain-HTTP metrics listener */
	struct plain_service plain; /* a plain-HTTP side listener's service */
	/* stderr reports, at most one per interval (this thread only) */
	uint64_t accept_errors_seen, accept_report_at;
	uint64_t close_report_at, close_unreported;
	size_t trim_peak;          /* most streams since the last malloc_trim */

	struct serve_stats cur;    /* this thread only */
	pthread_mutex_t mu;        /* guards pub */
	struct serve_stats pub;

	/* start-up handshake with main */
	int start_err;
	char start_msg[256];
	char engine_desc[300];
};

struct server {
	struct serve_config cfg;
	int root_fd;
	struct vhost vhost[SERVE_MAX_VHOSTS]; /* --vhost roots, opened before --user */
	struct responder rp;
	struct access_log log;
	struct iplimit ipl;
	atomic_uint conns;          /* connections past the handshake, all workers */

	pthread_mutex_t mu;         /* guards ctx, ctx_gen, acks, started */
	pthread_cond_t cond;
	struct kite_ctx *ctx;
	unsigned ctx_gen;
	unsigned acks;              /* workers on ctx_gen */
	unsigned started;           /* workers done with start-up */
	unsigned exited;            /* workers whose loop has ended */

	atomic_bool draining;       /* SIGTERM/SIGINT: finish, accept no more */
	atomic_bool force;          /* drain deadline: abort the rest */
	struct worker *workers;
	unsigned nworkers;
	struct worker metrics_worker;
	bool metrics_running;
	struct worker redirect_worker;  /* --redirect-listen */
	bool redirect_running;
	bool socket_activated;      /* listeners from systemd */
	char hsts[80];              /* the Strict-Transport-Security line */
	uint64_t started_at;        /* time(NULL) */
	char fingerprint[96];
};

int worker_start(struct worker *w, struct server *srv, unsigned id);
/* Wake the worker's loop (context swap, shutdown). Any thread. */
void worker_wake(struct worker *w);
int worker_join(struct worker *w);

/* The metrics listener's thread (a worker with a plaintext engine). */
int metrics_start(struct worker *w, struct server *srv);
/* Prometheus text for the whole server: malloc'd, *len bytes. */
char *metrics_render(struct server *srv, size_t *len);
void stats_publish(struct worker *w);

uint64_t mono_ms(void);

#endif
