/* SPDX-License-Identifier: MIT */
/* kite-serve built without libsystemd: no socket activation, and the
 * notifications go nowhere (systemd.c is the real one). */
#include <stdio.h>
#include <stdlib.h>

#include "deploy.h"

int systemd_listeners(int *fds, unsigned max)
{
	(void)fds, (void)max;
	if (getenv("LISTEN_FDS"))
		fprintf(stderr, "kite-serve: built without libsystemd: the sockets in LISTEN_FDS "
			"are not used (rebuild with -Dsystemd=enabled)\n");
	return 0;
}

void systemd_notify(const char *state)
{
	(void)state;
}
