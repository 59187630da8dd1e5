/* SPDX-License-Identifier: MIT */
/*
 * --redirect-listen: a plain-HTTP listener whose only answer is 301 to the
 * same host and path over https. It runs a plaintext kite engine in its own
 * thread, like the metrics listener, and serves no file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deploy.h"
#include "http.h"

/* A host name or address as a Location may carry it: letters, digits,
 * '.', '-', and an IPv6 literal in brackets. The port is dropped. */
static size_t host_part(const struct http_str *h, char *out, size_t cap)
{
	size_t n = h->n, i;

	if (n && h->p[0] == '[') {
		const char *rb = memchr(h->p, ']', n);

		if (!rb)
			return 0;
		n = (size_t)(rb - h->p) + 1;
	} else {
		const char *colon = memchr(h->p, ':', n);

		if (colon)
			n = (size_t)(colon - h->p);
	}
	if (!n || n >= cap)
		return 0;
	for (i = 0; i < n; i++) {
		char ch = h->p[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '.' || ch == '-' || ch == '[' || ch == ']' || ch == ':'))
			return 0;
	}
	memcpy(out, h->p, n);
	out[n] = 0;
	return n;
}

int redirect_location(const struct http_request *req, unsigned https_port, char *out,
		      size_t cap)
{
	char host[256], port[8] = "";
	const char *path = req->target.p;
	size_t plen = req->target.n;
	int n;

	if (!req->has_host || !host_part(&req->host, host, sizeof(host)))
		return -400;
	/* Absolute-form "http://host/path": keep only the path. */
	if (plen && path[0] != '/') {
		const char *scheme_end = plen > 7 ? memchr(path, '/', plen) : NULL;
		const char *slash = scheme_end && scheme_end + 2 < path + plen
			? memchr(scheme_end + 2, '/', plen - (size_t)(scheme_end + 2 - path)) : NULL;

		if (!slash)
			return -400;
		plen -= (size_t)(slash - path);
		path = slash;
	}
	if (!plen)
		return -400;
	if (https_port != 443)
		snprintf(port, sizeof(port), ":%u", https_port);
	n = snprintf(out, cap, "https://%s%s%.*s", host, port, (int)plen, path);
	return n < 0 || (size_t)n >= cap ? -414 : n;
}

static void r_answer(struct kite_stream *s, const struct http_request *req, int r,
		     struct server *srv)
{
	char head[HTTP_MAX_REQUEST_LINE + 512], loc[HTTP_MAX_REQUEST_LINE + 300], date[30];
	int st = r < 0 ? -r : r == 0 ? 431 : redirect_location(req, srv->cfg.listen[0].port, loc,
							       sizeof(loc));

	http_date(time(NULL), date);
	/* One answer per connection: a browser follows it to https at once. */
	if (r > 0 && st > 0)
		snprintf(head, sizeof(head), "HTTP/1.1 301 Moved Permanently\r\nServer: kite-serve\r\n"
			 "Date: %s\r\nLocation: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
			 date, loc);
	else {
		st = st < 0 ? -st : st; /* redirect_location's -400 / -414 */
		snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nServer: kite-serve\r\nDate: %s\r\n"
			 "Content-Length: 0\r\nConnection: close\r\n\r\n", st,
			 http_status_text(st), date);
	}
	if (kite_stream_send(s, head, strlen(head)) < 0)
		kite_stream_abort(s, -ENOBUFS);
	else
		(void)kite_stream_close(s);
}

int redirect_start(struct worker *w, struct server *srv)
{
	const struct plain_service svc = {
		.name = "redirect",
		.answer = r_answer,
		.until_drain = true, /* plain HTTP stops taking connections with TLS */
		.idle_timeout_ms = srv->cfg.header_timeout_ms,
		.send_timeout_ms = srv->cfg.send_timeout_ms,
		.max_streams = srv->cfg.max_conns,
		.buffers = 16,
	};

	return plain_start(w, srv, &svc);
}
