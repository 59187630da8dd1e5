/* SPDX-License-Identifier: MIT */
/*
 * /metrics in the Prometheus text format (version 0.0.4), served on its own
 * plain-HTTP listener by a plaintext kite engine in its own thread. Workers
 * publish snapshots of their counters (stats_publish); this file only sums
 * them, so a scrape never touches a worker's engine.
 */
#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

static const int status_codes[] = {200, 206, 301, 304, 400, 403, 404, 405, 408,
				   413, 414, 416, 431, 500, 501, 503, 505};
#define NCODES (int)(sizeof(status_codes) / sizeof(status_codes[0]))

int status_slot(int status)
{
	for (int i = 0; i < NCODES; i++)
		if (status_codes[i] == status)
			return i;
	return NCODES; /* "other" */
}

int slot_status(int slot)
{
	return slot < NCODES ? status_codes[slot] : 0;
}

static const char *const kind_names[CK_COUNT] = {
	[CK_OK] = "ok",
	[CK_TIMEOUT] = "timeout",
	[CK_RESET] = "reset",
	[CK_TLS] = "tls",
	[CK_HANDSHAKE] = "handshake",
	[CK_FILE] = "file_changed",
	[CK_ABORTED] = "aborted",
	[CK_SHUTDOWN] = "shutdown",
	[CK_KEY_EXPIRED] = "key_expired",
	[CK_OFFLOAD_REQUIRED] = "offload_required",
	[CK_OVERFLOW] = "overflow",
	[CK_OTHER] = "other",
};

const char *close_kind_name(enum close_kind k)
{
	return (unsigned)k < CK_COUNT ? kind_names[k] : "other";
}

enum close_kind close_kind_of(int err, bool opened)
{
	if (!err)
		return CK_OK;
	if (err == -EOPNOTSUPP)
		return CK_OFFLOAD_REQUIRED; /* --ktls require, and the kernel could not */
	if (!opened)
		return err == -ECANCELED ? CK_SHUTDOWN : CK_HANDSHAKE;
	switch (-err) {
	case ETIMEDOUT: return CK_TIMEOUT;
	case ECONNRESET: case EPIPE: return CK_RESET;
	case EPROTO: case EBADMSG: return CK_TLS;
	case ENODATA: return CK_FILE; /* a file shrank under its response */
	case ECONNABORTED: return CK_ABORTED;
	case ECANCELED: return CK_SHUTDOWN;
	case EKEYEXPIRED: return CK_KEY_EXPIRED;
	case ENOBUFS: case EMSGSIZE: case ENOMEM: return CK_OVERFLOW;
	default: return CK_OTHER;
	}
}

/* ---- Rendering ----------------------------------------------------------- */

struct out {
	char *p;
	size_t n, cap;
	bool oom;
};

static void emit(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->p + o->n, o->cap - o->n, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->oom = true;
			return;
		}
		if ((size_t)n < o->cap - o->n)
			break;
		char *np = realloc(o->p, o->cap * 2 + (size_t)n);

		if (!np) {
			o->oom = true;
			return;
		}
		o->p = np;
		o->cap = o->cap * 2 + (size_t)n;
	}
	o->n += (size_t)n;
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
	emit(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values: backslash, double quote and newline are escaped. */
static void label_escape(char *dst, size_t cap, const char *s)
{
	size_t o = 0;

	for (; *s && o + 3 < cap; s++) {
		if (*s == '\\' || *s == '"') {
			dst[o++] = '\\';
			dst[o++] = *s;
		} else if (*s == '\n') {
			dst[o++] = '\\';
			dst[o++] = 'n';
		} else {
			dst[o++] = *s;
		}
	}
	dst[o] = 0;
}

/* Sum of every worker's snapshot. Fallback reasons merge by text. */
static void sum(struct server *srv, struct serve_stats *t)
{
	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < srv->nworkers; i++) {
		struct worker *w = &srv->workers[i];
		struct serve_stats *s = malloc(sizeof(*s));

		if (!s)
			continue;
		pthread_mutex_lock(&w->mu);
		*s = w->pub;
		pthread_mutex_unlock(&w->mu);
		for (int p = 0; p < KITE_PATH_COUNT; p++) {
			t->eng.path[p].requests += s->eng.path[p].requests;
			t->eng.path[p].bytes += s->eng.path[p].bytes;
			t->eng.path[p].sqes += s->eng.path[p].sqes;
			t->eng.path[p].syscalls += s->eng.path[p].syscalls;
		}
#define ADD(f) t->f += s->f
		ADD(eng.enters); ADD(eng.syscalls); ADD(eng.sqes); ADD(eng.handshake_syscalls);
		ADD(eng.accepted); ADD(eng.rejected); ADD(eng.opened); ADD(eng.closed_ok);
		ADD(eng.closed_err); ADD(eng.timeouts); ADD(eng.recv_bytes);
		ADD(eng.pipe_exhausted); ADD(eng.buffer_waits); ADD(eng.rx_paused);
		ADD(eng.streams); ADD(eng.accept_errors); ADD(eng.ktls_pushes);
		ADD(eng.rx_nobufs); ADD(eng.files_registered);
		ADD(handshakes); ADD(resumptions); ADD(rejected_global); ADD(rejected_ip);
		ADD(rejected_shutdown); ADD(body_bytes); ADD(open);
		ADD(h2.conns); ADD(h2.streams); ADD(h2.resets_in); ADD(h2.goaway_out);
		ADD(h2.data_frames); ADD(h2.data_file_frames);
		ADD(fc.hits); ADD(fc.misses); ADD(fc.evictions); ADD(fc.invalidations);
		ADD(fc.entries); ADD(fc.fds); ADD(fc.mem_bytes);
#undef ADD
		if (s->eng.peak_queued > t->eng.peak_queued)
			t->eng.peak_queued = s->eng.peak_queued;
		for (int d = 0; d < KITE_DIR_COUNT; d++) {
			t->ktls[d] += s->ktls[d];
			t->fallback_other[d] += s->fallback_other[d];
		}
		for (int k = 0; k < CK_COUNT; k++)
			t->closed[k] += s->closed[k];
		for (int k = 0; k < STATUS_SLOTS; k++) {
			t->requests[k] += s->requests[k];
			t->requests_h2[k] += s->requests_h2[k];
		}
		for (int l = 0; l < H2L_COUNT; l++)
			t->h2.limit[l] += s->h2.limit[l];
		for (unsigned f = 0; f < s->nfallback; f++) {
			unsigned j;

			for (j = 0; j < t->nfallback; j++)
				if (!strcmp(t->fallback[j].reason, s->fallback[f].reason))
					break;
			if (j == t->nfallback) {
				if (j == FALLBACK_SLOTS) {
					for (int d = 0; d < KITE_DIR_COUNT; d++)
						t->fallback_other[d] += s->fallback[f].n[d];
					continue;
				}
				memcpy(t->fallback[j].reason, s->fallback[f].reason,
				       sizeof(t->fallback[j].reason));
				t->nfallback++;
			}
			for (int d = 0; d < KITE_DIR_COUNT; d++)
				t->fallback[j].n[d] += s->fallback[f].n[d];
		}
		free(s);
	}
}

static void kernel_tls_stat(struct out *o)
{
	FILE *f = fopen("/proc/net/tls_stat", "re");
	char name[64];
	unsigned long long v;

	if (!f)
		return; /* no tls module: the counters do not exist */
	head(o, "kite_kernel_tls_stat", "gauge",
	     "The kernel's /proc/net/tls_stat counters (all processes; Curr* are gauges).");
	while (fscanf(f, "%63s %llu", name, &v) == 2)
		emit(o, "kite_kernel_tls_stat{counter=\"%s\"} %llu\n", name, v);
	fclose(f);
}

/* A counter that is one field of the summed stats, unlabelled. */
struct scalar {
	const char *name, *type, *help;
	size_t off; /* of a uint64_t in struct serve_stats */
};

#define SC(n, t, f, h) {n, t, h, offsetof(struct serve_stats, f)}
static const struct scalar scalars[] = {
	SC("kite_connections_accepted_total", "counter", eng.accepted, "TCP connections accepted."),
	SC("kite_connections_open", "gauge", open, "Connections past the TLS handshake now."),
	SC("kite_accept_errors_total", "counter", eng.accept_errors,
	   "accept() failures (descriptors or memory exhausted), retried after ~100 ms."),
	SC("kite_ktls_pushes_total", "counter", eng.ktls_pushes,
	   "Kernel TLS sends that met a full socket; TCP's queued records were pushed first."),
	SC("kite_engine_rx_nobufs_total", "counter", eng.rx_nobufs,
	   "Receives that found no shared receive buffer free and used the connection's own."),
	SC("kite_engine_files_registered_total", "counter", eng.files_registered,
	   "Cached descriptors the engines registered with their rings (fixed files)."),
	SC("kite_handshakes_total", "counter", handshakes, "TLS handshakes completed."),
	SC("kite_resumptions_total", "counter", resumptions,
	   "Handshakes that resumed a session (TLS 1.3 ticket)."),
	SC("kite_response_body_bytes_total", "counter", body_bytes,
	   "Body bytes of the responses queued."),
	SC("kite_received_bytes_total", "counter", eng.recv_bytes,
	   "Plaintext bytes received from clients."),
	SC("kite_engine_syscalls_total", "counter", eng.syscalls,
	   "Syscalls the engines made (io_uring_enter / epoll_wait included)."),
	SC("kite_engine_sqes_total", "counter", eng.sqes, "io_uring submissions."),
	SC("kite_engine_pipe_exhausted_total", "counter", eng.pipe_exhausted,
	   "File rounds that found no free splice pipe."),
	SC("kite_http2_connections_total", "counter", h2.conns,
	   "Connections that negotiated HTTP/2 (ALPN h2)."),
	SC("kite_http2_streams_total", "counter", h2.streams, "HTTP/2 requests answered."),
	SC("kite_http2_resets_received_total", "counter", h2.resets_in,
	   "HTTP/2 RST_STREAM frames received."),
	SC("kite_http2_goaway_sent_total", "counter", h2.goaway_out,
	   "HTTP/2 GOAWAY frames sent (shutdown, limits, protocol errors)."),
	SC("kite_http2_data_frames_total", "counter", h2.data_frames,
	   "HTTP/2 DATA frames of file bodies sent."),
	SC("kite_http2_data_file_frames_total", "counter", h2.data_file_frames,
	   "Of those, frames whose payload was queued as a file range (no copy)."),
	SC("kite_file_cache_hits_total", "counter", fc.hits,
	   "Requests answered from the open-file cache (no lookup; the path looked up again "
	   "past --file-cache-valid and found unchanged counts too)."),
	SC("kite_file_cache_misses_total", "counter", fc.misses,
	   "Files opened and put in the open-file cache."),
	SC("kite_file_cache_evictions_total", "counter", fc.evictions,
	   "Open-file cache entries dropped for room (least recently used) or unused for 10 s."),
	SC("kite_file_cache_invalidations_total", "counter", fc.invalidations,
	   "Open-file cache entries dropped because the file changed or went away."),
	SC("kite_file_cache_entries", "gauge", fc.entries, "Files in the open-file caches now."),
	SC("kite_file_cache_open_fds", "gauge", fc.fds,
	   "Descriptors the open-file caches hold open now."),
	SC("kite_file_cache_memory_bytes", "gauge", fc.mem_bytes,
	   "Small files' bytes the open-file caches hold in memory now."),
};
#undef SC

static void render_scalars(struct out *o, const struct serve_stats *t)
{
	for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++) {
		const struct scalar *s = &scalars[i];
		uint64_t v;

		memcpy(&v, (const char *)t + s->off, sizeof(v));
		head(o, s->name, s->type, s->help);
		emit(o, "%s %llu\n", s->name, (unsigned long long)v);
	}
}

static void render_closes(struct out *o, const struct serve_stats *t)
{
	head(o, "kite_connections_rejected_total", "counter",
	     "Connections refused: 503 at a cap or while shutting down; engine_limit: "
	     "closed at accept.");
	emit(o, "kite_connections_rejected_total{reason=\"global_cap\"} %llu\n"
		"kite_connections_rejected_total{reason=\"per_ip_cap\"} %llu\n"
		"kite_connections_rejected_total{reason=\"shutting_down\"} %llu\n"
		"kite_connections_rejected_total{reason=\"engine_limit\"} %llu\n",
	     (unsigned long long)t->rejected_global, (unsigned long long)t->rejected_ip,
	     (unsigned long long)t->rejected_shutdown, (unsigned long long)t->eng.rejected);
	head(o, "kite_connections_closed_total", "counter", "Connections ended, by how.");
	for (int k = 0; k < CK_COUNT; k++)
		emit(o, "kite_connections_closed_total{kind=\"%s\"} %llu\n", kind_names[k],
		     (unsigned long long)t->closed[k]);
	head(o, "kite_errors_total", "counter",
	     "Connections that ended in an error, by kind (handshake: before it completed).");
	for (int k = 1; k < CK_COUNT; k++)
		emit(o, "kite_errors_total{kind=\"%s\"} %llu\n", kind_names[k],
		     (unsigned long long)t->closed[k]);
}

static void render_ktls(struct out *o, const struct serve_stats *t)
{
	static const char *const dir[KITE_DIR_COUNT] = {"tx", "rx"};
	char esc[256];

	head(o, "kite_ktls_connections_total", "counter",
	     "Connections whose direction the kernel encrypts or decrypts (kTLS).");
	for (int d = 0; d < KITE_DIR_COUNT; d++)
		emit(o, "kite_ktls_connections_total{direction=\"%s\"} %llu\n", dir[d],
		     (unsigned long long)t->ktls[d]);
	head(o, "kite_ktls_fallbacks_total", "counter",
	     "Connection directions left to userspace GnuTLS, by reason.");
	for (unsigned f = 0; f < t->nfallback; f++) {
		label_escape(esc, sizeof(esc), t->fallback[f].reason);
		for (int d = 0; d < KITE_DIR_COUNT; d++)
			if (t->fallback[f].n[d])
				emit(o, "kite_ktls_fallbacks_total{direction=\"%s\",reason=\"%s\"} %llu\n",
				     dir[d], esc, (unsigned long long)t->fallback[f].n[d]);
	}
	for (int d = 0; d < KITE_DIR_COUNT; d++)
		if (t->fallback_other[d])
			emit(o, "kite_ktls_fallbacks_total{direction=\"%s\",reason=\"other\"} %llu\n",
			     dir[d], (unsigned long long)t->fallback_other[d]);
}

/* One series per status that occurred (code="200" always, so that the
 * series exists from the start). */
static void render_codes(struct out *o, const char *name, const uint64_t *n)
{
	for (int k = 0; k < STATUS_SLOTS; k++) {
		if (!n[k] && k)
			continue;
		if (slot_status(k))
			emit(o, "%s{code=\"%d\"} %llu\n", name, slot_status(k),
			     (unsigned long long)n[k]);
		else
			emit(o, "%s{code=\"other\"} %llu\n", name, (unsigned long long)n[k]);
	}
}

static void render_requests(struct out *o, const struct serve_stats *t)
{
	head(o, "kite_requests_total", "counter", "HTTP responses queued, by status (all protocols).");
	render_codes(o, "kite_requests_total", t->requests);
	head(o, "kite_http2_requests_total", "counter",
	     "Of those, HTTP/2 responses, by status (HTTP/1.x: the difference).");
	render_codes(o, "kite_http2_requests_total", t->requests_h2);
	head(o, "kite_http2_limit_total", "counter",
	     "HTTP/2 connections that broke a limit and got GOAWAY, by limit.");
	for (int l = 0; l < H2L_COUNT; l++)
		emit(o, "kite_http2_limit_total{limit=\"%s\"} %llu\n", h2_limit_name(l),
		     (unsigned long long)t->h2.limit[l]);
}

static void render_paths(struct out *o, const struct serve_stats *t)
{
	head(o, "kite_bytes_total", "counter",
	     "Bytes into sockets by path: ktls-splice (io_uring), ktls-sendfile, ktls-copy, "
	     "userspace-tls (GnuTLS records), send (headers).");
	for (int p = 0; p < KITE_PATH_COUNT; p++)
		emit(o, "kite_bytes_total{path=\"%s\"} %llu\n", kite_engine_path_name(p),
		     (unsigned long long)t->eng.path[p].bytes);
	head(o, "kite_path_items_total", "counter", "Queued items (file ranges, buffers) by path.");
	for (int p = 0; p < KITE_PATH_COUNT; p++)
		emit(o, "kite_path_items_total{path=\"%s\"} %llu\n", kite_engine_path_name(p),
		     (unsigned long long)t->eng.path[p].requests);
}

static void render_server(struct out *o, struct server *srv)
{
	char esc[256];

	if (srv->nworkers) {
		head(o, "kite_engine_info", "gauge", "The engine rung in use (label) and threads.");
		label_escape(esc, sizeof(esc), srv->workers[0].engine_desc);
		*strchrnul(esc, ' ') = 0;
		emit(o, "kite_engine_info{backend=\"%s\",threads=\"%u\"} 1\n", esc, srv->nworkers);
	}
	head(o, "kite_start_time_seconds", "gauge", "Unix time the server started.");
	emit(o, "kite_start_time_seconds %llu\n", (unsigned long long)srv->started_at);
}

char *metrics_render(struct server *srv, size_t *len)
{
	struct serve_stats *t = malloc(sizeof(*t));
	struct out o = {.cap = 8192};

	o.p = malloc(o.cap);
	if (!t || !o.p) {
		free(t);
		free(o.p);
		return NULL;
	}
	o.p[0] = 0;
	sum(srv, t);
	render_scalars(&o, t);
	render_closes(&o, t);
	render_ktls(&o, t);
	render_requests(&o, t);
	render_paths(&o, t);
	render_server(&o, srv);
	kernel_tls_stat(&o);
	free(t);
	if (o.oom) {
		free(o.p);
		return NULL;
	}
	*len = o.n;
	return o.p;
}

/* ---- The metrics listener ------------------------------------------------ */

static void m_answer(struct kite_stream *s, const struct http_request *req, int r,
		     struct server *srv)
{
	char head[256], date[30];
	const char *status = "200 OK", *type = "text/plain; version=0.0.4; charset=utf-8";
	char *body = NULL;
	size_t blen = 0;

	if (r <= 0) {
		status = "400 Bad Request", type = "text/plain";
	} else if (req->method == HTTP_OTHER) {
		status = "405 Method Not Allowed", type = "text/plain";
	} else if (req->target.n < 8 || memcmp(req->target.p, "/metrics", 8) ||
		   (req->target.n > 8 && req->target.p[8] != '?')) {
		status = "404 Not Found", type = "text/plain";
	} else {
		body = metrics_render(srv, &blen);
		if (!body)
			status = "500 Internal Server Error", type = "text/plain";
	}
	http_date(time(NULL), date);
	/* One response per connection: scrapes are seconds apart. */
	snprintf(head, sizeof(head), "HTTP/1.1 %s\r\nServer: kite-serve\r\nDate: %s\r\n"
		 "Content-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
		 status, date, type, blen);
	if (kite_stream_send(s, head, strlen(head)) < 0 ||
	    (body && r > 0 && req->method != HTTP_HEAD && kite_stream_send(s, body, blen) < 0))
		kite_stream_abort(s, -ENOBUFS);
	else
		(void)kite_stream_close(s);
	free(body);
}

int metrics_start(struct worker *w, struct server *srv)
{
	static const struct plain_service svc = {
		.name = "metrics",
		.answer = m_answer,
		.until_drain = false, /* scraped until main says stop, drain included */
		.idle_timeout_ms = 10000,
		.send_timeout_ms = 10000,
		.max_streams = 64,
		.buffers = 4,
	};

	w->metrics = true;
	return plain_start(w, srv, &svc);
}
