/* SPDX-License-Identifier: MIT */
/*
 * Fault injection for kite-serve-faults: tools/serve/main.c linked with this
 * file, for tests only (the installed kite-serve has none of it). A
 * constructor reads KITE_FAULTS and, if any rule is given, replaces libkite's
 * syscall seam (struct kite_sys, lib/kite-private.h) with wrappers that fail
 * chosen calls. One line on stderr says what is armed.
 *
 *   KITE_FAULTS = RULE[;RULE]...
 *   RULE        = [~]OP=ERRNO[@N|@N+|@N-M][%P][/K][xC]
 *
 * OP, the call that fails (with -1 and errno, or for io_uring the
 * completion's result turned into -ERRNO):
 *   setsockopt            any setsockopt through the seam, or one of
 *   setsockopt.TCP_ULP    setsockopt.TLS_TX  setsockopt.TLS_RX
 *   getsockopt sendmsg recvmsg sendfile pread
 *   sendmsg.cmsg recvmsg.cmsg  only the calls with a control message: kernel
 *                         TLS records (recvmsg with the record type, and
 *                         close_notify / KeyUpdate sent as typed records);
 *                         plain "sendmsg"/"recvmsg" match these too
 *   cqe.accept cqe.recv cqe.recvmsg cqe.read cqe.splice_in cqe.splice_out
 *   cqe.send cqe.sendmsg  an io_uring completion (enum kite_uop); only
 *                         successful ones are turned into errors, and never
 *                         into EAGAIN, EINTR or ECANCELED: the operation has
 *                         happened, so only a fatal error is a faithful lie
 *   malloc                kite's own malloc/calloc/realloc (-Wl,--wrap, so
 *                         not GnuTLS's or libc's); returns NULL
 * ERRNO: a name (EPIPE, ENOMEM, ...) or a number.
 * Which calls of OP (counted per rule, from 1; all by default):
 *   @N  the Nth only   @N+  the Nth and later   @N-M  the Nth to the Mth
 *   %P  P percent of them, chosen by a hash of the call number (repeatable)
 *   /K  every Kth      xC   at most C failures in all
 * A rule starting with ~ is held: SIGUSR1 arms every held rule, SIGUSR2
 * disarms every rule (a window of failing mallocs while clients run).
 *
 * Example: KITE_FAULTS="setsockopt.TLS_RX=ENOMEM;cqe.splice_out=EPIPE/5"
 *
 * Each rule reports its first three failures on stderr
 * ("kite-serve-faults: sendmsg -> EPIPE (call 7)"), and at exit how many
 * calls it saw and failed, so a test can tell the fault was reached.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "kite-private.h"

enum op {
	OP_SETSOCKOPT, OP_SETSOCKOPT_ULP, OP_SETSOCKOPT_TX, OP_SETSOCKOPT_RX, OP_GETSOCKOPT,
	OP_SENDMSG, OP_RECVMSG, OP_SENDMSG_CMSG, OP_RECVMSG_CMSG, OP_SENDFILE, OP_PREAD,
	OP_CQE_ACCEPT, OP_CQE_RECV, OP_CQE_RECVMSG, OP_CQE_READ, OP_CQE_SPLICE_IN,
	OP_CQE_SPLICE_OUT, OP_CQE_SEND, OP_CQE_SENDMSG,
	OP_MALLOC, OP_COUNT
};

static const char *const op_names[OP_COUNT] = {
	"setsockopt", "setsockopt.TCP_ULP", "setsockopt.TLS_TX", "setsockopt.TLS_RX", "getsockopt",
	"sendmsg", "recvmsg", "sendmsg.cmsg", "recvmsg.cmsg", "sendfile", "pread",
	"cqe.accept", "cqe.recv", "cqe.recvmsg", "cqe.read", "cqe.splice_in",
	"cqe.splice_out", "cqe.send", "cqe.sendmsg",
	"malloc",
};

/* enum kite_uop -> rule op (KITE_UOP_OTHER: none). */
static const int uop_ops[] = {
	[KITE_UOP_ACCEPT] = OP_CQE_ACCEPT, [KITE_UOP_RECV] = OP_CQE_RECV,
	[KITE_UOP_RECVMSG] = OP_CQE_RECVMSG, [KITE_UOP_READ] = OP_CQE_READ,
	[KITE_UOP_SPLICE_IN] = OP_CQE_SPLICE_IN, [KITE_UOP_SPLICE_OUT] = OP_CQE_SPLICE_OUT,
	[KITE_UOP_SEND] = OP_CQE_SEND, [KITE_UOP_SENDMSG] = OP_CQE_SENDMSG,
	[KITE_UOP_OTHER] = -1,
};

static const struct {
	const char *name;
	int err;
} errnos[] = {
	{"EPERM", EPERM}, {"ENOENT", ENOENT}, {"EINTR", EINTR}, {"EIO", EIO}, {"EBADF", EBADF},
	{"EAGAIN", EAGAIN}, {"ENOMEM", ENOMEM}, {"EFAULT", EFAULT}, {"EBUSY", EBUSY},
	{"EEXIST", EEXIST}, {"EINVAL", EINVAL}, {"ENFILE", ENFILE}, {"EMFILE", EMFILE},
	{"ENOSPC", ENOSPC}, {"EPIPE", EPIPE}, {"ENODATA", ENODATA}, {"EPROTO", EPROTO},
	{"EBADMSG", EBADMSG}, {"EMSGSIZE", EMSGSIZE}, {"ENOPROTOOPT", ENOPROTOOPT},
	{"EOPNOTSUPP", EOPNOTSUPP}, {"ECONNABORTED", ECONNABORTED}, {"ECONNRESET", ECONNRESET},
	{"ENOBUFS", ENOBUFS}, {"ENOTCONN", ENOTCONN}, {"ETIMEDOUT", ETIMEDOUT},
	{"EKEYEXPIRED", EKEYEXPIRED}, {"ECANCELED", ECANCELED},
};

#define MAX_RULES 16

struct rule {
	int op;
	int err;
	uint64_t from, to;      /* call numbers, inclusive (1 .. UINT64_MAX) */
	unsigned pct100;        /* 10000: always */
	uint64_t every;         /* 1: every call */
	uint64_t max;           /* failures at most (0: no limit) */
	bool held;
	atomic_bool armed;
	atomic_uint_fast64_t calls, fails;
	char text[64];
};

static struct rule rules[MAX_RULES];
static unsigned nrules;
static bool any_op[OP_COUNT];

static const char *err_name(int err)
{
	for (size_t i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++)
		if (errnos[i].err == err)
			return errnos[i].name;
	return "E?";
}

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void say(const char *msg)
{
	/* write(2), not stdio: malloc may be failing, and a signal handler
	 * must not take stdio's lock. */
	ssize_t r = write(STDERR_FILENO, msg, strlen(msg));

	(void)r;
}

/* Does a rule for op "r" cover a call of op "op"? */
static bool covers(int r, int op)
{
	return r == op || (r == OP_SETSOCKOPT && op >= OP_SETSOCKOPT_ULP && op <= OP_SETSOCKOPT_RX) ||
	       (r == OP_SENDMSG && op == OP_SENDMSG_CMSG) || (r == OP_RECVMSG && op == OP_RECVMSG_CMSG);
}

/* Does this call of op fail? 0, or the errno to fail it with. */
static int should_fail(int op)
{
	if (!any_op[op])
		return 0;
	for (unsigned i = 0; i < nrules; i++) {
		struct rule *r = &rules[i];
		uint64_t n;

		if (!covers(r->op, op))
			continue;
		if (!atomic_load(&r->armed))
			continue;
		n = atomic_fetch_add(&r->calls, 1) + 1;
		if (n < r->from || n > r->to || (n - r->from) % r->every)
			continue;
		if (r->pct100 < 10000 && mix(n ^ (uint64_t)i << 56) % 10000 >= r->pct100)
			continue;
		if (r->max && atomic_load(&r->fails) >= r->max)
			continue;
		n = atomic_fetch_add(&r->fails, 1) + 1;
		if (n <= 3) {
			char msg[160];

			snprintf(msg, sizeof(msg), "kite-serve-faults: %s -> %s (failure %llu)\n",
				 op_names[op], err_name(r->err), (unsigned long long)n);
			say(msg);
		}
		return r->err;
	}
	return 0;
}

/* ---- The seam ------------------------------------------------------------ */

static int f_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	int op = OP_SETSOCKOPT, e;

	if (level == IPPROTO_TCP && name == TCP_ULP)
		op = OP_SETSOCKOPT_ULP;
	else if (level == SOL_TLS && name == TLS_TX)
		op = OP_SETSOCKOPT_TX;
	else if (level == SOL_TLS && name == TLS_RX)
		op = OP_SETSOCKOPT_RX;
	e = should_fail(op); /* a plain "setsockopt" rule matches the three too */
	if (e) {
		errno = e;
		return -1;
	}
	return kite_sys_libc.setsockopt(fd, level, name, val, len);
}

static int f_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	int e = should_fail(OP_GETSOCKOPT);

	if (e) {
		errno = e;
		return -1;
	}
	return kite_sys_libc.getsockopt(fd, level, name, val, len);
}

static ssize_t f_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	int e = should_fail(msg->msg_controllen ? OP_SENDMSG_CMSG : OP_SENDMSG);

	if (e) {
		errno = e;
		return -1;
	}
	return kite_sys_libc.sendmsg(fd, msg, flags);
}

static ssize_t f_recvmsg(int fd, struct msghdr *msg, int flags)
{
	int e = should_fail(msg->msg_controllen ? OP_RECVMSG_CMSG : OP_RECVMSG);

	if (e) {
		errno = e;
		return -1;
	}
	return kite_sys_libc.recvmsg(fd, msg, flags);
}

static ssize_t f_sendfile(int out, int in, off_t *off, size_t n)
{
	int e = should_fail(OP_SENDFILE);

	if (e) {
		errno = e;
		return -1;
	}
	return kite_sys_libc.sendfile(out, in, off, n);
}

static ssize_t f_pread(int fd, void *buf, size_t n, off_t off)
{
	int e = should_fail(OP_PREAD);

	if (e) {
		errno = e;
		return -1;
	}
	return kite_sys_libc.pread(fd, buf, n, off);
}

static int f_cqe(int uop, int res)
{
	int op, e;

	if (uop < 0 || uop > KITE_UOP_OTHER || res < 0)
		return res;
	op = uop_ops[uop];
	if (op < 0)
		return res;
	e = should_fail(op);
	if (!e)
		return res;
	if (uop == KITE_UOP_ACCEPT)
		close(res); /* the engine never sees this connection */
	return -e;
}

static const struct kite_sys fault_sys = {
	.setsockopt = f_setsockopt,
	.getsockopt = f_getsockopt,
	.sendmsg = f_sendmsg,
	.recvmsg = f_recvmsg,
	.sendfile = f_sendfile,
	.pread = f_pread,
	.cqe = f_cqe,
};

/* ---- malloc (linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc) -- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);

void *__wrap_malloc(size_t n)
{
	int e = should_fail(OP_MALLOC);

	if (e) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t m)
{
	int e = should_fail(OP_MALLOC);

	if (e) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_calloc(n, m);
}

void *__wrap_realloc(void *p, size_t n)
{
	/* realloc(p, 0) frees: never fail that. */
	int e = n ? should_fail(OP_MALLOC) : 0;

	if (e) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_realloc(p, n);
}

/* ---- Set-up --------------------------------------------------------------- */

static void on_usr(int sig)
{
	for (unsigned i = 0; i < nrules; i++)
		if (sig == SIGUSR2)
			atomic_store(&rules[i].armed, false);
		else if (rules[i].held)
			atomic_store(&rules[i].armed, true);
	say(sig == SIGUSR1 ? "kite-serve-faults: held rules armed\n"
			   : "kite-serve-faults: all rules disarmed\n");
}

static _Noreturn void bad(const char *rule, const char *why)
{
	fprintf(stderr, "kite-serve-faults: KITE_FAULTS rule \"%s\": %s (see the header of "
		"tests/reliability/faults/fault.c)\n", rule, why);
	exit(2);
}

static uint64_t number(const char *rule, const char **p)
{
	char *end;
	unsigned long long v;

	if (**p < '0' || **p > '9')
		bad(rule, "a number is missing");
	errno = 0;
	v = strtoull(*p, &end, 10);
	if (errno)
		bad(rule, "number out of range");
	*p = end;
	return v;
}

static void parse_rule(const char *text)
{
	struct rule *r;
	const char *p = text, *eq;
	size_t n;
	int op = -1;

	if (nrules == MAX_RULES)
		bad(text, "too many rules");
	r = &rules[nrules];
	memset(r, 0, sizeof(*r));
	snprintf(r->text, sizeof(r->text), "%s", text);
	if (*p == '~') {
		r->held = true;
		p++;
	}
	eq = strchr(p, '=');
	if (!eq)
		bad(text, "want OP=ERRNO");
	n = (size_t)(eq - p);
	for (int i = 0; i < OP_COUNT; i++)
		if (strlen(op_names[i]) == n && !strncmp(op_names[i], p, n))
			op = i;
	if (op < 0)
		bad(text, "unknown OP");
	r->op = op;
	p = eq + 1;
	n = strcspn(p, "@%/x");
	if (n && p[0] >= '0' && p[0] <= '9') {
		r->err = (int)number(text, &p);
		if ((size_t)(p - eq - 1) != n || r->err <= 0 || r->err > 4095)
			bad(text, "bad errno number");
	} else {
		for (size_t i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++)
			if (strlen(errnos[i].name) == n && !strncmp(errnos[i].name, p, n))
				r->err = errnos[i].err;
		if (!r->err)
			bad(text, "unknown errno name");
		p += n;
	}
	if (op >= OP_CQE_ACCEPT && op <= OP_CQE_SENDMSG &&
	    (r->err == EAGAIN || r->err == EINTR || r->err == ECANCELED))
		bad(text, "an io_uring completion that succeeded cannot be made EAGAIN, EINTR or "
			  "ECANCELED: the operation already happened");
	r->from = 1;
	r->to = UINT64_MAX;
	r->pct100 = 10000;
	r->every = 1;
	while (*p) {
		char c = *p++;

		if (c == '@') {
			r->from = r->to = number(text, &p);
			if (*p == '+') {
				r->to = UINT64_MAX;
				p++;
			} else if (*p == '-') {
				p++;
				r->to = number(text, &p);
			}
			if (!r->from || r->to < r->from)
				bad(text, "@N counts calls from 1");
		} else if (c == '%') {
			char *end;
			double v = strtod(p, &end);

			if (end == p || v <= 0 || v > 100)
				bad(text, "%P wants 0 < P <= 100");
			r->pct100 = (unsigned)(v * 100 + 0.5);
			p = end;
		} else if (c == '/') {
			r->every = number(text, &p);
			if (!r->every)
				bad(text, "/K wants K >= 1");
		} else if (c == 'x') {
			r->max = number(text, &p);
			if (!r->max)
				bad(text, "xC wants C >= 1");
		} else {
			bad(text, "unexpected character after ERRNO");
		}
	}
	atomic_store(&r->armed, !r->held);
	for (int i = 0; i < OP_COUNT; i++)
		if (covers(op, i))
			any_op[i] = true;
	nrules++;
}

static void report(void)
{
	for (unsigned i = 0; i < nrules; i++)
		fprintf(stderr, "kite-serve-faults: rule %s: %llu calls, %llu failed\n", rules[i].text,
			(unsigned long long)atomic_load(&rules[i].calls),
			(unsigned long long)atomic_load(&rules[i].fails));
}

__attribute__((constructor)) static void faults_init(void)
{
	const char *spec = getenv("KITE_FAULTS");
	char buf[1024], line[1200];
	struct sigaction sa;
	size_t o;

	if (!spec || !*spec) {
		say("kite-serve-faults: no faults armed (KITE_FAULTS is empty)\n");
		return;
	}
	if (strlen(spec) >= sizeof(buf))
		bad(spec, "KITE_FAULTS is too long");
	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *save = NULL, *t = strtok_r(buf, ";", &save); t; t = strtok_r(NULL, ";", &save))
		if (*t)
			parse_rule(t);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	kite_sys_set(&fault_sys);
	atexit(report);
	o = (size_t)snprintf(line, sizeof(line), "kite-serve-faults: armed:");
	for (unsigned i = 0; i < nrules && o < sizeof(line); i++)
		o += (size_t)snprintf(line + o, sizeof(line) - o, " %s%s", rules[i].text,
				      rules[i].held ? " (held until SIGUSR1)" : "");
	fprintf(stderr, "%s\n", line);
}
