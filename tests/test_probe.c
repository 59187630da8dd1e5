/* SPDX-License-Identifier: MIT */
/*
 * The capability probe against ground truth the kernel publishes elsewhere:
 * /proc/sys/net/ipv4/tcp_available_ulp lists "tls" once the module is in,
 * and /proc/net/tls_stat exists exactly when it is. On this project's CI
 * host (CONFIG_TLS not set) the probe must say kTLS is unavailable and why;
 * inside UML (KITE_REQUIRE_KTLS=1) every AEAD kite offloads must be there.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common.h"

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
	}

	/* The default priority holds exactly the ciphers the kernel offloads
	 * (or, with none, the AEADs kite would offload elsewhere). */
	t_ok(kite_ctx_create(&ctx, KITE_SERVER));
	prio = kite_ctx_priority(ctx);
	printf("default priority: %s\n", prio);
	for (int c = 0; c < KITE_CIPHER_COUNT; c++) {
		char tok[40];
		bool in, want = caps->ulp ? c != KITE_AES_128_CCM
				       : t_kernel_offloads(KITE_TLS13, c) || t_kernel_offloads(KITE_TLS12, c);

		snprintf(tok, sizeof(tok), ":+%s", kite_cipher_name(c));
		in = strstr(prio, tok) != NULL;
		t_assert(in == want, "%s %s the default priority", kite_cipher_name(c),
			 in ? "wrongly in" : "missing from");
	}
	t_assert(strstr(prio, "-CIPHER-ALL") != NULL, "CBC ciphers not excluded");
	kite_ctx_destroy(ctx);
	return 0;
}
