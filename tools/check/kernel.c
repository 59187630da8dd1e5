/* SPDX-License-Identifier: MIT */
/*
 * kite-check kernel: the running kernel's config, tcp_available_ulp and the
 * tls module, gathered once (kernel_load) and used by every subcommand to
 * name fixes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"


static bool module_listed(const char *path, const char *rel)
{
	char *text = NULL;
	bool found = false;

	if (read_file(path, &text))
		return false;
	for (char *line = strtok(text, "\n"); line && !found; line = strtok(NULL, "\n"))
		found = !strcmp(line, rel);
	free(text);
	return found;
}

static enum kc_module tls_module_state(struct kc_kernel *k)
{
	char path[512], *mods = NULL;
	static const char *const ext[] = {".ko", ".ko.xz", ".ko.zst", ".ko.gz"};

	if (!read_file("/proc/modules", &mods)) {
		bool loaded = !strncmp(mods, "tls ", 4) || strstr(mods, "\ntls ");

		free(mods);
		if (loaded)
			return MOD_LOADED;
	}
	if (k->have_config && !strcmp(config_get(&k->config, "CONFIG_TLS"), "y"))
		return MOD_BUILTIN;
	snprintf(path, sizeof(path), "/lib/modules/%s/modules.builtin", k->uts.release);
	if (module_listed(path, "kernel/net/tls/tls.ko"))
		return MOD_BUILTIN;
	for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
		snprintf(path, sizeof(path), "/lib/modules/%s/kernel/net/tls/tls%s", k->uts.release,
			 ext[i]);
		if (access(path, F_OK) == 0)
			return MOD_AVAILABLE;
	}
	if (k->have_config)
		return MOD_ABSENT;
	/* No config and no module tree: modules we cannot see, if any; no
	 * /proc/modules means a kernel without module support. */
	return access("/proc/modules", F_OK) == 0 ? MOD_UNKNOWN : MOD_ABSENT;
}

void kernel_load(struct kc_report *r, struct kc_kernel *k)
{
	const char *path = kc_str(r, "/boot/config-%s", k->uts.release);
	char *text = NULL;

	if (!read_gzip("/proc/config.gz", &text)) {
		k->config_path = "/proc/config.gz";
	} else if (!read_file(path, &text)) {
		k->config_path = path;
	}
	if (text) {
		config_parse(&k->config, text);
		/* An empty or foreign file is no config at all. */
		k->have_config = k->config.n > 0;
		if (!k->have_config) {
			config_free(&k->config);
			k->config_path = NULL;
		}
	}
	k->arch = config_arch(&k->config, k->uts.machine);
	k->tls_module = tls_module_state(k);
	k->ulp_err = read_line("/proc/sys/net/ipv4/tcp_available_ulp", k->ulp, sizeof(k->ulp));
}

/* The one fix for "no TLS ULP" (setsockopt(TCP_ULP, "tls") answered err). */
const char *ulp_fix(struct kc_report *r, const struct kc_kernel *k, int err)
{
	const char *tls = k->have_config ? config_get(&k->config, "CONFIG_TLS") : NULL;

	switch (-err) {
	case ENOENT:
		if (k->tls_module == MOD_AVAILABLE || (tls && !strcmp(tls, "m")))
			return "modprobe tls";
		if (tls && !strcmp(tls, "n")) /* the same words as the config check's fix */
			return "CONFIG_TLS not set: rebuild with kernel-config/ktls.config";
		if (k->tls_module == MOD_ABSENT)
			return "no tls module and none built in: rebuild the kernel with "
			       "kernel-config/ktls.config (CONFIG_TLS)";
		return "modprobe tls; if there is no tls module, rebuild the kernel with "
		       "kernel-config/ktls.config (CONFIG_TLS)";
	case EPERM:
		return "allow setsockopt(TCP_ULP) in the seccomp filter or LSM policy that denies it";
	case ENOPROTOOPT:
		return "upgrade the kernel: kTLS needs Linux >= 4.13 (TX), >= 4.17 (RX)";
	default:
		return kc_str(r, "setsockopt(TCP_ULP, \"tls\") failed with %s: see dmesg",
			      strerror(-err));
	}
}


int cmd_kernel(struct kc_report *r, struct kc_kernel *k)
{
	static const char *const module_words[] = {
		[MOD_UNKNOWN] = "unknown (no config, no /lib/modules for this kernel)",
		[MOD_BUILTIN] = "built in",
		[MOD_LOADED] = "loaded",
		[MOD_AVAILABLE] = "module present, not loaded",
		[MOD_ABSENT] = "neither built in nor a module",
	};
	const char *fix = ulp_fix(r, k, -ENOENT);
	bool ulp = !k->ulp_err && has_word(k->ulp, "tls");
	bool stat = access("/proc/net/tls_stat", F_OK) == 0;

	kc_add(r, &(struct kc_check){
		.section = "kernel", .id = "kernel.config", .name = "kernel config",
		.status = k->have_config ? KC_OK : KC_UNKNOWN, .level = KC_LIMIT,
		.value = k->config_path,
		.detail = k->have_config ? kc_str(r, "read %s (%s)", k->config_path, k->arch)
			: kc_str(r, "neither /proc/config.gz nor /boot/config-%s; the options are "
				    "not checked", k->uts.release),
		.fix = "enable CONFIG_IKCONFIG_PROC, or install the kernel's config as "
		       "/boot/config-$(uname -r); kite-check offload probes anyway",
	});
	if (k->have_config) {
		struct kc_fragment frags[3];
		size_t n = 0;
		const char *names[] = {"ktls", "io_uring", "uml"}, *err;
		size_t want = strcmp(k->arch, "um") ? 2 : 3;

		for (size_t i = 0; i < want; i++) {
			if (fragment_load(r, &frags[n], names[i], &err)) {
				r->error = err;
				break;
			}
			n++;
		}
		check_fragments(r, "kernel", frags, n, &k->config, k->arch);
		for (size_t i = 0; i < n; i++)
			fragment_free(&frags[i]);
	}
	kc_add(r, &(struct kc_check){
		.section = "kernel", .id = "kernel.ulp", .name = "tcp_available_ulp",
		.status = k->ulp_err ? KC_UNKNOWN : ulp ? KC_OK : KC_MISSING, .level = KC_FALLBACK,
		.value = k->ulp_err ? NULL : k->ulp,
		.detail = k->ulp_err ? kc_str(r, "cannot read /proc/sys/net/ipv4/tcp_available_ulp: %s",
					      strerror(-k->ulp_err))
			: ulp ? kc_str(r, "\"%s\": the tls ULP is registered", k->ulp)
			: kc_str(r, "\"%s\": no tls ULP registered", k->ulp),
		.fix = k->ulp_err ? "mount /proc (and enable CONFIG_PROC_SYSCTL)" : fix,
	});
	kc_add(r, &(struct kc_check){
		.section = "kernel", .id = "kernel.module.tls", .name = "tls module",
		.status = k->tls_module == MOD_BUILTIN || k->tls_module == MOD_LOADED ? KC_OK
			: k->tls_module == MOD_UNKNOWN ? KC_UNKNOWN : KC_MISSING,
		.level = KC_FALLBACK, .value = module_words[k->tls_module],
		.detail = k->tls_module == MOD_AVAILABLE
			? "present but not loaded: kite loads it on first use only with CAP_NET_ADMIN"
			: module_words[k->tls_module],
		.fix = fix,
	});
	kc_add(r, &(struct kc_check){
		.section = "kernel", .id = "kernel.tls_stat", .name = "/proc/net/tls_stat",
		.status = stat ? KC_OK : KC_MISSING, .level = KC_FALLBACK,
		.value = stat ? "present" : "absent",
		.detail = stat ? "kTLS counters present (kTLS is initialised)"
			       : "absent: kTLS is not initialised in this kernel",
		.fix = fix,
	});
	return 0;
}
