/* SPDX-License-Identifier: MIT */
/*
 * The engine's deadline heap (lib/engine/timer.c) against a plain array:
 * random sets (insert, move earlier, move later), deletes from anywhere and
 * pops of the top, 10,000 timers at most; after every step the top must be
 * the earliest deadline of the timers in the heap and every timer must know
 * its own place. A heap that lost or misordered a timer would let a stream
 * miss its idle, handshake, linger or send deadline.
 */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "engine/core.h"

#define N 10000

static struct eng_timer tm[N];
static bool in[N];

static void check(const struct eng_timers *h, unsigned step)
{
	uint64_t min = UINT64_MAX;
	size_t n = 0;

	for (unsigned i = 0; i < N; i++) {
		if (!in[i]) {
			t_assert(tm[i].pos == -1, "step %u: timer %u out but at %d", step, i, tm[i].pos);
			continue;
		}
		n++;
		t_assert(tm[i].pos >= 0 && (size_t)tm[i].pos < h->n && h->v[tm[i].pos] == &tm[i],
			 "step %u: timer %u does not know its place", step, i);
		if (tm[i].due < min)
			min = tm[i].due;
	}
	t_assert(n == h->n, "step %u: %zu timers in, heap says %zu", step, n, h->n);
	t_assert(!n || eng_timer_top(h)->due == min, "step %u: top %llu, earliest %llu", step,
		 (unsigned long long)eng_timer_top(h)->due, (unsigned long long)min);
}

int main(void)
{
	struct eng_timers h;
	uint64_t last = 0;
	unsigned pops = 0;

	memset(&h, 0, sizeof(h));
	srand(7);
	for (unsigned i = 0; i < N; i++)
		tm[i].pos = -1;
	t_ok(eng_timers_reserve(&h, N));
	for (unsigned step = 0; step < 200000; step++) {
		unsigned i = (unsigned)rand() % N, op = (unsigned)rand() % 8;

		if (op < 5) {
			eng_timer_set(&h, &tm[i], (uint64_t)(rand() % 100000));
			in[i] = true;
		} else if (op < 7) {
			eng_timer_del(&h, &tm[i]);
			in[i] = false;
		} else if (eng_timer_top(&h)) {
			struct eng_timer *t = eng_timer_top(&h);

			eng_timer_del(&h, t);
			in[t - tm] = false;
			pops++;
		}
		if (step % 97 == 0 || step < 2000)
			check(&h, step);
	}
	check(&h, 200000);
	/* Draining gives the deadlines in order. */
	while (eng_timer_top(&h)) {
		struct eng_timer *t = eng_timer_top(&h);

		t_assert(t->due >= last, "drain out of order: %llu after %llu",
			 (unsigned long long)t->due, (unsigned long long)last);
		last = t->due;
		eng_timer_del(&h, t);
		in[t - tm] = false;
	}
	check(&h, 200001);
	eng_timers_fini(&h);
	printf("engine timer heap: 200000 random steps (%u pops) and a sorted drain ok\n", pops);
	return 0;
}
