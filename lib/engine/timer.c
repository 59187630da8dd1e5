/* SPDX-License-Identifier: MIT */
/*
 * Deadlines of many streams, nearest first: a binary min-heap of timers
 * embedded in the streams. A loop turn looks only at the top, so 10,000
 * idle streams cost nothing until one of them is due; setting, moving and
 * removing a timer are O(log n) and never allocate (the backend reserves
 * room for every stream when it attaches one).
 */
#include <errno.h>
#include <stdlib.h>

#include "core.h"

static void put(struct eng_timers *h, unsigned i, struct eng_timer *t)
{
	h->v[i] = t;
	t->pos = (int)i;
}

static void sift_up(struct eng_timers *h, unsigned i)
{
	struct eng_timer *t = h->v[i];

	while (i) {
		unsigned up = (i - 1) / 2;

		if (h->v[up]->due <= t->due)
			break;
		put(h, i, h->v[up]);
		i = up;
	}
	put(h, i, t);
}

static void sift_down(struct eng_timers *h, unsigned i)
{
	struct eng_timer *t = h->v[i];

	for (;;) {
		unsigned c = 2 * i + 1;

		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->v[c + 1]->due < h->v[c]->due)
			c++;
		if (t->due <= h->v[c]->due)
			break;
		put(h, i, h->v[c]);
		i = c;
	}
	put(h, i, t);
}

int eng_timers_reserve(struct eng_timers *h, size_t n)
{
	struct eng_timer **v;
	size_t cap;

	if (n <= h->cap)
		return 0;
	cap = h->cap ? h->cap : 64;
	while (cap < n)
		cap *= 2;
	v = realloc(h->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	h->v = v;
	h->cap = cap;
	return 0;
}

void eng_timer_set(struct eng_timers *h, struct eng_timer *t, uint64_t due)
{
	uint64_t was = t->due;

	t->due = due;
	if (t->pos < 0) {
		/* eng_timers_reserve() made room for every timer that exists. */
		if (h->n == h->cap && eng_timers_reserve(h, h->n + 1))
			return; /* not reached while the backend reserves */
		put(h, h->n++, t);
		sift_up(h, (unsigned)t->pos);
	} else if (due < was) {
		sift_up(h, (unsigned)t->pos);
	} else {
		sift_down(h, (unsigned)t->pos);
	}
}

void eng_timer_del(struct eng_timers *h, struct eng_timer *t)
{
	unsigned i = (unsigned)t->pos;
	struct eng_timer *last;

	if (t->pos < 0)
		return;
	t->pos = -1;
	last = h->v[--h->n];
	if (last == t)
		return;
	/* The last leaf fills the hole and moves whichever way its key says. */
	put(h, i, last);
	if (i && h->v[(i - 1) / 2]->due > last->due)
		sift_up(h, i);
	else
		sift_down(h, i);
}

void eng_timers_fini(struct eng_timers *h)
{
	free(h->v);
	h->v = NULL;
	h->n = h->cap = 0;
}
