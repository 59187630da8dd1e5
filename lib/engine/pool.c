/* SPDX-License-Identifier: MIT */
/*
 * The engine's pools: pipes for SPLICE and I/O buffers. Both are fixed at
 * creation, so memory per engine is bounded whatever the peers do; a
 * stream that finds the pool empty waits in FIFO order (or, for a splice
 * round, takes the copy path through a buffer instead).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core.h"

static int pipe_open(struct kite_engine *e, struct eng_pipe *p)
{
	int fds[2];

	/* Blocking pipes on purpose: a splice into the pipe only starts on an
	 * empty pipe (it never waits for room), and do_splice() already
	 * treats the pipe side as non-blocking when the socket is O_NONBLOCK. */
	if (pipe2(fds, O_CLOEXEC))
		return -errno;
	eng_sys(e, -1);
	/* F_SETPIPE_SZ may be refused above fs.pipe-max-size or the per-user
	 * pipe-user-pages-soft budget; the default size still works. */
	if (fcntl(fds[1], F_SETPIPE_SZ, (int)e->cfg.pipe_size) < 0) {
		/* keep the default (16 pages) */
	}
	eng_sys(e, -1);
	p->rd = fds[0];
	p->wr = fds[1];
	return 0;
}

int eng_pools_init(struct kite_engine *e)
{
	unsigned want = e->cfg.pipes;
	int sz;

	e->pipe_free = -1;
	e->pipes = want ? calloc(want, sizeof(*e->pipes)) : NULL;
	if (want && !e->pipes)
		return -ENOMEM;
	for (unsigned i = 0; i < want; i++) {
		int r = pipe_open(e, &e->pipes[i]);

		if (r) {
			/* EMFILE/ENFILE: run with fewer pipes (the copy path
			 * covers the rest); none at all is fine too. */
			snprintf(e->reason + strlen(e->reason), sizeof(e->reason) - strlen(e->reason),
				 "%spipe pool: %u of %u pipes (%s)", e->reason[0] ? "; " : "", i, want,
				 kite_strerror(r));
			break;
		}
		e->pipes[i].next_free = e->pipe_free;
		e->pipe_free = (int)i;
		e->npipes = i + 1;
	}
	if (e->npipes) {
		sz = fcntl(e->pipes[0].wr, F_GETPIPE_SZ);
		eng_sys(e, -1);
		if (sz < (int)KITE_MAX_RECORD)
			sz = (int)KITE_MAX_RECORD;
		/* Whole records per round: a multiple of 16 KiB. */
		e->pipe_cap = (size_t)sz / KITE_MAX_RECORD * KITE_MAX_RECORD;
	}

	e->nbufs = e->cfg.buffers;
	e->buf_stride = e->cfg.buffer_size + ENG_PLAIN_OFF;
	e->bufmem_len = (size_t)e->nbufs * e->buf_stride;
	e->buf_free = calloc(e->nbufs ? e->nbufs : 1, sizeof(int));
	if (!e->buf_free)
		return -ENOMEM;
	if (e->nbufs) {
		/* One mapping: page aligned, registered with the ring as one
		 * iovec per buffer (READ_FIXED buf_index = buffer index). */
		e->bufmem = mmap(NULL, e->bufmem_len, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		eng_sys(e, -1);
		if (e->bufmem == MAP_FAILED) {
			e->bufmem = NULL;
			return -ENOMEM;
		}
	}
	for (unsigned i = 0; i < e->nbufs; i++)
		e->buf_free[e->nbuf_free++] = (int)(e->nbufs - 1 - i);
	return 0;
}

void eng_pools_fini(struct kite_engine *e)
{
	for (unsigned i = 0; i < e->npipes; i++) {
		if (e->pipes[i].rd >= 0)
			close(e->pipes[i].rd);
		if (e->pipes[i].wr >= 0)
			close(e->pipes[i].wr);
	}
	free(e->pipes);
	e->pipes = NULL;
	if (e->bufmem)
		munmap(e->bufmem, e->bufmem_len);
	e->bufmem = NULL;
	free(e->buf_free);
	e->buf_free = NULL;
	/* The engine may try the next rung with the same struct: its pools
	 * start from nothing again (a stale count wrote past buf_free). */
	e->npipes = 0;
	e->pipe_free = -1;
	e->nbufs = e->nbuf_free = 0;
}

int eng_pipe_get(struct kite_engine *e)
{
	int i = e->pipe_free;

	if (i < 0)
		return -1;
	e->pipe_free = e->pipes[i].next_free;
	return i;
}

void eng_pipe_put(struct kite_engine *e, int idx, bool dirty)
{
	struct eng_pipe *p = &e->pipes[idx];

	/* A pipe that may still hold bytes of an aborted stream must not
	 * leak them into the next one: replace it. */
	if (dirty) {
		close(p->rd);
		close(p->wr);
		eng_sys(e, -1);
		eng_sys(e, -1);
		p->rd = p->wr = -1;
		if (pipe_open(e, p))
			return; /* the pool shrinks by one; the copy path covers it */
	}
	p->next_free = e->pipe_free;
	e->pipe_free = idx;
}

int eng_buf_get(struct kite_engine *e)
{
	return e->nbuf_free ? e->buf_free[--e->nbuf_free] : -1;
}

void eng_buf_put(struct kite_engine *e, int idx)
{
	e->buf_free[e->nbuf_free++] = idx;
}

void eng_wait_resource(struct kite_stream *s)
{
	struct kite_engine *e = s->e;

	if (s->waiting)
		return;
	s->waiting = true;
	s->wait_next = NULL;
	*e->wait_tail = s;
	e->wait_tail = &s->wait_next;
	e->st.buffer_waits++;
}

void eng_release_all(struct kite_stream *s)
{
	struct kite_engine *e = s->e;

	if (s->late_fd >= 0) {
		close(s->late_fd);
		eng_sys(e, -1);
		s->late_fd = -1;
	}
	free(s->late_item);
	s->late_item = NULL;
	if (s->pipe >= 0) {
		eng_pipe_put(e, s->pipe, s->pipe_dirty || s->pipe_fill);
		s->pipe = -1;
		s->pipe_fill = 0;
		s->pipe_dirty = false;
	}
	if (s->buf >= 0) {
		eng_buf_put(e, s->buf);
		s->buf = -1;
		s->buf_len = s->buf_off = s->buf_plain = 0;
		s->buf_stage = false;
	}
}
