/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: kite-serve's HTTP/2 connection (tools/serve/h2.c) over
 * arbitrary client frames in arbitrary chunks, with drains and ticks in
 * between, against a real document root. The transport checks the
 * connection's promises: nothing is queued after the end, every file range
 * it hands over is open and inside its file, and the bytes it queues are a
 * well-formed sequence of HTTP/2 frames (each header's length is what
 * follows it; no frame beyond the default SETTINGS_MAX_FRAME_SIZE), with
 * every unit (queued on a stream's lane) whole frames.
 *
 * Input: byte 0 picks the read size (1..64, or 0: all at once), byte 1
 * bit 0 picks where file payloads go (1: queued as file ranges, the kernel
 * TLS way; 0: read next to their frame header), then client bytes; a 0xff
 * byte is not sent but drains the transport.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct sink {
	bool ended, aborted;
	size_t queued;       /* bytes "in the transport" since the last drain */
	uint32_t frame_left; /* payload bytes of the current frame still due */
	uint8_t hdr[9];      /* a frame header arriving in pieces */
	unsigned hdr_len;
	int pend[64];        /* descriptors queued ranges name, until the drain */
	unsigned npend;
};

static void bad(const char *what)
{
	fprintf(stderr, "fuzz_h2: %s\n", what);
	__builtin_trap();
}

/* Follow the frame boundaries in what was queued. Payload bytes of a file
 * range are not looked at (buf NULL), only counted. */
static void frames(struct sink *k, const uint8_t *buf, size_t len)
{
	while (len) {
		if (k->frame_left) {
			size_t n = len < k->frame_left ? len : k->frame_left;

			k->frame_left -= (uint32_t)n;
			len -= n;
			if (buf)
				buf += n;
			continue;
		}
		if (!buf)
			bad("a file range where a frame header belongs");
		k->hdr[k->hdr_len++] = *buf++;
		len--;
		if (k->hdr_len < 9)
			continue;
		k->hdr_len = 0;
		k->frame_left = (uint32_t)k->hdr[0] << 16 | (uint32_t)k->hdr[1] << 8 | k->hdr[2];
		if (k->frame_left > 16384)
			bad("frame larger than SETTINGS_MAX_FRAME_SIZE allows");
		if (k->hdr[3] > 9)
			bad("unknown frame type sent");
	}
}

static int f_send(void *t, const void *buf, size_t len)
{
	struct sink *k = t;

	if (k->ended || !len)
		bad("send after the end, or empty");
	frames(k, buf, len);
	k->queued += len;
	return 0;
}

static int f_sendfile(void *t, int fd, uint64_t off, uint64_t len)
{
	struct sink *k = t;
	struct stat st;

	if (k->ended || fstat(fd, &st) || !S_ISREG(st.st_mode) || off + len > (uint64_t)st.st_size)
		bad("sendfile after the end, or a bad range");
	if (len > k->frame_left)
		bad("file range runs past its DATA frame");
	close(fd);
	frames(k, NULL, len);
	k->queued += len;
	return 0;
}

/* A unit may be sent in between other queued bytes (lanes): it must be
 * whole frames, starting and ending at a frame boundary. */
static int f_unit(void *t, uint32_t lane, const void *head, size_t head_len, int fd, uint64_t off,
		  uint64_t len, bool kept)
{
	struct sink *k = t;

	(void)kept; /* no cache here */
	struct stat st;

	if (k->ended || !lane || !head_len)
		bad("unit after the end, on lane 0, or without a frame header");
	if (k->frame_left || k->hdr_len)
		bad("unit queued in the middle of a frame");
	frames(k, head, head_len);
	if (fd >= 0) {
		if (fstat(fd, &st) || !S_ISREG(st.st_mode) || off + len > (uint64_t)st.st_size)
			bad("unit with a bad range");
		if (len > k->frame_left)
			bad("unit range runs past its DATA frame");
		frames(k, NULL, len); /* fd stays h2.c's until the drain */
		if (k->npend < sizeof(k->pend) / sizeof(k->pend[0]))
			k->pend[k->npend++] = fd;
	}
	if (k->frame_left || k->hdr_len)
		bad("unit ends in the middle of a frame");
	k->queued += head_len + len;
	return 0;
}

/* A descriptor a queued range names must stay open until the drain. */
static void pending_open(const struct sink *k)
{
	for (unsigned i = 0; i < k->npend; i++)
		if (fcntl(k->pend[i], F_GETFD) < 0)
			bad("a queued range's descriptor was closed before the drain");
}

/* The transport drained: what it named may go. */
static void drain(struct sink *k, struct h2conn *h, uint64_t now)
{
	pending_open(k);
	k->queued = 0;
	k->npend = 0;
	h2_drained(h, now);
}

static void f_close(void *t)
{
	struct sink *k = t;

	if (k->ended)
		bad("ended twice");
	k->ended = true;
}

static void f_abort(void *t, int err)
{
	(void)err;
	((struct sink *)t)->aborted = true; /* what was queued is dropped */
	f_close(t);
}

static void f_answered(void *t, const struct sess_answer *a)
{
	(void)t;
	if (a->status < 200 || a->status > 599 || !a->stream_id || !(a->stream_id & 1))
		bad("status or stream id");
}

static size_t f_queued(void *t)
{
	return ((struct sink *)t)->queued;
}

static const struct sess_transport tp = {
	.send = f_send, .sendfile = f_sendfile, .unit = f_unit, .close = f_close, .abort = f_abort,
	.answered = f_answered, .queued = f_queued,
};

static struct responder rp;
static struct h2_stats stats;
static struct h2_config cfg;

static void setup(void)
{
	char dir[] = "/tmp/kite-fuzz-h2-XXXXXX", p[64];
	static char big[40000];
	int fd;

	if (!mkdtemp(dir))
		bad("mkdtemp");
	snprintf(p, sizeof(p), "%s/a", dir);
	fd = open(p, O_WRONLY | O_CREAT, 0644);
	if (fd < 0 || write(fd, "0123456789", 10) != 10)
		bad("file");
	close(fd);
	/* More than one frame, and more than the 4 KiB below which payloads
	 * are copied even on the file-range path. */
	snprintf(p, sizeof(p), "%s/b", dir);
	fd = open(p, O_WRONLY | O_CREAT, 0644);
	if (fd < 0 || write(fd, big, sizeof(big)) != (ssize_t)sizeof(big))
		bad("file");
	close(fd);
	rp.root_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	rp.server_name = "fuzz";
	cfg = (struct h2_config){
		.rp = &rp, .inline_max = 5, .max_streams = 8, .max_requests = 20,
		.resets_per_s = 10, .max_header_list = 4096, .send_timeout_ms = 50,
		.stats = &stats,
	};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sink k = {0};
	struct h2conn *h;
	size_t chunk, i = 2;
	uint64_t now = 1;

	if (!cfg.rp)
		setup();
	if (size < 2)
		return 0;
	chunk = data[0] % 65;
	h = h2_create(&cfg, &tp, &k, data[1] & 1);
	if (!h)
		return 0;
	h2_drained(h, now); /* the server's SETTINGS */
	while (i < size && !k.ended) {
		size_t n = chunk ? chunk : size - i, j;

		if (n > size - i)
			n = size - i;
		for (j = 0; j < n && data[i + j] != 0xff; j++)
			;
		if (j)
			h2_data(h, data + i, j, now);
		pending_open(&k);
		i += j;
		if (i < size && data[i] == 0xff && !k.ended) {
			i++;
			drain(&k, h, now);
		}
		now += 7;
		if (!k.ended)
			h2_tick(h, now);
		pending_open(&k);
	}
	if (!k.ended) {
		h2_data(h, NULL, 0, now); /* the client's end */
		pending_open(&k);
		for (int round = 0; !k.ended && k.queued && round < 10000; round++)
			drain(&k, h, now);
	}
	if (k.ended && !k.aborted && (k.hdr_len || k.frame_left))
		bad("the connection ended inside a frame");
	h2_destroy(h);
	return 0;
}
