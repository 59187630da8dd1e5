/* SPDX-License-Identifier: MIT */
/*
 * A plain-HTTP side listener (the /metrics endpoint, the https redirect):
 * its own thread and plaintext kite engine, one request and one answer per
 * connection. The listener owns reading and parsing; a service only says
 * what to answer.
 */
#ifndef KITE_SERVE_PLAIN_H
#define KITE_SERVE_PLAIN_H

#include <stdbool.h>

struct kite_stream;
struct http_request;
struct server;
struct worker;

/* Answer one request and end the stream (kite_stream_close, or abort when
 * the answer cannot be queued). parsed is http_parse_request()'s result:
 * > 0 a request in req, < 0 a status to refuse with (-400...), 0 a head
 * that did not fit the connection's 8 KiB. */
typedef void (*plain_answer_fn)(struct kite_stream *s, const struct http_request *req, int parsed,
				struct server *srv);

struct plain_service {
	const char *name;          /* "metrics", "redirect": in start-up errors */
	plain_answer_fn answer;
	bool until_drain;          /* stop taking connections when the TLS listeners do */
	unsigned idle_timeout_ms, send_timeout_ms, max_streams, buffers;
};

/* Start the listener thread on w->lfd[0]; svc is copied. 0 or -errno
 * (the thread reports engine set-up errors through w->start_err/msg). */
int plain_start(struct worker *w, struct server *srv, const struct plain_service *svc);

#endif
