/* SPDX-License-Identifier: MIT */
/*
 * io_uring backend. Per stream at most three chains are in flight: RX (a
 * receive or the handshake's poll), TX (one round of the send queue) and
 * misc (cancel, close). A chain is judged when all of its CQEs are in; then
 * the stream is kicked and progress() decides what comes next. Timeouts
 * are deadlines, not operations: each stream has one timer (its nearest
 * deadline) in a heap, the loop's wait ends at the heap's top, and a
 * deadline that passes fails or ends the stream, whose dead step then
 * cancels what it has in flight. io_uring has no sendfile: file ranges go as linked
 * SPLICE(file -> pipe) -> SPLICE(pipe -> socket) rounds, or READ_FIXED ->
 * SEND through a registered buffer (small ranges, no free pipe).
 *
 * Owns: the ring, its listeners' and eventfd's ops, the shared receive
 * buffers, and per stream (struct uring_stream) the chains and what they
 * point the kernel at. What a stream does at each step of its life is the
 * core's rule (core.h); this file turns it into submissions.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/time_types.h>
#include <liburing.h>

#include "core.h"

/* memcheck does not model the kernel writing our buffers through the ring
 * (RECV, RECVMSG, READ): say so where their CQEs arrive. No-ops when not
 * under valgrind, absent without its headers. */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define ENG_DEFINED(p, n) VALGRIND_MAKE_MEM_DEFINED((p), (n))
#endif
#endif
#ifndef ENG_DEFINED
#define ENG_DEFINED(p, n) ((void)(p), (void)(n))
#endif

enum uop_kind { UK_NONE, UK_ACCEPT, UK_EVENTFD, UK_RX, UK_TX, UK_MISC };

enum role { RO_NONE, RO_POLL, RO_FILE_IN, RO_SOCK_OUT, RO_RECV, RO_CANCEL, RO_CLOSE };

enum tx_kind {
	TXK_NONE,
	TXK_SPLICE,  /* SPLICE file -> pipe, SPLICE pipe -> socket */
	TXK_DRAIN,   /* [POLL_ADD(POLLOUT) ->] SPLICE pipe -> socket */
	TXK_COPY,    /* READ_FIXED file -> buffer, SEND buffer */
	TXK_LEFT,    /* SEND the rest of a buffer (copy path, or GnuTLS records) */
	TXK_SEND,    /* SEND queued bytes (kernel TLS or plaintext) */
	TXK_HEAD,    /* SEND a unit's head, MSG_MORE, before its spliced range */
	TXK_UREAD,   /* READ_FIXED file -> buffer, for GnuTLS to encrypt */
	TXK_STAGE,   /* SEND records GnuTLS wrote outside a round */
	TXK_NOTIFY,  /* SENDMSG close_notify alert through kernel TLS */
};

/* One submission of a chain. user_data points here. */
struct uop {
	uint8_t kind;         /* enum uop_kind */
	uint8_t idx;          /* position in its chain */
	void *owner;          /* stream or listener */
};

/* A linked chain of up to 4 submissions whose results are judged together
 * once every one has completed. */
struct uchain {
	uint8_t n;            /* ops submitted */
	uint8_t pend;         /* CQEs still to come */
	uint8_t done;         /* bit per op: its CQE arrived */
	uint8_t role[4];
	int res[4];
	struct uop op[4];
};

/* A stream of this backend: the core's fields, then its three chains
 * (receive, send, cancel/close) and what they point the kernel at. */
struct uring_stream {
	struct kite_stream super;
	struct uchain rx, tx, misc;
	uint8_t tx_kind;       /* enum tx_kind: what the TX chain in flight is */
	int tx_slot;           /* registered file it reads through (a reference), -1: none */
	uint8_t tx_path;       /* path charged for it */
	uint32_t tx_len;       /* bytes it was asked to move */
	bool need_pollout;     /* last splice into the socket said EAGAIN */
	bool cancel_sent, close_sent;
	/* The stream's timer in the engine's heap: the nearest of its state's
	 * deadline (eng_deadline) and stall_due. The key may be earlier than
	 * the deadline really is (activity moves deadlines later, and only an
	 * earlier one moves the key): timer_fire() then looks again. */
	struct eng_timer tm;
	uint64_t stall_due;    /* ms: a TX chain waiting for room fails then (0: none) */
	struct msghdr rx_msg, tx_msg;
	struct iovec rx_iov, tx_iov;
	struct {
		_Alignas(struct cmsghdr) char buf[CMSG_SPACE(sizeof(uint8_t))];
	} rx_cmsg, tx_cmsg;
	/* Receive buffer: a shared one (rx_bid, chosen by the kernel when
	 * rx_select asked for one), or the stream's own (rx_own, ENG_RX_BUF:
	 * no shared ring, or none was free). */
	uint8_t *rx_own;
	int rx_bid;
	bool rx_select;
	/* Control record being gathered (kTLS RX) in conn->buf. */
	uint8_t ctrl_type;
	uint32_t ctrl_have, ctrl_missing;
	bool ctrl_ready;      /* complete, waiting for TX to be idle (KeyUpdate) */
};

static struct uring_stream *us(const struct kite_stream *s)
{
	return (struct uring_stream *)s;
}

/* The shared receive buffers' group (IOSQE_BUFFER_SELECT). */
#define RX_BGID 0

struct uring_state {
	struct io_uring ring;
	struct uop ev_op;
	struct uop accept_op[ENG_MAX_LISTENERS]; /* one per e->listeners[] */
	bool ev_armed;
	bool disabled;       /* IORING_SETUP_R_DISABLED until the first run */
	/* Shared receive buffers (cfg.rx_buffers): a provided-buffer ring of
	 * br_n buffers of ENG_RX_RING_BUF bytes at br_mem; NULL: none. */
	struct io_uring_buf_ring *br;
	uint8_t *br_mem;
	unsigned br_n;
	struct eng_timers timers; /* every stream's nearest deadline */
	/* Registered files (KITE_SENDFILE_KEEP_FD): a sparse table of nfiles
	 * slots, free ones on a list from file_free; fd_slot[fd] is the slot
	 * of descriptor fd + 1 (0: none). files NULL: no table. */
	struct ufile *files;
	unsigned nfiles;
	int file_free;
	int *fd_slot;
	size_t fd_slot_n;
};

/* A slot of the registered file table. refs: queued items and TX chains in
 * flight that read through it; a forgotten slot is emptied when the last
 * goes, never before: io_uring looks a splice's or read's file up when the
 * op runs, which may be long after the submission. */
struct ufile {
	int fd;
	uint32_t refs;
	bool forgotten;
	int next_free;
};

static struct io_uring *ring_of(struct kite_engine *e)
{
	return &((struct uring_state *)e->ring)->ring;
}

/* ---- Submission helpers --------------------------------------------------- */

static int u_submit(struct kite_engine *e)
{
	struct io_uring *r = ring_of(e);
	int n;

	if (!io_uring_sq_ready(r))
		return 0;
	e->st.enters++;
	eng_sys(e, -1);
	n = io_uring_submit(r);
	return n < 0 ? n : 0;
}

/* Room for the n SQEs of one chain: a chain must not be split across two
 * submissions (the kernel ends a link at the batch boundary). */
static bool u_room(struct kite_engine *e, unsigned n)
{
	if (io_uring_sq_space_left(ring_of(e)) >= n)
		return true;
	u_submit(e);
	return io_uring_sq_space_left(ring_of(e)) >= n;
}

static void ch_begin(struct uchain *ch)
{
	ch->n = ch->pend = ch->done = 0;
}

static struct io_uring_sqe *c_op(struct kite_engine *e, struct uchain *ch, void *owner,
				 uint8_t kind, uint8_t role, int path)
{
	struct io_uring_sqe *q = io_uring_get_sqe(ring_of(e)); /* u_room() ran */
	uint8_t i = ch->n++;

	ch->role[i] = role;
	ch->res[i] = 0;
	ch->op[i].kind = kind;
	ch->op[i].idx = i;
	ch->op[i].owner = owner;
	io_uring_sqe_set_data(q, &ch->op[i]);
	ch->pend++;
	e->inflight++;
	e->st.sqes++;
	if (path >= 0)
		e->st.path[path].sqes++;
	return q;
}

/* The next SQE of the chain runs only if this one succeeds in full. */
static void c_link(struct io_uring_sqe *q)
{
	q->flags |= IOSQE_IO_LINK;
}

/* ---- Listeners and the stop eventfd -------------------------------------- */

static struct uop *accept_op(struct kite_engine *e, struct eng_listener *l)
{
	return &((struct uring_state *)e->ring)->accept_op[l - e->listeners];
}

static void arm_accept(struct kite_engine *e, struct eng_listener *l)
{
	struct io_uring_sqe *q;
	struct uop *op;

	if (l->armed || l->fd < 0 || !u_room(e, 1))
		return;
	q = io_uring_get_sqe(ring_of(e));
	/* Accepted sockets are O_NONBLOCK: the handshake runs on readiness
	 * and splices into the socket return -EAGAIN instead of blocking an
	 * io-wq worker. */
	if (l->multishot)
		io_uring_prep_multishot_accept(q, l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	else
		io_uring_prep_accept(q, l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	op = accept_op(e, l);
	op->kind = UK_ACCEPT;
	op->owner = l;
	io_uring_sqe_set_data(q, op);
	l->armed = true;
	e->inflight++;
	e->st.sqes++;
}

static void on_accept(struct kite_engine *e, struct eng_listener *l, int res, bool more)
{
	if (!more)
		l->armed = false;
	if (res >= 0) {
		l->accepted_any = true;
		(void)eng_accepted(e, res);
		return;
	}
	switch (-res) {
	case ECANCELED:
		return; /* quiesce */
	case EINVAL:
		if (l->multishot && !l->accepted_any) {
			/* Multishot accept needs Linux >= 5.19; re-arm one by one. */
			l->multishot = false;
			snprintf(e->detail + strlen(e->detail), sizeof(e->detail) - strlen(e->detail),
				 ", single-shot accept");
			return;
		}
		/* fallthrough */
	case EBADF:
	case ENOTSOCK:
	case EOPNOTSUPP:
		l->fd = -1; /* not a listener (any more): stop */
		return;
	default:
		/* EMFILE, ENFILE, ENOBUFS, ECONNABORTED...: try again a bit
		 * later rather than spin. */
		l->retry_at = eng_now_ms() + 100;
		e->st.accept_errors++;
		e->st.accept_error = res;
		return;
	}
}

static void arm_eventfd(struct kite_engine *e)
{
	struct uring_state *u = e->ring;
	struct io_uring_sqe *q;

	if (u->ev_armed || !u_room(e, 1))
		return;
	q = io_uring_get_sqe(&u->ring);
	if (e->multishot)
		io_uring_prep_poll_multishot(q, e->evfd, POLLIN);
	else
		io_uring_prep_poll_add(q, e->evfd, POLLIN);
	u->ev_op.kind = UK_EVENTFD;
	io_uring_sqe_set_data(q, &u->ev_op);
	u->ev_armed = true;
	e->inflight++;
	e->st.sqes++;
}

static void on_eventfd(struct kite_engine *e, int res, bool more)
{
	struct uring_state *u = e->ring;
	uint64_t v;

	if (!more)
		u->ev_armed = false;
	if (res > 0) {
		/* Reset the counter; the stop flag itself is read by the loop. */
		if (read(e->evfd, &v, sizeof(v)) < 0) {
			/* EAGAIN: already read */
		}
		eng_sys(e, -1);
	}
}

static int u_listen(struct kite_engine *e, struct eng_listener *l)
{
	(void)e;
	(void)l; /* armed in the next wait(), on the loop's thread */
	return 0;
}

static int u_attach(struct kite_stream *s)
{
	struct uring_state *u = s->e->ring;

	us(s)->rx_bid = -1; /* no shared buffer held */
	us(s)->tx_slot = -1;
	us(s)->tm.pos = -1;
	/* A timer for every stream that exists: setting one never fails. */
	return eng_timers_reserve(&u->timers, s->e->st.streams);
}

static void u_stream_free(struct kite_stream *s)
{
	struct uring_state *u = s->e->ring;

	if (u) /* NULL: a stream the kernel never let go, freed after fini */
		eng_timer_del(&u->timers, &us(s)->tm);
	free(us(s)->rx_own);
}

/* The ring may still read the head item's file while a TX chain is in the
 * kernel (io_uring looks a splice's or read's fd up when the op runs). */
static bool u_tx_busy(const struct kite_stream *s)
{
	return us(s)->tx.pend;
}

static void u_dump(const struct kite_stream *s)
{
	const struct uring_stream *u = us(s);

	fprintf(stderr, "tx kind %u pend %u n %u done %#x | rx pend %u n %u | misc pend %u | "
		"need_pollout %d | timer %lld ms", u->tx_kind, u->tx.pend, u->tx.n, u->tx.done,
		u->rx.pend, u->rx.n, u->misc.pend, u->need_pollout,
		u->tm.pos < 0 ? -1LL : (long long)(u->tm.due - eng_now_ms()));
}

/* ---- Shared receive buffers ----------------------------------------------- */

static uint8_t *rxring_buf(struct uring_state *u, int bid)
{
	return u->br_mem + (size_t)bid * ENG_RX_RING_BUF;
}

/* Give buffer bid back to the kernel. */
static void rxring_put(struct uring_state *u, int bid)
{
	io_uring_buf_ring_add(u->br, rxring_buf(u, bid), ENG_RX_RING_BUF, (unsigned short)bid,
			      io_uring_buf_ring_mask(u->br_n), 0);
	io_uring_buf_ring_advance(u->br, 1);
}

/* Set the ring up (Linux >= 5.19). Not fatal: without it every stream has
 * a receive buffer of its own, as before; e->detail says which. */
static void rxring_init(struct kite_engine *e, struct uring_state *u, char *note, size_t len)
{
	unsigned n = e->cfg.rx_buffers;
	size_t ring_len = (size_t)n * sizeof(struct io_uring_buf), mem_len;
	struct io_uring_buf_reg reg;
	void *br, *mem;
	int r;

	snprintf(note, len, "own receive buffers");
	if (!n)
		return;
	mem_len = (size_t)n * ENG_RX_RING_BUF;
	/* Page-aligned, as the kernel wants the ring; the buffers' pages
	 * are only touched once the kernel first fills them. */
	br = mmap(NULL, ring_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	mem = mmap(NULL, mem_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	eng_sys(e, -1);
	eng_sys(e, -1);
	if (br == MAP_FAILED || mem == MAP_FAILED) {
		snprintf(note, len, "own receive buffers (shared: no memory)");
		goto fail;
	}
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uintptr_t)br;
	reg.ring_entries = n;
	reg.bgid = RX_BGID;
	r = io_uring_register_buf_ring(&u->ring, &reg, 0);
	eng_sys(e, -1);
	if (r) {
		snprintf(note, len, "own receive buffers (shared buffer ring: %s%s)",
			 kite_strerror(r), r == -EINVAL ? ", Linux < 5.19?" : "");
		goto fail;
	}
	u->br = br;
	u->br_mem = mem;
	u->br_n = n;
	io_uring_buf_ring_init(u->br);
	for (unsigned i = 0; i < n; i++)
		io_uring_buf_ring_add(u->br, rxring_buf(u, (int)i), ENG_RX_RING_BUF,
				      (unsigned short)i, io_uring_buf_ring_mask(n), (int)i);
	io_uring_buf_ring_advance(u->br, (int)n);
	snprintf(note, len, "%u shared receive buffers of %u KiB", n, ENG_RX_RING_BUF >> 10);
	return;
fail:
	if (br != MAP_FAILED)
		munmap(br, ring_len);
	if (mem != MAP_FAILED)
		munmap(mem, mem_len);
}

static void rxring_fini(struct uring_state *u)
{
	if (!u->br)
		return;
	munmap(u->br, (size_t)u->br_n * sizeof(struct io_uring_buf));
	munmap(u->br_mem, (size_t)u->br_n * ENG_RX_RING_BUF);
	u->br = NULL;
}

/* Where the next receive goes: the rest of a control record into
 * conn->buf; else a shared buffer the kernel picks when bytes arrive (no
 * memory held while waiting); else the stream's own. */
static int rx_dest(struct kite_stream *s, void **dst, size_t *len)
{
	struct uring_state *u = s->e->ring;

	us(s)->rx_select = false;
	if (s->krx && us(s)->ctrl_have) {
		/* The rest of a control record: the kernel hands out the
		 * remainder of a partly read record before the next. */
		*dst = kite_conn_buf(s->conn) + us(s)->ctrl_have;
		*len = us(s)->ctrl_missing;
		return 0;
	}
	if (u->br && !us(s)->rx_own) {
		us(s)->rx_select = true;
		*dst = NULL;
		*len = ENG_RX_RING_BUF;
		return 0;
	}
	if (!us(s)->rx_own && !(us(s)->rx_own = malloc(ENG_RX_BUF)))
		return -ENOMEM;
	s->rxbuf = us(s)->rx_own;
	*dst = us(s)->rx_own;
	*len = ENG_RX_BUF;
	return 0;
}

/* ---- Registered files ------------------------------------------------------ */

/* Slots of the sparse table (rung uring). Beyond them, KEEP_FD ranges read
 * through their descriptor as any other. */
#define FILE_SLOTS 1024u

static void files_init(struct kite_engine *e, struct uring_state *u, char *note, size_t len)
{
	unsigned n = FILE_SLOTS;
	struct rlimit rl;
	int r;

	snprintf(note, len, "no registered files");
	/* The kernel refuses a table larger than RLIMIT_NOFILE (EMFILE). */
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < n)
		n = (unsigned)rl.rlim_cur;
	eng_sys(e, -1);
	u->files = calloc(n, sizeof(*u->files));
	if (!u->files)
		return;
	/* Sparse (Linux >= 5.19): every slot empty until a descriptor is
	 * put there with IORING_REGISTER_FILES_UPDATE. */
	r = io_uring_register_files_sparse(&u->ring, n);
	eng_sys(e, -1);
	if (r) {
		free(u->files);
		u->files = NULL;
		snprintf(note, len, "no registered files (%s%s)", kite_strerror(r),
			 r == -EINVAL ? ", Linux < 5.19?" : "");
		return;
	}
	u->nfiles = n;
	u->file_free = -1;
	for (unsigned i = n; i-- > 0;) {
		u->files[i].next_free = u->file_free;
		u->file_free = (int)i;
	}
	snprintf(note, len, "%u registered file slots", n);
}

static void files_fini(struct uring_state *u)
{
	free(u->files);
	free(u->fd_slot);
	u->files = NULL;
	u->fd_slot = NULL;
}

/* fd's slot with a reference, registering fd first; -1: no table, the
 * table is full, or no memory (the range reads through fd). */
static int u_file_get(struct kite_engine *e, int fd)
{
	struct uring_state *u = e->ring;
	int slot, r;

	if (!u->files)
		return -1;
	if ((size_t)fd < u->fd_slot_n && u->fd_slot[fd]) {
		slot = u->fd_slot[fd] - 1;
		u->files[slot].refs++;
		return slot;
	}
	if (u->file_free < 0)
		return -1;
	if ((size_t)fd >= u->fd_slot_n) {
		size_t n = u->fd_slot_n ? u->fd_slot_n : 64;
		int *v;

		while (n <= (size_t)fd)
			n *= 2;
		v = realloc(u->fd_slot, n * sizeof(*v));
		if (!v)
			return -1;
		memset(v + u->fd_slot_n, 0, (n - u->fd_slot_n) * sizeof(*v));
		u->fd_slot = v;
		u->fd_slot_n = n;
	}
	slot = u->file_free;
	/* The table holds its own reference to the file from now on. */
	r = io_uring_register_files_update(&u->ring, (unsigned)slot, &fd, 1);
	eng_sys(e, -1);
	if (r != 1)
		return -1;
	u->file_free = u->files[slot].next_free;
	u->files[slot] = (struct ufile){.fd = fd, .refs = 1, .next_free = -1};
	u->fd_slot[fd] = slot + 1;
	e->st.files_registered++;
	return slot;
}

/* Empty a forgotten slot (the table drops its file reference) for reuse. */
static void file_release(struct kite_engine *e, int slot)
{
	struct uring_state *u = e->ring;
	int none = -1;

	(void)io_uring_register_files_update(&u->ring, (unsigned)slot, &none, 1);
	eng_sys(e, -1);
	u->files[slot].next_free = u->file_free;
	u->file_free = slot;
}

static void u_file_put(struct kite_engine *e, int slot)
{
	struct uring_state *u = e->ring;

	if (!u || !u->files) /* after fini: the ring, and its table, are gone */
		return;
	if (!--u->files[slot].refs && u->files[slot].forgotten)
		file_release(e, slot);
}

static void u_forget_fd(struct kite_engine *e, int fd)
{
	struct uring_state *u = e->ring;
	int slot;

	/* No ring: an on_close during kite_engine_destroy() (the table went
	 * with the ring, and the kernel dropped every registration). */
	if (!u || !u->files || (size_t)fd >= u->fd_slot_n || !u->fd_slot[fd])
		return;
	slot = u->fd_slot[fd] - 1;
	u->fd_slot[fd] = 0; /* the next KEEP_FD range of this number registers anew */
	u->files[slot].forgotten = true;
	if (!u->files[slot].refs)
		file_release(e, slot);
}

/* The file side of the TX chain being prepared: the item's registration
 * (*fixed; the chain holds a reference until its last CQE) or its fd. */
static int tx_file(struct kite_stream *s, const struct eng_item *it, bool *fixed)
{
	struct uring_state *u = s->e->ring;

	int slot = (int)it->reg - 1;

	*fixed = it->reg != 0;
	if (!*fixed)
		return it->fd;
	u->files[slot].refs++;
	us(s)->tx_slot = slot;
	return slot;
}

/* ---- Deadlines ------------------------------------------------------------- */

static struct kite_stream *timer_owner(struct eng_timer *t)
{
	return (struct kite_stream *)((char *)t - offsetof(struct uring_stream, tm));
}

/* Put the stream's nearest deadline in the heap: its state's (handshake,
 * idle or linger; eng_deadline() fails or ends the stream when it has
 * passed) and a send waiting for room. Kept lazily: a key already earlier
 * stays, so a keep-alive request that moves the idle deadline later costs
 * no heap work; timer_fire() sorts it out when the key comes. */
static void timer_arm(struct kite_stream *s, uint64_t now)
{
	struct uring_state *u = s->e->ring;
	unsigned ms = eng_deadline(s, now);
	uint64_t due = ms ? now + ms : 0, stall = us(s)->stall_due;

	if (s->state >= ST_DEAD)
		return;
	if (stall && us(s)->tx.pend && (!due || stall < due))
		due = stall > now ? stall : now + 1;
	if (!due || (us(s)->tm.pos >= 0 && us(s)->tm.due <= due))
		return;
	eng_timer_set(&u->timers, &us(s)->tm, due);
}

/* The stream's timer came (it is out of the heap now). A TX chain still
 * waiting for room after send_timeout_ms fails the stream; otherwise the
 * state's deadline is judged by the core's rule and the next one armed.
 * A failed or ended stream's dead step cancels what it has in flight. */
static void timer_fire(struct kite_stream *s, uint64_t now)
{
	if (s->state >= ST_DEAD)
		return;
	if (us(s)->tx.pend && us(s)->stall_due && now >= us(s)->stall_due) {
		if (s->conn)
			kite_conn_fail(s->conn, -ETIMEDOUT, "no send progress for %u ms",
				       s->e->cfg.send_timeout_ms);
		eng_fail(s, -ETIMEDOUT);
		return;
	}
	timer_arm(s, now);
}

/* Every timer due by now. */
static void timers_run(struct kite_engine *e)
{
	struct uring_state *u = e->ring;
	struct eng_timer *t;
	uint64_t now;

	if (!eng_timer_top(&u->timers))
		return;
	now = eng_now_ms();
	while ((t = eng_timer_top(&u->timers)) && t->due <= now) {
		eng_timer_del(&u->timers, t);
		timer_fire(timer_owner(t), now);
	}
}

/* The TX chain just prepared waits for room in the socket: it may take at
 * most send_timeout_ms (timer_arm() at the end of progress() arms it). */
static void stall_arm(struct kite_stream *s)
{
	unsigned ms = s->e->cfg.send_timeout_ms;

	us(s)->stall_due = ms ? eng_now_ms() + ms : 0;
}

/* ---- Handshake ------------------------------------------------------------- */

static void user_rx(struct kite_stream *s);

static void u_open(struct kite_stream *s)
{
	/* Directions left in userspace: GnuTLS reads and writes memory that
	 * the ring fills and empties. */
	eng_opened(s, true);
	/* Records GnuTLS read during the handshake and holds decrypted. */
	if (s->state == ST_OPEN && s->rx_mem)
		user_rx(s);
}

/* The RX chain's first op (role), or NULL: the submission ring is full
 * and the stream fails (-EAGAIN). */
static struct io_uring_sqe *rx_begin(struct kite_stream *s, uint8_t role)
{
	if (!u_room(s->e, 2)) {
		eng_fail(s, -EAGAIN); /* submission ring full */
		return NULL;
	}
	ch_begin(&us(s)->rx);
	return c_op(s->e, &us(s)->rx, s, UK_RX, role, -1);
}

/* The handshake runs on readiness: a POLL_ADD for what GnuTLS waits for
 * (for a server, first for the client's first bytes); the stream's timer
 * holds the handshake's deadline. */
static void hs_step(struct kite_stream *s)
{
	struct io_uring_sqe *q;
	int r;

	r = eng_handshake(s, s->hs_polled);
	if (r != -EAGAIN) {
		if (!r)
			u_open(s);
		return;
	}
	timer_arm(s, eng_now_ms());
	if (s->state != ST_HANDSHAKE)
		return;
	q = rx_begin(s, RO_POLL);
	if (!q)
		return;
	if (!s->conn)
		s->hs_polled = true; /* the poll waits for the first bytes */
	io_uring_prep_poll_add(q, s->fd, s->conn ? (unsigned)kite_conn_poll_events(s->conn) : POLLIN);
}

/* ---- Receive ---------------------------------------------------------------- */

/* A receive, with no timeout of its own: the stream's timer holds the idle
 * or linger deadline (timer_arm). */
static void rx_arm(struct kite_stream *s)
{
	struct io_uring_sqe *q;
	size_t len;
	void *dst;
	int r;

	r = rx_dest(s, &dst, &len);
	if (r) {
		eng_fail(s, r);
		return;
	}
	q = rx_begin(s, RO_RECV);
	if (!q)
		return;
	if (s->krx) {
		/* With a shared buffer the iovec gives only the length. */
		us(s)->rx_iov.iov_base = dst;
		us(s)->rx_iov.iov_len = len;
		memset(&us(s)->rx_msg, 0, sizeof(us(s)->rx_msg));
		us(s)->rx_msg.msg_iov = &us(s)->rx_iov;
		us(s)->rx_msg.msg_iovlen = 1;
		/* uapi (Documentation/networking/tls.rst): with a control
		 * buffer each kTLS recvmsg returns records of one type and says
		 * which in cmsg SOL_TLS/TLS_GET_RECORD_TYPE; without one a
		 * non-data record at the head fails with EIO. */
		us(s)->rx_msg.msg_control = us(s)->rx_cmsg.buf;
		us(s)->rx_msg.msg_controllen = sizeof(us(s)->rx_cmsg.buf);
		io_uring_prep_recvmsg(q, s->fd, &us(s)->rx_msg, 0);
	} else {
		io_uring_prep_recv(q, s->fd, dst, len, 0);
	}
	if (us(s)->rx_select) {
		q->flags |= IOSQE_BUFFER_SELECT;
		q->buf_group = RX_BGID;
	}
}

/* Userspace RX: let GnuTLS decrypt what the ring received into rxbuf. */
static void user_rx(struct kite_stream *s)
{
	struct kite_engine *e = s->e;

	while (eng_live(s)) {
		ssize_t n = kite_recv(s->conn, e->scratch, ENG_RX_BUF);

		if (n > 0) {
			eng_deliver(s, e->scratch, (size_t)n);
			continue;
		}
		if (n == 0) {
			eng_rx_end(s);
		} else if (n != -EAGAIN) {
			eng_rx_error(s, (int)n);
		}
		break;
	}
}

/* Handle the complete control record in conn->buf. A KeyUpdate may answer
 * with our own KeyUpdate and a new TLS_TX key: never while a TX chain is in
 * the kernel, whose bytes must stay under the old key. Until then nothing
 * more is read (progress() comes back when TX is idle). */
static void ktls_control(struct kite_stream *s)
{
	struct kite_conn *c = s->conn;
	int r;

	if (!us(s)->ctrl_ready || (us(s)->ctrl_type == KITE_CT_HANDSHAKE && us(s)->tx.pend))
		return;
	us(s)->ctrl_ready = false;
	r = kite_ktls_handle_control(c, us(s)->ctrl_type, kite_conn_buf(c), us(s)->ctrl_have);
	us(s)->ctrl_have = 0;
	if (r) {
		eng_rx_error(s, r);
		return;
	}
	if (kite_conn_rx_eof(c))
		eng_rx_end(s);
}

static void ktls_rx(struct kite_stream *s, int n)
{
	struct kite_conn *c = s->conn;
	uint8_t type = KITE_CT_APPLICATION_DATA;
	struct cmsghdr *cm;
	size_t miss;

	if (us(s)->rx_msg.msg_flags & MSG_CTRUNC) {
		eng_rx_error(s, kite_conn_fail(c, -EPROTO, "record type cmsg truncated"));
		return;
	}
	for (cm = CMSG_FIRSTHDR(&us(s)->rx_msg); cm; cm = CMSG_NXTHDR(&us(s)->rx_msg, cm))
		if (cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_GET_RECORD_TYPE)
			memcpy(&type, CMSG_DATA(cm), 1);
	if (us(s)->ctrl_have) {
		if (n == 0 || type != us(s)->ctrl_type) {
			eng_rx_error(s, kite_conn_fail(c, -EPROTO, "truncated control record"));
			return;
		}
		us(s)->ctrl_have += (uint32_t)n;
	} else if (n == 0) {
		/* A close_notify would have arrived as an alert record. */
		if (s->state == ST_LINGER) {
			eng_finish(s);
			return;
		}
		eng_rx_error(s, kite_conn_truncated(c));
		return;
	} else if (type == KITE_CT_APPLICATION_DATA) {
		eng_deliver(s, s->rxbuf, (size_t)n);
		return;
	} else {
		if ((size_t)n > KITE_MAX_RECORD) {
			eng_rx_error(s, kite_conn_fail(c, -EPROTO, "oversized control record"));
			return;
		}
		if (!kite_conn_buf(c)) {
			eng_rx_error(s, kite_conn_fail(c, -ENOMEM, "no memory for a control record"));
			return;
		}
		memcpy(kite_conn_buf(c), s->rxbuf, (size_t)n);
		us(s)->ctrl_type = type;
		us(s)->ctrl_have = (uint32_t)n;
	}
	miss = kite_ktls_ctrl_missing(us(s)->ctrl_type, kite_conn_buf(c), us(s)->ctrl_have);
	if (miss) {
		if (us(s)->ctrl_have + miss > KITE_MAX_RECORD) {
			eng_rx_error(s, kite_conn_fail(c, -EPROTO, "oversized control record"));
			return;
		}
		us(s)->ctrl_missing = (uint32_t)miss; /* rx_arm() reads the rest */
		return;
	}
	us(s)->ctrl_ready = true;
	ktls_control(s);
}

static void rx_handle(struct kite_stream *s)
{
	struct uchain *ch = &us(s)->rx;
	int res = ch->res[0];

	if (s->state == ST_HANDSHAKE)
		return; /* progress() drives the handshake on */
	if (!eng_live(s))
		return;
	/* EINTR without a signal: seen on Linux 6.1 kTLS RX. Retried, as
	 * EAGAIN; ECANCELED only comes from a dying stream's cancel. */
	if (res == -ECANCELED || res == -EINTR || res == -EAGAIN)
		return;
	if (res < 0) {
		/* kTLS RX: the peer's record was bad, as io_ktls.c says it. */
		if (s->krx && (res == -EBADMSG || res == -EMSGSIZE))
			res = kite_conn_fail(s->conn, -EPROTO, "record %s",
					     res == -EBADMSG ? "failed authentication (EBADMSG)"
							     : "too large (EMSGSIZE)");
		else if (s->conn)
			kite_conn_fail(s->conn, res, "receive: %s", kite_strerror(res));
		eng_rx_error(s, res);
		return;
	}
	if (s->krx) {
		ENG_DEFINED(us(s)->rx_iov.iov_base, (size_t)res);
		ENG_DEFINED(&us(s)->rx_msg, sizeof(us(s)->rx_msg));
		ENG_DEFINED(us(s)->rx_cmsg.buf, sizeof(us(s)->rx_cmsg.buf));
	} else {
		ENG_DEFINED(s->rxbuf, (size_t)res);
	}
	if (s->krx) {
		ktls_rx(s, res);
	} else if (s->conn) {
		s->rx_have = (uint32_t)res;
		s->rx_off = 0;
		if (!res)
			s->rx_fin = true;
		user_rx(s);
	} else if (res) {
		eng_deliver(s, s->rxbuf, (size_t)res);
	} else {
		eng_rx_end(s);
	}
}

/* The RX chain is complete: handle what it received, then give a shared
 * buffer back at once (everything in it was delivered or copied: GnuTLS
 * is read until it wants more, kTLS data goes to on_data, control records
 * to conn->buf). */
static void rx_done(struct kite_stream *s)
{
	struct uring_state *u = s->e->ring;
	int bid = us(s)->rx_bid;

	if (bid >= 0) {
		s->rxbuf = rxring_buf(u, bid);
		us(s)->rx_iov.iov_base = s->rxbuf;
	} else if (us(s)->rx_select && us(s)->rx.role[0] == RO_RECV && us(s)->rx.res[0] == -ENOBUFS) {
		/* None free: this read goes into a buffer of the stream's own
		 * (progress() arms it again). */
		us(s)->rx_select = false;
		s->e->st.rx_nobufs++;
		if (!us(s)->rx_own && !(us(s)->rx_own = malloc(ENG_RX_BUF)))
			eng_fail(s, -ENOMEM);
		return;
	}
	us(s)->rx_select = false;
	rx_handle(s);
	if (bid >= 0) {
		rxring_put(u, bid);
		us(s)->rx_bid = -1;
	} else if (!u->br || !us(s)->rx_own) {
		return; /* the stream's own buffer for good, or none used */
	} else {
		/* Borrowed after ENOBUFS: idle streams hold none. */
		free(us(s)->rx_own);
		us(s)->rx_own = NULL;
	}
	s->rxbuf = NULL;
	s->rx_have = s->rx_off = 0;
}

/* ---- Send ----------------------------------------------------------------- */

/* What a step of tx_next() did: nothing to do here (try the next step), made
 * progress without the kernel (look again from the first step), or
 * submitted a chain / waits for a resource or completion (stop). */
enum tx_step { STEP_SKIP, STEP_AGAIN, STEP_DONE };

static void tx_begin(struct kite_stream *s, uint8_t kind, int path, size_t len)
{
	ch_begin(&us(s)->tx);
	us(s)->tx_kind = kind;
	us(s)->tx_path = (uint8_t)path;
	us(s)->tx_len = (uint32_t)len;
}

static void send_chain(struct kite_stream *s, uint8_t kind, int path, const void *p, size_t len,
		       bool more)
{
	struct io_uring_sqe *q;

	tx_begin(s, kind, path, len);
	q = c_op(s->e, &us(s)->tx, s, UK_TX, RO_SOCK_OUT, path);
	/* MSG_NOSIGNAL: a reset peer is an error, not SIGPIPE. MSG_MORE keeps
	 * the kTLS record (or TCP segment) open for what follows at once.
	 * Short sends are resubmitted by us: kTLS rejects MSG_WAITALL and
	 * SEND_ZC. */
	io_uring_prep_send(q, s->fd, p, len, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
	stall_arm(s);
}

static void splice_chain(struct kite_stream *s, struct eng_item *it)
{
	struct kite_engine *e = s->e;
	struct eng_pipe *p = &e->pipes[s->pipe];
	uint64_t n = it->left < e->pipe_cap ? it->left : e->pipe_cap;
	int path = eng_path(s, MECH_SPLICE);
	struct io_uring_sqe *q;
	bool more, fixed;
	int in;

	/* A pipe slot holds one page: from an unaligned offset the range
	 * needs one slot more than its size suggests. Stay a 16 KiB multiple
	 * so that the kernel's records are full. */
	if ((it->off & 4095) && n == e->pipe_cap && n > KITE_MAX_RECORD)
		n -= KITE_MAX_RECORD;
	more = eng_more_after(it, n);
	tx_begin(s, TXK_SPLICE, path, n);
	q = c_op(e, &us(s)->tx, s, UK_TX, RO_FILE_IN, path);
	/* A short splice (end of file, partial page) fails the link: the
	 * second SPLICE then completes -ECANCELED and the bytes wait in the
	 * pipe for the next round. */
	in = tx_file(s, it, &fixed);
	/* SPLICE_F_FD_IN_FIXED: fd_in is a registered file's index
	 * (IOSQE_FIXED_FILE would name fd_out). */
	io_uring_prep_splice(q, in, (int64_t)it->off, p->wr, -1, (unsigned)n,
			     fixed ? SPLICE_F_FD_IN_FIXED : 0);
	c_link(q);
	q = c_op(e, &us(s)->tx, s, UK_TX, RO_SOCK_OUT, path);
	/* SPLICE_F_MORE (MSG_MORE to kTLS) keeps the record open across
	 * calls; on the last chunk only when another item is queued behind
	 * it, or kTLS holds the final record until a send that never comes. */
	io_uring_prep_splice(q, p->rd, -1, s->fd, -1, (unsigned)n, more ? SPLICE_F_MORE : 0);
}

static void drain_chain(struct kite_stream *s)
{
	struct kite_engine *e = s->e;
	struct eng_pipe *p = &e->pipes[s->pipe];
	struct eng_item *it = s->qhead;
	int path = eng_path(s, MECH_SPLICE);
	struct io_uring_sqe *q;
	bool more = it && eng_more_after(it, 0);

	tx_begin(s, TXK_DRAIN, path, s->pipe_fill);
	if (us(s)->need_pollout) {
		/* The socket said EAGAIN (it is O_NONBLOCK, and splice has no
		 * internal poll): wait for room, then splice. */
		q = c_op(e, &us(s)->tx, s, UK_TX, RO_POLL, path);
		io_uring_prep_poll_add(q, s->fd, POLLOUT);
		c_link(q);
		stall_arm(s);
	}
	q = c_op(e, &us(s)->tx, s, UK_TX, RO_SOCK_OUT, path);
	io_uring_prep_splice(q, p->rd, -1, s->fd, -1, s->pipe_fill, more ? SPLICE_F_MORE : 0);
}

static struct io_uring_sqe *read_op(struct kite_stream *s, struct eng_item *it, uint8_t *dst,
				    size_t n, int path)
{
	struct kite_engine *e = s->e;
	struct io_uring_sqe *q = c_op(e, &us(s)->tx, s, UK_TX, RO_FILE_IN, path);
	bool fixed;
	int fd = tx_file(s, it, &fixed);

	/* READ_FIXED: the buffer index names the registered buffer dst lies
	 * in; the kernel skips pinning the pages for every read. */
	if (e->fixed_bufs)
		io_uring_prep_read_fixed(q, fd, dst, (unsigned)n, it->off, s->buf);
	else
		io_uring_prep_read(q, fd, dst, (unsigned)n, it->off);
	if (fixed)
		q->flags |= IOSQE_FIXED_FILE; /* fd is a registered file's index */
	return q;
}

/* File -> buffer -> socket. A unit's head (what of it fits) goes into the
 * buffer first, so head and payload leave in one SEND: one record stream,
 * and one round for a small unit. */
static enum tx_step copy_chain(struct kite_stream *s, struct eng_item *it)
{
	struct kite_engine *e = s->e;
	uint64_t h = it->hleft < e->cfg.buffer_size ? it->hleft : e->cfg.buffer_size;
	uint64_t room = e->cfg.buffer_size - h;
	uint64_t n = it->left < room ? it->left : room;
	int path = eng_path(s, MECH_COPY);
	uint8_t *b = eng_buf(e, s->buf);
	struct io_uring_sqe *q;

	s->buf_len = s->buf_off = 0;
	if (h)
		memcpy(b, eng_head(it), h);
	if (!n) {
		/* A head as big as the buffer: it alone this round. */
		it->hleft -= (uint32_t)h;
		s->buf_len = (uint32_t)h;
		return STEP_AGAIN; /* flush_round() sends it */
	}
	s->buf_head = (uint32_t)h;
	tx_begin(s, TXK_COPY, path, h + n);
	/* A short read fails the link: the SEND is cancelled and the bytes
	 * that did arrive go out in the next round. */
	c_link(read_op(s, it, b + h, n, path));
	q = c_op(e, &us(s)->tx, s, UK_TX, RO_SOCK_OUT, path);
	io_uring_prep_send(q, s->fd, b, (unsigned)(h + n),
			   MSG_NOSIGNAL | (eng_more_after(it, n) ? MSG_MORE : 0));
	stall_arm(s);
	return STEP_DONE;
}

/* Plaintext per userspace round: whole records, at most 16 of them (the
 * in-place staging needs ENG_REC_SLACK per record, see core.h). */
static uint64_t user_round(struct kite_stream *s, uint64_t left)
{
	size_t rec = kite_conn_record_size(s->conn);
	uint64_t n = s->e->cfg.buffer_size;

	if (n > 16 * rec)
		n = 16 * rec;
	return left < n ? left : n;
}

/* File -> buffer for GnuTLS, behind what fits of a unit's head: the round
 * is sealed as one plaintext, so head and payload share records. */
static enum tx_step uread_chain(struct kite_stream *s, struct eng_item *it)
{
	uint64_t round = user_round(s, (uint64_t)it->hleft + it->left);
	uint64_t h = it->hleft < round ? it->hleft : round;
	uint8_t *p = eng_buf(s->e, s->buf) + ENG_PLAIN_OFF;

	if (h)
		memcpy(p, eng_head(it), h);
	s->buf_head = (uint32_t)h;
	if (round == h) {
		s->buf_plain = (uint32_t)h; /* only head bytes this round */
		return STEP_AGAIN;          /* encrypt_pending() seals them */
	}
	tx_begin(s, TXK_UREAD, KITE_PATH_USER, round - h);
	read_op(s, it, p + h, round - h, KITE_PATH_USER);
	return STEP_DONE;
}

/* GnuTLS encrypts n plaintext bytes at src into records appended to the
 * stream's buffer (eng_push() in stage mode); limit bounds each write. */
static int encrypt_into_buf(struct kite_stream *s, const uint8_t *src, size_t n, bool in_place)
{
	struct kite_engine *e = s->e;
	size_t rec = kite_conn_record_size(s->conn), done = 0;

	s->buf_stage = true;
	while (done < n) {
		size_t k = n - done < rec ? n - done : rec;
		ssize_t r;

		/* In place, a record may overwrite only its own plaintext. */
		s->stage_limit = in_place ? (uint32_t)(ENG_PLAIN_OFF + done + k) : (uint32_t)e->buf_stride;
		r = kite_send(s->conn, src + done, k);
		if (r != (ssize_t)k) {
			s->buf_stage = false;
			return r < 0 ? (int)r : -EIO;
		}
		done += k;
	}
	s->buf_stage = false;
	return 0;
}

static void notify_chain(struct kite_stream *s)
{
	static const uint8_t alert[2] = {1 /* warning */, 0 /* close_notify */};
	struct io_uring_sqe *q;
	struct cmsghdr *cm;
	uint8_t type = KITE_CT_ALERT;

	tx_begin(s, TXK_NOTIFY, -1, sizeof(alert));
	us(s)->tx_iov.iov_base = (void *)alert;
	us(s)->tx_iov.iov_len = sizeof(alert);
	memset(&us(s)->tx_msg, 0, sizeof(us(s)->tx_msg));
	memset(&us(s)->tx_cmsg, 0, sizeof(us(s)->tx_cmsg));
	us(s)->tx_msg.msg_iov = &us(s)->tx_iov;
	us(s)->tx_msg.msg_iovlen = 1;
	us(s)->tx_msg.msg_control = us(s)->tx_cmsg.buf;
	us(s)->tx_msg.msg_controllen = sizeof(us(s)->tx_cmsg.buf);
	cm = CMSG_FIRSTHDR(&us(s)->tx_msg);
	/* uapi: cmsg SOL_TLS/TLS_SET_RECORD_TYPE makes this sendmsg one
	 * record of that content type (flushing an open data record). */
	cm->cmsg_level = SOL_TLS;
	cm->cmsg_type = TLS_SET_RECORD_TYPE;
	cm->cmsg_len = CMSG_LEN(sizeof(type));
	memcpy(CMSG_DATA(cm), &type, sizeof(type));
	q = c_op(s->e, &us(s)->tx, s, UK_TX, RO_SOCK_OUT, -1);
	io_uring_prep_sendmsg(q, s->fd, &us(s)->tx_msg, MSG_NOSIGNAL);
	stall_arm(s);
}

/* Our FIN: shutdown(2) here rather than IORING_OP_SHUTDOWN, which the
 * kernel never runs inline (every one is handed to an io-wq worker: a
 * thread wake-up and two context switches per connection). On TCP it
 * only queues the FIN and does not block. */
static void shut_now(struct kite_stream *s)
{
	eng_sys(s->e, -1);
	/* ENOTCONN: the peer reset first; the receive side reports it. */
	if (shutdown(s->fd, SHUT_WR) && errno != ENOTCONN) {
		eng_fail(s, -errno);
		return;
	}
	eng_fin_sent(s); /* progress() arms the linger deadline */
}

/* ---- Send: the next round, step by step ------------------------------------ */

/* A pool buffer for this round, or queue for one (FIFO) and wait. */
static bool take_buf(struct kite_stream *s)
{
	s->buf = eng_buf_get(s->e);
	if (s->buf >= 0)
		return true;
	eng_wait_resource(s);
	return false;
}

/* GnuTLS seals n bytes of the head item (at src) into the round's buffer;
 * once those records are in the socket the item is charged n bytes on
 * path (tx_left_done). */
static enum tx_step encrypt_round(struct kite_stream *s, const uint8_t *src, uint64_t n,
				  bool in_place, uint8_t path)
{
	struct eng_item *it = s->qhead;
	int r;

	s->buf_len = s->buf_off = 0;
	r = encrypt_into_buf(s, src, n, in_place);
	if (r) {
		eng_fail(s, r);
		return STEP_DONE;
	}
	/* The round's first buf_head bytes were the unit's head. */
	it->hleft -= s->buf_head;
	it->off += n - s->buf_head;
	it->left -= n - s->buf_head;
	s->buf_head = 0;
	s->stage_plain = n;
	s->stage_path = path;
	return STEP_AGAIN;
}

/* Records leave in the order GnuTLS made them: first the rest of a round's
 * buffer (file bytes on the copy path, or records). */
static enum tx_step flush_round(struct kite_stream *s)
{
	struct eng_item *it = s->qhead;

	if (s->buf < 0 || s->buf_off >= s->buf_len)
		return STEP_SKIP;
	send_chain(s, TXK_LEFT, s->stage_plain ? s->stage_path : eng_path(s, MECH_COPY),
		   eng_buf(s->e, s->buf) + s->buf_off, s->buf_len - s->buf_off,
		   it && eng_more_after(it, 0));
	return STEP_DONE;
}

/* Then what GnuTLS wrote outside a round (alerts, KeyUpdate replies from
 * the receive side, close_notify). */
static enum tx_step flush_stage(struct kite_stream *s)
{
	if (s->stage_off >= s->stage_len)
		return STEP_SKIP;
	send_chain(s, TXK_STAGE, KITE_PATH_USER, s->stage_mem + s->stage_off,
		   s->stage_len - s->stage_off, false);
	return STEP_DONE;
}

/* File bytes read for GnuTLS are encrypted now, after any record made
 * while the read was in flight; else the finished round's buffer goes
 * back to the pool. */
static enum tx_step encrypt_pending(struct kite_stream *s)
{
	uint32_t n = s->buf_plain;

	if (s->buf < 0)
		return STEP_SKIP;
	if (n) {
		s->buf_plain = 0;
		return encrypt_round(s, eng_buf(s->e, s->buf) + ENG_PLAIN_OFF, n, true, KITE_PATH_USER);
	}
	eng_buf_put(s->e, s->buf);
	s->buf = -1;
	s->buf_len = s->buf_off = 0;
	return STEP_SKIP;
}

/* Bytes left in the pipe by a short splice go before anything new; an
 * empty pipe goes back to the pool. */
static enum tx_step drain_pipe(struct kite_stream *s)
{
	if (s->pipe < 0)
		return STEP_SKIP;
	if (s->pipe_fill) {
		drain_chain(s);
		return STEP_DONE;
	}
	eng_pipe_put(s->e, s->pipe, false);
	s->pipe = -1;
	return STEP_SKIP;
}

/* The queue is empty: on_drain, then the close sequence the core orders. */
static enum tx_step queue_empty(struct kite_stream *s)
{
	if (s->qhead)
		return STEP_SKIP;
	if (eng_drained(s))
		return STEP_AGAIN;
	switch (eng_close_next(s)) {
	case ENG_CLOSE_NOTIFY:
		notify_chain(s);
		return STEP_DONE;
	case ENG_CLOSE_FLUSH:
		return STEP_AGAIN;
	case ENG_CLOSE_FIN:
		shut_now(s);
		return STEP_DONE;
	default:
		return STEP_DONE;
	}
}

/* A file range through kernel TLS or plaintext: splice rounds through a
 * pipe for large ranges, else (or with every pipe taken) a buffer. */
static enum tx_step start_file(struct kite_stream *s, struct eng_item *it)
{
	struct kite_engine *e = s->e;

	if (!it->mech)
		it->mech = e->npipes && it->left > e->cfg.small_max ? MECH_SPLICE : MECH_COPY;
	if (it->mech == MECH_SPLICE && it->hleft) {
		/* A unit's head goes first, MSG_MORE: the kernel keeps its
		 * record open for the spliced range behind it. */
		send_chain(s, TXK_HEAD, KITE_PATH_SEND, eng_head(it), it->hleft, true);
		return STEP_DONE;
	}
	if (it->mech == MECH_SPLICE) {
		s->pipe = eng_pipe_get(e);
		if (s->pipe >= 0) {
			splice_chain(s, it);
			return STEP_DONE;
		}
		e->st.pipe_exhausted++; /* this round takes the copy path */
	}
	if (!take_buf(s))
		return STEP_DONE;
	return copy_chain(s, it);
}

/* The head item's next round. */
static enum tx_step start_item(struct kite_stream *s)
{
	struct eng_item *it = s->qhead;
	bool user = s->conn && !s->ktx;

	if (it->kind == ITEM_BUF && user) {
		/* Userspace TLS: sealed into a pool buffer, then sent. */
		size_t cap = (s->e->buf_stride / (KITE_MAX_RECORD + ENG_REC_SLACK)) * KITE_MAX_RECORD;

		if (!take_buf(s))
			return STEP_DONE;
		return encrypt_round(s, it->data + it->off, it->left < cap ? it->left : cap, false,
				     KITE_PATH_SEND);
	}
	if (it->kind == ITEM_BUF) {
		send_chain(s, TXK_SEND, KITE_PATH_SEND, it->data + it->off, it->left,
			   it->next && it->next->len);
		return STEP_DONE;
	}
	if (!it->len) {
		eng_item_pop(s);
		return STEP_AGAIN;
	}
	if (!user)
		return start_file(s, it);
	if (!take_buf(s))
		return STEP_DONE;
	return uread_chain(s, it); /* read, then encrypt_pending() */
}

/* The TX chain is idle: start the next one. */
static void tx_next(struct kite_stream *s)
{
	static enum tx_step (*const steps[])(struct kite_stream *) = {
		flush_round, flush_stage, encrypt_pending, drain_pipe, queue_empty, start_item,
	};
	enum tx_step r = STEP_AGAIN;

	while (r == STEP_AGAIN) {
		if (!eng_live(s))
			return;
		if (s->conn && kite_conn_dead(s->conn)) {
			eng_fail(s, kite_conn_dead(s->conn));
			return;
		}
		if (!u_room(s->e, 4)) {
			eng_fail(s, -EAGAIN); /* submission ring full */
			return;
		}
		r = STEP_SKIP;
		for (size_t i = 0; r == STEP_SKIP && i < sizeof(steps) / sizeof(steps[0]); i++)
			r = steps[i](s);
	}
}

/* ---- Send: one handler per completed chain kind --------------------------- */

/* A TX chain's completions, folded. */
struct tx_result {
	int in;          /* file read or splice into the pipe (INT_MIN: none) */
	uint64_t out;    /* bytes the socket op moved */
	unsigned outs;   /* socket ops that moved bytes */
	int err;         /* a socket, poll or shutdown error */
};

/* Handlers return 0, -errno (the chain failed), or TX_RETRY: nothing
 * moved and nothing failed, progress() starts over. */
#define TX_RETRY 1

static void tx_collect(struct kite_stream *s, struct tx_result *t)
{
	struct uchain *ch = &us(s)->tx;

	*t = (struct tx_result){.in = INT_MIN};
	for (int i = 0; i < ch->n; i++) {
		int res = ch->res[i];

		switch (ch->role[i]) {
		case RO_FILE_IN:
			t->in = res;
			if (res > 0 && s->buf >= 0) /* READ into the buffer (a splice writes none) */
				ENG_DEFINED(eng_buf(s->e, s->buf) +
					    (us(s)->tx_kind == TXK_UREAD ? ENG_PLAIN_OFF : 0), (size_t)res);
			break;
		case RO_SOCK_OUT:
			if (res > 0) {
				t->out = (uint64_t)res;
				t->outs++;
				us(s)->need_pollout = false;
			} else if (res == -EAGAIN) {
				us(s)->need_pollout = true; /* socket full: poll before the next splice */
				eng_ktls_push(s);
			} else if (res == 0 && us(s)->tx_len) {
				t->err = -EPIPE;
			} else if (res < 0 && res != -ECANCELED && res != -EINTR) {
				t->err = res;
			}
			break;
		case RO_POLL:
			if (res < 0 && res != -ECANCELED && res != -EINTR)
				t->err = res;
			break;
		default:
			break;
		}
	}
}

/* Pipe -> socket: what left the pipe is in the socket. */
static int tx_drain_done(struct kite_stream *s, const struct tx_result *t)
{
	if (t->out) {
		s->pipe_fill -= (uint32_t)t->out;
		eng_item_done(s, s->qhead, t->out, us(s)->tx_path);
	}
	return t->err;
}

/* File -> pipe -> socket. A short splice cancelled the second one: the
 * bytes wait in the pipe for drain_pipe(). */
static int tx_splice_done(struct kite_stream *s, const struct tx_result *t)
{
	struct eng_item *it = s->qhead;

	if (t->in == -EINVAL || t->in == -EOPNOTSUPP) {
		/* This file cannot be spliced (its filesystem has no
		 * splice_read): copy it instead, if nothing went out yet. */
		if (!it || it->len != it->left)
			return t->in;
		it->mech = MECH_COPY;
		eng_pipe_put(s->e, s->pipe, false);
		s->pipe = -1;
		return TX_RETRY;
	}
	if (t->in < 0) {
		/* The pipe should be empty, but nothing says so for sure:
		 * never hand it to another stream. */
		s->pipe_dirty = true;
		return t->err ? t->err : t->in;
	}
	if (t->in == 0)
		return eng_short_file(s, it);
	it->off += (uint64_t)t->in;
	it->left -= (uint64_t)t->in;
	s->pipe_fill += (uint32_t)t->in;
	return tx_drain_done(s, t);
}

/* The rest of a buffer went out. A round of records is charged to the
 * item only once all of them are in the socket. */
static int tx_left_done(struct kite_stream *s, const struct tx_result *t)
{
	if (t->out) {
		s->buf_off += (uint32_t)t->out;
		if (!s->stage_plain)
			eng_item_done(s, s->qhead, t->out, us(s)->tx_path);
	}
	if (s->stage_plain && s->buf_off == s->buf_len) {
		eng_item_done(s, s->qhead, s->stage_plain, s->stage_path);
		s->stage_plain = 0;
	}
	return t->err;
}

/* File -> buffer -> socket. A short read cancelled the send: what did
 * arrive goes out in the next round (flush_round). */
static int tx_copy_done(struct kite_stream *s, const struct tx_result *t)
{
	struct eng_item *it = s->qhead;
	uint32_t h = s->buf_head;

	s->buf_head = 0;
	if (t->in < 0)
		return t->err ? t->err : t->in;
	if (t->in == 0)
		return eng_short_file(s, it);
	it->hleft -= h; /* the unit's head went into the buffer before the file bytes */
	it->off += (uint64_t)t->in;
	it->left -= (uint64_t)t->in;
	s->buf_len = h + (uint32_t)t->in;
	s->buf_off = 0;
	return tx_left_done(s, t);
}

static int tx_send_done(struct kite_stream *s, const struct tx_result *t)
{
	struct eng_item *it = s->qhead;

	if (t->out) {
		it->off += t->out;
		it->left -= t->out;
		eng_item_done(s, it, t->out, KITE_PATH_SEND);
	}
	return t->err;
}

/* File -> buffer for GnuTLS: encrypt_pending() seals it, in record order. */
static int tx_uread_done(struct kite_stream *s, const struct tx_result *t)
{
	if (t->in < 0)
		return t->in;
	if (t->in == 0)
		return eng_short_file(s, s->qhead);
	s->buf_plain = s->buf_head + (uint32_t)t->in; /* the head before the file bytes */
	return t->err;
}

/* A unit's head, ahead of its spliced range. */
static int tx_head_done(struct kite_stream *s, const struct tx_result *t)
{
	struct eng_item *it = s->qhead;

	if (t->out) {
		it->hleft -= (uint32_t)t->out;
		eng_item_done(s, it, t->out, KITE_PATH_SEND);
	}
	return t->err;
}

static int tx_stage_done(struct kite_stream *s, const struct tx_result *t)
{
	if (t->out) {
		s->stage_off += (uint32_t)t->out;
		if (s->stage_off == s->stage_len)
			s->stage_off = s->stage_len = 0;
	}
	return t->err;
}

static int tx_notify_done(struct kite_stream *s, const struct tx_result *t)
{
	if (t->out == us(s)->tx_len)
		s->notify_sent = true;
	return t->err;
}

static int (*const tx_handlers[])(struct kite_stream *, const struct tx_result *) = {
	[TXK_SPLICE] = tx_splice_done,
	[TXK_DRAIN] = tx_drain_done,
	[TXK_COPY] = tx_copy_done,
	[TXK_LEFT] = tx_left_done,
	[TXK_SEND] = tx_send_done,
	[TXK_HEAD] = tx_head_done,
	[TXK_UREAD] = tx_uread_done,
	[TXK_STAGE] = tx_stage_done,
	[TXK_NOTIFY] = tx_notify_done,
};

/* The TX chain is complete: its kind's handler accounts for what moved;
 * then the send timeout, errors, and the AEAD usage of kernel TX. */
static void tx_done(struct kite_stream *s)
{
	uint8_t kind = us(s)->tx_kind;
	struct tx_result t;
	int err;

	us(s)->stall_due = 0;
	if (us(s)->tx_slot >= 0) {
		u_file_put(s->e, us(s)->tx_slot);
		us(s)->tx_slot = -1;
	}
	tx_collect(s, &t);
	if (!eng_live(s)) {
		/* Dying: the pipe's content is unknown now. */
		if (s->pipe >= 0 && (t.in > 0 || s->pipe_fill))
			s->pipe_dirty = true;
		return;
	}
	if (t.out)
		s->t_active = eng_now_ms();
	err = kind < sizeof(tx_handlers) / sizeof(tx_handlers[0]) && tx_handlers[kind]
		      ? tx_handlers[kind](s, &t) : t.err;
	if (err == TX_RETRY)
		return;
	if (err) {
		if (s->state == ST_LINGER)
			eng_finish(s); /* our end is out: the peer went first */
		else
			eng_fail(s, err);
		return;
	}
	if (s->ktx && t.outs)
		(void)eng_ktls_account(s, t.outs, t.out);
}

/* ---- The end of a stream ------------------------------------------------- */

static void cancel_chain_ops(struct kite_stream *s, struct uchain *ch)
{
	for (int i = 0; i < ch->n && us(s)->misc.n < 4; i++) {
		struct io_uring_sqe *q;

		/* Cancelling the head of a link fails the rest. */
		if (ch->done & (1u << i))
			continue;
		q = c_op(s->e, &us(s)->misc, s, UK_MISC, RO_CANCEL, -1);
		io_uring_prep_cancel(q, &ch->op[i], 0);
	}
}

static void dead_step(struct kite_stream *s)
{
	struct kite_engine *e = s->e;
	struct io_uring_sqe *q;

	if (us(s)->rx.pend || us(s)->tx.pend) {
		if (!us(s)->cancel_sent && !us(s)->misc.pend && u_room(e, 4)) {
			ch_begin(&us(s)->misc);
			if (us(s)->rx.pend)
				cancel_chain_ops(s, &us(s)->rx);
			if (us(s)->tx.pend)
				cancel_chain_ops(s, &us(s)->tx);
			us(s)->cancel_sent = true;
		}
		return; /* every completion kicks us again */
	}
	if (us(s)->misc.pend)
		return;
	eng_release_all(s);
	if (us(s)->close_sent)
		return;
	eng_close_prepare(s);
	if (!u_room(e, 1)) {
		close(s->fd);
		eng_sys(e, -1);
		us(s)->close_sent = true;
		eng_zombie(s);
		return;
	}
	ch_begin(&us(s)->misc);
	q = c_op(e, &us(s)->misc, s, UK_MISC, RO_CLOSE, -1);
	io_uring_prep_close(q, s->fd);
	us(s)->close_sent = true;
}

static void misc_done(struct kite_stream *s)
{
	if (us(s)->close_sent)
		eng_zombie(s);
}

/* ---- progress / wait -------------------------------------------------------- */

static void u_progress(struct kite_stream *s)
{
	switch (s->state) {
	case ST_HANDSHAKE:
		if (us(s)->rx.pend)
			return;
		hs_step(s);
		if (s->state != ST_OPEN)
			return;
		/* fallthrough */
	case ST_OPEN:
	case ST_LINGER:
		if (us(s)->ctrl_ready && !us(s)->tx.pend)
			ktls_control(s);
		if (!us(s)->tx.pend && eng_live(s))
			tx_next(s);
		if (eng_live(s) && !us(s)->rx.pend && !us(s)->ctrl_ready) {
			if (eng_rx_wanted(s))
				rx_arm(s);
			else if (s->rx_eof && s->state == ST_LINGER)
				eng_finish(s);
		}
		if (eng_live(s))
			timer_arm(s, eng_now_ms());
		if (s->state != ST_DEAD)
			return;
		/* fallthrough */
	case ST_DEAD:
		dead_step(s);
		return;
	default:
		return;
	}
}

/* What a stream's op did, for the seam's cqe filter (tests only). */
static int uop_of(const struct kite_stream *s, const struct uchain *ch, int i)
{
	switch (ch->role[i]) {
	case RO_RECV:
		return s->krx ? KITE_UOP_RECVMSG : KITE_UOP_RECV;
	case RO_FILE_IN:
		return us(s)->tx_kind == TXK_SPLICE ? KITE_UOP_SPLICE_IN : KITE_UOP_READ;
	case RO_SOCK_OUT:
		return us(s)->tx_kind == TXK_SPLICE || us(s)->tx_kind == TXK_DRAIN ? KITE_UOP_SPLICE_OUT
			: us(s)->tx_kind == TXK_NOTIFY ? KITE_UOP_SENDMSG : KITE_UOP_SEND;
	default:
		return KITE_UOP_OTHER;
	}
}

static void on_cqe(struct kite_engine *e, struct io_uring_cqe *cqe)
{
	struct uop *op = io_uring_cqe_get_data(cqe);
	bool more = cqe->flags & IORING_CQE_F_MORE;
	struct kite_stream *s;
	struct uchain *ch;

	if (!op)
		return;
	if (!more)
		e->inflight--;
	switch (op->kind) {
	case UK_ACCEPT:
		on_accept(e, op->owner, kite_sys->cqe ? kite_sys->cqe(KITE_UOP_ACCEPT, cqe->res)
						      : cqe->res, more);
		return;
	case UK_EVENTFD:
		on_eventfd(e, cqe->res, more);
		return;
	case UK_RX:
	case UK_TX:
	case UK_MISC:
		break;
	default:
		return;
	}
	s = op->owner;
	ch = op->kind == UK_RX ? &us(s)->rx : op->kind == UK_TX ? &us(s)->tx : &us(s)->misc;
	ch->res[op->idx] = kite_sys->cqe ? kite_sys->cqe(uop_of(s, ch, op->idx), cqe->res)
					 : cqe->res;
	if (op->kind == UK_RX && (cqe->flags & IORING_CQE_F_BUFFER))
		us(s)->rx_bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
	ch->done |= (uint8_t)(1u << op->idx);
	if (--ch->pend)
		return;
	if (op->kind == UK_RX)
		rx_done(s);
	else if (op->kind == UK_TX)
		tx_done(s);
	else
		misc_done(s);
	eng_kick(s);
}

static int u_wait(struct kite_engine *e, int timeout_ms)
{
	struct uring_state *u = e->ring;
	struct io_uring *r = &u->ring;
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts;
	struct eng_timer *t;
	uint64_t now = eng_now_ms();
	unsigned head, n = 0;
	int ret;

	if (u->disabled) {
		/* SINGLE_ISSUER: the thread that enables the ring is its only
		 * submitter from now on. */
		/* liburing 2.3 declares io_uring_enable_rings() but does not
		 * export it: the register syscall directly. */
		ret = (int)syscall(__NR_io_uring_register, r->ring_fd, IORING_REGISTER_ENABLE_RINGS,
				   NULL, 0);
		eng_sys(e, -1);
		if (ret < 0)
			return -errno;
		u->disabled = false;
	}
	if (!e->quiesced)
		arm_eventfd(e);
	for (unsigned i = 0; i < e->nlisteners; i++) {
		struct eng_listener *l = &e->listeners[i];

		if (l->armed || l->fd < 0)
			continue;
		if (l->retry_at > now) {
			if (timeout_ms < 0 || (uint64_t)timeout_ms > l->retry_at - now)
				timeout_ms = (int)(l->retry_at - now);
			continue;
		}
		arm_accept(e, l);
	}
	/* The wait ends at the nearest deadline: no timeout operations. */
	if ((t = eng_timer_top(&u->timers))) {
		if (t->due <= now)
			timeout_ms = 0;
		else if (timeout_ms < 0 || (uint64_t)timeout_ms > t->due - now)
			timeout_ms = (int)(t->due - now);
	}
	if (timeout_ms == 0) {
		e->st.enters++;
		eng_sys(e, -1);
		ret = io_uring_submit_and_get_events(r);
	} else {
		/* liburing enters the kernel when there is something to submit
		 * or nothing to reap: count what it does. */
		if (io_uring_sq_ready(r) || !io_uring_cq_ready(r)) {
			e->st.enters++;
			eng_sys(e, -1);
		}
		ts.tv_sec = timeout_ms / 1000;
		ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
		ret = io_uring_submit_and_wait_timeout(r, &cqe, 1, timeout_ms > 0 ? &ts : NULL, NULL);
	}
	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
		return ret;
	io_uring_for_each_cqe(r, head, cqe) {
		on_cqe(e, cqe);
		n++;
	}
	io_uring_cq_advance(r, n);
	timers_run(e);
	return 0;
}

static void u_quiesce(struct kite_engine *e)
{
	struct uring_state *u = e->ring;
	struct io_uring_sqe *q;

	e->quiesced = true;
	for (unsigned i = 0; i < e->nlisteners; i++) {
		struct eng_listener *l = &e->listeners[i];

		if (l->armed && u_room(e, 1)) {
			q = io_uring_get_sqe(&u->ring);
			io_uring_prep_cancel(q, accept_op(e, l), 0);
			io_uring_sqe_set_data(q, NULL);
		}
		l->fd = -1;
	}
	if (u->ev_armed && u_room(e, 1)) {
		q = io_uring_get_sqe(&u->ring);
		io_uring_prep_cancel(q, &u->ev_op, 0);
		io_uring_sqe_set_data(q, NULL);
	}
}

/* ---- Setup ------------------------------------------------------------------ */

static void disabled_hint(char *buf, size_t len, int err)
{
	FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
	int v = -1;

	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = -1;
		fclose(f);
	}
	if (err == -EPERM && v > 0)
		snprintf(buf, len, " (sysctl kernel.io_uring_disabled=%d%s)", v,
			 v == 1 ? ": only members of kernel.io_uring_group" : "");
	else if (err == -EPERM)
		snprintf(buf, len, " (blocked by seccomp, an LSM or a container policy)");
	else if (err == -ENOSYS)
		snprintf(buf, len, " (kernel without CONFIG_IO_URING, or blocked by seccomp)");
	else
		buf[0] = 0;
}

static const struct {
	int op;
	const char *name;
	bool required;
} needed_ops[] = {
	{IORING_OP_POLL_ADD, "POLL_ADD", true},
	{IORING_OP_TIMEOUT, "TIMEOUT", true},
	{IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL", true},
	{IORING_OP_ACCEPT, "ACCEPT", true},
	{IORING_OP_RECV, "RECV", true},
	{IORING_OP_SEND, "SEND", true},
	{IORING_OP_RECVMSG, "RECVMSG", true},
	{IORING_OP_SENDMSG, "SENDMSG", true},
	{IORING_OP_READ, "READ", true},
	{IORING_OP_READ_FIXED, "READ_FIXED", true},
	{IORING_OP_CLOSE, "CLOSE", true},
	{IORING_OP_SPLICE, "SPLICE", false},
};

static void u_fini(struct kite_engine *e)
{
	struct uring_state *u = e->ring;

	if (!u)
		return;
	io_uring_queue_exit(&u->ring);
	rxring_fini(u);
	files_fini(u);
	eng_pools_fini(e);
	eng_timers_fini(&u->timers);
	free(u);
	e->ring = NULL;
}

/* The ring itself, with the best setup flags this kernel takes. Best first:
 * SINGLE_ISSUER|DEFER_TASKRUN (6.1) runs completion work only when we ask
 * for events, on our thread; COOP_TASKRUN (5.19) avoids interrupting us for
 * it; SUBMIT_ALL (5.18) keeps a batch going past one bad SQE. R_DISABLED:
 * the ring is enabled by the thread that runs it, which SINGLE_ISSUER then
 * binds. The basic rung takes none of them. */
static int ring_setup(struct kite_engine *e, struct uring_state *u)
{
	static const unsigned ladder[] = {
		IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
			IORING_SETUP_R_DISABLED,
		IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
		IORING_SETUP_SUBMIT_ALL,
		0,
	};
	struct io_uring_params p;
	char hint[160];
	int r = -EINVAL;

	for (unsigned i = e->rung == KITE_ENGINE_URING_BASIC ? 3 : 0; i < 4; i++) {
		memset(&p, 0, sizeof(p));
		p.flags = ladder[i] | IORING_SETUP_CQSIZE;
		/* Room for every stream's chains to complete at once. */
		p.cq_entries = e->cfg.ring_entries * 8;
		r = io_uring_queue_init_params(e->cfg.ring_entries, &u->ring, &p);
		eng_sys(e, -1);
		if (r != -EINVAL)
			break; /* EINVAL: flags this kernel does not know; fewer */
	}
	if (r) {
		disabled_hint(hint, sizeof(hint), r);
		snprintf(e->reason, sizeof(e->reason), "io_uring_setup: %s%s", kite_strerror(r), hint);
		return r;
	}
	e->ring_flags = p.flags & ~(unsigned)IORING_SETUP_CQSIZE;
	u->disabled = p.flags & IORING_SETUP_R_DISABLED;
	return 0;
}

/* Probe the opcodes (IORING_REGISTER_PROBE, 5.6): a kernel or policy
 * without one of them drops to the next rung; without SPLICE there are no
 * pipes and file ranges take the copy path. */
static int probe_ops(struct kite_engine *e, struct uring_state *u)
{
	struct io_uring_probe *probe = io_uring_get_probe_ring(&u->ring);
	char miss[160] = "";

	eng_sys(e, -1);
	if (!probe) {
		snprintf(e->reason, sizeof(e->reason), "io_uring opcode probe failed (Linux < 5.6)");
		return -EOPNOTSUPP;
	}
	for (unsigned i = 0; i < sizeof(needed_ops) / sizeof(needed_ops[0]); i++) {
		if (io_uring_opcode_supported(probe, needed_ops[i].op))
			continue;
		if (needed_ops[i].op == IORING_OP_SPLICE)
			e->cfg.pipes = 0;
		else if (needed_ops[i].required)
			snprintf(miss + strlen(miss), sizeof(miss) - strlen(miss), " %s",
				 needed_ops[i].name);
	}
	io_uring_free_probe(probe);
	if (miss[0]) {
		snprintf(e->reason, sizeof(e->reason), "io_uring lacks opcodes:%s", miss);
		return -EOPNOTSUPP;
	}
	return 0;
}

/* Registered buffers: pinned once, no per-I/O page walk (READ_FIXED).
 * Needs RLIMIT_MEMLOCK before Linux 5.12. */
static int register_bufs(struct kite_engine *e, struct uring_state *u)
{
	struct iovec *iov = calloc(e->nbufs, sizeof(*iov));
	int r;

	if (!iov)
		return -ENOMEM;
	for (unsigned i = 0; i < e->nbufs; i++) {
		iov[i].iov_base = eng_buf(e, (int)i);
		iov[i].iov_len = e->buf_stride;
	}
	r = io_uring_register_buffers(&u->ring, iov, e->nbufs);
	eng_sys(e, -1);
	free(iov);
	if (r)
		snprintf(e->reason, sizeof(e->reason), "registering %u buffers: %s%s", e->nbufs,
			 kite_strerror(r), r == -ENOMEM ? " (RLIMIT_MEMLOCK?)" : "");
	return r;
}

static void describe(struct kite_engine *e, const char *rxnote, const char *filenote)
{
	snprintf(e->detail, sizeof(e->detail), "io_uring %s%s%s%s%s, %s, %u %s buffers of %zu KiB, "
		 "%u pipes of %zu KiB, %s, %s",
		 e->ring_flags & IORING_SETUP_SINGLE_ISSUER ? "SINGLE_ISSUER|" : "",
		 e->ring_flags & IORING_SETUP_DEFER_TASKRUN ? "DEFER_TASKRUN|" : "",
		 e->ring_flags & IORING_SETUP_COOP_TASKRUN ? "COOP_TASKRUN|" : "",
		 e->ring_flags & IORING_SETUP_SUBMIT_ALL ? "SUBMIT_ALL" : "",
		 e->ring_flags ? "" : "no setup flags",
		 e->multishot ? "multishot accept" : "single-shot accept",
		 e->nbufs, e->fixed_bufs ? "registered" : "plain", e->cfg.buffer_size >> 10,
		 e->npipes, e->pipe_cap >> 10, rxnote, filenote);
}

static int u_init(struct kite_engine *e)
{
	/* SPLICE always runs in io-wq workers (it may block on the file):
	 * bound them so a burst cannot spawn hundreds. */
	unsigned workers[2] = {8, 16};
	char rxnote[96] = "own receive buffers", filenote[96] = "no registered files";
	struct uring_state *u;
	int r;

	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	e->ring = u;
	r = ring_setup(e, u);
	if (r) {
		free(u);
		e->ring = NULL;
		return r;
	}
	r = probe_ops(e, u);
	if (r)
		goto fail;
	r = eng_pools_init(e);
	if (r) {
		snprintf(e->reason, sizeof(e->reason), "buffer pool: %s", kite_strerror(r));
		goto fail;
	}
	if (e->rung != KITE_ENGINE_URING_BASIC) {
		r = register_bufs(e, u);
		if (r)
			goto fail;
		e->fixed_bufs = true;
		e->multishot = true;
		rxring_init(e, u, rxnote, sizeof(rxnote));
		files_init(e, u, filenote, sizeof(filenote));
	}
	(void)io_uring_register_iowq_max_workers(&u->ring, workers);
	eng_sys(e, -1);
	describe(e, rxnote, filenote);
	return 0;
fail:
	eng_pools_fini(e);
	io_uring_queue_exit(&u->ring);
	free(u);
	e->ring = NULL;
	return r;
}

const struct eng_backend eng_uring = {
	.name = "uring",
	.stream_size = sizeof(struct uring_stream),
	.stream_free = u_stream_free,
	.tx_busy = u_tx_busy,
	.dump = u_dump,
	.init = u_init,
	.fini = u_fini,
	.listen = u_listen,
	.attach = u_attach,
	.progress = u_progress,
	.wait = u_wait,
	.quiesce = u_quiesce,
	.file_get = u_file_get,
	.file_put = u_file_put,
	.forget_fd = u_forget_fd,
};
