/* SPDX-License-Identifier: MIT */
/*
 * systemd's side of kite-serve (built with libsystemd): sockets handed in
 * by socket activation, and readiness / reload / stop notifications for
 * Type=notify units. systemd-none.c is the same interface without it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>

#include <systemd/sd-daemon.h>

#include "deploy.h"

int systemd_listeners(int *fds, unsigned max)
{
	/* 1: unset LISTEN_PID/LISTEN_FDS, so nothing this process starts
	 * later takes the sockets for its own. */
	int n = sd_listen_fds(1);

	if (n <= 0)
		return n;
	if ((unsigned)n > max) {
		fprintf(stderr, "kite-serve: systemd handed in %d sockets; at most %u are served\n",
			n, max);
		return -E2BIG;
	}
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		int fl = fcntl(fd, F_GETFL);

		if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
			fprintf(stderr, "kite-serve: descriptor %d from systemd is not a listening "
				"stream socket (ListenStream= in the .socket unit)\n", fd);
			return -EINVAL;
		}
		/* Used as it is, but the engines expect a non-blocking,
		 * close-on-exec listener like the ones kite binds itself. */
		if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) || fcntl(fd, F_SETFD, FD_CLOEXEC))
			return -errno;
		fds[i] = fd;
	}
	return n;
}

void systemd_notify(const char *state)
{
	/* Without NOTIFY_SOCKET this does nothing; a failure to tell the
	 * manager is no reason to stop serving. */
	(void)sd_notify(0, state);
}
