/* SPDX-License-Identifier: MIT */
/*
 * The engine's dispatch loop (lib/engine/core.c) on its own, with a recording
 * backend instead of a kernel: every kicked stream runs progress() exactly
 * once per kick, in kick order, and a stream that turns into a zombie
 * while on the kick list neither runs nor cuts off the streams queued
 * behind it; on_close and the free come only after the list is empty.
 *
 * The orders below are the ones a single completion batch produces (one
 * stream's receive and close completions around another stream's). The
 * session-3 bug, eng_zombie() clearing kick_next, dropped every stream
 * behind the zombie here, and those streams never ran again.
 */
#include <string.h>

#include "common.h"
#include "engine/core.h"

#define NS 6

static struct kite_engine eng;
static struct kite_stream *st[NS];
static char order[64];          /* progress calls, as stream letters */
static size_t norder;
static unsigned closes[NS];
static bool freed_before_list_empty;

/* What a stream does when its progress() runs (set per test). */
static void (*on_progress[NS])(void);

static int idx(const struct kite_stream *s)
{
	for (int i = 0; i < NS; i++)
		if (st[i] == s)
			return i;
	t_fail("unknown stream %p", (const void *)s);
}

static void fake_progress(struct kite_stream *s)
{
	int i = idx(s);

	t_assert(s->state != ST_ZOMBIE, "progress() on a zombie (%c)", 'A' + i);
	t_assert(norder < sizeof(order) - 1, "progress loop");
	order[norder++] = (char)('A' + i);
	order[norder] = '\0';
	if (on_progress[i])
		on_progress[i]();
}

static const struct eng_backend fake_be = {.name = "fake", .progress = fake_progress};

static void on_close(struct kite_stream *s, int err)
{
	int i = idx(s);

	(void)err;
	if (eng.kick_head)
		freed_before_list_empty = true;
	closes[i]++;
	st[i] = NULL; /* freed when this returns */
}

static void setup(void)
{
	memset(&eng, 0, sizeof(eng));
	eng.be = &fake_be;
	eng.cfg.on_close = on_close;
	eng.kick_tail = &eng.kick_head;
	eng.wait_tail = &eng.wait_head;
	eng.pipe_free = -1;
	for (int i = 0; i < NS; i++) {
		struct kite_stream *s = calloc(1, sizeof(*s));

		t_assert(s, "calloc");
		s->e = &eng;
		s->state = ST_OPEN;
		s->fd = -1;
		s->pipe = s->buf = s->late_fd = -1;
		s->qtail = &s->qhead;
		s->next = eng.streams;
		if (eng.streams)
			eng.streams->prev = s;
		eng.streams = s;
		eng.st.streams++;
		st[i] = s;
		on_progress[i] = NULL;
		closes[i] = 0;
	}
	norder = 0;
	order[0] = '\0';
	freed_before_list_empty = false;
}

static void teardown(void)
{
	t_assert(!eng.kick_head && !eng.zombies, "lists left non-empty");
	for (int i = 0; i < NS; i++) {
		if (st[i]) {
			eng_zombie(st[i]);
		}
	}
	eng_dispatch(&eng); /* reaps the rest */
	t_assert(!eng.streams && eng.st.streams == 0, "streams left: %llu",
		 (unsigned long long)eng.st.streams);
	t_assert(!freed_before_list_empty, "a stream was freed while the kick list was not empty");
}

static void expect_order(const char *name, const char *want)
{
	if (strcmp(order, want))
		t_fail("%s: progress ran \"%s\", want \"%s\"", name, order, want);
}

/* A kicked, B kicked, then A's close completes (same batch). */
static void zombie_at_head(void)
{
	setup();
	eng_kick(st[0]);
	eng_kick(st[1]);
	eng_kick(st[2]);
	eng_zombie(st[0]);
	eng_dispatch(&eng);
	expect_order("zombie at the head", "BC");
	t_assert(closes[0] == 1 && !st[0], "A closed once, freed");
	/* The list still works: later kicks run. */
	eng_kick(st[1]);
	eng_dispatch(&eng);
	expect_order("kick after", "BCB");
	teardown();
}

/* The zombie in the middle and at the tail of the list. */
static void zombie_in_middle_and_tail(void)
{
	setup();
	eng_kick(st[0]);
	eng_kick(st[1]);
	eng_kick(st[2]);
	eng_kick(st[3]);
	eng_zombie(st[1]);
	eng_zombie(st[3]);
	/* A kick after the zombie at the tail appends behind it. */
	eng_kick(st[4]);
	eng_dispatch(&eng);
	expect_order("zombies in the middle and at the tail", "ACE");
	t_assert(closes[1] == 1 && closes[3] == 1, "zombies closed once");
	teardown();
}

/* A zombie is never kicked again, and kicking twice runs once. */
static void kicks_of_zombies_and_repeats(void)
{
	setup();
	eng_kick(st[0]);
	eng_kick(st[0]);
	eng_zombie(st[1]);
	eng_kick(st[1]);
	eng_kick(st[2]);
	eng_dispatch(&eng);
	expect_order("repeat and zombie kicks", "AC");
	teardown();
}

/* During progress: B kicks itself and D, and turns C (queued behind it)
 * into a zombie, as a completion handled from inside progress would. */
static void b_acts(void)
{
	static int runs;

	if (runs++)
		return;
	eng_kick(st[1]);
	eng_zombie(st[2]);
	eng_kick(st[3]);
}

static void changes_during_dispatch(void)
{
	setup();
	on_progress[1] = b_acts;
	eng_kick(st[0]);
	eng_kick(st[1]);
	eng_kick(st[2]);
	eng_kick(st[4]);
	eng_dispatch(&eng);
	expect_order("changes during dispatch", "ABEBD");
	t_assert(closes[2] == 1, "C closed once");
	teardown();
}

int main(void)
{
	zombie_at_head();
	zombie_in_middle_and_tail();
	kicks_of_zombies_and_repeats();
	changes_during_dispatch();
	printf("engine dispatch: 4 kick-list cases passed\n");
	return 0;
}
