/* SPDX-License-Identifier: MIT */
/*
 * What kite-serve needs to run as a service: TLS material that stays
 * readable after dropping root (keys.c), the drop itself (privdrop.c),
 * systemd's socket activation and readiness protocol (systemd.c) and the
 * plain-HTTP redirect listener (redirect.c).
 */
#ifndef KITE_SERVE_DEPLOY_H
#define KITE_SERVE_DEPLOY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "server.h"

/* ---- keys.c: certificates, keys, OCSP responses, ticket key ------------ */

/*
 * A file read at start and again on SIGHUP. It is opened once at start
 * (as root, before --user takes effect) and the descriptor kept: a reload
 * first opens the path afresh (so a file replaced by rename is seen) and,
 * when that is not allowed to the user kite-serve now runs as, reads the
 * descriptor kept from start-up (a file rewritten in place is seen).
 */
struct keyfile {
	const char *path;
	int fd;          /* -1: not opened */
	bool secret;     /* refuse it when others may read or write it */
};

struct tls_files {
	struct keyfile cert[SERVE_MAX_SITES], key[SERVE_MAX_SITES], ocsp[SERVE_MAX_SITES];
	struct keyfile ticket;
};

/* Open every file the flags name; 0 or -errno with err filled. */
int tls_files_open(struct tls_files *tf, const struct serve_config *c, char *err, size_t cap);
void tls_files_close(struct tls_files *tf);

/* A new kite context from the files (or a self-signed certificate when
 * none is given). fp: SHA-256 of the first certificate. warn (may be
 * empty on return): something left out that does not stop serving, such
 * as an expired OCSP response. 0 or -errno with err filled. */
int build_ctx(const struct serve_config *c, struct tls_files *tf, struct kite_ctx **out,
	      char fp[96], char *warn, size_t wcap, char *err, size_t errlen);

/* ---- privdrop.c: --user ------------------------------------------------ */

struct serve_user {
	uid_t uid;
	gid_t gid;
	char name[64];
};

/* Look NAME[:GROUP] up (before chroot-like confinement or dropping). */
int user_resolve(const char *spec, struct serve_user *u, char *err, size_t cap);
/* Become u for good: supplementary groups cleared, gid then uid, and a
 * check that root cannot be regained. 0 or -errno with err filled. */
int user_drop(const struct serve_user *u, char *err, size_t cap);

/* ---- systemd.c: socket activation and sd_notify ------------------------ */

/* Listening sockets handed in by systemd (LISTEN_FDS for this LISTEN_PID),
 * at most max, in fds; the count (0: none, or built without libsystemd). */
int systemd_listeners(int *fds, unsigned max);
/* READY=1, RELOADING=1, STOPPING=1, STATUS=...: a no-op outside systemd. */
void systemd_notify(const char *state);

/* ---- redirect.c: --redirect-listen --------------------------------------- */

/* Answer every request on w->lfd[0] with 301 to https://HOST/PATH (the
 * port of the first --listen if it is not 443). */
int redirect_start(struct worker *w, struct server *srv);

struct http_request;
/* The Location for req: "https://HOST[:PORT]/PATH" with the Host header's
 * name (its port dropped) and the request's path and query. Its length,
 * -400 (no usable Host or target) or -414 (longer than cap - 1). */
int redirect_location(const struct http_request *req, unsigned https_port, char *out,
		      size_t cap);

#endif
