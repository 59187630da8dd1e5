/* SPDX-License-Identifier: MIT */
/*
 * heap-probe - an LD_PRELOAD helper for soak.py: lets the test see how much
 * heap a running kite-serve really holds.
 *
 * glibc malloc keeps freed memory in its arenas, so VmRSS after a burst of
 * connections stays near the burst's high-water mark although every block
 * is free; only malloc_trim() gives the free pages back. With
 * KITE_HEAP_PROBE_OUT=FILE in its environment, the process gets one extra
 * thread that waits for SIGUSR2 (blocked in every other thread: the
 * constructor blocks it before main() and threads inherit the mask) and
 * then calls malloc_trim(0) and appends one line to FILE:
 *
 *   probe=N inuse=BYTES mmap=BYTES arena=BYTES
 *
 * (mallinfo2: bytes in allocated blocks, of which mmapped ones, and the
 * arenas' size.) The thread opens FILE only while writing, so the process's
 * descriptor count is unchanged between probes. Nothing of the server's
 * own code is replaced; without the variable the library does nothing.
 */
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *out_path;

static void *probe_main(void *arg)
{
	sigset_t set;
	unsigned long n = 0;

	(void)arg;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	for (;;) {
		struct mallinfo2 mi;
		char line[160];
		int sig, fd, len;

		if (sigwait(&set, &sig))
			continue;
		malloc_trim(0);
		mi = mallinfo2();
		len = snprintf(line, sizeof(line), "probe=%lu inuse=%zu mmap=%zu arena=%zu\n", ++n,
			       mi.uordblks + mi.hblkhd, mi.hblkhd, mi.arena);
		fd = open(out_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0) {
			if (write(fd, line, (size_t)len) != len) {
				/* the test sees the missing line */
			}
			close(fd);
		}
	}
	return NULL;
}

__attribute__((constructor)) static void heap_probe_init(void)
{
	sigset_t set;
	pthread_t th;

	out_path = getenv("KITE_HEAP_PROBE_OUT");
	if (!out_path || !*out_path)
		return;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (pthread_create(&th, NULL, probe_main, NULL) == 0)
		pthread_detach(th);
}
