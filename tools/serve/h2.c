/* SPDX-License-Identifier: MIT */
/* One HTTP/2 connection: nghttp2 below, respond() above. */
#include "h2.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "filecache.h"

/* Plaintext of one TLS record: what one transport send becomes on
 * userspace TLS, so the frames collected here are sealed together. */
#define OUT_CAP 16384
#define FRAME_HD 9
/* A DATA frame's header and payload fill one record exactly. */
#define DATA_MAX (OUT_CAP - FRAME_HD)
/* Bytes waiting in the transport (copies and a small charge per frame)
 * before no more frames are made: a bound on memory, not on fairness, which
 * is the engine's (each stream's DATA on its own lane). Below half of the
 * engine's default max_queued (1 MiB), where it would stop reading the
 * client, with room for one more frame. */
#define QUEUE_MAX (384u << 10)
/* File payloads below this are read into the buffer even on kernel TLS:
 * a queued file range costs more than copying a few pages. */
#define DIRECT_MIN 4096
/* Streams, open or ended, whose file a queued range names: an ended
 * stream's file stays open until the transport has drained. Past this many
 * payloads are read behind their header instead, so a connection holds a
 * bounded number of descriptors whatever its streams do. */
#define FDQ_MAX 64
#define NV_MAX 24
/* A header list this many times over the limit is an attack, not a big
 * cookie: the connection ends instead of the stream getting 431. */
#define BOMB_FACTOR 4

enum hfield { HF_METHOD, HF_PATH, HF_AUTHORITY, HF_HOST, HF_RANGE, HF_INM, HF_IMS, HF_IFRANGE,
	      HF_UA, HF_REFERER, HF_AE, HF_COUNT };

static const char *const hf_names[HF_COUNT] = {
	[HF_METHOD] = ":method", [HF_PATH] = ":path", [HF_AUTHORITY] = ":authority",
	[HF_HOST] = "host", [HF_RANGE] = "range", [HF_INM] = "if-none-match",
	[HF_IMS] = "if-modified-since", [HF_IFRANGE] = "if-range", [HF_UA] = "user-agent",
	[HF_REFERER] = "referer", [HF_AE] = "accept-encoding",
};

struct h2stream {
	struct h2conn *h;
	struct h2stream *prev, *next;
	int32_t id;
	char *hb;                        /* the header values kept (hf_names) */
	size_t hb_len, hb_cap;
	size_t list_bytes;               /* decoded header list, RFC 9113 6.5.2 sizes */
	struct { uint32_t off, len; bool set; } f[HF_COUNT];
	bool has_body, too_big, answered;
	bool fd_queued;                  /* a queued range names res.fd */
	bool ae_split;                   /* accept-encoding came twice */
	struct response res;
	char status[4];
	nghttp2_nv nv[NV_MAX];
	size_t nnv;
	uint64_t left;                   /* body bytes not yet framed */
	uint64_t done;                   /* body bytes framed (queued) */
	uint64_t planned;                /* of the frame nghttp2 asked for */
	uint64_t progress_at;            /* ms: last frame of this body */
	uint64_t begun_at;               /* ms: its HEADERS began */
	time_t when;
};

enum ctl { CTL_SETTINGS, CTL_PING, CTL_EMPTY_DATA, CTL_WINDOW_UPDATE, CTL_COUNT };

struct h2conn {
	const struct h2_config *cfg;
	const struct sess_transport *tp;
	void *t;
	nghttp2_session *ng;
	struct h2stream *streams;
	bool file_direct;
	bool dead;            /* the transport was told to end */
	bool peer_done;       /* the client finished sending */
	bool broken;          /* a limit was broken (counted once) */
	bool busy;            /* inside a pump: re-entry guard */
	int reject;           /* status for every request, 0: serve */
	int err;              /* transport failure inside a callback */
	unsigned requests;    /* streams opened */
	uint64_t now;
	uint64_t rate_at;     /* ms: start of the current second */
	unsigned ctl[CTL_COUNT];
	uint64_t data_this_s; /* DATA payload bytes sent in this second */
	double reset_tokens;
	uint64_t reset_at;
	size_t out_len;
	char *out;            /* OUT_CAP bytes while frames are made, else NULL:
			       * an idle connection keeps no 16 KiB buffer */
	struct {              /* files of ended streams, open until the drain */
		int fd;               /* the stream's own, closed then */
		struct fc_entry *ent; /* or a cache entry's: its reference put */
	} retired[FDQ_MAX];
	unsigned nretired;
	unsigned nfdq;        /* open streams with fd_queued */
};

static const char *const limit_names[H2L_COUNT] = {
	[H2L_RAPID_RESET] = "rapid_reset", [H2L_HEADER_LIST] = "header_list",
	[H2L_CONTINUATION] = "continuation", [H2L_SETTINGS] = "settings_flood",
	[H2L_PING] = "ping_flood", [H2L_EMPTY_DATA] = "empty_data_flood",
	[H2L_WINDOW_UPDATE] = "window_update_flood", [H2L_FLOOD] = "ack_flood",
	[H2L_WINDOW_STALL] = "window_stall", [H2L_MAX_REQUESTS] = "max_requests",
	[H2L_PREFACE] = "bad_preface", [H2L_PROTOCOL] = "protocol_error",
	[H2L_SLOW_HEADERS] = "slow_headers",
};

const char *h2_limit_name(enum h2_limit l)
{
	return (unsigned)l < H2L_COUNT ? limit_names[l] : "other";
}

/* ---- Output: frames collected into record-sized sends ------------------- */

static size_t backlog(const struct h2conn *h)
{
	return (h->tp->queued ? h->tp->queued(h->t) : 0) + h->out_len;
}

static int flush(struct h2conn *h)
{
	int r;

	if (!h->out_len || h->err)
		return h->err;
	r = h->tp->send(h->t, h->out, h->out_len);
	h->out_len = 0;
	if (r)
		h->err = r;
	return r;
}

/* The output buffer, made on first use in a pump (freed at its end). */
static bool out_buf(struct h2conn *h)
{
	if (!h->out)
		h->out = malloc(OUT_CAP);
	if (!h->out)
		h->err = -ENOMEM;
	return h->out != NULL;
}

static ssize_t on_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags,
		       void *user)
{
	struct h2conn *h = user;
	size_t n;

	(void)ng, (void)flags;
	if (h->err || !out_buf(h))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (backlog(h) >= QUEUE_MAX)
		return NGHTTP2_ERR_WOULDBLOCK; /* on_drain asks again */
	if (h->out_len == OUT_CAP && flush(h))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	n = OUT_CAP - h->out_len < len ? OUT_CAP - h->out_len : len;
	memcpy(h->out + h->out_len, data, n);
	h->out_len += n;
	return (ssize_t)n;
}

/* A DATA frame whose payload is file bytes (NGHTTP2_DATA_FLAG_NO_COPY),
 * queued as one unit on the lane of its stream: the engine interleaves
 * streams fairly, keeps each stream's frames in order, and sends lane 0
 * (HEADERS, control frames: on_send) first and in order. Where the kernel
 * encrypts the payload is a file range behind the 9-byte header (the
 * kernel packs both into one record); otherwise it is read behind the
 * header. A body that is one small frame stays with the lane-0 frames, so
 * small responses of several streams share one record-sized send: no
 * earlier frame of its stream can be queued behind it. */
static int on_send_data(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *framehd,
			size_t len, nghttp2_data_source *src, void *user)
{
	struct h2conn *h = user;
	struct h2stream *st = src->ptr;
	uint64_t off = st->res.offset + st->done;
	bool direct = h->file_direct && len >= DIRECT_MIN &&
		      (st->fd_queued || h->nretired + h->nfdq < FDQ_MAX);
	bool whole = !st->done && len == st->left && !direct;
	int r;

	(void)ng, (void)frame; /* no padding callback: padlen is 0 */
	if (h->err || !out_buf(h))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (backlog(h) >= QUEUE_MAX)
		return NGHTTP2_ERR_WOULDBLOCK;
	/* Lane-0 frames made so far go first: this stream's HEADERS precede
	 * its DATA (and a HEADERS block stays in HPACK order). */
	if (!(whole && h->out_len + FRAME_HD + len <= OUT_CAP) && flush(h))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (direct) {
		/* The range names the stream's own descriptor (no copy per
		 * frame): it stays open until the transport has drained,
		 * even after the stream ends (stream_free). */
		r = h->tp->unit(h->t, (uint32_t)st->id, framehd, FRAME_HD, st->res.fd, off, len,
				st->res.ent != NULL);
		if (r) {
			h->err = r;
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		}
		if (!st->fd_queued)
			h->nfdq++;
		st->fd_queued = true;
		h->cfg->stats->data_file_frames++;
	} else {
		size_t at = h->out_len;

		memcpy(h->out + at, framehd, FRAME_HD);
		/* A file cut short leaves a frame that cannot be finished:
		 * the connection ends, as HTTP/1.1 ends it (never wrong bytes). */
		if (!sess_pread_all(st->res.fd, h->out + at + FRAME_HD, len, off)) {
			h->err = -ENODATA;
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		}
		if (whole) {
			h->out_len += FRAME_HD + len; /* goes with the lane-0 frames */
		} else {
			r = h->tp->unit(h->t, (uint32_t)st->id, h->out, FRAME_HD + len, -1, 0, 0,
					false);
			if (r) {
				h->err = r;
				return NGHTTP2_ERR_CALLBACK_FAILURE;
			}
		}
	}
	st->done += len;
	st->left -= len;
	st->progress_at = h->now;
	h->data_this_s += len;
	h->cfg->stats->data_frames++;
	return 0;
}

/* ---- Ending ------------------------------------------------------------- */

static void end(struct h2conn *h, int err)
{
	if (h->dead)
		return;
	h->dead = true;
	if (err)
		h->tp->abort(h->t, err);
	else
		h->tp->close(h->t);
}

/* GOAWAY with code; the connection ends once it is out. */
static void goaway(struct h2conn *h, uint32_t code)
{
	if (h->broken)
		return;
	h->broken = true;
	h->cfg->stats->goaway_out++;
	(void)nghttp2_session_terminate_session(h->ng, code);
}

/* A limit broken: counted once per connection, then GOAWAY. */
static void limit_broken(struct h2conn *h, enum h2_limit l, uint32_t code)
{
	if (!h->broken)
		h->cfg->stats->limit[l]++;
	goaway(h, code);
}

/* Send what nghttp2 has, end the connection when nothing is left to do. */
static void pump(struct h2conn *h)
{
	int r;

	if (h->dead || h->busy)
		return;
	h->busy = true;
	r = nghttp2_session_send(h->ng);
	if (!r)
		r = flush(h);
	free(h->out); /* flushed (or failed): nothing in it is owed */
	h->out = NULL;
	h->out_len = 0;
	h->busy = false;
	if (r || h->err) {
		end(h, h->err ? h->err : -EPROTO);
		return;
	}
	if (!nghttp2_session_want_read(h->ng) && !nghttp2_session_want_write(h->ng))
		end(h, 0);
	else if (h->peer_done && !h->streams && !nghttp2_session_want_write(h->ng))
		end(h, 0); /* the client is gone and nothing is owed */
}

/* ---- Streams ------------------------------------------------------------ */

static struct h2stream *stream_of(struct h2conn *h, int32_t id)
{
	return id ? nghttp2_session_get_stream_user_data(h->ng, id) : NULL;
}

static void keep(struct h2stream *st, enum hfield f, const uint8_t *v, size_t n)
{
	size_t cap = st->hb_cap;
	char *p;

	if (st->f[f].set) {
		/* Accept-Encoding split over two fields is one list: identity,
		 * as in HTTP/1.1 (http.c). Otherwise the first one counts. */
		if (f == HF_AE)
			st->ae_split = true;
		return;
	}
	if (st->hb_len + n > cap) {
		cap = cap ? cap : 256;
		while (cap < st->hb_len + n)
			cap *= 2;
		p = realloc(st->hb, cap);
		if (!p)
			return; /* the request is answered without the field */
		st->hb = p;
		st->hb_cap = cap;
	}
	memcpy(st->hb + st->hb_len, v, n);
	st->f[f].off = (uint32_t)st->hb_len;
	st->f[f].len = (uint32_t)n;
	st->f[f].set = true;
	st->hb_len += n;
}

static struct http_str field(const struct h2stream *st, enum hfield f)
{
	struct http_str s = {NULL, 0};

	if (st->f[f].set) {
		s.p = st->hb + st->f[f].off;
		s.n = st->f[f].len;
	}
	return s;
}

static void build_request(const struct h2stream *st, struct http_request *req)
{
	struct http_str m = field(st, HF_METHOD);

	memset(req, 0, sizeof(*req));
	req->method_name = m;
	req->method = m.n == 3 && !memcmp(m.p, "GET", 3) ? HTTP_GET
		      : m.n == 4 && !memcmp(m.p, "HEAD", 4) ? HTTP_HEAD : HTTP_OTHER;
	req->target = field(st, HF_PATH);
	req->minor = 1;
	req->keep_alive = true;
	req->host = st->f[HF_AUTHORITY].set ? field(st, HF_AUTHORITY) : field(st, HF_HOST);
	req->has_host = req->host.n > 0;
	req->has_body = st->has_body;
	req->range = field(st, HF_RANGE);
	req->if_none_match = field(st, HF_INM);
	req->if_modified_since = field(st, HF_IMS);
	req->if_range = field(st, HF_IFRANGE);
	req->user_agent = field(st, HF_UA);
	req->referer = field(st, HF_REFERER);
	req->accept_encoding = st->ae_split ? (struct http_str){"identity", 8} : field(st, HF_AE);
}

static void nv_add(struct h2stream *st, const char *n, size_t nl, const char *v, size_t vl)
{
	if (st->nnv == NV_MAX)
		return;
	st->nv[st->nnv++] = (nghttp2_nv){
		.name = (uint8_t *)n, .value = (uint8_t *)v, .namelen = nl, .valuelen = vl,
		/* Both live in the stream until it closes. */
		.flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE,
	};
}

/* The HTTP/1.1 head respond() made, as HTTP/2 fields: the status line
 * becomes :status, names are lowercased (RFC 9113 8.2.1), and the
 * connection-specific fields HTTP/2 forbids (8.2.2) are dropped. */
static void head_to_nv(struct h2stream *st)
{
	char *p = st->res.head, *end = p + st->res.head_len, *eol, *colon, *v;

	snprintf(st->status, sizeof(st->status), "%03d", st->res.status);
	st->nnv = 0;
	nv_add(st, ":status", 7, st->status, 3);
	eol = memchr(p, '\n', (size_t)(end - p));
	for (p = eol ? eol + 1 : end; p < end; p = eol + 1) {
		eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol || eol - p < 2)
			break; /* the blank line */
		colon = memchr(p, ':', (size_t)(eol - p));
		if (!colon)
			continue;
		for (char *c = p; c < colon; c++)
			if (*c >= 'A' && *c <= 'Z')
				*c = (char)(*c + 32);
		if ((colon - p == 10 && !memcmp(p, "connection", 10)) ||
		    (colon - p == 10 && !memcmp(p, "keep-alive", 10)))
			continue;
		v = colon + 1;
		while (v < eol && *v == ' ')
			v++;
		nv_add(st, p, (size_t)(colon - p), v, (size_t)(eol - v - (eol[-1] == '\r')));
	}
}

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct h2stream *st = src->ptr;
	uint64_t n = st->left < len ? st->left : len;

	(void)ng, (void)id, (void)user;
	if (st->res.fd < 0) {
		/* A body in memory (errors, a cached small file): copied. */
		memcpy(buf, st->res.body + st->done, (size_t)n);
		st->done += n;
		st->left -= n;
		if (!st->left)
			*flags |= NGHTTP2_DATA_FLAG_EOF;
		return (ssize_t)n;
	}
	st->planned = n;
	*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	if (n == st->left)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

static ssize_t frame_len(nghttp2_session *ng, uint8_t type, int32_t id, int32_t swin,
			 int32_t cwin, uint32_t max, void *user)
{
	int32_t n = swin < cwin ? swin : cwin;

	(void)ng, (void)type, (void)id, (void)user;
	if ((uint32_t)n > max)
		n = (int32_t)max;
	return n > DATA_MAX ? DATA_MAX : n;
}

static void answer(struct h2conn *h, struct h2stream *st)
{
	struct http_request req;
	nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_body};
	int status = h->reject ? -h->reject : st->too_big ? -431 : st->has_body ? -413 : 0;

	st->answered = true;
	st->when = time(NULL);
	build_request(st, &req);
	/* A cached small file comes back as res.body: read_body copies it. */
	respond_with(h->cfg->rp, h->cfg->fc, status ? NULL : &req, status, st->when, &st->res);
	head_to_nv(st);
	st->left = st->res.fd >= 0 ? st->res.length : st->res.body ? st->res.body_len : 0;
	st->progress_at = h->now;
	if (nghttp2_submit_response(h->ng, st->id, st->nv, st->nnv, st->left ? &prd : NULL)) {
		h->err = -ENOMEM;
		return;
	}
	if (h->reject)
		(void)nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR,
					    NULL, 0);
}

static void log_stream(struct h2conn *h, struct h2stream *st)
{
	struct http_request req;
	struct http_str m = field(st, HF_METHOD), p = field(st, HF_PATH);
	char line[2048];
	struct sess_answer a = {.req = &req, .line = line, .status = st->res.status,
				.body_bytes = st->done, .when = st->when,
				.stream_id = (uint32_t)st->id};
	int n = snprintf(line, sizeof(line), "%.*s %.*s HTTP/2.0", (int)(m.n > 64 ? 64 : m.n),
			 m.p ? m.p : "", (int)(p.n > 1900 ? 1900 : p.n), p.p ? p.p : "");

	a.line_len = n < 0 ? 0 : (size_t)n >= sizeof(line) ? sizeof(line) - 1 : (size_t)n;
	build_request(st, &req);
	h->tp->answered(h->t, &a);
	h->cfg->stats->streams++;
}


/* The files of ended streams, once nothing queued names them. */
static void retired_close(struct h2conn *h)
{
	while (h->nretired) {
		h->nretired--;
		if (h->retired[h->nretired].ent)
			fc_entry_put(h->retired[h->nretired].ent);
		else
			close(h->retired[h->nretired].fd);
	}
}

static void stream_free(struct h2conn *h, struct h2stream *st)
{
	if (st->prev)
		st->prev->next = st->next;
	else
		h->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	if (st->fd_queued) {
		/* Ranges of this file may still wait in the transport: closed
		 * after its drain, never before (a reused number would send
		 * another file's bytes). on_send_data kept a slot free. */
		h->nfdq--;
		if (st->res.fd >= 0) {
			/* A cached descriptor stays open by its entry's
			 * reference, which moves here from the response. */
			h->retired[h->nretired].fd = st->res.fd;
			h->retired[h->nretired++].ent = st->res.ent;
			st->res.ent = NULL;
		}
		st->res.fd = -1;
	}
	response_clear(&st->res);
	free(st->hb);
	free(st);
}

/* ---- nghttp2 callbacks: what arrived ------------------------------------ */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
	struct h2conn *h = user;
	struct h2stream *st;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (++h->requests == h->cfg->max_requests) {
		/* Stream ids (and the memory of a long connection) are not
		 * endless: this is the last stream served here, the client
		 * opens a new connection for more. */
		h->cfg->stats->limit[H2L_MAX_REQUESTS]++;
		h->cfg->stats->goaway_out++;
		(void)nghttp2_submit_goaway(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
					    NGHTTP2_NO_ERROR, NULL, 0);
	}
	st = calloc(1, sizeof(*st));
	if (!st)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* this stream is reset */
	st->h = h;
	st->id = frame->hd.stream_id;
	st->res.fd = -1;
	st->begun_at = h->now;
	st->next = h->streams;
	if (h->streams)
		h->streams->prev = st;
	h->streams = st;
	if (nghttp2_session_set_stream_user_data(ng, st->id, st)) {
		stream_free(h, st);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
		     size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *user)
{
	struct h2conn *h = user;
	struct h2stream *st = stream_of(h, frame->hd.stream_id);

	(void)ng, (void)flags;
	if (!st || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	/* RFC 9113 6.5.2: each field counts its name, value and 32 bytes. */
	st->list_bytes += nl + vl + 32;
	if (st->list_bytes > h->cfg->max_header_list) {
		if (!st->too_big)
			h->cfg->stats->limit[H2L_HEADER_LIST]++;
		st->too_big = true;
		/* An HPACK bomb decodes to far more than it costs to send:
		 * stop decoding it at once. */
		if (st->list_bytes > BOMB_FACTOR * h->cfg->max_header_list)
			goaway(h, NGHTTP2_ENHANCE_YOUR_CALM);
		return 0;
	}
	for (int f = 0; f < HF_COUNT; f++)
		if (strlen(hf_names[f]) == nl && !memcmp(hf_names[f], name, nl)) {
			keep(st, (enum hfield)f, value, vl);
			break;
		}
	return 0;
}

static int on_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
		    size_t len, void *user)
{
	struct h2stream *st = stream_of(user, id);

	(void)ng, (void)flags, (void)data;
	if (st && len)
		st->has_body = true; /* answered with 413 at the stream's end */
	return 0;
}

/* A control frame of kind k: at most H2_CONTROL_PER_S a second. */
static void count_control(struct h2conn *h, enum ctl k, enum h2_limit l)
{
	if (++h->ctl[k] > H2_CONTROL_PER_S)
		limit_broken(h, l, NGHTTP2_ENHANCE_YOUR_CALM);
}

/* Token bucket: resets_per_s refill, twice that as a burst. */
static void count_reset(struct h2conn *h)
{
	double rate = h->cfg->resets_per_s;

	h->cfg->stats->resets_in++;
	if (!rate)
		return;
	if (!h->reset_at) {
		h->reset_tokens = 2 * rate;
	} else {
		h->reset_tokens += (double)(h->now - h->reset_at) * rate / 1000.0;
		if (h->reset_tokens > 2 * rate)
			h->reset_tokens = 2 * rate;
	}
	h->reset_at = h->now ? h->now : 1;
	if (--h->reset_tokens < 0)
		limit_broken(h, H2L_RAPID_RESET, NGHTTP2_ENHANCE_YOUR_CALM);
}

static int on_frame(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
	struct h2conn *h = user;
	struct h2stream *st = stream_of(h, frame->hd.stream_id);
	bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;

	(void)ng;
	if (h->now - h->rate_at >= 1000) {
		memset(h->ctl, 0, sizeof(h->ctl));
		h->data_this_s = 0;
		h->rate_at = h->now;
	}
	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
	case NGHTTP2_DATA:
		if (frame->hd.type == NGHTTP2_DATA && !frame->hd.length && !end_stream)
			count_control(h, CTL_EMPTY_DATA, H2L_EMPTY_DATA);
		if (st && end_stream && !st->answered && !h->broken)
			answer(h, st);
		break;
	case NGHTTP2_SETTINGS:
		if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
			count_control(h, CTL_SETTINGS, H2L_SETTINGS);
		break;
	case NGHTTP2_PING:
		if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
			count_control(h, CTL_PING, H2L_PING);
		break;
	case NGHTTP2_WINDOW_UPDATE:
		/* A client needs window for data it received: updates while
		 * nothing was sent in this second only cost us work. */
		if (!h->data_this_s)
			count_control(h, CTL_WINDOW_UPDATE, H2L_WINDOW_UPDATE);
		break;
	case NGHTTP2_RST_STREAM:
		count_reset(h);
		break;
	default:
		break;
	}
	return 0;
}

static int on_close(nghttp2_session *ng, int32_t id, uint32_t code, void *user)
{
	struct h2conn *h = user;
	struct h2stream *st = stream_of(h, id);

	(void)code;
	if (!st)
		return 0;
	(void)nghttp2_session_set_stream_user_data(ng, id, NULL);
	if (st->answered)
		log_stream(h, st);
	/* Reset or done: the file and the buffers go now (queued ranges
	 * hold their own descriptors). */
	stream_free(h, st);
	return 0;
}

static int on_invalid(nghttp2_session *ng, const nghttp2_frame *frame, int code, void *user)
{
	struct h2conn *h = user;

	(void)ng, (void)frame, (void)code;
	if (!h->broken)
		h->cfg->stats->limit[H2L_PROTOCOL]++;
	return 0;
}

static int on_frame_sent(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
	struct h2conn *h = user;

	(void)ng;
	if (frame->hd.type == NGHTTP2_GOAWAY && !h->broken && frame->goaway.error_code)
		h->cfg->stats->goaway_out++; /* nghttp2's own, for a protocol error */
	return 0;
}

/* ---- The connection ------------------------------------------------------ */

static nghttp2_session_callbacks *make_callbacks(void)
{
	nghttp2_session_callbacks *cb;

	if (nghttp2_session_callbacks_new(&cb))
		return NULL;
	nghttp2_session_callbacks_set_send_callback(cb, on_send);
	nghttp2_session_callbacks_set_send_data_callback(cb, on_send_data);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
	nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_sent);
	nghttp2_session_callbacks_set_data_source_read_length_callback(cb, frame_len);
	return cb;
}

static int make_session(struct h2conn *h)
{
	nghttp2_session_callbacks *cb = make_callbacks();
	nghttp2_option *opt = NULL;
	nghttp2_settings_entry iv[] = {
		{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h->cfg->max_streams},
		{NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)h->cfg->max_header_list},
		{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
	};
	int r = -ENOMEM;

	if (!cb || nghttp2_option_new(&opt))
		goto out;
	/* Streams over the limit are refused by nghttp2 itself (RST_STREAM
	 * REFUSED_STREAM), before any memory of ours is spent on them. */
	nghttp2_option_set_max_continuations(opt, H2_MAX_CONTINUATIONS);
	/* Our own token bucket counts and answers resets; nghttp2's would
	 * act first, uncounted. */
	nghttp2_option_set_stream_reset_rate_limit(opt, UINT64_MAX, UINT64_MAX);
	nghttp2_option_set_no_closed_streams(opt, 1);
	if (nghttp2_session_server_new2(&h->ng, cb, h, opt))
		goto out;
	if (nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])))
		goto out;
	r = 0;
out:
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	return r;
}

struct h2conn *h2_create(const struct h2_config *cfg, const struct sess_transport *tp, void *t,
			 bool file_direct)
{
	struct h2conn *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->cfg = cfg;
	h->tp = tp;
	h->t = t;
	h->file_direct = file_direct;
	h->cfg->stats->conns++;
	if (make_session(h)) {
		h2_destroy(h);
		return NULL;
	}
	return h;
}

void h2_destroy(struct h2conn *h)
{
	if (!h)
		return;
	/* Streams still open: nghttp2 calls on_close for each, which logs
	 * them with what was queued and frees them. */
	if (h->ng) {
		h->dead = true;
		nghttp2_session_del(h->ng);
	}
	while (h->streams)
		stream_free(h, h->streams);
	retired_close(h); /* the transport has ended: nothing names them */
	free(h->out);
	free(h);
}

/* What a failed receive was, for the counters; GOAWAY where nghttp2 left
 * the session able to send one. */
static void recv_failed(struct h2conn *h, ssize_t r)
{
	enum h2_limit l = r == NGHTTP2_ERR_BAD_CLIENT_MAGIC ? H2L_PREFACE
			  : r == NGHTTP2_ERR_FLOODED ? H2L_FLOOD
			  : r == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS ? H2L_CONTINUATION
			  : H2L_PROTOCOL;
	uint32_t code = l == H2L_PROTOCOL || l == H2L_PREFACE ? NGHTTP2_PROTOCOL_ERROR
			: NGHTTP2_ENHANCE_YOUR_CALM;

	if (r == NGHTTP2_ERR_NOMEM || r == NGHTTP2_ERR_CALLBACK_FAILURE) {
		end(h, h->err ? h->err : -ENOMEM);
		return;
	}
	limit_broken(h, l, code);
	pump(h);
	end(h, 0);
}

void h2_data(struct h2conn *h, const void *buf, size_t len, uint64_t now)
{
	ssize_t r;

	h->now = now;
	if (h->dead || h->busy)
		return;
	if (!len) {
		h->peer_done = true;
		pump(h);
		return;
	}
	h->busy = true;
	r = nghttp2_session_mem_recv(h->ng, buf, len);
	h->busy = false;
	if (r < 0 || h->err) {
		if (h->err)
			end(h, h->err);
		else
			recv_failed(h, r);
		return;
	}
	pump(h);
}

void h2_drained(struct h2conn *h, uint64_t now)
{
	h->now = now;
	/* Nothing queued names an ended stream's file any more. */
	if (!h->tp->queued || !h->tp->queued(h->t))
		retired_close(h);
	pump(h);
}

void h2_tick(struct h2conn *h, uint64_t now)
{
	h->now = now;
	if (h->dead)
		return;
	/* A request still open header_timeout_ms after its HEADERS began
	 * (trickled CONTINUATIONs, or no END_STREAM ever): the HTTP/1.1
	 * header timeout, per stream. PINGs cannot keep it alive. */
	for (struct h2stream *st = h->streams; st && h->cfg->header_timeout_ms; st = st->next)
		if (!st->answered && now - st->begun_at > h->cfg->header_timeout_ms) {
			limit_broken(h, H2L_SLOW_HEADERS, NGHTTP2_ENHANCE_YOUR_CALM);
			pump(h);
			end(h, 0);
			return;
		}
	if (!h->cfg->send_timeout_ms || backlog(h))
		return;
	/* Nothing waits in the transport, yet a body does not move: its
	 * window stays shut. The engine's send timeout cannot see this (its
	 * queue is empty), so it is measured here. */
	for (struct h2stream *st = h->streams; st; st = st->next)
		if (st->answered && st->left && now - st->progress_at > h->cfg->send_timeout_ms) {
			limit_broken(h, H2L_WINDOW_STALL, NGHTTP2_FLOW_CONTROL_ERROR);
			pump(h);
			end(h, 0);
			return;
		}
}

void h2_drain_server(struct h2conn *h)
{
	if (h->dead)
		return;
	h->cfg->stats->goaway_out++;
	/* Streams up to the last one nghttp2 handed us finish; the client
	 * retries later ones elsewhere (RFC 9113 6.8). */
	(void)nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE,
				    nghttp2_session_get_last_proc_stream_id(h->ng),
				    NGHTTP2_NO_ERROR, NULL, 0);
	pump(h);
}

void h2_reject(struct h2conn *h, int status)
{
	h->reject = status;
	pump(h); /* our SETTINGS; requests then get status */
}
