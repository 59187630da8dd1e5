/* SPDX-License-Identifier: MIT */
/*
 * Access log: the combined log format followed by the connection's TLS
 * version, cipher, kernel offload state and whether it was resumed.
 * Each line is one write(2) to an O_APPEND file, so worker threads never
 * interleave inside a line and no lock is needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

#define LOG_FLAGS (O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY)

int alog_open(struct access_log *l, const char *path)
{
	l->fd = -1;
	l->path = path;
	if (!path)
		return 0;
	if (!strcmp(path, "-")) {
		l->fd = STDOUT_FILENO;
		return 0;
	}
	l->fd = open(path, LOG_FLAGS, 0640);
	return l->fd < 0 ? -errno : 0;
}

int alog_reopen(struct access_log *l)
{
	int fd;

	if (l->fd < 0 || !strcmp(l->path, "-"))
		return 0;
	fd = open(l->path, LOG_FLAGS, 0640);
	if (fd < 0)
		return -errno;
	/* dup2 swaps the file under the same descriptor number atomically:
	 * a worker's write goes wholly to the old file or to the new one. */
	if (dup2(fd, l->fd) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	close(fd);
	return 0;
}

void alog_close(struct access_log *l)
{
	if (l->fd > STDERR_FILENO)
		close(l->fd);
	l->fd = -1;
}

/* Client-controlled bytes: '"', '\' and anything not printable ASCII
 * become \xHH, so a request can neither end the field nor forge a line. */
static size_t put_escaped(char *out, size_t cap, size_t o, const char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";

	if (!n && o + 1 < cap)
		out[o++] = '-';
	for (size_t i = 0; i < n && o + 5 < cap; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else {
			out[o++] = (char)c;
		}
	}
	return o;
}

static size_t put(char *out, size_t cap, size_t o, const char *s)
{
	size_t n = strlen(s);

	if (o + n >= cap)
		n = o + 1 < cap ? cap - o - 1 : 0;
	memcpy(out + o, s, n);
	return o + n;
}

size_t alog_format(char *out, size_t cap, const struct alog_entry *e)
{
	static const char mon[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	const struct sess_answer *a = e->a;
	const struct http_request *rq = a->req;
	char tmp[96];
	struct tm tm;
	size_t o = 0, lim = cap - 2; /* room for "\n" and the NUL */

	if (cap < 512)
		return 0;
	gmtime_r(&a->when, &tm);
	/* %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-Agent}i" */
	snprintf(tmp, sizeof(tmp), " - - [%02d/%s/%04d:%02d:%02d:%02d +0000] \"", tm.tm_mday,
		 mon[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	o = put(out, lim, o, e->ip);
	o = put(out, lim, o, tmp);
	/* Each client field may use what the fields after it leave. */
	o = put_escaped(out, lim - 256, o, a->line, a->line_len);
	if (a->body_bytes)
		snprintf(tmp, sizeof(tmp), "\" %d %llu \"", a->status,
			 (unsigned long long)a->body_bytes);
	else
		snprintf(tmp, sizeof(tmp), "\" %d - \"", a->status); /* CLF: "-" for none */
	o = put(out, lim, o, tmp);
	o = put_escaped(out, lim - 192, o, rq ? rq->referer.p : NULL, rq ? rq->referer.n : 0);
	o = put(out, lim, o, "\" \"");
	o = put_escaped(out, lim - 160, o, rq ? rq->user_agent.p : NULL, rq ? rq->user_agent.n : 0);
	o = put(out, lim, o, "\" ");
	if (rq && rq->host.n) {
		/* Which site was asked for (Host / :authority), as sent. */
		o = put(out, lim, o, "host=");
		o = put_escaped(out, lim - 128, o, rq->host.p, rq->host.n);
		o = put(out, lim, o, " ");
	}
	if (a->stream_id) {
		/* HTTP/2: which stream of the connection (the TLS fields stay
		 * last, where log readers find them). */
		snprintf(tmp, sizeof(tmp), "stream=%u ", a->stream_id);
		o = put(out, lim, o, tmp);
	}
	o = put(out, lim, o, e->tls ? e->tls : "-");
	out[o++] = '\n';
	out[o] = 0;
	return o;
}

void alog_write(struct access_log *l, const char *line, size_t n)
{
	ssize_t w;

	if (l->fd < 0)
		return;
	while (n) {
		w = write(l->fd, line, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			/* A full disk must not stop the server, nor flood
			 * stderr: say it when it starts and when it ends. */
			int err = w < 0 ? errno : ENOSPC;

			atomic_fetch_add(&l->lost, 1);
			if (!atomic_exchange(&l->failing, true))
				fprintf(stderr, "kite-serve: access log %s: write failed: %s; lines are "
					"dropped until a write succeeds (not reported again)\n",
					!strcmp(l->path, "-") ? "stdout" : l->path, strerror(err));
			return;
		}
		line += w;
		n -= (size_t)w;
	}
	if (atomic_load(&l->failing) && atomic_exchange(&l->failing, false))
		fprintf(stderr, "kite-serve: access log %s: writing again (%lu line(s) lost)\n",
			!strcmp(l->path, "-") ? "stdout" : l->path, atomic_exchange(&l->lost, 0));
}
