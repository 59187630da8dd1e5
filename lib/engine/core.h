/* SPDX-License-Identifier: MIT */
/*
 * The engine's private interface: the core (core.c), the resource pools
 * (pool.c), the TLS context switch (ctx.c) and the two backends (uring.c,
 * epoll.c).
 *
 * Shape: every event (a completion, readiness, an API call from a
 * callback) only updates a stream's state and "kicks" it; the loop then
 * calls the backend's progress(s), the one place that decides what the
 * stream does next. Streams are freed only between loop iterations, after
 * on_close, when the kernel holds nothing of theirs.
 *
 * Who owns what. The core owns every stream's life: creation, the
 * handshake step (eng_handshake), eng_opened, deadlines (eng_deadline),
 * the send queue and its accounting (eng_item_done), on_drain
 * (eng_drained), the close sequence (eng_close_next, eng_fin_sent), end of
 * data and receive errors (eng_rx_end, eng_rx_error), failure (eng_fail),
 * short files, the reset on close, and the GnuTLS records in memory. A
 * backend moves bytes with its own kernel interface, calls those rules,
 * and keeps its per-stream state in a struct that starts with struct
 * kite_stream (struct eng_backend: stream_size).
 */
#ifndef KITE_ENGINE_PRIVATE_H
#define KITE_ENGINE_PRIVATE_H

#include <stdatomic.h>
#include <sys/socket.h>

#include "kite-private.h"

#define ENG_MAX_LISTENERS 16
#define ENG_ITEM_CHARGE 64u          /* queue bytes charged per item */
#define ENG_RX_BUF (KITE_MAX_RECORD + 256)
#define ENG_RX_RING_BUF 4096u        /* one buffer of the shared receive ring */
#define ENG_LINGER_MS 2000u          /* wait for the peer's FIN after ours */
#define ENG_EPOLL_TICK_MS 100        /* epoll rung: timer scan period */
/* Userspace TLS rounds read plaintext at this offset of a pool buffer and
 * let the records grow from 0: a record adds at most ENG_REC_SLACK bytes,
 * so 16 records of ciphertext never catch up with unread plaintext. */
#define ENG_REC_SLACK 256u
#define ENG_PLAIN_OFF 4096u
#define ENG_BUF_MAX (16u * KITE_MAX_RECORD)

enum eng_state {
	ST_HANDSHAKE,  /* TLS handshake running (readiness driven) */
	ST_OPEN,       /* data both ways */
	ST_LINGER,     /* close_notify and FIN sent; reading until the peer's end */
	ST_DEAD,       /* finishing: ops being cancelled, then close(fd) */
	ST_ZOMBIE,     /* fd closed, kernel done: on_close and free at the loop's end */
};

enum eng_item_kind { ITEM_BUF, ITEM_FILE };

/* A queued item: bytes (ITEM_BUF, in data) or a file range (ITEM_FILE)
 * that may start with head bytes (a unit, kite_stream_queue_unit(): the
 * head in data, sent or sealed before the range and counted in len). */
struct eng_item {
	struct eng_item *next;
	uint8_t kind;
	unsigned flags;       /* KITE_SENDFILE_CLOSE_FD, KITE_SENDFILE_KEEP_FD */
	int fd;               /* ITEM_FILE */
	uint32_t lane;        /* 0: the ordered lane (kite.h, kite_stream_queue_unit) */
	uint64_t tag;         /* finish tag: the queue is sorted by it */
	/* ITEM_FILE: registered file + 1 (eng_backend.file_get), 0: none, so
	 * that a zeroed item holds no registration. */
	unsigned reg;
	uint64_t off;         /* ITEM_FILE: next file offset to read; ITEM_BUF: bytes done */
	uint64_t len;         /* bytes not yet in the socket (head included) */
	uint64_t left;        /* bytes not yet taken (read from the file, or encrypted
			       * or sent from data); ITEM_FILE: of the range only */
	uint32_t head_len;    /* ITEM_FILE: head bytes in data */
	uint32_t hleft;       /* ITEM_FILE: head bytes not yet taken */
	uint8_t mech;         /* ITEM_FILE: MECH_* chosen at its first round (0: not yet) */
	uint32_t paths;       /* bit per enum kite_engine_path that carried bytes */
	size_t charge;        /* counted in stream->queued */
	uint8_t data[];       /* ITEM_BUF copy */
};

struct eng_listener {
	struct kite_engine *e;
	int fd;
	bool armed;
	bool multishot;
	bool accepted_any;
	uint64_t retry_at;    /* ms: re-arm after a transient accept error */
};

struct kite_stream {
	struct kite_engine *e;
	struct kite_stream *prev, *next;   /* e->streams */
	struct kite_stream *kick_next;     /* e->kick list */
	struct kite_stream *wait_next;     /* e->waiters: for a pipe or buffer */
	bool kicked, waiting;
	int fd;
	struct kite_conn *conn;            /* NULL: plaintext */
	void *user;

	enum eng_state state;
	bool opened;          /* on_open delivered */
	bool ktx, krx;        /* kernel TLS per direction */
	bool close_req;       /* kite_stream_close(): finish after the queue */
	/* TLS server stream before the client's first bytes: no conn yet
	 * (eng_tls_begin() makes it); hs_polled: the wait for them is armed. */
	bool tls_wait, hs_polled;
	bool notify_sent;     /* close_notify (or nothing, plaintext) done */
	bool fin_sent;        /* shutdown(SHUT_WR) done */
	bool rx_eof;          /* peer finished sending */
	bool rx_paused;       /* backpressure: not reading */
	bool rx_hold;         /* kite_stream_pause_rx(): the user stopped reading */
	bool rst;             /* close with a reset (abort) */
	bool drain_due;       /* on_drain when the queue empties */
	bool stage_mode;      /* GnuTLS push appends to the stage (userspace TX after the handshake) */
	bool rx_mem;          /* GnuTLS pull reads rx buffer (io_uring userspace RX) */
	int err;              /* first error; on_close(err) */

	struct eng_item *qhead, **qtail;
	size_t queued;
	uint64_t vtag;        /* tag of the last item that left the queue */
	uint64_t sent;        /* queued bytes handed to the kernel (kite_stream_sent) */

	uint64_t t_start;     /* ms: accept/adopt, later the LINGER start */
	uint64_t t_active;    /* ms: last byte received or sent */

	/* Resources held (indices into the engine's pools, -1: none). */
	int pipe;
	int late_fd;          /* a dropped item's file, closed when no op is in flight */
	struct eng_item *late_item; /* the dropped head item, freed when no op is in flight */
	uint32_t pipe_fill;   /* bytes in the pipe not yet in the socket */
	bool pipe_dirty;      /* unknown content: close it instead of reuse */
	/* A pool buffer: file bytes on the copy path, or GnuTLS records on
	 * the userspace path (ciphertext grows from 0 while the plaintext
	 * read at ENG_PLAIN_OFF is consumed record by record). */
	int buf;
	bool buf_stage;       /* GnuTLS push appends at buf_len */
	uint32_t buf_len, buf_off;
	uint32_t stage_limit; /* GnuTLS may write the buffer up to here */
	uint32_t buf_plain;   /* file bytes read for GnuTLS, not encrypted yet */
	uint32_t buf_head;    /* head bytes of the head item put before the file
			       * bytes of this round (in buf_plain once read) */
	uint64_t stage_plain; /* plaintext bytes of the head item in the buffer */
	uint8_t stage_path;   /* path those bytes are counted on */
	/* Records GnuTLS writes outside a round (alerts, close_notify,
	 * KeyUpdate replies): small, malloc'd. */
	uint8_t *stage_mem;
	uint32_t stage_len, stage_off, stage_cap;

	/* Userspace RX from memory (rx_mem): the bytes the backend received
	 * that the GnuTLS transport hands to GnuTLS (eng_pull). */
	uint8_t *rxbuf;
	uint32_t rx_have, rx_off;
	bool rx_fin;          /* the socket returned 0 after those bytes */
};

/* A backend: the ring or epoll. The choice is made once, in core.c. */
struct eng_backend {
	const char *name;
	/* Size of the backend's stream struct, which starts with a struct
	 * kite_stream (core fields) and adds the backend's own; 0: only the
	 * core's (test backends). */
	size_t stream_size;
	/* Free what the backend allocated for s (optional; called once, when
	 * the kernel holds nothing of s any more). */
	void (*stream_free)(struct kite_stream *s);
	/* Is an operation that may read the head item's file in flight?
	 * (optional: none by default) */
	bool (*tx_busy)(const struct kite_stream *s);
	/* The backend's part of a stream's state, one line on stderr
	 * (optional, tests that time out). */
	void (*dump)(const struct kite_stream *s);
	/* Set up; on failure return -errno and write why into e->reason. */
	int (*init)(struct kite_engine *e);
	void (*fini)(struct kite_engine *e);
	int (*listen)(struct kite_engine *e, struct eng_listener *l);
	/* New stream (adopted or accepted): register it. */
	int (*attach)(struct kite_stream *s);
	/* Do what the stream's state allows now. */
	void (*progress)(struct kite_stream *s);
	/* One loop iteration: wait at most timeout_ms (-1: forever) and handle
	 * the events. */
	int (*wait)(struct kite_engine *e, int timeout_ms);
	/* Cancel listener and wakeup operations (before destroy). */
	void (*quiesce)(struct kite_engine *e);
	/* Registered files (optional; KITE_SENDFILE_KEEP_FD): file_get returns
	 * the registration of fd with a reference for the caller, registering
	 * it first if needed, or -1 (none: the item reads through fd);
	 * file_put drops a reference; forget_fd unregisters fd once nothing
	 * holds its registration. */
	int (*file_get)(struct kite_engine *e, int fd);
	void (*file_put)(struct kite_engine *e, int slot);
	void (*forget_fd)(struct kite_engine *e, int fd);
};

struct eng_pipe {
	int rd, wr;
	int next_free;        /* free list, -1 ends */
};

struct kite_engine {
	struct kite_engine_config cfg;
	const struct eng_backend *be;
	enum kite_engine_backend rung;
	const char *rung_name;
	char detail[256];
	char reason[512];
	unsigned ring_flags;
	bool multishot;       /* io_uring: multishot accept and poll */
	bool fixed_bufs;      /* io_uring: buffers registered, READ_FIXED */

	int evfd;             /* kite_engine_stop() */
	atomic_int stop;
	bool in_run;
	bool quiesced;        /* destroy: no more accepts or wakeups */

	struct kite_engine_stats st;

	struct kite_stream *streams;
	struct kite_stream *kick_head, **kick_tail;
	struct kite_stream *zombies;
	struct kite_stream *wait_head, **wait_tail;

	struct eng_listener listeners[ENG_MAX_LISTENERS];
	unsigned nlisteners;

	/* Pools (pool.c). */
	struct eng_pipe *pipes;
	unsigned npipes;
	int pipe_free;
	size_t pipe_cap;      /* bytes one splice round moves: pipe size, 16 KiB multiple */
	uint8_t *bufmem;
	size_t bufmem_len;
	unsigned nbufs;
	size_t buf_stride;    /* buffer_size + ENG_PLAIN_OFF */
	int *buf_free;        /* stack */
	unsigned nbuf_free;

	uint8_t *scratch;     /* decrypted bytes for on_data, ENG_RX_BUF */

	/* Backend state. */
	void *ring;           /* io_uring rungs: struct uring_state (uring.c) */
	int epfd;             /* epoll rung */
	uint64_t inflight;    /* io_uring CQEs still expected (all owners) */
	uint64_t next_tick;   /* epoll rung: next timer scan, ms */
};

/* ---- core.c ---- */
uint64_t eng_now_ms(void);
void eng_kick(struct kite_stream *s);
/* Abort: first error wins; the backend cancels and closes with a reset. */
void eng_fail(struct kite_stream *s, int err);
/* Kernel TLS TX met a full socket: send what TCP holds (see engine/core.c). */
void eng_ktls_push(struct kite_stream *s);
/* Every stream's state on stderr (tests that time out). */
void eng_debug_dump(const struct kite_engine *e);

/* Graceful end reached (linger over): close without reset. */
void eng_finish(struct kite_stream *s);
/* The backend has closed fd and the kernel holds nothing of s. */
void eng_zombie(struct kite_stream *s);
struct kite_stream *eng_stream_new(struct kite_engine *e, int fd);
int eng_tls_begin(struct kite_stream *s);
/* Handshake done: offload state, transports, on_open. rx_mem: the
 * backend receives userspace TLS bytes into rxbuf for GnuTLS. */
void eng_opened(struct kite_stream *s, bool rx_mem);
/* Open for data, or lingering after our FIN: the states that move bytes. */
static inline bool eng_live(const struct kite_stream *s)
{
	return s->state == ST_OPEN || s->state == ST_LINGER;
}
int eng_handshake(struct kite_stream *s, bool readable);
unsigned eng_deadline(struct kite_stream *s, uint64_t now);
bool eng_tx_busy(const struct kite_stream *s);
bool eng_drained(struct kite_stream *s);
/* Closing, once the queue is empty: what the backend does next. */
enum eng_close {
	ENG_CLOSE_NONE,   /* nothing (not closing, or all done) */
	ENG_CLOSE_NOTIFY, /* send close_notify through kernel TLS, then set notify_sent */
	ENG_CLOSE_FLUSH,  /* send the staged records (close_notify) first */
	ENG_CLOSE_FIN,    /* shutdown(SHUT_WR), then eng_fin_sent() */
};
enum eng_close eng_close_next(struct kite_stream *s);
void eng_fin_sent(struct kite_stream *s);
void eng_rx_end(struct kite_stream *s);
void eng_rx_error(struct kite_stream *s, int err);
int eng_short_file(struct kite_stream *s, const struct eng_item *it);
void eng_close_prepare(struct kite_stream *s);
/* Deliver plaintext (len 0: end of the peer's data). */
void eng_deliver(struct kite_stream *s, const void *buf, size_t len);
/* Bytes of the head item went out; completes it when done. */
void eng_item_done(struct kite_stream *s, struct eng_item *it, uint64_t n, int path);
void eng_item_pop(struct kite_stream *s);
/* The head bytes of a unit not yet taken (it->hleft of them). */
static inline const uint8_t *eng_head(const struct eng_item *it)
{
	return it->data + (it->head_len - it->hleft);
}
/* Does more follow at once after n more bytes of the item's range? Then
 * the send says MSG_MORE / SPLICE_F_MORE and kernel TLS keeps the record
 * open for it. Only what is queued already counts: a record held open
 * with nothing behind it would wait for a send that may never come. */
static inline bool eng_more_after(const struct eng_item *it, uint64_t n)
{
	return it->left > n || (it->next && it->next->len);
}
/* May RX be armed now (open/linger, not paused, not at EOF)? Updates the
 * backpressure flag. */
bool eng_rx_wanted(struct kite_stream *s);
/* Does the stream have something to send? */
bool eng_tx_work(const struct kite_stream *s);
int eng_path(const struct kite_stream *s, int mech);
enum { MECH_NONE, MECH_SPLICE, MECH_SENDFILE, MECH_COPY };
/* Count a direct syscall (the engine's own, not the kernel's). */
static inline void eng_sys(struct kite_engine *e, int path)
{
	e->st.syscalls++;
	if (path >= 0)
		e->st.path[path].syscalls++;
}
/* TLS 1.3/1.2 records: GnuTLS transport of the engine's streams. */
void eng_tls_transport(struct kite_stream *s);
/* After kernel TX sent len bytes in calls operations: AEAD usage limit. */
int eng_ktls_account(struct kite_stream *s, size_t calls, size_t len);
/* Run every stream on the kick list through progress(); reap zombies. */
void eng_dispatch(struct kite_engine *e);
int eng_accepted(struct kite_engine *e, int fd);

/* ---- pool.c ---- */
int eng_pools_init(struct kite_engine *e);
void eng_pools_fini(struct kite_engine *e);
int eng_pipe_get(struct kite_engine *e);
void eng_pipe_put(struct kite_engine *e, int idx, bool dirty);
int eng_buf_get(struct kite_engine *e);
void eng_buf_put(struct kite_engine *e, int idx);
static inline uint8_t *eng_buf(struct kite_engine *e, int idx)
{
	return e->bufmem + (size_t)idx * e->buf_stride;
}
/* Queue s until a pipe or buffer is released. */
void eng_wait_resource(struct kite_stream *s);
/* Release every resource s holds (after its ops completed). */
void eng_release_all(struct kite_stream *s);

/* ---- timer.c ---- */
/* A deadline kept in a min-heap (struct eng_timers): the loop looks only at
 * the nearest one. pos -1: not in the heap. */
struct eng_timer {
	uint64_t due;         /* ms, eng_now_ms() clock */
	int pos;
};
struct eng_timers {
	struct eng_timer **v;
	size_t n, cap;
};
/* Room for n timers, so that eng_timer_set() never allocates: 0 or -ENOMEM. */
int eng_timers_reserve(struct eng_timers *h, size_t n);
/* Insert t at due, or move it there. */
void eng_timer_set(struct eng_timers *h, struct eng_timer *t, uint64_t due);
void eng_timer_del(struct eng_timers *h, struct eng_timer *t);
static inline struct eng_timer *eng_timer_top(const struct eng_timers *h)
{
	return h->n ? h->v[0] : NULL;
}
void eng_timers_fini(struct eng_timers *h);

/* ---- backends ---- */
extern const struct eng_backend eng_epoll;
#ifdef KITE_WITH_LIBURING /* lib/meson.build: liburing found */
extern const struct eng_backend eng_uring;
#endif

#endif /* KITE_ENGINE_PRIVATE_H */
