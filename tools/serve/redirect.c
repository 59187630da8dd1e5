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

struct rconn {
	char in[8192];
	size_t n;
	bool done;
};

static void r_answer(struct kite_stream *s, struct rconn *m, struct server *srv)
{
	struct http_request req;
	char head[HTTP_MAX_REQUEST_LINE + 512], loc[HTTP_MAX_REQUEST_LINE + 300], date[30];
	int r = http_parse_request(m->in, m->n, &req), st;

	if (r == 0 && m->n < sizeof(m->in))
		return; /* more to come */
	m->done = true;
	st = r < 0 ? -r : r == 0 ? 431 : redirect_location(&req, srv->cfg.listen[0].port, loc,
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

static void r_data(struct kite_stream *s, const void *buf, size_t len)
{
	struct worker *w = kite_engine_user(kite_stream_engine(s));
	struct rconn *m = kite_stream_user(s);

	if (!m) {
		m = calloc(1, sizeof(*m));
		if (!m) {
			kite_stream_abort(s, -ENOMEM);
			return;
		}
		kite_stream_set_user(s, m);
	}
	if (m->done)
		return;
	if (!len) {
		(void)kite_stream_close(s);
		m->done = true;
		return;
	}
	if (len > sizeof(m->in) - m->n)
		len = sizeof(m->in) - m->n;
	memcpy(m->in + m->n, buf, len);
	m->n += len;
	r_answer(s, m, w->srv);
}

static void r_close(struct kite_stream *s, int err)
{
	(void)err;
	free(kite_stream_user(s));
	kite_stream_set_user(s, NULL);
}

static int r_setup(struct worker *w, struct kite_engine **out)
{
	struct kite_engine_config cfg;
	int r;

	kite_engine_config_init(&cfg);
	cfg.ctx = NULL; /* plain HTTP */
	cfg.on_data = r_data;
	cfg.on_close = r_close;
	cfg.user = w;
	cfg.idle_timeout_ms = w->srv->cfg.header_timeout_ms;
	cfg.send_timeout_ms = w->srv->cfg.send_timeout_ms;
	cfg.max_streams = w->srv->cfg.max_conns;
	cfg.pipes = 0;
	cfg.buffers = 16;
	r = kite_engine_create(out, &cfg);
	if (r) {
		snprintf(w->start_msg, sizeof(w->start_msg), "redirect engine: %s",
			 kite_engine_create_error());
		return r;
	}
	r = kite_engine_add_listener(*out, w->lfd[0]);
	if (r) {
		snprintf(w->start_msg, sizeof(w->start_msg), "redirect listener: %s",
			 kite_strerror(r));
		kite_engine_destroy(*out);
	}
	return r;
}

static void *redirect_main(void *arg)
{
	struct worker *w = arg;
	struct server *srv = w->srv;
	struct kite_engine *e = NULL;
	int r = r_setup(w, &e);

	if (!r) {
		pthread_mutex_lock(&w->mu);
		w->e = e;
		pthread_mutex_unlock(&w->mu);
	}
	w->start_err = r;
	pthread_mutex_lock(&srv->mu);
	srv->started++;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->mu);
	if (r)
		return NULL;
	/* Plain HTTP stops taking connections with the TLS listeners. */
	while (!atomic_load(&srv->draining) && !atomic_load(&srv->force))
		if (kite_engine_run(e, 1000))
			break;
	pthread_mutex_lock(&w->mu);
	w->e = NULL;
	pthread_mutex_unlock(&w->mu);
	kite_engine_destroy(e);
	return NULL;
}

int redirect_start(struct worker *w, struct server *srv)
{
	w->srv = srv;
	pthread_mutex_init(&w->mu, NULL);
	return -pthread_create(&w->th, NULL, redirect_main, w);
}
