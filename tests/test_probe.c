/* SPDX-License-Identifier: MIT */
/*
 * The capability probe against ground truth the kernel publishes elsewhere:
 * /proc/sys/net/ipv4/tcp_available_ulp lists "tls" once the module is in,
 * and /proc/net/tls_stat exists exactly when it is. On this project's CI
 * host (CONFIG_TLS not set) the probe must say kTLS is unavailable and why;
 * inside UML (KITE_REQUIRE_KTLS=1) every AEAD kite offloads must be there.
 *
 * Where kTLS exists it also asserts the kernel behaviour kite's switches
 * rely on, as the kernel version it runs on predicts: TLS_TX_ZEROCOPY_RO is
 * accepted (Linux >= 5.19) and TLS_RX_EXPECT_NO_PAD too (>= 6.0), and bytes
 * sent through a kTLS TX socket with zerocopy sendfile arrive intact at a
 * kTLS RX socket expecting no padding, with no padding violation and no
 * decryption error counted in /proc/net/tls_stat.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common.h"
#include "kite-private.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

static bool ulp_listed(void)
{
	char buf[256] = "";
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");

	if (!f)
		return false;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	for (char *t = strtok(buf, " \n"); t; t = strtok(NULL, " \n"))
		if (!strcmp(t, "tls"))
			return true;
	return false;
}

static void *probe_thread(void *arg)
{
	(void)arg;
	return (void *)kite_caps_get();
}

/* Linux >= 6.14 can rekey; only used to cross-check the probe here. */
static bool kernel_at_least(int maj, int min)
{
	struct utsname u;
	int a = 0, b = 0;

	if (uname(&u) || sscanf(u.release, "%d.%d", &a, &b) != 2)
		return false;
	return a > maj || (a == maj && b >= min);
}

/* Both ends of a TCP pair in the kernel with the same (all-zero) TLS 1.3
 * AES-128-GCM key: fds[0] TX, fds[1] RX. */
static void ktls_pair(int fds[2])
{
	static const char ulp[] = "tls";
	static const uint8_t zero[16], iv[12] = {1};
	const struct kite_keys k = {.key = zero, .key_len = 16, .iv = iv, .iv_len = 12};
	union kite_crypto_info ci;
	int size = kite_crypto_info_build(&ci, KITE_TLS13, KITE_AES_128_GCM, &k);

	t_assert(size > 0, "crypto_info: %d", size);
	t_tcp_pair(fds);
	for (int i = 0; i < 2; i++)
		t_assert(!setsockopt(fds[i], IPPROTO_TCP, TCP_ULP, ulp, sizeof(ulp)), "TCP_ULP: %s",
			 strerror(errno));
	t_assert(!setsockopt(fds[0], SOL_TLS, TLS_TX, &ci, (socklen_t)size), "TLS_TX: %s",
		 strerror(errno));
	t_assert(!setsockopt(fds[1], SOL_TLS, TLS_RX, &ci, (socklen_t)size), "TLS_RX: %s",
		 strerror(errno));
}

/* setsockopt(SOL_TLS, opt, 1): 0 or -errno; on success getsockopt must say 1. */
static int switch_on(int fd, int opt, const char *name)
{
	int one = 1, v = 0;
	socklen_t len = sizeof(v);

	if (setsockopt(fd, SOL_TLS, opt, &one, sizeof(one)))
		return -errno;
	t_assert(!getsockopt(fd, SOL_TLS, opt, &v, &len) && v == 1, "%s reads back %d: %s", name,
		 v, strerror(errno));
	return 0;
}

static void kernel_switches(void)
{
	enum { SIZE = 256 << 10 };
	static uint8_t got[SIZE];
	long long nopad0 = t_tls_stat("TlsRxNoPadViolation"), dec0 = t_tls_stat("TlsDecryptError");
	const struct timeval tv = {.tv_sec = 10};
	uint64_t want, have;
	off_t off = 0;
	size_t n = 0;
	int fds[2], file, zc, nopad;

	ktls_pair(fds);
	zc = switch_on(fds[0], TLS_TX_ZEROCOPY_RO, "TLS_TX_ZEROCOPY_RO");
	nopad = switch_on(fds[1], TLS_RX_EXPECT_NO_PAD, "TLS_RX_EXPECT_NO_PAD");
	printf("TLS_TX_ZEROCOPY_RO: %s; TLS_RX_EXPECT_NO_PAD: %s\n", zc ? strerror(-zc) : "accepted",
	       nopad ? strerror(-nopad) : "accepted");
	if (kernel_at_least(5, 19))
		t_assert(zc == 0, "Linux >= 5.19 refuses TLS_TX_ZEROCOPY_RO: %s", strerror(-zc));
	if (kernel_at_least(6, 0))
		t_assert(nopad == 0, "Linux >= 6.0 refuses TLS_RX_EXPECT_NO_PAD: %s",
			 strerror(-nopad));
	else
		t_assert(nopad != 0, "TLS_RX_EXPECT_NO_PAD accepted before Linux 6.0");

	/* Records the kernel's own TX makes are never padded: the no-pad RX
	 * must decrypt every one in place, without a retry. The zerocopy
	 * flag only changes sendfile, hence sendfile, one 16 KiB record at a
	 * time, each read back before the next: the socket buffers never
	 * fill, and a record that never arrives fails after 10 s instead of
	 * hanging. */
	t_assert(!setsockopt(fds[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), "SO_RCVTIMEO: %s",
		 strerror(errno));
	file = t_temp_file(SIZE, 17, &want);
	while (off < SIZE) {
		ssize_t w = sendfile(fds[0], file, &off, 16 << 10);

		t_assert(w > 0, "sendfile into kTLS: %s", w ? strerror(errno) : "0 bytes");
		while (n < (size_t)off) {
			ssize_t r = recv(fds[1], got + n, SIZE - n, 0);

			t_assert(r > 0, "recv from kTLS RX after %zu bytes: %s", n,
				 r ? strerror(errno) : "EOF");
			n += (size_t)r;
		}
	}
	have = t_hash(T_HASH_INIT, got, n);
	t_assert(n == SIZE && have == want, "%zu of %d bytes, hash %s", n, SIZE,
		 have == want ? "ok" : "differs");
	if (nopad == 0)
		t_assert(t_tls_stat("TlsRxNoPadViolation") == nopad0,
			 "unpadded records counted as no-pad violations");
	t_assert(t_tls_stat("TlsDecryptError") == dec0, "decryption errors");
	close(file);
	close(fds[0]);
	close(fds[1]);
}

int main(void)
{
	const struct kite_caps *caps;
	pthread_t th[4];
	void *res[4];
	struct kite_ctx *ctx;
	const char *prio;
	int offloadable = 0;

	/* Concurrent first calls must agree on one probe result. */
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, probe_thread, NULL);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], &res[i]);
	caps = kite_caps_get();
	for (int i = 0; i < 4; i++)
		t_assert(res[i] == caps, "probe result differs between threads");

	printf("ulp: %d (%s)\n", caps->ulp, caps->ulp_reason);
	for (int v = 0; v < KITE_VERSION_COUNT; v++)
		for (int c = 0; c < KITE_CIPHER_COUNT; c++)
			for (int d = 0; d < KITE_DIR_COUNT; d++) {
				printf("%s %-17s %s: %s\n", kite_version_name(v), kite_cipher_name(c),
				       kite_dir_name(d), caps->offload[v][c][d] ? caps->offload_reason[v][c][d] : "ok");
				t_assert(caps->offload_reason[v][c][d] && caps->offload_reason[v][c][d][0],
					 "missing reason");
				offloadable += caps->offload[v][c][d] == 0;
			}
	printf("rekey: %s\nrx no-pad: %s\n", caps->rekey_reason, caps->rx_no_pad_reason);

	if (t_require_ktls() && caps->ulp)
		t_fail("KITE_REQUIRE_KTLS=1 but kernel TLS is unavailable: %s", caps->ulp_reason);

	if (caps->ulp) {
		/* No kTLS: the probe must say so with the kernel's own reason. */
		t_assert(!ulp_listed(), "tcp_available_ulp lists tls but the probe failed");
		t_assert(access("/proc/net/tls_stat", F_OK) != 0, "tls_stat exists but probe failed");
		if (caps->ulp == -ENOENT)
			t_assert(strstr(caps->ulp_reason, "CONFIG_TLS") != NULL, "reason: %s",
				 caps->ulp_reason);
		t_assert(offloadable == 0, "%d combinations offloadable without the ULP", offloadable);
		t_assert(caps->rekey != 0 && caps->rx_no_pad != 0, "rekey/no-pad without kTLS");
	} else {
		t_assert(ulp_listed(), "probe succeeded but tcp_available_ulp lacks tls");
		t_assert(t_tls_stat("TlsCurrTxSw") >= 0, "no /proc/net/tls_stat with kTLS loaded");
		/* The six combinations every kTLS kernel since 5.11 offloads. */
		for (int v = 0; v < KITE_VERSION_COUNT; v++)
			for (int c = 0; c <= KITE_CHACHA20_POLY1305; c++)
				if (!t_kernel_offloads(v, c) && t_require_ktls())
					t_fail("%s %s not offloadable: %s", kite_version_name(v),
					       kite_cipher_name(c), caps->offload_reason[v][c][KITE_TX]);
		if (kernel_at_least(6, 14))
			t_assert(caps->rekey == 0, "Linux >= 6.14 should rekey: %s", caps->rekey_reason);
		else
			t_assert(caps->rekey == -EBUSY, "rekey %d on Linux < 6.14", caps->rekey);
		if (kernel_at_least(6, 0))
			t_assert(caps->rx_no_pad == 0, "no-pad: %s", caps->rx_no_pad_reason);
		if (kernel_at_least(5, 19))
			t_assert(caps->tx_zerocopy_ro == 0, "zerocopy: %s", caps->tx_zerocopy_ro_reason);
		kernel_switches();
	}

	/* The default priority holds exactly the ciphers the kernel offloads
	 * (or, with none, the AEADs kite would offload elsewhere). */
	t_ok(kite_ctx_create(&ctx, KITE_SERVER));
	prio = kite_ctx_priority(ctx);
	printf("default priority: %s\n", prio);
	/* Every AEAD but a CCM the kernel cannot take (GnuTLS has no fast
	 * userspace CCM); the server's order, the offloadable ones first. */
	const char *last_off = NULL, *first_soft = NULL;

	for (int c = 0; c < KITE_CIPHER_COUNT; c++) {
		char tok[40];
		bool off = t_kernel_offloads(KITE_TLS13, c) || t_kernel_offloads(KITE_TLS12, c);
		bool want = c != KITE_AES_128_CCM || off;
		const char *at;

		snprintf(tok, sizeof(tok), ":+%s", kite_cipher_name(c));
		at = strstr(prio, tok);
		t_assert((at != NULL) == want, "%s %s the default priority", kite_cipher_name(c),
			 at ? "wrongly in" : "missing from");
		if (at && off && (!last_off || at > last_off))
			last_off = at;
		if (at && !off && (!first_soft || at < first_soft))
			first_soft = at;
	}
	t_assert(!last_off || !first_soft || last_off < first_soft,
		 "a cipher the kernel cannot offload ranks before one it can: %s", prio);
	bool server_order = strstr(prio, "%SERVER_PRECEDENCE") != NULL;

	t_assert(server_order, "no server cipher order");
	t_assert(strstr(prio, "-CIPHER-ALL") != NULL, "CBC ciphers not excluded");
	kite_ctx_destroy(ctx);
	return 0;
}
