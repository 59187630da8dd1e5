/* SPDX-License-Identifier: MIT */
/*
 * From a parsed request to a response plan: status, header bytes and the
 * file range to send. No socket I/O here, so the server's transport (the
 * io_uring engine or anything else) only moves bytes, and tests can check
 * every status without a network.
 */
#ifndef KITE_SERVE_RESPOND_H
#define KITE_SERVE_RESPOND_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "http.h"

#define RESPONSE_HEAD_MAX 1024
#define REQUEST_PATH_MAX 512 /* a normalised request path, NUL included; longer: 414 */

struct filecache;
struct fc_entry;

struct response {
	int status;
	char head[RESPONSE_HEAD_MAX]; /* status line + headers + blank line */
	size_t head_len;
	bool head_full;    /* a header did not fit: respond() answers 414/500 instead */
	int fd;            /* file to send, or -1; owned by the response, or the
			    * cache entry's descriptor when ent is set */
	uint64_t offset;   /* range within fd */
	uint64_t length;   /* body bytes (0 for HEAD / errors without body) */
	const char *body;  /* small static body for errors, a cached file's bytes, or NULL */
	size_t body_len;
	struct fc_entry *ent; /* the cache entry body or fd belongs to (a reference),
			       * or NULL */
	bool keep_alive;
	char path[528];    /* normalised path (< REQUEST_PATH_MAX), then the file's
			    * ("/index.html" added), for Content-Type and the log */
};

/* Serve files below root_fd (an O_PATH|O_DIRECTORY fd). Never escapes it:
 * opening uses openat2(RESOLVE_BENEATH), so symlinks pointing out are 403. */
struct vhost {
	char name[256];          /* lowercase, no port, no trailing dot */
	int root_fd;             /* O_PATH|O_DIRECTORY, opened at start */
};

struct responder {
	int root_fd;             /* requests for no configured vhost */
	const char *server_name; /* "kite" */
	const char *hsts;        /* NULL or a whole "Strict-Transport-Security: ...\r\n" */
	const struct vhost *vhost; /* by Host / :authority; may be NULL */
	unsigned nvhost;
	bool precompressed;      /* serve FILE.br / FILE.gz beside FILE when accepted */
};

/* The root for a Host value ("Example.COM:8443", "[::1]:443"): the vhost
 * of that name (port and a trailing dot ignored, case-insensitive), else
 * rp->root_fd. */
int responder_root(const struct responder *rp, const char *host, size_t n);

/* Fill *res for req (parsed, status 0) or for a parse error (status < 0,
 * req may be NULL). Always produces a response; res->fd and res->ent must
 * be released with response_clear(). now: the Date header's time. */
void respond(const struct responder *rp, const struct http_request *req, int parse_status,
	     time_t now, struct response *res);
/* The same through fc, the calling thread's open-file cache (filecache.h;
 * NULL: none): a small file's body may then be res->body, the cached
 * bytes, and a larger file's res->fd the cached descriptor, each held by
 * res->ent until response_clear() (the transport must keep the reference
 * until no queued range names res->fd). */
void respond_with(const struct responder *rp, struct filecache *fc,
		  const struct http_request *req, int parse_status, time_t now,
		  struct response *res);
void response_clear(struct response *res);

const char *http_status_text(int status);

#endif
