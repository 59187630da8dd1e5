/* SPDX-License-Identifier: MIT */
/*
 * Small readers: a whole file, a gzip file (through gzip -dc: /proc/config.gz),
 * one line, one number.
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

extern char **environ;

/* The rest of a stream into a NUL-terminated buffer; closes f. 0 or -errno. */
static int read_stream(FILE *f, char **out)
{
	char *buf = NULL;
	size_t len = 0, cap = 0, got;
	int r = 0;

	do {
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap = cap ? 2 * cap : 16384);

			if (!nb)
				oom();
			buf = nb;
		}
		got = fread(buf + len, 1, cap - len - 1, f);
		len += got;
	} while (got);
	if (ferror(f))
		r = -EIO;
	fclose(f);
	if (r) {
		free(buf);
		return r;
	}
	buf[len] = 0;
	*out = buf;
	return 0;
}

int read_file(const char *path, char **out)
{
	FILE *f = fopen(path, "re");

	*out = NULL;
	return f ? read_stream(f, out) : -errno;
}

/* Decompress with gzip(1) (Essential in Debian) rather than link zlib for
 * one file; 0 or -errno. */
int read_gzip(const char *path, char **out)
{
	char *argv[] = {"gzip", "-dc", "--", (char *)path, NULL};
	posix_spawn_file_actions_t fa;
	int p[2], status = 0, r;
	pid_t pid;
	FILE *f;

	*out = NULL;
	if (access(path, R_OK))
		return -errno;
	if (pipe2(p, O_CLOEXEC))
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	r = -posix_spawnp(&pid, "gzip", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (r) {
		close(p[0]);
		return r;
	}
	f = fdopen(p[0], "r");
	if (!f) {
		r = -errno;
		close(p[0]); /* gzip ends on SIGPIPE */
		waitpid(pid, NULL, 0);
		return r;
	}
	r = read_stream(f, out);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			status = -1;
			break;
		}
	if (!r && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		r = -EIO; /* not gzip, or truncated */
	if (r) {
		free(*out);
		*out = NULL;
	}
	return r;
}

/* First line of a small /proc or /sys file, newline stripped; 0 or -errno. */
int read_line(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "re");
	int r = 0;

	buf[0] = 0;
	if (!f)
		return -errno;
	if (!fgets(buf, (int)size, f))
		r = -EIO;
	fclose(f);
	buf[strcspn(buf, "\n")] = 0;
	return r;
}

int read_long(const char *path, long *v)
{
	char buf[64], *end;
	int r = read_line(path, buf, sizeof(buf));

	if (r)
		return r;
	*v = strtol(buf, &end, 10);
	return end == buf ? -EINVAL : 0;
}

/* Is word w in the space-separated list s? */
bool has_word(const char *s, const char *w)
{
	size_t n = strlen(w);

	for (const char *p = s; (p = strstr(p, w)); p += n)
		if ((p == s || p[-1] == ' ') && (p[n] == 0 || p[n] == ' ' || p[n] == '\n'))
			return true;
	return false;
}
