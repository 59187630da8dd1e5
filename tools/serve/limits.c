/* SPDX-License-Identifier: MIT */
/*
 * Open connections per client address, shared by every worker thread: an
 * open-addressing table under one mutex (taken twice per connection, never
 * per request). Slots are at least twice the global connection cap and
 * only addresses with open connections occupy one, so the table never
 * fills; deletion shifts entries back so no tombstones accumulate.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "server.h"

int iplimit_init(struct iplimit *l, unsigned max_per_ip, unsigned max_total)
{
	unsigned slots = 64;

	memset(l, 0, sizeof(*l));
	l->max = max_per_ip;
	while (slots < 2u * max_total && slots < (1u << 30))
		slots *= 2;
	l->slot = calloc(slots, sizeof(*l->slot));
	if (!l->slot)
		return -ENOMEM;
	l->mask = slots - 1;
	/* A keyed hash: clients cannot choose addresses that collide. */
	if (getrandom(&l->seed, sizeof(l->seed), 0) != sizeof(l->seed))
		l->seed = (uint64_t)(uintptr_t)l ^ 0x9e3779b97f4a7c15ull;
	pthread_mutex_init(&l->mu, NULL);
	return 0;
}

void iplimit_fini(struct iplimit *l)
{
	if (!l->slot)
		return;
	pthread_mutex_destroy(&l->mu);
	free(l->slot);
	l->slot = NULL;
}

static unsigned hash(const struct iplimit *l, const uint8_t a[16])
{
	uint64_t h = l->seed ^ 0xcbf29ce484222325ull;

	for (int i = 0; i < 16; i++)
		h = (h ^ a[i]) * 0x100000001b3ull;
	h ^= h >> 29;
	return (unsigned)h & l->mask;
}

/* The slot holding a, or the empty slot where it would go. */
static unsigned find(const struct iplimit *l, const uint8_t a[16])
{
	unsigned i = hash(l, a);

	while (l->slot[i].n && memcmp(l->slot[i].a, a, 16))
		i = (i + 1) & l->mask;
	return i;
}

bool iplimit_take(struct iplimit *l, const uint8_t a[16])
{
	bool ok = true;
	unsigned i;

	if (!l->max)
		return true;
	pthread_mutex_lock(&l->mu);
	i = find(l, a);
	if (l->slot[i].n >= l->max) {
		ok = false;
	} else {
		memcpy(l->slot[i].a, a, 16);
		l->slot[i].n++;
	}
	pthread_mutex_unlock(&l->mu);
	return ok;
}

void iplimit_put(struct iplimit *l, const uint8_t a[16])
{
	unsigned i, j;

	if (!l->max)
		return;
	pthread_mutex_lock(&l->mu);
	i = find(l, a);
	if (!l->slot[i].n || --l->slot[i].n)
		goto out;
	/* Backward-shift deletion (linear probing): move later entries of
	 * the run into the hole when their home slot allows it. */
	for (j = (i + 1) & l->mask; l->slot[j].n; j = (j + 1) & l->mask) {
		unsigned home = hash(l, l->slot[j].a);

		/* Leave j alone if its home lies cyclically in (i, j]. */
		if ((j > i && home > i && home <= j) || (j < i && (home > i || home <= j)))
			continue;
		l->slot[i] = l->slot[j];
		l->slot[j].n = 0;
		i = j;
	}
out:
	pthread_mutex_unlock(&l->mu);
}

void ip_key(const struct sockaddr_storage *ss, uint8_t a[16], char *text, size_t cap)
{
	memset(a, 0, 16);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

		a[10] = a[11] = 0xff;
		memcpy(a + 12, &in->sin_addr, 4);
		if (!inet_ntop(AF_INET, &in->sin_addr, text, (socklen_t)cap))
			snprintf(text, cap, "-");
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

		memcpy(a, &in6->sin6_addr, 16);
		/* A v4-mapped peer on a dual-stack listener logs as IPv4. */
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			if (!inet_ntop(AF_INET, a + 12, text, (socklen_t)cap))
				snprintf(text, cap, "-");
		} else if (!inet_ntop(AF_INET6, &in6->sin6_addr, text, (socklen_t)cap)) {
			snprintf(text, cap, "-");
		}
	} else {
		snprintf(text, cap, "-");
	}
}
