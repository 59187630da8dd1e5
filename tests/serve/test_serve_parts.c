/* SPDX-License-Identifier: MIT */
/*
 * kite-serve's parts that need no network: the per-address connection
 * table (limits.c), the access log line (log.c), the error kinds of the
 * metrics (metrics.c) and the open-file cache's bookkeeping (filecache.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "server.h"

static void addr(uint8_t a[16], unsigned i)
{
	memset(a, 0, 16);
	a[10] = a[11] = 0xff;
	a[12] = 10;
	a[13] = (uint8_t)(i >> 16);
	a[14] = (uint8_t)(i >> 8);
	a[15] = (uint8_t)i;
}

static void iplimit(void)
{
	struct iplimit l;
	uint8_t a[16];
	enum { N = 500 };

	t_ok(iplimit_init(&l, 3, N));
	/* Up to the limit per address, independently of other addresses. */
	for (unsigned i = 0; i < N / 3; i++) {
		addr(a, i);
		for (int k = 0; k < 3; k++)
			t_assert(iplimit_take(&l, a), "take %u/%d", i, k);
		t_assert(!iplimit_take(&l, a), "4th from %u", i);
	}
	/* Release in a scattered order (exercises backward-shift deletion),
	 * checking the rest are still counted. */
	for (unsigned i = 0; i < N / 3; i += 2) {
		addr(a, i);
		for (int k = 0; k < 3; k++)
			iplimit_put(&l, a);
	}
	for (unsigned i = 0; i < N / 3; i++) {
		addr(a, i);
		if (i % 2 == 0) {
			t_assert(iplimit_take(&l, a), "freed %u", i);
			iplimit_put(&l, a);
		} else {
			t_assert(!iplimit_take(&l, a), "still full %u", i);
		}
	}
	/* Releasing an unknown address is harmless. */
	addr(a, 999999);
	iplimit_put(&l, a);
	iplimit_fini(&l);

	t_ok(iplimit_init(&l, 0, 10)); /* 0: no limit */
	for (int k = 0; k < 100; k++)
		t_assert(iplimit_take(&l, a), "unlimited");
	iplimit_fini(&l);
}

static void ipkey(void)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	uint8_t a[16], b[16];
	char t[64];

	in->sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.7", &in->sin_addr);
	ip_key(&ss, a, t, sizeof(t));
	t_assert(!strcmp(t, "192.0.2.7"), "v4 text %s", t);
	memset(&ss, 0, sizeof(ss));
	in6->sin6_family = AF_INET6;
	inet_pton(AF_INET6, "::ffff:192.0.2.7", &in6->sin6_addr);
	ip_key(&ss, b, t, sizeof(t));
	/* Same client whether it came in on an IPv4 or a dual-stack socket. */
	t_assert(!memcmp(a, b, 16) && !strcmp(t, "192.0.2.7"), "mapped: %s", t);
	inet_pton(AF_INET6, "2001:db8::1", &in6->sin6_addr);
	ip_key(&ss, b, t, sizeof(t));
	t_assert(!strcmp(t, "2001:db8::1") && memcmp(a, b, 16), "v6 %s", t);
}

static void log_line(void)
{
	struct http_request req = {0};
	const char *raw = "GET /x\"y HTTP/1.1\r\nHost: h\r\nUser-Agent: evil\"\n\x01ua\r\n"
			  "Referer: http://r/\r\n\r\n";
	struct sess_answer a = {.req = &req, .status = 200, .body_bytes = 1234, .when = 784111777};
	struct alog_entry e = {.ip = "192.0.2.7", .a = &a, .tls = "TLS1.3 AES-128-GCM ktls=tx+rx resumed=0"};
	char out[4096], big[6000];
	size_t n;

	/* The parser refuses the raw LF inside a header; build req by hand. */
	(void)raw;
	req.user_agent = (struct http_str){"evil\"\n\x01ua", 9};
	req.referer = (struct http_str){"http://r/", 9};
	a.line = "GET /x\"y HTTP/1.1";
	a.line_len = strlen(a.line);
	n = alog_format(out, sizeof(out), &e);
	t_assert(n == strlen(out) && out[n - 1] == '\n', "one line");
	t_assert(!strcmp(out, "192.0.2.7 - - [06/Nov/1994:08:49:37 +0000] \"GET /x\\x22y HTTP/1.1\" "
			      "200 1234 \"http://r/\" \"evil\\x22\\x0a\\x01ua\" "
			      "TLS1.3 AES-128-GCM ktls=tx+rx resumed=0\n"), "got: %s", out);
	t_assert(!memchr(out, '\n', n - 1), "a newline from the client would forge a line");

	/* The host asked for, escaped like every client field, before the TLS fields. */
	req.host = (struct http_str){"a.test:8443\"x", 13};
	n = alog_format(out, sizeof(out), &e);
	t_assert(strstr(out, "\"evil\\x22\\x0a\\x01ua\" host=a.test:8443\\x22x TLS1.3 AES-128-GCM "),
		 "host: %s", out);
	req.host = (struct http_str){NULL, 0};

	/* No request (a 503 at connect): dashes; no body: "-". */
	a.req = NULL;
	a.line = "";
	a.line_len = 0;
	a.status = 503;
	a.body_bytes = 0;
	e.tls = NULL;
	n = alog_format(out, sizeof(out), &e);
	t_assert(strstr(out, "\"-\" 503 - \"-\" \"-\" -\n"), "got: %s", out);

	/* A huge line is cut, the line still ends with the TLS fields. */
	memset(big, 'a', sizeof(big));
	a.line = big;
	a.line_len = sizeof(big);
	e.tls = "TLS1.2 X ktls=off resumed=0";
	n = alog_format(out, sizeof(out), &e);
	t_assert(n < sizeof(out) && strstr(out, "aaa\" 503 - \"-\" \"-\" TLS1.2 X ktls=off resumed=0\n"),
		 "cut: %zu", n);
}

static void kinds(void)
{
	t_assert(close_kind_of(0, true) == CK_OK, "ok");
	t_assert(close_kind_of(-ETIMEDOUT, true) == CK_TIMEOUT, "timeout");
	t_assert(close_kind_of(-ETIMEDOUT, false) == CK_HANDSHAKE, "handshake timeout");
	t_assert(close_kind_of(-EOPNOTSUPP, false) == CK_OFFLOAD_REQUIRED, "require");
	t_assert(close_kind_of(-ECONNRESET, true) == CK_RESET, "reset");
	t_assert(close_kind_of(-ENODATA, true) == CK_FILE, "file");
	t_assert(close_kind_of(-ECANCELED, false) == CK_SHUTDOWN, "shutdown");
	t_assert(close_kind_of(-EXDEV, true) == CK_OTHER, "other");
	for (int k = 0; k < CK_COUNT; k++)
		t_assert(strlen(close_kind_name(k)) > 1, "name %d", k);
	t_assert(slot_status(status_slot(416)) == 416 && slot_status(status_slot(299)) == 0, "slots");
}

/* A target for dir/name as respond.c would make it. */
static void target(int dir, const char *name, struct fc_target *t)
{
	memset(t, 0, sizeof(*t));
	t->fd = openat(dir, name, O_RDONLY | O_CLOEXEC);
	t_assert(t->fd >= 0 && !fstat(t->fd, &t->st), "open %s", name);
	snprintf(t->path, sizeof(t->path), "%s", name);
}

static void put_file(int dir, const char *name, const char *text)
{
	int fd = openat(dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	t_assert(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write %s",
		 name);
	close(fd);
}

static int forgot_fd = -1;
static unsigned forgot;

static void forget(void *arg, int fd)
{
	t_assert(arg == &forgot, "forget's argument");
	forgot_fd = fd;
	forgot++;
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* LRU bound, descriptors, bytes kept only once a file is still, a
 * dropped entry's bytes and descriptor alive while a response holds them,
 * the engine told before each descriptor closes. */
static void filecache(void)
{
	char tmpl[] = "/tmp/kite-fc-XXXXXX", name[16];
	struct filecache_stats st = {0};
	struct filecache_config cfg = {.max_entries = 3, .valid_ms = 60000, .small_max = 100,
				       .stats = &st};
	struct filecache *c;
	struct fc_entry *e, *held;
	struct fc_target t;
	bool fresh;
	int dir, fd;

	t_assert(mkdtemp(tmpl), "mkdtemp");
	dir = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	for (int i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		put_file(dir, name, "0123456789");
	}
	t_ok(filecache_create(&c, &cfg));
	filecache_set_forget(c, forget, &forgot);
	/* Just written: its bytes are not trusted yet, the descriptor is. */
	target(dir, "f0", &t);
	e = filecache_insert(c, dir, 0, "f0", &t);
	t_assert(e && !e->body && st.misses == 1 && st.fds == 1 && !st.mem_bytes, "young file");
	/* Still for over a second: read once, then kept. */
	sleep(2);
	t_assert(filecache_find(c, dir, 0, "f0", &fresh) == e && fresh && e->body &&
		 !memcmp(e->body, "0123456789", 10) && st.mem_bytes == 10, "settled file kept");
	filecache_hit(c, e);
	t_assert(!filecache_find(c, dir, 1, "f0", &fresh) && !filecache_find(c, dir, 0, "f1", &fresh),
		 "keys: variant and path");
	for (int i = 1; i < 4; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		target(dir, name, &t);
		t_assert(filecache_insert(c, dir, 0, name, &t), "insert %s", name);
	}
	/* f0 was least recently used: gone, with its descriptor. */
	t_assert(st.entries == 3 && st.fds == 3 && st.evictions == 1 && st.mem_bytes == 30 &&
		 !filecache_find(c, dir, 0, "f0", &fresh), "LRU bound: %llu entries %llu evicted",
		 (unsigned long long)st.entries, (unsigned long long)st.evictions);
	t_assert(forgot == 1, "engine told of the evicted descriptor: %u", forgot);
	/* A response holds f1's bytes; f1 changes and is dropped. */
	held = filecache_find(c, dir, 0, "f1", &fresh);
	t_assert(held && held->body, "f1 cached");
	fc_entry_get(held);
	fd = held->t.fd;
	put_file(dir, "f1", "changed!");
	target(dir, "f1", &t);
	t_assert(!filecache_same(held, &t), "a changed file is not the same");
	close(t.fd);
	filecache_drop(c, held);
	/* A response may still send from its descriptor: open, not forgotten. */
	t_assert(st.invalidations == 1 && st.fds == 3 && st.entries == 2 && st.mem_bytes == 30 &&
		 !memcmp(held->body, "0123456789", 10) && held->t.fd == fd && fd_open(fd) &&
		 forgot == 1, "dropped entry's bytes and descriptor held");
	fc_entry_put(held);
	t_assert(st.mem_bytes == 20 && st.fds == 2 && !fd_open(fd) && forgot == 2 &&
		 forgot_fd == fd, "freed and closed with the last reference");
	/* Destroyed under a response: the response frees it, the engine (gone
	 * first) is not told. */
	held = filecache_find(c, dir, 0, "f2", &fresh);
	fc_entry_get(held);
	fd = held->t.fd;
	filecache_destroy(c);
	t_assert(fd_open(fd) && !memcmp(held->body, "0123456789", 10) && forgot == 2,
		 "outlives the cache");
	fc_entry_put(held);
	t_assert(!fd_open(fd) && forgot == 2, "closed by the response");
	for (int i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		unlinkat(dir, name, 0);
	}
	close(dir);
	rmdir(tmpl);
}

int main(void)
{
	iplimit();
	ipkey();
	log_line();
	kinds();
	filecache();
	printf("test_serve_parts: ok\n");
	return 0;
}
