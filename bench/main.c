/* SPDX-License-Identifier: MIT */
/*
 * kite-bench: Google Benchmark families for kite (see bench/README.md).
 * This file sets up what must precede every row: GnuTLS's
 * own kTLS switch (for the gnutls_ktls rows), the run's context (kernel,
 * versions, what kTLS this kernel has) and the registration of the families.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench.h"
#include "config.h"

const char *bench_gnutls_ktls_config = "not set up";
bool bench_gnutls_ktls_switch_on;

/* The default system configuration file of Debian's GnuTLS
 * (gnutls-cli --list-config: system-config). */
#define GNUTLS_SYSTEM_CONFIG "/etc/gnutls/config"
#define REEXEC_MARK "KITE_BENCH_GNUTLS_CONFIG"

/* Does a GnuTLS configuration file turn kTLS on ("ktls = true")? */
static bool config_has_ktls(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[256];
	bool on = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		char *p = line, *q;

		while (isspace((unsigned char)*p))
			p++;
		if (strncmp(p, "ktls", 4))
			continue;
		q = strchr(p, '=');
		if (!q)
			continue;
		for (q++; isspace((unsigned char)*q); q++)
			;
		on = !strncmp(q, "true", 4);
	}
	fclose(f);
	return on;
}

/*
 * GnuTLS 3.7 reads its configuration once, when the library is loaded, from
 * GNUTLS_SYSTEM_PRIORITY_FILE or /etc/gnutls/config; its kTLS switch is
 * "[global] ktls = true" there and nowhere else (no per-session flag). So:
 * if neither is set, write that section to a memfd and re-execute this
 * program with GNUTLS_SYSTEM_PRIORITY_FILE=/proc/self/fd/N. A system
 * configuration file is never overridden (it may carry policy).
 */
static void gnutls_ktls_switch(char **argv, bool want)
{
	static char desc[512];
	const char *env = getenv("GNUTLS_SYSTEM_PRIORITY_FILE");
	const char *mark = getenv(REEXEC_MARK);
	static const char section[] = "[global]\nktls = true\n";
	char path[64];
	int fd;

	if (env && mark) {
		snprintf(desc, sizeof(desc),
			 "[global] ktls = true in GNUTLS_SYSTEM_PRIORITY_FILE (written by kite-bench)");
		bench_gnutls_ktls_switch_on = config_has_ktls(env);
		unsetenv(REEXEC_MARK);
	} else if (env) {
		bench_gnutls_ktls_switch_on = config_has_ktls(env);
		snprintf(desc, sizeof(desc), "GNUTLS_SYSTEM_PRIORITY_FILE=%s %s ktls = true", env,
			 bench_gnutls_ktls_switch_on ? "has" : "lacks");
	} else if (!want) {
		snprintf(desc, sizeof(desc), "--gnutls-ktls=off");
	} else if (!access(GNUTLS_SYSTEM_CONFIG, F_OK)) {
		bench_gnutls_ktls_switch_on = config_has_ktls(GNUTLS_SYSTEM_CONFIG);
		snprintf(desc, sizeof(desc), "%s %s", GNUTLS_SYSTEM_CONFIG,
			 bench_gnutls_ktls_switch_on
				 ? "has ktls = true"
				 : "exists without ktls = true in [global] (kite-bench does not override it)");
	} else {
		/* No CLOEXEC: the descriptor must survive the exec. */
		fd = memfd_create("kite-bench-gnutls-config", 0);
		if (fd >= 0 && write(fd, section, sizeof(section) - 1) == sizeof(section) - 1) {
			snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
			setenv("GNUTLS_SYSTEM_PRIORITY_FILE", path, 1);
			setenv(REEXEC_MARK, "1", 1);
			execv("/proc/self/exe", argv);
			unsetenv("GNUTLS_SYSTEM_PRIORITY_FILE");
			unsetenv(REEXEC_MARK);
		}
		snprintf(desc, sizeof(desc), "could not apply [global] ktls = true: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	bench_gnutls_ktls_config = desc;
}

static void register_all(bool quick)
{
	bench_cipher_register(quick);
	bench_socket_register(quick);
	bench_handshake_register(quick);
}

/* The value of the first line of path starting with key, unquoted. */
static bool read_field(const char *path, const char *key, char *out, size_t len)
{
	FILE *f = fopen(path, "r");
	char line[512];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *v;

		if (strncmp(line, key, strlen(key)))
			continue;
		v = line + strlen(key);
		v += strspn(v, " \t:\"");
		v[strcspn(v, "\"\n")] = 0;
		snprintf(out, len, "%s", v);
		found = true;
	}
	fclose(f);
	return found;
}

static void add_context(void)
{
	const struct kite_caps *caps = kite_caps_get();
	const char *uml = getenv("KITE_IN_UML");
	struct utsname u;
	char buf[512];
	int cpu[2], n = 0;

	if (read_field("/etc/os-release", "PRETTY_NAME=", buf, sizeof(buf)))
		kb_context("os", buf);
	if (read_field("/proc/cpuinfo", "model name", buf, sizeof(buf)))
		kb_context("cpu", buf);
	kb_context("benchmark", KITE_BENCH_BENCHMARK_VERSION);
	if (!uname(&u)) {
		snprintf(buf, sizeof(buf), "%s %s %s", u.sysname, u.release, u.machine);
		kb_context("kernel", buf);
	}
	/* uml-run sets KITE_IN_UML=1: kTLS is real there, its crypto generic C. */
	kb_context("environment", uml && !strcmp(uml, "1")
		   ? "User-Mode Linux (real kTLS, generic-C kernel crypto: not a speed claim)"
		   : "native kernel");
	kb_context("kite", KITE_VERSION);
	kb_context("gnutls", gnutls_check_version(NULL));
	kb_context("ktls", caps->ulp_reason);
	for (int c = 0; c < BENCH_NCIPHERS; c++) {
		const struct bench_cipher *bc = &bench_ciphers[c];

		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "%s%s: %s", c ? "; " : "", bc->name,
			      caps->offload[KITE_TLS13][bc->id][KITE_TX] ? "no" : "yes");
	}
	kb_context("ktls_tls13_tx", buf);
	kb_context("gnutls_ktls_switch", bench_gnutls_ktls_config);
	if (bench_cpus(cpu) == 2)
		snprintf(buf, sizeof(buf), "sender on CPU %d, receiver/server on CPU %d", cpu[0], cpu[1]);
	else
		snprintf(buf, sizeof(buf), "one CPU: sender and receiver share it (not pinned)");
	kb_context("pinning", buf);
}

static const char usage[] =
	"usage: kite-bench [--quick] [--progress] [--gnutls-ktls=off] [--benchmark_* flags]\n"
	"  --quick            the CI profile: transfers up to 1 MiB, handshakes with one\n"
	"                     cipher, --benchmark_min_time=0.01 unless given: seconds\n"
	"  --progress         a line on stderr as each row starts (default when stderr\n"
	"                     is a terminal and stdout is not)\n"
	"  --gnutls-ktls=off  do not turn GnuTLS's own kTLS on (gnutls_ktls rows skip)\n"
	"Rows this kernel or a library cannot run say \"skipped: why\"; rows that go\n"
	"wrong say \"FAILED: why\" and the exit status is 1. Examples of Google\n"
	"Benchmark's flags: --benchmark_filter=kite_ktls --benchmark_repetitions=3\n"
	"--benchmark_out=run.json --benchmark_out_format=json (for bench/report).\n\n";

int main(int argc, char **argv)
{
	bool gnutls_ktls = true;
	int n = 1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--gnutls-ktls=off")) {
			gnutls_ktls = false;
			continue;
		}
		if (!strcmp(argv[i], "--gnutls-ktls=on"))
			continue;
		argv[n++] = argv[i];
	}
	argv[n] = NULL;
	argc = n;
	gnutls_ktls_switch(argv, gnutls_ktls);
	add_context();
	return kb_main(argc, argv, usage, register_all);
}
