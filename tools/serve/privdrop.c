/* SPDX-License-Identifier: MIT */
/*
 * --user NAME[:GROUP]: kite-serve binds its listeners and opens its keys as
 * root, then becomes NAME for good. The order is the kernel's: setgroups()
 * and setgid() need CAP_SETGID, which setuid() to a non-zero uid takes
 * away, so groups go first and the uid last.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "deploy.h"

int user_resolve(const char *spec, struct serve_user *u, char *err, size_t cap)
{
	char name[64], *group;
	struct passwd *pw;
	struct group *gr;

	if (strlen(spec) >= sizeof(name)) {
		snprintf(err, cap, "--user %s: name too long", spec);
		return -EINVAL;
	}
	snprintf(name, sizeof(name), "%s", spec);
	group = strchr(name, ':');
	if (group)
		*group++ = 0;
	errno = 0;
	pw = getpwnam(name);
	if (!pw) {
		snprintf(err, cap, "--user %s: no such user", name);
		return -ENOENT;
	}
	u->uid = pw->pw_uid;
	u->gid = pw->pw_gid;
	snprintf(u->name, sizeof(u->name), "%s", name);
	if (group && *group) {
		gr = getgrnam(group);
		if (!gr) {
			snprintf(err, cap, "--user %s: no such group %s", spec, group);
			return -ENOENT;
		}
		u->gid = gr->gr_gid;
	}
	if (u->uid == 0) {
		snprintf(err, cap, "--user %s: that is root; name an unprivileged user", spec);
		return -EINVAL;
	}
	return 0;
}

/* After the drop: every id is the target's, no supplementary group, and
 * asking for root back fails. */
static int verify_dropped(const struct serve_user *u, char *err, size_t cap)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg;

	if (getresuid(&ru, &eu, &su) || getresgid(&rg, &eg, &sg) ||
	    ru != u->uid || eu != u->uid || su != u->uid ||
	    rg != u->gid || eg != u->gid || sg != u->gid) {
		snprintf(err, cap, "--user: ids after the drop are not all %u:%u",
			 (unsigned)u->uid, (unsigned)u->gid);
		return -EPERM;
	}
	if (getgroups(0, NULL) != 0) {
		snprintf(err, cap, "--user: supplementary groups remain after the drop");
		return -EPERM;
	}
	/* The saved set-user-ID would let a process switch back: it must be
	 * gone, and so must CAP_SETUID. */
	if (setuid(0) == 0 || seteuid(0) == 0) {
		snprintf(err, cap, "--user: root could be regained after the drop");
		return -EPERM;
	}
	return 0;
}

int user_drop(const struct serve_user *u, char *err, size_t cap)
{
	if (geteuid() != 0) {
		if (geteuid() == u->uid && getegid() == u->gid)
			return 0; /* already that user (systemd's User=) */
		snprintf(err, cap, "--user %s: only root can change user (running as uid %u)",
			 u->name, (unsigned)geteuid());
		return -EPERM;
	}
	/* glibc applies these to every thread of the process. */
	if (setgroups(0, NULL) || setgid(u->gid) || setuid(u->uid)) {
		int r = -errno;

		snprintf(err, cap, "--user %s: %s", u->name, strerror(-r));
		return r;
	}
	return verify_dropped(u, err, cap);
}
