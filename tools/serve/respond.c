/* SPDX-License-Identifier: MIT */
#include "respond.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "filecache.h"

const char *http_status_text(int status)
{
	switch (status) {
	case 200: return "OK";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 416: return "Range Not Satisfiable";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

/* Where fd really is, from the kernel's view (/proc/self/fd). */
static int fd_path(int fd, char *buf, size_t cap)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, buf, cap - 1);
	if (n < 0 || (size_t)n >= cap - 1)
		return -EIO;
	buf[n] = 0;
	return 0;
}

/*
 * openat2 with RESOLVE_BENEATH: the kernel refuses any resolution that
 * leaves root_fd, through "..", absolute symlinks or magic links. Where
 * openat2 does not exist (Linux < 5.6, seccomp filters, valgrind) the file
 * is opened normally and then checked: the path the kernel reports for the
 * opened fd must lie under the root's. Either way a symlink leaving the
 * root gives -EXDEV.
 */
static int open_beneath(int root, const char *path, int flags)
{
	static _Atomic int no_openat2;
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	char rp[4096], fp[4096];
	size_t rl;
	long r;

	if (!*path)
		path = ".";
	if (!no_openat2) {
		int tries = 0;

		/* EAGAIN: a rename elsewhere in the tree (a deploy swapping
		 * files) raced the confined lookup; looking up again is safe. */
		do
			r = syscall(SYS_openat2, root, path, &how, sizeof(how));
		while (r < 0 && (errno == EINTR || (errno == EAGAIN && ++tries < 8)));
		if (r >= 0 || errno != ENOSYS)
			return r < 0 ? -errno : (int)r;
		no_openat2 = 1;
	}
	do
		r = openat(root, path, flags | O_CLOEXEC);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		/* Report "outside the root" rather than whether something
		 * exists out there: check the deepest ancestor that opens. */
		int err = -errno;
		char anc[4096];
		char *slash;

		snprintf(anc, sizeof(anc), "%s", path);
		while ((slash = strrchr(anc, '/'))) {
			*slash = 0;
			r = openat(root, anc, O_PATH | O_CLOEXEC);
			if (r >= 0)
				break;
		}
		if (r < 0)
			return err;
		if (fd_path(root, rp, sizeof(rp)) || fd_path((int)r, fp, sizeof(fp)))
			err = -EIO;
		else if (strncmp(fp, rp, strlen(rp)) ||
			 (fp[strlen(rp)] != '/' && fp[strlen(rp)] != 0 && strcmp(rp, "/")))
			err = -EXDEV;
		close((int)r);
		return err;
	}
	if (fd_path(root, rp, sizeof(rp)) || fd_path((int)r, fp, sizeof(fp))) {
		close((int)r);
		return -EIO;
	}
	rl = strlen(rp);
	if (strncmp(fp, rp, rl) || (fp[rl] != '/' && fp[rl] != 0 && strcmp(rp, "/"))) {
		close((int)r);
		return -EXDEV;
	}
	return (int)r;
}

static void add(struct response *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add(struct response *res, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (res->head_full)
		return;
	va_start(ap, fmt);
	n = vsnprintf(res->head + res->head_len, sizeof(res->head) - res->head_len, fmt, ap);
	va_end(ap);
	/* vsnprintf returns the length it wanted: a head that did not fit is
	 * never sent cut short (respond() replaces it). */
	if (n < 0 || (size_t)n >= sizeof(res->head) - res->head_len) {
		res->head[res->head_len] = '\0';
		res->head_full = true;
		return;
	}
	res->head_len += (size_t)n;
}

static void start(const struct responder *rp, struct response *res, int status, time_t now)
{
	char date[30];

	res->status = status;
	res->head_len = 0;
	res->head_full = false;
	http_date(now, date);
	add(res, "HTTP/1.1 %d %s\r\nServer: %s\r\nDate: %s\r\n", status, http_status_text(status),
	    rp->server_name ? rp->server_name : "kite", date);
	/* On every answer over TLS, errors included (RFC 6797 8.1). */
	if (rp->hsts)
		add(res, "%s", rp->hsts);
}

static void finish(struct response *res)
{
	add(res, "Connection: %s\r\n\r\n", res->keep_alive ? "keep-alive" : "close");
}

/* Constant bodies: respond() runs on every server thread at once, so
 * nothing here may be formatted into shared storage. */
static const char *error_body(int status)
{
	switch (status) {
#define B(code, text) case code: return #code " " text "\n"
	B(400, "Bad Request");
	B(403, "Forbidden");
	B(404, "Not Found");
	B(405, "Method Not Allowed");
	B(408, "Request Timeout");
	B(413, "Content Too Large");
	B(414, "URI Too Long");
	B(416, "Range Not Satisfiable");
	B(431, "Request Header Fields Too Large");
	B(500, "Internal Server Error");
	B(501, "Not Implemented");
	B(503, "Service Unavailable");
	B(505, "HTTP Version Not Supported");
#undef B
	default: return "error\n";
	}
}

static void error_response(const struct responder *rp, struct response *res, int status,
			   bool head_only, time_t now, const char *extra)
{
	const char *body = error_body(status);
	int n = (int)strlen(body);

	start(rp, res, status, now);
	if (status == 405)
		add(res, "Allow: GET, HEAD\r\n");
	/* After a malformed request the framing is unknown: close. */
	if (status == 400 || status == 413 || status == 414 || status == 431 || status == 505 ||
	    status == 500 || status == 503)
		res->keep_alive = false;
	res->body = body;
	res->body_len = (size_t)n;
	add(res, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s", n,
	    extra ? extra : "");
	if (head_only)
		res->body = NULL, res->body_len = 0;
	finish(res);
}

void response_clear(struct response *res)
{
	/* A cache entry's descriptor is closed by its last reference. */
	if (res->fd >= 0 && !res->ent)
		close(res->fd);
	res->fd = -1;
	if (res->ent) {
		/* The body or fd was the cache entry's. */
		fc_entry_put(res->ent);
		res->ent = NULL;
		res->body = NULL;
		res->body_len = 0;
	}
}

int responder_root(const struct responder *rp, const char *host, size_t n)
{
	if (!rp->nvhost || !n)
		return rp->root_fd;
	if (host[0] == '[') {
		/* An IPv6 literal: the name is everything up to ']'. */
		const char *rb = memchr(host, ']', n);

		if (rb)
			n = (size_t)(rb - host) + 1;
	} else {
		const char *colon = memchr(host, ':', n);

		if (colon)
			n = (size_t)(colon - host);
	}
	if (n && host[n - 1] == '.')
		n--; /* "example.com." names the same host */
	for (unsigned i = 0; i < rp->nvhost; i++)
		if (strlen(rp->vhost[i].name) == n && !strncasecmp(rp->vhost[i].name, host, n))
			return rp->vhost[i].root_fd;
	return rp->root_fd;
}

/* The name a request is for: in absolute-form the target's authority,
 * which a server must use in place of Host (RFC 9112 3.2.2); else Host
 * (HTTP/2: :authority). */
static struct http_str request_host(const struct http_request *req)
{
	const char *t = req->target.p;
	size_t n = req->target.n, k;

	for (const char *const *sc = (const char *const[]){"http://", "https://", NULL}; *sc; sc++) {
		k = strlen(*sc);
		if (n > k && !strncasecmp(t, *sc, k)) {
			size_t e = k;

			while (e < n && t[e] != '/' && t[e] != '?' && t[e] != '#')
				e++;
			for (size_t a = e; a > k; a--)
				if (t[a - 1] == '@') { /* userinfo@host */
					k = a;
					break;
				}
			return (struct http_str){t + k, e - k};
		}
	}
	return req->host;
}

/*
 * --precompressed: swap fd/st for the FILE.br or FILE.gz beside path that
 * the client accepts and that is at least as new as FILE (an older one
 * was left behind by an edit and would serve stale bytes). Returns the
 * coding's name, or NULL to serve FILE itself. Never compresses anything.
 */
static const char *pick_encoded(int root, const char *path, const unsigned *order, int n,
				int *fd, struct stat *st)
{
	for (int i = 0; i < n; i++) {
		const char *ext = order[i] == HTTP_CE_BR ? ".br" : ".gz";
		char name[FC_PATH_MAX + 4];
		struct stat est;
		int efd;

		snprintf(name, sizeof(name), "%s%s", path, ext);
		efd = open_beneath(root, name, O_RDONLY | O_NOCTTY | O_NONBLOCK);
		if (efd < 0)
			continue;
		if (fstat(efd, &est) || !S_ISREG(est.st_mode) ||
		    est.st_mtim.tv_sec < st->st_mtim.tv_sec ||
		    (est.st_mtim.tv_sec == st->st_mtim.tv_sec && est.st_mtim.tv_nsec < st->st_mtim.tv_nsec)) {
			close(efd);
			continue;
		}
		close(*fd);
		*fd = efd;
		*st = est;
		return order[i] == HTTP_CE_BR ? "br" : "gzip";
	}
	return NULL;
}

/* Why a file could not be opened, as the status its client gets. */
static const struct {
	int err, status;
} open_errors[] = {
	{ENOENT, 404}, {ENOTDIR, 404},
	{EACCES, 403}, {EPERM, 403}, {EXDEV, 403}, {ELOOP, 403}, {ENAMETOOLONG, 403},
	/* Out of descriptors or memory: the server is overloaded for now,
	 * the file is fine (503, try again shortly). */
	{EMFILE, 503}, {ENFILE, 503}, {ENOMEM, 503},
};

static int open_error_status(int err)
{
	for (size_t i = 0; i < sizeof(open_errors) / sizeof(open_errors[0]); i++)
		if (open_errors[i].err == -err)
			return open_errors[i].status;
	return 500;
}

/* st of an open fd: fd itself, or -errno with fd closed (a negative fd is
 * passed through). */
static int fd_stat(int fd, struct stat *st)
{
	int r;

	if (fd < 0 || !fstat(fd, st))
		return fd;
	r = -errno;
	close(fd);
	return r;
}

/* A directory's index.html in place of dfd (closed here), its name added to
 * path. The file's fd, or -errno: a missing index is -EACCES, since
 * kite-serve lists no directories. */
static int open_index(int dfd, char *path, size_t cap, struct stat *st)
{
	int fd = openat(dfd, "index.html", O_RDONLY | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);

	fd = fd < 0 ? (errno == ENOENT ? -EACCES : -errno) : fd_stat(fd, st);
	close(dfd);
	snprintf(path + strlen(path), cap - strlen(path), "%sindex.html", path[0] ? "/" : "");
	return fd;
}

/* The request target up to its query: what a trailing-slash redirect echoes. */
static size_t target_path_len(const struct http_request *req)
{
	const char *q = memchr(req->target.p, '?', req->target.n);

	return q ? (size_t)(q - req->target.p) : req->target.n;
}

/* A directory asked for without its trailing slash: relative links in the
 * index need it. Whether that is the case, with res holding the redirect. */
static bool redirect_to_slash(const struct responder *rp, const struct http_request *req,
			      time_t now, struct response *res)
{
	size_t tl = target_path_len(req);

	if (tl && req->target.p[tl - 1] == '/')
		return false;
	start(rp, res, 301, now);
	add(res, "Location: %.*s/\r\nContent-Length: 0\r\n", (int)tl, req->target.p);
	finish(res);
	return true;
}

/* Open the regular file res->path names under root (a directory's
 * index.html) into t. false when res holds the answer already: a redirect
 * to the directory's slash form, or an error. */
static bool open_target(const struct responder *rp, const struct http_request *req, bool head,
			time_t now, struct response *res, int root, struct fc_target *t)
{
	int fd, status;

	snprintf(t->path, sizeof(t->path), "%s", res->path);
	t->dir = false;
	fd = fd_stat(open_beneath(root, res->path, O_RDONLY | O_NOCTTY | O_NONBLOCK), &t->st);
	if (fd >= 0 && S_ISDIR(t->st.st_mode)) {
		if (redirect_to_slash(rp, req, now, res)) {
			close(fd);
			return false;
		}
		t->dir = true;
		fd = open_index(fd, t->path, sizeof(t->path), &t->st);
	}
	if (fd < 0) {
		status = open_error_status(fd);
		error_response(rp, res, status, head, now, status == 503 ? "Retry-After: 1\r\n" : NULL);
		return false;
	}
	if (!S_ISREG(t->st.st_mode)) { /* of the file fd holds (index.html for a directory) */
		close(fd);
		error_response(rp, res, 403, head, now, NULL);
		return false;
	}
	t->fd = fd;
	return true;
}

/* Strong validator: changes whenever the bytes can have changed. An
 * encoded sibling is other bytes: its own file's validator, marked with the
 * coding so it never equals the identity one. */
static void make_etag(char *etag, size_t cap, const struct stat *st, const char *coding)
{
	snprintf(etag, cap, "\"%llx-%llx-%llx%s%s\"", (unsigned long long)st->st_ino,
		 (unsigned long long)st->st_size,
		 (unsigned long long)st->st_mtim.tv_sec * 1000000000ull +
			 (unsigned long long)st->st_mtim.tv_nsec,
		 coding ? "-" : "", coding ? coding : "");
}

/* RFC 9110 13.2.2: If-None-Match wins over If-Modified-Since. */
static bool not_modified(const struct http_request *req, const char *etag, const struct stat *st)
{
	if (req->if_none_match.n)
		return http_etag_match(req->if_none_match.p, req->if_none_match.n, etag);
	return req->if_modified_since.n &&
	       http_parse_date(req->if_modified_since.p, req->if_modified_since.n) >= st->st_mtim.tv_sec;
}

/* The part of the file to send: 206 with off and len from Range, 200 for the
 * whole file, -416 for a range outside it. */
static int pick_range(const struct http_request *req, const char *etag, const struct stat *st,
		      uint64_t *off, uint64_t *len)
{
	bool use = true;
	int r;

	*off = 0;
	*len = (uint64_t)st->st_size;
	if (!req->range.n)
		return 200;
	/* If-Range: the range only applies to the representation the client
	 * already has (strong comparison for ETags). */
	if (req->if_range.n)
		use = req->if_range.p[0] == '"'
			? req->if_range.n == strlen(etag) && !memcmp(req->if_range.p, etag, req->if_range.n)
			: http_parse_date(req->if_range.p, req->if_range.n) == st->st_mtim.tv_sec;
	r = use ? http_parse_range(req->range.p, req->range.n, *len, off, len) : 0;
	return r == -416 ? -416 : r == 1 ? 206 : 200;
}

/* Requests that are refused before any file is looked at: false when res
 * holds that answer. */
static bool request_ok(const struct responder *rp, const struct http_request *req,
		       int parse_status, bool head, time_t now, struct response *res)
{
	int r;

	if (parse_status < 0 || !req) {
		error_response(rp, res, parse_status < 0 ? -parse_status : 400, false, now, NULL);
		return false;
	}
	if (req->method == HTTP_OTHER) {
		error_response(rp, res, 405, false, now, NULL);
		return false;
	}
	r = http_normalize_path(req->target.p, req->target.n, res->path, REQUEST_PATH_MAX);
	if (r < 0) {
		error_response(rp, res, -r, head, now, NULL);
		return false;
	}
	return true;
}

/* The precompressed siblings a request accepts, in its order of
 * preference, and a small number naming that choice in the cache's key. */
static unsigned accepted_codings(const struct responder *rp, const struct http_request *req,
				 unsigned order[2], int *n)
{
	*n = 0;
	if (!rp->precompressed)
		return 0;
	*n = http_accept_encoding(req->accept_encoding.p, req->accept_encoding.n,
				  HTTP_CE_BR | HTTP_CE_GZIP, order);
	if (*n <= 0) {
		*n = 0;
		return 1; /* the file itself */
	}
	return 2 + order[0] + (*n > 1 ? 4 * order[1] : 0);
}

/* Resolve the request's path anew into t: the file, the sibling the
 * client accepts, the validator. false when res holds the answer. */
static bool resolve(const struct responder *rp, const struct http_request *req, bool head,
		    time_t now, struct response *res, int root, const unsigned *order, int norder,
		    struct fc_target *t)
{
	if (!open_target(rp, req, head, now, res, root, t))
		return false;
	t->coding = norder ? pick_encoded(root, t->path, order, norder, &t->fd, &t->st) : NULL;
	make_etag(t->etag, sizeof(t->etag), &t->st, t->coding);
	return true;
}

/*
 * The file for res->path: from the worker's cache when it has an entry
 * trusted still (*ep set, t unused), else resolved into t (t->fd the
 * caller's), then kept in the cache when there is one (*ep set, t->fd the
 * cache's). An entry past its validity is kept only while the path still
 * resolves to the same file. false when res holds the answer.
 */
static bool find_target(const struct responder *rp, struct filecache *fc,
			const struct http_request *req, bool head, time_t now,
			struct response *res, struct fc_target *t, struct fc_entry **ep)
{
	struct http_str h = request_host(req);
	int root = responder_root(rp, h.p, h.n), norder;
	unsigned order[2], variant = accepted_codings(rp, req, order, &norder);
	struct fc_entry *e = NULL;
	bool fresh = false;

	*ep = NULL;
	if (fc)
		e = filecache_find(fc, root, variant, res->path, &fresh);
	if (e && fresh) {
		filecache_hit(fc, e);
		goto cached;
	}
	if (!resolve(rp, req, head, now, res, root, order, norder, t)) {
		if (e)
			filecache_drop(fc, e); /* gone, unreadable, or now a directory */
		return false;
	}
	if (e && filecache_same(e, t)) {
		close(t->fd);
		filecache_revalidated(fc, e);
		goto cached;
	}
	if (e)
		filecache_drop(fc, e);
	e = fc ? filecache_insert(fc, root, variant, res->path, t) : NULL;
	if (e)
		goto cached;
	snprintf(res->path, sizeof(res->path), "%s", t->path);
	return true;
cached:
	if (e->t.dir && redirect_to_slash(rp, req, now, res))
		return false;
	snprintf(res->path, sizeof(res->path), "%s", e->t.path);
	*ep = e;
	return true;
}

static void respond_to(const struct responder *rp, struct filecache *fc,
		       const struct http_request *req, int parse_status, time_t now,
		       struct response *res)
{
	bool head = req && req->method == HTTP_HEAD;
	char lm[30], vary[80] = "";
	struct fc_target own;
	const struct fc_target *t;
	struct fc_entry *e;
	uint64_t off, len;
	int fd = -1, status;

	memset(res, 0, sizeof(*res));
	res->fd = -1;
	res->keep_alive = req && parse_status == 0 ? req->keep_alive : false;
	if (!request_ok(rp, req, parse_status, head, now, res) ||
	    !find_target(rp, fc, req, head, now, res, &own, &e))
		return;
	/* A cached entry's descriptor stays the cache's; one of our own is
	 * closed below or handed to the response. */
	t = e ? &e->t : &own;
	if (!e)
		fd = own.fd;
	/* Every file answer may differ by Accept-Encoding once siblings can
	 * appear (a deploy adds them at any time): caches must key on it, for
	 * the identity answer too. */
	if (rp->precompressed)
		snprintf(vary, sizeof(vary), "Vary: Accept-Encoding\r\n");
	http_date(t->st.st_mtim.tv_sec, lm);
	if (not_modified(req, t->etag, &t->st)) {
		start(rp, res, 304, now);
		add(res, "ETag: %s\r\nLast-Modified: %s\r\n%s", t->etag, lm, vary);
		finish(res);
		goto out;
	}
	status = pick_range(req, t->etag, &t->st, &off, &len);
	if (status == -416) {
		char cr[64];

		snprintf(cr, sizeof(cr), "Content-Range: bytes */%llu\r\n",
			 (unsigned long long)t->st.st_size);
		error_response(rp, res, 416, head, now, cr);
		goto out;
	}
	start(rp, res, status, now);
	add(res, "Content-Type: %s\r\nContent-Length: %llu\r\nLast-Modified: %s\r\nETag: %s\r\n"
		 "Accept-Ranges: bytes\r\n%s", http_mime_type(res->path), (unsigned long long)len, lm,
	    t->etag, vary);
	if (t->coding)
		add(res, "Content-Encoding: %s\r\n", t->coding);
	if (status == 206)
		add(res, "Content-Range: bytes %llu-%llu/%llu\r\n", (unsigned long long)off,
		    (unsigned long long)(off + len - 1), (unsigned long long)t->st.st_size);
	finish(res);
	if (head || !len)
		goto out;
	if (e && e->body) {
		/* The bytes read when the file was last seen unchanged: no file
		 * I/O at all for this answer. */
		fc_entry_get(e);
		res->ent = e;
		res->body = e->body + off;
		res->body_len = (size_t)len;
		return;
	}
	if (e) {
		/* The cache's own descriptor, no copy of it: the reference keeps
		 * it open (and the same file) until the range is out, even if
		 * the entry is dropped meanwhile. */
		fc_entry_get(e);
		res->ent = e;
		fd = e->t.fd;
	}
	res->fd = fd;
	res->offset = off;
	res->length = len;
	return;
out:
	if (fd >= 0)
		close(fd);
}

void respond_with(const struct responder *rp, struct filecache *fc,
		  const struct http_request *req, int parse_status, time_t now,
		  struct response *res)
{
	respond_to(rp, fc, req, parse_status, now, res);
	if (!res->head_full)
		return;
	/* Only a redirect carries request bytes (its Location) into the
	 * head: a target too long to echo back is 414. */
	response_clear(res);
	res->keep_alive = false;
	error_response(rp, res, res->status == 301 ? 414 : 500,
		       req && req->method == HTTP_HEAD, now, NULL);
}

void respond(const struct responder *rp, const struct http_request *req, int parse_status,
	     time_t now, struct response *res)
{
	respond_with(rp, NULL, req, parse_status, now, res);
}
