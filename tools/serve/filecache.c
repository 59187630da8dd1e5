/* SPDX-License-Identifier: MIT */
/* kite-serve's open-file cache (filecache.h): a hash table and an LRU list. */
#include "filecache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "session.h"

/* A file whose mtime or ctime is this recent may still be being written:
 * the kernel updates both timestamps before it copies a write's bytes, so
 * a read in between sees a half-written file with the final stat. Its
 * bytes are read per request (never kept) until it has been still this
 * long; timestamps tick at least every few milliseconds. */
#define SETTLE_NS 1000000000LL

struct filecache {
	struct filecache_config cfg;
	struct filecache_stats *st;
	struct fc_entry **bucket;
	size_t mask;
	struct fc_entry *lru_head, *lru_tail; /* most recently used first */
	void (*forget)(void *arg, int fd);    /* told before a descriptor closes */
	void *forget_arg;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	/* The coarse clocks are read in the vDSO: no syscall per request. */
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

static bool settled(const struct stat *st)
{
	struct timespec now;
	int64_t n;

	clock_gettime(CLOCK_REALTIME_COARSE, &now);
	n = ts_ns(&now) - SETTLE_NS;
	return ts_ns(&st->st_mtim) < n && ts_ns(&st->st_ctim) < n;
}

/* The same file, unchanged: ctime moves on every write, truncate, chmod
 * and rename of the inode and cannot be set by a user. */
static bool same_stat(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       ts_ns(&a->st_mtim) == ts_ns(&b->st_mtim) && ts_ns(&a->st_ctim) == ts_ns(&b->st_ctim);
}

static uint64_t key_hash(int root, unsigned variant, const char *path)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

	h = (h ^ (uint64_t)(unsigned)root) * 0x100000001b3ull;
	h = (h ^ variant) * 0x100000001b3ull;
	for (const unsigned char *p = (const unsigned char *)path; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	return h;
}

int filecache_create(struct filecache **out, const struct filecache_config *cfg)
{
	struct filecache *c = calloc(1, sizeof(*c));
	size_t n = 16;

	*out = NULL;
	if (!c)
		return -ENOMEM;
	c->cfg = *cfg;
	c->st = cfg->stats;
	while (n < 2 * (size_t)cfg->max_entries)
		n *= 2;
	c->bucket = calloc(n, sizeof(*c->bucket));
	if (!c->bucket) {
		free(c);
		return -ENOMEM;
	}
	c->mask = n - 1;
	*out = c;
	return 0;
}

void filecache_set_forget(struct filecache *c, void (*forget)(void *arg, int fd), void *arg)
{
	if (!c)
		return;
	c->forget = forget;
	c->forget_arg = arg;
}

static void lru_unlink(struct filecache *c, struct fc_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->lru_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->lru_tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_front(struct filecache *c, struct fc_entry *e)
{
	e->next = c->lru_head;
	if (c->lru_head)
		c->lru_head->prev = e;
	c->lru_head = e;
	if (!c->lru_tail)
		c->lru_tail = e;
}

/* Out of the table and the list; the descriptor is closed and the body
 * freed with the last reference: a response may still send from either. */
static void unlink_entry(struct filecache *c, struct fc_entry *e)
{
	struct fc_entry **pp = &c->bucket[e->hash & c->mask];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	lru_unlink(c, e);
	e->cached = false;
	c->st->entries--;
	fc_entry_put(e);
}

void filecache_destroy(struct filecache *c)
{
	if (!c)
		return;
	c->forget = NULL; /* the engine is gone already */
	while (c->lru_head) {
		struct fc_entry *e = c->lru_head;

		fc_entry_get(e);
		unlink_entry(c, e);
		if (e->refs > 1) {
			/* A response outliving its worker's cache frees it alone. */
			e->c = NULL;
			e->refs--;
		} else {
			fc_entry_put(e);
		}
	}
	free(c->bucket);
	free(c);
}

static bool usable(struct filecache *c, struct fc_entry *e);

struct fc_entry *filecache_find(struct filecache *c, int root, unsigned variant, const char *path,
				bool *fresh)
{
	uint64_t h = key_hash(root, variant, path);

	for (struct fc_entry *e = c->bucket[h & c->mask]; e; e = e->hnext) {
		if (e->hash != h || e->root != root || e->variant != variant || strcmp(e->key, path))
			continue;
		*fresh = now_ms() - e->checked_ms < c->cfg.valid_ms && usable(c, e);
		return e;
	}
	*fresh = false;
	return NULL;
}

/*
 * A small file's bytes, kept only if they are one version of the file: the
 * stat taken when the entry was made (before this read) and the one after
 * it must agree, and the file must have been still for a while before
 * (settled()), since a write moves the timestamps before its bytes land.
 */
static void load_body(struct filecache *c, struct fc_entry *e)
{
	size_t n = (size_t)e->t.st.st_size;
	struct stat after;
	char *b;

	if (e->body || e->t.st.st_size < 0 || n > c->cfg.small_max || !settled(&e->t.st))
		return;
	b = malloc(n ? n : 1);
	if (!b)
		return;
	if (!sess_pread_all(e->t.fd, b, n, 0) || fstat(e->t.fd, &after) ||
	    !same_stat(&after, &e->t.st)) {
		free(b);
		return;
	}
	e->body = b;
	c->st->mem_bytes += n;
}

/*
 * Whether a fresh entry can answer without a lookup: with its bytes in
 * memory always (they are one whole version); from its descriptor only
 * while the file is unchanged (one fstat): a file rewritten in place under
 * a cached descriptor would otherwise be read with its old length.
 */
static bool usable(struct filecache *c, struct fc_entry *e)
{
	struct stat now;

	load_body(c, e);
	return e->body || (!fstat(e->t.fd, &now) && same_stat(&now, &e->t.st));
}

void filecache_hit(struct filecache *c, struct fc_entry *e)
{
	c->st->hits++;
	e->used_ms = now_ms();
	lru_unlink(c, e);
	lru_front(c, e);
}

bool filecache_same(const struct fc_entry *e, const struct fc_target *t)
{
	return e->t.dir == t->dir && e->t.coding == t->coding && same_stat(&e->t.st, &t->st) &&
	       !strcmp(e->t.path, t->path);
}

void filecache_revalidated(struct filecache *c, struct fc_entry *e)
{
	e->checked_ms = now_ms();
	filecache_hit(c, e);
	load_body(c, e);
}

void filecache_drop(struct filecache *c, struct fc_entry *e)
{
	c->st->invalidations++;
	unlink_entry(c, e);
}

struct fc_entry *filecache_insert(struct filecache *c, int root, unsigned variant,
				  const char *path, const struct fc_target *t)
{
	struct fc_entry *e;
	size_t kl = strlen(path);

	if (kl >= sizeof(e->key))
		return NULL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	while (c->st->entries >= c->cfg.max_entries && c->lru_tail) {
		c->st->evictions++;
		unlink_entry(c, c->lru_tail);
	}
	e->t = *t;
	e->c = c;
	e->used_ms = now_ms();
	e->refs = 1;
	e->cached = true;
	e->root = root;
	e->variant = variant;
	memcpy(e->key, path, kl + 1);
	e->hash = key_hash(root, variant, path);
	e->checked_ms = now_ms();
	e->hnext = c->bucket[e->hash & c->mask];
	c->bucket[e->hash & c->mask] = e;
	lru_front(c, e);
	c->st->entries++;
	c->st->fds++;
	c->st->misses++;
	load_body(c, e);
	return e;
}

void fc_entry_get(struct fc_entry *e)
{
	e->refs++;
}

void fc_entry_put(struct fc_entry *e)
{
	if (!e || --e->refs)
		return;
	if (e->c && e->c->forget)
		/* The ring may hold this descriptor registered: a file that
		 * gets its number next must not be read through it. */
		e->c->forget(e->c->forget_arg, e->t.fd);
	close(e->t.fd);
	if (e->c)
		e->c->st->fds--;
	if (e->body && e->c)
		e->c->st->mem_bytes -= (uint64_t)e->t.st.st_size;
	free((void *)e->body);
	free(e);
}

void filecache_sweep(struct filecache *c)
{
	uint64_t now = now_ms();

	/* The list is in order of use: stop at the first entry used lately. */
	while (c && c->lru_tail && now - c->lru_tail->used_ms > FC_INACTIVE_MS) {
		c->st->evictions++;
		unlink_entry(c, c->lru_tail);
	}
}
