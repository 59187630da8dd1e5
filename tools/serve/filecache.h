/* SPDX-License-Identifier: MIT */
/*
 * kite-serve's open-file cache: what recent requests' paths resolved to
 * (the descriptor, its stat, the ETag, the coding of a precompressed
 * sibling) and, for small files, their bytes, so that a repeated request
 * costs no lookup, no stat and no read.
 *
 * One cache per worker thread, touched only by that thread: no locks. The
 * bounds (entries, hence descriptors) are per worker. An entry is trusted
 * for valid_ms after its path was last resolved; after that the next
 * request resolves the path again and keeps the entry only if the file is
 * the same (device, inode, size, mtime, ctime). Failed lookups (404, 403)
 * are not cached: the next request looks again.
 */
#ifndef KITE_SERVE_FILECACHE_H
#define KITE_SERVE_FILECACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#define FC_PATH_MAX 528 /* a normalised path (512) plus "/index.html" */

/* Counters of one worker, summed for /metrics. */
struct filecache_stats {
	uint64_t hits;          /* answered from an entry (fresh or still the same file) */
	uint64_t misses;        /* the path was resolved and a new entry made */
	uint64_t evictions;     /* entries dropped for room (least recently used) */
	uint64_t invalidations; /* entries dropped because the file changed or went */
	uint64_t entries;       /* now */
	uint64_t fds;           /* descriptors the cache holds open now (those of
				 * dropped entries included until their last
				 * response has gone out) */
	uint64_t mem_bytes;     /* file bytes held in memory now */
};

/* What a request path resolved to. */
struct fc_target {
	int fd;                 /* O_RDONLY, the regular file */
	struct stat st;         /* of fd */
	bool dir;               /* the path named a directory; fd is its index.html */
	const char *coding;     /* "br" or "gzip": fd is that sibling; NULL: the file */
	char path[FC_PATH_MAX]; /* the file's path under the root (Content-Type, log) */
	char etag[80];
};

struct filecache;

struct fc_entry {
	struct fc_target t;
	const char *body;       /* the whole file (t.st.st_size bytes), or NULL */
	/* the cache's own */
	struct filecache *c;
	struct fc_entry *hnext, *prev, *next;
	uint64_t hash, checked_ms, used_ms;
	unsigned refs;          /* the table's one while cached, plus each response
				 * that sends from body or from t.fd */
	bool cached;
	int root;
	unsigned variant;
	char key[FC_PATH_MAX];
};

struct filecache_config {
	unsigned max_entries;   /* > 0 */
	unsigned valid_ms;      /* an entry is trusted this long after its path was resolved */
	size_t small_max;       /* files up to this many bytes are kept in memory */
	struct filecache_stats *stats; /* the worker's counters, never NULL */
};

/* 0 or -ENOMEM; *out owned by the caller (filecache_destroy). */
int filecache_create(struct filecache **out, const struct filecache_config *cfg);
/* Close every descriptor, free every entry no response holds. NULL: no-op.
 * Calls no forget (call it after the engine is destroyed). */
void filecache_destroy(struct filecache *c);
/* forget(arg, fd) right before an entry's descriptor is closed: the
 * thread's engine may have registered it with its ring
 * (KITE_SENDFILE_KEEP_FD; kite_engine_forget_fd()). NULL (the default):
 * nothing to tell. arg is borrowed until filecache_destroy(). */
void filecache_set_forget(struct filecache *c, void (*forget)(void *arg, int fd), void *arg);

/*
 * The entry for path under root (variant: the precompressed choice the
 * request allows, 0 without), or NULL. *fresh: it may be used without
 * looking the path up: within valid_ms of the last lookup, and either its
 * bytes are in memory (read here once the file has stopped changing) or
 * its descriptor's file is unchanged (one fstat). Counts nothing; a fresh
 * entry is used with filecache_hit().
 */
struct fc_entry *filecache_find(struct filecache *c, int root, unsigned variant, const char *path,
				bool *fresh);
/* A fresh entry answers: counts a hit, most recently used now. */
void filecache_hit(struct filecache *c, struct fc_entry *e);
/* Whether t (the path resolved again) is still e's file. */
bool filecache_same(const struct fc_entry *e, const struct fc_target *t);
/* e is still right (filecache_same): trusted for another valid_ms; counts
 * a hit. */
void filecache_revalidated(struct filecache *c, struct fc_entry *e);
/* e's file changed or is gone: out of the cache now; its descriptor is
 * closed with the last reference (fc_entry_put()). */
void filecache_drop(struct filecache *c, struct fc_entry *e);
/*
 * A new entry for t (a miss), evicting the least recently used one at the
 * bound. Takes t->fd on success; NULL without memory (t->fd stays the
 * caller's).
 */
struct fc_entry *filecache_insert(struct filecache *c, int root, unsigned variant,
				  const char *path, const struct fc_target *t);

/*
 * Entries no request used for FC_INACTIVE_MS leave the cache (dropped
 * like evicted ones): a worker whose clients stopped asking for a file
 * does not hold it open for long after it was deleted or replaced, which
 * would keep its disk space (a request to another worker saw it gone).
 * Called from the worker's loop; costs nothing while every entry is in use.
 */
#define FC_INACTIVE_MS 10000u
void filecache_sweep(struct filecache *c);

/*
 * A response keeps e's body and descriptor alive (open, the same file)
 * until fc_entry_put(), even after e left the cache: the last reference
 * closes the descriptor. A response sending from e->t.fd puts only once
 * the transport has drained or ended (no queued range names it).
 */
void fc_entry_get(struct fc_entry *e);
void fc_entry_put(struct fc_entry *e);

#endif
