/* SPDX-License-Identifier: MIT */
/*
 * Kernel capability probe: learn what this kernel can offload by trying it
 * on loopback TCP pairs, once per process. Version strings cannot answer
 * this: distributions backport kTLS ciphers, build without CONFIG_TLS or
 * deny the setsockopt by policy. Uses libc directly, not the seam: the probe describes
 * the real kernel; tests that simulate another kernel use kite_caps_set().
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kite-private.h"

/* ABI: the arrays in struct kite_caps have fixed slots. */
_Static_assert(KITE_VERSION_COUNT <= KITE_VERSION_SLOTS && KITE_CIPHER_COUNT <= KITE_CIPHER_SLOTS,
	       "raise no *_SLOTS: add a new struct member instead");

static struct kite_caps caps;
static const struct kite_caps *override;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* Reasons are static strings so that kite_caps stays plain data. */
const char *kite_caps_ulp_reason(int err)
{
	switch (-err) {
	case 0: return "kernel TLS available";
	case ENOENT:
		return "kernel has no TLS ULP: CONFIG_TLS is not set or the tls module "
		       "cannot be loaded (try: modprobe tls)";
	case EPERM: return "setsockopt(TCP_ULP) not permitted (seccomp or LSM policy)";
	case ENOPROTOOPT: return "kernel has no TCP_ULP (Linux < 4.13)";
	default: return "setsockopt(TCP_ULP, \"tls\") failed";
	}
}

static const char *cipher_reason(int err, enum kite_dir d)
{
	switch (-err) {
	case 0: return "offloaded by the kernel";
	case EINVAL:
	case EOPNOTSUPP:
		return d == KITE_RX ? "kernel does not know this cipher/version for RX (too old)"
				    : "kernel does not know this cipher/version (too old)";
	case ENOENT:
	case ENOPKG:
		return "kernel crypto for this AEAD is missing (CONFIG_CRYPTO_GCM/CCM/"
		       "CHACHA20POLY1305 or its module)";
	case ENOPROTOOPT:
		return d == KITE_RX ? "kernel has no kTLS RX (Linux < 4.17)" : "kernel has no kTLS TX";
	case ENOMEM: return "kernel out of memory while probing";
	default: return "kernel refused this cipher";
	}
}

/* A connected loopback TCP pair; kTLS needs TCP, socketpair() won't do. */
static int tcp_pair(int fds[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int l, r = -1;

	fds[0] = fds[1] = -1;
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0)
		return -errno;
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &alen))
		goto out;
	fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof(a)))
		goto out;
	fds[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (fds[1] < 0)
		goto out;
	r = 0;
out:
	if (r) {
		r = -errno;
		if (fds[0] >= 0)
			close(fds[0]);
		fds[0] = -1;
	}
	close(l);
	return r;
}

static int try_set(int fd, enum kite_version v, enum kite_cipher c, int optname)
{
	static const uint8_t zero[32], iv[12] = {1};
	union kite_crypto_info ci;
	struct kite_keys k = {
		.key = zero, .key_len = kite_cipher_key_len(c),
		.iv = iv, .iv_len = v == KITE_TLS13 || c == KITE_CHACHA20_POLY1305 ? 12 : 4,
	};
	int size = kite_crypto_info_build(&ci, v, c, &k);

	if (size < 0)
		return size;
	return setsockopt(fd, SOL_TLS, optname, &ci, (socklen_t)size) ? -errno : 0;
}

static void probe_pair(enum kite_version v, enum kite_cipher c)
{
	static const char ulp[] = "tls";
	int fds[2], r;

	r = tcp_pair(fds);
	if (!r && setsockopt(fds[0], IPPROTO_TCP, TCP_ULP, ulp, sizeof(ulp)))
		r = -errno;
	for (int d = 0; d < KITE_DIR_COUNT; d++) {
		int e = r ? r : try_set(fds[0], v, c, d == KITE_TX ? TLS_TX : TLS_RX);

		caps.offload[v][c][d] = e;
		caps.offload_reason[v][c][d] = r ? kite_caps_ulp_reason(r) : cipher_reason(e, d);
	}
	if (!r && v == KITE_TLS13 && c == KITE_AES_128_GCM) {
		int one = 1;

		/* Linux >= 6.14 takes a second TLS_TX on TLS 1.3 as a key
		 * update; older kernels answer EBUSY. */
		if (caps.offload[v][c][KITE_TX])
			caps.rekey = caps.offload[v][c][KITE_TX];
		else
			caps.rekey = try_set(fds[0], v, c, TLS_TX);
		caps.rekey_reason = caps.rekey == 0 ? "kernel can update kTLS keys"
				    : caps.rekey == -EBUSY
				    ? "kernel cannot update kTLS keys (TLS 1.3 rekey needs Linux >= 6.14)"
				    : "kernel TLS 1.3 offload unavailable, so no rekey";
		caps.rx_no_pad = caps.offload[v][c][KITE_RX] ? caps.offload[v][c][KITE_RX]
			: setsockopt(fds[0], SOL_TLS, TLS_RX_EXPECT_NO_PAD, &one, sizeof(one)) ? -errno : 0;
		caps.rx_no_pad_reason = caps.rx_no_pad == 0 ? "kernel supports TLS_RX_EXPECT_NO_PAD"
					: "no TLS_RX_EXPECT_NO_PAD (needs Linux >= 6.0 and TLS 1.3 RX)";
		/* Linux < 5.19 does not know the option: ENOPROTOOPT. */
		caps.tx_zerocopy_ro = caps.offload[v][c][KITE_TX] ? caps.offload[v][c][KITE_TX]
			: setsockopt(fds[0], SOL_TLS, TLS_TX_ZEROCOPY_RO, &one, sizeof(one)) ? -errno : 0;
		caps.tx_zerocopy_ro_reason = caps.tx_zerocopy_ro == 0
			? "kernel supports TLS_TX_ZEROCOPY_RO"
			: "no TLS_TX_ZEROCOPY_RO (needs Linux >= 5.19)";
	}
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	if (!caps.ulp)
		caps.ulp = r;
}

static void probe(void)
{
	caps.rekey = caps.rx_no_pad = caps.tx_zerocopy_ro = -EOPNOTSUPP;
	caps.tx_zerocopy_ro_reason = caps.rx_no_pad_reason = caps.rekey_reason = "not probed";
	for (int v = 0; v < KITE_VERSION_COUNT; v++)
		for (int c = 0; c < KITE_CIPHER_COUNT; c++)
			probe_pair(v, c);
	caps.ulp_reason = kite_caps_ulp_reason(caps.ulp);
	if (caps.ulp) {
		caps.rekey = caps.rx_no_pad = caps.tx_zerocopy_ro = caps.ulp;
		caps.rekey_reason = caps.rx_no_pad_reason = caps.ulp_reason;
		caps.tx_zerocopy_ro_reason = caps.ulp_reason;
	}
}

const struct kite_caps *kite_caps_get(void)
{
	if (override)
		return override;
	pthread_once(&once, probe);
	return &caps;
}

void kite_caps_set(const struct kite_caps *c)
{
	override = c;
}
