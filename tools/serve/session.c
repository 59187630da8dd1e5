/* SPDX-License-Identifier: MIT */
/* One HTTP/1.1 connection: requests in, responses queued in order. */
#include "session.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filecache.h"

#define LOG_LINE_MAX 2048 /* request line bytes kept for the log */
/* Head and body up to one TLS record's plaintext go out as one item: one
 * record, one send, instead of a record for each. */
#define ONE_RECORD 16384

void sess_init(struct session *s, const struct sess_config *cfg, const struct sess_transport *tp,
	       void *t)
{
	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	s->tp = tp;
	s->t = t;
}

/* The transport has no range queued any more: the cached descriptors
 * those ranges named may close (with their entries' last reference). */
static void release_held(struct session *s)
{
	while (s->nheld)
		fc_entry_put(s->held[--s->nheld]);
}

/* Keep ent's reference until release_held(): 0 or -ENOMEM. */
static int hold(struct session *s, struct fc_entry *ent)
{
	if (s->nheld == s->held_cap) {
		unsigned cap = s->held_cap ? 2 * s->held_cap : 4;
		struct fc_entry **n = realloc(s->held, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		s->held = n;
		s->held_cap = cap;
	}
	s->held[s->nheld++] = ent;
	return 0;
}

void sess_fini(struct session *s)
{
	release_held(s);
	free(s->held);
	s->held = NULL;
	s->held_cap = 0;
	free(s->in);
	s->in = NULL;
	s->in_len = s->in_cap = 0;
}

static void end(struct session *s, int err)
{
	if (s->closing)
		return;
	s->closing = true;
	/* Nothing received after this point is ever looked at. */
	s->in_len = 0;
	s->head_start = 0;
	if (err)
		s->tp->abort(s->t, err);
	else
		s->tp->close(s->t);
}

/* The request line as received (after the empty lines RFC 9112 2.2 lets
 * a client send first), for the log. */
static void request_line(const char *p, size_t n, struct sess_answer *a)
{
	const char *eol;

	a->line = "";
	a->line_len = 0;
	if (!n)
		return; /* nothing received (a 503 at connect) */
	while (n && (*p == '\r' || *p == '\n'))
		p++, n--;
	eol = memchr(p, '\n', n < LOG_LINE_MAX ? n : LOG_LINE_MAX);
	a->line = p;
	a->line_len = eol ? (size_t)(eol - p) : (n < LOG_LINE_MAX ? n : LOG_LINE_MAX);
	if (a->line_len && a->line[a->line_len - 1] == '\r')
		a->line_len--;
}

bool sess_pread_all(int fd, char *buf, size_t len, uint64_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t r = pread(fd, buf + got, len - got, (off_t)(off + got));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		got += (size_t)r;
	}
	return true;
}

/* Queue one response; req NULL with status < 0 for an error without a
 * usable request. The request's strings point into s->in, still intact. */
static void answer(struct session *s, const struct http_request *req, int status, size_t used)
{
	struct http_request closing_req;
	struct sess_answer a = {.req = req, .when = time(NULL)};
	struct response res;
	char out[ONE_RECORD];
	bool body_sent = false;
	size_t n;
	int r;

	if (req && s->draining) {
		/* Shutting down: this is the connection's last answer. */
		closing_req = *req;
		closing_req.keep_alive = false;
		req = &closing_req;
	}
	request_line(s->in, used ? used : s->in_len, &a);
	respond_with(s->cfg->rp, s->cfg->fc, req, req ? 0 : status, a.when, &res);
	a.status = res.status;
	a.body_bytes = res.fd >= 0 ? res.length : res.body_len;

	/* Head and small body in one item: one TLS record for errors and
	 * small files. */
	n = res.head_len;
	memcpy(out, res.head, n);
	if (res.body && res.body_len <= sizeof(out) - n) {
		memcpy(out + n, res.body, res.body_len);
		n += res.body_len;
		body_sent = true;
	} else if (res.fd >= 0 && res.length <= s->cfg->inline_max && res.length <= sizeof(out) - n &&
		   sess_pread_all(res.fd, out + n, (size_t)res.length, res.offset)) {
		n += (size_t)res.length;
		response_clear(&res); /* closes the file: nothing more to send */
	}
	r = s->tp->send(s->t, out, n);
	/* A cached body too big to share the head's buffer: right behind it. */
	if (!r && res.body && !body_sent)
		r = s->tp->send(s->t, res.body, res.body_len);
	if (!r && res.fd >= 0 && res.ent) {
		/* The cache's descriptor: no copy of it, its entry held until
		 * the transport has drained (the range is in the kernel). */
		r = hold(s, res.ent);
		if (!r) {
			res.ent = NULL;
			r = s->tp->sendfile_kept(s->t, res.fd, res.offset, res.length);
			res.fd = -1;
		}
	} else if (!r && res.fd >= 0) {
		r = s->tp->sendfile(s->t, res.fd, res.offset, res.length);
		res.fd = -1; /* the transport owns it now */
	}
	response_clear(&res);
	s->queued++;
	s->tp->answered(s->t, &a);
	if (r)
		end(s, r);
	else if (!res.keep_alive)
		end(s, 0);
}

/* Answer every complete request while the pipeline has room. */
static void process(struct session *s, uint64_t now)
{
	while (!s->closing && s->queued < s->cfg->pipeline_max && s->in_len) {
		struct http_request req;
		int r = http_parse_request(s->in, s->in_len, &req);

		if (r == 0) {
			if (!s->head_start)
				s->head_start = now ? now : 1;
			break;
		}
		s->head_start = 0;
		if (r < 0) {
			answer(s, NULL, r, 0); /* always ends the connection */
			break;
		}
		answer(s, &req, 0, (size_t)r);
		if (s->closing)
			break;
		s->in_len -= (size_t)r;
		memmove(s->in, s->in + r, s->in_len);
	}
	if (s->closing)
		return;
	/* Backpressure: with the pipeline full, more requests would only pile
	 * up in s->in (and end the connection at in_max): stop reading until
	 * the answers have drained. */
	if (s->tp->pause && s->paused != (s->queued >= s->cfg->pipeline_max && s->in_len)) {
		s->paused = !s->paused;
		s->tp->pause(s->t, s->paused);
	}
	/* An idle keep-alive connection keeps no buffer (4 KiB each). */
	if (!s->in_len && s->in) {
		free(s->in);
		s->in = NULL;
		s->in_cap = 0;
	}
	/* The client is done and everything it asked for is queued: what is
	 * left is at most a truncated head, which gets no answer. */
	if (s->peer_done && s->queued < s->cfg->pipeline_max)
		end(s, 0);
	else if (s->draining && !s->in_len)
		end(s, 0);
}

static int append(struct session *s, const void *buf, size_t len)
{
	size_t cap = s->in_cap;
	char *p;

	if (s->in_len + len <= cap)
		goto copy;
	if (s->in_len + len > s->cfg->in_max)
		return -ENOBUFS;
	if (!cap)
		cap = 4096;
	while (cap < s->in_len + len)
		cap *= 2;
	if (cap > s->cfg->in_max)
		cap = s->cfg->in_max;
	p = realloc(s->in, cap);
	if (!p)
		return -ENOMEM;
	s->in = p;
	s->in_cap = cap;
copy:
	memcpy(s->in + s->in_len, buf, len);
	s->in_len += len;
	return 0;
}

void sess_data(struct session *s, const void *buf, size_t len, uint64_t now)
{
	int r;

	if (s->closing || s->busy)
		return;
	s->busy = true;
	if (!len) {
		s->peer_done = true;
	} else {
		/* Beyond in_max only a client that pipelines far ahead of
		 * reading its answers gets here: the limits of one request
		 * head are far smaller and answered with 414/431 first. */
		r = append(s, buf, len);
		if (r) {
			end(s, r);
			goto out;
		}
	}
	process(s, now);
out:
	s->busy = false;
}

void sess_drained(struct session *s, uint64_t now)
{
	if (!s->tp->queued || !s->tp->queued(s->t))
		release_held(s);
	if (s->closing || s->busy)
		return;
	s->busy = true;
	s->queued = 0;
	process(s, now);
	s->busy = false;
}

void sess_tick(struct session *s, uint64_t now)
{
	if (s->closing || !s->head_start || !s->cfg->head_timeout_ms ||
	    now - s->head_start < s->cfg->head_timeout_ms)
		return;
	answer(s, NULL, -408, 0); /* ends the connection */
}

void sess_drain_server(struct session *s)
{
	if (s->closing)
		return;
	s->draining = true;
	/* Idle keep-alive connection: nothing is lost by ending it now. */
	if (!s->in_len)
		end(s, 0);
}

void sess_reject(struct session *s, int status)
{
	if (s->closing)
		return;
	answer(s, NULL, -status, 0);
}
