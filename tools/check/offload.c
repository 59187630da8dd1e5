/* SPDX-License-Identifier: MIT */
/*
 * kite-check offload: libkite's live probe, each version x cipher x
 * direction, rekey and no-pad RX, with the fix for each refusal.
 */
#include <errno.h>
#include <string.h>

#include "check.h"

/* First Linux release that offloads this combination (from the kernel's
 * history; used only to word a fix, never to decide). */
static const char *first_release(enum kite_version v, enum kite_cipher c, enum kite_dir d)
{
	if (c == KITE_CHACHA20_POLY1305)
		return "5.11";
	if (c == KITE_AES_128_CCM)
		return "5.2";
	if (v == KITE_TLS13 || c == KITE_AES_256_GCM)
		return "5.1";
	return d == KITE_RX ? "4.17" : "4.13";
}

static const char *cipher_fix(struct kc_report *r, const struct kc_kernel *k,
			      enum kite_version v, enum kite_cipher c, enum kite_dir d, int err)
{
	static const char *const option[] = {
		[KITE_AES_128_GCM] = "CONFIG_CRYPTO_GCM", [KITE_AES_256_GCM] = "CONFIG_CRYPTO_GCM",
		[KITE_CHACHA20_POLY1305] = "CONFIG_CRYPTO_CHACHA20POLY1305",
		[KITE_AES_128_CCM] = "CONFIG_CRYPTO_CCM",
	};
	static const char *const module[] = {
		[KITE_AES_128_GCM] = "gcm", [KITE_AES_256_GCM] = "gcm",
		[KITE_CHACHA20_POLY1305] = "chacha20poly1305", [KITE_AES_128_CCM] = "ccm",
	};
	const char *have = k->have_config ? config_get(&k->config, option[c]) : NULL;

	switch (-err) {
	case ENOENT:
	case ENOPKG: /* the kernel found no implementation of the AEAD */
		if (have && !strcmp(have, "m"))
			return kc_str(r, "modprobe %s", module[c]);
		if (have && !strcmp(have, "n"))
			return kc_str(r, "%s not set: rebuild with kernel-config/ktls.config", option[c]);
		return kc_str(r, "modprobe %s; if there is no such module, rebuild the kernel with "
				 "kernel-config/ktls.config (%s)", module[c], option[c]);
	case EINVAL:
	case EOPNOTSUPP:
	case ENOPROTOOPT:
		return kc_str(r, "upgrade the kernel: %s %s %s needs Linux >= %s", kite_version_name(v),
			      kite_cipher_name(c), kite_dir_name(d), first_release(v, c, d));
	case EPERM:
		return "allow setsockopt(SOL_TLS) in the seccomp filter or LSM policy that denies it";
	default:
		return kc_str(r, "the kernel answered %s: see dmesg", strerror(-err));
	}
}

/* "TLS1.3" -> "tls13", "AES-128-GCM" -> "aes-128-gcm": parts of a check id. */
static const char *lower_id(struct kc_report *r, const char *s)
{
	char *o = (char *)kc_str(r, "%s", s), *q = o;

	for (const char *p = o; *p; p++)
		if (*p != '.')
			*q++ = *p >= 'A' && *p <= 'Z' ? (char)(*p - 'A' + 'a') : *p;
	*q = 0;
	return o;
}

int cmd_offload(struct kc_report *r, struct kc_kernel *k)
{
	const struct kite_caps *caps = kite_caps_get();
	const char *ufix = caps->ulp ? ulp_fix(r, k, caps->ulp) : NULL;
	const char *rekey_fix, *nopad_fix, *zc_fix;

	kc_add(r, &(struct kc_check){
		.section = "offload", .id = "offload.ulp", .name = "TCP_ULP \"tls\"",
		.status = caps->ulp ? KC_MISSING : KC_OK, .level = KC_FALLBACK,
		.value = errno_name(caps->ulp),
		.detail = caps->ulp_reason, .fix = ufix,
	});
	for (int v = 0; v < KITE_VERSION_COUNT; v++)
		for (int c = 0; c < KITE_CIPHER_COUNT; c++)
			for (int d = 0; d < KITE_DIR_COUNT; d++) {
				int e = caps->offload[v][c][d];

				kc_add(r, &(struct kc_check){
					.section = "offload",
					.id = kc_str(r, "offload.%s.%s.%s",
						     lower_id(r, kite_version_name(v)),
						     lower_id(r, kite_cipher_name(c)), kite_dir_name(d)),
					.name = kc_str(r, "%s %s %s", kite_version_name(v),
						       kite_cipher_name(c), kite_dir_name(d)),
					.status = e ? KC_MISSING : KC_OK, .level = KC_FALLBACK,
					.value = errno_name(e),
					.detail = caps->offload_reason[v][c][d],
					.fix = caps->ulp ? ufix : e ? cipher_fix(r, k, v, c, d, e) : NULL,
				});
			}
	/* rekey and no-pad are probed on TLS 1.3 AES-128-GCM (lib/caps.c). */
	if (caps->ulp)
		rekey_fix = nopad_fix = zc_fix = ufix;
	else {
		int tx = caps->offload[KITE_TLS13][KITE_AES_128_GCM][KITE_TX];
		int rx = caps->offload[KITE_TLS13][KITE_AES_128_GCM][KITE_RX];

		rekey_fix = caps->rekey == -EBUSY ? "upgrade the kernel: kTLS rekey needs Linux >= 6.14"
			: tx ? cipher_fix(r, k, KITE_TLS13, KITE_AES_128_GCM, KITE_TX, tx)
			: kc_str(r, "the kernel answered %s: see dmesg", strerror(-caps->rekey));
		nopad_fix = rx ? cipher_fix(r, k, KITE_TLS13, KITE_AES_128_GCM, KITE_RX, rx)
			: "upgrade the kernel: TLS_RX_EXPECT_NO_PAD needs Linux >= 6.0";
		zc_fix = tx ? cipher_fix(r, k, KITE_TLS13, KITE_AES_128_GCM, KITE_TX, tx)
			: "upgrade the kernel: TLS_TX_ZEROCOPY_RO needs Linux >= 5.19";
	}
	kc_add(r, &(struct kc_check){
		.section = "offload", .id = "offload.rekey", .name = "TLS 1.3 rekey",
		.status = caps->rekey ? KC_MISSING : KC_OK, .level = KC_LIMIT,
		.value = errno_name(caps->rekey),
		.detail = caps->rekey_reason, .fix = rekey_fix,
	});
	kc_add(r, &(struct kc_check){
		.section = "offload", .id = "offload.rx_no_pad", .name = "RX no-pad (TLS 1.3)",
		.status = caps->rx_no_pad ? KC_MISSING : KC_OK, .level = KC_SLOW,
		.value = errno_name(caps->rx_no_pad),
		.detail = caps->rx_no_pad_reason, .fix = nopad_fix,
	});
	/* Only a NIC with TLS offload sends without the copy, and files must
	 * not change while sent: a limit, never a fallback. Both switches are
	 * off until a context asks (KITE_KTLS_TX_ZEROCOPY_RO). */
	kc_add(r, &(struct kc_check){
		.section = "offload", .id = "offload.tx_zerocopy_ro",
		.name = "TX zerocopy-ro (NIC offload)",
		.status = caps->tx_zerocopy_ro ? KC_MISSING : KC_OK, .level = KC_LIMIT,
		.value = errno_name(caps->tx_zerocopy_ro),
		.detail = caps->tx_zerocopy_ro_reason, .fix = zc_fix,
	});
	return 0;
}
