/* SPDX-License-Identifier: MIT */
/*
 * Plain-HTTP side listeners: gather one request head per connection, parse
 * it, hand it to the service's answer function. Serves no file and keeps no
 * connection alive: scrapes and redirects are one exchange each.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "server.h"

struct pconn {
	char in[8192];
	size_t n;
	bool done;
};

static void p_data(struct kite_stream *s, const void *buf, size_t len)
{
	struct worker *w = kite_engine_user(kite_stream_engine(s));
	struct pconn *m = kite_stream_user(s);
	struct http_request req;
	int r;

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
	r = http_parse_request(m->in, m->n, &req);
	if (r == 0 && m->n < sizeof(m->in))
		return; /* more to come */
	m->done = true;
	w->plain.answer(s, &req, r, w->srv);
}

static void p_close(struct kite_stream *s, int err)
{
	(void)err;
	free(kite_stream_user(s));
	kite_stream_set_user(s, NULL);
}

static int p_setup(struct worker *w, struct kite_engine **out)
{
	const struct plain_service *svc = &w->plain;
	struct kite_engine_config cfg;
	int r;

	kite_engine_config_init(&cfg);
	cfg.ctx = NULL; /* plain HTTP */
	cfg.on_data = p_data;
	cfg.on_close = p_close;
	cfg.user = w;
	cfg.idle_timeout_ms = svc->idle_timeout_ms;
	cfg.send_timeout_ms = svc->send_timeout_ms;
	cfg.max_streams = svc->max_streams;
	cfg.pipes = 0;
	cfg.buffers = svc->buffers;
	r = kite_engine_create(out, &cfg);
	if (r) {
		snprintf(w->start_msg, sizeof(w->start_msg), "%s engine: %s", svc->name,
			 kite_engine_create_error());
		return r;
	}
	r = kite_engine_add_listener(*out, w->lfd[0]);
	if (r) {
		snprintf(w->start_msg, sizeof(w->start_msg), "%s listener: %s", svc->name,
			 kite_strerror(r));
		kite_engine_destroy(*out);
	}
	return r;
}

static bool p_running(const struct worker *w)
{
	const struct server *srv = w->srv;

	if (atomic_load(&srv->force))
		return false;
	/* The redirect stops with the TLS listeners; /metrics stays until main
	 * says stop, so the drain itself can be scraped. */
	return !w->plain.until_drain || !atomic_load(&srv->draining);
}

static void *plain_main(void *arg)
{
	struct worker *w = arg;
	struct server *srv = w->srv;
	struct kite_engine *e = NULL;
	int r = p_setup(w, &e);

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
	while (p_running(w))
		if (kite_engine_run(e, 1000))
			break;
	pthread_mutex_lock(&w->mu);
	w->e = NULL;
	pthread_mutex_unlock(&w->mu);
	kite_engine_destroy(e);
	return NULL;
}

int plain_start(struct worker *w, struct server *srv, const struct plain_service *svc)
{
	w->srv = srv;
	w->plain = *svc;
	pthread_mutex_init(&w->mu, NULL);
	return -pthread_create(&w->th, NULL, plain_main, w);
}
