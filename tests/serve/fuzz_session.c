/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: kite-serve's connection logic (tools/serve/session.c)
 * over any client bytes in any segmentation, with drains and ticks in
 * between, against a real document root. The transport checks the
 * session's promises: nothing is queued after the end, every file
 * descriptor it hands over is open (and is closed here), at most
 * pipeline_max answers between drains.
 *
 * Input: byte 0 picks the read size (1..64, or 0: all at once), then
 * client bytes; a 0xff byte is not sent but drains the transport.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct sink {
	bool ended;
	unsigned since_drain;
};

static void bad(const char *what)
{
	fprintf(stderr, "fuzz_session: %s\n", what);
	__builtin_trap();
}

static int f_send(void *t, const void *buf, size_t len)
{
	struct sink *k = t;

	(void)buf;
	if (k->ended || !len)
		bad("send after the end, or empty");
	return 0;
}

static int f_sendfile(void *t, int fd, uint64_t off, uint64_t len)
{
	struct sink *k = t;
	struct stat st;

	if (k->ended || fstat(fd, &st) || !S_ISREG(st.st_mode) || off + len > (uint64_t)st.st_size)
		bad("sendfile after the end, or a bad range");
	close(fd);
	return 0;
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
	f_close(t);
}

static void f_answered(void *t, const struct sess_answer *a)
{
	struct sink *k = t;

	if (++k->since_drain > 4 + 1) /* a 503/408 may follow the last pipelined one */
		bad("more answers than the pipeline allows");
	if (a->status < 200 || a->status > 599)
		bad("status");
}

static const struct sess_transport tp = {
	.send = f_send, .sendfile = f_sendfile, .close = f_close, .abort = f_abort,
	.answered = f_answered,
};

static struct responder rp;
static struct sess_config cfg;

static void setup(void)
{
	char dir[] = "/tmp/kite-fuzz-session-XXXXXX", p[64];
	int fd;

	if (!mkdtemp(dir))
		bad("mkdtemp");
	snprintf(p, sizeof(p), "%s/a", dir);
	fd = open(p, O_WRONLY | O_CREAT, 0644);
	if (fd < 0 || write(fd, "0123456789", 10) != 10)
		bad("file");
	close(fd);
	snprintf(p, sizeof(p), "%s/d", dir);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/d/index.html", dir);
	fd = open(p, O_WRONLY | O_CREAT, 0644);
	close(fd);
	rp.root_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	rp.server_name = "fuzz";
	cfg.rp = &rp;
	cfg.pipeline_max = 4;
	cfg.in_max = 16384;
	cfg.head_timeout_ms = 100;
	cfg.inline_max = 5; /* ranges of "a" up to 5 bytes inline, longer ones as files */
	/* The files stay for the process's life; the directory is tiny. */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sink k = {0};
	struct session s;
	size_t chunk, i = 1;
	uint64_t now = 1;

	if (!cfg.rp)
		setup();
	if (!size)
		return 0;
	chunk = data[0] % 65;
	sess_init(&s, &cfg, &tp, &k);
	while (i < size && !k.ended) {
		size_t n = chunk ? chunk : size - i, j;

		if (n > size - i)
			n = size - i;
		for (j = 0; j < n && data[i + j] != 0xff; j++)
			;
		if (j)
			sess_data(&s, data + i, j, now);
		i += j;
		if (i < size && data[i] == 0xff) {
			i++;
			k.since_drain = 0;
			sess_drained(&s, now);
		}
		now += 7;
		sess_tick(&s, now);
	}
	if (!k.ended) {
		sess_data(&s, NULL, 0, now); /* the client's end */
		while (!k.ended && k.since_drain) {
			k.since_drain = 0;
			sess_drained(&s, now);
		}
		if (!k.ended)
			bad("client ended and everything drained, but the session did not end");
	}
	sess_fini(&s);
	return 0;
}
